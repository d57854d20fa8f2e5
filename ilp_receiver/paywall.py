"""HTTP-ILP paid APIs: the ``Pay`` / ``Pay-Token`` / ``Pay-Balance`` decisions.

Implements the server side of HTTP-ILP draft 3 (spec ``08-http-ilp.md``; interledger/rfcs
``0014-http-ilp`` as koa-ilp and superagent-ilp implemented it), once, for every
framework.  The decision is sans-I/O (:func:`plan_request`, the reply builders, and
one decision sequence that yields the store steps it needs: :class:`Debit`,
:class:`ReadBalance`); :meth:`Paywall.check` drives it with awaited balance-store calls
and, for sync callers, :meth:`Paywall.check_blocking` with the store's blocking methods
on the calling thread.

On a paid route with price ``p > 0``:

===================================  ==============================================
request                              reply
===================================  ==============================================
``OPTIONS``                          ``204`` with ``Pay`` (+ ``Pay-Balance`` when a
                                     ``Pay-Token`` is sent)
no ``Pay-Token``                     ``402`` with ``Pay``, JSON body
malformed ``Pay-Token``              ``400``, JSON body
balance below ``p``                  ``402`` with ``Pay`` and ``Pay-Balance``
balance at least ``p``               ``p`` is debited atomically, the route runs, and
                                     its response carries ``Pay`` and ``Pay-Balance``
===================================  ==============================================

A price of 0 "skips payment entirely" (koa-ilp).

**Binding a payment to a token.**  ``Pay`` is ``interledger-psk2 <destination> <secret>
<price>`` from ``receiver.issue(account)``, where ``account`` is the token's balance
account (:func:`token_account`).  The account name is authenticated inside the issued
address, so money sent to that destination can only credit that token, whatever the
PSK2 era of the sender.  **Choice:** the account is ``token:`` + base64url of a hash of
the token, not the token itself, because the bound account is readable in the ILP
address by every connector on the path and a Pay-Token is a bearer secret (koa-ilp kept
it inside the encrypted PSK2 data).  The hash also keeps tokens out of store dumps.

Payments bound the way the two PSK2 eras did it -- draft 1: "the 16-byte token *is* the
PSK2 paymentId"; draft 2: "the first 16 bytes of the PSK2 request data are the token" --
are accepted by the ``on_payment`` hook :data:`paywall_payment_hook`, for destinations
issued without a token (:data:`PAYWALL_ACCOUNT`: ``OPTIONS`` and ``402`` replies to
requests that sent no ``Pay-Token``).  Combine it with other hooks with
:func:`combine_hooks`.

**Over STREAM** (pay method ``"stream"``, ``docs/paid-api.md``): ``Pay`` is
``interledger-stream <destination> <secret>`` from ``receiver.issue_stream(account)``,
bound to the token's account the same way (the account is authenticated inside the
STREAM token).  STREAM-era clients open a stream there, wait for the server's first
byte on it, and repeat the request while the money flows.  So, per receiver
(:class:`PaywallStreams`): every stream a client opens to a token account gets the
price of the latest ``Pay`` issued for that token as its receive limit
(``StreamMaxMoney``; beyond it packets are rejected F99, never lost) and a greeting
(:data:`STREAM_GREETING`) in the reply to the packet that opened it; the receiver
credits the token's account before each Fulfill; and a request that finds the balance
short while a stream to its token is open waits -- woken by the STREAM events, at most
``pay_wait`` seconds -- until the money covers the price, then debits atomically.
Which method a route offers is configuration: ``Paywall(pay_method=...)`` (default
:func:`default_pay_method`: ``$ILP_RECEIVER_PAY_METHOD``, else ``"psk2"``) and per
route (:class:`PaidRoute`, the adapters' ``@paid(..., pay_method=...)``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

from .codec.oer import MAX_UINT64
from .codec.pay_header import (
    PAY_TOKEN_LENGTH,
    PSK2_METHOD,
    STREAM_METHOD,
    PayHeader,
    format_pay_balance,
    format_pay_header,
    parse_pay_token,
)
from .crypto import sha256
from .errors import ConfigError, DecodeError, IlpError
from .http_reply import HttpReply, json_reply
from .stores.outbox import OutboxEntry
from .stream.server import (
    ConnectionClosed,
    MoneyReceived,
    StreamClosed,
    StreamEvent,
    StreamOpened,
    StreamSetup,
)

if TYPE_CHECKING:
    from .psk2.secrets import IssuedSecret
    from .receiver import (
        IncomingPayment,
        PaymentHook,
        StreamEventCallback,
        StreamOpenPolicy,
    )
    from .stores.base import BalanceStore

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PAY_METHOD",
    "DEFAULT_PAY_WAIT",
    "NO_TOKEN_MESSAGE",
    "PAYWALL_ACCOUNT",
    "PAY_METHODS",
    "PAY_METHOD_ENV",
    "SHORT_DATA_MESSAGE",
    "STREAM_GREETING",
    "STREAM_UNBOUND_MESSAGE",
    "TOKEN_ACCOUNT_PREFIX",
    "Debit",
    "PaidRoute",
    "PaidRoutes",
    "PayMethod",
    "Paywall",
    "PaywallDecision",
    "PaywallPaymentHook",
    "PaywallReceiver",
    "PaywallStreams",
    "PerByte",
    "Plan",
    "PlanKind",
    "Price",
    "ReadBalance",
    "RequestFacts",
    "RouteSpec",
    "StoreStep",
    "bad_token_reply",
    "body_limit",
    "check_content_length",
    "check_pay_method",
    "check_pay_wait",
    "combine_hooks",
    "default_pay_method",
    "options_reply",
    "pay_balance_header",
    "payload_too_large_reply",
    "payment_required_reply",
    "paywall_payment_hook",
    "per_byte",
    "plan_request",
    "price_value",
    "resolve_price",
    "token_account",
    "token_from_payment",
    "uplink_unavailable_reply",
]

#: Account behind ``Pay`` headers issued to requests without a ``Pay-Token``.  Money
#: sent there is moved to a token by :data:`paywall_payment_hook` (draft-1 paymentId or
#: draft-2 data prefix); without the hook it stays here (the site keeps it).
PAYWALL_ACCOUNT: Final = "paywall:unbound"
#: Prefix of every token balance account (:func:`token_account`).
TOKEN_ACCOUNT_PREFIX: Final = "token:"  # noqa: S105 (not a secret)
#: koa-ilp's body when ``Pay-Token`` is missing.
NO_TOKEN_MESSAGE: Final = "No valid payment token provided"  # noqa: S105 (not a secret)
#: koa-ilp 1.1.1: "requests whose data is shorter are rejected with data 'PSK2 data must
#: contain a 16-byte token'".
SHORT_DATA_MESSAGE: Final = "PSK2 data must contain a 16-byte token"
#: Why a STREAM payment to :data:`PAYWALL_ACCOUNT` is refused: over STREAM the token is
#: bound by the destination only, and that one was issued to a request without one.
STREAM_UNBOUND_MESSAGE: Final = (
    "STREAM payments must go to a Pay destination issued for a Pay-Token; send Pay-Token"
)

#: How a paid route is paid: ``"psk2"`` (``Pay: interledger-psk2 ...``, HTTP-ILP draft 3)
#: or ``"stream"`` (``Pay: interledger-stream ...``).
PayMethod: TypeAlias = Literal["psk2", "stream"]
PAY_METHODS: Final[tuple[PayMethod, ...]] = ("psk2", "stream")
#: The environment variable naming the app-wide pay method when none is configured.
PAY_METHOD_ENV: Final = "ILP_RECEIVER_PAY_METHOD"
#: The pay method without configuration (``docs/paid-api.md``: why PSK2).
DEFAULT_PAY_METHOD: Final[PayMethod] = "psk2"
#: Seconds a request may wait for money flowing on a stream to its token.
DEFAULT_PAY_WAIT: Final = 5.0
#: The bytes written on every stream a client opens to a token account: STREAM-era
#: HTTP-ILP clients repeat their request once the server has sent one byte.
STREAM_GREETING: Final = b"ready"
#: Most tokens whose latest STREAM price is remembered, per receiver.
DEFAULT_MAX_PRICED_TOKENS: Final = 65536
#: Largest body a :func:`per_byte` price reads unless told otherwise (1 MiB).
DEFAULT_MAX_BODY: Final = 1 << 20
#: ``Retry-After`` (seconds) of the 503 answered while the uplink is not connected yet.
UPLINK_RETRY_AFTER: Final = 2
#: A waiting request re-reads the balance this often even without a wake-up.
_RECHECK_INTERVAL: Final = 0.25

_TOKEN_LABEL: Final = b"ilp-receiver pay-token\x00"
_PAY_TOKEN: Final = "pay-token"  # noqa: S105 (not a secret)


def token_account(token: bytes) -> str:
    """The balance-store account of a 16-byte Pay-Token.

    ``token:`` + base64url(SHA-256(label || token)[0:16]): stable, and it does not reveal
    the bearer token to connectors that read the bound destination address.
    """
    if len(token) != PAY_TOKEN_LENGTH:
        raise ValueError(f"a Pay-Token is {PAY_TOKEN_LENGTH} bytes, got {len(token)}")
    digest = sha256(_TOKEN_LABEL + bytes(token))[:16]
    return TOKEN_ACCOUNT_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_pay_method(value: object, what: str = "pay_method") -> PayMethod:
    """``value`` as a :data:`PayMethod` (``"psk2"`` or ``"stream"``, any case); else
    ConfigError naming ``what``."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text == "psk2":
        return "psk2"
    if text == "stream":
        return "stream"
    raise ConfigError(what, f"must be 'psk2' or 'stream', got {value!r}")


def default_pay_method(environ: Mapping[str, str] | None = None) -> PayMethod:
    """The app-wide pay method when none is configured: ``$ILP_RECEIVER_PAY_METHOD``
    (``psk2`` or ``stream``; empty counts as unset), else :data:`DEFAULT_PAY_METHOD`.
    ConfigError for any other value."""
    value = (os.environ if environ is None else environ).get(PAY_METHOD_ENV, "")
    if not value.strip():
        return DEFAULT_PAY_METHOD
    return check_pay_method(value, PAY_METHOD_ENV)


def check_pay_wait(value: object) -> float:
    """``value`` as the seconds a request may wait for STREAM money (>= 0); else
    ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 3600:
        raise ConfigError("pay_wait", f"must be a number of seconds in [0, 3600), got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------
# Request facts and prices


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the paywall (and a price function) may know about a request.

    ``method`` is upper case, ``path`` the URL path without the query, ``headers`` maps
    lower-case header names to values (repeated headers joined with ``", "``).
    ``body_size`` is the number of body bytes actually read, for prices that need it
    (:func:`per_byte`; the adapters read the body first only for those), else None.
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body_size: int | None = None

    @classmethod
    def from_pairs(cls, method: str, path: str, pairs: Iterable[tuple[str, str]]) -> RequestFacts:
        """Build facts from ``(name, value)`` header pairs in any case."""
        headers: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return cls(method.upper(), path, headers)

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        return self.headers.get(name.lower())


#: A route's price in the uplink's base units: an ``int``, or a function of the request
#: facts returning an ``int`` (sync or async).
Price: TypeAlias = "int | Callable[[RequestFacts], int | Awaitable[int]]"


def _check_price(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError("price", f"a price must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_UINT64:
        raise ConfigError("price", f"a price must be in 0..{MAX_UINT64}, got {value}")
    return value


def resolve_price(price: Price, request: RequestFacts) -> int | Awaitable[int]:
    """The price of ``request``: an ``int`` now, or an awaitable for async price functions.

    Sync price functions run in the caller's thread (so a Flask price function can read
    ``flask.request``); use :func:`price_value` to await the result.
    """
    if isinstance(price, int) and not isinstance(price, bool):
        return _check_price(price)
    if not callable(price):
        raise ConfigError("price", f"expected an int or a function, got {type(price).__name__}")
    value = price(request)
    if inspect.isawaitable(value):
        return _checked(value)
    return _check_price(value)


async def _checked(value: Awaitable[int]) -> int:
    return _check_price(await value)


async def price_value(price: int | Awaitable[int]) -> int:
    """Await a :func:`resolve_price` result if needed."""
    return price if isinstance(price, int) else await price


@dataclass(frozen=True, slots=True)
class PerByte:
    """A price of ``unit`` per byte of the request body *actually read*, at least
    ``minimum``; a body above ``max_bytes`` is refused (``413``) before any charge.

    The adapters see this price before the route runs and stream the body through a
    counting reader first (up to ``max_bytes`` + 1 bytes, kept for the route), so a
    chunked body or a lying ``Content-Length`` is priced by what arrived.  A
    ``Content-Length`` that is not a decimal number gets ``400``, one above
    ``max_bytes`` ``413`` -- without reading.  Build it with :func:`per_byte`.
    """

    unit: int = 1
    max_bytes: int = DEFAULT_MAX_BODY
    minimum: int = 1

    def __post_init__(self) -> None:
        for name in ("unit", "minimum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, f"must be an int >= 0, got {value!r}")
        limit = self.max_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigError("max_bytes", f"must be an int >= 0, got {limit!r}")
        if self.minimum + self.unit * limit > MAX_UINT64:
            raise ConfigError("max_bytes", "unit * max_bytes + minimum must fit in 2**64 - 1")

    def __call__(self, request: RequestFacts) -> int:
        """The price of ``request``: ``unit`` x bytes read, at least ``minimum``."""
        if request.body_size is None:
            raise RuntimeError(
                "per_byte needs the body size: this request did not go through an "
                "ilp-receiver adapter that reads the body first"
            )
        return max(self.minimum, request.body_size * self.unit)


def per_byte(unit: int = 1, *, max_bytes: int = DEFAULT_MAX_BODY, minimum: int = 1) -> PerByte:
    """A :class:`PerByte` price: ``unit`` per body byte read, at least ``minimum``,
    bodies above ``max_bytes`` refused with ``413`` (``@paid(per_byte(1))``)."""
    return PerByte(unit, max_bytes, minimum)


def body_limit(price: object) -> int | None:
    """The most body bytes ``price`` needs read before it can be computed
    (:class:`PerByte`), or None when the price does not depend on the body."""
    return price.max_bytes if isinstance(price, PerByte) else None


#: The largest ``Content-Length`` we parse: HTTP/1.1 servers use signed 64-bit sizes.
_MAX_CONTENT_LENGTH: Final = (1 << 63) - 1


def check_content_length(request: RequestFacts, limit: int | None) -> HttpReply | None:
    """``400`` for a ``Content-Length`` that is not one decimal number (RFC 9110 §8.6:
    ``1*DIGIT``), ``413`` for one above ``limit`` (None: no limit); else None."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None  # WSGI's empty CONTENT_LENGTH: no body
    if not (text.isascii() and text.isdigit()):
        return json_reply(
            400, {"id": "InvalidContentLength", "message": "Content-Length is not a number"}
        )
    # at most 19 digits are parsed: a longer number is above any limit anyway
    length = int(text) if len(text) <= 19 else _MAX_CONTENT_LENGTH + 1
    if length > _MAX_CONTENT_LENGTH or (limit is not None and length > limit):
        return payload_too_large_reply(limit)
    return None


def payload_too_large_reply(limit: int | None) -> HttpReply:
    """``413`` for a request body above ``limit`` bytes."""
    body: dict[str, str] = {"id": "PayloadTooLarge", "message": "the request body is too large"}
    if limit is not None:
        body["max_bytes"] = str(limit)
    return json_reply(413, body)


def uplink_unavailable_reply(reason: str | None = None) -> HttpReply:
    """``503`` with ``Retry-After``: the receiver has no uplink yet, so no ``Pay`` can be
    issued (the app started while its connector was unreachable)."""
    body = {
        "id": "UplinkUnavailable",
        "message": "payments cannot be received yet: the uplink to the connector is not "
        "connected; retry shortly",
    }
    if reason:
        body["reason"] = reason
    return json_reply(503, body, headers={"Retry-After": str(UPLINK_RETRY_AFTER)})


# ---------------------------------------------------------------------------------------
# Which routes are paid


@dataclass(frozen=True, slots=True)
class PaidRoute:
    """A paid path for the ASGI/WSGI glue.

    ``pattern``: an exact path (``"/upload"``), a prefix ending in ``*``
    (``"/api/*"`` matches ``/api/`` and everything under it), or a compiled regular
    expression (full match).  ``methods``: the methods that are charged (None: all).
    ``OPTIONS`` on a matching path is always answered with ``Pay``.  ``pay_method``:
    how this route is paid (None: the paywall's app-wide method).
    """

    pattern: str | re.Pattern[str]
    price: Price
    methods: frozenset[str] | None = None
    pay_method: PayMethod | None = None

    def __post_init__(self) -> None:
        if self.pay_method is not None:
            check_pay_method(self.pay_method)

    def matches_path(self, path: str) -> bool:
        """Whether ``path`` is under this route."""
        pattern = self.pattern
        if isinstance(pattern, re.Pattern):
            return pattern.fullmatch(path) is not None
        if pattern.endswith("*"):
            return path.startswith(pattern[:-1])
        return path == pattern

    def charges(self, method: str) -> bool:
        """Whether ``method`` on this route is charged (or answered, for OPTIONS)."""
        return method == "OPTIONS" or self.methods is None or method in self.methods


RouteSpec: TypeAlias = "PaidRoutes | Mapping[str, Price] | Iterable[PaidRoute] | None"


class PaidRoutes:
    """An ordered list of :class:`PaidRoute`; the first match wins."""

    def __init__(self, routes: Iterable[PaidRoute] | Mapping[str, Price] = ()) -> None:
        if isinstance(routes, Mapping):
            self.routes = tuple(PaidRoute(path, price) for path, price in routes.items())
        else:
            self.routes = tuple(routes)

    @classmethod
    def of(cls, spec: RouteSpec) -> PaidRoutes:
        """Coerce a mapping ``{path: price}``, a list of routes, or None."""
        if isinstance(spec, PaidRoutes):
            return spec
        return cls(() if spec is None else spec)

    def __bool__(self) -> bool:
        return bool(self.routes)

    def find(self, method: str, path: str) -> PaidRoute | None:
        """The route charging ``method path`` (its price and pay method), else None."""
        for route in self.routes:
            if route.matches_path(path):
                return route if route.charges(method) else None
        return None

    def match(self, method: str, path: str) -> Price | None:
        """The price of ``method path`` if it is a paid route, else None."""
        route = self.find(method, path)
        return None if route is None else route.price


# ---------------------------------------------------------------------------------------
# The sans-I/O plan


class PlanKind(Enum):
    """What a paid route must do with a request, before any store call."""

    #: price 0: serve, no headers.
    FREE = "free"
    #: the Pay-Token header is malformed: 400.
    BAD_TOKEN = "bad-token"  # noqa: S105 (not a secret)
    #: OPTIONS: 204 with Pay (and Pay-Balance if a token came).
    OPTIONS = "options"
    #: no Pay-Token: 402 with Pay.
    NO_TOKEN = "no-token"  # noqa: S105 (not a secret)
    #: debit the token's account; 200 path or 402 with Pay-Balance.
    CHARGE = "charge"


@dataclass(frozen=True, slots=True)
class Plan:
    """The result of :func:`plan_request` (the token is kept out of ``repr``)."""

    kind: PlanKind
    price: int
    token: bytes | None = field(default=None, repr=False)
    #: Why the token was refused (BAD_TOKEN).
    reason: str = ""

    @property
    def account(self) -> str:
        """The account the Pay header binds and a charge debits."""
        return PAYWALL_ACCOUNT if self.token is None else token_account(self.token)


def plan_request(method: str, pay_token: str | None, price: int) -> Plan:
    """Decide what to do with a request to a route of ``price`` (no I/O)."""
    if price == 0:
        # koa-ilp: "a price of 0 skips payment entirely"
        return Plan(PlanKind.FREE, 0)
    token = None
    if pay_token is not None:
        try:
            token = parse_pay_token(pay_token)
        except DecodeError as exc:
            return Plan(PlanKind.BAD_TOKEN, price, reason=exc.reason)
    if method == "OPTIONS":
        # "OPTIONS /resource with Pay-Token ... -> 204 No Content with Pay (and
        # Pay-Balance if a token was sent)"
        return Plan(PlanKind.OPTIONS, price, token)
    if token is None:
        return Plan(PlanKind.NO_TOKEN, price)
    return Plan(PlanKind.CHARGE, price, token)


def pay_balance_header(balance: int) -> str:
    """A ``Pay-Balance`` value (clamped to ``0..2**64-1``)."""
    return format_pay_balance(min(max(balance, 0), MAX_UINT64))


_balance_header = pay_balance_header


def options_reply(pay: str, balance: int | None) -> HttpReply:
    """``204 No Content`` with ``Pay`` (and ``Pay-Balance`` when a token was sent)."""
    headers = {"Pay": pay}
    if balance is not None:
        headers["Pay-Balance"] = _balance_header(balance)
    return HttpReply(204, headers)


def payment_required_reply(pay: str, price: int, balance: int | None) -> HttpReply:
    """``402 Payment Required`` with ``Pay`` (and ``Pay-Balance`` when a token was sent)."""
    headers = {"Pay": pay}
    if balance is None:
        body = {"id": "PaymentRequired", "message": NO_TOKEN_MESSAGE, "price": str(price)}
    else:
        headers["Pay-Balance"] = _balance_header(balance)
        body = {
            "id": "InsufficientBalance",
            "message": f"Your Payment Token has no funds available. It needs at least {price}",
            "price": str(price),
            "balance": str(max(balance, 0)),
        }
    return json_reply(402, body, headers=headers)


def bad_token_reply(reason: str) -> HttpReply:
    """``400 Bad Request`` for a malformed ``Pay-Token`` (the token is not echoed)."""
    return json_reply(400, {"id": "InvalidPayToken", "message": reason})


# ---------------------------------------------------------------------------------------
# The paywall


class PaywallReceiver(Protocol):
    """What the paywall needs from a receiver (an :class:`~ilp_receiver.AsyncReceiver`)."""

    def issue(self, account: str) -> IssuedSecret:
        """A fresh destination and shared secret bound to ``account``."""
        ...

    def issue_stream(self, account: str) -> tuple[str, bytes]:
        """A fresh STREAM destination and shared secret bound to ``account``."""
        ...

    def on_stream_open(self, policy: StreamOpenPolicy) -> None:
        """Let ``policy`` set the receive limit and greeting of new streams."""
        ...

    def on_stream_event(self, callback: StreamEventCallback) -> None:
        """Call ``callback`` for every STREAM event."""
        ...

    @property
    def store(self) -> BalanceStore:
        """The balance store."""
        ...


@dataclass(frozen=True, slots=True)
class PaywallDecision:
    """What :meth:`Paywall.check` decided.

    ``reply`` set: answer with it and do not run the route.  Otherwise run the route and
    add ``headers`` (``Pay``, ``Pay-Balance``) to its response.  ``charged`` is what was
    debited from ``account`` (0 when nothing was).
    """

    reply: HttpReply | None
    headers: dict[str, str] = field(default_factory=dict)
    account: str | None = None
    charged: int = 0
    balance: int | None = None

    @property
    def serve(self) -> bool:
        """True when the route should run."""
        return self.reply is None


FREE: Final = PaywallDecision(None)


class PaywallStreams:
    """The paywall's STREAM side for one receiver, shared by every :class:`Paywall` on it
    (:meth:`of`).

    * **Prices.**  :meth:`set_price` remembers the price of the latest ``Pay`` issued for
      a token account (a bounded LRU of ``max_prices`` tokens, in this process); the
      receiver's stream-open policy (:meth:`stream_setup`) makes it the receive limit
      (``StreamMaxMoney``) of every stream a client opens to that account, and greets
      the stream with :data:`STREAM_GREETING`.  A token whose price this process does
      not know (issued by another process, or forgotten) gets an unlimited stream,
      greeted all the same: whatever arrives stays on the token.
    * **Who is paying.**  The STREAM events tell which token accounts have an open
      stream (:meth:`paying`); money arriving, streams and connections closing wake the
      requests waiting for that account (:meth:`debit`).

    Only accounts starting with :data:`TOKEN_ACCOUNT_PREFIX` are touched; other streams
    are left to the next policy.  The tables follow the STREAM server's own bounds
    (connections, streams per connection, idle expiry report every close).
    """

    _registry: weakref.WeakKeyDictionary[object, PaywallStreams] = weakref.WeakKeyDictionary()
    _registry_lock = threading.Lock()

    def __init__(
        self, receiver: PaywallReceiver, *, max_prices: int = DEFAULT_MAX_PRICED_TOKENS
    ) -> None:
        self.greeting = STREAM_GREETING
        self._max_prices = max_prices
        self._lock = threading.Lock()
        self._prices: OrderedDict[str, int] = OrderedDict()
        #: account -> connection id -> ids of its open streams
        self._open: dict[str, dict[str, set[int]]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        receiver.on_stream_open(self.stream_setup)
        receiver.on_stream_event(self.on_stream_event)

    @classmethod
    def of(cls, receiver: PaywallReceiver) -> PaywallStreams:
        """The instance of ``receiver`` (made and registered with it on first use)."""
        with cls._registry_lock:
            found = cls._registry.get(receiver)
            if found is None:
                found = cls._registry[receiver] = cls(receiver)
            return found

    # -- prices ------------------------------------------------------------------------

    def set_price(self, account: str, price: int) -> None:
        """Remember ``price`` as what a stream to ``account`` may receive."""
        with self._lock:
            prices = self._prices
            prices[account] = price
            prices.move_to_end(account)
            while len(prices) > self._max_prices:
                prices.popitem(last=False)

    def price(self, account: str) -> int | None:
        """The latest price issued for ``account`` in this process, or None."""
        with self._lock:
            return self._prices.get(account)

    def stream_setup(self, account: str, stream_id: int) -> StreamSetup | None:
        """The stream-open policy: limit = the token's price, greeting; None otherwise."""
        if not account.startswith(TOKEN_ACCOUNT_PREFIX):
            return None
        price = self.price(account)
        return StreamSetup(MAX_UINT64 if price is None else price, self.greeting)

    # -- who is paying -----------------------------------------------------------------

    def paying(self, account: str) -> bool:
        """Whether a client has a stream open to ``account`` (in this process)."""
        return bool(self._open.get(account))

    def on_stream_event(self, event: StreamEvent) -> None:
        """Track open streams of token accounts; wake their waiting requests."""
        account = event.account
        if not account.startswith(TOKEN_ACCOUNT_PREFIX):
            return
        if isinstance(event, MoneyReceived):
            self._wake(account)
        elif isinstance(event, StreamOpened):
            self._open.setdefault(account, {}).setdefault(event.connection_id, set()).add(
                event.stream_id
            )
        elif isinstance(event, StreamClosed):
            connections = self._open.get(account)
            streams = None if connections is None else connections.get(event.connection_id)
            if streams is not None:
                streams.discard(event.stream_id)
                if not streams:
                    self._forget(account, event.connection_id)
            self._wake(account)
        elif isinstance(event, ConnectionClosed):
            self._forget(account, event.connection_id)
            self._wake(account)

    def _forget(self, account: str, connection_id: str) -> None:
        connections = self._open.get(account)
        if connections is not None:
            connections.pop(connection_id, None)
            if not connections:
                del self._open[account]

    def _wake(self, account: str) -> None:
        event = self._wakeups.pop(account, None)
        if event is not None:
            event.set()

    async def debit(
        self,
        store: BalanceStore,
        account: str,
        amount: int,
        wait: float,
        outbox: list[OutboxEntry] | None = None,
    ) -> int | None:
        """Debit ``amount`` from ``account`` atomically; the new balance, or None.

        While the balance is short and a client has a stream open to the account, wait
        -- woken by its money and its closes, re-reading the store every 0.25 s, at
        most ``wait`` seconds -- and try again.  Gives up at once when no stream is
        open (or the last one closes).
        """
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            wakeup = None
            if wait > 0 and self.paying(account):
                # taken before reading the store, so a credit landing in between wakes us
                wakeup = self._wakeups.setdefault(account, asyncio.Event())
            if outbox:
                balance = await store.try_debit_with_outbox(account, amount, outbox)
            else:
                balance = await store.try_debit(account, amount)
            if balance is not None or wakeup is None:
                return balance
            now = loop.time()
            if deadline is None:
                deadline = now + wait
            remaining = deadline - now
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), min(remaining, _RECHECK_INTERVAL))


@dataclass(frozen=True, slots=True)
class Debit:
    """A store step of the paywall's decision: take ``amount`` from ``account`` if the
    balance covers it (the balance afterwards, or None), writing ``events`` with it;
    ``stream``: a STREAM route (a short balance may wait for money in flight).  Also
    what a refund credits back."""

    account: str
    amount: int
    events: list[OutboxEntry] | None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class ReadBalance:
    """A store step of the paywall's decision: the balance of ``account``."""

    account: str


#: What :meth:`Paywall._decide` asks its driver to do with the store.
StoreStep: TypeAlias = Debit | ReadBalance


class Paywall:
    """HTTP-ILP for one receiver: turns request facts and a price into a decision.

    ``receiver`` is an :class:`~ilp_receiver.AsyncReceiver` (started before the first
    :meth:`check`).  Token balances live in its balance store.  ``pay_method`` is how
    routes are paid unless they say otherwise (None: :func:`default_pay_method`,
    ``$ILP_RECEIVER_PAY_METHOD`` else ``"psk2"``); ``pay_wait`` the seconds a request
    on a STREAM route may wait for money flowing on a stream to its token.
    """

    def __init__(
        self,
        receiver: PaywallReceiver,
        *,
        pay_method: str | None = None,
        pay_wait: float = DEFAULT_PAY_WAIT,
    ) -> None:
        self.receiver = receiver
        self.pay_method: PayMethod = (
            default_pay_method() if pay_method is None else check_pay_method(pay_method)
        )
        self.pay_wait = check_pay_wait(pay_wait)
        self._streams: PaywallStreams | None = None

    @property
    def streams(self) -> PaywallStreams:
        """The receiver's :class:`PaywallStreams` (registered with it on first use)."""
        streams = self._streams
        if streams is None:
            streams = self._streams = PaywallStreams.of(self.receiver)
        return streams

    def method_for(self, pay_method: str | None) -> PayMethod:
        """A route's pay method: ``pay_method``, or the paywall's when None."""
        return self.pay_method if pay_method is None else check_pay_method(pay_method)

    def pay_header(self, account: str, price: int, pay_method: str | None = None) -> str:
        """A ``Pay`` header with a fresh destination/secret bound to ``account``.

        STREAM: ``interledger-stream <destination> <secret>``; ``price`` becomes the
        receive limit of the streams a client opens to a token account.
        """
        if self.method_for(pay_method) == "stream":
            streams = self.streams  # registers the stream policy with the receiver
            if account.startswith(TOKEN_ACCOUNT_PREFIX):
                streams.set_price(account, price)
            destination, secret = self.receiver.issue_stream(account)
            return format_pay_header(PayHeader(STREAM_METHOD, destination, secret))
        destination, secret = self.receiver.issue(account)
        return format_pay_header(PayHeader(PSK2_METHOD, destination, secret, price))

    def _decide(
        self, request: RequestFacts, amount: int, method: PayMethod
    ) -> Generator[StoreStep, int | None, PaywallDecision]:
        """The paywall's one decision sequence: it yields the store operations it needs
        (:class:`Debit`, :class:`ReadBalance`), is sent their results, and returns the
        decision.  :meth:`check` drives it on the event loop, :meth:`check_blocking` on
        the calling thread."""
        plan = plan_request(request.method, request.headers.get(_PAY_TOKEN), amount)
        kind = plan.kind
        if kind is PlanKind.FREE:
            return FREE
        if kind is PlanKind.BAD_TOKEN:
            return PaywallDecision(bad_token_reply(plan.reason))
        account = plan.account
        if kind is PlanKind.CHARGE:
            events = self._events("paywall.debited", account, amount)
            balance = yield Debit(account, amount, events, method == "stream")
            pay = self.pay_header(account, amount, method)
            if balance is None:
                current = yield ReadBalance(account)
                assert current is not None
                return self._short(pay, account, amount, current)
            return self._served(pay, account, amount, balance)
        pay = self.pay_header(account, amount, method)
        if kind is PlanKind.OPTIONS:
            balance_now = None if plan.token is None else (yield ReadBalance(account))
            return PaywallDecision(options_reply(pay, balance_now), account=account)
        return PaywallDecision(payment_required_reply(pay, amount, None))

    async def check(
        self,
        request: RequestFacts,
        price: int | Awaitable[int],
        *,
        pay_method: str | None = None,
    ) -> PaywallDecision:
        """Decide on ``request``; debits the price from the token's balance when it serves.

        ``pay_method``: the route's (None: the paywall's).  Over STREAM a short balance
        waits (up to ``pay_wait`` s) while a stream to the token is open.
        """
        amount = await price_value(price)
        steps = self._decide(request, amount, self.method_for(pay_method))
        store = self.receiver.store
        result: int | None = None
        try:
            while True:
                step = steps.send(result)
                if isinstance(step, ReadBalance):
                    result = await store.balance(step.account)
                elif step.stream:
                    result = await self.streams.debit(
                        store, step.account, step.amount, self.pay_wait, step.events
                    )
                elif step.events:
                    result = await store.try_debit_with_outbox(
                        step.account, step.amount, step.events
                    )
                else:
                    result = await store.try_debit(step.account, step.amount)
        except StopIteration as done:
            decision: PaywallDecision = done.value
            return decision

    def check_blocking(
        self, request: RequestFacts, price: int, *, pay_method: str | None = None
    ) -> PaywallDecision | None:
        """:meth:`check` on the calling thread, for sync callers (WSGI request threads).

        Uses the store's blocking methods (``BalanceStore.add_blocking``: the same
        atomic, exactly-once debit); returns None when the store has none
        (``supports_blocking`` False: Redis, PostgreSQL), so the caller runs
        :meth:`check` on the event loop instead -- also when a STREAM route's balance is
        short while a stream to the token is open (the wait for the money runs on the
        loop, woken by the receiver's events).  Issuing ``Pay`` is pure computation
        and thread-safe.  Never call it on an event loop's thread.
        """
        store = self.receiver.store
        if not store.supports_blocking:
            return None
        steps = self._decide(request, price, self.method_for(pay_method))
        result: int | None = None
        try:
            while True:
                step = steps.send(result)
                if isinstance(step, ReadBalance):
                    result = store.balance_blocking(step.account)
                    continue
                if step.events:
                    result = store.try_debit_blocking_with_outbox(
                        step.account, step.amount, step.events
                    )
                else:
                    result = store.try_debit_blocking(step.account, step.amount)
                if (
                    result is None
                    and step.stream
                    and self.pay_wait > 0
                    and self.streams.paying(step.account)
                ):
                    steps.close()
                    return None  # money is flowing: wait for it on the event loop
        except StopIteration as done:
            decision: PaywallDecision = done.value
            return decision

    def _events(self, kind: str, account: str, amount: int) -> list[OutboxEntry] | None:
        """With webhooks on, the ``paywall.debited`` / ``paywall.refunded`` event to
        write in the debit's (refund's) transaction; else None."""
        receiver = self.receiver
        # an AsyncReceiver has these; a PaywallReceiver need not (then: no webhooks)
        if getattr(receiver, "webhooks", None) is None or not receiver.store.supports_outbox:
            return None
        data: dict[str, object] = {}
        config = getattr(receiver, "config", None) if getattr(receiver, "ready", False) else None
        if config is not None:
            data["asset"] = {"code": config.asset_code, "scale": config.asset_scale}
        return [OutboxEntry(kind, account, amount, data)]

    @staticmethod
    def _served(pay: str, account: str, price: int, balance: int) -> PaywallDecision:
        headers = {"Pay": pay, "Pay-Balance": _balance_header(balance)}
        return PaywallDecision(None, headers, account, price, balance)

    @staticmethod
    def _short(pay: str, account: str, price: int, current: int) -> PaywallDecision:
        return PaywallDecision(
            payment_required_reply(pay, price, current), account=account, balance=current
        )

    def _refund_of(self, decision: PaywallDecision) -> Debit | None:
        """What refunding ``decision`` credits back (None: it charged nothing)."""
        if decision.charged and decision.account is not None:
            account, charged = decision.account, decision.charged
            return Debit(account, charged, self._events("paywall.refunded", account, charged))
        return None

    async def refund(self, decision: PaywallDecision) -> int | None:
        """Give back what ``decision`` charged (call it when the route failed); the
        token's balance afterwards (None when nothing was charged)."""
        back = self._refund_of(decision)
        if back is None:
            return None
        store = self.receiver.store
        if back.events:
            result = await store.add_with_outbox(back.account, back.amount, back.events)
        else:
            result = await store.credit(back.account, back.amount)
        return result.balance

    def refund_blocking(self, decision: PaywallDecision) -> bool:
        """:meth:`refund` on the calling thread; False (nothing done) when the store has
        no blocking methods."""
        return self.refund_blocking_balance(decision) is not False

    def refund_blocking_balance(self, decision: PaywallDecision) -> int | Literal[False] | None:
        """:meth:`refund` on the calling thread: the balance afterwards (None when
        nothing was charged), or False -- nothing done -- when the store has no blocking
        methods (then call :meth:`refund` on the event loop)."""
        store = self.receiver.store
        if not store.supports_blocking:
            return False
        back = self._refund_of(decision)
        if back is None:
            return None
        if back.events:
            return store.add_blocking_with_outbox(back.account, back.amount, back.events).balance
        return store.add_blocking(back.account, back.amount).balance


# ---------------------------------------------------------------------------------------
# Crediting payments bound the PSK2-era way


def token_from_payment(payment: IncomingPayment) -> bytes | None:
    """The Pay-Token a payment names: draft 1 paymentId, draft 2 ``data[0:16]``."""
    if payment.format == "psk2-draft1":
        # "the 16-byte token *is* the PSK2 paymentId"
        return payment.payment_id
    data = payment.application_data
    # "the first 16 bytes of the PSK2 request data are the token"
    return bytes(data[:PAY_TOKEN_LENGTH]) if len(data) >= PAY_TOKEN_LENGTH else None


class PaywallPaymentHook:
    """An ``on_payment`` hook crediting PSK2-era token payments to the token's account.

    Only payments to ``accounts`` are moved (default: :data:`PAYWALL_ACCOUNT`, the
    destinations issued to requests without a Pay-Token); payments to a destination
    bound to a token already credit that token.  Adding ``endpoint:default`` makes the
    site's payment pointer top up tokens too, as koa-ilp's whole-receiver paywall did --
    but then *every* draft-1 payment there lands on a token named by its random
    paymentId, so do that only on a receiver dedicated to the paywall.  With
    ``require_token`` a draft-2 payment whose data is shorter than 16 bytes is refused
    (F99, koa-ilp's message); otherwise it keeps its account.  STREAM payments name no
    token (a STREAM destination binds it itself): they keep their account, except that
    with ``require_token`` one to :data:`PAYWALL_ACCOUNT` is refused (F99,
    :data:`STREAM_UNBOUND_MESSAGE`) -- the sender keeps its money.
    """

    def __init__(
        self, accounts: Collection[str] = (PAYWALL_ACCOUNT,), *, require_token: bool = True
    ) -> None:
        self.accounts = frozenset(accounts)
        self.require_token = require_token

    def __call__(self, payment: IncomingPayment) -> str | None:
        """The token account for ``payment``, or None to leave it where it is."""
        if payment.account not in self.accounts:
            return None
        if payment.format == "stream":
            if self.require_token and payment.account == PAYWALL_ACCOUNT:
                raise IlpError("F99", STREAM_UNBOUND_MESSAGE)
            return None
        token = token_from_payment(payment)
        if token is None or len(token) != PAY_TOKEN_LENGTH:
            if self.require_token:
                raise IlpError("F99", SHORT_DATA_MESSAGE)
            return None
        return token_account(token)


#: The default hook: PSK2-era token payments to :data:`PAYWALL_ACCOUNT` credit the token.
paywall_payment_hook: Final = PaywallPaymentHook()


def combine_hooks(*hooks: PaymentHook) -> PaymentHook:
    """One ``on_payment`` hook running ``hooks`` in order (sync or async).

    The first hook that returns an account name (``str``) or ``False`` decides; ``None``
    and ``True`` pass to the next hook; an :class:`~ilp_receiver.errors.IlpError` refuses
    at once.  Put :data:`paywall_payment_hook` first so token payments never reach hooks
    meant for other accounts.
    """

    async def combined(payment: IncomingPayment) -> str | bool | None:
        for hook in hooks:
            verdict = hook(payment)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is False or isinstance(verdict, str):
                return verdict
        return None

    return combined
