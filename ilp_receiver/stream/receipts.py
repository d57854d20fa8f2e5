"""STREAM receipts (RFC 39 draft 1, deprecated 2026; spec ``12-stream.md`` §13).

A receipt lets a third party (the *verifier*, e.g. a Web Monetization site backend)
confirm that money reached the receiver without seeing any ILP packet.  58 bytes::

    version         UInt8      1
    receipt nonce   16 bytes   chosen by the verifier, unique per connection
    stream id       UInt8      the stream the money arrived on
    total received  UInt64 BE  the stream's total so far, in the receiver's units
    HMAC            32 bytes   HMAC-SHA256(receipt secret, the first 26 bytes)

The stream id is one byte although stream ids are VarUInts (§15 Q3): 2.7.1 throws for
stream ids above 255 *after* crediting the money; :func:`create_receipt` refuses them
with EncodeError so the caller can check before crediting.

:func:`verify_receipt` does what 2.7.1's ``verifyReceipt`` does: length 58, version 1,
HMAC (compared in constant time).  RFC 39 also asks a verifier to credit only the
increase over the last receipt for the same nonce + stream id and to drop stale ones;
that needs state and is left to the verifier.  A stateless verifier MAY derive each
receipt secret from a seed and the nonce (:func:`receipt_secret_from_seed`).

Pure functions: the nonce and secret are parameters.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..codec.oer import MAX_UINT64
from ..crypto import HmacSha256, constant_time_equal, hmac_sha256
from ..errors import DecodeError, EncodeError

__all__ = [
    "MAX_RECEIPT_STREAM_ID",
    "RECEIPT_HMAC_MESSAGE_LENGTH",
    "RECEIPT_LENGTH",
    "RECEIPT_NONCE_LENGTH",
    "RECEIPT_SECRET_LENGTH",
    "RECEIPT_VERSION",
    "Receipt",
    "create_receipt",
    "decode_receipt",
    "receipt_secret_from_seed",
    "verify_receipt",
]

RECEIPT_VERSION: Final = 1
RECEIPT_NONCE_LENGTH: Final = 16
RECEIPT_SECRET_LENGTH: Final = 32
#: "Receipt (58 bytes, fixed layout)".
RECEIPT_LENGTH: Final = 58
#: The HMAC covers "the first 26 bytes" (version, nonce, stream id, total).
RECEIPT_HMAC_MESSAGE_LENGTH: Final = 26
#: "stream id | 1 (UInt8)".
MAX_RECEIPT_STREAM_ID: Final = 0xFF

_HEAD: Final = struct.Struct(">B16sBQ")
_RECEIPT: Final = struct.Struct(">B16sBQ32s")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A decoded receipt. ``hmac`` is the 32-byte tag as received."""

    version: int
    nonce: bytes
    stream_id: int
    total_received: int
    hmac: bytes


def create_receipt(nonce: bytes, stream_id: int, total_received: int, secret: bytes) -> bytes:
    """The 58-byte receipt for ``stream_id`` having received ``total_received`` so far.

    EncodeError when the nonce is not 16 bytes, the secret not 32 bytes, the stream id
    not 0..255 (§15 Q3) or the total not a UInt64.  Messages follow 2.7.1's.
    """
    if len(nonce) != RECEIPT_NONCE_LENGTH:
        raise EncodeError(f"receipt nonce must be {RECEIPT_NONCE_LENGTH} bytes")
    if len(secret) != RECEIPT_SECRET_LENGTH:
        raise EncodeError(f"receipt secret must be {RECEIPT_SECRET_LENGTH} bytes")
    if (
        not isinstance(stream_id, int)
        or isinstance(stream_id, bool)
        or not 0 <= stream_id <= MAX_RECEIPT_STREAM_ID
    ):
        raise EncodeError(
            f"UInt {stream_id} does not fit in 1 bytes (a receipt's stream id is a UInt8)"
        )
    if type(total_received) is not int or not 0 <= total_received <= MAX_UINT64:
        raise EncodeError(f"receipt total must be a UInt64, got {total_received!r}")
    head = _HEAD.pack(RECEIPT_VERSION, bytes(nonce), stream_id, total_received)
    return head + hmac_sha256(bytes(secret), head)


def decode_receipt(data: bytes | bytearray | memoryview) -> Receipt:
    """Split a receipt into its fields without verifying it (2.7.1 ``decodeReceipt``).

    DecodeError ("receipt malformed") unless it is exactly 58 bytes; the version is not
    checked here.
    """
    if len(data) != RECEIPT_LENGTH:
        raise DecodeError(f"receipt malformed: {len(data)} bytes, not {RECEIPT_LENGTH}", 0)
    version, nonce, stream_id, total, tag = _RECEIPT.unpack(bytes(data))
    return Receipt(version, nonce, stream_id, total, tag)


def verify_receipt(
    data: bytes | bytearray | memoryview,
    secret: bytes | Callable[[Receipt], bytes],
) -> Receipt:
    """Decode and authenticate a receipt (2.7.1 ``verifyReceipt``); returns it.

    ``secret`` is the 32-byte receipt secret, or a function computing it from the
    decoded receipt (a stateless verifier: ``lambda r: receipt_secret_from_seed(seed,
    r.nonce)``).  DecodeError for a length other than 58 ("receipt malformed"), a
    version other than 1 ("invalid version") or a wrong HMAC ("invalid hmac", compared
    in constant time).
    """
    receipt = decode_receipt(data)
    if receipt.version != RECEIPT_VERSION:
        raise DecodeError(f"invalid version: {receipt.version}", 0)
    key = secret(receipt) if callable(secret) else secret
    expected = hmac_sha256(bytes(key), bytes(data[:RECEIPT_HMAC_MESSAGE_LENGTH]))
    if not constant_time_equal(expected, receipt.hmac):
        raise DecodeError("invalid hmac", RECEIPT_HMAC_MESSAGE_LENGTH)
    return receipt


def receipt_secret_from_seed(seed: bytes | HmacSha256, nonce: bytes) -> bytes:
    """RFC 39 stateless verifier: ``receipt_secret = HMAC-SHA256(seed, receipt_nonce)``.

    ``seed`` may be an :class:`~ilp_receiver.crypto.HmacSha256` built from it, for a
    verifier checking many receipts.
    """
    if isinstance(seed, HmacSha256):
        return seed.digest(bytes(nonce))
    return hmac_sha256(bytes(seed), bytes(nonce))
