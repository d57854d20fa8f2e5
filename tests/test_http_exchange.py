"""ILP over HTTP in a fleet (``docs/scaling.md``).

* Every ILP-over-HTTP request we make carries ``ILP-Destination`` (the Prepare's
  destination), so a standard load balancer can route without parsing the packet: the
  receiver's uplink (IL-DCP included) and the connector's HTTP accounts.
* A receiver behind a load balancer credits a Prepare only while the HTTP exchange that
  carried it can take the Fulfill back: a client (the balancer) that gave up meanwhile
  gets nothing credited -- the credit is reverted -- and the same Prepare POSTed again
  is credited once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ilp_receiver.codec.ildcp import IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    decode_prepare,
    decode_reply,
    encode_packet,
)
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.psk2.sender import build_chunk_prepare
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.stores import AddResult, MemoryStore

from .test_btp_connections import fulfill, packet

SECRET = bytes(range(32))


class Recorder:
    """A fake ILP-over-HTTP peer: records every POST, answers IL-DCP and fulfils the
    rest with the fulfilment of packet 1."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], IlpPrepare]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(text="OK")
        prepare = decode_prepare(await request.read())
        self.posts.append((dict(request.headers), prepare))
        if prepare.destination == "peer.config":
            reply = ildcp_serve(
                prepare,
                IldcpResponse("test.parent.shop", 9, "XYZ"),
                server_address="test.parent",
                now=datetime.now(UTC),
            )
        else:
            reply = fulfill(prepare, 1)
        return web.Response(body=encode_packet(reply))


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, int]]:
    peer = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield peer, port
    await runner.cleanup()


async def test_every_ilp_over_http_request_carries_ilp_destination(
    recorder: tuple[Recorder, int],
) -> None:
    peer, port = recorder
    # the receiver's uplink: IL-DCP is a Prepare like any other
    receiver = AsyncReceiver(f"http+oer://tok@127.0.0.1:{port}/", secret=SECRET, stream=False)
    await receiver.start()
    await receiver.stop()
    # the connector's HTTP account
    accounts: dict[str, Any] = {
        "sender": {"relation": "child", "transport": "btp-server", "token": "s", "listen": "0"},
        "web": {
            "relation": "child",
            "transport": "http",
            "url": f"http://127.0.0.1:{port}/web",
            "token": "w",
            "listen": "0",
            "path": "/web/",
        },
    }
    config = config_from_mapping(
        {"connector": {"address": "test.c", "store": "memory:"}, "accounts": accounts}, env={}
    )
    async with Connector(config) as c:
        sender = BtpClientLink("btp+" + c.listeners["sender"].replace("ws://", "ws://:s@"))
        await sender.start()
        try:
            for n in range(3):
                assert isinstance(await sender.send(packet(f"test.c.web.{n}", 1)), IlpFulfill)
        finally:
            await sender.stop()
    destinations = [p.destination for _, p in peer.posts]
    assert destinations == ["peer.config", "test.c.web.0", "test.c.web.1", "test.c.web.2"]
    for headers, prepare in peer.posts:
        assert headers["ILP-Destination"] == prepare.destination


class GatedStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.applied = asyncio.Event()

    async def add(self, key: str, delta: int, **kwargs: Any) -> AddResult:
        result = await super().add(key, delta, **kwargs)
        self.applied.set()
        await self.gate.wait()
        return result


async def test_a_credit_whose_http_exchange_was_given_up_is_reverted(
    recorder: tuple[Recorder, int],
) -> None:
    _, port = recorder
    store = GatedStore()
    receiver = AsyncReceiver(
        f"http+oer://tok@127.0.0.1:{port}/?listen=127.0.0.1:0",
        secret=SECRET,
        store=store,
        stream=False,
    )
    await receiver.start()
    members: list[AsyncReceiver] = []
    try:
        server = receiver.link.server_url  # type: ignore[attr-defined]
        destination, secret = receiver.issue()
        expires = datetime.now(UTC) + timedelta(seconds=30)
        prepare = build_chunk_prepare(
            destination,
            secret,
            amount=700,
            expires_at=expires.replace(microsecond=expires.microsecond // 1000 * 1000),
            iv=os.urandom(12),
            payment_id=os.urandom(16),
            chunk_amount=700,
        )
        body = encode_packet(prepare)
        headers = {"Authorization": "Bearer tok"}
        async with aiohttp.ClientSession() as http:
            # the load balancer (here: a client) gives up while the credit is committed
            attempt = asyncio.ensure_future(
                http.post(server, data=body, headers=headers, timeout=aiohttp.ClientTimeout(0.3))
            )
            await asyncio.wait_for(store.applied.wait(), 5)
            with pytest.raises(TimeoutError):
                await attempt
            await asyncio.sleep(0.05)
            store.gate.set()
            for _ in range(200):
                if receiver.reverted_credits:
                    break
                await asyncio.sleep(0.01)
            assert receiver.reverted_credits == 1
            assert await store.balance("endpoint:default") == 0
            # the same Prepare delivered again, to two other members of the fleet (same
            # secret, same store): paid and credited once
            for _ in range(2):
                member = AsyncReceiver(
                    f"http+oer://tok@127.0.0.1:{port}/?listen=127.0.0.1:0",
                    secret=SECRET,
                    store=store,
                    stream=False,
                )
                await member.start()
                members.append(member)
                url = member.link.server_url  # type: ignore[attr-defined]
                async with http.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
                    assert isinstance(decode_reply(await response.read()), IlpFulfill)
            assert await store.balance("endpoint:default") == 700
    finally:
        store.gate.set()
        await receiver.stop()
        for member in members:
            await member.stop()
