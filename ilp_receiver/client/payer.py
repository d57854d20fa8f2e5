"""The paying client (asyncio): SPSP queries, PSK2 and STREAM payments over an uplink.

:class:`AsyncPaymentClient` ties the sans-I/O pieces to real I/O:

* payment pointers and SPSP (spec ``07-spsp-payment-pointers.md``): resolution
  ("``https://`` + host + path; if the path is empty or exactly ``/``, use
  ``/.well-known/pay``"), the query and a small cache ("clients honour
  ``max-age=<seconds>`` and ``no-cache``. A sender may reuse one response for many
  PSK2 payments until it expires");
* which protocol (``12-stream.md`` §14): ``protocol="auto"`` sends ``Accept:
  application/spsp4+json, application/spsp+json`` ("A STREAM client sends both
  types") and, like ilp-protocol-spsp 3.0.0, "decides by the **response**
  Content-Type" (:func:`~ilp_receiver.spsp.response_protocol`); ``"psk2"`` sends
  ``application/spsp+json`` alone ("The JS client sends exactly ``accept:
  application/spsp+json``"), ``"stream"`` ``application/spsp4+json`` alone.  STREAM
  responses are not cached: "Two simultaneous connections on one response would ...
  clash ... so clients query per concurrent connection";
* PSK2 payments (spec ``06-psk2.md``) over any :class:`~ilp_receiver.links.base.Link`
  (BTP, ILP over HTTP, in memory), with IL-DCP run on connect by
  :class:`~ilp_receiver.links.uplink.Uplink`: single payments in either draft, quotes
  (unfulfillable test payments) and draft-1 chunked payments;
* STREAM payments (``12-stream.md`` §10) with the sans-I/O
  :class:`~ilp_receiver.stream.sender.StreamSender`: rate probe, as many packets as the
  path's maximum packet amount needs, closing; quotes from the probe.

Random bytes (IVs, payment ids, request ids, quote conditions) are drawn from
``os.urandom`` here, at the I/O layer, and handed to the sans-I/O builders.  Prepares
expire after 30 s unless told otherwise (0.2.1: "default Prepare expiry = now + 30 s").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from math import floor
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from ..codec.ilp import IlpPrepare, IlpReply
from ..codec.oer import MAX_UINT64
from ..errors import ConfigError, IlpReceiverError, LinkError, LocalProtocolError, SpspError
from ..links.base import Link
from ..links.factory import open_link
from ..links.uplink import PeerConfig, Uplink, fetch_peer_config
from ..psk2.sender import DEFAULT_EXPIRY, DEFAULT_QUOTE_SOURCE_AMOUNT
from ..spsp import (
    SPSP4_MEDIA_TYPE,
    SPSP_MEDIA_TYPE,
    SpspResponse,
    max_age,
    parse_spsp_response,
    resolve_payment_pointer,
    response_protocol,
    spsp_query_headers,
)
from ..stream.sender import (
    DEFAULT_MAX_PACKETS,
    DEFAULT_PROBE_AMOUNTS,
    DEFAULT_SLIPPAGE,
    OutgoingPacket,
    StreamSender,
    StreamSendError,
)
from .chunked import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_RETRIES,
    ChunkedPayment,
)
from .results import (
    ChunkProgress,
    PaymentError,
    PaymentProtocol,
    PaymentResult,
    ProtocolChoice,
    Psk2Destination,
    Psk2Draft,
    QuoteError,
    QuoteResult,
    StreamDestination,
)
from .single import payment_outcome, payment_prepare, quote_outcome, quote_prepare

__all__ = [
    "DEFAULT_SPSP_CACHE_SIZE",
    "MAX_SPSP_BODY",
    "AsyncPaymentClient",
    "PaymentTarget",
    "ProgressCallback",
]

log = logging.getLogger(__name__)

#: How many SPSP responses the cache keeps.
DEFAULT_SPSP_CACHE_SIZE: Final = 128
#: Larger SPSP bodies are refused (a PSK2 SPSP response is a few hundred bytes).
MAX_SPSP_BODY: Final = 64 * 1024
_IV_BYTES: Final = 12
_ID_BYTES: Final = 16

#: What to pay: a payment pointer / SPSP URL (queried first), an SPSP response, or a
#: PSK2 or STREAM destination and secret.
PaymentTarget = str | SpspResponse | Psk2Destination | StreamDestination
#: Called (and awaited if it returns an awaitable) after every chunk's (PSK2) or money
#: packet's (STREAM) answer.
ProgressCallback = Callable[[ChunkProgress], "Awaitable[None] | None"]
#: What ``Accept`` each protocol choice sends (``12-stream.md`` §14).
_ACCEPT: Final[dict[str, tuple[str, ...]]] = {
    "auto": (SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE),
    "stream": (SPSP4_MEDIA_TYPE,),
    "psk2": (SPSP_MEDIA_TYPE,),
}
_PROTOCOLS: Final = ("auto", "stream", "psk2")


def _check_amount(value: int, name: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if type(value) is not int or not low <= value <= MAX_UINT64:
        raise ConfigError(name, f"must be an integer in {low}..{MAX_UINT64}, got {value!r}")
    return value


def _random_request_id() -> int:
    return int.from_bytes(os.urandom(4), "big")


def _single_payment_id(draft: Psk2Draft, payment_id: bytes | None) -> bytes:
    """A draft-1 payment id (``payment_id``, else random); draft 2 has none."""
    return (payment_id or os.urandom(_ID_BYTES)) if draft == "draft1" else b""


def _check_protocol(protocol: str) -> ProtocolChoice:
    if protocol not in _PROTOCOLS:
        raise ConfigError("protocol", f"must be 'auto', 'stream' or 'psk2', got {protocol!r}")
    return protocol  # type: ignore[return-value]


def _check_slippage(value: Fraction | float | str) -> Fraction:
    try:
        slippage = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ConfigError("slippage", f"must be a number, got {value!r}") from None
    if not 0 <= slippage < 1:
        raise ConfigError("slippage", "must be in [0, 1)")
    return slippage


def _stream_progress(sender: StreamSender) -> ChunkProgress:
    stats = sender.stats
    left = max(0, stats.target - stats.sent)
    size = left if stats.max_packet_amount is None else min(left, stats.max_packet_amount)
    return ChunkProgress(
        stats.sent,
        stats.delivered,
        stats.packets_fulfilled,
        stats.packets_rejected,
        size,
        stats.target,
        None,
        "stream",
    )


def _stream_result(target: StreamDestination, sender: StreamSender) -> PaymentResult:
    stats = sender.stats
    return PaymentResult(
        target.destination,
        stats.sent,
        stats.delivered,
        stats.packets_fulfilled,
        stats.packets_rejected,
        data=sender.read(),
        protocol="stream",
        exchange_rate=sender.probed_rate,
        prepares_sent=stats.prepares_sent,
        receipt=sender.receipt,
    )


def _stream_error(error: StreamSendError, result: PaymentResult) -> PaymentError:
    return PaymentError(
        f"STREAM payment failed: {error}",
        result=result,
        code=error.code,
        ilp_message=error.ilp_message,
        triggered_by=error.triggered_by,
        arrived=error.arrived,
    )


def _error_detail(body: bytes) -> str:
    """A short human description of an SPSP error body (its JSON ``message``/``id``)."""
    try:
        obj = json.loads(body)
    except ValueError:
        text = body[:200].decode("utf-8", "replace").strip()
        return f": {text}" if text else ""
    if isinstance(obj, dict):
        parts = [str(obj[k])[:200] for k in ("id", "message") if isinstance(obj.get(k), str)]
        if parts:
            return ": " + " - ".join(parts)
    return ""


def _tls_error(url: str, exc: Exception) -> SpspError:
    """The SpspError of a failed TLS handshake; for a loopback host it says how to use
    ``http://`` (a local server speaking plain HTTP answers TLS with garbage)."""
    message = f"SPSP query to {url} failed: {exc or type(exc).__name__}"
    host = (urlsplit(url).hostname or "").lower()
    loopback = host == "localhost" or host.endswith(".localhost")
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        return SpspError(message)
    return SpspError(
        f"{message}; if the server speaks plain HTTP, pass allow_http_for_loopback=True "
        "to use http:// for loopback pointers",
        option="allow_http_for_loopback",
    )


class AsyncPaymentClient:
    """Pays payment pointers over an uplink to a connector (asyncio API).

    ``uplink`` is an uplink URL for :func:`~ilp_receiver.links.open_link`
    (``btp+ws://user:token@host:port``, ``http+oer://...``), an existing
    :class:`~ilp_receiver.links.base.Link`, or None for a client that only queries SPSP.
    ``await client.start()`` (or ``async with``, or :meth:`connect`) connects it and
    learns its address by IL-DCP; pass ``static_config`` to skip IL-DCP.

    SPSP: ``lenient`` accepts pointers with a port or query on any host (as the JS
    client did; a port on a loopback host is always accepted);
    ``allow_http_for_loopback`` decides the scheme of loopback pointers: ``None``
    (default) resolves ``$127.0.0.1:8080`` / ``$localhost:8080`` (a port, as local
    servers print them) to ``http://``, ``True`` every loopback pointer, ``False``
    none (see :meth:`~ilp_receiver.spsp.PaymentPointer.endpoint`).  ``session`` is an
    aiohttp session to use (default: one of our own, closed by :meth:`close`).

    Protocol: ``protocol="auto"`` (default) pays with STREAM when the receiver's SPSP
    answer is STREAM (``application/spsp4+json``) and with PSK2 otherwise;
    ``"stream"`` or ``"psk2"`` use only that one (each method also takes
    ``protocol=`` per call).

    Payments: ``draft`` is the PSK2 format of single payments and quotes (``"draft1"``
    by default; chunked payments are always draft 1); ``expiry`` the Prepare lifetime.
    """

    def __init__(
        self,
        uplink: str | Link | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        lenient: bool = False,
        allow_http_for_loopback: bool | None = None,
        draft: Psk2Draft = "draft1",
        expiry: timedelta = DEFAULT_EXPIRY,
        static_config: PeerConfig | None = None,
        http_timeout: float = 30.0,
        spsp_cache_size: int = DEFAULT_SPSP_CACHE_SIZE,
        protocol: ProtocolChoice = "auto",
    ) -> None:
        if draft not in ("draft1", "draft2"):
            raise ConfigError("draft", f"must be 'draft1' or 'draft2', got {draft!r}")
        self.protocol: ProtocolChoice = _check_protocol(protocol)
        self._link: Link | None = open_link(uplink) if isinstance(uplink, str) else uplink
        self._uplink = (
            Uplink(self._link, static_config=static_config) if self._link is not None else None
        )
        self._static_config = static_config
        self._config: PeerConfig | None = static_config
        self._started_link = False
        self._session = session
        self._own_session = session is None
        self.lenient = lenient
        self.allow_http_for_loopback = allow_http_for_loopback
        self.draft: Psk2Draft = draft
        self.expiry = expiry
        self.http_timeout = http_timeout
        self._cache: OrderedDict[str, tuple[float, SpspResponse]] = OrderedDict()
        self._cache_size = spsp_cache_size

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def connect(cls, uplink: str | Link, **options: Any) -> AsyncPaymentClient:
        """Create a client on ``uplink`` and connect it (IL-DCP included)."""
        client = cls(uplink, **options)
        try:
            await client.start()
        except BaseException:
            await client.close()
            raise
        return client

    async def start(self) -> None:
        """Connect the uplink if it is not up yet and learn our address by IL-DCP."""
        if self._uplink is None or self._link is None:
            return
        if not self._link.is_connected:
            self._config = await self._uplink.start()
            self._started_link = True
        elif self._config is None:
            # someone else connected the link: ask the parent ourselves
            try:
                self._config = await fetch_peer_config(self._link)
            except IlpReceiverError as exc:
                log.debug("IL-DCP on an already connected link failed: %s", exc)

    async def close(self) -> None:
        """Disconnect the uplink (if this client connected it) and close our HTTP session."""
        if self._started_link and self._link is not None:
            self._started_link = False
            await self._link.stop()
        if self._session is not None and self._own_session:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> AsyncPaymentClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ facts

    @property
    def link(self) -> Link | None:
        """The uplink transport (None for an SPSP-only client)."""
        return self._link

    @property
    def config(self) -> PeerConfig | None:
        """Our address and asset as the parent told us by IL-DCP (None before start)."""
        return self._config

    @property
    def address(self) -> str | None:
        """Our ILP address, if known."""
        return self._config.address if self._config is not None else None

    async def http_session(self) -> aiohttp.ClientSession:
        """The aiohttp session used for SPSP (and HTTP-ILP) requests."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.http_timeout)
            )
            self._own_session = True
        return self._session

    # ------------------------------------------------------------------ SPSP

    def resolve(self, pointer_or_url: str) -> str:
        """The SPSP endpoint URL of a payment pointer (``$host/path``) or SPSP URL.

        PaymentPointerError for invalid pointers (see :mod:`ilp_receiver.spsp`).
        """
        return resolve_payment_pointer(
            pointer_or_url,
            lenient=self.lenient,
            allow_http_for_loopback=self.allow_http_for_loopback,
        )

    def _cached(self, url: str) -> SpspResponse | None:
        entry = self._cache.get(url)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._cache[url]
            return None
        self._cache.move_to_end(url)
        return entry[1]

    def clear_cache(self) -> None:
        """Forget every cached SPSP response."""
        self._cache.clear()

    def _protocol(self, protocol: ProtocolChoice | None) -> ProtocolChoice:
        return self.protocol if protocol is None else _check_protocol(protocol)

    async def query(
        self,
        pointer_or_url: str,
        *,
        use_cache: bool = True,
        protocol: ProtocolChoice | None = None,
    ) -> SpspResponse:
        """Query the SPSP endpoint of a payment pointer or URL.

        ``protocol`` (default: the client's) picks the ``Accept`` header: ``"auto"``
        asks for ``application/spsp4+json, application/spsp+json``, ``"stream"`` for
        the first, ``"psk2"`` for the second only.  The answer is read by its
        ``Content-Type`` (``SpspResponse.protocol`` says which it is).  PSK2 answers
        come from the cache while their ``Cache-Control: max-age`` lasts unless
        ``use_cache=False`` (do that to read a fresh ``balance``); STREAM answers are
        never cached (one response per connection).  Raises
        :class:`~ilp_receiver.errors.SpspError` (``status`` set when the server
        answered) for transport failures, non-200 answers, a content type that is not
        SPSP or not the protocol asked for, or a malformed body, and
        PaymentPointerError for an invalid pointer.
        """
        url = self.resolve(pointer_or_url)
        chosen = self._protocol(protocol)
        key = f"{chosen} {url}"
        if use_cache:
            cached = self._cached(key)
            if cached is not None:
                return cached
        session = await self.http_session()
        headers = spsp_query_headers(_ACCEPT[chosen])
        try:
            async with session.get(url, headers=headers) as response:
                status = response.status
                content_type = response.headers.get("Content-Type")
                cache_control = response.headers.get("Cache-Control")
                final_url = response.url
                body = await response.content.read(MAX_SPSP_BODY + 1)
        except aiohttp.ClientSSLError as exc:
            raise _tls_error(url, exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SpspError(f"SPSP query to {url} failed: {exc or type(exc).__name__}") from exc
        if url.lower().startswith("https:") and final_url.scheme != "https":
            raise SpspError(f"SPSP query to {url} was redirected to insecure {final_url}", status)
        if str(final_url) != url:
            log.info("SPSP query to %s was redirected to %s", url, final_url)
        if status != 200:
            raise SpspError(
                f"SPSP query to {url} answered HTTP {status}{_error_detail(body)}", status
            )
        if len(body) > MAX_SPSP_BODY:
            raise SpspError(
                f"SPSP response from {url} is larger than {MAX_SPSP_BODY} bytes", status
            )
        answered = response_protocol(content_type)
        if answered is None:
            raise SpspError(
                f"SPSP response from {url} has content type {content_type!r}, "
                f"not {' or '.join(_ACCEPT[chosen])}",
                status,
            )
        if chosen != "auto" and answered != chosen:
            # "the secrets are not interchangeable" (12-stream.md §14)
            raise SpspError(
                f"SPSP response from {url} is {answered.upper()} ({content_type!r}) but "
                f"only {chosen.upper()} was asked for",
                status,
            )
        try:
            spsp = parse_spsp_response(body, protocol=answered)
        except SpspError as exc:
            raise SpspError(f"bad SPSP response from {url}: {exc}", status) from None
        seconds = max_age(cache_control)
        if seconds and answered == "psk2":
            self._cache[key] = (time.monotonic() + seconds, spsp)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.pop(key, None)
        return spsp

    async def destination(self, target: PaymentTarget) -> Psk2Destination:
        """The PSK2 destination and secret of ``target`` (querying SPSP for a pointer,
        PSK2 only); ConfigError for a STREAM target."""
        found = await self.setup(target, protocol="psk2")
        assert isinstance(found, Psk2Destination)
        return found

    async def setup(
        self, target: PaymentTarget, *, protocol: ProtocolChoice | None = None
    ) -> Psk2Destination | StreamDestination:
        """How ``target`` is paid: a PSK2 or a STREAM destination and secret.

        A pointer or URL is queried (:meth:`query`); an SPSP response says its protocol
        itself; a destination object is used as it is.  ConfigError when ``target``
        needs a protocol ``protocol`` (default: the client's) excludes.
        """
        chosen = self._protocol(protocol)
        if isinstance(target, str):
            target = await self.query(target, protocol=chosen)
        found: Psk2Destination | StreamDestination
        if isinstance(target, SpspResponse):
            if target.protocol == "stream":
                found = StreamDestination(target.destination_account, target.shared_secret)
            else:
                found = Psk2Destination(target.destination_account, target.shared_secret)
        elif isinstance(target, Psk2Destination | StreamDestination):
            found = target
        else:
            raise ConfigError("target", f"cannot pay a {type(target).__name__}")
        used: PaymentProtocol = "stream" if isinstance(found, StreamDestination) else "psk2"
        if chosen not in ("auto", used):
            raise ConfigError(
                "protocol", f"the target is a {used.upper()} destination; {chosen!r} excludes it"
            )
        return found

    # ------------------------------------------------------------------ ILP

    def _expires_at(self, expiry: timedelta | None) -> datetime:
        at = datetime.now(UTC) + (self.expiry if expiry is None else expiry)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    async def send(self, prepare: IlpPrepare) -> IlpReply:
        """Send one Prepare on the uplink and return its Fulfill or Reject.

        Raises LinkError subclasses when the transport fails, ConfigError without an
        uplink.
        """
        if self._link is None:
            raise ConfigError("uplink", "this client has no uplink; it can only query SPSP")
        if not self._link.is_connected and not self._started_link:
            await self.start()
        return await self._link.send(prepare)

    async def _send_or_fail(
        self, prepare: IlpPrepare, target: Psk2Destination, draft: Psk2Draft
    ) -> IlpReply:
        """Send a single payment's or quote's Prepare; PaymentError (nothing paid) when
        the uplink fails."""
        try:
            return await self.send(prepare)
        except LinkError as exc:
            nothing = PaymentResult(target.destination, 0, 0, 0, draft=draft)
            raise PaymentError(
                f"the uplink failed while paying: {exc or type(exc).__name__}", result=nothing
            ) from exc

    def _draft(self, draft: Psk2Draft | None) -> Psk2Draft:
        chosen = self.draft if draft is None else draft
        if chosen not in ("draft1", "draft2"):
            raise ConfigError("draft", f"must be 'draft1' or 'draft2', got {chosen!r}")
        return chosen

    async def pay(
        self,
        target: PaymentTarget,
        source_amount: int,
        *,
        min_destination_amount: int = 0,
        draft: Psk2Draft | None = None,
        data: bytes = b"",
        payment_id: bytes | None = None,
        sequence: int = 0,
        last_chunk: bool = True,
        request_id: int | None = None,
        expiry: timedelta | None = None,
        protocol: ProtocolChoice | None = None,
        progress: ProgressCallback | None = None,
        slippage: Fraction | float | str = DEFAULT_SLIPPAGE,
        max_packet_amount: int | None = None,
        max_packets: int = DEFAULT_MAX_PACKETS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
    ) -> PaymentResult:
        """Pay ``source_amount``; returns what was delivered.

        **STREAM** (the SPSP answer is ``application/spsp4+json``, or ``target`` is a
        :class:`~ilp_receiver.client.StreamDestination`): one connection -- rate probe,
        as many money packets as the path's maximum packet amount (learnt from F08s)
        and ``max_packet_amount`` need, a closing packet (``12-stream.md`` §10).
        ``min_destination_amount`` is checked against the probed rate before any money
        moves; each packet asks for ``floor((1 - slippage) x floor(rate x amount))``;
        ``data`` is written on the stream; ``progress`` is called after every money
        packet's answer; ``max_packets``/``max_retries``/``initial_backoff``/
        ``max_backoff`` bound the work.  ``result.data`` holds what the receiver sent
        back on the stream.

        **PSK2** otherwise.  Draft 1 (default): one chunk, "type 1, paymentAmount
        2^64-1, chunkAmount = minimum destination amount" (``payment_id`` random unless
        given; HTTP-ILP passes its token, a ``sequence`` and ``last_chunk=False``).
        Draft 2: one type-4 request (``request_id`` random unless given) carrying
        ``data``.

        Raises :class:`~ilp_receiver.client.PaymentError` if the payment fails
        (``arrived`` says what arrived when the receiver told us; ``result`` what was
        paid before).
        """
        _check_amount(source_amount, "source_amount")
        _check_amount(min_destination_amount, "min_destination_amount", allow_zero=True)
        found = await self.setup(target, protocol=protocol)
        if isinstance(found, StreamDestination):
            return await self._pay_stream(
                found,
                source_amount,
                min_destination_amount=min_destination_amount,
                data=data,
                expiry=expiry,
                progress=progress,
                slippage=slippage,
                max_packet_amount=max_packet_amount,
                max_packets=max_packets,
                max_retries=max_retries,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
            )
        chosen = self._draft(draft)
        target_dest = found
        prepare, request = payment_prepare(
            target_dest,
            draft=chosen,
            source_amount=source_amount,
            min_destination_amount=min_destination_amount,
            expires_at=self._expires_at(expiry),
            iv=os.urandom(_IV_BYTES),
            payment_id=_single_payment_id(chosen, payment_id),
            sequence=sequence,
            last_chunk=last_chunk,
            request_id=_random_request_id() if request_id is None else request_id,
            data=data,
        )
        reply = await self._send_or_fail(prepare, target_dest, chosen)
        return payment_outcome(target_dest, prepare, request, reply)

    async def quote(
        self,
        target: PaymentTarget,
        source_amount: int = DEFAULT_QUOTE_SOURCE_AMOUNT,
        *,
        draft: Psk2Draft | None = None,
        payment_id: bytes | None = None,
        sequence: int = 0,
        data: bytes = b"",
        expiry: timedelta | None = None,
        protocol: ProtocolChoice | None = None,
    ) -> QuoteResult:
        """How much ``source_amount`` would deliver: an unfulfillable test payment.

        Nothing is paid.  For a STREAM receiver this is the rate probe
        (``12-stream.md`` §10) with ``source_amount`` among the test amounts: the
        amount that arrived for it, else ``floor(rate x source_amount)``; the
        connection is closed afterwards.  Raises
        :class:`~ilp_receiver.client.QuoteError` when no authenticated answer says how
        much arrived (e.g. F08 on the way for PSK2, a failed probe for STREAM).
        """
        _check_amount(source_amount, "source_amount")
        found = await self.setup(target, protocol=protocol)
        if isinstance(found, StreamDestination):
            return await self._quote_stream(found, source_amount, expiry=expiry)
        chosen = self._draft(draft)
        target_dest = found
        prepare, request = quote_prepare(
            target_dest,
            draft=chosen,
            source_amount=source_amount,
            expires_at=self._expires_at(expiry),
            iv=os.urandom(_IV_BYTES),
            condition=os.urandom(32),
            payment_id=_single_payment_id(chosen, payment_id),
            sequence=sequence,
            request_id=_random_request_id(),
            data=data,
        )
        reply = await self._send_or_fail(prepare, target_dest, chosen)
        return quote_outcome(target_dest, prepare, request, reply)

    async def pay_chunked(
        self,
        target: PaymentTarget,
        *,
        source_amount: int | None = None,
        destination_amount: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: ProgressCallback | None = None,
        payment_id: bytes | None = None,
        slippage: Fraction | float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        expiry: timedelta | None = None,
        protocol: ProtocolChoice | None = None,
    ) -> PaymentResult:
        """A draft-1 chunked payment (one payment id, increasing sequence numbers).

        Give ``source_amount`` (send exactly that) or ``destination_amount`` (deliver at
        least that).  With neither, a pointer whose SPSP ``balance.maximum`` is below
        2^64-1 is paid up to it ("If ``balance.maximum`` is present, send a chunked
        payment with that as destination amount").  ``progress`` is called after every
        chunk's answer.  See :mod:`ilp_receiver.client.chunked` for F08/T04/T05
        handling.  ``slippage`` defaults to 0 for PSK2.  Raises
        :class:`~ilp_receiver.client.PaymentError` (its ``result`` is the part that was
        paid).

        A STREAM receiver is paid like :meth:`pay` does (``source_amount`` only; STREAM
        splits every payment anyway), with ``chunk_size`` as the largest packet and
        ``slippage`` 1 % unless given.
        """
        chosen = self._protocol(protocol)
        if isinstance(target, str):
            # an invoice (no amount given) needs a fresh balance
            fresh = source_amount is None and destination_amount is None
            target = await self.query(target, use_cache=not fresh, protocol=chosen)
        found = await self.setup(target, protocol=chosen)
        if isinstance(found, StreamDestination):
            if source_amount is None:
                raise ConfigError(
                    "source_amount", "STREAM payments are made by source amount; give one"
                )
            return await self._pay_stream(
                found,
                _check_amount(source_amount, "source_amount"),
                expiry=expiry,
                progress=progress,
                slippage=DEFAULT_SLIPPAGE if slippage is None else slippage,
                max_packet_amount=_check_amount(chunk_size, "chunk_size"),
                max_retries=max_retries,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
            )
        if source_amount is None and destination_amount is None:
            if not isinstance(target, SpspResponse):
                raise ConfigError("amount", "give source_amount or destination_amount")
            balance = target.balance
            if balance is None or balance.maximum >= MAX_UINT64:
                raise ConfigError(
                    "amount",
                    "give source_amount or destination_amount (the receiver names no maximum)",
                )
            destination_amount = balance.maximum - balance.current
            if destination_amount <= 0:
                raise ConfigError("amount", "the receiver's balance is already at its maximum")
        target_dest = found
        payment = ChunkedPayment(
            target_dest,
            payment_id=payment_id or os.urandom(_ID_BYTES),
            source_amount=source_amount,
            destination_amount=destination_amount,
            chunk_size=chunk_size,
            slippage=0 if slippage is None else slippage,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
        )
        while True:
            prepare = payment.next_prepare(
                iv=os.urandom(_IV_BYTES), expires_at=self._expires_at(expiry)
            )
            if prepare is None:
                return payment.result
            try:
                reply = await self.send(prepare)
            except LinkError as exc:
                raise payment.abort(f"the uplink failed: {exc or type(exc).__name__}") from exc
            outcome = payment.on_reply(reply)
            if progress is not None:
                called = progress(payment.progress)
                if inspect.isawaitable(called):
                    await called
            if outcome.error is not None:
                raise outcome.error
            if outcome.finished:
                return payment.result
            if outcome.delay > 0:
                await asyncio.sleep(outcome.delay)

    # ------------------------------------------------------------------ STREAM

    async def _run_stream(self, sender: StreamSender, progress: ProgressCallback | None) -> None:
        """Drive ``sender`` over the uplink until it is done.

        Probes go out in parallel; otherwise one packet at a time.  Randomness and the
        clock are read here and handed to the sans-I/O machine; its waits are slept.
        """
        if self._link is None:
            raise ConfigError("uplink", "this client has no uplink; it can only query SPSP")
        pending: dict[asyncio.Future[IlpReply], int] = {}
        try:
            while True:
                step = sender.next(
                    now=datetime.now(UTC), iv=os.urandom(_IV_BYTES), condition=os.urandom(32)
                )
                if isinstance(step, OutgoingPacket):
                    pending[asyncio.ensure_future(self.send(step.prepare))] = step.sequence
                    continue
                if step is None:
                    return
                if not pending:
                    if step.delay is None:
                        raise LocalProtocolError("the STREAM sender waits for nothing in flight")
                    await asyncio.sleep(step.delay)
                    continue
                done, _ = await asyncio.wait(
                    pending.keys(), timeout=step.delay, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    sequence = pending.pop(task)
                    try:
                        reply = task.result()
                    except LinkError as exc:
                        sender.on_send_failure(sequence, str(exc) or type(exc).__name__)
                        continue
                    outcome = sender.on_reply(sequence, reply)
                    if progress is not None and outcome.kind == "money":
                        called = progress(_stream_progress(sender))
                        if inspect.isawaitable(called):
                            await called
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _pay_stream(
        self,
        target: StreamDestination,
        source_amount: int,
        *,
        min_destination_amount: int = 0,
        data: bytes = b"",
        expiry: timedelta | None = None,
        progress: ProgressCallback | None = None,
        slippage: Fraction | float | str = DEFAULT_SLIPPAGE,
        max_packet_amount: int | None = None,
        max_packets: int = DEFAULT_MAX_PACKETS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
    ) -> PaymentResult:
        """One STREAM connection paying ``source_amount`` (see :meth:`pay`)."""
        if max_packet_amount is not None:
            _check_amount(max_packet_amount, "max_packet_amount")
        sender = StreamSender(
            target.destination,
            target.shared_secret,
            amount=source_amount,
            data=data,
            slippage=_check_slippage(slippage),
            max_packet_amount=max_packet_amount,
            min_destination_amount=min_destination_amount,
            max_packets=max_packets,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            expiry=self.expiry if expiry is None else expiry,
        )
        await self._run_stream(sender, progress)
        result = _stream_result(target, sender)
        if sender.error is not None:
            raise _stream_error(sender.error, result)
        return result

    async def _quote_stream(
        self, target: StreamDestination, source_amount: int, *, expiry: timedelta | None
    ) -> QuoteResult:
        """A STREAM rate probe that includes ``source_amount`` (see :meth:`quote`)."""
        amounts = tuple(dict.fromkeys((*DEFAULT_PROBE_AMOUNTS, source_amount)))
        sender = StreamSender(
            target.destination,
            target.shared_secret,
            probe_amounts=amounts,
            expiry=self.expiry if expiry is None else expiry,
        )
        await self._run_stream(sender, None)
        rate = sender.probed_rate
        if sender.error is not None or rate is None:
            error = sender.error
            nothing = PaymentResult(target.destination, 0, 0, 0, protocol="stream")
            raise QuoteError(
                f"STREAM quote failed: {error}",
                result=nothing,
                code=error.code if error is not None else "",
                ilp_message=error.ilp_message if error is not None else "",
                triggered_by=error.triggered_by if error is not None else "",
            )
        arrived = sender.probe_results.get(source_amount)
        if arrived is None:
            arrived = floor(rate * source_amount)
        return QuoteResult(target.destination, source_amount, arrived, "F99", protocol="stream")
