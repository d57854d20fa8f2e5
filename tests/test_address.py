"""ILP address validation (RFC 15) in ilp_receiver.codec.address."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.address import (
    ALLOCATION_SCHEMES,
    MAX_ADDRESS_LENGTH,
    is_address_prefix_of,
    is_valid_address,
    validate_address,
)
from ilp_receiver.errors import InvalidAddressError

FAST = settings(max_examples=200, deadline=None)

VALID = [
    "g.us.alice",
    "example.alice",
    "private.a",
    "peer.config",
    "peer.route.control",
    "self.x",
    "test.connie.bob.~psk2.abc",
    "test1.a",
    "test2.a-b_c~d",
    "test3.A.B.C",
    "local.node",  # accepted on purpose, see the module docstring
    "test.example.receiver.MhIH9c5cdA8.F1KbsqUb6TnfLC2r8dR7hZCd",
    "g." + "a" * (MAX_ADDRESS_LENGTH - 2),
]

INVALID = {
    "": "empty",
    "g": "only the allocation scheme",
    "test": "only the allocation scheme",
    "test4.a": "allocation scheme",
    "G.alice": "allocation scheme",
    "gg.alice": "allocation scheme",
    "alice": "allocation scheme",
    ".g.alice": "allocation scheme",
    "g.alice.": "ends with '.'",
    "g..alice": "empty segment",
    "g.al ice": "' '",
    "g.alice/bob": "'/'",
    "g.alicé": "'é'",
    "g.alice\n": "'\\n'",
    "g." + "a" * (MAX_ADDRESS_LENGTH - 1): "maximum is 1023",
}


@pytest.mark.parametrize("address", VALID)
def test_valid(address: str) -> None:
    assert is_valid_address(address)
    assert validate_address(address) == address


@pytest.mark.parametrize(("address", "problem"), INVALID.items())
def test_invalid_names_the_problem(address: str, problem: str) -> None:
    assert not is_valid_address(address)
    with pytest.raises(InvalidAddressError, match=re.escape(problem)):
        validate_address(address)


def test_non_str_is_invalid() -> None:
    assert not is_valid_address(b"g.alice")  # type: ignore[arg-type]
    with pytest.raises(InvalidAddressError, match="must be a str"):
        validate_address(None)  # type: ignore[arg-type]


def test_allocation_schemes() -> None:
    assert (
        frozenset(
            {"g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local"}
        )
        == ALLOCATION_SCHEMES
    )
    for scheme in ALLOCATION_SCHEMES:
        assert is_valid_address(f"{scheme}.x")


@pytest.mark.parametrize(
    ("prefix", "address", "expected"),
    [
        ("test.a", "test.a", True),
        ("test.a", "test.a.b", True),
        ("test.a", "test.ab", False),
        ("test.a", "test", False),
        ("test.a.", "test.a.b", True),
        ("test.a.", "test.a", False),
        ("test.a.b", "test.a", False),
        ("", "g.anything", True),
        ("g", "g.alice", True),
        ("g", "gx.alice", False),
    ],
)
def test_is_address_prefix_of(prefix: str, address: str, expected: bool) -> None:
    assert is_address_prefix_of(prefix, address) is expected


_SEGMENT = st.text(
    st.sampled_from("abcXYZ019_~-"),
    min_size=1,
    max_size=8,
)


@FAST
@given(st.sampled_from(sorted(ALLOCATION_SCHEMES)), st.lists(_SEGMENT, min_size=1, max_size=6))
def test_generated_addresses_are_valid(scheme: str, segments: list[str]) -> None:
    address = ".".join([scheme, *segments])
    assert validate_address(address) == address
    for cut in range(1, len(segments) + 1):
        prefix = ".".join([scheme, *segments[:cut]])
        assert is_address_prefix_of(prefix, address)


@FAST
@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes(text: str) -> None:
    if is_valid_address(text):
        assert validate_address(text) == text
    else:
        with pytest.raises(InvalidAddressError):
            validate_address(text)
