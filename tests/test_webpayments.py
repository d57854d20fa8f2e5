"""Web Payments (``ilp_receiver.webpayments``, spec 10): per-order pointers, "paid?", the
``InterledgerResponse`` check, over-payment, and the Starlette shop example.

Payments come from our own client through an :class:`InMemoryNetwork`; the apps run on
``httpx.ASGITransport`` in the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

import ilp_receiver_aiohttp as wm_aiohttp
import ilp_receiver_flask as wm_flask
from ilp_receiver.client import AsyncPaymentClient, PaymentResult
from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.errors import ConfigError, DecodeError
from ilp_receiver.http_reply import HttpReply
from ilp_receiver.paywall import RequestFacts
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.receiver import AsyncReceiver, Receiver
from ilp_receiver.spsp import SPSP4_MEDIA_TYPE, SpspResponse, parse_spsp_response
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver.web.monetization_endpoints import OrderEndpoints
from ilp_receiver.webpayments import (
    InvalidOrderIdError,
    OrderBook,
    OrderEvent,
    OrderStatus,
    fulfillment_base64,
    order_account,
    parse_interledger_response,
    payment_method_data,
    payment_request_json,
)
from tests.test_monetization import STREAM_ACCEPT, stream_prepare

SECRET = bytes(range(32))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Shop:
    """A receiver with an order book on an in-memory network, and a paying client."""

    def __init__(self, receiver: AsyncReceiver, payer: AsyncPaymentClient) -> None:
        self.receiver = receiver
        self.payer = payer
        self.orders = OrderBook(receiver, receiver_name="shop")
        self.endpoints = OrderEndpoints(self.orders)
        self.events: list[OrderEvent] = []
        self.orders.on_event(self.events.append)

    async def spsp(self, order_id: str, accept: str = "application/spsp+json") -> HttpReply:
        facts = RequestFacts.from_pairs("GET", f"/orders/{order_id}", [("Accept", accept)])
        reply = await self.endpoints.handle(facts)
        assert reply is not None
        return reply

    async def pay(self, order_id: str, amount: int) -> PaymentResult:
        reply = await self.spsp(order_id)
        assert reply.status == 200, reply.body
        return await self.payer.pay(parse_spsp_response(reply.body), amount)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    network = InMemoryNetwork("test.net")
    receiver = AsyncReceiver(await network.add_child("shop"), secret=SECRET)
    payer = AsyncPaymentClient(await network.add_child("buyer"))
    async with receiver, payer:
        yield Shop(receiver, payer)


async def settle() -> None:
    await asyncio.sleep(0.05)  # events are delivered after the Fulfill


async def test_order_is_paid_only_when_the_total_arrived(shop: Shop) -> None:
    created = await shop.orders.create_order("order-1", 1000)
    assert created == OrderStatus("order-1", 1000, 0)
    reply = await shop.spsp("order-1")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/spsp+json"
    body = json.loads(reply.body)
    assert body["balance"] == {"maximum": "1000", "current": "0"}
    assert body["maximum_destination_amount"] == "1000"
    assert body["receiver_info"] == {"name": "shop"}
    key = base64.urlsafe_b64decode(body["destination_account"].split(".")[-1] + "==")[18:]
    assert key == b"order:order-1"  # the order is bound in the authenticated key

    await shop.pay("order-1", 999)
    assert not await shop.orders.is_paid("order-1")
    status = await shop.orders.status("order-1")
    assert status is not None
    assert (status.received, status.remaining, status.paid) == (999, 1, False)
    body = json.loads((await shop.spsp("order-1")).body)
    assert body["balance"] == {"maximum": "1000", "current": "999"}
    assert body["minimum_destination_amount"] == "1"

    await shop.pay("order-1", 1)
    assert await shop.orders.is_paid("order-1")
    await settle()
    assert [(e.kind, e.amount, e.status.received) for e in shop.events] == [
        ("payment", 999, 999),
        ("payment", 1, 1000),
        ("paid", 1, 1000),
    ]


async def test_over_payment_is_reported_not_lost(shop: Shop) -> None:
    await shop.orders.create_order("order-2", 1000)
    overpaid: list[OrderEvent] = []
    paid: list[str] = []

    @shop.orders.on_overpaid
    async def note(event: OrderEvent) -> None:
        overpaid.append(event)

    shop.orders.on_paid(lambda e: paid.append(e.status.order_id))
    await shop.pay("order-2", 900)
    await shop.pay("order-2", 150)  # crosses the total: paid, and 50 over
    await shop.pay("order-2", 30)  # all of it over
    await settle()
    status = await shop.orders.status("order-2")
    assert status is not None
    assert (status.received, status.paid, status.overpaid, status.remaining) == (1080, True, 80, 0)
    assert status.to_json() == {
        "order_id": "order-2",
        "total": "1000",
        "received": "1080",
        "remaining": "0",
        "overpaid": "80",
        "paid": True,
    }
    assert await shop.receiver.balance(order_account("order-2")) == 1080  # kept
    assert paid == ["order-2"]
    assert [(e.amount, e.overpaid_by) for e in overpaid] == [(150, 50), (30, 30)]


async def stream_order_answer(shop: Shop, order_id: str) -> tuple[SpspResponse, dict[str, Any]]:
    reply = await shop.spsp(order_id, accept=STREAM_ACCEPT)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == SPSP4_MEDIA_TYPE
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    return parse_spsp_response(reply.body, protocol="stream"), json.loads(reply.body)


async def test_stream_payment_completes_an_order_as_psk2_does(shop: Shop) -> None:
    # test_order_is_paid_only_when_the_total_arrived and the over-payment, over STREAM
    await shop.orders.create_order("s-1", 1000)
    paid: list[str] = []
    shop.orders.on_paid(lambda e: paid.append(e.status.order_id))
    answer, body = await stream_order_answer(shop, "s-1")
    assert body["balance"] == {"maximum": "1000", "current": "0"}
    assert body["receiver_info"] == {"name": "shop"}
    assert "ledger_info" not in body  # an SPSP v4 body
    segment = answer.destination_account[len(shop.receiver.address) + 1 :]
    token = shop.receiver.stream_server.secrets.open_token(segment)
    assert token.connection_tag == "order:s-1"  # bound in the token's authenticated tag

    result = await shop.payer.pay(answer, 999)
    assert (result.protocol, result.delivered_amount) == ("stream", 999)
    assert not await shop.orders.is_paid("s-1")
    status = await shop.orders.status("s-1")
    assert status is not None
    assert (status.received, status.remaining, status.paid) == (999, 1, False)
    again, body = await stream_order_answer(shop, "s-1")
    assert body["balance"] == {"maximum": "1000", "current": "999"}

    await shop.payer.pay(again, 1)
    assert await shop.orders.is_paid("s-1")
    await settle()
    assert [(e.kind, e.amount, e.status.received) for e in shop.events] == [
        ("payment", 999, 999),
        ("payment", 1, 1000),
        ("paid", 1, 1000),
    ]
    await shop.payer.pay(again, 30)  # all of it over: kept and reported
    await settle()
    status = await shop.orders.status("s-1")
    assert status is not None
    assert (status.received, status.paid, status.overpaid) == (1030, True, 30)
    assert [(e.kind, e.amount, e.overpaid_by) for e in shop.events[3:]] == [
        ("payment", 30, 0),
        ("overpaid", 30, 30),
    ]
    assert paid == ["s-1"]

    # the browser's InterledgerResponse names the STREAM address it paid
    details = {
        "payeeAddress": answer.destination_account,
        "fulfillment": fulfillment_base64(bytes(32)),
        "error": None,
    }
    check = await shop.orders.verify("s-1", details)
    assert (check.confirmed, check.problems) == (True, ())
    await shop.orders.create_order("s-2", 1)
    other, _ = await stream_order_answer(shop, "s-2")
    tampered = answer.destination_account[:-4] + "AAAA"
    for address in (other.destination_account, tampered, shop.receiver.address + ".x"):
        check = await shop.orders.verify("s-1", {**details, "payeeAddress": address})
        assert check.problems == ("payeeAddress is not an address issued for this order",)


async def test_a_stream_packet_counts_once_for_its_order(shop: Shop) -> None:
    await shop.orders.create_order("s-3", 500)
    answer, _ = await stream_order_answer(shop, "s-3")
    prepare = stream_prepare(answer, 500)
    first = await shop.payer.send(prepare)
    assert isinstance(first, IlpFulfill)
    # the same Prepare delivered again: fulfilled again, counted once
    again = await shop.payer.send(prepare)
    assert isinstance(again, IlpFulfill)
    assert again.fulfillment == first.fulfillment
    assert await shop.orders.status("s-3") == OrderStatus("s-3", 500, 500)
    await settle()
    assert [(e.kind, e.amount) for e in shop.events] == [("payment", 500), ("paid", 500)]


async def test_unknown_and_bad_order_pointers(shop: Shop) -> None:
    for order_id in ("nope", "bad.id", "x" * 65):
        reply = await shop.spsp(order_id)
        assert reply.status == 404
        assert reply.headers["Content-Type"] == "application/json"
        assert json.loads(reply.body) == {
            "id": "InvalidReceiverError",
            "message": "Invalid receiver ID",
        }
    await shop.orders.create_order("o3", 5)
    # a page request for the same path is left to the shop; a STREAM-only query is SPSP
    page = RequestFacts.from_pairs("GET", "/orders/o3", [("Accept", "text/html")])
    assert await shop.endpoints.handle(page) is None
    stream_only = await shop.spsp("o3", accept="application/spsp4+json")
    assert stream_only.status == 200
    assert stream_only.headers["Content-Type"] == "application/spsp4+json"
    assert (await shop.spsp("nope", accept="application/spsp4+json")).status == 404
    assert await shop.endpoints.handle(RequestFacts("POST", "/orders/o3", {})) is None
    assert await shop.orders.status("nope") is None
    assert not await shop.orders.is_paid("nope")
    assert not await shop.orders.is_paid("bad.id")


async def test_create_order_checks(shop: Shop) -> None:
    await shop.orders.create_order("same", 10)
    assert (await shop.orders.create_order("same", 10)).total == 10
    with pytest.raises(ConfigError):
        await shop.orders.create_order("same", 11)
    for total in (0, -1, 2**64, 1.5):
        with pytest.raises(ConfigError):
            await shop.orders.create_order("t", total)  # type: ignore[arg-type]
    with pytest.raises(InvalidOrderIdError):
        await shop.orders.create_order("no/slash", 10)
    with pytest.raises(InvalidOrderIdError):
        order_account("")


async def test_total_of_reads_the_shops_own_records(shop: Shop) -> None:
    totals = {"db-7": 300}

    async def total_of(order_id: str) -> int | None:
        return totals.get(order_id)

    orders = OrderBook(shop.receiver, total_of=total_of)
    status = await orders.status("db-7")
    assert status == OrderStatus("db-7", 300, 0)
    assert await orders.status("db-8") is None
    orders_sync = OrderBook(shop.receiver, total_of=totals.get)
    assert await orders_sync.total("db-7") == 300


# ---------------------------------------------------------------------------------------
# Checking the InterledgerResponse


async def test_verify_confirms_only_against_our_records(shop: Shop) -> None:
    await shop.orders.create_order("o4", 100)
    reply = await shop.spsp("o4")
    answer = parse_spsp_response(reply.body)
    result = await shop.payer.pay(answer, 60)
    details = {
        "payeeAddress": answer.destination_account,
        "fulfillment": fulfillment_base64(bytes(32)),  # payers know it anyway
        "error": None,
    }
    check = await shop.orders.verify("o4", details)
    assert not check.confirmed  # a fulfillment is no proof: 60 of 100 arrived
    assert check.problems == ("our records show 60 of 100 received",)
    assert result.delivered_amount == 60

    await shop.payer.pay(answer, 40)
    check = await shop.orders.verify("o4", json.dumps(details))
    assert check.confirmed
    assert check.problems == ()
    assert check.status == OrderStatus("o4", 100, 100)
    assert check.response is not None
    assert check.response.payee_address == answer.destination_account

    # an address issued for another order, or not ours at all
    await shop.orders.create_order("o5", 1)
    other = parse_spsp_response((await shop.spsp("o5")).body).destination_account
    for address in (other, "test.elsewhere.x.y"):
        check = await shop.orders.verify("o4", {**details, "payeeAddress": address})
        assert not check.confirmed
        assert check.problems == ("payeeAddress is not an address issued for this order",)

    failed = {
        "payeeAddress": answer.destination_account,
        "fulfillment": None,
        "error": {"errorCode": "F02", "triggeredBy": "test.net"},
    }
    check = await shop.orders.verify("o4", failed)
    assert not check.confirmed
    assert check.problems == (
        "the payment handler reported F02 from test.net",
        "no fulfillment in the response",
    )
    check = await shop.orders.verify("o4", b"not json")
    assert check.problems == ("malformed InterledgerResponse: the InterledgerResponse is not JSON",)
    check = await shop.orders.verify("unknown", details)
    assert not check.confirmed
    assert check.status is None
    assert check.problems[0] == "unknown order"


def test_parse_interledger_response() -> None:
    fulfillment = bytes(range(32))
    standard = base64.b64encode(fulfillment).decode()
    url_safe = base64.urlsafe_b64encode(fulfillment).decode().rstrip("=")
    for text in (standard, url_safe):
        parsed = parse_interledger_response({"payeeAddress": "g.a", "fulfillment": text})
        assert parsed.fulfillment == fulfillment
        assert parsed.error is None
    assert fulfillment_base64(fulfillment) == standard
    bad: list[Any] = [
        [],
        {},
        {"payeeAddress": 5},
        {"payeeAddress": "g.a", "fulfillment": 5},
        {"payeeAddress": "g.a", "fulfillment": "!!!"},
        {"payeeAddress": "g.a", "fulfillment": base64.b64encode(b"short").decode()},
        {"payeeAddress": "g.a", "error": "F02"},
        {"payeeAddress": "g.a", "error": {"errorCode": 2}},
        "[",
    ]
    for value in bad:
        with pytest.raises(DecodeError):
            parse_interledger_response(value)
    with pytest.raises(ValueError, match="32 bytes"):
        fulfillment_base64(b"x")


JSONISH = st.recursive(
    st.none() | st.text(max_size=50) | st.integers(),
    lambda c: st.dictionaries(st.text(max_size=12), c, max_size=4) | st.lists(c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(JSONISH)
def test_parse_interledger_response_raises_only_decode_error(value: Any) -> None:
    for candidate in (value, {"payeeAddress": "g.a", "fulfillment": value, "error": value}):
        with contextlib.suppress(DecodeError):
            parse_interledger_response(candidate)


def test_payment_method_data_and_request_json() -> None:
    assert payment_method_data("$bobshardware.example") == {
        "supportedMethods": "interledger",
        "data": {"payee": "$bobshardware.example"},
    }
    text = payment_request_json("$shop.example/orders/</script>", value="10.00", currency="USD")
    assert "</script>" not in text
    assert json.loads(text) == {
        "methodData": [
            {"supportedMethods": "interledger", "data": {"payee": "$shop.example/orders/</script>"}}
        ],
        "details": {"total": {"label": "Total", "amount": {"currency": "USD", "value": "10.00"}}},
    }
    with pytest.raises(ConfigError):
        payment_request_json("$x", value="ten", currency="USD")
    with pytest.raises(ConfigError):
        payment_method_data("")


# ---------------------------------------------------------------------------------------
# The adapters' order endpoints


async def test_aiohttp_order_pointers(shop: Shop) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    app = web.Application()
    wm_aiohttp.setup(app, shop.receiver)
    wm_aiohttp.setup_web_payments(app, shop.orders)
    await shop.orders.create_order("ao", 10)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/orders/ao", headers={"Accept": "application/spsp+json"})
        assert r.status == 200
        assert json.loads(await r.read())["balance"]["maximum"] == "10"
        r = await client.get("/orders/zz", headers={"Accept": "application/spsp+json"})
        assert r.status == 404
        assert (await r.json())["id"] == "InvalidReceiverError"
    with pytest.raises(RuntimeError, match="setup"):
        wm_aiohttp.setup_web_payments(web.Application(), shop.orders)


def test_flask_order_pointers() -> None:
    portal = BlockingPortal("test-wp-flask")
    network = InMemoryNetwork("test.net")
    link = portal.call(network.add_child, "shop")
    rx = Receiver(link, portal=portal, secret=SECRET)
    app = Flask(__name__)
    wm_flask.IlpReceiver(app, receiver=rx)
    orders = OrderBook()
    wm_flask.WebPayments(app, orders=orders)
    client = app.test_client()
    try:
        endpoints = wm_flask.get_web_payments(app)
        endpoints.call(orders.create_order, "fo", 7)
        r = client.get("/orders/fo", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 200
        assert r.get_json()["balance"] == {"maximum": "7", "current": "0"}
        r = client.get("/orders/unknown", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 404
        assert r.get_json()["id"] == "InvalidReceiverError"
        assert not endpoints.call(orders.is_paid, "fo")
    finally:
        wm_flask.get_service(app).stop()
        portal.stop()


# ---------------------------------------------------------------------------------------
# The Starlette shop example


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_starlette_shop_example(shop: Shop) -> None:
    example = load_example("starlette_shop")
    app = example.create_app(receiver=shop.receiver)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://shop.example") as c:
        r = await c.post("/orders", json={"item": "mug"})
        assert r.status_code == 201
        order = r.json()
        order_id = order["order_id"]
        assert order["payee"] == f"$shop.example/orders/{order_id}"
        assert order["status"]["total"] == "1000"

        page = await c.get(order["checkout"])
        assert page.status_code == 200
        assert '"supportedMethods":"interledger"' in page.text
        assert f'"payee":"$shop.example/orders/{order_id}"' in page.text

        spsp = await c.get(f"/orders/{order_id}", headers={"Accept": "application/spsp+json"})
        assert spsp.status_code == 200
        answer = parse_spsp_response(spsp.content)
        assert answer.balance is not None
        assert answer.balance.maximum == 1000
        await shop.payer.pay(answer, 999)
        details = {
            "payeeAddress": answer.destination_account,
            "fulfillment": base64.b64encode(bytes(32)).decode(),
            "error": None,
        }
        r = await c.post(f"/orders/{order_id}/confirm", json=details)
        assert r.json()["confirmed"] is False
        assert r.json()["status"]["remaining"] == "1"
        await shop.payer.pay(answer, 1)
        r = await c.post(f"/orders/{order_id}/confirm", json=details)
        assert r.json() == {
            "confirmed": True,
            "problems": [],
            "status": {
                "order_id": order_id,
                "total": "1000",
                "received": "1000",
                "remaining": "0",
                "overpaid": "0",
                "paid": True,
            },
        }
        await shop.payer.pay(answer, 25)
        await settle()
        status = (await c.get(f"/orders/{order_id}/status")).json()
        assert (status["overpaid"], status["received"]) == ("25", "1025")
        assert (await c.get("/events")).json() == {"paid": [order_id], "overpaid": {order_id: 25}}

        r = await c.get("/orders/unknown", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 404
        assert r.json()["id"] == "InvalidReceiverError"
        assert (await c.get("/orders/unknown/status")).status_code == 404
        assert (await c.post("/orders", json={"item": "nothing"})).status_code == 400
        r = await c.post("/orders/unknown/confirm", json=details)
        assert r.status_code == 404
