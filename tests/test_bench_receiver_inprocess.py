"""A tiny run of ``bench/receiver_inprocess.py``: both ways of answering pay every
Prepare exactly once (no speed is checked: that is the full run's business)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import receiver_inprocess


@pytest.mark.parametrize("way", ["--batch", "--no-batch"])
@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_every_prepare_is_paid_once(
    way: str, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert receiver_inprocess.main(["--count", "300", way, "--store", store]) == 0
    said = capsys.readouterr().out
    assert "300 packets, concurrency 10" in said and "balance 300000" in said
