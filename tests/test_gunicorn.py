"""The Flask adapter under ``gunicorn -w 2``: every worker its own uplink, one SQLite store.

The test runs a connector (an :class:`~ilp_receiver.testing.InMemoryNetwork` serving
BTP/2.0 on loopback); each gunicorn worker's receiver connects to it as a child of its
own (``w<pid>``), all sharing the receiver secret and a SQLite balance file.  A payment
to the ``Pay`` header one worker issued is fulfilled by that worker and credited in the
shared store, and both workers see (and spend) the balance.  Run with and without
``--preload`` (the app is imported before the fork; receivers start after it).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ilp_receiver.client import AsyncHttpIlpClient, AsyncPaymentClient, Psk2Destination
from ilp_receiver.codec.pay_header import format_pay_token, parse_pay_header
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.testing import InMemoryNetwork

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None, reason="gunicorn is not installed"
)

ROOT = Path(__file__).resolve().parent.parent
APP = textwrap.dedent(
    '''
    """A paid Flask app for gunicorn; configured by environment variables."""
    import os
    import time

    from flask import Flask, jsonify, request

    from ilp_receiver.codec.pay_header import parse_pay_token
    from ilp_receiver.paywall import token_account
    from ilp_receiver_flask import IlpReceiver, paid

    app = Flask(__name__)
    app.config.update(
        # each worker process is its own child of the connector
        ILP_RECEIVER_UPLINK=lambda: os.environ["TEST_BTP"].format(pid=os.getpid()),
        ILP_RECEIVER_SECRET=os.environ["TEST_SECRET"],
        ILP_RECEIVER_STORE=os.environ["TEST_STORE"],
    )
    ilp = IlpReceiver(app)

    @app.get("/paid")
    @paid(10)
    def paid_view():
        time.sleep(0.02)
        return jsonify(pid=os.getpid())

    @app.get("/balance")
    def balance():
        time.sleep(0.05)
        token = parse_pay_token(request.headers["Pay-Token"])
        return jsonify(pid=os.getpid(), balance=ilp.balance(token_account(token)))
    '''
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connector:
    def __init__(self) -> None:
        self.portal = BlockingPortal("test-gunicorn-connector")
        self.network = InMemoryNetwork("test.net")
        self.gateway = self.portal.call(self.network.serve_btp)
        self.payer = AsyncPaymentClient(self.portal.call(self.network.add_child, "alice"))
        self.portal.call(self.payer.start)
        self.http = AsyncHttpIlpClient(self.payer)

    def pay(self, pay_value: str, token: bytes, amount: int) -> None:
        pay = parse_pay_header(pay_value)
        target = Psk2Destination(pay.destination, pay.shared_secret)
        self.portal.call(self.http.pay_token, target, token, amount)

    def close(self) -> None:
        self.portal.call(self.payer.close)
        self.portal.call(self.gateway.close)
        self.portal.stop()


@pytest.fixture
def connector() -> Iterator[Connector]:
    c = Connector()
    yield c
    c.close()


def start_gunicorn(
    tmp_path: Path, connector: Connector, preload: bool
) -> tuple[str, subprocess.Popen[bytes]]:
    (tmp_path / "paid_app.py").write_text(APP)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "integrations")]),
        "TEST_BTP": connector.gateway.url("w{pid}"),
        "TEST_SECRET": os.urandom(32).hex(),
        "TEST_STORE": str(tmp_path / "balances.db"),
    }
    args = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    args += ["--preload"] if preload else []
    args += ["--log-level", "warning", "paid_app:app"]
    # stderr to a file: the test reads what the workers said when they stopped
    with (tmp_path / "gunicorn.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/nothing", timeout=1)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.1)
    return base, proc


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_two_workers_share_balances(tmp_path: Path, connector: Connector, preload: bool) -> None:
    base, proc = start_gunicorn(tmp_path, connector, preload)
    token = os.urandom(16)
    headers = {"Pay-Token": format_pay_token(token)}
    client = httpx.Client(base_url=base, headers=headers, timeout=30)
    try:
        first = client.get("/paid")
        assert first.status_code == 402
        assert first.headers["Pay-Balance"] == "0"
        connector.pay(first.headers["Pay"], token, 250)

        # both workers see the balance the payment put in the shared store
        def look(_: int) -> tuple[int, int]:
            body = client.get("/balance").json()
            return body["pid"], body["balance"]

        seen: dict[int, int] = {}
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                seen.update(pool.map(look, range(8)))
                if len(seen) == 2:
                    break
        assert len(seen) == 2, "both workers should have answered"
        assert set(seen.values()) == {250}

        # 30 concurrent paid requests at 10 with 250: exactly 25 served, by both workers
        def buy(_: int) -> tuple[int, int | None]:
            r = client.get("/paid")
            return r.status_code, r.json().get("pid") if r.status_code == 200 else None

        with ThreadPoolExecutor(30) as pool:
            results = list(pool.map(buy, range(30)))
        codes = [code for code, _ in results]
        assert codes.count(200) == 25
        assert codes.count(402) == 5
        assert len({pid for _, pid in results if pid is not None}) == 2
        assert {balance for _, balance in [look(0), look(0)]} == {0}
        # each worker connected as its own child of the connector
        children = {name for name in connector.network.children if name.startswith("w")}
        assert len(children) == 2
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    # each worker stopped its receiver and closed the SQLite store cleanly at exit
    # (the atexit handler once raised "can't register atexit after shutdown")
    said = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert "Traceback" not in said, said[-3000:]
    assert "atexit" not in said, said[-3000:]
