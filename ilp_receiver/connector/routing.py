"""Routing tables and route selection of the bundled connector (spec
``05-peer-protocols.md``, section "CCP route broadcasts", and its "Route auth values";
open question 21: "Follow the code").

Sans-I/O port of interledgerjs/ilp-connector v21.3.0 (tag commit 235818ee):

* :class:`PrefixMap` -- ``src/routing/prefix-map.ts``.  Matching is segment-aware the
  way v21.3.0 does it: a key ``k`` resolves to the longest stored prefix ``p`` with
  ``k == p`` or ``k.startswith(p + ".")``.  So prefix ``test.harness.receivers``
  routes ``test.harness.receivers.x`` but not ``test.harness.receiversx``.  Prefixes
  are written without a trailing dot (v21.3.0 config: "Prefixes should NOT include a
  trailing period"); a prefix stored with a trailing dot (``test.a.``) only matches
  itself, and the empty prefix only matches ``""`` and keys starting with ``"."`` --
  v21.3.0's default route is therefore keyed by the global prefix (``g``/``test``),
  never by ``""``.  Keys are kept in v21.3.0's order (longer first, equal lengths in
  reverse alphabetical order), which fixes the order of epoch-log entries.
* :class:`RoutingTable`, :class:`ForwardingRoutingTable`, :class:`RouteUpdate` --
  ``src/services/routing-table.ts`` and ``forwarding-routing-table.ts``.
* :func:`can_dragon_filter` -- ``src/routing/dragon.ts``.
* :class:`RouteBroadcaster` -- ``src/services/route-broadcaster.ts`` (local routes,
  configured routes, default route, best-route selection, forwarding table and epoch
  log, import filter, auth derivation) plus ``src/routing/peer.ts`` (which accounts get
  a CCP sender and/or receiver).  The per-peer CCP state machines live in
  :mod:`ilp_receiver.connector.ccp`.

Best route for a prefix (``getBestPeerForPrefix``): a configured route for exactly
that prefix whose account exists; else a local route (own address, default route,
child account); else, among the connected peers' received routes for exactly that
prefix, the highest relation priority (child 2 > peer 1 > parent 0), then the shortest
path, then the smallest account id.  The local table and the forwarding table only
change when the best route's *next hop* changes (v21.3.0 compares next hops only; a
new path or auth through the same next hop is not re-logged).

Deviations from v21.3.0, all documented on the method concerned:

* :meth:`RouteBroadcaster.reload_local_routes` also re-evaluates prefixes that *were*
  local before the reload (a removed child account or an old own address loses its
  route; v21.3.0 kept routing to the removed account).
* An account id the broadcaster does not know has relation ``"peer"`` (v21.3.0 threw
  from ``accounts.getInfo``, e.g. when replaying old log entries).
* ``route_broadcast_enabled=False`` creates no CCP peers but still computes local
  routes (v21.3.0 skipped ``routeBroadcaster.start()`` entirely, leaving even local
  routes unset).
* Accounts are added with :meth:`RouteBroadcaster.add_account`, which reloads local
  routes at once (v21.3.0 only reloaded on start and when a routing peer connected).
"""

from __future__ import annotations

import bisect
import dataclasses
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar, get_args

from ..codec.ccp import (
    DEFAULT_HOLD_DOWN_TIME_MS,
    RouteControlRequest,
    RouteUpdateRequest,
    advertised_auth,
    local_route_auth,
)
from ..errors import ConfigError, IlpError

if TYPE_CHECKING:
    from ..codec.ilp import IlpFulfill, IlpReject
    from .ccp import CcpPeer

__all__ = [
    "DEFAULT_ROUTE_BROADCAST_INTERVAL_MS",
    "DEFAULT_ROUTE_EXPIRY_MS",
    "RELATION_PRIORITY",
    "AccountInfo",
    "CcpOutgoing",
    "ForwardingRoutingTable",
    "IncomingRoute",
    "PeerRoutes",
    "PrefixMap",
    "Relation",
    "Route",
    "RouteBroadcaster",
    "RouteUpdate",
    "RoutingTable",
    "StaticRoute",
    "can_dragon_filter",
    "global_prefix_for_env",
    "import_filter",
    "new_routing_table_id",
]

T = TypeVar("T")

#: Account relations (``src/routing/relation.ts``); ``local`` is this connector itself
#: (next hop ``""``).
Relation = Literal["parent", "peer", "child", "local"]
_ACCOUNT_RELATIONS: Final = frozenset(get_args(Relation)) - {"local"}

#: ``getRelationPriority``: "parent: 0, peer: 1, child: 2, local: 3".
RELATION_PRIORITY: Final[Mapping[str, int]] = {"parent": 0, "peer": 1, "child": 2, "local": 3}

#: v21.3.0 ``routeExpiry`` default, sent as holdDownTime.
DEFAULT_ROUTE_EXPIRY_MS: Final = DEFAULT_HOLD_DOWN_TIME_MS
#: v21.3.0 ``routeBroadcastInterval`` default.
DEFAULT_ROUTE_BROADCAST_INTERVAL_MS: Final = 30000


# ------------------------------------------------------------------------ prefix map


class _Order:
    """Sort key of v21.3.0's prefix list: longer first, then reverse alphabetical.

    (JavaScript compares UTF-16 code units, Python code points; they agree on ASCII,
    which is all an ILP address may contain.)
    """

    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s

    def __lt__(self, other: _Order) -> bool:
        a, b = self.s, other.s
        return len(a) > len(b) or (len(a) == len(b) and a > b)


class PrefixMap(Generic[T]):
    """A map whose keys are address prefixes, with longest-prefix lookup.

    ``resolve("a.b.c")`` returns the value of the longest key ``p`` with
    ``"a.b.c" == p`` or ``"a.b.c".startswith(p + ".")`` (v21.3.0 ``resolvePrefix``).
    Lookups cost one dict probe per segment of the key, not a scan.
    """

    __slots__ = ("_items", "_prefixes")

    def __init__(self) -> None:
        self._items: dict[str, T] = {}
        self._prefixes: list[str] = []

    def keys(self) -> list[str]:
        """The prefixes, longest first, equal lengths in reverse alphabetical order."""
        return list(self._prefixes)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(prefix, value)`` pairs in :meth:`keys` order."""
        for prefix in self._prefixes:
            yield prefix, self._items[prefix]

    def __len__(self) -> int:
        return len(self._prefixes)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._prefixes))

    def get(self, prefix: str) -> T | None:
        """The value stored under exactly ``prefix``."""
        return self._items.get(prefix)

    def resolve_prefix(self, key: str) -> str | None:
        """The longest stored prefix matching ``key`` (see the class docstring)."""
        items = self._items
        if key in items:
            return key
        # Every p with key.startswith(p + ".") is key cut just before one of its dots;
        # trying the cuts from the right finds the longest first.
        i = key.rfind(".")
        while i >= 0:
            candidate = key[:i]
            if candidate in items:
                return candidate
            i = key.rfind(".", 0, i)
        return None

    def resolve(self, key: str) -> T | None:
        """The value of the longest stored prefix matching ``key``."""
        prefix = self.resolve_prefix(key)
        return None if prefix is None else self._items[prefix]

    def insert(self, prefix: str, item: T) -> T:
        """Store ``item`` under ``prefix`` (replacing any previous value)."""
        if prefix not in self._items:
            index = bisect.bisect_left(self._prefixes, _Order(prefix), key=_Order)
            self._prefixes.insert(index, prefix)
        self._items[prefix] = item
        return item

    def delete(self, prefix: str) -> bool:
        """Remove ``prefix``; whether it was present."""
        if prefix not in self._items:
            return False
        del self._items[prefix]
        index = bisect.bisect_left(self._prefixes, _Order(prefix), key=_Order)
        del self._prefixes[index]
        return True

    def keys_starting_with(self, prefix: str) -> Iterator[str]:
        """Keys that start with ``prefix`` as plain strings (v21.3.0
        ``getKeysStartingWith``: not segment-aware, ``a.b`` also yields ``a.bc``).
        """
        return (k for k in list(self._prefixes) if k.startswith(prefix))

    def keys_prefixes_of(self, search: str) -> Iterator[str]:
        """Stored keys ``k`` with ``search.startswith(k + ".")``, longest first (v21.3.0
        ``getKeysPrefixesOf``; ``search`` itself is not included).
        """
        items = self._items
        found = []
        i = search.rfind(".")
        while i >= 0:
            candidate = search[:i]
            if candidate in items:
                found.append(candidate)
            i = search.rfind(".", 0, i)
        return iter(found)


# ------------------------------------------------------------------------ routes


@dataclass(frozen=True, slots=True)
class Route:
    """A route in the local or forwarding table (v21.3.0 ``types/routing.ts`` Route).

    ``next_hop`` is the account id packets go to (``""`` = this connector); ``path``
    the ILP addresses of the hops (in the forwarding table it starts with our own
    address); ``auth`` the 32-byte opaque route auth.
    """

    next_hop: str
    path: tuple[str, ...]
    auth: bytes


@dataclass(frozen=True, slots=True)
class IncomingRoute:
    """A route received from peer account ``peer`` over CCP (v21.3.0 IncomingRoute)."""

    peer: str
    prefix: str
    path: tuple[str, ...]
    auth: bytes


class RoutingTable(PrefixMap[Route]):
    """The local routing table: best route per prefix, used to forward packets."""

    __slots__ = ()


class PeerRoutes(PrefixMap[IncomingRoute]):
    """The routes one peer account advertised to us (a CCP receiver's table)."""

    __slots__ = ()

    def add_route(self, route: IncomingRoute) -> bool:
        """Store ``route`` under its prefix; v21.3.0 always reports a change
        ("TODO Check if actually changed").
        """
        self.insert(route.prefix, route)
        return True

    def delete_route(self, prefix: str) -> bool:
        """Remove ``prefix``; v21.3.0 always reports a change."""
        self.delete(prefix)
        return True


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """One epoch-log entry: ``prefix`` reachable via ``route``, or withdrawn (None)."""

    epoch: int
    prefix: str
    route: Route | None = None


def new_routing_table_id(random_bytes: bytes) -> bytes:
    """A routing table id from 16 random bytes, with the UUID v4 version and variant
    bits set as v21.3.0 ``uuid()`` does.
    """
    if len(random_bytes) != 16:
        raise ValueError("a routing table id needs 16 random bytes")
    return uuid.UUID(bytes=bytes(random_bytes), version=4).bytes


class ForwardingRoutingTable(PrefixMap[Route]):
    """The table we advertise: routes as sent (path starting with our address, auth
    hashed once more) plus the epoch log.

    "every change of the best route for a prefix appends one log entry and increments
    ``currentEpoch``"; ``log[e].epoch == e``.
    """

    __slots__ = ("current_epoch", "log", "routing_table_id")

    def __init__(self, routing_table_id: bytes) -> None:
        super().__init__()
        if len(routing_table_id) != 16:
            raise ValueError("routing_table_id must be 16 bytes")
        self.routing_table_id: bytes = bytes(routing_table_id)
        self.log: list[RouteUpdate] = []
        self.current_epoch: int = 0

    def record(self, prefix: str, route: Route | None) -> RouteUpdate:
        """Append a log entry for ``prefix`` at the current epoch and advance it."""
        update = RouteUpdate(self.current_epoch, prefix, route)
        self.log.append(update)
        self.current_epoch += 1
        return update


def can_dragon_filter(
    table: PrefixMap[Route],
    relation_of: Callable[[str], Relation],
    prefix: str,
    route: Route,
) -> bool:
    """Whether ``route`` for ``prefix`` need not be advertised because a less specific
    route in ``table`` is as good (v21.3.0 ``canDragonFilter``): some parent prefix has
    a route we did not originate whose next hop's relation priority is not lower than
    ``route``'s.
    """
    for parent_prefix in table.keys_prefixes_of(prefix):
        parent_route = table.get(parent_prefix)
        if parent_route is None:  # pragma: no cover - cannot happen, as in v21.3.0
            continue
        if parent_route.next_hop == "":
            # "We are the origin of the parent route, cannot DRAGON filter"
            continue
        parent_priority = RELATION_PRIORITY[relation_of(parent_route.next_hop)]
        if parent_priority < RELATION_PRIORITY[relation_of(route.next_hop)]:
            # "The more specific route is better for us, so we keep it"
            continue
        return True
    return False


def global_prefix_for_env(env: str) -> str:
    """v21.3.0 ``getGlobalPrefix``: ``production`` -> ``g``, ``test`` -> ``test``."""
    if env == "production":
        return "g"
    if env == "test":
        return "test"
    raise ConfigError("env", f"must be 'production' or 'test', got {env!r}")


def import_filter(request: RouteUpdateRequest, global_prefix: str) -> RouteUpdateRequest:
    """``request`` without the routes v21.3.0 refuses to import: "Filter incoming
    routes that aren't part of the current global prefix or cover the entire global
    prefix (i.e. the default route.)"

    As in v21.3.0 the test is a plain string prefix test (``startsWith``), so in test
    mode ``test1.x`` passes; only new routes are filtered, withdrawals pass through.
    """
    kept = tuple(
        r
        for r in request.new_routes
        if r.prefix.startswith(global_prefix) and len(r.prefix) > len(global_prefix)
    )
    if len(kept) == len(request.new_routes):
        return request
    return dataclasses.replace(request, new_routes=kept)


# ------------------------------------------------------------------------ broadcaster


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What the broadcaster needs to know about an account.

    ``send_routes``/``receive_routes`` None means the v21.3.0 default: true unless the
    relation is ``child`` (so parents and peers both send and receive routes).
    ``ilp_address_segment`` names a child's address segment (default: the account id).
    """

    relation: Relation
    send_routes: bool | None = None
    receive_routes: bool | None = None
    ilp_address_segment: str | None = None

    @property
    def sends_routes(self) -> bool:
        """Whether we send routes to this account (v21.3.0 ``RouteBroadcaster.add``)."""
        if self.send_routes is not None:
            return self.send_routes
        return self.relation != "child"

    @property
    def receives_routes(self) -> bool:
        """Whether we accept routes from this account."""
        if self.receive_routes is not None:
            return self.receive_routes
        return self.relation != "child"


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """A configured route (v21.3.0 ``config.routes`` entry): ``target_prefix`` via
    account ``peer_id``.  It beats local and learned routes for that exact prefix.
    """

    target_prefix: str
    peer_id: str


@dataclass(frozen=True, slots=True)
class CcpOutgoing:
    """A CCP request the connector must send to ``account_id`` now (see
    :meth:`RouteBroadcaster.poll`).
    """

    account_id: str
    request: RouteControlRequest | RouteUpdateRequest


class RouteBroadcaster:
    """Local routes, learned routes, best-route selection and the forwarding table
    (v21.3.0 ``RouteBroadcaster``), plus the per-account CCP peers.

    All methods are synchronous and take the time as ``now`` (seconds on any monotonic
    clock; the same clock for every call).  Durations are configured in milliseconds,
    like v21.3.0.

    ``routing_secret`` is "a configured base64 value or 32 random bytes" (decoded
    already); ``routing_table_id`` 16 random bytes (see :func:`new_routing_table_id`).
    ``default_route`` is ``"auto"`` (the first ``parent`` account, in the order accounts
    were added), ``""`` (none) or an account id.
    """

    def __init__(
        self,
        *,
        own_address: str,
        routing_secret: bytes,
        routing_table_id: bytes,
        env: Literal["production", "test"] = "test",
        routes: Sequence[StaticRoute] = (),
        default_route: str = "auto",
        route_broadcast_enabled: bool = True,
        route_expiry_ms: int = DEFAULT_ROUTE_EXPIRY_MS,
        route_broadcast_interval_ms: int = DEFAULT_ROUTE_BROADCAST_INTERVAL_MS,
    ) -> None:
        self._own_address = own_address
        self._routing_secret = bytes(routing_secret)
        self.global_prefix: Final = global_prefix_for_env(env)
        self.static_routes: tuple[StaticRoute, ...] = tuple(routes)
        self.default_route = default_route
        self.route_broadcast_enabled = route_broadcast_enabled
        self.route_expiry_ms = route_expiry_ms
        self.route_broadcast_interval_ms = route_broadcast_interval_ms
        #: "Local routing table, used for actually routing packets"
        self.local_routing_table = RoutingTable()
        #: "Master routing table, used for routes that we broadcast"
        self.forwarding_routing_table = ForwardingRoutingTable(routing_table_id)
        self._accounts: dict[str, AccountInfo] = {}
        self._peers: dict[str, CcpPeer] = {}
        self._local_routes: dict[str, Route] = {}
        self.reload_local_routes()

    # ---------------------------------------------------------------- accounts

    @property
    def own_address(self) -> str:
        """This connector's ILP address."""
        return self._own_address

    def set_own_address(self, address: str) -> None:
        """Change our address (e.g. learned over IL-DCP) and reload local routes."""
        self._own_address = address
        self.reload_local_routes()

    @property
    def accounts(self) -> Mapping[str, AccountInfo]:
        """The known accounts, in the order they were added."""
        return self._accounts

    def add_account(
        self,
        account_id: str,
        relation: Relation,
        *,
        send_routes: bool | None = None,
        receive_routes: bool | None = None,
        ilp_address_segment: str | None = None,
    ) -> None:
        """Register (or update) an account and reload local routes.  Connecting it is
        a separate step (:meth:`peer_connected`).

        A new child only adds its own local route and re-selects the static routes
        through it (what a full reload would change; no other prefix's selection depends
        on it), so registering the n-th child of a mini-accounts section costs the same
        as the first instead of rebuilding n routes.
        """
        if relation not in _ACCOUNT_RELATIONS:
            raise ConfigError("relation", f"must be parent, peer or child, got {relation!r}")
        if not account_id:
            raise ConfigError("account_id", "must not be empty")
        known = account_id in self._accounts
        self._accounts[account_id] = AccountInfo(
            relation, send_routes, receive_routes, ilp_address_segment
        )
        if relation == "child" and not known:
            child = self.child_address(account_id)
            self._local_routes[child] = Route(account_id, (), self.local_auth(child))
            self.update_prefix(child)
            for route in self.static_routes:
                if route.peer_id == account_id:
                    self.update_prefix(route.target_prefix)
        else:
            self.reload_local_routes()

    def remove_account(self, account_id: str) -> None:
        """Disconnect and forget an account (v21.3.0 ``untrack`` + ``accounts.remove``)."""
        self.peer_disconnected(account_id)
        info = self._accounts.pop(account_id, None)
        if info is None:
            return
        if info.relation == "child":
            child = f"{self._own_address}.{info.ilp_address_segment or account_id}"
            if self._local_routes.pop(child, None) is not None:
                self.update_prefix(child)
                for route in self.static_routes:
                    if route.peer_id == account_id:
                        self.update_prefix(route.target_prefix)
                return
        self.reload_local_routes()

    def relation_of(self, account_id: str) -> Relation:
        """The relation of ``account_id``; ``""`` (ourselves) is ``local``.  An unknown
        account counts as ``peer`` (v21.3.0 threw).
        """
        if account_id == "":
            return "local"
        info = self._accounts.get(account_id)
        return "peer" if info is None else info.relation

    def child_address(self, account_id: str) -> str:
        """A child account's address: own address + "." + segment (default: the id)."""
        info = self._accounts[account_id]
        if info.relation != "child":
            raise ValueError("Can't generate child address for account that is isn't a child")
        return f"{self._own_address}.{info.ilp_address_segment or account_id}"

    # ---------------------------------------------------------------- peers

    @property
    def peers(self) -> Mapping[str, CcpPeer]:
        """The connected accounts we exchange routes with."""
        return self._peers

    def peer_connected(self, account_id: str, now: float) -> CcpPeer | None:
        """The link to ``account_id`` is up (v21.3.0 ``RouteBroadcaster.add``).

        Creates its CCP sender and/or receiver as its account allows (v21.3.0
        defaults: both, unless the relation is ``child``) and reloads local routes.
        The receiver's first route control (SYNC, zero table id, epoch 0) is due at
        ``now``.  Returns the peer, or None when no routes are exchanged with it.
        """
        from .ccp import CcpPeer, CcpReceiver, CcpSender  # the ccp module imports this one

        existing = self._peers.get(account_id)
        if existing is not None:
            return existing
        info = self._accounts.get(account_id)
        if info is None or not self.route_broadcast_enabled:
            return None
        send, receive = info.sends_routes, info.receives_routes
        if not (send or receive):
            return None
        sender = (
            CcpSender(
                account_id,
                self.forwarding_routing_table,
                get_own_address=lambda: self._own_address,
                get_relation=self.relation_of,
                route_expiry_ms=self.route_expiry_ms,
                route_broadcast_interval_ms=self.route_broadcast_interval_ms,
            )
            if send
            else None
        )
        receiver = CcpReceiver(account_id, now=now) if receive else None
        peer = CcpPeer(account_id, sender, receiver)
        self._peers[account_id] = peer
        self.reload_local_routes()
        return peer

    def peer_disconnected(self, account_id: str) -> bool:
        """The link to ``account_id`` went down (v21.3.0 ``RouteBroadcaster.remove``):
        drop its CCP state and re-select routes for every prefix it advertised.

        Returns whether a best route changed.  As in v21.3.0 no update is
        scheduled for the other peers; they pick the change up with their next
        periodic update (call :meth:`schedule_all` to send it sooner).
        """
        peer = self._peers.get(account_id)
        if peer is None:
            return False
        if peer.sender is not None:
            peer.sender.stop()
        # "We have to remove the peer before calling updatePrefix on each of its
        # advertised prefixes in order to find the next best route."
        del self._peers[account_id]
        changed = False
        if peer.receiver is not None:
            for prefix in peer.receiver.prefixes():
                changed = self.update_prefix(prefix) or changed
        if self.relation_of(account_id) == "child":
            changed = self.update_prefix(self.child_address(account_id)) or changed
        return changed

    def schedule_all(self, now: float) -> None:
        """Ask every sender in SYNC mode for an update soon (``scheduleRouteUpdate``)."""
        for peer in self._peers.values():
            if peer.sender is not None:
                peer.sender.schedule(now)

    # ---------------------------------------------------------------- CCP input

    def handle_route_control(
        self, account_id: str, request: RouteControlRequest, now: float
    ) -> None:
        """A ``peer.route.control`` from ``account_id``.  Raises IlpError F00 (v21.3.0
        BadRequestError) when it is not a routing peer or we do not send it routes;
        otherwise answer with the CCP Fulfill.
        """
        peer = self._peers.get(account_id)
        if peer is None:
            raise IlpError("F00", "cannot process route control messages from non-peers.")
        if peer.sender is None:
            raise IlpError(
                "F00",
                "rejecting route control message, we are configured not to send routes to you.",
            )
        peer.sender.handle_route_control(request, now)

    def handle_route_update(self, account_id: str, request: RouteUpdateRequest, now: float) -> bool:
        """A ``peer.route.update`` from ``account_id``: import filter, receiver steps
        1-6, best-route re-selection for every changed prefix; if a best route (next
        hop) changed, every sender is scheduled (v21.3.0 ``scheduleRouteUpdate``).

        Raises IlpError F00 when the account is not a routing peer or we do not accept
        its routes; otherwise answer with the CCP Fulfill.  Returns whether our routes
        changed.
        """
        peer = self._peers.get(account_id)
        if peer is None:
            raise IlpError("F00", "cannot process route update messages from non-peers.")
        if peer.receiver is None:
            raise IlpError(
                "F00",
                "rejecting route update, we are configured not to receive routes from you.",
            )
        changed_prefixes = peer.receiver.handle_route_update(
            import_filter(request, self.global_prefix), now
        )
        changed = False
        for prefix in changed_prefixes:
            changed = self.update_prefix(prefix) or changed
        if changed and self.route_broadcast_enabled:
            self.schedule_all(now)
        return changed

    # ---------------------------------------------------------------- CCP output

    def next_wakeup(self) -> float | None:
        """The earliest time a route control or update becomes due (None: nothing
        scheduled).  Call :meth:`poll` then.
        """
        times = [
            t
            for peer in self._peers.values()
            for t in (
                peer.sender.next_update_at if peer.sender is not None else None,
                peer.receiver.next_route_control_at if peer.receiver is not None else None,
            )
            if t is not None
        ]
        return min(times, default=None)

    def poll(self, now: float) -> list[CcpOutgoing]:
        """The route controls and updates due at ``now``; each is marked as sent.

        Send each one (``route_control_prepare``/``route_update_prepare``), then report
        the outcome with :meth:`on_reply` or :meth:`on_failure`.
        """
        out: list[CcpOutgoing] = []
        for account_id, peer in list(self._peers.items()):
            receiver = peer.receiver
            if receiver is not None and receiver.route_control_due(now):
                out.append(CcpOutgoing(account_id, receiver.route_control_request(now)))
            if peer.sender is not None:
                update = peer.sender.next_update(now)
                if update is not None:
                    out.append(CcpOutgoing(account_id, update))
        return out

    def on_reply(self, outgoing: CcpOutgoing, reply: IlpFulfill | IlpReject, now: float) -> None:
        """The peer answered ``outgoing``.  A Rejected route control is a failure
        (retried after 30 s); a route update's reply is not inspected (v21.3.0).
        """
        peer = self._peers.get(outgoing.account_id)
        if peer is None:
            return
        if isinstance(outgoing.request, RouteControlRequest):
            if peer.receiver is not None:
                peer.receiver.on_route_control_reply(reply, now)
        elif peer.sender is not None:
            peer.sender.on_update_sent(outgoing.request, now)

    def on_failure(self, outgoing: CcpOutgoing, now: float) -> None:
        """Sending ``outgoing`` raised or timed out (route update timeout: the
        broadcast interval)."""
        peer = self._peers.get(outgoing.account_id)
        if peer is None:
            return
        if isinstance(outgoing.request, RouteControlRequest):
            if peer.receiver is not None:
                peer.receiver.on_route_control_failed(now)
        elif peer.sender is not None:
            peer.sender.on_update_failed(outgoing.request, now)

    # ---------------------------------------------------------------- routes

    def next_hop(self, destination: str) -> str | None:
        """The account to forward a packet for ``destination`` to (``""``: ourselves),
        or None (F02 unreachable).
        """
        route = self.local_routing_table.resolve(destination)
        return None if route is None else route.next_hop

    def local_auth(self, prefix: str) -> bytes:
        """Auth of a route we originate: HMAC-SHA256(routingSecret, prefix UTF-8)."""
        return local_route_auth(self._routing_secret, prefix)

    def reload_local_routes(self) -> None:
        """Rebuild local routes (own address, default route, child accounts) and
        re-select every local and configured prefix (v21.3.0 ``reloadLocalRoutes``).

        Deviation: prefixes that were local before the reload are re-selected too, so a
        removed child or an old own address stops being routed.
        """
        old_prefixes = list(self._local_routes)
        local: dict[str, Route] = {}
        own = self._own_address
        local[own] = Route("", (), self.local_auth(own))
        default_route = self.default_route
        if default_route == "auto":
            default_route = next(
                (a for a, info in self._accounts.items() if info.relation == "parent"), ""
            )
        if default_route:
            prefix = self.global_prefix
            local[prefix] = Route(default_route, (), self.local_auth(prefix))
        for account_id, info in self._accounts.items():
            if info.relation == "child":
                child = self.child_address(account_id)
                local[child] = Route(account_id, (), self.local_auth(child))
        self._local_routes = local
        prefixes = list(local) + [r.target_prefix for r in self.static_routes]
        prefixes += [p for p in old_prefixes if p not in local]
        for prefix in prefixes:
            self.update_prefix(prefix)

    def update_prefix(self, prefix: str) -> bool:
        """Re-select the best route for ``prefix``; whether the next hop changed."""
        return self._update_local_route(prefix, self.best_route(prefix))

    def best_route(self, prefix: str) -> Route | None:
        """v21.3.0 ``getBestPeerForPrefix`` (see the module docstring)."""
        # "configured routes have highest priority"
        for static in self.static_routes:
            if static.target_prefix == prefix:
                if static.peer_id in self._accounts:
                    return Route(static.peer_id, (), self.local_auth(prefix))
                # "ignoring configured route, account does not exist."
                break
        local = self._local_routes.get(prefix)
        if local is not None:
            return local
        candidates = [
            route
            for peer in self._peers.values()
            if peer.receiver is not None
            for route in (peer.receiver.get_prefix(prefix),)
            if route is not None
        ]
        if not candidates:
            return None
        best = min(
            candidates,
            key=lambda r: (-RELATION_PRIORITY[self.relation_of(r.peer)], len(r.path), r.peer),
        )
        return Route(best.peer, best.path, best.auth)

    def _update_local_route(self, prefix: str, route: Route | None) -> bool:
        current = self.local_routing_table.get(prefix)
        current_next_hop = None if current is None else current.next_hop
        new_next_hop = None if route is None else route.next_hop
        if new_next_hop == current_next_hop:
            return False
        if route is not None:
            self.local_routing_table.insert(prefix, route)
        else:
            self.local_routing_table.delete(prefix)
        self._update_forwarding_route(prefix, route)
        return True

    def _update_forwarding_route(self, prefix: str, route: Route | None) -> None:
        table = self.forwarding_routing_table
        own = self._own_address
        if route is not None:
            route = Route(route.next_hop, (own, *route.path), advertised_auth(route.auth))
            if (
                # "Routes must start with the global prefix"
                not prefix.startswith(self.global_prefix)
                # "Don't publish the default route"
                or prefix == self.global_prefix
                # "Don't advertise local customer routes that we originated."
                or (prefix.startswith(own + ".") and len(route.path) == 1)
                or can_dragon_filter(table, self.relation_of, prefix, route)
            ):
                route = None
        current = table.get(prefix)
        current_next_hop = None if current is None else current.next_hop
        new_next_hop = None if route is None else route.next_hop
        if current_next_hop == new_next_hop:
            return
        if route is not None:
            table.insert(prefix, route)
        else:
            table.delete(prefix)
        table.record(prefix, route)
        if route is not None:
            # "We need to re-check any prefixes that start with this prefix to see if we
            # can apply DRAGON filtering."  (v21.3.0 passes the forwarding-table route,
            # which only matters through its next hop, and walks the live key list; we
            # walk a snapshot, so a withdrawal during the walk cannot skip a key.)
            for sub_prefix in table.keys_starting_with(prefix):
                if sub_prefix == prefix:
                    continue
                self._update_forwarding_route(sub_prefix, table.get(sub_prefix))

    def peer_routes(self, account_id: str) -> PeerRoutes | None:
        """The routes ``account_id`` advertised to us (None if we do not receive)."""
        peer = self._peers.get(account_id)
        return None if peer is None or peer.receiver is None else peer.receiver.routes

    def iter_local_routes(self) -> Iterable[tuple[str, Route]]:
        """The local routes (own address, default, children) currently defined."""
        return self._local_routes.items()
