"""Connector configuration: schema validation, environment overrides, the docs table,
and the ``ilp-receiver connector`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ilp_receiver.connector import config_from_mapping, load_config, render_config_table
from ilp_receiver.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "connector": {"address": "test.conn", "store": "memory:"},
    "accounts": {"alice": {"relation": "child", "transport": "local"}},
}


HTTP: dict[str, Any] = {"transport": "http", "url": "http://peer/", "token": "t"}


def with_account(**fields: Any) -> dict[str, Any]:
    return {**BASE, "accounts": {"alice": {"relation": "child", "transport": "local", **fields}}}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (with_account(max_packet_amount=-1), "accounts.alice.max_packet_amount"),
        (with_account(max_packet_amount="lots"), "accounts.alice.max_packet_amount"),
        (with_account(max_packet_amount=str(2**64)), "accounts.alice.max_packet_amount"),
        (with_account(relation="friend"), "accounts.alice.relation"),
        (with_account(transport="pigeon"), "accounts.alice.transport"),
        (with_account(colour="blue"), "accounts.alice.colour"),
        (with_account(asset_scale=6), "accounts.alice.asset_scale"),
        (with_account(asset_code="EUR"), "accounts.alice.asset_code"),
        (with_account(min_balance=10, max_balance=5), "accounts.alice.min_balance"),
        (with_account(rate_limit=0), "accounts.alice.rate_limit"),
        (with_account(rate_limit_burst=3), "accounts.alice.rate_limit_burst"),
        (with_account(transport="btp-client"), "accounts.alice.url"),
        (with_account(transport="btp-server"), "accounts.alice.token"),
        (with_account(transport="btp-server", token="t"), "accounts.alice.listen"),
        (with_account(transport="http", url="ftp://x"), "accounts.alice.url"),
        (with_account(transport="mini-accounts", relation="peer"), "accounts.alice.relation"),
        (with_account(http_mode="callback"), "accounts.alice.http_mode"),
        (with_account(**HTTP, http_mode="push"), "accounts.alice.http_mode"),
        (with_account(**HTTP, callback_url="http://us/cb"), "accounts.alice.callback_url"),
        (with_account(**HTTP, max_pending=5), "accounts.alice.max_pending"),
        (
            with_account(**HTTP, http_mode="callback", callback_url="file:///etc/passwd"),
            "accounts.alice.callback_url",
        ),
        (
            with_account(**HTTP, http_mode="callback", peer_callback_url="//x"),
            "accounts.alice.peer_callback_url",
        ),
        (with_account(**HTTP, http_mode="callback", max_pending=0), "accounts.alice.max_pending"),
        (with_account(send_routes="yes"), "accounts.alice.send_routes"),
        ({**BASE, "connector": {"address": "nope"}}, "connector.address"),
        ({**BASE, "connector": {"store": "memory:"}}, "connector.address"),
        ({**BASE, "connector": {"address": "test.x", "asset_scale": 300}}, "connector.asset_scale"),
        ({**BASE, "connector": {"address": "test.x", "env": "prod"}}, "connector.env"),
        ({**BASE, "admin": {"port": 1}}, "admin.token"),
        ({**BASE, "extra": {}}, "extra"),
        ({**BASE, "accounts": {}}, "accounts"),
        ({**BASE, "routes": [{"prefix": "test.x", "account": "bob"}]}, "routes[0].account"),
    ],
)
def test_bad_config_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, env={})
    assert info.value.field == field
    assert field in str(info.value)


def test_same_path_twice_on_one_listener_is_refused() -> None:
    data = {
        **BASE,
        "server": {"port": 0},
        "accounts": {
            "a": {"relation": "child", "transport": "http", "url": "http://x/", "token": "t"},
            "b": {"relation": "child", "transport": "http", "url": "http://x/", "token": "t"},
        },
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, env={})
    assert info.value.field == "accounts.b.path"


def test_defaults_and_big_amounts() -> None:
    config = config_from_mapping(with_account(max_packet_amount=str(2**64 - 1)), env={})
    alice = config.accounts["alice"]
    assert alice.max_packet_amount == 2**64 - 1
    assert (alice.asset_code, alice.asset_scale) == ("XYZ", 9)
    assert config.min_message_window_ms == 1000
    assert config.max_hold_time_ms == 30000


def test_environment_overrides_the_file() -> None:
    env = {
        "ILP_CONNECTOR_ADDRESS": "test.fromenv",
        "ILP_CONNECTOR_ADMIN_TOKEN": "env-token",
        "ILP_CONNECTOR_ADMIN_PORT": "0",
        "ILP_CONNECTOR_ACCOUNTS__ALICE__MAX_PACKET_AMOUNT": "77",
        "ILP_CONNECTOR_ROUTE_BROADCAST_ENABLED": "false",
    }
    config = config_from_mapping(BASE, env=env)
    assert config.address == "test.fromenv"
    assert config.admin.token == "env-token"
    assert config.admin.port == 0
    assert config.accounts["alice"].max_packet_amount == 77
    assert config.route_broadcast_enabled is False
    with pytest.raises(ConfigError) as info:
        config_from_mapping(BASE, env={"ILP_CONNECTOR_ACCOUNTS__ALICE__MAX_PACKET_AMOUNT": "x"})
    assert info.value.field.startswith("accounts.alice.max_packet_amount")
    assert "ILP_CONNECTOR_ACCOUNTS__ALICE__MAX_PACKET_AMOUNT" in info.value.field


def test_repr_hides_secrets() -> None:
    data = {
        **BASE,
        "admin": {"port": 0, "token": "very-secret"},
        "accounts": {
            "alice": {
                "relation": "child",
                "transport": "btp-server",
                "token": "very-secret",
                "listen": "0",
            }
        },
    }
    config = config_from_mapping(data, env={})
    assert "very-secret" not in repr(config)
    assert "very-secret" not in repr(config.admin)
    assert "very-secret" not in repr(config.accounts["alice"])


def test_load_config_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[connector]\naddress = "test.t"\nstore = "memory:"\n'
        '[accounts.alice]\nrelation = "child"\ntransport = "local"\nmax_packet_amount = 5\n'
    )
    assert load_config(path, env={}).accounts["alice"].max_packet_amount == 5
    path.write_text("[connector\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.field == "config"


def test_docs_rafiki_recipe_is_a_valid_config() -> None:
    docs = (ROOT / "docs" / "connector.md").read_text(encoding="utf-8")
    recipe = docs.split("**A Rafiki peer**", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config = config_from_mapping(tomllib.loads(recipe), env={})
    account = config.accounts["rafiki"]
    assert (account.transport, account.http_mode, account.relation) == ("http", "sync", "peer")
    assert account.max_packet_amount == 100_000_000
    assert account.token != account.incoming_token


def test_docs_contain_the_rendered_config_table() -> None:
    docs = (ROOT / "docs" / "connector.md").read_text(encoding="utf-8")
    assert render_config_table() in docs


def test_cli_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[connector]\naddress = "test.cli"\n'
        f'store = "{tmp_path / "c.sqlite3"}"\n'
        '[accounts.alice]\nrelation = "child"\ntransport = "btp-server"\n'
        'token = "t"\nlisten = "127.0.0.1:0"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_CONNECTOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilp_receiver.cli", "connector", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        assert ready["ilp_address"] == "test.cli"
        assert ready["accounts"]["alice"]["listen"].startswith("ws://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert json.loads(out.strip().splitlines()[-1]) == {"event": "stopped"}
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[connector]\naddress = "test.cli"\nstore = "memory:"\n'
        '[accounts.alice]\nrelation = "child"\ntransport = "local"\nmax_packet_amount = -5\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "ilp_receiver.cli", "connector", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "accounts.alice.max_packet_amount" in result.stderr
