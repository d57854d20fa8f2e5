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
"""

from __future__ import annotations

import asyncio
import re
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
    check_add_args,
    limit_error,
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
        b, i, m = (f'"{prefix}{name}"' for name in ("balances", "idempotency", "meta"))
        self._schema = [
            f"CREATE TABLE IF NOT EXISTS {m} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {b} ("
            ' key TEXT COLLATE "C" PRIMARY KEY, balance NUMERIC(1000, 0) NOT NULL)',
            f"CREATE TABLE IF NOT EXISTS {i} ("
            ' key TEXT COLLATE "C" PRIMARY KEY, account TEXT NOT NULL,'
            " delta NUMERIC(1000, 0) NOT NULL, at DOUBLE PRECISION NOT NULL)",
            f'CREATE INDEX IF NOT EXISTS "{prefix}idempotency_at" ON {i} (at)',
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

    async def add(
        self,
        key: str,
        delta: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """Atomically add ``delta`` to ``key``; see :meth:`BalanceStore.add`."""
        check_add_args(key, delta, minimum, maximum, idempotency_key)
        if not self._ready or self._closed:
            await self.open()
        try:
            async with self._pool.acquire() as conn:
                if idempotency_key is None:
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

    async def revert(self, key: str, delta: int, idempotency_key: str) -> bool:
        """Undo an idempotent change, in one transaction; see ``BalanceStore.revert``."""
        check_add_args(key, delta, None, None, idempotency_key)
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
                return True
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL revert failed: {type(exc).__name__}: {exc}") from exc

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
