"""A tiny run of ``bench/connector_saturation.py`` with ilp-connector 23.0.2.

The driver's two BTP links work against ``.interop/connector.js`` (its ``sender``
account, ilp-plugin-btp, and its ``receivers`` account, ilp-plugin-mini-accounts, whose
IL-DCP answer gives the driver its address) as well as against ours: 30 pre-built PSK2
Prepares at 5 in flight, each forwarded once with its amount and fulfilled.  No figures
are checked (see ``docs/benchmarks.md`` for the real runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import connector_saturation as saturation

pytestmark = pytest.mark.interop


def test_driver_is_the_sender_and_receiver_of_ilp_connector_too(
    harness: Path, tmp_path: Path
) -> None:
    assert harness == saturation.HARNESS
    figures = tmp_path / "runs.json"
    argv = ["--store", "sqlite", "--runs", "1", "--count", "30", "--concurrency", "5"]
    argv += ["--warmup-runs", "0", "--json", str(figures)]
    assert saturation.main(argv) == 0
    runs = json.loads(figures.read_text())
    assert set(runs) == {"psk2/ilp-connector/5", "psk2/ours-sqlite/5"}
    for (run,) in runs.values():
        assert run["fulfilled"] == run["forwarded"] == run["packets"] == 30
        assert run["forwarded_amount"] == run["expected_amount"] == 30 * 1000
