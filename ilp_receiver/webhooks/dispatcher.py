"""The webhook dispatcher: claims events from a store's outbox and POSTs them, signed.

One :class:`WebhookDispatcher` runs in the receiver process by default (``AsyncReceiver``
with ``webhooks=``), or standalone (``ilp-receiver webhooks run --store ...``) for fleets;
any number may share one store, each row being claimed by one of them at a time (see
:meth:`~ilp_receiver.stores.BalanceStore.outbox_claim`).

Delivery is at least once:

* each round claims up to ``batch`` due events (each account's oldest, up to
  :data:`~ilp_receiver.stores.outbox.CLAIM_RUN` in a row, sent one after another so an
  account's events arrive in order; accounts in parallel) under a lease of ``lease``
  seconds, and POSTs each to every configured endpoint that has not acknowledged it
  yet -- at most ``concurrency`` requests in flight per endpoint;
* an answer ``2xx`` within ``timeout`` seconds acknowledges; anything else (another
  status, a timeout, a refused connection) is a failure: the event is tried again after
  ``backoff_first * 2**(attempts-1)`` seconds (at most ``backoff_max``), times a random
  factor in [0.5, 1) (jitter), or moved to the dead letters once its first credit is
  older than ``max_age``;
* a dispatcher that dies mid-delivery leaves its claims leased; when the lease runs
  out another round claims them again and sends them with the same ``webhook-id``.

Every network input is bounded: the response body is read up to
:data:`MAX_RESPONSE_BYTES` and dropped, redirects are not followed, each request has a
total ``timeout``.  Endpoint URLs (which may hold credentials) are logged by host only.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from ..errors import ConfigError
from ..stores.base import BalanceStore
from ..stores.outbox import OutboxEvent
from .events import event_body
from .signing import SigningKey, sign_headers

__all__ = [
    "DELIVERY_BUCKETS",
    "MAX_RESPONSE_BYTES",
    "WebhookConfig",
    "WebhookDispatcher",
    "WebhookMetrics",
    "check_url",
    "endpoint_label",
    "signing_keys",
]

log = logging.getLogger(__name__)

#: The most of a response body a delivery reads (then the connection is dropped).
MAX_RESPONSE_BYTES: Final = 64 * 1024
#: Upper bounds (seconds) of the delivery latency histogram: first credit to ack.
DELIVERY_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
_USER_AGENT: Final = "ilp-receiver-webhooks/1"


def endpoint_label(url: str) -> str:
    """``host:port`` of an endpoint URL: what logs and metrics show (never userinfo,
    path or query, which may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where and how events are sent.

    ``urls``: the endpoints (``http://`` or ``https://``); ``keys``: the signing keys
    (one signature each; two while rotating).  ``window``: seconds credits of one
    payment are aggregated into one event (and the least delay before it is sent).
    ``max_age``: seconds after which an undelivered event becomes a dead letter.
    ``dispatch``: run a dispatcher in the receiver process (else only write the
    outbox, for a standalone ``ilp-receiver webhooks run``; then ``keys`` may be empty).
    ``dead_retention``: seconds a dead letter is kept (for replay) before the
    dispatcher purges it, checked every ``purge_interval`` seconds; 0 keeps them.
    """

    urls: tuple[str, ...]
    keys: tuple[SigningKey, ...] = field(repr=False)
    window: float = 1.0
    max_age: float = 3 * 24 * 3600.0
    timeout: float = 10.0
    concurrency: int = 4
    batch: int = 64
    lease: float = 300.0
    backoff_first: float = 1.0
    backoff_max: float = 3600.0
    poll_interval: float = 0.5
    dispatch: bool = True
    dead_retention: float = 30 * 24 * 3600.0
    purge_interval: float = 3600.0

    def __post_init__(self) -> None:
        if not self.keys and self.dispatch:
            raise ConfigError("webhook_key", "a signing key is needed (whsk_... or whsec_...)")
        for key in self.keys:
            if not isinstance(key, SigningKey):
                raise ConfigError(
                    "webhook_key", "signing needs a secret key (whsk_... or whsec_...)"
                )
        for url in self.urls:
            check_url(url)
        for name in (
            "window",
            "max_age",
            "timeout",
            "lease",
            "backoff_first",
            "backoff_max",
            "dead_retention",
            "purge_interval",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ConfigError("webhook_" + name, f"must be a number of seconds, got {value!r}")
        if self.timeout <= 0 or self.lease <= self.timeout:
            raise ConfigError("webhook_lease", "the lease must be longer than the timeout")
        if self.purge_interval <= 0:
            raise ConfigError("webhook_purge_interval", "must be a positive number of seconds")
        if not 0 < self.poll_interval <= 60:
            raise ConfigError("webhook_poll_interval", "must be in (0, 60] seconds")
        for name in ("concurrency", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 1000:
                raise ConfigError(
                    "webhook_" + name, f"must be an integer in 1..1000, got {value!r}"
                )

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones (with jitter)."""
        exponent = max(0, min(attempts - 1, 40))
        base: float = min(self.backoff_max, self.backoff_first * 2.0**exponent)
        return base * (0.5 + random.random() / 2)


def check_url(url: str, setting: str = "webhook_url") -> str:
    """ConfigError unless ``url`` is an absolute ``http(s)://`` URL with a host."""
    if not isinstance(url, str):
        raise ConfigError(setting, f"expected a URL, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(setting, "expected an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError:
        raise ConfigError(setting, "the URL has a bad port") from None
    return url


class WebhookMetrics:
    """Counters of one dispatcher, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        #: (endpoint label, result) -> requests; result is ``ok`` or ``failed``
        self.requests: dict[tuple[str, str], int] = {}
        self.delivered = 0
        self.dead = 0
        self.retried = 0
        self.purged = 0
        self._buckets = [0] * (len(DELIVERY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def request(self, endpoint: str, ok: bool) -> None:
        """Count one POST."""
        key = (endpoint, "ok" if ok else "failed")
        self.requests[key] = self.requests.get(key, 0) + 1

    def latency(self, seconds: float) -> None:
        """One event acknowledged ``seconds`` after its first credit."""
        self.delivered += 1
        self._latency_sum += seconds
        self._buckets[bisect.bisect_left(DELIVERY_BUCKETS, seconds)] += 1

    def render(self, counts: dict[str, int]) -> str:
        """The metrics (with the outbox depth ``counts``) as Prometheus text 0.0.4."""
        lines = [
            "# HELP ilp_receiver_webhook_queue_depth Outbox events by state.",
            "# TYPE ilp_receiver_webhook_queue_depth gauge",
        ]
        for state in sorted(counts):
            lines.append(f'ilp_receiver_webhook_queue_depth{{state="{state}"}} {counts[state]}')
        lines += [
            "# HELP ilp_receiver_webhook_requests_total POSTs to endpoints by result.",
            "# TYPE ilp_receiver_webhook_requests_total counter",
        ]
        for (endpoint, result), n in sorted(self.requests.items()):
            label = endpoint.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(
                f'ilp_receiver_webhook_requests_total{{endpoint="{label}",result="{result}"}} {n}'
            )
        for name, help_text, value in (
            ("delivered", "Events acknowledged by every endpoint.", self.delivered),
            ("retries", "Failed attempts scheduled for a retry.", self.retried),
            ("dead", "Events moved to the dead letters.", self.dead),
            ("purged", "Dead letters deleted after their retention.", self.purged),
        ):
            lines += [
                f"# HELP ilp_receiver_webhook_{name}_total {help_text}",
                f"# TYPE ilp_receiver_webhook_{name}_total counter",
                f"ilp_receiver_webhook_{name}_total {value}",
            ]
        lines += [
            "# HELP ilp_receiver_webhook_delivery_seconds From the first credit to the ack.",
            "# TYPE ilp_receiver_webhook_delivery_seconds histogram",
        ]
        running = 0
        for bound, n in zip(DELIVERY_BUCKETS, self._buckets, strict=False):
            running += n
            lines.append(f'ilp_receiver_webhook_delivery_seconds_bucket{{le="{bound}"}} {running}')
        lines.append(f'ilp_receiver_webhook_delivery_seconds_bucket{{le="+Inf"}} {self.delivered}')
        lines.append(f"ilp_receiver_webhook_delivery_seconds_sum {self._latency_sum}")
        lines.append(f"ilp_receiver_webhook_delivery_seconds_count {self.delivered}")
        return "\n".join(lines) + "\n"


class WebhookDispatcher:
    """Delivers a store's outbox to the endpoints of ``config`` (module docstring).

    :meth:`start` runs rounds in a task until :meth:`stop`; :meth:`run_once` runs one
    round (tests, ``ilp-receiver webhooks run --once``).  ``session`` may be an
    existing ``aiohttp.ClientSession`` (left open by :meth:`stop`).
    """

    def __init__(
        self,
        store: BalanceStore,
        config: WebhookConfig,
        *,
        worker: str | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not store.supports_outbox:
            raise ConfigError("store", f"{type(store).__name__} has no webhook outbox")
        if not config.keys or not config.urls:
            raise ConfigError("webhook_key", "a dispatcher needs endpoints and a signing key")
        self.store = store
        self.config = config
        #: names this dispatcher's claims in logs
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = WebhookMetrics()
        self._session = session
        self._owns_session = session is None
        self._clock = clock or store.clock
        self._limits = {url: asyncio.Semaphore(config.concurrency) for url in config.urls}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._failures_logged = 0
        self._next_purge = 0.0  # by self._clock: the first round purges

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Run delivery rounds in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Let the current round finish (at most ``timeout`` + 1 seconds; then it is
        cancelled, and its claims stay leased until the lease runs out and are sent
        again), then close the HTTP session."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({task}, timeout=self.config.timeout + 1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._stopping = False
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Start the next round now (new events were written)."""
        self._wake.set()

    async def _run(self) -> None:
        delay = self.config.poll_interval
        while not self._stopping:
            try:
                await self.purge_due()
                claimed = await self.run_once()
                delay = self.config.poll_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                claimed = 0
                delay = min(30.0, delay * 2)
                log.warning("webhook round failed (%s); retrying in %.1f s", exc, delay)
            if claimed or self._stopping:
                continue  # more may be due at once
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def purge_due(self) -> int:
        """Purge the dead letters older than ``dead_retention`` when the last purge is
        ``purge_interval`` ago (the background rounds call it); how many were purged."""
        retention = self.config.dead_retention
        now = self._clock()
        if retention <= 0 or now < self._next_purge:
            return 0
        self._next_purge = now + self.config.purge_interval
        purged = await self.store.outbox_purge(retention)
        self.metrics.purged += purged
        if purged:
            log.info("purged %d webhook dead letters older than %.0f s", purged, retention)
        return purged

    # -- one round -----------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": _USER_AGENT},
                max_line_size=8190,
                max_field_size=8190,
            )
        return self._session

    async def run_once(self) -> int:
        """Claim due events once and deliver them all; returns how many were claimed.

        Accounts are served concurrently; one account's events one after another, in
        order: after a failure the account's remaining claims are released untouched
        (they wait behind the failed one)."""
        events = await self.store.outbox_claim(self.worker, self.config.batch, self.config.lease)
        by_account: dict[str, list[OutboxEvent]] = {}
        for event in events:
            by_account.setdefault(event.account, []).append(event)
        if by_account:
            await asyncio.gather(*(self._deliver_run(run) for run in by_account.values()))
        return len(events)

    async def _deliver_run(self, run: list[OutboxEvent]) -> None:
        for index, event in enumerate(run):
            if not await self._deliver(event):
                for later in run[index + 1 :]:
                    with contextlib.suppress(Exception):  # else the lease runs out
                        await self.store.outbox_retry(
                            later.event_id,
                            later.token,
                            due=later.due,
                            error=later.error,
                            acked=later.acked,
                        )
                return

    async def _deliver(self, event: OutboxEvent) -> bool:
        """POST one event to the endpoints that have not acknowledged it; whether every
        endpoint has now."""
        body = event_body(event)
        acked = list(event.acked)
        targets = [url for url in self.config.urls if url not in acked]
        outcomes = await asyncio.gather(*(self._post(url, event, body) for url in targets))
        errors = []
        for url, error in zip(targets, outcomes, strict=True):
            if error is None:
                acked.append(url)
            else:
                errors.append(f"{endpoint_label(url)}: {error}")
        try:
            if not errors:
                if await self.store.outbox_ack(event.event_id, event.token):
                    self.metrics.latency(max(0.0, self._clock() - event.created))
                return True
            now = self._clock()
            error = "; ".join(errors)
            dead = now - event.created >= self.config.max_age
            await self.store.outbox_retry(
                event.event_id,
                event.token,
                due=now + self.config.backoff(event.attempts),
                error=error,
                acked=acked,
                dead=dead,
            )
            if dead:
                self.metrics.dead += 1
                log.warning(
                    "webhook event %s is a dead letter after %d attempts (%s)",
                    event.event_id,
                    event.attempts,
                    error,
                )
            else:
                self.metrics.retried += 1
                self._failures_logged += 1
                if self._failures_logged in (1, 10, 100) or self._failures_logged % 1000 == 0:
                    log.info(
                        "webhook event %s failed (attempt %d): %s",
                        event.event_id,
                        event.attempts,
                        error,
                    )
        except Exception:
            # the lease runs out and the event is claimed again: nothing is lost
            log.warning("could not record the outcome of webhook %s", event.event_id)
        return False

    async def _post(self, url: str, event: OutboxEvent, body: bytes) -> str | None:
        """POST ``body`` to ``url``; None when acknowledged (2xx), else why not."""
        label = endpoint_label(url)
        headers = sign_headers(list(self.config.keys), event.event_id, body)
        headers["Content-Type"] = "application/json"
        async with self._limits[url]:
            try:
                async with self._http().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        await response.content.read(MAX_RESPONSE_BYTES)
                    ok = 200 <= response.status < 300
                    self.metrics.request(label, ok)
                    return None if ok else f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.metrics.request(label, False)
                return type(exc).__name__

    # -- operations ------------------------------------------------------------------------

    async def metrics_text(self) -> str:
        """The Prometheus text of :attr:`metrics` with the outbox depth now."""
        return self.metrics.render(await self.store.outbox_counts())


def signing_keys(keys: Sequence[str], setting: str = "webhook_key") -> tuple[SigningKey, ...]:
    """Parse signing keys from text (``whsk_`` / ``whsec_``); a public key or a bad
    value is a ConfigError naming ``setting``."""
    from .signing import parse_key

    parsed = []
    for text in keys:
        key = parse_key(text, setting=setting)
        if not isinstance(key, SigningKey):
            raise ConfigError(setting, "a whpk_ public key cannot sign: give the whsk_ key")
        parsed.append(key)
    return tuple(parsed)
