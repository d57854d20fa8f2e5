"""Framework-neutral async glue: the SPSP mount and the paywall, and an ASGI middleware.

:class:`IlpService` is the one async piece every adapter shares (ASGI apps, aiohttp, and,
through :mod:`ilp_receiver.web.wsgi`, WSGI apps): it answers SPSP queries at
``/.well-known/pay`` and at named payment pointers (``$example.com/bob`` -> ``/bob``),
knows which routes are paid, runs the :class:`~ilp_receiver.paywall.Paywall` and serves
the health report.

:class:`IlpAsgiMiddleware` applies it to any ASGI application as pure ASGI middleware
(no framework needed): it starts and stops the receiver with the app's lifespan
(``lifespan.startup.failed`` with the reason when the receiver cannot start), answers
SPSP queries, puts matching routes behind the paywall and settles every paid request
(:mod:`ilp_receiver.web.lifecycle`: the headers, the one refund rule) -- also those a
framework adapter's decorator or dependency charged.  It stores itself in
``scope["ilp_receiver"]`` so endpoints can reach the receiver (:func:`service_from_scope`),
and hands the app the request body through a :class:`BodyTap` (:func:`body_tap`), which
a body price reads ahead of the app without taking the body away from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from ..http_reply import HttpReply
from ..options import ReceiverOptions
from ..paywall import (
    PaidRoute,
    PaidRoutes,
    Paywall,
    PaywallDecision,
    Price,
    RequestFacts,
    resolve_price,
    uplink_unavailable_reply,
)
from ..spsp import negotiate_setup
from . import lifecycle
from .spsp_endpoint import EndpointDirectory, spsp_reply

if TYPE_CHECKING:
    from ..receiver import AsyncReceiver

__all__ = [
    "BODY_SCOPE_KEY",
    "SCOPE_KEY",
    "WELL_KNOWN_PAY",
    "AsgiApp",
    "BodyTap",
    "IlpAsgiMiddleware",
    "IlpService",
    "PaywallAnswer",
    "PointerMount",
    "Receive",
    "Scope",
    "Send",
    "body_tap",
    "facts_from_scope",
    "health_reply",
    "receiver_for",
    "send_reply",
    "service_from_scope",
    "settle_asgi",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where :class:`IlpAsgiMiddleware` puts itself in the ASGI scope.
SCOPE_KEY: Final = "ilp_receiver"
#: Where it puts the request's :class:`BodyTap`.
BODY_SCOPE_KEY: Final = "ilp_receiver.body"
#: "if the path is empty or exactly ``/``, use ``/.well-known/pay``" (payment pointers).
WELL_KNOWN_PAY: Final = "/.well-known/pay"
#: Settings that build a receiver; an adapter given a ready receiver refuses them.
_RECEIVER_SETTINGS: Final = frozenset(
    {
        "uplink",
        "secret",
        "secret_file",
        "store",
        "on_payment",
        "max_balance",
        "receiver_name",
        "spsp_max_age",
        "stream",
        "require_uplink",
    }
)


def receiver_for(
    receiver: AsyncReceiver | None, options: ReceiverOptions, given: Iterable[str] = ()
) -> AsyncReceiver:
    """``receiver`` itself, or a new AsyncReceiver built from ``options``.

    ``given``: the settings the caller passed as keywords -- those that build a
    receiver cannot go with a ready ``receiver``.
    """
    if receiver is not None:
        clash = sorted(_RECEIVER_SETTINGS.intersection(given))
        if clash:
            raise ConfigError(
                clash[0], "give either a receiver or the settings to build one, not both"
            )
        return receiver
    options.check_uplink()
    return options.async_receiver()


def health_reply(receiver: AsyncReceiver) -> HttpReply:
    """The health report (``AsyncReceiver.health``) as JSON: ``200`` while the uplink is
    connected, ``503`` (with ``Retry-After``) otherwise.  ``shared_account`` tells
    whether another receiver uses our uplink account."""
    report = receiver.health()
    up = report["status"] in ("ok", "shared account")
    headers = {"Cache-Control": "no-store"}
    if not up:
        headers["Retry-After"] = "2"
    body = json.dumps(report, separators=(",", ":")).encode("utf-8")
    return HttpReply(200 if up else 503, {"Content-Type": "application/json", **headers}, body)


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
    """SPSP endpoints, a paywall and the health report for one
    :class:`~ilp_receiver.AsyncReceiver`.

    The web settings come from ``options`` (a :class:`~ilp_receiver.options.
    ReceiverOptions`) and/or keywords: ``paid`` (``{path: price}``,
    :class:`~ilp_receiver.paywall.PaidRoute` s, or a :class:`~ilp_receiver.paywall.
    PaidRoutes`), ``pointers`` and ``well_known`` (see :class:`PointerMount`),
    ``pay_method`` (``"psk2"`` or ``"stream"``; None: ``$ILP_RECEIVER_PAY_METHOD``, else
    ``"psk2"``) and ``pay_wait`` (see :class:`~ilp_receiver.paywall.Paywall`),
    ``health_path``.  Settings that build a receiver are not used here.
    """

    def __init__(
        self,
        receiver: AsyncReceiver,
        *,
        options: ReceiverOptions | None = None,
        mount: PointerMount | None = None,
        **settings: Any,
    ) -> None:
        opts = options if options is not None else ReceiverOptions()
        if settings:
            opts = opts.replace(**settings)
        self.options = opts
        self.receiver = receiver
        self.paywall = Paywall(receiver, pay_method=opts.pay_method, pay_wait=opts.pay_wait)
        self.routes: PaidRoutes = opts.paid
        self.mount = mount or PointerMount(opts.pointers, well_known=opts.well_known)
        self.health_path = opts.health_path

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the receiver (idempotent).  An unreachable uplink raises only with
        ``require_uplink``; otherwise the receiver keeps trying in the background."""
        await self.receiver.start()

    async def stop(self) -> None:
        """Stop the receiver."""
        await self.receiver.stop()

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected, so ``Pay`` headers and SPSP answers can be
        issued (until then they are ``503 UplinkUnavailable``)."""
        return self.receiver.ready

    # -- SPSP and health -----------------------------------------------------------------

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
        ``Receipt-Secret`` headers (STREAM receipts, RFC 39).  ``503`` while the uplink
        has not connected."""
        account = self.mount.account(method, path, accept)
        if account is None:
            return None
        if not self.ready:
            return uplink_unavailable_reply()
        return await spsp_reply(
            self.receiver,
            account,
            accept,
            method=method,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )

    def health(self, method: str, path: str) -> HttpReply | None:
        """The health report when ``path`` is the configured ``health_path``, else None."""
        if self.health_path is None or path != self.health_path or method not in ("GET", "HEAD"):
            return None
        return health_reply(self.receiver)

    # -- paywall -----------------------------------------------------------------------

    def price_for(self, method: str, path: str) -> Price | None:
        """The price of a configured paid route, or None."""
        return self.routes.match(method, path)

    def rule_for(self, method: str, path: str) -> PaidRoute | None:
        """The configured path rule charging ``method path``, or None."""
        return self.routes.find(method, path) if self.routes else None

    async def check(
        self, request: RequestFacts, price: Price, *, pay_method: str | None = None
    ) -> PaywallDecision:
        """Run the paywall for ``request`` at ``price`` (see :meth:`Paywall.check`);
        ``pay_method``: the route's (None: the service's)."""
        return await self.paywall.check(
            request, resolve_price(price, request), pay_method=pay_method
        )

    async def refund(self, decision: PaywallDecision) -> int | None:
        """Give back what ``decision`` charged; the token's balance afterwards."""
        return await self.paywall.refund(decision)

    async def enter(
        self,
        state: MutableMapping[str, Any],
        request: RequestFacts,
        price: Price,
        *,
        pay_method: str | None = None,
        read_body: lifecycle.BodyReader | None = None,
    ) -> HttpReply | None:
        """Decide on a request to a paid route and record it in ``state``
        (:func:`ilp_receiver.web.lifecycle.enter`): the reply to send instead of running
        the view, or None to run it."""
        return await lifecycle.enter(
            self, state, request, price, pay_method=pay_method, read_body=read_body
        )


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


class PaywallAnswer(Exception):
    """Raised where a view cannot return a response itself (a FastAPI dependency) to
    answer with the paywall's ``reply`` (``402``, ``400``, ``204``, ``503``) instead of
    running the endpoint; the ASGI middleware sends it."""

    def __init__(self, reply: HttpReply) -> None:
        super().__init__(f"the paywall answers {reply.status}")
        self.reply = reply


class BodyTap:
    """The request body on its way from the server to the app, counted, and readable
    ahead of the app without taking it away from it (pure ASGI).

    :class:`IlpAsgiMiddleware` hands the app :meth:`receive` instead of the server's
    ``receive`` and keeps the tap in the scope (:func:`body_tap`).  :meth:`read` pulls
    body messages ahead -- until the body ends or more than ``limit`` bytes arrived --
    and holds them; the app's own ``receive()`` calls get the held messages first, then
    the server's.  A body the app (the framework) has read already is counted as it
    passed, so the size is known either way: a framework never buffers a body of its
    own that the tap does not see.
    """

    __slots__ = ("_held", "_receive", "complete", "size")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._held: list[Message] = []
        #: body bytes that arrived from the server so far
        self.size = 0
        #: whether the body has ended (its last message, or the client left)
        self.complete = False

    def _count(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
        else:  # http.disconnect: the client is gone, no more body
            self.complete = True

    async def receive(self) -> Message:
        """The app's ``receive``: held messages first, then the server's, counted."""
        if self._held:
            return self._held.pop(0)
        message = await self._receive()
        self._count(message)
        return message

    async def read(self, limit: int) -> int | None:
        """Read the body through the counter (held for the app): its size, or None as
        soon as more than ``limit`` bytes arrived (at most one message is read past
        ``limit``).  A client that left ends the body where it stopped."""
        while not self.complete and self.size <= limit:
            message = await self._receive()
            self._count(message)
            self._held.append(message)
        return self.size if self.size <= limit else None


def body_tap(scope: Scope) -> BodyTap:
    """The :class:`BodyTap` of the :class:`IlpAsgiMiddleware` in front of this request."""
    tap = scope.get(BODY_SCOPE_KEY)
    if not isinstance(tap, BodyTap):
        raise RuntimeError(
            "no ilp-receiver middleware in front of this endpoint: add IlpAsgiMiddleware "
            "(or the framework adapter's middleware) to the application"
        )
    return tap


def _is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the client went away (starlette's ``ClientDisconnect``,
    uvicorn's ``ClientDisconnected``, a reset connection)."""
    return isinstance(exc, ConnectionError) or type(exc).__name__ in (
        "ClientDisconnect",
        "ClientDisconnected",
    )


async def settle_asgi(
    service: IlpService, app: AsgiApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run ``app`` and settle what a paywall recorded in ``scope``
    (:mod:`ilp_receiver.web.lifecycle`): add ``Pay`` / ``Pay-Balance`` to the response
    start, refund an answer of 400 or more, a view that raised and a body that failed;
    send the reply of a :class:`PaywallAnswer`."""
    started = False

    async def send_settled(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start" and not started:
            started = True
            paid = lifecycle.charge_of(scope)
            if paid is not None:
                headers = await lifecycle.respond(service, paid, int(message["status"]))
                if headers:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *_raw_headers(headers)]
        await send(message)

    try:
        await app(scope, receive, send_settled)
    except PaywallAnswer as answer:
        if started:
            raise
        await send_reply(send, answer.reply, head=scope.get("method") == "HEAD")
    except BaseException as exc:
        paid = lifecycle.charge_of(scope)
        # after the response started, a cancellation is the server giving up on a client
        # that left (hypercorn, the test client): the answer was made, the charge stands
        left = _is_disconnect(exc) or isinstance(exc, asyncio.CancelledError)
        if paid is not None and not (started and left):
            await lifecycle.fail(service, paid)
        raise


class IlpAsgiMiddleware(IlpService):
    """Pure ASGI middleware: lifespan start/stop, SPSP endpoints, paid routes, settling.

    ``IlpAsgiMiddleware(app, receiver, paid={"/upload": 10}, pointers=["bob"])``; the
    settings (keywords, or ``options``) are those of :class:`IlpService`, over the
    ``ILP_RECEIVER_*`` environment.  With ``lifespan=False`` the application starts and
    stops the receiver itself.  This generic middleware cannot see the app's routing, so
    a path rule applies to every matching path; the framework adapters apply rules only
    to requests that reach a route (:meth:`route_rule`).
    """

    def __init__(
        self,
        app: AsgiApp,
        receiver: AsyncReceiver,
        *,
        options: ReceiverOptions | None = None,
        lifespan: bool = True,
        **settings: Any,
    ) -> None:
        if options is None:
            options = ReceiverOptions.from_settings(**settings)
        elif settings:
            options = options.replace(**settings)
        super().__init__(receiver, options=options)
        self.app = app
        self.manage_lifespan = lifespan

    def route_rule(self, scope: Scope, method: str, path: str) -> PaidRoute | None:
        """The path rule that charges this request, or None.  Here: the first rule
        matching the path; adapters that can see the routing also require a route (no
        charge for 404/405) and leave views with a paywall of their own to it."""
        return self.rule_for(method, path)

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
        tap = BodyTap(receive)
        scope[BODY_SCOPE_KEY] = tap
        receive = tap.receive
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
        if self.health_path is not None and path == self.health_path:
            reply = self.health(method, path)
            if reply is not None:
                await send_reply(send, reply, head=method == "HEAD")
                return
        wanted = self.routes or method == "OPTIONS"
        rule = self.route_rule(scope, method, path) if wanted else None
        if rule is not None:
            reply = await self.enter(
                scope,
                facts_from_scope(scope),
                rule.price,
                pay_method=rule.pay_method,
                read_body=tap.read,
            )
            if reply is not None:
                await send_reply(send, reply, head=method == "HEAD")
                return
        await settle_asgi(self, self.app, scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the receiver before the app's startup, stop it after its shutdown.

        When the receiver cannot start (``require_uplink`` and no uplink, a bad
        setting) the server gets ``lifespan.startup.failed`` with the reason and the
        app's startup does not run.  An app that does not speak the lifespan protocol
        gets it spoken for it.
        """
        first = await receive()
        if first["type"] != "lifespan.startup":
            await self.app(scope, receive, send)
            return
        try:
            await self.start()
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.error("ilp-receiver could not start: %s", reason)
            await send({"type": "lifespan.startup.failed", "message": f"ilp-receiver: {reason}"})
            # as Starlette's router does: the server has the reason already (uvicorn exits
            # with it), a test client gets the exception
            raise
        pending = [first]
        answered = False

        async def app_receive() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        async def app_send(message: Message) -> None:
            nonlocal answered
            kind = message["type"]
            if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
                answered = True
            if kind in (
                "lifespan.startup.failed",
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                await self.stop()
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if answered or not pending:
                await self.stop()
                raise
            # the app raised before even reading the startup: it has no lifespan support
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            await self.stop()
            await send({"type": "lifespan.shutdown.complete"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
