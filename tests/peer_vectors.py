"""Reading and checking the ILP Prepares and peer-protocol packets of vector files.

Used by the codec tests whose vectors carry ILP packets (ccp.json, ildcp.json,
il-balance.json, echo.json, ilp-packet.json).  Vector files are still read only through
:mod:`tests.vectorlib`, by each test module at import time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ilp_receiver.codec.ilp import (
    PEER_PROTOCOL_CONDITION,
    PEER_PROTOCOL_FULFILLMENT,
    IlpFulfill,
    IlpPrepare,
    decode_fulfill,
    decode_prepare,
    encode_fulfill,
    encode_prepare,
)


def vector_time(iso: str) -> datetime:
    """Parse the vectors' ``2017-12-23T01:21:40.549Z`` form."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def prepare_from_json(p: dict[str, Any]) -> IlpPrepare:
    """The Prepare a vector's ``prepare`` (or ``json``) object describes, field by field."""
    return IlpPrepare(
        int(p["amount"]),
        vector_time(p["expiresAt"]),
        bytes.fromhex(p["executionCondition_hex"]),
        p["destination"],
        bytes.fromhex(p["data_hex"]),
    )


def prepare_case(case: dict[str, Any]) -> IlpPrepare:
    """The case's Prepare (``prepare``); asserts it is its bytes (``hex``) both ways."""
    raw = bytes.fromhex(case["hex"])
    expected = prepare_from_json(case["prepare"])
    assert decode_prepare(raw) == expected
    assert encode_prepare(expected) == raw
    return expected


def peer_request_case(case: dict[str, Any]) -> IlpPrepare:
    """As :func:`prepare_case`, for a peer-protocol request: asserts its condition too."""
    expected = prepare_case(case)
    assert expected.execution_condition == PEER_PROTOCOL_CONDITION
    return expected


def assert_built_prepare(built: IlpPrepare, expected: IlpPrepare, raw: bytes) -> None:
    """What our builder made is the vector's Prepare, field by field and byte for byte."""
    assert built == expected
    assert encode_prepare(built) == raw


def assert_peer_fulfill(built: IlpFulfill, data: bytes, raw: bytes) -> None:
    """A peer-protocol answer: the zero fulfillment with ``data``, both directions."""
    assert built == IlpFulfill(PEER_PROTOCOL_FULFILLMENT, data)
    assert encode_fulfill(built) == raw
    assert decode_fulfill(raw) == built
