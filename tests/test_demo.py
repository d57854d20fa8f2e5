"""``ilp-receiver demo --once`` runs the whole path and exits 0."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def facts(output: str, step: str) -> dict[str, object]:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"[{step}]"))
    parsed: dict[str, object] = json.loads(lines[index + 1])
    return parsed


def test_demo_once_walks_through_every_step(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = subprocess.run(
        [str(BIN / "ilp-receiver"), "demo", "--once", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.rstrip().endswith("demo complete")
    paid = facts(run.stdout, "3/5")
    assert paid["delivered"] == 5000
    assert paid["pointer_balance_after"] == paid["pointer_balance_before"] + 5000  # type: ignore[operator]
    api = facts(run.stdout, "4/5")
    assert api["paid"] == 100 and api["pay_balance"] == 0
    prepaid = facts(run.stdout, "5/5")
    assert prepaid == {"paid_again": False, "pay_balance": 200, "status": 200}
    assert (state / "site.sqlite3").is_file()

    # state is kept: a second run starts from the first run's pointer balance
    second = subprocess.run(
        [str(BIN / "ilp-receiver"), "demo", "--once", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert facts(second.stdout, "3/5")["pointer_balance_before"] == 5000


ROOT = Path(__file__).resolve().parent.parent


def shell_env() -> dict[str, str]:
    """The environment of a shell the README leaves you in: the virtualenv not activated."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    parts = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in parts if Path(p).resolve() != BIN.resolve())
    return env


@pytest.fixture
def serving_demo(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[dict[str, str], Path]]:
    """``ilp-receiver demo`` started from the repository root as the README's first
    command leaves it; yields the commands it printed (by name) and its stderr log.
    Parametrized indirectly, the parameter is its ``--pay-method``."""
    log = tmp_path / "demo.log"
    method = getattr(request, "param", None)
    options = [] if method is None else ["--pay-method", method]
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "ilp-receiver"), "demo", "--state-dir", str(tmp_path / "state"), *options],
            cwd=ROOT,
            env=shell_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        stdout = proc.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for text in stdout:
                lines.put(text)

        threading.Thread(target=read, daemon=True).start()
        printed: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while "fetch" not in printed and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            for name in ("query", "pay", "fetch"):
                if line.strip().startswith(f"{name} it:"):
                    printed[name] = line.split(":", 1)[1].strip()
            if "units of XYZ at scale 9" in line:
                printed["units"] = line
        assert set(printed) == {"query", "pay", "fetch", "units"}, log.read_text()[-3000:]
        yield printed, log
    finally:
        proc.terminate()
        proc.wait(20)


def run_printed(command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a command line the demo printed, as printed, from the directory it ran in."""
    line = command + "".join(f" {shlex.quote(a)}" for a in extra)
    return subprocess.run(
        ["bash", "-c", line],
        cwd=ROOT,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_commands_the_demo_prints_run_as_printed(
    serving_demo: tuple[dict[str, str], Path],
) -> None:
    printed, log = serving_demo
    assert "1 XYZ = 1000000000 units" in printed["units"]
    # not `ilp-receiver ...`: the virtualenv is not activated in the README's shell
    assert printed["query"].startswith(".venv/bin/ilp-receiver query '$127.0.0.1:")
    pointer = shlex.split(printed["query"])[2]
    assert pointer in printed["pay"]

    query = run_printed(printed["query"])
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["asset_info"] == {"code": "XYZ", "scale": 9}

    paid = run_printed(printed["pay"])
    assert paid.returncode == 0, paid.stdout + paid.stderr
    report = json.loads(paid.stdout)
    assert report["ok"] is True and report["delivered_amount"] == "1000"
    balance = int(report["pointer_balance"])
    # PSK2 too, to the exact pointer string
    psk2 = run_printed(printed["pay"], "--protocol", "psk2")
    assert psk2.returncode == 0, psk2.stdout + psk2.stderr
    assert json.loads(psk2.stdout)["pointer_balance"] == str(balance + 1000)

    fetched = run_printed(printed["fetch"])
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "fortune" in json.loads(fetched.stdout)
    assert "paid 100" in fetched.stderr

    # the demo logged every payment that arrived from outside
    said = log.read_text()
    payments = [line for line in said.splitlines() if "payment received" in line]
    assert any("1000 units" in p and "over stream" in p for p in payments), said[-3000:]
    assert any("1000 units" in p and "over psk2" in p for p in payments), said[-3000:]
    assert any("100 units" in p and "token:" in p for p in payments), said[-3000:]


@pytest.mark.parametrize("serving_demo", ["stream", "psk2"], indirect=True)
def test_the_demo_fetch_pays_what_the_paid_api_offers(
    serving_demo: tuple[dict[str, str], Path], request: pytest.FixtureRequest
) -> None:
    import httpx

    from ilp_receiver.codec.pay_header import parse_pay_header

    printed, _ = serving_demo
    expected = request.node.callspec.params["serving_demo"]
    url = shlex.split(printed["fetch"])[2]
    offered = parse_pay_header(httpx.get(url).headers["Pay"]).method
    assert offered == f"interledger-{expected}"
    fetched = run_printed(printed["fetch"], "-i")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    head, _, body = fetched.stdout.partition("\n\n")  # text mode: CRLF read as LF
    assert head.startswith("HTTP/1.1 200 OK")
    assert "Ilp-Receiver-Payment: delivered=100; sent=" in head
    assert f"protocol={expected};" in head
    assert "fortune" in json.loads(body)
    # the pointer form of the URL works too
    pointer_url = "$" + url.split("://", 1)[1]
    again = run_printed(printed["fetch"].replace(shlex.quote(url), shlex.quote(pointer_url)))
    assert again.returncode == 0, again.stderr


def test_the_demo_connector_requires_the_printed_credentials_and_limits(
    serving_demo: tuple[dict[str, str], Path],
) -> None:
    printed, _ = serving_demo
    words = shlex.split(printed["pay"])
    uplink = words[words.index("--uplink") + 1]
    user, _, rest = uplink.partition("//")[2].partition(":")
    token = rest.split("@", 1)[0]
    pointer = words[2]
    for wrong in (uplink.replace(token, "not-the-token"), uplink.replace(user, "someone")):
        refused = run_printed(
            f".venv/bin/ilp-receiver pay {shlex.quote(pointer)} 1000 --uplink {shlex.quote(wrong)}"
        )
        assert refused.returncode == 1
        assert "cannot connect the uplink" in json.loads(refused.stdout)["error"]["message"]
    # a packet above the account's limit is refused (F08)
    big = run_printed(printed["pay"].replace(" 1000 ", " 100000000 "), "--protocol", "psk2")
    assert big.returncode == 1
    assert json.loads(big.stdout)["error"]["code"] == "F08"


def test_python_dash_m_runs_the_cli() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ilp_receiver", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and run.stdout.startswith("ilp-receiver ")
