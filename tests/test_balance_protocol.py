"""il-balance (ilp_receiver.codec.balance) against il-balance.json (constructed vectors)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.balance import (
    BALANCE_DESTINATION,
    MAX_INT64,
    MIN_INT64,
    balance_fulfill,
    balance_request,
    check_balance_request,
    decode_balance,
    decode_balance_fulfill,
    encode_balance,
)
from ilp_receiver.codec.ildcp import PEER_PROTOCOL_EXPIRY, PeerProtocolRequestError
from ilp_receiver.codec.ilp import (
    PEER_PROTOCOL_CONDITION,
    IlpFulfill,
    IlpPrepare,
    decode_fulfill,
    decode_prepare,
    encode_fulfill,
)
from ilp_receiver.errors import DecodeError, EncodeError
from tests.peer_vectors import (
    assert_built_prepare,
    assert_peer_fulfill,
    peer_request_case,
    vector_time,
)
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
FILE = "il-balance.json"


NOW = vector_time(section(FILE, "fixed_now"))


def test_fixed_now() -> None:
    assert datetime(2018, 4, 2, 16, 43, 50, tzinfo=UTC) == NOW


@pytest.mark.parametrize("case", cases(FILE, "cases"), ids=case_id)
def test_cases(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    if case["name"] == "request":
        expected = peer_request_case(case)
        assert expected.destination == BALANCE_DESTINATION
        built = balance_request(NOW + PEER_PROTOCOL_EXPIRY)
        assert_built_prepare(built, expected, raw)
        check_balance_request(decode_prepare(raw), NOW)
        return
    balance = int(case["balance"])
    data = bytes.fromhex(case["fulfill_data_hex"])
    assert encode_balance(balance) == data
    assert decode_balance(data) == balance
    assert_peer_fulfill(balance_fulfill(balance), data, raw)
    assert decode_balance_fulfill(decode_fulfill(raw)) == balance


def test_range_is_int64() -> None:
    for bad in (MAX_INT64 + 1, MIN_INT64 - 1, 2**64):
        with pytest.raises(EncodeError):
            encode_balance(bad)
    with pytest.raises(EncodeError):
        encode_balance(1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 7, 9, 16])
def test_data_must_be_8_bytes(size: int) -> None:
    with pytest.raises(DecodeError, match="exactly 8 bytes"):
        decode_balance(bytes(size))


def test_bad_fulfillment_and_server_checks() -> None:
    with pytest.raises(DecodeError, match="expected fulfillment"):
        decode_balance_fulfill(IlpFulfill(b"\x02" * 32, bytes(8)))
    request = balance_request(NOW)
    with pytest.raises(PeerProtocolRequestError, match="expired"):
        check_balance_request(request, NOW + timedelta(milliseconds=1))
    with pytest.raises(PeerProtocolRequestError, match="not an il-balance request"):
        check_balance_request(IlpPrepare(0, NOW, PEER_PROTOCOL_CONDITION, "peer.config"), NOW)
    with pytest.raises(PeerProtocolRequestError, match="condition"):
        check_balance_request(IlpPrepare(0, NOW, bytes(32), BALANCE_DESTINATION), NOW)


@FAST
@given(st.integers(MIN_INT64, MAX_INT64))
def test_roundtrip(balance: int) -> None:
    assert decode_balance(encode_balance(balance)) == balance
    fulfill = decode_fulfill(encode_fulfill(balance_fulfill(balance)))
    assert decode_balance_fulfill(fulfill) == balance


@FAST
@given(st.binary(max_size=20))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_balance(data)
