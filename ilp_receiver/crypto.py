"""The cryptographic primitives ilp-receiver needs, in one place.

* SHA-256 and HMAC-SHA256 (``hashlib``/``hmac``, i.e. OpenSSL);
* AES-256-GCM through ``cryptography``'s public :class:`AESGCM` (OpenSSL), used by the
  end-to-end encryption of PSK2 (spec ``06-psk2.md`` §4) and STREAM (``12-stream.md``
  §4).  OpenSSL runs AES-GCM on every CPU (with AES-NI / ARMv8 AES where present, in
  constant-time software elsewhere), so there is no CPU requirement;
* the envelope both protocols put in ILP ``data``: ``IV (12) || tag (16) || ciphertext``
  (:func:`seal_envelope` / :func:`open_envelope`);
* a constant-time comparison (``hmac.compare_digest``);
* :func:`random_bytes` (``os.urandom``) for the I/O layer.  Sans-I/O code never calls
  it: IVs, tokens and payment ids are parameters there, so tests can replay recorded
  randomness byte for byte.

``AESGCM`` returns ``ciphertext || tag``; the ``*_detached`` helpers here split and join
that.  Key objects are cached (a bounded LRU keyed by the key bytes): setting up a key
costs about as much as sealing a small packet, and a connection or payment uses its key
for many packets.
"""

from __future__ import annotations

import functools
import hashlib
import hmac as _hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CryptoUnavailableError, DecodeError, EncodeError

__all__ = [
    "AES_GCM_KEY_LENGTH",
    "AES_GCM_NONCE_LENGTH",
    "AES_GCM_TAG_LENGTH",
    "ENVELOPE_OVERHEAD",
    "EnvelopeKey",
    "HmacSha256",
    "aes256gcm_available",
    "aes256gcm_decrypt",
    "aes256gcm_decrypt_detached",
    "aes256gcm_encrypt",
    "aes256gcm_encrypt_detached",
    "constant_time_equal",
    "hmac_sha256",
    "open_envelope",
    "random_bytes",
    "require_aes256gcm",
    "seal_envelope",
    "sha256",
]

AES_GCM_KEY_LENGTH: Final = 32
AES_GCM_NONCE_LENGTH: Final = 12
AES_GCM_TAG_LENGTH: Final = 16
#: ``IV || tag`` in front of every ciphertext (PSK2 §4, STREAM §4).
ENVELOPE_OVERHEAD: Final = AES_GCM_NONCE_LENGTH + AES_GCM_TAG_LENGTH

_UNAVAILABLE_MESSAGE: Final = (
    "AES-256-GCM is not available: the OpenSSL that the 'cryptography' package was "
    "built with refuses it (a FIPS-restricted or stripped-down OpenSSL). PSK2 and STREAM "
    "need AES-256-GCM; install the 'cryptography' wheel from PyPI, which bundles its own "
    "OpenSSL."
)

_sha256 = hashlib.sha256


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


@functools.lru_cache(maxsize=4096)
def _aead(key: bytes) -> AESGCM:
    """The cached key object for a 32-byte ``key`` (checked by the callers)."""
    try:
        return AESGCM(key)
    except UnsupportedAlgorithm as exc:
        raise CryptoUnavailableError(_UNAVAILABLE_MESSAGE) from exc


def aes256gcm_available() -> bool:
    """Whether OpenSSL (through ``cryptography``) can run AES-256-GCM here."""
    try:
        AESGCM(bytes(AES_GCM_KEY_LENGTH)).encrypt(bytes(AES_GCM_NONCE_LENGTH), b"", None)
    except UnsupportedAlgorithm:
        return False
    return True


def require_aes256gcm() -> None:
    """Raise :class:`CryptoUnavailableError` (with the reason) if AES-256-GCM cannot run.

    Call it once at start-up to fail early; the encryption functions raise the same error
    on first use otherwise.
    """
    if not aes256gcm_available():
        raise CryptoUnavailableError(_UNAVAILABLE_MESSAGE)


def _check_key_nonce(key: bytes, nonce: bytes) -> None:
    if len(key) != AES_GCM_KEY_LENGTH:
        raise EncodeError(f"AES-256-GCM key must be {AES_GCM_KEY_LENGTH} bytes, got {len(key)}")
    if len(nonce) != AES_GCM_NONCE_LENGTH:
        raise EncodeError(
            f"AES-256-GCM nonce must be {AES_GCM_NONCE_LENGTH} bytes, got {len(nonce)}"
        )


def aes256gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM without associated data; returns ``ciphertext || tag``.

    Raises EncodeError for a key that is not 32 bytes or a nonce that is not 12 bytes.
    """
    if len(key) != AES_GCM_KEY_LENGTH or len(nonce) != AES_GCM_NONCE_LENGTH:
        _check_key_nonce(key, nonce)
    return _aead(bytes(key)).encrypt(nonce, plaintext, None)


def aes256gcm_decrypt(key: bytes, nonce: bytes, ciphertext_and_tag: bytes) -> bytes:
    """Inverse of :func:`aes256gcm_encrypt`.

    A failed authentication (wrong key, tampered bytes, too short) raises DecodeError.
    """
    if len(key) != AES_GCM_KEY_LENGTH or len(nonce) != AES_GCM_NONCE_LENGTH:
        raise DecodeError("AES-256-GCM: bad key or nonce length", 0)
    if len(ciphertext_and_tag) < AES_GCM_TAG_LENGTH:
        raise DecodeError("AES-256-GCM: ciphertext shorter than the tag", 0)
    try:
        return _aead(bytes(key)).decrypt(nonce, ciphertext_and_tag, None)
    except InvalidTag:
        raise DecodeError("AES-256-GCM: authentication failed", 0) from None


def aes256gcm_encrypt_detached(key: bytes, nonce: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """Like :func:`aes256gcm_encrypt` but returns ``(ciphertext, tag)`` separately."""
    sealed = aes256gcm_encrypt(key, nonce, plaintext)
    return sealed[:-AES_GCM_TAG_LENGTH], sealed[-AES_GCM_TAG_LENGTH:]


def aes256gcm_decrypt_detached(key: bytes, nonce: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """Like :func:`aes256gcm_decrypt` with the tag passed separately (16 bytes)."""
    if len(tag) != AES_GCM_TAG_LENGTH:
        raise DecodeError(f"AES-256-GCM: tag must be {AES_GCM_TAG_LENGTH} bytes", 0)
    return aes256gcm_decrypt(key, nonce, bytes(ciphertext) + bytes(tag))


def seal_envelope(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """The PSK2/STREAM envelope ``IV || tag || ciphertext`` (AES-256-GCM under ``key``).

    ``iv`` must be 12 fresh random bytes: an IV must never repeat under one key.
    """
    # Once per packet each way: one call into the cached key object, no helper layers.
    if len(key) != AES_GCM_KEY_LENGTH or len(iv) != AES_GCM_NONCE_LENGTH:
        _check_key_nonce(key, iv)
    sealed = _aead(key if type(key) is bytes else bytes(key)).encrypt(iv, plaintext, None)
    return iv + sealed[-AES_GCM_TAG_LENGTH:] + sealed[:-AES_GCM_TAG_LENGTH]


def open_envelope(key: bytes, data: bytes) -> bytes:
    """Open an envelope made by :func:`seal_envelope`.

    DecodeError when ``data`` is shorter than the 28-byte overhead or does not
    authenticate under ``key``.
    """
    if len(data) < ENVELOPE_OVERHEAD:
        raise DecodeError(f"envelope needs at least {ENVELOPE_OVERHEAD} bytes, got {len(data)}", 0)
    if len(key) != AES_GCM_KEY_LENGTH:
        raise DecodeError("AES-256-GCM: bad key or nonce length", 0)
    buf = data if type(data) is bytes else bytes(data)
    try:
        return _aead(key if type(key) is bytes else bytes(key)).decrypt(
            buf[:AES_GCM_NONCE_LENGTH],
            buf[ENVELOPE_OVERHEAD:] + buf[AES_GCM_NONCE_LENGTH:ENVELOPE_OVERHEAD],
            None,
        )
    except InvalidTag:
        raise DecodeError("AES-256-GCM: authentication failed", 0) from None


class EnvelopeKey:
    """One AES-256-GCM key for many envelopes: :func:`seal_envelope` /
    :func:`open_envelope` with the key object looked up once.

    For a key used on every packet of a connection (a STREAM connection's encryption
    key): the per-call key checks and the cache lookup are paid at construction.
    Same bytes and errors as the functions.  ``repr`` never shows the key.
    """

    __slots__ = ("_decrypt", "_encrypt")

    def __init__(self, key: bytes) -> None:
        if len(key) != AES_GCM_KEY_LENGTH:
            raise EncodeError(f"AES-256-GCM key must be {AES_GCM_KEY_LENGTH} bytes, got {len(key)}")
        aead = _aead(bytes(key))
        self._encrypt = aead.encrypt
        self._decrypt = aead.decrypt

    def __repr__(self) -> str:
        return "EnvelopeKey(<key hidden>)"

    def seal(self, iv: bytes, plaintext: bytes) -> bytes:
        """:func:`seal_envelope` under this key."""
        if len(iv) != AES_GCM_NONCE_LENGTH:
            raise EncodeError(
                f"AES-256-GCM nonce must be {AES_GCM_NONCE_LENGTH} bytes, got {len(iv)}"
            )
        sealed = self._encrypt(iv, plaintext, None)
        return iv + sealed[-AES_GCM_TAG_LENGTH:] + sealed[:-AES_GCM_TAG_LENGTH]

    def open(self, data: bytes | bytearray | memoryview) -> bytes:
        """:func:`open_envelope` under this key."""
        if len(data) < ENVELOPE_OVERHEAD:
            raise DecodeError(
                f"envelope needs at least {ENVELOPE_OVERHEAD} bytes, got {len(data)}", 0
            )
        buf = data if type(data) is bytes else bytes(data)
        try:
            return self._decrypt(
                buf[:AES_GCM_NONCE_LENGTH],
                buf[ENVELOPE_OVERHEAD:] + buf[AES_GCM_NONCE_LENGTH:ENVELOPE_OVERHEAD],
                None,
            )
        except InvalidTag:
            raise DecodeError("AES-256-GCM: authentication failed", 0) from None
