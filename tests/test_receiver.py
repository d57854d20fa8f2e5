"""AsyncReceiver end to end in memory: PSK2 packets in, credits and Fulfills out."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ilp_receiver.codec.ildcp import IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ilp_receiver.codec.psk2 import Draft1Packet
from ilp_receiver.errors import ConfigError, IlpError
from ilp_receiver.links.memory import MemoryLink, memory_link_pair
from ilp_receiver.portal import default_portal
from ilp_receiver.psk2.sender import (
    build_chunk_prepare,
    build_quote_prepare,
    build_request_prepare,
    parse_reply,
)
from ilp_receiver.receiver import (
    DEFAULT_ACCOUNT,
    AsyncReceiver,
    IncomingPayment,
    PaymentEvent,
    Receiver,
)
from ilp_receiver.spsp import parse_spsp_response
from ilp_receiver_aiohttp import create_spsp_app

SECRET = bytes(range(32))
PARENT = "test.parent"


def parent_link() -> tuple[MemoryLink, MemoryLink]:
    """(parent end, receiver end); the parent answers IL-DCP."""
    parent, child = memory_link_pair()

    async def answer(prepare: IlpPrepare) -> IlpReply:
        if prepare.destination == "peer.config":
            info = IldcpResponse(f"{PARENT}.bob", 9, "XYZ")
            return ildcp_serve(prepare, info, server_address=PARENT, now=datetime.now(UTC))
        return IlpReject("F02", PARENT, "no route")

    parent.set_handler(answer)
    return parent, child


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[tuple[MemoryLink, AsyncReceiver]]:
    parent, child = parent_link()
    await parent.start()
    receiver = AsyncReceiver(child, secret=SECRET, store=str(tmp_path / "balances.sqlite3"))
    await receiver.start()
    yield parent, receiver
    await receiver.stop()


def soon(seconds: float = 30) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def chunk(destination: str, secret: bytes, amount: int, **options: object) -> IlpPrepare:
    options.setdefault("payment_id", os.urandom(16))
    return build_chunk_prepare(
        destination,
        secret,
        amount=amount,
        expires_at=soon(),
        iv=os.urandom(12),
        **options,  # type: ignore[arg-type]
    )


async def test_ildcp_address_and_spsp_issue(network: tuple[MemoryLink, AsyncReceiver]) -> None:
    _, receiver = network
    assert receiver.address == "test.parent.bob"
    spsp = await receiver.spsp_response()
    assert spsp.destination_account.startswith("test.parent.bob.")
    assert len(spsp.shared_secret) == 32
    assert spsp.asset is not None and spsp.asset.code == "XYZ" and spsp.asset.scale == 9
    assert spsp.balance is not None and spsp.balance.current == 0
    again = await receiver.spsp_response()
    assert again.shared_secret != spsp.shared_secret  # fresh per query


async def test_draft1_single_chunk_is_credited_and_fulfilled(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    destination, secret = receiver.issue()
    prepare = chunk(destination, secret, 900, chunk_amount=900)
    reply = await parent.send(prepare)
    assert isinstance(reply, IlpFulfill)
    result = parse_reply(secret, reply)
    assert result.fulfilled and result.delivered_amount == 900
    assert await receiver.balance() == 900


async def test_draft2_request_is_answered_in_draft2(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    destination, secret = receiver.issue("endpoint:shop")
    prepare = build_request_prepare(
        destination, secret, amount=500, expires_at=soon(), iv=os.urandom(12), request_id=7
    )
    reply = await parent.send(prepare)
    result = parse_reply(secret, reply)
    assert result.fulfilled and result.delivered_amount == 500
    assert await receiver.balance("endpoint:shop") == 500
    assert await receiver.balance() == 0  # bound to its own account only


def running_total(secret: bytes, reply: IlpReply) -> int:
    """The draft-1 payment total a Fulfill's encrypted response reports."""
    packet = parse_reply(secret, reply).packet
    assert isinstance(packet, Draft1Packet)
    return packet.payment_amount


async def test_duplicate_delivery_of_the_same_prepare_is_credited_once(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    destination, secret = receiver.issue()
    payment_id = os.urandom(16)
    prepare = chunk(destination, secret, 100, last_chunk=False, payment_id=payment_id)
    first, second, third = await asyncio.gather(*(parent.send(prepare) for _ in range(3)))
    assert isinstance(first, IlpFulfill)
    assert isinstance(second, IlpFulfill) and isinstance(third, IlpFulfill)
    # each delivery gets the same fulfillment (the encrypted response has a fresh IV)
    assert first.fulfillment == second.fulfillment == third.fulfillment
    assert await receiver.balance() == 100
    # the payment's running total, told to the sender, counts the chunk once
    assert [running_total(secret, r) for r in (first, second, third)] == [100, 100, 100]
    # a new chunk (new IV, new condition) of the same payment counts
    fourth = await parent.send(
        chunk(destination, secret, 50, last_chunk=False, payment_id=payment_id, sequence=1)
    )
    assert await receiver.balance() == 150
    assert running_total(secret, fourth) == 150


async def test_quotes_and_low_amounts_are_refused_with_the_amount_that_arrived(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    destination, secret = receiver.issue()
    quote = build_quote_prepare(
        destination,
        secret,
        expires_at=soon(),
        iv=os.urandom(12),
        payment_id=os.urandom(16),
        condition=os.urandom(32),
        amount=1000,
    )
    reply = await parent.send(quote)
    assert isinstance(reply, IlpReject) and reply.code == "F99"
    assert parse_reply(secret, reply).delivered_amount == 1000
    too_low = chunk(destination, secret, 10, chunk_amount=11)
    reply = await parent.send(too_low)
    assert isinstance(reply, IlpReject) and reply.code == "F99"
    assert parse_reply(secret, reply).delivered_amount == 10
    assert await receiver.balance() == 0


async def test_bad_input_gets_the_right_reject_codes(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    destination, secret = receiver.issue()
    # a wrong secret: the data does not decrypt
    wrong = chunk(destination, os.urandom(32), 100)
    reply = await parent.send(wrong)
    assert isinstance(reply, IlpReject) and reply.code == "F06"
    assert reply.triggered_by == receiver.address
    # a tampered ciphertext
    good = chunk(destination, secret, 100)
    tampered = replace(good, data=good.data[:-1] + bytes([good.data[-1] ^ 1]))
    reply = await parent.send(tampered)
    assert isinstance(reply, IlpReject) and reply.code == "F06"
    # a wrong condition
    reply = await parent.send(replace(good, execution_condition=os.urandom(32)))
    assert isinstance(reply, IlpReject) and reply.code in ("F05", "F99")
    # not our receiver id
    reply = await parent.send(replace(good, destination=f"{receiver.address}.AAAAAAAAAAA.xyz"))
    assert isinstance(reply, IlpReject) and reply.code == "F06"
    # expired: R00 and no fulfillment
    expired = replace(good, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    reply = await receiver.handle_prepare(expired)
    assert isinstance(reply, IlpReject) and reply.code == "R00"
    assert await receiver.balance() == 0


async def test_hook_can_refuse_redirect_and_raise_codes(tmp_path: Path) -> None:
    parent, child = parent_link()
    await parent.start()
    seen: list[IncomingPayment] = []

    async def hook(payment: IncomingPayment) -> str | bool | None:
        seen.append(payment)
        if payment.amount == 1:
            return False
        if payment.amount == 2:
            raise IlpError("F07", "cannot receive")
        if payment.amount == 3:
            return "custom:account"
        return None

    async with AsyncReceiver(child, secret=SECRET, store=None, on_payment=hook) as receiver:
        destination, secret = receiver.issue()
        refused = await parent.send(chunk(destination, secret, 1))
        assert isinstance(refused, IlpReject) and refused.code == "F99"
        coded = await parent.send(chunk(destination, secret, 2))
        assert isinstance(coded, IlpReject) and coded.code == "F07"
        redirected = await parent.send(chunk(destination, secret, 3))
        assert isinstance(redirected, IlpFulfill)
        assert await receiver.balance("custom:account") == 3
        assert await receiver.balance() == 0
        assert [p.amount for p in seen] == [1, 2, 3]
        assert seen[0].account == DEFAULT_ACCOUNT and seen[0].format == "psk2-draft1"


async def test_events_arrive_after_the_fulfill_without_blocking_it(
    network: tuple[MemoryLink, AsyncReceiver],
) -> None:
    parent, receiver = network
    received: list[PaymentEvent] = []
    release = asyncio.Event()

    async def slow_callback(event: PaymentEvent) -> None:
        await release.wait()  # slow application code
        received.append(event)

    receiver.on_event(slow_callback)
    destination, secret = receiver.issue()
    payment_id = os.urandom(16)
    for sequence, last in ((0, False), (1, True)):
        reply = await asyncio.wait_for(
            parent.send(
                build_chunk_prepare(
                    destination,
                    secret,
                    amount=400,
                    expires_at=soon(),
                    iv=os.urandom(12),
                    payment_id=payment_id,
                    sequence=sequence,
                    payment_amount=800,
                    last_chunk=last,
                )
            ),
            timeout=2,
        )
        assert isinstance(reply, IlpFulfill)  # not held up by the slow callback
    release.set()
    for _ in range(50):
        if len(received) == 3:
            break
        await asyncio.sleep(0.02)
    assert [(e.kind, e.amount, e.balance) for e in received] == [
        ("received", 400, 400),
        ("received", 400, 800),
        ("completed", 400, 800),
    ]


async def test_async_event_iterator(network: tuple[MemoryLink, AsyncReceiver]) -> None:
    parent, receiver = network
    events = receiver.events()
    waiter = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0)
    destination, secret = receiver.issue()
    await parent.send(chunk(destination, secret, 42))
    event = await asyncio.wait_for(waiter, 2)
    assert event.kind == "received" and event.amount == 42
    await events.aclose()


async def test_balance_limit_refuses_without_crediting(tmp_path: Path) -> None:
    parent, child = parent_link()
    await parent.start()
    async with AsyncReceiver(child, secret=SECRET, max_balance=150) as receiver:
        destination, secret = receiver.issue()
        assert isinstance(await parent.send(chunk(destination, secret, 100)), IlpFulfill)
        over = await parent.send(chunk(destination, secret, 100))
        assert isinstance(over, IlpReject) and over.code == "F99"
        assert await receiver.balance() == 100


U64 = 2**64 - 1


async def test_balances_stop_at_uint64_and_spsp_keeps_answering(tmp_path: Path) -> None:
    # Reported: two payments of 2**64 - 1 to one pointer, then every SPSP query failed
    # with EncodeError ("balance.current must be an integer in 0..2**64-1") until the
    # store was edited; the advertised balance.maximum was never enforced.
    parent, child = parent_link()
    await parent.start()
    async with AsyncReceiver(child, secret=SECRET, store="memory:") as receiver:
        destination, secret = receiver.issue()
        assert isinstance(await parent.send(chunk(destination, secret, U64)), IlpFulfill)
        over = await parent.send(chunk(destination, secret, U64))
        assert isinstance(over, IlpReject) and over.code == "F99"
        one_more = await parent.send(chunk(destination, secret, 1))
        assert isinstance(one_more, IlpReject) and one_more.code == "F99"
        assert await receiver.balance() == U64  # the refused money was never counted
        async with TestClient(TestServer(create_spsp_app(receiver))) as client:
            answer = await client.get("/.well-known/pay")
            assert answer.status == 200
            body = await answer.json(content_type=None)
            assert body["balance"] == {"maximum": str(U64), "current": str(U64)}
            # a store holding more than UInt64 (an older version, a manual edit) is shown
            # saturated instead of failing every query
            await receiver.store.credit(DEFAULT_ACCOUNT, 5)
            assert await receiver.balance() == 2**64 + 4
            saturated = await client.get("/.well-known/pay")
            assert saturated.status == 200
            assert (await saturated.json(content_type=None))["balance"]["current"] == str(U64)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "100", True])
def test_max_balance_must_be_a_uint64(bad: object) -> None:
    _, child = parent_link()
    with pytest.raises(ConfigError, match="max_balance"):
        AsyncReceiver(child, secret=SECRET, max_balance=bad)  # type: ignore[arg-type]


async def test_restart_on_the_same_sqlite_file_keeps_balances(tmp_path: Path) -> None:
    store = str(tmp_path / "balances.sqlite3")
    parent, child = parent_link()
    await parent.start()
    async with AsyncReceiver(child, secret=SECRET, store=store) as receiver:
        destination, secret = receiver.issue()
        prepare = chunk(destination, secret, 250)
        assert isinstance(await parent.send(prepare), IlpFulfill)
    parent, child = parent_link()
    await parent.start()
    async with AsyncReceiver(child, secret=SECRET, store=store) as restarted:
        assert await restarted.balance() == 250
        # stateless secrets: an address issued before the restart still works,
        # and the same Prepare delivered again is still not credited twice
        assert isinstance(await parent.send(prepare), IlpFulfill)
        assert await restarted.balance() == 250
        assert isinstance(await parent.send(chunk(destination, secret, 5)), IlpFulfill)
        assert await restarted.balance() == 255


async def test_any_process_with_the_secret_can_fulfil(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.sqlite3")
    parent_a, child_a = parent_link()
    parent_b, child_b = parent_link()
    await parent_a.start()
    await parent_b.start()
    async with (
        AsyncReceiver(child_a, secret=SECRET, store=store) as a,
        AsyncReceiver(child_b, secret=SECRET, store=store) as b,
    ):
        destination, secret = a.issue()
        assert isinstance(await parent_b.send(chunk(destination, secret, 70)), IlpFulfill)
        assert await a.balance() == 70
        assert await b.balance() == 70


async def test_spsp_endpoint_statuses(network: tuple[MemoryLink, AsyncReceiver]) -> None:
    parent, receiver = network
    async with TestClient(TestServer(create_spsp_app(receiver))) as client:
        ok = await client.get("/.well-known/pay", headers={"Accept": "application/spsp+json"})
        assert ok.status == 200
        assert ok.headers["Content-Type"].startswith("application/spsp+json")
        assert ok.headers["Cache-Control"] == "max-age=60"
        body = await ok.json(content_type=None)
        spsp = parse_spsp_response(body)
        assert body["asset_info"] == {"code": "XYZ", "scale": 9}
        assert body["balance"]["current"] == "0"
        for accept in ("application/json", "*/*", None):
            headers = {"Accept": accept} if accept else {}
            assert (await client.get("/.well-known/pay", headers=headers)).status == 200
        named = await client.get("/tips", headers={"Accept": "application/spsp+json"})
        assert named.status == 200
        # pay the named endpoint: only its balance moves
        tips = parse_spsp_response(await named.json(content_type=None))
        await parent.send(chunk(tips.destination_account, tips.shared_secret, 33))
        tips_again = await (await client.get("/tips")).json(content_type=None)
        assert tips_again["balance"]["current"] == "33"
        default_again = await (await client.get("/.well-known/pay")).json(content_type=None)
        assert default_again["balance"]["current"] == "0"
        unknown = await client.get("/not.a.name", headers={"Accept": "application/spsp+json"})
        assert unknown.status == 404
        assert (await unknown.json())["id"] == "InvalidReceiverError"
        refused = await client.get("/.well-known/pay", headers={"Accept": "text/html"})
        assert refused.status == 406
        assert "application/spsp+json" in (await refused.text())
        health = await client.get("/health")
        assert health.status == 200
        assert spsp.destination_account != tips.destination_account


def test_sync_facade_runs_on_the_portal_thread(tmp_path: Path) -> None:
    parent, child = parent_link()
    default_portal().call(parent.start)
    receiver = Receiver(child, secret=SECRET, store=str(tmp_path / "sync.sqlite3"))
    with receiver:
        assert receiver.address == "test.parent.bob"
        destination, secret = receiver.issue()

        async def pay() -> IlpReply:
            return await parent.send(chunk(destination, secret, 12))

        reply = default_portal().call(pay)
        assert isinstance(reply, IlpFulfill)
        assert receiver.balance() == 12
        assert receiver.spsp_response().balance is not None
