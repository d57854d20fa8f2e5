"""Starlette adapter for ilp-receiver: pure ASGI middleware, lifespan, paid endpoints.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from ilp_receiver_starlette import IlpReceiverMiddleware, paid, paid_route

    @paid(10)
    async def report(request): ...

    app = Starlette(
        routes=[paid_route("/upload", upload, price=10, methods=["POST"]), ...],
        middleware=[Middleware(IlpReceiverMiddleware)],   # settings from ILP_RECEIVER_*
    )

The middleware starts the receiver with the app's lifespan and stops it at shutdown
(``lifespan.startup.failed`` with the reason when it cannot start), serves the payment
pointer at ``/.well-known/pay`` (and ``/<name>`` for ``pointers``), runs the paywall
for ``paid={path: price}`` rules -- only for requests that reach a route, and not for
endpoints with a paywall of their own -- and for endpoints wrapped with :func:`paid`,
and settles every paid request (:mod:`ilp_receiver.web.lifecycle`: the headers, the one
refund rule, one charge per request).

Web Monetization and Web Payments: add :class:`MonetizationMiddleware` *after* (inside)
the receiver middleware; it sets the ``__monetizer`` visitor cookie and serves
``/__monetizer/client.js``, ``/__monetizer/<id>``, ``/__monetizer`` (era C) and, with an
:class:`~ilp_receiver.webpayments.OrderBook`, ``/orders/<id>``; with ``wallet_address``
(today's Web Monetization, the site's Open Payments wallet) also ``/__monetizer/wm.js``,
``POST /__monetizer/incoming-payments`` and ``/__monetizer/balance``.  :func:`monetized`
guards endpoints; :func:`install_templates` adds the tag helpers to
``starlette.templating.Jinja2Templates``.

All logic is :mod:`ilp_receiver.web.asgi`, :mod:`ilp_receiver.web.lifecycle` and
:mod:`ilp_receiver.web.monetization_endpoints`; this module only speaks Starlette.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Final, TypeVar, Unpack

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import BaseRoute, Match, Mount, Route
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ilp_receiver_starlette needs Starlette: pip install 'ilp-receiver[starlette]'"
    ) from exc

from ilp_receiver.http_reply import HttpReply
from ilp_receiver.monetization import (
    CLIENT_SCRIPT_NAME,
    OP_CLIENT_SCRIPT_NAME,
    Monetizer,
    Visitor,
    link_tag,
    meta_tag,
    script_tag,
    site_pointer,
)
from ilp_receiver.monetization_verifier import IncomingPaymentVerifier, verifier_from_settings
from ilp_receiver.open_payments import monetization_link_tag
from ilp_receiver.options import ReceiverOptions, ReceiverSettings
from ilp_receiver.paywall import PaidRoute, PayMethod, Price, RequestFacts, check_pay_method
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.web.asgi import (
    AsgiApp,
    IlpAsgiMiddleware,
    Scope,
    body_tap,
    facts_from_scope,
    service_from_scope,
)
from ilp_receiver.web.lifecycle import BodyReader
from ilp_receiver.web.monetization_endpoints import (
    MonetizationAsgiMiddleware,
    MonetizationService,
    OrderEndpoints,
    OrdersAsgiMiddleware,
    service_and_lookup,
)
from ilp_receiver.web.service import IlpService, receiver_for
from ilp_receiver.webpayments import OrderBook

__all__ = [
    "PRICE_ATTR",
    "IlpReceiverMiddleware",
    "MonetizationMiddleware",
    "WebPaymentsMiddleware",
    "body_reader",
    "current_visitor",
    "find_route",
    "get_monetization",
    "get_receiver",
    "get_service",
    "install_templates",
    "monetized",
    "paid",
    "paid_route",
    "request_facts",
    "to_response",
]

Endpoint = Callable[[Request], Awaitable[Response] | Response]
E = TypeVar("E", bound=Callable[..., Any])

#: The attribute :func:`paid` sets on the endpoints it wraps (their price).
PRICE_ATTR: Final = "__ilp_price__"
_METHOD_ATTR: Final = "__ilp_pay_method__"


class IlpReceiverMiddleware(IlpAsgiMiddleware):
    """Pure ASGI middleware running an ilp-receiver with the Starlette app.

    Give an :class:`~ilp_receiver.AsyncReceiver` as ``receiver``, or the settings to
    build one (:class:`~ilp_receiver.options.ReceiverSettings`: ``uplink``, ``secret``
    or ``secret_file``, ``store``, ``max_balance``, ``require_uplink``, ...; over the
    ``ILP_RECEIVER_*`` environment, so none has to sit in code); ``on_payment`` defaults
    to :data:`~ilp_receiver.paywall.paywall_payment_hook`.  ``paid``, ``pointers``,
    ``well_known``, ``pay_method``, ``pay_wait`` and ``health_path`` are those of
    :class:`~ilp_receiver.web.asgi.IlpService`; with ``lifespan=False`` start and stop
    the receiver yourself.
    """

    def __init__(
        self,
        app: AsgiApp,
        receiver: AsyncReceiver | None = None,
        *,
        options: ReceiverOptions | None = None,
        lifespan: bool = True,
        **settings: Unpack[ReceiverSettings],
    ) -> None:
        opts = ReceiverOptions.from_settings(options, **settings)
        rx = receiver_for(receiver, opts, settings)
        super().__init__(app, rx, options=opts, lifespan=lifespan)

    def route_rule(self, scope: Scope, method: str, path: str) -> PaidRoute | None:
        """A path rule charges a request only when the app has a route for it (no
        charge for 404 or 405; ``OPTIONS`` needs the path only), and not when the
        route's endpoint has a paywall of its own (:func:`paid`: its price wins).
        ``OPTIONS`` to such an endpoint's path is answered with its price."""
        router = getattr(scope.get("app"), "router", None)
        routes: Sequence[BaseRoute] | None = getattr(router, "routes", None)
        if routes is None:  # not behind a Starlette app: the generic behaviour
            return super().route_rule(scope, method, path)
        route = find_route(routes, scope)
        if route is None:
            return None
        own = self.own_paywall(route)
        if own is not None:
            if method == "OPTIONS" and not _allows(route, "OPTIONS"):
                return PaidRoute(path, own[0], pay_method=own[1])
            return None
        return self.rule_for(method, path)

    def own_paywall(self, route: BaseRoute) -> tuple[Price, PayMethod | None] | None:
        """The price and pay method of the paywall ``route``'s endpoint has itself."""
        endpoint = getattr(route, "endpoint", None)
        price: Price | None = getattr(endpoint, PRICE_ATTR, None)
        if price is None:
            return None
        return price, getattr(endpoint, _METHOD_ATTR, None)


def _allows(route: BaseRoute, method: str) -> bool:
    methods = getattr(route, "methods", None)
    return methods is None or method in methods


def find_route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route a Starlette router would run ``scope`` with (mounts followed), or None
    when it answers 404 or 405 -- except that ``OPTIONS`` finds a route serving the path
    with other methods."""
    partial: BaseRoute | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            if isinstance(route, Mount):
                inner = route.routes
                return find_route(inner, {**scope, **child}) if inner else route
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    if partial is not None and scope.get("method") == "OPTIONS":
        return partial
    return None


def get_service(request: Request) -> IlpService:
    """The ilp-receiver service of the middleware in front of ``request``."""
    return service_from_scope(request.scope)


def get_receiver(request: Request) -> AsyncReceiver:
    """The :class:`~ilp_receiver.AsyncReceiver` serving ``request``'s app."""
    return get_service(request).receiver


def request_facts(request: Request) -> RequestFacts:
    """The paywall's view of a Starlette request."""
    return facts_from_scope(request.scope)


def to_response(reply: HttpReply) -> Response:
    """A Starlette response for a neutral reply."""
    return Response(reply.body or None, status_code=reply.status, headers=reply.headers)


def body_reader(request: Request) -> BodyReader:
    """Reads ``request``'s body through a counting reader, at most ``limit`` + 1 bytes,
    and keeps it for the endpoint (``await request.body()``, ``request.stream()``).

    Pure ASGI: the middleware's :class:`~ilp_receiver.web.asgi.BodyTap` reads the body
    messages ahead and replays them to the app's ``receive``; a body the framework read
    already (FastAPI's body parameters) was counted as it passed."""
    return body_tap(request.scope).read


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[E], E]:
    """Put an endpoint behind the paywall at ``price`` (an int, a function of the
    request facts, or :func:`~ilp_receiver.paywall.per_byte`).

    The middleware settles the request (headers, refund rule).  ``OPTIONS`` to the
    endpoint's path gets the ``204 Pay`` answer (from the middleware when the route has
    no ``OPTIONS``); sync endpoints run in the thread pool as Starlette runs them.
    ``pay_method``: ``"psk2"`` or ``"stream"`` for this endpoint (None: the
    middleware's).
    """
    method = None if pay_method is None else check_pay_method(pay_method)

    def decorator(endpoint: E) -> E:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            service = service_from_scope(request.scope)
            reply = await service.enter(
                request.scope,
                request_facts(request),
                price,
                pay_method=method,
                read_body=body_reader(request),
            )
            if reply is not None:
                return to_response(reply)
            if is_async:
                response: Response = await endpoint(request)
                return response
            return await run_in_threadpool(endpoint, request)

        setattr(wrapper, PRICE_ATTR, price)
        setattr(wrapper, _METHOD_ATTR, method)
        return wrapper  # type: ignore[return-value]

    return decorator


def paid_route(
    path: str,
    endpoint: Endpoint,
    *,
    price: Price,
    methods: Collection[str] | None = None,
    name: str | None = None,
    include_in_schema: bool = True,
    pay_method: str | None = None,
) -> Route:
    """A :class:`~starlette.routing.Route` to ``endpoint`` behind the paywall.

    ``OPTIONS`` is added to ``methods`` (default ``["GET"]``) so that clients can ask for
    the price first.  ``pay_method``: ``"psk2"`` or ``"stream"`` (None: the
    middleware's).
    """
    allowed = [m.upper() for m in (methods or ["GET"])]
    if "OPTIONS" not in allowed:
        allowed.append("OPTIONS")
    return Route(
        path,
        paid(price, pay_method=pay_method)(endpoint),
        methods=allowed,
        name=name or getattr(endpoint, "__name__", None),
        include_in_schema=include_in_schema,
    )


# ---------------------------------------------------------------------------------------
# Web Monetization and Web Payments


class MonetizationMiddleware(MonetizationAsgiMiddleware):
    """Pure ASGI middleware for Web Monetization (and Web Payments order pointers).

    Put it after :class:`IlpReceiverMiddleware` in ``middleware=[...]`` (it uses that
    receiver) or give ``receiver``.  Give a ready ``monetizer`` or the options to build
    one (``secret`` signs visitor ids: the same in every process).  ``orders``: an
    :class:`~ilp_receiver.webpayments.OrderBook` served at ``<orders_prefix>/<id>``.
    Today's Web Monetization: ``wallet_address`` (the site's Open Payments wallet
    address; default ``ILP_MONETIZATION_WALLET_ADDRESS`` and the other
    ``ILP_MONETIZATION_*`` variables of
    :func:`~ilp_receiver.monetization_verifier.verifier_from_settings`) or a ready
    ``verifier`` serves ``/__monetizer/wm.js`` and verifies the page's reports.
    """

    def __init__(
        self,
        app: AsgiApp,
        monetizer: Monetizer | None = None,
        *,
        secret: bytes | str | None = None,
        max_balance: int | None = None,
        idle_expiry: float | None = None,
        orders: OrderBook | None = None,
        orders_prefix: str = "/orders",
        cookie_max_age: int | None = None,
        receiver: AsyncReceiver | None = None,
        wallet_address: str | None = None,
        verifier: IncomingPaymentVerifier | None = None,
    ) -> None:
        if monetizer is None:
            monetizer = Monetizer(secret=secret, max_balance=max_balance, idle_expiry=idle_expiry)
        if verifier is None:
            verifier = verifier_from_settings(monetizer, {"WALLET_ADDRESS": wallet_address})
        service = MonetizationService(
            monetizer,
            orders,
            orders_prefix=orders_prefix,
            cookie_max_age=cookie_max_age,
            verifier=verifier,
        )
        super().__init__(app, service, receiver=receiver)


def get_monetization(request: Request) -> MonetizationService:
    """The monetization service of the middleware in front of ``request``."""
    return service_and_lookup(request.scope)[0]


def current_visitor(request: Request) -> Visitor | None:
    """The visitor of ``request`` (None when its id was refused)."""
    return service_and_lookup(request.scope)[1].visitor


def monetized(
    price: Price, *, wait: float | None = None, per_byte: int | None = None
) -> Callable[[E], E]:
    """Serve an endpoint only to visitors whose bucket holds ``price``; debit it.

    Otherwise ``402`` (JSON), or with ``wait`` first wait up to that many seconds for
    the money (event-driven); a tampered visitor cookie gets ``400``.  ``per_byte``:
    for a :class:`~starlette.responses.StreamingResponse`, charge that much per byte of
    each chunk before sending it and end the stream when the bucket runs dry.  An
    endpoint that raises is refunded.
    """

    def decorator(endpoint: E) -> E:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            service, lookup = service_and_lookup(request.scope)
            facts = facts_from_scope(request.scope)
            decision = await service.check(facts, lookup, price, wait=wait)
            if decision.reply is not None:
                return to_response(decision.reply)
            try:
                if is_async:
                    response: Response = await endpoint(request)
                else:
                    response = await run_in_threadpool(endpoint, request)
            except BaseException:
                await service.refund(decision)
                raise
            visitor = decision.visitor
            if per_byte and visitor is not None and isinstance(response, StreamingResponse):
                response.body_iterator = service.metered(
                    response.body_iterator,  # type: ignore[arg-type]
                    visitor,
                    per_byte,
                    wait=wait,
                )
            return response

        return wrapper  # type: ignore[return-value]

    return decorator


def install_templates(templates: Any, *, pointer: str | None = None) -> None:
    """Add the monetization tag helpers to a ``Jinja2Templates`` (needs jinja2).

    Globals ``monetization_meta(pointer=None)``, ``monetization_link(href=None)``,
    ``monetization_script()`` and ``monetization_pointer()``, and for today's Web
    Monetization ``monetization_wallet_link(href=None)`` (default: the middleware's
    wallet address) and ``monetization_wallet_script()``; filters
    ``monetization_meta`` and ``monetization_link``.  Without ``pointer`` the tags name
    this site's ``/__monetizer`` (from the template context's ``request``).
    """
    try:
        from jinja2 import pass_context
        from markupsafe import Markup
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("install_templates needs jinja2: pip install jinja2") from exc

    def default_pointer(context: Any) -> str:
        if pointer:
            return pointer
        request = context.get("request")
        if not isinstance(request, Request):
            raise RuntimeError("render with a request in the context, or give pointer=")
        prefix = get_monetization(request).monetizer.prefix
        return site_pointer(request.url.netloc, prefix, scheme=request.url.scheme)

    @pass_context
    def meta(context: Any, value: str | None = None) -> Markup:
        return Markup(meta_tag(value or default_pointer(context)))  # noqa: S704 (escaped)

    @pass_context
    def link(context: Any, value: str | None = None) -> Markup:
        return Markup(link_tag(value or default_pointer(context)))  # noqa: S704 (escaped)

    @pass_context
    def script(context: Any) -> Markup:
        request = context.get("request")
        prefix = get_monetization(request).monetizer.prefix if request is not None else None
        src = f"{prefix}/{CLIENT_SCRIPT_NAME}" if prefix else None
        return Markup(script_tag(src) if src else script_tag())  # noqa: S704 (escaped)

    @pass_context
    def current_pointer(context: Any) -> str:
        return default_pointer(context)

    @pass_context
    def wallet_link(context: Any, href: str | None = None) -> Markup:
        request = context.get("request")
        verifier = get_monetization(request).verifier if request is not None else None
        if href is None:
            if verifier is None:
                raise RuntimeError("give the wallet address, or configure the middleware's")
            href = verifier.wallet_address
        insecure = verifier is not None and verifier.fetcher.allow_insecure
        return Markup(monetization_link_tag(href, allow_insecure=insecure))  # noqa: S704

    @pass_context
    def wallet_script(context: Any) -> Markup:
        request = context.get("request")
        prefix = get_monetization(request).monetizer.prefix if request is not None else None
        src = f"{prefix or '/__monetizer'}/{OP_CLIENT_SCRIPT_NAME}"
        return Markup(script_tag(src))  # noqa: S704 (escaped)

    env = templates.env
    env.globals.update(
        monetization_meta=meta,
        monetization_link=link,
        monetization_script=script,
        monetization_pointer=current_pointer,
        monetization_wallet_link=wallet_link,
        monetization_wallet_script=wallet_script,
    )
    env.filters["monetization_meta"] = lambda value: Markup(meta_tag(str(value)))  # noqa: S704
    env.filters["monetization_link"] = lambda value: Markup(link_tag(str(value)))  # noqa: S704


class WebPaymentsMiddleware(OrdersAsgiMiddleware):
    """Pure ASGI middleware serving per-order payment pointers at ``<prefix>/<id>``.

    ``orders`` is the shop's :class:`~ilp_receiver.webpayments.OrderBook`; put the
    middleware after :class:`IlpReceiverMiddleware` (or give ``receiver``).  Only SPSP
    queries are answered; the shop's own pages may live at the same paths.
    """

    def __init__(
        self,
        app: AsgiApp,
        orders: OrderBook,
        *,
        prefix: str = "/orders",
        receiver: AsyncReceiver | None = None,
    ) -> None:
        super().__init__(app, OrderEndpoints(orders, prefix=prefix), receiver=receiver)
