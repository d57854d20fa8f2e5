"""``ilp-receiver receive`` as a user runs it: the pointer it prints works as printed,
every payment is logged, and a second instance on a taken port credits nothing.

A connector is played by an :class:`~ilp_receiver.testing.InMemoryNetwork` serving
BTP/2.0 on loopback (on a background loop); the receivers are real subprocesses.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ilp_receiver.portal import BlockingPortal
from ilp_receiver.testing import BtpGateway, InMemoryNetwork

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    def __init__(self) -> None:
        self.portal = BlockingPortal("test-receive-cli")
        self.network = InMemoryNetwork("test.net")
        self.gateway: BtpGateway = self.portal.call(self.network.serve_btp)

    def close(self) -> None:
        self.portal.call(self.gateway.close)
        self.portal.stop()


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def receive(
    tmp_path: Path, uplink: str, port: int, name: str, *extra: str
) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / f"{name}.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "ilp-receiver"), "receive", "--uplink", uplink, "--port", str(port),
             *extra],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )  # fmt: skip
    return proc, log


def ready_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "receive exited before it was ready"
    event: dict[str, Any] = json.loads(line)
    assert event["event"] == "ready"
    return event


def wait_for(path: Path, text: str, count: int = 1, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        said = path.read_text()
        if said.count(text) >= count:
            return said
        time.sleep(0.1)
    raise AssertionError(f"{text!r} x{count} not in:\n{path.read_text()[-3000:]}")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ilp-receiver"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(20)


def test_receive_logs_each_payment_to_the_pointer_it_prints(world: World, tmp_path: Path) -> None:
    proc, log = receive(tmp_path, world.gateway.url("shop"), free_port(), "shop")
    try:
        ready = ready_line(proc)
        pointer = ready["payment_pointer"]
        assert pointer.startswith("$127.0.0.1:")
        # without flags, it says where it keeps its secret and its store
        said = log.read_text()
        assert str(tmp_path / "ilp-receiver.secret") in said
        assert str(tmp_path / "ilp-receiver.sqlite3") in said
        assert ready["secret_file"] == str(tmp_path / "ilp-receiver.secret")
        # the pointer works as printed, with query and pay (STREAM and PSK2)
        query = cli("query", pointer, cwd=tmp_path)
        assert query.returncode == 0, query.stderr
        for amount, protocol in ((1000, "stream"), (250, "psk2")):
            paid = cli(
                "pay", pointer, str(amount), "--uplink", world.gateway.url(f"payer-{protocol}"),
                "--protocol", protocol, cwd=tmp_path,
            )  # fmt: skip
            assert paid.returncode == 0, paid.stdout + paid.stderr
        # one log line per payment: amount, endpoint, new balance
        said = wait_for(log, "payment received", 2)
        lines = [line for line in said.splitlines() if "payment received" in line]
        assert "1000 units" in lines[0] and "/.well-known/pay" in lines[0]
        assert "balance now 1000" in lines[0] and "over stream" in lines[0]
        assert "250 units" in lines[1] and "balance now 1250" in lines[1]
    finally:
        stop(proc)


def test_receive_logs_json_lines(world: World, tmp_path: Path) -> None:
    proc, log = receive(
        tmp_path, world.gateway.url("shop"), free_port(), "shop", "--log-format", "json"
    )
    try:
        pointer = ready_line(proc)["payment_pointer"]
        paid = cli("pay", pointer + "/alice", "700", "--uplink", world.gateway.url("payer"),
                   cwd=tmp_path)  # fmt: skip
        assert paid.returncode == 0, paid.stdout + paid.stderr
        wait_for(log, '"event": "payment"')
        events = [json.loads(line) for line in log.read_text().splitlines()]
        payments = [e for e in events if e.get("event") == "payment"]
        assert len(payments) == 1
        assert payments[0]["amount"] == "700" and payments[0]["balance"] == "700"
        assert payments[0]["endpoint"] == "/alice"
        assert payments[0]["account"] == "endpoint:alice"
        assert payments[0]["asset_code"] == "XYZ"
    finally:
        stop(proc)


def test_second_receive_on_a_taken_port_exits_before_it_credits_anything(
    world: World, tmp_path: Path
) -> None:
    port = free_port()
    first, _ = receive(tmp_path, world.gateway.url("first"), port, "first")
    try:
        ready_line(first)
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        second, log = receive(second_dir, world.gateway.url("second"), port, "second")
        assert second.wait(30) == 1
        assert "address already in use" in log.read_text().lower()
        # it never connected its uplink, so no packet could reach it ...
        assert "second" not in world.network.children
        # ... and it opened neither a store nor a secret
        assert not (second_dir / "ilp-receiver.sqlite3").exists()
        assert not (second_dir / "ilp-receiver.secret").exists()
    finally:
        stop(first)
    assert "first" in world.network.children


def test_cli_help_shows_every_default() -> None:
    from ilp_receiver.cli import _parser
    from ilp_receiver.commands._common import UPLINK_FORMS

    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._expand_help(action) if action.help else ""
            if action.default is None or action.default is False:
                continue
            if isinstance(action, argparse._StoreConstAction):
                continue  # flags, and options whose help says what happens without them
            assert "default" in shown, (name, action.option_strings)
        # one spelling of the uplink URL in every command that takes one
        uplink = [a for a in sub._actions if "--uplink" in a.option_strings]
        if uplink:
            assert uplink[0].help.startswith(f"connector: {UPLINK_FORMS}"), name
    # options whose default is None say in words what it is
    for name in ("receive", "pay", "fetch"):
        for action in subparsers.choices[name]._actions:
            if (
                action.option_strings
                and action.default is None
                and action.nargs != 0
                and not action.required
            ):
                assert action.help and "default" in action.help, (name, action.option_strings)
