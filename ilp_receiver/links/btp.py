"""BTP/2.0 and BTP/2.0-I over WebSocket (spec ``03-btp.md``), client side and a shared session.

:class:`BtpSession` is the request/response machinery of one authenticated BTP
connection, independent of who dialled: it allocates request ids, correlates responses,
answers the peer's requests (an ILP Prepare inside a Message's ``ilp`` entry gets a
Response carrying the Fulfill or Reject), and, in BTP/2.0-I mode, repeats its own
requests until answered and answers repeated requests from a response cache.
The connector's BTP server uses the same class.

:class:`BtpClientLink` dials ``btp+ws://user:token@host:port/path`` with aiohttp,
authenticates (``auth``, ``auth_username``, ``auth_token``), keeps the connection alive
with WebSocket pings and reconnects with capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import aiohttp.web

from ..codec.btp import (
    MAX_BTP_MESSAGE_SIZE,
    BtpError,
    BtpFrame,
    BtpMessage,
    BtpResponse,
    BtpTransfer,
    auth_message,
    decode_btp,
    encode_btp,
    encode_ilp_message,
    encode_ilp_response,
    error_frame,
    find_protocol_data,
)
from ..codec.ilp import IlpPrepare, IlpReject, IlpReply, decode_prepare, decode_reply, encode_packet
from ..errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    LinkClosedError,
    LinkError,
    LinkTimeoutError,
    RemoteProtocolError,
)
from .base import Link, ReplyChannel, set_reply_channel

__all__ = [
    "BtpClientLink",
    "BtpSession",
    "BtpUrl",
    "FrameSender",
    "ReconnectPolicy",
    "parse_btp_url",
]

log = logging.getLogger(__name__)

#: ilp-plugin-btp times out an outstanding request after 35 s.
DEFAULT_REQUEST_TIMEOUT = 35.0
_REQUEST_ID = struct.Struct(">I")
#: Error messages name at most this many of a frame's protocol-data entries (never
#: echo unbounded input).
_NAMES_IN_ERRORS = 4


@dataclass(frozen=True, slots=True)
class BtpUrl:
    """A parsed ``btp+ws://user:token@host:port/path`` URL."""

    ws_url: str
    username: str | None
    token: str

    def __repr__(self) -> str:  # never show the token
        return f"BtpUrl(ws_url={self.ws_url!r}, username={self.username!r}, token='***')"


def parse_btp_url(url: str) -> BtpUrl:
    """Split a BTP URL into the WebSocket URL and the credentials sent in the auth message.

    "The client drops the ``btp+`` prefix and the credentials and opens
    ``ws://host:port/path``; USER and TOKEN are sent inside the first BTP message."
    """
    parts = urlsplit(url)
    if parts.scheme not in ("btp+ws", "btp+wss"):
        raise ConfigError("uplink", f"a BTP URL starts with btp+ws:// or btp+wss://, got {url!r}")
    if not parts.hostname:
        raise ConfigError("uplink", "the BTP URL has no host")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError("uplink", f"bad port in the BTP URL: {exc}") from None
    netloc = host if port is None else f"{host}:{port}"
    ws_url = f"{parts.scheme[4:]}://{netloc}{parts.path or '/'}"
    if parts.query:
        ws_url += f"?{parts.query}"
    username = unquote(parts.username) if parts.username else None
    token = unquote(parts.password) if parts.password else ""
    return BtpUrl(ws_url=ws_url, username=username, token=token)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Capped exponential backoff with jitter between reconnection attempts."""

    initial_delay: float = 0.2
    max_delay: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5  # each delay is multiplied by a random factor in [1-jitter, 1]

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based)."""
        base = min(self.max_delay, self.initial_delay * self.factor**attempt)
        return base * (1.0 - self.jitter * rng.random())


_LEN2 = struct.Struct("!BBH")
_LEN8 = struct.Struct("!BBQ")


def _binary_frame(data: bytes) -> bytes:
    """One unfragmented, unmasked binary WebSocket frame (RFC 6455 section 5.2): what a
    server sends."""
    n = len(data)
    if n < 126:
        header = bytes((0x82, n))
    elif n < 65536:
        header = _LEN2.pack(0x82, 126, n)
    else:
        header = _LEN8.pack(0x82, 127, n)
    return header + data


class FrameSender:
    """Writes BTP messages to an aiohttp WebSocket with few socket writes and little delay.

    The first message of an event-loop iteration is written at once (the answer to a
    lone request leaves without waiting); the ones that follow it in the same iteration
    are coalesced into one write when the iteration ends (fewer syscalls here, fewer
    wake-ups at the peer).  While the socket is backed up it hands each message to
    aiohttp's own ``send_bytes`` (and its flow control) instead.  Frames are only ever
    written whole, in order, and nothing is written once the WebSocket is closing.
    Server side only: it writes to the connection's public ``request.transport``, and
    its frames are unmasked (a client's must be masked, RFC 6455 section 5.3; our
    client links write through aiohttp's ``send_bytes``).
    """

    __slots__ = ("_frames", "_loop", "_transport", "_wrote", "_ws")

    def __init__(self, ws: aiohttp.web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._ws = ws
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._frames: list[bytes] = []
        self._wrote = False  # a frame went out directly in this loop iteration

    async def send(self, data: bytes) -> None:
        """Queue one binary message (written at the end of this loop iteration)."""
        if self._ws.closed or self._transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        if self._transport.get_write_buffer_size():
            self._flush()
            await self._ws.send_bytes(data)
            return
        frames = self._frames
        frame = _binary_frame(data)
        if not frames:
            if not self._wrote:  # the iteration's first: out now (nothing queued before it)
                self._transport.write(frame)
                self._wrote = True
                self._loop.call_soon(self._next_iteration)
                return
            self._loop.call_soon(self._flush)
        frames.append(frame)

    def _next_iteration(self) -> None:
        self._wrote = False

    def _flush(self) -> None:
        frames = self._frames
        if not frames:
            return
        self._frames = []
        if self._ws.closed or self._transport.is_closing():
            return  # the connection is going away: nobody to deliver to
        self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))


def _time_out(future: asyncio.Future[BtpFrame]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Pending:
    __slots__ = ("future", "request")

    def __init__(self, future: asyncio.Future[BtpFrame], request: bytes) -> None:
        self.future = future
        self.request = request


class BtpSession:
    """Request/response state of one authenticated BTP connection.

    ``send_bytes`` writes one binary WebSocket message.  ``handle_prepare`` answers the
    peer's ILP Prepares (it must not raise; use :func:`~ilp_receiver.links.base.call_handler`).
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
    ) -> None:
        self._send_bytes = send_bytes
        self._handle_prepare = handle_prepare
        self._local_address = local_address
        self.idempotent = idempotent
        self.retry_interval = retry_interval
        self._cache_size = response_cache_size
        self._on_transfer = on_transfer
        self._rng = rng or random.Random()
        self._pending: dict[int, _Pending] = {}
        # BTP/2.0-I responder cache: request id -> (request bytes, response future)
        self._answered: OrderedDict[int, tuple[bytes, asyncio.Future[bytes]]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed: BaseException | None = None
        #: while set, the peer's new Prepares are refused (with this message) instead of
        #: handled; the ones already being handled finish (:meth:`drain`)
        self.refusing: str | None = None
        #: ILP Prepares the peer sent us on this connection / that we sent it
        self.prepares_received = 0
        self.prepares_sent = 0
        #: answers that could not be handed back (the connection had closed)
        self.undelivered = 0

    @property
    def in_flight(self) -> int:
        """Our requests on this connection still waiting for their response."""
        return len(self._pending)

    @property
    def handling(self) -> int:
        """The peer's requests on this connection we are still answering."""
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (nothing more goes out)."""
        return self._closed is not None

    def _is_open(self) -> bool:
        return self._closed is None

    # -- our requests ---------------------------------------------------------------

    def _new_request_id(self) -> int:
        while True:
            request_id = self._rng.getrandbits(32)
            if request_id not in self._pending:
                return request_id

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
        request_id = self._new_request_id()
        raw = build(request_id)
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), raw)
        self._pending[request_id] = pending
        try:
            await self._send_bytes(raw)
            if not self.idempotent:
                # a timer instead of wait_for(shield(...)): no extra task or future
                timer = loop.call_later(timeout, _time_out, pending.future)
                try:
                    return await pending.future
                finally:
                    timer.cancel()
            deadline = loop.time() + timeout
            while True:
                wait = min(self.retry_interval, deadline - loop.time())
                if wait <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({pending.future}, timeout=wait)
                if done:
                    return pending.future.result()
                await self._send_bytes(raw)  # BTP/2.0-I: repeat the identical request
        except TimeoutError:
            raise LinkTimeoutError(f"no BTP response within {timeout:.1f} s") from None
        except ConnectionError as exc:  # the socket closed under the write
            raise LinkClosedError(f"BTP connection closed: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)
            if not pending.future.done():
                pending.future.cancel()

    async def send_ilp(self, packet: bytes, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> bytes:
        """Send an ILP packet in a Message and return the ILP packet of the Response."""
        if self.idempotent:
            frame = await self.request_raw(lambda rid: encode_ilp_message(rid, packet), timeout)
        else:
            frame = await self._request_once(packet, timeout)
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

    async def _request_once(self, packet: bytes, timeout: float) -> BtpFrame:
        """:meth:`request_raw` for an ILP Message without BTP/2.0-I repeats (inlined:
        this is every forwarded packet)."""
        if self._closed is not None:
            raise LinkClosedError("BTP connection is closed") from self._closed
        pending_map = self._pending
        request_id = self._rng.getrandbits(32)
        while request_id in pending_map:
            request_id = self._rng.getrandbits(32)
        raw = encode_ilp_message(request_id, packet)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BtpFrame] = loop.create_future()
        pending_map[request_id] = _Pending(future, raw)
        self.prepares_sent += 1
        timer = None
        try:
            await self._send_bytes(raw)
            timer = loop.call_later(timeout, _time_out, future)
            return await future
        except TimeoutError:
            raise LinkTimeoutError(f"no BTP response within {timeout:.1f} s") from None
        except ConnectionError as exc:  # the socket closed under the write
            raise LinkClosedError(f"BTP connection closed: {exc}") from exc
        finally:
            if timer is not None:
                timer.cancel()
            pending_map.pop(request_id, None)
            if not future.done():
                future.cancel()

    def close(self, reason: BaseException | None = None, *, abort: bool = False) -> None:
        """Fail every in-flight request of ours with LinkClosedError; send nothing more.

        The peer's requests being answered are left to finish (their handlers then find
        the connection closed: :func:`~ilp_receiver.links.base.reply_channel`, and the
        answer is counted in :attr:`undelivered`); ``abort`` cancels them instead.
        """
        exc = reason or LinkClosedError("BTP connection closed")
        if self._closed is None:
            self._closed = exc
        for pending in self._pending.values():
            if not pending.future.done():
                error = LinkClosedError(
                    f"BTP connection closed while a request was in flight: {exc}"
                )
                pending.future.set_exception(error)
                pending.future.exception()  # mark retrieved; the requester re-raises it
        self._pending.clear()
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

    # -- incoming bytes --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Process one incoming binary WebSocket message."""
        try:
            frame = decode_btp(data)
        except DecodeError as exc:
            # The issue of record asks for an Error (not silence) so the peer learns why;
            # the request id is taken from the header when there is one.
            request_id = _REQUEST_ID.unpack_from(data, 1)[0] if len(data) >= 5 else 0
            log.warning("malformed BTP frame from peer: %s", exc.reason)
            self._spawn(self._send_error(request_id, "F01", "InvalidFieldsError", exc.reason))
            return
        if isinstance(frame, BtpResponse | BtpError):
            pending = self._pending.get(frame.request_id)
            if pending is not None and not pending.future.done():
                pending.future.set_result(frame)
            # "Receiving a response with no matching outstanding request ...: send nothing."
            return
        if isinstance(frame, BtpMessage) and not self.idempotent:
            # the common case, an ILP Prepare: decode it here and run one coroutine
            # (handler + answer) instead of _answer -> _process
            entry = find_protocol_data(frame, "ilp")
            if entry is not None:
                try:
                    prepare = decode_prepare(entry.data)
                except DecodeError:
                    pass  # _process answers F01
                else:
                    self.prepares_received += 1
                    self._spawn(self._answer_prepare(frame.request_id, prepare))
                    return
        if isinstance(frame, BtpMessage | BtpTransfer):
            self._spawn(self._answer(frame, data))
            return
        self._spawn(
            self._send_error(
                frame.request_id, "F00", "NotAcceptedError", "BTP/1.x frames are not supported"
            )
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_prepare(self, request_id: int, prepare: IlpPrepare) -> None:
        # this task's handler sees the connection it answers on (a credit whose Fulfill
        # cannot go back is undone by the receiver)
        channel = ReplyChannel(self._is_open)
        set_reply_channel(channel)
        if self.refusing is not None:
            reply: IlpReply = IlpReject("T01", self._local_address(), self.refusing)
        else:
            reply = await self._handle_prepare(prepare)
        await self._send_answer(encode_ilp_response(request_id, encode_packet(reply)), channel)

    async def _send_answer(self, answer: bytes, channel: ReplyChannel) -> None:
        """Hand ``answer`` back on this connection, or tell ``channel`` it could not be."""
        if self._closed is None:
            try:
                await self._send_bytes(answer)
                return
            except Exception as exc:  # the connection went away: nobody to answer
                log.debug("could not hand an answer back: %s", exc)
        self.undelivered += 1
        channel.undelivered()

    async def _send_error(self, request_id: int, code: str, name: str, message: str) -> None:
        frame = error_frame(request_id, code, name, datetime.now(UTC), message)
        with contextlib.suppress(Exception):
            await self._send_bytes(encode_btp(frame))

    async def _answer(self, frame: BtpMessage | BtpTransfer, raw: bytes) -> None:
        channel = ReplyChannel(self._is_open)
        set_reply_channel(channel)
        if self.idempotent:
            cached = self._answered.get(frame.request_id)
            if cached is not None:
                request_bytes, response = cached
                if request_bytes != raw:
                    # 11-open-questions item 16: "different bytes with a cached id -> F00".
                    await self._send_error(
                        frame.request_id, "F00", "NotAcceptedError", "request id reused"
                    )
                    return
                # a repeat: the first answer may have been lost, this one is not counted
                with contextlib.suppress(Exception):
                    await self._send_bytes(await asyncio.shield(response))
                return
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._answered[frame.request_id] = (raw, future)
            while len(self._answered) > self._cache_size:
                self._answered.popitem(last=False)
            try:
                answer = await self._process(frame)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()
                self._answered.pop(frame.request_id, None)
                raise
            future.set_result(answer)
            # BTP/2.0-I: a lost answer is asked for again with the same request id and
            # served from the cache; the credit stands
            with contextlib.suppress(Exception):
                await self._send_bytes(answer)
            return
        answer = await self._process(frame)
        await self._send_answer(answer, channel)

    async def _process(self, frame: BtpMessage | BtpTransfer) -> bytes:
        if isinstance(frame, BtpTransfer):
            if self._on_transfer is not None:
                await self._on_transfer(frame)
            return encode_btp(BtpResponse(frame.request_id, ()))
        entry = find_protocol_data(frame, "ilp")
        if entry is None:
            shown = [p.protocol_name[:32] for p in frame.protocol_data[:_NAMES_IN_ERRORS]]
            if len(frame.protocol_data) > _NAMES_IN_ERRORS:
                shown.append(f"... ({len(frame.protocol_data)} in all)")
            names = ", ".join(shown) or "none"
            return encode_btp(
                error_frame(
                    frame.request_id,
                    "F00",
                    "NotAcceptedError",
                    datetime.now(UTC),
                    f"no handler for sub-protocol(s): {names}",
                )
            )
        try:
            prepare = decode_prepare(entry.data)
        except DecodeError as exc:
            reply: IlpReply = IlpReject(
                code="F01",
                triggered_by=self._local_address(),
                message=f"invalid ILP Prepare: {exc.reason}",
            )
        else:
            self.prepares_received += 1
            if self.refusing is not None:
                reply = IlpReject("T01", self._local_address(), self.refusing)
            else:
                reply = await self._handle_prepare(prepare)
        return encode_ilp_response(frame.request_id, encode_packet(reply))


class BtpClientLink(Link):
    """A BTP/2.0 (optionally BTP/2.0-I) client link to a connector over WebSocket.

    ``await link.start()`` returns once the first connection is authenticated and every
    ``on_connect`` callback (IL-DCP, typically) has run; afterwards the link reconnects
    by itself until :meth:`stop`.
    """

    enforces_timeout = True

    def __init__(
        self,
        url: str,
        *,
        idempotent: bool = False,
        reconnect: ReconnectPolicy | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        auth_timeout: float = 10.0,
        heartbeat: float = 10.0,
        retry_interval: float = 1.0,
        drain_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self._url = parse_btp_url(url)
        #: seconds :meth:`stop` lets the Prepares being answered finish before it closes
        #: the connection (new ones meanwhile get T01)
        self.drain_timeout = drain_timeout
        self.idempotent = idempotent
        self._policy = reconnect or ReconnectPolicy()
        self._request_timeout = request_timeout
        self._auth_timeout = auth_timeout
        self._heartbeat = heartbeat
        self._retry_interval = retry_interval
        self._rng = rng or random.Random()
        self._http: aiohttp.ClientSession | None = None
        self._session: BtpSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._first_result: asyncio.Future[None] | None = None
        self._stopping = False
        #: How many times the link has been (re)established; useful for monitoring.
        self.connections = 0

    @property
    def url(self) -> BtpUrl:
        """The parsed uplink URL (the token is hidden in its repr)."""
        return self._url

    @property
    def is_connected(self) -> bool:
        """Whether an authenticated connection is up."""
        return self._session is not None and self._up.is_set()

    async def start(self) -> None:
        """Connect, authenticate and run the connect callbacks; raises if the first try fails."""
        if self._runner is not None:
            return
        self._stopping = False
        self._http = aiohttp.ClientSession()
        loop = asyncio.get_running_loop()
        self._first_result = loop.create_future()
        self._runner = asyncio.create_task(self._run(), name="btp-client")
        try:
            await asyncio.shield(self._first_result)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop reconnecting and close the connection, gracefully: the peer's Prepares
        being answered get up to :attr:`drain_timeout` seconds to finish and their
        answers go back before the connection closes; Prepares arriving meanwhile are
        refused (T01) without reaching the handler."""
        self._stopping = True
        session = self._session
        if session is not None and not session.closed and self.drain_timeout > 0:
            session.refusing = "the receiver is shutting down"
            await session.drain(self.drain_timeout)
        self._up.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        if session is not None:
            session.close(LinkClosedError("link stopped"), abort=True)
        if self._session is not None:
            self._session.close(LinkClosedError("link stopped"), abort=True)
            self._session = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the link is (re)connected."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            raise LinkTimeoutError("BTP uplink did not reconnect in time") from None

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """Send a Prepare over BTP and return the Fulfill or Reject."""
        session = self._session  # set once authenticated, before the connect callbacks
        if session is None:
            raise LinkClosedError("BTP uplink is not connected")
        wait = timeout if timeout is not None else self.expiry_timeout(prepare)
        raw = await session.send_ilp(encode_packet(prepare), wait)
        try:
            return decode_reply(raw)
        except DecodeError as exc:
            raise RemoteProtocolError(f"peer sent an invalid ILP reply: {exc}") from exc

    async def _handle_when_up(self, prepare: IlpPrepare) -> IlpReply:
        """The handler of a connection: a Prepare that arrives between the auth and
        the end of the connect callbacks (IL-DCP: our address is not known yet) waits
        for them (a server that spreads an account's packets over several connections
        sends to a new one at once)."""
        up = self._up
        if not up.is_set():
            wait = min(self.expiry_timeout(prepare), self._auth_timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(up.wait(), wait)
        return await self._handle_incoming(prepare)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await self._connect_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except AuthenticationError as exc:
                self._settle_first(exc)
                log.error("BTP uplink refused our credentials: %s", exc)
            except Exception as exc:
                self._settle_first(
                    exc if isinstance(exc, LinkError) else LinkError(f"BTP connect failed: {exc}")
                )
                log.warning("BTP uplink %s: %s", self._url.ws_url, exc)
            if self._stopping:
                break
            delay = self._policy.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    def _settle_first(self, exc: BaseException | None) -> None:
        first = self._first_result
        if first is not None and not first.done():
            if exc is None:
                first.set_result(None)
            else:
                first.set_exception(exc)

    async def _connect_once(self) -> None:
        assert self._http is not None
        try:
            ws = await self._http.ws_connect(
                self._url.ws_url,
                heartbeat=self._heartbeat,
                max_msg_size=MAX_BTP_MESSAGE_SIZE,
                autoping=True,
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise LinkClosedError(f"cannot connect to {self._url.ws_url}: {exc}") from exc

        # aiohttp's client WebSocket offers no public transport, so the client writes
        # through ws.send_bytes (the server side writes whole frames to its public
        # request.transport with FrameSender)
        session = BtpSession(
            ws.send_bytes,
            self._handle_when_up,
            local_address=lambda: self.local_address,
            idempotent=self.idempotent,
            retry_interval=self._retry_interval,
            rng=self._rng,
        )
        reader = asyncio.create_task(self._read(ws, session), name="btp-client-reader")
        try:
            frame = await session.request(
                lambda rid: auth_message(rid, self._url.token, self._url.username),
                self._auth_timeout,
            )
            if isinstance(frame, BtpError):
                raise AuthenticationError(
                    f"BTP auth refused: {frame.code} {frame.name} "
                    f"{frame.data.decode('utf-8', 'replace')[:200]}"
                )
            self._session = session
            self.connections += 1
            await self._run_connect_callbacks()
            self._up.set()
            self._settle_first(None)
            log.info("BTP uplink connected to %s", self._url.ws_url)
            await reader
        finally:
            self._up.clear()
            if self._session is session:
                self._session = None
            session.close(LinkClosedError("BTP uplink disconnected"))
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await ws.close()

    @staticmethod
    async def _read(ws: aiohttp.ClientWebSocketResponse, session: BtpSession) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                session.feed(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                break
        session.close(LinkClosedError("BTP uplink disconnected"))
