"""The bundled connector's packet path, in memory (local accounts, no sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ilp_receiver.codec.balance import balance_request, decode_balance_fulfill
from ilp_receiver.codec.ccp import (
    CcpMode,
    RouteControlRequest,
    route_control_prepare,
)
from ilp_receiver.codec.echo import ECHO_RESPONSE_DATA, echo_request_prepare
from ilp_receiver.codec.ildcp import decode_ildcp_fulfill, ildcp_request
from ilp_receiver.codec.ilp import (
    PEER_PROTOCOL_CONDITION,
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_amount_too_large_data,
)
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.connector.services import INVALID_FULFILLMENT_CODE, Outgoing, Service
from ilp_receiver.links.base import Link
from ilp_receiver.receiver import AsyncReceiver

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def make_config(accounts: dict[str, dict[str, Any]], **connector: Any) -> Any:
    section = {"address": "test.conn", "store": "memory:", **connector}
    return config_from_mapping({"connector": section, "accounts": accounts}, env={})


def soon(seconds: float) -> datetime:
    """Now + ``seconds`` at the wire's millisecond precision."""
    t = datetime.now(UTC) + timedelta(seconds=seconds)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def prepare(
    destination: str = "test.conn.bob.x",
    amount: int = 1000,
    seconds: float = 10.0,
    condition: bytes = CONDITION,
    data: bytes = b"",
) -> IlpPrepare:
    return IlpPrepare(amount, soon(seconds), condition, destination, data)


Handler = Callable[[IlpPrepare], Awaitable[IlpReply]]


async def fulfill_all(p: IlpPrepare) -> IlpReply:
    return IlpFulfill(FULFILLMENT, b"ok")


class Net:
    """A started connector with local accounts alice (sender) and bob (receiver)."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.links: dict[str, Link] = {}

    async def open(self, account: str, handler: Handler = fulfill_all) -> Link:
        link = self.connector.local_link(account)
        link.set_handler(handler)
        await link.start()
        self.links[account] = link
        return link

    async def send(self, p: IlpPrepare, account: str = "alice") -> IlpReply:
        return await self.links[account].send(p)


async def start_net(
    accounts: dict[str, dict[str, Any]] | None = None,
    bob: Handler = fulfill_all,
    **connector: Any,
) -> Net:
    base = {
        "alice": {"relation": "child", "transport": "local"},
        "bob": {"relation": "child", "transport": "local"},
    }
    for name, extra in (accounts or {}).items():
        base.setdefault(name, {"relation": "child", "transport": "local"}).update(extra)
    c = Connector(make_config(base, **connector))
    await c.start()
    net = Net(c)
    await net.open("alice")
    await net.open("bob", bob)
    return net


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = await start_net()
    yield n
    await n.connector.stop()


async def test_forwards_and_counts_balances_once(net: Net) -> None:
    reply = await net.send(prepare())
    assert reply == IlpFulfill(FULFILLMENT, b"ok")
    ledger = net.connector.ledger
    assert ledger.balance("alice") == 1000  # alice owes us
    assert ledger.balance("bob") == -1000  # we owe bob
    assert ledger.reserved("alice") == ledger.reserved("bob") == 0


async def test_no_route_is_f02(net: Net) -> None:
    reply = await net.send(prepare("test.elsewhere.x"))
    assert isinstance(reply, IlpReject)
    assert reply.code == "F02"
    assert reply.triggered_by == "test.conn"
    # an address under ours without an account is unreachable too
    reply = await net.send(prepare("test.conn.nobody"))
    assert isinstance(reply, IlpReject)
    assert reply.code == "F02"


async def test_invalid_destination_and_unknown_peer_protocol_are_f01(net: Net) -> None:
    for dest in ("test.conn..x", "peer.unknown"):
        reply = await net.send(prepare(dest, amount=0, condition=PEER_PROTOCOL_CONDITION))
        assert isinstance(reply, IlpReject)
        assert reply.code == "F01", dest


async def test_malformed_echo_is_f01(net: Net) -> None:
    reply = await net.send(prepare("test.conn", data=b"ECHO"))
    assert isinstance(reply, IlpReject)
    assert reply.code == "F01"


async def test_wrong_fulfillment_is_rejected_and_rolled_back() -> None:
    async def liar(p: IlpPrepare) -> IlpReply:
        return IlpFulfill(bytes(32))

    n = await start_net(bob=liar)
    try:
        reply = await n.send(prepare())
        assert isinstance(reply, IlpReject)
        assert reply.code == INVALID_FULFILLMENT_CODE == "F09"
        assert n.connector.ledger.balance("alice") == 0
        assert n.connector.ledger.balance("bob") == 0
        assert n.connector.ledger.reserved("alice") == 0
    finally:
        await n.connector.stop()


async def test_downstream_reject_passes_through_and_rolls_back() -> None:
    async def refuse(p: IlpPrepare) -> IlpReply:
        return IlpReject("F99", "test.conn.bob", "no thanks", b"app")

    n = await start_net(bob=refuse)
    try:
        reply = await n.send(prepare())
        assert reply == IlpReject("F99", "test.conn.bob", "no thanks", b"app")
        assert n.connector.ledger.balance("alice") == 0
        assert n.connector.ledger.reserved("bob") == 0
    finally:
        await n.connector.stop()


async def test_expiry_is_shortened_by_the_window(net: Net) -> None:
    seen: list[IlpPrepare] = []

    async def record(p: IlpPrepare) -> IlpReply:
        seen.append(p)
        return IlpFulfill(FULFILLMENT)

    net.links["bob"].set_handler(record)
    p = prepare(seconds=10)
    assert isinstance(await net.send(p), IlpFulfill)
    assert seen[0].expires_at == p.expires_at - timedelta(seconds=1)
    assert seen[0].amount == p.amount
    assert seen[0].data == p.data


async def test_max_hold_time_caps_expiry() -> None:
    seen: list[IlpPrepare] = []

    async def record(p: IlpPrepare) -> IlpReply:
        seen.append(p)
        return IlpFulfill(FULFILLMENT)

    n = await start_net(bob=record, max_hold_time_ms=2000)
    try:
        await n.send(prepare(seconds=60))
        left = (seen[0].expires_at - datetime.now(UTC)).total_seconds()
        assert 1.0 < left <= 2.0
    finally:
        await n.connector.stop()


async def test_not_enough_time_is_r02(net: Net) -> None:
    for seconds in (1.5, -1.0):  # 1.5 s - 1 s window < 1 s window; already expired
        reply = await net.send(prepare(seconds=seconds))
        assert isinstance(reply, IlpReject)
        assert reply.code == "R02", seconds


async def test_silent_next_hop_gives_r00_at_expiry() -> None:
    async def never(p: IlpPrepare) -> IlpReply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    n = await start_net(bob=never, min_message_window_ms=100)
    try:
        started = asyncio.get_running_loop().time()
        p = prepare(seconds=0.6)
        reply = await asyncio.wait_for(n.links["alice"].send(p, timeout=5), 3)
        took = asyncio.get_running_loop().time() - started
        assert isinstance(reply, IlpReject)
        assert reply.code == "R00"
        assert 0.3 < took < 1.0
        assert n.connector.ledger.reserved("alice") == 0
    finally:
        await n.connector.stop()


async def test_max_packet_amount_is_f08_with_data() -> None:
    n = await start_net({"alice": {"max_packet_amount": 500}})
    try:
        reply = await n.send(prepare(amount=501))
        assert isinstance(reply, IlpReject)
        assert reply.code == "F08"
        data = decode_amount_too_large_data(reply.data)
        assert (data.received_amount, data.maximum_amount) == (501, 500)
        assert isinstance(await n.send(prepare(amount=500)), IlpFulfill)
    finally:
        await n.connector.stop()


async def test_outgoing_max_packet_amount_is_f08() -> None:
    n = await start_net({"bob": {"max_packet_amount": "100"}})
    try:
        reply = await n.send(prepare(amount=101))
        assert isinstance(reply, IlpReject)
        assert reply.code == "F08"
    finally:
        await n.connector.stop()


async def test_balance_limits_are_t04() -> None:
    n = await start_net({"alice": {"max_balance": 1500}, "bob": {"min_balance": -1800}})
    try:
        assert isinstance(await n.send(prepare(amount=1000)), IlpFulfill)
        reply = await n.send(prepare(amount=1000))
        assert isinstance(reply, IlpReject)
        assert reply.code == "T04"
        assert n.connector.ledger.balance("alice") == 1000
        # bob's minimum: 1000 already owed, 900 more would pass -1800
        n2 = n.connector.ledger
        assert n2.balance("bob") == -1000
        reply = await n.send(prepare(amount=500))
        assert isinstance(reply, IlpFulfill)
        reply = await n.send(prepare(amount=1))
        assert isinstance(reply, IlpReject)
        assert reply.code == "T04"
    finally:
        await n.connector.stop()


async def test_in_flight_packets_count_against_the_limit() -> None:
    gate = asyncio.Event()

    async def slow(p: IlpPrepare) -> IlpReply:
        await gate.wait()
        return IlpFulfill(FULFILLMENT)

    n = await start_net({"alice": {"max_balance": 1500}}, bob=slow)
    try:
        first = asyncio.ensure_future(n.send(prepare(amount=1000)))
        await asyncio.sleep(0.05)
        assert n.connector.ledger.reserved("alice") == 1000
        reply = await n.send(prepare(amount=1000))
        assert isinstance(reply, IlpReject)
        assert reply.code == "T04"
        gate.set()
        assert isinstance(await first, IlpFulfill)
        assert n.connector.ledger.balance("alice") == 1000
    finally:
        await n.connector.stop()


async def test_rate_limit_is_t05() -> None:
    n = await start_net({"alice": {"rate_limit": 1, "rate_limit_burst": 2}})
    try:
        codes = []
        for _ in range(4):
            reply = await n.send(prepare(amount=1))
            codes.append(reply.code if isinstance(reply, IlpReject) else "ok")
        assert codes[:2] == ["ok", "ok"]
        assert "T05" in codes[2:]
    finally:
        await n.connector.stop()


async def test_ildcp_host_serves_children(net: Net) -> None:
    reply = await net.send(ildcp_request(datetime.now(UTC) + timedelta(seconds=30)))
    assert isinstance(reply, IlpFulfill)
    info = decode_ildcp_fulfill(reply)
    assert (info.client_address, info.asset_scale, info.asset_code) == ("test.conn.alice", 9, "XYZ")


async def test_ildcp_is_refused_to_peers() -> None:
    n = await start_net({"carol": {"relation": "peer", "transport": "local"}})
    try:
        await n.open("carol")
        reply = await n.send(ildcp_request(datetime.now(UTC) + timedelta(seconds=30)), "carol")
        assert isinstance(reply, IlpReject)
        assert reply.code == "F00"
    finally:
        await n.connector.stop()


async def test_il_balance_sign(net: Net) -> None:
    assert isinstance(await net.send(prepare(amount=1000)), IlpFulfill)
    request = balance_request(datetime.now(UTC) + timedelta(seconds=30))
    # alice sent 1000 through us: she owes us, so the balance is not in her favour
    reply = await net.send(request, "alice")
    assert isinstance(reply, IlpFulfill)
    assert decode_balance_fulfill(reply) == -1000
    # we owe bob 1000: positive, in the requester's favour
    reply = await net.send(request, "bob")
    assert isinstance(reply, IlpFulfill)
    assert decode_balance_fulfill(reply) == 1000


async def test_echo_sends_the_prepare_back(net: Net) -> None:
    echoed: list[IlpPrepare] = []

    async def alice(p: IlpPrepare) -> IlpReply:
        echoed.append(p)
        return IlpFulfill(FULFILLMENT)

    net.links["alice"].set_handler(alice)
    p = echo_request_prepare(
        destination="test.conn",
        source_address="test.conn.alice",
        amount=0,
        execution_condition=CONDITION,
        expires_at=soon(10),
    )
    reply = await net.send(p)
    assert isinstance(reply, IlpFulfill)
    assert echoed[0].destination == "test.conn.alice"
    assert echoed[0].data == ECHO_RESPONSE_DATA
    window = p.expires_at - echoed[0].expires_at
    assert window == timedelta(seconds=1)


async def test_ccp_from_a_child_is_refused(net: Net) -> None:
    control = RouteControlRequest(CcpMode.SYNC)
    reply = await net.send(route_control_prepare(control, datetime.now(UTC) + timedelta(seconds=9)))
    assert isinstance(reply, IlpReject)
    assert reply.code == "F00"


async def test_unexpected_exception_becomes_t00_once(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(self: Service, request: Any) -> IlpReply:
        raise RuntimeError("bug")

    monkeypatch.setattr(Outgoing, "handle", boom)
    reply = await net.send(prepare())
    assert isinstance(reply, IlpReject)
    assert reply.code == "T00"
    assert reply.message == "internal error"
    assert net.connector.ledger.reserved("alice") == 0
    assert net.connector.metrics.packets[("rejected", "T00")] == 1


async def test_next_hop_down_is_t01(net: Net) -> None:
    await net.links["bob"].stop()
    reply = await net.send(prepare())
    assert isinstance(reply, IlpReject)
    assert reply.code == "T01"


async def test_local_delivery_to_an_async_receiver_gets_its_address() -> None:
    config = make_config({"shop": {"relation": "child", "transport": "local"}})
    async with Connector(config) as connector:
        receiver = AsyncReceiver(connector.local_link("shop"), secret=os.urandom(32))
        await receiver.start()
        try:
            assert receiver.address == "test.conn.shop"
            assert receiver.config.asset_code == "XYZ"
        finally:
            await receiver.stop()


async def test_metrics_count_results(net: Net) -> None:
    await net.send(prepare())
    await net.send(prepare("test.nowhere"))
    text = net.connector.metrics.render(net.connector.ledger.balances(), {"alice": True})
    assert 'ilp_connector_packets_total{result="fulfilled",code=""} 1' in text
    assert 'ilp_connector_packets_total{result="rejected",code="F02"} 1' in text
    assert "ilp_connector_packet_duration_seconds_count 2" in text
    assert 'ilp_connector_balance{account="alice"} 1000' in text
