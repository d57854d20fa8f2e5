"""Several live BTP connections per account on the bundled connector, and a credit that
stands only where its Fulfill goes back (``docs/scaling.md``).

* A second connection with valid credentials joins the account instead of replacing the
  first; Prepares are spread over the connections (least in flight); each answer comes
  back on the connection its Prepare went out on; a dropped connection fails only its
  own Prepares in flight; ``max_connections`` bounds them (the oldest is closed).
* Per-connection and per-account numbers in ``GET /accounts`` and the metrics.
* The receiver credits a Prepare only while the connection it came on can take the
  Fulfill back: closed before the credit, nothing is credited; closed after it, the
  credit is reverted (and the same Prepare delivered again is credited once).
* A stopping receiver finishes the Prepares it is answering and refuses new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from ilp_receiver.codec.btp import (
    BtpResponse,
    auth_message,
    decode_btp,
    encode_btp,
    encode_ilp_message,
)
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply, encode_packet
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.links.base import reply_channel
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.links.btp_server import BtpServerLink
from ilp_receiver.links.btp_session import BtpSession
from ilp_receiver.psk2.sender import build_chunk_prepare
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.stores import AddResult, MemoryStore
from ilp_receiver.stores.base import Change

SECRET = bytes(range(32))


def soon(seconds: float = 10) -> datetime:
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def packet(destination: str, n: int, amount: int = 10) -> IlpPrepare:
    # a distinct condition per packet: fulfilment = sha256 preimage n
    fulfillment = hashlib.sha256(b"f%d" % n).digest()
    return IlpPrepare(amount, soon(), hashlib.sha256(fulfillment).digest(), destination, b"")


def fulfill(prepare: IlpPrepare, n: int) -> IlpFulfill:
    return IlpFulfill(hashlib.sha256(b"f%d" % n).digest())


def connector(**shop: Any) -> Connector:
    accounts = {
        "sender": {"relation": "child", "transport": "btp-server", "token": "s", "listen": "0"},
        "shop": {
            "relation": "child",
            "transport": "btp-server",
            "token": "t",
            "username": "shop",
            "listen": "0",
            **shop,
        },
    }
    config = config_from_mapping(
        {"connector": {"address": "test.c", "store": "memory:"}, "accounts": accounts}, env={}
    )
    return Connector(config)


def url(c: Connector, account: str, user: str, token: str) -> str:
    return "btp+" + c.listeners[account].replace("ws://", f"ws://{user}:{token}@")


class Member:
    """A client of account ``shop`` that fulfils packet n (its number is in the
    destination) after ``delay`` seconds, or holds it until ``release`` is set."""

    def __init__(self, c: Connector, delay: float = 0.0, hold: bool = False) -> None:
        self.link = BtpClientLink(url(c, "shop", "shop", "t"))
        self.delay = delay
        self.hold = hold
        self.release = asyncio.Event()
        self.answered: list[int] = []
        self.link.set_handler(self.handle)

    async def handle(self, prepare: IlpPrepare) -> IlpReply:
        n = int(prepare.destination.rsplit(".", 1)[1])
        if self.hold:
            await self.release.wait()
        elif self.delay:
            await asyncio.sleep(self.delay)
        self.answered.append(n)
        return fulfill(prepare, n)


async def test_a_second_connection_joins_the_account_and_the_prepares_are_spread() -> None:
    async with connector() as c:
        sender = BtpClientLink(url(c, "sender", "", "s"))
        members = [Member(c, delay=0.002), Member(c, delay=0.002)]
        await sender.start()
        for m in members:
            await m.link.start()
        try:
            link = c.accounts["shop"].link
            assert isinstance(link, BtpServerLink)
            assert len(link.connections) == 2 and link.replaced == 0
            replies = await asyncio.gather(
                *(sender.send(packet(f"test.c.shop.{n}", n)) for n in range(200))
            )
            # every answer matched its own condition: it came back on its own connection
            assert all(isinstance(r, IlpFulfill) for r in replies), Counter(
                r.code for r in replies if isinstance(r, IlpReject)
            )
            assert sorted(members[0].answered + members[1].answered) == list(range(200))
            assert min(len(m.answered) for m in members) >= 50  # both took a share
            assert c.ledger.balance("shop") == -2000
            info = c.accounts_info()["shop"]["connections"]
            assert [x["prepares_sent"] for x in info] == [len(m.answered) for m in members]
            assert all(x["in_flight"] == 0 for x in info)
            text = c.metrics.render(
                c.ledger.balances(), {}, process=False, connections=c.connections_info()
            )
            assert 'ilp_connector_account_connections{account="shop"} 2' in text
            assert 'ilp_connector_account_connections_opened_total{account="shop"} 2' in text
            assert (
                'ilp_connector_connection_prepares_total{account="shop",connection="shop#1",'
                f'direction="sent"}} {len(members[0].answered)}'
            ) in text
        finally:
            await sender.stop()
            for m in members:
                await m.link.stop()


async def test_least_in_flight_sends_more_to_the_faster_connection() -> None:
    async with connector() as c:
        sender = BtpClientLink(url(c, "sender", "", "s"))
        slow, fast = Member(c, delay=0.05), Member(c, delay=0.0)
        await sender.start()
        await slow.link.start()
        await fast.link.start()
        try:
            # 10 senders in a loop: 10 Prepares in flight at any time
            async def loop(k: int) -> list[IlpReply]:
                return [await sender.send(packet(f"test.c.shop.{n}", n)) for n in range(k, 300, 10)]

            replies = [r for rs in await asyncio.gather(*(loop(k) for k in range(10))) for r in rs]
            assert all(isinstance(r, IlpFulfill) for r in replies)
            assert len(fast.answered) > 3 * len(slow.answered), (
                len(fast.answered),
                len(slow.answered),
            )
        finally:
            await sender.stop()
            await slow.link.stop()
            await fast.link.stop()


async def test_a_dropped_connection_fails_only_its_own_prepares_in_flight() -> None:
    async with connector() as c:
        sender = BtpClientLink(url(c, "sender", "", "s"))
        stuck, healthy = Member(c, hold=True), Member(c)
        await sender.start()
        await stuck.link.start()
        await healthy.link.start()
        try:
            sends = [
                asyncio.ensure_future(sender.send(packet(f"test.c.shop.{n}", n))) for n in range(40)
            ]
            link = c.accounts["shop"].link
            assert isinstance(link, BtpServerLink)
            for _ in range(200):
                await asyncio.sleep(0.01)
                if sum(1 for s in sends if s.done()) + link.connections[0].in_flight == 40:
                    break
            held = link.connections[0].in_flight
            assert held >= 1
            # the stuck member goes away without answering
            stuck.link.drain_timeout = 0
            await stuck.link.stop()
            replies = await asyncio.gather(*sends)
            rejected = [r for r in replies if isinstance(r, IlpReject)]
            assert len(rejected) == held
            assert {r.code for r in rejected} == {"T01"}
            assert len(healthy.answered) == 40 - held
            assert c.accounts["shop"].is_connected  # the other connection still serves
            assert c.ledger.balance("shop") == -10 * (40 - held)
            after = await sender.send(packet("test.c.shop.99", 99))
            assert isinstance(after, IlpFulfill)
        finally:
            await sender.stop()
            await healthy.link.stop()


async def auth_raw(http: aiohttp.ClientSession, ws_url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(ws_url)
    await ws.send_bytes(encode_btp(auth_message(1, "t", "shop")))
    msg = await ws.receive(timeout=5)
    assert isinstance(decode_btp(msg.data), BtpResponse)
    return ws


async def test_max_connections_closes_the_oldest() -> None:
    async with connector(max_connections=2) as c, aiohttp.ClientSession() as http:
        first = await auth_raw(http, c.listeners["shop"])
        second = await auth_raw(http, c.listeners["shop"])
        third = await auth_raw(http, c.listeners["shop"])
        closing = await first.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        link = c.accounts["shop"].link
        assert isinstance(link, BtpServerLink)
        assert (len(link.connections), link.replaced, link.opened) == (2, 1, 3)
        await third.close()
        assert not second.closed
        for _ in range(100):
            if len(link.connections) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(link.connections) == 1 and c.accounts["shop"].is_connected


def test_max_connections_only_for_btp_server_accounts() -> None:
    from ilp_receiver.errors import ConfigError

    accounts = {
        "web": {
            "relation": "child",
            "transport": "http",
            "url": "http://127.0.0.1:9/",
            "token": "x",
            "listen": "0",
            "max_connections": 4,
        }
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"connector": {"address": "test.c"}, "accounts": accounts}, env={})
    assert info.value.field == "accounts.web.max_connections"


# -- a credit stands only where its Fulfill goes back ----------------------------------------


class GatedStore(MemoryStore):
    """A MemoryStore whose credits wait on ``gate`` after being applied."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.applied = asyncio.Event()

    async def add(self, key: str, delta: int, **kwargs: Any) -> AddResult:
        result = await super().add(key, delta, **kwargs)
        self.applied.set()
        await self.gate.wait()
        return result

    async def _add_each(self, changes: Sequence[Change]) -> list[AddResult | Exception]:
        """The receiver's batched credits (Prepares read together), gated the same way."""
        outcomes = await super()._add_each(changes)
        self.applied.set()
        await self.gate.wait()
        return outcomes


async def receiver_on(c: Connector, store: MemoryStore, **options: Any) -> AsyncReceiver:
    receiver = AsyncReceiver(
        url(c, "shop", "shop", "t"), secret=SECRET, store=store, stream=False, **options
    )
    await receiver.start()
    return receiver


def chunk_to(receiver: AsyncReceiver, amount: int = 500) -> IlpPrepare:
    destination, secret = receiver.issue()
    return build_chunk_prepare(
        destination,
        secret,
        amount=amount,
        expires_at=soon(),
        iv=os.urandom(12),
        payment_id=os.urandom(16),
        chunk_amount=amount,
    )


async def drop_connections(c: Connector) -> None:
    link = c.accounts["shop"].link
    assert isinstance(link, BtpServerLink)
    for connection in link.connections:
        await connection.ws.close()


async def test_a_credit_whose_connection_closed_meanwhile_is_reverted() -> None:
    async with connector() as c:
        store = GatedStore()
        receiver = await receiver_on(c, store)
        sender = BtpClientLink(url(c, "sender", "", "s"))
        await sender.start()
        try:
            prepare = chunk_to(receiver)
            pending = asyncio.ensure_future(sender.send(prepare))
            await asyncio.wait_for(store.applied.wait(), 5)
            assert await store.balance("endpoint:default") == 500  # credited ...
            await drop_connections(c)  # ... and its connection closes before the Fulfill
            reply = await pending
            assert isinstance(reply, IlpReject) and reply.code == "T01"
            store.gate.set()
            for _ in range(200):
                if receiver.reverted_credits:
                    break
                await asyncio.sleep(0.01)
            assert receiver.reverted_credits == 1
            assert await store.balance("endpoint:default") == 0  # never paid: not counted
            # the receiver reconnects; the same Prepare sent again is paid and counted once
            for _ in range(300):
                if c.accounts["shop"].is_connected and receiver.link.is_connected:
                    break
                await asyncio.sleep(0.02)
            again = await sender.send(prepare)
            assert isinstance(again, IlpFulfill)
            assert await store.balance("endpoint:default") == 500
            assert c.ledger.balance("shop") == -500
        finally:
            store.gate.set()
            await sender.stop()
            await receiver.stop()


async def test_nothing_is_credited_when_the_connection_closed_before_the_credit() -> None:
    async with connector() as c:
        store = MemoryStore()
        entered = asyncio.Event()
        go_on = asyncio.Event()

        async def hook(payment: Any) -> None:
            entered.set()
            await go_on.wait()

        receiver = await receiver_on(c, store, on_payment=hook)
        sender = BtpClientLink(url(c, "sender", "", "s"))
        await sender.start()
        try:
            pending = asyncio.ensure_future(sender.send(chunk_to(receiver)))
            await asyncio.wait_for(entered.wait(), 5)
            await drop_connections(c)
            assert isinstance(await pending, IlpReject)
            for _ in range(100):  # the receiver's side of the connection is closed too
                if not receiver.link.is_connected:
                    break
                await asyncio.sleep(0.01)
            go_on.set()
            await asyncio.sleep(0.1)
            assert await store.balance("endpoint:default") == 0
            assert receiver.reverted_credits == 0  # nothing to revert: never credited
        finally:
            go_on.set()
            await sender.stop()
            await receiver.stop()


async def test_an_answer_that_cannot_be_written_runs_the_undelivered_callbacks() -> None:
    undelivered: list[int] = []
    written: list[bytes] = []
    broken = False

    async def send_bytes(data: bytes) -> None:
        if broken:
            raise ConnectionResetError("Cannot write to closing transport")
        written.append(data)

    async def handle(prepare: IlpPrepare) -> IlpReply:
        channel = reply_channel()
        assert channel is not None and channel.is_open
        channel.on_undelivered(lambda: undelivered.append(prepare.amount))
        return fulfill(prepare, 1)

    session = BtpSession(send_bytes, handle)
    session.feed(encode_ilp_message(5, encode_packet(packet("test.x", 1, amount=7))))
    await asyncio.sleep(0.05)
    assert len(written) == 1 and undelivered == [] and session.undelivered == 0
    broken = True
    session.feed(encode_ilp_message(6, encode_packet(packet("test.x", 1, amount=8))))
    await asyncio.sleep(0.05)
    assert undelivered == [8] and session.undelivered == 1


async def test_a_stopping_receiver_finishes_what_it_answers_and_refuses_new_prepares() -> None:
    async with connector() as c:
        store = GatedStore()
        receiver = await receiver_on(c, store)
        sender = BtpClientLink(url(c, "sender", "", "s"))
        await sender.start()
        try:
            first = asyncio.ensure_future(sender.send(chunk_to(receiver)))
            await asyncio.wait_for(store.applied.wait(), 5)
            stopping = asyncio.ensure_future(receiver.stop())
            await asyncio.sleep(0.05)
            refused = await sender.send(chunk_to(receiver))
            assert isinstance(refused, IlpReject) and refused.code == "T01"
            store.gate.set()
            assert isinstance(await first, IlpFulfill)  # its Fulfill went back first
            await stopping
            assert await store.balance("endpoint:default") == 500
            assert c.ledger.balance("shop") == -500
        finally:
            store.gate.set()
            await sender.stop()
            await receiver.stop()
