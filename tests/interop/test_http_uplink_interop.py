"""Our ILP-over-HTTP link against the JavaScript connector's ilp-plugin-http 1.6.1 account.

``node connector.js --http-account myrecv,P3,http://127.0.0.1:P4/,secret`` listens on P3
and POSTs Prepares to P4 with ``Authorization: Bearer secret``; our link listens on P4 and
POSTs to P3. IL-DCP over that link must give ``test.harness.myrecv``; then our receiver
CLI on the HTTP uplink is paid by the JS sender through the connector.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from ilp_receiver.links.http import HttpSyncLink
from ilp_receiver.uplink import fetch_peer_config

pytestmark = pytest.mark.interop

BIN = Path(sys.executable).parent
BASE = 19700
RECEIVERS_PORT, SENDER_PORT, HTTP_ACCOUNT_PORT, OUR_PORT, SPSP_PORT = (
    BASE + 1,
    BASE + 2,
    BASE + 3,
    BASE + 4,
    BASE + 5,
)
TOKEN = "secret"
UPLINK_URL = f"http+oer://{TOKEN}@127.0.0.1:{HTTP_ACCOUNT_PORT}/?listen=127.0.0.1:{OUR_PORT}"


class Process:
    """A child process whose stdout JSON lines are read by a thread."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        self.log = log
        self._stderr = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The first JSON line with ``"event": event`` (fails after ``timeout`` s)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                pytest.fail(f"no {event!r} event; log:\n{self.log.read_text()[-3000:]}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("event") == event:
                    return message

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; always reaps the child."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()


@pytest.fixture(scope="module")
def connector(harness: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log = tmp_path_factory.mktemp("http-uplink") / "connector.log"
    process = Process(
        [
            "node",
            "connector.js",
            "--receivers-port",
            str(RECEIVERS_PORT),
            "--sender-port",
            str(SENDER_PORT),
            "--http-account",
            f"myrecv,{HTTP_ACCOUNT_PORT},http://127.0.0.1:{OUR_PORT}/,{TOKEN}",
            "--max-runtime",
            "600",
        ],
        harness,
        log,
    )
    try:
        yield process.wait_event("ready", 60)
    finally:
        process.stop()


async def test_ildcp_over_ilp_over_http(connector: dict[str, Any]) -> None:
    assert connector["accounts"]["myrecv"]["address"] == "test.harness.myrecv"
    link = HttpSyncLink(
        f"http://127.0.0.1:{HTTP_ACCOUNT_PORT}/",
        token=TOKEN,
        listen_port=OUR_PORT,
        peer_name="pytest",
    )
    await link.start()
    try:
        config = await fetch_peer_config(link)
    finally:
        await link.stop()
    assert config.address == "test.harness.myrecv"
    assert (config.asset_code, config.asset_scale) == ("XYZ", 9)


async def test_wrong_token_is_refused_by_the_connector(connector: dict[str, Any]) -> None:
    from ilp_receiver.errors import AuthenticationError

    link = HttpSyncLink(f"http://127.0.0.1:{HTTP_ACCOUNT_PORT}/", token="not-the-token")
    await link.start()
    try:
        with pytest.raises(AuthenticationError):
            await fetch_peer_config(link)
    finally:
        await link.stop()


def test_js_sender_pays_our_receiver_over_the_http_uplink(
    connector: dict[str, Any], harness: Path, tmp_path: Path
) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    receiver = Process(
        [
            str(BIN / "ilp-receiver"),
            "receive",
            "--uplink",
            UPLINK_URL,
            "--port",
            str(SPSP_PORT),
            "--store",
            str(tmp_path / "receiver.sqlite3"),
            "--secret-file",
            str(tmp_path / "receiver.secret"),
        ],
        tmp_path,
        tmp_path / "receiver.log",
        env,
    )
    try:
        ready = receiver.wait_event("ready", 60)
        assert ready["ilp_address"] == "test.harness.myrecv"
        result = subprocess.run(
            [
                "node",
                "sender.js",
                "single",
                "--receiver",
                f"http://127.0.0.1:{SPSP_PORT}/.well-known/pay",
                "--btp-url",
                f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}",
                "--amount",
                "1000",
                "--timeout",
                "60",
            ],
            cwd=harness,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert lines, f"sender printed no result:\n{result.stdout}\n{result.stderr[-3000:]}"
        report = json.loads(lines[-1])
        assert report["ok"] is True, (
            f"{json.dumps(report, indent=1)[:3000]}\nreceiver log:\n"
            f"{receiver.log.read_text()[-3000:]}"
        )
        assert result.returncode == 0
    finally:
        receiver.stop()
