"""The cryptographic primitives ilp-receiver needs, in one place.

* SHA-256 and HMAC-SHA256 (``hashlib``/``hmac``, i.e. OpenSSL);
* AES-256-GCM through PyNaCl (libsodium), used by PSK2's end-to-end encryption
  (spec ``06-psk2.md`` §4).  libsodium only offers AES-256-GCM where the CPU has
  hardware AES (x86 AES-NI + PCLMUL, or the ARMv8 crypto extensions); elsewhere
  :func:`require_aes256gcm` raises :class:`~ilp_receiver.errors.CryptoUnavailableError`
  with an explanation instead of failing obscurely on the first packet;
* a constant-time comparison (``hmac.compare_digest``);
* :func:`random_bytes` (``os.urandom``) for the I/O layer.  Sans-I/O code never calls
  it: IVs, tokens and payment ids are parameters there, so tests can replay recorded
  randomness byte for byte.

libsodium's combined mode returns ``ciphertext || tag``; the ``*_detached`` helpers
here split and join that, so callers can lay out the PSK2 envelope
``IV || tag || ciphertext`` themselves.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from typing import Final

import nacl.bindings  # noqa: F401  (importing it runs sodium_init())
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _sodium_lib

from .errors import CryptoUnavailableError, DecodeError, EncodeError

__all__ = [
    "AES_GCM_KEY_LENGTH",
    "AES_GCM_NONCE_LENGTH",
    "AES_GCM_TAG_LENGTH",
    "HmacSha256",
    "aes256gcm_available",
    "aes256gcm_decrypt",
    "aes256gcm_decrypt_detached",
    "aes256gcm_encrypt",
    "aes256gcm_encrypt_detached",
    "constant_time_equal",
    "hmac_sha256",
    "random_bytes",
    "require_aes256gcm",
    "sha256",
]

AES_GCM_KEY_LENGTH: Final = 32
AES_GCM_NONCE_LENGTH: Final = 12
AES_GCM_TAG_LENGTH: Final = 16

_UNAVAILABLE_MESSAGE: Final = (
    "AES-256-GCM is not available: libsodium (via PyNaCl) only provides it on CPUs with "
    "hardware AES support (x86-64 with AES-NI and PCLMULQDQ, or ARMv8 with the crypto "
    "extensions). PSK2 needs AES-256-GCM, so this machine cannot receive PSK2 payments; "
    "run on a CPU with AES-NI (most x86-64 CPUs since 2010) or an ARMv8 CPU with AES."
)

_aes_checked = False

_sha256 = hashlib.sha256
# PyNaCl's own cffi handle on libsodium.  nacl.bindings.crypto_aead_aes256gcm_* wrap
# exactly these calls in a dozen Python-level checks (~5 us per call); calling the C
# functions directly, after our own length checks, halves the cost of a PSK2 packet.
_c_encrypt = _sodium_lib.crypto_aead_aes256gcm_encrypt
_c_decrypt = _sodium_lib.crypto_aead_aes256gcm_decrypt
_new = _ffi.new
_buffer = _ffi.buffer
_NULL = _ffi.NULL


_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_BLOCK: Final = 64


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (32 bytes)."""
    return _sha256(data).digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 with ``key`` over ``message`` (32 bytes), RFC 2104.

    Built from hashlib's SHA-256 rather than ``hmac.digest``: OpenSSL's one-shot HMAC
    carries ~2 us of EVP set-up per call, which is most of a PSK2 key derivation.
    """
    if len(key) > _BLOCK:
        key = _sha256(key).digest()
    block = bytes(key).ljust(_BLOCK, b"\0")
    inner = _sha256(block.translate(_IPAD))
    inner.update(message)
    return _sha256(block.translate(_OPAD) + inner.digest()).digest()


class HmacSha256:
    """An HMAC-SHA256 key with its inner and outer hash states precomputed (RFC 2104).

    For a key used on many messages (a PSK2 fulfillment key, the receiver's generator)
    :meth:`digest` costs two SHA-256 state copies instead of re-keying: about 2.5x
    faster than :func:`hmac_sha256`.  Same result.  ``repr`` never shows the key.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = _sha256(key).digest()
        block = bytes(key).ljust(_BLOCK, b"\0")
        self._inner = _sha256(block.translate(_IPAD))
        self._outer = _sha256(block.translate(_OPAD))

    def __repr__(self) -> str:
        return "HmacSha256(<key hidden>)"

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under this key (32 bytes)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings without leaking where they differ."""
    return _hmac.compare_digest(a, b)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG. For the I/O layer only."""
    return os.urandom(n)


def aes256gcm_available() -> bool:
    """Whether libsodium can run AES-256-GCM on this CPU."""
    return bool(_sodium_lib.crypto_aead_aes256gcm_is_available())


def require_aes256gcm() -> None:
    """Raise :class:`CryptoUnavailableError` (with the reason) if AES-256-GCM cannot run.

    The positive answer is cached, so calling this on every packet is cheap.
    """
    global _aes_checked
    if _aes_checked:
        return
    if not aes256gcm_available():
        raise CryptoUnavailableError(_UNAVAILABLE_MESSAGE)
    _aes_checked = True


def _check_key_nonce(key: bytes, nonce: bytes) -> None:
    if len(key) != AES_GCM_KEY_LENGTH:
        raise EncodeError(f"AES-256-GCM key must be {AES_GCM_KEY_LENGTH} bytes, got {len(key)}")
    if len(nonce) != AES_GCM_NONCE_LENGTH:
        raise EncodeError(
            f"AES-256-GCM nonce must be {AES_GCM_NONCE_LENGTH} bytes, got {len(nonce)}"
        )


def aes256gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM without associated data; returns ``ciphertext || tag`` (libsodium order).

    Raises EncodeError for a key that is not 32 bytes or a nonce that is not 12 bytes.
    """
    if not _aes_checked:
        require_aes256gcm()
    _check_key_nonce(key, nonce)
    size = len(plaintext) + AES_GCM_TAG_LENGTH
    out = _new("unsigned char[]", size)
    # int crypto_aead_aes256gcm_encrypt(c, clen_p (may be NULL), m, mlen, ad, adlen,
    #                                   nsec (unused, NULL), npub, k)
    if _c_encrypt(out, _NULL, bytes(plaintext), size - AES_GCM_TAG_LENGTH, _NULL, 0, _NULL,
                  bytes(nonce), bytes(key)) != 0:  # fmt: skip
        raise CryptoUnavailableError("libsodium refused to encrypt with AES-256-GCM")
    sealed: bytes = _buffer(out, size)[:]
    return sealed


def aes256gcm_decrypt(key: bytes, nonce: bytes, ciphertext_and_tag: bytes) -> bytes:
    """Inverse of :func:`aes256gcm_encrypt`.

    A failed authentication (wrong key, tampered bytes, too short) raises DecodeError.
    """
    if not _aes_checked:
        require_aes256gcm()
    if len(key) != AES_GCM_KEY_LENGTH or len(nonce) != AES_GCM_NONCE_LENGTH:
        raise DecodeError("AES-256-GCM: bad key or nonce length", 0)
    size = len(ciphertext_and_tag) - AES_GCM_TAG_LENGTH
    if size < 0:
        raise DecodeError("AES-256-GCM: ciphertext shorter than the tag", 0)
    out = _new("unsigned char[]", size or 1)
    # int crypto_aead_aes256gcm_decrypt(m, mlen_p (may be NULL), nsec (NULL), c, clen,
    #                                   ad, adlen, npub, k); -1 when the tag is wrong
    if _c_decrypt(out, _NULL, _NULL, bytes(ciphertext_and_tag), size + AES_GCM_TAG_LENGTH,
                  _NULL, 0, bytes(nonce), bytes(key)) != 0:  # fmt: skip
        raise DecodeError("AES-256-GCM: authentication failed", 0)
    plaintext: bytes = _buffer(out, size)[:]
    return plaintext


def aes256gcm_encrypt_detached(key: bytes, nonce: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """Like :func:`aes256gcm_encrypt` but returns ``(ciphertext, tag)`` separately."""
    sealed = aes256gcm_encrypt(key, nonce, plaintext)
    return sealed[:-AES_GCM_TAG_LENGTH], sealed[-AES_GCM_TAG_LENGTH:]


def aes256gcm_decrypt_detached(key: bytes, nonce: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """Like :func:`aes256gcm_decrypt` with the tag passed separately (16 bytes)."""
    if len(tag) != AES_GCM_TAG_LENGTH:
        raise DecodeError(f"AES-256-GCM: tag must be {AES_GCM_TAG_LENGTH} bytes", 0)
    return aes256gcm_decrypt(key, nonce, bytes(ciphertext) + bytes(tag))
