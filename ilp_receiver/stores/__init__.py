"""Balance stores: where credited payments are counted (design principles 5 and 6).

:func:`open_store` picks a store from a URL or path:

=============================================  ============================================
``None``, ``"memory:"``                        :class:`MemoryStore` (nothing persists)
``"balances.db"``, ``"/var/lib/x.db"``         :class:`SqliteStore` on that file (default)
``"sqlite:///rel.db"``, ``"sqlite:////abs.db"``  :class:`SqliteStore` (SQLAlchemy's form)
``"redis://host:6379/0"``, ``rediss://``,       :class:`~ilp_receiver.stores.redis.RedisStore`
``unix://``                                    (extra ``ilp-receiver[redis]``)
``"postgresql://user@host/db"``,               :class:`~ilp_receiver.stores.postgres.PostgresStore`
``postgres://``                                (extra ``ilp-receiver[postgres]``)
=============================================  ============================================

A Redis or PostgreSQL URL may carry the key / table prefix as a query parameter of its
own, ``?prefix=shop_`` (taken off before the URL reaches the driver): processes
configured by one URL string (environment variables, ``--store``) then share, or keep
apart, their balances by it.

The Redis and PostgreSQL modules are imported only when asked for.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from ..errors import ConfigError
from .base import (
    DEFAULT_RETENTION,
    AddResult,
    BalanceLimitError,
    BalanceStore,
    Clock,
    StoreClosedError,
    StoreError,
)
from .memory import MemoryStore
from .sqlite import SqliteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .redis import RedisStore

__all__ = [
    "DEFAULT_RETENTION",
    "AddResult",
    "BalanceLimitError",
    "BalanceStore",
    "Clock",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "SqliteStore",
    "StoreClosedError",
    "StoreError",
    "open_store",
]


def __getattr__(name: str) -> Any:
    """Import the optional stores lazily (their drivers are optional extras)."""
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    url_or_path: str | os.PathLike[str] | None = None,
    *,
    retention: float = DEFAULT_RETENTION,
    clock: Clock | None = None,
    prefix: str | None = None,
) -> BalanceStore:
    """Create the store named by ``url_or_path`` (see the module docstring).

    ``retention`` is how long idempotency keys are remembered (seconds), ``clock`` the
    time source, ``prefix`` the Redis key prefix (default ``"ilp:"``) or the PostgreSQL
    table prefix (default ``"ilp_"``; else the URL's ``?prefix=`` parameter).
    Networked stores connect on first use (or on ``await store.open()`` / ``async
    with``). A bad value raises :class:`ConfigError`
    for the field ``"store"``; a missing driver raises ``ImportError`` naming the extra.
    """
    if url_or_path is None:
        return MemoryStore(retention=retention, clock=clock)
    if isinstance(url_or_path, os.PathLike):
        url_or_path = os.fspath(url_or_path)
    if not isinstance(url_or_path, str):
        raise ConfigError("store", "expected a URL or a file path")
    value = url_or_path.strip()
    if not value:
        raise ConfigError("store", "empty value (use 'memory:' or a file path)")
    if value in ("memory:", "memory://"):
        return MemoryStore(retention=retention, clock=clock)
    scheme, sep, rest = value.partition("://")
    if not sep:
        if prefix is not None:
            raise ConfigError("store", "prefix applies to Redis and PostgreSQL stores only")
        return SqliteStore(value, retention=retention, clock=clock)
    scheme = scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as in SQLAlchemy.
        if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
            raise ConfigError(
                "store", "expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        if prefix is not None:
            raise ConfigError("store", "prefix applies to Redis and PostgreSQL stores only")
        return SqliteStore(rest[1:], retention=retention, clock=clock)
    if scheme in ("redis", "rediss", "unix", "postgresql", "postgres"):
        value, url_prefix = _split_prefix(value)
        if prefix is None:
            prefix = url_prefix
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore(
            value,
            prefix="ilp:" if prefix is None else prefix,
            retention=retention,
            clock=clock,
        )
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(
            value,
            prefix="ilp_" if prefix is None else prefix,
            retention=retention,
            clock=clock,
        )
    # Only the scheme is echoed: the rest of a URL may hold a password.
    raise ConfigError("store", f"unsupported scheme {scheme!r} (memory, sqlite, redis, postgresql)")


def _split_prefix(url: str) -> tuple[str, str | None]:
    """``url`` without its ``prefix`` query parameter, and that parameter (or None)."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, None
    params = parse_qsl(query, keep_blank_values=True)
    prefixes = [v for k, v in params if k == "prefix"]
    if not prefixes:
        return url, None
    rest = [(k, v) for k, v in params if k != "prefix"]
    return base + ("?" + urlencode(rest) if rest else ""), prefixes[-1]
