"""Values the paying client hands back: destinations, results, progress and errors.

Plain frozen dataclasses, no I/O.  Amounts are ``int`` base units of the asset named;
"source" amounts are in the sender's asset (what left the uplink), "destination" /
"delivered" amounts in the receiver's asset as the receiver's authenticated PSK2
responses report them (spec ``06-psk2.md`` §5: the response ``chunkAmount`` is the
"amount that actually arrived in this Prepare"; §8: draft-2 "response/error = amount
that arrived") or, for STREAM, as its encrypted replies do (``12-stream.md`` §5:
"in a Fulfill/Reject: amount that actually arrived").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from ..errors import IlpReceiverError

__all__ = [
    "ChunkProgress",
    "PaymentError",
    "PaymentProtocol",
    "PaymentResult",
    "ProtocolChoice",
    "Psk2Destination",
    "Psk2Draft",
    "QuoteError",
    "QuoteResult",
    "StreamDestination",
]

#: Which PSK2 wire format to send: ``"draft1"`` (chunks, types 0-3; what PR 382 names and
#: what our receivers speak first) or ``"draft2"`` (request/response, types 4-6).
Psk2Draft = Literal["draft1", "draft2"]
#: The transport a payment used: PSK2 (SPSP ``application/spsp+json``) or STREAM (SPSP
#: v4, ``application/spsp4+json``).
PaymentProtocol = Literal["psk2", "stream"]
#: What the client may use: ``"auto"`` (STREAM when the receiver offers it, else PSK2),
#: ``"stream"`` only, or ``"psk2"`` only.
ProtocolChoice = Literal["auto", "stream", "psk2"]


@dataclass(frozen=True, slots=True)
class Psk2Destination:
    """Where to pay: a PSK2 destination address and its 32-byte shared secret.

    Usually taken from an SPSP response (``destination_account``/``shared_secret``) or
    an HTTP-ILP ``Pay`` header.  The secret is kept out of ``repr``.
    """

    destination: str
    shared_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamDestination:
    """Where to pay over STREAM: a destination address and its 32-byte shared secret.

    Usually taken from an SPSP v4 response (``application/spsp4+json``); paying one
    always uses STREAM.  The secret is kept out of ``repr``.
    """

    destination: str
    shared_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """The outcome of a payment (complete, or partial inside a :class:`PaymentError`).

    ``source_amount`` is what was sent in fulfilled Prepares; ``delivered_amount`` the
    sum of what the receiver says arrived in them.  ``receiver_total`` is the draft-1
    ``paymentAmount`` of the last response ("total the receiver has accepted for this
    paymentId so far"), None for draft 2 or when a receiver reports 0 (ilp-protocol-psk2
    0.5.0 answers legacy chunks "with ``paymentAmount = 0`` instead of a running
    total").  ``data`` is the draft-2 response data of a single payment.

    STREAM payments (``protocol="stream"``): ``chunks_fulfilled``/``chunks_rejected``
    count the money packets (also available as ``packets_fulfilled`` /
    ``packets_rejected``), ``exchange_rate`` is the rate the probe found,
    ``prepares_sent`` every Prepare of the connection (probes and the close
    included), ``receipt`` the last RFC 39 receipt, and ``data`` the bytes the receiver
    sent on the stream; ``draft``/``payment_id``/``receiver_total`` do not apply.
    """

    destination: str
    source_amount: int
    delivered_amount: int
    chunks_fulfilled: int
    chunks_rejected: int = 0
    draft: Psk2Draft = "draft1"
    payment_id: bytes | None = None
    receiver_total: int | None = None
    data: bytes = b""
    protocol: PaymentProtocol = "psk2"
    exchange_rate: Fraction | None = None
    prepares_sent: int = 0
    receipt: bytes | None = None

    @property
    def packets_fulfilled(self) -> int:
        """Fulfilled money packets (the same count as ``chunks_fulfilled``)."""
        return self.chunks_fulfilled

    @property
    def packets_rejected(self) -> int:
        """Rejected money packets (the same count as ``chunks_rejected``)."""
        return self.chunks_rejected

    @property
    def rate(self) -> Fraction | None:
        """Delivered per source unit, or None if nothing was sent."""
        if self.source_amount == 0:
            return None
        return Fraction(self.delivered_amount, self.source_amount)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (amounts as decimal strings, ids as hex, rates as
        fractions such as ``"19/20"``)."""
        if self.protocol == "stream":
            stream: dict[str, Any] = {
                "destination": self.destination,
                "protocol": "stream",
                "source_amount": str(self.source_amount),
                "delivered_amount": str(self.delivered_amount),
                "packets_fulfilled": self.chunks_fulfilled,
                "packets_rejected": self.chunks_rejected,
                "prepares_sent": self.prepares_sent,
            }
            if self.exchange_rate is not None:
                stream["exchange_rate"] = str(self.exchange_rate)
            if self.data:
                stream["data_received"] = len(self.data)
            if self.receipt is not None:
                stream["receipt"] = self.receipt.hex()
            return stream
        out: dict[str, Any] = {
            "destination": self.destination,
            "protocol": "psk2",
            "source_amount": str(self.source_amount),
            "delivered_amount": str(self.delivered_amount),
            "chunks_fulfilled": self.chunks_fulfilled,
            "chunks_rejected": self.chunks_rejected,
            "psk2": self.draft,
        }
        if self.payment_id is not None:
            out["payment_id"] = self.payment_id.hex()
        if self.receiver_total is not None:
            out["receiver_total"] = str(self.receiver_total)
        return out


@dataclass(frozen=True, slots=True)
class QuoteResult:
    """What an unfulfillable test payment of ``source_amount`` delivered.

    "the sender uses 32 random bytes as the condition. The receiver cannot fulfill, but
    still answers with an encrypted error response telling how much arrived" (§6).
    ``code`` is the Reject's code (F99 from draft-1 receivers, F05 from 0.5.0 for a
    draft-2 quote).  A STREAM quote (``protocol="stream"``) comes from the rate probe
    ("unfulfillable Prepares ... answered F99 + reply" with the arrived amount,
    ``12-stream.md`` §9-§10); ``draft`` does not apply to it.
    """

    destination: str
    source_amount: int
    destination_amount: int
    code: str
    draft: Psk2Draft = "draft1"
    protocol: PaymentProtocol = "psk2"

    @property
    def rate(self) -> Fraction:
        """Destination units per source unit."""
        return Fraction(self.destination_amount, self.source_amount or 1)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (amounts as decimal strings)."""
        out: dict[str, Any] = {
            "destination": self.destination,
            "protocol": self.protocol,
            "source_amount": str(self.source_amount),
            "destination_amount": str(self.destination_amount),
            "code": self.code,
        }
        if self.protocol == "psk2":
            out["psk2"] = self.draft
        return out


@dataclass(frozen=True, slots=True)
class ChunkProgress:
    """Where a chunked payment stands, after each chunk's answer.

    ``source_target``/``destination_target`` is what the payment was asked to send /
    deliver (one of them is None).  ``chunk_size`` is the source amount the next chunk
    will try.  STREAM payments report the same after every money packet's answer
    (``protocol="stream"``; chunks are packets, ``chunk_size`` the current largest
    packet).
    """

    source_sent: int
    delivered: int
    chunks_fulfilled: int
    chunks_rejected: int
    chunk_size: int
    source_target: int | None
    destination_target: int | None
    protocol: PaymentProtocol = "psk2"

    @property
    def fraction(self) -> float:
        """Completion between 0.0 and 1.0."""
        if self.source_target:
            return min(1.0, self.source_sent / self.source_target)
        if self.destination_target:
            return min(1.0, self.delivered / self.destination_target)
        return 1.0


class PaymentError(IlpReceiverError):
    """A payment did not (fully) go through.

    ``code``/``ilp_message``/``triggered_by`` come from the ILP Reject that ended it
    (empty when it ended otherwise, e.g. the link failed or the receiver's Fulfill
    carried no valid PSK2 response).  ``arrived`` is the amount the receiver's
    encrypted error says arrived in the rejected Prepare, when it said so.
    ``result`` is what *was* paid before the failure (fulfilled chunks stay paid).
    """

    def __init__(
        self,
        message: str,
        *,
        result: PaymentResult,
        code: str = "",
        ilp_message: str = "",
        triggered_by: str = "",
        arrived: int | None = None,
    ) -> None:
        super().__init__(message)
        self.result = result
        self.code = code
        self.ilp_message = ilp_message
        self.triggered_by = triggered_by
        self.arrived = arrived

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (for the CLI's result line)."""
        out: dict[str, Any] = {"error": str(self), "code": self.code or None}
        if self.ilp_message:
            out["ilp_message"] = self.ilp_message
        if self.triggered_by:
            out["triggered_by"] = self.triggered_by
        if self.arrived is not None:
            out["arrived"] = str(self.arrived)
        out["paid"] = self.result.to_json()
        return out


class QuoteError(PaymentError):
    """A quote got no authenticated answer saying how much arrived (e.g. F08, F02, T04)."""
