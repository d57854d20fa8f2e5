"""Balance stores: every store passes the same contract tests.

Redis (redis://127.0.0.1:6379/15) and PostgreSQL (postgresql://127.0.0.1:5432/test, user
root or postgres, trust auth) are the local services; their tests are skipped only when
the service cannot be reached. Each test uses a fresh random key / table prefix and
removes what it created.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pathlib
import random
import sqlite3
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ilp_receiver.errors import ConfigError, IlpReceiverError
from ilp_receiver.stores import (
    AddResult,
    BalanceLimitError,
    BalanceStore,
    MemoryStore,
    SqliteStore,
    StoreClosedError,
    StoreError,
    open_store,
)
from ilp_receiver.stores.outbox import OutboxEntry

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_URLS = (
    "postgresql://root@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/test",
)
U64 = 2**64 - 1


class FakeClock:
    """A settable clock for retention tests."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- service discovery (once per session) -------------------------------------------------

_redis_status: str | None = None  # "" when reachable, else the reason
_postgres_status: tuple[str | None, str] | None = None  # (url, reason)


def redis_reason() -> str:
    global _redis_status
    if _redis_status is None:
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
            client.ping()
            client.close()
            _redis_status = ""
        except Exception as exc:
            _redis_status = f"Redis at {REDIS_URL} is not reachable: {exc!r}"
    return _redis_status


async def postgres_url() -> tuple[str | None, str]:
    global _postgres_status
    if _postgres_status is None:
        import asyncpg  # type: ignore[import-untyped]

        reasons = []
        for url in POSTGRES_URLS:
            try:
                conn = await asyncpg.connect(url, timeout=3)
                await conn.close()
            except Exception as exc:
                reasons.append(f"{url}: {exc!r}")
                continue
            _postgres_status = (url, "")
            break
        else:
            _postgres_status = (None, "PostgreSQL is not reachable: " + "; ".join(reasons))
    return _postgres_status


async def _cleanup_redis(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _cleanup_postgres(url: str, prefix: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    for table in ("balances", "idempotency", "meta", "outbox"):
        await conn.execute(f'DROP TABLE IF EXISTS "{prefix}{table}"')
    await conn.close()


Factory = Callable[..., BalanceStore]

STORE_KINDS = ["memory", "sqlite", "redis", "postgres"]


@pytest.fixture(params=STORE_KINDS)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[Factory]:
    """A factory of stores of one kind; all share one namespace (file / prefix)."""
    kind: str = request.param
    tag = uuid.uuid4().hex[:12]
    created: list[BalanceStore] = []
    redis_prefix = f"test-{tag}:"
    pg_prefix = f"test_{tag}_"
    pg: str | None = None
    if kind == "redis" and (reason := redis_reason()):
        pytest.skip(reason)
    if kind == "postgres":
        pg, reason = await postgres_url()
        if pg is None:
            pytest.skip(reason)

    def factory(**kwargs: Any) -> BalanceStore:
        store: BalanceStore
        if kind == "memory":
            store = MemoryStore(**kwargs)
        elif kind == "sqlite":
            store = SqliteStore(tmp_path / "balances.db", **kwargs)
        elif kind == "redis":
            from ilp_receiver.stores.redis import RedisStore

            store = RedisStore(REDIS_URL, prefix=redis_prefix, **kwargs)
        else:
            from ilp_receiver.stores.postgres import PostgresStore

            assert pg is not None
            store = PostgresStore(pg, prefix=pg_prefix, **kwargs)
        created.append(store)
        return store

    factory.kind = kind  # type: ignore[attr-defined]
    try:
        yield factory
    finally:
        for store in created:
            await store.close()
        if kind == "redis":
            await _cleanup_redis(redis_prefix)
        elif kind == "postgres":
            assert pg is not None
            await _cleanup_postgres(pg, pg_prefix)


@pytest.fixture
async def store(make_store: Factory) -> AsyncIterator[BalanceStore]:
    """One open store of each kind."""
    async with make_store() as opened:
        yield opened


# -- the contract ---------------------------------------------------------------------------


async def test_credit_debit_and_balance(store: BalanceStore) -> None:
    assert await store.balance("nobody") == 0
    assert await store.credit("alice", 100) == AddResult(100, True)
    assert await store.credit("alice", 0) == AddResult(100, True)
    assert await store.balance("alice") == 100
    assert await store.debit("alice", 30) == 70
    assert await store.try_debit("alice", 70) == 0
    assert await store.try_debit("alice", 1) is None
    with pytest.raises(BalanceLimitError) as info:
        await store.debit("alice", 5)
    err = info.value
    assert (err.key, err.balance, err.delta, err.minimum, err.maximum) == ("alice", 0, -5, 0, None)
    assert await store.balance("alice") == 0
    assert await store.add("bob", -5) == AddResult(-5, True)  # add has no implicit floor
    assert await store.balance("bob") == -5


async def test_limits_change_nothing(store: BalanceStore) -> None:
    await store.credit("k", 50)
    with pytest.raises(BalanceLimitError) as info:
        await store.credit("k", 51, maximum=100)
    assert info.value.balance == 50
    assert (info.value.delta, info.value.maximum) == (51, 100)
    assert await store.credit("k", 50, maximum=100) == AddResult(100, True)
    assert await store.add("k", -100, minimum=0, maximum=100) == AddResult(0, True)
    with pytest.raises(BalanceLimitError):
        await store.add("k", 10, minimum=20)  # the NEW balance is what is checked
    # A refused change on a new key does not create it.
    with pytest.raises(BalanceLimitError):
        await store.debit("fresh", 1)
    with pytest.raises(BalanceLimitError):
        await store.add("fresh2", 5, minimum=10)
    assert await store.balances("fresh") == {}
    assert await store.balance("k") == 0


async def test_limit_error_is_library_error_and_hides_key(store: BalanceStore) -> None:
    with pytest.raises(BalanceLimitError) as info:
        await store.debit("pay-token-SECRET", 1)
    assert isinstance(info.value, IlpReceiverError)
    assert "SECRET" not in str(info.value)


async def test_argument_validation(store: BalanceStore) -> None:
    with pytest.raises(ValueError, match="negative"):
        await store.credit("k", -1)
    with pytest.raises(ValueError, match="positive"):
        await store.debit("k", 0)
    with pytest.raises(TypeError):
        await store.credit("k", True)
    with pytest.raises(TypeError):
        await store.add("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.add(b"k", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="greater"):
        await store.add("k", 1, minimum=5, maximum=4)
    with pytest.raises(ValueError, match="empty"):
        await store.add("k", 1, idempotency_key="")
    assert await store.balance("k") == 0


async def test_idempotency(store: BalanceStore) -> None:
    assert await store.credit("a", 10, idempotency_key="pkt-1") == AddResult(10, True)
    assert await store.credit("a", 10, idempotency_key="pkt-1") == AddResult(10, False)
    assert await store.credit("a", 5, idempotency_key="pkt-2") == AddResult(15, True)
    # A duplicate reports the current balance of the key asked for.
    assert await store.credit("b", 10, idempotency_key="pkt-1") == AddResult(0, False)
    assert await store.add("a", -100, idempotency_key="pkt-2") == AddResult(15, False)
    # A refused change does not use up its idempotency key.
    with pytest.raises(BalanceLimitError):
        await store.credit("a", 100, maximum=50, idempotency_key="pkt-3")
    assert await store.credit("a", 100, idempotency_key="pkt-3") == AddResult(115, True)
    # A duplicate is reported even when the change would now break the limits.
    assert await store.add("a", -1000, minimum=0, idempotency_key="pkt-3") == AddResult(115, False)
    assert await store.balance("a") == 115
    assert await store.balances() == {"a": 115}


async def test_concurrent_duplicates_credit_once(store: BalanceStore) -> None:
    results = await asyncio.gather(
        *(store.credit("dup", 7, idempotency_key="same-packet") for _ in range(30))
    )
    assert sum(r.applied for r in results) == 1
    assert all(r.balance == 7 for r in results)
    assert await store.balance("dup") == 7


async def test_balances_prefix(store: BalanceStore) -> None:
    for key, amount in [("a:1", 1), ("a:2", 2), ("ab", 3), ("b", 4), ("é:x", 5), ("éa", 6)]:
        await store.credit(key, amount)
    await store.credit("a:zero", 9)
    await store.debit("a:zero", 9)
    assert await store.balances("a:") == {"a:1": 1, "a:2": 2, "a:zero": 0}
    assert await store.balances("a") == {"a:1": 1, "a:2": 2, "a:zero": 0, "ab": 3}
    assert await store.balances("é") == {"é:x": 5, "éa": 6}
    assert await store.balances("é:") == {"é:x": 5}
    assert await store.balances("zzz") == {}
    everything = await store.balances()
    assert everything == {
        "a:1": 1,
        "a:2": 2,
        "a:zero": 0,
        "ab": 3,
        "b": 4,
        "é:x": 5,
        "éa": 6,
    }
    assert await store.balances("") == everything


async def test_values_beyond_64_bits(store: BalanceStore) -> None:
    assert await store.credit("big", 2**63) == AddResult(2**63, True)
    assert await store.credit("big", 2**63) == AddResult(2**64, True)
    for _ in range(3):
        await store.credit("big", U64)
    expected = 2**64 + 3 * U64
    assert await store.balance("big") == expected
    assert await store.balances("bi") == {"big": expected}
    assert await store.debit("big", U64) == expected - U64
    with pytest.raises(BalanceLimitError) as info:
        await store.credit("big", U64, maximum=2**65)
    assert info.value.balance == expected - U64
    assert await store.add("neg", -(2**70)) == AddResult(-(2**70), True)
    assert await store.add("neg", 2**70 - 1) == AddResult(-1, True)
    assert await store.add("neg", 10**40, maximum=10**40) == AddResult(10**40 - 1, True)
    assert await store.add("neg", -(10**40) + 1, minimum=0) == AddResult(0, True)
    assert await store.balance("neg") == 0


async def test_random_operations_match_a_model(store: BalanceStore) -> None:
    rnd = random.Random(20240611)
    model: dict[str, int] = {}
    used: set[str] = set()
    for step in range(250):
        key = f"m{rnd.randrange(4)}"
        bits = rnd.choice([1, 8, 63, 64, 65, 100, 200])
        delta = rnd.choice([1, -1]) * rnd.randrange(0, 2**bits)
        minimum = rnd.choice([None, None, 0, -(2**64), 2**62])
        maximum = rnd.choice([None, None, 2**64, 10**30])
        if minimum is not None and maximum is not None and minimum > maximum:
            minimum = None
        idem = rnd.choice([None, f"i{step}", f"i{rnd.randrange(step + 1)}"])
        current = model.get(key, 0)
        new = current + delta
        if idem is not None and idem in used:
            expected: AddResult | None = AddResult(current, False)
        elif (minimum is not None and new < minimum) or (maximum is not None and new > maximum):
            expected = None
        else:
            expected = AddResult(new, True)
        if expected is None:
            with pytest.raises(BalanceLimitError) as info:
                await store.add(key, delta, minimum=minimum, maximum=maximum, idempotency_key=idem)
            assert info.value.balance == current
        else:
            got = await store.add(
                key, delta, minimum=minimum, maximum=maximum, idempotency_key=idem
            )
            assert got == expected, (step, key, delta, minimum, maximum, idem)
            if expected.applied:
                model[key] = new
                if idem is not None:
                    used.add(idem)
    assert await store.balances("m") == model


async def test_200_concurrent_credits(store: BalanceStore) -> None:
    results = await asyncio.gather(*(store.credit("c", 1) for _ in range(200)))
    assert sorted(r.balance for r in results) == list(range(1, 201))
    assert await store.balance("c") == 200


async def test_200_concurrent_credits_with_idempotency_keys(store: BalanceStore) -> None:
    await asyncio.gather(*(store.credit("c", 1, idempotency_key=f"p{i}") for i in range(200)))
    await asyncio.gather(*(store.credit("c", 1, idempotency_key=f"p{i}") for i in range(200)))
    assert await store.balance("c") == 200


async def test_50_concurrent_debits(store: BalanceStore) -> None:
    await store.credit("d", 250)
    results = await asyncio.gather(*(store.try_debit("d", 10) for _ in range(50)))
    succeeded = [r for r in results if r is not None]
    assert len(succeeded) == 25
    assert sorted(succeeded) == list(range(0, 250, 10))
    assert await store.balance("d") == 0


async def test_two_instances_share_balances(make_store: Factory) -> None:
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        pytest.skip("a MemoryStore is private to its instance")
    async with make_store() as one, make_store() as two:
        await asyncio.gather(
            *(one.credit("s", 1, idempotency_key=f"x{i}") for i in range(100)),
            *(two.credit("s", 1, idempotency_key=f"x{i}") for i in range(50, 150)),
        )
        await asyncio.gather(*(s.try_debit("s", 3) for s in (one, two) for _ in range(40)))
        assert await one.balance("s") == await two.balance("s") == 150 - 3 * 50


async def test_one_prepare_delivered_to_two_members_is_credited_once(make_store: Factory) -> None:
    # two receiver processes (two store instances on one backend) get the same Prepare
    # at once, many times over: each condition is credited exactly once
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        pytest.skip("a MemoryStore is private to its instance")
    async with make_store() as one, make_store() as two:
        conditions = [uuid.uuid4().hex for _ in range(40)]
        results = await asyncio.gather(
            *(
                member.credit("endpoint:default", 1000, idempotency_key=condition)
                for condition in conditions
                for member in (one, two, one, two)
            )
        )
        assert sum(r.applied for r in results) == len(conditions)
        assert await one.balance("endpoint:default") == 1000 * len(conditions)


async def test_revert_undoes_exactly_one_idempotent_change(make_store: Factory) -> None:
    async with make_store() as store:
        assert store.supports_revert
        await store.credit("r", 5)
        assert (await store.credit("r", 100, idempotency_key="c1")).applied
        assert (await store.credit("r", 7, idempotency_key="c2")).applied
        assert not await store.revert("r", 99, "c1")  # another delta: not that change
        assert not await store.revert("r", 100, "nope")  # unknown key
        assert await store.balance("r") == 112
        assert await store.revert("r", 100, "c1")
        assert await store.balance("r") == 12
        assert not await store.revert("r", 100, "c1")  # once only
        assert await store.balance("r") == 12
        # forgotten: a later delivery of the same Prepare is credited afresh
        assert (await store.credit("r", 100, idempotency_key="c1")).applied
        assert not (await store.credit("r", 100, idempotency_key="c1")).applied
        assert await store.balance("r") == 112
        if make_store.kind != "redis":  # type: ignore[attr-defined]
            # the key is remembered for an account (Redis keeps only the delta)
            assert not await store.revert("other", 7, "c2")
        # a revert is not held back by a limit (it undoes a credit that was allowed)
        await store.add("r", -112, minimum=0)
        assert await store.revert("r", 7, "c2")
        assert await store.balance("r") == -7


async def test_revert_across_two_instances(make_store: Factory) -> None:
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        pytest.skip("a MemoryStore is private to its instance")
    async with make_store() as one, make_store() as two:
        assert (await one.credit("x", 10, idempotency_key="k")).applied
        assert not (await two.credit("x", 10, idempotency_key="k")).applied
        reverted = await asyncio.gather(one.revert("x", 10, "k"), two.revert("x", 10, "k"))
        assert sorted(reverted) == [False, True]
        assert await one.balance("x") == await two.balance("x") == 0


async def test_idempotency_keys_expire(make_store: Factory) -> None:
    kind = make_store.kind  # type: ignore[attr-defined]
    clock = FakeClock()
    # Redis expires keys by the server's clock; the others use the injected one.
    store = make_store(retention=0.3) if kind == "redis" else make_store(retention=100, clock=clock)
    async with store:
        assert (await store.credit("e", 1, idempotency_key="old")).applied
        clock.now += 50
        assert not (await store.credit("e", 1, idempotency_key="old")).applied
        if kind == "redis":
            await asyncio.sleep(0.5)
        else:
            clock.now += 60
        # Forgotten after the retention period, whether or not it was pruned yet.
        assert (await store.credit("e", 1, idempotency_key="old")).applied
        assert not (await store.credit("e", 1, idempotency_key="old")).applied
        assert await store.balance("e") == 2


async def test_closed_store_refuses_work(make_store: Factory) -> None:
    store = make_store()
    await store.credit("k", 1)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.credit("k", 1)
    with pytest.raises(StoreClosedError):
        await store.balance("k")
    with pytest.raises(StoreClosedError):
        await store.balances()
    assert issubclass(StoreClosedError, StoreError)


# -- SQLite specifics ---------------------------------------------------------------------


async def test_sqlite_persists_balances_and_idempotency_keys(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "p.db"
    async with SqliteStore(path) as store:
        await store.credit("a", U64, idempotency_key="k1")
        await store.credit("a", U64, idempotency_key="k2")
        await store.credit("b", 3)
    async with open_store(str(path)) as store:
        assert isinstance(store, SqliteStore)
        assert await store.balances() == {"a": 2 * U64, "b": 3}
        assert await store.credit("a", U64, idempotency_key="k1") == AddResult(2 * U64, False)
        assert (await store.credit("a", 1, idempotency_key="k3")).applied
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT value FROM ilp_meta WHERE name='schema_version'").fetchone() == (
        "2",
    )
    rows = conn.execute("SELECT key, account, delta FROM ilp_idempotency ORDER BY key").fetchall()
    assert rows == [("k1", "a", str(U64)), ("k2", "a", str(U64)), ("k3", "a", "1")]
    assert conn.execute("SELECT balance FROM ilp_balances WHERE key='a'").fetchone() == (
        str(2 * U64 + 1),
    )
    conn.close()


async def test_sqlite_refuses_unknown_schema_version(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v.db"
    async with SqliteStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("UPDATE ilp_meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


def _idempotency_keys(path: pathlib.Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: [row[0] for row in conn.execute(f"SELECT key FROM {table} ORDER BY key")]
            for table in ("ilp_idempotency_0", "ilp_idempotency_1")
        }
    finally:
        conn.close()


async def test_sqlite_rotates_idempotency_generations(tmp_path: pathlib.Path) -> None:
    clock = FakeClock(1_000_050.0)  # period 10000 of 100 s: generation table 0
    path = tmp_path / "rotate.db"
    async with SqliteStore(path, retention=100, clock=clock) as store:
        await asyncio.gather(*(store.credit("a", 1, idempotency_key=f"o{i}") for i in range(3)))
        assert _idempotency_keys(path) == {
            "ilp_idempotency_0": ["o0", "o1", "o2"],
            "ilp_idempotency_1": [],
        }
        clock.now += 60  # next period, keys still within the retention: remembered
        assert not (await store.credit("a", 1, idempotency_key="o1")).applied
        await store.credit("a", 1, idempotency_key="n1")
        assert _idempotency_keys(path)["ilp_idempotency_1"] == ["n1"]
        clock.now += 100  # period 10002 reuses table 0: its rows (period 10000) are dropped
        assert not (await store.credit("a", 1, idempotency_key="n1")).applied
        await store.credit("a", 1, idempotency_key="n2")
        assert _idempotency_keys(path) == {
            "ilp_idempotency_0": ["n2"],
            "ilp_idempotency_1": ["n1"],
        }
        clock.now += 1100  # idle for many periods (now period 10013): both are stale
        await store.credit("a", 1, idempotency_key="n1")
        assert _idempotency_keys(path) == {"ilp_idempotency_0": [], "ilp_idempotency_1": ["n1"]}
        assert await store.balance("a") == 6
    # another store on the same file agrees on the period recorded in the file
    async with SqliteStore(path, retention=100, clock=clock) as store:
        assert not (await store.credit("a", 1, idempotency_key="n1")).applied
        assert await store.balance("a") == 6


async def test_sqlite_migrates_a_version_1_file(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE ilp_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE ilp_balances (key TEXT PRIMARY KEY, balance TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE ilp_idempotency (
            key TEXT PRIMARY KEY, account TEXT NOT NULL, delta TEXT NOT NULL, at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX ilp_idempotency_at ON ilp_idempotency (at);
        INSERT INTO ilp_meta VALUES ('schema_version', '1');
        INSERT INTO ilp_balances VALUES ('a', '30');
        """
    )
    conn.executemany(
        "INSERT INTO ilp_idempotency VALUES (?, 'a', '10', ?)",
        [("recent", clock.now - 10), ("recent2", clock.now - 20), ("stale", clock.now - 500)],
    )
    conn.commit()
    conn.close()
    async with SqliteStore(path, retention=100, clock=clock) as store:
        assert await store.balance("a") == 30
        assert not (await store.credit("a", 10, idempotency_key="recent")).applied
        assert (await store.credit("a", 10, idempotency_key="stale")).applied
        assert await store.balance("a") == 40
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM ilp_meta WHERE name='schema_version'").fetchone() == (
        "2",
    )
    assert sorted(row[0] for row in conn.execute("SELECT key FROM ilp_idempotency")) == [
        "recent",
        "recent2",
        "stale",
    ]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '%_v1'").fetchall() == []
    kind = conn.execute("SELECT type FROM sqlite_master WHERE name='ilp_idempotency'").fetchone()
    assert kind == ("view",)
    conn.close()


async def test_sqlite_close_flushes_queued_work(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "flush.db"
    store = SqliteStore(path)
    tasks = [asyncio.create_task(store.credit("f", 1, idempotency_key=f"q{i}")) for i in range(300)]
    await asyncio.sleep(0)  # let every task queue its change
    await asyncio.gather(store.close(), store.close())
    results = await asyncio.gather(*tasks)
    assert all(r.applied for r in results)
    async with SqliteStore(path) as reopened:
        assert await reopened.balance("f") == 300


async def test_sqlite_group_commit_batches(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(tmp_path / "batch.db", max_batch=16)
    batches: list[int] = []
    original = store._transaction

    def spy(conn: sqlite3.Connection, batch: list[Any]) -> list[Any]:
        batches.append(len(batch))
        return original(conn, batch)

    store._transaction = spy  # type: ignore[method-assign]
    async with store:
        await asyncio.gather(*(store.credit("g", 1) for _ in range(200)))
        assert await store.balance("g") == 200
    assert sum(batches) == 200
    assert max(batches) == 16  # concurrent calls share transactions, capped by max_batch
    assert len(batches) < 200


async def test_sqlite_write_failure_is_store_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ro.db"
    async with SqliteStore(path) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("DROP TABLE ilp_balances")  # sabotage
        other.close()
        with pytest.raises(StoreError, match="SQLite write failed") as info:
            await store.credit("x", 1)
        assert isinstance(info.value.__cause__, sqlite3.Error)


def test_sqlite_bad_path_is_store_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "missing-dir" / "x.db")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_sqlite_store_survives_fork(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fork.db"
    store = SqliteStore(path)
    await store.credit("p", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: new writer thread and connections, then a hard exit
        code = 1
        try:

            async def child() -> None:
                await store.credit("p", 10)
                await store.close()

            asyncio.run(child())
            code = 0
        finally:
            os._exit(code)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    await store.credit("p", 100)
    assert await store.balance("p") == 111
    await store.close()


# -- open_store -----------------------------------------------------------------------------


async def test_open_store_urls(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory:"), MemoryStore)
    path = tmp_path / "x.db"
    for value in (str(path), path, f"sqlite:///{path}"):
        store = open_store(value)
        assert isinstance(store, SqliteStore)
        assert store.path == str(path)
        await store.close()
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///rel.db")
    assert isinstance(store, SqliteStore)
    assert store.path == "rel.db"
    await store.close()
    from ilp_receiver.stores.postgres import PostgresStore
    from ilp_receiver.stores.redis import RedisStore

    redis_store = open_store("redis://127.0.0.1:6379/15", prefix="p:")
    assert isinstance(redis_store, RedisStore)
    assert redis_store.prefix == "p:"
    await redis_store.close()
    pg_store = open_store("postgresql://127.0.0.1/test", retention=60)
    assert isinstance(pg_store, PostgresStore)
    assert (pg_store.prefix, pg_store.retention) == ("ilp_", 60.0)
    await pg_store.close()
    # the prefix may travel in the URL (one string configures a process), and is taken
    # off before the driver sees the URL; an explicit prefix wins
    redis_store = open_store("redis://127.0.0.1:6379/15?prefix=shop:")
    assert isinstance(redis_store, RedisStore)
    assert redis_store.prefix == "shop:"
    await redis_store.close()
    pg_store = open_store("postgresql://127.0.0.1/test?sslmode=disable&prefix=shop_")
    assert isinstance(pg_store, PostgresStore)
    assert (pg_store.prefix, pg_store._url) == (
        "shop_",
        "postgresql://127.0.0.1/test?sslmode=disable",
    )
    await pg_store.close()
    pg_store = open_store("postgresql://127.0.0.1/test?prefix=shop_", prefix="other_")
    assert isinstance(pg_store, PostgresStore)
    assert pg_store.prefix == "other_"
    await pg_store.close()


@pytest.mark.parametrize(
    "value",
    ["", "  ", "ftp://user:hunter2@host/x", "sqlite://", "sqlite:///", "mysql://u:hunter2@h/db"],
)
def test_open_store_rejects_bad_values(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(value)
    assert info.value.field == "store"
    assert "hunter2" not in str(info.value)


def test_open_store_rejects_bad_options() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("postgresql://127.0.0.1/test", prefix="bad-prefix; DROP")
    assert info.value.field == "store"
    with pytest.raises(ValueError, match="retention"):
        open_store(None, retention=0)


@pytest.mark.parametrize(
    ("module", "driver", "extra"),
    [("redis", "redis", "ilp-receiver[redis]"), ("postgres", "asyncpg", "ilp-receiver[postgres]")],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, driver: str, extra: str
) -> None:
    name = f"ilp_receiver.stores.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    for loaded in list(sys.modules):
        if loaded == driver or loaded.startswith(driver + "."):
            monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        importlib.import_module(name)


async def test_unreachable_services_raise_store_error() -> None:
    from ilp_receiver.stores.postgres import PostgresStore
    from ilp_receiver.stores.redis import RedisStore

    redis_store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError):
        await redis_store.credit("k", 1)
    await redis_store.close()
    pg_store = PostgresStore("postgresql://root@127.0.0.1:1/test")
    with pytest.raises(StoreError):
        await pg_store.credit("k", 1)
    await pg_store.close()


# -- add_many -----------------------------------------------------------------------------


async def test_add_many_contract(make_store: Factory) -> None:
    """Every store: one result per change, each the key's balance right after that
    change (a repeated key accumulates), no limits (balances may go negative), no
    idempotency keys (the same changes twice apply twice), sums beyond 64 bits.

    Memory and SQLite apply the changes in order (SQLite in one transaction); the
    default ``add_many`` (Redis, PostgreSQL) runs the adds concurrently, so the results
    of a repeated key come in commit order."""
    ordered = make_store.kind in ("memory", "sqlite")  # type: ignore[attr-defined]
    async with make_store() as store:
        assert await store.add_many([]) == []
        changes = [("a", 5), ("b", -3), ("a", 5), ("big", U64), ("big", U64)]
        results = await store.add_many(changes)
        assert all(r.applied for r in results)
        expected = [5, -3, 10, U64, 2 * U64]
        got = [r.balance for r in results]
        if ordered:
            assert got == expected
        else:
            assert sorted(got) == sorted(expected)
        twice = [("a", 1), ("a", 1)]
        assert sorted(r.balance for r in await store.add_many(twice)) == [11, 12]
        assert sorted(r.balance for r in await store.add_many(twice)) == [13, 14]
        assert await store.balances() == {"a": 14, "b": -3, "big": 2 * U64}
        # Mixed with ordinary adds and their limits.
        await store.debit("a", 14)
        assert await store.add_many([("a", -1)]) == [AddResult(-1, True)]
        with pytest.raises(BalanceLimitError):
            await store.debit("a", 1)
        assert await store.balance("a") == -1


async def test_add_many_validates_arguments(store: BalanceStore) -> None:
    with pytest.raises(TypeError):
        await store.add_many([(b"k", 1)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await store.add_many([("k", 1.5)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await store.add_many([("k", True)])
    assert await store.balance("k") == 0


async def test_add_many_concurrent_with_add(store: BalanceStore) -> None:
    await store.credit("c", 1000)
    await asyncio.gather(
        *(store.add_many([("c", -1), ("d", 1)]) for _ in range(50)),
        *(store.debit("c", 2) for _ in range(50)),
    )
    assert await store.balances() == {"c": 1000 - 50 - 100, "d": 50}


# -- add_each ------------------------------------------------------------------------------


async def test_add_each_contract(make_store: Factory) -> None:
    """Every store: one outcome per change, in order, each what ``add`` would have made
    of it: its AddResult, a repeated idempotency key unapplied, BalanceLimitError for a
    change beyond its limit (the others still apply), bad arguments refused before the
    backend; and a change already made by ``add`` is not made again."""
    async with make_store() as store:
        assert await store.add_each([]) == []
        await store.add("a", 10, idempotency_key="k0")
        outcomes = await store.add_each(
            [
                ("a", 5, None, 100, "k1"),
                ("b", 7, None, None, "k2"),
                ("a", 90, None, 100, "k3"),  # 105 > 100
                ("a", 5, None, None, "k0"),  # made by add already
                ("c", -1, 0, None, None),  # below its minimum
                ("d", 1.5, None, None, None),  # type: ignore[list-item]
                ("a", 1, None, None, None),  # no key: applies
            ]
        )
        assert outcomes[0] == AddResult(15, True)
        assert outcomes[1] == AddResult(7, True)
        assert isinstance(outcomes[2], BalanceLimitError)
        assert isinstance(outcomes[3], AddResult) and not outcomes[3].applied
        assert isinstance(outcomes[4], BalanceLimitError)
        assert isinstance(outcomes[5], TypeError)
        assert outcomes[6] == AddResult(16, True)
        assert await store.balances() == {"a": 16, "b": 7}
        # the same keys again: nothing applies twice
        again = await store.add_each([("a", 5, None, 100, "k1"), ("b", 7, None, None, "k2")])
        assert [o.applied for o in again if isinstance(o, AddResult)] == [False, False]
        assert await store.balances() == {"a": 16, "b": 7}


async def test_add_each_concurrent_with_add_is_exact(store: BalanceStore) -> None:
    """Batches and single adds of the same keys, interleaved: each key counted once."""
    await asyncio.gather(
        *(
            store.add_each([("e", 1, None, None, f"x{i}"), ("e", 1, None, None, f"y{i}")])
            for i in range(40)
        ),
        *(store.add("e", 1, idempotency_key=f"x{i}") for i in range(40)),
    )
    assert await store.balance("e") == 80


class _AddOnlyStore(BalanceStore):
    """The smallest store: only the abstract methods (what Redis/PostgreSQL inherit)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []

    async def _add(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        self.calls.append((key, delta))
        await asyncio.sleep(0)
        if key == "fail":
            raise StoreError("backend down")
        self.data[key] = self.data.get(key, 0) + delta
        return AddResult(self.data[key], True)

    async def balance(self, key: str) -> int:
        return self.data.get(key, 0)

    async def balances(self, prefix: str = "") -> dict[str, int]:
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    async def close(self) -> None:
        pass


async def test_base_add_many_falls_back_to_add_and_is_not_atomic() -> None:
    """The default ``add_many`` runs ``add`` per change (no limits, no idempotency
    keys); it is not one transaction: a failing change raises StoreError and the others
    stand."""
    store = _AddOnlyStore()
    assert await store.add_many([]) == []
    assert await store.add_many([("x", 1), ("y", 2), ("x", 3)]) == [
        AddResult(1, True),
        AddResult(2, True),
        AddResult(4, True),
    ]
    assert store.calls == [("x", 1), ("y", 2), ("x", 3)]
    with pytest.raises(StoreError):
        await store.add_many([("x", 1), ("fail", 1), ("y", 1)])
    await asyncio.sleep(0.01)
    assert store.data == {"x": 5, "y": 3}


async def test_the_base_class_checks_the_arguments_before_the_storage_step() -> None:
    """``add``'s checks live once, in ``BalanceStore``: a bad call never reaches a
    backend's ``_add``, and the optional operations refuse on a store without them."""
    store = _AddOnlyStore()
    with pytest.raises(TypeError):
        await store.add("k", True)
    with pytest.raises(ValueError, match="minimum 5 is greater than maximum 1"):
        await store.add("k", 1, minimum=5, maximum=1)
    with pytest.raises(ValueError, match="idempotency_key must not be empty"):
        await store.add("k", 1, idempotency_key="")
    with pytest.raises(ValueError, match="debit amount must be positive"):
        await store.debit("k", 0)
    assert store.calls == []
    with pytest.raises(NotImplementedError):
        await store.add_with_outbox("k", 1, [])
    with pytest.raises(NotImplementedError):
        await store.revert("k", 1, "key")
    assert store.calls == []


async def test_base_store_has_no_blocking_methods() -> None:
    store = _AddOnlyStore()
    assert store.supports_blocking is False
    with pytest.raises(NotImplementedError):
        store.add_blocking("k", 1)
    with pytest.raises(NotImplementedError):
        store.balance_blocking("k")
    with pytest.raises(NotImplementedError):
        store.try_debit_blocking("k", 1)


async def test_sqlite_add_many_is_one_transaction(tmp_path: pathlib.Path) -> None:
    async with SqliteStore(tmp_path / "many.db") as store:
        await store.credit("warm", 1)
        await asyncio.sleep(0.05)  # the writer's first prune (requested once) is done
        before = store.commit_counts
        results = await store.add_many([(f"k{i % 7}", i) for i in range(100)])
        after = store.commit_counts
        assert after["inline"] == before["inline"] + 1  # one transaction, inline
        assert after["writer"] == before["writer"]
        assert [r.balance for r in results[:7]] == list(range(7))
        assert await store.balance("k0") == sum(range(0, 100, 7))
        # A bad change refuses the whole call before anything is written.
        with pytest.raises(TypeError):
            await store.add_many([("k0", 1), (b"bad", 1)])  # type: ignore[list-item]
        assert await store.balance("k0") == sum(range(0, 100, 7))


async def test_sqlite_add_many_failure_changes_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fail.db"
    async with SqliteStore(path) as store:
        await store.add_many([("a", 1), ("b", 1)])
        other = sqlite3.connect(path, isolation_level=None)
        # refuse writes to 'b' only: the whole transaction rolls back
        other.execute(
            "CREATE TRIGGER no_b BEFORE UPDATE ON ilp_balances WHEN NEW.key = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'no b'); END"
        )
        other.close()
        with pytest.raises(StoreError, match="SQLite write failed"):
            await store.add_many([("a", 10), ("b", 10)])
        assert await store.balances() == {"a": 1, "b": 1}


# -- the inline commit path, the writer fall-back ------------------------------------------


async def _run_sequence(store: BalanceStore) -> list[Any]:
    """The same mix of operations, for comparing commit paths."""
    out: list[Any] = []
    out.append(await store.credit("s", 100, idempotency_key="i1"))
    out.append(await store.credit("s", 100, idempotency_key="i1"))
    out.append(await store.add_many([("s", -10), ("t", 5), ("s", -10)]))
    out += await asyncio.gather(*(store.try_debit("s", 30) for _ in range(4)))
    out += await asyncio.gather(
        *(store.credit("t", 1, idempotency_key=f"t{i % 5}") for i in range(10))
    )
    try:
        await store.credit("t", 1000, maximum=100)
    except BalanceLimitError as exc:
        out.append(("limit", exc.balance))
    out.append(await store.balances())
    return out


async def test_sqlite_inline_path_matches_writer_path(tmp_path: pathlib.Path) -> None:
    async with SqliteStore(tmp_path / "inline.db") as inline:
        got_inline = await _run_sequence(inline)
        counts = inline.commit_counts
    assert counts["inline"] >= 5
    assert counts["blocking"] == 0
    async with SqliteStore(tmp_path / "writer.db", synchronous="FULL") as writer:
        got_writer = await _run_sequence(writer)
        counts = writer.commit_counts
    assert counts["inline"] == 0
    assert counts["writer"] >= 5
    assert got_inline == got_writer
    async with MemoryStore() as memory:
        assert await _run_sequence(memory) == got_inline


async def test_sqlite_sequential_adds_commit_inline(tmp_path: pathlib.Path) -> None:
    async with SqliteStore(tmp_path / "seq.db") as store:
        await store.credit("warm", 1)
        await asyncio.sleep(0.05)  # the writer's first prune (requested once) is done
        before = store.commit_counts
        for i in range(20):
            await store.credit("q", 1, idempotency_key=f"q{i}")
        after = store.commit_counts
        assert after["inline"] - before["inline"] == 20
        assert after["writer"] == before["writer"]
        assert await store.balance("q") == 20


async def test_sqlite_full_never_goes_inline(tmp_path: pathlib.Path) -> None:
    async with SqliteStore(tmp_path / "full.db", synchronous="FULL") as store:
        assert store.supports_blocking is False
        await asyncio.gather(*(store.credit("f", 1) for _ in range(30)))
        await store.credit("f", 1, idempotency_key="x")
        await store.add_many([("f", 1), ("g", 1)])
        assert await store.try_debit("f", 100) is None
        assert store.commit_counts["inline"] == 0
        assert store.commit_counts["writer"] >= 4
        assert await store.balances() == {"f": 32, "g": 1}
        with pytest.raises(NotImplementedError):
            store.add_blocking("f", 1)


class _LockHolder:
    """Another connection (as another process would) holding SQLite's write lock."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.locked = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO ilp_meta (name, value) VALUES ('holder', 'x')")
        self.locked.set()
        self.release.wait(30)
        conn.execute("COMMIT")
        conn.close()

    def __enter__(self) -> _LockHolder:
        self.thread.start()
        assert self.locked.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


async def _max_tick_gap(stop: asyncio.Event, interval: float = 0.005) -> float:
    """The longest gap between ``interval`` sleeps until ``stop``: loop responsiveness."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    last = loop.time()
    while not stop.is_set():
        await asyncio.sleep(interval)
        now = loop.time()
        worst = max(worst, now - last)
        last = now
    return worst


async def test_sqlite_write_lock_held_elsewhere_falls_back_to_writer(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "locked.db"
    async with SqliteStore(path) as store:
        await store.credit("w", 1000)
        await asyncio.sleep(0.05)
        before = store.commit_counts
        stop = asyncio.Event()
        ticker = asyncio.create_task(_max_tick_gap(stop))
        with _LockHolder(path):
            tasks = [
                *(asyncio.create_task(store.credit("w", 1)) for _ in range(30)),
                *(
                    asyncio.create_task(store.credit("w", 1, idempotency_key=f"k{i % 10}"))
                    for i in range(20)
                ),
                *(asyncio.create_task(store.try_debit("w", 5)) for _ in range(10)),
                asyncio.create_task(store.add_many([("w", 100), ("v", 1)])),
            ]
            await asyncio.sleep(0.3)
            # Waiting for the lock, not failed, and the loop kept running.
            assert not any(task.done() for task in tasks)
            stop.set()
            worst = await ticker
            assert worst < 0.1, f"the event loop stalled for {worst:.3f}s"
            assert store.commit_counts["inline"] == before["inline"]
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(r is not None for r in results)
        applied = [r for r in results[30:50] if isinstance(r, AddResult) and r.applied]
        assert len(applied) == 10
        assert await store.balances() == {"w": 1000 + 30 + 10 - 50 + 100, "v": 1}
        after = store.commit_counts
        assert after["writer"] > before["writer"]
        # Once the lock is free, the inline path is used again.
        await store.credit("w", 1)
        assert store.commit_counts["inline"] == after["inline"] + 1


async def test_sqlite_add_many_lock_held_elsewhere_waits_in_the_writer(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "locked-many.db"
    async with SqliteStore(path) as store:
        stop = asyncio.Event()
        ticker = asyncio.create_task(_max_tick_gap(stop))
        with _LockHolder(path):
            task = asyncio.create_task(store.add_many([("m", 1), ("n", 2)]))
            await asyncio.sleep(0.2)
            assert not task.done()
            stop.set()
            assert await ticker < 0.1
        assert await asyncio.wait_for(task, 10) == [AddResult(1, True), AddResult(2, True)]
        assert store.commit_counts["writer"] >= 1


# -- blocking twins (sync callers) -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_blocking_debits_from_50_threads(tmp_path: pathlib.Path, kind: str) -> None:
    store: BalanceStore = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "b.db")
    assert store.supports_blocking
    assert store.add_blocking("d", 250) == AddResult(250, True)
    barrier = threading.Barrier(50)

    def debit(_: int) -> int | None:
        barrier.wait()
        return store.try_debit_blocking("d", 10)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(debit, range(50)))
    succeeded = [r for r in results if r is not None]
    assert sorted(succeeded) == list(range(0, 250, 10))
    assert store.balance_blocking("d") == 0
    if isinstance(store, SqliteStore):
        assert store.commit_counts["blocking"] == 51
    asyncio.run(store.close())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_blocking_and_async_adds_interleave(tmp_path: pathlib.Path, kind: str) -> None:
    store: BalanceStore = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "i.db")
    async with store:

        def blocking(i: int) -> None:
            for j in range(20):
                store.add_blocking("x", 1, idempotency_key=f"b{i}-{j}")
                store.add_blocking("x", 1, idempotency_key=f"b{i}-{j}")  # duplicate

        threads = [asyncio.to_thread(blocking, i) for i in range(4)]
        await asyncio.gather(
            *threads, *(store.credit("x", 1, idempotency_key=f"a{i}") for i in range(100))
        )
        assert await store.balance("x") == 180
        assert store.balance_blocking("x") == 180
        with pytest.raises(BalanceLimitError):
            store.add_blocking("x", -181, minimum=0)
        assert store.add_blocking("x", 1, idempotency_key="a0") == AddResult(180, False)


def test_sqlite_blocking_waits_for_the_lock_then_fails_loudly(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "busy.db"
    store = SqliteStore(path, busy_timeout=0.3)
    store.add_blocking("b", 1)
    with _LockHolder(path):
        started = time.monotonic()
        with pytest.raises(StoreError, match="SQLite write failed"):
            store.add_blocking("b", 1)
        assert time.monotonic() - started >= 0.25  # it waited, then said so
    # the lock released while a call waits: it succeeds
    with _LockHolder(path) as holder:
        timer = threading.Timer(0.1, holder.release.set)
        timer.start()
        assert store.add_blocking("b", 1) == AddResult(2, True)
        timer.join()
    asyncio.run(store.close())
    with pytest.raises(StoreClosedError):
        store.add_blocking("b", 1)


async def test_sqlite_debit_commits_at_once_behind_pending_changes(tmp_path: pathlib.Path) -> None:
    async with SqliteStore(tmp_path / "debit.db") as store:
        await store.credit("t", 10)
        before = store.commit_counts["inline"]
        assert await store.try_debit("t", 4) == 6
        assert await store.try_debit("t", 7) is None
        assert store.commit_counts["inline"] == before + 2  # no group-commit round
        # A credit already waiting for this loop iteration's commit goes first: the
        # debit joins that commit instead of overtaking it (6 + 5 covers 11, 6 does not).
        credited, debited = await asyncio.gather(store.credit("t", 5), store.try_debit("t", 11))
        assert (credited, debited) == (AddResult(11, True), 0)
        with pytest.raises(ValueError, match="positive"):
            await store.try_debit("t", 0)
        with pytest.raises(TypeError):
            await store.try_debit("t", True)
        assert await store.balance("t") == 0


async def test_sqlite_wal_is_reused_under_continuous_writes(tmp_path: pathlib.Path) -> None:
    """Checkpoints run under the write lock, so they complete and the WAL starts over:
    its file stays near ``checkpoint_interval`` commits' worth of pages however long
    the writes go on (a checkpoint racing the commits let it grow by every commit)."""
    path = tmp_path / "wal.db"
    async with SqliteStore(path, checkpoint_interval=50) as store:
        for i in range(3000):
            await store.credit("w", 1, idempotency_key=os.urandom(32).hex())
            if i % 500 == 499:
                await asyncio.sleep(0.01)  # let the writer thread take its turn
        assert await store.balance("w") == 3000
        assert store.commit_counts["inline"] >= 2500
        wal_size = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
    # 1.2-3.7 MB measured with the checkpoint under the write lock (it depends on when
    # the writer thread gets the GIL); 5.1-5.5 MB with the checkpoint racing the commits
    # (the lock taken out of the writer's checkpoint, same machine)
    assert wal_size < 4_500_000, wal_size
    with pytest.raises(ValueError, match="checkpoint_interval"):
        SqliteStore(tmp_path / "x.db", checkpoint_interval=0)
