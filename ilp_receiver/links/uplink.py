"""A connection to a parent connector: a :class:`~ilp_receiver.links.base.Link` plus what
IL-DCP (``peer.config``) tells us about ourselves, re-learned after every reconnect, and
the il-balance query (``peer.balance``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..codec.balance import balance_request, decode_balance_fulfill
from ..codec.ildcp import decode_ildcp_fulfill, ildcp_request
from ..codec.ilp import IlpReject
from ..errors import RemoteProtocolError
from .base import Link

__all__ = ["PeerConfig", "Uplink", "fetch_balance", "fetch_peer_config"]

log = logging.getLogger(__name__)

#: IL-DCP requests expire after 60 s in the reference client.
PEER_REQUEST_LIFETIME = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """What the parent told us by IL-DCP."""

    address: str
    asset_code: str
    asset_scale: int


async def fetch_peer_config(link: Link, timeout: float = 10.0) -> PeerConfig:
    """Ask the parent for our ILP address and asset (IL-DCP, ``peer.config``)."""
    prepare = ildcp_request(datetime.now(UTC) + PEER_REQUEST_LIFETIME)
    reply = await link.send(prepare, timeout)
    if isinstance(reply, IlpReject):
        raise RemoteProtocolError(f"IL-DCP refused: {reply.code} {reply.message}")
    info = decode_ildcp_fulfill(reply)
    return PeerConfig(info.client_address, info.asset_code, info.asset_scale)


async def fetch_balance(link: Link, timeout: float = 10.0) -> int:
    """Ask the peer for our balance with it (il-balance, ``peer.balance``).

    Positive values are in our favour. Raises RemoteProtocolError if the peer rejects.
    """
    prepare = balance_request(datetime.now(UTC) + PEER_REQUEST_LIFETIME)
    reply = await link.send(prepare, timeout)
    if isinstance(reply, IlpReject):
        raise RemoteProtocolError(f"il-balance refused: {reply.code} {reply.message}")
    return decode_balance_fulfill(reply)


class Uplink:
    """A link to a parent plus the configuration learned from it by IL-DCP.

    Every (re)connection re-runs IL-DCP before the link counts as up, so ``config`` is
    always what the parent says now.
    """

    def __init__(self, link: Link, *, static_config: PeerConfig | None = None) -> None:
        self.link = link
        self._static = static_config
        self._config: PeerConfig | None = static_config
        link.on_connect(self._on_connect)

    async def _on_connect(self) -> None:
        if self._static is not None:
            self.link.local_address = self._static.address
            return
        config = await fetch_peer_config(self.link)
        if self._config is not None and config.address != self._config.address:
            log.warning("parent changed our ILP address to %s", config.address)
        self._config = config
        self.link.local_address = config.address

    @property
    def config(self) -> PeerConfig:
        """The current IL-DCP configuration (available after :meth:`start`)."""
        if self._config is None:
            raise RuntimeError("the uplink has not connected yet")
        return self._config

    async def start(self) -> PeerConfig:
        """Connect and learn our address; returns it."""
        await self.link.start()
        return self.config

    async def stop(self) -> None:
        """Disconnect."""
        await self.link.stop()

    async def balance(self) -> int:
        """Our balance with the parent, by il-balance."""
        return await fetch_balance(self.link)
