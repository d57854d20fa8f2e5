"""Web Monetization at the application level (``ilp_receiver.monetization``, spec 09).

``web-monetization-psk2.json`` is replayed through an :class:`AsyncReceiver` with a
:class:`Monetizer`: the SPSP endpoint splices the visitor id into the address, the
recorded 250-unit chunk is credited to the visitor's bucket, spending 100 leaves 150 and
spending 1000 is refused with the middleware's message.  Then the same with payments from
our own client through an in-memory network, the guard, events, waiting, limits and
expiry, and bad input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.client import AsyncPaymentClient, PaymentError, Psk2Destination
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, decode_prepare, decode_reply
from ilp_receiver.codec.stream import StreamMoney, StreamPacket
from ilp_receiver.http_reply import HttpReply
from ilp_receiver.monetization import (
    EXPIRED_ACCOUNT,
    InsufficientBalanceError,
    InvalidVisitorIdError,
    MonetizationEvent,
    Monetizer,
    Visitor,
    VisitorIds,
    client_script,
    link_tag,
    meta_tag,
    new_visitor_id,
    script_tag,
    visitor_account,
)
from ilp_receiver.paywall import RequestFacts, combine_hooks, paywall_payment_hook
from ilp_receiver.psk2.secrets import ReceiverSecrets, decode_base64_lenient
from ilp_receiver.receiver import DEFAULT_ACCOUNT, AsyncReceiver
from ilp_receiver.spsp import SPSP4_MEDIA_TYPE, SpspResponse, parse_spsp_response
from ilp_receiver.stream.secrets import derive_keys, seal_packet
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver.web.monetization_endpoints import (
    MonetizationService,
    VisitorLookup,
    cookie_value,
)
from tests.test_paywall import MemoryParent
from tests.vectorlib import load

WM = load("web-monetization-psk2.json")
PAGE_ID: str = WM["page_id"]
SECRET = bytes(range(32))
SITE_SECRET = b"site secret for visitor ids!"


class RecordedSite(ReceiverSecrets):
    """The recorded site's receiver id and its one recorded destination's secret."""

    def __init__(self) -> None:
        super().__init__(SECRET)
        segments = WM["address_segments"]
        self._receiver_id = segments["receiver_id"]
        self._recorded_token = decode_base64_lenient(segments["token"])
        self._recorded_secret = base64.b64decode(WM["spsp_response"]["body"]["shared_secret"])

    def shared_secret(self, token_and_key: bytes) -> bytes:
        if token_and_key == self._recorded_token:
            return self._recorded_secret
        return super().shared_secret(token_and_key)


def soon() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)


def spsp_facts(path: str, accept: str = "application/spsp+json", **headers: str) -> RequestFacts:
    pairs = [("Accept", accept), *((k.replace("_", "-"), v) for k, v in headers.items())]
    return RequestFacts.from_pairs("GET", path, pairs)


def body(reply: HttpReply | None) -> dict[str, Any]:
    assert reply is not None
    result: dict[str, Any] = json.loads(reply.body)
    return result


# ---------------------------------------------------------------------------------------
# The vector, at the application level


async def test_vector_replayed_through_the_monetizer() -> None:
    segments = WM["address_segments"]
    parent = MemoryParent(segments["ilp_address"])
    await parent.start()
    monetizer = Monetizer(secret=SITE_SECRET)
    receiver = AsyncReceiver(parent.child, secret=SECRET, on_payment=monetizer.payment_hook)
    receiver._secrets = RecordedSite()  # the recorded site's receiver id and secret
    service = MonetizationService(monetizer)
    service.bind(receiver)
    events: list[MonetizationEvent] = []
    monetizer.on_event(events.append)
    async with receiver:
        # The SPSP query of the vector, answered by our endpoint.
        request = WM["spsp_request"]
        reply = await service.handle(
            RequestFacts.from_pairs(request["method"], request["path"], request["headers"].items())
        )
        assert reply is not None
        assert reply.status == 200
        assert reply.headers["Content-Type"] == WM["spsp_response"]["headers"]["Content-Type"]
        answer = parse_spsp_response(reply.body)
        parts = answer.destination_account.split(".")
        recorded = WM["spsp_response"]["body"]["destination_account"].split(".")
        # <address>.<id>.<receiverId>.<token>: "splices the id in front of the last two"
        assert parts[:-1] == recorded[:-1]
        assert ".".join(parts[:-3]) == segments["ilp_address"]
        assert parts[-3] == segments["page_id"] == PAGE_ID
        assert parts[-2] == segments["receiver_id"]
        # ... and the bucket is bound in the authenticated key, not just spliced
        token_and_key = decode_base64_lenient(parts[-1])
        assert token_and_key[18:] == visitor_account(PAGE_ID).encode()

        # The recorded 250-unit chunk (issued the 2018 way: spliced id, no key).
        prepare = decode_prepare(bytes.fromhex(WM["payment"]["ilp_prepare_hex"]))
        assert prepare.amount == int(WM["payment"]["source_amount"])
        assert prepare.destination == WM["spsp_response"]["body"]["destination_account"]
        # recorded in 2018: move the expiry (not part of the PSK2 data) into the future
        fulfill = await parent.pay(replace(prepare, expires_at=soon()))
        expected = decode_reply(bytes.fromhex(WM["payment"]["ilp_response_hex"]))
        assert isinstance(fulfill, IlpFulfill)
        assert isinstance(expected, IlpFulfill)
        assert fulfill.fulfillment == expected.fulfillment
        assert await monetizer.balance(PAGE_ID) == WM["bucket_balance_after_payment"] == 250
        assert await receiver.balance(DEFAULT_ACCOUNT) == 0

        assert await monetizer.spend(PAGE_ID, 100) == WM["bucket_balance_after_spend_100"]
        with pytest.raises(InsufficientBalanceError) as info:
            await monetizer.spend(PAGE_ID, 1000)
        assert str(info.value) == WM["spend_1000_error"]
        assert await monetizer.balance(PAGE_ID) == 150
        await asyncio.sleep(0.05)
    assert [(e.kind, e.visitor_id, e.amount, e.balance) for e in events] == [
        ("start", PAGE_ID, 250, 250)
    ]


async def test_legacy_splice_can_be_turned_off() -> None:
    parent = MemoryParent(WM["address_segments"]["ilp_address"])
    await parent.start()
    monetizer = Monetizer(secret=SITE_SECRET, legacy_splice=False)
    receiver = AsyncReceiver(parent.child, secret=SECRET, on_payment=monetizer.payment_hook)
    receiver._secrets = RecordedSite()
    monetizer.attach(receiver)
    async with receiver:
        prepare = decode_prepare(bytes.fromhex(WM["payment"]["ilp_prepare_hex"]))
        assert isinstance(await parent.pay(replace(prepare, expires_at=soon())), IlpFulfill)
        assert await monetizer.balance(PAGE_ID) == 0
        assert await receiver.balance(DEFAULT_ACCOUNT) == 250


# ---------------------------------------------------------------------------------------
# Paying through a network with our own client


class Site:
    """A receiver with a monetizer on an in-memory network, and a paying client."""

    def __init__(self, receiver: AsyncReceiver, monetizer: Monetizer, payer: AsyncPaymentClient):
        self.receiver = receiver
        self.monetizer = monetizer
        self.service = MonetizationService(monetizer)
        self.service.bind(receiver)
        self.payer = payer

    async def spsp(self, path: str, **headers: str) -> HttpReply:
        reply = await self.service.handle(spsp_facts(path, **headers))
        assert reply is not None
        return reply

    async def pay_visitor(self, value: str, amount: int) -> None:
        reply = await self.spsp(f"/__monetizer/{value}")
        assert reply.status == 200, reply.body
        await self.payer.pay(parse_spsp_response(reply.body), amount)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    network = InMemoryNetwork("test.net")
    monetizer = Monetizer(secret=SITE_SECRET, max_balance=1000)
    receiver = AsyncReceiver(
        await network.add_child("site"),
        secret=SECRET,
        on_payment=combine_hooks(paywall_payment_hook, monetizer.payment_hook),
    )
    payer = AsyncPaymentClient(await network.add_child("browser"))
    async with receiver, payer:
        yield Site(receiver, monetizer, payer)


async def test_pay_spend_and_refuse(site: Site) -> None:
    visitor, cookie = site.monetizer.new_visitor()
    await site.pay_visitor(cookie, 250)  # the signed cookie value in the URL, as client.js
    assert await site.monetizer.balance(visitor) == 250
    assert await site.monetizer.spend(visitor, 100) == 150
    with pytest.raises(InsufficientBalanceError, match=f"id={visitor.id}"):
        await site.monetizer.spend(visitor, 1000)
    assert await site.monetizer.try_spend(visitor, 1000) is None
    assert await site.monetizer.balance(visitor.id) == 150
    await site.pay_visitor(visitor.id, 50)  # the bare id works too (paying in only)
    assert await site.monetizer.balance(visitor) == 200


async def test_max_balance_refuses_with_t04_and_keeps_the_money_out(site: Site) -> None:
    visitor, cookie = site.monetizer.new_visitor()
    await site.pay_visitor(cookie, 900)
    reply = await site.spsp(f"/__monetizer/{cookie}")
    answer = parse_spsp_response(reply.body)
    assert answer.balance is not None
    assert (answer.balance.maximum, answer.balance.current) == (1000, 900)
    with pytest.raises(PaymentError):
        await site.payer.pay(answer, 200)
    assert await site.monetizer.balance(visitor) == 900


async def test_events_start_then_progress(site: Site) -> None:
    events: list[MonetizationEvent] = []
    started: list[str | None] = []

    async def on_start(event: MonetizationEvent) -> None:
        started.append(event.visitor_id)

    site.monetizer.on_event(events.append)
    site.monetizer.on_start(on_start)
    progress: list[int] = []
    site.monetizer.on_progress(lambda e: progress.append(e.amount))
    visitor, cookie = site.monetizer.new_visitor()
    await site.pay_visitor(cookie, 10)
    await site.pay_visitor(cookie, 20)
    await asyncio.sleep(0.05)
    assert [(e.kind, e.amount, e.balance) for e in events] == [
        ("start", 10, 10),
        ("progress", 20, 30),
    ]
    assert started == [visitor.id]
    assert progress == [10, 20]


async def test_await_balance_is_woken_by_the_payment(site: Site) -> None:
    monetizer = site.monetizer
    monetizer.recheck_interval = 30.0  # only the event can wake it in time
    visitor, cookie = monetizer.new_visitor()
    waiter = asyncio.create_task(monetizer.await_balance(visitor, 100, timeout=10))
    spender = asyncio.create_task(monetizer.await_and_spend(visitor, 60, timeout=10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await site.pay_visitor(cookie, 120)
    balance = await asyncio.wait_for(waiter, 2)
    assert balance in (120, 60)
    assert await asyncio.wait_for(spender, 2) == 60
    with pytest.raises(TimeoutError):
        await monetizer.await_balance(visitor, 1000, timeout=0.05)
    with pytest.raises(TimeoutError):
        await monetizer.await_and_spend(visitor, 1000, timeout=0.05)
    assert await monetizer.balance(visitor) == 60


async def test_concurrent_spends_never_overdraw(site: Site) -> None:
    visitor, cookie = site.monetizer.new_visitor()
    await site.pay_visitor(cookie, 250)
    results = await asyncio.gather(*(site.monetizer.try_spend(visitor, 10) for _ in range(50)))
    assert sum(r is not None for r in results) == 25
    assert await site.monetizer.balance(visitor) == 0


async def test_idle_buckets_expire_into_the_expired_account(site: Site) -> None:
    now = [1000.0]
    monetizer = Monetizer(secret=SITE_SECRET, idle_expiry=60, clock=lambda: now[0])
    monetizer.attach(site.receiver)
    service = MonetizationService(monetizer)
    service.bind(site.receiver)
    events: list[MonetizationEvent] = []
    monetizer.on_event(events.append)
    visitor, cookie = monetizer.new_visitor()
    other, _ = monetizer.new_visitor()
    reply = await service.handle(spsp_facts(f"/__monetizer/{cookie}"))
    assert reply is not None
    await site.payer.pay(parse_spsp_response(reply.body), 70)
    await asyncio.sleep(0.05)
    now[0] += 30
    await monetizer.credit(other, 5)
    now[0] += 45
    assert await monetizer.expire_idle() == [visitor.account]
    assert await monetizer.balance(visitor) == 0
    assert await monetizer.balance(other) == 5
    assert await site.receiver.balance(EXPIRED_ACCOUNT) == 70
    assert events[-1].kind == "expired"
    assert events[-1].amount == 70
    now[0] += 100
    await monetizer.try_spend(other, 1)  # sweeps by itself
    assert await site.receiver.balance(EXPIRED_ACCOUNT) == 75


# ---------------------------------------------------------------------------------------
# Era C: Web-Monetization-Id


async def test_era_c_binds_payments_to_the_monetization_id(site: Site) -> None:
    mid = "2ab5e0f8-3d0c-4c39-9c5a-8f2fd1c3a9b1"
    reply = await site.spsp("/__monetizer", Web_Monetization_Id=mid)
    assert reply.status == 200
    assert "Web-Monetization-Id" in reply.headers["Vary"]
    answer = parse_spsp_response(reply.body)
    assert mid not in answer.destination_account  # a credential: never spliced
    await site.payer.pay(answer, 40)
    visitor = site.monetizer.ids.monetization_visitor(mid)
    assert visitor.account.startswith("wm:")
    assert mid not in repr(visitor)
    assert await site.monetizer.balance(visitor) == 40
    lookup = site.service.lookup(spsp_facts("/article", Web_Monetization_Id=mid))
    assert lookup.visitor == visitor
    decision = await site.service.guard(lookup, 30)
    assert decision.serve
    assert decision.balance == 10
    # without the header the pointer pays the site's own account
    reply = await site.spsp("/__monetizer")
    await site.payer.pay(parse_spsp_response(reply.body), 5)
    assert await site.receiver.balance(DEFAULT_ACCOUNT) == 5


# ---------------------------------------------------------------------------------------
# STREAM (SPSP v4): eras C and B, limits

#: What a STREAM client of 2019 (ilp-protocol-spsp 3.0.0, the extensions) sends.
STREAM_ACCEPT = "application/spsp4+json, application/spsp+json"


def stream_answer(reply: HttpReply) -> SpspResponse:
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == SPSP4_MEDIA_TYPE
    return parse_spsp_response(reply.body, protocol="stream")


def stream_prepare(answer: SpspResponse, amount: int, sequence: int = 1) -> IlpPrepare:
    """One fulfillable STREAM money packet on stream 1 (a hand-driven client)."""
    keys = derive_keys(answer.shared_secret)
    data = seal_packet(keys, os.urandom(12), StreamPacket(sequence, 12, 0, (StreamMoney(1, 1),)))
    return IlpPrepare(amount, soon(), keys.condition(data), answer.destination_account, data)


def bound_account(site: Site, answer: SpspResponse) -> str | None:
    """The account in the authenticated tag of a STREAM destination we issued."""
    segment = answer.destination_account[len(site.receiver.address) + 1 :]
    assert "." not in segment  # <address>.<token>: nothing spliced
    return site.receiver.stream_server.secrets.open_token(segment).connection_tag


async def test_era_c_over_stream_end_to_end(site: Site) -> None:
    monetizer = site.monetizer
    monetizer.recheck_interval = 30.0  # only the payment event can wake the waiter in time
    events: list[MonetizationEvent] = []
    monetizer.on_event(events.append)
    mid = "0c6e4b1a-7d3f-4f2e-9a58-3b2d1e0f9c7a"
    visitor = monetizer.ids.monetization_visitor(mid)
    waiter = asyncio.create_task(monetizer.await_balance(visitor, 250, timeout=10))

    # the browser's SPSP query: both types, the Web-Monetization-Id, no cookie
    reply = await site.spsp("/__monetizer", accept=STREAM_ACCEPT, Web_Monetization_Id=mid)
    answer = stream_answer(reply)
    assert reply.headers["Vary"] == "Accept, Web-Monetization-Id"
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "Web-Monetization-Id" in reply.headers["Access-Control-Allow-Headers"]
    assert mid not in answer.destination_account  # a credential: never in an address
    assert bound_account(site, answer) == visitor.account  # bound in the token's tag
    assert answer.balance is not None
    assert (answer.balance.maximum, answer.balance.current) == (1000, 0)

    # the browser pays over STREAM; the money lands in the id's bucket
    result = await site.payer.pay(answer, 250)
    assert result.protocol == "stream"
    assert await asyncio.wait_for(waiter, 2) == 250
    assert await monetizer.balance(visitor) == 250
    await asyncio.sleep(0.05)
    assert [(e.kind, e.visitor_id) for e in events][:1] == [("start", None)]
    assert sum(e.amount for e in events) == 250
    assert {e.account for e in events} == {visitor.account}

    # the page presents the same id to a guarded route: served and debited
    lookup = site.service.lookup(spsp_facts("/article", accept="*/*", Web_Monetization_Id=mid))
    assert lookup.visitor == visitor
    decision = await site.service.guard(lookup, 100)
    assert (decision.serve, decision.charged, decision.balance) == (True, 100, 150)
    assert await monetizer.balance(visitor) == 150

    # a tampered or malformed id: 400 JSON at the pointer and at the guard
    for bad in ("0c6e4b1a/7d3f", "a b", "x" * 1001, "ümlaut"):
        refused = await site.spsp("/__monetizer", accept=STREAM_ACCEPT, Web_Monetization_Id=bad)
        assert refused.status == 400
        assert refused.headers["Content-Type"] == "application/json"
        assert body(refused)["id"] == "InvalidVisitorId"
        guard = await site.service.guard(
            site.service.lookup(RequestFacts("GET", "/a", {"web-monetization-id": bad})), 1
        )
        assert guard.reply is not None
        assert guard.reply.status == 400
    assert await monetizer.balance(visitor) == 150

    # no header: the site's own account, over STREAM too
    plain = stream_answer(await site.spsp("/__monetizer", accept=SPSP4_MEDIA_TYPE))
    assert bound_account(site, plain) == DEFAULT_ACCOUNT
    # a script polyfill's preflight
    preflight = await site.service.handle(RequestFacts("OPTIONS", "/__monetizer", {}))
    assert preflight is not None
    assert preflight.status == 204
    assert "Web-Monetization-Id" in preflight.headers["Access-Control-Allow-Headers"]
    # only an Accept that allows neither SPSP gets 406, naming both types
    refused = await site.spsp("/__monetizer", accept="text/html", Web_Monetization_Id=mid)
    assert refused.status == 406
    assert body(refused)["accept"] == [SPSP4_MEDIA_TYPE, "application/spsp+json"]


async def test_era_b_stream_destination_for_the_cookie_visitor(site: Site) -> None:
    visitor, cookie = site.monetizer.new_visitor()
    # "SPSP answered only for Accept containing application/spsp4+json" (era B)
    for accept in (SPSP4_MEDIA_TYPE, STREAM_ACCEPT):
        answer = stream_answer(await site.spsp(f"/__monetizer/{cookie}", accept=accept))
        assert bound_account(site, answer) == visitor.account
    await site.payer.pay(answer, 70)
    assert await site.monetizer.balance(visitor) == 70
    lookup = site.service.lookup(
        RequestFacts.from_pairs("GET", "/article", [("Cookie", f"__monetizer={cookie}")])
    )
    decision = await site.service.guard(lookup, 30)
    assert (decision.serve, decision.balance) == (True, 40)
    # era A is unchanged: a PSK2-only client still gets PSK2, with the id spliced
    psk2 = await site.spsp(f"/__monetizer/{cookie}", accept="application/spsp+json")
    assert psk2.headers["Content-Type"] == "application/spsp+json"
    assert parse_spsp_response(psk2.body).destination_account.split(".")[-3] == visitor.id
    # a tampered cookie value in the path: 400 for STREAM clients too
    tampered = cookie.split(".")[0] + ".AAAA"
    refused = await site.spsp(f"/__monetizer/{tampered}", accept=SPSP4_MEDIA_TYPE)
    assert refused.status == 400
    assert body(refused)["id"] == "InvalidVisitorId"


async def test_max_balance_refuses_stream_packets_and_never_clamps(site: Site) -> None:
    mid = "5b1e7c2d-0a9f-4e3b-8c6d-2f1a0b9c8d7e"
    visitor = site.monetizer.ids.monetization_visitor(mid)
    reply = await site.spsp("/__monetizer", accept=STREAM_ACCEPT, Web_Monetization_Id=mid)
    answer = stream_answer(reply)
    assert isinstance(await site.payer.send(stream_prepare(answer, 900)), IlpFulfill)
    assert await site.monetizer.balance(visitor) == 900
    # a packet that would take the bucket past max_balance (1000) is refused whole:
    # T04, nothing credited (the sender backs off and retries after the visitor spent)
    refused = await site.payer.send(stream_prepare(answer, 200, sequence=2))
    assert isinstance(refused, IlpReject)
    assert refused.code == "T04"
    assert await site.monetizer.balance(visitor) == 900
    # what fits is taken, to the unit
    assert isinstance(await site.payer.send(stream_prepare(answer, 100, 3)), IlpFulfill)
    assert await site.monetizer.balance(visitor) == 1000
    # a whole client payment: it backs off, never gets the bucket past the maximum
    again = stream_answer(await site.spsp("/__monetizer", accept="*/*", Web_Monetization_Id=mid))
    assert again.balance is not None
    assert again.balance.current == 1000
    with pytest.raises(PaymentError):
        await site.payer.pay(again, 50, max_retries=2, initial_backoff=0.001, max_backoff=0.01)
    assert await site.monetizer.balance(visitor) == 1000
    # after spending there is room again
    await site.monetizer.spend(visitor, 300)
    await site.payer.pay(again, 50)
    assert await site.monetizer.balance(visitor) == 750


async def test_stream_receipts_at_the_era_c_pointer(site: Site) -> None:
    # RFC 39 verifiers of 2020-2021 add Receipt-Nonce / Receipt-Secret to the query
    headers = {
        "Web_Monetization_Id": "receipts-1",
        "Receipt_Nonce": base64.b64encode(bytes(16)).decode(),
        "Receipt_Secret": base64.b64encode(bytes(range(32))).decode(),
    }
    answer = stream_answer(await site.spsp("/__monetizer", accept=STREAM_ACCEPT, **headers))
    assert answer.receipts_enabled is True
    assert isinstance(await site.payer.send(stream_prepare(answer, 10)), IlpFulfill)
    bad = {**headers, "Receipt_Secret": "short"}
    refused = await site.spsp("/__monetizer", accept=STREAM_ACCEPT, **bad)
    assert refused.status == 400
    assert body(refused)["id"] == "InvalidReceiptError"
    # PSK2 answers ignore them
    psk2 = await site.spsp("/__monetizer", **bad)
    assert psk2.headers["Content-Type"] == "application/spsp+json"


async def test_stream_disabled_receiver_keeps_psk2_only() -> None:
    network = InMemoryNetwork("test.net")
    monetizer = Monetizer(secret=SITE_SECRET)
    receiver = AsyncReceiver(
        await network.add_child("site"),
        secret=SECRET,
        stream=False,
        on_payment=monetizer.payment_hook,
    )
    service = MonetizationService(monetizer)
    async with receiver:
        service.bind(receiver)
        mid = "stream-off"
        reply = await service.handle(spsp_facts("/__monetizer", accept=SPSP4_MEDIA_TYPE))
        assert reply is not None
        assert reply.status == 406
        assert body(reply)["accept"] == ["application/spsp+json"]
        reply = await service.handle(
            spsp_facts("/__monetizer", accept=STREAM_ACCEPT, Web_Monetization_Id=mid)
        )
        assert reply is not None
        assert reply.headers["Content-Type"] == "application/spsp+json"


# ---------------------------------------------------------------------------------------
# The guard and the endpoints


async def test_guard_serves_debits_and_refuses(site: Site) -> None:
    service = site.service
    visitor, cookie = site.monetizer.new_visitor()
    facts = RequestFacts.from_pairs("GET", "/article", [("Cookie", f"a=b; __monetizer={cookie}")])
    lookup = service.lookup(facts)
    assert lookup == VisitorLookup(visitor)
    refused = await service.guard(lookup, 10)
    assert refused.reply is not None
    assert refused.reply.status == 402
    assert body(refused.reply) == {
        "id": "InsufficientBalance",
        "message": f"insufficient balance on id. id={visitor.id}",
        "price": "10",
        "balance": "0",
    }
    await site.pay_visitor(cookie, 25)
    served = await service.guard(lookup, 10)
    assert (served.serve, served.charged, served.balance) == (True, 10, 15)
    await service.refund(served)
    assert await site.monetizer.balance(visitor) == 25
    assert (await service.guard(lookup, 0)).serve
    # waiting: the payment arrives while the request waits
    later = asyncio.create_task(service.guard(lookup, 40, wait=5))
    await asyncio.sleep(0.05)
    await site.pay_visitor(cookie, 20)
    waited = await later
    assert (waited.serve, waited.balance) == (True, 5)
    timed_out = await service.guard(lookup, 40, wait=0.05)
    assert timed_out.reply is not None
    assert timed_out.reply.status == 402


async def test_guard_with_no_or_tampered_cookie(site: Site) -> None:
    service = site.service
    fresh = service.lookup(RequestFacts("GET", "/article", {}), secure=True)
    assert fresh.visitor is not None
    assert fresh.set_cookie is not None
    assert fresh.set_cookie.startswith("__monetizer=")
    assert "Secure" in fresh.set_cookie
    assert "HttpOnly" not in fresh.set_cookie  # "httpOnly: false"
    decision = await service.guard(fresh, 10)
    assert decision.reply is not None
    assert decision.reply.status == 402
    visitor, cookie = site.monetizer.new_visitor()
    await site.pay_visitor(cookie, 100)
    tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    for bad in (tampered, f"{'0' * 32}.{cookie.split('.')[1]}", visitor.id, "garbage"):
        lookup = service.lookup(RequestFacts("GET", "/a", {"cookie": f"__monetizer={bad}"}))
        assert lookup.error is not None
        assert lookup.set_cookie is not None  # pages just get a fresh cookie
        decision = await service.guard(lookup, 10)
        assert decision.reply is not None
        assert decision.reply.status == 400
        assert body(decision.reply)["id"] == "InvalidVisitorId"
    assert await site.monetizer.balance(visitor) == 100
    bad_header = service.lookup(RequestFacts("GET", "/a", {"web-monetization-id": "a b"}))
    assert (bad_header.visitor, bad_header.error is not None) == (None, True)


async def test_endpoints_bad_input(site: Site) -> None:
    _, cookie = site.monetizer.new_visitor()
    tampered = cookie.split(".")[0] + ".AAAA"
    for path in (f"/__monetizer/{tampered}", "/__monetizer/xyz", "/__monetizer/ABCDEF"):
        reply = await site.spsp(path)
        assert reply.status == 400
        assert reply.headers["Content-Type"] == "application/json"
        assert body(reply)["id"] == "InvalidVisitorId"
    reply = await site.spsp("/__monetizer", Web_Monetization_Id="not/ok")
    assert reply.status == 400
    reply = await site.spsp(f"/__monetizer/{cookie}", accept="text/html")
    assert reply.status == 406
    assert await site.service.handle(RequestFacts("POST", "/__monetizer/x", {})) is None
    assert await site.service.handle(RequestFacts("GET", "/elsewhere", {})) is None


async def test_client_script_endpoint(site: Site) -> None:
    reply = await site.service.handle(RequestFacts("GET", "/__monetizer/client.js", {}))
    assert reply is not None
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/javascript")
    text = reply.body.decode()
    assert 'var COOKIE = "__monetizer";' in text
    assert 'var PREFIX = "/__monetizer";' in text
    assert "window.monetize({ receiver: monetizer.receiver })" in text
    assert 'document.readyState === "complete"' in text
    # era B: the page queries SPSP v4 for its visitor and hands the answer to monetize
    assert 'var SPSP4 = "application/spsp4+json";' in text
    assert "window.WebMonetization.monetize({" in text
    assert "destinationAccount: spsp.destination_account" in text
    assert "sharedSecret: spsp.shared_secret" in text
    assert "connection.createStream()" in text
    # era C: the id arrives with monetizationstart and goes back as Web-Monetization-Id
    assert 'document.monetization.addEventListener("monetizationstart"' in text
    assert "event.detail.requestId" in text
    assert 'var ID_HEADER = "Web-Monetization-Id";' in text


# ---------------------------------------------------------------------------------------
# Pure helpers


def test_visitor_ids_sign_and_verify() -> None:
    ids = VisitorIds(SITE_SECRET)
    visitor_id = new_visitor_id(bytes(range(16)))
    assert visitor_id == "000102030405060708090a0b0c0d0e0f"
    signed = ids.sign(visitor_id)
    assert signed.startswith(visitor_id + ".")
    assert ids.verify(signed) == visitor_id
    assert ids.from_path(signed) == ids.from_path(visitor_id) == visitor_id
    assert VisitorIds(b"another secret, 16+ bytes").from_path(visitor_id) == visitor_id
    with pytest.raises(InvalidVisitorIdError):
        VisitorIds(b"another secret, 16+ bytes").verify(signed)
    with pytest.raises(InvalidVisitorIdError):
        ids.sign("XYZ")
    with pytest.raises(ValueError, match="16 random bytes"):
        new_visitor_id(b"short")
    assert ids.monetization_account("abc") == ids.monetization_account("abc")
    assert ids.monetization_account("abc") != VisitorIds(b"x" * 16).monetization_account("abc")
    assert "secret" not in repr(ids).replace("secret hidden", "")
    assert Visitor("v", "visitor:v", "A").label == "v"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_verify_refuses_everything_unsigned(value: str) -> None:
    ids = VisitorIds(SITE_SECRET)
    with pytest.raises(InvalidVisitorIdError):
        ids.verify(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_sign_verify_round_trip(random: bytes) -> None:
    ids = VisitorIds(SITE_SECRET)
    visitor_id = new_visitor_id(random)
    assert ids.verify(ids.sign(visitor_id)) == visitor_id


def test_tags_are_escaped() -> None:
    assert meta_tag("$wallet.example/alice") == (
        '<meta name="monetization" content="$wallet.example/alice">'
    )
    assert meta_tag('$x"><script>') == (
        '<meta name="monetization" content="$x&quot;&gt;&lt;script&gt;">'
    )
    assert link_tag("https://x.example/a?b=1&c='") == (
        '<link rel="monetization" href="https://x.example/a?b=1&amp;c=&#x27;">'
    )
    assert script_tag() == '<script src="/__monetizer/client.js"></script>'
    assert 'var COOKIE = "my\\"cookie";' in client_script(cookie_name='my"cookie')


def test_cookie_value_parsing() -> None:
    assert cookie_value("a=1; __monetizer=abc.def; b=2", "__monetizer") == "abc.def"
    assert cookie_value('__monetizer="q"', "__monetizer") == "q"
    assert cookie_value("x__monetizer=1", "__monetizer") is None
    assert cookie_value(None, "__monetizer") is None
    assert cookie_value("novalue; ;=;", "__monetizer") is None


def test_monetizer_config_errors() -> None:
    from ilp_receiver.errors import ConfigError

    for options in (
        {"cookie_name": "a b"},
        {"prefix": "nope"},
        {"prefix": "/a/"},
        {"max_balance": 0},
        {"idle_expiry": 0},
        {"recheck_interval": 0},
        {"secret": b"short"},
    ):
        with pytest.raises(ConfigError):
            Monetizer(**options)
    with pytest.raises(RuntimeError, match="attach"):
        _ = Monetizer(secret=SITE_SECRET).receiver


def test_insufficient_balance_error_pickles() -> None:
    import pickle

    error = InsufficientBalanceError(PAGE_ID, 150, 1000)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == WM["spend_1000_error"]
    assert (copy.balance, copy.amount) == (150, 1000)


async def test_f02_for_someone_elses_address(site: Site) -> None:
    # a spliced id on an address of another receiver never reaches a bucket
    visitor, _ = site.monetizer.new_visitor()
    other = ReceiverSecrets(bytes(32)).issue(
        site.receiver.address, bytes(18), segments=[visitor.id]
    )
    with pytest.raises(PaymentError):
        await site.payer.pay(Psk2Destination(other.destination, other.shared_secret), 10)
    assert await site.monetizer.balance(visitor) == 0
