"""Open Payments, as read by a site that verifies today's Web Monetization.

Web Monetization since 2023 (spec ``13-modern-web-monetization.md`` §1, §2): the page
carries ``<link rel="monetization" href="https://wallet.example/site">`` naming the
site's **Open Payments wallet address**; the browser extension creates an incoming
payment at that wallet, has the visitor's wallet pay it and fires ``monetization`` on
the link with ``incomingPayment`` (the incoming payment's URL).  The event is not proof
of payment; the incoming payment's ``receivedAmount`` is.  This module holds what a
verifier needs to read that, with no framework and no state:

* tags and headers: :func:`monetization_link_tag` (the ``href`` checked as the
  extension checks it: :func:`wallet_address_url`), :func:`csp_monetization_src`,
  :func:`permissions_policy`;
* the documents: :class:`WalletAddress` (``GET <wallet address>``) and
  :class:`IncomingPaymentState` (``GET <resourceServer>/incoming-payments/<id>``,
  public or full shape), parsed strictly -- amounts are uint64 decimal strings;
* :func:`incoming_payment_id`: whether a URL names an incoming payment *under* a
  resource server;
* :class:`OpenPaymentsFetcher`: bounded GETs (a total deadline, a byte cap, no
  redirects, ``Accept: application/json``) that refuse private, loopback, link-local
  and other non-global addresses -- checked on every address a name resolves to, at
  connection time, so a DNS answer cannot steer the fetch inside (``allow_private``
  lifts it, for tests and local development).

Errors are :class:`OpenPaymentsError` values with a stable ``id`` and an HTTP status a
site can answer with.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from .codec.oer import MAX_UINT64
from .errors import IlpReceiverError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "PERMISSIONS_POLICY_HEADER",
    "IncomingPaymentState",
    "OpenPaymentsError",
    "OpenPaymentsFetcher",
    "PrivateAddressRefusedError",
    "PublicOnlyResolver",
    "WalletAddress",
    "csp_monetization_src",
    "incoming_payment_id",
    "is_public_address",
    "monetization_link_tag",
    "permissions_policy",
    "wallet_address_url",
]

#: Seconds one Open Payments GET may take in all (connect, headers, body).
DEFAULT_TIMEOUT: Final = 5.0
#: Bytes an Open Payments answer may have; a larger one is refused unread.
DEFAULT_MAX_BYTES: Final = 64 * 1024
#: The header that lets (or forbids) iframes monetize.
PERMISSIONS_POLICY_HEADER: Final = "Permissions-Policy"

_ASSET_CODE = re.compile(r"[A-Za-z0-9]{1,12}")
_UINT = re.compile(r"0|[1-9][0-9]{0,19}")
_PAYMENT_ID = re.compile(r"[A-Za-z0-9_~.-]{1,200}")
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\]")
_ALLOWLIST_TOKEN = re.compile(r"'self'|'none'|\*|https://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class OpenPaymentsError(IlpReceiverError):
    """A report, a wallet or an answer that cannot be used; nothing was credited.

    ``error_id`` is stable (``NotOurWallet``, ``WalletUnreachable``, ...), ``status``
    the HTTP status a site answers with, the message says why (it never includes a
    response body).
    """

    def __init__(self, error_id: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.status = status

    def __reduce__(self) -> tuple[type[OpenPaymentsError], tuple[str, str, int]]:
        return (type(self), (self.error_id, str(self), self.status))


# ---------------------------------------------------------------------------------------
# Tags and headers


def wallet_address_url(value: str, *, allow_insecure: bool = False) -> str:
    """``value`` checked as the extension checks a ``<link rel="monetization">`` href.

    A fully resolved ``https://`` URL with a host and no port, query, fragment or
    userinfo (``monetizationLinkManager.ts`` ``checkHrefFormat``); the ``$`` shorthand
    is refused.  ``allow_insecure`` (tests, local development only) also takes
    ``http://`` and a port.  Returns the URL unchanged; raises
    :class:`OpenPaymentsError` ``InvalidWalletAddress``.
    """
    bad = OpenPaymentsError(
        "InvalidWalletAddress",
        "a wallet address is an https:// URL with a host and no port, query, fragment "
        "or userinfo (the $ shorthand is not accepted)",
    )
    if not isinstance(value, str) or len(value) > 2048 or value != value.strip():
        raise bad
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise bad from None
    schemes = ("https", "http") if allow_insecure else ("https",)
    if (
        parts.scheme not in schemes
        or not parts.hostname
        or _HOST.fullmatch(parts.netloc.rsplit(":", 1)[0] if port else parts.netloc) is None
        or "@" in parts.netloc
        or (port is not None and not allow_insecure)
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
        or _PATH.fullmatch(parts.path) is None
    ):
        raise bad
    return value


def monetization_link_tag(href: str, *, allow_insecure: bool = False) -> str:
    """``<link rel="monetization" href="...">`` naming an Open Payments wallet address.

    ``href`` is checked with :func:`wallet_address_url` (the extension ignores any
    other) and HTML-escaped.
    """
    checked = wallet_address_url(href, allow_insecure=allow_insecure)
    return f'<link rel="monetization" href="{html.escape(checked, quote=True)}">'


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def csp_monetization_src(*wallet_addresses: str, allow_insecure: bool = False) -> str:
    """The CSP directive ``monetization-src <origins>`` allowing these wallet addresses.

    Each address is checked with :func:`wallet_address_url`; the directive names their
    origins (CSP source expressions), e.g. ``monetization-src https://wallet.example``.
    Append it to the page's ``Content-Security-Policy`` with ``; ``.
    """
    if not wallet_addresses:
        return "monetization-src 'none'"
    origins: list[str] = []
    for address in wallet_addresses:
        origin = _origin(wallet_address_url(address, allow_insecure=allow_insecure))
        if origin not in origins:
            origins.append(origin)
    return "monetization-src " + " ".join(origins)


def permissions_policy(*allow: str) -> str:
    """The ``Permissions-Policy`` value for the ``monetization`` feature.

    No argument: ``monetization=(self)`` (the spec's default, stated).  Give
    ``"'self'"``, ``"*"``, ``"'none'"`` or ``https://`` origins; ``"'none'"`` alone
    gives ``monetization=()``.
    """
    tokens = allow or ("'self'",)
    items: list[str] = []
    for item in tokens:
        if _ALLOWLIST_TOKEN.fullmatch(item) is None:
            raise ValueError(f"not a Permissions-Policy allowlist item: {item!r}")
        if item == "'none'":
            continue
        if item == "'self'":
            items.append("self")
        elif item == "*":
            items.append("*")
        else:
            items.append(f'"{item}"')
    if "*" in items:
        return "monetization=*"
    return f"monetization=({' '.join(items)})"


# ---------------------------------------------------------------------------------------
# Documents


def _string(doc: dict[str, Any], name: str, what: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise OpenPaymentsError("WalletBadResponse", f"{what}: {name} is not a string", 502)
    return value


def _uint64(value: object, what: str) -> int:
    if not isinstance(value, str) or _UINT.fullmatch(value) is None:
        raise OpenPaymentsError("WalletBadResponse", f"{what}: not a uint64 string", 502)
    number = int(value)
    if number > MAX_UINT64:
        raise OpenPaymentsError("WalletBadResponse", f"{what}: above uint64", 502)
    return number


def _asset(code: object, scale: object, what: str) -> tuple[str, int]:
    if not isinstance(code, str) or _ASSET_CODE.fullmatch(code) is None:
        raise OpenPaymentsError("WalletBadResponse", f"{what}: bad assetCode", 502)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 0 <= scale <= 255:
        raise OpenPaymentsError("WalletBadResponse", f"{what}: bad assetScale", 502)
    return code, scale


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
        raise OpenPaymentsError("WalletBadResponse", f"{what} is not an http(s) URL", 502)
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class WalletAddress:
    """A wallet address document (``GET <wallet address>``, ``wallet-address-server.yaml``).

    ``id``, ``asset_code``, ``asset_scale``, ``auth_server`` and ``resource_server``
    are required; other members are ignored (``additionalProperties: true``).
    """

    id: str
    asset_code: str
    asset_scale: int
    auth_server: str
    resource_server: str
    public_name: str | None = None

    @classmethod
    def from_json(cls, doc: object) -> WalletAddress:
        """Parse a decoded document; :class:`OpenPaymentsError` ``WalletBadResponse``."""
        if not isinstance(doc, dict):
            raise OpenPaymentsError("WalletBadResponse", "the wallet address is not an object", 502)
        code, scale = _asset(doc.get("assetCode"), doc.get("assetScale"), "wallet address")
        name = doc.get("publicName")
        return cls(
            id=_string(doc, "id", "wallet address"),
            asset_code=code,
            asset_scale=scale,
            auth_server=_http_url(_string(doc, "authServer", "wallet address"), "authServer"),
            resource_server=_http_url(
                _string(doc, "resourceServer", "wallet address"), "resourceServer"
            ),
            public_name=name if isinstance(name, str) else None,
        )


@dataclass(frozen=True, slots=True)
class IncomingPaymentState:
    """What ``GET <incoming payment>`` says.

    The public (unauthenticated) shape is ``{receivedAmount?, authServer}``: only
    ``received`` (0 when absent), the asset and ``auth_server`` are known.  The full
    shape (a GNAP-authenticated GET) has ``wallet_address``, ``completed`` and
    ``expires_at`` instead of ``auth_server``.
    """

    received: int
    asset_code: str | None
    asset_scale: int | None
    auth_server: str | None
    wallet_address: str | None = None
    completed: bool = False
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, doc: object) -> IncomingPaymentState:
        """Parse a decoded answer; :class:`OpenPaymentsError` ``WalletBadResponse``."""
        what = "incoming payment"
        if not isinstance(doc, dict):
            raise OpenPaymentsError("WalletBadResponse", f"the {what} is not an object", 502)
        wallet = doc.get("walletAddress")
        if wallet is not None and (not isinstance(wallet, str) or len(wallet) > 2048):
            raise OpenPaymentsError("WalletBadResponse", "walletAddress is not a URL", 502)
        auth_server: str | None = None
        if wallet is None or "authServer" in doc:
            auth_server = _http_url(_string(doc, "authServer", what), "authServer")
        amount = doc.get("receivedAmount")
        received, code, scale = 0, None, None
        if amount is not None:
            if not isinstance(amount, dict):
                raise OpenPaymentsError("WalletBadResponse", "receivedAmount is not an object", 502)
            received = _uint64(amount.get("value"), "receivedAmount.value")
            code, scale = _asset(amount.get("assetCode"), amount.get("assetScale"), what)
        completed = doc.get("completed", False)
        if not isinstance(completed, bool):
            raise OpenPaymentsError("WalletBadResponse", "completed is not a boolean", 502)
        expires_at: datetime | None = None
        raw_expiry = doc.get("expiresAt")
        if isinstance(raw_expiry, str):
            try:
                expires_at = datetime.fromisoformat(raw_expiry.replace("Z", "+00:00"))
            except ValueError:
                raise OpenPaymentsError(
                    "WalletBadResponse", "expiresAt is not a date", 502
                ) from None
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
        return cls(
            received=received,
            asset_code=code,
            asset_scale=scale,
            auth_server=auth_server,
            wallet_address=wallet,
            completed=completed,
            expires_at=expires_at,
        )


def incoming_payment_id(url: str, resource_server: str) -> str | None:
    """The id of ``url`` when it is ``<resource_server>/incoming-payments/<id>``, else None.

    Compared on the parsed URL (scheme, host, port, path), so a look-alike host, a
    userinfo trick, ``..`` segments, a query or a fragment never pass.
    """
    if not isinstance(url, str) or len(url) > 2048:
        return None
    try:
        target = urlsplit(url)
        base = urlsplit(resource_server.rstrip("/"))
        target_port, base_port = target.port, base.port
    except ValueError:
        return None
    if (
        target.scheme != base.scheme
        or target.username is not None
        or target.password is not None
        or (target.hostname or "").lower() != (base.hostname or "").lower()
        or target_port != base_port
        or target.query
        or target.fragment
        or "?" in url
        or "#" in url
    ):
        return None
    prefix = base.path + "/incoming-payments/"
    if not target.path.startswith(prefix):
        return None
    payment_id = target.path[len(prefix) :]
    if _PAYMENT_ID.fullmatch(payment_id) is None or payment_id in (".", ".."):
        return None
    return payment_id


# ---------------------------------------------------------------------------------------
# Bounded fetching


def is_public_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is globally routable.

    Loopback, private (RFC 1918, ULA), link-local, CGNAT, multicast, reserved,
    unspecified and documentation ranges are not; an IPv4-mapped IPv6 address is judged
    by its IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PrivateAddressRefusedError(OSError):
    """A name resolved to no public address (raised by :class:`PublicOnlyResolver`)."""


class PublicOnlyResolver(AbstractResolver):
    """An aiohttp resolver that drops every non-public address a name resolves to.

    The connection is made to what this returns, so a name resolving (or re-resolving)
    to 127.0.0.1 or 10.x cannot be used to reach inside; a name with no public address
    fails to resolve.
    """

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and keep only public addresses."""
        results = await self._inner.resolve(host, port, family)
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise PrivateAddressRefusedError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


class OpenPaymentsFetcher:
    """Bounded JSON GETs of Open Payments documents.

    Every GET has one deadline (``timeout`` seconds for connect, headers and body), a
    byte cap (``max_bytes``; a larger ``Content-Length`` is refused unread, a body that
    grows past it is cut off), follows no redirects and sends
    ``Accept: application/json``.  Non-public addresses are refused (IP literals before
    connecting, names through :class:`PublicOnlyResolver`) unless ``allow_private``.
    ``http://`` URLs are refused unless ``allow_insecure``.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_private: bool = False,
        allow_insecure: bool = False,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not max_bytes > 0:
            raise ValueError("max_bytes must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.allow_insecure = allow_insecure

    def __repr__(self) -> str:
        return (
            f"OpenPaymentsFetcher(timeout={self.timeout}, max_bytes={self.max_bytes}, "
            f"allow_private={self.allow_private})"
        )

    def _session(self) -> aiohttp.ClientSession:
        # one short-lived session per GET: nothing to close or leak between requests,
        # on whichever event loop (a framework's, a portal thread's) the GET runs
        resolver: AbstractResolver = (
            DefaultResolver() if self.allow_private else PublicOnlyResolver()
        )
        connector = aiohttp.TCPConnector(resolver=resolver, limit=1, force_close=True)
        return aiohttp.ClientSession(connector=connector, auto_decompress=False)

    def check_url(self, url: str) -> None:
        """Refuse ``url`` before any I/O: bad scheme, or a non-public IP literal.

        Raises :class:`OpenPaymentsError` ``InsecureUrl`` or ``PrivateAddress``.
        """
        parts = urlsplit(url)
        allowed = ("https", "http") if self.allow_insecure else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            raise OpenPaymentsError("InsecureUrl", "Open Payments URLs must be https://", 400)
        host = parts.hostname
        if not self.allow_private:
            try:
                ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                if host.rstrip(".").lower() == "localhost" or host.endswith(".localhost"):
                    raise OpenPaymentsError(
                        "PrivateAddress", "refusing to fetch from a private address", 400
                    ) from None
                return  # a name: checked at connection time by the resolver
            if not is_public_address(host):
                raise OpenPaymentsError(
                    "PrivateAddress", "refusing to fetch from a private address", 400
                )

    async def get_json(self, url: str) -> tuple[int, object]:
        """GET ``url``; the status and the decoded JSON body.

        Raises :class:`OpenPaymentsError`: ``PrivateAddress``, ``InsecureUrl``,
        ``WalletUnreachable`` (connection failed, timed out), ``WalletBadResponse``
        (too large, not JSON, a redirect).
        """
        return await self.request_json("GET", url, {"Accept": "application/json"}, None)

    async def request_json(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, object]:
        """``method`` ``url`` with ``headers`` and ``body``, bounded as :meth:`get_json`.

        An empty answer to an error status gives ``(status, None)``.
        """
        self.check_url(url)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._request(method, url, headers, body)
        except TimeoutError:
            raise OpenPaymentsError(
                "WalletUnreachable", f"the wallet did not answer within {self.timeout:g} s", 504
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PrivateAddressRefusedError):
                raise OpenPaymentsError(
                    "PrivateAddress", "refusing to fetch from a private address", 400
                ) from None
            raise OpenPaymentsError(
                "WalletUnreachable", "could not connect to the wallet", 502
            ) from None
        except (aiohttp.ClientError, OSError):
            raise OpenPaymentsError(
                "WalletUnreachable", "could not read from the wallet", 502
            ) from None

    async def _request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, object]:
        sent = {**headers, "Accept-Encoding": "identity"}
        async with (
            self._session() as session,
            session.request(
                method, url, headers=sent, data=body, allow_redirects=False
            ) as response,
        ):
            if 300 <= response.status < 400:
                raise OpenPaymentsError("WalletBadResponse", "the wallet answered a redirect", 502)
            length = response.content_length
            if length is not None and length > self.max_bytes:
                raise OpenPaymentsError(
                    "WalletBadResponse", f"the wallet's answer is over {self.max_bytes} bytes", 502
                )
            received = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                received += chunk
                if len(received) > self.max_bytes:
                    raise OpenPaymentsError(
                        "WalletBadResponse",
                        f"the wallet's answer is over {self.max_bytes} bytes",
                        502,
                    )
            status = response.status
        if not received and status >= 400:
            return status, None
        try:
            return status, json.loads(bytes(received))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise OpenPaymentsError(
                "WalletBadResponse", "the wallet's answer is not JSON", 502
            ) from None

    async def close(self) -> None:
        """Nothing to release (each GET has its own session); for ``async with``."""

    async def __aenter__(self) -> OpenPaymentsFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
