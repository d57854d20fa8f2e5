"""ILP over HTTP/2 (ilp_receiver.links.http2) on loopback.

* h2c with prior knowledge: 100 Prepares at once on one HTTP/2 connection to a link's
  endpoint, all in the handler at the same time (it waits for all 100 before answering,
  so only multiplexed streams can finish), from httpx and from our own link's client.
* The receiver's uplink and the connector's HTTP account over h2c: IL-DCP, then 100
  concurrent PSK2 Prepares on one connection to each, all fulfilled.
* TLS with ALPN: an HTTP/2 client gets ``h2``, an HTTP/1.1-only client (aiohttp) gets
  ``http/1.1`` on the same port; client certificates are required when configured.
* Bad or missing TLS files are ConfigErrors naming the setting.
* The callback mode works over HTTP/2 as well.
* A Prepare whose HTTP/2 client went away before the Fulfill could be written has its
  credit reverted, as over HTTP/1.1; one connection outlives 1000 requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReply,
    decode_reply,
    encode_packet,
)
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.errors import ConfigError, LinkError
from ilp_receiver.links.factory import open_link
from ilp_receiver.links.http import HttpCallbackLink, HttpLink, HttpSyncLink
from ilp_receiver.psk2.sender import build_chunk_prepare
from ilp_receiver.receiver import AsyncReceiver

from .tls_certs import TlsFiles, make_tls_files

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
CONCURRENT = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(destination: str = "test.b.alice", seconds: float = 20.0) -> IlpPrepare:
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
    return IlpPrepare(1000, expires, CONDITION, destination, b"")


class Barrier:
    """A handler that answers only once ``n`` Prepares are inside it at the same time."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.inside = 0
        self.most = 0
        self.full = asyncio.Event()

    async def __call__(self, packet: IlpPrepare) -> IlpReply:
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside >= self.n:
            self.full.set()
        await asyncio.wait_for(self.full.wait(), 10)
        self.inside -= 1
        return IlpFulfill(FULFILLMENT, b"ok")


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path)


def h2c_client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http1=False, http2=True, limits=httpx.Limits(max_connections=1), **options
    )


async def post_all(
    client: httpx.AsyncClient, url: str, bodies: list[bytes], token: str
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    return await asyncio.gather(
        *(client.post(url, content=body, headers=headers, timeout=15) for body in bodies)
    )


async def test_h2c_100_concurrent_prepares_on_one_connection() -> None:
    link = HttpSyncLink(None, token="out", incoming_token="in", listen_port=0, http2=True)
    barrier = Barrier(CONCURRENT)
    link.set_handler(barrier)
    link.local_address = "test.b"
    await link.start()
    try:
        body = encode_packet(prepare())
        async with h2c_client() as client:
            responses = await post_all(client, link.server_url or "", [body] * CONCURRENT, "in")
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert {r.status_code for r in responses} == {200}
        assert all(decode_reply(r.content) == IlpFulfill(FULFILLMENT, b"ok") for r in responses)
        assert barrier.most == CONCURRENT
    finally:
        await link.stop()


@pytest.mark.parametrize("cls", [HttpSyncLink, HttpCallbackLink])
async def test_our_http2_client_multiplexes_on_one_connection(cls: type[HttpLink]) -> None:
    a = cls(None, token="ab", incoming_token="ba", listen_port=0, http2=True, max_connections=1)
    b = cls(None, token="ba", incoming_token="ab", listen_port=0, http2=True, max_connections=1)
    barrier = Barrier(CONCURRENT)
    b.set_handler(barrier)
    await a.start()
    await b.start()
    a.peer_url, b.peer_url = b.server_url, a.server_url
    try:
        replies = await asyncio.gather(*(a.send(prepare()) for _ in range(CONCURRENT)))
        assert replies == [IlpFulfill(FULFILLMENT, b"ok")] * CONCURRENT
        assert barrier.most == CONCURRENT
    finally:
        await a.stop()
        await b.stop()


async def test_receiver_uplink_and_connector_account_over_h2c() -> None:
    conn_port, receiver_port = free_port(), free_port()
    config = config_from_mapping(
        {
            "connector": {"address": "test.c", "store": "memory:"},
            "accounts": {
                "shop": {
                    "relation": "child",
                    "transport": "http",
                    "http2": True,
                    "url": f"http://127.0.0.1:{receiver_port}/",
                    "token": "tok",
                    "listen": f"127.0.0.1:{conn_port}",
                    "path": "/shop/",
                }
            },
        },
        env={},
    )
    secret = os.urandom(32)
    async with Connector(config) as connector:
        assert connector.listeners["shop"] == f"http://127.0.0.1:{conn_port}/shop/"
        # IL-DCP from the receiver to the connector goes over h2c too
        receiver = AsyncReceiver(
            f"http+oer://tok@127.0.0.1:{conn_port}/shop/?listen=127.0.0.1:{receiver_port}&http2=1",
            secret=secret,
            stream=False,
        )
        await receiver.start()
        try:
            assert receiver.address.startswith("test.c.shop")
            destination, shared = receiver.issue()

            def chunks() -> list[bytes]:
                expires = datetime.now(UTC) + timedelta(seconds=30)
                expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
                return [
                    encode_packet(
                        build_chunk_prepare(
                            destination,
                            shared,
                            amount=10,
                            expires_at=expires,
                            iv=os.urandom(12),
                            payment_id=os.urandom(16),
                            chunk_amount=10,
                        )
                    )
                    for _ in range(CONCURRENT)
                ]

            async with h2c_client() as client:
                # straight to the receiver's uplink endpoint
                to_receiver = await post_all(
                    client, f"http://127.0.0.1:{receiver_port}/", chunks(), "tok"
                )
            async with h2c_client() as client:
                # to the connector's account endpoint: routed back down to the receiver
                to_connector = await post_all(
                    client, f"http://127.0.0.1:{conn_port}/shop/", chunks(), "tok"
                )
            for responses in (to_receiver, to_connector):
                assert {r.http_version for r in responses} == {"HTTP/2"}
                assert {r.status_code for r in responses} == {200}
                replies = [decode_reply(r.content) for r in responses]
                assert all(isinstance(r, IlpFulfill) for r in replies), replies[:3]
        finally:
            await receiver.stop()


async def test_alpn_picks_h2_or_http11_over_tls(tls: TlsFiles) -> None:
    link = HttpSyncLink(
        None,
        token="out",
        incoming_token="in",
        listen_port=0,
        tls_cert=tls.server_cert,
        tls_key=tls.server_key,
    )
    link.set_handler(Barrier(1))
    await link.start()
    url = link.server_url or ""
    assert url.startswith("https://127.0.0.1:")
    body = encode_packet(prepare())
    headers = {"Authorization": "Bearer in"}
    try:
        context = ssl.create_default_context(cafile=tls.ca)
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            response = await client.post(url, content=body, headers=headers)
        assert response.http_version == "HTTP/2"
        assert isinstance(decode_reply(response.content), IlpFulfill)
        # aiohttp speaks only HTTP/1.1 and offers no ALPN h2
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url, data=body, headers=headers, ssl=ssl.create_default_context(cafile=tls.ca)
            ) as r,
        ):
            assert r.version == aiohttp.HttpVersion11
            assert isinstance(decode_reply(await r.read()), IlpFulfill)
        # a client that does not trust our CA does not get through
        async with httpx.AsyncClient(
            http2=True, verify=ssl.create_default_context(cafile=tls.other_ca)
        ) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(url, content=body, headers=headers)
    finally:
        await link.stop()


async def test_tls_client_certificates_between_our_links(tls: TlsFiles) -> None:
    server_side = HttpSyncLink(
        None,
        token="ba",
        incoming_token="ab",
        listen_port=0,
        http2=True,
        tls_cert=tls.server_cert,
        tls_key=tls.server_key,
        tls_client_ca=tls.ca,
    )
    server_side.set_handler(Barrier(1))
    await server_side.start()
    with_cert = HttpSyncLink(
        server_side.server_url,
        token="ab",
        http2=True,
        tls_ca=tls.ca,
        tls_client_cert=tls.client_cert,
        tls_client_key=tls.client_key,
    )
    without_cert = HttpSyncLink(server_side.server_url, token="ab", http2=True, tls_ca=tls.ca)
    await with_cert.start()
    await without_cert.start()
    try:
        assert await with_cert.send(prepare()) == IlpFulfill(FULFILLMENT, b"ok")
        with pytest.raises(LinkError):  # refused in the TLS handshake
            await without_cert.send(prepare())
    finally:
        await with_cert.stop()
        await without_cert.stop()
        await server_side.stop()


def test_bad_or_missing_tls_files_name_the_setting(tls: TlsFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    missing = str(tmp_path / "nope.pem")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_cert": missing, "tls_key": tls.server_key}, "tls_cert"),
        ({"tls_cert": tls.server_cert, "tls_key": missing}, "tls_key"),
        ({"tls_cert": str(garbage), "tls_key": tls.server_key}, "tls_cert"),
        ({"tls_cert": tls.server_cert, "tls_key": tls.client_key}, "tls_cert"),
        ({"tls_cert": tls.server_cert}, "tls_key"),
        (
            {"tls_cert": tls.server_cert, "tls_key": tls.server_key, "tls_client_ca": missing},
            "tls_client_ca",
        ),
        ({"tls_ca": str(garbage)}, "tls_ca"),
        ({"tls_client_cert": tls.client_cert}, "tls_client_key"),
    ]
    for options, setting in cases:
        with pytest.raises(ConfigError) as info:
            HttpSyncLink("https://127.0.0.1:1/", token="t", **options)
        assert info.value.field == setting, options
        if "nope.pem" in str(options.values()):
            assert "nope.pem" in str(info.value)
    # the connector names the account's field
    base: dict[str, Any] = {
        "relation": "peer",
        "transport": "http",
        "url": "https://127.0.0.1:1/",
        "token": "t",
        "listen": "127.0.0.1:0",
    }
    for options, setting in cases:
        data = {
            "connector": {"address": "test.c", "store": "memory:"},
            "accounts": {"p": {**base, **options}},
        }
        with pytest.raises(ConfigError) as info:
            config_from_mapping(data, env={})
        assert info.value.field == f"accounts.p.{setting}", options
    no_listen = {k: v for k, v in base.items() if k != "listen"}
    data = {
        "connector": {"address": "test.c", "store": "memory:"},
        "accounts": {"p": {**no_listen, "http2": True}},
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, env={})
    assert info.value.field == "accounts.p.listen"


async def test_connector_account_over_tls_with_alpn(tls: TlsFiles) -> None:
    port = free_port()
    config = config_from_mapping(
        {
            "connector": {"address": "test.c", "store": "memory:"},
            "accounts": {
                "peer": {
                    "relation": "peer",
                    "transport": "http",
                    "url": "https://127.0.0.1:9/",
                    "token": "t",
                    "listen": f"127.0.0.1:{port}",
                    "tls_cert": tls.server_cert,
                    "tls_key": tls.server_key,
                }
            },
        },
        env={},
    )
    async with Connector(config) as connector:
        url = connector.listeners["peer"]
        assert url == f"https://127.0.0.1:{port}/"
        body = encode_packet(prepare("test.c"))  # to the connector itself: F02/echo reject
        context = ssl.create_default_context(cafile=tls.ca)
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            response = await client.post(url, content=body, headers={"Authorization": "Bearer t"})
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        decode_reply(response.content)
        # a fresh context: httpx added ALPN h2 to the one it was given
        context = ssl.create_default_context(cafile=tls.ca)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=body, headers={"Authorization": "Bearer t"}, ssl=context) as r,
        ):
            assert r.version == aiohttp.HttpVersion11
            assert r.status == 200


def test_http2_without_the_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn", None)  # as if not installed
    with pytest.raises(ConfigError) as info:
        HttpSyncLink("http://127.0.0.1:1/", token="t", http2=True)
    assert info.value.field == "http2"
    assert "pip install 'ilp-receiver[http2]'" in str(info.value)
    with pytest.raises(ConfigError, match=r"ilp-receiver\[http2\]"):
        open_link("http+oer://t@127.0.0.1:1/?http2=1")


async def test_one_http2_connection_outlives_a_thousand_requests() -> None:
    # Hypercorn's default closes a connection after 1000 requests, failing the streams
    # in flight; an HTTP/2 peer sends all its Prepares on one connection.
    link = HttpSyncLink(None, token="out", incoming_token="in", listen_port=0, http2=True)
    link.set_handler(Barrier(1))
    await link.start()
    try:
        body = encode_packet(prepare())
        async with h2c_client() as client:
            statuses: list[int] = []
            for _ in range(12):
                responses = await post_all(client, link.server_url or "", [body] * 100, "in")
                statuses += [r.status_code for r in responses]
        assert statuses == [200] * 1200
    finally:
        await link.stop()


async def test_a_credit_whose_http2_client_went_away_is_reverted() -> None:
    # As over HTTP/1.1 (tests/test_http_exchange.py): the Prepare is credited only while
    # the exchange that carried it can take the Fulfill back.
    from ilp_receiver.links.uplink import PeerConfig

    from .test_http_exchange import GatedStore

    store = GatedStore()
    link = HttpSyncLink(
        "http://127.0.0.1:9/", token="tok", listen_port=0, http2=True, shutdown_grace=0.5
    )
    receiver = AsyncReceiver(
        link,
        secret=os.urandom(32),
        store=store,
        stream=False,
        static_config=PeerConfig("test.h2.rcv", "XYZ", 9),
    )
    await receiver.start()
    try:
        destination, shared = receiver.issue()
        expires = datetime.now(UTC) + timedelta(seconds=30)
        body = encode_packet(
            build_chunk_prepare(
                destination,
                shared,
                amount=700,
                expires_at=expires.replace(microsecond=expires.microsecond // 1000 * 1000),
                iv=os.urandom(12),
                payment_id=os.urandom(16),
                chunk_amount=700,
            )
        )
        client = h2c_client()
        attempt = asyncio.ensure_future(
            client.post(link.server_url or "", content=body, headers={"Authorization": "tok"})
        )
        await asyncio.wait_for(store.applied.wait(), 5)
        await client.aclose()  # the client goes away while the credit is being committed
        with pytest.raises((httpx.HTTPError, RuntimeError)):
            await attempt
        for _ in range(100):  # the server learns of the closed connection
            await asyncio.sleep(0.01)
        store.gate.set()
        for _ in range(300):
            if receiver.reverted_credits:
                break
            await asyncio.sleep(0.01)
        assert receiver.reverted_credits == 1
        assert await store.balance("endpoint:default") == 0
    finally:
        store.gate.set()
        await receiver.stop()
