"""The receiver's packet path in one process, without sockets: a deterministic view of
its cost per Prepare.

A :class:`~ilp_receiver.links.btp_session.BtpSession` is fed pre-built BTP Messages
carrying PSK2 draft-2 requests (amount 1000, one request id each) and answers them
through an :class:`~ilp_receiver.AsyncReceiver` on a SQLite store (or memory), with a
fixed number in flight: each answer written feeds the next Prepare, as a connector at
saturation would.  The payment log listens as in ``ilp-receiver receive``.  Prints the
CPU time per packet of this process; ``--batch`` hands the Prepares of one loop
iteration to the receiver together (what a BTP uplink does), ``--no-batch`` one task
each.  Under ``valgrind --tool=callgrind`` two counts give instructions per packet
without start-up: ``(I(3000) - I(1000)) / 2000``::

    python bench/receiver_inprocess.py --count 20000 --concurrency 10
    for n in 1000 3000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/receiver_inprocess.py --count $n 2>&1 | grep refs; done
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ilp_receiver.codec.btp import encode_ilp_message
from ilp_receiver.codec.ildcp import IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import IlpPrepare, IlpReject, IlpReply, encode_prepare
from ilp_receiver.commands._common import log_payments
from ilp_receiver.links.btp_session import BtpSession
from ilp_receiver.links.memory import memory_link_pair
from ilp_receiver.psk2.sender import build_request_prepare
from ilp_receiver.receiver import AsyncReceiver


async def run(count: int, concurrency: int, batch: bool, store: str, profile: str | None) -> int:
    """Feed ``count`` Prepares; print the CPU per packet; 0 when every one was paid."""
    parent, child = memory_link_pair()

    async def answer(prepare: IlpPrepare) -> IlpReply:  # the parent: IL-DCP only
        if prepare.destination == "peer.config":
            info = IldcpResponse("test.parent.bench", 9, "XYZ")
            return ildcp_serve(prepare, info, server_address="test.parent", now=datetime.now(UTC))
        return IlpReject("F02", "test.parent", "no route")

    parent.set_handler(answer)
    await parent.start()
    with tempfile.TemporaryDirectory() as tmp:
        receiver = AsyncReceiver(
            child,
            secret=os.urandom(32),
            store=None if store == "memory" else str(Path(tmp) / "balances.sqlite3"),
        )
        log_payments(receiver)
        await receiver.start()
        destination, secret = receiver.issue("endpoint:default")
        expires = datetime.now(UTC) + timedelta(minutes=10)
        frames = [
            encode_ilp_message(
                i + 1,
                encode_prepare(
                    build_request_prepare(
                        destination,
                        secret,
                        amount=1000,
                        expires_at=expires,
                        iv=os.urandom(12),
                        request_id=i,
                    )
                ),
            )
            for i in range(count)
        ]
        done = asyncio.Event()
        state = {"answered": 0, "next": 0}

        async def send_bytes(data: bytes) -> None:  # an answer out, the next Prepare in
            state["answered"] += 1
            if state["next"] < count:
                session.feed(frames[state["next"]])
                state["next"] += 1
            if state["answered"] == count:
                done.set()

        session = BtpSession(
            send_bytes,
            child.handle_incoming,
            handle_batch=child.handle_incoming_batch if batch else None,
        )
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for _ in range(min(concurrency, count)):
            session.feed(frames[state["next"]])
            state["next"] += 1
        await done.wait()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)  # type: ignore[arg-type]
        spent = time.process_time() - started
        balance = await receiver.balance("endpoint:default")
        await receiver.stop()
    print(
        f"{count} packets, concurrency {concurrency}, {'batches' if batch else 'a task each'}, "
        f"{store}: {1e6 * spent / count:.1f} us CPU per packet; balance {balance}"
    )
    return 0 if balance == 1000 * count else 1


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the window")
    args = parser.parse_args(argv)
    # the payment lines are formatted and written, as by ilp-receiver receive, to nowhere
    with open(os.devnull, "w") as nowhere:
        handler = logging.StreamHandler(nowhere)
        payments = logging.getLogger("ilp_receiver.payments")
        payments.addHandler(handler)
        payments.setLevel(logging.INFO)
        try:
            return asyncio.run(
                run(args.count, args.concurrency, args.batch, args.store, args.profile)
            )
        finally:
            payments.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
