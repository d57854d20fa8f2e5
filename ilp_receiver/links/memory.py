"""Two links joined in memory: no sockets, no serialization.

Used for local delivery inside one process (the bundled connector handing packets to an
in-process receiver) and by tests and the demo.  Packets still pass through the same
handler edge (:meth:`~ilp_receiver.links.base.Link.handle_incoming`) as on a real transport.
"""

from __future__ import annotations

import asyncio

from ..codec.ilp import IlpPrepare, IlpReply
from ..errors import LinkClosedError, LinkTimeoutError
from .base import Link

__all__ = ["MemoryLink", "memory_link_pair"]


class MemoryLink(Link):
    """One end of an in-memory link; see :func:`memory_link_pair`."""

    def __init__(self) -> None:
        super().__init__()
        self.peer: MemoryLink | None = None
        self._up = False

    @property
    def is_connected(self) -> bool:
        """Whether both ends are started."""
        return self._up and self.peer is not None and self.peer._up

    async def start(self) -> None:
        """Mark this end up and run the connect callbacks (IL-DCP)."""
        self._up = True
        await self._run_connect_callbacks()

    async def stop(self) -> None:
        """Mark this end down."""
        self._up = False

    async def send(self, prepare: IlpPrepare, timeout: float | None = None) -> IlpReply:
        """Hand ``prepare`` to the other end's handler and return its answer."""
        peer = self.peer
        if peer is None or not self._up or not peer._up:
            raise LinkClosedError("in-memory link is not connected")
        wait = timeout if timeout is not None else self.expiry_timeout(prepare)
        try:
            return await asyncio.wait_for(peer.handle_incoming(prepare), wait)
        except TimeoutError:
            raise LinkTimeoutError(f"no answer within {wait:.3f} s") from None


def memory_link_pair() -> tuple[MemoryLink, MemoryLink]:
    """Two connected in-memory link ends."""
    a, b = MemoryLink(), MemoryLink()
    a.peer, b.peer = b, a
    return a, b
