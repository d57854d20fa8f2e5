"""The CLI's payment lines: one per payment up to ``--payment-log-rate`` a second, the
rest of each second summed per account, nothing left unreported."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ilp_receiver.cli import main
from ilp_receiver.codec.ildcp import IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ilp_receiver.commands._common import (
    JsonLogFormatter,
    PaymentLog,
    add_payment_log_argument,
    log_payments,
)
from ilp_receiver.links.memory import MemoryLink, memory_link_pair
from ilp_receiver.receiver import AsyncReceiver
from tests.test_receiver_batches import psk2

SECRET = bytes(range(32))


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[tuple[MemoryLink, AsyncReceiver]]:
    parent, child = memory_link_pair()

    async def answer(prepare: IlpPrepare) -> IlpReply:
        if prepare.destination == "peer.config":
            info = IldcpResponse("test.parent.bob", 9, "XYZ")
            return ildcp_serve(prepare, info, server_address="test.parent", now=datetime.now(UTC))
        return IlpReject("F02", "test.parent", "no route")

    parent.set_handler(answer)
    await parent.start()
    receiver = AsyncReceiver(child, secret=SECRET, store=str(tmp_path / "balances.sqlite3"))
    await receiver.start()
    yield parent, receiver
    await receiver.stop()


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What ``ilp_receiver.payments`` logs at INFO during the test."""
    caught: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    logger = logging.getLogger("ilp_receiver.payments")
    handler = Keep(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield caught
    logger.removeHandler(handler)
    logger.setLevel(level)


async def pay(parent: MemoryLink, receiver: AsyncReceiver, amounts: list[int]) -> None:
    """PSK2 draft-2 payments to the default endpoint, one after the other."""
    for request_id, amount in enumerate(amounts):
        prepare = psk2(receiver, amount, request_id, "endpoint:default")
        assert isinstance(await parent.send(prepare), IlpFulfill)


async def delivered(records: list[logging.LogRecord], count: int) -> None:
    """Wait until the receiver's event dispatcher has handed over ``count`` records."""
    for _ in range(200):
        if len(records) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(records)} payment lines, expected {count}")


async def test_lines_beyond_the_rate_are_summed_per_account_at_the_end_of_the_second(
    network: tuple[MemoryLink, AsyncReceiver], records: list[logging.LogRecord]
) -> None:
    parent, receiver = network
    clock = FakeClock()
    payments = PaymentLog(receiver, 3, clock=clock)
    receiver.on_event(payments.record)

    await pay(parent, receiver, [100, 200, 300, 400, 500, 600, 700])
    await delivered(records, 3)
    await asyncio.sleep(0.05)  # the other four are summed, not written
    lines = [record.getMessage() for record in records]
    assert len(lines) == 3
    assert [line.split(":")[0] for line in lines] == ["payment received"] * 3
    assert "100 units (XYZ, scale 9) to /.well-known/pay" in lines[0]
    assert "balance now 600" in lines[2]

    clock.now += 1.0  # the second is over: the sum comes out (here by the next payment)
    await pay(parent, receiver, [800])
    await delivered(records, 5)
    summed, after = (record.getMessage() for record in records[3:])
    assert summed == (
        "payments received: 4 more payments, 2200 units in all (XYZ, scale 9) to "
        "/.well-known/pay (account endpoint:default) in the last 1.0 s, balance now "
        "2800, over psk2-draft2"
    )
    assert after.startswith("payment received: 800 units") and "balance now 3600" in after
    assert await receiver.balance() == 3600  # every unit credited is in some line


async def test_the_sum_is_written_by_a_timer_when_no_payment_follows(
    network: tuple[MemoryLink, AsyncReceiver], records: list[logging.LogRecord]
) -> None:
    parent, receiver = network
    payments = log_payments(receiver, 1)  # the real clock and the loop's timer

    await pay(parent, receiver, [10, 20, 30])
    await delivered(records, 1)
    await delivered(records, 2)  # within about a second, without another payment
    assert records[1].getMessage().startswith("payments received: 2 more payments, 50 units in all")
    payments.flush()  # nothing left: no line
    assert len(records) == 2


async def test_flush_writes_what_is_summed_and_rate_zero_writes_every_line(
    network: tuple[MemoryLink, AsyncReceiver], records: list[logging.LogRecord]
) -> None:
    parent, receiver = network
    clock = FakeClock()
    limited = PaymentLog(receiver, 1, clock=clock)
    unlimited = PaymentLog(receiver, 0, clock=clock)
    receiver.on_event(limited.record)
    await pay(parent, receiver, [1, 2, 3])
    await delivered(records, 1)
    limited.flush()  # what the CLI does after the receiver stops
    assert [r.getMessage()[:28] for r in records] == [
        "payment received: 1 units (X",
        "payments received: 2 more pa",
    ]

    records.clear()
    receiver.on_event(unlimited.record)  # both listen; the limited one only sums now
    await pay(parent, receiver, [4, 5, 6, 7])
    await delivered(records, 4)
    await asyncio.sleep(0.05)
    assert [r.getMessage()[:25] for r in records] == [
        f"payment received: {n} units" for n in (4, 5, 6, 7)
    ]


def test_the_summed_line_has_json_fields(records: list[logging.LogRecord]) -> None:
    class Config:
        asset_code, asset_scale = "XYZ", 9

    class Receiver:
        config = Config()

    from ilp_receiver.receiver import IncomingPayment, PaymentEvent

    def event(amount: int, balance: int) -> PaymentEvent:
        payment = IncomingPayment(
            "endpoint:shop", amount, "x", "psk2-draft2", None, 0, False, b"", (), b""
        )
        return PaymentEvent("received", "endpoint:shop", amount, balance, payment)

    clock = FakeClock()
    payments = PaymentLog(Receiver(), 1, clock=clock)  # type: ignore[arg-type]
    for n in range(1, 4):
        payments.record(event(n, n * 10))
    clock.now += 0.5
    payments.flush()
    line = json.loads(JsonLogFormatter().format(records[-1]))
    assert line["event"] == "payments"
    assert {k: line[k] for k in ("count", "amount", "balance", "endpoint", "protocol")} == {
        "count": 2,
        "amount": "5",
        "balance": "30",
        "endpoint": "/shop",
        "protocol": "psk2-draft2",
    }
    assert line["seconds"] == 0.5


def test_payment_log_rate_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_payment_log_argument(parser)
    assert parser.parse_args(["--payment-log-rate", "0"]).payment_log_rate == 0
    assert parser.parse_args([]).payment_log_rate == 10
    with pytest.raises(SystemExit):  # the CLI names the option and the value
        main(["receive", "--payment-log-rate", "-1"])
    assert "--payment-log-rate: must be at least 0, got -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lines_per_second"):
        PaymentLog(None, -1)  # type: ignore[arg-type]
