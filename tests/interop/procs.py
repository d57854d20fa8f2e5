"""Starting, watching and stopping the processes of an interop test.

Every interop file starts its processes with these helpers; each keeps its own fixed
ports, so files never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def child_env(drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment with our ``bin`` first on PATH.

    Variables whose names start with one of ``drop`` are left out.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def js_connector(receivers_port: int, sender_port: int, *options: str) -> list[str]:
    """The JS reference connector's command line (run it in the harness directory)."""
    ports = ["--receivers-port", str(receivers_port), "--sender-port", str(sender_port)]
    return ["node", "connector.js", *ports, *options]


def our_receiver(uplink: str, port: int, state: Path) -> list[str]:
    """Our receiver CLI's command line; its SQLite store and secret file live in ``state``."""
    return [
        str(BIN / "ilp-receiver"),
        "receive",
        "--uplink",
        uplink,
        "--port",
        str(port),
        "--store",
        str(state / "receiver.sqlite3"),
        "--secret-file",
        str(state / "receiver.secret"),
    ]


class Proc:
    """A child process whose stdout JSON lines are collected in the background.

    ``env`` is the child's whole environment (default :func:`child_env`); its stderr
    goes to ``log``.
    """

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log = log
        self._stderr = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=child_env() if env is None else env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self.lines.append(message)

    def wait_event(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The first stdout JSON line with ``"event": event``."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll() is not None
            if exited:
                self._reader.join(5)  # read what it printed before it exited
            for line in self.lines:
                if line.get("event") == event:
                    return line
            if exited or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.args[:3]} did not print event {event!r}; "
            f"exit={self.popen.poll()} log tail:\n{self.tail()}"
        )

    def tail(self, chars: int = 3000) -> str:
        """The end of the process's stderr log."""
        self._stderr.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def send(self, sig: int) -> None:
        """Send ``sig`` if the process still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def reap(self) -> None:
        """Wait for the process (SIGKILL after 10 s) and close its log."""
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._stderr.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and reap the process."""
        self.send(sig)
        self.reap()


class Procs:
    """The processes of one test or fixture; :meth:`stop_all` stops every one.

    Each logs its stderr to ``<logs>/<name>.log``; ``env`` as for :class:`Proc`.
    """

    def __init__(self, logs: Path, env: dict[str, str] | None = None) -> None:
        self.logs = logs
        self.env = env
        self.started: list[Proc] = []

    def start(self, name: str, args: list[str], cwd: Path, timeout: float = 60) -> Proc:
        """Start ``args`` and wait (up to ``timeout`` s) for its ``ready`` event."""
        proc = Proc(args, cwd, self.logs / f"{name}.log", self.env)
        self.started.append(proc)
        proc.wait_event("ready", timeout)
        return proc

    def stop_all(self) -> None:
        """SIGTERM to every process still running, then reap them all."""
        for proc in reversed(self.started):
            proc.send(signal.SIGTERM)
        for proc in reversed(self.started):
            proc.reap()


@contextlib.contextmanager
def started(logs: Path, env: dict[str, str] | None = None) -> Iterator[Procs]:
    """A :class:`Procs` whose processes are all stopped when the block ends."""
    procs = Procs(logs, env)
    try:
        yield procs
    finally:
        procs.stop_all()


def http_json(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> Any:
    """GET ``url`` and parse the JSON body."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def http_status(url: str, timeout: float = 2) -> int:
    """The status of GET ``url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@dataclass(frozen=True)
class JsonRun:
    """A finished command: its exit code, stderr and parsed JSON stdout lines."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    @property
    def last(self) -> dict[str, Any]:
        """The last JSON line (the result of the harness's scripts)."""
        return self.lines[-1]


def run_json_lines(
    args: list[str], cwd: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> JsonRun:
    """Run a command that prints JSON lines (at least one); ``env`` None inherits ours."""
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{args[:3]} printed no JSON (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return JsonRun(result.returncode, [json.loads(line) for line in lines], result.stderr)


def js_pay(
    harness: Path,
    receiver_url: str,
    btp_url: str,
    amount: int = 1000,
    *,
    sender_timeout: int | None = None,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> JsonRun:
    """One payment by the JS reference sender (``node sender.js single``).

    ``sender_timeout``: its ``--timeout`` (None: its default); ``timeout``, ``env`` as
    for :func:`run_json_lines`.
    """
    args = ["node", "sender.js", "single", "--receiver", receiver_url, "--btp-url", btp_url]
    args += ["--amount", str(amount)]
    if sender_timeout is not None:
        args += ["--timeout", str(sender_timeout)]
    return run_json_lines(args, harness, timeout, env)
