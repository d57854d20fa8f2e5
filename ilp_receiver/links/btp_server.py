"""BTP/2.0 server side on aiohttp: authenticate WebSocket clients, one Link per account.

Used by the bundled connector for children (like ilp-plugin-mini-accounts: every
username/token pair becomes an account) and for fixed peers, and by tests.

Authentication (``03-btp.md``, rfcs PR 372): "The client's first message on a new
connection MUST be a Message whose protocolData is: primary entry ``auth`` ... an entry
``auth_token`` ... optionally an entry ``auth_username``."  Anything else first, or bad
credentials, gets ``Error F00 NotAcceptedError`` and the socket is closed; so does a
client that does not authenticate within ``auth_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

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
from .btp import DEFAULT_REQUEST_TIMEOUT, BtpSession, FrameSender

__all__ = ["Authenticator", "BtpServer", "BtpServerLink"]

log = logging.getLogger(__name__)

#: Maps (username or None, token) to an account id, or None to refuse.
Authenticator = Callable[[str | None, str], Awaitable[str | None]]


class BtpServerLink(Link):
    """The link to one account whose client is connected to our BTP server.

    A newer authenticated connection for the same account replaces the older one (as
    ilp-plugin-btp's server mode does).
    """

    enforces_timeout = True

    def __init__(self, account: str, *, idempotent: bool = False) -> None:
        super().__init__()
        self.account = account
        self.idempotent = idempotent
        self._session: BtpSession | None = None
        self._ws: web.WebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._closing: asyncio.Future[bool] | None = None

    @property
    def is_connected(self) -> bool:
        """Whether a client for this account is connected."""
        return self._session is not None

    async def start(self) -> None:
        """Nothing to dial: clients connect to the server."""

    async def stop(self) -> None:
        """Close the current client connection, if any."""
        ws = self._ws
        self._detach(self._session)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a client for this account is connected."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _attach(self, session: BtpSession, ws: web.WebSocketResponse) -> None:
        old_ws = self._ws
        if self._session is not None:
            self._session.close(LinkClosedError("replaced by a newer connection"))
        self._session, self._ws = session, ws
        self._connected.set()
        if old_ws is not None and old_ws is not ws:
            self._closing = asyncio.ensure_future(old_ws.close())

    def _detach(self, session: BtpSession | None) -> None:
        if session is not None and self._session is session:
            session.close(LinkClosedError("BTP client disconnected"))
            self._session = None
            self._ws = None
            self._connected.clear()

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """Send a Prepare to the connected client and return its answer."""
        session = self._session
        if session is None:
            raise LinkClosedError(f"no BTP client connected for account {self.account!r}")
        wait = timeout if timeout is not None else self.expiry_timeout(prepare)
        raw = await session.send_ilp(encode_packet(prepare), min(wait, DEFAULT_REQUEST_TIMEOUT))
        try:
            return decode_reply(raw)
        except DecodeError as exc:
            raise RemoteProtocolError(f"client sent an invalid ILP reply: {exc}") from exc


class BtpServer:
    """An aiohttp WebSocket handler that authenticates BTP clients.

    ``authenticate`` maps credentials to an account id (None refuses); ``link_for``
    returns the :class:`BtpServerLink` of that account (creating it if the connector
    allows), and is where the connector wires the link's handler.
    """

    def __init__(
        self,
        authenticate: Authenticator,
        link_for: Callable[[str], Awaitable[BtpServerLink]],
        *,
        auth_timeout: float = 10.0,
        heartbeat: float = 30.0,
    ) -> None:
        self._authenticate = authenticate
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
        session = BtpSession(
            ws.send_bytes if transport is None else FrameSender(ws, transport).send,
            link._handle_incoming,
            local_address=lambda: link.local_address,
            idempotent=link.idempotent,
        )
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
