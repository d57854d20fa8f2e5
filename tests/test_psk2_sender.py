"""ilp_receiver.psk2.sender: rebuild every recorded sender Prepare byte for byte.

The JavaScript senders' random draws (payment ids, IVs, quote conditions) are listed
per scenario in ``random_bytes_drawn_hex``; replaying them through our sender must give
the recorded Prepare exactly.  The receiver's recorded answers are then read back with
:func:`parse_reply`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from ilp_receiver.codec.ilp import IlpFulfill, IlpReject, decode_reply, encode_prepare
from ilp_receiver.codec.oer import MAX_UINT64
from ilp_receiver.codec.psk2 import Draft1Packet, Draft2Packet, derive_keys, seal
from ilp_receiver.errors import EncodeError
from ilp_receiver.psk2 import (
    build_chunk_prepare,
    build_quote_prepare,
    build_request_prepare,
    parse_reply,
)
from ilp_receiver.psk2.sender import DEFAULT_EXPIRY, DEFAULT_QUOTE_SOURCE_AMOUNT
from tests.vectorlib import case_id, cases, section

D1 = "psk2-draft1.json"
D2 = "psk2-draft2.json"


def iso(text: str) -> datetime:
    """A vector timestamp as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def draws(scenario: dict[str, Any]) -> list[bytes]:
    """The scenario's random draws, in order."""
    return [bytes.fromhex(h) for h in scenario["random_bytes_drawn_hex"]]


@pytest.mark.parametrize("scenario", cases(D1, "scenarios"), ids=case_id)
def test_rebuild_draft1_sender_prepare(scenario: dict[str, Any]) -> None:
    receiver = section(D1, "receiver")
    secret = bytes.fromhex(receiver["shared_secret_hex"])
    sent = scenario["sender_prepare"]
    packet = scenario["request"]["packet"]
    payment_id = bytes.fromhex(packet["paymentId_hex"])
    expires_at = iso(section(D1, "fixed_now")) + DEFAULT_EXPIRY
    assert expires_at == iso(sent["expiresAt"])
    random = draws(scenario)
    # 0.2.1 draws the payment id first unless the caller supplied one (chunked_*).
    if random[0] == payment_id:
        random.pop(0)
    iv = random.pop(0)
    if not scenario["condition_matches"]:
        # quoteSourceAmount: "random condition, paymentAmount = chunkAmount = 2^64-1".
        condition = random.pop(0)
        assert int(packet["chunkAmount"]) == int(packet["paymentAmount"]) == MAX_UINT64
        prepare = build_quote_prepare(
            receiver["destination_account"],
            secret,
            expires_at=expires_at,
            iv=iv,
            payment_id=payment_id,
            condition=condition,
            sequence=packet["sequence"],
        )
        assert prepare.amount == DEFAULT_QUOTE_SOURCE_AMOUNT
    else:
        prepare = build_chunk_prepare(
            receiver["destination_account"],
            secret,
            amount=int(sent["amount"]),
            expires_at=expires_at,
            iv=iv,
            payment_id=payment_id,
            sequence=packet["sequence"],
            payment_amount=int(packet["paymentAmount"]),
            chunk_amount=int(packet["chunkAmount"]),
            last_chunk=packet["type"] == 1,
        )
    # What is left is the receiver's IV (if it answered with encrypted data).
    response_data = bytes.fromhex(scenario["receiver_response"]["data_hex"])
    assert random == ([response_data[:12]] if response_data else [])
    assert encode_prepare(prepare).hex() == sent["hex"]
    assert prepare.data.hex() == sent["data_hex"]
    assert prepare.execution_condition.hex() == sent["executionCondition_hex"]


@pytest.mark.parametrize("scenario", cases(D1, "scenarios"), ids=case_id)
def test_parse_draft1_reply(scenario: dict[str, Any]) -> None:
    secret = bytes.fromhex(section(D1, "receiver")["shared_secret_hex"])
    expected = scenario["receiver_response"]
    reply = decode_reply(bytes.fromhex(expected["hex"]))
    request = scenario["request"]["packet"]
    request_packet = Draft1Packet(
        request["type"],
        bytes.fromhex(request["paymentId_hex"]),
        request["sequence"],
        int(request["paymentAmount"]),
        int(request["chunkAmount"]),
    )
    result = parse_reply(secret, reply, request_packet)
    assert result.fulfilled == (expected["kind"] == "fulfill")
    if "psk_packet" in expected:
        packet = expected["psk_packet"]
        assert result.packet == Draft1Packet(
            packet["type"],
            bytes.fromhex(packet["paymentId_hex"]),
            packet["sequence"],
            int(packet["paymentAmount"]),
            int(packet["chunkAmount"]),
            bytes.fromhex(packet["applicationData_hex"]),
        )
        assert result.delivered_amount == 950
    else:
        assert result.packet is None
        assert result.delivered_amount is None
    if isinstance(reply, IlpReject):
        assert (result.code, result.message, result.triggered_by) == (
            expected["code"],
            expected["message"],
            expected["triggeredBy"],
        )
    else:
        assert result.fulfillment.hex() == expected["fulfillment_hex"]
    # A reply read against the wrong request is not trusted.
    other = Draft1Packet(1, bytes(16), 99, 0, 0)
    assert parse_reply(secret, reply, other).packet is None
    # Nor is one read with the wrong secret.
    assert parse_reply(bytes(32), reply).packet is None


@pytest.mark.parametrize("scenario", cases(D2, "scenarios"), ids=case_id)
def test_rebuild_draft2_sender_prepare(scenario: dict[str, Any]) -> None:
    receiver = section(D2, "receiver")
    sent = scenario["sender_prepare"]
    destination = sent["destination"]
    if destination == receiver["destination_account"]:
        secret = bytes.fromhex(receiver["shared_secret_hex"])
    else:
        assert destination == receiver["with_key_id"]["destination_account"]
        secret = bytes.fromhex(receiver["with_key_id"]["shared_secret_hex"])
    packet = scenario["request"]["packet"]
    iv, receiver_iv = draws(scenario)
    prepare = build_request_prepare(
        destination,
        secret,
        amount=int(sent["amount"]),
        expires_at=iso(section(D2, "fixed_now")) + DEFAULT_EXPIRY,
        iv=iv,
        request_id=packet["requestId"],
        min_amount=int(packet["amount"]),
        data=bytes.fromhex(packet["data_hex"]),
        unfulfillable_condition=(
            None if scenario["condition_matches"] else bytes.fromhex(sent["executionCondition_hex"])
        ),
    )
    assert encode_prepare(prepare).hex() == sent["hex"]
    expected = scenario["receiver_response"]
    assert bytes.fromhex(expected["data_hex"])[:12] == receiver_iv
    reply = decode_reply(bytes.fromhex(expected["hex"]))
    request = Draft2Packet(
        4, packet["requestId"], int(packet["amount"]), bytes.fromhex(packet["data_hex"])
    )
    result = parse_reply(secret, reply, request)
    response = expected["psk_packet"]
    assert result.packet == Draft2Packet(
        response["type"],
        response["requestId"],
        int(response["amount"]),
        bytes.fromhex(response["data_hex"]),
    )
    assert result.delivered_amount == int(scenario["sender_result"]["destinationAmount"])
    assert result.fulfilled == scenario["sender_result"]["fulfilled"]
    assert parse_reply(secret, reply, Draft2Packet(4, 999, 0)).packet is None


def test_reply_without_data_and_mismatched_type() -> None:
    secret = bytes(range(32))
    keys = derive_keys(secret)
    reject = IlpReject("F99", "test.a", "nope")
    assert parse_reply(secret, reject).packet is None
    # A type-3 (error) packet inside a Fulfill does not answer the request.
    request = Draft1Packet(1, bytes(16), 0, MAX_UINT64, 0)
    data = seal(keys.encryption_key, bytes(12), Draft1Packet(3, bytes(16), 0, 0, 5))
    fulfill = IlpFulfill(bytes(32), data)
    assert parse_reply(secret, fulfill).packet == Draft1Packet(3, bytes(16), 0, 0, 5)
    assert parse_reply(secret, fulfill, request).packet is None
    # A draft-2 answer to a draft-1 request is not trusted either.
    data = seal(keys.encryption_key, bytes(12), Draft2Packet(5, 0, 5))
    assert parse_reply(secret, IlpFulfill(bytes(32), data), request).packet is None


def test_sender_validation() -> None:
    later = iso("2018-04-02T16:44:20.000Z") + timedelta(seconds=1)
    with pytest.raises(EncodeError):
        build_chunk_prepare(
            "test.a", bytes(31), amount=1, expires_at=later, iv=bytes(12), payment_id=bytes(16)
        )
    with pytest.raises(EncodeError):
        build_chunk_prepare(
            "test.a", bytes(32), amount=1, expires_at=later, iv=bytes(12), payment_id=bytes(15)
        )
    with pytest.raises(EncodeError):
        build_quote_prepare(
            "test.a",
            bytes(32),
            expires_at=later,
            iv=bytes(12),
            payment_id=bytes(16),
            condition=bytes(31),
        )
    with pytest.raises(EncodeError):
        build_request_prepare(
            "test.a", bytes(32), amount=1, expires_at=later, iv=bytes(11), request_id=1
        )
