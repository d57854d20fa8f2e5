"""The SPSP endpoint, framework-neutral: one payment pointer for STREAM and PSK2.

* ``Accept`` that allows ``application/spsp4+json`` (a STREAM client, ``*/*``,
  ``application/json`` or no ``Accept``) -> 200 ``application/spsp4+json`` with a fresh
  STREAM destination and shared secret, ``receipts_enabled``, ``balance``, ``asset_info``
  and ``receiver_info`` (``12-stream.md`` §14);
* ``Accept: application/spsp+json`` alone (a PSK2 client) -> 200 ``application/spsp+json``
  with a PSK2 destination and secret, ``balance``, ``asset_info``/``ledger_info``,
  ``receiver_info`` -- "never a STREAM secret" (§14; the rule is
  :func:`~ilp_receiver.spsp.negotiate_setup`);
* ``Receipt-Nonce`` and ``Receipt-Secret`` (base64 of 16 and 32 bytes, RFC 39) switch
  STREAM receipts on for that destination; malformed ones -> 400;
* every answer carries ``Cache-Control``, ``Vary: Accept`` and
  ``Access-Control-Allow-Origin: *`` ("SHOULD, since 2020-05"); ``OPTIONS`` -> 204 with
  the CORS headers (for script polyfills);
* an unknown endpoint -> 404 ``{"id": "InvalidReceiverError", ...}``;
* an ``Accept`` we cannot serve -> 406 with a JSON body naming what we serve.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Protocol

from ..codec.pay_header import decode_base64_secret
from ..errors import DecodeError
from ..http_reply import HttpReply, json_reply
from ..spsp import (
    ENDPOINT_NAME,
    SPSP4_MEDIA_TYPE,
    SPSP_MEDIA_TYPE,
    SetupProtocol,
    SpspResponse,
    invalid_receiver_body,
    negotiate_setup,
    not_acceptable_body,
)

__all__ = [
    "CORS_HEADERS",
    "EndpointDirectory",
    "SpspIssuer",
    "preflight_reply",
    "receipt_fields",
    "spsp_reply",
]

#: RFC 9 (2020-05): "Access-Control-Allow-Origin: * (SHOULD ...; also on OPTIONS)".
CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Accept, Receipt-Nonce, Receipt-Secret, Web-Monetization-Id",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Max-Age": "600",
}
#: RFC 39: the receipt nonce is 16 bytes, the receipt secret 32.
RECEIPT_NONCE_LENGTH: Final = 16
RECEIPT_SECRET_LENGTH: Final = 32


class SpspIssuer(Protocol):
    """What the endpoint needs from a receiver."""

    spsp_max_age: int
    #: whether STREAM (SPSP v4) is served beside PSK2
    stream_enabled: bool

    async def spsp_response(
        self,
        account: str,
        *,
        maximum: int | None = None,
        protocol: SetupProtocol = "psk2",
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> SpspResponse:
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


def preflight_reply() -> HttpReply:
    """The answer to an ``OPTIONS`` request on a payment pointer: 204 with the CORS
    headers (script polyfills of Web Monetization query SPSP from the page)."""
    return HttpReply(204, dict(CORS_HEADERS))


def receipt_fields(
    nonce_header: str | None, secret_header: str | None
) -> tuple[bytes | None, bytes | None] | str:
    """The RFC 39 receipt nonce and secret from the ``Receipt-Nonce`` /
    ``Receipt-Secret`` request headers (both None when neither is sent), or why they
    are bad (a text for a 400)."""
    if nonce_header is None and secret_header is None:
        return None, None
    if nonce_header is None or secret_header is None:
        return "Receipt-Nonce and Receipt-Secret must be sent together"
    try:
        nonce = decode_base64_secret(nonce_header, RECEIPT_NONCE_LENGTH, "Receipt-Nonce")
        secret = decode_base64_secret(secret_header, RECEIPT_SECRET_LENGTH, "Receipt-Secret")
    except DecodeError as exc:
        return exc.reason
    return nonce, secret


async def spsp_reply(
    issuer: SpspIssuer,
    account: str | None,
    accept: str | None,
    *,
    maximum: int | None = None,
    method: str = "GET",
    receipt_nonce: str | None = None,
    receipt_secret: str | None = None,
) -> HttpReply:
    """The HTTP reply to an SPSP query for ``account`` (None: unknown endpoint).

    ``receipt_nonce`` / ``receipt_secret`` are the raw ``Receipt-Nonce`` /
    ``Receipt-Secret`` request headers (None when absent).
    """
    if method == "OPTIONS":
        return preflight_reply()
    if account is None:
        return json_reply(404, invalid_receiver_body(), headers=dict(CORS_HEADERS))
    media_type = negotiate_setup(accept, stream=issuer.stream_enabled)
    if media_type is None:
        offered = (SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE) if issuer.stream_enabled else None
        body = not_acceptable_body(offered) if offered else not_acceptable_body()
        return json_reply(406, body, headers=dict(CORS_HEADERS))
    protocol: SetupProtocol = "stream" if media_type == SPSP4_MEDIA_TYPE else "psk2"
    nonce: bytes | None = None
    secret: bytes | None = None
    if protocol == "stream":
        fields = receipt_fields(receipt_nonce, receipt_secret)
        if isinstance(fields, str):
            return json_reply(
                400, {"id": "InvalidReceiptError", "message": fields}, headers=dict(CORS_HEADERS)
            )
        nonce, secret = fields
    response = await issuer.spsp_response(
        account,
        maximum=maximum,
        protocol=protocol,
        receipt_nonce=nonce,
        receipt_secret=secret,
    )
    return json_reply(
        200,
        response.to_json(),
        content_type=response.media_type,
        headers={
            "Cache-Control": f"max-age={issuer.spsp_max_age}",
            "Vary": "Accept",
            **CORS_HEADERS,
        },
    )
