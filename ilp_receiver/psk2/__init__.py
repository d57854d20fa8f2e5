"""PSK2 (Pre-Shared Key v2): stateless secrets, the receiver state machine, a sender.

Spec ``06-psk2.md``.  Everything here is sans-I/O: no sockets, no clock, no randomness
(``now``, IVs, tokens and payment ids are parameters).  The wire format lives in
:mod:`ilp_receiver.codec.psk2`.
"""

from __future__ import annotations

from .receiver import (
    Acceptance,
    Decision,
    PaymentRecord,
    Psk2Format,
    Psk2Receiver,
    UnfulfillableRequest,
)
from .secrets import (
    IssuedSecret,
    ParsedDestination,
    ReceiverSecrets,
    WrongReceiverError,
)
from .sender import (
    Psk2Reply,
    build_chunk_prepare,
    build_quote_prepare,
    build_request_prepare,
    parse_reply,
)

__all__ = [
    "Acceptance",
    "Decision",
    "IssuedSecret",
    "ParsedDestination",
    "PaymentRecord",
    "Psk2Format",
    "Psk2Receiver",
    "Psk2Reply",
    "ReceiverSecrets",
    "UnfulfillableRequest",
    "WrongReceiverError",
    "build_chunk_prepare",
    "build_quote_prepare",
    "build_request_prepare",
    "parse_reply",
]
