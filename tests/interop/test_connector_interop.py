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
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

BIN = Path(sys.executable).parent


class Procs:
    """Processes started by one test; all are killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, cmd: list[str], cwd: Path, *, wait_ready: bool = True) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "ILP_"))}
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        threading.Thread(target=lambda: proc.stderr and proc.stderr.read(), daemon=True).start()
        if not wait_ready:
            return {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    raise AssertionError(f"{cmd[:3]} exited with {proc.returncode}") from None
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                return event
        raise AssertionError(f"{cmd[:3]} did not become ready")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.kill_all()


def our_connector(procs: Procs, tmp_path: Path, toml: str) -> dict[str, Any]:
    path = tmp_path / "connector.toml"
    path.write_text(toml)
    cmd = [str(BIN / "ilp-receiver"), "connector", "--config", str(path)]
    return procs.start(cmd, tmp_path)


def node(harness: Path, *args: str, timeout: float = 180) -> dict[str, Any]:
    result = subprocess.run(
        ["node", *args],
        cwd=harness,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from node {args[0]}: {result.stderr[-2000:]}"
    out: dict[str, Any] = json.loads(lines[-1])
    out["_exit"] = result.returncode
    out["_lines"] = [json.loads(line) for line in lines]
    return out


def admin_get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


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
    receiver = procs.start(
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
    )
    failed = [c for c in report["checks"] if c.get("required") and not c["ok"]]
    assert not failed, json.dumps(failed, indent=1)[:3000]
    assert report["ok"] is True


def test_b_ccp_peering_with_the_js_connector(harness: Path, procs: Procs, tmp_path: Path) -> None:
    procs.start(
        [
            "node",
            "connector.js",
            "--peer-port",
            "20711",
            "--receivers-port",
            "0",
            "--sender-port",
            "20713",
        ],
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
    procs.start(
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
        result = node(
            harness,
            "sender.js",
            "single",
            "--receiver",
            "http://127.0.0.1:20717/.well-known/pay",
            "--amount",
            "1000",
            "--btp-url",
            "btp+ws://:sender-token@127.0.0.1:20713",
        )
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
    assert seen["_exit"] == 0, seen
    updates = [
        e
        for e in seen["_lines"]
        if e.get("event") == "ccp"
        and e.get("direction") == "in"
        and e.get("type") == "route_update"
    ]
    assert updates, seen["_lines"]
    assert all(u.get("speaker") == "test.pyconn" for u in updates), updates
    assert all(u.get("our_response") == "fulfill" for u in updates), updates
    summary = seen["_lines"][-1]
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
    receiver = procs.start(
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
    result = node(
        harness,
        "sender.js",
        "single",
        "--receiver",
        "http://127.0.0.1:20724/.well-known/pay",
        "--amount",
        "1000",
        "--btp-url",
        "btp+ws://:sender-token@127.0.0.1:20723",
    )
    assert result.get("ok"), json.dumps(result)[:3000]
    assert result["result"]["fulfilled"] is True
    assert int(result["receiver_balance_delta"]) == 1000
