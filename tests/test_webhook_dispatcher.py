"""Webhook delivery: the receiver writes one event per payment with its credit, the
dispatcher POSTs it signed, retries while the endpoint is down (in order per account),
limits concurrency per endpoint, dead-letters and replays.

Time is a settable clock for the store and the dispatcher (backoff, windows, leases),
so no test waits for a timer; the HTTP endpoint is a real local server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ilp_receiver.codec.stream import ConnectionClose, ErrorCode
from ilp_receiver.links.memory import MemoryLink
from ilp_receiver.receiver import DEFAULT_ACCOUNT, AsyncReceiver
from ilp_receiver.stores import MemoryStore, SqliteStore
from ilp_receiver.stores.outbox import OutboxEntry
from ilp_receiver.webhooks import (
    WebhookConfig,
    WebhookDispatcher,
    generate_ed25519_key,
    parse_key,
    verify_webhook,
)
from ilp_receiver.webhooks.dispatcher import signing_keys
from tests.test_receiver import SECRET, chunk, parent_link
from tests.test_stores import Factory, FakeClock
from tests.test_stream_receiver import connect
from tests.webhook_endpoint import Endpoint

SIGNING, PUBLIC = generate_ed25519_key()


def config(*urls: str, **options: object) -> WebhookConfig:
    settings: dict[str, object] = {"window": 0.0, "backoff_first": 1.0, "backoff_max": 60.0}
    settings.update(options)
    return WebhookConfig(urls, signing_keys([SIGNING]), **settings)  # type: ignore[arg-type]


def event(account: str, amount: int) -> OutboxEntry:
    return OutboxEntry("payment.received", account, amount, {"protocol": "test"})


async def drain(dispatcher: WebhookDispatcher, clock: FakeClock, rounds: int = 50) -> None:
    """Run rounds, moving the clock past every backoff, until nothing is pending."""
    for _ in range(rounds):
        if (await dispatcher.store.outbox_counts())["pending"] == 0:
            return
        if not await dispatcher.run_once():
            clock.now += 61
    raise AssertionError("the outbox did not drain")


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[tuple[MemoryLink, AsyncReceiver]]:
    parent, child = parent_link()
    await parent.start()
    hooks = config("http://127.0.0.1:9/unused", dispatch=False)
    receiver = AsyncReceiver(
        child, secret=SECRET, store=str(tmp_path / "balances.sqlite3"), webhooks=hooks
    )
    await receiver.start()
    yield parent, receiver
    await receiver.stop()


async def test_one_signed_event_per_payment_whose_amounts_sum_to_the_credits(
    receiver: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, rx = receiver
    # a STREAM payment of five packets, closed by the client; a chunked PSK2 payment
    conn = connect(parent, rx)
    for _ in range(5):
        await conn.pay(100)
    await conn.send(conn.prepare(0, (ConnectionClose(ErrorCode.NO_ERROR),), fulfillable=False))
    spsp = await rx.spsp_response("endpoint:psk2")
    payment_id = os.urandom(16)
    for sequence in range(3):
        prepare = chunk(
            spsp.destination_account,
            spsp.shared_secret,
            70,
            payment_id=payment_id,
            sequence=sequence,
            last_chunk=sequence == 2,
        )
        assert (await parent.send(prepare)).__class__.__name__ == "IlpFulfill"
    await asyncio.sleep(0)  # the STREAM completed event is written by a task
    for task in list(rx._background):
        await task
    async with Endpoint() as endpoint:
        dispatcher = WebhookDispatcher(rx.store, config(endpoint.url), clock=rx.store.clock)
        # window 0 and merging: a STREAM credit merges only while the window is open,
        # so with window 0 each packet is its own event
        while await dispatcher.run_once():
            pass
        await dispatcher.stop()
    events = [d.event for d in endpoint.acknowledged()]
    for delivery in endpoint.deliveries:
        verify_webhook(delivery.body, delivery.headers, PUBLIC)
        assert delivery.headers["webhook-id"] == delivery.event["id"]
    received = [e for e in events if e["type"] == "payment.received"]
    assert sum(int(e["data"]["amount"]) for e in received) == 5 * 100 + 3 * 70
    by_account: dict[str, int] = {}
    for e in received:
        account = e["data"]["account"]
        by_account[account] = by_account.get(account, 0) + int(e["data"]["amount"])
    assert by_account == {
        DEFAULT_ACCOUNT: await rx.balance(DEFAULT_ACCOUNT),
        "endpoint:psk2": await rx.balance("endpoint:psk2"),
    }
    completed = [e for e in events if e["type"] == "payment.completed"]
    assert sorted((e["data"]["protocol"], e["data"]["amount"]) for e in completed) == [
        ("psk2-draft1", "210"),
        ("stream", "500"),
    ]
    for e in events:
        assert e["version"] == 1
        assert e["data"]["asset"] == {"code": "XYZ", "scale": 9}
    assert len({e["id"] for e in events}) == len(events)


async def test_credits_within_the_window_are_one_event(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "b.db", clock=clock)
    parent, child = parent_link()
    await parent.start()
    rx = AsyncReceiver(
        child, secret=SECRET, store=store, webhooks=config("http://x/", window=5, dispatch=False)
    )
    async with store, rx:
        conn = connect(parent, rx)
        for _ in range(40):
            await conn.pay(10)
        clock.now += 6
        [one] = await store.outbox_claim("t", 10, 30)
        assert (one.type, one.amount, one.count, one.balance) == ("payment.received", 400, 40, 400)
        await conn.pay(10)  # after the claim: a new event, same payment id
        clock.now += 6
        await store.outbox_ack(one.event_id, one.token)
        [two] = await store.outbox_claim("t", 10, 30)
        assert (two.amount, two.balance, two.data["payment_id"]) == (
            10,
            410,
            one.data["payment_id"],
        )


async def test_endpoint_down_then_up_everything_arrives_in_order_per_account(
    make_store: Factory,
) -> None:
    clock = FakeClock()
    store = make_store(clock=clock)
    await store.open()
    for n in range(4):
        for account in ("a", "b"):
            await store.add_with_outbox(account, n + 1, [event(account, n + 1)])
    async with Endpoint(status=503) as endpoint:
        dispatcher = WebhookDispatcher(store, config(endpoint.url), clock=clock)
        for _ in range(3):  # down: every attempt fails, nothing moves past the first
            await dispatcher.run_once()
            clock.now += 61
        assert {d.event["data"]["amount"] for d in endpoint.deliveries} == {"1"}
        assert dispatcher.metrics.retried == 6
        endpoint.status = 200
        await drain(dispatcher, clock)
        await dispatcher.stop()
    for account in ("a", "b"):
        acked = [d.event for d in endpoint.acknowledged() if d.event["data"]["account"] == account]
        assert [e["data"]["amount"] for e in acked] == ["1", "2", "3", "4"]
        # the failed attempts were the first event, with the same id
        first_id = acked[0]["id"]
        tries = [d for d in endpoint.deliveries if d.event["data"]["account"] == account]
        assert [d.event["id"] for d in tries[:4]] == [first_id] * 4
    assert dispatcher.metrics.delivered == 8
    assert await store.outbox_counts() == {"pending": 0, "dead": 0}


async def test_at_most_concurrency_requests_per_endpoint() -> None:
    store = MemoryStore()
    for n in range(12):
        await store.add_with_outbox(f"acct{n}", 1, [event(f"acct{n}", 1)])
    async with Endpoint() as endpoint:
        endpoint.hold.clear()
        dispatcher = WebhookDispatcher(store, config(endpoint.url, concurrency=3))
        round_ = asyncio.ensure_future(dispatcher.run_once())
        for _ in range(2000):  # until the dispatcher waits on its limit
            if endpoint.in_flight == 3:
                break
            await asyncio.sleep(0.005)
        assert endpoint.in_flight == 3
        endpoint.hold.set()
        assert await round_ == 12
        await dispatcher.stop()
    assert endpoint.most_in_flight == 3
    assert len(endpoint.acknowledged()) == 12


async def test_dead_letters_after_the_max_age_and_replay() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    entry = event("a", 5)
    await store.add_with_outbox("a", 5, [entry])
    async with Endpoint(status=500) as endpoint:
        dispatcher = WebhookDispatcher(store, config(endpoint.url, max_age=100), clock=clock)
        await dispatcher.run_once()
        clock.now += 101
        await dispatcher.run_once()
        assert await store.outbox_counts() == {"pending": 0, "dead": 1}
        [dead] = await store.outbox_list("dead")
        assert dead.event_id == entry.event_id and dead.error.endswith("HTTP 500")
        assert dispatcher.metrics.dead == 1
        text = await dispatcher.metrics_text()
        assert 'ilp_receiver_webhook_queue_depth{state="dead"} 1' in text
        endpoint.status = 200
        assert await store.outbox_replay(entry.event_id)
        assert await dispatcher.run_once() == 1
        await dispatcher.stop()
    assert [d.event["id"] for d in endpoint.deliveries] == [entry.event_id] * 3
    assert await store.outbox_counts() == {"pending": 0, "dead": 0}


async def test_an_endpoint_that_acknowledged_is_not_sent_the_event_again() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.add_with_outbox("a", 5, [event("a", 5)])
    async with Endpoint() as up, Endpoint(status=503) as down:
        dispatcher = WebhookDispatcher(store, config(up.url, down.url), clock=clock)
        await dispatcher.run_once()
        down.status = 200
        clock.now += 61
        await dispatcher.run_once()
        await dispatcher.stop()
    assert (len(up.deliveries), len(down.deliveries)) == (1, 2)
    assert await store.outbox_counts() == {"pending": 0, "dead": 0}


async def test_the_dispatcher_refuses_a_store_without_outbox_and_bad_settings() -> None:
    from ilp_receiver.errors import ConfigError

    class Plain(MemoryStore):
        supports_outbox = False

    with pytest.raises(ConfigError, match="outbox"):
        WebhookDispatcher(Plain(), config("http://x/"))
    with pytest.raises(ConfigError, match="webhook_url"):
        config("ftp://x/")
    with pytest.raises(ConfigError, match="webhook_key"):
        WebhookConfig(("http://x/",), (parse_key(PUBLIC),))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="webhook_concurrency"):
        config("http://x/", concurrency=0)


async def test_orders_write_paid_and_overpaid_with_their_credits() -> None:
    from ilp_receiver.client import AsyncPaymentClient
    from ilp_receiver.spsp import parse_spsp_response
    from ilp_receiver.testing import InMemoryNetwork
    from ilp_receiver.webpayments import OrderBook

    network = InMemoryNetwork("test.net")
    receiver = AsyncReceiver(
        await network.add_child("shop"),
        secret=SECRET,
        webhooks=config("http://127.0.0.1:9/", dispatch=False),
    )
    payer = AsyncPaymentClient(await network.add_child("buyer"))
    async with receiver, payer:
        orders = OrderBook(receiver)
        await orders.create_order("o-1", 1000)
        for amount in (900, 150, 30):
            answer = await orders.spsp_response("o-1")
            assert answer is not None
            result = await payer.pay(parse_spsp_response(answer.to_json()), amount)
            assert result.delivered_amount == amount
        events = await receiver.store.outbox_list("pending")
    kinds = [(e.type, e.amount) for e in events if e.type.startswith("order.")]
    assert kinds == [("order.paid", 150), ("order.overpaid", 50), ("order.overpaid", 30)]
    paid = next(e for e in events if e.type == "order.paid")
    assert paid.data["order_id"] == "o-1" and paid.data["total"] == "1000"
    assert paid.balance == 1050
    received = sum(e.amount for e in events if e.type == "payment.received")
    assert received == 1080


async def test_visitors_credits_are_one_visitor_credited_per_window() -> None:
    from ilp_receiver.client import AsyncPaymentClient
    from ilp_receiver.monetization import Monetizer
    from ilp_receiver.paywall import combine_hooks, paywall_payment_hook
    from ilp_receiver.testing import InMemoryNetwork
    from tests.test_monetization import SITE_SECRET, Site

    network = InMemoryNetwork("test.net")
    monetizer = Monetizer(secret=SITE_SECRET)
    receiver = AsyncReceiver(
        await network.add_child("site"),
        secret=SECRET,
        on_payment=combine_hooks(paywall_payment_hook, monetizer.payment_hook),
        webhooks=config("http://127.0.0.1:9/", window=60, dispatch=False),
    )
    payer = AsyncPaymentClient(await network.add_child("browser"))
    async with receiver, payer:
        site = Site(receiver, monetizer, payer)
        visitor, cookie = monetizer.new_visitor()
        await site.pay_visitor(cookie, 10)  # two payments: two STREAM connections
        await site.pay_visitor(cookie, 20)
        events = await receiver.store.outbox_list("pending")
    credited = [e for e in events if e.type == "visitor.credited"]
    assert [(e.account, e.amount, e.count, e.balance) for e in credited] == [
        (visitor.account, 30, 2, 30)
    ]
    assert credited[0].data["visitor_id"] == visitor.id
    received = [e for e in events if e.type == "payment.received"]
    assert sum(e.amount for e in received) == 30 and len(received) == 2


async def test_paywall_debits_and_refunds_write_their_events(tmp_path: Path) -> None:
    from ilp_receiver.paywall import Paywall, token_account
    from tests.test_paywall import TOKEN, MemoryParent, async_receiver, facts

    parent = MemoryParent()
    await parent.start()
    store = SqliteStore(tmp_path / "b.db")
    rx = async_receiver(parent, store=store, webhooks=config("http://x/", dispatch=False))
    account = token_account(TOKEN)
    async with store, rx:
        wall = Paywall(rx)
        await store.credit(account, 25)
        served = await wall.check(facts("POST"), 10)
        assert served.reply is None and served.charged == 10
        assert await wall.refund(served) == 25  # the route failed: given back
        blocking = await asyncio.to_thread(wall.check_blocking, facts("POST"), 20)
        assert blocking is not None and blocking.charged == 20
        assert await asyncio.to_thread(wall.refund_blocking_balance, blocking) == 25
        short = await wall.check(facts("POST"), 30)  # refused: no event
        assert short.reply is not None and short.reply.status == 402
        events = await store.outbox_list("pending")
    assert [(e.type, e.account, e.amount, e.balance) for e in events] == [
        ("paywall.debited", account, 10, 15),
        ("paywall.refunded", account, 10, 25),
        ("paywall.debited", account, 20, 5),
        ("paywall.refunded", account, 20, 25),
    ]
    assert events[0].data["asset"] == {"code": "XYZ", "scale": 9}
