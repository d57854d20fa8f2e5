"""Stateless PSK2 receiver addresses and shared secrets (spec ``06-psk2.md`` §2).

From one long-term ``receiver_secret`` (>= 32 bytes)::

    receiverId   = base64url(HMAC-SHA256(receiverSecret, "ilp_psk2_receiver_id")[0:8])
    generator    = HMAC-SHA256(receiverSecret, "ilp_psk2_generation")
    sharedSecret = HMAC-SHA256(generator, token || key)
    destination  = address [+ "." + app segments] + "." + receiverId + "." + base64url(token || key)

``token`` is 18 random bytes per SPSP query (passed in: this module draws no
randomness).  ``key`` is optional application bytes appended to the token, as the
draft-2-era receiver did with its ``keyId`` ("bytes beyond the first 18 are an
application keyId. Same ilp_psk2_generation derivation over the whole decoded
segment", §2).  Because ``key`` is part of the HMAC input it is *authenticated*: a
sender cannot move a payment to another key without losing the shared secret.  This
is how the library binds a payment to a Pay-Token, a visitor id or an order.

Application segments between the address and the receiver id (the Web Monetization
page-id splice, ``09-web-monetization.md``) are *not* authenticated, exactly as in the
2018 middleware: "the receiver ignores them and the application reads them back from
the destination" (§2).  Use ``key`` when the binding must be trusted.

Any worker holding ``receiver_secret`` can regenerate the secret of any destination,
so nothing per-sender needs to be stored; derived keys are kept in a bounded LRU
(keyed by destination), so a sender that reuses one SPSP answer costs one HMAC per
packet (the fulfillment), not four.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from ..codec.psk2 import (
    GENERATION_LABEL,
    RECEIVER_ID_LABEL,
    RECEIVER_ID_LENGTH,
    TOKEN_LENGTH,
    Psk2Keys,
    derive_keys,
)
from ..crypto import HmacSha256, hmac_sha256
from ..errors import ConfigError, DecodeError, EncodeError, IlpError, InvalidAddressError

__all__ = [
    "DEFAULT_KEY_CACHE_SIZE",
    "MIN_RECEIVER_SECRET_LENGTH",
    "NOT_FOR_THIS_RECEIVER",
    "IssuedSecret",
    "ParsedDestination",
    "ReceiverSecrets",
    "WrongReceiverError",
    "base64url",
    "decode_base64_lenient",
]

MIN_RECEIVER_SECRET_LENGTH: Final = 32
DEFAULT_KEY_CACHE_SIZE: Final = 10_000
#: §7 step 1 / §2: 'Reject F06 "Payment is not for this receiver"'.
NOT_FOR_THIS_RECEIVER: Final = "Payment is not for this receiver"
#: RFC 15: an ILP address is at most 1023 characters.
MAX_ADDRESS_LENGTH: Final = 1023

_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_~-]+")
#: base64url (no padding) of the 8-byte receiver id
_RECEIVER_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{11}")
_PADDING: Final = ("", "===", "==", "=")
_TO_STANDARD: Final = str.maketrans("-_", "+/")


class WrongReceiverError(IlpError):
    """The destination was not issued by this receiver; maps to Reject F06.

    Raised for a wrong receiver id, a foreign address prefix, or a last segment that
    is not base64 ("Failure -> Reject F06 'Payment is not for this receiver'", §7 step 1).
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__("F06", NOT_FOR_THIS_RECEIVER)
        #: Why (for debugging; never contains secrets). Not sent to the peer.
        self.detail = detail


def base64url(data: bytes) -> str:
    """base64url without padding: "standard base64 with + -> -, / -> _, trailing = removed"."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64_lenient(text: str) -> bytes:
    """Decode base64 the way Node's ``Buffer.from(s, 'base64')`` did for PSK2 tokens.

    "Node's decoder accepts both the url-safe and standard alphabets and ignores
    missing padding ... A Python port should decode leniently in the same way (add
    padding, accept -_+/)" (§2).  A dangling sixth-bit group (length = 1 mod 4) is
    dropped, as Node does.  Characters outside the alphabets raise DecodeError.
    """
    body = text.translate(_TO_STANDARD).rstrip("=")
    if len(body) % 4 == 1:
        body = body[:-1]
    try:
        # strict_mode: only the base64 alphabet, padding only at the end.
        return binascii.a2b_base64(body + _PADDING[len(body) % 4], strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise DecodeError("token segment is not base64", 0) from None


class IssuedSecret(NamedTuple):
    """What a sender gets (over SPSP, a ``Pay`` header, ...): destination + shared secret.

    Unpacks like a tuple: ``destination, shared_secret = secrets.issue(...)``.  The
    secret is kept out of ``repr``.
    """

    destination: str
    shared_secret: bytes

    def __repr__(self) -> str:
        return f"IssuedSecret(destination={self.destination!r}, shared_secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class ParsedDestination:
    """A destination this receiver issued, taken apart by ``parse_destination``.

    ``token`` is the first 18 bytes of the decoded last segment, ``key`` the rest (the
    authenticated application bytes, b"" if none), ``app_segments`` the unauthenticated
    segments between the receiver's address and its receiver id.  ``with_receiver_id``
    is False for the draft-2-era form ``address.base64url(token || keyId)``.
    """

    token: bytes
    key: bytes
    app_segments: tuple[str, ...]
    keys: Psk2Keys = field(repr=False)
    with_receiver_id: bool = True

    @property
    def shared_secret(self) -> bytes:
        """The 32-byte PSK2 shared secret for this destination."""
        return self.keys.shared_secret

    @property
    def token_and_key(self) -> bytes:
        """The decoded last segment (the HMAC input of the shared secret)."""
        return self.token + self.key


class ReceiverSecrets:
    """Derives receiver id, shared secrets and PSK2 keys from one receiver secret (§2).

    Thread-compatible: the key cache tolerates concurrent use under the GIL (a lost
    cache update only costs a recomputation).
    """

    __slots__ = (
        "_cache",
        "_cache_size",
        "_generator",
        "_generator_hmac",
        "_receiver_id",
        "_receiver_id_raw",
        "_valid_address",
    )

    def __init__(self, receiver_secret: bytes, *, cache_size: int = DEFAULT_KEY_CACHE_SIZE) -> None:
        if not isinstance(receiver_secret, bytes | bytearray | memoryview):
            raise ConfigError("receiver_secret", "must be bytes")
        secret = bytes(receiver_secret)
        # 0.2.1: assert(secret.length >= 32, 'secret must be at least 32 bytes')
        if len(secret) < MIN_RECEIVER_SECRET_LENGTH:
            raise ConfigError(
                "receiver_secret", f"must be at least {MIN_RECEIVER_SECRET_LENGTH} bytes"
            )
        if cache_size < 0:
            raise ConfigError("cache_size", "must not be negative")
        self._receiver_id_raw = hmac_sha256(secret, RECEIVER_ID_LABEL)[:RECEIVER_ID_LENGTH]
        self._receiver_id = base64url(self._receiver_id_raw)
        self._generator = hmac_sha256(secret, GENERATION_LABEL)
        self._generator_hmac = HmacSha256(self._generator)
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str | None], ParsedDestination] = OrderedDict()
        self._valid_address = ""  # the last address issue() checked (usually ours, always)

    def __repr__(self) -> str:
        return f"ReceiverSecrets(receiver_id={self.receiver_id!r})"

    @property
    def receiver_id(self) -> str:
        """The 11-character receiver id that precedes the token in issued addresses."""
        return self._receiver_id

    @property
    def receiver_id_raw(self) -> bytes:
        """The 8 bytes behind :attr:`receiver_id`."""
        return self._receiver_id_raw

    def foreign_receiver_id(self, destination: str, address: str) -> str | None:
        """The receiver id of a PSK2 destination under ``address`` issued by *another*
        receiver (another secret), or None (ours, or not PSK2-shaped).

        Such packets reach us when two receivers share one uplink account: the
        connector gives both the same address and delivers to whichever is connected.
        """
        if not destination.startswith(address + "."):
            return None
        rest = destination[len(address) + 1 :].split(".")
        if len(rest) < 2:
            return None
        candidate = rest[-2]
        if candidate == self._receiver_id or not _RECEIVER_ID_RE.fullmatch(candidate):
            return None
        return candidate

    @property
    def generator(self) -> bytes:
        """``HMAC-SHA256(receiverSecret, "ilp_psk2_generation")``. Secret: do not log."""
        return self._generator

    def shared_secret(self, token_and_key: bytes) -> bytes:
        """``HMAC-SHA256(generator, token || key)`` (the whole 32-byte MAC)."""
        return self._generator_hmac.digest(token_and_key)

    def keys_for(self, token_and_key: bytes) -> Psk2Keys:
        """Shared secret plus derived encryption and fulfillment keys (uncached)."""
        return derive_keys(self.shared_secret(token_and_key))

    def issue(
        self,
        address: str,
        token: bytes,
        key: bytes = b"",
        *,
        segments: Sequence[str] = (),
        with_receiver_id: bool = True,
    ) -> IssuedSecret:
        """A destination and shared secret for one sender.

        ``token`` must be 18 fresh random bytes (the caller draws them, e.g. with
        :func:`ilp_receiver.crypto.random_bytes`).  ``key`` is authenticated application
        bytes carried in the address.  ``segments`` are inserted between ``address``
        and the receiver id (Web Monetization's page id).  ``with_receiver_id=False``
        produces the draft-2-era form ``address.base64url(token || key)``.
        """
        if len(token) != TOKEN_LENGTH:
            raise EncodeError(f"token must be {TOKEN_LENGTH} bytes, got {len(token)}")
        if address != self._valid_address:
            if not address or any(_SEGMENT_RE.fullmatch(s) is None for s in address.split(".")):
                raise InvalidAddressError(f"not an ILP address: {address!r}")
            self._valid_address = address
        for segment in segments:
            if _SEGMENT_RE.fullmatch(segment) is None:
                raise InvalidAddressError(f"not a valid ILP address segment: {segment!r}")
        if not with_receiver_id and segments:
            raise EncodeError("application segments need the receiver-id address form")
        token_and_key = bytes(token) + bytes(key)
        parts = [address, *segments]
        if with_receiver_id:
            parts.append(self._receiver_id)
        parts.append(base64url(token_and_key))
        destination = ".".join(parts)
        if len(destination) > MAX_ADDRESS_LENGTH:
            raise InvalidAddressError(
                f"destination would be {len(destination)} characters; the maximum is "
                f"{MAX_ADDRESS_LENGTH} (use a shorter key or fewer segments)"
            )
        return IssuedSecret(destination, self.shared_secret(token_and_key))

    def _keys_for_segment(self, segment: str) -> tuple[bytes, Psk2Keys]:
        try:
            token_and_key = decode_base64_lenient(segment)
        except DecodeError:
            raise WrongReceiverError("last segment is not base64") from None
        return token_and_key, derive_keys(self.shared_secret(token_and_key))

    def parse_destination(self, destination: str, address: str | None = None) -> ParsedDestination:
        """Take apart a destination issued by :meth:`issue` and regenerate its keys.

        With ``address`` (the receiver's own IL-DCP address) the destination must start
        with ``address + "."`` (spec 11 item 14: "it is safe to require the address
        prefix"); what follows is ``[app segments...] receiverId token`` or, the
        draft-2-era form, a single ``token`` segment.  Without ``address`` only the last
        two segments are looked at, as 0.2.1 did, and ``app_segments`` is empty.

        "The second-to-last segment must equal this receiver's receiverId (else Reject
        F06 'Payment is not for this receiver')" (§2): every failure raises
        :class:`WrongReceiverError`.  The token length is not checked ("a wrong token
        simply yields a secret that fails decryption").
        """
        cache = self._cache
        cache_key = (destination, address)
        parsed = cache.get(cache_key)
        if parsed is not None:
            try:
                cache.move_to_end(cache_key)
            except KeyError:  # pragma: no cover - evicted by another thread meanwhile
                return parsed
            return parsed
        parsed = self._parse(destination, address)
        if self._cache_size:
            cache[cache_key] = parsed
            while len(cache) > self._cache_size:
                try:
                    cache.popitem(last=False)
                except KeyError:  # pragma: no cover - emptied by another thread
                    break
        return parsed

    def _parse(self, destination: str, address: str | None) -> ParsedDestination:
        if address is not None:
            prefix_length = len(address)
            if (
                len(destination) <= prefix_length + 1
                or destination[prefix_length] != "."
                or not destination.startswith(address)
            ):
                raise WrongReceiverError("destination does not start with our address")
            rest = destination[prefix_length + 1 :].split(".")
        else:
            rest = destination.split(".")
        count = len(rest)
        if count >= 2 and rest[-2] == self.receiver_id:
            segment = rest[-1]
            app_segments = tuple(rest[:-2]) if address is not None else ()
            with_receiver_id = True
        elif count == 1 and address is not None:
            # 0.3.x-0.5.0: "no receiverId; destination = address + '.' +
            # base64url(token || keyId?); the receiver strips its own address prefix,
            # takes the next segment, decodes it" (§2).
            segment = rest[0]
            app_segments = ()
            with_receiver_id = False
        else:
            raise WrongReceiverError("receiver id does not match")
        token_and_key, keys = self._keys_for_segment(segment)
        return ParsedDestination(
            token_and_key[:TOKEN_LENGTH],
            token_and_key[TOKEN_LENGTH:],
            app_segments,
            keys,
            with_receiver_id,
        )

    def clear_cache(self) -> None:
        """Forget every cached key (e.g. after rotating secrets in tests)."""
        self._cache.clear()
