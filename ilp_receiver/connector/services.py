"""The packet path of the bundled connector: small services wired into one chain, like
interledger-rs services or ilp-connector middlewares (spec ``02-ilp-packets.md`` error
codes; ``05-peer-protocols.md`` for the ``peer.*`` protocols and echo).

An incoming Prepare from account A passes, in this order::

    RateLimit            T05 when A's token bucket is empty
    MaxPacketAmount      F08 (+ amount data) when amount > A.max_packet_amount
    PeerProtocols        peer.config (IL-DCP host), peer.balance (il-balance),
                         peer.route.control / peer.route.update (CCP), other peer.* F01
    Echo                 a Prepare to our own address: ECHO request -> Prepare back to
                         the source address (malformed: F01)
    Router               longest-prefix match; F02 when there is no route; F01 for a
                         destination that is not an ILP address
    MaxPacketAmount      F08 when amount > B.max_packet_amount (B = next hop)
    Expiry               R02 when less than min_message_window is left; the outgoing
                         expiry is min(expiry - window, now + max_hold_time)
    Balance              T04 when A's max_balance or B's min_balance would be crossed;
                         reserve, settle on Fulfill (store first), roll back otherwise
    FulfillmentCheck     SHA-256(fulfillment) must equal the condition (else F09)
    Outgoing             send to B; no answer before the outgoing expiry -> R00; link
                         down/refused -> T01

Rejects are values; an exception escaping the chain becomes T00 in exactly one place,
:meth:`~ilp_receiver.links.base.Link.handle_incoming` at the link edge.

Choices (documented in ``docs/connector.md``):

* An invalid fulfillment is rejected upstream with **F09** "Invalid Peer Response" (the
  code later RFC 27 revisions and interledger-rs use for exactly this case; ilp-connector
  v21.3.0 used F02).  Any 2018 sender treats it as final by its class letter.
* An already expired Prepare is R02 like v21.3.0's route builder ("source transfer has
  already expired"), not T00.
* Exchange is one-to-one: the config refuses accounts whose asset differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from ..codec.address import is_valid_address
from ..codec.balance import BALANCE_DESTINATION, balance_fulfill, check_balance_request
from ..codec.ccp import (
    CCP_CONTROL_DESTINATION,
    CCP_RESPONSE,
    CCP_UPDATE_DESTINATION,
    check_route_control_request,
    check_route_update_request,
)
from ..codec.echo import echo_reply_prepare
from ..codec.ildcp import ILDCP_DESTINATION, IldcpResponse, ildcp_serve
from ..codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    encode_amount_too_large_data,
)
from ..errors import (
    DecodeError,
    IlpError,
    LinkClosedError,
    LinkError,
    LinkTimeoutError,
    RemoteProtocolError,
)
from .accounts import Account, Ledger

if TYPE_CHECKING:
    from .routing import RouteBroadcaster

__all__ = [
    "INVALID_FULFILLMENT_CODE",
    "Balance",
    "CountOutgoing",
    "Echo",
    "Expiry",
    "FulfillmentCheck",
    "MaxPacketAmount",
    "Node",
    "Outgoing",
    "PeerProtocols",
    "RateLimit",
    "Request",
    "Router",
    "Service",
    "build_chain",
]

log = logging.getLogger(__name__)

#: Code for a Fulfill whose SHA-256 does not match the condition (see module doc).
INVALID_FULFILLMENT_CODE = "F09"


class Node(Protocol):
    """What the services need from the connector."""

    @property
    def address(self) -> str:
        """Our ILP address."""

    @property
    def broadcaster(self) -> RouteBroadcaster | None:
        """Routing state (None until the address is known)."""

    @property
    def ledger(self) -> Ledger:
        """Balances."""

    def account(self, account_id: str) -> Account | None:
        """The account with that id."""

    def ccp_changed(self) -> None:
        """Wake the CCP timer (a route control or update arrived)."""

    def monotonic(self) -> float:
        """The CCP clock."""

    def now(self) -> datetime:
        """The wall clock (UTC) for expiries."""


@dataclass(slots=True)
class Request:
    """One Prepare on its way through the chain."""

    prepare: IlpPrepare
    source: Account
    next_hop: Account | None = None
    echo: bool = False
    #: the Prepare as it will be sent to ``next_hop`` (set by :class:`Expiry`)
    outgoing: IlpPrepare | None = None
    notes: dict[str, object] = field(default_factory=dict)


class Service:
    """A step of the chain: handle the request or pass it to :attr:`next`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: the next service (services call ``self.next.handle`` directly: one coroutine
        #: per step instead of two on the per-packet path)
        self.next: Service = _CHAIN_END

    def reject(self, code: str, message: str, data: bytes = b"") -> IlpReject:
        """A Reject triggered by us."""
        return IlpReject(code, self.node.address, message, data)

    async def forward(self, request: Request) -> IlpReply:
        """Hand ``request`` to the next service."""
        return await self.next.handle(request)

    async def handle(self, request: Request) -> IlpReply:
        """Process ``request`` (default: pass it on)."""
        return await self.next.handle(request)


class _ChainEnd(Service):
    """Placeholder ``next`` of a service not wired into a chain."""

    async def handle(self, request: Request) -> IlpReply:
        """Always fails: the chain always ends in :class:`Outgoing`."""
        raise RuntimeError("service chain ends without an Outgoing service")


_CHAIN_END: Service = object.__new__(_ChainEnd)


class RateLimit(Service):
    """T05 when the source account's token bucket is empty."""

    async def handle(self, request: Request) -> IlpReply:
        """Take a token or reject."""
        bucket = request.source.bucket
        if bucket is not None and not bucket.take():
            return self.reject("T05", "too many requests, throttling.")
        return await self.next.handle(request)


class MaxPacketAmount(Service):
    """F08 Amount Too Large, with ``UInt64 received || UInt64 maximum`` as data."""

    def __init__(self, node: Node, *, outgoing: bool) -> None:
        super().__init__(node)
        self.outgoing = outgoing

    async def handle(self, request: Request) -> IlpReply:
        """Compare the amount with the account's maximum."""
        account = request.next_hop if self.outgoing else request.source
        maximum = None if account is None else account.config.max_packet_amount
        amount = request.prepare.amount
        if maximum is not None and amount > maximum:
            return self.reject(
                "F08",
                f"packet size too large. maxAmount={maximum} actualAmount={amount}",
                encode_amount_too_large_data(amount, maximum),
            )
        return await self.next.handle(request)


class PeerProtocols(Service):
    """``peer.*`` requests: "exactly ``peer.config`` -> IL-DCP; anything starting
    ``peer.route`` -> CCP; other ``peer.*`` -> F01 'unknown peer protocol.'"
    """

    async def handle(self, request: Request) -> IlpReply:
        """Answer a peer protocol request or pass the packet on."""
        prepare = request.prepare
        destination = prepare.destination
        if not destination.startswith("peer."):
            return await self.next.handle(request)
        node = self.node
        account = request.source
        now = node.now()
        if destination == ILDCP_DESTINATION:
            broadcaster = node.broadcaster
            if account.relation != "child" or broadcaster is None:
                return self.reject("F00", "IL-DCP is only served to child accounts.")
            response = IldcpResponse(
                broadcaster.child_address(account.id),
                account.config.asset_scale,
                account.config.asset_code,
            )
            return ildcp_serve(prepare, response, server_address=node.address, now=now)
        if destination == BALANCE_DESTINATION:
            try:
                check_balance_request(prepare, now)
            except IlpError as exc:
                return self.reject(exc.code, exc.message)
            # "positive values meaning the balance is in the requester's favour": our
            # record is what the account owes us, so the requester's view is its negation.
            try:
                balance = await node.ledger.current_balance(account.id)
            except Exception:
                log.exception("balance store failed while answering peer.balance")
                return self.reject("T00", "balance temporarily unavailable.")
            return balance_fulfill(-balance)
        if destination.startswith("peer.route"):
            return self._ccp(request, now)
        return self.reject("F01", "unknown peer protocol.")

    def _ccp(self, request: Request, now: datetime) -> IlpReply:
        broadcaster = self.node.broadcaster
        prepare = request.prepare
        if broadcaster is None:
            return self.reject("T00", "routing is not ready yet")
        try:
            if prepare.destination == CCP_CONTROL_DESTINATION:
                control = check_route_control_request(prepare, now)
                broadcaster.handle_route_control(request.source.id, control, self.node.monotonic())
            elif prepare.destination == CCP_UPDATE_DESTINATION:
                update = check_route_update_request(prepare, now)
                broadcaster.handle_route_update(request.source.id, update, self.node.monotonic())
            else:
                return self.reject("F01", "unknown peer protocol.")
        except IlpError as exc:
            return self.reject(exc.code, exc.message)
        except DecodeError as exc:
            return self.reject("F01", f"invalid CCP request: {exc.reason}")
        self.node.ccp_changed()
        return CCP_RESPONSE


class Echo(Service):
    """A Prepare to our own address: echo (ilp-connector ``controllers/echo.ts``)."""

    def __init__(self, node: Node, *, min_message_window: timedelta) -> None:
        super().__init__(node)
        self.window = min_message_window

    async def handle(self, request: Request) -> IlpReply:
        """Turn an echo request into the Prepare back to its source and forward that."""
        prepare = request.prepare
        if prepare.destination != self.node.address:
            return await self.next.handle(request)
        try:
            reply_prepare = echo_reply_prepare(prepare, min_message_window=self.window)
        except DecodeError as exc:
            return self.reject("F01", exc.reason)
        request.prepare = reply_prepare
        request.echo = True
        return await self.next.handle(request)


class Router(Service):
    """Longest-prefix forwarding on the local routing table; F02 on no route."""

    async def handle(self, request: Request) -> IlpReply:
        """Pick the next hop."""
        destination = request.prepare.destination
        if not is_valid_address(destination):
            return self.reject("F01", "invalid destination address.")
        broadcaster = self.node.broadcaster
        hop = None if broadcaster is None else broadcaster.next_hop(destination)
        account = self.node.account(hop) if hop else None
        if account is None:
            return self.reject("F02", f"no route found. destination={destination}")
        request.next_hop = account
        return await self.next.handle(request)


class Expiry(Service):
    """Expiry shortening: "not enough time left to subtract the connector's safety
    margin" is R02; the outgoing expiry is ``min(expiry - min_message_window,
    now + max_hold_time)``.  Echo replies already had the window subtracted.
    """

    def __init__(
        self, node: Node, *, min_message_window: timedelta, max_hold_time: timedelta
    ) -> None:
        super().__init__(node)
        self.window = min_message_window
        self.max_hold = max_hold_time

    async def handle(self, request: Request) -> IlpReply:
        """Compute the outgoing Prepare or reject R02."""
        prepare = request.prepare
        now = self.node.now()
        if prepare.expires_at < now:
            return self.reject("R02", "source transfer has already expired.")
        window = timedelta(0) if request.echo else self.window
        expires_at = min(prepare.expires_at - window, now + self.max_hold)
        if expires_at - now < self.window:
            return self.reject("R02", "source transfer expires too soon to complete payment.")
        # keep the wire's millisecond precision
        expires_at = expires_at.replace(microsecond=expires_at.microsecond // 1000 * 1000)
        request.outgoing = IlpPrepare(
            prepare.amount,
            expires_at,
            prepare.execution_condition,
            prepare.destination,
            prepare.data,
        )
        return await self.next.handle(request)


class Balance(Service):
    """T04 when a balance limit would be crossed; reserve, settle once, roll back.

    With a shared ledger (``shared_balances``) a limited change is held in the store
    when the Prepare arrives (:meth:`~.accounts.Ledger.hold`), so every connector
    sharing the store checks the same balance; unlimited changes settle on Fulfill.
    """

    async def handle(self, request: Request) -> IlpReply:
        """Reserve on both accounts, forward, then settle or release."""
        amount = request.prepare.amount
        if amount == 0:
            return await self.next.handle(request)
        ledger = self.node.ledger
        source, target = request.source, request.next_hop
        assert target is not None
        if ledger.shared:
            return await self._shared(request, ledger, source, target, amount)
        if not ledger.reserve(source.id, amount, None, source.config.max_balance):
            return self.reject("T04", f"exceeded maximum balance of account {source.id}.")
        if not ledger.reserve(target.id, -amount, target.config.min_balance, None):
            ledger.release(source.id, amount)
            return self.reject("T04", "insufficient liquidity on the outgoing account.")
        settled = False
        try:
            reply = await self.next.handle(request)
            if isinstance(reply, IlpFulfill):
                # Money is counted (and persisted) before the Fulfill goes upstream.
                await ledger.settle([(source.id, amount), (target.id, -amount)])
                settled = True
            return reply
        finally:
            if not settled:
                ledger.release(source.id, amount)
                ledger.release(target.id, -amount)

    async def _shared(
        self, request: Request, ledger: Ledger, source: Account, target: Account, amount: int
    ) -> IlpReply:
        # (account, delta, minimum, maximum, message when refused)
        changes = (
            (source.id, amount, None, source.config.max_balance, None),
            (target.id, -amount, target.config.min_balance, None, None),
        )
        limited = [c for c in changes if c[2] is not None or c[3] is not None]
        unlimited = [(c[0], c[1]) for c in changes if c[2] is None and c[3] is None]
        held: list[tuple[str, int]] = []
        if limited:
            outcomes = await asyncio.gather(
                *(ledger.hold(a, d, lo, hi) for a, d, lo, hi, _ in limited),
                return_exceptions=True,
            )
            held = [(c[0], c[1]) for c, ok in zip(limited, outcomes, strict=True) if ok is True]
            refused = [c for c, ok in zip(limited, outcomes, strict=True) if ok is False]
            failed = [ok for ok in outcomes if isinstance(ok, BaseException)]
            if refused or failed:
                await asyncio.gather(*(ledger.unhold(a, d) for a, d in held))
                if failed:
                    log.error("balance store failed while holding a packet's amount: %s", failed[0])
                    return self.reject("T00", "balance temporarily unavailable.")
                if refused[0][1] > 0:
                    return self.reject("T04", f"exceeded maximum balance of account {source.id}.")
                return self.reject("T04", "insufficient liquidity on the outgoing account.")
        for account_id, delta in unlimited:
            ledger.reserve(account_id, delta, None, None)
        fulfilled = False
        try:
            reply = await self.next.handle(request)
            if isinstance(reply, IlpFulfill):
                fulfilled = True
                for account_id, delta in held:
                    ledger.confirm(account_id, delta)
                await ledger.settle(unlimited)
            return reply
        finally:
            if not fulfilled:
                for account_id, delta in unlimited:
                    ledger.release(account_id, delta)
                if held:
                    # undone even when this task is being cancelled
                    undo = asyncio.gather(*(ledger.unhold(a, d) for a, d in held))
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(undo)


class FulfillmentCheck(Service):
    """ "SHA-256(fulfillment) MUST equal the Prepare's condition"; otherwise the Fulfill
    is replaced by an F09 Reject towards the sender.
    """

    async def handle(self, request: Request) -> IlpReply:
        """Check the Fulfill that comes back."""
        reply = await self.next.handle(request)
        if (
            isinstance(reply, IlpFulfill)
            and hashlib.sha256(reply.fulfillment).digest() != request.prepare.execution_condition
        ):
            hop = request.next_hop.id if request.next_hop else "?"
            log.warning("account %s sent a fulfillment that does not match the condition", hop)
            return self.reject(INVALID_FULFILLMENT_CODE, "fulfillment did not match condition.")
        return reply


class Outgoing(Service):
    """Send to the next hop; no answer before the outgoing expiry is R00."""

    async def handle(self, request: Request) -> IlpReply:
        """The end of the chain."""
        target, prepare = request.next_hop, request.outgoing
        assert target is not None
        assert prepare is not None
        link = target.link
        if link is None or not link.is_connected:
            return self.reject("T01", f"peer unreachable: account {target.id} is not connected.")
        timeout = max(0.0, (prepare.expires_at - self.node.now()).total_seconds())
        try:
            if link.enforces_timeout:
                return await link.send(prepare, timeout)
            # The extra margin only guards against a link that ignores its timeout:
            # "a next hop that never answers must yield R00 at expiry, not a hang".
            return await asyncio.wait_for(link.send(prepare, timeout), timeout + 0.05)
        except (TimeoutError, LinkTimeoutError):
            return self.reject("R00", "transfer timed out.")
        except LinkClosedError as exc:
            return self.reject("T01", f"peer unreachable: {exc}")
        except (LinkError, RemoteProtocolError) as exc:
            return self.reject("T01", f"peer unreachable: {exc}")


class CountOutgoing(Service):
    """Counts the Prepares sent to each next hop and how they ended (``fulfilled``,
    ``rejected``, ``failed`` when sending raised): ``record(account, amount, result)``.
    Sits right before :class:`Outgoing` (the connector's metrics)."""

    def __init__(
        self,
        node: Node,
        record: Callable[[Account, int, Literal["fulfilled", "rejected", "failed"]], None],
    ) -> None:
        super().__init__(node)
        self._record = record

    async def handle(self, request: Request) -> IlpReply:
        """Forward, then count the answer."""
        result: Literal["fulfilled", "rejected", "failed"] = "failed"
        try:
            reply = await self.next.handle(request)
            result = "fulfilled" if isinstance(reply, IlpFulfill) else "rejected"
            return reply
        finally:
            target, prepare = request.next_hop, request.outgoing
            if target is not None and prepare is not None:
                self._record(target, prepare.amount, result)


def build_chain(
    node: Node,
    *,
    min_message_window: timedelta,
    max_hold_time: timedelta,
    extra: Callable[[Node], list[Service]] | None = None,
) -> Service:
    """Wire the services in the order of the module docstring; returns the first."""
    services: list[Service] = [
        RateLimit(node),
        MaxPacketAmount(node, outgoing=False),
        PeerProtocols(node),
        Echo(node, min_message_window=min_message_window),
        Router(node),
        MaxPacketAmount(node, outgoing=True),
        Expiry(node, min_message_window=min_message_window, max_hold_time=max_hold_time),
        Balance(node),
        FulfillmentCheck(node),
        *(extra(node) if extra is not None else []),
        Outgoing(node),
    ]
    for first, second in itertools.pairwise(services):
        first.next = second
    return services[0]


def utc_now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)
