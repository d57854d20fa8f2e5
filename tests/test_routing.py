"""Routing tables, best-route selection and the forwarding table/epoch log
(``ilp_receiver.connector.routing``; spec 05 "CCP route broadcasts", "Route auth values").
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.ccp import Route as CcpRoute
from ilp_receiver.codec.ccp import RouteControlRequest, RouteUpdateRequest
from ilp_receiver.connector.ccp import CcpPeer
from ilp_receiver.connector.routing import (
    ForwardingRoutingTable,
    PeerRoutes,
    PrefixMap,
    Relation,
    Route,
    RouteBroadcaster,
    RouteUpdate,
    StaticRoute,
    can_dragon_filter,
    global_prefix_for_env,
    import_filter,
    new_routing_table_id,
)
from ilp_receiver.errors import ConfigError, IlpError
from tests.vectorlib import load

SECRET = bytes.fromhex("11" * 32)
TABLE_ID = bytes(range(16))
OTHER_TABLE_ID = bytes(range(1, 17))


def _hmac(prefix: str) -> bytes:
    return hmac.new(SECRET, prefix.encode(), hashlib.sha256).digest()


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _vector(name: str) -> dict[str, object]:
    case: dict[str, object] = next(c for c in load("ccp.json")["cases"] if c["name"] == name)
    return case


# ============================================================== PrefixMap


def test_resolve_is_segment_aware() -> None:
    m: PrefixMap[int] = PrefixMap()
    m.insert("test.harness.receivers", 1)
    m.insert("test", 2)
    assert m.resolve("test.harness.receivers.x") == 1
    assert m.resolve("test.harness.receivers") == 1
    assert m.resolve("test.harness.receivers.x.y.z") == 1
    # "k == p or k.startswith(p + '.')": not a plain string prefix match
    assert m.resolve("test.harness.receiversx") == 2
    assert m.resolve_prefix("test.harness.receiversx") == "test"
    assert m.resolve("testx.a") is None
    assert m.resolve("g.a") is None


def test_resolve_longest_wins() -> None:
    m: PrefixMap[str] = PrefixMap()
    for p in ("g", "g.a", "g.a.b", "g.a.bc"):
        m.insert(p, p)
    assert m.resolve("g.a.b.c") == "g.a.b"
    assert m.resolve("g.a.bc.d") == "g.a.bc"
    assert m.resolve("g.a.bd") == "g.a"
    assert m.resolve("g.x") == "g"


def test_trailing_dot_and_empty_prefix_follow_v21() -> None:
    m: PrefixMap[int] = PrefixMap()
    m.insert("test.a.", 1)
    m.insert("", 2)
    # a trailing-dot prefix only matches itself; "" matches "" and ".x" only
    assert m.resolve("test.a.b") is None
    assert m.resolve("test.a.") == 1
    assert m.resolve("") == 2
    assert m.resolve(".x") == 2
    assert m.resolve("test.x") is None


def test_keys_order_insert_replace_delete() -> None:
    m: PrefixMap[int] = PrefixMap()
    for i, p in enumerate(["a", "bb", "ab", "c", "zzz", "b"]):
        m.insert(p, i)
    # longer first, equal lengths reverse alphabetical (v21.3.0 insert)
    assert m.keys() == ["zzz", "bb", "ab", "c", "b", "a"]
    assert m.insert("bb", 99) == 99
    assert m.get("bb") == 99
    assert len(m) == 6
    assert m.delete("bb") is True
    assert m.delete("bb") is False
    assert "bb" not in m
    assert "ab" in m
    assert list(m) == ["zzz", "ab", "c", "b", "a"]
    assert dict(m.items()) == {"zzz": 4, "ab": 2, "c": 3, "b": 5, "a": 0}


def test_keys_starting_with_is_plain_and_prefixes_of_is_segmented() -> None:
    m: PrefixMap[int] = PrefixMap()
    for p in ("g.a", "g.ab", "g.a.b", "g", "h"):
        m.insert(p, 0)
    assert sorted(m.keys_starting_with("g.a")) == ["g.a", "g.a.b", "g.ab"]
    assert list(m.keys_prefixes_of("g.a.b.c")) == ["g.a.b", "g.a", "g"]
    assert list(m.keys_prefixes_of("g.a")) == ["g"]


def _naive_resolve(keys: set[str], key: str) -> str | None:
    matching = [p for p in keys if key == p or key.startswith(p + ".")]
    return max(matching, key=len) if matching else None


def _naive_order(keys: set[str]) -> list[str]:
    return sorted(keys, key=lambda p: (-len(p), [-ord(c) for c in p]))


_segment = st.sampled_from(["a", "b", "ab", ""])
_addr = st.lists(_segment, min_size=1, max_size=4).map(".".join)
_ops = st.lists(st.tuples(st.booleans(), _addr), max_size=30)


@settings(max_examples=200, deadline=None)
@given(ops=_ops, queries=st.lists(_addr, max_size=20))
def test_prefix_map_matches_naive_model(ops: list[tuple[bool, str]], queries: list[str]) -> None:
    m: PrefixMap[str] = PrefixMap()
    model: dict[str, str] = {}
    for is_insert, prefix in ops:
        if is_insert:
            m.insert(prefix, prefix.upper())
            model[prefix] = prefix.upper()
        else:
            assert m.delete(prefix) is (prefix in model)
            model.pop(prefix, None)
    assert m.keys() == _naive_order(set(model))
    for q in queries + list(model):
        expected = _naive_resolve(set(model), q)
        assert m.resolve_prefix(q) == expected
        assert m.resolve(q) == (None if expected is None else model[expected])
        assert list(m.keys_prefixes_of(q)) == [
            k for k in _naive_order(set(model)) if q.startswith(k + ".")
        ]


# ============================================================== small pieces


def test_new_routing_table_id_is_uuid_v4() -> None:
    table_id = new_routing_table_id(b"\xff" * 16)
    u = uuid.UUID(bytes=table_id)
    assert u.version == 4
    assert u.variant == uuid.RFC_4122
    assert table_id.hex() == "ffffffffffff4fffbfffffffffffffff"
    with pytest.raises(ValueError, match="16"):
        new_routing_table_id(b"short")
    with pytest.raises(ValueError, match="16"):
        ForwardingRoutingTable(b"short")


def test_forwarding_table_record_appends_epochs() -> None:
    table = ForwardingRoutingTable(TABLE_ID)
    r = Route("a", ("test.me",), bytes(32))
    assert table.record("test.x", r) == RouteUpdate(0, "test.x", r)
    assert table.record("test.x", None) == RouteUpdate(1, "test.x", None)
    assert table.current_epoch == 2
    assert [u.epoch for u in table.log] == [0, 1]


def test_global_prefix_for_env() -> None:
    assert global_prefix_for_env("production") == "g"
    assert global_prefix_for_env("test") == "test"
    with pytest.raises(ConfigError):
        global_prefix_for_env("staging")


def test_peer_routes_always_report_change() -> None:
    routes = PeerRoutes()
    assert routes.delete_route("test.nothing") is True  # v21.3.0: "TODO Check if actually changed"


def test_dragon_filter() -> None:
    relations: dict[str, Relation] = {"p": "peer", "par": "parent", "c": "child", "": "local"}
    table: PrefixMap[Route] = PrefixMap()
    table.insert("test.x", Route("p", ("me", "x"), bytes(32)))
    sub_via_peer = Route("p", ("me", "x", "y"), bytes(32))
    sub_via_parent = Route("par", ("me", "y"), bytes(32))
    sub_via_child = Route("c", ("me",), bytes(32))
    # "if we have a more general route that is as good as a more specific route, we
    # don't need to advertise the more specific route"
    assert can_dragon_filter(table, relations.__getitem__, "test.x.y", sub_via_peer)
    assert can_dragon_filter(table, relations.__getitem__, "test.x.y", sub_via_parent)
    # "The more specific route is better for us, so we keep it"
    assert not can_dragon_filter(table, relations.__getitem__, "test.x.y", sub_via_child)
    # not segment-wise under test.x
    assert not can_dragon_filter(table, relations.__getitem__, "test.xy", sub_via_peer)
    # "We are the origin of the parent route, cannot DRAGON filter"
    table.insert("test.x", Route("", ("me",), bytes(32)))
    assert not can_dragon_filter(table, relations.__getitem__, "test.x.y", sub_via_peer)


def _update(new: tuple[str, ...] = (), withdrawn: tuple[str, ...] = ()) -> RouteUpdateRequest:
    routes = tuple(CcpRoute(p, ("test.peer",), bytes(32)) for p in new)
    return RouteUpdateRequest(TABLE_ID, 1, 0, 1, 45000, "test.peer", routes, withdrawn)


def test_import_filter() -> None:
    request = _update(("test", "test.a", "g.b", "testnet.c", "te"), ("test", "g.x"))
    filtered = import_filter(request, "test")
    # "drop routes whose prefix does not start with the global prefix ... or equals it"
    # (a plain string test in v21.3.0, so "testnet.c" passes)
    assert [r.prefix for r in filtered.new_routes] == ["test.a", "testnet.c"]
    assert filtered.withdrawn_routes == ("test", "g.x")
    unchanged = _update(("test.a",))
    assert import_filter(unchanged, "test") is unchanged
    assert [r.prefix for r in import_filter(request, "g").new_routes] == ["g.b"]


# ============================================================== RouteBroadcaster


def _broadcaster(**kwargs: object) -> RouteBroadcaster:
    params: dict[str, object] = {
        "own_address": "test.connie",
        "routing_secret": SECRET,
        "routing_table_id": TABLE_ID,
    }
    params.update(kwargs)
    return RouteBroadcaster(**params)  # type: ignore[arg-type]


def _feed(
    b: RouteBroadcaster,
    account: str,
    routes: dict[str, tuple[str, ...]],
    withdrawn: tuple[str, ...] = (),
    now: float = 0.0,
) -> bool:
    """Hand ``account``'s receiver the next update (epochs continue from where it is)."""
    peer = b.peers[account]
    assert peer.receiver is not None
    epoch = peer.receiver.epoch
    request = RouteUpdateRequest(
        TABLE_ID,
        epoch + 1,
        epoch,
        epoch + 1,
        45000,
        routes_speaker(routes),
        tuple(CcpRoute(p, path, _sha(p.encode())) for p, path in routes.items()),
        withdrawn,
    )
    return b.handle_route_update(account, request, now)


def routes_speaker(routes: dict[str, tuple[str, ...]]) -> str:
    for path in routes.values():
        return path[0]
    return "test.someone"


def test_local_routes_own_address_children_default_auto() -> None:
    b = _broadcaster()
    b.add_account("alice", "child")
    b.add_account("up2", "peer")
    b.add_account("up", "parent")
    b.add_account("up3", "parent")
    b.add_account("bob", "child", ilp_address_segment="bobby")
    table = b.local_routing_table
    assert table.get("test.connie") == Route("", (), _hmac("test.connie"))
    assert table.get("test.connie.alice") == Route("alice", (), _hmac("test.connie.alice"))
    assert table.get("test.connie.bobby") == Route("bob", (), _hmac("test.connie.bobby"))
    # "'auto' to automatically use the first parent in the `accounts` map"
    assert table.get("test") == Route("up", (), _hmac("test"))
    assert b.next_hop("test.connie") == ""
    assert b.next_hop("test.connie.alice.x") == "alice"
    assert b.next_hop("test.anything") == "up"
    assert b.next_hop("g.anything") is None
    assert b.child_address("bob") == "test.connie.bobby"
    with pytest.raises(ValueError, match="child"):
        b.child_address("up")


def test_default_route_disabled_and_explicit() -> None:
    b = _broadcaster(default_route="")
    b.add_account("up", "parent")
    assert b.next_hop("test.x") is None
    b2 = _broadcaster(default_route="pp", env="production", own_address="g.connie")
    b2.add_account("up", "parent")
    b2.add_account("pp", "peer")
    assert b2.next_hop("g.x") == "pp"
    assert b2.global_prefix == "g"


def test_forwarding_table_auth_matches_vector() -> None:
    derivation = _vector("route_update_typical")["derivation"]
    assert isinstance(derivation, dict)
    b = _broadcaster(routing_secret=bytes.fromhex(derivation["routingSecret_hex"]))
    assert b.local_auth("test.connie").hex() == derivation["local_route_auth_hex"]
    advertised = b.forwarding_routing_table.get("test.connie")
    # "local auth = HMAC-SHA256(routingSecret, prefix) ... replaced by SHA-256(previous
    # auth)"; "Route path in the forwarding table already starts with the sender's own
    # address."
    assert advertised == Route(
        "", ("test.connie",), bytes.fromhex(derivation["forwarded_auth_hex"])
    )
    assert b.forwarding_routing_table.log == [RouteUpdate(0, "test.connie", advertised)]


def test_children_and_default_route_not_advertised() -> None:
    b = _broadcaster()
    b.add_account("alice", "child")
    b.add_account("up", "parent")
    assert b.forwarding_routing_table.keys() == ["test.connie"]
    assert b.local_routing_table.keys() == ["test.connie.alice", "test.connie", "test"]
    assert b.forwarding_routing_table.current_epoch == 1


def test_routes_outside_global_prefix_not_advertised() -> None:
    b = _broadcaster(own_address="private.me")
    assert b.local_routing_table.get("private.me") is not None
    assert len(b.forwarding_routing_table) == 0
    assert b.forwarding_routing_table.current_epoch == 0


def test_learned_route_advertised_with_own_address_and_hashed_auth() -> None:
    b = _broadcaster()
    b.add_account("bob", "peer")
    b.peer_connected("bob", 0.0)
    assert _feed(b, "bob", {"test.bob": ("test.bob",)}) is True
    assert b.next_hop("test.bob.x") == "bob"
    assert b.local_routing_table.get("test.bob") == Route("bob", ("test.bob",), _sha(b"test.bob"))
    assert b.forwarding_routing_table.get("test.bob") == Route(
        "bob", ("test.connie", "test.bob"), _sha(_sha(b"test.bob"))
    )
    assert b.forwarding_routing_table.log[-1].prefix == "test.bob"


def test_best_route_relation_then_path_then_account_id() -> None:
    b = _broadcaster(default_route="")
    for account, relation in (("p1", "parent"), ("z", "peer"), ("a", "peer"), ("kid", "child")):
        b.add_account(account, relation, send_routes=True, receive_routes=True)  # type: ignore[arg-type]
        b.peer_connected(account, 0.0)
    _feed(b, "p1", {"test.x": ("test.p1",)})
    assert b.next_hop("test.x") == "p1"
    # peer (1) beats parent (0) even with a longer path
    _feed(b, "z", {"test.x": ("test.z", "test.q", "test.r")})
    assert b.next_hop("test.x") == "z"
    # same relation: shorter path wins
    _feed(b, "a", {"test.x": ("test.a", "test.q", "test.r", "test.s")})
    assert b.next_hop("test.x") == "z"
    # same relation and length: smaller account id wins
    _feed(b, "a", {"test.x": ("test.a", "test.q", "test.r")})
    assert b.next_hop("test.x") == "a"
    # child (2) beats peers
    _feed(b, "kid", {"test.x": ("test.kid", "1", "2", "3", "4")})
    assert b.next_hop("test.x") == "kid"
    best = b.best_route("test.x")
    assert best is not None
    assert best.next_hop == "kid"


def test_epoch_log_only_on_next_hop_change() -> None:
    b = _broadcaster()
    b.add_account("bob", "peer")
    b.peer_connected("bob", 0.0)
    start = b.forwarding_routing_table.current_epoch
    assert _feed(b, "bob", {"test.bob": ("test.bob",)}) is True
    assert b.forwarding_routing_table.current_epoch == start + 1
    # same next hop, new path: v21.3.0 compares next hops only -> no change, no log
    assert _feed(b, "bob", {"test.bob": ("test.bob", "test.x")}) is False
    assert b.forwarding_routing_table.current_epoch == start + 1
    assert b.local_routing_table.get("test.bob") == Route("bob", ("test.bob",), _sha(b"test.bob"))
    # withdrawal -> one withdrawal entry
    assert _feed(b, "bob", {}, withdrawn=("test.bob",)) is True
    assert b.forwarding_routing_table.log[-1] == RouteUpdate(start + 1, "test.bob", None)
    assert b.next_hop("test.bob") is None


def test_static_route_beats_local_and_learned() -> None:
    b = _broadcaster(
        routes=[
            StaticRoute("test.bob", "carl"),
            StaticRoute("test.connie.alice", "carl"),
            StaticRoute("test.ghost", "nobody"),
        ]
    )
    b.add_account("alice", "child")
    b.add_account("bob", "peer")
    b.add_account("carl", "peer")
    b.peer_connected("bob", 0.0)
    _feed(b, "bob", {"test.bob": ("test.bob",), "test.ghost": ("test.bob",)})
    assert b.local_routing_table.get("test.bob") == Route("carl", (), _hmac("test.bob"))
    assert b.next_hop("test.connie.alice") == "carl"
    # "ignoring configured route, account does not exist."
    assert b.next_hop("test.ghost") == "bob"
    assert b.forwarding_routing_table.get("test.bob") == Route(
        "carl", ("test.connie",), _sha(_hmac("test.bob"))
    )


def test_dragon_filtering_in_forwarding_table() -> None:
    b = _broadcaster()
    b.add_account("bob", "peer")
    b.add_account("kid", "child", send_routes=True, receive_routes=True)
    b.peer_connected("bob", 0.0)
    b.peer_connected("kid", 0.0)
    _feed(b, "bob", {"test.x.y": ("test.bob", "test.x")})
    assert "test.x.y" in b.forwarding_routing_table
    # a less specific route via an equally good peer makes the specific one redundant
    _feed(b, "bob", {"test.x": ("test.bob",)})
    assert "test.x" in b.forwarding_routing_table
    assert "test.x.y" not in b.forwarding_routing_table
    log = b.forwarding_routing_table.log
    assert [(u.prefix, u.route is None) for u in log[-3:]] == [
        ("test.x.y", False),
        ("test.x", False),
        ("test.x.y", True),
    ]
    # both remain in the local table, used for forwarding
    assert b.next_hop("test.x.y.z") == "bob"
    # a more specific route via a child (better relation) is kept
    _feed(b, "kid", {"test.x.k": ("test.kid",)})
    assert "test.x.k" in b.forwarding_routing_table


def test_defaults_who_sends_and_receives() -> None:
    b = _broadcaster()
    b.add_account("up", "parent")
    b.add_account("bob", "peer")
    b.add_account("kid", "child")
    b.add_account("kid2", "child", receive_routes=True)
    b.add_account("bob2", "peer", send_routes=False, receive_routes=False)
    up = b.peer_connected("up", 0.0)
    bob = b.peer_connected("bob", 0.0)
    assert isinstance(up, CcpPeer)
    assert up.sender is not None
    assert up.receiver is not None
    assert bob is not None
    assert bob.sender is not None
    assert bob.receiver is not None
    # "peers with relation child neither send nor receive routes unless configured"
    assert b.peer_connected("kid", 0.0) is None
    assert b.peer_connected("bob2", 0.0) is None
    kid2 = b.peer_connected("kid2", 0.0)
    assert kid2 is not None
    assert kid2.sender is None
    assert kid2.receiver is not None
    assert b.peer_connected("kid2", 1.0) is kid2
    assert b.peer_connected("unknown", 0.0) is None
    assert set(b.peers) == {"up", "bob", "kid2"}


def test_route_broadcast_disabled_keeps_local_routes() -> None:
    b = _broadcaster(route_broadcast_enabled=False)
    b.add_account("bob", "peer")
    assert b.peer_connected("bob", 0.0) is None
    assert b.next_hop("test.connie") == ""


def test_non_peers_get_f00() -> None:
    b = _broadcaster()
    b.add_account("kid", "child", receive_routes=True)
    b.peer_connected("kid", 0.0)
    control = RouteControlRequest(mode=1)  # type: ignore[arg-type]
    with pytest.raises(IlpError) as e:
        b.handle_route_control("stranger", control, 0.0)
    assert e.value.code == "F00"
    assert e.value.message == "cannot process route control messages from non-peers."
    with pytest.raises(IlpError) as e:
        b.handle_route_control("kid", control, 0.0)
    assert e.value.code == "F00"
    assert "not to send routes" in e.value.message
    with pytest.raises(IlpError) as e:
        b.handle_route_update("stranger", _update(("test.a",)), 0.0)
    assert e.value.code == "F00"
    assert e.value.message == "cannot process route update messages from non-peers."
    b.add_account("kid3", "child", send_routes=True)
    b.peer_connected("kid3", 0.0)
    with pytest.raises(IlpError) as e:
        b.handle_route_update("kid3", _update(("test.a",)), 0.0)
    assert e.value.code == "F00"
    assert "not to receive routes" in e.value.message


def test_import_filter_applied_by_broadcaster() -> None:
    b = _broadcaster()
    b.add_account("bob", "peer")
    b.peer_connected("bob", 0.0)
    _feed(b, "bob", {"test": ("test.bob",), "g.x": ("test.bob",), "test.ok": ("test.bob",)})
    routes = b.peer_routes("bob")
    assert routes is not None
    assert routes.keys() == ["test.ok"]
    assert b.peer_routes("nobody") is None


def test_peer_disconnect_reselects_routes() -> None:
    b = _broadcaster(default_route="")
    b.add_account("bob", "peer")
    b.add_account("carl", "peer")
    b.peer_connected("bob", 0.0)
    b.peer_connected("carl", 0.0)
    _feed(b, "bob", {"test.x": ("test.bob",)})
    _feed(b, "carl", {"test.x": ("test.carl", "test.bob")})
    assert b.next_hop("test.x") == "bob"
    assert b.peer_disconnected("bob") is True
    assert b.next_hop("test.x") == "carl"
    assert b.forwarding_routing_table.get("test.x") == Route(
        "carl", ("test.connie", "test.carl", "test.bob"), _sha(_sha(b"test.x"))
    )
    assert b.peer_disconnected("carl") is True
    assert b.next_hop("test.x") is None
    assert b.peer_disconnected("carl") is False
    # a child we exchange routes with keeps its local route when it disconnects
    b.add_account("kid", "child", send_routes=True, receive_routes=True)
    b.peer_connected("kid", 0.0)
    assert b.peer_disconnected("kid") is False
    assert b.next_hop("test.connie.kid") == "kid"


def test_remove_child_account_and_address_change_drop_old_routes() -> None:
    b = _broadcaster()
    b.add_account("alice", "child")
    assert b.next_hop("test.connie.alice") == "alice"
    b.remove_account("alice")
    assert b.next_hop("test.connie.alice") == ""  # now only our own prefix matches
    assert "test.connie.alice" not in b.local_routing_table
    b.set_own_address("test.newname")
    assert b.own_address == "test.newname"
    assert b.next_hop("test.connie") is None
    assert b.forwarding_routing_table.keys() == ["test.newname"]
    assert dict(b.iter_local_routes()).keys() == {"test.newname"}
    with pytest.raises(ConfigError):
        b.add_account("x", "friend")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        b.add_account("", "peer")


def test_relation_of() -> None:
    b = _broadcaster()
    b.add_account("up", "parent")
    assert b.relation_of("") == "local"
    assert b.relation_of("up") == "parent"
    assert b.relation_of("gone") == "peer"
    assert b.accounts["up"].sends_routes
    assert b.accounts["up"].receives_routes


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove"]),
            st.sampled_from(["a", "b", "c", "d", "up", "side"]),
        ),
        max_size=25,
    )
)
def test_incremental_child_routes_equal_a_full_reload(ops: list[tuple[str, str]]) -> None:
    # add_account/remove_account update a child's own route (and the static routes
    # through it) without rebuilding every local route: the tables must be exactly what
    # a full reload computes.
    relations = {"up": "parent", "side": "peer"}
    static = [StaticRoute("test.me.b.inner", "b"), StaticRoute("test.elsewhere", "c")]

    def fresh() -> RouteBroadcaster:
        return RouteBroadcaster(
            own_address="test.me",
            routing_secret=bytes(32),
            routing_table_id=new_routing_table_id(bytes(16)),
            routes=static,
        )

    incremental = fresh()
    for op, account in ops:
        if op == "add":
            incremental.add_account(account, relations.get(account, "child"))  # type: ignore[arg-type]
        else:
            incremental.remove_account(account)
    reloaded = fresh()
    for account, info in incremental.accounts.items():
        reloaded.add_account(account, info.relation)
    reloaded.reload_local_routes()
    assert dict(reloaded.local_routing_table.items()) == dict(
        incremental.local_routing_table.items()
    )
    assert dict(reloaded.forwarding_routing_table.items()) == dict(
        incremental.forwarding_routing_table.items()
    )
