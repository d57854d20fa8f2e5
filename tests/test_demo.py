"""``ilp-receiver demo --once`` runs the whole path and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def facts(output: str, step: str) -> dict[str, object]:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"[{step}]"))
    parsed: dict[str, object] = json.loads(lines[index + 1])
    return parsed


def test_demo_once_walks_through_every_step(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = subprocess.run(
        [str(BIN / "ilp-receiver"), "demo", "--once", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.rstrip().endswith("demo complete")
    paid = facts(run.stdout, "3/5")
    assert paid["delivered"] == 5000
    assert paid["pointer_balance_after"] == paid["pointer_balance_before"] + 5000  # type: ignore[operator]
    api = facts(run.stdout, "4/5")
    assert api["paid"] == 100 and api["pay_balance"] == 0
    prepaid = facts(run.stdout, "5/5")
    assert prepaid == {"paid_again": False, "pay_balance": 200, "status": 200}
    assert (state / "site.sqlite3").is_file()

    # state is kept: a second run starts from the first run's pointer balance
    second = subprocess.run(
        [str(BIN / "ilp-receiver"), "demo", "--once", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert facts(second.stdout, "3/5")["pointer_balance_before"] == 5000
