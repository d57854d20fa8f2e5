"""SQLite balance store: the default, embedded store (stdlib ``sqlite3`` only).

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A committed
credit survives the process being killed (SIGKILL, OOM, crash) because the commit is in
the WAL file in the OS page cache; a power loss or kernel crash may lose the last
transactions before the next checkpoint. Pass ``synchronous="FULL"`` to fsync every
commit (slower, survives power loss).

Throughput: writes are *group-committed*, preferably on the calling thread.
:meth:`SqliteStore.add` collects the changes made during one event-loop iteration and
commits them together in one ``BEGIN IMMEDIATE`` transaction (balances and keys read
with point statements for up to four changes, with ``IN`` lists for more; limits checked
per item in order; rows written with ``executemany``; at most ``max_batch`` changes per
transaction) from a ``call_soon`` callback, then resolves
their futures.  That runs *inline* on the event loop's thread whenever nothing else is
writing: a WAL commit without fsync takes tens of microseconds, far less than handing
each change to a thread (a wake-up, GIL hand-offs and a self-pipe write per commit).
The inline connection never waits for a lock (``busy_timeout=0``) and leaves WAL
checkpoints to the writer thread.  When the write lock is taken (by the writer thread
or another process), or with ``synchronous="FULL"`` (an fsync per commit would block
the event loop), the changes go to one dedicated writer thread instead, which takes
everything queued, applies it in one transaction, commits, and resolves the futures
with one ``call_soon_threadsafe`` per event loop.  :meth:`SqliteStore.add_many` applies
several changes in one transaction (inline when the writer is idle); the connector's
ledger uses it to group-commit the settlements of many packets.  :meth:`try_debit` (the
paywall's debit, one per paid HTTP request) commits at once, inline, when no change is
waiting for the loop iteration's commit and the writer is idle; otherwise it joins the
group commit behind the changes already waiting.  :attr:`commit_counts` tells how many
transactions took each path.

Synchronous callers (WSGI request threads) use :meth:`SqliteStore.add_blocking`: one
transaction on the calling thread, on a connection shared by such callers under the
store's write lock (so in-process writers queue on a Python lock instead of SQLite's
sleeping busy handler), waiting at most ``busy_timeout`` for the lock and again for
another process; then :class:`StoreError`, never a silent failure.  With
``synchronous="FULL"`` there are no blocking methods (:attr:`supports_blocking` is
False): an fsync per request thread would defeat the writer's group commit.

Reads (:meth:`balance`) run inline on the calling thread on a separate read connection:
a point lookup in WAL mode takes microseconds and never waits for the writer.
:meth:`balances` (a range scan) runs in a worker thread.

Several processes may share one file (WAL + ``BEGIN IMMEDIATE`` + ``busy_timeout``).
A store opened before ``fork()`` reopens its connections in the child on first use.

Schema (version 2), created on open (a version 1 file is migrated in place)::

    ilp_meta(name TEXT PRIMARY KEY, value TEXT)   -- ('schema_version', '2'),
                                                  -- ('idempotency_period', '<n>')
    ilp_balances(key TEXT PRIMARY KEY, balance TEXT)                -- decimal string
    ilp_idempotency_0(key TEXT PRIMARY KEY, account TEXT, delta TEXT, at REAL)
    ilp_idempotency_1(...same columns...)
    VIEW ilp_idempotency AS the union of the two tables
    ilp_outbox(seq INTEGER PRIMARY KEY, id, type, account, merge_key, amount, count,
               balance, data, created, last, due, sealed, state, attempts,
               lease_until, token, acked, error)   -- webhook events (stores/outbox.py),
                                                  -- one partial index: open merge keys

Balances and deltas are stored as decimal TEXT because SQLite's INTEGER is signed 64-bit
and sums of UInt64 amounts exceed it; all arithmetic is done in Python ints inside the
write transaction. The idempotency rows keep each applied change's account and delta, so
the balance of an account always equals the sum of its deltas over the retention window
plus what was there before (useful for audits and reconciliation; read them through the
``ilp_idempotency`` view).

Idempotency keys live in two *generation* tables instead of one table with an index on
the time (that index cost a page write per commit).  Time is cut into periods of
``retention`` seconds; period ``n`` writes to ``ilp_idempotency_{n % 2}``.  The first
write transaction of a new period empties the table it is about to reuse (its rows are
from period ``n - 2``, all older than the retention) and records the period in
``ilp_meta``, so every process sharing the file agrees.  Lookups read both tables and
treat a row older than ``retention`` as forgotten, so a key is remembered for exactly
the retention period, and kept on disk for at most twice as long.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

from ..errors import ConfigError
from .base import (
    DEFAULT_RETENTION,
    AddResult,
    BalanceLimitError,
    BalanceStore,
    Change,
    Clock,
    StoreClosedError,
    StoreError,
    add_outcomes,
    check_add_args,
    check_debit_amount,
)
from .outbox import (
    CLAIM_RUN,
    CLAIM_SCAN,
    MAX_ERROR,
    OutboxEntry,
    OutboxEvent,
    OutboxState,
    check_claim_args,
    check_purge_age,
    conditional_amount,
    select_heads,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

#: The schema version this module writes and understands.
SCHEMA_VERSION = 2

_META_TABLE = """
CREATE TABLE IF NOT EXISTS ilp_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ilp_balances (
    key TEXT PRIMARY KEY,
    balance TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ilp_idempotency_0 (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    delta TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ilp_idempotency_1 (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    delta TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS ilp_idempotency AS
    SELECT key, account, delta, at FROM ilp_idempotency_0
    UNION ALL
    SELECT key, account, delta, at FROM ilp_idempotency_1;
CREATE TABLE IF NOT EXISTS ilp_outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    account TEXT NOT NULL,
    merge_key TEXT,
    amount TEXT NOT NULL,
    count INTEGER NOT NULL,
    balance TEXT,
    data TEXT NOT NULL,
    created REAL NOT NULL,
    last REAL NOT NULL,
    due REAL NOT NULL,
    sealed INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    token TEXT NOT NULL DEFAULT '',
    acked TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ilp_outbox_open ON ilp_outbox (merge_key)
    WHERE sealed = 0 AND merge_key IS NOT NULL
"""
# Version 1 kept the keys in one table (renamed ilp_idempotency_v1 while migrating) with an
# index on ``at``; the keys still inside the retention move to the current generation.
_MIGRATE_FROM_1 = """
INSERT OR REPLACE INTO ilp_idempotency_{generation} (key, account, delta, at)
    SELECT key, account, delta, at FROM ilp_idempotency_v1 WHERE at >= ?
"""

# One change: (key, delta, minimum, maximum, idempotency_key, outbox events)
_Item = tuple[str, int, int | None, int | None, str | None, tuple[OutboxEntry, ...]]
_Outcome = AddResult | BaseException
# Entry queued for the writer: (changes, future of their outcomes, the caller's loop)
_Entry = tuple[list[_Item], "asyncio.Future[list[_Outcome]]", asyncio.AbstractEventLoop]
#: wakes the writer thread without work (it then runs a requested WAL checkpoint)
_WAKE: _Entry = ([], None, None)  # type: ignore[assignment]

#: batches up to this size read with point statements (measured: cheaper below ~8)
_POINT_BATCH = 4
_MAX_IN = 512  # largest IN (...) list; lists are padded to powers of two (few statements)
_IN_SQL_BALANCES: dict[int, str] = {}
_IN_SQL_IDEMPOTENCY: dict[int, str] = {}
_UPSERT = (
    "INSERT INTO ilp_balances (key, balance) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET balance = excluded.balance"
)
# indexed by the period's generation (period % 2)
_INSERT_IDEMPOTENCY = (
    "INSERT OR REPLACE INTO ilp_idempotency_0 (key, account, delta, at) VALUES (?, ?, ?, ?)",
    "INSERT OR REPLACE INTO ilp_idempotency_1 (key, account, delta, at) VALUES (?, ?, ?, ?)",
)
_EMPTY_GENERATION = ("DELETE FROM ilp_idempotency_0", "DELETE FROM ilp_idempotency_1")
_SELECT_BALANCE = "SELECT balance FROM ilp_balances WHERE key = ?"
_SELECT_SEEN = (
    "SELECT at FROM ilp_idempotency_0 WHERE key = ?1 "
    "UNION ALL SELECT at FROM ilp_idempotency_1 WHERE key = ?1"
)
_SELECT_PERIOD = "SELECT value FROM ilp_meta WHERE name = 'idempotency_period'"
_SET_PERIOD = (
    "INSERT INTO ilp_meta (name, value) VALUES ('idempotency_period', ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


# The outbox table has one index, on the open rows' merge keys: an insert of an event
# that never merges writes only the table's own B-tree (the group commit's budget).
# Rows are found by seq (the token a claim hands out starts with it); claims scan the
# table in seq order (delivered rows are deleted; dead ones are few); an operator's
# replay by id scans the table.
_OUTBOX_OPEN = (
    "SELECT seq, amount, count FROM ilp_outbox WHERE merge_key = ? AND sealed = 0"
    " AND merge_key IS NOT NULL AND due > ? ORDER BY seq DESC LIMIT 1"
)
_OUTBOX_MERGE = (
    "UPDATE ilp_outbox SET amount = ?, count = ?, balance = coalesce(?, balance), last = ?"
    " WHERE seq = ?"
)
# created and last are the same time on insert: bound once (?9)
_OUTBOX_INSERT = (
    "INSERT INTO ilp_outbox (id, type, account, merge_key, amount, count, balance, data,"
    " created, last, due) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)"
)
_OUTBOX_COLUMNS = (
    "id, seq, type, account, amount, count, balance, data, created, last, attempts, state,"
    " token, acked, error, due"
)


def _write_outbox(
    conn: sqlite3.Connection, events: list[tuple[OutboxEntry, int | None]], now: float
) -> None:
    """Inside a write transaction: write ``events`` (entry, balance after its credit) in
    order, merging entries with a merge key into the open row of that key (one read and
    one write per merge key and transaction, however many credits it sums)."""
    for entry, _ in events:
        if entry.merge_key is not None:
            break
    else:  # nothing to merge (PSK2 requests, order and paywall events): one insert each
        conn.executemany(
            _OUTBOX_INSERT,
            [
                _insert_row(entry, entry.amount, 1, entry.balance if b is None else b, now)
                for entry, b in events
            ],
        )
        return
    # rows in the order of their first entry: [entry, amount, count, balance]
    rows: list[list[Any]] = []
    by_key: dict[str, list[Any]] = {}
    for entry, balance in events:
        if balance is None:
            balance = entry.balance
        key = entry.merge_key
        group = None if key is None else by_key.get(key)
        if group is None:
            group = [entry, entry.amount, 1, balance]
            rows.append(group)
            if key is not None:
                by_key[key] = group
        else:
            group[1] += entry.amount
            group[2] += 1
            if balance is not None:
                group[3] = balance
    inserts: list[tuple[object, ...]] = []
    for entry, amount, count, balance in rows:
        key = entry.merge_key
        row = None if key is None else conn.execute(_OUTBOX_OPEN, (key, now)).fetchone()
        if row is None:  # inserted below, in this order (seq is the order of events)
            inserts.append(_insert_row(entry, amount, count, balance, now))
        else:
            conn.execute(
                _OUTBOX_MERGE,
                (
                    str(int(row[1]) + amount),
                    row[2] + count,
                    None if balance is None else str(balance),
                    now,
                    row[0],
                ),
            )
    if inserts:
        conn.executemany(_OUTBOX_INSERT, inserts)


def _insert_row(
    entry: OutboxEntry, amount: int, count: int, balance: int | None, now: float
) -> tuple[object, ...]:
    return (
        entry.event_id,
        entry.type,
        entry.account,
        entry.merge_key,
        str(amount),
        count,
        None if balance is None else str(balance),
        entry.data if isinstance(entry.data, str) else entry.data_json(),
        now,
        now + entry.window,
    )


def _token_seq(token: str) -> int:
    """The seq a claim token names (``<seq>:<random>``); -1 for anything else (which
    then matches no row)."""
    seq, sep, _ = token.partition(":")
    return int(seq) if sep and seq.isascii() and seq.isdigit() and len(seq) < 19 else -1


def _event(row: Sequence[Any]) -> OutboxEvent:
    """An :class:`OutboxEvent` from a row of ``_OUTBOX_COLUMNS``."""
    return OutboxEvent(
        event_id=row[0],
        seq=row[1],
        type=row[2],
        account=row[3],
        amount=int(row[4]),
        count=row[5],
        balance=None if row[6] is None else int(row[6]),
        data=json.loads(row[7]),
        created=row[8],
        last=row[9],
        attempts=row[10],
        state=row[11],
        token=row[12],
        acked=tuple(json.loads(row[13])),
        error=row[14],
        due=row[15],
    )


#: an inline outbox transaction found SQLite's write lock taken (another process)
_BUSY = object()


# fork() detection without a getpid() system call per operation: a counter bumped in
# every child process (a store compares it with the value it started under)
_fork_epoch = [0]


def _count_fork() -> None:
    _fork_epoch[0] += 1


os.register_at_fork(after_in_child=_count_fork)


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back the transaction ``conn`` has open, if any; a failure here is ignored (the
    error being handled is the one that matters, and SQLite rolls back on close)."""
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _in_sql(cache: dict[int, str], template: str, n: int) -> str:
    sql = cache.get(n)
    if sql is None:
        sql = cache[n] = template.format(",".join("?" * n))
    return sql


def _chunks(values: Sequence[str]) -> Iterable[tuple[int, list[str]]]:
    """Split into chunks of at most ``_MAX_IN``, each padded to a power of two."""
    for start in range(0, len(values), _MAX_IN):
        chunk = list(values[start : start + _MAX_IN])
        size = 1
        while size < len(chunk):
            size *= 2
        chunk.extend(chunk[-1:] * (size - len(chunk)))
        yield size, chunk


def _resolve(pairs: list[tuple[asyncio.Future[list[_Outcome]], list[_Outcome]]]) -> None:
    for future, outcomes in pairs:
        if not future.done():  # else the caller was cancelled; the change stands
            future.set_result(outcomes)


async def _join(thread: threading.Thread) -> None:
    """Wait for ``thread`` to end without blocking the loop.

    Not ``asyncio.to_thread(thread.join)``: at interpreter exit (``atexit`` handlers,
    e.g. a gunicorn worker stopping on SIGTERM) the loop's default executor cannot
    start a thread any more ("can't register atexit after shutdown").  The writer ends
    within one batch once told to, so polling costs little.
    """
    delay = 0.001
    while thread.is_alive():
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


class SqliteStore(BalanceStore):
    """Balances in an SQLite file, written by one group-committing thread.

    ``path`` is a file path (created if missing). ``synchronous`` is ``"NORMAL"``
    (default: durable across process kills) or ``"FULL"`` (also across power loss).
    ``busy_timeout`` is how long to wait for another process holding the write lock.
    ``max_batch`` caps how many queued changes one transaction applies.
    ``checkpoint_interval`` is how many commits on the event-loop and blocking paths
    separate two WAL checkpoints (each run by the writer thread while it holds the
    store's write lock, so it completes and the WAL file is reused from its start).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: float = DEFAULT_RETENTION,
        clock: Clock | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 10.0,
        max_batch: int = 1024,
        checkpoint_interval: int = 1024,
    ) -> None:
        super().__init__(retention=retention, clock=clock)
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError("store", "synchronous must be 'NORMAL' or 'FULL'")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if checkpoint_interval < 1:
            raise ValueError("checkpoint_interval must be at least 1")
        self._checkpoint_interval = checkpoint_interval
        self.path = os.fspath(path)
        if not self.path or self.path == ":memory:" or self.path.startswith("file:"):
            raise ConfigError("store", "the SQLite store needs a file path")
        self._synchronous = synchronous
        #: blocking twins only without per-commit fsync (see the module docstring)
        self.supports_blocking = synchronous == "NORMAL"
        self._busy_timeout = busy_timeout
        self._max_batch = max_batch
        # the idempotency period whose generation table is known to be ready (see the
        # module docstring); set only after the transaction that checked it committed
        self._ready_period: int | None = None
        self._lock = threading.Lock()  # guards _closed, the queue sentinel, the read conn
        self._closed = False
        self._start()

    # -- connections and the writer thread ---------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
                cached_statements=64,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # a WAL that grew while another process kept reading shrinks back to this
            conn.execute("PRAGMA journal_size_limit=67108864")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database: {exc}") from exc
        return conn

    def _start(self) -> None:
        self._epoch = _fork_epoch[0]
        writer = self._connect()
        try:
            self._create_schema(writer)
            self._reader = self._connect()
        except BaseException:
            writer.close()
            raise
        self._scanner: sqlite3.Connection | None = None
        self._scan_lock = threading.Lock()
        # held while a transaction runs, by the writer thread or an inline add_many
        self._write_lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None
        self._blocking: sqlite3.Connection | None = None
        self._inline_commits = 0
        self._blocking_commits = 0
        self._writer_commits = 0
        # changes add() collected in the current loop iteration (committed together)
        self._loop_batch: list[_Entry] = []
        self._loop_batch_loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(writer,), name="ilp-receiver-sqlite-writer", daemon=True
        )
        self._thread.start()

    def _check_fork(self) -> None:
        """In a forked child, start afresh on first use: SQLite connections and threads
        do not survive fork() (the parent's are abandoned, never used or closed here)."""
        if self._epoch != _fork_epoch[0]:
            with self._lock:
                if self._epoch != _fork_epoch[0]:
                    self._lock = threading.Lock()
                    self._start()

    def _check_writable(self) -> None:
        """:meth:`_check_fork`, then :class:`StoreClosedError` once the store is closed."""
        self._check_fork()
        if self._closed:
            raise StoreClosedError("store is closed")

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or migrate a version 1 file, in one transaction."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_META_TABLE)
            row = conn.execute(
                "SELECT value FROM ilp_meta WHERE name = 'schema_version'"
            ).fetchone()
            version = None if row is None else row[0]
            if version not in (None, "1", str(SCHEMA_VERSION)):
                conn.execute("ROLLBACK")
                raise StoreError(
                    f"SQLite schema version {version} is not supported (expected {SCHEMA_VERSION})"
                )
            if version == "1":
                conn.execute("ALTER TABLE ilp_idempotency RENAME TO ilp_idempotency_v1")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version == "1":
                now = self.clock()
                generation = self._period(now) % 2
                conn.execute(_MIGRATE_FROM_1.format(generation=generation), (now - self.retention,))
                conn.execute("DROP TABLE ilp_idempotency_v1")  # and its index
                conn.execute(_SET_PERIOD, (str(self._period(now)),))
            conn.execute(
                "INSERT INTO ilp_meta (name, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            raise StoreError(f"cannot create the SQLite schema: {exc}") from exc

    def _period(self, now: float) -> int:
        """The idempotency period ``now`` falls in (periods are ``retention`` long)."""
        return int(now // self.retention)

    def _prepare_generation(self, conn: sqlite3.Connection, period: int) -> None:
        """Inside a write transaction, the first time this store writes in ``period``:
        empty the generation table the period reuses unless another process (or an
        earlier run) already did.  The caller records ``period`` as ready after COMMIT
        (a rolled-back transaction leaves it to the next one)."""
        row = conn.execute(_SELECT_PERIOD).fetchone()
        recorded = None if row is None else int(row[0])
        if recorded is not None and recorded >= period:
            return  # done already (or this clock lags another process's: keep all)
        if recorded == period - 1:
            conn.execute(_EMPTY_GENERATION[period % 2])  # period - 2's rows
        elif recorded is not None:  # idle for more than a period: both are stale
            for statement in _EMPTY_GENERATION:
                conn.execute(statement)
        conn.execute(_SET_PERIOD, (str(period),))

    _checkpoint_wanted = False

    def _run(self, conn: sqlite3.Connection) -> None:
        q = self._queue
        max_batch = self._max_batch
        stop = False
        while not stop:
            first = q.get()
            entries: list[_Entry] = []
            batch: list[_Item] = []
            if first is None:
                stop = True
            else:
                entries.append(first)
                batch.extend(first[0])
                while len(batch) < max_batch:
                    try:
                        entry = q.get_nowait()
                    except queue.Empty:
                        break
                    if entry is None:
                        stop = True
                        break
                    entries.append(entry)
                    batch.extend(entry[0])
            if batch:
                with self._write_lock:
                    outcomes = self._apply(conn, batch)
                    self._writer_commits += 1
                self._deliver(entries, outcomes)
            if self._checkpoint_wanted:
                self._checkpoint_wanted = False
                # Under the write lock no commit of ours can land while it runs, so it
                # copies every frame back and the next commit starts the WAL file over
                # (a checkpoint racing the inline commits never caught up, and the WAL
                # grew by every commit's pages for as long as writes kept coming).
                # Commits meanwhile wait in the queue for this thread.
                with self._write_lock, contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        # Anything that slipped in after the sentinel is refused, never dropped silently.
        late: list[_Entry] = []
        while True:
            try:
                entry = q.get_nowait()
            except queue.Empty:
                break
            if entry is not None:
                late.append(entry)
        if late:
            n = sum(len(entry[0]) for entry in late)
            self._deliver(late, [StoreClosedError("store is closed")] * n)
        conn.close()

    def _apply(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Outcome]:
        try:
            return self._transaction(conn, batch)
        except Exception as exc:  # the writer thread must survive anything
            _rollback_quietly(conn)
            outcomes: list[_Outcome] = []
            for _ in batch:
                error = StoreError(f"SQLite write failed: {exc}")
                error.__cause__ = exc
                outcomes.append(error)
            return outcomes

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Outcome]:
        """Apply ``batch`` in one write transaction, in order; one outcome per change."""
        now = self.clock()
        cutoff = now - self.retention  # older idempotency keys count as forgotten
        period = self._period(now)
        execute = conn.execute
        execute("BEGIN IMMEDIATE")
        if period != self._ready_period:
            self._prepare_generation(conn, period)
        balance_of: Callable[[str], int]
        seen_before: Callable[[str], bool]
        if len(batch) <= _POINT_BATCH:
            # point statements per change: for a few changes cheaper than the IN lists

            def balance_of(key: str) -> int:
                row = execute(_SELECT_BALANCE, (key,)).fetchone()
                return 0 if row is None else int(row[0])

            def seen_before(idempotency_key: str) -> bool:
                rows = execute(_SELECT_SEEN, (idempotency_key,))
                return any(at >= cutoff for (at,) in rows)

        else:
            stored, seen = self._read_batch(conn, batch, cutoff)

            def balance_of(key: str) -> int:
                return stored.get(key, 0)

            seen_before = seen.__contains__
        balances: dict[str, int] = {}
        dirty: dict[str, int] = {}
        added: set[str] = set()  # keys this transaction adds (a batch may repeat one)
        new_keys: list[tuple[str, str, str, float]] = []
        outcomes: list[_Outcome] = []
        events: list[tuple[OutboxEntry, int | None]] = []
        for key, delta, minimum, maximum, idempotency_key, outbox in batch:
            current = balances.get(key)
            if current is None:
                current = balances[key] = balance_of(key)
            if idempotency_key is not None and (
                idempotency_key in added or seen_before(idempotency_key)
            ):
                outcomes.append(AddResult(current, False))
                continue
            new = current + delta
            if (minimum is not None and new < minimum) or (maximum is not None and new > maximum):
                outcomes.append(BalanceLimitError(key, current, delta, minimum, maximum))
                continue
            balances[key] = dirty[key] = new
            if idempotency_key is not None:
                added.add(idempotency_key)
                new_keys.append((idempotency_key, key, str(delta), now))
            outcomes.append(AddResult(new, True))
            for event in outbox:
                if event.when is None:
                    events.append((event, new))
                else:
                    amount = conditional_amount(event, new, delta)
                    if amount is not None:
                        events.append((dataclasses.replace(event, amount=amount), new))
        if new_keys:
            conn.executemany(_INSERT_IDEMPOTENCY[period % 2], new_keys)
        if dirty:
            conn.executemany(_UPSERT, [(key, str(value)) for key, value in dirty.items()])
        if events:
            _write_outbox(conn, events, now)
        execute("COMMIT")  # also after refusals or duplicates only: nothing was written
        self._ready_period = period
        return outcomes

    @staticmethod
    def _read_batch(
        conn: sqlite3.Connection, batch: list[_Item], cutoff: float
    ) -> tuple[dict[str, int], set[str]]:
        """The stored balances of a large batch's accounts and which of its idempotency
        keys were used after ``cutoff``, each read with ``IN`` lists."""
        balances: dict[str, int] = {}
        keys = list({item[0]: None for item in batch})
        for size, chunk in _chunks(keys):
            sql = _in_sql(
                _IN_SQL_BALANCES,
                "SELECT key, balance FROM ilp_balances WHERE key IN ({})",
                size,
            )
            for key, text in conn.execute(sql, chunk):
                balances[key] = int(text)
        seen: set[str] = set()
        idempotency_keys = [item[4] for item in batch if item[4] is not None]
        for size, chunk in _chunks(idempotency_keys):
            sql = _in_sql(
                _IN_SQL_IDEMPOTENCY,
                "SELECT key, at FROM ilp_idempotency_0 WHERE key IN ({0}) UNION ALL "
                "SELECT key, at FROM ilp_idempotency_1 WHERE key IN ({0})",
                size,
            )
            seen.update(key for key, at in conn.execute(sql, chunk * 2) if at >= cutoff)
        return balances, seen

    @staticmethod
    def _deliver(entries: Sequence[_Entry], outcomes: Sequence[_Outcome]) -> None:
        by_loop: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[list[_Outcome]], list[_Outcome]]],
        ] = {}
        start = 0
        for items, future, loop in entries:
            if future is None:  # _WAKE
                continue
            end = start + len(items)
            by_loop.setdefault(loop, []).append((future, list(outcomes[start:end])))
            start = end
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_resolve, pairs)

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
        """One change (and its events) into the next group commit; returns after COMMIT."""
        outcome = (
            await self._submit([(key, delta, minimum, maximum, idempotency_key, tuple(outbox))])
        )[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _add_each(self, changes: Sequence[Change]) -> list[AddResult | Exception]:
        """All ``changes`` into the next group commit, with one future; returns after
        COMMIT with one outcome per change."""
        return add_outcomes(await self._submit([(*change, ()) for change in changes]))

    async def _submit(self, items: list[_Item]) -> list[_Outcome]:
        """Put ``items`` into the loop iteration's group commit (or the writer thread's
        queue) and wait for their outcomes."""
        self._check_writable()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[_Outcome]] = loop.create_future()
        entry: _Entry = (items, future, loop)
        pending = self._loop_batch
        if self._synchronous != "NORMAL":
            self._queue.put(entry)
        elif not pending:
            # the first change of this loop iteration: commit the iteration's changes
            # together once the callbacks already scheduled have run
            self._loop_batch_loop = loop
            pending.append(entry)
            loop.call_soon(self._flush_loop_batch)
        elif self._loop_batch_loop is loop:
            pending.append(entry)
        else:  # another event loop's batch is open: use the writer thread
            self._queue.put(entry)
        return await future

    def _flush_loop_batch(self) -> None:
        """Commit the changes :meth:`add` collected in this loop iteration: inline
        (chunks of ``max_batch``) when the writer is idle, else via the writer thread."""
        entries, self._loop_batch = self._loop_batch, []
        self._loop_batch_loop = None
        max_batch = self._max_batch
        i, n = 0, len(entries)
        while i < n:
            first = i
            rows: list[_Item] = []
            while i < n and len(rows) < max_batch:
                rows.extend(entries[i][0])
                i += 1
            chunk = entries[first:i]
            try:
                outcomes = self._inline_transaction(rows)
            except StoreError as exc:
                outcomes = [exc] * len(rows)
            if outcomes is None:  # the writer thread or another process is writing
                for entry in entries[first:]:
                    self._queue.put(entry)
                return
            start = 0
            for items, future, _loop in chunk:
                end = start + len(items)
                if not future.done():  # else the caller was cancelled; the change stands
                    future.set_result(outcomes[start:end])
                start = end

    async def try_debit(self, key: str, amount: int) -> int | None:
        """See ``BalanceStore.try_debit``.  Committed at once on this thread when nothing
        is queued and the write lock is free: a debit gates one HTTP response (the
        paywall), so waiting for the loop iteration's group commit would only add
        latency; otherwise it joins the group commit like any :meth:`add`."""
        check_debit_amount(amount)
        check_add_args(key, -amount, 0, None, None)
        self._check_writable()
        if self._synchronous == "NORMAL" and not self._loop_batch and self._queue.empty():
            outcomes = self._inline_transaction([(key, -amount, 0, None, None, ())])
            if outcomes is not None:
                outcome = outcomes[0]
                if isinstance(outcome, BalanceLimitError):
                    return None
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome.balance
        return await super().try_debit(key, amount)

    async def add_many(self, changes: Sequence[tuple[str, int]]) -> list[AddResult]:
        """Add several deltas in one transaction; returns after COMMIT.  Inline when
        the writer is idle (see the module docstring), else one queue entry with one
        future.  See ``BalanceStore.add_many``."""
        items: list[_Item] = []
        for key, delta in changes:
            check_add_args(key, delta, None, None, None)
            items.append((key, delta, None, None, None, ()))
        if not items:
            return []
        self._check_writable()
        if self._synchronous == "NORMAL" and self._queue.empty():
            inline = self._try_inline(items)
            if inline is not None:
                return inline
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[_Outcome]] = loop.create_future()
        self._queue.put((items, future, loop))
        results: list[AddResult] = []
        for outcome in await future:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        return results

    def _try_inline(self, items: list[_Item]) -> list[AddResult] | None:
        """Run ``items`` in one transaction on this thread; None when the writer thread
        (or another process) holds the write lock: then the caller queues them."""
        outcomes = self._inline_transaction(items)
        if outcomes is None:
            return None
        results: list[AddResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        return results

    def _inline_connection(self) -> sqlite3.Connection:
        """The event loop thread's own connection (opened on first use, with the write
        lock held): it never waits for a lock, and leaves checkpoints to the writer."""
        conn = self._inline
        if conn is None:
            conn = self._inline = self._connect()
            conn.execute("PRAGMA busy_timeout=0")  # never block the event loop
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread does them
        return conn

    def _inline_transaction(self, items: list[_Item]) -> list[_Outcome] | None:
        """One transaction on the calling thread's inline connection; None when the
        write lock is taken (writer thread or another process); StoreError when SQLite
        fails otherwise."""
        if not self._write_lock.acquire(blocking=False):
            return None
        try:
            if self._closed:
                raise StoreClosedError("store is closed")
            conn = self._inline_connection()
            try:
                outcomes = self._transaction(conn, items)
            except sqlite3.OperationalError as exc:
                _rollback_quietly(conn)
                if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    return None  # another process writes: wait in the queue
                raise StoreError(f"SQLite write failed: {exc}") from exc
            except Exception as exc:
                _rollback_quietly(conn)
                raise StoreError(f"SQLite write failed: {exc}") from exc
            self._inline_commits += 1
            self._after_direct_commit()
        finally:
            self._write_lock.release()
        return outcomes

    def _after_direct_commit(self) -> None:
        """After an inline or blocking commit (write lock held): every
        ``checkpoint_interval``-th asks the writer thread for a WAL checkpoint (those
        connections never checkpoint).

        Not too often: a checkpoint copies every page changed since the last one back
        into the database, and the hot pages (balances, the newest leaves) change on
        every commit, so fewer checkpoints copy them fewer times.  Not too rarely: the
        WAL holds every page written since, and its file and index grow with it (1024
        commits: a few megabytes)."""
        if (self._inline_commits + self._blocking_commits) % self._checkpoint_interval == 0:
            self._checkpoint_wanted = True
            self._queue.put(_WAKE)

    @property
    def commit_counts(self) -> dict[str, int]:
        """How many write transactions committed on each path (diagnostics).

        ``inline``: on an event loop's thread (:meth:`add` / :meth:`add_many` while
        nothing else was writing); ``writer``: on the writer thread (the write lock was
        taken, another process held SQLite's lock, or ``synchronous="FULL"``);
        ``blocking``: :meth:`add_blocking` on a caller's thread.
        """
        return {
            "inline": self._inline_commits,
            "writer": self._writer_commits,
            "blocking": self._blocking_commits,
        }

    # -- blocking twins (sync callers) ---------------------------------------------------

    def _add_blocking(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """:meth:`add` (with its events) as one transaction on the calling thread;
        returns after COMMIT.

        Waits up to ``busy_timeout`` for the store's write lock (held by another
        thread's transaction) and up to ``busy_timeout`` for another process's SQLite
        write lock, then raises :class:`StoreError`.  Never call it on an event loop's
        thread.  Only with ``synchronous="NORMAL"`` (:attr:`supports_blocking`).
        """
        self._check_writable()
        item = (key, delta, minimum, maximum, idempotency_key, tuple(outbox))
        outcome = self._blocking_transaction([item])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    @contextlib.contextmanager
    def _blocking_write(self, what: str) -> Iterator[sqlite3.Connection]:
        """The write lock and this thread's connection for one direct commit (the
        blocking twins and :meth:`revert`): a failure in the body is rolled back and
        raised as ``StoreError("SQLite <what> failed: ...")``; a commit is counted for
        the checkpoint schedule."""
        if not self._write_lock.acquire(timeout=self._busy_timeout):
            raise StoreError(f"SQLite {what} failed: timed out waiting for the write lock")
        try:
            if self._closed:
                raise StoreClosedError("store is closed")
            conn = self._blocking
            if conn is None:
                conn = self._blocking = self._connect()  # busy_timeout: waits for others
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread does them
            try:
                yield conn
            except Exception as exc:
                _rollback_quietly(conn)
                raise StoreError(f"SQLite {what} failed: {exc}") from exc
            self._blocking_commits += 1
            self._after_direct_commit()
        finally:
            self._write_lock.release()

    def _blocking_transaction(self, items: list[_Item]) -> list[_Outcome]:
        with self._blocking_write("write") as conn:
            return self._transaction(conn, items)

    supports_revert = True

    async def _revert(
        self, key: str, delta: int, idempotency_key: str, outbox: Sequence[OutboxEntry]
    ) -> bool:
        """Undo an idempotent change; see ``BalanceStore.revert``.  One transaction in
        a worker thread (a rare operation: it takes the blocking twins' path)."""
        self._check_writable()
        return await asyncio.to_thread(
            self._revert_blocking, key, delta, idempotency_key, tuple(outbox)
        )

    def _revert_blocking(
        self, key: str, delta: int, idempotency_key: str, outbox: tuple[OutboxEntry, ...] = ()
    ) -> bool:
        with self._blocking_write("revert") as conn:
            cutoff = self.clock() - self.retention
            conn.execute("BEGIN IMMEDIATE")
            forgotten = 0
            for table in ("ilp_idempotency_0", "ilp_idempotency_1"):
                forgotten += conn.execute(
                    f"DELETE FROM {table} WHERE key = ? AND account = ? AND delta = ?"  # noqa: S608 (fixed names)
                    " AND at >= ?",
                    (idempotency_key, key, str(delta), cutoff),
                ).rowcount
            if forgotten:
                row = conn.execute(_SELECT_BALANCE, (key,)).fetchone()
                current = 0 if row is None else int(row[0])
                conn.execute(_UPSERT, (key, str(current - delta)))
                if outbox:
                    _write_outbox(
                        conn, [(entry, current - delta) for entry in outbox], self.clock()
                    )
            conn.execute("COMMIT")
        return forgotten > 0

    # -- the webhook outbox ----------------------------------------------------------------

    supports_outbox = True

    async def _outbox_call(self, what: str, function: Callable[[sqlite3.Connection], Any]) -> Any:
        """``function(conn)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (every process
        sharing the file is excluded): inline on this thread when nothing else is
        writing (a claim or an ack is a few point statements: cheaper than a thread
        hop), else on the blocking path in a worker thread."""
        self._check_writable()
        if self._synchronous == "NORMAL" and self._write_lock.acquire(blocking=False):
            try:
                result = self._outbox_inline(what, function)
            finally:
                self._write_lock.release()
            if result is not _BUSY:
                return result

        def run() -> Any:
            with self._blocking_write(what) as conn:
                conn.execute("BEGIN IMMEDIATE")
                result = function(conn)
                conn.execute("COMMIT")
                return result

        return await asyncio.to_thread(run)

    def _outbox_inline(self, what: str, function: Callable[[sqlite3.Connection], Any]) -> Any:
        """One outbox transaction on the inline connection (write lock held); ``_BUSY``
        when another process holds SQLite's lock (then the caller queues it)."""
        if self._closed:
            raise StoreClosedError("store is closed")
        conn = self._inline_connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = function(conn)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback_quietly(conn)
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return _BUSY
            raise StoreError(f"SQLite {what} failed: {exc}") from exc
        except Exception as exc:
            _rollback_quietly(conn)
            raise StoreError(f"SQLite {what} failed: {exc}") from exc
        self._inline_commits += 1
        self._after_direct_commit()
        return result

    async def outbox_write(self, entries: Sequence[OutboxEntry]) -> None:
        """Write events on their own; see ``BalanceStore.outbox_write``."""
        if not entries:
            return
        now = self.clock()
        events = [(entry, entry.balance) for entry in entries]
        await self._outbox_call("outbox write", lambda conn: _write_outbox(conn, events, now))

    async def outbox_claim(self, worker: str, limit: int, lease: float) -> list[OutboxEvent]:
        """Claim due events under ``BEGIN IMMEDIATE``; see ``BalanceStore.outbox_claim``."""
        check_claim_args(limit, lease)
        now = self.clock()

        def claim(conn: sqlite3.Connection) -> list[OutboxEvent]:
            rows = conn.execute(
                "SELECT seq, account, due, lease_until FROM ilp_outbox WHERE state = 'pending'"
                " ORDER BY seq LIMIT ?",
                (CLAIM_SCAN,),
            ).fetchall()
            candidates = [(str(seq), account, due, until) for seq, account, due, until in rows]
            base = secrets.token_hex(12)
            claimed: list[OutboxEvent] = []
            for seq in select_heads(candidates, now, limit, CLAIM_RUN):
                conn.execute(
                    "UPDATE ilp_outbox SET sealed = 1, lease_until = ?, token = ?,"
                    " attempts = attempts + 1 WHERE seq = ?",
                    (now + lease, f"{seq}:{base}", int(seq)),
                )
                row = conn.execute(
                    f"SELECT {_OUTBOX_COLUMNS} FROM ilp_outbox WHERE seq = ?",  # noqa: S608 (fixed names)
                    (int(seq),),
                ).fetchone()
                claimed.append(_event(row))
            return claimed

        result: list[OutboxEvent] = await self._outbox_call("outbox claim", claim)
        return result

    async def outbox_ack(self, event_id: str, token: str) -> bool:
        """Forget a delivered event; see ``BalanceStore.outbox_ack``."""

        seq = _token_seq(token)

        def ack(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "DELETE FROM ilp_outbox WHERE seq = ? AND id = ? AND token = ?"
                    " AND state = 'pending'",
                    (seq, event_id, token),
                ).rowcount
                > 0
            )

        result: bool = await self._outbox_call("outbox ack", ack)
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
        values = (
            self.clock() if dead else due,
            error[:MAX_ERROR],
            json.dumps(list(acked)),
            "dead" if dead else "pending",
            _token_seq(token),
            event_id,
            token,
        )

        def retry(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE ilp_outbox SET due = ?, error = ?, acked = ?, state = ?,"
                    " lease_until = 0, token = '' WHERE seq = ? AND id = ? AND token = ?"
                    " AND state = 'pending'",
                    values,
                ).rowcount
                > 0
            )

        result: bool = await self._outbox_call("outbox retry", retry)
        return result

    async def outbox_list(self, state: OutboxState, limit: int = 100) -> list[OutboxEvent]:
        """Events in ``state``; see ``BalanceStore.outbox_list``."""
        self._check_fork()

        def scan() -> list[OutboxEvent]:
            with self._scan_lock:
                if self._closed:
                    raise StoreClosedError("store is closed")
                if self._scanner is None:
                    self._scanner = self._connect()
                try:
                    rows = self._scanner.execute(
                        f"SELECT {_OUTBOX_COLUMNS} FROM ilp_outbox WHERE state = ?"  # noqa: S608 (fixed names)
                        " ORDER BY seq LIMIT ?",
                        (state, limit),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise StoreError(f"SQLite read failed: {exc}") from exc
                return [_event(row) for row in rows]

        return await asyncio.to_thread(scan)

    async def outbox_replay(self, event_id: str) -> bool:
        """Send an event again now; see ``BalanceStore.outbox_replay``."""
        now = self.clock()

        def replay(conn: sqlite3.Connection) -> bool:
            dead = conn.execute(
                "UPDATE ilp_outbox SET state = 'pending', attempts = 0, acked = '[]', due = ?"
                " WHERE id = ? AND state = 'dead'",
                (now, event_id),
            ).rowcount
            if dead:
                return True
            return (
                conn.execute(
                    "UPDATE ilp_outbox SET due = min(due, ?) WHERE id = ?", (now, event_id)
                ).rowcount
                > 0
            )

        result: bool = await self._outbox_call("outbox replay", replay)
        return result

    async def outbox_purge(self, older_than: float) -> int:
        """Delete old dead letters; see ``BalanceStore.outbox_purge``."""
        cutoff = self.clock() - check_purge_age(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM ilp_outbox WHERE state = 'dead' AND due < ?", (cutoff,)
            ).rowcount

        result: int = await self._outbox_call("outbox purge", purge)
        return result

    async def outbox_counts(self) -> dict[str, int]:
        """The outbox's depth; see ``BalanceStore.outbox_counts``."""
        self._check_fork()
        with self._lock:
            if self._closed:
                raise StoreClosedError("store is closed")
            try:
                rows = self._reader.execute(
                    "SELECT state, count(*) FROM ilp_outbox GROUP BY state"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc
        counts = {"pending": 0, "dead": 0}
        counts.update({state: n for state, n in rows})
        return counts

    async def balance(self, key: str) -> int:
        """The committed balance of ``key`` (0 if unknown); a point read on this thread."""
        return self.balance_blocking(key)

    def balance_blocking(self, key: str) -> int:
        """:meth:`balance` (a point read that never waits for writers) on this thread."""
        if not isinstance(key, str):
            raise TypeError(f"key must be str, not {type(key).__name__}")
        self._check_fork()
        with self._lock:
            if self._closed:
                raise StoreClosedError("store is closed")
            try:
                row = self._reader.execute(
                    "SELECT balance FROM ilp_balances WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc
        return 0 if row is None else int(row[0])

    def _scan(self, prefix: str) -> dict[str, int]:
        with self._scan_lock:
            if self._closed:
                raise StoreClosedError("store is closed")
            if self._scanner is None:
                self._scanner = self._connect()
            result: dict[str, int] = {}
            try:
                # Keys with the prefix are one contiguous range in BINARY (byte) order.
                rows = self._scanner.execute(
                    "SELECT key, balance FROM ilp_balances WHERE key >= ? ORDER BY key",
                    (prefix,),
                )
                for key, text in rows:
                    if not key.startswith(prefix):
                        break
                    result[key] = int(text)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc
            return result

    async def balances(self, prefix: str = "") -> dict[str, int]:
        """Every key starting with ``prefix`` and its balance (scanned in a worker thread)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        self._check_fork()
        return await asyncio.to_thread(self._scan, prefix)

    def _shutdown(self) -> None:
        """Stop accepting work and tell the writer to finish (thread-safe, idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._loop_batch = self._loop_batch, []
            for entry in pending:  # accepted before close: the writer commits them
                self._queue.put(entry)
            self._queue.put(None)
            self._reader.close()
        with self._write_lock:
            if self._inline is not None:
                self._inline.close()
                self._inline = None
            if self._blocking is not None:
                self._blocking.close()
                self._blocking = None
        with self._scan_lock:
            if self._scanner is not None:
                self._scanner.close()
                self._scanner = None

    async def close(self) -> None:
        """Apply and commit everything queued, then close (thread-safe, idempotent)."""
        if self._epoch != _fork_epoch[0]:
            return  # the parent's store; the child never started its own
        self._shutdown()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            await _join(self._thread)
