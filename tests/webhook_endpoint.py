"""A local webhook endpoint for tests: records every POST, answers a chosen status."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ilp_receiver.links.listener import ServerLimits, start_listener


@dataclass
class Delivery:
    """One POST the endpoint received."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Endpoint:
    """``async with Endpoint() as endpoint``: ``endpoint.url`` records POSTs in
    ``deliveries`` and answers ``status`` (503 = "down"); ``in_flight`` / ``most_in_flight``
    count concurrent requests while ``hold`` (an Event) is cleared."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.deliveries: list[Delivery] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1
        status = self.status
        self.deliveries.append(Delivery(dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status < 300 else "down")

    async def __aenter__(self) -> Endpoint:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = await start_listener(self._runner, "127.0.0.1", 0, ServerLimits())
        self.url = f"http://127.0.0.1:{listener.port}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def acknowledged(self) -> list[Delivery]:
        """The deliveries answered 2xx."""
        return [d for d in self.deliveries if 200 <= d.status < 300]
