"""aiohttp adapter for ilp-receiver: ``(request, handler)`` middleware, ``AppKey``,
``cleanup_ctx`` and ``@paid(price)``.

::

    from aiohttp import web
    from ilp_receiver_aiohttp import paid, setup

    @paid(10)
    async def upload(request: web.Request) -> web.Response: ...

    app = web.Application()
    app.router.add_post("/upload", upload)
    setup(app, uplink="btp+ws://:token@localhost:7768", store="balances.db")

:func:`setup` stores the receiver under :data:`RECEIVER_KEY` (and the service under
:data:`SERVICE_KEY`), starts and stops it through ``app.cleanup_ctx``, and adds one
middleware that answers SPSP queries (``/.well-known/pay``, ``/<name>`` for
``pointers``), charges ``paid={path: price}`` routes, and answers ``OPTIONS`` for
handlers wrapped with :func:`paid` even when the route has no ``OPTIONS`` method.

Web Monetization and Web Payments: :func:`setup_monetization` (after :func:`setup`)
adds a middleware that sets the ``__monetizer`` visitor cookie and serves
``/__monetizer/client.js``, ``/__monetizer/<id>``, ``/__monetizer`` (era C) and, with an
:class:`~ilp_receiver.webpayments.OrderBook`, ``/orders/<id>``; :func:`monetized` guards
handlers and :func:`metered` charges a streamed body per byte.

All logic is :class:`ilp_receiver.web.asgi.IlpService` and
:mod:`ilp_receiver.web.monetization_endpoints`; this module only speaks aiohttp.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - aiohttp is a core dependency
    raise ImportError("ilp_receiver_aiohttp needs aiohttp: pip install 'ilp-receiver'") from exc

from ilp_receiver.links.base import Link
from ilp_receiver.monetization import Monetizer, Visitor
from ilp_receiver.paywall import (
    DEFAULT_PAY_WAIT,
    PayMethod,
    PaywallDecision,
    Price,
    RequestFacts,
    RouteSpec,
    check_pay_method,
    paywall_payment_hook,
)
from ilp_receiver.receiver import AsyncReceiver, PaymentHook
from ilp_receiver.server import RECEIVER_KEY
from ilp_receiver.stores.base import BalanceStore
from ilp_receiver.web.asgi import IlpService, build_receiver
from ilp_receiver.web.monetization_endpoints import (
    MonetizationService,
    OrderEndpoints,
    VisitorLookup,
)
from ilp_receiver.web.reply import HttpReply
from ilp_receiver.webpayments import OrderBook

__all__ = [
    "MONETIZATION_KEY",
    "ORDERS_KEY",
    "RECEIVER_KEY",
    "SERVICE_KEY",
    "VISITOR_KEY",
    "current_visitor",
    "get_monetization",
    "get_receiver",
    "get_service",
    "ilp_middleware",
    "metered",
    "monetization_middleware",
    "monetized",
    "paid",
    "request_facts",
    "setup",
    "setup_monetization",
    "setup_web_payments",
    "to_response",
]

#: Where :func:`setup` keeps the :class:`~ilp_receiver.web.asgi.IlpService`.
SERVICE_KEY = web.AppKey("ilp_receiver_service", IlpService)
_PRICE_ATTR = "__ilp_price__"
_METHOD_ATTR = "__ilp_pay_method__"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


def get_service(request: web.Request) -> IlpService:
    """The service of the application serving ``request`` (sub-apps included)."""
    try:
        return request.config_dict[SERVICE_KEY]
    except KeyError:
        raise RuntimeError(
            "ilp-receiver is not set up on this application: call "
            "ilp_receiver_aiohttp.setup(app, ...)"
        ) from None


def get_receiver(request: web.Request) -> AsyncReceiver:
    """The :class:`~ilp_receiver.AsyncReceiver` of the application serving ``request``."""
    return get_service(request).receiver


def request_facts(request: web.Request) -> RequestFacts:
    """The paywall's view of an aiohttp request."""
    return RequestFacts.from_pairs(request.method, request.path, request.headers.items())


def to_response(reply: HttpReply) -> web.Response:
    """An aiohttp response for a neutral reply."""
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)


def setup(
    app: web.Application,
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
    pay_method: str | None = None,
    pay_wait: float = DEFAULT_PAY_WAIT,
) -> IlpService:
    """Attach a receiver, its payment pointer and the paywall to ``app``.

    Give an :class:`~ilp_receiver.AsyncReceiver`, or ``uplink`` plus the options to
    build one (``secret``, ``store``, ...; ``on_payment`` defaults to the paywall hook).
    ``pay_method``: how paid routes are paid, ``"psk2"`` or ``"stream"`` (None: the
    ``ILP_RECEIVER_PAY_METHOD`` environment variable, else ``"psk2"``; per handler:
    ``@paid(price, pay_method=...)``); ``pay_wait``: seconds a STREAM-paid request may
    wait for the money flowing on its token's stream.
    """
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
    service = IlpService(
        rx,
        paid=paid,
        pointers=pointers,
        well_known=well_known,
        pay_method=pay_method,
        pay_wait=pay_wait,
    )
    app[RECEIVER_KEY] = rx
    app[SERVICE_KEY] = service
    app.cleanup_ctx.append(_receiver_context)
    app.middlewares.append(ilp_middleware)
    return service


async def _receiver_context(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE_KEY]
    await service.start()
    yield
    await service.stop()


async def _run_paid(
    service: IlpService,
    request: web.Request,
    price: Price,
    handler: Handler,
    pay_method: PayMethod | None = None,
) -> web.StreamResponse:
    decision = await service.check(request_facts(request), price, pay_method=pay_method)
    if decision.reply is not None:
        return to_response(decision.reply)
    return await _serve(service, decision, request, handler)


async def _serve(
    service: IlpService, decision: PaywallDecision, request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # aiohttp's HTTP exceptions are responses: a deliberate answer, not a failure
        if exc.status >= 500:
            await service.refund(decision)
        exc.headers.update(decision.headers)
        raise
    except BaseException:
        await service.refund(decision)
        raise
    if not response.prepared:
        response.headers.update(decision.headers)
    return response


async def _decorated_price(request: web.Request) -> tuple[Price, PayMethod | None] | None:
    """The price and pay method of a :func:`paid` handler at this path (for ``OPTIONS``
    it has no route)."""
    match_info = request.match_info
    handler = getattr(match_info, "handler", None)
    price: Price | None = None
    if match_info.http_exception is None:
        price = getattr(handler, _PRICE_ATTR, None)
    if price is not None:
        # the decorated handler answers OPTIONS itself
        return price, getattr(handler, _METHOD_ATTR, None)
    exc = match_info.http_exception
    if not isinstance(exc, web.HTTPMethodNotAllowed):
        return None
    for method in sorted(exc.allowed_methods):
        other = await request.app.router.resolve(request.clone(method=method))
        if other.http_exception is None:
            found: Price | None = getattr(other.handler, _PRICE_ATTR, None)
            if found is not None:
                return found, getattr(other.handler, _METHOD_ATTR, None)
    return None


@web.middleware
async def ilp_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SPSP queries, configured paid routes, and ``OPTIONS`` for :func:`paid` handlers."""
    service = get_service(request)
    method, path = request.method, request.path
    if path in service.mount.paths:
        headers = request.headers
        reply = await service.spsp(
            method,
            path,
            headers.get("Accept"),
            receipt_nonce=headers.get("Receipt-Nonce"),
            receipt_secret=headers.get("Receipt-Secret"),
        )
        if reply is not None:
            return to_response(reply)
    route = service.routes.find(method, path) if service.routes else None
    if route is not None:
        return await _run_paid(service, request, route.price, handler, route.pay_method)
    if method == "OPTIONS" and request.match_info.http_exception is not None:
        found = await _decorated_price(request)
        if found is not None:
            return await _run_paid(service, request, found[0], handler, found[1])
    return await handler(request)


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[H], H]:
    """Put a handler behind the paywall at ``price`` (int or function of the request).

    A handler that raises is refunded (aiohttp HTTP exceptions below 500 are answers and
    keep the charge).  ``pay_method``: ``"psk2"`` or ``"stream"`` for this handler
    (None: the app's, :func:`setup`).
    """
    method = None if pay_method is None else check_pay_method(pay_method)

    def decorator(handler: H) -> H:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            service = get_service(request)
            return await _run_paid(service, request, price, handler, method)

        setattr(wrapper, _PRICE_ATTR, price)
        setattr(wrapper, _METHOD_ATTR, method)
        return wrapper  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------------------------------
# Web Monetization and Web Payments

#: Where :func:`setup_monetization` keeps the service.
MONETIZATION_KEY = web.AppKey("ilp_receiver_monetization", MonetizationService)
#: Where the middleware keeps each request's :class:`VisitorLookup`.
VISITOR_KEY = web.RequestKey("ilp_receiver_visitor", VisitorLookup)


def setup_monetization(
    app: web.Application,
    monetizer: Monetizer | None = None,
    *,
    secret: bytes | str | None = None,
    max_balance: int | None = None,
    idle_expiry: float | None = None,
    orders: OrderBook | None = None,
    orders_prefix: str = "/orders",
    cookie_max_age: int | None = None,
) -> MonetizationService:
    """Add Web Monetization (and order pointers) to ``app``; call it after :func:`setup`.

    Give a ready ``monetizer`` or the options to build one (``secret`` signs visitor
    ids: the same in every process).  For ``max_balance`` and 2018-style spliced
    addresses pass ``monetizer.payment_hook`` as ``on_payment`` to :func:`setup`.
    """
    if SERVICE_KEY not in app:
        raise RuntimeError("call ilp_receiver_aiohttp.setup(app, ...) before setup_monetization")
    if monetizer is None:
        monetizer = Monetizer(secret=secret, max_balance=max_balance, idle_expiry=idle_expiry)
    service = MonetizationService(
        monetizer, orders, orders_prefix=orders_prefix, cookie_max_age=cookie_max_age
    )
    service.bind(app[SERVICE_KEY].receiver)
    app[MONETIZATION_KEY] = service
    app.middlewares.append(monetization_middleware)
    return service


def get_monetization(request: web.Request) -> MonetizationService:
    """The monetization service of the application serving ``request``."""
    try:
        return request.config_dict[MONETIZATION_KEY]
    except KeyError:
        raise RuntimeError(
            "Web Monetization is not set up on this application: call "
            "ilp_receiver_aiohttp.setup_monetization(app, ...)"
        ) from None


def _lookup(request: web.Request) -> VisitorLookup:
    lookup = request.get(VISITOR_KEY)
    if lookup is None:
        lookup = get_monetization(request).lookup(request_facts(request), secure=request.secure)
        request[VISITOR_KEY] = lookup
    return lookup


def current_visitor(request: web.Request) -> Visitor | None:
    """The visitor of ``request`` (None when its id was refused)."""
    return _lookup(request).visitor


@web.middleware
async def monetization_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The monetization endpoints, and the visitor cookie on every other response."""
    service = get_monetization(request)
    facts = request_facts(request)
    if service.handles(facts.path):
        reply = await service.handle(facts)
        if reply is not None:
            return to_response(reply)
    lookup = _lookup(request)
    cookie = lookup.set_cookie
    if cookie is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.add("Set-Cookie", cookie)
        raise
    if not response.prepared:
        response.headers.add("Set-Cookie", cookie)
    return response


def monetized(price: Price, *, wait: float | None = None) -> Callable[[H], H]:
    """Serve a handler only to visitors whose bucket holds ``price``; debit it.

    Otherwise ``402`` (JSON), or with ``wait`` first wait up to that many seconds for
    the money (event-driven); a tampered visitor cookie gets ``400``.  A handler that
    raises is refunded (HTTP exceptions below 500 are answers and keep the charge).  For
    per-byte pricing of a streamed body use :func:`metered`.
    """

    def decorator(handler: H) -> H:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            service = get_monetization(request)
            decision = await service.check(
                request_facts(request), _lookup(request), price, wait=wait
            )
            if decision.reply is not None:
                return to_response(decision.reply)
            try:
                response: web.StreamResponse = await handler(request)
            except web.HTTPException as exc:
                if exc.status >= 500:
                    await service.refund(decision)
                raise
            except BaseException:
                await service.refund(decision)
                raise
            return response

        return wrapper  # type: ignore[return-value]

    return decorator


async def metered(
    request: web.Request,
    chunks: AsyncIterable[bytes],
    *,
    per_byte: int = 1,
    wait: float | None = None,
) -> AsyncIterator[bytes]:
    """Yield ``chunks`` while the visitor pays ``per_byte`` for each byte; stop when dry.

    ``async for chunk in metered(request, source()): await response.write(chunk)``.
    """
    visitor = current_visitor(request)
    if visitor is None:
        return
    service = get_monetization(request)
    async for chunk in service.metered(chunks, visitor, per_byte, wait=wait):
        yield chunk


#: Where :func:`setup_web_payments` keeps the order endpoints.
ORDERS_KEY = web.AppKey("ilp_receiver_orders", OrderEndpoints)


def setup_web_payments(
    app: web.Application, orders: OrderBook, *, prefix: str = "/orders"
) -> OrderEndpoints:
    """Serve ``orders``' payment pointers at ``<prefix>/<id>``; call it after :func:`setup`.

    Only SPSP queries are answered; the shop's own handlers may serve the same paths.
    """
    if SERVICE_KEY not in app:
        raise RuntimeError("call ilp_receiver_aiohttp.setup(app, ...) before setup_web_payments")
    endpoints = OrderEndpoints(orders, prefix=prefix)
    endpoints.bind(app[SERVICE_KEY].receiver)
    app[ORDERS_KEY] = endpoints
    app.middlewares.append(_orders_middleware)
    return endpoints


@web.middleware
async def _orders_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoints = request.config_dict[ORDERS_KEY]
    if endpoints.handles(request.path):
        reply = await endpoints.handle(request_facts(request))
        if reply is not None:
            return to_response(reply)
    return await handler(request)
