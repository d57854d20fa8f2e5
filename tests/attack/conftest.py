"""Real processes for the attack suite: the bundled connector and a payment-pointer
server, started with the ``ilp-receiver`` command exactly as an operator runs them.

The connector (``test.mynode``) has a fixed BTP account ``sender`` (token
``sender-token``, path ``/sender``), a mini-accounts section ``children`` (path ``/``)
and an admin API; the receiver joins ``children`` as ``shop``.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.procs import Proc, Procs, http_json, our_receiver

ADMIN_TOKEN = "admin-secret-for-tests"
SENDER_TOKEN = "sender-token"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Node:
    """A running connector and receiver, and how to reach them."""

    connector: Proc
    receiver: Proc
    connector_port: int
    admin_port: int
    spsp_port: int
    state: Path

    @property
    def sender_uplink(self) -> str:
        return f"btp+ws://:{SENDER_TOKEN}@127.0.0.1:{self.connector_port}/sender"

    @property
    def children_ws(self) -> str:
        return f"ws://127.0.0.1:{self.connector_port}/"

    @property
    def spsp_url(self) -> str:
        return f"http://127.0.0.1:{self.spsp_port}/.well-known/pay"

    def admin(self, path: str) -> object:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return http_json(f"http://127.0.0.1:{self.admin_port}{path}", headers)

    def admin_latency(self) -> float:
        """Seconds one authenticated ``GET /status`` takes (the event loop's health)."""
        import time

        started = time.monotonic()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/status",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        return time.monotonic() - started


def connector_config(state: Path, port: int, admin_port: int) -> Path:
    """The connector's TOML file."""
    path = state / "connector.toml"
    path.write_text(
        f"""
[connector]
address = "test.mynode"
store = "{state / "connector.sqlite3"}"

[server]
port = {port}

[admin]
port = {admin_port}
token = "{ADMIN_TOKEN}"

[accounts.sender]
relation = "child"
transport = "btp-server"
token = "{SENDER_TOKEN}"
path = "/sender"

[accounts.children]
relation = "child"
transport = "mini-accounts"
path = "/"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A connector process and a receiver process (``shop``), for one test module."""
    state = tmp_path_factory.mktemp("attack")
    port, admin_port, spsp_port = free_port(), free_port(), free_port()
    config = connector_config(state, port, admin_port)
    procs = Procs(state)
    try:
        bin_dir = Path(our_receiver("", 0, state)[0]).parent
        connector = procs.start(
            "connector",
            [str(bin_dir / "ilp-receiver"), "connector", "--config", str(config)],
            state,
        )
        uplink = f"btp+ws://shop:shop-token@127.0.0.1:{port}/"
        receiver_args = our_receiver(uplink, spsp_port, state)
        receiver_args += ["--max-connections", "200", "--header-timeout", "2"]
        receiver = procs.start("receiver", receiver_args, state)
        yield Node(connector, receiver, port, admin_port, spsp_port, state)
    finally:
        procs.stop_all()
