"""Webhook settings from keywords, the environment and files (ConfigError naming the
setting), the ``ilp-receiver webhooks`` command and the admin API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ilp_receiver.cli import main
from ilp_receiver.errors import ConfigError
from ilp_receiver.options import ReceiverOptions
from ilp_receiver.stores import SqliteStore
from ilp_receiver.stores.outbox import OutboxEntry
from ilp_receiver.webhooks import WebhookDispatcher, generate_ed25519_key, generate_hmac_secret
from ilp_receiver.webhooks.admin import create_webhook_admin_app

SIGNING, PUBLIC = generate_ed25519_key()


def test_the_environment_switches_webhooks_on() -> None:
    env = {
        "ILP_RECEIVER_WEBHOOK_URL": "https://a.example/hook, http://127.0.0.1:8000/h",
        "ILP_RECEIVER_WEBHOOK_KEY": f"{SIGNING} {generate_hmac_secret()}",
        "ILP_RECEIVER_WEBHOOK_WINDOW": "2.5",
        "ILP_RECEIVER_WEBHOOK_MAX_AGE": "600",
    }
    options = ReceiverOptions.from_env(env)
    assert SIGNING not in repr(options)
    config = options.webhook_config()
    assert config is not None
    assert config.urls == ("https://a.example/hook", "http://127.0.0.1:8000/h")
    assert [key.scheme for key in config.keys] == ["v1a", "v1"]
    assert (config.window, config.max_age, config.dispatch) == (2.5, 600.0, True)
    assert SIGNING not in repr(config)
    assert ReceiverOptions.from_env({}).webhook_config() is None
    assert options.receiver_kwargs()["webhooks"] == config


def test_a_key_file_and_outbox_only_receivers(tmp_path: Path) -> None:
    key_file = tmp_path / "hook.key"
    key_file.write_text(SIGNING + "\n")
    env = {"ILP_RECEIVER_WEBHOOK_URL": "http://x/", "ILP_RECEIVER_WEBHOOK_KEY_FILE": str(key_file)}
    config = ReceiverOptions.from_env(env).webhook_config()
    assert config is not None and config.keys[0].public_key == PUBLIC
    # a receiver that leaves delivery to `ilp-receiver webhooks run` needs no key
    env = {"ILP_RECEIVER_WEBHOOK_URL": "http://x/", "ILP_RECEIVER_WEBHOOK_DISPATCH": "false"}
    config = ReceiverOptions.from_env(env).webhook_config()
    assert config is not None and config.keys == () and not config.dispatch


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ILP_RECEIVER_WEBHOOK_URL", "ftp://x/", "http:// or https://"),
        ("ILP_RECEIVER_WEBHOOK_URL", "http://x/, http://x/", "twice"),
        ("ILP_RECEIVER_WEBHOOK_KEY", "whsk_no!pe", "base64"),
        ("ILP_RECEIVER_WEBHOOK_KEY", PUBLIC, "cannot sign"),
        ("ILP_RECEIVER_WEBHOOK_WINDOW", "-1", ">= 0"),
        ("ILP_RECEIVER_WEBHOOK_MAX_AGE", "0", "positive"),
        ("ILP_RECEIVER_WEBHOOK_DISPATCH", "maybe", "true or false"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, problem: str) -> None:
    env = {"ILP_RECEIVER_WEBHOOK_URL": "http://x/", variable: value}
    with pytest.raises(ConfigError) as info:
        ReceiverOptions.from_env(env).webhook_config()
    assert info.value.field == variable
    assert problem in info.value.problem
    if "KEY" in variable:
        assert value not in str(info.value)


def test_a_missing_key_or_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ReceiverOptions.from_env({"ILP_RECEIVER_WEBHOOK_URL": "http://x/"}).webhook_config()
    assert info.value.field == "ILP_RECEIVER_WEBHOOK_KEY"
    env = {
        "ILP_RECEIVER_WEBHOOK_URL": "http://x/",
        "ILP_RECEIVER_WEBHOOK_KEY_FILE": str(tmp_path / "missing"),
    }
    with pytest.raises(ConfigError) as info:
        ReceiverOptions.from_env(env).webhook_config()
    assert info.value.field == "ILP_RECEIVER_WEBHOOK_KEY_FILE"
    with pytest.raises(ConfigError) as info:
        ReceiverOptions().replace(webhook_key=SIGNING, webhook_key_file="k")
    assert info.value.field == "webhook_key_file"


def test_cli_keygen_list_replay_and_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hook.key"
    assert main(["webhooks", "keygen", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    secret = out.read_text().strip()
    assert secret.startswith("whsk_") and secret not in json.dumps(report)
    assert report["public_key"].startswith("whpk_")
    assert out.stat().st_mode & 0o777 == 0o600
    assert main(["webhooks", "keygen", "--out", str(out)]) == 2  # never overwritten
    assert out.read_text().strip() == secret

    import asyncio

    db = tmp_path / "b.db"

    async def fill() -> str:
        async with SqliteStore(db) as store:
            entry = OutboxEntry("payment.received", "a", 5)
            await store.add_with_outbox("a", 5, [entry])
            [event] = await store.outbox_claim("t", 1, 30)
            await store.outbox_retry(event.event_id, event.token, due=0, error="x", dead=True)
            return entry.event_id

    event_id = asyncio.run(fill())
    capsys.readouterr()
    assert main(["webhooks", "stats", "--store", str(db)]) == 0
    assert json.loads(capsys.readouterr().out) == {"pending": 0, "dead": 1}
    assert main(["webhooks", "list", "--store", str(db), "--state", "dead"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["id"] == event_id
    assert main(["webhooks", "replay", "--store", str(db), event_id]) == 0
    assert main(["webhooks", "replay", "--store", str(db), "evt_unknown"]) == 1
    capsys.readouterr()
    assert main(["webhooks", "stats", "--store", str(db)]) == 0
    assert json.loads(capsys.readouterr().out) == {"pending": 1, "dead": 0}


async def test_the_admin_api_lists_replays_and_needs_its_token(tmp_path: Path) -> None:
    from ilp_receiver.webhooks.dispatcher import WebhookConfig, signing_keys

    token = "t" * 32
    async with SqliteStore(tmp_path / "b.db") as store:
        entry = OutboxEntry("payment.received", "a", 5)
        await store.add_with_outbox("a", 5, [entry])
        [event] = await store.outbox_claim("t", 1, 30)
        await store.outbox_retry(event.event_id, event.token, due=0, error="HTTP 500", dead=True)
        config = WebhookConfig(("http://127.0.0.1:9/",), signing_keys([SIGNING]))
        dispatcher = WebhookDispatcher(store, config)
        with pytest.raises(ConfigError):
            create_webhook_admin_app(dispatcher, "short")
        app = create_webhook_admin_app(dispatcher, token)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/events")).status == 401
            bad = await client.get("/events", headers={"Authorization": "Bearer " + "x" * 32})
            assert bad.status == 401
            auth = {"Authorization": "Bearer " + token}
            dead = await (await client.get("/events?state=dead", headers=auth)).json()
            assert [e["id"] for e in dead["events"]] == [entry.event_id]
            assert dead["events"][0]["last_error"] == "HTTP 500"
            assert (await client.get("/events?limit=0", headers=auth)).status == 400
            assert (await client.post("/events/evt_nope/replay", headers=auth)).status == 404
            replayed = await client.post(f"/events/{entry.event_id}/replay", headers=auth)
            assert replayed.status == 200
            metrics = await (await client.get("/metrics", headers=auth)).text()
            assert 'ilp_receiver_webhook_queue_depth{state="pending"} 1' in metrics
        await dispatcher.stop()
