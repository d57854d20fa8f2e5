"""Credit visitors from their verified incoming payments at the site's own wallet.

Today's Web Monetization (``13-modern-web-monetization.md`` §1): the extension pays an
incoming payment it created at the site's Open Payments wallet and fires ``monetization``
on the page's ``<link>`` with ``incomingPayment``.  The page posts that URL to the site
(:mod:`ilp_receiver.web.monetization_endpoints`, bound to the signed visitor cookie);
:class:`IncomingPaymentVerifier` then

1. learns the wallet's ``resourceServer`` and ``authServer`` from the wallet address
   document (cached; the resource server must be in ``resource_servers`` when that
   allow-list is given) and refuses a URL that is not
   ``<resourceServer>/incoming-payments/<id>``;
2. binds the incoming payment to the first visitor that reports it (a report of the
   same URL from another visitor is refused: a replayed event credits nobody);
3. GETs it (the public, unauthenticated read: ``{receivedAmount, authServer}``), checks
   ``authServer`` is the wallet's and the asset is the site's (a mismatch is refused,
   never converted);
4. credits the visitor's bucket by the **growth** of ``receivedAmount`` since it was last
   seen, exactly once: the seen amount is a counter in the receiver's balance store
   advanced by compare-and-set (``add`` with ``minimum == maximum ==`` the new value,
   atomic in every store, across processes), and only the process whose compare-and-set
   succeeded credits the difference, with an idempotency key naming the incoming
   payment and the new amount; the counter also records that last transition, so the
   next report or poll re-applies its credit under the same key (a no-op unless the
   winner died in between);
5. keeps polling it while the visitor is active (reports keep it active), with
   exponential backoff, and stops when it expires, completes, disappears, or after
   ``poll_lifetime`` seconds.

What it proves: that the wallet's resource server says the incoming payment received
that much, in the site's asset.  What it cannot in the public mode: that the incoming
payment belongs to *this* wallet address rather than another account on the same
resource server -- the public shape has no ``walletAddress``.  With ``gnap_key`` the
read is authenticated (a GNAP ``read-all`` grant, signed requests:
:mod:`ilp_receiver.open_payments_gnap`) and returns ``walletAddress``, which must be the
site's (``docs/web-monetization.md``).

Money above a bucket's ``max_balance`` is still credited:
it has already been received at the wallet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .errors import ConfigError
from .open_payments import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    IncomingPaymentState,
    OpenPaymentsError,
    OpenPaymentsFetcher,
    WalletAddress,
    incoming_payment_id,
    wallet_address_url,
)
from .open_payments_gnap import GnapReader, GnapSigningKey
from .stores.base import BalanceLimitError

if TYPE_CHECKING:
    from .monetization import Monetizer, Visitor

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "ENV_PREFIX",
    "VERIFIER_SETTINGS",
    "IncomingPaymentVerifier",
    "ReportResult",
    "verifier_from_settings",
]

log = logging.getLogger(__name__)

#: Where the verifier's counters live in the balance store (``<prefix>seen:<hash>``...).
DEFAULT_KEY_PREFIX: Final = "wm-op:"
_CAS_ATTEMPTS: Final = 8
_MASK: Final = (1 << 64) - 1
_MAX_ERRORS: Final = 5


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What one report (or poll) of an incoming payment did.

    ``credited``: what this call added to the bucket (0 when another process or an
    earlier report already counted it); ``received``: the incoming payment's
    ``receivedAmount``; ``balance``: the bucket's balance afterwards; ``watching``:
    whether the verifier keeps polling it.
    """

    credited: int
    received: int
    balance: int
    asset_code: str
    asset_scale: int
    watching: bool

    def to_json(self) -> dict[str, object]:
        """The JSON answer of the report endpoint (amounts as strings)."""
        return {
            "credited": str(self.credited),
            "receivedAmount": {
                "value": str(self.received),
                "assetCode": self.asset_code,
                "assetScale": self.asset_scale,
            },
            "balance": str(self.balance),
            "watching": self.watching,
        }


@dataclass(slots=True)
class _Watch:
    url: str
    key: str
    visitor: Visitor
    started: float
    last_report: float
    next_at: float
    interval: float
    errors: int = 0


class IncomingPaymentVerifier:
    """Verifies reported incoming payments and credits visitors' buckets by their growth.

    ``monetizer``: whose buckets (and store) to credit.  ``wallet_address``: the site's
    wallet address (what the ``<link>`` names).  ``asset_code`` / ``asset_scale``: the
    site's asset; None takes the wallet address's (either way the wallet's must match).
    ``resource_servers``: an allow-list for the resource server the wallet address names
    (empty: whatever it names).  ``allow_private`` / ``allow_insecure``: fetch from
    private addresses / over ``http://`` -- tests and local development only.
    ``timeout`` and ``max_bytes`` bound every GET.  Polling: first after
    ``poll_initial`` seconds, doubling up to ``poll_max`` while nothing arrives, for at
    most ``poll_lifetime`` seconds per incoming payment and only while the visitor
    reported within ``active_window`` seconds; at most ``max_watches`` at once and
    ``max_watches_per_visitor`` per visitor (beyond them a report is still verified and
    credited, only not polled); ``reports_per_minute`` reports per visitor and process
    (more are refused with ``429 TooManyReports``).  ``gnap_key``: read incoming
    payments with a GNAP ``read-all`` grant signed with this key (registered on
    ``wallet_address``), which returns ``walletAddress`` -- proving the payment is this
    wallet address's -- and ``completed`` / ``expiresAt``; None: the public read.
    """

    def __init__(
        self,
        monetizer: Monetizer,
        wallet_address: str,
        *,
        asset_code: str | None = None,
        asset_scale: int | None = None,
        resource_servers: tuple[str, ...] = (),
        allow_private: bool = False,
        allow_insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        wallet_ttl: float = 300.0,
        poll_initial: float = 2.0,
        poll_max: float = 30.0,
        poll_lifetime: float = 15 * 60.0,
        active_window: float = 120.0,
        max_watches: int = 10_000,
        max_watches_per_visitor: int = 16,
        reports_per_minute: int = 60,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        gnap_key: GnapSigningKey | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self.wallet_address = wallet_address_url(wallet_address, allow_insecure=allow_insecure)
        except OpenPaymentsError as exc:
            raise ConfigError("wallet_address", str(exc)) from None
        if (asset_code is None) != (asset_scale is None):
            raise ConfigError("asset_code", "give asset_code and asset_scale together")
        if asset_scale is not None and not 0 <= asset_scale <= 255:
            raise ConfigError("asset_scale", "must be in 0..255")
        if not 0 < poll_initial <= poll_max:
            raise ConfigError("poll_initial", "must be positive and at most poll_max")
        if (
            not poll_lifetime > 0
            or not active_window > 0
            or not max_watches > 0
            or not max_watches_per_visitor > 0
            or not reports_per_minute > 0
        ):
            raise ConfigError("poll_lifetime", "polling bounds must be positive")
        self.monetizer = monetizer
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.resource_servers = tuple(server.rstrip("/") for server in resource_servers)
        self.fetcher = OpenPaymentsFetcher(
            timeout=timeout,
            max_bytes=max_bytes,
            allow_private=allow_private,
            allow_insecure=allow_insecure,
        )
        self.wallet_ttl = wallet_ttl
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.poll_lifetime = poll_lifetime
        self.active_window = active_window
        self.max_watches = max_watches
        self.max_watches_per_visitor = max_watches_per_visitor
        self.reports_per_minute = reports_per_minute
        self._report_budget: dict[str, tuple[float, float]] = {}
        self.key_prefix = key_prefix
        self.clock = clock
        self.wall_clock = wall_clock
        #: the authenticated read (None: the public GET)
        self.gnap: GnapReader | None = None
        if gnap_key is not None:
            self.gnap = GnapReader(self.wallet_address, gnap_key, self.fetcher, clock=clock)
        self._wallet: WalletAddress | None = None
        self._wallet_at = 0.0
        self._wallet_lock: asyncio.Lock | None = None
        self._watches: dict[str, _Watch] = {}
        self._task: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"IncomingPaymentVerifier(wallet_address={self.wallet_address!r})"

    # -- the wallet --------------------------------------------------------------------

    async def wallet(self) -> WalletAddress:
        """The site's wallet address document (fetched, checked, cached ``wallet_ttl``).

        Raises :class:`~ilp_receiver.open_payments.OpenPaymentsError` when the wallet
        cannot be read or does not match the configuration (``WalletMismatch``,
        ``AssetMismatch``).
        """
        now = self.clock()
        cached = self._wallet
        if cached is not None and now - self._wallet_at < self.wallet_ttl:
            return cached
        if self._wallet_lock is None:
            self._wallet_lock = asyncio.Lock()
        async with self._wallet_lock:
            cached = self._wallet
            if cached is not None and self.clock() - self._wallet_at < self.wallet_ttl:
                return cached
            status, doc = await self.fetcher.get_json(self.wallet_address)
            if status != 200:
                raise OpenPaymentsError(
                    "WalletBadResponse", f"the wallet address answered HTTP {status}", 502
                )
            wallet = WalletAddress.from_json(doc)
            if self.resource_servers and wallet.resource_server not in self.resource_servers:
                raise OpenPaymentsError(
                    "WalletMismatch",
                    "the wallet names a resource server outside the configured allow-list",
                    502,
                )
            if self.asset_code is not None and (wallet.asset_code, wallet.asset_scale) != (
                self.asset_code,
                self.asset_scale,
            ):
                raise OpenPaymentsError(
                    "AssetMismatch",
                    f"the wallet holds {wallet.asset_code} at scale {wallet.asset_scale}, "
                    f"the site is configured for {self.asset_code} at scale {self.asset_scale}",
                    502,
                )
            self._wallet, self._wallet_at = wallet, self.clock()
            return wallet

    def _asset(self, wallet: WalletAddress) -> tuple[str, int]:
        if self.asset_code is not None and self.asset_scale is not None:
            return self.asset_code, self.asset_scale
        return wallet.asset_code, wallet.asset_scale

    # -- store keys --------------------------------------------------------------------

    def _hash(self, url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()[:40]

    async def _claim(self, key: str, account: str) -> bool:
        """Bind the incoming payment to ``account``: the first claimer wins, atomically.

        The claim counter may reach 1 only once; the same account claims again
        idempotently (its own idempotency key), any other one meets the limit.
        """
        owner = hashlib.sha256(account.encode("utf-8")).hexdigest()[:32]
        try:
            await self.monetizer.store.add(
                f"{self.key_prefix}claim:{key}",
                1,
                maximum=1,
                idempotency_key=f"{self.key_prefix}claim:{key}:{owner}",
            )
        except BalanceLimitError:
            return False
        return True

    async def _credit_growth(
        self, key: str, visitor: Visitor, received: int, url: str | None = None
    ) -> int:
        """Credit the growth of ``received`` once; what this call credited (``url``: the
        incoming payment, named in the ``visitor.credited`` webhook event).

        The counter packs the last transition, ``seen << 128 | before << 64 | at``:
        advancing it is a compare-and-set (``add`` with ``minimum == maximum``), and the
        winner credits ``seen - before`` under the idempotency key
        ``credit:<payment>:<seen>``.  Every later call first re-applies the last
        transition's credit under that same key -- a no-op unless the process that won
        died before crediting -- while the key is surely still remembered (less than half
        the store's retention after ``at``): a crash never doubles money, and loses none
        when the payment is reported or polled again within that time.
        """
        store = self.monetizer.store
        seen_key = f"{self.key_prefix}seen:{key}"
        credited = 0
        for _ in range(_CAS_ATTEMPTS):
            code = await store.balance(seen_key)
            seen, before, at = code >> 128, (code >> 64) & _MASK, code & _MASK
            if seen > before and self.wall_clock() - at < store.retention / 2:
                recovered = await self.monetizer.credit_once(
                    visitor,
                    seen - before,
                    f"{self.key_prefix}credit:{key}:{seen}",
                    incoming_payment=url,
                )
                if recovered.applied:
                    log.warning("credited an incoming payment's growth its reporter left")
                    credited += seen - before
            if received <= seen:
                return credited
            now = min(int(self.wall_clock()), _MASK)
            new_code = received << 128 | seen << 64 | now
            try:
                # compare-and-set: applies only when the counter still holds ``code``
                await store.add(seen_key, new_code - code, minimum=new_code, maximum=new_code)
            except BalanceLimitError:
                continue  # another report or process moved it: read again
            result = await self.monetizer.credit_once(
                visitor,
                received - seen,
                f"{self.key_prefix}credit:{key}:{received}",
                incoming_payment=url,
            )
            return credited + (received - seen if result.applied else 0)
        return credited

    # -- reports -----------------------------------------------------------------------

    async def report(
        self, visitor: Visitor, incoming_payment: str, payment_pointer: str | None = None
    ) -> ReportResult:
        """Verify a reported incoming payment and credit ``visitor`` by its growth.

        Raises :class:`~ilp_receiver.open_payments.OpenPaymentsError` (nothing
        credited): ``NotOurWallet`` (the URL or ``payment_pointer`` is not the site's
        wallet), ``IncomingPaymentClaimed`` (another visitor reported it first),
        ``UnknownIncomingPayment``, ``AssetMismatch``, ``WalletUnreachable``,
        ``WalletBadResponse``, ``PrivateAddress``, ``GrantRefused``, ``TooManyReports``.
        """
        wallet = await self.wallet()
        if payment_pointer is not None and payment_pointer.rstrip("/") not in (
            wallet.id.rstrip("/"),
            self.wallet_address.rstrip("/"),
        ):
            raise OpenPaymentsError(
                "NotOurWallet", "paymentPointer is not this site's wallet address", 400
            )
        if incoming_payment_id(incoming_payment, wallet.resource_server) is None:
            raise OpenPaymentsError(
                "NotOurWallet",
                "incomingPayment is not an incoming payment of this site's wallet",
                400,
            )
        self._rate_limit(visitor)
        key = self._hash(incoming_payment)
        # fetched before it is claimed, so made-up URLs leave nothing in the store
        state = await self._fetch(incoming_payment, wallet)
        if not await self._claim(key, visitor.account):
            raise OpenPaymentsError(
                "IncomingPaymentClaimed",
                "this incoming payment was reported for another visitor",
                409,
            )
        credited = await self._credit_growth(key, visitor, state.received, incoming_payment)
        watching = self._watch(incoming_payment, key, visitor, state)
        code, scale = self._asset(wallet)
        return ReportResult(
            credited=credited,
            received=state.received,
            balance=await self.monetizer.store.balance(visitor.account),
            asset_code=code,
            asset_scale=scale,
            watching=watching,
        )

    def _rate_limit(self, visitor: Visitor) -> None:
        """At most ``reports_per_minute`` reports per visitor (a token bucket, per process)."""
        now = self.clock()
        rate = self.reports_per_minute / 60.0
        tokens, last = self._report_budget.get(visitor.account, (self.reports_per_minute, now))
        tokens = min(float(self.reports_per_minute), tokens + (now - last) * rate)
        if tokens < 1:
            raise OpenPaymentsError(
                "TooManyReports", "too many reports from this visitor: try again later", 429
            )
        if len(self._report_budget) >= 4 * self.max_watches:
            self._report_budget.clear()  # bounded memory; a rare reset only loosens the limit
        self._report_budget[visitor.account] = (tokens - 1, now)

    async def _fetch(self, url: str, wallet: WalletAddress) -> IncomingPaymentState:
        gnap = self.gnap
        if gnap is not None:
            status, doc = await gnap.get(url, wallet.auth_server, wallet.id)
            if status in (401, 403):
                raise OpenPaymentsError(
                    "GrantRefused", f"the resource server refused our grant (HTTP {status})", 502
                )
        else:
            status, doc = await self.fetcher.get_json(url)
        if status in (404, 410):
            raise OpenPaymentsError("UnknownIncomingPayment", "the wallet has no such payment", 404)
        if status != 200:
            raise OpenPaymentsError(
                "WalletBadResponse", f"the incoming payment answered HTTP {status}", 502
            )
        state = IncomingPaymentState.from_json(doc)
        if gnap is not None and state.wallet_address is None:
            raise OpenPaymentsError(
                "WalletBadResponse", "the authenticated read has no walletAddress", 502
            )
        if state.auth_server is not None and state.auth_server != wallet.auth_server:
            raise OpenPaymentsError(
                "NotOurWallet", "the incoming payment names another authorization server", 400
            )
        if state.wallet_address is not None and state.wallet_address.rstrip("/") != (
            wallet.id.rstrip("/")
        ):
            raise OpenPaymentsError(
                "NotOurWallet", "the incoming payment belongs to another wallet address", 400
            )
        code, scale = self._asset(wallet)
        if state.asset_code is not None and (state.asset_code, state.asset_scale) != (code, scale):
            raise OpenPaymentsError(
                "AssetMismatch",
                f"the incoming payment is in {state.asset_code} at scale {state.asset_scale}, "
                f"the site takes {code} at scale {scale}",
                409,
            )
        return state

    # -- polling -----------------------------------------------------------------------

    @staticmethod
    def _finished(state: IncomingPaymentState) -> bool:
        if state.completed:
            return True
        return state.expires_at is not None and state.expires_at <= datetime.now(UTC)

    def _watch(self, url: str, key: str, visitor: Visitor, state: IncomingPaymentState) -> bool:
        now = self.clock()
        watch = self._watches.get(key)
        if self._finished(state):
            self._watches.pop(key, None)
            return False
        if watch is not None:
            watch.last_report = now
            watch.interval = self.poll_initial
            watch.next_at = now + self.poll_initial
        else:
            if len(self._watches) >= self.max_watches:
                return False
            mine = sum(1 for w in self._watches.values() if w.visitor.account == visitor.account)
            if mine >= self.max_watches_per_visitor:
                return False  # credited, not polled: a visitor cannot fill the poller
            self._watches[key] = _Watch(
                url, key, visitor, now, now, now + self.poll_initial, self.poll_initial
            )
        self._ensure_poller()
        return True

    @property
    def watching(self) -> int:
        """How many incoming payments are being polled."""
        return len(self._watches)

    def _ensure_poller(self) -> None:
        if self._kick is None or self._task is None or self._task.done():
            self._kick = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._poll_loop())
        self._kick.set()

    async def _poll_loop(self) -> None:
        kick = self._kick
        assert kick is not None
        while self._watches:
            now = self.clock()
            due = min(watch.next_at for watch in self._watches.values())
            if due > now:
                kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(kick.wait(), due - now)
                continue
            ready = [w for w in self._watches.values() if w.next_at <= now]
            await asyncio.gather(*(self._poll(w.key) for w in ready[:32]))

    def is_watched(self, incoming_payment: str) -> bool:
        """Whether ``incoming_payment`` is being polled."""
        return self._hash(incoming_payment) in self._watches

    async def poll(self, incoming_payment: str) -> int:
        """Poll one watched incoming payment now (the poller's step); what it credited.

        0 when it is not watched, or no longer: past ``poll_lifetime``, its visitor
        silent for ``active_window``, completed, expired, gone or failing.
        """
        return await self._poll(self._hash(incoming_payment))

    async def _poll(self, key: str) -> int:
        watch = self._watches.get(key)
        if watch is None:
            return 0
        now = self.clock()
        if now - watch.started > self.poll_lifetime or now - watch.last_report > self.active_window:
            self._watches.pop(key, None)
            return 0
        credited = 0
        try:
            wallet = await self.wallet()
            state = await self._fetch(watch.url, wallet)
            credited = await self._credit_growth(key, watch.visitor, state.received, watch.url)
        except OpenPaymentsError as exc:
            watch.errors += 1
            if exc.error_id in ("UnknownIncomingPayment", "AssetMismatch", "NotOurWallet") or (
                watch.errors >= _MAX_ERRORS
            ):
                self._watches.pop(key, None)
                return 0
        except Exception:  # a store failure: try later, the poller must not die
            log.exception("polling an incoming payment failed")
            watch.errors += 1
            if watch.errors >= _MAX_ERRORS:
                self._watches.pop(key, None)
            return 0
        else:
            watch.errors = 0
            if self._finished(state):
                self._watches.pop(key, None)
                return credited
        watch.interval = self.poll_initial if credited else min(watch.interval * 2, self.poll_max)
        watch.next_at = self.clock() + watch.interval
        return credited

    async def close(self) -> None:
        """Stop polling and close the HTTP session."""
        self._watches.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.fetcher.close()


#: Environment variables read by :func:`verifier_from_settings`: ``ILP_MONETIZATION_<NAME>``.
ENV_PREFIX: Final = "ILP_MONETIZATION_"
#: The setting names (framework configuration and environment) and their keywords.
VERIFIER_SETTINGS: Final = {
    "WALLET_ADDRESS": "wallet_address",
    "ASSET_CODE": "asset_code",
    "ASSET_SCALE": "asset_scale",
    "RESOURCE_SERVERS": "resource_servers",
    "ALLOW_PRIVATE": "allow_private",
    "ALLOW_INSECURE": "allow_insecure",
    "GNAP_KEY": "gnap_key",
    "GNAP_KEY_ID": "gnap_key_id",
}


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(name, "must be true or false")


def verifier_from_settings(
    monetizer: Monetizer, settings: Mapping[str, object], *, label: str = ENV_PREFIX
) -> IncomingPaymentVerifier | None:
    """The verifier configured by ``settings`` (then ``ILP_MONETIZATION_*`` variables).

    Names (upper case, as in :data:`VERIFIER_SETTINGS`): ``WALLET_ADDRESS`` (the site's
    wallet address; None: no verifier, returns None), ``ASSET_CODE`` and
    ``ASSET_SCALE`` (the site's asset; default: the wallet's), ``RESOURCE_SERVERS``
    (allow-list: a list, or a comma-separated string), ``ALLOW_PRIVATE`` and
    ``ALLOW_INSECURE`` (local development only), ``GNAP_KEY`` (a PKCS #8 Ed25519 PEM, or
    the path of one) and ``GNAP_KEY_ID`` for the authenticated read.  A setting absent
    from ``settings`` (or None) falls back to the environment variable
    ``ILP_MONETIZATION_<NAME>``.  A bad value is a
    :class:`~ilp_receiver.errors.ConfigError` naming it as ``<label><NAME>``.
    """
    values: dict[str, Any] = {}
    for name, keyword in VERIFIER_SETTINGS.items():
        value = settings.get(name)
        if value is None:
            value = os.environ.get(ENV_PREFIX + name)
        if value is not None:
            values[keyword] = value
    wallet = values.pop("wallet_address", None)
    if wallet is None or wallet == "":
        return None
    if "asset_scale" in values:
        try:
            values["asset_scale"] = int(values["asset_scale"])
        except (TypeError, ValueError):
            raise ConfigError(label + "ASSET_SCALE", "must be an integer") from None
    servers = values.get("resource_servers")
    if isinstance(servers, str):
        values["resource_servers"] = tuple(p.strip() for p in servers.split(",") if p.strip())
    elif servers is not None:
        values["resource_servers"] = tuple(str(p) for p in servers)
    for name in ("allow_private", "allow_insecure"):
        if name in values:
            values[name] = _flag(label + name.upper(), values[name])
    key_id = values.pop("gnap_key_id", None)
    pem = values.pop("gnap_key", None)
    if pem is not None:
        if key_id is None:
            raise ConfigError(label + "GNAP_KEY_ID", "give the key id registered at the wallet")
        text = str(pem)
        if "-----BEGIN" not in text:
            try:
                text = Path(text).read_text()
            except OSError as exc:
                raise ConfigError(label + "GNAP_KEY", f"cannot read {text}: {exc}") from None
        try:
            values["gnap_key"] = GnapSigningKey.from_pem(text, str(key_id))
        except ConfigError as exc:
            raise ConfigError(label + "GNAP_KEY", exc.problem) from None
    try:
        return IncomingPaymentVerifier(monetizer, str(wallet), **values)
    except ConfigError as exc:
        raise ConfigError(label + exc.field.upper(), exc.problem) from None
