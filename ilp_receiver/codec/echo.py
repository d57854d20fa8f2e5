"""ILP echo / ping as ilp-connector v21.3.0 handles it (spec ``05-peer-protocols.md``,
section "Echo / ping"; ``src/controllers/echo.ts``).

A Prepare addressed exactly to the connector's own address with data::

    "ECHOECHOECHOECHO" (16 ASCII bytes) || UInt8 0 || var-octet-string sourceAddress

is answered by a *new* Prepare to ``sourceAddress`` with the same amount and condition,
``expiresAt`` reduced by ``minMessageWindow`` (default 1000 ms) and data
``"ECHOECHOECHOECHO" || UInt8 1``.  "Data shorter than 17 bytes, a wrong prefix, or
type != 0 -> F01": :func:`decode_echo_request` raises DecodeError in those cases (the
caller rejects with F01, the connector's InvalidPacketError).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Final

from ..errors import DecodeError, EncodeError
from .ilp import IlpPrepare
from .oer import Reader, encode_var_octets

__all__ = [
    "DEFAULT_MIN_MESSAGE_WINDOW",
    "ECHO_DATA_PREFIX",
    "ECHO_RESPONSE_DATA",
    "MINIMUM_ECHO_PACKET_DATA_LENGTH",
    "EchoRequest",
    "EchoResponse",
    "EchoType",
    "decode_echo_data",
    "decode_echo_request",
    "echo_reply_prepare",
    "echo_request_prepare",
    "encode_echo_data",
    "encode_echo_request",
    "is_echo_response",
]

ECHO_DATA_PREFIX: Final = b"ECHOECHOECHOECHO"
MINIMUM_ECHO_PACKET_DATA_LENGTH: Final = 16 + 1
#: ilp-connector's ``minMessageWindow`` default.
DEFAULT_MIN_MESSAGE_WINDOW: Final = timedelta(milliseconds=1000)


class EchoType(IntEnum):
    """The byte after the prefix."""

    REQUEST = 0
    RESPONSE = 1


ECHO_RESPONSE_DATA: Final = ECHO_DATA_PREFIX + bytes((EchoType.RESPONSE,))


@dataclass(frozen=True, slots=True)
class EchoRequest:
    """Type 0: "please send a Prepare back to ``source_address``"."""

    source_address: str


@dataclass(frozen=True, slots=True)
class EchoResponse:
    """Type 1: the Prepare the connector sends back (no fields)."""


def encode_echo_request(source_address: str) -> bytes:
    """``ECHOECHOECHOECHO || 00 || var-octet-string(source_address ASCII)``."""
    try:
        raw = source_address.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"sourceAddress must be ASCII, got {source_address!r}") from None
    return ECHO_DATA_PREFIX + b"\x00" + encode_var_octets(raw)


def encode_echo_data(message: EchoRequest | EchoResponse) -> bytes:
    """Encode either echo message."""
    if isinstance(message, EchoRequest):
        return encode_echo_request(message.source_address)
    if isinstance(message, EchoResponse):
        return ECHO_RESPONSE_DATA
    raise EncodeError(f"not an echo message: {message!r}")


def _check_prefix(data: bytes) -> None:
    if len(data) < MINIMUM_ECHO_PACKET_DATA_LENGTH:
        raise DecodeError(f"packet data too short for echo request. length={len(data)}", len(data))
    if data[:16] != ECHO_DATA_PREFIX:
        raise DecodeError("packet data does not start with ECHO prefix.", 0)


def decode_echo_data(data: bytes) -> EchoRequest | EchoResponse:
    """Either echo message; DecodeError for short data, a wrong prefix or a type other
    than 0 and 1.  Trailing bytes are ignored, as the connector's reader does.
    """
    data = bytes(data)
    _check_prefix(data)
    echo_type = data[16]
    if echo_type == EchoType.RESPONSE:
        return EchoResponse()
    if echo_type != EchoType.REQUEST:
        raise DecodeError(f"unknown echo type {echo_type}", 16)
    reader = Reader(data)
    reader.pos = 17
    return EchoRequest(reader.read_ascii("sourceAddress"))


def decode_echo_request(data: bytes) -> EchoRequest:
    """Connector side: the request, or DecodeError (reject with F01) for data shorter
    than 17 bytes, a wrong prefix, or type != 0 (``"unexpected ping response."``).
    """
    message = decode_echo_data(data)
    if not isinstance(message, EchoRequest):
        raise DecodeError("unexpected ping response.", 16)
    return message


def is_echo_response(data: bytes) -> bool:
    """Whether ``data`` is the returning echo (``ECHOECHOECHOECHO || 01``)."""
    return bytes(data[:17]) == ECHO_RESPONSE_DATA


def echo_request_prepare(
    *,
    destination: str,
    source_address: str,
    amount: int,
    execution_condition: bytes,
    expires_at: datetime,
) -> IlpPrepare:
    """A ping: a Prepare to the connector's own address asking to be echoed back."""
    return IlpPrepare(
        amount, expires_at, execution_condition, destination, encode_echo_request(source_address)
    )


def echo_reply_prepare(
    request: IlpPrepare, *, min_message_window: timedelta = DEFAULT_MIN_MESSAGE_WINDOW
) -> IlpPrepare:
    """The Prepare a connector sends back for an echo request: same amount and
    condition, ``expiresAt - min_message_window``, to the request's source address.

    Raises DecodeError (F01) if ``request.data`` is not an echo request.
    """
    source = decode_echo_request(request.data).source_address
    return IlpPrepare(
        request.amount,
        request.expires_at - min_message_window,
        request.execution_condition,
        source,
        ECHO_RESPONSE_DATA,
    )
