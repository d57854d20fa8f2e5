"""PostgreSQL balance store, shared by many processes and machines (``asyncpg``).

Needs the optional extra: ``pip install 'ilp-receiver[postgres]'``.

Balances are ``NUMERIC(1000, 0)`` (exact integers, no 64-bit limit). A change is one
statement, atomic on its own::

    UPDATE {prefix}balances SET balance = balance + $2
     WHERE key = $1 AND <new balance within the limits> RETURNING balance

(or an ``INSERT ... ON CONFLICT (key) DO NOTHING`` for a new key). With an idempotency
key the change and ``INSERT INTO {prefix}idempotency ... ON CONFLICT (key) DO NOTHING``
share one transaction; a concurrent duplicate waits on the primary key until the first
commits and then sees the key. Commits are durable under PostgreSQL's default
``synchronous_commit = on``.

Schema (version 1, tables prefixed, default ``ilp_``), created on first use under an
advisory lock::

    {prefix}meta(name TEXT PRIMARY KEY, value TEXT)
    {prefix}balances(key TEXT PRIMARY KEY, balance NUMERIC(1000, 0))
    {prefix}idempotency(key TEXT PRIMARY KEY, account TEXT, delta NUMERIC(1000, 0),
                        at DOUBLE PRECISION)   -- seconds since the epoch, from ``clock``
    {prefix}outbox(seq BIGSERIAL PRIMARY KEY, id TEXT UNIQUE, ...)   -- webhook events
                        (stores/outbox.py), written in the credit's transaction
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the PostgreSQL balance store needs the 'asyncpg' package: "
        "pip install 'ilp-receiver[postgres]'"
    ) from exc

from ..errors import ConfigError
from .base import (
    DEFAULT_RETENTION,
    AddResult,
    BalanceStore,
    Clock,
    StoreClosedError,
    StoreError,
    limit_error,
)
from .outbox import (
    CLAIM_RUN,
    CLAIM_SCAN,
    MAX_ERROR,
    OutboxEntry,
    OutboxEvent,
    OutboxState,
    applicable_entries,
    check_claim_args,
    check_purge_age,
    select_heads,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: The schema version this module writes and understands.
SCHEMA_VERSION = 1

_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresStore(BalanceStore):
    """Balances in PostgreSQL tables named ``{prefix}balances`` etc.

    ``url`` is a ``postgresql://`` DSN. ``prefix`` (lowercase letters, digits and ``_``)
    names the tables. ``pool`` may be an existing ``asyncpg`` pool (then ``url`` is
    ignored and :meth:`close` leaves it open). The pool is created, and the schema,
    on first use or on :meth:`open`.
    """

    def __init__(
        self,
        url: str = "postgresql:///",
        *,
        prefix: str = "ilp_",
        retention: float = DEFAULT_RETENTION,
        clock: Clock | None = None,
        pool: Any = None,
        min_size: int = 1,
        max_size: int = 10,
    ) -> None:
        super().__init__(retention=retention, clock=clock)
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise ConfigError(
                "store", "the PostgreSQL table prefix must match [a-z_][a-z0-9_]{0,40}"
            )
        self.prefix = prefix
        self._url = url
        self._pool: Any = pool
        self._owns_pool = pool is None
        self._min_size = min_size
        self._max_size = max_size
        self._ready = False
        self._open_lock: asyncio.Lock | None = None
        self._closed = False
        self._next_prune = float("-inf")
        self._prune_interval = min(self.retention / 4, 60.0)
        b, i, m, o = (f'"{prefix}{name}"' for name in ("balances", "idempotency", "meta", "outbox"))
        self._schema = [
            f"CREATE TABLE IF NOT EXISTS {m} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {b} ("
            ' key TEXT COLLATE "C" PRIMARY KEY, balance NUMERIC(1000, 0) NOT NULL)',
            f"CREATE TABLE IF NOT EXISTS {i} ("
            ' key TEXT COLLATE "C" PRIMARY KEY, account TEXT NOT NULL,'
            " delta NUMERIC(1000, 0) NOT NULL, at DOUBLE PRECISION NOT NULL)",
            f'CREATE INDEX IF NOT EXISTS "{prefix}idempotency_at" ON {i} (at)',
            f"CREATE TABLE IF NOT EXISTS {o} ("
            ' seq BIGSERIAL PRIMARY KEY, id TEXT COLLATE "C" NOT NULL UNIQUE,'
            " type TEXT NOT NULL, account TEXT NOT NULL, merge_key TEXT,"
            " amount NUMERIC(1000, 0) NOT NULL, count INTEGER NOT NULL,"
            " balance NUMERIC(1000, 0), data TEXT NOT NULL,"
            " created DOUBLE PRECISION NOT NULL, last DOUBLE PRECISION NOT NULL,"
            " due DOUBLE PRECISION NOT NULL, sealed BOOLEAN NOT NULL DEFAULT false,"
            " state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
            " lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, token TEXT NOT NULL DEFAULT '',"
            " acked TEXT NOT NULL DEFAULT '[]', error TEXT NOT NULL DEFAULT '')",
            f'CREATE INDEX IF NOT EXISTS "{prefix}outbox_open" ON {o} (merge_key) WHERE NOT sealed',
            f'CREATE INDEX IF NOT EXISTS "{prefix}outbox_state" ON {o} (state, account, seq)',
            f"INSERT INTO {m} (name, value) VALUES ('schema_version', '{SCHEMA_VERSION}')"  # noqa: S608 (prefix validated)
            " ON CONFLICT (name) DO NOTHING",
        ]
        self._sql_version = f"SELECT value FROM {m} WHERE name = 'schema_version'"  # noqa: S608 (prefix validated)
        self._sql_update = (
            f"UPDATE {b} SET balance = balance + $2::numeric WHERE key = $1"  # noqa: S608 (prefix validated)
            " AND ($3::numeric IS NULL OR balance + $2::numeric >= $3::numeric)"
            " AND ($4::numeric IS NULL OR balance + $2::numeric <= $4::numeric)"
            " RETURNING balance"
        )
        self._sql_insert = (
            f"INSERT INTO {b} (key, balance) VALUES ($1, $2::numeric)"  # noqa: S608 (prefix validated)
            " ON CONFLICT (key) DO NOTHING RETURNING balance"
        )
        self._sql_select = f"SELECT balance FROM {b} WHERE key = $1"  # noqa: S608 (prefix validated)
        self._sql_idempotency = (
            f"INSERT INTO {i} AS t (key, account, delta, at)"  # noqa: S608 (prefix validated)
            " VALUES ($1, $2, $3::numeric, $4)"
            " ON CONFLICT (key) DO UPDATE SET account = excluded.account,"
            " delta = excluded.delta, at = excluded.at"
            " WHERE t.at < $5"  # an expired key counts as forgotten
            " RETURNING true"
        )
        self._sql_prune = f"DELETE FROM {i} WHERE at < $1"  # noqa: S608 (prefix validated)
        self._sql_forget = (
            f"DELETE FROM {i} WHERE key = $1 AND account = $2"  # noqa: S608 (prefix validated)
            " AND delta = $3::numeric AND at >= $4 RETURNING true"
        )
        self._sql_subtract = f"UPDATE {b} SET balance = balance - $2::numeric WHERE key = $1"  # noqa: S608 (prefix validated)
        self._sql_scan = f"SELECT key, balance FROM {b} WHERE starts_with(key, $1)"  # noqa: S608 (prefix validated)
        columns = (
            "id, seq, type, account, amount, count, balance, data, created, last, attempts,"
            " state, token, acked, error, due"
        )
        self._sql_outbox_merge = (
            f"UPDATE {o} SET amount = amount + $2::numeric, count = count + $3,"  # noqa: S608 (prefix validated)
            " balance = coalesce($4::numeric, balance), last = $5"
            f" WHERE seq = (SELECT seq FROM {o} WHERE merge_key = $1 AND NOT sealed"
            " AND due > $5 ORDER BY seq DESC LIMIT 1) AND NOT sealed RETURNING seq"
        )
        self._sql_outbox_insert = (
            f"INSERT INTO {o} (id, type, account, merge_key, amount, count, balance, data,"  # noqa: S608 (prefix validated)
            " created, last, due) VALUES ($1, $2, $3, $4, $5::numeric, $6, $7::numeric, $8,"
            " $9, $9, $10)"
        )
        # each account's oldest pending rows; the claimable ones are chosen in Python
        # (select_heads), then locked: rows another claimer holds locked are skipped,
        # and once it commits their lease (rechecked on the locked row) excludes them
        self._sql_outbox_candidates = (
            "SELECT seq, account, due, lease_until FROM (SELECT seq, account, due,"  # noqa: S608 (prefix validated)
            " lease_until, row_number() OVER (PARTITION BY account ORDER BY seq) AS rank"
            f" FROM {o} WHERE state = 'pending') t WHERE rank <= $1 ORDER BY seq LIMIT $2"
        )
        self._sql_outbox_lock = (
            f"SELECT seq FROM {o} WHERE seq = ANY($1::bigint[]) AND state = 'pending'"  # noqa: S608 (prefix validated)
            " AND due <= $2 AND lease_until <= $2 FOR UPDATE SKIP LOCKED"
        )
        self._sql_outbox_lease = (
            f"UPDATE {o} SET sealed = true, lease_until = $2, token = $3 || seq::text,"  # noqa: S608 (prefix validated)
            f" attempts = attempts + 1 WHERE seq = ANY($1::bigint[]) RETURNING {columns}"
        )
        self._sql_outbox_ack = (
            f"DELETE FROM {o} WHERE id = $1 AND token = $2 AND token <> ''"  # noqa: S608 (prefix validated)
            " AND state = 'pending' RETURNING true"
        )
        self._sql_outbox_retry = (
            f"UPDATE {o} SET due = $3, error = $4, acked = $5, state = $6,"  # noqa: S608 (prefix validated)
            " lease_until = 0, token = '' WHERE id = $1 AND token = $2 AND token <> ''"
            " AND state = 'pending' RETURNING true"
        )
        self._sql_outbox_list = f"SELECT {columns} FROM {o} WHERE state = $1 ORDER BY seq LIMIT $2"  # noqa: S608 (prefix validated)
        self._sql_outbox_replay_dead = (
            f"UPDATE {o} SET state = 'pending', attempts = 0, acked = '[]', due = $2"  # noqa: S608 (prefix validated)
            " WHERE id = $1 AND state = 'dead' RETURNING true"
        )
        self._sql_outbox_replay = (
            f"UPDATE {o} SET due = least(due, $2) WHERE id = $1 RETURNING true"  # noqa: S608 (prefix validated)
        )
        self._sql_outbox_counts = f"SELECT state, count(*) FROM {o} GROUP BY state"  # noqa: S608 (prefix validated)
        self._sql_outbox_purge = f"DELETE FROM {o} WHERE state = 'dead' AND due < $1"  # noqa: S608 (prefix validated)

    # -- connection and schema -----------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and the schema now (otherwise done on first use)."""
        if self._closed:
            raise StoreClosedError("store is closed")
        if self._ready:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._ready:
                return
            try:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._url, min_size=self._min_size, max_size=self._max_size
                    )
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))",
                        "ilp-receiver schema " + self.prefix,
                    )
                    for statement in self._schema:
                        await conn.execute(statement)
                    version = await conn.fetchval(self._sql_version)
            except _ERRORS as exc:
                raise StoreError(
                    f"cannot open the PostgreSQL store: {type(exc).__name__}: {exc}"
                ) from exc
            if version != str(SCHEMA_VERSION):
                raise StoreError(
                    f"PostgreSQL schema version {version} is not supported "
                    f"(expected {SCHEMA_VERSION})"
                )
            self._ready = True

    # -- public API ----------------------------------------------------------------------

    async def _add(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """The storage step of ``add`` / ``add_with_outbox``: one transaction."""
        if not self._ready or self._closed:
            await self.open()
        try:
            async with self._pool.acquire() as conn:
                if idempotency_key is None and outbox:
                    async with conn.transaction():
                        result = await self._change(conn, key, delta, minimum, maximum)
                        events = applicable_entries(outbox, result.balance, delta)
                        await self._write_events(conn, events, result.balance)
                elif idempotency_key is None:
                    result = await self._change(conn, key, delta, minimum, maximum)
                else:
                    async with conn.transaction():
                        now = self.clock()
                        fresh = await conn.fetchval(
                            self._sql_idempotency,
                            idempotency_key,
                            key,
                            delta,
                            now,
                            now - self.retention,
                        )
                        if fresh is None:
                            current = await conn.fetchval(self._sql_select, key)
                            return AddResult(0 if current is None else int(current), False)
                        result = await self._change(conn, key, delta, minimum, maximum)
                        if outbox:
                            events = applicable_entries(outbox, result.balance, delta)
                            await self._write_events(conn, events, result.balance)
                    if now >= self._next_prune:
                        self._next_prune = now + self._prune_interval
                        await conn.execute(self._sql_prune, now - self.retention)
                return result
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL add failed: {type(exc).__name__}: {exc}") from exc

    async def _change(
        self, conn: Any, key: str, delta: int, minimum: int | None, maximum: int | None
    ) -> AddResult:
        while True:
            new = await conn.fetchval(self._sql_update, key, delta, minimum, maximum)
            if new is not None:
                return AddResult(int(new), True)
            current = await conn.fetchval(self._sql_select, key)
            error = limit_error(
                key, 0 if current is None else int(current), delta, minimum, maximum
            )
            if error is not None:
                raise error
            if current is not None:
                continue  # the row appeared after the UPDATE looked: try again
            new = await conn.fetchval(self._sql_insert, key, delta)
            if new is not None:
                return AddResult(int(new), True)
            # Another transaction created the row meanwhile: update it instead.

    supports_revert = True

    async def _revert(
        self, key: str, delta: int, idempotency_key: str, outbox: Sequence[OutboxEntry]
    ) -> bool:
        """Undo an idempotent change, in one transaction; see ``BalanceStore.revert``."""
        if not self._ready or self._closed:
            await self.open()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                forgotten = await conn.fetchval(
                    self._sql_forget,
                    idempotency_key,
                    key,
                    delta,
                    self.clock() - self.retention,
                )
                if forgotten is None:
                    return False
                await conn.execute(self._sql_subtract, key, delta)
                if outbox:
                    balance = await conn.fetchval(self._sql_select, key)
                    await self._write_events(conn, outbox, int(balance))
                return True
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL revert failed: {type(exc).__name__}: {exc}") from exc

    # -- the webhook outbox ----------------------------------------------------------------

    supports_outbox = True

    async def _write_events(
        self, conn: Any, entries: Sequence[OutboxEntry], balance: int | None
    ) -> None:
        """Inside a transaction: write (or merge) ``entries``."""
        now = self.clock()
        for entry in entries:
            value = balance if balance is not None else entry.balance
            if entry.merge_key is not None:
                merged = await conn.fetchval(
                    self._sql_outbox_merge, entry.merge_key, entry.amount, 1, value, now
                )
                if merged is not None:
                    continue
            await conn.execute(
                self._sql_outbox_insert,
                entry.event_id,
                entry.type,
                entry.account,
                entry.merge_key,
                entry.amount,
                1,
                value,
                entry.data_json(),
                now,
                now + entry.window,
            )

    async def _outbox(self, what: str, run: Any) -> Any:
        if not self._ready or self._closed:
            await self.open()
        try:
            async with self._pool.acquire() as conn:
                return await run(conn)
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL {what} failed: {type(exc).__name__}: {exc}") from exc

    async def outbox_write(self, entries: Sequence[OutboxEntry]) -> None:
        """Write events on their own; see ``BalanceStore.outbox_write``."""

        async def write(conn: Any) -> None:
            async with conn.transaction():
                await self._write_events(conn, entries, None)

        if entries:
            await self._outbox("outbox write", write)

    async def outbox_claim(self, worker: str, limit: int, lease: float) -> list[OutboxEvent]:
        """Claim due events (``FOR UPDATE SKIP LOCKED``); see
        ``BalanceStore.outbox_claim``."""
        check_claim_args(limit, lease)
        now = self.clock()
        token = secrets.token_hex(12) + ":"

        async def claim(conn: Any) -> list[OutboxEvent]:
            async with conn.transaction():
                rows = await conn.fetch(self._sql_outbox_candidates, CLAIM_RUN, CLAIM_SCAN)
                candidates = [(str(seq), account, due, until) for seq, account, due, until in rows]
                chosen = select_heads(candidates, now, limit, CLAIM_RUN)
                if not chosen:
                    return []
                locked = {
                    str(row[0])
                    for row in await conn.fetch(
                        self._sql_outbox_lock, [int(seq) for seq in chosen], now
                    )
                }
                # an account whose row another claimer holds stops there (order)
                accounts = {seq: account for seq, account, _, _ in candidates}
                blocked: set[str] = set()
                taken: list[int] = []
                for seq in chosen:
                    account = accounts[seq]
                    if account in blocked:
                        continue
                    if seq not in locked:
                        blocked.add(account)
                        continue
                    taken.append(int(seq))
                if not taken:
                    return []
                leased = await conn.fetch(self._sql_outbox_lease, taken, now + lease, token)
            return sorted((_event(row) for row in leased), key=lambda event: event.seq)

        result: list[OutboxEvent] = await self._outbox("outbox claim", claim)
        return result

    async def outbox_ack(self, event_id: str, token: str) -> bool:
        """Forget a delivered event; see ``BalanceStore.outbox_ack``."""

        async def ack(conn: Any) -> bool:
            return await conn.fetchval(self._sql_outbox_ack, event_id, token) is not None

        result: bool = await self._outbox("outbox ack", ack)
        return result

    async def outbox_retry(
        self,
        event_id: str,
        token: str,
        *,
        due: float,
        error: str,
        acked: Sequence[str] = (),
        dead: bool = False,
    ) -> bool:
        """Schedule another attempt (or give up); see ``BalanceStore.outbox_retry``."""
        args = (
            event_id,
            token,
            self.clock() if dead else due,
            error[:MAX_ERROR],
            json.dumps(list(acked)),
            "dead" if dead else "pending",
        )

        async def retry(conn: Any) -> bool:
            return await conn.fetchval(self._sql_outbox_retry, *args) is not None

        result: bool = await self._outbox("outbox retry", retry)
        return result

    async def outbox_list(self, state: OutboxState, limit: int = 100) -> list[OutboxEvent]:
        """Events in ``state``; see ``BalanceStore.outbox_list``."""

        async def scan(conn: Any) -> list[OutboxEvent]:
            return [_event(row) for row in await conn.fetch(self._sql_outbox_list, state, limit)]

        result: list[OutboxEvent] = await self._outbox("outbox read", scan)
        return result

    async def outbox_replay(self, event_id: str) -> bool:
        """Send an event again now; see ``BalanceStore.outbox_replay``."""
        now = self.clock()

        async def replay(conn: Any) -> bool:
            if await conn.fetchval(self._sql_outbox_replay_dead, event_id, now) is not None:
                return True
            return await conn.fetchval(self._sql_outbox_replay, event_id, now) is not None

        result: bool = await self._outbox("outbox replay", replay)
        return result

    async def outbox_purge(self, older_than: float) -> int:
        """Delete old dead letters; see ``BalanceStore.outbox_purge``."""
        cutoff = self.clock() - check_purge_age(older_than)

        async def purge(conn: Any) -> int:
            status: str = await conn.execute(self._sql_outbox_purge, cutoff)
            return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"

        result: int = await self._outbox("outbox purge", purge)
        return result

    async def outbox_counts(self) -> dict[str, int]:
        """The outbox's depth; see ``BalanceStore.outbox_counts``."""

        async def count(conn: Any) -> dict[str, int]:
            counts = {"pending": 0, "dead": 0}
            for state, n in await conn.fetch(self._sql_outbox_counts):
                counts[state] = int(n)
            return counts

        result: dict[str, int] = await self._outbox("outbox read", count)
        return result

    async def balance(self, key: str) -> int:
        """The balance of ``key`` (0 if unknown)."""
        if not isinstance(key, str):
            raise TypeError(f"key must be str, not {type(key).__name__}")
        if not self._ready or self._closed:
            await self.open()
        try:
            value = await self._pool.fetchval(self._sql_select, key)
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL read failed: {type(exc).__name__}: {exc}") from exc
        return 0 if value is None else int(value)

    async def balances(self, prefix: str = "") -> dict[str, int]:
        """Every key starting with ``prefix`` and its balance."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        if not self._ready or self._closed:
            await self.open()
        try:
            rows = await self._pool.fetch(self._sql_scan, prefix)
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL read failed: {type(exc).__name__}: {exc}") from exc
        return {row[0]: int(row[1]) for row in rows}

    async def close(self) -> None:
        """Close the pool (unless it was passed in)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_pool and self._pool is not None:
            await self._pool.close()


def _event(row: Any) -> OutboxEvent:
    """An :class:`OutboxEvent` from a row of the outbox columns."""
    return OutboxEvent(
        event_id=row[0],
        seq=int(row[1]),
        type=row[2],
        account=row[3],
        amount=int(row[4]),
        count=int(row[5]),
        balance=None if row[6] is None else int(row[6]),
        data=json.loads(row[7]),
        created=float(row[8]),
        last=float(row[9]),
        attempts=int(row[10]),
        state="dead" if row[11] == "dead" else "pending",
        token=row[12],
        acked=tuple(json.loads(row[13])),
        error=row[14],
        due=float(row[15]),
    )
