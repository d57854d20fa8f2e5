"""Fuzz every wire decoder: ``python bench/fuzz_decoders.py [--inputs N] [--jobs J] ...``.

The project rule (``ilp_receiver/errors.py``): "decoding raises only DecodeError".  This
command feeds each public decoder ``--inputs`` generated inputs and checks that every
call either returns or raises the error that decoder documents (:func:`_build_targets`):
DecodeError for the byte decoders and the Pay header parsers, DecodeError or
RemoteProtocolError for ``btp.parse_auth`` / ``ildcp.ildcp_result`` (they refuse
well-formed frames by design), SpspError for ``spsp.parse_spsp_response``.

Inputs come from a hand-written, structure-aware mutation fuzzer (no dependency):

* seeds: every hex string in ``tests/vectors/*.json`` (plus the ILP ``data`` and BTP
  protocol-data payloads nested in them) and a few encoder-built packets with
  long-form lengths; per decoder the seeds are the ones it decodes;
* mutations, stacked 1..6 deep: bit flips, interesting / random byte values, byte
  insertions and deletions, truncation, splicing two seeds, length-prefix corruption
  (``0x80..0x87``, ``0xff`` then big or zero length bytes), chunk duplication, boundary
  integers (1/2/4/8 bytes), appended junk, long-form ``var-octet-string`` insertion;
  sometimes random bytes of random length up to 70 KB;
* text (Pay headers): the same operations on characters, with non-ASCII, Unicode
  digits, lone surrogates, whitespace variants, base64 alphabets and runs of up to
  70,000 characters;
* JSON (SPSP responses): structural edits of valid responses (random JSON values in
  known and unknown fields, deletions, wrong types, NaN, huge ints, deep nesting), and
  the serialised text/bytes mutated as above.

Everything is deterministic given ``--seed``: inputs are produced in chunks of
:data:`CHUNK_SIZE`, each with its own ``random.Random(f"{seed}/{decoder}/{chunk}")``,
so ``--jobs`` changes only the wall time, never the inputs.

Each call is timed in CPU time of the calling thread (so that other processes sharing
the cores do not raise false alarms).  A call over :data:`SLOW_SECONDS` is run three
more times and flagged (a denial-of-service bug) if even the fastest rerun is slow.
The "slowest call" reported per decoder is that best-of-three CPU time, taken over the
calls flagged and the :data:`TOP_K` slowest calls of each chunk.  A call still running
after :data:`WATCHDOG_SECONDS` is interrupted and reported as a hang.  Every exception
other than the expected one is recorded (the first :data:`MAX_RECORDED` per decoder,
inputs hex-encoded) in ``test-artifacts/fuzz-decoders/``; the exit status is then 1.

Output: a markdown table and a JSON summary on stdout (the JSON also goes to
``test-artifacts/fuzz-decoders/summary.json``; ``--write PATH`` writes the markdown
report to PATH as well).  ``tests/test_fuzz_smoke.py`` runs :func:`run` in-process.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import heapq
import importlib
import json
import math
import multiprocessing
import os
import platform
import random
import signal
import string
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ilp_receiver.errors import DecodeError, RemoteProtocolError, SpspError

REPO: Final = Path(__file__).resolve().parent.parent
VECTOR_DIR: Final = REPO / "tests" / "vectors"
ARTIFACT_DIR: Final = REPO / "test-artifacts" / "fuzz-decoders"

#: Largest generated input (bytes, or characters for text).
MAX_INPUT: Final = 70_000
#: A call slower than this on one input of at most MAX_INPUT is a DoS bug.
SLOW_SECONDS: Final = 0.050
#: A call still running after this long is interrupted and reported as a hang.
WATCHDOG_SECONDS: Final = 10.0
#: Inputs per work unit (one ``random.Random`` each).
CHUNK_SIZE: Final = 5_000
#: Per chunk, the slowest calls rerun for the "slowest call" figure.
TOP_K: Final = 4
#: Offending inputs kept per decoder.
MAX_RECORDED: Final = 5
#: Valid seeds kept per decoder.
MAX_SEEDS: Final = 600
DEFAULT_INPUTS: Final = 1_000_000
DEFAULT_SEED: Final = 20240517

Kind = Literal["bytes", "text", "json"]


# ------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    """One decoder under test.

    ``call`` takes one generated input (``bytes``, ``str`` or a JSON-like value, per
    ``kind``); ``expected`` is what it may raise; ``extra_seeds`` builds additional
    seed inputs with the encoders (they are kept only if ``call`` accepts them);
    ``text_seeds`` adds the vector files' strings (as ASCII bytes) to the candidates;
    ``variant`` converts 5% of the inputs to another accepted type (``bytearray`` /
    ``memoryview`` for decoders that take any buffer, ``str`` for GeneralizedTime).
    """

    name: str
    group: str
    kind: Kind
    call: Callable[[Any], object]
    expected: tuple[type[BaseException], ...]
    extra_seeds: Callable[[], list[Any]] = field(default=lambda: [])
    text_seeds: bool = False
    variant: Callable[[random.Random, Any], Any] | None = None


_NOW: Final = datetime(2018, 4, 2, 16, 43, 50, tzinfo=UTC)
_TIMES: Final = (
    datetime(1970, 1, 1, tzinfo=UTC),
    _NOW,
    datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
)


def _quiet(build: Callable[[], list[Any]]) -> Callable[[], list[Any]]:
    """Seed builders use the encoders; an encoder refusing a value drops that seed."""

    def wrapper() -> list[Any]:
        try:
            return build()
        except Exception:
            return []

    return wrapper


def _ilp_seeds() -> list[Any]:
    from ilp_receiver.codec import ilp

    out: list[Any] = []
    cond = bytes(range(32))
    for size in (0, 1, 127, 128, 255, 256, 4000, 32767):
        data = bytes((i * 7) & 0xFF for i in range(size))
        out.append(ilp.encode_prepare(ilp.IlpPrepare(1000, _NOW, cond, "g.alice.bob", data)))
        out.append(ilp.encode_fulfill(ilp.IlpFulfill(cond, data)))
        out.append(ilp.encode_reject(ilp.IlpReject("F99", "g.x", "m" * (size % 8191), data)))
    out.append(
        ilp.encode_prepare(
            ilp.IlpPrepare(2**64 - 1, _TIMES[3], cond, "test." + "a" * 1018, b"\xff" * 300)
        )
    )
    out.append(ilp.encode_reject(ilp.IlpReject("T04", "g." + "b" * 1021, "é" * 4095, b"")))
    out.append(ilp.encode_amount_too_large_data(2**64 - 1, 0))
    return out


def _timestamp_seeds() -> list[Any]:
    from ilp_receiver.codec.ilp import format_timestamp

    return [format_timestamp(t) for t in _TIMES]


def _btp_seeds() -> list[Any]:
    from ilp_receiver.codec import btp

    pd = btp.ProtocolData
    out: list[Any] = [
        btp.encode_btp(btp.auth_message(1, "secret token", "alice")),
        btp.encode_btp(btp.auth_message(2**32 - 1, "t" * 300)),
        btp.encode_btp(btp.ilp_message(7, b"\x0c" + bytes(200))),
        btp.encode_btp(btp.ilp_response(7, bytes(40000))),
        btp.encode_btp(btp.BtpTransfer(9, 2**64 - 1, (pd("peer.settle", 2, b'{"a":1}'),))),
        btp.encode_btp(btp.error_frame(3, "F00", "NotAcceptedError", _NOW, "bad " * 50)),
        btp.encode_btp(
            btp.BtpMessage(5, tuple(pd(f"p{i}", i % 3, bytes(i * 10)) for i in range(20)))
        ),
    ]
    return out


def _generalized_time_seeds() -> list[Any]:
    from ilp_receiver.codec.btp import format_generalized_time

    out: list[Any] = [format_generalized_time(t).encode() for t in _TIMES]
    out += [b"20180402164350Z", b"20180402164350.1Z", b"20180402164350.123456789Z"]
    return out


def _ildcp_seeds() -> list[Any]:
    from ilp_receiver.codec import ildcp, ilp

    out: list[Any] = []
    for addr, scale, code in (("g.a", 9, "XRP"), ("test." + "x" * 300, 255, "€" * 100)):
        resp = ildcp.IldcpResponse(addr, scale, code)
        out.append(ildcp.encode_ildcp_response(resp))
        out.append(ilp.encode_fulfill(ildcp.ildcp_fulfill(resp)))
    return out


def _ccp_seeds() -> list[Any]:
    from ilp_receiver.codec import ccp

    route = ccp.Route(
        "g.a.b", ("g.a", "g.b"), bytes(32), (ccp.RouteProp(1, b"v" * 200, is_utf8=True),)
    )
    return [
        ccp.encode_route_control_request(
            ccp.RouteControlRequest(ccp.CcpMode.SYNC, bytes(16), 7, ("a", "é" * 100))
        ),
        ccp.encode_route_update_request(
            ccp.RouteUpdateRequest(
                bytes(range(16)), 5, 0, 5, 45000, "g.speaker", (route,) * 3, ("g.old",) * 2
            )
        ),
    ]


def _balance_seeds() -> list[Any]:
    from ilp_receiver.codec.balance import MAX_INT64, MIN_INT64, encode_balance

    return [encode_balance(v) for v in (0, 1, -1, MAX_INT64, MIN_INT64)]


def _echo_seeds() -> list[Any]:
    from ilp_receiver.codec import echo

    return [
        echo.encode_echo_request("g.alice"),
        echo.encode_echo_request("test." + "z" * 500),
        echo.ECHO_RESPONSE_DATA,
    ]


_PSK2_SECRET: Final = bytes(range(100, 132))


def _psk2_plaintexts() -> list[bytes]:
    from ilp_receiver.codec import psk2

    out = []
    for kind in range(4):
        for size in (0, 5, 200, 1000):
            out.append(
                psk2.encode_draft1(
                    psk2.Draft1Packet(kind, bytes(16), kind, 2**64 - 1, 7, b"d" * size)
                )
            )
    for kind in range(4, 7):
        for size in (0, 5, 200, 1000):
            out.append(psk2.encode_draft2(psk2.Draft2Packet(kind, 2**32 - 1, 900, b"q" * size)))
    return out


def _psk2_sealed() -> list[Any]:
    from ilp_receiver.codec import psk2

    key = psk2.derive_keys(_PSK2_SECRET).encryption_key
    return [psk2.encrypt(key, bytes(12), p) for p in _psk2_plaintexts()]


def _psk2_decode_any(data: bytes) -> object:
    from ilp_receiver.codec import psk2

    return psk2.decode_any(_psk2_key(), data)


_KEY_CACHE: list[bytes] = []


def _psk2_key() -> bytes:
    if not _KEY_CACHE:
        from ilp_receiver.codec import psk2

        _KEY_CACHE.append(psk2.derive_keys(_PSK2_SECRET).encryption_key)
    return _KEY_CACHE[0]


def _pay_seeds() -> list[Any]:
    from ilp_receiver.codec import pay_header as ph

    secret = bytes(range(32))
    return [
        ph.format_pay_header(ph.PayHeader(ph.PSK2_METHOD, "g.alice.bob", secret, 100)),
        ph.format_pay_header(ph.PayHeader(ph.PSK2_METHOD, "test.example.server", secret)),
        ph.format_pay_header(ph.PayHeader(ph.PSK1_METHOD, "g.x.y", b"\x01" * 16, 2**64 - 1)),
        "10 test.example.server " + base64.urlsafe_b64encode(secret).decode().rstrip("="),
        "interledger-psk2 g.a " + base64.b64encode(secret).decode() + " 0",
        ph.format_pay_token(bytes(16)),
        ph.format_pay_token(b"\xff" * 16),
        "  " + ph.format_pay_token(bytes(range(16))) + "\t",
        ph.format_pay_balance(0),
        ph.format_pay_balance(2**64 - 1),
        " 000000000000000000000000090 ",
    ]


def _spsp_seeds() -> list[Any]:
    from ilp_receiver import spsp

    secret = bytes(range(32))
    responses = [
        spsp.SpspResponse("g.alice", secret),
        spsp.SpspResponse(
            "test.example.receiver.abc",
            secret,
            spsp.SpspBalance(2**64 - 1, 0),
            spsp.AssetInfo("USD", 9),
            {"name": "Bob", "image_url": "https://x/y.png"},
            {"maximum_destination_amount": "100"},
        ),
    ]
    out: list[Any] = [r.to_json() for r in responses]
    out.append(
        {
            "destination_account": "g.a.b",
            "shared_secret": base64.urlsafe_b64encode(secret).decode().rstrip("="),
            "balance": {"maximum": 100, "current": "0"},
            "ledger_info": {"currency_code": "XRP", "currency_scale": 6},
            "receiver_info": None,
        }
    )
    return out


def _stream_targets() -> tuple[list[Target], dict[str, str]]:
    """HOOK (STREAM): ``ilp_receiver/codec/stream.py`` was being written while this
    harness was; it is imported dynamically so a missing or broken module skips the
    STREAM decoders (reported as SKIPPED, with the reason) instead of breaking the run.
    """
    names = ("decode_stream_packet", "decode_frame")
    try:
        module = importlib.import_module("ilp_receiver.codec.stream")
    except Exception as exc:
        reason = f"ilp_receiver.codec.stream does not import: {type(exc).__name__}: {exc}"
        return [], {f"stream.{n}": reason for n in names}
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for n in names:
        fn = getattr(module, n, None)
        if callable(fn):
            targets.append(Target(f"stream.{n}", "STREAM", "bytes", fn, (DecodeError,)))
        else:
            skipped[f"stream.{n}"] = f"ilp_receiver.codec.stream has no {n}()"
    return targets, skipped


def _other_buffer(rng: random.Random, data: bytes) -> bytearray | memoryview:
    """The same bytes as a bytearray, a memoryview or a memoryview slice."""
    r = rng.randrange(3)
    if r == 0:
        return bytearray(data)
    if r == 1:
        return memoryview(data)
    return memoryview(b"\xaa" + data + b"\xbb")[1:-1]


def _latin1(rng: random.Random, data: bytes) -> str:
    return data.decode("latin-1")


def _build_targets() -> tuple[list[Target], dict[str, str]]:
    from ilp_receiver import spsp
    from ilp_receiver.codec import (
        balance,
        btp,
        ccp,
        echo,
        ildcp,
        ilp,
        pay_header,
        psk2,
    )

    dec: tuple[type[BaseException], ...] = (DecodeError,)
    dec_or_remote: tuple[type[BaseException], ...] = (DecodeError, RemoteProtocolError)

    def parse_auth(data: bytes) -> object:
        return btp.parse_auth(btp.decode_btp(data))

    def ildcp_fulfill(data: bytes) -> object:
        return ildcp.decode_ildcp_fulfill(ilp.decode_fulfill(data))

    def ildcp_result(data: bytes) -> object:
        return ildcp.ildcp_result(ilp.decode_reply(data))

    ilp_seeds, btp_seeds = _quiet(_ilp_seeds), _quiet(_btp_seeds)
    targets = [
        Target("ilp.decode_packet", "ILP", "bytes", ilp.decode_packet, dec, ilp_seeds),
        Target("ilp.decode_prepare", "ILP", "bytes", ilp.decode_prepare, dec, ilp_seeds),
        Target("ilp.decode_fulfill", "ILP", "bytes", ilp.decode_fulfill, dec, ilp_seeds),
        Target("ilp.decode_reject", "ILP", "bytes", ilp.decode_reject, dec, ilp_seeds),
        Target("ilp.decode_reply", "ILP", "bytes", ilp.decode_reply, dec, ilp_seeds),
        Target(
            "ilp.decode_amount_too_large_data",
            "ILP",
            "bytes",
            ilp.decode_amount_too_large_data,
            dec,
            ilp_seeds,
        ),
        Target(
            "ilp.parse_timestamp",
            "ILP",
            "bytes",
            ilp.parse_timestamp,
            dec,
            _quiet(_timestamp_seeds),
            text_seeds=True,
        ),
        Target("btp.decode_btp", "BTP", "bytes", btp.decode_btp, dec, btp_seeds),
        Target("btp.parse_auth", "BTP", "bytes", parse_auth, dec_or_remote, btp_seeds),
        Target(
            "btp.parse_generalized_time",
            "BTP",
            "bytes",
            btp.parse_generalized_time,
            dec,
            _quiet(_generalized_time_seeds),
            text_seeds=True,
        ),
        Target(
            "ildcp.decode_ildcp_response",
            "IL-DCP",
            "bytes",
            ildcp.decode_ildcp_response,
            dec,
            _quiet(_ildcp_seeds),
        ),
        Target(
            "ildcp.decode_ildcp_fulfill",
            "IL-DCP",
            "bytes",
            ildcp_fulfill,
            dec,
            _quiet(_ildcp_seeds),
        ),
        Target(
            "ildcp.ildcp_result",
            "IL-DCP",
            "bytes",
            ildcp_result,
            dec_or_remote,
            _quiet(_ildcp_seeds),
        ),
        Target(
            "ccp.decode_route_control_request",
            "CCP",
            "bytes",
            ccp.decode_route_control_request,
            dec,
            _quiet(_ccp_seeds),
        ),
        Target(
            "ccp.decode_route_update_request",
            "CCP",
            "bytes",
            ccp.decode_route_update_request,
            dec,
            _quiet(_ccp_seeds),
        ),
        Target(
            "balance.decode_balance",
            "il-balance",
            "bytes",
            balance.decode_balance,
            dec,
            _quiet(_balance_seeds),
        ),
        Target(
            "echo.decode_echo_data",
            "echo",
            "bytes",
            echo.decode_echo_data,
            dec,
            _quiet(_echo_seeds),
        ),
        Target(
            "echo.decode_echo_request",
            "echo",
            "bytes",
            echo.decode_echo_request,
            dec,
            _quiet(_echo_seeds),
        ),
        Target(
            "psk2.decode_plaintext",
            "PSK2",
            "bytes",
            psk2.decode_plaintext,
            dec,
            _quiet(_psk2_plaintexts),
        ),
        Target(
            "psk2.decode_draft1", "PSK2", "bytes", psk2.decode_draft1, dec, _quiet(_psk2_plaintexts)
        ),
        Target(
            "psk2.decode_draft2", "PSK2", "bytes", psk2.decode_draft2, dec, _quiet(_psk2_plaintexts)
        ),
        Target("psk2.decode_any", "PSK2", "bytes", _psk2_decode_any, dec, _quiet(_psk2_sealed)),
        Target(
            "pay_header.parse_pay_header",
            "Pay headers",
            "text",
            pay_header.parse_pay_header,
            dec,
            _quiet(_pay_seeds),
        ),
        Target(
            "pay_header.parse_pay_token",
            "Pay headers",
            "text",
            pay_header.parse_pay_token,
            dec,
            _quiet(_pay_seeds),
        ),
        Target(
            "pay_header.parse_pay_balance",
            "Pay headers",
            "text",
            pay_header.parse_pay_balance,
            dec,
            _quiet(_pay_seeds),
        ),
        Target(
            "spsp.parse_spsp_response",
            "SPSP",
            "json",
            spsp.parse_spsp_response,
            (SpspError,),
            _quiet(_spsp_seeds),
        ),
    ]
    stream_targets, skipped = _stream_targets()
    at = next(i for i, t in enumerate(targets) if t.group == "IL-DCP")
    targets[at:at] = stream_targets
    any_buffer = {"btp.decode_btp", "btp.parse_auth"}
    targets = [
        replace(t, variant=_other_buffer)
        if t.group in ("ILP", "STREAM") or t.name in any_buffer
        else replace(t, variant=_latin1)
        if t.name == "btp.parse_generalized_time"
        else t
        for t in targets
    ]
    return targets, skipped


# -------------------------------------------------------------------------- corpus

_HEX_CHARS: Final = frozenset(string.hexdigits)


@dataclass(slots=True)
class Corpus:
    """Everything in the vector files: byte strings, text and JSON objects."""

    blobs: list[bytes]
    texts: list[str]
    objects: list[dict[str, Any]]


def _walk(value: Any, blobs: set[bytes], texts: set[str], objects: list[dict[str, Any]]) -> None:
    if isinstance(value, dict):
        objects.append(value)
        for v in value.values():
            _walk(v, blobs, texts, objects)
    elif isinstance(value, list):
        for v in value:
            _walk(v, blobs, texts, objects)
    elif isinstance(value, str):
        texts.add(value)
        if len(value) >= 2 and len(value) % 2 == 0 and _HEX_CHARS.issuperset(value):
            blobs.add(bytes.fromhex(value))


def _nested(blob: bytes) -> Iterator[bytes]:
    """Payloads inside a vector blob: ILP ``data``, BTP protocol-data ``data``."""
    from ilp_receiver.codec import btp, ilp

    try:
        packet = ilp.decode_packet(blob)
    except Exception:
        pass
    else:
        yield packet.data
    try:
        frame = btp.decode_btp(blob)
    except Exception:
        pass
    else:
        for entry in getattr(frame, "protocol_data", ()):
            yield entry.data
            with contextlib.suppress(Exception):
                yield ilp.decode_packet(entry.data).data


@functools.cache
def corpus() -> Corpus:
    """The vector corpus, read once per process."""
    return load_corpus()


def load_corpus(vector_dir: Path = VECTOR_DIR) -> Corpus:
    """Read every ``*.json`` vector file into a :class:`Corpus` (sorted, deduplicated)."""
    blobs: set[bytes] = set()
    texts: set[str] = set()
    objects: list[dict[str, Any]] = []
    for path in sorted(vector_dir.glob("*.json")):
        with path.open(encoding="utf-8") as f:
            _walk(json.load(f), blobs, texts, objects)
    for blob in list(blobs):
        blobs.update(_nested(blob))
    blobs.discard(b"")
    return Corpus(sorted(blobs, key=lambda b: (len(b), b)), sorted(texts), objects)


# ------------------------------------------------------------------- byte mutation

_INTERESTING_BYTES: Final = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 0x10, 0x1F, 0x20, 0x30, 0x39, 0x3A,
    0x40, 0x7E, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0xC0, 0xFE, 0xFF,
)  # fmt: skip
_LENGTH_BYTES: Final = (0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x8F, 0xFF)
_BIG_LENGTHS: Final = (
    0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0xFFFFFF,
    2**31 - 1, 2**32 - 1, 2**48 - 1,
)  # fmt: skip


def _boundaries(width: int) -> tuple[int, ...]:
    bits = 8 * width
    return (
        0,
        1,
        2,
        0x7F,
        0x80,
        0xFF,
        2 ** (bits - 1) - 1,
        2 ** (bits - 1),
        2**bits - 2,
        2**bits - 1,
    )


_BOUNDARIES: Final = {w: _boundaries(w) for w in (1, 2, 3, 4, 6, 8)}
_WIDTHS: Final = tuple(_BOUNDARIES)

ByteMutator = Callable[[random.Random, bytes, Sequence[bytes]], bytes]


def _pos(rng: random.Random, data: bytes) -> int:
    """A position in ``data`` (inclusive of the end), biased to the first bytes."""
    if not data or rng.random() < 0.25:
        return rng.randrange(min(len(data), 8) + 1)
    return rng.randrange(len(data) + 1)


def _m_flip(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    if not data:
        return bytes((rng.randrange(256),))
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4, 8))):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _m_interesting(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    if not data:
        return bytes((rng.choice(_INTERESTING_BYTES),))
    i = min(_pos(rng, data), len(data) - 1)
    return data[:i] + bytes((rng.choice(_INTERESTING_BYTES),)) + data[i + 1 :]


def _m_random_byte(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    if not data:
        return bytes((rng.randrange(256),))
    i = min(_pos(rng, data), len(data) - 1)
    return data[:i] + bytes((rng.randrange(256),)) + data[i + 1 :]


def _m_insert(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    i = _pos(rng, data)
    if rng.random() < 0.5:
        extra = rng.randbytes(rng.choice((1, 1, 2, 3, 4, 8, 16, 32)))
    else:
        extra = bytes(rng.choice(_INTERESTING_BYTES) for _ in range(rng.randint(1, 4)))
    return data[:i] + extra + data[i:]


def _m_delete(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    n = rng.choice((1, 1, 1, 2, 4, 8, 16, 64, len(data)))
    return data[:i] + data[i + n :]


def _m_truncate(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    if not data:
        return data
    return data[: rng.randrange(len(data))]


def _m_splice(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    other = rng.choice(pool) if pool else data
    i = rng.randint(0, len(data))
    j = rng.randint(0, len(other))
    if rng.random() < 0.5:
        return data[:i] + other[j:]
    k = rng.randint(j, len(other))
    return data[:i] + other[j:k] + data[i:]


def _m_length_prefix(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    """Turn a byte into a long-form length determinant with big / zero length bytes."""
    i = _pos(rng, data)
    first = rng.choice(_LENGTH_BYTES)
    size = first & 0x7F
    if rng.random() < 0.5 and 0 < size <= 8:
        value = rng.choice(_BIG_LENGTHS) % (1 << (8 * size))
        body = value.to_bytes(size, "big")
    else:
        body = bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(rng.randint(0, 3)))
    replace = rng.choice((0, 1, 1, 1 + len(body)))
    return data[:i] + bytes((first,)) + body + data[i + replace :]


def _m_short_length(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    """Set one byte to a plausible short-form length (often off by one)."""
    if not data:
        return bytes((rng.randrange(128),))
    i = rng.randrange(len(data))
    rest = len(data) - i - 1
    value = rng.choice((0, 1, 0x7F, max(rest - 1, 0), min(rest, 0x7F), min(rest + 1, 0x7F)))
    return data[:i] + bytes((value & 0x7F,)) + data[i + 1 :]


def _m_duplicate(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    j = rng.randint(i + 1, min(len(data), i + 256))
    times = rng.choice((1, 1, 2, 3, 10, 100, 1000))
    return data[:j] + data[i:j] * times + data[j:]


def _m_boundary_int(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    width = rng.choice(_WIDTHS)
    value = rng.choice(_BOUNDARIES[width]).to_bytes(width, "big")
    i = _pos(rng, data)
    if rng.random() < 0.3:
        return data[:i] + value + data[i:]
    return data[:i] + value + data[i + width :]


def _m_append(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    n = rng.choice((1, 2, 8, 64, 1000))
    return data + (bytes(n) if rng.random() < 0.3 else rng.randbytes(n))


def _m_long_var_octets(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    """Insert a well-formed long-form var-octet-string (lengths 128..70,000)."""
    n = rng.choice((128, 255, 256, 1023, 1024, 8191, 8192, 32767, 32768, 65535, 65536))
    size = (n.bit_length() + 7) // 8
    prefix = bytes((0x80 | size,)) + n.to_bytes(size, "big")
    fill = bytes((rng.randrange(256),)) * n
    i = _pos(rng, data)
    return data[:i] + prefix + fill + data[i + rng.choice((0, 1)) :]


def _m_type_byte(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    return bytes((rng.randrange(256),)) + data[1:]


_BYTE_MUTATORS: Final[tuple[ByteMutator, ...]] = (
    *(_m_flip,) * 4,
    *(_m_interesting,) * 4,
    *(_m_random_byte,) * 3,
    *(_m_insert,) * 3,
    *(_m_delete,) * 3,
    *(_m_truncate,) * 2,
    *(_m_splice,) * 2,
    *(_m_length_prefix,) * 3,
    *(_m_short_length,) * 3,
    *(_m_duplicate,) * 2,
    *(_m_boundary_int,) * 3,
    _m_append,
    _m_long_var_octets,
    _m_type_byte,
)
_STACK_DEPTHS: Final = (1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6)


def _random_blob(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.6:
        size = rng.randrange(64)
    elif r < 0.9:
        size = rng.randrange(2048)
    else:
        size = rng.randrange(MAX_INPUT + 1)
    if rng.random() < 0.1:
        return bytes((rng.randrange(256),)) * size
    return rng.randbytes(size)


def _byte_generator(
    seeds: Sequence[bytes], pool: Sequence[bytes]
) -> Callable[[random.Random], Any]:
    seeds = seeds or pool
    mutators = _BYTE_MUTATORS
    depths = _STACK_DEPTHS

    def generate(rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.02:
            return rng.choice(seeds)
        if r < 0.05:
            return _random_blob(rng)
        data = rng.choice(seeds) if r < 0.90 else rng.choice(pool)
        for _ in range(rng.choice(depths)):
            data = rng.choice(mutators)(rng, data, pool)
        return data[:MAX_INPUT]

    return generate


# -------------------------------------------------------------------- text mutation

_WEIRD_CHARS: Final = (
    "\x00", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "\x80", "\x85", "\xa0",
    "\xff", "é", "ß", "\u0130", "\u0131", "\u212a", "\u2003", "\u2028", "\u3000",
    "\u200b", "\ufeff", "\ufffd", "\ud800", "\udfff", "\U0001f4b0", "\u0661", "\u06f5",
    "\u07c0", "\uff11", "²", "½", "\u216b", "\uff1d", "\uff0b", "\uff0f", "\ufb01",
    "\uff21", "\uff5a",
)  # fmt: skip
_ALPHABETS: Final = (
    string.ascii_letters,
    string.digits,
    string.digits,
    string.ascii_letters + string.digits + "+/-_=",
    string.printable,
    " \t",
    ".",
    "".join(_WEIRD_CHARS),
)
_TOKENS: Final = (
    "interledger-psk2", "interledger-psk", "interledger-stream", "g.alice", "g.", "g",
    "test.example.server", "private.a~b_c-d", "peer.config", "self.x", "local.y", "=", "==",
    "===", "18446744073709551615", "18446744073709551616", "99999999999999999999999", "0",
    "00", "-1", "+1", "1_000", "1e3", "0x10", " 1", " ", "  ", "\t", "\r\n", "Bearer ",
    "AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA==", "_____________________w",
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "////", "----", "A", "AA", "AAA",
)  # fmt: skip

TextMutator = Callable[[random.Random, str, Sequence[str]], str]


def _rand_text(rng: random.Random, n: int) -> str:
    alphabet = rng.choice(_ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(n))


def _t_insert(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    i = rng.randint(0, len(text))
    return text[:i] + _rand_text(rng, rng.choice((1, 1, 2, 4, 16))) + text[i:]


def _t_replace(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    if not text:
        return rng.choice(_WEIRD_CHARS)
    i = rng.randrange(len(text))
    return text[:i] + _rand_text(rng, 1) + text[i + 1 :]


def _t_weird(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    i = rng.randint(0, len(text))
    return text[:i] + rng.choice(_WEIRD_CHARS) + text[i + rng.choice((0, 1)) :]


def _t_delete(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    if not text:
        return text
    i = rng.randrange(len(text))
    return text[:i] + text[i + rng.choice((1, 1, 2, 8, 40)) :]


def _t_truncate(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    return text[: rng.randint(0, len(text))]


def _t_splice(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    other = rng.choice(pool) if pool else text
    i, j = rng.randint(0, len(text)), rng.randint(0, len(other))
    return text[:i] + other[j:]


def _t_token(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    i = rng.randint(0, len(text))
    sep = rng.choice(("", " ", " ", "\t"))
    return text[:i] + sep + rng.choice(_TOKENS) + sep + text[i:]


def _t_words(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    words = text.split(" ")
    op = rng.randrange(4)
    if op == 0 and len(words) > 1:
        del words[rng.randrange(len(words))]
    elif op == 1:
        words.insert(rng.randint(0, len(words)), rng.choice(words))
    elif op == 2:
        rng.shuffle(words)
    else:
        words.insert(rng.randint(0, len(words)), rng.choice(_TOKENS))
    return rng.choice((" ", " ", "  ", "\t")).join(words)


def _t_run(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    """A long run of one character (digits, zeros, spaces, base64, non-ASCII)."""
    ch = rng.choice(("0", "9", "1", " ", "\t", "A", "=", "_", ".", "a", "é", "\u0661", "\ud800"))
    n = rng.choice((20, 21, 64, 1000, 4300, 4301, 10_000, MAX_INPUT))
    i = rng.randint(0, len(text))
    return (text[:i] + ch * n + text[i:])[:MAX_INPUT]


def _t_duplicate(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    if not text:
        return text
    i = rng.randrange(len(text))
    j = rng.randint(i + 1, len(text))
    return (text[:j] + text[i:j] * rng.choice((1, 2, 10, 1000)) + text[j:])[:MAX_INPUT]


def _t_case(rng: random.Random, text: str, pool: Sequence[str]) -> str:
    return rng.choice((text.upper(), text.lower(), text.swapcase(), text.strip(), text.title()))


_TEXT_MUTATORS: Final[tuple[TextMutator, ...]] = (
    *(_t_insert,) * 3,
    *(_t_replace,) * 3,
    *(_t_weird,) * 3,
    *(_t_delete,) * 3,
    *(_t_truncate,) * 2,
    *(_t_splice,) * 2,
    *(_t_token,) * 3,
    *(_t_words,) * 2,
    _t_run,
    *(_t_duplicate,) * 2,
    _t_case,
)


def _random_text(rng: random.Random) -> str:
    r = rng.random()
    n = rng.randrange(40) if r < 0.7 else rng.randrange(400) if r < 0.95 else MAX_INPUT
    if n > 1000:
        return rng.choice(_WEIRD_CHARS + tuple(string.printable)) * rng.randrange(n)
    return _rand_text(rng, n)


def _text_generator(seeds: Sequence[str], pool: Sequence[str]) -> Callable[[random.Random], Any]:
    seeds = seeds or pool
    mutators = _TEXT_MUTATORS

    def generate(rng: random.Random) -> str:
        r = rng.random()
        if r < 0.02:
            return rng.choice(seeds)
        if r < 0.06:
            return _random_text(rng)
        text = rng.choice(seeds) if r < 0.90 else rng.choice(pool)
        for _ in range(rng.choice(_STACK_DEPTHS)):
            text = rng.choice(mutators)(rng, text, pool)
        return text[:MAX_INPUT]

    return generate


# -------------------------------------------------------------------- JSON mutation

_SPSP_KEYS: Final = (
    "destination_account", "shared_secret", "balance", "asset_info", "ledger_info",
    "receiver_info", "maximum", "current", "code", "scale", "asset_code", "asset_scale",
    "currency_code", "currency_scale", "name", "",
)  # fmt: skip


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.randrange(14 if depth < 3 else 11)
    if r == 0:
        return None
    if r == 1:
        return rng.random() < 0.5
    if r == 2:
        return rng.choice((0, 1, -1, 255, 256, 2**63, 2**64 - 1, 2**64, -(2**64), 10**30, 10**5000))
    if r == 3:
        return rng.choice((0.0, -0.0, 1.5, 1e308, math.inf, -math.inf, math.nan, 9.0))
    if r == 4:
        return rng.choice(_TOKENS)
    if r == 5:
        return _random_text(rng)
    if r == 6:
        return base64.b64encode(rng.randbytes(rng.choice((31, 32, 33, 0)))).decode()
    if r == 7:
        return rng.choice(("g.alice", "test.x", "g", "g..a", "é.a", "peer.a" * 200))
    if r == 8:
        return str(rng.choice((0, 1, 2**64 - 1, 2**64, 10**25)))
    if r in (9, 10):
        return rng.choice(("USD", "", "€", "X" * 1000))
    if r == 11:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [rng.choice(_SPSP_KEYS) for _ in range(rng.randrange(5))]
    return {k: _random_json(rng, depth + 1) for k in keys}


def _json_edit(rng: random.Random, value: Any, pool: Sequence[Any]) -> Any:
    """One structural edit of a JSON value (copies along the edited path)."""
    if isinstance(value, dict) and value and rng.random() < 0.85:
        out = dict(value)
        op = rng.randrange(6)
        key = rng.choice(list(out))
        if op == 0:
            del out[key]
        elif op == 1:
            out[rng.choice(_SPSP_KEYS)] = _random_json(rng)
        elif op == 2:
            out[key] = _json_edit(rng, out[key], pool)
        elif op == 3 and isinstance(out[key], str):
            out[key] = rng.choice(_TEXT_MUTATORS)(rng, out[key], _TOKENS)
        elif op == 4:
            other = rng.choice(pool)
            if isinstance(other, dict) and other:
                k2 = rng.choice(list(other))
                out[k2] = other[k2]
        else:
            out[key] = _random_json(rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.5:
        items = list(value)
        i = rng.randrange(len(items))
        items[i] = _json_edit(rng, items[i], pool)
        return items
    if isinstance(value, str) and rng.random() < 0.7:
        return rng.choice(_TEXT_MUTATORS)(rng, value, _TOKENS)
    return _random_json(rng)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return "{}"


def _json_generator(seeds: Sequence[Any], pool: Sequence[Any]) -> Callable[[random.Random], Any]:
    seeds = seeds or pool

    def generate(rng: random.Random) -> Any:
        r = rng.random()
        if r < 0.02:
            return rng.choice(seeds)
        if r < 0.04:
            return _random_json(rng)
        if r < 0.045:  # deep nesting
            n = rng.choice((100, 1000, 10_000, MAX_INPUT // 2))
            return rng.choice(("[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n))
        value = rng.choice(seeds) if r < 0.93 else rng.choice(pool)
        for _ in range(rng.choice(_STACK_DEPTHS)):
            value = _json_edit(rng, value, pool)
        form = rng.random()
        if form < 0.12:  # the body as text, mutated
            text = _dumps(value)
            for _ in range(rng.choice((0, 1, 1, 2))):
                text = rng.choice(_TEXT_MUTATORS)(rng, text, _TOKENS)
            return text[:MAX_INPUT]
        if form < 0.22:  # the body as bytes, mutated
            raw = _dumps(value).encode("utf-8", "surrogatepass")
            if rng.random() < 0.2:
                raw = _dumps(value).encode(rng.choice(("utf-16", "utf-32", "utf-16-be")), "replace")
            for _ in range(rng.choice((0, 1, 1, 2))):
                raw = rng.choice(_BYTE_MUTATORS)(rng, raw, ())
            return raw[:MAX_INPUT]
        return value

    return generate


# -------------------------------------------------------------------- preparation


@dataclass(slots=True)
class Prepared:
    """A target with its seeds and input generator."""

    target: Target
    seeds: list[Any]
    generate: Callable[[random.Random], Any]


_PREPARED: dict[str, Prepared] = {}
_SKIPPED: dict[str, str] = {}
_BUILT: list[bool] = []


def _accepts(target: Target, value: Any) -> bool:
    try:
        target.call(value)
    except Exception:
        return False
    return True


def _select(target: Target, candidates: Iterable[Any]) -> list[Any]:
    valid = [c for c in candidates if _accepts(target, c)]
    if len(valid) > MAX_SEEDS:
        valid = random.Random(target.name).sample(valid, MAX_SEEDS)
    return valid


def _prepare(t: Target, corpus: Corpus) -> Prepared:
    extra = t.extra_seeds()
    if t.kind == "bytes":
        texts = [s.encode() for s in corpus.texts if s.isascii()] if t.text_seeds else []
        seeds = _select(t, [*corpus.blobs, *texts, *extra])
        generate = _byte_generator(seeds, corpus.blobs)
        variant = t.variant
        if variant is not None:
            plain = generate

            def generate(rng: random.Random) -> Any:
                data = plain(rng)
                return variant(rng, data) if rng.random() < 0.05 else data

        return Prepared(t, seeds, generate)
    if t.kind == "text":
        seeds = _select(t, [*corpus.texts, *extra])
        return Prepared(t, seeds, _text_generator(seeds, corpus.texts))
    seeds = _select(t, [*corpus.objects, *extra])
    return Prepared(t, seeds, _json_generator(seeds, corpus.objects))


def prepare(only: Sequence[str] | None = None) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Build (once per process) the selected targets' seeds and generators."""
    if not _BUILT:
        targets, skipped = _build_targets()
        _SKIPPED.update(skipped)
        for t in targets:
            _PREPARED[t.name] = _prepare(t, corpus())
        _BUILT.append(True)
    wanted = _match(only, [*_PREPARED, *_SKIPPED])
    return (
        {n: p for n, p in _PREPARED.items() if n in wanted},
        {n: r for n, r in _SKIPPED.items() if n in wanted},
    )


def register(target: Target) -> Prepared:
    """Add a decoder to this process's registry (run it with ``run(only=[name])``).

    For tests of the harness itself; with ``jobs`` > 1 register before the pool forks.
    """
    prepare()
    prepared = _PREPARED[target.name] = _prepare(target, corpus())
    return prepared


def unregister(name: str) -> None:
    """Remove a decoder added with :func:`register`."""
    _PREPARED.pop(name, None)


def _match(only: Sequence[str] | None, names: Sequence[str]) -> set[str]:
    """Names selected by ``--only``: exact names or prefixes (``ilp`` = ``ilp.*``)."""
    if not only:
        return set(names)
    chosen = set()
    for pattern in only:
        hits = {n for n in names if n == pattern or n.startswith(pattern.rstrip(".") + ".")}
        if not hits:
            raise SystemExit(f"--only {pattern!r} matches no decoder; known: {', '.join(names)}")
        chosen |= hits
    return chosen


# ------------------------------------------------------------------------ running


class FuzzTimeout(BaseException):
    """Raised inside a decoder call that ran longer than WATCHDOG_SECONDS."""


#: perf_counter() when the current call started, 0.0 between calls (read by the alarm).
_CALL_STARTED: list[float] = [0.0]


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    started = _CALL_STARTED[0]
    if started and time.perf_counter() - started > WATCHDOG_SECONDS:
        _CALL_STARTED[0] = 0.0
        raise FuzzTimeout(f"call still running after {WATCHDOG_SECONDS} s")


def describe(value: Any, limit: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of an input (hex for bytes, exact for text)."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value) if limit is None else bytes(value[:limit])
        return {"type": type(value).__name__, "length": len(value), "hex": raw.hex()}
    if isinstance(value, str):
        text = value if limit is None else value[:limit]
        return {
            "type": "str",
            "length": len(value),
            "json": json.dumps(text),
            "utf8_hex": text.encode("utf-8", "surrogatepass").hex(),
        }
    try:
        body = json.dumps(value)
    except (ValueError, TypeError, RecursionError) as exc:
        body = f"<not serialisable: {exc}>"
    length = len(body)
    if limit is not None:
        body = body[:limit]
    return {"type": type(value).__name__, "length": length, "json": body}


def _retime(call: Callable[[Any], object], value: Any) -> tuple[float, float]:
    """Best of three reruns: (CPU seconds of this thread, wall seconds).

    CPU time is what a DoS costs and is not inflated when other processes share the
    cores; the flag uses it.
    """
    cpu = wall = math.inf
    for _ in range(3):
        c0 = time.thread_time()
        t0 = _CALL_STARTED[0] = time.perf_counter()
        try:
            call(value)
        except Exception:
            pass
        except FuzzTimeout:
            return math.inf, math.inf
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.thread_time() - c0)
        _CALL_STARTED[0] = 0.0
    return cpu, wall


def run_chunk(task: tuple[str, int, int, int]) -> dict[str, Any]:
    """Run ``count`` inputs of decoder ``name`` for chunk ``chunk`` of seed ``seed``.

    Every call is timed (CPU time of this thread).  Calls over SLOW_SECONDS and the
    TOP_K slowest of the chunk are rerun three times (:func:`_retime`); the slowest
    best-of-three is the chunk's "slowest call", and one over SLOW_SECONDS is flagged.
    """
    name, seed, chunk, count = task
    prepared = prepare()[0][name]
    call = prepared.target.call
    expected = prepared.target.expected
    generate = prepared.generate
    rng = random.Random(f"{seed}/{name}/{chunk}")
    perf = time.perf_counter
    cpu_clock = time.thread_time
    started = _CALL_STARTED
    decoded = refused = unexpected = 0
    failures: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    top: list[tuple[float, int, Any]] = []  # min-heap of (CPU seconds, index, input)
    retimed: list[tuple[float, float, int, Any]] = []  # (cpu, wall, index, input)
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(
        signal, "setitimer"
    )
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
    try:
        for index in range(count):
            value = generate(rng)
            error: BaseException | None = None
            c0 = cpu_clock()
            started[0] = perf()
            try:
                call(value)
                decoded += 1
            except expected:
                refused += 1
            except (Exception, FuzzTimeout) as exc:
                error = exc
            elapsed = cpu_clock() - c0
            started[0] = 0.0
            if error is not None:
                unexpected += 1
                if len(failures) < MAX_RECORDED:
                    failures.append(
                        {
                            "decoder": name,
                            "seed": seed,
                            "chunk": chunk,
                            "index": index,
                            "exception": type(error).__name__,
                            "message": str(error)[:500],
                            "traceback": traceback.format_exception(error)[-6:],
                            "input": describe(value),
                        }
                    )
            if isinstance(error, FuzzTimeout):
                continue  # reported above; not rerun
            if elapsed > SLOW_SECONDS:
                cpu, wall = _retime(call, value)
                retimed.append((cpu, wall, index, value))
                if cpu > SLOW_SECONDS:
                    slow.append(
                        {
                            "decoder": name,
                            "cpu_seconds": cpu,
                            "wall_seconds": wall,
                            "first_cpu_seconds": elapsed,
                            "seed": seed,
                            "chunk": chunk,
                            "index": index,
                            "input": describe(value),
                        }
                    )
            elif len(top) < TOP_K:
                heapq.heappush(top, (elapsed, index, value))
            elif elapsed > top[0][0]:
                heapq.heapreplace(top, (elapsed, index, value))
        for _, index, value in top:
            retimed.append((*_retime(call, value), index, value))
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            signal.signal(signal.SIGALRM, previous)
            started[0] = 0.0
    cpu, wall, at, value = max(retimed, key=lambda r: r[0], default=(0.0, 0.0, -1, None))
    return {
        "decoder": name,
        "chunk": chunk,
        "inputs": count,
        "decoded": decoded,
        "expected_errors": refused,
        "unexpected": unexpected,
        "failures": failures,
        "slow": slow[:MAX_RECORDED],
        "slow_count": len(slow),
        "slowest_cpu_seconds": cpu,
        "slowest_wall_seconds": wall,
        "slowest_input": None if value is None else describe(value, 64),
        "slowest_at": None if value is None else {"seed": seed, "chunk": chunk, "index": at},
    }


@dataclass(slots=True)
class DecoderResult:
    """Totals for one decoder."""

    name: str
    group: str
    kind: Kind
    expected: str
    seeds: int
    inputs: int = 0
    decoded: int = 0
    expected_errors: int = 0
    unexpected: int = 0
    slow_count: int = 0
    slowest_cpu_seconds: float = 0.0
    slowest_wall_seconds: float = 0.0
    slowest_input: dict[str, Any] | None = None
    #: seed, chunk and index of the slowest input (see :func:`regenerate`).
    slowest_at: dict[str, int] | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    slow: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Summary:
    """The outcome of a run."""

    inputs_per_decoder: int
    seed: int
    jobs: int
    wall_seconds: float
    results: dict[str, DecoderResult]
    skipped: dict[str, str]
    source_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No unexpected exception and no slow call in any decoder."""
        return all(r.unexpected == 0 and r.slow_count == 0 for r in self.results.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs_per_decoder": self.inputs_per_decoder,
            "seed": self.seed,
            "jobs": self.jobs,
            "wall_seconds": round(self.wall_seconds, 1),
            "ok": self.ok,
            "machine": machine(),
            "slow_threshold_ms": SLOW_SECONDS * 1000,
            "max_input": MAX_INPUT,
            "decoders": {
                n: {
                    "group": r.group,
                    "kind": r.kind,
                    "expected": r.expected,
                    "seeds": r.seeds,
                    "inputs": r.inputs,
                    "decoded": r.decoded,
                    "expected_errors": r.expected_errors,
                    "unexpected": r.unexpected,
                    "slow_calls": r.slow_count,
                    "slowest_cpu_ms": round(r.slowest_cpu_seconds * 1000, 3),
                    "slowest_wall_ms": round(r.slowest_wall_seconds * 1000, 3),
                    "slowest_input": r.slowest_input,
                    "slowest_at": r.slowest_at,
                }
                for n, r in self.results.items()
            },
            "skipped": self.skipped,
            "sources_sha256": self.source_hashes,
        }


def sources() -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of the decoder sources, as fuzzed (the tree may be
    edited while a long run is going on; the modules were imported at the start)."""
    files = [*sorted((REPO / "ilp_receiver" / "codec").glob("*.py"))]
    files += [REPO / "ilp_receiver" / name for name in ("spsp.py", "crypto.py", "errors.py")]
    return {
        str(f.relative_to(REPO)): hashlib.sha256(f.read_bytes()).hexdigest()[:16]
        for f in files
        if f.is_file()
    }


def machine() -> dict[str, Any]:
    """Where the run happened."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def _tasks(names: Sequence[str], inputs: int, seed: int) -> list[tuple[str, int, int, int]]:
    chunks = math.ceil(inputs / CHUNK_SIZE)
    tasks: list[tuple[str, int, int, int]] = []
    for chunk in range(chunks):  # interleaved, so every decoder progresses together
        count = min(CHUNK_SIZE, inputs - chunk * CHUNK_SIZE)
        tasks.extend((name, seed, chunk, count) for name in names)
    return tasks


def run(
    inputs: int = DEFAULT_INPUTS,
    *,
    seed: int = DEFAULT_SEED,
    jobs: int = 1,
    only: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """Fuzz the selected decoders with ``inputs`` generated inputs each.

    ``jobs`` > 1 uses a process pool; results do not depend on it (except timings).
    """
    started = time.perf_counter()
    prepared, skipped = prepare(only)
    source_hashes = sources()
    results = {
        n: DecoderResult(
            n,
            p.target.group,
            p.target.kind,
            " or ".join(e.__name__ for e in p.target.expected),
            len(p.seeds),
        )
        for n, p in prepared.items()
    }
    tasks = _tasks(list(prepared), inputs, seed)
    chunk_results: list[dict[str, Any]] = []
    last = time.perf_counter()

    def collect(items: Iterable[dict[str, Any]]) -> None:
        nonlocal last
        for item in items:
            chunk_results.append(item)
            now = time.perf_counter()
            if progress is not None and now - last > 15:
                last = now
                done = sum(c["inputs"] for c in chunk_results)
                bad = sum(c["unexpected"] for c in chunk_results)
                rate = done / (now - started)
                total = inputs * len(prepared)
                progress(
                    f"{done:,}/{total:,} inputs ({rate:,.0f}/s, "
                    f"eta {(total - done) / max(rate, 1):.0f} s), unexpected: {bad}"
                )

    if jobs > 1 and tasks:
        ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        with ctx.Pool(jobs) as pool:
            collect(pool.imap_unordered(run_chunk, tasks, chunksize=1))
    else:
        collect(map(run_chunk, tasks))

    for c in sorted(chunk_results, key=lambda c: (c["decoder"], c["chunk"])):
        r = results[c["decoder"]]
        r.inputs += c["inputs"]
        r.decoded += c["decoded"]
        r.expected_errors += c["expected_errors"]
        r.unexpected += c["unexpected"]
        r.slow_count += c["slow_count"]
        r.failures.extend(c["failures"][: MAX_RECORDED - len(r.failures)])
        r.slow.extend(c["slow"][: MAX_RECORDED - len(r.slow)])
        if c["slowest_cpu_seconds"] > r.slowest_cpu_seconds:
            r.slowest_cpu_seconds = c["slowest_cpu_seconds"]
            r.slowest_wall_seconds = c["slowest_wall_seconds"]
            r.slowest_input = c["slowest_input"]
            r.slowest_at = c["slowest_at"]
    wall = time.perf_counter() - started
    return Summary(inputs, seed, jobs, wall, results, skipped, source_hashes)


# ------------------------------------------------------------------------ reports


def markdown(summary: Summary, command: str | None = None) -> str:
    """The per-decoder table (plus command, machine and verdict)."""
    m = machine()
    lines = []
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Seed {summary.seed}, {summary.inputs_per_decoder:,} inputs per decoder, "
        f"{summary.jobs} job(s), wall time {summary.wall_seconds:,.0f} s; "
        f"{m['nproc']} CPUs, {m['implementation']} {m['python']} on {m['platform']}.",
        "",
        "| decoder | group | inputs | decoded OK | expected errors | expected error type "
        "| unexpected | slowest call, CPU ms | its size |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in summary.results.values():
        size = (r.slowest_input or {}).get("length")
        flag = f" **{r.slow_count} SLOW**" if r.slow_count else ""
        lines.append(
            f"| `{r.name}` | {r.group} | {r.inputs:,} | {r.decoded:,} | {r.expected_errors:,} "
            f"| {r.expected} | {r.unexpected:,} | {r.slowest_cpu_seconds * 1000:.3f}{flag} "
            f"| {'' if size is None else f'{size:,}'} |"
        )
    for name, reason in summary.skipped.items():
        lines.append(f"| `{name}` | SKIPPED | | | | | | | {reason} |")
    total = sum(r.inputs for r in summary.results.values())
    bad = sum(r.unexpected for r in summary.results.values())
    slow = sum(r.slow_count for r in summary.results.values())
    lines += [
        "",
        f"Total: {total:,} inputs, {bad} unexpected exceptions, {slow} calls over "
        f"{SLOW_SECONDS * 1000:.0f} ms CPU (inputs up to {MAX_INPUT:,} bytes/characters; "
        f"slowest call = best of 3 reruns of each chunk's {TOP_K} slowest calls).  "
        + ("PASS" if summary.ok else "FAIL"),
    ]
    return "\n".join(lines) + "\n"


def regenerate(name: str, seed: int, chunk: int, index: int) -> Any:
    """Input number ``index`` of chunk ``chunk`` for decoder ``name`` (deterministic)."""
    generate = prepare()[0][name].generate
    rng = random.Random(f"{seed}/{name}/{chunk}")
    for _ in range(index):
        generate(rng)
    return generate(rng)


def write_artifacts(summary: Summary, directory: Path = ARTIFACT_DIR) -> list[Path]:
    """summary.json and slowest.jsonl (each decoder's slowest input, in full) always;
    failures.jsonl / slow.jsonl when there are any."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "summary.json", directory / "slowest.jsonl"]
    written[0].write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    with written[1].open("w", encoding="utf-8") as f:
        for r in summary.results.values():
            if r.slowest_at is not None:
                at = r.slowest_at
                value = regenerate(r.name, at["seed"], at["chunk"], at["index"])
                row = {"decoder": r.name, "cpu_ms": r.slowest_cpu_seconds * 1000, **at}
                f.write(json.dumps({**row, "input": describe(value)}) + "\n")
    for stem, key in (("failures", "failures"), ("slow", "slow")):
        path = directory / f"{stem}.jsonl"
        rows = [row for r in summary.results.values() for row in getattr(r, key)]
        if rows:
            path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
            written.append(path)
        elif path.exists():
            path.unlink()
    return written


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def replay(spec: str, seed: int) -> int:
    """``--replay DECODER:CHUNK:INDEX``: print the input, the outcome and its CPU time."""
    name, chunk, index = spec.rsplit(":", 2)
    prepared = prepare([name])[0][name]
    value = regenerate(name, seed, int(chunk), int(index))
    print(json.dumps(describe(value), indent=2))
    c0 = time.thread_time()
    try:
        result: object = prepared.target.call(value)
    except prepared.target.expected as exc:
        outcome, status = f"expected {type(exc).__name__}: {exc}", 0
    except Exception as exc:
        outcome, status = "UNEXPECTED " + "".join(traceback.format_exception(exc)), 1
    else:
        outcome, status = f"decoded: {result!r}"[:2000], 0
    print(f"{outcome}\n({(time.thread_time() - c0) * 1000:.3f} ms CPU)")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exit status 1 if any decoder misbehaved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--inputs", type=int, default=DEFAULT_INPUTS, help="inputs per decoder")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--only", default="", help="comma-separated decoder names or prefixes")
    parser.add_argument("--write", type=Path, help="also write the markdown report here")
    parser.add_argument("--list", action="store_true", help="list the decoders and exit")
    parser.add_argument(
        "--replay",
        metavar="DECODER:CHUNK:INDEX",
        help="regenerate one input (with --seed), run the decoder on it and show the outcome",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    if args.replay:
        return replay(args.replay, args.seed)
    if args.list:
        prepared, skipped = prepare(only)
        for name, p in prepared.items():
            expected = "/".join(e.__name__ for e in p.target.expected)
            print(f"{name}\t{p.target.group}\t{p.target.kind}\t{len(p.seeds)} seeds\t{expected}")
        for name, reason in skipped.items():
            print(f"{name}\tSKIPPED\t{reason}")
        return 0
    command = "python bench/fuzz_decoders.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    summary = run(args.inputs, seed=args.seed, jobs=max(1, args.jobs), only=only, progress=progress)
    report = markdown(summary, command.strip())
    data = summary.to_json()
    data["command"] = command.strip()
    data["commit"] = _git_commit()
    print(report)
    print(json.dumps(data, indent=2))
    paths = write_artifacts(summary)
    (ARTIFACT_DIR / "summary.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(report, encoding="utf-8")
        paths.append(args.write)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
