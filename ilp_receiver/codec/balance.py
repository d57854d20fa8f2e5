"""il-balance (``peer.balance``): ask a peer for the bilateral balance (spec
``05-peer-protocols.md``, section "il-balance"; open question 20).

The only source is one sentence of interledger/rfcs PR 382 (``0000-server-roles.md``):
the request is an ILP Prepare to ``peer.balance`` and the peer responds with the
balance "as a signed Int64 in the fulfillment data", positive values meaning the
balance is in the requester's favour.  No implementation exists to test against.

ASSUMPTIONS (inferred, labelled as the spec asks; vectors ``il-balance.json``):

* ASSUMPTION: the request otherwise looks like IL-DCP -- amount 0, peer-protocol
  condition, empty data, short expiry -- and the server applies the same three checks.
* ASSUMPTION: the response is an ILP Fulfill with the 32-zero-byte fulfillment and data
  of exactly 8 bytes, big-endian two's-complement Int64 (OER fixed-size Int64 per
  RFC 30); any other data length is a DecodeError.
* ASSUMPTION: the unit is the base unit (asset scale) of the bilateral account.
* A peer that does not support it answers a Reject (a connector gives F01 "unknown peer
  protocol.").
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Final

from ..errors import DecodeError, EncodeError
from .ildcp import check_peer_request
from .ilp import PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT, IlpFulfill, IlpPrepare

__all__ = [
    "BALANCE_DESTINATION",
    "MAX_INT64",
    "MIN_INT64",
    "balance_fulfill",
    "balance_request",
    "check_balance_request",
    "decode_balance",
    "decode_balance_fulfill",
    "encode_balance",
]

#: "Request: an ILP Prepare whose destination is ``peer.balance``."
BALANCE_DESTINATION: Final = "peer.balance"
MIN_INT64: Final = -(1 << 63)
MAX_INT64: Final = (1 << 63) - 1

_I64: Final = struct.Struct(">q")


def balance_request(expires_at: datetime) -> IlpPrepare:
    """The il-balance request (ASSUMPTION: shaped like IL-DCP's)."""
    return IlpPrepare(0, expires_at, PEER_PROTOCOL_CONDITION, BALANCE_DESTINATION, b"")


def check_balance_request(prepare: IlpPrepare, now: datetime) -> None:
    """Server side (ASSUMPTION: IL-DCP's checks): destination exactly ``peer.balance``,
    peer-protocol condition, not expired.  Raises PeerProtocolRequestError (F00).
    """
    check_peer_request(
        prepare,
        destination=BALANCE_DESTINATION,
        now=now,
        not_this_protocol="packet is not an il-balance request.",
        expired="il-balance request packet is expired.",
    )


def encode_balance(balance: int) -> bytes:
    """8 bytes big-endian two's complement; EncodeError outside Int64."""
    if type(balance) is not int or not MIN_INT64 <= balance <= MAX_INT64:
        raise EncodeError(f"balance must be an Int64 ({MIN_INT64}..{MAX_INT64}), got {balance!r}")
    return _I64.pack(balance)


def decode_balance(data: bytes) -> int:
    """The signed balance in Fulfill data (ASSUMPTION: exactly 8 bytes)."""
    if len(data) != 8:
        raise DecodeError(f"il-balance data must be exactly 8 bytes, got {len(data)}", 0)
    return int(_I64.unpack(data)[0])


def balance_fulfill(balance: int) -> IlpFulfill:
    """The server's answer: zero fulfillment, data = the Int64 balance."""
    return IlpFulfill(PEER_PROTOCOL_FULFILLMENT, encode_balance(balance))


def decode_balance_fulfill(fulfill: IlpFulfill) -> int:
    """Parse the answer; DecodeError if the fulfillment is not all zeros or the data
    is not 8 bytes.  Positive means "in the requester's favour".
    """
    if fulfill.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise DecodeError("il-balance response does not contain the expected fulfillment.", 0)
    return decode_balance(fulfill.data)
