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
handlers wrapped with :func:`paid` even when the route has no ``OPTIONS`` method.  All
logic is :class:`ilp_receiver.web.asgi.IlpService`; this module only speaks aiohttp.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - aiohttp is a core dependency
    raise ImportError("ilp_receiver_aiohttp needs aiohttp: pip install 'ilp-receiver'") from exc

from ilp_receiver.links.base import Link
from ilp_receiver.paywall import (
    PaywallDecision,
    Price,
    RequestFacts,
    RouteSpec,
    paywall_payment_hook,
)
from ilp_receiver.receiver import AsyncReceiver, PaymentHook
from ilp_receiver.server import RECEIVER_KEY
from ilp_receiver.stores.base import BalanceStore
from ilp_receiver.web.asgi import IlpService, build_receiver
from ilp_receiver.web.reply import HttpReply

__all__ = [
    "RECEIVER_KEY",
    "SERVICE_KEY",
    "get_receiver",
    "get_service",
    "ilp_middleware",
    "paid",
    "request_facts",
    "setup",
    "to_response",
]

#: Where :func:`setup` keeps the :class:`~ilp_receiver.web.asgi.IlpService`.
SERVICE_KEY = web.AppKey("ilp_receiver_service", IlpService)
_PRICE_ATTR = "__ilp_price__"

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
) -> IlpService:
    """Attach a receiver, its payment pointer and the paywall to ``app``.

    Give an :class:`~ilp_receiver.AsyncReceiver`, or ``uplink`` plus the options to
    build one (``secret``, ``store``, ...; ``on_payment`` defaults to the paywall hook).
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
    service = IlpService(rx, paid=paid, pointers=pointers, well_known=well_known)
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
    service: IlpService, request: web.Request, price: Price, handler: Handler
) -> web.StreamResponse:
    decision = await service.check(request_facts(request), price)
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


async def _decorated_price(request: web.Request) -> Price | None:
    """The price of a :func:`paid` handler at this path (for ``OPTIONS`` it has no route)."""
    match_info = request.match_info
    handler = getattr(match_info, "handler", None)
    price: Price | None = None
    if match_info.http_exception is None:
        price = getattr(handler, _PRICE_ATTR, None)
    if price is not None:
        return price  # the decorated handler answers OPTIONS itself
    exc = match_info.http_exception
    if not isinstance(exc, web.HTTPMethodNotAllowed):
        return None
    for method in sorted(exc.allowed_methods):
        other = await request.app.router.resolve(request.clone(method=method))
        if other.http_exception is None:
            found: Price | None = getattr(other.handler, _PRICE_ATTR, None)
            if found is not None:
                return found
    return None


@web.middleware
async def ilp_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SPSP queries, configured paid routes, and ``OPTIONS`` for :func:`paid` handlers."""
    service = get_service(request)
    method, path = request.method, request.path
    if path in service.mount.paths:
        reply = await service.spsp(method, path, request.headers.get("Accept"))
        if reply is not None:
            return to_response(reply)
    price = service.price_for(method, path) if service.routes else None
    if price is not None:
        return await _run_paid(service, request, price, handler)
    if method == "OPTIONS" and request.match_info.http_exception is not None:
        price = await _decorated_price(request)
        if price is not None:
            return await _run_paid(service, request, price, handler)
    return await handler(request)


def paid(price: Price) -> Callable[[H], H]:
    """Put a handler behind the paywall at ``price`` (int or function of the request).

    A handler that raises is refunded (aiohttp HTTP exceptions below 500 are answers and
    keep the charge).
    """

    def decorator(handler: H) -> H:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            service = get_service(request)
            return await _run_paid(service, request, price, handler)

        setattr(wrapper, _PRICE_ATTR, price)
        return wrapper  # type: ignore[return-value]

    return decorator
