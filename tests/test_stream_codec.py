"""ilp_receiver.codec.stream: STREAM packets and frames (spec ``12-stream.md`` §5-§7).

Vectors (``stream.json``): ``packets``, ``packet_decoding_edge_cases``,
``rfc_fixture_crosscheck``, ``constants`` (frame types, error codes, packet types, sizes)
and the generator metadata (``versions``, ``source``-independent ``generator``,
``fixed_now``, ``prepare_expiry``, ``node_compat_shim``).  Key derivation, encryption and
tokens are in test_stream_secrets.py, receipts in test_stream_receipts.py.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec import stream
from ilp_receiver.codec.ilp import IlpPacketType
from ilp_receiver.codec.oer import encode_var_octets
from ilp_receiver.codec.stream import (
    MAX_UINT64,
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionDataBlocked,
    ConnectionMaxData,
    ConnectionMaxStreamId,
    ConnectionNewAddress,
    ConnectionStreamIdBlocked,
    ErrorCode,
    Frame,
    FrameType,
    StreamClose,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamMoneyBlocked,
    StreamPacket,
    StreamReceipt,
    decode_frame,
    decode_stream_packet,
    encode_frame,
    encode_stream_packet,
)
from ilp_receiver.crypto import ENVELOPE_OVERHEAD
from ilp_receiver.errors import DecodeError, EncodeError
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
F = "stream.json"
# Read at import so tests/test_vector_coverage.py sees every section requested.
PACKETS: list[dict[str, Any]] = cases(F, "packets")
EDGE_CASES: list[dict[str, Any]] = cases(F, "packet_decoding_edge_cases")
RFC_CROSSCHECK: dict[str, Any] = section(F, "rfc_fixture_crosscheck")
CONSTANTS: dict[str, Any] = section(F, "constants")
VERSIONS: dict[str, str] = section(F, "versions")
GENERATOR: str = section(F, "generator")
FIXED_NOW: str = section(F, "fixed_now")
PREPARE_EXPIRY: str = section(F, "prepare_expiry")
NODE_COMPAT_SHIM: str = section(F, "node_compat_shim")

#: JSON fields that hold VarUInts (decimal strings in the vectors).
INT_FIELDS = {
    "streamId",
    "maxOffset",
    "maxStreamId",
    "shares",
    "receiveMax",
    "totalReceived",
    "sendMax",
    "totalSent",
    "offset",
}


def snake(name: str) -> str:
    """``maxStreamId`` -> ``max_stream_id``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def frame_from_json(j: dict[str, Any]) -> Frame:
    """A vector frame object as our frame dataclass (every JSON field must map)."""
    cls = getattr(stream, j["name"])
    assert j["type"] == cls.FRAME_TYPE
    kwargs: dict[str, Any] = {}
    for key, value in j.items():
        if key in ("type", "name"):
            continue
        if key.endswith("_hex"):
            kwargs[snake(key[:-4])] = bytes.fromhex(value)
        elif key in INT_FIELDS:
            kwargs[snake(key)] = int(value)
        else:
            kwargs[snake(key)] = value
    frame: Frame = cls(**kwargs)  # TypeError if a field does not exist / is missing
    return frame


def packet_from_json(j: dict[str, Any]) -> StreamPacket:
    """A vector packet object as a StreamPacket."""
    assert j["version"] == stream.STREAM_VERSION
    return StreamPacket(
        int(j["sequence"]),
        j["ilpPacketType"],
        int(j["prepareAmount"]),
        tuple(frame_from_json(f) for f in j["frames"]),
    )


def by_name(name: str) -> dict[str, Any]:
    """The ``packets`` case called ``name``."""
    (case,) = [c for c in PACKETS if c["name"] == name]
    return case


# ------------------------------------------------------------------------ packets


@pytest.mark.parametrize("case", PACKETS, ids=case_id)
def test_packet_case(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["plaintext_hex"])
    packet = packet_from_json(case["packet"])
    assert case["round_trip_equal"] is True
    assert decode_stream_packet(raw) == packet
    assert encode_stream_packet(packet) == raw
    # Frames one by one: encode_frame gives the bytes after the header, decode_frame
    # reads each back.
    encoded = [encode_frame(f) for f in packet.frames]
    assert raw.endswith(b"".join(encoded))
    for frame, frame_bytes in zip(packet.frames, encoded, strict=True):
        assert decode_frame(frame_bytes) == frame
        assert frame_bytes[0] == frame.FRAME_TYPE


def test_every_frame_type_has_a_packet_case() -> None:
    seen = {f["type"] for c in PACKETS for f in c["packet"]["frames"]}
    assert seen == {int(t) for t in FrameType}


def test_typical_first_money_packet_layout() -> None:
    # §5 example, field by field.
    packet = decode_stream_packet(
        bytes.fromhex(by_name("typical_first_money_packet")["plaintext_hex"])
    )
    assert packet == StreamPacket(
        6,
        IlpPacketType.PREPARE,
        990,
        (StreamMaxMoney(1, 0, 0), StreamMaxData(1, 16384), StreamMoney(1, 1000)),
    )
    assert packet.ilp_packet_type is IlpPacketType.PREPARE


def test_decoded_codes_are_enum_members_when_known() -> None:
    packet = decode_stream_packet(
        bytes.fromhex(by_name("frame_StreamClose_error")["plaintext_hex"])
    )
    (frame,) = packet.frames
    assert isinstance(frame, StreamClose)
    assert frame.error_code is ErrorCode.STREAM_STATE_ERROR
    # Unknown codes and packet types are kept as plain ints (2.7.1 does not check them).
    raw = encode_stream_packet(StreamPacket(1, 99, 0, (ConnectionClose(0xFF, "x"),)))
    decoded = decode_stream_packet(raw)
    assert decoded.ilp_packet_type == 99
    assert decoded.frames == (ConnectionClose(255, "x"),)
    (frame,) = decoded.frames
    assert isinstance(frame, ConnectionClose)
    assert type(frame.error_code) is int
    assert encode_stream_packet(decoded) == raw


# -------------------------------------------------------------- decoding edge cases


@pytest.mark.parametrize("case", EDGE_CASES, ids=case_id)
def test_decoding_edge_case(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["plaintext_hex"])
    if "decoded" in case:
        assert decode_stream_packet(raw) == packet_from_json(case["decoded"])
        return
    with pytest.raises(DecodeError) as info:
        decode_stream_packet(raw)
    error = case["error"]
    node_range = re.search(r"Received (\d+)$", error)
    if node_range:
        # Node's RangeError names the offset it could not read.
        assert info.value.offset == int(node_range.group(1))
    else:
        assert error in info.value.reason


def test_edge_case_names_cover_the_spec_rules() -> None:
    # §5 lists these reader rules; each has a recorded case.
    names = {c["name"] for c in EDGE_CASES}
    assert {
        "wrong_version",
        "trailing_zero_padding_ignored",
        "unknown_frame_type_skipped",
        "frame_contents_longer_than_fields",
        "stream_max_money_receive_max_too_big_saturates",
        "stream_money_blocked_send_max_too_big_saturates",
        "stream_money_shares_too_big_fails",
        "non_minimal_varuint_sequence",
        "empty_varuint_sequence",
        "frame_count_larger_than_frames_present",
    } <= names


HEAD1 = "010c0101010001 01"  # version 1, Prepare, sequence 1, amount 0, 1 frame


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(
    ("hex_text", "reason"),
    [
        ("", "needs 2 bytes"),
        ("01", "needs 2 bytes"),
        ("00 0c 01 01 01 00 01 00", "Unsupported protocol version: 0"),
        ("01 0c", "sequence"),
        ("01 0c 01", "sequence"),
        ("01 0c 09 010000000000000000 0100 0100", "sequence: UInt of length 9 is too large"),
        ("01 0c 01 01 00 0100", "prepareAmount: UInt of length 0 is invalid"),
        ("01 0c 01 01 01 00", "frame count"),
        ("01 0c 01 01 01 00 00", "frame count: UInt of length 0 is invalid"),
        ("01 0c 01 01 01 00 07 00000000000001 1100", "does not fit a JS number"),
        ("01 0c 01 01 01 00 81 80", "does not fit a JS number"),  # never long form
        ("01 0c 01 01 01 00 02 00", "frame count: needs 2 bytes"),
        # length prefixes must be canonical: 81 04 for 4, 80 alone, 82 00 80
        (HEAD1 + "11 8104 0101010a", "not canonical"),
        (HEAD1 + "11 80", "no length bytes"),
        (HEAD1 + "11 820080" + "00" * 128, "not canonical"),
        (HEAD1 + "11 87" + "00" * 20, "too large"),
        (HEAD1 + "11 05 0101010a", "frame contents: needs 5 bytes, 4 left"),
        (HEAD1 + "11", "larger than the frames present"),
        (HEAD1 + "1100", "StreamMoney.streamId length"),
        # fields must fit inside the frame's contents
        (HEAD1 + "11 03 0101 01" + "0a", "StreamMoney.shares: needs 1 bytes, 0 left"),
        (HEAD1 + "11 02 0101", "StreamMoney.shares length"),
        (HEAD1 + "12 05 0101 00 0100", "StreamMaxMoney.receiveMax: UInt of length 0"),
        (HEAD1 + "12 04 0101 0a00", "StreamMaxMoney.receiveMax: needs 10 bytes"),
        (HEAD1 + "13 0d 0101 09010000000000000000 00", "StreamMoneyBlocked.totalSent: UInt of"),
        (HEAD1 + "01 00", "ConnectionClose.errorCode: needs 1 bytes"),
        (HEAD1 + "01 03 01 01 ff", "ConnectionClose.errorMessage: not UTF-8"),
        (HEAD1 + "02 03 02 c328", "ConnectionNewAddress.sourceAccount: not UTF-8"),
        (HEAD1 + "07 04 03 58595a", "ConnectionAssetDetails.sourceAssetScale"),
        (HEAD1 + "10 04 0101 01 01", "StreamClose.errorMessage: needs 1 bytes"),
        (HEAD1 + "14 05 0101 0100 05", "StreamData.data: needs 5 bytes"),
        (HEAD1 + "17 03 0101 01", "StreamReceipt.receipt: needs 1 bytes"),
        (HEAD1 + "03 01 00", "ConnectionMaxData.maxOffset: UInt of length 0"),
    ],
)
def test_decode_errors(hex_text: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(reason)):
        decode_stream_packet(hx(hex_text))


def test_decode_error_offsets_point_into_the_plaintext() -> None:
    raw = hx(HEAD1 + "11 03 0101 00")  # shares: a VarUInt of length 0 at byte 12
    with pytest.raises(DecodeError) as info:
        decode_stream_packet(raw)
    assert info.value.offset == 12


def test_impossible_frame_count_refused_before_reading_frames() -> None:
    # A count that cannot fit in the remaining bytes is refused up front, with the
    # offset of the first frame, however large it is.
    for count_hex, rest in (("01 04", "11 04 0101 010a"), ("06 ffffffffffff", "")):
        raw = hx("01 0c 01 01 01 00 " + count_hex + rest)
        with pytest.raises(DecodeError, match="larger than the frames present") as info:
            decode_stream_packet(raw)
        assert info.value.offset == len(hx("01 0c 01 01 01 00 " + count_hex))
    # Exactly as many 2-byte (empty, unknown) frames as fit: accepted.
    assert decode_stream_packet(hx("01 0c 01 01 01 00 01 03 7f00 7e00 7d00")).frames == ()


def test_frame_count_leading_zeros_accepted() -> None:
    # readVarUIntNumber reads 1..6 bytes, leading zeros included.
    raw = hx("01 0c 01 01 01 00 06 000000000001 11 04 0101 010a")
    assert decode_stream_packet(raw).frames == (StreamMoney(1, 10),)


def test_saturating_fields() -> None:
    # Any 9+ byte VarUInt saturates, even one whose value would fit (leading zeros),
    # as 2.7.1's saturatingReadVarUInt only looks at the length; long-form lengths too.
    nine = "09 000000000000000001"
    raw = hx(HEAD1 + "12 0e 0101" + nine + "0100")
    assert decode_stream_packet(raw).frames == (StreamMaxMoney(1, MAX_UINT64, 0),)
    big = "81 80" + "00" * 128
    raw = hx(HEAD1 + "13 81 86 0101" + big + "0105")
    assert decode_stream_packet(raw).frames == (StreamMoneyBlocked(1, MAX_UINT64, 5),)
    # The other fields of the same frames do not saturate.
    with pytest.raises(DecodeError, match="streamId: UInt of length 9"):
        decode_stream_packet(hx(HEAD1 + "12 0e" + nine + "0100 0100"))


def test_non_minimal_varuints_accepted() -> None:
    raw = hx(HEAD1 + "11 0c 020001 08 00000000000003e8")
    assert decode_stream_packet(raw).frames == (StreamMoney(1, 1000),)
    # ... and re-encoded minimally.
    assert encode_stream_packet(decode_stream_packet(raw)) == hx(HEAD1 + "11 05 0101 0203e8")


def test_long_form_lengths() -> None:
    data = bytes(range(200))
    packet = StreamPacket(1, 12, 0, (StreamData(1, 0, data), ConnectionClose(1, "é" * 100)))
    raw = encode_stream_packet(packet)
    # frame contents 205 bytes -> "81 cd"; data 200 bytes -> "81 c8"; message 200 bytes
    assert raw[8:11] == hx("14 81 ce")  # frame contents: 2 + 2 + 2 + 200 bytes
    assert raw[11:18] == hx("0101 0100 81c8 00")
    assert decode_stream_packet(raw) == packet
    # 300 bytes of junk inside an unknown frame (two length bytes) are skipped.
    skipped = hx("01 0c 0101 0100 0102 7f 82012c") + bytes(300) + hx("1104 0101 010a")
    assert decode_stream_packet(skipped).frames == (StreamMoney(1, 10),)


def test_decode_accepts_buffer_types() -> None:
    raw = bytes.fromhex(by_name("typical_first_money_packet")["plaintext_hex"])
    expected = decode_stream_packet(raw)
    assert decode_stream_packet(bytearray(raw)) == expected
    assert decode_stream_packet(memoryview(raw)) == expected
    assert decode_frame(memoryview(raw)[9:17]) == expected.frames[0]


def test_every_truncation_of_a_packet_fails() -> None:
    raw = bytes.fromhex(by_name("typical_first_money_packet")["plaintext_hex"])
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            decode_stream_packet(raw[:cut])


def test_decode_frame() -> None:
    assert decode_frame(hx("7f 02 aabb")) is None
    assert decode_frame(hx("11 04 0101 010a ffff")) == StreamMoney(1, 10)
    for bad in ("", "11", "11 05 0101 010a", "11 8104 0101 010a"):
        with pytest.raises(DecodeError):
            decode_frame(hx(bad))
    assert stream.frame_class(0x11) is StreamMoney
    assert stream.frame_class(0x7F) is None


# ------------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    "packet",
    [
        StreamPacket(-1, 12),
        StreamPacket(MAX_UINT64 + 1, 12),
        StreamPacket(0, 12, -1),
        StreamPacket(0, 12, MAX_UINT64 + 1),
        StreamPacket(True, 12),
        StreamPacket(0, 256),
        StreamPacket(0, -1),
        StreamPacket(0, "12"),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, (ConnectionClose(256),)),
        StreamPacket(0, 12, 0, (ConnectionClose(-1),)),
        StreamPacket(0, 12, 0, (ConnectionClose(1, "\ud800"),)),
        StreamPacket(0, 12, 0, (ConnectionClose(1, b"bytes"),)),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, (ConnectionAssetDetails("XYZ", 256),)),
        StreamPacket(0, 12, 0, (ConnectionNewAddress(7),)),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, (StreamMoney(MAX_UINT64 + 1, 1),)),
        StreamPacket(0, 12, 0, (StreamMoney(1, -1),)),
        StreamPacket(0, 12, 0, (StreamMaxMoney(1, 1.5, 0),)),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, (StreamData(1, 0, "text"),)),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, (StreamReceipt(1, None),)),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, (StreamClose(1, 1, None),)),  # type: ignore[arg-type]
        StreamPacket(0, 12, 0, ("not a frame",)),  # type: ignore[arg-type]
    ],
)
def test_encode_refuses_out_of_range(packet: StreamPacket) -> None:
    with pytest.raises(EncodeError):
        encode_stream_packet(packet)


def test_encode_frame_refuses_foreign_objects() -> None:
    with pytest.raises(EncodeError):
        encode_frame(StreamPacket(0, 12))  # type: ignore[arg-type]


def test_encode_accepts_int_subclasses_and_byte_buffers() -> None:
    packet = StreamPacket(
        1,
        IlpPacketType.FULFILL,
        0,
        (
            StreamClose(3, ErrorCode.NO_ERROR),
            StreamData(1, 0, bytearray(b"ab")),  # type: ignore[arg-type]
            StreamReceipt(1, memoryview(b"r")),  # type: ignore[arg-type]
            StreamMaxData(FrameType.STREAM_DATA, 5),  # an IntEnum used as a number
        ),
    )
    assert decode_stream_packet(encode_stream_packet(packet)) == StreamPacket(
        1,
        13,
        0,
        (StreamClose(3, 1), StreamData(1, 0, b"ab"), StreamReceipt(1, b"r"), StreamMaxData(20, 5)),
    )


# -------------------------------------------------------------- RFC fixture crosscheck


def test_rfc_fixture_crosscheck() -> None:
    check = RFC_CROSSCHECK
    assert check["ran"] is True
    assert check["fixtures"] == 53
    assert check["decoded_and_reencoded_identically"] == 51
    assert (
        len(check["differences"]) == check["fixtures"] - check["decoded_and_reencoded_identically"]
    )
    for difference in check["differences"]:
        assert "error" not in difference
        fixture = bytes.fromhex(difference["fixture_hex"])
        reencoded = bytes.fromhex(difference["reencoded_hex"])
        packet = decode_stream_packet(fixture)
        # "too big" inputs decode with saturation and re-encode as 8 bytes.
        assert encode_stream_packet(packet) == reencoded
        assert decode_stream_packet(reencoded) == packet
        (frame,) = packet.frames
        assert isinstance(frame, StreamMaxMoney | StreamMoneyBlocked)
        limit = frame.receive_max if isinstance(frame, StreamMaxMoney) else frame.send_max
        assert limit == MAX_UINT64
        assert frame.stream_id == 123


# ---------------------------------------------------------------------- constants


def test_constants() -> None:
    c = CONSTANTS
    assert c["stream_version"] == stream.STREAM_VERSION == 1
    assert c["ilp_packet_types"] == {
        "prepare": stream.ILP_PREPARE,
        "fulfill": stream.ILP_FULFILL,
        "reject": stream.ILP_REJECT,
    }
    assert {snake(name).upper(): value for name, value in c["frame_types"].items()} == {
        t.name: t.value for t in FrameType
    }
    # Frame classes carry the 2.7.1 names.
    for name, value in c["frame_types"].items():
        cls = stream.frame_class(value)
        assert cls is not None
        assert cls.__name__ == name
    assert {snake(name).upper(): value for name, value in c["error_codes"].items()} == {
        e.name: e.value for e in ErrorCode
    }
    assert c["max_data_size_bytes"] == stream.MAX_DATA_LENGTH == 32767
    aes = c["aes_256_gcm"]
    assert aes["envelope_overhead_bytes"] == ENVELOPE_OVERHEAD == aes["iv_bytes"] + aes["tag_bytes"]
    assert c["max_data_size_bytes"] - aes["envelope_overhead_bytes"] == stream.MAX_PLAINTEXT_LENGTH


def test_generator_metadata() -> None:
    # The vectors come from the versions the spec names (12-stream.md "Sources").
    assert VERSIONS == {
        "ilp-protocol-stream": "2.7.1",
        "ilp-packet": "3.1.3",
        "ilp-protocol-ildcp": "2.2.3",
        "oer-utils": "5.1.2",
        "long": "4.0.0",
    }
    assert GENERATOR.startswith("vectors/generators/stream.js")
    # Prepares expire packet_expiry_ms after the fixed clock.
    now = datetime.fromisoformat(FIXED_NOW.replace("Z", "+00:00"))
    expiry = datetime.fromisoformat(PREPARE_EXPIRY.replace("Z", "+00:00"))
    expected_ms = CONSTANTS["connection_defaults_2_7_1"]["packet_expiry_ms"]
    assert (expiry - now).total_seconds() * 1000 == expected_ms == 30000
    # The Node >= 18 shim only touches DataAndMoneyStream#closed (no wire bytes).
    assert NODE_COMPAT_SHIM.startswith("DataAndMoneyStream.prototype.closed")


# ---------------------------------------------------------------------- hypothesis

u64 = st.integers(min_value=0, max_value=MAX_UINT64)
u8 = st.integers(min_value=0, max_value=255)
small = st.integers(min_value=0, max_value=300)
ids = st.one_of(small, u64)
text = st.text(max_size=40)
FRAMES: st.SearchStrategy[Frame] = st.one_of(
    st.builds(ConnectionClose, u8, text),
    st.builds(ConnectionNewAddress, text),
    st.builds(ConnectionMaxData, ids),
    st.builds(ConnectionDataBlocked, ids),
    st.builds(ConnectionMaxStreamId, ids),
    st.builds(ConnectionStreamIdBlocked, ids),
    st.builds(ConnectionAssetDetails, text, u8),
    st.builds(StreamClose, ids, u8, text),
    st.builds(StreamMoney, ids, ids),
    st.builds(StreamMaxMoney, ids, ids, ids),
    st.builds(StreamMoneyBlocked, ids, ids, ids),
    st.builds(StreamData, ids, ids, st.binary(max_size=300)),
    st.builds(StreamMaxData, ids, ids),
    st.builds(StreamDataBlocked, ids, ids),
    st.builds(StreamReceipt, ids, st.binary(max_size=80)),
)
PACKET_STRATEGY = st.builds(StreamPacket, ids, u8, ids, st.lists(FRAMES, max_size=6).map(tuple))


@FAST
@given(PACKET_STRATEGY, st.binary(max_size=16))
def test_packet_round_trip(packet: StreamPacket, junk: bytes) -> None:
    raw = encode_stream_packet(packet)
    assert decode_stream_packet(raw) == packet
    assert decode_stream_packet(raw + junk) == packet  # padding / junk is never read
    assert encode_stream_packet(decode_stream_packet(raw)) == raw


@FAST
@given(FRAMES, st.binary(max_size=8), st.binary(min_size=1, max_size=8))
def test_frame_contents_surplus_ignored(frame: Frame, junk: bytes, extra: bytes) -> None:
    raw = encode_frame(frame)
    assert decode_frame(raw + junk) == frame
    # Re-wrap the contents with extra bytes inside: "ignored" (§5), on the inline
    # VarUInt path of the packet decoder and in decode_frame alike.
    contents = raw[2:] if raw[1] < 0x80 else raw[2 + (raw[1] & 0x7F) :]
    padded = bytes((raw[0],)) + encode_var_octets(contents + extra)
    assert decode_frame(padded) == frame
    head = encode_stream_packet(StreamPacket(1, 12, 0, (StreamMoney(1, 1),)))[:-6]
    assert decode_stream_packet(head + padded).frames == (frame,)


@FAST
@given(st.binary(max_size=40), u8)
def test_inline_and_precise_frame_parsers_agree(contents: bytes, frame_type: int) -> None:
    # The packet decoder reads VarUInt-only frames inline and falls back to the
    # precise parser; decode_frame always uses the precise parser.  Same outcome.
    frame_bytes = bytes((frame_type,)) + encode_var_octets(contents)
    packet_bytes = hx("01 0c 0101 0100 0101") + frame_bytes
    try:
        alone: object = decode_frame(frame_bytes)
    except DecodeError:
        alone = DecodeError
    try:
        frames = decode_stream_packet(packet_bytes).frames
        in_packet: object = frames[0] if frames else None
    except DecodeError:
        in_packet = DecodeError
    assert alone == in_packet


DECODERS = [decode_stream_packet, decode_frame]
HEADER_PREFIXED = st.binary(max_size=120).map(lambda b: hx("01 0c 0101 0100") + b)


@FAST
@given(st.one_of(st.binary(max_size=200), HEADER_PREFIXED))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    for decoder in DECODERS:
        try:
            decoded = decoder(data)
        except DecodeError:
            continue
        # Whatever decodes re-encodes to something that decodes the same.
        if isinstance(decoded, StreamPacket):
            assert decode_stream_packet(encode_stream_packet(decoded)) == decoded
        elif decoded is not None:
            assert decode_frame(encode_frame(decoded)) == decoded


@FAST
@given(PACKET_STRATEGY, st.data())
def test_mutated_packets_raise_only_decode_error(packet: StreamPacket, draw: st.DataObject) -> None:
    raw = bytearray(encode_stream_packet(packet))
    for _ in range(draw.draw(st.integers(1, 4))):
        index = draw.draw(st.integers(0, len(raw) - 1))
        raw[index] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(DecodeError):
            decode_stream_packet(candidate)
