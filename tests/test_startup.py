"""Start-up when the uplink is unreachable, the same in every adapter, and the detection of
another receiver on our uplink account.

* By default the app starts, the receiver keeps reconnecting, paid routes answer ``503
  UplinkUnavailable`` with ``Retry-After``, and once the connector is up they are paid
  and served (in process for every adapter: ``tests/test_adapter_conformance.py``; here
  a real uvicorn process and a real BTP connector started late).
* With ``require_uplink`` the start-up fails with the reason: each adapter in process,
  and uvicorn exiting with ``lifespan.startup.failed``.
* Packets for a receiver id that is not ours are logged once and shown on ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from ilp_receiver.client import AsyncHttpIlpClient, AsyncPaymentClient
from ilp_receiver.codec.ilp import IlpPrepare, IlpReject
from ilp_receiver.errors import UplinkUnavailableError
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.psk2.secrets import ReceiverSecrets
from ilp_receiver.psk2.sender import build_request_prepare
from ilp_receiver.stream.secrets import StreamServerSecrets
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver_aiohttp import setup
from ilp_receiver_flask import IlpReceiver
from ilp_receiver_starlette import IlpReceiverMiddleware
from tests.test_paywall import SERVER, MemoryParent, async_receiver

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_uplink() -> str:
    return f"btp+ws://shop:token@127.0.0.1:{free_port()}"


# ---------------------------------------------------------------------------------------
# require_uplink: every adapter refuses to start, with the reason


def test_flask_fails_fast_with_the_reason() -> None:
    app = Flask(__name__)
    app.config.update(ILP_RECEIVER_UPLINK=dead_uplink(), ILP_RECEIVER_REQUIRE_UPLINK=True)
    with pytest.raises(UplinkUnavailableError, match=r"unreachable.*cannot connect"):
        IlpReceiver(app)


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_asgi_fails_fast_with_startup_failed(framework: str) -> None:
    uplink = dead_uplink()
    if framework == "fastapi":
        from fastapi import FastAPI

        from ilp_receiver_fastapi import IlpReceiverMiddleware as FastApiMiddleware

        app: object = FastAPI()
        app.add_middleware(FastApiMiddleware, uplink=uplink, require_uplink=True)  # type: ignore[attr-defined]
    else:
        app = Starlette(
            middleware=[Middleware(IlpReceiverMiddleware, uplink=uplink, require_uplink=True)]
        )
    messages: list[dict[str, object]] = []

    async def lifespan() -> None:
        incoming: list[dict[str, object]] = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, object]:
            return incoming.pop() if incoming else {"type": "lifespan.shutdown"}

        async def send(message: dict[str, object]) -> None:
            messages.append(message)

        with pytest.raises(UplinkUnavailableError):
            await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)  # type: ignore[operator]

    asyncio.run(lifespan())
    assert messages[0]["type"] == "lifespan.startup.failed"
    assert "unreachable" in str(messages[0]["message"])
    with pytest.raises(UplinkUnavailableError), TestClient(app):  # type: ignore[arg-type]
        pass


async def test_aiohttp_fails_fast_with_the_reason() -> None:
    app = web.Application()
    setup(app, uplink=dead_uplink(), require_uplink=True)
    server = TestServer(app)
    with pytest.raises(UplinkUnavailableError, match="unreachable"):
        await server.start_server()
    await server.close()


def test_django_fails_fast_with_the_reason() -> None:
    import django
    from django.test.utils import override_settings

    from ilp_receiver_django import check_uplink

    django.setup()
    with (
        override_settings(ILP_RECEIVER={"UPLINK": dead_uplink(), "REQUIRE_UPLINK": True}),
        pytest.raises(UplinkUnavailableError, match="unreachable"),
    ):
        check_uplink()


# ---------------------------------------------------------------------------------------
# Real processes: uvicorn with the connector down, then up; and failing fast

APP = textwrap.dedent(
    """
    from fastapi import FastAPI
    from ilp_receiver_fastapi import IlpReceiverMiddleware, paid

    app = FastAPI()
    app.add_middleware(IlpReceiverMiddleware)   # everything from ILP_RECEIVER_*

    @app.get("/report")
    @paid(10)
    def report() -> dict[str, str]:
        return {"report": "paid"}
    """
)


def uvicorn(tmp_path: Path, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    (tmp_path / "paid_app.py").write_text(APP)
    log = (tmp_path / "uvicorn.log").open("w")
    return subprocess.Popen(
        [str(BIN / "uvicorn"), "paid_app:app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def base_env(tmp_path: Path, uplink: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}
    env.update(
        ILP_RECEIVER_UPLINK=uplink,
        ILP_RECEIVER_SECRET_FILE=str(tmp_path / "receiver.secret"),
        ILP_RECEIVER_STORE=str(tmp_path / "balances.db"),
    )
    return env


def wait_http(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    p = BlockingPortal("test-startup")
    yield p
    p.stop()


def test_uvicorn_serves_503_until_the_connector_starts(
    tmp_path: Path, portal: BlockingPortal
) -> None:
    btp_port, web_port = free_port(), free_port()
    uplink = f"btp+ws://shop:token@127.0.0.1:{btp_port}"
    proc = uvicorn(tmp_path, base_env(tmp_path, uplink), web_port)
    network = InMemoryNetwork("test.net")
    closers = []
    try:
        url = f"http://127.0.0.1:{web_port}/report"
        r = wait_http(url)
        assert r.status_code == 503
        assert r.headers["Retry-After"].isdigit()
        assert r.json()["id"] == "UplinkUnavailable"
        gateway = portal.call(network.serve_btp, "127.0.0.1", btp_port)
        closers.append(gateway.close)
        payer = AsyncPaymentClient(portal.call(network.add_child, "alice"))
        portal.call(payer.start)
        closers.append(payer.close)
        deadline = time.monotonic() + 15
        while (r := httpx.get(url, timeout=5)).status_code == 503:
            assert time.monotonic() < deadline, "the receiver never connected"
            time.sleep(0.1)
        assert r.status_code == 402

        async def pay() -> tuple[int, object]:
            response = await AsyncHttpIlpClient(payer).get(url)
            return response.status, response.json()

        assert portal.call(pay) == (200, {"report": "paid"})
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        for close in reversed(closers):
            portal.call(close)
    assert "unreachable" in (tmp_path / "uvicorn.log").read_text()


def test_uvicorn_fails_fast_with_the_reason(tmp_path: Path) -> None:
    env = base_env(tmp_path, dead_uplink())
    env["ILP_RECEIVER_REQUIRE_UPLINK"] = "1"
    proc = uvicorn(tmp_path, env, free_port())
    assert proc.wait(timeout=60) != 0
    log = (tmp_path / "uvicorn.log").read_text()
    assert "ilp-receiver: the uplink ws://127.0.0.1:" in log
    assert "is unreachable" in log
    assert "Application startup failed" in log
    assert "lifespan' protocol appears unsupported" not in log


# ---------------------------------------------------------------------------------------
# Another receiver on our uplink account


def foreign_psk2_prepare(address: str) -> IlpPrepare:
    other = ReceiverSecrets(bytes(range(1, 33)))
    issued = other.issue(address, os.urandom(18), b"endpoint:default")
    prepare = build_request_prepare(
        issued.destination,
        issued.shared_secret,
        amount=10,
        expires_at=datetime.now(UTC) + timedelta(seconds=30),
        iv=os.urandom(12),
        request_id=1,
        min_amount=0,
        data=b"",
    )
    return prepare


async def test_foreign_receiver_id_is_logged_once_and_shown_on_health(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = MemoryParent()
    await parent.start()
    async with async_receiver(parent) as rx:
        assert rx.health()["shared_account"] == {
            "detected": False,
            "foreign_packets": 0,
            "foreign_receiver_ids": [],
            "foreign_stream_tokens": 0,
            "first_seen": None,
            "last_seen": None,
        }
        with caplog.at_level(logging.WARNING, logger="ilp_receiver.receiver"):
            for _ in range(3):
                reply = await parent.pay(foreign_psk2_prepare(SERVER))
                assert isinstance(reply, IlpReject)
                assert (reply.code, reply.message) == ("F06", "Payment is not for this receiver")
        warnings = [r for r in caplog.records if "another receiver uses this uplink" in r.message]
        assert len(warnings) == 1
        assert "different secrets" in warnings[0].message
        other_id = ReceiverSecrets(bytes(range(1, 33))).receiver_id
        assert other_id in warnings[0].message
        # a STREAM token issued under another secret
        stream = StreamServerSecrets.from_receiver_secret(bytes(range(1, 33)))
        issued = stream.generate(SERVER, os.urandom(18), os.urandom(12), "endpoint:default")
        prepare = build_request_prepare(
            issued.destination,
            issued.shared_secret,
            amount=1,
            expires_at=datetime.now(UTC) + timedelta(seconds=30),
            iv=os.urandom(12),
            request_id=1,
            min_amount=0,
            data=b"",
        )
        reply = await parent.pay(prepare)
        assert isinstance(reply, IlpReject)
        report = rx.health()
        assert report["status"] == "shared account"
        shared = report["shared_account"]
        assert isinstance(shared, dict)
        assert shared["detected"] is True
        assert shared["foreign_packets"] == 4
        assert shared["foreign_receiver_ids"] == [other_id]
        assert shared["foreign_stream_tokens"] == 1


def test_health_path_shows_a_shared_account() -> None:
    parent = MemoryParent()
    asyncio.run(parent.start())
    rx = async_receiver(parent)
    app = Starlette(
        middleware=[Middleware(IlpReceiverMiddleware, receiver=rx, health_path="/health")]
    )
    with TestClient(app) as client:
        r = client.get("/health")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        assert client.portal is not None
        client.portal.call(parent.pay, foreign_psk2_prepare(SERVER))
        body = client.get("/health").json()
        assert body["status"] == "shared account"
        assert body["shared_account"]["detected"] is True
        assert body["address"] == SERVER


async def test_asgi_middleware_speaks_lifespan_for_an_app_without_it() -> None:
    from ilp_receiver.web.asgi import IlpAsgiMiddleware, Receive, Scope, Send

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # no lifespan support

    parent = MemoryParent()
    await parent.start()
    rx = async_receiver(parent)
    middleware = IlpAsgiMiddleware(bare, rx)
    incoming: list[dict[str, object]] = [
        {"type": "lifespan.startup"},
        {"type": "lifespan.shutdown"},
    ]
    sent: list[object] = []

    async def receive() -> dict[str, object]:
        message = incoming.pop(0)
        if message["type"] == "lifespan.shutdown":
            assert rx.ready  # started before the app's startup completed
        return message

    async def send(message: object) -> None:
        sent.append(message)

    await middleware({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert not rx.ready
