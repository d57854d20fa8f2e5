"""PSK2 wire format: key derivation, the encryption envelope and both packet drafts.

Implements spec ``06-psk2.md``:

* §3 key derivation from the 32-byte shared secret (labels ``ilp_psk2_encryption`` and
  ``ilp_psk2_fulfillment``; the draft texts' ``ilp_psk_encryption`` is a typo every
  implementation ignored);
* §4 the envelope ``IV (12) || authTag (16) || ciphertext`` (AES-256-GCM, no AAD);
* §5 the draft-1 data packet (types 0-3: chunk, last chunk, fulfillment, error);
* §6 ``fulfillment = HMAC-SHA256(fulfillmentKey, encryptedData)``,
  ``condition = SHA-256(fulfillment)``;
* §8 the draft-2 request/response packet (types 4-6).

Decoding is lenient exactly where the 2018 reference code was: "the JS reader decodes
fields 1-6 and ignores everything after, including the extension byte" (§5), and draft 2
has "junk: optional, ignore" after the data (§8).  The type byte tells the drafts apart
after decryption ("Type bytes 0-3 vs 4-6 let a receiver tell the formats apart", §8);
:func:`decode_plaintext` / :func:`decode_any` do that.

Everything here is a pure function: IVs are parameters, never drawn inside.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from ..crypto import (
    HmacSha256,
    constant_time_equal,
    hmac_sha256,
    open_envelope,
    seal_envelope,
    sha256,
)
from ..errors import DecodeError, EncodeError
from .oer import MAX_UINT32, MAX_UINT64, Reader, encode_var_octets

__all__ = [
    "AUTH_TAG_LENGTH",
    "ENCRYPTION_LABEL",
    "ENVELOPE_OVERHEAD",
    "FULFILLMENT_LABEL",
    "GENERATION_LABEL",
    "IV_LENGTH",
    "PAYMENT_ID_LENGTH",
    "RECEIVER_ID_LABEL",
    "RECEIVER_ID_LENGTH",
    "SHARED_SECRET_LENGTH",
    "TOKEN_LENGTH",
    "Draft1Packet",
    "Draft1Type",
    "Draft2Packet",
    "Draft2Type",
    "Psk2Keys",
    "Psk2Packet",
    "condition_for",
    "condition_matches",
    "decode_any",
    "decode_draft1",
    "decode_draft2",
    "decode_plaintext",
    "decrypt",
    "derive_keys",
    "encode_draft1",
    "encode_draft2",
    "encode_packet",
    "encrypt",
    "fulfillment_for",
    "pack_draft1",
    "seal",
]

#: §3 / §2 HMAC labels (used as the HMAC *message*; the key is the first argument).
ENCRYPTION_LABEL: Final = b"ilp_psk2_encryption"
FULFILLMENT_LABEL: Final = b"ilp_psk2_fulfillment"
RECEIVER_ID_LABEL: Final = b"ilp_psk2_receiver_id"
GENERATION_LABEL: Final = b"ilp_psk2_generation"

IV_LENGTH: Final = 12
AUTH_TAG_LENGTH: Final = 16
#: IV + tag: "+28 envelope" (§5).
ENVELOPE_OVERHEAD: Final = IV_LENGTH + AUTH_TAG_LENGTH
PAYMENT_ID_LENGTH: Final = 16
TOKEN_LENGTH: Final = 18
RECEIVER_ID_LENGTH: Final = 8
SHARED_SECRET_LENGTH: Final = 32

_DRAFT1_HEAD: Final = struct.Struct(">B16sIQQ")  # type, paymentId, sequence, amounts
_DRAFT2_HEAD: Final = struct.Struct(">BIQ")  # type, requestId, amount
_EXTENSION_BYTE: Final = b"\x00"


class Draft1Type(IntEnum):
    """Draft-1 packet types (§5; 0.2.1 values, see §9 for the text's inconsistency)."""

    CHUNK = 0
    LAST_CHUNK = 1
    FULFILLMENT = 2
    ERROR = 3


class Draft2Type(IntEnum):
    """Draft-2 packet types (§8)."""

    REQUEST = 4
    RESPONSE = 5
    ERROR = 6


@dataclass(frozen=True, slots=True)
class Psk2Keys:
    """The keys derived from one shared secret (§3). ``repr`` never shows them.

    Build it with :func:`derive_keys`.  ``fulfillment_hmac`` is the fulfillment key with
    its HMAC state precomputed, for :meth:`fulfillment`.
    """

    shared_secret: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)
    fulfillment_key: bytes = field(repr=False)
    fulfillment_hmac: HmacSha256 = field(repr=False, compare=False)

    def fulfillment(self, encrypted_data: bytes) -> bytes:
        """§6: ``HMAC-SHA256(fulfillmentKey, encryptedData)``."""
        return self.fulfillment_hmac.digest(encrypted_data)


def derive_keys(shared_secret: bytes) -> Psk2Keys:
    """§3: ``encryptionKey = HMAC(sharedSecret, "ilp_psk2_encryption")``, same for fulfillment."""
    secret_hmac = HmacSha256(shared_secret)
    fulfillment_key = secret_hmac.digest(FULFILLMENT_LABEL)
    return Psk2Keys(
        shared_secret,
        secret_hmac.digest(ENCRYPTION_LABEL),
        fulfillment_key,
        HmacSha256(fulfillment_key),
    )


@dataclass(frozen=True, slots=True)
class Draft1Packet:
    """A draft-1 PSK2 packet (§5), request or response.

    Requests: type 0 (chunk) or 1 (last chunk); ``payment_amount`` = total the payment
    should deliver, ``chunk_amount`` = minimum that must arrive for this chunk.
    Responses: type 2 (fulfillment) or 3 (error); ``payment_amount`` = total accepted
    for this payment id so far, ``chunk_amount`` = amount that arrived in this Prepare.
    """

    type: int
    payment_id: bytes
    sequence: int
    payment_amount: int
    chunk_amount: int
    application_data: bytes = b""


@dataclass(frozen=True, slots=True)
class Draft2Packet:
    """A draft-2 PSK2 packet (§8): type 4 request, 5 response, 6 error.

    ``amount``: in a request the minimum that must arrive; in a response or error the
    amount that arrived.
    """

    type: int
    request_id: int
    amount: int
    data: bytes = b""


#: Either draft's packet.
Psk2Packet = Draft1Packet | Draft2Packet


def _check_u64(value: int, what: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise EncodeError(f"{what} must be an integer in 0..{MAX_UINT64}, got {value!r}")


def pack_draft1(
    kind: int,
    payment_id: bytes,
    sequence: int,
    payment_amount: int,
    chunk_amount: int,
    application_data: bytes = b"",
) -> bytes:
    """Draft-1 plaintext from its fields (what :func:`encode_draft1` does for a packet)."""
    if not isinstance(kind, int) or not 0 <= kind <= 3:
        raise EncodeError(f"draft-1 type must be 0..3, got {kind!r}")
    if len(payment_id) != PAYMENT_ID_LENGTH:
        raise EncodeError(f"paymentId must be {PAYMENT_ID_LENGTH} bytes, got {len(payment_id)}")
    try:
        head = _DRAFT1_HEAD.pack(kind, payment_id, sequence, payment_amount, chunk_amount)
    except struct.error:
        # struct refuses anything outside UInt32 / UInt64 (and non-integers).
        raise EncodeError(
            "sequence must be a UInt32 and paymentAmount/chunkAmount UInt64, got "
            f"{sequence!r}, {payment_amount!r}, {chunk_amount!r}"
        ) from None
    return head + encode_var_octets(bytes(application_data)) + _EXTENSION_BYTE


def encode_draft1(packet: Draft1Packet) -> bytes:
    """Draft-1 plaintext: type, paymentId, sequence, amounts, app data, extension 0 (§5)."""
    return pack_draft1(
        packet.type,
        packet.payment_id,
        packet.sequence,
        packet.payment_amount,
        packet.chunk_amount,
        packet.application_data,
    )


def decode_draft1(plaintext: bytes) -> Draft1Packet:
    """Parse a draft-1 plaintext.

    "The JS reader decodes fields 1-6 and ignores everything after, including the
    extension byte. A Python reader should do the same" (§5).  The type byte must be
    0..3 (the draft-1 range); 4..6 is draft 2 (:func:`decode_draft2`).
    """
    buf = bytes(plaintext)
    if len(buf) < _DRAFT1_HEAD.size:
        raise DecodeError(
            f"draft-1 PSK2 packet needs at least {_DRAFT1_HEAD.size} bytes, got {len(buf)}",
            len(buf),
        )
    kind, payment_id, sequence, payment_amount, chunk_amount = _DRAFT1_HEAD.unpack_from(buf)
    if kind > 3:
        raise DecodeError(f"not a draft-1 PSK2 type: {kind}", 0)
    size = buf[_DRAFT1_HEAD.size] if len(buf) > _DRAFT1_HEAD.size else 0x80
    end = _DRAFT1_HEAD.size + 1 + size
    if size < 0x80 and end <= len(buf):  # fast path: short-form length, all present
        application_data = buf[_DRAFT1_HEAD.size + 1 : end]
    else:
        reader = Reader(buf)
        reader.pos = _DRAFT1_HEAD.size
        application_data = reader.read_var_octets("applicationData")
    return Draft1Packet(kind, payment_id, sequence, payment_amount, chunk_amount, application_data)


def encode_draft2(packet: Draft2Packet) -> bytes:
    """Draft-2 plaintext: type, requestId, amount, data (no extension byte, §8)."""
    if not isinstance(packet.type, int) or not 4 <= packet.type <= 6:
        raise EncodeError(f"draft-2 type must be 4..6, got {packet.type}")
    if type(packet.request_id) is not int or not 0 <= packet.request_id <= MAX_UINT32:
        raise EncodeError(f"requestId must be a UInt32, got {packet.request_id!r}")
    _check_u64(packet.amount, "amount")
    return _DRAFT2_HEAD.pack(
        int(packet.type), packet.request_id, packet.amount
    ) + encode_var_octets(bytes(packet.data))


def decode_draft2(plaintext: bytes) -> Draft2Packet:
    """Parse a draft-2 plaintext; trailing junk is ignored (§8 field 5)."""
    buf = bytes(plaintext)
    if len(buf) < _DRAFT2_HEAD.size:
        raise DecodeError(
            f"draft-2 PSK2 packet needs at least {_DRAFT2_HEAD.size} bytes, got {len(buf)}",
            len(buf),
        )
    kind, request_id, amount = _DRAFT2_HEAD.unpack_from(buf)
    if not 4 <= kind <= 6:
        raise DecodeError(f"not a draft-2 PSK2 type: {kind}", 0)
    reader = Reader(buf)
    reader.pos = _DRAFT2_HEAD.size
    data = reader.read_var_octets("data")
    return Draft2Packet(kind, request_id, amount, data)


def encode_packet(packet: Psk2Packet) -> bytes:
    """Plaintext of either draft."""
    if isinstance(packet, Draft1Packet):
        return encode_draft1(packet)
    return encode_draft2(packet)


def decode_plaintext(plaintext: bytes) -> Psk2Packet:
    """Decode a plaintext of either draft, chosen by the type byte (0-3 draft 1, 4-6 draft 2)."""
    if not plaintext:
        raise DecodeError("empty PSK2 plaintext", 0)
    kind = plaintext[0]
    if kind <= 3:
        return decode_draft1(plaintext)
    if kind <= 6:
        return decode_draft2(plaintext)
    raise DecodeError(f"unknown PSK2 packet type {kind}", 0)


def encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """§4 envelope: ``IV || authTag || ciphertext`` with AES-256-GCM under ``key``.

    ``iv`` must be 12 fresh random bytes ("Never reuse an IV with the same key").
    """
    return seal_envelope(key, iv, plaintext)


def decrypt(key: bytes, data: bytes) -> bytes:
    """Open a §4 envelope; DecodeError when it is short, empty or fails authentication."""
    return open_envelope(key, data)


def seal(encryption_key: bytes, iv: bytes, packet: Psk2Packet) -> bytes:
    """Encode ``packet`` and encrypt it: the bytes that go into ILP ``data``."""
    return encrypt(encryption_key, iv, encode_packet(packet))


def decode_any(encryption_key: bytes, data: bytes) -> Psk2Packet:
    """Decrypt ILP ``data`` and decode the packet of whichever draft it holds."""
    return decode_plaintext(decrypt(encryption_key, data))


def fulfillment_for(fulfillment_key: bytes, encrypted_data: bytes) -> bytes:
    """§6: ``HMAC-SHA256(fulfillmentKey, encryptedData)`` over the data as sent."""
    return hmac_sha256(fulfillment_key, encrypted_data)


def condition_for(fulfillment: bytes) -> bytes:
    """§6: ``condition = SHA-256(fulfillment)``."""
    return sha256(fulfillment)


def condition_matches(fulfillment: bytes, condition: bytes) -> bool:
    """Whether SHA-256(fulfillment) equals ``condition`` (constant time)."""
    return constant_time_equal(sha256(fulfillment), condition)
