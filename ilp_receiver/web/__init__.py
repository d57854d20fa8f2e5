"""Framework-neutral HTTP logic (SPSP endpoint, health), written once.

Each piece is an ``async`` function from request facts (path parameters, headers) to an
:class:`HttpReply`; the aiohttp server and the framework adapters only translate.
"""

from __future__ import annotations

from ..http_reply import HttpReply, json_reply

__all__ = ["HttpReply", "json_reply"]
