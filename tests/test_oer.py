"""OER primitives (ilp_receiver.codec.oer) against ``oer.json`` and hypothesis."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.oer import (
    MAX_UINT64,
    Reader,
    Writer,
    check_uint64,
    encode_length_prefix,
    encode_uint64,
    encode_var_octets,
    encode_var_uint,
)
from ilp_receiver.errors import DecodeError, EncodeError
from tests.vectorlib import case_id, cases

FAST = settings(max_examples=200, deadline=None)

# ------------------------------------------------------------------ vectors: var_uint


@pytest.mark.parametrize("case", cases("oer.json", "var_uint"), ids=case_id)
def test_var_uint_encode(case: dict[str, Any]) -> None:
    assert encode_var_uint(int(case["value"])).hex() == case["hex"]
    w = Writer()
    w.write_var_uint(int(case["value"]))
    assert w.getvalue().hex() == case["hex"]


@pytest.mark.parametrize("case", cases("oer.json", "var_uint"), ids=case_id)
def test_var_uint_decode(case: dict[str, Any]) -> None:
    r = Reader(bytes.fromhex(case["hex"]))
    assert r.read_var_uint() == int(case["value"])
    assert r.remaining == 0


# ------------------------------------------------------------- vectors: length_prefix


@pytest.mark.parametrize("case", cases("oer.json", "length_prefix"), ids=case_id)
def test_length_prefix_encode(case: dict[str, Any]) -> None:
    length = case["content_length"]
    assert encode_length_prefix(length).hex() == case["prefix_hex"]
    content = bytes(i % 251 for i in range(length))
    # "var-octet-string = prefix || content"
    assert encode_var_octets(content) == bytes.fromhex(case["prefix_hex"]) + content
    w = Writer()
    w.write_var_octets(content)
    assert bytes(w) == bytes.fromhex(case["prefix_hex"]) + content


@pytest.mark.parametrize("case", cases("oer.json", "length_prefix"), ids=case_id)
def test_length_prefix_decode(case: dict[str, Any]) -> None:
    length = case["content_length"]
    prefix = bytes.fromhex(case["prefix_hex"])
    content = bytes(i % 251 for i in range(length))
    r = Reader(prefix)
    assert r.read_length_prefix() == length
    assert r.remaining == 0
    r = Reader(prefix + content + b"\xff")
    assert r.read_var_octets() == content
    assert r.read_rest() == b"\xff"
    # One byte short of the announced length: "A reader MUST fail".
    if length:
        with pytest.raises(DecodeError):
            Reader(prefix + content[:-1]).read_var_octets()


# ------------------------------------------------------------------- vectors: uint64


@pytest.mark.parametrize("case", cases("oer.json", "uint64"), ids=case_id)
def test_uint64_encode(case: dict[str, Any]) -> None:
    value = int(case["value"])
    assert encode_uint64(value).hex() == case["hex"]
    w = Writer()
    w.write_uint64(value)
    assert w.getvalue().hex() == case["hex"]


@pytest.mark.parametrize("case", cases("oer.json", "uint64"), ids=case_id)
def test_uint64_decode(case: dict[str, Any]) -> None:
    r = Reader(bytes.fromhex(case["hex"]))
    assert r.read_uint64() == int(case["value"])
    assert r.remaining == 0


@pytest.mark.parametrize("value", [MAX_UINT64 + 1, -1, 2**70, True, 1.0, "1"])
def test_uint64_out_of_range_is_refused(value: Any) -> None:
    with pytest.raises(EncodeError):
        encode_uint64(value)
    with pytest.raises(EncodeError):
        check_uint64(value)
    with pytest.raises(EncodeError):
        Writer().write_uint64(value)


# ------------------------------------------------------- vectors: reader strictness


def _read(kind: str, data: bytes) -> object:
    r = Reader(data)
    if kind == "varoctet":
        return r.read_var_octets()
    if kind == "varuint":
        return r.read_var_uint()
    raise AssertionError(f"unknown kind {kind}")


@pytest.mark.parametrize("case", cases("oer.json", "reader_rejects"), ids=case_id)
def test_reader_rejects(case: dict[str, Any]) -> None:
    with pytest.raises(DecodeError) as info:
        _read(case["kind"], bytes.fromhex(case["hex"]))
    assert info.value.offset >= 0
    assert info.value.reason


@pytest.mark.parametrize("case", cases("oer.json", "reader_accepts_noncanonical"), ids=case_id)
def test_reader_accepts_noncanonical(case: dict[str, Any]) -> None:
    assert _read(case["kind"], bytes.fromhex(case["hex"])) == int(case["decoded"])


# -------------------------------------------------------------------- other checks


def test_encode_errors() -> None:
    with pytest.raises(EncodeError):
        encode_length_prefix(-1)
    with pytest.raises(EncodeError):
        encode_length_prefix(2**48)
    with pytest.raises(EncodeError):
        encode_var_uint(-1)
    with pytest.raises(EncodeError):
        encode_var_uint(2**64)
    w = Writer()
    with pytest.raises(EncodeError):
        w.write_uint8(256)
    with pytest.raises(EncodeError):
        w.write_uint16(-1)
    with pytest.raises(EncodeError):
        w.write_uint32(2**32)
    with pytest.raises(EncodeError):
        w.write_octets(b"abc", 4)
    with pytest.raises(EncodeError):
        w.write_ascii("é")


def test_reader_offsets_are_relative_to_base() -> None:
    with pytest.raises(DecodeError) as info:
        Reader(b"\x05ab", base=10).read_var_octets()
    assert info.value.offset == 11


def test_reader_text() -> None:
    assert Reader(b"\x02hi").read_ascii() == "hi"
    assert Reader(b"\x02\xc3\xa9").read_utf8() == "é"
    with pytest.raises(DecodeError):
        Reader(b"\x01\xff").read_ascii()
    with pytest.raises(DecodeError):
        Reader(b"\x01\xff").read_utf8()


# ------------------------------------------------------------------------ hypothesis

_OPS = st.one_of(
    st.tuples(st.just("uint8"), st.integers(0, 0xFF)),
    st.tuples(st.just("uint16"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("uint32"), st.integers(0, 0xFFFF_FFFF)),
    st.tuples(st.just("uint64"), st.integers(0, MAX_UINT64)),
    st.tuples(st.just("var_uint"), st.integers(0, MAX_UINT64)),
    st.tuples(st.just("var_octets"), st.binary(max_size=300)),
    st.tuples(st.just("octets"), st.binary(max_size=40)),
    st.tuples(st.just("ascii"), st.text(st.characters(max_codepoint=127), max_size=50)),
    st.tuples(st.just("utf8"), st.text(max_size=50)),
)


@FAST
@given(st.lists(_OPS, max_size=12))
def test_writer_reader_round_trip(ops: list[tuple[str, Any]]) -> None:
    w = Writer()
    for kind, value in ops:
        if kind == "octets":
            w.write_octets(value, len(value))
        else:
            getattr(w, f"write_{kind}")(value)
    r = Reader(memoryview(w.getvalue()))
    for kind, value in ops:
        if kind == "octets":
            assert r.read_octets(len(value)) == value
        else:
            assert getattr(r, f"read_{kind}")() == value
    assert r.remaining == 0


@FAST
@given(st.integers(0, 2**48 - 1))
def test_length_prefix_round_trip(length: int) -> None:
    prefix = encode_length_prefix(length)
    r = Reader(prefix)
    assert r.read_length_prefix() == length
    assert r.remaining == 0


_READS = [
    "read_uint8",
    "read_uint16",
    "read_uint32",
    "read_uint64",
    "read_length_prefix",
    "read_var_octets",
    "read_var_uint",
    "read_ascii",
    "read_utf8",
]


@FAST
@given(st.binary(max_size=64), st.lists(st.sampled_from(_READS), min_size=1, max_size=6))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes, reads: list[str]) -> None:
    r = Reader(bytearray(data))
    offset = 0
    try:
        for name in reads:
            getattr(r, name)()
        r.read_octets(3)
    except DecodeError as exc:
        offset = exc.offset
    assert 0 <= offset <= len(data)
