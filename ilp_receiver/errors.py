"""The one exception tree of ilp-receiver.

Every error the library raises on purpose derives from :class:`IlpReceiverError`::

    IlpReceiverError
    ├── DecodeError              bytes that do not parse (offset + reason); the ONLY
    │                            exception any decoder raises on bad input
    ├── EncodeError              a value that cannot be written (amount out of UInt64
    │                            range, address too long, ...)
    ├── ConfigError              a bad setting; names the field
    ├── CryptoUnavailableError   AES-256-GCM is not usable (an OpenSSL that refuses it)
    ├── InvalidAddressError      a string that is not an ILP address (RFC 15)
    ├── PaymentPointerError      a string that is not a payment pointer (RFC 26 draft 1)
    ├── LocalProtocolError       this program misused a protocol (our bug or the caller's)
    ├── RemoteProtocolError      the peer broke a protocol (bad frame, bad auth, ...)
    ├── LinkError                a transport to a peer failed
    │   ├── LinkClosedError      the link is (or went) down; in-flight requests fail with it
    │   ├── LinkTimeoutError     no answer in time
    │   ├── AuthenticationError  the peer refused our credentials (or we refused its)
    │   ├── UplinkUnavailableError  the uplink could not be reached at start-up
    │   │                        (``require_uplink=True``); the reason is the message
    │   └── links.http.HttpStatusError  an HTTP peer answered a non-200 status
    ├── SpspError                an SPSP query failed (HTTP status, bad JSON, bad fields)
    ├── stores.BalanceLimitError a balance change would leave [minimum, maximum]; nothing changed
    │   └── monetization.InsufficientBalanceError  a visitor's bucket cannot pay a price
    ├── client.PaymentError      a payment failed (code, message, what was paid before)
    │   └── client.QuoteError    a quote got no encrypted answer saying what arrived
    ├── client.HttpIlpError      an HTTP-ILP paid request could not be paid
    ├── monetization.InvalidVisitorIdError  a visitor id whose signature does not verify
    ├── webpayments.InvalidOrderIdError     an order id that cannot be an address segment
    ├── webhooks.WebhookVerificationError  a webhook delivery that does not verify
    ├── stores.StoreError        a balance store backend failed
    │   └── StoreClosedError     the store was used after close()
    └── IlpError                 carries an ILP error code; application hooks raise it to
                                 reject a packet with that code
        ├── psk2.secrets.WrongReceiverError   F06: a destination this receiver did not issue
        └── codec.ildcp.PeerProtocolRequestError  F00: a malformed peer.* request

Third-party exceptions (aiohttp, sqlite3, redis, ...) are mapped at the I/O edge and
chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "CryptoUnavailableError",
    "DecodeError",
    "EncodeError",
    "IlpError",
    "IlpReceiverError",
    "InvalidAddressError",
    "LinkClosedError",
    "LinkError",
    "LinkTimeoutError",
    "LocalProtocolError",
    "PaymentPointerError",
    "RemoteProtocolError",
    "SpspError",
    "UplinkUnavailableError",
]


class IlpReceiverError(Exception):
    """Base class of every error ilp-receiver raises on purpose."""


class DecodeError(IlpReceiverError, ValueError):
    """Bytes that do not parse.

    ``offset`` is the byte position where decoding failed (relative to the start of
    the buffer handed to the decoder) and ``reason`` a short human explanation.
    """

    def __init__(self, reason: str, offset: int = 0) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class EncodeError(IlpReceiverError, ValueError):
    """A value that cannot be encoded (out of range, too long, wrong type)."""


class ConfigError(IlpReceiverError, ValueError):
    """A configuration value is invalid. ``field`` names the offending setting."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid config {field!r}: {problem}")
        self.field = field
        self.problem = problem


class CryptoUnavailableError(IlpReceiverError, RuntimeError):
    """AES-256-GCM cannot run here (the OpenSSL behind `cryptography` refuses it)."""


class InvalidAddressError(IlpReceiverError, ValueError):
    """A string that is not a valid ILP address (RFC 15)."""


class PaymentPointerError(IlpReceiverError, ValueError):
    """A string that is not a valid payment pointer (RFC 26 draft 1).

    ``option`` names the keyword argument that would accept it (``"lenient"``), when
    one would; the message then says ``pass lenient=True``, and the CLI names its flag
    (``--lenient``) instead.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class LocalProtocolError(IlpReceiverError):
    """This side tried to do something the protocol forbids."""


class RemoteProtocolError(IlpReceiverError):
    """The peer violated the protocol."""


class LinkError(IlpReceiverError):
    """A transport (BTP, HTTP) to a peer failed."""


class LinkClosedError(LinkError):
    """The link is down, or went down while a request was in flight."""


class LinkTimeoutError(LinkError, TimeoutError):
    """The peer did not answer in time."""


class AuthenticationError(LinkError):
    """Credentials were refused."""


class UplinkUnavailableError(LinkError):
    """The uplink could not be reached at start-up and the receiver was told to require
    it (``require_uplink=True`` / ``ILP_RECEIVER_REQUIRE_UPLINK=1``); the message says
    why (the connection error, the refused credentials, the failed IL-DCP)."""


class SpspError(IlpReceiverError):
    """An SPSP query failed: ``status`` is the HTTP status when there was one.

    ``option`` names the keyword argument that may help (``"allow_http_for_loopback"``
    when a loopback server answered TLS with plain HTTP), as for
    :class:`PaymentPointerError`.
    """

    def __init__(
        self, message: str, status: int | None = None, *, option: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.option = option


class IlpError(IlpReceiverError):
    """An error that becomes an ILP Reject with ``code``.

    Application hooks raise it to refuse a packet: ``raise IlpError("F99", "sold out")``.
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        triggered_by: str = "",
        data: bytes = b"",
    ) -> None:
        if len(code) != 3 or not code.isascii():
            raise EncodeError(f"ILP error code must be 3 ASCII characters, got {code!r}")
        super().__init__(f"{code} {message}".rstrip())
        self.code = code
        self.message = message
        self.triggered_by = triggered_by
        self.data = data
