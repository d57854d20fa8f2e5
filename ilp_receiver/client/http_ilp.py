"""HTTP-ILP client (asyncio): call paid HTTP APIs, paying on ``402`` (spec ``08-http-ilp.md``).

The flow of HTTP-ILP draft 3 as koa-ilp served it and superagent-ilp paid:

1. every request carries ``Pay-Token``: "base64url (no padding) of 16 random bytes in
   the reference client" -- one token per host, kept for the life of the client;
2. "The real request without enough balance -> **402 Payment Required** with ``Pay``
   and ``Pay-Balance`` headers";
3. "The client pays the server with PSK2 to the address/secret from ``Pay``, tagging
   the payment with its token ... superagent-ilp first sends an unfulfillable quote of
   1000 source units to learn the rate, then pays ``ceil(price / quotedDestAmount x
   1000)`` with minDestinationAmount = price";
4. "The client repeats the original request with the same ``Pay-Token``" -- once.

Binding the payment to the token, per PSK2 era:

* **draft 1** (default): "the 16-byte token *is* the PSK2 **paymentId**"; the quote uses
  sequence 0 and every payment a new sequence number from 1 up with chunk type 0,
  because "a client that ever sends type 1 under its token can no longer top that
  token up";
* **draft 2**: "the first 16 bytes of the PSK2 request **data** are the token" (the
  quote carries the token too: koa-ilp 1.1.1 rejects shorter data).

**Over STREAM** (``Pay: interledger-stream <destination> <secret>``, ``docs/paid-api.md``)
the client behaves as STREAM-era HTTP-ILP clients did: it opens a STREAM connection to
the destination (bound to its token by the server), opens a stream, raises its send
limit to ``max_price`` (:class:`~ilp_receiver.client.held_stream.HeldStreamPayment`),
waits until the server has sent at least one byte on that stream, repeats the request
with the same ``Pay-Token`` while the money is still flowing, and closes the stream when
the response arrives.  The server's receive limit on the stream (the price) stops the
money before ``max_price`` when the price is lower.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from math import ceil
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from ..codec.pay_header import (
    PAY_TOKEN_LENGTH,
    PSK2_METHOD,
    STREAM_METHOD,
    PayHeader,
    format_pay_token,
    parse_decimal_uint64,
    parse_pay_balance,
    parse_pay_header,
)
from ..errors import ConfigError, DecodeError, IlpReceiverError
from .held_stream import DEFAULT_READY_TIMEOUT, HeldStreamPayment
from .payer import AsyncPaymentClient
from .results import (
    PaymentError,
    PaymentResult,
    Psk2Destination,
    Psk2Draft,
    QuoteResult,
    StreamDestination,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "AsyncHttpIlpClient",
    "HttpIlpError",
    "HttpIlpResponse",
]

log = logging.getLogger(__name__)

#: Response bodies larger than this are refused (override with ``max_body``).
DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024
#: "superagent-ilp first sends an unfulfillable quote of 1000 source units".
QUOTE_SOURCE_AMOUNT: Final = 1000


class HttpIlpError(IlpReceiverError):
    """A paid request could not be paid for: unusable ``Pay`` header, price above the
    limit, or no rate.  ``response`` is the 402 response that asked for payment.

    Payment rejections raise :class:`~ilp_receiver.client.PaymentError` instead.
    """

    def __init__(self, message: str, response: HttpIlpResponse) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True, slots=True)
class HttpIlpResponse:
    """A fully read HTTP response plus what HTTP-ILP said and did.

    ``pay`` is the parsed ``Pay`` header and ``pay_balance`` the ``Pay-Balance`` ("the
    token's remaining balance after this request"), each None when absent or
    malformed.  ``payment``/``quote`` describe the payment made before this (retried)
    request, if one was made.
    """

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str
    pay: PayHeader | None = None
    pay_balance: int | None = None
    payment: PaymentResult | None = None
    quote: QuoteResult | None = None

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as text (undecodable bytes replaced)."""
        return self.body.decode(encoding, "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)


def _pay_headers(headers: Mapping[str, str]) -> tuple[PayHeader | None, int | None]:
    pay: PayHeader | None = None
    balance: int | None = None
    raw_pay = headers.get("Pay")
    if raw_pay is not None:
        try:
            pay = parse_pay_header(raw_pay)
        except DecodeError as exc:
            log.warning("ignoring a malformed Pay header: %s", exc)
    raw_balance = headers.get("Pay-Balance")
    if raw_balance is not None:
        try:
            balance = parse_pay_balance(raw_balance)
        except DecodeError as exc:
            log.warning("ignoring a malformed Pay-Balance header: %s", exc)
    return pay, balance


def _body_price(response: HttpIlpResponse) -> int | None:
    """The ``price`` a 402's JSON body states (this library's servers write one), or None."""
    try:
        body = jsonlib.loads(response.body)
    except ValueError:
        return None
    price = body.get("price") if isinstance(body, dict) else None
    if not isinstance(price, str | int) or isinstance(price, bool):
        return None
    try:
        return parse_decimal_uint64(str(price), "price")
    except DecodeError:
        return None


class AsyncHttpIlpClient:
    """Makes HTTP requests to HTTP-ILP paid APIs and pays on ``402``, through ``payer``.

    Speaks both ``Pay`` methods: ``interledger-psk2`` and ``interledger-stream`` (see the
    module docstring).  ``draft`` picks how a PSK2 payment is bound to the
    ``Pay-Token``.  ``max_price`` refuses (HttpIlpError) to pay a ``Pay`` price above
    it; over STREAM it is also the stream's send limit, in the uplink's units (a STREAM
    ``Pay`` header names no price: without ``max_price`` the price from the 402's JSON
    body is used, as this library's servers write it).  ``stream_ready_timeout``: how
    long to wait for the server's first byte on the stream before repeating the request
    anyway.  ``session`` is the aiohttp session for the requests (default: the
    payer's).
    """

    def __init__(
        self,
        payer: AsyncPaymentClient,
        *,
        draft: Psk2Draft = "draft1",
        max_price: int | None = None,
        quote_source_amount: int = QUOTE_SOURCE_AMOUNT,
        session: aiohttp.ClientSession | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        stream_ready_timeout: float = DEFAULT_READY_TIMEOUT,
    ) -> None:
        if draft not in ("draft1", "draft2"):
            raise ConfigError("draft", f"must be 'draft1' or 'draft2', got {draft!r}")
        self.payer = payer
        self.draft: Psk2Draft = draft
        self.max_price = max_price
        self.quote_source_amount = quote_source_amount
        self.max_body = max_body
        self.stream_ready_timeout = stream_ready_timeout
        self._session = session
        self._tokens: dict[str, bytes] = {}
        self._sequences: dict[bytes, int] = {}

    # ------------------------------------------------------------------ tokens

    @staticmethod
    def _host_key(url: str) -> str:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError("url", f"not an absolute http(s) URL: {url[:80]!r}")
        port = parts.port
        return parts.hostname.lower() if port is None else f"{parts.hostname.lower()}:{port}"

    def token_for(self, url: str) -> bytes:
        """The 16-byte ``Pay-Token`` this client uses for ``url``'s host (made on first use)."""
        key = self._host_key(url)
        token = self._tokens.get(key)
        if token is None:
            token = self._tokens[key] = os.urandom(PAY_TOKEN_LENGTH)
        return token

    def set_token(self, url: str, token: bytes) -> None:
        """Use ``token`` (16 bytes) for ``url``'s host, e.g. one restored from storage."""
        if len(token) != PAY_TOKEN_LENGTH:
            raise ConfigError("token", f"a Pay-Token is {PAY_TOKEN_LENGTH} bytes")
        self._tokens[self._host_key(url)] = bytes(token)

    def _next_sequence(self, token: bytes) -> int:
        # draft 1: sequence 0 is the quote, payments use 1, 2, ...
        sequence = self._sequences.get(token, 0) + 1
        self._sequences[token] = sequence
        return sequence

    # ------------------------------------------------------------------ HTTP

    async def _fetch(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        options: dict[str, Any],
    ) -> HttpIlpResponse:
        session = self._session or await self.payer.http_session()
        async with session.request(method, url, headers=headers, **options) as response:
            body = await response.content.read(self.max_body + 1)
            if len(body) > self.max_body:
                raise HttpIlpError(
                    f"response body larger than {self.max_body} bytes",
                    HttpIlpResponse(response.status, response.headers, b"", str(response.url)),
                )
            pay, balance = _pay_headers(response.headers)
            return HttpIlpResponse(
                response.status, response.headers, body, str(response.url), pay, balance
            )

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        pay: bool = True,
        **options: Any,
    ) -> HttpIlpResponse:
        """Make the request with our ``Pay-Token``; on 402 pay the ``Pay`` price, retry once.

        ``options`` go to :meth:`aiohttp.ClientSession.request` (``data``, ``json``,
        ``params``, ...); the body must be re-sendable (bytes, str, dict), since a paid
        request is sent twice.  With ``pay=False`` a 402 is returned as it is.  A 402
        without a ``Pay`` header is returned as it is too; one whose ``Pay`` has no
        price or another method, or a price above ``max_price``, raises
        :class:`HttpIlpError`; a failed payment raises
        :class:`~ilp_receiver.client.PaymentError`.  ``interledger-stream``: the
        request is repeated while the STREAM connection pays (see the module
        docstring); the response (200, or 402 again when the money did not cover the
        price in time) carries the STREAM ``payment``.
        """
        token = self.token_for(url)
        sent_headers: CIMultiDict[str] = CIMultiDict(headers or {})
        sent_headers["Pay-Token"] = format_pay_token(token)
        first = await self._fetch(method, url, sent_headers, options)
        if first.status != 402 or not pay or first.pay is None:
            return first
        if first.pay.method == STREAM_METHOD:
            return await self._request_over_stream(first, method, url, sent_headers, options)
        payment, quote = await self._pay(first, token)
        second = await self._fetch(method, url, sent_headers, options)
        return replace(second, payment=payment, quote=quote)

    async def get(self, url: str, **options: Any) -> HttpIlpResponse:
        """``request("GET", url, ...)``."""
        return await self.request("GET", url, **options)

    async def post(self, url: str, **options: Any) -> HttpIlpResponse:
        """``request("POST", url, ...)``."""
        return await self.request("POST", url, **options)

    async def put(self, url: str, **options: Any) -> HttpIlpResponse:
        """``request("PUT", url, ...)``."""
        return await self.request("PUT", url, **options)

    async def delete(self, url: str, **options: Any) -> HttpIlpResponse:
        """``request("DELETE", url, ...)``."""
        return await self.request("DELETE", url, **options)

    # ------------------------------------------------------------------ paying

    def _stream_send_max(self, response: HttpIlpResponse) -> int:
        """The send limit of a STREAM payment answering ``response`` (a 402)."""
        price = _body_price(response)
        limit = self.max_price
        if price is not None and limit is not None and price > limit:
            raise HttpIlpError(f"the server asks {price}, more than max_price {limit}", response)
        if limit is not None:
            return limit
        if price is None:
            raise HttpIlpError(
                "the interledger-stream Pay header names no price and the 402 body none "
                "either: set max_price (the most to send for one request)",
                response,
            )
        return price

    async def _request_over_stream(
        self,
        first: HttpIlpResponse,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        options: dict[str, Any],
    ) -> HttpIlpResponse:
        """Pay ``first``'s ``interledger-stream`` header while repeating the request."""
        pay = first.pay
        assert pay is not None
        send_max = self._stream_send_max(first)
        if send_max == 0:
            return first
        if self.payer.link is None:
            raise ConfigError("uplink", "this client has no uplink; it can only query SPSP")
        stream = HeldStreamPayment(
            self.payer.send,
            StreamDestination(pay.destination, pay.shared_secret),
            send_max,
            expiry=self.payer.expiry,
        )
        stream.start()
        try:
            # "waits until the server has sent at least one byte of data on that stream"
            await stream.ready(self.stream_ready_timeout)
            if stream.finished and stream.delivered == 0:
                await stream.finish()  # raises PaymentError when the connection failed
            second = await self._fetch(method, url, headers, options)
        except BaseException:
            await stream.abort()
            raise
        # "closes the stream when the response arrives"
        try:
            result = await stream.finish()
        except PaymentError as exc:
            log.warning("the STREAM connection failed after the request was repeated: %s", exc)
            result = exc.result
        return replace(second, payment=result)

    async def _pay(
        self, response: HttpIlpResponse, token: bytes
    ) -> tuple[PaymentResult | None, QuoteResult | None]:
        pay = response.pay
        assert pay is not None
        if pay.method != PSK2_METHOD:
            raise HttpIlpError(
                f"the server asks for {pay.method!r}; only {PSK2_METHOD!r} is supported",
                response,
            )
        if pay.price is None:
            raise HttpIlpError(
                "the Pay header names no price (streaming payment is not supported)", response
            )
        price = pay.price
        if self.max_price is not None and price > self.max_price:
            raise HttpIlpError(
                f"the server asks {price}, more than max_price {self.max_price}", response
            )
        if price == 0:
            return None, None
        return await self.pay_token(
            Psk2Destination(pay.destination, pay.shared_secret), token, price, response
        )

    async def pay_token(
        self,
        target: Psk2Destination,
        token: bytes,
        price: int,
        response: HttpIlpResponse | None = None,
    ) -> tuple[PaymentResult, QuoteResult]:
        """Credit ``price`` destination units to ``token`` at ``target``: quote, then pay.

        Pays ``ceil(price x quote_source_amount / quoted)`` source units with
        minimum destination amount ``price``, bound to the token per ``draft``.
        """
        draft = self.draft
        if draft == "draft1":
            quote = await self.payer.quote(
                target, self.quote_source_amount, draft="draft1", payment_id=token, sequence=0
            )
        else:
            quote = await self.payer.quote(
                target, self.quote_source_amount, draft="draft2", data=token
            )
        if quote.destination_amount <= 0:
            raise HttpIlpError(
                f"a quote of {self.quote_source_amount} delivers nothing; cannot pay",
                response
                or HttpIlpResponse(402, CIMultiDictProxy(CIMultiDict()), b"", target.destination),
            )
        source_amount = ceil(price * quote.source_amount / quote.destination_amount)
        if draft == "draft1":
            result = await self.payer.pay(
                target,
                source_amount,
                min_destination_amount=price,
                draft="draft1",
                payment_id=token,
                sequence=self._next_sequence(token),
                last_chunk=False,
            )
        else:
            result = await self.payer.pay(
                target, source_amount, min_destination_amount=price, draft="draft2", data=token
            )
        return result, quote
