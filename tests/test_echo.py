"""ILP echo / ping (ilp_receiver.codec.echo) against echo.json."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.echo import (
    DEFAULT_MIN_MESSAGE_WINDOW,
    ECHO_DATA_PREFIX,
    ECHO_RESPONSE_DATA,
    EchoRequest,
    EchoResponse,
    decode_echo_data,
    decode_echo_request,
    echo_reply_prepare,
    echo_request_prepare,
    encode_echo_data,
    encode_echo_request,
    is_echo_response,
)
from ilp_receiver.codec.ilp import decode_prepare, encode_prepare
from ilp_receiver.errors import DecodeError, EncodeError
from tests.peer_vectors import prepare_case
from tests.vectorlib import case_id, cases

FAST = settings(max_examples=200, deadline=None)


def _cases() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in cases("echo.json", "cases")}


@pytest.mark.parametrize("case", cases("echo.json", "cases"), ids=case_id)
def test_cases_both_directions(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    expected = prepare_case(case)
    message = decode_echo_data(expected.data)
    assert encode_echo_data(message) == expected.data
    if case["name"] == "ping_request":
        assert message == EchoRequest("test.alice")
        assert decode_echo_request(expected.data) == message
        assert encode_echo_request("test.alice") == expected.data
        built = echo_request_prepare(
            destination="test.connie",
            source_address="test.alice",
            amount=expected.amount,
            execution_condition=expected.execution_condition,
            expires_at=expected.expires_at,
        )
        assert encode_prepare(built) == raw
        assert not is_echo_response(expected.data)
    else:
        assert case["name"] == "ping_echoed_back"
        assert message == EchoResponse()
        assert expected.data == ECHO_RESPONSE_DATA
        assert is_echo_response(expected.data)


def test_connector_turns_request_into_echoed_back() -> None:
    c = _cases()
    request = decode_prepare(bytes.fromhex(c["ping_request"]["hex"]))
    reply = echo_reply_prepare(request, min_message_window=DEFAULT_MIN_MESSAGE_WINDOW)
    assert encode_prepare(reply) == bytes.fromhex(c["ping_echoed_back"]["hex"])
    # the returning Prepare is not itself an echo request: F01 "unexpected ping response."
    with pytest.raises(DecodeError, match="unexpected ping response"):
        echo_reply_prepare(reply)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (ECHO_DATA_PREFIX, "too short"),
        (b"ECHOECHOECHOECHX\x00\x00", "ECHO prefix"),
        (ECHO_DATA_PREFIX + b"\x01", "unexpected ping response"),
        (ECHO_DATA_PREFIX + b"\x02\x00", "unknown echo type"),
        (ECHO_DATA_PREFIX + b"\x00", "sourceAddress"),
        (ECHO_DATA_PREFIX + b"\x00\x05abc", "needs 5"),
        (ECHO_DATA_PREFIX + b"\x00\x01\xff", "ASCII"),
    ],
)
def test_f01_cases(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_echo_request(data)


def test_encode_refuses() -> None:
    with pytest.raises(EncodeError):
        encode_echo_request("test.\u00e9")
    with pytest.raises(EncodeError):
        encode_echo_data("x")  # type: ignore[arg-type]


def test_trailing_bytes_ignored() -> None:
    assert decode_echo_data(encode_echo_request("test.a") + b"more") == EchoRequest("test.a")
    assert decode_echo_data(ECHO_RESPONSE_DATA + b"more") == EchoResponse()


@FAST
@given(st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=300))
def test_roundtrip(source: str) -> None:
    assert decode_echo_request(encode_echo_request(source)) == EchoRequest(source)
    assert decode_echo_data(encode_echo_data(EchoResponse())) == EchoResponse()


@FAST
@given(st.binary(max_size=60), st.booleans())
def test_arbitrary_bytes_raise_only_decode_error(data: bytes, prefixed: bool) -> None:
    if prefixed:
        data = ECHO_DATA_PREFIX + data
    for decoder in (decode_echo_data, decode_echo_request):
        with contextlib.suppress(DecodeError):
            decoder(data)
