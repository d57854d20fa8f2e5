"""OER primitives as Interledger uses them (spec ``01-oer.md``, vectors ``oer.json``).

Canonical Octet Encoding Rules, only the handful of constructs ILP needs:

* fixed big-endian unsigned integers (UInt8/16/32/64), no prefix;
* the length determinant: short form ``0x00..0x7f``; long form ``0x80|n`` followed by
  ``n`` big-endian length bytes, minimal (the reference reader, oer-utils 1.3.4,
  rejects ``81 05``, ``82 00 80`` and a bare ``80``; it reads at most 6 length bytes);
* var-octet-strings (length determinant + bytes) and VarUInts (a var-octet-string
  holding a minimal big-endian integer; zero is ``01 00``).

Readers are strict where the reference is strict and raise only
:class:`~ilp_receiver.errors.DecodeError`.  Writers always write canonical bytes and
refuse out-of-range values with :class:`~ilp_receiver.errors.EncodeError` (never wrap).
"""

from __future__ import annotations

import struct
from typing import Final

from ..errors import DecodeError, EncodeError

__all__ = [
    "MAX_LENGTH_BYTES",
    "MAX_UINT32",
    "MAX_UINT64",
    "MAX_VAR_UINT_BYTES",
    "Reader",
    "Writer",
    "check_uint64",
    "encode_length_prefix",
    "encode_uint64",
    "encode_var_octets",
    "encode_var_uint",
]

MAX_UINT32: Final = 0xFFFF_FFFF
MAX_UINT64: Final = 0xFFFF_FFFF_FFFF_FFFF
#: The reference reader supports at most 6 length bytes (lengths below 2**48).
MAX_LENGTH_BYTES: Final = 6
#: "VarUInt contents longer than 6 bytes are rejected by oer-utils 1.3.4" (01-oer.md).
#: We accept up to 8 so that every UInt64 value round-trips.
MAX_VAR_UINT_BYTES: Final = 8

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_SHORT_PREFIXES: Final = tuple(bytes((n,)) for n in range(128))


def check_uint64(value: int, what: str = "amount") -> int:
    """Return ``value`` if it is an ``int`` in 0..2**64-1, else raise EncodeError."""
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise EncodeError(f"{what} must be an integer in 0..{MAX_UINT64}, got {value!r}")
    return value


def encode_uint64(value: int) -> bytes:
    """Eight big-endian bytes; refuses anything outside 0..2**64-1."""
    return _U64.pack(check_uint64(value))


def encode_length_prefix(length: int) -> bytes:
    """The canonical OER length determinant for ``length`` content bytes."""
    if length < 128:
        if length < 0:
            raise EncodeError(f"length must not be negative, got {length}")
        return _SHORT_PREFIXES[length]
    size = (length.bit_length() + 7) // 8
    if size > MAX_LENGTH_BYTES:
        raise EncodeError(f"length {length} needs more than {MAX_LENGTH_BYTES} length bytes")
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def encode_var_octets(value: bytes) -> bytes:
    """A var-octet-string: length determinant followed by ``value``."""
    length = len(value)
    if length < 128:
        return _SHORT_PREFIXES[length] + value
    return encode_length_prefix(length) + value


def encode_var_uint(value: int) -> bytes:
    """A VarUInt: the minimal big-endian bytes of ``value`` (at least one) as var-octets."""
    if type(value) is not int or value < 0:
        raise EncodeError(f"VarUInt must be a non-negative integer, got {value!r}")
    size = max(1, (value.bit_length() + 7) // 8)
    if size > MAX_VAR_UINT_BYTES:
        raise EncodeError(f"VarUInt {value} is larger than {MAX_VAR_UINT_BYTES} bytes")
    return _SHORT_PREFIXES[size] + value.to_bytes(size, "big")


class Reader:
    """A cursor over a buffer that decodes OER primitives.

    ``base`` is added to every offset reported in a :class:`DecodeError`, so a reader
    over a sub-buffer still reports positions relative to the outer message.
    """

    __slots__ = ("_buf", "_end", "base", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, base: int = 0) -> None:
        self._buf = data if isinstance(data, bytes) else bytes(data)
        self._end = len(self._buf)
        self.pos = 0
        self.base = base

    @property
    def remaining(self) -> int:
        """How many unread bytes are left."""
        return self._end - self.pos

    def error(self, reason: str, at: int | None = None) -> DecodeError:
        """A DecodeError at the current position (or at ``at``)."""
        return DecodeError(reason, self.base + (self.pos if at is None else at))

    def _need(self, n: int, what: str) -> int:
        start = self.pos
        if self._end - start < n:
            raise self.error(f"{what}: needs {n} bytes, {self._end - start} left")
        self.pos = start + n
        return start

    def read_uint8(self, what: str = "UInt8") -> int:
        """One unsigned byte."""
        start = self._need(1, what)
        return self._buf[start]

    def read_uint16(self, what: str = "UInt16") -> int:
        """Two bytes, big-endian."""
        start = self._need(2, what)
        return int(_U16.unpack_from(self._buf, start)[0])

    def read_uint32(self, what: str = "UInt32") -> int:
        """Four bytes, big-endian."""
        start = self._need(4, what)
        return int(_U32.unpack_from(self._buf, start)[0])

    def read_uint64(self, what: str = "UInt64") -> int:
        """Eight bytes, big-endian."""
        start = self._need(8, what)
        return int(_U64.unpack_from(self._buf, start)[0])

    def read_octets(self, n: int, what: str = "octets") -> bytes:
        """Exactly ``n`` raw bytes (fixed-length octet string)."""
        start = self._need(n, what)
        return self._buf[start : start + n]

    def read_length_prefix(self, what: str = "length") -> int:
        """A canonical OER length determinant."""
        start = self._need(1, what)
        first = self._buf[start]
        if first < 0x80:
            return first
        size = first & 0x7F
        if size == 0:
            raise self.error(f"{what}: long-form length with zero length bytes", start)
        if size > MAX_LENGTH_BYTES:
            raise self.error(f"{what}: length prefix of {size} bytes is too large", start)
        body = self._need(size, what)
        length = int.from_bytes(self._buf[body : body + size], "big")
        if length < 128:
            raise self.error(f"{what}: length {length} must use the short form", start)
        if size > 1 and length < 1 << (8 * (size - 1)):
            raise self.error(f"{what}: length prefix is not minimal", start)
        return length

    def read_var_octets(
        self, what: str = "var-octet-string", max_length: int | None = None
    ) -> bytes:
        """A length-prefixed octet string; longer than ``max_length`` is a DecodeError
        (checked on the prefix, before anything is copied)."""
        at = self.pos
        length = self.read_length_prefix(what)
        if max_length is not None and length > max_length:
            raise self.error(f"{what}: {length} bytes, more than the {max_length} allowed", at)
        start = self._need(length, what)
        return self._buf[start : start + length]

    def read_var_uint(self, what: str = "VarUInt") -> int:
        """A VarUInt (length-prefixed big-endian unsigned integer, at least 1 byte).

        Like oer-utils 1.3.4 it rejects a zero-length VarUInt and tolerates leading zero
        bytes inside the content.
        """
        at = self.pos
        content = self.read_var_octets(what)
        if not content:
            raise self.error(f"{what}: zero-length VarUInt", at)
        if len(content) > MAX_VAR_UINT_BYTES:
            raise self.error(f"{what}: VarUInt of {len(content)} bytes is too large", at)
        return int.from_bytes(content, "big")

    def read_ascii(self, what: str = "ASCII string", max_length: int | None = None) -> str:
        """A var-octet-string that must be ASCII (at most ``max_length`` bytes)."""
        at = self.pos
        raw = self.read_var_octets(what, max_length)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what}: not ASCII", at) from None

    def read_utf8(self, what: str = "UTF-8 string", max_length: int | None = None) -> str:
        """A var-octet-string that must be UTF-8 (at most ``max_length`` bytes)."""
        at = self.pos
        raw = self.read_var_octets(what, max_length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what}: not UTF-8", at) from None

    def read_rest(self) -> bytes:
        """All remaining bytes."""
        start = self.pos
        self.pos = self._end
        return self._buf[start:]


class Writer:
    """Accumulates OER primitives; ``bytes(writer)`` or :meth:`getvalue` gives the result."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write_uint8(self, value: int) -> None:
        """One unsigned byte."""
        if not 0 <= value <= 0xFF:
            raise EncodeError(f"UInt8 out of range: {value}")
        self._parts.append(_SHORT_PREFIXES[value] if value < 128 else bytes((value,)))

    def write_uint16(self, value: int) -> None:
        """Two bytes, big-endian."""
        if not 0 <= value <= 0xFFFF:
            raise EncodeError(f"UInt16 out of range: {value}")
        self._parts.append(_U16.pack(value))

    def write_uint32(self, value: int) -> None:
        """Four bytes, big-endian."""
        if type(value) is not int or not 0 <= value <= MAX_UINT32:
            raise EncodeError(f"UInt32 out of range: {value!r}")
        self._parts.append(_U32.pack(value))

    def write_uint64(self, value: int) -> None:
        """Eight bytes, big-endian; refuses values outside UInt64."""
        self._parts.append(encode_uint64(value))

    def write_octets(self, value: bytes, length: int | None = None) -> None:
        """Raw bytes; with ``length`` they must be exactly that long."""
        if length is not None and len(value) != length:
            raise EncodeError(f"expected exactly {length} bytes, got {len(value)}")
        self._parts.append(bytes(value))

    def write_var_octets(self, value: bytes) -> None:
        """A length-prefixed octet string."""
        self._parts.append(encode_var_octets(bytes(value)))

    def write_var_uint(self, value: int) -> None:
        """A VarUInt."""
        self._parts.append(encode_var_uint(value))

    def write_ascii(self, value: str) -> None:
        """A var-octet-string holding ASCII text."""
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise EncodeError(f"not ASCII: {value!r}") from None
        self._parts.append(encode_var_octets(raw))

    def write_utf8(self, value: str) -> None:
        """A var-octet-string holding UTF-8 text."""
        self._parts.append(encode_var_octets(value.encode("utf-8")))

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return b"".join(self._parts)

    def __bytes__(self) -> bytes:
        return self.getvalue()
