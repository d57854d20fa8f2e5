"""ILP addresses (RFC 15, draft 2 of early 2018; spec ``02-ilp-packets.md`` "ILP addresses").

An ILP address is ASCII text made of segments ``[A-Za-z0-9_~-]+`` separated by ``.``,
case-sensitive, at most 1023 characters, whose first segment is an allocation scheme.

About ``local``: the RFC 15 text of early 2018 lists ``local`` among the allocation
schemes but its ABNF/regex omit it (``02-ilp-packets.md``).  Later revisions of the
RFC put ``local`` into the regex too, and interledger tooling (e.g. the Open Payments /
Rafiki address regex ``^(g|private|example|peer|self|test[1-3]?|local)([.][a-zA-Z0-9_~-]+)+$``)
accepts it.  We accept it as well: refusing an address another node considers valid
gains nothing, and ``local.`` addresses never leave a private network anyway.

Like the RFC regex, a valid address has the scheme plus at least one more segment
(``g`` alone is not an address, ``g.alice`` is) and never ends in ``.``.  Validation is
for output and configuration; decoders stay tolerant and leave address checks to the
receiver (which then rejects with F02 rather than crash).
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import InvalidAddressError

__all__ = [
    "ALLOCATION_SCHEMES",
    "MAX_ADDRESS_LENGTH",
    "is_address_prefix_of",
    "is_valid_address",
    "validate_address",
]

#: "First segment is the allocation scheme: g, private, example, peer, self, test,
#: test1, test2, test3" -- plus ``local`` (see the module docstring).
ALLOCATION_SCHEMES: Final[frozenset[str]] = frozenset(
    {"g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local"}
)

#: "Maximum length 1023 characters."
MAX_ADDRESS_LENGTH: Final = 1023

_ADDRESS_RE: Final = re.compile(
    r"(?:g|private|example|peer|self|test[1-3]?|local)(?:\.[A-Za-z0-9_~-]+)+"
)
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_~-]+")


def is_valid_address(s: str) -> bool:
    """Whether ``s`` is a valid ILP address (RFC 15, with ``local`` accepted)."""
    return (
        type(s) is str
        and len(s) <= MAX_ADDRESS_LENGTH
        and s.isascii()
        and _ADDRESS_RE.fullmatch(s) is not None
    )


def validate_address(s: str) -> str:
    """Return ``s`` if it is a valid ILP address, else raise InvalidAddressError.

    The error message names the first problem found (type, length, characters, scheme,
    empty segment).
    """
    if is_valid_address(s):
        return s
    if not isinstance(s, str):
        raise InvalidAddressError(f"ILP address must be a str, got {type(s).__name__}")
    if not s:
        raise InvalidAddressError("ILP address is empty")
    if len(s) > MAX_ADDRESS_LENGTH:
        # "Maximum length 1023 characters."
        raise InvalidAddressError(
            f"ILP address is {len(s)} characters long; the maximum is {MAX_ADDRESS_LENGTH}"
        )
    segments = s.split(".")
    scheme = segments[0]
    if scheme not in ALLOCATION_SCHEMES:
        raise InvalidAddressError(
            f"ILP address {s!r} does not start with an allocation scheme "
            f"({', '.join(sorted(ALLOCATION_SCHEMES))}); got {scheme!r}"
        )
    if len(segments) < 2:
        raise InvalidAddressError(
            f"ILP address {s!r} has only the allocation scheme; it needs at least one more segment"
        )
    for index, segment in enumerate(segments[1:], start=1):
        if not segment:
            where = "ends with '.'" if index == len(segments) - 1 else "has an empty segment"
            raise InvalidAddressError(f"ILP address {s!r} {where}")
        if _SEGMENT_RE.fullmatch(segment) is None:
            bad = next(c for c in segment if _SEGMENT_RE.fullmatch(c) is None)
            raise InvalidAddressError(
                f"ILP address {s!r} contains {bad!r}; segments may only use A-Z a-z 0-9 _ ~ -"
            )
    raise InvalidAddressError(f"ILP address {s!r} is not valid")  # pragma: no cover


def is_address_prefix_of(prefix: str, address: str) -> bool:
    """Whether ``address`` equals ``prefix`` or lies under it, segment by segment.

    ``test.a`` is a prefix of ``test.a`` and ``test.a.b`` but not of ``test.ab``.  A
    prefix written the 2018 way with a trailing ``.`` (``test.a.``) matches the same
    addresses as ``test.a`` except ``test.a`` itself.  The empty prefix matches
    everything (a default route).
    """
    if not prefix:
        return True
    if prefix.endswith("."):
        return address.startswith(prefix)
    if not address.startswith(prefix):
        return False
    return len(address) == len(prefix) or address[len(prefix)] == "."
