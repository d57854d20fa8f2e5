"""Starting, watching and stopping the processes of an interop test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


class Proc:
    """A child process whose stdout JSON lines are collected in the background."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        full_env = dict(os.environ)
        full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
        if env:
            full_env.update(env)
        self.args = args
        self.log = log
        self._stderr = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
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
                self.lines.append(json.loads(line))
            except ValueError:
                continue

    def wait_event(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The first stdout JSON line with ``"event": event``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            if self.popen.poll() is not None:
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

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and reap the process."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._stderr.close()


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


def run_json(args: list[str], cwd: Path, timeout: float = 180) -> dict[str, Any]:
    """Run a command that prints one JSON result line; return it."""
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{args[:3]} printed no JSON (exit {result.returncode}):\n{result.stderr[-3000:]}"
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed
