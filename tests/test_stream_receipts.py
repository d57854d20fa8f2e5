"""ilp_receiver.stream.receipts: RFC 39 STREAM receipts (spec ``12-stream.md`` §13).

Vectors (``stream.json``): ``receipts`` (cases, failures, stateless_verifier_example) and
the ``receipt`` entry of ``constants``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.oer import MAX_UINT64
from ilp_receiver.crypto import HmacSha256
from ilp_receiver.errors import DecodeError, EncodeError
from ilp_receiver.stream import receipts
from ilp_receiver.stream.receipts import (
    Receipt,
    create_receipt,
    decode_receipt,
    receipt_secret_from_seed,
    verify_receipt,
)
from tests.vectorlib import section

FAST = settings(max_examples=200, deadline=None)
F = "stream.json"
# Read at import so tests/test_vector_coverage.py sees every section requested.
RECEIPTS: dict[str, Any] = section(F, "receipts")
CONSTANTS: dict[str, Any] = section(F, "constants")


def test_constants() -> None:
    assert CONSTANTS["receipt"] == {
        "version": receipts.RECEIPT_VERSION,
        "nonce_bytes": receipts.RECEIPT_NONCE_LENGTH,
        "secret_bytes": receipts.RECEIPT_SECRET_LENGTH,
        "total_bytes": receipts.RECEIPT_LENGTH,
    }
    assert receipts.RECEIPT_HMAC_MESSAGE_LENGTH == 1 + 16 + 1 + 8


@pytest.mark.parametrize(
    "case", RECEIPTS["cases"], ids=lambda c: f"stream{c['stream_id']}-{c['total_received']}"
)
def test_receipt_case(case: dict[str, Any]) -> None:
    nonce = bytes.fromhex(case["nonce_hex"])
    secret = bytes.fromhex(case["secret_hex"])
    total = int(case["total_received"])
    raw = create_receipt(nonce, case["stream_id"], total, secret)
    assert raw.hex() == case["receipt_hex"]
    assert base64.b64decode(case["receipt_base64"]) == raw
    assert raw[:26].hex() == case["hmac_message_hex"]
    assert raw[26:].hex() == case["hmac_hex"]
    assert hmac.new(secret, raw[:26], hashlib.sha256).hexdigest() == case["hmac_hex"]
    decoded = case["decoded"]
    expected = Receipt(
        decoded["version"],
        bytes.fromhex(decoded["nonce_hex"]),
        int(decoded["streamId"]),
        int(decoded["totalReceived"]),
        bytes.fromhex(case["hmac_hex"]),
    )
    assert decode_receipt(raw) == expected
    assert case["verifies"] is True
    assert verify_receipt(raw, secret) == expected
    assert verify_receipt(bytearray(raw), lambda r: secret) == expected


def _good() -> tuple[bytes, bytes, bytes]:
    """(receipt, nonce, secret) of receipts.cases[1], from which the failures were made."""
    case = RECEIPTS["cases"][1]
    return (
        bytes.fromhex(case["receipt_hex"]),
        bytes.fromhex(case["nonce_hex"]),
        bytes.fromhex(case["secret_hex"]),
    )


def _failure_calls() -> dict[str, tuple[type[Exception], Callable[[], object]]]:
    good, nonce, secret = _good()
    version_2 = b"\x02" + good[1:]
    amount_changed = good[:25] + bytes([good[25] ^ 1]) + good[26:]
    return {
        "create_stream_id_256": (EncodeError, lambda: create_receipt(nonce, 256, 1, secret)),
        "create_nonce_15_bytes": (EncodeError, lambda: create_receipt(nonce[1:], 1, 1, secret)),
        "create_secret_31_bytes": (EncodeError, lambda: create_receipt(nonce, 1, 1, secret[1:])),
        "verify_wrong_secret": (DecodeError, lambda: verify_receipt(good, bytes(32))),
        "verify_57_bytes": (DecodeError, lambda: verify_receipt(good[:57], secret)),
        "verify_version_2": (DecodeError, lambda: verify_receipt(version_2, secret)),
        "verify_amount_changed": (DecodeError, lambda: verify_receipt(amount_changed, secret)),
    }


@pytest.mark.parametrize("failure", RECEIPTS["failures"], ids=lambda f: f["name"])
def test_receipt_failure(failure: dict[str, Any]) -> None:
    error, call = _failure_calls()[failure["name"]]
    assert failure["error"]  # 2.7.1 threw for every one of them
    with pytest.raises(error) as info:
        call()
    assert failure["error"] in str(info.value)


def test_every_failure_is_covered() -> None:
    assert {f["name"] for f in RECEIPTS["failures"]} == set(_failure_calls())


def test_stateless_verifier_example() -> None:
    example = RECEIPTS["stateless_verifier_example"]
    seed = bytes.fromhex(example["verifier_seed_hex"])
    raw = bytes.fromhex(example["receipt_hex"])
    nonce = decode_receipt(raw).nonce
    derived = receipt_secret_from_seed(seed, nonce)
    assert derived.hex() == example["receipt_secret_hex"]
    assert receipt_secret_from_seed(HmacSha256(seed), nonce) == derived
    verified = verify_receipt(raw, lambda r: receipt_secret_from_seed(seed, r.nonce))
    assert verified.total_received == int(example["verified_total"])
    assert create_receipt(nonce, verified.stream_id, verified.total_received, derived) == raw
    # another seed derives another secret: the receipt does not verify
    with pytest.raises(DecodeError, match="invalid hmac"):
        verify_receipt(raw, lambda r: receipt_secret_from_seed(bytes(32), r.nonce))


def test_decode_does_not_check_the_version() -> None:
    # 2.7.1 decodeReceipt only checks the length; verifyReceipt checks the version.
    good, _, _ = _good()
    assert decode_receipt(b"\x07" + good[1:]).version == 7
    for bad in (b"", good + b"\x00", good[:-1]):
        with pytest.raises(DecodeError, match="receipt malformed"):
            decode_receipt(bad)


@pytest.mark.parametrize("stream_id", [-1, 256, 2**64, True, "1"])
def test_stream_id_must_be_uint8(stream_id: Any) -> None:
    # §15 Q3: stream ids above 255 cannot be receipted; refuse before crediting.
    _, nonce, secret = _good()
    with pytest.raises(EncodeError):
        create_receipt(nonce, stream_id, 1, secret)


@pytest.mark.parametrize("total", [-1, MAX_UINT64 + 1, 1.0])
def test_total_must_be_uint64(total: Any) -> None:
    _, nonce, secret = _good()
    with pytest.raises(EncodeError):
        create_receipt(nonce, 1, total, secret)


@FAST
@given(
    st.binary(min_size=16, max_size=16),
    st.integers(0, 255),
    st.integers(0, MAX_UINT64),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 57),
    st.integers(1, 255),
)
def test_round_trip_and_any_bit_flip_fails(
    nonce: bytes, stream_id: int, total: int, secret: bytes, index: int, mask: int
) -> None:
    raw = create_receipt(nonce, stream_id, total, secret)
    assert len(raw) == 58
    assert verify_receipt(raw, secret) == Receipt(1, nonce, stream_id, total, raw[26:])
    tampered = raw[:index] + bytes([raw[index] ^ mask]) + raw[index + 1 :]
    with pytest.raises(DecodeError):
        verify_receipt(tampered, secret)


@FAST
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_receipt(data)
    with contextlib.suppress(DecodeError):
        verify_receipt(data, bytes(32))
