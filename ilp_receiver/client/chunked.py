"""Sans-I/O chunked PSK2 payment (draft 1), the sender side of spec ``06-psk2.md`` §5/§7.

"chunked payments reuse one paymentId with increasing sequence, type 0 then type 1 on
the last chunk" (§7, observed 0.2.1 sender conventions).  :class:`ChunkedPayment` is the
state machine of one such payment: :meth:`~ChunkedPayment.next_prepare` builds the next
chunk (IV and expiry are parameters), :meth:`~ChunkedPayment.on_reply` reads its
Fulfill or Reject and says what to do next.  The I/O loop lives in
:meth:`ilp_receiver.client.AsyncPaymentClient.pay_chunked`.

Behaviour, following ilp-protocol-psk2's ``sendChunkedPayment`` where it is sensible:

* The payment is bounded by a **source amount** (send exactly that much) or a
  **destination amount** (deliver at least that much; sent as the draft-1
  ``paymentAmount``, "total the payment should deliver", so the receiver can finish
  the payment once it has it).
* Each chunk asks the receiver for ``chunkAmount`` = ``floor(rate x chunk x (1 -
  slippage))`` once a rate is known (0 before), like 0.2.1's
  ``minimumAmountReceiverShouldAccept``; in destination mode the last chunk asks for
  the whole rest, and no chunk may deliver 0.
* **F08 Amount Too Large**: the chunk shrinks to ``chunk x maximumAmount /
  receivedAmount`` from the F08 data (half the chunk when the data is missing) and that
  becomes the largest chunk from then on; retried at once.
* **T04** halves the chunk and backs off; other **T** and **R** errors back off
  (exponential, from ``initial_backoff`` up to ``max_backoff`` seconds); more than
  ``max_retries`` temporary failures in a row end the payment.
* **F99 with the receiver's encrypted type-3 response** showing that less arrived than
  asked: the exchange rate moved; the rate estimate is reset from that answer and the
  chunk retried (counts as a failure).  Any other final error ends the payment.
* After every fulfilled chunk the chunk size grows by ``growth`` (0.2.1: x1.1) back up
  to the largest allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from math import ceil, floor
from typing import Final

from ..codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    IlpReply,
    decode_amount_too_large_data,
)
from ..codec.oer import MAX_UINT64
from ..codec.psk2 import Draft1Packet, Draft1Type
from ..errors import ConfigError, DecodeError, LocalProtocolError
from ..psk2.sender import build_chunk_prepare, parse_reply
from .results import ChunkProgress, PaymentError, PaymentResult, Psk2Destination
from .single import fulfillment_is_valid

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkOutcome",
    "ChunkedPayment",
]

#: ilp-protocol-psk2: ``STARTING_TRANSFER_AMOUNT = 1000``.
DEFAULT_CHUNK_SIZE: Final = 1000
#: ilp-protocol-psk2: ``TRANSFER_INCREASE = 1.1``.
DEFAULT_GROWTH: Final = Fraction(11, 10)
#: ilp-protocol-psk2 waits ``Math.max(timeToWait * 2, 100)`` ms after a T/R error.
DEFAULT_INITIAL_BACKOFF: Final = 0.1
DEFAULT_MAX_BACKOFF: Final = 10.0
DEFAULT_MAX_RETRIES: Final = 10


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What :meth:`ChunkedPayment.on_reply` decided.

    ``fulfilled``: this chunk went through.  ``finished``: the payment is complete.
    ``delay``: seconds to wait before the next chunk.  ``error``: the payment failed
    (raise it; its ``result`` says what was paid).
    """

    fulfilled: bool
    finished: bool = False
    delay: float = 0.0
    error: PaymentError | None = None


@dataclass(frozen=True, slots=True)
class _InFlight:
    prepare: IlpPrepare
    request: Draft1Packet
    amount: int
    min_destination: int
    last: bool


def _positive(value: int | None, name: str) -> None:
    if value is not None and (type(value) is not int or not 0 < value <= MAX_UINT64):
        raise ConfigError(name, f"must be an integer in 1..{MAX_UINT64}, got {value!r}")


class ChunkedPayment:
    """The state of one chunked draft-1 payment (see the module docstring).

    Give exactly one of ``source_amount`` and ``destination_amount``.  ``payment_id``
    is 16 random bytes chosen by the caller; ``first_sequence`` the first chunk number.
    """

    def __init__(
        self,
        target: Psk2Destination,
        *,
        payment_id: bytes,
        source_amount: int | None = None,
        destination_amount: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        slippage: Fraction | float = 0,
        growth: Fraction | float = DEFAULT_GROWTH,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        first_sequence: int = 0,
    ) -> None:
        if (source_amount is None) == (destination_amount is None):
            raise ConfigError("amount", "give exactly one of source_amount and destination_amount")
        _positive(source_amount, "source_amount")
        _positive(destination_amount, "destination_amount")
        _positive(chunk_size, "chunk_size")
        if len(payment_id) != 16:
            raise ConfigError("payment_id", "must be 16 bytes")
        slip = Fraction(slippage)
        if not 0 <= slip < 1:
            raise ConfigError("slippage", "must be in [0, 1)")
        grow = Fraction(growth)
        if grow < 1:
            raise ConfigError("growth", "must be at least 1")
        if max_retries < 0:
            raise ConfigError("max_retries", "must not be negative")
        self.target = target
        self.payment_id = bytes(payment_id)
        self.source_target = source_amount
        self.destination_target = destination_amount
        self._slippage = slip
        self._growth = grow
        self._max_retries = max_retries
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._chunk = chunk_size
        self._max_chunk = chunk_size
        self._sequence = first_sequence
        self._sent = 0
        self._delivered = 0
        self._fulfilled = 0
        self._rejected = 0
        self._failures = 0
        self._backoff = 0.0
        # amounts the rate estimate is computed from (reset when the rate moves)
        self._rate_sent = 0
        self._rate_delivered = 0
        self._receiver_total: int | None = None
        self._in_flight: _InFlight | None = None
        self._finished = False
        self._failed = False

    # ------------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        """Whether the payment is complete."""
        return self._finished

    @property
    def rate(self) -> Fraction | None:
        """The current exchange-rate estimate (delivered per source unit), if any."""
        if self._rate_sent == 0:
            return None
        return Fraction(self._rate_delivered, self._rate_sent)

    @property
    def progress(self) -> ChunkProgress:
        """Where the payment stands."""
        return ChunkProgress(
            self._sent,
            self._delivered,
            self._fulfilled,
            self._rejected,
            self._chunk,
            self.source_target,
            self.destination_target,
        )

    @property
    def result(self) -> PaymentResult:
        """What has been paid so far."""
        return PaymentResult(
            self.target.destination,
            self._sent,
            self._delivered,
            self._fulfilled,
            self._rejected,
            draft="draft1",
            payment_id=self.payment_id,
            receiver_total=self._receiver_total,
        )

    # ------------------------------------------------------------------ chunks

    def next_prepare(self, *, iv: bytes, expires_at: datetime) -> IlpPrepare | None:
        """The next chunk's Prepare, or None when the payment is complete.

        ``iv``: 12 fresh random bytes.  Call :meth:`on_reply` with its answer before
        asking for another chunk.
        """
        if self._failed:
            raise LocalProtocolError("this chunked payment has failed")
        if self._in_flight is not None:
            raise LocalProtocolError("a chunk is still in flight; call on_reply() first")
        if self._finished:
            return None
        rate = self.rate
        left_to_deliver: int | None = None
        left_to_send: int | None
        if self.source_target is not None:
            left_to_send = self.source_target - self._sent
            if left_to_send <= 0:
                self._finished = True
                return None
        else:
            assert self.destination_target is not None
            left_to_deliver = self.destination_target - self._delivered
            if left_to_deliver <= 0:
                self._finished = True
                return None
            left_to_send = ceil(left_to_deliver / rate) if rate else None
        amount, last = self._chunk, False
        if left_to_send is not None and left_to_send <= amount:
            amount, last = left_to_send, True
        minimum = floor(rate * amount * (1 - self._slippage)) if rate else 0
        if left_to_deliver is not None:
            # destination mode: the last chunk must bring the rest, and no chunk may
            # be fulfilled while delivering nothing
            minimum = left_to_deliver if last else max(1, minimum)
        minimum = min(minimum, MAX_UINT64)
        payment_amount = (
            self.destination_target if self.destination_target is not None else MAX_UINT64
        )
        prepare = build_chunk_prepare(
            self.target.destination,
            self.target.shared_secret,
            amount=amount,
            expires_at=expires_at,
            iv=iv,
            payment_id=self.payment_id,
            sequence=self._sequence,
            payment_amount=payment_amount,
            chunk_amount=minimum,
            last_chunk=last,
        )
        request = Draft1Packet(
            Draft1Type.LAST_CHUNK if last else Draft1Type.CHUNK,
            self.payment_id,
            self._sequence,
            payment_amount,
            minimum,
        )
        self._in_flight = _InFlight(prepare, request, amount, minimum, last)
        return prepare

    def _fail(
        self, message: str, reply: IlpReject | None = None, arrived: int | None = None
    ) -> ChunkOutcome:
        self._failed = True
        error = PaymentError(
            message,
            result=self.result,
            code=reply.code if reply is not None else "",
            ilp_message=reply.message if reply is not None else "",
            triggered_by=reply.triggered_by if reply is not None else "",
            arrived=arrived,
        )
        return ChunkOutcome(False, error=error)

    def abort(self, reason: str) -> PaymentError:
        """End the payment because the chunk in flight got no answer (link failure).

        Whether that chunk was paid is unknown; it is not counted.
        """
        self._in_flight = None
        self._failed = True
        return PaymentError(f"chunked payment aborted: {reason}", result=self.result)

    def on_reply(self, reply: IlpReply) -> ChunkOutcome:
        """Account for the answer to the chunk in flight and decide what comes next."""
        chunk = self._in_flight
        if chunk is None:
            raise LocalProtocolError("no chunk is in flight")
        self._in_flight = None
        if isinstance(reply, IlpFulfill):
            return self._on_fulfill(chunk, reply)
        self._rejected += 1
        code = reply.code
        if code == "F08":
            return self._on_too_large(chunk, reply)
        if code[:1] in ("T", "R"):
            if code == "T04":
                self._chunk = max(1, self._chunk // 2)
            self._failures += 1
            if self._failures > self._max_retries:
                return self._fail(
                    f"chunked payment gave up after {self._failures} temporary errors "
                    f"(last: {code} {reply.message!r})",
                    reply,
                )
            self._backoff = min(self._max_backoff, max(self._initial_backoff, self._backoff * 2))
            return ChunkOutcome(False, delay=self._backoff)
        parsed = parse_reply(self.target.shared_secret, reply, chunk.request)
        arrived = parsed.delivered_amount
        if code == "F99" and arrived is not None and arrived < chunk.min_destination:
            # the rate moved: less arrived than we asked for; re-estimate and retry
            self._rate_sent, self._rate_delivered = chunk.amount, arrived
            self._failures += 1
            if self._failures > self._max_retries:
                return self._fail(
                    f"chunked payment gave up: chunks keep arriving below the minimum "
                    f"({arrived} < {chunk.min_destination})",
                    reply,
                    arrived,
                )
            return ChunkOutcome(False)
        text = f"chunked payment rejected with {code}"
        if reply.message:
            text += f" {reply.message!r}"
        if reply.triggered_by:
            text += f" by {reply.triggered_by}"
        return self._fail(text, reply, arrived)

    def _on_fulfill(self, chunk: _InFlight, reply: IlpFulfill) -> ChunkOutcome:
        if not fulfillment_is_valid(chunk.prepare, reply):
            return self._fail("a chunk's fulfillment does not match its condition")
        packet = parse_reply(self.target.shared_secret, reply, chunk.request).packet
        self._sent += chunk.amount
        self._fulfilled += 1
        self._sequence += 1
        if not isinstance(packet, Draft1Packet):
            # paid, but the receiver did not say how much arrived: count the minimum
            self._delivered += chunk.min_destination
            return self._fail("the receiver fulfilled a chunk without a valid PSK2 response")
        arrived = packet.chunk_amount
        self._delivered += arrived
        self._rate_sent += chunk.amount
        self._rate_delivered += arrived
        if packet.payment_amount:
            self._receiver_total = packet.payment_amount
        self._failures = 0
        self._backoff = 0.0
        self._chunk = min(self._max_chunk, max(self._chunk, ceil(self._chunk * self._growth)))
        if chunk.last or (
            self.destination_target is not None and self._delivered >= self.destination_target
        ):
            self._finished = True
        return ChunkOutcome(True, finished=self._finished)

    def _on_too_large(self, chunk: _InFlight, reply: IlpReject) -> ChunkOutcome:
        # RFC 27 F08 data: receivedAmount, maximumAmount; scale our chunk by their ratio
        smaller = chunk.amount // 2
        try:
            too_large = decode_amount_too_large_data(reply.data)
        except DecodeError:
            pass
        else:
            if too_large.received_amount > 0:
                smaller = chunk.amount * too_large.maximum_amount // too_large.received_amount
        smaller = min(smaller, chunk.amount - 1)
        if smaller < 1:
            return self._fail(
                "chunked payment failed: the path allows no packet of even 1 unit (F08)",
                reply,
            )
        self._chunk = self._max_chunk = smaller
        return ChunkOutcome(False)
