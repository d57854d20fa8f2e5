"""The SPSP endpoint, framework-neutral: ``Accept`` negotiation, 200/404/406 replies.

* ``Accept: application/spsp+json`` (or ``application/json``, ``*/*``) -> 200
  ``application/spsp+json`` with a fresh destination and shared secret, ``balance``,
  ``asset_info``/``ledger_info``, ``receiver_info`` and ``Cache-Control``;
* an unknown endpoint -> 404 ``{"id": "InvalidReceiverError", ...}``;
* an ``Accept`` we cannot serve -> 406 with a JSON body naming what we serve.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Protocol

from ..spsp import (
    SPSP_MEDIA_TYPE,
    SpspResponse,
    invalid_receiver_body,
    negotiate_spsp,
    not_acceptable_body,
)
from .reply import HttpReply, json_reply

__all__ = ["ENDPOINT_NAME", "EndpointDirectory", "SpspIssuer", "spsp_reply"]

#: Names a standalone receiver serves at ``/<name>``.
ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class SpspIssuer(Protocol):
    """What the endpoint needs from a receiver."""

    spsp_max_age: int

    async def spsp_response(self, account: str, *, maximum: int | None = None) -> SpspResponse:
        """A fresh SPSP response for ``account``."""
        ...


class EndpointDirectory:
    """Maps URL endpoint names to balance-store accounts.

    With ``names=None`` every name matching :data:`ENDPOINT_NAME` is an endpoint of its
    own; otherwise only the listed ones (plus ``default``) exist.
    """

    def __init__(self, names: Collection[str] | None = None, prefix: str = "endpoint:") -> None:
        self.names = None if names is None else frozenset(names) | {"default"}
        self.prefix = prefix

    def account(self, name: str) -> str | None:
        """The account of endpoint ``name``, or None when there is no such endpoint."""
        if not ENDPOINT_NAME.fullmatch(name):
            return None
        if self.names is not None and name not in self.names:
            return None
        return self.prefix + name


async def spsp_reply(
    issuer: SpspIssuer,
    account: str | None,
    accept: str | None,
    *,
    maximum: int | None = None,
) -> HttpReply:
    """The HTTP reply to an SPSP query for ``account`` (None: unknown endpoint)."""
    if account is None:
        return json_reply(404, invalid_receiver_body())
    media_type = negotiate_spsp(accept)
    if media_type is None:
        return json_reply(406, not_acceptable_body())
    response = await issuer.spsp_response(account, maximum=maximum)
    return json_reply(
        200,
        response.to_json(),
        content_type=SPSP_MEDIA_TYPE,
        headers={"Cache-Control": f"max-age={issuer.spsp_max_age}", "Vary": "Accept"},
    )
