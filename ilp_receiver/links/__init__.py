"""Asyncio transports to a peer: BTP/2.0(-I) over WebSocket, ILP over HTTP.

Every transport implements :class:`~ilp_receiver.links.base.Link`; :func:`open_link`
picks one from an uplink URL.
"""

from __future__ import annotations

from .base import IlpHandler, Link
from .factory import open_link

__all__ = ["IlpHandler", "Link", "open_link"]
