"""Callbacks: sync and async listeners, called in order, one failing never stops the rest."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from ilp_receiver.events import Callbacks


@dataclass
class Event:
    kind: str


async def test_sync_callbacks_are_done_without_a_coroutine_and_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    callbacks: Callbacks[Event] = Callbacks(logging.getLogger("tests.events"), "listener failed")
    callbacks.add(lambda event: seen.append("a:" + event.kind))

    def broken(event: Event) -> None:
        raise RuntimeError("bug")

    callbacks.add(broken)
    callbacks.add(lambda event: seen.append("c:" + event.kind))
    assert callbacks.deliver(Event("received")) is None  # all done, nothing to await
    assert seen == ["a:received", "c:received"]
    assert "listener failed" in caplog.text


async def test_an_async_callback_is_awaited_before_the_next_one_is_called() -> None:
    order: list[str] = []
    callbacks: Callbacks[Event] = Callbacks(logging.getLogger("tests.events"), "failed")
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        order.append("slow started")
        await gate.wait()
        order.append("slow done")

    callbacks.add(lambda event: order.append("first"))
    callbacks.add(slow)
    callbacks.add(lambda event: order.append("last"))
    pending = callbacks.deliver(Event("received"))
    assert pending is not None and order == ["first"]  # the slow one is to be awaited
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0)
    assert order == ["first", "slow started"]  # the last waits for the slow one
    gate.set()
    await task
    assert order == ["first", "slow started", "slow done", "last"]
    order.clear()
    gate.set()
    await callbacks.emit(Event("completed"))  # emit awaits the same way
    assert order == ["first", "slow started", "slow done", "last"]
