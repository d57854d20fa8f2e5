"""Accounts of the bundled connector: per-account runtime state, the rate limiter, the
balance ledger and the mini-accounts token registry.

Balance convention (the one ilp-connector uses): an account's balance is what the
account owes us.  An incoming Prepare from account A raises A's balance by its amount
(A's ``max_balance`` must hold), an outgoing Prepare to account B lowers B's balance
(B's ``min_balance`` must hold); both are *reserved* while the packet is in flight,
kept on Fulfill and rolled back on Reject.  il-balance answers ``-balance`` ("positive
values meaning the balance is in the requester's favour").

The ledger keeps the authoritative numbers in memory (one process owns a connector's
balances) and writes every settled change to the balance store before the Fulfill is
passed upstream (design principle 5), so balances survive a restart.  The writes are
*group-committed*: settlements that arrive while a write is in flight are summed per
account and written together by the next one (one ``add_many`` call, one SQLite
transaction), so under load the cost of a commit is shared by many packets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..links.base import Link
from ..stores.base import BalanceStore
from .config import AccountConfig

__all__ = ["Account", "Ledger", "TokenBucket", "TokenRegistry", "token_digest"]

log = logging.getLogger(__name__)


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` stored."""

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._last = clock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty (rate limited)."""
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


@dataclass(slots=True)
class Account:
    """A configured or connected account: its settings, its link and its limiter."""

    config: AccountConfig
    link: Link | None = None
    bucket: TokenBucket | None = None
    #: for mini-accounts children: the template section they were created from
    group: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        """The account id (also a child's address segment)."""
        return self.config.id

    @property
    def relation(self) -> str:
        """``parent``, ``peer`` or ``child``."""
        return self.config.relation

    @property
    def is_connected(self) -> bool:
        """Whether the account's link is up."""
        return self.link is not None and self.link.is_connected


def token_digest(token: str) -> str:
    """base64url(sha256(token)) without padding, as ilp-plugin-mini-accounts stores it."""
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class TokenRegistry:
    """Mini-accounts token rule: "the first token seen for an account is registered,
    later connections must match" (``03-btp.md``, ilp-plugin-mini-accounts).

    Only digests are kept (base64url(sha256(token))), compared in constant time, and
    written to ``path`` (JSON, mode 0600) when one is given.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._digests: dict[str, str] = {}
        if self._path is not None and self._path.exists():
            data = json.loads(self._path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                self._digests = {str(k): str(v) for k, v in data.items()}

    def check(self, account: str, token: str) -> bool:
        """Register the first token for ``account``; afterwards accept only that one."""
        digest = token_digest(token)
        known = self._digests.get(account)
        if known is None:
            self._digests[account] = digest
            self._save()
            return True
        return hmac.compare_digest(known.encode(), digest.encode())

    def __contains__(self, account: object) -> bool:
        return account in self._digests

    def _save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(self._path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._digests, f)
        os.replace(tmp, self._path)


class Ledger:
    """Balances per account: settled (persisted) plus in-flight reservations.

    :meth:`reserve` checks the limits against settled + reserved and reserves the
    change; :meth:`settle` persists it (store first, then memory); :meth:`release`
    drops a reservation (Reject, timeout, invalid fulfillment).

    At most one store write is in flight; settlements arriving meanwhile wait for the
    next write, which carries all of them (summed per account).
    """

    def __init__(self, store: BalanceStore, key_prefix: str = "") -> None:
        self.store = store
        self._prefix = key_prefix
        self._settled: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        #: settled changes not yet handed to the store, summed per account
        self._unwritten: dict[str, int] = {}
        self._waiters: list[asyncio.Future[bool]] = []
        self._writing = False
        self._orphan_writes: set[asyncio.Task[None]] = set()

    def _key(self, account: str) -> str:
        return self._prefix + account

    async def load(self) -> None:
        """Read every stored balance (at start)."""
        for key, value in (await self.store.balances(self._prefix)).items():
            self._settled[key[len(self._prefix) :]] = value

    async def load_account(self, account: str) -> None:
        """Read one account's stored balance (a new mini-accounts child)."""
        if account not in self._settled:
            self._settled[account] = await self.store.balance(self._key(account))

    def balance(self, account: str) -> int:
        """The settled balance of ``account`` (what it owes us)."""
        return self._settled.get(account, 0)

    def reserved(self, account: str) -> int:
        """The in-flight change of ``account``."""
        return self._reserved.get(account, 0)

    def balances(self) -> dict[str, int]:
        """Every settled balance."""
        return dict(self._settled)

    def reserve(self, account: str, delta: int, minimum: int | None, maximum: int | None) -> bool:
        """Reserve ``delta`` if the balance (settled + in flight + delta) stays within
        ``[minimum, maximum]``; False (nothing reserved) otherwise.
        """
        pending = self._reserved.get(account, 0)
        new = self._settled.get(account, 0) + pending + delta
        if delta > 0 and maximum is not None and new > maximum:
            return False
        if delta < 0 and minimum is not None and new < minimum:
            return False
        self._reserved[account] = pending + delta
        return True

    def release(self, account: str, delta: int) -> None:
        """Drop a reservation made with :meth:`reserve`."""
        left = self._reserved.get(account, 0) - delta
        if left:
            self._reserved[account] = left
        else:
            self._reserved.pop(account, None)

    async def settle(self, changes: list[tuple[str, int]]) -> None:
        """Make reserved changes final: write them to the store, then count them;
        returns once they are committed (group-committed with concurrent calls).

        A store failure is logged and the change still counts in memory (the Fulfill
        has to go upstream anyway: we already paid downstream).  A caller cancelled
        while waiting does not undo its change: it is written all the same.

        Group commit without a writer task: the first caller writes (it *leads*);
        callers arriving meanwhile wait, and the first of them is woken to lead the
        next write, which carries every change queued until then.
        """
        unwritten = self._unwritten
        changed = False
        for account, delta in changes:
            if delta:
                unwritten[account] = unwritten.get(account, 0) + delta
                changed = True
        if not changed:
            return
        if self._writing:
            if not await self._wait_turn():
                return  # written by the leader
        else:
            self._writing = True
            # Let the Fulfills already delivered in this loop iteration join the write
            # (one commit for all of them; the store may commit inline, without yielding).
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                self._writing = False  # pass the write on (ours stays queued)
                self._hand_over()
                raise
        await self._lead()

    async def _wait_turn(self) -> bool:
        """Wait for the write in flight; True when woken to lead the next one."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._writing = False  # made leader, then cancelled: pass it on
                self._hand_over()
            raise

    async def _lead(self) -> None:
        """Write the queued changes (``_writing`` is set) until handing over or done."""
        handed_over = False
        try:
            while self._unwritten:
                changes, self._unwritten = self._unwritten, {}
                waiters, self._waiters = self._waiters, []
                try:
                    await self.store.add_many([(self._key(a), d) for a, d in changes.items() if d])
                except Exception:
                    log.exception("balance store failed while settling fulfilled packets")
                finally:
                    settled = self._settled
                    for account, delta in changes.items():
                        self.release(account, delta)
                        settled[account] = settled.get(account, 0) + delta
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(False)
                if self._unwritten and self._wake_next_leader():
                    handed_over = True
                    return
        finally:
            if not handed_over:
                self._writing = False
                self._hand_over()

    def _wake_next_leader(self) -> bool:
        """Make the first live waiter the leader of the next write."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(True)
                return True
        return False

    def _hand_over(self) -> None:
        """Called with ``_writing`` cleared: if changes are still queued (a leader was
        cancelled), let a waiter or a task write them."""
        if not self._unwritten:
            return
        self._writing = True
        if not self._wake_next_leader():
            task = asyncio.ensure_future(self._lead())
            self._orphan_writes.add(task)
            task.add_done_callback(self._orphan_writes.discard)

    async def flush(self) -> None:
        """Wait until every settled change has been written to the store."""
        while self._writing or self._unwritten:
            if not self._writing:
                self._writing = True
                await self._lead()
                continue
            if await self._wait_turn():
                await self._lead()

    async def close(self) -> None:
        """Write what is pending, then close the store."""
        with contextlib.suppress(Exception):
            await self.flush()
        with contextlib.suppress(Exception):
            await self.store.close()
