"""ilp_receiver.psk2 receiver and secrets against ``psk2-draft1.json`` / ``psk2-draft2.json``.

Every recorded receiver answer is reproduced byte for byte (fixed clock = ``fixed_now``;
the receiver's IV is the one the JavaScript receiver drew, which is also the first 12
bytes of its response data).  The one documented difference (11-open-questions item
12: we send the running total where 0.5.0 sent 0) is asserted explicitly.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    decode_prepare,
    decode_reply,
    encode_packet,
    encode_prepare,
)
from ilp_receiver.codec.oer import MAX_UINT64
from ilp_receiver.codec.psk2 import (
    Draft1Packet,
    Draft2Packet,
    Psk2Packet,
    condition_for,
    decode_any,
    decode_plaintext,
    decrypt,
    derive_keys,
    fulfillment_for,
    seal,
)
from ilp_receiver.codec.psk2 import (
    encode_packet as encode_psk2,
)
from ilp_receiver.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    IlpError,
    InvalidAddressError,
    LocalProtocolError,
)
from ilp_receiver.psk2 import (
    Acceptance,
    Psk2Format,
    Psk2Receiver,
    ReceiverSecrets,
    UnfulfillableRequest,
    WrongReceiverError,
    build_chunk_prepare,
    build_quote_prepare,
    build_request_prepare,
)
from ilp_receiver.psk2.receiver import (
    CONDITION_MISMATCH_DRAFT1,
    EXPIRED_MESSAGE,
    NOT_ACCEPTED_MESSAGE,
    UNABLE_TO_PARSE,
    UNEXPECTED_PACKET_TYPE,
    UNEXPECTED_REQUEST_TYPE,
    Decision,
)
from ilp_receiver.psk2.secrets import base64url, decode_base64_lenient
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
D1 = "psk2-draft1.json"
D2 = "psk2-draft2.json"
ZERO_IV = bytes(12)
# Read at import so tests/test_vector_coverage.py sees every section requested.
VECTORS: dict[tuple[str, str], Any] = {
    (name, key): section(name, key)
    for name, key in [
        (D1, "fixed_now"),
        (D1, "receiver"),
        (D1, "payment_handler_events"),
        (D2, "fixed_now"),
        (D2, "receiver"),
        (D2, "legacy_to_new_receiver"),
    ]
}


# ---------------------------------------------------------------------- helpers


def iso(text: str) -> datetime:
    """A vector timestamp (``2018-04-02T16:44:20.000Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def prepare_from_json(obj: dict[str, Any]) -> IlpPrepare:
    """The Prepare a vector describes field by field; checked against its ``hex``."""
    prepare = IlpPrepare(
        int(obj["amount"]),
        iso(obj["expiresAt"]),
        bytes.fromhex(obj["executionCondition_hex"]),
        obj["destination"],
        bytes.fromhex(obj["data_hex"]),
    )
    raw = bytes.fromhex(obj["hex"])
    assert encode_prepare(prepare) == raw
    assert decode_prepare(raw) == prepare
    return prepare


def psk_packet_from_json(packet: dict[str, Any]) -> Psk2Packet:
    """A vector's decoded PSK2 packet (either draft) as our dataclass."""
    if "paymentId_hex" in packet:
        assert packet.get("format", "draft1") == "draft1"
        return Draft1Packet(
            packet["type"],
            bytes.fromhex(packet["paymentId_hex"]),
            packet["sequence"],
            int(packet["paymentAmount"]),
            int(packet["chunkAmount"]),
            bytes.fromhex(packet["applicationData_hex"]),
        )
    assert packet["format"] == "draft2"
    return Draft2Packet(
        packet["type"],
        packet["requestId"],
        int(packet["amount"]),
        bytes.fromhex(packet["data_hex"]),
    )


def check_envelope(key: bytes, data: bytes, envelope: dict[str, Any]) -> bytes:
    """IV || tag || ciphertext layout and the decrypted plaintext of a recorded envelope."""
    assert data[:12].hex() == envelope["iv"]
    assert data[12:28].hex() == envelope["tag"]
    assert data[28:].hex() == envelope["ciphertext"]
    plaintext = decrypt(key, data)
    assert plaintext.hex() == envelope["plaintext"]
    return plaintext


def check_answer(answer: IlpFulfill | IlpReject, expected: dict[str, Any], key: bytes) -> None:
    """Our answer equals the recorded one byte for byte, field by field, decrypted."""
    raw = bytes.fromhex(expected["hex"])
    assert encode_packet(answer) == raw
    assert decode_reply(raw) == answer
    assert answer.data.hex() == expected["data_hex"]
    if expected["kind"] == "fulfill":
        assert isinstance(answer, IlpFulfill)
        assert answer.fulfillment.hex() == expected["fulfillment_hex"]
    else:
        assert expected["kind"] == "reject"
        assert isinstance(answer, IlpReject)
        assert answer.code == expected["code"]
        assert answer.message == expected["message"]
        assert answer.triggered_by == expected["triggeredBy"]
    if "psk_envelope" in expected:
        plaintext = check_envelope(key, answer.data, expected["psk_envelope"])
        packet = psk_packet_from_json(expected["psk_packet"])
        assert decode_plaintext(plaintext) == packet
        assert encode_psk2(packet) == plaintext
    else:
        assert answer.data == b""


def receiver_secrets(name: str = D1) -> ReceiverSecrets:
    """The vector receiver's secrets."""
    return ReceiverSecrets(bytes.fromhex(section(name, "receiver")["receiver_secret_hex"]))


def fixed_now(name: str = D1) -> datetime:
    """The vector's fixed clock."""
    return iso(section(name, "fixed_now"))


def address(name: str = D1) -> str:
    """The receiver's IL-DCP address in a vector file."""
    value: str = section(name, "receiver")["ilp_address_from_ildcp"]
    return value


def receiver_iv(scenario: dict[str, Any]) -> bytes:
    """The IV the JS receiver drew for its response: its last random draw."""
    data = bytes.fromhex(scenario["receiver_response"]["data_hex"])
    if not data:
        return ZERO_IV  # no encrypted response: the IV is not used
    iv = bytes.fromhex(scenario["random_bytes_drawn_hex"][-1])
    assert data[:12] == iv
    return iv


# ---------------------------------------------------------------------- draft 1


def test_fixed_now() -> None:
    assert fixed_now() == iso("2018-04-02T16:43:50.000Z")
    assert fixed_now(D2) == fixed_now()


def test_draft1_receiver_derivation() -> None:
    receiver = section(D1, "receiver")
    secrets = receiver_secrets()
    assert secrets.receiver_id_raw.hex() == receiver["receiver_id_raw_hex"]
    assert secrets.receiver_id == receiver["receiver_id"]
    assert secrets.generator.hex() == receiver["shared_secret_generator_hex"]
    token = bytes.fromhex(receiver["token_hex"])
    assert base64url(token) == receiver["token_b64url"]
    destination, shared_secret = secrets.issue(receiver["ilp_address_from_ildcp"], token)
    assert destination == receiver["destination_account"]
    assert shared_secret.hex() == receiver["shared_secret_hex"]
    assert base64.b64encode(shared_secret).decode() == receiver["shared_secret_base64"]
    keys = derive_keys(shared_secret)
    assert keys.encryption_key.hex() == receiver["derived_keys"]["encryption_key_hex"]
    assert keys.fulfillment_key.hex() == receiver["derived_keys"]["fulfillment_hmac_key_hex"]
    parsed = secrets.parse_destination(destination, receiver["ilp_address_from_ildcp"])
    assert (parsed.token, parsed.key, parsed.app_segments) == (token, b"", ())
    assert parsed.shared_secret == shared_secret
    assert parsed.with_receiver_id
    assert receiver["receiver_secret_hex"] not in repr(secrets)
    assert receiver["shared_secret_hex"] not in repr(parsed)


#: What the 0.2.1 payment handler did in the recorded run (see each scenario's note).
DRAFT1_HANDLER = {
    "single_chunk_ok": "accept_chunk",  # acceptSingleChunk
    "chunked_seq0": "accept_payment",  # accept(): later chunks are not asked about
    "handler_rejects": "reject_payment",  # reject("no thanks")
}


@dataclass
class Draft1Run:
    """All draft-1 scenarios replayed in order through one receiver."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    answers: dict[str, IlpFulfill | IlpReject] = field(default_factory=dict)
    asked: list[Acceptance] = field(default_factory=list)
    receiver: Psk2Receiver | None = None


@pytest.fixture(scope="module")
def draft1_run() -> Draft1Run:
    run = Draft1Run(receiver=Psk2Receiver(receiver_secrets(), address()))
    receiver = run.receiver
    assert receiver is not None
    for scenario in cases(D1, "scenarios"):
        name = scenario["name"]
        prepare = decode_prepare(bytes.fromhex(scenario["receiver_prepare"]["hex"]))
        iv = receiver_iv(scenario)
        decision = receiver.handle_prepare(prepare, fixed_now(), iv=iv)
        run.decisions[name] = decision
        if isinstance(decision, IlpReject):
            run.answers[name] = decision
            continue
        assert isinstance(decision, Acceptance)
        if decision.payment_accepted:
            run.answers[name] = receiver.fulfill(decision, iv=iv)
            continue
        run.asked.append(decision)
        action = DRAFT1_HANDLER[name]
        if action == "reject_payment":
            run.answers[name] = receiver.refuse(
                decision, iv=iv, message="no thanks", reject_payment=True
            )
        else:
            run.answers[name] = receiver.fulfill(
                decision, iv=iv, accept_payment=action == "accept_payment"
            )
    return run


@pytest.mark.parametrize("scenario", cases(D1, "scenarios"), ids=case_id)
def test_draft1_scenario_request(scenario: dict[str, Any]) -> None:
    sent = prepare_from_json(scenario["sender_prepare"])
    delivered = prepare_from_json(scenario["receiver_prepare"])
    # The connector simulation delivers 95 % and changes nothing else.
    assert delivered.amount == sent.amount * 95 // 100
    assert (delivered.expires_at, delivered.execution_condition, delivered.data) == (
        sent.expires_at,
        sent.execution_condition,
        sent.data,
    )
    assert delivered.expires_at == fixed_now() + timedelta(seconds=30)
    keys = receiver_secrets().parse_destination(delivered.destination, address()).keys
    plaintext = check_envelope(keys.encryption_key, delivered.data, scenario["request"]["envelope"])
    packet = psk_packet_from_json(scenario["request"]["packet"])
    assert decode_any(keys.encryption_key, delivered.data) == packet
    assert encode_psk2(packet) == plaintext
    fulfillment = fulfillment_for(keys.fulfillment_key, delivered.data)
    assert fulfillment.hex() == scenario["expected_fulfillment_from_data_hex"]
    assert condition_for(fulfillment).hex() == scenario["expected_condition_from_data_hex"]
    assert scenario["condition_matches"] == (
        condition_for(fulfillment) == delivered.execution_condition
    )


@pytest.mark.parametrize("scenario", cases(D1, "scenarios"), ids=case_id)
def test_draft1_scenario_receiver_answer(scenario: dict[str, Any], draft1_run: Draft1Run) -> None:
    keys = derive_keys(bytes.fromhex(section(D1, "receiver")["shared_secret_hex"]))
    check_answer(
        draft1_run.answers[scenario["name"]], scenario["receiver_response"], keys.encryption_key
    )


def test_draft1_scenario_outcomes(draft1_run: Draft1Run) -> None:
    """sender_result / sender_error of every scenario agree with our answers."""
    for scenario in cases(D1, "scenarios"):
        answer = draft1_run.answers[scenario["name"]]
        result, error = scenario["sender_result"], scenario["sender_error"]
        if isinstance(answer, IlpFulfill):
            assert error is None
            assert result["chunksFulfilled"] == 1
            assert result["chunksRejected"] == 0
            assert result["destinationAmount"] == "950"
        elif error is not None:
            assert result is None
            assert (
                error == f"Error sending payment. code: {answer.code}, message: {answer.message} "
            )
        else:  # the quote: a Reject that the sender reads as a result
            assert scenario["name"] == "quote_unfulfillable"
            assert result == {"sourceAmount": "1000", "destinationAmount": "950"}


def test_payment_handler_events(draft1_run: Draft1Run) -> None:
    """The application is asked exactly when 0.2.1 called its payment handler."""
    events = section(D1, "payment_handler_events")
    assert [
        {
            "paymentId_hex": a.payment_id.hex(),
            "expectedAmount": str(a.payment_amount),
            "prepareAmount": str(a.amount),
        }
        for a in draft1_run.asked
    ] == events
    assert all(a.first_chunk and not a.payment_accepted for a in draft1_run.asked)
    seq1 = draft1_run.decisions["chunked_seq1_last"]
    assert isinstance(seq1, Acceptance)
    assert seq1.payment_accepted
    assert not seq1.first_chunk
    assert seq1.received_before == 950
    assert seq1.last_chunk
    assert seq1.sequence == 1


def test_draft1_payment_records(draft1_run: Draft1Run) -> None:
    receiver = draft1_run.receiver
    assert receiver is not None
    token = bytes.fromhex(section(D1, "receiver")["token_hex"])
    chunked = receiver.payment_record(token, bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeaf00"))
    assert chunked is not None
    assert (chunked.received, chunked.finished, chunked.accepted) == (1900, True, True)
    assert chunked.chunks_fulfilled == 2
    rejected = receiver.payment_record(token, bytes.fromhex("b53afe72172b082524f782ec39e77713"))
    assert rejected is not None
    assert (rejected.received, rejected.accepted, rejected.rejection_message) == (
        0,
        False,
        "no thanks",
    )
    # The quote and the too-small chunk left no record (records change only on fulfil).
    assert receiver.payment_record(token, bytes.fromhex("91f7aa1063bbe033b16f4b4fa4bd996d")) is None
    assert receiver.payment_record(token, bytes.fromhex("81f4e4a614260a96e62e67761c49d37f")) is None


@pytest.mark.parametrize("case", cases(D1, "receiver_only_cases"), ids=case_id)
def test_draft1_receiver_only_case(case: dict[str, Any]) -> None:
    prepare = decode_prepare(bytes.fromhex(case["prepare_hex"]))
    assert encode_prepare(prepare).hex() == case["prepare_hex"]
    receiver = Psk2Receiver(receiver_secrets(), address())
    answer = receiver.handle_prepare(prepare, fixed_now(), iv=ZERO_IV)
    assert isinstance(answer, IlpReject)
    check_answer(answer, case["response"], b"")
    if "request_plaintext_hex" in case:
        keys = receiver_secrets().parse_destination(prepare.destination, address()).keys
        assert decrypt(keys.encryption_key, prepare.data).hex() == case["request_plaintext_hex"]


# ---------------------------------------------------------------------- draft 2


def test_draft2_receiver_derivation() -> None:
    receiver = section(D2, "receiver")
    secrets = receiver_secrets(D2)
    addr = receiver["ilp_address_from_ildcp"]
    assert addr == address()
    token = bytes.fromhex(receiver["token_hex"])
    issued = secrets.issue(addr, token, with_receiver_id=False)
    assert issued.destination == receiver["destination_account"]
    assert issued.shared_secret.hex() == receiver["shared_secret_hex"]
    parsed = secrets.parse_destination(issued.destination, addr)
    assert (parsed.token, parsed.key, parsed.with_receiver_id) == (token, b"", False)
    with_key = receiver["with_key_id"]
    key_id = bytes.fromhex(with_key["key_id_hex"])
    token = bytes.fromhex(with_key["token_hex"])
    issued = secrets.issue(addr, token, key_id, with_receiver_id=False)
    assert issued.destination == with_key["destination_account"]
    assert issued.shared_secret.hex() == with_key["shared_secret_hex"]
    parsed = secrets.parse_destination(issued.destination, addr)
    assert (parsed.token, parsed.key, parsed.shared_secret) == (
        token,
        key_id,
        issued.shared_secret,
    )
    # The same token||key in our default (receiver-id) form derives the same secret.
    ours = secrets.issue(addr, token, key_id)
    assert ours.destination == f"{addr}.{secrets.receiver_id}.{base64url(token + key_id)}"
    assert ours.shared_secret == issued.shared_secret


def draft2_secret(destination: str) -> bytes:
    """The shared secret a draft-2 vector destination was issued with."""
    receiver = section(D2, "receiver")
    if destination == receiver["destination_account"]:
        return bytes.fromhex(receiver["shared_secret_hex"])
    assert destination == receiver["with_key_id"]["destination_account"]
    return bytes.fromhex(receiver["with_key_id"]["shared_secret_hex"])


@pytest.mark.parametrize("scenario", cases(D2, "scenarios"), ids=case_id)
def test_draft2_scenario(scenario: dict[str, Any]) -> None:
    sent = prepare_from_json(scenario["sender_prepare"])
    delivered = prepare_from_json(scenario["receiver_prepare"])
    assert delivered.amount == 950
    assert sent.amount == 1000
    keys = derive_keys(draft2_secret(delivered.destination))
    plaintext = check_envelope(keys.encryption_key, delivered.data, scenario["request"]["envelope"])
    request = psk_packet_from_json(scenario["request"]["packet"])
    assert isinstance(request, Draft2Packet)
    assert decode_plaintext(plaintext) == request
    assert encode_psk2(request) == plaintext
    fulfillment = fulfillment_for(keys.fulfillment_key, delivered.data)
    assert fulfillment.hex() == scenario["expected_fulfillment_from_data_hex"]
    assert scenario["condition_matches"] == (
        condition_for(fulfillment) == delivered.execution_condition
    )

    receiver = Psk2Receiver(receiver_secrets(D2), address(D2))
    iv = receiver_iv(scenario)
    decision = receiver.handle_prepare(delivered, fixed_now(D2), iv=iv)
    # What 0.5.0's request handler saw, and what our decision tells the application.
    [saw] = scenario["request_handler_saw"]
    assert isinstance(decision, Acceptance | UnfulfillableRequest)
    assert decision.format is Psk2Format.DRAFT2
    assert saw["isFulfillable"] == isinstance(decision, Acceptance)
    assert decision.data.hex() == saw["data_hex"]
    assert decision.key == (bytes.fromhex(saw["keyId_hex"]) if saw["keyId_hex"] else b"")
    assert decision.request_id == request.request_id
    assert decision.min_amount == request.amount
    # 0.5.0 reported amount 0 to the handler when unfulfillable; we report what arrived.
    assert decision.amount == 950
    assert int(saw["amount"]) == (950 if isinstance(decision, Acceptance) else 0)
    if isinstance(decision, UnfulfillableRequest):
        assert decision.condition_matched == scenario["condition_matches"]

    response = psk_packet_from_json(scenario["receiver_response"]["psk_packet"])
    assert isinstance(response, Draft2Packet)
    if response.type == 5:
        assert isinstance(decision, Acceptance)
        answer: IlpFulfill | IlpReject = receiver.fulfill(decision, iv=iv, data=response.data)
    else:
        answer = receiver.refuse(decision, iv=iv, data=response.data)
    check_answer(answer, scenario["receiver_response"], keys.encryption_key)

    result = scenario["sender_result"]
    assert scenario["sender_error"] is None
    assert result["fulfilled"] == isinstance(answer, IlpFulfill)
    assert result["destinationAmount"] == "950"
    assert result["data"] == response.data.hex()
    if isinstance(answer, IlpReject):
        assert (result["code"], result["message"], result["triggeredBy"]) == (
            answer.code,
            answer.message,
            answer.triggered_by,
        )
        assert result["unauthenticatedData"] == {"type": "Buffer", "data": []}


def test_legacy_to_new_receiver() -> None:
    """Draft-1 packets to a 0.5.0 receiver: our documented difference (item 12)."""
    legacy = section(D2, "legacy_to_new_receiver")
    by_name = {case["name"]: case for case in legacy}
    assert set(by_name) == {"legacy_chunk_ok", "legacy_quote"}
    keys = derive_keys(bytes.fromhex(section(D2, "receiver")["shared_secret_hex"]))

    # legacy_chunk_ok: a type-1 chunk; 0.5.0 Fulfilled with paymentAmount 0.
    case = by_name["legacy_chunk_ok"]
    prepare = decode_prepare(bytes.fromhex(case["prepare_hex"]))
    expected = case["receiver_response"]
    iv = bytes.fromhex(expected["data_hex"])[:12]
    receiver = Psk2Receiver(receiver_secrets(D2), address(D2))
    decision = receiver.handle_prepare(prepare, fixed_now(D2), iv=iv)
    assert isinstance(decision, Acceptance)
    assert decision.format is Psk2Format.DRAFT1
    [saw] = case["request_handler_saw"]
    # 0.5.0 passed paymentId || UInt32 sequence as the request data of a legacy packet.
    assert saw["data_hex"] == (decision.payment_id + decision.sequence.to_bytes(4, "big")).hex()
    assert saw["isFulfillable"]
    assert saw["amount"] == str(decision.amount)
    assert saw["keyId_hex"] is None
    assert decision.key == b""
    ours = receiver.fulfill(decision, iv=iv)
    assert ours.fulfillment.hex() == expected["fulfillment_hex"]
    theirs = psk_packet_from_json(expected["psk_packet"])
    assert isinstance(theirs, Draft1Packet)
    mine = decode_any(keys.encryption_key, ours.data)
    assert isinstance(mine, Draft1Packet)
    # The one difference: paymentAmount is the running total (950), not 0.
    assert theirs.payment_amount == 0
    assert mine.payment_amount == 950
    assert mine == Draft1Packet(
        theirs.type,
        theirs.payment_id,
        theirs.sequence,
        950,
        theirs.chunk_amount,
        theirs.application_data,
    )
    # Everything else is identical: with 0.5.0's 0 our bytes equal theirs.
    check_answer(
        IlpFulfill(ours.fulfillment, seal(keys.encryption_key, iv, theirs)),
        expected,
        keys.encryption_key,
    )

    # legacy_quote: a fresh receiver has received nothing, so the answer is identical.
    case = by_name["legacy_quote"]
    assert case["request_handler_saw"] == []
    prepare = decode_prepare(bytes.fromhex(case["prepare_hex"]))
    expected = case["receiver_response"]
    iv = bytes.fromhex(expected["data_hex"])[:12]
    fresh = Psk2Receiver(receiver_secrets(D2), address(D2))
    answer = fresh.handle_prepare(prepare, fixed_now(D2), iv=iv)
    assert isinstance(answer, IlpReject)
    check_answer(answer, expected, keys.encryption_key)
    # After legacy_chunk_ok on the same receiver, the quote reports the total (950).
    answer = receiver.handle_prepare(prepare, fixed_now(D2), iv=iv)
    assert isinstance(answer, IlpReject)
    assert answer.code == "F99"
    packet = decode_any(keys.encryption_key, answer.data)
    assert packet == Draft1Packet(3, bytes.fromhex("31" * 16), 0, 950, 950)


# ---------------------------------------------------------------------- behaviour

ADDRESS = "test.example.receiver"
NOW = datetime.fromisoformat("2018-04-02T16:43:50+00:00")
LATER = NOW + timedelta(seconds=30)


def fresh() -> tuple[ReceiverSecrets, Psk2Receiver, str, bytes]:
    """A receiver plus one issued destination/secret."""
    secrets = ReceiverSecrets(bytes(range(32)))
    receiver = Psk2Receiver(secrets, ADDRESS)
    destination, secret = secrets.issue(ADDRESS, b"T" * 18)
    return secrets, receiver, destination, secret


def chunk(
    destination: str,
    secret: bytes,
    amount: int = 100,
    *,
    payment_id: bytes = b"P" * 16,
    sequence: int = 0,
    payment_amount: int = MAX_UINT64,
    chunk_amount: int = 0,
    last: bool = False,
    iv: bytes = ZERO_IV,
) -> IlpPrepare:
    """A draft-1 chunk Prepare."""
    return build_chunk_prepare(
        destination,
        secret,
        amount=amount,
        expires_at=LATER,
        iv=iv,
        payment_id=payment_id,
        sequence=sequence,
        payment_amount=payment_amount,
        chunk_amount=chunk_amount,
        last_chunk=last,
    )


def test_wrong_secret_is_f06() -> None:
    _, receiver, destination, _ = fresh()
    answer = receiver.handle_prepare(chunk(destination, bytes(32)), NOW, iv=ZERO_IV)
    assert answer == IlpReject("F06", ADDRESS, UNABLE_TO_PARSE)


def test_tampered_ciphertext_is_f06() -> None:
    _, receiver, destination, secret = fresh()
    prepare = chunk(destination, secret)
    for index in (0, 12, 28, len(prepare.data) - 1):
        data = bytearray(prepare.data)
        data[index] ^= 0x40
        tampered = IlpPrepare(
            prepare.amount,
            prepare.expires_at,
            prepare.execution_condition,
            destination,
            bytes(data),
        )
        assert receiver.handle_prepare(tampered, NOW, iv=ZERO_IV) == IlpReject(
            "F06", ADDRESS, UNABLE_TO_PARSE
        )
    for short_data in (b"", prepare.data[:27], prepare.data[:28]):
        short = IlpPrepare(100, LATER, prepare.execution_condition, destination, short_data)
        assert receiver.handle_prepare(short, NOW, iv=ZERO_IV) == IlpReject(
            "F06", ADDRESS, UNABLE_TO_PARSE
        )


def test_wrong_condition_is_f05() -> None:
    _, receiver, destination, secret = fresh()
    prepare = chunk(destination, secret)
    wrong = IlpPrepare(prepare.amount, LATER, bytes(32), destination, prepare.data)
    assert receiver.handle_prepare(wrong, NOW, iv=ZERO_IV) == IlpReject(
        "F05", ADDRESS, CONDITION_MISMATCH_DRAFT1
    )


def test_expired_prepare_is_r00() -> None:
    _, receiver, destination, secret = fresh()
    prepare = chunk(destination, secret)
    assert receiver.handle_prepare(prepare, LATER, iv=ZERO_IV) == IlpReject(
        "R00", ADDRESS, EXPIRED_MESSAGE
    )
    assert isinstance(
        receiver.handle_prepare(prepare, LATER - timedelta(milliseconds=1), iv=ZERO_IV),
        Acceptance,
    )


@pytest.mark.parametrize(
    "destination",
    [
        "test.example.other.{rid}.{tok}",  # foreign address prefix (item 14)
        "test.example.receiverX.{rid}.{tok}",
        "test.example.receiver",
        "test.example.receiver.",
        "test.example.receiver.AAAAAAAAAAA.{tok}",  # wrong receiver id
        "test.example.receiver.a.b",
        "test.example.receiver.{rid}.to$ken",  # not base64
        "test.example.receiver.{rid}.a=b",
    ],
)
def test_not_for_this_receiver(destination: str) -> None:
    secrets, receiver, good, secret = fresh()
    token = good.rsplit(".", 1)[1]
    target = destination.format(rid=secrets.receiver_id, tok=token)
    prepare = chunk(good, secret)
    wrong = IlpPrepare(100, LATER, prepare.execution_condition, target, prepare.data)
    assert receiver.handle_prepare(wrong, NOW, iv=ZERO_IV) == IlpReject(
        "F06", ADDRESS, "Payment is not for this receiver"
    )
    with pytest.raises(WrongReceiverError) as info:
        secrets.parse_destination(target, ADDRESS)
    assert isinstance(info.value, IlpError)
    assert (info.value.code, info.value.message) == ("F06", "Payment is not for this receiver")


def test_lenient_token_decoding() -> None:
    """ "add padding, accept -_+/" (§2): every spelling of the token reaches the same secret."""
    secrets = ReceiverSecrets(bytes(range(32)))
    token = bytes([0xFB, 0xFF, 0xBF]) * 6  # encodes with '-' and '_'
    destination, secret = secrets.issue(ADDRESS, token, b"k")
    b64 = destination.rsplit(".", 1)[1]
    assert "-" in b64 or "_" in b64
    standard = b64.replace("-", "+").replace("_", "/")
    for spelling in (b64, standard, standard + "=" * (-len(standard) % 4)):
        parsed = secrets.parse_destination(f"{ADDRESS}.{secrets.receiver_id}.{spelling}", ADDRESS)
        assert (parsed.token, parsed.key, parsed.shared_secret) == (token, b"k", secret)
    assert decode_base64_lenient("QQ") == b"A"
    assert decode_base64_lenient("QQ==") == b"A"
    assert decode_base64_lenient("QUJD" + "Q") == b"ABC"  # dangling sextet dropped, as Node
    with pytest.raises(DecodeError):
        decode_base64_lenient("QQ=Q")


def test_lenient_without_address() -> None:
    """Without an address only the last two segments count, as in 0.2.1."""
    secrets = ReceiverSecrets(bytes(range(32)))
    destination, secret = secrets.issue(ADDRESS, b"T" * 18, segments=["page"])
    parsed = secrets.parse_destination("g.elsewhere." + destination.split(".", 3)[3])
    assert parsed.shared_secret == secret
    assert parsed.app_segments == ()
    with pytest.raises(WrongReceiverError):
        secrets.parse_destination(destination.rsplit(".", 1)[1])


def test_key_and_app_segments_reach_the_application() -> None:
    secrets = ReceiverSecrets(bytes(range(32)))
    receiver = Psk2Receiver(secrets, ADDRESS)
    destination, secret = secrets.issue(ADDRESS, b"T" * 18, b"order-17", segments=["a", "b~c"])
    assert destination.startswith(f"{ADDRESS}.a.b~c.{secrets.receiver_id}.")
    decision = receiver.handle_prepare(chunk(destination, secret), NOW, iv=ZERO_IV)
    assert isinstance(decision, Acceptance)
    assert (decision.token, decision.key, decision.app_segments) == (
        b"T" * 18,
        b"order-17",
        ("a", "b~c"),
    )
    # The key is authenticated: the same ciphertext under another key fails to decrypt.
    other, _ = secrets.issue(ADDRESS, b"T" * 18, b"order-18", segments=["a", "b~c"])
    moved = IlpPrepare(100, LATER, bytes(32), other, chunk(destination, secret).data)
    assert receiver.handle_prepare(moved, NOW, iv=ZERO_IV) == IlpReject(
        "F06", ADDRESS, UNABLE_TO_PARSE
    )


def test_unexpected_types() -> None:
    _, receiver, destination, secret = fresh()
    keys = derive_keys(secret)

    def send(packet: Psk2Packet) -> Decision:
        data = seal(keys.encryption_key, ZERO_IV, packet)
        condition = condition_for(fulfillment_for(keys.fulfillment_key, data))
        return receiver.handle_prepare(
            IlpPrepare(100, LATER, condition, destination, data), NOW, iv=ZERO_IV
        )

    for kind in (2, 3):
        assert send(Draft1Packet(kind, bytes(16), 0, 0, 0)) == IlpReject(
            "F06", ADDRESS, UNEXPECTED_REQUEST_TYPE
        )
    for kind in (5, 6):
        assert send(Draft2Packet(kind, 1, 0)) == IlpReject("F06", ADDRESS, UNEXPECTED_PACKET_TYPE)
    data = seal(keys.encryption_key, ZERO_IV, Draft2Packet(4, 1, 0))
    junk_type = b"\x09" + data[1:]  # not even decryptable any more
    prepare = IlpPrepare(100, LATER, bytes(32), destination, junk_type)
    assert receiver.handle_prepare(prepare, NOW, iv=ZERO_IV) == IlpReject(
        "F06", ADDRESS, UNABLE_TO_PARSE
    )


def test_payment_amount_total_finishes_payment() -> None:
    _, receiver, destination, secret = fresh()
    for sequence in range(3):
        decision = receiver.handle_prepare(
            chunk(destination, secret, 100, sequence=sequence, payment_amount=250), NOW, iv=ZERO_IV
        )
        assert isinstance(decision, Acceptance)
        assert decision.received_before == 100 * sequence
        fulfill = receiver.fulfill(decision, iv=ZERO_IV)
        response = decode_any(derive_keys(secret).encryption_key, fulfill.data)
        assert response == Draft1Packet(2, b"P" * 16, sequence, 100 * (sequence + 1), 100)
    # received 300 >= expected 250 -> finished: "same encrypted type-3 Reject" (§7 step 6).
    answer = receiver.handle_prepare(
        chunk(destination, secret, 100, sequence=3, payment_amount=250), NOW, iv=ZERO_IV
    )
    assert isinstance(answer, IlpReject)
    assert (answer.code, answer.message) == ("F99", "")
    error = decode_any(derive_keys(secret).encryption_key, answer.data)
    assert error == Draft1Packet(3, b"P" * 16, 3, 300, 100)


def test_payment_amount_zero_means_no_total() -> None:
    """Item 10: 0 = "no total"; 0.2.1 would have finished the payment after one chunk."""
    _, receiver, destination, secret = fresh()
    for sequence in range(3):
        decision = receiver.handle_prepare(
            chunk(destination, secret, 10, sequence=sequence, payment_amount=0), NOW, iv=ZERO_IV
        )
        assert isinstance(decision, Acceptance)
        receiver.fulfill(decision, iv=ZERO_IV)
    record = receiver.payment_record(b"T" * 18, b"P" * 16)
    assert record is not None
    assert (record.received, record.finished) == (30, False)
    last = receiver.handle_prepare(
        chunk(destination, secret, 10, sequence=3, payment_amount=0, last=True), NOW, iv=ZERO_IV
    )
    assert isinstance(last, Acceptance)
    receiver.fulfill(last, iv=ZERO_IV)
    record = receiver.payment_record(b"T" * 18, b"P" * 16)
    assert record is not None
    assert record.finished


def test_chunk_too_small_reports_running_total() -> None:
    _, receiver, destination, secret = fresh()
    first = receiver.handle_prepare(chunk(destination, secret, 100), NOW, iv=ZERO_IV)
    assert isinstance(first, Acceptance)
    receiver.fulfill(first, iv=ZERO_IV)
    answer = receiver.handle_prepare(
        chunk(destination, secret, 100, sequence=1, chunk_amount=101), NOW, iv=ZERO_IV
    )
    assert isinstance(answer, IlpReject)
    assert answer.code == "F99"
    assert decode_any(derive_keys(secret).encryption_key, answer.data) == Draft1Packet(
        3, b"P" * 16, 1, 100, 100
    )


def test_reject_single_chunk_and_whole_payment() -> None:
    _, receiver, destination, secret = fresh()
    decision = receiver.handle_prepare(chunk(destination, secret), NOW, iv=ZERO_IV)
    assert isinstance(decision, Acceptance)
    # rejectSingleChunk: F99 with the message, empty data; the next chunk is asked again.
    assert receiver.refuse(decision, iv=ZERO_IV, message="not now") == IlpReject(
        "F99", ADDRESS, "not now"
    )
    again = receiver.handle_prepare(chunk(destination, secret, sequence=1), NOW, iv=ZERO_IV)
    assert isinstance(again, Acceptance)
    assert not again.payment_accepted
    # The handler gave no answer: the payment is rejected as a whole.
    assert receiver.refuse(
        again, iv=ZERO_IV, message=NOT_ACCEPTED_MESSAGE, reject_payment=True
    ) == IlpReject("F99", ADDRESS, NOT_ACCEPTED_MESSAGE)
    later = receiver.handle_prepare(chunk(destination, secret, sequence=2), NOW, iv=ZERO_IV)
    assert later == IlpReject("F99", ADDRESS, NOT_ACCEPTED_MESSAGE)
    # An application error code can be used instead of F99.
    _, receiver, destination, secret = fresh()
    decision = receiver.handle_prepare(chunk(destination, secret), NOW, iv=ZERO_IV)
    assert isinstance(decision, Acceptance)
    error = IlpError("F07", "cannot receive")
    assert receiver.refuse(
        decision, iv=ZERO_IV, code=error.code, message=error.message
    ) == IlpReject("F07", ADDRESS, "cannot receive")


def test_settle_exactly_once() -> None:
    _, receiver, destination, secret = fresh()
    decision = receiver.handle_prepare(chunk(destination, secret), NOW, iv=ZERO_IV)
    assert isinstance(decision, Acceptance)
    with pytest.raises(LocalProtocolError, match="no data"):
        receiver.refuse(decision, iv=ZERO_IV, data=b"x")
    receiver.fulfill(decision, iv=ZERO_IV)
    with pytest.raises(LocalProtocolError, match="already"):
        receiver.fulfill(decision, iv=ZERO_IV)
    with pytest.raises(LocalProtocolError, match="already"):
        receiver.refuse(decision, iv=ZERO_IV)
    record = receiver.payment_record(b"T" * 18, b"P" * 16)
    assert record is not None
    assert record.received == 100
    forged = Acceptance(Psk2Format.DRAFT2, 1, b"", b"", (), b"", 0, request_id=1)
    with pytest.raises(LocalProtocolError, match="not made by"):
        receiver.fulfill(forged, iv=ZERO_IV)


def test_draft2_defaults() -> None:
    _, receiver, destination, secret = fresh()
    keys = derive_keys(secret)
    prepare = build_request_prepare(
        destination, secret, amount=50, expires_at=LATER, iv=ZERO_IV, request_id=7, data=b"hi"
    )
    decision = receiver.handle_prepare(prepare, NOW, iv=ZERO_IV)
    assert isinstance(decision, Acceptance)
    answer = receiver.refuse(decision, iv=ZERO_IV)
    assert (answer.code, answer.message) == ("F99", "")
    assert decode_any(keys.encryption_key, answer.data) == Draft2Packet(6, 7, 50, b"")
    with pytest.raises(LocalProtocolError):
        receiver.refuse(decision, iv=ZERO_IV)
    quote = build_request_prepare(
        destination,
        secret,
        amount=50,
        expires_at=LATER,
        iv=ZERO_IV,
        request_id=8,
        unfulfillable_condition=b"\x99" * 32,
    )
    unfulfillable = receiver.handle_prepare(quote, NOW, iv=ZERO_IV)
    assert isinstance(unfulfillable, UnfulfillableRequest)
    with pytest.raises(LocalProtocolError):
        receiver.fulfill(unfulfillable, iv=ZERO_IV)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        receiver.refuse(unfulfillable, iv=ZERO_IV, reject_payment=True)
    answer = receiver.refuse(unfulfillable, iv=ZERO_IV)
    assert (answer.code, answer.message) == ("F05", "Condition generated does not match prepare")
    assert decode_any(keys.encryption_key, answer.data) == Draft2Packet(6, 8, 50, b"")
    # Draft-2 chunks leave no payment records.
    assert len(receiver) == 0


def test_quote_gets_f99_and_type3() -> None:
    """Item 11: draft-1 quotes are answered F99 (0.5.0 switched to F05 for draft 2)."""
    _, receiver, destination, secret = fresh()
    prepare = build_quote_prepare(
        destination, secret, expires_at=LATER, iv=ZERO_IV, payment_id=b"Q" * 16, condition=bytes(32)
    )
    answer = receiver.handle_prepare(prepare, NOW, iv=b"\x01" * 12)
    assert isinstance(answer, IlpReject)
    assert (answer.code, answer.message) == ("F99", "")
    assert answer.data[:12] == b"\x01" * 12
    assert decode_any(derive_keys(secret).encryption_key, answer.data) == Draft1Packet(
        3, b"Q" * 16, 0, 0, 1000
    )


def test_payment_records_are_bounded() -> None:
    secrets = ReceiverSecrets(bytes(range(32)))
    receiver = Psk2Receiver(secrets, ADDRESS, max_payment_records=2)
    destination, secret = secrets.issue(ADDRESS, b"T" * 18)
    for n in range(3):
        decision = receiver.handle_prepare(
            chunk(destination, secret, payment_id=bytes([n]) * 16), NOW, iv=ZERO_IV
        )
        assert isinstance(decision, Acceptance)
        receiver.fulfill(decision, iv=ZERO_IV)
    assert len(receiver) == 2
    assert receiver.payment_record(b"T" * 18, bytes([0]) * 16) is None
    assert receiver.payment_record(b"T" * 18, bytes([2]) * 16) is not None
    with pytest.raises(ConfigError):
        Psk2Receiver(secrets, ADDRESS, max_payment_records=0)


def test_records_are_per_token() -> None:
    """One sender cannot finish another sender's payment by reusing its payment id."""
    secrets = ReceiverSecrets(bytes(range(32)))
    receiver = Psk2Receiver(secrets, ADDRESS)
    a, secret_a = secrets.issue(ADDRESS, b"A" * 18)
    b, secret_b = secrets.issue(ADDRESS, b"B" * 18)
    decision = receiver.handle_prepare(chunk(a, secret_a, last=True), NOW, iv=ZERO_IV)
    assert isinstance(decision, Acceptance)
    receiver.fulfill(decision, iv=ZERO_IV)
    other = receiver.handle_prepare(chunk(b, secret_b), NOW, iv=ZERO_IV)
    assert isinstance(other, Acceptance)
    assert other.first_chunk


class CountingSecrets(ReceiverSecrets):
    """Counts shared-secret derivations."""

    derivations = 0

    def shared_secret(self, token_and_key: bytes) -> bytes:
        CountingSecrets.derivations += 1
        return super().shared_secret(token_and_key)


def test_key_cache() -> None:
    secrets = CountingSecrets(bytes(range(32)), cache_size=2)
    destinations = [secrets.issue(ADDRESS, bytes([n]) * 18).destination for n in range(3)]
    CountingSecrets.derivations = 0
    first = secrets.parse_destination(destinations[0], ADDRESS)
    assert secrets.parse_destination(destinations[0], ADDRESS).keys is first.keys
    assert CountingSecrets.derivations == 1
    secrets.parse_destination(destinations[1], ADDRESS)
    secrets.parse_destination(destinations[2], ADDRESS)  # evicts destinations[0]
    assert CountingSecrets.derivations == 3
    secrets.parse_destination(destinations[0], ADDRESS)
    assert CountingSecrets.derivations == 4
    secrets.clear_cache()
    uncached = CountingSecrets(bytes(range(32)), cache_size=0)
    CountingSecrets.derivations = 0
    uncached.parse_destination(destinations[0], ADDRESS)
    uncached.parse_destination(destinations[0], ADDRESS)
    assert CountingSecrets.derivations == 2


def test_secrets_validation() -> None:
    with pytest.raises(ConfigError):
        ReceiverSecrets(bytes(31))
    with pytest.raises(ConfigError):
        ReceiverSecrets("x" * 40)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ReceiverSecrets(bytes(32), cache_size=-1)
    secrets = ReceiverSecrets(bytes(32))
    with pytest.raises(EncodeError):
        secrets.issue(ADDRESS, bytes(17))
    with pytest.raises(InvalidAddressError):
        secrets.issue("bad address", bytes(18))
    with pytest.raises(InvalidAddressError):
        secrets.issue(ADDRESS, bytes(18), segments=["no.dots"])
    with pytest.raises(InvalidAddressError):
        secrets.issue(ADDRESS, bytes(18), b"k" * 800)
    with pytest.raises(EncodeError):
        secrets.issue(ADDRESS, bytes(18), segments=["x"], with_receiver_id=False)
    issued = secrets.issue(ADDRESS, bytes(18))
    _, shared_secret = issued
    assert shared_secret.hex() not in repr(issued)
    # a valid address is remembered, an invalid one after it is still refused
    with pytest.raises(InvalidAddressError):
        secrets.issue("bad address", bytes(18))
    with pytest.raises(InvalidAddressError):
        secrets.issue("", bytes(18))
    assert repr(shared_secret) not in repr(issued)


# ---------------------------------------------------------------------- properties


@FAST
@given(
    st.text(alphabet="abcdefgAB019_~-.=+/$", max_size=60),
    st.binary(max_size=100),
    st.integers(min_value=0, max_value=MAX_UINT64),
    st.binary(min_size=32, max_size=32),
)
def test_arbitrary_prepares_give_rejects(
    suffix: str, data: bytes, amount: int, condition: bytes
) -> None:
    secrets = ReceiverSecrets(bytes(range(32)))
    receiver = Psk2Receiver(secrets, ADDRESS)
    for destination in (
        f"{ADDRESS}.{suffix}",
        f"{ADDRESS}.{secrets.receiver_id}.{suffix}",
        suffix,
    ):
        answer = receiver.handle_prepare(
            IlpPrepare(amount, LATER, condition, destination, data), NOW, iv=ZERO_IV
        )
        assert isinstance(answer, IlpReject)
        assert answer.code == "F06"


@FAST
@given(st.text(max_size=40))
def test_lenient_base64_only_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        decode_base64_lenient(text)


@FAST
@given(st.binary(max_size=60))
def test_base64url_round_trip(data: bytes) -> None:
    assert decode_base64_lenient(base64url(data)) == data


@FAST
@given(
    st.binary(min_size=18, max_size=18),
    st.binary(max_size=40),
    st.lists(st.from_regex(r"[A-Za-z0-9_~-]{1,10}", fullmatch=True), max_size=3),
)
def test_issue_parse_round_trip(token: bytes, key: bytes, segments: list[str]) -> None:
    secrets = ReceiverSecrets(bytes(range(32)), cache_size=4)
    issued = secrets.issue(ADDRESS, token, key, segments=segments)
    parsed = secrets.parse_destination(issued.destination, ADDRESS)
    assert (parsed.token, parsed.key, parsed.app_segments) == (token, key, tuple(segments))
    assert parsed.shared_secret == issued.shared_secret
