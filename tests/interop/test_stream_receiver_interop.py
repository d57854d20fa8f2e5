"""Our receiver (``ilp-receiver receive``) paid by the JavaScript STREAM sender
(ilp-protocol-stream 2.7.1, and ilp-protocol-spsp 3.0.0 with its 1.8.9 client) and the
PSK2 sender, through the JavaScript connector, over a BTP uplink and over an
ILP-over-HTTP uplink: one process, one pointer, both protocols.

``stream-sender.js check`` must pass every check, required and optional (the data echo
needs ``--echo-stream-data``; receipts are asked for with ``--require-receipts``), and
``sender.js check`` (PSK2) every check as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .procs import JsonRun, js_connector, our_receiver, run_json_lines, started

pytestmark = pytest.mark.interop

BASE = 24700
RECEIVERS_PORT, SENDER_PORT, HTTP_ACCOUNT_PORT, OUR_HTTP_PORT = (
    BASE + 1,
    BASE + 2,
    BASE + 3,
    BASE + 4,
)
BTP_SPSP_PORT, HTTP_SPSP_PORT = BASE + 5, BASE + 6
SENDER_URL = f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}"
HTTP_TOKEN = "http-secret"
#: the connector's maximum packet amount: STREAM payments above it take several packets
MAX_PACKET = 1000


@pytest.fixture(scope="module")
def receivers(harness: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The JS connector and two of our receivers: one on BTP, one on ILP-over-HTTP."""
    state = tmp_path_factory.mktemp("stream-receiver-interop")
    with started(state) as procs:
        procs.start(
            "connector",
            js_connector(
                RECEIVERS_PORT,
                SENDER_PORT,
                "--max-packet-amount",
                str(MAX_PACKET),
                "--http-account",
                f"ourhttp,{HTTP_ACCOUNT_PORT},http://127.0.0.1:{OUR_HTTP_PORT}/,{HTTP_TOKEN}",
                "--max-runtime",
                "900",
            ),
            harness,
        )
        btp_state, http_state = state / "btp", state / "http"
        btp_state.mkdir()
        http_state.mkdir()
        btp_uplink = f"btp+ws://ours:ours-token@127.0.0.1:{RECEIVERS_PORT}"
        procs.start(
            "receiver-btp",
            [*our_receiver(btp_uplink, BTP_SPSP_PORT, btp_state), "--echo-stream-data"],
            harness,
        )
        http_uplink = (
            f"http+oer://{HTTP_TOKEN}@127.0.0.1:{HTTP_ACCOUNT_PORT}/"
            f"?listen=127.0.0.1:{OUR_HTTP_PORT}"
        )
        procs.start(
            "receiver-http",
            [*our_receiver(http_uplink, HTTP_SPSP_PORT, http_state), "--echo-stream-data"],
            harness,
        )
        yield {
            "btp": f"http://127.0.0.1:{BTP_SPSP_PORT}/.well-known/pay",
            "http": f"http://127.0.0.1:{HTTP_SPSP_PORT}/.well-known/pay",
        }


def failed_checks(run: JsonRun) -> list[dict[str, Any]]:
    return [check for check in run.last["checks"] if not check["ok"]]


@pytest.mark.parametrize("uplink", ["btp", "http"])
def test_js_stream_sender_passes_every_check(
    harness: Path, receivers: dict[str, str], uplink: str
) -> None:
    run = run_json_lines(
        [
            "node",
            "stream-sender.js",
            "check",
            "--receiver",
            receivers[uplink],
            "--btp-url",
            SENDER_URL,
            "--require-receipts",
            "--timeout",
            "240",
        ],
        harness,
        timeout=300,
    )
    failed = failed_checks(run)
    assert not failed, json.dumps(failed, indent=1)[:4000]
    names = {check["name"] for check in run.last["checks"]}
    # the optional checks ran too (and passed): data echo, receipts, the 1.8.9 client
    assert {"data_echo", "receipts", "spsp_client_3_0_0_pay", "multi_packet_payment"} <= names
    assert run.last["ok"] is True and run.returncode == 0


@pytest.mark.parametrize("uplink", ["btp", "http"])
def test_js_psk2_sender_still_passes_every_check(
    harness: Path, receivers: dict[str, str], uplink: str
) -> None:
    run = run_json_lines(
        ["node", "sender.js", "check", "--receiver", receivers[uplink], "--btp-url", SENDER_URL],
        harness,
        timeout=300,
    )
    failed = failed_checks(run)
    assert not failed, json.dumps(failed, indent=1)[:4000]
    assert len(run.last["checks"]) == 15
    assert run.last["ok"] is True and run.returncode == 0


def test_a_stream_payment_larger_than_the_max_packet_amount(
    harness: Path, receivers: dict[str, str]
) -> None:
    run = run_json_lines(
        [
            "node",
            "stream-sender.js",
            "pay",
            "--receiver",
            receivers["btp"],
            "--btp-url",
            SENDER_URL,
            "--amount",
            "25000",
        ],
        harness,
        timeout=120,
    )
    assert run.last["ok"] is True, run.last
    assert run.last["delivered"] == "25000" or int(run.last["delivered"]) == 25000
    assert int(run.last["money_packets_fulfilled"]) >= 25
    assert int(run.last["receiver_balance_delta"]) == 25000
