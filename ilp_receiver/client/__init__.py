"""The paying side: SPSP queries, STREAM and PSK2 payments and HTTP-ILP paid requests.

Implements the sender half of spec ``06-psk2.md`` (single payments in draft 1 or 2,
quotes, draft-1 chunked payments), the STREAM client of ``12-stream.md`` §10 (rate
probe, multi-packet payments, closing; chosen by SPSP v4, §14), the SPSP client of
``07-spsp-payment-pointers.md`` and the HTTP-ILP client of ``08-http-ilp.md``.  Usage:
``docs/client.md``.

asyncio API:

* :class:`AsyncPaymentClient` -- ``await AsyncPaymentClient.connect(uplink_url)``;
  ``query``, ``pay``, ``quote``, ``pay_chunked`` (``protocol="auto"|"stream"|"psk2"``);
* :class:`AsyncHttpIlpClient` -- ``await http.get(url)`` pays a ``402`` and retries
  (``Pay: interledger-psk2`` or ``interledger-stream``);
* :class:`HeldStreamPayment` -- the STREAM connection an HTTP-ILP-over-STREAM request is
  paid with (held open until the response).

Blocking API (on the shared background loop): :class:`PaymentClient`,
:class:`HttpIlpClient`.

Sans-I/O pieces: :class:`~ilp_receiver.client.chunked.ChunkedPayment` (the chunked
payment state machine), :mod:`ilp_receiver.client.single` (single payment and quote
builders/readers) and :class:`~ilp_receiver.stream.sender.StreamSender` (a STREAM
connection).
"""

from __future__ import annotations

from .chunked import DEFAULT_CHUNK_SIZE, ChunkedPayment, ChunkOutcome
from .held_stream import HeldStreamPayment
from .http_ilp import AsyncHttpIlpClient, HttpIlpError, HttpIlpResponse
from .payer import AsyncPaymentClient, PaymentTarget, ProgressCallback
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
from .sync import HttpIlpClient, PaymentClient

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "AsyncHttpIlpClient",
    "AsyncPaymentClient",
    "ChunkOutcome",
    "ChunkProgress",
    "ChunkedPayment",
    "HeldStreamPayment",
    "HttpIlpClient",
    "HttpIlpError",
    "HttpIlpResponse",
    "PaymentClient",
    "PaymentError",
    "PaymentProtocol",
    "PaymentResult",
    "PaymentTarget",
    "ProgressCallback",
    "ProtocolChoice",
    "Psk2Destination",
    "Psk2Draft",
    "QuoteError",
    "QuoteResult",
    "StreamDestination",
]
