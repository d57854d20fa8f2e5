"""Sans-I/O STREAM client: one connection that pays (and talks) to a STREAM server.

Spec ``12-stream.md`` §10 ("What a 2.7.1 client does"), RFC 29 client side.
:class:`StreamSender` is the state machine of one connection carrying one stream:
:meth:`~StreamSender.next` says what to do (send this Prepare, or wait), and
:meth:`~StreamSender.on_reply` reads a Fulfill or Reject.  It never reads a clock,
draws randomness or does I/O: the IV of each packet, the random condition of an
unfulfillable packet and ``now`` are parameters; the I/O loop (e.g.
:meth:`ilp_receiver.client.AsyncPaymentClient.pay`) sleeps when told to.

Behaviour, rule by rule (quotes are from ``12-stream.md``):

* **Rate probe.** "five unfulfillable Prepares in parallel for source amounts 1, 10³,
  10⁶, 10⁹, 10¹²", answered "F99 + reply" whose ``prepareAmount`` is "the amount that
  arrived".  The rate is arrived/source of the answer "whose arrived amount has the
  most digits; at least 3 digits are required, otherwise it retries (up to 15 volleys)
  with amounts learnt from F08s, waiting 100 ms x1.5 after T-errors" (a T-error adds
  the smallest failed amount minus a third).  Difference: when no larger probe can be
  tried (the path's maximum packet amount caps it) the best rate with fewer digits
  is taken instead of giving up.
* **F08.** "F08 data (UInt64 received, UInt64 maximum) sets the path's maximum packet
  amount = floor(source x maximum / received)"; without usable data the maximum
  becomes ``amount - 1`` and the next packet tries half of that (2.7.1's congestion
  controller).  A maximum of 0 ends the connection.
* **Money packets.** "A packet carries the smallest of: what the stream may still
  send, what the receiver's StreamMaxMoney allows, the path maximum learnt from F08s
  (unbounded if none was seen), and the optional sender setting
  ``maximumPacketAmount``; T04 shrinks it by ⅓."  Frames: "StreamMaxMoney and
  StreamMaxData ..., then StreamMoney (shares = source amount)".  "Minimum destination
  amount = floor(0.99 x floor(rate x source)) (slippage 1 %), omitted (0) when that is
  0" -- the slippage is configurable.  One money packet is in flight at a time, as
  in 2.7.1.
* **Replies.** "Fulfill → money counted" (the reply's ``prepareAmount`` is what
  arrived); "F99 → read the reply frames (a lower StreamMaxMoney stops sending)";
  "F08 → smaller packets"; "T-codes → retry after 100 ms, doubling"; "any other code
  fails the connection".  An F99 whose reply says less arrived than the minimum means
  "the exchange rate went bad" (§9 step 6): the rate is re-estimated from that reply
  and the packet retried.  Every retry counts against ``max_retries`` (consecutive).
* **Reply authenticity.** "For replies the RFC says discard on a wrong type or
  sequence; a 2.7.1 sender treats it as fatal and destroys the connection" -- so does
  this one: reply data that does not decrypt, or carries another sequence or packet
  type, and a Fulfill whose fulfillment does not hash to the condition, end the
  connection with a protocol error.
* **Flow control** (§11): the receiver's ``StreamMaxMoney`` (receive limit and total
  received, "Advertisements never shrink") bounds the money, its ``StreamMaxData`` /
  ``ConnectionMaxData`` (16384 assumed until told) the bytes we write; bytes it sends
  us must stay within the window we advertise (else FlowControlError).
* **Data.** :meth:`~StreamSender.write` queues bytes for the stream (they ride in the
  next packets, resent after a reject, "a resend repeats the exact frame");
  ``StreamData`` frames in replies are reassembled by offset and read with
  :meth:`~StreamSender.read`.  ``min_incoming_data`` keeps the connection open (with
  zero-amount packets, bounded) until the receiver has sent that many bytes.
* **Closing** (§12): once everything is sent, one zero-amount fulfillable Prepare
  carries ``StreamClose`` + ``ConnectionClose`` (NoError); after a failure the same
  packet carries the error code, when the receiver is known to be reachable and has
  not closed itself.  2.7.1's extra unfulfillable close notice is not sent.  A
  ``ConnectionClose`` from the receiver ends the connection without a reply.
* **ConnectionNewAddress** is *not* sent unless ``source_address`` is given: "if our
  client never sends ConnectionNewAddress the server never learns our address and
  never sends Prepares to us"; a pay-only client has nothing to answer them with.
* **Bounds.** At most ``max_packets`` Prepares per connection (the closing packet
  excepted), ``max_retries`` consecutive failures, ``max_probe_volleys`` probe
  volleys, ``max_polls`` zero-amount waits; sequences stop below 2**31 ("2.7.1 fails
  the connection when its next sequence would reach 2^31").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from math import ceil, floor
from typing import Final, Literal

from ..codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_amount_too_large_data,
)
from ..codec.oer import MAX_UINT64
from ..codec.stream import (
    ILP_FULFILL,
    ILP_PREPARE,
    ILP_REJECT,
    MAX_PLAINTEXT_LENGTH,
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionMaxData,
    ConnectionNewAddress,
    ErrorCode,
    Frame,
    StreamClose,
    StreamData,
    StreamDataBlocked,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    StreamReceipt,
    encode_stream_packet,
)
from ..crypto import constant_time_equal, sha256
from ..errors import ConfigError, DecodeError, IlpReceiverError, LocalProtocolError
from .secrets import StreamKeys, derive_keys, open_packet, seal_packet

__all__ = [
    "ASSUMED_REMOTE_WINDOW",
    "DEFAULT_EXPIRY",
    "DEFAULT_INITIAL_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_PACKETS",
    "DEFAULT_MAX_POLLS",
    "DEFAULT_MAX_PROBE_VOLLEYS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MIN_RATE_DIGITS",
    "DEFAULT_PROBE_AMOUNTS",
    "DEFAULT_RECEIVE_WINDOW",
    "DEFAULT_SLIPPAGE",
    "MAX_SEQUENCE",
    "FailureReason",
    "OutgoingPacket",
    "PacketKind",
    "ReplyOutcome",
    "StreamSendError",
    "StreamSendStats",
    "StreamSender",
    "Wait",
    "minimum_destination_amount",
    "path_maximum_from_f08",
]

#: §10: "five unfulfillable Prepares in parallel for source amounts 1, 10³, 10⁶, 10⁹, 10¹²".
DEFAULT_PROBE_AMOUNTS: Final = (1, 10**3, 10**6, 10**9, 10**12)
#: §10: "at least 3 digits are required".
DEFAULT_MIN_RATE_DIGITS: Final = 3
#: §10: "otherwise it retries (up to 15 volleys)".
DEFAULT_MAX_PROBE_VOLLEYS: Final = 15
#: §10: "floor(0.99 x floor(rate x source)) (slippage 1 %)".
DEFAULT_SLIPPAGE: Final = Fraction(1, 100)
#: §10: "T-codes → retry after 100 ms, doubling" (and "waiting 100 ms x1.5" in the probe).
DEFAULT_INITIAL_BACKOFF: Final = 0.1
#: 2.7.1 caps at 12 h; a paying client wants an answer sooner.
DEFAULT_MAX_BACKOFF: Final = 10.0
DEFAULT_MAX_RETRIES: Final = 10
DEFAULT_MAX_PACKETS: Final = 100_000
DEFAULT_MAX_POLLS: Final = 20
#: 2.7.1 ``DEFAULT_PACKET_TIMEOUT`` / Prepare expiry: 30 s.
DEFAULT_EXPIRY: Final = timedelta(seconds=30)
#: The window we advertise for incoming bytes: "Node's 16384-byte high-water mark".
DEFAULT_RECEIVE_WINDOW: Final = 16384
#: §11: "a sender assumes 16384 until told".
ASSUMED_REMOTE_WINDOW: Final = 16384
#: §4: "2.7.1 fails the connection when its next sequence would reach 2^31".
MAX_SEQUENCE: Final = 2**31 - 1
_PROBE_BACKOFF_FACTOR: Final = 1.5
_MAX_PENDING_CHUNKS: Final = 1024
#: Room left in a packet for the StreamData frame header (type, lengths, id, offset).
_DATA_FRAME_OVERHEAD: Final = 32

#: What a Prepare is for: the rate probe, money (maybe with data), data or a
#: zero-amount poll, or the closing packet.
PacketKind = Literal["probe", "money", "data", "close"]
#: Why a connection failed: a final ILP reject, too many temporary errors, a reply that
#: breaks the protocol, the receiver closed, a limit was reached, the rate probe or the
#: rate failed, or the transport failed.
FailureReason = Literal["rejected", "retries", "protocol", "remote_closed", "limit", "rate", "link"]
_Phase = Literal["probe", "send", "close", "done"]


class StreamSendError(IlpReceiverError):
    """A STREAM connection failed (see :class:`FailureReason` for ``reason``).

    ``code``/``ilp_message``/``triggered_by`` come from the ILP Reject that ended it
    (empty otherwise); ``arrived`` is the amount the receiver's reply said arrived in
    that packet, when it said so; ``stream_error`` is the STREAM error code of a
    ``ConnectionClose``/``StreamClose`` the receiver sent, if that ended it.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: FailureReason,
        code: str = "",
        ilp_message: str = "",
        triggered_by: str = "",
        arrived: int | None = None,
        stream_error: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason
        self.code = code
        self.ilp_message = ilp_message
        self.triggered_by = triggered_by
        self.arrived = arrived
        self.stream_error = stream_error


@dataclass(frozen=True, slots=True)
class OutgoingPacket:
    """A Prepare to send now, and what it is.

    ``packet`` is the plaintext STREAM packet inside ``prepare.data``;
    ``source_amount`` is ``prepare.amount``; ``min_destination_amount`` the packet's
    ``prepareAmount``.  Hand the answer to :meth:`StreamSender.on_reply` with
    ``sequence``.
    """

    sequence: int
    kind: PacketKind
    prepare: IlpPrepare
    packet: StreamPacket
    source_amount: int
    min_destination_amount: int
    fulfillable: bool


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send now.

    ``delay``: seconds until the machine wants to be asked again (a back-off or a
    poll interval); None: wait for a reply to a packet in flight.
    """

    delay: float | None = None


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """What :meth:`StreamSender.on_reply` made of one answer.

    ``delivered`` is what this reply added to the delivered total (Fulfills only);
    ``code`` the reject code ("" for a Fulfill).
    """

    sequence: int
    kind: PacketKind
    fulfilled: bool
    source_amount: int
    delivered: int = 0
    code: str = ""


@dataclass(frozen=True, slots=True)
class StreamSendStats:
    """Where a STREAM connection stands (a snapshot).

    ``target`` is the source amount to send; ``sent``/``delivered`` count fulfilled
    money packets only; ``packets_fulfilled``/``packets_rejected`` count money
    packets; ``prepares_sent`` every Prepare (probes, data, close included);
    ``max_packet_amount`` the largest money packet allowed now (None: unbounded).
    """

    target: int
    sent: int
    delivered: int
    packets_fulfilled: int
    packets_rejected: int
    prepares_sent: int
    max_packet_amount: int | None
    exchange_rate: Fraction | None

    @property
    def fraction(self) -> float:
        """Completion between 0.0 and 1.0 (by source amount)."""
        if self.target <= 0:
            return 1.0
        return min(1.0, self.sent / self.target)


def minimum_destination_amount(rate: Fraction, source_amount: int, slippage: Fraction) -> int:
    """§10: ``floor((1 - slippage) x floor(rate x source))``, capped at 2**64-1."""
    return min(MAX_UINT64, floor((1 - slippage) * floor(rate * source_amount)))


def path_maximum_from_f08(source_amount: int, data: bytes) -> int | None:
    """§10: "floor(source x maximum / received)" from F08 data, or None if unusable.

    Usable means the data decodes (RFC 27: UInt64 received, UInt64 maximum) and
    ``received > maximum`` (2.7.1's congestion controller checks the same).
    """
    try:
        too_large = decode_amount_too_large_data(data)
    except DecodeError:
        return None
    received, maximum = too_large.received_amount, too_large.maximum_amount
    if received <= maximum:
        return None
    return source_amount * maximum // received


def _digits(value: int) -> int:
    return len(str(value)) if value > 0 else 0


def _fraction(value: Fraction | float | str | int, name: str) -> Fraction:
    try:
        return Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ConfigError(name, f"must be a number, got {value!r}") from None


@dataclass(slots=True)
class _InFlight:
    kind: PacketKind
    prepare: IlpPrepare
    amount: int
    min_destination: int
    data_frames: tuple[StreamData, ...]
    counted: bool = False


@dataclass(slots=True)
class _ProbeResult:
    amount: int
    arrived: int | None = None  # F99 with a STREAM reply
    f08_maximum: int | None = None  # from F08 (None: no F08 or no data)
    f08: bool = False
    code: str = ""
    reject: IlpReject | None = None


class _Violation(Exception):
    """A reply that breaks the protocol (internal; becomes a StreamSendError)."""

    def __init__(self, message: str, stream_code: int = ErrorCode.PROTOCOL_VIOLATION) -> None:
        super().__init__(message)
        self.stream_code = stream_code


class StreamSender:
    """One STREAM client connection sending ``amount`` (and/or bytes) on one stream.

    ``destination`` and ``shared_secret`` come from SPSP (``application/spsp4+json``).
    ``amount`` is the source amount to pay (0: none, e.g. a quote or data only) and
    ``data`` bytes to write on the stream (more with :meth:`write`).

    Options: ``slippage`` (default 1 %); ``exchange_rate`` skips the probe (destination
    units per source unit); ``probe_amounts``/``min_rate_digits``/``max_probe_volleys``
    shape the probe; ``max_packet_amount`` is the sender's own packet limit;
    ``min_destination_amount`` fails the payment before any money moves when the
    probed rate says less would arrive; ``max_packets``, ``max_retries``,
    ``initial_backoff``/``max_backoff`` (seconds), ``max_polls`` bound the work;
    ``expiry`` is each Prepare's lifetime; ``stream_id`` the (odd) stream to use;
    ``source_address`` (+ ``source_asset``) sends ConnectionNewAddress /
    ConnectionAssetDetails until the receiver answers (off by default: see the module
    doc); ``receive_window`` the bytes we accept ahead of :meth:`read`;
    ``min_incoming_data`` keeps the connection open until the receiver has sent that
    many bytes; ``close=False`` skips the closing packet.

    HTTP-ILP over STREAM (``docs/paid-api.md``) needs two more: ``amount_is_limit``
    makes ``amount`` a send limit (2.7.1 ``setSendMax``) rather than a total -- when
    the receiver's receive limit (StreamMaxMoney) is reached the money is done, without
    error; ``hold`` keeps the connection open once everything is sent (and the data
    waited for), sending nothing -- :meth:`next` answers ``Wait(None)`` with nothing
    in flight -- until :meth:`end` is called.
    """

    def __init__(
        self,
        destination: str,
        shared_secret: bytes,
        *,
        amount: int = 0,
        data: bytes = b"",
        slippage: Fraction | float | str = DEFAULT_SLIPPAGE,
        exchange_rate: Fraction | None = None,
        probe_amounts: Sequence[int] = DEFAULT_PROBE_AMOUNTS,
        min_rate_digits: int = DEFAULT_MIN_RATE_DIGITS,
        max_probe_volleys: int = DEFAULT_MAX_PROBE_VOLLEYS,
        max_packet_amount: int | None = None,
        min_destination_amount: int = 0,
        max_packets: int = DEFAULT_MAX_PACKETS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_polls: int = DEFAULT_MAX_POLLS,
        expiry: timedelta = DEFAULT_EXPIRY,
        stream_id: int = 1,
        source_address: str | None = None,
        source_asset: tuple[str, int] | None = None,
        receive_window: int = DEFAULT_RECEIVE_WINDOW,
        min_incoming_data: int = 0,
        close: bool = True,
        amount_is_limit: bool = False,
        hold: bool = False,
    ) -> None:
        if len(shared_secret) != 32:
            raise ConfigError("shared_secret", f"must be 32 bytes, got {len(shared_secret)}")
        if type(amount) is not int or not 0 <= amount <= MAX_UINT64:
            raise ConfigError("amount", f"must be an integer in 0..{MAX_UINT64}, got {amount!r}")
        slip = _fraction(slippage, "slippage")
        if not 0 <= slip < 1:
            raise ConfigError("slippage", "must be in [0, 1)")
        if exchange_rate is not None and (
            not isinstance(exchange_rate, Fraction | int) or exchange_rate <= 0
        ):
            raise ConfigError("exchange_rate", "must be a positive Fraction")
        probes = tuple(probe_amounts)
        if exchange_rate is None and (
            not probes or any(type(a) is not int or not 0 < a <= MAX_UINT64 for a in probes)
        ):
            raise ConfigError("probe_amounts", f"must be integers in 1..{MAX_UINT64}")
        if max_packet_amount is not None and (
            type(max_packet_amount) is not int or not 0 < max_packet_amount <= MAX_UINT64
        ):
            raise ConfigError("max_packet_amount", f"must be an integer in 1..{MAX_UINT64}")
        if stream_id < 1 or stream_id % 2 == 0:
            # §6: "Client-opened streams are odd from 1"
            raise ConfigError("stream_id", "a client's streams have odd ids (1, 3, 5, ...)")
        for name, value in (
            ("min_rate_digits", min_rate_digits),
            ("min_destination_amount", min_destination_amount),
            ("max_retries", max_retries),
            ("max_polls", max_polls),
            ("receive_window", receive_window),
            ("min_incoming_data", min_incoming_data),
        ):
            if type(value) is not int or value < 0:
                raise ConfigError(name, f"must be a non-negative integer, got {value!r}")
        if type(max_packets) is not int or max_packets < 1:
            raise ConfigError("max_packets", "must be a positive integer")
        if type(max_probe_volleys) is not int or max_probe_volleys < 1:
            raise ConfigError("max_probe_volleys", "must be a positive integer")
        if min_incoming_data > receive_window:
            raise ConfigError("min_incoming_data", "cannot be larger than receive_window")
        if initial_backoff < 0 or max_backoff < initial_backoff:
            raise ConfigError("max_backoff", "need 0 <= initial_backoff <= max_backoff")
        self.destination = destination
        self._keys: StreamKeys = derive_keys(bytes(shared_secret))
        self.amount = amount
        self.stream_id = stream_id
        self._slippage = slip
        self._min_rate_digits = min_rate_digits
        self._max_probe_volleys = max_probe_volleys
        self._own_max = max_packet_amount
        self._min_destination_amount = min_destination_amount
        self._max_packets = max_packets
        self._max_retries = max_retries
        self._initial_backoff = float(initial_backoff)
        self._max_backoff = float(max_backoff)
        self._max_polls = max_polls
        self._expiry = expiry
        self._source_address = source_address
        self._source_asset = source_asset
        self._receive_window = receive_window
        self._min_incoming = min_incoming_data
        self._close_enabled = close
        self._amount_is_limit = amount_is_limit
        self._hold = hold
        self._ended = False

        self._phase: _Phase = "probe" if exchange_rate is None else "send"
        self._rate: Fraction | None = Fraction(exchange_rate) if exchange_rate else None
        self._probe_rate: Fraction | None = self._rate
        self._sequence = 0
        self._prepares = 0
        self._in_flight: dict[int, _InFlight] = {}
        self._error: StreamSendError | None = None
        self._delay: float = 0.0  # to wait before the next packet (set by replies)
        self._not_before: datetime | None = None
        # probe
        self._volley: list[int] = list(dict.fromkeys(probes))
        self._volley_sent: dict[int, int] = {}  # sequence -> amount
        self._volley_results: list[_ProbeResult] = []
        self._volleys = 1
        self._probed: set[int] = set()
        self._probe_results: dict[int, int] = {}
        self._probe_backoff = self._initial_backoff
        # money
        self._sent = 0
        self._delivered = 0
        self._fulfilled = 0
        self._rejected = 0
        self._failures = 0
        self._backoff = self._initial_backoff
        self._path_max: int | None = None
        self._test_max: int | None = None
        self._remote_receive_max: int | None = None
        self._remote_received = 0
        self._fulfills_without_reply = 0
        # connection and stream state
        self._answered = False  # the receiver sent an authenticated STREAM reply
        self._stream_opened = False
        self._remote_closed = False  # ConnectionClose received
        self._remote_stream_closed = False
        self._remote_close_code: int | None = None
        self._remote_close_message = ""
        self._remote_asset: tuple[str, int] | None = None
        self._receipt: bytes | None = None
        self._close_sent = False
        self._close_code: int = ErrorCode.NO_ERROR
        self._close_message = ""
        self._close_reply: IlpReply | None = None
        # outgoing data
        self._out_written = 0
        self._out_queue: list[StreamData] = []
        self._remote_stream_window = ASSUMED_REMOTE_WINDOW
        self._remote_connection_window: int | None = None
        # incoming data
        self._in_read = 0
        self._in_buffer = bytearray()
        self._in_pending: dict[int, bytes] = {}
        self._polls = 0
        self._poll_waited = False
        if data:
            self.write(data)

    # ------------------------------------------------------------------ facts

    @property
    def phase(self) -> str:
        """``"probe"``, ``"send"``, ``"close"`` or ``"done"``."""
        return self._phase

    @property
    def finished(self) -> bool:
        """Whether the connection is over (successfully or not; see :attr:`error`)."""
        return self._phase == "done"

    @property
    def error(self) -> StreamSendError | None:
        """Why the connection failed, or None."""
        return self._error

    @property
    def exchange_rate(self) -> Fraction | None:
        """The rate used for minimum destination amounts (re-estimated when it moves)."""
        return self._rate

    @property
    def probed_rate(self) -> Fraction | None:
        """The rate the probe found (or the one given), None before."""
        return self._probe_rate

    @property
    def probe_results(self) -> dict[int, int]:
        """Probe source amount -> amount that arrived, for every answered probe."""
        return dict(self._probe_results)

    @property
    def max_packet_amount(self) -> int | None:
        """The largest money packet allowed now (None: no limit known)."""
        limits = [x for x in (self._path_max, self._own_max, self._test_max) if x is not None]
        return min(limits) if limits else None

    @property
    def path_max_packet_amount(self) -> int | None:
        """The path's maximum packet amount learnt from F08s, if any."""
        return self._path_max

    @property
    def sent(self) -> int:
        """Source amount of fulfilled money packets."""
        return self._sent

    @property
    def delivered(self) -> int:
        """What the receiver's replies say arrived in fulfilled packets."""
        return self._delivered

    @property
    def in_flight(self) -> int:
        """How many Prepares await their answer."""
        return len(self._in_flight)

    @property
    def prepares_sent(self) -> int:
        """Every Prepare built so far."""
        return self._prepares

    @property
    def fulfills_without_reply(self) -> int:
        """Fulfills that carried no STREAM reply (counted at their minimum amount)."""
        return self._fulfills_without_reply

    @property
    def remote_closed(self) -> bool:
        """Whether the receiver sent ConnectionClose."""
        return self._remote_closed

    @property
    def remote_asset(self) -> tuple[str, int] | None:
        """The receiver's ConnectionAssetDetails (code, scale), if it sent them."""
        return self._remote_asset

    @property
    def receipt(self) -> bytes | None:
        """The last StreamReceipt (RFC 39) for our stream, if any ("the sender keeps
        the latest (it need not parse it)", §13)."""
        return self._receipt

    @property
    def received_data(self) -> int:
        """Bytes the receiver has sent on our stream (in order, read or not)."""
        return self._in_read + len(self._in_buffer)

    @property
    def close_reply(self) -> IlpReply | None:
        """The answer to the closing packet, once it came."""
        return self._close_reply

    @property
    def stats(self) -> StreamSendStats:
        """A snapshot of the counters."""
        return StreamSendStats(
            self.amount,
            self._sent,
            self._delivered,
            self._fulfilled,
            self._rejected,
            self._prepares,
            self.max_packet_amount,
            self._rate,
        )

    # ------------------------------------------------------------------ data

    def write(self, data: bytes) -> None:
        """Queue ``data`` on the stream (sent with the next packets, in order)."""
        if self._phase in ("close", "done"):
            raise LocalProtocolError("the connection is closing; no more data can be written")
        if not data:
            return
        self._out_queue.append(StreamData(self.stream_id, self._out_written, bytes(data)))
        self._out_written += len(data)

    def end(self) -> None:
        """Send no more money or data; close the connection once nothing is in flight.

        What was fulfilled stays counted and the connection closes normally (NoError),
        also when ``hold`` keeps it open: this is how an HTTP-ILP client stops its
        stream when the response arrives.  A probe in progress finishes first.
        """
        self._ended = True

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` was called."""
        return self._ended

    def read(self) -> bytes:
        """The bytes received on the stream since the last read (may be empty)."""
        data = bytes(self._in_buffer)
        self._in_read += len(data)
        self._in_buffer.clear()
        return data

    # ------------------------------------------------------------------ stepping

    def next(self, *, now: datetime, iv: bytes, condition: bytes) -> OutgoingPacket | Wait | None:
        """The next thing to do: a packet to send, a :class:`Wait`, or None when done.

        ``now``: the current time (UTC, for expiry and back-off); ``iv``: 12 fresh
        random bytes (used if a packet is built); ``condition``: 32 fresh random bytes
        (used only by unfulfillable probe packets).  Several probes may be in flight at
        once; otherwise one packet at a time.
        """
        if self._delay > 0:
            self._not_before = now + timedelta(seconds=self._delay)
            self._delay = 0.0
        if self._not_before is not None:
            left = (self._not_before - now).total_seconds()
            if left > 0:
                return Wait(left)
            self._not_before = None
        if self._phase == "probe":
            return self._next_probe(now, iv, condition)
        if self._phase == "send":
            step = self._next_send(now, iv)
            if step is not None:
                return step
        if self._phase == "close":
            return self._next_close(now, iv)
        return None

    def on_reply(self, sequence: int, reply: IlpReply) -> ReplyOutcome:
        """Account for the Fulfill or Reject answering packet ``sequence``."""
        flight = self._in_flight.pop(sequence, None)
        if flight is None:
            raise LocalProtocolError(f"no packet with sequence {sequence} is in flight")
        fulfilled = isinstance(reply, IlpFulfill)
        code = "" if isinstance(reply, IlpFulfill) else reply.code
        if flight.kind == "close":
            self._on_close_reply(sequence, reply)
            return ReplyOutcome(sequence, "close", fulfilled, 0, 0, code)
        if self._phase == "done" or (self._error is not None and flight.kind == "probe"):
            # a late answer to a probe of a connection that already failed
            self._volley_sent.pop(sequence, None)
            return ReplyOutcome(sequence, flight.kind, fulfilled, flight.amount, 0, code)
        try:
            if flight.kind == "probe":
                return self._on_probe_reply(sequence, flight, reply)
            return self._on_send_reply(sequence, flight, reply)
        except _Violation as exc:
            if (
                isinstance(reply, IlpFulfill)
                and not flight.counted
                and self._fulfillment_ok(flight, reply)
            ):
                # paid, but the reply cannot be trusted: count the guaranteed minimum
                self._count_fulfilled(flight, flight.min_destination)
            self._fail(
                StreamSendError(f"STREAM protocol error: {exc}", reason="protocol"),
                stream_code=exc.stream_code,
            )
            return ReplyOutcome(sequence, flight.kind, fulfilled, flight.amount, 0, code)

    def on_send_failure(self, sequence: int, reason: str) -> None:
        """The transport could not deliver packet ``sequence`` (or lost its answer).

        Whether a money packet in flight was paid is unknown; it is not counted.  The
        connection fails (no closing packet: the transport is broken).
        """
        flight = self._in_flight.pop(sequence, None)
        if flight is None:
            raise LocalProtocolError(f"no packet with sequence {sequence} is in flight")
        self._volley_sent.pop(sequence, None)
        if flight.kind == "close":
            self._phase = "done"
            return
        self._fail(StreamSendError(f"the uplink failed: {reason}", reason="link"), close=False)

    # ------------------------------------------------------------------ building

    def _expires_at(self, now: datetime) -> datetime:
        at = now + self._expiry
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    def _account_frames(self) -> list[Frame]:
        # §10: "each carrying ConnectionNewAddress and ConnectionAssetDetails until the
        # server has answered once" -- only when the caller asked for it
        if self._source_address is None or self._answered:
            return []
        frames: list[Frame] = [ConnectionNewAddress(self._source_address)]
        if self._source_asset is not None:
            frames.append(ConnectionAssetDetails(*self._source_asset))
        return frames

    def _stream_frames(self) -> list[Frame]:
        # §10: "per open stream a StreamMaxMoney and StreamMaxData frame"; we take no
        # money (receiveMax 0) and accept receive_window bytes beyond what was read
        self._stream_opened = True
        return [
            StreamMaxMoney(self.stream_id, 0, 0),
            StreamMaxData(self.stream_id, self._in_read + self._receive_window),
        ]

    def _build(
        self,
        kind: PacketKind,
        now: datetime,
        iv: bytes,
        amount: int,
        minimum: int,
        frames: list[Frame],
        *,
        condition: bytes | None = None,
        data_frames: tuple[StreamData, ...] = (),
    ) -> OutgoingPacket:
        if len(iv) != 12:
            raise ConfigError("iv", f"must be 12 bytes, got {len(iv)}")
        self._sequence += 1
        self._prepares += 1
        packet = StreamPacket(self._sequence, ILP_PREPARE, minimum, tuple(frames))
        data = seal_packet(self._keys, iv, packet)
        if condition is None:
            execution_condition = self._keys.condition(data)
        else:
            if len(condition) != 32:
                raise ConfigError("condition", f"must be 32 bytes, got {len(condition)}")
            execution_condition = bytes(condition)
        prepare = IlpPrepare(
            amount, self._expires_at(now), execution_condition, self.destination, data
        )
        self._in_flight[self._sequence] = _InFlight(kind, prepare, amount, minimum, data_frames)
        return OutgoingPacket(
            self._sequence, kind, prepare, packet, amount, minimum, condition is None
        )

    def _may_build(self) -> bool:
        """Whether another (non-closing) packet is allowed; fails the connection if not."""
        if self._prepares >= self._max_packets:
            self._fail(
                StreamSendError(
                    f"gave up after {self._prepares} packets (max_packets)", reason="limit"
                )
            )
            return False
        if self._sequence >= MAX_SEQUENCE - 1:  # keep one sequence for the close
            self._fail(
                StreamSendError("the connection ran out of sequence numbers", reason="limit"),
                stream_code=ErrorCode.INTERNAL_ERROR,
            )
            return False
        return True

    # ------------------------------------------------------------------ probe

    def _next_probe(
        self, now: datetime, iv: bytes, condition: bytes
    ) -> OutgoingPacket | Wait | None:
        if self._volley:
            if not self._may_build():
                return self._after_failure(now, iv)
            amount = self._volley.pop(0)
            # §10 / 2.7.1 sendTestPacket: prepareAmount 0, no stream frames, random condition
            out = self._build(
                "probe", now, iv, amount, 0, self._account_frames(), condition=condition
            )
            self._volley_sent[out.sequence] = amount
            self._probed.add(amount)
            return out
        return Wait(None)

    def _after_failure(self, now: datetime, iv: bytes) -> OutgoingPacket | Wait | None:
        if self._phase == "close":
            return self._next_close(now, iv)
        return None

    def _on_probe_reply(self, sequence: int, flight: _InFlight, reply: IlpReply) -> ReplyOutcome:
        amount = self._volley_sent.pop(sequence, flight.amount)
        result = _ProbeResult(amount)
        if isinstance(reply, IlpFulfill):
            raise _Violation("a rate probe (random condition) was fulfilled")
        result.code = reply.code
        result.reject = reply
        if reply.code == "F99" and reply.data:
            packet = self._open_reply(sequence, reply)
            self._answered = True
            self._apply_frames(packet.frames)
            result.arrived = packet.prepare_amount
            self._probe_results[amount] = packet.prepare_amount
        elif reply.code == "F08":
            result.f08 = True
            result.f08_maximum = path_maximum_from_f08(amount, reply.data)
        self._volley_results.append(result)
        if not self._volley and not self._volley_sent:
            self._end_volley()
        return ReplyOutcome(sequence, "probe", False, amount, 0, reply.code)

    def _end_volley(self) -> None:
        results, self._volley_results = self._volley_results, []
        if self._remote_closed:
            self._fail(self._remote_close_error("during the rate probe"), close=False)
            return
        learnt: list[int] = []
        for r in results:
            if r.f08:
                maximum = r.f08_maximum if r.f08_maximum is not None else r.amount - 1
                learnt.append(maximum)
                self._path_max = maximum if self._path_max is None else min(self._path_max, maximum)
        if self._path_max == 0:
            # 2.7.1: "Cannot send. Path has a Maximum Packet Amount of 0"
            self._fail(
                StreamSendError("the path's maximum packet amount is 0 (F08)", reason="limit"),
                close=False,
            )
            return
        # the answer "whose arrived amount has the most digits" (over every volley)
        arrivals = [(a, n) for a, n in self._probe_results.items() if n > 0]
        best = max(arrivals, key=lambda p: (_digits(p[1]), p[0]), default=None)
        if best is not None and _digits(best[1]) >= self._min_rate_digits:
            self._set_probed_rate(best)
            return
        temporary = [r for r in results if r.code[:1] == "T"]
        # §10: retry "with amounts learnt from F08s"; after T-errors add the smallest
        # failed amount minus a third, "waiting 100 ms x1.5"
        next_amounts = [a for a in dict.fromkeys(learnt) if a > 0 and a not in self._probed]
        if temporary:
            smallest = min(r.amount for r in temporary)
            reduced = smallest - smallest // 3
            if reduced > 0:
                next_amounts.append(reduced)
        if next_amounts and self._volleys < self._max_probe_volleys:
            self._volleys += 1
            self._volley = list(dict.fromkeys(next_amounts))
            self._probed.difference_update(self._volley)
            if temporary:
                self._delay = self._probe_backoff
                self._probe_backoff = min(
                    self._max_backoff, self._probe_backoff * _PROBE_BACKOFF_FACTOR
                )
            return
        if best is not None:
            # no larger probe possible: take the rate we have (2.7.1 would give up)
            self._set_probed_rate(best)
            return
        answered = [r for r in results if r.arrived is not None]
        finals = [
            r
            for r in results
            if r.reject is not None and not r.f08 and r.arrived is None and r.code[:1] != "T"
        ]
        if finals and not answered:
            last = finals[0].reject
            assert last is not None
            self._fail(
                StreamSendError(
                    f"rate probe rejected with {_describe(last)}"
                    + ("" if last.data or last.code != "F99" else " (no STREAM reply)"),
                    reason="rejected",
                    code=last.code,
                    ilp_message=last.message,
                    triggered_by=last.triggered_by,
                ),
                close=False,
            )
            return
        seen = ", ".join(f"{a} -> {n}" for a, n in sorted(self._probe_results.items()))
        rejects = [r.reject for r in results if r.reject is not None and r.arrived is None]
        last_reject = rejects[-1] if rejects else None
        detail = f"; arrived: {seen}" if seen else ""
        if last_reject is not None:
            detail += f"; last reject: {_describe(last_reject)}"
        self._fail(
            StreamSendError(
                f"rate probe failed after {self._volleys} volleys: no test packet delivered "
                f"a usable amount{detail}",
                reason="rate",
                code=last_reject.code if last_reject is not None else "",
                ilp_message=last_reject.message if last_reject is not None else "",
                triggered_by=last_reject.triggered_by if last_reject is not None else "",
            ),
            close=self._answered,
        )

    def _set_probed_rate(self, best: tuple[int, int]) -> None:
        rate = Fraction(best[1], best[0])
        self._rate = self._probe_rate = rate
        self._phase = "send"
        if self._min_destination_amount and self.amount:
            expected = floor(rate * self.amount)
            if expected < self._min_destination_amount:
                self._fail(
                    StreamSendError(
                        f"the exchange rate is too low: {self.amount} would deliver about "
                        f"{expected}, less than the minimum {self._min_destination_amount}",
                        reason="rate",
                        arrived=expected,
                    )
                )

    # ------------------------------------------------------------------ money and data

    def _money_cap(self) -> int | None:
        """The largest source amount the next money packet may carry (None: no money)."""
        left = self.amount - self._sent
        if left <= 0:
            return None
        cap = left
        limit = self.max_packet_amount
        if limit is not None:
            cap = min(cap, limit)
        rate = self._rate
        assert rate is not None
        if rate > 1:
            # keep floor(rate x amount) within a UInt64
            cap = min(cap, floor(MAX_UINT64 / rate))
        if self._remote_receive_max is not None:
            # what it said it received, or what its Fulfills said arrived, if more
            room = self._remote_receive_max - max(self._remote_received, self._delivered)
            if room <= 0:
                return 0
            # 2.7.1: maxSourceAmount = ceil(maxDestinationAmount / rate)
            cap = min(cap, ceil(room / rate))
        return cap

    def _next_send(self, now: datetime, iv: bytes) -> OutgoingPacket | Wait | None:
        if self._in_flight:
            return Wait(None)
        if self._ended:
            self._phase = "close"
            return None
        cap = self._money_cap()
        if cap == 0 and self._amount_is_limit:
            cap = None  # the receiver's limit is reached: the money is done
        if cap == 0:
            self._fail(
                StreamSendError(
                    f"the receiver accepts no more money on stream {self.stream_id} "
                    f"(receiveMax {self._remote_receive_max}, received {self._remote_received})",
                    reason="limit",
                ),
                stream_code=ErrorCode.APPLICATION_ERROR,
            )
            return None
        if cap is not None:
            if not self._may_build():
                return None
            assert self._rate is not None
            minimum = minimum_destination_amount(self._rate, cap, self._slippage)
            frames = self._account_frames() + self._stream_frames()
            # §10: "then StreamMoney (shares = source amount)"
            frames.append(StreamMoney(self.stream_id, cap))
            data_frames = self._take_data(frames, minimum)
            frames.extend(data_frames)
            return self._build("money", now, iv, cap, minimum, frames, data_frames=data_frames)
        if self._out_queue:
            if not self._may_build():
                return None
            frames = self._account_frames() + self._stream_frames()
            data_frames = self._take_data(frames, 0)
            if data_frames:
                frames.extend(data_frames)
                return self._build("data", now, iv, 0, 0, frames, data_frames=data_frames)
            # blocked by the receiver's window: ask again later (bounded)
            frames.append(StreamDataBlocked(self.stream_id, self._out_written))
            return self._poll(now, iv, frames, "the receiver's data window stays closed")
        if self.received_data < self._min_incoming:
            frames = self._account_frames() + self._stream_frames()
            return self._poll(
                now,
                iv,
                frames,
                f"the receiver sent {self.received_data} of the {self._min_incoming} bytes "
                "we waited for",
            )
        if self._hold:
            return Wait(None)  # until end()
        self._phase = "close"
        return None

    def _poll(
        self, now: datetime, iv: bytes, frames: list[Frame], why: str
    ) -> OutgoingPacket | Wait | None:
        """A zero-amount packet that gives the receiver a chance to reply with data or
        a larger window: the first at once, then after a doubling pause (bounded)."""
        if self._polls >= self._max_polls:
            self._fail(StreamSendError(f"{why} (after {self._polls} polls)", reason="limit"))
            return None
        if self._polls and not self._poll_waited:
            self._poll_waited = True
            delay = min(self._max_backoff, self._initial_backoff * 2 ** min(self._polls - 1, 30))
            self._not_before = now + timedelta(seconds=delay)
            return Wait(delay)
        if not self._may_build():
            return None
        self._poll_waited = False
        self._polls += 1
        return self._build("data", now, iv, 0, 0, frames)

    def _take_data(self, frames: list[Frame], minimum: int) -> tuple[StreamData, ...]:
        """StreamData frames from the queue that fit the packet and the remote windows."""
        if not self._out_queue:
            return ()
        window = self._remote_stream_window
        if self._remote_connection_window is not None:
            window = min(window, self._remote_connection_window)
        used = len(
            encode_stream_packet(StreamPacket(MAX_SEQUENCE, ILP_PREPARE, minimum, tuple(frames)))
        )
        budget = MAX_PLAINTEXT_LENGTH - used
        taken: list[StreamData] = []
        while self._out_queue and budget > _DATA_FRAME_OVERHEAD:
            chunk = self._out_queue[0]
            room = min(budget - _DATA_FRAME_OVERHEAD, window - chunk.offset)
            if room <= 0:
                break
            if len(chunk.data) <= room:
                taken.append(self._out_queue.pop(0))
                budget -= len(chunk.data) + _DATA_FRAME_OVERHEAD
                continue
            taken.append(StreamData(chunk.stream_id, chunk.offset, chunk.data[:room]))
            self._out_queue[0] = StreamData(chunk.stream_id, chunk.offset + room, chunk.data[room:])
            break
        return tuple(taken)

    def _requeue(self, flight: _InFlight) -> None:
        # "a resend repeats the exact frame": put the fragments back, in offset order
        if flight.data_frames:
            self._out_queue = sorted(
                [*flight.data_frames, *self._out_queue], key=lambda f: f.offset
            )

    def _on_send_reply(self, sequence: int, flight: _InFlight, reply: IlpReply) -> ReplyOutcome:
        money = flight.kind == "money"
        if isinstance(reply, IlpFulfill):
            if not self._fulfillment_ok(flight, reply):
                raise _Violation("the fulfillment does not match the condition")
            delivered = flight.min_destination
            if reply.data:
                packet = self._open_reply(sequence, reply)
                self._answered = True
                delivered = packet.prepare_amount
            else:
                packet = None
                if money:
                    # money moved but the receiver did not say how much arrived
                    self._fulfills_without_reply += 1
            self._count_fulfilled(flight, delivered)
            if packet is not None:
                self._apply_frames(packet.frames)
            self._check_remote_close()
            return ReplyOutcome(
                sequence, flight.kind, True, flight.amount, delivered if money else 0
            )
        self._requeue(flight)
        if money:
            self._rejected += 1
        code = reply.code
        if code == "F08":
            self._on_too_large(flight, reply)
        elif code[:1] == "T":
            if code == "T04":
                # 2.7.1 onInsufficientLiquidityError: "T04 shrinks it by ⅓"
                m = flight.amount if self._test_max is None else min(flight.amount, self._test_max)
                self._test_max = max(1, m - m // 3)
            self._retry(f"{_describe(reply)}", reply, backoff=True)
        elif code == "F99" and reply.data:
            packet = self._open_reply(sequence, reply)
            self._answered = True
            self._apply_frames(packet.frames)
            self._on_f99(flight, reply, packet)
        else:
            self._fail(
                StreamSendError(
                    f"packet rejected with {_describe(reply)}"
                    + (" (no STREAM reply)" if code == "F99" else ""),
                    reason="rejected",
                    code=code,
                    ilp_message=reply.message,
                    triggered_by=reply.triggered_by,
                ),
                close=code == "F99",
            )
        return ReplyOutcome(sequence, flight.kind, False, flight.amount, 0, code)

    def _fulfillment_ok(self, flight: _InFlight, reply: IlpFulfill) -> bool:
        return constant_time_equal(sha256(reply.fulfillment), flight.prepare.execution_condition)

    def _count_fulfilled(self, flight: _InFlight, delivered: int) -> None:
        if flight.kind != "money" or flight.counted:
            return
        flight.counted = True
        self._sent += flight.amount
        self._delivered += delivered
        self._fulfilled += 1
        self._failures = 0
        self._backoff = self._initial_backoff
        # 2.7.1 congestion onFulfill: raise a T04-lowered test limit again
        test = self._test_max
        if test is not None and flight.amount >= test:
            top = self._path_max if self._path_max is not None else self._own_max
            if top is None:
                self._test_max = test * 2
            elif test < top:
                self._test_max = min(top, test + max(1, top // 10))
            else:
                self._test_max = None

    def _on_too_large(self, flight: _InFlight, reply: IlpReject) -> None:
        maximum = path_maximum_from_f08(flight.amount, reply.data)
        if maximum is None:
            # 2.7.1: maximum = amountSent - 1, next try half of it
            maximum = flight.amount - 1
            self._test_max = max(1, maximum // 2) if maximum > 0 else None
        else:
            self._test_max = None
        self._path_max = maximum if self._path_max is None else min(self._path_max, maximum)
        if self._path_max <= 0:
            self._fail(
                StreamSendError(
                    "the path's maximum packet amount is 0 (F08)",
                    reason="limit",
                    code="F08",
                    ilp_message=reply.message,
                    triggered_by=reply.triggered_by,
                ),
                close=False,
            )

    def _on_f99(self, flight: _InFlight, reply: IlpReject, packet: StreamPacket) -> None:
        if self._remote_closed:
            self._fail(self._remote_close_error("and rejected our packet"), close=False)
            return
        if self._remote_stream_closed:
            self._fail(self._remote_close_error("(stream closed)"))
            return
        arrived = packet.prepare_amount
        if flight.kind != "money":
            self._retry(f"zero-amount packet refused ({_describe(reply)})", reply, backoff=True)
            return
        if arrived < flight.min_destination:
            # §9 step 6: "This is how senders learn the exchange rate went bad"
            if arrived == 0:
                self._fail(
                    StreamSendError(
                        "nothing arrives at the receiver any more (the exchange rate fell to 0)",
                        reason="rate",
                        code=reply.code,
                        triggered_by=reply.triggered_by,
                        arrived=0,
                    )
                )
                return
            self._rate = Fraction(arrived, flight.amount)
            self._retry(
                f"less arrived than the minimum ({arrived} < {flight.min_destination})",
                reply,
                backoff=False,
                arrived=arrived,
            )
            return
        cap = self._money_cap()
        if cap is not None and cap < flight.amount:
            # the receiver's StreamMaxMoney says the packet was too large for its room
            self._retry("the receiver's receive limit is lower", reply, backoff=False)
            return
        self._fail(
            StreamSendError(
                f"the receiver refused the packet ({_describe(reply)}, {arrived} arrived)",
                reason="rejected",
                code=reply.code,
                ilp_message=reply.message,
                triggered_by=reply.triggered_by,
                arrived=arrived,
            )
        )

    def _retry(
        self, why: str, reply: IlpReject, *, backoff: bool, arrived: int | None = None
    ) -> None:
        self._failures += 1
        if self._failures > self._max_retries:
            self._fail(
                StreamSendError(
                    f"gave up after {self._failures} failed attempts in a row (last: {why})",
                    reason="retries",
                    code=reply.code,
                    ilp_message=reply.message,
                    triggered_by=reply.triggered_by,
                    arrived=arrived,
                ),
                close=reply.code[:1] != "T",
            )
            return
        if backoff:
            self._delay = self._backoff
            self._backoff = min(self._max_backoff, self._backoff * 2)

    # ------------------------------------------------------------------ replies

    def _open_reply(self, sequence: int, reply: IlpReply) -> StreamPacket:
        """Decrypt and check a reply: §5 "a 2.7.1 sender treats [a wrong type or
        sequence] as fatal and destroys the connection"."""
        try:
            packet = open_packet(self._keys, reply.data)
        except DecodeError as exc:
            raise _Violation(f"the reply data does not decrypt/decode: {exc}") from None
        if packet.sequence != sequence:
            raise _Violation(f"the reply answers sequence {packet.sequence}, we sent {sequence}")
        expected = ILP_FULFILL if isinstance(reply, IlpFulfill) else ILP_REJECT
        if packet.ilp_packet_type != expected:
            raise _Violation(
                f"the reply says ILP packet type {int(packet.ilp_packet_type)} but came in a "
                f"{'Fulfill' if expected == ILP_FULFILL else 'Reject'} ({int(expected)})"
            )
        return packet

    def _apply_frames(self, frames: tuple[Frame, ...]) -> None:
        sid = self.stream_id
        for frame in frames:
            if isinstance(frame, ConnectionClose):
                self._remote_closed = True
                self._remote_close_code = frame.error_code
                self._remote_close_message = frame.error_message
            elif isinstance(frame, StreamMaxMoney):
                if frame.stream_id != sid:
                    continue
                # §11 "Advertisements never shrink"; 2.7.1 keeps the first value it
                # learns, then only larger ones (unless it was "unlimited")
                self._remote_received = max(self._remote_received, frame.total_received)
                old = self._remote_receive_max
                if old is None or old == MAX_UINT64:
                    self._remote_receive_max = frame.receive_max
                else:
                    self._remote_receive_max = max(old, frame.receive_max)
            elif isinstance(frame, StreamMaxData):
                if frame.stream_id == sid and frame.max_offset > self._remote_stream_window:
                    self._remote_stream_window = frame.max_offset
                    self._polls = 0
            elif isinstance(frame, ConnectionMaxData):
                old_window = self._remote_connection_window
                if old_window is None or frame.max_offset > old_window:
                    self._remote_connection_window = frame.max_offset
            elif isinstance(frame, StreamData):
                if frame.stream_id == sid:
                    self._on_data(frame)
            elif isinstance(frame, StreamClose):
                if frame.stream_id == sid:
                    self._remote_stream_closed = True
                    self._remote_close_code = frame.error_code
                    self._remote_close_message = frame.error_message
            elif isinstance(frame, StreamReceipt):
                if frame.stream_id == sid:
                    self._receipt = frame.receipt
            elif isinstance(frame, ConnectionAssetDetails):
                self._remote_asset = (frame.source_asset_code, frame.source_asset_scale)

    def _on_data(self, frame: StreamData) -> None:
        end = frame.offset + len(frame.data)
        allowed = self._in_read + self._receive_window
        if end > allowed:
            # §11: "Exceeding either closes the connection with FlowControlError"
            raise _Violation(
                f"the receiver sent bytes up to offset {end}; we allowed {allowed}",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        have = self.received_data
        if end <= have or not frame.data:
            return  # a resend of bytes we already have
        if frame.offset > have:
            if len(self._in_pending) >= _MAX_PENDING_CHUNKS:
                raise _Violation("too many out-of-order data fragments")
            self._in_pending[frame.offset] = frame.data
            return
        self._in_buffer += frame.data[have - frame.offset :]
        self._polls = 0
        while self._in_pending:
            have = self.received_data
            ready = [o for o in self._in_pending if o <= have]
            if not ready:
                break
            for offset in sorted(ready):
                chunk = self._in_pending.pop(offset)
                if offset + len(chunk) > have:
                    self._in_buffer += chunk[have - offset :]
                    have = self.received_data

    def _remote_close_error(self, when: str) -> StreamSendError:
        code = self._remote_close_code
        name = ErrorCode(code).name if code is not None and 1 <= code <= 9 else str(code)
        what = "connection" if self._remote_closed else "stream"
        message = f": {self._remote_close_message!r}" if self._remote_close_message else ""
        return StreamSendError(
            f"the receiver closed the {what} {when} ({name}{message}); "
            f"{self._sent} of {self.amount} sent",
            reason="remote_closed",
            stream_error=code,
        )

    def _check_remote_close(self) -> None:
        if not (self._remote_closed or self._remote_stream_closed):
            return
        money_done = self._ended or self._sent >= self.amount
        if not money_done and self._amount_is_limit and self._rate is not None:
            money_done = self._money_cap() == 0  # the receiver's limit is reached
        complete = money_done and not self._out_queue
        if complete and (self._ended or self.received_data >= self._min_incoming):
            if self._remote_closed:
                self._phase = "done"  # nothing more to say: no close of our own
            return
        self._fail(self._remote_close_error("early"), close=not self._remote_closed)

    # ------------------------------------------------------------------ closing

    def _fail(
        self,
        error: StreamSendError,
        *,
        close: bool = True,
        stream_code: int = ErrorCode.APPLICATION_ERROR,
    ) -> None:
        if self._error is None:
            self._error = error
        self._volley.clear()
        if (
            close
            and self._close_enabled
            and self._answered
            and not self._remote_closed
            and not self._close_sent
        ):
            self._phase = "close"
            self._close_code = stream_code
            self._close_message = str(error)[:200]
        else:
            self._phase = "done"

    def _next_close(self, now: datetime, iv: bytes) -> OutgoingPacket | Wait | None:
        if self._close_sent:
            return Wait(None) if any(f.kind == "close" for f in self._in_flight.values()) else None
        if not self._close_enabled or self._remote_closed or (not self._answered and self._error):
            self._phase = "done"
            return None
        if any(f.kind != "probe" for f in self._in_flight.values()):
            return Wait(None)
        # §12 / §10: a zero-amount fulfillable Prepare "carrying StreamClose +
        # ConnectionClose"
        frames: list[Frame] = []
        if self._stream_opened and not self._remote_stream_closed:
            frames.append(StreamClose(self.stream_id, self._close_code, self._close_message))
        frames.append(ConnectionClose(self._close_code, self._close_message))
        self._close_sent = True
        return self._build("close", now, iv, 0, 0, frames)

    def _on_close_reply(self, sequence: int, reply: IlpReply) -> None:
        self._close_reply = reply
        self._phase = "done"
        # read what the reply says (data, receipts) but never fail over it: the money
        # is settled and the connection is over either way
        if reply.data and (isinstance(reply, IlpFulfill) or reply.code == "F99"):
            try:
                packet = self._open_reply(sequence, reply)
                self._apply_frames(packet.frames)
            except _Violation:
                pass


def _describe(reply: IlpReject) -> str:
    text = reply.code
    if reply.message:
        text += f" {reply.message!r}"
    if reply.triggered_by:
        text += f" from {reply.triggered_by}"
    return text
