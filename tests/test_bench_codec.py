"""A tiny run of ``bench/codec.py``: every benchmark runs, and ``--versus`` works.

Each benchmark function asserts its own outcome (e.g. every STREAM packet is a credit
that gets fulfilled), so a few iterations check that the measured computations are
the real ones; no speed is checked (that is the full run's business).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import codec


def test_every_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert codec.main(["--iterations", "30"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["benchmark"] for line in lines] == list(codec.BENCHMARKS)
    assert all(line["ops_per_cpu_sec"] > 0 for line in lines)


def test_versus_compares_two_checkouts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--versus", str(codec.ROOT), "--rounds", "1", "--iterations", "30"]
    assert codec.main([*argv, "stream_receive_warm", "psk2_request_warm"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["benchmark"] for line in lines] == ["stream_receive_warm", "psk2_request_warm"]
    assert all(line["cpu_us_this"] > 0 and line["cpu_us_versus"] > 0 for line in lines)


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit):
        codec.main(["no_such_benchmark"])
