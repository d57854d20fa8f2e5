"""Codec micro-benchmarks: ``python bench/codec.py [name ...]`` prints one JSON line each.

Each benchmark is a named function returning ``(fn, arg)``; :func:`measure` times
:data:`ITERATIONS` calls of ``fn(arg)`` with :func:`time.perf_counter` and keeps the
best of :data:`REPEATS` runs.  To add one, write ``bench_<name>()`` and list it in
:data:`BENCHMARKS`; :func:`main` runs them all (or those named on the command line).

Targets (one core): >= 300,000 Prepare decodes/s and >= 300,000 Prepare encodes/s for
a typical packet (amount 1000, 30-byte destination, 67-byte data).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ilp_receiver.codec.ilp import IlpPrepare, decode_prepare, encode_prepare

ITERATIONS = 100_000
REPEATS = 5

#: What a benchmark function returns: the operation and the argument to call it with.
Operation = tuple[Callable[[Any], object], Any]


def typical_prepare(expiry_offset_ms: int = 0) -> IlpPrepare:
    """A typical Prepare: amount 1000, 30-byte destination, 67-byte data."""
    return IlpPrepare(
        amount=1000,
        expires_at=datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=UTC)
        + timedelta(milliseconds=expiry_offset_ms),
        execution_condition=bytes(range(32)),
        destination="test.example.receiver.abcdefgh",  # 30 bytes
        data=bytes(range(67)),
    )


def bench_ilp_prepare_decode() -> Operation:
    """Decode the typical Prepare."""
    return decode_prepare, encode_prepare(typical_prepare())


def bench_ilp_prepare_encode() -> Operation:
    """Encode the typical Prepare."""
    return encode_prepare, typical_prepare()


def bench_ilp_prepare_decode_varying_expiry() -> Operation:
    """Decode Prepares whose expiry differs from packet to packet (1000 packets, 7 s)."""
    raws = [encode_prepare(typical_prepare(7 * i)) for i in range(1000)]
    position = [0]

    def decode_next(raws: list[bytes]) -> object:
        i = position[0] = (position[0] + 1) % 1000
        return decode_prepare(raws[i])

    return decode_next, raws


# ------------------------------------------------------------------ PSK2 (psk2 helper)
# The full PSK2 receive computation per packet: derive the keys from the destination,
# decrypt, parse, regenerate fulfillment/condition, build and encrypt the response
# (Psk2Receiver.handle_prepare + fulfill).  Target: >= 30,000/s on one core.


def _psk2_receive_setup(tokens: int, cache_size: int) -> tuple[Any, list[IlpPrepare]]:
    """A receiver and 1000 draft-1 chunk Prepares spread over ``tokens`` SPSP secrets."""
    from ilp_receiver.psk2 import Psk2Receiver, ReceiverSecrets, build_chunk_prepare

    address = "test.example.receiver"
    secrets = ReceiverSecrets(bytes(range(32)), cache_size=cache_size)
    issued = [secrets.issue(address, n.to_bytes(18, "big")) for n in range(tokens)]
    expires_at = datetime(2024, 5, 17, 12, 31, 15, tzinfo=UTC)
    prepares = [
        build_chunk_prepare(
            issued[i % tokens].destination,
            issued[i % tokens].shared_secret,
            amount=1000,
            expires_at=expires_at,
            iv=i.to_bytes(12, "big"),
            payment_id=i.to_bytes(16, "big"),
            chunk_amount=900,
            last_chunk=False,  # type 0: the payment never finishes, every round credits
        )
        for i in range(1000)
    ]
    return Psk2Receiver(secrets, address), prepares


def _psk2_receive_operation(receiver: Any, prepares: list[IlpPrepare]) -> Operation:
    from ilp_receiver.psk2 import Acceptance

    now = datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC)
    iv = bytes(12)
    position = [0]
    handle, fulfill = receiver.handle_prepare, receiver.fulfill

    def receive_next(prepares: list[IlpPrepare]) -> object:
        i = position[0] = (position[0] + 1) % 1000
        decision = handle(prepares[i], now, iv=iv)
        assert isinstance(decision, Acceptance)
        return fulfill(decision, iv=iv)

    return receive_next, prepares


def bench_psk2_receive_warm() -> Operation:
    """PSK2 receive, warm: one SPSP secret reused, its keys cached (1 HMAC per packet)."""
    return _psk2_receive_operation(*_psk2_receive_setup(tokens=1, cache_size=10_000))


def bench_psk2_receive_cold() -> Operation:
    """PSK2 receive, cold: every packet is the first for its token (cache always misses).

    1000 tokens cycle through an LRU of 500, so each packet pays base64 decoding, the
    shared-secret HMAC, both key HMACs, and a cache insert + eviction.
    """
    return _psk2_receive_operation(*_psk2_receive_setup(tokens=1000, cache_size=500))


def bench_psk2_receive_wire() -> Operation:
    """PSK2 receive from wire bytes to wire bytes (decode Prepare ... encode Fulfill), warm."""
    from ilp_receiver.codec.ilp import encode_fulfill
    from ilp_receiver.psk2 import Acceptance

    receiver, prepares = _psk2_receive_setup(tokens=1, cache_size=10_000)
    raws = [encode_prepare(p) for p in prepares]
    now = datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC)
    iv = bytes(12)
    position = [0]
    handle, fulfill = receiver.handle_prepare, receiver.fulfill

    def receive_raw(raws: list[bytes]) -> object:
        i = position[0] = (position[0] + 1) % 1000
        decision = handle(decode_prepare(raws[i]), now, iv=iv)
        assert isinstance(decision, Acceptance)
        return encode_fulfill(fulfill(decision, iv=iv))

    return receive_raw, raws


BENCHMARKS: dict[str, Callable[[], Operation]] = {
    "ilp_prepare_decode": bench_ilp_prepare_decode,
    "ilp_prepare_encode": bench_ilp_prepare_encode,
    "ilp_prepare_decode_varying_expiry": bench_ilp_prepare_decode_varying_expiry,
    "psk2_receive_warm": bench_psk2_receive_warm,
    "psk2_receive_cold": bench_psk2_receive_cold,
    "psk2_receive_wire": bench_psk2_receive_wire,
}


def measure(fn: Callable[[Any], object], arg: Any, iterations: int = ITERATIONS) -> float:
    """Operations per second of ``fn(arg)``: best of :data:`REPEATS` timed loops."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(iterations):
            fn(arg)
        best = min(best, time.perf_counter() - start)
    return iterations / best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print ``{"benchmark", "ops_per_sec", ...}`` per line."""
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    for name in names:
        fn, arg = BENCHMARKS[name]()
        ops = measure(fn, arg)
        record = {
            "benchmark": name,
            "ops_per_sec": round(ops),
            "iterations": ITERATIONS,
            "repeats": REPEATS,
        }
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
