"""Mini-accounts naming, ownership and registration limits (the token registry, its
journal file, the config fields) and the admin API's strict Bearer auth and failure
limit.  The attacks themselves are reproduced in ``tests/attack/``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ilp_receiver.codec.btp import BtpResponse, auth_message, decode_btp, encode_btp
from ilp_receiver.codec.http_oer import bearer_token, strict_bearer_token
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.connector.accounts import (
    CLIP_LENGTH,
    MAX_ACCOUNT_NAME_LENGTH,
    TokenBucket,
    TokenRegistry,
    clip,
    is_valid_account_name,
    token_digest,
)
from ilp_receiver.connector.admin import AuthFailureLimiter, _client_key, create_admin_app
from ilp_receiver.errors import ConfigError

# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name",
    ["shop", "a", "A-Z_0~9", "x" * MAX_ACCOUNT_NAME_LENGTH, token_digest("some token")],
)
def test_valid_account_names(name: str) -> None:
    assert is_valid_account_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "shop.Z1YDQQ58R0E", ".x", "x.", "a b", "sh\u00f6p", "x" * 65, "a/b", "a\n", None, 5],
)
def test_invalid_account_names(name: Any) -> None:
    assert not is_valid_account_name(name)


def test_clip_bounds_what_is_echoed() -> None:
    assert clip("shop") == "'shop'"
    long = "y" * 10_000
    clipped = clip(long)
    assert len(clipped) < CLIP_LENGTH + 40
    assert "10000 characters" in clipped


# ------------------------------------------------------------------ registry


def test_registry_keeps_first_tokens_and_groups_across_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path)
    registry.register("alice", "one", group="kids", now=1000.0)
    registry.register("bob", "two", group="other", now=1001.0)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alice", "three", group="kids", now=1002.0)
    with pytest.raises(ValueError, match="one ILP address segment"):
        registry.register("a.b", "t", group="kids", now=1002.0)
    assert registry.count("kids") == 1 and registry.count("other") == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    again = TokenRegistry(path)
    assert again.verify("alice", "one") and not again.verify("alice", "two")
    assert not again.verify("carol", "one")
    record = again.get("bob")
    assert record is not None
    assert (record.group, record.created, record.seen) == ("other", 1001.0, 1001.0)
    assert token_digest("one") in path.read_text()  # digests only


def test_a_registration_appends_one_line_whatever_the_number_of_accounts(
    tmp_path: Path,
) -> None:
    """The vulnerable version rewrote (and replaced) the whole file per registration."""
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path)
    for i in range(5000):
        assert registry.check(f"user{i}", "t")
    before = path.stat()
    assert registry.check("one-more", "t")
    after = path.stat()
    assert after.st_ino == before.st_ino  # appended in place, not rewritten
    assert after.st_size - before.st_size < 200


def test_old_token_file_is_migrated_and_refused_names_dropped(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"shop": token_digest("s"), "shop.victim": "d", "web.x.y": "d"}))
    registry = TokenRegistry(path, now=5000.0)
    assert "shop" in registry and len(registry) == 1
    record = registry.get("shop")
    assert record is not None and record.group is None and record.seen == 5000.0
    assert json.loads(path.read_text().splitlines()[0]) == TokenRegistry.HEADER
    assert "shop.victim" not in path.read_text()
    registry.set_group("shop", "kids")
    assert TokenRegistry(path).count("kids") == 1


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path)
    registry.register("alice", "one", group="kids", now=1.0)
    with path.open("a") as f:
        f.write('{"op":"add","account":"bob","dig')
    again = TokenRegistry(path)
    assert "alice" in again and "bob" not in again
    again.register("carol", "c", group="kids", now=2.0)
    assert set(TokenRegistry(path).names("kids")) == {"alice", "carol"}


def test_a_file_that_is_no_token_file_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("not json at all")
    with pytest.raises(ConfigError) as info:
        TokenRegistry(path)
    assert info.value.field == "connector.token_file"


def test_seen_updates_and_removals_keep_the_file_bounded(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path, seen_write_interval=0.0, compact_slack=16)
    for i in range(10):
        registry.register(f"u{i}", "t", group="kids", now=0.0)
    for step in range(1, 3000):
        registry.touch(f"u{step % 10}", float(step))
    lines = path.read_text().splitlines()
    assert len(lines) <= 1 + 2 * 10 + 16 + 1
    assert registry.remove("u3") and not registry.remove("u3")
    again = TokenRegistry(path)
    assert len(again) == 9 and "u3" not in again
    record = again.get("u9")
    assert record is not None and record.seen == 2999.0


def test_seen_is_written_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    registry = TokenRegistry(path, seen_write_interval=60.0)
    registry.register("u", "t", group="kids", now=0.0)
    size = path.stat().st_size
    registry.touch("u", 30.0)
    assert path.stat().st_size == size
    registry.touch("u", 61.0)
    assert path.stat().st_size > size


def test_a_registration_that_cannot_be_written_is_not_accepted(tmp_path: Path) -> None:
    registry = TokenRegistry(tmp_path / "missing-dir" / "tokens.json")
    with pytest.raises(FileNotFoundError):
        registry.register("alice", "t", group="kids", now=0.0)
    assert "alice" not in registry and registry.count("kids") == 0


def test_in_memory_registry() -> None:
    registry = TokenRegistry()
    assert registry.check("alice", "one") and registry.check("alice", "one")
    assert not registry.check("alice", "two")
    assert not registry.check("a.b", "x")
    assert registry.path is None


# ------------------------------------------------------------------ token bucket


def test_token_bucket_retry_after() -> None:
    now = [0.0]
    bucket = TokenBucket(0.5, 2, clock=lambda: now[0])
    assert bucket.full and bucket.available()
    assert bucket.take() and bucket.take() and not bucket.take()
    assert not bucket.available()
    assert bucket.retry_after() == pytest.approx(2.0)
    now[0] = 2.0
    assert bucket.retry_after() == 0.0 and bucket.take()
    now[0] = 100.0
    assert bucket.full


# ------------------------------------------------------------------ config

BASE: dict[str, Any] = {
    "connector": {"address": "test.conn", "store": "memory:"},
    "accounts": {"kids": {"relation": "child", "transport": "mini-accounts", "listen": "0"}},
}


def with_kids(**fields: Any) -> dict[str, Any]:
    return {**BASE, "accounts": {"kids": {**BASE["accounts"]["kids"], **fields}}}


def test_registration_settings_defaults_and_values() -> None:
    kids = config_from_mapping(BASE, env={}).accounts["kids"]
    assert (kids.max_accounts, kids.registration_rate, kids.registration_burst) == (1000, 1.0, 10)
    assert kids.registration_expiry_days == 30
    data = with_kids(
        max_accounts=5, registration_rate=0.5, registration_burst=2, registration_expiry_days=0
    )
    kids = config_from_mapping(data, env={}).accounts["kids"]
    assert (kids.max_accounts, kids.registration_rate, kids.registration_burst) == (5, 0.5, 2)
    assert kids.registration_expiry_days == 0
    env = {"ILP_CONNECTOR_ACCOUNTS__KIDS__MAX_ACCOUNTS": "7"}
    assert config_from_mapping(BASE, env=env).accounts["kids"].max_accounts == 7


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (with_kids(max_accounts=0), "accounts.kids.max_accounts"),
        (with_kids(max_accounts="many"), "accounts.kids.max_accounts"),
        (with_kids(registration_rate=0), "accounts.kids.registration_rate"),
        (with_kids(registration_rate=-1.5), "accounts.kids.registration_rate"),
        (with_kids(registration_burst=0), "accounts.kids.registration_burst"),
        (with_kids(registration_expiry_days=-1), "accounts.kids.registration_expiry_days"),
        (
            {
                **BASE,
                "accounts": {
                    "alice": {"relation": "child", "transport": "local", "max_accounts": 3}
                },
            },
            "accounts.alice.max_accounts",
        ),
    ],
)
def test_bad_registration_settings_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, env={})
    assert info.value.field == field


# ------------------------------------------------------------------ connector


def config_with(tmp_path: Path, accounts: dict[str, Any]) -> Any:
    return config_from_mapping(
        {
            "connector": {
                "address": "test.conn",
                "store": "memory:",
                "token_file": str(tmp_path / "tokens.json"),
            },
            "accounts": accounts,
        },
        env={},
    )


KIDS = {"kids": {"relation": "child", "transport": "mini-accounts", "listen": "0"}}


async def login(url: str, username: str, token: str) -> bool:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_bytes(encode_btp(auth_message(1, token, username)))
        msg = await ws.receive(timeout=5)
        return msg.type is aiohttp.WSMsgType.BINARY and isinstance(
            decode_btp(msg.data), BtpResponse
        )


def test_owned_prefixes() -> None:
    config = config_from_mapping(
        {
            **BASE,
            "accounts": {
                **BASE["accounts"],
                "up": {"relation": "peer", "transport": "local"},
            },
            "routes": [
                {"prefix": "test.conn.depot", "account": "up"},
                {"prefix": "test.conn.vault.inner", "account": "up"},
                {"prefix": "test.conn.dot.", "account": "up"},
                {"prefix": "test.other.x", "account": "up"},
                {"prefix": "test.conn", "account": "up"},
            ],
        },
        env={},
    )
    c = Connector(config)
    assert c._prefix_owner("shop") is None
    assert c._prefix_owner("other") is None  # test.other.x is not under test.conn.other
    assert c._prefix_owner("depotx") is None  # segment-wise, not a string prefix
    for name in ("up", "kids", "depot", "vault", "dot"):
        assert c._prefix_owner(name) is not None, name
    # with no address yet (IL-DCP pending) no name can be checked, so none is given
    no_address = config_from_mapping(
        {
            "connector": {"store": "memory:"},
            "accounts": {
                **BASE["accounts"],
                "up": {"relation": "parent", "transport": "btp-client", "url": "btp+ws://:t@x:1"},
            },
        },
        env={},
    )
    assert Connector(no_address)._prefix_owner("shop") is not None


async def test_longest_allowed_username_works(tmp_path: Path) -> None:
    async with Connector(config_with(tmp_path, KIDS)) as c:
        url = c.listeners["kids"]
        assert await login(url, "a" * MAX_ACCOUNT_NAME_LENGTH, "t")
        assert not await login(url, "a" * (MAX_ACCOUNT_NAME_LENGTH + 1), "t")
        assert await login(url, "Shop_~-9", "t")


async def test_first_tokens_survive_a_restart(tmp_path: Path) -> None:
    for _ in range(2):
        async with Connector(config_with(tmp_path, KIDS)) as c:
            url = c.listeners["kids"]
            assert await login(url, "keeper", "first")
            assert not await login(url, "keeper", "second")
            assert await login(url, "", "anonymous")
    text = (tmp_path / "tokens.json").read_text()
    assert "first" not in text and "anonymous" not in text  # digests only


async def test_a_name_belongs_to_one_mini_accounts_section(tmp_path: Path) -> None:
    accounts = {
        **KIDS,
        "guests": {
            "relation": "child",
            "transport": "mini-accounts",
            "listen": "0",
            "path": "/guests",
        },
    }
    async with Connector(config_with(tmp_path, accounts)) as c:
        assert await login(c.listeners["kids"], "bob", "t")
        assert not await login(c.listeners["guests"], "bob", "t")
        assert await login(c.listeners["guests"], "eve", "t")
        assert c.accounts["bob"].group == "kids" and c.accounts["eve"].group == "guests"


async def test_refusals_are_logged_with_the_name_clipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ilp_receiver")
    async with Connector(config_with(tmp_path, KIDS)) as c:
        assert not await login(c.listeners["kids"], "z" * 5000 + ".x", "t")
    lines = [r.getMessage() for r in caplog.records if "mini-accounts" in r.getMessage()]
    assert lines, "the refusal is logged"
    for line in lines:
        assert "z" * (CLIP_LENGTH + 1) not in line
        assert len(line) < 400


# ------------------------------------------------------------------ admin auth


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc", "abc"),
        ("abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearerabc", None),
        ("Basic abc", None),
        ("", None),
    ],
)
def test_strict_bearer_token(header: str, token: str | None) -> None:
    assert strict_bearer_token(header) == token


def test_lenient_bearer_token_is_unchanged_for_http_peers() -> None:
    # RFC 35 / ilp-plugin-http: "the server strips an optional Bearer prefix"
    assert bearer_token("abc") == "abc"
    assert bearer_token("Bearer abc") == "abc"


def test_failure_limiter_recovers_and_stays_bounded() -> None:
    now = [0.0]
    limiter = AuthFailureLimiter(max_failures=3, window=30.0, max_clients=100, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("1.2.3.4") == 0.0
        limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == pytest.approx(10.0)
    assert limiter.retry_after("5.6.7.8") == 0.0
    now[0] = 10.0
    assert limiter.retry_after("1.2.3.4") == 0.0
    for i in range(10_000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    now[0] = 1000.0
    assert limiter.retry_after("10.0.39.15") == 0.0  # refilled: forgotten
    assert len(limiter) == 99


def test_client_key_groups_ipv6_by_64() -> None:
    assert _client_key("127.0.0.1") == "127.0.0.1"
    assert _client_key("2001:db8::1") == _client_key("2001:db8::ffff") == "2001:db8::/64"
    assert _client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert _client_key(None) == "unknown"


async def test_admin_limit_lifts_after_retry_after() -> None:
    now = [0.0]
    limiter = AuthFailureLimiter(max_failures=2, window=20.0, clock=lambda: now[0])
    config = config_from_mapping(
        {**BASE, "admin": {"port": 0, "token": "tok", "metrics_public": True}}, env={}
    )
    async with Connector(config) as connector:
        app = create_admin_app(connector, config.admin, limiter=limiter)
        async with TestClient(TestServer(app)) as client:
            await _limit_lifts(client, now)


async def _limit_lifts(client: TestClient[Any, Any], now: list[float]) -> None:
    for _ in range(2):  # raw tokens: failures
        assert (await client.get("/status", headers={"Authorization": "tok"})).status == 401
    r = await client.get("/status", headers={"Authorization": "Bearer tok"})
    assert r.status == 429 and r.headers["Retry-After"] == "10"
    # a public /metrics needs no token and is not limited
    assert (await client.get("/metrics")).status == 200
    now[0] = 10.0
    assert (await client.get("/status", headers={"Authorization": "Bearer tok"})).status == 200
