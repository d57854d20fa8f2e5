"""Two dispatchers on one store (two connection pools, as two processes would have):
in a normal run no event is delivered twice, and every event is delivered."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from ilp_receiver.stores.outbox import OutboxEntry
from ilp_receiver.webhooks import WebhookConfig, WebhookDispatcher, generate_ed25519_key
from ilp_receiver.webhooks.dispatcher import signing_keys
from tests.test_stores import Factory
from tests.webhook_endpoint import Endpoint

SIGNING, _ = generate_ed25519_key()


@pytest.mark.parametrize("make_store", ["sqlite", "redis", "postgres"], indirect=True)
async def test_two_dispatchers_never_deliver_an_event_twice(make_store: Factory) -> None:
    writer, first, second = make_store(), make_store(), make_store()
    ids: list[str] = []
    async with writer, first, second:
        for n in range(120):
            account = f"acct{n % 12}"
            entry = OutboxEntry("payment.received", account, n + 1, {"n": n})
            ids.append(entry.event_id)
            await writer.add_with_outbox(account, n + 1, [entry], idempotency_key=f"k{n}")
        async with Endpoint() as endpoint:
            config = WebhookConfig(
                (endpoint.url,), signing_keys([SIGNING]), window=0, poll_interval=0.01, batch=4
            )
            dispatchers = [
                WebhookDispatcher(first, config, worker="one"),
                WebhookDispatcher(second, config, worker="two"),
            ]
            for dispatcher in dispatchers:
                await dispatcher.start()
            try:
                for _ in range(3000):
                    if len(endpoint.deliveries) >= len(ids):
                        break
                    await asyncio.sleep(0.01)
                for _ in range(100):  # let the last acks land
                    if (await writer.outbox_counts())["pending"] == 0:
                        break
                    await asyncio.sleep(0.01)
            finally:
                for dispatcher in dispatchers:
                    await dispatcher.stop()
        delivered = Counter(d.headers["webhook-id"] for d in endpoint.deliveries)
        assert sorted(delivered) == sorted(ids)
        assert max(delivered.values()) == 1
        # each acknowledged event counted by exactly one of them; the order held
        assert sum(d.metrics.delivered for d in dispatchers) == len(ids)
        for account in {f"acct{n}" for n in range(12)}:
            amounts = [
                int(d.event["data"]["amount"])
                for d in endpoint.deliveries
                if d.event["data"]["account"] == account
            ]
            assert amounts == sorted(amounts)
        assert await writer.outbox_counts() == {"pending": 0, "dead": 0}
