"""The bundled connector on loopback: BTP server auth, mini-accounts, HTTP, admin API,
SQLite restart, CCP between two connectors and IL-DCP from a parent."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ilp_receiver.codec.btp import BtpError, BtpMessage, ProtocolData, decode_btp, encode_btp
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply, decode_reply
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.connector.accounts import token_digest
from ilp_receiver.errors import AuthenticationError
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.links.uplink import fetch_peer_config

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def prepare(destination: str, amount: int = 1000) -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=10)
    return IlpPrepare(amount, expires, CONDITION, destination, b"")


async def fulfill_all(p: IlpPrepare) -> IlpReply:
    return IlpFulfill(FULFILLMENT)


def config(accounts: dict[str, Any], **extra: Any) -> Any:
    connector = {"address": "test.conn", "store": "memory:", **extra.pop("connector", {})}
    return config_from_mapping({"connector": connector, "accounts": accounts, **extra}, env={})


def btp_url(connector: Connector, account: str, user: str, token: str) -> str:
    ws = connector.listeners[account]
    return "btp+" + ws.replace("ws://", f"ws://{user}:{token}@")


CHILDREN = {
    "sender": {
        "relation": "child",
        "transport": "btp-server",
        "token": "s-tok",
        "listen": "0",
        "path": "/sender",
    },
    "kids": {"relation": "child", "transport": "mini-accounts", "listen": "0"},
}


async def test_payment_over_btp_between_a_fixed_account_and_a_mini_account() -> None:
    async with Connector(config(CHILDREN)) as c:
        sender = BtpClientLink(btp_url(c, "sender", "", "s-tok"))
        bob = BtpClientLink(btp_url(c, "kids", "bob", "b-tok"))
        bob.set_handler(fulfill_all)
        await sender.start()
        await bob.start()
        try:
            info = await fetch_peer_config(bob)
            assert info.address == "test.conn.bob"
            assert (await fetch_peer_config(sender)).address == "test.conn.sender"
            reply = await sender.send(prepare("test.conn.bob.x"))
            assert isinstance(reply, IlpFulfill)
            assert c.ledger.balance("sender") == 1000
            assert c.ledger.balance("bob") == -1000
        finally:
            await sender.stop()
            await bob.stop()


async def test_mini_accounts_keep_the_first_token() -> None:
    async with Connector(config(CHILDREN)) as c:
        first = BtpClientLink(btp_url(c, "kids", "alice", "one"))
        await first.start()
        await first.stop()
        again = BtpClientLink(btp_url(c, "kids", "alice", "one"))
        await again.start()
        await again.stop()
        other = BtpClientLink(btp_url(c, "kids", "alice", "two"))
        with pytest.raises(AuthenticationError):
            await other.start()
        # a configured account's name cannot be claimed through mini-accounts
        squatter = BtpClientLink(btp_url(c, "kids", "sender", "x"))
        with pytest.raises(AuthenticationError):
            await squatter.start()
        # empty username: the account is base64url(sha256(token))
        anon = BtpClientLink(btp_url(c, "kids", "", "bearer"))
        await anon.start()
        try:
            info = await fetch_peer_config(anon)
            assert info.address == f"test.conn.{token_digest('bearer')}"
        finally:
            await anon.stop()


async def test_fixed_account_refuses_a_wrong_token() -> None:
    async with Connector(config(CHILDREN)) as c:
        link = BtpClientLink(btp_url(c, "sender", "", "wrong"))
        with pytest.raises(AuthenticationError):
            await link.start()


async def test_unauthenticated_btp_client_gets_an_error_and_is_closed() -> None:
    async with Connector(config(CHILDREN)) as c, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(c.listeners["sender"])
        not_auth = BtpMessage(7, (ProtocolData("ilp", 0, b"\x0c\x00"),))
        await ws.send_bytes(encode_btp(not_auth))
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.BINARY
        frame = decode_btp(msg.data)
        assert isinstance(frame, BtpError)
        assert frame.request_id == 7
        assert frame.code == "F00"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


HTTP_ACCOUNTS = {
    "web": {
        "relation": "child",
        "transport": "http",
        "url": "http://127.0.0.1:9/",
        "token": "h-tok",
        "listen": "0",
        "path": "/ilp/web/",
    },
}


async def test_http_account_answers_malformed_packets_with_f01() -> None:
    async with Connector(config(HTTP_ACCOUNTS)) as c, aiohttp.ClientSession() as http:
        url = c.listeners["web"]
        headers = {"Authorization": "Bearer h-tok"}
        async with http.post(url, data=b"\x0c\x05nope!", headers=headers) as response:
            assert response.status == 200
            reply = decode_reply(await response.read())
        assert isinstance(reply, IlpReject)
        assert reply.code == "F01"
        async with http.post(url, data=b"\x0c\x00", headers={"Authorization": "x"}) as response:
            assert response.status == 401


ADMIN = {"port": 0, "token": "admin-secret"}


async def test_admin_api_requires_the_token() -> None:
    async with Connector(config(CHILDREN, admin=ADMIN)) as c, aiohttp.ClientSession() as http:
        base = c.admin_url
        assert base is not None
        assert base.startswith("http://127.0.0.1:")
        for path in ("status", "accounts", "balances", "routes", "metrics"):
            async with http.get(base + path, headers={"Authorization": "Bearer admin-secret"}) as r:
                assert r.status == 200, path
                body = await r.text()
                assert "admin-secret" not in body and "s-tok" not in body
        async with http.get(base + "routes", headers={"Authorization": "Bearer admin-secret"}) as r:
            routes = await r.json()
        assert routes["test.conn.sender"]["next_hop"] == "sender"
        # 10 failures: just within the failure limit (the 11th would be 429)
        for path in ("status", "accounts", "balances", "routes", "metrics"):
            async with http.get(base + path) as r:
                assert r.status == 401, path
            async with http.get(base + path, headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401, path


async def test_public_metrics_only_when_configured() -> None:
    admin = {**ADMIN, "metrics_public": True}
    async with Connector(config(CHILDREN, admin=admin)) as c, aiohttp.ClientSession() as http:
        assert c.admin_url is not None
        async with http.get(c.admin_url + "metrics") as r:
            assert r.status == 200
            assert "ilp_connector_packets_total" in await r.text()
        async with http.get(c.admin_url + "status") as r:
            assert r.status == 401


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, read by the reference parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_packets_and_amounts_per_account() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    accounts = {
        "alice": {"relation": "child", "transport": "local"},
        "bob": {"relation": "child", "transport": "local"},
    }
    async with (
        Connector(config(accounts, admin=ADMIN)) as c,
        aiohttp.ClientSession(headers={"Authorization": "Bearer admin-secret"}) as http,
    ):
        assert c.admin_url is not None
        metrics_url = c.admin_url + "metrics"
        alice, bob = c.local_link("alice"), c.local_link("bob")
        bob.set_handler(fulfill_all)
        await alice.start()
        await bob.start()

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            async with http.get(metrics_url) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                return _samples(await r.text())

        def key(name: str, account: str, result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
            labels = {"account": account, "asset": "XYZ", "scale": "9", "result": result}
            return name, tuple(sorted(labels.items()))

        incoming = "ilp_connector_incoming_ilp_packets_total"
        incoming_value = "ilp_connector_incoming_ilp_packet_value_total"
        outgoing = "ilp_connector_outgoing_ilp_packets_total"
        outgoing_value = "ilp_connector_outgoing_ilp_packet_value_total"
        before = await scrape()
        assert key(incoming, "alice", "fulfilled") not in before
        try:
            assert isinstance(await alice.send(prepare("test.conn.bob", 700)), IlpFulfill)
            assert isinstance(await alice.send(prepare("test.conn.bob", 300)), IlpFulfill)
            assert isinstance(await alice.send(prepare("test.conn.nowhere", 5)), IlpReject)
            after = await scrape()
        finally:
            await alice.stop()
            await bob.stop()
        assert after[key(incoming, "alice", "fulfilled")] == 2
        assert after[key(incoming_value, "alice", "fulfilled")] == 1000
        assert after[key(incoming, "alice", "rejected")] == 1
        assert after[key(incoming_value, "alice", "rejected")] == 5
        assert after[key(outgoing, "bob", "fulfilled")] == 2
        assert after[key(outgoing_value, "bob", "fulfilled")] == 1000
        assert after[("ilp_connector_balance", (("account", "alice"),))] == 1000
        # the process metrics and build info client libraries export
        for name in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ):
            assert any(sample == name for sample, _ in after), name
        assert any(name == "ilp_connector_build_info" for name, _ in after)
        # counters are typed counter, and their names end in _total
        async with http.get(metrics_url) as r:
            families = list(text_string_to_metric_families(await r.text()))
        for family in families:
            if family.type == "counter":
                assert all(s.name.endswith("_total") for s in family.samples), family.name


async def test_restart_keeps_balances_in_sqlite(tmp_path: Path) -> None:
    store = str(tmp_path / "conn.sqlite3")
    accounts = {
        "alice": {"relation": "child", "transport": "local"},
        "bob": {"relation": "child", "transport": "local"},
    }
    for expected in (1000, 2000):
        c = Connector(config(accounts, connector={"store": store}))
        await c.start()
        try:
            alice, bob = c.local_link("alice"), c.local_link("bob")
            bob.set_handler(fulfill_all)
            await alice.start()
            await bob.start()
            assert isinstance(await alice.send(prepare("test.conn.bob")), IlpFulfill)
            assert c.ledger.balance("alice") == expected
        finally:
            await c.stop()
    c = Connector(config(accounts, connector={"store": store}))
    await c.start()
    try:
        assert c.ledger.balance("alice") == 2000
        assert c.ledger.balance("bob") == -2000
    finally:
        await c.stop()


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_two_connectors_exchange_routes_and_forward() -> None:
    a_cfg = config(
        {
            "b": {"relation": "peer", "transport": "btp-server", "token": "ab", "listen": "0"},
            "alice": {"relation": "child", "transport": "local"},
        },
        connector={"address": "test.a"},
    )
    async with Connector(a_cfg) as a:
        b_cfg = config(
            {
                "a": {
                    "relation": "peer",
                    "transport": "btp-client",
                    "url": btp_url(a, "b", "", "ab"),
                },
                "bob": {"relation": "child", "transport": "local"},
            },
            connector={"address": "test.b"},
        )
        async with Connector(b_cfg) as b:
            alice, bob = a.local_link("alice"), b.local_link("bob")
            bob.set_handler(fulfill_all)
            await alice.start()
            await bob.start()
            assert a.broadcaster is not None and b.broadcaster is not None
            await wait_for(lambda: a.broadcaster.next_hop("test.b.bob.x") == "b")
            await wait_for(lambda: b.broadcaster.next_hop("test.a.alice") == "a")
            reply = await alice.send(prepare("test.b.bob.x"))
            assert isinstance(reply, IlpFulfill)
            assert a.ledger.balance("alice") == 1000 and a.ledger.balance("b") == -1000
            assert b.ledger.balance("a") == 1000 and b.ledger.balance("bob") == -1000


async def test_address_is_learned_from_a_parent_by_ildcp() -> None:
    parent_cfg = config(
        {"kids": {"relation": "child", "transport": "mini-accounts", "listen": "0"}},
        connector={"address": "test.top"},
    )
    async with Connector(parent_cfg) as parent:
        child_cfg = config_from_mapping(
            {
                "connector": {"store": "memory:"},
                "accounts": {
                    "up": {
                        "relation": "parent",
                        "transport": "btp-client",
                        "url": btp_url(parent, "kids", "mid", "t"),
                    },
                    "leaf": {"relation": "child", "transport": "local"},
                },
            },
            env={},
        )
        async with Connector(child_cfg) as child:
            assert child.address == "test.top.mid"
            leaf = child.local_link("leaf")
            await leaf.start()
            info = await fetch_peer_config(leaf)
            assert info.address == "test.top.mid.leaf"
            # the default route goes to the parent
            assert child.broadcaster is not None
            assert child.broadcaster.next_hop("test.top.other") == "up"
