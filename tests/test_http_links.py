"""ILP over HTTP / HTTP-OER-SYNC / HTTP-OER-ASYNC links (ilp_receiver.links.http) on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_reply,
    encode_packet,
)
from ilp_receiver.errors import (
    AuthenticationError,
    ConfigError,
    IlpError,
    LinkClosedError,
    LinkTimeoutError,
    RemoteProtocolError,
)
from ilp_receiver.links.factory import open_link
from ilp_receiver.links.http import (
    HttpAsyncLink,
    HttpLink,
    HttpStatusError,
    HttpSyncLink,
    add_http_oer_routes,
    make_http_oer_handler,
    parse_http_url,
)

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
A_TO_B = "token-a-to-b"
B_TO_A = "token-b-to-a"


def prepare(
    seconds: float = 10.0, destination: str = "test.b.alice", amount: int = 1000
) -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
    return IlpPrepare(
        amount=amount,
        expires_at=expires,
        execution_condition=CONDITION,
        destination=destination,
        data=b"hello",
    )


class Recorder:
    """A handler that fulfils (or answers ``reply``) and counts calls."""

    def __init__(self, reply: IlpReply | None = None, delay: float = 0.0) -> None:
        self.calls: list[IlpPrepare] = []
        self.reply = reply
        self.delay = delay

    async def __call__(self, packet: IlpPrepare) -> IlpReply:
        self.calls.append(packet)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.reply or IlpFulfill(FULFILLMENT, b"paid:" + packet.data)


async def never(packet: IlpPrepare) -> IlpReply:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def make_pair(cls: type[HttpLink], **options: object) -> tuple[HttpLink, HttpLink]:
    options.setdefault("shutdown_grace", 0.1)
    a = cls(None, token=A_TO_B, incoming_token=B_TO_A, listen_port=0, **options)  # type: ignore[arg-type]
    b = cls(None, token=B_TO_A, incoming_token=A_TO_B, listen_port=0, **options)  # type: ignore[arg-type]
    await a.start()
    await b.start()
    a.peer_url, b.peer_url = b.server_url, a.server_url
    a.local_address, b.local_address = "test.a", "test.b"
    return a, b


@pytest.fixture
async def sync_pair() -> AsyncIterator[tuple[HttpLink, HttpLink]]:
    a, b = await make_pair(HttpSyncLink)
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
async def async_pair() -> AsyncIterator[tuple[HttpLink, HttpLink]]:
    a, b = await make_pair(HttpAsyncLink)
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture(params=["sync", "async"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[HttpLink, HttpLink]]:
    cls: type[HttpLink] = HttpSyncLink if request.param == "sync" else HttpAsyncLink
    a, b = await make_pair(cls)
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_peer() -> AsyncIterator[Callable[[Route], Awaitable[str]]]:
    """Start a plain aiohttp server answering every path with a given handler."""
    runners: list[web.AppRunner] = []

    async def start(route: Route) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", route)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/"

    yield start
    for runner in runners:
        await runner.cleanup()


def post_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}


# -- both links -------------------------------------------------------------------------


async def test_prepare_fulfill_both_directions(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    on_b, on_a = Recorder(), Recorder()
    b.set_handler(on_b)
    a.set_handler(on_a)
    p = prepare()
    reply = await a.send(p)
    assert reply == IlpFulfill(FULFILLMENT, b"paid:hello")
    assert on_b.calls == [p]
    reply = await b.send(prepare(destination="test.a.bob"))
    assert isinstance(reply, IlpFulfill)
    assert [c.destination for c in on_a.calls] == ["test.a.bob"]


async def test_reject_passes_through_unchanged(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    reject = IlpReject(code="F99", triggered_by="test.b", message="no", data=b"\x01\x02")
    b.set_handler(Recorder(reject))
    assert await a.send(prepare()) == reject


async def test_many_concurrent_sends(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    recorder = Recorder(delay=0.01)
    b.set_handler(recorder)
    replies = await asyncio.gather(*(a.send(prepare(amount=i + 1)) for i in range(50)))
    assert all(isinstance(r, IlpFulfill) for r in replies)
    assert sorted(c.amount for c in recorder.calls) == list(range(1, 51))


async def test_handler_exception_becomes_t00_and_ilp_error_keeps_code(
    pair: tuple[HttpLink, HttpLink],
) -> None:
    a, b = pair

    async def broken(packet: IlpPrepare) -> IlpReply:
        raise ValueError("boom")

    b.set_handler(broken)
    reply = await a.send(prepare())
    assert isinstance(reply, IlpReject)
    assert (reply.code, reply.triggered_by, reply.message) == ("T00", "test.b", "internal error")

    async def refusing(packet: IlpPrepare) -> IlpReply:
        raise IlpError("F99", "sold out")

    b.set_handler(refusing)
    reply = await a.send(prepare())
    assert isinstance(reply, IlpReject)
    assert (reply.code, reply.message) == ("F99", "sold out")


async def test_no_handler_gives_f02(pair: tuple[HttpLink, HttpLink]) -> None:
    a, _ = pair
    reply = await a.send(prepare())
    assert isinstance(reply, IlpReject)
    assert reply.code == "F02"


async def test_peer_that_never_answers_times_out_at_expiry(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    b.set_handler(never)
    started = time.monotonic()
    with pytest.raises(LinkTimeoutError):
        await a.send(prepare(seconds=0.4))
    assert 0.3 < time.monotonic() - started < 2.0


async def test_explicit_timeout_overrides_expiry(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    b.set_handler(never)
    started = time.monotonic()
    with pytest.raises(LinkTimeoutError):
        await a.send(prepare(seconds=30), timeout=0.3)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("cls", [HttpSyncLink, HttpAsyncLink])
async def test_dead_peer_raises_link_closed_promptly(cls: type[HttpLink]) -> None:
    link = cls(f"http://127.0.0.1:{free_port()}/", token="t")
    await link.start()
    try:
        started = time.monotonic()
        with pytest.raises(LinkClosedError):
            await link.send(prepare(seconds=30))
        assert time.monotonic() - started < 1.0
    finally:
        await link.stop()


@pytest.mark.parametrize("cls", [HttpSyncLink, HttpAsyncLink])
async def test_send_before_start_or_without_peer_url(cls: type[HttpLink]) -> None:
    link = cls("http://127.0.0.1:1/", token="t")
    with pytest.raises(LinkClosedError):
        await link.send(prepare())
    link = cls(None, token="t")
    await link.start()
    try:
        assert link.is_connected
        with pytest.raises(LinkClosedError):
            await link.send(prepare())
    finally:
        await link.stop()
    assert not link.is_connected


async def test_stop_fails_in_flight_send(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    b.set_handler(never)
    task = asyncio.create_task(a.send(prepare(seconds=30)))
    await asyncio.sleep(0.2)
    await a.stop()
    with pytest.raises(LinkClosedError):
        await asyncio.wait_for(task, 2)


async def test_wrong_token_raises_authentication_error(pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = pair
    b.set_handler(Recorder())
    a._token = "wrong"
    with pytest.raises(AuthenticationError):
        await a.send(prepare())


async def test_connect_callbacks_run_on_start_and_failure_stops() -> None:
    seen: list[str] = []
    link = HttpSyncLink(None, token="t", listen_port=0)

    async def callback() -> None:
        seen.append("called")
        assert link.server_url is not None

    link.on_connect(callback)
    await link.start()
    assert seen == ["called"]
    await link.stop()

    failing = HttpSyncLink(None, token="t", listen_port=0)

    async def fail() -> None:
        raise LinkClosedError("IL-DCP failed")

    failing.on_connect(fail)
    with pytest.raises(LinkClosedError):
        await failing.start()
    assert failing.server_url is None
    assert not failing.is_connected


async def test_listen_port_in_use_is_a_clear_error() -> None:
    first = HttpSyncLink(None, token="t", listen_port=0)
    await first.start()
    try:
        assert first.listen_address is not None
        second = HttpSyncLink(None, token="t", listen_port=first.listen_address[1])
        with pytest.raises(Exception, match="cannot listen"):
            await second.start()
    finally:
        await first.stop()


# -- incoming side: the HTTP surface ----------------------------------------------------


@pytest.mark.parametrize("cls", [HttpSyncLink, HttpAsyncLink])
async def test_get_is_a_health_check(cls: type[HttpLink], client: aiohttp.ClientSession) -> None:
    link = cls(None, token="t", listen_port=0)
    await link.start()
    try:
        url = link.server_url
        assert url is not None
        for path in ("", "ilp/abc"):
            async with client.get(url + path) as response:
                assert response.status == 200
                assert await response.read() == b"OK"
        async with client.put(url) as response:
            assert response.status == 405
    finally:
        await link.stop()


@pytest.mark.parametrize("cls", [HttpSyncLink, HttpAsyncLink])
async def test_bad_token_gets_401_json(cls: type[HttpLink], client: aiohttp.ClientSession) -> None:
    link = cls(None, token="good", listen_port=0)
    link.set_handler(Recorder())
    await link.start()
    try:
        url = f"{link.server_url}ilp/x1"
        body = encode_packet(prepare())
        for headers in ({"Authorization": "Bearer bad"}, {}, {"Authorization": "good-ish"}):
            async with client.post(url, data=body, headers=headers) as response:
                assert response.status == 401
                assert response.content_type == "application/json"
                assert (await response.json())["message"] == "invalid authorization"
        # "the server strips an optional Bearer prefix before checking. Accept both."
        for n, value in enumerate(("Bearer good", "good", "bearer good")):
            async with client.post(
                f"{link.server_url}ilp/ok{n}", data=body, headers={"Authorization": value}
            ) as response:
                assert response.status == 200, value
    finally:
        await link.stop()


def test_token_check_strips_bearer() -> None:
    link = HttpSyncLink(None, token="s3cret")
    assert link.check_authorization("Bearer s3cret")
    assert link.check_authorization("s3cret")
    assert not link.check_authorization("Bearer s3cre")
    assert not link.check_authorization("")
    no_token = HttpSyncLink(None)  # may send (without credentials) but accepts nobody
    assert not no_token.check_authorization("")
    assert not no_token.check_authorization("Bearer ")


def test_a_listening_link_needs_an_incoming_token() -> None:
    with pytest.raises(ConfigError):
        HttpSyncLink(None, listen_port=0)
    with pytest.raises(ConfigError):
        HttpSyncLink(None, token="t", listen_port=0, listen_path="ilp")


async def test_sync_accepts_any_content_type(
    sync_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession
) -> None:
    _, b = sync_pair
    b.set_handler(Recorder())
    for content_type in ("application/ilp+octet-stream", "application/octet-stream", "text/plain"):
        async with client.post(
            b.server_url or "",
            data=encode_packet(prepare()),
            headers={"Authorization": f"Bearer {A_TO_B}", "Content-Type": content_type},
        ) as response:
            assert response.status == 200
            assert response.content_type == "application/octet-stream"
            assert isinstance(decode_reply(await response.read()), IlpFulfill)


@pytest.mark.parametrize("request_id", [None, "dest-1"])
async def test_sync_ilp_destination_that_disagrees_is_rejected_f00(
    sync_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession, request_id: str | None
) -> None:
    # The header is advisory (absent: fine; equal: fine); one that names another
    # destination than the packet is refused without running the handler.
    _, b = sync_pair
    recorder = Recorder()
    b.set_handler(recorder)
    url = (b.server_url or "") + (f"ilp/{request_id}" if request_id else "")
    packet = encode_packet(prepare(destination="test.b.alice"))
    async with client.post(
        url, data=packet, headers={**post_headers(A_TO_B), "ILP-Destination": "test.b.mallory"}
    ) as response:
        assert response.status == 200
        reply = decode_reply(await response.read())
    assert isinstance(reply, IlpReject)
    assert (reply.code, reply.triggered_by) == ("F00", "test.b")
    assert "ILP-Destination" in reply.message
    assert recorder.calls == []
    for headers in ({"ILP-Destination": "test.b.alice"}, {}):
        async with client.post(
            (b.server_url or "") + (f"ilp/{request_id}-ok{len(headers)}" if request_id else ""),
            data=packet,
            headers={**post_headers(A_TO_B), **headers},
        ) as response:
            assert isinstance(decode_reply(await response.read()), IlpFulfill)
    assert len(recorder.calls) == 2


async def test_async_ilp_destination_that_disagrees_gets_f00_posted_back(
    async_pair: tuple[HttpLink, HttpLink],
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    _, b = async_pair
    answers: list[bytes] = []
    arrived = asyncio.Event()

    async def route(request: web.Request) -> web.StreamResponse:
        answers.append(await request.read())
        arrived.set()
        return web.Response(text="")

    b.peer_url = await fake_peer(route)
    recorder = Recorder()
    b.set_handler(recorder)
    async with client.post(
        f"{b.server_url}ilp/dest-2",
        data=encode_packet(prepare()),
        headers={**post_headers(A_TO_B), "ILP-Destination": "test.elsewhere"},
    ) as response:
        assert response.status == 200
    await asyncio.wait_for(arrived.wait(), 5)
    reply = decode_reply(answers[0])
    assert isinstance(reply, IlpReject)
    assert reply.code == "F00"
    assert recorder.calls == []


@pytest.mark.parametrize(
    "body", [b"", b"\x0c\x05abc", b"garbage", encode_packet(IlpFulfill(FULFILLMENT))]
)
async def test_sync_malformed_body_is_200_with_f01(
    sync_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession, body: bytes
) -> None:
    _, b = sync_pair
    recorder = Recorder()
    b.set_handler(recorder)
    async with client.post(b.server_url or "", data=body, headers=post_headers(A_TO_B)) as response:
        assert response.status == 200
        reply = decode_reply(await response.read())
    assert isinstance(reply, IlpReject)
    assert reply.code == "F01"
    assert reply.triggered_by == "test.b"
    assert recorder.calls == []


@pytest.mark.parametrize("cls", [HttpSyncLink, HttpAsyncLink])
async def test_body_over_32767_bytes_is_413(
    cls: type[HttpLink], client: aiohttp.ClientSession
) -> None:
    link = cls(None, token="t", listen_port=0)
    await link.start()
    try:
        big = b"\x0c" + bytes(32767)
        async with client.post(
            f"{link.server_url}ilp/big", data=big, headers=post_headers("t")
        ) as r:
            assert r.status == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield bytes(1000)

        async with client.post(
            f"{link.server_url}ilp/big2", data=chunks(), headers=post_headers("t")
        ) as r:
            assert r.status == 413
    finally:
        await link.stop()


async def test_stopped_link_refuses_and_bad_request_id(client: aiohttp.ClientSession) -> None:
    link = HttpSyncLink(None, token="t", listen_port=0)
    await link.start()
    try:
        url = link.server_url
        async with client.post(f"{url}ilp/{'x' * 200}", data=b"", headers=post_headers("t")) as r:
            assert r.status == 400
    finally:
        await link.stop()
    # the handler mounted elsewhere answers 502 "server is closed" while the link is stopped
    app = web.Application()
    app.router.add_post("/", make_http_oer_handler(link))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with client.post(f"http://127.0.0.1:{port}/", headers=post_headers("t")) as r:
            assert r.status == 502
            assert await r.text() == "server is closed"
    finally:
        await runner.cleanup()


# -- outgoing side: what goes on the wire -----------------------------------------------


async def test_sync_request_headers(fake_peer: Callable[[Route], Awaitable[str]]) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def route(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, dict(request.headers), await request.read()))
        return web.Response(body=encode_packet(IlpFulfill(FULFILLMENT)))

    url = await fake_peer(route)
    link = open_link(f"http+oer://myname:tok%40en@{url[7:]}peer")
    assert isinstance(link, HttpSyncLink)
    await link.start()
    try:
        p = prepare()
        assert await link.send(p) == IlpFulfill(FULFILLMENT)
        path, headers, body = seen[-1]
        assert path == "/peer"
        assert body == encode_packet(p)
        assert headers["Content-Type"] == "application/ilp+octet-stream"
        assert headers["Authorization"] == "Bearer tok@en"
        assert headers["ILP-Destination"] == "test.b.alice"
        assert headers["ILP-Peer-Name"] == "myname"
    finally:
        await link.stop()

    legacy = open_link(f"http+oer://tok@{url[7:]}?bearer=0&destination_header=0")
    await legacy.start()
    try:
        await legacy.send(prepare())
        path, headers, _ = seen[-1]
        assert path == "/"
        assert headers["Authorization"] == "tok"
        assert "ILP-Destination" not in headers
        assert "ILP-Peer-Name" not in headers
    finally:
        await legacy.stop()


async def test_sync_non_200_and_bad_body(fake_peer: Callable[[Route], Awaitable[str]]) -> None:
    answers: list[web.Response] = []

    async def route(request: web.Request) -> web.StreamResponse:
        await request.read()
        return answers.pop(0)

    url = await fake_peer(route)
    link = HttpSyncLink(url, token="t")
    await link.start()
    try:
        answers.append(web.Response(status=502, text="no handler registered."))
        with pytest.raises(HttpStatusError) as info:
            await link.send(prepare())
        assert info.value.status == 502
        answers.append(web.Response(status=401, text="invalid authorization"))
        with pytest.raises(AuthenticationError):
            await link.send(prepare())
        answers.append(web.Response(body=b"not a packet"))
        with pytest.raises(RemoteProtocolError):
            await link.send(prepare())
    finally:
        await link.stop()


async def test_an_oversized_answer_is_refused_without_reading_it_all(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    # every network input is bounded: a peer answering with megabytes is a protocol error
    async def route(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=bytes(8 * 1024 * 1024))

    link = HttpSyncLink(await fake_peer(route), token="t")
    await link.start()
    try:
        with pytest.raises(RemoteProtocolError, match="over 32767 bytes"):
            await link.send(prepare())
    finally:
        await link.stop()


async def test_sync_request_ids_form_repeats_same_id(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    seen: list[tuple[str, bytes]] = []

    async def route(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, await request.read()))
        if len(seen) == 1:
            return web.Response(status=503)
        return web.Response(body=encode_packet(IlpFulfill(FULFILLMENT)))

    url = await fake_peer(route)
    link = open_link(f"http+oer://t@{url[7:]}base/?request_ids=1")
    await link.start()
    try:
        assert await link.send(prepare()) == IlpFulfill(FULFILLMENT)
    finally:
        await link.stop()
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0][0].startswith("/base/ilp/")
    assert len(seen[0][0]) == len("/base/ilp/") + 36  # a UUID


async def test_sync_request_ids_between_our_links(sync_pair: tuple[HttpLink, HttpLink]) -> None:
    a, b = sync_pair
    assert isinstance(a, HttpSyncLink)
    a.request_ids = True
    recorder = Recorder()
    b.set_handler(recorder)
    assert isinstance(await a.send(prepare()), IlpFulfill)
    assert len(recorder.calls) == 1


# -- idempotent repeats ----------------------------------------------------------------


async def test_sync_repeated_request_id_is_not_executed_twice(
    sync_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession
) -> None:
    _, b = sync_pair
    recorder = Recorder(delay=0.2)
    b.set_handler(recorder)
    url = f"{b.server_url}ilp/3442196b-5fc7-4d60-a17e-a9416a77745b"
    body = encode_packet(prepare())

    async def post(data: bytes) -> bytes:
        async with client.post(url, data=data, headers=post_headers(A_TO_B)) as response:
            assert response.status == 200
            return await response.read()

    # two concurrent POSTs while the first is still being handled, then a late repeat
    first, second = await asyncio.gather(post(body), post(body))
    third = await post(body)
    assert first == second == third
    assert isinstance(decode_reply(first), IlpFulfill)
    assert len(recorder.calls) == 1
    # same id, different packet: refused, handler not called
    other = decode_reply(await post(encode_packet(prepare(amount=5))))
    assert isinstance(other, IlpReject)
    assert other.code == "F00"
    assert len(recorder.calls) == 1


async def test_sync_repeat_after_dropped_connection_gets_cached_result(
    sync_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession
) -> None:
    _, b = sync_pair
    recorder = Recorder(delay=0.3)
    b.set_handler(recorder)
    url = f"{b.server_url}ilp/dropped-1"
    body = encode_packet(prepare())
    with pytest.raises(asyncio.TimeoutError):
        async with client.post(
            url, data=body, headers=post_headers(A_TO_B), timeout=aiohttp.ClientTimeout(total=0.05)
        ):
            pass
    async with client.post(url, data=body, headers=post_headers(A_TO_B)) as response:
        assert isinstance(decode_reply(await response.read()), IlpFulfill)
    assert len(recorder.calls) == 1


async def test_sync_request_ids_are_forgotten_after_ttl(client: aiohttp.ClientSession) -> None:
    now = [0.0]
    link = HttpSyncLink(None, token="t", listen_port=0, cache_ttl=10.0, clock=lambda: now[0])
    recorder = Recorder()
    link.set_handler(recorder)
    await link.start()
    try:
        url = f"{link.server_url}ilp/ttl"
        body = encode_packet(prepare())
        for advance in (0.0, 5.0, 11.0):
            now[0] += advance
            async with client.post(url, data=body, headers=post_headers("t")) as response:
                assert response.status == 200
        assert len(recorder.calls) == 2  # executed again once the id was forgotten
    finally:
        await link.stop()


async def test_sync_request_id_cache_is_bounded(client: aiohttp.ClientSession) -> None:
    link = HttpSyncLink(None, token="t", listen_port=0, cache_size=2)
    recorder = Recorder()
    link.set_handler(recorder)
    await link.start()
    try:
        body = encode_packet(prepare())
        for request_id in ("r1", "r2", "r3", "r3", "r1"):
            async with client.post(
                f"{link.server_url}ilp/{request_id}", data=body, headers=post_headers("t")
            ) as response:
                assert response.status == 200
        assert len(recorder.calls) == 4  # r1 was evicted by r3, so it ran twice
    finally:
        await link.stop()


async def test_async_repeated_prepare_post_is_handled_once(
    async_pair: tuple[HttpLink, HttpLink],
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    _, b = async_pair
    answers: list[tuple[str, bytes]] = []

    async def route(request: web.Request) -> web.StreamResponse:
        answers.append((request.path, await request.read()))
        return web.Response(text="")

    b.peer_url = await fake_peer(route)
    recorder = Recorder()
    b.set_handler(recorder)
    url = f"{b.server_url}ilp/req-1"
    body = encode_packet(prepare())
    for _ in range(3):
        async with client.post(url, data=body, headers=post_headers(A_TO_B)) as response:
            assert response.status == 200
    async with client.post(
        url, data=encode_packet(prepare(amount=7)), headers=post_headers(A_TO_B)
    ) as response:
        assert response.status == 409
    for _ in range(50):
        if answers:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert len(recorder.calls) == 1
    assert len(answers) == 1
    path, reply = answers[0]
    assert path == "/ilp/req-1"
    assert isinstance(decode_reply(reply), IlpFulfill)


async def test_async_reply_for_unknown_request_is_200_and_dropped(
    async_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession
) -> None:
    a, _ = async_pair
    reply = encode_packet(IlpFulfill(FULFILLMENT))
    for _ in range(2):
        async with client.post(
            f"{a.server_url}ilp/never-sent", data=reply, headers=post_headers(B_TO_A)
        ) as response:
            assert response.status == 200
    async with client.post(
        f"{a.server_url}ilp/never-sent", data=b"\x0dbroken", headers=post_headers(B_TO_A)
    ) as response:
        assert response.status == 400
    async with client.post(a.server_url or "", data=reply, headers=post_headers(B_TO_A)) as r:
        assert r.status == 404


async def test_async_malformed_prepare_gets_f01_posted_back(
    async_pair: tuple[HttpLink, HttpLink],
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    _, b = async_pair
    answers: list[bytes] = []

    async def route(request: web.Request) -> web.StreamResponse:
        answers.append(await request.read())
        return web.Response(text="")

    b.peer_url = await fake_peer(route)
    async with client.post(
        f"{b.server_url}ilp/bad-1", data=b"\x0cgarbage", headers=post_headers(A_TO_B)
    ) as response:
        assert response.status == 200
    for _ in range(100):
        if answers:
            break
        await asyncio.sleep(0.02)
    reply = decode_reply(answers[0])
    assert isinstance(reply, IlpReject)
    assert (reply.code, reply.triggered_by) == ("F01", "test.b")


async def test_async_prepare_post_is_repeated_until_200(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    link = HttpAsyncLink(None, token="t", listen_port=0)
    await link.start()
    attempts: list[tuple[str, bytes]] = []
    replies: list[int] = []

    async def deliver(path: str) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # the answer is repeated too; the second is dropped
                async with session.post(
                    f"{link.server_url}{path.lstrip('/')}",
                    data=encode_packet(IlpFulfill(FULFILLMENT, b"x")),
                    headers=post_headers("t"),
                ) as response:
                    replies.append(response.status)

    tasks: set[asyncio.Task[None]] = set()

    async def route(request: web.Request) -> web.StreamResponse:
        attempts.append((request.path, await request.read()))
        if len(attempts) < 3:
            return web.Response(status=503)
        tasks.add(asyncio.create_task(deliver(request.path)))
        return web.Response(text="")

    link.peer_url = await fake_peer(route)
    try:
        assert await link.send(prepare()) == IlpFulfill(FULFILLMENT, b"x")
        await asyncio.gather(*tasks)
    finally:
        await link.stop()
    assert len(attempts) == 3
    assert len({a for a in attempts}) == 1
    assert replies == [200, 200]


async def test_async_peer_that_only_fails_times_out(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    async def route(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    link = HttpAsyncLink(await fake_peer(route), token="t", retry_interval=0.05)
    await link.start()
    try:
        started = time.monotonic()
        with pytest.raises(LinkTimeoutError):
            await link.send(prepare(seconds=0.5))
        assert time.monotonic() - started < 2.0
    finally:
        await link.stop()


async def test_async_client_errors_are_not_repeated(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    calls: list[int] = []

    async def route(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        return web.Response(status=401 if len(calls) == 1 else 404)

    link = HttpAsyncLink(await fake_peer(route), token="t")
    await link.start()
    try:
        with pytest.raises(AuthenticationError):
            await link.send(prepare())
        with pytest.raises(HttpStatusError) as info:
            await link.send(prepare())
        assert info.value.status == 404
    finally:
        await link.stop()
    assert len(calls) == 2


# -- mounting in another application ----------------------------------------------------


async def test_mounted_in_another_app(client: aiohttp.ClientSession) -> None:
    link = HttpSyncLink(None, token="t")  # no server of its own
    recorder = Recorder()
    link.set_handler(recorder)
    await link.start()
    app = web.Application()
    add_http_oer_routes(app.router, link, "/peers/alice/")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/peers/alice/"
        for url in (base, base + "ilp/abc"):
            async with client.post(
                url, data=encode_packet(prepare()), headers=post_headers("t")
            ) as response:
                assert response.status == 200
                assert isinstance(decode_reply(await response.read()), IlpFulfill)
        assert len(recorder.calls) == 2
    finally:
        await runner.cleanup()
        await link.stop()


# -- URLs -------------------------------------------------------------------------------


def test_parse_sync_url() -> None:
    parsed = parse_http_url("http+oer://secret@127.0.0.1:7771/?listen=127.0.0.1:7772")
    assert not parsed.asynchronous
    assert parsed.peer_url == "http://127.0.0.1:7771/"
    assert (parsed.token, parsed.incoming_token, parsed.peer_name) == ("secret", "secret", None)
    assert (parsed.listen_host, parsed.listen_port, parsed.listen_path) == ("127.0.0.1", 7772, "/")
    assert parsed.bearer
    assert parsed.send_destination
    assert not parsed.request_ids
    assert "secret" not in repr(parsed)


def test_parse_url_options() -> None:
    parsed = parse_http_url(
        "https+oer://me:out%2Ftok@example.com/ilp?listen=[::1]:0&incoming_token=in%20tok"
        "&listen_path=/x/&bearer=0&destination_header=no&request_ids=yes"
    )
    assert parsed.peer_url == "https://example.com/ilp"
    assert (parsed.token, parsed.incoming_token, parsed.peer_name) == ("out/tok", "in tok", "me")
    assert (parsed.listen_host, parsed.listen_port, parsed.listen_path) == ("::1", 0, "/x/")
    assert not parsed.bearer
    assert not parsed.send_destination
    assert parsed.request_ids
    only_port = parse_http_url("http+oer-async://t@[::1]:9/base?listen=7000")
    assert only_port.asynchronous
    assert only_port.peer_url == "http://[::1]:9/base"
    assert (only_port.listen_host, only_port.listen_port) == ("127.0.0.1", 7000)
    assert parse_http_url("http+oer://t@h").listen_port is None


@pytest.mark.parametrize(
    "url",
    [
        "http://t@127.0.0.1:1/",
        "http+oer://t@127.0.0.1:1/?listne=1",
        "http+oer://t@127.0.0.1:1/?listen=host:notaport",
        "http+oer://t@127.0.0.1:1/?listen=70000",
        "http+oer://t@127.0.0.1:1/?bearer=maybe",
        "http+oer-async://t@127.0.0.1:1/?request_ids=1",
        "http+oer:///nohost",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_http_url(url)


def test_open_link_picks_http_links() -> None:
    sync = open_link("http+oer://t@127.0.0.1:7771/?listen=127.0.0.1:7772")
    assert isinstance(sync, HttpSyncLink)
    assert sync.peer_url == "http://127.0.0.1:7771/"
    assert isinstance(open_link("https+oer://t@h/"), HttpSyncLink)
    asynchronous = open_link("http+oer-async://t@127.0.0.1:7771?listen=7772", cache_size=5)
    assert isinstance(asynchronous, HttpAsyncLink)
    assert asynchronous.peer_url == "http://127.0.0.1:7771/"
    assert isinstance(open_link("https+oer-async://t@h/"), HttpAsyncLink)
    with pytest.raises(ConfigError):
        HttpSyncLink.from_url("http+oer-async://t@h/")
    with pytest.raises(ConfigError):
        HttpAsyncLink.from_url("http+oer://t@h/")
    with pytest.raises(ConfigError):
        open_link("ftp://h/")


async def test_ildcp_style_round_trip_with_json_free_401(
    sync_pair: tuple[HttpLink, HttpLink],
) -> None:
    """The 401 body is JSON (machine-readable) and names the ilp-plugin-http message."""
    _, b = sync_pair
    async with aiohttp.ClientSession() as session, session.post(b.server_url or "") as response:
        assert response.status == 401
        assert json.loads(await response.text()) == {
            "error": "Unauthorized",
            "message": "invalid authorization",
        }
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_async_answer_is_redelivered_until_the_peer_is_back(
    async_pair: tuple[HttpLink, HttpLink], client: aiohttp.ClientSession
) -> None:
    _, b = async_pair
    b.set_handler(Recorder())
    port = free_port()
    b.peer_url = f"http://127.0.0.1:{port}/"  # nobody listens there yet
    async with client.post(
        f"{b.server_url}ilp/late-1", data=encode_packet(prepare()), headers=post_headers(A_TO_B)
    ) as response:
        assert response.status == 200
    await asyncio.sleep(0.3)
    answers: list[bytes] = []

    async def route(request: web.Request) -> web.StreamResponse:
        answers.append(await request.read())
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/ilp/{request_id}", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for _ in range(150):
            if answers:
                break
            await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert len(answers) == 1
    assert isinstance(decode_reply(answers[0]), IlpFulfill)


async def test_octet_stream_option_and_any_2xx_answer(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    # what a Rafiki peer needs: the RFC's Content-Type, and its 201 taken as the answer
    seen: list[str] = []

    async def route(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers["Content-Type"])
        return web.Response(status=201, body=encode_packet(IlpFulfill(FULFILLMENT)))

    url = await fake_peer(route)
    for option, expected in (("?octet_stream=1", "application/octet-stream"), ("", None)):
        link = open_link(f"http+oer://tok@{url[7:]}{option}")
        await link.start()
        try:
            assert await link.send(prepare()) == IlpFulfill(FULFILLMENT)
        finally:
            await link.stop()
        assert seen[-1] == (expected or "application/ilp+octet-stream")
    with pytest.raises(ConfigError):
        HttpSyncLink("http://x/", content_type="text/plain")
