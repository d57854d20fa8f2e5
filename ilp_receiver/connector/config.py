"""Configuration of the bundled connector: the schema as data, TOML loading, environment
overrides and the markdown reference table rendered from the schema.

A config file is TOML (stdlib :mod:`tomllib`)::

    [connector]                 # this node
    address = "test.mynode"     # omit to learn it from a parent account by IL-DCP
    asset_code = "XYZ"
    asset_scale = 9
    store = "connector.sqlite3"

    [server]                    # one aiohttp server for BTP and HTTP endpoints
    port = 7768

    [admin]
    port = 7780
    token = "change-me"

    [accounts.alice]            # one table per account
    relation = "child"
    transport = "btp-server"
    token = "alice-secret"

    [[routes]]                  # optional static routes
    prefix = "test.elsewhere"
    account = "alice"

Every field is described once in :data:`SCHEMA`; :func:`load_config` validates a file
against it, :func:`render_config_table` turns it into the table in ``docs/connector.md``.
A bad value raises :class:`~ilp_receiver.errors.ConfigError` whose ``field`` is the
dotted path (``accounts.alice.max_packet_amount``).

Environment variables override the file (values are parsed like the TOML type):

* ``[connector]`` field ``X``: ``ILP_CONNECTOR_X`` (``ILP_CONNECTOR_ADDRESS``);
* ``[server]`` / ``[admin]`` field ``X``: ``ILP_CONNECTOR_SERVER_X`` /
  ``ILP_CONNECTOR_ADMIN_X`` (``ILP_CONNECTOR_ADMIN_TOKEN``);
* account ``ID`` field ``X``: ``ILP_CONNECTOR_ACCOUNTS__ID__X`` (double underscores; ``ID``
  is matched case-insensitively against the accounts in the file; ``-`` in an id is
  written ``_``).
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from ..codec.address import is_valid_address
from ..errors import ConfigError
from ..links.http import TLS_OPTIONS, check_callback_url
from ..links.http2 import TlsClientFiles, TlsServerFiles
from ..links.listener import ServerLimits

__all__ = [
    "ENV_PREFIX",
    "SCHEMA",
    "TRANSPORTS",
    "AccountConfig",
    "AdminConfig",
    "ConnectorConfig",
    "FieldSpec",
    "ServerConfig",
    "StaticRouteConfig",
    "config_from_mapping",
    "env_name",
    "load_config",
    "render_config_table",
]

UINT64_MAX: Final = (1 << 64) - 1
ENV_PREFIX: Final = "ILP_CONNECTOR_"

#: Account transports and what they mean.
TRANSPORTS: Final[Mapping[str, str]] = {
    "btp-server": "BTP/2.0 server account with a fixed token (clients dial us)",
    "btp-client": "BTP/2.0 client: we dial `url` (btp+ws://NAME:TOKEN@HOST:PORT/PATH)",
    "mini-accounts": "BTP/2.0 server for many children: each username/token pair becomes "
    "child `<address>.<username>` (first token wins)",
    "http": "ILP over HTTP / HTTP-OER-SYNC both ways (we POST to `url`, the peer POSTs to `path`)",
    "http-async": "HTTP-OER-ASYNC both ways (`url` is the peer's base URL)",
    "local": "in-process delivery (memory link), e.g. to an AsyncReceiver in the same loop",
}

Kind = Literal["str", "int", "uint64", "float", "bool", "secret"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One configuration field: where it lives, its type, default and meaning."""

    scope: Literal["connector", "server", "admin", "accounts", "routes"]
    name: str
    kind: Kind
    default: object
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False


def _f(
    scope: Literal["connector", "server", "admin", "accounts", "routes"],
    name: str,
    kind: Kind,
    default: object,
    help: str,
    **kw: Any,
) -> FieldSpec:
    return FieldSpec(scope, name, kind, default, help, **kw)


#: The whole configuration schema, in documentation order.
SCHEMA: Final[tuple[FieldSpec, ...]] = (
    _f(
        "connector",
        "address",
        "str",
        None,
        "ILP address of this connector; omit to learn it from a parent account by IL-DCP",
    ),
    _f(
        "connector",
        "asset_code",
        "str",
        "XYZ",
        "asset code of every account (one-to-one exchange, no conversion)",
    ),
    _f(
        "connector", "asset_scale", "int", 9, "asset scale of every account", minimum=0, maximum=255
    ),
    _f(
        "connector",
        "env",
        "str",
        "test",
        "`test` (global prefix `test`) or `production` (`g`)",
        choices=("test", "production"),
    ),
    _f(
        "connector",
        "store",
        "str",
        "connector.sqlite3",
        "balance store: SQLite path, `memory:`, `redis://...` or `postgresql://...`",
    ),
    _f(
        "connector",
        "store_prefix",
        "str",
        None,
        "table prefix of a PostgreSQL store (default `ilp_`) or key prefix of a Redis store "
        "(default `ilp:`); every instance of a fleet uses the same",
    ),
    _f(
        "connector",
        "shared_balances",
        "bool",
        False,
        "`true`: every packet's amount is reserved in the store itself, within the "
        "account's limits (one store round trip per account and packet), so that "
        "connectors sharing a PostgreSQL or Redis store enforce one set of balances "
        "(a fleet, `docs/scaling.md`); `false`: this process owns the balances (kept in "
        "memory, settled changes written to the store)",
    ),
    _f(
        "connector",
        "token_file",
        "str",
        None,
        "where mini-accounts keep sha256 digests of first tokens (default: `<store>.tokens.json` "
        "for a SQLite store, in memory otherwise)",
    ),
    _f(
        "connector",
        "min_message_window_ms",
        "int",
        1000,
        "expiry shortening per hop; less time than this left gives R02",
        minimum=0,
    ),
    _f(
        "connector",
        "max_hold_time_ms",
        "int",
        30000,
        "longest we hold a forwarded Prepare (outgoing expiry is capped at now + this)",
        minimum=1,
    ),
    _f("connector", "route_broadcast_enabled", "bool", True, "exchange routes by CCP"),
    _f(
        "connector",
        "route_broadcast_interval_ms",
        "int",
        30000,
        "CCP heartbeat / update interval",
        minimum=150,
    ),
    _f("connector", "route_expiry_ms", "int", 45000, "CCP hold-down time we advertise", minimum=0),
    _f(
        "connector",
        "routing_secret",
        "secret",
        None,
        "base64 secret for route auth (default: 32 random bytes per start)",
    ),
    _f(
        "connector",
        "default_route",
        "str",
        "auto",
        "`auto` (first parent), `` (none) or an account id for unknown destinations",
    ),
    _f("server", "host", "str", "127.0.0.1", "listen address of the shared server"),
    _f(
        "server",
        "port",
        "int",
        None,
        "port of the shared server for BTP and HTTP endpoints (none: only per-account `listen`)",
        minimum=0,
        maximum=65535,
    ),
    _f(
        "server",
        "max_connections",
        "int",
        1024,
        "connections open at once on each listener (shared, per-account, admin); one more "
        "gets 503 and is closed",
        minimum=1,
    ),
    _f(
        "server",
        "header_timeout",
        "float",
        10.0,
        "seconds a connection has to send a complete request head (also the keep-alive idle "
        "time) on every listener",
    ),
    _f(
        "server",
        "body_timeout",
        "float",
        30.0,
        "seconds an HTTP endpoint waits for a request body",
    ),
    _f(
        "server",
        "auth_timeout",
        "float",
        10.0,
        "seconds a BTP client has to authenticate after the WebSocket opens",
    ),
    _f("admin", "host", "str", "127.0.0.1", "admin API listen address"),
    _f(
        "admin",
        "port",
        "int",
        None,
        "admin API port (none: no admin API)",
        minimum=0,
        maximum=65535,
    ),
    _f(
        "admin",
        "token",
        "secret",
        None,
        "bearer token required on every admin route (required when `port` is set)",
    ),
    _f("admin", "metrics_public", "bool", False, "serve GET /metrics without the token"),
    _f(
        "accounts",
        "relation",
        "str",
        None,
        "`parent`, `peer` or `child`",
        choices=("parent", "peer", "child"),
        required=True,
    ),
    _f(
        "accounts",
        "transport",
        "str",
        None,
        "how the account is reached (see below)",
        choices=tuple(TRANSPORTS),
        required=True,
    ),
    _f(
        "accounts",
        "asset_code",
        "str",
        None,
        "must equal `connector.asset_code` (no currency conversion)",
    ),
    _f(
        "accounts",
        "asset_scale",
        "int",
        None,
        "must equal `connector.asset_scale` (no scale conversion)",
        minimum=0,
        maximum=255,
    ),
    _f(
        "accounts",
        "max_packet_amount",
        "uint64",
        None,
        "larger Prepares from or to this account get F08 (with amount data)",
    ),
    _f(
        "accounts",
        "min_balance",
        "int",
        None,
        "lowest balance (what the account owes us; negative: we owe it); outgoing "
        "Prepares that would go below get T04",
    ),
    _f(
        "accounts",
        "max_balance",
        "int",
        None,
        "highest balance; incoming Prepares that would go above get T04",
    ),
    _f("accounts", "rate_limit", "float", None, "packets per second from this account (T05)"),
    _f(
        "accounts",
        "rate_limit_burst",
        "int",
        None,
        "token bucket capacity (default: rate_limit, at least 1)",
        minimum=1,
    ),
    _f("accounts", "send_routes", "bool", None, "send CCP routes (default: true unless child)"),
    _f(
        "accounts", "receive_routes", "bool", None, "accept CCP routes (default: true unless child)"
    ),
    _f(
        "accounts",
        "url",
        "str",
        None,
        "btp-client: `btp+ws://NAME:TOKEN@HOST:PORT/PATH`; http/http-async: the peer's URL",
    ),
    _f(
        "accounts",
        "token",
        "secret",
        None,
        "btp-server: token the client must send; http: bearer token we send",
    ),
    _f(
        "accounts",
        "username",
        "str",
        None,
        "btp-server: username the client must send (default: any)",
    ),
    _f(
        "accounts",
        "incoming_token",
        "secret",
        None,
        "http/http-async: bearer token the peer must send (default: `token`)",
    ),
    _f("accounts", "peer_name", "str", None, "http: ILP-Peer-Name header we send"),
    _f(
        "accounts",
        "listen",
        "str",
        None,
        "`[host:]port` of a dedicated listener (default: the shared server)",
    ),
    _f("accounts", "path", "str", "/", "HTTP path of the BTP WebSocket or HTTP endpoint"),
    _f(
        "accounts",
        "http_mode",
        "str",
        "sync",
        "http: `sync` (the answer is the body of the 200: the ILP-over-HTTP seed, Rafiki) or "
        "`callback` (RFC 35 draft 3: `202`, then the answer POSTed to `Callback-Url`)",
        choices=("sync", "callback"),
    ),
    _f(
        "accounts",
        "callback_url",
        "str",
        None,
        "http callback mode: the `Callback-Url` we send, where the peer reaches this "
        "account's endpoint (default: the account's listener URL)",
    ),
    _f(
        "accounts",
        "peer_callback_url",
        "str",
        None,
        "http callback mode: the peer's callback URL agreed out of band; a Prepare naming "
        "another `Callback-Url` gets 400 (default: take the header)",
    ),
    _f(
        "accounts",
        "content_type",
        "str",
        "application/ilp+octet-stream",
        "http: Content-Type of the Prepares we POST in sync mode: ilp-plugin-http's, or "
        "`application/octet-stream` (the RFC's; Rafiki refuses any other with 400)",
        choices=("application/ilp+octet-stream", "application/octet-stream"),
    ),
    _f(
        "accounts",
        "http2",
        "bool",
        False,
        "http: serve this account's endpoint with HTTP/2 and HTTP/1.1 (h2c with prior "
        "knowledge in clear text, ALPN over TLS; needs `listen` and the http2 extra) and "
        "call the peer over HTTP/2",
    ),
    _f(
        "accounts",
        "tls_cert",
        "str",
        None,
        "http: PEM certificate chain file: the endpoint is served over TLS with ALPN "
        "`h2`/`http/1.1` (needs `listen`, `tls_key` and the http2 extra)",
    ),
    _f("accounts", "tls_key", "str", None, "http: PEM private key file of `tls_cert`"),
    _f(
        "accounts",
        "tls_client_ca",
        "str",
        None,
        "http: PEM CA file; the peer must present a TLS client certificate from it",
    ),
    _f(
        "accounts",
        "tls_ca",
        "str",
        None,
        "http: PEM CA file to verify the peer's server certificate (default: the system's)",
    ),
    _f(
        "accounts",
        "tls_client_cert",
        "str",
        None,
        "http: PEM certificate chain file we present to the peer (with `tls_client_key`)",
    ),
    _f("accounts", "tls_client_key", "str", None, "http: PEM private key of `tls_client_cert`"),
    _f(
        "accounts",
        "max_pending",
        "int",
        1000,
        "http callback mode: incoming Prepares processed or awaiting delivery at once "
        "(one more: 503), and our own awaiting callbacks (one more: T01)",
        minimum=1,
    ),
    _f("accounts", "idempotent", "bool", False, "BTP/2.0-I (repeat requests, cache answers)"),
    _f(
        "accounts",
        "max_connections",
        "int",
        32,
        "btp-server/mini-accounts: live BTP connections of the account at once (its "
        "Prepares are spread over them); one more closes the oldest (1: a new connection "
        "replaces the old one)",
        minimum=1,
    ),
    _f(
        "accounts",
        "max_accounts",
        "int",
        1000,
        "mini-accounts: most accounts registered in this section; a new name beyond it is "
        "refused (after expiring abandoned ones)",
        minimum=1,
    ),
    _f(
        "accounts",
        "registration_rate",
        "float",
        1.0,
        "mini-accounts: new names registered per second in this section (token bucket, "
        "logins of registered names are not counted)",
    ),
    _f(
        "accounts",
        "registration_burst",
        "int",
        10,
        "mini-accounts: registrations allowed at once before `registration_rate` applies",
        minimum=1,
    ),
    _f(
        "accounts",
        "registration_expiry_days",
        "int",
        30,
        "mini-accounts: a registration whose account has not been connected for this many "
        "days and has a zero balance may be expired, freeing its name (0: never)",
        minimum=0,
    ),
    _f("routes", "prefix", "str", None, "address prefix of a static route", required=True),
    _f("routes", "account", "str", None, "account the prefix is routed to", required=True),
)

_BY_SCOPE: Final[dict[str, dict[str, FieldSpec]]] = {}
for _spec in SCHEMA:
    _BY_SCOPE.setdefault(_spec.scope, {})[_spec.name] = _spec


# ---------------------------------------------------------------- config objects


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: the shared listener for BTP and HTTP endpoints, and the limits of
    every listener."""

    host: str = "127.0.0.1"
    port: int | None = None
    max_connections: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    auth_timeout: float = 10.0

    def limits(self) -> ServerLimits:
        """The limits every listener of the connector applies."""
        return ServerLimits(
            max_connections=self.max_connections,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
        )


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: the admin API."""

    host: str = "127.0.0.1"
    port: int | None = None
    token: str | None = None
    metrics_public: bool = False

    def __repr__(self) -> str:  # never show the token
        return f"AdminConfig(host={self.host!r}, port={self.port!r}, token='***')"


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """``[accounts.<id>]``: one account (or, for ``mini-accounts``, the template of its
    children)."""

    id: str
    relation: Literal["parent", "peer", "child"]
    transport: str
    asset_code: str
    asset_scale: int
    max_packet_amount: int | None = None
    min_balance: int | None = None
    max_balance: int | None = None
    rate_limit: float | None = None
    rate_limit_burst: int | None = None
    send_routes: bool | None = None
    receive_routes: bool | None = None
    url: str | None = None
    token: str | None = None
    username: str | None = None
    incoming_token: str | None = None
    peer_name: str | None = None
    listen: tuple[str, int] | None = None
    path: str = "/"
    http_mode: str = "sync"
    callback_url: str | None = None
    peer_callback_url: str | None = None
    max_pending: int = 1000
    content_type: str = "application/ilp+octet-stream"
    http2: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    idempotent: bool = False
    max_connections: int = 32
    #: mini-accounts registration limits (see :data:`SCHEMA`)
    max_accounts: int = 1000
    registration_rate: float = 1.0
    registration_burst: int = 10
    registration_expiry_days: int = 30

    def __repr__(self) -> str:  # never show tokens or URLs with credentials
        return (
            f"AccountConfig(id={self.id!r}, relation={self.relation!r}, "
            f"transport={self.transport!r}, listen={self.listen!r}, path={self.path!r})"
        )


@dataclass(frozen=True, slots=True)
class StaticRouteConfig:
    """``[[routes]]``: ``prefix`` is routed to ``account``."""

    prefix: str
    account: str


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """The whole configuration (see the module docstring)."""

    address: str | None = None
    asset_code: str = "XYZ"
    asset_scale: int = 9
    env: Literal["test", "production"] = "test"
    store: str = "connector.sqlite3"
    store_prefix: str | None = None
    shared_balances: bool = False
    token_file: str | None = None
    min_message_window_ms: int = 1000
    max_hold_time_ms: int = 30000
    route_broadcast_enabled: bool = True
    route_broadcast_interval_ms: int = 30000
    route_expiry_ms: int = 45000
    routing_secret: bytes | None = None
    default_route: str = "auto"
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    accounts: dict[str, AccountConfig] = field(default_factory=dict)
    routes: tuple[StaticRouteConfig, ...] = ()

    def __repr__(self) -> str:
        return (
            f"ConnectorConfig(address={self.address!r}, asset={self.asset_code}/"
            f"{self.asset_scale}, accounts={sorted(self.accounts)!r})"
        )


# ---------------------------------------------------------------- parsing values

_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def _convert(spec: FieldSpec, path: str, value: object, from_env: bool) -> object:
    kind = spec.kind
    if kind in ("str", "secret"):
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {type(value).__name__}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(path, f"must be one of {', '.join(spec.choices)}; got {value!r}")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(path, "must be true or false")
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(path, "must be a number")
        try:
            number = float(value) if isinstance(value, int | float | str) else None
        except ValueError:
            number = None
        if number is None or not number > 0 or number != number or number == float("inf"):
            raise ConfigError(path, f"must be a positive number, got {value!r}")
        return number
    # int / uint64: TOML integers, or decimal strings (UInt64 exceeds TOML's Int64)
    if isinstance(value, bool):
        raise ConfigError(path, "must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit():
            raise ConfigError(path, f"must be an integer, got {value!r}")
        number_i = int(text)
    elif isinstance(value, int):
        number_i = value
    else:
        raise ConfigError(path, f"must be an integer, got {type(value).__name__}")
    low = 0 if kind == "uint64" else spec.minimum
    high = UINT64_MAX if kind == "uint64" else spec.maximum
    if low is not None and number_i < low:
        raise ConfigError(path, f"must be at least {low}, got {number_i}")
    if high is not None and number_i > high:
        raise ConfigError(path, f"must be at most {high}, got {number_i}")
    return number_i


def _section(
    scope: str, path: str, raw: object, env: Mapping[str, str], env_key: Any
) -> dict[str, object]:
    """Validate one table against the fields of ``scope``; unknown keys are refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path or scope, "must be a table")
    specs = _BY_SCOPE[scope]
    for key in raw:
        if key not in specs:
            where = f"{path}.{key}" if path else key
            raise ConfigError(where, f"unknown field (known: {', '.join(specs)})")
    values: dict[str, object] = {}
    for name, spec in specs.items():
        where = f"{path}.{name}" if path else name
        env_var = env_key(name) if env_key is not None else None
        if env_var is not None and env_var in env:
            values[name] = _convert(spec, f"{where} (from ${env_var})", env[env_var], True)
        elif name in raw:
            values[name] = _convert(spec, where, raw[name], False)
        elif spec.required:
            raise ConfigError(where, "is required")
        else:
            values[name] = spec.default
    return values


def env_name(scope: str, name: str, account: str | None = None) -> str:
    """The environment variable that overrides field ``name`` of ``scope``."""
    if scope == "connector":
        return f"{ENV_PREFIX}{name.upper()}"
    if scope == "accounts":
        assert account is not None
        return f"{ENV_PREFIX}ACCOUNTS__{account.upper().replace('-', '_')}__{name.upper()}"
    return f"{ENV_PREFIX}{scope.upper()}_{name.upper()}"


#: Account fields that only mean something for an account with transport ``http``.
_HTTP_ONLY_FIELDS: Final = ("http2", *TLS_OPTIONS)


def _check_tls(path: str, v: Mapping[str, object]) -> None:
    """TLS files of an http account: in pairs, readable, and what they should be."""
    cert, key, client_ca = v["tls_cert"], v["tls_key"], v["tls_client_ca"]
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise ConfigError(f"{path}.{missing}", "a TLS endpoint needs tls_cert and tls_key")
    if client_ca is not None and cert is None:
        raise ConfigError(f"{path}.tls_client_ca", "client certificates need tls_cert")
    if (cert is not None or v["http2"]) and v["listen"] is None:
        raise ConfigError(
            f"{path}.listen",
            "an HTTP/2 or TLS endpoint needs its own listener (the shared server is aiohttp, "
            "HTTP/1.1 only)",
        )
    if isinstance(cert, str) and isinstance(key, str):
        TlsServerFiles(cert, key, cast("str | None", client_ca), prefix=f"{path}.tls_").context()
    ca, client_cert, client_key = v["tls_ca"], v["tls_client_cert"], v["tls_client_key"]
    if ca is not None or client_cert is not None or client_key is not None:
        TlsClientFiles(
            cast("str | None", ca),
            cast("str | None", client_cert),
            cast("str | None", client_key),
            prefix=f"{path}.tls_",
        ).context()


_REGISTRATION_FIELDS: Final = (
    "max_accounts",
    "registration_rate",
    "registration_burst",
    "registration_expiry_days",
)


def _parse_listen(path: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(path, f"must be [host:]port, got {value!r}")
    return host, int(port)


def _account(
    account_id: str,
    raw: object,
    connector: dict[str, object],
    env: Mapping[str, str],
) -> AccountConfig:
    path = f"accounts.{account_id}"
    if not account_id or not all(c.isalnum() or c in "_~-" for c in account_id):
        raise ConfigError(path, "an account id must be one ILP address segment ([A-Za-z0-9_~-])")
    v = _section("accounts", path, raw, env, lambda n: env_name("accounts", n, account_id))
    transport = cast(str, v["transport"])
    relation = cast(str, v["relation"])
    for name in ("asset_code", "asset_scale"):
        if v[name] is None:
            v[name] = connector[name]
        elif v[name] != connector[name]:
            raise ConfigError(
                f"{path}.{name}",
                f"is {v[name]!r} but the connector's is {connector[name]!r}; this connector "
                "forwards one-to-one and refuses routes that would need conversion",
            )
    lo, hi = v["min_balance"], v["max_balance"]
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        raise ConfigError(f"{path}.min_balance", f"{lo} is greater than max_balance {hi}")
    if v["rate_limit_burst"] is not None and v["rate_limit"] is None:
        raise ConfigError(f"{path}.rate_limit_burst", "needs rate_limit")
    url = cast("str | None", v["url"])
    if transport == "btp-client" and not (url or "").startswith(("btp+ws://", "btp+wss://")):
        raise ConfigError(f"{path}.url", "a btp-client account needs url = 'btp+ws://...'")
    if transport in ("http", "http-async"):
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}.url", f"a {transport} account needs url = 'http://...'")
        if not (v["incoming_token"] or v["token"]):
            raise ConfigError(f"{path}.incoming_token", "an HTTP account needs a token")
    for name in ("http_mode", "callback_url", "peer_callback_url", "max_pending"):
        given = (isinstance(raw, dict) and name in raw) or env_name(
            "accounts", name, account_id
        ) in env
        if given and transport != "http":
            raise ConfigError(f"{path}.{name}", "only applies to accounts with transport 'http'")
        if given and name != "http_mode" and v["http_mode"] != "callback":
            raise ConfigError(f"{path}.{name}", "only applies with http_mode = 'callback'")
    for name in _HTTP_ONLY_FIELDS:
        if v[name] not in (None, False) and transport != "http":
            raise ConfigError(f"{path}.{name}", "only applies to accounts with transport 'http'")
    _check_tls(path, v)
    for name in ("callback_url", "peer_callback_url"):
        if isinstance(v[name], str):
            try:
                check_callback_url(cast(str, v[name]))
            except ValueError as exc:
                raise ConfigError(f"{path}.{name}", str(exc)) from None
    if transport == "btp-server" and not v["token"]:
        raise ConfigError(f"{path}.token", "a btp-server account needs the token clients send")
    if transport == "mini-accounts" and relation != "child":
        raise ConfigError(f"{path}.relation", "mini-accounts children have relation 'child'")
    if transport != "mini-accounts":
        for name in _REGISTRATION_FIELDS:
            if (isinstance(raw, dict) and name in raw) or env_name(
                "accounts", name, account_id
            ) in env:
                raise ConfigError(
                    f"{path}.{name}", "only applies to accounts with transport 'mini-accounts'"
                )
    if transport not in ("btp-server", "mini-accounts") and (
        (isinstance(raw, dict) and "max_connections" in raw)
        or env_name("accounts", "max_connections", account_id) in env
    ):
        raise ConfigError(
            f"{path}.max_connections",
            "only applies to accounts with transport 'btp-server' or 'mini-accounts'",
        )
    listen = v["listen"]
    parsed_listen = _parse_listen(f"{path}.listen", listen) if isinstance(listen, str) else None
    route_path = cast(str, v["path"])
    if not route_path.startswith("/"):
        raise ConfigError(f"{path}.path", f"must start with '/', got {route_path!r}")
    return AccountConfig(
        id=account_id,
        relation=cast(Literal["parent", "peer", "child"], relation),
        transport=transport,
        asset_code=cast(str, v["asset_code"]),
        asset_scale=cast(int, v["asset_scale"]),
        max_packet_amount=cast("int | None", v["max_packet_amount"]),
        min_balance=cast("int | None", lo),
        max_balance=cast("int | None", hi),
        rate_limit=cast("float | None", v["rate_limit"]),
        rate_limit_burst=cast("int | None", v["rate_limit_burst"]),
        send_routes=cast("bool | None", v["send_routes"]),
        receive_routes=cast("bool | None", v["receive_routes"]),
        url=url,
        token=cast("str | None", v["token"]),
        username=cast("str | None", v["username"]),
        incoming_token=cast("str | None", v["incoming_token"]),
        peer_name=cast("str | None", v["peer_name"]),
        listen=parsed_listen,
        path=route_path,
        http_mode=cast(str, v["http_mode"]),
        callback_url=cast("str | None", v["callback_url"]),
        peer_callback_url=cast("str | None", v["peer_callback_url"]),
        max_pending=cast(int, v["max_pending"]),
        content_type=cast(str, v["content_type"]),
        http2=cast(bool, v["http2"]),
        tls_cert=cast("str | None", v["tls_cert"]),
        tls_key=cast("str | None", v["tls_key"]),
        tls_client_ca=cast("str | None", v["tls_client_ca"]),
        tls_ca=cast("str | None", v["tls_ca"]),
        tls_client_cert=cast("str | None", v["tls_client_cert"]),
        tls_client_key=cast("str | None", v["tls_client_key"]),
        idempotent=cast(bool, v["idempotent"]),
        max_connections=cast(int, v["max_connections"]),
        max_accounts=cast(int, v["max_accounts"]),
        registration_rate=cast(float, v["registration_rate"]),
        registration_burst=cast(int, v["registration_burst"]),
        registration_expiry_days=cast(int, v["registration_expiry_days"]),
    )


def config_from_mapping(
    data: Mapping[str, object], env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """Validate parsed TOML (``data``) plus environment overrides (``env``; default
    :data:`os.environ`) into a :class:`ConnectorConfig`; ConfigError names the field.
    """
    env = os.environ if env is None else env
    known = {"connector", "server", "admin", "accounts", "routes"}
    for key in data:
        if key not in known:
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(known))})")
    c = _section(
        "connector", "connector", data.get("connector"), env, lambda n: env_name("connector", n)
    )
    server = _section("server", "server", data.get("server"), env, lambda n: env_name("server", n))
    admin = _section("admin", "admin", data.get("admin"), env, lambda n: env_name("admin", n))
    address = cast("str | None", c["address"])
    if address is not None and not is_valid_address(address):
        raise ConfigError("connector.address", f"not a valid ILP address: {address!r}")
    secret_text = cast("str | None", c["routing_secret"])
    secret: bytes | None = None
    if secret_text is not None:
        try:
            secret = base64.b64decode(secret_text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("connector.routing_secret", "must be base64") from None
    if admin["port"] is not None and not admin["token"]:
        raise ConfigError(
            "admin.token", f"is required when the admin API is on (or set ${ENV_PREFIX}ADMIN_TOKEN)"
        )
    raw_accounts = data.get("accounts") or {}
    if not isinstance(raw_accounts, dict):
        raise ConfigError("accounts", "must be a table of tables")
    accounts = {aid: _account(aid, raw, c, env) for aid, raw in raw_accounts.items()}
    if not accounts:
        raise ConfigError("accounts", "at least one account is needed")
    if address is None and not any(a.relation == "parent" for a in accounts.values()):
        raise ConfigError(
            "connector.address", "is required unless an account has relation 'parent' (IL-DCP)"
        )
    listeners: dict[tuple[str, int], dict[str, str]] = {}
    for account in accounts.values():
        if account.transport not in ("btp-server", "mini-accounts", "http", "http-async"):
            continue
        if account.listen is None and server["port"] is None:
            raise ConfigError(
                f"accounts.{account.id}.listen",
                "needs a listener: set listen = '[host:]port' or [server] port",
            )
        lkey = account.listen or (cast(str, server["host"]), cast(int, server["port"]))
        kind = "http" if account.transport.startswith("http") else "btp"
        owner = listeners.setdefault(lkey, {}).get(account.path)
        if owner is not None and (kind == "http" or owner.startswith("http:")):
            raise ConfigError(
                f"accounts.{account.id}.path",
                f"{account.path!r} on {lkey[0]}:{lkey[1]} is already used by account "
                f"{owner.split(':', 1)[1]!r}",
            )
        listeners[lkey][account.path] = f"{kind}:{account.id}"
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ConfigError("routes", "must be an array of tables ([[routes]])")
    routes = []
    for i, raw in enumerate(raw_routes):
        r = _section("routes", f"routes[{i}]", raw, {}, None)
        if r["account"] not in accounts:
            raise ConfigError(f"routes[{i}].account", f"no account {r['account']!r}")
        routes.append(StaticRouteConfig(cast(str, r["prefix"]), cast(str, r["account"])))
    default_route = cast(str, c["default_route"])
    if default_route not in ("auto", "") and default_route not in accounts:
        raise ConfigError("connector.default_route", f"no account {default_route!r}")
    return ConnectorConfig(
        address=address,
        asset_code=cast(str, c["asset_code"]),
        asset_scale=cast(int, c["asset_scale"]),
        env=cast(Literal["test", "production"], c["env"]),
        store=cast(str, c["store"]),
        store_prefix=cast("str | None", c["store_prefix"]),
        shared_balances=cast(bool, c["shared_balances"]),
        token_file=cast("str | None", c["token_file"]),
        min_message_window_ms=cast(int, c["min_message_window_ms"]),
        max_hold_time_ms=cast(int, c["max_hold_time_ms"]),
        route_broadcast_enabled=cast(bool, c["route_broadcast_enabled"]),
        route_broadcast_interval_ms=cast(int, c["route_broadcast_interval_ms"]),
        route_expiry_ms=cast(int, c["route_expiry_ms"]),
        routing_secret=secret,
        default_route=default_route,
        server=ServerConfig(
            cast(str, server["host"]),
            cast("int | None", server["port"]),
            cast(int, server["max_connections"]),
            cast(float, server["header_timeout"]),
            cast(float, server["body_timeout"]),
            cast(float, server["auth_timeout"]),
        ),
        admin=AdminConfig(
            cast(str, admin["host"]),
            cast("int | None", admin["port"]),
            cast("str | None", admin["token"]),
            cast(bool, admin["metrics_public"]),
        ),
        accounts=accounts,
        routes=tuple(routes),
    )


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """Read and validate a TOML config file (see :func:`config_from_mapping`)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    return config_from_mapping(data, env)


# ---------------------------------------------------------------- documentation


def _default_text(spec: FieldSpec) -> str:
    if spec.required:
        return "required"
    if spec.default is None:
        return "—"
    if isinstance(spec.default, bool):
        return "`true`" if spec.default else "`false`"
    if isinstance(spec.default, str):
        return f'`"{spec.default}"`'
    return f"`{spec.default}`"


def _env_text(spec: FieldSpec) -> str:
    if spec.scope == "routes":
        return "—"
    if spec.scope == "accounts":
        return f"`{env_name('accounts', spec.name, 'ID')}`"
    return f"`{env_name(spec.scope, spec.name)}`"


_SECTION_NAMES: Final = {
    "connector": "[connector]",
    "server": "[server]",
    "admin": "[admin]",
    "accounts": "[accounts.ID]",
    "routes": "[[routes]]",
}


def render_config_table() -> str:
    """The config reference as a markdown table (one row per :data:`SCHEMA` field),
    followed by the table of transports.
    """
    kinds = {
        "str": "string",
        "secret": "string (secret)",
        "int": "integer",
        "uint64": "integer (UInt64, or a decimal string)",
        "float": "number",
        "bool": "boolean",
    }
    lines = [
        "| section | field | type | default | environment | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in SCHEMA:
        meaning = spec.help
        if spec.choices and spec.name != "transport":
            meaning += " (one of " + ", ".join(f"`{c}`" for c in spec.choices) + ")"
        bounds = []
        if spec.minimum is not None:
            bounds.append(f"≥ {spec.minimum}")
        if spec.maximum is not None:
            bounds.append(f"≤ {spec.maximum}")
        kind = kinds[spec.kind] + (f" ({', '.join(bounds)})" if bounds else "")
        lines.append(
            f"| `{_SECTION_NAMES[spec.scope]}` | `{spec.name}` | {kind} | {_default_text(spec)} "
            f"| {_env_text(spec)} | {meaning} |"
        )
    lines += ["", "| transport | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in TRANSPORTS.items()]
    return "\n".join(lines) + "\n"
