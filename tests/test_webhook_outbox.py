"""The webhook outbox of every store: events written with their credit, aggregated,
claimed one account at a time, leased, retried, dead-lettered and replayed.

Runs against memory, SQLite, Redis and PostgreSQL (``make_store``); time is a settable
clock, so nothing here waits.
"""

from __future__ import annotations

import pytest

from ilp_receiver.stores import BalanceLimitError, BalanceStore
from ilp_receiver.stores.outbox import OutboxEntry
from tests.test_stores import Factory, FakeClock


def received(account: str, amount: int, payment: str, window: float = 1.0) -> OutboxEntry:
    return OutboxEntry(
        "payment.received",
        account,
        amount,
        {"payment_id": payment, "protocol": "stream"},
        merge_key=f"{account}|{payment}",
        window=window,
    )


async def test_an_event_is_written_only_with_the_credit_it_describes(make_store: Factory) -> None:
    clock = FakeClock()
    async with make_store(clock=clock) as store:
        entry = received("a", 10, "p1", window=0)
        result = await store.add_with_outbox("a", 10, [entry], idempotency_key="k1", maximum=100)
        assert result.applied and result.balance == 10
        # a duplicate of the same packet: no credit, no event
        again = await store.add_with_outbox(
            "a", 10, [received("a", 10, "p1", 0)], idempotency_key="k1"
        )
        assert not again.applied
        # a refused credit: no event either
        with pytest.raises(BalanceLimitError):
            await store.add_with_outbox("a", 500, [received("a", 500, "p2", 0)], maximum=100)
        assert await store.outbox_counts() == {"pending": 1, "dead": 0}
        [event] = await store.outbox_claim("w", 10, 30)
        assert event.event_id == entry.event_id
        assert (event.type, event.account, event.amount, event.count, event.balance) == (
            "payment.received",
            "a",
            10,
            1,
            10,
        )
        assert event.data == {"payment_id": "p1", "protocol": "stream"}
        assert event.attempts == 1 and event.token


async def test_credits_of_one_payment_merge_until_the_window_ends_or_a_claim(
    make_store: Factory,
) -> None:
    clock = FakeClock()
    async with make_store(clock=clock) as store:
        first = received("a", 5, "p", window=2.0)
        await store.add_with_outbox("a", 5, [first], idempotency_key="k1")
        clock.now += 0.5
        await store.add_with_outbox("a", 7, [received("a", 7, "p", 2.0)], idempotency_key="k2")
        await store.add_with_outbox("b", 1, [received("b", 1, "q", 2.0)], idempotency_key="k3")
        assert await store.outbox_claim("w", 10, 30) == []  # the window is still open
        clock.now += 2.1
        claimed = await store.outbox_claim("w", 10, 30)
        assert [(e.account, e.amount, e.count, e.balance) for e in claimed] == [
            ("a", 12, 2, 12),
            ("b", 1, 1, 1),
        ]
        assert claimed[0].event_id == first.event_id
        # sealed by the claim: the next credit of the payment starts a new event
        later = received("a", 3, "p", 2.0)
        await store.add_with_outbox("a", 3, [later], idempotency_key="k4")
        assert await store.outbox_counts() == {"pending": 3, "dead": 0}
        for event in claimed:
            assert await store.outbox_ack(event.event_id, event.token)
        clock.now += 2.5
        [next_event] = await store.outbox_claim("w", 10, 30)
        assert (next_event.event_id, next_event.amount, next_event.balance) == (
            later.event_id,
            3,
            15,
        )


async def test_one_account_is_delivered_in_order_and_leases_hold(make_store: Factory) -> None:
    clock = FakeClock()
    async with make_store(clock=clock) as store:
        a1, a2, a3 = (
            received("a", 1, "p1", 0),
            received("a", 2, "p2", 0),
            received("a", 3, "p3", 100),
        )
        a4, b1 = received("a", 4, "p4", 0), received("b", 5, "q", 0)
        for n, entry in enumerate((a1, a2, a3, a4, b1)):
            await store.add_with_outbox(
                entry.account, entry.amount, [entry], idempotency_key=f"k{n}"
            )
        # an account's consecutive due events, up to the first that is not due (a3)
        claimed = await store.outbox_claim("w1", 10, 30)
        assert [e.event_id for e in claimed] == [a1.event_id, a2.event_id, b1.event_id]
        # leased: another claimer gets nothing, a3 and a4 wait behind a1 and a2
        assert await store.outbox_claim("w2", 10, 30) == []
        clock.now += 31  # the lease ran out (the claimer died): claimed again, same ids
        again = await store.outbox_claim("w2", 10, 30)
        assert [e.event_id for e in again] == [a1.event_id, a2.event_id, b1.event_id]
        assert [e.attempts for e in again] == [2, 2, 2]
        # the first claimer's token no longer holds
        assert not await store.outbox_ack(a1.event_id, claimed[0].token)
        assert await store.outbox_ack(a1.event_id, again[0].token)
        assert await store.outbox_ack(a2.event_id, again[1].token)
        clock.now += 70  # a3 is due, the second lease ran out too
        later = await store.outbox_claim("w2", 10, 30)
        assert [e.event_id for e in later] == [a3.event_id, a4.event_id, b1.event_id]
        assert [e.event_id for e in await store.outbox_list("pending")] == [
            a3.event_id,
            a4.event_id,
            b1.event_id,
        ]


async def test_retry_dead_letter_and_replay(make_store: Factory) -> None:
    clock = FakeClock()
    async with make_store(clock=clock) as store:
        a1, a2 = received("a", 1, "p1", 0), received("a", 2, "p2", 0)
        await store.add_with_outbox("a", 1, [a1], idempotency_key="k1")
        await store.add_with_outbox("a", 2, [a2], idempotency_key="k2")
        first, second = await store.outbox_claim("w", 10, 30)
        assert await store.outbox_retry(
            first.event_id, first.token, due=clock.now + 10, error="HTTP 500", acked=["http://x/"]
        )
        assert not await store.outbox_retry(first.event_id, first.token, due=0, error="stale")
        # what a dispatcher does with the rest of the account's run: release it
        assert await store.outbox_retry(second.event_id, second.token, due=second.due, error="")
        assert await store.outbox_claim("w", 10, 30) == []  # a1 not due, a2 behind it
        clock.now += 10
        first, second = await store.outbox_claim("w", 10, 30)
        assert (first.event_id, first.attempts, first.acked, first.error) == (
            a1.event_id,
            2,
            ("http://x/",),
            "HTTP 500",
        )
        assert await store.outbox_retry(first.event_id, first.token, due=0, error="gone", dead=True)
        assert await store.outbox_retry(second.event_id, second.token, due=second.due, error="")
        assert await store.outbox_counts() == {"pending": 1, "dead": 1}
        [dead] = await store.outbox_list("dead")
        assert (dead.event_id, dead.state, dead.error) == (a1.event_id, "dead", "gone")
        # a dead letter no longer holds up its account
        [event] = await store.outbox_claim("w", 10, 30)
        assert event.event_id == a2.event_id
        assert await store.outbox_ack(event.event_id, event.token)
        assert await store.outbox_replay(a1.event_id)
        assert not await store.outbox_replay("evt_unknown")
        [pending] = await store.outbox_list("pending")
        assert (pending.event_id, pending.attempts, pending.acked) == (a1.event_id, 0, ())
        [event] = await store.outbox_claim("w", 10, 30)
        assert event.event_id == a1.event_id


async def test_a_claim_takes_at_most_a_run_of_one_account(make_store: Factory) -> None:
    from ilp_receiver.stores.outbox import CLAIM_RUN

    clock = FakeClock()
    async with make_store(clock=clock) as store:
        for n in range(CLAIM_RUN + 3):
            await store.add_with_outbox("a", 1, [received("a", 1, f"p{n}", 0)])
        await store.add_with_outbox("b", 1, [received("b", 1, "q", 0)])
        assert [e.account for e in await store.outbox_claim("w", 2, 30)] == ["a", "a"]
        # a's head is leased: only b
        assert [e.account for e in await store.outbox_claim("w", 100, 30)] == ["b"]
        clock.now += 31
        claimed = await store.outbox_claim("w", 100, 30)
        assert [e.account for e in claimed] == ["a"] * CLAIM_RUN + ["b"]
        seqs = [e.seq for e in claimed[:CLAIM_RUN]]
        assert seqs == sorted(seqs)


async def test_a_reverted_credit_writes_its_reversal(make_store: Factory) -> None:
    async with make_store() as store:
        if not store.supports_revert:
            pytest.skip("no revert")
        await store.add_with_outbox("a", 9, [received("a", 9, "p", 0)], idempotency_key="k")
        reversal = OutboxEntry("payment.reverted", "a", 9, {"payment_id": "p"})
        assert await store.revert("a", 9, "k", outbox=[reversal])
        assert not await store.revert("a", 9, "k", outbox=[OutboxEntry("payment.reverted", "a", 9)])
        events = await store.outbox_list("pending")
        assert [(e.type, e.amount, e.balance) for e in events] == [
            ("payment.received", 9, 9),
            ("payment.reverted", 9, 0),
        ]


async def test_events_without_a_credit(make_store: Factory) -> None:
    async with make_store() as store:
        entry = OutboxEntry("payment.completed", "a", 40, {"payment_id": "p"}, balance=40)
        await store.outbox_write([entry])
        [event] = await store.outbox_claim("w", 10, 30)
        assert (event.event_id, event.type, event.amount, event.balance) == (
            entry.event_id,
            "payment.completed",
            40,
            40,
        )


def test_every_store_of_the_package_has_an_outbox(make_store: Factory) -> None:
    store: BalanceStore = make_store()
    assert store.supports_outbox


async def test_conditional_events_are_decided_in_the_credits_transaction(
    make_store: Factory,
) -> None:
    """An order of 100: ``order.paid`` with the credit that reaches it, once;
    ``order.overpaid`` with each credit beyond it, for the part above the total."""

    def order_events(amount: int) -> list[OutboxEntry]:
        return [
            OutboxEntry("order.paid", "o", amount, {"total": "100"}, when="reaches", threshold=100),
            OutboxEntry(
                "order.overpaid", "o", amount, {"total": "100"}, when="exceeds", threshold=100
            ),
        ]

    async with make_store() as store:
        for n, amount in enumerate((60, 30, 25, 5)):
            await store.add_with_outbox("o", amount, order_events(amount), idempotency_key=f"k{n}")
        # a duplicate delivery of the packet that completed the order: nothing again
        await store.add_with_outbox("o", 25, order_events(25), idempotency_key="k2")
        events = await store.outbox_list("pending")
        assert [(e.type, e.amount, e.balance) for e in events] == [
            ("order.paid", 25, 115),
            ("order.overpaid", 15, 115),
            ("order.overpaid", 5, 120),
        ]
