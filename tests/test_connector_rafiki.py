"""The Rafiki peering recipe of ``docs/connector.md``, run as written against a
Rafiki-style peer (an aiohttp stand-in doing what Rafiki's ILP connector does).

The stand-in refuses a Prepare without ``Content-Type: application/octet-stream``
(``400``) or without ``Authorization: Bearer <its incoming token>`` (``401``), and
answers the Fulfill with status ``201``, as Rafiki's Koa middleware has. Our connector,
configured from the recipe (only the peer URL and the ports replaced by loopback ones,
and a local child added to send from), pays through it; the stand-in's own Prepare to
us (Bearer token, octet-stream, no ``ILP-Destination``) is answered with the Fulfill;
a Prepare above ``max_packet_amount`` is rejected ``F08`` before it leaves.
"""

from __future__ import annotations

import hashlib
import socket
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_prepare,
    decode_reply,
    encode_packet,
)
from ilp_receiver.connector import Connector, config_from_mapping

ROOT = Path(__file__).resolve().parent.parent
FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def recipe() -> dict[str, Any]:
    docs = (ROOT / "docs" / "connector.md").read_text(encoding="utf-8")
    block = docs.split("**A Rafiki peer**", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    return tomllib.loads(block)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(destination: str, amount: int = 5000) -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=10)
    expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
    return IlpPrepare(amount, expires, CONDITION, destination, b"")


class RafikiStandIn:
    def __init__(self, incoming_token: str) -> None:
        self.incoming_token = incoming_token
        self.seen: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        if request.content_type != "application/octet-stream":
            return web.Response(
                status=400, text="Expected Content-Type of application/octet-stream"
            )
        if request.headers.get("Authorization") != f"Bearer {self.incoming_token}":
            return web.Response(status=401, text="Access Denied - Invalid Token")
        packet = decode_prepare(await request.read())
        assert packet.destination.startswith("test.rafiki.")
        return web.Response(status=201, body=encode_packet(IlpFulfill(FULFILLMENT, b"rafiki")))


async def test_rafiki_recipe_both_ways() -> None:
    data = recipe()
    rafiki_side = data["accounts"]["rafiki"]
    stand_in = RafikiStandIn(rafiki_side["token"])
    app = web.Application()
    app.router.add_post("/ilp", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rafiki_port = runner.addresses[0][1]
    our_port = free_port()
    data["server"]["port"] = our_port
    rafiki_side["url"] = f"http://127.0.0.1:{rafiki_port}/ilp"
    data["connector"]["store"] = "memory:"
    data["accounts"]["alice"] = {"relation": "child", "transport": "local"}
    connector = Connector(config_from_mapping(data, env={}))

    async def fulfil(packet: IlpPrepare) -> IlpReply:
        return IlpFulfill(FULFILLMENT, b"alice")

    try:
        async with connector:
            alice = connector.local_link("alice")
            alice.set_handler(fulfil)
            await alice.start()
            try:
                # we pay through the Rafiki peer
                reply = await alice.send(prepare("test.rafiki.bob"))
                assert reply == IlpFulfill(FULFILLMENT, b"rafiki")
                headers = stand_in.seen[-1]
                assert headers["Content-Type"] == "application/octet-stream"
                assert headers["ILP-Destination"] == "test.rafiki.bob"
                assert connector.ledger.balance("rafiki") == -5000  # we owe Rafiki
                # over the max packet amount: rejected here, never sent
                sent = len(stand_in.seen)
                big = await alice.send(prepare("test.rafiki.bob", amount=100_000_001))
                assert isinstance(big, IlpReject)
                assert big.code == "F08"
                assert len(stand_in.seen) == sent
                # the Rafiki peer pays us the way Rafiki posts
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"http://127.0.0.1:{our_port}{rafiki_side['path']}",
                        data=encode_packet(prepare("test.ours.alice")),
                        headers={
                            "Authorization": f"Bearer {rafiki_side['incoming_token']}",
                            "Content-Type": "application/octet-stream",
                        },
                    ) as response,
                ):
                    assert response.status == 200
                    assert decode_reply(await response.read()) == IlpFulfill(FULFILLMENT, b"alice")
            finally:
                await alice.stop()
            assert connector.ledger.balance("rafiki") == 0  # Rafiki paid the same back
            assert connector.ledger.balance("alice") == 0
    finally:
        await runner.cleanup()
