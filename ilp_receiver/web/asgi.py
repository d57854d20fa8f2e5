"""Framework-neutral async glue: the SPSP mount and the paywall, and an ASGI middleware.

:class:`IlpService` is the one async piece every adapter shares (ASGI apps, aiohttp, and,
through :mod:`ilp_receiver.web.wsgi`, WSGI apps): it answers SPSP queries at
``/.well-known/pay`` and at named payment pointers (``$example.com/bob`` -> ``/bob``),
knows which routes are paid, and runs the :class:`~ilp_receiver.paywall.Paywall`.

:class:`IlpAsgiMiddleware` applies it to any ASGI application as pure ASGI middleware
(no framework needed): it starts and stops the receiver with the app's lifespan, answers
SPSP queries, and puts matching routes behind the paywall.  It stores itself in
``scope["ilp_receiver"]`` so endpoints can reach the receiver (:func:`service_from_scope`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from ..paywall import (
    DEFAULT_PAY_WAIT,
    PaidRoutes,
    Paywall,
    PaywallDecision,
    Price,
    RequestFacts,
    RouteSpec,
    paywall_payment_hook,
    resolve_price,
)
from ..spsp import negotiate_setup
from .reply import HttpReply
from .spsp_endpoint import EndpointDirectory, spsp_reply

if TYPE_CHECKING:
    from ..links.base import Link
    from ..receiver import AsyncReceiver, PaymentHook
    from ..stores.base import BalanceStore

__all__ = [
    "SCOPE_KEY",
    "WELL_KNOWN_PAY",
    "AsgiApp",
    "IlpAsgiMiddleware",
    "IlpService",
    "PointerMount",
    "Receive",
    "Scope",
    "Send",
    "build_receiver",
    "facts_from_scope",
    "run_paid",
    "send_reply",
    "service_from_scope",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where :class:`IlpAsgiMiddleware` puts itself in the ASGI scope.
SCOPE_KEY: Final = "ilp_receiver"
#: "if the path is empty or exactly ``/``, use ``/.well-known/pay``" (payment pointers).
WELL_KNOWN_PAY: Final = "/.well-known/pay"


def build_receiver(
    receiver: AsyncReceiver | None,
    uplink: str | Link | None,
    *,
    secret: bytes | str | None = None,
    store: BalanceStore | str | None = None,
    on_payment: PaymentHook | None = paywall_payment_hook,
    max_balance: int | None = None,
    receiver_name: str | None = None,
    spsp_max_age: int = 60,
) -> AsyncReceiver:
    """``receiver`` itself, or a new AsyncReceiver on ``uplink`` with these options.

    For adapters that take either a receiver or the options to build one; ``on_payment``
    defaults to :data:`~ilp_receiver.paywall.paywall_payment_hook`.
    """
    if receiver is not None:
        if uplink is not None or secret is not None or store is not None:
            raise ConfigError("receiver", "give either a receiver or uplink and its options")
        return receiver
    if uplink is None:
        raise ConfigError("uplink", "give a receiver or an uplink")
    from ..receiver import AsyncReceiver

    return AsyncReceiver(
        uplink,
        secret=secret,
        store=store,
        on_payment=on_payment,
        max_balance=max_balance,
        receiver_name=receiver_name,
        spsp_max_age=spsp_max_age,
    )


class PointerMount:
    """Which request paths are SPSP queries (sans-I/O).

    ``pointers``: names served as payment pointers at ``/<name>`` (each its own balance
    account, ``endpoint:<name>``); ``well_known``: serve the default pointer at
    ``/.well-known/pay``.
    """

    def __init__(self, pointers: Iterable[str] = (), *, well_known: bool = True) -> None:
        names = tuple(pointers)
        self.directory = EndpointDirectory(names)
        self.well_known = well_known
        bad = [name for name in names if self.directory.account(name) is None]
        if bad:
            raise ValueError(f"invalid payment pointer names (letters, digits, _ and -): {bad}")
        self.pointer_paths = {"/" + name: self.directory.prefix + name for name in names}
        self.paths = frozenset(self.pointer_paths) | ({WELL_KNOWN_PAY} if well_known else set())

    def account(self, method: str, path: str, accept: str | None) -> str | None:
        """The account an SPSP query to ``path`` is for, or None when it is not one.

        ``/.well-known/pay`` is always answered (406 for an ``Accept`` we cannot serve);
        a named pointer only when ``Accept`` asks for SPSP (v4 or PSK2), so the app may
        serve a page at the same path.  ``OPTIONS`` is the CORS preflight of a query.
        """
        if method not in ("GET", "HEAD", "OPTIONS") or path not in self.paths:
            return None
        if path == WELL_KNOWN_PAY:
            return self.directory.prefix + "default"
        if method != "OPTIONS" and negotiate_setup(accept) is None:
            return None
        return self.pointer_paths[path]


class IlpService:
    """SPSP endpoints and a paywall for one :class:`~ilp_receiver.AsyncReceiver`.

    ``paid``: ``{path: price}``, :class:`~ilp_receiver.paywall.PaidRoute` s, or a
    :class:`~ilp_receiver.paywall.PaidRoutes`.  ``pointers`` and ``well_known``: see
    :class:`PointerMount`.  ``pay_method`` (``"psk2"`` or ``"stream"``; None:
    ``$ILP_RECEIVER_PAY_METHOD``, else ``"psk2"``) and ``pay_wait``: see
    :class:`~ilp_receiver.paywall.Paywall`.
    """

    def __init__(
        self,
        receiver: AsyncReceiver,
        *,
        paid: RouteSpec = None,
        pointers: Iterable[str] = (),
        well_known: bool = True,
        mount: PointerMount | None = None,
        pay_method: str | None = None,
        pay_wait: float = DEFAULT_PAY_WAIT,
    ) -> None:
        self.receiver = receiver
        self.paywall = Paywall(receiver, pay_method=pay_method, pay_wait=pay_wait)
        self.routes = PaidRoutes.of(paid)
        self.mount = mount or PointerMount(pointers, well_known=well_known)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the receiver (idempotent)."""
        await self.receiver.start()

    async def stop(self) -> None:
        """Stop the receiver."""
        await self.receiver.stop()

    # -- SPSP --------------------------------------------------------------------------

    async def spsp(
        self,
        method: str,
        path: str,
        accept: str | None,
        *,
        receipt_nonce: str | None = None,
        receipt_secret: str | None = None,
    ) -> HttpReply | None:
        """The SPSP reply for this request, or None when it is not an SPSP query.

        ``receipt_nonce`` / ``receipt_secret``: the request's ``Receipt-Nonce`` /
        ``Receipt-Secret`` headers (STREAM receipts, RFC 39)."""
        account = self.mount.account(method, path, accept)
        if account is None:
            return None
        return await spsp_reply(
            self.receiver,
            account,
            accept,
            method=method,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )

    # -- paywall -----------------------------------------------------------------------

    def price_for(self, method: str, path: str) -> Price | None:
        """The price of a configured paid route, or None."""
        return self.routes.match(method, path)

    async def check(
        self, request: RequestFacts, price: Price, *, pay_method: str | None = None
    ) -> PaywallDecision:
        """Run the paywall for ``request`` at ``price`` (see :meth:`Paywall.check`);
        ``pay_method``: the route's (None: the service's)."""
        return await self.paywall.check(
            request, resolve_price(price, request), pay_method=pay_method
        )

    async def refund(self, decision: PaywallDecision) -> None:
        """Give back what ``decision`` charged."""
        await self.paywall.refund(decision)


def facts_from_scope(scope: Scope) -> RequestFacts:
    """Request facts from an ASGI HTTP scope."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return RequestFacts(scope["method"], scope["path"], headers)


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_reply(send: Send, reply: HttpReply, *, head: bool = False) -> None:
    """Send a neutral reply over ASGI (no body for ``HEAD``)."""
    headers = _raw_headers(reply.headers)
    if reply.status not in (204, 304):
        headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})


def service_from_scope(scope: Scope) -> IlpService:
    """The :class:`IlpService` an :class:`IlpAsgiMiddleware` put into ``scope``."""
    service = scope.get(SCOPE_KEY)
    if not isinstance(service, IlpService):
        raise RuntimeError(
            "no ilp-receiver middleware in front of this endpoint: add IlpAsgiMiddleware "
            "(or the framework adapter's middleware) to the application"
        )
    return service


async def run_paid(
    service: IlpService,
    decision: PaywallDecision,
    app: AsgiApp,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Run ``app`` for a served ``decision``: add its headers, refund if the app fails."""
    extra = _raw_headers(decision.headers)
    started = False

    async def send_with_headers(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start" and not started:
            started = True
            message = dict(message)
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    try:
        await app(scope, receive, send_with_headers)
    except BaseException:
        if not started:
            with contextlib.suppress(Exception):
                await service.refund(decision)
        raise


class IlpAsgiMiddleware(IlpService):
    """Pure ASGI middleware: lifespan start/stop, SPSP endpoints, paid routes.

    ``IlpAsgiMiddleware(app, receiver, paid={"/upload": 10}, pointers=["bob"])``.  With
    ``lifespan=False`` the application starts and stops the receiver itself.
    """

    def __init__(
        self,
        app: AsgiApp,
        receiver: AsyncReceiver,
        *,
        paid: RouteSpec = None,
        pointers: Iterable[str] = (),
        well_known: bool = True,
        lifespan: bool = True,
        pay_method: str | None = None,
        pay_wait: float = DEFAULT_PAY_WAIT,
    ) -> None:
        super().__init__(
            receiver,
            paid=paid,
            pointers=pointers,
            well_known=well_known,
            pay_method=pay_method,
            pay_wait=pay_wait,
        )
        self.app = app
        self.manage_lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "lifespan" and self.manage_lifespan:
            await self._lifespan(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = self
        method: str = scope["method"]
        path: str = scope["path"]
        if path in self.mount.paths:
            reply = await self.spsp(
                method,
                path,
                _header(scope, b"accept"),
                receipt_nonce=_header(scope, b"receipt-nonce"),
                receipt_secret=_header(scope, b"receipt-secret"),
            )
            if reply is not None:
                await send_reply(send, reply, head=method == "HEAD")
                return
        route = self.routes.find(method, path) if self.routes else None
        if route is None:
            await self.app(scope, receive, send)
            return
        decision = await self.check(
            facts_from_scope(scope), route.price, pay_method=route.pay_method
        )
        if decision.reply is not None:
            await send_reply(send, decision.reply, head=method == "HEAD")
            return
        await run_paid(self, decision, self.app, scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the receiver before the app's startup, stop it after the app's shutdown."""

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            return message

        async def wrapped_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.stop()
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
