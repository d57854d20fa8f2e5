"""The webhook admin API (aiohttp), served by ``ilp-receiver webhooks run --admin-port``.

* ``GET /events?state=pending|dead&limit=N`` -- the oldest events in that state (JSON);
* ``POST /events/{id}/replay`` -- send an event again now (a dead letter becomes
  pending); ``404`` for an unknown id (delivered events are forgotten);
* ``GET /metrics`` -- the dispatcher's metrics and the outbox depth (Prometheus text).

Every route needs ``Authorization: Bearer <token>`` (the connector admin API's rule:
SHA-256 digests compared with :func:`hmac.compare_digest`, failures limited per client
address by :class:`~ilp_receiver.connector.admin.AuthFailureLimiter`).  Bind it to
loopback unless a proxy with TLS stands in front.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ..connector.admin import AuthFailureLimiter, bearer_auth
from ..connector.metrics import CONTENT_TYPE
from ..errors import ConfigError
from .dispatcher import WebhookDispatcher

__all__ = ["MAX_LIST", "create_webhook_admin_app"]

#: The most events one list answer holds.
MAX_LIST: Final = 1000
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_webhook_admin_app(
    dispatcher: WebhookDispatcher, token: str, *, limiter: AuthFailureLimiter | None = None
) -> web.Application:
    """The admin application of ``dispatcher`` (see the module docstring)."""
    if not token or len(token) < 16:
        raise ConfigError("webhook_admin_token", "the admin API needs a token of 16+ characters")
    auth = bearer_auth(token, limiter if limiter is not None else AuthFailureLimiter())
    store = dispatcher.store

    async def events(request: web.Request) -> web.StreamResponse:
        state = request.query.get("state", "pending")
        if state not in ("pending", "dead"):
            return web.json_response({"error": "state is pending or dead"}, status=400)
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIST:
            return web.json_response({"error": f"limit is 1..{MAX_LIST}"}, status=400)
        found = await store.outbox_list("dead" if state == "dead" else "pending", limit)
        return web.json_response({"events": [event.summary() for event in found]})

    async def replay(request: web.Request) -> web.StreamResponse:
        event_id = request.match_info["event_id"]
        if not _EVENT_ID.fullmatch(event_id) or not await store.outbox_replay(event_id):
            return web.json_response({"error": "no such event"}, status=404)
        dispatcher.wake()
        return web.json_response({"replayed": event_id})

    async def metrics(request: web.Request) -> web.StreamResponse:
        text = await dispatcher.metrics_text()
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[auth], client_max_size=1024)
    app.router.add_get("/events", events)
    app.router.add_post("/events/{event_id}/replay", replay)
    app.router.add_get("/metrics", metrics)
    return app
