"""The Starlette adapter (``integrations/ilp_receiver_starlette``) with Starlette's TestClient."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.errors import ConfigError
from ilp_receiver.paywall import NO_TOKEN_MESSAGE, PaidRoute, RequestFacts, token_account
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver_starlette import (
    IlpReceiverMiddleware,
    get_receiver,
    paid,
    paid_route,
    request_facts,
)
from tests.test_paywall import (
    SERVER,
    TOKEN,
    TOKEN_HEADER,
    MemoryParent,
    StreamEraClients,
    async_receiver,
    check_pay,
    check_stream_pay,
    funding_prepare,
)

PATHS = ["/route", "/decorated", "/mapped", "/sync"]


def make_app(rx: AsyncReceiver, failures: list[str] | None = None, **options: Any) -> Starlette:
    async def content(request: Request) -> Response:
        if request.query_params.get("fail"):
            raise RuntimeError("route failed")
        return PlainTextResponse("paid content")

    @paid(10)
    async def decorated(request: Request) -> Response:
        return await content(request)

    @paid(lambda facts: 10)
    def sync_endpoint(request: Request) -> Response:
        return PlainTextResponse("paid content")

    async def balance(request: Request) -> Response:
        receiver = get_receiver(request)
        value = await receiver.balance(token_account(TOKEN))
        return JSONResponse({"balance": value, "path": request_facts(request).path})

    routes = [
        paid_route("/route", content, price=10, methods=["POST"]),
        Route("/decorated", decorated, methods=["POST", "OPTIONS"]),
        Route("/mapped", content, methods=["POST", "OPTIONS"]),
        Route("/sync", sync_endpoint, methods=["POST", "OPTIONS"]),
        Route("/balance", balance),
        Route("/bob", lambda r: PlainTextResponse("bob's page")),
    ]
    middleware = [
        Middleware(
            IlpReceiverMiddleware, receiver=rx, paid={"/mapped": 10}, pointers=["bob"], **options
        )
    ]
    return Starlette(routes=routes, middleware=middleware)


@pytest.fixture
def parent() -> MemoryParent:
    return MemoryParent()


@pytest.fixture
def client(parent: MemoryParent) -> Any:
    asyncio.run(parent.start())
    rx = async_receiver(parent)
    with TestClient(make_app(rx)) as test_client:
        yield test_client
    assert not rx.link.is_connected  # stopped with the app's lifespan


def pay(client: TestClient, parent: MemoryParent, pay_value: str, amount: int) -> None:
    assert client.portal is not None
    reply = client.portal.call(parent.pay, funding_prepare(pay_value, amount))
    assert isinstance(reply, IlpFulfill)


@pytest.mark.parametrize("path", PATHS)
def test_every_status(client: TestClient, parent: MemoryParent, path: str) -> None:
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
    assert r.json()["message"] == NO_TOKEN_MESSAGE

    r = client.post(path, headers={"Pay-Token": "AAAA"})
    assert r.status_code == 400
    assert r.json()["id"] == "InvalidPayToken"

    r = client.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402
    assert r.headers["Pay-Balance"] == "0"
    pay(client, parent, r.headers["Pay"], 25)

    r = client.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 200
    assert r.text == "paid content"
    assert r.headers["Pay-Balance"] == "15"
    check_pay(r.headers["Pay"], 10)
    assert client.get("/balance").json() == {"balance": 15, "path": "/balance"}


def test_failing_route_is_refunded(client: TestClient, parent: MemoryParent) -> None:
    r = client.post("/route", headers={"Pay-Token": TOKEN_HEADER})
    pay(client, parent, r.headers["Pay"], 10)
    with pytest.raises(RuntimeError):
        client.post("/route?fail=1", headers={"Pay-Token": TOKEN_HEADER})
    assert client.get("/balance").json()["balance"] == 10


def test_payment_pointers(client: TestClient) -> None:
    r = client.get("/.well-known/pay", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/spsp+json"
    assert r.json()["destination_account"].startswith(SERVER + ".")
    assert client.get("/.well-known/pay", headers={"Accept": "text/html"}).status_code == 406
    r = client.get("/bob", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 200
    assert r.json()["destination_account"].startswith(SERVER + ".")
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
        assert r.headers["content-type"] == "application/spsp4+json"
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.json()["receipts_enabled"] is True
    assert client.options("/.well-known/pay").status_code == 204


def test_middleware_builds_its_receiver_from_options(parent: MemoryParent) -> None:
    asyncio.run(parent.start())
    app = Starlette(
        routes=[Route("/balance", lambda r: PlainTextResponse(get_receiver(r).address))],
        middleware=[Middleware(IlpReceiverMiddleware, uplink=parent.child, secret=bytes(32))],
    )
    with TestClient(app) as c:
        assert c.get("/balance").text == SERVER
    with pytest.raises(ConfigError):
        IlpReceiverMiddleware(app)
    with pytest.raises(ConfigError):
        IlpReceiverMiddleware(app, async_receiver(parent), uplink="btp+ws://:x@h")


def test_paid_decorator_without_middleware_says_what_is_missing(parent: MemoryParent) -> None:
    @paid(5)
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("x")

    with (
        TestClient(Starlette(routes=[Route("/x", endpoint)])) as c,
        pytest.raises(RuntimeError, match="IlpAsgiMiddleware"),
    ):
        c.get("/x")


async def test_no_double_spend_with_asyncio_concurrency(parent: MemoryParent) -> None:
    await parent.start()
    rx = async_receiver(parent)
    app = make_app(rx)
    async with rx:
        await rx.store.credit(token_account(TOKEN), 250)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            responses = await asyncio.gather(
                *(c.post("/decorated", headers={"Pay-Token": TOKEN_HEADER}) for _ in range(50))
            )
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 25
        assert codes.count(402) == 25
        assert await rx.store.balance(token_account(TOKEN)) == 0


def test_price_function_sees_request_facts(parent: MemoryParent) -> None:
    asyncio.run(parent.start())
    seen: list[RequestFacts] = []

    async def price(facts: RequestFacts) -> int:
        seen.append(facts)
        return int(facts.header("x-units") or "1") * 3

    @paid(price)
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[paid_route("/units", endpoint, price=price)],
        middleware=[Middleware(IlpReceiverMiddleware, receiver=async_receiver(parent))],
    )
    with TestClient(app) as c:
        r = c.get("/units", headers={"X-Units": "4"})
        assert r.status_code == 402
        assert r.headers["Pay"].endswith(" 12")
    assert seen[0].path == "/units"


def test_missing_starlette_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "starlette.routing", None)
    monkeypatch.delitem(sys.modules, "ilp_receiver_starlette")
    with pytest.raises(ImportError, match=r"pip install 'ilp-receiver\[starlette\]'"):
        importlib.import_module("ilp_receiver_starlette")


# ---------------------------------------------------------------------------------------
# HTTP-ILP over STREAM (pay_method="stream")


@pytest.fixture
def stream_client(parent: MemoryParent) -> Iterator[TestClient]:
    asyncio.run(parent.start())
    rx = async_receiver(parent)
    with TestClient(make_app(rx, pay_method="stream", pay_wait=1.0)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", PATHS)
def test_stream_402_data_wait_money_while_waiting_then_200(
    stream_client: TestClient, parent: MemoryParent, path: str
) -> None:
    client = stream_client
    assert client.portal is not None
    r = client.options(path)
    assert r.status_code == 204
    check_stream_pay(r.headers["Pay"])
    r = client.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402
    assert r.headers["Pay-Balance"] == "0"
    check_stream_pay(r.headers["Pay"])
    clients = StreamEraClients(parent.pay, r.headers["Pay"], 15, gated=True)
    assert client.portal.call(clients.open) == [b"ready"]
    with ThreadPoolExecutor(1) as pool:
        repeated = pool.submit(client.post, path, headers={"Pay-Token": TOKEN_HEADER})
        time.sleep(0.2)
        assert not repeated.done()  # the request waits while the money is held back
        client.portal.call(clients.release)
        r = repeated.result(10)
    assert r.status_code == 200
    assert r.text == "paid content"
    assert r.headers["Pay-Balance"] == "0"
    check_stream_pay(r.headers["Pay"])
    [result] = client.portal.call(clients.finish)
    assert result.delivered_amount == 10
    assert client.get("/balance").json()["balance"] == 0


def test_stream_price_above_the_clients_max_is_402_and_nothing_is_lost(
    stream_client: TestClient, parent: MemoryParent
) -> None:
    client = stream_client
    assert client.portal is not None
    r = client.post("/route", headers={"Pay-Token": TOKEN_HEADER})
    clients = StreamEraClients(parent.pay, r.headers["Pay"], 7)
    client.portal.call(clients.open)
    r = client.post("/route", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402
    assert r.headers["Pay-Balance"] == "7"
    [result] = client.portal.call(clients.finish)
    assert result.delivered_amount == 7
    assert client.get("/balance").json()["balance"] == 7


async def test_stream_no_double_spend_with_asyncio_concurrency(parent: MemoryParent) -> None:
    """50 requests on one token funded for 25 over STREAM while they wait."""
    await parent.start()
    rx = async_receiver(parent)
    app = make_app(rx, pay_method="stream", pay_wait=1.0)
    async with rx:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            token = {"Pay-Token": TOKEN_HEADER}
            pays = [(await c.post("/decorated", headers=token)).headers["Pay"] for _ in range(25)]
            clients = StreamEraClients(parent.pay, pays, 15, gated=True)
            await clients.open()
            requests = [
                asyncio.ensure_future(c.post("/decorated", headers=token)) for _ in range(50)
            ]
            await asyncio.sleep(0.2)
            await clients.release()
            responses = await asyncio.gather(*requests)
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 25
        assert codes.count(402) == 25
        results = await clients.finish()
        assert sum(r.delivered_amount for r in results) == 250
        assert await rx.store.balance(token_account(TOKEN)) == 0


def test_pay_method_per_route(parent: MemoryParent) -> None:
    asyncio.run(parent.start())

    async def content(request: Request) -> Response:
        return PlainTextResponse("x")

    app = Starlette(
        routes=[
            paid_route("/psk2", content, price=10, pay_method="psk2"),
            paid_route("/default", content, price=10),
            Route("/mapped", content),
        ],
        middleware=[
            Middleware(
                IlpReceiverMiddleware,
                receiver=async_receiver(parent),
                paid=[PaidRoute("/mapped", 10, pay_method="psk2")],
                pay_method="stream",
            )
        ],
    )
    with TestClient(app) as c:
        check_pay(c.get("/psk2").headers["Pay"], 10)
        check_pay(c.get("/mapped").headers["Pay"], 10)
        check_stream_pay(c.get("/default").headers["Pay"])
        check_stream_pay(c.options("/default").headers["Pay"])
    with pytest.raises(ConfigError):
        paid(1, pay_method="lightning")
