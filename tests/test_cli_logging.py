"""The CLI's log handler and text formatter: the lines of the standard library's, cheaper."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from ilp_receiver.commands._common import (
    JsonLogFormatter,
    LoopBatchingStreamHandler,
    TextLogFormatter,
)


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"tests.log_batching.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_of_one_loop_iteration_leave_in_one_write() -> None:
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    batched, plain = CountingStream(), CountingStream()
    handler = LoopBatchingStreamHandler(batched)
    handler.setFormatter(formatter)
    reference = logging.StreamHandler(plain)
    reference.setFormatter(formatter)
    logs = [_logger("batched", handler), _logger("plain", reference)]

    async def main() -> None:
        for iteration in range(3):
            for i in range(5):
                for log in logs:
                    log.info("payment %d.%d: %s", iteration, i, "x" * i)
            await asyncio.sleep(0)  # the flush of this iteration runs here
            assert batched.writes == iteration + 1
        logs[0].warning("the last one, pending when the loop ends")

    asyncio.run(main())
    # asyncio.run runs the pending flush before it closes the loop
    assert batched.writes == 4
    assert plain.writes == 15  # one per record
    last = "WARNING tests.log_batching.batched: the last one, pending when the loop ends\n"
    assert batched.getvalue() == plain.getvalue().replace(".plain:", ".batched:") + last


def test_records_outside_a_loop_come_after_the_pending_ones() -> None:
    stream = CountingStream()
    handler = LoopBatchingStreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    log = _logger("outside", handler)

    async def inside() -> None:
        log.info("first")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(inside())
        # a loop that stopped with the flush still scheduled: the next record outside
        # any loop writes the pending line first
    finally:
        loop.close()
    log.info("second")
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["first", "second"]


def test_text_formatter_writes_the_lines_of_a_plain_formatter() -> None:
    """Records within one second, across seconds and going back in time."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    ours, plain = TextLogFormatter(fmt), logging.Formatter(fmt)
    base = 1_780_000_000.0
    times = [base + i * 0.1234 for i in range(40)] + [base - 86_400.5, base + 0.9999, base]
    for created in times:
        record = logging.LogRecord("payments", logging.INFO, "p", 1, "x %d", (1,), None)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert ours.format(record) == plain.format(record)
