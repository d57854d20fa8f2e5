"""Admin API of the bundled connector (aiohttp).

``GET /status``, ``/accounts``, ``/balances``, ``/routes`` (JSON) and ``GET /metrics``
(Prometheus text).  Every route needs ``Authorization: Bearer <admin.token>``, compared
in constant time (SHA-256 digests with :func:`hmac.compare_digest`); the ``Bearer``
scheme is required (case-insensitive, RFC 7235), a raw token is refused with 401.  Only
``/metrics`` may be opened with ``admin.metrics_public = true``.  Bound to ``127.0.0.1``
unless configured otherwise.  Answers never include tokens.

Failed attempts are limited per client address (:class:`AuthFailureLimiter`; an IPv6
client counts per /64): after :data:`ADMIN_MAX_FAILURES` failures within
:data:`ADMIN_FAILURE_WINDOW` seconds the client gets ``429`` with ``Retry-After`` and a
JSON body -- without the token being checked, so a correct token from that address is
refused too until the limit lifts (a guesser must not learn that it guessed right).
Other addresses are not affected.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import __version__
from ..codec.http_oer import strict_bearer_token
from ..errors import ConfigError
from ..links.listener import start_listener
from .accounts import TokenBucket
from .config import AdminConfig
from .metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from .node import Connector

__all__ = [
    "ADMIN_FAILURE_WINDOW",
    "ADMIN_MAX_CLIENTS",
    "ADMIN_MAX_FAILURES",
    "AuthFailureLimiter",
    "bearer_auth",
    "create_admin_app",
    "start_admin",
]

#: "after N failures in a window answer 429": failed authentications allowed per
#: client address within :data:`ADMIN_FAILURE_WINDOW` seconds.
ADMIN_MAX_FAILURES: Final = 10
#: The window of :data:`ADMIN_MAX_FAILURES`, in seconds.
ADMIN_FAILURE_WINDOW: Final = 60.0
#: "bounded memory for the per-client table": client addresses tracked at most.
ADMIN_MAX_CLIENTS: Final = 4096

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)


class AuthFailureLimiter:
    """Failed authentications per client: a token bucket each (``max_failures``
    tokens, refilled at ``max_failures / window`` per second); a client whose bucket is
    empty is limited until a token is back.

    At most ``max_clients`` clients are tracked: a new one evicts the client that
    failed least recently (memory never grows with the number of addresses an attacker
    uses).  ``clock`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        max_failures: int = ADMIN_MAX_FAILURES,
        window: float = ADMIN_FAILURE_WINDOW,
        max_clients: int = ADMIN_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_clients < 1:
            raise ValueError("max_failures, window and max_clients must be positive")
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: it may now)."""
        bucket = self._clients.get(client)
        if bucket is None:
            return 0.0
        if bucket.full:
            del self._clients[client]  # nothing left to remember
            return 0.0
        return bucket.retry_after()

    def failed(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        bucket = self._clients.get(client)
        if bucket is None:
            while len(self._clients) >= self.max_clients:
                self._clients.popitem(last=False)
            bucket = TokenBucket(self.max_failures / self.window, self.max_failures, self._clock)
            self._clients[client] = bucket
        else:
            self._clients.move_to_end(client)
        bucket.take()


def bearer_auth(
    token: str,
    failures: AuthFailureLimiter,
    *,
    public: Callable[[web.Request], bool] | None = None,
) -> Middleware:
    """An aiohttp middleware admitting requests with ``Authorization: Bearer <token>``
    (the scheme required, RFC 7235; compared in constant time over SHA-256 digests, so
    neither content nor length leaks), ``401`` otherwise; a client address with too
    many failures (``failures``) gets ``429`` with ``Retry-After`` before its token is
    even looked at.  ``public(request)`` True lets a request through unchecked."""
    expected = hashlib.sha256(token.encode("utf-8")).digest()

    @web.middleware
    async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if public is not None and public(request):
            return await handler(request)
        client = _client_key(request.remote)
        wait = failures.retry_after(client)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return web.json_response(
                {"error": "Too Many Requests", "retry_after": seconds},
                status=429,
                headers={"Retry-After": str(seconds)},
            )
        given = strict_bearer_token(request.headers.get("Authorization", ""))
        digest = hashlib.sha256((given or "").encode("utf-8")).digest()
        if given is None or not hmac.compare_digest(digest, expected):
            failures.failed(client)
            return web.json_response(
                {"error": "Unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    return auth


def _client_key(remote: str | None) -> str:
    """The address a client is limited by: its IP, or its /64 for IPv6 (one host
    usually holds a whole /64)."""
    if not remote:
        return "unknown"
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def create_admin_app(
    connector: Connector,
    config: AdminConfig,
    *,
    limiter: AuthFailureLimiter | None = None,
) -> web.Application:
    """The admin application (see the module docstring).  ``limiter`` counts failed
    authentications (default: :class:`AuthFailureLimiter` with the module's limits)."""
    if not config.token:
        raise ConfigError("admin.token", "the admin API needs a token")
    auth = bearer_auth(
        config.token,
        limiter if limiter is not None else AuthFailureLimiter(),
        public=(lambda request: request.path == "/metrics") if config.metrics_public else None,
    )

    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.status())

    async def accounts(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.accounts_info())

    async def refresh() -> None:
        # a shared ledger (a fleet on one store): show what the store says now
        try:
            await connector.ledger.refresh()
        except Exception:
            log.warning("could not reread the balances from the store", exc_info=True)

    async def balances(request: web.Request) -> web.StreamResponse:
        await refresh()
        return web.json_response(connector.balances_info())

    async def routes(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.routes_info())

    async def metrics(request: web.Request) -> web.StreamResponse:
        await refresh()
        text = connector.metrics.render(
            connector.ledger.balances(),
            {a.id: a.is_connected for a in connector.accounts.values()},
            version=__version__,
            connections=connector.connections_info(),
        )
        # "text/plain; version=0.0.4; charset=utf-8": the exposition format's own type
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/status", status)
    app.router.add_get("/accounts", accounts)
    app.router.add_get("/balances", balances)
    app.router.add_get("/routes", routes)
    app.router.add_get("/metrics", metrics)
    return app


async def start_admin(connector: Connector, config: AdminConfig) -> tuple[web.AppRunner, str]:
    """Serve the admin API; returns the runner and its base URL."""
    limits = connector.config.server.limits()
    runner = web.AppRunner(
        create_admin_app(connector, config), access_log=None, **limits.runner_options()
    )
    await runner.setup()
    assert config.port is not None
    try:
        listener = await start_listener(
            runner, config.host, config.port, limits, setting="admin.port"
        )
    except ConfigError:
        await runner.cleanup()
        raise
    return runner, f"http://{config.host}:{listener.port}/"
