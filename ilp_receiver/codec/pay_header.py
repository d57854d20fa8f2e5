"""HTTP-ILP headers: ``Pay``, ``Pay-Token`` and ``Pay-Balance`` (spec ``08-http-ilp.md``).

Implements the header syntax of HTTP-ILP draft 3 (interledger/rfcs ``0014-http-ilp``,
Jan 2018) as koa-ilp and superagent-ilp wrote and read it, plus the legacy forms the
reference client still understood:

* ``Pay`` (server -> client), draft 3::

      interledger-psk2 <destination ILP address> <shared secret, standard base64> [<price>]

  Draft 2 (PSK1) put the amount first: ``interledger-psk <amount> <address> <secret>``,
  and the very first koa-ilp versions sent no method at all (``<amount> <address>
  <secret>``).  "superagent-ilp treats a first word that contains no letters as an
  amount and assumes the legacy method" -- so do we (:data:`PSK1_METHOD`).
* ``Pay`` over STREAM (HTTP-ILP as STREAM-era clients speak it; not in spec
  ``08-http-ilp.md``, which stops at PSK2)::

      interledger-stream <destination ILP address> <shared secret, standard base64>

  :data:`STREAM_METHOD`: the destination and secret are a STREAM server's (spec
  ``12-stream.md`` §2, the same pair SPSP v4 hands out); there is no price -- the
  server states it as the stream's receive limit (``StreamMaxMoney``).  **Choice:** a
  trailing price is tolerated when parsing (as for PSK2) but never written, and the
  secret must decode to 32 bytes in either base64 alphabet ("Clients SHOULD also
  accept base64url", SPSP v4).
* ``Pay-Token`` (client -> server): "base64url (no padding) of 16 random bytes in the
  reference client".  **Choice:** the token must be exactly 22 canonical base64url
  characters decoding to exactly 16 bytes, because the token is bound to a payment
  through 16 bytes (PSK2 draft 1: the paymentId; draft 2: ``data[0:16]``).  Draft 3's
  suggested HMAC-SHA256 token (32 bytes) could never be credited, so it is refused
  with a :class:`~ilp_receiver.errors.DecodeError` that says so.
* ``Pay-Balance`` (server -> client): "decimal integer: the token's remaining balance
  after this request".  **Choice:** non-negative, UInt64 range.  koa-ilp only deducts
  when the balance covers the price and deletes balances at or below zero, so it never
  emits a negative value (the vectors show ``0`` and ``90``).

Parsers raise only :class:`~ilp_receiver.errors.DecodeError` (``offset`` is a character
index into the header value); formatters refuse bad values with
:class:`~ilp_receiver.errors.EncodeError`.  The shared-secret and decimal helpers here
are also used by :mod:`ilp_receiver.spsp`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Final

from ..errors import DecodeError, EncodeError
from .address import is_valid_address
from .oer import MAX_UINT64, check_uint64

__all__ = [
    "PAY_TOKEN_LENGTH",
    "PSK1_METHOD",
    "PSK2_METHOD",
    "PSK2_SECRET_LENGTH",
    "STREAM_METHOD",
    "STREAM_SECRET_LENGTH",
    "PayHeader",
    "decode_base64_secret",
    "format_pay_balance",
    "format_pay_header",
    "format_pay_token",
    "parse_decimal_uint64",
    "parse_pay_balance",
    "parse_pay_header",
    "parse_pay_token",
]

#: "``<method>`` is the payment method identifier ``interledger-psk2`` (draft 3)."
PSK2_METHOD: Final = "interledger-psk2"
#: Draft 2 (PSK1): ``interledger-psk <amount> <address> <secret>``.
PSK1_METHOD: Final = "interledger-psk"
#: PSK2 shared secrets are 32 bytes.
PSK2_SECRET_LENGTH: Final = 32
#: HTTP-ILP over STREAM: ``interledger-stream <address> <secret>``.
STREAM_METHOD: Final = "interledger-stream"
#: STREAM shared secrets are 32 bytes (SPSP v4 ``shared_secret``).
STREAM_SECRET_LENGTH: Final = 32
#: "base64url (no padding) of 16 random bytes in the reference client".
PAY_TOKEN_LENGTH: Final = 16

_MAX_UINT64_DIGITS: Final = len(str(MAX_UINT64))
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_B64_RE: Final = re.compile(r"[A-Za-z0-9+/_-]*")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")


def _first_outside(alphabet: re.Pattern[str], text: str) -> int:
    """Index of the first character of ``text`` outside ``alphabet`` (a ``[...]*``
    pattern): where its longest match from the start ends (one pass, in C)."""
    match = alphabet.match(text)
    return 0 if match is None else match.end()


_LETTER_RE: Final = re.compile(r"[A-Za-z]")
_WORD_RE: Final = re.compile(r"[^ \t]+")


def parse_decimal_uint64(text: str, what: str = "amount", offset: int = 0) -> int:
    """``text`` as an unsigned decimal integer in 0..2**64-1, else DecodeError.

    Only ASCII digits are allowed (no sign, no spaces, no ``_``); leading zeros are
    tolerated.  ``offset`` is added to the error position.
    """
    if not text:
        raise DecodeError(f"{what} is empty", offset)
    if _DIGITS_RE.fullmatch(text) is None:
        bad = next(i for i, c in enumerate(text) if c not in "0123456789")
        raise DecodeError(f"{what} must be a decimal integer, got {text[:40]!r}", offset + bad)
    stripped = text.lstrip("0") or "0"
    if len(stripped) > _MAX_UINT64_DIGITS or int(stripped) > MAX_UINT64:
        raise DecodeError(f"{what} {text[:40]} is larger than {MAX_UINT64}", offset)
    return int(stripped)


def decode_base64_secret(
    text: str, length: int | None = PSK2_SECRET_LENGTH, what: str = "shared secret"
) -> bytes:
    """Decode a base64 secret in either alphabet, padded or not; DecodeError otherwise.

    "Decoders should accept either alphabet and optional padding" (07-spsp, SPSP
    response).  If ``length`` is given the decoded value must have exactly that many
    bytes.  Non-zero trailing bits are tolerated, as Node's ``Buffer.from(s,
    'base64')`` does.
    """
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if not text:
        raise DecodeError(f"{what} is empty")
    if _B64_RE.fullmatch(body) is None:
        bad = _first_outside(_B64_RE, body)
        raise DecodeError(f"{what} contains {body[bad]!r}, not a base64 character", bad)
    if len(body) % 4 == 1:
        raise DecodeError(f"{what} has an impossible base64 length {len(body)}", len(body))
    if pad and (pad > 2 or len(text) % 4 != 0):
        raise DecodeError(f"{what} has bad base64 padding", len(body))
    normalized = body.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except binascii.Error as exc:  # pragma: no cover - excluded by the checks above
        raise DecodeError(f"{what} is not base64: {exc}") from exc
    if length is not None and len(raw) != length:
        raise DecodeError(f"{what} must decode to {length} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class PayHeader:
    """One ``Pay`` header: how to pay the server for this request.

    ``method`` is :data:`PSK2_METHOD` (draft 3), :data:`PSK1_METHOD` (draft 2/legacy) or
    :data:`STREAM_METHOD`; ``price`` is "the cost of this request in the base unit of
    the server's ledger" -- ``None`` when omitted ("the client streams money instead of
    paying a fixed amount"; PSK1 headers always carry it, STREAM headers never do: the
    stream's receive limit states it).  The secret is kept out of ``repr``.
    """

    method: str
    destination: str
    shared_secret: bytes = field(repr=False)
    price: int | None = None


def format_pay_header(header: PayHeader) -> str:
    """The ``Pay`` header value for ``header`` (single spaces, as koa-ilp writes it).

    PSK2: ``interledger-psk2 <address> <standard base64 with padding> [<price>]``.
    PSK1: ``interledger-psk <amount> <address> <base64url secret>`` (the PSK1 module
    wrote its secrets base64url without padding).  STREAM: ``interledger-stream
    <address> <standard base64 with padding>`` (a price is refused: the stream's
    receive limit states it).
    """
    if not is_valid_address(header.destination):
        raise EncodeError(f"Pay destination is not an ILP address: {header.destination!r}")
    if header.price is not None:
        check_uint64(header.price, "Pay price")
    if header.method == PSK2_METHOD:
        if len(header.shared_secret) != PSK2_SECRET_LENGTH:
            raise EncodeError(f"a PSK2 shared secret must be {PSK2_SECRET_LENGTH} bytes")
        secret = base64.b64encode(header.shared_secret).decode("ascii")
        out = f"{PSK2_METHOD} {header.destination} {secret}"
        return out if header.price is None else f"{out} {header.price}"
    if header.method == PSK1_METHOD:
        if header.price is None:
            raise EncodeError("an interledger-psk Pay header needs an amount")
        if not header.shared_secret:
            raise EncodeError("the shared secret is empty")
        secret = base64.urlsafe_b64encode(header.shared_secret).decode("ascii").rstrip("=")
        return f"{PSK1_METHOD} {header.price} {header.destination} {secret}"
    if header.method == STREAM_METHOD:
        if header.price is not None:
            raise EncodeError("an interledger-stream Pay header carries no price")
        if len(header.shared_secret) != STREAM_SECRET_LENGTH:
            raise EncodeError(f"a STREAM shared secret must be {STREAM_SECRET_LENGTH} bytes")
        secret = base64.b64encode(header.shared_secret).decode("ascii")
        return f"{STREAM_METHOD} {header.destination} {secret}"
    raise EncodeError(f"unsupported Pay method {header.method!r}")


def parse_pay_header(value: str) -> PayHeader:
    """Parse a ``Pay`` header value of either generation; DecodeError on anything else.

    Words are separated by spaces (runs of spaces or tabs are tolerated, surrounding
    whitespace ignored).  "superagent-ilp treats a first word that contains no letters
    as an amount and assumes the legacy method."  ``interledger-stream`` headers are
    ``<method> <address> <secret>`` (a trailing price is tolerated and kept).  Unknown
    methods are refused.
    """
    words: list[tuple[int, str]] = [(m.start(), m.group()) for m in _WORD_RE.finditer(value)]
    if not words:
        raise DecodeError("Pay header is empty")
    first_pos, first = words[0]
    if _LETTER_RE.search(first) is None:
        method, params = PSK1_METHOD, words
    else:
        method, params = first, words[1:]
    if method in (PSK2_METHOD, STREAM_METHOD):
        if len(params) not in (2, 3):
            raise DecodeError(
                f"{method} Pay header must be '<method> <address> <secret> [<price>]'",
                first_pos,
            )
        (addr_pos, destination), (secret_pos, secret_text) = params[0], params[1]
        price = None
        if len(params) == 3:
            price = parse_decimal_uint64(params[2][1], "Pay price", params[2][0])
        secret_len: int | None = (
            PSK2_SECRET_LENGTH if method == PSK2_METHOD else STREAM_SECRET_LENGTH
        )
    elif method == PSK1_METHOD:
        if len(params) != 3:
            raise DecodeError(
                "interledger-psk Pay header must be '[<method>] <amount> <address> <secret>'",
                first_pos,
            )
        price = parse_decimal_uint64(params[0][1], "Pay amount", params[0][0])
        (addr_pos, destination), (secret_pos, secret_text) = params[1], params[2]
        secret_len = None
    else:
        raise DecodeError(f"unsupported payment method in Pay header: {method[:40]!r}", first_pos)
    if not is_valid_address(destination):
        raise DecodeError(f"Pay destination is not an ILP address: {destination[:60]!r}", addr_pos)
    try:
        secret = decode_base64_secret(secret_text, secret_len, "Pay shared secret")
    except DecodeError as exc:
        raise DecodeError(exc.reason, secret_pos + exc.offset) from None
    return PayHeader(method, destination, secret, price)


def format_pay_token(token: bytes) -> str:
    """The ``Pay-Token`` value: base64url without padding of the 16-byte token."""
    if len(token) != PAY_TOKEN_LENGTH:
        raise EncodeError(f"a Pay-Token must be {PAY_TOKEN_LENGTH} bytes, got {len(token)}")
    return base64.urlsafe_b64encode(bytes(token)).decode("ascii").rstrip("=")


def parse_pay_token(value: str) -> bytes:
    """The 16 token bytes of a ``Pay-Token`` value; DecodeError unless it is exactly that.

    Accepted: the 22-character canonical base64url form the reference client sends (no
    padding, zero trailing bits), optionally surrounded by spaces/tabs.  The token must
    be 16 bytes because the server binds it to a payment through 16 bytes (PSK2 draft 1
    paymentId, draft 2 request-data prefix).
    """
    text = value.strip(" \t")
    start = value.find(text) if text else 0
    if not text:
        raise DecodeError("Pay-Token is empty")
    if _B64URL_RE.fullmatch(text) is None:
        bad = _first_outside(_B64URL_RE, text)
        raise DecodeError(
            f"Pay-Token must be base64url without padding; found {text[bad]!r}", start + bad
        )
    try:
        raw = decode_base64_secret(text, None, "Pay-Token")
    except DecodeError as exc:
        raise DecodeError(exc.reason, start + exc.offset) from None
    if len(raw) != PAY_TOKEN_LENGTH:
        raise DecodeError(
            f"Pay-Token must decode to {PAY_TOKEN_LENGTH} bytes (it names a PSK2 payment "
            f"id / request-data prefix), got {len(raw)}",
            start,
        )
    if format_pay_token(raw) != text:
        raise DecodeError("Pay-Token is not canonical base64url (non-zero trailing bits)", start)
    return raw


def format_pay_balance(balance: int) -> str:
    """The ``Pay-Balance`` value: a decimal integer in 0..2**64-1."""
    return str(check_uint64(balance, "Pay-Balance"))


def parse_pay_balance(value: str) -> int:
    """A ``Pay-Balance`` value as an int (surrounding spaces/tabs ignored); DecodeError."""
    text = value.strip(" \t")
    start = value.find(text) if text else 0
    return parse_decimal_uint64(text, "Pay-Balance", start)
