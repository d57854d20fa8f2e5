"""IL-DCP, the Interledger Dynamic Configuration Protocol (spec ``05-peer-protocols.md``,
section "IL-DCP (``peer.config``)").

Follows interledgerjs/ilp-protocol-ildcp 1.0.0 (the module ilp-connector 21.3.0 uses);
rfcs 0031 describes the same bytes.  A child asks its parent for its ILP address and
the account's asset with an ILP Prepare to ``peer.config``; the parent answers with an
ILP Fulfill (32 zero bytes) whose data is::

    var-octet-string  clientAddress   (ASCII)
    UInt8             assetScale
    var-octet-string  assetCode       (UTF-8)

Also home of the checks every ``peer.*`` request gets in the reference code
(:func:`check_peer_request`), shared by :mod:`.ccp` and :mod:`.balance`.  Failures raise
:class:`PeerProtocolRequestError`, an :class:`~ilp_receiver.errors.IlpError` with code
F00 ("Failure: ILP Reject, code F00 in the reference server (any parse problem: wrong
destination, wrong condition, expired)").

Pure functions: the current time is a parameter, nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ..errors import DecodeError, EncodeError, IlpError, RemoteProtocolError
from .ilp import (
    PEER_PROTOCOL_CONDITION,
    PEER_PROTOCOL_FULFILLMENT,
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
)
from .oer import Reader, encode_var_octets

__all__ = [
    "ILDCP_DESTINATION",
    "PEER_PROTOCOL_EXPIRY",
    "IldcpResponse",
    "PeerProtocolRequestError",
    "check_ildcp_request",
    "check_peer_request",
    "decode_ildcp_fulfill",
    "decode_ildcp_response",
    "encode_ildcp_response",
    "ildcp_fulfill",
    "ildcp_request",
    "ildcp_result",
    "ildcp_serve",
]

#: "destination exactly ``peer.config``"
ILDCP_DESTINATION: Final = "peer.config"
#: The reference requester uses ``expiresAt = now + 60 s`` for every peer protocol.
PEER_PROTOCOL_EXPIRY: Final = timedelta(seconds=60)

_WRONG_CONDITION: Final = "packet does not contain correct condition for a peer protocol request."


class PeerProtocolRequestError(IlpError):
    """A ``peer.*`` request failed the reference checks; becomes an ILP Reject F00.

    ``message`` is the reference implementation's text (e.g. ``"IL-DCP request packet
    is expired."``), suitable for the Reject's message field.
    """

    def __init__(self, message: str) -> None:
        super().__init__("F00", message)


def check_peer_request(
    prepare: IlpPrepare,
    *,
    destination: str,
    now: datetime,
    not_this_protocol: str,
    expired: str,
) -> None:
    """The three checks the reference applies to a peer-protocol request, in its order.

    ``not_this_protocol`` and ``expired`` are the messages for the first and last
    failure.  Raises :class:`PeerProtocolRequestError` (F00).
    """
    if prepare.destination != destination:
        raise PeerProtocolRequestError(not_this_protocol)
    if prepare.execution_condition != PEER_PROTOCOL_CONDITION:
        raise PeerProtocolRequestError(_WRONG_CONDITION)
    # Reference: ``if (Date.now() > Number(ilp.expiresAt)) throw ...`` (equal is fine).
    if now > prepare.expires_at:
        raise PeerProtocolRequestError(expired)


@dataclass(frozen=True, slots=True)
class IldcpResponse:
    """What IL-DCP tells a child: its ILP address and the account's asset."""

    client_address: str
    asset_scale: int
    asset_code: str


def ildcp_request(expires_at: datetime) -> IlpPrepare:
    """The IL-DCP request: amount 0, peer-protocol condition, ``peer.config``, no data.

    The reference uses ``expires_at = now + PEER_PROTOCOL_EXPIRY``.
    """
    return IlpPrepare(0, expires_at, PEER_PROTOCOL_CONDITION, ILDCP_DESTINATION, b"")


def check_ildcp_request(prepare: IlpPrepare, now: datetime) -> None:
    """Server side: "destination exactly ``peer.config``; condition equal to the
    peer-protocol condition; ``expiresAt`` not in the past" (data is ignored).

    Raises :class:`PeerProtocolRequestError` (F00) with the reference's message.
    """
    check_peer_request(
        prepare,
        destination=ILDCP_DESTINATION,
        now=now,
        not_this_protocol="packet is not an IL-DCP request.",
        expired="IL-DCP request packet is expired.",
    )


def encode_ildcp_response(response: IldcpResponse) -> bytes:
    """The Fulfill data: ASCII address, UInt8 scale, UTF-8 code."""
    try:
        address = response.client_address.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"clientAddress must be ASCII, got {response.client_address!r}") from None
    scale = response.asset_scale
    if type(scale) is not int or not 0 <= scale <= 0xFF:
        raise EncodeError(f"assetScale must be a UInt8, got {scale!r}")
    return (
        encode_var_octets(address)
        + bytes((scale,))
        + encode_var_octets(response.asset_code.encode("utf-8"))
    )


def decode_ildcp_response(data: bytes) -> IldcpResponse:
    """Parse Fulfill data; trailing bytes are ignored (RFC 30 extensibility)."""
    reader = Reader(data)
    client_address = reader.read_ascii("clientAddress")
    asset_scale = reader.read_uint8("assetScale")
    asset_code = reader.read_utf8("assetCode")
    return IldcpResponse(client_address, asset_scale, asset_code)


def ildcp_fulfill(response: IldcpResponse) -> IlpFulfill:
    """The server's answer: zero fulfillment plus the encoded response data."""
    return IlpFulfill(PEER_PROTOCOL_FULFILLMENT, encode_ildcp_response(response))


def decode_ildcp_fulfill(fulfill: IlpFulfill) -> IldcpResponse:
    """Parse an IL-DCP Fulfill; DecodeError if the fulfillment is not all zeros
    ("IL-DCP response does not contain the expected fulfillment.") or the data is bad.
    """
    if fulfill.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise DecodeError("IL-DCP response does not contain the expected fulfillment.", 0)
    return decode_ildcp_response(fulfill.data)


def ildcp_result(reply: IlpReply) -> IldcpResponse:
    """Client side: the IL-DCP answer, or RemoteProtocolError for a Reject.

    "A child receiving a Reject must fail its connect step" -- the error text is the
    reference's ``"IL-DCP failed: " + message``.  A bad Fulfill raises DecodeError.
    """
    if isinstance(reply, IlpReject):
        raise RemoteProtocolError(f"IL-DCP failed: {reply.message}")
    return decode_ildcp_fulfill(reply)


def ildcp_serve(
    request: IlpPrepare, response: IldcpResponse, *, server_address: str, now: datetime
) -> IlpFulfill | IlpReject:
    """Answer an IL-DCP request like ``ILDCP.serve()``: the Fulfill for ``response``,
    or ``Reject{F00, triggeredBy=server_address, message=<reason>}`` if a check fails.
    """
    try:
        check_ildcp_request(request, now)
    except PeerProtocolRequestError as exc:
        return IlpReject(exc.code, server_address, exc.message, b"")
    return ildcp_fulfill(response)
