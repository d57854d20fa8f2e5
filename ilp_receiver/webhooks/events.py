"""The JSON a webhook consumer receives: one body per event, schema version 1.

:func:`event_body` renders a claimed outbox row
(:class:`~ilp_receiver.stores.outbox.OutboxEvent`; written with the credit it
describes, see :mod:`ilp_receiver.stores.outbox`) as::

    {"id": "evt_...", "type": "payment.received", "version": 1,
     "created_at": "2026-12-06T05:40:00.000Z",
     "data": {"account": "endpoint:default", "amount": "1500", "credits": 3,
              "balance": "90000", "asset": {"code": "XRP", "scale": 9},
              "protocol": "stream", "payment_id": "...",
              "first_credit_at": "...", "last_credit_at": "..."}}

Amounts and balances are decimal strings (UInt64 sums exceed JSON-safe integers).
``docs/webhooks.md`` documents every type and field.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ..stores.outbox import OutboxEvent, iso_time

__all__ = ["EVENT_TYPES", "SCHEMA_VERSION", "event_body"]

#: The version of the event JSON schema (``version`` in every body).
SCHEMA_VERSION: Final = 1
#: The event types this version writes.
EVENT_TYPES: Final = (
    "payment.received",
    "payment.completed",
    "payment.reverted",
    "order.paid",
    "order.overpaid",
    "visitor.credited",
    "paywall.debited",
    "paywall.refunded",
    "visitor.debited",
    "visitor.expired",
)


def event_body(event: OutboxEvent) -> bytes:
    """The JSON body of ``event`` (schema :data:`SCHEMA_VERSION`; the same bytes for
    every attempt)."""
    data: dict[str, Any] = dict(event.data)
    data["account"] = event.account
    data["amount"] = str(event.amount)
    data["credits"] = event.count
    if event.balance is not None:
        data["balance"] = str(event.balance)
    data["first_credit_at"] = iso_time(event.created)
    data["last_credit_at"] = iso_time(event.last)
    body = {
        "id": event.event_id,
        "type": event.type,
        "version": SCHEMA_VERSION,
        "created_at": iso_time(event.created),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
