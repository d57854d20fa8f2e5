"""Our paying client against the JavaScript connector and reference receiver.

``node connector.js`` (ilp-connector 23.0.2, one-to-one rates) and ``node
js-receiver.js`` (ilp-protocol-psk2 0.5.0 behind PSK2-era SPSP) run on loopback; our
client connects to the connector's ``sender`` account over BTP, queries the JS
receiver's SPSP endpoint, pays it in both PSK2 formats (0.5.0 answers draft-2 requests
and legacy draft-1 chunks), quotes, sends a chunked payment, and the CLI pays too.  The
JS receiver's ``balance.current`` must grow by exactly what our client says was
delivered.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ilp_receiver.client import AsyncPaymentClient, ChunkProgress

from .procs import BIN, child_env, js_connector, started

pytestmark = pytest.mark.interop

BASE = 21700
RECEIVERS_PORT, SENDER_PORT, SPSP_PORT = BASE + 1, BASE + 2, BASE + 3
SENDER_URL = f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}"
SPSP_URL = f"http://127.0.0.1:{SPSP_PORT}/.well-known/pay"


@pytest.fixture(scope="module")
def js_side(harness: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with started(tmp_path_factory.mktemp("client-interop")) as procs:
        procs.start(
            "connector",
            js_connector(RECEIVERS_PORT, SENDER_PORT, "--max-runtime", "600"),
            harness,
        )
        receiver = procs.start(
            "js-receiver",
            [
                "node",
                "js-receiver.js",
                "--btp-url",
                f"btp+ws://jsr:tok@127.0.0.1:{RECEIVERS_PORT}",
                "--spsp-port",
                str(SPSP_PORT),
                "--max-runtime",
                "600",
            ],
            harness,
        )
        yield receiver.wait_event("ready")


@pytest.fixture
async def client(js_side: dict[str, Any]) -> AsyncIterator[AsyncPaymentClient]:
    c = await AsyncPaymentClient.connect(SENDER_URL)
    yield c
    await c.close()


async def balance(client: AsyncPaymentClient) -> int:
    spsp = await client.query(SPSP_URL, use_cache=False)
    assert spsp.balance is not None
    return spsp.balance.current


async def test_query_the_js_receiver(client: AsyncPaymentClient, js_side: dict[str, Any]) -> None:
    assert client.address == "test.harness.sender"
    spsp = await client.query(SPSP_URL)
    assert spsp.destination_account.startswith(js_side["address"] + ".")
    assert len(spsp.shared_secret) == 32
    assert spsp.asset is not None and (spsp.asset.code, spsp.asset.scale) == ("XYZ", 9)


async def test_pay_both_formats_quote_and_chunked(client: AsyncPaymentClient) -> None:
    before = await balance(client)
    delivered = 0

    paid = await client.pay(SPSP_URL, 1000, draft="draft2", min_destination_amount=1000)
    assert paid.delivered_amount == 1000
    delivered += paid.delivered_amount

    legacy = await client.pay(SPSP_URL, 700, draft="draft1", min_destination_amount=700)
    assert legacy.delivered_amount == 700
    assert legacy.receiver_total is None  # 0.5.0 answers legacy chunks with paymentAmount 0
    delivered += legacy.delivered_amount

    for draft in ("draft1", "draft2"):
        quote = await client.quote(SPSP_URL, 1234, draft=draft)
        assert quote.destination_amount == 1234  # one-to-one, spread 0
        assert quote.code in ("F99", "F05")

    seen: list[ChunkProgress] = []
    chunked = await client.pay_chunked(
        SPSP_URL, source_amount=2500, chunk_size=1000, progress=seen.append
    )
    assert chunked.delivered_amount == 2500
    assert chunked.chunks_fulfilled == len(seen) == 3
    delivered += chunked.delivered_amount

    assert await balance(client) == before + delivered


async def test_min_destination_amount_is_enforced(client: AsyncPaymentClient) -> None:
    from ilp_receiver.client import PaymentError

    before = await balance(client)
    for draft in ("draft1", "draft2"):
        with pytest.raises(PaymentError) as info:
            await client.pay(SPSP_URL, 100, min_destination_amount=101, draft=draft)
        assert info.value.code == "F99"
        assert info.value.arrived == 100
    assert await balance(client) == before


async def test_cli_pay_and_query(client: AsyncPaymentClient) -> None:
    before = await balance(client)
    env = child_env()
    result = subprocess.run(  # noqa: ASYNC221 - a short CLI run inside the test
        [str(BIN / "ilp-receiver"), "pay", SPSP_URL, "1500", "--uplink", SENDER_URL,
         "--chunked", "--chunk-size", "600", "--progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ok"] is True and report["delivered_amount"] == "1500"
    assert "100.0%" in result.stderr
    query = subprocess.run(  # noqa: ASYNC221
        [str(BIN / "ilp-receiver"), "query", SPSP_URL],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert query.returncode == 0, query.stderr
    shown = json.loads(query.stdout)
    assert shown["shared_secret"] == "<redacted>"
    assert int(shown["balance"]["current"]) == before + 1500
