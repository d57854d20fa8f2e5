"""In-memory balance store: a dict, for tests and single-process demos.

Nothing survives the process. Every operation runs synchronously inside the coroutine
(no ``await`` between reading and writing) under a :class:`threading.Lock`, so it is
atomic with respect to other tasks on the event loop and to the blocking twins
(:meth:`~MemoryStore.add_blocking`) called from other threads (WSGI request threads).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .base import (
    DEFAULT_RETENTION,
    AddResult,
    BalanceStore,
    Change,
    Clock,
    StoreClosedError,
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

__all__ = ["MemoryStore"]


class MemoryStore(BalanceStore):
    """Balances in a dict; idempotency keys pruned after ``retention`` seconds."""

    supports_blocking = True
    supports_revert = True
    supports_outbox = True

    def __init__(self, *, retention: float = DEFAULT_RETENTION, clock: Clock | None = None):
        super().__init__(retention=retention, clock=clock)
        self._balances: dict[str, int] = {}
        # Insertion-ordered, so the oldest keys are at the front (clock assumed monotonic):
        # idempotency key -> (when, account key, delta)
        self._seen: dict[str, tuple[float, str, int]] = {}
        self._closed = False
        self._mutex = threading.Lock()
        # the webhook outbox: event id -> row (insertion order is seq order)
        self._outbox: dict[str, _Row] = {}
        self._open: dict[str, str] = {}  # merge key -> id of the open row
        self._seq = 0

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        seen = self._seen
        while seen:
            first = next(iter(seen))
            if seen[first][0] >= cutoff:
                break
            del seen[first]

    async def _add(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """The storage step of ``add``: :meth:`_add_blocking` (it never waits longer
        than another add)."""
        return self._add_blocking(key, delta, minimum, maximum, idempotency_key, outbox)

    async def _add_each(self, changes: Sequence[Change]) -> list[AddResult | Exception]:
        """The changes one after the other (none waits: no task for each)."""
        outcomes: list[AddResult | Exception] = []
        for change in changes:
            try:
                outcomes.append(self._add_blocking(*change, ()))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _add_blocking(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """One change and, when it applies, its events, under the store's mutex."""
        with self._mutex:
            result = self._apply(key, delta, minimum, maximum, idempotency_key)
            if result.applied and outbox:
                self._write_events(
                    applicable_entries(outbox, result.balance, delta), result.balance
                )
            return result

    def _apply(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
    ) -> AddResult:
        if self._closed:
            raise StoreClosedError("store is closed")
        current = self._balances.get(key, 0)
        if idempotency_key is not None:
            now = self.clock()
            self._prune(now)
            seen = self._seen.get(idempotency_key)
            if seen is not None:
                if seen[0] >= now - self.retention:
                    return AddResult(current, False)
                del self._seen[idempotency_key]  # expired, not yet pruned: forget it
        error = limit_error(key, current, delta, minimum, maximum)
        if error is not None:
            raise error
        new = current + delta
        self._balances[key] = new
        if idempotency_key is not None:
            self._seen[idempotency_key] = (now, key, delta)
        return AddResult(new, True)

    async def _revert(
        self, key: str, delta: int, idempotency_key: str, outbox: Sequence[OutboxEntry]
    ) -> bool:
        """Undo an idempotent change; see :meth:`BalanceStore.revert`."""
        with self._mutex:
            if self._closed:
                raise StoreClosedError("store is closed")
            seen = self._seen.get(idempotency_key)
            if seen is None or seen[0] < self.clock() - self.retention or seen[1:] != (key, delta):
                return False
            del self._seen[idempotency_key]
            new = self._balances[key] = self._balances.get(key, 0) - delta
            self._write_events(outbox, new)
            return True

    # -- the webhook outbox --------------------------------------------------------------

    def _write_events(self, entries: Sequence[OutboxEntry], balance: int | None) -> None:
        now = self.clock()
        for entry in entries:
            row = None
            if entry.merge_key is not None:
                open_id = self._open.get(entry.merge_key)
                row = None if open_id is None else self._outbox.get(open_id)
                if row is not None and (row.sealed or row.event.due <= now):
                    row = None
            if row is not None:
                row.event = replace(
                    row.event,
                    amount=row.event.amount + entry.amount,
                    count=row.event.count + 1,
                    balance=balance if balance is not None else row.event.balance,
                    last=now,
                )
                continue
            self._seq += 1
            event = OutboxEvent(
                event_id=entry.event_id,
                seq=self._seq,
                type=entry.type,
                account=entry.account,
                amount=entry.amount,
                count=1,
                balance=balance if balance is not None else entry.balance,
                data=json.loads(entry.data_json()),
                created=now,
                last=now,
                attempts=0,
                due=now + entry.window,
            )
            self._outbox[entry.event_id] = _Row(event)
            if entry.merge_key is not None:
                self._open[entry.merge_key] = entry.event_id

    async def outbox_write(self, entries: Sequence[OutboxEntry]) -> None:
        """Write events on their own; see ``BalanceStore.outbox_write``."""
        with self._mutex:
            if self._closed:
                raise StoreClosedError("store is closed")
            self._write_events(entries, None)

    async def outbox_claim(self, worker: str, limit: int, lease: float) -> list[OutboxEvent]:
        """Claim due events; see ``BalanceStore.outbox_claim``."""
        check_claim_args(limit, lease)
        with self._mutex:
            if self._closed:
                raise StoreClosedError("store is closed")
            now = self.clock()
            rows = [
                (event_id, row.event.account, row.event.due, row.lease_until)
                for event_id, row in self._outbox.items()
                if row.event.state == "pending"
            ][:CLAIM_SCAN]
            claimed: list[OutboxEvent] = []
            for event_id in select_heads(rows, now, limit, CLAIM_RUN):
                row = self._outbox[event_id]
                row.sealed = True
                row.lease_until = now + lease
                row.event = replace(
                    row.event, attempts=row.event.attempts + 1, token=secrets.token_hex(16)
                )
                claimed.append(row.event)
            return claimed

    def _claimed(self, event_id: str, token: str) -> _Row | None:
        row = self._outbox.get(event_id)
        if row is None or not token or row.event.token != token or row.event.state != "pending":
            return None
        return row

    async def outbox_ack(self, event_id: str, token: str) -> bool:
        """Forget a delivered event; see ``BalanceStore.outbox_ack``."""
        with self._mutex:
            if self._claimed(event_id, token) is None:
                return False
            del self._outbox[event_id]
            return True

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
        with self._mutex:
            row = self._claimed(event_id, token)
            if row is None:
                return False
            state: OutboxState = "dead" if dead else "pending"
            row.lease_until = 0.0
            row.event = replace(
                row.event,
                due=self.clock() if dead else due,
                error=error[:MAX_ERROR],
                acked=tuple(acked),
                state=state,
                token="",
            )
            if dead:  # to the end: a dead letter keeps no place in the order
                self._outbox[event_id] = self._outbox.pop(event_id)
            return True

    async def outbox_list(self, state: OutboxState, limit: int = 100) -> list[OutboxEvent]:
        """Events in ``state``; see ``BalanceStore.outbox_list``."""
        with self._mutex:
            found = [row.event for row in self._outbox.values() if row.event.state == state]
        return sorted(found, key=lambda event: event.seq)[:limit]

    async def outbox_replay(self, event_id: str) -> bool:
        """Send an event again now; see ``BalanceStore.outbox_replay``."""
        with self._mutex:
            row = self._outbox.get(event_id)
            if row is None:
                return False
            now = self.clock()
            if row.event.state == "dead":
                row.event = replace(row.event, state="pending", attempts=0, acked=(), due=now)
            else:
                row.event = replace(row.event, due=min(row.event.due, now))
            # back to its place in the order (insertion order is seq order here)
            self._outbox = dict(sorted(self._outbox.items(), key=lambda item: item[1].event.seq))
            return True

    async def outbox_purge(self, older_than: float) -> int:
        """Delete old dead letters; see ``BalanceStore.outbox_purge``."""
        cutoff = self.clock() - check_purge_age(older_than)
        with self._mutex:
            if self._closed:
                raise StoreClosedError("store is closed")
            gone = [
                event_id
                for event_id, row in self._outbox.items()
                if row.event.state == "dead" and row.event.due < cutoff
            ]
            for event_id in gone:
                del self._outbox[event_id]
            return len(gone)

    async def outbox_counts(self) -> dict[str, int]:
        """The outbox's depth; see ``BalanceStore.outbox_counts``."""
        with self._mutex:
            dead = sum(1 for row in self._outbox.values() if row.event.state == "dead")
            return {"pending": len(self._outbox) - dead, "dead": dead}

    async def balance(self, key: str) -> int:
        """The balance of ``key`` (0 if unknown)."""
        return self.balance_blocking(key)

    def balance_blocking(self, key: str) -> int:
        """:meth:`balance` on the calling thread."""
        if self._closed:
            raise StoreClosedError("store is closed")
        return self._balances.get(key, 0)

    async def balances(self, prefix: str = "") -> dict[str, int]:
        """Every key starting with ``prefix`` and its balance."""
        with self._mutex:  # another thread may be adding keys
            if self._closed:
                raise StoreClosedError("store is closed")
            return {k: v for k, v in self._balances.items() if k.startswith(prefix)}

    async def close(self) -> None:
        """Mark the store closed (the data is dropped with the object)."""
        self._closed = True


@dataclass(slots=True)
class _Row:
    """An outbox row of the memory store."""

    event: OutboxEvent
    sealed: bool = False
    lease_until: float = 0.0
