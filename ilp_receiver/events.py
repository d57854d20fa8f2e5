"""Payment-event listeners: :class:`Callbacks` (the sync-or-async callbacks an event goes
to, used by the receiver and its helpers) and :class:`ReceiverAttachment` (what
:class:`~ilp_receiver.monetization.Monetizer` and :class:`~ilp_receiver.webpayments.OrderBook`
share).

Both helpers work for a receiver that may be attached after they are made (the sync adapters
attach one after a fork), listen once to each receiver's payment events, and turn those
into events of their own for sync-or-async callbacks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from .receiver import AsyncReceiver, PaymentEvent

__all__ = ["Callbacks", "ReceiverAttachment"]


class ReceiverAttachment:
    """The receiver a helper works for; its payment events go to ``listener``.

    ``what`` names the helper in the error raised before a receiver is attached.
    """

    __slots__ = ("_attached", "_listener", "_what", "current")

    def __init__(self, what: str, listener: Callable[[PaymentEvent], Awaitable[None]]) -> None:
        self._what = what
        self._listener = listener
        self._attached: set[int] = set()
        self.current: AsyncReceiver | None = None

    def attach(self, receiver: AsyncReceiver) -> bool:
        """Use ``receiver``; False when it already is the current one.

        ``listener`` is registered once with each receiver ever attached.
        """
        if receiver is self.current:
            return False
        self.current = receiver
        if id(receiver) not in self._attached:
            self._attached.add(id(receiver))
            receiver.on_event(self._listener)
        return True

    @property
    def receiver(self) -> AsyncReceiver:
        """The attached receiver (RuntimeError before :meth:`attach`)."""
        if self.current is None:
            raise RuntimeError(f"{self._what} has no receiver: call attach(receiver)")
        return self.current


class _HasKind(Protocol):
    @property
    def kind(self) -> str: ...


EventT = TypeVar("EventT", bound=_HasKind)


class Callbacks(Generic[EventT]):
    """Sync or async callbacks, called in the order they were added.

    A callback that raises is logged on ``log`` with ``failure`` and the others still
    run.
    """

    __slots__ = ("_callbacks", "_failure", "_log")

    def __init__(self, log: logging.Logger, failure: str) -> None:
        self._log = log
        self._failure = failure
        self._callbacks: list[Callable[[EventT], Awaitable[None] | None]] = []

    def add(
        self, callback: Callable[[EventT], Awaitable[None] | None]
    ) -> Callable[[EventT], Awaitable[None] | None]:
        """Call ``callback`` for every event; returns it (for decorators)."""
        self._callbacks.append(callback)
        return callback

    def add_for(
        self, kinds: Collection[str], callback: Callable[[EventT], Awaitable[None] | None]
    ) -> Callable[[EventT], Awaitable[None] | None]:
        """Call ``callback`` only for events whose ``kind`` is one of ``kinds``."""

        def only(event: EventT) -> Awaitable[None] | None:
            return callback(event) if event.kind in kinds else None

        self._callbacks.append(only)
        return callback

    def __len__(self) -> int:
        """How many callbacks are registered."""
        return len(self._callbacks)

    async def emit(self, event: EventT) -> None:
        """Call every callback with ``event`` (awaiting those that return awaitables)."""
        pending = self.deliver(event)
        if pending is not None:
            await pending

    def deliver(self, event: EventT) -> Awaitable[None] | None:
        """:meth:`emit` without a coroutine while the callbacks are synchronous: calls
        them in order until one returns an awaitable, and returns what awaits it and
        then calls the rest (None when every callback is done)."""
        pending, rest = self._call_until_async(list(self._callbacks), event)
        return None if pending is None else self._finish(pending, event, rest)

    def _call_until_async(
        self, callbacks: list[Callable[[EventT], Awaitable[None] | None]], event: EventT
    ) -> tuple[Awaitable[None] | None, list[Callable[[EventT], Awaitable[None] | None]]]:
        """Call ``callbacks`` in order until one returns an awaitable: it and the
        callbacks after it (None and [] when all are done)."""
        for i, callback in enumerate(callbacks):
            try:
                result = callback(event)
            except Exception:
                self._log.exception(self._failure)
                continue
            if result is not None and inspect.isawaitable(result):
                return result, callbacks[i + 1 :]
        return None, []

    async def _finish(
        self,
        pending: Awaitable[None] | None,
        event: EventT,
        rest: list[Callable[[EventT], Awaitable[None] | None]],
    ) -> None:
        while pending is not None:
            try:
                await pending
            except Exception:
                self._log.exception(self._failure)
            pending, rest = self._call_until_async(rest, event)
