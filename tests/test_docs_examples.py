"""The Python examples of the docs run as written.

Every ```python block of the listed pages is a complete program (imports included);
each runs in a fresh interpreter, so a page can be copied verbatim.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: pages whose Python blocks are complete programs
PAGES = ["stream.md", "webhooks.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer((DOCS / page).read_text()), 1):
            found.append((page, number, match.group(1)))
    return found


@pytest.mark.parametrize(("page", "number", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_docs_example_runs(page: str, number: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{page} block {number} failed:\n{result.stderr[-3000:]}"
