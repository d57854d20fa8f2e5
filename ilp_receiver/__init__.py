"""ilp-receiver: get paid over Interledger from any Python web app.

The names most applications need are re-exported here; everything else lives in its
module (``ilp_receiver.codec.*`` for wire formats, ``ilp_receiver.links`` for
transports, ``ilp_receiver.stores`` for balance stores).
"""

from __future__ import annotations

from .codec.ilp import ErrorCode, IlpFulfill, IlpPrepare, IlpReject
from .errors import (
    ConfigError,
    DecodeError,
    IlpError,
    IlpReceiverError,
    LinkClosedError,
    LinkError,
    PaymentPointerError,
    SpspError,
)
from .links import Link, open_link
from .receiver import (
    AsyncReceiver,
    IncomingPayment,
    PaymentEvent,
    Receiver,
    account_for_endpoint,
)
from .spsp import PaymentPointer, SpspResponse, parse_spsp_response, resolve_payment_pointer
from .stores import BalanceLimitError, BalanceStore, open_store

__version__ = "0.1.0"

__all__ = [
    "AsyncReceiver",
    "BalanceLimitError",
    "BalanceStore",
    "ConfigError",
    "DecodeError",
    "ErrorCode",
    "IlpError",
    "IlpFulfill",
    "IlpPrepare",
    "IlpReceiverError",
    "IlpReject",
    "IncomingPayment",
    "Link",
    "LinkClosedError",
    "LinkError",
    "PaymentEvent",
    "PaymentPointer",
    "PaymentPointerError",
    "Receiver",
    "SpspError",
    "SpspResponse",
    "__version__",
    "account_for_endpoint",
    "open_link",
    "open_store",
    "parse_spsp_response",
    "resolve_payment_pointer",
]
