"""``AsyncHttpIlpClient`` paying ``Pay: interledger-stream`` (HTTP-ILP over STREAM).

Our paywall (the aiohttp adapter with ``pay_method="stream"``) runs on loopback with its
receiver a child of an :class:`~ilp_receiver.testing.InMemoryNetwork`; the paying client
is another child.  The client follows the STREAM-era flow: 402 -> STREAM connection and
stream, send limit ``max_price`` -> the server's first byte -> the request again while
the money flows -> the stream closed when the response is in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ilp_receiver.client import AsyncHttpIlpClient, AsyncPaymentClient, HttpIlpError
from ilp_receiver.codec.pay_header import STREAM_METHOD
from ilp_receiver.paywall import STREAM_GREETING, paywall_payment_hook, token_account
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver_aiohttp import paid, setup

SECRET = bytes(range(32))


@dataclass
class World:
    network: InMemoryNetwork
    api: AsyncReceiver
    payer: AsyncPaymentClient
    url: str


@pytest.fixture
async def world() -> AsyncIterator[World]:
    network = InMemoryNetwork()
    api = AsyncReceiver(
        await network.add_child("api"), secret=SECRET, on_payment=paywall_payment_hook
    )

    @paid(100)
    async def report(request: web.Request) -> web.Response:
        return web.Response(text="the paid report")

    app = web.Application()
    app.router.add_get("/report", report)
    setup(app, api, pay_method="stream", pay_wait=2.0)
    async with TestServer(app) as server:
        payer = await AsyncPaymentClient.connect(await network.add_child("alice"))
        try:
            yield World(network, api, payer, str(server.make_url("/report")))
        finally:
            await payer.close()


async def test_pays_a_stream_402_and_gets_the_response(world: World) -> None:
    http = AsyncHttpIlpClient(world.payer, max_price=150)
    unpaid = await http.get(world.url, pay=False)
    assert unpaid.status == 402
    assert unpaid.pay is not None and unpaid.pay.method == STREAM_METHOD
    assert unpaid.pay.price is None  # the stream's receive limit states it
    response = await http.get(world.url)
    assert response.status == 200
    assert response.text() == "the paid report"
    assert response.pay_balance == 0
    payment = response.payment
    assert payment is not None and payment.protocol == "stream"
    # the send limit was 150; the receive limit (the price) stopped it at 100
    assert payment.delivered_amount == payment.source_amount == 100
    assert payment.data == STREAM_GREETING  # what it waited for before repeating
    token = http.token_for(world.url)
    assert await world.api.balance(token_account(token)) == 0
    again = await http.get(world.url)  # the same token, a new stream
    assert again.status == 200 and again.payment is not None
    assert again.payment.delivered_amount == 100


async def test_with_an_exchange_rate(world: World) -> None:
    world.network.rate = Fraction(1, 2)
    http = AsyncHttpIlpClient(world.payer, max_price=300)
    response = await http.get(world.url)
    assert response.status == 200
    assert response.payment is not None
    assert response.payment.delivered_amount == 100
    assert response.payment.source_amount == 200


async def test_without_max_price_the_402_body_price_is_the_limit(world: World) -> None:
    response = await AsyncHttpIlpClient(world.payer).get(world.url)
    assert response.status == 200
    assert response.payment is not None and response.payment.source_amount == 100


async def test_a_price_above_max_price_is_not_paid(world: World) -> None:
    http = AsyncHttpIlpClient(world.payer, max_price=99)
    with pytest.raises(HttpIlpError, match="max_price") as info:
        await http.get(world.url)
    assert info.value.response.status == 402
    assert await world.api.balance(token_account(http.token_for(world.url))) == 0
    assert not [f for f in world.network.forwarded if f.prepare.amount]  # nothing sent
