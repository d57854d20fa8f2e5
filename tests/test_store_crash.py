"""SQLite store crash safety: SIGKILL a process mid-stream, lose no acknowledged credit.

A child process credits one account in a loop (20 concurrent tasks, a unique
idempotency key and a known amount per credit) and prints each key once ``credit()``
has returned, which is when a receiver would send the Fulfill. The test kills it with
SIGKILL at a random moment, reopens the file and checks, exactly:

* every acknowledged key is stored, with its amount;
* keys stored but never acknowledged are only the ones in flight at the kill (at most
  one per task) - committed, but their acknowledgement never got out;
* the balance equals the sum of the deltas over all stored idempotency keys (every
  credit carries a key and retention is 24 h, so nothing is pruned): money counted
  exactly once, nothing half-applied.

Three rounds run on the same file, so a store reopened after a kill is killed again.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ilp_receiver.stores import SqliteStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

CONCURRENCY = 20
ACCOUNT = "acct"

CHILD = r"""
import asyncio, itertools, sys
from ilp_receiver.stores import SqliteStore

def amount(i):
    return (i * 7919) % 1000 + 1

async def main(path, start, concurrency):
    store = SqliteStore(path)
    counter = itertools.count(start)
    out = sys.stdout
    out.write("ready\n")
    out.flush()

    async def worker():
        while True:
            i = next(counter)
            await store.credit("acct", amount(i), idempotency_key=f"k{i}")
            out.write(f"ack k{i}\n")
            out.flush()

    await asyncio.gather(*(worker() for _ in range(concurrency)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def amount(i: int) -> int:
    return (i * 7919) % 1000 + 1


def run_and_kill(path: Path, start: int, kill_after: int) -> set[str]:
    """Run the child until ``kill_after`` acks arrived, SIGKILL it, return all acks."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(start), str(CONCURRENCY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    acked: set[str] = set()
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
        while len(acked) < kill_after:
            line = proc.stdout.readline()
            assert line.endswith(b"\n"), f"child died early: {proc.stderr.read().decode()}"
            acked.add(line.split()[1].decode())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Lines written before the kill are acknowledged too; a cut line would not be.
        for line in proc.stdout.read().splitlines(keepends=True):
            if line.endswith(b"\n"):
                acked.add(line.split()[1].decode())
        assert proc.returncode == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    return acked


def stored_keys(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute(
            "SELECT key, delta FROM ilp_idempotency WHERE account = ?", (ACCOUNT,)
        ).fetchall()
    finally:
        conn.close()
    return {key: int(delta) for key, delta in rows}


async def test_sigkill_loses_no_acknowledged_credit(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rnd = random.Random()
    all_acked: set[str] = set()
    previous: set[str] = set()
    for round_number in range(3):
        start = round_number * 10_000_000
        acked = run_and_kill(path, start, kill_after=rnd.randrange(300, 3000))
        all_acked |= acked
        stored = stored_keys(path)
        new = set(stored) - previous
        # Every acknowledged credit is there, with the amount that was credited.
        missing = acked - new
        assert not missing, f"round {round_number}: acknowledged credits lost: {missing}"
        for key in new:
            assert stored[key] == amount(int(key[1:])), key
        # The rest was in flight when the process died: at most one per task.
        in_flight = new - acked
        assert len(in_flight) <= CONCURRENCY, in_flight
        # Exactly the stored credits are in the balance, each once.
        async with SqliteStore(path) as store:
            balance = await store.balance(ACCOUNT)
            assert balance == sum(stored.values())
            assert balance >= sum(amount(int(k[1:])) for k in all_acked)
            # A redelivery of an acknowledged packet is recognised after the crash.
            some = next(iter(acked))
            again = await store.credit(ACCOUNT, amount(int(some[1:])), idempotency_key=some)
            assert not again.applied
            assert again.balance == balance
        previous = set(stored)
    assert len(previous) >= len(all_acked)
