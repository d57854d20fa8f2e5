"""Admin API of the bundled connector (aiohttp).

``GET /status``, ``/accounts``, ``/balances``, ``/routes`` (JSON) and ``GET /metrics``
(Prometheus text).  Every route needs ``Authorization: Bearer <admin.token>``, compared
in constant time (SHA-256 digests with :func:`hmac.compare_digest`); only ``/metrics``
may be opened with ``admin.metrics_public = true``.  Bound to ``127.0.0.1`` unless
configured otherwise.  Answers never include tokens.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..codec.http_oer import bearer_token
from ..errors import ConfigError
from ..links.listener import start_listener
from .config import AdminConfig

if TYPE_CHECKING:
    from .node import Connector

__all__ = ["create_admin_app", "start_admin"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_admin_app(connector: Connector, config: AdminConfig) -> web.Application:
    """The admin application (see the module docstring)."""
    if not config.token:
        raise ConfigError("admin.token", "the admin API needs a token")
    expected = hashlib.sha256(config.token.encode("utf-8")).digest()

    @web.middleware
    async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if config.metrics_public and request.path == "/metrics":
            return await handler(request)
        given = bearer_token(request.headers.get("Authorization", ""))
        digest = hashlib.sha256(given.encode("utf-8")).digest()
        if not hmac.compare_digest(digest, expected):
            return web.json_response(
                {"error": "Unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.status())

    async def accounts(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.accounts_info())

    async def balances(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.balances_info())

    async def routes(request: web.Request) -> web.StreamResponse:
        return web.json_response(connector.routes_info())

    async def metrics(request: web.Request) -> web.StreamResponse:
        text = connector.metrics.render(
            connector.ledger.balances(),
            {a.id: a.is_connected for a in connector.accounts.values()},
        )
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

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
