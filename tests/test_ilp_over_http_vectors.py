"""ILP over HTTP wire values (ilp_receiver.codec.http_oer + the ILP codec) against
ilp-over-http.json (captured between two ilp-plugin-http 1.6.1 instances)."""

from __future__ import annotations

from typing import Any

import pytest

from ilp_receiver.codec.http_oer import (
    ACCEPTED_CONTENT_TYPES,
    AUTHORIZATION_HEADER,
    BEARER_PREFIX,
    ILP_DESTINATION_HEADER,
    ILP_OVER_HTTP_CONTENT_TYPE,
    ILP_OVER_HTTP_RESPONSE_CONTENT_TYPE,
    ILP_PEER_NAME_HEADER,
    MAX_BODY_SIZE,
    OCTET_STREAM_CONTENT_TYPE,
    UNAUTHORIZED_BODY,
    UNAUTHORIZED_CONTENT_TYPE,
    UNAUTHORIZED_STATUS,
    authorization_header,
    bearer_token,
    ilp_request_path,
)
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    decode_fulfill,
    decode_packet,
    decode_prepare,
    decode_reply,
    encode_fulfill,
    encode_packet,
    encode_prepare,
)
from tests.vectorlib import cases, section

FILE = "ilp-over-http.json"
TOKEN = "shh-incoming"
# read at import time so the vector coverage test sees them
PREPARE_HEX: str = section(FILE, "prepare_hex")
FULFILL_HEX: str = section(FILE, "fulfill_hex")
CLIENT_RESULTS_HEX: list[str] = section(FILE, "client_results_hex")
UNAUTHORIZED: int = section(FILE, "unauthorized_status")


def _prepare() -> IlpPrepare:
    return decode_prepare(bytes.fromhex(PREPARE_HEX))


def test_prepare_hex() -> None:
    raw = bytes.fromhex(PREPARE_HEX)
    prepare = _prepare()
    assert prepare.amount == 100
    assert prepare.destination == "test.bob.x"
    assert prepare.data == b"hi"
    assert prepare.expires_at.isoformat() == "2019-01-23T00:00:30+00:00"
    assert encode_prepare(prepare) == raw
    assert decode_packet(raw) == prepare


def test_fulfill_hex() -> None:
    raw = bytes.fromhex(FULFILL_HEX)
    fulfill = decode_fulfill(raw)
    assert fulfill == IlpFulfill(b"\x01" * 32, b"ok")
    assert encode_fulfill(fulfill) == raw
    assert decode_reply(raw) == fulfill


def _exchange_id(exchange: dict[str, Any]) -> str:
    return f"{exchange['request']['headers']['authorization']}->{exchange['response']['status']}"


@pytest.mark.parametrize("exchange", cases(FILE, "exchanges"), ids=_exchange_id)
def test_exchanges(exchange: dict[str, Any]) -> None:
    request, response = exchange["request"], exchange["response"]
    headers = request["headers"]
    body = bytes.fromhex(request["body_hex"])
    assert request["method"] == "POST"
    assert request["url"] == "/ilp"
    assert headers["content-type"] == ILP_OVER_HTTP_CONTENT_TYPE
    assert headers["content-type"] in ACCEPTED_CONTENT_TYPES
    assert int(headers["content-length"]) == len(body) <= MAX_BODY_SIZE
    # every header ilp-plugin-http sends is one we name (header names are case-insensitive)
    known = {
        AUTHORIZATION_HEADER,
        ILP_PEER_NAME_HEADER,
        ILP_DESTINATION_HEADER,
        "Content-Type",
        "Content-Length",
    }
    assert set(headers) <= {name.lower() for name in known}
    if ILP_PEER_NAME_HEADER.lower() in headers:
        assert headers[ILP_PEER_NAME_HEADER.lower()] in ("alice", "bob")
    prepare = decode_prepare(body)
    assert prepare == _prepare()
    assert encode_prepare(prepare) == body
    if ILP_DESTINATION_HEADER.lower() in headers:
        # "ILP-Destination duplicates the Prepare's destination"
        assert headers[ILP_DESTINATION_HEADER.lower()] == prepare.destination

    authorization = headers[AUTHORIZATION_HEADER.lower()]
    token = bearer_token(authorization)
    bearer = authorization.startswith(BEARER_PREFIX)
    assert authorization_header(token, bearer=bearer) == authorization

    response_body = bytes.fromhex(response["body_hex"])
    assert int(response["headers"]["content-length"]) == len(response_body)
    if token == TOKEN:
        assert response["status"] == 200
        assert response["headers"]["content-type"] == ILP_OVER_HTTP_RESPONSE_CONTENT_TYPE
        assert response["headers"]["content-type"] == OCTET_STREAM_CONTENT_TYPE
        reply = decode_reply(response_body)
        assert reply == decode_fulfill(bytes.fromhex(FULFILL_HEX))
        assert encode_packet(reply) == response_body
    else:
        assert response["status"] == UNAUTHORIZED_STATUS
        assert response["headers"]["content-type"] == UNAUTHORIZED_CONTENT_TYPE
        assert response_body == UNAUTHORIZED_BODY


def test_client_results_hex() -> None:
    results = CLIENT_RESULTS_HEX
    successes = [e for e in cases(FILE, "exchanges") if e["response"]["status"] == 200]
    assert len(results) == len(successes) == 2
    for result_hex, exchange in zip(results, successes, strict=True):
        raw = bytes.fromhex(result_hex)
        assert raw.hex() == exchange["response"]["body_hex"]
        reply = decode_reply(raw)
        assert isinstance(reply, IlpFulfill)
        assert encode_fulfill(reply) == raw


def test_unauthorized_status() -> None:
    assert UNAUTHORIZED == UNAUTHORIZED_STATUS == 401


def test_header_helpers() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer abc") == "abc"
    assert bearer_token("abc") == "abc"
    assert authorization_header("abc") == "Bearer abc"
    assert authorization_header("abc", bearer=False) == "abc"
    assert ilp_request_path("3442196b-5fc7-4d60-a17e-a9416a77745b") == (
        "/ilp/3442196b-5fc7-4d60-a17e-a9416a77745b"
    )
