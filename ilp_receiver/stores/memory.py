"""In-memory balance store: a dict, for tests and single-process demos.

Nothing survives the process. Every operation runs synchronously inside the coroutine
(no ``await`` between reading and writing) under a :class:`threading.Lock`, so it is
atomic with respect to other tasks on the event loop and to the blocking twins
(:meth:`~MemoryStore.add_blocking`) called from other threads (WSGI request threads).
"""

from __future__ import annotations

import threading

from .base import (
    DEFAULT_RETENTION,
    AddResult,
    BalanceStore,
    Clock,
    StoreClosedError,
    check_add_args,
    limit_error,
)

__all__ = ["MemoryStore"]


class MemoryStore(BalanceStore):
    """Balances in a dict; idempotency keys pruned after ``retention`` seconds."""

    supports_blocking = True
    supports_revert = True

    def __init__(self, *, retention: float = DEFAULT_RETENTION, clock: Clock | None = None):
        super().__init__(retention=retention, clock=clock)
        self._balances: dict[str, int] = {}
        # Insertion-ordered, so the oldest keys are at the front (clock assumed monotonic):
        # idempotency key -> (when, account key, delta)
        self._seen: dict[str, tuple[float, str, int]] = {}
        self._closed = False
        self._mutex = threading.Lock()

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        seen = self._seen
        while seen:
            first = next(iter(seen))
            if seen[first][0] >= cutoff:
                break
            del seen[first]

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
        return self.add_blocking(
            key, delta, minimum=minimum, maximum=maximum, idempotency_key=idempotency_key
        )

    def add_blocking(
        self,
        key: str,
        delta: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """:meth:`add` on the calling thread (never waits longer than another add)."""
        check_add_args(key, delta, minimum, maximum, idempotency_key)
        with self._mutex:
            return self._add(key, delta, minimum, maximum, idempotency_key)

    def _add(
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

    async def revert(self, key: str, delta: int, idempotency_key: str) -> bool:
        """Undo an idempotent change; see :meth:`BalanceStore.revert`."""
        check_add_args(key, delta, None, None, idempotency_key)
        with self._mutex:
            if self._closed:
                raise StoreClosedError("store is closed")
            seen = self._seen.get(idempotency_key)
            if seen is None or seen[0] < self.clock() - self.retention or seen[1:] != (key, delta):
                return False
            del self._seen[idempotency_key]
            self._balances[key] = self._balances.get(key, 0) - delta
            return True

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
