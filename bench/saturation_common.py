"""What the saturation drivers share: process CPU from /proc, WebSocket framing, starting
a process that prints a ``ready`` line, and the medians and ratios of the reports.

``bench/receiver_saturation.py`` (the driver plays a receiver's parent) and
``bench/connector_saturation.py`` (the driver is a connector's sender and receiver) both
import it; it is not a script of its own.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks used so far by ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def ws_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked binary WebSocket frame (server to client, RFC 6455)."""
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return struct.pack(">BBH", 0x82, 126, n) + payload
    return struct.pack(">BBQ", 0x82, 127, n) + payload


def ws_client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """``payload`` as one masked WebSocket frame (client to server, RFC 6455 5.3).

    The masking key is four zero bytes, so the payload goes out unchanged and a frame can
    be encoded once, before a timed window, and written many times; servers check that
    the mask bit is set, not what the key is.
    """
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        return bytes((head, 0x80 | n, 0, 0, 0, 0)) + payload
    if n < 65536:
        return struct.pack(">BBHI", head, 0x80 | 126, n, 0) + payload
    return struct.pack(">BBQI", head, 0x80 | 127, n, 0) + payload


def length_prefix(buf: bytes, pos: int) -> tuple[int, int]:
    """An OER length prefix at ``pos``: (length, position after the prefix)."""
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def wrapped_pid(pid: int) -> int:
    """The process ``pid`` runs (a profiler's child), or ``pid`` when it has none."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[-1]) if children else pid


def start_process(
    args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a process that prints a ``{"event":"ready"}`` line; wait for it and return
    the process and that line."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if '"event":"ready"' in line.replace(" ", ""):
            ready: dict[str, Any] = json.loads(line)
            return proc, ready
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"{args[0]} did not get ready; see {log}")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def ratios(pairs: Iterable[tuple[float, float]]) -> list[float]:
    """``a / b`` for each pair whose ``b`` is not zero (a run too short for the kernel's
    10 ms CPU ticks measures 0 ms; its ratio is unknown, not infinite)."""
    return [a / b for a, b in pairs if b]


@dataclass
class TimedRun:
    """What both drivers measure of a run (their ``RunResult`` adds the measured
    process's CPU and the checks): ``packets`` answered in ``seconds``, and the driver's
    own CPU over the window."""

    packets: int
    seconds: float
    driver_cpu_ms: float

    @property
    def packets_per_s(self) -> float:
        """Answers per second over the window."""
        return self.packets / self.seconds

    @property
    def driver_ms_per_packet(self) -> float:
        """Driver CPU per packet (ms)."""
        return self.driver_cpu_ms / self.packets

    @property
    def exact(self) -> bool:
        """Whether every packet came back as it should (each driver says what that is)."""
        raise NotImplementedError


R = TypeVar("R", bound=TimedRun)


def markdown_report(
    rows: Mapping[tuple[str, str, int], Sequence[R]],
    baseline_of: Callable[[str], str],
    load_averages: list[str],
    *,
    kinds: Sequence[str],
    kind_label: str,
    target: str,
    target_ms: Callable[[R], float],
) -> str:
    """The markdown tables of a saturation run: medians per ``target`` process (rows
    keyed by (kind, name, concurrency), ``kind`` one of ``kinds`` headed ``kind_label``),
    then per-run ratios against each one's baseline; ``target_ms`` is a run's CPU ms per
    packet of the measured process."""
    lines = [
        f"| {kind_label} | concurrency | {target} | packets/s median (runs) | "
        f"{target} CPU ms/packet median (runs) | driver CPU ms/packet median | exact runs |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted(rows, key=lambda k: (kinds.index(k[0]), k[2], k[1]))
    for kind, name, concurrency in keys:
        results = rows[(kind, name, concurrency)]
        pps = [r.packets_per_s for r in results]
        cpu = [target_ms(r) for r in results]
        drv = [r.driver_ms_per_packet for r in results]
        exact = sum(r.exact for r in results)
        lines.append(
            f"| {kind} | {concurrency} | {name} | {median(pps):.0f} "
            f"({', '.join(f'{p:.0f}' for p in pps)}) | {median(cpu):.3f} "
            f"({', '.join(f'{c:.3f}' for c in cpu)}) | {median(drv):.3f} | "
            f"{exact}/{len(results)} |"
        )
    lines += [
        "",
        f"| {kind_label} | concurrency | {target} / baseline | packets/s ratio (median of "
        f"per-run ratios) | CPU ms/packet ratio | driver / {target} CPU (median) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, name, concurrency in keys:
        baseline = baseline_of(name)
        if baseline == name or (kind, baseline, concurrency) not in rows:
            continue
        ours = rows[(kind, name, concurrency)]
        base = rows[(kind, baseline, concurrency)]
        pairs = list(zip(ours, base, strict=True))
        pps_ratio = ratios((o.packets_per_s, b.packets_per_s) for o, b in pairs)
        cpu_ratio = ratios((target_ms(o), target_ms(b)) for o, b in pairs)
        driver_share = ratios((o.driver_ms_per_packet, target_ms(o)) for o in ours)
        lines.append(
            f"| {kind} | {concurrency} | {name} / {baseline} | {median(pps_ratio):.2f} | "
            f"**{median(cpu_ratio):.2f}** | {median(driver_share):.2f} |"
        )
    lines += [
        "",
        "Load average (1, 5, 15 min) at the start of each run: " + "; ".join(load_averages),
    ]
    return "\n".join(lines)
