"""Framework-neutral sync glue for WSGI apps: the same service, reached through the portal.

Design principle 3: sync callers reach the one asyncio implementation through one
long-lived background event loop (:class:`~ilp_receiver._portal.BlockingPortal`).
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

import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from ..paywall import (
    DEFAULT_PAY_WAIT,
    PaidRoutes,
    PaywallDecision,
    Price,
    RequestFacts,
    RouteSpec,
    check_pay_method,
    check_pay_wait,
    resolve_price,
)
from .asgi import IlpService, PointerMount
from .reply import HttpReply

if TYPE_CHECKING:
    from .._portal import BlockingPortal
    from ..receiver import AsyncReceiver, Receiver

__all__ = [
    "IlpWsgiMiddleware",
    "ReceiverSource",
    "StartResponse",
    "SyncIlpService",
    "WsgiApp",
    "facts_from_environ",
    "status_line",
]

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]
#: A sync :class:`~ilp_receiver.Receiver`, or a function creating one (called once per
#: process, after any fork).
ReceiverSource: TypeAlias = "Receiver | Callable[[], Receiver]"

_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    402: "Payment Required",
    404: "Not Found",
    406: "Not Acceptable",
}


def status_line(status: int) -> str:
    """The WSGI status string for ``status``."""
    return f"{status} {_REASONS.get(status, 'Unknown')}"


async def _create_stream_server(receiver: AsyncReceiver) -> None:
    receiver.stream_server  # noqa: B018 (the property creates it)


def _portal_of(receiver: Receiver) -> BlockingPortal:
    # The sync facade keeps its portal private; every sync call must go through it.
    portal: BlockingPortal = receiver.portal
    return portal


class SyncIlpService:
    """SPSP endpoints and a paywall for a sync :class:`~ilp_receiver.Receiver`.

    Same options as :class:`~ilp_receiver.web.asgi.IlpService`.  The receiver starts on
    the first call in each process (or on :meth:`start`); :meth:`stop` stops it.
    """

    def __init__(
        self,
        receiver: ReceiverSource,
        *,
        paid: RouteSpec = None,
        pointers: Iterable[str] = (),
        well_known: bool = True,
        pay_method: str | None = None,
        pay_wait: float = DEFAULT_PAY_WAIT,
    ) -> None:
        self._source = receiver
        self.routes = PaidRoutes.of(paid)
        self.mount = PointerMount(pointers, well_known=well_known)
        # checked now (ConfigError at start-up), applied per process in _start_locked
        self.pay_method = pay_method if pay_method is None else check_pay_method(pay_method)
        self.pay_wait = check_pay_wait(pay_wait)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._receiver: Receiver | None = None
        self._service: IlpService | None = None
        self._portal: BlockingPortal | None = None

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
        self._portal = portal = _portal_of(receiver)
        async_receiver = receiver.async_receiver
        if async_receiver.stream_enabled:
            # create the STREAM server on its loop before request threads issue
            # interledger-stream Pay headers from it
            portal.call(_create_stream_server, async_receiver)
        self._service = IlpService(
            async_receiver,
            paid=self.routes,
            mount=self.mount,
            pay_method=self.pay_method,
            pay_wait=self.pay_wait,
        )
        self._pid = pid

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
        (``receipt_nonce`` / ``receipt_secret``: the RFC 39 request headers)."""
        if path not in self.mount.paths or self.mount.account(method, path, accept) is None:
            return None
        service, portal = self._ensure()
        return portal.call(
            service.spsp,
            method,
            path,
            accept,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )

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

    def refund(self, decision: PaywallDecision) -> None:
        """Give back what ``decision`` charged."""
        if decision.charged:
            service, portal = self._ensure()
            if portal.in_portal_thread() or not service.paywall.refund_blocking(decision):
                portal.call(service.refund, decision)

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


def _respond(reply: HttpReply, start_response: StartResponse, *, head: bool = False) -> list[bytes]:
    headers = list(reply.headers.items())
    if reply.status not in (204, 304):
        headers.append(("Content-Length", str(len(reply.body))))
    start_response(status_line(reply.status), headers)
    return [] if head or reply.status in (204, 304) else [reply.body]


class IlpWsgiMiddleware(SyncIlpService):
    """WSGI middleware: SPSP endpoints and paid routes in front of any WSGI app.

    ``app.wsgi_app = IlpWsgiMiddleware(app.wsgi_app, make_receiver, paid={"/upload": 10})``.
    """

    def __init__(
        self,
        app: WsgiApp,
        receiver: ReceiverSource,
        *,
        paid: RouteSpec = None,
        pointers: Iterable[str] = (),
        well_known: bool = True,
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
        route = self.routes.find(method, path) if self.routes else None
        if route is None:
            return self.app(environ, start_response)
        decision = self.check(facts_from_environ(environ), route.price, pay_method=route.pay_method)
        if decision.reply is not None:
            return _respond(decision.reply, start_response, head=head)
        extra = list(decision.headers.items())

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, *extra], exc_info)

        try:
            result = self.app(environ, start_with_headers)
        except BaseException:
            self.refund(decision)
            raise
        return result
