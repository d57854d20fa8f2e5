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
:func:`paid`.  All logic is :mod:`ilp_receiver.web.asgi`; this module only speaks
Starlette.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ilp_receiver_starlette needs Starlette: pip install 'ilp-receiver[starlette]'"
    ) from exc

from ilp_receiver.links.base import Link
from ilp_receiver.paywall import Price, RequestFacts, RouteSpec, paywall_payment_hook
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
from ilp_receiver.web.reply import HttpReply

__all__ = [
    "IlpReceiverMiddleware",
    "get_receiver",
    "get_service",
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
    :data:`~ilp_receiver.paywall.paywall_payment_hook`.  ``paid``, ``pointers`` and
    ``well_known`` are those of :class:`~ilp_receiver.web.asgi.IlpService`; with
    ``lifespan=False`` start and stop the receiver yourself.
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
            app, rx, paid=paid, pointers=pointers, well_known=well_known, lifespan=lifespan
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


def paid(price: Price) -> Callable[[E], E]:
    """Put an endpoint behind the paywall at ``price`` (int or function of the request).

    The route must allow ``OPTIONS`` for the 204 ``Pay`` answer (:func:`paid_route` adds
    it); sync endpoints run in the thread pool as Starlette runs them.
    """

    def decorator(endpoint: E) -> E:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            service = service_from_scope(request.scope)
            decision = await service.check(facts_from_scope(request.scope), price)
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
) -> Route:
    """A :class:`~starlette.routing.Route` to ``endpoint`` behind the paywall.

    ``OPTIONS`` is added to ``methods`` (default ``["GET"]``) so that clients can ask for
    the price first.
    """
    allowed = [m.upper() for m in (methods or ["GET"])]
    if "OPTIONS" not in allowed:
        allowed.append("OPTIONS")
    return Route(
        path,
        paid(price)(endpoint),
        methods=allowed,
        name=name or getattr(endpoint, "__name__", None),
        include_in_schema=include_in_schema,
    )
