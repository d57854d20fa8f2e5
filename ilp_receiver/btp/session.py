"""One authenticated BTP/2.0 (or BTP/2.0-I) connection as a state machine, without I/O.

In the style of h11's ``Connection``: bytes and times go in, events and bytes come out,
and nothing here reads a socket, starts a task or arms a timer.  The asyncio driver
(:class:`~ilp_receiver.links.btp_session.BtpSession`) feeds it every binary WebSocket
message, writes the bytes it returns, runs the handler on the Prepares it reports, and
calls :meth:`BtpSessionState.tick` at :meth:`BtpSessionState.next_deadline`.

What it holds (spec ``03-btp.md``, ``11-open-questions.md`` items 15 and 16):

* **Our requests**: request ids (random UInt32, never one in flight), each request's
  bytes and two explicit deadlines -- when it times out and, in BTP/2.0-I mode, when it
  is sent again ("repeat the identical request ... until a response arrives").
  A Response or Error for an id we are not waiting for is dropped ("Receiving a
  response with no matching outstanding request ...: send nothing.").
* **The peer's requests**: an ``ilp`` Message becomes :class:`PrepareReceived` (or an
  answer the session gives by itself: ``F01`` for a packet that is not a Prepare, ``T01``
  while :attr:`~BtpSessionState.refusing`); a Message without ``ilp`` gets ``Error F00``;
  a BTP/1.x frame gets ``Error F00``; a frame that does not decode gets ``Error F01``
  with the request id from its header when there is one.
* **BTP/2.0-I responder cache**: request id -> (request bytes, answer or "being
  answered", repeats), bounded by ``response_cache_size`` (oldest first out).  A repeat
  of an answered request gets the cached answer again without reaching the handler; a
  repeat of one being answered is counted, and the answer goes out once more for each
  (:meth:`BtpSessionState.take_repeats`) when it is ready; the same id with different
  bytes gets ``Error F00`` ("different bytes with a cached id -> F00").

Events of :meth:`~BtpSessionState.receive`: :class:`PrepareReceived`,
:class:`TransferReceived`, :class:`ResponseReceived`, :class:`SendBytes`; of
:meth:`~BtpSessionState.tick`: :class:`SendBytes` (a BTP/2.0-I repeat) and
:class:`RequestTimedOut`.
"""

from __future__ import annotations

import heapq
import logging
import random
import struct
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from ..codec.btp import (
    BtpError,
    BtpMessage,
    BtpResponse,
    BtpTransfer,
    decode_btp,
    encode_btp,
    encode_ilp_message,
    encode_ilp_response,
    error_frame,
    find_protocol_data,
)
from ..codec.ilp import IlpPrepare, IlpReject, IlpReply, decode_prepare, encode_packet
from ..errors import DecodeError

__all__ = [
    "BtpEvent",
    "BtpSessionState",
    "PrepareReceived",
    "RequestTimedOut",
    "ResponseReceived",
    "SendBytes",
    "TickEvent",
    "TransferReceived",
]

log = logging.getLogger(__name__)

_REQUEST_ID = struct.Struct(">I")
#: Error messages name at most this many of a frame's protocol-data entries (never
#: echo unbounded input).
_NAMES_IN_ERRORS = 4


class PrepareReceived(NamedTuple):
    """The peer sent an ILP Prepare: run the handler, then hand its Fulfill or Reject
    to :meth:`BtpSessionState.answer_prepare` and write the bytes it returns."""

    request_id: int
    prepare: IlpPrepare


class TransferReceived(NamedTuple):
    """The peer sent a BTP Transfer: record it, then write
    :meth:`BtpSessionState.answer_transfer`."""

    request_id: int
    transfer: BtpTransfer


class ResponseReceived(NamedTuple):
    """The Response or Error to one of our requests (it is no longer in flight)."""

    request_id: int
    frame: BtpResponse | BtpError


class SendBytes(NamedTuple):
    """Write ``data`` to the peer: an answer the session gives by itself, or a repeat."""

    data: bytes


class RequestTimedOut(NamedTuple):
    """One of our requests got no answer by its deadline (it is no longer in flight)."""

    request_id: int


#: What :meth:`BtpSessionState.receive` reports for one incoming message.
BtpEvent = PrepareReceived | TransferReceived | ResponseReceived | SendBytes
#: What :meth:`BtpSessionState.tick` reports when a deadline passes.
TickEvent = SendBytes | RequestTimedOut


class _Answered:
    """One request of the peer in the BTP/2.0-I responder cache."""

    __slots__ = ("answer", "repeats", "request")

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.answer: bytes | None = None  # None while it is being answered
        self.repeats = 0


class _Outgoing:
    """One request of ours in flight: its bytes and its deadlines."""

    __slots__ = ("data", "expires", "repeat_at")

    def __init__(self, data: bytes, expires: float, repeat_at: float | None) -> None:
        self.data = data
        self.expires = expires
        self.repeat_at = repeat_at  # BTP/2.0-I only: when to send it again

    def next_deadline(self) -> float:
        repeat_at = self.repeat_at
        return self.expires if repeat_at is None or repeat_at > self.expires else repeat_at


class BtpSessionState:
    """The state of one authenticated BTP connection, driven by its caller.

    ``local_address`` gives the ILP address used as ``triggeredBy`` in the Rejects the
    session writes by itself; ``wall_clock`` the ``triggeredAt`` of its Error frames.
    Times passed to the methods (``now``) are any monotonic clock, in seconds.
    """

    def __init__(
        self,
        *,
        idempotent: bool = False,
        retry_interval: float = 1.0,
        response_cache_size: int = 1000,
        local_address: Callable[[], str] = lambda: "",
        rng: random.Random | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        #: BTP/2.0-I: repeat our requests, answer repeats from the cache
        self.idempotent = idempotent
        #: seconds between BTP/2.0-I repeats of one request
        self.retry_interval = retry_interval
        self._cache_size = response_cache_size
        self._local_address = local_address
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._outgoing: dict[int, _Outgoing] = {}
        # (deadline, request id); entries of requests no longer in flight or with a later
        # deadline are skipped when popped and swept out when they outnumber the live ones
        self._deadlines: list[tuple[float, int]] = []
        # BTP/2.0-I responder cache: request id -> (request bytes, answer or None while
        # it is being answered, repeats received meanwhile)
        self._answered: OrderedDict[int, _Answered] = OrderedDict()
        self._closed = False
        #: while set, the peer's new Prepares are answered T01 (with this message)
        #: instead of being reported
        self.refusing: str | None = None
        #: ILP Prepares the peer sent us / that we sent it on this connection
        self.prepares_received = 0
        self.prepares_sent = 0

    # -- state --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (nothing more goes out)."""
        return self._closed

    @property
    def in_flight(self) -> int:
        """Our requests still waiting for their answer."""
        return len(self._outgoing)

    @property
    def cached_answers(self) -> int:
        """Entries of the BTP/2.0-I responder cache (bounded by its size)."""
        return len(self._answered)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (None: nothing in flight)."""
        heap = self._deadlines
        outgoing = self._outgoing
        while heap:
            deadline, request_id = heap[0]
            request = outgoing.get(request_id)
            if request is not None and request.next_deadline() == deadline:
                return deadline
            heapq.heappop(heap)  # answered, or rescheduled: a stale entry
        return None

    # -- our requests -------------------------------------------------------------------

    def start_request(
        self, build: Callable[[int], bytes], now: float, timeout: float
    ) -> tuple[int, bytes]:
        """Allocate a request id, record the request ``build(request_id)`` with its
        deadlines, and return ``(request_id, bytes to write)``."""
        outgoing = self._outgoing
        request_id = self._rng.getrandbits(32)
        while request_id in outgoing:
            request_id = self._rng.getrandbits(32)
        data = build(request_id)
        repeat_at = now + self.retry_interval if self.idempotent else None
        request = _Outgoing(data, now + timeout, repeat_at)
        outgoing[request_id] = request
        self._schedule(request_id, request.next_deadline())
        return request_id, data

    def start_ilp_request(self, packet: bytes, now: float, timeout: float) -> tuple[int, bytes]:
        """:meth:`start_request` for an ILP packet in a Message (counted as sent)."""
        self.prepares_sent += 1
        return self.start_request(lambda rid: encode_ilp_message(rid, packet), now, timeout)

    def forget_request(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (its requester gave up); a late answer is
        then dropped."""
        self._outgoing.pop(request_id, None)

    def tick(self, now: float) -> list[TickEvent]:
        """Act on every deadline up to ``now``: BTP/2.0-I repeats of our requests
        (:class:`SendBytes`) and timeouts (:class:`RequestTimedOut`)."""
        events: list[TickEvent] = []
        heap = self._deadlines
        outgoing = self._outgoing
        while heap and heap[0][0] <= now:
            deadline, request_id = heapq.heappop(heap)
            request = outgoing.get(request_id)
            if request is None or request.next_deadline() != deadline:
                continue
            if request.expires <= now:
                del outgoing[request_id]
                events.append(RequestTimedOut(request_id))
                continue
            assert request.repeat_at is not None
            if not self._closed:
                events.append(SendBytes(request.data))
            request.repeat_at = now + self.retry_interval
            self._schedule(request_id, request.next_deadline())
        return events

    def _schedule(self, request_id: int, deadline: float) -> None:
        heap = self._deadlines
        heapq.heappush(heap, (deadline, request_id))
        if len(heap) > 64 + 2 * len(self._outgoing):
            # answered requests leave their entries behind: keep the heap O(in flight)
            outgoing = self._outgoing
            live = [(o.next_deadline(), rid) for rid, o in outgoing.items()]
            heapq.heapify(live)
            self._deadlines = live

    # -- the peer's requests ------------------------------------------------------------

    def receive(self, data: bytes) -> BtpEvent | None:
        """Take one incoming binary WebSocket message; what it asks for, if anything."""
        try:
            frame = decode_btp(data)
        except DecodeError as exc:
            # an Error (not silence) so the peer learns why; the request id is taken
            # from the header when there is one
            request_id = _REQUEST_ID.unpack_from(data, 1)[0] if len(data) >= 5 else 0
            log.warning("malformed BTP frame from peer: %s", exc.reason)
            return self._error(request_id, "F01", "InvalidFieldsError", exc.reason)
        if isinstance(frame, BtpResponse | BtpError):
            if self._outgoing.pop(frame.request_id, None) is None:
                return None  # no matching outstanding request: send nothing
            return ResponseReceived(frame.request_id, frame)
        if not isinstance(frame, BtpMessage | BtpTransfer):
            return self._error(
                frame.request_id, "F00", "NotAcceptedError", "BTP/1.x frames are not supported"
            )
        request_id = frame.request_id
        if self.idempotent:
            cached = self._answered.get(request_id)
            if cached is not None:
                if cached.request != data:
                    return self._error(request_id, "F00", "NotAcceptedError", "request id reused")
                # a repeat: the first answer may have been lost; a repeat of a request
                # still being answered gets that answer when it is ready
                if cached.answer is None:
                    cached.repeats += 1
                    return None
                return SendBytes(cached.answer)
            self._answered[request_id] = _Answered(data)
            while len(self._answered) > self._cache_size:
                self._answered.popitem(last=False)
        if isinstance(frame, BtpTransfer):
            return TransferReceived(request_id, frame)
        entry = find_protocol_data(frame, "ilp")
        if entry is None:
            shown = [p.protocol_name[:32] for p in frame.protocol_data[:_NAMES_IN_ERRORS]]
            if len(frame.protocol_data) > _NAMES_IN_ERRORS:
                shown.append(f"... ({len(frame.protocol_data)} in all)")
            names = ", ".join(shown) or "none"
            answer = self._error_bytes(
                request_id, "F00", "NotAcceptedError", f"no handler for sub-protocol(s): {names}"
            )
            return SendBytes(self._settle(request_id, answer))
        try:
            prepare = decode_prepare(entry.data)
        except DecodeError as exc:
            reject = IlpReject("F01", self._local_address(), f"invalid ILP Prepare: {exc.reason}")
            return SendBytes(self.answer_prepare(request_id, reject))
        self.prepares_received += 1
        if self.refusing is not None:
            reject = IlpReject("T01", self._local_address(), self.refusing)
            return SendBytes(self.answer_prepare(request_id, reject))
        return PrepareReceived(request_id, prepare)

    def answer_prepare(self, request_id: int, reply: IlpReply) -> bytes:
        """The Response carrying ``reply`` to the peer's Prepare ``request_id`` (kept
        for repeats in BTP/2.0-I mode)."""
        answer = encode_ilp_response(request_id, encode_packet(reply))
        if self.idempotent:
            return self._settle(request_id, answer)
        return answer

    def answer_transfer(self, request_id: int) -> bytes:
        """The empty Response to the peer's Transfer ``request_id``."""
        return self._settle(request_id, encode_btp(BtpResponse(request_id, ())))

    def take_repeats(self, request_id: int) -> int:
        """How many repeats of the peer's request ``request_id`` arrived while it was
        being answered (BTP/2.0-I): the answer goes out that many times more."""
        cached = self._answered.get(request_id)
        if cached is None:
            return 0
        repeats, cached.repeats = cached.repeats, 0
        return repeats

    def abandon(self, request_id: int) -> None:
        """The peer's request ``request_id`` will not be answered (its handler was
        cancelled): a repeat is handled afresh."""
        self._answered.pop(request_id, None)

    def _settle(self, request_id: int, answer: bytes) -> bytes:
        cached = self._answered.get(request_id)
        if cached is not None:
            cached.answer = answer
        return answer

    def _error_bytes(self, request_id: int, code: str, name: str, message: str) -> bytes:
        return encode_btp(error_frame(request_id, code, name, self._wall_clock(), message))

    def _error(self, request_id: int, code: str, name: str, message: str) -> SendBytes:
        return SendBytes(self._error_bytes(request_id, code, name, message))

    # -- the end ------------------------------------------------------------------------

    def close(self) -> list[int]:
        """The connection is gone: nothing more goes out.  Returns the ids of our
        requests that were in flight (they will get no answer)."""
        self._closed = True
        ids = list(self._outgoing)
        self._outgoing.clear()
        self._deadlines.clear()
        return ids
