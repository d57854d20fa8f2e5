"""ilp_receiver.codec.psk2: key derivation, envelope, draft-1 and draft-2 packets.

Vectors: ``psk2-draft1.json`` sections ``constants`` and ``crypto`` (the receiver and
scenario sections are asserted in test_psk2_receiver.py / test_psk2_sender.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec import psk2
from ilp_receiver.codec.oer import MAX_UINT32, MAX_UINT64
from ilp_receiver.errors import DecodeError, EncodeError
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
D1 = "psk2-draft1.json"
# Read at import so tests/test_vector_coverage.py sees every section requested.
CONSTANTS: dict[str, Any] = section(D1, "constants")
RECEIVER: dict[str, Any] = section(D1, "receiver")


def draft1_from_json(packet: dict[str, Any]) -> psk2.Draft1Packet:
    """A vector's draft-1 packet object as a Draft1Packet."""
    return psk2.Draft1Packet(
        packet["type"],
        bytes.fromhex(packet["paymentId_hex"]),
        packet["sequence"],
        int(packet["paymentAmount"]),
        int(packet["chunkAmount"]),
        bytes.fromhex(packet["applicationData_hex"]),
    )


def vector_keys() -> psk2.Psk2Keys:
    """Keys of the draft-1 vector receiver's shared secret (used by the crypto cases)."""
    return psk2.derive_keys(bytes.fromhex(RECEIVER["shared_secret_hex"]))


# ---------------------------------------------------------------------- constants


def test_constants() -> None:
    constants = CONSTANTS
    assert constants["types"] == {
        "CHUNK": psk2.Draft1Type.CHUNK,
        "LAST_CHUNK": psk2.Draft1Type.LAST_CHUNK,
        "FULFILLMENT": psk2.Draft1Type.FULFILLMENT,
        "ERROR": psk2.Draft1Type.ERROR,
    }
    labels = constants["labels"]
    assert labels["encryption"].encode() == psk2.ENCRYPTION_LABEL
    assert labels["fulfillment"].encode() == psk2.FULFILLMENT_LABEL
    assert labels["receiver_id"].encode() == psk2.RECEIVER_ID_LABEL
    assert labels["generation"].encode() == psk2.GENERATION_LABEL
    assert constants["iv_length"] == psk2.IV_LENGTH
    assert constants["auth_tag_length"] == psk2.AUTH_TAG_LENGTH
    assert constants["token_length"] == psk2.TOKEN_LENGTH
    assert constants["receiver_id_length"] == psk2.RECEIVER_ID_LENGTH
    assert set(constants) == {
        "types",
        "labels",
        "iv_length",
        "auth_tag_length",
        "token_length",
        "receiver_id_length",
    }


def test_draft2_type_values() -> None:
    # §8: "4 = request (only in Prepare), 5 = response (only in Fulfill), 6 = error".
    assert (psk2.Draft2Type.REQUEST, psk2.Draft2Type.RESPONSE, psk2.Draft2Type.ERROR) == (4, 5, 6)


# ---------------------------------------------------------------------- crypto cases


@pytest.mark.parametrize("case", cases(D1, "crypto"), ids=case_id)
def test_crypto_case(case: dict[str, Any]) -> None:
    keys = vector_keys()
    packet = draft1_from_json(case["packet"])
    plaintext = bytes.fromhex(case["plaintext_hex"])
    iv = bytes.fromhex(case["iv_hex"])
    data = bytes.fromhex(case["encrypted_data_hex"])
    # encode object -> bytes, decode bytes -> object
    assert psk2.encode_draft1(packet) == plaintext
    assert psk2.decode_draft1(plaintext) == packet
    assert psk2.decode_plaintext(plaintext) == packet
    # envelope: IV || tag || ciphertext
    assert psk2.encrypt(keys.encryption_key, iv, plaintext) == data
    assert psk2.seal(keys.encryption_key, iv, packet) == data
    assert data[:12] == iv
    assert data[12:28].hex() == case["auth_tag_hex"]
    assert data[28:].hex() == case["ciphertext_hex"]
    assert psk2.decrypt(keys.encryption_key, data) == plaintext
    assert psk2.decode_any(keys.encryption_key, data) == packet
    # §6 fulfillment and condition
    fulfillment = psk2.fulfillment_for(keys.fulfillment_key, data)
    assert fulfillment.hex() == case["fulfillment_hex"]
    assert psk2.condition_for(fulfillment).hex() == case["condition_hex"]
    assert psk2.condition_matches(fulfillment, bytes.fromhex(case["condition_hex"]))
    assert not psk2.condition_matches(fulfillment, bytes(32))


def test_derived_keys_match_vector() -> None:
    receiver = RECEIVER
    keys = vector_keys()
    assert keys.encryption_key.hex() == receiver["derived_keys"]["encryption_key_hex"]
    assert keys.fulfillment_key.hex() == receiver["derived_keys"]["fulfillment_hmac_key_hex"]
    assert keys.shared_secret.hex() == receiver["shared_secret_hex"]
    assert receiver["shared_secret_hex"] not in repr(keys)


# ---------------------------------------------------------------------- leniency (§5, §8)


def test_draft1_decode_ignores_extension_and_junk() -> None:
    # "do not require the extension byte; ignore trailing bytes" (§5).
    packet = psk2.Draft1Packet(1, bytes(range(16)), 7, MAX_UINT64, 900, b"app")
    full = psk2.encode_draft1(packet)
    assert full[-1] == 0
    assert psk2.decode_draft1(full[:-1]) == packet
    assert psk2.decode_draft1(full + b"junk junk") == packet
    assert psk2.decode_draft1(full[:-1] + b"\x05") == packet  # extension byte is not read
    # 39 bytes of fixed overhead for empty app data (§5).
    assert len(psk2.encode_draft1(psk2.Draft1Packet(0, bytes(16), 0, 0, 0))) == 39


def test_draft2_decode_ignores_junk() -> None:
    packet = psk2.Draft2Packet(4, 42, 900, b"ping")
    raw = psk2.encode_draft2(packet)
    assert raw.hex() == "040000002a00000000000003840470696e67"
    assert psk2.decode_draft2(raw + b"\x00junk") == packet
    assert psk2.decode_plaintext(raw) == packet


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"", "empty"),
        (bytes([7]) + bytes(40), "unknown PSK2 packet type 7"),
        (bytes([0xFF]) + bytes(40), "unknown PSK2 packet type 255"),
        (bytes([1]) + bytes(20), "at least 37 bytes"),
        (bytes([1]) + bytes(36), "applicationData"),
        (bytes([1]) + bytes(36) + b"\x05ab", "applicationData"),
        (bytes([4]) + bytes(5), "at least 13 bytes"),
        (bytes([5]) + bytes(12), "data"),
    ],
)
def test_decode_errors(plaintext: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        psk2.decode_plaintext(plaintext)


def test_single_draft_decoders_check_type_range() -> None:
    with pytest.raises(DecodeError, match="not a draft-1"):
        psk2.decode_draft1(psk2.encode_draft2(psk2.Draft2Packet(4, 1, 1)) + bytes(30))
    with pytest.raises(DecodeError, match="not a draft-2"):
        psk2.decode_draft2(psk2.encode_draft1(psk2.Draft1Packet(2, bytes(16), 0, 0, 0)))


def test_decrypt_errors() -> None:
    keys = vector_keys()
    data = psk2.seal(keys.encryption_key, bytes(12), psk2.Draft2Packet(4, 1, 2, b"x"))
    for bad in (b"", data[:27], data[:-1] + bytes([data[-1] ^ 1])):
        with pytest.raises(DecodeError):
            psk2.decrypt(keys.encryption_key, bad)
    with pytest.raises(DecodeError):
        psk2.decode_any(psk2.derive_keys(bytes(32)).encryption_key, data)
    # An envelope with no ciphertext at all is a valid (empty) plaintext -> no packet.
    empty = psk2.encrypt(keys.encryption_key, bytes(12), b"")
    assert len(empty) == psk2.ENVELOPE_OVERHEAD
    with pytest.raises(DecodeError, match="empty"):
        psk2.decode_any(keys.encryption_key, empty)


@pytest.mark.parametrize(
    "packet",
    [
        psk2.Draft1Packet(4, bytes(16), 0, 0, 0),
        psk2.Draft1Packet(-1, bytes(16), 0, 0, 0),
        psk2.Draft1Packet(0, bytes(15), 0, 0, 0),
        psk2.Draft1Packet(0, bytes(16), MAX_UINT32 + 1, 0, 0),
        psk2.Draft1Packet(0, bytes(16), -1, 0, 0),
        psk2.Draft1Packet(0, bytes(16), 0, MAX_UINT64 + 1, 0),
        psk2.Draft1Packet(0, bytes(16), 0, 0, -1),
        psk2.Draft2Packet(3, 0, 0),
        psk2.Draft2Packet(7, 0, 0),
        psk2.Draft2Packet(4, MAX_UINT32 + 1, 0),
        psk2.Draft2Packet(4, 0, MAX_UINT64 + 1),
        psk2.Draft2Packet(4, 0, -5),
    ],
)
def test_encode_refuses_out_of_range(packet: psk2.Psk2Packet) -> None:
    with pytest.raises(EncodeError):
        psk2.encode_packet(packet)


def test_encrypt_refuses_bad_iv() -> None:
    with pytest.raises(EncodeError):
        psk2.encrypt(bytes(32), bytes(16), b"x")  # draft-1 text's random_bytes(16): not used


# ---------------------------------------------------------------------- hypothesis

u64 = st.integers(min_value=0, max_value=MAX_UINT64)
u32 = st.integers(min_value=0, max_value=MAX_UINT32)
draft1_packets = st.builds(
    psk2.Draft1Packet,
    st.integers(min_value=0, max_value=3),
    st.binary(min_size=16, max_size=16),
    u32,
    u64,
    u64,
    st.binary(max_size=300),
)
draft2_packets = st.builds(
    psk2.Draft2Packet, st.integers(min_value=4, max_value=6), u32, u64, st.binary(max_size=300)
)


@FAST
@given(draft1_packets, st.binary(max_size=8))
def test_draft1_round_trip(packet: psk2.Draft1Packet, junk: bytes) -> None:
    raw = psk2.encode_draft1(packet)
    assert psk2.decode_draft1(raw) == packet
    assert psk2.decode_draft1(raw + junk) == packet
    assert psk2.decode_plaintext(raw) == packet


@FAST
@given(draft2_packets, st.binary(max_size=8))
def test_draft2_round_trip(packet: psk2.Draft2Packet, junk: bytes) -> None:
    raw = psk2.encode_draft2(packet)
    assert psk2.decode_draft2(raw + junk) == packet
    assert psk2.decode_plaintext(raw) == packet


@FAST
@given(
    st.one_of(draft1_packets, draft2_packets),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=12, max_size=12),
)
def test_envelope_round_trip(packet: psk2.Psk2Packet, secret: bytes, iv: bytes) -> None:
    keys = psk2.derive_keys(secret)
    data = psk2.seal(keys.encryption_key, iv, packet)
    assert len(data) == len(psk2.encode_packet(packet)) + psk2.ENVELOPE_OVERHEAD
    assert data[:12] == iv
    assert psk2.decode_any(keys.encryption_key, data) == packet


@FAST
@given(st.binary(max_size=120))
def test_arbitrary_bytes_only_decode_error(data: bytes) -> None:
    key = psk2.derive_keys(bytes(32)).encryption_key
    for decoder in (psk2.decode_draft1, psk2.decode_draft2, psk2.decode_plaintext):
        with contextlib.suppress(DecodeError):
            decoder(data)
    for opener in (psk2.decrypt, psk2.decode_any):
        with contextlib.suppress(DecodeError):
            opener(key, data)


@FAST
@given(st.binary(min_size=1, max_size=80), st.binary(min_size=12, max_size=12))
def test_encrypted_arbitrary_plaintext_only_decode_error(plaintext: bytes, iv: bytes) -> None:
    key = psk2.derive_keys(bytes(32)).encryption_key
    with contextlib.suppress(DecodeError):
        psk2.decode_any(key, psk2.encrypt(key, iv, plaintext))
