"""Signed webhooks end to end through the JavaScript connector and senders.

* PSK2 and STREAM payments by the JS senders -> our receiver (``ilp-receiver receive``
  with ``ILP_RECEIVER_WEBHOOK_*``) -> one signed ``payment.received`` per payment at a
  local endpoint, verified with ``verify_webhook`` and independently with
  ``cryptography``'s Ed25519; the amounts sum to the store's delta.
* Crashes: the receiver is killed (SIGKILL) mid-load, then a standalone dispatcher
  (``ilp-receiver webhooks run``) is killed mid-delivery and restarted: every credit is
  in exactly one event, every event is delivered at least once, and duplicates carry
  the same id and body.
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ilp_receiver.webhooks import generate_ed25519_key, verify_webhook

from .procs import (
    BIN,
    Proc,
    child_env,
    http_json,
    js_connector,
    js_pay,
    our_receiver,
    run_json_lines,
)
from .webhook_sink import Sink

pytestmark = pytest.mark.interop

BASE = 27700
RECEIVERS_PORT, SENDER_PORT, ADMIN_PORT, SPSP_PORT = BASE + 1, BASE + 2, BASE + 3, BASE + 4
SENDER_BTP = f"btp+ws://:sender-token@127.0.0.1:{SENDER_PORT}"
SPSP_URL = f"http://127.0.0.1:{SPSP_PORT}/.well-known/pay"
UPLINK = f"btp+ws://hooks:hooks-token@127.0.0.1:{RECEIVERS_PORT}"
SIGNING, PUBLIC = generate_ed25519_key()


def start_connector(harness: Path, logs: Path) -> Proc:
    args = js_connector(RECEIVERS_PORT, SENDER_PORT, "--admin-port", str(ADMIN_PORT))
    args += ["--max-runtime", "300", "--max-packet-amount", "1000"]
    proc = Proc(args, harness, logs / "connector.err")
    proc.wait_event("ready", 60)
    return proc


def start_receiver(harness: Path, state: Path, sink_url: str, **env: str) -> Proc:
    environment = child_env(("ILP_RECEIVER_",))
    # the key travels in the environment, never in argv
    environment.update(ILP_RECEIVER_WEBHOOK_URL=sink_url, ILP_RECEIVER_WEBHOOK_KEY=SIGNING, **env)
    proc = Proc(
        our_receiver(UPLINK, SPSP_PORT, state), harness, state / "receiver.err", environment
    )
    proc.wait_event("ready", 60)
    return proc


def spsp_balance() -> int:
    body = http_json(SPSP_URL, {"Accept": "application/spsp+json"})
    return int(body["balance"]["current"])


def stream_pay(harness: Path, amount: int) -> dict[str, object]:
    args = ["node", "stream-sender.js", "pay", "--receiver", SPSP_URL, "--btp-url", SENDER_BTP]
    return run_json_lines([*args, "--amount", str(amount)], harness, 120).last


def check_signature(headers: dict[str, str], body: bytes) -> None:
    """Independently of our helper: Ed25519 over id.timestamp.body (cryptography)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content = f"{lowered['webhook-id']}.{lowered['webhook-timestamp']}.".encode() + body
    [signature] = lowered["webhook-signature"].split()
    scheme, _, value = signature.partition(",")
    assert scheme == "v1a"
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC.removeprefix("whpk_")))
    key.verify(base64.b64decode(value), content)  # raises InvalidSignature


def test_each_payment_is_one_signed_event_summing_to_the_store_delta(
    harness: Path, tmp_path: Path
) -> None:
    connector = start_connector(harness, tmp_path)
    with Sink() as sink:
        receiver = start_receiver(harness, tmp_path, sink.url, ILP_RECEIVER_WEBHOOK_WINDOW="3")
        try:
            before = spsp_balance()
            paid = 0
            for amount in (700, 900):  # PSK2 requests (one packet each)
                assert js_pay(harness, SPSP_URL, SENDER_BTP, amount).last["ok"] is True
                paid += amount
            for amount in (4000, 6500):  # STREAM, packets of at most 1000
                result = stream_pay(harness, amount)
                assert result["ok"] is True, result
                paid += int(str(result["delivered"]))
            delta = spsp_balance() - before
            assert delta == paid

            def received(s: Sink) -> list[dict[str, Any]]:
                events = {p.event["id"]: p.event for p in s.acknowledged()}
                return [e for e in events.values() if e["type"] == "payment.received"]

            sink.wait(lambda s: len(received(s)) >= 4)
            sink.wait(
                lambda s: (
                    sum(1 for p in s.acknowledged() if p.event["type"] == "payment.completed") >= 2
                )
            )
        finally:
            receiver.kill(signal.SIGTERM)
            connector.kill(signal.SIGTERM)
        events = received(sink)
        assert len(events) == 4  # one per payment: the STREAM ones aggregated
        assert sorted(int(str(e["data"]["amount"])) for e in events) == [700, 900, 4000, 6500]
        assert sum(int(str(e["data"]["amount"])) for e in events) == delta
        stream_events = [e for e in events if e["data"]["protocol"] == "stream"]
        assert all(int(str(e["data"]["credits"])) >= 4 for e in stream_events)
        for post in sink.posts:
            verify_webhook(post.body, post.headers, PUBLIC)
            check_signature(post.headers, post.body)


def test_crashes_lose_no_event_and_duplicates_share_the_id(harness: Path, tmp_path: Path) -> None:
    connector = start_connector(harness, tmp_path)
    store = tmp_path / "receiver.sqlite3"
    load: subprocess.Popen[str] | None = None
    with Sink(delay=0.005) as sink:
        # the receiver only writes the outbox; a standalone dispatcher delivers it
        receiver = start_receiver(
            harness, tmp_path, sink.url, ILP_RECEIVER_WEBHOOK_DISPATCH="false"
        )
        try:
            load = subprocess.Popen(
                [
                    "node",
                    "sender.js",
                    "bench",
                    "--receiver",
                    SPSP_URL,
                    "--btp-url",
                    SENDER_BTP,
                    "--amount",
                    "10",
                    "--count",
                    "100000",
                    "--concurrency",
                    "4",
                    "--warmup",
                    "0",
                    "--max-seconds",
                    "3",
                    "--timeout",
                    "60",
                ],
                cwd=harness,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            time.sleep(1.5)  # mid-load
            receiver.kill(signal.SIGKILL)
            load.kill()  # its packets in flight would only time out
            load.communicate(timeout=30)
        finally:
            if load is not None and load.poll() is None:
                load.kill()
        # every credit on disk is in exactly one event (written in its transaction)
        with sqlite3.connect(store) as db:
            credits = db.execute(
                "SELECT count(*), sum(CAST(delta AS INTEGER)) FROM ilp_idempotency"
            ).fetchone()
            rows = db.execute(
                "SELECT id, CAST(amount AS INTEGER), count FROM ilp_outbox"
            ).fetchall()
        assert credits[0] > 50, credits
        assert sum(count for _, _, count in rows) == credits[0]
        assert sum(amount for _, amount, _ in rows) == credits[1]
        written = {event_id: amount for event_id, amount, _ in rows}

        dispatcher_args = [
            str(BIN / "ilp-receiver"),
            "webhooks",
            "run",
            "--store",
            str(store),
            "--url",
            sink.url,
            "--lease",
            "2",
            "--timeout",
            "1",
            "--concurrency",
            "2",
        ]
        env = child_env(("ILP_RECEIVER_",))
        env["ILP_RECEIVER_WEBHOOK_KEY"] = SIGNING
        dispatcher = Proc(dispatcher_args, harness, tmp_path / "dispatcher.err", env)
        try:
            dispatcher.wait_event("ready", 30)
            sink.wait(lambda s: len(s.posts) >= 10)
            dispatcher.kill(signal.SIGKILL)  # mid-delivery: claims stay leased
            assert len({p.event["id"] for p in sink.posts}) < len(written)
            dispatcher = Proc(dispatcher_args, harness, tmp_path / "dispatcher.err", env)
            dispatcher.wait_event("ready", 30)
            sink.wait(lambda s: {p.event["id"] for p in s.acknowledged()} >= set(written), 120)
            with sqlite3.connect(store) as db:
                assert db.execute("SELECT count(*) FROM ilp_outbox").fetchone() == (0,)
            # the receiver restarted on the same store: the next payment is one more event
            receiver = start_receiver(
                harness, tmp_path, sink.url, ILP_RECEIVER_WEBHOOK_DISPATCH="false"
            )
            paid = js_pay(harness, SPSP_URL, SENDER_BTP, 987, sender_timeout=60).last
            assert paid["ok"] is True, json.dumps(paid)
            sink.wait(lambda s: any(p.event["data"]["amount"] == "987" for p in s.acknowledged()))
        finally:
            receiver.kill(signal.SIGTERM)
            dispatcher.kill(signal.SIGTERM)
            connector.kill(signal.SIGTERM)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for post in sink.posts:
        if post.event["data"]["amount"] == "987":
            continue
        bodies[post.event["id"]].add(post.body)
        verify_webhook(post.body, post.headers, PUBLIC, tolerance=600)
    assert set(bodies) == set(written)
    assert all(len(variants) == 1 for variants in bodies.values())  # duplicates: same event
    amounts = {p.event["id"]: int(p.event["data"]["amount"]) for p in sink.posts}
    assert {k: v for k, v in amounts.items() if k in written} == written
