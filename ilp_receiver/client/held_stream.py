"""A STREAM payment kept open while an HTTP request waits: the paying half of HTTP-ILP
over STREAM (``docs/paid-api.md``).

What STREAM-era HTTP-ILP clients do with ``Pay: interledger-stream <destination>
<secret>``: open a STREAM connection to that destination, open a stream, raise its send
limit to the most they will pay, **wait until the server has sent at least one byte on
that stream**, repeat the HTTP request while the money is still flowing, and close the
stream when the response arrives.  :class:`HeldStreamPayment` is that connection:
:meth:`~HeldStreamPayment.start` it, ``await`` :meth:`~HeldStreamPayment.ready`, make the
request, then ``await`` :meth:`~HeldStreamPayment.finish`.

It drives a sans-I/O :class:`~ilp_receiver.stream.sender.StreamSender` with
``amount_is_limit`` (the send limit; the server's receive limit -- the price -- stops it
earlier), ``hold`` (the connection stays open until :meth:`finish`) and
``min_incoming_data=1`` (the server's greeting), sending its Prepares with ``send``
(``AsyncPaymentClient.send``: the client's uplink; or any link's ``send``).  Unlike
``AsyncPaymentClient.pay`` its waits are interruptible: :meth:`finish` wakes the loop at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..codec.ilp import IlpPrepare, IlpReply
from ..errors import LinkError
from ..stream.sender import DEFAULT_EXPIRY, OutgoingPacket, StreamSender
from .payer import _stream_error, _stream_result
from .results import PaymentResult, StreamDestination

__all__ = ["DEFAULT_READY_TIMEOUT", "HeldStreamPayment", "SendPrepare"]

#: Sends one Prepare and returns its Fulfill or Reject (raising LinkError when the
#: transport fails): ``AsyncPaymentClient.send``, ``Link.send``.
SendPrepare = Callable[[IlpPrepare], Awaitable[IlpReply]]

#: How long :meth:`HeldStreamPayment.ready` waits for the server's first byte.
DEFAULT_READY_TIMEOUT: Final = 30.0
_IV_BYTES: Final = 12


class HeldStreamPayment:
    """One STREAM connection sending up to ``send_max`` to ``target``, held open.

    ``send`` sends one Prepare (``AsyncPaymentClient.send``).  ``send_max`` is in source
    units (the uplink's asset): the most this connection may send, like 2.7.1
    ``setSendMax``; the receiver's receive limit usually stops it earlier.  ``expiry``
    is each Prepare's lifetime; ``max_packet_amount`` the largest money packet.
    """

    def __init__(
        self,
        send: SendPrepare,
        target: StreamDestination,
        send_max: int,
        *,
        expiry: timedelta = DEFAULT_EXPIRY,
        max_packet_amount: int | None = None,
    ) -> None:
        self._send = send
        self.target = target
        self.sender = StreamSender(
            target.destination,
            target.shared_secret,
            amount=send_max,
            amount_is_limit=True,
            hold=True,
            min_incoming_data=1,
            max_packet_amount=max_packet_amount,
            expiry=expiry,
        )
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ facts

    @property
    def received_data(self) -> int:
        """Bytes the server has sent on the stream."""
        return self.sender.received_data

    @property
    def delivered(self) -> int:
        """What the server's replies say arrived so far (its units)."""
        return self.sender.delivered

    @property
    def finished(self) -> bool:
        """Whether the connection is over."""
        return self.sender.finished

    def result(self) -> PaymentResult:
        """What was paid so far."""
        return _stream_result(self.target, self.sender)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Open the connection in the background (probe, then money)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def ready(self, timeout: float | None = DEFAULT_READY_TIMEOUT) -> bool:
        """Wait until the server has sent a byte on the stream, or the connection ended.

        True when the server sent data; False on ``timeout`` or when the connection
        ended without any (see :attr:`finished`, :meth:`finish`).
        """
        self.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.received_data > 0

    async def finish(self) -> PaymentResult:
        """Stop sending, close the connection (NoError) and return what was paid.

        Raises :class:`~ilp_receiver.client.PaymentError` when the connection failed
        (its ``result`` says what was paid before).
        """
        self.sender.end()
        self._wake.set()
        if self._task is not None:
            await self._task
        result = self.result()
        if self.sender.error is not None:
            raise _stream_error(self.sender.error, result)
        return result

    async def abort(self) -> None:
        """Stop the connection without waiting for replies (cancellation)."""
        self.sender.end()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ the loop

    def _check_ready(self) -> None:
        if self.sender.received_data > 0 or self.sender.finished:
            self._ready.set()

    async def _run(self) -> None:
        sender = self.sender
        pending: dict[asyncio.Future[IlpReply], int] = {}
        try:
            while True:
                step = sender.next(
                    now=datetime.now(UTC), iv=os.urandom(_IV_BYTES), condition=os.urandom(32)
                )
                if isinstance(step, OutgoingPacket):
                    pending[asyncio.ensure_future(self._send(step.prepare))] = step.sequence
                    continue
                if step is None:
                    return
                self._wake.clear()
                waker: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
                waiting: list[asyncio.Future[Any]] = [*pending, waker]
                try:
                    await asyncio.wait(
                        waiting, timeout=step.delay, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    waker.cancel()
                for task in [t for t in pending if t.done()]:
                    sequence = pending.pop(task)
                    try:
                        reply = task.result()
                    except LinkError as exc:
                        sender.on_send_failure(sequence, str(exc) or type(exc).__name__)
                        continue
                    sender.on_reply(sequence, reply)
                self._check_ready()
        finally:
            self._ready.set()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
