"""A tiny run of ``bench/receiver_saturation.py``: the driver is a working parent.

Our receiver (memory store) as the driver's BTP child: IL-DCP, an SPSP query and 40
pre-built PSK2 requests and STREAM money packets fed with 4 in flight; every one
fulfilled with the right fulfillment and the SPSP balance moved by exactly what was
paid (the driver raises SystemExit otherwise).  No figures are checked: timing is
``python bench/receiver_saturation.py``'s business, not a test's.  The same with the
JavaScript receivers is ``tests/interop/test_saturation_bench.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# bench/ is not a package (mypy checks its files as top-level modules): import the
# script the same way, from the directory itself.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import receiver_saturation as saturation


def test_driver_feeds_our_receiver_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "runs.json"
    argv = ["--base-port", "0", "--no-js", "--store", "memory", "--runs", "1"]
    argv += ["--count", "40", "--concurrency", "4", "--warmup-runs", "0"]
    argv += ["--json", str(figures)]
    assert saturation.main(argv) == 0
    table = capsys.readouterr().out
    assert "| psk2 | 4 | ours-memory |" in table
    assert "| stream | 4 | ours-memory |" in table
    runs = json.loads(figures.read_text())
    assert set(runs) == {"psk2/ours-memory/4", "stream/ours-memory/4"}
    for (run,) in runs.values():
        assert run["fulfilled"] == run["packets"] == 40
        assert run["balance_delta"] == run["expected_delta"] == 40 * 1000
        assert run["receiver_cpu_ms"] >= 0
        assert run["driver_cpu_ms"] > 0


def test_wrapped_receiver_is_measured_and_stopped(tmp_path: Path) -> None:
    """``--wrap-ours`` (here ``env``, which runs the receiver in its own place)."""
    figures = tmp_path / "runs.json"
    argv = ["--base-port", "0", "--no-js", "--store", "sqlite", "--protocol", "psk2"]
    argv += ["--runs", "1", "--count", "20", "--concurrency", "2", "--warmup-runs", "0"]
    argv += ["--wrap-ours", "env", "--json", str(figures)]
    assert saturation.main(argv) == 0
    ((run,),) = json.loads(figures.read_text()).values()
    assert run["fulfilled"] == 20
    assert run["balance_delta"] == 20 * 1000


def test_report_of_a_run_too_short_for_a_cpu_tick() -> None:
    """A tiny run may measure 0 ms of receiver CPU (10 ms kernel ticks): its ratios are
    left out, not a ZeroDivisionError (seen in a CI run of the interop smoke test)."""

    def result(receiver_cpu_ms: float) -> saturation.RunResult:
        return saturation.RunResult(
            packets=30,
            fulfilled=30,
            rejects={},
            seconds=0.01,
            receiver_cpu_ms=receiver_cpu_ms,
            driver_cpu_ms=1.0,
            balance_delta=30,
            expected_delta=30,
        )

    rows = {
        ("psk2", "js-psk2", 5): [result(30.0)],
        ("psk2", "ours-sqlite", 5): [result(0.0)],
    }
    text = saturation.report(rows, lambda name: "js-psk2", ["0.1 0.1 0.1"])
    # ours measured 0 ms: its CPU ratio is 0, the driver's share of it unknown
    assert "| psk2 | 5 | ours-sqlite / js-psk2 | 1.00 | **0.00** | nan |" in text
    rows[("psk2", "js-psk2", 5)] = [result(0.0)]
    rows[("psk2", "ours-sqlite", 5)] = [result(30.0)]
    text = saturation.report(rows, lambda name: "js-psk2", ["0.1 0.1 0.1"])
    # the baseline measured 0 ms: the CPU ratio is unknown
    assert "| psk2 | 5 | ours-sqlite / js-psk2 | 1.00 | **nan** | 0.03 |" in text
