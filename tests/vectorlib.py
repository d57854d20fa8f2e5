"""Loading the JSON test vectors in ``tests/vectors`` and proving every case is read.

Test modules ask for vector data only through :func:`section`.  Each call registers
``(file, key)``; ``tests/test_vector_coverage.py`` imports every test module and fails
if any top-level key of any vector file (other than ``description``/``source``) was
never requested, so a case no test reads is a failing test.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).parent / "vectors"
METADATA_KEYS = frozenset({"description", "source"})

#: (file name, top-level key) pairs some test module has requested.
REQUESTED: set[tuple[str, str]] = set()


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed vector file ``name`` (e.g. ``"oer.json"``)."""
    with (VECTOR_DIR / name).open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def section(name: str, key: str) -> Any:
    """The value under ``key`` in vector file ``name``; records that it is read."""
    data = load(name)
    if key not in data:
        raise KeyError(f"{name} has no section {key!r}")
    REQUESTED.add((name, key))
    return data[key]


def cases(name: str, key: str) -> list[Any]:
    """A list section, for ``pytest.mark.parametrize`` (every element becomes a test)."""
    value = section(name, key)
    if not isinstance(value, list):
        raise TypeError(f"{name}:{key} is not a list")
    return value


def case_id(case: Any) -> str:
    """A readable pytest id for a vector case."""
    if isinstance(case, dict):
        for field in ("name", "step", "pointer", "input", "value", "hex"):
            if field in case:
                return str(case[field])[:60]
    return str(case)[:60]


def all_sections() -> set[tuple[str, str]]:
    """Every (file, key) pair that must be read by some test."""
    out: set[tuple[str, str]] = set()
    for path in sorted(VECTOR_DIR.glob("*.json")):
        for key in load(path.name):
            if key not in METADATA_KEYS:
                out.add((path.name, key))
    return out
