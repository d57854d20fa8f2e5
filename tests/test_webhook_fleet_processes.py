"""Two ``ilp-receiver webhooks run`` processes (the CLI, two OS processes) on one
PostgreSQL store with many pending events and one endpoint: in a normal run every event
is delivered, none twice, and both dispatchers take part (the endpoint holds its
answers until both have requests in flight; their admin API's ``delivered`` counters
add up to the number of events)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from ilp_receiver.links.listener import ServerLimits, start_listener
from ilp_receiver.stores.outbox import OutboxEntry
from ilp_receiver.webhooks import generate_ed25519_key
from tests.test_stores import _cleanup_postgres, postgres_url

BIN = Path(sys.executable).parent
TOKEN = "admin-" + "t" * 26
EVENTS = 600
# more accounts than one claim takes (64): a claim takes each account's head, so the
# second dispatcher finds accounts the first does not hold
ACCOUNTS = 200
CONCURRENCY = 4  # requests in flight per dispatcher and endpoint


class CountingEndpoint:
    """Counts POSTs per ``webhook-id``; holds its answers until ``gate`` is set
    (``in_flight``: the requests waiting, per dispatcher -- each posts to
    ``/hook/<its name>``)."""

    def __init__(self) -> None:
        self.by_id: Counter[str] = Counter()
        self.url = ""
        self.gate = asyncio.Event()
        self.in_flight: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        name = request.match_info["name"]
        self.by_id[request.headers["webhook-id"]] += 1
        self.in_flight[name] += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight[name] -= 1
        return web.Response(status=204)

    async def __aenter__(self) -> CountingEndpoint:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = await start_listener(self._runner, "127.0.0.1", 0, ServerLimits())
        self.url = f"http://127.0.0.1:{listener.port}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.gate.set()  # never leave a held request behind (the cleanup would wait)
        if self._runner is not None:
            await self._runner.cleanup()


async def _ready(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    while line := await asyncio.wait_for(proc.stdout.readline(), 60):
        if line.startswith(b"{"):
            event: dict[str, object] = json.loads(line)
            if event.get("event") == "ready":
                return event
    raise AssertionError("the dispatcher exited before it was ready")


async def _delivered_total(admin: str) -> int:
    """``ilp_receiver_webhook_delivered_total`` from a dispatcher's admin API."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(admin + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as reply,
    ):
        assert reply.status == 200
        text = await reply.text()
    found = re.search(r"^ilp_receiver_webhook_delivered_total (\d+)$", text, re.M)
    assert found is not None, text
    return int(found.group(1))


async def test_two_dispatcher_processes_on_postgres_deliver_each_event_once(
    tmp_path: Path,
) -> None:
    pg, reason = await postgres_url()
    if pg is None:
        pytest.skip(reason)
    from ilp_receiver.stores.postgres import PostgresStore

    prefix = f"test_{uuid.uuid4().hex[:12]}_"
    secret, _ = generate_ed25519_key()
    ids: list[str] = []
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with PostgresStore(pg, prefix=prefix) as store:
            entries = []
            for n in range(EVENTS):
                entry = OutboxEntry("payment.received", f"acct{n % ACCOUNTS}", n + 1, {"n": n})
                entries.append(entry)
                ids.append(entry.event_id)
            for start in range(0, EVENTS, 100):
                await store.outbox_write(entries[start : start + 100])
            assert await store.outbox_counts() == {"pending": EVENTS, "dead": 0}

            async with CountingEndpoint() as endpoint:
                env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}
                env.update(ILP_RECEIVER_WEBHOOK_KEY=secret, ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN=TOKEN)
                for name in ("one", "two"):
                    with (tmp_path / f"{name}.log").open("w") as log:
                        procs.append(
                            await asyncio.create_subprocess_exec(
                                str(BIN / "ilp-receiver"),
                                "webhooks",
                                "run",
                                "--store",
                                f"{pg}?prefix={prefix}",
                                "--url",
                                f"{endpoint.url}/{name}",
                                "--timeout",
                                "60",  # held answers are no timeouts (no retries)
                                "--concurrency",
                                str(CONCURRENCY),
                                "--admin-port",
                                "0",
                                env=env,
                                stdout=asyncio.subprocess.PIPE,
                                stderr=log,
                            )
                        )
                admins = [str((await _ready(proc))["admin"]) for proc in procs]
                # hold every answer until both processes have a request in flight: both
                # then hold claims at the same time (at most a minute)
                for _ in range(6000):
                    if min(endpoint.in_flight[name] for name in ("one", "two")) > 0:
                        break
                    await asyncio.sleep(0.01)
                held = dict(endpoint.in_flight)
                endpoint.gate.set()
                assert min(held.get(name, 0) for name in ("one", "two")) > 0, held
                for _ in range(6000):  # at most a minute
                    if len(endpoint.by_id) >= EVENTS and (
                        await store.outbox_counts() == {"pending": 0, "dead": 0}
                    ):
                        break
                    await asyncio.sleep(0.01)
                delivered = [await _delivered_total(admin) for admin in admins]
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    assert await asyncio.wait_for(proc.wait(), 30) == 0
            assert sorted(endpoint.by_id) == sorted(ids)  # all delivered
            assert max(endpoint.by_id.values()) == 1  # none twice
            assert sum(delivered) == EVENTS
            assert min(delivered) > 0, delivered  # two processes took part
            assert await store.outbox_counts() == {"pending": 0, "dead": 0}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await _cleanup_postgres(pg, prefix)
