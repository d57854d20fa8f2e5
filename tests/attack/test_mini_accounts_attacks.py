"""Attack report items 1 and 6 against a real connector on loopback: route takeover by a
dotted mini-accounts username, and unlimited mini-accounts registration.

Every test runs an in-process :class:`Connector` listening on real TCP ports (``listen =
"0"``) and drives it with real BTP/2.0 WebSocket clients.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ilp_receiver.codec.btp import BtpError, BtpResponse, auth_message, decode_btp, encode_btp
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReply
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.connector.config import ConnectorConfig
from ilp_receiver.errors import AuthenticationError
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.links.uplink import fetch_peer_config

pytestmark = pytest.mark.attack

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
#: the victim receiver's id, public in its SPSP answer
VICTIM_ID = "Z1YDQQ58R0E"


def prepare(destination: str, amount: int = 1000) -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=10)
    return IlpPrepare(amount, expires, CONDITION, destination, b"")


def make_config(tmp_path: Path, kids: dict[str, Any] | None = None) -> ConnectorConfig:
    """``test.mynode`` with a mini-accounts section ``kids``, a fixed BTP account
    ``sender``, an HTTP account ``web`` and static routes owned by them."""
    return config_from_mapping(
        {
            "connector": {
                "address": "test.mynode",
                "store": "memory:",
                "token_file": str(tmp_path / "tokens.json"),
            },
            "accounts": {
                "kids": {
                    "relation": "child",
                    "transport": "mini-accounts",
                    "listen": "0",
                    **(kids or {}),
                },
                "sender": {
                    "relation": "child",
                    "transport": "btp-server",
                    "token": "s-tok",
                    "listen": "0",
                    "path": "/sender",
                },
                "web": {
                    "relation": "child",
                    "transport": "http",
                    "url": "http://127.0.0.1:9/",
                    "token": "h-tok",
                    "listen": "0",
                    "path": "/web/",
                },
            },
            "routes": [
                {"prefix": "test.mynode.vault.inner", "account": "sender"},
                {"prefix": "test.mynode.depot", "account": "web"},
            ],
        },
        env={},
    )


def btp_url(connector: Connector, account: str, user: str, token: str) -> str:
    return "btp+" + connector.listeners[account].replace("ws://", f"ws://{user}:{token}@")


async def login(http: aiohttp.ClientSession, url: str, username: str, token: str) -> bool:
    """One raw BTP auth exchange; whether the server accepted it."""
    async with http.ws_connect(url) as ws:
        await ws.send_bytes(encode_btp(auth_message(1, token, username)))
        msg = await ws.receive(timeout=5)
        if msg.type is not aiohttp.WSMsgType.BINARY:
            return False
        frame = decode_btp(msg.data)
        assert isinstance(frame, BtpResponse | BtpError)
        return isinstance(frame, BtpResponse)


def token_file_names(path: Path) -> set[str]:
    """The account names a token file holds (whatever its format)."""
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    names: set[str] = set()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "format" not in data:
        return set(data)
    for line in text.splitlines():
        record = json.loads(line)
        if record.get("op") == "add":
            names.add(record["account"])
        elif record.get("op") == "del":
            names.discard(record["account"])
    return names


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ------------------------------------------------------------------ item 1


async def test_dotted_username_cannot_take_over_a_receivers_route(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    received: list[str] = []

    async def victim_handler(p: IlpPrepare) -> IlpReply:
        received.append(p.destination)
        return IlpFulfill(FULFILLMENT)

    async with Connector(make_config(tmp_path)) as c:
        victim = BtpClientLink(btp_url(c, "kids", "shop", "shop-secret"))
        victim.set_handler(victim_handler)
        sender = BtpClientLink(btp_url(c, "sender", "", "s-tok"))
        await victim.start()
        await sender.start()
        try:
            assert (await fetch_peer_config(victim)).address == "test.mynode.shop"
            url = c.listeners["kids"]
            refused = [
                f"shop.{VICTIM_ID}",  # the reported takeover
                "sender.abc",  # under a configured btp-server account
                "web.x.y",  # under a configured http account
                "sender",  # a configured account id
                "web",
                "kids",  # the mini-accounts template itself
                "vault",  # would cover the static route test.mynode.vault.inner
                "depot",  # would equal the static route test.mynode.depot
                ".shop",
                "shop.",
                "a b",
                "sh\u00f6p",
                "x" * 65,  # over the length limit
            ]
            for name in refused:
                assert not await login(http, url, name, "attacker-token"), name
            # a client library refuses them as well (the attack used one)
            attacker = BtpClientLink(btp_url(c, "kids", f"shop.{VICTIM_ID}", "any"))
            with pytest.raises(AuthenticationError):
                await attacker.start()
            await attacker.stop()

            assert c.broadcaster is not None
            routes = c.broadcaster.local_routing_table
            for prefix in routes:
                assert prefix.count(".") <= 2 or prefix == "test.mynode.vault.inner", prefix
            assert routes.get("test.mynode.depot") is not None
            assert c.broadcaster.next_hop("test.mynode.depot.x") == "web"
            assert c.broadcaster.next_hop("test.mynode.vault.inner.x") == "sender"
            assert c.broadcaster.next_hop(f"test.mynode.shop.{VICTIM_ID}") == "shop"
            assert c.broadcaster.next_hop("test.mynode.sender.abc") == "sender"
            assert c.broadcaster.next_hop("test.mynode.web.x.y") == "web"
            assert token_file_names(tmp_path / "tokens.json") == {"shop"}

            # the victim is still paid after the attempts
            reply = await sender.send(prepare(f"test.mynode.shop.{VICTIM_ID}"))
            assert isinstance(reply, IlpFulfill)
            assert received == [f"test.mynode.shop.{VICTIM_ID}"]
        finally:
            await victim.stop()
            await sender.stop()


async def test_a_takeover_left_in_an_old_token_file_is_dropped_on_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The report: "the name stays in tokens.json".  A file written by the vulnerable
    version (plain JSON object) must not give the attacker the name back."""
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"shop": "x" * 43, f"shop.{VICTIM_ID}": "y" * 43, "sender.abc": "z" * 43})
    )
    async with Connector(make_config(tmp_path)) as c:
        assert token_file_names(path) == {"shop"}
        # the attacker's first token no longer matters: the name is refused outright
        assert not await login(http, c.listeners["kids"], f"shop.{VICTIM_ID}", "any")
        assert c.broadcaster is not None
        assert f"test.mynode.shop.{VICTIM_ID}" not in c.broadcaster.local_routing_table
        assert c.broadcaster.next_hop(f"test.mynode.shop.{VICTIM_ID}") == ""  # ourselves


# ------------------------------------------------------------------ item 6


async def test_default_registration_rate_limit_stops_a_flood(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The report: 3000 accounts in 26 s with no credential.  With the default limits
    (1 registration/s, burst 10) a quick flood of 40 gets the burst plus one per second
    through (the bound leaves room for a slow machine)."""
    async with Connector(make_config(tmp_path)) as c:
        url = c.listeners["kids"]
        started = time.monotonic()
        accepted = [await login(http, url, f"flood{i}", "t") for i in range(40)]
        assert 10 <= sum(accepted) <= 10 + int(time.monotonic() - started) + 1
        assert len(token_file_names(tmp_path / "tokens.json")) == sum(accepted)
        # a registered account still logs in while new registrations are limited
        assert await login(http, url, "flood0", "t")


async def test_configured_rate_limit_and_burst(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    kids = {"registration_rate": 0.001, "registration_burst": 3}
    async with Connector(make_config(tmp_path, kids)) as c:
        url = c.listeners["kids"]
        assert [await login(http, url, f"n{i}", "t") for i in range(5)] == [True] * 3 + [False] * 2
        assert await login(http, url, "n1", "t")  # re-login is not a registration


async def test_registration_cap_holds_and_the_token_file_stays_bounded(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    kids = {"max_accounts": 20, "registration_rate": 10000.0, "registration_burst": 10000}
    path = tmp_path / "tokens.json"
    async with Connector(make_config(tmp_path, kids)) as c:
        url = c.listeners["kids"]
        accepted = [await login(http, url, f"acct{i}", "t") for i in range(60)]
        assert accepted == [True] * 20 + [False] * 40
        assert len(token_file_names(path)) == 20
        # reconnect churn of the registered accounts does not grow the file unboundedly
        for _ in range(5):
            for i in range(20):
                assert await login(http, url, f"acct{i}", "t")
        assert path.stat().st_size < 20 * 2 * 200 + 256 * 200
        assert len(c.accounts) <= 20 + 2


async def test_registration_time_does_not_grow_with_the_number_of_accounts(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The report: registration latency 27 ms -> 300 ms as accounts piled up.  Loose
    bound, no absolute timing: the median of registrations 491-510 is less than 5x the
    median of registrations 1-20 (both include a full WebSocket handshake).

    Measured on the vulnerable version the ratio at 500 accounts was about 3.7x (15x at
    3000), so this bound alone does not catch it at 500 (that version fails here on the
    limits it lacked); the token-file test below is the one that reproduces the growth
    deterministically.  What still grows after the fix is the routing table reload per
    new child (``RouteBroadcaster.add_account``), bounded by ``max_accounts``."""
    kids = {"max_accounts": 2000, "registration_rate": 10000.0, "registration_burst": 10000}
    async with Connector(make_config(tmp_path, kids)) as c:
        url = c.listeners["kids"]
        times: list[float] = []
        for i in range(510):
            started = time.perf_counter()
            assert await login(http, url, f"user{i}", "t")
            times.append(time.perf_counter() - started)
        early = statistics.median(times[:20])
        late = statistics.median(times[490:])
        assert late < 5 * early, (early, late)


async def test_registration_time_does_not_grow_with_the_token_file(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The token-file part of the latency growth: the vulnerable version rewrote the
    whole file on every registration.  With 20,000 registrations left in the file by
    an earlier flood, a registration must cost about what it costs with an empty file
    (loose bound: the median of 8 is less than 5x; default limits, burst 10)."""

    async def median_registration(tag: str) -> float:
        async with Connector(make_config(tmp_path)) as c:
            times = []
            for i in range(8):
                started = time.perf_counter()
                assert await login(http, c.listeners["kids"], f"{tag}{i}", "t")
                times.append(time.perf_counter() - started)
        return statistics.median(times)

    empty = await median_registration("first")
    old = {f"flooded{i}": hashlib.sha256(b"%d" % i).hexdigest()[:43] for i in range(20000)}
    (tmp_path / "tokens.json").write_text(json.dumps(old))
    full = await median_registration("later")
    assert full < 5 * empty, (empty, full)


async def test_abandoned_registrations_expire_but_never_with_a_balance(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    offset = timedelta()

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    kids = {
        "max_accounts": 3,
        "registration_rate": 10000.0,
        "registration_burst": 10000,
        "registration_expiry_days": 30,
    }
    path = tmp_path / "tokens.json"
    async with Connector(make_config(tmp_path, kids), clock=clock) as c:
        url = c.listeners["kids"]
        assert await login(http, url, "old", "old-token")  # registers, then leaves
        rich = BtpClientLink(btp_url(c, "kids", "rich", "rich-token"))
        rich.set_handler(_fulfill)
        live = BtpClientLink(btp_url(c, "kids", "live", "live-token"))
        sender = BtpClientLink(btp_url(c, "sender", "", "s-tok"))
        for link in (rich, live, sender):
            await link.start()
        try:
            assert isinstance(await sender.send(prepare("test.mynode.rich")), IlpFulfill)
            assert c.ledger.balance("rich") == -1000
            await rich.stop()
            assert not await login(http, url, "new", "t")  # at the cap, nothing expired

            offset = timedelta(days=29)
            assert not await login(http, url, "new", "t")  # not abandoned long enough

            offset = timedelta(days=31)
            assert await login(http, url, "new", "t")  # "old" expired to make room
            assert token_file_names(path) == {"rich", "live", "new"}
            assert "old" not in c.accounts
            assert c.broadcaster is not None
            assert "test.mynode.old" not in c.broadcaster.local_routing_table
            assert c.broadcaster.next_hop("test.mynode.new") == "new"
            # the balance keeps "rich" (and its first token), the connection keeps "live"
            assert not await login(http, url, "rich", "other-token")
            assert live.is_connected
        finally:
            await live.stop()
            await sender.stop()


async def _fulfill(p: IlpPrepare) -> IlpReply:
    return IlpFulfill(FULFILLMENT)
