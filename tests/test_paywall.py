"""The HTTP-ILP paywall core (``ilp_receiver.paywall``, spec ``08-http-ilp.md``).

Also holds the small in-memory network the adapter tests share: a parent on a
:func:`~ilp_receiver.links.memory.memory_link_pair` that answers IL-DCP, and helpers that
pay a ``Pay`` header the way each PSK2 era bound the token.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from ilp_receiver.client import (
    HeldStreamPayment,
    PaymentError,
    PaymentResult,
    StreamDestination,
)
from ilp_receiver.client.held_stream import SendPrepare
from ilp_receiver.codec.ildcp import IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ilp_receiver.codec.pay_header import (
    PSK2_METHOD,
    STREAM_METHOD,
    format_pay_token,
    parse_pay_balance,
    parse_pay_header,
)
from ilp_receiver.errors import ConfigError
from ilp_receiver.links.memory import memory_link_pair
from ilp_receiver.paywall import (
    DEFAULT_PAY_METHOD,
    NO_TOKEN_MESSAGE,
    PAY_METHOD_ENV,
    PAYWALL_ACCOUNT,
    STREAM_GREETING,
    PaidRoute,
    PaidRoutes,
    Paywall,
    PaywallDecision,
    PaywallPaymentHook,
    PlanKind,
    RequestFacts,
    check_pay_method,
    check_pay_wait,
    combine_hooks,
    default_pay_method,
    paywall_payment_hook,
    plan_request,
    resolve_price,
    token_account,
)
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.psk2.sender import build_chunk_prepare, build_request_prepare
from ilp_receiver.receiver import DEFAULT_ACCOUNT, AsyncReceiver, IncomingPayment, Receiver
from ilp_receiver.stores import MemoryStore, SqliteStore
from ilp_receiver.stream.server import tag_to_account
from ilp_receiver.web.wsgi import IlpWsgiMiddleware
from tests.test_pay_header import FUNDING_AMOUNT, HTTP_ILP_EXPECTED, META

SERVER = "test.example.server"
SECRET = bytes(range(32))
TOKEN = bytes.fromhex("00112233445566778899aabbccddeeff")
TOKEN_HEADER = format_pay_token(TOKEN)
Era = Literal["draft1", "draft2"]


# ---------------------------------------------------------------------------------------
# The shared in-memory network


class MemoryParent:
    """The parent connector end of an in-memory link: answers IL-DCP, forwards payments."""

    def __init__(self, address: str = SERVER) -> None:
        self.address = address
        self.link, self.child = memory_link_pair()
        self.link.local_address = "test.example"
        self.link.set_handler(self._handle)

    async def _handle(self, prepare: IlpPrepare) -> IlpReply:
        if prepare.destination == "peer.config":
            info = IldcpResponse(self.address, 9, "XYZ")
            return ildcp_serve(prepare, info, server_address="test.example", now=datetime.now(UTC))
        return IlpReject("F02", "test.example", "no route")

    async def start(self) -> None:
        """Bring the parent end up (before the receiver starts)."""
        await self.link.start()

    async def pay(self, prepare: IlpPrepare) -> IlpReply:
        """Deliver ``prepare`` to the receiver."""
        return await self.link.send(prepare)


def async_receiver(parent: MemoryParent, **options: Any) -> AsyncReceiver:
    """An AsyncReceiver on ``parent`` with the paywall hook and a fixed secret."""
    options.setdefault("on_payment", paywall_payment_hook)
    options.setdefault("secret", SECRET)
    return AsyncReceiver(parent.child, **options)


def sync_receiver(parent: MemoryParent, portal: BlockingPortal, **options: Any) -> Receiver:
    """A sync Receiver on ``parent`` (both on ``portal``'s loop)."""
    options.setdefault("on_payment", paywall_payment_hook)
    options.setdefault("secret", SECRET)
    portal.call(parent.start)
    return Receiver(parent.child, portal=portal, **options)


def funding_prepare(
    pay_value: str, amount: int, *, era: Era = "draft1", token: bytes = TOKEN
) -> IlpPrepare:
    """A PSK2 payment to a ``Pay`` header, tagged with ``token`` as ``era`` did it.

    draft 1 (superagent-ilp ceb70f1): "pays with sendSingleChunk (paymentId = token,
    sequence 1, type 0, minDestinationAmount = price)"; draft 2: "the first 16 bytes of
    the PSK2 request data are the token".
    """
    pay = parse_pay_header(pay_value)
    expires = datetime.now(UTC) + timedelta(seconds=30)
    if era == "draft1":
        return build_chunk_prepare(
            pay.destination,
            pay.shared_secret,
            amount=amount,
            expires_at=expires,
            iv=os.urandom(12),
            payment_id=token,
            sequence=1,
            chunk_amount=pay.price or 0,
            last_chunk=False,
        )
    return build_request_prepare(
        pay.destination,
        pay.shared_secret,
        amount=amount,
        expires_at=expires,
        iv=os.urandom(12),
        request_id=1,
        min_amount=pay.price or 0,
        data=token + b"superagent-ilp",
    )


def headers_of(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs as a dict keyed by lower-case names."""
    return {k.lower(): v for k, v in pairs}


def check_pay(value: str, price: int, server: str = SERVER) -> None:
    """A ``Pay`` value we produced has the vector format: method, address, secret, price."""
    pay = parse_pay_header(value)
    assert pay.method == PSK2_METHOD
    assert pay.destination.startswith(server + ".")
    assert len(pay.shared_secret) == 32
    assert pay.price == price
    words = value.split(" ")
    assert len(words) == 4
    assert base64.b64decode(words[2], validate=True) == pay.shared_secret


def check_stream_pay(value: str, server: str = SERVER) -> tuple[str, bytes]:
    """A ``Pay: interledger-stream <destination> <secret>`` we produced; returns both."""
    pay = parse_pay_header(value)
    assert pay.method == STREAM_METHOD
    assert pay.price is None
    # a STREAM destination: exactly one segment (the token) after the server address
    assert pay.destination.startswith(server + ".")
    assert "." not in pay.destination[len(server) + 1 :]
    words = value.split(" ")
    assert len(words) == 3
    assert base64.b64decode(words[2], validate=True) == pay.shared_secret
    assert len(pay.shared_secret) == 32
    return pay.destination, pay.shared_secret


class StreamEraClients:
    """STREAM-era HTTP-ILP clients, one per ``Pay: interledger-stream`` header value
    (each a connection of its own: two connections on one destination would be one
    connection to the server), paying the way those clients did: open a connection and
    a stream, raise the send limit to ``send_max``, wait until the server has sent a
    byte on the stream (:meth:`open`), keep paying while the request is repeated, close
    the stream when the response is in (:meth:`finish`).

    ``send`` delivers a Prepare to the receiver (the in-memory parent's ``pay``).  With
    ``gated`` every money packet sent after the server's first byte waits for
    :meth:`release`, so a test can repeat its request before the money arrives.
    """

    def __init__(
        self,
        send: SendPrepare,
        pay_values: str | list[str],
        send_max: int,
        *,
        gated: bool = False,
    ) -> None:
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.held_back = 0
        self.payments: list[HeldStreamPayment] = []
        for value in [pay_values] if isinstance(pay_values, str) else pay_values:
            pay = parse_pay_header(value)
            assert pay.method == STREAM_METHOD
            target = StreamDestination(pay.destination, pay.shared_secret)
            holder: list[HeldStreamPayment] = []
            payment = HeldStreamPayment(self._gated(send, holder), target, send_max)
            holder.append(payment)
            self.payments.append(payment)

    def _gated(self, send: SendPrepare, holder: list[HeldStreamPayment]) -> SendPrepare:
        async def deliver(prepare: IlpPrepare) -> IlpReply:
            if prepare.amount and holder[0].received_data and not self.gate.is_set():
                self.held_back += 1
                await self.gate.wait()
            return await send(prepare)

        return deliver

    async def open(self, timeout: float = 10.0) -> list[bytes]:
        """Start every connection; wait for each server's first byte; return the bytes."""
        ready = await asyncio.gather(*(p.ready(timeout) for p in self.payments))
        assert all(ready), "the server sent no data on the stream"
        return [p.sender.read() for p in self.payments]

    async def release(self) -> None:
        """Let the held-back money go."""
        self.gate.set()

    async def finish(self) -> list[PaymentResult]:
        """Close every stream (the response arrived); what each delivered."""
        self.gate.set()
        return list(await asyncio.gather(*(p.finish() for p in self.payments)))


@pytest.fixture
async def receiver() -> AsyncIterator[AsyncReceiver]:
    parent = MemoryParent()
    await parent.start()
    rx = async_receiver(parent)
    rx.test_parent = parent  # type: ignore[attr-defined]
    async with rx:
        yield rx


def parent_of(rx: AsyncReceiver) -> MemoryParent:
    parent: MemoryParent = rx.test_parent  # type: ignore[attr-defined]
    return parent


def facts(method: str = "POST", token: str | None = TOKEN_HEADER, **headers: str) -> RequestFacts:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    if token is not None:
        pairs.append(("Pay-Token", token))
    return RequestFacts.from_pairs(method, "/upload", pairs)


# ---------------------------------------------------------------------------------------
# Sans-I/O pieces


def test_plan_request_covers_every_case() -> None:
    assert plan_request("POST", TOKEN_HEADER, 0).kind is PlanKind.FREE
    assert plan_request("POST", "not a token", 0).kind is PlanKind.FREE
    bad = plan_request("POST", "AAAA", 10)
    assert bad.kind is PlanKind.BAD_TOKEN
    assert "16 bytes" in bad.reason
    assert plan_request("OPTIONS", None, 10).kind is PlanKind.OPTIONS
    assert plan_request("OPTIONS", TOKEN_HEADER, 10).token == TOKEN
    assert plan_request("OPTIONS", "AAAA", 10).kind is PlanKind.BAD_TOKEN
    assert plan_request("GET", None, 10).kind is PlanKind.NO_TOKEN
    charge = plan_request("GET", TOKEN_HEADER, 10)
    assert (charge.kind, charge.token, charge.price) == (PlanKind.CHARGE, TOKEN, 10)
    assert charge.account == token_account(TOKEN)
    assert plan_request("GET", None, 10).account == PAYWALL_ACCOUNT
    assert TOKEN_HEADER not in repr(charge)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "OPTIONS", "HEAD"]),
    header=st.one_of(st.none(), st.text(max_size=40), st.binary(min_size=16, max_size=16)),
    price=st.integers(0, 2**64 - 1),
)
def test_plan_request_never_raises(method: str, header: str | bytes | None, price: int) -> None:
    value = format_pay_token(header) if isinstance(header, bytes) else header
    plan = plan_request(method, value, price)
    if price == 0:
        assert plan.kind is PlanKind.FREE
    elif plan.kind is PlanKind.BAD_TOKEN:
        assert value is not None
        assert plan.reason
    else:
        assert plan.token is None or len(plan.token) == 16
        assert (plan.kind is PlanKind.OPTIONS) == (method == "OPTIONS")
    if isinstance(header, bytes) and price:
        assert plan.token == header


def test_token_account_hides_the_token() -> None:
    account = token_account(TOKEN)
    assert account.startswith("token:")
    assert len(account) == len("token:") + 22
    assert TOKEN_HEADER not in account
    assert token_account(TOKEN) == account
    assert token_account(bytes(16)) != account
    with pytest.raises(ValueError, match="16 bytes"):
        token_account(b"short")


def test_request_facts_join_repeated_headers_case_insensitively() -> None:
    f = RequestFacts.from_pairs("get", "/x", [("X-A", "1"), ("x-a", "2"), ("Pay-Token", "t")])
    assert f.method == "GET"
    assert f.header("x-a") == "1, 2"
    assert f.header("PAY-TOKEN") == "t"
    assert f.header("missing") is None


def test_paid_routes_match_exact_prefix_regex_and_methods() -> None:
    import re

    routes = PaidRoutes(
        [
            PaidRoute("/upload", 10, frozenset({"POST"})),
            PaidRoute("/api/*", 5),
            PaidRoute(re.compile(r"/item/\d+"), 7),
        ]
    )
    assert routes.match("POST", "/upload") == 10
    assert routes.match("GET", "/upload") is None
    assert routes.match("OPTIONS", "/upload") == 10
    assert routes.match("GET", "/api/") == 5
    assert routes.match("DELETE", "/api/a/b") == 5
    assert routes.match("GET", "/apix") is None
    assert routes.match("GET", "/item/42") == 7
    assert routes.match("GET", "/item/x") is None
    assert PaidRoutes({"/a": 1}).match("GET", "/a") == 1
    assert not PaidRoutes.of(None)
    assert PaidRoutes.of(routes) is routes


async def test_price_functions_sync_async_and_invalid() -> None:
    f = facts(size="3")
    assert resolve_price(4, f) == 4
    assert resolve_price(lambda r: int(r.header("size") or 0) * 2, f) == 6

    async def async_price(request: RequestFacts) -> int:
        return 9

    pending = resolve_price(async_price, f)
    assert not isinstance(pending, int)
    assert await pending == 9
    for bad in (-1, 2**64, True, "10"):
        with pytest.raises(ConfigError):
            resolve_price(bad, f)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        resolve_price(lambda r: 1.5, f)  # type: ignore[arg-type,return-value]


# ---------------------------------------------------------------------------------------
# The paywall against a real receiver on an in-memory network


async def test_every_status(receiver: AsyncReceiver) -> None:
    wall = Paywall(receiver)
    account = token_account(TOKEN)

    # OPTIONS -> 204 with Pay (+ Pay-Balance when a token is sent)
    d = await wall.check(facts("OPTIONS", token=None), 10)
    assert d.reply is not None
    assert d.reply.status == 204
    check_pay(d.reply.headers["Pay"], 10)
    assert "Pay-Balance" not in d.reply.headers
    d = await wall.check(facts("OPTIONS"), 10)
    assert d.reply is not None
    assert d.reply.status == 204
    assert d.reply.headers["Pay-Balance"] == "0"

    # no Pay-Token -> 402 with Pay, JSON body
    d = await wall.check(facts(token=None), 10)
    assert d.reply is not None
    assert d.reply.status == 402
    check_pay(d.reply.headers["Pay"], 10)
    assert d.reply.headers["Content-Type"] == "application/json"
    assert NO_TOKEN_MESSAGE.encode() in d.reply.body

    # balance below price -> 402 with Pay and Pay-Balance
    d = await wall.check(facts(), 10)
    assert d.reply is not None
    assert d.reply.status == 402
    assert d.reply.headers["Pay-Balance"] == "0"
    pay = d.reply.headers["Pay"]
    check_pay(pay, 10)

    # pay the 402's Pay header: the address is bound to the token's account
    reply = await parent_of(receiver).pay(funding_prepare(pay, 25))
    assert isinstance(reply, IlpFulfill)
    assert await receiver.store.balance(account) == 25

    # enough -> debited, served with Pay and Pay-Balance
    d = await wall.check(facts(), 10)
    assert d.serve
    assert d.reply is None
    assert d.headers["Pay-Balance"] == "15"
    check_pay(d.headers["Pay"], 10)
    assert (d.account, d.charged, d.balance) == (account, 10, 15)
    assert await receiver.store.balance(account) == 15

    # refund gives it back (a route that failed)
    await wall.refund(d)
    assert await receiver.store.balance(account) == 25

    # malformed Pay-Token -> 400 JSON, the token is not echoed
    d = await wall.check(facts(token="not-a-token!"), 10)
    assert d.reply is not None
    assert d.reply.status == 400
    assert b"InvalidPayToken" in d.reply.body
    assert b"not-a-token" not in d.reply.body

    # price 0 -> served without payment, no headers
    d = await wall.check(facts(token=None), 0)
    assert d.serve
    assert d.headers == {}


@pytest.mark.parametrize("name", sorted(HTTP_ILP_EXPECTED))
async def test_replay_vector_exchange(receiver: AsyncReceiver, name: str) -> None:
    """Replay the koa-ilp exchange of each vector file against our paywall.

    Our headers parse and match the vector formats; the vector's funding payment is
    rebuilt for our server as its era built it (draft 1: paymentId = token, draft 2:
    data prefix) and pays the ``Pay`` header of our 402.
    """
    meta = META[name]
    era: Era = "draft1" if name == "http-ilp-draft1.json" else "draft2"
    wall = Paywall(receiver)
    token_header = meta["pay_token_header"]
    token = bytes.fromhex(meta["client_token_hex"])
    last_pay: str | None = None
    for step in HTTP_ILP_EXPECTED[name]:
        request = RequestFacts.from_pairs(
            step.method, step.url, [("Pay-Token", token_header)] if step.pay_token else []
        )
        decision = await wall.check(request, 10)
        status = 200 if decision.serve else decision.reply.status  # type: ignore[union-attr]
        headers = decision.headers if decision.serve else decision.reply.headers  # type: ignore[union-attr]
        assert status == step.status, step.step
        assert decision.serve is step.next_called or step.method == "OPTIONS"
        if step.pay_price is not None:
            check_pay(headers["Pay"], step.pay_price)
        if step.pay_balance is not None:
            assert parse_pay_balance(headers["Pay-Balance"]) == step.pay_balance
        else:
            assert "Pay-Balance" not in headers
        if step.step == "unpaid_request":
            last_pay = headers["Pay"]
            assert last_pay is not None
            reply = await parent_of(receiver).pay(
                funding_prepare(last_pay, FUNDING_AMOUNT, era=era, token=token)
            )
            assert isinstance(reply, IlpFulfill)
            assert await receiver.store.balance(token_account(token)) == FUNDING_AMOUNT
    assert await receiver.store.balance(token_account(token)) == FUNDING_AMOUNT - 10


@pytest.mark.parametrize("era", ["draft1", "draft2"])
async def test_generic_destination_tops_up_the_token_by_era(
    receiver: AsyncReceiver, era: Era
) -> None:
    wall = Paywall(receiver)
    d = await wall.check(facts("OPTIONS", token=None), 10)
    assert d.reply is not None
    pay = d.reply.headers["Pay"]
    reply = await parent_of(receiver).pay(funding_prepare(pay, 40, era=era))
    assert isinstance(reply, IlpFulfill)
    assert await receiver.store.balance(token_account(TOKEN)) == 40
    assert await receiver.store.balance(PAYWALL_ACCOUNT) == 0
    d = await wall.check(facts(), 10)
    assert d.headers["Pay-Balance"] == "30"


async def test_draft2_payment_without_token_to_generic_destination_is_refused(
    receiver: AsyncReceiver,
) -> None:
    d = await Paywall(receiver).check(facts("OPTIONS", token=None), 10)
    assert d.reply is not None
    pay = parse_pay_header(d.reply.headers["Pay"])
    prepare = build_request_prepare(
        pay.destination,
        pay.shared_secret,
        amount=10,
        expires_at=datetime.now(UTC) + timedelta(seconds=30),
        iv=os.urandom(12),
        request_id=1,
        data=b"short",
    )
    reply = await parent_of(receiver).pay(prepare)
    assert isinstance(reply, IlpReject)
    assert reply.code == "F99"


async def test_payments_to_other_accounts_keep_their_account(receiver: AsyncReceiver) -> None:
    destination, secret = receiver.issue(DEFAULT_ACCOUNT)
    pay = f"interledger-psk2 {destination} {base64.b64encode(secret).decode()} 10"
    reply = await parent_of(receiver).pay(funding_prepare(pay, 10, era="draft1"))
    assert isinstance(reply, IlpFulfill)
    assert await receiver.store.balance(DEFAULT_ACCOUNT) == 10
    assert await receiver.store.balance(token_account(TOKEN)) == 0


def _payment(account: str, fmt: str = "psk2-draft1", data: bytes = b"") -> IncomingPayment:
    return IncomingPayment(
        account=account,
        amount=1,
        destination="g.x",
        format=fmt,  # type: ignore[arg-type]
        payment_id=TOKEN if fmt == "psk2-draft1" else None,
        sequence=0,
        last_chunk=False,
        application_data=data,
        segments=(),
        condition=bytes(32),
    )


async def test_hook_options_and_combine_hooks() -> None:
    assert paywall_payment_hook(_payment(PAYWALL_ACCOUNT)) == token_account(TOKEN)
    assert paywall_payment_hook(_payment(DEFAULT_ACCOUNT)) is None
    assert paywall_payment_hook(_payment("token:x")) is None
    d2 = _payment(PAYWALL_ACCOUNT, "psk2-draft2", TOKEN + b"more")
    assert paywall_payment_hook(d2) == token_account(TOKEN)
    lenient = PaywallPaymentHook({DEFAULT_ACCOUNT}, require_token=False)
    assert lenient(_payment(DEFAULT_ACCOUNT, "psk2-draft2", b"short")) is None
    assert lenient(_payment(DEFAULT_ACCOUNT)) == token_account(TOKEN)

    seen: list[str] = []

    async def other(payment: IncomingPayment) -> str | None:
        seen.append(payment.account)
        return "orders:1" if payment.account == "order" else None

    hook = combine_hooks(paywall_payment_hook, other)
    assert await hook(_payment(PAYWALL_ACCOUNT)) == token_account(TOKEN)  # type: ignore[misc]
    assert await hook(_payment("order")) == "orders:1"  # type: ignore[misc]
    assert await hook(_payment("else")) is None  # type: ignore[misc]
    assert seen == ["order", "else"]
    assert await combine_hooks(lambda p: False, other)(_payment("order")) is False  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# No double spend


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_no_double_spend_50_concurrent(tmp_path: Any, store_kind: str) -> None:
    parent = MemoryParent()
    await parent.start()
    store = MemoryStore() if store_kind == "memory" else SqliteStore(str(tmp_path / "b.db"))
    async with async_receiver(parent, store=store) as rx:
        await store.credit(token_account(TOKEN), 250)
        wall = Paywall(rx)
        decisions = await asyncio.gather(*(wall.check(facts(), 10) for _ in range(50)))
        served = [d for d in decisions if d.serve]
        assert len(served) == 25
        assert all(d.reply is not None and d.reply.status == 402 for d in decisions if not d.serve)
        assert sorted(d.balance for d in served) == list(range(0, 250, 10))  # type: ignore[type-var]
        assert await store.balance(token_account(TOKEN)) == 0
    await store.close()


# ---------------------------------------------------------------------------------------
# The blocking decision (sync callers decide on their own thread)


class AsyncOnlyStore(MemoryStore):
    """A store without blocking methods (like Redis and PostgreSQL)."""

    supports_blocking = False


def _shape(decision: PaywallDecision) -> tuple[Any, ...]:
    reply = decision.reply
    headers = {k: v for k, v in decision.headers.items() if k != "Pay"}
    return (
        None if reply is None else (reply.status, reply.headers.get("Pay-Balance"), reply.body),
        headers,
        decision.account,
        decision.charged,
        decision.balance,
    )


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_check_blocking_decides_like_check(tmp_path: Any, store_kind: str) -> None:
    parent = MemoryParent()
    await parent.start()
    store = MemoryStore() if store_kind == "memory" else SqliteStore(str(tmp_path / "c.db"))
    async with async_receiver(parent, store=store) as rx:
        wall = Paywall(rx)
        account = token_account(TOKEN)
        cases = [
            (facts(), 0),
            (facts(token="AAAA"), 10),
            (facts("OPTIONS"), 10),
            (facts("OPTIONS", token=None), 10),
            (facts(token=None), 10),
            (facts(), 10),  # balance 0: 402 with Pay-Balance
        ]
        for request, price in cases:
            by_check = await wall.check(request, price)
            by_blocking = await asyncio.to_thread(wall.check_blocking, request, price)
            assert by_blocking is not None
            assert _shape(by_blocking) == _shape(by_check)
            if by_check.reply is not None and "Pay" in by_check.reply.headers:
                check_pay(by_blocking.reply.headers["Pay"], price)  # type: ignore[union-attr]
        await store.credit(account, 25)
        served = await asyncio.to_thread(wall.check_blocking, facts(), 10)
        assert served is not None and served.serve
        assert (served.charged, served.balance, served.headers["Pay-Balance"]) == (10, 15, "15")
        check_pay(served.headers["Pay"], 10)
        assert await asyncio.to_thread(wall.refund_blocking, served) is True
        assert await store.balance(account) == 25
    await store.close()


async def test_check_blocking_declines_without_blocking_store() -> None:
    parent = MemoryParent()
    await parent.start()
    store = AsyncOnlyStore()
    async with async_receiver(parent, store=store) as rx:
        wall = Paywall(rx)
        await store.credit(token_account(TOKEN), 25)
        assert wall.check_blocking(facts(), 10) is None
        assert wall.refund_blocking(PaywallDecision(None, {}, token_account(TOKEN), 10)) is False
        assert await store.balance(token_account(TOKEN)) == 25


def _ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_no_double_spend_50_threads_blocking(tmp_path: Any, store_kind: str) -> None:
    portal = BlockingPortal("test-blocking")
    parent = MemoryParent()
    store = MemoryStore() if store_kind == "memory" else SqliteStore(str(tmp_path / "t.db"))
    rx = sync_receiver(parent, portal, store=store)
    wsgi = IlpWsgiMiddleware(_ok_app, rx, paid={"/upload": 10})
    try:
        wsgi.start()
        portal.call(store.credit, token_account(TOKEN), 250)
        wall = wsgi.service.paywall
        barrier = threading.Barrier(50)

        def check(_: int) -> PaywallDecision:
            barrier.wait()
            return wsgi.check(facts(), 10)

        with ThreadPoolExecutor(50) as pool:
            decisions = list(pool.map(check, range(50)))
        served = [d for d in decisions if d.serve]
        assert len(served) == 25
        assert sorted(d.balance for d in served) == list(range(0, 250, 10))  # type: ignore[type-var]
        assert all(d.reply is not None and d.reply.status == 402 for d in decisions if not d.serve)
        assert rx.balance(token_account(TOKEN)) == 0
        assert wall.receiver.store is store
        if isinstance(store, SqliteStore):
            assert store.commit_counts["blocking"] == 50
    finally:
        wsgi.stop()
        portal.stop()
        asyncio.run(store.close())


def test_wsgi_falls_back_to_the_portal_for_async_only_stores() -> None:
    portal = BlockingPortal("test-async-only")
    parent = MemoryParent()
    store = AsyncOnlyStore()
    rx = sync_receiver(parent, portal, store=store)
    wsgi = IlpWsgiMiddleware(_ok_app, rx, paid={"/upload": 10})
    try:
        wsgi.start()
        portal.call(store.credit, token_account(TOKEN), 25)
        with ThreadPoolExecutor(10) as pool:
            decisions = list(pool.map(lambda _: wsgi.check(facts(), 10), range(10)))
        assert sum(d.serve for d in decisions) == 2
        wsgi.refund(next(d for d in decisions if d.serve))
        assert rx.balance(token_account(TOKEN)) == 15
    finally:
        wsgi.stop()
        portal.stop()


# ---------------------------------------------------------------------------------------
# The neutral WSGI glue on its own (werkzeug's test client, no framework)


def test_wsgi_middleware_every_status() -> None:
    portal = BlockingPortal("test-wsgi")
    parent = MemoryParent()
    rx = sync_receiver(parent, portal)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("route failed")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"paid content"]

    wsgi = IlpWsgiMiddleware(
        app, rx, paid={"/upload": 10, "/boom": 10, "/free": 0}, pointers=["bob"]
    )
    client = Client(wsgi)
    try:
        r = client.options("/upload")
        assert r.status_code == 204
        check_pay(r.headers["Pay"], 10)
        r = client.post("/upload")
        assert r.status_code == 402
        assert r.json["message"] == NO_TOKEN_MESSAGE  # type: ignore[index]
        r = client.post("/upload", headers={"Pay-Token": "x"})
        assert r.status_code == 400
        r = client.post("/upload", headers={"Pay-Token": TOKEN_HEADER})
        assert r.status_code == 402
        assert r.headers["Pay-Balance"] == "0"
        reply = portal.call(parent.pay, funding_prepare(r.headers["Pay"], 15))
        assert isinstance(reply, IlpFulfill)
        r = client.post("/upload", headers={"Pay-Token": TOKEN_HEADER})
        assert r.status_code == 200
        assert r.data == b"paid content"
        assert r.headers["Pay-Balance"] == "5"
        check_pay(r.headers["Pay"], 10)
        assert client.get("/free").data == b"paid content"
        assert client.get("/other").status_code == 200

        # a failing route is refunded
        portal.call(rx.async_receiver.store.credit, token_account(TOKEN), 5)
        with pytest.raises(RuntimeError):
            client.get("/boom", headers={"Pay-Token": TOKEN_HEADER})
        assert rx.balance(token_account(TOKEN)) == 10

        # SPSP at /.well-known/pay and /bob; /bob falls through to the app for HTML
        r = client.get("/.well-known/pay", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/spsp+json"
        assert r.json["destination_account"].startswith(SERVER + ".")  # type: ignore[index]
        r = client.get("/bob", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 200
        assert client.get("/bob", headers={"Accept": "text/html"}).data == b"paid content"
        assert client.get("/.well-known/pay", headers={"Accept": "text/html"}).status_code == 406
    finally:
        wsgi.stop()
        portal.stop()


# ---------------------------------------------------------------------------------------
# HTTP-ILP over STREAM (Pay: interledger-stream)


def test_pay_method_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PAY_METHOD_ENV, raising=False)
    assert default_pay_method() == DEFAULT_PAY_METHOD == "psk2"
    assert default_pay_method({PAY_METHOD_ENV: " Stream "}) == "stream"
    assert default_pay_method({PAY_METHOD_ENV: ""}) == "psk2"
    with pytest.raises(ConfigError, match=PAY_METHOD_ENV):
        default_pay_method({PAY_METHOD_ENV: "ilp"})
    assert check_pay_method("PSK2") == "psk2"
    with pytest.raises(ConfigError):
        check_pay_method(None)
    with pytest.raises(ConfigError):
        check_pay_wait(-1)
    with pytest.raises(ConfigError):
        check_pay_wait(True)
    with pytest.raises(ConfigError):
        PaidRoute("/x", 1, pay_method="interledger")  # type: ignore[arg-type]
    routes = PaidRoutes([PaidRoute("/s", 1, pay_method="stream"), PaidRoute("/p", 2)])
    found = routes.find("GET", "/s")
    assert found is not None and (found.price, found.pay_method) == (1, "stream")
    assert routes.find("GET", "/none") is None

    class Rx:
        store = MemoryStore()

    monkeypatch.setenv(PAY_METHOD_ENV, "stream")
    assert Paywall(Rx()).pay_method == "stream"  # type: ignore[arg-type]
    assert Paywall(Rx(), pay_method="psk2").pay_method == "psk2"  # type: ignore[arg-type]
    monkeypatch.setenv(PAY_METHOD_ENV, "nope")
    with pytest.raises(ConfigError):
        Paywall(Rx())  # type: ignore[arg-type]


async def test_stream_pay_headers_are_bound_to_the_token(receiver: AsyncReceiver) -> None:
    wall = Paywall(receiver, pay_method="stream")
    d = await wall.check(facts("OPTIONS", token=None), 10)
    assert d.reply is not None and d.reply.status == 204
    check_stream_pay(d.reply.headers["Pay"])
    d = await wall.check(facts("OPTIONS"), 10)
    assert d.reply is not None and d.reply.headers["Pay-Balance"] == "0"
    d = await wall.check(facts(token=None), 10)
    assert d.reply is not None and d.reply.status == 402
    check_stream_pay(d.reply.headers["Pay"])
    d = await wall.check(facts(), 10)
    assert d.reply is not None and d.reply.status == 402
    assert d.reply.headers["Pay-Balance"] == "0"
    destination, _ = check_stream_pay(d.reply.headers["Pay"])
    # the token's account is authenticated inside the STREAM token of the destination
    secrets = receiver.stream_server._secrets  # test-only peek to open the token
    token = secrets.open_token(destination.rsplit(".", 1)[1])
    assert tag_to_account(token.connection_tag or "") == token_account(TOKEN)
    # a fresh destination every time, and the price of the latest Pay per token
    again = await wall.check(facts(), 25)
    assert again.reply is not None and again.reply.headers["Pay"] != d.reply.headers["Pay"]
    assert wall.streams.price(token_account(TOKEN)) == 25
    # psk2 per route on a STREAM paywall
    psk2 = await wall.check(facts(), 10, pay_method="psk2")
    assert psk2.reply is not None
    check_pay(psk2.reply.headers["Pay"], 10)


async def test_stream_flow_data_wait_money_while_waiting_then_200(
    receiver: AsyncReceiver,
) -> None:
    """402 + Pay: interledger-stream -> the client's stream gets the greeting -> the
    repeated request waits -> the money arrives -> 200 with Pay-Balance."""
    wall = Paywall(receiver, pay_method="stream")
    first = await wall.check(facts(), 10)
    assert first.reply is not None and first.reply.status == 402
    # the client's max price (15) is above the price (10)
    clients = StreamEraClients(parent_of(receiver).pay, first.reply.headers["Pay"], 15, gated=True)
    assert await clients.open() == [STREAM_GREETING]
    assert await receiver.balance(token_account(TOKEN)) == 0  # the money is held back
    repeated = asyncio.ensure_future(wall.check(facts(), 10))
    await asyncio.sleep(0.2)
    assert not repeated.done()  # waiting for the money
    assert clients.held_back == 1
    await clients.release()
    served = await asyncio.wait_for(repeated, 5)
    assert served.serve
    assert served.headers["Pay-Balance"] == "0"
    check_stream_pay(served.headers["Pay"])
    [result] = await clients.finish()
    # the stream's receive limit was the price: the client sent no more than asked
    assert result.delivered_amount == 10
    assert await receiver.balance(token_account(TOKEN)) == 0
    assert not wall.streams.paying(token_account(TOKEN))  # the client closed its stream


async def test_stream_price_above_the_clients_max_is_402_and_nothing_is_lost(
    receiver: AsyncReceiver,
) -> None:
    wall = Paywall(receiver, pay_method="stream", pay_wait=0.3)
    account = token_account(TOKEN)
    first = await wall.check(facts(), 10)
    assert first.reply is not None
    clients = StreamEraClients(parent_of(receiver).pay, first.reply.headers["Pay"], 8)
    await clients.open()
    started = time.monotonic()
    again = await wall.check(facts(), 10)
    assert time.monotonic() - started >= 0.25  # it waited for more money, in vain
    assert again.reply is not None and again.reply.status == 402
    assert again.reply.headers["Pay-Balance"] == "8"
    [result] = await clients.finish()
    assert result.delivered_amount == 8
    assert await receiver.balance(account) == 8  # what arrived stays on the token
    # a later payment tops the token up; the request then serves from both
    more = StreamEraClients(parent_of(receiver).pay, again.reply.headers["Pay"], 10)
    await more.open()
    served = await wall.check(facts(), 10)
    assert served.serve and served.headers["Pay-Balance"] == "8"
    await more.finish()


async def test_stream_without_an_open_stream_answers_at_once(receiver: AsyncReceiver) -> None:
    wall = Paywall(receiver, pay_method="stream", pay_wait=5)
    first = await wall.check(facts(), 10)
    assert first.reply is not None
    started = time.monotonic()
    d = await wall.check(facts(), 10)  # nobody is paying: no wait
    assert d.reply is not None and d.reply.status == 402
    clients = StreamEraClients(parent_of(receiver).pay, first.reply.headers["Pay"], 4)
    await clients.open()
    await clients.finish()  # paid 4 and closed
    d = await wall.check(facts(), 10)
    assert d.reply is not None and d.reply.headers["Pay-Balance"] == "4"
    assert time.monotonic() - started < 2


async def test_stream_closing_the_stream_ends_the_wait(receiver: AsyncReceiver) -> None:
    wall = Paywall(receiver, pay_method="stream", pay_wait=10)
    first = await wall.check(facts(), 10)
    assert first.reply is not None
    clients = StreamEraClients(parent_of(receiver).pay, first.reply.headers["Pay"], 15, gated=True)
    await clients.open()
    waiting = asyncio.ensure_future(wall.check(facts(), 10))
    await asyncio.sleep(0.1)
    for payment in clients.payments:
        await payment.abort()  # the connection stops before paying ...
    closing = HeldStreamPayment(
        parent_of(receiver).pay, clients.payments[0].target, 15, max_packet_amount=1
    )
    # ... and a second one opens and closes without money (its stream closes)
    closing.sender.end()
    closing.start()
    await closing.finish()
    d = await asyncio.wait_for(waiting, 5)  # woken by the close, far before 10 s
    assert d.reply is not None and d.reply.status == 402


async def test_stream_destination_of_one_token_does_not_pay_for_another(
    receiver: AsyncReceiver,
) -> None:
    wall = Paywall(receiver, pay_method="stream", pay_wait=2)
    other = format_pay_token(bytes(16))
    first = await wall.check(facts(), 10)
    assert first.reply is not None
    clients = StreamEraClients(parent_of(receiver).pay, first.reply.headers["Pay"], 10)
    await clients.open()
    started = time.monotonic()
    d = await wall.check(facts(token=other), 10)  # another token: no wait, no money
    assert time.monotonic() - started < 1
    assert d.reply is not None and d.reply.status == 402
    assert d.reply.headers["Pay-Balance"] == "0"
    assert await receiver.balance(token_account(bytes(16))) == 0
    assert await receiver.balance(token_account(TOKEN)) == 10
    served = await wall.check(facts(), 10)
    assert served.serve
    await clients.finish()


async def test_stream_money_to_a_destination_without_token_is_refused(
    receiver: AsyncReceiver,
) -> None:
    wall = Paywall(receiver, pay_method="stream")
    d = await wall.check(facts(token=None), 10)
    assert d.reply is not None
    payment = HeldStreamPayment(
        parent_of(receiver).pay,
        StreamDestination(*check_stream_pay(d.reply.headers["Pay"])),
        10,
    )
    await payment.ready(5)
    with pytest.raises(PaymentError) as info:
        await payment.finish()
    assert info.value.result.delivered_amount == 0
    assert await receiver.balance(PAYWALL_ACCOUNT) == 0


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_stream_no_double_spend_50_concurrent(tmp_path: Any, store_kind: str) -> None:
    """50 requests on one token funded for 25 over STREAM, while they wait: 25 served."""
    parent = MemoryParent()
    await parent.start()
    store = MemoryStore() if store_kind == "memory" else SqliteStore(str(tmp_path / "s.db"))
    async with async_receiver(parent, store=store) as rx:
        wall = Paywall(rx, pay_method="stream", pay_wait=1.0)
        # 25 clients (each on the Pay header of its own 402), a stream of 10 each (the
        # receive limit of a stream is the price)
        firsts = [await wall.check(facts(), 10) for _ in range(25)]
        pays = [d.reply.headers["Pay"] for d in firsts if d.reply is not None]
        clients = StreamEraClients(parent.pay, pays, 15, gated=True)
        await clients.open()
        requests = [asyncio.ensure_future(wall.check(facts(), 10)) for _ in range(50)]
        await asyncio.sleep(0.1)
        assert not any(r.done() for r in requests)  # all wait for the money
        await clients.release()
        decisions = await asyncio.gather(*requests)
        served = [d for d in decisions if d.serve]
        assert len(served) == 25
        assert all(d.reply is not None and d.reply.status == 402 for d in decisions if not d.serve)
        assert sorted(d.balance for d in served) == list(range(0, 250, 10))  # type: ignore[type-var]
        results = await clients.finish()
        assert sum(r.delivered_amount for r in results) == 250
        assert await store.balance(token_account(TOKEN)) == 0
    await store.close()


async def test_stream_check_blocking_hands_the_wait_to_the_loop(receiver: AsyncReceiver) -> None:
    wall = Paywall(receiver, pay_method="stream", pay_wait=2)
    first = await asyncio.to_thread(wall.check_blocking, facts(), 10)
    assert first is not None and first.reply is not None and first.reply.status == 402
    assert wall.streams.price(token_account(TOKEN)) == 10
    clients = StreamEraClients(parent_of(receiver).pay, first.reply.headers["Pay"], 15, gated=True)
    await clients.open()
    # money is flowing to the token: the blocking path declines, check() waits for it
    assert await asyncio.to_thread(wall.check_blocking, facts(), 10) is None
    waiting = asyncio.ensure_future(wall.check(facts(), 10))
    await clients.release()
    assert (await waiting).serve
    await clients.finish()
    # no stream open: decided on the thread as before
    d = await asyncio.to_thread(wall.check_blocking, facts(), 10)
    assert d is not None and d.reply is not None and d.reply.status == 402
