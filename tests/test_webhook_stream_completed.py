"""STREAM ``payment.completed`` is durable: a close that carries money writes it in that
credit's transaction (no separate write that could fail or be lost); a close without
money stores it before the close is answered, retrying while the store fails."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

import ilp_receiver.receiver as receiver_module
from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.codec.stream import ConnectionClose, ErrorCode, StreamMoney
from ilp_receiver.receiver import DEFAULT_ACCOUNT, AsyncReceiver
from ilp_receiver.stores import MemoryStore, StoreError
from ilp_receiver.stores.outbox import OutboxEntry, OutboxEvent
from tests.test_receiver import SECRET, parent_link
from tests.test_stream_receiver import connect
from tests.test_webhook_dispatcher import config


class FlakyStore(MemoryStore):
    """A memory store whose standalone outbox writes fail ``failures`` times first."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.write_calls = 0

    async def outbox_write(self, entries: Sequence[OutboxEntry]) -> None:
        self.write_calls += 1
        if self.write_calls <= self.failures:
            raise StoreError("the disk is full")
        await super().outbox_write(entries)


async def completed(store: MemoryStore) -> list[OutboxEvent]:
    return [e for e in await store.outbox_list("pending", 1000) if e.type == "payment.completed"]


async def started(store: MemoryStore) -> tuple[AsyncReceiver, object]:
    parent, child = parent_link()
    await parent.start()
    rx = AsyncReceiver(
        child, secret=SECRET, store=store, webhooks=config("http://x/hook", dispatch=False)
    )
    await rx.start()
    return rx, parent


async def test_a_close_with_money_writes_completed_in_the_credits_transaction() -> None:
    store = FlakyStore(failures=10**6)  # a standalone write would never succeed
    rx, parent = await started(store)
    try:
        conn = connect(parent, rx)  # type: ignore[arg-type]
        for _ in range(2):
            assert isinstance(await conn.pay(100), IlpFulfill)
        closing = conn.prepare(50, (StreamMoney(1, 1), ConnectionClose(ErrorCode.NO_ERROR)))
        assert isinstance(await conn.send(closing), IlpFulfill)
        [event] = await completed(store)
        assert (event.account, event.amount) == (DEFAULT_ACCOUNT, 250)
        assert event.data["protocol"] == "stream"
        assert store.write_calls == 0  # it went with the credit, not on its own
        received = [e for e in await store.outbox_list("pending", 1000) if e.type != event.type]
        assert sum(e.amount for e in received) == 250 == await rx.balance()
    finally:
        await rx.stop()
    assert len(await completed(store)) == 1  # the ConnectionClosed event added none


async def test_a_refused_closing_credit_leaves_completed_to_the_close() -> None:
    store = FlakyStore(failures=0)
    parent, child = parent_link()
    await parent.start()
    rx = AsyncReceiver(
        child,
        secret=SECRET,
        store=store,
        max_balance=120,
        webhooks=config("http://x/hook", dispatch=False),
    )
    async with rx:
        conn = connect(parent, rx)
        assert isinstance(await conn.pay(100), IlpFulfill)
        closing = conn.prepare(50, (StreamMoney(1, 1), ConnectionClose(ErrorCode.NO_ERROR)))
        assert not isinstance(await conn.send(closing), IlpFulfill)  # over the cap
        # the connection is closed with 100 received: the notice says so, once
        [event] = await completed(store)
        assert event.amount == 100
        assert store.write_calls == 1


async def test_a_close_without_money_is_stored_before_its_reply_despite_failures() -> None:
    store = FlakyStore(failures=2)
    rx, parent = await started(store)
    try:
        conn = connect(parent, rx)  # type: ignore[arg-type]
        assert isinstance(await conn.pay(300), IlpFulfill)
        close = conn.prepare(0, (ConnectionClose(ErrorCode.NO_ERROR),), fulfillable=False)
        await conn.send(close)
        # no waiting for background tasks: the reply left after the write succeeded
        [event] = await completed(store)
        assert event.amount == 300
        assert store.write_calls == 3
    finally:
        await rx.stop()


async def test_a_store_failing_until_stop_is_reported_and_stop_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(receiver_module, "_COMPLETED_WAIT", 0.01)
    store = FlakyStore(failures=10**6)
    rx, parent = await started(store)
    conn = connect(parent, rx)  # type: ignore[arg-type]
    assert isinstance(await conn.pay(300), IlpFulfill)
    close = conn.prepare(0, (ConnectionClose(ErrorCode.NO_ERROR),), fulfillable=False)
    with caplog.at_level(logging.WARNING, logger="ilp_receiver"):
        await conn.send(close)  # answered although the notice is not stored yet
        assert store.write_calls >= 1
        await rx.stop()  # ends the retries
    assert await completed(store) == []
    assert any("lost the payment.completed" in r.getMessage() for r in caplog.records)
