"""Building blocks of the fleet tests (``test_fleet.py``) and ``bench/fleet.py``: shared
PostgreSQL / Redis stores with their own prefix, our connector, gunicorn workers of a
Flask app, ``ilp-receiver receive`` members, HAProxy in front of them, and the JS
sender's bench.

Everything listens on 127.0.0.1; every process is started through a
:class:`~tests.interop.procs.Procs` (stopped when the test ends) or, for HAProxy and
gunicorn (no JSON ``ready`` line), waited for on its port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import BIN, JsonRun, Proc, Procs, child_env, http_json, run_json_lines

ROOT = Path(__file__).resolve().parents[2]

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_URLS = (
    "postgresql://root@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/test",
)
ADMIN_TOKEN = "admin-token"


# -- stores ------------------------------------------------------------------------------


def store_url(kind: str, tag: str | None = None) -> str:
    """A Redis or PostgreSQL store URL with a fresh prefix (``?prefix=``)."""
    tag = tag or uuid.uuid4().hex[:10]
    if kind == "redis":
        return f"{REDIS_URL}?prefix=fleet-{tag}:"
    url = postgres_url()
    assert url is not None
    return f"{url}?prefix=fleet_{tag}_"


_pg: list[str | None] = []


def postgres_url() -> str | None:
    """The local PostgreSQL's URL (the user that can log in), or None."""
    if not _pg:
        import asyncpg  # type: ignore[import-untyped]

        async def probe() -> str | None:
            for url in POSTGRES_URLS:
                try:
                    conn = await asyncpg.connect(url, timeout=3)
                except Exception:
                    continue
                await conn.close()
                return url
            return None

        _pg.append(asyncio.run(probe()))
    return _pg[0]


def store_unavailable(kind: str) -> str | None:
    """Why the ``kind`` store cannot be used here, or None."""
    if kind == "postgres":
        return None if postgres_url() else "PostgreSQL is not reachable on 127.0.0.1:5432"
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return None
    except OSError as exc:
        return f"Redis is not reachable on 127.0.0.1:6379: {exc}"


def store_balances(url: str) -> dict[str, int]:
    """Every balance in the store at ``url``."""
    from ilp_receiver.stores import open_store

    async def read() -> dict[str, int]:
        async with open_store(url) as store:
            return await store.balances()

    return asyncio.run(read())


def store_total(url: str) -> int:
    """The sum of every balance in the store at ``url``."""
    return sum(store_balances(url).values())


def drop_store(url: str) -> None:
    """Remove everything stored under the URL's prefix."""
    from ilp_receiver.stores import _split_prefix

    base, prefix = _split_prefix(url)
    assert prefix

    async def drop() -> None:
        if base.startswith("redis"):
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(base)
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        else:
            import asyncpg

            conn = await asyncpg.connect(base)
            for table in ("balances", "idempotency", "meta"):
                await conn.execute(f'DROP TABLE IF EXISTS "{prefix}{table}"')
            await conn.close()

    asyncio.run(drop())


# -- ports and processes ------------------------------------------------------------------


def wait_port(port: int, timeout: float = 30, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(
                    f"the process for port {port} exited ({proc.returncode})"
                ) from None
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.05)


@dataclass
class Background:
    """A process without a JSON ready line (gunicorn, HAProxy), stopped by ``stop``."""

    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Fleet:
    """The processes of one fleet test; :meth:`stop` ends them all (by their ids)."""

    logs: Path
    procs: Procs = field(init=False)
    background: list[Background] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.procs = Procs(self.logs, child_env(drop=("HARNESS_", "ILP_")))

    def start(self, name: str, args: list[str], cwd: Path, timeout: float = 60) -> Proc:
        return self.procs.start(name, args, cwd, timeout)

    def spawn(self, name: str, args: list[str], cwd: Path, env: dict[str, str]) -> Background:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=out)
        bg = Background(popen, log)
        self.background.append(bg)
        return bg

    def stop(self) -> None:
        for bg in reversed(self.background):
            bg.stop()
        self.procs.stop_all()


# -- our connector ------------------------------------------------------------------------


def connector_toml(
    *,
    address: str,
    port: int,
    admin_port: int,
    store: str = "memory:",
    shared: bool = False,
    accounts: str,
) -> str:
    """A config for ``ilp-receiver connector``: one shared listener, the admin API."""
    store_line = f'store = "{store}"'
    return textwrap.dedent(
        f"""
        [connector]
        address = "{address}"
        {store_line}
        shared_balances = {"true" if shared else "false"}
        route_broadcast_enabled = false
        [server]
        port = {port}
        [admin]
        port = {admin_port}
        token = "{ADMIN_TOKEN}"
        """
    ) + textwrap.dedent(accounts)


def start_connector(fleet: Fleet, name: str, toml: str, cwd: Path) -> dict[str, Any]:
    path = fleet.logs / f"{name}.toml"
    path.write_text(toml)
    cmd = [str(BIN / "ilp-receiver"), "connector", "--config", str(path)]
    return fleet.start(name, cmd, cwd, timeout=30).wait_event("ready")


def admin(port: int, route: str) -> Any:
    return http_json(f"http://127.0.0.1:{port}/{route}", {"Authorization": f"Bearer {ADMIN_TOKEN}"})


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# -- gunicorn -----------------------------------------------------------------------------

APP = '''
"""The paid-API shape of the issue: a Flask app whose workers all receive on one uplink."""
import os

from flask import Flask, jsonify

from ilp_receiver.workers import worker_uplink
from ilp_receiver_flask import IlpReceiver

app = Flask(__name__)
uplink = os.environ["FLEET_UPLINK"]
distinct = bool(os.environ.get("FLEET_DISTINCT"))
app.config.update(
    # distinct names (``name-<worker>``) for connectors that keep one connection per
    # account; the bundled connector lets every worker use the same credentials
    ILP_RECEIVER_UPLINK=(lambda: worker_uplink(uplink)) if distinct else uplink,
    ILP_RECEIVER_SECRET=os.environ["FLEET_SECRET"],
    ILP_RECEIVER_STORE=os.environ["FLEET_STORE"],
)
ilp = IlpReceiver(app)


@app.get("/pid")
def pid():
    return jsonify(pid=os.getpid())
'''

GUNICORN_CONF = """
# every worker connects its uplink as soon as it runs, not on its first HTTP request
def post_worker_init(worker):
    import fleet_app

    fleet_app.ilp.start(fleet_app.app)
"""


def start_gunicorn(
    fleet: Fleet,
    workdir: Path,
    *,
    port: int,
    workers: int,
    uplink: str,
    store: str,
    secret: str,
    distinct: bool = False,
) -> Background:
    (workdir / "fleet_app.py").write_text(APP)
    (workdir / "gunicorn_conf.py").write_text(GUNICORN_CONF)
    env = child_env(drop=("HARNESS_", "ILP_"))
    env.update(
        PYTHONPATH=os.pathsep.join([str(workdir), str(ROOT), str(ROOT / "integrations")]),
        FLEET_UPLINK=uplink,
        FLEET_SECRET=secret,
        FLEET_STORE=store,
    )
    if distinct:
        env["FLEET_DISTINCT"] = "1"
    args = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
    args += ["-c", str(workdir / "gunicorn_conf.py"), "--log-level", "warning", "fleet_app:app"]
    bg = fleet.spawn("gunicorn", args, workdir, env)
    wait_port(port, proc=bg.popen)
    return bg


# -- receivers ----------------------------------------------------------------------------


def receive_cmd(uplink: str, port: int, store: str, secret_file: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "ilp-receiver"),
        "receive",
        "--uplink",
        uplink,
        "--port",
        str(port),
        "--store",
        store,
        "--secret-file",
        str(secret_file),
        *extra,
    ]


def shared_secret_file(workdir: Path) -> Path:
    path = workdir / "receiver.secret"
    if not path.exists():
        path.write_text(os.urandom(32).hex() + "\n")
        path.chmod(0o600)
    return path


# -- HAProxy ------------------------------------------------------------------------------


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


def haproxy_config(frontends: dict[int, tuple[list[int], str]], stats_port: int) -> str:
    """An HTTP load balancer: frontend port -> (member ports, health-check path); round
    robin over the members that answer ``GET <path>``; a stats page (``/stats;csv``)."""
    out = [
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    # a POST that reached a member is never sent again (ILP over HTTP is not",
        "    # idempotent); only a connection that failed is retried on another member",
        "    retries 2",
        "    option redispatch",
        "frontend stats",
        f"    bind 127.0.0.1:{stats_port}",
        "    stats enable",
        "    stats uri /stats",
    ]
    for port, (members, check) in frontends.items():
        out += [
            f"frontend f{port}",
            f"    bind 127.0.0.1:{port}",
            f"    default_backend b{port}",
            f"backend b{port}",
            "    balance roundrobin",
            f"    option httpchk GET {check}",
            "    http-check expect status 200",
        ]
        out += [
            f"    server m{member} 127.0.0.1:{member} check inter 500ms fall 2 rise 1"
            for member in members
        ]
    return "\n".join(out) + "\n"


def start_haproxy(fleet: Fleet, config: str, ports: list[int]) -> Background:
    binary = haproxy_binary()
    assert binary is not None
    path = fleet.logs / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    bg = fleet.spawn("haproxy", [binary, "-db", "-f", str(path)], fleet.logs, child_env())
    for port in ports:
        wait_port(port, proc=bg.popen)
    return bg


def haproxy_served(stats_port: int) -> dict[str, int]:
    """Requests each HAProxy server answered with a 2xx: ``{"backend/server": count}``."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=5) as r:
        rows = r.read().decode().splitlines()
    header = rows[0].lstrip("# ").split(",")
    out: dict[str, int] = {}
    for row in rows[1:]:
        cells = dict(zip(header, row.split(","), strict=False))
        if cells.get("svname") not in (None, "FRONTEND", "BACKEND") and cells.get("hrsp_2xx"):
            out[f"{cells['pxname']}/{cells['svname']}"] = int(cells["hrsp_2xx"])
    return out


def wait_haproxy_up(stats_port: int, members: int, timeout: float = 20) -> None:
    """Wait until ``members`` servers pass their health check."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=5) as r:
            rows = r.read().decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        up = 0
        for row in rows[1:]:
            cells = dict(zip(header, row.split(","), strict=False))
            if (
                cells.get("svname") not in (None, "FRONTEND", "BACKEND")
                and cells.get("status") == "UP"
            ):
                up += 1
        if up >= members:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{up} of {members} HAProxy servers are up")
        time.sleep(0.2)


# -- the JS sender --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """What ``sender.js bench`` reported."""

    fulfilled: int
    rejected: int
    reject_codes: dict[str, int]
    delivered: int
    packets_per_s: float
    raw: dict[str, Any]


def js_bench(
    harness: Path,
    spsp_url: str,
    *,
    seconds: float,
    concurrency: int,
    amount: int = 100,
    btp_url: str | None = None,
    http: tuple[int, str, str] | None = None,
    background: bool = False,
) -> Bench | subprocess.Popen[str]:
    """``sender.js bench`` for ``seconds`` at ``concurrency`` (no warm-up) over BTP
    (``btp_url``) or ILP over HTTP (``http``: our listen port, the connector URL, the
    token).  With ``background`` the running process is returned."""
    args = ["node", "sender.js", "bench", "--receiver", spsp_url, "--amount", str(amount)]
    args += ["--count", "10000000", "--concurrency", str(concurrency), "--warmup", "0"]
    args += ["--max-seconds", str(seconds), "--timeout", str(int(seconds) + 90)]
    if http is not None:
        listen, connector_url, token = http
        args += ["--uplink", "http", "--http-listen-port", str(listen)]
        args += ["--http-connector-url", connector_url, "--http-token", token]
    else:
        assert btp_url is not None
        args += ["--btp-url", btp_url]
    env = child_env(drop=("HARNESS_",))
    if background:
        return subprocess.Popen(
            args, cwd=harness, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return bench_result(run_json_lines(args, harness, seconds + 120, env))


def bench_result(run: JsonRun | str) -> Bench:
    if isinstance(run, str):
        import json

        lines = [json.loads(line) for line in run.splitlines() if line.startswith("{")]
        assert lines, run[-2000:]
        last = lines[-1]
    else:
        last = run.last
    assert "fulfilled" in last, last
    return Bench(
        fulfilled=int(last["fulfilled"]),
        rejected=int(last["rejected"]),
        reject_codes=dict(last.get("reject_codes") or {}),
        delivered=int(last["destination_total"]),
        packets_per_s=float(last["packets_per_s"]),
        raw=last,
    )
