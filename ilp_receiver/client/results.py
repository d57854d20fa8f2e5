"""Values the paying client hands back: destinations, results, progress and errors.

Plain frozen dataclasses, no I/O.  Amounts are ``int`` base units of the asset named;
"source" amounts are in the sender's asset (what left the uplink), "destination" /
"delivered" amounts in the receiver's asset as the receiver's authenticated PSK2
responses report them (spec ``06-psk2.md`` §5: the response ``chunkAmount`` is the
"amount that actually arrived in this Prepare"; §8: draft-2 "response/error = amount
that arrived").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from ..errors import IlpReceiverError

__all__ = [
    "ChunkProgress",
    "PaymentError",
    "PaymentResult",
    "Psk2Destination",
    "Psk2Draft",
    "QuoteError",
    "QuoteResult",
]

#: Which PSK2 wire format to send: ``"draft1"`` (chunks, types 0-3; what PR 382 names and
#: what our receivers speak first) or ``"draft2"`` (request/response, types 4-6).
Psk2Draft = Literal["draft1", "draft2"]


@dataclass(frozen=True, slots=True)
class Psk2Destination:
    """Where to pay: a PSK2 destination address and its 32-byte shared secret.

    Usually taken from an SPSP response (``destination_account``/``shared_secret``) or
    an HTTP-ILP ``Pay`` header.  The secret is kept out of ``repr``.
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

    @property
    def rate(self) -> Fraction | None:
        """Delivered per source unit, or None if nothing was sent."""
        if self.source_amount == 0:
            return None
        return Fraction(self.delivered_amount, self.source_amount)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (amounts as decimal strings, ids as hex)."""
        out: dict[str, Any] = {
            "destination": self.destination,
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
    draft-2 quote).
    """

    destination: str
    source_amount: int
    destination_amount: int
    code: str
    draft: Psk2Draft = "draft1"

    @property
    def rate(self) -> Fraction:
        """Destination units per source unit."""
        return Fraction(self.destination_amount, self.source_amount or 1)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (amounts as decimal strings)."""
        return {
            "destination": self.destination,
            "source_amount": str(self.source_amount),
            "destination_amount": str(self.destination_amount),
            "code": self.code,
            "psk2": self.draft,
        }


@dataclass(frozen=True, slots=True)
class ChunkProgress:
    """Where a chunked payment stands, after each chunk's answer.

    ``source_target``/``destination_target`` is what the payment was asked to send /
    deliver (one of them is None).  ``chunk_size`` is the source amount the next chunk
    will try.
    """

    source_sent: int
    delivered: int
    chunks_fulfilled: int
    chunks_rejected: int
    chunk_size: int
    source_target: int | None
    destination_target: int | None

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
