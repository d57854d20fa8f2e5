"""Today's Web Monetization: visitors credited from incoming payments at the site's wallet.

Against a local Rafiki-shaped Open Payments wallet (``tests/op_fake.py``, its answers
validated below against the Open Payments OpenAPI documents of ``@interledger/open-
payments`` 7.4.0 with ``@interledger/openapi``, the validator the Open Payments client
uses): tags and headers, growth credited by deltas, the guard going 402 -> 200, duplicate
and concurrent reports (also from two processes on PostgreSQL) crediting once, polling,
and every bad input of the issue refused with a JSON error and nothing credited.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ilp_receiver.http_reply import HttpReply
from ilp_receiver.monetization import MonetizationEvent, Monetizer, Visitor
from ilp_receiver.monetization_verifier import IncomingPaymentVerifier
from ilp_receiver.open_payments import (
    OpenPaymentsError,
    OpenPaymentsFetcher,
    csp_monetization_src,
    incoming_payment_id,
    is_public_address,
    monetization_link_tag,
    permissions_policy,
    wallet_address_url,
)
from ilp_receiver.open_payments_gnap import GnapSigningKey
from ilp_receiver.paywall import RequestFacts
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.stores.memory import MemoryStore
from ilp_receiver.web.monetization_endpoints import MAX_REPORT_BYTES, MonetizationService
from tests.npm_packages import installed_js_packages
from tests.op_fake import FakeWallet, Served, SignedRequest
from tests.test_paywall import MemoryParent
from tests.test_stores import _cleanup_postgres, postgres_url

ROOT = Path(__file__).resolve().parent.parent
ORACLE = ROOT / "tests" / "openapi"
SECRET = bytes(range(32))
SITE_SECRET = b"site secret for visitor ids!"


class Site:
    """A monetizer on a (never started) receiver, its service and verifier."""

    def __init__(self, wallet: FakeWallet, store: Any = None, **options: Any) -> None:
        self.monetizer = Monetizer(secret=SITE_SECRET)
        self.parent = MemoryParent()
        receiver = AsyncReceiver(self.parent.child, secret=SECRET, store=store or MemoryStore())
        self.monetizer.attach(receiver)
        options.setdefault("allow_private", True)
        options.setdefault("allow_insecure", True)
        self.verifier = IncomingPaymentVerifier(self.monetizer, wallet.wallet_address, **options)
        self.service = MonetizationService(self.monetizer, verifier=self.verifier)
        self.service.bind(receiver)

    def visitor(self) -> tuple[Visitor, str]:
        visitor, cookie = self.monetizer.new_visitor()
        return visitor, f"__monetizer={cookie}"

    async def post(
        self,
        cookie: str | None,
        body: bytes | dict[str, Any],
        *,
        content_type: str = "application/json",
    ) -> HttpReply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = [("Content-Type", content_type), ("Content-Length", str(len(raw)))]
        if cookie is not None:
            headers.append(("Cookie", cookie))
        facts = RequestFacts.from_pairs("POST", "/__monetizer/incoming-payments", headers)
        limit = self.service.report_limit(facts)
        assert limit == MAX_REPORT_BYTES
        return await self.service.handle_report(facts, raw[: limit + 1])

    async def report(self, cookie: str, url: str, **extra: Any) -> HttpReply:
        return await self.post(cookie, {"incomingPayment": url, **extra})

    async def close(self) -> None:
        await self.verifier.close()


def body(reply: HttpReply) -> dict[str, Any]:
    assert reply.headers["Content-Type"] == "application/json"
    decoded: dict[str, Any] = json.loads(reply.body)
    return decoded


@pytest.fixture
async def wallet() -> AsyncIterator[FakeWallet]:
    fake = await FakeWallet().start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
async def site(wallet: FakeWallet) -> AsyncIterator[Site]:
    running = Site(wallet)
    try:
        yield running
    finally:
        await running.close()


# ---------------------------------------------------------------------------------------
# Tags and headers


def test_wallet_address_urls_are_checked_as_the_extension_checks_them() -> None:
    good = "https://ilp.interledger-test.dev/site"
    assert wallet_address_url(good) == good
    assert monetization_link_tag(good) == (
        '<link rel="monetization" href="https://ilp.interledger-test.dev/site">'
    )
    for bad in (
        "$ilp.interledger-test.dev/site",
        "http://ilp.interledger-test.dev/site",
        "https://ilp.interledger-test.dev:8443/site",
        "https://ilp.interledger-test.dev/site?x=1",
        "https://ilp.interledger-test.dev/site#top",
        "https://user:pw@ilp.interledger-test.dev/site",
        "https:///site",
        'https://wallet.example/"><script>',
        " https://wallet.example/site",
    ):
        with pytest.raises(OpenPaymentsError) as info:
            monetization_link_tag(bad)
        assert info.value.error_id == "InvalidWalletAddress"
    # local development only
    assert wallet_address_url("http://127.0.0.1:8000/site", allow_insecure=True)


def test_csp_and_permissions_policy() -> None:
    assert (
        csp_monetization_src("https://ilp.gatehub.net/123", "https://ilp.gatehub.net/456")
        == "monetization-src https://ilp.gatehub.net"
    )
    assert csp_monetization_src() == "monetization-src 'none'"
    assert permissions_policy() == "monetization=(self)"
    assert permissions_policy("'self'", "https://embed.example") == (
        'monetization=(self "https://embed.example")'
    )
    assert permissions_policy("'none'") == "monetization=()"
    assert permissions_policy("*") == "monetization=*"
    with pytest.raises(ValueError, match="allowlist item"):
        permissions_policy("self); evil=(*")


def test_incoming_payment_urls_must_be_under_the_resource_server() -> None:
    rs = "https://ilp.interledger-test.dev"
    good = f"{rs}/incoming-payments/016da9d5-c9a4-4c80-a354-86b915a04ff8"
    assert incoming_payment_id(good, rs) == "016da9d5-c9a4-4c80-a354-86b915a04ff8"
    for bad in (
        "https://ilp.interledger-test.dev.evil.example/incoming-payments/1",
        "https://evil.example/incoming-payments/1",
        "https://ilp.interledger-test.dev@evil.example/incoming-payments/1",
        "http://ilp.interledger-test.dev/incoming-payments/1",
        "https://ilp.interledger-test.dev:444/incoming-payments/1",
        "https://ilp.interledger-test.dev/incoming-payments/1/complete",
        "https://ilp.interledger-test.dev/incoming-payments/1?x=1",
        "https://ilp.interledger-test.dev/incoming-payments/..",
        "https://ilp.interledger-test.dev/outgoing-payments/1",
    ):
        assert incoming_payment_id(bad, rs) is None, bad


def test_public_addresses() -> None:
    for private in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ):
        assert not is_public_address(private), private
    for public in ("1.1.1.1", "2606:4700:4700::1111"):
        assert is_public_address(public)


# ---------------------------------------------------------------------------------------
# Crediting


async def test_received_amount_growing_in_three_steps_credits_three_deltas(
    site: Site, wallet: FakeWallet
) -> None:
    events: list[MonetizationEvent] = []
    site.monetizer.on_event(events.append)
    visitor, cookie = site.visitor()
    url = wallet.create()

    wallet.receive(url, 100)
    first = await site.report(cookie, url, paymentPointer=wallet.wallet_address)
    assert first.status == 200, first.body
    assert body(first) == {
        "credited": "100",
        "receivedAmount": {"value": "100", "assetCode": "USD", "assetScale": 2},
        "balance": "100",
        "watching": True,
    }
    # the same report again: nothing new arrived, nothing credited
    again = await site.report(cookie, url)
    assert body(again)["credited"] == "0"

    wallet.receive(url, 250)
    assert await site.verifier.poll(url) == 250

    wallet.receive(url, 50)
    third = await site.report(cookie, url)
    assert body(third)["credited"] == "50"
    assert await site.monetizer.balance(visitor) == 400
    assert [(e.kind, e.amount, e.balance) for e in events] == [
        ("start", 100, 100),
        ("progress", 250, 350),
        ("progress", 50, 400),
    ]


async def test_verified_credits_write_visitor_credited_webhook_events(
    wallet: FakeWallet,
) -> None:
    from ilp_receiver.webhooks import WebhookConfig, generate_ed25519_key
    from ilp_receiver.webhooks.dispatcher import signing_keys

    config = WebhookConfig(
        ("http://127.0.0.1:9/",), signing_keys([generate_ed25519_key()[0]]), dispatch=False
    )
    store = MemoryStore()
    running = Site(wallet, store=store)
    running.monetizer.attach(
        AsyncReceiver(running.parent.child, secret=SECRET, store=store, webhooks=config)
    )
    try:
        visitor, cookie = running.visitor()
        url = wallet.create()
        wallet.receive(url, 100)
        assert body(await running.report(cookie, url))["credited"] == "100"
        assert body(await running.report(cookie, url))["credited"] == "0"  # no growth
        wallet.receive(url, 30)
        assert await running.verifier.poll(url) == 30
    finally:
        await running.close()
    events = [e for e in await store.outbox_list("pending") if e.type == "visitor.credited"]
    assert sum(e.amount for e in events) == 130 == await running.monetizer.balance(visitor)
    assert {e.account for e in events} == {visitor.account}
    for event in events:
        assert event.data["protocol"] == "open-payments"
        assert event.data["incoming_payment"] == url
        assert event.data["visitor_id"] == visitor.id
    # nothing claims the money came through this receiver
    assert not [e for e in await store.outbox_list("pending") if e.type == "payment.received"]


async def test_guard_goes_402_then_200(site: Site, wallet: FakeWallet) -> None:
    visitor, cookie = site.visitor()
    facts = RequestFacts.from_pairs("GET", "/article", [("Cookie", cookie)])
    lookup = site.service.lookup(facts)
    assert lookup.visitor == visitor
    refused = await site.service.guard(lookup, 300)
    assert refused.reply is not None
    assert refused.reply.status == 402
    assert body(refused.reply)["id"] == "InsufficientBalance"

    url = wallet.create()
    wallet.receive(url, 300)
    # a guard waiting for the money is woken by the verified credit
    waiting = asyncio.create_task(site.service.guard(lookup, 300, wait=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert (await site.report(cookie, url)).status == 200
    served = await waiting
    assert served.serve
    assert served.charged == 300
    assert await site.monetizer.balance(visitor) == 0


async def test_money_arriving_after_the_report_is_found_by_polling(wallet: FakeWallet) -> None:
    site = Site(wallet, poll_initial=0.01, poll_max=0.05)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        reply = await site.report(cookie, url)
        assert body(reply)["credited"] == "0"
        assert body(reply)["watching"] is True
        wallet.receive(url, 120)  # the visitor's wallet pays after the event
        assert await site.monetizer.await_balance(visitor, 120, timeout=20) == 120
    finally:
        await site.close()


async def test_polling_stops_for_idle_visitors_and_old_payments(wallet: FakeWallet) -> None:
    now = [1000.0]
    site = Site(wallet, clock=lambda: now[0], active_window=60, poll_lifetime=100)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        assert (await site.report(cookie, url)).status == 200
        assert site.verifier.is_watched(url)
        wallet.receive(url, 10)
        now[0] += 30
        assert await site.verifier.poll(url) == 10
        now[0] += 61  # no report for longer than active_window
        wallet.receive(url, 10)
        assert await site.verifier.poll(url) == 0
        assert not site.verifier.is_watched(url)
        # a new report watches it again (and counts what arrived meanwhile) ...
        assert body(await site.report(cookie, url))["credited"] == "10"
        now[0] += 50
        assert (await site.report(cookie, url)).status == 200
        # ... but polling ends poll_lifetime after it began, even for an active visitor
        now[0] += 55
        wallet.receive(url, 5)
        assert await site.verifier.poll(url) == 0
        assert not site.verifier.is_watched(url)
        assert await site.monetizer.balance(visitor) == 20
    finally:
        await site.close()


async def test_concurrent_duplicate_reports_credit_once(site: Site, wallet: FakeWallet) -> None:
    visitor, cookie = site.visitor()
    url = wallet.create()
    wallet.receive(url, 777)
    replies = await asyncio.gather(*(site.report(cookie, url) for _ in range(12)))
    assert all(reply.status == 200 for reply in replies)
    assert sum(int(body(reply)["credited"]) for reply in replies) == 777
    assert await site.monetizer.balance(visitor) == 777


async def test_a_visitor_cannot_fill_the_poller(wallet: FakeWallet) -> None:
    site = Site(wallet, max_watches_per_visitor=2)
    try:
        visitor, cookie = site.visitor()
        answers = []
        for _ in range(3):
            url = wallet.create()
            wallet.receive(url, 10)
            answers.append(body(await site.report(cookie, url)))
        assert [a["watching"] for a in answers] == [True, True, False]
        assert [a["credited"] for a in answers] == ["10", "10", "10"]  # still verified
        assert site.verifier.watching == 2
        _other, other_cookie = site.visitor()
        url = wallet.create()
        assert body(await site.report(other_cookie, url))["watching"] is True
        assert await site.monetizer.balance(visitor) == 30
    finally:
        await site.close()


async def test_a_reporter_dying_before_its_credit_loses_nothing(
    wallet: FakeWallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = [1000.0]
    store = MemoryStore(retention=100, clock=lambda: t[0])
    site = Site(wallet, store=store, wall_clock=lambda: t[0])
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 100)
        credit_once = site.monetizer.credit_once

        async def dies(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the process died after its compare-and-set")

        monkeypatch.setattr(site.monetizer, "credit_once", dies)
        with pytest.raises(RuntimeError):
            await site.verifier.report(visitor, url)
        monkeypatch.setattr(site.monetizer, "credit_once", credit_once)
        assert await site.monetizer.balance(visitor) == 0
        # the next report finds the transition its predecessor left, and credits it once
        assert body(await site.report(cookie, url))["credited"] == "100"
        assert body(await site.report(cookie, url))["credited"] == "0"
        assert await site.monetizer.balance(visitor) == 100
        # once the store may have forgotten the credit's key, it is never re-applied
        t[0] += 200
        assert await site.verifier.poll(url) == 0
        wallet.receive(url, 1)
        assert await site.verifier.poll(url) == 1
        assert await site.monetizer.balance(visitor) == 101
    finally:
        await site.close()


_WORKER = """
import asyncio, json, sys
from ilp_receiver.monetization import Monetizer
from ilp_receiver.monetization_verifier import IncomingPaymentVerifier
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.stores.postgres import PostgresStore
from tests.test_paywall import MemoryParent

async def main(dsn, prefix, wallet, url, visitor_id, count):
    store = PostgresStore(dsn, prefix=prefix)
    monetizer = Monetizer(secret=b"site secret for visitor ids!")
    monetizer.attach(AsyncReceiver(MemoryParent().child, secret=bytes(range(32)), store=store))
    verifier = IncomingPaymentVerifier(
        monetizer, wallet, allow_private=True, allow_insecure=True
    )
    visitor = monetizer.ids.visitor(visitor_id)
    await store.balance("warm-up")  # connected
    print("ready", flush=True)
    sys.stdin.readline()  # both processes start reporting together
    results = await asyncio.gather(*(verifier.report(visitor, url) for _ in range(count)))
    await verifier.close()
    await store.close()
    print(json.dumps(sum(r.credited for r in results)))

asyncio.run(main(*sys.argv[1:6], int(sys.argv[6])))
"""


async def test_two_processes_on_postgres_credit_once(wallet: FakeWallet) -> None:
    dsn, reason = await postgres_url()
    if dsn is None:
        pytest.skip(reason)
    from ilp_receiver.stores.postgres import PostgresStore

    prefix = f"wm_{uuid.uuid4().hex[:10]}_"
    store = PostgresStore(dsn, prefix=prefix)
    site = Site(wallet, store=store)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()

        async def both() -> int:
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    _WORKER,
                    dsn,
                    prefix,
                    wallet.wallet_address,
                    url,
                    visitor.id,
                    "8",
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                for _ in range(2)
            ]
            for proc in procs:
                assert proc.stdout is not None
                assert await proc.stdout.readline() == b"ready\n"
            outs = await asyncio.gather(*(proc.communicate(b"go\n") for proc in procs))
            assert all(proc.returncode == 0 for proc in procs)
            return sum(json.loads(out) for out, _err in outs)

        wallet.receive(url, 500)
        assert await both() == 500
        assert await site.monetizer.balance(visitor) == 500
        # this process sees the same counter: only growth counts
        assert body(await site.report(cookie, url))["credited"] == "0"
        wallet.receive(url, 300)
        assert body(await site.report(cookie, url))["credited"] == "300"
        assert await site.monetizer.balance(visitor) == 800
    finally:
        await site.close()
        await store.close()
        await _cleanup_postgres(dsn, prefix)


# ---------------------------------------------------------------------------------------
# Bad input: each refused with a JSON error, nothing credited


async def assert_refused(
    site: Site, reply: HttpReply, status: int, error_id: str, *visitors: Visitor
) -> None:
    assert reply.status == status, reply.body
    assert body(reply)["id"] == error_id
    assert body(reply)["message"]
    for visitor in visitors:
        assert await site.monetizer.balance(visitor) == 0


async def test_url_outside_the_wallet_is_refused(site: Site, wallet: FakeWallet) -> None:
    visitor, cookie = site.visitor()
    real = wallet.create()
    wallet.receive(real, 100)
    await site.verifier.wallet()  # the wallet address document, read once
    port = wallet.base.rsplit(":", 1)[1]
    for url in (
        f"http://localhost:{port}/incoming-payments/{real.rsplit('/', 1)[1]}",
        f"{wallet.base}/outgoing-payments/{real.rsplit('/', 1)[1]}",
        f"http://127.0.0.1:{int(port) + 1}/incoming-payments/x",
        f"{real}?x=1",
        "https://evil.example/incoming-payments/1",
    ):
        before = list(wallet.requests)
        reply = await site.report(cookie, url)
        await assert_refused(site, reply, 400, "NotOurWallet", visitor)
        assert wallet.requests == before  # refused before any fetch
    # a paymentPointer that is not the site's wallet
    reply = await site.report(cookie, real, paymentPointer=f"{wallet.base}/other")
    await assert_refused(site, reply, 400, "NotOurWallet", visitor)


async def test_unreachable_wallet_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake = FakeWallet()
    fake.base = f"http://127.0.0.1:{port}"  # nobody listens there
    site = Site(fake, timeout=2)
    try:
        visitor, cookie = site.visitor()
        reply = await site.report(cookie, f"{fake.base}/incoming-payments/x")
        await assert_refused(site, reply, 502, "WalletUnreachable", visitor)
    finally:
        await site.close()


@pytest.mark.parametrize(
    ("mode", "status", "error_id"),
    [
        ("garbage", 502, "WalletBadResponse"),
        ("huge", 502, "WalletBadResponse"),
        ("slow", 504, "WalletUnreachable"),
    ],
)
async def test_wallet_answering_garbage_huge_or_never_is_refused(
    wallet: FakeWallet, mode: str, status: int, error_id: str
) -> None:
    site = Site(wallet, timeout=1.0, max_bytes=8192)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 100)
        wallet.modes[url] = mode
        reply = await site.report(cookie, url)
        await assert_refused(site, reply, status, error_id, visitor)
    finally:
        await site.close()


async def test_wallet_address_document_garbage_is_refused(wallet: FakeWallet) -> None:
    site = Site(wallet)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 100)
        wallet.wallet_override = {"id": wallet.wallet_address, "assetCode": "USD"}
        reply = await site.report(cookie, url)
        await assert_refused(site, reply, 502, "WalletBadResponse", visitor)
    finally:
        await site.close()


async def test_private_addresses_are_refused_by_default(wallet: FakeWallet) -> None:
    site = Site(wallet, allow_private=False)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 100)
        reply = await site.report(cookie, url)
        await assert_refused(site, reply, 400, "PrivateAddress", visitor)
        assert wallet.requests == []  # not even the wallet address was fetched
    finally:
        await site.close()
    # names are checked on what they resolve to, at connection time
    fetcher = OpenPaymentsFetcher(allow_insecure=True)
    try:
        for host in ("localhost", socket.gethostname()):
            try:
                addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
            except OSError:
                continue
            if any(is_public_address(address) for address in addresses):
                continue
            with pytest.raises(OpenPaymentsError) as info:
                await fetcher.get_json(f"http://{host}:{wallet.base.rsplit(':', 1)[1]}/site")
            assert info.value.error_id == "PrivateAddress"
        assert wallet.requests == []
    finally:
        await fetcher.close()


async def test_replayed_report_from_another_visitor_is_refused(
    site: Site, wallet: FakeWallet
) -> None:
    owner, owner_cookie = site.visitor()
    thief, thief_cookie = site.visitor()
    url = wallet.create()
    wallet.receive(url, 100)
    assert (await site.report(owner_cookie, url)).status == 200
    wallet.receive(url, 100)
    reply = await site.report(thief_cookie, url)
    await assert_refused(site, reply, 409, "IncomingPaymentClaimed", thief)
    assert await site.monetizer.balance(owner) == 100  # the growth is still the owner's
    assert body(await site.report(owner_cookie, url))["credited"] == "100"


async def test_a_visitor_reporting_too_often_is_refused(wallet: FakeWallet) -> None:
    now = [0.0]
    site = Site(wallet, reports_per_minute=3, clock=lambda: now[0])
    try:
        visitor, cookie = site.visitor()
        _other, other_cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 7)
        assert [(await site.report(cookie, url)).status for _ in range(3)] == [200] * 3
        wallet.receive(url, 7)
        reply = await site.report(cookie, url)
        assert (reply.status, body(reply)["id"]) == (429, "TooManyReports")
        assert await site.monetizer.balance(visitor) == 7  # the refused report counted nothing
        assert (await site.report(other_cookie, wallet.create())).status == 200  # per visitor
        now[0] += 20  # one report's worth of budget back
        assert body(await site.report(cookie, url))["credited"] == "7"
    finally:
        await site.close()


async def test_made_up_urls_leave_nothing_in_the_store(site: Site, wallet: FakeWallet) -> None:
    _visitor, cookie = site.visitor()
    for _ in range(5):
        reply = await site.report(cookie, f"{wallet.base}/incoming-payments/{uuid.uuid4()}")
        assert (reply.status, body(reply)["id"]) == (404, "UnknownIncomingPayment")
    assert await site.monetizer.store.balances("wm-op:") == {}


async def test_asset_mismatch_is_refused_not_converted(wallet: FakeWallet) -> None:
    site = Site(wallet)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create(asset_code="EUR")
        wallet.receive(url, 100)
        reply = await site.report(cookie, url)
        await assert_refused(site, reply, 409, "AssetMismatch", visitor)
    finally:
        await site.close()
    configured = Site(wallet, asset_code="EUR", asset_scale=2)
    try:
        visitor, cookie = configured.visitor()
        url = wallet.create()
        wallet.receive(url, 100)
        reply = await configured.report(cookie, url)
        await assert_refused(configured, reply, 502, "AssetMismatch", visitor)
    finally:
        await configured.close()


async def test_bad_reports_are_refused(site: Site, wallet: FakeWallet) -> None:
    visitor, cookie = site.visitor()
    url = wallet.create()
    wallet.receive(url, 100)
    cases: list[tuple[HttpReply, int, str]] = [
        (await site.post(cookie, b"\xff{not json"), 400, "InvalidReport"),
        (await site.post(cookie, b"[1, 2]"), 400, "InvalidReport"),
        (await site.post(cookie, {"incomingPayment": 42}), 400, "InvalidReport"),
        (await site.post(cookie, b"[" * 3000 + b"]" * 3000), 413, "ReportTooLarge"),
        (await site.post(cookie, b" " * (MAX_REPORT_BYTES + 10)), 413, "ReportTooLarge"),
        (
            await site.post(cookie, {"incomingPayment": url}, content_type="text/plain"),
            415,
            "UnsupportedMediaType",
        ),
        (await site.post(None, {"incomingPayment": url}), 400, "NoVisitor"),
        (await site.post(cookie[:-2] + "xx", {"incomingPayment": url}), 400, "InvalidVisitorId"),
    ]
    for reply, status, error_id in cases:
        await assert_refused(site, reply, status, error_id, visitor)
    deep = b'{"incomingPayment": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    await assert_refused(site, await site.post(cookie, deep), 400, "InvalidReport", visitor)
    assert wallet.requests == []


# ---------------------------------------------------------------------------------------
# The fake cannot drift from the real shapes


def _oracle() -> Path:
    """``tests/openapi`` with its packages installed (``installed_js_packages``)."""
    return installed_js_packages()


def validate(served: list[Served]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {
            "kind": s.kind,
            "spec": s.spec,
            "path": s.path,
            "method": s.method,
            "status": s.status,
            "body": s.body,
        }
        for s in served
    ]
    return run_oracle(items)


def run_oracle(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    oracle = _oracle()
    done = subprocess.run(
        ["node", str(oracle / "validate.cjs")],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


async def test_the_fake_wallet_answers_validate_against_the_open_payments_openapi(
    site: Site, wallet: FakeWallet
) -> None:
    import aiohttp

    _visitor, cookie = site.visitor()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{wallet.base}/incoming-payments",
            json={
                "walletAddress": wallet.wallet_address,
                "metadata": {"source": "Web Monetization"},
            },
        ) as created,
    ):
        assert created.status == 201
        url = (await created.json())["id"]
    wallet.receive(url, 5)
    assert (await site.report(cookie, url)).status == 200
    await site.report(cookie, f"{wallet.base}/incoming-payments/{uuid.uuid4()}")
    served = list(wallet.served)
    kinds = {(s.path, s.method, s.status) for s in served}
    assert kinds == {
        ("/", "get", 200),
        ("/incoming-payments", "post", 201),
        ("/incoming-payments/{id}", "get", 200),
        ("/incoming-payments/{id}", "get", 404),
    }
    results = validate(served)
    assert all(result["ok"] for result in results), results
    # ... and the validator does fail what the real client would refuse
    wrong = [
        Served(
            "resource-server.yaml",
            "/incoming-payments/{id}",
            "get",
            200,
            {"receivedAmount": {"value": 5, "assetCode": "USD", "assetScale": 2}},
        ),
        Served(
            "wallet-address-server.yaml",
            "/",
            "get",
            200,
            {"id": wallet.wallet_address, "assetCode": "USD"},
        ),
    ]
    assert [result["ok"] for result in validate(wrong)] == [False, False]


def test_the_oracle_comes_from_its_lock_file_and_is_not_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "tests/openapi/node_modules/x"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0
    assert (ORACLE / "package-lock.json").exists()
    assert os.access(ORACLE / "validate.cjs", os.R_OK)


def test_the_docs_header_example_runs(tmp_path: Path) -> None:
    """The Python block of docs/web-monetization.md's section on today's era, as written."""
    text = (ROOT / "docs" / "web-monetization.md").read_text()
    section = text[text.index("## Today") : text.index("## The 2018")]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# The authenticated read (GNAP read-all, signed requests)


def signature_items(key: GnapSigningKey, signed: list[SignedRequest]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "signature",
            "jwk": key.jwk(),
            "request": {
                "method": r.method,
                "url": r.url,
                "headers": r.headers,
                **({"body": r.body} if r.body else {}),
            },
        }
        for r in signed
    ]


async def test_gnap_reads_are_signed_as_rafiki_verifies_them(wallet: FakeWallet) -> None:
    key = GnapSigningKey.generate("site-key-1")
    site = Site(wallet, gnap_key=key)
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 40)
        reply = await site.report(cookie, url)
        assert body(reply)["credited"] == "40", reply.body
        wallet.receive(url, 2)
        assert await site.verifier.poll(url) == 2  # the same token, still signed
        assert [r.method for r in wallet.signed] == ["POST", "GET", "GET"]
        grant = json.loads(wallet.signed[0].body or "")
        assert grant == {
            "access_token": {
                "access": [
                    {
                        "type": "incoming-payment",
                        "actions": ["read-all"],
                        "identifier": wallet.wallet_address,
                    }
                ]
            },
            "client": wallet.wallet_address,
        }
        assert wallet.signed[1].headers["authorization"].startswith("GNAP ")
        # Rafiki's own verifier accepts every request, and the shapes are the spec's
        shapes = [
            {
                "kind": s.kind,
                "spec": s.spec,
                "path": s.path,
                "method": s.method,
                "status": s.status,
                "body": s.body,
            }
            for s in wallet.served
        ]
        results = run_oracle(signature_items(key, wallet.signed) + shapes)
        assert all(result["ok"] for result in results), results
        # ... and refuses a request changed after signing, or signed by another key
        moved = SignedRequest(**{**vars(wallet.signed[1]), "url": url + "x"})
        other = GnapSigningKey.generate("site-key-1")
        refused = run_oracle(
            signature_items(key, [moved]) + signature_items(other, wallet.signed[:1])
        )
        assert [result["ok"] for result in refused] == [False, False]
        assert await site.monetizer.balance(visitor) == 42
    finally:
        await site.close()


async def test_gnap_mode_refuses_what_the_public_read_cannot_tell(wallet: FakeWallet) -> None:
    """An incoming payment of *another* wallet address on the same resource server."""
    elsewhere = wallet.create(wallet_address=f"{wallet.base}/other")
    wallet.receive(elsewhere, 100)
    public = Site(wallet)
    try:
        visitor, cookie = public.visitor()
        # the public shape has no walletAddress: the public read cannot tell
        assert body(await public.report(cookie, elsewhere))["credited"] == "100"
    finally:
        await public.close()
    second = wallet.create(wallet_address=f"{wallet.base}/other")
    wallet.receive(second, 100)
    authenticated = Site(wallet, gnap_key=GnapSigningKey.generate("k"))
    try:
        visitor, cookie = authenticated.visitor()
        reply = await authenticated.report(cookie, second)
        await assert_refused(authenticated, reply, 400, "NotOurWallet", visitor)
    finally:
        await authenticated.close()


async def test_gnap_token_refused_then_granted_again_and_completion_stops_polling(
    wallet: FakeWallet,
) -> None:
    site = Site(wallet, gnap_key=GnapSigningKey.generate("k"))
    try:
        visitor, cookie = site.visitor()
        url = wallet.create()
        wallet.receive(url, 10)
        assert body(await site.report(cookie, url))["credited"] == "10"
        wallet.tokens.clear()  # the AS revoked the token
        wallet.receive(url, 5)
        assert await site.verifier.poll(url) == 5
        assert [r.method for r in wallet.signed] == ["POST", "GET", "GET", "POST", "GET"]
        wallet.complete(url)
        assert await site.verifier.poll(url) == 0
        assert not site.verifier.is_watched(url)
        assert await site.monetizer.balance(visitor) == 15
    finally:
        await site.close()


def test_gnap_key_settings(tmp_path: Path) -> None:
    from ilp_receiver.errors import ConfigError
    from ilp_receiver.monetization_verifier import verifier_from_settings

    monetizer = Monetizer(secret=SITE_SECRET)
    key = GnapSigningKey.generate("kid-9")
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_pem())
    verifier = verifier_from_settings(
        monetizer,
        {
            "WALLET_ADDRESS": "https://wallet.example/site",
            "GNAP_KEY": str(pem),
            "GNAP_KEY_ID": "kid-9",
        },
    )
    assert verifier is not None
    assert verifier.gnap is not None
    assert verifier.gnap.key.jwk() == key.jwk()
    with pytest.raises(ConfigError, match="GNAP_KEY_ID"):
        verifier_from_settings(
            monetizer, {"WALLET_ADDRESS": "https://wallet.example/site", "GNAP_KEY": str(pem)}
        )
    with pytest.raises(ConfigError, match="WALLET_ADDRESS"):
        verifier_from_settings(monetizer, {"WALLET_ADDRESS": "http://wallet.example:99/x"})
