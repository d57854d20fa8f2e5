"""A Monetizer's spends and bucket expiries write ``visitor.debited`` and
``visitor.expired`` in the same store change (with the attached receiver's webhooks on);
a refused spend writes nothing, and without webhooks nothing is written."""

from __future__ import annotations

from ilp_receiver.monetization import EXPIRED_ACCOUNT, Monetizer
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver.webhooks import EVENT_TYPES
from tests.test_receiver import SECRET
from tests.test_stores import FakeClock
from tests.test_webhook_dispatcher import config

ASSET = {"code": "XYZ", "scale": 9}  # InMemoryNetwork's IL-DCP asset


async def test_spends_and_expiry_write_their_events_with_the_debit() -> None:
    network = InMemoryNetwork("test.net")
    receiver = AsyncReceiver(
        await network.add_child("site"),
        secret=SECRET,
        webhooks=config("http://127.0.0.1:9/", dispatch=False),
    )
    clock = FakeClock()
    async with receiver:
        monetizer = Monetizer(receiver, idle_expiry=60, clock=clock)
        visitor, _ = monetizer.new_visitor()
        await monetizer.credit(visitor, 100)
        assert await monetizer.spend(visitor, 30) == 70
        assert await monetizer.try_spend(visitor, 1000) is None  # refused: no event
        assert await monetizer.try_spend(visitor, 0) == 70  # nothing debited: no event
        assert await monetizer.await_and_spend(visitor, 20, timeout=1) == 50
        clock.now += 61
        assert await monetizer.expire_idle() == [visitor.account]
        assert await receiver.store.balance(EXPIRED_ACCOUNT) == 50
        events = await receiver.store.outbox_list("pending")
    assert [(e.type, e.account, e.amount, e.balance) for e in events] == [
        ("visitor.debited", visitor.account, 30, 70),
        ("visitor.debited", visitor.account, 20, 50),
        ("visitor.expired", visitor.account, 50, 0),
    ]
    for event in events:
        assert event.data["visitor_id"] == visitor.id
        assert event.data["asset"] == ASSET
        assert event.type in EVENT_TYPES


async def test_without_webhooks_spends_write_no_events() -> None:
    network = InMemoryNetwork("test.net")
    receiver = AsyncReceiver(await network.add_child("site"), secret=SECRET)
    clock = FakeClock()
    async with receiver:
        monetizer = Monetizer(receiver, idle_expiry=60, clock=clock)
        visitor, _ = monetizer.new_visitor()
        await monetizer.credit(visitor, 100)
        assert await monetizer.spend(visitor, 30) == 70
        clock.now += 61
        assert await monetizer.expire_idle() == [visitor.account]
        assert await receiver.store.outbox_list("pending") == []
        assert await receiver.balance(visitor.account) == 0
