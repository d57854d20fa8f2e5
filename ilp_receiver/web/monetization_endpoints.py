"""Framework-neutral HTTP pieces for Web Monetization and Web Payments.

Written once (design principle 7) and translated by the adapters:

* :class:`MonetizationService` -- the endpoints (``<prefix>/client.js``, the visitor's
  SPSP endpoint ``<prefix>/<id>`` of eras A and B, the era-C SPSP endpoint ``<prefix>``
  reading ``Web-Monetization-Id``, per-order pointers ``/orders/<id>``), the visitor
  lookup (cookie or header; a fresh signed cookie when there is none) and the
  ``monetized`` route guard (debit the price from the visitor's bucket, or 402,
  optionally waiting).
* :class:`OrderEndpoints` -- per-order payment pointers ``/orders/<id>`` on their own
  (Web Payments), with :class:`OrdersAsgiMiddleware` and :class:`SyncOrderEndpoints`.
* :class:`MonetizationAsgiMiddleware` -- the monetization service as pure ASGI
  middleware (it puts the visitor lookup into the scope and adds ``Set-Cookie``).
* :class:`SyncMonetizationService` -- the same for WSGI apps, on the portal of a
  :class:`~ilp_receiver.web.wsgi.SyncIlpService`.

Every SPSP endpoint here serves both setups on one URL, chosen by ``Accept`` as the plain
pointer does (:func:`~ilp_receiver.spsp.negotiate_setup`, ``12-stream.md`` §15 item
11): SPSP v4 (``application/spsp4+json``, a STREAM destination whose authenticated
connection tag is the bucket or order account) for STREAM clients, wildcards, JSON or
no ``Accept``; PSK2 (``application/spsp+json``) for a client naming only that type.
STREAM answers honour ``Receipt-Nonce`` / ``Receipt-Secret`` (RFC 39); every SPSP
answer carries ``Cache-Control``, ``Vary`` and the CORS headers, and ``OPTIONS`` on the
monetization endpoints gets the CORS preflight (204).

Replies (JSON bodies, ``{"id": ..., "message": ...}``):

======================================  ================================================
a tampered cookie / malformed id        ``400`` ``InvalidVisitorId``
malformed receipt headers               ``400`` ``InvalidReceiptError``
SPSP query whose ``Accept`` allows      ``406`` naming the types served (open question
neither SPSP type                       26: "Use 404 (or 406)")
unknown order pointer                   ``404`` ``InvalidReceiverError``
bucket below the price                  ``402`` ``InsufficientBalance`` ("insufficient
                                        balance on id. id=...", as the 2018 middleware)
no visitor yet (a first visit: the      ``402`` ``MonetizationRequired``, with the
cookie is being set by this answer)     new visitor cookie
uplink not connected yet (SPSP queries) ``503`` ``UplinkUnavailable``, ``Retry-After``
======================================  ================================================
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..http_reply import HttpReply, json_reply
from ..monetization import (
    CLIENT_SCRIPT_NAME,
    MONETIZATION_ID_HEADER,
    OP_CLIENT_SCRIPT_NAME,
    InvalidVisitorIdError,
    Monetizer,
    Visitor,
    client_script,
    open_payments_client_script,
)
from ..open_payments import OpenPaymentsError
from ..paywall import Price, RequestFacts, price_value, resolve_price, uplink_unavailable_reply
from ..spsp import (
    SPSP4_MEDIA_TYPE,
    SPSP_MEDIA_TYPE,
    SetupProtocol,
    invalid_receiver_body,
    negotiate_setup,
    not_acceptable_body,
)
from ..webpayments import OrderBook, is_order_id
from .asgi import SCOPE_KEY, AsgiApp, Receive, Scope, Send, facts_from_scope, send_reply
from .service import IlpService
from .spsp_endpoint import CORS_HEADERS, preflight_reply, receipt_fields

if TYPE_CHECKING:
    from ..monetization_verifier import IncomingPaymentVerifier
    from ..portal import BlockingPortal
    from ..receiver import AsyncReceiver
    from ..spsp import SpspResponse
    from .wsgi import SyncIlpService

__all__ = [
    "BALANCE_PATH",
    "LOOKUP_SCOPE_KEY",
    "MAX_REPORT_BYTES",
    "MONETIZATION_SCOPE_KEY",
    "REPORT_PATH",
    "MonetizationAsgiMiddleware",
    "MonetizationService",
    "MonetizedDecision",
    "OrderEndpoints",
    "OrdersAsgiMiddleware",
    "SyncMonetizationService",
    "SyncOrderEndpoints",
    "VisitorLookup",
    "cookie_value",
    "insufficient_balance_reply",
    "invalid_visitor_reply",
    "metered_sync",
    "order_spsp_reply",
    "read_body",
    "service_and_lookup",
]

#: Where :class:`MonetizationAsgiMiddleware` puts the service in the ASGI scope.
MONETIZATION_SCOPE_KEY: Final = "ilp_receiver.monetization"
#: Where it puts the request's :class:`VisitorLookup`.
LOOKUP_SCOPE_KEY: Final = "ilp_receiver.visitor"
_JS_TYPE: Final = "application/javascript; charset=utf-8"
#: Where the page posts ``monetization`` events (``<prefix>/incoming-payments``).
REPORT_PATH: Final = "/incoming-payments"
#: Where the page reads (and waits for) the visitor's balance (``<prefix>/balance``).
BALANCE_PATH: Final = "/balance"
#: The largest report body read (a report is two URLs).
MAX_REPORT_BYTES: Final = 4096
#: The request header asking ``<prefix>/balance`` to wait for at least that balance.
WAIT_FOR_HEADER: Final = "Monetization-Wait-For"
#: The longest ``<prefix>/balance`` waits.
MAX_BALANCE_WAIT: Final = 10.0
_NO_STORE: Final = {"Cache-Control": "no-store"}


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header (first one wins)."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


@dataclass(frozen=True, slots=True)
class VisitorLookup:
    """Who a request is from, as far as monetization goes.

    ``visitor``: the bucket owner (None only when a presented id was refused in strict
    mode).  ``set_cookie``: a ``Set-Cookie`` value to add to the response (a fresh
    visitor).  ``error``: why a presented cookie or header was refused (a guard answers
    400; other pages just get the fresh cookie).
    """

    visitor: Visitor | None
    set_cookie: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MonetizedDecision:
    """What the ``monetized`` guard decided.

    ``reply`` set: answer with it.  Otherwise serve; ``charged`` was debited from
    ``visitor``'s bucket (refund it if the route fails) and ``balance`` is what is left.
    """

    reply: HttpReply | None
    visitor: Visitor | None = None
    charged: int = 0
    balance: int | None = None

    @property
    def serve(self) -> bool:
        """True when the route should run."""
        return self.reply is None


def invalid_visitor_reply(reason: str) -> HttpReply:
    """``400`` for a tampered or malformed visitor id (the value is not echoed)."""
    return json_reply(400, {"id": "InvalidVisitorId", "message": reason})


def _error_reply(status: int, error_id: str, message: str) -> HttpReply:
    return json_reply(status, {"id": error_id, "message": message}, headers=_NO_STORE)


def _declared_length(facts: RequestFacts) -> int:
    value = (facts.header("content-length") or "0").strip()
    return int(value) if value.isdigit() and len(value) < 19 else 0


def _parse_report(body: bytes) -> tuple[str, str | None] | str:
    """``(incomingPayment, paymentPointer)`` of a report body, or why it is refused."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "the report is not JSON"
    if not isinstance(doc, dict):
        return "the report is not a JSON object"
    url = doc.get("incomingPayment")
    pointer = doc.get("paymentPointer")
    if not isinstance(url, str) or not 0 < len(url) <= 2048:
        return "incomingPayment must be a URL"
    if pointer is not None and (not isinstance(pointer, str) or len(pointer) > 2048):
        return "paymentPointer must be a URL"
    return url, pointer


def insufficient_balance_reply(visitor: Visitor | None, price: int, balance: int) -> HttpReply:
    """``402`` for a bucket below ``price`` (or no visitor at all)."""
    if visitor is None:
        body = {
            "id": "MonetizationRequired",
            "message": "no visitor id: load a monetized page first",
            "price": str(price),
        }
    else:
        body = {
            "id": "InsufficientBalance",
            "message": f"insufficient balance on id. id={visitor.label}",
            "price": str(price),
            "balance": str(max(balance, 0)),
        }
    return json_reply(402, body)


def _spsp_json(response: SpspResponse, max_age: int, vary: str) -> HttpReply:
    return json_reply(
        200,
        response.to_json(),
        content_type=response.media_type,
        headers={"Cache-Control": f"max-age={max_age}", "Vary": vary, **CORS_HEADERS},
    )


def _with_cors(reply: HttpReply) -> HttpReply:
    """``reply`` with the CORS headers of an SPSP endpoint (script polyfills read it)."""
    return HttpReply(reply.status, {**reply.headers, **CORS_HEADERS}, reply.body)


def _is_spsp_query(accept: str | None) -> bool:
    """Whether ``accept`` allows either SPSP type (a query, not a page request)."""
    return negotiate_setup(accept) is not None


@dataclass(frozen=True, slots=True)
class _Setup:
    """What an SPSP query asked for: the protocol and, for STREAM, RFC 39 receipts."""

    protocol: SetupProtocol
    receipt_nonce: bytes | None = None
    receipt_secret: bytes | None = None


def _negotiate(
    receiver: AsyncReceiver,
    accept: str | None,
    receipt_nonce: str | None,
    receipt_secret: str | None,
) -> _Setup | HttpReply:
    """STREAM or PSK2 for this query (``negotiate_setup``; PSK2 only when the receiver
    serves no STREAM), or the 406 / 400 reply."""
    stream = receiver.stream_enabled
    media_type = negotiate_setup(accept, stream=stream)
    if media_type is None:
        offered = (SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE) if stream else (SPSP_MEDIA_TYPE,)
        return _with_cors(json_reply(406, not_acceptable_body(offered)))
    if media_type != SPSP4_MEDIA_TYPE:
        return _Setup("psk2")
    fields = receipt_fields(receipt_nonce, receipt_secret)
    if isinstance(fields, str):
        return _with_cors(json_reply(400, {"id": "InvalidReceiptError", "message": fields}))
    return _Setup("stream", *fields)


async def order_spsp_reply(
    orders: OrderBook | None,
    order_id: str,
    accept: str | None,
    *,
    receipt_nonce: str | None = None,
    receipt_secret: str | None = None,
) -> HttpReply:
    """The SPSP reply of an order pointer: 200 (SPSP v4 or PSK2, by ``accept``), 404
    (unknown order), 406 or 400 (malformed ``Receipt-Nonce`` / ``Receipt-Secret``, the
    raw request headers).

    "unknown receiver -> ``404 Not Found``, ``Content-Type: application/json``, body
    ``{"id": "InvalidReceiverError", "message": "Invalid receiver ID"}``".
    """
    if orders is None or not is_order_id(order_id):
        return _with_cors(json_reply(404, invalid_receiver_body()))
    setup = _negotiate(orders.receiver, accept, receipt_nonce, receipt_secret)
    if isinstance(setup, HttpReply):
        return setup
    response = await orders.spsp_response(
        order_id,
        protocol=setup.protocol,
        receipt_nonce=setup.receipt_nonce,
        receipt_secret=setup.receipt_secret,
    )
    if response is None:
        return _with_cors(json_reply(404, invalid_receiver_body()))
    return _spsp_json(response, orders.receiver.spsp_max_age, "Accept")


class OrderEndpoints:
    """Per-order payment pointers at ``<prefix>/<id>`` (Web Payments), framework-neutral.

    Only SPSP queries are answered (an ``Accept`` that allows ``application/spsp4+json``
    or ``application/spsp+json``: STREAM or PSK2, see :func:`order_spsp_reply`); other
    requests to the same paths go to the shop's own pages.
    """

    def __init__(self, orders: OrderBook, *, prefix: str = "/orders") -> None:
        self.orders = orders
        self.prefix = prefix.rstrip("/")

    def bind(self, receiver: AsyncReceiver) -> None:
        """Attach the order book to ``receiver``."""
        self.orders.attach(receiver)

    def handles(self, path: str) -> bool:
        """Whether ``path`` is ``<prefix>/<one segment>`` (cheap; no I/O)."""
        prefix = self.prefix + "/"
        return path.startswith(prefix) and "/" not in path[len(prefix) :]

    async def handle(self, facts: RequestFacts) -> HttpReply | None:
        """The SPSP reply for an order pointer, or None when ``facts`` is not one."""
        if facts.method not in ("GET", "HEAD") or not self.handles(facts.path):
            return None
        accept = facts.header("accept")
        if not _is_spsp_query(accept):
            return None
        if not self.orders.receiver.ready:
            return _with_cors(uplink_unavailable_reply())
        return await order_spsp_reply(
            self.orders,
            facts.path[len(self.prefix) + 1 :],
            accept,
            receipt_nonce=facts.header("receipt-nonce"),
            receipt_secret=facts.header("receipt-secret"),
        )


class MonetizationService:
    """Monetization endpoints, visitor lookup and the route guard for one receiver.

    ``monetizer``: the :class:`~ilp_receiver.monetization.Monetizer`; ``orders``: an
    :class:`~ilp_receiver.webpayments.OrderBook` whose pointers are served at
    ``<orders_prefix>/<id>`` (None: no order pointers).  ``cookie_max_age``: seconds
    the visitor cookie lives (None: a session cookie).  ``verifier``: an
    :class:`~ilp_receiver.monetization_verifier.IncomingPaymentVerifier` for today's
    Web Monetization: ``<prefix>/wm.js``, ``POST <prefix>/incoming-payments`` (see
    :meth:`handle_report`) and ``GET <prefix>/balance`` are served when it is given.
    """

    def __init__(
        self,
        monetizer: Monetizer,
        orders: OrderBook | None = None,
        *,
        orders_prefix: str = "/orders",
        cookie_max_age: int | None = None,
        verifier: IncomingPaymentVerifier | None = None,
    ) -> None:
        self.monetizer = monetizer
        self.orders = orders
        self.orders_prefix = orders_prefix.rstrip("/")
        self.cookie_max_age = cookie_max_age
        self.verifier = verifier
        self._receiver: AsyncReceiver | None = None

    def bind(self, receiver: AsyncReceiver) -> None:
        """Attach the monetizer (and the order book) to ``receiver``."""
        if receiver is self._receiver:
            return
        self.monetizer.attach(receiver)
        if self.orders is not None:
            self.orders.attach(receiver)
        self._receiver = receiver

    @property
    def bound(self) -> AsyncReceiver | None:
        """The receiver bound last (None before the first :meth:`bind`)."""
        return self._receiver

    def _uplink_ready(self) -> bool:
        receiver = self._receiver
        return receiver is None or receiver.ready

    # -- routing -----------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        """Whether ``path`` may be one of our endpoints (cheap; no I/O)."""
        prefix = self.monetizer.prefix
        if path == prefix or path.startswith(prefix + "/"):
            return True
        orders = self.orders_prefix + "/"
        return (
            self.orders is not None and path.startswith(orders) and "/" not in path[len(orders) :]
        )

    async def handle(self, facts: RequestFacts) -> HttpReply | None:
        """The reply of one of our endpoints, or None when ``facts`` is not for one.

        ``OPTIONS`` on the monetization endpoints gets the CORS preflight (204).
        """
        method = facts.method
        if method not in ("GET", "HEAD", "OPTIONS") or not self.handles(facts.path):
            return None
        prefix = self.monetizer.prefix
        path = facts.path
        ours = path == prefix or path.startswith(prefix + "/")
        if method == "OPTIONS":
            # script polyfills query the pointer from the page, with Web-Monetization-Id
            return preflight_reply() if ours else None
        if path == f"{prefix}/{CLIENT_SCRIPT_NAME}":
            script = client_script(cookie_name=self.monetizer.cookie_name, prefix=prefix)
            headers = {"Content-Type": _JS_TYPE, "Cache-Control": "no-cache"}
            return HttpReply(200, headers, script.encode("utf-8"))
        if self.verifier is not None:
            # today's Web Monetization needs no uplink: the money is at the wallet
            if path == f"{prefix}/{OP_CLIENT_SCRIPT_NAME}":
                script = open_payments_client_script(prefix=prefix)
                headers = {"Content-Type": _JS_TYPE, "Cache-Control": "no-cache"}
                return HttpReply(200, headers, script.encode("utf-8"))
            if path == prefix + BALANCE_PATH:
                return await self.balance_reply(facts)
            if path == prefix + REPORT_PATH:
                return _error_reply(405, "MethodNotAllowed", "POST a report here")
        accept = facts.header("accept")
        nonce, secret = facts.header("receipt-nonce"), facts.header("receipt-secret")
        if (ours or _is_spsp_query(accept)) and not self._uplink_ready():
            return _with_cors(uplink_unavailable_reply())
        if path == prefix:
            return await self._era_c(accept, facts.header(MONETIZATION_ID_HEADER), nonce, secret)
        if ours:
            return await self._era_a(path[len(prefix) + 1 :], accept, nonce, secret)
        order_id = path[len(self.orders_prefix) + 1 :]
        if not _is_spsp_query(accept):
            return None  # the shop's own page for the order, if it has one
        return await self.order_reply(order_id, accept, receipt_nonce=nonce, receipt_secret=secret)

    async def _era_a(
        self, value: str, accept: str | None, nonce: str | None, secret: str | None
    ) -> HttpReply:
        # Era A: "Server SPSP route ``GET /pay/:id``" / "SPSP endpoint ``/__monetizer/:id``"
        # (PSK2); era B: the same visitor over STREAM ("SPSP answered only for Accept
        # containing application/spsp4+json"), for WebMonetization.monetize
        try:
            visitor_id = self.monetizer.ids.from_path(value)
        except InvalidVisitorIdError as exc:
            return _with_cors(invalid_visitor_reply(str(exc)))
        setup = _negotiate(self.monetizer.receiver, accept, nonce, secret)
        if isinstance(setup, HttpReply):
            return setup
        response = await self.monetizer.spsp_response(
            visitor_id,
            protocol=setup.protocol,
            receipt_nonce=setup.receipt_nonce,
            receipt_secret=setup.receipt_secret,
        )
        return _spsp_json(response, self.monetizer.receiver.spsp_max_age, "Accept")

    async def _era_c(
        self,
        accept: str | None,
        monetization_id: str | None,
        nonce: str | None,
        secret: str | None,
    ) -> HttpReply:
        # "Serve SPSP at the pointer's URL; read ``Web-Monetization-Id`` and bind the
        # generated destination/secret to it" (STREAM: "connection tag")
        visitor: Visitor | None = None
        if monetization_id is not None:
            try:
                visitor = self.monetizer.ids.monetization_visitor(monetization_id.strip())
            except InvalidVisitorIdError as exc:
                return _with_cors(invalid_visitor_reply(str(exc)))
        setup = _negotiate(self.monetizer.receiver, accept, nonce, secret)
        if isinstance(setup, HttpReply):
            return setup
        response = await self.monetizer.spsp_response(
            visitor,
            protocol=setup.protocol,
            receipt_nonce=setup.receipt_nonce,
            receipt_secret=setup.receipt_secret,
        )
        max_age = self.monetizer.receiver.spsp_max_age
        return _spsp_json(response, max_age, f"Accept, {MONETIZATION_ID_HEADER}")

    async def order_reply(
        self,
        order_id: str,
        accept: str | None,
        *,
        receipt_nonce: str | None = None,
        receipt_secret: str | None = None,
    ) -> HttpReply:
        """The SPSP reply of an order pointer (see :func:`order_spsp_reply`)."""
        return await order_spsp_reply(
            self.orders,
            order_id,
            accept,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )

    # -- today's Web Monetization (Open Payments) ---------------------------------------

    def report_limit(self, facts: RequestFacts) -> int | None:
        """The body size to read for ``facts`` when it is a report, else None (no I/O).

        Adapters read at most one byte more than this and call :meth:`handle_report`.
        """
        if (
            self.verifier is not None
            and facts.method == "POST"
            and facts.path == self.monetizer.prefix + REPORT_PATH
        ):
            return MAX_REPORT_BYTES
        return None

    def _reporting_visitor(self, facts: RequestFacts) -> Visitor | HttpReply:
        presented = cookie_value(facts.header("cookie"), self.monetizer.cookie_name)
        if presented is None:
            return _error_reply(
                400, "NoVisitor", "no visitor cookie: load a monetized page of this site first"
            )
        try:
            return self.monetizer.ids.visitor(self.monetizer.ids.verify(presented))
        except InvalidVisitorIdError as exc:
            return invalid_visitor_reply(str(exc))

    async def handle_report(self, facts: RequestFacts, body: bytes) -> HttpReply:
        """``POST <prefix>/incoming-payments``: verify a ``monetization`` event's payment.

        The body is JSON ``{"incomingPayment": <url>, "paymentPointer": <url>?}`` (at
        most :data:`MAX_REPORT_BYTES`, ``Content-Type: application/json``, which also
        keeps other sites from posting it without a CORS preflight); the visitor is the
        signed cookie.  ``200`` with what was credited, the balance and whether the
        payment is watched; otherwise a JSON error ``{"id", "message"}``: ``413``
        ``ReportTooLarge``, ``415`` ``UnsupportedMediaType``, ``400`` ``InvalidReport`` /
        ``NoVisitor`` / ``InvalidVisitorId`` / ``NotOurWallet`` / ``PrivateAddress``,
        ``409`` ``IncomingPaymentClaimed`` / ``AssetMismatch``, ``404``
        ``UnknownIncomingPayment``, ``502``/``504`` ``WalletUnreachable`` /
        ``WalletBadResponse``.  Nothing is credited unless the answer is 200.
        """
        verifier = self.verifier
        if verifier is None:
            return _error_reply(404, "NotFound", "no verifier configured")
        if len(body) > MAX_REPORT_BYTES or _declared_length(facts) > MAX_REPORT_BYTES:
            return _error_reply(
                413, "ReportTooLarge", f"a report is at most {MAX_REPORT_BYTES} bytes"
            )
        media_type = (facts.header("content-type") or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return _error_reply(415, "UnsupportedMediaType", "send the report as application/json")
        visitor = self._reporting_visitor(facts)
        if isinstance(visitor, HttpReply):
            return visitor
        report = _parse_report(body)
        if isinstance(report, str):
            return _error_reply(400, "InvalidReport", report)
        incoming_payment, pointer = report
        try:
            result = await verifier.report(visitor, incoming_payment, pointer)
        except OpenPaymentsError as exc:
            return _error_reply(exc.status, exc.error_id, str(exc))
        return json_reply(200, result.to_json(), headers=_NO_STORE)

    async def balance_reply(self, facts: RequestFacts) -> HttpReply:
        """``GET <prefix>/balance``: the visitor's balance, optionally waited for.

        With ``Monetization-Wait-For: <n>`` it waits (event-driven, at most
        :data:`MAX_BALANCE_WAIT` seconds) until the bucket holds ``n``; it answers the
        balance either way: ``{"balance", "assetCode", "assetScale"}``.
        """
        visitor = self._reporting_visitor(facts)
        if isinstance(visitor, HttpReply):
            return visitor
        wanted = facts.header(WAIT_FOR_HEADER)
        monetizer = self.monetizer
        balance: int | None = None
        if wanted is not None:
            text = wanted.strip()
            if not text.isdigit() or len(text) > 20:
                return _error_reply(400, "InvalidWait", f"{WAIT_FOR_HEADER} is an amount")
            with contextlib.suppress(TimeoutError):
                balance = await monetizer.await_balance(visitor, int(text), MAX_BALANCE_WAIT)
        if balance is None:
            balance = await monetizer.balance(visitor)
        payload: dict[str, object] = {"balance": str(max(balance, 0))}
        verifier = self.verifier
        if verifier is not None:
            if verifier.asset_code is not None:
                payload["assetCode"] = verifier.asset_code
                payload["assetScale"] = verifier.asset_scale
            else:
                with contextlib.suppress(OpenPaymentsError):
                    wallet = await verifier.wallet()
                    payload["assetCode"] = wallet.asset_code
                    payload["assetScale"] = wallet.asset_scale
        return json_reply(200, payload, headers=_NO_STORE)

    # -- visitors ----------------------------------------------------------------------

    def lookup(self, facts: RequestFacts, *, secure: bool = False) -> VisitorLookup:
        """The visitor of a request; a fresh one (with ``set_cookie``) when it has none.

        ``Web-Monetization-Id`` (era C) wins over the cookie.  A malformed header gives
        ``visitor=None`` and an ``error``; a tampered cookie gives a fresh visitor, its
        cookie, *and* an ``error`` (a guard refuses the request with 400).
        """
        monetizer = self.monetizer
        header = facts.header(MONETIZATION_ID_HEADER)
        if header is not None:
            try:
                return VisitorLookup(monetizer.ids.monetization_visitor(header.strip()))
            except InvalidVisitorIdError as exc:
                return VisitorLookup(None, error=str(exc))
        presented = cookie_value(facts.header("cookie"), monetizer.cookie_name)
        error: str | None = None
        if presented is not None:
            try:
                return VisitorLookup(monetizer.ids.visitor(monetizer.ids.verify(presented)))
            except InvalidVisitorIdError as exc:
                error = str(exc)
        visitor, value = monetizer.new_visitor()
        cookie = monetizer.cookie_header(value, secure=secure, max_age=self.cookie_max_age)
        return VisitorLookup(visitor, cookie, error)

    # -- the guard ---------------------------------------------------------------------

    async def guard(
        self,
        lookup: VisitorLookup,
        price: int | Awaitable[int],
        *,
        wait: float | None = None,
    ) -> MonetizedDecision:
        """Debit ``price`` from the visitor's bucket, or say why not.

        Enough balance: served and debited.  Otherwise ``402``, or, with ``wait``,
        wait up to that many seconds for the money (event-driven) first.  A tampered
        id: ``400``.
        """
        amount = await price_value(price)
        if lookup.error is not None:
            return MonetizedDecision(invalid_visitor_reply(lookup.error))
        visitor = lookup.visitor
        if amount == 0:
            return MonetizedDecision(None, visitor)
        monetizer = self.monetizer
        if visitor is None or lookup.set_cookie is not None:
            # a first visit: the visitor minted for this very request cannot have paid
            # yet -- MonetizationRequired (the answer carries the new cookie)
            return MonetizedDecision(insufficient_balance_reply(None, amount, 0), visitor)
        if wait:
            try:
                left = await monetizer.await_and_spend(visitor, amount, wait)
            except TimeoutError:
                current = await monetizer.balance(visitor)
                reply = insufficient_balance_reply(visitor, amount, current)
                return MonetizedDecision(reply, visitor, balance=current)
            return MonetizedDecision(None, visitor, amount, left)
        balance = await monetizer.try_spend(visitor, amount)
        if balance is None:
            current = await monetizer.balance(visitor)
            reply = insufficient_balance_reply(visitor, amount, current)
            return MonetizedDecision(reply, visitor, balance=current)
        return MonetizedDecision(None, visitor, amount, balance)

    async def check(
        self, facts: RequestFacts, lookup: VisitorLookup, price: Price, *, wait: float | None = None
    ) -> MonetizedDecision:
        """:meth:`guard` with a :data:`~ilp_receiver.paywall.Price` (int or function)."""
        return await self.guard(lookup, resolve_price(price, facts), wait=wait)

    async def refund(self, decision: MonetizedDecision) -> None:
        """Give back what ``decision`` charged (the route failed)."""
        if decision.charged and decision.visitor is not None:
            await self.monetizer.credit(decision.visitor, decision.charged)

    async def metered(
        self,
        chunks: AsyncIterable[bytes],
        visitor: Visitor,
        per_byte: int,
        *,
        wait: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Charge ``per_byte`` for each chunk before it is sent; stop when funds run out.

        With ``wait``, waits up to that many seconds for money before each chunk.
        """
        iterator = aiter(chunks)
        try:
            async for chunk in iterator:
                cost = len(chunk) * per_byte
                if cost:
                    if wait:
                        try:
                            await self.monetizer.await_and_spend(visitor, cost, wait)
                        except TimeoutError:
                            return
                    elif await self.monetizer.try_spend(visitor, cost) is None:
                        return
                yield chunk
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


def metered_sync(chunks: Iterable[bytes], spend: Callable[[int], bool]) -> Iterator[bytes]:
    """Sync :meth:`MonetizationService.metered`: ``spend(cost)`` says whether it was paid."""
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            cost = len(chunk)
            if cost and not spend(cost):
                return
            yield chunk
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------------------------
# ASGI


class MonetizationAsgiMiddleware:
    """Pure ASGI middleware: the monetization endpoints, the visitor cookie, the lookup.

    Put it *inside* the ilp-receiver middleware (it takes the receiver from the
    :class:`~ilp_receiver.web.asgi.IlpService` in the scope) or give ``receiver``.  The
    request's :class:`VisitorLookup` is ``scope["ilp_receiver.visitor"]``.
    """

    def __init__(
        self,
        app: AsgiApp,
        service: MonetizationService,
        *,
        receiver: AsyncReceiver | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.receiver = receiver

    def _bind(self, scope: Scope) -> None:
        self.service.bind(_receiver_of(scope, self.receiver))

    def _closing_on_shutdown(self, receive: Receive) -> Receive:
        """``receive`` that stops the verifier's polling when the server shuts down."""
        verifier = self.service.verifier

        async def receive_and_close() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.shutdown" and verifier is not None:
                await verifier.close()
            return message

        return receive_and_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan" and self.service.verifier is not None:
            await self.app(scope, self._closing_on_shutdown(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._bind(scope)
        service = self.service
        scope[MONETIZATION_SCOPE_KEY] = service
        facts = facts_from_scope(scope)
        limit = service.report_limit(facts)
        if limit is not None:
            body = await read_body(receive, limit)
            await send_reply(send, await service.handle_report(facts, body))
            return
        if service.handles(facts.path):
            reply = await service.handle(facts)
            if reply is not None:
                await send_reply(send, reply, head=facts.method == "HEAD")
                return
        lookup = service.lookup(facts, secure=scope.get("scheme") in ("https", "wss"))
        scope[LOOKUP_SCOPE_KEY] = lookup
        cookie = lookup.set_cookie
        if cookie is None:
            await self.app(scope, receive, send)
            return
        raw_cookie = (b"set-cookie", cookie.encode("latin-1"))

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), raw_cookie]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class OrdersAsgiMiddleware:
    """Pure ASGI middleware serving :class:`OrderEndpoints` (order payment pointers).

    Put it inside the ilp-receiver middleware or give ``receiver``.
    """

    def __init__(
        self, app: AsgiApp, endpoints: OrderEndpoints, *, receiver: AsyncReceiver | None = None
    ) -> None:
        self.app = app
        self.endpoints = endpoints
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # bind on every request: the app may use the order book before any SPSP query
        self.endpoints.bind(_receiver_of(scope, self.receiver))
        if self.endpoints.handles(scope["path"]):
            facts = facts_from_scope(scope)
            reply = await self.endpoints.handle(facts)
            if reply is not None:
                await send_reply(send, reply, head=facts.method == "HEAD")
                return
        await self.app(scope, receive, send)


async def read_body(receive: Receive, limit: int) -> bytes:
    """An ASGI request body, read up to ``limit + 1`` bytes (the caller refuses more)."""
    body = bytearray()
    while len(body) <= limit:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body[: limit + 1])


def _receiver_of(scope: Scope, receiver: AsyncReceiver | None) -> AsyncReceiver:
    if receiver is not None:
        return receiver
    ilp = scope.get(SCOPE_KEY)
    if not isinstance(ilp, IlpService):
        raise RuntimeError(
            "no receiver for this middleware: put it inside the ilp-receiver middleware "
            "or give receiver="
        )
    return ilp.receiver


def service_and_lookup(scope: Scope) -> tuple[MonetizationService, VisitorLookup]:
    """The service and visitor lookup :class:`MonetizationAsgiMiddleware` put in ``scope``."""
    service = scope.get(MONETIZATION_SCOPE_KEY)
    lookup = scope.get(LOOKUP_SCOPE_KEY)
    if not isinstance(service, MonetizationService) or not isinstance(lookup, VisitorLookup):
        raise RuntimeError(
            "no monetization middleware in front of this endpoint: add "
            "MonetizationAsgiMiddleware (or the adapter's monetization middleware)"
        )
    return service, lookup


# ---------------------------------------------------------------------------------------
# WSGI


class SyncMonetizationService:
    """:class:`MonetizationService` for sync apps, on a :class:`SyncIlpService`'s portal.

    Binds to the receiver of the current process on first use (after any fork).
    """

    def __init__(self, ilp: SyncIlpService, service: MonetizationService) -> None:
        self.ilp = ilp
        self.service = service

    @property
    def monetizer(self) -> Monetizer:
        """The monetizer."""
        return self.service.monetizer

    @property
    def orders(self) -> OrderBook | None:
        """The order book, if any."""
        return self.service.orders

    def _portal(self) -> BlockingPortal:
        ilp_service = self.ilp.service
        self.service.bind(ilp_service.receiver)
        return self.ilp.portal

    def handle(self, facts: RequestFacts) -> HttpReply | None:
        """See :meth:`MonetizationService.handle` (no portal hop for other paths)."""
        if facts.method not in ("GET", "HEAD", "OPTIONS") or not self.service.handles(facts.path):
            return None
        return self._portal().call(self.service.handle, facts)

    def report_limit(self, facts: RequestFacts) -> int | None:
        """See :meth:`MonetizationService.report_limit` (no I/O)."""
        return self.service.report_limit(facts)

    def handle_report(self, facts: RequestFacts, body: bytes) -> HttpReply:
        """See :meth:`MonetizationService.handle_report`."""
        return self._portal().call(self.service.handle_report, facts, body)

    def lookup(self, facts: RequestFacts, *, secure: bool = False) -> VisitorLookup:
        """See :meth:`MonetizationService.lookup` (no I/O)."""
        return self.service.lookup(facts, secure=secure)

    def check(
        self, facts: RequestFacts, lookup: VisitorLookup, price: Price, *, wait: float | None = None
    ) -> MonetizedDecision:
        """The guard; a sync price function runs in the caller's thread."""
        portal = self._portal()
        return portal.call(self.service.guard, lookup, resolve_price(price, facts), wait=wait)

    def refund(self, decision: MonetizedDecision) -> None:
        """Give back what ``decision`` charged."""
        if decision.charged:
            self._portal().call(self.service.refund, decision)

    def metered(
        self, chunks: Iterable[bytes], visitor: Visitor, per_byte: int, *, wait: float | None = None
    ) -> Iterator[bytes]:
        """Charge ``per_byte`` per byte of each chunk before it is sent (see ``metered``)."""
        monetizer = self.service.monetizer
        portal = self._portal()

        def spend(size: int) -> bool:
            cost = size * per_byte
            if wait:
                try:
                    portal.call(monetizer.await_and_spend, visitor, cost, wait)
                except TimeoutError:
                    return False
                return True
            return portal.call(monetizer.try_spend, visitor, cost) is not None

        return metered_sync(chunks, spend)

    # conveniences for views

    def balance(self, visitor: Visitor | str) -> int:
        """The bucket's balance."""
        return self._portal().call(self.service.monetizer.balance, visitor)

    def spend(self, visitor: Visitor | str, amount: int) -> int:
        """See :meth:`~ilp_receiver.monetization.Monetizer.spend`."""
        return self._portal().call(self.service.monetizer.spend, visitor, amount)

    def await_balance(self, visitor: Visitor | str, amount: int, timeout: float | None) -> int:
        """See :meth:`~ilp_receiver.monetization.Monetizer.await_balance`."""
        return self._portal().call(self.service.monetizer.await_balance, visitor, amount, timeout)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run any coroutine function (an :class:`OrderBook` method, ...) on the portal."""
        return self._portal().call(fn, *args, **kwargs)


class SyncOrderEndpoints:
    """:class:`OrderEndpoints` for sync apps, on a :class:`SyncIlpService`'s portal."""

    def __init__(self, ilp: SyncIlpService, endpoints: OrderEndpoints) -> None:
        self.ilp = ilp
        self.endpoints = endpoints

    @property
    def orders(self) -> OrderBook:
        """The order book."""
        return self.endpoints.orders

    def _portal(self) -> BlockingPortal:
        self.endpoints.bind(self.ilp.service.receiver)
        return self.ilp.portal

    def handle(self, facts: RequestFacts) -> HttpReply | None:
        """See :meth:`OrderEndpoints.handle` (no portal hop for other paths)."""
        if facts.method not in ("GET", "HEAD") or not self.endpoints.handles(facts.path):
            return None
        return self._portal().call(self.endpoints.handle, facts)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run an :class:`OrderBook` coroutine method on the portal."""
        return self._portal().call(fn, *args, **kwargs)
