"""SPSP for PSK2 and STREAM, and payment pointers, sans-I/O (spec
``07-spsp-payment-pointers.md``, ``12-stream.md`` §14).

Implements:

* **Payment pointers**, RFC 26 draft 1 (interledger/rfcs ``0000-payment-pointers`` at
  e949d28, Jan 2018): syntax ``"$" host path-abempty`` -- "Only a host -- no userinfo,
  no port, no query, no fragment.  Pointers outside this profile are invalid and must
  not be resolved."  Resolution: "``https://`` + host + path; if the path is empty or
  exactly ``/``, use ``/.well-known/pay``.  The path is otherwise kept verbatim."
  Like the JS client (WHATWG URL) we lower-case the host.  Ports and query strings,
  which the JS client lets through, are refused unless ``lenient=True`` (open question
  24) -- except a port on a **loopback** host (``$127.0.0.1:8080``, ``$localhost:3000``,
  ``$[::1]:8080``): that is what a local server (``ilp-receiver demo`` / ``receive``)
  prints, and it resolves to ``http://`` (see :meth:`PaymentPointer.endpoint`).
  "Anything not starting with ``$`` is treated as a full SPSP endpoint URL and used
  unchanged" -- we only check that it is an http(s) URL with a host.
* **The SPSP response** of RFC 9 drafts 4/5 (PSK2): ``destination_account``,
  ``shared_secret``, optional ``balance``, asset object and ``receiver_info``.  Reading
  accepts all three spellings of the asset object; writing emits both ``asset_info``
  and ``ledger_info`` (open question 1, see :meth:`SpspResponse.to_json`).
* **The SPSP v4 response** (STREAM, ``application/spsp4+json``): ``destination_account``,
  ``shared_secret``, optional ``receipts_enabled`` (RFC 9 drafts 2020-04 .. 2026-03) and
  the optional ``balance``/``asset_info``/``receiver_info`` of the first STREAM-era
  draft (2018-08); one :class:`SpspResponse` with ``protocol="stream"``.
* **Content negotiation** by ``Accept`` ("there is one endpoint and the media type picks
  the transport", §14): :func:`negotiate_setup` answers STREAM to every client that
  lists ``application/spsp4+json`` or only wildcards / JSON, and PSK2 to a client whose
  only SPSP type is ``application/spsp+json`` (§15 item 11); a client tells the two
  answers apart by the response ``Content-Type`` (:func:`response_protocol`), as
  ilp-protocol-spsp 3.0.0 does.
* The client's query headers and ``Cache-Control`` handling ("clients honour
  ``max-age=<seconds>`` and ``no-cache``").

No HTTP client or server lives here: the functions take header values and bodies and
return values.  Errors: :class:`~ilp_receiver.errors.PaymentPointerError` for pointers
and endpoint URLs, :class:`~ilp_receiver.errors.SpspError` for responses,
:class:`~ilp_receiver.errors.EncodeError` when writing an invalid response.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .codec.address import is_valid_address
from .codec.oer import MAX_UINT64, check_uint64
from .codec.pay_header import decode_base64_secret, parse_decimal_uint64
from .errors import DecodeError, EncodeError, PaymentPointerError, SpspError

__all__ = [
    "ENDPOINT_NAME",
    "ERROR_CONTENT_TYPE",
    "INVALID_RECEIVER_STATUS",
    "JSON_MEDIA_TYPE",
    "MAX_CACHE_AGE",
    "NOT_ACCEPTABLE_STATUS",
    "SHARED_SECRET_LENGTH",
    "SPSP4_MEDIA_TYPE",
    "SPSP_MEDIA_TYPE",
    "WELL_KNOWN_PATH",
    "AssetInfo",
    "PaymentPointer",
    "SpspBalance",
    "SpspResponse",
    "cache_control_header",
    "invalid_receiver_body",
    "is_spsp_content_type",
    "max_age",
    "negotiate",
    "negotiate_setup",
    "negotiate_spsp",
    "not_acceptable_body",
    "parse_payment_pointer",
    "parse_spsp_response",
    "resolve_payment_pointer",
    "response_protocol",
    "spsp_query_headers",
    "to_payment_pointer",
]

#: Names a receiver serves as payment pointers at ``/<name>`` (its endpoints).
ENDPOINT_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: "SPSP's media type is ``application/spsp+json``" (PSK2 SPSP; what we serve).
SPSP_MEDIA_TYPE: Final = "application/spsp+json"
#: STREAM-era SPSP (Aug 2018+): "Content-Type: application/spsp4+json" (§14).
SPSP4_MEDIA_TYPE: Final = "application/spsp4+json"
#: Plain JSON: "Send ``application/spsp+json``; accept both" (open question 23).
JSON_MEDIA_TYPE: Final = "application/json"
#: Error bodies: "``404 Not Found``, ``Content-Type: application/json``".
ERROR_CONTENT_TYPE: Final = JSON_MEDIA_TYPE
#: "unknown receiver -> ``404 Not Found``".
INVALID_RECEIVER_STATUS: Final = 404
#: A wrong ``Accept``: "Use 404 (or 406)" (open question 26) -- we use 406.
NOT_ACCEPTABLE_STATUS: Final = 406
#: "if the path is empty or exactly ``/``, use ``/.well-known/pay``".
WELL_KNOWN_PATH: Final = "/.well-known/pay"
#: The shared secret "decodes to 32 bytes".
SHARED_SECRET_LENGTH: Final = 32
#: RFC 9111 §1.2.2: delta-seconds above 2**31 are treated as 2**31.
MAX_CACHE_AGE: Final = 2**31

_KNOWN_KEYS: Final = frozenset(
    {
        "destination_account",
        "shared_secret",
        "balance",
        "ledger_info",
        "asset_info",
        "receiver_info",
        "receipts_enabled",
    }
)
_MAX_ASSET_SCALE: Final = 255

# RFC 3986 reg-name restricted to unreserved characters (no pct-encoding, no
# sub-delims): every real DNS name fits, and nothing that could hide a "/" does.
_HOST_CHAR_RE: Final = re.compile(r"[A-Za-z0-9_~.-]")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*")
# path-abempty = *( "/" segment ); segment = *pchar;
# pchar = unreserved / pct-encoded / sub-delims / ":" / "@"
_PCHAR: Final = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
_PATH_RE: Final = re.compile(rf"(?:/{_PCHAR}*)*")
# query = *( pchar / "/" / "?" )  (lenient mode only)
_QUERY_RE: Final = re.compile(rf"(?:{_PCHAR}|[/?])*")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


# --------------------------------------------------------------------------------------
# Payment pointers


@dataclass(frozen=True, slots=True)
class PaymentPointer:
    """A parsed payment pointer (RFC 26 draft 1): ``$`` + host + path.

    ``host`` is lower-cased (an IPv6 literal keeps its brackets); ``path`` is the
    path-abempty exactly as written (``""``, ``"/"`` or ``"/..."``).  ``port`` is set
    for a loopback host, or by ``parse(..., lenient=True)``; ``query`` only by the
    latter, as the text after ``?`` (``""`` for a bare ``?``).  Build instances with
    :meth:`parse`.
    """

    host: str
    path: str = ""
    port: int | None = None
    query: str | None = None

    @classmethod
    def parse(cls, text: str, *, lenient: bool = False) -> PaymentPointer:
        """Parse ``text`` (``$host/path``); PaymentPointerError names what is wrong.

        A port is accepted on a loopback host (``$127.0.0.1:8080``: local servers);
        ``lenient=True`` also accepts one on any host, and a query string, as the JS
        client (ilp-protocol-spsp 2.0.0) does; userinfo and fragments are refused always.
        """
        if not isinstance(text, str):
            raise PaymentPointerError(f"a payment pointer must be a str, not {type(text).__name__}")
        if not text.startswith("$"):
            raise PaymentPointerError("a payment pointer starts with '$'")
        rest = text[1:]
        if "#" in rest:
            # "Only a host -- no userinfo, no port, no query, no fragment."
            raise PaymentPointerError("a payment pointer may not contain a fragment ('#')")
        query: str | None = None
        if "?" in rest:
            rest, _, query = rest.partition("?")
            if not lenient:
                raise PaymentPointerError(
                    "a payment pointer may not contain a query string ('?'); RFC 26 allows "
                    "only a host and a path (pass lenient=True to accept it as the JS client does)",
                    option="lenient",
                )
            if _QUERY_RE.fullmatch(query) is None:
                raise PaymentPointerError(
                    "the query string of the payment pointer has bad characters"
                )
        slash = rest.find("/")
        authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        if "@" in authority:
            raise PaymentPointerError("a payment pointer may not contain userinfo ('user@')")
        host, port_text = _split_authority(authority)
        host = _check_host(host)
        port: int | None = None
        if port_text is not None:
            if not lenient and not _is_loopback_host(host):
                raise PaymentPointerError(
                    "a payment pointer may not contain a port unless its host is loopback "
                    "(localhost, 127.0.0.1, [::1]); RFC 26 allows only a host "
                    "(pass lenient=True to accept it as the JS client does)",
                    option="lenient",
                )
            if _PORT_RE.fullmatch(port_text) is None or int(port_text) > 65535:
                raise PaymentPointerError(f"bad port {port_text[:10]!r} in payment pointer")
            port = int(port_text)
        if _PATH_RE.fullmatch(path) is None:
            bad = _first_bad_path_char(path)
            raise PaymentPointerError(
                f"the path of the payment pointer contains {bad!r}, which RFC 3986 does not "
                "allow in a path (percent-encode it)"
            )
        return cls(host, path, port, query)

    @property
    def is_loopback(self) -> bool:
        """Whether the host is ``localhost`` (or ``*.localhost``) or a loopback IP."""
        return _is_loopback_host(self.host)

    def endpoint(self, *, allow_http_for_loopback: bool | None = None) -> str:
        """The SPSP endpoint URL this pointer resolves to.

        "``https://`` + host + path; if the path is empty or exactly ``/``, use
        ``/.well-known/pay``."  A loopback host gets ``http://`` instead: by default
        (``allow_http_for_loopback=None``) when the pointer names a port other than 443
        (``$127.0.0.1:8080``, what local servers print); with ``True`` always (also
        ``$localhost/bob``); with ``False`` never (RFC 26 as written).  Other hosts
        always get ``https://``.  A default port is dropped, as WHATWG URL
        serialization does.
        """
        if allow_http_for_loopback is None:
            http = self.is_loopback and self.port is not None and self.port != 443
        else:
            http = allow_http_for_loopback and self.is_loopback
        scheme = "http" if http else "https"
        path = WELL_KNOWN_PATH if self.path in ("", "/") else self.path
        port = "" if self.port in (None, _DEFAULT_PORTS[scheme]) else f":{self.port}"
        query = "" if self.query is None else f"?{self.query}"
        return f"{scheme}://{self.host}{port}{path}{query}"

    def __str__(self) -> str:
        """The pointer text: ``$`` + host (+ port) + path (+ query)."""
        port = "" if self.port is None else f":{self.port}"
        query = "" if self.query is None else f"?{self.query}"
        return f"${self.host}{port}{self.path}{query}"


def _split_authority(authority: str) -> tuple[str, str | None]:
    """(host, port text or None) of an authority without userinfo."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise PaymentPointerError("unterminated IPv6 literal in payment pointer host")
        host, after = authority[: end + 1], authority[end + 1 :]
        if not after:
            return host, None
        if not after.startswith(":"):
            raise PaymentPointerError("unexpected characters after the IPv6 literal host")
        return host, after[1:]
    host, sep, port = authority.partition(":")
    return host, (port if sep else None)


def _is_loopback_host(host: str) -> bool:
    """Whether a (lower-cased) pointer host is ``localhost``, ``*.localhost`` or a
    loopback IP literal."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    literal = host[1:-1] if host.startswith("[") else host
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        return False


def _check_host(host: str) -> str:
    """The lower-cased host, or PaymentPointerError naming the problem."""
    if not host:
        raise PaymentPointerError("the payment pointer has an empty host")
    if host.startswith("["):
        inner = host[1:-1]
        if "%" in inner:
            raise PaymentPointerError("an IPv6 zone id ('%') is not allowed in a payment pointer")
        try:
            return f"[{ipaddress.IPv6Address(inner)}]"
        except ValueError:
            raise PaymentPointerError(
                f"bad IPv6 literal {host[:50]!r} in payment pointer"
            ) from None
    if not host.isascii():
        raise PaymentPointerError(
            "the payment pointer host must be ASCII: write an internationalized name in its "
            "punycode (xn--) form (non-ASCII hosts invite homograph attacks)"
        )
    if _HOST_RE.fullmatch(host) is None:
        bad = next((c for c in host if _HOST_CHAR_RE.fullmatch(c) is None), None)
        if bad is not None:
            raise PaymentPointerError(f"the payment pointer host contains a bad character {bad!r}")
        raise PaymentPointerError("the payment pointer host has an empty label ('..' or edge '.')")
    return host.lower()


def _first_bad_path_char(path: str) -> str:
    """The first character (or bad %-escape) that makes ``path`` invalid."""
    i = 0
    while i < len(path):
        c = path[i]
        if c == "%":
            if re.fullmatch(r"%[0-9A-Fa-f]{2}", path[i : i + 3]) is None:
                return path[i : i + 3]
            i += 3
            continue
        if c != "/" and re.fullmatch(_PCHAR, c) is None:
            return c
        i += 1
    return path  # pragma: no cover - only called on invalid paths


def parse_payment_pointer(text: str, *, lenient: bool = False) -> PaymentPointer:
    """Shorthand for :meth:`PaymentPointer.parse`."""
    return PaymentPointer.parse(text, lenient=lenient)


def resolve_payment_pointer(
    pointer_or_url: str, *, lenient: bool = False, allow_http_for_loopback: bool | None = None
) -> str:
    """The SPSP endpoint URL for a payment pointer or an SPSP URL.

    ``$...`` is parsed and resolved (:meth:`PaymentPointer.parse`,
    :meth:`PaymentPointer.endpoint`: ``$127.0.0.1:8080`` gives
    ``http://127.0.0.1:8080/.well-known/pay``).  "Anything not starting with ``$`` is treated as
    a full SPSP endpoint URL and used unchanged": it is returned as given once it is
    known to be an ``http``/``https`` URL with a host and no whitespace.
    """
    if isinstance(pointer_or_url, str) and pointer_or_url.startswith("$"):
        pointer = PaymentPointer.parse(pointer_or_url, lenient=lenient)
        return pointer.endpoint(allow_http_for_loopback=allow_http_for_loopback)
    return _check_spsp_url(pointer_or_url)


def _check_spsp_url(url: str) -> str:
    if not isinstance(url, str):
        raise PaymentPointerError(f"expected a str, not {type(url).__name__}")
    if any(c <= " " or c == "\x7f" for c in url):
        raise PaymentPointerError("an SPSP URL may not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise PaymentPointerError(f"not a valid SPSP URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise PaymentPointerError(
            "not a payment pointer (they start with '$') nor an http(s) SPSP endpoint URL"
        )
    if not parts.hostname:
        raise PaymentPointerError("the SPSP URL has no host")
    return url


def to_payment_pointer(url: str) -> str:
    """The canonical payment pointer that resolves to ``url``; PaymentPointerError if none.

    Only ``https`` URLs without userinfo, port, query or fragment qualify.
    ``https://host/.well-known/pay`` becomes ``$host``; ``https://host`` and
    ``https://host/`` have no pointer (``$host`` and ``$host/`` resolve to the
    well-known path instead).
    """
    if not isinstance(url, str) or url[:8].lower() != "https://":
        raise PaymentPointerError("only https:// URLs can be written as payment pointers")
    pointer = PaymentPointer.parse("$" + url[8:])
    if pointer.port is not None:
        # a loopback pointer with a port resolves to http://, so it cannot stand for this
        raise PaymentPointerError("a payment pointer for an https:// URL may not contain a port")
    if pointer.path in ("", "/"):
        raise PaymentPointerError(
            f"{url[:80]!r} cannot be written as a payment pointer: '$host' and '$host/' "
            f"resolve to {WELL_KNOWN_PATH}"
        )
    if pointer.path == WELL_KNOWN_PATH:
        pointer = replace(pointer, path="")
    return str(pointer)


# --------------------------------------------------------------------------------------
# The SPSP response


@dataclass(frozen=True, slots=True)
class SpspBalance:
    """``balance``: "for invoices / temporary receivers".

    ``maximum`` is the "total the receiver will accept (invoice amount)", ``current``
    the "sum received so far"; both in the receiver's base units, 0..2**64-1.
    """

    maximum: int
    current: int


@dataclass(frozen=True, slots=True)
class AssetInfo:
    """The receiver's asset (display data only): ``code`` such as ``"USD"``, ``scale``."""

    code: str
    scale: int


#: The setup protocol an SPSP response is for.
SetupProtocol = Literal["psk2", "stream"]


@dataclass(frozen=True, slots=True)
class SpspResponse:
    """An SPSP response body: PSK2 (``application/spsp+json``) or STREAM
    (``application/spsp4+json``, ``protocol="stream"``).

    ``extra`` keeps top-level fields this revision does not define (e.g. the w3c
    README's ``maximum_destination_amount``) so they survive a round trip.  The shared
    secret is kept out of ``repr``.  ``receipts_enabled`` exists only in STREAM
    responses ("true: Fulfills will carry receipts", §13-14).
    """

    destination_account: str
    shared_secret: bytes = field(repr=False)
    balance: SpspBalance | None = None
    asset: AssetInfo | None = None
    receiver_info: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    protocol: SetupProtocol = "psk2"
    receipts_enabled: bool | None = None

    @property
    def media_type(self) -> str:
        """The ``Content-Type`` to send this response with."""
        return SPSP4_MEDIA_TYPE if self.protocol == "stream" else SPSP_MEDIA_TYPE

    def to_json(self) -> dict[str, Any]:
        """The response as a JSON-ready dict (EncodeError if a field is invalid).

        ``shared_secret`` is standard base64 with padding; ``balance`` amounts are
        decimal strings.  The asset is written in **both** spellings -- ``asset_info``
        ``{code, scale}`` (RFC 9 from Jan 23 2018 until STREAM) and ``ledger_info``
        with ``asset_code``/``asset_scale`` (Jan 13-15) plus
        ``currency_code``/``currency_scale`` (Jan 13, the ilp-protocol-spsp 2.0.0
        client) -- because the pinned SPSP commit is unavailable and every client of
        the time reads one of them ("emit both if unsure", open question 1).

        A STREAM response writes ``asset_info`` only (the 2018-08 draft's spelling) and
        ``receipts_enabled`` when it is set.
        """
        clash = _KNOWN_KEYS.intersection(self.extra)
        if clash:
            raise EncodeError(f"extra fields collide with SPSP fields: {sorted(clash)}")
        if not is_valid_address(self.destination_account):
            raise EncodeError(
                f"destination_account is not an ILP address: {self.destination_account!r}"
            )
        if len(self.shared_secret) != SHARED_SECRET_LENGTH:
            raise EncodeError(f"shared_secret must be {SHARED_SECRET_LENGTH} bytes")
        out: dict[str, Any] = {
            "destination_account": self.destination_account,
            "shared_secret": base64.b64encode(self.shared_secret).decode("ascii"),
        }
        if self.balance is not None:
            out["balance"] = {
                "maximum": str(check_uint64(self.balance.maximum, "balance.maximum")),
                "current": str(check_uint64(self.balance.current, "balance.current")),
            }
        if self.asset is not None:
            code, scale = self.asset.code, self.asset.scale
            if not isinstance(code, str) or not code:
                raise EncodeError("asset code must be a non-empty string")
            if type(scale) is not int or not 0 <= scale <= _MAX_ASSET_SCALE:
                raise EncodeError(f"asset scale must be an integer in 0..{_MAX_ASSET_SCALE}")
            out["asset_info"] = {"code": code, "scale": scale}
            if self.protocol == "psk2":
                out["ledger_info"] = {
                    "asset_code": code,
                    "asset_scale": scale,
                    "currency_code": code,
                    "currency_scale": scale,
                }
        if self.receipts_enabled is not None:
            if self.protocol != "stream":
                raise EncodeError("receipts_enabled belongs to STREAM (spsp4) responses only")
            out["receipts_enabled"] = bool(self.receipts_enabled)
        if self.receiver_info is not None:
            out["receiver_info"] = dict(self.receiver_info)
        out.update(self.extra)
        return out

    def to_body(self) -> bytes:
        """:meth:`to_json` as compact UTF-8 JSON bytes, ready to send."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def parse_spsp_response(
    body: Mapping[str, Any] | bytes | bytearray | memoryview | str,
    *,
    protocol: SetupProtocol = "psk2",
) -> SpspResponse:
    """Read an SPSP response (JSON text/bytes or an already decoded object).

    ``protocol`` says which one it is (from the response ``Content-Type``, see
    :func:`response_protocol`); a STREAM response may carry a boolean
    ``receipts_enabled``.

    Raises only :class:`~ilp_receiver.errors.SpspError` (``status`` None) when the body
    is not a JSON object or a field is malformed.  Accepted:

    * ``shared_secret`` in standard or url-safe base64, padded or not, "decodes to 32
      bytes";
    * amounts as decimal strings ("Amounts are strings of decimal digits") -- JSON
      integers are tolerated -- in 0..2**64-1; ``balance`` needs both;
    * the asset as ``asset_info{code,scale}``, ``ledger_info{asset_code,asset_scale}``
      or ``ledger_info{currency_code,currency_scale}``; several spellings must agree;
    * ``null`` for any optional field means absent.
    """
    obj: Any = body
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        try:
            obj = json.loads(bytes(body) if isinstance(body, memoryview) else body)
        except (ValueError, RecursionError) as exc:
            raise SpspError(f"SPSP response is not JSON: {exc}") from None
    if not isinstance(obj, Mapping):
        raise SpspError("SPSP response must be a JSON object")

    destination = obj.get("destination_account")
    if not isinstance(destination, str):
        raise SpspError("SPSP response lacks a string destination_account")
    if not is_valid_address(destination):
        raise SpspError(f"destination_account is not an ILP address: {destination[:80]!r}")

    secret_text = obj.get("shared_secret")
    if not isinstance(secret_text, str):
        raise SpspError("SPSP response lacks a string shared_secret")
    try:
        secret = decode_base64_secret(secret_text, SHARED_SECRET_LENGTH, "shared_secret")
    except DecodeError as exc:
        raise SpspError(exc.reason) from None

    balance = None
    raw_balance = obj.get("balance")
    if raw_balance is not None:
        if not isinstance(raw_balance, Mapping):
            raise SpspError("balance must be an object")
        balance = SpspBalance(
            _amount(raw_balance.get("maximum"), "balance.maximum"),
            _amount(raw_balance.get("current"), "balance.current"),
        )

    receiver_info = obj.get("receiver_info")
    if receiver_info is not None:
        if not isinstance(receiver_info, Mapping):
            raise SpspError("receiver_info must be an object")
        receiver_info = dict(receiver_info)

    receipts = obj.get("receipts_enabled")
    if receipts is not None and (protocol != "stream" or not isinstance(receipts, bool)):
        if protocol == "stream":
            raise SpspError("receipts_enabled must be true or false")
        receipts = None  # not a PSK2 field: "Unknown fields MUST be ignored"
    extra = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
    return SpspResponse(
        destination, secret, balance, _asset(obj), receiver_info, extra, protocol, receipts
    )


def _amount(value: Any, what: str) -> int:
    if isinstance(value, str):
        try:
            return parse_decimal_uint64(value, what)
        except DecodeError as exc:
            raise SpspError(exc.reason) from None
    if type(value) is int and 0 <= value <= MAX_UINT64:
        return value
    raise SpspError(f"{what} must be a decimal string in 0..{MAX_UINT64}")


def _asset(obj: Mapping[str, Any]) -> AssetInfo | None:
    """The asset from any of the three spellings; SpspError if malformed or conflicting."""
    found: list[AssetInfo] = []
    asset_info = obj.get("asset_info")
    if asset_info is not None:
        if not isinstance(asset_info, Mapping):
            raise SpspError("asset_info must be an object")
        found.append(_asset_pair(asset_info, "code", "scale", "asset_info"))
    ledger_info = obj.get("ledger_info")
    if ledger_info is not None:
        if not isinstance(ledger_info, Mapping):
            raise SpspError("ledger_info must be an object")
        pairs = [("asset_code", "asset_scale"), ("currency_code", "currency_scale")]
        present = [p for p in pairs if p[0] in ledger_info or p[1] in ledger_info]
        if not present:
            raise SpspError(
                "ledger_info has neither asset_code/asset_scale nor currency_code/currency_scale"
            )
        found.extend(_asset_pair(ledger_info, c, s, "ledger_info") for c, s in present)
    if not found:
        return None
    if any(a != found[0] for a in found[1:]):
        raise SpspError("asset_info and ledger_info describe different assets")
    return found[0]


def _asset_pair(obj: Mapping[str, Any], code_key: str, scale_key: str, where: str) -> AssetInfo:
    code, scale = obj.get(code_key), obj.get(scale_key)
    if not isinstance(code, str) or not code:
        raise SpspError(f"{where}.{code_key} must be a non-empty string")
    if type(scale) is not int or not 0 <= scale <= _MAX_ASSET_SCALE:
        raise SpspError(f"{where}.{scale_key} must be an integer in 0..{_MAX_ASSET_SCALE}")
    return AssetInfo(code, scale)


# --------------------------------------------------------------------------------------
# Content negotiation, error bodies, query headers, caching


def _split_list(header: str) -> list[str]:
    """Split a comma-separated header list, ignoring commas inside quoted strings."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for c in header:
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(c)
    items.append("".join(current))
    return [item.strip(" \t") for item in items if item.strip(" \t")]


_QVALUE_RE: Final = re.compile(r"[0-9]*(?:\.[0-9]*)?")


def _parse_accept(header: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) of every well-formed media range; malformed ones are skipped."""
    ranges: list[tuple[str, str, float]] = []
    for item in _split_list(header):
        media_range, *params = item.split(";")
        media_range = media_range.strip(" \t").lower()
        if media_range == "*":  # sent by some old clients for "anything"
            media_range = "*/*"
        type_, slash, subtype = media_range.partition("/")
        if not slash or not type_ or not subtype or "/" in subtype:
            continue
        if type_ == "*" and subtype != "*":
            continue
        q: float | None = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip(" \t").lower() == "q":
                value = value.strip(" \t")
                if value and value != "." and _QVALUE_RE.fullmatch(value):
                    q = min(float(value), 1.0)
                else:
                    q = None
                break
        if q is not None:
            ranges.append((type_, subtype, q))
    return ranges


def _match_quality(ranges: list[tuple[str, str, float]], offered: str) -> float:
    """q of the most specific range matching ``offered`` (0.0 if none matches).

    Specificity: exact type > ``application/json`` for a ``+json`` type (open question
    23: "accept both") > ``type/*`` > ``*/*``.  The first range of the best
    specificity decides, so ``application/spsp+json;q=0`` refuses SPSP even if
    ``*/*`` is also listed.
    """
    type_, _, subtype = offered.lower().partition("/")
    best, best_q = 0, 0.0
    for r_type, r_sub, q in ranges:
        if (r_type, r_sub) == (type_, subtype):
            rank = 4
        elif (r_type, r_sub) == ("application", "json") and subtype.endswith("+json"):
            rank = 3
        elif r_type == type_ and r_sub == "*":
            rank = 2
        elif (r_type, r_sub) == ("*", "*"):
            rank = 1
        else:
            continue
        if rank > best:
            best, best_q = rank, q
    return best_q


def negotiate(accept: str | None, offered: Sequence[str]) -> str | None:
    """The media type from ``offered`` to answer with, or None (answer 406).

    ``offered`` is in the server's order of preference; the highest client ``q``
    wins and ties go to the earlier offer.  ``q=0`` means "not acceptable".  A
    missing or empty ``Accept`` accepts anything (RFC 9110 §12.5.1), so the first
    offer is returned.  Never raises: malformed ranges are ignored.  A STREAM-capable
    server would call ``negotiate(accept, [SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE])``.
    """
    if not offered:
        return None
    if accept is None or not accept.strip(" \t"):
        return offered[0]
    ranges = _parse_accept(accept)
    best: str | None = None
    best_q = 0.0
    for media_type in offered:
        q = _match_quality(ranges, media_type)
        if q > best_q:
            best, best_q = media_type, q
    return best


def negotiate_spsp(accept_header: str | None) -> str | None:
    """:data:`SPSP_MEDIA_TYPE` if the ``Accept`` header allows it, else None (406).

    Allowed when it accepts ``application/spsp+json``, ``application/json``,
    ``application/*`` or ``*/*`` with q > 0, or when there is no ``Accept`` at all.
    """
    return negotiate(accept_header, (SPSP_MEDIA_TYPE,))


def negotiate_setup(accept_header: str | None, *, stream: bool = True) -> str | None:
    """Which SPSP to answer a query with: :data:`SPSP4_MEDIA_TYPE` (STREAM),
    :data:`SPSP_MEDIA_TYPE` (PSK2) or None (406).

    The rule of ``12-stream.md`` §15 item 11: STREAM whenever ``application/spsp4+json``
    is acceptable, which includes a missing ``Accept`` and one offering only wildcards
    or ``application/json`` (every client since 2019 is a STREAM client); PSK2 when the
    client names ``application/spsp+json`` and not the spsp4 type (ilp-protocol-spsp
    2.x sends exactly ``application/spsp+json``: "A PSK2-only client ... must get the
    PSK2 body ... never a STREAM secret -- the secrets are not interchangeable").
    ``q`` values count: ``application/spsp+json, application/spsp4+json;q=0.5`` gets
    PSK2.  ``stream=False`` serves PSK2 only (as before STREAM existed).
    """
    if not stream:
        return negotiate_spsp(accept_header)
    if accept_header is None or not accept_header.strip(" \t"):
        return SPSP4_MEDIA_TYPE
    ranges = _parse_accept(accept_header)
    psk2_q = _match_quality(ranges, SPSP_MEDIA_TYPE)
    stream_q = _match_quality(ranges, SPSP4_MEDIA_TYPE)
    names_psk2 = any((t, s) == ("application", "spsp+json") for t, s, _ in ranges)
    names_stream = any((t, s) == ("application", "spsp4+json") for t, s, _ in ranges)
    if names_psk2 and not names_stream and psk2_q > 0:
        return SPSP_MEDIA_TYPE
    if stream_q > 0 and stream_q >= psk2_q:
        return SPSP4_MEDIA_TYPE
    if psk2_q > 0:
        return SPSP_MEDIA_TYPE
    return None


def response_protocol(content_type: str | None) -> SetupProtocol | None:
    """The setup protocol an SPSP response's ``Content-Type`` announces.

    ``application/spsp4+json`` -> ``"stream"``; ``application/spsp+json`` and plain
    ``application/json`` -> ``"psk2"`` (ilp-protocol-spsp 3.0.0 uses STREAM "only if the
    type contains application/spsp4+json" and PSK2 for anything else, §14); anything
    else -> None (not an SPSP response).  Parameters are ignored.
    """
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip(" \t").lower()
    if media_type == SPSP4_MEDIA_TYPE:
        return "stream"
    if media_type in (SPSP_MEDIA_TYPE, JSON_MEDIA_TYPE):
        return "psk2"
    return None


def is_spsp_content_type(content_type: str | None) -> bool:
    """Whether a response ``Content-Type`` is one a PSK2 SPSP client should read.

    "Send ``application/spsp+json``; accept both" (``application/json`` too; open
    question 23).  Parameters such as ``charset`` are ignored.
    """
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip(" \t").lower()
    return media_type in (SPSP_MEDIA_TYPE, JSON_MEDIA_TYPE)


def invalid_receiver_body() -> dict[str, str]:
    """The 404 body for an unknown receiver (send with ``application/json``)."""
    return {"id": "InvalidReceiverError", "message": "Invalid receiver ID"}


def not_acceptable_body(offered: Sequence[str] = (SPSP_MEDIA_TYPE,)) -> dict[str, Any]:
    """The 406 body for a request whose ``Accept`` excludes everything served."""
    return {
        "id": "NotAcceptableError",
        "message": "This endpoint serves " + ", ".join(offered) + "; set the Accept header",
        "accept": list(offered),
    }


def spsp_query_headers(offered: Sequence[str] = (SPSP_MEDIA_TYPE,)) -> dict[str, str]:
    """Request headers for an SPSP query: ``{"Accept": "application/spsp+json"}``.

    "The JS client sends exactly ``accept: application/spsp+json``."  A STREAM client
    passes ``(SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE)``, as ilp-protocol-spsp 3.0.0 does.
    """
    return {"Accept": ", ".join(offered)}


def cache_control_header(seconds: int) -> str:
    """A ``Cache-Control`` value for an SPSP response: ``max-age=<seconds>``."""
    if type(seconds) is not int or seconds < 0:
        raise EncodeError(f"max-age must be a non-negative integer, got {seconds!r}")
    return f"max-age={min(seconds, MAX_CACHE_AGE)}"


def max_age(cache_control: str | None) -> int | None:
    """How many seconds an SPSP response may be reused, from its ``Cache-Control``.

    "clients honour ``max-age=<seconds>`` and ``no-cache``": ``no-cache`` (with or
    without field names) and ``no-store`` give 0 (do not reuse; "the most restrictive
    directive should be honored", RFC 9111 §4.2.1); ``max-age`` gives its value (the
    first occurrence; a malformed value gives 0 -- "consider ... stale"; capped at
    2**31).  None when neither is present.  Never raises.
    """
    if not cache_control:
        return None
    result: int | None = None
    for directive in _split_list(cache_control):
        name, _, value = directive.partition("=")
        name = name.strip(" \t").lower()
        if name in ("no-cache", "no-store"):
            return 0
        if name == "max-age" and result is None:
            value = value.strip(" \t")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not value or not value.isascii() or not value.isdigit():
                result = 0
            elif len(value.lstrip("0")) > 10:
                result = MAX_CACHE_AGE
            else:
                result = min(int(value), MAX_CACHE_AGE)
    return result
