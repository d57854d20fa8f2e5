"""A standalone payment-pointer server on aiohttp: SPSP endpoints and a health check.

``/.well-known/pay`` (and ``/``) serve the default endpoint; ``/<name>`` serves named
endpoints, each with a balance of its own; each answers STREAM (SPSP v4) or PSK2 by the
query's ``Accept`` (:func:`~ilp_receiver.web.spsp_endpoint.spsp_reply`), and ``OPTIONS``
with the CORS headers; ``/health`` answers ``ok`` while the uplink is connected (503
otherwise), with the uplink, the address and ``shared_account`` (another receiver seen
on our uplink account: :class:`~ilp_receiver.receiver.ForeignPackets`).
"""

from __future__ import annotations

import json

from aiohttp import web

from .http_reply import HttpReply
from .receiver import AsyncReceiver
from .web.spsp_endpoint import EndpointDirectory, spsp_reply

__all__ = ["RECEIVER_KEY", "create_spsp_app", "to_aiohttp"]

#: Where the app keeps its receiver.
RECEIVER_KEY = web.AppKey("ilp_receiver", AsyncReceiver)


def to_aiohttp(reply: HttpReply) -> web.Response:
    """Translate a neutral :class:`HttpReply` to an aiohttp response."""
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body)


def create_spsp_app(
    receiver: AsyncReceiver, directory: EndpointDirectory | None = None
) -> web.Application:
    """An aiohttp application serving SPSP for ``receiver``."""
    endpoints = directory or EndpointDirectory()
    app = web.Application()
    app[RECEIVER_KEY] = receiver

    async def answer(request: web.Request, account: str | None) -> web.Response:
        headers = request.headers
        reply = await spsp_reply(
            receiver,
            account,
            headers.get("Accept"),
            method=request.method,
            receipt_nonce=headers.get("Receipt-Nonce"),
            receipt_secret=headers.get("Receipt-Secret"),
        )
        return to_aiohttp(reply)

    async def default_endpoint(request: web.Request) -> web.Response:
        return await answer(request, endpoints.account("default"))

    async def named_endpoint(request: web.Request) -> web.Response:
        return await answer(request, endpoints.account(request.match_info["name"]))

    async def health(request: web.Request) -> web.Response:
        up = receiver.link.is_connected
        report = receiver.health() if receiver.ready else {"status": "starting"}
        if not up and report["status"] == "ok":
            report["status"] = "uplink down"
        return web.Response(
            status=200 if up else 503,
            text=json.dumps(report),
            content_type="application/json",
        )

    app.router.add_get("/health", health)
    for path, handler in (
        ("/.well-known/pay", default_endpoint),
        ("/", default_endpoint),
        ("/{name}", named_endpoint),
    ):
        app.router.add_get(path, handler)
        app.router.add_route("OPTIONS", path, handler)
    return app
