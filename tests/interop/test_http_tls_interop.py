"""ALPN over TLS with an HTTP/1.1-only peer: the JavaScript connector's ilp-plugin-http
1.6.1 account (node-fetch, HTTP/1.1) POSTs to our receiver's uplink endpoint served over
TLS by the HTTP/2 server (which offers ``h2`` and ``http/1.1``), and the JS sender pays
our receiver through it.

``node connector.js --http-account myrecv,P3,https://127.0.0.1:P4/,secret`` (the JS
side trusts our test CA through ``NODE_EXTRA_CA_CERTS``); our receiver CLI's uplink is
``http+oer://secret@127.0.0.1:P3/?listen=127.0.0.1:P4&tls_cert=...&tls_key=...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..tls_certs import TlsFiles, make_tls_files
from .procs import child_env, js_connector, js_pay, our_receiver, started

pytestmark = pytest.mark.interop

BASE = 19750
RECEIVERS_PORT, SENDER_PORT, HTTP_ACCOUNT_PORT, OUR_PORT, SPSP_PORT = (
    BASE + 1,
    BASE + 2,
    BASE + 3,
    BASE + 4,
    BASE + 5,
)
TOKEN = "secret"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def connector(
    harness: Path, tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles
) -> Iterator[dict[str, Any]]:
    env = {**child_env(), "NODE_EXTRA_CA_CERTS": tls.ca}
    with started(tmp_path_factory.mktemp("http-tls"), env=env) as procs:
        process = procs.start(
            "connector",
            js_connector(
                RECEIVERS_PORT,
                SENDER_PORT,
                "--http-account",
                f"myrecv,{HTTP_ACCOUNT_PORT},https://127.0.0.1:{OUR_PORT}/,{TOKEN}",
                "--max-runtime",
                "600",
            ),
            harness,
        )
        yield process.wait_event("ready")


def test_js_http11_plugin_pays_our_tls_endpoint(
    connector: dict[str, Any], harness: Path, tmp_path: Path, tls: TlsFiles
) -> None:
    uplink = (
        f"http+oer://{TOKEN}@127.0.0.1:{HTTP_ACCOUNT_PORT}/?listen=127.0.0.1:{OUR_PORT}"
        f"&tls_cert={tls.server_cert}&tls_key={tls.server_key}"
    )
    with started(tmp_path) as procs:
        receiver = procs.start("receiver", our_receiver(uplink, SPSP_PORT, tmp_path), tmp_path)
        ready = receiver.wait_event("ready")
        assert ready["ilp_address"] == "test.harness.myrecv"
        result = js_pay(
            harness,
            f"http://127.0.0.1:{SPSP_PORT}/.well-known/pay",
            f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}",
            1000,
            sender_timeout=60,
            timeout=120,
        )
        report = result.last
        assert report["ok"] is True, (
            f"{json.dumps(report, indent=1)[:3000]}\nreceiver log:\n{receiver.tail()}"
        )
        assert result.returncode == 0
