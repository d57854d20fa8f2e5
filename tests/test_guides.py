"""Every code block of ``docs/guide-*.md`` runs as written, against the bundled connector.

The guides follow three conventions, so that a reader can copy them verbatim and this
test can run them:

* a ``python`` or ``toml`` block whose first line is ``# file: PATH`` is the file PATH;
  ``# add to: PATH`` appends the block to PATH (a file an earlier step made);
* ``sh`` blocks run in order, with bash, in the guide's directory.  ``pip install``
  lines are only checked (the extra they name exists; the test environment has it).  A
  block whose last line ends with the comment ``# serves http://HOST:PORT`` or
  ``# listens on HOST:PORT`` starts something that keeps running (the connector, the
  app): it runs in the background, the test waits for the port, and stops it at the
  end.  Every other block must exit 0 -- ``ilp-receiver fetch`` does only when it got
  the paid answer, after paying the ``402`` through the connector;
* nothing else: no block is skipped.

The one change the test makes: the ports ``7768`` and ``8000`` become free ports (so
that tests can run beside anything else on the machine).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = sorted(DOCS.glob("guide-*.md"))
FRAMEWORKS = {"flask", "starlette", "fastapi", "django", "aiohttp"}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FILE_LINE = re.compile(r"^# (file|add to): (\S+)\n")
BACKGROUND = re.compile(r"#\s*(?:serves\s+https?://|listens on\s+)[^\s:]+:(\d+)\s*$")
PORTS = ("7768", "8000")


@dataclass(frozen=True)
class Block:
    language: str
    text: str


def blocks(guide: Path) -> list[Block]:
    return [Block(m.group(1), m.group(2)) for m in BLOCK.finditer(guide.read_text())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} before listening:\n{tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port} after 60 s:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


class Runner:
    """Runs one guide's blocks in a directory, with its background processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = environment()
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.ports = {port: str(free_port()) for port in PORTS}
        self.outputs: list[str] = []

    def localize(self, text: str) -> str:
        for old, new in self.ports.items():
            text = re.sub(rf"(?<!\d){old}(?!\d)", new, text)
        return text

    def run(self, block: Block) -> None:
        text = self.localize(block.text)
        if block.language in ("python", "toml"):
            self.write(text)
        elif block.language == "sh":
            self.shell(text)
        else:
            pytest.fail(f"a ```{block.language} block: the guides use python, toml and sh")

    def write(self, text: str) -> None:
        match = FILE_LINE.match(text)
        assert match, f"a code block must start with '# file: PATH' or '# add to: PATH':\n{text}"
        kind, name = match.groups()
        path = self.directory / name
        if kind == "add to":
            assert path.exists(), f"'# add to: {name}' but no earlier step made it"
            with path.open("a") as f:
                f.write("\n" + text)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def shell(self, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        if all(line.startswith("pip install") for line in lines):
            for line in lines:
                for extra in re.findall(r"ilp-receiver\[([\w,]+)\]", line):
                    assert set(extra.split(",")) <= extras(), line
            return
        background = BACKGROUND.search(lines[-1])
        if background is not None:
            port = int(background.group(1))
            log = self.directory / f"background-{len(self.background)}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    ["bash", "-euc", text],
                    cwd=self.directory,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.background.append((process, log))
            wait_for_port(port, process, log)
            return
        result = subprocess.run(
            ["bash", "-euc", text],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        logs = "\n".join(f"--- {log.name}\n{tail(log)}" for _, log in self.background)
        assert result.returncode == 0, (
            f"{text}\nexited with {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
            f"stderr:\n{result.stderr[-3000:]}\n{logs}"
        )
        if "ilp-receiver fetch" in text:
            self.outputs.append(result.stdout)

    def close(self) -> None:
        for process, _ in reversed(self.background):
            with _quiet():
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in reversed(self.background):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with _quiet():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path)
    yield r
    r.close()


def test_every_framework_has_a_guide() -> None:
    assert {g.stem.removeprefix("guide-") for g in GUIDES} == FRAMEWORKS


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.stem)
def test_guide_runs_as_written(guide: Path, runner: Runner) -> None:
    found = blocks(guide)
    assert found, guide
    for block in found:
        runner.run(block)
    # the guide paid for something, and every fetch printed the paid answer
    assert runner.outputs, "no block pays for anything"
    for output in runner.outputs:
        assert output.strip(), "a fetch printed nothing"
