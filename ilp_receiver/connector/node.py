"""The bundled connector: accounts and their links, listeners, routing and CCP wiring,
the service chain, balances and the admin API, in one asyncio object.

::

    connector = Connector(load_config("connector.toml"))
    await connector.start()          # returns once listening (and the address is known)
    receiver = AsyncReceiver(connector.local_link("shop"))   # a "local" child account
    await receiver.start()
    ...
    await connector.stop()

Wiring of :class:`~ilp_receiver.connector.routing.RouteBroadcaster` (sans-I/O): every
account is added with ``add_account``; when an account's link comes up
``peer_connected`` is called (and ``peer_disconnected`` when it goes down); one timer
task sleeps until ``next_wakeup()``, sends what ``poll()`` returns and reports each
answer with ``on_reply`` or ``on_failure``; incoming ``peer.route.*`` requests go to
``handle_route_control`` / ``handle_route_update`` (in :mod:`.services`) and wake the
timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from ..codec.address import is_address_prefix_of, is_valid_address
from ..codec.ccp import RouteControlRequest, route_control_prepare, route_update_prepare
from ..codec.ildcp import PEER_PROTOCOL_EXPIRY
from ..codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ..errors import ConfigError, IlpReceiverError, LinkError
from ..links.base import Link
from ..links.btp_client import BtpClientLink
from ..links.btp_server import BtpConnection, BtpServer, BtpServerLink
from ..links.btp_session import BtpSession
from ..links.http import (
    HttpAsyncLink,
    HttpCallbackLink,
    HttpLink,
    HttpSyncLink,
    add_http_oer_routes,
)
from ..links.http2 import Http2Server, TlsServerFiles, require_http2
from ..links.listener import start_listener
from ..links.memory import MemoryLink, memory_link_pair
from ..links.uplink import fetch_peer_config
from ..log_limits import LogLimiter
from ..stores import open_store
from ..stores.base import BalanceStore
from .accounts import (
    MAX_ACCOUNT_NAME_LENGTH,
    Account,
    Ledger,
    TokenBucket,
    TokenRegistry,
    clip,
    is_valid_account_name,
    token_digest,
)
from .config import AccountConfig, ConnectorConfig
from .metrics import Metrics, Result
from .routing import RouteBroadcaster, StaticRoute, new_routing_table_id
from .services import CountOutgoing, Request, Service, build_chain

__all__ = ["Connector"]

log = logging.getLogger(__name__)

_SERVER_TRANSPORTS = ("btp-server", "mini-accounts", "http", "http-async")


class _ServerLink(BtpServerLink):
    """A BTP server account link that reports its client connecting and leaving."""

    def __init__(
        self,
        account: str,
        *,
        idempotent: bool,
        max_connections: int,
        on_up: Callable[[], None],
        on_down: Callable[[], None],
    ) -> None:
        super().__init__(account, idempotent=idempotent, max_connections=max_connections)
        self._on_up = on_up
        self._on_down = on_down

    def _attach(self, session: BtpSession, ws: web.WebSocketResponse) -> BtpConnection:
        # the account comes up with its first connection; more connections join it
        was_up = self.is_connected
        connection = super()._attach(session, ws)
        if not was_up:
            self._on_up()
        return connection

    def _detach(self, session: BtpSession | None) -> bool:
        # ... and goes down when its last connection leaves
        was_live = super()._detach(session)
        if was_live and not self.is_connected:
            self._on_down()
        return was_live


class _ClientLink(BtpClientLink):
    """A BTP client link that reports disconnections (connections go through
    ``on_connect``)."""

    def __init__(self, url: str, *, on_down: Callable[[], None], **options: Any) -> None:
        super().__init__(url, **options)
        self._on_down = on_down
        self.was_up = False

    async def _connect_once(self) -> None:
        try:
            await super()._connect_once()
        finally:
            if self.was_up:
                self.was_up = False
                self._on_down()


class Connector:
    """A minimal ILP connector (see the module docstring).

    ``store`` overrides ``config.store`` (the connector then does not close it);
    ``clock`` is the wall clock used for expiries (tests).
    """

    def __init__(
        self,
        config: ConnectorConfig,
        *,
        store: BalanceStore | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._own_store = store is None
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ledger: Ledger | None = None
        self._address: str | None = config.address
        self._broadcaster: RouteBroadcaster | None = None
        self._accounts: dict[str, Account] = {}
        self._templates: dict[str, AccountConfig] = {}
        self._local_ends: dict[str, MemoryLink] = {}
        self._runners: list[web.AppRunner] = []
        self._h2_servers: list[Http2Server] = []
        self._listeners: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ccp_task: asyncio.Task[None] | None = None
        self._ccp_wake = asyncio.Event()
        self._address_known = asyncio.Event()
        self._registry: TokenRegistry | None = None
        self.metrics = Metrics()
        self.started_at: float | None = None
        self.admin_url: str | None = None
        self._chain: Service = build_chain(
            self,
            min_message_window=timedelta(milliseconds=config.min_message_window_ms),
            max_hold_time=timedelta(milliseconds=config.max_hold_time_ms),
            extra=lambda node: [CountOutgoing(node, self._count_outgoing)],
        )
        self._routing_secret = config.routing_secret or os.urandom(32)
        self._running = False
        for account in config.accounts.values():
            if account.transport == "mini-accounts":
                self._templates[account.id] = account
            else:
                self._accounts[account.id] = self._make_account(account)

    # ------------------------------------------------------------ Node protocol

    @property
    def address(self) -> str:
        """Our ILP address ("" until learned by IL-DCP)."""
        return self._address or ""

    @property
    def broadcaster(self) -> RouteBroadcaster | None:
        """Routing tables and CCP state (None until the address is known)."""
        return self._broadcaster

    @property
    def ledger(self) -> Ledger:
        """Balances (after :meth:`start`)."""
        if self._ledger is None:
            raise RuntimeError("the connector has not started")
        return self._ledger

    def account(self, account_id: str) -> Account | None:
        """The account with id ``account_id``."""
        return self._accounts.get(account_id)

    @property
    def accounts(self) -> Mapping[str, Account]:
        """Every account (configured ones and connected mini-accounts children)."""
        return self._accounts

    def ccp_changed(self) -> None:
        """Wake the CCP timer task."""
        self._ccp_wake.set()

    def monotonic(self) -> float:
        """The monotonic clock CCP state runs on."""
        return time.monotonic()

    def now(self) -> datetime:
        """The wall clock (UTC)."""
        return self._clock()

    # ------------------------------------------------------------ accounts and links

    def _make_account(self, config: AccountConfig, group: str | None = None) -> Account:
        account = Account(config, group=group)
        if config.rate_limit is not None:
            capacity = config.rate_limit_burst or max(1.0, config.rate_limit)
            account.bucket = TokenBucket(config.rate_limit, capacity)
        account.link = self._make_link(account)
        account.link.local_address = self.address
        account.link.set_handler(self._handler(account))
        return account

    def _make_link(self, account: Account) -> Link:
        config = account.config
        transport = config.transport
        if transport in ("btp-server", "mini-accounts"):
            return _ServerLink(
                config.id,
                idempotent=config.idempotent,
                max_connections=config.max_connections,
                on_up=lambda: self._spawn(self._link_up(account)),
                on_down=lambda: self._link_down(account),
            )
        if transport == "btp-client":
            assert config.url is not None
            client = _ClientLink(
                config.url, idempotent=config.idempotent, on_down=lambda: self._link_down(account)
            )

            async def connected() -> None:
                client.was_up = True
                await self._link_up(account)

            client.on_connect(connected)
            return client
        if transport in ("http", "http-async"):
            options: dict[str, Any] = {}
            cls: type[HttpLink] = HttpSyncLink if transport == "http" else HttpAsyncLink
            if transport == "http" and config.http_mode == "callback":
                cls = HttpCallbackLink
                options = {
                    "callback_url": config.callback_url,
                    "peer_callback_url": config.peer_callback_url,
                    "max_pending": config.max_pending,
                }
            if config.http2:
                require_http2(f"accounts.{config.id}.http2")
            return cls(
                config.url,
                token=config.token or "",
                incoming_token=config.incoming_token or config.token,
                peer_name=config.peer_name,
                listen_port=None,
                limits=self.config.server.limits(),
                http2=config.http2,
                content_type=config.content_type,
                tls_ca=config.tls_ca,
                tls_client_cert=config.tls_client_cert,
                tls_client_key=config.tls_client_key,
                **options,
            )
        if transport == "local":
            ours, theirs = memory_link_pair()
            self._local_ends[config.id] = theirs
            return ours
        raise ConfigError(f"accounts.{config.id}.transport", f"unknown transport {transport!r}")

    def local_link(self, account_id: str) -> Link:
        """The receiver's end of a ``local`` account's in-memory link: give it to an
        :class:`~ilp_receiver.receiver.AsyncReceiver` in the same event loop.
        """
        try:
            return self._local_ends[account_id]
        except KeyError:
            raise ConfigError(
                f"accounts.{account_id}", "is not an account with transport 'local'"
            ) from None

    def _handler(self, account: Account) -> Callable[[IlpPrepare], Awaitable[IlpReply]]:
        chain = self._chain
        metrics = self.metrics
        config = account.config

        async def handle(prepare: IlpPrepare) -> IlpReply:
            started = time.perf_counter()
            code = "T00"
            failed = True
            try:
                reply = await chain.handle(Request(prepare, account))
                code = reply.code if isinstance(reply, IlpReject) else ""
                failed = False
                return reply
            finally:
                metrics.observe(
                    code == "",
                    code,
                    time.perf_counter() - started,
                    account=account.id,
                    asset=config.asset_code,
                    scale=config.asset_scale,
                    amount=prepare.amount,
                    failed=failed,
                )

        return handle

    def _count_outgoing(self, target: Account, amount: int, result: Result) -> None:
        """Count a Prepare forwarded to ``target`` (:class:`~.services.CountOutgoing`)."""
        config = target.config
        self.metrics.count_account(
            "outgoing", target.id, config.asset_code, config.asset_scale, result, amount
        )

    async def handle_prepare(self, account_id: str, prepare: IlpPrepare) -> IlpReply:
        """Run ``prepare`` through the chain as if it came from ``account_id`` (the link
        edge: never raises, unexpected errors become T00)."""
        link = self._accounts[account_id].link
        assert link is not None
        return await link.handle_incoming(prepare)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connector task failed", exc_info=task.exception())

    async def _link_up(self, account: Account) -> None:
        """An account's link came up: IL-DCP from a parent (when our address is not
        configured), then CCP ``peer_connected``."""
        link = account.link
        assert link is not None
        if account.relation == "parent" and self.config.address is None:
            info = await fetch_peer_config(link)
            if (info.asset_code, info.asset_scale) != (
                account.config.asset_code,
                account.config.asset_scale,
            ):
                log.error(
                    "parent %s uses asset %s/%s, configured %s/%s: refusing (no conversion)",
                    account.id,
                    info.asset_code,
                    info.asset_scale,
                    account.config.asset_code,
                    account.config.asset_scale,
                )
                raise LinkError("parent asset differs from the configured asset")
            self._set_address(info.address)
        if self._broadcaster is not None and self._running:
            self._broadcaster.peer_connected(account.id, self.monotonic())
            self.ccp_changed()

    def _link_down(self, account: Account) -> None:
        registry = self._registry
        # a mini-account's expiry counts from when its client left ("has been
        # disconnected longer than N days")
        if (
            account.group is not None
            and registry is not None
            and self._accounts.get(account.id) is account
        ):
            registry.touch(account.id, self.now().timestamp())
        if self._broadcaster is not None:
            self._broadcaster.peer_disconnected(account.id)
            self._broadcaster.schedule_all(self.monotonic())
            self.ccp_changed()

    def _set_address(self, address: str) -> None:
        if address == self._address and self._broadcaster is not None:
            return
        if self._address is not None and address != self._address:
            log.warning("our ILP address changed from %s to %s", self._address, address)
        self._address = address
        for account in self._accounts.values():
            if account.link is not None:
                account.link.local_address = address
        if self._broadcaster is None:
            self._create_broadcaster(address)
        else:
            self._broadcaster.set_own_address(address)
            self._broadcaster.schedule_all(self.monotonic())
            self.ccp_changed()
        self._address_known.set()

    def _create_broadcaster(self, address: str) -> None:
        config = self.config
        broadcaster = RouteBroadcaster(
            own_address=address,
            routing_secret=self._routing_secret,
            routing_table_id=new_routing_table_id(os.urandom(16)),
            env=config.env,
            routes=[StaticRoute(r.prefix, r.account) for r in config.routes],
            default_route=config.default_route,
            route_broadcast_enabled=config.route_broadcast_enabled,
            route_expiry_ms=config.route_expiry_ms,
            route_broadcast_interval_ms=config.route_broadcast_interval_ms,
        )
        for account in self._accounts.values():
            self._add_to_broadcaster(broadcaster, account)
        self._broadcaster = broadcaster
        now = self.monotonic()
        for account in self._accounts.values():
            if account.is_connected:
                broadcaster.peer_connected(account.id, now)
        self.ccp_changed()

    @staticmethod
    def _add_to_broadcaster(broadcaster: RouteBroadcaster, account: Account) -> None:
        config = account.config
        broadcaster.add_account(
            account.id,
            config.relation,
            send_routes=config.send_routes,
            receive_routes=config.receive_routes,
        )

    # ------------------------------------------------------------ BTP server auth

    #: seconds between two sweeps for abandoned mini-accounts registrations while a
    #: section is not full (a full section sweeps before each registration it refuses)
    _REGISTRATION_SWEEP_INTERVAL: float = 3600.0

    def _prefix_owner(self, name: str) -> str | None:
        """What already owns the address ``<our address>.<name>`` (a reason to refuse
        it to a mini-accounts client), or None when a new mini-account may take it.

        "An account's address prefix is owned": no client may register a name whose
        address equals, lies under or covers a prefix that belongs to someone else --
        a configured account or mini-accounts section id (their child address is
        ``<address>.<id>``), a static route (``config.routes``) whose prefix equals or
        lies under ``<address>.<name>``, or our own address.  ``name`` is already one
        address segment (:func:`is_valid_account_name`), so ``<address>.<name>`` can
        only cover or equal an owned prefix, never lie below another child.
        """
        if name in self.config.accounts:
            return f"configured account {name!r}"
        address = self._address
        if address is None:
            return "our ILP address (not learned from the parent yet)"
        child = f"{address}.{name}"
        if not is_valid_address(child):
            return "the ILP address length limit (1023 characters)"
        for route in self.config.routes:
            if is_address_prefix_of(child, route.prefix):
                return f"static route {route.prefix} of account {route.account!r}"
        return None

    def _mini_account_login(
        self,
        template: AccountConfig,
        name: str,
        token: str,
        bucket: TokenBucket,
        swept: dict[str, float],
    ) -> str | None:
        """Check a login to mini-accounts section ``template`` as account ``name``:
        None to accept it (registering ``name`` on its first login), else why not.

        Rules, in order: the name is one address segment; its address is not owned
        (:meth:`_prefix_owner`); a registered name needs its first token ("the first
        token seen for an account is registered, later connections must match") and
        belongs to one section; a new name needs a token from the section's
        registration bucket (``registration_rate``/``registration_burst``) and a free
        place under ``max_accounts`` (abandoned registrations are expired first).
        """
        registry = self._registry
        assert registry is not None
        now = self.now().timestamp()
        # "mini-accounts usernames are one ILP address segment": [A-Za-z0-9_~-], no "."
        if not is_valid_account_name(name):
            return (
                "the name is not one ILP address segment "
                f"([A-Za-z0-9_~-], 1 to {MAX_ACCOUNT_NAME_LENGTH} characters)"
            )
        owner = self._prefix_owner(name)
        if owner is not None:
            return f"the address is owned by {owner}"
        existing = self._accounts.get(name)
        if existing is not None and existing.group != template.id:
            return "the name belongs to another account"
        record = registry.get(name)
        if record is not None:
            if record.group not in (None, template.id):
                return f"the name is registered in mini-accounts section {record.group!r}"
            if not registry.verify(name, token):
                return "not the first token registered for this name"
            if record.group is None:
                registry.set_group(name, template.id)
            registry.touch(name, now)
            return None
        # a registration: "rate-limited and capped"
        if not bucket.take():
            return "registration_rate exceeded"
        # expire abandoned registrations when the section is full, and at most once per
        # sweep interval otherwise (each sweep is one pass over the section)
        full = registry.count(template.id) >= template.max_accounts
        last = swept.get(template.id)
        if full or last is None or now - last >= self._REGISTRATION_SWEEP_INTERVAL:
            swept[template.id] = now
            self._expire_registrations(template, now)
        if registry.count(template.id) >= template.max_accounts:
            return f"max_accounts ({template.max_accounts}) reached"
        try:
            registry.register(name, token, group=template.id, now=now)
        except OSError as exc:
            return f"cannot write the token file: {exc.strerror}"
        return None

    def _expire_registrations(self, template: AccountConfig, now: float) -> list[str]:
        """Expire the abandoned registrations of mini-accounts section ``template``:
        "registrations whose account never connected again / has been disconnected
        longer than N days (``registration_expiry_days``) with zero balance".  Never one
        whose client is connected or whose balance (settled or in flight) is not zero.
        The name and its first token are freed, its route withdrawn.  Returns the names.
        """
        registry = self._registry
        days = template.registration_expiry_days
        if registry is None or days == 0:
            return []
        cutoff = now - days * 86400.0
        ledger = self._ledger
        expired: list[str] = []
        for name in registry.names(template.id) + registry.names(None):
            account = self._accounts.get(name)
            if account is not None and account.is_connected:
                registry.touch(name, now)  # "disconnected longer than": it is not
                continue
            record = registry.get(name)
            if record is None or record.seen > cutoff:
                continue
            if ledger is not None and (ledger.balance(name) or ledger.reserved(name)):
                continue  # "never expire an account that has a non-zero balance"
            registry.remove(name)
            if account is not None:
                del self._accounts[name]
                if self._broadcaster is not None:
                    self._broadcaster.remove_account(name)
            if ledger is not None:
                ledger.forget(name)
            expired.append(name)
        if expired:
            log.info(
                "expired %d abandoned mini-accounts registrations in %s (not connected for "
                "%d days, zero balance)",
                len(expired),
                template.id,
                days,
            )
        return expired

    def _btp_server(self, key: tuple[str, int], path: str) -> BtpServer:
        fixed = [
            a
            for a in self._accounts.values()
            if a.config.transport == "btp-server"
            and self._listen_key(a.config) == key
            and a.config.path == path
        ]
        groups = [
            t for t in self._templates.values() if self._listen_key(t) == key and t.path == path
        ]
        # one registration bucket per mini-accounts section: "registrations per second
        # with a burst"
        buckets = {
            t.id: TokenBucket(t.registration_rate, t.registration_burst, clock=self.monotonic)
            for t in groups
        }
        swept: dict[str, float] = {}
        refusals = LogLimiter(log)

        async def authenticate(username: str | None, token: str) -> str | None:
            digest = token_digest(token).encode()
            for account in fixed:
                expected = token_digest(account.config.token or "").encode()
                if hmac.compare_digest(digest, expected) and (
                    account.config.username is None or account.config.username == username
                ):
                    return account.id
            if not groups:
                return None
            template = groups[0]  # credentials on a shared path go to its first section
            name = username or token_digest(token)
            refusal = self._mini_account_login(template, name, token, buckets[template.id], swept)
            if refusal is None:
                return name
            # never echo unbounded input: the name is clipped
            refusals.info(
                "mini-accounts",
                "refusing mini-accounts login %s in %s: %s",
                clip(name),
                template.id,
                refusal,
            )
            return None

        async def link_for(account_id: str) -> BtpServerLink:
            account = self._accounts.get(account_id)
            if account is None:
                registry = self._registry
                record = registry.get(account_id) if registry is not None else None
                template = groups[0]
                if record is not None and record.group in self._templates:
                    template = self._templates[record.group]
                config = dataclasses.replace(template, id=account_id, transport="mini-accounts")
                account = self._make_account(config, group=template.id)
                self._accounts[account_id] = account
                await self.ledger.load_account(account_id)
                if self._broadcaster is not None:
                    self._add_to_broadcaster(self._broadcaster, account)
            link = account.link
            assert isinstance(link, BtpServerLink)
            return link

        # every frame waits for the end of the loop iteration: a connector's BTP traffic
        # comes in batches, and one write per batch and connection costs half the CPU
        # per packet at concurrency 10 (bench/connector_saturation.py, docs/benchmarks.md)
        return BtpServer(
            authenticate,
            link_for,
            auth_timeout=self.config.server.auth_timeout,
            immediate_first_frame=False,
        )

    def _listen_key(self, config: AccountConfig) -> tuple[str, int]:
        if config.listen is not None:
            return config.listen
        assert self.config.server.port is not None
        return (self.config.server.host, self.config.server.port)

    async def _start_listeners(self) -> None:
        apps: dict[tuple[str, int], web.Application] = {}
        btp_paths: dict[tuple[str, int], set[str]] = {}
        pending: list[tuple[str, tuple[str, int], str, str]] = []
        configs = list(self._templates.values()) + [a.config for a in self._accounts.values()]
        h2_servers: dict[tuple[str, int], tuple[Http2Server, TlsServerFiles | None]] = {}
        limits = self.config.server.limits()
        for config in configs:
            if config.transport == "http" and (config.http2 or config.tls_cert is not None):
                key = self._listen_key(config)
                tls = (
                    TlsServerFiles(
                        config.tls_cert,
                        config.tls_key,
                        config.tls_client_ca,
                        prefix=f"accounts.{config.id}.tls_",
                    )
                    if config.tls_cert is not None and config.tls_key is not None
                    else None
                )
                if key not in h2_servers:
                    server = Http2Server(
                        key[0],
                        key[1],
                        tls=tls,
                        limits=limits,
                        setting=f"accounts.{config.id}.listen",
                    )
                    h2_servers[key] = (server, tls)
                server, first_tls = h2_servers[key]
                if first_tls != tls:
                    raise ConfigError(
                        f"accounts.{config.id}.tls_cert",
                        "accounts sharing a listener must have the same TLS files",
                    )
                link = self._accounts[config.id].link
                assert isinstance(link, HttpLink)
                server.add_route(config.path, link.handle_exchange)
                pending.append((config.id, key, server.scheme, config.path))
        for config in configs:
            if config.transport not in _SERVER_TRANSPORTS:
                continue
            if config.transport == "http" and (config.http2 or config.tls_cert is not None):
                continue
            key = self._listen_key(config)
            if key in h2_servers:
                raise ConfigError(
                    f"accounts.{config.id}.listen",
                    "shares a listener with an HTTP/2 or TLS account; give it another one",
                )
            app = apps.setdefault(key, web.Application(client_max_size=40_000))
            if config.transport in ("http", "http-async"):
                link = self._accounts[config.id].link
                assert isinstance(link, HttpLink)
                add_http_oer_routes(app.router, link, config.path)
                pending.append((config.id, key, "http", config.path))
            else:
                paths = btp_paths.setdefault(key, set())
                if config.path not in paths:
                    paths.add(config.path)
                    app.router.add_get(config.path, self._btp_server(key, config.path).handle)
                pending.append((config.id, key, "ws", config.path))
        bound: dict[tuple[str, int], int] = {}
        for key, (server, _) in h2_servers.items():
            await server.start()
            self._h2_servers.append(server)
            assert server.port is not None
            bound[key] = server.port
        for key, app in apps.items():
            runner = web.AppRunner(
                app, access_log=None, shutdown_timeout=1.0, **limits.runner_options()
            )
            await runner.setup()
            self._runners.append(runner)
            listener = await start_listener(runner, key[0], key[1], limits, setting="listen")
            bound[key] = listener.port
        for account_id, key, scheme, path in pending:
            self._listeners[account_id] = f"{scheme}://{key[0]}:{bound[key]}{path}"
            account = self._accounts.get(account_id)
            link = account.link if account is not None else None
            if isinstance(link, HttpCallbackLink) and link.callback_url is None:
                # default Callback-Url: this account's own endpoint (callbacks are told
                # from Prepares by their packet type)
                link.callback_url = self._listeners[account_id]

    # ------------------------------------------------------------ CCP timer

    async def _ccp_loop(self) -> None:
        while True:
            self._ccp_wake.clear()
            broadcaster = self._broadcaster
            timeout: float | None = None
            if broadcaster is not None:
                now = self.monotonic()
                for outgoing in broadcaster.poll(now):
                    self._spawn(self._send_ccp(broadcaster, outgoing))
                wake = broadcaster.next_wakeup()
                if wake is not None:
                    timeout = max(0.0, wake - self.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ccp_wake.wait(), timeout)

    async def _send_ccp(self, broadcaster: RouteBroadcaster, outgoing: Any) -> None:
        account = self._accounts.get(outgoing.account_id)
        expires_at = self.now() + PEER_PROTOCOL_EXPIRY
        if isinstance(outgoing.request, RouteControlRequest):
            prepare = route_control_prepare(outgoing.request, expires_at)
            timeout = PEER_PROTOCOL_EXPIRY.total_seconds()
        else:
            prepare = route_update_prepare(outgoing.request, expires_at)
            timeout = broadcaster.route_broadcast_interval_ms / 1000
        try:
            if account is None or account.link is None:
                raise LinkError("no such account")
            reply = await asyncio.wait_for(account.link.send(prepare, timeout), timeout + 0.05)
        except (IlpReceiverError, TimeoutError, OSError) as exc:
            log.debug("CCP %s to %s failed: %s", prepare.destination, outgoing.account_id, exc)
            broadcaster.on_failure(outgoing, self.monotonic())
        else:
            if isinstance(reply, IlpReject):
                log.info(
                    "%s rejected our %s: %s %s",
                    outgoing.account_id,
                    prepare.destination,
                    reply.code,
                    reply.message,
                )
            broadcaster.on_reply(outgoing, reply, self.monotonic())
        self.ccp_changed()

    # ------------------------------------------------------------ life cycle

    async def start(self, *, address_timeout: float | None = None) -> None:
        """Open the store, start listeners and links, learn the address (IL-DCP from a
        parent when none is configured), start CCP and the admin API."""
        if self._running:
            return
        config = self.config
        if self._store is None:
            self._store = open_store(config.store, prefix=config.store_prefix)
        self._ledger = Ledger(self._store, shared=config.shared_balances)
        await self._ledger.load()
        token_file = config.token_file
        if token_file is None and "://" not in config.store and config.store != "memory:":
            token_file = config.store + ".tokens.json"
        self._registry = TokenRegistry(token_file)
        self._running = True
        self.started_at = time.time()
        try:
            if self._address is not None:
                self._set_address(self._address)
            for account in self._accounts.values():
                link = account.link
                if isinstance(link, HttpLink | MemoryLink):
                    await link.start()
                    if self._address is not None or account.relation == "parent":
                        await self._link_up(account)
            await self._start_listeners()
            for account in self._accounts.values():
                if isinstance(account.link, BtpClientLink):
                    self._spawn(self._keep_dialing(account.link))
            if self._address is None:
                await asyncio.wait_for(self._address_known.wait(), address_timeout)
            self._ccp_task = asyncio.create_task(self._ccp_loop(), name="connector-ccp")
            if config.admin.port is not None:
                from .admin import start_admin

                runner, self.admin_url = await start_admin(self, config.admin)
                self._runners.append(runner)
        except BaseException:
            await self.stop()
            raise
        log.info("connector %s is up", self.address)

    async def _keep_dialing(self, link: BtpClientLink) -> None:
        """Start a BTP client link, retrying until it connects once (the link then
        reconnects by itself)."""
        delay = 0.1
        while self._running:
            try:
                await link.start()
                return
            except IlpReceiverError as exc:
                log.warning("BTP peer %s not reachable yet: %s", link.url.ws_url, exc)
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    async def stop(self) -> None:
        """Stop links, listeners, CCP and the admin API; close the store (if ours)."""
        self._running = False
        if self._ccp_task is not None:
            self._ccp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ccp_task
            self._ccp_task = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for account in list(self._accounts.values()):
            if account.link is not None:
                with contextlib.suppress(Exception):
                    await account.link.stop()
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()
        for server in self._h2_servers:
            await server.stop()
        self._h2_servers.clear()
        if self._ledger is not None:
            with contextlib.suppress(Exception):
                await self._ledger.flush()  # settled balances reach the store
        if self._ledger is not None and self._own_store:
            await self._ledger.close()
            self._store = None

    async def __aenter__(self) -> Connector:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ introspection

    @property
    def listeners(self) -> Mapping[str, str]:
        """Where each server-side account listens (``ws://…`` / ``http://…``)."""
        return self._listeners

    def ready_info(self) -> dict[str, Any]:
        """The fields of the ``{"event": "ready"}`` line."""
        return {
            "ilp_address": self.address,
            "asset_code": self.config.asset_code,
            "asset_scale": self.config.asset_scale,
            "accounts": {
                **{
                    t.id: {
                        "transport": t.transport,
                        "relation": t.relation,
                        "listen": self._listeners.get(t.id),
                    }
                    for t in self._templates.values()
                },
                **{
                    a.id: {
                        "transport": a.config.transport,
                        "relation": a.relation,
                        "listen": self._listeners.get(a.id),
                    }
                    for a in self._accounts.values()
                    if a.group is None
                },
            },
            "admin_api": self.admin_url,
        }

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows."""
        return {
            "ilp_address": self.address,
            "asset_code": self.config.asset_code,
            "asset_scale": self.config.asset_scale,
            "uptime_s": 0 if self.started_at is None else round(time.time() - self.started_at, 3),
            "accounts": len(self._accounts),
            "connected": sum(1 for a in self._accounts.values() if a.is_connected),
        }

    def connections_info(self) -> dict[str, dict[str, Any]]:
        """Per BTP server account: its live connections and how many were opened,
        closed and replaced (``GET /accounts`` and the metrics)."""
        out: dict[str, dict[str, Any]] = {}
        for account in self._accounts.values():
            link = account.link
            if isinstance(link, BtpServerLink):
                out[account.id] = {
                    "connections": [c.info() for c in link.connections],
                    "opened": link.opened,
                    "closed": link.closed,
                    "replaced": link.replaced,
                }
        return out

    def accounts_info(self) -> dict[str, Any]:
        """What ``GET /accounts`` shows (no secrets)."""
        connections = self.connections_info()
        out: dict[str, Any] = {}
        for account in self._accounts.values():
            c = account.config
            out[account.id] = {
                "relation": c.relation,
                "transport": c.transport,
                "connected": account.is_connected,
                "group": account.group,
                "address": (
                    self._broadcaster.child_address(account.id)
                    if self._broadcaster is not None and c.relation == "child"
                    else None
                ),
                "asset_code": c.asset_code,
                "asset_scale": c.asset_scale,
                "max_packet_amount": _str(c.max_packet_amount),
                "min_balance": _str(c.min_balance),
                "max_balance": _str(c.max_balance),
                "rate_limit": c.rate_limit,
            }
            if account.id in connections:
                out[account.id]["connections"] = connections[account.id]["connections"]
        return out

    def balances_info(self) -> dict[str, Any]:
        """What ``GET /balances`` shows: settled and in-flight per account (strings)."""
        ledger = self.ledger
        names = set(ledger.balances()) | set(self._accounts)
        return {
            name: {"balance": str(ledger.balance(name)), "in_flight": str(ledger.reserved(name))}
            for name in sorted(names)
        }

    def routes_info(self) -> dict[str, Any]:
        """What ``GET /routes`` shows: the local routing table (prefix -> next hop, path)."""
        broadcaster = self._broadcaster
        if broadcaster is None:
            return {}
        return {
            prefix: {"next_hop": route.next_hop, "path": list(route.path)}
            for prefix, route in broadcaster.local_routing_table.items()
        }


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


def is_fulfill(reply: IlpReply) -> bool:
    """Whether ``reply`` is a Fulfill."""
    return isinstance(reply, IlpFulfill)
