"""Sans-I/O single-Prepare flows of the PSK2 sender: one payment, one quote.

Spec ``06-psk2.md``.  Each flow is a pair of pure functions: one builds the ILP Prepare
(every random input -- IV, payment id, request id, a quote's condition -- and the expiry
are parameters), the other reads the Fulfill or Reject into a result, or raises
:class:`~ilp_receiver.client.results.PaymentError`.

Conventions followed (§7, "Observed sender conventions (0.2.1)"): "single-chunk
payments send type 1, paymentAmount 2^64-1, chunkAmount = minimum destination amount;
quotes send type 1, paymentAmount = chunkAmount = 2^64-1, random condition, default
source amount 1000".  Draft 2 (§8): a type-4 request with ``amount`` = minimum that
must arrive; a quote is the same request under an unfulfillable condition.
"""

from __future__ import annotations

from datetime import datetime

from ..codec.ilp import IlpFulfill, IlpPrepare, IlpReply
from ..codec.oer import MAX_UINT64
from ..codec.psk2 import Draft1Packet, Draft1Type, Draft2Packet, Draft2Type, Psk2Packet
from ..crypto import constant_time_equal, sha256
from ..errors import EncodeError
from ..psk2.sender import (
    build_chunk_prepare,
    build_quote_prepare,
    build_request_prepare,
    parse_reply,
)
from .results import (
    PaymentError,
    PaymentResult,
    Psk2Destination,
    Psk2Draft,
    QuoteError,
    QuoteResult,
)

__all__ = [
    "fulfillment_is_valid",
    "payment_outcome",
    "payment_prepare",
    "quote_outcome",
    "quote_prepare",
]


def fulfillment_is_valid(prepare: IlpPrepare, reply: IlpFulfill) -> bool:
    """Whether ``SHA-256(fulfillment)`` is the Prepare's execution condition."""
    return constant_time_equal(sha256(reply.fulfillment), prepare.execution_condition)


def payment_prepare(
    target: Psk2Destination,
    *,
    draft: Psk2Draft,
    source_amount: int,
    min_destination_amount: int,
    expires_at: datetime,
    iv: bytes,
    payment_id: bytes = b"",
    sequence: int = 0,
    last_chunk: bool = True,
    payment_amount: int = MAX_UINT64,
    request_id: int = 0,
    data: bytes = b"",
) -> tuple[IlpPrepare, Psk2Packet]:
    """The Prepare of a single payment and the PSK2 request inside it.

    Draft 1: a chunk with ``payment_id``/``sequence`` (type 1 unless ``last_chunk`` is
    False), ``chunkAmount`` = ``min_destination_amount``, ``applicationData`` =
    ``data``.  Draft 2: a type-4 request ``request_id`` with ``amount`` =
    ``min_destination_amount`` and ``data``.
    """
    if draft == "draft1":
        _check_payment_id(payment_id)
        prepare = build_chunk_prepare(
            target.destination,
            target.shared_secret,
            amount=source_amount,
            expires_at=expires_at,
            iv=iv,
            payment_id=payment_id,
            sequence=sequence,
            payment_amount=payment_amount,
            chunk_amount=min_destination_amount,
            last_chunk=last_chunk,
            application_data=data,
        )
        kind = Draft1Type.LAST_CHUNK if last_chunk else Draft1Type.CHUNK
        request: Psk2Packet = Draft1Packet(
            kind, payment_id, sequence, payment_amount, min_destination_amount, data
        )
        return prepare, request
    if draft == "draft2":
        return _draft2_request(
            target,
            source_amount=source_amount,
            expires_at=expires_at,
            iv=iv,
            request_id=request_id,
            min_amount=min_destination_amount,
            data=data,
        )
    raise _unknown_draft(draft)


def _check_payment_id(payment_id: bytes) -> None:
    if len(payment_id) != 16:
        raise EncodeError(f"a draft-1 payment id must be 16 bytes, got {len(payment_id)}")


def _unknown_draft(draft: str) -> EncodeError:
    return EncodeError(f"unknown PSK2 draft {draft!r} (use 'draft1' or 'draft2')")


def _draft2_request(
    target: Psk2Destination,
    *,
    source_amount: int,
    expires_at: datetime,
    iv: bytes,
    request_id: int,
    min_amount: int,
    data: bytes,
    unfulfillable_condition: bytes | None = None,
) -> tuple[IlpPrepare, Psk2Packet]:
    """A draft-2 type-4 request asking for ``min_amount``, and its Prepare."""
    prepare = build_request_prepare(
        target.destination,
        target.shared_secret,
        amount=source_amount,
        expires_at=expires_at,
        iv=iv,
        request_id=request_id,
        min_amount=min_amount,
        data=data,
        unfulfillable_condition=unfulfillable_condition,
    )
    return prepare, Draft2Packet(Draft2Type.REQUEST, request_id, min_amount, data)


def _draft_of(request: Psk2Packet) -> Psk2Draft:
    return "draft1" if isinstance(request, Draft1Packet) else "draft2"


def _describe(code: str, message: str, triggered_by: str) -> str:
    text = f"rejected with {code}"
    if message:
        text += f" {message!r}"
    if triggered_by:
        text += f" by {triggered_by}"
    return text


def payment_outcome(
    target: Psk2Destination,
    prepare: IlpPrepare,
    request: Psk2Packet,
    reply: IlpReply,
) -> PaymentResult:
    """The result of a single payment, or :class:`PaymentError` when it failed.

    A Fulfill counts only if its fulfillment hashes to our condition; the delivered
    amount is the response's ``chunkAmount`` (draft 1) or ``amount`` (draft 2).  A
    Fulfill without an authenticated response still moved the money, so the error's
    ``result`` counts the source amount as paid and the delivered amount as the
    minimum the receiver was asked to guarantee.
    """
    draft = _draft_of(request)
    payment_id = request.payment_id if isinstance(request, Draft1Packet) else None
    nothing = PaymentResult(target.destination, 0, 0, 0, 1, draft=draft, payment_id=payment_id)
    parsed = parse_reply(target.shared_secret, reply, request)
    if isinstance(reply, IlpFulfill):
        if not fulfillment_is_valid(prepare, reply):
            raise PaymentError(
                "the Fulfill's fulfillment does not match our condition", result=nothing
            )
        packet = parsed.packet
        if packet is None:
            minimum = request.chunk_amount if isinstance(request, Draft1Packet) else request.amount
            paid = PaymentResult(
                target.destination, prepare.amount, minimum, 1, draft=draft, payment_id=payment_id
            )
            raise PaymentError(
                "the receiver fulfilled but its Fulfill carried no valid PSK2 response",
                result=paid,
            )
        if isinstance(packet, Draft1Packet):
            delivered = packet.chunk_amount
            total = packet.payment_amount or None
            response_data = packet.application_data
        else:
            delivered, total, response_data = packet.amount, None, packet.data
        return PaymentResult(
            target.destination,
            prepare.amount,
            delivered,
            1,
            draft=draft,
            payment_id=payment_id,
            receiver_total=total,
            data=response_data,
        )
    arrived = parsed.delivered_amount
    detail = _describe(reply.code, reply.message, reply.triggered_by)
    if arrived is not None:
        detail += f" ({arrived} arrived)"
    raise PaymentError(
        f"payment {detail}",
        result=nothing,
        code=reply.code,
        ilp_message=reply.message,
        triggered_by=reply.triggered_by,
        arrived=arrived,
    )


def quote_prepare(
    target: Psk2Destination,
    *,
    draft: Psk2Draft,
    source_amount: int,
    expires_at: datetime,
    iv: bytes,
    condition: bytes,
    payment_id: bytes = b"",
    sequence: int = 0,
    request_id: int = 0,
    data: bytes = b"",
) -> tuple[IlpPrepare, Psk2Packet]:
    """The Prepare of an unfulfillable test payment and the request inside it.

    Draft 1: "type 1, paymentAmount = chunkAmount = 2^64-1, random condition".  Draft
    2: a type-4 request asking for 2^64-1 under the random ``condition`` (32 bytes).
    """
    if draft == "draft1":
        _check_payment_id(payment_id)
        prepare = build_quote_prepare(
            target.destination,
            target.shared_secret,
            expires_at=expires_at,
            iv=iv,
            payment_id=payment_id,
            condition=condition,
            amount=source_amount,
            sequence=sequence,
        )
        request: Psk2Packet = Draft1Packet(
            Draft1Type.LAST_CHUNK, payment_id, sequence, MAX_UINT64, MAX_UINT64
        )
        return prepare, request
    if draft == "draft2":
        return _draft2_request(
            target,
            source_amount=source_amount,
            expires_at=expires_at,
            iv=iv,
            request_id=request_id,
            min_amount=MAX_UINT64,
            data=data,
            unfulfillable_condition=condition,
        )
    raise _unknown_draft(draft)


def quote_outcome(
    target: Psk2Destination, prepare: IlpPrepare, request: Psk2Packet, reply: IlpReply
) -> QuoteResult:
    """The quote's delivered amount, from the receiver's encrypted error; else QuoteError."""
    draft = _draft_of(request)
    nothing = PaymentResult(target.destination, 0, 0, 0, 0, draft=draft)
    if isinstance(reply, IlpFulfill):
        # cannot happen with a random condition; the money is gone, say so
        raise QuoteError(
            "a quote was fulfilled (the receiver knew the random condition?)",
            result=PaymentResult(target.destination, prepare.amount, 0, 1, draft=draft),
        )
    parsed = parse_reply(target.shared_secret, reply, request)
    arrived = parsed.delivered_amount
    if arrived is None:
        raise QuoteError(
            f"quote {_describe(reply.code, reply.message, reply.triggered_by)} without a "
            "PSK2 response saying how much arrived",
            result=nothing,
            code=reply.code,
            ilp_message=reply.message,
            triggered_by=reply.triggered_by,
        )
    return QuoteResult(target.destination, prepare.amount, arrived, reply.code, draft)
