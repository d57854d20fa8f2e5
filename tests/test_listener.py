"""Bounded listeners (``links/listener.py``) and rate-limited log lines (``log_limits.py``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ilp_receiver.errors import ConfigError
from ilp_receiver.links import listener as listener_module
from ilp_receiver.links.listener import Listener, ServerLimits, start_listener
from ilp_receiver.log_limits import LogLimiter


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def serve(limits: ServerLimits) -> tuple[web.AppRunner, Listener]:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, **limits.runner_options())
    await runner.setup()
    return runner, await start_listener(runner, "127.0.0.1", 0, limits)


@pytest.fixture
async def small() -> AsyncIterator[Listener]:
    runner, listener = await serve(ServerLimits(max_connections=8, header_timeout=0.5))
    yield listener
    await runner.cleanup()


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_connections_over_the_cap_get_a_json_503_and_one_log_line(
    small: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", small.port) for _ in range(8)]
    await asyncio.sleep(0.05)
    assert small.open_connections == 8
    with caplog.at_level(logging.WARNING, "ilp_receiver.links.listener"):
        answers = await asyncio.gather(*(get(small.port) for _ in range(20)))
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"Connection: close" in head
        assert json.loads(body)["error"] == "ServerBusy"
    assert small.refused == 20
    lines = [r for r in caplog.records if "refusing connections" in r.getMessage()]
    assert len(lines) == 1  # one line per burst, not per connection
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(0.1)
    assert (await get(small.port)).startswith(b"HTTP/1.1 200 ")


async def test_a_burst_accepted_in_one_iteration_cannot_overshoot_the_cap(small: Listener) -> None:
    opened = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", small.port) for _ in range(40))
    )
    await asyncio.sleep(0.1)
    assert small.open_connections <= 8
    assert small.refused >= 32
    for _, writer in opened:
        writer.close()


async def test_idle_and_slow_header_connections_are_closed_after_the_header_timeout(
    small: Listener,
) -> None:
    idle_reader, _ = await asyncio.open_connection("127.0.0.1", small.port)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", small.port)
    slow_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    for _ in range(3):
        await asyncio.sleep(0.1)
        slow_writer.write(b"X-Slow: 1\r\n")
    # both are closed by the server within the timeout (EOF), and nothing was answered
    assert await asyncio.wait_for(idle_reader.read(), 3) == b""
    assert await asyncio.wait_for(slow_reader.read(), 3) == b""
    assert small.open_connections == 0


async def test_malformed_heads_get_400_and_log_one_short_line_per_burst(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a burst starts fresh, whatever earlier tests logged
    monkeypatch.setattr(listener_module._malformed_requests, "_last", float("-inf"))
    runner, listener = await serve(ServerLimits(max_headers=10, max_field_size=100))
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(20))
    heads = [
        b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n",  # too many fields
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200 + b"\r\n\r\n",  # too long
        b"NOT HTTP AT ALL\r\n\r\n",
    ] * 10
    try:
        with caplog.at_level(logging.DEBUG):
            for head in heads:
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                writer.write(head)
                answer = await asyncio.wait_for(reader.read(), 3)
                assert answer.split(b" ", 2)[1] == b"400"
                writer.close()
    finally:
        await runner.cleanup()
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(logged) == 1
    assert logged[0].levelno == logging.WARNING and not logged[0].exc_info
    assert len(logged[0].getMessage()) < 300


async def test_a_taken_port_is_a_config_error_naming_the_setting(small: Listener) -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        with pytest.raises(ConfigError, match=r"admin\.port"):
            await start_listener(runner, "127.0.0.1", small.port, setting="admin.port")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"header_timeout": 0}, "header_timeout"),
        ({"body_timeout": -1.0}, "body_timeout"),
    ],
)
def test_limits_are_validated(options: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ServerLimits(**options)  # type: ignore[arg-type]


def test_log_limiter_writes_one_line_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    limiter = LogLimiter(logging.getLogger("test.limiter"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.limiter"):
        assert limiter.warning("flood", "refused %s", "a")
        for _ in range(99):
            assert not limiter.warning("flood", "refused %s", "a")
        assert limiter.info("other", "a different kind")  # kinds are limited separately
        now[0] += 10.0
        assert limiter.warning("flood", "refused %s", "b")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "refused a",
        "a different kind",
        "refused b (99 more like this in the last 10 s)",
    ]
