"""Starlette adapter for ilp-receiver: pure ASGI middleware, lifespan, paid endpoints.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from ilp_receiver_starlette import IlpReceiverMiddleware, paid, paid_route

    @paid(10)
    async def upload(request): ...

    app = Starlette(
        routes=[paid_route("/upload", upload, price=10, methods=["POST"])],
        middleware=[Middleware(IlpReceiverMiddleware, uplink="btp+ws://:token@localhost:7768")],
    )

The middleware starts the receiver with the app's lifespan and stops it at shutdown,
serves the payment pointer at ``/.well-known/pay`` (and ``/<name>`` for ``pointers``),
and runs the paywall for ``paid={path: price}`` routes and for endpoints wrapped with
:func:`paid`.

Web Monetization and Web Payments: add :class:`MonetizationMiddleware` *after* (inside)
the receiver middleware; it sets the ``__monetizer`` visitor cookie and serves
``/__monetizer/client.js``, ``/__monetizer/<id>``, ``/__monetizer`` (era C) and, with an
:class:`~ilp_receiver.webpayments.OrderBook`, ``/orders/<id>``.  :func:`monetized`
guards endpoints; :func:`install_templates` adds the tag helpers to
``starlette.templating.Jinja2Templates``.

All logic is :mod:`ilp_receiver.web.asgi` and
:mod:`ilp_receiver.web.monetization_endpoints`; this module only speaks Starlette.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ilp_receiver_starlette needs Starlette: pip install 'ilp-receiver[starlette]'"
    ) from exc

from ilp_receiver.links.base import Link
from ilp_receiver.monetization import (
    CLIENT_SCRIPT_NAME,
    Monetizer,
    Visitor,
    link_tag,
    meta_tag,
    script_tag,
    site_pointer,
)
from ilp_receiver.paywall import (
    DEFAULT_PAY_WAIT,
    Price,
    RequestFacts,
    RouteSpec,
    check_pay_method,
    paywall_payment_hook,
)
from ilp_receiver.receiver import AsyncReceiver, PaymentHook
from ilp_receiver.stores.base import BalanceStore
from ilp_receiver.web.asgi import (
    AsgiApp,
    IlpAsgiMiddleware,
    IlpService,
    build_receiver,
    facts_from_scope,
    service_from_scope,
)
from ilp_receiver.web.monetization_endpoints import (
    MonetizationAsgiMiddleware,
    MonetizationService,
    OrderEndpoints,
    OrdersAsgiMiddleware,
    service_and_lookup,
)
from ilp_receiver.web.reply import HttpReply
from ilp_receiver.webpayments import OrderBook

__all__ = [
    "IlpReceiverMiddleware",
    "MonetizationMiddleware",
    "WebPaymentsMiddleware",
    "current_visitor",
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


class IlpReceiverMiddleware(IlpAsgiMiddleware):
    """Pure ASGI middleware running an ilp-receiver with the Starlette app.

    Give an :class:`~ilp_receiver.AsyncReceiver` as ``receiver``, or ``uplink`` plus
    the :class:`~ilp_receiver.AsyncReceiver` options to build one (``secret``,
    ``store``, ``max_balance``, ...); ``on_payment`` defaults to
    :data:`~ilp_receiver.paywall.paywall_payment_hook`.  ``paid``, ``pointers``,
    ``well_known``, ``pay_method`` (``"psk2"`` or ``"stream"``; None: the
    ``ILP_RECEIVER_PAY_METHOD`` environment variable, else ``"psk2"``) and ``pay_wait``
    are those of :class:`~ilp_receiver.web.asgi.IlpService`; with ``lifespan=False``
    start and stop the receiver yourself.
    """

    def __init__(
        self,
        app: AsgiApp,
        receiver: AsyncReceiver | None = None,
        *,
        uplink: str | Link | None = None,
        secret: bytes | str | None = None,
        store: BalanceStore | str | None = None,
        on_payment: PaymentHook | None = paywall_payment_hook,
        max_balance: int | None = None,
        receiver_name: str | None = None,
        spsp_max_age: int = 60,
        paid: RouteSpec = None,
        pointers: Iterable[str] = (),
        well_known: bool = True,
        lifespan: bool = True,
        pay_method: str | None = None,
        pay_wait: float = DEFAULT_PAY_WAIT,
    ) -> None:
        rx = build_receiver(
            receiver,
            uplink,
            secret=secret,
            store=store,
            on_payment=on_payment,
            max_balance=max_balance,
            receiver_name=receiver_name,
            spsp_max_age=spsp_max_age,
        )
        super().__init__(
            app,
            rx,
            paid=paid,
            pointers=pointers,
            well_known=well_known,
            lifespan=lifespan,
            pay_method=pay_method,
            pay_wait=pay_wait,
        )


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


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[E], E]:
    """Put an endpoint behind the paywall at ``price`` (int or function of the request).

    The route must allow ``OPTIONS`` for the 204 ``Pay`` answer (:func:`paid_route` adds
    it); sync endpoints run in the thread pool as Starlette runs them.  ``pay_method``:
    ``"psk2"`` or ``"stream"`` for this endpoint (None: the middleware's).
    """
    method = None if pay_method is None else check_pay_method(pay_method)

    def decorator(endpoint: E) -> E:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            service = service_from_scope(request.scope)
            decision = await service.check(
                facts_from_scope(request.scope), price, pay_method=method
            )
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
            # append: MutableHeaders.__setitem__ scans every header for each key
            response.raw_headers.extend(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in decision.headers.items()
            )
            return response

        wrapper.__ilp_price__ = price  # type: ignore[attr-defined]
        wrapper.__ilp_pay_method__ = method  # type: ignore[attr-defined]
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
    ) -> None:
        if monetizer is None:
            monetizer = Monetizer(secret=secret, max_balance=max_balance, idle_expiry=idle_expiry)
        service = MonetizationService(
            monetizer, orders, orders_prefix=orders_prefix, cookie_max_age=cookie_max_age
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
    ``monetization_script()`` and ``monetization_pointer()``; filters
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

    env = templates.env
    env.globals.update(
        monetization_meta=meta,
        monetization_link=link,
        monetization_script=script,
        monetization_pointer=current_pointer,
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
