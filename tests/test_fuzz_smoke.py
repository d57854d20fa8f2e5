"""A short in-process run of ``bench/fuzz_decoders.py``: every wire decoder, 3,000
generated inputs each (fixed seed), raises nothing but its documented error.

The full run (>= 1,000,000 inputs per decoder) is ``python bench/fuzz_decoders.py``;
see the module docstring there.  Timing (the 50 ms DoS flag) is checked by the full
run only: under coverage or on a loaded CI machine a timing assertion would be flaky.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ilp_receiver.errors import DecodeError

# bench/ is not a package (mypy checks its files as top-level modules): import the
# harness the same way, from the directory itself.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz_decoders as fuzz

SMOKE_INPUTS = 3_000
SMOKE_SEED = 1


@pytest.fixture(scope="module")
def summary() -> fuzz.Summary:
    return fuzz.run(SMOKE_INPUTS, seed=SMOKE_SEED, jobs=1)


def test_every_decoder_raises_only_its_documented_error(summary: fuzz.Summary) -> None:
    failures = [f for r in summary.results.values() for f in r.failures]
    if failures:
        fuzz.write_artifacts(summary)
    assert not failures, json.dumps(failures[0], indent=2)[:4000]
    for r in summary.results.values():
        assert r.unexpected == 0, r.name
        assert r.inputs == SMOKE_INPUTS, r.name
        assert r.decoded + r.expected_errors == SMOKE_INPUTS, r.name


def test_harness_is_not_vacuous(summary: fuzz.Summary) -> None:
    """Each decoder had valid seeds, decoded some inputs and refused others."""
    for r in summary.results.values():
        assert r.seeds > 0, r.name
        assert r.decoded > 0, r.name
        assert r.expected_errors > 0, r.name


def test_every_listed_decoder_is_fuzzed(summary: fuzz.Summary) -> None:
    groups = {r.group for r in summary.results.values()} | {
        name.split(".")[0].upper() for name in summary.skipped
    }
    for group in ("ILP", "BTP", "STREAM", "IL-DCP", "CCP", "PSK2", "Pay headers", "SPSP"):
        assert group in groups
    assert "ilp.decode_prepare" in summary.results
    assert "spsp.parse_spsp_response" in summary.results


def test_inputs_are_deterministic() -> None:
    first = fuzz.run(200, seed=7, only=["pay_header.parse_pay_header", "btp"])
    second = fuzz.run(200, seed=7, only=["pay_header.parse_pay_header", "btp"])
    counts = [
        {n: (r.decoded, r.expected_errors) for n, r in s.results.items()} for s in (first, second)
    ]
    assert counts[0] == counts[1]
    assert set(counts[0]) == {
        "pay_header.parse_pay_header",
        "btp.decode_btp",
        "btp.parse_auth",
        "btp.parse_generalized_time",
    }


@pytest.fixture
def broken() -> Iterator[str]:
    """A decoder that raises IndexError on inputs of odd length."""

    def decode(data: bytes) -> object:
        if len(data) % 2:
            return data[len(data) + 1]
        raise DecodeError("even", 0)

    name = "test.broken_decoder"
    fuzz.register(fuzz.Target(name, "test", "bytes", decode, (DecodeError,)))
    yield name
    fuzz.unregister(name)


def test_an_unexpected_exception_is_caught_and_recorded(broken: str) -> None:
    result = fuzz.run(500, seed=3, only=[broken]).results[broken]
    assert result.unexpected > 0
    assert result.decoded == 0
    assert result.unexpected + result.expected_errors == 500
    first = result.failures[0]
    assert first["exception"] == "IndexError"
    assert len(bytes.fromhex(first["input"]["hex"])) % 2 == 1
    assert len(result.failures) == fuzz.MAX_RECORDED


@pytest.fixture
def hanging() -> Iterator[str]:
    """A decoder that never returns (once armed: seed selection calls it too)."""
    armed: list[bool] = []

    def decode(data: bytes) -> object:
        while armed:
            pass
        raise DecodeError("not armed", 0)

    name = "test.hanging_decoder"
    fuzz.register(fuzz.Target(name, "test", "bytes", decode, (DecodeError,)))
    armed.append(True)
    yield name
    fuzz.unregister(name)


def test_a_hanging_call_is_interrupted(hanging: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "WATCHDOG_SECONDS", 0.2)
    result = fuzz.run(1, seed=3, only=[hanging]).results[hanging]
    assert result.unexpected == 1
    assert result.failures[0]["exception"] == "FuzzTimeout"


def test_markdown_report(summary: fuzz.Summary) -> None:
    report = fuzz.markdown(summary, "python bench/fuzz_decoders.py --inputs 3000")
    assert "| `ilp.decode_packet` | ILP | 3,000 |" in report
    assert report.rstrip().endswith("PASS")
