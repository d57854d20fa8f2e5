"""Attack report item 7 against a real connector's admin API on loopback: the raw token
was accepted without the ``Bearer`` scheme, and failed attempts were not limited.

The admin API listens on 127.0.0.1; a second client address comes from binding the
client socket to 127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.connector.admin import ADMIN_MAX_FAILURES

pytestmark = pytest.mark.attack

TOKEN = "admin-secret"


def make_config() -> Any:
    return config_from_mapping(
        {
            "connector": {"address": "test.mynode", "store": "memory:"},
            "admin": {"port": 0, "token": TOKEN},
            "accounts": {"shop": {"relation": "child", "transport": "local"}},
        },
        env={},
    )


@pytest.fixture
async def connector() -> AsyncIterator[Connector]:
    async with Connector(make_config()) as c:
        assert c.admin_url is not None and c.admin_url.startswith("http://127.0.0.1:")
        yield c


async def status_of(http: aiohttp.ClientSession, url: str, authorization: str | None) -> int:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http.get(url + "status", headers=headers) as r:
        await r.read()
        return r.status


async def test_raw_token_without_the_bearer_scheme_is_refused(connector: Connector) -> None:
    url = connector.admin_url
    assert url is not None
    async with aiohttp.ClientSession() as http:
        assert await status_of(http, url, TOKEN) == 401  # the reported bypass
        assert await status_of(http, url, f"Basic {TOKEN}") == 401
        assert await status_of(http, url, "Bearer") == 401
        assert await status_of(http, url, f"Bearer{TOKEN}") == 401
        assert await status_of(http, url, None) == 401
        # the scheme is case-insensitive (RFC 7235)
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert await status_of(http, url, f"{scheme} {TOKEN}") == 200, scheme


async def test_failed_attempts_are_rate_limited_per_client_address(connector: Connector) -> None:
    url = connector.admin_url
    assert url is not None
    async with aiohttp.ClientSession() as http:
        for i in range(ADMIN_MAX_FAILURES):
            assert await status_of(http, url, f"Bearer guess-{i}") == 401, i
        async with http.get(url + "status", headers={"Authorization": "Bearer guess-x"}) as r:
            assert r.status == 429
            retry_after = int(r.headers["Retry-After"])
            assert 1 <= retry_after <= 60
            body = await r.json()
            assert body == {"error": "Too Many Requests", "retry_after": retry_after}
        # while limited the token is not even checked: the right one is refused as well
        assert await status_of(http, url, f"Bearer {TOKEN}") == 429
        for path in ("accounts", "balances", "routes", "metrics"):
            async with http.get(url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 429, path

    # another client address is not affected
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=other) as http2:
        assert await status_of(http2, url, f"Bearer {TOKEN}") == 200
        assert await status_of(http2, url, "Bearer wrong") == 401
