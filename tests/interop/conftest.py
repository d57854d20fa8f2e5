"""The JavaScript reference side (a copy of ``../shared/interop`` in ``.interop/``).

The fixture installs it on first use (copy + ``npm ci``, from the package registry
only); tests are skipped, with the reason, only when node/npm or the harness sources are
truly absent from the machine.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / ".interop"
SHARED_HARNESS = ROOT.parent / "shared" / "interop"


def _install() -> Path | str:
    if not shutil.which("node") or not shutil.which("npm"):
        return "node and npm are not installed on this machine"
    HARNESS.parent.mkdir(exist_ok=True)
    with open(ROOT / ".interop.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (HARNESS / "node_modules" / "ilp-connector").is_dir():
            return HARNESS
        if not (HARNESS / "package.json").is_file():
            if not SHARED_HARNESS.is_dir():
                return f"the JavaScript harness is not on this machine ({SHARED_HARNESS})"
            shutil.copytree(SHARED_HARNESS, HARNESS, dirs_exist_ok=True)
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HARNESS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {HARNESS}:\n{result.stderr[-2000:]}")
    return HARNESS


@pytest.fixture(scope="session")
def harness() -> Path:
    """The directory of the installed JavaScript harness."""
    found = _install()
    if isinstance(found, str):
        pytest.skip(found)
    return found
