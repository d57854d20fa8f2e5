"""HTTP-ILP paid APIs: the ``Pay`` / ``Pay-Token`` / ``Pay-Balance`` decisions.

Implements the server side of HTTP-ILP draft 3 (spec ``08-http-ilp.md``; interledger/rfcs
``0014-http-ilp`` as koa-ilp and superagent-ilp implemented it), once, for every
framework.  The decision is sans-I/O (:func:`plan_request` and the reply builders); the
only I/O is one or two awaited balance-store calls in :meth:`Paywall.check` (or, for
sync callers, :meth:`Paywall.check_blocking`: the same decision with the store's
blocking methods, on the calling thread).

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
"""

from __future__ import annotations

import base64
import inspect
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from .codec.oer import MAX_UINT64
from .codec.pay_header import (
    PAY_TOKEN_LENGTH,
    PSK2_METHOD,
    PayHeader,
    format_pay_balance,
    format_pay_header,
    parse_pay_token,
)
from .crypto import sha256
from .errors import ConfigError, DecodeError, IlpError
from .web.reply import HttpReply, json_reply

if TYPE_CHECKING:
    from .psk2.secrets import IssuedSecret
    from .receiver import IncomingPayment, PaymentHook
    from .stores.base import BalanceStore

__all__ = [
    "NO_TOKEN_MESSAGE",
    "PAYWALL_ACCOUNT",
    "SHORT_DATA_MESSAGE",
    "TOKEN_ACCOUNT_PREFIX",
    "PaidRoute",
    "PaidRoutes",
    "Paywall",
    "PaywallDecision",
    "PaywallPaymentHook",
    "PaywallReceiver",
    "Plan",
    "PlanKind",
    "Price",
    "RequestFacts",
    "RouteSpec",
    "bad_token_reply",
    "combine_hooks",
    "options_reply",
    "payment_required_reply",
    "paywall_payment_hook",
    "plan_request",
    "price_value",
    "resolve_price",
    "token_account",
    "token_from_payment",
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


# ---------------------------------------------------------------------------------------
# Request facts and prices


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the paywall (and a price function) may know about a request.

    ``method`` is upper case, ``path`` the URL path without the query, ``headers`` maps
    lower-case header names to values (repeated headers joined with ``", "``).
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)

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


# ---------------------------------------------------------------------------------------
# Which routes are paid


@dataclass(frozen=True, slots=True)
class PaidRoute:
    """A paid path for the ASGI/WSGI glue.

    ``pattern``: an exact path (``"/upload"``), a prefix ending in ``*``
    (``"/api/*"`` matches ``/api/`` and everything under it), or a compiled regular
    expression (full match).  ``methods``: the methods that are charged (None: all).
    ``OPTIONS`` on a matching path is always answered with ``Pay``.
    """

    pattern: str | re.Pattern[str]
    price: Price
    methods: frozenset[str] | None = None

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

    def match(self, method: str, path: str) -> Price | None:
        """The price of ``method path`` if it is a paid route, else None."""
        for route in self.routes:
            if route.matches_path(path):
                return route.price if route.charges(method) else None
        return None


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


def _balance_header(balance: int) -> str:
    return format_pay_balance(min(max(balance, 0), MAX_UINT64))


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


class Paywall:
    """HTTP-ILP for one receiver: turns request facts and a price into a decision.

    ``receiver`` is an :class:`~ilp_receiver.AsyncReceiver` (started before the first
    :meth:`check`).  Token balances live in its balance store.
    """

    def __init__(self, receiver: PaywallReceiver) -> None:
        self.receiver = receiver

    def pay_header(self, account: str, price: int) -> str:
        """A ``Pay`` header with a fresh destination/secret bound to ``account``."""
        destination, secret = self.receiver.issue(account)
        return format_pay_header(PayHeader(PSK2_METHOD, destination, secret, price))

    async def check(self, request: RequestFacts, price: int | Awaitable[int]) -> PaywallDecision:
        """Decide on ``request``; debits the price from the token's balance when it serves."""
        amount = await price_value(price)
        plan = plan_request(request.method, request.headers.get(_PAY_TOKEN), amount)
        kind = plan.kind
        if kind is PlanKind.FREE:
            return FREE
        if kind is PlanKind.BAD_TOKEN:
            return PaywallDecision(bad_token_reply(plan.reason))
        account = plan.account
        store = self.receiver.store
        if kind is PlanKind.CHARGE:
            balance = await store.try_debit(account, amount)
            pay = self.pay_header(account, amount)
            if balance is None:
                return self._short(pay, account, amount, await store.balance(account))
            return self._served(pay, account, amount, balance)
        pay = self.pay_header(account, amount)
        if kind is PlanKind.OPTIONS:
            balance_now = None if plan.token is None else await store.balance(account)
            return PaywallDecision(options_reply(pay, balance_now), account=account)
        return PaywallDecision(payment_required_reply(pay, amount, None))

    def check_blocking(self, request: RequestFacts, price: int) -> PaywallDecision | None:
        """:meth:`check` on the calling thread, for sync callers (WSGI request threads).

        Uses the store's blocking methods (``BalanceStore.add_blocking``: the same
        atomic, exactly-once debit); returns None when the store has none
        (``supports_blocking`` False: Redis, PostgreSQL), so the caller runs
        :meth:`check` on the event loop instead.  Issuing ``Pay`` is pure computation
        and thread-safe.  Never call it on an event loop's thread.
        """
        store = self.receiver.store
        if not store.supports_blocking:
            return None
        plan = plan_request(request.method, request.headers.get(_PAY_TOKEN), price)
        kind = plan.kind
        if kind is PlanKind.FREE:
            return FREE
        if kind is PlanKind.BAD_TOKEN:
            return PaywallDecision(bad_token_reply(plan.reason))
        account = plan.account
        if kind is PlanKind.CHARGE:
            balance = store.try_debit_blocking(account, price)
            pay = self.pay_header(account, price)
            if balance is None:
                return self._short(pay, account, price, store.balance_blocking(account))
            return self._served(pay, account, price, balance)
        pay = self.pay_header(account, price)
        if kind is PlanKind.OPTIONS:
            balance_now = None if plan.token is None else store.balance_blocking(account)
            return PaywallDecision(options_reply(pay, balance_now), account=account)
        return PaywallDecision(payment_required_reply(pay, price, None))

    @staticmethod
    def _served(pay: str, account: str, price: int, balance: int) -> PaywallDecision:
        headers = {"Pay": pay, "Pay-Balance": _balance_header(balance)}
        return PaywallDecision(None, headers, account, price, balance)

    @staticmethod
    def _short(pay: str, account: str, price: int, current: int) -> PaywallDecision:
        return PaywallDecision(
            payment_required_reply(pay, price, current), account=account, balance=current
        )

    async def refund(self, decision: PaywallDecision) -> None:
        """Give back what ``decision`` charged (call it when the route failed)."""
        if decision.charged and decision.account is not None:
            await self.receiver.store.credit(decision.account, decision.charged)

    def refund_blocking(self, decision: PaywallDecision) -> bool:
        """:meth:`refund` on the calling thread; False (nothing done) when the store has
        no blocking methods."""
        store = self.receiver.store
        if not store.supports_blocking:
            return False
        if decision.charged and decision.account is not None:
            store.add_blocking(decision.account, decision.charged)
        return True


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
    (F99, koa-ilp's message); otherwise it keeps its account.
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
