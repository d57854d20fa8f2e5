"""``examples/scaling/``, run as written (``docs/scaling.md``): the Procfile's two
connectors and three receivers behind HAProxy (``haproxy.cfg``), balances of the
connectors in PostgreSQL (``shared_balances``), of the receivers in Redis; the JS sender
pays the shop's pointer through the wallet account over ILP over HTTP.

Only the ports (77xx, 80xx -> 268xx), the store prefixes (fresh ones) and the secret
file's place are changed before the Procfile's lines run.  Balances in the connectors'
store equal the traffic; the receivers' store holds exactly what was paid; both
connector instances and all three receivers carried packets.

Ports 26800-26899.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from .fleet import (
    Bench,
    Fleet,
    drop_store,
    haproxy_binary,
    haproxy_served,
    js_bench,
    postgres_url,
    store_balances,
    store_total,
    store_unavailable,
    store_url,
    wait_haproxy_up,
    wait_port,
)
from .procs import child_env

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scaling"
PORTS = {
    7700: 26800,
    7701: 26801,
    7702: 26802,
    7703: 26803,
    7704: 26804,
    7710: 26810,
    7711: 26811,
    7712: 26812,
    7713: 26813,
    7720: 26820,
    7790: 26890,
    8080: 26880,
    8081: 26881,
    8082: 26882,
    8083: 26883,
}


def localize(text: str, tmp_path: Path, connector_store: str, receiver_store: str) -> str:
    text = re.sub(r"\b(77\d\d|808\d)\b", lambda m: str(PORTS[int(m.group(1))]), text)
    text = text.replace("examples/scaling/", f"{tmp_path}/")
    text = text.replace("fleet-shop.secret", str(tmp_path / "fleet-shop.secret"))
    text = text.replace("redis://127.0.0.1:6379/0?prefix=fleet-shop:", receiver_store)
    base, _, prefix = connector_store.partition("?prefix=")
    text = text.replace('"postgresql://127.0.0.1:5432/test"', f'"{base}"')
    return text.replace('"fleet_connector_"', f'"{prefix}"')


def test_the_scaling_example_runs_as_written(harness: Path, tmp_path: Path) -> None:
    if haproxy_binary() is None:
        pytest.skip("HAProxy is not installed (apt-get install haproxy; .ci/run does)")
    for kind in ("postgres", "redis"):
        if reason := store_unavailable(kind):
            pytest.skip(reason)
    assert postgres_url() is not None
    connector_store, receiver_store = store_url("postgres"), store_url("redis")
    for name in ("connector.toml", "haproxy.cfg", "Procfile"):
        text = (EXAMPLE / name).read_text()
        (tmp_path / name).write_text(localize(text, tmp_path, connector_store, receiver_store))
    fleet = Fleet(tmp_path)
    env = child_env(drop=("HARNESS_", "ILP_"))
    try:
        for line in (tmp_path / "Procfile").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            # what a Procfile runner does, without a shell in between (the processes are
            # stopped by their own ids): leading NAME=value words set the environment
            name, _, command = line.partition(":")
            words = shlex.split(command)
            own_env = dict(env)
            while "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
                key, _, value = words.pop(0).partition("=")
                own_env[key] = value
            if words[0] == "haproxy":
                binary = haproxy_binary()
                assert binary is not None
                words[0] = binary
            fleet.spawn(name, words, ROOT, own_env)
        for example_port in (7700, 7701, 7702, 7710, 8080, 8081, 8082, 8083):
            wait_port(PORTS[example_port], timeout=60)
        wait_haproxy_up(PORTS[7790], 2 + 3 + 3, timeout=60)
        bench = js_bench(
            harness,
            f"http://127.0.0.1:{PORTS[8080]}/.well-known/pay",
            seconds=4,
            concurrency=20,
            http=(PORTS[7720], f"http://127.0.0.1:{PORTS[7700]}/wallet/", "wallet-token"),
        )
        assert isinstance(bench, Bench)
        assert bench.rejected == 0, (bench.reject_codes, bench.raw.get("error_samples"))
        assert bench.fulfilled > 50
        stored = store_balances(connector_store)
        assert stored == {"wallet": bench.delivered, "shop": -bench.delivered}, stored
        assert store_total(receiver_store) == bench.delivered
        served = haproxy_served(PORTS[7790])
        for server in ("connectors/a", "connectors/b", "receivers/r1", "receivers/r2"):
            assert served.get(server, 0) > 0, served
        assert served.get("receivers/r3", 0) > 0, served
    finally:
        fleet.stop()
        drop_store(connector_store)
        drop_store(receiver_store)
