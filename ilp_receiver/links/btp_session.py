"""The asyncio driver of one BTP connection: a thin layer over the sans-I/O session.

:class:`BtpSession` owns a :class:`~ilp_receiver.btp.session.BtpSessionState` and does
only what needs an event loop: it feeds the state every binary WebSocket message
(:meth:`BtpSession.feed`), writes the bytes the state returns, runs the handler on each
Prepare in a task of its own (with the :func:`~ilp_receiver.links.base.reply_channel`
of the connection), keeps one future per request of ours, and arms one timer at the
state's next deadline (BTP/2.0-I repeats and request timeouts).  Both ends use it: the
client link (:mod:`~ilp_receiver.links.btp_client`) and every connection the server
accepts (:mod:`~ilp_receiver.links.btp_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..btp.session import (
    BtpSessionState,
    PrepareReceived,
    ResponseReceived,
    SendBytes,
    TransferReceived,
)
from ..codec.btp import BtpError, BtpFrame, BtpTransfer, encode_btp, find_protocol_data
from ..codec.ilp import IlpPrepare, IlpReply
from ..errors import LinkClosedError, LinkTimeoutError, RemoteProtocolError
from .base import IlpBatchHandler, ReplyChannel, set_reply_channel

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "BtpSession"]

log = logging.getLogger(__name__)

#: ilp-plugin-btp times out an outstanding request after 35 s.
DEFAULT_REQUEST_TIMEOUT = 35.0


class BtpSession:
    """Request/response state of one authenticated BTP connection, on an event loop.

    ``send_bytes`` writes one binary WebSocket message.  ``handle_prepare`` answers the
    peer's ILP Prepares and must not raise (the link's
    :meth:`~ilp_receiver.links.base.Link.handle_incoming`).  With ``handle_batch`` (the
    link's :meth:`~ilp_receiver.links.base.Link.handle_incoming_batch`), the Prepares
    fed in one event-loop iteration are answered together by one task instead of a
    task each.  ``send_answer(data, dropped)``, when given, writes the answers to the
    peer's Prepares instead of ``send_bytes`` and calls ``dropped()`` if an answer it
    accepted is not written after all (``FrameSender.send``): the answer counts as not
    handed back, and its credit is undone.  ``on_transfer`` records the peer's BTP
    Transfers (they are answered with an empty Response).
    """

    def __init__(
        self,
        send_bytes: Callable[[bytes], Awaitable[None]],
        handle_prepare: Callable[[IlpPrepare], Awaitable[IlpReply]],
        *,
        local_address: Callable[[], str] = lambda: "",
        idempotent: bool = False,
        retry_interval: float = 1.0,
        response_cache_size: int = 1000,
        on_transfer: Callable[[BtpTransfer], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        handle_batch: IlpBatchHandler | None = None,
        send_answer: Callable[[bytes, Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        #: the sans-I/O state this driver feeds (request ids, deadlines, the cache)
        self.state = BtpSessionState(
            idempotent=idempotent,
            retry_interval=retry_interval,
            response_cache_size=response_cache_size,
            local_address=local_address,
            rng=rng,
        )
        self._send_bytes = send_bytes
        self._send_answer = send_answer
        self._handle_prepare = handle_prepare
        self._handle_batch = handle_batch
        # Prepares read in this loop iteration, for the batch task already spawned
        self._batch: list[PrepareReceived] = []
        self._on_transfer = on_transfer
        self._waiting: dict[int, asyncio.Future[BtpFrame]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: answers that could not be handed back (the connection had closed)
        self.undelivered = 0

    # -- what the connection shows ------------------------------------------------------

    @property
    def idempotent(self) -> bool:
        """BTP/2.0-I: our requests are repeated until answered, the peer's repeats are
        answered from the cache."""
        return self.state.idempotent

    @property
    def refusing(self) -> str | None:
        """While set, the peer's new Prepares are refused (T01, with this message)
        instead of handled; the ones already being handled finish (:meth:`drain`)."""
        return self.state.refusing

    @refusing.setter
    def refusing(self, message: str | None) -> None:
        self.state.refusing = message

    @property
    def prepares_received(self) -> int:
        """ILP Prepares the peer sent us on this connection."""
        return self.state.prepares_received

    @property
    def prepares_sent(self) -> int:
        """ILP Prepares we sent the peer on this connection."""
        return self.state.prepares_sent

    @property
    def in_flight(self) -> int:
        """Our requests on this connection still waiting for their response."""
        return len(self._waiting)

    @property
    def handling(self) -> int:
        """Tasks answering the peer's requests on this connection (one per Prepare, or
        per batch of Prepares read together)."""
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (nothing more goes out)."""
        return self._closed is not None

    def _is_open(self) -> bool:
        return self._closed is None

    def count_undelivered(self, answers: int) -> None:
        """Count ``answers`` the transport accepted but could not write after all (the
        connection closed before its queued frames left)."""
        self.undelivered += answers

    # -- our requests -------------------------------------------------------------------

    async def request(
        self, build: Callable[[int], BtpFrame], timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> BtpFrame:
        """Send the request ``build(request_id)`` and wait for its Response or Error frame."""
        return await self.request_raw(lambda rid: encode_btp(build(rid)), timeout)

    async def request_raw(
        self, build: Callable[[int], bytes], timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> BtpFrame:
        """Like :meth:`request`, with ``build`` returning the encoded frame."""
        if self._closed is not None:
            raise LinkClosedError("BTP connection is closed") from self._closed
        loop = asyncio.get_running_loop()
        request_id, data = self.state.start_request(build, loop.time(), timeout)
        return await self._exchange(loop, request_id, data, timeout)

    async def send_ilp(self, packet: bytes, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> bytes:
        """Send an ILP packet in a Message and return the ILP packet of the Response."""
        if self._closed is not None:
            raise LinkClosedError("BTP connection is closed") from self._closed
        loop = asyncio.get_running_loop()
        request_id, data = self.state.start_ilp_request(packet, loop.time(), timeout)
        frame = await self._exchange(loop, request_id, data, timeout)
        if isinstance(frame, BtpError):
            raise RemoteProtocolError(
                f"peer answered with BTP Error {frame.code} {frame.name}: "
                f"{frame.data.decode('utf-8', 'replace')[:200]}"
            )
        entry = find_protocol_data(frame, "ilp")
        if entry is None:
            # "If a Response has no ilp entry ... treat that as a T00-style failure."
            raise RemoteProtocolError("BTP Response carries no ilp protocol data")
        return entry.data

    async def _exchange(
        self, loop: asyncio.AbstractEventLoop, request_id: int, data: bytes, timeout: float
    ) -> BtpFrame:
        future: asyncio.Future[BtpFrame] = loop.create_future()
        self._waiting[request_id] = future
        self._arm(loop)
        try:
            await self._send_bytes(data)
            return await future
        except TimeoutError:
            raise LinkTimeoutError(f"no BTP response within {timeout:.1f} s") from None
        except ConnectionError as exc:  # the socket closed under the write
            raise LinkClosedError(f"BTP connection closed: {exc}") from exc
        finally:
            if self._waiting.pop(request_id, None) is not None:
                self.state.forget_request(request_id)  # we gave up (cancelled, write failed)
            if not future.done():
                future.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep one timer at the state's next deadline."""
        deadline = self.state.next_deadline()
        if deadline is None or deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._on_deadline, loop)

    def _on_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        now = max(loop.time(), self._timer_at)
        self._timer, self._timer_at = None, math.inf
        for event in self.state.tick(now):
            if isinstance(event, SendBytes):
                self._spawn(self._write(event.data))  # a BTP/2.0-I repeat
            else:
                future = self._waiting.pop(event.request_id, None)
                if future is not None and not future.done():
                    future.set_exception(TimeoutError())
        self._arm(loop)

    def close(self, reason: BaseException | None = None, *, abort: bool = False) -> None:
        """Fail every in-flight request of ours with LinkClosedError; send nothing more.

        The peer's requests being answered are left to finish (their handlers then find
        the connection closed: :func:`~ilp_receiver.links.base.reply_channel`, and the
        answer is counted in :attr:`undelivered`); ``abort`` cancels them instead.
        """
        exc = reason or LinkClosedError("BTP connection closed")
        if self._closed is None:
            self._closed = exc
        self.state.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                error = LinkClosedError(
                    f"BTP connection closed while a request was in flight: {exc}"
                )
                future.set_exception(error)
                future.exception()  # mark retrieved; the requester re-raises it
        if abort:
            for task in list(self._tasks):
                task.cancel()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the peer's requests being answered are
        answered; True when none is left."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return not self._tasks

    # -- incoming messages --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Process one incoming binary WebSocket message."""
        event = self.state.receive(data)
        if event is None:
            return
        if isinstance(event, PrepareReceived):  # the common case first
            if self._handle_batch is None:
                self._spawn(self._answer_prepare(event.request_id, event.prepare))
            else:
                if not self._batch:  # the task takes what this iteration feeds
                    self._spawn(self._answer_batch())
                self._batch.append(event)
        elif isinstance(event, ResponseReceived):
            future = self._waiting.pop(event.request_id, None)
            if future is not None and not future.done():
                future.set_result(event.frame)
        elif isinstance(event, SendBytes):
            self._spawn(self._write(event.data))
        else:
            self._spawn(self._answer_transfer(event))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_prepare(self, request_id: int, prepare: IlpPrepare) -> None:
        # this task's handler sees the connection it answers on (a credit whose Fulfill
        # cannot go back is undone by the receiver)
        channel = ReplyChannel(self._is_open)
        set_reply_channel(channel)
        try:
            reply = await self._handle_prepare(prepare)
        except BaseException:
            self.state.abandon(request_id)  # cancelled: a repeat is handled afresh
            raise
        await self._answer(request_id, reply, channel)

    async def _answer_batch(self) -> None:
        """Answer the Prepares fed since this task was spawned, together."""
        assert self._handle_batch is not None
        batch, self._batch = self._batch, []
        channels = [ReplyChannel(self._is_open) for _ in batch]
        try:
            replies = await self._handle_batch([event.prepare for event in batch], channels)
        except BaseException:
            for event in batch:
                self.state.abandon(event.request_id)  # cancelled: repeats handled afresh
            raise
        for event, reply, channel in zip(batch, replies, channels, strict=True):
            await self._answer(event.request_id, reply, channel)

    async def _answer(self, request_id: int, reply: IlpReply, channel: ReplyChannel) -> None:
        """Hand ``reply`` back; ``channel`` learns when it could not be."""
        answer = self.state.answer_prepare(request_id, reply)
        if self.state.idempotent:
            # BTP/2.0-I: a lost answer is asked for again with the same request id and
            # served from the cache; the credit stands
            for _ in range(1 + self.state.take_repeats(request_id)):
                await self._write(answer)
            return
        if self._closed is None:
            try:
                if self._send_answer is None:
                    await self._send_bytes(answer)
                else:
                    await self._send_answer(answer, lambda: self._lost(channel))
                return
            except Exception as exc:  # the connection went away: nobody to answer
                log.debug("could not hand an answer back: %s", exc)
        self._lost(channel)

    def _lost(self, channel: ReplyChannel) -> None:
        """An answer could not be handed back (its credit is undone)."""
        self.undelivered += 1
        channel.undelivered()

    async def _answer_transfer(self, event: TransferReceived) -> None:
        try:
            if self._on_transfer is not None:
                await self._on_transfer(event.transfer)
        except BaseException:
            self.state.abandon(event.request_id)
            raise
        answer = self.state.answer_transfer(event.request_id)
        for _ in range(1 + self.state.take_repeats(event.request_id)):
            await self._write(answer)

    async def _write(self, data: bytes) -> None:
        """Write ``data`` if the connection is open; a failed write loses nothing the
        peer cannot ask for again."""
        if self._closed is None:
            with contextlib.suppress(Exception):
                await self._send_bytes(data)
