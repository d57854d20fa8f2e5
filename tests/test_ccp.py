"""CCP route broadcasts (ilp_receiver.codec.ccp) against ccp.json."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.ccp import (
    CCP_CONTROL_DESTINATION,
    CCP_RESPONSE,
    CCP_UPDATE_DESTINATION,
    DEFAULT_HOLD_DOWN_TIME_MS,
    MAX_ROUTE_PROPS,
    ZERO_ROUTING_TABLE_ID,
    CcpMode,
    Route,
    RouteControlRequest,
    RouteProp,
    RouteUpdateRequest,
    advertised_auth,
    bytes_to_uuid,
    check_ccp_response,
    check_route_control_request,
    check_route_update_request,
    decode_route_control_request,
    decode_route_update_request,
    encode_route_control_request,
    encode_route_update_request,
    local_route_auth,
    route_control_prepare,
    route_update_prepare,
    uuid_to_bytes,
)
from ilp_receiver.codec.ildcp import PEER_PROTOCOL_EXPIRY, PeerProtocolRequestError
from ilp_receiver.codec.ilp import (
    PEER_PROTOCOL_CONDITION,
    IlpFulfill,
    IlpPrepare,
    decode_fulfill,
    decode_prepare,
    encode_prepare,
)
from ilp_receiver.errors import DecodeError, EncodeError
from tests.peer_vectors import (
    assert_built_prepare,
    assert_peer_fulfill,
    peer_request_case,
    vector_time,
)
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=200, deadline=None)
FILE = "ccp.json"


NOW = vector_time(section(FILE, "fixed_now"))
CONSTANTS: dict[str, Any] = section(FILE, "constants")
EXPIRES = NOW + PEER_PROTOCOL_EXPIRY


def prop_from_json(p: dict[str, Any]) -> RouteProp:
    value = p["value"].encode() if p["isUtf8"] else bytes.fromhex(p["value"]["hex"])
    return RouteProp(
        p["id"],
        value,
        is_optional=p["isOptional"],
        is_transitive=p["isTransitive"],
        is_partial=p["isPartial"],
        is_utf8=p["isUtf8"],
    )


def update_from_json(j: dict[str, Any]) -> RouteUpdateRequest:
    return RouteUpdateRequest(
        uuid_to_bytes(j["routingTableId"]),
        j["currentEpochIndex"],
        j["fromEpochIndex"],
        j["toEpochIndex"],
        j["holdDownTime"],
        j["speaker"],
        tuple(
            Route(
                r["prefix"],
                tuple(r["path"]),
                bytes.fromhex(r["auth"]),
                tuple(prop_from_json(p) for p in r["props"]),
            )
            for r in j["newRoutes"]
        ),
        tuple(j["withdrawnRoutes"]),
    )


def test_constants() -> None:
    c = CONSTANTS
    assert c["CCP_CONTROL_DESTINATION"] == CCP_CONTROL_DESTINATION
    assert c["CCP_UPDATE_DESTINATION"] == CCP_UPDATE_DESTINATION
    assert c["MODE_IDLE"] == CcpMode.IDLE
    assert c["MODE_SYNC"] == CcpMode.SYNC
    assert bytes.fromhex(c["peer_protocol_condition_hex"]) == PEER_PROTOCOL_CONDITION
    assert datetime(2018, 4, 2, 16, 43, 50, tzinfo=UTC) == NOW


@pytest.mark.parametrize("case", cases(FILE, "cases"), ids=case_id)
def test_cases(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    name = case["name"]
    if name == "ccp_response":
        assert_peer_fulfill(CCP_RESPONSE, b"", raw)
        check_ccp_response(decode_fulfill(raw))
        return
    expected_prepare = peer_request_case(case)
    assert expected_prepare.expires_at == EXPIRES
    data = expected_prepare.data
    if name.startswith("route_control"):
        j = case["json"]
        request = RouteControlRequest(
            CcpMode(j["mode"]),
            uuid_to_bytes(j["lastKnownRoutingTableId"]),
            j["lastKnownEpoch"],
            tuple(j["features"]),
        )
        assert bytes_to_uuid(request.last_known_routing_table_id) == j["lastKnownRoutingTableId"]
        assert encode_route_control_request(request) == data
        assert decode_route_control_request(data) == request
        assert_built_prepare(route_control_prepare(request, EXPIRES), expected_prepare, raw)
        assert check_route_control_request(decode_prepare(raw), NOW) == request
        return
    assert name.startswith("route_update")
    decoded = decode_route_update_request(data)
    if "json" in case:
        update = update_from_json(case["json"])
        assert bytes_to_uuid(update.routing_table_id) == case["json"]["routingTableId"]
        assert encode_route_update_request(update) == data
        if "decoded_props" in case:
            # the writer forces/drops flags, so the read-back props differ from the input
            expected_props = tuple(prop_from_json(p) for p in case["decoded_props"])
            assert decoded.new_routes[0].props == expected_props
            assert tuple(p.normalized() for p in update.new_routes[0].props) == expected_props
            assert decoded.new_routes[0].props[0].text == "hello"
            assert [p.meta for p in expected_props] == [0x50, 0xE0, 0x80]
        else:
            assert decoded == update
        assert_built_prepare(route_update_prepare(update, EXPIRES), expected_prepare, raw)
    else:  # heartbeat: no json, check the fields the note describes
        assert decoded.new_routes == ()
        assert decoded.withdrawn_routes == ()
        assert decoded.from_epoch_index == decoded.to_epoch_index == 3
        assert decoded.hold_down_time == DEFAULT_HOLD_DOWN_TIME_MS
        assert decoded.speaker == "test.connie"
        assert encode_route_update_request(decoded) == data
        assert encode_prepare(route_update_prepare(decoded, EXPIRES)) == raw
    assert encode_route_update_request(decoded) == data
    assert check_route_update_request(decode_prepare(raw), NOW) == decoded
    if "derivation" in case:
        d = case["derivation"]
        secret = bytes.fromhex(d["routingSecret_hex"])
        local = local_route_auth(secret, "test.connie")
        assert local.hex() == d["local_route_auth_hex"]
        assert advertised_auth(local).hex() == d["forwarded_auth_hex"]
        assert decoded.new_routes[0].auth.hex() == d["forwarded_auth_hex"]


def test_initial_sync_defaults() -> None:
    request = RouteControlRequest(CcpMode.SYNC)
    assert request.last_known_routing_table_id == ZERO_ROUTING_TABLE_ID
    assert encode_route_control_request(request).hex() == "01" + "00" * 16 + "00000000" + "0100"


def test_server_checks() -> None:
    good = route_control_prepare(RouteControlRequest(CcpMode.SYNC), NOW)
    later = NOW + timedelta(milliseconds=1)
    with pytest.raises(PeerProtocolRequestError, match="CCP route control request packet is"):
        check_route_control_request(good, later)
    with pytest.raises(PeerProtocolRequestError, match="not a CCP route update request"):
        check_route_update_request(good, NOW)
    update = route_update_prepare(RouteUpdateRequest(bytes(16), 0, 0, 0, 45000, "test.a"), NOW)
    with pytest.raises(PeerProtocolRequestError, match="not a CCP route control request"):
        check_route_control_request(update, NOW)
    with pytest.raises(PeerProtocolRequestError, match="CCP route update request packet is"):
        check_route_update_request(update, later)
    wrong = IlpPrepare(0, NOW, bytes(32), CCP_UPDATE_DESTINATION, update.data)
    with pytest.raises(PeerProtocolRequestError, match="correct condition") as info:
        check_route_update_request(wrong, NOW)
    assert info.value.code == "F00"
    with pytest.raises(DecodeError, match="expected fulfillment"):
        check_ccp_response(IlpFulfill(b"\x01" * 32))


def test_uuid_helpers() -> None:
    raw = uuid_to_bytes("3b6f0a7c-2d1e-4f5a-9b8c-7d6e5f4a3b2c")
    assert raw.hex() == "3b6f0a7c2d1e4f5a9b8c7d6e5f4a3b2c"
    assert uuid_to_bytes("3B6F0A7C2D1E4F5A9B8C7D6E5F4A3B2C") == raw
    assert bytes_to_uuid(raw) == "3b6f0a7c-2d1e-4f5a-9b8c-7d6e5f4a3b2c"
    for bad in (
        "",
        "3b6f",
        "zz6f0a7c-2d1e-4f5a-9b8c-7d6e5f4a3b2c",
        "3b6f0a7c 2d1e4f5a9b8c7d6e5f4a3b2c",
    ):
        with pytest.raises(EncodeError):
            uuid_to_bytes(bad)
    with pytest.raises(EncodeError):
        bytes_to_uuid(bytes(15))


@pytest.mark.parametrize(
    "hex_",
    [
        "",
        "02" + "00" * 16 + "00000000" + "0100",  # unknown mode
        "01" + "00" * 15,
        "01" + "00" * 16 + "000000",
        "01" + "00" * 16 + "00000000",
        "01" + "00" * 16 + "00000000" + "0105",  # 5 features, no bytes
        "01" + "00" * 16 + "00000000" + "010102ffff",  # feature not UTF-8
    ],
)
def test_bad_route_control(hex_: str) -> None:
    with pytest.raises(DecodeError):
        decode_route_control_request(bytes.fromhex(hex_))


def test_bad_route_update() -> None:
    good = encode_route_update_request(
        RouteUpdateRequest(
            bytes(16),
            1,
            0,
            1,
            45000,
            "test.a",
            (Route("test.b", ("test.a",), bytes(32), (RouteProp(1, b"x"),)),),
            ("test.c",),
        )
    )
    for cut in range(len(good)):
        with pytest.raises(DecodeError):
            decode_route_update_request(good[:cut])
    with pytest.raises(DecodeError, match="ASCII"):
        decode_route_update_request(good.replace(b"test.a", b"test.\xff"))


@pytest.mark.parametrize(
    "request_",
    [
        RouteUpdateRequest(bytes(15), 0, 0, 0, 0, "test.a"),
        RouteUpdateRequest(bytes(16), -1, 0, 0, 0, "test.a"),
        RouteUpdateRequest(bytes(16), 0, 0, 2**32, 0, "test.a"),
        RouteUpdateRequest(bytes(16), 0, 0, 0, 0, "test.\u00e9"),
        RouteUpdateRequest(bytes(16), 0, 0, 0, 0, "t", (Route("p", (), bytes(31)),)),
        RouteUpdateRequest(bytes(16), 0, 0, 0, 0, "t", (Route("p\u00e9", (), bytes(32)),)),
        RouteUpdateRequest(
            bytes(16), 0, 0, 0, 0, "t", (Route("p", (), bytes(32), (RouteProp(70000, b""),)),)
        ),
        RouteUpdateRequest(
            bytes(16),
            0,
            0,
            0,
            0,
            "t",
            (Route("p", (), bytes(32), (RouteProp(1, "s"),)),),  # type: ignore[arg-type]
        ),
        RouteUpdateRequest(bytes(16), 0, 0, 0, 0, "t", (), ("w\u00e9",)),
    ],
)
def test_update_encode_refuses(request_: RouteUpdateRequest) -> None:
    with pytest.raises(EncodeError):
        encode_route_update_request(request_)


def test_control_encode_refuses() -> None:
    with pytest.raises(EncodeError):
        encode_route_control_request(RouteControlRequest(2, bytes(16)))  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_route_control_request(RouteControlRequest(CcpMode.SYNC, bytes(17)))
    with pytest.raises(EncodeError):
        encode_route_control_request(RouteControlRequest(CcpMode.SYNC, bytes(16), 2**32))


# ------------------------------------------------------------------ hypothesis

ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=30)
u32 = st.integers(0, 2**32 - 1)
props = st.builds(
    RouteProp,
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
    is_optional=st.booleans(),
    is_transitive=st.booleans(),
    is_partial=st.booleans(),
    is_utf8=st.booleans(),
)
routes = st.builds(
    Route,
    ascii_text,
    st.lists(ascii_text, max_size=4).map(tuple),
    st.binary(min_size=32, max_size=32),
    st.lists(props, max_size=3).map(tuple),
)
updates = st.builds(
    RouteUpdateRequest,
    st.binary(min_size=16, max_size=16),
    u32,
    u32,
    u32,
    u32,
    ascii_text,
    st.lists(routes, max_size=3).map(tuple),
    st.lists(ascii_text, max_size=4).map(tuple),
)
controls = st.builds(
    RouteControlRequest,
    st.sampled_from(CcpMode),
    st.binary(min_size=16, max_size=16),
    u32,
    st.lists(st.text(max_size=10), max_size=4).map(tuple),
)


def _normalized(request: RouteUpdateRequest) -> RouteUpdateRequest:
    return RouteUpdateRequest(
        request.routing_table_id,
        request.current_epoch_index,
        request.from_epoch_index,
        request.to_epoch_index,
        request.hold_down_time,
        request.speaker,
        tuple(
            Route(r.prefix, r.path, r.auth, tuple(p.normalized() for p in r.props))
            for r in request.new_routes
        ),
        request.withdrawn_routes,
    )


@FAST
@given(updates)
def test_update_roundtrip(request: RouteUpdateRequest) -> None:
    data = encode_route_update_request(request)
    decoded = decode_route_update_request(data)
    assert decoded == _normalized(request)
    assert encode_route_update_request(decoded) == data
    prepare = decode_prepare(encode_prepare(route_update_prepare(request, EXPIRES)))
    assert check_route_update_request(prepare, NOW) == decoded


@FAST
@given(controls)
def test_control_roundtrip(request: RouteControlRequest) -> None:
    data = encode_route_control_request(request)
    assert decode_route_control_request(data) == request
    prepare = decode_prepare(encode_prepare(route_control_prepare(request, EXPIRES)))
    assert check_route_control_request(prepare, NOW) == request


@FAST
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=10))
def test_meta_rule(meta: int, prop_id: int, value: bytes) -> None:
    prop = RouteProp.from_meta(meta, prop_id, value)
    written = prop.meta
    assert written & 0x0F == 0
    assert bool(written & 0x80) == bool(meta & 0x80)
    assert bool(written & 0x10) == bool(meta & 0x10)
    if not meta & 0x80:
        assert written & 0x40
        assert not written & 0x20
    # writing is idempotent after one normalization
    assert prop.normalized().normalized() == prop.normalized()


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    for decoder in (decode_route_control_request, decode_route_update_request):
        with contextlib.suppress(DecodeError):
            decoder(data)


@FAST
@given(updates, st.data())
def test_mutated_updates_raise_only_decode_error(
    request: RouteUpdateRequest, data: st.DataObject
) -> None:
    raw = bytearray(encode_route_update_request(request))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(DecodeError):
        decode_route_update_request(bytes(raw[:cut]))


def test_route_properties_are_capped_before_they_are_built() -> None:
    # a 32 KB update packed with empty properties: refused from its count (the fuzz run
    # found such a 70 KB input costing 45 ms of decoding)
    def update(props: int) -> bytes:
        prop = RouteProp(id=1, value=b"", is_optional=True, is_transitive=False)
        route = Route("g.a", ("g.b",), bytes(32), (prop,) * props)
        request = RouteUpdateRequest(ZERO_ROUTING_TABLE_ID, 1, 0, 1, 30000, "g.b", (route,), ())
        return encode_route_update_request(request)

    assert len(decode_route_update_request(update(MAX_ROUTE_PROPS)).new_routes[0].props) == 64
    with pytest.raises(DecodeError, match="65 properties, more than the 64 allowed"):
        decode_route_update_request(update(MAX_ROUTE_PROPS + 1))
