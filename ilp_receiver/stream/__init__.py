"""STREAM (RFC 29 as ilp-protocol-stream 2.7.1 speaks it) and RFC 39 receipts.

Spec ``12-stream.md``.  Sans-I/O like the rest of the protocol layers: IVs, token nonces
and receipt nonces are parameters, nothing here reads a clock or draws randomness.

* :mod:`ilp_receiver.codec.stream` -- the plaintext packet and its 15 frames (§5-§7);
* :mod:`.secrets` -- key derivation, the encryption envelope, fulfillments, and the
  stateless server tokens that carry the (authenticated) connection tag (§2-§4, §8);
* :mod:`.receipts` -- RFC 39 receipts (§13).
"""

from __future__ import annotations

from .receipts import Receipt, create_receipt, decode_receipt, verify_receipt
from .secrets import (
    ConnectionToken,
    IssuedStreamSecret,
    StreamKeys,
    StreamServerSecrets,
    TokenContents,
    UnknownTokenError,
    derive_keys,
    open_packet,
    seal_packet,
)

__all__ = [
    "ConnectionToken",
    "IssuedStreamSecret",
    "Receipt",
    "StreamKeys",
    "StreamServerSecrets",
    "TokenContents",
    "UnknownTokenError",
    "create_receipt",
    "decode_receipt",
    "derive_keys",
    "open_packet",
    "seal_packet",
    "verify_receipt",
]
