"""The paid-API examples (``examples/*_paid_api.py``), each on its framework's test client.

Every example runs as it would in production: its receiver connects over BTP/2.0 to a
connector (:class:`~ilp_receiver.testing.InMemoryNetwork` serving BTP on loopback) and
keeps balances in a SQLite file; a paying client (``AsyncHttpIlpClient``) is another
child of the same network.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient as AiohttpTestClient
from aiohttp.test_utils import TestServer
from starlette.testclient import TestClient

from ilp_receiver.client import (
    AsyncHttpIlpClient,
    AsyncPaymentClient,
    HeldStreamPayment,
    Psk2Destination,
    StreamDestination,
)
from ilp_receiver.codec.pay_header import STREAM_METHOD, format_pay_token, parse_pay_header
from ilp_receiver.paywall import token_account
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.testing import BtpGateway, InMemoryNetwork
from ilp_receiver_flask import get_monetization, get_service

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = os.urandom(32).hex()


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Connector:
    """An InMemoryNetwork on its own loop thread, serving BTP, with a paying child."""

    def __init__(self) -> None:
        self.portal = BlockingPortal("test-connector")
        self.network = InMemoryNetwork("test.net")
        self.gateway: BtpGateway = self.portal.call(self.network.serve_btp)
        link = self.portal.call(self.network.add_child, "alice")
        self.payer = AsyncPaymentClient(link)
        self.portal.call(self.payer.start)
        self.http = AsyncHttpIlpClient(self.payer)

    def pay(self, pay_value: str, token: bytes) -> None:
        """Pay a ``Pay`` header for ``token`` (quote, then pay the price)."""
        pay = parse_pay_header(pay_value)
        assert pay.price is not None
        target = Psk2Destination(pay.destination, pay.shared_secret)
        result, _quote = self.portal.call(self.http.pay_token, target, token, pay.price)
        assert result.delivered_amount >= pay.price

    def stream(self, pay_value: str, send_max: int) -> HeldStreamPayment:
        """Open a STREAM connection to an ``interledger-stream`` header, a stream with
        ``send_max`` as its limit; returns once the server has sent its first byte."""
        pay = parse_pay_header(pay_value)
        assert pay.method == STREAM_METHOD
        target = StreamDestination(pay.destination, pay.shared_secret)
        payment = HeldStreamPayment(self.payer.send, target, send_max)
        assert self.portal.call(payment.ready, 10.0)
        return payment

    def close(self) -> None:
        self.portal.call(self.payer.close)
        self.portal.call(self.gateway.close)
        self.portal.stop()


@pytest.fixture
def connector() -> Iterator[Connector]:
    c = Connector()
    yield c
    c.close()


def check_stream_flow(request: Any, connector: Connector, status_of: Any) -> None:
    """The default (STREAM): 402 with Pay: interledger-stream -> a stream whose limit is
    the client's max price -> the server's first byte -> the request again while the
    money flows -> 200 with Pay-Balance; the client sent exactly the price."""
    token = os.urandom(16)
    headers = {"Pay-Token": format_pay_token(token)}
    for method, path, body, price in (("GET", "/fortune", b"", 10), ("POST", "/shout", b"hi!", 3)):
        first = request(method, path, headers, body)
        assert status_of(first) == 402
        assert first.headers["Pay"].startswith("interledger-stream ")
        assert first.json()["price"] == str(price)
        payment = connector.stream(first.headers["Pay"], 50)
        second = request(method, path, headers, body)
        assert status_of(second) == 200
        assert second.headers["Pay-Balance"] == "0"
        result = connector.portal.call(payment.finish)
        assert result.delivered_amount == result.source_amount == price
    assert request("GET", "/balance", headers).json() == {"balance": 0}


def check_flow(request: Any, connector: Connector, status_of: Any) -> None:
    """PSK2: 402 -> pay -> 200 with Pay-Balance, then the balance endpoint agrees."""
    token = os.urandom(16)
    headers = {"Pay-Token": format_pay_token(token)}
    first = request("GET", "/fortune", headers)
    assert status_of(first) == 402
    assert first.headers["Pay-Balance"] == "0"
    connector.pay(first.headers["Pay"], token)
    second = request("GET", "/fortune", headers)
    assert status_of(second) == 200
    assert second.headers["Pay-Balance"] == "0"
    assert "fortune" in second.json()
    third = request("POST", "/shout", {**headers, "Content-Type": "text/plain"}, b"hello")
    assert status_of(third) == 402
    assert third.headers["Pay"].endswith(" 5")
    connector.pay(third.headers["Pay"], token)
    fourth = request("POST", "/shout", headers, b"hello")
    assert fourth.json() == {"shout": "HELLO"}
    assert request("GET", "/balance", headers).json() == {"balance": 0}
    pointer = request("GET", "/.well-known/pay", {"Accept": "application/spsp+json"})
    assert pointer.json()["receiver_info"] == {"name": "Fortune API"}
    assert request("GET", "/", {}).json()["endpoints"]["GET /fortune"] == 10


@pytest.mark.parametrize("name", ["flask_paid_api", "starlette_paid_api", "aiohttp_paid_api"])
def test_examples_name_the_pay_method_variable(name: str) -> None:
    doc = load(name).__doc__ or ""
    assert "ILP_RECEIVER_PAY_METHOD" in doc
    assert "interledger-stream" in doc and "psk2" in doc


@pytest.mark.parametrize("pay_method", ["stream", "psk2"])
def test_flask_example(connector: Connector, tmp_path: Path, pay_method: str) -> None:
    module = load("flask_paid_api")
    app = module.create_app(
        connector.gateway.url("flask-shop"),
        store=str(tmp_path / "b.db"),
        secret=SECRET,
        pay_method=None if pay_method == "stream" else pay_method,  # stream: the default
    )
    client = app.test_client()

    class Wrapped:
        def __init__(self, response: Any) -> None:
            self.response = response
            self.headers = response.headers

        def json(self) -> Any:
            return self.response.json

    def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Wrapped:
        return Wrapped(client.open(path, method=method, headers=headers, data=body))

    try:
        flow = check_stream_flow if pay_method == "stream" else check_flow
        flow(request, connector, lambda r: r.response.status_code)
        assert get_service(app).receiver.address == "test.net.flask-shop"
    finally:
        get_service(app).stop()


def test_starlette_example_over_stream(connector: Connector, tmp_path: Path) -> None:
    module = load("starlette_paid_api")
    app = module.create_app(
        connector.gateway.url("starlette-shop"), store=str(tmp_path / "b.db"), secret=SECRET
    )
    with TestClient(app) as client:

        def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Any:
            return client.request(method, path, headers=headers, content=body or None)

        check_stream_flow(request, connector, lambda r: r.status_code)
        # the path-configured paid route
        token = os.urandom(16)
        r = client.get("/premium/gold", headers={"Pay-Token": format_pay_token(token)})
        assert r.status_code == 402
        payment = connector.stream(r.headers["Pay"], 100)
        r = client.get("/premium/gold", headers={"Pay-Token": format_pay_token(token)})
        assert r.json() == {"premium": "gold"}
        assert connector.portal.call(payment.finish).delivered_amount == 25


def test_starlette_example(
    connector: Connector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILP_RECEIVER_PAY_METHOD", "psk2")  # what the docstring says
    module = load("starlette_paid_api")
    app = module.create_app(
        connector.gateway.url("starlette-shop"), store=str(tmp_path / "b.db"), secret=SECRET
    )
    with TestClient(app) as client:

        def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Any:
            return client.request(method, path, headers=headers, content=body or None)

        check_flow(request, connector, lambda r: r.status_code)
        # the path-configured paid route
        token = os.urandom(16)
        r = client.get("/premium/gold", headers={"Pay-Token": format_pay_token(token)})
        assert r.status_code == 402
        assert r.headers["Pay"].endswith(" 25")
        connector.pay(r.headers["Pay"], token)
        r = client.get("/premium/gold", headers={"Pay-Token": format_pay_token(token)})
        assert r.json() == {"premium": "gold"}


async def test_aiohttp_example_end_to_end_with_the_http_ilp_client(tmp_path: Path) -> None:
    """Real HTTP: the HTTP-ILP client gets 402, pays over the network, retries."""
    network = InMemoryNetwork("test.net")
    gateway = await network.serve_btp()
    module = load("aiohttp_paid_api")
    app = module.create_app(
        gateway.url("aiohttp-shop"), store=str(tmp_path / "b.db"), secret=SECRET
    )
    payer = AsyncPaymentClient(await network.add_child("alice"))
    await payer.start()
    try:
        async with AiohttpTestClient(TestServer(app)) as client:
            http = AsyncHttpIlpClient(payer)
            response = await http.get(str(client.make_url("/fortune")))
            assert response.status == 200
            assert "fortune" in response.json()
            assert response.payment is not None
            assert response.payment.protocol == "stream"  # the example's default
            assert response.payment.delivered_amount == 10
            assert response.headers["Pay-Balance"] == "0"
            response = await http.post(str(client.make_url("/shout")), data=b"abc")
            assert response.json() == {"shout": "ABC"}
            token = http.token_for(str(client.make_url("/")))
            r = await client.get("/balance", headers={"Pay-Token": format_pay_token(token)})
            assert await r.json() == {"balance": 0}
            store = app[module.RECEIVER_KEY].store
            assert await store.balance(token_account(token)) == 0
    finally:
        await payer.close()
        await gateway.close()


def test_flask_wallet_monetization_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's Web Monetization: the wallet address from configuration, 402 -> 200."""
    import json as jsonlib

    from tests.test_wm_adapters import Wallet

    module = load("flask_wallet_monetization")
    wallet = Wallet()
    monkeypatch.setenv("ILP_MONETIZATION_WALLET_ADDRESS", wallet.fake.wallet_address)
    portal = BlockingPortal("test-wallet-example")
    try:
        app = module.create_app(
            store=str(tmp_path / "buckets.db"),
            monetization_secret=SECRET,
            portal=portal,
            local_wallet=True,
        )
        client = app.test_client()
        page = client.get("/")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert f'<link rel="monetization" href="{wallet.fake.wallet_address}">' in html
        assert '<script src="/__monetizer/wm.js"></script>' in html
        assert client.get("/article/body").status_code == 402
        url = wallet.paid_payment(module.PRICE)
        report = client.post(
            "/__monetizer/incoming-payments",
            data=jsonlib.dumps({"incomingPayment": url}),
            content_type="application/json",
        )
        assert report.status_code == 200, report.data
        body = client.get("/article/body")
        assert body.status_code == 200
        assert body.get_json()["balance"] == 0
        assert client.get("/article/body").status_code == 402
        verifier = get_monetization(app).service.verifier
        assert verifier is not None
        portal.call(verifier.close)
        get_service(app).stop()
    finally:
        portal.stop()
        wallet.close()
