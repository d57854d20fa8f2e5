"""The ASGI glue: :class:`IlpAsgiMiddleware` and the helpers ASGI adapters share.

:class:`IlpAsgiMiddleware` applies the framework-neutral
:class:`~ilp_receiver.web.service.IlpService` (SPSP mount, paywall, health report) to
any ASGI application as pure ASGI middleware (no framework needed): it starts and stops
the receiver with the app's lifespan (``lifespan.startup.failed`` with the reason when
the receiver cannot start), answers
SPSP queries, puts matching routes behind the paywall and settles every paid request
(:mod:`ilp_receiver.web.lifecycle`: the headers, the one refund rule) -- also those a
framework adapter's decorator or dependency charged.  It stores itself in
``scope["ilp_receiver"]`` so endpoints can reach the receiver (:func:`service_from_scope`),
and hands the app the request body through a :class:`BodyTap` (:func:`body_tap`), which
a body price reads ahead of the app without taking the body away from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from ..http_reply import HttpReply
from ..options import ReceiverOptions
from ..paywall import (
    PaidRoute,
    RequestFacts,
)
from . import lifecycle
from .service import IlpService

if TYPE_CHECKING:
    from ..receiver import AsyncReceiver

__all__ = [
    "BODY_SCOPE_KEY",
    "SCOPE_KEY",
    "AsgiApp",
    "BodyTap",
    "IlpAsgiMiddleware",
    "PaywallAnswer",
    "Receive",
    "Scope",
    "Send",
    "body_tap",
    "facts_from_scope",
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
