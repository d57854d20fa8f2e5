"""Outbox rows: the webhook events a store writes in the same transaction as a credit.

An :class:`OutboxEntry` is handed to a store's credit path
(``store.add(..., outbox=[entry])``) and written in the same transaction as the
credit, only when the credit applies (a duplicate or refused change writes nothing).
Entries with a ``merge_key`` are *aggregated in the store*: a credit whose merge key
matches an event row that is still open (written less than ``window`` seconds ago and
not yet claimed by a dispatcher) adds its amount to that row instead of writing a new
one, so one streamed payment of thousands of packets is one event per window.  A row
keeps the event id it was created with, so every credit belongs to exactly one event
and a redelivery carries the same id.

Claiming (:meth:`~ilp_receiver.stores.BalanceStore.outbox_claim`) seals a row (no more
merging), leases it to one dispatcher (a token and a lease deadline) and counts an
attempt; only an account's oldest pending rows are claimable (up to :data:`CLAIM_RUN`
consecutive due ones, which the dispatcher sends one after another), so an account's
events are delivered in order.  Acknowledged rows are deleted; rows that failed for
longer than the dispatcher's dead-letter age are kept as ``dead`` until replayed, or
purged (``outbox_purge``) once they have been dead for the retention.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "CLAIM_RUN",
    "CLAIM_SCAN",
    "MAX_ERROR",
    "OutboxEntry",
    "OutboxEvent",
    "OutboxState",
    "applicable_entries",
    "check_claim_args",
    "check_purge_age",
    "conditional_amount",
    "iso_time",
    "new_event_id",
    "select_heads",
]

#: How many of the oldest pending rows one claim looks at to find each account's first
#: (an account with more pending rows than this delays the accounts behind it).
CLAIM_SCAN = 256
#: The longest error text a row keeps (characters).
MAX_ERROR = 300
#: The most consecutive events of one account one claim takes (delivered one after
#: another, in order; the rest are released when one fails).
CLAIM_RUN = 16


def new_event_id() -> str:
    """A fresh event id: ``evt_`` and 32 hex digits (128 random bits)."""
    return "evt_" + os.urandom(16).hex()


def iso_time(at: float) -> str:
    """``at`` (seconds since the epoch) as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC)."""
    whole = math.floor(at)
    t = time.gmtime(whole)
    ms = min(999, int((at - whole) * 1000))
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}Z"
    )


OutboxState = Literal["pending", "dead"]


@dataclass(slots=True)
class OutboxEntry:
    """One event to write with a credit (or on its own, :meth:`outbox_write`).

    Treat it as read-only (not frozen only because frozen dataclasses cost
    microseconds to build, on the path of every credited packet).

    ``data`` is the JSON object (a mapping, or its JSON text) of fields that do not
    change when credits are merged (protocol, payment id, asset); the store keeps
    ``amount`` (summed), the number of credits and the ``balance`` after the latest
    one.  ``merge_key`` (None: never merged) names what may be aggregated; ``window``
    is how long the event stays open for merging and so the earliest a dispatcher sends
    it, in seconds.

    ``when`` makes an entry of the credit path conditional on the balance, decided
    inside the credit's transaction (:func:`conditional_amount`): ``"reaches"`` --
    written only when this credit takes the balance from below ``threshold`` to it or
    beyond (an order becomes paid); ``"exceeds"`` -- written when the balance ends
    above ``threshold``, with the amount of this credit that lies above it (an
    overpayment).
    """

    type: str
    account: str
    amount: int
    data: Mapping[str, Any] | str = field(default_factory=dict)
    merge_key: str | None = None
    window: float = 0.0
    #: the balance after the credit (set by the store on the credit path)
    balance: int | None = None
    event_id: str = field(default_factory=new_event_id)
    when: Literal["reaches", "exceeds"] | None = None
    threshold: int = 0

    def data_json(self) -> str:
        """``data`` as compact JSON text (what the stores keep); ``data`` may be given
        as that text already (a JSON object)."""
        if isinstance(self.data, str):
            return self.data
        return json.dumps(dict(self.data), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event row as a store returns it (claimed by a dispatcher, or listed)."""

    event_id: str
    #: the store's order of events (creation order; per account the delivery order)
    seq: int
    type: str
    account: str
    amount: int
    #: credits merged into this event
    count: int
    balance: int | None
    data: Mapping[str, Any]
    #: when the first credit was written, and the latest (seconds since the epoch)
    created: float
    last: float
    #: delivery attempts started (a claim counts one)
    attempts: int
    state: OutboxState = "pending"
    #: the claim's token (ack and retry must present it); "" when not claimed
    token: str = ""
    #: endpoints that already acknowledged this event (retries skip them)
    acked: tuple[str, ...] = ()
    error: str = ""
    #: the earliest time of the next attempt
    due: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for operators (CLI, admin API)."""
        return {
            "id": self.event_id,
            "type": self.type,
            "account": self.account,
            "amount": str(self.amount),
            "credits": self.count,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": iso_time(self.created),
            "next_attempt_at": iso_time(self.due) if self.state == "pending" else None,
            "acknowledged_by": list(self.acked),
            "last_error": self.error or None,
        }


def check_claim_args(limit: int, lease: float) -> None:
    """ValueError unless ``limit`` is a positive int and ``lease`` positive seconds."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError("limit must be a positive integer")
    if not isinstance(lease, int | float) or isinstance(lease, bool) or not lease > 0:
        raise ValueError("lease must be a positive number of seconds")


def check_purge_age(older_than: float) -> float:
    """``older_than`` as float seconds; ValueError unless a finite number >= 0."""
    if (
        not isinstance(older_than, int | float)
        or isinstance(older_than, bool)
        or not 0 <= older_than < math.inf
    ):
        raise ValueError("older_than must be a number of seconds >= 0")
    return float(older_than)


def select_heads(
    rows: list[tuple[str, str, float, float]], now: float, limit: int, run: int = 1
) -> list[str]:
    """From ``(event id, account, due, lease deadline)`` of pending rows in ``seq``
    order, the ids a claim takes: from each account's first row on, up to ``run``
    consecutive rows that are due and not leased (an account stops at its first row
    that is not), at most ``limit`` in all."""
    taken: dict[str, int] = {}  # account -> rows taken, or -1: blocked
    chosen: list[str] = []
    for event_id, account, due, lease_until in rows:
        count = taken.get(account, 0)
        if count < 0:
            continue
        if count < run and due <= now and lease_until <= now:
            taken[account] = count + 1
            chosen.append(event_id)
            if len(chosen) >= limit:
                break
        else:
            taken[account] = -1
    return chosen


def conditional_amount(entry: OutboxEntry, balance: int, delta: int) -> int | None:
    """The amount to write ``entry`` with after a credit of ``delta`` that left
    ``balance``, or None when its condition (``when``) does not hold."""
    if entry.when is None:
        return entry.amount
    before = balance - delta
    if entry.when == "reaches":
        return entry.amount if before < entry.threshold <= balance else None
    if balance > entry.threshold:
        return min(delta, balance - entry.threshold)
    return None


def applicable_entries(
    entries: Sequence[OutboxEntry], balance: int, delta: int
) -> list[OutboxEntry]:
    """The entries of a credit of ``delta`` that left ``balance`` whose condition
    holds, each with the amount to write."""
    found = []
    for entry in entries:
        amount = conditional_amount(entry, balance, delta)
        if amount is not None:
            found.append(entry if amount == entry.amount else replace(entry, amount=amount))
    return found
