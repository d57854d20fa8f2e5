"""The Django adapter under real servers: ``runserver`` (with its autoreloader),
``gunicorn -w 2`` and uvicorn (ASGI).

The test project (``tests/django_project``) reads its uplink from the environment; each
process dials an account named after its pid, so the connector (an
:class:`~ilp_receiver.testing.InMemoryNetwork` serving BTP on loopback) shows which
processes started a receiver: exactly the ones serving requests -- never runserver's
autoreloader parent, each gunicorn worker once, the uvicorn process once.  Every process
shares the secret file and the SQLite store.  A paid view (sync and async) is paid end
to end by the HTTP-ILP client, and the payment pointer is queried and paid.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ilp_receiver.client import AsyncHttpIlpClient, AsyncPaymentClient, StreamDestination
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.testing import InMemoryNetwork

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None, reason="gunicorn is not installed"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connector:
    def __init__(self) -> None:
        self.portal = BlockingPortal("test-django-servers")
        self.network = InMemoryNetwork("test.net")
        self.gateway = self.portal.call(self.network.serve_btp)
        self.payer = AsyncPaymentClient(self.portal.call(self.network.add_child, "alice"))
        self.portal.call(self.payer.start)
        self.http = AsyncHttpIlpClient(self.payer)

    def shops(self) -> set[str]:
        return {name for name in self.network.children if name.startswith("dj")}

    def close(self) -> None:
        self.portal.call(self.payer.close)
        self.portal.call(self.gateway.close)
        self.portal.stop()


@pytest.fixture
def connector() -> Iterator[Connector]:
    c = Connector()
    yield c
    c.close()


def start(
    tmp_path: Path, connector: Connector, command: list[str], port: int
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "integrations")]),
        DJANGO_SETTINGS_MODULE="tests.django_project.settings",
        TEST_BTP_PER_PID=connector.gateway.url("dj{pid}"),
        ILP_RECEIVER_SECRET_FILE=str(tmp_path / "receiver.secret"),
        ILP_RECEIVER_STORE=str(tmp_path / "balances.db"),
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {(tmp_path / 'server.log').read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def check_paid_view_and_pointer(connector: Connector, base: str, paths: list[str]) -> None:
    for path in paths:

        async def fetch(url: str = base + path) -> tuple[int, bytes, str]:
            response = await connector.http.get(url)
            return response.status, response.body, response.headers.get("Pay-Balance", "")

        status, body, balance = connector.portal.call(fetch)
        assert (status, body, balance) == (200, b"paid content", "0"), path
    r = httpx.get(base + "/.well-known/pay", headers={"Accept": "application/spsp4+json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/spsp4+json"
    answer = r.json()
    assert answer["destination_account"].startswith("test.net.dj")
    assert answer["receiver_info"] == {"name": "Django test shop"}
    secret = base64.b64decode(answer["shared_secret"])
    target = StreamDestination(answer["destination_account"], secret)
    result = connector.portal.call(connector.payer.pay, target, 1000)
    assert result.delivered_amount == 1000


def test_runserver_with_its_autoreloader(tmp_path: Path, connector: Connector) -> None:
    port = free_port()
    proc = start(
        tmp_path,
        connector,
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"],
        port,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert connector.shops() == set()  # nothing starts before the first request
        check_paid_view_and_pointer(connector, base, ["/decorated", "/async-decorated"])
        assert len(connector.shops()) == 1  # the serving child only, not the reloader
    finally:
        stop(proc)


def test_gunicorn_two_workers(tmp_path: Path, connector: Connector) -> None:
    port = free_port()
    proc = start(
        tmp_path,
        connector,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "tests.django_project.wsgi",
        ],
        port,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        check_paid_view_and_pointer(connector, base, ["/decorated"])
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=base) as client:
            while len(connector.shops()) < 2:
                assert time.monotonic() < deadline, connector.shops()
                # a fresh connection each time, so that both workers get some
                client.get("/decorated", headers={"Connection": "close"})
        assert len(connector.shops()) == 2  # one receiver per worker, each started once
        check_paid_view_and_pointer(connector, base, ["/decorated"] * 4)
        assert len(connector.shops()) == 2
    finally:
        stop(proc)


def test_uvicorn_asgi(tmp_path: Path, connector: Connector) -> None:
    port = free_port()
    proc = start(
        tmp_path,
        connector,
        [
            str(BIN / "uvicorn"),
            "tests.django_project.asgi:application",
            "--lifespan",
            "off",
            "--port",
            str(port),
        ],
        port,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        check_paid_view_and_pointer(connector, base, ["/decorated", "/async-decorated"])
        assert len(connector.shops()) == 1
    finally:
        stop(proc)
