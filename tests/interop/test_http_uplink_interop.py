"""Our ILP-over-HTTP link against the JavaScript connector's ilp-plugin-http 1.6.1 account.

``node connector.js --http-account myrecv,P3,http://127.0.0.1:P4/,secret`` listens on P3
and POSTs Prepares to P4 with ``Authorization: Bearer secret``; our link listens on P4 and
POSTs to P3. IL-DCP over that link must give ``test.harness.myrecv``; then our receiver
CLI on the HTTP uplink is paid by the JS sender through the connector.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ilp_receiver.links.http import HttpSyncLink
from ilp_receiver.links.uplink import fetch_peer_config

from .procs import js_connector, js_pay, our_receiver, started

pytestmark = pytest.mark.interop

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


@pytest.fixture(scope="module")
def connector(harness: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with started(tmp_path_factory.mktemp("http-uplink")) as procs:
        process = procs.start(
            "connector",
            js_connector(
                RECEIVERS_PORT,
                SENDER_PORT,
                "--http-account",
                f"myrecv,{HTTP_ACCOUNT_PORT},http://127.0.0.1:{OUR_PORT}/,{TOKEN}",
                "--max-runtime",
                "600",
            ),
            harness,
        )
        yield process.wait_event("ready")


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
    with started(tmp_path) as procs:
        receiver = procs.start(
            "receiver",
            our_receiver(UPLINK_URL, SPSP_PORT, tmp_path),
            tmp_path,
        )
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
