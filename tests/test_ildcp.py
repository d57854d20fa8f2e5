"""IL-DCP (ilp_receiver.codec.ildcp) against ildcp.json."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.ildcp import (
    ILDCP_DESTINATION,
    PEER_PROTOCOL_EXPIRY,
    IldcpResponse,
    PeerProtocolRequestError,
    check_ildcp_request,
    decode_ildcp_fulfill,
    decode_ildcp_response,
    encode_ildcp_response,
    ildcp_fulfill,
    ildcp_request,
    ildcp_result,
    ildcp_serve,
)
from ilp_receiver.codec.ilp import (
    PEER_PROTOCOL_CONDITION,
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    decode_fulfill,
    decode_prepare,
    decode_reject,
    decode_reply,
    encode_fulfill,
    encode_reject,
)
from ilp_receiver.errors import DecodeError, EncodeError, IlpError, RemoteProtocolError
from tests.peer_vectors import (
    assert_built_prepare,
    assert_peer_fulfill,
    peer_request_case,
    vector_time,
)
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
FILE = "ildcp.json"


NOW = vector_time(section(FILE, "fixed_now"))
SERVER = "test.connie"
CHILD = IldcpResponse("test.connie.child1", 9, "XRP")


def _case(name: str) -> dict[str, Any]:
    for case in cases(FILE, "cases"):
        if case["name"] == name:
            result: dict[str, Any] = case
            return result
    raise KeyError(name)


def test_fixed_now() -> None:
    assert datetime(2018, 4, 2, 16, 43, 50, tzinfo=UTC) == NOW


@pytest.mark.parametrize("case", cases(FILE, "cases"), ids=case_id)
def test_cases(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    name = case["name"]
    if name == "request":
        expected = peer_request_case(case)
        assert expected.destination == ILDCP_DESTINATION
        built = ildcp_request(NOW + PEER_PROTOCOL_EXPIRY)
        assert_built_prepare(built, expected, raw)
        check_ildcp_request(built, NOW)
    elif name.startswith("response_"):
        j = case["json"]
        response = IldcpResponse(j["clientAddress"], j["assetScale"], j["assetCode"])
        data = bytes.fromhex(case["fulfill_data_hex"])
        assert encode_ildcp_response(response) == data
        assert decode_ildcp_response(data) == response
        assert_peer_fulfill(ildcp_fulfill(response), data, raw)
        assert decode_ildcp_fulfill(decode_fulfill(raw)) == response
        assert ildcp_result(decode_reply(raw)) == response
    elif name == "serve_valid":
        request = decode_prepare(bytes.fromhex(_case("request")["hex"]))
        reply = ildcp_serve(request, CHILD, server_address=SERVER, now=NOW)
        assert isinstance(reply, IlpFulfill)
        assert encode_fulfill(reply) == raw
        assert decode_ildcp_fulfill(decode_fulfill(raw)) == CHILD
    else:
        assert name in ("serve_wrong_condition", "serve_expired")
        request = decode_prepare(bytes.fromhex(case["request_hex"]))
        r = case["response"]
        expected_reject = IlpReject(
            r["code"], r["triggeredBy"], r["message"], bytes.fromhex(r["data"])
        )
        assert decode_reject(raw) == expected_reject
        reply = ildcp_serve(request, CHILD, server_address=SERVER, now=NOW)
        assert reply == expected_reject
        assert isinstance(reply, IlpReject)
        assert encode_reject(reply) == raw
        with pytest.raises(PeerProtocolRequestError) as info:
            check_ildcp_request(request, NOW)
        assert info.value.code == "F00"
        assert info.value.message == r["message"]
        assert isinstance(info.value, IlpError)
        with pytest.raises(RemoteProtocolError, match="IL-DCP failed: " + r["message"]):
            ildcp_result(decode_reply(raw))


def test_wrong_destination_and_expiry_boundary() -> None:
    request = ildcp_request(NOW)
    check_ildcp_request(request, NOW)  # "Date.now() > expiresAt" -- equal is not expired
    with pytest.raises(PeerProtocolRequestError, match="expired"):
        check_ildcp_request(request, NOW + timedelta(milliseconds=1))
    other = IlpPrepare(0, NOW, PEER_PROTOCOL_CONDITION, "peer.configx")
    with pytest.raises(PeerProtocolRequestError, match=r"packet is not an IL-DCP request\."):
        check_ildcp_request(other, NOW)


def test_bad_fulfillment_and_bad_data() -> None:
    with pytest.raises(DecodeError, match="expected fulfillment"):
        decode_ildcp_fulfill(IlpFulfill(b"\x01" * 32, encode_ildcp_response(CHILD)))
    for bad in ("", "12", "0261", "016100", "01ff0003585250", "01610003ffffff"):
        with pytest.raises(DecodeError):
            decode_ildcp_response(bytes.fromhex(bad))


def test_trailing_bytes_ignored() -> None:
    assert decode_ildcp_response(encode_ildcp_response(CHILD) + b"future") == CHILD


@pytest.mark.parametrize(
    "response",
    [
        IldcpResponse("test.\u00e9", 9, "XRP"),
        IldcpResponse("test.a", 256, "XRP"),
        IldcpResponse("test.a", -1, "XRP"),
    ],
)
def test_encode_refuses(response: IldcpResponse) -> None:
    with pytest.raises(EncodeError):
        encode_ildcp_response(response)


responses = st.builds(
    IldcpResponse,
    st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=300),
    st.integers(0, 255),
    st.text(max_size=20),
)


@FAST
@given(responses)
def test_roundtrip(response: IldcpResponse) -> None:
    data = encode_ildcp_response(response)
    assert decode_ildcp_response(data) == response
    assert decode_ildcp_fulfill(decode_fulfill(encode_fulfill(ildcp_fulfill(response)))) == (
        response
    )


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_ildcp_response(data)
    with contextlib.suppress(DecodeError):
        decode_ildcp_fulfill(IlpFulfill(bytes(32), data))
