"""The Django adapter in process (``django.test.Client``): settings, class-based views,
pointers, health, Web Monetization and its template tags.  The paywall's behaviour is
``tests/test_adapter_conformance.py`` (shared by every adapter); real servers are
``tests/test_django_servers.py``."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.test import Client
from django.test.utils import override_settings
from django.urls import clear_url_caches

from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.errors import ConfigError
from ilp_receiver.paywall import token_account
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.receiver import Receiver
from tests.test_paywall import SECRET, SERVER, TOKEN, TOKEN_HEADER, MemoryParent, funding_prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")
django.setup()

import ilp_receiver_django  # noqa: E402
import ilp_receiver_django.urls  # noqa: E402
from ilp_receiver_django import get_service  # noqa: E402
from ilp_receiver_django.apps import IlpReceiverConfig  # noqa: E402


def reload_urls() -> None:
    importlib.reload(ilp_receiver_django.urls)
    importlib.reload(importlib.import_module("tests.django_project.urls"))
    clear_url_caches()


class Site:
    def __init__(self, **settings: Any) -> None:
        self.portal = BlockingPortal("test-django-adapter")
        self.parent = MemoryParent()
        self.portal.call(self.parent.start)
        self.rx = Receiver(self.parent.child, portal=self.portal, secret=SECRET)
        ilp = {"RECEIVER": lambda: self.rx, **settings.pop("ILP_RECEIVER", {})}
        self.override = override_settings(ILP_RECEIVER=ilp, **settings)
        self.override.enable()
        reload_urls()  # the patterns follow the settings
        self.client = Client(raise_request_exception=False)

    def pay(self, pay: str, amount: int) -> None:
        reply = self.portal.call(self.parent.pay, funding_prepare(pay, amount))
        assert isinstance(reply, IlpFulfill)

    def balance(self) -> int:
        return self.rx.balance(token_account(TOKEN))

    def close(self) -> None:
        get_service().stop()
        self.override.disable()
        reload_urls()
        self.portal.stop()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site(ILP_RECEIVER={"PAID": {"/reports/*": 5}, "POINTERS": ["bob"]})
    yield s
    s.close()


def test_bad_settings_name_the_key() -> None:
    with override_settings(ILP_RECEIVER={"SECRET": "not hex", "UPLINK": "btp+ws://a:b@h:1"}):
        with pytest.raises(ConfigError) as caught:
            get_service()
        assert caught.value.field == "ILP_RECEIVER['SECRET']"
        with pytest.raises(ConfigError):
            IlpReceiverConfig.ready(django.apps.apps.get_app_config("ilp_receiver"))
    with override_settings(ILP_RECEIVER={"UPLNK": "btp+ws://a:b@h:1"}):
        with pytest.raises(ConfigError) as caught:
            get_service()
        assert caught.value.field == "ILP_RECEIVER['UPLNK']"
    with override_settings(ILP_RECEIVER={}):
        with pytest.raises(ConfigError) as caught:
            get_service()
        assert caught.value.field == "ILP_RECEIVER_UPLINK"


def test_class_based_view_path_rule(site: Site) -> None:
    r = site.client.get("/reports/q3", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 402
    site.pay(r.headers["Pay"], 20)
    r = site.client.post("/reports/q3", headers={"Pay-Token": TOKEN_HEADER})
    assert r.status_code == 405  # the view serves GET only: not charged
    assert "Pay" not in r.headers
    r = site.client.get("/reports/q3", headers={"Pay-Token": TOKEN_HEADER})
    assert (r.status_code, r.json(), r.headers["Pay-Balance"]) == (200, {"report": "q3"}, "15")
    r = site.client.options("/reports/q3")
    assert r.status_code == 204
    assert r.headers["Pay"].endswith(" 5")


def test_pointers(site: Site) -> None:
    r = site.client.get("/.well-known/pay", headers={"Accept": "application/spsp4+json"})
    assert r.status_code == 200
    assert r.json()["destination_account"].startswith(SERVER + ".")
    r = site.client.get("/bob", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/spsp+json"
    assert site.client.get("/bob", headers={"Accept": "text/html"}).status_code == 406
    assert site.client.options("/.well-known/pay").status_code == 204


def test_health_path() -> None:
    s = Site(ILP_RECEIVER={"HEALTH_PATH": "/health"})
    try:
        s.client.get("/decorated")  # starts the receiver
        r = s.client.get("/health")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        assert r.json()["shared_account"]["detected"] is False
    finally:
        s.close()


def test_web_monetization() -> None:
    s = Site(ILP_MONETIZATION={"MAX_BALANCE": 1000})
    try:
        r = s.client.get("/monetized")  # a first visit
        assert r.status_code == 402
        assert r.json()["id"] == "MonetizationRequired"
        cookie = r.cookies["__monetizer"].value
        r = s.client.get("/__monetizer/client.js")
        assert r.status_code == 200
        assert r["Content-Type"].startswith("application/javascript")
        r = s.client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp4+json"})
        assert r.status_code == 200
        assert r.json()["destination_account"].startswith(SERVER + ".")
        r = s.client.get(
            "/__monetizer",
            headers={"Accept": "application/spsp4+json", "Web-Monetization-Id": "a" * 36},
        )
        assert r.status_code == 200
        r = s.client.get("/monetized")
        assert (r.status_code, r.json()["id"]) == (402, "InsufficientBalance")
        r = s.client.get("/page")
        assert r.status_code == 200
        html = r.content.decode()
        assert '<meta name="monetization" content="http://testserver/__monetizer">' in html
        assert '<script src="/__monetizer/client.js"></script>' in html
    finally:
        s.close()


def test_body_price_under_asgi_with_a_chunked_body(site: Site) -> None:
    # under ASGI Django's handler has received the whole body before any middleware; the
    # reader prices it through request.body (public), which stays the view's to read
    from django.core.handlers.asgi import ASGIHandler

    async def call(body_parts: list[bytes]) -> tuple[int, dict[str, str], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/echo",
            "raw_path": b"/echo",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"pay-token", TOKEN_HEADER.encode()),
                (b"transfer-encoding", b"chunked"),
            ],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        messages = [
            {"type": "http.request", "body": part, "more_body": i < len(body_parts) - 1}
            for i, part in enumerate(body_parts)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)  # no disconnect while the view runs
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await ASGIHandler()(scope, receive, send)
        start = sent[0]
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], headers, body

    status, headers, _ = asyncio.run(call([b"{}"]))
    assert status == 402
    site.pay(headers["pay"], 1000)
    payload = json.dumps({"text": "x" * 300}).encode()
    status, headers, body = asyncio.run(call([payload[:10], payload[10:]]))
    assert status == 200, body
    assert json.loads(body) == {"echo": {"text": "x" * 300}, "read": len(payload)}
    assert headers["pay-balance"] == str(1000 - len(payload))
    status, _, body = asyncio.run(call([b"[" + b"1," * 300, b"1," * 300 + b"1]"]))
    assert status == 413
    assert b"PayloadTooLarge" in body
    assert site.balance() == 1000 - len(payload)
