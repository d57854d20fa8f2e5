"""The balance store interface shared by every store.

A store maps string keys (an account, a Pay-Token, a visitor id, an order id) to
arbitrary-size integer balances. Design principle 5 ("money is counted before the
Fulfill leaves, exactly once") lives here:

* :meth:`BalanceStore.add` returns only after the change is durable (as durable as the
  store is: see each store's docstring), so the receiver can send the Fulfill afterwards.
* An ``idempotency_key`` (for example the hash of the packet's condition) is remembered
  for ``retention`` seconds (24 h by default): a duplicate delivery of the same packet
  returns ``AddResult(applied=False)`` and never credits twice.
* Limits (``minimum`` / ``maximum``) are checked atomically with the change; when the new
  balance would leave ``[minimum, maximum]`` nothing changes and
  :class:`BalanceLimitError` is raised.

Balances are Python ``int``: amounts are UInt64 and sums may exceed ``2**64``; no store
wraps or overflows. Keys may be bearer secrets (Pay-Tokens), so no error message
includes a key.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

from ..errors import IlpReceiverError
from .outbox import OutboxEntry, OutboxEvent, OutboxState

__all__ = [
    "DEFAULT_RETENTION",
    "AddResult",
    "BalanceLimitError",
    "BalanceStore",
    "Change",
    "Clock",
    "StoreClosedError",
    "StoreError",
]

#: How long idempotency keys are remembered by default, in seconds (24 hours).
DEFAULT_RETENTION: float = 24 * 60 * 60.0

#: A callable returning the current time in seconds since the epoch (``time.time``).
Clock = Callable[[], float]
#: One change of :meth:`BalanceStore.add_each`: ``(key, delta, minimum, maximum,
#: idempotency_key)``, as the arguments of :meth:`BalanceStore.add`.
Change = tuple[str, int, int | None, int | None, str | None]


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of :meth:`BalanceStore.add`.

    ``balance`` is the key's balance after the call. ``applied`` is ``False`` when the
    idempotency key had already been used: nothing changed and ``balance`` is the
    current balance.
    """

    balance: int
    applied: bool


class BalanceLimitError(IlpReceiverError):
    """The new balance would leave ``[minimum, maximum]``; nothing was changed.

    ``balance`` is the (unchanged) current balance, ``delta`` the refused change. The
    message never includes ``key`` (it may be a bearer token).
    """

    def __init__(
        self,
        key: str,
        balance: int,
        delta: int,
        minimum: int | None,
        maximum: int | None,
    ) -> None:
        low = "-inf" if minimum is None else str(minimum)
        high = "+inf" if maximum is None else str(maximum)
        super().__init__(f"balance {balance} {delta:+d} would leave [{low}, {high}]")
        self.key = key
        self.balance = balance
        self.delta = delta
        self.minimum = minimum
        self.maximum = maximum

    def __reduce__(self) -> tuple[type[BalanceLimitError], tuple[object, ...]]:
        return (
            type(self),
            (self.key, self.balance, self.delta, self.minimum, self.maximum),
        )


class StoreError(IlpReceiverError):
    """The store's backend failed (I/O error, lost connection, corrupt data).

    The backend's exception is chained (``raise ... from``). The outcome of the failed
    call is unknown only for networked stores; retry with the same idempotency key.
    """


class StoreClosedError(StoreError):
    """The store was used after :meth:`BalanceStore.close`."""


def check_debit_amount(amount: object) -> None:
    """TypeError unless ``amount`` is an int (not a bool); ValueError unless positive."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"amount must be int, not {type(amount).__name__}")
    if amount <= 0:
        raise ValueError("debit amount must be positive")


def check_add_args(
    key: str,
    delta: int,
    minimum: int | None,
    maximum: int | None,
    idempotency_key: str | None,
) -> None:
    """Validate the arguments of :meth:`BalanceStore.add` (``TypeError``/``ValueError``)."""
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise TypeError(f"delta must be int, not {type(delta).__name__}")
    for name, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
            raise TypeError(f"{name} must be int or None, not {type(bound).__name__}")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"minimum {minimum} is greater than maximum {maximum}")
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str):
            raise TypeError(
                f"idempotency_key must be str or None, not {type(idempotency_key).__name__}"
            )
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")


def add_outcomes(outcomes: Sequence[AddResult | BaseException]) -> list[AddResult | Exception]:
    """The outcomes of several adds as :meth:`BalanceStore.add_each` returns them; a
    ``BaseException`` that is no ``Exception`` among them (a cancellation) is raised."""
    for outcome in outcomes:
        if not isinstance(outcome, AddResult | Exception):
            raise outcome
    return cast("list[AddResult | Exception]", outcomes)


def check_retention(retention: float) -> float:
    """Validate a retention period in seconds (must be positive)."""
    if not isinstance(retention, int | float) or isinstance(retention, bool):
        raise TypeError("retention must be a number of seconds")
    if not retention > 0:
        raise ValueError("retention must be positive")
    return float(retention)


def limit_error(
    key: str, balance: int, delta: int, minimum: int | None, maximum: int | None
) -> BalanceLimitError | None:
    """Return the error to raise if ``balance + delta`` leaves the bounds, else ``None``."""
    new = balance + delta
    if (minimum is not None and new < minimum) or (maximum is not None and new > maximum):
        return BalanceLimitError(key, balance, delta, minimum, maximum)
    return None


class BalanceStore(abc.ABC):
    """Where balances live. Every method is a coroutine; every store is async-safe.

    Subclasses implement :meth:`add`, :meth:`balance`, :meth:`balances` and
    :meth:`close`; :meth:`credit`, :meth:`debit` and :meth:`try_debit` are built on
    :meth:`add`. Use a store as ``async with open_store(...) as store:``.
    """

    #: Seconds idempotency keys are remembered.
    retention: float
    #: The clock used to timestamp (and prune) idempotency keys.
    clock: Clock

    def __init__(self, *, retention: float = DEFAULT_RETENTION, clock: Clock | None = None):
        self.retention = check_retention(retention)
        self.clock = time.time if clock is None else clock

    async def add(
        self,
        key: str,
        delta: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """Atomically add ``delta`` (may be negative) to the balance of ``key``.

        If ``idempotency_key`` was already used (within the retention period), nothing
        changes and the result has ``applied=False``. Otherwise, if the new balance
        would be below ``minimum`` or above ``maximum``, nothing changes and
        :class:`BalanceLimitError` is raised. The call returns after the change is
        committed. Raises :class:`StoreError` when the backend fails.

        The arguments are checked here, once for every backend; the backend's storage
        step is :meth:`_add`.
        """
        check_add_args(key, delta, minimum, maximum, idempotency_key)
        return await self._add(key, delta, minimum, maximum, idempotency_key, ())

    @abc.abstractmethod
    async def _add(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """The storage step of :meth:`add` and :meth:`add_with_outbox`, with checked
        arguments: apply the change as :meth:`add` says and, when it applies, write the
        ``outbox`` events in the same transaction (``()`` for a plain add)."""

    async def add_many(self, changes: Sequence[tuple[str, int]]) -> list[AddResult]:
        """Add several deltas (no limits, no idempotency keys), committed together where
        the store can (one transaction for SQLite); returns after the commit.

        The default runs :meth:`add` for each change concurrently.  Raises
        :class:`StoreError` when the backend fails.
        """
        return list(await asyncio.gather(*(self.add(key, delta) for key, delta in changes)))

    async def add_each(self, changes: Sequence[Change]) -> list[AddResult | Exception]:
        """Several independent :meth:`add` calls, ``(key, delta, minimum, maximum,
        idempotency_key)`` each, committed together where the store can (SQLite: one
        group commit); returns after the commit, with one outcome per change in order:
        its :class:`AddResult`, or the exception :meth:`add` would have raised for it
        (:class:`BalanceLimitError`, :class:`StoreError`, or ``ValueError`` /
        ``TypeError`` for bad arguments, which never reach the backend).

        The backend's step is :meth:`_add_each`; its default runs :meth:`_add` for each
        change concurrently.
        """
        outcomes: list[AddResult | Exception | None] = []
        checked: list[Change] = []
        for change in changes:
            try:
                check_add_args(*change)
            except (TypeError, ValueError) as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
                checked.append(change)
        results = iter(await self._add_each(checked) if checked else ())
        return [next(results) if outcome is None else outcome for outcome in outcomes]

    async def _add_each(self, changes: Sequence[Change]) -> list[AddResult | Exception]:
        """The storage step of :meth:`add_each`, with checked arguments."""
        outcomes = await asyncio.gather(
            *(self._add(*change, ()) for change in changes), return_exceptions=True
        )
        return add_outcomes(outcomes)

    @abc.abstractmethod
    async def balance(self, key: str) -> int:
        """The balance of ``key``; ``0`` for a key never seen."""

    # -- the webhook outbox (docs/webhooks.md; ilp_receiver.stores.outbox) -------------

    #: True when the outbox methods are implemented (every store of this package).
    supports_outbox: bool = False

    async def add_with_outbox(
        self,
        key: str,
        delta: int,
        outbox: Sequence[OutboxEntry],
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """:meth:`add`, and when the change applies, the ``outbox`` events written in
        the same transaction (each with ``balance`` set to the new balance; entries
        with a ``merge_key`` aggregated into a matching open event).  A duplicate or a
        refused change writes no event.  Raises :class:`StoreError` when the backend
        fails: then neither the change nor the events were written (SQLite,
        PostgreSQL) or the outcome is unknown for both together (Redis)."""
        if not self.supports_outbox:
            raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")
        check_add_args(key, delta, minimum, maximum, idempotency_key)
        return await self._add(key, delta, minimum, maximum, idempotency_key, tuple(outbox))

    async def try_debit_with_outbox(
        self, key: str, amount: int, outbox: Sequence[OutboxEntry]
    ) -> int | None:
        """:meth:`try_debit` with its events in the same transaction (written only when
        the debit happens): the new balance, or None when funds are short."""
        check_debit_amount(amount)
        try:
            return (await self.add_with_outbox(key, -amount, outbox, minimum=0)).balance
        except BalanceLimitError:
            return None

    def add_blocking_with_outbox(
        self, key: str, delta: int, outbox: Sequence[OutboxEntry], *, minimum: int | None = None
    ) -> AddResult:
        """:meth:`add_with_outbox` on the calling thread (stores that
        :attr:`supports_blocking` and :attr:`supports_outbox`)."""
        if not (self.supports_blocking and self.supports_outbox):
            raise NotImplementedError(f"{type(self).__name__} has no blocking outbox writes")
        check_add_args(key, delta, minimum, None, None)
        return self._add_blocking(key, delta, minimum, None, None, tuple(outbox))

    def try_debit_blocking_with_outbox(
        self, key: str, amount: int, outbox: Sequence[OutboxEntry]
    ) -> int | None:
        """:meth:`try_debit_with_outbox` on the calling thread."""
        check_debit_amount(amount)
        try:
            return self.add_blocking_with_outbox(key, -amount, outbox, minimum=0).balance
        except BalanceLimitError:
            return None

    async def outbox_write(self, entries: Sequence[OutboxEntry]) -> None:
        """Write events that describe no credit (``payment.completed``), in one
        transaction; merge keys are honoured as in :meth:`add_with_outbox`."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    async def outbox_claim(self, worker: str, limit: int, lease: float) -> list[OutboxEvent]:
        """Claim up to ``limit`` due events for one delivery attempt, atomically with
        respect to every other process sharing the store: each account's oldest
        pending event, when it is due and not leased.  A claimed event is sealed (no
        more credits merge into it), leased for ``lease`` seconds under a fresh token
        (its ``token``) and counts an attempt.  ``worker`` names the claimer in logs."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    async def outbox_ack(self, event_id: str, token: str) -> bool:
        """Every endpoint acknowledged ``event_id``: forget it.  False when the claim
        ``token`` no longer holds (the lease ran out and another claimer took it)."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

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
        """An attempt failed: release the lease, try again at ``due`` (seconds since
        the epoch), remembering ``error`` and the endpoints that did acknowledge
        (``acked``); with ``dead``, move the event to the dead letters instead (it no
        longer holds up its account; its ``due`` then records when it died, by the
        store's clock, for :meth:`outbox_purge`).  False when the claim ``token`` no
        longer holds."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    async def outbox_purge(self, older_than: float) -> int:
        """Delete the dead letters that died more than ``older_than`` seconds ago (by
        the store's clock); returns how many.  Pending events are never purged
        (delivered ones are already gone: an acknowledgement deletes its row)."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    async def outbox_list(self, state: OutboxState, limit: int = 100) -> list[OutboxEvent]:
        """Up to ``limit`` events in ``state`` (``pending`` or ``dead``), oldest first."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    async def outbox_replay(self, event_id: str) -> bool:
        """Send ``event_id`` again now: a dead event becomes pending (attempts and
        acknowledgements reset), a pending one is due at once.  False for an unknown
        id (delivered events are forgotten)."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    async def outbox_counts(self) -> dict[str, int]:
        """``{"pending": n, "dead": m}``: the outbox's depth."""
        raise NotImplementedError(f"{type(self).__name__} has no webhook outbox")

    #: True when :meth:`revert` is implemented (every store of this package).
    supports_revert: bool = False

    async def revert(
        self,
        key: str,
        delta: int,
        idempotency_key: str,
        *,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Undo what ``add(key, delta, idempotency_key=idempotency_key)`` applied, when
        it must not stand (the receiver: the Fulfill of the credited Prepare could not be
        handed back on the connection that carried it, so the connector never pays it).

        Atomically: if ``idempotency_key`` is remembered (within the retention) for this
        very ``key`` and ``delta``, it is forgotten and ``delta`` is subtracted (no
        limits); True.  Otherwise nothing changes and the result is False (an unknown or
        expired key, one already reverted, or a key that applied another change).  A
        later delivery of the same Prepare is then credited afresh.  ``outbox``
        events (``payment.reverted``) are written in the same transaction when the
        change is undone (only by stores that :attr:`supports_outbox`).  Raises
        :class:`StoreError` when the backend fails.
        """
        if not self.supports_revert:
            raise NotImplementedError(f"{type(self).__name__} cannot revert a change")
        check_add_args(key, delta, None, None, idempotency_key)
        return await self._revert(key, delta, idempotency_key, tuple(outbox))

    async def _revert(
        self, key: str, delta: int, idempotency_key: str, outbox: Sequence[OutboxEntry]
    ) -> bool:
        """The storage step of :meth:`revert`, with checked arguments."""
        raise NotImplementedError(f"{type(self).__name__} cannot revert a change")

    # -- blocking twins, for synchronous callers (WSGI request threads) ----------------

    #: True when :meth:`add_blocking` and :meth:`balance_blocking` are implemented: the
    #: same operations, same guarantees, run on the calling thread.  Sync callers
    #: (the WSGI glue) use them instead of a round trip to the event-loop thread; for
    #: other stores they go through the portal.
    supports_blocking: bool = False

    def add_blocking(
        self,
        key: str,
        delta: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """:meth:`add` on the calling thread (only when :attr:`supports_blocking`).

        Thread-safe and atomic with respect to :meth:`add` on the event loop; returns
        after the commit.  It may wait (for a lock held by another thread or process,
        up to the store's timeout), so never call it on an event loop's thread.
        """
        if not self.supports_blocking:
            raise NotImplementedError(f"{type(self).__name__} has no blocking methods")
        check_add_args(key, delta, minimum, maximum, idempotency_key)
        return self._add_blocking(key, delta, minimum, maximum, idempotency_key, ())

    def _add_blocking(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """The storage step of :meth:`add_blocking` and :meth:`add_blocking_with_outbox`,
        with checked arguments (stores that :attr:`supports_blocking`)."""
        raise NotImplementedError(f"{type(self).__name__} has no blocking methods")

    def balance_blocking(self, key: str) -> int:
        """:meth:`balance` on the calling thread (only when :attr:`supports_blocking`)."""
        raise NotImplementedError(f"{type(self).__name__} has no blocking methods")

    def try_debit_blocking(self, key: str, amount: int) -> int | None:
        """:meth:`try_debit` on the calling thread (only when :attr:`supports_blocking`)."""
        check_debit_amount(amount)
        try:
            return self.add_blocking(key, -amount, minimum=0).balance
        except BalanceLimitError:
            return None

    @abc.abstractmethod
    async def balances(self, prefix: str = "") -> dict[str, int]:
        """Every stored key starting with ``prefix`` and its balance.

        Keys the store has seen are included even when their balance is back to 0.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending work and release resources. Safe to call more than once."""

    async def open(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Connect and create the schema now instead of on first use (optional)."""

    async def credit(
        self,
        key: str,
        amount: int,
        *,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """Add ``amount`` (``>= 0``) to ``key``; see :meth:`add`."""
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"amount must be int, not {type(amount).__name__}")
        if amount < 0:
            raise ValueError("credit amount must not be negative")
        return await self.add(key, amount, maximum=maximum, idempotency_key=idempotency_key)

    async def debit(self, key: str, amount: int) -> int:
        """Subtract ``amount`` (``> 0``) from ``key`` and return the new balance.

        Atomic: the balance never goes below zero; if it would, nothing changes and
        :class:`BalanceLimitError` is raised.
        """
        check_debit_amount(amount)
        return (await self.add(key, -amount, minimum=0)).balance

    async def try_debit(self, key: str, amount: int) -> int | None:
        """Like :meth:`debit`, but return ``None`` instead of raising when funds are short."""
        try:
            return await self.debit(key, amount)
        except BalanceLimitError:
            return None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
