"""The aiohttp adapter (``integrations/ilp_receiver_aiohttp``) with aiohttp's TestClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.errors import ConfigError
from ilp_receiver.paywall import NO_TOKEN_MESSAGE, PaidRoute, per_byte, token_account
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver_aiohttp import (
    RECEIVER_KEY,
    SERVICE_KEY,
    get_receiver,
    paid,
    request_facts,
    setup,
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

PATHS = ["/decorated", "/mapped", "/any-method", "/priced"]


def make_app(rx: AsyncReceiver, **options: Any) -> web.Application:
    async def content(request: web.Request) -> web.Response:
        if request.query.get("fail") == "500":
            raise RuntimeError("route failed")
        if request.query.get("fail") == "404":
            raise web.HTTPNotFound()
        return web.Response(text="paid content")

    @paid(10)
    async def decorated(request: web.Request) -> web.Response:
        return await content(request)

    @paid(lambda facts: int(facts.header("x-units") or "1") * 10)
    async def priced(request: web.Request) -> web.Response:
        return await content(request)

    async def balance(request: web.Request) -> web.Response:
        value = await get_receiver(request).balance(token_account(TOKEN))
        return web.json_response({"balance": value, "path": request_facts(request).path})

    async def bob(request: web.Request) -> web.Response:
        return web.Response(text="bob's page")

    app = web.Application()
    app.router.add_post("/decorated", decorated)
    app.router.add_post("/priced", priced)
    app.router.add_post("/mapped", content)
    app.router.add_route("*", "/any-method", decorated)
    app.router.add_get("/balance", balance)
    app.router.add_get("/bob", bob)
    setup(app, rx, paid={"/mapped": 10}, pointers=["bob"], **options)
    return app


class Net:
    def __init__(
        self,
        parent: MemoryParent,
        rx: AsyncReceiver,
        client: TestClient[web.Request, web.Application],
    ) -> None:
        self.parent, self.rx, self.client = parent, rx, client

    async def pay(self, pay_value: str, amount: int) -> None:
        reply = await self.parent.pay(funding_prepare(pay_value, amount))
        assert isinstance(reply, IlpFulfill)


async def open_net(**options: Any) -> AsyncIterator[Net]:
    parent = MemoryParent()
    await parent.start()
    rx = async_receiver(parent)
    app = make_app(rx, **options)
    assert app[RECEIVER_KEY] is rx
    async with TestClient(TestServer(app)) as client:
        assert rx.link.is_connected  # started by cleanup_ctx
        yield Net(parent, rx, client)
    assert not rx.link.is_connected  # stopped by cleanup_ctx


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    async for n in open_net():
        yield n


@pytest.mark.parametrize("path", PATHS)
async def test_every_status(net: Net, path: str) -> None:
    c = net.client
    r = await c.options(path)
    assert r.status == 204
    check_pay(r.headers["Pay"], 10)
    assert "Pay-Balance" not in r.headers
    r = await c.options(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 204
    assert r.headers["Pay-Balance"] == "0"

    r = await c.post(path)
    assert r.status == 402
    check_pay(r.headers["Pay"], 10)
    assert (await r.json())["message"] == NO_TOKEN_MESSAGE

    r = await c.post(path, headers={"Pay-Token": "AAAA"})
    assert r.status == 400
    assert (await r.json())["id"] == "InvalidPayToken"

    r = await c.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 402
    assert r.headers["Pay-Balance"] == "0"
    await net.pay(r.headers["Pay"], 25)

    r = await c.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 200
    assert await r.text() == "paid content"
    assert r.headers["Pay-Balance"] == "15"
    check_pay(r.headers["Pay"], 10)
    assert await (await c.get("/balance")).json() == {"balance": 15, "path": "/balance"}


async def test_refunds_on_failure_and_on_error_answers(net: Net) -> None:
    # the one refund rule (docs/paid-api.md): the charge stands below 400 only
    c = net.client
    r = await c.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
    await net.pay(r.headers["Pay"], 30)
    r = await c.post("/decorated?fail=500", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 500
    assert await net.rx.balance(token_account(TOKEN)) == 30
    r = await c.post("/decorated?fail=404", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 404
    assert r.headers["Pay-Balance"] == "30"
    assert await net.rx.balance(token_account(TOKEN)) == 30
    r = await c.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 200
    assert r.headers["Pay-Balance"] == "20"


async def test_price_function(net: Net) -> None:
    r = await net.client.post("/priced", headers={"Pay-Token": TOKEN_HEADER, "X-Units": "3"})
    assert r.status == 402
    assert r.headers["Pay"].endswith(" 30")


async def test_payment_pointers(net: Net) -> None:
    c = net.client
    r = await c.get("/.well-known/pay", headers={"Accept": "application/spsp+json"})
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/spsp+json"
    assert (await r.json(content_type=None))["destination_account"].startswith(SERVER + ".")
    r = await c.get("/bob", headers={"Accept": "application/spsp+json"})
    assert r.status == 200
    r = await c.get("/bob", headers={"Accept": "text/html"})
    assert await r.text() == "bob's page"
    # STREAM clients get SPSP v4 from the same pointers, with receipts on request
    stream = {
        "Accept": "application/spsp4+json",
        "Receipt-Nonce": "AAECAwQFBgcICQoLDA0ODw==",
        "Receipt-Secret": "u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7s=",
    }
    for path in ("/.well-known/pay", "/bob"):
        r = await c.get(path, headers=stream)
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/spsp4+json"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert (await r.json(content_type=None))["receipts_enabled"] is True
    assert (await c.options("/.well-known/pay")).status == 204
    assert (await c.get("/nothing")).status == 404
    assert (await c.options("/balance")).status == 405


async def test_no_double_spend_with_asyncio_concurrency(net: Net) -> None:
    await net.rx.store.credit(token_account(TOKEN), 250)
    responses = await asyncio.gather(
        *(net.client.post("/decorated", headers={"Pay-Token": TOKEN_HEADER}) for _ in range(50))
    )
    codes = [r.status for r in responses]
    assert codes.count(200) == 25
    assert codes.count(402) == 25
    assert await net.rx.balance(token_account(TOKEN)) == 0


async def test_setup_builds_the_receiver_and_checks_arguments() -> None:
    parent = MemoryParent()
    await parent.start()
    app = web.Application()

    async def address(request: web.Request) -> web.Response:
        return web.Response(text=get_receiver(request).address)

    app.router.add_get("/", address)
    service = setup(app, uplink=parent.child, secret=bytes(32))
    assert app[SERVICE_KEY] is service
    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/")).text() == SERVER
    with pytest.raises(ConfigError):
        setup(web.Application())
    with pytest.raises(ConfigError):
        setup(web.Application(), async_receiver(parent), uplink="btp+ws://:x@h")


async def test_paid_without_setup_says_what_is_missing() -> None:
    @paid(1)
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="x")

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/")
        assert r.status == 500


# ---------------------------------------------------------------------------------------
# HTTP-ILP over STREAM (pay_method="stream")


@pytest.fixture
async def stream_net() -> AsyncIterator[Net]:
    async for n in open_net(pay_method="stream", pay_wait=1.0):
        yield n


@pytest.mark.parametrize("path", PATHS)
async def test_stream_402_data_wait_money_while_waiting_then_200(
    stream_net: Net, path: str
) -> None:
    c = stream_net.client
    r = await c.options(path)
    assert r.status == 204
    check_stream_pay(r.headers["Pay"])
    r = await c.post(path, headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 402
    assert r.headers["Pay-Balance"] == "0"
    check_stream_pay(r.headers["Pay"])
    clients = StreamEraClients(stream_net.parent.pay, r.headers["Pay"], 15, gated=True)
    assert await clients.open() == [b"ready"]
    repeated = asyncio.ensure_future(c.post(path, headers={"Pay-Token": TOKEN_HEADER}))
    await asyncio.sleep(0.2)
    assert not repeated.done()  # the request waits while the money is held back
    await clients.release()
    r = await asyncio.wait_for(repeated, 10)
    assert r.status == 200
    assert await r.text() == "paid content"
    assert r.headers["Pay-Balance"] == "0"
    check_stream_pay(r.headers["Pay"])
    [result] = await clients.finish()
    assert result.delivered_amount == 10
    assert await stream_net.rx.balance(token_account(TOKEN)) == 0


async def test_stream_price_above_the_clients_max_is_402_and_nothing_is_lost(
    stream_net: Net,
) -> None:
    c = stream_net.client
    r = await c.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
    clients = StreamEraClients(stream_net.parent.pay, r.headers["Pay"], 7)
    await clients.open()
    r = await c.post("/decorated", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status == 402
    assert r.headers["Pay-Balance"] == "7"
    [result] = await clients.finish()
    assert result.delivered_amount == 7
    assert await stream_net.rx.balance(token_account(TOKEN)) == 7


async def test_stream_no_double_spend_with_asyncio_concurrency(stream_net: Net) -> None:
    """50 requests on one token funded for 25 over STREAM while they wait."""
    c = stream_net.client
    token = {"Pay-Token": TOKEN_HEADER}
    pays = [(await c.post("/decorated", headers=token)).headers["Pay"] for _ in range(25)]
    clients = StreamEraClients(stream_net.parent.pay, pays, 15, gated=True)
    await clients.open()
    requests = [asyncio.ensure_future(c.post("/decorated", headers=token)) for _ in range(50)]
    await asyncio.sleep(0.2)
    await clients.release()
    codes = [r.status for r in await asyncio.gather(*requests)]
    assert codes.count(200) == 25
    assert codes.count(402) == 25
    results = await clients.finish()
    assert sum(r.delivered_amount for r in results) == 250
    assert await stream_net.rx.balance(token_account(TOKEN)) == 0


async def test_pay_method_per_route() -> None:
    parent = MemoryParent()
    await parent.start()

    @paid(10, pay_method="stream")
    async def streamed(request: web.Request) -> web.Response:
        return web.Response(text="x")

    async def content(request: web.Request) -> web.Response:
        return web.Response(text="x")

    app = web.Application()
    app.router.add_post("/stream", streamed)
    app.router.add_post("/mapped", content)
    app.router.add_post("/psk2", paid(10)(content))
    setup(app, async_receiver(parent), paid=[PaidRoute("/mapped", 10, pay_method="stream")])
    async with TestClient(TestServer(app)) as client:
        check_stream_pay((await client.post("/stream")).headers["Pay"])
        check_stream_pay((await client.options("/stream")).headers["Pay"])
        check_stream_pay((await client.post("/mapped")).headers["Pay"])
        check_pay((await client.post("/psk2")).headers["Pay"], 10)
    with pytest.raises(ConfigError):
        paid(1, pay_method="psk3")


async def test_body_prices_when_a_middleware_read_the_body_and_for_max_bytes_0() -> None:
    # the body reader clones the request (public aiohttp) and hands the handler the clone;
    # a body an outer middleware read already cannot be cloned: it is counted as read
    parent = MemoryParent()
    await parent.start()
    rx = async_receiver(parent)

    @web.middleware
    async def reads_first(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/pre-read":
            await request.read()
        return await handler(request)

    @paid(per_byte(1, max_bytes=100))
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"body": (await request.read()).decode()})

    @paid(per_byte(1, max_bytes=0, minimum=5))
    async def empty(request: web.Request) -> web.Response:
        return web.json_response({"body": (await request.read()).decode()})

    app = web.Application(middlewares=[reads_first])
    app.router.add_post("/pre-read", echo)
    app.router.add_post("/echo", echo)
    app.router.add_post("/empty", empty)
    setup(app, rx)
    async with TestClient(TestServer(app)) as client:
        net = Net(parent, rx, client)
        headers = {"Pay-Token": TOKEN_HEADER}
        r = await client.post("/echo", headers=headers, data=b"hello")
        assert r.status == 402
        await net.pay(r.headers["Pay"], 100)
        for path in ("/echo", "/pre-read"):
            r = await client.post(path, headers=headers, data=b"hello")
            assert (r.status, await r.json()) == (200, {"body": "hello"}), path
            r = await client.post(path, headers=headers, data=b"x" * 101)
            assert r.status == 413, path
        r = await client.post("/empty", headers=headers)
        assert (r.status, await r.json()) == (200, {"body": ""})
        assert r.headers["Pay-Balance"] == "85"  # 100 - 5 - 5 - 5 (the minimum)

        async def one_byte() -> AsyncIterator[bytes]:
            yield b"x"

        r = await client.post("/empty", headers=headers, data=one_byte())
        assert r.status == 413
        assert await rx.balance(token_account(TOKEN)) == 85
