"""Fixtures shared by several test modules.

``make_store`` (defined with the store contract tests in ``tests/test_stores.py``) gives a
test one store factory per backend -- memory, SQLite, Redis, PostgreSQL -- so any
module can run its test against every store.
"""

from __future__ import annotations

from tests.test_stores import make_store

__all__ = ["make_store"]
