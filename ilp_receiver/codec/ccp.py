"""CCP route broadcasts: ``peer.route.control`` and ``peer.route.update`` (spec
``05-peer-protocols.md``, section "CCP route broadcasts"; open question 21).

Byte layouts follow interledgerjs/ilp-protocol-ccp 1.1.1 (the module ilp-connector
21.3.0 depends on); route auth derivation follows ilp-connector 21.3.0
``src/services/route-broadcaster.ts``.  Both messages ride in ILP Prepares (amount 0,
peer-protocol condition, ``expiresAt = now + 60 s``) and are answered with the
zero-fulfillment Fulfill with empty data (:data:`CCP_RESPONSE`).

Route control data::

    UInt8 mode (0 IDLE, 1 SYNC) | 16-byte lastKnownRoutingTableId | UInt32 lastKnownEpoch
    | VarUInt count, count x var-octet-string (UTF-8) features

Route update data::

    16-byte routingTableId | UInt32 currentEpochIndex | UInt32 fromEpochIndex
    | UInt32 toEpochIndex | UInt32 holdDownTime (ms) | var-octet-string speaker (ASCII)
    | VarUInt count, routes: prefix (ASCII) | VarUInt count, path hops (ASCII)
                             | 32-byte auth | VarUInt count, props:
                                 UInt8 meta | UInt16 id | var-octet-string value
    | VarUInt count, withdrawn prefixes

Decoding choices: a mode other than 0/1 is a DecodeError (the reference stores any
byte; nothing defines other modes).  Withdrawn prefixes are read as UTF-8 (like the
reference) and prefixes/path hops/speaker as ASCII (DecodeError otherwise, where the
reference would substitute characters).  Trailing bytes are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Final

from ..errors import DecodeError, EncodeError
from .ildcp import check_peer_request
from .ilp import (
    PEER_PROTOCOL_CONDITION,
    PEER_PROTOCOL_FULFILLMENT,
    IlpFulfill,
    IlpPrepare,
)
from .oer import Reader, Writer

__all__ = [
    "CCP_CONTROL_DESTINATION",
    "CCP_RESPONSE",
    "CCP_UPDATE_DESTINATION",
    "DEFAULT_HOLD_DOWN_TIME_MS",
    "MAX_ROUTE_PROPS",
    "META_OPTIONAL",
    "META_PARTIAL",
    "META_TRANSITIVE",
    "META_UTF8",
    "ZERO_ROUTING_TABLE_ID",
    "CcpMode",
    "Route",
    "RouteControlRequest",
    "RouteProp",
    "RouteUpdateRequest",
    "advertised_auth",
    "bytes_to_uuid",
    "check_ccp_response",
    "check_route_control_request",
    "check_route_update_request",
    "decode_route_control_request",
    "decode_route_update_request",
    "encode_route_control_request",
    "encode_route_update_request",
    "local_route_auth",
    "route_control_prepare",
    "route_update_prepare",
    "uuid_to_bytes",
]

CCP_CONTROL_DESTINATION: Final = "peer.route.control"
CCP_UPDATE_DESTINATION: Final = "peer.route.update"
#: v21.3.0 "sends its ``routeExpiry``, default 45000" as holdDownTime.
DEFAULT_HOLD_DOWN_TIME_MS: Final = 45000
#: The table id a fresh receiver sends: "mode SYNC, table id all zeros, epoch 0".
ZERO_ROUTING_TABLE_ID: Final = bytes(16)

#: Route property meta byte bits.
META_OPTIONAL: Final = 0x80
META_TRANSITIVE: Final = 0x40
META_PARTIAL: Final = 0x20
META_UTF8: Final = 0x10

#: "Both are answered by an ILP Fulfill with the zero fulfillment and empty data."
CCP_RESPONSE: Final = IlpFulfill(PEER_PROTOCOL_FULFILLMENT, b"")

_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{32}")


class CcpMode(IntEnum):
    """Route control mode: the receiver asks the sender to stop or start updates."""

    IDLE = 0
    SYNC = 1


@dataclass(frozen=True, slots=True)
class RouteControlRequest:
    """``peer.route.control`` data, sent by the node that wants to receive routes."""

    mode: CcpMode
    last_known_routing_table_id: bytes = ZERO_ROUTING_TABLE_ID
    last_known_epoch: int = 0
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteProp:
    """A route property.  ``value`` is the raw bytes (UTF-8 text when ``is_utf8``).

    The stored flags are what was read; writing applies the reference rule (see
    :attr:`meta`), so a non-optional property is always written transitive and
    ``partial`` survives only on optional transitive properties.
    """

    id: int
    value: bytes
    is_optional: bool = False
    is_transitive: bool = True
    is_partial: bool = False
    is_utf8: bool = False

    @property
    def meta(self) -> int:
        """The meta byte the reference writer produces: "The writer sets 0x40 for every
        non-optional property, and only keeps 0x20 when the property is optional and
        transitive."
        """
        meta = 0
        if self.is_optional:
            meta |= META_OPTIONAL
            if self.is_transitive:
                meta |= META_TRANSITIVE
                if self.is_partial:
                    meta |= META_PARTIAL
        else:
            meta |= META_TRANSITIVE
        if self.is_utf8:
            meta |= META_UTF8
        return meta

    @classmethod
    def from_meta(cls, meta: int, id: int, value: bytes) -> RouteProp:
        """The property a reader sees for ``meta`` (low nibble ignored)."""
        return cls(
            id,
            value,
            is_optional=bool(meta & META_OPTIONAL),
            is_transitive=bool(meta & META_TRANSITIVE),
            is_partial=bool(meta & META_PARTIAL),
            is_utf8=bool(meta & META_UTF8),
        )

    def normalized(self) -> RouteProp:
        """This property as it reads back after being written."""
        return RouteProp.from_meta(self.meta, self.id, self.value)

    @property
    def text(self) -> str:
        """``value`` decoded as UTF-8 (invalid bytes replaced, like ``Buffer.toString``)."""
        return self.value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Route:
    """A reachable prefix: path (hops, sender first), 32-byte opaque auth, props."""

    prefix: str
    path: tuple[str, ...]
    auth: bytes
    props: tuple[RouteProp, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteUpdateRequest:
    """``peer.route.update`` data: routes learned in epochs ``[from, to)``."""

    routing_table_id: bytes
    current_epoch_index: int
    from_epoch_index: int
    to_epoch_index: int
    hold_down_time: int
    speaker: str
    new_routes: tuple[Route, ...] = ()
    withdrawn_routes: tuple[str, ...] = ()


# -------------------------------------------------------------------------- UUIDs


def uuid_to_bytes(value: str) -> bytes:
    """The 16 raw bytes of a UUID string ("UUID, dashes removed"); EncodeError if not
    32 hex digits once dashes are removed (as the reference ``writeUuid``).
    """
    digits = value.replace("-", "")
    if _UUID_RE.fullmatch(digits) is None:
        raise EncodeError(f"not a UUID: {value!r}")
    return bytes.fromhex(digits)


def bytes_to_uuid(value: bytes) -> str:
    """The lower-case dashed form of 16 raw bytes (the reference ``readUuid``)."""
    if len(value) != 16:
        raise EncodeError(f"a UUID is 16 bytes, got {len(value)}")
    h = value.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ------------------------------------------------------------------- route auth


def local_route_auth(routing_secret: bytes, prefix: str) -> bytes:
    """Auth for a route this node originates: HMAC-SHA256(routingSecret, prefix UTF-8)."""
    return hmac.new(routing_secret, prefix.encode("utf-8"), hashlib.sha256).digest()


def advertised_auth(auth: bytes) -> bytes:
    """Auth as placed in the forwarding table (and advertised): SHA-256(previous auth)."""
    return hashlib.sha256(auth).digest()


# ------------------------------------------------------------------- encoding


def _ascii(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.isascii():
        raise EncodeError(f"{what} must be ASCII, got {value!r}")
    return value


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != size:
        raise EncodeError(f"{what} must be exactly {size} bytes")
    return bytes(value)


def _bytes(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EncodeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def encode_route_control_request(request: RouteControlRequest) -> bytes:
    """The Prepare data of a route control request."""
    w = Writer()
    if request.mode not in (CcpMode.IDLE, CcpMode.SYNC):
        raise EncodeError(f"mode must be 0 (IDLE) or 1 (SYNC), got {request.mode!r}")
    w.write_uint8(request.mode)
    w.write_octets(_fixed(request.last_known_routing_table_id, 16, "lastKnownRoutingTableId"))
    w.write_uint32(request.last_known_epoch)
    w.write_var_uint(len(request.features))
    for feature in request.features:
        w.write_utf8(feature)
    return w.getvalue()


def encode_route_update_request(request: RouteUpdateRequest) -> bytes:
    """The Prepare data of a route update request."""
    w = Writer()
    w.write_octets(_fixed(request.routing_table_id, 16, "routingTableId"))
    w.write_uint32(request.current_epoch_index)
    w.write_uint32(request.from_epoch_index)
    w.write_uint32(request.to_epoch_index)
    w.write_uint32(request.hold_down_time)
    w.write_ascii(_ascii(request.speaker, "speaker"))
    w.write_var_uint(len(request.new_routes))
    for route in request.new_routes:
        w.write_ascii(_ascii(route.prefix, "route prefix"))
        w.write_var_uint(len(route.path))
        for hop in route.path:
            w.write_ascii(_ascii(hop, "route path hop"))
        # "route auth must be 32 bytes" (reference writer)
        w.write_octets(_fixed(route.auth, 32, f"route auth of {route.prefix!r}"))
        w.write_var_uint(len(route.props))
        for prop in route.props:
            w.write_uint8(prop.meta)
            w.write_uint16(prop.id)
            w.write_var_octets(_bytes(prop.value, "route property value"))
    w.write_var_uint(len(request.withdrawn_routes))
    for prefix in request.withdrawn_routes:
        w.write_ascii(_ascii(prefix, "withdrawn route"))
    return w.getvalue()


# ------------------------------------------------------------------- decoding


#: Most properties one route of a route update may carry.  CCP names no limit;
#: ilp-connector v21.3.0 sends none.  Refused beyond it, so a 32 KB update of empty
#: properties costs little to refuse (each property is a Python object).
MAX_ROUTE_PROPS: Final = 64


def _count(r: Reader, what: str) -> int:
    """A VarUInt list count; every element takes at least one byte, so a count above the
    bytes left is refused before looping.
    """
    at = r.pos
    n = r.read_var_uint(what)
    if n > r.remaining:
        raise r.error(f"{what}: {n} entries cannot fit in {r.remaining} bytes", at)
    return n


def decode_route_control_request(data: bytes) -> RouteControlRequest:
    """Parse route control data; DecodeError on bad bytes or an unknown mode."""
    r = Reader(data)
    mode = r.read_uint8("mode")
    if mode not in (CcpMode.IDLE, CcpMode.SYNC):
        raise r.error(f"unknown route control mode {mode}", 0)
    table_id = r.read_octets(16, "lastKnownRoutingTableId")
    epoch = r.read_uint32("lastKnownEpoch")
    features = tuple(r.read_utf8("feature") for _ in range(_count(r, "features count")))
    return RouteControlRequest(CcpMode(mode), table_id, epoch, features)


def decode_route_update_request(data: bytes) -> RouteUpdateRequest:
    """Parse route update data; DecodeError on bad bytes."""
    r = Reader(data)
    table_id = r.read_octets(16, "routingTableId")
    current = r.read_uint32("currentEpochIndex")
    from_epoch = r.read_uint32("fromEpochIndex")
    to_epoch = r.read_uint32("toEpochIndex")
    hold_down = r.read_uint32("holdDownTime")
    speaker = r.read_ascii("speaker")
    routes = []
    for _ in range(_count(r, "newRoutes count")):
        prefix = r.read_ascii("route prefix")
        path = tuple(r.read_ascii("route path hop") for _ in range(_count(r, "path count")))
        auth = r.read_octets(32, "route auth")
        props = []
        at = r.pos
        count = _count(r, "props count")
        if count > MAX_ROUTE_PROPS:
            raise r.error(
                f"props count: {count} properties, more than the {MAX_ROUTE_PROPS} allowed", at
            )
        for _ in range(count):
            meta = r.read_uint8("route property meta")
            prop_id = r.read_uint16("route property id")
            props.append(RouteProp.from_meta(meta, prop_id, r.read_var_octets("property value")))
        routes.append(Route(prefix, path, auth, tuple(props)))
    withdrawn = tuple(r.read_utf8("withdrawn route") for _ in range(_count(r, "withdrawn count")))
    return RouteUpdateRequest(
        table_id, current, from_epoch, to_epoch, hold_down, speaker, tuple(routes), withdrawn
    )


# ------------------------------------------------------------------- packets


def _ccp_prepare(destination: str, data: bytes, expires_at: datetime) -> IlpPrepare:
    """A CCP request Prepare: amount 0, the peer-protocol condition, ``data``."""
    return IlpPrepare(0, expires_at, PEER_PROTOCOL_CONDITION, destination, data)


def route_control_prepare(request: RouteControlRequest, expires_at: datetime) -> IlpPrepare:
    """The ILP Prepare carrying a route control request (reference expiry: now + 60 s)."""
    return _ccp_prepare(CCP_CONTROL_DESTINATION, encode_route_control_request(request), expires_at)


def route_update_prepare(request: RouteUpdateRequest, expires_at: datetime) -> IlpPrepare:
    """The ILP Prepare carrying a route update request (reference expiry: now + 60 s)."""
    return _ccp_prepare(CCP_UPDATE_DESTINATION, encode_route_update_request(request), expires_at)


def check_route_control_request(prepare: IlpPrepare, now: datetime) -> RouteControlRequest:
    """Server side, as ``extractCcpRouteControlRequest``: destination, peer condition,
    not expired (PeerProtocolRequestError, F00), then decode the data (DecodeError).
    """
    check_peer_request(
        prepare,
        destination=CCP_CONTROL_DESTINATION,
        now=now,
        not_this_protocol="packet is not a CCP route control request.",
        expired="CCP route control request packet is expired.",
    )
    return decode_route_control_request(prepare.data)


def check_route_update_request(prepare: IlpPrepare, now: datetime) -> RouteUpdateRequest:
    """Server side, as ``extractCcpRouteUpdateRequest``: destination, peer condition,
    not expired (PeerProtocolRequestError, F00), then decode the data (DecodeError).
    """
    check_peer_request(
        prepare,
        destination=CCP_UPDATE_DESTINATION,
        now=now,
        not_this_protocol="packet is not a CCP route update request.",
        expired="CCP route update request packet is expired.",
    )
    return decode_route_update_request(prepare.data)


def check_ccp_response(fulfill: IlpFulfill) -> None:
    """Client side: DecodeError unless the fulfillment is the zero peer fulfillment
    ("CCP response does not contain the expected fulfillment.").
    """
    if fulfill.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise DecodeError("CCP response does not contain the expected fulfillment.", 0)
