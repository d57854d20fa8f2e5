"""Web Payments: the Payment Request API's ``interledger`` method, server side.

Implements what a shop's receiver must do for the w3c/webpayments Interledger payment
method proposal of Feb-Mar 2018 (spec ``10-web-payments.md``, open question 4):

* **Per-order payment pointers** -- "expose an SPSP endpoint (ideally a per-order
  pointer such as ``$shop.example/orders/<id>``), possibly with ``balance.maximum`` =
  order total, credit PSK2 payments to that order, and let the shop backend check
  'paid?' by order id".  Each order's money lands in the account ``order:<id>``, bound
  in the authenticated key of every PSK2 address issued for it.  The pointer answers
  SPSP v4 too (a STREAM destination whose authenticated connection tag is the order
  account): a STREAM payment completes an order exactly as a PSK2 one -- every
  credited packet counts once (the store's idempotency key is its condition), with the
  same :class:`OrderStatus` and events.
* **Method data** for ``new PaymentRequest(...)``: ``{supportedMethods: 'interledger',
  data: {payee}}`` (:func:`payment_method_data`, :func:`payment_request_json`).
* **Checking an ``InterledgerResponse``** (``payeeAddress``, ``fulfillment``, ``error``)
  against our own records: "with PSK2 the payer knows the fulfillment anyway, so the
  site should confirm receipt with its own backend (SPSP receiver) rather than trust
  the returned fulfillment" (:meth:`OrderBook.verify`).
* **Over-payment** is kept: money above the total stays credited to the order and is
  reported as ``overpaid`` (a field of :class:`OrderStatus` and an ``"overpaid"``
  :class:`OrderEvent`).

Order totals are in the receiver's base units (its asset and scale, from IL-DCP); "the
proposal leaves currency conversion and amount negotiation unspecified".  Totals are
kept in the balance store (key ``order-total:<id>``) so every process sharing the store
knows them; give ``total_of`` to read them from the shop's own database instead.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from .codec.oer import MAX_UINT64
from .errors import ConfigError, DecodeError, IlpReceiverError
from .events import Callbacks, ReceiverAttachment
from .psk2.secrets import decode_base64_lenient
from .receiver import PaymentEvent
from .spsp import SetupProtocol, SpspBalance, SpspResponse
from .stores.outbox import OutboxEntry
from .stream.secrets import UnknownTokenError
from .stream.server import tag_to_account

if TYPE_CHECKING:
    from .receiver import AsyncReceiver

__all__ = [
    "INTERLEDGER_METHOD",
    "ORDER_ACCOUNT_PREFIX",
    "ORDER_TOTAL_PREFIX",
    "InterledgerError",
    "InterledgerResponse",
    "InvalidOrderIdError",
    "OrderBook",
    "OrderCallback",
    "OrderEvent",
    "OrderStatus",
    "PaymentCheck",
    "TotalLookup",
    "fulfillment_base64",
    "is_order_id",
    "order_account",
    "parse_interledger_response",
    "payment_method_data",
    "payment_request_json",
]

log = logging.getLogger(__name__)

#: "Standardized payment method identifier: the string ``interledger``."
INTERLEDGER_METHOD: Final = "interledger"
#: Balance account of each order: ``order:<id>``.
ORDER_ACCOUNT_PREFIX: Final = "order:"
#: Where an order's total is kept in the balance store: ``order-total:<id>``.
ORDER_TOTAL_PREFIX: Final = "order-total:"
#: Order ids: what fits a URL path segment and an ILP address key.
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FULFILLMENT_LENGTH: Final = 32
_TOKEN_LENGTH: Final = 18


class InvalidOrderIdError(IlpReceiverError, ValueError):
    """An order id that is not 1-64 characters of ``A-Z a-z 0-9 _ -``."""


def is_order_id(value: str) -> bool:
    """Whether ``value`` can be an order id (1-64 of ``A-Z a-z 0-9 _ -``)."""
    return _ORDER_ID.fullmatch(value) is not None


def order_account(order_id: str) -> str:
    """The balance account of ``order_id``: ``order:<id>``."""
    if not is_order_id(order_id):
        raise InvalidOrderIdError("an order id is 1-64 characters of A-Z a-z 0-9 _ -")
    return ORDER_ACCOUNT_PREFIX + order_id


# ---------------------------------------------------------------------------------------
# PaymentRequest method data


def payment_method_data(payee: str) -> dict[str, Any]:
    """One ``PaymentMethodData`` entry: ``{supportedMethods: 'interledger', data: {payee}}``.

    ``payee`` -- "a payment pointer; may be single-use (e.g.
    ``$payments.example/38215454-da56-...``) or reusable".
    """
    if not isinstance(payee, str) or not payee:
        raise ConfigError("payee", "give a payment pointer")
    return {"supportedMethods": INTERLEDGER_METHOD, "data": {"payee": payee}}


def _script_safe(text: str) -> str:
    # JSON that can sit inside <script> ... </script> and in HTML attributes
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("'", "\\u0027")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def payment_request_json(payee: str, *, value: str, currency: str, label: str = "Total") -> str:
    """``{"methodData": [...], "details": {"total": ...}}`` as JSON safe inside ``<script>``.

    The page does ``const r = JSON.parse(...)`` or embeds it directly, then
    ``new PaymentRequest(r.methodData, r.details).show()``.  ``value`` is the display
    amount as a decimal string (``"10.00"``), ``currency`` an ISO 4217 code.
    """
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        raise ConfigError("value", "a decimal amount such as '10.00'")
    payload = {
        "methodData": [payment_method_data(payee)],
        "details": {"total": {"label": label, "amount": {"currency": currency, "value": value}}},
    }
    return _script_safe(json.dumps(payload, separators=(",", ":")))


# ---------------------------------------------------------------------------------------
# InterledgerResponse


@dataclass(frozen=True, slots=True)
class InterledgerError:
    """``InterledgerError``: ``errorCode`` (ILP code such as ``F02``) and ``triggeredBy``."""

    error_code: str
    triggered_by: str


@dataclass(frozen=True, slots=True)
class InterledgerResponse:
    """The ``interledger`` method's response details (what the payment handler returns).

    ``payee_address``: "the ILP address that was paid (SPSP ``destination_account``)";
    ``fulfillment``: the 32 bytes, "present on success"; ``error`` on failure.
    """

    payee_address: str
    fulfillment: bytes | None = field(default=None, repr=False)
    error: InterledgerError | None = None


def parse_interledger_response(details: Mapping[str, Any] | str | bytes) -> InterledgerResponse:
    """Read ``PaymentResponse.details`` (a mapping or its JSON text).

    ``fulfillment`` is "base64 (RFC 4648, standard alphabet) of the 32-byte
    fulfillment"; both alphabets and optional padding are accepted.  Raises
    :class:`~ilp_receiver.errors.DecodeError` when a member has the wrong shape.
    """
    if isinstance(details, str | bytes):
        try:
            details = json.loads(details)
        except (ValueError, UnicodeError):
            raise DecodeError("the InterledgerResponse is not JSON") from None
    if not isinstance(details, Mapping):
        raise DecodeError("the InterledgerResponse must be an object")
    address = details.get("payeeAddress")
    if not isinstance(address, str) or not address:
        raise DecodeError("payeeAddress must be a non-empty string")
    raw = details.get("fulfillment")
    fulfillment: bytes | None = None
    if raw is not None:
        if not isinstance(raw, str):
            raise DecodeError("fulfillment must be a base64 string or null")
        try:
            fulfillment = decode_base64_lenient(raw)
        except (DecodeError, ValueError, binascii.Error):
            raise DecodeError("fulfillment is not base64") from None
        if len(fulfillment) != _FULFILLMENT_LENGTH:
            raise DecodeError(f"fulfillment must be {_FULFILLMENT_LENGTH} bytes")
    error_obj = details.get("error")
    error: InterledgerError | None = None
    if error_obj is not None:
        if not isinstance(error_obj, Mapping):
            raise DecodeError("error must be an object or null")
        code, by = error_obj.get("errorCode"), error_obj.get("triggeredBy", "")
        if not isinstance(code, str) or not isinstance(by, str):
            raise DecodeError("error.errorCode and error.triggeredBy must be strings")
        error = InterledgerError(code, by)
    return InterledgerResponse(address, fulfillment, error)


# ---------------------------------------------------------------------------------------
# Orders


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """Where an order stands, from the balance store.

    ``received`` is everything credited to the order; ``paid`` is ``received >= total``;
    ``overpaid`` is what arrived beyond the total (kept on the order account);
    ``remaining`` what is still due.
    """

    order_id: str
    total: int
    received: int

    @property
    def paid(self) -> bool:
        """The order's balance reached its total."""
        return self.received >= self.total

    @property
    def overpaid(self) -> int:
        """Money received beyond the total (0 when none)."""
        return max(0, self.received - self.total)

    @property
    def remaining(self) -> int:
        """What is still due (0 once paid)."""
        return max(0, self.total - self.received)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (amounts as decimal strings)."""
        return {
            "order_id": self.order_id,
            "total": str(self.total),
            "received": str(self.received),
            "remaining": str(self.remaining),
            "overpaid": str(self.overpaid),
            "paid": self.paid,
        }


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """Money arriving for an order.

    ``kind``: ``"payment"`` for every credit; ``"paid"`` once, when the balance reaches
    the total; ``"overpaid"`` for a credit that took the balance beyond the total
    (``overpaid_by`` is the part of *this* payment above it).
    """

    kind: Literal["payment", "paid", "overpaid"]
    status: OrderStatus
    amount: int
    overpaid_by: int = 0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


OrderCallback = Callable[[OrderEvent], "Awaitable[None] | None"]
#: Reads an order's total from the shop's database (None: no such order).
TotalLookup = Callable[[str], "int | Awaitable[int | None] | None"]


@dataclass(frozen=True, slots=True)
class PaymentCheck:
    """What :meth:`OrderBook.verify` concluded.

    ``confirmed`` only when the response is well formed, reports no error, names an
    address we issued for this order, *and* our records show the order paid.
    ``problems`` says what did not hold; ``status`` is our record (None: unknown order).
    """

    confirmed: bool
    status: OrderStatus | None
    response: InterledgerResponse | None
    problems: tuple[str, ...] = ()


class OrderBook:
    """Per-order payment pointers for one receiver: totals, SPSP answers, "paid?".

    ``receiver`` may be attached later (:meth:`attach`).  ``total_of``: a function
    (sync or async) giving an order's total from the shop's own records; without it
    totals are those given to :meth:`create_order` (kept in the balance store).
    """

    def __init__(
        self,
        receiver: AsyncReceiver | None = None,
        *,
        total_of: TotalLookup | None = None,
        receiver_name: str | None = None,
    ) -> None:
        self._attachment = ReceiverAttachment("the order book", self._on_payment_event)
        self._callbacks = Callbacks[OrderEvent](log, "order event callback failed")
        self.total_of = total_of
        self.receiver_name = receiver_name
        self._totals: dict[str, int] = {}
        if receiver is not None:
            self.attach(receiver)

    def attach(self, receiver: AsyncReceiver) -> None:
        """Use ``receiver`` and listen to its payment events; with webhooks on, its
        credits to an order also write ``order.paid`` / ``order.overpaid``."""
        self._attachment.attach(receiver)
        receiver.add_webhook_source(self._webhook_events)

    async def _webhook_events(self, account: str, amount: int, data: str) -> list[OutboxEntry]:
        """``order.paid`` (when this credit reaches the total) and ``order.overpaid``
        (the part above it), decided by the store in the credit's transaction."""
        if not account.startswith(ORDER_ACCOUNT_PREFIX):
            return []
        order_id = account[len(ORDER_ACCOUNT_PREFIX) :]
        total = self._totals.get(order_id)
        if total is None:
            total = await self.total(order_id)
            if total is None:
                return []
            if self.total_of is None:  # stored totals never change: remember them
                if len(self._totals) >= 10_000:
                    self._totals.clear()
                self._totals[order_id] = total
        fields = json.loads(data)
        fields.update(order_id=order_id, total=str(total))
        text = json.dumps(fields, separators=(",", ":"), sort_keys=True)
        return [
            OutboxEntry("order.paid", account, amount, text, when="reaches", threshold=total),
            OutboxEntry("order.overpaid", account, amount, text, when="exceeds", threshold=total),
        ]

    @property
    def receiver(self) -> AsyncReceiver:
        """The attached receiver."""
        return self._attachment.receiver

    # -- events ------------------------------------------------------------------------

    def on_event(self, callback: OrderCallback) -> OrderCallback:
        """Call ``callback`` (sync or async) for every :class:`OrderEvent`; a decorator."""
        return self._callbacks.add(callback)

    def on_paid(self, callback: OrderCallback) -> OrderCallback:
        """Call ``callback`` once per order, when it becomes paid."""
        return self._callbacks.add_for(("paid",), callback)

    def on_overpaid(self, callback: OrderCallback) -> OrderCallback:
        """Call ``callback`` for each payment that took an order beyond its total."""
        return self._callbacks.add_for(("overpaid",), callback)

    async def _on_payment_event(self, event: PaymentEvent) -> None:
        if event.kind != "received" or not event.account.startswith(ORDER_ACCOUNT_PREFIX):
            return
        order_id = event.account[len(ORDER_ACCOUNT_PREFIX) :]
        total = await self.total(order_id)
        if total is None:
            log.warning("payment to an order with no total; kept on its account")
            return
        status = OrderStatus(order_id, total, event.balance)
        before = event.balance - event.amount
        events = [OrderEvent("payment", status, event.amount, at=event.at)]
        if before < total <= event.balance:
            events.append(OrderEvent("paid", status, event.amount, at=event.at))
        if event.balance > total:
            extra = min(event.amount, event.balance - total)
            events.append(OrderEvent("overpaid", status, event.amount, extra, event.at))
        for order_event in events:
            await self._callbacks.emit(order_event)

    # -- orders ------------------------------------------------------------------------

    async def create_order(self, order_id: str, total: int) -> OrderStatus:
        """Record ``total`` (base units, 1..2^64-1) for ``order_id``; returns its status.

        Creating the same order again with the same total is harmless; a different
        total raises :class:`~ilp_receiver.errors.ConfigError`.
        """
        account = order_account(order_id)
        if type(total) is not int or not 0 < total <= MAX_UINT64:
            raise ConfigError("total", f"an order total is an int in 1..{MAX_UINT64}")
        store = self.receiver.store
        key = ORDER_TOTAL_PREFIX + order_id
        existing = await store.balance(key)
        if existing == 0:
            result = await store.add(key, total, idempotency_key=key)
            existing = result.balance
        if existing != total:
            raise ConfigError("total", f"order {order_id} exists with another total")
        return OrderStatus(order_id, total, await store.balance(account))

    async def total(self, order_id: str) -> int | None:
        """The total of ``order_id``, or None for an unknown order."""
        if not is_order_id(order_id):
            return None
        if self.total_of is not None:
            value = self.total_of(order_id)
            if inspect.isawaitable(value):
                value = await value
            return value if value else None
        stored = await self.receiver.store.balance(ORDER_TOTAL_PREFIX + order_id)
        return stored or None

    async def status(self, order_id: str) -> OrderStatus | None:
        """The order's :class:`OrderStatus`, or None for an unknown order."""
        total = await self.total(order_id)
        if total is None:
            return None
        received = await self.receiver.store.balance(order_account(order_id))
        return OrderStatus(order_id, total, received)

    async def is_paid(self, order_id: str) -> bool:
        """Whether our records show ``order_id`` paid in full (False when unknown)."""
        status = await self.status(order_id)
        return status is not None and status.paid

    async def spsp_response(
        self,
        order_id: str,
        *,
        protocol: SetupProtocol = "psk2",
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> SpspResponse | None:
        """The SPSP answer of the order's pointer (None: unknown order).

        ``balance.maximum`` is the order total and ``balance.current`` what arrived.
        PSK2: the w3c README's top-level ``maximum_destination_amount`` /
        ``minimum_destination_amount`` (what is still due) are added for clients that
        expect the older shape.  ``protocol="stream"``: an SPSP v4 answer (a STREAM
        destination bound to the order; receipts with ``receipt_nonce`` and
        ``receipt_secret``).  Neither limits what may arrive: over-payment is kept and
        reported.
        """
        status = await self.status(order_id)
        if status is None:
            return None
        receiver = self.receiver
        info = {"name": self.receiver_name} if self.receiver_name else None
        response = await receiver.spsp_response(
            order_account(order_id),
            maximum=status.total,
            receiver_info=info,
            protocol=protocol,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )
        balance = SpspBalance(maximum=status.total, current=min(status.received, MAX_UINT64))
        if protocol == "stream":
            return replace(response, balance=balance)
        due = str(status.remaining)
        return replace(
            response,
            balance=balance,
            extra={"maximum_destination_amount": due, "minimum_destination_amount": due},
        )

    # -- checking what the browser says ------------------------------------------------

    def issued_for(self, address: str, order_id: str) -> bool:
        """Whether ``address`` is one of our destinations bound to ``order_id``.

        PSK2 (``<address>.<receiverId>.<token>``): reads the key carried in the last
        address segment (``token || key``).  STREAM (``<address>.<token>``): opens the
        token and reads its authenticated connection tag.  This is a consistency check
        on what the browser reports, not proof of payment.
        """
        receiver = self.receiver
        ours = receiver.address + "."
        if not address.startswith(ours):
            return False
        rest = address[len(ours) :]
        if "." not in rest:
            # one segment after our address: a STREAM destination
            if not receiver.stream_enabled:
                return False
            try:
                tag = receiver.stream_server.secrets.open_token(rest).connection_tag
            except UnknownTokenError:
                return False
            return tag is not None and tag_to_account(tag) == order_account(order_id)
        last = address.rsplit(".", 1)[-1]
        try:
            raw = decode_base64_lenient(last)
        except (DecodeError, ValueError, binascii.Error):
            return False
        return raw[_TOKEN_LENGTH:] == order_account(order_id).encode("utf-8")

    async def verify(self, order_id: str, details: Mapping[str, Any] | str | bytes) -> PaymentCheck:
        """Check a ``PaymentResponse.details`` against our own records.

        Never trusts the fulfillment alone ("with PSK2 the payer knows the fulfillment
        anyway", and so does a STREAM payer, who derives it from the shared secret):
        confirmed only when our store shows the order paid in full.
        """
        status = await self.status(order_id)
        problems: list[str] = []
        if status is None:
            problems.append("unknown order")
        try:
            response: InterledgerResponse | None = parse_interledger_response(details)
        except DecodeError as exc:
            response = None
            problems.append(f"malformed InterledgerResponse: {exc.reason}")
        if response is not None:
            if response.error is not None:
                problems.append(
                    f"the payment handler reported {response.error.error_code} "
                    f"from {response.error.triggered_by or 'an unknown node'}"
                )
            if response.fulfillment is None:
                problems.append("no fulfillment in the response")
            if status is not None and not self.issued_for(response.payee_address, order_id):
                problems.append("payeeAddress is not an address issued for this order")
        if status is not None and not status.paid:
            problems.append(f"our records show {status.received} of {status.total} received")
        return PaymentCheck(not problems, status, response, tuple(problems))


def fulfillment_base64(fulfillment: bytes) -> str:
    """The ``fulfillment`` member of an ``InterledgerResponse`` (standard base64)."""
    if len(fulfillment) != _FULFILLMENT_LENGTH:
        raise ValueError(f"a fulfillment is {_FULFILLMENT_LENGTH} bytes")
    return base64.b64encode(fulfillment).decode("ascii")
