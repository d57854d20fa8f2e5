"""Receivers at saturation: this script is their parent and feeds them pre-built Prepares.

The driver plays the receiver's parent connector the way ilp-plugin-mini-accounts does:
a BTP/2.0 WebSocket server that accepts any ``username:token``, answers IL-DCP
(``test.driver.USERNAME``, asset XYZ scale 9) and then sends the receiver ILP Prepares
with a fixed number in flight (``--concurrency``), the next one as soon as an answer
comes back.  Nothing else sits between the driver and the receiver: no sender, no
connector, so the receiver gets as much of the machine as it can use, and the driver's
own per-packet work is small (write a pre-encoded WebSocket frame, read the answer,
check its fulfillment against the condition).

Every Prepare is built before the timed window with the project's own sender-side code:

* **PSK2**: an SPSP query (``application/spsp+json``) for a fresh destination and
  shared secret, then draft-2 requests (``build_request_prepare``: type 4, one request
  id per packet, amount ``--amount``, minimum 0), the format ``sender.js bench`` sends.
* **STREAM**: an SPSP4 query (``application/spsp4+json``), one connection opened before
  the window with a zero-amount packet whose StreamMoney frames open ``--streams``
  streams (ilp-protocol-stream 2.7.1 opens a stream on its first frame, and the
  harness's ``stream-receiver.js`` raises its receive limit to 2**64-1 in the ``stream``
  event; ours allows 2**64-1 by default), then money packets with increasing sequence
  numbers, each one StreamMoney frame (shares 1), the streams taken in turn, amount
  ``--amount``, ``prepareAmount`` = amount.  The client never sends
  ConnectionNewAddress: it only pays, so neither receiver has an address to send its
  own Prepares to (2.7.1 would otherwise probe the client's exchange rate); after the
  window a ConnectionClose packet ends the connection.

Each receiver runs as a BTP child of the driver: ``ilp-receiver receive`` with each
store of ``--store`` (``sqlite``, ``memory``, ``postgres``), and the JavaScript
references ``js-receiver.js`` (PSK2, ilp-protocol-psk2 0.5.0) and ``stream-receiver.js``
(STREAM, ilp-protocol-stream 2.7.1) from ``.interop/``.  A run feeds ``--count``
Prepares to each receiver in turn, the order rotating from run to run (A B C, then
C B A, ...), after ``--warmup-runs`` unrecorded rounds (V8's JIT, caches).  Per run it
records:

* packets/s: Prepares answered over the window (first frame written .. last answer read);
* receiver CPU ms per packet: user + system ticks of the receiver process from
  ``/proc/PID/stat`` over the window (all its threads: SQLite's writer thread included;
  a PostgreSQL server's backends are not), divided by the packets;
* driver CPU ms per packet: this process's CPU time over the window, to show that the
  driver costs less than what it measures;
* that every Prepare was fulfilled (each fulfillment hashes to its condition) and that
  the receiver's SPSP ``balance.current`` grew by exactly ``count x amount``.

It prints a markdown table of medians and the medians of the per-run ratios ours/JS::

    python bench/receiver_saturation.py --runs 6 --count 10000 --concurrency 10 50 \\
        --store sqlite memory

``--versus DIR`` runs another checkout of this project (its root directory, e.g. a
``git worktree`` of an older commit) with the same stores instead of the JavaScript
receivers, for before/after measurements of a change of ours; the ratios are then
this checkout over that one.

Needs ``node`` and the harness installed in ``.interop/`` unless ``--versus`` or
``--no-js`` leaves the JavaScript receivers out.  ``--wrap-ours PREFIX`` runs our
receivers under a profiler (``docs/benchmarks.md`` shows a py-spy profile taken so).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import WSMsgType, web
from saturation_common import (
    CLK_TCK,
    TimedRun,
    cpu_ticks,
    free_port,
    length_prefix,
    markdown_report,
    start_process,
    wrapped_pid,
    ws_frame,
)

from ilp_receiver.codec.btp import (
    BtpMessage,
    BtpResponse,
    decode_btp,
    encode_btp,
    encode_ilp_message,
    encode_ilp_response,
    find_protocol_data,
    parse_auth,
)
from ilp_receiver.codec.ildcp import ILDCP_DESTINATION, IldcpResponse, ildcp_serve
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    decode_prepare,
    decode_reply,
    encode_packet,
    encode_prepare,
)
from ilp_receiver.codec.stream import (
    ConnectionClose,
    ErrorCode,
    Frame,
    StreamMoney,
    StreamPacket,
)
from ilp_receiver.psk2.sender import build_request_prepare
from ilp_receiver.stream.secrets import StreamKeys, derive_keys, seal_packet

ROOT: Final = Path(__file__).resolve().parent.parent
HARNESS: Final = ROOT / ".interop"
BIN: Final = Path(sys.executable).parent
DRIVER_PREFIX: Final = "test.driver"
ASSET_CODE: Final = "XYZ"
ASSET_SCALE: Final = 9
#: The ILP entry of a BTP Response as every implementation writes it (count 1, "ilp",
#: content type 0): what the fast path of :meth:`Child._answer` looks for.
_ILP_ENTRY: Final = b"\x01\x01\x03ilp\x00"
_REQUEST_ID: Final = struct.Struct(">I")
_FULFILL: Final = 13
#: The stores our receiver can be run with (``--store`` names).
STORES: Final = ("sqlite", "memory", "postgres")
PROTOCOLS: Final = ("psk2", "stream")


# ---------------------------------------------------------------------------- the parent


@dataclass
class Load:
    """One timed feed: pre-encoded frames, their conditions, and what came back."""

    frames: list[bytes]
    conditions: list[bytes]
    concurrency: int
    first_id: int
    next_index: int = 0
    answered: int = 0
    fulfilled: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    done: asyncio.Future[None] | None = None
    ended_at: float = 0.0


class Child:
    """One BTP connection of a receiver to the driver: IL-DCP, and the timed feeds."""

    def __init__(self, username: str, ws: web.WebSocketResponse, write: Callable[[bytes], None]):
        self.username = username
        self.address = f"{DRIVER_PREFIX}.{username}"
        self.ws = ws
        self._write = write
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self.load: Load | None = None
        self.own_prepares = 0  # Prepares the receiver sent us other than IL-DCP
        self._serial = 1 << 30  # request ids of single requests (open / close packets)
        self._single: dict[int, asyncio.Future[bytes]] = {}

    # The timed path: answers to our Prepares.  Frames written during one loop iteration
    # leave in one socket write at its end.
    def _send(self, frame: bytes) -> None:
        out = self._out
        if not out:
            self._loop.call_soon(self._flush)
        out.append(frame)

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._write(out[0] if len(out) == 1 else b"".join(out))

    def start(self, load: Load) -> None:
        """Write the first ``concurrency`` Prepares of ``load``."""
        self.load = load
        load.done = self._loop.create_future()
        first = min(load.concurrency, len(load.frames))
        load.next_index = first
        self._write(b"".join(load.frames[:first]))

    def feed(self, data: bytes) -> None:
        """One BTP message from the receiver."""
        kind = data[0]
        if kind == 1:  # Response
            request_id = _REQUEST_ID.unpack_from(data, 1)[0]
            load = self.load
            if load is not None:
                index = request_id - load.first_id
                if 0 <= index < len(load.frames):
                    self._answer(load, index, data)
                    return
            future = self._single.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(self._reply_bytes(data))
            return
        if kind == 2:  # Error: count it against the load when it is one of ours
            request_id = _REQUEST_ID.unpack_from(data, 1)[0]
            load = self.load
            if load is not None and 0 <= request_id - load.first_id < len(load.frames):
                self._count(load, None, "BTP Error")
            return
        if kind == 6:
            self._message(data)

    def _answer(self, load: Load, index: int, data: bytes) -> None:
        # fast path: Response, one "ilp" entry, an ILP Fulfill
        _, pos = length_prefix(data, 5)
        if data.startswith(_ILP_ENTRY, pos):
            _, pos = length_prefix(data, pos + len(_ILP_ENTRY))
            if data[pos] == _FULFILL:
                _, pos = length_prefix(data, pos + 1)
                fulfillment = data[pos : pos + 32]
                ok = hashlib.sha256(fulfillment).digest() == load.conditions[index]
                self._count(load, None if ok else "wrong fulfillment", "")
                return
        # any other layout: the full decoders
        reply = decode_reply(self._reply_bytes(data))
        if isinstance(reply, IlpReject):
            self._count(load, None, reply.code)
        else:
            ok = hashlib.sha256(reply.fulfillment).digest() == load.conditions[index]
            self._count(load, None if ok else "wrong fulfillment", "")

    def _count(self, load: Load, problem: str | None, code: str) -> None:
        load.answered += 1
        if problem is None and not code:
            load.fulfilled += 1
        else:
            key = problem or code
            load.rejects[key] = load.rejects.get(key, 0) + 1
        i = load.next_index
        if i < len(load.frames):
            load.next_index = i + 1
            self._send(load.frames[i])
        elif load.answered == len(load.frames):
            load.ended_at = time.perf_counter()
            assert load.done is not None
            load.done.set_result(None)

    @staticmethod
    def _reply_bytes(data: bytes) -> bytes:
        frame = decode_btp(data)
        entry = find_protocol_data(frame, "ilp")
        return b"" if entry is None else entry.data

    def _message(self, data: bytes) -> None:
        """A request from the receiver: IL-DCP, or a Prepare of its own (refused F02)."""
        frame = decode_btp(data)
        entry = find_protocol_data(frame, "ilp")
        if entry is None:  # some other protocol: acknowledge with an empty Response
            self._send(ws_frame(encode_btp(BtpResponse(frame.request_id, ()))))
            return
        prepare = decode_prepare(entry.data)
        now = datetime.now(UTC)
        reply: IlpFulfill | IlpReject
        if prepare.destination == ILDCP_DESTINATION:
            response = IldcpResponse(self.address, ASSET_SCALE, ASSET_CODE)
            reply = ildcp_serve(prepare, response, server_address=DRIVER_PREFIX, now=now)
        else:
            self.own_prepares += 1
            reply = IlpReject("F02", DRIVER_PREFIX, "the load driver routes nothing", b"")
        self._send(ws_frame(encode_ilp_response(frame.request_id, encode_packet(reply))))

    async def request(self, prepare: IlpPrepare, timeout: float = 30.0) -> bytes:
        """Send one Prepare outside a load and return the ILP reply bytes."""
        self._serial += 1
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._single[self._serial] = future
        self._send(ws_frame(encode_ilp_message(self._serial, encode_prepare(prepare))))
        return await asyncio.wait_for(future, timeout)


class Parent:
    """The BTP server children connect to (any username and token are accepted)."""

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}
        self._arrived: dict[str, asyncio.Event] = {}

    def arrived(self, username: str) -> asyncio.Event:
        """Set once ``username`` has connected and authenticated."""
        return self._arrived.setdefault(username, asyncio.Event())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp WebSocket handler: BTP auth, then every message to the child."""
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, heartbeat=None)
        await ws.prepare(request)
        msg = await ws.receive()
        frame = decode_btp(msg.data)
        assert isinstance(frame, BtpMessage), frame
        username, _token = parse_auth(frame)
        await ws.send_bytes(encode_btp(BtpResponse(frame.request_id, ())))
        transport = request.transport
        assert transport is not None
        child = Child(username or "anonymous", ws, transport.write)
        self.children[child.username] = child
        self.arrived(child.username).set()
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                child.feed(msg.data)
            elif msg.type is WSMsgType.ERROR:
                break
        return ws


# ---------------------------------------------------------------------------- receivers


@dataclass
class Receiver:
    """A receiver process under test and what the driver knows of it."""

    name: str  # "js", "ours-sqlite", "versus-memory", ...
    username: str
    protocols: tuple[str, ...]
    spsp_url: str
    proc: subprocess.Popen[str]
    child: Child | None = None
    #: the receiver's own process: ``proc`` itself, or its child under ``--wrap-ours``
    pid: int = 0

    def __post_init__(self) -> None:
        if not self.pid:
            self.pid = self.proc.pid


def postgres_url() -> str:
    """The PostgreSQL database of ``--store postgres`` ($SATURATION_POSTGRES_URL)."""
    return os.environ.get("SATURATION_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_prefix(tag: str) -> str:
    """The table prefix of one receiver of this run (dropped at the end)."""
    return f"sat_{tag.replace('-', '_')}_{os.getpid()}_"


def store_argument(store: str, work: Path, tag: str) -> str:
    """``--store`` of ``ilp-receiver receive`` for a store name of ``--store``."""
    if store == "memory":
        return "memory:"
    if store == "sqlite":
        return str(work / f"{tag}.sqlite3")
    if store == "postgres":
        url = postgres_url()
        separator = "&" if "?" in url else "?"
        return f"{url}{separator}prefix={postgres_prefix(tag)}"
    raise SystemExit(f"unknown store {store!r} (one of {', '.join(STORES)})")


async def drop_postgres_tables(tags: list[str]) -> None:
    """Drop the tables the receivers ``tags`` created in the shared database."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(postgres_url(), timeout=10)
    try:
        for tag in tags:
            pattern = postgres_prefix(tag).replace("_", "\\_") + "%"
            rows = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", pattern
            )
            for row in rows:
                await conn.execute(f'DROP TABLE IF EXISTS "{row[0]}"')
    finally:
        await conn.close()


def ours_command(username: str, port: int, spsp_port: int, store: str, work: Path) -> list[str]:
    """``ilp-receiver receive`` as BTP child ``username`` of the driver."""
    return [
        str(BIN / "ilp-receiver"),
        "receive",
        "--uplink",
        f"btp+ws://{username}:tok@127.0.0.1:{port}",
        "--port",
        str(spsp_port),
        "--store",
        store,
        "--secret-file",
        str(work / f"{username}.secret"),
    ]


async def query_spsp(
    session: aiohttp.ClientSession, url: str, protocol: str
) -> tuple[str, bytes, int]:
    """SPSP (PSK2) or SPSP4 (STREAM) query: destination, shared secret, balance.current."""
    accept = "application/spsp4+json" if protocol == "stream" else "application/spsp+json"
    async with session.get(url, headers={"Accept": accept}) as response:
        response.raise_for_status()
        body: dict[str, Any] = json.loads(await response.text())
    secret = body["shared_secret"]
    secret += "=" * (-len(secret) % 4)
    shared_secret = base64.b64decode(secret.replace("-", "+").replace("_", "/"))
    balance = int((body.get("balance") or {}).get("current", -1))
    return body["destination_account"], shared_secret, balance


# ---------------------------------------------------------------------------- the packets


def psk2_prepares(
    destination: str, secret: bytes, count: int, amount: int, expires_at: datetime
) -> list[IlpPrepare]:
    """``count`` draft-2 PSK2 requests (type 4, request ids 1..count, minimum 0)."""
    return [
        build_request_prepare(
            destination,
            secret,
            amount=amount,
            expires_at=expires_at,
            iv=os.urandom(12),
            request_id=i + 1,
        )
        for i in range(count)
    ]


def stream_prepare(
    destination: str,
    keys: StreamKeys,
    sequence: int,
    amount: int,
    frames: tuple[Frame, ...],
    expires_at: datetime,
) -> IlpPrepare:
    """One STREAM Prepare: a type-12 packet with ``frames``, fulfillable."""
    packet = StreamPacket(sequence, 12, amount, frames)
    data = seal_packet(keys, os.urandom(12), packet)
    condition = hashlib.sha256(keys.fulfillment(data)).digest()
    return IlpPrepare(amount, expires_at, condition, destination, data)


def stream_prepares(
    destination: str,
    secret: bytes,
    count: int,
    amount: int,
    streams: int,
    expires_at: datetime,
) -> tuple[IlpPrepare, list[IlpPrepare], IlpPrepare]:
    """The opening packet (streams 1, 3, ... opened, amount 0), ``count`` money packets
    (sequence 2..count+1, one StreamMoney each, streams in turn) and the close packet."""
    keys = derive_keys(secret)
    ids = [1 + 2 * s for s in range(streams)]
    opening = stream_prepare(
        destination, keys, 1, 0, tuple(StreamMoney(s, 1) for s in ids), expires_at
    )
    money = [
        stream_prepare(
            destination, keys, i + 2, amount, (StreamMoney(ids[i % streams], 1),), expires_at
        )
        for i in range(count)
    ]
    close = stream_prepare(
        destination, keys, count + 2, 0, (ConnectionClose(ErrorCode.NO_ERROR, ""),), expires_at
    )
    return opening, money, close


# ---------------------------------------------------------------------------- a run


@dataclass
class RunResult(TimedRun):
    """One timed feed of one receiver."""

    fulfilled: int
    rejects: dict[str, int]
    receiver_cpu_ms: float
    balance_delta: int
    expected_delta: int

    @property
    def receiver_ms_per_packet(self) -> float:
        """Receiver CPU per packet (ms)."""
        return self.receiver_cpu_ms / self.packets

    @property
    def exact(self) -> bool:
        """Every packet fulfilled and the balance moved by exactly what was paid."""
        return self.fulfilled == self.packets and self.balance_delta == self.expected_delta


async def feed_once(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    protocol: str,
    count: int,
    concurrency: int,
    amount: int,
    streams: int,
) -> RunResult:
    """Query SPSP, build ``count`` Prepares, feed them at ``concurrency``, check the balance."""
    child = receiver.child
    assert child is not None
    destination, secret, before = await query_spsp(session, receiver.spsp_url, protocol)
    expires_at = datetime.now(UTC) + timedelta(minutes=5)
    close: IlpPrepare | None = None
    if protocol == "psk2":
        prepares = psk2_prepares(destination, secret, count, amount, expires_at)
    else:
        opening, prepares, close = stream_prepares(
            destination, secret, count, amount, streams, expires_at
        )
        reply = decode_reply(await child.request(opening))
        if not isinstance(reply, IlpFulfill):
            raise SystemExit(f"{receiver.name}: the STREAM opening packet got {reply}")
    first_id = 1
    frames = [
        ws_frame(encode_ilp_message(first_id + i, encode_prepare(p)))
        for i, p in enumerate(prepares)
    ]
    load = Load(frames, [p.execution_condition for p in prepares], concurrency, first_id)
    pid = receiver.pid
    ticks = cpu_ticks(pid)
    driver_cpu = time.process_time()
    started = time.perf_counter()
    child.start(load)
    assert load.done is not None
    await asyncio.wait_for(load.done, timeout=max(60.0, count / 50))
    driver_cpu = time.process_time() - driver_cpu
    ticks = cpu_ticks(pid) - ticks
    child.load = None
    if close is not None:
        await child.request(close)
    _, _, after = await query_spsp(session, receiver.spsp_url, protocol)
    return RunResult(
        packets=count,
        fulfilled=load.fulfilled,
        rejects=load.rejects,
        seconds=load.ended_at - started,
        receiver_cpu_ms=ticks * 1000 / CLK_TCK,
        driver_cpu_ms=driver_cpu * 1000,
        balance_delta=after - before,
        expected_delta=count * amount,
    )


# ---------------------------------------------------------------------------- reporting


def report(
    rows: dict[tuple[str, str, int], list[RunResult]],
    baseline_of: Callable[[str], str],
    load_averages: list[str],
) -> str:
    """The markdown tables: medians per receiver, then per-run ratios against the baseline."""
    return markdown_report(
        rows,
        baseline_of,
        load_averages,
        kinds=PROTOCOLS,
        kind_label="protocol",
        target="receiver",
        target_ms=lambda r: r.receiver_ms_per_packet,
    )


# ---------------------------------------------------------------------------- main


async def run(opts: argparse.Namespace) -> int:
    """Start the parent and the receivers, run the interleaved rounds, print the tables."""
    work = Path(tempfile.mkdtemp(prefix="saturation."))
    finished = False
    parent = Parent()
    app = web.Application()
    app.router.add_get("/{tail:.*}", parent.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", opts.base_port)
    await site.start()
    port: int = runner.addresses[0][1]  # --base-port 0: a free one
    receivers: list[Receiver] = []
    spsp_port = opts.base_port + 1

    async def add(
        name: str, protocols: tuple[str, ...], args: list[str], cwd: Path, **env: str
    ) -> None:
        # in a thread: the children connect to this loop's server before they are ready
        nonlocal spsp_port
        username = name.replace("-", "")
        # --base-port 0: ours binds a free SPSP port and says which; the JS scripts
        # print the port they were given, so they get one found free
        spsp = spsp_port if opts.base_port else (0 if cwd == ROOT else free_port())
        args = [a.replace("{USER}", username).replace("{SPSP}", str(spsp)) for a in args]
        log = work / f"{name}.err"
        proc, ready = await asyncio.to_thread(start_process, args, log, cwd, env or None)
        url = ready.get("spsp_url") or f"http://127.0.0.1:{spsp}/.well-known/pay"
        receivers.append(Receiver(name, username, protocols, url, proc))
        spsp_port += 1

    protocols = tuple(opts.protocol)
    try:
        btp = f"btp+ws://{{USER}}:tok@127.0.0.1:{port}"
        if opts.versus is not None:
            for store in opts.store:
                name = f"versus-{store}"
                args = ours_command("{USER}", port, 0, store_argument(store, work, name), work)
                args[args.index("--port") + 1] = "{SPSP}"
                await add(name, protocols, args, ROOT, PYTHONPATH=str(opts.versus.resolve()))
        elif not opts.no_js:
            if "psk2" in protocols:
                args = ["node", "js-receiver.js", "--btp-url", btp, "--spsp-port", "{SPSP}"]
                await add("js-psk2", ("psk2",), [*args, "--max-runtime", "3600"], HARNESS)
            if "stream" in protocols:
                args = ["node", "stream-receiver.js", "--btp-url", btp, "--spsp-port", "{SPSP}"]
                await add(
                    "js-stream", ("stream",), [*args, "--no-echo", "--max-runtime", "3600"], HARNESS
                )
        for store in opts.store:
            name = f"ours-{store}"
            args = ours_command("{USER}", port, 0, store_argument(store, work, name), work)
            args[args.index("--port") + 1] = "{SPSP}"
            if opts.wrap_ours:
                prefix = shlex.split(opts.wrap_ours.replace("{name}", name))
                args = [*prefix, sys.executable, "-m", "ilp_receiver", *args[1:]]
            await add(name, protocols, args, ROOT)
            if opts.wrap_ours:
                receivers[-1].pid = wrapped_pid(receivers[-1].proc.pid)
        for receiver in receivers:
            await asyncio.wait_for(parent.arrived(receiver.username).wait(), 30)
            receiver.child = parent.children[receiver.username]

        def baseline_of(name: str) -> str:
            if name.startswith("ours-"):
                if opts.versus is not None:
                    return "versus-" + name.removeprefix("ours-")
                return "js"
            return name

        def display(receiver: Receiver) -> str:
            return "js" if receiver.name.startswith("js-") else receiver.name

        by_protocol = {p: [r for r in receivers if p in r.protocols] for p in protocols}
        rows: dict[tuple[str, str, int], list[RunResult]] = {}
        load_averages: list[str] = []
        async with aiohttp.ClientSession() as session:
            for round_ in range(-opts.warmup_runs, opts.runs):
                load_averages.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
                for protocol in protocols:
                    for concurrency in opts.concurrency:
                        order = list(by_protocol[protocol])
                        shift = round_ % len(order)
                        order = order[shift:] + order[:shift]
                        if round_ % 2:
                            order.reverse()
                        for receiver in order:
                            count = opts.count if round_ >= 0 else max(opts.count // 2, 10)
                            result = await feed_once(
                                session,
                                receiver,
                                protocol,
                                count,
                                concurrency,
                                opts.amount,
                                opts.streams,
                            )
                            tag = "warm-up" if round_ < 0 else f"run {round_ + 1}"
                            print(
                                f"{tag} {protocol} c{concurrency} {receiver.name}: "
                                f"{result.packets_per_s:.0f} packets/s, receiver "
                                f"{result.receiver_ms_per_packet:.3f} CPU ms/packet, driver "
                                f"{result.driver_ms_per_packet:.3f}; fulfilled "
                                f"{result.fulfilled}/{result.packets} {result.rejects or ''} "
                                f"balance +{result.balance_delta}",
                                file=sys.stderr,
                                flush=True,
                            )
                            if not result.exact:
                                raise SystemExit(f"{receiver.name}: not exact: {result}")
                            if round_ >= 0:
                                key = (protocol, display(receiver), concurrency)
                                rows.setdefault(key, []).append(result)
        load_averages = load_averages[opts.warmup_runs :]
        own = {r.name: r.child.own_prepares for r in receivers if r.child and r.child.own_prepares}
        print(report(rows, baseline_of, load_averages))
        if own:
            print(f"\nPrepares the receivers sent the driver (refused F02): {own}")
        if opts.json:
            text = json.dumps(
                {f"{p}/{n}/{c}": [r.__dict__ for r in res] for (p, n, c), res in rows.items()},
                indent=1,
            )
            await asyncio.to_thread(Path(opts.json).write_text, text)
        finished = True
        return 0
    finally:
        for receiver in reversed(receivers):
            with contextlib.suppress(ProcessLookupError):  # a profiler writes on its exit
                os.kill(receiver.pid, signal.SIGTERM)
        for receiver in reversed(receivers):
            try:
                receiver.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                receiver.proc.kill()
        with contextlib.suppress(Exception):
            await runner.cleanup()
        if "postgres" in opts.store:
            tags = [r.name for r in receivers if r.name.endswith("-postgres")]
            with contextlib.suppress(Exception):
                await drop_postgres_tables(tags)
        if finished:  # keep the receivers' logs when something went wrong
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="recorded rounds (default 6)")
    parser.add_argument("--count", type=int, default=10_000, help="Prepares per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument(
        "--store", nargs="+", choices=STORES, default=["sqlite"], help="our receiver's stores"
    )
    parser.add_argument("--amount", type=int, default=1000, help="amount of every Prepare")
    parser.add_argument("--streams", type=int, default=1, help="STREAM streams per connection")
    parser.add_argument(
        "--base-port",
        type=int,
        default=24700,
        help="the driver's BTP port; the receivers' SPSP ports follow it (0: free ports)",
    )
    parser.add_argument("--warmup-runs", type=int, default=1, help="unrecorded rounds first")
    parser.add_argument(
        "--versus",
        type=Path,
        default=None,
        help="another checkout of this project to run instead of the JS receivers",
    )
    parser.add_argument("--no-js", action="store_true", help="our receivers only")
    parser.add_argument(
        "--wrap-ours",
        default=None,
        metavar="PREFIX",
        help="run our receivers as PREFIX python -m ilp_receiver receive ..., e.g. "
        "'py-spy record -f raw -o /tmp/{name}.txt --' ({name}: the receiver's name); "
        "CPU is still measured on the receiver process",
    )
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
