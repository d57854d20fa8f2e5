"""HTTP-ILP over STREAM end to end: a JavaScript STREAM client (ilp-protocol-stream
2.7.1) pays each paid-API example through the JavaScript connector.

``node connector.js`` (ilp-connector, one-to-one rates) runs on loopback; each example
app (``examples/{flask,starlette,aiohttp}_paid_api.py``, as its ``create_app`` builds
it: STREAM by default) connects its receiver to the connector over BTP and is served on
a loopback port.  The client is a small Node script, written into the test's tmp
directory and run with the harness as working directory, that does what STREAM-era
HTTP-ILP clients do:

1. ``GET /fortune`` with a fresh ``Pay-Token`` -> ``402`` with
   ``Pay: interledger-stream <destination> <secret>``;
2. ``createConnection`` to that destination, ``createStream()``, ``setSendMax(max
   price)``;
3. wait until the server has sent at least one byte on the stream;
4. ``GET /fortune`` again with the same ``Pay-Token`` while the money flows;
5. when the response arrives: no more money (``setSendMax(totalSent)``), end the stream
   and the connection.

The route must answer ``200``; the client must have sent exactly the price although its
limit was higher (the stream's receive limit), and the token's balance must be 0.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ilp_receiver.portal import BlockingPortal

from .procs import js_connector, run_json_lines, started

pytestmark = pytest.mark.interop

BASE = 25700
RECEIVERS_PORT, SENDER_PORT = BASE + 1, BASE + 2
SENDER_URL = f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}"
PRICE = 10  # GET /fortune in every example
MAX_PRICE = 15  # the client's send limit

CLIENT_JS = r"""
'use strict'
// A STREAM-era HTTP-ILP client (ilp-protocol-stream 2.7.1). Run with cwd = the harness.
//   node http-ilp-stream-client.js <url> <balance url> <btp url> <max price>
const path = require('path')
const crypto = require('crypto')
const { createRequire } = require('module')
const harness = createRequire(path.join(process.cwd(), 'package.json'))
const { loadStream } = harness('./lib/stream-compat')
const BtpPlugin = harness('ilp-plugin-btp')
const STREAM = loadStream()

const [url, balanceUrl, btpUrl, maxPrice] = process.argv.slice(2)

function withTimeout (promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(what + ' timed out after ' + ms + ' ms')), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

async function main () {
  const token = crypto.randomBytes(16).toString('base64')
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  const headers = { 'Pay-Token': token }
  const out = { ok: false }
  const first = await fetch(url, { headers })
  const pay = first.headers.get('pay') || ''
  out.first_status = first.status
  out.pay_method = pay.split(' ')[0]
  out.pay_words = pay.split(' ').length
  if (first.status !== 402 || out.pay_method !== 'interledger-stream') return out
  const [, destinationAccount, secret] = pay.split(' ')

  const plugin = new BtpPlugin({ server: btpUrl, reconnectIntervals: [0, 100, 250, 500] })
  await withTimeout(plugin.connect(), 15000, 'plugin.connect')
  const conn = await withTimeout(STREAM.createConnection({
    plugin, destinationAccount, sharedSecret: Buffer.from(secret, 'base64')
  }), 20000, 'createConnection')
  conn.on('error', () => {})
  const stream = conn.createStream()
  stream.on('error', () => {})
  const firstByte = new Promise(resolve => stream.once('data', resolve))
  stream.setSendMax(maxPrice)
  // "waits until the server has sent at least one byte of data on that stream"
  const data = await withTimeout(firstByte, 20000, "the server's first byte")
  out.greeting = data.toString()
  out.sent_when_data_arrived = stream.totalSent

  // the same request again, with the same Pay-Token, while the money flows
  const second = await fetch(url, { headers })
  out.status = second.status
  out.body = await second.text()
  out.pay_balance = second.headers.get('pay-balance')

  // the response is in: no more money, close the stream and the connection (the
  // Fulfill of the last money packet may still be on its way: end() waits for it)
  stream.setSendMax(stream.totalSent)
  await withTimeout(new Promise(resolve => stream.end(resolve)), 10000, 'stream.end')
  await withTimeout(conn.end(), 10000, 'connection.end')
  out.total_sent = stream.totalSent
  out.delivered = conn.totalDelivered
  await plugin.disconnect()
  const balance = await fetch(balanceUrl, { headers })
  out.balance = (await balance.json()).balance
  out.ok = true
  return out
}

main()
  .then(out => { console.log(JSON.stringify(out)); process.exit(0) })
  .catch(e => {
    console.log(JSON.stringify({ ok: false, error: String((e && e.stack) || e) }))
    process.exit(1)
  })
"""


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        f"interop_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def connector(harness: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with started(tmp_path_factory.mktemp("http-ilp-stream-interop")) as procs:
        procs.start(
            "connector",
            js_connector(RECEIVERS_PORT, SENDER_PORT, "--max-runtime", "600"),
            harness,
        )
        yield


@contextlib.contextmanager
def serve_flask(tmp_path: Path, uplink: str) -> Iterator[str]:
    from werkzeug.serving import make_server

    from ilp_receiver_flask import get_service

    app = load("flask_paid_api").create_app(
        uplink, store=str(tmp_path / "flask.db"), secret=os.urandom(32).hex()
    )
    get_service(app).start()  # connect now (it would on the first request)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        get_service(app).stop()


@contextlib.contextmanager
def serve_starlette(tmp_path: Path, uplink: str) -> Iterator[str]:
    import uvicorn

    app = load("starlette_paid_api").create_app(
        uplink, store=str(tmp_path / "starlette.db"), secret=os.urandom(32).hex()
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def serve_aiohttp(tmp_path: Path, uplink: str) -> Iterator[str]:
    from aiohttp import web

    portal = BlockingPortal("test-aiohttp-example")
    app = load("aiohttp_paid_api").create_app(
        uplink, store=str(tmp_path / "aiohttp.db"), secret=os.urandom(32).hex()
    )
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()  # cleanup_ctx: the receiver connects
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = portal.call(start)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        portal.call(runner.cleanup)
        portal.stop()


SERVERS: dict[str, Any] = {
    "flask": serve_flask,
    "starlette": serve_starlette,
    "aiohttp": serve_aiohttp,
}


@pytest.mark.parametrize("framework", list(SERVERS))
def test_a_js_stream_client_pays_the_example(
    connector: None, harness: Path, tmp_path: Path, framework: str
) -> None:
    script = tmp_path / "http-ilp-stream-client.js"
    script.write_text(CLIENT_JS)
    uplink = f"btp+ws://{framework}shop:{framework}-token@127.0.0.1:{RECEIVERS_PORT}"
    with SERVERS[framework](tmp_path, uplink) as base:
        run = run_json_lines(
            ["node", str(script), f"{base}/fortune", f"{base}/balance", SENDER_URL, str(MAX_PRICE)],
            harness,
            timeout=120,
        )
    result = run.last
    assert result["ok"] is True, result
    assert (result["first_status"], result["pay_method"], result["pay_words"]) == (
        402,
        "interledger-stream",
        3,
    )
    assert result["greeting"] == "ready"
    # the first byte came in the reply to the packet that opened the stream, before any
    # money (that packet asked for more than the receive limit and was refused F99)
    assert result["sent_when_data_arrived"] == "0"
    assert result["status"] == 200, result
    assert "fortune" in result["body"]
    assert result["pay_balance"] == "0"
    # the send limit was 15; the stream's receive limit (the price) stopped it at 10
    assert result["total_sent"] == str(PRICE)
    assert result["delivered"] == str(PRICE)
    assert result["balance"] == 0
