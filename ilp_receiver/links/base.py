"""The one interface every transport to a peer implements.

A :class:`Link` carries ILP packets both ways over one bilateral connection:

* :meth:`Link.send` sends an ILP Prepare to the peer and returns its Fulfill or Reject;
* every incoming Prepare goes through :meth:`Link.handle_incoming`, which runs the
  handler given with :meth:`Link.set_handler`; its Fulfill or Reject goes back to the
  peer.

Handlers return rejects as values; an exception escaping a handler is turned into a
``T00`` Reject at exactly one place, :meth:`Link.handle_incoming` (the link edge).

While a handler runs, :func:`reply_channel` is the connection or HTTP exchange its
Prepare arrived on (:class:`ReplyChannel`), when the transport can tell: whether the
answer can still go back, and callbacks to run when it could not be handed back (the
receiver undoes a credit whose Fulfill never left, ``docs/scaling.md``).
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from ..codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ..errors import IlpError

__all__ = [
    "ConnectCallback",
    "IlpBatchHandler",
    "IlpHandler",
    "Link",
    "ReplyChannel",
    "handle_on",
    "reject_from_error",
    "reply_channel",
]

log = logging.getLogger(__name__)

#: Handles one incoming ILP Prepare and returns the Fulfill or Reject to send back.
IlpHandler = Callable[[IlpPrepare], Awaitable[IlpReply]]
#: Handles ILP Prepares that arrived together and returns their answers, in order;
#: ``channels[i]`` is the :class:`ReplyChannel` of ``prepares[i]`` (or None).
IlpBatchHandler = Callable[
    [Sequence[IlpPrepare], Sequence["ReplyChannel | None"]], Awaitable[list[IlpReply]]
]
#: Called (and awaited) every time a link (re)connects and is authenticated.
ConnectCallback = Callable[[], Awaitable[None]]


class ReplyChannel:
    """The connection (or HTTP exchange) an incoming Prepare arrived on, as its handler
    sees it through :func:`reply_channel`.

    ``is_open`` tells whether an answer could still be handed back on it now.  The
    transport calls :meth:`undelivered` when the handler's answer could not be handed
    back (the connection had closed, the write failed), and then runs every callback
    registered with :meth:`on_undelivered`, once.  "Handed back" means written to the
    connection: a Fulfill lost after that is the window the protocol leaves open
    (``docs/receiver.md``).
    """

    __slots__ = ("_callbacks", "_is_open")

    def __init__(self, is_open: Callable[[], bool]) -> None:
        self._is_open = is_open
        self._callbacks: list[Callable[[], object]] | None = None

    @property
    def is_open(self) -> bool:
        """Whether an answer could still be handed back on this connection now."""
        return self._is_open()

    def on_undelivered(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` if the answer to this Prepare cannot be handed back."""
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def undelivered(self) -> None:
        """The transport could not hand the answer back: run the callbacks (once)."""
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("undelivered-answer callback failed")


_reply_channel: contextvars.ContextVar[ReplyChannel | None] = contextvars.ContextVar(
    "ilp_reply_channel", default=None
)


def reply_channel() -> ReplyChannel | None:
    """The :class:`ReplyChannel` of the Prepare being handled (None when the transport
    gives none: in-memory links, repeated HTTP-OER-SYNC requests)."""
    return _reply_channel.get()


def set_reply_channel(channel: ReplyChannel | None) -> None:
    """Make ``channel`` the :func:`reply_channel` of the current task (transports call
    this in the task that runs the handler)."""
    _reply_channel.set(channel)


async def handle_on(
    handler: IlpHandler, prepare: IlpPrepare, channel: ReplyChannel | None
) -> IlpReply:
    """``handler(prepare)`` with ``channel`` as its :func:`reply_channel`: for a task of
    its own (``asyncio.gather``, ``create_task``), whose context the channel stays in."""
    set_reply_channel(channel)
    return await handler(prepare)


def reject_from_error(exc: BaseException, triggered_by: str) -> IlpReject:
    """The Reject for an exception that escaped a handler.

    :class:`~ilp_receiver.errors.IlpError` keeps its code and message; anything else is
    an internal error (``T00``) whose details stay in our logs, not on the wire.
    """
    if isinstance(exc, IlpError):
        return IlpReject(
            code=exc.code,
            triggered_by=exc.triggered_by or triggered_by,
            message=exc.message,
            data=exc.data,
        )
    return IlpReject(code="T00", triggered_by=triggered_by, message="internal error")


async def _no_handler(prepare: IlpPrepare) -> IlpReply:
    return IlpReject(code="F02", message="no handler registered")


class Link(abc.ABC):
    """A bilateral connection to one peer that carries ILP packets both ways."""

    #: True when :meth:`send` itself gives up with LinkTimeoutError once ``timeout``
    #: has passed, so callers need no timer of their own (the BTP links).
    enforces_timeout: bool = False

    def __init__(self) -> None:
        self._handler: IlpHandler = _no_handler
        self._batch_handler: IlpBatchHandler | None = None
        self._connect_callbacks: list[ConnectCallback] = []
        #: The ILP address used as ``triggeredBy`` in Rejects this link produces itself.
        self.local_address = ""

    def set_handler(self, handler: IlpHandler, *, batch: IlpBatchHandler | None = None) -> None:
        """Route incoming Prepares to ``handler``; a transport that reads several
        Prepares at once may hand them to ``batch`` together instead
        (:meth:`handle_incoming_batch`)."""
        self._handler = handler
        self._batch_handler = batch

    @property
    def handles_batches(self) -> bool:
        """Whether the handler takes Prepares that arrived together at once."""
        return self._batch_handler is not None

    def on_connect(self, callback: ConnectCallback) -> None:
        """Await ``callback`` after every (re)connection, before the link counts as up."""
        self._connect_callbacks.append(callback)

    async def _run_connect_callbacks(self) -> None:
        for callback in self._connect_callbacks:
            await callback()

    async def handle_incoming(self, prepare: IlpPrepare) -> IlpReply:
        """Answer an incoming Prepare with the handler; never raises.  The one edge
        where an error escaping a handler becomes a Reject (:func:`reject_from_error`:
        ``T00`` unless it is an :class:`~ilp_receiver.errors.IlpError`); every transport
        hands its incoming Prepares here."""
        try:
            return await self._handler(prepare)
        except Exception as exc:
            if not isinstance(exc, IlpError):
                log.exception("handler failed on a Prepare to %s", prepare.destination)
            return reject_from_error(exc, self.local_address)

    async def handle_incoming_batch(
        self, prepares: Sequence[IlpPrepare], channels: Sequence[ReplyChannel | None]
    ) -> list[IlpReply]:
        """Answer Prepares that arrived together, in order; never raises.  The batch
        handler when there is one (an exception escaping it becomes one Reject for
        each, as in :meth:`handle_incoming`), else :meth:`handle_incoming` for each in
        a task of its own that sees its channel as :func:`reply_channel`."""
        batch = self._batch_handler
        if batch is None:
            handle = self.handle_incoming
            return list(
                await asyncio.gather(
                    *(handle_on(handle, p, c) for p, c in zip(prepares, channels, strict=True))
                )
            )
        try:
            return await batch(prepares, channels)
        except Exception as exc:
            if not isinstance(exc, IlpError):
                log.exception("handler failed on %d Prepares", len(prepares))
            return [reject_from_error(exc, self.local_address)] * len(prepares)

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool:
        """Whether the link is up (and authenticated, where that applies)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (or start listening) and return once the link is usable."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; in-flight requests fail with LinkClosedError."""

    @abc.abstractmethod
    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """Send ``prepare`` to the peer and return its Fulfill or Reject.

        Without ``timeout`` the wait is bounded by the Prepare's expiry. Raises
        :class:`~ilp_receiver.errors.LinkError` subclasses when the transport fails.
        """

    @staticmethod
    def expiry_timeout(prepare: IlpPrepare, now: datetime | None = None) -> float:
        """Seconds until ``prepare`` expires (at least a small positive number)."""
        current = now or datetime.now(UTC)
        return max(0.001, (prepare.expires_at - current).total_seconds())


def is_fulfill(reply: IlpReply) -> bool:
    """True when ``reply`` is a Fulfill."""
    return isinstance(reply, IlpFulfill)
