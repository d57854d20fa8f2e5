"""CCP sender/receiver state machines and a two/three-connector exchange
(``ilp_receiver.connector.ccp``; spec 05 "CCP route broadcasts").
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from ilp_receiver.codec.ccp import (
    CCP_RESPONSE,
    ZERO_ROUTING_TABLE_ID,
    CcpMode,
    RouteControlRequest,
    RouteUpdateRequest,
    check_route_control_request,
    check_route_update_request,
    decode_route_update_request,
    encode_route_control_request,
    route_control_prepare,
    route_update_prepare,
)
from ilp_receiver.codec.ccp import Route as CcpRoute
from ilp_receiver.codec.ilp import IlpFulfill, IlpReject
from ilp_receiver.connector.ccp import (
    MAX_EPOCHS_PER_UPDATE,
    CcpReceiver,
    CcpSender,
)
from ilp_receiver.connector.routing import (
    CcpOutgoing,
    ForwardingRoutingTable,
    IncomingRoute,
    Relation,
    Route,
    RouteBroadcaster,
)
from ilp_receiver.errors import IlpError
from tests.vectorlib import load

TABLE_ID = bytes(range(16))
NEW_TABLE_ID = bytes(range(100, 116))
AUTH = bytes(32)


def _vector(name: str) -> dict[str, object]:
    case: dict[str, object] = next(c for c in load("ccp.json")["cases"] if c["name"] == name)
    return case


# ============================================================== sender


def _table(n: int = 0) -> ForwardingRoutingTable:
    table = ForwardingRoutingTable(TABLE_ID)
    for i in range(n):
        prefix = f"test.p{i}"
        route = Route("other", ("test.me", f"test.p{i}"), AUTH)
        table.insert(prefix, route)
        table.record(prefix, route)
    return table


RELATIONS: dict[str, Relation] = {
    "": "local",
    "up": "parent",
    "bob": "peer",
    "other": "peer",
    "kid": "child",
}


def _sender(table: ForwardingRoutingTable, account: str = "bob", **kw: int) -> CcpSender:
    return CcpSender(
        account,
        table,
        get_own_address=lambda: "test.me",
        get_relation=RELATIONS.__getitem__,
        **kw,
    )


def _sync(table_id: bytes = TABLE_ID, epoch: int = 0) -> RouteControlRequest:
    return RouteControlRequest(CcpMode.SYNC, table_id, epoch)


def test_sender_idle_until_sync() -> None:
    s = _sender(_table(2))
    assert s.mode == CcpMode.IDLE
    assert s.next_update_at is None
    assert s.next_update(100.0) is None
    s.schedule(0.0)  # scheduling does nothing in IDLE
    assert s.next_update_at is None


def test_sender_sync_with_unknown_table_id_resets_epoch() -> None:
    s = _sender(_table(3))
    # "if the given table id differs from its own current routing table id, reset the
    # peer's known epoch to 0"
    s.handle_route_control(_sync(NEW_TABLE_ID, 2), 10.0)
    assert s.mode == CcpMode.SYNC
    assert s.last_known_epoch == 0
    # "else set it to lastKnownEpoch"
    s.handle_route_control(_sync(TABLE_ID, 2), 10.0)
    assert s.last_known_epoch == 2
    # features are ignored
    s.handle_route_control(RouteControlRequest(CcpMode.SYNC, TABLE_ID, 1, ("x",)), 10.0)
    assert s.last_known_epoch == 1


def test_sender_schedule_behind_sends_after_minimum_interval() -> None:
    s = _sender(_table(3))
    s.handle_route_control(_sync(), 10.0)
    # "send immediately if the peer is behind ... never more often than every 150 ms"
    assert s.next_update_at == pytest.approx(10.150)
    assert s.next_update(10.1) is None
    update = s.next_update(10.15)
    assert update is not None
    assert (update.from_epoch_index, update.to_epoch_index) == (0, 3)
    assert update.current_epoch_index == 3
    assert update.routing_table_id == TABLE_ID
    assert update.speaker == "test.me"
    assert update.hold_down_time == 45000  # "v21.3.0 sends its routeExpiry"
    assert [r.prefix for r in update.new_routes] == ["test.p0", "test.p1", "test.p2"]
    assert update.new_routes[0] == CcpRoute("test.p0", ("test.me", "test.p0"), AUTH)
    assert update.withdrawn_routes == ()
    # optimistic advance
    assert s.last_known_epoch == 3
    # in flight: nothing more until the outcome is reported
    assert s.next_update(20.0) is None


def test_sender_heartbeat_after_interval() -> None:
    s = _sender(_table(1))
    s.handle_route_control(_sync(), 0.0)
    first = s.next_update(0.15)
    assert first is not None
    s.on_update_sent(first, 0.2)
    # up to date: "otherwise every routeBroadcastInterval (default 30000 ms)", counted
    # from the last send
    assert s.next_update_at == pytest.approx(30.15)
    assert s.next_update(30.0) is None
    beat = s.next_update(30.15)
    # "With nothing new, from = to = the peer's known epoch and both lists are empty"
    assert beat is not None
    assert (beat.from_epoch_index, beat.to_epoch_index) == (1, 1)
    assert beat.new_routes == ()
    assert beat.withdrawn_routes == ()


def test_sender_custom_interval_and_expiry() -> None:
    s = _sender(_table(0), route_broadcast_interval_ms=1000, route_expiry_ms=5000)
    s.handle_route_control(_sync(), 0.0)
    update = s.next_update(1.0)
    assert update is not None
    assert update.hold_down_time == 5000
    s.on_update_sent(update, 1.9)
    # never more often than every 150 ms, even when the interval is nearly over
    assert s.next_update_at == pytest.approx(2.05)


def test_sender_schedule_when_routes_change() -> None:
    table = _table(1)
    s = _sender(table)
    s.handle_route_control(_sync(), 0.0)
    u = s.next_update(1.0)
    assert u is not None
    s.on_update_sent(u, 1.0)
    assert s.next_update_at == pytest.approx(31.0)
    table.record("test.new", None)
    s.schedule(5.0)  # what the broadcaster does when routes changed
    assert s.next_update_at == pytest.approx(5.15)


def test_sender_idle_stops_updates() -> None:
    s = _sender(_table(1))
    s.handle_route_control(_sync(), 0.0)
    s.handle_route_control(RouteControlRequest(CcpMode.IDLE, TABLE_ID, 0), 0.1)
    assert s.next_update_at is None
    assert s.next_update(100.0) is None
    s.handle_route_control(_sync(), 200.0)
    s.stop()
    assert s.next_update(300.0) is None


def test_sender_rollback_on_failure_and_retry() -> None:
    s = _sender(_table(3))
    s.handle_route_control(_sync(), 0.0)
    update = s.next_update(0.15)
    assert update is not None
    assert s.last_known_epoch == 3
    # "rolls back if sendData throws or times out"
    s.on_update_failed(update, 30.15)
    assert s.last_known_epoch == 0
    assert s.next_update_at == pytest.approx(60.15)
    again = s.next_update(60.15)
    assert again is not None
    assert (again.from_epoch_index, again.to_epoch_index) == (0, 3)


def test_sender_does_not_inspect_reply() -> None:
    s = _sender(_table(2))
    s.handle_route_control(_sync(), 0.0)
    update = s.next_update(0.15)
    assert update is not None
    # a Reject counts like a Fulfill: "It does not inspect whether the reply was a
    # Fulfill or a Reject."
    s.on_update_sent(update, 0.2)
    assert s.last_known_epoch == 2


def test_sender_max_epochs_per_update() -> None:
    table = _table(120)
    s = _sender(table)
    s.handle_route_control(_sync(), 0.0)
    sent = []
    now = 0.0
    while True:
        now += 0.2
        update = s.next_update(now)
        assert update is not None
        sent.append((update.from_epoch_index, update.to_epoch_index, len(update.new_routes)))
        s.on_update_sent(update, now)
        if update.to_epoch_index == 120:
            break
    # "at most 50 epochs per update in v21.3.0, so to = from + number of entries"
    assert sent == [(0, 50, 50), (50, 100, 50), (100, 120, 20)]
    assert MAX_EPOCHS_PER_UPDATE == 50
    s2 = _sender(table)
    s2.handle_route_control(_sync(), 0.0)
    small = s2.next_update(1.0, max_epochs=7)
    assert small is not None
    assert small.to_epoch_index == 7


def test_sender_never_echoes_peer_routes() -> None:
    table = ForwardingRoutingTable(TABLE_ID)
    own = Route("bob", ("test.me", "test.bob"), AUTH)
    table.insert("test.bob", own)
    table.record("test.bob", own)
    s = _sender(table, "bob")
    s.handle_route_control(_sync(), 0.0)
    update = s.next_update(1.0)
    # "a route whose next hop is that peer becomes a withdrawal"
    assert update is not None
    assert update.new_routes == ()
    assert update.withdrawn_routes == ("test.bob",)
    assert update.to_epoch_index == 1


def test_sender_parent_filtering() -> None:
    table = ForwardingRoutingTable(TABLE_ID)
    for prefix, hop in (
        ("test.via-peer", "bob"),
        ("test.via-parent", "up"),
        ("test.via-child", "kid"),
        ("test.me", ""),
    ):
        route = Route(hop, ("test.me",), AUTH)
        table.insert(prefix, route)
        table.record(prefix, route)
    to_parent = _sender(table, "up")
    to_parent.handle_route_control(_sync(), 0.0)
    update = to_parent.next_update(1.0)
    # "it does not advertise peer/parent routes to a parent"
    assert update is not None
    assert [r.prefix for r in update.new_routes] == ["test.via-child", "test.me"]
    assert update.withdrawn_routes == ("test.via-peer", "test.via-parent")
    to_peer = _sender(table, "other")
    to_peer.handle_route_control(_sync(), 0.0)
    update = to_peer.next_update(1.0)
    assert update is not None
    assert len(update.new_routes) == 4


def test_sender_coalesces_entries_for_the_same_prefix() -> None:
    table = ForwardingRoutingTable(TABLE_ID)
    r = Route("other", ("test.me", "test.x"), AUTH)
    table.insert("test.x", r)
    table.record("test.x", r)
    table.record("test.y", Route("other", ("test.me",), AUTH))
    table.delete("test.x")
    table.record("test.x", None)
    s = _sender(table)
    s.handle_route_control(_sync(), 0.0)
    update = s.next_update(1.0)
    assert update is not None
    assert [r.prefix for r in update.new_routes] == ["test.y"]
    assert update.withdrawn_routes == ("test.x",)
    assert (update.from_epoch_index, update.to_epoch_index) == (0, 3)
    # and the receiver ends without test.x
    rx = CcpReceiver("bob")
    rx.handle_route_update(update, 1.0)
    assert rx.prefixes() == ["test.y"]


# ============================================================== receiver


def _upd(
    frm: int,
    to: int,
    new: tuple[str, ...] = (),
    withdrawn: tuple[str, ...] = (),
    table_id: bytes = TABLE_ID,
    hold_down: int = 45000,
) -> RouteUpdateRequest:
    routes = tuple(CcpRoute(p, ("test.bob", p), AUTH) for p in new)
    return RouteUpdateRequest(table_id, to, frm, to, hold_down, "test.bob", routes, withdrawn)


def test_receiver_first_route_control_matches_vector() -> None:
    rx = CcpReceiver("bob", now=5.0)
    assert rx.next_route_control_at == 5.0
    assert not rx.route_control_due(4.9)
    assert rx.route_control_due(5.0)
    request = rx.route_control_request(5.0)
    # "First message from a fresh receiver (v21.3.0): mode SYNC, table id all zeros,
    # epoch 0, no features"
    assert request == RouteControlRequest(CcpMode.SYNC, ZERO_ROUTING_TABLE_ID, 0, ())
    prepare = _vector("route_control_initial_sync")["prepare"]
    assert isinstance(prepare, dict)
    assert encode_route_control_request(request).hex() == prepare["data_hex"]
    assert rx.next_route_control_at is None


def test_receiver_route_control_retry_after_failure() -> None:
    rx = CcpReceiver("bob")
    rx.route_control_request(0.0)
    reject = IlpReject("F00", "test.bob", "nope")
    # "The receiver re-sends route control every 30 s after a failure (Reject or error)."
    rx.on_route_control_reply(reject, 1.0)
    assert rx.next_route_control_at == pytest.approx(31.0)
    assert not rx.route_control_due(30.0)
    assert rx.route_control_due(31.0)
    rx.route_control_request(31.0)
    rx.on_route_control_failed(32.0)
    assert rx.next_route_control_at == pytest.approx(62.0)
    rx.route_control_request(62.0)
    rx.on_route_control_reply(CCP_RESPONSE, 63.0)
    assert rx.next_route_control_at is None


def test_receiver_route_control_carries_last_table_and_epoch() -> None:
    rx = CcpReceiver("bob")
    rx.route_control_request(0.0)
    rx.handle_route_update(_upd(0, 4, ("test.a",)), 1.0)
    assert rx.route_control_request(2.0) == RouteControlRequest(CcpMode.SYNC, TABLE_ID, 4, ())


def test_receiver_expiry_extension() -> None:
    rx = CcpReceiver("bob")
    # "1. Extend the peer's route expiry to max(current, now + holdDownTime)."
    rx.handle_route_update(_upd(0, 0), 10.0)
    assert rx.expiry == pytest.approx(55.0)
    rx.handle_route_update(_upd(0, 0, hold_down=1000), 20.0)
    assert rx.expiry == pytest.approx(55.0)
    # even ignored (gap) updates bump the expiry
    rx.handle_route_update(_upd(7, 9), 30.0)
    assert rx.expiry == pytest.approx(75.0)
    assert not rx.is_expired(75.0)
    assert rx.is_expired(75.1)


def test_receiver_new_routes_and_withdrawals() -> None:
    rx = CcpReceiver("bob")
    changed = rx.handle_route_update(_upd(0, 2, ("test.a", "test.b")), 0.0)
    assert changed == ["test.a", "test.b"]
    assert rx.epoch == 2
    assert rx.get_prefix("test.a") == IncomingRoute("bob", "test.a", ("test.bob", "test.a"), AUTH)
    # "delete each withdrawn prefix, insert each new route"
    changed = rx.handle_route_update(_upd(2, 4, ("test.c",), ("test.a", "test.zz")), 0.0)
    assert changed == ["test.a", "test.zz", "test.c"]
    assert sorted(rx.prefixes()) == ["test.b", "test.c"]
    assert rx.epoch == 4
    # withdrawals are applied before new routes
    changed = rx.handle_route_update(_upd(4, 5, ("test.b",), ("test.b",)), 0.0)
    assert changed == ["test.b"]
    assert "test.b" in rx.prefixes()


def test_receiver_overlapping_update_is_applied() -> None:
    rx = CcpReceiver("bob")
    rx.handle_route_update(_upd(0, 3, ("test.a",)), 0.0)
    # from <= epoch <= to: applied
    assert rx.handle_route_update(_upd(1, 5, ("test.b",)), 0.0) == ["test.b"]
    assert rx.epoch == 5


def test_receiver_gap_is_ignored() -> None:
    rx = CcpReceiver("bob")
    rx.handle_route_update(_upd(0, 2, ("test.a",)), 0.0)
    # "3. If fromEpochIndex > localEpoch: gap -- ignore the update"
    assert rx.handle_route_update(_upd(3, 5, ("test.b",)), 0.0) == []
    assert rx.epoch == 2
    assert rx.prefixes() == ["test.a"]


def test_receiver_stale_is_ignored() -> None:
    rx = CcpReceiver("bob")
    rx.handle_route_update(_upd(0, 5, ("test.a",)), 0.0)
    # "4. If localEpoch > toEpochIndex: stale -- ignore."
    assert rx.handle_route_update(_upd(0, 4, (), ("test.a",)), 0.0) == []
    assert rx.epoch == 5
    assert rx.prefixes() == ["test.a"]


def test_receiver_heartbeat_sets_epoch() -> None:
    rx = CcpReceiver("bob")
    rx.handle_route_update(_upd(0, 2, ("test.a",)), 0.0)
    # "5. Empty lists: heartbeat -- set localEpoch = toEpochIndex."
    assert rx.handle_route_update(_upd(2, 2), 0.0) == []
    assert rx.epoch == 2
    assert rx.handle_route_update(_upd(1, 3), 0.0) == []
    assert rx.epoch == 3


def test_receiver_table_id_change_resets_epoch() -> None:
    rx = CcpReceiver("bob")
    rx.handle_route_update(_upd(0, 9, ("test.a",)), 0.0)
    # "2. If routingTableId differs ... adopt it and reset the local epoch to 0"
    assert rx.handle_route_update(_upd(5, 9, ("test.b",), table_id=NEW_TABLE_ID), 0.0) == []
    assert rx.routing_table_id == NEW_TABLE_ID
    assert rx.epoch == 0
    # routes of the old table stay until withdrawn (v21.3.0)
    assert rx.prefixes() == ["test.a"]
    assert rx.handle_route_update(_upd(0, 2, ("test.b",), table_id=NEW_TABLE_ID), 0.0) == ["test.b"]
    assert rx.epoch == 2


def test_receiver_vectors() -> None:
    typical = _vector("route_update_typical")["prepare"]
    heartbeat = _vector("route_update_heartbeat")["prepare"]
    assert isinstance(typical, dict)
    assert isinstance(heartbeat, dict)
    rx = CcpReceiver("connie")
    changed = rx.handle_route_update(
        decode_route_update_request(bytes.fromhex(typical["data_hex"])), 0.0
    )
    assert changed == ["test.zed", "test.connie", "test.bob"]
    assert sorted(rx.prefixes()) == ["test.bob", "test.connie"]
    route = rx.get_prefix("test.connie")
    assert route is not None
    assert route.path == ("test.connie",)
    assert route.auth.hex() == "824aabd41de1594d5bd80a3ef0a001a55bbd93950de3f3b8d1db27cf8db269c5"
    assert rx.epoch == 3
    assert rx.expiry == pytest.approx(45.0)
    # "receiver just bumps expiry and sets epoch = toEpochIndex"
    beat = decode_route_update_request(bytes.fromhex(heartbeat["data_hex"]))
    assert rx.handle_route_update(beat, 10.0) == []
    assert rx.epoch == 3
    assert rx.expiry == pytest.approx(55.0)


# ============================================================== broadcaster output


def _broadcaster(address: str, table_byte: int, default_route: str = "") -> RouteBroadcaster:
    return RouteBroadcaster(
        own_address=address,
        routing_secret=hashlib.sha256(address.encode()).digest(),
        routing_table_id=bytes([table_byte]) * 16,
        default_route=default_route,
    )


def test_poll_and_outcomes() -> None:
    b = _broadcaster("test.a", 1)
    b.add_account("bob", "peer")
    assert b.next_wakeup() is None
    b.peer_connected("bob", 3.0)
    assert b.next_wakeup() == 3.0
    out = b.poll(3.0)
    assert out == [
        CcpOutgoing("bob", RouteControlRequest(CcpMode.SYNC, ZERO_ROUTING_TABLE_ID, 0, ()))
    ]
    b.on_failure(out[0], 4.0)
    assert b.next_wakeup() == pytest.approx(34.0)
    assert b.poll(5.0) == []
    out = b.poll(34.0)
    b.on_reply(out[0], CCP_RESPONSE, 34.0)
    assert b.next_wakeup() is None
    b.handle_route_control("bob", RouteControlRequest(CcpMode.SYNC), 40.0)
    assert b.next_wakeup() == pytest.approx(40.15)
    (upd,) = b.poll(40.15)
    assert isinstance(upd.request, RouteUpdateRequest)
    b.on_failure(upd, 41.0)
    peer = b.peers["bob"]
    assert peer.sender is not None
    assert peer.sender.last_known_epoch == 0
    (upd,) = b.poll(71.0)
    b.on_reply(upd, IlpReject("F99"), 71.0)
    assert peer.sender.last_known_epoch == upd.request.to_epoch_index  # type: ignore[union-attr]
    # outcomes for peers that went away are ignored
    b.peer_disconnected("bob")
    b.on_reply(upd, CCP_RESPONSE, 72.0)
    b.on_failure(upd, 72.0)


# ============================================================== scenarios


NOW_DT = datetime(2018, 4, 2, 16, 43, 50, tzinfo=UTC)


def _deliver(
    nodes: dict[str, RouteBroadcaster],
    links: dict[tuple[str, str], tuple[str, str]],
    now: float,
) -> int:
    """Send every due CCP message over the in-memory links, through the wire codec.
    ``links[(node, account)]`` is the account id the other side knows ``node`` by.
    """
    sent = 0
    for name, node in nodes.items():
        for out in node.poll(now):
            sent += 1
            other_name, their_account = links[(name, out.account_id)]
            other = nodes[other_name]
            expires = NOW_DT + timedelta(seconds=60)
            reply: IlpFulfill | IlpReject
            try:
                if isinstance(out.request, RouteControlRequest):
                    prepare = route_control_prepare(out.request, expires)
                    other.handle_route_control(
                        their_account, check_route_control_request(prepare, NOW_DT), now
                    )
                else:
                    prepare = route_update_prepare(out.request, expires)
                    other.handle_route_update(
                        their_account, check_route_update_request(prepare, NOW_DT), now
                    )
                reply = CCP_RESPONSE
            except IlpError as e:
                reply = IlpReject(e.code, other.own_address, e.message)
            node.on_reply(out, reply, now)
    return sent


def _run(
    nodes: dict[str, RouteBroadcaster],
    links: dict[tuple[str, str], tuple[str, str]],
    start: float,
    until: float,
) -> float:
    now = start
    while now < until:
        _deliver(nodes, links, now)
        wakeups = [w for n in nodes.values() if (w := n.next_wakeup()) is not None]
        now = max(now, min(wakeups, default=until))
        if now == until:
            break
    return now


def test_two_connectors_learn_each_others_routes() -> None:
    a = _broadcaster("test.a", 1)
    b = _broadcaster("test.b", 2)
    a.add_account("to-b", "peer")
    a.add_account("alice", "child")
    b.add_account("to-a", "peer")
    b.add_account("bobby", "child")
    nodes = {"a": a, "b": b}
    links = {("a", "to-b"): ("b", "to-a"), ("b", "to-a"): ("a", "to-b")}
    a.peer_connected("to-b", 0.0)
    b.peer_connected("to-a", 0.0)
    assert a.next_hop("test.b.bobby") is None
    _run(nodes, links, 0.0, 1.0)
    # each knows the other's address; children are reached through it
    assert a.next_hop("test.b.bobby") == "to-b"
    assert b.next_hop("test.a.alice") == "to-a"
    assert a.next_hop("test.a.alice") == "alice"
    assert a.local_routing_table.get("test.b") == Route(
        "to-b",
        ("test.b",),
        hashlib.sha256(b.local_auth("test.b")).digest(),
    )
    # own routes never echoed back: b's view of a does not contain test.b
    routes_from_a = b.peer_routes("to-a")
    assert routes_from_a is not None
    assert routes_from_a.keys() == ["test.a"]
    # and the forwarding table of a now advertises test.b (to others) with path a, b
    fwd = a.forwarding_routing_table.get("test.b")
    assert fwd is not None
    assert fwd.path == ("test.a", "test.b")
    # then heartbeats: nothing changes, receivers stay in sync
    _run(nodes, links, 1.0, 100.0)
    ra, rb = a.peers["to-b"].receiver, b.peers["to-a"].receiver
    assert ra is not None
    assert rb is not None
    assert rb.epoch == a.forwarding_routing_table.current_epoch
    assert ra.epoch == b.forwarding_routing_table.current_epoch
    assert rb.expiry > 100.0


def test_three_connectors_parent_child_line() -> None:
    # top <-parent- mid -peer- side: mid must not advertise side's routes to its parent
    top = _broadcaster("test.top", 1)
    mid = _broadcaster("test.mid", 2, default_route="auto")
    side = _broadcaster("test.side", 3)
    top.add_account("mid", "child", send_routes=True, receive_routes=True)
    mid.add_account("top", "parent")
    mid.add_account("side", "peer")
    side.add_account("mid", "peer")
    nodes = {"top": top, "mid": mid, "side": side}
    links = {
        ("top", "mid"): ("mid", "top"),
        ("mid", "top"): ("top", "mid"),
        ("mid", "side"): ("side", "mid"),
        ("side", "mid"): ("mid", "side"),
    }
    for node, account in (("top", "mid"), ("mid", "top"), ("mid", "side"), ("side", "mid")):
        nodes[node].peer_connected(account, 0.0)
    now = _run(nodes, links, 0.0, 100.0)
    assert side.next_hop("test.top.x") == "mid"
    assert side.next_hop("test.mid") == "mid"
    assert mid.next_hop("test.side") == "side"
    assert top.next_hop("test.mid.y") == "mid"
    # "it does not advertise peer/parent routes to a parent"
    assert top.next_hop("test.side") is None
    # mid's default route ("auto": its parent) is not advertised either
    assert mid.next_hop("test.elsewhere") == "top"
    assert "test" not in mid.forwarding_routing_table
    # a link goes down: routes through it are withdrawn at the next periodic broadcast
    # (v21.3.0 schedules nothing on disconnect)
    assert mid.peer_disconnected("top") is True
    assert mid.next_hop("test.top") == "top"  # the default route still points there
    assert "test.top" not in mid.forwarding_routing_table
    del links[("top", "mid")]
    del nodes["top"]
    routes = side.peer_routes("mid")
    assert routes is not None
    assert "test.top" in routes
    _run(nodes, links, now, now + 31.0)
    assert "test.top" not in routes
    assert side.next_hop("test.top") is None
    assert side.next_hop("test.mid") == "mid"


def test_restarted_sender_gets_full_resync() -> None:
    a = _broadcaster("test.a", 1)
    b = _broadcaster("test.b", 2)
    a.add_account("b", "peer")
    b.add_account("a", "peer")
    nodes = {"a": a, "b": b}
    links = {("a", "b"): ("b", "a"), ("b", "a"): ("a", "b")}
    a.peer_connected("b", 0.0)
    b.peer_connected("a", 0.0)
    now = _run(nodes, links, 0.0, 5.0)
    assert b.next_hop("test.a") == "a"
    # a restarts with a new routing table id; the link is re-established
    a2 = _broadcaster("test.a", 9)
    a2.add_account("b", "peer")
    a2.add_account("kid", "child")
    nodes["a"] = a2
    b.peer_disconnected("a")
    b.peer_connected("a", now)
    a2.peer_connected("b", now)
    _run(nodes, links, now, now + 5.0)
    rx = b.peers["a"].receiver
    assert rx is not None
    assert rx.routing_table_id == bytes([9]) * 16
    assert rx.epoch == a2.forwarding_routing_table.current_epoch
    assert b.next_hop("test.a.kid") == "a"
