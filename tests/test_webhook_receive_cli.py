"""``ilp-receiver receive`` with webhooks from the environment: a payment reaches a
local endpoint as one signed event, and ``--webhook-admin-port`` serves the admin API
(list, metrics) behind its bearer token.  The key and the token travel in the
environment only."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from ilp_receiver.webhooks import generate_ed25519_key, verify_webhook
from tests.interop.webhook_sink import Sink
from tests.test_receive_cli import BIN, World, cli, free_port, ready_line, stop, world

__all__ = ["world"]

TOKEN = "admin-" + "t" * 26


def get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_receive_delivers_signed_events_and_serves_the_admin_api(
    world: World, tmp_path: Path
) -> None:
    secret, public = generate_ed25519_key()
    with Sink() as sink:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}
        env.update(
            ILP_RECEIVER_WEBHOOK_URL=sink.url,
            ILP_RECEIVER_WEBHOOK_KEY=secret,
            ILP_RECEIVER_WEBHOOK_WINDOW="0.2",
            ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN=TOKEN,
        )
        args = [str(BIN / "ilp-receiver"), "receive", "--uplink", world.gateway.url("shop")]
        args += ["--port", str(free_port()), "--webhook-admin-port", "0"]
        with (tmp_path / "receive.log").open("w") as log:
            proc = subprocess.Popen(
                args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        try:
            ready = ready_line(proc)
            admin = ready["webhook_admin"]
            assert secret not in json.dumps(ready)
            paid = cli("pay", ready["payment_pointer"], "1500", "--uplink",
                       world.gateway.url("payer"), cwd=tmp_path)  # fmt: skip
            assert paid.returncode == 0, paid.stdout + paid.stderr
            sink.wait(lambda s: any(p.event["type"] == "payment.received" for p in s.posts))
            assert get(admin + "metrics", None)[0] == 401
            assert get(admin + "metrics", "x" * 32)[0] == 401
            status, metrics = get(admin + "metrics", TOKEN)
            assert status == 200 and 'ilp_receiver_webhook_queue_depth{state="dead"} 0' in metrics
            status, listed = get(admin + "events?state=dead", TOKEN)
            assert status == 200 and json.loads(listed) == {"events": []}
        finally:
            stop(proc)
        log_text = (tmp_path / "receive.log").read_text()
        assert secret not in log_text and TOKEN not in log_text
    [received] = [p for p in sink.posts if p.event["type"] == "payment.received"]
    verify_webhook(received.body, received.headers, public)
    assert received.event["data"]["amount"] == "1500"
    assert received.event["data"]["account"] == "endpoint:default"
