"""Bad STREAM input against the real ``ilp-receiver receive`` process, through the real
``ilp-receiver connector``: malformed packets, wrong keys, closed and unknown streams,
absurd amounts and stream ids, and more connections than the receiver holds.

Each gets the reject code RFC 29 (or ``docs/stream.md``) names, nothing reaches the log
as a traceback, the receiver's memory stays within a stated bound, and a legitimate
payment still succeeds afterwards.  The test derives STREAM destinations itself from the
receiver's secret file (as any process holding the secret could), so it can open
thousands of connections without thousands of SPSP queries.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ilp_receiver.codec.stream import (
    ConnectionClose,
    ErrorCode,
    Frame,
    StreamClose,
    StreamMoney,
    StreamPacket,
)
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.links.factory import open_link
from ilp_receiver.links.uplink import fetch_peer_config
from ilp_receiver.stream.secrets import (
    StreamServerSecrets,
    derive_keys,
    open_packet,
    seal_packet,
)
from ilp_receiver.stream.server import account_to_tag
from tests.attack.conftest import Node, rss_kib
from tests.attack.test_wire_attacks import pay_once

pytestmark = pytest.mark.attack

MIB = 1024


class Forger:
    """Issues STREAM destinations with the receiver's secret and sends hand-built packets
    through the connector as its ``sender`` account."""

    def __init__(self, node: Node, link: BtpClientLink, address: str) -> None:
        secret = bytes.fromhex((node.state / "receiver.secret").read_text().strip())
        self.secrets = StreamServerSecrets.from_receiver_secret(secret)
        self.link = link
        self.address = address

    def issue(self, account: str = "endpoint:default") -> tuple[str, bytes]:
        issued = self.secrets.generate(
            self.address, os.urandom(18), os.urandom(12), account_to_tag(account)
        )
        return issued.destination, issued.shared_secret

    async def send(
        self,
        destination: str,
        secret: bytes,
        frames: tuple[Frame, ...] = (),
        *,
        amount: int = 0,
        sequence: int = 1,
        prepare_amount: int = 0,
        packet_type: int = 12,
        data: bytes | None = None,
    ) -> IlpReply:
        keys = derive_keys(secret)
        if data is None:
            packet = StreamPacket(sequence, packet_type, prepare_amount, frames)
            data = seal_packet(keys, os.urandom(12), packet)
        expires = datetime.now(UTC) + timedelta(seconds=20)
        prepare = IlpPrepare(amount, expires, keys.condition(data), destination, data)
        return await self.link.send(prepare)


@pytest.fixture
async def forger(node: Node) -> AsyncIterator[Forger]:
    link = open_link(node.sender_uplink)
    assert isinstance(link, BtpClientLink)
    await link.start()
    sender_address = (await fetch_peer_config(link)).address
    # the receiver is the connector's child "shop": test.mynode.shop
    receiver_address = sender_address.rsplit(".", 1)[0] + ".shop"
    try:
        yield Forger(node, link, receiver_address)
    finally:
        await link.stop()


def reply_frames(reply: IlpReply, secret: bytes) -> tuple[Frame, ...]:
    assert reply.data, reply
    return open_packet(derive_keys(secret), reply.data).frames


async def test_bad_stream_packets_get_the_rfc_codes_without_tracebacks(
    node: Node, forger: Forger
) -> None:
    log_before = node.receiver.log.stat().st_size
    destination, secret = forger.issue()
    # a packet that is not encrypted under the connection's key: F06 (RFC 29 §4.2)
    wrong = await forger.send(destination, os.urandom(32), (StreamMoney(1, 1),), amount=10)
    assert isinstance(wrong, IlpReject) and wrong.code == "F06" and not wrong.data
    garbage = await forger.send(destination, secret, data=os.urandom(100), amount=10)
    assert isinstance(garbage, IlpReject) and garbage.code == "F06"
    # a token this receiver never issued: F02 (unreachable), nothing learned
    unknown = destination.rsplit(".", 1)[0] + "." + "A" * 66
    stranger = await forger.send(unknown, secret, (StreamMoney(1, 1),), amount=10)
    assert isinstance(stranger, IlpReject) and stranger.code == "F02"
    # a STREAM packet claiming to ride in a Fulfill: F06
    claim = await forger.send(destination, secret, packet_type=13, amount=0)
    assert isinstance(claim, IlpReject) and claim.code == "F06"
    # asking for more than arrives: F99 with the arrived amount in the encrypted reply
    greedy = await forger.send(
        destination, secret, (StreamMoney(1, 1),), amount=10, prepare_amount=11, sequence=2
    )
    assert isinstance(greedy, IlpReject) and greedy.code == "F99"
    assert open_packet(derive_keys(secret), greedy.data).prepare_amount == 10
    # an even (server-side) stream id: F99 + ConnectionClose(ProtocolViolation)
    even_dest, even_secret = forger.issue()
    even = await forger.send(even_dest, even_secret, (StreamMoney(2, 1),), amount=10)
    assert isinstance(even, IlpReject) and even.code == "F99"
    closes = [f for f in reply_frames(even, even_secret) if isinstance(f, ConnectionClose)]
    assert closes and closes[0].error_code == ErrorCode.PROTOCOL_VIOLATION
    # an absurd stream id: F99 + ConnectionClose(StreamIdError)
    far_dest, far_secret = forger.issue()
    far = await forger.send(far_dest, far_secret, (StreamMoney(2**62 + 1, 1),), amount=10)
    assert isinstance(far, IlpReject) and far.code == "F99"
    closes = [f for f in reply_frames(far, far_secret) if isinstance(f, ConnectionClose)]
    assert closes and closes[0].error_code == ErrorCode.STREAM_ID_ERROR
    # money for a stream the client closed: F99 + StreamClose(StreamStateError)
    paid = await forger.send(destination, secret, (StreamMoney(1, 1),), amount=5, sequence=3)
    assert isinstance(paid, IlpFulfill)
    await forger.send(destination, secret, (StreamClose(1, ErrorCode.NO_ERROR),), sequence=4)
    late = await forger.send(destination, secret, (StreamMoney(1, 1),), amount=5, sequence=5)
    assert isinstance(late, IlpReject) and late.code == "F99"
    stream_closes = [f for f in reply_frames(late, secret) if isinstance(f, StreamClose)]
    assert stream_closes and stream_closes[0].error_code == ErrorCode.STREAM_STATE_ERROR
    # absurd shares and the largest amount: every unit lands on a stream, exactly once
    whale_dest, whale_secret = forger.issue("endpoint:whale-stream-attack")
    huge = await forger.send(
        whale_dest,
        whale_secret,
        (StreamMoney(1, 2**64 - 1), StreamMoney(3, 1)),
        amount=2**64 - 1,
    )
    assert isinstance(huge, IlpFulfill)
    over = await forger.send(whale_dest, whale_secret, (StreamMoney(1, 1),), amount=1, sequence=2)
    assert isinstance(over, IlpReject) and over.code == "F99"  # balance.maximum holds
    logged = node.receiver.log.read_bytes()[log_before:]
    assert b"Traceback" not in logged, logged[-3000:]
    assert await pay_once(node) == 1000


async def test_ten_thousand_abandoned_connections_keep_memory_bounded(
    node: Node, forger: Forger
) -> None:
    # 2 x 10,000 connections opened with one packet each and abandoned.  The receiver
    # holds at most 10,000 (StreamLimits.max_connections, least recently active evicted);
    # bound: its RSS grows by less than 48 MiB over the first 10,000 (about 1.1 KiB of
    # state each, plus the token and key caches) and by less than 8 MiB more over the
    # next 10,000 -- held connections are replaced, not added.
    pid = node.receiver.popen.pid
    before = rss_kib(pid)
    semaphore = asyncio.Semaphore(64)

    async def one() -> IlpReply:
        async with semaphore:
            destination, secret = forger.issue()
            return await forger.send(destination, secret, amount=0)

    first = await asyncio.gather(*(one() for _ in range(10_000)))
    assert all(isinstance(reply, IlpFulfill) for reply in first)
    after_first = rss_kib(pid)
    second = await asyncio.gather(*(one() for _ in range(10_000)))
    assert all(isinstance(reply, IlpFulfill) for reply in second)
    after_second = rss_kib(pid)
    assert after_first - before < 48 * MIB, (before, after_first)
    assert after_second - after_first < 8 * MIB, (after_first, after_second)
    assert b"Traceback" not in node.receiver.log.read_bytes()
    assert await pay_once(node) == 1000
