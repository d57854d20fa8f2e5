"""Distinct account names for the worker processes of one receiver (``docs/scaling.md``).

The bundled connector lets every worker of a web app dial one account with the same
credentials: the connections join the account and its Prepares are spread over them.
Connectors that keep one connection per account need a name per worker instead:
ilp-plugin-btp's server mode closes the older connection when a newer one logs in, and
ilp-plugin-mini-accounts 4.2.0 sends every Prepare to *all* connections of the name
(every worker then decrypts every packet, and only the shared store's idempotency key
keeps it from being credited once per worker).  :func:`worker_uplink` turns
``btp+ws://shop:TOKEN@host`` into ``btp+ws://shop-<worker>:TOKEN@host``; every worker
keeps the same receiver secret and balance store, so any of them can fulfil a payment to
an address another one issued, and balances are shared.

The worker id is, in order: the ``worker`` argument, the ``ILP_RECEIVER_WORKER``
environment variable (a process manager can set it), or :func:`worker_slot` -- the
lowest small number no other live process on this machine holds for that uplink, so a
worker that gunicorn replaces takes the freed number and its account name back (the
addresses it issued stay payable, and no mini-account is registered per restart).

With the Flask adapter, whose ``ILP_RECEIVER_UPLINK`` may be a function called in each
worker process::

    app.config["ILP_RECEIVER_UPLINK"] = lambda: worker_uplink("btp+ws://shop:TOKEN@js-connector:7768")
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .connector.accounts import MAX_ACCOUNT_NAME_LENGTH, is_valid_account_name, token_digest
from .errors import ConfigError

__all__ = ["WORKER_ENV", "worker_name", "worker_slot", "worker_uplink"]

#: The environment variable that names this process's worker id.
WORKER_ENV: Final = "ILP_RECEIVER_WORKER"

# slot -> open lock file, held for the life of the process (per lock directory and key)
_held: dict[tuple[str, str], tuple[int, int]] = {}


def worker_slot(
    key: str = "ilp-receiver", *, directory: str | os.PathLike[str] | None = None, limit: int = 1024
) -> int:
    """The lowest number in ``0..limit-1`` that no other live process on this machine
    holds for ``key``: an exclusive ``flock`` on ``<directory>/<key>.<n>.lock`` (default
    directory: the system's temporary directory), held until this process exits (the
    kernel drops it then, even after ``kill -9``).  The same process asking again gets
    the same number; a forked child asks afresh."""
    root = Path(directory if directory is not None else tempfile.gettempdir())
    safe = hashlib.sha256(key.encode()).hexdigest()[:16]
    held = _held.get((str(root), safe))
    if held is not None and held[0] == os.getpid():
        return held[1]
    for slot in range(limit):
        path = root / f"ilp-receiver-worker.{safe}.{slot}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.set_inheritable(fd, False)
        _held[(str(root), safe)] = (os.getpid(), slot)
        # the descriptor stays open (and locked) for the life of the process
        return slot
    raise ConfigError("worker", f"all {limit} worker slots for this uplink are taken")


def worker_name(base: str, worker: str | int) -> str:
    """``<base>-<worker>``: one ILP address segment (``[A-Za-z0-9_~-]``, at most
    :data:`~ilp_receiver.connector.accounts.MAX_ACCOUNT_NAME_LENGTH` characters)."""
    name = f"{base}-{worker}"
    if not is_valid_account_name(name):
        raise ConfigError(
            "worker",
            f"{name[:80]!r} is not one ILP address segment ([A-Za-z0-9_~-], at most "
            f"{MAX_ACCOUNT_NAME_LENGTH} characters)",
        )
    return name


def worker_uplink(url: str, worker: str | int | None = None) -> str:
    """``url`` (``btp+ws://NAME:TOKEN@host:port/path``) with the account name made
    distinct for this worker: ``NAME-<worker>``.  A URL without a name uses the name a
    mini-accounts server derives from the token (base64url of its SHA-256).  Other
    uplinks (ILP over HTTP: one account per URL, shared by every process behind it) are
    returned unchanged.  ``worker`` defaults to ``$ILP_RECEIVER_WORKER``, else
    :func:`worker_slot` keyed by the uplink (without its token)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("btp+ws", "btp+wss"):
        return url
    token = unquote(parts.password or "")
    base = unquote(parts.username) if parts.username else token_digest(token)
    if worker is None:
        worker = os.environ.get(WORKER_ENV) or worker_slot(
            f"{parts.hostname}:{parts.port}{parts.path}#{base}"
        )
    name = worker_name(base, worker)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(name, safe='')}:{quote(token, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
