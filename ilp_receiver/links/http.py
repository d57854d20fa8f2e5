"""ILP over HTTP, HTTP-OER-SYNC and HTTP-OER-ASYNC links (spec ``04-http-transports.md``
sections A, B and C; open questions 18 and 19).

Both links play both roles at once: they POST our Prepares to the peer with an aiohttp
client (one keep-alive session) and run a small aiohttp server for the peer's POSTs.

:class:`HttpSyncLink` — ILP over HTTP (RFC 35 draft 1, ilp-plugin-http 1.6.1) and
HTTP-OER-SYNC (rfcs PR 382):

* outgoing: ``POST <peer URL>`` (or ``<peer URL>/ilp/<uuid4>`` with ``request_ids``) with
  ``Content-Type: application/ilp+octet-stream``, ``Authorization: Bearer <token>``,
  ``ILP-Destination`` and optionally ``ILP-Peer-Name``; the 200 (any 2xx) body is the Fulfill or
  Reject. Every ILP answer, Rejects included, is a 200; other statuses and transport
  failures raise :class:`~ilp_receiver.errors.LinkError` subclasses (see "Errors").
* incoming: ``POST <listen path>`` and ``POST <listen path>ilp/<request-id>``; a repeat of
  a ``/ilp/<request-id>`` POST with the same body gets the cached answer without running
  the handler again ("the responder must then return the same result without
  re-executing").

:class:`HttpAsyncLink` — HTTP-OER-ASYNC (rfcs PR 382): a Prepare is ``POST
<peer base>/ilp/<uuid4>``, answered 200 on receipt and repeated until 200; the Fulfill or
Reject comes back as the peer's own POST to our ``/ilp/<same id>``, also retried until 200.

:class:`HttpCallbackLink` — ILP over HTTP as the current RFC 35 working draft (draft 3)
has it: the Prepare is answered ``202 Accepted`` and the Fulfill/Reject is POSTed to the
sender's ``Callback-Url`` with the same ``Request-Id`` (headers, retries, idempotence and
the choices where the draft is silent: the class docstring and ``docs/connector.md``).
It reuses the HTTP-OER-ASYNC machinery (request tables, repeats, the pending futures).

Server rules shared by all (section A): ``GET`` answers ``200 OK`` (health check); the
bearer token is compared in constant time, with or without the ``Bearer `` prefix
("the server strips an optional ``Bearer`` prefix before checking. Accept both."), bad
credentials get ``401`` with a JSON body; any ``Content-Type`` is accepted ("Receivers
should accept both and not insist on either"); bodies over 32767 bytes get ``413``; a
body that is not an ILP Prepare is an ILP-level error: ``200`` carrying an ``F01``
Reject (sync) or an ``F01`` Reject POSTed back (async).
:func:`make_http_oer_handler` / :func:`add_http_oer_routes` mount the incoming side in
another aiohttp application (the bundled connector) instead of the link's own server.

URL forms (:func:`parse_http_url`, used by :func:`~ilp_receiver.links.factory.open_link`
and ``ilp-receiver receive --uplink URL``)::

    http+oer://[NAME:]TOKEN@HOST:PORT/PATH?listen=[LHOST:]LPORT[&option=value...]
    https+oer://...                       same, peer reached over https
    http+oer-async://[NAME:]TOKEN@HOST:PORT/BASE?listen=[LHOST:]LPORT[&...]
    https+oer-async://...

* ``http+oer`` is ILP over HTTP / HTTP-OER-SYNC: Prepares are POSTed to
  ``http://HOST:PORT/PATH`` (``/`` when empty); ``http+oer-async`` is HTTP-OER-ASYNC,
  POSTing to ``http://HOST:PORT/BASE/ilp/<request-id>``.
* ``TOKEN`` (percent-encoded) is sent as ``Authorization: Bearer TOKEN``; the optional
  ``NAME`` is sent as ``ILP-Peer-Name``.
* ``listen`` is where our server listens for the peer's POSTs (host ``127.0.0.1`` when
  only a port is given; ``[::1]:7772`` for IPv6; port ``0`` picks a free one). Without it
  the link only sends.
* options: ``incoming_token`` (the token the peer must present to us; default: ``TOKEN``,
  as with the JS connector's ``--http-account``), ``listen_path`` (default ``/``),
  ``bearer=0`` (send the raw token without ``Bearer``, ilp-plugin-http's legacy form),
  ``octet_stream=1`` (send ``Content-Type: application/octet-stream``, the RFC's type,
  which Rafiki insists on, instead of ilp-plugin-http's ``application/ilp+octet-stream``),
  ``destination_header=0`` (omit ``ILP-Destination``), and for ``http+oer`` only
  ``request_ids=1`` (POST to ``PATH/ilp/<uuid4>`` and repeat on transport failures, the
  PR 382 HTTP-OER-SYNC form) or ``mode=callback`` (:class:`HttpCallbackLink`, with
  ``callback_url`` = the ``Callback-Url`` we send, default our server's URL, and
  ``peer_callback_url`` = the only callback URL the peer may name). ``http2=1`` serves
  our endpoint with HTTP/2 and HTTP/1.1 and calls the peer over HTTP/2 (h2c with prior
  knowledge for ``http+oer``, ALPN for ``https+oer``); ``tls_cert``, ``tls_key`` (our
  endpoint over TLS with ALPN), ``tls_client_ca`` (clients must present a certificate
  from it), ``tls_ca`` (verify the peer with it), ``tls_client_cert``/``tls_client_key``
  (our client certificate) are file paths (see :mod:`ilp_receiver.links.http2`).
  Unknown options are refused.

The JS connector's ``--http-account myrecv,7771,http://127.0.0.1:7772/,secret`` POSTs to
us at ``http://127.0.0.1:7772/`` with ``Bearer secret`` and takes our POSTs at
``http://127.0.0.1:7771/``; the matching uplink is
``http+oer://secret@127.0.0.1:7771/?listen=127.0.0.1:7772``.

Errors raised by ``send`` (the caller turns them into Rejects for its own upstream; RFC 35
suggests ``T00`` for 5xx, a connection refused maps naturally to ``T01`` Peer
Unreachable): :class:`~ilp_receiver.errors.LinkClosedError` (connection refused or lost,
link stopped), :class:`~ilp_receiver.errors.LinkTimeoutError` (no answer by the Prepare's
expiry; ``R00`` upstream), :class:`~ilp_receiver.errors.AuthenticationError` (401/403),
:class:`HttpStatusError` (any other non-200 status), and
:class:`~ilp_receiver.errors.RemoteProtocolError` for a 200 whose body is not an ILP
Fulfill/Reject (as the BTP link does for a broken reply).

Choices where the texts are silent (open question 18): request ids are UUID4 strings;
the sync form repeats only in the ``/ilp/<request-id>`` variant (a plain ILP-over-HTTP POST
is not idempotent, so a lost answer is a :class:`~ilp_receiver.errors.LinkClosedError`);
a refused connection on the first attempt fails at once (nothing was delivered), later
failures are retried with capped exponential backoff until the Prepare expires; request
ids are remembered for ``cache_ttl`` seconds (bounded by ``cache_size``); a reused id with
a different body gets an ``F00`` Reject (sync) or ``409`` (async); a Fulfill/Reject POST
for an unknown id is answered 200 and dropped.

ILP-Destination: every Prepare we POST carries it (unless ``destination_header=0``). On
input it is optional; when a request carries one that is not the Prepare's destination
the handler is not run and the answer is an ``F00`` Bad Request Reject (in a 200 for the
sync forms, in the answer POST / callback for the others). The packet is authoritative,
but a disagreement means a proxy or the peer rewrote one of the two: a load balancer has
already chosen this member by the header, so acting on the packet would deliver the
money where the routing policy did not send it, while a final Reject costs the sender
one packet and names the cause. Nothing is credited for such a Prepare.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
from aiohttp import web

from ..codec.http_oer import (
    ACCEPTED_CONTENT_TYPES,
    AUTHORIZATION_HEADER,
    CALLBACK_URL_HEADER,
    HEALTH_CHECK_BODY,
    HTTP_OER_ILP_PATH,
    ILP_DESTINATION_HEADER,
    ILP_OVER_HTTP_CONTENT_TYPE,
    ILP_OVER_HTTP_RESPONSE_CONTENT_TYPE,
    ILP_PEER_NAME_HEADER,
    MAX_BODY_SIZE,
    OCTET_STREAM_CONTENT_TYPE,
    REQUEST_ID_HEADER,
    SERVER_CLOSED_BODY,
    UNAUTHORIZED_BODY,
    authorization_header,
    bearer_token,
)
from ..codec.ilp import (
    IlpPacketType,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_prepare,
    decode_reply,
    encode_packet,
)
from ..errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    EncodeError,
    LinkClosedError,
    LinkError,
    LinkTimeoutError,
    RemoteProtocolError,
)
from .base import Link, ReplyChannel, set_reply_channel
from .http2 import Http2Client, Http2Server, TlsClientFiles, TlsServerFiles, require_http2
from .listener import DEFAULT_LIMITS, ServerLimits, start_listener

__all__ = [
    "MAX_CALLBACK_URL",
    "Answer",
    "Exchange",
    "HttpAsyncLink",
    "HttpCallbackLink",
    "HttpLink",
    "HttpLinkUrl",
    "HttpStatusError",
    "HttpSyncLink",
    "add_http_oer_routes",
    "aiohttp_exchange",
    "check_callback_url",
    "make_http_oer_handler",
    "parse_http_url",
    "write_aiohttp_answer",
]

log = logging.getLogger(__name__)

#: URL schemes understood by :func:`parse_http_url`: scheme -> (transport, async?).
SCHEMES: Final = {
    "http+oer": ("http", False),
    "https+oer": ("https", False),
    "http+oer-async": ("http", True),
    "https+oer-async": ("https", True),
}
#: TLS file options of the URL and of :class:`HttpLink` (see :mod:`.http2`).
TLS_OPTIONS: Final = (
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_ca",
    "tls_client_cert",
    "tls_client_key",
)
#: Request ids we accept in ``/ilp/<request-id>`` (UUIDs and other URL-safe strings).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
#: How long an answer to a malformed async Prepare is retried (it has no expiry).
_MALFORMED_REPLY_LIFETIME = 30.0
#: First bytes of an OER Fulfill or Reject (an async POST carrying an answer).
_REPLY_TYPES: Final = (bytes([IlpPacketType.FULFILL]), bytes([IlpPacketType.REJECT]))
#: Node's http server closes idle keep-alive connections after 5 s; stay below that so a
#: pooled connection is not reused just as the peer closes it.
_CLIENT_KEEPALIVE = 3.0
_UNAUTHORIZED_JSON: Final = {
    "error": "Unauthorized",
    "message": UNAUTHORIZED_BODY.decode(),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_V = TypeVar("_V")


class HttpStatusError(LinkError):
    """The peer answered an ILP-over-HTTP POST with a status other than 200.

    "Non-200 statuses mean the HTTP exchange itself failed"; ``status`` is that status.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- URL --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpLinkUrl:
    """A parsed ``http+oer://`` / ``http+oer-async://`` uplink URL (see the module doc)."""

    asynchronous: bool
    peer_url: str
    token: str
    incoming_token: str
    peer_name: str | None
    listen_host: str
    listen_port: int | None
    listen_path: str
    bearer: bool
    send_destination: bool
    request_ids: bool
    mode: str = "sync"
    callback_url: str | None = None
    peer_callback_url: str | None = None
    http2: bool = False
    tls: tuple[tuple[str, str], ...] = ()
    octet_stream: bool = False

    def __repr__(self) -> str:  # never show the tokens
        return (
            f"HttpLinkUrl(asynchronous={self.asynchronous}, peer_url={self.peer_url!r}, "
            f"token='***', incoming_token='***', peer_name={self.peer_name!r}, "
            f"listen={self.listen_host}:{self.listen_port}, listen_path={self.listen_path!r})"
        )

    def link_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`HttpSyncLink` / :class:`HttpAsyncLink`."""
        options: dict[str, Any] = {
            "token": self.token,
            "incoming_token": self.incoming_token,
            "peer_name": self.peer_name,
            "listen_host": self.listen_host,
            "listen_port": self.listen_port,
            "listen_path": self.listen_path,
            "bearer": self.bearer,
            "send_destination": self.send_destination,
            "http2": self.http2,
            "content_type": (
                OCTET_STREAM_CONTENT_TYPE if self.octet_stream else ILP_OVER_HTTP_CONTENT_TYPE
            ),
            **dict(self.tls),
        }
        if self.mode == "callback":
            options["callback_url"] = self.callback_url
            options["peer_callback_url"] = self.peer_callback_url
        elif not self.asynchronous:
            options["request_ids"] = self.request_ids
        return options


_BOOLS: Final = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _flag(name: str, value: str) -> bool:
    try:
        return _BOOLS[value.lower()]
    except KeyError:
        raise ConfigError("uplink", f"option {name} must be 1 or 0, got {value!r}") from None


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError("uplink", f"listen must be [HOST:]PORT, got {value!r}")
    return host, number


def parse_http_url(url: str) -> HttpLinkUrl:
    """Split an ``http+oer://`` / ``http+oer-async://`` URL into link settings."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            "uplink", f"an HTTP uplink URL starts with one of {', '.join(SCHEMES)}: {url!r}"
        )
    transport, asynchronous = SCHEMES[scheme]
    if not parts.hostname:
        raise ConfigError("uplink", "the HTTP uplink URL has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError("uplink", f"bad port in the HTTP uplink URL: {exc}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    peer_url = f"{transport}://{netloc}{parts.path or '/'}"
    if parts.password is not None:
        peer_name = unquote(parts.username) if parts.username else None
        token = unquote(parts.password)
    else:
        peer_name = None
        token = unquote(parts.username) if parts.username else ""
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    known = {"listen", "incoming_token", "listen_path", "bearer", "destination_header", "http2"}
    known.add("octet_stream")
    known.update(TLS_OPTIONS)
    if not asynchronous:
        known.update(("request_ids", "mode", "callback_url", "peer_callback_url"))
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(
            "uplink", f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    mode = query.get("mode", "sync")
    if mode not in ("sync", "callback"):
        raise ConfigError("uplink", f"option mode must be sync or callback, got {mode!r}")
    if mode == "sync" and ("callback_url" in query or "peer_callback_url" in query):
        raise ConfigError("uplink", "callback_url and peer_callback_url need mode=callback")
    if mode == "callback" and "request_ids" in query:
        raise ConfigError("uplink", "request_ids is for mode=sync (callbacks always carry one)")
    for name in ("callback_url", "peer_callback_url"):
        if name in query:
            try:
                check_callback_url(query[name])
            except ValueError as exc:
                raise ConfigError("uplink", f"option {name}: {exc}") from None
    listen_host, listen_port = "127.0.0.1", None
    if "listen" in query:
        listen_host, listen_port = _parse_listen(query["listen"])
    return HttpLinkUrl(
        asynchronous=asynchronous,
        peer_url=peer_url,
        token=token,
        incoming_token=query.get("incoming_token", token),
        peer_name=peer_name,
        listen_host=listen_host,
        listen_port=listen_port,
        listen_path=query.get("listen_path", "/"),
        bearer=_flag("bearer", query.get("bearer", "1")),
        send_destination=_flag("destination_header", query.get("destination_header", "1")),
        request_ids=_flag("request_ids", query.get("request_ids", "0")),
        mode=mode,
        callback_url=query.get("callback_url"),
        peer_callback_url=query.get("peer_callback_url"),
        http2=_flag("http2", query.get("http2", "0")),
        octet_stream=_flag("octet_stream", query.get("octet_stream", "0")),
        tls=tuple((name, query[name]) for name in TLS_OPTIONS if name in query),
    )


# -- request-id table -------------------------------------------------------------------


class _RequestTable(Generic[_V]):
    """Request id -> value, remembered for ``ttl`` seconds and at most ``size`` entries."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, _V]] = OrderedDict()

    def _expire(self) -> None:
        limit = self._clock() - self._ttl
        items = self._items
        while items:
            key, (born, _) = next(iter(items.items()))
            if born > limit:
                break
            del items[key]

    def get(self, key: str) -> _V | None:
        self._expire()
        item = self._items.get(key)
        return None if item is None else item[1]

    def put(self, key: str, value: _V) -> None:
        self._expire()
        self._items[key] = (self._clock(), value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


# -- shared base ------------------------------------------------------------------------


@dataclass(slots=True)
class Exchange:
    """One incoming HTTP request as the links see it, whichever server carried it
    (aiohttp for HTTP/1.1, :mod:`ilp_receiver.links.http2` for HTTP/2 and TLS with ALPN).

    ``headers`` is case-insensitive; ``chunks()`` yields the body as it arrives;
    ``is_open()`` tells whether the client could still take the answer.
    """

    method: str
    headers: Mapping[str, str]
    request_id: str | None
    content_length: int | None
    chunks: Callable[[], AsyncIterator[bytes]]
    is_open: Callable[[], bool]


@dataclass(slots=True)
class Answer:
    """The HTTP answer to an :class:`Exchange`.

    When ``channel`` is set, the server that writes the answer calls its
    ``undelivered()`` if the client is gone or the write fails.
    """

    status: int
    body: bytes
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    channel: ReplyChannel | None = None


def _text(status: int, body: bytes | str, **headers: str) -> Answer:
    data = body.encode() if isinstance(body, str) else body
    return Answer(status, data, "text/plain", headers)


def _ilp_response(packet: bytes) -> Answer:
    return Answer(200, packet, ILP_OVER_HTTP_RESPONSE_CONTENT_TYPE)


def _claimed_destination(exchange: Exchange | None) -> str | None:
    """The request's ``ILP-Destination`` header (None when absent or no request)."""
    if exchange is None:
        return None
    return exchange.headers.get(ILP_DESTINATION_HEADER)


def aiohttp_exchange(request: web.Request) -> Exchange:
    """An aiohttp request as an :class:`Exchange`."""
    transport = request.transport

    def chunks() -> AsyncIterator[bytes]:
        return request.content.iter_any()

    return Exchange(
        method=request.method,
        headers=request.headers,
        request_id=request.match_info.get("request_id"),
        content_length=request.content_length,
        chunks=chunks,
        is_open=lambda: transport is not None and not transport.is_closing(),
    )


async def write_aiohttp_answer(answer: Answer, request: web.Request) -> web.StreamResponse:
    """Write ``answer`` to an aiohttp request (running its channel's ``undelivered``
    callbacks when the client is gone or the write fails)."""
    if answer.content_type == "application/json":
        response = web.Response(
            status=answer.status,
            body=answer.body,
            content_type="application/json",
            headers=answer.headers or None,
        )
    elif answer.content_type == "text/plain":
        response = web.Response(
            status=answer.status,
            text=answer.body.decode(),
            headers=answer.headers or None,
        )
    else:
        response = web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=answer.headers or None,
        )
    channel = answer.channel
    if channel is None:
        return response
    if not channel.is_open:
        channel.undelivered()
        return response
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        channel.undelivered()
    return response


def _reply_deadline(body: bytes) -> float:
    """Loop time until which the answer to the Prepare in ``body`` is worth delivering."""
    try:
        expires_at = decode_prepare(body).expires_at
        lifetime = (expires_at - datetime.now(UTC)).total_seconds()
    except DecodeError:
        lifetime = _MALFORMED_REPLY_LIFETIME
    return asyncio.get_running_loop().time() + lifetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def _read_body(exchange: Exchange, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes."""
    length = exchange.content_length
    if length is not None and length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in exchange.chunks():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _Retry(Exception):
    """One POST attempt failed in a way worth repeating (internal)."""


class HttpLink(Link):
    """What :class:`HttpSyncLink` and :class:`HttpAsyncLink` share: settings, the server,
    token checks, the keep-alive client session and POST retries.
    """

    _transport_name = "HTTP"

    def __init__(
        self,
        peer_url: str | None = None,
        *,
        token: str = "",
        incoming_token: str | None = None,
        peer_name: str | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int | None = None,
        listen_path: str = "/",
        bearer: bool = True,
        send_destination: bool = True,
        max_body_size: int = MAX_BODY_SIZE,
        cache_size: int = 10_000,
        cache_ttl: float = 120.0,
        retry_interval: float = 0.1,
        max_retry_interval: float = 2.0,
        max_connections: int = 100,
        shutdown_grace: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        limits: ServerLimits = DEFAULT_LIMITS,
        http2: bool = False,
        content_type: str = ILP_OVER_HTTP_CONTENT_TYPE,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
        tls_ca: str | None = None,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
    ) -> None:
        super().__init__()
        self.http2 = http2
        if content_type not in ACCEPTED_CONTENT_TYPES:
            raise ConfigError("content_type", f"one of {', '.join(sorted(ACCEPTED_CONTENT_TYPES))}")
        self._content_type = content_type
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError(
                "tls_key" if tls_key is None else "tls_cert",
                "a TLS server needs both tls_cert and tls_key",
            )
        if tls_client_ca is not None and tls_cert is None:
            raise ConfigError("tls_client_ca", "client certificates need a TLS server (tls_cert)")
        self._tls_server = (
            TlsServerFiles(tls_cert, tls_key, tls_client_ca)
            if tls_cert is not None and tls_key is not None
            else None
        )
        self._tls_client = (
            TlsClientFiles(tls_ca, tls_client_cert, tls_client_key, prefix="tls_")
            if tls_ca is not None or tls_client_cert is not None or tls_client_key is not None
            else None
        )
        if http2 or self._tls_server is not None:
            require_http2("http2" if http2 else "tls_cert")
        if self._tls_server is not None:
            self._tls_server.context()  # a bad file is refused now, naming the setting
        if self._tls_client is not None:
            self._tls_client.context()
        self._limits = limits
        self.peer_url = peer_url
        self._token = token
        incoming = token if incoming_token is None else incoming_token
        if listen_port is not None and not incoming:
            raise ConfigError("incoming_token", "a listening HTTP link needs a token for the peer")
        # an empty incoming token refuses everyone rather than accepting everyone
        self._incoming_digest = _digest(incoming) if incoming else None
        self._peer_name = peer_name
        self._listen_host = listen_host
        self._listen_port = listen_port
        if not listen_path.startswith("/"):
            raise ConfigError("listen_path", f"must start with '/', got {listen_path!r}")
        self._listen_path = listen_path
        self._bearer = bearer
        self._send_destination = send_destination
        self._max_body = max_body_size
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._retry_interval = retry_interval
        self._max_retry_interval = max_retry_interval
        self._max_connections = max_connections
        self._shutdown_grace = shutdown_grace
        self._http: aiohttp.ClientSession | None = None
        self._h2: Http2Client | None = None
        self._h2_server: Http2Server | None = None
        self._runner: web.AppRunner | None = None
        self._bound: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False

    # -- life cycle -------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether the link is started (HTTP has no connection state of its own)."""
        return self._started and not self._stopping

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """``(host, port)`` our server is bound to (after :meth:`start`), else None."""
        return self._bound

    @property
    def server_url(self) -> str | None:
        """The base URL of our server, e.g. ``http://127.0.0.1:7772/`` (after start)."""
        if self._bound is None:
            return None
        host, port = self._bound
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._tls_server is not None else "http"
        return f"{scheme}://{host}:{port}{self._listen_path}"

    async def start(self) -> None:
        """Open the client session, start listening (if configured), run connect callbacks."""
        if self._started:
            return
        self._stopping = False
        ssl_context = self._tls_client.context() if self._tls_client is not None else True
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=_CLIENT_KEEPALIVE,
                ssl=ssl_context,
            ),
            auto_decompress=False,
        )
        if self.http2:
            self._h2 = Http2Client(
                cleartext=not (self.peer_url or "").startswith("https:"),
                max_connections=self._max_connections,
                keepalive=_CLIENT_KEEPALIVE,
                tls=self._tls_client,
            )
        try:
            if self._listen_port is not None:
                await self._start_server()
            self._started = True
            await self._run_connect_callbacks()
        except BaseException:
            await self.stop()
            raise

    async def _start_server(self) -> None:
        if self.http2 or self._tls_server is not None:
            server = Http2Server(
                self._listen_host,
                self._listen_port or 0,
                tls=self._tls_server,
                limits=self._limits,
                shutdown_grace=self._shutdown_grace,
            )
            server.add_route(self._listen_path, self.handle_exchange)
            try:
                await server.start()
            except ConfigError as exc:
                raise LinkError(str(exc)) from exc
            self._h2_server = server
            assert server.port is not None
            self._bound = (self._listen_host, server.port)
            log.info("%s link listening on %s (HTTP/2)", self._transport_name, self.server_url)
            return
        app = web.Application(client_max_size=self._max_body + 1)
        add_http_oer_routes(app.router, self, self._listen_path)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=self._shutdown_grace,
            **self._limits.runner_options(),
        )
        await runner.setup()
        self._runner = runner
        try:
            listener = await start_listener(
                runner, self._listen_host, self._listen_port or 0, self._limits
            )
        except ConfigError as exc:
            raise LinkError(str(exc)) from exc
        self._bound = (self._listen_host, listener.port)
        log.info("%s link listening on %s", self._transport_name, self.server_url)

    async def stop(self) -> None:
        """Stop the server and the client; in-flight sends fail with LinkClosedError.

        Prepares the peer already handed us get ``shutdown_grace`` seconds to finish.
        """
        self._stopping = True
        self._started = False
        self._fail_pending()
        http, self._http = self._http, None
        if http is not None:
            await http.close()  # aborts our in-flight POSTs
        h2, self._h2 = self._h2, None
        if h2 is not None:
            await h2.close()
        h2_server, self._h2_server = self._h2_server, None
        if h2_server is not None:
            await h2_server.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # waits up to shutdown_grace for in-flight requests
        self._bound = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._shutdown_grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _fail_pending(self) -> None:
        """Subclasses fail their outstanding requests here."""

    def _spawn(self, coro: Awaitable[_V]) -> asyncio.Task[_V]:
        task: asyncio.Task[_V] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- outgoing ---------------------------------------------------------------------

    def _headers(self, prepare: IlpPrepare | None) -> dict[str, str]:
        headers = {
            "Content-Type": self._content_type,
            AUTHORIZATION_HEADER: authorization_header(self._token, bearer=self._bearer),
        }
        if self._peer_name:
            headers[ILP_PEER_NAME_HEADER] = self._peer_name
        if prepare is not None and self._send_destination:
            headers[ILP_DESTINATION_HEADER] = prepare.destination
        return headers

    def _client(self) -> aiohttp.ClientSession:
        http = self._http
        if http is None or not self._started:
            raise LinkClosedError(f"{self._transport_name} link is not started")
        return http

    def _session(self) -> aiohttp.ClientSession:
        http = self._client()
        if self.peer_url is None:
            raise LinkClosedError(f"{self._transport_name} link has no peer URL to send to")
        return http

    async def _post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        wait: float,
        *,
        first: bool,
        retry: bool,
        any_2xx: bool = False,
        retry_4xx: bool = True,
    ) -> bytes:
        """One POST; returns the 200 body (any 2xx body with ``any_2xx``).

        Raises :class:`_Retry` for failures that a repeat may cure (only when ``retry``;
        408, 425 and 429 only with ``retry_4xx``), LinkError subclasses otherwise.
        """
        if self._h2 is not None:
            status, payload = await self._post_h2(url, body, headers, wait, first, retry)
        else:
            status, payload = await self._post_h1(url, body, headers, wait, first, retry)
        if len(payload) > self._max_body:
            raise RemoteProtocolError(
                f"{url} answered with a body over {self._max_body} bytes; an ILP packet is smaller"
            )
        if status == 200 or (any_2xx and 200 <= status < 300):
            return payload
        excerpt = payload[:200].decode("utf-8", "replace")
        if status in (401, 403):
            raise AuthenticationError(f"peer refused our token: HTTP {status} {excerpt}")
        if retry and (status >= 500 or (retry_4xx and status in (408, 425, 429))):
            raise _Retry(f"HTTP {status}")
        raise HttpStatusError(status, f"peer answered HTTP {status}: {excerpt}")

    async def _post_h2(
        self, url: str, body: bytes, headers: dict[str, str], wait: float, first: bool, retry: bool
    ) -> tuple[int, bytes]:
        """One POST with the httpx client (HTTP/2); errors mapped as in :meth:`_post_h1`."""
        import httpx

        client = self._h2
        if client is None or not self._started:
            raise LinkClosedError(f"{self._transport_name} link is not started")
        try:
            status, payload, _ = await client.post(url, body, headers, wait, self._max_body)
        except httpx.ConnectError as exc:
            if self._stopping:
                raise LinkClosedError("link stopped") from exc
            if retry and not first:
                raise _Retry(f"cannot connect: {exc}") from exc
            raise LinkClosedError(f"cannot connect to {url}: {exc}") from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            if retry:
                raise _Retry("attempt timed out") from exc
            raise LinkTimeoutError(f"no HTTP answer from {url} within {wait:.3f} s") from None
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if self._stopping or self._h2 is None:
                raise LinkClosedError("link stopped") from exc
            if retry:
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            raise LinkClosedError(f"HTTP exchange with {url} failed: {exc}") from exc
        return status, payload

    async def _post_h1(
        self, url: str, body: bytes, headers: dict[str, str], wait: float, first: bool, retry: bool
    ) -> tuple[int, bytes]:
        """One POST with the aiohttp client (HTTP/1.1)."""
        http = self._client()
        try:
            async with http.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=wait),
                allow_redirects=False,
            ) as response:
                status = response.status
                # bounded like every network input: an ILP packet is far smaller
                payload = await response.content.read(self._max_body + 1)
        except aiohttp.ClientConnectorError as exc:
            if self._stopping:
                raise LinkClosedError("link stopped") from exc
            if retry and not first:
                raise _Retry(f"cannot connect: {exc.os_error}") from exc
            raise LinkClosedError(f"cannot connect to {url}: {exc.os_error}") from exc
        except TimeoutError as exc:
            if retry:
                raise _Retry("attempt timed out") from exc
            raise LinkTimeoutError(f"no HTTP answer from {url} within {wait:.3f} s") from None
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            # RuntimeError: the session was closed under us by stop().
            if self._stopping or self._http is None:
                raise LinkClosedError("link stopped") from exc
            if retry:
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            raise LinkClosedError(f"HTTP exchange with {url} failed: {exc}") from exc
        return status, payload

    async def _post_until_ok(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
        *,
        attempt_timeout: float | None,
        fail_fast: bool = True,
        any_2xx: bool = False,
        retry_4xx: bool = True,
    ) -> bytes:
        """Repeat the identical POST until it gets a 200 or ``deadline`` (loop time) passes.

        With ``fail_fast`` a refused connection on the first attempt raises
        LinkClosedError at once (nothing was delivered); later ones are repeated.
        """
        loop = asyncio.get_running_loop()
        delay = self._retry_interval
        first = fail_fast
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LinkTimeoutError(f"no 200 from {url} before the deadline")
            wait = remaining if attempt_timeout is None else min(remaining, attempt_timeout)
            try:
                return await self._post(
                    url,
                    body,
                    headers,
                    wait,
                    first=first,
                    retry=True,
                    any_2xx=any_2xx,
                    retry_4xx=retry_4xx,
                )
            except _Retry as exc:
                log.debug("repeating POST to %s: %s", url, exc)
            first = False
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LinkTimeoutError(f"no 200 from {url} before the deadline")
            await asyncio.sleep(min(delay, remaining))
            delay = min(self._max_retry_interval, delay * 2)

    # -- incoming ---------------------------------------------------------------------

    def check_authorization(self, value: str) -> bool:
        """Whether an ``Authorization`` header value carries the incoming token.

        Constant time (SHA-256 digests compared with :func:`hmac.compare_digest`). Without
        an incoming token nothing is accepted.
        """
        expected = self._incoming_digest
        if expected is None:
            return False
        return hmac.compare_digest(_digest(bearer_token(value)), expected)

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """Answer one HTTP request of the peer (GET health check or POST of a packet)."""
        answer = await self.handle_exchange(aiohttp_exchange(request))
        return await write_aiohttp_answer(answer, request)

    async def handle_exchange(self, exchange: Exchange) -> Answer:
        """Answer one request of the peer, whichever HTTP server carried it."""
        if exchange.method in ("GET", "HEAD"):
            # "GET on the endpoint returns 200 OK with body OK (health check)"
            return _text(200, HEALTH_CHECK_BODY)
        if exchange.method != "POST":
            return _text(405, "method not allowed", Allow="GET, HEAD, POST")
        if not self.check_authorization(exchange.headers.get(AUTHORIZATION_HEADER, "")):
            return Answer(
                401,
                json.dumps(_UNAUTHORIZED_JSON).encode(),
                "application/json",
                {"WWW-Authenticate": "Bearer"},
            )
        if not self.is_connected:
            return _text(502, SERVER_CLOSED_BODY)
        request_id = exchange.request_id
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            return _text(400, "invalid request id")
        try:
            async with asyncio.timeout(self._limits.body_timeout):
                body = await _read_body(exchange, self._max_body)
        except TimeoutError:
            return _text(408, f"the body did not arrive within {self._limits.body_timeout} s")
        if body is None:
            # "413-style body limit at 32767 bytes"
            return _text(413, f"an ILP packet is at most {self._max_body} bytes")
        return await self._handle_post(body, request_id, exchange)

    async def _handle_post(
        self, body: bytes, request_id: str | None, request: Exchange | None = None
    ) -> Answer:
        raise NotImplementedError

    async def _answer_prepare(self, body: bytes, claimed: str | None = None) -> bytes:
        """Decode ``body`` as a Prepare, run the handler, encode its answer (never raises).

        ``claimed`` is the request's ``ILP-Destination`` header: when present and not the
        packet's destination the handler is not run and the answer is an ``F00`` Reject
        (see "ILP-Destination" in the module docstring).
        """
        try:
            prepare = decode_prepare(body)
        except DecodeError as exc:
            reply: IlpReply = IlpReject(
                code="F01",
                triggered_by=self.local_address,
                message=f"invalid ILP Prepare: {exc.reason}",
            )
        else:
            if claimed is not None and claimed != prepare.destination:
                log.warning(
                    "ILP-Destination %.64r disagrees with the packet's destination %s; rejected",
                    claimed,
                    prepare.destination,
                )
                reply = IlpReject(
                    code="F00",
                    triggered_by=self.local_address,
                    message="ILP-Destination header disagrees with the packet's destination",
                )
            else:
                reply = await self.handle_incoming(prepare)
        try:
            return encode_packet(reply)
        except EncodeError:
            log.exception("the handler returned a reply that cannot be encoded")
            return encode_packet(
                IlpReject(code="T00", triggered_by=self.local_address, message="internal error")
            )


def make_http_oer_handler(link: HttpLink) -> Handler:
    """An aiohttp handler serving ``link``'s incoming side inside another application.

    Mount it for every method at the endpoint path and at ``<path>ilp/{request_id}``
    (the route must name the variable ``request_id``), or use
    :func:`add_http_oer_routes`. The link must be started (for its client) but need not
    listen itself (``listen_port=None``).
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        return await link.handle_request(request)

    return handler


def add_http_oer_routes(router: web.UrlDispatcher, link: HttpLink, path: str = "/") -> None:
    """Route ``path`` and ``path + "ilp/{request_id}"`` of ``router`` to ``link``."""
    handler = make_http_oer_handler(link)
    base = path.rstrip("/")
    router.add_route("*", base + "/", handler)
    router.add_route("*", base + HTTP_OER_ILP_PATH + "{request_id}", handler)


# -- sync -------------------------------------------------------------------------------


class _SyncEntry:
    __slots__ = ("body", "task")

    def __init__(self, body: bytes, task: asyncio.Task[bytes]) -> None:
        self.body = body
        self.task = task


class HttpSyncLink(HttpLink):
    """ILP over HTTP / HTTP-OER-SYNC: the Fulfill or Reject is the body of the 200.

    ``peer_url`` is where our Prepares are POSTed; ``listen_port`` (``0`` = any free port,
    None = no server) is where the peer POSTs its Prepares to us, with ``incoming_token``
    (default: ``token``). With ``request_ids=True`` our POSTs go to
    ``<peer_url>/ilp/<uuid4>`` and are repeated after transport failures until the
    Prepare expires (PR 382 HTTP-OER-SYNC); without it one POST is made (RFC 35 /
    ilp-plugin-http), since a plain POST may not safely be repeated.
    """

    _transport_name = "ILP-over-HTTP"

    def __init__(
        self,
        peer_url: str | None = None,
        *,
        request_ids: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(peer_url, **options)
        self.request_ids = request_ids
        self._answered: _RequestTable[_SyncEntry] = _RequestTable(
            self._cache_size, self._cache_ttl, self._clock
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HttpSyncLink:
        """A link for an ``http+oer://`` URL (see the module docstring)."""
        parsed = parse_http_url(url)
        if parsed.asynchronous:
            raise ConfigError("uplink", "use HttpAsyncLink for http+oer-async:// URLs")
        if parsed.mode == "callback":
            raise ConfigError("uplink", "use HttpCallbackLink for mode=callback")
        return cls(parsed.peer_url, **{**parsed.link_options(), **options})

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """POST ``prepare`` to the peer and return the Fulfill or Reject in the 200 body."""
        wait = timeout if timeout is not None else self.expiry_timeout(prepare)
        self._session()
        assert self.peer_url is not None
        body = encode_packet(prepare)
        headers = self._headers(prepare)
        if self.request_ids:
            url = self.peer_url.rstrip("/") + HTTP_OER_ILP_PATH + str(uuid.uuid4())
            deadline = asyncio.get_running_loop().time() + wait
            payload = await self._post_until_ok(url, body, headers, deadline, attempt_timeout=None)
        else:
            # any 2xx: Rafiki's connector answered 201 with the reply in some versions
            payload = await self._post(
                self.peer_url, body, headers, wait, first=True, retry=False, any_2xx=True
            )
        try:
            return decode_reply(payload)
        except DecodeError as exc:
            raise RemoteProtocolError(f"peer sent an invalid ILP reply: {exc}") from exc

    async def _handle_post(
        self, body: bytes, request_id: str | None, request: Exchange | None = None
    ) -> Answer:
        claimed = _claimed_destination(request)
        if request_id is None:
            if request is None:
                return _ilp_response(await self._answer_prepare(body))
            return await self._answer_on_exchange(body, request)
        entry = self._answered.get(request_id)
        if entry is not None:
            if entry.body != body:
                reject = IlpReject(
                    code="F00",
                    triggered_by=self.local_address,
                    message="request id reused with a different packet",
                )
                return _ilp_response(encode_packet(reject))
            # "the responder must then return the same result without re-executing"
            return _ilp_response(await asyncio.shield(entry.task))
        # Run the handler in its own task so that a dropped connection does not cancel it:
        # the repeat that follows must find the result.
        task = self._spawn(self._answer_prepare(body, claimed))
        self._answered.put(request_id, _SyncEntry(body, task))
        try:
            return _ilp_response(await asyncio.shield(task))
        except asyncio.CancelledError:
            if task.cancelled():
                self._answered.pop(request_id)
            raise

    async def _answer_on_exchange(self, body: bytes, request: Exchange) -> Answer:
        """A plain ILP-over-HTTP POST: the handler sees this HTTP exchange as its
        :func:`~ilp_receiver.links.base.reply_channel` (open while the client's
        connection is), and the server writing the answer runs the channel's
        ``undelivered`` callbacks when that write fails or the client is gone."""
        channel = ReplyChannel(request.is_open)
        set_reply_channel(channel)
        try:
            response = _ilp_response(
                await self._answer_prepare(body, _claimed_destination(request))
            )
        finally:
            set_reply_channel(None)  # the connection's next request is another exchange
        response.channel = channel
        return response


# -- async ------------------------------------------------------------------------------


class HttpAsyncLink(HttpLink):
    """HTTP-OER-ASYNC: both peers run servers; answers travel as separate POSTs.

    ``peer_url`` is the peer's base URL (requests go to ``<peer_url>/ilp/<request-id>``);
    our server must listen (``listen_port``) for the answers. ``attempt_timeout`` bounds
    each POST attempt (a 200 only acknowledges receipt, so it should come quickly).
    """

    _transport_name = "HTTP-OER-ASYNC"

    def __init__(
        self,
        peer_url: str | None = None,
        *,
        attempt_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(peer_url, **options)
        self._attempt_timeout = attempt_timeout
        self._outgoing: dict[str, asyncio.Future[IlpReply]] = {}
        self._incoming: _RequestTable[bytes] = _RequestTable(
            self._cache_size, self._cache_ttl, self._clock
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HttpAsyncLink:
        """A link for an ``http+oer-async://`` URL (see the module docstring)."""
        parsed = parse_http_url(url)
        if not parsed.asynchronous:
            raise ConfigError("uplink", "use HttpSyncLink for http+oer:// URLs")
        return cls(parsed.peer_url, **{**parsed.link_options(), **options})

    def _request_url(self, request_id: str) -> str:
        assert self.peer_url is not None
        return self.peer_url.rstrip("/") + HTTP_OER_ILP_PATH + request_id

    def _fail_pending(self) -> None:
        for future in self._outgoing.values():
            if not future.done():
                future.set_exception(LinkClosedError("link stopped while a request was in flight"))
                future.exception()  # mark retrieved; the sender re-raises it
        self._outgoing.clear()

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """POST ``prepare`` (repeated until 200) and wait for the peer's answer POST."""
        self._session()  # LinkClosedError before start
        request_id = str(uuid.uuid4())
        # "The sender repeats the POST (idempotently, same request-id and body) until it
        # gets a 200."
        return await self._post_and_wait(
            prepare, timeout, request_id, self._request_url(request_id), self._headers(prepare)
        )

    async def _post_and_wait(
        self,
        prepare: IlpPrepare,
        timeout: float | None,
        request_id: str,
        url: str,
        headers: dict[str, str],
        *,
        any_2xx: bool = False,
        answer: str = "answer",
    ) -> IlpReply:
        """POST ``prepare`` as request ``request_id`` to ``url`` until it is accepted,
        then wait for the peer's own POST of the Fulfill or Reject (the async and the
        callback modes)."""
        wait = timeout if timeout is not None else self.expiry_timeout(prepare)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        future: asyncio.Future[IlpReply] = loop.create_future()
        self._outgoing[request_id] = future
        try:
            await self._post_until_ok(
                url,
                encode_packet(prepare),
                headers,
                deadline,
                attempt_timeout=self._attempt_timeout,
                any_2xx=any_2xx,
            )
            remaining = deadline - loop.time()
            if not future.done() and remaining <= 0:
                raise TimeoutError
            return await asyncio.wait_for(future, remaining)
        except LinkError:
            raise
        except TimeoutError:
            # "if no Fulfill/Reject arrives before the Prepare's expiresAt, treat the payment
            # as rejected (R00 upstream)"
            raise LinkTimeoutError(
                f"no {answer} for request {request_id} within {wait:.3f} s"
            ) from None
        finally:
            self._outgoing.pop(request_id, None)

    async def _handle_post(
        self, body: bytes, request_id: str | None, request: Exchange | None = None
    ) -> Answer:
        if request_id is None:
            return _text(404, "HTTP-OER-ASYNC packets are POSTed to /ilp/<request-id>")
        if body[:1] in _REPLY_TYPES:
            return self._accept_reply(body, request_id)
        known = self._incoming.get(request_id)
        if known is not None:
            if known != body:
                return _text(409, "request id reused with a different packet")
            # "On a repeated Prepare POST just answer 200 again (do not process twice)."
            return _text(200, "")
        self._incoming.put(request_id, body)
        self._spawn(self._process_prepare(request_id, body, _claimed_destination(request)))
        # "The receiver answers 200 as soon as it has received the packet correctly"
        return _text(200, "")

    def _accept_reply(self, body: bytes, request_id: str) -> Answer:
        future = self._outgoing.get(request_id)
        try:
            reply = decode_reply(body)
        except DecodeError as exc:
            if future is not None and not future.done():
                future.set_exception(RemoteProtocolError(f"peer sent an invalid ILP reply: {exc}"))
            return _text(400, f"invalid ILP packet: {exc.reason}")
        if future is not None and not future.done():
            future.set_result(reply)
        else:
            # Open question 18: "answering 200 and dropping it is the safe choice".
            log.debug("dropping an answer for unknown or finished request %s", request_id)
        return _text(200, "")

    async def _process_prepare(
        self, request_id: str, body: bytes, claimed: str | None = None
    ) -> None:
        deadline = _reply_deadline(body)
        # the answer goes back as our own POST, repeated until 200 or expiry: it is
        # undelivered when none got a 200
        channel = ReplyChannel(lambda: not self._stopping)
        set_reply_channel(channel)
        answer = await self._answer_prepare(body, claimed)
        try:
            await self._post_until_ok(
                self._request_url(request_id),
                answer,
                self._headers(None),
                deadline,
                attempt_timeout=self._attempt_timeout,
                fail_fast=False,  # "that POST is likewise retried until 200"
            )
        except LinkError as exc:
            log.warning("could not deliver the answer to request %s: %s", request_id, exc)
            channel.undelivered()


# -- RFC 35 callback mode ---------------------------------------------------------------


def check_callback_url(value: str) -> str:
    """``value`` if it is a usable ``Callback-Url`` (absolute ``http``/``https`` URL with a
    host, at most :data:`MAX_CALLBACK_URL` characters), else :class:`ValueError`."""
    if len(value) > MAX_CALLBACK_URL:
        raise ValueError(f"a callback URL is at most {MAX_CALLBACK_URL} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a callback URL is an absolute http(s) URL, got {value[:100]!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a callback URL carries no credentials")
    return value


#: Longest ``Callback-Url`` we accept (browsers' practical URL limit is larger; an
#: endpoint URL is far shorter).
MAX_CALLBACK_URL: Final = 2048


class HttpCallbackLink(HttpAsyncLink):
    """ILP over HTTP, RFC 35 draft 3 (callback mode): ``202 Accepted``, then the
    Fulfill/Reject as a POST to the sender's ``Callback-Url``.

    Outgoing, a Prepare is ``POST <peer_url>`` (any path) with ``Content-Type`` and
    ``Accept: application/octet-stream``, ``Authorization``, ``Request-Id: <uuid4>``,
    ``Callback-Url: <callback_url>`` and ``ILP-Destination``; any 2xx accepts it (the
    draft says 202; a 200 is taken as acceptance too), 5xx/408/425/429/timeouts repeat
    the identical POST with backoff until the Prepare expires, other 4xx fail the send.
    The first callback carrying that ``Request-Id`` (a POST of a Fulfill or Reject to
    ``callback_url``) completes the send and is answered ``200``; any later one, or one
    for an id we do not wait for, ``400`` ("the connector should ignore it and return an
    error"), so a reply is never processed twice.

    Incoming, a Prepare POSTed to our endpoint needs ``Request-Id`` (a URL-safe token
    up to 128 characters; the draft's UUIDv4 fits) and ``Callback-Url`` (unless
    ``peer_callback_url`` pins it: then a different one is refused with ``400``,
    so a peer cannot make us POST elsewhere). It is answered ``202`` at once; a repeat
    with the same id and body gets ``202`` again without running the handler twice, the
    same id with another body ``409``. The answer is POSTed to the callback URL with
    ``Request-Id``, repeated with capped exponential backoff on 5xx, timeouts and
    connection failures until a ``2xx`` or ``4xx`` ("MUST conclude retrying") or the
    Prepare's expiry. At most ``max_pending`` incoming Prepares are being processed or
    delivered at once (one more gets ``503`` with ``Retry-After: 1``), and at most
    ``max_pending`` of our own wait for callbacks (one more fails with LinkError).
    """

    _transport_name = "ILP-over-HTTP (callback)"

    def __init__(
        self,
        peer_url: str | None = None,
        *,
        callback_url: str | None = None,
        peer_callback_url: str | None = None,
        max_pending: int = 1000,
        **options: Any,
    ) -> None:
        super().__init__(peer_url, **options)
        for name, value in (
            ("callback_url", callback_url),
            ("peer_callback_url", peer_callback_url),
        ):
            if value is not None:
                try:
                    check_callback_url(value)
                except ValueError as exc:
                    raise ConfigError(name, str(exc)) from None
        if max_pending < 1:
            raise ConfigError("max_pending", "must be at least 1")
        self.callback_url = callback_url
        self._peer_callback_url = peer_callback_url
        self._max_pending = max_pending
        self._pending_in = 0
        #: Callbacks we delivered (acknowledged with a 2xx), for monitoring.
        self.callbacks_acknowledged = 0
        #: Callbacks the peer refused with a 4xx (repeats end there), for monitoring.
        self.callbacks_refused = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HttpCallbackLink:
        """A link for an ``http+oer://…?mode=callback`` URL (see the module docstring)."""
        parsed = parse_http_url(url)
        if parsed.asynchronous or parsed.mode != "callback":
            raise ConfigError(
                "uplink", "HttpCallbackLink needs an http+oer:// URL with mode=callback"
            )
        return cls(parsed.peer_url, **{**parsed.link_options(), **options})

    def _our_callback_url(self) -> str:
        url = self.callback_url or self.server_url
        if url is None:
            raise LinkClosedError(
                "an ILP-over-HTTP callback link needs callback_url or a listening server"
            )
        return url

    def _callback_headers(self, request_id: str, prepare: IlpPrepare | None) -> dict[str, str]:
        headers = self._headers(prepare)
        headers["Content-Type"] = OCTET_STREAM_CONTENT_TYPE
        headers[REQUEST_ID_HEADER] = request_id
        if prepare is not None:
            headers["Accept"] = OCTET_STREAM_CONTENT_TYPE
            headers[CALLBACK_URL_HEADER] = self._our_callback_url()
        return headers

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """POST ``prepare`` (repeated until accepted) and wait for the peer's callback."""
        self._session()  # LinkClosedError before start
        assert self.peer_url is not None
        if len(self._outgoing) >= self._max_pending:
            raise LinkError(f"{self._max_pending} Prepares already wait for a callback")
        request_id = str(uuid.uuid4())
        headers = self._callback_headers(request_id, prepare)
        return await self._post_and_wait(
            prepare, timeout, request_id, self.peer_url, headers, any_2xx=True, answer="callback"
        )

    async def _handle_post(
        self, body: bytes, request_id: str | None, request: Exchange | None = None
    ) -> Answer:
        headers: Mapping[str, str] = request.headers if request is not None else {}
        header_id = headers.get(REQUEST_ID_HEADER)
        if header_id is None and request_id is None:
            return _text(400, f"the {REQUEST_ID_HEADER} header is required")
        if header_id is not None and request_id is not None and header_id != request_id:
            return _text(400, f"the {REQUEST_ID_HEADER} header and the path disagree")
        rid = header_id if header_id is not None else request_id
        assert rid is not None
        if not _REQUEST_ID.fullmatch(rid):
            return _text(400, "invalid request id")
        if body[:1] in _REPLY_TYPES:
            return self._accept_callback(body, rid)
        known = self._incoming.get(rid)
        if known is not None:
            if known != body:
                return _text(409, "request id reused with a different packet")
            return _text(202, "")  # accepted before: not processed again
        callback = headers.get(CALLBACK_URL_HEADER)
        if self._peer_callback_url is not None:
            if callback is not None and callback != self._peer_callback_url:
                return _text(400, f"{CALLBACK_URL_HEADER} is not the one agreed for this peer")
            callback = self._peer_callback_url
        if callback is None:
            return _text(400, f"the {CALLBACK_URL_HEADER} header is required")
        try:
            check_callback_url(callback)
        except ValueError as exc:
            return _text(400, str(exc))
        if self._pending_in >= self._max_pending:
            return _text(503, "too many pending requests", **{"Retry-After": "1"})
        self._incoming.put(rid, body)
        self._pending_in += 1
        self._spawn(self._process_callback(rid, body, callback, _claimed_destination(request)))
        # "the recipient MUST respond immediately that the ILP Prepare is accepted"
        return _text(202, "")

    def _accept_callback(self, body: bytes, request_id: str) -> Answer:
        future = self._outgoing.get(request_id)
        if future is None or future.done():
            # "If the request ID doesn't correspond to an in-flight ILP Prepare, or a reply
            # was already processed, the connector should ignore it and return an error"
            return _text(400, "no ILP Prepare in flight with this request id")
        try:
            reply = decode_reply(body)
        except DecodeError as exc:
            future.set_exception(RemoteProtocolError(f"peer sent an invalid ILP reply: {exc}"))
            return _text(400, f"invalid ILP packet: {exc.reason}")
        future.set_result(reply)
        return _text(200, "")

    async def _process_callback(
        self, request_id: str, body: bytes, callback: str, claimed: str | None
    ) -> None:
        try:
            deadline = _reply_deadline(body)
            channel = ReplyChannel(lambda: not self._stopping)
            set_reply_channel(channel)
            answer = await self._answer_prepare(body, claimed)
            if not await self._deliver_callback(callback, request_id, answer, deadline):
                channel.undelivered()
        finally:
            self._pending_in -= 1

    async def _deliver_callback(
        self, url: str, request_id: str, answer: bytes, deadline: float
    ) -> bool:
        """POST the answer until a 2xx or 4xx or ``deadline``; whether the peer may have it.

        A 4xx after an attempt whose outcome we do not know (timeout, 5xx, lost
        connection) is taken as "already processed": that attempt may have reached it.
        """
        headers = self._callback_headers(request_id, None)
        loop = asyncio.get_running_loop()
        delay = self._retry_interval
        maybe_delivered = False
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await self._post(
                    url,
                    answer,
                    headers,
                    min(remaining, self._attempt_timeout),
                    first=False,
                    retry=True,
                    any_2xx=True,
                    retry_4xx=False,  # "MUST conclude retrying after ... a 4xx error"
                )
            except _Retry as exc:
                log.debug("repeating the callback for %s to %s: %s", request_id, url, exc)
                maybe_delivered = True
            except (HttpStatusError, AuthenticationError) as exc:
                log.warning("callback for %s refused by %s: %s", request_id, url, exc)
                self.callbacks_refused += 1
                return maybe_delivered
            except LinkError as exc:
                log.warning("could not deliver the callback for %s: %s", request_id, exc)
                return False
            else:
                self.callbacks_acknowledged += 1
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            delay = min(self._max_retry_interval, delay * 2)
        log.warning("no acknowledgement for the callback of %s before expiry", request_id)
        return False
