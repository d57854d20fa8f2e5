"""The one interface every transport to a peer implements.

A :class:`Link` carries ILP packets both ways over one bilateral connection:

* :meth:`Link.send` sends an ILP Prepare to the peer and returns its Fulfill or Reject;
* incoming Prepares are handed to the handler given with :meth:`Link.set_handler`,
  whose Fulfill or Reject goes back to the peer.

Handlers return rejects as values; an exception escaping a handler is turned into a
``T00`` Reject at exactly one place (:func:`call_handler`).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from ..codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ..errors import IlpError

__all__ = [
    "ConnectCallback",
    "IlpHandler",
    "Link",
    "call_handler",
    "reject_from_error",
]

log = logging.getLogger(__name__)

#: Handles one incoming ILP Prepare and returns the Fulfill or Reject to send back.
IlpHandler = Callable[[IlpPrepare], Awaitable[IlpReply]]
#: Called (and awaited) every time a link (re)connects and is authenticated.
ConnectCallback = Callable[[], Awaitable[None]]


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


async def call_handler(handler: IlpHandler, prepare: IlpPrepare, triggered_by: str) -> IlpReply:
    """Run ``handler`` on ``prepare``; never raises (the edge where errors become T00)."""
    try:
        return await handler(prepare)
    except Exception as exc:
        if not isinstance(exc, IlpError):
            log.exception("handler failed on a Prepare to %s", prepare.destination)
        return reject_from_error(exc, triggered_by)


async def _no_handler(prepare: IlpPrepare) -> IlpReply:
    return IlpReject(code="F02", message="no handler registered")


class Link(abc.ABC):
    """A bilateral connection to one peer that carries ILP packets both ways."""

    #: True when :meth:`send` itself gives up with LinkTimeoutError once ``timeout``
    #: has passed, so callers need no timer of their own (the BTP links).
    enforces_timeout: bool = False

    def __init__(self) -> None:
        self._handler: IlpHandler = _no_handler
        self._connect_callbacks: list[ConnectCallback] = []
        #: The ILP address used as ``triggeredBy`` in Rejects this link produces itself.
        self.local_address = ""

    def set_handler(self, handler: IlpHandler) -> None:
        """Route incoming Prepares to ``handler``."""
        self._handler = handler

    def on_connect(self, callback: ConnectCallback) -> None:
        """Await ``callback`` after every (re)connection, before the link counts as up."""
        self._connect_callbacks.append(callback)

    async def _run_connect_callbacks(self) -> None:
        for callback in self._connect_callbacks:
            await callback()

    async def _handle_incoming(self, prepare: IlpPrepare) -> IlpReply:
        # call_handler inlined (one coroutine less per incoming packet)
        try:
            return await self._handler(prepare)
        except Exception as exc:
            if not isinstance(exc, IlpError):
                log.exception("handler failed on a Prepare to %s", prepare.destination)
            return reject_from_error(exc, self.local_address)

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
