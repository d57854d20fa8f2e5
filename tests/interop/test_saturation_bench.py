"""A tiny run of ``bench/receiver_saturation.py`` with the JavaScript reference receivers.

``js-receiver.js`` (PSK2) and ``stream-receiver.js`` (STREAM) next to ours (SQLite),
all BTP children of the driver: each gets its IL-DCP answer, and 30 pre-built
Prepares at 5 in flight are all fulfilled with the SPSP balance moved by exactly what
was paid.  No figures are checked (see ``docs/benchmarks.md`` for the real runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import receiver_saturation as saturation

pytestmark = pytest.mark.interop


def test_driver_is_the_parent_of_the_js_receivers_too(harness: Path, tmp_path: Path) -> None:
    assert harness == saturation.HARNESS
    figures = tmp_path / "runs.json"
    argv = ["--base-port", "0", "--store", "sqlite", "--runs", "1", "--count", "30"]
    argv += ["--concurrency", "5", "--warmup-runs", "0", "--json", str(figures)]
    assert saturation.main(argv) == 0
    runs = json.loads(figures.read_text())
    assert set(runs) == {"psk2/js/5", "psk2/ours-sqlite/5", "stream/js/5", "stream/ours-sqlite/5"}
    for (run,) in runs.values():
        assert run["fulfilled"] == run["packets"] == 30
        assert run["balance_delta"] == run["expected_delta"] == 30 * 1000
