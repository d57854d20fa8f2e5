"""BTP client link against our own BTP server over real loopback WebSockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from ilp_receiver.codec.btp import (
    MAX_BTP_MESSAGE_SIZE,
    MAX_PROTOCOL_DATA_ENTRIES,
    MAX_PROTOCOL_NAME_LENGTH,
    BtpError,
    BtpMessage,
    BtpResponse,
    ProtocolData,
    auth_message,
    decode_btp,
    encode_btp,
    error_message,
    find_protocol_data,
    ilp_message,
)
from ilp_receiver.codec.ildcp import IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_prepare,
    decode_reply,
    encode_packet,
)
from ilp_receiver.errors import AuthenticationError, LinkClosedError
from ilp_receiver.links.btp_client import BtpClientLink, ReconnectPolicy
from ilp_receiver.links.btp_server import BtpServer, BtpServerLink, FrameSender
from ilp_receiver.links.btp_url import parse_btp_url
from ilp_receiver.links.uplink import Uplink

FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_to(destination: str, amount: int = 10, seconds: float = 5) -> IlpPrepare:
    return IlpPrepare(
        amount=amount,
        expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds),
        execution_condition=bytes(32),
        destination=destination,
        data=b"hello",
    )


@dataclass
class FakeParent:
    """A BTP server that answers IL-DCP and records what reaches it."""

    port: int
    token: str = "secret"
    address: str = "test.parent"
    links: dict[str, BtpServerLink] = field(default_factory=dict)
    seen: list[IlpPrepare] = field(default_factory=list)
    answer: Callable[[IlpPrepare], Awaitable[IlpReply]] | None = None
    runner: web.AppRunner | None = None

    async def authenticate(self, username: str | None, token: str) -> str | None:
        return (username or "anon") if token == self.token else None

    async def link_for(self, account: str) -> BtpServerLink:
        link = self.links.get(account)
        if link is None:
            link = BtpServerLink(account)
            link.local_address = self.address

            async def handle(prepare: IlpPrepare) -> IlpReply:
                if prepare.destination == "peer.config":
                    info = IldcpResponse(f"{self.address}.{account}", 9, "XYZ")
                    return ildcp_serve(
                        prepare, info, server_address=self.address, now=datetime.now(UTC)
                    )
                self.seen.append(prepare)
                if self.answer is not None:
                    return await self.answer(prepare)
                return IlpReject("F02", self.address, "no route")

            link.set_handler(handle)
            self.links[account] = link
        return link

    async def start(self) -> None:
        server = BtpServer(self.authenticate, self.link_for, auth_timeout=2)
        app = web.Application()
        app.router.add_get("/", server.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        for link in self.links.values():
            await link.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def parent() -> AsyncIterator[FakeParent]:
    server = FakeParent(free_port())
    await server.start()
    yield server
    await server.stop()


def test_parse_btp_url_splits_credentials_and_hides_the_token() -> None:
    url = parse_btp_url("btp+ws://alice:s%40cret@127.0.0.1:7768/path")
    assert url.ws_url == "ws://127.0.0.1:7768/path"
    assert url.username == "alice"
    assert url.token == "s@cret"
    assert "s@cret" not in repr(url)
    assert parse_btp_url("btp+wss://:tok@example.com").ws_url == "wss://example.com/"
    assert parse_btp_url("btp+wss://:tok@example.com").username is None


async def test_connect_runs_ildcp_and_carries_packets_both_ways(parent: FakeParent) -> None:
    link = BtpClientLink(f"btp+ws://alice:secret@127.0.0.1:{parent.port}", reconnect=FAST)
    uplink = Uplink(link)

    async def client_handler(prepare: IlpPrepare) -> IlpReply:
        return IlpFulfill(bytes(32), b"from client " + prepare.data)

    link.set_handler(client_handler)
    config = await uplink.start()
    try:
        assert config.address == "test.parent.alice"
        assert (config.asset_code, config.asset_scale) == ("XYZ", 9)
        # client -> server
        reply = await link.send(prepare_to("test.parent.bob"))
        assert isinstance(reply, IlpReject) and reply.code == "F02"
        assert parent.seen[-1].destination == "test.parent.bob"
        # server -> client
        server_link = parent.links["alice"]
        back = await server_link.send(prepare_to("test.parent.alice"))
        assert back == IlpFulfill(bytes(32), b"from client hello")
    finally:
        await uplink.stop()


async def test_wrong_token_is_refused_with_a_clear_error(parent: FakeParent) -> None:
    link = BtpClientLink(f"btp+ws://alice:wrong@127.0.0.1:{parent.port}", reconnect=FAST)
    with pytest.raises(AuthenticationError, match="F00"):
        await link.start()
    assert not link.is_connected


async def raw_client(
    port: int, token: str = "secret"
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(f"ws://127.0.0.1:{port}/")
    await ws.send_bytes(encode_btp(auth_message(1, token, "raw")))
    answer = decode_btp((await ws.receive()).data)
    assert isinstance(answer, BtpResponse) and answer.request_id == 1
    return http, ws


async def test_malformed_frames_get_a_btp_error_and_the_link_stays_up(parent: FakeParent) -> None:
    http, ws = await raw_client(parent.port)
    try:
        # a frame whose payload is truncated: header says request 7, then garbage
        await ws.send_bytes(bytes.fromhex("06000000077f0102"))
        error = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(error, BtpError)
        assert error.request_id == 7
        assert error.code == "F01"
        # the connection still works: a malformed ILP packet inside a valid Message
        await ws.send_bytes(encode_btp(ilp_message(8, b"\x0c\x05garbage")))
        response = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(response, BtpResponse) and response.request_id == 8
        entry = find_protocol_data(response, "ilp")
        assert entry is not None
        reject = decode_reply(entry.data)
        assert isinstance(reject, IlpReject) and reject.code == "F01"
        assert reject.triggered_by == "test.parent"
        # and a valid Prepare is still handled
        await ws.send_bytes(encode_btp(ilp_message(9, encode_packet(prepare_to("test.x")))))
        response = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(response, BtpResponse) and response.request_id == 9
    finally:
        await ws.close()
        await http.close()


async def test_message_without_ilp_entry_gets_not_accepted_error(parent: FakeParent) -> None:
    http, ws = await raw_client(parent.port)
    try:
        await ws.send_bytes(encode_btp(BtpMessage(5, (ProtocolData("weird", 0, b""),))))
        error = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(error, BtpError) and error.code == "F00" and error.request_id == 5
    finally:
        await ws.close()
        await http.close()


async def test_many_entries_are_refused_and_errors_echo_a_bounded_text(
    parent: FakeParent,
) -> None:
    http, ws = await raw_client(parent.port)
    try:
        # more entries than MAX_PROTOCOL_DATA_ENTRIES: refused by the decoder (F01),
        # answered with a short message, and the connection stays usable
        many = tuple(ProtocolData(f"p{i}", 0, b"") for i in range(MAX_PROTOCOL_DATA_ENTRIES + 1))
        await ws.send_bytes(encode_btp(BtpMessage(5, many)))
        error = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(error, BtpError) and error.code == "F01" and error.request_id == 5
        assert len(error.data) < 200
        # as many as allowed, none of them ilp, names as long as allowed: the "no handler"
        # error names a few of them, not all
        allowed = tuple(
            ProtocolData(f"{i:03d}" + "n" * (MAX_PROTOCOL_NAME_LENGTH - 3), 0, b"")
            for i in range(MAX_PROTOCOL_DATA_ENTRIES)
        )
        await ws.send_bytes(encode_btp(BtpMessage(6, allowed)))
        error = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(error, BtpError) and error.code == "F00" and error.request_id == 6
        assert len(error.data) < 300
        assert f"({MAX_PROTOCOL_DATA_ENTRIES} in all)" in error_message(error)
        await ws.send_bytes(encode_btp(ilp_message(9, encode_packet(prepare_to("test.x")))))
        response = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(response, BtpResponse) and response.request_id == 9
    finally:
        await ws.close()
        await http.close()


async def test_a_message_over_the_size_limit_closes_the_socket_before_auth(
    parent: FakeParent,
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{parent.port}/")
        await ws.send_bytes(bytes(MAX_BTP_MESSAGE_SIZE + 1))
        closing = await ws.receive(timeout=2)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


def oversized_prepare(destination: str) -> bytes:
    """A Prepare to ``destination`` whose data is 32768 bytes, one more than allowed."""
    wire = encode_packet(prepare_to(destination))
    body = wire[2:-6] + b"\x82\x80\x00" + bytes(32768)  # "hello" -> 32768 bytes of data
    return wire[:1] + b"\x82" + len(body).to_bytes(2, "big") + body


async def test_prepare_data_over_32767_bytes_is_f01_without_a_traceback(
    parent: FakeParent, caplog: pytest.LogCaptureFixture
) -> None:
    http, ws = await raw_client(parent.port)
    try:
        with caplog.at_level("DEBUG"):
            await ws.send_bytes(encode_btp(ilp_message(4, oversized_prepare("test.x"))))
            response = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(response, BtpResponse) and response.request_id == 4
        entry = find_protocol_data(response, "ilp")
        assert entry is not None
        reject = decode_reply(entry.data)
        assert isinstance(reject, IlpReject) and reject.code == "F01"
        assert "32768 bytes" in reject.message and len(reject.message) < 200
        assert not parent.seen  # never reached the handler
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        await ws.close()
        await http.close()


async def test_unauthenticated_client_gets_error_and_is_closed(parent: FakeParent) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{parent.port}/")
        await ws.send_bytes(encode_btp(ilp_message(3, encode_packet(prepare_to("test.x")))))
        error = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(error, BtpError) and error.code == "F00"
        closing = await ws.receive(timeout=2)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_in_flight_request_fails_promptly_when_the_link_drops(parent: FakeParent) -> None:
    hold = asyncio.Event()

    async def never(prepare: IlpPrepare) -> IlpReply:
        await hold.wait()
        raise AssertionError("unreachable")

    parent.answer = never
    link = BtpClientLink(f"btp+ws://alice:secret@127.0.0.1:{parent.port}", reconnect=FAST)
    uplink = Uplink(link)
    await uplink.start()
    try:
        pending = asyncio.create_task(link.send(prepare_to("test.parent.bob", seconds=30)))
        await asyncio.sleep(0.2)
        await parent.links["alice"].stop()  # the server drops the connection
        started = asyncio.get_running_loop().time()
        with pytest.raises(LinkClosedError):
            await pending
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        hold.set()
        await uplink.stop()


async def test_reconnects_and_reruns_ildcp_after_the_server_restarts(parent: FakeParent) -> None:
    link = BtpClientLink(f"btp+ws://alice:secret@127.0.0.1:{parent.port}", reconnect=FAST)
    uplink = Uplink(link)
    await uplink.start()
    try:
        assert link.connections == 1
        await parent.stop()
        await asyncio.sleep(0.3)
        assert not link.is_connected
        parent.address = "test.newparent"
        parent.links.clear()
        await parent.start()
        await link.wait_connected(timeout=10)
        assert link.connections == 2
        assert uplink.config.address == "test.newparent.alice"
        reply = await link.send(prepare_to("test.newparent.bob"))
        assert isinstance(reply, IlpReject) and reply.triggered_by == "test.newparent"
    finally:
        await uplink.stop()


async def test_btp2i_repeated_request_is_answered_from_the_cache(parent: FakeParent) -> None:
    calls = 0

    async def count(prepare: IlpPrepare) -> IlpReply:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return IlpFulfill(bytes(32), calls.to_bytes(4, "big"))

    parent.answer = count
    http, ws = await raw_client(parent.port)
    try:
        parent.links["raw"].idempotent = True
        # reconnect so the new session is created in idempotent mode
        await ws.close()
        await http.close()
        http, ws = await raw_client(parent.port)
        frame = encode_btp(ilp_message(42, encode_packet(prepare_to("test.x"))))
        await ws.send_bytes(frame)
        await ws.send_bytes(frame)  # a repeat while the first is still being processed
        first = (await ws.receive(timeout=2)).data
        second = (await ws.receive(timeout=2)).data
        await ws.send_bytes(frame)  # a repeat after it was answered
        third = (await ws.receive(timeout=2)).data
        assert first == second == third
        assert calls == 1
        # different bytes under a cached id are refused
        other = encode_btp(ilp_message(42, encode_packet(prepare_to("test.y"))))
        await ws.send_bytes(other)
        error = decode_btp((await ws.receive(timeout=2)).data)
        assert isinstance(error, BtpError) and error.code == "F00"
    finally:
        await ws.close()
        await http.close()


async def test_client_link_answers_malformed_frames_from_its_parent_and_stays_up() -> None:
    """The receiver's side: a parent sending garbage gets BTP Errors / F01, link stays up."""
    port = free_port()
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    sends: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        auth = decode_btp((await ws.receive()).data)
        await ws.send_bytes(encode_btp(BtpResponse(auth.request_id, ())))

        async def pump() -> None:
            while True:
                await ws.send_bytes(await sends.get())

        pumping = asyncio.create_task(pump())
        try:
            async for msg in ws:
                frame = decode_btp(msg.data)
                entry = find_protocol_data(frame, "ilp")
                if isinstance(frame, BtpMessage) and entry is not None:
                    # IL-DCP from the client
                    prepare = decode_prepare(entry.data)
                    info = IldcpResponse("test.parent.kid", 9, "XYZ")
                    reply = ildcp_serve(
                        prepare, info, server_address="test.parent", now=datetime.now(UTC)
                    )
                    await ws.send_bytes(
                        encode_btp(
                            BtpResponse(
                                frame.request_id, (ProtocolData("ilp", 0, encode_packet(reply)),)
                            )
                        )
                    )
                else:
                    await answers.put(msg.data)
        finally:
            pumping.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    link = BtpClientLink(f"btp+ws://kid:tok@127.0.0.1:{port}", reconnect=FAST)
    uplink = Uplink(link)

    async def accept(prepare: IlpPrepare) -> IlpReply:
        return IlpFulfill(bytes(32), b"ok")

    link.set_handler(accept)
    try:
        await uplink.start()
        assert link.is_connected
        await sends.put(bytes.fromhex("0600000011ff"))  # truncated frame, request id 17
        error = decode_btp(await asyncio.wait_for(answers.get(), 2))
        assert isinstance(error, BtpError) and error.code == "F01" and error.request_id == 17
        await sends.put(encode_btp(ilp_message(18, b"\x0c\x02\x00\x00")))  # malformed ILP
        response = decode_btp(await asyncio.wait_for(answers.get(), 2))
        assert isinstance(response, BtpResponse) and response.request_id == 18
        entry = find_protocol_data(response, "ilp")
        assert entry is not None
        reject = decode_reply(entry.data)
        assert isinstance(reject, IlpReject) and reject.code == "F01"
        assert reject.triggered_by == "test.parent.kid"
        # still up: a valid Prepare is answered by the handler
        await sends.put(encode_btp(ilp_message(19, encode_packet(prepare_to("test.parent.kid")))))
        response = decode_btp(await asyncio.wait_for(answers.get(), 2))
        entry = find_protocol_data(response, "ilp")
        assert entry is not None
        assert decode_reply(entry.data) == IlpFulfill(bytes(32), b"ok")
        assert link.is_connected and link.connections == 1
    finally:
        await uplink.stop()
        await runner.cleanup()


class _FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.backlog = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.backlog


class _FakeWebSocket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


async def test_frame_sender_writes_the_first_frame_at_once_and_coalesces_the_rest() -> None:
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(ws, transport)  # type: ignore[arg-type]
    frame = bytes((0x82, 1))  # unmasked binary frame header for a 1-byte payload
    await sender.send(b"a")
    assert transport.writes == [frame + b"a"]  # no waiting for the iteration to end
    await sender.send(b"b")
    await sender.send(b"c")
    assert len(transport.writes) == 1  # queued behind the first
    await asyncio.sleep(0)
    assert transport.writes == [frame + b"a", frame + b"b" + frame + b"c"]  # one write, in order
    await sender.send(b"d")  # a new iteration: straight out again
    assert transport.writes[-1] == frame + b"d"
    await asyncio.sleep(0)
    transport.backlog = 1  # backed up: aiohttp's own flow control takes over
    await sender.send(b"e")
    assert ws.sent == [b"e"] and len(transport.writes) == 3


async def test_frame_sender_without_immediate_first_writes_once_per_iteration() -> None:
    """What the connector uses: every frame of an iteration leaves in one write at its end."""
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(ws, transport, immediate_first=False)  # type: ignore[arg-type]
    frame = bytes((0x82, 1))
    await sender.send(b"a")
    assert transport.writes == []  # not yet: the iteration is not over
    await sender.send(b"b")
    await asyncio.sleep(0)
    assert transport.writes == [frame + b"a" + frame + b"b"]  # one write, in order
    await sender.send(b"c")  # a lone frame of the next iteration: still one write
    await asyncio.sleep(0)
    assert transport.writes == [frame + b"a" + frame + b"b", frame + b"c"]
    transport.backlog = 1  # backed up: aiohttp's own flow control takes over
    await sender.send(b"d")
    assert ws.sent == [b"d"] and len(transport.writes) == 2


async def test_frames_queued_when_the_connection_closes_are_counted_as_dropped() -> None:
    """Frames waiting for the end of the iteration when the connection closes are not
    written, and the session hears how many (its ``undelivered`` count)."""
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(ws, transport, immediate_first=False)  # type: ignore[arg-type]
    dropped: list[int] = []
    sender.on_dropped = dropped.append
    await sender.send(b"a")
    await sender.send(b"b")
    transport.closing = True  # closes before the iteration ends
    await asyncio.sleep(0)
    assert transport.writes == [] and dropped == [2]
