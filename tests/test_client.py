"""The paying client (ilp_receiver.client) against our own receiver, in memory.

An :class:`~ilp_receiver.testing.InMemoryNetwork` plays the connector: it answers IL-DCP
for both sides and forwards Prepares (optionally with a rate, a packet-size limit or
injected errors).  SPSP is served by ``create_spsp_app`` on a loopback port.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from math import ceil

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.cli import main
from ilp_receiver.client import (
    AsyncHttpIlpClient,
    AsyncPaymentClient,
    ChunkedPayment,
    ChunkProgress,
    HttpIlpError,
    PaymentClient,
    PaymentError,
    Psk2Destination,
    QuoteError,
)
from ilp_receiver.client.results import PaymentResult
from ilp_receiver.codec.ilp import IlpFulfill, IlpReject, encode_amount_too_large_data
from ilp_receiver.codec.oer import MAX_UINT64
from ilp_receiver.codec.pay_header import (
    PSK2_METHOD,
    PayHeader,
    format_pay_balance,
    format_pay_header,
    parse_pay_token,
)
from ilp_receiver.codec.psk2 import (
    Draft1Packet,
    Draft1Type,
    decode_any,
    derive_keys,
    encode_draft1,
    encrypt,
)
from ilp_receiver.commands.pay import ProgressBar
from ilp_receiver.errors import ConfigError, LocalProtocolError, PaymentPointerError, SpspError
from ilp_receiver.links.memory import memory_link_pair
from ilp_receiver.links.uplink import PeerConfig
from ilp_receiver.portal import default_portal
from ilp_receiver.receiver import AsyncReceiver, IncomingPayment
from ilp_receiver.spsp import SpspResponse
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver_aiohttp import create_spsp_app

SECRET = bytes(range(32))


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.fixture
def network() -> InMemoryNetwork:
    return InMemoryNetwork()


@pytest.fixture
async def receiver(network: InMemoryNetwork) -> AsyncIterator[AsyncReceiver]:
    r = AsyncReceiver(await network.add_child("bob"), secret=SECRET)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def spsp_port(receiver: AsyncReceiver) -> AsyncIterator[int]:
    runner, port = await serve(create_spsp_app(receiver))
    yield port
    await runner.cleanup()


@pytest.fixture
def spsp_url(spsp_port: int) -> str:
    return f"http://127.0.0.1:{spsp_port}/.well-known/pay"


@pytest.fixture
async def client(network: InMemoryNetwork) -> AsyncIterator[AsyncPaymentClient]:
    # these tests exercise the PSK2 sender: our receiver also offers STREAM (SPSP v4),
    # which protocol="auto" would pick (STREAM is tested in test_stream_sender.py)
    c = await AsyncPaymentClient.connect(
        await network.add_child("alice"),
        lenient=True,
        allow_http_for_loopback=True,
        protocol="psk2",
    )
    yield c
    await c.close()


def decrypt(secret: bytes, data: bytes) -> Draft1Packet:
    packet = decode_any(derive_keys(secret).encryption_key, data)
    assert isinstance(packet, Draft1Packet)
    return packet


# ---------------------------------------------------------------------- connect, SPSP


async def test_connect_learns_address_by_ildcp(client: AsyncPaymentClient) -> None:
    assert client.address == "test.memory.alice"
    assert client.config == PeerConfig("test.memory.alice", "XYZ", 9)


async def test_query_by_url_and_by_pointer(
    client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_port: int, spsp_url: str
) -> None:
    by_url = await client.query(spsp_url)
    assert by_url.destination_account.startswith("test.memory.bob.")
    assert len(by_url.shared_secret) == 32
    assert by_url.balance is not None and by_url.balance.current == 0
    assert by_url.asset is not None and (by_url.asset.code, by_url.asset.scale) == ("XYZ", 9)
    # "$host:port" needs lenient; loopback hosts resolve to http:// with the flag
    assert client.resolve(f"$127.0.0.1:{spsp_port}") == spsp_url
    by_pointer = await client.query(f"$localhost:{spsp_port}")
    assert by_pointer.destination_account.startswith("test.memory.bob.")


async def test_pointer_resolution_follows_rfc_26() -> None:
    strict = AsyncPaymentClient()
    assert strict.resolve("$example.com") == "https://example.com/.well-known/pay"
    assert strict.resolve("$example.com/bob") == "https://example.com/bob"
    assert strict.resolve("$localhost/bob") == "https://localhost/bob"
    with pytest.raises(PaymentPointerError):
        strict.resolve("$example.com:8443/bob")  # ports only when lenient
    with pytest.raises(PaymentPointerError):
        strict.resolve("ftp://example.com/")
    await strict.close()


async def test_default_client_pays_the_pointers_local_servers_print(
    network: InMemoryNetwork, receiver: AsyncReceiver, spsp_port: int
) -> None:
    # `$127.0.0.1:PORT` as `ilp-receiver demo` / `receive` print it: no options needed
    async with AsyncPaymentClient(await network.add_child("carol")) as plain:
        pointer = f"$127.0.0.1:{spsp_port}"
        assert plain.resolve(pointer) == f"http://127.0.0.1:{spsp_port}/.well-known/pay"
        result = await plain.pay(pointer, 300)
        assert result.delivered_amount == 300
    assert await receiver.balance() == 300


async def test_query_cache_honours_max_age(client: AsyncPaymentClient, spsp_url: str) -> None:
    first = await client.query(spsp_url)
    assert await client.query(spsp_url) is first  # Cache-Control: max-age=60
    fresh = await client.query(spsp_url, use_cache=False)
    assert fresh.shared_secret != first.shared_secret  # a fresh secret per query
    assert await client.query(spsp_url) is fresh
    client.clear_cache()
    assert await client.query(spsp_url) is not fresh


@pytest.fixture
async def odd_server() -> AsyncIterator[int]:
    """SPSP endpoints that misbehave in various ways."""
    seen_accept: list[str] = []

    async def html(request: web.Request) -> web.Response:
        seen_accept.append(request.headers.get("Accept", ""))
        return web.Response(text="<html></html>", content_type="text/html")

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"id": "InternalError", "message": "boom"}, status=500)

    async def bad_json(request: web.Request) -> web.Response:
        return web.Response(text="{", content_type="application/spsp+json")

    async def no_cache(request: web.Request) -> web.Response:
        seen_accept.append(request.headers.get("Accept", ""))
        body = SpspResponse("test.x.y", bytes(32)).to_json()
        return web.json_response(
            body, content_type="application/spsp+json", headers={"Cache-Control": "no-cache"}
        )

    app = web.Application()
    app.router.add_get("/html", html)
    app.router.add_get("/broken", broken)
    app.router.add_get("/bad-json", bad_json)
    app.router.add_get("/no-cache", no_cache)
    runner, port = await serve(app)
    yield port
    # protocol="psk2": "The JS client sends exactly accept: application/spsp+json"
    assert seen_accept and all(a == "application/spsp+json" for a in seen_accept)
    await runner.cleanup()


async def test_query_errors_carry_the_status(
    client: AsyncPaymentClient, spsp_port: int, odd_server: int
) -> None:
    with pytest.raises(SpspError) as info:
        await client.query(f"http://127.0.0.1:{spsp_port}/not/an/endpoint")
    assert info.value.status == 404
    with pytest.raises(SpspError) as info:
        await client.query(f"http://127.0.0.1:{odd_server}/broken")
    assert info.value.status == 500 and "boom" in str(info.value)
    with pytest.raises(SpspError, match="content type") as info:
        await client.query(f"http://127.0.0.1:{odd_server}/html")
    assert info.value.status == 200
    with pytest.raises(SpspError, match="not JSON"):
        await client.query(f"http://127.0.0.1:{odd_server}/bad-json")
    with pytest.raises(SpspError) as info:
        await client.query("http://127.0.0.1:1/.well-known/pay")  # nothing listens
    assert info.value.status is None


async def test_no_cache_is_not_cached(client: AsyncPaymentClient, odd_server: int) -> None:
    url = f"http://127.0.0.1:{odd_server}/no-cache"
    first = await client.query(url)
    assert await client.query(url) is not first


# ---------------------------------------------------------------------- single payments


async def test_pay_single_chunk_draft1(
    client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    result = await client.pay(spsp_url, 1000, min_destination_amount=1000)
    assert result.delivered_amount == 1000
    assert result.source_amount == 1000
    assert result.draft == "draft1" and result.payment_id is not None
    assert result.receiver_total == 1000
    assert await receiver.balance() == 1000
    spsp = await client.query(spsp_url, use_cache=False)
    assert spsp.balance is not None and spsp.balance.current == 1000


async def test_pay_single_draft2_request(
    client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    result = await client.pay(spsp_url, 700, draft="draft2", data=b"hello")
    assert result.delivered_amount == 700
    assert result.draft == "draft2" and result.payment_id is None
    assert await receiver.balance() == 700


async def test_pay_with_a_rate_and_a_minimum(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    network.rate = Fraction(19, 20)
    result = await client.pay(spsp_url, 1000, min_destination_amount=950)
    assert result.delivered_amount == 950
    with pytest.raises(PaymentError) as info:
        await client.pay(spsp_url, 1000, min_destination_amount=951)
    assert info.value.code == "F99"
    assert info.value.arrived == 950  # from the receiver's encrypted type-3 response
    assert info.value.result.delivered_amount == 0
    with pytest.raises(PaymentError) as info:
        await client.pay(spsp_url, 1000, min_destination_amount=951, draft="draft2")
    assert (info.value.code, info.value.arrived) == ("F99", 950)
    assert await receiver.balance() == 950


async def test_pay_accepts_spsp_responses_and_destinations(
    client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    spsp = await client.query(spsp_url)
    await client.pay(spsp, 10)
    destination, secret = receiver.issue()
    await client.pay(Psk2Destination(destination, secret), 20)
    assert await receiver.balance() == 30
    with pytest.raises(ConfigError):
        await client.pay(spsp, 0)


async def test_quote_both_drafts(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    network.rate = Fraction(19, 20)
    quote = await client.quote(spsp_url)
    assert (quote.source_amount, quote.destination_amount, quote.code) == (1000, 950, "F99")
    assert quote.rate == Fraction(19, 20)
    quote2 = await client.quote(spsp_url, 2000, draft="draft2")
    assert (quote2.destination_amount, quote2.code) == (1900, "F05")
    assert await receiver.balance() == 0  # quotes pay nothing


async def test_quote_without_answer_raises(
    client: AsyncPaymentClient, receiver: AsyncReceiver
) -> None:
    with pytest.raises(QuoteError) as info:
        await client.quote(Psk2Destination("test.memory.nobody.x", SECRET), 10)
    assert info.value.code == "F02"


async def test_receiver_that_rejects(network: InMemoryNetwork, client: AsyncPaymentClient) -> None:
    def refuse(payment: IncomingPayment) -> bool:
        return False

    shop = AsyncReceiver(await network.add_child("shop"), secret=SECRET, on_payment=refuse)
    await shop.start()
    try:
        destination, secret = shop.issue()
        target = Psk2Destination(destination, secret)
        with pytest.raises(PaymentError) as info:
            await client.pay(target, 100)
        assert info.value.code == "F99"
        assert info.value.ilp_message == "payment refused by the receiver"
        assert info.value.triggered_by == "test.memory.shop"
        with pytest.raises(PaymentError) as info:
            await client.pay_chunked(target, source_amount=1000, chunk_size=100)
        assert info.value.result.chunks_fulfilled == 0
        assert info.value.result.chunks_rejected == 1
        assert await shop.balance() == 0
    finally:
        await shop.stop()


async def test_expired_prepares_are_refused(
    network: InMemoryNetwork, receiver: AsyncReceiver
) -> None:
    late = await AsyncPaymentClient.connect(
        await network.add_child("late"), expiry=timedelta(seconds=-1)
    )
    destination, secret = receiver.issue()
    with pytest.raises(PaymentError) as info:
        await late.pay(Psk2Destination(destination, secret), 100)
    assert info.value.code == "R02"  # the connector refuses it first
    await late.close()
    # straight to the receiver (no connector): it refuses expired Prepares itself
    ours, theirs = memory_link_pair()
    direct = AsyncReceiver(theirs, secret=SECRET, static_config=PeerConfig("test.d.bob", "X", 0))
    await direct.start()
    sender = await AsyncPaymentClient.connect(
        ours,
        static_config=PeerConfig("test.d.alice", "X", 0),
        expiry=timedelta(milliseconds=-1),
    )
    destination, secret = direct.issue()
    with pytest.raises(PaymentError) as info:
        await sender.pay(Psk2Destination(destination, secret), 100)
    assert info.value.code == "R00"
    await sender.close()
    await direct.stop()


async def test_link_failure_becomes_payment_error(receiver: AsyncReceiver) -> None:
    ours, _theirs = memory_link_pair()
    sender = AsyncPaymentClient(ours, static_config=PeerConfig("test.x", "X", 0))
    await ours.start()  # the other end never starts: sends fail
    destination, secret = receiver.issue()
    with pytest.raises(PaymentError, match="uplink failed"):
        await sender.pay(Psk2Destination(destination, secret), 100)
    with pytest.raises(PaymentError, match="aborted"):
        await sender.pay_chunked(Psk2Destination(destination, secret), source_amount=100)
    await sender.close()
    await ours.stop()


async def test_client_without_uplink_only_queries(spsp_url: str) -> None:
    spsp_only = AsyncPaymentClient(allow_http_for_loopback=True)
    await spsp_only.start()
    assert spsp_only.address is None
    spsp = await spsp_only.query(spsp_url)
    with pytest.raises(ConfigError):
        await spsp_only.pay(spsp, 1)
    await spsp_only.close()


# ---------------------------------------------------------------------- chunked payments


async def test_pay_chunked_by_source_amount_with_progress(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    seen: list[ChunkProgress] = []
    spsp = await client.query(spsp_url)
    result = await client.pay_chunked(
        spsp, source_amount=1000, chunk_size=300, progress=seen.append
    )
    assert (result.source_amount, result.delivered_amount) == (1000, 1000)
    assert result.chunks_fulfilled == 4 and result.chunks_rejected == 0
    assert [p.source_sent for p in seen] == [300, 600, 900, 1000]
    assert seen[-1].fraction == 1.0
    assert result.receiver_total == 1000
    assert await receiver.balance() == 1000
    # draft-1 conventions: one paymentId, increasing sequence, type 0 then 1 on the last
    packets = [decrypt(spsp.shared_secret, f.prepare.data) for f in network.forwarded]
    assert {p.payment_id for p in packets} == {result.payment_id}
    assert [p.sequence for p in packets] == [0, 1, 2, 3]
    assert [p.type for p in packets] == [0, 0, 0, 1]
    assert [f.prepare.amount for f in network.forwarded] == [300, 300, 300, 100]
    assert {p.payment_amount for p in packets} == {MAX_UINT64}
    # the first chunk asks for nothing (rate unknown), later ones for rate x chunk
    assert [p.chunk_amount for p in packets] == [0, 300, 300, 100]


async def test_pay_chunked_by_destination_amount(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver, spsp_url: str
) -> None:
    network.rate = Fraction(1, 2)
    spsp = await client.query(spsp_url)
    result = await client.pay_chunked(spsp, destination_amount=1000, chunk_size=700)
    assert result.delivered_amount == 1000
    assert result.source_amount == 2000
    assert await receiver.balance() == 1000
    packets = [decrypt(spsp.shared_secret, f.prepare.data) for f in network.forwarded]
    assert {p.payment_amount for p in packets} == {1000}  # the payment's total
    assert packets[-1].type == Draft1Type.LAST_CHUNK


async def test_pay_chunked_to_the_spsp_maximum(
    network: InMemoryNetwork, client: AsyncPaymentClient
) -> None:
    invoice = AsyncReceiver(await network.add_child("invoice"), secret=SECRET, max_balance=2500)
    await invoice.start()
    runner, port = await serve(create_spsp_app(invoice))
    try:
        result = await client.pay_chunked(f"http://127.0.0.1:{port}/", chunk_size=1000)
        assert result.delivered_amount == 2500
        assert await invoice.balance() == 2500
        with pytest.raises(ConfigError, match="already at its maximum"):
            await client.pay_chunked(f"http://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()
        await invoice.stop()


async def test_f08_shrinks_the_chunk(network: InMemoryNetwork, receiver: AsyncReceiver) -> None:
    small = await AsyncPaymentClient.connect(
        await network.add_child("small", max_packet_amount=250)
    )
    destination, secret = receiver.issue()
    target = Psk2Destination(destination, secret)
    try:
        result = await small.pay_chunked(target, source_amount=1000, chunk_size=1000)
        assert result.delivered_amount == 1000
        assert result.chunks_rejected == 1  # one F08, then 250-unit chunks
        assert [f.prepare.amount for f in network.forwarded] == [250, 250, 250, 250]
        with pytest.raises(PaymentError) as info:
            await small.pay(target, 1000)
        assert info.value.code == "F08"
    finally:
        await small.close()


async def test_temporary_errors_back_off_then_succeed(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver
) -> None:
    destination, secret = receiver.issue()
    network.fail_next("T04", count=2, message="no liquidity")
    result = await client.pay_chunked(
        Psk2Destination(destination, secret),
        source_amount=1000,
        chunk_size=400,
        initial_backoff=0.001,
    )
    assert result.delivered_amount == 1000
    assert result.chunks_rejected == 2
    # T04 halved the chunk twice (400 -> 200 -> 100), then it grows by 10 % per chunk
    assert network.forwarded[0].prepare.amount == 100


async def test_temporary_errors_give_up_after_max_retries(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver
) -> None:
    destination, secret = receiver.issue()
    network.fail_next("T05", count=5, message="slow down")
    with pytest.raises(PaymentError) as info:
        await client.pay_chunked(
            Psk2Destination(destination, secret),
            source_amount=1000,
            max_retries=2,
            initial_backoff=0.001,
        )
    assert info.value.code == "T05"
    assert info.value.result.chunks_rejected == 3
    assert info.value.result.source_amount == 0


async def test_rate_drop_mid_payment_is_absorbed(
    network: InMemoryNetwork, client: AsyncPaymentClient, receiver: AsyncReceiver
) -> None:
    destination, secret = receiver.issue()

    def drop_rate(progress: ChunkProgress) -> None:
        network.rate = Fraction(1, 2)

    result = await client.pay_chunked(
        Psk2Destination(destination, secret),
        source_amount=1500,
        chunk_size=500,
        progress=drop_rate,
    )
    assert result.source_amount == 1500
    assert result.delivered_amount == 500 + 250 + 250
    assert result.chunks_rejected == 1  # F99 "less arrived than asked", then re-estimated
    assert await receiver.balance() == 1000


async def test_final_error_stops_chunked_payment(client: AsyncPaymentClient) -> None:
    with pytest.raises(PaymentError) as info:
        await client.pay_chunked(
            Psk2Destination("test.memory.nobody.abc", SECRET), source_amount=10
        )
    assert info.value.code == "F02"
    assert info.value.result.source_amount == 0


async def test_async_progress_callback(client: AsyncPaymentClient, receiver: AsyncReceiver) -> None:
    seen: list[int] = []

    async def record(progress: ChunkProgress) -> None:
        seen.append(progress.delivered)

    destination, secret = receiver.issue()
    await client.pay_chunked(
        Psk2Destination(destination, secret), source_amount=25, chunk_size=10, progress=record
    )
    assert seen == [10, 20, 25]


def test_chunked_state_machine_directly() -> None:
    from datetime import UTC, datetime

    from ilp_receiver.crypto import sha256

    secret = bytes(32)
    payment = ChunkedPayment(
        Psk2Destination("test.x.y", secret), payment_id=bytes(16), source_amount=100
    )
    at = datetime(2030, 1, 1, tzinfo=UTC)
    prepare = payment.next_prepare(iv=bytes(12), expires_at=at)
    assert prepare is not None and prepare.amount == 100
    with pytest.raises(LocalProtocolError):
        payment.next_prepare(iv=bytes(12), expires_at=at)
    # an F08 without data halves the chunk
    outcome = payment.on_reply(IlpReject("F08", "test.c", "too big"))
    assert outcome.error is None and payment.progress.chunk_size == 50
    prepare = payment.next_prepare(iv=bytes(12), expires_at=at)
    assert prepare is not None and prepare.amount == 50
    # an F08 with data scales by maximum/received
    outcome = payment.on_reply(IlpReject("F08", "test.c", "", encode_amount_too_large_data(50, 20)))
    assert payment.progress.chunk_size == 20
    prepare = payment.next_prepare(iv=bytes(12), expires_at=at)
    assert prepare is not None
    # a Fulfill whose fulfillment does not hash to the condition fails the payment
    outcome = payment.on_reply(IlpFulfill(bytes(32)))
    assert outcome.error is not None and "fulfillment" in str(outcome.error)
    assert sha256(bytes(32)) != prepare.execution_condition
    with pytest.raises(LocalProtocolError):
        payment.next_prepare(iv=bytes(12), expires_at=at)
    with pytest.raises(ConfigError):
        ChunkedPayment(Psk2Destination("test.x.y", secret), payment_id=bytes(16))
    with pytest.raises(ConfigError):
        ChunkedPayment(
            Psk2Destination("test.x.y", secret),
            payment_id=bytes(16),
            source_amount=1,
            destination_amount=1,
        )


def test_chunked_fulfill_without_valid_response_counts_the_minimum() -> None:
    from datetime import UTC, datetime

    secret = bytes(32)
    keys = derive_keys(secret)
    payment = ChunkedPayment(
        Psk2Destination("test.x.y", secret), payment_id=bytes(16), destination_amount=10
    )
    prepare = payment.next_prepare(iv=bytes(12), expires_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert prepare is not None
    fulfillment = keys.fulfillment(prepare.data)
    # a response for another sequence number does not answer this chunk
    wrong = encrypt(
        keys.encryption_key,
        bytes(12),
        encode_draft1(Draft1Packet(Draft1Type.FULFILLMENT, bytes(16), 7, 0, 5)),
    )
    outcome = payment.on_reply(IlpFulfill(fulfillment, wrong))
    assert outcome.error is not None
    assert outcome.error.result.source_amount == 1000
    assert outcome.error.result.delivered_amount == 1  # destination mode asks for >= 1


# ---------------------------------------------------------------------- HTTP-ILP


@dataclass
class PaidApi:
    """A tiny HTTP-ILP server (koa-ilp style) crediting tokens from our receiver's hook."""

    price: int
    receiver: AsyncReceiver | None = None
    balances: dict[bytes, int] = field(default_factory=dict)
    requests: int = 0

    def hook(self, payment: IncomingPayment) -> bool | None:
        if payment.format == "psk2-draft1":
            token = payment.payment_id
        else:
            token = payment.application_data[:16]
        if token is None or len(token) != 16:
            return False
        self.balances[token] = self.balances.get(token, 0) + payment.amount
        return None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        raw = request.headers.get("Pay-Token")
        if raw is None:
            return web.Response(status=402, text="No valid payment token provided")
        token = parse_pay_token(raw)
        balance = self.balances.get(token, 0)
        assert self.receiver is not None
        destination, secret = self.receiver.issue()
        pay = format_pay_header(PayHeader(PSK2_METHOD, destination, secret, self.price))
        if balance < self.price:
            return web.Response(
                status=402,
                text="Payment Required",
                headers={"Pay": pay, "Pay-Balance": format_pay_balance(balance)},
            )
        self.balances[token] = balance - self.price
        return web.Response(
            text="the paid content",
            headers={"Pay": pay, "Pay-Balance": format_pay_balance(balance - self.price)},
        )


@pytest.fixture
async def paid_api(network: InMemoryNetwork) -> AsyncIterator[tuple[PaidApi, str]]:
    api = PaidApi(price=100)
    shop = AsyncReceiver(await network.add_child("api"), secret=SECRET, on_payment=api.hook)
    api.receiver = shop
    await shop.start()
    app = web.Application()
    app.router.add_get("/paid", api.handle)
    runner, port = await serve(app)
    yield api, f"http://127.0.0.1:{port}/paid"
    await runner.cleanup()
    await shop.stop()


@pytest.mark.parametrize("draft", ["draft1", "draft2"])
async def test_http_ilp_pays_on_402_and_retries(
    network: InMemoryNetwork,
    client: AsyncPaymentClient,
    paid_api: tuple[PaidApi, str],
    draft: str,
) -> None:
    api, url = paid_api
    network.rate = Fraction(19, 20)
    http = AsyncHttpIlpClient(client, draft=draft)  # type: ignore[arg-type]
    response = await http.get(url)
    assert response.status == 200
    assert response.text() == "the paid content"
    assert response.pay_balance == 0
    assert response.payment is not None and response.quote is not None
    assert response.quote.destination_amount == 950
    assert response.payment.source_amount == 106  # ceil(100 / 950 x 1000)
    assert response.payment.delivered_amount == 100
    token = http.token_for(url)
    assert api.balances == {token: 0}
    # the same token is topped up again for the next paid request
    again = await http.get(url)
    assert again.status == 200 and again.payment is not None
    assert http.token_for(url) == token
    assert api.requests == 4


async def test_http_ilp_without_payment_and_over_the_limit(
    client: AsyncPaymentClient, paid_api: tuple[PaidApi, str]
) -> None:
    _, url = paid_api
    http = AsyncHttpIlpClient(client)
    unpaid = await http.get(url, pay=False)
    assert unpaid.status == 402
    assert unpaid.pay is not None and unpaid.pay.price == 100
    assert unpaid.pay_balance == 0
    stingy = AsyncHttpIlpClient(client, max_price=99)
    with pytest.raises(HttpIlpError, match="max_price") as info:
        await stingy.get(url)
    assert info.value.response.status == 402


async def test_http_ilp_draft1_binds_the_token_as_payment_id(
    network: InMemoryNetwork, client: AsyncPaymentClient, paid_api: tuple[PaidApi, str]
) -> None:
    api, url = paid_api
    http = AsyncHttpIlpClient(client, draft="draft1")
    await http.get(url)
    await http.get(url)
    token = http.token_for(url)
    # decrypt what reached the API's receiver: quotes use sequence 0, payments 1, 2
    assert api.receiver is not None
    secrets = api.receiver._secrets  # test-only peek to open the packets
    seen = []
    for forwarded in network.forwarded:
        parsed = secrets.parse_destination(forwarded.prepare.destination, api.receiver.address)
        packet = decode_any(parsed.keys.encryption_key, forwarded.prepare.data)
        assert isinstance(packet, Draft1Packet) and packet.payment_id == token
        seen.append((packet.sequence, packet.type, isinstance(forwarded.reply, IlpFulfill)))
    assert seen == [(0, 1, False), (1, 0, True), (0, 1, False), (2, 0, True)]


# ---------------------------------------------------------------------- sync facade, CLI


@dataclass
class PortalWorld:
    """A network, a receiver and its SPSP server running on the default portal loop."""

    network: InMemoryNetwork
    receiver: AsyncReceiver
    runner: web.AppRunner
    port: int
    api: PaidApi
    api_runner: web.AppRunner
    api_port: int


@pytest.fixture
def portal_world() -> Iterator[PortalWorld]:
    portal = default_portal()

    async def setup() -> PortalWorld:
        network = InMemoryNetwork()
        receiver = AsyncReceiver(await network.add_child("bob"), secret=SECRET)
        await receiver.start()
        runner, port = await serve(create_spsp_app(receiver))
        api = PaidApi(price=100)
        shop = AsyncReceiver(await network.add_child("api"), secret=SECRET, on_payment=api.hook)
        api.receiver = shop
        await shop.start()
        app = web.Application()
        app.router.add_get("/paid", api.handle)
        api_runner, api_port = await serve(app)
        return PortalWorld(network, receiver, runner, port, api, api_runner, api_port)

    world = portal.call(setup)
    yield world

    async def teardown() -> None:
        await world.runner.cleanup()
        await world.api_runner.cleanup()
        await world.receiver.stop()
        assert world.api.receiver is not None
        await world.api.receiver.stop()

    portal.call(teardown)


def test_sync_facade(portal_world: PortalWorld) -> None:
    portal = default_portal()
    link = portal.call(portal_world.network.add_child, "sync")
    url = f"http://127.0.0.1:{portal_world.port}/.well-known/pay"
    with PaymentClient(link) as client:
        assert client.address == "test.memory.sync"
        spsp = client.query(url)
        assert spsp.destination_account.startswith("test.memory.bob.")
        result = client.pay(url, 500)
        assert result.delivered_amount == 500
        quote = client.quote(url, 300, draft="draft2")
        assert quote.destination_amount == 300
        seen: list[ChunkProgress] = []
        chunked = client.pay_chunked(url, source_amount=250, chunk_size=100, progress=seen.append)
        assert chunked.delivered_amount == 250 and len(seen) == 3
        http = client.http_ilp(draft="draft2")
        response = http.get(f"http://127.0.0.1:{portal_world.api_port}/paid")
        assert response.status == 200 and response.pay_balance == 0
    assert portal.call(portal_world.receiver.balance) == 750


def test_cli_query(portal_world: PortalWorld, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{portal_world.port}/.well-known/pay"
    assert main(["query", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shared_secret"] == "<redacted>"
    assert out["destination_account"].startswith("test.memory.bob.")
    assert main(["query", "--show-secret", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["shared_secret"]) == 44  # 32 bytes, padded base64
    assert main(["query", "--lenient", "--http-loopback", f"$127.0.0.1:{portal_world.port}"]) == 0
    capsys.readouterr()
    assert main(["query", f"http://127.0.0.1:{portal_world.port}/a/b"]) == 1
    assert "404" in capsys.readouterr().err


def test_cli_query_takes_the_pointer_local_servers_print(
    portal_world: PortalWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    # `ilp-receiver demo` and `receive` print `$127.0.0.1:PORT`: it works as printed
    for pointer in (f"$127.0.0.1:{portal_world.port}", f"$localhost:{portal_world.port}"):
        assert main(["query", pointer]) == 0, capsys.readouterr().err
        out = json.loads(capsys.readouterr().out)
        assert out["destination_account"].startswith("test.memory.bob.")
    # a port on another host still needs --lenient, and the message says so
    assert main(["query", "$example.com:8443/bob"]) == 2
    err = capsys.readouterr().err
    assert "--lenient" in err and "lenient=True" not in err
    # forcing https:// at a plain-HTTP loopback server: the error points to the flag
    assert main(["query", "--no-http-loopback", f"$127.0.0.1:{portal_world.port}"]) == 1
    err = capsys.readouterr().err
    assert "--http-loopback" in err and "allow_http_for_loopback" not in err


def test_cli_pay(portal_world: PortalWorld, capsys: pytest.CaptureFixture[str]) -> None:
    portal = default_portal()
    gateway = portal.call(portal_world.network.serve_btp)
    pointer = f"http://127.0.0.1:{portal_world.port}/.well-known/pay"
    try:
        psk2 = ["--protocol", "psk2"]  # our receiver offers STREAM too; this is PSK2
        assert main(["pay", pointer, "1000", "--uplink", gateway.url("cli"), *psk2]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is True and out["delivered_amount"] == "1000"
        assert set(out) >= PAY_KEYS and out["mode"] == "pay" and out["error"] is None
        assert out["pointer_balance"] == "1000"  # the pointer's balance after paying
        code = main(
            ["pay", pointer, "1000", "--uplink", gateway.url("cli2"), "--chunked",
             "--chunk-size", "300", *psk2]
        )  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0
        out = json.loads(captured.out)
        assert set(out) >= PAY_KEYS and out["mode"] == "chunked"
        assert out["packets_fulfilled"] == 4 and out["delivered_amount"] == "1000"
        assert out["pointer_balance"] == "2000"
        assert out["payment_total"] == "1000"  # this payment's total, not the balance
        assert "%" not in captured.err  # stderr is not a terminal: no progress bar
        code = main(
            ["pay", pointer, "500", "--uplink", gateway.url("cli5"), "--chunked",
             "--chunk-size", "300", "--progress", *psk2]
        )  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0 and "100.0%" in captured.err and "units/s" in captured.err
        code = main(["pay", pointer, "1000", "--uplink", gateway.url("cli3"), "--quote", *psk2])
        assert code == 0
        out = json.loads(capsys.readouterr().out)
        # a quote is not an error: the same keys, no code
        assert set(out) >= PAY_KEYS and out["ok"] is True and out["error"] is None
        assert out["mode"] == "quote" and out["delivered_amount"] == "1000"
        assert "code" not in out
        # payment failure: 1 (the receiver cannot be reached)
        code = main(
            ["pay", pointer, "10", "--uplink", gateway.url("cli4"),
             "--min-destination-amount", "11", *psk2]
        )  # fmt: skip
        assert code == 1
        out = json.loads(capsys.readouterr().out)
        assert set(out) >= PAY_KEYS and out["ok"] is False and out["error"]["code"] == "F99"
        # the pointer as `receive` prints it
        local = f"$127.0.0.1:{portal_world.port}"
        assert main(["pay", local, "100", "--uplink", gateway.url("cli6"), *psk2]) == 0
        assert json.loads(capsys.readouterr().out)["pointer_balance"] == "2600"
    finally:
        portal.call(gateway.close)
    assert portal.call(portal_world.receiver.balance) == 2600


def test_cli_pay_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pay", "$example.com", "ten", "--uplink", "btp+ws://:t@127.0.0.1:1"])
    assert info.value.code == 2
    assert main(["pay", "$example.com", "10", "--uplink", "gopher://x"]) == 2
    assert main(["pay", "nonsense", "10", "--uplink", "btp+ws://:t@127.0.0.1:1"]) == 2
    capsys.readouterr()
    code = main(
        ["pay", "$example.com", "10", "--uplink", "btp+ws://:t@127.0.0.1:1",
         "--connect-timeout", "5"]
    )  # fmt: skip
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= PAY_KEYS and out["ok"] is False
    assert out["error"]["message"].startswith("cannot connect the uplink")


#: The keys of every `ilp-receiver pay` result line, in every mode (docs/client.md).
PAY_KEYS = {
    "ok",
    "mode",
    "protocol",
    "destination",
    "source_amount",
    "delivered_amount",
    "packets_fulfilled",
    "packets_rejected",
    "pointer_balance",
    "error",
}


def test_progress_bar_text() -> None:
    import io

    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10, enabled=True, clock=lambda: now[0])
    now[0] = 2.0
    assert bar.line(ChunkProgress(500, 450, 5, 1, 100, 1000, None)) == (
        "[#####.....]  50.0% sent 500/1000 delivered 450 chunks 5 (+1 rejected) 250 units/s ETA 2s"
    )
    now[0] = 4.0
    assert bar.line(ChunkProgress(1000, 900, 10, 1, 100, 1000, None)) == (
        "[##########] 100.0% sent 1000/1000 delivered 900 chunks 10 (+1 rejected) 250 units/s"
    )
    bar(ChunkProgress(1000, 900, 10, 1, 100, 1000, None))
    bar.close()
    assert stream.getvalue().startswith("\r[##########] 100.0%")
    assert stream.getvalue().endswith("\n")
    # not a terminal: nothing is drawn unless forced
    quiet = io.StringIO()
    ProgressBar(quiet)(ChunkProgress(500, 450, 5, 1, 100, 1000, None))
    assert quiet.getvalue() == ""


def test_results_to_json() -> None:
    result = PaymentResult("test.x", 10, 9, 1, payment_id=bytes(16), receiver_total=9)
    assert result.to_json()["payment_id"] == "00" * 16
    assert result.rate == Fraction(9, 10)
    error = PaymentError("no", result=result, code="F99", arrived=3, ilp_message="m")
    assert error.to_json()["arrived"] == "3"


# ---------------------------------------------------------------------- properties


def _simulate(
    payment: ChunkedPayment, secret: bytes, rate: Fraction, max_packet: int
) -> PaymentResult:
    """Drive the state machine against a simulated path + draft-1 receiver."""
    from datetime import UTC, datetime

    keys = derive_keys(secret)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    for _ in range(5_000):
        prepare = payment.next_prepare(iv=bytes(12), expires_at=at)
        if prepare is None:
            return payment.result
        reply: IlpFulfill | IlpReject
        if prepare.amount > max_packet:
            reply = IlpReject(
                "F08", "test.c", "", encode_amount_too_large_data(prepare.amount, max_packet)
            )
        else:
            request = decrypt(secret, prepare.data)
            arrived = int(prepare.amount * rate)
            if arrived < request.chunk_amount:
                error = Draft1Packet(
                    Draft1Type.ERROR, request.payment_id, request.sequence, 0, arrived
                )
                data = encrypt(keys.encryption_key, bytes(12), encode_draft1(error))
                reply = IlpReject("F99", "test.r", "", data)
            else:
                response = Draft1Packet(
                    Draft1Type.FULFILLMENT, request.payment_id, request.sequence, 0, arrived
                )
                data = encrypt(keys.encryption_key, bytes(12), encode_draft1(response))
                reply = IlpFulfill(keys.fulfillment(prepare.data), data)
        outcome = payment.on_reply(reply)
        if outcome.error is not None:
            raise outcome.error
        if outcome.finished:
            return payment.result
    raise AssertionError("the payment did not finish")


@st.composite
def paths(draw: st.DrawFn) -> tuple[int, int, int, Fraction, bool]:
    """A payment and a path small enough to finish in a few hundred chunks."""
    amount = draw(st.integers(1, 100_000))
    rate = draw(st.fractions(Fraction(1, 20), Fraction(20)))
    least = max(1, ceil(amount / 200 / min(rate, Fraction(1))))
    chunk = draw(st.integers(least, least * 50))
    max_packet = draw(st.integers(least, least * 50))
    return amount, chunk, max_packet, rate, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(path=paths())
def test_chunked_payment_completes_on_any_path(
    path: tuple[int, int, int, Fraction, bool],
) -> None:
    amount, chunk, max_packet, rate, by_destination = path
    secret = bytes(range(32))
    target = Psk2Destination("test.x.y", secret)
    if by_destination:
        payment = ChunkedPayment(
            target, payment_id=bytes(16), destination_amount=amount, chunk_size=chunk
        )
    else:
        payment = ChunkedPayment(
            target, payment_id=bytes(16), source_amount=amount, chunk_size=chunk
        )
    if by_destination and int(min(chunk, max_packet) * rate) == 0:
        # a path that cannot deliver even one unit per packet fails (and only that)
        with pytest.raises(PaymentError):
            _simulate(payment, secret, rate, max_packet)
        return
    result = _simulate(payment, secret, rate, max_packet)
    if by_destination:
        assert result.delivered_amount >= amount
    else:
        assert result.source_amount == amount
        assert result.delivered_amount <= int(amount * rate)
