"""AsyncReceiver with STREAM beside PSK2: one pointer, SPSP v4, money credited exactly once
before the Fulfill, the application hook, limits, events and stream data."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ilp_receiver.client import AsyncPaymentClient
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ilp_receiver.codec.stream import (
    ConnectionClose,
    ErrorCode,
    Frame,
    StreamData,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    StreamReceipt,
)
from ilp_receiver.errors import IlpError
from ilp_receiver.links.memory import MemoryLink
from ilp_receiver.receiver import DEFAULT_ACCOUNT, AsyncReceiver, IncomingPayment, PaymentEvent
from ilp_receiver.spsp import SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE, parse_spsp_response
from ilp_receiver.stores import BalanceStore
from ilp_receiver.stream.receipts import verify_receipt
from ilp_receiver.stream.secrets import derive_keys, open_packet, seal_packet
from ilp_receiver.stream.server import DataReceived, StreamEvent, StreamLimits, StreamSetup
from ilp_receiver_aiohttp import create_spsp_app
from tests.test_receiver import SECRET, chunk, parent_link
from tests.test_stores import Factory


class Connection:
    """A minimal hand-driven STREAM client on the parent's end of the link."""

    def __init__(self, parent: MemoryLink, destination: str, shared_secret: bytes) -> None:
        self.parent = parent
        self.destination = destination
        self.keys = derive_keys(shared_secret)
        self.sequence = 0
        self.replies: list[StreamPacket] = []

    def prepare(
        self,
        amount: int,
        frames: tuple[Frame, ...],
        *,
        fulfillable: bool = True,
        prepare_amount: int = 0,
    ) -> IlpPrepare:
        self.sequence += 1
        packet = StreamPacket(self.sequence, 12, prepare_amount, frames)
        data = seal_packet(self.keys, os.urandom(12), packet)
        condition = self.keys.condition(data) if fulfillable else os.urandom(32)
        expires = datetime.now(UTC) + timedelta(seconds=30)
        return IlpPrepare(amount, expires, condition, self.destination, data)

    async def send(self, prepare: IlpPrepare) -> IlpReply:
        reply = await self.parent.send(prepare)
        if reply.data:
            packet = open_packet(self.keys, reply.data)
            assert packet.sequence == self.sequence
            assert packet.ilp_packet_type == (13 if isinstance(reply, IlpFulfill) else 14)
            self.replies.append(packet)
        return reply

    async def pay(self, amount: int, stream_id: int = 1) -> IlpReply:
        return await self.send(self.prepare(amount, (StreamMoney(stream_id, 1),)))


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[tuple[MemoryLink, AsyncReceiver]]:
    parent, child = parent_link()
    await parent.start()
    receiver = AsyncReceiver(child, secret=SECRET, store=str(tmp_path / "balances.sqlite3"))
    await receiver.start()
    yield parent, receiver
    await receiver.stop()


def connect(
    parent: MemoryLink, receiver: AsyncReceiver, account: str = DEFAULT_ACCOUNT
) -> Connection:
    destination, secret = receiver.issue_stream(account)
    return Connection(parent, destination, secret)


async def test_one_pointer_answers_stream_and_psk2_clients(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    async with TestClient(TestServer(create_spsp_app(receiver))) as http:
        both = await http.get(
            "/.well-known/pay", headers={"Accept": f"{SPSP4_MEDIA_TYPE}, {SPSP_MEDIA_TYPE}"}
        )
        assert both.status == 200
        assert both.headers["Content-Type"].startswith(SPSP4_MEDIA_TYPE)
        assert both.headers["Access-Control-Allow-Origin"] == "*"
        assert both.headers["Cache-Control"] == "max-age=60"
        body = await both.json(content_type=None)
        assert body["receipts_enabled"] is False and "ledger_info" not in body
        stream = parse_spsp_response(body, protocol="stream")
        # a STREAM destination is <address>.<token>: one segment after our address
        assert stream.destination_account.count(".") == receiver.address.count(".") + 1
        psk2_only = await http.get("/.well-known/pay", headers={"Accept": SPSP_MEDIA_TYPE})
        assert psk2_only.headers["Content-Type"].startswith(SPSP_MEDIA_TYPE)
        psk2 = parse_spsp_response(await psk2_only.json(content_type=None))
        # both protocols pay the same account on the same pointer
        conn = Connection(parent, stream.destination_account, stream.shared_secret)
        assert isinstance(await conn.pay(700), IlpFulfill)
        assert isinstance(
            await parent.send(chunk(psk2.destination_account, psk2.shared_secret, 300)), IlpFulfill
        )
        assert await receiver.balance() == 1000
        again = await (await http.get("/.well-known/pay")).json(content_type=None)
        assert again["balance"]["current"] == "1000"
        preflight = await http.options("/.well-known/pay")
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "Receipt-Nonce" in preflight.headers["Access-Control-Allow-Headers"]


async def test_receipts_are_switched_on_by_the_query_headers(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    nonce, secret = os.urandom(16), os.urandom(32)
    headers = {
        "Accept": SPSP4_MEDIA_TYPE,
        "Receipt-Nonce": base64.b64encode(nonce).decode(),
        "Receipt-Secret": base64.b64encode(secret).decode(),
    }
    async with TestClient(TestServer(create_spsp_app(receiver))) as http:
        answer = await http.get("/.well-known/pay", headers=headers)
        spsp = parse_spsp_response(await answer.json(content_type=None), protocol="stream")
        assert spsp.receipts_enabled is True
        only_nonce = {"Receipt-Nonce": headers["Receipt-Nonce"]}
        for bad in (only_nonce, {**headers, "Receipt-Secret": "x"}):
            refused = await http.get(
                "/.well-known/pay", headers={"Accept": SPSP4_MEDIA_TYPE, **bad}
            )
            assert refused.status == 400
            assert (await refused.json())["id"] == "InvalidReceiptError"
    conn = Connection(parent, spsp.destination_account, spsp.shared_secret)
    await conn.pay(400)
    await conn.pay(600)
    receipts = [f for f in conn.replies[-1].frames if isinstance(f, StreamReceipt)]
    assert len(receipts) == 1
    receipt = verify_receipt(receipts[0].receipt, secret)
    assert receipt.nonce == nonce and receipt.total_received == 1000


async def test_money_is_credited_once_before_the_fulfill(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    conn = connect(parent, receiver, "order:7")
    prepare = conn.prepare(250, (StreamMoney(1, 1),))
    first = await conn.send(prepare)
    assert isinstance(first, IlpFulfill)
    assert first.fulfillment == conn.keys.fulfillment(prepare.data)
    assert await receiver.balance("order:7") == 250  # committed when the Fulfill left
    # a duplicate delivery of the same Prepare: fulfilled again, never credited twice
    again = await parent.send(prepare)
    assert isinstance(again, IlpFulfill) and again.fulfillment == first.fulfillment
    assert await receiver.balance("order:7") == 250
    # an unfulfillable packet (a rate probe) is answered F99 with the amount that arrived
    probe = await conn.send(conn.prepare(1000, (StreamMoney(1, 1),), fulfillable=False))
    assert isinstance(probe, IlpReject) and probe.code == "F99"
    assert conn.replies[-1].prepare_amount == 1000
    # asking for more than arrives is refused and not counted
    greedy = await conn.send(conn.prepare(10, (StreamMoney(1, 1),), prepare_amount=11))
    assert isinstance(greedy, IlpReject) and greedy.code == "F99"
    assert await receiver.balance("order:7") == 250


async def test_the_hook_refuses_redirects_and_raises_codes(tmp_path: Path) -> None:
    parent, child = parent_link()
    await parent.start()
    seen: list[IncomingPayment] = []

    def hook(payment: IncomingPayment) -> str | bool | None:
        seen.append(payment)
        if payment.amount == 13:
            return False
        if payment.amount == 14:
            raise IlpError("F99", "fourteen is unlucky")
        if payment.amount == 15:
            return "elsewhere"
        return None

    async with AsyncReceiver(child, secret=SECRET, on_payment=hook) as receiver:
        conn = connect(parent, receiver)
        refused = await conn.pay(13)
        assert isinstance(refused, IlpReject) and refused.code == "F99" and refused.data
        raised = await conn.pay(14)
        assert isinstance(raised, IlpReject) and raised.message == "fourteen is unlucky"
        assert isinstance(await conn.pay(15), IlpFulfill)
        assert isinstance(await conn.pay(16), IlpFulfill)
        assert await receiver.balance("elsewhere") == 15
        assert await receiver.balance() == 16
        payment = seen[-1]
        assert payment.format == "stream" and payment.account == DEFAULT_ACCOUNT
        assert payment.streams == ((1, 16),) and payment.connection_id
        assert payment.payment_id is not None and len(payment.payment_id) == 16
        assert {p.payment_id for p in seen} == {payment.payment_id}  # one connection


async def test_max_balance_refuses_without_losing_money() -> None:
    parent, child = parent_link()
    await parent.start()
    async with AsyncReceiver(child, secret=SECRET, max_balance=1000) as receiver:
        conn = connect(parent, receiver)
        assert isinstance(await conn.pay(900), IlpFulfill)
        over = await conn.pay(200)
        assert isinstance(over, IlpReject) and over.code == "F99"
        assert await receiver.balance() == 900
        # the sender is told to stop: the stream's receive limit is now what it holds
        limits = [f for f in conn.replies[-1].frames if isinstance(f, StreamMaxMoney)]
        assert limits and limits[0].receive_max == 900


async def test_events_received_per_packet_and_completed_on_close(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    events: list[PaymentEvent] = []
    receiver.on_event(events.append)
    conn = connect(parent, receiver)
    for _ in range(3):
        await conn.pay(100)
    # 2.7.1's end(): an unfulfillable zero-amount packet carrying ConnectionClose
    await conn.send(conn.prepare(0, (ConnectionClose(ErrorCode.NO_ERROR),), fulfillable=False))
    for _ in range(50):
        if any(e.kind == "completed" for e in events):
            break
        await asyncio.sleep(0.01)
    assert [e.kind for e in events] == ["received"] * 3 + ["completed"]
    completed = events[-1]
    assert completed.amount == 300 and completed.balance == 300
    assert completed.payment.payment_id == events[0].payment.payment_id


async def test_stream_data_reaches_the_app_and_the_app_answers_in_replies(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    seen: list[StreamEvent] = []

    def on_stream(event: StreamEvent) -> None:
        seen.append(event)
        if isinstance(event, DataReceived):
            receiver.stream_write(event.connection_id, event.stream_id, event.data.upper())

    receiver.on_stream_event(on_stream)
    conn = connect(parent, receiver)
    await conn.send(conn.prepare(0, (StreamMaxData(1, 16384), StreamData(1, 0, b"hello"))))
    assert [e.data for e in seen if isinstance(e, DataReceived)] == [b"hello"]
    # what the app wrote travels in the reply to the client's next packet
    await conn.pay(5)
    data = [f for f in conn.replies[-1].frames if isinstance(f, StreamData)]
    assert [(f.stream_id, f.offset, f.data) for f in data] == [(1, 0, b"HELLO")]


async def test_a_failing_store_is_t00_and_nothing_is_fulfilled(
    network: tuple[MemoryLink, AsyncReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, receiver = network

    async def broken(self: BalanceStore, *args: object, **kwargs: object) -> None:
        raise OSError("disk on fire")

    conn = connect(parent, receiver)
    monkeypatch.setattr(type(receiver.store), "add", broken)
    reply = await conn.pay(10)
    assert isinstance(reply, IlpReject) and reply.code == "T00"
    monkeypatch.undo()
    assert isinstance(await conn.pay(10), IlpFulfill)  # the connection goes on
    assert await receiver.balance() == 10


async def test_stream_can_be_turned_off(tmp_path: Path) -> None:
    parent, child = parent_link()
    await parent.start()
    async with AsyncReceiver(child, secret=SECRET, stream=False) as receiver:
        http = TestClient(TestServer(create_spsp_app(receiver)))
        async with http:
            refused = await http.get("/.well-known/pay", headers={"Accept": SPSP4_MEDIA_TYPE})
            assert refused.status == 406
            ok = await http.get("/.well-known/pay")
            assert ok.headers["Content-Type"].startswith(SPSP_MEDIA_TYPE)


async def test_idle_connections_are_forgotten(tmp_path: Path) -> None:
    parent, child = parent_link()
    await parent.start()
    limits = StreamLimits(idle_timeout=0.05)
    async with AsyncReceiver(child, secret=SECRET, stream_limits=limits) as receiver:
        conn = connect(parent, receiver)
        await conn.pay(1)
        assert len(receiver.stream_server) == 1
        receiver.stream_server.expire(asyncio.get_running_loop().time() + 3600)
        assert len(receiver.stream_server) == 0
        assert isinstance(await conn.pay(1), IlpFulfill)  # a returning client reopens it
        assert await receiver.balance() == 2


async def test_the_paying_client_uses_stream_when_the_pointer_offers_it(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    # protocol "auto" (the default): SPSP v4 is offered, so the payment goes over STREAM
    parent, receiver = network
    async with TestClient(TestServer(create_spsp_app(receiver))) as http:
        url = str(http.make_url("/.well-known/pay"))
        client = AsyncPaymentClient(parent, allow_http_for_loopback=True)
        try:
            result = await client.pay(url, 25_000, max_packet_amount=1000)
        finally:
            await client.close()
    assert result.protocol == "stream"
    assert result.delivered_amount == 25_000 and result.packets_fulfilled == 25
    assert await receiver.balance() == 25_000


async def test_any_process_with_the_secret_serves_stream_on_a_shared_store(
    make_store: Factory,
) -> None:
    # two receivers (two processes of a fleet) with one secret and one store backend
    # (SQLite file, Redis, PostgreSQL): a connection issued by one is served by the other,
    # and a Prepare delivered to both is credited once
    one_store = make_store()
    other_store = one_store if make_store.kind == "memory" else make_store()  # type: ignore[attr-defined]
    parent_a, child_a = parent_link()
    parent_b, child_b = parent_link()
    await parent_a.start()
    await parent_b.start()
    a = AsyncReceiver(child_a, secret=SECRET, store=one_store)
    b = AsyncReceiver(child_b, secret=SECRET, store=other_store)
    async with a, b:
        destination, secret = a.issue_stream("order:fleet")
        conn = Connection(parent_a, destination, secret)
        prepare = conn.prepare(400, (StreamMoney(1, 1),))
        first = await parent_a.send(prepare)
        again = await parent_b.send(prepare)  # the same Prepare reaches the other process
        assert isinstance(first, IlpFulfill) and isinstance(again, IlpFulfill)
        assert first.fulfillment == again.fulfillment
        on_b = Connection(parent_b, destination, secret)
        on_b.sequence = 1
        assert isinstance(await on_b.pay(600), IlpFulfill)
        assert await a.balance("order:fleet") == 1000
        assert await b.balance("order:fleet") == 1000


async def test_stream_open_policies_set_limits_and_greet_in_the_first_reply(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network

    def priced(account: str, stream_id: int) -> StreamSetup | None:
        if account != "token:abc":
            return None  # not ours: the next policy (or the default) decides
        return StreamSetup(receive_max=100, greeting=b"ready")

    receiver.on_stream_open(priced)
    conn = connect(parent, receiver, "token:abc")
    # the packet that opens the stream is answered with the greeting already
    await conn.send(conn.prepare(0, (StreamMaxData(1, 16384),)))
    data = [f for f in conn.replies[-1].frames if isinstance(f, StreamData)]
    assert [(f.stream_id, f.offset, f.data) for f in data] == [(1, 0, b"ready")]
    assert isinstance(await conn.pay(100), IlpFulfill)
    over = await conn.pay(100)  # beyond the stream's limit (and its 1 % tolerance)
    assert isinstance(over, IlpReject) and over.code == "F99"
    assert await receiver.balance("token:abc") == 100
    # another account is not limited by it
    other = connect(parent, receiver, "endpoint:default")
    assert isinstance(await other.pay(1000), IlpFulfill)
