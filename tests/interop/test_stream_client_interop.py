"""Our STREAM client against the JavaScript connector and STREAM reference receiver.

``node connector.js --max-packet-amount 1000`` (ilp-connector 23.0.2, one-to-one rates,
every account refuses Prepares above 1000 with F08) and ``node stream-receiver.js``
(ilp-protocol-stream 2.7.1 behind SPSP v4) run on loopback.  Our client connects to the
connector's ``sender`` account over BTP, queries the receiver's SPSP endpoint
(``application/spsp4+json``), and pays: one packet's worth, then 25,000 -- more than
the connector's maximum packet amount, so the probe learns the limit from F08s and the
payment goes out in packets of at most 1000.  The JS receiver must count exactly what
our client reports delivered (``GET /stats`` ``total_received`` and SPSP
``balance.current``).  The CLI pays the same way.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ilp_receiver.client import AsyncPaymentClient, ChunkProgress, PaymentError
from ilp_receiver.errors import SpspError

from .procs import BIN, child_env, http_json, js_connector, started

pytestmark = pytest.mark.interop

BASE = 23700
RECEIVERS_PORT, SENDER_PORT, SPSP_PORT = BASE + 1, BASE + 2, BASE + 3
MAX_PACKET = 1000
SENDER_URL = f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}"
SPSP_URL = f"http://127.0.0.1:{SPSP_PORT}/.well-known/pay"
STATS_URL = f"http://127.0.0.1:{SPSP_PORT}/stats"


@pytest.fixture(scope="module")
def js_side(harness: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with started(tmp_path_factory.mktemp("stream-client-interop")) as procs:
        procs.start(
            "connector",
            js_connector(
                RECEIVERS_PORT,
                SENDER_PORT,
                "--max-packet-amount",
                str(MAX_PACKET),
                "--max-runtime",
                "600",
            ),
            harness,
        )
        receiver = procs.start(
            "stream-receiver",
            [
                "node",
                "stream-receiver.js",
                "--btp-url",
                f"btp+ws://pystream:pystream-token@127.0.0.1:{RECEIVERS_PORT}",
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


def total_received() -> int:
    """What the JS receiver counted over all connections (its ``money`` events)."""
    return int(http_json(STATS_URL)["total_received"])


async def spsp_balance(client: AsyncPaymentClient) -> int:
    spsp = await client.query(SPSP_URL, use_cache=False)
    assert spsp.balance is not None
    return spsp.balance.current


async def test_query_offers_stream(client: AsyncPaymentClient, js_side: dict[str, Any]) -> None:
    assert client.address == "test.harness.sender"
    spsp = await client.query(SPSP_URL)
    assert spsp.protocol == "stream"  # Content-Type: application/spsp4+json
    assert spsp.destination_account.startswith(js_side["address"] + ".")
    assert len(spsp.shared_secret) == 32
    assert spsp.receipts_enabled is False
    # a PSK2-only query gets 406 from this STREAM-only receiver, never a STREAM secret
    with pytest.raises(SpspError) as info:
        await client.query(SPSP_URL, protocol="psk2")
    assert info.value.status == 406


async def test_pay_one_packet(client: AsyncPaymentClient) -> None:
    before, balance_before = total_received(), await spsp_balance(client)
    result = await client.pay(SPSP_URL, MAX_PACKET)
    assert result.protocol == "stream"
    assert result.delivered_amount == MAX_PACKET  # one-to-one, spread 0
    assert result.packets_fulfilled == 1 and result.packets_rejected == 0
    assert result.exchange_rate == 1
    assert total_received() == before + result.delivered_amount
    assert await spsp_balance(client) == balance_before + result.delivered_amount


async def test_pay_more_than_the_max_packet_amount(client: AsyncPaymentClient) -> None:
    before, balance_before = total_received(), await spsp_balance(client)
    seen: list[ChunkProgress] = []
    result = await client.pay(SPSP_URL, 25_000, progress=seen.append)
    assert result.protocol == "stream"
    assert (result.source_amount, result.delivered_amount) == (25_000, 25_000)
    # the probe learnt the limit from the connector's F08s: no money packet was refused
    assert result.packets_fulfilled == 25 and result.packets_rejected == 0
    assert len(seen) == 25 and seen[-1].fraction == 1.0
    assert all(p.chunk_size <= MAX_PACKET for p in seen)
    # 5 probes + 25 money packets + the close
    assert result.prepares_sent == 31
    assert total_received() == before + result.delivered_amount
    assert await spsp_balance(client) == balance_before + result.delivered_amount


async def test_quote_and_minimum(client: AsyncPaymentClient) -> None:
    before = total_received()
    quote = await client.quote(SPSP_URL, 700)
    assert (quote.protocol, quote.destination_amount, quote.code) == ("stream", 700, "F99")
    quote = await client.quote(SPSP_URL, 5000)  # above the limit: from the probed rate
    assert quote.destination_amount == 5000
    with pytest.raises(PaymentError) as info:
        await client.pay(SPSP_URL, 1000, min_destination_amount=1001)
    assert info.value.result.delivered_amount == 0
    assert total_received() == before  # quotes and refused payments move nothing


async def test_sequential_payments_on_one_client(client: AsyncPaymentClient) -> None:
    before = total_received()
    delivered = 0
    for amount in (1, 999, 1001, 3333):
        result = await client.pay(SPSP_URL, amount)
        assert result.delivered_amount == amount
        delivered += result.delivered_amount
    assert total_received() == before + delivered


async def test_cli_pays_over_stream(client: AsyncPaymentClient) -> None:
    before = total_received()
    env = child_env()
    result = subprocess.run(  # noqa: ASYNC221 - a short CLI run inside the test
        [str(BIN / "ilp-receiver"), "pay", SPSP_URL, "25000", "--uplink", SENDER_URL,
         "--protocol", "stream", "--progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ok"] is True and report["protocol"] == "stream"
    assert report["delivered_amount"] == "25000"
    assert report["packets_fulfilled"] == 25
    assert "100.0%" in result.stderr and "packets 25" in result.stderr  # the progress bar
    assert total_received() == before + int(report["delivered_amount"])
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
    assert shown["protocol"] == "stream" and shown["shared_secret"] == "<redacted>"
