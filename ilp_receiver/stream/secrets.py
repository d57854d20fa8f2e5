"""STREAM's crypto layer: keys, the packet envelope, conditions and server tokens.

Spec ``12-stream.md``:

* §3 key derivation from the shared secret (labels are the HMAC *message*)::

      encryptionKey  = HMAC-SHA256(sharedSecret, "ilp_stream_encryption")
      fulfillmentKey = HMAC-SHA256(sharedSecret, "ilp_stream_fulfillment")
      packetId       = HMAC-SHA256(sharedSecret, "ilp_stream_packet_id" || sequence as UInt64 BE)

* §4 every ILP ``data`` field is ``IV (12) || tag (16) || ciphertext`` (AES-256-GCM, no
  AAD) around a STREAM packet (:mod:`ilp_receiver.codec.stream`); a sender may pad the
  plaintext with zero bytes, which the reader ignores;
* §8 ``fulfillment = HMAC-SHA256(fulfillmentKey, data)`` over the whole encrypted data,
  ``condition = SHA-256(fulfillment)``;
* §2.2 / §2.3 the stateless server scheme of 2.7.1 (``generateAddressAndSecret``), bit
  for bit::

      plain        = tokenNonce (18) || var-octets(connectionTag ASCII)
                     || var-octets(receiptNonce: 0 or 16) || var-octets(receiptSecret: 0 or 32)
      token        = AES-256-GCM(key = serverSecret, iv, plain)    as IV || tag || ciphertext
      sharedSecret = HMAC-SHA256(HMAC-SHA256(serverSecret, "ilp_stream_shared_secret"), token)
      destination  = serverAddress + "." + base64url(token)

  Any worker holding the server secret can reopen any token, so nothing per connection
  is stored; :class:`StreamServerSecrets` keeps a bounded LRU of opened tokens (keyed by
  the address segment) so a connection's packets cost no re-derivation.

**The connection tag is authenticated.**  It travels inside the AES-GCM token, so a
sender can neither read nor change it without the token failing to open (and the
shared secret is an HMAC over the encrypted token, so it changes too).  That is why it
can carry the account binding (which account a payment is credited to).  Tags are
restricted to printable ASCII (0x20-0x7e, §15 Q15: 2.7.1 mangles anything else) and at
most :data:`MAX_CONNECTION_TAG_LENGTH` (128) characters: with receipts the token is then
at most 226 bytes, i.e. 302 address characters, which leaves 720 of the 1023 an ILP
address may have (RFC 15) for the server's own address.  Opening applies the same
rules, so what is accepted is exactly what :meth:`StreamServerSecrets.generate` could
have issued.  The receipt nonce (16 bytes) and secret (32 bytes) also travel encrypted,
together or not at all.

§2.5 recommends not reusing one raw secret for two roles; the project derives every
protocol secret from the one long-term receiver secret, so the STREAM server secret is
``HMAC-SHA256(receiverSecret, "ilp_receiver_stream_server_secret")``
(:meth:`StreamServerSecrets.from_receiver_secret`).  The 2.7.1 layout itself uses that
server secret both as the AES key and as the HMAC key, exactly as the vectors do.

Sans-I/O: IVs and token nonces are parameters; nothing here draws randomness.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from ..codec.address import MAX_ADDRESS_LENGTH, validate_address
from ..codec.oer import MAX_UINT64, Reader, encode_var_octets
from ..codec.stream import (
    MAX_DATA_LENGTH,
    MAX_PLAINTEXT_LENGTH,
    StreamPacket,
    decode_stream_packet,
    encode_stream_packet,
)
from ..crypto import (
    ENVELOPE_OVERHEAD,
    HmacSha256,
    constant_time_equal,
    hmac_sha256,
    open_envelope,
    seal_envelope,
    sha256,
)
from ..errors import ConfigError, DecodeError, EncodeError, IlpError, InvalidAddressError
from ..psk2.secrets import base64url, decode_base64_lenient
from .receipts import RECEIPT_NONCE_LENGTH, RECEIPT_SECRET_LENGTH

__all__ = [
    "DEFAULT_TOKEN_CACHE_SIZE",
    "ENCRYPTION_LABEL",
    "FULFILLMENT_LABEL",
    "MAX_CONNECTION_TAG_LENGTH",
    "MIN_RECEIVER_SECRET_LENGTH",
    "PACKET_ID_LABEL",
    "SERVER_SECRET_LABEL",
    "SERVER_SECRET_LENGTH",
    "SHARED_SECRET_LABEL",
    "TOKEN_NONCE_LENGTH",
    "ConnectionToken",
    "IssuedStreamSecret",
    "StreamKeys",
    "StreamServerSecrets",
    "TokenContents",
    "UnknownTokenError",
    "condition_for",
    "condition_matches",
    "connection_id_from_destination",
    "decode_token_plaintext",
    "decrypt",
    "derive_keys",
    "encode_token_plaintext",
    "encrypt",
    "fulfillment_for",
    "generate",
    "open_packet",
    "open_token",
    "packet_id",
    "seal_packet",
    "server_secret_from_receiver_secret",
    "shared_secret_generator",
    "validate_connection_tag",
]

#: §3 HMAC labels (the message; the shared or server secret is the key).
ENCRYPTION_LABEL: Final = b"ilp_stream_encryption"
FULFILLMENT_LABEL: Final = b"ilp_stream_fulfillment"
PACKET_ID_LABEL: Final = b"ilp_stream_packet_id"
SHARED_SECRET_LABEL: Final = b"ilp_stream_shared_secret"
#: This project's label for deriving the STREAM server secret from the receiver secret.
SERVER_SECRET_LABEL: Final = b"ilp_receiver_stream_server_secret"

#: §2.2: "tokenNonce = 18 random bytes".
TOKEN_NONCE_LENGTH: Final = 18
#: The server secret is the token's AES-256 key: exactly 32 bytes.
SERVER_SECRET_LENGTH: Final = 32
MIN_RECEIVER_SECRET_LENGTH: Final = 32
#: Printable ASCII characters; the bound keeps destinations far below 1023 (module doc).
MAX_CONNECTION_TAG_LENGTH: Final = 128
DEFAULT_TOKEN_CACHE_SIZE: Final = 10_000


class UnknownTokenError(IlpError):
    """A destination whose token this server did not issue (or that was altered).

    Maps to Reject **F02** with an empty message, as 2.7.1 answers ("we want to minimize
    the amount of information sent unencrypted", §2.3; §15 Q1 discusses F02 vs F06).
    ``detail`` says why, for logs only; it never contains secrets.
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__("F02", "")
        #: Why (for debugging). Not sent to the peer.
        self.detail = detail


# -------------------------------------------------------------------- keys (§3, §8)


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The keys of one shared secret (§3); ``repr`` never shows them.

    Build it with :func:`derive_keys`.  The HMAC states of the fulfillment key and of
    the shared secret are precomputed, so :meth:`fulfillment` and :meth:`packet_id`
    cost two SHA-256 state copies each.
    """

    shared_secret: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)
    fulfillment_key: bytes = field(repr=False)
    fulfillment_hmac: HmacSha256 = field(repr=False, compare=False)
    secret_hmac: HmacSha256 = field(repr=False, compare=False)

    def fulfillment(self, data: bytes) -> bytes:
        """§8: ``HMAC-SHA256(fulfillmentKey, data)`` over the ILP data as sent."""
        return self.fulfillment_hmac.digest(data)

    def condition(self, data: bytes) -> bytes:
        """§8: ``SHA-256(fulfillment)`` for the ILP data ``data``."""
        return sha256(self.fulfillment_hmac.digest(data))

    def packet_id(self, sequence: int) -> bytes:
        """§3: ``HMAC-SHA256(sharedSecret, "ilp_stream_packet_id" || UInt64 BE sequence)``."""
        if type(sequence) is not int or not 0 <= sequence <= MAX_UINT64:
            raise EncodeError(f"sequence must be a UInt64, got {sequence!r}")
        return self.secret_hmac.digest(PACKET_ID_LABEL + sequence.to_bytes(8, "big"))


def derive_keys(shared_secret: bytes) -> StreamKeys:
    """§3: the encryption and fulfillment keys of ``shared_secret`` (32 bytes in practice)."""
    secret = bytes(shared_secret)
    secret_hmac = HmacSha256(secret)
    fulfillment_key = secret_hmac.digest(FULFILLMENT_LABEL)
    return StreamKeys(
        secret,
        secret_hmac.digest(ENCRYPTION_LABEL),
        fulfillment_key,
        HmacSha256(fulfillment_key),
        secret_hmac,
    )


def packet_id(shared_secret: bytes, sequence: int) -> bytes:
    """§3 packet id (2.7.1 hands it to the server app's ``shouldFulfill``)."""
    return derive_keys(shared_secret).packet_id(sequence)


def _encryption_key(key: StreamKeys | bytes) -> bytes:
    return key.encryption_key if isinstance(key, StreamKeys) else key


def encrypt(key: StreamKeys | bytes, iv: bytes, plaintext: bytes) -> bytes:
    """§4 envelope ``IV || tag || ciphertext`` under the encryption key.

    ``key`` is a :class:`StreamKeys` or the 32-byte encryption key itself; ``iv`` must be
    12 fresh random bytes ("IVs must never repeat under one key").
    """
    return seal_envelope(_encryption_key(key), iv, plaintext)


def decrypt(key: StreamKeys | bytes, data: bytes) -> bytes:
    """Open a §4 envelope; DecodeError when it is shorter than 28 bytes or does not
    authenticate (which means: not for this connection, §4)."""
    return open_envelope(_encryption_key(key), data)


def seal_packet(
    key: StreamKeys | bytes, iv: bytes, packet: StreamPacket, *, pad_to: int | None = None
) -> bytes:
    """Encode and encrypt ``packet``: the bytes for the ILP ``data`` field.

    ``pad_to`` appends zero bytes to the plaintext so that the result is exactly that
    long (2.7.1 ``serializeAndEncrypt(key, padPacketToSize)``; connections with
    ``enablePadding`` use 32767).  EncodeError if the packet does not fit in ILP data
    (32767 bytes) or in ``pad_to``.
    """
    plaintext = encode_stream_packet(packet)
    if pad_to is not None:
        if type(pad_to) is not int or not ENVELOPE_OVERHEAD <= pad_to <= MAX_DATA_LENGTH:
            raise EncodeError(f"pad_to must be {ENVELOPE_OVERHEAD}..{MAX_DATA_LENGTH}")
        padding = pad_to - ENVELOPE_OVERHEAD - len(plaintext)
        if padding < 0:
            raise EncodeError(f"packet needs {len(plaintext)} bytes, more than pad_to allows")
        plaintext += bytes(padding)
    elif len(plaintext) > MAX_PLAINTEXT_LENGTH:
        raise EncodeError(
            f"STREAM packet is {len(plaintext)} bytes; ILP data holds at most "
            f"{MAX_PLAINTEXT_LENGTH} bytes of plaintext"
        )
    return seal_envelope(_encryption_key(key), iv, plaintext)


def open_packet(key: StreamKeys | bytes, data: bytes) -> StreamPacket:
    """Decrypt ILP ``data`` and decode the STREAM packet in it (padding ignored).

    DecodeError when the data does not authenticate under the key or does not hold a
    STREAM packet.
    """
    return decode_stream_packet(open_envelope(_encryption_key(key), data))


def fulfillment_for(key: StreamKeys | bytes, data: bytes) -> bytes:
    """§8: ``HMAC-SHA256(fulfillmentKey, data)``; ``key`` is StreamKeys or the key itself."""
    if isinstance(key, StreamKeys):
        return key.fulfillment(data)
    return hmac_sha256(key, data)


def condition_for(fulfillment: bytes) -> bytes:
    """§8: ``condition = SHA-256(fulfillment)``."""
    return sha256(fulfillment)


def condition_matches(fulfillment: bytes, condition: bytes) -> bool:
    """Whether SHA-256(fulfillment) equals ``condition`` (constant time; §9 step 7)."""
    return constant_time_equal(sha256(fulfillment), condition)


# ------------------------------------------------------------- server tokens (§2.2)


class IssuedStreamSecret(NamedTuple):
    """What a STREAM client gets (over SPSP): destination address and shared secret.

    Unpacks like a tuple: ``destination, shared_secret = secrets.generate(...)``.  The
    secret is kept out of ``repr``.
    """

    destination: str
    shared_secret: bytes

    def __repr__(self) -> str:
        return f"IssuedStreamSecret(destination={self.destination!r}, shared_secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class TokenContents:
    """The decrypted token: the nonce, the connection tag (None if none was given) and
    the receipt nonce and secret (both None, or 16 and 32 bytes)."""

    token_nonce: bytes = field(repr=False)
    connection_tag: str | None = None
    receipt_nonce: bytes | None = None
    receipt_secret: bytes | None = field(default=None, repr=False)

    @property
    def receipts_enabled(self) -> bool:
        """Whether Fulfills on this connection must carry receipts (§13)."""
        return self.receipt_secret is not None


@dataclass(frozen=True, slots=True)
class ConnectionToken:
    """A token this server issued, opened: everything the server needs per connection.

    ``connection_id`` is the address segment as received (2.7.1's connection id),
    ``token`` its decoded bytes, ``contents`` the authenticated token contents and
    ``keys`` the keys of the connection's shared secret.
    """

    connection_id: str
    token: bytes = field(repr=False)
    contents: TokenContents
    keys: StreamKeys = field(repr=False)

    @property
    def shared_secret(self) -> bytes:
        """The connection's 32-byte shared secret."""
        return self.keys.shared_secret

    @property
    def connection_tag(self) -> str | None:
        """The authenticated connection tag (the account binding), or None."""
        return self.contents.connection_tag

    @property
    def receipt_nonce(self) -> bytes | None:
        """The 16-byte receipt nonce, or None when receipts are off."""
        return self.contents.receipt_nonce

    @property
    def receipt_secret(self) -> bytes | None:
        """The 32-byte receipt secret, or None when receipts are off."""
        return self.contents.receipt_secret

    @property
    def receipts_enabled(self) -> bool:
        """Whether Fulfills on this connection must carry receipts (§13)."""
        return self.contents.receipts_enabled


def _tag_problem(tag: object) -> str | None:
    if not isinstance(tag, str):
        return f"connection tag must be a str, got {type(tag).__name__}"
    if len(tag) > MAX_CONNECTION_TAG_LENGTH:
        return (
            f"connection tag is {len(tag)} characters; the maximum is {MAX_CONNECTION_TAG_LENGTH}"
        )
    if not (tag.isascii() and tag.isprintable()):
        return "connection tag must be printable ASCII (0x20-0x7e)"
    return None


def validate_connection_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid connection tag, else raise EncodeError.

    Printable ASCII (0x20-0x7e), at most :data:`MAX_CONNECTION_TAG_LENGTH` characters
    (§15 Q15; the module docstring explains the bound).  ``""`` is valid and means "no
    tag", as in 2.7.1.
    """
    problem = _tag_problem(tag)
    if problem is not None:
        raise EncodeError(problem)
    return tag


def encode_token_plaintext(
    token_nonce: bytes,
    connection_tag: str | None = None,
    receipt_nonce: bytes | None = None,
    receipt_secret: bytes | None = None,
) -> bytes:
    """§2.2 token plaintext; EncodeError for a bad nonce, tag or receipt pair."""
    if len(token_nonce) != TOKEN_NONCE_LENGTH:
        raise EncodeError(f"token nonce must be {TOKEN_NONCE_LENGTH} bytes, got {len(token_nonce)}")
    tag = b"" if connection_tag is None else validate_connection_tag(connection_tag).encode()
    # 2.7.1: "receiptNonce and receiptSecret must accompany each other"
    if (receipt_nonce is None) != (receipt_secret is None):
        raise EncodeError("receiptNonce and receiptSecret must accompany each other")
    if receipt_nonce is not None and len(receipt_nonce) != RECEIPT_NONCE_LENGTH:
        raise EncodeError(f"receiptNonce must be {RECEIPT_NONCE_LENGTH} bytes")
    if receipt_secret is not None and len(receipt_secret) != RECEIPT_SECRET_LENGTH:
        raise EncodeError(f"receiptSecret must be {RECEIPT_SECRET_LENGTH} bytes")
    return b"".join(
        (
            bytes(token_nonce),
            encode_var_octets(tag),
            encode_var_octets(b"" if receipt_nonce is None else bytes(receipt_nonce)),
            encode_var_octets(b"" if receipt_secret is None else bytes(receipt_secret)),
        )
    )


def decode_token_plaintext(plaintext: bytes) -> TokenContents:
    """Parse a decrypted token (§2.3 step 4); raises DecodeError.

    As 2.7.1: skip the 18-byte nonce, read the tag (kept only if non-empty), the receipt
    nonce (0 or 16 bytes) and receipt secret (0 or 32 bytes); bytes after are ignored.
    Stricter than 2.7.1: the tag must pass :func:`validate_connection_tag` and the
    receipt nonce and secret must come together, as :func:`encode_token_plaintext`
    guarantees for every token it wrote.
    """
    reader = Reader(plaintext)
    nonce = reader.read_octets(TOKEN_NONCE_LENGTH, "token nonce")
    at = reader.pos
    raw_tag = reader.read_var_octets("connection tag")
    try:
        tag = raw_tag.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("connection tag: not ASCII", at) from None
    problem = _tag_problem(tag)
    if problem is not None:
        raise DecodeError(problem, at)
    at = reader.pos
    receipt_nonce = reader.read_var_octets("receipt nonce")
    if len(receipt_nonce) not in (0, RECEIPT_NONCE_LENGTH):
        raise DecodeError(f"receiptNonce must be {RECEIPT_NONCE_LENGTH} bytes", at)
    at = reader.pos
    receipt_secret = reader.read_var_octets("receipt secret")
    if len(receipt_secret) not in (0, RECEIPT_SECRET_LENGTH):
        raise DecodeError(f"receiptSecret must be {RECEIPT_SECRET_LENGTH} bytes", at)
    if bool(receipt_nonce) != bool(receipt_secret):
        raise DecodeError("receiptNonce and receiptSecret must accompany each other", at)
    return TokenContents(nonce, tag or None, receipt_nonce or None, receipt_secret or None)


def shared_secret_generator(server_secret: bytes) -> bytes:
    """``HMAC-SHA256(serverSecret, "ilp_stream_shared_secret")`` (§3). Secret: do not log."""
    return hmac_sha256(bytes(server_secret), SHARED_SECRET_LABEL)


def server_secret_from_receiver_secret(receiver_secret: bytes) -> bytes:
    """The STREAM server secret of a receiver: ``HMAC-SHA256(receiverSecret,
    "ilp_receiver_stream_server_secret")`` (one secret per role, §2.5)."""
    if not isinstance(receiver_secret, bytes | bytearray | memoryview):
        raise ConfigError("receiver_secret", "must be bytes")
    if len(receiver_secret) < MIN_RECEIVER_SECRET_LENGTH:
        raise ConfigError("receiver_secret", f"must be at least {MIN_RECEIVER_SECRET_LENGTH} bytes")
    return hmac_sha256(bytes(receiver_secret), SERVER_SECRET_LABEL)


def connection_id_from_destination(destination: str, server_address: str) -> str:
    """§2.3 step 1: the connection id (token segment) of an incoming destination.

    Exactly as 2.7.1: remove the first occurrence of ``server_address + "."`` (a plain
    replace, not anchored), split on ``.`` and take the first segment; the rest is
    ignored.  An empty id raises :class:`UnknownTokenError` (Reject F02, empty message).
    Not anchoring is harmless: the id must still open as a token this server sealed.
    """
    rest = destination.replace(server_address + ".", "", 1)
    connection_id = rest.split(".", 1)[0]
    if not connection_id:
        raise UnknownTokenError("destination has no connection id")
    return connection_id


class StreamServerSecrets:
    """Issues and reopens STREAM destinations for one server secret (§2.2, §2.3).

    Stateless: any worker with the same server secret reopens any token.  Opened tokens
    are kept in a bounded LRU keyed by connection id (only tokens that opened; junk is
    never cached).  Thread-compatible: the cache tolerates concurrent use under the GIL
    (a lost update only costs a recomputation).
    """

    __slots__ = ("_cache", "_cache_size", "_generator_hmac", "_server_secret", "_valid_address")

    def __init__(self, server_secret: bytes, *, cache_size: int = DEFAULT_TOKEN_CACHE_SIZE) -> None:
        if not isinstance(server_secret, bytes | bytearray | memoryview):
            raise ConfigError("server_secret", "must be bytes")
        if len(server_secret) != SERVER_SECRET_LENGTH:
            raise ConfigError(
                "server_secret", f"must be exactly {SERVER_SECRET_LENGTH} bytes (an AES-256 key)"
            )
        if cache_size < 0:
            raise ConfigError("cache_size", "must not be negative")
        self._server_secret = bytes(server_secret)
        self._generator_hmac = HmacSha256(shared_secret_generator(self._server_secret))
        self._cache_size = cache_size
        self._cache: OrderedDict[str, ConnectionToken] = OrderedDict()
        self._valid_address = ""  # the last server address generate() validated

    @classmethod
    def from_receiver_secret(
        cls, receiver_secret: bytes, *, cache_size: int = DEFAULT_TOKEN_CACHE_SIZE
    ) -> StreamServerSecrets:
        """Server secrets derived from the long-term receiver secret (>= 32 bytes), see
        :func:`server_secret_from_receiver_secret`."""
        return cls(server_secret_from_receiver_secret(receiver_secret), cache_size=cache_size)

    def __repr__(self) -> str:
        return "StreamServerSecrets(<server secret hidden>)"

    def shared_secret_for(self, token: bytes) -> bytes:
        """``HMAC-SHA256(generator, token)`` over the encrypted token bytes (§2.2)."""
        return self._generator_hmac.digest(bytes(token))

    def generate(
        self,
        server_address: str,
        token_nonce: bytes,
        iv: bytes,
        connection_tag: str | None = None,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> IssuedStreamSecret:
        """A fresh destination and shared secret (2.7.1 ``generateAddressAndSecret``).

        ``token_nonce`` (18 bytes) and ``iv`` (12 bytes) must be fresh random bytes,
        drawn by the caller in that order to replay 2.7.1's draws.  ``connection_tag``
        (authenticated, see the module doc) and the receipt pair are optional.
        InvalidAddressError for a bad server address or a destination over 1023
        characters; EncodeError for bad nonce, IV, tag or receipt values.
        """
        if server_address != self._valid_address:
            validate_address(server_address)
            self._valid_address = server_address
        plaintext = encode_token_plaintext(
            token_nonce, connection_tag, receipt_nonce, receipt_secret
        )
        token = seal_envelope(self._server_secret, iv, plaintext)
        destination = f"{server_address}.{base64url(token)}"
        if len(destination) > MAX_ADDRESS_LENGTH:
            raise InvalidAddressError(
                f"destination would be {len(destination)} characters; the maximum is "
                f"{MAX_ADDRESS_LENGTH} (use a shorter server address or connection tag)"
            )
        return IssuedStreamSecret(destination, self.shared_secret_for(token))

    def open_token(self, connection_id: str) -> ConnectionToken:
        """Reopen the token in an address segment, or raise :class:`UnknownTokenError`.

        Decodes the segment as base64 leniently, like Node (either alphabet, padding
        optional), decrypts it with the server secret (this authenticates it), parses
        it (:func:`decode_token_plaintext`) and derives the connection's keys.  Cached.
        """
        cache = self._cache
        opened = cache.get(connection_id)
        if opened is not None:
            # KeyError: evicted by another thread meanwhile (harmless).
            with contextlib.suppress(KeyError):
                cache.move_to_end(connection_id)
            return opened
        opened = self._open(connection_id)
        if self._cache_size:
            cache[connection_id] = opened
            while len(cache) > self._cache_size:
                try:
                    cache.popitem(last=False)
                except KeyError:  # pragma: no cover - emptied by another thread
                    break
        return opened

    def open(self, destination: str, server_address: str) -> ConnectionToken:
        """§2.3 steps 1 and 4 for an incoming Prepare's destination (see
        :func:`connection_id_from_destination` and :meth:`open_token`)."""
        return self.open_token(connection_id_from_destination(destination, server_address))

    def _open(self, connection_id: str) -> ConnectionToken:
        try:
            token = decode_base64_lenient(connection_id)
        except DecodeError:
            raise UnknownTokenError("connection id is not base64") from None
        try:
            plaintext = open_envelope(self._server_secret, token)
        except DecodeError:
            raise UnknownTokenError("token does not open under this server secret") from None
        try:
            contents = decode_token_plaintext(plaintext)
        except DecodeError as exc:
            raise UnknownTokenError(f"token contents: {exc.reason}") from None
        keys = derive_keys(self.shared_secret_for(token))
        return ConnectionToken(connection_id, token, contents, keys)

    def clear_cache(self) -> None:
        """Forget every opened token (e.g. after rotating secrets in tests)."""
        self._cache.clear()


def generate(
    server_secret: bytes,
    server_address: str,
    token_nonce: bytes,
    iv: bytes,
    connection_tag: str | None = None,
    receipt_nonce: bytes | None = None,
    receipt_secret: bytes | None = None,
) -> IssuedStreamSecret:
    """One-shot :meth:`StreamServerSecrets.generate` for a raw 32-byte server secret."""
    return StreamServerSecrets(server_secret, cache_size=0).generate(
        server_address, token_nonce, iv, connection_tag, receipt_nonce, receipt_secret
    )


def open_token(server_secret: bytes, connection_id: str) -> ConnectionToken:
    """One-shot :meth:`StreamServerSecrets.open_token` (no cache)."""
    return StreamServerSecrets(server_secret, cache_size=0).open_token(connection_id)
