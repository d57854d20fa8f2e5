"""BTP/2.0 frames (ilp_receiver.codec.btp) against btp.json and btp-fixtures.json."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec import btp
from ilp_receiver.codec.btp import (
    BTP_ERROR_NAMES,
    ILP_PLUGIN_BTP_ERROR_CODES,
    BtpError,
    BtpErrorCode,
    BtpFrame,
    BtpLegacyFrame,
    BtpMessage,
    BtpResponse,
    BtpTransfer,
    BtpType,
    ContentType,
    ProtocolData,
    auth_error_frame,
    auth_message,
    decode_btp,
    encode_btp,
    encode_ilp_message,
    encode_ilp_response,
    error_frame,
    error_message,
    find_protocol_data,
    format_generalized_time,
    ilp_message,
    ilp_response,
    parse_auth,
    parse_generalized_time,
)
from ilp_receiver.codec.ilp import decode_packet, encode_packet
from ilp_receiver.errors import DecodeError, EncodeError, RemoteProtocolError
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
# read at import time so the vector coverage test sees them
TYPE_IDS: dict[str, int] = section("btp.json", "type_ids")
CONTENT_TYPES: dict[str, int] = section("btp.json", "content_types")


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _entries(items: list[dict[str, Any]]) -> tuple[ProtocolData, ...]:
    out = []
    for item in items:
        data = bytes.fromhex(item["data_hex"])
        if "data_utf8" in item:
            assert data.decode("utf-8") == item["data_utf8"]
        out.append(ProtocolData(item["protocolName"], item["contentType"], data))
    return tuple(out)


def frame_from_json(j: dict[str, Any]) -> BtpFrame:
    """The frame a vector's ``json`` describes."""
    entries = _entries(j["protocolData"])
    kind = BtpType(j["type"])
    if "type_name" in j:
        assert j["type_name"] == f"TYPE_{kind.name}"
    if kind is BtpType.MESSAGE:
        return BtpMessage(j["requestId"], entries)
    if kind is BtpType.RESPONSE:
        return BtpResponse(j["requestId"], entries)
    if kind is BtpType.TRANSFER:
        return BtpTransfer(j["requestId"], int(j["amount"]), entries)
    assert kind is BtpType.ERROR
    triggered_at = _time(j["triggeredAt"])
    if "triggeredAt_wire" in j:
        assert format_generalized_time(triggered_at) == j["triggeredAt_wire"]
        assert parse_generalized_time(j["triggeredAt_wire"]) == triggered_at
    return BtpError(
        j["requestId"], j["code"], j["name"], triggered_at, j["data_utf8"].encode(), entries
    )


# ---------------------------------------------------------------------- vectors


def test_type_ids() -> None:
    assert {name.removesuffix("_unused_in_btp2"): v for name, v in TYPE_IDS.items()} == {
        t.name: t.value for t in BtpType
    }


def test_content_types() -> None:
    assert CONTENT_TYPES == {
        "application_octet_stream": ContentType.OCTET_STREAM,
        "text_plain_utf8": ContentType.TEXT_PLAIN_UTF8,
        "application_json": ContentType.APPLICATION_JSON,
    }


@pytest.mark.parametrize("case", cases("btp.json", "cases"), ids=case_id)
def test_btp_cases_both_directions(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    expected = frame_from_json(case["json"])
    assert decode_btp(raw) == expected
    assert decode_btp(memoryview(raw)) == expected
    assert encode_btp(expected) == raw


@pytest.mark.parametrize("case", cases("btp-fixtures.json", "fixtures"), ids=case_id)
def test_btp_fixtures_both_directions(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    expected = frame_from_json(case["json"])
    assert BtpType(case["json"]["type"]).name.lower() == case["name"]
    decoded = decode_btp(raw)
    assert decoded == expected
    assert encode_btp(expected) == raw
    # the legacy "ilp" payload is framing-only; the first entry is still found by name
    found = find_protocol_data(decoded, "ilp")
    assert found is not None
    assert found.data.hex() == case["json"]["protocolData"][0]["data_hex"]


def _case(name: str) -> dict[str, Any]:
    for case in cases("btp.json", "cases"):
        if case["name"] == name:
            result: dict[str, Any] = case
            return result
    raise KeyError(name)


@pytest.mark.parametrize(
    ("name", "username"),
    [
        ("auth_message_with_username", "alice"),
        ("auth_message_bearer_token_only", None),
        ("auth_message_empty_username", ""),
    ],
)
def test_auth_message_builder_and_parser(name: str, username: str | None) -> None:
    case = _case(name)
    raw = bytes.fromhex(case["hex"])
    built = auth_message(case["json"]["requestId"], "secret-token", username)
    assert encode_btp(built) == raw
    assert parse_auth(decode_btp(raw)) == (username, "secret-token")


def test_auth_response_ok() -> None:
    case = _case("auth_response_ok")
    assert encode_btp(BtpResponse(case["json"]["requestId"])) == bytes.fromhex(case["hex"])


def test_auth_error_builder() -> None:
    case = _case("auth_error")
    j = case["json"]
    frame = auth_error_frame(j["requestId"], _time(j["triggeredAt"]), j["data_utf8"])
    assert encode_btp(frame) == bytes.fromhex(case["hex"])
    assert error_message(frame) == "invalid auth_token"


def test_error_from_handler_builder() -> None:
    case = _case("error_from_handler")
    j = case["json"]
    frame = error_frame(
        j["requestId"],
        BtpErrorCode.NOT_ACCEPTED,
        "NotAcceptedError",
        _time(j["triggeredAt"]),
        json.loads(j["data_utf8"])["message"],
    )
    assert encode_btp(frame) == bytes.fromhex(case["hex"])
    assert error_message(frame) == "no request handler registered"


@pytest.mark.parametrize(
    "name", ["message_ilp_prepare", "response_ilp_fulfill", "response_ilp_reject"]
)
def test_ilp_over_btp(name: str) -> None:
    case = _case(name)
    raw = bytes.fromhex(case["hex"])
    ilp = bytes.fromhex(case["ilp_packet_hex"])
    request_id = case["json"]["requestId"]
    # the ILP payload round-trips through the ILP codec
    assert encode_packet(decode_packet(ilp)) == ilp
    frame = decode_btp(raw)
    entry = find_protocol_data(frame, "ilp")
    assert entry is not None
    assert entry.data == ilp
    assert entry.content_type == ContentType.OCTET_STREAM
    if isinstance(frame, BtpMessage):
        assert ilp_message(request_id, ilp) == frame
        assert encode_ilp_message(request_id, ilp) == raw
    else:
        assert ilp_response(request_id, ilp) == frame
        assert encode_ilp_response(request_id, ilp) == raw


def test_large_ilp_prepare_fast_path() -> None:
    case = _case("message_large_ilp_prepare")
    raw = bytes.fromhex(case["hex"])
    ilp = bytes.fromhex(case["json"]["protocolData"][0]["data_hex"])
    assert raw[5:8] == b"\x82\x01\x7f"
    assert encode_ilp_message(7, ilp) == raw
    assert encode_packet(decode_packet(ilp)) == ilp


# ------------------------------------------------------------------ behaviour

T0 = datetime(2018, 4, 2, 16, 43, 50, 123000, tzinfo=UTC)


def test_error_code_table_is_rfc23() -> None:
    assert {c.value: BTP_ERROR_NAMES[c] for c in BtpErrorCode} == {
        "T00": "UnreachableError",
        "F00": "NotAcceptedError",
        "F01": "InvalidFieldsError",
        "F03": "TransferNotFoundError",
        "F04": "InvalidFulfillmentError",
        "F05": "DuplicateIdError",
        "F06": "AlreadyRolledBackError",
        "F07": "AlreadyFulfilledError",
        "F08": "InsufficientBalanceError",
    }
    assert ILP_PLUGIN_BTP_ERROR_CODES["InsufficientBalanceError"] == "F07"


def test_legacy_types_decode_to_legacy_frame() -> None:
    for kind in (BtpType.PREPARE, BtpType.FULFILL, BtpType.REJECT):
        raw = bytes((kind,)) + b"\x00\x00\x00\x05" + b"\x03abc"
        frame = decode_btp(raw)
        assert frame == BtpLegacyFrame(kind, 5, b"abc")
        assert encode_btp(frame) == raw
        assert find_protocol_data(frame, "ilp") is None


@pytest.mark.parametrize("type_byte", [0, 8, 255])
def test_unknown_type_is_decode_error(type_byte: int) -> None:
    with pytest.raises(DecodeError, match="unknown BTP packet type"):
        decode_btp(bytes((type_byte,)) + b"\x00\x00\x00\x01\x02\x01\x00")


@pytest.mark.parametrize(
    ("hex_", "reason"),
    [
        ("", "too short"),
        ("0100000001", "too short"),
        ("010000000103", "needs 3 bytes"),
        ("01000000018105010000000000", "short form"),
        ("0100000001800100", "zero length bytes"),
        ("010000000100", "missing count"),
        ("01000000010201ff", "cannot fit"),
        ("01000000010109", "too large"),
        ("060000000107010102c3a90000", "not ASCII"),
        ("0700000001050000000000", "amount"),
        ("020000000102463030", "needs 3 bytes"),
        ("0200000001048080800000", "not ASCII"),
    ],
)
def test_malformed_frames(hex_: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_btp(bytes.fromhex(hex_))


def test_bare_zero_count_and_trailing_bytes_are_tolerated() -> None:
    # btp-packet reads the count as "n then an n-byte integer": 00 means zero entries
    assert decode_btp(bytes.fromhex("01000000010100")) == BtpResponse(1)
    # bytes after the protocol data and after the envelope are ignored (RFC 30)
    assert decode_btp(bytes.fromhex("0100000001030100ff") + b"junk") == BtpResponse(1)


def test_generalized_time() -> None:
    assert format_generalized_time(T0) == "20180402164350.123Z"
    other_zone = T0.astimezone(timezone(timedelta(hours=2)))
    assert format_generalized_time(other_zone) == "20180402164350.123Z"
    assert format_generalized_time(T0.replace(microsecond=123999)) == "20180402164350.123Z"
    assert parse_generalized_time(b"20180402164350.123Z") == T0
    assert parse_generalized_time("20180402164350Z") == T0.replace(microsecond=0)
    assert parse_generalized_time("20180402164350.1234567Z") == T0.replace(microsecond=123456)
    for bad in ("20180402164350.123", "2018040216435.123Z", "20181302164350.123Z", "x", ""):
        with pytest.raises(DecodeError):
            parse_generalized_time(bad)
    with pytest.raises(EncodeError):
        format_generalized_time(datetime(2018, 1, 1))  # naive


def test_error_frame_with_bad_time_is_decode_error() -> None:
    good = encode_btp(BtpError(1, "F00", "X", T0, b""))
    bad = good.replace(b"20180402164350.123Z", b"20180402164350.123X")
    with pytest.raises(DecodeError, match="GeneralizedTime"):
        decode_btp(bad)


def test_error_message_fallbacks() -> None:
    assert error_message(BtpError(1, "F00", "X", T0, b'{"message": 3}')) == '{"message": 3}'
    assert error_message(BtpError(1, "F00", "X", T0, b"{broken")) == "{broken"
    assert error_message(BtpError(1, "F00", "X", T0, b"\xff")) == "\ufffd"
    frame = error_frame(1, "T00", "UnreachableError", T0, 'caf\u00e9 "q"')
    assert frame.data == '{"message":"caf\u00e9 \\"q\\""}'.encode()
    assert error_message(frame) == 'caf\u00e9 "q"'


@pytest.mark.parametrize(
    "frame",
    [
        BtpMessage(-1),
        BtpMessage(2**32),
        BtpTransfer(1, -1),
        BtpTransfer(1, 2**64),
        BtpError(1, "F0", "X", T0),
        BtpError(1, "F\u00e90", "X", T0),
        BtpError(1, "F00", "N\u00e9", T0),
        BtpError(1, "F00", "X", datetime(2018, 1, 1)),
        BtpMessage(1, (ProtocolData("ilp", 256, b""),)),
        BtpMessage(1, (ProtocolData("ilp", -1, b""),)),
        BtpMessage(1, (ProtocolData("\u00e9", 0, b""),)),
        BtpLegacyFrame(BtpType.MESSAGE, 1, b""),
        BtpMessage(1, (ProtocolData("ilp", 0, "text"),)),  # type: ignore[arg-type]
        BtpError(1, "F00", "X", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_encode_refuses_bad_values(frame: BtpFrame) -> None:
    with pytest.raises(EncodeError):
        encode_btp(frame)


def test_encode_refuses_non_frames() -> None:
    with pytest.raises(EncodeError):
        encode_btp("nope")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_ilp_response(2**32, b"")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (BtpResponse(1, (ProtocolData("auth", 0, b""),)), "auth Message"),
        (BtpMessage(1), "must be 'auth'"),
        (BtpMessage(1, (ProtocolData("auth_token", 1, b"t"),)), "must be 'auth'"),
        (BtpMessage(1, (ProtocolData("auth", 0, b""),)), "auth_token"),
        (
            BtpMessage(1, (ProtocolData("auth", 0, b""), ProtocolData("auth_username", 1, b"u"))),
            "auth_token",
        ),
        (
            BtpMessage(
                1,
                (
                    ProtocolData("auth", 0, b""),
                    ProtocolData("auth_token", 1, b"a"),
                    ProtocolData("auth_token", 1, b"b"),
                ),
            ),
            "duplicate",
        ),
        (
            BtpMessage(1, (ProtocolData("auth", 0, b""), ProtocolData("auth_token", 2, b"t"))),
            "content type",
        ),
        (
            BtpMessage(1, (ProtocolData("auth", 0, b""), ProtocolData("auth_token", 1, b"\xff"))),
            "UTF-8",
        ),
    ],
)
def test_parse_auth_refuses(frame: BtpFrame, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_auth(frame)


def test_parse_auth_accepts_octet_stream_token_and_extra_entries() -> None:
    frame = BtpMessage(
        9,
        (
            ProtocolData("auth", 0, b""),
            ProtocolData("other", 2, b"{}"),
            ProtocolData("auth_token", 0, b"tok"),
        ),
    )
    assert parse_auth(frame) == (None, "tok")


def test_module_exports_exist() -> None:
    for name in btp.__all__:
        assert hasattr(btp, name)


# ------------------------------------------------------------------ hypothesis

request_ids = st.integers(0, 2**32 - 1)
names = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=20)
entries = st.lists(
    st.builds(ProtocolData, names, st.integers(0, 255), st.binary(max_size=300)), max_size=4
).map(tuple)
times = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
frames = st.one_of(
    st.builds(BtpMessage, request_ids, entries),
    st.builds(BtpResponse, request_ids, entries),
    st.builds(BtpTransfer, request_ids, st.integers(0, 2**64 - 1), entries),
    st.builds(
        BtpError,
        request_ids,
        st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=3, max_size=3),
        names,
        times,
        st.binary(max_size=200),
        entries,
    ),
    st.builds(
        BtpLegacyFrame,
        st.sampled_from([BtpType.PREPARE, BtpType.FULFILL, BtpType.REJECT]),
        request_ids,
        st.binary(max_size=200),
    ),
)


@FAST
@given(frames)
def test_roundtrip(frame: BtpFrame) -> None:
    raw = encode_btp(frame)
    assert decode_btp(raw) == frame
    assert encode_btp(decode_btp(raw)) == raw


@FAST
@given(request_ids, st.binary(max_size=70000))
def test_fast_paths_match_generic(request_id: int, ilp: bytes) -> None:
    assert encode_ilp_message(request_id, ilp) == encode_btp(ilp_message(request_id, ilp))
    assert encode_ilp_response(request_id, ilp) == encode_btp(ilp_response(request_id, ilp))


@FAST
@given(times)
def test_generalized_time_roundtrip(t: datetime) -> None:
    assert parse_generalized_time(format_generalized_time(t)) == t


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_btp(data)


@FAST
@given(st.sampled_from([1, 2, 6, 7]), st.binary(max_size=200))
def test_arbitrary_payloads_raise_only_decode_error(type_byte: int, payload: bytes) -> None:
    raw = bytes((type_byte,)) + b"\x00\x00\x00\x01" + btp._var(payload)
    with contextlib.suppress(DecodeError):
        decode_btp(raw)


@FAST
@given(st.text(max_size=40))
def test_arbitrary_time_strings_raise_only_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        parse_generalized_time(text)
