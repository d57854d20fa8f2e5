"""Two of our connectors peered over ILP over HTTP in the RFC 35 draft 3 callback mode
(``http_mode = "callback"``), with the callback endpoint of the sending side failing for
a while in front of it.

A proxy stands where connector B sends its callbacks (``callback_url`` of A's account
``b`` points at it): it answers the first two attempts of every callback ``503``
without passing them on, and for every fourth request it passes the third attempt on
to A but answers B ``502`` as if the acknowledgement were lost, so B repeats a callback
A has already processed. The test shows that every Prepare is answered with its
Fulfill, every callback is acknowledged by A exactly once (the repeat after a lost
acknowledgement gets ``400`` and ends the repeats), and both connectors' balances
move by exactly the amounts sent: nothing is credited twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from ilp_receiver.codec.ilp import IlpFulfill, IlpPacketType, IlpPrepare, IlpReply
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.links.http import HttpCallbackLink

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
PACKETS = 20
AMOUNT = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(n: int) -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=20)
    expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
    return IlpPrepare(AMOUNT, expires, CONDITION, f"test.b.bob.{n}", b"")


async def fulfil(packet: IlpPrepare) -> IlpReply:
    return IlpFulfill(FULFILLMENT, packet.destination.encode())


class FlakyCallbackProxy:
    """Stands in front of A's endpoint for B's callbacks (see the module docstring)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.attempts: Counter[str] = Counter()
        self.forwarded: list[tuple[str, int]] = []  # (request id, A's status)
        self.http: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rid = request.headers["Request-Id"]
        assert body[0] in (IlpPacketType.FULFILL, IlpPacketType.REJECT)
        self.attempts[rid] += 1
        attempt = self.attempts[rid]
        if attempt <= 2:
            return web.Response(status=503, text="callback endpoint down")
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self.http.post(self.target, data=body, headers=headers) as response:
            status = response.status
        self.forwarded.append((rid, status))
        index = sorted(self.attempts).index(rid)
        if attempt == 3 and index % 4 == 0:
            return web.Response(status=502, text="acknowledgement lost")
        return web.Response(status=status)


def connector_config(
    address: str, port: int, peer_id: str, peer_port: int, extra: dict[str, Any], local: str
) -> Any:
    return config_from_mapping(
        {
            "connector": {"address": address, "store": "memory:"},
            "server": {"port": port},
            "accounts": {
                local: {"relation": "child", "transport": "local"},
                peer_id: {
                    "relation": "peer",
                    "transport": "http",
                    "http_mode": "callback",
                    "url": f"http://127.0.0.1:{peer_port}/ilp/{address.split('.')[-1]}/",
                    "path": f"/ilp/{peer_id}/",
                    "send_routes": False,
                    "receive_routes": False,
                    **extra,
                },
            },
            "routes": [{"prefix": f"test.{peer_id}", "account": peer_id}],
        },
        env={},
    )


async def test_callback_mode_between_two_connectors_with_a_failing_callback_endpoint() -> None:
    port_a, port_b, port_proxy = free_port(), free_port(), free_port()
    a = Connector(
        connector_config(
            "test.a",
            port_a,
            "b",
            port_b,
            {
                "token": "a-to-b",
                "incoming_token": "b-to-a",
                "callback_url": f"http://127.0.0.1:{port_proxy}/callback",
            },
            "alice",
        )
    )
    b = Connector(
        connector_config(
            "test.b", port_b, "a", port_a, {"token": "b-to-a", "incoming_token": "a-to-b"}, "bob"
        )
    )
    proxy = FlakyCallbackProxy(f"http://127.0.0.1:{port_a}/ilp/b/")
    app = web.Application()
    app.router.add_post("/callback", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port_proxy).start()
    async with a, b, aiohttp.ClientSession() as http:
        proxy.http = http
        bob = b.local_link("bob")
        bob.set_handler(fulfil)
        await bob.start()
        alice = a.local_link("alice")
        await alice.start()
        try:
            replies = await asyncio.gather(*(alice.send(prepare(n)) for n in range(PACKETS)))
            link_b = b.accounts["a"].link
            assert isinstance(link_b, HttpCallbackLink)
            # B's delivery ends with A's 200 or, after a lost acknowledgement, A's 400
            for _ in range(500):
                if link_b.callbacks_acknowledged + link_b.callbacks_refused >= PACKETS:
                    break
                await asyncio.sleep(0.02)
        finally:
            await alice.stop()
            await bob.stop()
        assert [r for r in replies if not isinstance(r, IlpFulfill)] == []
        assert sorted(r.data for r in replies if isinstance(r, IlpFulfill)) == sorted(
            f"test.b.bob.{n}".encode() for n in range(PACKETS)
        )
        # every callback failed twice first and reached A at least once
        assert len(proxy.attempts) == PACKETS
        assert all(n >= 3 for n in proxy.attempts.values())
        # A acknowledged each request id exactly once; repeats after a lost ack got 400
        accepted = Counter(rid for rid, status in proxy.forwarded if status == 200)
        assert set(accepted.values()) == {1}
        assert len(accepted) == PACKETS
        lost = [rid for rid, status in proxy.forwarded if status == 400]
        assert len(lost) == (PACKETS + 3) // 4
        assert link_b.callbacks_refused == len(lost)
        assert link_b.callbacks_acknowledged == PACKETS - len(lost)
        # nothing credited twice, nothing left reserved
        total = PACKETS * AMOUNT
        assert a.ledger.balance("alice") == total
        assert a.ledger.balance("b") == -total
        assert b.ledger.balance("a") == total
        assert b.ledger.balance("bob") == -total
        assert a.ledger.reserved("alice") == b.ledger.reserved("a") == 0
    await runner.cleanup()
