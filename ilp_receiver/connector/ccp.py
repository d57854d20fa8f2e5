"""Per-peer CCP state machines: route sender and route receiver (spec
``05-peer-protocols.md``, section "CCP route broadcasts"; open question 21: "Follow the
code").

Sans-I/O port of interledgerjs/ilp-connector v21.3.0 ``src/routing/ccp-sender.ts``
and ``src/routing/ccp-receiver.ts``.  Nothing here sends anything or reads a clock:
time comes in as ``now`` (float seconds on one monotonic clock), and the caller sends
the returned requests (``route_control_prepare``/``route_update_prepare`` of
:mod:`ilp_receiver.codec.ccp`, ``expiresAt = now + 60 s``) and reports how it went.

Sender (one per peer we send routes to)::

    handle_route_control(request, now)      # peer.route.control arrived
    next_update_at -> float | None          # when to call next_update
    next_update(now) -> RouteUpdateRequest | None
    on_update_sent(request, now)            # any reply (Fulfill or Reject)
    on_update_failed(request, now)          # sendData raised / timed out

Receiver (one per peer we accept routes from)::

    next_route_control_at / route_control_due(now)
    route_control_request(now) -> RouteControlRequest
    on_route_control_reply(reply, now) / on_route_control_failed(now)
    handle_route_update(request, now) -> changed prefixes   # peer.route.update arrived

Deviations from v21.3.0:

* After a failed update the sender retries after ``routeBroadcastInterval`` (v21.3.0
  stopped sending to that peer until a route change or a new route control).
* An update covering several log entries for the same prefix carries only the last
  one.  v21.3.0 sent them all, and since receivers apply withdrawals before new
  routes, "added at epoch 3, withdrawn at epoch 7" left the prefix reachable.  The
  coalesced update means the same to any receiver and avoids that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..codec.ccp import (
    ZERO_ROUTING_TABLE_ID,
    CcpMode,
    RouteControlRequest,
    RouteUpdateRequest,
)
from ..codec.ccp import (
    Route as CcpRoute,
)
from ..codec.ilp import IlpFulfill
from .routing import (
    DEFAULT_ROUTE_BROADCAST_INTERVAL_MS,
    DEFAULT_ROUTE_EXPIRY_MS,
    ForwardingRoutingTable,
    IncomingRoute,
    PeerRoutes,
    Relation,
    RouteUpdate,
)

if TYPE_CHECKING:
    from ..codec.ilp import IlpReject

__all__ = [
    "MAX_EPOCHS_PER_UPDATE",
    "MINIMUM_UPDATE_INTERVAL_MS",
    "ROUTE_CONTROL_RETRY_INTERVAL_MS",
    "CcpPeer",
    "CcpReceiver",
    "CcpSender",
]

#: v21.3.0 ``MINIMUM_UPDATE_INTERVAL``: "never more often than every 150 ms".
MINIMUM_UPDATE_INTERVAL_MS: Final = 150
#: v21.3.0 ``MAX_EPOCHS_PER_UPDATE``: "at most 50 epochs per update".
MAX_EPOCHS_PER_UPDATE: Final = 50
#: "The receiver re-sends route control every 30 s after a failure".
ROUTE_CONTROL_RETRY_INTERVAL_MS: Final = 30000


class CcpSender:
    """Sends our forwarding table to one peer (v21.3.0 ``CcpSender``).

    ``get_own_address`` gives the speaker address; ``get_relation`` maps an account id
    (``""`` = ourselves) to its relation.  State: ``mode`` (IDLE until the peer asks
    for SYNC), ``last_known_epoch`` ("Next epoch that the peer requested from us"),
    ``last_update`` (time of the last send attempt) and :attr:`next_update_at`.
    """

    __slots__ = (
        "_due",
        "_get_own_address",
        "_get_relation",
        "account_id",
        "last_known_epoch",
        "last_update",
        "mode",
        "route_broadcast_interval_ms",
        "route_expiry_ms",
        "table",
    )

    def __init__(
        self,
        account_id: str,
        table: ForwardingRoutingTable,
        *,
        get_own_address: Callable[[], str],
        get_relation: Callable[[str], Relation],
        route_expiry_ms: int = DEFAULT_ROUTE_EXPIRY_MS,
        route_broadcast_interval_ms: int = DEFAULT_ROUTE_BROADCAST_INTERVAL_MS,
    ) -> None:
        self.account_id = account_id
        self.table = table
        self._get_own_address = get_own_address
        self._get_relation = get_relation
        self.route_expiry_ms = route_expiry_ms
        self.route_broadcast_interval_ms = route_broadcast_interval_ms
        self.mode = CcpMode.IDLE
        self.last_known_epoch = 0
        self.last_update: float | None = None
        self._due: float | None = None

    @property
    def next_update_at(self) -> float | None:
        """When the next update is due (None: nothing scheduled, e.g. IDLE)."""
        return self._due

    def handle_route_control(self, request: RouteControlRequest, now: float) -> None:
        """Sender-side route control: "store the mode; if the given table id differs
        from its own current routing table id, reset the peer's known epoch to 0, else
        set it to lastKnownEpoch; features are ignored; in SYNC mode schedule updates,
        in IDLE stop them."
        """
        self.mode = request.mode
        if request.last_known_routing_table_id != self.table.routing_table_id:
            self.last_known_epoch = 0
        else:
            self.last_known_epoch = request.last_known_epoch
        if self.mode == CcpMode.SYNC:
            self.schedule(now)
        else:
            self._due = None

    def schedule(self, now: float) -> None:
        """v21.3.0 ``scheduleRouteUpdate``: "send immediately if the peer is behind,
        otherwise every routeBroadcastInterval ... never more often than every 150 ms".
        Does nothing unless in SYNC mode.
        """
        self._due = None
        if self.mode != CcpMode.SYNC:
            return
        if self.last_known_epoch < self.table.current_epoch or self.last_update is None:
            delay_ms = 0.0
        else:
            delay_ms = self.route_broadcast_interval_ms - (now - self.last_update) * 1000
        self._due = now + max(MINIMUM_UPDATE_INTERVAL_MS, delay_ms) / 1000

    def stop(self) -> None:
        """Cancel the scheduled update (the peer went away)."""
        self._due = None

    def next_update(
        self, now: float, max_epochs: int = MAX_EPOCHS_PER_UPDATE
    ) -> RouteUpdateRequest | None:
        """The route update to send now, or None if none is due.

        Covers log epochs ``[last_known_epoch, last_known_epoch + max_epochs)``; with
        nothing new it is a heartbeat (from = to, empty lists).  "The sender
        optimistically advances the peer's known epoch to toEpochIndex"; report the
        outcome with :meth:`on_update_sent` or :meth:`on_update_failed`.
        """
        if self.mode != CcpMode.SYNC or self._due is None or now < self._due:
            return None
        self._due = None
        self.last_update = now
        request = self.build_update(max_epochs)
        self.last_known_epoch = request.to_epoch_index
        return request

    def build_update(self, max_epochs: int = MAX_EPOCHS_PER_UPDATE) -> RouteUpdateRequest:
        """The update for the peer's next epochs, without changing any state."""
        start = self.last_known_epoch
        entries = self.table.log[start : start + max_epochs]
        to_epoch = entries[-1].epoch + 1 if entries else start
        relation = self._get_relation(self.account_id)
        # Last entry per prefix wins (see the module docstring).
        latest: dict[str, RouteUpdate] = {}
        for entry in entries:
            latest.pop(entry.prefix, None)
            latest[entry.prefix] = entry
        new_routes: list[CcpRoute] = []
        withdrawn: list[str] = []
        for entry in latest.values():
            route = entry.route
            if route is not None and (
                # "Don't send peer their own routes"
                route.next_hop == self.account_id
                # "Don't advertise peer and provider routes to providers"
                or (relation == "parent" and self._get_relation(route.next_hop) in _UPSTREAM)
            ):
                route = None
            if route is None:
                withdrawn.append(entry.prefix)
            else:
                new_routes.append(CcpRoute(entry.prefix, route.path, route.auth))
        return RouteUpdateRequest(
            routing_table_id=self.table.routing_table_id,
            current_epoch_index=self.table.current_epoch,
            from_epoch_index=start,
            to_epoch_index=to_epoch,
            hold_down_time=self.route_expiry_ms,
            speaker=self._get_own_address(),
            new_routes=tuple(new_routes),
            withdrawn_routes=tuple(withdrawn),
        )

    def on_update_sent(self, request: RouteUpdateRequest, now: float) -> None:
        """The peer answered ``request`` (Fulfill or Reject alike: v21.3.0 "does not
        inspect whether the reply was a Fulfill or a Reject"); schedule the next one.
        """
        del request
        self.schedule(now)

    def on_update_failed(self, request: RouteUpdateRequest, now: float) -> None:
        """Sending ``request`` raised or timed out ("timeout = broadcast interval"):
        roll the peer's epoch back, and retry after ``routeBroadcastInterval``.
        """
        self.last_known_epoch = request.from_epoch_index
        if self.mode == CcpMode.SYNC:
            self._due = now + self.route_broadcast_interval_ms / 1000


_UPSTREAM: Final = frozenset({"peer", "parent"})


class CcpReceiver:
    """Accepts one peer's routes (v21.3.0 ``CcpReceiver``).

    ``routing_table_id``/``epoch`` are the peer's table and the epoch up to which it
    sent us updates; ``expiry`` (same clock as ``now``) is recorded but, as in v21.3.0,
    nothing removes expired routes (open question 21).  The first route control is due
    at the ``now`` given to the constructor.
    """

    __slots__ = ("_control_due", "account_id", "epoch", "expiry", "routes", "routing_table_id")

    def __init__(self, account_id: str, *, now: float = 0.0) -> None:
        self.account_id = account_id
        self.routes = PeerRoutes()
        self.routing_table_id: bytes = ZERO_ROUTING_TABLE_ID
        self.epoch = 0
        self.expiry = 0.0
        self._control_due: float | None = now

    # ------------------------------------------------------------ route control

    @property
    def next_route_control_at(self) -> float | None:
        """When a route control should be sent (None: not needed now)."""
        return self._control_due

    def route_control_due(self, now: float) -> bool:
        """Whether a route control should be sent at ``now``."""
        return self._control_due is not None and now >= self._control_due

    def route_control_request(self, now: float) -> RouteControlRequest:
        """The SYNC route control to send ("mode SYNC, table id all zeros, epoch 0"
        from a fresh receiver; later the last table id and epoch seen).  Marks it sent.
        """
        del now
        self._control_due = None
        return RouteControlRequest(CcpMode.SYNC, self.routing_table_id, self.epoch, ())

    def on_route_control_reply(self, reply: IlpFulfill | IlpReject, now: float) -> None:
        """A Fulfill ends the exchange; a Reject is a failure (retry in 30 s)."""
        if isinstance(reply, IlpFulfill):
            self._control_due = None
        else:
            self.on_route_control_failed(now)

    def on_route_control_failed(self, now: float) -> None:
        """ "The receiver re-sends route control every 30 s after a failure"."""
        self._control_due = now + ROUTE_CONTROL_RETRY_INTERVAL_MS / 1000

    # ------------------------------------------------------------ route update

    def is_expired(self, now: float) -> bool:
        """Whether the hold-down time of the last update has passed (informational)."""
        return now > self.expiry

    def prefixes(self) -> list[str]:
        """The prefixes this peer currently advertises to us."""
        return self.routes.keys()

    def get_prefix(self, prefix: str) -> IncomingRoute | None:
        """The peer's route for exactly ``prefix``."""
        return self.routes.get(prefix)

    def handle_route_update(self, request: RouteUpdateRequest, now: float) -> list[str]:
        """Receiver steps 1-6 of the spec (the import filter, step 7, is the
        broadcaster's; step 8, the Fulfill, the caller's).  Returns the changed
        prefixes in order, without duplicates.
        """
        # 1. "Extend the peer's route expiry to max(current, now + holdDownTime)."
        self.expiry = max(self.expiry, now + request.hold_down_time / 1000)
        # 2. "If routingTableId differs from the last one seen from this peer: adopt it
        #    and reset the local epoch to 0"
        if request.routing_table_id != self.routing_table_id:
            self.routing_table_id = request.routing_table_id
            self.epoch = 0
        # 3. "If fromEpochIndex > localEpoch: gap -- ignore the update"
        if request.from_epoch_index > self.epoch:
            return []
        # 4. "If localEpoch > toEpochIndex: stale -- ignore."
        if self.epoch > request.to_epoch_index:
            return []
        # 5. "Empty lists: heartbeat -- set localEpoch = toEpochIndex."
        if not request.new_routes and not request.withdrawn_routes:
            self.epoch = request.to_epoch_index
            return []
        # 6. "delete each withdrawn prefix, insert each new route (keyed by prefix,
        #    storing path and auth), set localEpoch = toEpochIndex."
        changed: dict[str, None] = {}
        for prefix in request.withdrawn_routes:
            if self.routes.delete_route(prefix):
                changed[prefix] = None
        for route in request.new_routes:
            incoming = IncomingRoute(self.account_id, route.prefix, route.path, route.auth)
            if self.routes.add_route(incoming):
                changed[route.prefix] = None
        self.epoch = request.to_epoch_index
        return list(changed)


@dataclass(slots=True)
class CcpPeer:
    """An account we exchange routes with (v21.3.0 ``Peer``): its sender if we send it
    routes, its receiver if we accept its routes.
    """

    account_id: str
    sender: CcpSender | None
    receiver: CcpReceiver | None
