"""The sans-I/O STREAM sender (ilp_receiver.stream.sender) against a simulated path.

:class:`FakePath` plays a connector (F08 above a maximum packet amount, an exchange
rate, injected errors) and a minimal STREAM receiver built from the wire layer:
decrypt, F99 + reply for unfulfillable packets and too-small arrivals, Fulfill with
an encrypted reply otherwise, an optional receive limit announced with
StreamMaxMoney, and StreamData echoed back in replies.  :func:`drive` runs the
state machine to the end on a fake clock.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from math import floor

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.cli import main
from ilp_receiver.client import (
    AsyncPaymentClient,
    ChunkProgress,
    PaymentClient,
    PaymentError,
    Psk2Destination,
    QuoteError,
    StreamDestination,
)
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    encode_amount_too_large_data,
)
from ilp_receiver.codec.stream import (
    ILP_FULFILL,
    ILP_PREPARE,
    ILP_REJECT,
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionMaxData,
    ConnectionNewAddress,
    ErrorCode,
    Frame,
    StreamClose,
    StreamData,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    StreamReceipt,
)
from ilp_receiver.commands.pay import ProgressBar
from ilp_receiver.crypto import sha256
from ilp_receiver.errors import ConfigError, DecodeError, LocalProtocolError, SpspError
from ilp_receiver.links.memory import memory_link_pair
from ilp_receiver.links.uplink import PeerConfig
from ilp_receiver.portal import default_portal
from ilp_receiver.spsp import SPSP4_MEDIA_TYPE, SpspResponse, negotiate_setup
from ilp_receiver.stream.secrets import derive_keys, open_packet, seal_packet
from ilp_receiver.stream.sender import (
    DEFAULT_PROBE_AMOUNTS,
    OutgoingPacket,
    StreamSender,
    Wait,
    minimum_destination_amount,
    path_maximum_from_f08,
)
from ilp_receiver.testing import InMemoryNetwork

SECRET = bytes(range(32))
OTHER_SECRET = bytes(32)
DESTINATION = "test.receiver.abc"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class FakePath:
    """A connector + minimal STREAM receiver (see the module docstring)."""

    secret: bytes = SECRET
    rate: Fraction = Fraction(1)
    max_packet: int | None = None  # connector F08 above this (source units)
    receive_max: int | None = None  # receiver's limit for stream 1
    advertise: bool = True  # send StreamMaxMoney in Fulfills (when receive_max is set)
    echo: bool = False  # send StreamData back
    total: int = 0
    failures: deque[IlpReject] = field(default_factory=deque)
    # hooks to corrupt replies: (prepare, reply) -> reply
    tamper: Callable[[IlpPrepare, IlpReply], IlpReply] | None = None
    extra_frames: list[Frame] = field(default_factory=list)
    seen: list[tuple[IlpPrepare, StreamPacket]] = field(default_factory=list)
    replies: int = 0

    def reply_data(
        self, sequence: int, packet_type: int, amount: int, frames: list[Frame]
    ) -> bytes:
        self.replies += 1
        iv = self.replies.to_bytes(12, "big")
        return seal_packet(
            derive_keys(self.secret), iv, StreamPacket(sequence, packet_type, amount, tuple(frames))
        )

    def handle(self, prepare: IlpPrepare) -> IlpReply:
        reply = self._handle(prepare)
        return self.tamper(prepare, reply) if self.tamper is not None else reply

    def _handle(self, prepare: IlpPrepare) -> IlpReply:
        if self.failures:
            return self.failures.popleft()
        if self.max_packet is not None and prepare.amount > self.max_packet:
            data = encode_amount_too_large_data(prepare.amount, self.max_packet)
            return IlpReject("F08", "test.connector", "packet size too large", data)
        arrived = floor(prepare.amount * self.rate)
        keys = derive_keys(self.secret)
        try:
            packet = open_packet(keys, prepare.data)
        except DecodeError:
            return IlpReject("F06", "test.receiver")
        self.seen.append((prepare, packet))
        if packet.ilp_packet_type != ILP_PREPARE:
            return IlpReject("F06", "test.receiver")
        frames: list[Frame] = [ConnectionMaxData(65534), *self.extra_frames]
        for frame in packet.frames:
            if isinstance(frame, StreamData) and self.echo:
                frames.append(StreamData(frame.stream_id, frame.offset, frame.data))

        def reject() -> IlpReject:
            data = self.reply_data(packet.sequence, ILP_REJECT, arrived, frames)
            return IlpReject("F99", "test.receiver", "", data)

        if packet.prepare_amount > arrived:
            return reject()
        fulfillment = keys.fulfillment(prepare.data)
        if sha256(fulfillment) != prepare.execution_condition:
            return reject()
        money = any(isinstance(f, StreamMoney) for f in packet.frames)
        if money and self.receive_max is not None and self.total + arrived > self.receive_max:
            frames.append(StreamMaxMoney(1, self.receive_max, self.total))
            return reject()
        if money:
            self.total += arrived
        if money and self.receive_max is not None and self.advertise:
            frames.append(StreamMaxMoney(1, self.receive_max, self.total))
        return IlpFulfill(
            fulfillment, self.reply_data(packet.sequence, ILP_FULFILL, arrived, frames)
        )


@dataclass
class Run:
    """What :func:`drive` saw."""

    sent: list[OutgoingPacket] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [p.kind for p in self.sent]

    def money(self) -> list[OutgoingPacket]:
        return [p for p in self.sent if p.kind == "money"]


def drive(sender: StreamSender, path: FakePath, limit: int = 10_000) -> Run:
    """Run ``sender`` to the end: send every packet it offers, answer them in order."""
    run = Run()
    now = T0
    counter = 0
    queue: deque[OutgoingPacket] = deque()
    for _ in range(limit):
        counter += 1
        step = sender.next(
            now=now, iv=counter.to_bytes(12, "big"), condition=sha256(bytes([counter % 256]))
        )
        if isinstance(step, OutgoingPacket):
            run.sent.append(step)
            queue.append(step)
            continue
        if step is None and not queue:
            return run
        if queue:
            out = queue.popleft()
            sender.on_reply(out.sequence, path.handle(out.prepare))
            continue
        assert isinstance(step, Wait) and step.delay is not None, step
        run.waits.append(step.delay)
        now += timedelta(seconds=step.delay)
    raise AssertionError("the sender did not finish")


def frames_of(out: OutgoingPacket) -> list[type]:
    return [type(f) for f in out.packet.frames]


# ---------------------------------------------------------------------- helpers


def test_minimum_destination_amount_floors_twice() -> None:
    # §10: "floor(0.99 x floor(rate x source))"
    assert minimum_destination_amount(Fraction(1), 1000, Fraction(1, 100)) == 990
    assert (
        minimum_destination_amount(Fraction(1, 3), 1000, Fraction(1, 100)) == 329
    )  # 333 -> 329.67
    assert minimum_destination_amount(Fraction(1, 3), 1, Fraction(1, 100)) == 0
    assert minimum_destination_amount(Fraction(2), 2**64 - 1, Fraction(0)) == 2**64 - 1  # capped


def test_path_maximum_from_f08_data() -> None:
    # §10: "floor(source x maximum / received)"
    assert path_maximum_from_f08(10**6, encode_amount_too_large_data(10**6, 1000)) == 1000
    # rate 2 before the limiting hop: 1000 sent arrived as 2000, max 300 -> 150 source
    assert path_maximum_from_f08(1000, encode_amount_too_large_data(2000, 300)) == 150
    assert path_maximum_from_f08(1000, b"") is None  # no data
    assert (
        path_maximum_from_f08(1000, encode_amount_too_large_data(300, 300)) is None
    )  # not too large


# ---------------------------------------------------------------------- probe


def test_probe_then_one_packet_then_close() -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=2500)
    run = drive(sender, path)
    assert sender.error is None and sender.finished
    assert run.kinds() == ["probe"] * 5 + ["money", "close"]
    probes = run.sent[:5]
    # §10: "five unfulfillable Prepares ... 1, 10³, 10⁶, 10⁹, 10¹² (sequences 1-5)"
    assert [p.source_amount for p in probes] == list(DEFAULT_PROBE_AMOUNTS)
    assert [p.sequence for p in run.sent] == [1, 2, 3, 4, 5, 6, 7]
    assert not any(p.fulfillable for p in probes)
    assert all(p.packet.prepare_amount == 0 and p.packet.frames == () for p in probes)
    assert sender.probed_rate == 1
    assert sender.probe_results == {a: a for a in DEFAULT_PROBE_AMOUNTS}
    money = run.money()[0]
    # §10: "StreamMaxMoney and StreamMaxData ..., then StreamMoney (shares = source amount)"
    assert frames_of(money) == [StreamMaxMoney, StreamMaxData, StreamMoney]
    assert money.packet.frames[2] == StreamMoney(1, 2500)
    assert money.min_destination_amount == 2475  # floor(0.99 x 2500)
    assert money.fulfillable
    assert (sender.sent, sender.delivered, path.total) == (2500, 2500, 2500)
    close = run.sent[-1]
    assert close.source_amount == 0 and close.fulfillable
    assert close.packet.frames == (
        StreamClose(1, ErrorCode.NO_ERROR, ""),
        ConnectionClose(ErrorCode.NO_ERROR, ""),
    )
    assert isinstance(sender.close_reply, IlpFulfill)
    stats = sender.stats
    assert (stats.packets_fulfilled, stats.packets_rejected, stats.prepares_sent) == (1, 0, 7)
    assert stats.fraction == 1.0


def test_probes_go_out_in_parallel() -> None:
    sender = StreamSender(DESTINATION, SECRET, amount=10)
    steps = [sender.next(now=T0, iv=bytes(12), condition=bytes(32)) for _ in range(6)]
    assert [type(s) for s in steps] == [OutgoingPacket] * 5 + [Wait]
    assert sender.in_flight == 5
    assert steps[5] == Wait(None)  # wait for the replies


def test_f08_probes_set_the_path_maximum_and_split_the_payment() -> None:
    path = FakePath(max_packet=1000)
    sender = StreamSender(DESTINATION, SECRET, amount=25_000)
    run = drive(sender, path)
    assert sender.error is None
    assert sender.path_max_packet_amount == 1000
    assert sender.probed_rate == 1  # from the 1000 probe: 4 digits
    amounts = [p.source_amount for p in run.money()]
    assert amounts == [1000] * 25
    assert (sender.sent, sender.delivered, path.total) == (25_000, 25_000, 25_000)
    assert sender.stats.packets_fulfilled == 25 and sender.stats.packets_rejected == 0


def test_probe_retries_with_f08_amounts_for_precision() -> None:
    # rate 1/2 behind a 300 limit: 1 -> 0, 1000.. -> F08 (max 300); second volley 300 -> 150
    path = FakePath(max_packet=300, rate=Fraction(1, 2))
    sender = StreamSender(DESTINATION, SECRET, amount=1000)
    run = drive(sender, path)
    assert sender.error is None
    assert [p.source_amount for p in run.sent if p.kind == "probe"] == [*DEFAULT_PROBE_AMOUNTS, 300]
    assert sender.probed_rate == Fraction(1, 2)
    assert [p.source_amount for p in run.money()] == [300, 300, 300, 100]
    assert sender.delivered == path.total == 500


def test_probe_takes_fewer_digits_when_the_path_allows_no_more() -> None:
    # 2.7.1 gives up here; we take 1 arrived of 1000 as the rate
    path = FakePath(max_packet=1000, rate=Fraction(1, 1000))
    sender = StreamSender(DESTINATION, SECRET, amount=5000)
    drive(sender, path)
    assert sender.error is None
    assert sender.probed_rate == Fraction(1, 1000)
    assert sender.delivered == 5


def test_probe_t_errors_back_off_by_one_and_a_half() -> None:
    path = FakePath()
    path.failures.extend(IlpReject("T04", "test.c", "no liquidity") for _ in range(5))
    # second volley: the smallest failed amount minus a third = 1 -> 1 digit, no more to try
    sender = StreamSender(DESTINATION, SECRET, amount=10)
    run = drive(sender, path)
    assert sender.error is None
    assert run.waits == [0.1]
    path2 = FakePath()
    path2.failures.extend(IlpReject("T00", "test.c") for _ in range(6))
    sender2 = StreamSender(DESTINATION, SECRET, amount=10, probe_amounts=(3000, 9000))
    run2 = drive(sender2, path2)
    # 3000/9000 fail -> [2000], fail -> [1334], fail... "waiting 100 ms x1.5"
    assert run2.waits[:3] == [0.1, pytest.approx(0.15), pytest.approx(0.225)]
    assert sender2.error is None


def test_probe_final_rejects_fail_the_connection() -> None:
    path = FakePath()
    path.failures.extend(IlpReject("F02", "test.c", "no route") for _ in range(5))
    sender = StreamSender(DESTINATION, SECRET, amount=10)
    run = drive(sender, path)
    assert sender.error is not None
    assert (sender.error.reason, sender.error.code) == ("rejected", "F02")
    assert "no route" in str(sender.error)
    assert "close" not in run.kinds()  # nobody answered: nothing to close


def test_probe_f99_without_stream_reply_is_not_a_rate() -> None:
    path = FakePath()
    path.failures.extend(IlpReject("F99", "test.r", "nope") for _ in range(5))
    sender = StreamSender(DESTINATION, SECRET, amount=10)
    drive(sender, path)
    assert sender.error is not None and sender.error.code == "F99"
    assert "no STREAM reply" in str(sender.error)


def test_probe_max_volleys_bounds_the_probe() -> None:
    path = FakePath()
    path.failures.extend(IlpReject("T01", "test.c") for _ in range(1000))
    sender = StreamSender(
        DESTINATION, SECRET, amount=10, probe_amounts=(10**12,), max_probe_volleys=4
    )
    run = drive(sender, path)
    assert sender.error is not None and sender.error.reason == "rate"
    assert len(run.sent) == 4


def test_fulfilled_probe_is_a_protocol_error() -> None:
    def fulfil(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        return IlpFulfill(bytes(32), b"")

    sender = StreamSender(DESTINATION, SECRET, amount=10)
    drive(sender, FakePath(tamper=fulfil))
    assert sender.error is not None and sender.error.reason == "protocol"
    assert "probe" in str(sender.error)


def test_known_rate_skips_the_probe() -> None:
    path = FakePath(rate=Fraction(1, 2))
    sender = StreamSender(DESTINATION, SECRET, amount=100, exchange_rate=Fraction(1, 2))
    run = drive(sender, path)
    assert run.kinds() == ["money", "close"]
    assert run.sent[0].sequence == 1
    assert sender.delivered == 50


def test_min_destination_amount_checked_before_paying() -> None:
    path = FakePath(rate=Fraction(9, 10))
    sender = StreamSender(DESTINATION, SECRET, amount=1000, min_destination_amount=901)
    run = drive(sender, path)
    assert sender.error is not None and sender.error.reason == "rate"
    assert sender.error.arrived == 900
    assert run.kinds() == ["probe"] * 5 + ["close"]  # no money moved, connection closed
    assert run.sent[-1].packet.frames == (
        ConnectionClose(ErrorCode.APPLICATION_ERROR, str(sender.error)[:200]),
    )
    assert path.total == 0


# ---------------------------------------------------------------------- money packets


def test_slippage_sets_the_minimum() -> None:
    for slippage, expected in ((Fraction(1, 100), 495), (Fraction(0), 500), ("0.1", 450)):
        path = FakePath(rate=Fraction(1, 2))
        sender = StreamSender(DESTINATION, SECRET, amount=1000, slippage=slippage)
        run = drive(sender, path)
        assert run.money()[0].min_destination_amount == expected
        assert sender.delivered == 500


def test_rate_drop_is_reestimated_from_the_f99_reply() -> None:
    path = FakePath(max_packet=1000)
    sender = StreamSender(DESTINATION, SECRET, amount=3000)
    count = 0

    def drop(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        nonlocal count
        if isinstance(reply, IlpFulfill):
            count += 1
            if count == 1:
                path.rate = Fraction(1, 4)
        return reply

    path.tamper = drop
    run = drive(sender, path)
    assert sender.error is None
    money = run.money()
    # 1000 fulfilled at rate 1, then 990 asked but 250 arrive: F99, rate -> 1/4, retried
    assert [m.min_destination_amount for m in money] == [990, 990, 247, 247]
    assert sender.exchange_rate == Fraction(1, 4)
    assert (sender.sent, sender.delivered, path.total) == (3000, 1500, 1500)
    assert sender.stats.packets_rejected == 1


def test_delivered_counts_what_the_replies_say() -> None:
    path = FakePath(rate=Fraction(7, 10), max_packet=333)
    sender = StreamSender(DESTINATION, SECRET, amount=1000)
    run = drive(sender, path)
    assert (
        sender.delivered
        == path.total
        == sum(floor(m.source_amount * Fraction(7, 10)) for m in run.money())
    )
    assert sender.sent == 1000


def test_f08_on_money_packets_shrinks_them() -> None:
    path = FakePath(max_packet=700)
    sender = StreamSender(DESTINATION, SECRET, amount=2000, exchange_rate=Fraction(1))
    run = drive(sender, path)
    assert [m.source_amount for m in run.money()] == [2000, 700, 700, 600]
    assert sender.stats.packets_rejected == 1 and sender.delivered == 2000
    # without F08 data: maximum = amount - 1, then half of that is tried (2.7.1)
    path = FakePath()
    path.failures.append(IlpReject("F08", "test.c", "too big"))
    sender = StreamSender(DESTINATION, SECRET, amount=1000, exchange_rate=Fraction(1))
    run = drive(sender, path)
    assert [m.source_amount for m in run.money()] == [1000, 499, 501]  # 499 fulfilled, 501 left
    assert sender.delivered == 1000 and sender.path_max_packet_amount == 999


def test_path_maximum_zero_fails() -> None:
    path = FakePath(max_packet=0)
    sender = StreamSender(DESTINATION, SECRET, amount=10)
    drive(sender, path)
    assert sender.error is not None and sender.error.reason == "limit"


def test_own_max_packet_amount() -> None:
    sender = StreamSender(DESTINATION, SECRET, amount=250, max_packet_amount=100)
    run = drive(sender, FakePath())
    assert [m.source_amount for m in run.money()] == [100, 100, 50]


def test_t_errors_back_off_doubling_and_t04_shrinks_by_a_third() -> None:
    path = FakePath()
    sender = StreamSender(
        DESTINATION, SECRET, amount=2000, exchange_rate=Fraction(1), max_packet_amount=900
    )
    path.failures.extend([IlpReject("T04", "test.c"), IlpReject("T04", "test.c")])
    run = drive(sender, path)
    assert sender.error is None
    assert run.waits == [0.1, 0.2]  # §10: "retry after 100 ms, doubling"
    amounts = [m.source_amount for m in run.money()]
    assert amounts[:3] == [900, 600, 400]  # "T04 shrinks it by ⅓"
    assert sum(amounts[2:]) == 2000 and sender.delivered == 2000


def test_t_errors_give_up_after_max_retries() -> None:
    path = FakePath()
    path.failures.extend(IlpReject("T05", "test.c", "slow down") for _ in range(10))
    sender = StreamSender(DESTINATION, SECRET, amount=100, exchange_rate=Fraction(1), max_retries=2)
    run = drive(sender, path)
    assert sender.error is not None
    assert (sender.error.reason, sender.error.code) == ("retries", "T05")
    assert len(run.money()) == 3 and "close" not in run.kinds()
    assert run.waits == [0.1, 0.2]


@pytest.mark.parametrize("code", ["R00", "F02", "F05", "F00"])
def test_final_errors_fail_at_once(code: str) -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=100)
    drive_probe_only(sender, path)
    path.failures.append(IlpReject(code, "test.c", "refused"))
    run = drive(sender, path)
    assert sender.error is not None
    assert (sender.error.reason, sender.error.code, sender.error.ilp_message) == (
        "rejected",
        code,
        "refused",
    )
    assert sender.sent == 0 and len(run.money()) == 1


def drive_probe_only(sender: StreamSender, path: FakePath) -> None:
    """Let the probe finish (answering every probe), leaving the sender in "send"."""
    while sender.phase == "probe":
        step = sender.next(now=T0, iv=bytes(12), condition=bytes(32))
        assert isinstance(step, OutgoingPacket)
        sender.on_reply(step.sequence, path.handle(step.prepare))


def test_unexplained_f99_fails() -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=100)
    drive_probe_only(sender, path)

    def refuse(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        packet = open_packet(derive_keys(SECRET), prepare.data)
        data = path.reply_data(packet.sequence, ILP_REJECT, prepare.amount, [])
        return IlpReject("F99", "test.receiver", "refused by app", data)

    path.tamper = refuse
    run = drive(sender, path)
    assert sender.error is not None and sender.error.arrived == 100
    assert "refused" in str(sender.error)
    assert run.kinds()[-1] == "close"


def test_max_packets_caps_the_work() -> None:
    sender = StreamSender(DESTINATION, SECRET, amount=10_000, max_packet_amount=10, max_packets=20)
    run = drive(sender, FakePath())
    assert sender.error is not None and sender.error.reason == "limit"
    assert len([p for p in run.sent if p.kind != "close"]) == 20
    assert sender.sent == 150  # 15 money packets after the 5 probes
    assert run.kinds()[-1] == "close"


# ---------------------------------------------------------------------- reply checks


def _rewrap(
    secret: bytes, sequence_delta: int = 0, packet_type: int | None = None
) -> Callable[[IlpPrepare, IlpReply], IlpReply]:
    """Re-encrypt money-packet replies with another secret / sequence / type."""

    def tamper(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        if prepare.amount < 5 or not reply.data:  # leave probes 1 alone
            return reply
        packet = open_packet(derive_keys(SECRET), reply.data)
        wrong = StreamPacket(
            packet.sequence + sequence_delta,
            packet.ilp_packet_type if packet_type is None else packet_type,
            packet.prepare_amount,
            packet.frames,
        )
        data = seal_packet(derive_keys(secret), bytes(12), wrong)
        if isinstance(reply, IlpFulfill):
            return IlpFulfill(reply.fulfillment, data)
        return IlpReject(reply.code, reply.triggered_by, reply.message, data)

    return tamper


def test_reply_under_the_wrong_key_is_a_protocol_error() -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=100, exchange_rate=Fraction(1))
    path.tamper = _rewrap(OTHER_SECRET)
    run = drive(sender, path)
    error = sender.error
    assert error is not None and error.reason == "protocol"
    assert "does not decrypt" in str(error)
    # the Fulfill's fulfillment was valid: paid; counted at the guaranteed minimum
    assert (sender.sent, sender.delivered) == (100, 99)
    assert run.kinds() == ["money"]  # no authenticated answer yet: nothing to close


def test_reply_with_wrong_sequence_or_type_is_a_protocol_error() -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=100)
    drive_probe_only(sender, path)
    path.tamper = _rewrap(SECRET, sequence_delta=1)
    run = drive(sender, path)
    assert sender.error is not None and "sequence" in str(sender.error)
    close = run.sent[-1]
    assert close.kind == "close"
    assert close.packet.frames[-1].error_code == ErrorCode.PROTOCOL_VIOLATION  # type: ignore[union-attr]

    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=100)
    drive_probe_only(sender, path)
    path.tamper = _rewrap(SECRET, packet_type=ILP_REJECT)  # a type-14 packet in a Fulfill
    drive(sender, path)
    assert sender.error is not None and "type 14" in str(sender.error)


def test_fulfillment_must_match_the_condition() -> None:
    def forge(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        return IlpFulfill(bytes(32), reply.data) if isinstance(reply, IlpFulfill) else reply

    sender = StreamSender(DESTINATION, SECRET, amount=100, exchange_rate=Fraction(1))
    drive(sender, FakePath(tamper=forge))
    assert sender.error is not None and "fulfillment" in str(sender.error)
    assert sender.sent == 0


def test_fulfill_without_data_counts_the_minimum() -> None:
    def strip(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        return IlpFulfill(reply.fulfillment) if isinstance(reply, IlpFulfill) else reply

    sender = StreamSender(DESTINATION, SECRET, amount=1000, exchange_rate=Fraction(1))
    drive(sender, FakePath(tamper=strip))
    assert sender.error is None
    assert (sender.sent, sender.delivered, sender.fulfills_without_reply) == (1000, 990, 1)


# ---------------------------------------------------------------------- receive max


def test_receive_max_from_fulfills_limits_the_money() -> None:
    path = FakePath(receive_max=1500, max_packet=1000)
    sender = StreamSender(DESTINATION, SECRET, amount=3000)
    run = drive(sender, path)
    assert [m.source_amount for m in run.money()] == [1000, 500]
    assert sender.error is not None and sender.error.reason == "limit"
    assert "accepts no more money" in str(sender.error)
    assert (sender.sent, sender.delivered, path.total) == (1500, 1500, 1500)
    assert run.kinds()[-1] == "close"


def test_receive_max_from_an_f99_lowers_the_next_packet() -> None:
    path = FakePath(receive_max=1000, advertise=False)
    sender = StreamSender(DESTINATION, SECRET, amount=2500, exchange_rate=Fraction(1))
    run = drive(sender, path)
    # 2500 refused with StreamMaxMoney(1, 1000, 0): retried with 1000, then no room left
    # (its Fulfill said 1000 arrived, so the room is used up even without a new frame)
    assert [m.source_amount for m in run.money()] == [2500, 1000]
    assert sender.delivered == path.total == 1000
    assert sender.error is not None and sender.error.reason == "limit"


def test_receive_max_advertisements_never_shrink() -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=100, exchange_rate=Fraction(1))
    path.extra_frames = [
        StreamMaxMoney(1, 5000, 0),
        StreamMaxMoney(1, 10, 0),
        StreamMaxMoney(3, 0, 0),
    ]
    drive(sender, path)
    assert sender.error is None and sender.delivered == 100


def test_amount_as_a_send_limit_stops_at_the_receive_limit_without_error() -> None:
    # HTTP-ILP over STREAM: the send limit is the client's max price (2.7.1 setSendMax),
    # the receiver's limit is the price
    path = FakePath(receive_max=1000, advertise=False)
    sender = StreamSender(
        DESTINATION, SECRET, amount=2500, exchange_rate=Fraction(1), amount_is_limit=True
    )
    run = drive(sender, path)
    assert [m.source_amount for m in run.money()] == [2500, 1000]
    assert sender.error is None
    assert sender.delivered == path.total == 1000
    assert run.kinds()[-1] == "close"


def test_hold_keeps_the_connection_open_until_end() -> None:
    path = FakePath(receive_max=10, echo=True)
    sender = StreamSender(
        DESTINATION,
        SECRET,
        amount=15,
        data=b"hi",
        exchange_rate=Fraction(1),
        amount_is_limit=True,
        hold=True,
        min_incoming_data=1,
    )
    for counter in range(1, 50):
        step = sender.next(now=T0, iv=counter.to_bytes(12, "big"), condition=bytes(32))
        if not isinstance(step, OutgoingPacket):
            break
        sender.on_reply(step.sequence, path.handle(step.prepare))
    # everything sent, the data came back: it waits for end(), sending nothing
    assert step == Wait(None) and sender.in_flight == 0
    assert (sender.delivered, sender.received_data, sender.phase) == (10, 2, "send")
    assert not sender.ended
    sender.end()
    close = sender.next(now=T0, iv=bytes(12), condition=bytes(32))
    assert isinstance(close, OutgoingPacket) and close.kind == "close"
    assert ConnectionClose in frames_of(close) and StreamClose in frames_of(close)
    sender.on_reply(close.sequence, path.handle(close.prepare))
    assert sender.finished and sender.error is None
    assert sender.next(now=T0, iv=bytes(12), condition=bytes(32)) is None


def test_end_stops_the_money_and_the_data_wait() -> None:
    path = FakePath(max_packet=100)
    sender = StreamSender(DESTINATION, SECRET, amount=1000, min_incoming_data=5, hold=True)
    drive_probe_only(sender, path)
    first = sender.next(now=T0, iv=bytes(12), condition=bytes(32))
    assert isinstance(first, OutgoingPacket) and first.kind == "money"
    sender.end()  # a packet is in flight: it is answered first
    assert sender.next(now=T0, iv=bytes(12), condition=bytes(32)) == Wait(None)
    sender.on_reply(first.sequence, path.handle(first.prepare))
    run = drive(sender, path)
    assert run.kinds() == ["close"]
    assert sender.error is None and sender.sent == 100  # no more money, no data wait


# ---------------------------------------------------------------------- closing


def test_remote_connection_close_ends_without_our_close() -> None:
    path = FakePath(max_packet=100)
    sender = StreamSender(DESTINATION, SECRET, amount=1000)
    drive_probe_only(sender, path)
    path.extra_frames = [ConnectionClose(ErrorCode.APPLICATION_ERROR, "shop closed")]
    run = drive(sender, path)
    assert sender.error is not None and sender.error.reason == "remote_closed"
    assert sender.error.stream_error == ErrorCode.APPLICATION_ERROR
    assert "shop closed" in str(sender.error) and sender.remote_closed
    assert sender.sent == 100  # the first packet was fulfilled, then it closed
    assert "close" not in run.kinds()


def test_remote_close_after_everything_is_success() -> None:
    path = FakePath(extra_frames=[StreamClose(1, ErrorCode.NO_ERROR, "")])
    sender = StreamSender(DESTINATION, SECRET, amount=100, exchange_rate=Fraction(1))
    run = drive(sender, path)
    assert sender.error is None
    # the stream is closed by the receiver: our close carries ConnectionClose only
    assert run.sent[-1].packet.frames == (ConnectionClose(ErrorCode.NO_ERROR, ""),)


def test_quote_only_connection_closes_without_stream_close() -> None:
    sender = StreamSender(DESTINATION, SECRET, amount=0, probe_amounts=(1000, 1234))
    run = drive(sender, FakePath(rate=Fraction(1, 2)))
    assert sender.error is None
    assert sender.probe_results == {1000: 500, 1234: 617}
    assert run.kinds() == ["probe", "probe", "close"]
    assert run.sent[-1].packet.frames == (ConnectionClose(ErrorCode.NO_ERROR, ""),)


def test_no_close_when_disabled_and_close_reply_errors_are_ignored() -> None:
    sender = StreamSender(DESTINATION, SECRET, amount=10, close=False)
    run = drive(sender, FakePath())
    assert "close" not in run.kinds() and sender.finished

    def garble(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        if prepare.amount == 0:
            return IlpReject("F99", "test.r", "", b"junk" * 10)
        return reply

    sender = StreamSender(DESTINATION, SECRET, amount=10)
    drive(sender, FakePath(tamper=garble))
    assert sender.error is None and isinstance(sender.close_reply, IlpReject)


def test_link_failure_ends_the_connection() -> None:
    sender = StreamSender(DESTINATION, SECRET, amount=10, exchange_rate=Fraction(1))
    out = sender.next(now=T0, iv=bytes(12), condition=bytes(32))
    assert isinstance(out, OutgoingPacket)
    sender.on_send_failure(out.sequence, "connection reset")
    assert sender.finished and sender.error is not None and sender.error.reason == "link"
    assert sender.next(now=T0, iv=bytes(12), condition=bytes(32)) is None
    with pytest.raises(LocalProtocolError):
        sender.on_reply(out.sequence, IlpReject("F99"))


# ---------------------------------------------------------------------- data


def test_data_rides_along_and_echoes_come_back() -> None:
    path = FakePath(echo=True)
    sender = StreamSender(DESTINATION, SECRET, amount=100, data=b"hello ")
    sender.write(b"world")
    run = drive(sender, path)
    assert sender.error is None
    money = run.money()[0]
    assert [f for f in money.packet.frames if isinstance(f, StreamData)] == [
        StreamData(1, 0, b"hello "),
        StreamData(1, 6, b"world"),
    ]
    assert sender.received_data == 11
    assert sender.read() == b"hello world"
    assert sender.read() == b""
    with pytest.raises(LocalProtocolError):
        sender.write(b"late")


def test_data_only_and_large_data_is_split_by_the_window() -> None:
    path = FakePath(echo=False, extra_frames=[StreamMaxData(1, 50_000)])
    blob = bytes(range(256)) * 160  # 40960 bytes
    sender = StreamSender(DESTINATION, SECRET, data=blob, exchange_rate=Fraction(1))
    run = drive(sender, path)
    assert sender.error is None
    sent = [f for p in run.sent for f in p.packet.frames if isinstance(f, StreamData)]
    assert b"".join(f.data for f in sorted(sent, key=lambda f: f.offset)) == blob
    assert [p.kind for p in run.sent] == ["data", "data", "close"]
    # the first packet is limited to the assumed 16384-byte window until told more
    assert sum(len(f.data) for f in run.sent[0].packet.frames if isinstance(f, StreamData)) == 16384


def test_rejected_data_is_resent_exactly() -> None:
    path = FakePath(echo=True)
    path.failures.append(IlpReject("T00", "test.c"))
    sender = StreamSender(DESTINATION, SECRET, data=b"abc", exchange_rate=Fraction(1))
    run = drive(sender, path)
    first, second = run.sent[0], run.sent[1]
    assert first.packet.frames[-1] == second.packet.frames[-1] == StreamData(1, 0, b"abc")
    assert sender.read() == b"abc"


def test_wait_for_incoming_data_polls_with_backoff() -> None:
    path = FakePath()
    answered = 0

    def later(prepare: IlpPrepare, reply: IlpReply) -> IlpReply:
        nonlocal answered
        answered += 1
        if answered == 4 and isinstance(reply, IlpFulfill):  # the third poll gets data
            packet = open_packet(derive_keys(SECRET), prepare.data)
            data = path.reply_data(packet.sequence, ILP_FULFILL, 0, [StreamData(1, 0, b"ok")])
            return IlpFulfill(reply.fulfillment, data)
        return reply

    path.tamper = later
    sender = StreamSender(
        DESTINATION, SECRET, amount=5, exchange_rate=Fraction(1), min_incoming_data=1
    )
    run = drive(sender, path)
    assert sender.error is None and sender.read() == b"ok"
    assert run.kinds() == ["money", "data", "data", "data", "close"]
    assert run.waits == [0.1, 0.2]


def test_wait_for_incoming_data_is_bounded() -> None:
    sender = StreamSender(
        DESTINATION, SECRET, amount=5, exchange_rate=Fraction(1), min_incoming_data=1, max_polls=3
    )
    run = drive(sender, FakePath())
    assert sender.error is not None and sender.error.reason == "limit"
    assert run.kinds().count("data") == 3


def test_out_of_order_and_duplicate_data_is_reassembled() -> None:
    path = FakePath(
        extra_frames=[StreamData(1, 3, b"def"), StreamData(1, 0, b"abc"), StreamData(1, 0, b"abc")]
    )
    sender = StreamSender(DESTINATION, SECRET, amount=5, exchange_rate=Fraction(1))
    drive(sender, path)
    assert sender.read() == b"abcdef"


def test_data_beyond_our_window_is_a_flow_control_error() -> None:
    path = FakePath(extra_frames=[StreamData(1, 0, bytes(100))])
    sender = StreamSender(
        DESTINATION, SECRET, amount=5, exchange_rate=Fraction(1), receive_window=50
    )
    run = drive(sender, path)
    assert sender.error is not None and sender.error.reason == "protocol"
    assert sender.sent == 5  # paid before the violation was seen
    close = run.sent[-1]
    assert close.kind == "close"
    assert close.packet.frames[-1] == ConnectionClose(
        ErrorCode.FLOW_CONTROL_ERROR, str(sender.error)[:200]
    )


# ---------------------------------------------------------------------- misc


def test_receipts_and_asset_details_are_kept() -> None:
    path = FakePath(extra_frames=[StreamReceipt(1, b"r" * 58), ConnectionAssetDetails("XYZ", 9)])
    sender = StreamSender(DESTINATION, SECRET, amount=5)
    drive(sender, path)
    assert sender.receipt == b"r" * 58
    assert sender.remote_asset == ("XYZ", 9)


def test_connection_new_address_only_when_asked() -> None:
    path = FakePath()
    sender = StreamSender(DESTINATION, SECRET, amount=5)
    run = drive(sender, path)
    assert not any(isinstance(f, ConnectionNewAddress) for p in run.sent for f in p.packet.frames)
    sender = StreamSender(
        DESTINATION, SECRET, amount=5, source_address="test.me", source_asset=("XYZ", 9)
    )
    run = drive(sender, FakePath())
    probes = [p for p in run.sent if p.kind == "probe"]
    # "each carrying ConnectionNewAddress and ConnectionAssetDetails until the server has
    # answered once": all five probes go out before any answer
    assert all(
        p.packet.frames == (ConnectionNewAddress("test.me"), ConnectionAssetDetails("XYZ", 9))
        for p in probes
    )
    assert not any(isinstance(f, ConnectionNewAddress) for f in run.money()[0].packet.frames)


def test_same_inputs_same_bytes() -> None:
    a = drive(StreamSender(DESTINATION, SECRET, amount=3000, max_packet_amount=1000), FakePath())
    b = drive(StreamSender(DESTINATION, SECRET, amount=3000, max_packet_amount=1000), FakePath())
    assert [p.prepare for p in a.sent] == [p.prepare for p in b.sent]
    assert all(p.prepare.expires_at == T0 + timedelta(seconds=30) for p in a.sent)


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        StreamSender(DESTINATION, b"short")
    with pytest.raises(ConfigError):
        StreamSender(DESTINATION, SECRET, amount=-1)
    with pytest.raises(ConfigError):
        StreamSender(DESTINATION, SECRET, slippage=1)
    with pytest.raises(ConfigError):
        StreamSender(DESTINATION, SECRET, stream_id=2)  # server-side parity
    with pytest.raises(ConfigError):
        StreamSender(DESTINATION, SECRET, max_packet_amount=0)
    with pytest.raises(ConfigError):
        StreamSender(DESTINATION, SECRET, probe_amounts=())
    sender = StreamSender(DESTINATION, SECRET, amount=1)
    with pytest.raises(ConfigError):
        sender.next(now=T0, iv=b"short", condition=bytes(32))


# ---------------------------------------------------------------------- property


@settings(max_examples=120, deadline=None)
@given(
    amount=st.integers(1, 200_000),
    max_packet=st.one_of(st.none(), st.integers(1, 50_000)),
    rate=st.fractions(Fraction(1, 10), Fraction(10)),
    failures=st.lists(st.sampled_from(["T04", "T00", "F08"]), max_size=4),
)
def test_any_path_pays_exactly_the_amount(
    amount: int, max_packet: int | None, rate: Fraction, failures: list[str]
) -> None:
    path = FakePath(rate=rate, max_packet=max_packet)
    sender = StreamSender(DESTINATION, SECRET, amount=amount, max_packets=10_000, max_retries=20)
    drive_probe_only(sender, path)
    path.failures.extend(IlpReject(code, "test.c") for code in failures)
    drive(sender, path, limit=50_000)
    if sender.error is not None:
        # only a path that cannot carry the money in max_packets may fail
        assert sender.error.reason in ("limit", "rate"), sender.error
        return
    assert sender.sent == amount
    assert sender.delivered == path.total
    assert (
        sender.delivered
        >= floor(amount * rate * Fraction(99, 100)) - sender.stats.packets_fulfilled
    )


# ====================================================================== end to end
#
# The real client (AsyncPaymentClient / PaymentClient / the CLI) over an in-memory
# connector (ilp_receiver.testing.InMemoryNetwork: IL-DCP, rate, F08 above the sender's
# max_packet_amount) to a minimal STREAM receiver (FakePath's logic on a network child)
# behind a tiny SPSP endpoint.


async def stream_receiver(network: InMemoryNetwork, name: str, path: FakePath) -> str:
    """Attach ``path`` as child ``name``; returns its address (the destination)."""
    link = await network.add_child(name)

    async def handle(prepare: IlpPrepare) -> IlpReply:
        return path.handle(prepare)

    link.set_handler(handle)
    await link.start()
    return network.child_address(name) + ".conn1"


@dataclass
class SpspServer:
    """SPSP for one STREAM destination (and a PSK2 one for PSK2-only clients)."""

    destination: str
    secret: bytes = SECRET
    psk2: SpspResponse | None = None
    accepts: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept")
        self.accepts.append(accept or "")
        media_type = negotiate_setup(accept, stream=True)
        headers = {"Cache-Control": "max-age=60"}
        if media_type == SPSP4_MEDIA_TYPE:
            body = SpspResponse(self.destination, self.secret, protocol="stream").to_json()
            return web.json_response(body, content_type=SPSP4_MEDIA_TYPE, headers=headers)
        if media_type is not None and self.psk2 is not None:
            return web.json_response(
                self.psk2.to_json(), content_type="application/spsp+json", headers=headers
            )
        return web.json_response({"id": "NotAcceptable"}, status=406)


async def serve_spsp(server: SpspServer) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/.well-known/pay", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/pay"


@dataclass
class World:
    network: InMemoryNetwork
    path: FakePath
    spsp: SpspServer
    url: str
    client: AsyncPaymentClient


@pytest.fixture
async def world() -> AsyncIterator[World]:
    network = InMemoryNetwork()
    path = FakePath()
    destination = await stream_receiver(network, "bob", path)
    spsp = SpspServer(destination)
    runner, url = await serve_spsp(spsp)
    client = await AsyncPaymentClient.connect(
        await network.add_child("alice", max_packet_amount=1000)
    )
    yield World(network, path, spsp, url, client)
    await client.close()
    await runner.cleanup()


async def test_client_pays_stream_in_many_packets(world: World) -> None:
    seen: list[ChunkProgress] = []
    result = await world.client.pay(world.url, 25_000, progress=seen.append)
    # auto: "A STREAM client sends both types" and uses STREAM for application/spsp4+json
    assert world.spsp.accepts == ["application/spsp4+json, application/spsp+json"]
    assert result.protocol == "stream"
    assert (result.source_amount, result.delivered_amount) == (25_000, 25_000)
    assert result.packets_fulfilled == 25 and result.packets_rejected == 0
    assert result.exchange_rate == 1
    assert world.path.total == 25_000
    # probes (5, three F08 from the connector), 25 money packets, one close
    assert result.prepares_sent == 31
    money = [
        f
        for f in world.network.forwarded
        if f.prepare.amount > 0 and isinstance(f.reply, IlpFulfill)
    ]
    assert len(money) == 25 and {f.prepare.amount for f in money} == {1000}
    assert [p.source_sent for p in seen] == [1000 * i for i in range(1, 26)]
    assert all(p.protocol == "stream" and p.chunk_size <= 1000 for p in seen)
    assert result.to_json() == {
        "destination": world.spsp.destination,
        "protocol": "stream",
        "source_amount": "25000",
        "delivered_amount": "25000",
        "packets_fulfilled": 25,
        "packets_rejected": 0,
        "prepares_sent": 31,
        "exchange_rate": "1",
    }


async def test_client_stream_with_a_rate_and_data(world: World) -> None:
    world.network.rate = Fraction(1, 2)
    world.path.echo = True

    async def slow_progress(progress: ChunkProgress) -> None:
        assert progress.delivered * 2 == progress.source_sent

    result = await world.client.pay(world.url, 2500, data=b"ping", progress=slow_progress)
    assert result.delivered_amount == 1250 == world.path.total
    assert result.exchange_rate == Fraction(1, 2)
    assert result.data == b"ping"  # echoed in the receiver's reply


async def test_client_stream_quote(world: World) -> None:
    world.network.rate = Fraction(19, 20)
    quote = await world.client.quote(world.url, 800)
    assert quote.protocol == "stream"
    assert (quote.source_amount, quote.destination_amount, quote.code) == (800, 760, "F99")
    assert quote.to_json()["protocol"] == "stream" and "psk2" not in quote.to_json()
    assert world.path.total == 0
    # a quote above the path's maximum packet amount comes from the probed rate
    quote = await world.client.quote(world.url, 5000)
    assert quote.destination_amount == 4750


async def test_client_stream_errors(world: World) -> None:
    nowhere = StreamDestination("test.memory.nobody.x", SECRET)
    with pytest.raises(PaymentError) as info:
        await world.client.pay(nowhere, 100)
    assert info.value.code == "F02" and info.value.result.protocol == "stream"
    assert info.value.result.source_amount == 0
    with pytest.raises(QuoteError):
        await world.client.quote(nowhere, 100)
    with pytest.raises(ConfigError):
        await world.client.pay(nowhere, 100, protocol="psk2")
    with pytest.raises(ConfigError):
        await world.client.pay_chunked(world.url)  # STREAM pays by source amount
    # a rate too low for the minimum fails before any money moves
    world.network.rate = Fraction(1, 2)
    with pytest.raises(PaymentError) as info:
        await world.client.pay(world.url, 1000, min_destination_amount=600)
    assert info.value.arrived == 500 and world.path.total == 0
    # the receiver stops taking money: the part that went through is reported
    world.network.rate = Fraction(1)
    world.path.receive_max = 1500
    with pytest.raises(PaymentError) as info:
        await world.client.pay(world.url, 3000)
    assert info.value.result.delivered_amount == 1500 == world.path.total
    assert "accepts no more money" in str(info.value)


async def test_client_pay_chunked_uses_stream_too(world: World) -> None:
    seen: list[ChunkProgress] = []
    result = await world.client.pay_chunked(
        world.url, source_amount=2500, chunk_size=600, progress=seen.append
    )
    assert result.protocol == "stream" and result.packets_fulfilled == 5
    assert [p.source_sent for p in seen] == [600, 1200, 1800, 2400, 2500]


async def test_client_link_failure_during_stream(world: World) -> None:
    ours, _theirs = memory_link_pair()
    sender = AsyncPaymentClient(ours, static_config=PeerConfig("test.x", "X", 0))
    await ours.start()  # the other end never starts: sends fail
    with pytest.raises(PaymentError, match="uplink failed"):
        await sender.pay(StreamDestination(world.spsp.destination, SECRET), 100)
    await sender.close()
    await ours.stop()


async def test_query_picks_the_protocol_by_accept_and_content_type(world: World) -> None:
    world.spsp.psk2 = SpspResponse("test.memory.bob.psk2", OTHER_SECRET)
    auto = await world.client.query(world.url)
    assert auto.protocol == "stream" and auto.shared_secret == SECRET
    assert await world.client.query(world.url) is not auto  # STREAM answers are not cached
    psk2 = await world.client.query(world.url, protocol="psk2")
    assert psk2.protocol == "psk2" and psk2.destination_account == "test.memory.bob.psk2"
    assert await world.client.query(world.url, protocol="psk2") is psk2  # PSK2: cached
    stream = await world.client.query(world.url, protocol="stream")
    assert stream.protocol == "stream"
    assert world.spsp.accepts[-2:] == [
        "application/spsp+json",
        "application/spsp4+json",
    ]
    # a PSK2-only payment refuses a STREAM target and vice versa: "the secrets are not
    # interchangeable" (12-stream.md §14)
    with pytest.raises(ConfigError):
        await world.client.setup(
            SpspResponse("test.a.b", SECRET, protocol="stream"), protocol="psk2"
        )
    with pytest.raises(ConfigError):
        await world.client.setup(Psk2Destination("test.a.b", SECRET), protocol="stream")
    with pytest.raises(ConfigError):
        AsyncPaymentClient(protocol="carrier-pigeon")  # type: ignore[arg-type]


async def test_stream_only_query_refuses_a_psk2_answer() -> None:
    async def psk2_only(request: web.Request) -> web.Response:
        body = SpspResponse("test.x.y", SECRET).to_json()
        return web.json_response(body, content_type="application/spsp+json")

    app = web.Application()
    app.router.add_get("/", psk2_only)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = AsyncPaymentClient(protocol="stream")
    try:
        with pytest.raises(SpspError, match="only STREAM"):
            await client.query(f"http://127.0.0.1:{runner.addresses[0][1]}/")
        auto = await client.query(f"http://127.0.0.1:{runner.addresses[0][1]}/", protocol="auto")
        assert auto.protocol == "psk2"
    finally:
        await client.close()
        await runner.cleanup()


# ---------------------------------------------------------------------- sync, CLI


@dataclass
class PortalWorld:
    network: InMemoryNetwork
    path: FakePath
    runner: web.AppRunner
    url: str


@pytest.fixture
def portal_world() -> Iterator[PortalWorld]:
    portal = default_portal()

    async def setup() -> PortalWorld:
        network = InMemoryNetwork()
        path = FakePath()
        runner, url = await serve_spsp(SpspServer(await stream_receiver(network, "bob", path)))
        return PortalWorld(network, path, runner, url)

    world = portal.call(setup)
    yield world
    portal.call(world.runner.cleanup)


def test_sync_facade_pays_stream(portal_world: PortalWorld) -> None:
    portal = default_portal()
    link = portal.call(portal_world.network.add_child, "sync", max_packet_amount=100)
    with PaymentClient(link) as client:
        assert client.query(portal_world.url).protocol == "stream"
        assert isinstance(client.setup(portal_world.url), StreamDestination)
        seen: list[ChunkProgress] = []
        result = client.pay(portal_world.url, 250, progress=seen.append)
        assert result.protocol == "stream" and result.delivered_amount == 250
        assert len(seen) == 3
        assert client.quote(portal_world.url, 50).destination_amount == 50
    assert portal_world.path.total == 250


def test_cli_pays_stream(portal_world: PortalWorld, capsys: pytest.CaptureFixture[str]) -> None:
    portal = default_portal()
    gateway = portal.call(portal_world.network.serve_btp)
    url = portal_world.url
    try:
        assert main(["query", url]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["protocol"] == "stream" and shown["shared_secret"] == "<redacted>"
        code = main(
            ["pay", url, "2500", "--uplink", gateway.url("cli"), "--max-packet-amount", "1000",
             "--progress"]
        )  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0, captured
        out = json.loads(captured.out.splitlines()[-1])
        assert out["ok"] is True and out["protocol"] == "stream"
        assert (out["delivered_amount"], out["packets_fulfilled"]) == ("2500", 3)
        assert "100.0%" in captured.err and "packets 3" in captured.err  # the bar
        # one packet: no bar
        assert (
            main(["pay", url, "10", "--uplink", gateway.url("cli2"), "--protocol", "stream"]) == 0
        )
        captured = capsys.readouterr()
        assert json.loads(captured.out)["packets_fulfilled"] == 1 and captured.err == ""
        assert main(["pay", url, "700", "--uplink", gateway.url("cli3"), "--quote"]) == 0
        quote = json.loads(capsys.readouterr().out)
        assert (quote["protocol"], quote["delivered_amount"]) == ("stream", "700")
        assert quote["mode"] == "quote" and quote["error"] is None
        # PSK2 only: this endpoint has no PSK2 answer (406)
        assert main(["pay", url, "10", "--uplink", gateway.url("cli4"), "--protocol", "psk2"]) == 1
        assert "406" in json.loads(capsys.readouterr().out)["error"]["message"]
        code = main(
            [
                "pay",
                url,
                "1000",
                "--uplink",
                gateway.url("cli5"),
                "--min-destination-amount",
                "1001",
            ]
        )
        assert code == 1
        failed = json.loads(capsys.readouterr().out)
        assert failed["ok"] is False and failed["protocol"] == "stream"
        with pytest.raises(SystemExit) as info:  # argparse refuses a slippage of 200 %
            main(["pay", url, "10", "--uplink", gateway.url("x"), "--slippage", "2"])
        assert info.value.code == 2
    finally:
        portal.call(gateway.close)
    assert portal_world.path.total == 2510


def test_progress_bar_counts_packets_for_stream() -> None:
    import io

    stream = io.StringIO()
    bar = ProgressBar(stream, width=10, multi_only=True, enabled=True, clock=lambda: 0.0)
    bar(ChunkProgress(10, 10, 1, 0, 10, 10, None, "stream"))  # done in one packet
    assert stream.getvalue() == ""
    bar(ChunkProgress(500, 500, 1, 0, 500, 1000, None, "stream"))
    line = "[#####.....]  50.0% sent 500/1000 delivered 500 packets 1 (+0 rejected)"
    assert stream.getvalue() == "\r" + line.ljust(100)
