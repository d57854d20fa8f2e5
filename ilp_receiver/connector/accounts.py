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

With ``shared=True`` (``shared_balances``, a fleet of connectors on one store) no
process owns the balances: a change that a limit bounds (an incoming amount on an
account with ``max_balance``, an outgoing one on an account with ``min_balance``) is
*held* in the store itself when the Prepare arrives -- one atomic ``add`` with the
limit, which every instance sharing the store sees -- and undone on Reject; changes
no limit bounds are settled on Fulfill as above.  The in-memory numbers are then a
cache of what the store last said (:meth:`Ledger.refresh` rereads them).
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
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from ..links.base import Link
from ..stores.base import BalanceLimitError, BalanceStore
from .config import AccountConfig

__all__ = [
    "CLIP_LENGTH",
    "MAX_ACCOUNT_NAME_LENGTH",
    "Account",
    "Ledger",
    "Registration",
    "TokenBucket",
    "TokenRegistry",
    "clip",
    "is_valid_account_name",
    "token_digest",
]

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

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return self._tokens

    def take(self) -> bool:
        """Take one token; False when the bucket is empty (rate limited)."""
        tokens = self._refill()
        if tokens < 1.0:
            return False
        self._tokens = tokens - 1.0
        return True

    def available(self) -> bool:
        """Whether a token could be taken now (nothing is taken)."""
        return self._refill() >= 1.0

    def retry_after(self) -> float:
        """Seconds until a token can be taken (0 when one can be taken now)."""
        missing = 1.0 - self._refill()
        return 0.0 if missing <= 0 else missing / self.rate

    @property
    def full(self) -> bool:
        """Whether the bucket is full, i.e. it holds no trace of past takes (a limiter
        table may forget it)."""
        return self._refill() >= self.capacity


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


#: A mini-accounts username is "one ILP address segment" of at most this many
#: characters.  RFC 15 gives segments no length of their own (only the whole address:
#: "Maximum length 1023 characters"); 64 keeps names, log lines and the token file
#: small, leaves room under long connector addresses and fits the 43-character
#: base64url(sha256(token)) name of a client that sends no username.
MAX_ACCOUNT_NAME_LENGTH: Final = 64

#: RFC 15 segment alphabet: "segments ... [A-Za-z0-9_~-]+" -- no ``.``, so a name can
#: never reach below another account's address.
_ACCOUNT_NAME_RE: Final = re.compile(rf"[A-Za-z0-9_~-]{{1,{MAX_ACCOUNT_NAME_LENGTH}}}")

#: Names and tokens in log lines and error messages are cut to this many characters.
CLIP_LENGTH: Final = 32


def is_valid_account_name(name: object) -> bool:
    """Whether ``name`` may be a mini-accounts account name: one RFC 15 address segment
    (``[A-Za-z0-9_~-]``, no ``.``) of 1 to :data:`MAX_ACCOUNT_NAME_LENGTH` characters."""
    return type(name) is str and name.isascii() and _ACCOUNT_NAME_RE.fullmatch(name) is not None


def clip(text: str, limit: int = CLIP_LENGTH) -> str:
    """``text`` for a log line or an error message: its ``repr``, cut to ``limit``
    characters (with the full length) so that no unbounded input is ever echoed."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


@dataclass(slots=True)
class Registration:
    """One registered mini-account: the digest of its first token, the mini-accounts
    section (``group``) it belongs to (None: registered by a version that did not
    record it), and when it was registered and last seen (wall-clock seconds)."""

    digest: str
    group: str | None
    created: float
    seen: float
    #: ``seen`` as last written to the token file
    written_seen: float = field(default=0.0, repr=False)


class TokenRegistry:
    """Mini-accounts token rule: "the first token seen for an account is registered,
    later connections must match" (``03-btp.md``, ilp-plugin-mini-accounts).

    Only digests are kept (base64url(sha256(token))), compared in constant time, and
    written to ``path`` (mode 0600) when one is given.

    **The token file is an append-only journal** (JSON lines after a header line):
    ``add`` when an account registers, ``seen`` when it was last connected, ``del``
    when a registration expires.  A registration costs one ``O_APPEND`` write of one
    short line, whatever the number of accounts (the previous format rewrote the whole
    JSON object on every registration: latency grew with the file).  The line is
    written *before* the registration is accepted, so a restart (or a crash of the
    process) keeps every first token the connector ever accepted; there is no fsync per
    registration, so an OS crash or power loss may lose the last few (their clients
    simply register again).  Lines that no longer describe a live registration
    (``seen`` updates, expired accounts) are dropped by rewriting the file (to a
    temporary file, fsync, rename) once they outnumber the live ones by more than
    ``compact_slack``: the file stays within ``2 * accounts + compact_slack`` lines and
    the rewrite's cost is spread over the appends that caused it.  Registrations never
    trigger a rewrite.  ``seen`` is written at most once per ``seen_write_interval``
    seconds per account.

    A file in the old format (one JSON object ``{account: digest}``) is read and
    rewritten as a journal; names that are not one address segment
    (:func:`is_valid_account_name`) are dropped on load.  ``now`` is the wall clock
    used for records that carry no time (old files).
    """

    #: first line of a token file in journal format
    HEADER: Final = {"format": "ilp-receiver/mini-accounts-tokens", "version": 2}

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        now: float | None = None,
        seen_write_interval: float = 60.0,
        compact_slack: int = 256,
    ) -> None:
        self._path = Path(path) if path is not None else None
        self._records: dict[str, Registration] = {}
        self._counts: dict[str | None, int] = {}
        self._seen_write_interval = seen_write_interval
        self._slack = compact_slack
        #: lines in the file, header included (0: no file yet)
        self._lines = 0
        #: no compaction before the file has this many lines (after a failed one)
        self._retry_compaction_at = 0
        if self._path is not None and self._path.exists():
            self._load(self._path, time.time() if now is None else now)

    # ---------------------------------------------------------------- queries

    @property
    def path(self) -> Path | None:
        """The token file (None: in memory only)."""
        return self._path

    def get(self, account: str) -> Registration | None:
        """The registration of ``account``."""
        return self._records.get(account)

    def __contains__(self, account: object) -> bool:
        return account in self._records

    def __len__(self) -> int:
        return len(self._records)

    def count(self, group: str | None) -> int:
        """How many accounts are registered in ``group``."""
        return self._counts.get(group, 0)

    def names(self, group: str | None) -> list[str]:
        """The accounts registered in ``group``."""
        return [name for name, r in self._records.items() if r.group == group]

    def verify(self, account: str, token: str) -> bool:
        """Whether ``account`` is registered with ``token`` (constant-time compare)."""
        record = self._records.get(account)
        if record is None:
            return False
        return hmac.compare_digest(record.digest.encode(), token_digest(token).encode())

    # ---------------------------------------------------------------- changes

    def register(self, account: str, token: str, *, group: str | None, now: float) -> Registration:
        """Register ``token`` as the first token of the new account ``account``.

        The journal line is written first: an OSError leaves nothing registered.
        Raises ValueError when ``account`` is already registered or is not a valid name.
        """
        if account in self._records:
            raise ValueError(f"account {clip(account)} is already registered")
        if not is_valid_account_name(account):
            raise ValueError(f"{clip(account)} is not one ILP address segment")
        record = Registration(token_digest(token), group, now, now, now)
        self._write([self._add_line(account, record)])
        self._put(account, record)
        return record

    def check(self, account: str, token: str) -> bool:
        """Register the first token for ``account``; afterwards accept only that one.

        The rule without limits (no group, no name check beyond
        :func:`is_valid_account_name`); the connector uses :meth:`verify` and
        :meth:`register` with its own limits.
        """
        if account in self._records:
            return self.verify(account, token)
        if not is_valid_account_name(account):
            return False
        self.register(account, token, group=None, now=time.time())
        return True

    def touch(self, account: str, now: float) -> None:
        """``account`` is connected (or just left) at ``now``; written to the file at
        most once per ``seen_write_interval`` (a write error is logged, not raised)."""
        record = self._records.get(account)
        if record is None or now <= record.seen:
            return
        record.seen = now
        if now - record.written_seen < self._seen_write_interval:
            return
        try:
            self._write([{"op": "seen", "account": account, "at": round(now, 3)}])
        except OSError as exc:
            log.warning("cannot write the mini-accounts token file: %s", exc)
            return
        record.written_seen = now
        self._maybe_compact()

    def set_group(self, account: str, group: str) -> None:
        """Give an account registered without a group (an old token file) its group."""
        record = self._records.get(account)
        if record is None or record.group == group:
            return
        self._count(record.group, -1)
        record.group = group
        self._count(group, 1)
        try:
            self._write([self._add_line(account, record)])
        except OSError as exc:
            log.warning("cannot write the mini-accounts token file: %s", exc)
            return
        self._maybe_compact()

    def remove(self, account: str) -> bool:
        """Forget ``account`` (its name and first token are free again); whether it was
        registered.  A write error is logged (the account is forgotten all the same)."""
        record = self._records.pop(account, None)
        if record is None:
            return False
        self._count(record.group, -1)
        try:
            self._write([{"op": "del", "account": account}])
        except OSError as exc:
            log.warning("cannot write the mini-accounts token file: %s", exc)
        self._maybe_compact()
        return True

    # ---------------------------------------------------------------- the file

    def _put(self, account: str, record: Registration) -> None:
        old = self._records.get(account)
        if old is not None:
            self._count(old.group, -1)
        self._records[account] = record
        self._count(record.group, 1)

    def _count(self, group: str | None, delta: int) -> None:
        left = self._counts.get(group, 0) + delta
        if left:
            self._counts[group] = left
        else:
            self._counts.pop(group, None)

    @staticmethod
    def _add_line(account: str, record: Registration) -> dict[str, object]:
        return {
            "op": "add",
            "account": account,
            "digest": record.digest,
            "group": record.group,
            "created": round(record.created, 3),
            "seen": round(record.seen, 3),
        }

    @staticmethod
    def _encode(record: Mapping[str, object]) -> bytes:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")

    def _write(self, records: list[dict[str, object]]) -> None:
        """Append ``records`` to the file (one ``O_APPEND`` write)."""
        if self._path is None:
            return
        lines = [self._encode(r) for r in records]
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if self._lines == 0 or os.fstat(fd).st_size == 0:
                lines.insert(0, self._encode(self.HEADER))
                self._lines = 0
            data = memoryview(b"".join(lines))
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        self._lines += len(lines)

    def _maybe_compact(self) -> None:
        if self._lines > max(2 * len(self._records) + self._slack, self._retry_compaction_at):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the file with one ``add`` line per registration (atomic rename)."""
        if self._path is None:
            return
        tmp = self._path.with_suffix(self._path.suffix + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self._encode(self.HEADER))
                for account, record in self._records.items():
                    f.write(self._encode(self._add_line(account, record)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("cannot rewrite the mini-accounts token file: %s", exc)
            self._retry_compaction_at = self._lines + self._slack
            return
        self._lines = 1 + len(self._records)
        self._retry_compaction_at = 0
        for record in self._records.values():
            record.written_seen = record.seen

    def _load(self, path: Path, now: float) -> None:
        text = path.read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        first: object = None
        if lines:
            with contextlib.suppress(ValueError):
                first = json.loads(lines[0])
        if isinstance(first, dict) and first.get("format") == self.HEADER["format"]:
            bad = self._replay(lines[1:])
        elif isinstance(first, dict) and "op" in first:
            bad = self._replay(lines)  # a journal that lost its header
        elif not lines:
            bad = 0
        else:
            bad = self._load_legacy(path, text, now)
        self._lines = len(lines)
        if bad:
            log.warning("dropped %d invalid entries from the mini-accounts token file", bad)
        if bad or not (isinstance(first, dict) and first == self.HEADER):
            self._compact()  # migrate an old file / drop what was refused

    def _load_legacy(self, path: Path, text: str, now: float) -> int:
        """The format before the journal: ``{"account": "digest", ...}``."""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ConfigError(
                "connector.token_file",
                f"{path} is neither a mini-accounts token journal nor a JSON object",
            )
        bad = 0
        for account, digest in data.items():
            if is_valid_account_name(account) and isinstance(digest, str):
                self._put(account, Registration(digest, None, now, now, now))
            else:
                bad += 1
        return bad

    def _replay(self, lines: list[str]) -> int:
        """Apply journal lines; returns how many were refused."""
        bad = 0
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                bad += 1  # e.g. a line cut short by a crash
                continue
            op = entry.get("op") if isinstance(entry, dict) else None
            account = entry.get("account") if isinstance(entry, dict) else None
            if not isinstance(account, str):
                bad += 1
            elif op == "add":
                digest, group = entry.get("digest"), entry.get("group")
                created, seen = entry.get("created"), entry.get("seen")
                if (
                    not is_valid_account_name(account)
                    or not isinstance(digest, str)
                    or not (group is None or isinstance(group, str))
                    or not isinstance(created, int | float)
                    or not isinstance(seen, int | float)
                ):
                    bad += 1
                    continue
                self._put(
                    account, Registration(digest, group, float(created), float(seen), float(seen))
                )
            elif op == "seen":
                record = self._records.get(account)
                at = entry.get("at")
                if record is not None and isinstance(at, int | float) and at > record.seen:
                    record.seen = record.written_seen = float(at)
            elif op == "del":
                record = self._records.pop(account, None)
                if record is not None:
                    self._count(record.group, -1)
            else:
                bad += 1
        return bad


class Ledger:
    """Balances per account: settled (persisted) plus in-flight reservations.

    :meth:`reserve` checks the limits against settled + reserved and reserves the
    change; :meth:`settle` persists it (store first, then memory); :meth:`release`
    drops a reservation (Reject, timeout, invalid fulfillment).

    At most one store write is in flight; settlements arriving meanwhile wait for the
    next write, which carries all of them (summed per account).
    """

    def __init__(self, store: BalanceStore, key_prefix: str = "", *, shared: bool = False) -> None:
        self.store = store
        #: balances live in the store, shared with other connector processes (see the
        #: module docstring)
        self.shared = shared
        self._prefix = key_prefix
        self._settled: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        #: settled changes not yet handed to the store, summed per account
        self._unwritten: dict[str, int] = {}
        #: settled changes whose store write failed: counted in memory, written again
        #: with the next write (summed per account)
        self._unpersisted: dict[str, int] = {}
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
        """The settled balance of ``account`` (what it owes us); with ``shared``, what
        the store last said (held amounts of every instance included)."""
        return self._settled.get(account, 0)

    async def current_balance(self, account: str) -> int:
        """:meth:`balance`, read from the store first when it is ``shared``."""
        if self.shared:
            self._settled[account] = await self.store.balance(self._key(account))
        return self.balance(account)

    async def refresh(self) -> None:
        """With ``shared``: reread every balance from the store (others change them)."""
        if self.shared:
            await self.load()

    async def hold(
        self, account: str, delta: int, minimum: int | None, maximum: int | None
    ) -> bool:
        """``shared`` mode: apply ``delta`` in the store now if the stored balance stays
        within ``[minimum, maximum]`` (one atomic change, seen by every process sharing
        the store); False (nothing changed) when it would not.  Undo it with
        :meth:`unhold` (Reject) or keep it with :meth:`confirm` (Fulfill).  Raises
        :class:`~ilp_receiver.stores.StoreError` when the store fails."""
        try:
            result = await self.store.add(
                self._key(account), delta, minimum=minimum, maximum=maximum
            )
        except BalanceLimitError as exc:
            self._settled[account] = exc.balance
            return False
        self._settled[account] = result.balance
        self._reserved[account] = self._reserved.get(account, 0) + delta
        return True

    def confirm(self, account: str, delta: int) -> None:
        """A held change stays (its packet was fulfilled)."""
        self.release(account, delta)

    async def unhold(self, account: str, delta: int) -> None:
        """Undo a change made by :meth:`hold` (its packet was rejected).  A store
        failure is logged: the held amount then stays in the stored balance."""
        self.release(account, delta)
        try:
            result = await self.store.add(self._key(account), -delta)
        except Exception:
            log.exception(
                "balance store failed while undoing a held amount of account %s; the "
                "stored balance keeps %+d",
                clip(account),
                delta,
            )
            return
        self._settled[account] = result.balance

    def reserved(self, account: str) -> int:
        """The in-flight change of ``account``."""
        return self._reserved.get(account, 0)

    def balances(self) -> dict[str, int]:
        """Every settled balance."""
        return dict(self._settled)

    @property
    def unpersisted(self) -> dict[str, int]:
        """Settled changes the store has not taken yet (its writes failed), per account;
        the next write carries them again."""
        return dict(self._unpersisted)

    def forget(self, account: str) -> bool:
        """Drop a zero balance from memory (an expired mini-account); False, and nothing
        dropped, while the account has a settled, in-flight or unwritten change."""
        if (
            self._settled.get(account, 0)
            or account in self._reserved
            or account in self._unwritten
            or account in self._unpersisted
        ):
            return False
        self._settled.pop(account, None)
        return True

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
        has to go upstream anyway: we already paid downstream); the store is given it
        again with the next write (:attr:`unpersisted`) until one succeeds.  A caller cancelled
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
                retried, self._unpersisted = self._unpersisted, {}
                writes = changes
                if retried:
                    writes = dict(changes)
                    for account, delta in retried.items():
                        writes[account] = writes.get(account, 0) + delta
                try:
                    await self.store.add_many([(self._key(a), d) for a, d in writes.items() if d])
                except Exception:
                    # counted in memory all the same; the next write carries them again
                    for account, delta in writes.items():
                        if delta:
                            self._unpersisted[account] = self._unpersisted.get(account, 0) + delta
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
