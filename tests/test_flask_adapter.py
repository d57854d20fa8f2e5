"""The Flask adapter (``integrations/ilp_receiver_flask``): test_client, threads, dev server."""

from __future__ import annotations

import asyncio
import importlib
import io
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.errors import ConfigError
from ilp_receiver.paywall import (
    NO_TOKEN_MESSAGE,
    PaidRoute,
    RequestFacts,
    per_byte,
    token_account,
)
from ilp_receiver.portal import BlockingPortal, default_portal
from ilp_receiver.receiver import Receiver
from ilp_receiver.stores import SqliteStore
from ilp_receiver_flask import IlpReceiver, get_service, paid
from tests.test_paywall import (
    SECRET,
    SERVER,
    TOKEN,
    TOKEN_HEADER,
    MemoryParent,
    StreamEraClients,
    check_pay,
    check_stream_pay,
    funding_prepare,
    sync_receiver,
)

PATHS = ["/decorated", "/mapped", "/priced"]


class Net:
    """A portal, an in-memory parent and the Flask app under test."""

    def __init__(self, **config: Any) -> None:
        self.portal = BlockingPortal("test-flask")
        self.parent = MemoryParent()
        self.rx: Receiver = sync_receiver(self.parent, self.portal)
        self.app = make_app(self.rx, **config)

    def pay(self, pay_value: str, amount: int) -> None:
        reply = self.portal.call(self.parent.pay, funding_prepare(pay_value, amount))
        assert isinstance(reply, IlpFulfill)

    def balance(self) -> int:
        return get_service(self.app).balance(token_account(TOKEN))

    def close(self) -> None:
        get_service(self.app).stop()
        self.portal.stop()


def make_app(rx: Receiver, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config["ILP_RECEIVER_PAID"] = {"/mapped": 10}
    app.config["ILP_RECEIVER_POINTERS"] = ["bob"]
    app.config.update(config)
    IlpReceiver(app, receiver=rx)

    @app.post("/decorated")
    @paid(10)
    def decorated() -> str:
        return "paid content"

    @app.post("/priced")
    @paid(lambda facts: int(facts.header("x-units") or "1") * 10)
    def priced() -> str:
        return "paid content"

    @app.post("/mapped")
    def mapped() -> str:
        return "paid content"

    @app.post("/fails")
    @paid(10)
    def fails() -> str:
        raise RuntimeError("route failed")

    @app.get("/bob")
    def bob() -> str:
        return "bob's page"

    @app.get("/free")
    def free() -> Any:
        return jsonify(ok=True)

    return app


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    yield n
    n.close()


@pytest.mark.parametrize("path", PATHS)
def test_every_status(net: Net, path: str) -> None:
    client = net.app.test_client()
    r = client.options(path)
    assert r.status_code == 204
    check_pay(r.headers["Pay"], 10)
    assert "Pay-Balance" not in r.headers
    r = client.options(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 204
    assert r.headers["Pay-Balance"] == "0"

    r = client.post(path)
    assert r.status_code == 402
    check_pay(r.headers["Pay"], 10)
    assert r.json == {"id": "PaymentRequired", "message": NO_TOKEN_MESSAGE, "price": "10"}

    r = client.post(path, headers={"Pay-Token": "AAAA"})
    assert r.status_code == 400
    assert r.json is not None
    assert r.json["id"] == "InvalidPayToken"

    r = client.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402
    assert r.headers["Pay-Balance"] == "0"
    net.pay(r.headers["Pay"], 25)

    r = client.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 200
    assert r.text == "paid content"
    assert r.headers["Pay-Balance"] == "15"
    check_pay(r.headers["Pay"], 10)
    assert net.balance() == 15
    assert client.get("/free").json == {"ok": True}


def test_price_function_and_refund(net: Net) -> None:
    client = net.app.test_client()
    r = client.post("/priced", headers={"Pay-Token": TOKEN_HEADER, "X-Units": "3"})
    assert r.status_code == 402
    assert r.headers["Pay"].endswith(" 30")
    net.pay(r.headers["Pay"], 30)
    r = client.post("/fails", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 500
    assert net.balance() == 30


def test_payment_pointers(net: Net) -> None:
    client = net.app.test_client()
    r = client.get("/.well-known/pay", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/spsp+json"
    assert r.json is not None
    assert r.json["destination_account"].startswith(SERVER + ".")
    r = client.get("/bob", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 200
    assert client.get("/bob", headers={"Accept": "text/html"}).text == "bob's page"
    # STREAM clients get SPSP v4 from the same pointers, with receipts on request
    stream = {
        "Accept": "application/spsp4+json",
        "Receipt-Nonce": "AAECAwQFBgcICQoLDA0ODw==",
        "Receipt-Secret": "u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7s=",
    }
    for path in ("/.well-known/pay", "/bob"):
        r = client.get(path, headers=stream)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/spsp4+json"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.json is not None and r.json["receipts_enabled"] is True
    assert client.options("/.well-known/pay").status_code == 204


def test_no_double_spend_with_threads(net: Net) -> None:
    store = get_service(net.app).receiver.async_receiver.store
    net.portal.call(store.credit, token_account(TOKEN), 250)

    def call(_: int) -> int:
        client = net.app.test_client()
        return client.post("/decorated", headers={"Pay-Token": TOKEN_HEADER}).status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(call, range(50)))
    assert codes.count(200) == 25
    assert codes.count(402) == 25
    assert net.balance() == 0


def test_no_double_spend_with_threads_on_sqlite(tmp_path: Any) -> None:
    """The paid decision runs on the request threads (blocking SQLite debits)."""
    portal = BlockingPortal("test-flask-sqlite")
    store = SqliteStore(str(tmp_path / "flask.db"))
    rx = sync_receiver(MemoryParent(), portal, store=store)
    app = make_app(rx)
    try:
        portal.call(
            get_service(app).receiver.async_receiver.store.credit, token_account(TOKEN), 250
        )

        def call(_: int) -> int:
            client = app.test_client()
            return client.post("/decorated", headers={"Pay-Token": TOKEN_HEADER}).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(call, range(50)))
        assert codes.count(200) == 25
        assert codes.count(402) == 25
        assert get_service(app).balance(token_account(TOKEN)) == 0
        assert store.commit_counts["blocking"] == 50
        # a failing view is refunded on its thread too
        portal.call(store.credit, token_account(TOKEN), 10)
        failed = app.test_client().post("/fails", headers={"Pay-Token": TOKEN_HEADER})
        assert failed.status_code == 500
        assert get_service(app).balance(token_account(TOKEN)) == 10
        assert store.commit_counts["blocking"] == 52
    finally:
        get_service(app).stop()
        portal.stop()
        asyncio.run(store.close())


def test_sync_facade_under_the_threaded_dev_server(net: Net) -> None:
    server = make_server("127.0.0.1", 0, net.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    http = httpx.Client(base_url=base, limits=httpx.Limits(max_connections=50), timeout=30)
    try:
        r = http.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
        assert r.status_code == 402
        net.pay(r.headers["Pay"], 250)

        def call(_: int) -> int:
            return http.post("/decorated", headers={"Pay-Token": TOKEN_HEADER}).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(call, range(50)))
        assert codes.count(200) == 25
        assert codes.count(402) == 25
        assert net.balance() == 0
    finally:
        http.close()
        server.shutdown()
        thread.join(5)


def test_receiver_built_from_config() -> None:
    portal = default_portal()
    parent = MemoryParent()
    portal.call(parent.start)
    app = Flask(__name__)
    app.config.update(
        ILP_RECEIVER_UPLINK=lambda: parent.child,
        ILP_RECEIVER_SECRET=SECRET.hex(),
        ILP_RECEIVER_NAME="Example",
    )
    ext = IlpReceiver()
    ext.init_app(app)

    @app.get("/")
    @paid(0)
    def index() -> str:
        return ext.receiver().address

    try:
        client = app.test_client()
        assert client.get("/").text == SERVER
        r = client.get("/.well-known/pay")
        assert r.json is not None
        assert r.json["receiver_info"] == {"name": "Example"}
        assert ext.balance("anything") == 0
    finally:
        ext.stop(app)


def test_missing_uplink_and_missing_extension() -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigError):
        IlpReceiver(app)
    other = Flask(__name__)
    other.testing = True

    @other.get("/")
    @paid(1)
    def index() -> str:
        return "x"

    with pytest.raises(RuntimeError, match="init_app"):
        other.test_client().get("/")


def test_request_facts_in_the_flask_thread(net: Net) -> None:
    seen: list[tuple[RequestFacts, str]] = []

    def price(facts: RequestFacts) -> int:
        seen.append((facts, threading.current_thread().name))
        return 10

    @net.app.get("/facts")
    @paid(price)
    def facts_view() -> str:
        return "x"

    net.app.test_client().get("/facts?q=1", headers={"Pay-Token": TOKEN_HEADER})
    facts, thread_name = seen[0]
    assert (facts.method, facts.path, facts.header("pay-token")) == ("GET", "/facts", TOKEN_HEADER)
    assert thread_name != "test-flask"


def test_missing_flask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.delitem(sys.modules, "ilp_receiver_flask")
    with pytest.raises(ImportError, match=r"pip install 'ilp-receiver\[flask\]'"):
        importlib.import_module("ilp_receiver_flask")


# ---------------------------------------------------------------------------------------
# HTTP-ILP over STREAM (ILP_RECEIVER_PAY_METHOD = "stream")


@pytest.fixture
def stream_net() -> Iterator[Net]:
    n = Net(ILP_RECEIVER_PAY_METHOD="stream", ILP_RECEIVER_PAY_WAIT=1.0)
    yield n
    n.close()


@pytest.mark.parametrize("path", PATHS)
def test_stream_402_data_wait_money_while_waiting_then_200(stream_net: Net, path: str) -> None:
    net = stream_net
    client = net.app.test_client()
    r = client.options(path)
    assert r.status_code == 204
    check_stream_pay(r.headers["Pay"])
    r = client.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402
    assert r.headers["Pay-Balance"] == "0"
    assert r.json is not None and r.json["price"] == "10"
    check_stream_pay(r.headers["Pay"])
    # the client: a stream with its max price (15) as send limit; waits for data
    clients = StreamEraClients(net.parent.pay, r.headers["Pay"], 15, gated=True)
    assert net.portal.call(clients.open) == [b"ready"]
    with ThreadPoolExecutor(1) as pool:
        repeated = pool.submit(
            lambda: net.app.test_client().post(path, headers={"Pay-Token": TOKEN_HEADER})
        )
        time.sleep(0.2)
        assert not repeated.done()  # the request waits while the money is held back
        net.portal.call(clients.release)
        r = repeated.result(10)
    assert r.status_code == 200
    assert r.text == "paid content"
    assert r.headers["Pay-Balance"] == "0"
    check_stream_pay(r.headers["Pay"])
    [result] = net.portal.call(clients.finish)
    assert result.delivered_amount == 10  # the receive limit: no more than asked
    assert net.balance() == 0


def test_stream_price_above_the_clients_max_is_402_and_nothing_is_lost(stream_net: Net) -> None:
    client = stream_net.app.test_client()
    r = client.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
    clients = StreamEraClients(stream_net.parent.pay, r.headers["Pay"], 7)
    stream_net.portal.call(clients.open)
    r = client.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402  # after waiting ILP_RECEIVER_PAY_WAIT for more
    assert r.headers["Pay-Balance"] == "7"
    [result] = stream_net.portal.call(clients.finish)
    assert result.delivered_amount == 7
    assert stream_net.balance() == 7


def test_stream_no_double_spend_with_threads(stream_net: Net) -> None:
    """50 requests on one token funded for 25 over STREAM while they wait."""
    net = stream_net
    client = net.app.test_client()
    pays = [
        client.post("/decorated", headers={"Pay-Token": TOKEN_HEADER}).headers["Pay"]
        for _ in range(25)
    ]
    clients = StreamEraClients(net.parent.pay, pays, 15, gated=True)
    net.portal.call(clients.open)

    def call(_: int) -> int:
        return (
            net.app.test_client()
            .post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
            .status_code
        )

    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(call, i) for i in range(50)]
        time.sleep(0.2)
        net.portal.call(clients.release)
        codes = [f.result(30) for f in futures]
    assert codes.count(200) == 25
    assert codes.count(402) == 25
    results = net.portal.call(clients.finish)
    assert sum(r.delivered_amount for r in results) == 250
    assert net.balance() == 0


def test_pay_method_per_route() -> None:
    """A PSK2 app with one STREAM view, one STREAM mapped route; and the other way."""
    net = Net(ILP_RECEIVER_PAID=[PaidRoute("/mapped", 10, pay_method="stream")])

    @net.app.post("/stream-view")
    @paid(10, pay_method="stream")
    def stream_view() -> str:
        return "x"

    try:
        client = net.app.test_client()
        check_pay(client.post("/decorated").headers["Pay"], 10)
        check_stream_pay(client.post("/mapped").headers["Pay"])
        check_stream_pay(client.post("/stream-view").headers["Pay"])
        check_stream_pay(client.options("/stream-view").headers["Pay"])
    finally:
        net.close()
    with pytest.raises(ConfigError):
        paid(1, pay_method="bitcoin")
    other = Net(ILP_RECEIVER_PAY_METHOD="stream")

    @other.app.post("/psk2-view")
    @paid(10, pay_method="psk2")
    def psk2_view() -> str:
        return "x"

    try:
        client = other.app.test_client()
        check_stream_pay(client.post("/decorated").headers["Pay"])
        check_pay(client.post("/psk2-view").headers["Pay"], 10)
    finally:
        other.close()


def test_body_price_keeps_the_body_and_the_apps_max_content_length() -> None:
    # the reader sets the request's own max_content_length (Flask 3.1) for the read and
    # puts it back; the app's smaller MAX_CONTENT_LENGTH still answers 413 (Werkzeug's)
    net = Net(MAX_CONTENT_LENGTH=50)
    try:
        seen: list[int | None] = []

        @net.app.post("/echo")
        @paid(per_byte(1, max_bytes=100))
        def echo() -> Any:
            seen.append(request.max_content_length)
            return jsonify(body=request.get_data(as_text=True), form=request.form.to_dict())

        client = net.app.test_client()
        chunked = {
            "CONTENT_LENGTH": "",
            "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input_terminated": True,
        }
        headers = {"Pay-Token": TOKEN_HEADER}
        r = client.post("/echo", headers=headers, data=b"a=1")
        assert r.status_code == 402
        net.pay(r.headers["Pay"], 100)
        r = client.post(
            "/echo",
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            input_stream=io.BytesIO(b"a=1&b=" + b"2" * 40),
            environ_overrides=chunked,
        )
        assert r.status_code == 200
        assert r.get_json() == {"body": "a=1&b=" + "2" * 40, "form": {"a": "1", "b": "2" * 40}}
        assert seen == [50]  # the app's limit again, for the view
        assert r.headers["Pay-Balance"] == "54"
        for overrides in (chunked, {}):
            r = client.post(
                "/echo",
                headers=headers,
                input_stream=io.BytesIO(b"x" * 51),
                environ_overrides=overrides,
            )
            assert r.status_code == 413
        assert net.balance() == 54
    finally:
        net.close()
