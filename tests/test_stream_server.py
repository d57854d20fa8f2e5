"""ilp_receiver.stream.server: the sans-I/O STREAM server (spec ``12-stream.md`` §2.3,
§5-§12, §15).

Vectors (``stream.json``): ``server_cases`` (22 hand-built Prepares fed to a 2.7.1
server, with its replies) and ``exchanges`` (four complete client/server runs).  Where
our server behaves like 2.7.1 the replies are compared byte for byte; where it differs
on purpose the test says which §15 item and asserts what the module docstring
documents.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver import crypto
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    decode_packet,
    decode_prepare,
    encode_packet,
)
from ilp_receiver.codec.stream import (
    MAX_UINT64,
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionDataBlocked,
    ConnectionMaxData,
    ConnectionMaxStreamId,
    ConnectionNewAddress,
    ErrorCode,
    Frame,
    StreamClose,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamMoneyBlocked,
    StreamPacket,
    StreamReceipt,
    encode_stream_packet,
)
from ilp_receiver.crypto import open_envelope, seal_envelope
from ilp_receiver.errors import ConfigError, EncodeError, LocalProtocolError
from ilp_receiver.psk2.receiver import EXPIRED_MESSAGE
from ilp_receiver.stream.receipts import verify_receipt
from ilp_receiver.stream.secrets import (
    MAX_CONNECTION_TAG_LENGTH,
    StreamKeys,
    StreamServerSecrets,
    derive_keys,
    open_packet,
    seal_packet,
)
from ilp_receiver.stream.server import (
    ASSET_DETAILS_CHANGED,
    BUFFER_FULL_MESSAGE,
    LIMIT_REACHED_MESSAGE,
    RECEIPT_STREAM_ID_MESSAGE,
    STREAM_CLOSED_MESSAGE,
    CloseReason,
    ConnectionClosed,
    ConnectionOpened,
    DataReceived,
    Decision,
    MoneyReceived,
    StreamClosed,
    StreamCredit,
    StreamEvent,
    StreamLimits,
    StreamOpened,
    StreamServer,
    account_to_tag,
    not_a_prepare_reject,
    tag_to_account,
)
from tests.test_stream_codec import FRAMES, packet_from_json
from tests.vectorlib import case_id, cases, section

F = "stream.json"
# Read at import so tests/test_vector_coverage.py sees every section requested.
SERVER_CASES: dict[str, Any] = section(F, "server_cases")
EXCHANGES: list[dict[str, Any]] = cases(F, "exchanges")

FAST = settings(max_examples=150, deadline=None)
NOW = datetime(2020, 6, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(seconds=30)
ADDRESS = "test.example.server"
UNLIMITED = MAX_UINT64
SERVER_SECRET = bytes(range(32))


def vector_now() -> datetime:
    """The generator's fixed clock (``fixed_now``) as a datetime."""
    return datetime.fromisoformat(section(F, "fixed_now").replace("Z", "+00:00"))


_ivs = itertools.count(1)


def fresh_iv() -> bytes:
    """A distinct 12-byte IV per call (tests only need uniqueness)."""
    return next(_ivs).to_bytes(12, "big")


def settle(
    server: StreamServer, decision: Decision, *, applied: bool = True
) -> IlpReject | IlpFulfill:
    """What a simple I/O layer does: credit every StreamCredit (``applied``) and fulfil."""
    if isinstance(decision, StreamCredit):
        return server.fulfill(decision, applied=applied, iv=fresh_iv())
    return decision


def make_server(**limits: Any) -> StreamServer:
    """A server on ADDRESS with asset XYZ/9 and the given StreamLimits fields."""
    receive_max = limits.pop("receive_max", None)
    secrets = limits.pop("secrets", None) or StreamServerSecrets(SERVER_SECRET)
    server = StreamServer(
        secrets,
        asset_code="XYZ",
        asset_scale=9,
        limits=StreamLimits(**limits),
        receive_max=receive_max,
    )
    server.address = ADDRESS
    return server


_nonces = itertools.count(1)


class Client:
    """A minimal STREAM client on one destination issued by ``server``."""

    def __init__(
        self,
        server: StreamServer,
        account: str = "endpoint:test",
        *,
        receipts: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.server = server
        nonce = next(_nonces)
        receipt_nonce, receipt_secret = receipts if receipts else (None, None)
        self.destination, secret = server.issue(
            account,
            token_nonce=nonce.to_bytes(18, "big"),
            iv=nonce.to_bytes(12, "big"),
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )
        self.keys: StreamKeys = derive_keys(secret)
        self.connection_id = self.destination.rsplit(".", 1)[1]
        self.sequence = 0

    def prepare(
        self,
        *frames: Frame,
        amount: int = 0,
        fulfillable: bool = True,
        prepare_amount: int = 0,
        packet_type: int = 12,
        expires: datetime = EXPIRES,
        keys: StreamKeys | None = None,
    ) -> IlpPrepare:
        self.sequence += 1
        packet = StreamPacket(self.sequence, packet_type, prepare_amount, frames)
        data = seal_packet(keys or self.keys, fresh_iv(), packet)
        condition = self.keys.condition(data) if fulfillable else bytes(32)
        return IlpPrepare(amount, expires, condition, self.destination, data)

    def send(self, *frames: Frame, t: float = 0.0, **kwargs: Any) -> Decision:
        """handle_prepare of a fresh packet (the decision, unsettled)."""
        return self.server.handle_prepare(self.prepare(*frames, **kwargs), NOW, t, iv=fresh_iv())

    def pay(self, *frames: Frame, t: float = 0.0, **kwargs: Any) -> IlpReject | IlpFulfill:
        """send() and settle credits with fulfill(applied=True)."""
        return settle(self.server, self.send(*frames, t=t, **kwargs))

    def open(self, reply: Decision) -> StreamPacket:
        """The decrypted STREAM reply; checks the §5 invariants 2.7.1 clients check."""
        assert not isinstance(reply, StreamCredit)
        packet = open_packet(self.keys, reply.data)
        assert packet.sequence == self.sequence  # "a reply repeats the request's value"
        assert packet.ilp_packet_type == (13 if isinstance(reply, IlpFulfill) else 14)
        return packet


def frames_of(client: Client, reply: Decision) -> tuple[Frame, ...]:
    return client.open(reply).frames


def of_type(frames: tuple[Frame, ...], kind: type) -> list[Any]:
    return [f for f in frames if type(f) is kind]


def events_of(server: StreamServer, kind: type) -> list[Any]:
    return [e for e in server.events() if type(e) is kind]


# ===================================================================== server_cases

#: Cases where our reply is 2.7.1's, byte for byte.
SAME_AS_2_7_1 = {
    "not_an_ilp_prepare",
    "destination_is_server_address",
    "unknown_token",
    "test_packet_opens_connection",
    "wrong_secret_existing_connection",
    "stream_packet_claims_fulfill_type",
    "money_fulfilled",
    "amount_below_prepare_amount",
    "unfulfillable_money_packet",
    "zero_amount_ping",
    "application_declines",
    "stream_receive_max_exceeded",
    "even_stream_id_from_client",
    "stream_id_above_max",
    "money_for_closed_stream",
    "connection_close",
}
#: §15 Q2: stream 1 got the remainder of two_streams_split (34, not 33), so the later
#: replies report 1034 where 2.7.1 reports 1033; otherwise byte for byte.
STREAM_1_PLUS_ONE = {"two_streams_split", "stream_receive_max_tolerance", "close_stream_1"}


@dataclasses.dataclass
class Replayed:
    """Our answer to one server case."""

    reply: IlpReject | IlpFulfill
    credit: StreamCredit | None
    iv: bytes | None
    events: list[StreamEvent]


def response_iv(case: dict[str, Any]) -> bytes | None:
    """The IV 2.7.1 used for the encrypted reply, found among the recorded draws."""
    stream = case.get("response_stream")
    if stream is None:
        assert not case["response_random_bytes_drawn"]  # nothing encrypted, nothing drawn
        return None
    iv = stream["envelope"]["iv"]
    drawn = [d["hex"] for d in case["response_random_bytes_drawn"] if d["purpose"] == "iv"]
    assert iv in drawn
    return bytes.fromhex(iv)


def vector_receive_max(account: str, stream_id: int) -> int:
    """The case app: setReceiveMax(Infinity) on every stream, except stream 5 (1000)."""
    assert account == "cases"
    return 1000 if stream_id == 5 else UNLIMITED


@cache
def replay_server_cases() -> dict[str, Replayed]:
    server = StreamServer(
        # "use StreamServerSecrets(server_secret) directly": 2.7.1's raw server secret
        StreamServerSecrets(bytes.fromhex(SERVER_CASES["server_secret_hex"])),
        asset_code="XYZ",
        asset_scale=9,
        receive_max=vector_receive_max,
    )
    server.address = ADDRESS
    declined = {int(d["amount"]) for d in SERVER_CASES["should_fulfill_declined"]}
    out: dict[str, Replayed] = {}
    for n, case in enumerate(SERVER_CASES["cases"]):
        raw = bytes.fromhex(case["prepare"]["hex"])
        iv = response_iv(case)
        packet = decode_packet(raw)
        credit = None
        if not isinstance(packet, IlpPrepare):
            reply: IlpReject | IlpFulfill = server.not_a_prepare(raw)
        else:
            decision = server.handle_prepare(packet, vector_now(), float(n), iv=iv or bytes(12))
            if isinstance(decision, StreamCredit):
                credit = decision
                if decision.amount in declined:
                    # the app's shouldFulfill declines amount 13: the I/O layer refuses
                    reply = server.refuse(decision, iv=iv or bytes(12))
                else:
                    reply = server.fulfill(decision, applied=True, iv=iv or bytes(12))
            else:
                reply = decision
        out[case["name"]] = Replayed(reply, credit, iv, server.events())
    return out


def case_keys() -> StreamKeys:
    keys = derive_keys(bytes.fromhex(SERVER_CASES["shared_secret_hex"]))
    assert keys.encryption_key.hex() == SERVER_CASES["encryption_key_hex"]
    assert keys.fulfillment_key.hex() == SERVER_CASES["fulfillment_key_hex"]
    return keys


def test_server_cases_cover_every_name() -> None:
    names = [c["name"] for c in SERVER_CASES["cases"]]
    assert len(names) == 22
    deliberate = {
        "right_token_wrong_secret_first_packet",
        "money_without_stream_frame",
        "stream_money_zero_shares",
    }
    assert set(names) == SAME_AS_2_7_1 | STREAM_1_PLUS_ONE | deliberate
    assert SERVER_CASES["destination_account"].startswith(ADDRESS + ".")


@pytest.mark.parametrize("case", SERVER_CASES["cases"], ids=case_id)
def test_server_case(case: dict[str, Any]) -> None:
    name = case["name"]
    ours = replay_server_cases()[name]
    response = case["response"]
    keys = case_keys()
    if name in SAME_AS_2_7_1:
        assert encode_packet(ours.reply).hex() == response["hex"]
        if "response_stream" in case:
            expected = packet_from_json(case["response_stream"]["packet"])
            assert open_packet(keys, ours.reply.data) == expected
            plaintext = open_envelope(keys.encryption_key, ours.reply.data)
            assert plaintext.hex() == case["response_stream"]["envelope"]["plaintext"]
    elif name in STREAM_1_PLUS_ONE:
        # §15 Q2 (the remainder of two_streams_split went to stream 1): the recorded
        # reply with stream 1's total + 1, sealed with the recorded IV, is ours.
        recorded = packet_from_json(case["response_stream"]["packet"])
        frames = tuple(
            StreamMaxMoney(1, f.receive_max, f.total_received + 1)
            if type(f) is StreamMaxMoney and f.stream_id == 1
            else f
            for f in recorded.frames
        )
        assert frames != recorded.frames
        expected = dataclasses.replace(recorded, frames=frames)
        assert open_packet(keys, ours.reply.data) == expected
        assert ours.iv is not None
        assert ours.reply.data == seal_packet(keys, ours.iv, expected)
        assert isinstance(ours.reply, IlpFulfill)
        assert ours.reply.fulfillment.hex() == response["fulfillment_hex"]
    elif name == "right_token_wrong_secret_first_packet":
        # §15 Q1: 2.7.1 answers F02 (it cannot tell); we opened the token, so F06.
        assert response["code"] == "F02"
        assert ours.reply == IlpReject("F06", ADDRESS, "", b"")
        assert not ours.events  # no connection was created
    elif name == "money_without_stream_frame":
        # §15 Q10: 2.7.1 fulfils 50 that no stream receives; we refuse, nothing counted.
        assert response["kind"] == "fulfill"
        assert ours.credit is None
        assert isinstance(ours.reply, IlpReject)
        assert (ours.reply.code, ours.reply.message) == ("F99", "")
        assert open_packet(keys, ours.reply.data) == StreamPacket(
            90, 14, 50, (ConnectionMaxData(65534),)
        )
    else:
        assert name == "stream_money_zero_shares"
        # §15 Q10: 2.7.1 divides by zero (F00, empty); we answer F99 + reply.
        assert response["code"] == "F00"
        assert isinstance(ours.reply, IlpReject)
        assert ours.reply.code == "F99"
        assert open_packet(keys, ours.reply.data) == StreamPacket(
            91, 14, 10, (ConnectionMaxData(65534),)
        )
    if ours.credit is not None and isinstance(ours.reply, IlpFulfill):
        # §8: the fulfillment is HMAC(fulfillment key, data): deterministic.
        assert ours.reply.fulfillment.hex() == response["fulfillment_hex"]


def test_should_fulfill_declined_packet_id() -> None:
    # §3: the packet id 2.7.1 hands to shouldFulfill, with the connection tag.
    (declined,) = SERVER_CASES["should_fulfill_declined"]
    credit = replay_server_cases()["application_declines"].credit
    assert credit is not None
    assert credit.amount == int(declined["amount"])
    assert credit.packet_id.hex() == declined["packet_id_hex"]
    assert credit.account == declined["connection_tag"] == "cases"
    assert credit.idempotency_key == credit.condition.hex()
    assert credit.streams == ((1, 13),)


def test_server_case_events() -> None:
    replayed = replay_server_cases()
    events = [e for r in replayed.values() for e in r.events]
    connection_id = SERVER_CASES["destination_account"].rsplit(".", 1)[1]
    assert events[0] == ConnectionOpened(connection_id, "cases", False)
    opened = [e.stream_id for e in events if type(e) is StreamOpened]
    assert opened == [1, 3, 5]  # 2 and 23 were refused
    money = [(e.stream_id, e.amount, e.stream_total) for e in events if type(e) is MoneyReceived]
    # 13 was declined (refused: nothing counted); §15 Q2: 34 + 66.
    assert money == [(1, 1000, 1000), (1, 34, 1034), (3, 66, 66), (5, 1010, 1010)]
    closed = [e for e in events if type(e) is StreamClosed]
    assert [(e.stream_id, e.by_client, e.error_code) for e in closed] == [(1, True, 1)]
    assert events[-1] == ConnectionClosed(
        connection_id, "cases", CloseReason.CLIENT, 1, "", 2110, ((3, 66), (5, 1010)), 0
    )
    # every credited unit belongs to a stream: the connection total is the sum
    assert sum(m[1] for m in money) == 2110


def test_server_initiated_prepares_are_not_ours() -> None:
    # §15 Q5: 2.7.1 probed the client and sent control frames in Prepares of its own
    # meanwhile; our server only answers: everything it produced is a reply or a credit.
    initiated = SERVER_CASES["server_initiated_prepares"]
    assert len(initiated) == 9
    assert all(p["from"] == "server" and p["to"] == "client" for p in initiated)
    for replayed in replay_server_cases().values():
        assert type(replayed.reply) in (IlpReject, IlpFulfill)
    # What those Prepares told the client (its limits) our replies carried in-band.
    told = {
        (f["streamId"], f["receiveMax"])
        for p in initiated
        for f in p["request_stream"]["packet"]["frames"]
        if f["name"] == "StreamMaxMoney"
    }
    keys = case_keys()
    ours = {
        (str(f.stream_id), str(f.receive_max))
        for r in replay_server_cases().values()
        if r.reply.data
        for f in open_packet(keys, r.reply.data).frames
        if type(f) is StreamMaxMoney
    }
    assert told <= ours


def test_not_a_prepare_reject() -> None:
    reject = not_a_prepare_reject(b"\x0d\x00", ADDRESS)
    assert reject.code == "F00"
    assert reject.message.endswith("but got packet with type: 13")
    assert not_a_prepare_reject(b"", "").message.endswith("type: undefined")


# ======================================================================== exchanges


def exchange_server(exchange: dict[str, Any]) -> StreamServer:
    connector = exchange["connector"]
    code, scale = connector["server_asset"]
    server = StreamServer(
        StreamServerSecrets(bytes.fromhex(exchange["server_secret_hex"])),
        asset_code=code,
        asset_scale=scale,
        limits=StreamLimits(echo_data=exchange["name"] == "data_echo"),
    )
    server.address = connector["server_address"]
    return server


@pytest.mark.parametrize("exchange", EXCHANGES, ids=case_id)
def test_exchange(exchange: dict[str, Any]) -> None:
    connector = exchange["connector"]
    rate = Fraction(connector["rate_client_to_server"])
    maximum = connector["max_packet_amount"]
    server = exchange_server(exchange)
    keys = derive_keys(bytes.fromhex(exchange["shared_secret_hex"]))
    address = connector["server_address"]
    now = vector_now()
    events: list[StreamEvent] = []
    echoed = b""
    reached = 0
    for prepare_record in exchange["prepares"]:
        if prepare_record["from"] != "client":
            # §15 Q5: the 2.7.1 server's own Prepares; ours never sends any.
            assert prepare_record["from"] == "server"
            continue
        sent = decode_prepare(bytes.fromhex(prepare_record["prepare_sent"]["hex"]))
        recorded = prepare_record["response"]
        if maximum is not None and sent.amount > int(maximum):
            # the connector refused it (F08) before it reached the server
            assert (recorded["code"], recorded["triggeredBy"]) == ("F08", "test.example.connector")
            continue
        reached += 1
        arrived = dataclasses.replace(sent, amount=int(sent.amount * rate))  # floor
        stream = prepare_record.get("response_stream")
        iv = bytes.fromhex(stream["envelope"]["iv"]) if stream else fresh_iv()
        decision = server.handle_prepare(arrived, now, float(prepare_record["n"]), iv=iv)
        reply = settle(server, decision) if not isinstance(decision, StreamCredit) else None
        if isinstance(decision, StreamCredit):
            assert decision.account == (exchange_tag(exchange) or "")
            reply = server.fulfill(decision, applied=True, iv=iv)
        assert reply is not None
        events += server.events()
        # same kinds and codes as recorded
        assert recorded["kind"] == ("fulfill" if isinstance(reply, IlpFulfill) else "reject")
        if isinstance(reply, IlpReject):
            assert (reply.code, reply.triggered_by, reply.message) == ("F99", address, "")
            assert (recorded["code"], recorded["triggeredBy"]) == ("F99", address)
        else:
            assert reply.fulfillment.hex() == recorded["fulfillment_hex"]  # §8
        # reply sequence and prepareAmount as recorded
        assert stream is not None
        ours = open_packet(keys, reply.data)
        theirs = packet_from_json(stream["packet"])
        assert (ours.sequence, ours.prepare_amount) == (theirs.sequence, theirs.prepare_amount)
        assert ours.ilp_packet_type == theirs.ilp_packet_type
        if isinstance(reply, IlpFulfill) and exchange["name"] != "data_echo":
            # money Fulfills: same frames as 2.7.1, same IV: the same bytes
            assert reply.data.hex() == recorded["data_hex"]
        for frame in ours.frames:
            if type(frame) is StreamData:
                echoed += frame.data
        if exchange["receipts_enabled"] and isinstance(reply, IlpFulfill):
            check_receipts(exchange, ours)
    assert reached >= 7  # 5 probes (or what passed the connector), money, the close
    check_server_events(exchange, events)
    if exchange["name"] == "data_echo":
        # 2.7.1's app wrote "HELLO" in a Prepare of its own; ours echoes the bytes in the
        # reply to the packet that carried them (§15 Q5).
        assert exchange["client_result"]["reply_utf8"] == "HELLO"
        assert echoed == b"hello"
    else:
        assert echoed == b""
    assert len(server) == 0  # the client's ConnectionClose closed it


def exchange_tag(exchange: dict[str, Any]) -> str | None:
    argument = exchange["generate_address_and_secret_argument"]
    return None if argument is None else argument.get("connectionTag")


def check_receipts(exchange: dict[str, Any], reply: StreamPacket) -> None:
    argument = exchange["generate_address_and_secret_argument"]
    secret = bytes.fromhex(argument["receiptSecret_hex"])
    (frame,) = of_type(reply.frames, StreamReceipt)
    receipt = verify_receipt(frame.receipt, secret)
    assert receipt.nonce.hex() == argument["receiptNonce_hex"]
    (limits,) = of_type(reply.frames, StreamMaxMoney)
    assert receipt.total_received == limits.total_received
    assert receipt.total_received == int(exchange["client_result"]["last_receipt_verified_total"])
    assert frame.receipt.hex() == exchange["client_result"]["last_receipt_hex"]


def check_server_events(exchange: dict[str, Any], events: list[StreamEvent]) -> None:
    """Our events against the recorded server events (the totals credited)."""
    recorded = exchange["server_events"]
    kinds = {
        "connection": ConnectionOpened,
        "stream": StreamOpened,
        "money": MoneyReceived,
        "data": DataReceived,
        "connection_end": ConnectionClosed,
    }
    ours = [e for e in events if type(e) in kinds.values()]
    assert [type(e) for e in ours] == [kinds[r["event"]] for r in recorded]
    for event, record in zip(ours, recorded, strict=True):
        if isinstance(event, ConnectionOpened):
            assert event.account == (record["connectionTag"] or "")
        elif isinstance(event, StreamOpened):
            assert event.stream_id == record["id"]
        elif isinstance(event, MoneyReceived):
            assert (event.stream_id, event.amount, event.stream_total) == (
                record["stream"],
                int(record["amount"]),
                int(record["stream_total"]),
            )
        elif isinstance(event, DataReceived):
            assert (event.stream_id, event.data.hex()) == (record["stream"], record["data_hex"])
        else:
            assert isinstance(event, ConnectionClosed)
            assert event.reason is CloseReason.CLIENT
            assert event.total_received == int(record["totalReceived"])


def test_exchange_names() -> None:
    assert [e["name"] for e in EXCHANGES] == [
        "payment_rate_1",
        "payment_rate_half_max_packet_300",
        "payment_with_receipts",
        "data_echo",
    ]


# ================================================================ first packets (§2.3)


def test_unknown_token_and_bad_destinations_are_f02() -> None:
    server = make_server()
    client = Client(server)
    other = StreamServerSecrets(bytes(32)).generate(ADDRESS, bytes(18), bytes(12), "x")
    for destination in (
        ADDRESS,  # "Empty -> Reject F02"
        ADDRESS + ".",
        other.destination,  # another server secret
        ADDRESS + ".AQEBAQEB",
        "g.elsewhere",
    ):
        prepare = dataclasses.replace(client.prepare(), destination=destination)
        assert server.handle_prepare(prepare, NOW, 0.0, iv=fresh_iv()) == IlpReject(
            "F02", ADDRESS, "", b""
        )
    assert len(server) == 0
    assert server.events() == []


def test_wrong_key_is_f06_on_first_and_later_packets() -> None:
    # §15 Q1: F06 for a token we issued whose data does not decrypt.
    server = make_server()
    client = Client(server)
    wrong = derive_keys(bytes(32))
    assert client.send(keys=wrong) == IlpReject("F06", ADDRESS, "", b"")
    assert len(server) == 0  # no connection for such a packet
    assert isinstance(client.send(), IlpFulfill)
    assert client.send(keys=wrong) == IlpReject("F06", ADDRESS, "", b"")
    garbage = dataclasses.replace(client.prepare(), data=b"\x00" * 10)
    assert server.handle_prepare(garbage, NOW, 0.0, iv=fresh_iv()).code == "F06"  # type: ignore[union-attr]


def test_packet_type_other_than_12_is_f06() -> None:
    # §9 step 2: "STREAM ilpPacketType != 12 -> F06, no data."
    server = make_server()
    client = Client(server)
    for packet_type in (13, 14, 0):
        assert client.send(packet_type=packet_type) == IlpReject("F06", ADDRESS, "", b"")
    assert len(server) == 0
    assert isinstance(client.send(), IlpFulfill)
    assert client.send(packet_type=13) == IlpReject("F06", ADDRESS, "", b"")


def test_expired_prepares_are_r00() -> None:
    # §15 Q12: "the SDK should refuse expired Prepares itself" (PSK2: R00).
    server = make_server()
    client = Client(server)
    for expires in (NOW, NOW - timedelta(milliseconds=1)):
        reply = client.send(StreamMoney(1, 1), amount=10, expires=expires)
        assert reply == IlpReject("R00", ADDRESS, EXPIRED_MESSAGE, b"")
    assert len(server) == 0


def test_unparseable_stream_packet_is_f06() -> None:
    server = make_server()
    client = Client(server)
    data = seal_packet(client.keys, fresh_iv(), StreamPacket(1, 12, 0))
    junk = seal_envelope(client.keys.encryption_key, fresh_iv(), b"\x02\x0c\x01\x01")  # v2
    for payload in (junk, data[:20]):
        prepare = IlpPrepare(
            0, EXPIRES, client.keys.condition(payload), client.destination, payload
        )
        assert server.handle_prepare(prepare, NOW, 0.0, iv=fresh_iv()).code == "F06"  # type: ignore[union-attr]


def test_destination_segments_after_the_token_are_ignored() -> None:
    server = make_server()
    client = Client(server)
    prepare = client.prepare()
    prepare = dataclasses.replace(prepare, destination=prepare.destination + ".x.y")
    assert isinstance(server.handle_prepare(prepare, NOW, 0.0, iv=fresh_iv()), IlpFulfill)
    assert server.connection_ids() == [client.connection_id]


def test_no_address_yet() -> None:
    server = StreamServer(StreamServerSecrets(SERVER_SECRET), asset_code="X", asset_scale=0)
    assert server.address == ""
    with pytest.raises(LocalProtocolError):
        server.issue("a", token_nonce=bytes(18), iv=bytes(12))


# ======================================================================= basic flow


def test_money_flow_and_connection_info() -> None:
    server = make_server()
    client = Client(server, "endpoint:tips")
    probe = client.send(
        ConnectionNewAddress("test.client"),
        ConnectionAssetDetails("ABC", 2),
        amount=1000,
        fulfillable=False,
    )
    assert isinstance(probe, IlpReject)
    assert probe.code == "F99"
    reply = client.open(probe)
    assert reply.prepare_amount == 1000  # §9 step 7: what arrived
    assert reply.frames == (
        ConnectionMaxData(65534),
        ConnectionMaxStreamId(20),
        ConnectionAssetDetails("XYZ", 9),
    )
    credit = client.send(
        StreamMaxMoney(1, 0, 0),
        StreamMaxData(1, 16384),
        StreamMoney(1, 500),
        amount=500,
        prepare_amount=495,
    )
    assert isinstance(credit, StreamCredit)
    assert (credit.account, credit.amount, credit.streams) == ("endpoint:tips", 500, ((1, 500),))
    assert credit.connection_id == client.connection_id
    assert credit.sequence == client.sequence
    assert not credit.receipts_enabled and not credit.closes_connection
    assert credit.packet_id == client.keys.packet_id(client.sequence)
    assert "fulfillment" not in repr(credit)
    fulfill = server.fulfill(credit, applied=True, iv=fresh_iv())
    assert fulfill.fulfillment == client.keys.fulfillment(credit.prepare.data)
    assert client.open(fulfill).frames == (
        ConnectionMaxData(65534),
        StreamMaxMoney(1, UNLIMITED, 500),
        StreamMaxData(1, 16384),
    )
    info = server.connection_info(client.connection_id)
    assert info is not None
    assert (info.account, info.client_address, info.client_asset, info.total_received) == (
        "endpoint:tips",
        "test.client",
        ("ABC", 2),
        500,
    )
    assert [(s.stream_id, s.total_received) for s in info.streams] == [(1, 500)]
    assert server.connection_info("nope") is None
    events = server.events()
    assert [type(e) for e in events] == [ConnectionOpened, StreamOpened, MoneyReceived]
    with pytest.raises(LocalProtocolError):
        server.fulfill(credit, applied=True, iv=fresh_iv())  # settled once only
    with pytest.raises(LocalProtocolError):
        server.refuse(credit, iv=fresh_iv())


def test_replies_without_address_announcement_carry_connection_max_data_only() -> None:
    # §9 step 11: "A client that never sends ConnectionNewAddress gets replies with
    # ConnectionMaxData only."
    server = make_server()
    client = Client(server)
    reply = client.pay(StreamMoney(1, 1), amount=7)
    assert client.open(reply).frames == (ConnectionMaxData(65534),)


def test_prepare_amount_above_amount_is_refused() -> None:
    # §9 step 6: "prepareAmount > Prepare amount -> F99 + reply (nothing credited)".
    server = make_server()
    client = Client(server)
    reply = client.send(StreamMoney(1, 1), amount=100, prepare_amount=101)
    assert isinstance(reply, IlpReject)
    assert client.open(reply).prepare_amount == 100
    assert isinstance(client.send(StreamMoney(1, 1), amount=100, prepare_amount=100), StreamCredit)


def test_duplicate_prepare_is_fulfilled_again_but_not_counted() -> None:
    server = make_server()
    client = Client(server)
    prepare = client.prepare(StreamMoney(1, 1), amount=250)
    first = server.handle_prepare(prepare, NOW, 0.0, iv=fresh_iv())
    assert isinstance(first, StreamCredit)
    one = server.fulfill(first, applied=True, iv=fresh_iv())
    second = server.handle_prepare(prepare, NOW, 1.0, iv=fresh_iv())
    assert isinstance(second, StreamCredit)
    assert second.idempotency_key == first.idempotency_key
    two = server.fulfill(second, applied=False, iv=fresh_iv())
    assert one.fulfillment == two.fulfillment
    info = server.connection_info(client.connection_id)
    assert info is not None
    assert info.total_received == 250
    assert info.streams[0].total_received == 250
    money = events_of(server, MoneyReceived)
    assert [(m.amount, m.stream_total) for m in money] == [(250, 250)]


def test_zero_amount_ping_is_fulfilled_without_credit() -> None:
    server = make_server()
    client = Client(server)
    assert isinstance(client.send(amount=0), IlpFulfill)
    assert isinstance(client.send(StreamMoney(1, 5), amount=0), IlpFulfill)
    assert isinstance(client.send(amount=0, fulfillable=False), IlpReject)


# ============================================================= §15 Q10, Q2, Q7, Q3


def test_money_without_stream_money_or_with_zero_shares_is_refused() -> None:
    # §15 Q10: "reject both with F99 + reply (nothing credited)".
    server = make_server()
    client = Client(server)
    for frames in ((), (StreamMoney(1, 0),), (StreamMoney(1, 0), StreamMoney(3, 0))):
        reply = client.send(*frames, amount=10)
        assert isinstance(reply, IlpReject)
        assert reply.code == "F99"
        assert client.open(reply).frames == (ConnectionMaxData(65534),)
    assert events_of(server, MoneyReceived) == []


def test_share_split_gives_the_remainder_to_the_lowest_stream_that_can_take_it() -> None:
    # §15 Q2 / §6 "Shares": floor(amount x shares / total); RFC: remainder to the
    # lowest-numbered stream that can take it.
    limits = {1: 3, 3: UNLIMITED, 5: UNLIMITED}
    server = make_server(receive_max=lambda _account, stream_id: limits[stream_id])
    client = Client(server)
    credit = client.send(StreamMoney(1, 1), StreamMoney(3, 1), StreamMoney(5, 1), amount=10)
    assert isinstance(credit, StreamCredit)
    # 3 + 3 + 3, remainder 1: stream 1 would exceed ceil(1.01 x 3) = 4 -> stream 3
    assert credit.streams == ((1, 3), (3, 4), (5, 3))
    settle(server, credit)
    # several frames for one stream add up; zero-share streams get nothing
    credit = client.send(StreamMoney(5, 1), StreamMoney(3, 0), StreamMoney(5, 1), amount=9)
    assert isinstance(credit, StreamCredit)
    assert credit.streams == ((5, 9),)
    assert sum(part for _, part in credit.streams) == credit.amount


def test_remainder_nobody_can_take_is_refused() -> None:
    server = make_server(receive_max=lambda _account, _stream_id: 1)
    client = Client(server)
    # 3 over 1:1 -> 1 + 1, remainder 1; each stream may take ceil(1.01 x 1) = 2 ...
    credit = client.send(StreamMoney(1, 1), StreamMoney(3, 1), amount=3)
    assert isinstance(credit, StreamCredit)
    assert credit.streams == ((1, 2), (3, 1))
    settle(server, credit)
    # ... now both are full (2 and 1 of 1 received): 2 over 1:1 -> nobody
    reply = client.send(StreamMoney(1, 1), StreamMoney(3, 1), amount=3)
    assert isinstance(reply, IlpReject)
    assert StreamMaxMoney(1, 1, 2) in client.open(reply).frames


def test_receive_max_tolerance_and_set_receive_max() -> None:
    # §15 Q7: reject the packet (F99 + StreamMaxMoney) above ceil(1.01 x room).
    server = make_server(default_receive_max=1000)
    client = Client(server)
    reply = client.send(StreamMoney(1, 1), amount=1011)
    assert isinstance(reply, IlpReject)
    assert client.open(reply).frames[-1] == StreamMaxMoney(1, 1000, 0)
    settle(server, client.send(StreamMoney(1, 1), amount=1010))
    reply = client.send(StreamMoney(1, 1), amount=1)
    assert isinstance(reply, IlpReject)  # 1010 > 1000: no room at all
    with pytest.raises(LocalProtocolError, match="Cannot decrease"):
        server.set_receive_max(client.connection_id, 1, 999)
    with pytest.raises(EncodeError):
        server.set_receive_max(client.connection_id, 1, 2**64)
    with pytest.raises(LocalProtocolError):
        server.set_receive_max(client.connection_id, 3, 5)
    server.set_receive_max(client.connection_id, 1, 2000)
    assert isinstance(client.send(StreamMoney(1, 1), amount=990), StreamCredit)


def test_stream_totals_never_pass_uint64() -> None:
    server = make_server()
    client = Client(server)
    settle(server, client.send(StreamMoney(1, 1), amount=MAX_UINT64))
    reply = client.send(StreamMoney(1, 1), amount=1)
    assert isinstance(reply, IlpReject)
    assert client.open(reply).frames[-1] == StreamMaxMoney(1, UNLIMITED, MAX_UINT64)


def test_receipts_and_stream_ids_above_255() -> None:
    # §15 Q3: "with receipts on, refuse (F99 + StreamClose) streams above 255 before
    # crediting"; §15 Q4: one StreamReceipt per credited stream with its new total.
    server = make_server(max_stream_id=400)
    secret = b"\x42" * 32
    client = Client(server, "wm", receipts=(b"\x01" * 16, secret))
    credit = client.send(ConnectionNewAddress("c"), StreamMoney(1, 1), StreamMoney(3, 1), amount=10)
    assert isinstance(credit, StreamCredit)
    assert credit.receipts_enabled
    fulfill = server.fulfill(credit, applied=True, iv=fresh_iv())
    receipts = of_type(frames_of(client, fulfill), StreamReceipt)
    totals = [(r.stream_id, verify_receipt(r.receipt, secret).total_received) for r in receipts]
    assert totals == [(1, 5), (3, 5)]
    reply = client.send(StreamMoney(257, 1), amount=10)
    assert isinstance(reply, IlpReject)
    assert StreamClose(257, ErrorCode.APPLICATION_ERROR, RECEIPT_STREAM_ID_MESSAGE) in (
        frames_of(client, reply)
    )
    events = server.events()
    assert (
        StreamClosed(client.connection_id, "wm", 257, False, 9, RECEIPT_STREAM_ID_MESSAGE) in events
    )
    assert not [e for e in events if type(e) is MoneyReceived and e.stream_id == 257]
    # a duplicate (applied=False) still carries receipts with the current totals
    again = client.send(StreamMoney(1, 1), amount=1)
    assert isinstance(again, StreamCredit)
    fulfill = server.fulfill(again, applied=False, iv=fresh_iv())
    (receipt,) = of_type(frames_of(client, fulfill), StreamReceipt)
    assert verify_receipt(receipt.receipt, secret).total_received == 5
    # data on a stream above 255 is fine
    assert isinstance(client.send(StreamData(259, 0, b"x")), IlpFulfill)


# ============================================================== stream ids (§6, §11)


def test_stream_id_rules_and_max_stream_id_growth() -> None:
    server = make_server()
    client = Client(server)
    client.pay(ConnectionNewAddress("c"))
    # §6: "Wrong parity -> ConnectionClose ProtocolViolation" (2.7.1's message)
    reply = client.send(StreamMoney(2, 1), amount=1)
    assert isinstance(reply, IlpReject)
    close = frames_of(client, reply)[-1]
    assert isinstance(close, ConnectionClose)
    assert close.error_code == ErrorCode.PROTOCOL_VIOLATION
    # as 2.7.1, the connection's state is kept; odd ids 1..19 open
    for stream_id in range(1, 20, 2):
        assert isinstance(client.pay(StreamMaxData(stream_id, 100)), IlpFulfill)
    assert len(events_of(server, StreamOpened)) == 10
    # "id above the advertised maximum -> ConnectionClose StreamIdError"
    reply = client.send(StreamData(21, 0, b"x"))
    close = frames_of(client, reply)[-1]
    assert close == ConnectionClose(
        ErrorCode.STREAM_ID_ERROR,
        "Maximum number of open streams exceeded. Got stream: 21, current max stream ID: 20",
    )
    # §11: "raises the limit by 2 for every stream the peer closes"
    reply = client.pay(StreamClose(1, ErrorCode.NO_ERROR, ""))
    assert frames_of(client, reply)[-1] == ConnectionMaxStreamId(22)
    assert isinstance(client.pay(StreamData(21, 0, b"x")), IlpFulfill)
    info = server.connection_info(client.connection_id)
    assert info is not None
    assert info.max_stream_id == 22
    assert len(info.streams) == 10  # never more than 10 open


def test_three_quarter_rule_announces_max_stream_id() -> None:
    # 2.7.1 handleNewStream: "if (this.maxStreamId * .75 < streamId)" queue it.
    server = make_server()
    client = Client(server)
    assert ConnectionMaxStreamId(20) not in frames_of(client, client.pay(StreamMaxData(15, 1)))
    assert ConnectionMaxStreamId(20) in frames_of(client, client.pay(StreamMaxData(17, 1)))


def test_closed_streams() -> None:
    # §9 step 3: money or data for a closed stream -> F99 + StreamClose(StreamStateError)
    server = make_server()
    client = Client(server)
    client.pay(StreamMoney(1, 1), amount=5)
    client.pay(StreamClose(1, ErrorCode.NO_ERROR, ""))
    expected = StreamClose(1, ErrorCode.STREAM_STATE_ERROR, STREAM_CLOSED_MESSAGE)
    for frames in ((StreamMoney(1, 1),), (StreamData(1, 0, b"late"),)):
        reply = client.send(*frames, amount=5)
        assert isinstance(reply, IlpReject)
        assert frames_of(client, reply)[-1] == expected
    # "(the Max frames are just skipped)"
    assert isinstance(client.pay(StreamMaxMoney(1, 5, 5), StreamMaxData(1, 9)), IlpFulfill)
    # the watermark: ids below the highest opened one that are not open count as closed
    client.pay(StreamMaxData(7, 1))
    reply = client.send(StreamMoney(3, 1), amount=5)
    assert frames_of(client, reply)[-1] == StreamClose(3, 6, STREAM_CLOSED_MESSAGE)
    # a second StreamClose for the same stream in one packet counts once
    client.pay(StreamClose(7, 1, ""), StreamClose(7, 1, ""))
    closes = [e for e in server.events() if type(e) is StreamClosed]
    assert [(c.stream_id, c.by_client) for c in closes] == [(1, True), (7, True)]


def test_client_stream_close_takes_effect_after_its_packet() -> None:
    server = make_server()
    client = Client(server)
    client.pay(ConnectionNewAddress("c"), StreamMoney(1, 1), amount=5)
    credit = client.send(
        StreamClose(1, 1, ""), StreamMoney(1, 1), StreamData(1, 0, b"hi"), amount=5
    )
    assert isinstance(credit, StreamCredit)
    assert credit.streams == ((1, 5),)
    fulfill = server.fulfill(credit, applied=True, iv=fresh_iv())
    assert frames_of(client, fulfill)[-1] == ConnectionMaxStreamId(22)
    events = server.events()
    assert DataReceived(client.connection_id, "endpoint:test", 1, 0, b"hi") in events
    assert MoneyReceived(client.connection_id, "endpoint:test", 1, 5, 10) in events


def test_server_closes_a_stream() -> None:
    server = make_server()
    client = Client(server)
    client.pay(StreamMoney(1, 1), amount=5)
    assert server.write(client.connection_id, 1, b"bye") == 3
    server.close_stream(client.connection_id, 1)
    server.close_stream(client.connection_id, 1)  # idempotent
    server.close_stream(client.connection_id, 99)  # not open: ignored
    server.close_stream("nope", 1)
    with pytest.raises(LocalProtocolError):
        server.write(client.connection_id, 1, b"more")
    reply = client.pay(StreamMaxData(1, 100))
    frames = frames_of(client, reply)
    # data first, then the StreamClose (a 2.7.1 client must not see data after it)
    assert frames[-3:] == (
        StreamData(1, 0, b"bye"),
        StreamClose(1, ErrorCode.NO_ERROR, ""),
        ConnectionMaxStreamId(22),
    )
    assert StreamClosed(client.connection_id, "endpoint:test", 1, False, 1, "") in server.events()
    refused = client.send(StreamMoney(1, 1), amount=5)
    assert frames_of(client, refused)[-1] == StreamClose(1, 6, STREAM_CLOSED_MESSAGE)


# ======================================================================= closing (§12)


def test_client_connection_close() -> None:
    server = make_server()
    client = Client(server)
    client.pay(ConnectionNewAddress("c"), StreamMoney(1, 1), amount=40)
    server.events()
    reply = client.send(ConnectionClose(ErrorCode.NO_ERROR, ""), fulfillable=False)
    assert isinstance(reply, IlpReject)
    assert client.open(reply).frames == (ConnectionMaxData(65534),)
    assert len(server) == 0
    assert server.events() == [
        ConnectionClosed(
            client.connection_id, "endpoint:test", CloseReason.CLIENT, 1, "", 40, ((1, 40),), 0
        )
    ]
    # §15 Q6 refinement: the close notice racing the close opens nothing
    reply = client.send(ConnectionClose(ErrorCode.NO_ERROR, ""), fulfillable=False)
    assert isinstance(reply, IlpReject)
    assert client.open(reply).frames == (ConnectionMaxData(65534),)
    assert isinstance(client.send(ConnectionClose(1, "")), IlpFulfill)
    assert len(server) == 0
    assert server.events() == []
    # §15 Q6: any other later packet opens a fresh connection (totals from 0)
    reply = client.pay(StreamMoney(1, 1), amount=3)
    assert isinstance(reply, IlpFulfill)
    assert [type(e) for e in server.events()] == [ConnectionOpened, StreamOpened, MoneyReceived]


def test_connection_close_with_money_in_the_same_packet() -> None:
    server = make_server()
    client = Client(server)
    client.pay(ConnectionNewAddress("c"), StreamMoney(1, 1), amount=40)
    server.events()
    credit = client.send(
        StreamMoney(1, 1), ConnectionClose(ErrorCode.APPLICATION_ERROR, "bye"), amount=2
    )
    assert isinstance(credit, StreamCredit)
    assert credit.closes_connection
    assert len(server) == 0  # later packets open a fresh connection
    assert server.events() == []  # the close is reported when the credit is settled
    fulfill = server.fulfill(credit, applied=True, iv=fresh_iv())
    # closed: no per-stream frames (2.7.1: "while the connection counts as open")
    assert client.open(fulfill).frames == (ConnectionMaxData(65534),)
    events = server.events()
    assert events[-1] == ConnectionClosed(
        client.connection_id, "endpoint:test", CloseReason.CLIENT, 9, "bye", 42, ((1, 42),), 0
    )
    # refused instead: reported all the same, nothing counted
    client2 = Client(server)
    credit = client2.send(StreamMoney(1, 1), ConnectionClose(1, ""), amount=2)
    assert isinstance(credit, StreamCredit)
    server.refuse(credit, iv=fresh_iv())
    (closed,) = events_of(server, ConnectionClosed)
    assert closed.total_received == 0


def test_asset_details_must_not_change() -> None:
    # §15 Q9: "close with ProtocolViolation".
    server = make_server()
    client = Client(server)
    client.pay(ConnectionAssetDetails("ABC", 9))
    assert isinstance(client.pay(ConnectionAssetDetails("ABC", 9)), IlpFulfill)
    reply = client.send(ConnectionAssetDetails("ABC", 2))
    assert isinstance(reply, IlpReject)
    assert frames_of(client, reply)[-1] == ConnectionClose(
        ErrorCode.PROTOCOL_VIOLATION, ASSET_DETAILS_CHANGED
    )
    assert len(server) == 0
    (closed,) = events_of(server, ConnectionClosed)
    assert (closed.reason, closed.error_code) == (CloseReason.ERROR, 8)


def test_idle_expiry() -> None:
    server = make_server(idle_timeout=60)
    first, second = Client(server), Client(server)
    first.pay(t=0.0)
    second.pay(t=30.0)
    assert server.expire(59.9) == []
    expired = server.expire(60.0)
    assert [(c.connection_id, c.reason) for c in expired] == [
        (first.connection_id, CloseReason.IDLE)
    ]
    assert server.connection_ids() == [second.connection_id]
    second.pay(t=80.0)  # activity keeps it
    assert server.expire(120.0) == []
    assert len(server.expire(140.0)) == 1
    assert len(server) == 0
    assert events_of(server, ConnectionClosed) == []  # reported by expire() only


def test_lru_eviction_at_the_cap() -> None:
    server = make_server(max_connections=3)
    clients = [Client(server) for _ in range(4)]
    for t, client in enumerate(clients[:3]):
        client.pay(t=float(t))
    clients[0].pay(t=5.0)  # the oldest becomes the most recent
    server.events()
    clients[3].pay(t=6.0)
    assert server.connection_ids() == [
        c.connection_id for c in (clients[2], clients[0], clients[3])
    ]
    (evicted,) = events_of(server, ConnectionClosed)
    assert (evicted.connection_id, evicted.reason) == (
        clients[1].connection_id,
        CloseReason.EVICTED,
    )


def test_ten_thousand_connections_stay_at_the_cap() -> None:
    # "Nothing grows with input beyond these bounds": 10,000 tokens, one ping each.
    cap = 1000
    server = make_server(
        max_connections=cap, secrets=StreamServerSecrets(SERVER_SECRET, cache_size=16)
    )
    prepares = [Client(server, f"account:{n}").prepare() for n in range(10_000)]
    gc.collect()

    def run(batch: list[IlpPrepare], start: int) -> None:
        for n, prepare in enumerate(batch, start):
            assert isinstance(
                server.handle_prepare(prepare, NOW, float(n), iv=bytes(12)), IlpFulfill
            )
            if n % 256 == 0:
                server.events()
        server.events()

    def traced() -> int:
        # crypto.py keeps a global LRU of 4096 AES key objects (bounded on its own, not
        # per server); leave it out so what is measured is this server's state
        crypto._aead.cache_clear()
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    run(prepares[:6000], 0)
    assert len(server) == cap
    # tracemalloc does not see frees of objects allocated before it started: trace from
    # where the table gets replaced by traced connections
    tracemalloc.start()
    try:
        base = traced()
        run(prepares[6000:7000], 6000)  # the 1000 held connections are all traced now
        filled = traced()
        run(prepares[7000:8000], 7000)  # the table's own storage re-allocated under trace
        warm = traced()
        run(prepares[8000:], 8000)  # steady state: each new connection evicts one
        after = traced()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(server) == cap
    per_connection = (filled - base) / cap
    # measured ~1.1 KiB (the connection, its keys and HMAC states, its id and table
    # entry); stated bound:
    assert per_connection < 4096, per_connection
    # at the cap, memory does not grow with more connections
    assert after - warm < 32 * 1024, after - warm
    # the peak over 4000 traced connections (including transient dict tables, undrained
    # events and crypto.py's key LRU filling up) per held connection: stated bound
    assert (peak - base) / cap < 4096, (peak - base) / cap
    assert server.events_dropped == 0


def test_pending_events_are_bounded() -> None:
    server = make_server(max_pending_events=4)
    client = Client(server)
    for n in range(10):
        client.pay(StreamMaxData(2 * n + 1, 1))
    assert len(server.events()) == 4
    assert server.events_dropped == 1 + 10 - 4  # opened + 10 streams, 4 kept


# ==================================================================== data (§6, §11)


def test_data_in_order_out_of_order_and_resent() -> None:
    server = make_server()
    client = Client(server)
    client.pay(StreamData(1, 5, b"world"))  # buffered: a gap at 0..5
    assert events_of(server, DataReceived) == []
    assert server.buffered_bytes == 5
    client.pay(StreamData(1, 0, b"hello"))
    received = events_of(server, DataReceived)
    assert [(e.offset, e.data) for e in received] == [(0, b"hello"), (5, b"world")]
    assert server.buffered_bytes == 0
    # resends (2.7.1 resends a rejected packet's data) and overlaps are not delivered twice
    client.pay(StreamData(1, 0, b"hello"), StreamData(1, 8, b"ld!!"))
    assert [(e.offset, e.data) for e in events_of(server, DataReceived)] == [(10, b"!!")]
    # a fragment overlapping one already buffered: the longer copy is kept
    client.pay(StreamData(1, 20, b"xy"), StreamData(1, 20, b"x"), StreamData(1, 14, b"abc"))
    client.pay(StreamData(1, 12, b"12"), StreamData(1, 17, b"defghij"))
    data = b"".join(e.data for e in events_of(server, DataReceived))
    assert data == b"12abcdefghij"
    info = server.connection_info(client.connection_id)
    assert info is not None
    assert info.streams[0].read_offset == 24
    # advertised windows grow with what was read (§11)
    client.pay(ConnectionNewAddress("c"))
    frames = frames_of(client, client.pay())
    assert frames[0] == ConnectionMaxData(65534 + 24)
    assert StreamMaxData(1, 16384 + 24) in frames


def test_stream_flow_control_violation_closes_the_connection() -> None:
    # §11: "Exceeding either closes the connection with FlowControlError."
    server = make_server(stream_receive_window=100)
    client = Client(server)
    client.pay(StreamData(1, 0, bytes(100)))  # in order: delivered at once
    client.pay(StreamData(1, 150, bytes(50)))  # out of order, within read + 100
    reply = client.send(StreamData(1, 250, b"x"))
    assert isinstance(reply, IlpReject)
    close = frames_of(client, reply)[-1]
    assert close == ConnectionClose(
        ErrorCode.FLOW_CONTROL_ERROR,
        "Exceeded flow control limits. Stream 1 can accept up to offset: 200 but got "
        "bytes up to offset: 251",
    )
    assert len(server) == 0
    assert server.buffered_bytes == 0
    (closed,) = events_of(server, ConnectionClosed)
    assert (closed.reason, closed.error_code) == (CloseReason.ERROR, ErrorCode.FLOW_CONTROL_ERROR)


def test_connection_flow_control_violation() -> None:
    server = make_server(stream_receive_window=100, connection_receive_window=150)
    client = Client(server)
    client.pay(StreamData(1, 10, bytes(90)))  # 100 outstanding on stream 1
    reply = client.send(StreamData(3, 10, bytes(60)))  # 170 > 0 + 150
    close = frames_of(client, reply)[-1]
    assert close == ConnectionClose(
        ErrorCode.FLOW_CONTROL_ERROR,
        "Exceeded flow control limits. Max connection byte offset: 150, received: 170",
    )
    assert len(server) == 0


def test_receive_buffer_budget_refuses_t00() -> None:
    server = make_server(max_buffered_bytes=10, max_fragments_per_stream=2)
    client = Client(server)
    assert isinstance(client.pay(StreamData(1, 5, bytes(8))), IlpFulfill)
    reply = client.send(StreamData(1, 20, bytes(8)))  # budget
    assert reply == IlpReject("T00", ADDRESS, BUFFER_FULL_MESSAGE, b"")
    assert isinstance(client.pay(StreamData(1, 14, b"a")), IlpFulfill)
    assert client.send(StreamData(1, 16, b"b")) == IlpReject(
        "T00", ADDRESS, BUFFER_FULL_MESSAGE, b""
    )
    assert server.buffered_bytes == 9
    client.pay(StreamData(1, 0, bytes(5)))  # fills the gap
    assert server.buffered_bytes == 1
    assert sum(len(e.data) for e in events_of(server, DataReceived)) == 13
    # frames before the refused one stay applied (each is idempotent on the resend):
    # a StreamClose in such a packet still closes its stream afterwards
    client.pay(StreamMaxData(3, 1))
    reply = client.send(StreamClose(3, 1, ""), StreamData(1, 30, bytes(20)))
    assert reply == IlpReject("T00", ADDRESS, BUFFER_FULL_MESSAGE, b"")
    info = server.connection_info(client.connection_id)
    assert info is not None
    assert [s.stream_id for s in info.streams] == [1]
    assert info.max_stream_id == 22


def test_write_respects_the_client_windows_and_the_packet_size() -> None:
    server = make_server()
    client = Client(server)
    client.pay(StreamMaxData(1, 0))  # opens stream 1 (a lower value is ignored)
    with pytest.raises(LocalProtocolError):
        server.write(client.connection_id, 3, b"x")
    with pytest.raises(LocalProtocolError):
        server.write("nope", 1, b"x")
    payload = bytes(range(256)) * 235  # 60160 bytes
    assert server.write(client.connection_id, 1, payload) == len(payload)
    assert server.queued_bytes == len(payload)
    received = bytearray()

    def take(reply: IlpReject | IlpFulfill) -> int:
        chunks = of_type(frames_of(client, reply), StreamData)
        for chunk in chunks:
            assert chunk.offset == len(received)  # in order, no gaps
            received.extend(chunk.data)
        return sum(len(chunk.data) for chunk in chunks)

    # "a sender assumes 16384 until told"
    assert take(client.pay()) == 16384
    assert take(client.pay()) == 0  # the client's stream window is full
    # the client raises its window: the next reply fills 32767 bytes of ILP data
    reply = client.pay(StreamMaxData(1, 1_000_000))
    assert take(reply) > 32_000
    assert 32_700 < len(reply.data) <= 32_767
    rest = len(payload) - len(received)
    assert take(client.pay()) == rest > 0
    # the connection window (65534 until told) caps the total on open streams
    more = bytes(20_000)
    assert server.write(client.connection_id, 1, more) == len(more)
    while take(client.pay()):
        pass
    assert len(received) == 65534
    assert take(client.pay(ConnectionMaxData(100_000))) == len(payload) + len(more) - 65534
    assert bytes(received) == payload + more
    assert server.queued_bytes == 0


def test_write_queue_bounds() -> None:
    server = make_server(
        max_queued_bytes_per_stream=10, max_queued_bytes_per_connection=15, max_queued_bytes=18
    )
    one, two = Client(server), Client(server)
    one.pay(StreamMaxData(1, 1), StreamMaxData(3, 1))
    two.pay(StreamMaxData(1, 1))
    assert server.write(one.connection_id, 1, bytes(12)) == 10
    assert server.write(one.connection_id, 3, bytes(12)) == 5
    assert server.write(two.connection_id, 1, bytes(12)) == 3
    assert server.write(two.connection_id, 1, b"x") == 0
    # closing a connection frees its queue and reports what never left
    one.pay(ConnectionClose(1, ""))
    (closed,) = events_of(server, ConnectionClosed)
    assert closed.unsent_bytes == 15
    assert server.queued_bytes == 3


def test_data_echo() -> None:
    server = make_server(echo_data=True)
    client = Client(server)
    reply = client.pay(
        ConnectionNewAddress("c"), StreamMaxData(1, 16384), StreamData(1, 0, b"hello")
    )
    frames = frames_of(client, reply)
    assert frames[-1] == StreamData(1, 0, b"hello")
    # also in F99 replies (2.7.1 clients read their frames)
    refused = client.send(StreamData(1, 5, b" again"), fulfillable=False)
    assert isinstance(refused, IlpReject)
    assert frames_of(client, refused)[-1] == StreamData(1, 5, b" again")
    # not by default: "echo nothing by default"
    quiet = Client(make_server())
    assert of_type(frames_of(quiet, quiet.pay(StreamData(1, 0, b"x"))), StreamData) == []


def test_no_data_in_replies_carrying_a_connection_close() -> None:
    server = make_server()
    client = Client(server)
    client.pay(StreamMaxData(1, 1))
    server.write(client.connection_id, 1, b"pending")
    reply = client.send(StreamMoney(4, 1), amount=1)  # even id: ConnectionClose
    assert of_type(frames_of(client, reply), StreamData) == []
    frames = frames_of(client, client.pay())
    assert of_type(frames, StreamData) == [StreamData(1, 0, b"pending")]


# ================================================================ refusals (§9 step 10)


def test_refuse_with_limit_reached_on_an_unlimited_stream() -> None:
    server = make_server()
    client = Client(server)
    client.pay(ConnectionNewAddress("c"), StreamMoney(1, 1), amount=100)
    server.events()
    credit = client.send(StreamMoney(1, 1), amount=50)
    assert isinstance(credit, StreamCredit)
    reject = server.refuse(credit, iv=fresh_iv(), message="balance maximum", limit_reached=True)
    assert (reject.code, reject.message, reject.triggered_by) == ("F99", "balance maximum", ADDRESS)
    # a 2.7.1 client takes a lower receiveMax when the old one was 2**64-1
    assert frames_of(client, reject)[-1] == StreamMaxMoney(1, 100, 100)
    assert events_of(server, MoneyReceived) == []
    # the lowered limit stays: later replies repeat it and more money is refused
    assert StreamMaxMoney(1, 100, 100) in frames_of(client, client.pay())
    reply = client.send(StreamMoney(1, 1), amount=1)
    assert isinstance(reply, IlpReject)
    assert frames_of(client, reply)[-1] == StreamMaxMoney(1, 100, 100)


def test_refuse_with_limit_reached_on_a_finite_stream_closes_it() -> None:
    server = make_server(default_receive_max=1000)
    client = Client(server)
    client.pay(StreamMoney(1, 1), amount=100)
    credit = client.send(StreamMoney(1, 1), amount=50)
    assert isinstance(credit, StreamCredit)
    reject = server.refuse(credit, iv=fresh_iv(), limit_reached=True)
    # a 2.7.1 client ignores a lower finite receiveMax (maxLong): close the stream
    assert frames_of(client, reject)[-2:] == (
        StreamClose(1, ErrorCode.APPLICATION_ERROR, LIMIT_REACHED_MESSAGE),
        ConnectionMaxStreamId(22),
    )
    reply = client.send(StreamMoney(1, 1), amount=5)
    assert frames_of(client, reply)[-1] == StreamClose(1, 6, STREAM_CLOSED_MESSAGE)


def test_refuse_with_another_code_carries_no_data_and_keeps_the_queue() -> None:
    server = make_server()
    client = Client(server)
    credit = client.send(ConnectionNewAddress("c"), StreamMoney(1, 1), amount=5)
    assert isinstance(credit, StreamCredit)
    assert server.refuse(credit, iv=fresh_iv(), code="T00", message="store down") == IlpReject(
        "T00", ADDRESS, "store down", b""
    )
    # the queued ConnectionMaxStreamId / ConnectionAssetDetails go with the next reply
    assert ConnectionAssetDetails("XYZ", 9) in frames_of(client, client.pay())


# ============================================================= accounts <-> tags (Q15)


@pytest.mark.parametrize(
    ("account", "tag"),
    [
        ("endpoint:default", "endpoint:default"),
        ("endpoint:tips", "endpoint:tips"),
        ("order 42/x?y", "order 42/x?y"),
        ("100%", "100%25"),
        ("café", "caf%C3%A9"),
        ("tab\there", "tab%09here"),
    ],
)
def test_account_tags(account: str, tag: str) -> None:
    assert account_to_tag(account) == tag
    assert tag_to_account(tag) == account
    server = make_server()
    client = Client(server, account)
    credit = client.send(StreamMoney(1, 1), amount=1)
    assert isinstance(credit, StreamCredit)
    assert credit.account == account


def test_account_tag_limits() -> None:
    assert account_to_tag("a" * MAX_CONNECTION_TAG_LENGTH)
    for bad in ("a" * (MAX_CONNECTION_TAG_LENGTH + 1), "é" * 22, "", "\ud800"):
        with pytest.raises(ConfigError):
            account_to_tag(bad)
        with pytest.raises(ConfigError):
            make_server().issue(bad, token_nonce=bytes(18), iv=bytes(12))
    # tags written by others that are not our encoding map to themselves
    for foreign in ("50%", "%zz", "%C3", "a%"):
        assert tag_to_account(foreign) == foreign


def test_untagged_tokens_use_the_default_account() -> None:
    secrets = StreamServerSecrets(SERVER_SECRET)
    server = StreamServer(
        secrets, asset_code="X", asset_scale=0, default_account="endpoint:default"
    )
    server.address = ADDRESS
    destination, secret = secrets.generate(ADDRESS, bytes(18), bytes(12))
    keys = derive_keys(secret)
    data = seal_packet(keys, bytes(12), StreamPacket(1, 12, 0, (StreamMoney(1, 1),)))
    prepare = IlpPrepare(5, EXPIRES, keys.condition(data), destination, data)
    credit = server.handle_prepare(prepare, NOW, 0.0, iv=bytes(12))
    assert isinstance(credit, StreamCredit)
    assert credit.account == "endpoint:default"


@FAST
@given(st.text(min_size=1, max_size=60))
def test_account_tag_round_trip(account: str) -> None:
    try:
        tag = account_to_tag(account)
    except ConfigError:
        return
    assert tag.isascii() and tag.isprintable()
    assert len(tag) <= MAX_CONNECTION_TAG_LENGTH
    assert tag_to_account(tag) == account


# ===================================================================== configuration


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"idle_timeout": 0},
        {"default_receive_max": -1},
        {"default_receive_max": 2**64},
        {"max_stream_id": 0},
        {"max_stream_id": 401},
        {"stream_receive_window": 0},
        {"max_queued_bytes": -1},
        {"max_pending_events": 0},
    ],
)
def test_limits_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        StreamLimits(**kwargs)


def test_server_configuration() -> None:
    secrets = StreamServerSecrets(SERVER_SECRET)
    with pytest.raises(ConfigError):
        StreamServer(secrets, asset_code="X", asset_scale=256)
    with pytest.raises(ConfigError):
        StreamServer(b"x" * 32, asset_code="X", asset_scale=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        StreamServer(secrets, asset_code=5, asset_scale=2)  # type: ignore[arg-type]
    server = StreamServer(secrets, asset_code="X", asset_scale=2)
    with pytest.raises(ConfigError):
        server.address = None  # type: ignore[assignment]
    assert server.limits == StreamLimits()
    assert server.secrets is secrets
    assert "secret" not in repr(server).lower()
    bad_policy = make_server(receive_max=lambda _a, _s: -1)
    with pytest.raises(LocalProtocolError):
        Client(bad_policy).send(StreamMoney(1, 1), amount=1)


# ======================================================================= hypothesis


@FAST
@given(
    st.lists(
        st.tuples(
            st.lists(FRAMES, max_size=6),
            st.integers(min_value=0, max_value=MAX_UINT64),
            st.booleans(),
            st.integers(min_value=0, max_value=2),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_arbitrary_frames_never_raise(
    packets: list[tuple[list[Frame], int, bool, int]], receipts: bool
) -> None:
    server = make_server(echo_data=True, max_stream_id=400)
    client = Client(server, receipts=(bytes(16), bytes(32)) if receipts else None)
    for frames, amount, fulfillable, settlement in packets:
        decision = client.send(*frames, amount=amount, fulfillable=fulfillable)
        if isinstance(decision, StreamCredit):
            assert sum(part for _, part in decision.streams) == decision.amount
            if settlement == 0:
                reply: IlpReject | IlpFulfill = server.fulfill(
                    decision, applied=True, iv=fresh_iv()
                )
            elif settlement == 1:
                reply = server.fulfill(decision, applied=False, iv=fresh_iv())
            else:
                reply = server.refuse(decision, iv=fresh_iv(), limit_reached=True)
        else:
            assert type(decision) in (IlpReject, IlpFulfill)
            reply = decision
        encode_packet(reply)  # a valid ILP packet
        assert len(reply.data) <= 32767
        if reply.data:
            plaintext = open_envelope(client.keys.encryption_key, reply.data)
            packet = client.open(reply)
            # our hand-written frames are exactly what the codec writes
            assert encode_stream_packet(packet) == plaintext
        for event in server.events():
            assert event.connection_id == client.connection_id
    assert server.buffered_bytes >= 0 and server.queued_bytes >= 0
    for closed in server.expire(1e9):
        assert closed.reason is CloseReason.IDLE
    assert server.buffered_bytes == 0 and server.queued_bytes == 0


# ====================================================================== performance


def test_money_packet_cost_report() -> None:
    """Not an assertion on speed (CI machines vary): records the per-packet figure of
    handle_prepare + fulfill for a typical money packet on an existing connection."""
    server = make_server()
    client = Client(server)
    client.pay(ConnectionNewAddress("test.client"), ConnectionAssetDetails("XYZ", 9))
    prepare = client.prepare(
        StreamMaxMoney(1, 0, 0), StreamMaxData(1, 16384), StreamMoney(1, 1000), amount=1000
    )
    iv = bytes(12)
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        credit = server.handle_prepare(prepare, NOW, 1.0, iv=iv)
        assert isinstance(credit, StreamCredit)
        server.fulfill(credit, applied=True, iv=iv)
    elapsed = (time.perf_counter() - start) / rounds
    server.events()
    assert elapsed < 0.01  # generous: only catches pathological slowness


# ================================================================ informational


def test_informational_frames_are_accepted() -> None:
    server = make_server()
    client = Client(server)
    reply = client.pay(
        ConnectionDataBlocked(5),
        StreamMoneyBlocked(1, 5, 0),
        StreamDataBlocked(1, 5),
        StreamReceipt(1, b"r"),
        ConnectionMaxStreamId(100),
    )
    assert isinstance(reply, IlpFulfill)
