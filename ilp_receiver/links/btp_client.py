"""The BTP/2.0 (and BTP/2.0-I) client link: dial a connector over WebSocket.

:class:`BtpClientLink` dials ``btp+ws://user:token@host:port/path``
(:func:`~ilp_receiver.links.btp_url.parse_btp_url`) with aiohttp, authenticates (``auth``,
``auth_username``, ``auth_token``), keeps the connection alive with WebSocket pings and
reconnects with capped, jittered exponential backoff (:class:`ReconnectPolicy`).  Each
connection is one :class:`~ilp_receiver.links.btp_session.BtpSession`.  Its answers
leave as masked frames, those of one loop iteration in one socket write
(:class:`~ilp_receiver.links.websocket_frames.FrameSender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.http import WebSocketWriter

from ..codec.btp import MAX_BTP_MESSAGE_SIZE, BtpError, auth_message
from ..codec.ilp import IlpPrepare, IlpReply, decode_reply, encode_packet
from ..errors import (
    AuthenticationError,
    DecodeError,
    LinkClosedError,
    LinkError,
    LinkTimeoutError,
    RemoteProtocolError,
)
from .base import Link, ReplyChannel
from .btp_session import DEFAULT_REQUEST_TIMEOUT, BtpSession
from .btp_url import BtpUrl, parse_btp_url
from .websocket_frames import FrameSender

__all__ = ["BtpClientLink", "ReconnectPolicy"]

log = logging.getLogger(__name__)


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


class _TransportKeepingWebSocket(aiohttp.ClientWebSocketResponse):
    """aiohttp's client WebSocket, keeping the transport it was made for.

    Public API only: ``ClientSession(ws_response_class=...)`` is aiohttp's documented
    hook for a subclass of ``ClientWebSocketResponse``; aiohttp constructs it with
    ``(reader, writer, ...)``, where ``writer`` is an ``aiohttp.http.WebSocketWriter``
    whose ``transport`` attribute is public.  The subclass only keeps what its
    constructor is given (no private attribute is read), and anything else (a
    future aiohttp passing something without a transport, or not an
    ``asyncio.Transport``) leaves :attr:`frame_transport` None: the link then writes
    through ``send_bytes`` as before.
    """

    def __init__(self, reader: Any, writer: WebSocketWriter, *args: Any, **kwargs: Any) -> None:
        super().__init__(reader, writer, *args, **kwargs)
        transport = getattr(writer, "transport", None)
        #: the connection's transport, for :class:`FrameSender` (None: not to be had)
        self.frame_transport: asyncio.Transport | None = (
            transport if isinstance(transport, asyncio.Transport) else None
        )


class BtpClientLink(Link):
    """A BTP/2.0 (optionally BTP/2.0-I) client link to a connector over WebSocket.

    ``await link.start()`` returns once the first connection is authenticated and every
    ``on_connect`` callback (IL-DCP, typically) has run; afterwards the link reconnects
    by itself until :meth:`stop`.
    ``immediate_first_frame`` is :class:`~ilp_receiver.links.websocket_frames.FrameSender`'s
    ``immediate_first``.  By default every answer of a loop iteration waits for its end
    and they leave in one write: against writing the iteration's first answer at once,
    that measured 4-13 % less of the receiver's CPU per packet at saturation and half
    the parent's (``docs/benchmarks.md``).
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
        immediate_first_frame: bool = False,
    ) -> None:
        super().__init__()
        self.immediate_first_frame = immediate_first_frame
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
        self._http = aiohttp.ClientSession(ws_response_class=_TransportKeepingWebSocket)
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
        await self._wait_up(prepare)
        return await self.handle_incoming(prepare)

    async def _wait_up(self, prepare: IlpPrepare) -> None:
        up = self._up
        if not up.is_set():
            wait = min(self.expiry_timeout(prepare), self._auth_timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(up.wait(), wait)

    async def _handle_batch_when_up(
        self, prepares: Sequence[IlpPrepare], channels: Sequence[ReplyChannel | None]
    ) -> list[IlpReply]:
        """:meth:`_handle_when_up` for Prepares read together."""
        await self._wait_up(prepares[0])
        return await self.handle_incoming_batch(prepares, channels)

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

        # whole masked frames, an iteration's in one write, to the transport our response
        # class kept; without one, every message goes through ws.send_bytes
        transport = ws.frame_transport if isinstance(ws, _TransportKeepingWebSocket) else None
        sender = (
            None
            if transport is None
            else FrameSender(ws, transport, immediate_first=self.immediate_first_frame, masked=True)
        )
        session = BtpSession(
            ws.send_bytes if sender is None else sender.send,
            self._handle_when_up,
            local_address=lambda: self.local_address,
            idempotent=self.idempotent,
            retry_interval=self._retry_interval,
            rng=self._rng,
            handle_batch=self._handle_batch_when_up if self.handles_batches else None,
            send_answer=None if sender is None else sender.send,
        )
        if sender is not None:
            sender.on_dropped = session.count_undelivered
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
