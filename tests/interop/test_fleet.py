"""Fleets: many receivers (and connectors) on one account, no money credited that was
never paid (``docs/scaling.md``).  Short loads (a few seconds); ``bench/fleet.py`` runs
the same topologies for 20 s at concurrency 5 and 50 (``docs/benchmarks.md``).

(a) gunicorn workers of a Flask app on one account of the bundled connector (several
    live BTP connections per account), PostgreSQL and Redis, the JS sender at
    concurrency 5 and 50: no T01, store delta == connector's paid total == delivered.
(b) The same on the JS connector, whose mini-accounts keep one connection per name:
    each worker connects as ``shop-<slot>`` (:func:`ilp_receiver.workers.worker_uplink`).
(c) Three ``ilp-receiver receive`` behind HAProxy on an ILP-over-HTTP uplink of the JS
    connector: any member fulfils any packet.
(d) Two of our connectors behind HAProxy, balances (and limits) in one PostgreSQL
    store, paid through by the JS sender over ILP over HTTP.
(e) kill -9 of one member of four mid-load: the others keep fulfilling; the store holds
    what was paid plus at most the killed member's packets in flight.

Ports 26700-26799.  HAProxy comes from the system (CI installs it like chromium); the
tests that need it are skipped, saying so, only when it cannot be installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fleet import (
    Bench,
    Fleet,
    admin,
    bench_result,
    connector_toml,
    drop_store,
    haproxy_binary,
    haproxy_config,
    haproxy_served,
    js_bench,
    receive_cmd,
    shared_secret_file,
    start_connector,
    start_gunicorn,
    start_haproxy,
    store_balances,
    store_total,
    store_unavailable,
    store_url,
    wait_haproxy_up,
)
from .procs import http_json, js_connector

pytestmark = pytest.mark.interop

SECONDS = 4.0  # load per run (bench/fleet.py: 20 s)

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


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    group = Fleet(tmp_path)
    try:
        yield group
    finally:
        group.stop()


def shared_store(kind: str) -> str:
    reason = store_unavailable(kind)
    if reason:
        pytest.skip(reason)
    return store_url(kind)


def need_haproxy() -> None:
    if haproxy_binary() is None:
        pytest.skip("HAProxy is not installed (apt-get install haproxy; .ci/run does)")


def wait_for(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def connections(admin_port: int, account: str) -> list[dict[str, Any]]:
    info: list[dict[str, Any]] = admin(admin_port, "accounts")[account].get("connections", [])
    return info


def report(test: str, **numbers: object) -> None:
    """One JSON line of what a test measured (``pytest -s`` shows them)."""
    print(json.dumps({"test": test, **numbers}, default=str))


def assert_exact(bench: Bench, paid: int, stored: int) -> None:
    assert bench.rejected == 0, (bench.reject_codes, bench.raw.get("error_samples"))
    assert bench.fulfilled > 50, bench.raw
    assert stored == paid == bench.delivered, (stored, paid, bench.delivered)


# -- (a) gunicorn workers on one account of the bundled connector -------------------------------


@pytest.mark.parametrize(
    ("kind", "workers", "concurrency"),
    [("postgres", 2, 5), ("redis", 4, 50)],
    ids=["postgres-2w-c5", "redis-4w-c50"],
)
def test_gunicorn_workers_share_one_account_of_the_bundled_connector(
    harness: Path, fleet: Fleet, tmp_path: Path, kind: str, workers: int, concurrency: int
) -> None:
    port, admin_port, web = 26700, 26701, 26702
    store = shared_store(kind)
    try:
        start_connector(
            fleet,
            "connector",
            connector_toml(
                address="test.fleet", port=port, admin_port=admin_port, accounts=BTP_ACCOUNTS
            ),
            tmp_path,
        )
        start_gunicorn(
            fleet,
            tmp_path,
            port=web,
            workers=workers,
            uplink=f"btp+ws://shop:shop-token@127.0.0.1:{port}/shop",
            store=store,
            secret=os.urandom(32).hex(),
        )
        # every worker's connection joins the one account (none replaces another)
        wait_for(lambda: len(connections(admin_port, "shop")) == workers, "the workers")
        bench = js_bench(
            harness,
            f"http://127.0.0.1:{web}/.well-known/pay",
            seconds=SECONDS,
            concurrency=concurrency,
            btp_url=f"btp+ws://:sender-token@127.0.0.1:{port}/sender",
        )
        assert isinstance(bench, Bench)
        paid = -int(admin(admin_port, "balances")["shop"]["balance"])
        stored = store_total(store)
        live = connections(admin_port, "shop")
        report(
            "gunicorn-bundled",
            kind=kind,
            workers=workers,
            concurrency=concurrency,
            fulfilled=bench.fulfilled,
            rejected=bench.reject_codes,
            packets_per_s=bench.packets_per_s,
            delivered=bench.delivered,
            paid=paid,
            stored=stored,
            per_connection=[c["prepares_sent"] for c in live],
        )
        assert_exact(bench, paid, stored)
        assert len(live) == workers  # still the same connections: nothing was replaced
        assert all(c["prepares_sent"] > 0 for c in live), live  # every worker took a share
        assert admin(admin_port, "accounts")["shop"]["connected"]
    finally:
        fleet.stop()
        drop_store(store)


# -- (b) the JS connector: one name per worker ---------------------------------------------------


def test_gunicorn_workers_with_distinct_names_on_the_js_connector(
    harness: Path, fleet: Fleet, tmp_path: Path
) -> None:
    receivers, sender, admin_port, web = 26710, 26711, 26712, 26713
    store = shared_store("postgres")
    try:
        fleet.start(
            "js-connector",
            js_connector(
                receivers, sender, "--admin-port", str(admin_port), "--max-runtime", "300"
            ),
            harness,
        )
        start_gunicorn(
            fleet,
            tmp_path,
            port=web,
            workers=2,
            uplink=f"btp+ws://shop:shop-token@127.0.0.1:{receivers}",
            store=store,
            secret=os.urandom(32).hex(),
            distinct=True,
        )
        # each worker is its own child of the JS connector: shop-0 and shop-1
        names: set[str] = set()

        def both_names() -> bool:
            body = http_json(
                f"http://127.0.0.1:{web}/.well-known/pay", {"Accept": "application/spsp+json"}
            )
            names.add(body["destination_account"].split(".")[3])
            return len(names) == 2

        wait_for(both_names, "SPSP answers from both workers")
        assert names == {"shop-0", "shop-1"}
        # Two senders one after the other, each paying the worker its SPSP query reached
        # (the JS connector's sender account is an ilp-plugin-btp server: it keeps one
        # connection, a second sender at once would replace the first)
        results: list[Bench] = []
        for _ in range(2):
            run = js_bench(
                harness,
                f"http://127.0.0.1:{web}/.well-known/pay",
                seconds=SECONDS / 2,
                concurrency=5,
                btp_url=f"btp+ws://:sender-token@127.0.0.1:{sender}",
            )
            assert isinstance(run, Bench)
            results.append(run)
        paid = -int(
            http_json(f"http://127.0.0.1:{admin_port}/balance")["accounts"]["receivers"]["balance"]
        )
        delivered = sum(b.delivered for b in results)
        stored = store_total(store)
        report(
            "gunicorn-js-distinct",
            runs=[
                {k: b.raw.get(k) for k in ("fulfilled", "rejected", "destination_account")}
                for b in results
            ],
            paid=paid,
            stored=stored,
        )
        assert all(b.rejected == 0 and not b.raw["errors"] for b in results), [
            b.raw for b in results
        ]
        assert stored == paid == delivered > 0
    finally:
        fleet.stop()
        drop_store(store)


# -- (c) receivers behind HAProxy on ILP over HTTP ------------------------------------------------


def test_three_receivers_behind_haproxy_on_an_ilp_over_http_uplink(
    harness: Path, fleet: Fleet, tmp_path: Path
) -> None:
    need_haproxy()
    sender, admin_port, connector_port = 26721, 26722, 26723
    ilp_front, spsp_front, stats = 26724, 26728, 26732
    ilp_ports, spsp_ports = [26725, 26726, 26727], [26729, 26730, 26731]
    store = shared_store("redis")
    try:
        fleet.start(
            "js-connector",
            js_connector(
                0,
                sender,
                "--admin-port",
                str(admin_port),
                "--max-runtime",
                "300",
                "--http-account",
                f"shop,{connector_port},http://127.0.0.1:{ilp_front}/,shop-token",
            ),
            harness,
        )
        secret = shared_secret_file(tmp_path)
        for i, (ilp, spsp) in enumerate(zip(ilp_ports, spsp_ports, strict=True)):
            uplink = f"http+oer://shop-token@127.0.0.1:{connector_port}/?listen=127.0.0.1:{ilp}"
            ready = fleet.start(
                f"receiver{i}", receive_cmd(uplink, spsp, store, secret), tmp_path
            ).wait_event("ready")
            assert ready["ilp_address"] == "test.harness.shop"  # one account for all
        start_haproxy(
            fleet,
            haproxy_config(
                {ilp_front: (ilp_ports, "/"), spsp_front: (spsp_ports, "/health")}, stats
            ),
            [ilp_front, spsp_front, stats],
        )
        wait_haproxy_up(stats, 6)
        bench = js_bench(
            harness,
            f"http://127.0.0.1:{spsp_front}/.well-known/pay",
            seconds=SECONDS,
            concurrency=50,
            btp_url=f"btp+ws://:sender-token@127.0.0.1:{sender}",
        )
        assert isinstance(bench, Bench)
        balances = http_json(f"http://127.0.0.1:{admin_port}/balance")["accounts"]
        paid, stored = -int(balances["shop"]["balance"]), store_total(store)
        served = haproxy_served(stats)
        ilp_served = [served.get(f"b{ilp_front}/m{p}", 0) for p in ilp_ports]
        report(
            "haproxy-receivers",
            fulfilled=bench.fulfilled,
            rejected=bench.reject_codes,
            packets_per_s=bench.packets_per_s,
            delivered=bench.delivered,
            paid=paid,
            stored=stored,
            per_member=ilp_served,
        )
        assert_exact(bench, paid, stored)
        assert all(n > 0 for n in ilp_served), served  # any member fulfils any packet
    finally:
        fleet.stop()
        drop_store(store)


# -- (d) two connectors behind HAProxy, one store ----------------------------------------------


def test_two_connectors_behind_haproxy_share_balances_and_limits(
    harness: Path, fleet: Fleet, tmp_path: Path
) -> None:
    need_haproxy()
    a, a_admin, b, b_admin = 26740, 26741, 26742, 26743
    front, stats, receiver_ilp, receiver_spsp, sender_listen = 26744, 26745, 26746, 26747, 26748
    connector_store = shared_store("postgres")
    receiver_store = store_url("postgres")
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
        for name, port, admin_port in (("connector-a", a, a_admin), ("connector-b", b, b_admin)):
            toml = connector_toml(
                address="test.fleet",
                port=port,
                admin_port=admin_port,
                store=connector_store,
                shared=True,
                accounts=accounts,
            )
            start_connector(fleet, name, toml, tmp_path)
        start_haproxy(fleet, haproxy_config({front: ([a, b], "/sender/")}, stats), [front, stats])
        wait_haproxy_up(stats, 2)
        uplink = f"http+oer://shop-token@127.0.0.1:{front}/shop/?listen=127.0.0.1:{receiver_ilp}"
        ready = fleet.start(
            "receiver",
            receive_cmd(uplink, receiver_spsp, receiver_store, shared_secret_file(tmp_path)),
            tmp_path,
        ).wait_event("ready")
        assert ready["ilp_address"] == "test.fleet.shop"
        bench = js_bench(
            harness,
            f"http://127.0.0.1:{receiver_spsp}/.well-known/pay",
            seconds=SECONDS,
            concurrency=20,
            http=(sender_listen, f"http://127.0.0.1:{front}/sender/", "sender-token"),
        )
        assert isinstance(bench, Bench)
        stored = store_balances(connector_store)
        served = haproxy_served(stats)
        report(
            "haproxy-connectors",
            fulfilled=bench.fulfilled,
            rejected=bench.reject_codes,
            packets_per_s=bench.packets_per_s,
            delivered=bench.delivered,
            connector_store=stored,
            receiver_store=store_total(receiver_store),
            per_connector=[served.get(f"b{front}/m{p}", 0) for p in (a, b)],
        )
        assert stored.get("sender") == bench.delivered, stored  # what the sender owes us
        assert stored.get("shop") == -bench.delivered, stored  # what we owe the receiver
        assert_exact(bench, bench.delivered, store_total(receiver_store))
        assert served.get(f"b{front}/m{a}", 0) > 0 and served.get(f"b{front}/m{b}", 0) > 0, served
        # each instance answers with what the one store says
        for admin_port in (a_admin, b_admin):
            assert admin(admin_port, "balances")["sender"]["balance"] == str(bench.delivered)
    finally:
        fleet.stop()
        drop_store(connector_store)
        drop_store(receiver_store)


# -- (e) kill -9 one member of four -------------------------------------------------------------


def test_kill_9_of_one_member_of_four_mid_load(harness: Path, fleet: Fleet, tmp_path: Path) -> None:
    port, admin_port = 26750, 26751
    spsp_ports = [26752, 26753, 26754, 26755]
    store = shared_store("redis")
    amount, concurrency = 100, 20
    try:
        start_connector(
            fleet,
            "connector",
            connector_toml(
                address="test.fleet", port=port, admin_port=admin_port, accounts=BTP_ACCOUNTS
            ),
            tmp_path,
        )
        secret = shared_secret_file(tmp_path)
        uplink = f"btp+ws://shop:shop-token@127.0.0.1:{port}/shop"
        members = [
            fleet.start(f"member{i}", receive_cmd(uplink, p, store, secret), tmp_path)
            for i, p in enumerate(spsp_ports)
        ]
        wait_for(lambda: len(connections(admin_port, "shop")) == 4, "four connections")
        load = js_bench(
            harness,
            f"http://127.0.0.1:{spsp_ports[0]}/.well-known/pay",
            seconds=6,
            concurrency=concurrency,
            amount=amount,
            btp_url=f"btp+ws://:sender-token@127.0.0.1:{port}/sender",
            background=True,
        )
        assert isinstance(load, subprocess.Popen)
        time.sleep(2.5)  # mid-load
        members[3].kill(signal.SIGKILL)
        wait_for(lambda: len(connections(admin_port, "shop")) == 3, "the connection to go")
        before = {c["id"]: c["prepares_sent"] for c in connections(admin_port, "shop")}
        out, _ = load.communicate(timeout=120)
        bench = bench_result(out)
        after = {c["id"]: c["prepares_sent"] for c in connections(admin_port, "shop")}
        # the three others kept fulfilling after the kill
        assert set(after) == set(before) and all(after[k] > before[k] for k in after), (
            before,
            after,
        )
        paid = -int(admin(admin_port, "balances")["shop"]["balance"])
        excess = store_total(store) - paid
        report(
            "kill-9",
            fulfilled=bench.fulfilled,
            rejected=bench.reject_codes,
            delivered=bench.delivered,
            paid=paid,
            excess=excess,
            before=before,
            after=after,
        )
        assert paid == bench.delivered
        # only the killed member's Prepares in flight failed (T01), and only they can be
        # credited without being paid (credited, then the process died)
        assert set(bench.reject_codes) <= {"T01"}, bench.reject_codes
        assert bench.rejected <= concurrency
        assert 0 <= excess <= bench.rejected * amount, (excess, bench.rejected)
    finally:
        fleet.stop()
        drop_store(store)
