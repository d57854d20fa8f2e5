"""Prepares read together are answered together: the BTP session hands them to the
link's batch handler in one call, and the receiver answers them exactly as one by one,
with one store call for all their credits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ilp_receiver.codec.btp import decode_btp, encode_ilp_message, find_protocol_data
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_reply,
    encode_prepare,
)
from ilp_receiver.codec.stream import ConnectionClose, ErrorCode, StreamMoney
from ilp_receiver.links.base import ReplyChannel, reply_channel
from ilp_receiver.links.btp_session import BtpSession
from ilp_receiver.links.memory import MemoryLink
from ilp_receiver.psk2.sender import build_request_prepare
from ilp_receiver.receiver import AsyncReceiver, PaymentEvent
from ilp_receiver.stores import AddResult, MemoryStore, StoreError
from ilp_receiver.stores.base import Change
from ilp_receiver.stream.server import ConnectionClosed
from tests.test_receiver import SECRET, parent_link
from tests.test_stream_receiver import Connection

SHOP = "endpoint:shop"


async def started(tmp_path: Path, name: str, **options: object) -> AsyncReceiver:
    parent, child = parent_link()
    await parent.start()
    receiver = AsyncReceiver(
        child,
        secret=SECRET,
        store=str(tmp_path / f"{name}.sqlite3"),
        **options,  # type: ignore[arg-type]
    )
    await receiver.start()
    return receiver


@pytest.fixture
async def twins(tmp_path: Path) -> AsyncIterator[tuple[AsyncReceiver, AsyncReceiver]]:
    """Two receivers on one secret and address, each with its own store."""
    one = await started(tmp_path, "one", max_balance=2000)
    batched = await started(tmp_path, "batched", max_balance=2000)
    yield one, batched
    await one.stop()
    await batched.stop()


def psk2(receiver: AsyncReceiver, amount: int, request_id: int, account: str = SHOP) -> IlpPrepare:
    """A PSK2 draft-2 request paying ``amount`` to ``account``."""
    destination, secret = receiver.issue(account)
    return build_request_prepare(
        destination,
        secret,
        amount=amount,
        expires_at=datetime.now(UTC) + timedelta(seconds=30),
        iv=os.urandom(12),
        request_id=request_id,
    )


def mixed_prepares(receiver: AsyncReceiver) -> list[IlpPrepare]:
    """PSK2 payments, a repeat, one beyond the balance cap, a forged one, STREAM."""
    first = psk2(receiver, 500, 1)
    forged = psk2(receiver, 500, 5)
    forged = IlpPrepare(
        forged.amount,
        forged.expires_at,
        forged.execution_condition,
        receiver.address + ".bm90LXVz.abc",
        forged.data,
    )
    destination, secret = receiver.issue_stream("order:7")
    stream = Connection(MemoryLink(), destination, secret)
    return [
        first,
        psk2(receiver, 500, 2),
        first,  # the same Prepare again: fulfilled, not credited twice
        psk2(receiver, 500, 3),
        psk2(receiver, 600, 4),  # 2100 > max_balance 2000: F99
        forged,
        stream.prepare(250, (StreamMoney(1, 1),)),
        stream.prepare(100, (StreamMoney(1, 1),), fulfillable=False),
    ]


def shape(reply: IlpReply) -> tuple[str, bytes]:
    """What must agree between the two paths (encrypted data carries fresh IVs)."""
    if isinstance(reply, IlpFulfill):
        return "fulfill", reply.fulfillment
    return reply.code, b""


async def test_a_batch_is_answered_as_one_by_one(
    twins: tuple[AsyncReceiver, AsyncReceiver],
) -> None:
    one, batched = twins
    prepares = mixed_prepares(one)
    singly = [await one.handle_prepare(prepare) for prepare in prepares]
    together = await batched.handle_prepares(prepares, [None] * len(prepares))
    assert [shape(r) for r in together] == [shape(r) for r in singly]
    assert [shape(r)[0] for r in together] == [
        *["fulfill"] * 4,
        "F99",
        "F06",  # not a destination this receiver issued
        "fulfill",
        "F99",
    ]
    for receiver in (one, batched):
        assert await receiver.balance(SHOP) == 1500
        assert await receiver.balance("order:7") == 250


async def test_events_of_a_batch_come_after_its_fulfills_in_order(
    twins: tuple[AsyncReceiver, AsyncReceiver],
) -> None:
    _, batched = twins
    seen: list[PaymentEvent] = []
    batched.on_event(seen.append)
    prepares = [psk2(batched, amount, i) for i, amount in enumerate((100, 200, 300))]
    await batched.handle_prepares(prepares, [None] * 3)
    for _ in range(100):
        if len(seen) == 6:
            break
        await asyncio.sleep(0.01)
    assert [(e.kind, e.amount, e.balance) for e in seen] == [
        ("received", 100, 100),
        ("completed", 100, 100),
        ("received", 200, 300),
        ("completed", 200, 300),
        ("received", 300, 600),
        ("completed", 300, 600),
    ]


def closing(*states: bool) -> ReplyChannel:
    """A channel whose is_open answers ``states`` in turn, then the last forever."""
    answers: Iterator[bool] = iter(states)
    last = [states[-1]]

    def is_open() -> bool:
        last[0] = next(answers, last[0])
        return last[0]

    return ReplyChannel(is_open)


async def test_a_closed_connection_credits_nothing_and_a_late_close_is_undone(
    twins: tuple[AsyncReceiver, AsyncReceiver],
) -> None:
    _, batched = twins
    prepares = [psk2(batched, 100, i) for i in range(4)]
    open_channel = ReplyChannel(lambda: True)
    undelivered = ReplyChannel(lambda: True)
    channels = [
        ReplyChannel(lambda: False),  # closed before the credit: T01, nothing credited
        closing(True, False),  # closed by the time the credit committed: undone, T01
        open_channel,
        undelivered,  # its Fulfill will not be handed back: undone afterwards
    ]
    replies = await batched.handle_prepares(prepares, channels)
    assert [shape(r)[0] for r in replies] == ["T01", "T01", "fulfill", "fulfill"]
    assert await batched.balance(SHOP) == 200
    undelivered.undelivered()
    for _ in range(100):
        if await batched.balance(SHOP) == 100:
            break
        await asyncio.sleep(0.01)
    assert await batched.balance(SHOP) == 100
    assert batched.reverted_credits == 2


class FailingStore(MemoryStore):
    """A store whose batched credits fail (the backend is down)."""

    async def _add_each(self, changes: Sequence[Change]) -> list[AddResult | Exception]:
        raise StoreError("the database is unreachable")


async def test_a_failing_store_is_t00_for_the_credits_only(tmp_path: Path) -> None:
    parent, child = parent_link()
    await parent.start()
    receiver = AsyncReceiver(child, secret=SECRET, store=FailingStore())
    await receiver.start()
    try:
        prepares = [psk2(receiver, 100, 1), psk2(receiver, 100, 2)]
        prepares.append(psk2(receiver, 100, 3))
        prepares[2] = IlpPrepare(  # a quote-like request for more than arrives
            prepares[2].amount,
            prepares[2].expires_at,
            prepares[2].execution_condition,
            prepares[2].destination + "x",
            prepares[2].data,
        )
        replies = await receiver.handle_prepares(prepares, [None] * 3)
        assert [shape(r)[0] for r in replies[:2]] == ["T00", "T00"]
        assert isinstance(replies[2], IlpReject) and replies[2].code != "T00"
        assert receiver.store_failures == 2
    finally:
        await receiver.stop()


async def test_the_batch_handler_is_used_only_without_hook_and_webhooks() -> None:
    for options, batches in (({}, True), ({"on_payment": lambda payment: True}, False)):
        _, child = parent_link()
        AsyncReceiver(child, secret=SECRET, **options)  # type: ignore[arg-type]
        assert child.handles_batches is batches


async def test_link_without_batch_handler_answers_each_with_its_channel() -> None:
    link = MemoryLink()
    channels = [ReplyChannel(lambda: True) for _ in range(3)]

    async def handler(prepare: IlpPrepare) -> IlpReply:
        await asyncio.sleep(0)
        index = channels.index(reply_channel())  # type: ignore[arg-type]
        return IlpReject("F99", "", str(index))

    link.set_handler(handler)
    prepares = [psk2_like(i) for i in range(3)]
    replies = await link.handle_incoming_batch(prepares, channels)
    assert [r.message for r in replies if isinstance(r, IlpReject)] == ["0", "1", "2"]

    async def broken(prepares: Sequence[IlpPrepare], channels: object) -> list[IlpReply]:
        raise RuntimeError("bug")

    link.set_handler(handler, batch=broken)
    replies = await link.handle_incoming_batch(prepares, channels)
    assert [shape(r)[0] for r in replies] == ["T00"] * 3


def psk2_like(i: int) -> IlpPrepare:
    return IlpPrepare(1, datetime.now(UTC) + timedelta(seconds=30), bytes(32), f"test.x.{i}", b"")


async def test_the_session_hands_one_iterations_prepares_to_one_batch() -> None:
    written: list[bytes] = []
    calls: list[int] = []

    async def send_bytes(data: bytes) -> None:
        written.append(data)

    async def one(prepare: IlpPrepare) -> IlpReply:
        raise AssertionError("the batch handler answers")

    async def batch(
        prepares: Sequence[IlpPrepare], channels: Sequence[ReplyChannel | None]
    ) -> list[IlpReply]:
        calls.append(len(prepares))
        await asyncio.sleep(0)
        return [IlpReject("F99", "test.us", p.destination) for p in prepares]

    session = BtpSession(send_bytes, one, handle_batch=batch)
    frames = [encode_ilp_message(10 + i, encode_prepare(psk2_like(i))) for i in range(5)]
    for frame in frames[:4]:
        session.feed(frame)
    await asyncio.sleep(0.01)
    session.feed(frames[4])
    await asyncio.sleep(0.01)
    assert calls == [4, 1]
    answers = [decode_btp(data) for data in written]
    assert [a.request_id for a in answers] == [10, 11, 12, 13, 14]
    messages = []
    for answer in answers:
        entry = find_protocol_data(answer, "ilp")
        assert entry is not None
        reply = decode_reply(entry.data)
        assert isinstance(reply, IlpReject)
        messages.append(reply.message)
    assert messages == [f"test.x.{i}" for i in range(5)]


async def test_a_batch_without_credits_still_reports_what_it_did_to_connections(
    twins: tuple[AsyncReceiver, AsyncReceiver],
) -> None:
    _, batched = twins
    seen: list[object] = []
    batched.on_stream_event(seen.append)
    destination, secret = batched.issue_stream("order:8")
    stream = Connection(MemoryLink(), destination, secret)
    paid = await batched.handle_prepares([stream.prepare(300, (StreamMoney(1, 1),))], [None])
    assert shape(paid[0])[0] == "fulfill"
    seen.clear()
    close = stream.prepare(0, (ConnectionClose(ErrorCode.NO_ERROR, ""),), fulfillable=False)
    replies = await batched.handle_prepares([close], [None])
    assert isinstance(replies[0], IlpReject)
    closed = [event for event in seen if isinstance(event, ConnectionClosed)]
    assert len(closed) == 1 and closed[0].total_received == 300
