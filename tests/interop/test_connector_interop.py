"""Our connector between the JavaScript reference sender, receiver and connector.

(a) JS sender -> our connector (BTP) -> JS receiver as a mini-accounts child: every
    required ``sender.js check`` passes.
(b) Our connector as a BTP peer of the JS ilp-connector with CCP: each learns the other's
    routes and a payment crosses both connectors; ``ccp-peer.js`` sees our updates.
(c) The JS receiver on an ILP-over-HTTP uplink to our connector gets paid.

Ports 20700-20739; every process started here is killed by its PID at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .procs import (
    BIN,
    JsonRun,
    Procs,
    child_env,
    http_json,
    js_connector,
    js_pay,
    run_json_lines,
    started,
)

pytestmark = pytest.mark.interop


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    with started(tmp_path, child_env(drop=("HARNESS_", "ILP_"))) as group:
        yield group


def start(procs: Procs, name: str, cmd: list[str], cwd: Path) -> dict[str, Any]:
    return procs.start(name, cmd, cwd, timeout=30).wait_event("ready")


def our_connector(procs: Procs, tmp_path: Path, toml: str) -> dict[str, Any]:
    path = tmp_path / "connector.toml"
    path.write_text(toml)
    cmd = [str(BIN / "ilp-receiver"), "connector", "--config", str(path)]
    return start(procs, "connector", cmd, tmp_path)


def node_env() -> dict[str, str]:
    """The environment of the harness's one-shot scripts: no HARNESS_* option defaults."""
    return child_env(drop=("HARNESS_",))


def node(harness: Path, *args: str, timeout: float = 180) -> JsonRun:
    return run_json_lines(["node", *args], harness, timeout, node_env())


def admin_get(url: str, token: str) -> Any:
    return http_json(url, {"Authorization": f"Bearer {token}"})


def test_a_js_sender_through_our_connector_to_a_js_child(
    harness: Path, procs: Procs, tmp_path: Path
) -> None:
    our_connector(
        procs,
        tmp_path,
        f"""
[connector]
address = "test.pyconn"
store = "{tmp_path / "c.sqlite3"}"
[accounts.sender]
relation = "child"
transport = "btp-server"
token = "sender-token"
listen = "127.0.0.1:20701"
[accounts.kids]
relation = "child"
transport = "mini-accounts"
listen = "127.0.0.1:20702"
""",
    )
    receiver = start(
        procs,
        "js-receiver",
        [
            "node",
            "js-receiver.js",
            "--btp-url",
            "btp+ws://jsreceiver:tok@127.0.0.1:20702",
            "--spsp-port",
            "20703",
        ],
        harness,
    )
    assert receiver["address"] == "test.pyconn.jsreceiver"
    report = node(
        harness,
        "sender.js",
        "check",
        "--receiver",
        "http://127.0.0.1:20703/.well-known/pay",
        "--btp-url",
        "btp+ws://:sender-token@127.0.0.1:20701",
    ).last
    failed = [c for c in report["checks"] if c.get("required") and not c["ok"]]
    assert not failed, json.dumps(failed, indent=1)[:3000]
    assert report["ok"] is True


def test_b_ccp_peering_with_the_js_connector(harness: Path, procs: Procs, tmp_path: Path) -> None:
    start(
        procs,
        "js-connector",
        js_connector(0, 20713, "--peer-port", "20711"),
        harness,
    )
    ours = our_connector(
        procs,
        tmp_path,
        f"""
[connector]
address = "test.pyconn"
store = "{tmp_path / "c.sqlite3"}"
route_broadcast_interval_ms = 1000
[admin]
port = 20716
token = "admin"
[accounts.js]
relation = "peer"
transport = "btp-client"
url = "btp+ws://:peer-token@127.0.0.1:20711"
[accounts.kids]
relation = "child"
transport = "mini-accounts"
listen = "127.0.0.1:20714"
[accounts.ccp]
relation = "peer"
transport = "btp-server"
token = "peer-token"
listen = "127.0.0.1:20715"
""",
    )
    admin = ours["admin_api"]
    deadline = time.monotonic() + 20
    routes: dict[str, Any] = {}
    while time.monotonic() < deadline:
        routes = admin_get(admin + "routes", "admin")
        if routes.get("test.harness", {}).get("next_hop") == "js":
            break
        time.sleep(0.2)
    assert routes.get("test.harness", {}).get("next_hop") == "js", routes
    assert routes["test.harness"]["path"] == ["test.harness"]
    start(
        procs,
        "js-receiver",
        [
            "node",
            "js-receiver.js",
            "--btp-url",
            "btp+ws://jsr:tok@127.0.0.1:20714",
            "--spsp-port",
            "20717",
        ],
        harness,
    )
    # The JS sender is a child of the JS connector; the receiver a child of ours. The JS
    # connector can only forward to test.pyconn.jsr if it learned our route by CCP.
    result: dict[str, Any] = {}
    for _ in range(20):
        result = js_pay(
            harness,
            "http://127.0.0.1:20717/.well-known/pay",
            "btp+ws://:sender-token@127.0.0.1:20713",
            1000,
            env=node_env(),
        ).last
        if result.get("ok"):
            break
        time.sleep(0.5)
    assert result.get("ok"), json.dumps(result)[:3000]
    assert result["result"]["fulfilled"] is True
    balances = admin_get(admin + "balances", "admin")
    assert int(balances["js"]["balance"]) > 0  # the JS connector owes us
    assert int(balances["jsr"]["balance"]) < 0  # we owe the receiver
    # ccp-peer.js, a second JS connector, peers with our "ccp" account and logs our updates
    seen = node(
        harness,
        "ccp-peer.js",
        "--target-btp-url",
        "btp+ws://:peer-token@127.0.0.1:20715",
        "--duration",
        "6",
        timeout=60,
    )
    assert seen.returncode == 0, seen
    updates = [
        e
        for e in seen.lines
        if e.get("event") == "ccp"
        and e.get("direction") == "in"
        and e.get("type") == "route_update"
    ]
    assert updates, seen.lines
    assert all(u.get("speaker") == "test.pyconn" for u in updates), updates
    assert all(u.get("our_response") == "fulfill" for u in updates), updates
    summary = seen.lines[-1]
    assert summary["event"] == "summary"
    # our own address and the JS connector's prefix (learned from the other peer), both
    # advertised with our address first in the path
    assert summary["routes_in"].get("test.pyconn") == ["test.pyconn"], summary
    assert summary["routes_in"].get("test.harness") == ["test.pyconn", "test.harness"], summary


def test_c_js_receiver_on_an_http_uplink_to_our_connector(
    harness: Path, procs: Procs, tmp_path: Path
) -> None:
    our_connector(
        procs,
        tmp_path,
        f"""
[connector]
address = "test.pyconn"
store = "{tmp_path / "c.sqlite3"}"
[accounts.sender]
relation = "child"
transport = "btp-server"
token = "sender-token"
listen = "127.0.0.1:20723"
[accounts.web]
relation = "child"
transport = "http"
url = "http://127.0.0.1:20722/"
token = "http-secret"
listen = "127.0.0.1:20721"
""",
    )
    receiver = start(
        procs,
        "js-receiver",
        [
            "node",
            "js-receiver.js",
            "--uplink",
            "http",
            "--http-listen-port",
            "20722",
            "--http-connector-url",
            "http://127.0.0.1:20721/",
            "--http-token",
            "http-secret",
            "--spsp-port",
            "20724",
        ],
        harness,
    )
    assert receiver["address"] == "test.pyconn.web"
    result = js_pay(
        harness,
        "http://127.0.0.1:20724/.well-known/pay",
        "btp+ws://:sender-token@127.0.0.1:20723",
        1000,
        env=node_env(),
    ).last
    assert result.get("ok"), json.dumps(result)[:3000]
    assert result["result"]["fulfilled"] is True
    assert int(result["receiver_balance_delta"]) == 1000
