"""Our receiver against the JavaScript reference receiver, interleaved (A B A B ...).

One JS connector (``.interop/connector.js``), the JS reference receiver and ours
(``ilp-receiver receive``) as two BTP children; the JS sender (``sender.js bench``) pays
each in turn, run after run, at every concurrency, so both see the same machine
conditions.  For each run it records packets/s and the CPU milliseconds per packet of the
receiver process (user + system ticks from ``/proc/PID/stat``), and prints a markdown
table of medians and the per-run ratios ours/JS.

    python bench/receiver_ab.py --runs 5 --count 4000 --concurrency 10 50

The first ``--warmup-runs`` rounds (default 1, half the count) are not recorded.

``--versus DIR`` puts another checkout of this project (its root directory, e.g. a
``git worktree`` of an older commit) in the JavaScript receiver's slot, to measure a
change of ours against the version before it in the same interleaved way; the table
then calls it ``js``.

``--webhooks outbox`` gives our receiver a webhook endpoint (a counting HTTP server in
this process) with ``ILP_RECEIVER_WEBHOOK_DISPATCH=false``: every credit writes its
outbox event, nothing is delivered (the cost of the write, on the group commit).
``--webhooks dispatch`` also delivers them from the receiver process, signed (Ed25519);
each run of ours then waits until the deliveries stop before reading its CPU time, so
the dispatcher's work is counted with the packets that caused it.  With ``--versus``
the same checkout without the flag, this measures webhooks on against off.

Needs the harness installed in ``.interop/`` (the interop tests do that).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / ".interop"
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks used so far by ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a process and wait for its ``{"event":"ready"}`` line."""
    proc = subprocess.Popen(
        args,
        cwd=HARNESS,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if '"event":"ready"' in line.replace(" ", ""):
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"{args[0]} did not get ready; see {log}")


def receive_command(
    username: str, connector_port: int, port: int, store: str, secret_file: Path
) -> list[str]:
    """``ilp-receiver receive`` as a BTP child ``username`` of the connector."""
    return [
        str(BIN / "ilp-receiver"),
        "receive",
        "--uplink",
        f"btp+ws://{username}:tok@127.0.0.1:{connector_port}",
        "--port",
        str(port),
        "--store",
        store,
        "--secret-file",
        str(secret_file),
    ]


class Sink:
    """A webhook endpoint that counts POSTs (answers 204), in a thread of this process."""

    def __init__(self) -> None:
        self.posts = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.posts += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def settle(self) -> None:
        """Wait until no POST arrived for half a second."""
        last = -1
        while self.posts != last:
            last = self.posts
            time.sleep(0.5)


def bench(
    url: str,
    pid: int,
    concurrency: int,
    count: int,
    sender_btp: str,
    settle: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One ``sender.js bench`` run; adds the receiver's CPU ms per packet (after
    ``settle()``, when given: the receiver's deliveries caused by the run)."""
    before = cpu_ticks(pid)
    out = subprocess.run(
        [
            "node",
            "sender.js",
            "bench",
            "--receiver",
            url,
            "--btp-url",
            sender_btp,
            "--amount",
            "1000",
            "--count",
            str(count),
            "--concurrency",
            str(concurrency),
            "--warmup",
            "200",
            "--max-seconds",
            "60",
            "--timeout",
            "150",
        ],
        cwd=HARNESS,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if settle is not None:
        settle()
    after = cpu_ticks(pid)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    packets = (result.get("warmup") or {}).get("fulfilled", 0) + result["fulfilled"]
    packets += result["rejected"]
    result["cpu_ms_per_packet"] = (after - before) * 1000 / CLK_TCK / max(packets, 1)
    return result


def main() -> None:
    """Run the interleaved comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--base-port", type=int, default=23700)
    parser.add_argument(
        "--store", default=None, help="our receiver's store (default: a SQLite file)"
    )
    parser.add_argument(
        "--warmup-runs", type=int, default=1, help="unrecorded runs first (JIT, caches)"
    )
    parser.add_argument(
        "--versus",
        type=Path,
        default=None,
        help="another checkout of this project to run instead of the JS receiver",
    )
    parser.add_argument(
        "--webhooks",
        choices=("off", "outbox", "dispatch"),
        default="off",
        help="our receiver writes webhook events (outbox) and delivers them (dispatch)",
    )
    opts = parser.parse_args()
    sink = Sink() if opts.webhooks != "off" else None
    ours_env: dict[str, str] = {}
    if sink is not None:
        from ilp_receiver.webhooks import generate_ed25519_key

        ours_env["ILP_RECEIVER_WEBHOOK_URL"] = sink.url
        if opts.webhooks == "dispatch":
            ours_env["ILP_RECEIVER_WEBHOOK_KEY"] = generate_ed25519_key()[0]
        else:
            ours_env["ILP_RECEIVER_WEBHOOK_DISPATCH"] = "false"
    port = opts.base_port
    work = Path(tempfile.mkdtemp(prefix="receiver-ab."))
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(
            start(
                [
                    "node",
                    "connector.js",
                    "--receivers-port",
                    str(port),
                    "--sender-port",
                    str(port + 1),
                    "--max-runtime",
                    "3600",
                ],
                work / "connector.err",
            )
        )
        if opts.versus is None:
            js = start(
                [
                    "node",
                    "js-receiver.js",
                    "--btp-url",
                    f"btp+ws://jsreceiver:tok@127.0.0.1:{port}",
                    "--spsp-port",
                    str(port + 2),
                    "--max-runtime",
                    "3600",
                ],
                work / "js-receiver.err",
            )
        else:  # our receiver from another checkout, in the same slot
            versus_store = "memory:" if opts.store == "memory:" else str(work / "versus.sqlite3")
            js = start(
                receive_command("jsreceiver", port, port + 2, versus_store, work / "versus.secret"),
                work / "versus.err",
                env={"PYTHONPATH": str(opts.versus.resolve())},
            )
        procs.append(js)
        ours = start(
            receive_command(
                "ours",
                port,
                port + 3,
                opts.store or str(work / "receiver.sqlite3"),
                work / "receiver.secret",
            ),
            work / "ours.err",
            env=ours_env,
        )
        procs.append(ours)
        settle = sink.settle if sink is not None and opts.webhooks == "dispatch" else None
        sender = f"btp+ws://:sender-token@127.0.0.1:{port + 1}"
        targets = {
            "js": (f"http://127.0.0.1:{port + 2}/.well-known/pay", js.pid),
            "ours": (f"http://127.0.0.1:{port + 3}/.well-known/pay", ours.pid),
        }
        rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(opts.warmup_runs):
            for concurrency in opts.concurrency:
                for name, (url, pid) in targets.items():
                    wait = settle if name == "ours" else None
                    bench(url, pid, concurrency, opts.count // 2, sender, wait)
        for run in range(opts.runs):
            for concurrency in opts.concurrency:
                order = ("js", "ours") if run % 2 == 0 else ("ours", "js")
                for name in order:
                    url, pid = targets[name]
                    result = bench(
                        url,
                        pid,
                        concurrency,
                        opts.count,
                        sender,
                        settle if name == "ours" else None,
                    )
                    assert result["ok"], result
                    rows.setdefault((name, concurrency), []).append(result)
                    print(
                        f"run {run + 1} c{concurrency} {name}: "
                        f"{result['packets_per_s']:.0f} packets/s, "
                        f"{result['cpu_ms_per_packet']:.3f} CPU ms/packet",
                        file=sys.stderr,
                    )
        print("| concurrency | receiver | packets/s median (runs) | CPU ms/packet median (runs) |")
        print("|---|---|---|---|")
        for concurrency in opts.concurrency:
            for name in ("js", "ours"):
                results = rows[(name, concurrency)]
                pps = [r["packets_per_s"] for r in results]
                cpu = [r["cpu_ms_per_packet"] for r in results]
                print(
                    f"| {concurrency} | {name} | {statistics.median(pps):.0f} "
                    f"({', '.join(f'{p:.0f}' for p in pps)}) | {statistics.median(cpu):.3f} "
                    f"({', '.join(f'{c:.3f}' for c in cpu)}) |"
                )
        print()
        print(
            "| concurrency | ours/JS packets/s (median of per-run ratios) | ours/JS CPU ms/packet |"
        )
        print("|---|---|---|")
        for concurrency in opts.concurrency:
            js_runs, our_runs = rows[("js", concurrency)], rows[("ours", concurrency)]
            pps_ratio = [
                o["packets_per_s"] / j["packets_per_s"]
                for o, j in zip(our_runs, js_runs, strict=True)
            ]
            cpu_ratio = [
                o["cpu_ms_per_packet"] / j["cpu_ms_per_packet"]
                for o, j in zip(our_runs, js_runs, strict=True)
            ]
            print(
                f"| {concurrency} | {statistics.median(pps_ratio):.2f} | "
                f"{statistics.median(cpu_ratio):.2f} |"
            )
        if sink is not None:
            print(f"\nwebhook POSTs received: {sink.posts}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
