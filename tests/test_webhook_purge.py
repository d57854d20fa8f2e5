"""Dead letters are purged after a retention: by every store (``outbox_purge``), by the
dispatcher on its own (``dead_retention``), and by ``ilp-receiver webhooks purge``.
Time is a settable clock, so nothing waits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilp_receiver.errors import ConfigError
from ilp_receiver.options import ReceiverOptions
from ilp_receiver.stores import BalanceStore, MemoryStore, SqliteStore
from ilp_receiver.stores.outbox import OutboxEntry
from ilp_receiver.webhooks import WebhookConfig, WebhookDispatcher
from tests.test_stores import Factory, FakeClock
from tests.test_webhook_dispatcher import config

BIN = Path(sys.executable).parent


def event(account: str) -> OutboxEntry:
    return OutboxEntry("payment.received", account, 10, {"protocol": "test"})


async def kill(store: BalanceStore, account: str) -> str:
    """Write an event of ``account``, claim it and make it a dead letter now."""
    entry = event(account)
    await store.outbox_write([entry])
    [claimed] = [e for e in await store.outbox_claim("w", 10, 30) if e.account == account]
    # the dispatcher passes the retry time it would have used: the store records the death
    assert await store.outbox_retry(
        claimed.event_id, claimed.token, due=store.clock() + 10**6, error="gone", dead=True
    )
    return entry.event_id


async def test_every_store_purges_dead_letters_older_than_the_retention(
    make_store: Factory,
) -> None:
    clock = FakeClock()
    async with make_store(clock=clock) as store:
        old = await kill(store, "a")
        clock.now += 100
        recent = await kill(store, "b")
        pending = event("c")
        await store.outbox_write([pending])
        clock.now += 50  # old died 150 s ago, recent 50 s ago
        assert await store.outbox_purge(100) == 1
        assert [e.event_id for e in await store.outbox_list("dead")] == [recent]
        assert await store.outbox_replay(old) is False  # gone for good
        assert await store.outbox_purge(100) == 0
        assert await store.outbox_purge(0) == 1  # every dead letter
        # pending events are never purged, however old
        clock.now += 10**7
        assert await store.outbox_purge(0) == 0
        assert [e.event_id for e in await store.outbox_list("pending")] == [pending.event_id]
        assert await store.outbox_counts() == {"pending": 1, "dead": 0}
        for bad in (-1, float("inf"), float("nan"), "10", True):
            with pytest.raises(ValueError, match="older_than"):
                await store.outbox_purge(bad)  # type: ignore[arg-type]


async def test_a_replayed_dead_letter_is_pending_and_not_purged(make_store: Factory) -> None:
    clock = FakeClock()
    async with make_store(clock=clock) as store:
        dead = await kill(store, "a")
        assert await store.outbox_replay(dead)
        clock.now += 1000
        assert await store.outbox_purge(10) == 0
        assert [e.event_id for e in await store.outbox_list("pending")] == [dead]


async def test_the_dispatcher_purges_on_its_own_every_interval() -> None:
    clock = FakeClock()
    async with MemoryStore(clock=clock) as store:
        hooks = config("http://127.0.0.1:9/", dead_retention=100.0, purge_interval=10.0)
        dispatcher = WebhookDispatcher(store, hooks, clock=clock)
        await kill(store, "a")
        assert await dispatcher.purge_due() == 0  # dead for 0 s
        clock.now += 101
        await kill(store, "b")
        assert await dispatcher.purge_due() == 1  # the first; the second is new
        clock.now += 5
        assert await dispatcher.purge_due() == 0  # not again before the interval
        clock.now += 200
        assert await dispatcher.purge_due() == 1
        assert dispatcher.metrics.purged == 2
        assert "ilp_receiver_webhook_purged_total 2" in await dispatcher.metrics_text()
        await dispatcher.stop()
        keep = WebhookDispatcher(store, config("http://127.0.0.1:9/", dead_retention=0.0))
        await kill(store, "c")
        clock.now += 10**7
        assert await keep.purge_due() == 0  # 0 keeps them
        assert (await store.outbox_counts())["dead"] == 1


async def test_the_background_rounds_purge(tmp_path: Path) -> None:
    clock = FakeClock()
    async with MemoryStore(clock=clock) as store:
        await kill(store, "a")
        clock.now += 1000
        hooks = config("http://127.0.0.1:9/", dead_retention=100.0, poll_interval=0.01)
        dispatcher = WebhookDispatcher(store, hooks, clock=clock)
        await dispatcher.start()
        try:
            for _ in range(500):
                if (await store.outbox_counts())["dead"] == 0:
                    break
                await asyncio.sleep(0.01)
        finally:
            await dispatcher.stop()
        assert await store.outbox_counts() == {"pending": 0, "dead": 0}


def test_dead_retention_settings_are_checked() -> None:
    assert ReceiverOptions().webhook_dead_retention == 30 * 24 * 3600
    env = ReceiverOptions.from_env({"ILP_RECEIVER_WEBHOOK_DEAD_RETENTION": "3600"})
    assert env.webhook_dead_retention == 3600.0
    with pytest.raises(ConfigError, match="ILP_RECEIVER_WEBHOOK_DEAD_RETENTION"):
        ReceiverOptions.from_env({"ILP_RECEIVER_WEBHOOK_DEAD_RETENTION": "a month"})
    with pytest.raises(ConfigError, match="webhook_dead_retention"):
        WebhookConfig((), (), dispatch=False, dead_retention=-1)
    with pytest.raises(ConfigError, match="webhook_purge_interval"):
        WebhookConfig((), (), dispatch=False, purge_interval=0)


def test_the_purge_command(tmp_path: Path) -> None:
    path = tmp_path / "balances.sqlite3"

    async def prepare() -> None:
        async with SqliteStore(path) as store:
            await kill(store, "a")

    asyncio.run(prepare())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}

    def purge(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "ilp-receiver"), "webhooks", "purge", "--store", str(path)]
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    kept = purge()  # the default retention: 30 days
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout) == {"purged": 0, "older_than": 2592000.0}
    refused = purge("--older-than", "-5")
    assert refused.returncode != 0
    assert "--older-than" in refused.stderr
    done = purge("--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"purged": 1, "older_than": 0.0}
