"""BTP/2.0 server side on aiohttp: authenticate WebSocket clients, one Link per account.

Used by the bundled connector for children (like ilp-plugin-mini-accounts: every
username/token pair becomes an account) and for fixed peers, and by tests.

An account may have several live connections (the worker processes of one web app
dialling with the same credentials): :class:`BtpServerLink` spreads the Prepares it
sends over them, each answer comes back on the connection its Prepare went out on, and
a connection that drops fails only its own Prepares in flight.  ilp-plugin-btp's server
mode instead replaces the older connection, and ilp-plugin-mini-accounts 4.2.0 sends
every Prepare to *all* connections of the account (``docs/scaling.md``).

Authentication (``03-btp.md``, rfcs PR 372): "The client's first message on a new
connection MUST be a Message whose protocolData is: primary entry ``auth`` ... an entry
``auth_token`` ... optionally an entry ``auth_username``."  Anything else first, or bad
credentials, gets ``Error F00 NotAcceptedError`` and the socket is closed; so does a
client that does not authenticate within ``auth_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from aiohttp import WSMsgType, web

from ..codec.btp import (
    MAX_BTP_MESSAGE_SIZE,
    BtpMessage,
    BtpResponse,
    auth_error_frame,
    decode_btp,
    encode_btp,
    parse_auth,
)
from ..codec.ilp import IlpPrepare, IlpReply, decode_reply, encode_packet
from ..errors import (
    DecodeError,
    LinkClosedError,
    RemoteProtocolError,
)
from .base import Link
from .btp_session import DEFAULT_REQUEST_TIMEOUT, BtpSession
from .websocket_frames import FrameSender

__all__ = [
    "SPREADS",
    "Authenticator",
    "BtpConnection",
    "BtpServer",
    "BtpServerLink",
]

log = logging.getLogger(__name__)

#: Maps (username or None, token) to an account id, or None to refuse.
Authenticator = Callable[[str | None, str], Awaitable[str | None]]


#: How :meth:`BtpServerLink.send` picks among an account's connections.
SPREADS: Final = ("least-in-flight", "round-robin")


class BtpConnection:
    """One live BTP connection of an account (:attr:`BtpServerLink.connections`)."""

    __slots__ = ("id", "opened_at", "session", "ws")

    def __init__(self, connection_id: str, session: BtpSession, ws: web.WebSocketResponse):
        self.id = connection_id
        self.session = session
        self.ws = ws
        self.opened_at = time.time()

    @property
    def in_flight(self) -> int:
        """Our Prepares on this connection still waiting for their answer."""
        return self.session.in_flight

    def info(self) -> dict[str, object]:
        """What the admin API shows of it."""
        session = self.session
        return {
            "id": self.id,
            "opened_at": round(self.opened_at, 3),
            "in_flight": session.in_flight,
            "prepares_sent": session.prepares_sent,
            "prepares_received": session.prepares_received,
            "undelivered": session.undelivered,
        }


class BtpServerLink(Link):
    """The link to one account whose clients are connected to our BTP server.

    An account may have several live connections at once (every worker process of a
    web app dialling with the same credentials): a new authenticated connection *joins*
    the account.  :meth:`send` spreads Prepares over them (``spread``:
    ``"least-in-flight"``, the connection with the fewest unanswered Prepares, ties
    taken in turn; or ``"round-robin"``); each Prepare's answer comes back on the
    connection it went out on, and a connection that drops fails only its own Prepares
    in flight.  Beyond ``max_connections`` the oldest connection is closed for the new
    one (``max_connections=1``: a newer connection replaces the older, as ilp-plugin-btp's
    server mode does).
    """

    enforces_timeout = True

    def __init__(
        self,
        account: str,
        *,
        idempotent: bool = False,
        max_connections: int = 32,
        spread: str = "least-in-flight",
    ) -> None:
        super().__init__()
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if spread not in SPREADS:
            raise ValueError(f"spread must be one of {', '.join(SPREADS)}")
        self.account = account
        self.idempotent = idempotent
        self.max_connections = max_connections
        self.spread = spread
        self._connections: list[BtpConnection] = []
        self._turn = 0
        self._serial = itertools.count(1)
        self._connected = asyncio.Event()
        self._closing: set[asyncio.Future[bool]] = set()
        #: connections opened, closed, and closed to make room for a newer one
        self.opened = 0
        self.closed = 0
        self.replaced = 0

    @property
    def is_connected(self) -> bool:
        """Whether a client for this account is connected."""
        return bool(self._connections)

    @property
    def connections(self) -> tuple[BtpConnection, ...]:
        """The live connections, oldest first."""
        return tuple(self._connections)

    async def start(self) -> None:
        """Nothing to dial: clients connect to the server."""

    async def stop(self) -> None:
        """Close every client connection."""
        connections, self._connections = self._connections, []
        self._connected.clear()
        for connection in connections:
            connection.session.close(LinkClosedError("link stopped"), abort=True)
            with contextlib.suppress(Exception):
                await connection.ws.close()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=1.0)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a client for this account is connected."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _attach(self, session: BtpSession, ws: web.WebSocketResponse) -> BtpConnection:
        """A new authenticated connection joins the account (the oldest is closed when
        there are ``max_connections`` already)."""
        while len(self._connections) >= self.max_connections:
            oldest = self._connections.pop(0)
            oldest.session.close(LinkClosedError("replaced by a newer connection"))
            self.replaced += 1
            self.closed += 1
            if oldest.ws is not ws:
                closing = asyncio.ensure_future(oldest.ws.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        connection = BtpConnection(f"{self.account}#{next(self._serial)}", session, ws)
        self._connections.append(connection)
        self.opened += 1
        self._connected.set()
        return connection

    def _detach(self, session: BtpSession | None) -> bool:
        """A connection went away: fail its own Prepares in flight.  True when it was
        live (not already replaced)."""
        for i, connection in enumerate(self._connections):
            if connection.session is session:
                del self._connections[i]
                self.closed += 1
                session.close(LinkClosedError("BTP client disconnected"))
                if not self._connections:
                    self._connected.clear()
                return True
        return False

    def _pick(self) -> BtpConnection | None:
        connections = self._connections
        n = len(connections)
        if n <= 1:
            return connections[0] if n else None
        turn = self._turn
        self._turn = turn + 1
        if self.spread == "round-robin":
            return connections[turn % n]
        # The connection whose turn it is, unless another has at least two Prepares in
        # flight fewer: equal workers are taken in turn (measured: strict "fewest"
        # keeps sending to the one that just answered, which costs up to 15 % against
        # round robin), a slow one is passed over (docs/benchmarks.md).
        best = connections[turn % n]
        least = best.session.in_flight
        if least > 1:
            for k in range(1, n):
                candidate = connections[(turn + k) % n]
                load = candidate.session.in_flight
                if load < least - 1:
                    best, least = candidate, load + 1
        return best

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """Send a Prepare to one connected client and return its answer."""
        connection = self._pick()
        if connection is None:
            raise LinkClosedError(f"no BTP client connected for account {self.account!r}")
        wait = timeout if timeout is not None else self.expiry_timeout(prepare)
        raw = await connection.session.send_ilp(
            encode_packet(prepare), min(wait, DEFAULT_REQUEST_TIMEOUT)
        )
        try:
            return decode_reply(raw)
        except DecodeError as exc:
            raise RemoteProtocolError(f"client sent an invalid ILP reply: {exc}") from exc


class BtpServer:
    """An aiohttp WebSocket handler that authenticates BTP clients.

    ``authenticate`` maps credentials to an account id (None refuses); ``link_for``
    returns the :class:`BtpServerLink` of that account (creating it if the connector
    allows), and is where the connector wires the link's handler.
    ``immediate_first_frame`` is :class:`~ilp_receiver.links.websocket_frames.FrameSender`'s
    ``immediate_first``.
    """

    def __init__(
        self,
        authenticate: Authenticator,
        link_for: Callable[[str], Awaitable[BtpServerLink]],
        *,
        auth_timeout: float = 10.0,
        heartbeat: float = 30.0,
        immediate_first_frame: bool = True,
    ) -> None:
        self._authenticate = authenticate
        self.immediate_first_frame = immediate_first_frame
        self._link_for = link_for
        self.auth_timeout = auth_timeout
        self.heartbeat = heartbeat

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler: mount it with ``app.router.add_get(path, server.handle)``."""
        # no permessage-deflate: ILP packets are small and random (encrypted); compressing
        # them costs CPU for nothing (and a compressed message could inflate past the
        # bound).  max_msg_size: a bigger message is refused from its frame header, before
        # it is read, authenticated or not (close code 1009).
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat, max_msg_size=MAX_BTP_MESSAGE_SIZE, compress=False
        )
        await ws.prepare(request)
        try:
            link = await asyncio.wait_for(self._auth(ws), self.auth_timeout)
        except TimeoutError:
            await self._refuse(ws, 0, "no auth message within the timeout")
            return ws
        if link is None:
            return ws
        transport = request.transport
        sender = (
            None
            if transport is None
            else FrameSender(ws, transport, immediate_first=self.immediate_first_frame)
        )
        session = BtpSession(
            ws.send_bytes if sender is None else sender.send,
            link.handle_incoming,
            local_address=lambda: link.local_address,
            idempotent=link.idempotent,
            send_answer=None if sender is None else sender.send,
        )
        if sender is not None:
            sender.on_dropped = session.count_undelivered
        link._attach(session, ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    session.feed(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            link._detach(session)
        return ws

    async def _auth(self, ws: web.WebSocketResponse) -> BtpServerLink | None:
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            await self._refuse(ws, 0, "expected a binary BTP auth message")
            return None
        try:
            frame = decode_btp(msg.data)
        except DecodeError as exc:
            await self._refuse(ws, 0, f"malformed BTP frame: {exc.reason}")
            return None
        try:
            if not isinstance(frame, BtpMessage):
                raise RemoteProtocolError("the first message must be a BTP auth Message")
            username, token = parse_auth(frame)
        except RemoteProtocolError as exc:
            await self._refuse(ws, frame.request_id, str(exc))
            return None
        account = await self._authenticate(username, token)
        if account is None:
            await self._refuse(ws, frame.request_id, "invalid credentials")
            return None
        link = await self._link_for(account)
        await ws.send_bytes(encode_btp(BtpResponse(frame.request_id, ())))
        return link

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, request_id: int, reason: str) -> None:
        log.info("refusing BTP client: %s", reason)
        with contextlib.suppress(Exception):
            await ws.send_bytes(encode_btp(auth_error_frame(request_id, datetime.now(UTC), reason)))
        with contextlib.suppress(Exception):
            await ws.close()
