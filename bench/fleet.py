"""Fleets under load (``docs/scaling.md``, results in ``docs/benchmarks.md#fleets``).

``matrix``: the issue's runs, ``--seconds`` each (default 20), the JS sender
(``sender.js bench``, PSK2, amount 100, no warm-up) at concurrency 5 and 50:

* gunicorn with 2 and 4 workers of a Flask app on one account of the bundled connector,
  store PostgreSQL and Redis;
* the same on the JS connector, each worker its own mini-account ``shop-<n>``
  (one sender per worker, the concurrency split between them);
* three ``ilp-receiver receive`` behind HAProxy on an ILP-over-HTTP uplink of the JS
  connector;
* two bundled connectors behind HAProxy (``shared_balances``, PostgreSQL), paid through
  by the JS sender over ILP over HTTP.

Each run reports fulfilled / rejected (by code), packets/s, and the three totals that
must agree: what the receivers' store gained, what the connector paid, what the sender
had delivered.

``scaling``: 1, 2 and 4 ``ilp-receiver receive`` processes on one account of the bundled
connector, PostgreSQL store, the JS sender at ``--concurrency`` (default 50): packets/s
and CPU milliseconds per packet of every process (receivers each, connector, sender,
PostgreSQL's backends), and the machine's CPU use (``/proc/stat``).

    python bench/fleet.py matrix --seconds 20
    python bench/fleet.py scaling --seconds 20 --runs 3

Needs the harness in ``.interop/`` (the interop tests install it), the local PostgreSQL
and Redis, and ``haproxy``.  Ports 27700-27799.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.fleet import (  # noqa: E402
    Bench,
    Fleet,
    admin,
    bench_result,
    connector_toml,
    drop_store,
    haproxy_config,
    js_bench,
    receive_cmd,
    shared_secret_file,
    start_connector,
    start_gunicorn,
    start_haproxy,
    store_balances,
    store_total,
    store_url,
    wait_haproxy_up,
)
from tests.interop.procs import http_json, js_connector  # noqa: E402

HARNESS = ROOT / ".interop"
TICK = os.sysconf("SC_CLK_TCK")
BTP_ACCOUNTS = """
[accounts.sender]
relation = "child"
transport = "btp-server"
token = "sender-token"
path = "/sender"
[accounts.shop]
relation = "child"
transport = "btp-server"
username = "shop"
token = "shop-token"
path = "/shop"
"""


# -- CPU accounting ----------------------------------------------------------------------------


def ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def processes(name: str) -> list[int]:
    """Pids whose command name is ``name``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# -- runs ----------------------------------------------------------------------------------------


@contextmanager
def fleet_dir() -> Iterator[tuple[Fleet, Path]]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        path = Path(tmp)
        fleet = Fleet(path)
        try:
            yield fleet, path
        finally:
            fleet.stop()


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.1)


def outcome(name: str, bench: Bench, stored: int, paid: int, **extra: Any) -> dict[str, Any]:
    return {
        "run": name,
        "fulfilled": bench.fulfilled,
        "rejected": bench.rejected,
        "reject_codes": bench.reject_codes,
        "packets_per_s": bench.packets_per_s,
        "p50_ms": bench.raw.get("latency_ms", {}).get("p50"),
        "p99_ms": bench.raw.get("latency_ms", {}).get("p99"),
        "store_delta": stored,
        "connector_paid": paid,
        "sender_delivered": bench.delivered,
        "exact": stored == paid == bench.delivered,
        **extra,
    }


def gunicorn_bundled(kind: str, workers: int, concurrency: int, seconds: float) -> dict[str, Any]:
    port, admin_port, web = 27700, 27701, 27702
    store = store_url(kind)
    try:
        with fleet_dir() as (fleet, tmp):
            start_connector(
                fleet,
                "connector",
                connector_toml(
                    address="test.fleet", port=port, admin_port=admin_port, accounts=BTP_ACCOUNTS
                ),
                tmp,
            )
            start_gunicorn(
                fleet,
                tmp,
                port=web,
                workers=workers,
                uplink=f"btp+ws://shop:shop-token@127.0.0.1:{port}/shop",
                store=store,
                secret=os.urandom(32).hex(),
            )
            wait_for(
                lambda: len(admin(admin_port, "accounts")["shop"].get("connections", [])) == workers
            )
            bench = js_bench(
                HARNESS,
                f"http://127.0.0.1:{web}/.well-known/pay",
                seconds=seconds,
                concurrency=concurrency,
                btp_url=f"btp+ws://:sender-token@127.0.0.1:{port}/sender",
            )
            assert isinstance(bench, Bench)
            paid = -int(admin(admin_port, "balances")["shop"]["balance"])
            live = admin(admin_port, "accounts")["shop"]["connections"]
            return outcome(
                f"gunicorn -w {workers}, bundled connector, {kind}, c={concurrency}",
                bench,
                store_total(store),
                paid,
                per_worker=[c["prepares_sent"] for c in live],
            )
    finally:
        drop_store(store)


def gunicorn_js(kind: str, workers: int, concurrency: int, seconds: float) -> dict[str, Any]:
    receivers, sender, admin_port, web = 27710, 27711, 27712, 27713
    store = store_url(kind)
    try:
        with fleet_dir() as (fleet, tmp):
            fleet.start(
                "js-connector",
                js_connector(
                    receivers, sender, "--admin-port", str(admin_port), "--max-runtime", "900"
                ),
                HARNESS,
            )
            start_gunicorn(
                fleet,
                tmp,
                port=web,
                workers=workers,
                uplink=f"btp+ws://shop:shop-token@127.0.0.1:{receivers}",
                store=store,
                secret=os.urandom(32).hex(),
                distinct=True,
            )
            time.sleep(1.0)
            # one sender after another, ``seconds / workers`` each, each paying the worker
            # its SPSP query reached (the JS connector's sender account keeps one BTP
            # connection: concurrent senders on it would replace each other)
            benches = []
            for _ in range(workers):
                run = js_bench(
                    HARNESS,
                    f"http://127.0.0.1:{web}/.well-known/pay",
                    seconds=seconds / workers,
                    concurrency=concurrency,
                    btp_url=f"btp+ws://:sender-token@127.0.0.1:{sender}",
                )
                assert isinstance(run, Bench)
                benches.append(run)
            balances = http_json(f"http://127.0.0.1:{admin_port}/balance")["accounts"]
            paid = -int(balances["receivers"]["balance"])
            total = Bench(
                fulfilled=sum(b.fulfilled for b in benches),
                rejected=sum(b.rejected for b in benches),
                reject_codes={
                    k: sum(b.reject_codes.get(k, 0) for b in benches)
                    for b in benches
                    for k in b.reject_codes
                },
                delivered=sum(b.delivered for b in benches),
                packets_per_s=round(statistics.mean(b.packets_per_s for b in benches), 1),
                raw={"latency_ms": benches[0].raw.get("latency_ms", {})},
            )
            names = sorted({b.raw["destination_account"].split(".")[3] for b in benches})
            return outcome(
                f"gunicorn -w {workers}, JS connector (names {', '.join(names)}), {kind}, "
                f"c={concurrency} ({workers} senders in turn)",
                total,
                store_total(store),
                paid,
            )
    finally:
        drop_store(store)


def haproxy_receivers(kind: str, concurrency: int, seconds: float) -> dict[str, Any]:
    sender, admin_port, connector_port = 27721, 27722, 27723
    ilp_front, spsp_front, stats = 27724, 27728, 27732
    ilp_ports, spsp_ports = [27725, 27726, 27727], [27729, 27730, 27731]
    store = store_url(kind)
    try:
        with fleet_dir() as (fleet, tmp):
            fleet.start(
                "js-connector",
                js_connector(
                    0,
                    sender,
                    "--admin-port",
                    str(admin_port),
                    "--max-runtime",
                    "900",
                    "--http-account",
                    f"shop,{connector_port},http://127.0.0.1:{ilp_front}/,shop-token",
                ),
                HARNESS,
            )
            secret = shared_secret_file(tmp)
            for i, (ilp, spsp) in enumerate(zip(ilp_ports, spsp_ports, strict=True)):
                uplink = f"http+oer://shop-token@127.0.0.1:{connector_port}/?listen=127.0.0.1:{ilp}"
                fleet.start(f"receiver{i}", receive_cmd(uplink, spsp, store, secret), tmp)
            config = haproxy_config(
                {ilp_front: (ilp_ports, "/"), spsp_front: (spsp_ports, "/health")}, stats
            )
            start_haproxy(fleet, config, [ilp_front, spsp_front, stats])
            wait_haproxy_up(stats, 6)
            bench = js_bench(
                HARNESS,
                f"http://127.0.0.1:{spsp_front}/.well-known/pay",
                seconds=seconds,
                concurrency=concurrency,
                btp_url=f"btp+ws://:sender-token@127.0.0.1:{sender}",
            )
            assert isinstance(bench, Bench)
            balances = http_json(f"http://127.0.0.1:{admin_port}/balance")["accounts"]
            return outcome(
                f"3 receivers behind HAProxy, ILP over HTTP (JS connector), {kind}, "
                f"c={concurrency}",
                bench,
                store_total(store),
                -int(balances["shop"]["balance"]),
            )
    finally:
        drop_store(store)


def haproxy_connectors(concurrency: int, seconds: float) -> dict[str, Any]:
    a, a_admin, b, b_admin = 27740, 27741, 27742, 27743
    front, stats, receiver_ilp, receiver_spsp, sender_listen = 27744, 27745, 27746, 27747, 27748
    connector_store, receiver_store = store_url("postgres"), store_url("postgres")
    accounts = f"""
    [accounts.sender]
    relation = "child"
    transport = "http"
    url = "http://127.0.0.1:{sender_listen}/"
    token = "sender-token"
    path = "/sender/"
    max_balance = 1000000000000
    [accounts.shop]
    relation = "child"
    transport = "http"
    url = "http://127.0.0.1:{receiver_ilp}/"
    token = "shop-token"
    path = "/shop/"
    min_balance = -1000000000000
    """
    try:
        with fleet_dir() as (fleet, tmp):
            for name, port, admin_port in (("a", a, a_admin), ("b", b, b_admin)):
                toml = connector_toml(
                    address="test.fleet",
                    port=port,
                    admin_port=admin_port,
                    store=connector_store,
                    shared=True,
                    accounts=accounts,
                )
                start_connector(fleet, f"connector-{name}", toml, tmp)
            start_haproxy(fleet, haproxy_config({front: ([a, b], "/sender/")}, stats), [front])
            wait_haproxy_up(stats, 2)
            uplink = (
                f"http+oer://shop-token@127.0.0.1:{front}/shop/?listen=127.0.0.1:{receiver_ilp}"
            )
            fleet.start(
                "receiver",
                receive_cmd(uplink, receiver_spsp, receiver_store, shared_secret_file(tmp)),
                tmp,
            )
            bench = js_bench(
                HARNESS,
                f"http://127.0.0.1:{receiver_spsp}/.well-known/pay",
                seconds=seconds,
                concurrency=concurrency,
                http=(sender_listen, f"http://127.0.0.1:{front}/sender/", "sender-token"),
            )
            assert isinstance(bench, Bench)
            stored = store_balances(connector_store)
            return outcome(
                f"2 connectors behind HAProxy (shared_balances, postgres), c={concurrency}",
                bench,
                store_total(receiver_store),
                -stored.get("shop", 0),
                connector_store=stored,
            )
    finally:
        drop_store(connector_store)
        drop_store(receiver_store)


def matrix(seconds: float) -> list[dict[str, Any]]:
    results = []
    plan: list[Callable[[], dict[str, Any]]] = []
    for kind in ("postgres", "redis"):
        for workers in (2, 4):
            for c in (5, 50):
                plan.append(functools.partial(gunicorn_bundled, kind, workers, c, seconds))
    for kind in ("postgres", "redis"):
        for workers in (2, 4):
            for c in (5, 50):
                plan.append(functools.partial(gunicorn_js, kind, workers, c, seconds))
    for kind in ("postgres", "redis"):
        for c in (5, 50):
            plan.append(functools.partial(haproxy_receivers, kind, c, seconds))
    for c in (5, 50):
        plan.append(functools.partial(haproxy_connectors, c, seconds))
    for run in plan:
        result = run()
        print(json.dumps(result), flush=True)
        results.append(result)
    print()
    print("| run | fulfilled | rejected | packets/s | store delta = paid = delivered |")
    print("|---|---|---|---|---|")
    for r in results:
        rejected = (
            r["rejected"] if not r["reject_codes"] else f"{r['rejected']} {r['reject_codes']}"
        )
        same = (
            f"{r['store_delta']:,}"
            if r["exact"]
            else (f"NO: {r['store_delta']:,} / {r['connector_paid']:,} / {r['sender_delivered']:,}")
        )
        print(
            f"| {r['run']} | {r['fulfilled']:,} | {rejected} | {r['packets_per_s']:.0f} | {same} |"
        )
    return results


# -- scaling -------------------------------------------------------------------------------------


def scaling_run(members: int, concurrency: int, seconds: float) -> dict[str, Any]:
    port, admin_port = 27760, 27761
    spsp_ports = [27762 + i for i in range(members)]
    store = store_url("postgres")
    try:
        with fleet_dir() as (fleet, tmp):
            connector = fleet.start(
                "connector",
                [
                    str(Path(sys.executable).parent / "ilp-receiver"),
                    "connector",
                    "--config",
                    str(
                        _write(
                            tmp / "c.toml",
                            connector_toml(
                                address="test.fleet",
                                port=port,
                                admin_port=admin_port,
                                accounts=BTP_ACCOUNTS,
                            ),
                        )
                    ),
                ],
                tmp,
            )
            secret = shared_secret_file(tmp)
            uplink = f"btp+ws://shop:shop-token@127.0.0.1:{port}/shop"
            receivers = [
                fleet.start(f"r{i}", receive_cmd(uplink, p, store, secret), tmp)
                for i, p in enumerate(spsp_ports)
            ]
            wait_for(
                lambda: len(admin(admin_port, "accounts")["shop"].get("connections", [])) == members
            )
            load = js_bench(
                HARNESS,
                f"http://127.0.0.1:{spsp_ports[0]}/.well-known/pay",
                seconds=seconds + 2,
                concurrency=concurrency,
                btp_url=f"btp+ws://:sender-token@127.0.0.1:{port}/sender",
                background=True,
            )
            assert isinstance(load, subprocess.Popen)
            time.sleep(2.0)  # SPSP query and the load ramping up: not measured
            sent0 = sum(
                c["prepares_sent"] for c in admin(admin_port, "accounts")["shop"]["connections"]
            )
            pids = {
                "receivers": [r.popen.pid for r in receivers],
                "connector": [connector.popen.pid],
                "sender": [load.pid],
                "postgres": processes("postgres"),
            }
            before = {k: [ticks(p) for p in v] for k, v in pids.items()}
            busy0, total0 = machine_busy()
            t0 = time.monotonic()
            time.sleep(seconds - 1)
            elapsed = time.monotonic() - t0
            sent1 = sum(
                c["prepares_sent"] for c in admin(admin_port, "accounts")["shop"]["connections"]
            )
            after = {k: [ticks(p) for p in v] for k, v in pids.items()}
            busy1, total1 = machine_busy()
            out, _ = load.communicate(timeout=seconds + 180)
            bench = bench_result(out)
            packets = sent1 - sent0
            cpu = {
                k: [
                    round((a - b) * 1000 / TICK / max(1, packets), 3)
                    for a, b in zip(after[k], before[k], strict=True)
                ]
                for k in pids
            }
            return {
                "members": members,
                "concurrency": concurrency,
                "packets_per_s": round(packets / elapsed, 1),
                "cpu_ms_per_packet": {
                    "each_receiver": cpu["receivers"],
                    "receivers": round(sum(cpu["receivers"]), 3),
                    "connector": cpu["connector"][0],
                    "sender": cpu["sender"][0],
                    "postgres": round(sum(cpu["postgres"]), 3),
                },
                "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
                "cpus": os.cpu_count(),
                "rejected": bench.rejected,
                "exact": store_total(store)
                == -int(admin(admin_port, "balances")["shop"]["balance"])
                == bench.delivered,
            }
    finally:
        drop_store(store)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def scaling(seconds: float, runs: int, concurrency: int, members: list[int]) -> None:
    results: dict[int, list[dict[str, Any]]] = {}
    for _ in range(runs):
        for n in members:
            result = scaling_run(n, concurrency, seconds)
            print(json.dumps(result), flush=True)
            results.setdefault(n, []).append(result)
    print()
    print(
        "| receivers | packets/s (median, runs) | CPU ms/packet: each receiver | receivers | "
        "connector | sender | PostgreSQL | machine CPU busy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, rows in results.items():
        mid = sorted(rows, key=lambda r: r["packets_per_s"])[len(rows) // 2]
        c = mid["cpu_ms_per_packet"]
        pps = ", ".join(f"{r['packets_per_s']:.0f}" for r in rows)
        print(
            f"| {n} | {statistics.median(r['packets_per_s'] for r in rows):.0f} ({pps}) "
            f"| {', '.join(f'{x:.3f}' for x in c['each_receiver'])} | {c['receivers']:.3f} "
            f"| {c['connector']:.3f} | {c['sender']:.3f} | {c['postgres']:.3f} "
            f"| {mid['machine_cpu_busy'] * 100:.0f} % of {mid['cpus']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("matrix")
    m.add_argument("--seconds", type=float, default=20.0)
    s = sub.add_parser("scaling")
    s.add_argument("--seconds", type=float, default=20.0)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--concurrency", type=int, default=50)
    s.add_argument("--members", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.what == "matrix":
        matrix(args.seconds)
    else:
        scaling(args.seconds, args.runs, args.concurrency, args.members)


if __name__ == "__main__":
    main()
