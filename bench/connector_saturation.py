"""Connectors at saturation: this script is both their sender and their receiver.

The driver opens two BTP/2.0 WebSocket connections to the connector under test:

* the **sender** link, a client of a fixed-token BTP server account (relation child):
  it writes pre-built ILP Prepares with a fixed number in flight (``--concurrency``),
  the next one as soon as an answer comes back, and checks that every answer is a
  Fulfill whose fulfillment hashes to the Prepare's condition;
* the **receiver** link, a mini-accounts child (its address learnt by IL-DCP): every
  Prepare the connector forwards to it is answered at once with the Fulfill of its
  condition (looked up in a table built with the Prepares), and counted with its amount.

Nothing else runs: no SPSP, no receiver, no sender process, so the connector gets as
much of the machine as it can use and the driver's own per-packet work is small (write
pre-encoded frames, read the forwarded Prepare's request id, condition and amount, write
a Fulfill frame patched with that request id, check the Fulfill that comes back).  The
WebSocket client is a small asyncio Protocol of its own: client frames are masked with
a zero key, so they are encoded once before the timed window.

Prepares (``--packet``):

* ``psk2``: draft-2 PSK2 requests (``build_request_prepare``, type 4, one request id per
  packet, amount ``--amount``) to ``RECEIVER.psk2`` with a random shared secret; the
  driver knows each fulfillment from that secret, as a PSK2 receiver would;
* ``plain``: ``--data-size`` random bytes of data to ``RECEIVER.plain``, a random
  fulfillment per packet.

The connectors, each with its accounts on loopback:

* ours: ``ilp-receiver connector --config FILE`` with a ``btp-server`` account
  ``sender`` (token ``sender-token``) and a ``mini-accounts`` account ``kids``, balance
  store ``--store`` (``sqlite`` as shipped, or ``memory``);
* ``ilp-connector`` 23.0.2: ``.interop/connector.js`` (its ``sender`` account, an
  ilp-plugin-btp server, and its ``receivers`` account, ilp-plugin-mini-accounts;
  memory store, one-to-one backend with spread 0, rate limit 100000/s).

A run feeds ``--count`` Prepares through each connector in turn, the order rotating
from run to run, after ``--warmup-runs`` unrecorded rounds.  Per run it records
packets/s over the window (first frame written .. last answer read), the connector's
user + system CPU ticks from ``/proc/PID/stat`` over the window divided by the packets,
the driver's own CPU per packet (to show that it costs less than what it measures), and
checks exactness: every Prepare fulfilled, each one forwarded exactly once, with its
amount unchanged (spread 0).  It prints a markdown table of medians and the medians of
the per-run ratios ours / ilp-connector::

    python bench/connector_saturation.py --runs 6 --count 20000 --concurrency 10 50

``--versus DIR`` runs another checkout of this project (e.g. a ``git worktree`` of an
older commit) instead of ilp-connector, for before/after measurements of a change of
ours.  ``--wrap-ours PREFIX`` runs our connector under a profiler (``py-spy record -f
raw -o /tmp/{name}.txt --``); CPU is still measured on the connector process.
"""

from __future__ import annotations

import argparse
import asyncio
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
from typing import Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saturation_common import (
    CLK_TCK,
    TimedRun,
    cpu_ticks,
    free_port,
    length_prefix,
    markdown_report,
    start_process,
    wrapped_pid,
    ws_client_frame,
)

from ilp_receiver.codec.btp import (
    auth_message,
    decode_btp,
    encode_btp,
    encode_ilp_message,
    encode_ilp_response,
    find_protocol_data,
)
from ilp_receiver.codec.ildcp import ildcp_request, ildcp_result
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    decode_reply,
    encode_packet,
    encode_prepare,
)
from ilp_receiver.codec.psk2 import derive_keys, fulfillment_for
from ilp_receiver.psk2.sender import build_request_prepare

ROOT: Final = Path(__file__).resolve().parent.parent
HARNESS: Final = ROOT / ".interop"
BIN: Final = Path(sys.executable).parent
PACKETS: Final = ("psk2", "plain")
STORES: Final = ("sqlite", "memory")
SENDER_TOKEN: Final = "sender-token"
#: The ILP entry of a BTP frame as every implementation writes it (count 1, "ilp",
#: content type 0): what the fast paths look for.
_ILP_ENTRY: Final = b"\x01\x01\x03ilp\x00"
_REQUEST_ID: Final = struct.Struct(">I")
_AMOUNT: Final = struct.Struct(">Q")
_PREPARE: Final = 12
_FULFILL: Final = 13
#: Offsets inside an ILP Prepare's content: amount (8), expiry (17), condition (32).
_CONDITION_AT: Final = 8 + 17


# ---------------------------------------------------------------------------- WebSocket


class WsClient(asyncio.Protocol):
    """A WebSocket client connection (RFC 6455) that hands every binary message to
    ``on_message`` and writes pre-encoded client frames (see ``ws_client_frame``)."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: c2F0dXJhdGlvbi1iZW5jaA==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: btp\r\n\r\n"
        ).encode()
        self._buf = b""
        self._open = False
        self._parts: list[bytes] = []  # a fragmented message so far
        self.on_message: Callable[[bytes], None] = lambda data: None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the connection closed."""
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        """Write pre-encoded client frames."""
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        """Parse server frames (unmasked) and hand on each binary message."""
        buf = self._buf + data if self._buf else data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self._open = True
            self.opened.set_result(None)
            buf = buf[end + 4 :]
        pos = 0
        size = len(buf)
        on_message = self.on_message
        while size - pos >= 2:
            head = buf[pos]
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            end = start + n
            if end > size:
                break
            payload = buf[start:end]
            pos = end
            opcode = head & 0x0F
            if head == 0x82:  # the common case: a whole binary message
                on_message(payload)
            elif opcode in (0x0, 0x2):  # fragments
                self._parts.append(payload)
                if head & 0x80:
                    on_message(b"".join(self._parts))
                    self._parts.clear()
            elif opcode == 0x9:  # ping
                self.write(ws_client_frame(payload, opcode=0xA))
            elif opcode == 0x8:  # close
                self.write(ws_client_frame(payload[:2], opcode=0x8))
                assert self.transport is not None
                self.transport.close()
        self._buf = buf[pos:] if pos < size else b""


class BtpLink:
    """One authenticated BTP connection of the driver: single requests (auth, IL-DCP)
    and a handler for everything else."""

    def __init__(self, ws: WsClient) -> None:
        self.ws = ws
        self._serial = 1 << 30
        self._single: dict[int, asyncio.Future[bytes]] = {}
        self.other: Callable[[bytes], None] = lambda data: None
        ws.on_message = self._message

    @classmethod
    async def connect(cls, url: str, username: str, token: str) -> BtpLink:
        """Open ``ws://HOST:PORT/PATH`` and authenticate with ``username``/``token``."""
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        loop = asyncio.get_running_loop()
        _, ws = await loop.create_connection(
            lambda: WsClient(host, int(port), "/" + path), host, int(port)
        )
        await asyncio.wait_for(ws.opened, 10)
        link = cls(ws)
        await link.request(encode_btp(auth_message(0, token, username)))
        return link

    def _message(self, data: bytes) -> None:
        if data[0] in (1, 2):  # Response, Error
            future = self._single.pop(_REQUEST_ID.unpack_from(data, 1)[0], None)
            if future is not None:
                if not future.done():
                    future.set_result(data)
                return
        self.other(data)

    async def request(self, frame: bytes, timeout: float = 30.0) -> bytes:
        """Write BTP ``frame`` with a request id of ours; return the answer's bytes."""
        self._serial += 1
        frame = frame[:1] + _REQUEST_ID.pack(self._serial) + frame[5:]
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._single[self._serial] = future
        self.ws.write(ws_client_frame(frame))
        answer = await asyncio.wait_for(future, timeout)
        if answer[0] != 1:
            raise SystemExit(f"BTP request refused: {decode_btp(answer)}")
        return answer

    async def ildcp(self) -> str:
        """Our ILP address on this link, by IL-DCP."""
        prepare = ildcp_request(datetime.now(UTC) + timedelta(seconds=30))
        answer = await self.request(encode_ilp_message(0, encode_prepare(prepare)))
        entry = find_protocol_data(decode_btp(answer), "ilp")
        assert entry is not None
        return ildcp_result(decode_reply(entry.data)).client_address


# ---------------------------------------------------------------------------- the load


@dataclass
class Load:
    """One timed feed: pre-encoded Prepare frames, and what came back on both links."""

    frames: list[bytes]
    conditions: list[bytes]
    #: condition -> (frame before the request id, frame after it) of its Fulfill
    fulfills: dict[bytes, tuple[bytes, bytes]]
    concurrency: int
    first_id: int
    next_index: int = 0
    answered: int = 0
    fulfilled: int = 0
    forwarded: int = 0
    forwarded_amount: int = 0
    unknown: int = 0  # forwarded Prepares whose condition is not ours (or seen twice)
    rejects: dict[str, int] = field(default_factory=dict)
    done: asyncio.Future[None] | None = None
    ended_at: float = 0.0


def fulfill_frame(fulfillment: bytes) -> tuple[bytes, bytes]:
    """A masked BTP Response frame carrying the Fulfill of ``fulfillment``, split around
    its request id (which is the connector's, known only when the Prepare comes)."""
    frame = ws_client_frame(encode_ilp_response(0, encode_packet(IlpFulfill(fulfillment, b""))))
    head = 6 if len(frame) - 6 < 126 else 8  # WebSocket header + zero mask key
    return frame[: head + 1], frame[head + 5 :]


class Driver:
    """The two links and the per-packet work on both."""

    def __init__(self, sender: BtpLink, receiver: BtpLink) -> None:
        self.sender = sender
        self.receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []  # Prepares to write at the end of this loop iteration
        self._back: list[bytes] = []  # Fulfills to write at the end of this loop iteration
        self.load: Load | None = None
        self.receiver_address = ""  # learnt by IL-DCP on the receiver link
        sender.other = self._sender_frame
        receiver.other = self._forwarded

    def start(self, load: Load) -> None:
        """Write the first ``concurrency`` Prepares of ``load``."""
        self.load = load
        load.done = self._loop.create_future()
        first = min(load.concurrency, len(load.frames))
        load.next_index = first
        self.sender.ws.write(b"".join(load.frames[:first]))

    # receiver link: Prepares the connector forwards
    def _forwarded(self, data: bytes) -> None:
        load = self.load
        if data[0] == 6 and load is not None:
            _, pos = length_prefix(data, 5)
            if data.startswith(_ILP_ENTRY, pos):
                _, pos = length_prefix(data, pos + len(_ILP_ENTRY))
                if data[pos] == _PREPARE:
                    _, pos = length_prefix(data, pos + 1)
                    condition = data[pos + _CONDITION_AT : pos + _CONDITION_AT + 32]
                    parts = load.fulfills.pop(condition, None)
                    if parts is not None:
                        load.forwarded += 1
                        load.forwarded_amount += _AMOUNT.unpack_from(data, pos)[0]
                        back = self._back
                        if not back:
                            self._loop.call_soon(self._flush_back)
                        back += (parts[0], data[1:5], parts[1])
                        return
                    load.unknown += 1
        if data[0] == 6:  # anything else: F02 (IL-DCP and the like are the driver's own)
            reject = IlpReject("F02", "test.driver", "the load driver routes nothing", b"")
            request_id = _REQUEST_ID.unpack_from(data, 1)[0]
            response = encode_ilp_response(request_id, encode_packet(reject))
            self.receiver.ws.write(ws_client_frame(response))

    def _flush_back(self) -> None:
        back, self._back = self._back, []
        self.receiver.ws.write(b"".join(back))

    # sender link: answers to our Prepares
    def _sender_frame(self, data: bytes) -> None:
        load = self.load
        if load is None or data[0] not in (1, 2):
            return
        index = _REQUEST_ID.unpack_from(data, 1)[0] - load.first_id
        if not 0 <= index < len(load.frames):
            return
        if data[0] == 2:
            self._count(load, "BTP Error")
            return
        _, pos = length_prefix(data, 5)
        if data.startswith(_ILP_ENTRY, pos):
            _, pos = length_prefix(data, pos + len(_ILP_ENTRY))
            if data[pos] == _FULFILL:
                _, pos = length_prefix(data, pos + 1)
                ok = hashlib.sha256(data[pos : pos + 32]).digest() == load.conditions[index]
                self._count(load, "" if ok else "wrong fulfillment")
                return
        entry = find_protocol_data(decode_btp(data), "ilp")
        reply = decode_reply(entry.data if entry else b"")
        if isinstance(reply, IlpReject):
            self._count(load, f"{reply.code} {reply.message}"[:60])
        else:
            ok = hashlib.sha256(reply.fulfillment).digest() == load.conditions[index]
            self._count(load, "" if ok else "wrong fulfillment")

    def _count(self, load: Load, problem: str) -> None:
        load.answered += 1
        if not problem:
            load.fulfilled += 1
        else:
            load.rejects[problem] = load.rejects.get(problem, 0) + 1
        i = load.next_index
        if i < len(load.frames):
            load.next_index = i + 1
            out = self._out
            if not out:
                self._loop.call_soon(self._flush)
            out.append(load.frames[i])
        elif load.answered == len(load.frames):
            load.ended_at = time.perf_counter()
            assert load.done is not None
            load.done.set_result(None)

    def _flush(self) -> None:
        out, self._out = self._out, []
        self.sender.ws.write(out[0] if len(out) == 1 else b"".join(out))


def build_load(
    packet: str,
    destination: str,
    count: int,
    amount: int,
    data_size: int,
    concurrency: int,
    first_id: int,
) -> Load:
    """``count`` Prepares to ``destination`` as sender frames, with their Fulfill frames."""
    expires_at = datetime.now(UTC) + timedelta(minutes=5)
    prepares: list[IlpPrepare] = []
    fulfillments: list[bytes] = []
    if packet == "psk2":
        secret = os.urandom(32)
        key = derive_keys(secret).fulfillment_key
        for i in range(count):
            prepare = build_request_prepare(
                f"{destination}.psk2",
                secret,
                amount=amount,
                expires_at=expires_at,
                iv=os.urandom(12),
                request_id=i + 1,
            )
            prepares.append(prepare)
            fulfillments.append(fulfillment_for(key, prepare.data))
    else:
        for _ in range(count):
            fulfillment = os.urandom(32)
            condition = hashlib.sha256(fulfillment).digest()
            data = os.urandom(data_size)
            prepares.append(IlpPrepare(amount, expires_at, condition, f"{destination}.plain", data))
            fulfillments.append(fulfillment)
    frames = [
        ws_client_frame(encode_ilp_message(first_id + i, encode_prepare(p)))
        for i, p in enumerate(prepares)
    ]
    conditions = [p.execution_condition for p in prepares]
    fulfills = {c: fulfill_frame(f) for c, f in zip(conditions, fulfillments, strict=True)}
    return Load(frames, conditions, fulfills, concurrency, first_id)


# ---------------------------------------------------------------------------- connectors


@dataclass
class Connector:
    """A connector process under test and the driver's links to it."""

    name: str  # "ilp-connector", "ours-sqlite", "versus-sqlite"
    proc: subprocess.Popen[str]
    sender_url: str
    receiver_url: str
    pid: int = 0
    driver: Driver | None = None
    next_id: int = 1

    def __post_init__(self) -> None:
        if not self.pid:
            self.pid = self.proc.pid


def ours_config(work: Path, name: str, store: str) -> Path:
    """The TOML config of our connector: a ``btp-server`` sender, a mini-accounts child."""
    store_value = "memory:" if store == "memory" else str(work / f"{name}.sqlite3")
    path = work / f"{name}.toml"
    path.write_text(
        f'[connector]\naddress = "test.pyconn"\nstore = "{store_value}"\n'
        f'route_broadcast_enabled = false\n\n[accounts.sender]\nrelation = "child"\n'
        f'transport = "btp-server"\ntoken = "{SENDER_TOKEN}"\nlisten = "127.0.0.1:0"\n\n'
        f'[accounts.kids]\nrelation = "child"\ntransport = "mini-accounts"\n'
        f'listen = "127.0.0.1:0"\n'
    )
    return path


@dataclass
class RunResult(TimedRun):
    """One timed feed through one connector."""

    fulfilled: int
    forwarded: int
    forwarded_amount: int
    unknown: int
    rejects: dict[str, int]
    connector_cpu_ms: float
    expected_amount: int

    @property
    def connector_ms_per_packet(self) -> float:
        """Connector CPU per packet (ms)."""
        return self.connector_cpu_ms / self.packets

    @property
    def exact(self) -> bool:
        """Every packet fulfilled, forwarded once, with its amount unchanged."""
        return (
            self.fulfilled == self.forwarded == self.packets
            and not self.unknown
            and self.forwarded_amount == self.expected_amount
        )


async def feed_once(
    connector: Connector, packet: str, count: int, concurrency: int, opts: argparse.Namespace
) -> RunResult:
    """Build ``count`` Prepares, feed them at ``concurrency``, check what came back."""
    driver = connector.driver
    assert driver is not None
    destination = driver.receiver_address
    load = build_load(
        packet, destination, count, opts.amount, opts.data_size, concurrency, connector.next_id
    )
    connector.next_id += count
    pid = connector.pid
    ticks = cpu_ticks(pid)
    driver_cpu = time.process_time()
    started = time.perf_counter()
    driver.start(load)
    assert load.done is not None
    try:
        await asyncio.wait_for(load.done, timeout=max(60.0, count / 50))
    except TimeoutError:
        raise SystemExit(
            f"{connector.name}: {load.answered}/{count} answered, {load.forwarded} forwarded, "
            f"rejects {load.rejects}"
        ) from None
    driver_cpu = time.process_time() - driver_cpu
    ticks = cpu_ticks(pid) - ticks
    driver.load = None
    return RunResult(
        packets=count,
        fulfilled=load.fulfilled,
        forwarded=load.forwarded,
        forwarded_amount=load.forwarded_amount,
        unknown=load.unknown,
        rejects=load.rejects,
        seconds=load.ended_at - started,
        connector_cpu_ms=ticks * 1000 / CLK_TCK,
        driver_cpu_ms=driver_cpu * 1000,
        expected_amount=count * opts.amount,
    )


# ---------------------------------------------------------------------------- reporting


def report(
    rows: dict[tuple[str, str, int], list[RunResult]],
    baseline_of: Callable[[str], str],
    load_averages: list[str],
) -> str:
    """The markdown tables: medians per connector, then per-run ratios against the baseline."""
    return markdown_report(
        rows,
        baseline_of,
        load_averages,
        kinds=PACKETS,
        kind_label="packets",
        target="connector",
        target_ms=lambda r: r.connector_ms_per_packet,
    )


# ---------------------------------------------------------------------------- main


async def start_ours(
    name: str, store: str, work: Path, opts: argparse.Namespace, versus: Path | None
) -> Connector:
    """Our connector (or ``versus``'s) with a sender and a mini-accounts account."""
    config = ours_config(work, name, store)
    args = [str(BIN / "ilp-receiver"), "connector", "--config", str(config)]
    if opts.wrap_ours and versus is None:
        prefix = shlex.split(opts.wrap_ours.replace("{name}", name))
        args = [*prefix, sys.executable, "-m", "ilp_receiver", *args[1:]]
    env = {"PYTHONPATH": str(versus)} if versus is not None else None
    log = work / f"{name}.err"
    proc, ready = await asyncio.to_thread(start_process, args, log, ROOT, env)
    accounts = ready["accounts"]
    connector = Connector(name, proc, accounts["sender"]["listen"], accounts["kids"]["listen"])
    if opts.wrap_ours and versus is None:
        connector.pid = wrapped_pid(proc.pid)
    return connector


async def start_js(work: Path) -> Connector:
    """ilp-connector 23.0.2 (``.interop/connector.js``) on two free ports."""
    sender_port, receivers_port = free_port(), free_port()
    args = ["node", "connector.js", "--sender-port", str(sender_port)]
    args += ["--receivers-port", str(receivers_port), "--sender-token", SENDER_TOKEN]
    args += ["--max-runtime", "7200"]
    log = work / "ilp-connector.err"
    proc, _ = await asyncio.to_thread(start_process, args, log, HARNESS, None)
    return Connector(
        "ilp-connector",
        proc,
        f"ws://127.0.0.1:{sender_port}/",
        f"ws://127.0.0.1:{receivers_port}/",
    )


async def connect(connector: Connector) -> None:
    """The driver's two links to ``connector``, and the receiver link's address."""
    receiver = await BtpLink.connect(connector.receiver_url, "driver", "driver-token")
    sender = await BtpLink.connect(connector.sender_url, "", SENDER_TOKEN)
    driver = Driver(sender, receiver)
    driver.receiver_address = await receiver.ildcp()
    connector.driver = driver


async def run(opts: argparse.Namespace) -> int:
    """Start the connectors, run the interleaved rounds, print the tables."""
    work = Path(tempfile.mkdtemp(prefix="connector-saturation."))
    finished = False
    connectors: list[Connector] = []
    try:
        if opts.versus is not None:
            for store in opts.store:
                versus = opts.versus.resolve()
                connectors.append(await start_ours(f"versus-{store}", store, work, opts, versus))
        elif not opts.no_js:
            connectors.append(await start_js(work))
        for store in opts.store:
            connectors.append(await start_ours(f"ours-{store}", store, work, opts, None))
        for connector in connectors:
            await connect(connector)

        def baseline_of(name: str) -> str:
            if name.startswith("ours-"):
                if opts.versus is not None:
                    return "versus-" + name.removeprefix("ours-")
                return "ilp-connector"
            return name

        rows: dict[tuple[str, str, int], list[RunResult]] = {}
        load_averages: list[str] = []
        for round_ in range(-opts.warmup_runs, opts.runs):
            load_averages.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
            for packet in opts.packet:
                for concurrency in opts.concurrency:
                    order = list(connectors)
                    shift = round_ % len(order)
                    order = order[shift:] + order[:shift]
                    if round_ % 2:
                        order.reverse()
                    for connector in order:
                        count = opts.count if round_ >= 0 else max(opts.count // 2, 10)
                        result = await feed_once(connector, packet, count, concurrency, opts)
                        tag = "warm-up" if round_ < 0 else f"run {round_ + 1}"
                        print(
                            f"{tag} {packet} c{concurrency} {connector.name}: "
                            f"{result.packets_per_s:.0f} packets/s, connector "
                            f"{result.connector_ms_per_packet:.3f} CPU ms/packet, driver "
                            f"{result.driver_ms_per_packet:.3f}; fulfilled "
                            f"{result.fulfilled}/{result.packets} forwarded {result.forwarded} "
                            f"{result.rejects or ''}",
                            file=sys.stderr,
                            flush=True,
                        )
                        if not result.exact:
                            raise SystemExit(f"{connector.name}: not exact: {result}")
                        if round_ >= 0:
                            rows.setdefault((packet, connector.name, concurrency), []).append(
                                result
                            )
        print(report(rows, baseline_of, load_averages[opts.warmup_runs :]))
        if opts.json:
            text = json.dumps(
                {f"{p}/{n}/{c}": [r.__dict__ for r in res] for (p, n, c), res in rows.items()},
                indent=1,
            )
            await asyncio.to_thread(Path(opts.json).write_text, text)
        finished = True
        return 0
    finally:
        for connector in reversed(connectors):
            if connector.driver is not None:
                for link in (connector.driver.sender, connector.driver.receiver):
                    if link.ws.transport is not None:
                        link.ws.transport.close()
            with contextlib.suppress(ProcessLookupError):  # a profiler writes on its exit
                os.kill(connector.pid, signal.SIGTERM)
        for connector in reversed(connectors):
            try:
                connector.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                connector.proc.kill()
        if finished:  # keep the connectors' logs when something went wrong
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="recorded rounds (default 6)")
    parser.add_argument("--count", type=int, default=20_000, help="Prepares per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--packet", nargs="+", choices=PACKETS, default=["psk2"])
    parser.add_argument(
        "--store", nargs="+", choices=STORES, default=["sqlite"], help="our connector's stores"
    )
    parser.add_argument("--amount", type=int, default=1000, help="amount of every Prepare")
    parser.add_argument("--data-size", type=int, default=0, help="data bytes of plain Prepares")
    parser.add_argument("--warmup-runs", type=int, default=1, help="unrecorded rounds first")
    parser.add_argument(
        "--versus",
        type=Path,
        default=None,
        help="another checkout of this project to run instead of ilp-connector",
    )
    parser.add_argument("--no-js", action="store_true", help="our connectors only")
    parser.add_argument(
        "--wrap-ours",
        default=None,
        metavar="PREFIX",
        help="run our connectors as PREFIX python -m ilp_receiver connector ..., e.g. "
        "'py-spy record -f raw -o /tmp/{name}.txt --' ({name}: the connector's name)",
    )
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
