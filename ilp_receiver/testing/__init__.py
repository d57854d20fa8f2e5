"""A test kit: an in-memory ILP network to run senders and receivers against.

:class:`InMemoryNetwork` is a tiny connector living in the test's event loop.  Each
:meth:`~InMemoryNetwork.add_child` gives a :class:`~ilp_receiver.links.memory.MemoryLink`
end for a child (a receiver, a paying client); the network

* answers IL-DCP (``peer.config``) with ``<network address>.<child name>`` and its
  asset, so :class:`~ilp_receiver.links.uplink.Uplink` works unchanged;
* forwards every other Prepare to the child whose address is the longest prefix of the
  destination, applying an exchange ``rate`` (``floor(amount x rate)``, like a
  connector's rounding);
* refuses what a connector refuses: an unknown destination (**F02**), a Prepare above
  the sending child's ``max_packet_amount`` (**F08** with the RFC 27 data
  ``receivedAmount ‖ maximumAmount``), an expired Prepare (**R02**, ilp-connector's
  "source transfer has already expired"), a Fulfill that does not match the condition
  (**F05**), and a child that cannot be reached (**T01**);
* accepts BTP clients too (:meth:`~InMemoryNetwork.serve_btp`), so another process can
  join;
* can be told to fail the next packets with any code (:meth:`~InMemoryNetwork.fail_next`),
  e.g. ``T04`` to test back-off.

Everything it forwarded is kept in :attr:`~InMemoryNetwork.forwarded` for assertions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fractions import Fraction
from math import floor

from ..codec.ildcp import ILDCP_DESTINATION, IldcpResponse, ildcp_serve
from ..codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    encode_amount_too_large_data,
)
from ..crypto import constant_time_equal, sha256
from ..errors import LinkError
from ..links.base import Link
from ..links.memory import MemoryLink, memory_link_pair

__all__ = ["BtpGateway", "ForwardedPacket", "InMemoryNetwork", "NetworkChild"]


@dataclass(frozen=True, slots=True)
class BtpGateway:
    """A BTP listener of an :class:`InMemoryNetwork` (see :meth:`~InMemoryNetwork.serve_btp`)."""

    host: str
    port: int
    close: Callable[[], Awaitable[None]]

    def url(self, username: str, token: str = "test-token") -> str:  # noqa: S107
        """The uplink URL a client named ``username`` connects with."""
        return f"btp+ws://{username}:{token}@{self.host}:{self.port}"


@dataclass(slots=True)
class NetworkChild:
    """One child account of the network."""

    name: str
    address: str
    #: The network's end of the link (the child holds the other end).
    link: Link
    #: Largest Prepare amount accepted *from* this child (None: no limit).
    max_packet_amount: int | None = None


@dataclass(frozen=True, slots=True)
class ForwardedPacket:
    """A Prepare the network forwarded, and the reply that came back."""

    source: str
    prepare: IlpPrepare
    reply: IlpReply = field(compare=False)


class InMemoryNetwork:
    """A minimal in-process connector (see the module docstring).

    ``address`` is the network's own ILP address (children get ``address.name``);
    ``asset_code``/``asset_scale`` what IL-DCP reports; ``rate`` the exchange rate
    applied to forwarded amounts (a :class:`~fractions.Fraction` or int; changeable at
    any time).
    """

    def __init__(
        self,
        address: str = "test.memory",
        *,
        asset_code: str = "XYZ",
        asset_scale: int = 9,
        rate: Fraction | int = 1,
    ) -> None:
        self.address = address
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.rate = Fraction(rate)
        self.children: dict[str, NetworkChild] = {}
        self.forwarded: list[ForwardedPacket] = []
        self._failures: deque[IlpReject] = deque()

    async def add_child(self, name: str, *, max_packet_amount: int | None = None) -> MemoryLink:
        """A new child account ``name``; returns the child's (not yet started) link end.

        Hand it to :class:`~ilp_receiver.receiver.AsyncReceiver` or
        :class:`~ilp_receiver.client.AsyncPaymentClient`; they start it and learn their
        address ``<address>.<name>`` by IL-DCP.
        """
        ours, theirs = memory_link_pair()
        await self.attach(name, ours, max_packet_amount=max_packet_amount)
        return theirs

    async def attach(
        self, name: str, link: Link, *, max_packet_amount: int | None = None
    ) -> NetworkChild:
        """Make ``link`` (the network's end of any transport) child ``name``; starts it."""
        if name in self.children:
            raise ValueError(f"child {name!r} exists already")
        child = NetworkChild(name, f"{self.address}.{name}", link, max_packet_amount)
        link.local_address = self.address

        async def handle(prepare: IlpPrepare) -> IlpReply:
            return await self._handle(child, prepare)

        link.set_handler(handle)
        await link.start()
        self.children[name] = child
        return child

    async def serve_btp(
        self, host: str = "127.0.0.1", port: int = 0, *, max_packet_amount: int | None = None
    ) -> BtpGateway:
        """Accept BTP/2.0 clients on ``host:port`` (0: any free port); each username
        becomes a child of that name (any token is accepted; an empty username is
        ``"anonymous"``).  Lets separate processes -- the CLI -- join the network.
        """
        from aiohttp import web

        from ..links.btp_server import BtpServer, BtpServerLink
        from ..links.listener import DEFAULT_LIMITS, start_listener

        async def authenticate(username: str | None, token: str) -> str | None:
            return username or "anonymous"

        async def link_for(account: str) -> BtpServerLink:
            existing = self.children.get(account)
            if existing is not None and isinstance(existing.link, BtpServerLink):
                return existing.link
            link = BtpServerLink(account)
            await self.attach(account, link, max_packet_amount=max_packet_amount)
            return link

        server = BtpServer(authenticate, link_for)
        app = web.Application()
        app.router.add_get("/", server.handle)
        runner = web.AppRunner(app, access_log=None, **DEFAULT_LIMITS.runner_options())
        await runner.setup()
        listener = await start_listener(runner, host, port)
        return BtpGateway(host, listener.port, runner.cleanup)

    def child_address(self, name: str) -> str:
        """The ILP address of child ``name``."""
        return self.children[name].address

    def fail_next(self, code: str, *, count: int = 1, message: str = "", data: bytes = b"") -> None:
        """Reject the next ``count`` forwarded Prepares with ``code`` (before routing)."""
        for _ in range(count):
            self._failures.append(IlpReject(code, self.address, message, data))

    def _reject(self, code: str, message: str, data: bytes = b"") -> IlpReject:
        return IlpReject(code, self.address, message, data)

    def _route(self, destination: str) -> NetworkChild | None:
        best: NetworkChild | None = None
        for child in self.children.values():
            prefix = child.address
            if (destination == prefix or destination.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best.address)
            ):
                best = child
        return best

    async def _handle(self, source: NetworkChild, prepare: IlpPrepare) -> IlpReply:
        if prepare.destination == ILDCP_DESTINATION:
            return ildcp_serve(
                prepare,
                IldcpResponse(source.address, self.asset_scale, self.asset_code),
                server_address=self.address,
                now=datetime.now(UTC),
            )
        if self._failures:
            return self._failures.popleft()
        limit = source.max_packet_amount
        if limit is not None and prepare.amount > limit:
            return self._reject(
                "F08",
                f"packet size too large. maxAmount={limit} actualAmount={prepare.amount}",
                encode_amount_too_large_data(prepare.amount, limit),
            )
        if prepare.expires_at <= datetime.now(UTC):
            return self._reject("R02", "source transfer has already expired")
        target = self._route(prepare.destination)
        if target is None:
            return self._reject("F02", f"no route found. destination={prepare.destination}")
        outgoing = replace(prepare, amount=floor(prepare.amount * self.rate))
        try:
            reply = await target.link.send(outgoing)
        except LinkError as exc:
            reply = self._reject("T01", f"peer unreachable: {exc}")
        if isinstance(reply, IlpFulfill) and not constant_time_equal(
            sha256(reply.fulfillment), prepare.execution_condition
        ):
            reply = self._reject("F05", "fulfillment did not match expected value.")
        self.forwarded.append(ForwardedPacket(source.name, outgoing, reply))
        return reply
