"""The paywall's added cost per paid request, per framework, against the same route unpaid.

    .venv/bin/python bench/paywall.py [--n 5000] [--store memory,sqlite]
                                      [--write docs/benchmarks.md]

For each adapter (Starlette, aiohttp, Flask) one app serves ``/free`` and ``/paid`` (the
same handler, the second behind ``paid(1)``).  Requests go straight into the framework
(an ASGI call, a WSGI call) so that HTTP parsing and sockets do not drown the
difference -- except aiohttp, which has no public in-process entry point: it is driven
over loopback HTTP with a keep-alive client, so its unpaid time includes the HTTP
round trip.  Every paid request carries a
Pay-Token with a large balance, so it takes the full 200 path: parse the token, debit
the store atomically, issue a fresh destination and secret, format ``Pay`` and
``Pay-Balance``.  Batches of free and paid requests alternate; the reported numbers
are the medians of the batch means, in process CPU time (all threads: the event loop,
the Flask portal thread, aiohttp's client and server) -- the cost a request puts on
the machine, steadier than wall time on a shared box -- and in wall time.  Flask decides
on the request thread (``Paywall.check_blocking``: the store's blocking debit), with no
round trip to the portal's event-loop thread.  ``--only flask,core`` runs a subset.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "integrations")]

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from flask import Flask  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from ilp_receiver.codec.pay_header import format_pay_token  # noqa: E402
from ilp_receiver.paywall import token_account  # noqa: E402
from ilp_receiver.portal import BlockingPortal  # noqa: E402
from ilp_receiver.receiver import AsyncReceiver, Receiver  # noqa: E402
from ilp_receiver.testing import InMemoryNetwork  # noqa: E402

TOKEN = bytes(range(16))
HEADERS = {"Pay-Token": format_pay_token(TOKEN)}
FUNDS = 10**15
BATCH = 250

Runner = Callable[[str, int], Awaitable[None]]
#: (unpaid, paid) per-request CPU µs, then (unpaid, paid) wall µs.
Result = tuple[float, float, float, float]


async def measure(run: Runner, n: int) -> Result:
    """Median batch means (µs/request, CPU and wall) for ``/free`` and ``/paid``."""
    await run("/free", 200)
    await run("/paid", 200)
    samples: dict[str, tuple[list[float], list[float]]] = {"/free": ([], []), "/paid": ([], [])}
    for _ in range(max(1, n // BATCH)):
        for path, (cpu, wall) in samples.items():
            c, w = time.process_time(), time.perf_counter()
            await run(path, BATCH)
            cpu.append((time.process_time() - c) / BATCH * 1e6)
            wall.append((time.perf_counter() - w) / BATCH * 1e6)
    med = statistics.median
    free, paid = samples["/free"], samples["/paid"]
    return med(free[0]), med(paid[0]), med(free[1]), med(paid[1])


def store_url(kind: str, tmp: str, name: str) -> str | None:
    return None if kind == "memory" else os.path.join(tmp, f"{name}.db")


# ---------------------------------------------------------------------------------------


async def bench_core(n: int, store: str | None) -> Result:
    """``Paywall.check`` alone (the "unpaid" column is an empty coroutine call)."""
    from ilp_receiver.paywall import Paywall, RequestFacts

    network = InMemoryNetwork("test.bench")
    rx = AsyncReceiver(await network.add_child("core"), store=store)
    await rx.start()
    await rx.store.credit(token_account(TOKEN), FUNDS)
    wall = Paywall(rx)
    facts = RequestFacts.from_pairs("GET", "/paid", HEADERS.items())

    async def nothing() -> None:
        return None

    async def run(path: str, count: int) -> None:
        if path == "/free":
            for _ in range(count):
                await nothing()
        else:
            for _ in range(count):
                decision = await wall.check(facts, 1)
                assert decision.serve

    try:
        return await measure(run, n)
    finally:
        await rx.stop()


async def bench_starlette(n: int, store: str | None) -> Result:
    from ilp_receiver_starlette import IlpReceiverMiddleware, paid

    network = InMemoryNetwork("test.bench")
    rx = AsyncReceiver(await network.add_child("starlette"), store=store)

    async def handler(request: Request) -> Response:
        return PlainTextResponse("content")

    app = Starlette(
        routes=[Route("/free", handler), Route("/paid", paid(1)(handler))],
        middleware=[Middleware(IlpReceiverMiddleware, receiver=rx)],
    )
    await rx.start()
    await rx.store.credit(token_account(TOKEN), FUNDS)
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    status: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def run(path: str, count: int) -> None:
        status.clear()
        for _ in range(count):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": list(raw_headers),
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            await app(scope, receive, send)
        assert set(status) == {200}, status[:3]

    try:
        return await measure(run, n)
    finally:
        await rx.stop()


async def bench_aiohttp(n: int, store: str | None) -> Result:
    from ilp_receiver_aiohttp import paid, setup

    network = InMemoryNetwork("test.bench")
    rx = AsyncReceiver(await network.add_child("aiohttp"), store=store)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="content")

    app = web.Application()
    app.router.add_get("/free", handler)
    app.router.add_get("/paid", paid(1)(handler))
    setup(app, rx)
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    await rx.store.credit(token_account(TOKEN), FUNDS)

    async def run(path: str, count: int) -> None:
        for _ in range(count):
            async with client.get(path, headers=HEADERS) as response:
                await response.read()
                assert response.status == 200

    try:
        return await measure(run, n)
    finally:
        await client.close()


async def bench_flask(n: int, store: str | None) -> Result:
    from ilp_receiver_flask import IlpReceiver, get_service, paid

    portal = BlockingPortal("bench-flask")
    network = InMemoryNetwork("test.bench")
    link = portal.call(network.add_child, "flask")
    rx = Receiver(link, portal=portal, store=store)
    app = Flask(__name__)
    IlpReceiver(app, receiver=rx)

    def handler() -> str:
        return "content"

    app.add_url_rule("/free", "free", handler)
    app.add_url_rule("/paid", "paid", paid(1)(handler))
    service = get_service(app)
    service.start()
    portal.call(service.receiver.async_receiver.store.credit, token_account(TOKEN), FUNDS)
    wsgi = app.wsgi_app
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    async def run(path: str, count: int) -> None:
        statuses.clear()
        for _ in range(count):
            environ = EnvironBuilder(path=path, headers=list(HEADERS.items())).get_environ()
            for _chunk in wsgi(environ, start_response):
                pass
        assert set(statuses) == {"200 OK"}, statuses[:3]

    try:
        return await measure(run, n)
    finally:
        service.stop()
        portal.stop()


def portal_hop(n: int = 3000) -> tuple[float, float]:
    """CPU and wall µs of one ``BlockingPortal.call`` of an empty coroutine."""
    portal = BlockingPortal("bench-hop")

    async def nothing() -> None:
        return None

    for _ in range(200):
        portal.call(nothing)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        portal.call(nothing)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    portal.stop()
    return cpu / n * 1e6, wall / n * 1e6


# ---------------------------------------------------------------------------------------


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the ``## Paywall`` section of ``path``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Paywall\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="requests per route")
    parser.add_argument("--store", default="memory", help="memory,sqlite")
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    parser.add_argument(
        "--only", default="", help="comma-separated frameworks to run (default: all)"
    )
    args = parser.parse_args()
    rows = []
    benches = {
        "core": bench_core,
        "Starlette": bench_starlette,
        "aiohttp": bench_aiohttp,
        "Flask": bench_flask,
    }
    with tempfile.TemporaryDirectory() as tmp:
        only = {name.lower() for name in args.only.split(",") if name}
        for kind in args.store.split(","):
            for name, bench in benches.items():
                if only and name.lower() not in only:
                    continue
                result = await bench(args.n, store_url(kind, tmp, name))
                rows.append((name, kind, *result))
                free, paid, free_wall, paid_wall = result
                print(
                    f"{name:<10} {kind:<7} CPU unpaid {free:7.1f} µs  paid {paid:7.1f} µs"
                    f"  paywall {paid - free:+7.1f} µs | wall {free_wall:7.1f} -> "
                    f"{paid_wall:7.1f} µs ({paid_wall - free_wall:+.1f})",
                    flush=True,
                )
    hop_cpu, hop_wall = portal_hop()
    print(f"portal round trip (empty coroutine): CPU {hop_cpu:.1f} µs, wall {hop_wall:.1f} µs")
    if args.write:
        command = "python bench/paywall.py " + " ".join(sys.argv[1:])
        lines = [
            "## Paywall",
            "",
            "Added cost of the HTTP-ILP paywall per paid request (token with a balance,",
            "full 200 path: parse `Pay-Token`, atomic debit, fresh destination and secret,",
            "`Pay` + `Pay-Balance`), against the same route unpaid, requests fed straight",
            "into each framework. Target: < 200 µs. Medians of 250-request batch means.",
            "",
            f"Command: `{command.strip()}`  ",
            f"Machine: {platform.machine()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} at the end of the run",
            "",
            "| framework | store | CPU unpaid | CPU paid | paywall CPU | wall unpaid | wall paid |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r[0]} | {r[1]} | {r[2]:.0f} µs | {r[3]:.0f} µs | **{r[3] - r[2]:+.0f} µs** "
            f"| {r[4]:.0f} µs | {r[5]:.0f} µs |"
            for r in rows
        ]
        lines += [
            "",
            "Reading it: the paywall itself (`core`) costs a few tens of µs; each",
            "framework adds its own plumbing for the wrapper and the extra headers; an",
            "SQLite row adds one committed write transaction per debit (`BEGIN IMMEDIATE`,",
            "a point `SELECT`, an upsert, `COMMIT` in WAL mode), committed at once on the",
            "calling thread: `SqliteStore.try_debit` on the event loop when nothing else",
            "waits for the loop iteration's group commit, `add_blocking` on Flask's",
            "request thread.",
            "",
            "`core` is `Paywall.check` alone, no framework (its unpaid column is an empty",
            "coroutine call): token parsing (~5 µs), the account hash (~3 µs), the debit",
            "(in memory ~4 µs) and a fresh destination/secret + `Pay` header (~17 µs).",
            "The rest of each framework's figure is its own plumbing for the wrapper and",
            "the extra headers. aiohttp is measured over loopback HTTP (no public",
            "in-process entry point), so its row includes writing and parsing the",
            "~200-byte `Pay` header on both ends. Flask decides on the request thread",
            "(`Paywall.check_blocking`: `Pay` is pure computation, the debit is the",
            "store's blocking `add_blocking`, under a lock for memory, a `BEGIN IMMEDIATE`",
            "transaction for SQLite), so it no longer pays the round trip to the",
            "background event-loop thread (an empty coroutine through the portal costs",
            f"{hop_cpu:.0f} µs CPU / {hop_wall:.0f} µs wall on this box); Redis and",
            "PostgreSQL stores still take that round trip.",
            "",
        ]
        write_section(args.write, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
