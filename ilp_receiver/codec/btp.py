"""BTP/2.0 frames: the Bilateral Transfer Protocol (spec ``03-btp.md``).

Implements the packet layout of interledger/rfcs 0023 "BTP/2.0" (drafts 4..8) exactly as
btp-packet 1.2.1 / 2.2.0 writes it, plus the helpers ilp-plugin-btp 1.1.10 uses around
it (BTP auth, ILP over BTP, error frames)::

    UInt8             type
    UInt32            requestId
    var-octet-string  payload  = <type-specific fields> protocolData

``protocolData`` is a count followed by entries ``(name: ASCII var-octets,
contentType: UInt8, data: var-octets)``.  The count is written like a VarUInt
(``01 00`` for zero entries); like btp-packet's reader we also accept a bare ``00``.

Decoding choices (all documented in the spec or the RFC 30 extensibility rule):

* Types 1, 2, 6, 7 are BTP/2.0 frames.  Types 3, 4, 5 (BTP/1.x Prepare, Fulfill,
  Reject, "unused in 2.0") decode into :class:`BtpLegacyFrame` holding the raw payload,
  so a session can answer them with an Error instead of dropping the socket.  Any other
  type byte is a :class:`~ilp_receiver.errors.DecodeError`.
* Bytes after the protocol data inside the payload, and bytes after the payload, are
  ignored (btp-packet never checks either); writers always write exact lengths.
* Protocol names, error codes and error names must be ASCII; ``triggeredAt`` must be a
  GeneralizedTime ``YYYYMMDDHHMMSS.fffZ`` (we also accept 0..9 fraction digits when
  reading; see :func:`parse_generalized_time`).

The hot path (a Message carrying one ``ilp`` entry in, a Response carrying one out) is
a hand-inlined parser over ``bytes`` with precompiled structs and a precomputed entry
header; :func:`encode_ilp_response` / :func:`encode_ilp_message` skip building frames.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import ClassVar, Final

from ..errors import DecodeError, EncodeError, RemoteProtocolError
from .oer import MAX_LENGTH_BYTES, MAX_UINT32, encode_length_prefix, encode_var_uint

__all__ = [
    "AUTH_PROTOCOL",
    "AUTH_TOKEN_PROTOCOL",
    "AUTH_USERNAME_PROTOCOL",
    "BTP_ERROR_NAMES",
    "ILP_PLUGIN_BTP_ERROR_CODES",
    "ILP_PROTOCOL",
    "MAX_BTP_MESSAGE_SIZE",
    "MAX_PROTOCOL_DATA_ENTRIES",
    "MAX_PROTOCOL_NAME_LENGTH",
    "BtpError",
    "BtpErrorCode",
    "BtpFrame",
    "BtpLegacyFrame",
    "BtpMessage",
    "BtpResponse",
    "BtpTransfer",
    "BtpType",
    "ContentType",
    "ProtocolData",
    "auth_error_frame",
    "auth_message",
    "decode_btp",
    "encode_btp",
    "encode_ilp_message",
    "encode_ilp_response",
    "error_frame",
    "error_message",
    "find_protocol_data",
    "format_generalized_time",
    "ilp_message",
    "ilp_response",
    "parse_auth",
    "parse_generalized_time",
]


class BtpType(IntEnum):
    """BTP packet type numbers ("Type numbers" table of ``03-btp.md``)."""

    RESPONSE = 1
    ERROR = 2
    PREPARE = 3  # BTP/1.x only
    FULFILL = 4  # BTP/1.x only
    REJECT = 5  # BTP/1.x only
    MESSAGE = 6
    TRANSFER = 7


class ContentType(IntEnum):
    """Protocol-data content types; advisory only (any UInt8 is carried as is)."""

    OCTET_STREAM = 0
    TEXT_PLAIN_UTF8 = 1
    APPLICATION_JSON = 2


class BtpErrorCode(StrEnum):
    """BTP Error codes as RFC 23 numbers them (open question 15: emit RFC codes).

    ilp-plugin-btp uses the same names shifted one lower from F02 on; see
    :data:`ILP_PLUGIN_BTP_ERROR_CODES`.  Readers accept any 3-character code.
    """

    UNREACHABLE = "T00"
    NOT_ACCEPTED = "F00"
    INVALID_FIELDS = "F01"
    TRANSFER_NOT_FOUND = "F03"
    INVALID_FULFILLMENT = "F04"
    DUPLICATE_ID = "F05"
    ALREADY_ROLLED_BACK = "F06"
    ALREADY_FULFILLED = "F07"
    INSUFFICIENT_BALANCE = "F08"


#: RFC 23 error names by code.
BTP_ERROR_NAMES: Final[dict[str, str]] = {
    BtpErrorCode.UNREACHABLE: "UnreachableError",
    BtpErrorCode.NOT_ACCEPTED: "NotAcceptedError",
    BtpErrorCode.INVALID_FIELDS: "InvalidFieldsError",
    BtpErrorCode.TRANSFER_NOT_FOUND: "TransferNotFoundError",
    BtpErrorCode.INVALID_FULFILLMENT: "InvalidFulfillmentError",
    BtpErrorCode.DUPLICATE_ID: "DuplicateIdError",
    BtpErrorCode.ALREADY_ROLLED_BACK: "AlreadyRolledBackError",
    BtpErrorCode.ALREADY_FULFILLED: "AlreadyFulfilledError",
    BtpErrorCode.INSUFFICIENT_BALANCE: "InsufficientBalanceError",
}

#: ilp-plugin-btp 1.1.10's name -> code table ("shifted by one relative to the RFC's
#: table"), for interpreting errors from JS peers.  Never used when writing.
ILP_PLUGIN_BTP_ERROR_CODES: Final[dict[str, str]] = {
    "UnreachableError": "T00",
    "NotAcceptedError": "F00",
    "InvalidFieldsError": "F01",
    "TransferNotFoundError": "F02",
    "InvalidFulfillmentError": "F03",
    "DuplicateIdError": "F04",
    "AlreadyRolledBackError": "F05",
    "AlreadyFulfilledError": "F06",
    "InsufficientBalanceError": "F07",
}

#: "The name ``ilp`` is reserved for ILP packets."
ILP_PROTOCOL: Final = "ilp"
AUTH_PROTOCOL: Final = "auth"
AUTH_USERNAME_PROTOCOL: Final = "auth_username"
AUTH_TOKEN_PROTOCOL: Final = "auth_token"  # noqa: S105 (a protocol name)


@dataclass(frozen=True, slots=True)
class ProtocolData:
    """One protocolData entry: sub-protocol name (ASCII), content type, raw data."""

    protocol_name: str
    content_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BtpMessage:
    """A BTP Message (type 6): a request carrying only protocol data."""

    TYPE: ClassVar[BtpType] = BtpType.MESSAGE
    request_id: int
    protocol_data: tuple[ProtocolData, ...] = ()


@dataclass(frozen=True, slots=True)
class BtpResponse:
    """A BTP Response (type 1): the success answer to a Message or Transfer."""

    TYPE: ClassVar[BtpType] = BtpType.RESPONSE
    request_id: int
    protocol_data: tuple[ProtocolData, ...] = ()


@dataclass(frozen=True, slots=True)
class BtpTransfer:
    """A BTP Transfer (type 7): ``amount`` (UInt64, agreed unit) plus settlement data."""

    TYPE: ClassVar[BtpType] = BtpType.TRANSFER
    request_id: int
    amount: int
    protocol_data: tuple[ProtocolData, ...] = ()


@dataclass(frozen=True, slots=True)
class BtpError:
    """A BTP Error (type 2): the failure answer to a Message or Transfer.

    ``code`` is 3 ASCII characters, ``name`` ASCII, ``triggered_at`` a tz-aware time
    (written with millisecond precision), ``data`` the raw (normally UTF-8) bytes.
    """

    TYPE: ClassVar[BtpType] = BtpType.ERROR
    request_id: int
    code: str
    name: str
    triggered_at: datetime
    data: bytes = b""
    protocol_data: tuple[ProtocolData, ...] = ()


@dataclass(frozen=True, slots=True)
class BtpLegacyFrame:
    """A BTP/1.x Prepare (3), Fulfill (4) or Reject (5): not parsed further.

    ``payload`` is the raw content of the envelope; encoding writes it back unchanged.
    BTP/2.0 peers never send these; a session should answer with an Error.
    """

    type: BtpType
    request_id: int
    payload: bytes


#: Every frame :func:`decode_btp` can return.
BtpFrame = BtpMessage | BtpResponse | BtpTransfer | BtpError | BtpLegacyFrame

# --------------------------------------------------------------------------- time

_GENERALIZED_TIME_RE: Final = re.compile(
    rb"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})(?:\.([0-9]{1,9}))?Z"
)


def format_generalized_time(dt: datetime) -> str:
    """``YYYYMMDDHHMMSS.fffZ`` in UTC, milliseconds truncated (as JS ``Date`` holds them).

    ``dt`` must be timezone-aware (EncodeError otherwise).
    """
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise EncodeError(f"triggeredAt must be a timezone-aware datetime, got {dt!r}")
    try:
        u = dt.astimezone(UTC)
    except OverflowError:
        raise EncodeError(f"triggeredAt out of range: {dt!r}") from None
    return (
        f"{u.year:04d}{u.month:02d}{u.day:02d}{u.hour:02d}{u.minute:02d}{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


def parse_generalized_time(value: str | bytes, offset: int = 0) -> datetime:
    """Parse a GeneralizedTime into a UTC datetime.

    The reference reader uses ``^(\\d{4})(\\d{2})(\\d{2})(\\d{2})(\\d{2})(\\d{2}\\.\\d{3}Z)$``.
    We accept that form and, leniently, 0..9 fraction digits (truncated to
    microseconds); anything else raises DecodeError at ``offset``.
    """
    raw = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    m = _GENERALIZED_TIME_RE.fullmatch(raw)
    if m is None:
        raise DecodeError(f"invalid GeneralizedTime {raw[:40]!r}", offset)
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7) or b""
    micro = int((fraction + b"000000")[:6])
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        raise DecodeError(f"invalid GeneralizedTime {raw!r}", offset) from None


# ------------------------------------------------------------------------ decoding

_HEADER: Final = struct.Struct(">BI")
_U64: Final = struct.Struct(">Q")
#: The most bytes a protocol-data count may use (btp-packet reads ``n`` then an n-byte
#: integer; oer-utils limits integers to 6 bytes, we allow 8 like VarUInt).
_MAX_COUNT_BYTES: Final = 8
#: Smallest possible protocol-data entry: empty name, content type, empty data.
_MIN_ENTRY_SIZE: Final = 3
#: Most protocol-data entries one frame may carry.  BTP/2.0 names no limit; real frames
#: carry one to four (``ilp``; ``auth``, ``auth_username``, ``auth_token``; a settlement
#: entry).  Refused before any entry is built, so a frame cannot make us allocate per
#: entry beyond this.
MAX_PROTOCOL_DATA_ENTRIES: Final = 64
#: Longest protocol name (ASCII) accepted; ``ilp``, ``auth_token``, ``peer.settle``...
MAX_PROTOCOL_NAME_LENGTH: Final = 128
#: Largest BTP message (one WebSocket message) a link reads.  The largest ILP packet is
#: a Reject with a 1023-byte triggeredBy, an 8191-byte message and 32767 bytes of data:
#: 41,997 bytes; inside a BTP Message with its ``ilp`` entry that is 42,015 bytes.  64 KiB
#: leaves about 23 KB for other protocol-data entries.  The WebSocket layer refuses a
#: bigger message from its frame header, before reading (and before authentication).
MAX_BTP_MESSAGE_SIZE: Final = 65536


def _read_length(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A canonical OER length determinant at ``pos``; returns (length, next pos)."""
    if pos >= end:
        raise DecodeError(f"{what}: missing length prefix", pos)
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0:
        raise DecodeError(f"{what}: long-form length with zero length bytes", pos)
    if size > MAX_LENGTH_BYTES:
        raise DecodeError(f"{what}: length prefix of {size} bytes is too large", pos)
    if end - pos - 1 < size:
        raise DecodeError(f"{what}: truncated length prefix", pos)
    length = int.from_bytes(buf[pos + 1 : pos + 1 + size], "big")
    if length < 128:
        raise DecodeError(f"{what}: length {length} must use the short form", pos)
    if size > 1 and length < 1 << (8 * (size - 1)):
        raise DecodeError(f"{what}: length prefix is not minimal", pos)
    return length, pos + 1 + size


def _read_var(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """A var-octet-string at ``pos``; returns (content, next pos)."""
    if pos < end and buf[pos] < 0x80:
        length = buf[pos]
        start = pos + 1
    else:
        length, start = _read_length(buf, pos, end, what)
    stop = start + length
    if stop > end:
        raise DecodeError(f"{what}: needs {length} bytes, {end - start} left", pos)
    return buf[start:stop], stop


def _read_ascii(buf: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    raw, nxt = _read_var(buf, pos, end, what)
    try:
        return raw.decode("ascii"), nxt
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: not ASCII", pos) from None


def _read_protocol_data(buf: bytes, pos: int, end: int) -> tuple[ProtocolData, ...]:
    """The protocolData list occupying ``buf[pos:end]`` (trailing bytes ignored)."""
    if pos >= end:
        raise DecodeError("protocolData: missing count", pos)
    size = buf[pos]
    if size > _MAX_COUNT_BYTES:
        raise DecodeError(f"protocolData: count of {size} bytes is too large", pos)
    if end - pos - 1 < size:
        raise DecodeError("protocolData: truncated count", pos)
    count = int.from_bytes(buf[pos + 1 : pos + 1 + size], "big")
    pos += 1 + size
    if count * _MIN_ENTRY_SIZE > end - pos:
        raise DecodeError(f"protocolData: {count} entries cannot fit in {end - pos} bytes", pos)
    if count > MAX_PROTOCOL_DATA_ENTRIES:
        raise DecodeError(
            f"protocolData: {count} entries, more than the {MAX_PROTOCOL_DATA_ENTRIES} allowed",
            pos,
        )
    entries = []
    for _ in range(count):
        at = pos
        name, pos = _read_ascii(buf, pos, end, "protocolName")
        if len(name) > MAX_PROTOCOL_NAME_LENGTH:
            raise DecodeError(
                f"protocolName: {len(name)} bytes, more than the {MAX_PROTOCOL_NAME_LENGTH} "
                "allowed",
                at,
            )
        if pos >= end:
            raise DecodeError("protocolData: missing contentType", pos)
        content_type = buf[pos]
        data, pos = _read_var(buf, pos + 1, end, "protocolData data")
        entries.append(ProtocolData(name, content_type, data))
    return tuple(entries)


# Slot setters: building frozen dataclasses without their (slow) generated __init__.
_new: Final = object.__new__
_pd_name: Final = ProtocolData.__dict__["protocol_name"].__set__
_pd_content_type: Final = ProtocolData.__dict__["content_type"].__set__
_pd_data: Final = ProtocolData.__dict__["data"].__set__
_msg_request_id: Final = BtpMessage.__dict__["request_id"].__set__
_msg_protocol_data: Final = BtpMessage.__dict__["protocol_data"].__set__
_resp_request_id: Final = BtpResponse.__dict__["request_id"].__set__
_resp_protocol_data: Final = BtpResponse.__dict__["protocol_data"].__set__
#: count=1, name "ilp", content type 0 -- everything before the ILP packet's prefix.
_ILP_ENTRY_HEAD: Final = b"\x01\x01\x03ilp\x00"


def _ilp_entry(buf: bytes, pos: int, end: int) -> tuple[ProtocolData, ...] | None:
    """Hot path: the payload is exactly one entry ``ilp``, content type 0 (ILP over
    BTP).  Returns None for any other shape (the generic reader then handles it).
    """
    if not buf.startswith(_ILP_ENTRY_HEAD, pos) or pos + 7 >= end:
        return None
    data_len = buf[pos + 7]
    start = pos + 8
    if data_len >= 0x80:
        data_len, start = _read_length(buf, pos + 7, end, "protocolData data")
    stop = start + data_len
    if stop > end:
        raise DecodeError(f"protocolData data: needs {data_len} bytes, {end - start} left", pos + 7)
    entry = _new(ProtocolData)
    _pd_name(entry, ILP_PROTOCOL)
    _pd_content_type(entry, 0)
    _pd_data(entry, buf[start:stop])
    return (entry,)


def decode_btp(data: bytes | bytearray | memoryview) -> BtpFrame:
    """Decode one BTP packet (one WebSocket binary message).

    Raises :class:`~ilp_receiver.errors.DecodeError` on anything malformed.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    n = len(buf)
    if n < 6:
        raise DecodeError(f"BTP packet too short: {n} bytes", n)
    type_, request_id = _HEADER.unpack_from(buf)
    first = buf[5]
    if first < 0x80:
        length = first
        pos = 6
    else:
        length, pos = _read_length(buf, 5, n, "BTP payload")
    end = pos + length
    if end > n:
        raise DecodeError(f"BTP payload: needs {length} bytes, {n - pos} left", 5)

    if type_ == 6 or type_ == 1:  # Message / Response
        entries = _ilp_entry(buf, pos, end)
        if entries is None:
            entries = _read_protocol_data(buf, pos, end)
        if type_ == 6:
            message = _new(BtpMessage)
            _msg_request_id(message, request_id)
            _msg_protocol_data(message, entries)
            return message
        response = _new(BtpResponse)
        _resp_request_id(response, request_id)
        _resp_protocol_data(response, entries)
        return response
    if type_ == 7:  # BtpType.TRANSFER
        if end - pos < 8:
            raise DecodeError("Transfer amount: needs 8 bytes", pos)
        (amount,) = _U64.unpack_from(buf, pos)
        return BtpTransfer(request_id, amount, _read_protocol_data(buf, pos + 8, end))
    if type_ == 2:  # BtpType.ERROR
        if end - pos < 3:
            raise DecodeError("Error code: needs 3 bytes", pos)
        try:
            code = buf[pos : pos + 3].decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("Error code: not ASCII", pos) from None
        name, pos = _read_ascii(buf, pos + 3, end, "Error name")
        at = pos
        raw_time, pos = _read_var(buf, pos, end, "Error triggeredAt")
        triggered_at = parse_generalized_time(raw_time, at)
        err_data, pos = _read_var(buf, pos, end, "Error data")
        return BtpError(
            request_id, code, name, triggered_at, err_data, _read_protocol_data(buf, pos, end)
        )
    if 3 <= type_ <= 5:
        return BtpLegacyFrame(BtpType(type_), request_id, buf[pos:end])
    raise DecodeError(f"unknown BTP packet type {type_}", 0)


# ------------------------------------------------------------------------ encoding

_SMALL: Final = tuple(bytes((i,)) for i in range(256))
_COUNT_ZERO: Final = b"\x01\x00"
_COUNT_ONE: Final = b"\x01\x01"


def _check_request_id(request_id: int) -> int:
    if type(request_id) is not int or not 0 <= request_id <= MAX_UINT32:
        raise EncodeError(f"requestId must be an integer in 0..{MAX_UINT32}, got {request_id!r}")
    return request_id


def _encode_ascii(value: str, what: str) -> bytes:
    try:
        return value.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise EncodeError(f"{what} must be an ASCII string, got {value!r}") from None


def _octets(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EncodeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _var(raw: bytes) -> bytes:
    n = len(raw)
    return (_SMALL[n] if n < 128 else encode_length_prefix(n)) + raw


def _encode_protocol_data(entries: tuple[ProtocolData, ...]) -> bytes:
    n = len(entries)
    if n == 0:
        return _COUNT_ZERO
    parts = [_COUNT_ONE if n == 1 else encode_var_uint(n)]
    for entry in entries:
        ct = entry.content_type
        if not isinstance(ct, int) or not 0 <= ct <= 0xFF:
            raise EncodeError(f"contentType must be a UInt8, got {ct!r}")
        parts.append(_var(_encode_ascii(entry.protocol_name, "protocolName")))
        parts.append(_SMALL[ct])
        parts.append(_var(_octets(entry.data, "protocolData data")))
    return b"".join(parts)


def _envelope(type_: int, request_id: int, payload: bytes) -> bytes:
    return _HEADER.pack(type_, _check_request_id(request_id)) + _var(payload)


def encode_btp(frame: BtpFrame) -> bytes:
    """Encode a frame as one BTP packet; EncodeError on out-of-range values."""
    if isinstance(frame, BtpMessage | BtpResponse):
        payload = _encode_protocol_data(frame.protocol_data)
    elif isinstance(frame, BtpTransfer):
        amount = frame.amount
        if type(amount) is not int or not 0 <= amount <= 0xFFFF_FFFF_FFFF_FFFF:
            raise EncodeError(f"Transfer amount must be a UInt64, got {amount!r}")
        payload = _U64.pack(amount) + _encode_protocol_data(frame.protocol_data)
    elif isinstance(frame, BtpError):
        code = _encode_ascii(frame.code, "Error code")
        if len(code) != 3:
            raise EncodeError(f"error code must be 3 characters, got {frame.code!r}")
        payload = b"".join(
            (
                code,
                _var(_encode_ascii(frame.name, "Error name")),
                _var(format_generalized_time(frame.triggered_at).encode("ascii")),
                _var(_octets(frame.data, "Error data")),
                _encode_protocol_data(frame.protocol_data),
            )
        )
    elif isinstance(frame, BtpLegacyFrame):
        if frame.type not in (BtpType.PREPARE, BtpType.FULFILL, BtpType.REJECT):
            raise EncodeError(f"not a legacy BTP type: {frame.type!r}")
        payload = _octets(frame.payload, "legacy payload")
    else:
        raise EncodeError(f"not a BTP frame: {frame!r}")
    type_ = frame.type if isinstance(frame, BtpLegacyFrame) else frame.TYPE
    return _envelope(type_, frame.request_id, payload)


def _encode_ilp_frame(type_: int, request_id: int, ilp_packet: bytes) -> bytes:
    n = len(ilp_packet)
    data_prefix = _SMALL[n] if n < 128 else encode_length_prefix(n)
    payload_len = len(_ILP_ENTRY_HEAD) + len(data_prefix) + n
    payload_prefix = _SMALL[payload_len] if payload_len < 128 else encode_length_prefix(payload_len)
    return b"".join(
        (
            _HEADER.pack(type_, _check_request_id(request_id)),
            payload_prefix,
            _ILP_ENTRY_HEAD,
            data_prefix,
            ilp_packet,
        )
    )


def encode_ilp_message(request_id: int, ilp_packet: bytes) -> bytes:
    """Fast path: ``encode_btp(ilp_message(request_id, ilp_packet))``."""
    return _encode_ilp_frame(BtpType.MESSAGE, request_id, _octets(ilp_packet, "ILP packet"))


def encode_ilp_response(request_id: int, ilp_packet: bytes) -> bytes:
    """Fast path: ``encode_btp(ilp_response(request_id, ilp_packet))``."""
    return _encode_ilp_frame(BtpType.RESPONSE, request_id, _octets(ilp_packet, "ILP packet"))


# ------------------------------------------------------------------------- helpers


def find_protocol_data(frame: BtpFrame, name: str) -> ProtocolData | None:
    """The first protocolData entry called ``name``, or None (also for legacy frames)."""
    if isinstance(frame, BtpLegacyFrame):
        return None
    for entry in frame.protocol_data:
        if entry.protocol_name == name:
            return entry
    return None


def ilp_message(request_id: int, ilp_packet: bytes) -> BtpMessage:
    """ "An ILP Prepare is sent as a Message whose primary (normally only) entry is
    ``{name: "ilp", contentType: 0, data: <OER ILP packet>}``."
    """
    return BtpMessage(
        request_id, (ProtocolData(ILP_PROTOCOL, ContentType.OCTET_STREAM, ilp_packet),)
    )


def ilp_response(request_id: int, ilp_packet: bytes) -> BtpResponse:
    """ "The answer (Fulfill or Reject) comes back in a Response with the same requestId
    and the same single ``ilp`` entry."
    """
    return BtpResponse(
        request_id, (ProtocolData(ILP_PROTOCOL, ContentType.OCTET_STREAM, ilp_packet),)
    )


def auth_message(request_id: int, token: str, username: str | None = None) -> BtpMessage:
    """The BTP auth Message a client sends first on every connection.

    Entries in ilp-plugin-btp's order: ``auth`` (type 0, empty), ``auth_username``
    (type 1, only when ``username`` is not None; may be ``""``), ``auth_token`` (type 1).
    """
    entries = [ProtocolData(AUTH_PROTOCOL, ContentType.OCTET_STREAM, b"")]
    if username is not None:
        entries.append(
            ProtocolData(AUTH_USERNAME_PROTOCOL, ContentType.TEXT_PLAIN_UTF8, username.encode())
        )
    entries.append(ProtocolData(AUTH_TOKEN_PROTOCOL, ContentType.TEXT_PLAIN_UTF8, token.encode()))
    return BtpMessage(request_id, tuple(entries))


_TEXT_TYPES: Final = (ContentType.OCTET_STREAM, ContentType.TEXT_PLAIN_UTF8)


def _auth_text(entry: ProtocolData) -> str:
    # Open question 17: "RFC says a UTF-8 entry (type 1); some clients might send
    # type 0. Servers compare bytes; accept either."
    if entry.content_type not in _TEXT_TYPES:
        raise RemoteProtocolError(
            f"{entry.protocol_name} must have content type 0 or 1, got {entry.content_type}"
        )
    try:
        return entry.data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{entry.protocol_name} is not UTF-8") from None


def parse_auth(frame: BtpFrame) -> tuple[str | None, str]:
    """Check a BTP auth Message and return ``(username, token)``.

    ``username`` is None when ``auth_username`` is absent and may be ``""`` (treat both
    as "no username": PR 372's bearer-token case).  Raises
    :class:`~ilp_receiver.errors.RemoteProtocolError` if the frame is not a valid auth
    message: "The client's first message on a new connection MUST be a Message whose
    protocolData is: primary entry ``auth`` ...; an entry ``auth_token`` ...".
    Secondary entries other than the auth ones are ignored; duplicate names are
    refused ("protocol violations (e.g. duplicate sub-protocol names)").
    """
    if not isinstance(frame, BtpMessage):
        raise RemoteProtocolError("first message on a BTP connection must be an auth Message")
    entries = frame.protocol_data
    if not entries or entries[0].protocol_name != AUTH_PROTOCOL:
        raise RemoteProtocolError("first sub-protocol of a BTP auth message must be 'auth'")
    names = [e.protocol_name for e in entries]
    if len(set(names)) != len(names):
        raise RemoteProtocolError("duplicate sub-protocol names in BTP auth message")
    token: str | None = None
    username: str | None = None
    for entry in entries[1:]:
        if entry.protocol_name == AUTH_TOKEN_PROTOCOL:
            token = _auth_text(entry)
        elif entry.protocol_name == AUTH_USERNAME_PROTOCOL:
            username = _auth_text(entry)
    if token is None:
        raise RemoteProtocolError("auth_token sub-protocol is required")
    return username, token


def error_frame(
    request_id: int, code: str, name: str, triggered_at: datetime, message: str
) -> BtpError:
    """An Error the way ilp-plugin-btp reports a failed request:
    ``data = JSON {"message": ...}`` (``JSON.stringify`` spacing), no protocol data.
    """
    data = json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False)
    return BtpError(request_id, str(code), name, triggered_at, data.encode("utf-8"))


def auth_error_frame(request_id: int, triggered_at: datetime, reason: str) -> BtpError:
    """The Error a server sends before closing on failed auth (ilp-plugin-btp shape):
    ``F00 NotAcceptedError`` with the plain reason text as data.
    """
    return BtpError(
        request_id,
        BtpErrorCode.NOT_ACCEPTED.value,
        BTP_ERROR_NAMES[BtpErrorCode.NOT_ACCEPTED],
        triggered_at,
        reason.encode("utf-8"),
    )


def error_message(frame: BtpError) -> str:
    """Human text of an Error: the ``message`` of a JSON ``{"message": ...}`` body when
    there is one (ilp-plugin-btp), otherwise the data as UTF-8 (invalid bytes replaced).
    """
    text = frame.data.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return str(parsed["message"])
    return text
