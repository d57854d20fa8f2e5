"""Our receiver, paid by the JavaScript reference sender through the JavaScript connector.

Runs the harness's own ``run-js-baseline.sh`` with our CLI as the candidate receiver, so
the exact checks of ``sender.js check`` (required and optional, RFC format and the
legacy draft-1 chunks) are what decide.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .procs import child_env

pytestmark = pytest.mark.interop


def run_baseline(
    harness: Path, tmp_path: Path, base_port: int, count: int
) -> tuple[int, Path, str]:
    log_dir = tmp_path / "logs"
    store = tmp_path / "receiver.sqlite3"
    secret = tmp_path / "receiver.secret"
    env = child_env()
    env.update(
        RUNS="1",
        COUNT=str(count),
        WARMUP="20",
        MAX_SECONDS="20",
        WITH_HTTP="0",
        WITH_CCP="0",
        BASE_PORT=str(base_port),
        LOG_DIR=str(log_dir),
        CANDIDATE_CMD=(
            'ilp-receiver receive --uplink "$HARNESS_BTP_URL" --port "$HARNESS_SPSP_PORT" '
            f"--store {store} --secret-file {secret}"
        ),
    )
    result = subprocess.run(
        ["bash", str(harness / "run-js-baseline.sh")],
        cwd=harness,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return result.returncode, log_dir, result.stdout + result.stderr


def test_js_sender_check_passes_every_check_on_our_receiver(harness: Path, tmp_path: Path) -> None:
    code, log_dir, output = run_baseline(harness, tmp_path, 18700, 200)
    check_file = log_dir / "check-candidate.json"
    assert check_file.is_file(), f"no check result; harness output:\n{output[-4000:]}"
    report = json.loads(check_file.read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, f"failed checks: {json.dumps(failed, indent=1)[:4000]}"
    names = {c["name"] for c in report["checks"]}
    # the legacy (draft-1 chunk) format is exercised and passes
    assert {"legacy_quote", "legacy_single_chunk"} <= names
    assert report["ok"] is True
    benches = [
        json.loads(line.split("\t", 1)[1])
        for line in (log_dir / "bench-runs.tsv").read_text().splitlines()
        if line.startswith("candidate-")
    ]
    assert benches, "the candidate bench did not run"
    for run in benches:
        assert run["ok"], run
        assert run["rejected"] == 0, run
        assert run["receiver_balance_delta"] == run["destination_total"], run
    assert code == 0, output[-4000:]
