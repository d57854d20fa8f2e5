"""The issue's experiment on any checkout of this project: a Flask app under
``gunicorn -w N`` receiving on one account of the bundled connector, a Redis store
(database 14, prefix ``ilp:``; emptied before and after), the JS sender for ``SECONDS``
at concurrency ``C``.  Prints one JSON line: fulfilled, reject codes, what the connector
paid, what the store gained, and the difference (credited, never paid).

    git archive OLD_COMMIT | tar -x -C /tmp/old            # another checkout, read only
    python bench/fleet_gunicorn_ab.py /tmp/old 2 5 20
    python bench/fleet_gunicorn_ab.py . 2 5 20

The processes import the code of ``CHECKOUT`` (``PYTHONPATH``); the configuration uses
nothing newer than the commit before the fleet work.  Ports 27900-27902.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.fleet import bench_result, wait_port  # noqa: E402
from tests.interop.procs import http_json  # noqa: E402

REDIS = "redis://127.0.0.1:6379/14"
CONNECTOR = """
[connector]
address = "test.fleet"
store = "memory:"
route_broadcast_enabled = false
[server]
port = 27900
[admin]
port = 27901
token = "admin-token"
[accounts.sender]
relation = "child"
transport = "btp-server"
token = "sender-token"
path = "/sender"
[accounts.shop]
relation = "child"
transport = "btp-server"
username = "shop"
token = "shop-token"
path = "/shop"
"""
APP = f"""
import logging
import os
from flask import Flask
if os.environ.get("BENCH_DEBUG"):
    logging.basicConfig(level=logging.INFO)
from ilp_receiver_flask import IlpReceiver
app = Flask(__name__)
app.config.update(
    ILP_RECEIVER_UPLINK="btp+ws://shop:shop-token@127.0.0.1:27900/shop",
    ILP_RECEIVER_SECRET=os.environ["BENCH_SECRET"],
    ILP_RECEIVER_STORE="{REDIS}",
)
ilp = IlpReceiver(app)
"""
GUNICORN_CONF = "def post_worker_init(worker):\n    import app\n    app.ilp.start(app.app)\n"


def clean() -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match="ilp:*", count=1000))
    if keys:
        client.delete(*keys)


def stored() -> int:
    from ilp_receiver.stores.redis import RedisStore

    async def read() -> int:
        async with RedisStore(REDIS) as store:
            return sum((await store.balances()).values())

    return asyncio.run(read())


def main() -> None:
    checkout = Path(sys.argv[1]).resolve()
    workers, concurrency, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="fleet-ab-") as tmp:
        work = Path(tmp)
        (work / "c.toml").write_text(textwrap.dedent(CONNECTOR))
        (work / "app.py").write_text(APP)
        (work / "conf.py").write_text(GUNICORN_CONF)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ILP_", "HARNESS_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), str(checkout / "integrations"), tmp])
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["BENCH_SECRET"] = os.urandom(32).hex()
        clean()
        procs: list[subprocess.Popen[str]] = []
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "ilp_receiver",
                        "connector",
                        "--config",
                        f"{tmp}/c.toml",
                    ],
                    cwd=work,  # not a checkout: ``python -m`` imports from the cwd first
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(work / "connector.log").open("w"),
                    text=True,
                )
            )
            wait_port(27900)
            gunicorn = [sys.executable, "-m", "gunicorn", "-w", str(workers)]
            gunicorn += ["-b", "127.0.0.1:27902", "-c", f"{tmp}/conf.py", "--log-level", "warning"]
            gunicorn += ["app:app"]
            procs.append(
                subprocess.Popen(
                    gunicorn, cwd=work, env=env, stderr=(work / "g.log").open("w"), text=True
                )
            )
            wait_port(27902)
            time.sleep(2)  # every worker connects in post_worker_init
            sender = ["node", "sender.js", "bench", "--receiver"]
            sender += ["http://127.0.0.1:27902/.well-known/pay"]
            sender += ["--btp-url", "btp+ws://:sender-token@127.0.0.1:27900/sender"]
            sender += ["--amount", "100", "--count", "10000000", "--warmup", "0"]
            sender += ["--concurrency", str(concurrency), "--max-seconds", str(seconds)]
            sender += ["--timeout", str(int(seconds) + 90)]
            out = subprocess.run(
                sender,
                cwd=ROOT / ".interop",
                capture_output=True,
                text=True,
                env={**env, "PYTHONPATH": ""},
                check=False,
            ).stdout
            bench = bench_result(out)
            time.sleep(1)
            balances = http_json(
                "http://127.0.0.1:27901/balances", {"Authorization": "Bearer admin-token"}
            )
            paid = -int(balances["shop"]["balance"])
            delta = stored()
            print(
                json.dumps(
                    {
                        "checkout": str(checkout),
                        "workers": workers,
                        "concurrency": concurrency,
                        "seconds": seconds,
                        "fulfilled": bench.fulfilled,
                        "reject_codes": bench.reject_codes,
                        "delivered": bench.delivered,
                        "connector_paid": paid,
                        "store_delta": delta,
                        "credited_never_paid": delta - paid,
                    }
                )
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            clean()
            if os.environ.get("BENCH_DEBUG"):
                print((work / "g.log").read_text()[-3000:], file=sys.stderr)
                print((work / "connector.log").read_text()[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
