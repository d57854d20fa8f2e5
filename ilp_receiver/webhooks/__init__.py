"""Signed webhooks from the store's transactional outbox (``docs/webhooks.md``).

* :mod:`~ilp_receiver.webhooks.signing` -- the Standard Webhooks format: Ed25519
  (``v1a``) and HMAC-SHA256 (``v1``) signatures, key generation, :func:`verify_webhook`
  for Python consumers;
* :mod:`~ilp_receiver.webhooks.events` -- the versioned JSON body of each event;
* :mod:`~ilp_receiver.webhooks.dispatcher` -- :class:`WebhookDispatcher`, which claims
  events from a store's outbox and POSTs them (at least once, backoff with jitter, a
  per-endpoint concurrency limit, dead letters), and :class:`WebhookConfig`;
* :mod:`~ilp_receiver.webhooks.admin` -- the authenticated admin API (list, replay,
  metrics).

The outbox rows themselves are written by the stores (:mod:`ilp_receiver.stores.outbox`)
in the same transaction as the credit they describe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import EVENT_TYPES, SCHEMA_VERSION, event_body
from .signing import (
    DEFAULT_TOLERANCE,
    SigningKey,
    VerifyKey,
    WebhookVerificationError,
    generate_ed25519_key,
    generate_hmac_secret,
    parse_key,
    sign_headers,
    verify_webhook,
)

if TYPE_CHECKING:
    from .dispatcher import WebhookConfig, WebhookDispatcher

__all__ = [
    "DEFAULT_TOLERANCE",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "SigningKey",
    "VerifyKey",
    "WebhookConfig",
    "WebhookDispatcher",
    "WebhookVerificationError",
    "event_body",
    "generate_ed25519_key",
    "generate_hmac_secret",
    "parse_key",
    "sign_headers",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    """The dispatcher (aiohttp, the stores) is imported when first asked for."""
    if name in ("WebhookConfig", "WebhookDispatcher"):
        from . import dispatcher

        return getattr(dispatcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
