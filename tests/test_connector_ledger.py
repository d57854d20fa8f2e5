"""The connector's Ledger when its balance store fails: the Fulfill's change counts in
memory and the store is given it again with the next write, until it takes it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ilp_receiver.connector.accounts import Ledger
from ilp_receiver.stores import AddResult, MemoryStore, StoreError


class FlakyStore(MemoryStore):
    """A memory store whose next ``failures`` batch writes fail."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def add_many(self, changes: Sequence[tuple[str, int]]) -> list[AddResult]:
        if self.failures:
            self.failures -= 1
            raise StoreError("backend down")
        return await super().add_many(changes)


async def test_a_failed_balance_write_is_carried_by_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(failures=2)
    ledger = Ledger(store, "conn:")
    assert ledger.reserve("a", 10, None, None)
    await ledger.settle([("a", 10)])  # the store fails: logged, counted in memory
    assert "balance store failed" in caplog.text
    assert ledger.balance("a") == 10 and ledger.reserved("a") == 0
    assert ledger.unpersisted == {"a": 10}
    assert await store.balance("conn:a") == 0
    assert ledger.forget("a") is False  # not while the store lacks a change

    assert ledger.reserve("b", -4, None, None)
    await ledger.settle([("b", -4)])  # fails again: both wait for the next write
    assert ledger.unpersisted == {"a": 10, "b": -4}

    assert ledger.reserve("a", 5, None, None)
    await ledger.settle([("a", 5)])  # the store is back: it takes everything once
    assert ledger.balances() == {"a": 15, "b": -4}
    assert ledger.unpersisted == {}
    assert await store.balances("conn:") == {"conn:a": 15, "conn:b": -4}
