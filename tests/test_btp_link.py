"""BTP client link against our own BTP server over real loopback WebSockets."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    encode_ilp_message,
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
    encode_prepare,
)
from ilp_receiver.errors import AuthenticationError, LinkClosedError
from ilp_receiver.links import btp_client
from ilp_receiver.links.base import reply_channel
from ilp_receiver.links.btp_client import BtpClientLink, ReconnectPolicy, _TransportKeepingWebSocket
from ilp_receiver.links.btp_server import BtpServer, BtpServerLink
from ilp_receiver.links.btp_session import BtpSession
from ilp_receiver.links.btp_url import parse_btp_url
from ilp_receiver.links.uplink import Uplink
from ilp_receiver.links.websocket_frames import (
    FrameSender,
    binary_frame,
    masked_binary_frame,
    masked_binary_frames,
)

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


# -- masked client frames ---------------------------------------------------------------


def parse_ws_frames(buf: bytes) -> list[tuple[int, bytes | None, bytes]]:
    """An RFC 6455 section 5.2 frame parser written apart from the code under test:
    (first byte, mask key or None, unmasked payload) per frame; the buffer must end on a
    frame boundary."""
    frames: list[tuple[int, bytes | None, bytes]] = []
    i = 0
    while i < len(buf):
        first, second = buf[i], buf[i + 1]
        length, i = second & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(buf[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(buf[i : i + 8], "big"), i + 8
        key = None
        if second & 0x80:
            key, i = buf[i : i + 4], i + 4
        payload = buf[i : i + length]
        assert len(payload) == length, "a frame cut short"
        i += length
        if key is not None:
            payload = bytes(b ^ key[j % 4] for j, b in enumerate(payload))
        frames.append((first, key, payload))
    return frames


@pytest.mark.parametrize("length", [0, 1, 5, 125, 126, 65535, 65536])
def test_a_masked_frame_round_trips_through_an_rfc6455_parser(length: int) -> None:
    payload = os.urandom(length)
    key = os.urandom(4)
    frame = masked_binary_frame(payload, key)
    assert parse_ws_frames(frame) == [(0x82, key, payload)]
    if length >= 4:
        assert payload not in frame  # really masked
    header = 2 if length < 126 else 4 if length < 65536 else 10
    assert len(frame) == header + 4 + length
    assert binary_frame(payload)[header:] == payload  # the server's: unmasked, same header
    assert parse_ws_frames(binary_frame(payload)) == [(0x82, None, payload)]


def test_a_batch_of_masked_frames_round_trips_with_a_key_each() -> None:
    payloads = [os.urandom(n) for n in (0, 125, 126, 65535, 65536, 3, 200)]
    keys = os.urandom(4 * len(payloads))
    frames = parse_ws_frames(masked_binary_frames(payloads, keys))
    assert frames == [(0x82, keys[4 * i : 4 * i + 4], p) for i, p in enumerate(payloads)]
    assert parse_ws_frames(masked_binary_frames(payloads[:1], keys[:4])) == frames[:1]


@pytest.mark.parametrize("immediate_first", [True, False])
async def test_a_masked_frame_sender_uses_a_fresh_key_per_frame_and_batch(
    immediate_first: bool,
) -> None:
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(
        ws,
        transport,  # type: ignore[arg-type]
        immediate_first=immediate_first,
        masked=True,
    )
    sent: list[bytes] = []
    for _ in range(3):  # three iterations: the first frame at once, the rest batched
        for _ in range(4):
            data = os.urandom(30)
            sent.append(data)
            await sender.send(data)
        await asyncio.sleep(0)
    # two writes per iteration (the first frame at once), or one at its end
    assert len(transport.writes) == (6 if immediate_first else 3)
    frames = [f for write in transport.writes for f in parse_ws_frames(write)]
    assert [payload for _, _, payload in frames] == sent  # whole, in order
    keys = [key for _, key, _ in frames]
    assert None not in keys and len(set(keys)) == len(keys)


async def test_a_masked_frame_sender_hands_frames_to_send_bytes_when_backed_up() -> None:
    """Flow control: with bytes waiting in the transport, the frames queued so far go
    out first and the new one through aiohttp's send_bytes (which masks it itself)."""
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(ws, transport, masked=True)  # type: ignore[arg-type]
    await sender.send(b"a")  # the iteration's first: written at once
    await sender.send(b"b")  # queued for the end of the iteration
    transport.backlog = 10
    await sender.send(b"c")
    await sender.send(b"d")
    written = [payload for w in transport.writes for _, _, payload in parse_ws_frames(w)]
    assert written == [b"a", b"b"] and ws.sent == [b"c", b"d"]  # in order, nothing lost
    transport.backlog = 0
    await asyncio.sleep(0)
    await sender.send(b"e")
    assert [payload for _, _, payload in parse_ws_frames(transport.writes[-1])] == [b"e"]


@pytest.fixture
def socket_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bytes]]:
    """Every ``send``/``sendmsg`` this process makes, as (own port, peer port, bytes):
    the socket writes themselves, whoever makes them."""
    seen: list[tuple[int, int, bytes]] = []
    send, sendmsg = socket.socket.send, socket.socket.sendmsg

    def ports(sock: socket.socket) -> tuple[int, int]:
        try:
            return int(sock.getsockname()[1]), int(sock.getpeername()[1])
        except OSError:
            return 0, 0

    def counting_send(self: socket.socket, data: bytes, *args: int) -> int:
        n = send(self, data, *args)
        seen.append((*ports(self), bytes(data)[:n]))
        return n

    def counting_sendmsg(self: socket.socket, buffers: list[bytes], *args: Any) -> int:
        n = sendmsg(self, buffers, *args)
        seen.append((*ports(self), b"".join(bytes(b) for b in buffers)[:n]))
        return n

    monkeypatch.setattr(socket.socket, "send", counting_send)
    monkeypatch.setattr(socket.socket, "sendmsg", counting_sendmsg)
    return seen


async def test_the_client_link_answers_a_burst_in_fewer_writes_than_answers(
    parent: FakeParent, socket_sends: list[tuple[int, int, bytes]]
) -> None:
    """Prepares arriving together are answered with masked frames, several per socket
    write, each answer intact, with its request's id, in the order the requests came."""
    link = BtpClientLink(f"btp+ws://alice:secret@127.0.0.1:{parent.port}", reconnect=FAST)

    async def echo(prepare: IlpPrepare) -> IlpReply:
        return IlpFulfill(bytes(32), prepare.data)

    link.set_handler(echo)
    await Uplink(link).start()
    try:
        server_link = parent.links["alice"]
        burst = 40
        del socket_sends[:]
        prepares = [
            dataclasses.replace(prepare_to("test.parent.alice"), data=b"p%d" % i)
            for i in range(burst)
        ]
        replies = await asyncio.gather(*(server_link.send(p) for p in prepares))
        assert replies == [IlpFulfill(bytes(32), p.data) for p in prepares]

        def messages(frames: list[tuple[int, bytes | None, bytes]]) -> list[tuple[int, bytes]]:
            """(request id, ILP packet) of each BTP frame."""
            out: list[tuple[int, bytes]] = []
            for first, _, payload in frames:
                assert first == 0x82  # FIN, binary
                frame = decode_btp(payload)
                entry = find_protocol_data(frame, "ilp")
                assert entry is not None
                out.append((frame.request_id, entry.data))
            return out

        requests = messages(
            parse_ws_frames(b"".join(d for own, _, d in socket_sends if own == parent.port))
        )
        writes = [data for _, peer, data in socket_sends if peer == parent.port]
        frames = parse_ws_frames(b"".join(writes))
        assert all(key is not None for _, key, _ in frames)  # masked
        answers = messages(frames)
        assert len(requests) == len(answers) == burst
        # answered in the order the Prepares came, each with its own request id and data
        assert [rid for rid, _ in answers] == [rid for rid, _ in requests]
        for (_, prepare), (_, reply) in zip(requests, answers, strict=True):
            assert decode_reply(reply) == IlpFulfill(bytes(32), decode_prepare(prepare).data)
        assert len(writes) < burst // 2  # coalesced: the old client made one write each
    finally:
        await link.stop()


async def test_the_client_link_falls_back_to_send_bytes_without_a_transport(
    parent: FakeParent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If aiohttp ever hands the WebSocket response no usable transport, answers still
    go out, through send_bytes."""
    keep = _TransportKeepingWebSocket.__init__

    def without_transport(self: _TransportKeepingWebSocket, *args: Any, **kwargs: Any) -> None:
        keep(self, *args, **kwargs)
        self.frame_transport = None

    monkeypatch.setattr(_TransportKeepingWebSocket, "__init__", without_transport)
    built: list[object] = []
    monkeypatch.setattr(btp_client, "FrameSender", lambda *a, **k: built.append(a))
    link = BtpClientLink(f"btp+ws://alice:secret@127.0.0.1:{parent.port}", reconnect=FAST)

    async def echo(prepare: IlpPrepare) -> IlpReply:
        return IlpFulfill(bytes(32), prepare.data)

    link.set_handler(echo)
    await Uplink(link).start()
    try:
        replies = await asyncio.gather(
            *(parent.links["alice"].send(prepare_to("test.parent.alice")) for _ in range(5))
        )
        assert replies == [IlpFulfill(bytes(32), b"hello")] * 5
        assert built == []
    finally:
        await link.stop()


def test_the_client_websocket_keeps_only_a_real_transport() -> None:
    """What the response class keeps of the writer aiohttp gives it: its transport if
    that is an asyncio.Transport, else nothing."""

    class Writer:
        def __init__(self, transport: object) -> None:
            self.transport = transport

    class Response:
        connection = None

    def made(writer: object) -> _TransportKeepingWebSocket:
        loop = asyncio.new_event_loop()
        try:
            return _TransportKeepingWebSocket(
                None,
                writer,  # type: ignore[arg-type]
                None,
                Response(),
                None,
                True,
                True,
                loop,
                heartbeat=None,
            )
        finally:
            loop.close()

    transport = asyncio.Transport()
    assert made(Writer(transport)).frame_transport is transport
    assert made(Writer("not a transport")).frame_transport is None
    assert made(object()).frame_transport is None


async def test_a_dropped_answer_runs_its_own_callback_not_the_count() -> None:
    """An answer queued with a ``dropped`` callback and then not written (the connection
    closed before the iteration ended) calls it -- the session then undoes its credit
    through the Prepare's ReplyChannel -- and only the frames without one are counted."""
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(ws, transport, immediate_first=False)  # type: ignore[arg-type]
    counted: list[int] = []
    lost: list[str] = []
    sender.on_dropped = counted.append
    await sender.send(b"a", lambda: lost.append("a"))
    await sender.send(b"b")
    await sender.send(b"c", lambda: lost.append("c"))
    transport.closing = True
    await asyncio.sleep(0)
    assert transport.writes == [] and lost == ["a", "c"] and counted == [1]


async def test_the_session_undoes_the_credit_of_an_answer_dropped_after_queuing() -> None:
    transport, ws = _FakeTransport(), _FakeWebSocket()
    sender = FrameSender(ws, transport, immediate_first=False)  # type: ignore[arg-type]
    undone: list[bool] = []

    async def handle(prepare: IlpPrepare) -> IlpReply:
        channel = reply_channel()
        assert channel is not None
        channel.on_undelivered(lambda: undone.append(True))
        return IlpReject("F99", "test.us", "")

    session = BtpSession(sender.send, handle, send_answer=sender.send)
    sender.on_dropped = session.count_undelivered
    prepare = IlpPrepare(1, datetime.now(UTC) + timedelta(seconds=30), bytes(32), "test.x", b"")
    session.feed(encode_ilp_message(7, encode_prepare(prepare)))
    await asyncio.sleep(0)  # the handler answers; the answer waits for the iteration's end
    assert transport.writes == [] and undone == []
    transport.closing = True  # ... and the connection closes before it
    await asyncio.sleep(0.01)
    assert transport.writes == [] and undone == [True] and session.undelivered == 1
