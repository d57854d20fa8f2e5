"""HTTP/2 (and TLS with ALPN) for the ILP-over-HTTP links: a Hypercorn server for our
endpoints and an httpx client for the peers we call.

aiohttp, which carries HTTP/1.1 for the links, has no HTTP/2. With ``http2=True`` (URL
option ``http2=1``, connector account field ``http2 = true``) or any TLS server file, a
link's endpoint is served by :class:`Http2Server` instead: Hypercorn running a small
ASGI application that hands each request to the same
:meth:`~ilp_receiver.links.http.HttpLink.handle_exchange` as the aiohttp server. It
speaks HTTP/1.1 and HTTP/2 on the same port:

* over TLS, by ALPN: ``h2`` first, then ``http/1.1`` (a client offering only
  ``http/1.1``, such as ilp-plugin-http or aiohttp, gets HTTP/1.1);
* in clear text, HTTP/1.1, or HTTP/2 "with prior knowledge" (h2c: the client starts with
  the HTTP/2 preface), meant for loopback and tests.

The client side (:class:`Http2Client`) is one ``httpx.AsyncClient`` per link with
``http2=True``: over ``https`` it offers ``h2`` and ``http/1.1`` by ALPN; over ``http``
it uses h2c with prior knowledge (``http1=False``), since a peer behind plain HTTP that
enabled HTTP/2 is ours or a proxy configured for it. Concurrent Prepares share one
connection as HTTP/2 streams; the pool is bounded (``max_connections``) and idle
connections close after a few seconds.

Bounds on the HTTP/2 server (every network input stays bounded): request heads at most
16 KiB (HTTP/1.1 incomplete request and HTTP/2 header list), at most
:data:`MAX_CONCURRENT_STREAMS` streams per connection, the TLS handshake and the wait
for a request within the listener's ``header_timeout``, a body within ``body_timeout``
and at most the link's body limit (32767 bytes), idle keep-alive connections closed after
``header_timeout``. Hypercorn has no cap on the number of connections; the listener's
``max_connections`` is applied to the requests in progress instead (one more is
answered ``503``), which bounds the work and memory per connection that matter.

TLS (:class:`TlsServerFiles`, :class:`TlsClientFiles`): a certificate chain and key for
the server, optionally a CA file whose certificates clients must present (TLS client
certificates, the seed's recommended authentication; bearer tokens are still checked);
for the client, optionally a CA file to verify the peer with (default: the system's)
and our own certificate and key. A missing or unreadable file, or one that is not what
it should be, is a :class:`~ilp_receiver.errors.ConfigError` naming the setting.

Needs the ``http2`` extra (``pip install 'ilp-receiver[http2]'``: hypercorn, h2, httpx);
asking for HTTP/2 or TLS files without it is a ConfigError saying so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from multidict import CIMultiDict

from ..errors import ConfigError
from .listener import DEFAULT_LIMITS, ServerLimits

if TYPE_CHECKING:
    from .http import Answer, Exchange

__all__ = [
    "MAX_CONCURRENT_STREAMS",
    "Http2Client",
    "Http2Server",
    "TlsClientFiles",
    "TlsServerFiles",
    "require_http2",
]

log = logging.getLogger(__name__)

#: HTTP/2 streams one connection may have open at once (Prepares in flight).
MAX_CONCURRENT_STREAMS: Final = 256
#: Largest request head (HTTP/1.1) or header list (HTTP/2) we take.
MAX_HEAD_BYTES: Final = 16 * 1024
_EXTRA = "pip install 'ilp-receiver[http2]'"
_REQUEST_ID_PATH = "ilp/"


def require_http2(setting: str) -> None:
    """Raise ConfigError naming ``setting`` unless the ``http2`` extra is installed."""
    try:
        import h2  # noqa: F401
        import httpx  # noqa: F401
        import hypercorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            setting, f"HTTP/2 and TLS endpoints need the http2 extra ({_EXTRA}): {exc}"
        ) from None


def _check_file(setting: str, path: str, what: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(
            setting, f"cannot read the {what} file {path!r}: {exc.strerror}"
        ) from None


@dataclass(frozen=True, slots=True)
class TlsServerFiles:
    """Files of a TLS server: ``cert`` (PEM chain), ``key`` (PEM private key) and
    optionally ``client_ca`` (PEM CA certificates; clients must then present a
    certificate signed by one of them). ``prefix`` names the settings in errors."""

    cert: str
    key: str
    client_ca: str | None = None
    prefix: str = "tls_"

    def context(self) -> ssl.SSLContext:
        """A server context with ALPN ``h2``, ``http/1.1``; ConfigError for a bad file."""
        _check_file(self.prefix + "cert", self.cert, "certificate")
        _check_file(self.prefix + "key", self.key, "private key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                self.prefix + "cert",
                f"{self.cert!r} and {self.prefix}key {self.key!r} are not a PEM certificate "
                f"chain and its private key: {exc}",
            ) from None
        if self.client_ca is not None:
            _check_file(self.prefix + "client_ca", self.client_ca, "client CA")
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    self.prefix + "client_ca",
                    f"{self.client_ca!r} holds no PEM CA certificate: {exc}",
                ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2", "http/1.1"])
        return context


@dataclass(frozen=True, slots=True)
class TlsClientFiles:
    """Files of a TLS client: ``ca`` (PEM CA certificates to verify the peer with;
    None: the system's), ``cert`` and ``key`` (our client certificate, both or neither).
    ``prefix`` names the settings in errors."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    prefix: str = "tls_"

    def context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A client context (peer verified); ConfigError for a bad file."""
        if (self.cert is None) != (self.key is None):
            missing = "client_key" if self.key is None else "client_cert"
            raise ConfigError(self.prefix + missing, "a client certificate needs its key too")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca is not None:
            _check_file(self.prefix + "ca", self.ca, "CA")
            try:
                context.load_verify_locations(cafile=self.ca)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    self.prefix + "ca", f"{self.ca!r} holds no PEM CA certificate: {exc}"
                ) from None
        if self.cert is not None and self.key is not None:
            _check_file(self.prefix + "client_cert", self.cert, "client certificate")
            _check_file(self.prefix + "client_key", self.key, "client key")
            try:
                context.load_cert_chain(self.cert, self.key)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    self.prefix + "client_cert",
                    f"{self.cert!r} and {self.prefix}client_key {self.key!r} are not a PEM "
                    f"certificate chain and its private key: {exc}",
                ) from None
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


# -- server -----------------------------------------------------------------------------

ExchangeHandler = Callable[["Exchange"], Awaitable["Answer"]]
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


class _App:
    """The ASGI application: ``base`` and ``base + "ilp/<request-id>"`` of each route go
    to its handler; anything else is 404."""

    def __init__(self, max_requests: int) -> None:
        self.routes: dict[str, ExchangeHandler] = {}
        self._max_requests = max_requests
        self._in_progress = 0

    def _match(self, path: str) -> tuple[ExchangeHandler, str | None] | None:
        handler = self.routes.get(path)
        if handler is not None:
            return handler, None
        base, sep, rest = path.rpartition("/" + _REQUEST_ID_PATH)
        if sep and rest and "/" not in rest:
            handler = self.routes.get(base + "/")
            if handler is not None:
                return handler, rest
        return None

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        match = self._match(scope["path"])
        if match is None:
            await _respond(send, 404, b"not found", "text/plain")
            return
        if self._in_progress >= self._max_requests:
            await _respond(send, 503, b"too many requests in progress", "text/plain")
            return
        self._in_progress += 1
        try:
            await self._serve(scope, receive, send, *match)
        finally:
            self._in_progress -= 1

    async def _serve(
        self,
        scope: dict[str, Any],
        receive: _Receive,
        send: _Send,
        handler: ExchangeHandler,
        request_id: str | None,
    ) -> None:
        from .http import Exchange

        headers: CIMultiDict[str] = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        )
        try:
            length: int | None = int(headers.get("Content-Length", ""))
        except ValueError:
            length = None
        state = {"open": True, "body_done": False}

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    state["open"] = False
                    return
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    state["body_done"] = True
                    return

        watcher: asyncio.Task[None] | None = None

        def is_open() -> bool:
            nonlocal watcher
            if watcher is None and state["body_done"]:
                watcher = asyncio.ensure_future(_watch(receive, state))
            return state["open"]

        exchange = Exchange(
            method=scope["method"],
            headers=headers,
            request_id=request_id,
            content_length=length,
            chunks=chunks,
            is_open=is_open,
        )
        try:
            answer = await handler(exchange)
            channel = answer.channel
            if channel is not None and channel.is_open:  # starts the watcher if need be
                await asyncio.sleep(0)  # let it see a disconnect already queued
            if channel is not None and not channel.is_open:
                channel.undelivered()
                return
            try:
                await _respond(
                    send, answer.status, answer.body, answer.content_type, answer.headers
                )
            except Exception:
                if channel is None:
                    raise
                channel.undelivered()
        finally:
            if watcher is not None:
                watcher.cancel()


async def _watch(receive: _Receive, state: dict[str, bool]) -> None:
    """Wait for the client to go away (ASGI tells it as ``http.disconnect``)."""
    while state["open"]:
        message = await receive()
        if message["type"] == "http.disconnect":
            state["open"] = False


async def _respond(
    send: _Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    if content_type == "text/plain":
        content_type = "text/plain; charset=utf-8"
    raw = [(b"content-type", content_type.encode("latin-1"))]
    raw.append((b"content-length", str(len(body)).encode()))
    for name, value in (headers or {}).items():
        raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Http2Server:
    """One Hypercorn listener serving ILP-over-HTTP endpoints over HTTP/1.1 and HTTP/2
    (h2c in clear text, ALPN over TLS). Add routes with :meth:`add_route`, then
    :meth:`start`; :attr:`port` is the bound port."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: TlsServerFiles | None = None,
        limits: ServerLimits = DEFAULT_LIMITS,
        shutdown_grace: float = 1.0,
        setting: str = "listen",
    ) -> None:
        require_http2("http2")
        self._host = host
        self._port = port
        self._tls = tls
        self._limits = limits
        self._shutdown_grace = shutdown_grace
        self._setting = setting
        self._app = _App(limits.max_connections)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None
        if tls is not None:
            tls.context()  # a bad file is refused now, naming the setting

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self._tls is not None else "http"

    def add_route(self, path: str, handler: ExchangeHandler) -> None:
        """Serve ``path`` (made to end in ``/``) and ``path + "ilp/<request-id>"``."""
        base = path.rstrip("/") + "/"
        if base in self._app.routes:
            raise ConfigError(self._setting, f"two endpoints on the path {base!r}")
        self._app.routes[base] = handler

    def _config(self, fd: int) -> Any:
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{fd}"]
        config.accesslog = None
        config.errorlog = logging.getLogger(__name__ + ".hypercorn")
        config.keep_alive_timeout = self._limits.header_timeout
        config.read_timeout = max(1, math.ceil(self._limits.header_timeout))
        config.ssl_handshake_timeout = self._limits.header_timeout
        config.graceful_timeout = self._shutdown_grace
        config.h11_max_incomplete_size = MAX_HEAD_BYTES
        config.h2_max_header_list_size = MAX_HEAD_BYTES
        config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
        # Hypercorn closes a connection after 1000 requests by default; an HTTP/2 peer
        # keeps one connection for all its Prepares, and streams in flight when the
        # connection goes away fail (T01 upstream). Time and stream bounds stay.
        config.keep_alive_max_requests = 2**31
        config.include_server_header = False
        config.alpn_protocols = ["h2", "http/1.1"]
        if self._tls is not None:
            config.certfile = self._tls.cert
            config.keyfile = self._tls.key
            if self._tls.client_ca is not None:
                config.ca_certs = self._tls.client_ca
                config.verify_mode = ssl.CERT_REQUIRED
        return config

    async def start(self) -> None:
        """Bind and serve (ConfigError naming the setting when the port is taken)."""
        from hypercorn.asyncio import serve

        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                self._setting, f"cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None
        sock.listen(self._limits.max_connections)
        self.port = int(sock.getsockname()[1])
        config = self._config(sock.detach())
        self._stop.clear()
        self._task = asyncio.ensure_future(
            serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]
        )
        await asyncio.sleep(0)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        """Stop accepting, give requests in progress ``shutdown_grace`` seconds."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, self._shutdown_grace + 1.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.exception("the HTTP/2 server stopped with an error")


# -- client -----------------------------------------------------------------------------


class Http2Client:
    """An httpx client for one link: HTTP/2 (h2c with prior knowledge for ``http://``,
    ALPN ``h2``/``http/1.1`` for ``https://``), at most ``max_connections`` connections,
    idle ones closed after ``keepalive`` seconds."""

    def __init__(
        self,
        *,
        cleartext: bool,
        max_connections: int = 100,
        keepalive: float = 3.0,
        tls: TlsClientFiles | None = None,
    ) -> None:
        require_http2("http2")
        import httpx

        verify: ssl.SSLContext | bool = True
        if tls is not None:
            verify = tls.context(["h2", "http/1.1"])
        self._client = httpx.AsyncClient(
            http1=not cleartext,
            http2=True,
            verify=verify,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive,
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float, limit: int
    ) -> tuple[int, bytes, str]:
        """POST; ``(status, at most limit + 1 bytes of body, HTTP version)``.

        Raises ``httpx`` errors (the link maps them to its own).
        """
        import httpx

        request = self._client.build_request(
            "POST", url, content=body, headers=headers, timeout=httpx.Timeout(timeout)
        )
        response = await self._client.send(request, stream=True)
        try:
            payload = bytearray()
            async for chunk in response.aiter_raw():
                payload += chunk
                if len(payload) > limit:
                    break
            return response.status_code, bytes(payload), response.http_version
        finally:
            await response.aclose()

    async def close(self) -> None:
        """Close every connection."""
        await self._client.aclose()
