"""The authenticated read of incoming payments: a GNAP grant and signed requests.

The public GET of an incoming payment does not say which wallet address it belongs to
(spec ``13-modern-web-monetization.md`` §1).  A GNAP (RFC 9635) ``incoming-payment``
``read-all`` grant from the wallet's authorization server does: with its token the GET
returns the full resource (``walletAddress``, ``completed``, ``expiresAt``).  Open
Payments authenticates the *client* by HTTP message signatures (RFC 9421) under a key
registered on the client's wallet address (the AS reads ``<client>/jwks.json`` by
``keyid``); the site is its own client, so its wallet address is ``client`` and its
public key must be added to that wallet (the test wallet and GateHub have a "developer
keys" page).

:class:`GnapSigningKey` signs as ``@interledger/http-signature-utils`` 2.0.3 does
(§2): label ``sig1``, Ed25519, parameters ``keyid`` and ``created``, components
``@method @target-uri``, plus ``authorization`` when sent, plus ``content-digest
content-length content-type`` with a body; ``Content-Digest: sha-512=:…:`` over the
compact JSON.  :class:`GnapReader` asks for the grant (non-interactive; Rafiki grants
``incoming-payment`` without interaction), keeps the token until shortly before
``expires_in`` runs out or the resource server answers 401, and signs every GET.
Grants are requested again rather than rotated (``manage``), which any AS accepts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import ConfigError
from .open_payments import OpenPaymentsError, OpenPaymentsFetcher

__all__ = [
    "GnapReader",
    "GnapSigningKey",
    "GrantedToken",
]

_TOKEN_MARGIN: Final = 30.0
_MAX_TOKEN = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class GnapSigningKey:
    """An Ed25519 key and its key id, signing Open Payments requests (RFC 9421).

    Build it from a PEM (PKCS #8, as ``@interledger/http-signature-utils`` writes and
    the wallets' developer-keys pages hand out) with :meth:`from_pem`, or
    :meth:`generate` one.  :meth:`jwk` is the public key to register at the wallet.
    """

    def __init__(self, private_key: Ed25519PrivateKey, key_id: str) -> None:
        if not key_id or len(key_id) > 200 or '"' in key_id or "\\" in key_id:
            raise ConfigError("gnap_key_id", "a key id is 1-200 characters without quotes")
        self._key = private_key
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"GnapSigningKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls, key_id: str) -> GnapSigningKey:
        """A fresh key."""
        return cls(Ed25519PrivateKey.generate(), key_id)

    @classmethod
    def from_pem(cls, pem: bytes | str, key_id: str) -> GnapSigningKey:
        """The key of a PKCS #8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
        raw = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError):
            raise ConfigError("gnap_key", "not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("gnap_key", "Open Payments keys are Ed25519")
        return cls(key, key_id)

    def private_pem(self) -> bytes:
        """The key as a PKCS #8 PEM (keep it secret)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def jwk(self) -> dict[str, str]:
        """The public JWK to add to the wallet address (``/jwks.json``)."""
        public = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {
            "kid": self.key_id,
            "alg": "EdDSA",
            "use": "sig",
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(public),
        }

    def sign(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        created: int | None = None,
    ) -> dict[str, str]:
        """The headers to add to a request: content headers (with a body), ``Signature``
        and ``Signature-Input``.

        ``headers`` are the request's other headers (``Authorization`` is signed when
        present).  The body must be JSON; its digest is over the compact form, as
        Rafiki's verifier recomputes it.
        """
        lower = {name.lower(): value for name, value in headers.items()}
        added: dict[str, str] = {}
        components = ["@method", "@target-uri"]
        if "authorization" in lower:
            components.append("authorization")
        if body is not None:
            compact = json.dumps(
                json.loads(body), separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
            digest = base64.b64encode(hashlib.sha512(compact).digest()).decode("ascii")
            added = {
                "Content-Digest": f"sha-512=:{digest}:",
                "Content-Length": str(len(body)),
                "Content-Type": "application/json",
            }
            lower.update({name.lower(): value for name, value in added.items()})
            components += ["content-digest", "content-length", "content-type"]
        when = int(time.time()) if created is None else created
        listed = " ".join(f'"{name}"' for name in components)
        params = f'({listed});keyid="{self.key_id}";created={when}'
        lines = []
        for name in components:
            if name == "@method":
                value = method.upper()
            elif name == "@target-uri":
                value = url
            else:
                value = lower[name]
            lines.append(f'"{name}": {value}')
        lines.append(f'"@signature-params": {params}')
        signature = self._key.sign("\n".join(lines).encode("utf-8"))
        return {
            **added,
            "Signature-Input": f"sig1={params}",
            "Signature": f"sig1=:{base64.b64encode(signature).decode('ascii')}:",
        }


@dataclass(frozen=True, slots=True)
class GrantedToken:
    """An access token of a grant and when to stop using it (``expires_at``, clock).

    ``value`` is a bearer secret: it is kept out of ``repr``.
    """

    value: str = field(default="", repr=False)
    manage: str = ""
    expires_at: float = 0.0


class GnapReader:
    """Signed, GNAP-authenticated reads of a wallet's incoming payments.

    ``client``: the site's wallet address (what the AS looks its key up under);
    ``key``: its :class:`GnapSigningKey`; ``fetcher``: the bounded HTTP client.
    :meth:`get` GETs an incoming payment with the token (granted on first use, and
    again after 401 or expiry).
    """

    def __init__(
        self,
        client: str,
        key: GnapSigningKey,
        fetcher: OpenPaymentsFetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.key = key
        self.fetcher = fetcher
        self.clock = clock
        self._token: GrantedToken | None = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"GnapReader(client={self.client!r}, key={self.key!r})"

    def grant_request(self, identifier: str) -> dict[str, object]:
        """The grant request body: ``incoming-payment`` ``read-all`` on ``identifier``."""
        return {
            "access_token": {
                "access": [
                    {"type": "incoming-payment", "actions": ["read-all"], "identifier": identifier}
                ]
            },
            "client": self.client,
        }

    async def token(self, auth_server: str, identifier: str) -> GrantedToken:
        """A usable access token (requesting a grant when there is none)."""
        current = self._token
        if current is not None and self.clock() < current.expires_at:
            return current
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = self._token
            if current is not None and self.clock() < current.expires_at:
                return current
            body = json.dumps(self.grant_request(identifier), separators=(",", ":")).encode()
            headers = {"Accept": "application/json"}
            headers.update(self.key.sign("POST", auth_server, headers, body))
            status, doc = await self.fetcher.request_json("POST", auth_server, headers, body)
            if status != 200:
                raise OpenPaymentsError(
                    "GrantRefused", f"the authorization server answered HTTP {status}", 502
                )
            token = self._parse_grant(doc)
            self._token = token
            return token

    def _parse_grant(self, doc: object) -> GrantedToken:
        bad = OpenPaymentsError("GrantRefused", "the grant has no usable access token", 502)
        if not isinstance(doc, dict):
            raise bad
        access = doc.get("access_token")
        if not isinstance(access, dict):
            raise bad  # pending (interaction asked): not for incoming-payment reads
        value, manage = access.get("value"), access.get("manage")
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_TOKEN:
            raise bad
        if any(ch.isspace() or ord(ch) < 0x21 for ch in value):
            raise bad
        expires_in = access.get("expires_in")
        lifetime = 600.0
        if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
            lifetime = float(expires_in)
        return GrantedToken(
            value,
            manage if isinstance(manage, str) else "",
            self.clock() + max(lifetime - _TOKEN_MARGIN, lifetime / 2),
        )

    def forget(self) -> None:
        """Drop the token (the resource server refused it)."""
        self._token = None

    async def get(self, url: str, auth_server: str, identifier: str) -> tuple[int, object]:
        """GET ``url`` with the token, signed; one new grant after a 401."""
        for attempt in range(2):
            token = await self.token(auth_server, identifier)
            headers = {"Accept": "application/json", "Authorization": f"GNAP {token.value}"}
            headers.update(self.key.sign("GET", url, headers))
            status, doc = await self.fetcher.request_json("GET", url, headers, None)
            if status == 401 and attempt == 0:
                self.forget()
                continue
            return status, doc
        raise AssertionError("unreachable")  # pragma: no cover
