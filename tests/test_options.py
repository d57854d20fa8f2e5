"""The receiver settings (``ilp_receiver.options``): one frozen type, filled from keywords,
framework configuration and the environment; every bad value a ConfigError naming the
setting as it was given."""

from __future__ import annotations

import argparse
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from flask import Flask

from ilp_receiver.commands import receive
from ilp_receiver.errors import ConfigError
from ilp_receiver.options import (
    SETTING_NAMES,
    ReceiverOptions,
    ReceiverSettings,
    load_or_create_secret,
)
from ilp_receiver.paywall import PaidRoutes, paywall_payment_hook
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver_flask import IlpReceiver, get_service

UPLINK = "btp+ws://shop:token@127.0.0.1:7768"
HEX = "ab" * 32


def test_one_frozen_type_and_one_keyword_list() -> None:
    options = ReceiverOptions()
    with pytest.raises(FrozenInstanceError):
        options.uplink = UPLINK  # type: ignore[misc]
    fields = set(ReceiverOptions.__dataclass_fields__)
    assert fields == set(ReceiverSettings.__annotations__) == set(SETTING_NAMES)


def test_from_env_reads_every_text_setting() -> None:
    env = {
        "ILP_RECEIVER_UPLINK": UPLINK,
        "ILP_RECEIVER_SECRET": HEX,
        "ILP_RECEIVER_STORE": "balances.db",
        "ILP_RECEIVER_MAX_BALANCE": "1000",
        "ILP_RECEIVER_NAME": "Shop",
        "ILP_RECEIVER_SPSP_MAX_AGE": "30",
        "ILP_RECEIVER_STREAM": "no",
        "ILP_RECEIVER_PAID": '{"/api/*": 10}',
        "ILP_RECEIVER_POINTERS": "bob, alice",
        "ILP_RECEIVER_WELL_KNOWN": "0",
        "ILP_RECEIVER_PAY_METHOD": "STREAM",
        "ILP_RECEIVER_PAY_WAIT": "2.5",
        "ILP_RECEIVER_REQUIRE_UPLINK": "true",
        "ILP_RECEIVER_HEALTH_PATH": "/health",
        "ILP_RECEIVER_ON_PAYMENT": "ignored: code only",
    }
    options = ReceiverOptions.from_env(env)
    assert options.uplink == UPLINK
    assert options.secret == bytes.fromhex(HEX)
    assert options.store == "balances.db"
    assert options.max_balance == 1000
    assert options.receiver_name == "Shop"
    assert options.spsp_max_age == 30
    assert options.stream is False
    assert options.paid.match("GET", "/api/x") == 10
    assert options.pointers == ("bob", "alice")
    assert options.well_known is False
    assert options.pay_method == "stream"
    assert options.pay_wait == 2.5
    assert options.require_uplink is True
    assert options.health_path == "/health"
    assert options.on_payment is paywall_payment_hook
    assert ReceiverOptions.from_env({"ILP_RECEIVER_STORE": "  "}).store is None  # empty: unset


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ILP_RECEIVER_UPLINK", "ws://no-scheme-we-know"),
        ("ILP_RECEIVER_SECRET", "not hex at all"),
        ("ILP_RECEIVER_SECRET", "abcd"),
        ("ILP_RECEIVER_MAX_BALANCE", "-1"),
        ("ILP_RECEIVER_MAX_BALANCE", "lots"),
        ("ILP_RECEIVER_SPSP_MAX_AGE", "soon"),
        ("ILP_RECEIVER_STREAM", "maybe"),
        ("ILP_RECEIVER_PAID", "/api/*=10"),
        ("ILP_RECEIVER_PAID", '{"/api/*": -1}'),
        ("ILP_RECEIVER_POINTERS", "bob,not a name"),
        ("ILP_RECEIVER_PAY_METHOD", "ilp"),
        ("ILP_RECEIVER_PAY_WAIT", "forever"),
        ("ILP_RECEIVER_REQUIRE_UPLINK", "sure"),
        ("ILP_RECEIVER_HEALTH_PATH", "health"),
    ],
)
def test_every_bad_environment_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions.from_env({variable: value})
    assert caught.value.field == variable


def test_a_secret_that_is_not_hex_is_a_config_error_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions().replace(secret="zz" * 32)
    assert caught.value.field == "secret"
    assert "hex" in caught.value.problem
    with pytest.raises(ConfigError) as caught:
        AsyncReceiver(UPLINK, secret="zz" * 32)
    assert caught.value.field == "secret"
    app = Flask(__name__)
    app.config.update(ILP_RECEIVER_UPLINK=UPLINK, ILP_RECEIVER_SECRET="zz" * 32)
    with pytest.raises(ConfigError) as caught:
        IlpReceiver(app)
    assert caught.value.field == "ILP_RECEIVER_SECRET"
    file = tmp_path / "bad.secret"
    file.write_text("not hex\n")
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions().replace(secret_file=file).receiver_secret()
    assert caught.value.field == "ILP_RECEIVER_SECRET_FILE"


def test_precedence_keywords_over_config_over_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ILP_RECEIVER_UPLINK", UPLINK)
    monkeypatch.setenv("ILP_RECEIVER_STORE", "from-env.db")
    monkeypatch.setenv("ILP_RECEIVER_NAME", "env")
    monkeypatch.setenv("ILP_RECEIVER_PAY_WAIT", "1")
    config = ReceiverOptions.from_mapping(
        {"ILP_RECEIVER_STORE": "from-config.db", "ILP_RECEIVER_NAME": "config", "OTHER": 1},
        prefix="ILP_RECEIVER_",
    )
    options = ReceiverOptions.from_settings(config=config, receiver_name="keyword")
    assert options.uplink == UPLINK
    assert options.store == "from-config.db"
    assert options.receiver_name == "keyword"
    assert options.pay_wait == 1.0
    # a ready options object replaces the environment
    assert ReceiverOptions.from_settings(ReceiverOptions()).uplink is None


def test_flask_takes_every_setting_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ILP_RECEIVER_UPLINK", UPLINK)
    monkeypatch.setenv("ILP_RECEIVER_SECRET_FILE", str(tmp_path / "r.secret"))
    monkeypatch.setenv("ILP_RECEIVER_PAID", '{"/x": 3}')
    app = Flask(__name__)
    IlpReceiver(app)
    options = get_service(app).options
    assert options.uplink == UPLINK
    assert options.secret_file == tmp_path / "r.secret"
    assert get_service(app).routes.match("GET", "/x") == 3


def test_secret_and_secret_file_layers(tmp_path: Path) -> None:
    env = {"ILP_RECEIVER_SECRET_FILE": str(tmp_path / "f")}
    options = ReceiverOptions.from_env(env).replace(secret=HEX)
    assert options.secret == bytes.fromhex(HEX)
    assert options.secret_file is None  # the higher layer's secret wins
    options = ReceiverOptions.from_env({"ILP_RECEIVER_SECRET": HEX}).replace(secret_file="g")
    assert options.secret is None
    assert options.secret_file == Path("g")
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions().replace(secret=HEX, secret_file="g")
    assert caught.value.field == "secret_file"


def test_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "receiver.secret"
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(path), range(16)))
    assert len(secrets) == 1
    assert len(secrets.pop()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["receiver.secret"]  # no leftovers
    options = ReceiverOptions.from_env({"ILP_RECEIVER_SECRET_FILE": str(path)})
    assert options.receiver_secret() == bytes.fromhex(path.read_text().strip())


def test_paid_settings_are_checked_and_kept(tmp_path: Path) -> None:
    routes = PaidRoutes({"/a": 1})
    assert ReceiverOptions().replace(paid=routes).paid is routes
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions().replace(paid={"/a": "ten"})
    assert caught.value.field == "paid"
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions().replace(colour="red")
    assert caught.value.field == "colour"


def test_uplink_is_required_where_a_receiver_is_built() -> None:
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions().check_uplink()
    assert caught.value.field == "ILP_RECEIVER_UPLINK"
    assert "btp+ws://" in caught.value.problem


def test_django_style_mapping_names_the_key() -> None:
    label = lambda key: f"ILP_RECEIVER[{key!r}]"  # noqa: E731
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions.from_settings(
            config=ReceiverOptions.from_mapping({"SECRET": "nope"}, label=label, strict=True)
        )
    assert caught.value.field == "ILP_RECEIVER['SECRET']"
    with pytest.raises(ConfigError) as caught:
        ReceiverOptions.from_mapping({"UPLNK": UPLINK}, label=label, strict=True)
    assert caught.value.field == "ILP_RECEIVER['UPLNK']"
    found = ReceiverOptions.from_mapping({"store": "x.db", "NAME": "n"}, label=label, strict=True)
    assert found == {
        "store": ("x.db", "ILP_RECEIVER['store']"),
        "receiver_name": ("n", "ILP_RECEIVER['NAME']"),
    }


def test_receive_command_takes_credentials_from_the_environment(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    receive.add_arguments(parser)
    args = parser.parse_args([])
    env = {
        "ILP_RECEIVER_UPLINK": UPLINK,
        "ILP_RECEIVER_STORE": str(tmp_path / "b.db"),
        "ILP_RECEIVER_SECRET": HEX,
        "ILP_RECEIVER_NAME": "Env shop",
    }
    receive.apply_environment(args, env)
    assert (args.uplink, args.store, args.name) == (UPLINK, str(tmp_path / "b.db"), "Env shop")
    assert args.secret == bytes.fromhex(HEX)
    args = parser.parse_args(["--uplink", "btp+ws://x:y@h:1", "--secret-file", "s"])
    receive.apply_environment(args, env)
    assert args.uplink == "btp+ws://x:y@h:1"
    assert args.secret is None and args.secret_file == "s"
    args = parser.parse_args([])
    with pytest.raises(ConfigError) as caught:
        receive.apply_environment(args, {})
    assert "ILP_RECEIVER_UPLINK" in caught.value.problem
