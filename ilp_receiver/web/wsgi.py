"""Framework-neutral sync glue for WSGI apps: the same service, reached through the portal.

Design principle 3: sync callers reach the one asyncio implementation through one
long-lived background event loop (:class:`~ilp_receiver.portal.BlockingPortal`).
:class:`SyncIlpService` runs :class:`~ilp_receiver.web.asgi.IlpService` (SPSP endpoints,
paywall) on the portal of a sync :class:`~ilp_receiver.Receiver`; every call blocks only
the request's own thread.  The paywall's decision is the one exception: when the price
is known without awaiting and the store has blocking methods (memory, SQLite), it runs
on the request's thread (:meth:`~ilp_receiver.paywall.Paywall.check_blocking`: same
logic, same atomic debit), saving the two thread switches of a portal round trip.

Fork-aware: the receiver is started on first use *in each process* (give a factory, so
gunicorn ``--preload`` workers each connect their own uplink after the fork), and the
store is shared between processes (SQLite file, Redis, PostgreSQL).

:class:`IlpWsgiMiddleware` applies it to any WSGI application.
"""

from __future__ import annotations

import http
import io
import os
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ..http_reply import HttpReply
from ..options import ReceiverOptions
from ..paywall import (
    PaidRoute,
    PaidRoutes,
    PaywallDecision,
    Price,
    RequestFacts,
    body_limit,
    resolve_price,
    uplink_unavailable_reply,
)
from . import lifecycle
from .service import IlpService, PointerMount, health_reply

if TYPE_CHECKING:
    from ..portal import BlockingPortal
    from ..receiver import AsyncReceiver, Receiver

__all__ = [
    "IlpWsgiMiddleware",
    "ReceiverSource",
    "StartResponse",
    "SyncIlpService",
    "WsgiApp",
    "facts_from_environ",
    "read_wsgi_body",
    "settle_wsgi",
    "status_line",
]

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]
#: A sync :class:`~ilp_receiver.Receiver`, or a function creating one (called once per
#: process, after any fork).
ReceiverSource: TypeAlias = "Receiver | Callable[[], Receiver]"


def status_line(status: int) -> str:
    """The WSGI status string for ``status``."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{status} {phrase}"


async def _create_stream_server(receiver: AsyncReceiver) -> None:
    receiver.stream_server  # noqa: B018 (the property creates it)


def _portal_of(receiver: Receiver) -> BlockingPortal:
    # The sync facade keeps its portal private; every sync call must go through it.
    portal: BlockingPortal = receiver.portal
    return portal


class SyncIlpService:
    """SPSP endpoints, a paywall and the health report for a sync
    :class:`~ilp_receiver.Receiver`.

    Same settings as :class:`~ilp_receiver.web.asgi.IlpService` (``options`` and/or
    keywords).  The receiver starts on the first call in each process (or on
    :meth:`start`); :meth:`stop` stops it.
    """

    def __init__(
        self,
        receiver: ReceiverSource,
        *,
        options: ReceiverOptions | None = None,
        **settings: Any,
    ) -> None:
        opts = options if options is not None else ReceiverOptions()
        if settings:
            opts = opts.replace(**settings)
        self.options = opts
        self._source = receiver
        self.routes: PaidRoutes = opts.paid
        self.mount = PointerMount(opts.pointers, well_known=opts.well_known)
        self.health_path = opts.health_path
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._receiver: Receiver | None = None
        self._service: IlpService | None = None
        self._portal: BlockingPortal | None = None
        self._stream_ready = False

    # -- lifecycle ---------------------------------------------------------------------

    def _ensure(self) -> tuple[IlpService, BlockingPortal]:
        service, portal = self._service, self._portal
        if service is not None and portal is not None and self._pid == os.getpid():
            return service, portal
        with self._lock:
            if self._service is None or self._pid != os.getpid():
                self._start_locked()
            assert self._service is not None
            assert self._portal is not None
            return self._service, self._portal

    def _start_locked(self) -> None:
        pid = os.getpid()
        source = self._source
        if callable(source):
            receiver = source()
        else:
            receiver = source
            if self._pid is not None and self._pid != pid:
                raise RuntimeError(
                    "this receiver was started before fork(); give a function creating the "
                    "Receiver so that each process starts its own"
                )
        receiver.start()
        self._receiver = receiver
        self._portal = _portal_of(receiver)
        self._stream_ready = False
        self._service = IlpService(receiver.async_receiver, options=self.options, mount=self.mount)
        self._pid = pid
        self._prepare_stream()

    def _prepare_stream(self) -> None:
        """Create the STREAM server on its loop (once the address is known), before
        request threads issue ``interledger-stream`` Pay headers from it."""
        receiver, portal = self._receiver, self._portal
        if self._stream_ready or receiver is None or portal is None:
            return
        async_receiver = receiver.async_receiver
        if not async_receiver.ready:
            return
        if async_receiver.stream_enabled:
            portal.call(_create_stream_server, async_receiver)
        self._stream_ready = True

    def start(self) -> None:
        """Start the receiver in this process now (instead of on the first request)."""
        self._ensure()

    def stop(self) -> None:
        """Stop the receiver if this process started it."""
        with self._lock:
            receiver = self._receiver
            if receiver is not None and self._pid == os.getpid():
                receiver.stop()
            self._receiver = self._service = self._portal = None
            self._pid = None

    @property
    def receiver(self) -> Receiver:
        """The sync receiver of this process (started)."""
        self._ensure()
        assert self._receiver is not None
        return self._receiver

    @property
    def service(self) -> IlpService:
        """The async service running on the portal."""
        return self._ensure()[0]

    @property
    def portal(self) -> BlockingPortal:
        """The portal the receiver runs on."""
        return self._ensure()[1]

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected (starts the receiver in this process)."""
        service = self._ensure()[0]
        if not service.ready:
            return False
        if not self._stream_ready:
            with self._lock:
                self._prepare_stream()
        return True

    # -- requests ----------------------------------------------------------------------

    def spsp(
        self,
        method: str,
        path: str,
        accept: str | None,
        *,
        receipt_nonce: str | None = None,
        receipt_secret: str | None = None,
    ) -> HttpReply | None:
        """The SPSP reply for this request, or None when it is not an SPSP query
        (``receipt_nonce`` / ``receipt_secret``: the RFC 39 request headers); ``503``
        while the uplink has not connected."""
        if path not in self.mount.paths or self.mount.account(method, path, accept) is None:
            return None
        if not self.ready:
            return uplink_unavailable_reply()
        service, portal = self._ensure()
        return portal.call(
            service.spsp,
            method,
            path,
            accept,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )

    def health(self, method: str, path: str) -> HttpReply | None:
        """The health report when ``path`` is the configured ``health_path``."""
        if self.health_path is None or path != self.health_path or method not in ("GET", "HEAD"):
            return None
        return health_reply(self.service.receiver)

    def rule_for(self, method: str, path: str) -> PaidRoute | None:
        """The configured path rule charging ``method path``, or None."""
        return self.routes.find(method, path) if self.routes else None

    def check(
        self, request: RequestFacts, price: Price, *, pay_method: str | None = None
    ) -> PaywallDecision:
        """Run the paywall; a sync price function runs in the caller's thread.

        On the caller's thread too when the price is an ``int`` and the store has
        blocking methods; otherwise (and while a STREAM payment is awaited) on the
        portal.  ``pay_method``: the route's (None: the service's).
        """
        service, portal = self._ensure()
        value = resolve_price(price, request)
        if isinstance(value, int) and not portal.in_portal_thread():
            decision = service.paywall.check_blocking(request, value, pay_method=pay_method)
            if decision is not None:
                return decision
        return portal.call(service.paywall.check, request, value, pay_method=pay_method)

    def refund(self, decision: PaywallDecision) -> int | None:
        """Give back what ``decision`` charged; the token's balance afterwards."""
        if not decision.charged:
            return None
        service, portal = self._ensure()
        if not portal.in_portal_thread():
            balance = service.paywall.refund_blocking_balance(decision)
            if balance is not False:
                return balance
        return portal.call(service.refund, decision)

    def enter(
        self,
        state: MutableMapping[str, Any],
        request: RequestFacts,
        price: Price,
        *,
        pay_method: str | None = None,
        read_body: lifecycle.SyncBodyReader | None = None,
    ) -> HttpReply | None:
        """Decide on a request to a paid route and record it in ``state``
        (:func:`ilp_receiver.web.lifecycle.enter_sync`): the reply to send instead of
        running the view, or None to run it."""
        return lifecycle.enter_sync(
            self, state, request, price, pay_method=pay_method, read_body=read_body
        )

    def balance(self, account: str) -> int:
        """The balance of ``account`` in the store."""
        return self.receiver.balance(account)


def facts_from_environ(environ: Environ) -> RequestFacts:
    """Request facts from a WSGI environ."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").lower()] = value
    return RequestFacts(environ["REQUEST_METHOD"].upper(), environ.get("PATH_INFO", ""), headers)


def read_wsgi_body(environ: Environ, limit: int) -> int | None:
    """Read the request body through a counting reader (``Content-Length`` bytes, or to
    the end of a terminated -- chunked -- input), at most ``limit`` + 1 bytes: how many
    arrived, or None when more than ``limit`` did.  The bytes are put back as
    ``wsgi.input`` for the app."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return 0
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if length_text.isdigit():
        remaining = min(int(length_text), limit + 1)
    elif environ.get("wsgi.input_terminated"):
        remaining = limit + 1
    else:
        remaining = 0  # WSGI: no Content-Length and no terminated input means no body
    chunks: list[bytes] = []
    size = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        remaining -= len(chunk)
    if size > limit:
        return None
    data = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(size)
    environ.pop("wsgi.input_terminated", None)
    return size


def settle_wsgi(
    service: SyncIlpService, app: WsgiApp, environ: Environ, start_response: StartResponse
) -> Iterable[bytes]:
    """Run ``app`` and settle what a paywall recorded in ``environ``
    (:mod:`ilp_receiver.web.lifecycle`): ``Pay`` / ``Pay-Balance`` on the response,
    refunds for an answer of 400 or more, an app that raised and a body that failed."""

    def start_settled(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        paid = lifecycle.charge_of(environ)
        if paid is not None:
            extra = lifecycle.respond_sync(service, paid, int(status.split(" ", 1)[0]))
            headers = [*headers, *extra.items()]
        return start_response(status, headers, exc_info)

    try:
        result = app(environ, start_settled)
    except BaseException:
        paid = lifecycle.charge_of(environ)
        if paid is not None:
            lifecycle.fail_sync(service, paid)
        raise
    paid = lifecycle.charge_of(environ)
    if paid is None:
        return result
    charge = paid
    return lifecycle.watch_body(result, lambda: lifecycle.fail_sync(service, charge))


def _respond(reply: HttpReply, start_response: StartResponse, *, head: bool = False) -> list[bytes]:
    headers = list(reply.headers.items())
    if reply.status not in (204, 304):
        headers.append(("Content-Length", str(len(reply.body))))
    start_response(status_line(reply.status), headers)
    return [] if head or reply.status in (204, 304) else [reply.body]


class IlpWsgiMiddleware(SyncIlpService):
    """WSGI middleware: SPSP endpoints, paid routes and their settling in front of any
    WSGI app.

    ``app.wsgi_app = IlpWsgiMiddleware(app.wsgi_app, make_receiver, paid={"/upload": 10})``;
    the settings (keywords, or ``options``) are those of :class:`SyncIlpService`, over
    the ``ILP_RECEIVER_*`` environment.  It cannot see the app's routing: a path rule
    applies to every matching path.
    """

    def __init__(
        self,
        app: WsgiApp,
        receiver: ReceiverSource,
        *,
        options: ReceiverOptions | None = None,
        **settings: Any,
    ) -> None:
        if options is None:
            options = ReceiverOptions.from_settings(**settings)
        elif settings:
            options = options.replace(**settings)
        super().__init__(receiver, options=options)
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI entry point."""
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO", "")
        head = method == "HEAD"
        if path in self.mount.paths:
            reply = self.spsp(
                method,
                path,
                environ.get("HTTP_ACCEPT"),
                receipt_nonce=environ.get("HTTP_RECEIPT_NONCE"),
                receipt_secret=environ.get("HTTP_RECEIPT_SECRET"),
            )
            if reply is not None:
                return _respond(reply, start_response, head=head)
        if self.health_path is not None:
            reply = self.health(method, path)
            if reply is not None:
                return _respond(reply, start_response, head=head)
        rule = self.rule_for(method, path)
        if rule is not None:
            reply = self.enter(
                environ,
                facts_from_environ(environ),
                rule.price,
                pay_method=rule.pay_method,
                read_body=None
                if body_limit(rule.price) is None
                else lambda limit: read_wsgi_body(environ, limit),
            )
            if reply is not None:
                return _respond(reply, start_response, head=head)
        return settle_wsgi(self, self.app, environ, start_response)
