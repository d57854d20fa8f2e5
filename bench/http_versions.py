"""ILP over HTTP/1.1 against HTTP/2: packets/s and server CPU per packet, for our receiver
and our connector, in one run.

Each target runs in its own process (this script with ``--serve``) so that its CPU can
be read from ``/proc/PID/stat``; this process is the client. Targets:

* **receiver**: an ``AsyncReceiver`` (PSK2 only, memory store) whose uplink is an
  ILP-over-HTTP link listening on loopback (its address is fixed, no IL-DCP); every
  Prepare is a PSK2 chunk built before the timed window for a destination it issued.
* **connector**: a ``Connector`` whose HTTP account ``in`` (child) takes the Prepares and
  routes them to a local account that fulfils at once (connector work only: balance,
  routing, expiry, the fulfillment check, plus the HTTP server).

Each target is started twice, once served by aiohttp (HTTP/1.1, ``http2`` off) and once
by Hypercorn (``http2`` on), and fed ``--count`` Prepares with ``--concurrency`` in
flight over:

* HTTP/1.1: an aiohttp session, up to ``--concurrency`` keep-alive connections (what the
  links use for HTTP/1.1);
* HTTP/2: an httpx client with h2c prior knowledge and one connection (what the links
  use for HTTP/2; every Prepare is a stream on it).

Rounds rotate the order of the four cells (target x version) after ``--warmup-runs``
unrecorded rounds; the table shows medians over ``--runs``: packets/s over the window,
server CPU ms per packet (user + system ticks of the server process over the window),
client CPU ms per packet (this process), and that every answer was a Fulfill. ::

    python bench/http_versions.py --runs 5 --count 5000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReply, decode_reply, encode_packet
from ilp_receiver.psk2.sender import build_chunk_prepare

TICK = os.sysconf("SC_CLK_TCK")
FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
TOKEN = "bench-token"


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the server side (--serve) ----------------------------------------------------------


async def serve_receiver(port: int, http2: bool) -> None:
    from ilp_receiver.links.http import HttpSyncLink
    from ilp_receiver.links.uplink import PeerConfig
    from ilp_receiver.receiver import AsyncReceiver
    from ilp_receiver.stores import MemoryStore

    link = HttpSyncLink(
        "http://127.0.0.1:9/", token=TOKEN, listen_port=port, http2=http2, max_connections=256
    )
    receiver = AsyncReceiver(
        link,
        secret=os.urandom(32),
        store=MemoryStore(),
        stream=False,
        static_config=PeerConfig("test.bench.rcv", "XYZ", 9),
    )
    await receiver.start()
    destination, secret = receiver.issue()
    ready = {"event": "ready", "destination": destination, "secret": secret.hex()}
    print(json.dumps(ready), flush=True)
    await asyncio.Event().wait()


async def serve_connector(port: int, http2: bool) -> None:
    from ilp_receiver.connector import Connector, config_from_mapping

    config = config_from_mapping(
        {
            "connector": {"address": "test.bench", "store": "memory:"},
            "accounts": {
                "in": {
                    "relation": "child",
                    "transport": "http",
                    "url": "http://127.0.0.1:9/",
                    "token": TOKEN,
                    "listen": f"127.0.0.1:{port}",
                    "http2": http2,
                },
                "sink": {"relation": "child", "transport": "local"},
            },
        },
        env={},
    )
    connector = Connector(config)
    await connector.start()
    sink = connector.local_link("sink")

    async def fulfil(prepare: IlpPrepare) -> IlpReply:
        return IlpFulfill(FULFILLMENT, b"")

    sink.set_handler(fulfil)
    await sink.start()
    print(json.dumps({"event": "ready", "destination": "test.bench.sink.x"}), flush=True)
    await asyncio.Event().wait()


# -- the client side --------------------------------------------------------------------


def expiry() -> datetime:
    t = datetime.now(UTC) + timedelta(seconds=120)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def build_bodies(target: str, ready: dict[str, Any], count: int) -> list[bytes]:
    if target == "connector":
        prepare = IlpPrepare(10, expiry(), CONDITION, ready["destination"], b"")
        return [encode_packet(prepare)] * count
    secret = bytes.fromhex(ready["secret"])
    return [
        encode_packet(
            build_chunk_prepare(
                ready["destination"],
                secret,
                amount=10,
                expires_at=expiry(),
                iv=os.urandom(12),
                payment_id=os.urandom(16),
                chunk_amount=10,
            )
        )
        for _ in range(count)
    ]


async def feed(url: str, bodies: list[bytes], concurrency: int, http2: bool) -> tuple[int, float]:
    """POST ``bodies[0]`` to open the connection, then every other body with
    ``concurrency`` in flight; (Fulfills among those, seconds)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    queue = iter(bodies[1:])
    fulfilled = 0

    async def worker(post: Any) -> None:
        nonlocal fulfilled
        for body in queue:
            if isinstance(decode_reply(await post(body)), IlpFulfill):
                fulfilled += 1

    if http2:
        async with httpx.AsyncClient(
            http1=False, http2=True, limits=httpx.Limits(max_connections=1), timeout=60
        ) as client:

            async def post2(body: bytes) -> bytes:
                return (await client.post(url, content=body, headers=headers)).content

            await post2(bodies[0])  # the connection is open before the window
            start = time.perf_counter()
            await asyncio.gather(*(worker(post2) for _ in range(concurrency)))
            return fulfilled, time.perf_counter() - start
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post1(body: bytes) -> bytes:
            async with session.post(url, data=body, headers=headers) as response:
                return await response.read()

        await post1(bodies[0])
        start = time.perf_counter()
        await asyncio.gather(*(worker(post1) for _ in range(concurrency)))
        return fulfilled, time.perf_counter() - start


def start_server(target: str, http2: bool) -> tuple[subprocess.Popen[str], dict[str, Any], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", target, "--port", str(port)]
        + (["--http2"] if http2 else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, ready, f"http://127.0.0.1:{port}/"


async def measure(target: str, http2: bool, count: int, concurrency: int) -> dict[str, float]:
    proc, ready, url = start_server(target, http2)
    try:
        bodies = build_bodies(target, ready, count + 1)
        ticks, client_cpu = cpu_ticks(proc.pid), time.process_time()
        fulfilled, seconds = await feed(url, bodies, concurrency, http2)
        server_ms = (cpu_ticks(proc.pid) - ticks) / TICK * 1000 / count
        client_ms = (time.process_time() - client_cpu) * 1000 / count
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "pps": count / seconds,
        "server_ms": server_ms,
        "client_ms": client_ms,
        "all_fulfilled": float(fulfilled == count),
    }


async def run(args: argparse.Namespace) -> None:
    cells = [(t, v) for t in ("receiver", "connector") for v in (False, True)]
    results: dict[tuple[str, bool], list[dict[str, float]]] = {c: [] for c in cells}
    for round_ in range(args.warmup_runs + args.runs):
        order = cells if round_ % 2 == 0 else cells[::-1]
        for target, http2 in order:
            result = await measure(target, http2, args.count, args.concurrency)
            if round_ >= args.warmup_runs:
                results[(target, http2)].append(result)
            print(
                f"# round {round_} {target} {'HTTP/2' if http2 else 'HTTP/1.1'}: "
                f"{result['pps']:.0f} packets/s, server {result['server_ms']:.3f} ms/packet",
                file=sys.stderr,
            )
    print(
        f"\n{args.count} Prepares per run, {args.concurrency} in flight, "
        f"medians of {args.runs} runs\n"
    )
    print(
        "| target | HTTP | packets/s | server CPU ms/packet | client CPU ms/packet "
        "| all fulfilled |"
    )
    print("|---|---|---|---|---|---|")
    for target, http2 in cells:
        rows = results[(target, http2)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"| {target} | {'2 (h2c, 1 connection)' if http2 else '1.1 (keep-alive pool)'} "
            f"| {med['pps']:.0f} | {med['server_ms']:.3f} | {med['client_ms']:.3f} "
            f"| {'yes' if all(r['all_fulfilled'] for r in rows) else 'NO'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup-runs", type=int, default=1)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--serve", choices=("receiver", "connector"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--http2", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "receiver":
        asyncio.run(serve_receiver(args.port, args.http2))
    elif args.serve == "connector":
        asyncio.run(serve_connector(args.port, args.http2))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
