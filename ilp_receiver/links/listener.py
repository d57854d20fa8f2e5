"""Bounded listeners for every aiohttp server of the library: a connection cap with a
clean refusal, a header-read and idle timeout, and bounded request heads.

Every server ilp-receiver runs (the SPSP server of ``ilp-receiver receive``, the
bundled connector's BTP and HTTP endpoints and its admin API, ILP-over-HTTP uplink
listeners, the demo and the test kit) listens through :func:`start_listener`, so each
network input is bounded before anything is allocated for it:

* **connections**: at most ``max_connections`` open at once per listener.  One more is
  accepted and answered ``503`` with a JSON body and ``Connection: close``, then closed
  (a clean refusal instead of running out of file descriptors: an outside test once
  opened 20,200 idle connections and the process hit its descriptor limit, logging a
  traceback per ``accept``).  One log line per burst (:class:`~ilp_receiver.log_limits.LogLimiter`).
* **time**: a connection must deliver a complete request head within
  ``header_timeout`` seconds of opening (or of its previous response, when kept
  alive); otherwise it is closed.  This is aiohttp's keep-alive timer, which starts
  when the connection opens and is not reset by partial data.  Bodies are read by
  the handlers that need them, under ``body_timeout``.
* **bytes**: request line and header fields at most ``max_field_size`` bytes, at
  most ``max_headers`` header fields (aiohttp's parser refuses more with 400).

An upgraded WebSocket (BTP) leaves the HTTP timers behind: the BTP server bounds the
time to authenticate and its messages itself (``links/btp_server.py``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import ConfigError
from ..log_limits import LogLimiter

__all__ = [
    "DEFAULT_LIMITS",
    "Listener",
    "ServerLimits",
    "raise_open_files_limit",
    "start_listener",
]

log = logging.getLogger(__name__)
_refusals = LogLimiter(log)


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs every malformed request (bad request line, too many or too long
    header fields) as an ERROR with a traceback, after answering it 400: a client could
    write megabytes of log per second.  This filter lets one line per 10 s through,
    without the traceback and with a count of the ones it held back."""

    def __init__(self) -> None:
        super().__init__()
        self._interval = 10.0
        self._last = -self._interval
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._last < self._interval:
            self._held += 1
            return False
        self._last = now
        held, self._held = self._held, 0
        record.msg = "malformed HTTP request answered %s: %s"
        record.args = (exc.code, str(exc.message)[:200])
        if held:
            record.msg += " (%d more in the last %.0f s)"
            record.args = (*record.args, held, self._interval)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = None
        record.exc_text = None
        return True


_malformed_requests = _MalformedRequestFilter()

_BUSY_BODY: Final = b'{"error":"ServerBusy","message":"too many open connections; retry later"}'
_BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How much one listener accepts (see the module docstring).

    The defaults suit a payment pointer or a connector on the public Internet behind a
    TLS-terminating proxy; ``docs/security.md`` lists each with its setting.
    """

    #: connections open at once; one more is answered 503 and closed
    max_connections: int = 1024
    #: seconds to deliver a complete request head (also how long an idle keep-alive
    #: connection stays open)
    header_timeout: float = 10.0
    #: seconds a handler may spend reading a request body
    body_timeout: float = 30.0
    #: bytes in the request line and in each header field
    max_field_size: int = 8190
    #: header fields per request
    max_headers: int = 64

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ConfigError("max_connections", "must be at least 1")
        if not self.header_timeout > 0:
            raise ConfigError("header_timeout", "must be a positive number of seconds")
        if not self.body_timeout > 0:
            raise ConfigError("body_timeout", "must be a positive number of seconds")

    def runner_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`aiohttp.web.AppRunner` that apply these limits."""
        return {
            "keepalive_timeout": self.header_timeout,
            "max_line_size": self.max_field_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


DEFAULT_LIMITS: Final = ServerLimits()


class _Refusal(asyncio.Protocol):
    """Answers 503 and closes: the connection cap's clean refusal."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY_RESPONSE)
        transport.close()


class Listener(web.BaseSite):
    """A listening TCP socket for an :class:`aiohttp.web.AppRunner` with a connection cap.

    Use :func:`start_listener`; ``runner.cleanup()`` stops it with the runner's other
    sites.  :attr:`port` is the bound port (useful with port 0).
    """

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: ServerLimits):
        super().__init__(runner)
        self._app_runner = runner
        self._host = host
        self._port = port
        self._limits = limits
        self._listening: asyncio.Server | None = None
        self._just_accepted = 0
        #: connections refused since the listener started
        self.refused = 0

    @property
    def name(self) -> str:
        """``http://host:port`` of the bound socket."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        if self._listening is None or not self._listening.sockets:
            return 0
        return int(self._listening.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections currently served (refused ones are not counted)."""
        server = self._app_runner.server
        return 0 if server is None else len(server.connections)

    async def start(self) -> None:
        """Bind and start accepting."""
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._app_runner.server
        assert server is not None
        cap = self._limits.max_connections

        def forget_just_accepted() -> None:
            self._just_accepted = 0

        def protocol() -> asyncio.BaseProtocol:
            # Connections accepted in this loop iteration register with the server only
            # in the next one: count them here so a burst cannot overshoot the cap.
            if self._just_accepted == 0:
                loop.call_soon(forget_just_accepted)
            if len(server.connections) + self._just_accepted >= cap:
                self.refused += 1
                _refusals.warning(
                    self.name,
                    "refusing connections on %s: the limit of %d open connections is reached",
                    self.name,
                    cap,
                )
                return _Refusal()
            self._just_accepted += 1
            return server()

        self._listening = await loop.create_server(
            protocol, self._host, self._port, reuse_address=True, backlog=128
        )

    async def stop(self) -> None:
        """Stop accepting (open connections are closed by the runner's cleanup)."""
        if self._listening is not None:
            self._listening.close()
        await super().stop()


async def start_listener(
    runner: web.AppRunner,
    host: str,
    port: int,
    limits: ServerLimits = DEFAULT_LIMITS,
    *,
    setting: str = "port",
) -> Listener:
    """Listen on ``host:port`` for ``runner`` (already set up) under ``limits``.

    Create the runner with ``web.AppRunner(app, **limits.runner_options())`` so the
    time and header limits apply too.  A port that cannot be bound raises
    :class:`~ilp_receiver.errors.ConfigError` naming ``setting``.
    """
    server_log = logging.getLogger("aiohttp.server")
    if _malformed_requests not in server_log.filters:
        server_log.addFilter(_malformed_requests)
    listener = Listener(runner, host, port, limits)
    try:
        await listener.start()
    except OSError as exc:
        raise ConfigError(setting, f"cannot listen on {host}:{port}: {exc}") from exc
    return listener


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Raise this process's soft limit on open files toward ``wanted`` (never above the
    hard limit); returns the soft limit now in force.

    The commands call it at start so the connection caps, not the descriptor limit, are
    what a flood of connections meets first.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft
        return target
    return soft
