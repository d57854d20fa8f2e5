"""The sans-I/O STREAM server: the receiver side of RFC 29 as ilp-protocol-stream 2.7.1
clients expect it (spec ``12-stream.md`` §2.3, §5-§12, §15).

Pure: no sockets, no asyncio, no clock, no randomness.  Time (``now`` for Prepare
expiry, ``monotonic`` for idleness) and every IV are parameters; every table is bounded
(:class:`StreamLimits`).  The wire layer is :mod:`ilp_receiver.codec.stream`, keys and
tokens are :mod:`ilp_receiver.stream.secrets`, receipts :mod:`ilp_receiver.stream.receipts`.

How it is driven (the split is what lets the I/O layer count money before the Fulfill
leaves, exactly once -- the same pattern as :class:`ilp_receiver.psk2.receiver.Psk2Receiver`)::

    server = StreamServer(StreamServerSecrets.from_receiver_secret(secret),
                          asset_code="USD", asset_scale=9)
    server.address = ildcp_address
    destination, shared_secret = server.issue("endpoint:default",
                                              token_nonce=urandom(18), iv=urandom(12))
    ...
    iv = urandom(12)                     # exactly one encrypted reply leaves per Prepare
    decision = server.handle_prepare(prepare, datetime.now(UTC), time.monotonic(), iv=iv)
    if isinstance(decision, StreamCredit):
        ...ask the application (decision.account, decision.amount, decision.packet_id)...
        result = await store.add(decision.account, decision.amount,
                                 idempotency_key=decision.idempotency_key)
        reply = server.fulfill(decision, applied=result.applied, iv=iv)
        # or: reply = server.refuse(decision, iv=iv, limit_reached=True)
    else:
        reply = decision                 # a final IlpReject or IlpFulfill
    for event in server.events(): ...    # opened/closed, streams, data, money
    ...
    for closed in server.expire(time.monotonic()): ...   # now and then

Receiver algorithm: §9 step by step (the 2.7.1 ``Connection.handlePrepare``)::

    expired (expires_at <= now)                    -> R00 "Prepare has expired"  (§15 Q12)
    §2.3 connection id -> no token of ours         -> F02, empty                 (§15 Q1)
    step 1 data does not decrypt / parse           -> F06, empty                 (§15 Q1)
    step 2 ilpPacketType != 12                     -> F06, empty
    step 3 stream frames: money/data for a closed stream -> F99 + StreamClose(StreamStateError)
           even id -> F99 + ConnectionClose(ProtocolViolation)
           id > max stream id -> F99 + ConnectionClose(StreamIdError)
    step 4 control frames (address, asset details, closes, limits, data)
    step 5 connection data limit exceeded          -> F99 + ConnectionClose(FlowControlError)
    step 6 prepareAmount > amount                  -> F99 + reply
    step 7 condition != SHA-256(fulfillment)       -> F99 + reply  (the rate-probe path)
           amount 0                                -> Fulfill (pings, control frames)
    step 8 money without StreamMoney / shares 0    -> F99 + reply                (§15 Q10)
           a stream's part over its limit (+1 %)   -> F99 + StreamMaxMoney       (§15 Q7)
           receipts on and stream id > 255         -> F99 + StreamClose          (§15 Q3)
    steps 9-11                                     -> StreamCredit; fulfill() after crediting

"F99 + reply" is an ILP Reject F99 with an empty message, ``triggeredBy`` = our address,
and data = the encrypted STREAM packet {type 14, the request's sequence, prepareAmount =
the Prepare's amount, frames}.

Open questions of §15, as decided here:

* **Q1** F02 (empty, no data) for a destination whose token does not open under our
  server secret; **F06** (empty, no data) for a token we issued whose data does not
  decrypt, does not parse or is not a type-12 packet -- also on the connection's first
  packet, where 2.7.1 answers F02 (``server_cases.right_token_wrong_secret_first_packet``).
  No connection is created for such a packet.
* **Q2** shares: each stream gets floor(amount x shares / total shares) (several
  StreamMoney frames for one stream add up); the remainder goes to the lowest-numbered
  stream of the packet that can take it (RFC 29) -- within its receiveMax, failing
  that within the 1 % tolerance -- so every credited unit belongs to a stream and the
  connection total is the sum of the stream totals.  2.7.1 drops the remainder from
  the streams (``server_cases.two_streams_split``: 33 + 66 there, 34 + 66 here).  If
  no stream can take it the packet is refused F99 + StreamMaxMoney.
* **Q3** with receipts on, money for a stream id above 255 (a receipt's stream id is a
  UInt8) is refused before anything is credited: F99 + StreamClose(ApplicationError),
  and the stream is closed.
* **Q4** receipts are implemented (behind the token's receipt fields): every Fulfill
  for money carries one StreamReceipt per credited stream with the stream's new total.
* **Q5** the server never originates Prepares.  ConnectionNewAddress is recorded and
  answered in the reply with ConnectionMaxStreamId + ConnectionAssetDetails, as 2.7.1
  queues them.  Data the application writes (:meth:`StreamServer.write`) travels in
  StreamData frames of the encrypted replies (Fulfill and F99 Reject) to the client's
  later packets: 2.7.1 and 1.8.9 clients process the frames of reply packets
  (``handleControlFrames(responsePacket.frames)``).  2.7.1 would send its own Prepares
  instead (``exchanges.data_echo``).
* **Q6** a closed connection is forgotten; a later packet for the same token opens a
  fresh connection (2.7.1).  Balances live in the store per account, so nothing is
  lost.  One refinement: a packet for a connection we do not hold that carries a
  ConnectionClose and no stream frames (the 2.7.1 close notice racing the close, §10)
  is answered without creating state or events.
* **Q7** a stream's part above its limit is refused (F99 + StreamMaxMoney, the
  connection stays) with 2.7.1's 1 % tolerance: allowed = ceil(1.01 x (receiveMax -
  totalReceived)).  The default receiveMax is 2**64-1 ("unlimited": money-receiving
  endpoints), :attr:`StreamLimits.default_receive_max`, per stream through the
  ``receive_max`` policy and :meth:`StreamServer.set_receive_max`.
* **Q9** a ConnectionAssetDetails contradicting an earlier one closes the connection
  (F99 + ConnectionClose(ProtocolViolation)); 2.7.1 silently overwrites.
* **Q10** fulfillable money (amount > 0) with no StreamMoney frame, or StreamMoney
  shares summing to 0: F99 + reply, nothing credited (2.7.1 fulfils the first and
  answers F00 to the second).
* **Q12** expired Prepares (``expires_at <= now``) are refused R00 "Prepare has
  expired", like the PSK2 receiver.
* **Q15** the connection tag carries the account, authenticated inside the token.
  Tags are printable ASCII, so account names (any UTF-8) are percent-encoded: bytes
  outside 0x20-0x7e and ``%`` become ``%XX`` (:func:`account_to_tag`, reversible by
  :func:`tag_to_account`); an account whose encoding exceeds the 128-character tag
  limit is refused with ConfigError.

Other behaviour worth knowing:

* Stream ids (§6): client streams are odd; even -> ConnectionClose(ProtocolViolation),
  above the max stream id -> ConnectionClose(StreamIdError), both in the F99 reply with
  2.7.1's messages.  Like 2.7.1 the connection's state is kept after these two (its
  client destroys its side on reading the frame); the packet is not processed further.
  The max stream id starts at 20 (10 concurrent streams) and grows by 2 for every
  closed stream -- closed by the client (as 2.7.1) or by this server -- announced with
  ConnectionMaxStreamId; a new id above 3/4 of the maximum also announces it (2.7.1).
* Closed streams cost no memory: clients allocate ids in increasing order (2.7.1
  ``nextStreamId += 2``), so the highest id ever opened is a watermark and any odd id
  at or below it that is not open is closed.  Money or data for it: F99 +
  StreamClose(StreamStateError, "Stream is already closed"); Max frames are ignored.
* A StreamClose from the client takes effect after the rest of its packet: money and
  data in the same packet still count, and the reply still reports the stream (2.7.1
  ends its stream asynchronously, ``server_cases.close_stream_1``).
* ConnectionClose from the client closes the connection after its packet (money in it
  is still credited) and is reported as :class:`ConnectionClosed` with the totals --
  for a packet answered by a :class:`StreamCredit`, when that credit is settled.
* Data (§11): in-order bytes are delivered as :class:`DataReceived` events at once
  and not retained; out-of-order fragments are buffered only inside the advertised
  windows (StreamMaxData = bytes read + 16384, ConnectionMaxData = bytes read on open
  streams + 65534, as 2.7.1 advertises them).  Resent bytes (a rejected packet's data
  comes again) are dropped by offset.  Exceeding a window closes the connection with
  FlowControlError (F99 + ConnectionClose; 2.7.1 sends that close in a Prepare of its
  own).  When the server-wide buffer budget or the per-stream fragment count is
  exhausted the packet is refused T00 without data; the frames before the refused one
  stay applied, which is safe because every frame is idempotent when the client
  resends the packet (2.7.1 ``undoRejectedPacket`` resends data, StreamClose and money).
* Sending: :meth:`StreamServer.write` queues bytes (bounded per stream, connection and
  server; returns what was accepted).  Replies carry them within the client's
  StreamMaxData (16384 per stream until told) and ConnectionMaxData (65534 until
  told) and within 32767 bytes of ILP data.  Bytes in a reply that never reaches the
  client are lost: a receiver that only answers cannot retransmit (the client would
  wait at the gap).  With ``echo_data`` every received byte is written back.
* Reply frames follow 2.7.1: ConnectionMaxData first; in Fulfills, once the client
  sent ConnectionNewAddress and while the connection is open, StreamMaxMoney +
  StreamMaxData per open stream in id order; the frames of the refusal (Rejects);
  receipts; the queued frames (ConnectionMaxStreamId, ConnectionAssetDetails,
  ConnectionClose); then StreamData and the StreamClose of streams this server closed
  once their data is out.  Replies carrying a ConnectionClose carry no data.
* Bounded memory: at most :attr:`StreamLimits.max_connections` connections (the
  least recently active one is evicted beyond it and reported as closed -- safe,
  balances are in the store), idle ones are forgotten by :meth:`StreamServer.expire`
  (60 s, 2.7.1's idle timeout; 2.7.1 sends a ConnectionClose then, we stay silent),
  at most ``max_stream_id / 2`` open streams per connection (10 by default: the
  stream id rule), buffers and queues capped per stream, per connection and
  server-wide, pending events capped.  The opened-token LRU of
  :class:`~ilp_receiver.stream.secrets.StreamServerSecrets` and the AES key LRU of
  :mod:`ilp_receiver.crypto` have their own bounds.
* Races the sans-I/O split allows (a credit settled after its connection was closed,
  two credits of one stream pending at once) are resolved in favour of the store: the
  money is credited to the stream object the credit holds; only in-memory totals and
  the per-stream limit check can lag, exactly as with 2.7.1's asynchronous
  ``shouldFulfill``.

Speed: per money packet on an existing connection there is one dictionary lookup,
one AES-GCM open, one decode, one HMAC (the fulfillment) and one SHA-256, then one
encode and one AES-GCM seal of the reply; reply frames are written directly as bytes.
The packet id (a second HMAC) is computed only when asked for.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Final, TypeVar

from ..codec.address import MAX_ADDRESS_LENGTH
from ..codec.ilp import ErrorCode as IlpErrorCode
from ..codec.ilp import IlpFulfill, IlpPrepare, IlpReject, fulfill_packet
from ..codec.oer import MAX_UINT64, encode_length_prefix
from ..codec.stream import (
    MAX_PLAINTEXT_LENGTH,
    ConnectionAssetDetails,
    ConnectionClose,
    ConnectionMaxData,
    ConnectionNewAddress,
    ErrorCode,
    StreamClose,
    StreamData,
    StreamMaxData,
    StreamMaxMoney,
    StreamMoney,
    StreamPacket,
    decode_stream_packet,
    encode_frame,
)
from ..crypto import (
    EnvelopeKey,
    constant_time_equal,
    open_envelope,
    require_aes256gcm,
    seal_envelope,
    sha256,
)
from ..errors import ConfigError, DecodeError, EncodeError, LocalProtocolError
from ..psk2.receiver import EXPIRED_MESSAGE
from .receipts import MAX_RECEIPT_STREAM_ID, create_receipt
from .secrets import (
    MAX_CONNECTION_TAG_LENGTH,
    ConnectionToken,
    IssuedStreamSecret,
    StreamKeys,
    StreamServerSecrets,
    UnknownTokenError,
    connection_id_from_destination,
)

__all__ = [
    "ASSET_DETAILS_CHANGED",
    "BUFFER_FULL_MESSAGE",
    "DEFAULT_CONNECTION_RECEIVE_WINDOW",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_STREAM_ID",
    "DEFAULT_STREAM_RECEIVE_WINDOW",
    "EXPIRED_MESSAGE",
    "LIMIT_REACHED_MESSAGE",
    "RECEIPT_STREAM_ID_MESSAGE",
    "STREAM_CLOSED_MESSAGE",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionInfo",
    "ConnectionOpened",
    "DataReceived",
    "Decision",
    "MoneyReceived",
    "ReceiveMaxPolicy",
    "StreamClosed",
    "StreamCredit",
    "StreamEvent",
    "StreamInfo",
    "StreamLimits",
    "StreamOpened",
    "StreamServer",
    "StreamSetup",
    "account_to_tag",
    "not_a_prepare_reject",
    "tag_to_account",
]

#: §6 / §11: "each side accepts stream ids up to 20 by default (10 concurrent per side)".
DEFAULT_MAX_STREAM_ID: Final = 20
#: §11: "StreamMaxData maxOffset = bytes read so far + free buffer (2.7.1: Node's
#: 16384-byte high-water mark; a sender assumes 16384 until told)".
DEFAULT_STREAM_RECEIVE_WINDOW: Final = 16384
#: §11: "ConnectionMaxData = total read + 65534 (2 x 32767) - buffered".
DEFAULT_CONNECTION_RECEIVE_WINDOW: Final = 65534
#: §12: "Idle timeout 60 s without packets".
DEFAULT_IDLE_TIMEOUT: Final = 60.0
DEFAULT_MAX_CONNECTIONS: Final = 10_000

#: §9 step 3 / §12: money or data for a closed stream (2.7.1's text).
STREAM_CLOSED_MESSAGE: Final = "Stream is already closed"
#: §15 Q9: the message of the ConnectionClose(ProtocolViolation) we send.
ASSET_DETAILS_CHANGED: Final = "Connection asset details must not change"
#: §15 Q3: the message of the StreamClose refusing money on a stream id above 255.
RECEIPT_STREAM_ID_MESSAGE: Final = "Receipts cannot carry stream ids above 255"
#: The StreamClose message of :meth:`StreamServer.refuse` with ``limit_reached`` on a
#: stream whose limit was already finite.
LIMIT_REACHED_MESSAGE: Final = "Receive limit reached"
#: T00 message when the server-wide receive buffer (out-of-order data) is full.
BUFFER_FULL_MESSAGE: Final = "STREAM receive buffer full"

_F02: Final = IlpErrorCode.F02_UNREACHABLE.value
_F06: Final = IlpErrorCode.F06_UNEXPECTED_PAYMENT.value
_F99: Final = IlpErrorCode.F99_APPLICATION_ERROR.value
_R00: Final = IlpErrorCode.R00_TRANSFER_TIMED_OUT.value
_T00: Final = IlpErrorCode.T00_INTERNAL_ERROR.value
_PREPARE: Final = 12
_FULFILL: Final = 13
_REJECT: Final = 14

# Frame type bytes written directly by the reply encoder (§6).
_T_STREAM_CLOSE: Final = 0x10
_T_STREAM_MAX_MONEY: Final = 0x12
_T_STREAM_DATA: Final = 0x14
_T_STREAM_MAX_DATA: Final = 0x15
_T_STREAM_RECEIPT: Final = 0x17
_T_CONNECTION_MAX_DATA: Final = 0x03
_T_CONNECTION_MAX_STREAM_ID: Final = 0x05

#: Header bound of a reply: version, type, sequence and prepareAmount (<= 9 bytes each),
#: frame count (<= 3 bytes).
_HEADER_BOUND: Final = 2 + 9 + 9 + 3
#: StreamData frame overhead bound: type, contents length (<= 3), stream id and offset
#: (<= 9 each), data length (<= 3).
_DATA_FRAME_OVERHEAD: Final = 1 + 3 + 9 + 9 + 3
#: StreamClose(id, NoError, "") and ConnectionMaxStreamId are at most 13 and 11 bytes.
_CLOSE_FRAMES_BOUND: Final = 13 + 11
_MAX_ASSET_CODE_LENGTH: Final = 64
_MAX_INITIAL_STREAM_ID: Final = 400


# ------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Every bound of a :class:`StreamServer` (memory never grows beyond them).

    * ``max_connections``: connections held; beyond it the least recently active one is
      evicted (reported as :class:`ConnectionClosed` with reason ``evicted``).
    * ``idle_timeout``: seconds without a packet after which :meth:`StreamServer.expire`
      forgets a connection (2.7.1: 60 s).
    * ``default_receive_max``: a new stream's receiveMax (2**64-1 = unlimited, §15 Q7).
    * ``max_stream_id``: the initial max stream id (2.7.1: 20, i.e. 10 client streams);
      the number of concurrently open streams is at most half of it.
    * ``stream_receive_window`` / ``connection_receive_window``: the data windows we
      advertise (StreamMaxData = read + window; ConnectionMaxData = read + window).
    * ``max_fragments_per_stream``: out-of-order fragments held per stream.
    * ``max_buffered_bytes``: out-of-order bytes held server-wide.
    * ``max_queued_bytes_per_stream`` / ``_per_connection`` / ``max_queued_bytes``:
      outgoing bytes :meth:`StreamServer.write` accepts per stream / connection /
      server.
    * ``max_pending_events``: events kept until :meth:`StreamServer.events` drains them
      (the oldest are dropped beyond it and counted in ``events_dropped``).
    * ``echo_data``: write every received byte back on the same stream (the interop
      checker's optional ``data_echo``); off by default, "echo nothing by default".
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    default_receive_max: int = MAX_UINT64
    max_stream_id: int = DEFAULT_MAX_STREAM_ID
    stream_receive_window: int = DEFAULT_STREAM_RECEIVE_WINDOW
    connection_receive_window: int = DEFAULT_CONNECTION_RECEIVE_WINDOW
    max_fragments_per_stream: int = 16
    max_buffered_bytes: int = 16 * 1024 * 1024
    max_queued_bytes_per_stream: int = 65536
    max_queued_bytes_per_connection: int = 262144
    max_queued_bytes: int = 16 * 1024 * 1024
    max_pending_events: int = 4096
    echo_data: bool = False

    def __post_init__(self) -> None:
        positive = (
            "max_connections",
            "stream_receive_window",
            "connection_receive_window",
            "max_fragments_per_stream",
            "max_pending_events",
        )
        for name in positive:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(name, "must be a positive integer")
        for name in (
            "max_buffered_bytes",
            "max_queued_bytes_per_stream",
            "max_queued_bytes_per_connection",
            "max_queued_bytes",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ConfigError(name, "must be a non-negative integer")
        if not isinstance(self.idle_timeout, int | float) or not self.idle_timeout > 0:
            raise ConfigError("idle_timeout", "must be a positive number of seconds")
        if type(self.default_receive_max) is not int or not (
            0 <= self.default_receive_max <= MAX_UINT64
        ):
            raise ConfigError("default_receive_max", "must be an integer in 0..2**64-1")
        if type(self.max_stream_id) is not int or not (
            1 <= self.max_stream_id <= _MAX_INITIAL_STREAM_ID
        ):
            # bounded so that one StreamMaxMoney + StreamMaxData (+ receipt) per open
            # stream always fits in a reply
            raise ConfigError("max_stream_id", f"must be 1..{_MAX_INITIAL_STREAM_ID}")


@dataclass(frozen=True, slots=True)
class StreamSetup:
    """What a :data:`ReceiveMaxPolicy` may say about a stream the client just opened:
    its receive limit, and bytes to send on it at once (they travel in the reply to the
    very packet that opened the stream -- an HTTP-ILP-over-STREAM client waits for the
    server's first byte before it repeats its request)."""

    receive_max: int
    greeting: bytes = b""


#: ``(account, stream_id) -> receiveMax`` (or a :class:`StreamSetup`) for a stream the
#: client just opened (the 2.7.1 application's ``setReceiveMax`` in its ``stream``
#: handler).
ReceiveMaxPolicy = Callable[[str, int], "int | StreamSetup"]


# --------------------------------------------------------------------------- events


class CloseReason(StrEnum):
    """Why a connection was closed (:class:`ConnectionClosed`)."""

    #: The client sent ConnectionClose (§12).
    CLIENT = "client"
    #: This server closed it for a protocol violation (FlowControlError, §15 Q9).
    ERROR = "error"
    #: No packet for ``idle_timeout`` seconds (:meth:`StreamServer.expire`).
    IDLE = "idle"
    #: Evicted to stay within ``max_connections``.
    EVICTED = "evicted"


@dataclass(frozen=True, slots=True)
class ConnectionOpened:
    """A connection was created by its first valid packet (2.7.1 ``connection``)."""

    connection_id: str
    account: str
    receipts_enabled: bool


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """A connection was closed and forgotten.

    ``error_code`` / ``error_message`` are the §7 code and text of the ConnectionClose
    (the client's or ours); None for idle expiry and eviction.  ``total_received`` is
    everything credited on the connection; ``stream_totals`` the (id, total) of the
    streams still open at the close; ``unsent_bytes`` queued data that never left.
    """

    connection_id: str
    account: str
    reason: CloseReason
    error_code: int | None
    error_message: str
    total_received: int
    stream_totals: tuple[tuple[int, int], ...]
    unsent_bytes: int


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The client opened a stream (2.7.1 ``stream``); ``receive_max`` is its limit."""

    connection_id: str
    account: str
    stream_id: int
    receive_max: int


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """A stream closed: by the client (``by_client``, with its §7 code and message) or by
    this server (:meth:`StreamServer.close_stream`, §15 Q3, ``refuse(limit_reached)``)."""

    connection_id: str
    account: str
    stream_id: int
    by_client: bool
    error_code: int
    error_message: str


@dataclass(frozen=True, slots=True)
class DataReceived:
    """In-order bytes of a stream, starting at ``offset`` (delivered once, not kept)."""

    connection_id: str
    account: str
    stream_id: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MoneyReceived:
    """Money credited to a stream (:meth:`StreamServer.fulfill` with ``applied=True``)."""

    connection_id: str
    account: str
    stream_id: int
    amount: int
    stream_total: int


#: Everything :meth:`StreamServer.events` reports.
StreamEvent = (
    ConnectionOpened | ConnectionClosed | StreamOpened | StreamClosed | DataReceived | MoneyReceived
)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A snapshot of one open stream."""

    stream_id: int
    total_received: int
    receive_max: int
    read_offset: int
    queued_bytes: int
    closing: bool


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A snapshot of one connection (:meth:`StreamServer.connection_info`)."""

    connection_id: str
    account: str
    receipts_enabled: bool
    client_address: str | None
    client_asset: tuple[str, int] | None
    total_received: int
    max_stream_id: int
    last_active: float
    streams: tuple[StreamInfo, ...]


# ---------------------------------------------------------------- account <-> tag


def account_to_tag(account: str) -> str:
    """The connection tag carrying ``account`` (§15 Q15): UTF-8 bytes outside printable
    ASCII (0x20-0x7e) and ``%`` become ``%XX``.  ConfigError when the account is empty,
    not encodable, or its tag would exceed the 128-character limit of
    :mod:`ilp_receiver.stream.secrets`."""
    if not isinstance(account, str) or not account:
        raise ConfigError("account", "must be a non-empty str")
    try:
        raw = account.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("account", "is not encodable as UTF-8") from None
    if raw.isascii() and "%" not in account and account.isprintable():
        tag = account
    else:
        tag = "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)
    if len(tag) > MAX_CONNECTION_TAG_LENGTH:
        raise ConfigError(
            "account",
            f"needs a {len(tag)}-character connection tag; the maximum is "
            f"{MAX_CONNECTION_TAG_LENGTH} (bytes outside printable ASCII count 3)",
        )
    return tag


def _hex_value(char: str) -> int:
    return int(char, 16) if char in "0123456789abcdefABCDEF" else -1


def tag_to_account(tag: str) -> str:
    """Invert :func:`account_to_tag`.  Tags written by others (e.g. 2.7.1's own
    ``connectionTag``) are returned unchanged when they are not valid percent-encoded
    UTF-8, so every tag maps to some account."""
    if "%" not in tag:
        return tag
    out = bytearray()
    i = 0
    length = len(tag)
    while i < length:
        char = tag[i]
        if char == "%":
            if i + 2 >= length:
                return tag  # not our encoding
            high, low = _hex_value(tag[i + 1]), _hex_value(tag[i + 2])
            if high < 0 or low < 0:
                return tag
            out.append(high * 16 + low)
            i += 3
            continue
        out += char.encode("ascii", "replace")  # tags are ASCII (secrets.py)
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return tag


# ------------------------------------------------------------------ wire helpers

_VAR_UINT_SMALL: Final = tuple(bytes((1, n)) for n in range(256))
#: SHA-256 and the constant-time comparison of the condition check, without the
#: wrappers of :mod:`ilp_receiver.crypto` (once per money packet).
_sha256: Final = hashlib.sha256
_equal: Final = hmac.compare_digest
#: ``0x12 || length`` for StreamMaxMoney contents (3 VarUInts: at most 27 bytes).
_MAX_MONEY_HEADS: Final = tuple(bytes((_T_STREAM_MAX_MONEY, n)) for n in range(28))
_HEADS: Final = {t: bytes((1, t)) for t in (_PREPARE, _FULFILL, _REJECT)}


def _vu(value: int) -> bytes:
    """Minimal VarUInt (what 2.7.1 writes; ``encode_frame`` writes the same)."""
    if value < 256:
        return _VAR_UINT_SMALL[value]
    size = (value.bit_length() + 7) >> 3
    return bytes((size,)) + value.to_bytes(size, "big")


def _frame(frame_type: int, contents: bytes) -> bytes:
    """``type || var-octet-string(contents)`` (§6)."""
    length = len(contents)
    if length < 128:
        return bytes((frame_type, length)) + contents
    return bytes((frame_type,)) + encode_length_prefix(length) + contents


def _octets(data: bytes) -> bytes:
    length = len(data)
    if length < 128:
        return bytes((length,)) + data
    return encode_length_prefix(length) + data


def _stream_close_frame(stream_id: int, code: int, message: str) -> bytes:
    return encode_frame(StreamClose(stream_id, code, message))


def not_a_prepare_reject(data: bytes, address: str) -> IlpReject:
    """2.7.1's answer to bytes that are not an ILP Prepare (§9 "Other rejects"): F00
    'Expected an ILP Prepare packet (type 12), but got packet with type: N', the only
    reject that carries text.  For the I/O layer, which decodes the ILP packet."""
    kind = str(data[0]) if data else "undefined"
    return IlpReject(
        IlpErrorCode.F00_BAD_REQUEST.value,
        address,
        f"Expected an ILP Prepare packet (type 12), but got packet with type: {kind}",
    )


# ------------------------------------------------------------------ internal state


class _Stream:
    """One client stream (odd id) of a connection."""

    __slots__ = (
        "client_closed",
        "closing",
        "fragments",
        "id",
        "id_bytes",
        "limit_frame",
        "limit_read",
        "max_offset",
        "money_prefix",
        "open",
        "out",
        "out_offset",
        "read_offset",
        "receive_max",
        "remote_max_offset",
        "total",
    )

    def __init__(self, stream_id: int, receive_max: int) -> None:
        self.id = stream_id
        self.id_bytes = _vu(stream_id)
        self.receive_max = receive_max
        #: StreamMaxMoney contents up to the total: ``id || receiveMax``.
        self.money_prefix = self.id_bytes + _vu(receive_max)
        #: The StreamMaxData frame for read offset ``limit_read`` (-1: none yet).
        self.limit_read = -1
        self.limit_frame = b""
        self.total = 0
        self.open = True
        #: Local close requested: StreamClose goes out once ``out`` is empty.
        self.closing = False
        #: The client sent StreamClose (the stream goes after the current packet).
        self.client_closed = False
        # incoming data: delivered up to read_offset; highest byte seen max_offset
        self.read_offset = 0
        self.max_offset = 0
        self.fragments: dict[int, bytes] | None = None
        # outgoing data: ``out`` not yet sent, ``out_offset`` bytes sent so far
        self.out = bytearray()
        self.out_offset = 0
        #: §11 "a sender assumes 16384 until told"; raised by the client's StreamMaxData.
        self.remote_max_offset = DEFAULT_STREAM_RECEIVE_WINDOW

    def set_receive_max(self, receive_max: int) -> None:
        self.receive_max = receive_max
        self.money_prefix = self.id_bytes + _vu(receive_max)


class _Connection:
    """Per-connection state; freed (``closed``) when forgotten."""

    __slots__ = (
        "account",
        "announced",
        "buffered",
        "client_address",
        "client_asset",
        "client_closing",
        "closed",
        "closing_count",
        "envelope",
        "id",
        "keys",
        "last_active",
        "max_data_frame",
        "max_data_value",
        "max_stream_id",
        "max_sum",
        "queued",
        "queued_bytes",
        "read_sum",
        "receipt_nonce",
        "receipt_secret",
        "remote_max_data",
        "sent_sum",
        "streams",
        "total",
        "unsent",
        "watermark",
    )

    def __init__(
        self, token: ConnectionToken, account: str, max_stream_id: int, monotonic: float
    ) -> None:
        self.id = token.connection_id
        self.account = account
        self.keys: StreamKeys = token.keys
        self.envelope = EnvelopeKey(token.keys.encryption_key)
        self.receipt_nonce = token.receipt_nonce
        self.receipt_secret = token.receipt_secret
        self.streams: dict[int, _Stream] = {}
        #: Highest client stream id ever opened (closed-stream watermark).
        self.watermark = 0
        self.max_stream_id = max_stream_id
        #: The client sent ConnectionNewAddress (2.7.1 ``closed = false``).
        self.announced = False
        self.client_address: str | None = None
        self.client_asset: tuple[str, int] | None = None
        #: Frames for the next reply, each with a key (later frames of a key replace
        #: earlier ones): bounded by the number of keys.
        self.queued: list[tuple[object, bytes]] = []
        self.total = 0
        self.last_active = monotonic
        self.closed = False
        # data accounting over open streams (§11 connection windows)
        self.read_sum = 0
        self.max_sum = 0
        self.sent_sum = 0
        self.buffered = 0
        self.queued_bytes = 0
        self.unsent = 0
        #: Streams this server is closing (StreamClose pending until their data is out).
        self.closing_count = 0
        #: The client sent ConnectionClose in the packet being handled.
        self.client_closing = False
        #: The client's ConnectionMaxData (2.7.1: 65534 until told).
        self.remote_max_data = DEFAULT_CONNECTION_RECEIVE_WINDOW
        self.max_data_value = -1
        self.max_data_frame = b""

    def queue(self, key: object, frame: bytes) -> None:
        queued = self.queued
        for index, (existing, _) in enumerate(queued):
            if existing == key:
                del queued[index]
                break
        queued.append((key, frame))


_MAX_STREAM_ID_KEY: Final = "max_stream_id"
_ASSET_KEY: Final = "asset"
_CLOSE_KEY: Final = "close"


# ------------------------------------------------------------------------ decisions


@dataclass(slots=True, eq=False)
class StreamCredit:
    """Fulfillable money the caller must credit before the Fulfill leaves (§9 steps 9-11).

    Settle it exactly once: :meth:`StreamServer.fulfill` after the store committed (or
    found the idempotency key already used), :meth:`StreamServer.refuse` otherwise.
    Treat it as read-only (not frozen only because frozen dataclasses cost
    microseconds to build on the per-packet path).

    ``account``: from the token's authenticated tag.  ``amount``: the Prepare's amount
    (what arrived), all of it credited.  ``streams``: the split, ``(stream_id, amount)``
    in id order, summing to ``amount`` (§15 Q2).  ``condition``: the Prepare's
    execution condition; :attr:`idempotency_key` (its hex) is the store's key, the same
    rule as PSK2.  ``connection_id``: the token segment of the destination.
    ``sequence``: the client's STREAM sequence.  ``receipts_enabled``: the Fulfill will
    carry StreamReceipts (§13).  ``closes_connection``: the packet also closed the
    connection (a :class:`ConnectionClosed` event follows when settled).
    """

    account: str
    amount: int
    streams: tuple[tuple[int, int], ...]
    condition: bytes
    connection_id: str
    sequence: int
    receipts_enabled: bool
    closes_connection: bool
    prepare: IlpPrepare = field(repr=False)
    fulfillment: bytes = field(repr=False)
    _connection: _Connection = field(repr=False)
    _targets: tuple[_Stream, ...] = field(repr=False)
    #: (§7 code, message) of the client's ConnectionClose when ``closes_connection``.
    _close: tuple[int, str] | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def idempotency_key(self) -> str:
        """The store's idempotency key: the execution condition as hex."""
        return self.condition.hex()

    @property
    def received_before(self) -> int:
        """What the connection had credited (fulfilled) when this credit was decided."""
        return self._connection.total

    @property
    def packet_id(self) -> bytes:
        """§3: ``HMAC-SHA256(sharedSecret, "ilp_stream_packet_id" || sequence)`` (what
        2.7.1 hands to ``shouldFulfill``); computed on demand."""
        return self._connection.keys.packet_id(self.sequence)


#: What :meth:`StreamServer.handle_prepare` returns.
Decision = IlpReject | IlpFulfill | StreamCredit


# --------------------------------------------------------------------------- server


class StreamServer:
    """STREAM receiver state machine for one server secret (module docstring).

    ``secrets`` opens the tokens in destinations; ``asset_code`` / ``asset_scale`` are
    this server's asset (IL-DCP), sent in ConnectionAssetDetails.  ``receive_max``
    decides the limit of each new stream (default: ``limits.default_receive_max``);
    ``default_account`` is the account of tokens issued without a tag (e.g. by
    ilp-protocol-stream itself with the same server secret).  :attr:`address` is the
    server's ILP address, ``""`` until IL-DCP told it; every Reject names it as
    ``triggeredBy``.
    """

    __slots__ = (
        "_address",
        "_asset_frame",
        "_buffered",
        "_connections",
        "_events",
        "_limits",
        "_prefix",
        "_queued",
        "_receive_max",
        "_secrets",
        "asset_code",
        "asset_scale",
        "default_account",
        "events_dropped",
    )

    def __init__(
        self,
        secrets: StreamServerSecrets,
        *,
        asset_code: str,
        asset_scale: int,
        limits: StreamLimits | None = None,
        receive_max: ReceiveMaxPolicy | None = None,
        default_account: str = "",
    ) -> None:
        require_aes256gcm()
        if not isinstance(secrets, StreamServerSecrets):
            raise ConfigError("secrets", "must be a StreamServerSecrets")
        if not isinstance(asset_code, str):
            raise ConfigError("asset_code", "must be a str")
        if type(asset_scale) is not int or not 0 <= asset_scale <= 255:
            raise ConfigError("asset_scale", "must be an integer in 0..255 (a UInt8)")
        try:
            self._asset_frame = encode_frame(ConnectionAssetDetails(asset_code, asset_scale))
        except EncodeError as exc:
            raise ConfigError("asset_code", str(exc)) from None
        self._secrets = secrets
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self._limits = limits if limits is not None else StreamLimits()
        self._receive_max = receive_max
        self.default_account = default_account
        self._connections: OrderedDict[str, _Connection] = OrderedDict()
        self._events: deque[StreamEvent] = deque()
        #: Events dropped because nobody drained :meth:`events` in time.
        self.events_dropped = 0
        self._buffered = 0
        self._queued = 0
        self._address = ""
        self._prefix = "."

    def __repr__(self) -> str:
        return f"StreamServer(address={self._address!r}, connections={len(self._connections)})"

    @property
    def address(self) -> str:
        """The server's ILP address (from IL-DCP); ``""`` until known."""
        return self._address

    @address.setter
    def address(self, value: str) -> None:
        if not isinstance(value, str):
            raise ConfigError("address", "must be a str")
        self._address = value
        self._prefix = value + "."

    @property
    def limits(self) -> StreamLimits:
        """The bounds this server keeps."""
        return self._limits

    @property
    def secrets(self) -> StreamServerSecrets:
        """The token issuer this server opens destinations with."""
        return self._secrets

    def __len__(self) -> int:
        """How many connections are held."""
        return len(self._connections)

    # ------------------------------------------------------------------ issuing

    def issue(
        self,
        account: str,
        *,
        token_nonce: bytes,
        iv: bytes,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> IssuedStreamSecret:
        """A fresh destination and shared secret for ``account`` (§2.2, for SPSP).

        The account travels as the connection tag, authenticated inside the token
        (:func:`account_to_tag`, ConfigError if it does not fit).  ``token_nonce`` (18)
        and ``iv`` (12) must be fresh random bytes; the receipt nonce (16) and secret
        (32) come together or not at all (§13).  LocalProtocolError before the address
        is known.
        """
        if not self._address:
            raise LocalProtocolError("the STREAM server has no ILP address yet (IL-DCP)")
        return self._secrets.generate(
            self._address,
            token_nonce,
            iv,
            account_to_tag(account),
            receipt_nonce,
            receipt_secret,
        )

    # ------------------------------------------------------------------ events

    def events(self) -> list[StreamEvent]:
        """Take the events that happened since the last call, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def _emit(self, event: StreamEvent) -> None:
        events = self._events
        if len(events) >= self._limits.max_pending_events:
            events.popleft()
            self.events_dropped += 1
        events.append(event)

    # ------------------------------------------------------------------ the packet path

    def not_a_prepare(self, data: bytes) -> IlpReject:
        """:func:`not_a_prepare_reject` with this server's address."""
        return not_a_prepare_reject(data, self._address)

    def handle_prepare(
        self, prepare: IlpPrepare, now: datetime, monotonic: float, *, iv: bytes
    ) -> Decision:
        """Decide on an incoming Prepare (§9; module docstring for the steps).

        ``now``: the current time (tz-aware, for expiry); ``monotonic``: a monotonic clock
        in seconds (idleness, LRU); ``iv``: 12 fresh random bytes, used if the answer is
        a final reply carrying an encrypted STREAM packet.  Returns a final
        :class:`IlpReject` / :class:`IlpFulfill`, or a :class:`StreamCredit`.
        """
        address = self._address
        # §15 Q12: "The SDK should reject expired Prepares itself" (PSK2 item 13: R00).
        if prepare.expires_at <= now:
            return IlpReject(_R00, address, EXPIRED_MESSAGE)
        # §2.3 step 1: remove the first "serverAddress." and take the first segment.
        destination = prepare.destination
        prefix = self._prefix
        if destination.startswith(prefix):
            start = len(prefix)
            end = destination.find(".", start)
            connection_id = destination[start:] if end < 0 else destination[start:end]
            if not connection_id:
                return IlpReject(_F02, address)
        else:
            try:
                connection_id = connection_id_from_destination(destination, address)
            except UnknownTokenError:
                return IlpReject(_F02, address)
        connections = self._connections
        conn = connections.get(connection_id)
        if conn is None:
            return self._first_packet(connection_id, prepare, monotonic, iv)
        # §9 step 1: "Decrypt and parse the data. Failure -> Reject F06, empty message,
        # no data."
        try:
            packet = decode_stream_packet(conn.envelope.open(prepare.data))
        except DecodeError:
            return IlpReject(_F06, address)
        # §9 step 2: "STREAM ilpPacketType != 12 -> F06, no data."
        if packet.ilp_packet_type != _PREPARE:
            return IlpReject(_F06, address)
        connections.move_to_end(connection_id)
        conn.last_active = monotonic
        # The common money packet -- one StreamMoney frame for an open stream -- has
        # nothing for steps 3-5 to do: straight to the money steps.
        frames = packet.frames
        if len(frames) == 1:
            only = frames[0]
            if type(only) is StreamMoney and only.stream_id in conn.streams:
                return self._money(conn, prepare, packet, iv, [only], False)
        return self._handle(conn, prepare, packet, iv)

    def _first_packet(
        self, connection_id: str, prepare: IlpPrepare, monotonic: float, iv: bytes
    ) -> Decision:
        address = self._address
        # §2.3 steps 3-4 / §15 Q1: a token that does not open under our secret -> F02.
        try:
            token = self._secrets.open_token(connection_id)
        except UnknownTokenError:
            return IlpReject(_F02, address)
        # §15 Q1: "F06 for a token the server issued" whose data does not decrypt.
        try:
            packet = decode_stream_packet(open_envelope(token.keys.encryption_key, prepare.data))
        except DecodeError:
            return IlpReject(_F06, address)
        if packet.ilp_packet_type != _PREPARE:
            return IlpReject(_F06, address)
        if _is_close_notice(packet):
            return self._close_notice_reply(token, prepare, packet, iv)
        conn = self._open_connection(token, monotonic)
        return self._handle(conn, prepare, packet, iv)

    def _open_connection(self, token: ConnectionToken, monotonic: float) -> _Connection:
        connections = self._connections
        while len(connections) >= self._limits.max_connections:
            _, victim = connections.popitem(last=False)
            self._detach(victim)
            self._emit(self._closed_event(victim, CloseReason.EVICTED, None, ""))
        tag = token.connection_tag
        account = self.default_account if tag is None else tag_to_account(tag)
        conn = _Connection(token, account, self._limits.max_stream_id, monotonic)
        connections[conn.id] = conn
        self._emit(ConnectionOpened(conn.id, account, token.receipts_enabled))
        return conn

    def _close_notice_reply(
        self, token: ConnectionToken, prepare: IlpPrepare, packet: StreamPacket, iv: bytes
    ) -> Decision:
        """§15 Q6 refinement: a ConnectionClose for a connection we do not hold (already
        closed, expired or evicted) is answered like a fresh connection would answer it,
        without creating state or events."""
        max_data = _frame(_T_CONNECTION_MAX_DATA, _vu(self._limits.connection_receive_window))
        amount = prepare.amount
        fulfillment = token.keys.fulfillment(prepare.data)
        fulfillable = (
            amount == 0
            and packet.prepare_amount == 0
            and constant_time_equal(sha256(fulfillment), prepare.execution_condition)
        )
        kind = _FULFILL if fulfillable else _REJECT
        plaintext = _HEADS[kind] + _vu(packet.sequence) + _vu(amount) + b"\x01\x01" + max_data
        data = seal_envelope(token.keys.encryption_key, iv, plaintext)
        if fulfillable:
            return IlpFulfill(fulfillment, data)
        return IlpReject(_F99, self._address, "", data)

    # ------------------------------------------------------------------ §9 steps 3-8

    def _handle(
        self, conn: _Connection, prepare: IlpPrepare, packet: StreamPacket, iv: bytes
    ) -> Decision:
        streams = conn.streams
        frames = packet.frames
        # §9 step 3: stream frames -- closed streams, then new ids (§6).
        for frame in frames:
            if not isinstance(frame, _OPENING_FRAMES):
                continue
            stream_id = frame.stream_id
            if stream_id in streams:
                continue
            if not stream_id & 1:
                # §6: "Wrong parity -> ConnectionClose ProtocolViolation" (2.7.1 text).
                conn.queue(
                    _CLOSE_KEY,
                    encode_frame(
                        ConnectionClose(
                            ErrorCode.PROTOCOL_VIOLATION,
                            f"Invalid Stream ID: {stream_id}. Client-initiated streams "
                            "must have odd-numbered IDs",
                        )
                    ),
                )
                return self._reject(conn, prepare, packet, iv)
            if stream_id <= conn.watermark:
                # §9 step 3: "if the stream was closed earlier, money or data for it ->
                # F99 + reply with StreamClose(id, StreamStateError, 'Stream is already
                # closed') (the Max frames are just skipped)".
                if type(frame) is StreamMoney or type(frame) is StreamData:
                    return self._reject(
                        conn,
                        prepare,
                        packet,
                        iv,
                        _stream_close_frame(
                            stream_id, ErrorCode.STREAM_STATE_ERROR, STREAM_CLOSED_MESSAGE
                        ),
                    )
                continue
            if stream_id > conn.max_stream_id:
                # §6: "id above the advertised maximum -> ConnectionClose StreamIdError".
                conn.queue(
                    _CLOSE_KEY,
                    encode_frame(
                        ConnectionClose(
                            ErrorCode.STREAM_ID_ERROR,
                            "Maximum number of open streams exceeded. Got stream: "
                            f"{stream_id}, current max stream ID: {conn.max_stream_id}",
                        )
                    ),
                )
                return self._reject(conn, prepare, packet, iv)
            self._open_stream(conn, stream_id)

        # §9 step 4: control frames, in order.
        client_close: ConnectionClose | None = None
        closed_by_client: list[_Stream] | None = None
        money: list[StreamMoney] | None = None
        data_seen = False
        early: Decision | None = None  # a reply decided before the money steps
        for frame in frames:
            kind = type(frame)
            if kind is StreamMaxMoney:
                # the client's receive limits: we never send money
                continue
            if type(frame) is StreamMaxData:
                stream = streams.get(frame.stream_id)
                # §6: "Flow-control frames only grow"
                if stream is not None and frame.max_offset > stream.remote_max_offset:
                    stream.remote_max_offset = frame.max_offset
            elif type(frame) is StreamMoney:
                if money is None:
                    money = [frame]
                else:
                    money.append(frame)
            elif type(frame) is StreamData:
                stream = streams.get(frame.stream_id)
                if stream is None or not frame.data:
                    continue
                data_seen = True
                problem = self._push_data(conn, stream, frame.offset, frame.data)
                if problem is _BUSY:
                    # nothing of this frame was kept; the client resends the packet's
                    # data after a T-reject (2.7.1 undoRejectedPacket) and what was
                    # delivered already is dropped by offset then
                    early = IlpReject(_T00, self._address, BUFFER_FULL_MESSAGE)
                    break
                if problem is not None:
                    early = self._close_with_error(
                        conn, prepare, packet, iv, ErrorCode.FLOW_CONTROL_ERROR, problem
                    )
                    break
            elif type(frame) is StreamClose:
                stream = streams.get(frame.stream_id)
                # 2.7.1 handleStreamClose: no record of the stream, or already ended ->
                # nothing to do.
                if stream is None or stream.client_closed:
                    continue
                stream.client_closed = True
                if closed_by_client is None:
                    closed_by_client = [stream]
                else:
                    closed_by_client.append(stream)
                # 2.7.1 handleStreamClose: "this.maxStreamId += 2" + ConnectionMaxStreamId
                self._raise_max_stream_id(conn)
                self._emit(
                    StreamClosed(
                        conn.id,
                        conn.account,
                        stream.id,
                        True,
                        frame.error_code,
                        frame.error_message,
                    )
                )
            elif type(frame) is ConnectionNewAddress:
                # 2.7.1: queue ConnectionMaxStreamId + ConnectionAssetDetails; §15 Q5:
                # the address is only recorded.
                conn.queue(
                    _MAX_STREAM_ID_KEY,
                    _frame(_T_CONNECTION_MAX_STREAM_ID, _vu(conn.max_stream_id)),
                )
                conn.queue(_ASSET_KEY, self._asset_frame)
                if len(frame.source_account) <= MAX_ADDRESS_LENGTH:
                    conn.client_address = frame.source_account
                conn.announced = True
            elif type(frame) is ConnectionAssetDetails:
                details = (frame.source_asset_code, frame.source_asset_scale)
                if conn.client_asset is None:
                    if len(details[0]) <= _MAX_ASSET_CODE_LENGTH:
                        conn.client_asset = details
                elif conn.client_asset != details:
                    # §15 Q9: "the receiver SHOULD close on a contradicting frame ...
                    # Recommendation: close with ProtocolViolation."
                    early = self._close_with_error(
                        conn,
                        prepare,
                        packet,
                        iv,
                        ErrorCode.PROTOCOL_VIOLATION,
                        ASSET_DETAILS_CHANGED,
                    )
                    break
            elif type(frame) is ConnectionClose:
                # 2.7.1: "this.closed = true; this.remoteState = RemoteState.Closed": the
                # reply then carries no per-stream frames (and here no data: the client
                # does not read the reply to its close notice)
                client_close = frame
                conn.client_closing = True
            elif type(frame) is ConnectionMaxData and frame.max_offset > conn.remote_max_data:
                # §11: "Advertisements never shrink; a smaller value received is ignored."
                conn.remote_max_data = frame.max_offset
            # ConnectionDataBlocked, ConnectionMaxStreamId, ConnectionStreamIdBlocked,
            # StreamMoneyBlocked, StreamDataBlocked, StreamReceipt: informational.

        # §9 step 5: "Connection data limit exceeded -> destroy (FlowControlError)".
        if early is None and data_seen:
            acceptable = conn.read_sum + self._limits.connection_receive_window
            if conn.max_sum > acceptable:
                early = self._close_with_error(
                    conn,
                    prepare,
                    packet,
                    iv,
                    ErrorCode.FLOW_CONTROL_ERROR,
                    "Exceeded flow control limits. Max connection byte offset: "
                    f"{acceptable}, received: {conn.max_sum}",
                )
        if early is None:
            decision = self._money(conn, prepare, packet, iv, money, client_close is not None)
        else:
            decision = early
        # After the reply: the client's StreamClose and ConnectionClose take effect.
        if closed_by_client is not None:
            for stream in closed_by_client:
                self._remove_stream(conn, stream)
        if client_close is not None and not conn.closed:
            self._detach(conn)
            close = (client_close.error_code, client_close.error_message)
            if type(decision) is StreamCredit:
                decision._close = close  # reported when settled, with its money
            else:
                self._emit(self._closed_event(conn, CloseReason.CLIENT, *close))
        return decision

    def _money(
        self,
        conn: _Connection,
        prepare: IlpPrepare,
        packet: StreamPacket,
        iv: bytes,
        money: list[StreamMoney] | None,
        closing: bool,
    ) -> Decision:
        amount = prepare.amount
        # §9 step 6: "prepareAmount > Prepare amount -> F99 + reply (nothing credited)".
        if packet.prepare_amount > amount:
            return self._reject(conn, prepare, packet, iv)
        # §9 step 7: "Condition != SHA-256(fulfillment) -> F99 + reply" (rate probes).
        data = prepare.data
        fulfillment = conn.keys.fulfillment_hmac.digest(data)
        if not _equal(_sha256(fulfillment).digest(), prepare.execution_condition):
            return self._reject(conn, prepare, packet, iv)
        # §9: "Zero-amount fulfillable packets are fulfilled (they carry control frames
        # or act as pings)."
        if amount == 0:
            return IlpFulfill(fulfillment, self._reply(conn, _FULFILL, packet.sequence, 0, iv))
        # §15 Q10: money without a StreamMoney frame, or shares summing to 0: "reject
        # both with F99 + reply (nothing credited), so every credited unit belongs to a
        # stream".
        if money is None:
            return self._reject(conn, prepare, packet, iv)
        streams = conn.streams
        if len(money) == 1:
            only = money[0]
            if only.shares == 0:
                return self._reject(conn, prepare, packet, iv)
            stream = streams[only.stream_id]
            targets: tuple[_Stream, ...] = (stream,)
            parts = [amount]
        else:
            shares: dict[int, int] = {}
            for frame in money:
                shares[frame.stream_id] = shares.get(frame.stream_id, 0) + frame.shares
            total_shares = sum(shares.values())
            if total_shares == 0:
                return self._reject(conn, prepare, packet, iv)
            # §6 "Shares": floor(amount x shares / sum of shares); §15 Q2: the
            # remainder goes to the lowest-numbered stream that can take it.
            ordered = sorted(item for item in shares.items() if item[1])
            targets = tuple(streams[stream_id] for stream_id, _ in ordered)
            parts = [amount * part // total_shares for _, part in ordered]
            remainder = amount - sum(parts)
            if remainder:
                # "can take it": within receiveMax, else within the 1 % tolerance
                index = _taker(targets, parts, remainder, _room)
                if index < 0:
                    index = _taker(targets, parts, remainder, _allowance)
                if index < 0:
                    stream = targets[0]
                    return self._reject(
                        conn, prepare, packet, iv, _max_money_frame(stream, stream.receive_max)
                    )
                parts[index] += remainder
        receipts = conn.receipt_secret is not None
        for stream, part in zip(targets, parts, strict=True):
            if not part:
                continue
            # §15 Q3: "with receipts on, refuse (F99 + StreamClose) streams above 255
            # before crediting".
            if receipts and stream.id > MAX_RECEIPT_STREAM_ID:
                close_frame = self._close_stream_now(
                    conn, stream, ErrorCode.APPLICATION_ERROR, RECEIPT_STREAM_ID_MESSAGE
                )
                return self._reject(conn, prepare, packet, iv, close_frame)
            # §9 step 8: "If a stream's part is more than ceil(1.01 x (receiveMax -
            # totalReceived)) -> F99 + reply with StreamMaxMoney(id, receiveMax,
            # totalReceived)" (§15 Q7).
            # Within receiveMax the tolerance maths (big-integer products when the
            # limit is 2**64-1) cannot refuse: receiveMax <= 2**64-1 is kept
            # everywhere, so the allowance is at least receiveMax - totalReceived.
            if part > stream.receive_max - stream.total and part > _allowance(stream):
                return self._reject(
                    conn, prepare, packet, iv, _max_money_frame(stream, stream.receive_max)
                )
        if len(targets) == 1:
            split: tuple[tuple[int, int], ...] = ((targets[0].id, amount),)
        else:
            kept = [(s, p) for s, p in zip(targets, parts, strict=True) if p]
            targets = tuple(s for s, _ in kept)
            split = tuple((s.id, p) for s, p in kept)
        return StreamCredit(  # positional: this runs for every money packet
            conn.account,
            amount,
            split,
            prepare.execution_condition,
            conn.id,
            packet.sequence,
            receipts,
            closing,
            prepare,
            fulfillment,
            conn,
            targets,
        )

    # ------------------------------------------------------------------ settling

    def fulfill(self, credit: StreamCredit, *, applied: bool, iv: bytes) -> IlpFulfill:
        """Fulfil a credit after the store committed it (§9 step 11).

        ``applied=False`` means the store had already seen the idempotency key: a
        repeated delivery of the same Prepare.  It is fulfilled again (same
        fulfillment) but not counted again in the stream and connection totals.  The
        Fulfill carries ConnectionMaxData, the per-stream limits, one StreamReceipt per
        credited stream (receipts on) and queued frames / data.
        """
        conn = self._settle(credit)
        targets = credit._targets
        if applied:
            if len(targets) == 1:
                stream = targets[0]
                stream.total += credit.amount
                conn.total += credit.amount
                self._emit(
                    _money_event(conn.id, conn.account, stream.id, credit.amount, stream.total)
                )
            else:
                for stream, (_, part) in zip(targets, credit.streams, strict=True):
                    stream.total += part
                    conn.total += part
                    self._emit(_money_event(conn.id, conn.account, stream.id, part, stream.total))
        receipts: tuple[bytes, ...] = ()
        nonce, secret = conn.receipt_nonce, conn.receipt_secret
        if nonce is not None and secret is not None:
            # §13: "Every Fulfill for money then carries one StreamReceipt frame per
            # credited stream with that stream's new total".
            receipts = tuple(
                _frame(
                    _T_STREAM_RECEIPT,
                    _vu(stream.id)
                    + _octets(create_receipt(nonce, stream.id, stream.total, secret)),
                )
                for stream in targets
            )
        data = self._reply(conn, _FULFILL, credit.sequence, credit.amount, iv, receipts=receipts)
        if credit._close is not None:
            self._settled_close(credit)
        return fulfill_packet(credit.fulfillment, data)

    def refuse(
        self,
        credit: StreamCredit,
        *,
        iv: bytes,
        code: str = _F99,
        message: str = "",
        limit_reached: bool = False,
    ) -> IlpReject:
        """Reject a credit the application or the store refused; nothing is counted.

        F99 (the default) carries the encrypted reply (§9 step 10: "a rejection -> F99
        + reply").  ``limit_reached`` tells the client to stop sending on the credited
        streams: StreamMaxMoney(receiveMax = totalReceived) where the stream was
        unlimited (a 2.7.1 client takes a lower receiveMax only when the old one was
        2**64-1, ``connection.js`` StreamMaxMoney handling), otherwise StreamClose
        (ApplicationError) since the client would ignore a lower finite limit; the
        lowered limit is kept.  Any other ``code`` (e.g. T00 when the store failed)
        carries no data: 2.7.1 clients read reply data only on F99, so queued frames
        stay for the next reply.
        """
        conn = self._settle(credit)
        if code != _F99:
            self._settled_close(credit)
            return IlpReject(code, self._address, message)
        extra: list[bytes] = []
        if limit_reached:
            for stream in credit._targets:
                if not stream.open:
                    continue
                if stream.receive_max == MAX_UINT64:
                    stream.set_receive_max(stream.total)
                    extra.append(_max_money_frame(stream, stream.total))
                else:
                    extra.append(
                        self._close_stream_now(
                            conn,
                            stream,
                            ErrorCode.APPLICATION_ERROR,
                            message or LIMIT_REACHED_MESSAGE,
                        )
                    )
        data = self._reply(conn, _REJECT, credit.sequence, credit.amount, iv, extra=extra)
        self._settled_close(credit)
        return IlpReject(_F99, self._address, message, data)

    @staticmethod
    def _settle(credit: StreamCredit) -> _Connection:
        if not isinstance(credit, StreamCredit):
            raise LocalProtocolError("only a StreamCredit can be fulfilled or refused")
        if credit._settled:
            raise LocalProtocolError("this StreamCredit was already fulfilled or refused")
        credit._settled = True
        return credit._connection

    def _settled_close(self, credit: StreamCredit) -> None:
        close = credit._close
        if close is not None:
            self._emit(self._closed_event(credit._connection, CloseReason.CLIENT, *close))

    # ------------------------------------------------------------------ replies

    def _reject(
        self,
        conn: _Connection,
        prepare: IlpPrepare,
        packet: StreamPacket,
        iv: bytes,
        extra: bytes | None = None,
    ) -> IlpReject:
        """The "Reject F99 + reply" of §9: F99, empty message, triggeredBy = our address, data =
        {type 14, same sequence, prepareAmount = the Prepare's amount, frames}."""
        data = self._reply(
            conn,
            _REJECT,
            packet.sequence,
            prepare.amount,
            iv,
            extra=None if extra is None else (extra,),
        )
        return IlpReject(_F99, self._address, "", data)

    def _reply(
        self,
        conn: _Connection,
        ilp_type: int,
        sequence: int,
        amount: int,
        iv: bytes,
        *,
        extra: tuple[bytes, ...] | list[bytes] | None = None,
        receipts: tuple[bytes, ...] = (),
        close: bytes | None = None,
    ) -> bytes:
        """The encrypted reply packet; frame order as 2.7.1 (module docstring)."""
        # §11: "ConnectionMaxData = total read + 65534 (2 x 32767) - buffered" (we
        # deliver at once, so nothing contiguous stays buffered).
        value = conn.read_sum + self._limits.connection_receive_window
        if value != conn.max_data_value:
            conn.max_data_value = value
            conn.max_data_frame = _frame(_T_CONNECTION_MAX_DATA, _vu(value))
        parts = [conn.max_data_frame]
        live = not (conn.closed or conn.client_closing)
        if ilp_type == _FULFILL and live and conn.announced:
            # §9 step 11: "for every stream ... StreamMaxMoney + StreamMaxData"
            window = self._limits.stream_receive_window
            append = parts.append
            for stream in conn.streams.values():
                contents = stream.money_prefix + _vu(stream.total)  # <= 27 bytes
                append(_MAX_MONEY_HEADS[len(contents)] + contents)
                read = stream.read_offset
                if read != stream.limit_read:
                    stream.limit_read = read
                    stream.limit_frame = _frame(
                        _T_STREAM_MAX_DATA, stream.id_bytes + _vu(read + window)
                    )
                append(stream.limit_frame)
        if extra:
            parts.extend(extra)
        if receipts:
            parts.extend(receipts)
        queued = conn.queued
        carries_close = close is not None
        if queued:
            for key, frame in queued:
                if key == _CLOSE_KEY:
                    carries_close = True
                parts.append(frame)
            queued.clear()
        if close is not None:
            parts.append(close)
        elif live and not carries_close and (conn.queued_bytes or conn.closing_count):
            self._fill_data(conn, parts)
        plaintext = b"".join(
            (_HEADS[ilp_type], _vu(sequence), _vu(amount), _vu(len(parts)), *parts)
        )
        return conn.envelope.seal(iv, plaintext)

    def _fill_data(self, conn: _Connection, parts: list[bytes]) -> None:
        """StreamData within the client's windows and 32767 bytes of ILP data, then the
        StreamClose of streams this server closed once their data is out."""
        room = MAX_PLAINTEXT_LENGTH - _HEADER_BOUND - sum(map(len, parts))
        connection_room = conn.remote_max_data - conn.sent_sum
        done: list[_Stream] = []
        for stream in conn.streams.values():
            if stream.client_closed:
                continue  # the client ended it: no more data, no StreamClose back
            out = stream.out
            if out:
                size = min(
                    len(out),
                    stream.remote_max_offset - stream.out_offset,
                    connection_room,
                    room - _DATA_FRAME_OVERHEAD - _CLOSE_FRAMES_BOUND,
                )
                if size > 0:
                    chunk = bytes(out[:size])
                    del out[:size]
                    frame = _frame(
                        _T_STREAM_DATA, _vu(stream.id) + _vu(stream.out_offset) + _octets(chunk)
                    )
                    parts.append(frame)
                    room -= len(frame)
                    connection_room -= size
                    stream.out_offset += size
                    conn.sent_sum += size
                    conn.queued_bytes -= size
                    self._queued -= size
            if stream.closing and not out and room >= _CLOSE_FRAMES_BOUND:
                parts.append(_stream_close_frame(stream.id, ErrorCode.NO_ERROR, ""))
                room -= _CLOSE_FRAMES_BOUND
                done.append(stream)
        if done:
            for stream in done:
                self._remove_stream(conn, stream)
                self._emit(
                    StreamClosed(conn.id, conn.account, stream.id, False, ErrorCode.NO_ERROR, "")
                )
                conn.max_stream_id += 2
            parts.append(_frame(_T_CONNECTION_MAX_STREAM_ID, _vu(conn.max_stream_id)))

    def _close_with_error(
        self,
        conn: _Connection,
        prepare: IlpPrepare,
        packet: StreamPacket,
        iv: bytes,
        code: ErrorCode,
        message: str,
    ) -> IlpReject:
        """Close the connection (FlowControlError, §15 Q9): F99 + reply ending with our
        ConnectionClose; the connection is forgotten."""
        close = encode_frame(ConnectionClose(code, message))
        data = self._reply(conn, _REJECT, packet.sequence, prepare.amount, iv, close=close)
        self._detach(conn)
        self._emit(self._closed_event(conn, CloseReason.ERROR, code, message))
        return IlpReject(_F99, self._address, "", data)

    # ------------------------------------------------------------------ state changes

    def _open_stream(self, conn: _Connection, stream_id: int) -> None:
        # 2.7.1 handleNewStream: "if (this.maxStreamId * .75 < streamId)" announce it.
        if conn.max_stream_id * 3 < stream_id * 4:
            conn.queue(
                _MAX_STREAM_ID_KEY, _frame(_T_CONNECTION_MAX_STREAM_ID, _vu(conn.max_stream_id))
            )
        policy = self._receive_max
        setup = (
            self._limits.default_receive_max if policy is None else policy(conn.account, stream_id)
        )
        greeting = b""
        if isinstance(setup, StreamSetup):
            receive_max, greeting = setup.receive_max, setup.greeting
        else:
            receive_max = setup
        if type(receive_max) is not int or not 0 <= receive_max <= MAX_UINT64:
            raise LocalProtocolError(f"receive_max policy returned {setup!r}")
        stream = _Stream(stream_id, receive_max)
        conn.streams[stream_id] = stream
        conn.watermark = stream_id
        if greeting:
            self._enqueue(conn, stream, bytes(greeting))
        self._emit(StreamOpened(conn.id, conn.account, stream_id, receive_max))

    def _raise_max_stream_id(self, conn: _Connection) -> None:
        # §11: "raises the limit by 2 for every stream the peer closes, announcing it
        # with ConnectionMaxStreamId".
        conn.max_stream_id += 2
        conn.queue(_MAX_STREAM_ID_KEY, _frame(_T_CONNECTION_MAX_STREAM_ID, _vu(conn.max_stream_id)))

    def _close_stream_now(
        self, conn: _Connection, stream: _Stream, code: int, message: str
    ) -> bytes:
        """This server closes a stream at once (§15 Q3, ``refuse(limit_reached)``);
        returns its StreamClose frame for the caller's reply."""
        frame = _stream_close_frame(stream.id, code, message)
        if stream.open and conn.streams.get(stream.id) is stream:
            self._remove_stream(conn, stream)
            if not conn.closed:
                self._raise_max_stream_id(conn)
            self._emit(StreamClosed(conn.id, conn.account, stream.id, False, code, message))
        return frame

    def _remove_stream(self, conn: _Connection, stream: _Stream) -> None:
        if conn.streams.get(stream.id) is stream:
            del conn.streams[stream.id]
        if not stream.open:
            return
        stream.open = False
        if stream.closing:
            conn.closing_count -= 1
        conn.read_sum -= stream.read_offset
        conn.max_sum -= stream.max_offset
        conn.sent_sum -= stream.out_offset
        self._release_stream_buffers(conn, stream)

    def _release_stream_buffers(self, conn: _Connection, stream: _Stream) -> None:
        if stream.out:
            size = len(stream.out)
            conn.queued_bytes -= size
            conn.unsent += size
            self._queued -= size
            stream.out = bytearray()
        if stream.fragments:
            size = sum(map(len, stream.fragments.values()))
            conn.buffered -= size
            self._buffered -= size
        stream.fragments = None

    def _detach(self, conn: _Connection) -> None:
        """Forget a connection and free its buffers (its streams stay readable for the
        close event and for credits still holding them)."""
        if self._connections.get(conn.id) is conn:
            del self._connections[conn.id]
        if not conn.closed:
            conn.closed = True
            for stream in conn.streams.values():
                self._release_stream_buffers(conn, stream)

    @staticmethod
    def _closed_event(
        conn: _Connection, reason: CloseReason, code: int | None, message: str
    ) -> ConnectionClosed:
        return ConnectionClosed(
            conn.id,
            conn.account,
            reason,
            code,
            message,
            conn.total,
            tuple((stream.id, stream.total) for stream in conn.streams.values()),
            conn.unsent,
        )

    def _push_data(
        self, conn: _Connection, stream: _Stream, offset: int, data: bytes
    ) -> str | None:
        """§6 / §11 data: deliver in order, buffer out of order within the window.

        Returns None, :data:`_BUSY` (buffer budget exhausted: refuse the packet T00) or
        the FlowControlError message (2.7.1's text).
        """
        read = stream.read_offset
        end = offset + len(data)
        if end <= read:
            return None  # a resend of delivered bytes
        if offset > read:
            window_end = read + self._limits.stream_receive_window
            if end > window_end:
                # §11: "Exceeding either closes the connection with FlowControlError."
                highest = max(end, stream.max_offset)
                return (
                    f"Exceeded flow control limits. Stream {stream.id} can accept up to "
                    f"offset: {window_end} but got bytes up to offset: {highest}"
                )
            fragments = stream.fragments
            if fragments is None:
                fragments = stream.fragments = {}
            existing = fragments.get(offset)
            if existing is not None and len(existing) >= len(data):
                return None
            growth = len(data) - (0 if existing is None else len(existing))
            if (
                existing is None and len(fragments) >= self._limits.max_fragments_per_stream
            ) or self._buffered + growth > self._limits.max_buffered_bytes:
                return _BUSY
            fragments[offset] = data
            conn.buffered += growth
            self._buffered += growth
            self._grow_max(conn, stream, end)
            return None
        self._grow_max(conn, stream, end)
        self._deliver(conn, stream, data[read - offset :] if offset < read else data, read)
        if stream.fragments:
            self._drain_fragments(conn, stream)
        return None

    @staticmethod
    def _grow_max(conn: _Connection, stream: _Stream, end: int) -> None:
        if end > stream.max_offset:
            conn.max_sum += end - stream.max_offset
            stream.max_offset = end

    def _deliver(self, conn: _Connection, stream: _Stream, chunk: bytes, offset: int) -> None:
        stream.read_offset = offset + len(chunk)
        conn.read_sum += len(chunk)
        self._emit(_data_event(conn.id, conn.account, stream.id, offset, chunk))
        if self._limits.echo_data and not stream.closing:
            self._enqueue(conn, stream, chunk)

    def _drain_fragments(self, conn: _Connection, stream: _Stream) -> None:
        fragments = stream.fragments
        assert fragments is not None
        progress = True
        while fragments and progress:
            progress = False
            read = stream.read_offset
            for offset in sorted(fragments):
                if offset > read:
                    break
                data = fragments.pop(offset)
                conn.buffered -= len(data)
                self._buffered -= len(data)
                end = offset + len(data)
                if end > read:
                    self._deliver(conn, stream, data[read - offset :], read)
                    progress = True
                    break

    def _enqueue(self, conn: _Connection, stream: _Stream, data: bytes) -> int:
        limits = self._limits
        size = min(
            len(data),
            limits.max_queued_bytes_per_stream - len(stream.out),
            limits.max_queued_bytes_per_connection - conn.queued_bytes,
            limits.max_queued_bytes - self._queued,
        )
        if size <= 0:
            return 0
        stream.out += data[:size]
        conn.queued_bytes += size
        self._queued += size
        return size

    # ------------------------------------------------------------------ application API

    def _stream(self, connection_id: str, stream_id: int) -> tuple[_Connection, _Stream]:
        conn = self._connections.get(connection_id)
        if conn is None:
            raise LocalProtocolError(f"no open STREAM connection {connection_id!r}")
        stream = conn.streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} of {connection_id!r} is not open")
        return conn, stream

    def write(self, connection_id: str, stream_id: int, data: bytes) -> int:
        """Queue ``data`` for a client stream; returns how many bytes were accepted.

        The bytes travel in StreamData frames of the next replies (§15 Q5), within the
        client's windows.  Fewer bytes than given are accepted when a queue bound is
        reached (per stream, per connection, server-wide).  LocalProtocolError for a
        connection or stream that is not open or a stream being closed.
        """
        conn, stream = self._stream(connection_id, stream_id)
        if stream.closing:
            raise LocalProtocolError(f"stream {stream_id} is being closed")
        return self._enqueue(conn, stream, bytes(data))

    def close_stream(self, connection_id: str, stream_id: int) -> None:
        """Close a client stream from this side: StreamClose(NoError) follows in a reply
        once its queued data is out; then money for it is refused (StreamStateError).
        A stream that is not open is ignored."""
        conn = self._connections.get(connection_id)
        stream = None if conn is None else conn.streams.get(stream_id)
        if stream is not None and not stream.closing:
            stream.closing = True
            assert conn is not None
            conn.closing_count += 1

    def set_receive_max(self, connection_id: str, stream_id: int, receive_max: int) -> None:
        """Raise a stream's receiveMax (2.7.1 ``setReceiveMax``: never lowered).

        LocalProtocolError for a stream that is not open or a lower value; EncodeError
        for a value outside 0..2**64-1.
        """
        _, stream = self._stream(connection_id, stream_id)
        if type(receive_max) is not int or not 0 <= receive_max <= MAX_UINT64:
            raise EncodeError(f"receive_max must be an integer in 0..2**64-1, got {receive_max!r}")
        if receive_max < stream.receive_max:
            raise LocalProtocolError("Cannot decrease the receiveMax")
        stream.set_receive_max(receive_max)

    def expire(self, monotonic: float) -> list[ConnectionClosed]:
        """Forget connections idle for ``idle_timeout`` seconds; returns them (these
        events are not repeated by :meth:`events`).  2.7.1 sends a ConnectionClose
        (InternalError) in a Prepare of its own; this server never originates Prepares
        (§15 Q5), so a returning client simply opens a fresh connection (Q6)."""
        timeout = self._limits.idle_timeout
        closed: list[ConnectionClosed] = []
        connections = self._connections
        while connections:
            conn = next(iter(connections.values()))
            if conn.last_active + timeout > monotonic:
                break
            self._detach(conn)
            closed.append(self._closed_event(conn, CloseReason.IDLE, None, ""))
        return closed

    def connection_info(self, connection_id: str) -> ConnectionInfo | None:
        """A snapshot of a held connection, or None."""
        conn = self._connections.get(connection_id)
        if conn is None:
            return None
        return ConnectionInfo(
            conn.id,
            conn.account,
            conn.receipt_secret is not None,
            conn.client_address,
            conn.client_asset,
            conn.total,
            conn.max_stream_id,
            conn.last_active,
            tuple(
                StreamInfo(s.id, s.total, s.receive_max, s.read_offset, len(s.out), s.closing)
                for s in conn.streams.values()
            ),
        )

    def connection_ids(self) -> list[str]:
        """The ids of the held connections, least recently active first."""
        return list(self._connections)

    @property
    def buffered_bytes(self) -> int:
        """Out-of-order bytes held server-wide."""
        return self._buffered

    @property
    def queued_bytes(self) -> int:
        """Outgoing bytes queued server-wide."""
        return self._queued


# ------------------------------------------------------------------ module helpers

_OPENING_FRAMES: Final = (StreamMoney, StreamData, StreamMaxMoney, StreamMaxData)


def _event_builder(cls: type[_E]) -> Callable[[str, str, int, int, object], _E]:
    """A constructor of a 5-field frozen event through its slot setters: the frozen
    ``__init__`` costs ~1 us more, on the per-packet path (same trick as the codec)."""
    set_a, set_b, set_c, set_d, set_e = (cls.__dict__[f.name].__set__ for f in fields(cls))
    new = object.__new__

    def build(a: str, b: str, c: int, d: int, e: object) -> _E:
        event = new(cls)
        set_a(event, a)
        set_b(event, b)
        set_c(event, c)
        set_d(event, d)
        set_e(event, e)
        return event

    return build


_money_event: Final = _event_builder(MoneyReceived)
_data_event: Final = _event_builder(DataReceived)
_BUSY: Final = "busy"
_E = TypeVar("_E", MoneyReceived, DataReceived)


def _room(stream: _Stream) -> int:
    """What a stream may still receive without the tolerance."""
    room = stream.receive_max - stream.total
    return room if room > 0 else 0


def _taker(
    targets: tuple[_Stream, ...], parts: list[int], remainder: int, limit: Callable[[_Stream], int]
) -> int:
    """The index of the lowest-numbered stream that can take ``remainder`` more, or -1."""
    for index, stream in enumerate(targets):
        if parts[index] + remainder <= limit(stream):
            return index
    return -1


def _allowance(stream: _Stream) -> int:
    """§9 step 8 / §15 Q7: ceil(1.01 x (receiveMax - totalReceived)), never past a
    UInt64 total (totals travel as UInt64 in StreamMaxMoney and receipts)."""
    room = stream.receive_max - stream.total
    if room <= 0:
        return 0
    allowed = (room * 101 + 99) // 100
    cap = MAX_UINT64 - stream.total
    return allowed if allowed < cap else cap


def _max_money_frame(stream: _Stream, receive_max: int) -> bytes:
    return _frame(_T_STREAM_MAX_MONEY, _vu(stream.id) + _vu(receive_max) + _vu(stream.total))


def _is_close_notice(packet: StreamPacket) -> bool:
    frames = packet.frames
    return any(type(f) is ConnectionClose for f in frames) and not any(
        isinstance(f, _OPENING_FRAMES) for f in frames
    )
