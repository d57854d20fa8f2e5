"""How the bundled connector spreads an account's Prepares over its BTP connections:
least in flight against round robin (``BtpServerLink.spread``).

One process: our connector (BTP server accounts ``sender`` and ``shop``), a sending
client and N member clients of ``shop`` that each answer after a simulated service
time.  A scenario is a list of service times in ms, one per member, e.g. ``1,1,1,1``
(four equal workers) or ``1,1,1,20`` (one worker stuck on a slow store, GC or a busy
CPU).  The sender keeps ``--concurrency`` Prepares in flight for ``--seconds``; we
report packets/s and latency percentiles per policy, interleaved (A B A B ...).

    python bench/btp_spread.py --scenario 1,1,1,1 --scenario 1,1,1,20 --concurrency 50 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReply
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.links.btp_server import SPREADS, BtpServerLink

FULFILLMENT = bytes(32)
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def connector() -> Connector:
    accounts = {
        "sender": {"relation": "child", "transport": "btp-server", "token": "s", "listen": "0"},
        "shop": {"relation": "child", "transport": "btp-server", "token": "t", "listen": "0"},
    }
    config = config_from_mapping(
        {"connector": {"address": "test.b", "store": "memory:"}, "accounts": accounts}, env={}
    )
    return Connector(config)


def url(c: Connector, account: str, token: str) -> str:
    return "btp+" + c.listeners[account].replace("ws://", f"ws://:{token}@")


async def run(
    policy: str, service_ms: list[float], concurrency: int, seconds: float
) -> dict[str, Any]:
    async with connector() as c:
        link = c.accounts["shop"].link
        assert isinstance(link, BtpServerLink)
        link.spread = policy
        counts = [0] * len(service_ms)
        members = []
        for i, ms in enumerate(service_ms):
            member = BtpClientLink(url(c, "shop", "t"))

            async def handle(prepare: IlpPrepare, i: int = i, ms: float = ms) -> IlpReply:
                counts[i] += 1
                await asyncio.sleep(ms / 1000)
                return IlpFulfill(FULFILLMENT)

            member.set_handler(handle)
            await member.start()
            members.append(member)
        sender = BtpClientLink(url(c, "sender", "s"))
        await sender.start()
        latencies: list[float] = []
        stop_at = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop_at:
                expires = datetime.now(UTC) + timedelta(seconds=30)
                prepare = IlpPrepare(1, expires, CONDITION, "test.b.shop.x", b"")
                started = time.perf_counter()
                reply = await sender.send(prepare)
                assert isinstance(reply, IlpFulfill)
                latencies.append((time.perf_counter() - started) * 1000)

        t0 = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
        await sender.stop()
        for member in members:
            await member.stop()
    latencies.sort()
    return {
        "policy": policy,
        "service_ms": service_ms,
        "packets_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "share": [round(n / max(1, sum(counts)), 3) for n in counts],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", default=None)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scenarios = args.scenario or ["1,1,1,1", "1,1,1,20"]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for scenario in scenarios:
        service = [float(x) for x in scenario.split(",")]
        for _ in range(args.runs):
            for policy in SPREADS:
                result = asyncio.run(run(policy, service, args.concurrency, args.seconds))
                print(json.dumps(result), flush=True)
                results.setdefault((scenario, policy), []).append(result)
    print()
    print(
        "| members' service time (ms) | spread | packets/s (median) | p50 ms | p99 ms "
        "| share of packets |"
    )
    print("|---|---|---|---|---|---|")
    for (scenario, policy), rows in results.items():
        best = sorted(rows, key=lambda r: r["packets_per_s"])[len(rows) // 2]
        print(
            f"| {scenario} | {policy} | {statistics.median(r['packets_per_s'] for r in rows):.0f} "
            f"| {statistics.median(r['p50_ms'] for r in rows):.1f} "
            f"| {statistics.median(r['p99_ms'] for r in rows):.1f} | {best['share']} |"
        )


if __name__ == "__main__":
    main()
