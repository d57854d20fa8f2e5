"""Webhook signatures in the Standard Webhooks format (https://www.standardwebhooks.com).

Every delivery carries three headers::

    webhook-id:        evt_...                      (the event id; stable across retries)
    webhook-timestamp: 1767225600                   (seconds since the epoch, this attempt)
    webhook-signature: v1a,<base64 signature> ...   (space-separated, one per key)

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` (the body as sent,
bytes).  Two schemes:

* ``v1a`` -- Ed25519 (the default; PyNaCl's :mod:`nacl.signing`).  The sender holds the
  secret key ``whsk_<base64 32-byte seed>``, consumers only the public key
  ``whpk_<base64 32 bytes>``: a consumer cannot forge events.
* ``v1`` -- HMAC-SHA256 with a shared secret ``whsec_<base64 bytes>`` (what most
  Standard Webhooks libraries verify out of the box).

:func:`verify_webhook` checks one delivery: the timestamp within ``tolerance`` seconds
of now, and one signature of the headers that verifies under the key (comparisons in
constant time).  Keys never appear in ``repr`` or error messages.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import nacl.exceptions
import nacl.signing

from ..errors import ConfigError, IlpReceiverError

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_SIGNATURE_HEADER",
    "SigningKey",
    "VerifyKey",
    "WebhookVerificationError",
    "generate_ed25519_key",
    "generate_hmac_secret",
    "parse_key",
    "sign_headers",
    "signed_content",
    "verify_webhook",
]

#: Seconds a delivery's timestamp may differ from the consumer's clock (either way).
DEFAULT_TOLERANCE: Final = 300
#: The longest ``webhook-signature`` header :func:`verify_webhook` reads (characters).
MAX_SIGNATURE_HEADER: Final = 4096
_MAX_ID: Final = 256

_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a key prefix, not a secret)
_SIGNING_PREFIX: Final = "whsk_"
_PUBLIC_PREFIX: Final = "whpk_"


class WebhookVerificationError(IlpReceiverError):
    """A delivery did not verify: missing or malformed headers, a timestamp outside the
    tolerance, or no signature that the key accepts.  The message never holds a key."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigError(what, "not valid base64") from None


@functools.lru_cache(maxsize=16)
def _ed25519(seed: bytes) -> nacl.signing.SigningKey:
    """The expanded Ed25519 key of ``seed`` (expanding costs as much as signing)."""
    return nacl.signing.SigningKey(seed)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """What the dispatcher signs with: an Ed25519 seed (``whsk_``) or an HMAC secret
    (``whsec_``).  Parse one with :func:`parse_key`; ``repr`` hides the key."""

    scheme: Literal["v1a", "v1"]
    key: bytes = field(repr=False)

    def sign(self, content: bytes) -> str:
        """The ``<scheme>,<base64 signature>`` of ``content``."""
        if self.scheme == "v1a":
            signature = _ed25519(self.key).sign(content).signature
        else:
            signature = hmac.new(self.key, content, hashlib.sha256).digest()
        return f"{self.scheme},{base64.b64encode(signature).decode('ascii')}"

    @property
    def public_key(self) -> str:
        """The ``whpk_`` public key consumers verify with (Ed25519), or the ``whsec_``
        secret itself (HMAC: the consumer needs the shared secret)."""
        if self.scheme == "v1a":
            raw = bytes(nacl.signing.SigningKey(self.key).verify_key)
            return _PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")
        return _SECRET_PREFIX + base64.b64encode(self.key).decode("ascii")

    def verify_key(self) -> VerifyKey:
        """The key a consumer verifies this key's signatures with."""
        if self.scheme == "v1a":
            return VerifyKey("v1a", bytes(nacl.signing.SigningKey(self.key).verify_key))
        return VerifyKey("v1", self.key)


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """What a consumer verifies with: an Ed25519 public key (``whpk_``) or the HMAC
    secret (``whsec_``).  ``repr`` hides the key."""

    scheme: Literal["v1a", "v1"]
    key: bytes = field(repr=False)

    def accepts(self, content: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (raw bytes) is this key's signature of ``content``."""
        if self.scheme == "v1a":
            if len(signature) != 64:
                return False
            try:
                nacl.signing.VerifyKey(self.key).verify(content, signature)
            except nacl.exceptions.BadSignatureError:
                return False
            return True
        expected = hmac.new(self.key, content, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)


def parse_key(text: str, *, setting: str = "webhook_key") -> SigningKey | VerifyKey:
    """A key from its text form: ``whsk_...`` (Ed25519 secret key: a
    :class:`SigningKey`), ``whpk_...`` (Ed25519 public key: a :class:`VerifyKey`) or
    ``whsec_...`` (HMAC secret: a :class:`SigningKey`, which also verifies).  A bad
    value is a :class:`ConfigError` naming ``setting`` (never quoting the value)."""
    if not isinstance(text, str):
        raise ConfigError(setting, f"expected a key as text, got {type(text).__name__}")
    value = text.strip()
    if value.startswith(_SIGNING_PREFIX):
        raw = _b64decode(value[len(_SIGNING_PREFIX) :], setting)
        if len(raw) != 32:
            raise ConfigError(setting, "a whsk_ key holds a 32-byte Ed25519 seed")
        return SigningKey("v1a", raw)
    if value.startswith(_PUBLIC_PREFIX):
        raw = _b64decode(value[len(_PUBLIC_PREFIX) :], setting)
        if len(raw) != 32:
            raise ConfigError(setting, "a whpk_ key holds a 32-byte Ed25519 public key")
        return VerifyKey("v1a", raw)
    if value.startswith(_SECRET_PREFIX):
        raw = _b64decode(value[len(_SECRET_PREFIX) :], setting)
        if not 24 <= len(raw) <= 64:
            raise ConfigError(setting, "a whsec_ secret holds 24 to 64 bytes")
        return SigningKey("v1", raw)
    raise ConfigError(setting, "expected a key starting with whsk_, whpk_ or whsec_")


def generate_ed25519_key() -> tuple[str, str]:
    """A fresh Ed25519 key pair as text: ``(whsk_..., whpk_...)``."""
    seed = secrets.token_bytes(32)
    key = SigningKey("v1a", seed)
    return _SIGNING_PREFIX + base64.b64encode(seed).decode("ascii"), key.public_key


def generate_hmac_secret() -> str:
    """A fresh 32-byte HMAC secret as text (``whsec_...``)."""
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signed_content(event_id: str, timestamp: int, body: bytes) -> bytes:
    """``{id}.{timestamp}.{body}``: what a signature covers."""
    return f"{event_id}.{timestamp}.".encode() + body


def sign_headers(
    keys: SigningKey | list[SigningKey], event_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery of ``body`` (one signature
    per key: several keys while rotating)."""
    if timestamp is None:
        timestamp = int(time.time())
    content = signed_content(event_id, timestamp, body)
    signing = keys if isinstance(keys, list) else [keys]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(key.sign(content) for key in signing),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    key: str | SigningKey | VerifyKey,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Check one delivery; return ``None`` when it is authentic, else raise
    :class:`WebhookVerificationError`.

    ``body`` is the request body exactly as received, ``headers`` its headers (any
    case), ``key`` the ``whpk_`` public key (Ed25519) or the ``whsec_`` secret (HMAC),
    as text or parsed.  The ``webhook-timestamp`` must be within ``tolerance``
    seconds of ``now`` (default: the clock) -- a replay of an old delivery is refused --
    and one of the space-separated signatures of the key's scheme must verify.
    """
    verify = parse_key(key, setting="key") if isinstance(key, str) else key
    if isinstance(verify, SigningKey):
        verify = verify.verify_key()
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    event_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not event_id or len(event_id) > _MAX_ID:
        raise WebhookVerificationError("bad webhook-id header")
    if len(signatures) > MAX_SIGNATURE_HEADER:
        raise WebhookVerificationError("webhook-signature header too long")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise WebhookVerificationError("bad webhook-timestamp header")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance")
    content = signed_content(event_id, timestamp, raw)
    prefix = verify.scheme + ","
    for candidate in signatures.split(" "):
        if not candidate.startswith(prefix):
            continue
        try:
            signature = base64.b64decode(candidate[len(prefix) :], validate=True)
        except (binascii.Error, ValueError):
            continue
        if verify.accepts(content, signature):
            return
    raise WebhookVerificationError("no valid signature")
