"""The receiver settings, written once: :class:`ReceiverOptions` and where they come from.

Every adapter (Flask, Starlette, FastAPI, Django, aiohttp, the neutral ASGI/WSGI
middleware) and the CLI take the same settings.  They are one frozen dataclass,
:class:`ReceiverOptions`, filled from up to three layers -- the keyword arguments or
framework configuration of the app, then the environment, then the defaults -- and
checked once: every bad value is a :class:`~ilp_receiver.errors.ConfigError` naming the
setting the way it was given (``secret``, ``ILP_RECEIVER_SECRET``,
``ILP_RECEIVER["SECRET"]``).

=================  ================================  ==========================================
keyword            environment / Flask config /      meaning (default)
                   Django ``ILP_RECEIVER`` key
=================  ================================  ==========================================
``uplink``         ``ILP_RECEIVER_UPLINK`` /         uplink URL (``btp+ws://NAME:TOKEN@HOST:
                   ``UPLINK``                        PORT``, ``http+oer://...``), a ``Link``, or
                                                     a function returning one, called in each
                                                     process (required)
``secret``         ``ILP_RECEIVER_SECRET`` /         receiver secret: 32+ bytes, or hex
                   ``SECRET``                        (64+ hex digits)
``secret_file``    ``ILP_RECEIVER_SECRET_FILE`` /    a file holding the secret in hex; created
                   ``SECRET_FILE``                   (mode 0600) with a fresh one when missing
``store``          ``ILP_RECEIVER_STORE``            balance store: SQLite path, ``redis://``,
                                                     ``postgresql://``, a ``BalanceStore``
                                                     (in-memory)
``on_payment``     (code only)                       the receiver's payment hook (the paywall
                                                     hook)
``max_balance``    ``ILP_RECEIVER_MAX_BALANCE``      refuse payments beyond this per account
``receiver_name``  ``ILP_RECEIVER_NAME``             ``receiver_info.name`` in SPSP answers
``spsp_max_age``   ``ILP_RECEIVER_SPSP_MAX_AGE``     ``Cache-Control: max-age`` of SPSP (60)
``stream``         ``ILP_RECEIVER_STREAM``           serve STREAM beside PSK2 (true)
``paid``           ``ILP_RECEIVER_PAID``             ``{path: price}`` rules (env: JSON object)
``pointers``       ``ILP_RECEIVER_POINTERS``         names served at ``/<name>`` (env: comma-
                                                     separated)
``well_known``     ``ILP_RECEIVER_WELL_KNOWN``       serve ``/.well-known/pay`` (true)
``pay_method``     ``ILP_RECEIVER_PAY_METHOD``       ``psk2`` or ``stream`` (``psk2``)
``pay_wait``       ``ILP_RECEIVER_PAY_WAIT``         seconds a STREAM-paid request may wait (5)
``require_uplink`` ``ILP_RECEIVER_REQUIRE_UPLINK``   fail start-up when the uplink is
                                                     unreachable (false: start, answer 503,
                                                     keep reconnecting)
``health_path``    ``ILP_RECEIVER_HEALTH_PATH``      serve the health report at this path
                                                     (none)
``webhook_url``    ``ILP_RECEIVER_WEBHOOK_URL``      endpoints to POST signed payment events
                                                     to (env: comma-separated); setting it
                                                     switches webhooks on (docs/webhooks.md)
``webhook_key``    ``ILP_RECEIVER_WEBHOOK_KEY``      signing key(s): ``whsk_...`` (Ed25519) or
                                                     ``whsec_...`` (HMAC); space-separated
                                                     while rotating
``webhook_key_     ``ILP_RECEIVER_WEBHOOK_KEY_FILE`` a file holding the signing key(s)
file``
``webhook_window`` ``ILP_RECEIVER_WEBHOOK_WINDOW``   seconds one payment's credits are
                                                     aggregated into one event (1)
``webhook_max_     ``ILP_RECEIVER_WEBHOOK_MAX_AGE``  seconds before an undelivered event is a
age``                                                dead letter (259200: 3 days)
``webhook_         ``ILP_RECEIVER_WEBHOOK_DISPATCH`` deliver from the receiver process (true);
dispatch``                                           false: only write the outbox, for
                                                     ``ilp-receiver webhooks run``
``webhook_dead_    ``ILP_RECEIVER_WEBHOOK_DEAD_      seconds a dead letter is kept before a
retention``        RETENTION``                       dispatcher purges it (2592000: 30 days;
                                                     0: keep them)
=================  ================================  ==========================================

``secret`` and ``secret_file`` exclude each other within one layer; a higher layer's
one wins over a lower layer's other.  Booleans in the environment are ``1``/``0``,
``true``/``false``, ``yes``/``no``, ``on``/``off``; an empty variable counts as unset.
Without any secret a random one is drawn per process (and a warning logged): addresses
issued before a restart, or by another process, are then no longer paid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets as _random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypedDict

from .codec.oer import MAX_UINT64
from .errors import ConfigError
from .paywall import (
    DEFAULT_PAY_WAIT,
    PaidRoute,
    PaidRoutes,
    PayMethod,
    RouteSpec,
    check_pay_method,
    paywall_payment_hook,
)
from .spsp import ENDPOINT_NAME

if TYPE_CHECKING:
    from .links.base import Link
    from .receiver import AsyncReceiver, PaymentHook, Receiver
    from .stores.base import BalanceStore
    from .webhooks.dispatcher import WebhookConfig

__all__ = [
    "ENV_PREFIX",
    "SETTING_NAMES",
    "ReceiverOptions",
    "ReceiverSettings",
    "UplinkSpec",
    "load_or_create_secret",
]

log = logging.getLogger(__name__)

#: The prefix of every environment variable (and Flask config key) of a setting.
ENV_PREFIX: Final = "ILP_RECEIVER_"
#: keyword -> the upper-case name used in the environment (with :data:`ENV_PREFIX`), in
#: Flask's config (same) and in Django's ``ILP_RECEIVER`` dict (without it).
SETTING_NAMES: Final = {
    "uplink": "UPLINK",
    "secret": "SECRET",
    "secret_file": "SECRET_FILE",
    "store": "STORE",
    "on_payment": "ON_PAYMENT",
    "max_balance": "MAX_BALANCE",
    "receiver_name": "NAME",
    "spsp_max_age": "SPSP_MAX_AGE",
    "stream": "STREAM",
    "paid": "PAID",
    "pointers": "POINTERS",
    "well_known": "WELL_KNOWN",
    "pay_method": "PAY_METHOD",
    "pay_wait": "PAY_WAIT",
    "require_uplink": "REQUIRE_UPLINK",
    "health_path": "HEALTH_PATH",
    "webhook_url": "WEBHOOK_URL",
    "webhook_key": "WEBHOOK_KEY",
    "webhook_key_file": "WEBHOOK_KEY_FILE",
    "webhook_window": "WEBHOOK_WINDOW",
    "webhook_max_age": "WEBHOOK_MAX_AGE",
    "webhook_dispatch": "WEBHOOK_DISPATCH",
    "webhook_dead_retention": "WEBHOOK_DEAD_RETENTION",
}
#: Settings that only code can give (no text form).
_CODE_ONLY: Final = frozenset({"on_payment"})
_MIN_SECRET: Final = 32

#: An uplink: a URL, a :class:`~ilp_receiver.links.base.Link`, or a function returning
#: either (called once in each process, after any fork).
UplinkSpec: TypeAlias = "str | Link | Callable[[], str | Link]"


class ReceiverSettings(TypedDict, total=False):
    """The keyword arguments every adapter takes (``**settings``); see the module table."""

    uplink: UplinkSpec | None
    secret: bytes | str | None
    secret_file: str | os.PathLike[str] | None
    store: BalanceStore | str | None
    on_payment: PaymentHook | None
    max_balance: int | None
    receiver_name: str | None
    spsp_max_age: int
    stream: bool
    paid: RouteSpec
    pointers: Iterable[str]
    well_known: bool
    pay_method: str | None
    pay_wait: float
    require_uplink: bool
    health_path: str | None
    webhook_url: str | Iterable[str] | None
    webhook_key: str | None
    webhook_key_file: str | os.PathLike[str] | None
    webhook_window: float
    webhook_max_age: float
    webhook_dispatch: bool
    webhook_dead_retention: float


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    """Everything an adapter needs to run a receiver, its payment pointer and paywall.

    Build it with :meth:`from_settings` (keywords over the environment),
    :meth:`from_env`, :meth:`from_mapping` (framework config) or the constructor (values
    already checked types); :meth:`replace` layers more settings on top.
    """

    uplink: UplinkSpec | None = field(default=None, repr=False)  # a URL holds a token
    secret: bytes | None = field(default=None, repr=False)
    secret_file: Path | None = None
    store: BalanceStore | str | None = None
    on_payment: PaymentHook | None = paywall_payment_hook
    max_balance: int | None = None
    receiver_name: str | None = None
    spsp_max_age: int = 60
    stream: bool = True
    paid: PaidRoutes = field(default_factory=PaidRoutes)
    pointers: tuple[str, ...] = ()
    well_known: bool = True
    pay_method: PayMethod | None = None
    pay_wait: float = DEFAULT_PAY_WAIT
    require_uplink: bool = False
    health_path: str | None = None
    webhook_url: tuple[str, ...] = ()
    webhook_key: str | None = field(default=None, repr=False)
    webhook_key_file: Path | None = None
    webhook_window: float = 1.0
    webhook_max_age: float = 3 * 24 * 3600.0
    webhook_dispatch: bool = True
    webhook_dead_retention: float = 30 * 24 * 3600.0

    # -- building ----------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReceiverOptions:
        """The settings in ``ILP_RECEIVER_*`` environment variables (``os.environ``)."""
        return cls().replace_from(env_settings(environ))

    @classmethod
    def from_settings(
        cls,
        options: ReceiverOptions | None = None,
        *,
        config: Mapping[str, tuple[object, str]] | None = None,
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> ReceiverOptions:
        """Layer the sources of an adapter: the environment (``environ``, default
        ``os.environ``), then ``options`` (when given, it replaces the environment: it
        is complete), then ``config`` (``{setting: (value, name)}`` from a framework's
        configuration), then the keyword ``settings``."""
        base = options if options is not None else cls.from_env(environ)
        if config:
            base = base.replace_from(config)
        if settings:
            base = base.replace_from({key: (value, key) for key, value in settings.items()})
        return base

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, object],
        *,
        prefix: str = "",
        label: Callable[[str], str] | None = None,
        strict: bool = False,
    ) -> dict[str, tuple[object, str]]:
        """The settings found in ``mapping`` (a framework's config), for
        :meth:`from_settings`' ``config``: keys are ``prefix`` + the upper-case names
        of :data:`SETTING_NAMES` (or, without a prefix, the keywords too).  ``label``
        turns a key into the name errors use; ``strict`` refuses unknown keys (a dict
        holding only these settings)."""
        by_name = {prefix + name: key for key, name in SETTING_NAMES.items()}
        if not prefix:
            by_name.update({key: key for key in SETTING_NAMES})
        found: dict[str, tuple[object, str]] = {}
        for raw_key, value in mapping.items():
            key = by_name.get(raw_key)
            name = label(raw_key) if label is not None else raw_key
            if key is None:
                if strict:
                    known = ", ".join(sorted(SETTING_NAMES.values()))
                    raise ConfigError(name, f"unknown setting (known: {known})")
                continue
            if key in found:
                raise ConfigError(name, f"{key} is given twice")
            found[key] = (value, name)
        return found

    def replace(self, **settings: Any) -> ReceiverOptions:
        """These options with ``settings`` (keyword names) on top, checked."""
        return self.replace_from({key: (value, key) for key, value in settings.items()})

    def replace_from(self, settings: Mapping[str, tuple[object, str]]) -> ReceiverOptions:
        """These options with ``settings`` (``{keyword: (value, name for errors)}``) on
        top, each checked; unknown keywords are a ConfigError."""
        changes: dict[str, Any] = {}
        for key, (value, name) in settings.items():
            check = _CHECKS.get(key)
            if check is None:
                raise ConfigError(name, "unknown setting")
            changes[key] = check(value, name)
        if "secret" in changes and "secret_file" in changes:
            if changes["secret"] is not None and changes["secret_file"] is not None:
                raise ConfigError(
                    settings["secret_file"][1], "give either a secret or a secret file"
                )
        elif "secret" in changes and changes["secret"] is not None:
            changes["secret_file"] = None  # a higher layer's secret wins
        elif "secret_file" in changes and changes["secret_file"] is not None:
            changes["secret"] = None
        if changes.get("webhook_key") is not None:
            if changes.get("webhook_key_file") is not None:
                raise ConfigError(
                    settings["webhook_key_file"][1], "give either a webhook key or a key file"
                )
            changes["webhook_key_file"] = None  # a higher layer's key wins
        elif changes.get("webhook_key_file") is not None:
            changes["webhook_key"] = None
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ReceiverOptions(**values)

    # -- using -------------------------------------------------------------------------

    def receiver_secret(self) -> bytes:
        """The secret: ``secret``, else the one in ``secret_file`` (created when
        missing), else a random one (logged as a warning)."""
        if self.secret is not None:
            return self.secret
        if self.secret_file is not None:
            return load_or_create_secret(self.secret_file, setting=_name("secret_file"))
        log.warning(
            "no receiver secret configured (ILP_RECEIVER_SECRET_FILE or ILP_RECEIVER_SECRET):"
            " using a random one; payments to addresses issued before a restart, or by "
            "another process, will fail"
        )
        return _random.token_bytes(32)

    def uplink_value(self) -> str | Link:
        """The uplink to connect in this process (a function is called now)."""
        uplink = self.uplink
        if uplink is None:
            raise ConfigError(
                _name("uplink"), "set the uplink URL (e.g. btp+ws://NAME:TOKEN@HOST:PORT)"
            )
        value = uplink() if callable(uplink) else uplink
        if isinstance(value, str):
            _check_uplink_text(value, _name("uplink"))
        return value

    def receiver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~ilp_receiver.AsyncReceiver` (secret loaded)."""
        return {
            "secret": self.receiver_secret(),
            "store": self.store,
            "on_payment": self.on_payment,
            "max_balance": self.max_balance,
            "receiver_name": self.receiver_name,
            "spsp_max_age": self.spsp_max_age,
            "stream": self.stream,
            "require_uplink": self.require_uplink,
            "webhooks": self.webhook_config(),
        }

    def webhook_config(self) -> WebhookConfig | None:
        """The webhook settings (None unless ``webhook_url`` is set): the key from
        ``webhook_key`` or read from ``webhook_key_file``; required when this process
        dispatches."""
        if not self.webhook_url:
            return None
        from .webhooks.dispatcher import WebhookConfig, signing_keys

        text = self.webhook_key
        setting = _name("webhook_key")
        if text is None and self.webhook_key_file is not None:
            setting = _name("webhook_key_file")
            try:
                text = self.webhook_key_file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    setting, f"cannot read {self.webhook_key_file}: {type(exc).__name__}"
                ) from None
        keys = signing_keys(text.split(), setting) if text else ()
        if not keys and self.webhook_dispatch:
            raise ConfigError(
                _name("webhook_key"),
                "webhooks are signed: set ILP_RECEIVER_WEBHOOK_KEY or "
                "ILP_RECEIVER_WEBHOOK_KEY_FILE (ilp-receiver webhooks keygen makes one)",
            )
        return WebhookConfig(
            self.webhook_url,
            keys,
            window=self.webhook_window,
            max_age=self.webhook_max_age,
            dispatch=self.webhook_dispatch,
            dead_retention=self.webhook_dead_retention,
        )

    def async_receiver(self) -> AsyncReceiver:
        """A new :class:`~ilp_receiver.AsyncReceiver` with these options (not started)."""
        from .receiver import AsyncReceiver

        return AsyncReceiver(self.uplink_value(), **self.receiver_kwargs())

    def sync_receiver(self) -> Receiver:
        """A new sync :class:`~ilp_receiver.Receiver` (not started); call it once per
        process (after any fork)."""
        from .receiver import Receiver

        return Receiver(self.uplink_value(), **self.receiver_kwargs())

    def check_uplink(self) -> None:
        """ConfigError now when no uplink is set (adapters call it at set-up)."""
        if self.uplink is None:
            self.uplink_value()
        elif isinstance(self.uplink, str):
            _check_uplink_text(self.uplink, _name("uplink"))


# ---------------------------------------------------------------------------------------
# The environment


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, tuple[object, str]]:
    """``{keyword: (text, variable)}`` for every non-empty ``ILP_RECEIVER_*`` setting."""
    env = os.environ if environ is None else environ
    found: dict[str, tuple[object, str]] = {}
    for key, name in SETTING_NAMES.items():
        if key in _CODE_ONLY:
            continue
        variable = ENV_PREFIX + name
        value = env.get(variable)
        if value is not None and value.strip():
            found[key] = (value.strip(), variable)
    return found


def _name(key: str) -> str:
    return ENV_PREFIX + SETTING_NAMES[key] if key in SETTING_NAMES else key


# ---------------------------------------------------------------------------------------
# Checks: (value, name) -> the checked value; ConfigError(name, ...) otherwise


def _check_uplink_text(value: str, name: str) -> None:
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if scheme not in (
        "btp+ws",
        "btp+wss",
        "http+oer",
        "https+oer",
        "http+oer-async",
        "https+oer-async",
    ):
        raise ConfigError(
            name,
            "an uplink URL starts with btp+ws://, btp+wss://, http+oer://, https+oer://, "
            "http+oer-async:// or https+oer-async://",
        )


def _uplink(value: object, name: str) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        _check_uplink_text(text, name)
        return text
    from .links.base import Link

    if isinstance(value, Link) or callable(value):
        return value
    raise ConfigError(name, f"expected a URL, a Link or a function, got {type(value).__name__}")


def _secret(value: object, name: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(
                name,
                "the receiver secret must be hex (64+ hex digits, e.g. from "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`)",
            ) from None
    else:
        raise ConfigError(name, f"expected bytes or a hex string, got {type(value).__name__}")
    if len(raw) < _MIN_SECRET:
        raise ConfigError(name, f"the receiver secret must be at least {_MIN_SECRET} bytes")
    return raw


def _path(value: object, name: str) -> Path | None:
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if not str(text).strip():
            return None
        return Path(text)
    raise ConfigError(name, f"expected a file path, got {type(value).__name__}")


def _store(value: object, name: str) -> object:
    if value is None:
        return None
    from .stores.base import BalanceStore

    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, BalanceStore):
        return value
    raise ConfigError(name, f"expected a store URL or path, got {type(value).__name__}")


def _hook(value: object, name: str) -> object:
    if value is None or callable(value):
        return value
    raise ConfigError(name, f"expected a function, got {type(value).__name__}")


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(name, f"expected an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ConfigError(name, f"must be in {low}..{high}, got {value}")
    return value


def _max_balance(value: object, name: str) -> int | None:
    return None if value is None else _int(value, name, 0, MAX_UINT64)


def _max_age(value: object, name: str) -> int:
    return _int(value, name, 0, 365 * 24 * 3600)


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    raise ConfigError(name, f"expected text, got {type(value).__name__}")


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigError(name, f"expected true or false (1/0, yes/no, on/off), got {value!r}")


def _paid(value: object, name: str) -> PaidRoutes:
    if value is None:
        return PaidRoutes()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(
                name, 'expected a JSON object of paths and prices, e.g. {"/api/*": 10}'
            ) from None
        if not isinstance(value, dict):
            raise ConfigError(name, 'expected a JSON object, e.g. {"/api/*": 10}')
    try:
        if isinstance(value, PaidRoutes):
            routes = value
        elif isinstance(value, Mapping):
            routes = PaidRoutes(dict(value))
        elif isinstance(value, Iterable):
            routes = PaidRoutes(tuple(value))
        else:
            raise ConfigError(name, f"expected {{path: price}}, got {type(value).__name__}")
        for route in routes.routes:
            if not isinstance(route, PaidRoute):
                raise ConfigError(name, f"expected PaidRoute items, got {type(route).__name__}")
            price = route.price
            if not callable(price) and (
                isinstance(price, bool)
                or not isinstance(price, int)
                or not 0 <= price <= MAX_UINT64
            ):
                raise ConfigError(name, f"the price of {route.pattern!r} must be an int >= 0")
    except ConfigError as exc:
        if exc.field == name:
            raise
        raise ConfigError(name, exc.problem) from None
    return routes


def _pointers(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items: Iterable[object]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ConfigError(name, f"expected names, got {type(value).__name__}")
    names = tuple(items)
    for item in names:
        if not isinstance(item, str) or not ENDPOINT_NAME.fullmatch(item):
            raise ConfigError(
                name, f"invalid payment pointer name {item!r} (letters, digits, _, -)"
            )
    return names  # type: ignore[return-value]


def _pay_method(value: object, name: str) -> PayMethod | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_pay_method(value, name)


def _pay_wait(value: object, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(name, f"expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 3600:
        raise ConfigError(name, f"must be a number of seconds in [0, 3600), got {value!r}")
    return float(value)


def _health_path(value: object, name: str) -> str | None:
    text = _optional_text(value, name)
    if text is not None and not text.startswith("/"):
        raise ConfigError(name, f"a path starts with '/', got {text!r}")
    return text


def _webhook_urls(value: object, name: str) -> tuple[str, ...]:
    from .webhooks.dispatcher import check_url

    if value is None:
        return ()
    if isinstance(value, str):
        items = [part.strip() for part in value.replace(",", " ").split()]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise ConfigError(name, f"expected URLs, got {type(value).__name__}")
    urls = tuple(check_url(item, name) for item in items if item)
    if len(set(urls)) != len(urls):
        raise ConfigError(name, "an endpoint is listed twice")
    return urls


def _webhook_key(value: object, name: str) -> str | None:
    from .webhooks.dispatcher import signing_keys

    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a key as text, got {type(value).__name__}")
    signing_keys(value.split(), name)  # checked now, parsed again when used
    return value


def _seconds(value: object, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(name, f"expected a number of seconds, got {value!r}") from None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(name, f"expected a number of seconds, got {type(value).__name__}")
    if not 0 <= value < 10**9:
        raise ConfigError(name, f"must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _webhook_max_age(value: object, name: str) -> float:
    seconds = _seconds(value, name)
    if seconds <= 0:
        raise ConfigError(name, "must be a positive number of seconds")
    return seconds


_CHECKS: Final[dict[str, Callable[[object, str], object]]] = {
    "uplink": _uplink,
    "secret": _secret,
    "secret_file": _path,
    "store": _store,
    "on_payment": _hook,
    "max_balance": _max_balance,
    "receiver_name": _optional_text,
    "spsp_max_age": _max_age,
    "stream": _bool,
    "paid": _paid,
    "pointers": _pointers,
    "well_known": _bool,
    "pay_method": _pay_method,
    "pay_wait": _pay_wait,
    "require_uplink": _bool,
    "health_path": _health_path,
    "webhook_url": _webhook_urls,
    "webhook_key": _webhook_key,
    "webhook_key_file": _path,
    "webhook_window": _seconds,
    "webhook_max_age": _webhook_max_age,
    "webhook_dispatch": _bool,
    "webhook_dead_retention": _seconds,
}


# ---------------------------------------------------------------------------------------
# The secret file


def load_or_create_secret(path: str | os.PathLike[str], *, setting: str = "secret-file") -> bytes:
    """The receiver secret (hex) in ``path``; a fresh one is written there first when the
    file is missing (mode 0600, atomically: when several processes start at once, one
    creates it and all read the same secret).  ConfigError naming ``setting`` when the
    file cannot be read or holds no hex secret of 32+ bytes."""
    file = Path(path)
    created = _create_secret_file(file, setting)
    try:
        text = file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"cannot read {file}: {exc}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(setting, f"{file} does not hold a hex secret") from None
    if len(secret) < _MIN_SECRET:
        raise ConfigError(setting, f"{file} holds fewer than {_MIN_SECRET} bytes")
    if created:
        log.info("receiver secret: created a new one in %s", file.resolve())
    else:
        log.info("receiver secret: %s", file.resolve())
    return secret


def _create_secret_file(file: Path, setting: str) -> bool:
    """Write a fresh secret to ``file`` unless it exists; True when this call made it."""
    if file.exists():
        return False
    content = (_random.token_bytes(32).hex() + "\n").encode("ascii")
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{_random.token_hex(4)}.tmp")
    try:
        _write_new(tmp, content)
        try:
            # atomic, complete when visible, and never replaces a file another process made
            os.link(tmp, file)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network file systems)
            try:
                _write_new(file, content)
            except FileExistsError:
                return False
    except OSError as exc:
        raise ConfigError(setting, f"cannot create {file}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return True


def _write_new(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
