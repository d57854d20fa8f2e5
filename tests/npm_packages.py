"""The test-only JavaScript packages of ``tests/openapi`` (package.json and its lock file),
installed with ``npm ci`` on first use -- only the npm registry is needed."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "tests" / "openapi"


def installed_js_packages() -> Path:
    """``tests/openapi``, its ``node_modules`` installed from the lock file (again when a
    package the lock file names is missing); skips the test without node and npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the test-only JavaScript packages")
    wanted = json.loads((PACKAGES / "package.json").read_text())["dependencies"]
    with open(ROOT / ".interop.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [
            name
            for name in wanted
            if not (PACKAGES / "node_modules" / name / "package.json").exists()
        ]
        if missing:
            done = subprocess.run(
                ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=PACKAGES,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"npm ci in tests/openapi failed: {done.stderr[-2000:]}")
    return PACKAGES
