"""ILP over HTTP, RFC 35 draft 3 callback mode (``HttpCallbackLink``) on loopback.

* Between two of our links: the Prepare is accepted with ``202`` and the Fulfill comes
  back as a POST to ``Callback-Url`` carrying the same ``Request-Id``.
* The exact headers of both POSTs.
* A repeated Prepare (same ``Request-Id`` and body) is accepted again, not run again;
  another body under that id is ``409``; missing headers are ``400``.
* A callback for an id not in flight, or a second one, is ``400`` and changes nothing.
* A callback endpoint answering 5xx for a while: the reply is repeated until a 2xx and
  then no more; a 4xx ends the repeats.
* The bound on pending requests: one more incoming Prepare is ``503``.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
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
    decode_prepare,
    decode_reply,
    encode_packet,
)
from ilp_receiver.errors import ConfigError
from ilp_receiver.links.factory import open_link
from ilp_receiver.links.http import HttpCallbackLink, parse_http_url

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
A_TO_B = "token-a-to-b"
B_TO_A = "token-b-to-a"


def prepare(seconds: float = 10.0, destination: str = "test.b.alice") -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
    return IlpPrepare(1000, expires, CONDITION, destination, b"hello")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[IlpPrepare] = []

    async def __call__(self, packet: IlpPrepare) -> IlpReply:
        self.calls.append(packet)
        return IlpFulfill(FULFILLMENT, b"paid:" + packet.data)


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait (polling, at most ``limit`` seconds) until ``condition()`` holds."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


async def make_pair(**options: object) -> tuple[HttpCallbackLink, HttpCallbackLink]:
    options.setdefault("shutdown_grace", 0.1)
    a = HttpCallbackLink(None, token=A_TO_B, incoming_token=B_TO_A, listen_port=0, **options)  # type: ignore[arg-type]
    b = HttpCallbackLink(None, token=B_TO_A, incoming_token=A_TO_B, listen_port=0, **options)  # type: ignore[arg-type]
    await a.start()
    await b.start()
    a.peer_url, b.peer_url = b.server_url, a.server_url
    a.local_address, b.local_address = "test.a", "test.b"
    return a, b


@pytest.fixture
async def pair() -> AsyncIterator[tuple[HttpCallbackLink, HttpCallbackLink]]:
    a, b = await make_pair(retry_interval=0.01, max_retry_interval=0.05)
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
    runners: list[web.AppRunner] = []

    async def start(route: Route) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", route)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/callback"

    yield start
    for runner in runners:
        await runner.cleanup()


def prepare_headers(request_id: str, callback: str | None) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {A_TO_B}",
        "Content-Type": "application/octet-stream",
        "Request-Id": request_id,
    }
    if callback is not None:
        headers["Callback-Url"] = callback
    return headers


async def test_prepare_and_callback_between_our_links(
    pair: tuple[HttpCallbackLink, HttpCallbackLink],
) -> None:
    a, b = pair
    recorder = Recorder()
    b.set_handler(recorder)
    a.set_handler(recorder)
    replies = await asyncio.gather(*(a.send(prepare()) for _ in range(20)))
    assert all(r == IlpFulfill(FULFILLMENT, b"paid:hello") for r in replies)
    assert await b.send(prepare(destination="test.a.x")) == IlpFulfill(FULFILLMENT, b"paid:hello")
    assert len(recorder.calls) == 21
    # the sender completes on the callback; the callback's own 200 lands just after
    await until(lambda: (b.callbacks_acknowledged, a.callbacks_acknowledged) == (20, 1))


async def test_exact_headers_of_prepare_and_callback(
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    link = HttpCallbackLink(
        None, token="out", incoming_token="in", listen_port=0, shutdown_grace=0.1
    )
    await link.start()
    try:

        async def route(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            seen.append((request.path, dict(request.headers), body))
            callback = request.headers["Callback-Url"]
            reply = encode_packet(IlpReject("F99", "test.peer", "no", b""))

            async def call_back() -> None:
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        callback,
                        data=reply,
                        headers={
                            "Authorization": "Bearer in",
                            "Content-Type": "application/octet-stream",
                            "Request-Id": request.headers["Request-Id"],
                        },
                    ) as response,
                ):
                    assert response.status == 200

            asyncio.get_running_loop().create_task(call_back())
            return web.Response(status=202)

        link.peer_url = (await fake_peer(route)).replace("/callback", "/incoming/ilp")
        reply = await link.send(prepare(destination="test.peer.bob"))
        assert isinstance(reply, IlpReject)
        assert reply.code == "F99"
    finally:
        await link.stop()
    path, headers, body = seen[0]
    assert path == "/incoming/ilp"
    assert decode_prepare(body).destination == "test.peer.bob"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept"] == "application/octet-stream"
    assert headers["Authorization"] == "Bearer out"
    assert headers["ILP-Destination"] == "test.peer.bob"
    assert headers["Callback-Url"].startswith("http://127.0.0.1:")
    assert uuid.UUID(headers["Request-Id"]).version == 4


async def test_repeated_prepare_is_accepted_not_rerun_and_headers_are_required(
    pair: tuple[HttpCallbackLink, HttpCallbackLink],
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    _, b = pair
    recorder = Recorder()
    b.set_handler(recorder)
    callbacks: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    async def route(request: web.Request) -> web.StreamResponse:
        callbacks.append((request.headers["Request-Id"], await request.read()))
        arrived.set()
        return web.Response(text="")

    callback = await fake_peer(route)
    url = b.server_url or ""
    body = encode_packet(prepare())
    for _ in range(3):
        async with client.post(url, data=body, headers=prepare_headers("rq-1", callback)) as r:
            assert r.status == 202
    async with client.post(
        url, data=encode_packet(prepare(seconds=5)), headers=prepare_headers("rq-1", callback)
    ) as r:
        assert r.status == 409
    for headers in (
        prepare_headers("rq-2", None),
        {k: v for k, v in prepare_headers("rq-2", callback).items() if k != "Request-Id"},
        prepare_headers("rq-2", "ftp://x/"),
        prepare_headers("bad id", callback),
    ):
        async with client.post(url, data=body, headers=headers) as r:
            assert r.status == 400, headers
    await asyncio.wait_for(arrived.wait(), 5)
    await b.stop()  # waits for the processing tasks: no second callback can follow
    assert len(recorder.calls) == 1
    assert len(callbacks) == 1
    assert callbacks[0][0] == "rq-1"
    assert isinstance(decode_reply(callbacks[0][1]), IlpFulfill)


async def test_callback_for_unknown_or_answered_request_is_400(
    client: aiohttp.ClientSession,
) -> None:
    a = HttpCallbackLink(
        None, token=A_TO_B, incoming_token=B_TO_A, listen_port=0, shutdown_grace=0.1
    )
    await a.start()
    reply = encode_packet(IlpFulfill(FULFILLMENT))
    headers = {"Authorization": f"Bearer {B_TO_A}", "Request-Id": "never-sent"}
    try:
        async with client.post(a.server_url or "", data=reply, headers=headers) as r:
            assert r.status == 400
    finally:
        await a.stop()


async def test_second_callback_is_400_and_not_processed(
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    a = HttpCallbackLink(
        None, token=A_TO_B, incoming_token=B_TO_A, listen_port=0, shutdown_grace=0.1
    )
    await a.start()
    statuses: list[int] = []

    async def route(request: web.Request) -> web.StreamResponse:
        callback = request.headers["Callback-Url"]
        headers = {"Authorization": f"Bearer {B_TO_A}", "Request-Id": request.headers["Request-Id"]}

        async def call_back_twice() -> None:
            for packet in (IlpFulfill(FULFILLMENT, b"1"), IlpFulfill(FULFILLMENT, b"2")):
                async with client.post(callback, data=encode_packet(packet), headers=headers) as r:
                    statuses.append(r.status)

        asyncio.get_running_loop().create_task(call_back_twice())
        return web.Response(status=202)

    a.peer_url = await fake_peer(route)
    try:
        assert await a.send(prepare()) == IlpFulfill(FULFILLMENT, b"1")
        for _ in range(200):
            if len(statuses) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await a.stop()
    assert statuses == [200, 400]


async def test_failing_callback_endpoint_is_retried_until_acknowledged(
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    b = HttpCallbackLink(
        None,
        token=B_TO_A,
        incoming_token=A_TO_B,
        listen_port=0,
        shutdown_grace=0.1,
        retry_interval=0.01,
        max_retry_interval=0.05,
    )
    b.set_handler(Recorder())
    await b.start()
    attempts: list[str] = []
    acknowledged = asyncio.Event()

    async def route(request: web.Request) -> web.StreamResponse:
        attempts.append(request.headers["Request-Id"])
        if len(attempts) <= 3:
            return web.Response(status=503)
        acknowledged.set()
        return web.Response(status=200)

    callback = await fake_peer(route)
    try:
        async with client.post(
            b.server_url or "",
            data=encode_packet(prepare()),
            headers=prepare_headers("rq-9", callback),
        ) as r:
            assert r.status == 202
        await asyncio.wait_for(acknowledged.wait(), 5)
    finally:
        await b.stop()  # waits for its delivery task: a fifth POST would be counted
    assert attempts == ["rq-9"] * 4
    assert b.callbacks_acknowledged == 1


async def test_a_4xx_ends_the_callback_repeats(
    client: aiohttp.ClientSession,
    fake_peer: Callable[[Route], Awaitable[str]],
) -> None:
    b = HttpCallbackLink(
        None, token=B_TO_A, incoming_token=A_TO_B, listen_port=0, shutdown_grace=0.1
    )
    b.set_handler(Recorder())
    await b.start()
    attempts: list[int] = []

    async def route(request: web.Request) -> web.StreamResponse:
        attempts.append(1)
        return web.Response(status=429 if len(attempts) == 1 else 200)

    callback = await fake_peer(route)
    try:
        async with client.post(
            b.server_url or "",
            data=encode_packet(prepare()),
            headers=prepare_headers("rq-4", callback),
        ) as r:
            assert r.status == 202
        await until(lambda: b.callbacks_refused == 1)
    finally:
        await b.stop()
    assert attempts == [1]
    assert b.callbacks_acknowledged == 0


async def test_pending_requests_are_bounded(
    client: aiohttp.ClientSession, fake_peer: Callable[[Route], Awaitable[str]]
) -> None:
    release = asyncio.Event()

    async def slow(packet: IlpPrepare) -> IlpReply:
        await release.wait()
        return IlpFulfill(FULFILLMENT)

    b = HttpCallbackLink(
        None,
        token=B_TO_A,
        incoming_token=A_TO_B,
        listen_port=0,
        max_pending=2,
        shutdown_grace=0.1,
    )
    b.set_handler(slow)
    await b.start()

    async def route(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    callback = await fake_peer(route)
    try:
        statuses = []
        for i in range(3):
            async with client.post(
                b.server_url or "",
                data=encode_packet(prepare()),
                headers=prepare_headers(f"rq-p{i}", callback),
            ) as r:
                statuses.append(r.status)
                retry_after = r.headers.get("Retry-After")
        assert statuses == [202, 202, 503]
        assert retry_after == "1"
        release.set()
    finally:
        await b.stop()


async def test_pinned_peer_callback_url_refuses_another() -> None:
    b = HttpCallbackLink(
        None,
        token=B_TO_A,
        incoming_token=A_TO_B,
        listen_port=0,
        shutdown_grace=0.1,
        peer_callback_url="http://127.0.0.1:9/agreed",
    )
    b.set_handler(Recorder())
    await b.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                b.server_url or "",
                data=encode_packet(prepare()),
                headers=prepare_headers("rq-x", "http://169.254.169.254/steal"),
            ) as r,
        ):
            assert r.status == 400
            assert "agreed" in await r.text()
    finally:
        await b.stop()


def test_callback_url_options() -> None:
    parsed = parse_http_url(
        "http+oer://tok@peer.example:8080/incoming/ilp?listen=7772&mode=callback"
        "&callback_url=https%3A%2F%2Fus.example%2Fcallback"
    )
    assert parsed.mode == "callback"
    assert parsed.link_options()["callback_url"] == "https://us.example/callback"
    link = open_link("http+oer://tok@peer.example:8080/incoming/ilp?listen=7772&mode=callback")
    assert isinstance(link, HttpCallbackLink)
    assert link.peer_url == "http://peer.example:8080/incoming/ilp"
    for bad in (
        "http+oer://t@h/?mode=push",
        "http+oer://t@h/?callback_url=http://x/",
        "http+oer://t@h/?mode=callback&request_ids=1",
        "http+oer://t@h/?mode=callback&callback_url=ftp://x/",
        "http+oer-async://t@h/?mode=callback",
    ):
        with pytest.raises(ConfigError):
            parse_http_url(bad)
    with pytest.raises(ConfigError, match="peer_callback_url"):
        HttpCallbackLink("http://x/", peer_callback_url="nope")
