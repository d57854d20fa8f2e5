"""The sans-I/O PSK2 receiver (spec ``06-psk2.md`` §7 draft 1, §8 draft 2).

Draft 1 (ilp-protocol-psk2 0.2.1 as it actually behaves) is the primary format;
draft-2 requests (0.3.x-0.5.0) are answered in their own format, as 0.5.0 did.  The
open questions of ``11-open-questions.md`` are settled as follows:

* item 10: ``paymentAmount`` 0 in a request means "no total" (the payment is not
  finished by reaching it; only a last-chunk type 1 finishes it);
* item 11: an unfulfillable draft-1 quote is answered F99 + encrypted type 3;
* item 12: draft-1 responses carry the running total (0.5.0 sent 0);
* item 13: an expired Prepare is rejected R00 with no fulfillment;
* item 14: decoding of the token segment stays lenient, but the destination must start
  with the receiver's own address.

How it is driven (the split is what lets the I/O layer count money exactly once)::

    decision = receiver.handle_prepare(prepare, now, iv=random_bytes(12))
    if isinstance(decision, IlpReject):          # final
        send(decision)
    elif isinstance(decision, Acceptance):        # a payment the caller may take
        ...ask the application, credit the durable store...
        send(receiver.fulfill(decision, iv=random_bytes(12)))
        # or: send(receiver.refuse(decision, iv=..., message="sold out"))
    else:                                         # UnfulfillableRequest (draft 2 only)
        send(receiver.refuse(decision, iv=..., data=app_reply))

§7 step 8 (the application may accept the whole payment, reject the whole payment,
accept just this chunk or reject just this chunk) maps to ``fulfill(...,
accept_payment=True)``, ``refuse(..., reject_payment=True)``, ``fulfill(...)`` and
``refuse(...)``.  A payment accepted as a whole still yields an :class:`Acceptance` for
each later chunk (so the caller credits it), with ``payment_accepted=True`` telling it
not to ask the application again; a payment rejected as a whole makes later chunks
Reject F99 with the same message, as 0.2.1 did.

Per-payment records (received, expected, finished) are kept in a bounded LRU and
change only when a chunk is fulfilled (or a whole payment is rejected).  They are
keyed by the destination's token *and* the payment id, so one sender cannot touch
another sender's payment by guessing its id (0.2.1 keyed by payment id alone).  An
evicted record restarts at zero: size the bound above the number of concurrently
active chunked payments.

This module draws no randomness and reads no clock: ``now`` and every IV are
parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final

from ..codec.ilp import ErrorCode, IlpFulfill, IlpPrepare, IlpReject, fulfill_packet
from ..codec.oer import MAX_UINT64
from ..codec.psk2 import (
    Draft1Packet,
    Draft1Type,
    Draft2Packet,
    Draft2Type,
    Psk2Keys,
    decode_plaintext,
    encode_draft2,
    encrypt,
    pack_draft1,
    seal,
)
from ..crypto import (
    constant_time_equal,
    open_envelope,
    require_aes256gcm,
    seal_envelope,
    sha256,
)
from ..errors import ConfigError, DecodeError, LocalProtocolError
from .secrets import NOT_FOR_THIS_RECEIVER, ReceiverSecrets, WrongReceiverError

__all__ = [
    "CONDITION_MISMATCH_DRAFT1",
    "CONDITION_MISMATCH_DRAFT2",
    "DEFAULT_MAX_PAYMENT_RECORDS",
    "EXPIRED_MESSAGE",
    "NOT_ACCEPTED_MESSAGE",
    "UNABLE_TO_PARSE",
    "UNEXPECTED_PACKET_TYPE",
    "UNEXPECTED_REQUEST_TYPE",
    "Acceptance",
    "Decision",
    "PaymentRecord",
    "Psk2Format",
    "Psk2Receiver",
    "UnfulfillableRequest",
]

DEFAULT_MAX_PAYMENT_RECORDS: Final = 10_000

#: §7 step 2: 'Failure -> F06 "Unable to parse data", empty data'.
UNABLE_TO_PARSE: Final = "Unable to parse data"
#: §7 step 3: 'type not 0/1 -> F06 "Unexpected request type"'.
UNEXPECTED_REQUEST_TYPE: Final = "Unexpected request type"
#: 0.5.0, a draft-2 packet that is not a request (type 5/6 in a Prepare).
UNEXPECTED_PACKET_TYPE: Final = "Unexpected packet type"
#: §7 step 7: 'mismatch -> Reject F05 "condition generated does not match prepare"'.
CONDITION_MISMATCH_DRAFT1: Final = "condition generated does not match prepare"
#: 0.5.0 (draft 2) spells it with a capital C and attaches a type-6 error.
CONDITION_MISMATCH_DRAFT2: Final = "Condition generated does not match prepare"
#: §7 step 8: 'If the handler neither accepts nor rejects, the payment is rejected with
#: "receiver did not accept the payment"'.  For callers to pass to :meth:`refuse`.
NOT_ACCEPTED_MESSAGE: Final = "receiver did not accept the payment"
#: Item 13: expired Prepares are refused with R00 and this message.
EXPIRED_MESSAGE: Final = "Prepare has expired"

_F05: Final = ErrorCode.F05_WRONG_CONDITION.value
_F06: Final = ErrorCode.F06_UNEXPECTED_PAYMENT.value
_F99: Final = ErrorCode.F99_APPLICATION_ERROR.value
_R00: Final = ErrorCode.R00_TRANSFER_TIMED_OUT.value
_CHUNK: Final = int(Draft1Type.CHUNK)
_LAST_CHUNK: Final = int(Draft1Type.LAST_CHUNK)
_FULFILLMENT: Final = int(Draft1Type.FULFILLMENT)
_ERROR: Final = int(Draft1Type.ERROR)
_REQUEST: Final = int(Draft2Type.REQUEST)
_RESPONSE: Final = int(Draft2Type.RESPONSE)
_D2_ERROR: Final = int(Draft2Type.ERROR)


class Psk2Format(Enum):
    """Which PSK2 draft a packet used; the answer is given in the same one."""

    DRAFT1 = "draft1"
    DRAFT2 = "draft2"


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A snapshot of what this receiver knows about one draft-1 payment id.

    ``accepted`` is None until the application accepts (True) or rejects (False) the
    payment as a whole.
    """

    received: int
    expected: int
    finished: bool
    accepted: bool | None
    chunks_fulfilled: int
    rejection_message: str = ""


class _Record:
    __slots__ = ("accepted", "chunks_fulfilled", "expected", "finished", "reason", "received")

    def __init__(self) -> None:
        self.received = 0
        self.expected = 0
        self.finished = False
        self.accepted: bool | None = None
        self.reason = ""
        self.chunks_fulfilled = 0


_RecordKey = tuple[bytes, bytes]


@dataclass(slots=True, eq=False)
class Acceptance:
    """A Prepare this receiver *can* fulfil; the caller decides (and credits) first.

    Settle it exactly once with :meth:`Psk2Receiver.fulfill` or
    :meth:`Psk2Receiver.refuse`.  Treat it as read-only (it is not frozen only because
    frozen dataclasses cost microseconds to build, on the hot path of every packet).

    Common fields: ``format``, ``amount`` (what arrived in the Prepare), ``token``,
    ``key`` (authenticated application bytes from the address), ``app_segments``
    (unauthenticated segments between address and receiver id), ``data`` (the
    request's application data), ``min_amount`` (draft 1 chunkAmount / draft 2
    amount: the minimum the sender asked to arrive).

    Draft 1: ``payment_id``, ``sequence``, ``payment_amount`` (the total the sender
    wants to deliver; 2**64-1 or 0 mean "no total"), ``last_chunk``,
    ``received_before`` (accepted so far for this payment), ``first_chunk``,
    ``payment_accepted`` (the application already accepted the whole payment: 0.2.1
    would not ask it again).  Draft 2: ``request_id``.
    """

    format: Psk2Format
    amount: int
    token: bytes
    key: bytes
    app_segments: tuple[str, ...]
    data: bytes
    min_amount: int
    payment_id: bytes = b""
    sequence: int = 0
    payment_amount: int = 0
    last_chunk: bool = False
    received_before: int = 0
    first_chunk: bool = True
    payment_accepted: bool = False
    request_id: int | None = None
    prepare: IlpPrepare | None = field(default=None, repr=False)
    fulfillment: bytes = field(default=b"", repr=False)
    _keys: Psk2Keys | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)


@dataclass(slots=True, eq=False)
class UnfulfillableRequest:
    """A draft-2 request that cannot be fulfilled (§8), e.g. a quote.

    0.5.0 still ran its request handler, which answered with data inside the Reject.
    Settle it with :meth:`Psk2Receiver.refuse` (the default code is F05 when the
    condition did not match, else F99).  ``condition_matched`` False usually means a
    quote (random condition); True means too little arrived (``amount`` <
    ``min_amount``).  0.5.0 told its handler the amount was 0 in this case.
    """

    amount: int
    min_amount: int
    request_id: int
    data: bytes
    token: bytes
    key: bytes
    app_segments: tuple[str, ...]
    condition_matched: bool
    prepare: IlpPrepare | None = field(default=None, repr=False)
    _keys: Psk2Keys | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def format(self) -> Psk2Format:
        """Always :attr:`Psk2Format.DRAFT2` (draft 1 has no such state)."""
        return Psk2Format.DRAFT2


_DRAFT1_FORMAT: Final = Psk2Format.DRAFT1
_DRAFT2_FORMAT: Final = Psk2Format.DRAFT2

#: What :meth:`Psk2Receiver.handle_prepare` returns.
Decision = IlpReject | Acceptance | UnfulfillableRequest


class Psk2Receiver:
    """PSK2 receiver state machine for one receiver address.

    ``secrets`` derives shared secrets from destinations; ``address`` is the receiver's
    IL-DCP address (used as ``triggeredBy`` of every Reject: "All Rejects use
    triggeredBy = the receiver's IL-DCP address", §7) and may be reassigned when
    IL-DCP reports a new one.  ``max_payment_records`` bounds the draft-1 payment
    records.
    """

    __slots__ = ("_max_records", "_records", "_secrets", "address")

    def __init__(
        self,
        secrets: ReceiverSecrets,
        address: str,
        *,
        max_payment_records: int = DEFAULT_MAX_PAYMENT_RECORDS,
    ) -> None:
        require_aes256gcm()
        if max_payment_records < 1:
            raise ConfigError("max_payment_records", "must be at least 1")
        self._secrets = secrets
        self.address = address
        self._max_records = max_payment_records
        self._records: OrderedDict[_RecordKey, _Record] = OrderedDict()

    @property
    def secrets(self) -> ReceiverSecrets:
        """The secret source this receiver derives keys from."""
        return self._secrets

    # ------------------------------------------------------------------ decisions

    def _reject(self, code: str, message: str = "", data: bytes = b"") -> IlpReject:
        return IlpReject(code, self.address, message, data)

    def handle_prepare(self, prepare: IlpPrepare, now: datetime, *, iv: bytes) -> Decision:
        """Decide what to do with an incoming Prepare (§7 steps 1-7, §8).

        ``now`` is the current time (tz-aware); ``iv`` 12 fresh random bytes, used only
        when the answer is a final Reject carrying an encrypted PSK2 error.  Returns a
        final :class:`IlpReject`, an :class:`Acceptance` or (draft 2) an
        :class:`UnfulfillableRequest`.
        """
        # Item 13: "The SDK should reject expired Prepares itself ... Recommendation: R00."
        if prepare.expires_at <= now:
            return self._reject(_R00, EXPIRED_MESSAGE)
        # Step 1: "derive sharedSecret from the destination (§2). Failure -> Reject F06
        # 'Payment is not for this receiver', empty data."
        try:
            parsed = self._secrets.parse_destination(prepare.destination, self.address)
        except WrongReceiverError:
            return self._reject(_F06, NOT_FOR_THIS_RECEIVER)
        keys = parsed.keys
        data = prepare.data
        # Step 2: "Decrypt data and parse the PSK packet. Failure -> F06 'Unable to
        # parse data', empty data."
        try:
            packet = decode_plaintext(open_envelope(keys.encryption_key, data))
        except DecodeError:
            return self._reject(_F06, UNABLE_TO_PARSE)
        if type(packet) is Draft1Packet:
            return self._draft1(
                prepare, packet, parsed.token, parsed.key, parsed.app_segments, keys, iv
            )
        assert isinstance(packet, Draft2Packet)
        return self._draft2(
            prepare, packet, parsed.token, parsed.key, parsed.app_segments, keys, iv
        )

    def _draft1(
        self,
        prepare: IlpPrepare,
        request: Draft1Packet,
        token: bytes,
        key: bytes,
        app_segments: tuple[str, ...],
        keys: Psk2Keys,
        iv: bytes,
    ) -> Decision:
        # Step 3: "type not 0/1 -> F06 'Unexpected request type'."
        kind = request.type
        if kind != _CHUNK and kind != _LAST_CHUNK:
            return self._reject(_F06, UNEXPECTED_REQUEST_TYPE)
        # Step 4: look up the record (created only when a chunk is fulfilled).
        record_key = (token + key, request.payment_id)
        record = self._records.get(record_key)
        received = record.received if record is not None else 0
        amount = prepare.amount
        # Step 5: "If request.chunkAmount > amount -> error response: Reject F99, empty
        # message, data = encrypted draft-1 packet {type 3, same paymentId, same
        # sequence, paymentAmount = record.received, chunkAmount = amount}."
        # Step 6: "If the record is finished -> same encrypted type-3 Reject."
        if request.chunk_amount > amount or (record is not None and record.finished):
            error = pack_draft1(
                _ERROR, request.payment_id, request.sequence, min(received, MAX_UINT64), amount
            )
            return self._reject(_F99, "", encrypt(keys.encryption_key, iv, error))
        # Step 7: "Regenerate fulfillment/condition (§6); mismatch -> Reject F05
        # 'condition generated does not match prepare', empty data."
        fulfillment = keys.fulfillment(prepare.data)
        if not constant_time_equal(sha256(fulfillment), prepare.execution_condition):
            return self._reject(_F05, CONDITION_MISMATCH_DRAFT1)
        # 0.2.1: "Reject the chunk if the receiver rejected the whole payment".
        if record is not None and record.accepted is False:
            return self._reject(_F99, record.reason)
        return Acceptance(  # positional: this runs for every packet
            _DRAFT1_FORMAT,
            amount,
            token,
            key,
            app_segments,
            request.application_data,
            request.chunk_amount,
            request.payment_id,
            request.sequence,
            request.payment_amount,
            kind == _LAST_CHUNK,
            received,
            record is None,
            record is not None and record.accepted is True,
            None,
            prepare,
            fulfillment,
            keys,
        )

    def _draft2(
        self,
        prepare: IlpPrepare,
        request: Draft2Packet,
        token: bytes,
        key: bytes,
        app_segments: tuple[str, ...],
        keys: Psk2Keys,
        iv: bytes,
    ) -> Decision:
        # 0.5.0: "if (packet.type !== Type.Request) -> reject F06 'Unexpected packet type'".
        if request.type != _REQUEST:
            return self._reject(_F06, UNEXPECTED_PACKET_TYPE)
        # §8: "the packet is fulfillable only if the condition matches and
        # amount(request) <= Prepare amount".
        fulfillment = keys.fulfillment(prepare.data)
        matched = constant_time_equal(sha256(fulfillment), prepare.execution_condition)
        amount = prepare.amount
        if matched and request.amount <= amount:
            return Acceptance(  # positional: this runs for every packet
                _DRAFT2_FORMAT,
                amount,
                token,
                key,
                app_segments,
                request.data,
                request.amount,
                b"",  # payment_id .. payment_accepted: draft 1 only
                0,
                0,
                False,
                0,
                True,
                False,
                request.request_id,
                prepare,
                fulfillment,
                keys,
            )
        return UnfulfillableRequest(
            amount,
            request.amount,
            request.request_id,
            request.data,
            token,
            key,
            app_segments,
            matched,
            prepare,
            keys,
        )

    # ------------------------------------------------------------------ settling

    @staticmethod
    def _settle(candidate: Acceptance | UnfulfillableRequest) -> Psk2Keys:
        if candidate._settled:
            raise LocalProtocolError("this PSK2 decision was already fulfilled or refused")
        keys = candidate._keys
        if keys is None:
            raise LocalProtocolError("this PSK2 decision was not made by a Psk2Receiver")
        candidate._settled = True
        return keys

    def _record(self, key: _RecordKey) -> _Record:
        records = self._records
        record = records.get(key)
        if record is None:
            record = records[key] = _Record()
            while len(records) > self._max_records:
                records.popitem(last=False)
        else:
            records.move_to_end(key)
        return record

    def fulfill(
        self,
        candidate: Acceptance,
        *,
        iv: bytes,
        data: bytes = b"",
        accept_payment: bool = False,
        already_credited: bool = False,
    ) -> IlpFulfill:
        """Fulfil an accepted Prepare (call *after* crediting the payment).

        Draft 1 (§7 steps 9-10): "received += amount; if received >= expected or type
        == 1, mark finished", then Fulfill with the encrypted type-2 response
        ``{paymentId, sequence, paymentAmount = new total, chunkAmount = amount}``.
        ``accept_payment=True`` accepts the rest of the payment too (0.2.1 ``accept()``).
        ``already_credited=True`` fulfils a repeated delivery of a Prepare that was
        credited before (the balance store said so): the payment's running total does
        not count it again.
        Draft 2 (§8): Fulfill with a type-5 response ``{requestId, amount = arrived,
        data}``.  ``data`` is the application's response data (JS draft 1 sent none).
        """
        if not isinstance(candidate, Acceptance):
            raise LocalProtocolError("only an Acceptance can be fulfilled")
        keys = self._settle(candidate)
        amount = candidate.amount
        if candidate.format is Psk2Format.DRAFT1:
            record = self._record((candidate.token + candidate.key, candidate.payment_id))
            record.expected = expected = candidate.payment_amount
            if not already_credited:
                record.received += amount
                record.chunks_fulfilled += 1
            if accept_payment:
                record.accepted = True
            # Item 10: paymentAmount 0 means "no total", not "finished at once".
            if (expected != 0 and record.received >= expected) or candidate.last_chunk:
                record.finished = True
            plaintext = pack_draft1(
                _FULFILLMENT,
                candidate.payment_id,
                candidate.sequence,
                min(record.received, MAX_UINT64),
                amount,
                data,
            )
        else:
            assert candidate.request_id is not None
            plaintext = encode_draft2(Draft2Packet(_RESPONSE, candidate.request_id, amount, data))
        sealed = seal_envelope(keys.encryption_key, iv, plaintext)
        return fulfill_packet(candidate.fulfillment, sealed)

    def refuse(
        self,
        candidate: Acceptance | UnfulfillableRequest,
        *,
        iv: bytes,
        code: str | None = None,
        message: str | None = None,
        data: bytes = b"",
        reject_payment: bool = False,
    ) -> IlpReject:
        """Reject a candidate (the application said no, or crediting failed).

        Draft 1 (§7 step 8): "Rejection -> Reject F99 with the application's message
        and empty data"; ``reject_payment=True`` rejects later chunks of the payment
        too (0.2.1 ``reject(message)``); ``data`` must be empty.  Draft 2 (§8):
        "rejects with data (-> Reject, type 6, amount = what arrived). Reject code is
        F99, except F05 when the condition did not match".  ``code`` overrides the
        default code (e.g. from an :class:`~ilp_receiver.errors.IlpError`).
        """
        if isinstance(candidate, Acceptance) and candidate.format is Psk2Format.DRAFT1:
            if data:
                raise LocalProtocolError("draft-1 refusals carry no data (§7 step 8)")
            self._settle(candidate)
            text = "" if message is None else message
            if reject_payment:
                record = self._record((candidate.token + candidate.key, candidate.payment_id))
                record.accepted = False
                record.reason = text
            return self._reject(_F99 if code is None else code, text)
        if reject_payment:
            raise LocalProtocolError("reject_payment applies to draft-1 payments only")
        keys = self._settle(candidate)
        if isinstance(candidate, UnfulfillableRequest) and not candidate.condition_matched:
            default_code, default_message = _F05, CONDITION_MISMATCH_DRAFT2
        else:
            default_code, default_message = _F99, ""
        request_id = candidate.request_id
        assert request_id is not None
        error = Draft2Packet(_D2_ERROR, request_id, candidate.amount, data)
        return self._reject(
            default_code if code is None else code,
            default_message if message is None else message,
            seal(keys.encryption_key, iv, error),
        )

    # ------------------------------------------------------------------ introspection

    def payment_record(self, token_and_key: bytes, payment_id: bytes) -> PaymentRecord | None:
        """A snapshot of the record for (``token || key``, ``payment_id``), if any."""
        record = self._records.get((token_and_key, payment_id))
        if record is None:
            return None
        return PaymentRecord(
            record.received,
            record.expected,
            record.finished,
            record.accepted,
            record.chunks_fulfilled,
            record.reason,
        )

    def __len__(self) -> int:
        """How many draft-1 payment records are held."""
        return len(self._records)
