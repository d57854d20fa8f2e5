"""STREAM packets and frames, plaintext only (spec ``12-stream.md`` §5-§7; RFC 29).

The wire format as npm ilp-protocol-stream 2.7.1 (on oer-utils 5.1.2) writes and reads
it, which is what senders in the field talk to:

* §5 the packet: ``version`` UInt8 (1), ``ilpPacketType`` UInt8 (12/13/14),
  ``sequence`` VarUInt, ``prepareAmount`` VarUInt, frame count VarUInt, the frames,
  then junk (padding) that is never read;
* §6 the 15 frames, each ``type (UInt8) || var-octet-string(contents)``;
* §7 the STREAM error codes carried by ConnectionClose / StreamClose.

Encryption, key derivation, conditions and the server's tokens are in
:mod:`ilp_receiver.stream.secrets`; RFC 39 receipts in :mod:`ilp_receiver.stream.receipts`.

Reader behaviour, exactly as 2.7.1 (``packet_decoding_edge_cases`` in ``stream.json``):

* version != 1 is an error ("Unsupported protocol version");
* ``ilpPacketType`` and error codes are any UInt8 (2.7.1 does not check them here; the
  receiver compares the packet type with the carrying ILP packet, §9 step 2);
* bytes after the last frame are never read, zero or not;
* a frame of unknown type is skipped by its length prefix; extra bytes at the end of a
  known frame's contents are ignored;
* VarUInts: length 0 is an error, up to 8 content bytes are accepted, leading zero bytes
  too; 9 or more bytes is an error except ``receiveMax`` (StreamMaxMoney) and
  ``sendMax`` (StreamMoneyBlocked), which saturate to 2**64-1 (RFC 29 §5.1.4);
* length prefixes must be canonical (``81 01`` is refused), at most 6 length bytes;
* the frame count is read like oer-utils' ``readVarUIntNumber``: a one-byte length of
  1..6 then that many bytes (leading zeros allowed);  a count larger than the frames
  present is an error.  A count that cannot fit in the remaining bytes (every frame
  takes at least 2) is refused before any list is built.

Strings (addresses, messages, the asset code) are UTF-8.  Node decodes invalid UTF-8
lossily (U+FFFD); here it is a :class:`~ilp_receiver.errors.DecodeError` instead, so
every decoded packet re-encodes to what was read (2.7.1 never writes invalid UTF-8: its
strings come from JS strings).  Decoders raise only DecodeError, on any input.

Writers produce what 2.7.1 writes (minimal VarUInts, canonical length prefixes, no
padding) and refuse values the wire cannot carry with
:class:`~ilp_receiver.errors.EncodeError`: VarUInts outside 0..2**64-1, UInt8 fields
outside 0..255, strings that are not encodable as UTF-8, frames of a foreign type.

Speed: this is the receiver's per-packet path, so decoding walks one ``bytes`` object
with integer positions (no Reader objects, no per-byte loops), builds frozen
dataclasses through their slot setters, and encoding uses cached short encodings.
Pure functions only: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final

from ..crypto import ENVELOPE_OVERHEAD
from ..errors import DecodeError, EncodeError
from .ilp import MAX_DATA_LENGTH, IlpPacketType
from .oer import MAX_LENGTH_BYTES, MAX_UINT64, encode_length_prefix

__all__ = [
    "ILP_FULFILL",
    "ILP_PREPARE",
    "ILP_REJECT",
    "MAX_DATA_LENGTH",
    "MAX_FRAME_COUNT_BYTES",
    "MAX_PLAINTEXT_LENGTH",
    "MAX_UINT64",
    "MAX_VAR_UINT_BYTES",
    "STREAM_VERSION",
    "ConnectionAssetDetails",
    "ConnectionClose",
    "ConnectionDataBlocked",
    "ConnectionMaxData",
    "ConnectionMaxStreamId",
    "ConnectionNewAddress",
    "ConnectionStreamIdBlocked",
    "ErrorCode",
    "Frame",
    "FrameType",
    "StreamClose",
    "StreamData",
    "StreamDataBlocked",
    "StreamMaxData",
    "StreamMaxMoney",
    "StreamMoney",
    "StreamMoneyBlocked",
    "StreamPacket",
    "StreamReceipt",
    "decode_frame",
    "decode_stream_packet",
    "encode_frame",
    "encode_stream_packet",
    "frame_class",
]

#: §5 field 1: "version | UInt8 | 1".
STREAM_VERSION: Final = 1
#: §5 field 2: "ILP packet this must ride in: 12 Prepare, 13 Fulfill, 14 Reject".
ILP_PREPARE: Final = IlpPacketType.PREPARE
ILP_FULFILL: Final = IlpPacketType.FULFILL
ILP_REJECT: Final = IlpPacketType.REJECT
#: §4: "IV (12) || auth tag (16) || ciphertext (0..32739)" -- ILP data is at most 32767.
MAX_PLAINTEXT_LENGTH: Final = MAX_DATA_LENGTH - ENVELOPE_OVERHEAD
#: §5: "up to 8 content bytes accepted ... 9+ bytes is an error".
MAX_VAR_UINT_BYTES: Final = 8
#: The frame count is read with oer-utils' ``readVarUIntNumber``: at most 6 bytes.
MAX_FRAME_COUNT_BYTES: Final = 6


class FrameType(IntEnum):
    """§6 frame type bytes (names as in 2.7.1's ``FrameType``)."""

    CONNECTION_CLOSE = 0x01
    CONNECTION_NEW_ADDRESS = 0x02
    CONNECTION_MAX_DATA = 0x03
    CONNECTION_DATA_BLOCKED = 0x04
    CONNECTION_MAX_STREAM_ID = 0x05
    CONNECTION_STREAM_ID_BLOCKED = 0x06
    CONNECTION_ASSET_DETAILS = 0x07
    STREAM_CLOSE = 0x10
    STREAM_MONEY = 0x11
    STREAM_MAX_MONEY = 0x12
    STREAM_MONEY_BLOCKED = 0x13
    STREAM_DATA = 0x14
    STREAM_MAX_DATA = 0x15
    STREAM_DATA_BLOCKED = 0x16
    STREAM_RECEIPT = 0x17


class ErrorCode(IntEnum):
    """§7 STREAM error codes (ConnectionClose / StreamClose), not ILP reject codes."""

    NO_ERROR = 0x01
    INTERNAL_ERROR = 0x02
    ENDPOINT_BUSY = 0x03
    FLOW_CONTROL_ERROR = 0x04
    STREAM_ID_ERROR = 0x05
    STREAM_STATE_ERROR = 0x06
    FRAME_FORMAT_ERROR = 0x07
    PROTOCOL_VIOLATION = 0x08
    APPLICATION_ERROR = 0x09


# ------------------------------------------------------------------------------ frames


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    """0x01: closes the connection (§6, §12). ``error_code`` is a §7 code (any UInt8)."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_CLOSE
    error_code: int
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionNewAddress:
    """0x02: the frame sender's (new) ILP address."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_NEW_ADDRESS
    source_account: str


@dataclass(frozen=True, slots=True)
class ConnectionMaxData:
    """0x03: total bytes (all streams) the frame sender will accept."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_MAX_DATA
    max_offset: int


@dataclass(frozen=True, slots=True)
class ConnectionDataBlocked:
    """0x04: total bytes the frame sender wants to send."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_DATA_BLOCKED
    max_offset: int


@dataclass(frozen=True, slots=True)
class ConnectionMaxStreamId:
    """0x05: highest stream id the frame sender accepts."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_MAX_STREAM_ID
    max_stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionStreamIdBlocked:
    """0x06: highest stream id the frame sender wants to open."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_STREAM_ID_BLOCKED
    max_stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionAssetDetails:
    """0x07: the frame sender's asset (code, scale UInt8); must not change."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CONNECTION_ASSET_DETAILS
    source_asset_code: str
    source_asset_scale: int


@dataclass(frozen=True, slots=True)
class StreamClose:
    """0x10: closes one stream with a §7 code and message."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_CLOSE
    stream_id: int
    error_code: int
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class StreamMoney:
    """0x11: this stream's share of the Prepare amount (§6 "Shares")."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_MONEY
    stream_id: int
    shares: int


@dataclass(frozen=True, slots=True)
class StreamMaxMoney:
    """0x12: receive limit and total so far, in the frame sender's units.

    A ``receive_max`` wider than 8 bytes decodes as 2**64-1 (RFC 29 §5.1.4).
    """

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_MAX_MONEY
    stream_id: int
    receive_max: int
    total_received: int


@dataclass(frozen=True, slots=True)
class StreamMoneyBlocked:
    """0x13: the sender wants to send more than allowed (``send_max`` saturates)."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_MONEY_BLOCKED
    stream_id: int
    send_max: int
    total_sent: int


@dataclass(frozen=True, slots=True)
class StreamData:
    """0x14: bytes at ``offset`` of the stream."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_DATA
    stream_id: int
    offset: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class StreamMaxData:
    """0x15: bytes this stream will accept, counted from the stream start."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_MAX_DATA
    stream_id: int
    max_offset: int


@dataclass(frozen=True, slots=True)
class StreamDataBlocked:
    """0x16: bytes the sender wants to send on this stream."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_DATA_BLOCKED
    stream_id: int
    max_offset: int


@dataclass(frozen=True, slots=True)
class StreamReceipt:
    """0x17: an RFC 39 receipt (§13) for this stream (opaque bytes here)."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STREAM_RECEIPT
    stream_id: int
    receipt: bytes


#: Any of the 15 frames.
Frame = (
    ConnectionClose
    | ConnectionNewAddress
    | ConnectionMaxData
    | ConnectionDataBlocked
    | ConnectionMaxStreamId
    | ConnectionStreamIdBlocked
    | ConnectionAssetDetails
    | StreamClose
    | StreamMoney
    | StreamMaxMoney
    | StreamMoneyBlocked
    | StreamData
    | StreamMaxData
    | StreamDataBlocked
    | StreamReceipt
)

_FRAME_CLASSES: Final[dict[int, type[Frame]]] = {
    cls.FRAME_TYPE: cls
    for cls in (
        ConnectionClose,
        ConnectionNewAddress,
        ConnectionMaxData,
        ConnectionDataBlocked,
        ConnectionMaxStreamId,
        ConnectionStreamIdBlocked,
        ConnectionAssetDetails,
        StreamClose,
        StreamMoney,
        StreamMaxMoney,
        StreamMoneyBlocked,
        StreamData,
        StreamMaxData,
        StreamDataBlocked,
        StreamReceipt,
    )
}


def frame_class(frame_type: int) -> type[Frame] | None:
    """The frame class for a type byte, or None for a type this module does not know."""
    return _FRAME_CLASSES.get(frame_type)


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """A decrypted STREAM packet (§5).

    ``sequence``: the sender's Prepare counter (a reply repeats the request's).
    ``ilp_packet_type``: 12/13/14, the ILP packet this must ride in (decoding accepts any
    UInt8, like 2.7.1; the receiver checks it).  ``prepare_amount``: in a Prepare the
    minimum the receiver may accept, in a reply the amount that arrived.  ``frames``:
    a tuple, in wire order (unknown frame types are not kept).
    """

    sequence: int
    ilp_packet_type: int
    prepare_amount: int = 0
    frames: tuple[Frame, ...] = ()


# ---------------------------------------------------------------------------- decoding

_new = object.__new__
_SHORT_PREFIXES: Final = tuple(bytes((n,)) for n in range(128))
#: Decoded ``ilpPacketType`` / error code bytes: the enum member when known, else int.
_PACKET_TYPES: Final[tuple[int, ...]] = tuple(
    IlpPacketType(n) if n in (12, 13, 14) else n for n in range(256)
)
_ERROR_CODES: Final[tuple[int, ...]] = tuple(ErrorCode(n) if 1 <= n <= 9 else n for n in range(256))


def _setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    """The slot descriptors' ``__set__`` of ``cls`` (bypasses the frozen ``__init__``)."""
    return tuple(cls.__dict__[name].__set__ for name in names)


def _underflow(what: str, needed: int, left: int, at: int) -> DecodeError:
    return DecodeError(f"{what}: needs {needed} bytes, {max(left, 0)} left", at)


def _read_length(buf: bytes, pos: int, stop: int, what: str) -> tuple[int, int]:
    """Canonical length determinant at ``pos``: (length, position after the prefix).

    As oer-utils 5.1.2 ``readLengthPrefix``: short form below 128; long form ``80|n``
    with 1..6 length bytes and a value that could not have been written shorter.
    """
    if pos >= stop:
        raise _underflow(f"{what} length", 1, 0, pos)
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0:
        raise DecodeError(f"{what}: length prefix 0x80 has no length bytes", pos)
    if size > MAX_LENGTH_BYTES:
        raise DecodeError(f"{what}: length prefix of {size} bytes is too large", pos)
    body = pos + 1
    if body + size > stop:
        raise _underflow(f"{what} length", size, stop - body, body)
    length = int.from_bytes(buf[body : body + size], "big")
    # oer-utils computes the minimum with a 32-bit JS shift, so with 5 or 6 length
    # bytes it accepts some non-minimal prefixes (``85 00000000 80``); no writer emits
    # them and we refuse them, as the canonical rule of §5 says.
    if length < 128 or length < 1 << (8 * (size - 1)):
        raise DecodeError(
            f"{what}: length prefix is not canonical: {length} encoded in {size} bytes", pos
        )
    return length, body + size


def _read_octets(buf: bytes, pos: int, stop: int, what: str) -> tuple[bytes, int]:
    """A var-octet-string inside ``[pos, stop)``: (bytes, position after it)."""
    if pos < stop and buf[pos] < 0x80:
        length = buf[pos]
        start = pos + 1
    else:
        length, start = _read_length(buf, pos, stop, what)
    end = start + length
    if end > stop:
        raise _underflow(what, length, stop - start, start)
    return buf[start:end], end


def _read_var_uint(buf: bytes, pos: int, stop: int, what: str) -> tuple[int, int]:
    """A VarUInt as oer-utils ``readVarUIntLong``: 1..8 content bytes, leading zeros OK."""
    if pos < stop:
        size = buf[pos]
        if size == 1:
            if pos + 2 <= stop:
                return buf[pos + 1], pos + 2
        elif 1 < size <= MAX_VAR_UINT_BYTES:
            end = pos + 1 + size
            if end <= stop:
                return int.from_bytes(buf[pos + 1 : end], "big"), end
        elif size == 0:
            raise DecodeError(f"{what}: UInt of length 0 is invalid", pos)
    # Underflow, a bad length prefix or more than 8 bytes: the precise error.
    raw, _ = _read_octets(buf, pos, stop, what)
    raise DecodeError(f"{what}: UInt of length {len(raw)} is too large", pos)


def _read_saturating(buf: bytes, pos: int, stop: int, what: str) -> tuple[int, int]:
    """2.7.1 ``saturatingReadVarUInt``: more than 8 content bytes reads as 2**64-1."""
    if pos < stop and 0 < buf[pos] <= MAX_VAR_UINT_BYTES:
        return _read_var_uint(buf, pos, stop, what)
    raw, end = _read_octets(buf, pos, stop, what)
    if not raw:
        raise DecodeError(f"{what}: UInt of length 0 is invalid", pos)
    # "receiveMax ... saturate[s] to 2^64-1 (RFC 29 §5.1.4)"
    return MAX_UINT64, end


def _read_uint8(buf: bytes, pos: int, stop: int, what: str) -> int:
    if pos >= stop:
        raise _underflow(what, 1, 0, pos)
    return buf[pos]


def _read_text(buf: bytes, pos: int, stop: int, what: str) -> tuple[str, int]:
    """A var-octet-string of UTF-8 (invalid UTF-8 is a DecodeError, see module doc)."""
    raw, end = _read_octets(buf, pos, stop, what)
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: not UTF-8", pos) from None


# One parser per frame type: (buffer, contents start, contents end) -> frame.  Reads
# never pass ``stop``; bytes left before ``stop`` are ignored ("extra bytes at the end
# of a known frame's contents are ignored", §5).

_set_cc = _setters(ConnectionClose, "error_code", "error_message")


def _parse_connection_close(buf: bytes, pos: int, stop: int) -> Frame:
    code = _read_uint8(buf, pos, stop, "ConnectionClose.errorCode")
    message, _ = _read_text(buf, pos + 1, stop, "ConnectionClose.errorMessage")
    frame = _new(ConnectionClose)
    _set_cc[0](frame, _ERROR_CODES[code])
    _set_cc[1](frame, message)
    return frame


_set_cna = _setters(ConnectionNewAddress, "source_account")[0]


def _parse_connection_new_address(buf: bytes, pos: int, stop: int) -> Frame:
    account, _ = _read_text(buf, pos, stop, "ConnectionNewAddress.sourceAccount")
    frame = _new(ConnectionNewAddress)
    _set_cna(frame, account)
    return frame


_set_cad = _setters(ConnectionAssetDetails, "source_asset_code", "source_asset_scale")


def _parse_connection_asset_details(buf: bytes, pos: int, stop: int) -> Frame:
    code, pos = _read_text(buf, pos, stop, "ConnectionAssetDetails.sourceAssetCode")
    scale = _read_uint8(buf, pos, stop, "ConnectionAssetDetails.sourceAssetScale")
    frame = _new(ConnectionAssetDetails)
    _set_cad[0](frame, code)
    _set_cad[1](frame, scale)
    return frame


def _camel(name: str) -> str:
    """``receive_max`` -> ``receiveMax`` (error messages use the wire names)."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _one_var_uint_parser(
    cls: type[Frame], field: str, what: str
) -> Callable[[bytes, int, int], Frame]:
    """Parser for the connection frames holding a single VarUInt."""
    (setter,) = _setters(cls, field)

    def parse(buf: bytes, pos: int, stop: int) -> Frame:
        value, _ = _read_var_uint(buf, pos, stop, what)
        frame: Frame = _new(cls)
        setter(frame, value)
        return frame

    return parse


def _two_var_uint_parser(
    cls: type[Frame], first: str, second: str, what: str
) -> Callable[[bytes, int, int], Frame]:
    """Parser for the stream frames holding ``streamId`` and one more VarUInt."""
    set_first, set_second = _setters(cls, first, second)
    what_first = f"{what}.streamId"
    what_second = f"{what}.{_camel(second)}"

    def parse(buf: bytes, pos: int, stop: int) -> Frame:
        value1, pos = _read_var_uint(buf, pos, stop, what_first)
        value2, _ = _read_var_uint(buf, pos, stop, what_second)
        frame: Frame = _new(cls)
        set_first(frame, value1)
        set_second(frame, value2)
        return frame

    return parse


def _three_var_uint_parser(
    cls: type[Frame], second: str, third: str, what: str
) -> Callable[[bytes, int, int], Frame]:
    """StreamMaxMoney / StreamMoneyBlocked: the middle field saturates."""
    setters = _setters(cls, "stream_id", second, third)
    whats = (f"{what}.streamId", f"{what}.{_camel(second)}", f"{what}.{_camel(third)}")

    def parse(buf: bytes, pos: int, stop: int) -> Frame:
        stream_id, pos = _read_var_uint(buf, pos, stop, whats[0])
        limit, pos = _read_saturating(buf, pos, stop, whats[1])
        total, _ = _read_var_uint(buf, pos, stop, whats[2])
        frame: Frame = _new(cls)
        setters[0](frame, stream_id)
        setters[1](frame, limit)
        setters[2](frame, total)
        return frame

    return parse


_set_sc = _setters(StreamClose, "stream_id", "error_code", "error_message")


def _parse_stream_close(buf: bytes, pos: int, stop: int) -> Frame:
    stream_id, pos = _read_var_uint(buf, pos, stop, "StreamClose.streamId")
    code = _read_uint8(buf, pos, stop, "StreamClose.errorCode")
    message, _ = _read_text(buf, pos + 1, stop, "StreamClose.errorMessage")
    frame = _new(StreamClose)
    _set_sc[0](frame, stream_id)
    _set_sc[1](frame, _ERROR_CODES[code])
    _set_sc[2](frame, message)
    return frame


_set_sd = _setters(StreamData, "stream_id", "offset", "data")


def _parse_stream_data(buf: bytes, pos: int, stop: int) -> Frame:
    stream_id, pos = _read_var_uint(buf, pos, stop, "StreamData.streamId")
    offset, pos = _read_var_uint(buf, pos, stop, "StreamData.offset")
    data, _ = _read_octets(buf, pos, stop, "StreamData.data")
    frame = _new(StreamData)
    _set_sd[0](frame, stream_id)
    _set_sd[1](frame, offset)
    _set_sd[2](frame, data)
    return frame


_set_sr = _setters(StreamReceipt, "stream_id", "receipt")


def _parse_stream_receipt(buf: bytes, pos: int, stop: int) -> Frame:
    stream_id, pos = _read_var_uint(buf, pos, stop, "StreamReceipt.streamId")
    receipt, _ = _read_octets(buf, pos, stop, "StreamReceipt.receipt")
    frame = _new(StreamReceipt)
    _set_sr[0](frame, stream_id)
    _set_sr[1](frame, receipt)
    return frame


_PARSER_BY_TYPE: Final[dict[int, Callable[[bytes, int, int], Frame]]] = {
    FrameType.CONNECTION_CLOSE: _parse_connection_close,
    FrameType.CONNECTION_NEW_ADDRESS: _parse_connection_new_address,
    FrameType.CONNECTION_MAX_DATA: _one_var_uint_parser(
        ConnectionMaxData, "max_offset", "ConnectionMaxData.maxOffset"
    ),
    FrameType.CONNECTION_DATA_BLOCKED: _one_var_uint_parser(
        ConnectionDataBlocked, "max_offset", "ConnectionDataBlocked.maxOffset"
    ),
    FrameType.CONNECTION_MAX_STREAM_ID: _one_var_uint_parser(
        ConnectionMaxStreamId, "max_stream_id", "ConnectionMaxStreamId.maxStreamId"
    ),
    FrameType.CONNECTION_STREAM_ID_BLOCKED: _one_var_uint_parser(
        ConnectionStreamIdBlocked, "max_stream_id", "ConnectionStreamIdBlocked.maxStreamId"
    ),
    FrameType.CONNECTION_ASSET_DETAILS: _parse_connection_asset_details,
    FrameType.STREAM_CLOSE: _parse_stream_close,
    FrameType.STREAM_MONEY: _two_var_uint_parser(StreamMoney, "stream_id", "shares", "StreamMoney"),
    FrameType.STREAM_MAX_MONEY: _three_var_uint_parser(
        StreamMaxMoney, "receive_max", "total_received", "StreamMaxMoney"
    ),
    FrameType.STREAM_MONEY_BLOCKED: _three_var_uint_parser(
        StreamMoneyBlocked, "send_max", "total_sent", "StreamMoneyBlocked"
    ),
    FrameType.STREAM_DATA: _parse_stream_data,
    FrameType.STREAM_MAX_DATA: _two_var_uint_parser(
        StreamMaxData, "stream_id", "max_offset", "StreamMaxData"
    ),
    FrameType.STREAM_DATA_BLOCKED: _two_var_uint_parser(
        StreamDataBlocked, "stream_id", "max_offset", "StreamDataBlocked"
    ),
    FrameType.STREAM_RECEIPT: _parse_stream_receipt,
}
#: Type byte -> parser; None for unknown types ("skipped by its length prefix").
_PARSERS: Final[tuple[Callable[[bytes, int, int], Frame] | None, ...]] = tuple(
    _PARSER_BY_TYPE.get(n) for n in range(256)
)

#: Frames made only of VarUInts: type -> (class, slot setters in wire order).  The
#: packet decoder reads these inline; anything unusual (a value over 8 bytes, a long
#: length prefix, an overrun) goes to the precise per-frame parser above.
_UINT_FIELDS: Final[dict[type[Frame], tuple[str, ...]]] = {
    ConnectionMaxData: ("max_offset",),
    ConnectionDataBlocked: ("max_offset",),
    ConnectionMaxStreamId: ("max_stream_id",),
    ConnectionStreamIdBlocked: ("max_stream_id",),
    StreamMoney: ("stream_id", "shares"),
    StreamMaxMoney: ("stream_id", "receive_max", "total_received"),
    StreamMoneyBlocked: ("stream_id", "send_max", "total_sent"),
    StreamMaxData: ("stream_id", "max_offset"),
    StreamDataBlocked: ("stream_id", "max_offset"),
}
_Setter = Callable[[object, object], None]
_UINT_FRAMES: Final[tuple[tuple[type[Frame], tuple[_Setter, ...]] | None, ...]] = tuple(
    (cls, _setters(cls, *_UINT_FIELDS[cls]))
    if (cls := _FRAME_CLASSES.get(n)) is not None and cls in _UINT_FIELDS
    else None
    for n in range(256)
)

_set_sequence, _set_packet_type, _set_prepare_amount, _set_frames = _setters(
    StreamPacket, "sequence", "ilp_packet_type", "prepare_amount", "frames"
)


def _read_frame_count(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """oer-utils ``readVarUIntNumber``: length byte 1..6 (never long form), then bytes."""
    if pos >= end:
        raise _underflow("frame count", 1, 0, pos)
    size = buf[pos]
    if size == 0:
        raise DecodeError("frame count: UInt of length 0 is invalid", pos)
    if size > MAX_FRAME_COUNT_BYTES:
        raise DecodeError(
            f"frame count: a {size}-byte count does not fit a JS number "
            f"(oer-utils reads at most {MAX_FRAME_COUNT_BYTES})",
            pos,
        )
    stop = pos + 1 + size
    if stop > end:
        raise _underflow("frame count", size, end - pos - 1, pos + 1)
    if size == 1:
        return buf[pos + 1], stop
    return int.from_bytes(buf[pos + 1 : stop], "big"), stop


def decode_stream_packet(data: bytes | bytearray | memoryview) -> StreamPacket:
    """Decode a STREAM packet plaintext (§5); raises only DecodeError.

    Padding or other bytes after the last frame are ignored, as are unknown frame types.
    """
    buf = data if type(data) is bytes else bytes(data)
    end = len(buf)
    if end < 2:
        raise _underflow("STREAM packet header", 2, end, 0)
    if buf[0] != STREAM_VERSION:
        raise DecodeError(f"Unsupported protocol version: {buf[0]}", 0)
    # sequence, prepareAmount, frame count: VarUInts of 1..8 bytes inline (a money
    # packet's sequence and amount are usually 2-3 bytes), anything else generic.
    size = buf[2] if end > 2 else 0
    if size == 1 and end >= 8:
        sequence = buf[3]
        pos = 4
    elif 1 < size <= MAX_VAR_UINT_BYTES and 3 + size <= end:
        pos = 3 + size
        sequence = int.from_bytes(buf[3:pos], "big")
    else:
        sequence, pos = _read_var_uint(buf, 2, end, "sequence")
    size = buf[pos] if pos < end else 0
    if size == 1 and pos + 2 <= end:
        amount = buf[pos + 1]
        pos += 2
    elif 1 < size <= MAX_VAR_UINT_BYTES and pos + 1 + size <= end:
        start = pos + 1
        pos = start + size
        amount = int.from_bytes(buf[start:pos], "big")
    else:
        amount, pos = _read_var_uint(buf, pos, end, "prepareAmount")
    if pos + 2 <= end and buf[pos] == 1:
        count = buf[pos + 1]
        pos += 2
    else:
        count, pos = _read_frame_count(buf, pos, end)
    # Every frame takes at least 2 bytes (type, length): refuse impossible counts
    # before looping ("a frame count larger than the frames present is an error").
    if count > (end - pos) >> 1:
        raise DecodeError(
            f"frame count {count} is larger than the frames present ({end - pos} bytes left)",
            pos,
        )
    frames: list[Frame] = []
    append = frames.append
    uint_frames = _UINT_FRAMES
    new = _new
    from_bytes = int.from_bytes
    for _ in range(count):
        if pos >= end:
            raise DecodeError("frame type: no bytes left (fewer frames than counted)", pos)
        frame_type = buf[pos]
        pos += 1
        if pos < end and buf[pos] < 0x80:
            start = pos + 1
            stop = start + buf[pos]
        else:
            length, start = _read_length(buf, pos, end, "frame contents")
            stop = start + length
        if stop > end:
            raise _underflow("frame contents", stop - start, end - start, start)
        spec = uint_frames[frame_type]
        if spec is not None:
            # Inline VarUInts of 1..8 bytes; reads may run past ``stop`` (or raise
            # IndexError at the end of ``buf``): then the precise parser decides.
            frame: Frame = new(spec[0])
            at = start
            try:
                for setter in spec[1]:
                    size = buf[at]
                    if size == 1:
                        setter(frame, buf[at + 1])
                        at += 2
                    elif 1 < size <= MAX_VAR_UINT_BYTES:
                        at += size + 1
                        setter(frame, from_bytes(buf[at - size : at], "big"))
                    else:
                        at = stop + 1
                        break
            except IndexError:
                at = stop + 1
            if at > stop:
                frame = _PARSERS[frame_type](buf, start, stop)  # type: ignore[misc]
            append(frame)
        else:
            parser = _PARSERS[frame_type]
            if parser is not None:
                append(parser(buf, start, stop))
        pos = stop
    packet = new(StreamPacket)
    _set_sequence(packet, sequence)
    _set_packet_type(packet, _PACKET_TYPES[buf[1]])
    _set_prepare_amount(packet, amount)
    _set_frames(packet, tuple(frames))
    return packet


def decode_frame(data: bytes | bytearray | memoryview) -> Frame | None:
    """Decode the one frame at the start of ``data`` (bytes after it are ignored).

    Returns None for a frame type this module does not know (2.7.1 skips those).
    """
    buf = data if type(data) is bytes else bytes(data)
    end = len(buf)
    if end < 1:
        raise _underflow("frame type", 1, 0, 0)
    length, start = _read_length(buf, 1, end, "frame contents")
    stop = start + length
    if stop > end:
        raise _underflow("frame contents", length, end - start, start)
    parser = _PARSERS[buf[0]]
    return None if parser is None else parser(buf, start, stop)


# ---------------------------------------------------------------------------- encoding

#: VarUInt encodings of 0..255 (``01 xx``).
_VAR_UINT_SMALL: Final = tuple(bytes((1, n)) for n in range(256))
_BYTES: Final = tuple(bytes((n,)) for n in range(256))


def _var_uint(value: int, what: str) -> bytes:
    """Minimal VarUInt of a UInt64 (what oer-utils ``writeVarUInt`` writes)."""
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise EncodeError(f"{what} must be an integer in 0..{MAX_UINT64}, got {value!r}")
        value = int(value)
    if 0 <= value <= 0xFF:
        return _VAR_UINT_SMALL[value]
    if 0 <= value <= MAX_UINT64:
        size = (value.bit_length() + 7) >> 3
        return _SHORT_PREFIXES[size] + value.to_bytes(size, "big")
    raise EncodeError(f"{what} must be an integer in 0..{MAX_UINT64}, got {value!r}")


def _uint8(value: int, what: str) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFF:
        return _BYTES[value]
    raise EncodeError(f"{what} must be a UInt8 (0..255), got {value!r}")


def _var_octets(value: bytes, what: str) -> bytes:
    if type(value) is not bytes:
        if not isinstance(value, bytearray | memoryview):
            raise EncodeError(f"{what} must be bytes, got {type(value).__name__}")
        value = bytes(value)
    length = len(value)
    if length < 128:
        return _SHORT_PREFIXES[length] + value
    return encode_length_prefix(length) + value


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise EncodeError(f"{what} must be a str, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(f"{what} cannot be encoded as UTF-8: {value!r}") from None
    return _var_octets(raw, what)


#: ``type || length`` for every frame type and contents length below 64 (VarUInt-only
#: frames are at most 27 bytes), to save building the two bytes per frame.
_FRAME_HEADS: Final = tuple(
    tuple(bytes((frame_type, n)) for n in range(64)) for frame_type in range(0x18)
)


def _wrap(frame_type: int, contents: bytes) -> bytes:
    """``type || var-octet-string(contents)`` (``frame_type`` is one of ours, < 0x18)."""
    length = len(contents)
    if length < 64:
        return _FRAME_HEADS[frame_type][length] + contents
    if length < 128:
        return bytes((frame_type, length)) + contents
    return _BYTES[frame_type] + encode_length_prefix(length) + contents


def _encode_connection_close(f: ConnectionClose) -> bytes:
    return _wrap(
        0x01,
        _uint8(f.error_code, "ConnectionClose.errorCode")
        + _text(f.error_message, "ConnectionClose.errorMessage"),
    )


def _encode_connection_new_address(f: ConnectionNewAddress) -> bytes:
    return _wrap(0x02, _text(f.source_account, "ConnectionNewAddress.sourceAccount"))


def _encode_connection_max_data(f: ConnectionMaxData) -> bytes:
    return _wrap(0x03, _var_uint(f.max_offset, "ConnectionMaxData.maxOffset"))


def _encode_connection_data_blocked(f: ConnectionDataBlocked) -> bytes:
    return _wrap(0x04, _var_uint(f.max_offset, "ConnectionDataBlocked.maxOffset"))


def _encode_connection_max_stream_id(f: ConnectionMaxStreamId) -> bytes:
    return _wrap(0x05, _var_uint(f.max_stream_id, "ConnectionMaxStreamId.maxStreamId"))


def _encode_connection_stream_id_blocked(f: ConnectionStreamIdBlocked) -> bytes:
    return _wrap(0x06, _var_uint(f.max_stream_id, "ConnectionStreamIdBlocked.maxStreamId"))


def _encode_connection_asset_details(f: ConnectionAssetDetails) -> bytes:
    return _wrap(
        0x07,
        _text(f.source_asset_code, "ConnectionAssetDetails.sourceAssetCode")
        + _uint8(f.source_asset_scale, "ConnectionAssetDetails.sourceAssetScale"),
    )


def _encode_stream_close(f: StreamClose) -> bytes:
    return _wrap(
        0x10,
        _var_uint(f.stream_id, "StreamClose.streamId")
        + _uint8(f.error_code, "StreamClose.errorCode")
        + _text(f.error_message, "StreamClose.errorMessage"),
    )


def _encode_stream_money(f: StreamMoney) -> bytes:
    return _wrap(
        0x11,
        _var_uint(f.stream_id, "StreamMoney.streamId") + _var_uint(f.shares, "StreamMoney.shares"),
    )


def _encode_stream_max_money(f: StreamMaxMoney) -> bytes:
    return _wrap(
        0x12,
        _var_uint(f.stream_id, "StreamMaxMoney.streamId")
        + _var_uint(f.receive_max, "StreamMaxMoney.receiveMax")
        + _var_uint(f.total_received, "StreamMaxMoney.totalReceived"),
    )


def _encode_stream_money_blocked(f: StreamMoneyBlocked) -> bytes:
    return _wrap(
        0x13,
        _var_uint(f.stream_id, "StreamMoneyBlocked.streamId")
        + _var_uint(f.send_max, "StreamMoneyBlocked.sendMax")
        + _var_uint(f.total_sent, "StreamMoneyBlocked.totalSent"),
    )


def _encode_stream_data(f: StreamData) -> bytes:
    return _wrap(
        0x14,
        _var_uint(f.stream_id, "StreamData.streamId")
        + _var_uint(f.offset, "StreamData.offset")
        + _var_octets(f.data, "StreamData.data"),
    )


def _encode_stream_max_data(f: StreamMaxData) -> bytes:
    return _wrap(
        0x15,
        _var_uint(f.stream_id, "StreamMaxData.streamId")
        + _var_uint(f.max_offset, "StreamMaxData.maxOffset"),
    )


def _encode_stream_data_blocked(f: StreamDataBlocked) -> bytes:
    return _wrap(
        0x16,
        _var_uint(f.stream_id, "StreamDataBlocked.streamId")
        + _var_uint(f.max_offset, "StreamDataBlocked.maxOffset"),
    )


def _encode_stream_receipt(f: StreamReceipt) -> bytes:
    return _wrap(
        0x17,
        _var_uint(f.stream_id, "StreamReceipt.streamId")
        + _var_octets(f.receipt, "StreamReceipt.receipt"),
    )


_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    ConnectionClose: _encode_connection_close,
    ConnectionNewAddress: _encode_connection_new_address,
    ConnectionMaxData: _encode_connection_max_data,
    ConnectionDataBlocked: _encode_connection_data_blocked,
    ConnectionMaxStreamId: _encode_connection_max_stream_id,
    ConnectionStreamIdBlocked: _encode_connection_stream_id_blocked,
    ConnectionAssetDetails: _encode_connection_asset_details,
    StreamClose: _encode_stream_close,
    StreamMoney: _encode_stream_money,
    StreamMaxMoney: _encode_stream_max_money,
    StreamMoneyBlocked: _encode_stream_money_blocked,
    StreamData: _encode_stream_data,
    StreamMaxData: _encode_stream_max_data,
    StreamDataBlocked: _encode_stream_data_blocked,
    StreamReceipt: _encode_stream_receipt,
}


def encode_frame(frame: Frame) -> bytes:
    """One frame: ``type || var-octet-string(contents)`` (§6); EncodeError if invalid."""
    encoder = _ENCODERS.get(type(frame))
    if encoder is None:
        raise EncodeError(f"not a STREAM frame: {type(frame).__name__}")
    return encoder(frame)


#: ``01 tt`` for each packet type byte.
_HEADS: Final = tuple(bytes((STREAM_VERSION, n)) for n in range(256))


def encode_stream_packet(packet: StreamPacket) -> bytes:
    """The plaintext of ``packet`` (§5), without padding; EncodeError if invalid."""
    packet_type = packet.ilp_packet_type
    if type(packet_type) is not int and (
        not isinstance(packet_type, int) or isinstance(packet_type, bool)
    ):
        raise EncodeError(f"ilpPacketType must be a UInt8, got {packet_type!r}")
    if not 0 <= packet_type <= 0xFF:
        raise EncodeError(f"ilpPacketType must be a UInt8 (0..255), got {packet_type!r}")
    frames = packet.frames
    parts = [
        _HEADS[packet_type],
        _var_uint(packet.sequence, "sequence"),
        _var_uint(packet.prepare_amount, "prepareAmount"),
        _var_uint(len(frames), "frame count"),
    ]
    encoders = _ENCODERS
    for frame in frames:
        encoder = encoders.get(type(frame))
        if encoder is None:
            raise EncodeError(f"not a STREAM frame: {type(frame).__name__}")
        parts.append(encoder(frame))
    return b"".join(parts)
