"""ilp_receiver.crypto: known answers, error mapping, the envelope, the availability check."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver import crypto
from ilp_receiver.errors import CryptoUnavailableError, DecodeError, EncodeError

FAST = settings(max_examples=200, deadline=None)


def test_sha256_known_answer() -> None:
    # FIPS 180-2 "abc".
    assert (
        crypto.sha256(b"abc").hex()
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_hmac_sha256_known_answer() -> None:
    # RFC 4231 test case 2.
    assert (
        crypto.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex()
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_aes256gcm_known_answers() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13 and 14.
    key, nonce = bytes(32), bytes(12)
    assert crypto.aes256gcm_encrypt(key, nonce, b"").hex() == "530f8afbc74536b9a963b4f1c4cb738b"
    ciphertext, tag = crypto.aes256gcm_encrypt_detached(key, nonce, bytes(16))
    assert ciphertext.hex() == "cea7403d4d606b6e074ec5d3baf39d18"
    assert tag.hex() == "d0d1c8a799996bf0265b98b5d48ab919"
    assert crypto.aes256gcm_decrypt_detached(key, nonce, ciphertext, tag) == bytes(16)


def test_decrypt_failures_raise_decode_error() -> None:
    key, nonce = bytes(32), bytes(12)
    sealed = crypto.aes256gcm_encrypt(key, nonce, b"hello")
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(DecodeError, match="authentication failed"):
        crypto.aes256gcm_decrypt(key, nonce, tampered)
    with pytest.raises(DecodeError):
        crypto.aes256gcm_decrypt(bytes(range(32)), nonce, sealed)
    with pytest.raises(DecodeError, match="shorter than the tag"):
        crypto.aes256gcm_decrypt(key, nonce, sealed[:15])
    with pytest.raises(DecodeError):
        crypto.aes256gcm_decrypt(key, bytes(11), sealed)
    with pytest.raises(DecodeError):
        crypto.aes256gcm_decrypt_detached(key, nonce, sealed[:-16], sealed[-15:])


def test_encrypt_refuses_bad_key_and_nonce() -> None:
    with pytest.raises(EncodeError, match="key"):
        crypto.aes256gcm_encrypt(bytes(31), bytes(12), b"")
    with pytest.raises(EncodeError, match="nonce"):
        crypto.aes256gcm_encrypt(bytes(32), bytes(16), b"")


def test_constant_time_equal_and_random_bytes() -> None:
    assert crypto.constant_time_equal(b"abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")
    assert not crypto.constant_time_equal(b"abc", b"ab")
    assert len(crypto.random_bytes(18)) == 18
    assert crypto.random_bytes(16) != crypto.random_bytes(16)


def test_aes_is_available_here() -> None:
    assert crypto.aes256gcm_available()
    crypto.require_aes256gcm()


def test_unavailable_aes_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm

    class RefusingAesGcm:
        def __init__(self, key: bytes) -> None:
            raise UnsupportedAlgorithm("AES-GCM is disabled in this OpenSSL")

    monkeypatch.setattr(crypto, "AESGCM", RefusingAesGcm)
    crypto._aead.cache_clear()
    try:
        assert not crypto.aes256gcm_available()
        with pytest.raises(CryptoUnavailableError, match="OpenSSL"):
            crypto.require_aes256gcm()
        with pytest.raises(CryptoUnavailableError):
            crypto.aes256gcm_encrypt(bytes(range(32)), bytes(12), b"")
        with pytest.raises(CryptoUnavailableError):
            crypto.aes256gcm_decrypt(bytes(range(32)), bytes(12), bytes(16))
    finally:
        crypto._aead.cache_clear()


@FAST
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=12, max_size=12), st.binary())
def test_aes256gcm_round_trip(key: bytes, nonce: bytes, plaintext: bytes) -> None:
    sealed = crypto.aes256gcm_encrypt(key, nonce, plaintext)
    assert len(sealed) == len(plaintext) + crypto.AES_GCM_TAG_LENGTH
    assert crypto.aes256gcm_decrypt(key, nonce, sealed) == plaintext


def test_envelope_layout_is_iv_tag_ciphertext() -> None:
    key, iv = bytes(range(32)), bytes(range(12))
    sealed = crypto.aes256gcm_encrypt(key, iv, b"payload")
    envelope = crypto.seal_envelope(key, iv, b"payload")
    assert envelope == iv + sealed[-16:] + sealed[:-16]
    assert crypto.open_envelope(key, envelope) == b"payload"
    with pytest.raises(DecodeError, match="at least 28 bytes"):
        crypto.open_envelope(key, envelope[:27])
    with pytest.raises(DecodeError, match="authentication failed"):
        crypto.open_envelope(bytes(32), envelope)


@FAST
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=12, max_size=12), st.binary())
def test_envelope_key_is_the_envelope_functions(key: bytes, iv: bytes, plaintext: bytes) -> None:
    envelope_key = crypto.EnvelopeKey(key)
    envelope = envelope_key.seal(iv, plaintext)
    assert envelope == crypto.seal_envelope(key, iv, plaintext)
    assert envelope_key.open(envelope) == plaintext
    assert envelope_key.open(bytearray(envelope)) == plaintext
    assert "key hidden" in repr(envelope_key)


def test_envelope_key_errors_match_the_functions() -> None:
    key = bytes(range(32))
    envelope_key = crypto.EnvelopeKey(key)
    envelope = envelope_key.seal(bytes(12), b"payload")
    with pytest.raises(DecodeError, match="at least 28 bytes"):
        envelope_key.open(envelope[:27])
    with pytest.raises(DecodeError, match="authentication failed"):
        envelope_key.open(envelope[:-1] + bytes((envelope[-1] ^ 1,)))
    with pytest.raises(EncodeError, match="nonce must be 12 bytes"):
        envelope_key.seal(bytes(11), b"payload")
    with pytest.raises(EncodeError, match="key must be 32 bytes"):
        crypto.EnvelopeKey(bytes(31))


@FAST
@given(st.binary(max_size=64))
def test_decrypt_arbitrary_bytes_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        crypto.aes256gcm_decrypt(bytes(32), bytes(12), data)


@FAST
@given(st.binary(max_size=150), st.binary(max_size=200))
def test_hmac_matches_stdlib(key: bytes, message: bytes) -> None:
    import hmac

    expected = hmac.digest(key, message, "sha256")
    assert crypto.hmac_sha256(key, message) == expected
    precomputed = crypto.HmacSha256(key)
    assert precomputed.digest(message) == expected
    assert precomputed.digest(message) == expected  # the precomputed state is not consumed
    assert repr(precomputed) == "HmacSha256(<key hidden>)"
