"""Every section of every vector file is read by some test module."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import tests
from tests import vectorlib


def test_every_vector_section_is_read_by_a_test() -> None:
    for module in pkgutil.walk_packages([str(Path(tests.__file__).parent)], "tests."):
        if module.name.rsplit(".", 1)[-1].startswith("test_"):
            importlib.import_module(module.name)
    missing = sorted(vectorlib.all_sections() - vectorlib.REQUESTED)
    assert not missing, f"vector sections no test reads: {missing}"


def test_vectors_are_a_copy_of_the_shared_ones_when_present() -> None:
    shared = Path(tests.__file__).parent.parent.parent / "shared" / "vectors"
    if not shared.is_dir():
        return  # the project's own copy is authoritative when shared/ is not beside it
    for path in shared.glob("*.json"):
        ours = vectorlib.VECTOR_DIR / path.name
        assert ours.is_file(), f"{path.name} missing from tests/vectors"
        assert ours.read_bytes() == path.read_bytes(), f"{path.name} differs from shared copy"
