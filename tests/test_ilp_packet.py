"""ILPv4 packets (ilp_receiver.codec.ilp) against ``ilp-packet.json``,
``ilp-packet-fixtures.json`` and hypothesis."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec import ilp
from ilp_receiver.codec.address import ALLOCATION_SCHEMES
from ilp_receiver.codec.ilp import (
    ERROR_CODE_NAMES,
    PEER_PROTOCOL_CONDITION,
    PEER_PROTOCOL_FULFILLMENT,
    AmountTooLargeData,
    ErrorCode,
    IlpFulfill,
    IlpPacket,
    IlpPacketType,
    IlpPrepare,
    IlpReject,
    decode_amount_too_large_data,
    decode_fulfill,
    decode_packet,
    decode_prepare,
    decode_reject,
    decode_reply,
    encode_amount_too_large_data,
    encode_fulfill,
    encode_packet,
    encode_prepare,
    encode_reject,
    error_code_name,
    format_timestamp,
    fulfill_packet,
    parse_timestamp,
)
from ilp_receiver.errors import DecodeError, EncodeError
from tests.peer_vectors import prepare_from_json, vector_time
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)


def packet_from_case(case: dict[str, Any]) -> IlpPacket:
    """Build the packet a vector case describes, from its field values."""
    j = case["json"]
    if case["type"] == IlpPacketType.PREPARE:
        return prepare_from_json(j)
    if case["type"] == IlpPacketType.FULFILL:
        return IlpFulfill(bytes.fromhex(j["fulfillment_hex"]), bytes.fromhex(j["data_hex"]))
    return IlpReject(j["code"], j["triggeredBy"], j["message"], bytes.fromhex(j["data_hex"]))


# ------------------------------------------------------------------ ilp-packet.json


# Read at import time: tests/test_vector_coverage.py checks the sections on import.
PEER_PROTOCOL = section("ilp-packet.json", "peer_protocol")
REFERENCE_CODES = section("ilp-packet.json", "error_codes_from_reference")


def test_peer_protocol() -> None:
    peer = PEER_PROTOCOL
    assert bytes.fromhex(peer["fulfillment_hex"]) == PEER_PROTOCOL_FULFILLMENT
    assert bytes.fromhex(peer["condition_hex"]) == PEER_PROTOCOL_CONDITION
    assert base64.b64decode(peer["condition_base64"]) == PEER_PROTOCOL_CONDITION
    assert hashlib.sha256(PEER_PROTOCOL_FULFILLMENT).digest() == PEER_PROTOCOL_CONDITION


def test_error_codes_match_reference() -> None:
    reference = REFERENCE_CODES
    assert {code.name: code.value for code in ErrorCode} == reference
    assert set(ERROR_CODE_NAMES) == set(reference.values())
    assert ErrorCode("F02") is ErrorCode.F02_UNREACHABLE
    assert str(ErrorCode.F02_UNREACHABLE) == "F02"
    assert error_code_name("F08") == "Amount Too Large"
    assert error_code_name("F10") == "Final Error"
    assert error_code_name("T50") == "Temporary Error"
    assert error_code_name("R77") == "Relative Error"
    assert error_code_name("X00") == "Unknown Error"


@pytest.mark.parametrize("case", cases("ilp-packet.json", "cases"), ids=case_id)
def test_case_decode(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    assert raw[0] == case["type"]
    packet = decode_packet(raw)
    j = case["json"]
    if case["type"] == 12:
        assert isinstance(packet, IlpPrepare)
        assert decode_prepare(raw) == packet
        assert packet.amount == int(j["amount"])
        assert packet.expires_at == vector_time(j["expiresAt"])
        assert packet.expires_at.tzinfo is not None
        assert packet.expires_at.utcoffset() == timedelta(0)
        assert packet.execution_condition.hex() == j["executionCondition_hex"]
        assert packet.destination == j["destination"]
        assert packet.data.hex() == j["data_hex"]
        # expiresAt sits right after the 8-byte amount, as 17 ASCII digits.
        contents = 2 if raw[1] < 0x80 else 2 + (raw[1] & 0x7F)
        wire = j["expiresAt_wire"].encode("ascii")
        assert raw[contents + 8 : contents + 8 + 17] == wire
        assert parse_timestamp(wire) == packet.expires_at
        with pytest.raises(DecodeError):
            decode_reply(raw)
    elif case["type"] == 13:
        assert isinstance(packet, IlpFulfill)
        assert decode_fulfill(raw) == packet
        assert decode_reply(raw) == packet
        assert packet.fulfillment.hex() == j["fulfillment_hex"]
        assert hashlib.sha256(packet.fulfillment).hexdigest() == j["condition_hex"]
        assert packet.data.hex() == j["data_hex"]
    else:
        assert isinstance(packet, IlpReject)
        assert decode_reject(raw) == packet
        assert decode_reply(raw) == packet
        assert packet.code == j["code"]
        assert packet.triggered_by == j["triggeredBy"]
        assert packet.message == j["message"]
        assert packet.data.hex() == j["data_hex"]
        if "data_fields" in j:
            fields = decode_amount_too_large_data(packet.data)
            assert fields == AmountTooLargeData(
                int(j["data_fields"]["receivedAmount"]), int(j["data_fields"]["maximumAmount"])
            )
    # Extensibility rule: bytes after the envelope are ignored.
    assert decode_packet(raw + b"\x00\xff\x01") == packet


@pytest.mark.parametrize("case", cases("ilp-packet.json", "cases"), ids=case_id)
def test_case_encode(case: dict[str, Any]) -> None:
    packet = packet_from_case(case)
    assert encode_packet(packet).hex() == case["hex"]
    j = case["json"]
    if isinstance(packet, IlpPrepare):
        assert encode_prepare(packet).hex() == case["hex"]
        assert format_timestamp(packet.expires_at).decode("ascii") == j["expiresAt_wire"]
    elif isinstance(packet, IlpFulfill):
        assert encode_fulfill(packet).hex() == case["hex"]
    else:
        assert encode_reject(packet).hex() == case["hex"]
        if "data_fields" in j:
            data = encode_amount_too_large_data(
                int(j["data_fields"]["receivedAmount"]), int(j["data_fields"]["maximumAmount"])
            )
            assert data.hex() == j["data_hex"]


@pytest.mark.parametrize("case", cases("ilp-packet.json", "invalid"), ids=case_id)
def test_invalid(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    assert case["reference_error"]
    with pytest.raises(DecodeError):
        decode_prepare(raw)
    if case["name"] != "prepare_wrong_type_byte":
        with pytest.raises(DecodeError):
            decode_packet(raw)
        with pytest.raises(DecodeError):
            decode_reply(raw)


# --------------------------------------------------------- ilp-packet-fixtures.json


@pytest.mark.parametrize("fixture", cases("ilp-packet-fixtures.json", "fixtures"), ids=case_id)
def test_fixture(fixture: dict[str, Any]) -> None:
    raw = bytes.fromhex(fixture["binary"])
    j = fixture["json"]
    expected: IlpPacket
    if fixture["type"] == 12:
        expected = IlpPrepare(
            amount=int(j["amount"]),
            expires_at=vector_time(j["expiresAt"]),
            execution_condition=base64.b64decode(j["executionCondition"]),
            destination=j["destination"],
            data=base64.b64decode(j["data"]),
        )
    elif fixture["type"] == 13:
        expected = IlpFulfill(base64.b64decode(j["fulfillment"]), base64.b64decode(j["data"]))
    else:
        expected = IlpReject(j["code"], j["triggeredBy"], j["message"], base64.b64decode(j["data"]))
    assert decode_packet(raw) == expected
    assert encode_packet(expected) == raw


# ----------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"19700101000000000", datetime(1970, 1, 1, tzinfo=UTC)),  # the epoch is accepted
        (b"00010101000000000", datetime(1, 1, 1, tzinfo=UTC)),
        (b"99991231235959999", datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (b"20000229120000001", datetime(2000, 2, 29, 12, 0, 0, 1000, tzinfo=UTC)),
    ],
)
def test_timestamp_round_trip(wire: bytes, expected: datetime) -> None:
    assert parse_timestamp(wire) == expected
    assert parse_timestamp(bytearray(wire)) == expected
    assert format_timestamp(expected) == wire


@pytest.mark.parametrize(
    "wire",
    [
        b"2017122301214054",  # 16 digits
        b"201712230121405490",  # 18 digits
        b"00000101000000000",  # year 0
        b"20171323012140549",  # month 13
        b"20170229012140549",  # not a leap year
        b"20171200012140549",  # day 0
        b"20171223242140549",  # hour 24
        b"20171223016040549",  # minute 60
        b"20171223012160549",  # second 60
        b"2017-12-23T01:21:4",
        b"2017122301214054a",
        b"+0171223012140549",
        b" 0171223012140549",
        b"201712230121405 9",
        "2017122301214054\u0661".encode()[:17],  # a non-ASCII digit
    ],
)
def test_timestamp_rejects(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_timestamp(wire)


def test_timestamp_in_packet_rejected_with_offset() -> None:
    good = encode_prepare(
        IlpPrepare(1, datetime(2020, 1, 1, tzinfo=UTC), bytes(32), "g.alice", b"")
    )
    for index in (2 + 8, 2 + 8 + 4 + 1, 2 + 8 + 16):
        bad = bytearray(good)
        bad[index] = ord("x")
        with pytest.raises(DecodeError) as info:
            decode_prepare(bytes(bad))
        assert info.value.offset == 10
    bad = bytearray(good)
    bad[2 + 8 + 4 : 2 + 8 + 6] = b"13"  # month 13
    with pytest.raises(DecodeError):
        decode_packet(bytes(bad))


def test_format_timestamp_conversions() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2020, 1, 1, 2, 0, tzinfo=plus_two)) == b"20200101000000000"
    # Sub-millisecond digits are dropped (towards the past).
    assert format_timestamp(datetime(2020, 1, 1, 0, 0, 0, 999, tzinfo=UTC)).endswith(b"000")
    assert format_timestamp(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == (
        b"19691231235959999"
    )
    with pytest.raises(EncodeError):
        format_timestamp(datetime(2020, 1, 1))  # naive
    with pytest.raises(EncodeError):
        format_timestamp(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    with pytest.raises(EncodeError):
        format_timestamp("20200101000000000")  # type: ignore[arg-type]


def test_timestamp_caches_stay_bounded() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(ilp._CACHE_SIZE + 10):
        moment = start + timedelta(seconds=i, milliseconds=i % 1000)
        assert parse_timestamp(format_timestamp(moment)) == moment
    assert len(ilp._SECOND_FROM_DIGITS) <= ilp._CACHE_SIZE
    assert len(ilp._DIGITS_FROM_SECOND) <= ilp._CACHE_SIZE


# ------------------------------------------------------------------ encode refusals

PREPARE = IlpPrepare(1000, datetime(2020, 1, 1, tzinfo=UTC), bytes(32), "g.alice", b"")


@pytest.mark.parametrize("amount", [2**64, -1, True, 1.5, "1"])
def test_out_of_range_amount(amount: Any) -> None:
    with pytest.raises(EncodeError):
        encode_prepare(IlpPrepare(amount, PREPARE.expires_at, bytes(32), "g.alice", b""))
    with pytest.raises(EncodeError):
        encode_amount_too_large_data(amount, 1)
    with pytest.raises(EncodeError):
        encode_amount_too_large_data(1, amount)


def test_max_amount_round_trips() -> None:
    packet = IlpPrepare(2**64 - 1, PREPARE.expires_at, bytes(32), "g.alice", b"")
    assert decode_prepare(encode_prepare(packet)) == packet


@pytest.mark.parametrize(
    "packet",
    [
        IlpPrepare(1, datetime(2020, 1, 1), bytes(32), "g.alice"),  # naive
        IlpPrepare(1, PREPARE.expires_at, bytes(31), "g.alice"),
        IlpPrepare(1, PREPARE.expires_at, bytes(33), "g.alice"),
        IlpPrepare(1, PREPARE.expires_at, "x" * 32, "g.alice"),  # type: ignore[arg-type]
        IlpPrepare(1, PREPARE.expires_at, bytes(32), ""),
        IlpPrepare(1, PREPARE.expires_at, bytes(32), "g.alice."),
        IlpPrepare(1, PREPARE.expires_at, bytes(32), "nope.alice"),
        IlpPrepare(1, PREPARE.expires_at, bytes(32), "g.al ice"),
        IlpPrepare(1, PREPARE.expires_at, bytes(32), "g." + "a" * 1022),
        IlpPrepare(1, PREPARE.expires_at, bytes(32), "g.alice", bytes(32768)),
        IlpPrepare(1, PREPARE.expires_at, bytes(32), "g.alice", "text"),  # type: ignore[arg-type]
        IlpFulfill(bytes(31)),
        IlpFulfill(bytes(32), bytes(32768)),
        IlpReject("F1"),
        IlpReject("F001"),
        IlpReject("Fé1"),
        IlpReject(""),
        IlpReject("F00", "g.é"),
        IlpReject("F00", "g." + "a" * 1022),
        IlpReject("F00", "", "é" * 4096),
        IlpReject("F00", "", "", bytes(32768)),
        IlpReject("F00", "", 5),  # type: ignore[arg-type]
        IlpReject(5),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_encode_refuses(packet: IlpPacket) -> None:
    with pytest.raises(EncodeError):
        encode_packet(packet)


def test_encode_packet_refuses_non_packets() -> None:
    with pytest.raises(EncodeError):
        encode_packet("not a packet")  # type: ignore[arg-type]


def test_size_limits_are_inclusive() -> None:
    big = IlpPrepare(1, PREPARE.expires_at, bytes(32), "g." + "a" * 1021, bytes(32767))
    assert decode_prepare(encode_prepare(big)) == big
    reject = IlpReject("F99", "g.x", "é" * 4095 + "a", bytes(32767))
    assert decode_reject(encode_reject(reject)) == reject
    fulfill = IlpFulfill(bytes(32), bytes(32767))
    assert decode_fulfill(encode_fulfill(fulfill)) == fulfill


def test_fulfill_packet_is_the_constructor() -> None:
    built = fulfill_packet(bytes(range(32)), b"data")
    assert type(built) is IlpFulfill
    assert built == IlpFulfill(bytes(range(32)), b"data")
    assert hash(built) == hash(IlpFulfill(bytes(range(32)), b"data"))
    assert encode_fulfill(built) == encode_fulfill(IlpFulfill(bytes(range(32)), b"data"))


def _grow_last_field(wire: bytes, field: bytes, extra: int) -> bytes:
    """``wire`` (a packet ending in ``field``'s var-octets) with ``field`` ``extra`` bytes
    longer: lengths rewritten, the envelope too (both use the 3-byte ``82`` form)."""
    head = wire[: len(wire) - len(field) - 3]
    assert wire[len(head)] == 0x82
    grown = field + bytes(extra)
    inner = head[4:] + b"\x82" + len(grown).to_bytes(2, "big") + grown
    return head[:1] + b"\x82" + len(inner).to_bytes(2, "big") + inner


def test_fields_beyond_their_maximum_are_refused_at_decode() -> None:
    # "data, var-octet-string, 0..32767 bytes": one byte more is malformed, on the fast
    # path of decode_prepare as on the generic one (a Prepare that decodes must encode).
    prepare = IlpPrepare(1, PREPARE.expires_at, bytes(32), "g.x", bytes(32767))
    wire = _grow_last_field(encode_prepare(prepare), bytes(32767), 1)
    with pytest.raises(DecodeError, match="data: 32768 bytes, more than the 32767 allowed"):
        decode_prepare(wire)
    with pytest.raises(DecodeError, match="32768 bytes"):
        decode_packet(wire)
    fulfill = encode_fulfill(IlpFulfill(bytes(32), bytes(32767)))
    with pytest.raises(DecodeError, match="more than the 32767 allowed"):
        decode_fulfill(_grow_last_field(fulfill, bytes(32767), 1))
    reject = encode_reject(IlpReject("F99", "g.x", "m", bytes(32767)))
    with pytest.raises(DecodeError, match="more than the 32767 allowed"):
        decode_reply(_grow_last_field(reject, bytes(32767), 1))
    # Reject "message ... 0..8191 bytes" and triggeredBy at most 1023 characters
    long_message = encode_reject(IlpReject("F99", "g.x", "m" * 8191, b""))
    message_at = long_message.index(b"m" * 8191)
    too_long = (
        long_message[: message_at - 2]
        + (8192).to_bytes(2, "big")
        + b"m" * 8192
        + long_message[message_at + 8191 :]
    )
    envelope = len(too_long) - 4
    too_long = too_long[:2] + envelope.to_bytes(2, "big") + too_long[4:]
    with pytest.raises(DecodeError, match="message: 8192 bytes, more than the 8191 allowed"):
        decode_reject(too_long)


def test_buffer_types_are_accepted() -> None:
    raw = encode_prepare(PREPARE)
    assert decode_prepare(bytearray(raw)) == PREPARE
    assert decode_prepare(memoryview(raw)) == PREPARE
    assert decode_packet(memoryview(raw)) == PREPARE
    with_bytearray = IlpPrepare(
        1,
        PREPARE.expires_at,
        bytearray(32),  # type: ignore[arg-type]
        "g.a",
        bytearray(b"x"),  # type: ignore[arg-type]
    )
    assert decode_prepare(encode_prepare(with_bytearray)) == IlpPrepare(
        1, PREPARE.expires_at, bytes(32), "g.a", b"x"
    )


# ------------------------------------------------------------------- decode details


def test_unknown_codes_are_accepted() -> None:
    raw = encode_reject(IlpReject("F10", "g.c", "m"))
    assert decode_reject(raw).code == "F10"
    assert decode_reject(encode_reject(IlpReject(ErrorCode.T04_INSUFFICIENT_LIQUIDITY))).code == (
        ErrorCode.T04_INSUFFICIENT_LIQUIDITY
    )


def test_surplus_inside_envelope_is_ignored() -> None:
    for packet in (PREPARE, IlpFulfill(bytes(32), b"d"), IlpReject("F99", "g.a", "m", b"d")):
        raw = encode_packet(packet)
        contents = raw[2:] + b"extra"
        assert decode_packet(bytes([raw[0], len(contents)]) + contents) == packet


def test_fields_may_not_overrun_the_envelope() -> None:
    raw = encode_prepare(PREPARE)
    # Shrink the envelope by one byte but keep the byte after it: data overruns contents.
    with pytest.raises(DecodeError):
        decode_prepare(bytes([12, raw[1] - 1]) + raw[2:])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x0c",
        b"\x0c\x80",
        b"\x0c\x81\x05" + bytes(5),  # non-canonical envelope length
        b"\x0e\x06\xff00\x00\x00\x00",  # code not ASCII
        b"\x0e\x07F00\x01\xff\x00\x00",  # triggeredBy not ASCII
        b"\x0e\x07F00\x00\x01\xff\x00",  # message not UTF-8
        b"\x0d\x20" + bytes(32),  # fulfill without data
        b"\x01\x00",  # pre-ILPv4 type
        b"\x0b\x00",
    ],
)
def test_decode_rejects(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_packet(raw)


def test_prepare_destination_not_ascii() -> None:
    raw = bytearray(encode_prepare(PREPARE))
    raw[-3] = 0xFF  # inside "g.alice"
    with pytest.raises(DecodeError):
        decode_prepare(bytes(raw))


def test_decoding_is_tolerant_about_address_syntax() -> None:
    raw = encode_prepare(PREPARE).replace(b"\x07g.alice", b"\x07nope  x")
    assert decode_prepare(raw).destination == "nope  x"


def test_amount_too_large_data() -> None:
    assert encode_amount_too_large_data(1234, 1000).hex() == ("00000000000004d200000000000003e8")
    assert decode_amount_too_large_data(bytes(16) + b"x") == (0, 0)
    with pytest.raises(DecodeError):
        decode_amount_too_large_data(bytes(15))


# ----------------------------------------------------------------------- hypothesis

_SEGMENT = st.text(st.sampled_from("abcxyzABC019_~-"), min_size=1, max_size=10)
ADDRESSES = st.builds(
    lambda scheme, segments: ".".join([scheme, *segments]),
    st.sampled_from(sorted(ALLOCATION_SCHEMES)),
    st.lists(_SEGMENT, min_size=1, max_size=5),
)
TIMES = st.builds(
    lambda dt: dt.replace(microsecond=dt.microsecond // 1000 * 1000, tzinfo=UTC),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
)
DATA = st.one_of(st.binary(max_size=130), st.binary(min_size=250, max_size=300))
PREPARES = st.builds(
    IlpPrepare,
    amount=st.integers(0, 2**64 - 1),
    expires_at=TIMES,
    execution_condition=st.binary(min_size=32, max_size=32),
    destination=ADDRESSES,
    data=DATA,
)
FULFILLS = st.builds(IlpFulfill, st.binary(min_size=32, max_size=32), DATA)
REJECTS = st.builds(
    IlpReject,
    code=st.one_of(
        st.sampled_from(list(ErrorCode)),
        st.text(st.characters(max_codepoint=127), min_size=3, max_size=3),
    ),
    triggered_by=st.one_of(st.just(""), ADDRESSES),
    message=st.text(max_size=100),
    data=DATA,
)
PACKETS = st.one_of(PREPARES, FULFILLS, REJECTS)


@FAST
@given(PACKETS, st.binary(max_size=8))
def test_round_trip(packet: IlpPacket, trailing: bytes) -> None:
    raw = encode_packet(packet)
    assert decode_packet(raw) == packet
    assert decode_packet(raw + trailing) == packet
    assert encode_packet(decode_packet(raw)) == raw
    if isinstance(packet, IlpPrepare):
        assert decode_prepare(raw) == packet
        # The fast path and the generic Reader path agree.
        assert ilp._read_prepare(ilp._contents(raw, 12)[1]) == packet
    else:
        assert decode_reply(raw) == packet


@FAST
@given(TIMES)
def test_timestamp_round_trip_hypothesis(moment: datetime) -> None:
    wire = format_timestamp(moment)
    assert len(wire) == 17
    assert wire.isdigit()
    assert parse_timestamp(wire) == moment


DECODERS = [
    decode_packet,
    decode_prepare,
    decode_fulfill,
    decode_reject,
    decode_reply,
    parse_timestamp,
    decode_amount_too_large_data,
]


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    for decoder in DECODERS:
        offset = 0
        try:
            decoder(data)
        except DecodeError as exc:
            offset = exc.offset
        assert offset >= 0


@FAST
@given(PACKETS, st.data())
def test_mutated_packets_raise_only_decode_error(packet: IlpPacket, draw: st.DataObject) -> None:
    raw = bytearray(encode_packet(packet))
    for _ in range(draw.draw(st.integers(1, 4))):
        index = draw.draw(st.integers(0, len(raw) - 1))
        raw[index] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        for decoder in DECODERS[:5]:
            with contextlib.suppress(DecodeError):
                decoder(candidate)
        # Whatever the fast path accepts, the generic path accepts identically.
        try:
            fast: object = decode_prepare(candidate)
        except DecodeError:
            fast = DecodeError
        try:
            slow: object = ilp._read_prepare(ilp._contents(candidate, 12)[1])
        except DecodeError:
            slow = DecodeError
        assert fast == slow
