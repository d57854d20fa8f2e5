"""Sans-I/O PSK2 sender helpers (spec ``06-psk2.md`` §5-§8) for the paying client and tests.

Builds the ILP Prepare of a draft-1 chunk, a draft-1 quote and a draft-2 request from a
destination and shared secret, and reads the receiver's Fulfill/Reject back into a PSK2
response.  Every random input (IV, payment id, a quote's random condition) and the
expiry are parameters, so a recorded run of the JavaScript sender can be rebuilt byte
for byte.

Sender conventions of ilp-protocol-psk2 0.2.1 (§7): "single-chunk payments send type
1, paymentAmount 2^64-1, chunkAmount = minimum destination amount; quotes send type 1,
paymentAmount = chunkAmount = 2^64-1, random condition ...; chunked payments reuse one
paymentId with increasing sequence, type 0 then type 1 on the last chunk; default
Prepare expiry = now + 30 s."
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ..codec.ilp import IlpFulfill, IlpPrepare, IlpReject
from ..codec.oer import MAX_UINT64
from ..codec.psk2 import (
    Draft1Packet,
    Draft1Type,
    Draft2Packet,
    Draft2Type,
    Psk2Packet,
    condition_for,
    decode_any,
    derive_keys,
    fulfillment_for,
    seal,
)
from ..crypto import constant_time_equal
from ..errors import DecodeError, EncodeError

__all__ = [
    "DEFAULT_EXPIRY",
    "DEFAULT_QUOTE_SOURCE_AMOUNT",
    "Psk2Reply",
    "build_chunk_prepare",
    "build_quote_prepare",
    "build_request_prepare",
    "parse_reply",
]

#: 0.2.1: "default Prepare expiry = now + 30 s".
DEFAULT_EXPIRY: Final = timedelta(seconds=30)
#: 0.2.1: quotes use a "default source amount 1000".
DEFAULT_QUOTE_SOURCE_AMOUNT: Final = 1000


def _prepare(
    shared_secret: bytes,
    destination: str,
    amount: int,
    expires_at: datetime,
    iv: bytes,
    packet: Psk2Packet,
    condition: bytes | None,
) -> IlpPrepare:
    if len(shared_secret) != 32:
        raise EncodeError(f"shared secret must be 32 bytes, got {len(shared_secret)}")
    keys = derive_keys(bytes(shared_secret))
    data = seal(keys.encryption_key, iv, packet)
    if condition is None:
        condition = condition_for(fulfillment_for(keys.fulfillment_key, data))
    elif len(condition) != 32:
        raise EncodeError(f"condition must be 32 bytes, got {len(condition)}")
    return IlpPrepare(amount, expires_at, bytes(condition), destination, data)


def build_chunk_prepare(
    destination: str,
    shared_secret: bytes,
    *,
    amount: int,
    expires_at: datetime,
    iv: bytes,
    payment_id: bytes,
    sequence: int = 0,
    payment_amount: int = MAX_UINT64,
    chunk_amount: int = 0,
    last_chunk: bool = True,
    application_data: bytes = b"",
) -> IlpPrepare:
    """A draft-1 chunk (type 1 if ``last_chunk`` else 0) as an ILP Prepare.

    ``amount`` is the source amount of the Prepare; ``chunk_amount`` the minimum that
    must arrive; ``payment_amount`` the payment's total (2**64-1: "no limit").
    The defaults give 0.2.1's single-chunk payment.
    """
    packet = Draft1Packet(
        Draft1Type.LAST_CHUNK if last_chunk else Draft1Type.CHUNK,
        payment_id,
        sequence,
        payment_amount,
        chunk_amount,
        application_data,
    )
    return _prepare(shared_secret, destination, amount, expires_at, iv, packet, None)


def build_quote_prepare(
    destination: str,
    shared_secret: bytes,
    *,
    expires_at: datetime,
    iv: bytes,
    payment_id: bytes,
    condition: bytes,
    amount: int = DEFAULT_QUOTE_SOURCE_AMOUNT,
    sequence: int = 0,
) -> IlpPrepare:
    """An unfulfillable draft-1 quote: type 1, paymentAmount = chunkAmount = 2**64-1.

    ``condition`` must be 32 random bytes (§6: "the sender uses 32 random bytes as the
    condition"); the receiver answers F99 with a type-3 response saying what arrived.
    """
    packet = Draft1Packet(Draft1Type.LAST_CHUNK, payment_id, sequence, MAX_UINT64, MAX_UINT64, b"")
    return _prepare(shared_secret, destination, amount, expires_at, iv, packet, condition)


def build_request_prepare(
    destination: str,
    shared_secret: bytes,
    *,
    amount: int,
    expires_at: datetime,
    iv: bytes,
    request_id: int,
    min_amount: int = 0,
    data: bytes = b"",
    unfulfillable_condition: bytes | None = None,
) -> IlpPrepare:
    """A draft-2 request (type 4) as an ILP Prepare.

    With ``unfulfillable_condition`` (32 random bytes) it is a quote the receiver
    cannot fulfil.
    """
    packet = Draft2Packet(Draft2Type.REQUEST, request_id, min_amount, data)
    return _prepare(
        shared_secret, destination, amount, expires_at, iv, packet, unfulfillable_condition
    )


@dataclass(frozen=True, slots=True)
class Psk2Reply:
    """The receiver's answer as the sender sees it.

    ``packet`` is the decrypted PSK2 response, or None when the reply carried no data
    the shared secret opens (or, given ``request``, one that does not answer it: wrong
    type, payment id, sequence or request id).  ``code``/``message``/``triggered_by``
    come from a Reject (empty for a Fulfill).
    """

    fulfilled: bool
    packet: Psk2Packet | None
    code: str = ""
    message: str = ""
    triggered_by: str = ""
    fulfillment: bytes = b""

    @property
    def delivered_amount(self) -> int | None:
        """What arrived at the receiver, if the response says so."""
        packet = self.packet
        if packet is None:
            return None
        if isinstance(packet, Draft1Packet):
            return packet.chunk_amount
        return packet.amount


def _answers(request: Psk2Packet, response: Psk2Packet, fulfilled: bool) -> bool:
    if isinstance(request, Draft1Packet):
        return (
            isinstance(response, Draft1Packet)
            and response.type == (Draft1Type.FULFILLMENT if fulfilled else Draft1Type.ERROR)
            and constant_time_equal(response.payment_id, request.payment_id)
            and response.sequence == request.sequence
        )
    return (
        isinstance(response, Draft2Packet)
        and response.type == (Draft2Type.RESPONSE if fulfilled else Draft2Type.ERROR)
        and response.request_id == request.request_id
    )


def parse_reply(
    shared_secret: bytes,
    reply: IlpFulfill | IlpReject,
    request: Psk2Packet | None = None,
) -> Psk2Reply:
    """Decrypt the PSK2 response inside a Fulfill or Reject.

    Never raises on bad reply data: undecryptable or mismatched data gives
    ``packet=None`` (the reply is then unauthenticated, like 0.5.0's
    ``unauthenticatedData``).
    """
    fulfilled = isinstance(reply, IlpFulfill)
    packet: Psk2Packet | None = None
    if reply.data:
        try:
            packet = decode_any(derive_keys(bytes(shared_secret)).encryption_key, reply.data)
        except DecodeError:
            packet = None
    if packet is not None and request is not None and not _answers(request, packet, fulfilled):
        packet = None
    if isinstance(reply, IlpFulfill):
        return Psk2Reply(True, packet, fulfillment=reply.fulfillment)
    return Psk2Reply(False, packet, reply.code, reply.message, reply.triggered_by)
