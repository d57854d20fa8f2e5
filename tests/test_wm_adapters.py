"""Today's Web Monetization in every adapter (Flask, Starlette, FastAPI, aiohttp, Django).

The same story on each framework's test client, against the local fake wallet
(``tests/op_fake.py``): the page carries the checked ``<link rel="monetization">`` to the
configured wallet address and the client script; ``/__monetizer/wm.js`` is served; the
guarded route answers 402; the page's report of an incoming payment that received 100
credits the visitor (200, ``credited`` 100) and the route answers 200; the same report
from another visitor is refused (409 JSON) and a garbage report too (400 JSON).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient as AiohttpClient
from aiohttp.test_utils import TestServer
from fastapi import FastAPI
from flask import Flask, render_template_string
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient

import ilp_receiver_aiohttp as wm_aiohttp
import ilp_receiver_flask as wm_flask
import ilp_receiver_starlette as wm_starlette
from ilp_receiver.monetization import Monetizer
from ilp_receiver.monetization_verifier import IncomingPaymentVerifier
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.receiver import AsyncReceiver
from tests.op_fake import FakeWallet
from tests.test_paywall import SECRET, MemoryParent, sync_receiver

SITE_SECRET = b"adapter test site secret"
REPORT = "/__monetizer/incoming-payments"
PAGE = "<html><head>{{ monetization_wallet_link() }}{{ monetization_wallet_script() }}</head>"

Get = Callable[[str, str | None], tuple[int, dict[str, str], bytes]]
Post = Callable[[str, str | None, bytes], tuple[int, bytes]]


class Wallet:
    """The fake wallet on its own loop thread (sync test clients call into it)."""

    def __init__(self) -> None:
        self.portal = BlockingPortal("test-wm-wallet")
        self.fake: FakeWallet = self.portal.call(FakeWallet().start)

    def paid_payment(self, amount: int) -> str:
        url = self.fake.create()
        self.fake.receive(url, amount)
        return url

    def close(self) -> None:
        self.portal.call(self.fake.close)
        self.portal.stop()


@pytest.fixture
def wallet() -> Iterator[Wallet]:
    running = Wallet()
    yield running
    running.close()


def cookie_of(headers: Any) -> str:
    values = headers.get_all("set-cookie") if hasattr(headers, "get_all") else None
    raw = values[0] if values else headers["set-cookie"]
    return str(raw).split(";")[0].split("=", 1)[1]


def story(get: Get, post: Post, wallet: Wallet, expected_link: str, price: int = 100) -> None:
    status, headers, body = get("/", None)
    assert status == 200
    html = body.decode()
    assert expected_link in html
    assert '<script src="/__monetizer/wm.js"></script>' in html
    cookie = cookie_of(headers)
    _status, other_headers, _ = get("/", None)
    other = cookie_of(other_headers)
    assert other != cookie

    status, headers, body = get("/__monetizer/wm.js", cookie)
    assert status == 200
    assert headers["content-type"].startswith("application/javascript")
    assert b"ilpWebMonetization" in body

    assert get("/paid", cookie)[0] == 402
    url = wallet.paid_payment(price)
    status, body = post(REPORT, cookie, json.dumps({"incomingPayment": url}).encode())
    assert status == 200, body
    assert json.loads(body)["credited"] == str(price)
    status, _, body = get("/paid", cookie)
    assert status == 200
    assert body.endswith(b"content")
    assert get("/paid", cookie)[0] == 402  # spent

    status, body = post(REPORT, other, json.dumps({"incomingPayment": url}).encode())
    assert (status, json.loads(body)["id"]) == (409, "IncomingPaymentClaimed")
    status, body = post(REPORT, cookie, b"not json")
    assert (status, json.loads(body)["id"]) == (400, "InvalidReport")
    status, body = post(REPORT, cookie, b"x" * 5000)
    assert (status, json.loads(body)["id"]) == (413, "ReportTooLarge")


def _verifier(monetizer: Monetizer, wallet: Wallet) -> IncomingPaymentVerifier:
    return IncomingPaymentVerifier(
        monetizer, wallet.fake.wallet_address, allow_private=True, allow_insecure=True
    )


# ---------------------------------------------------------------------------------------


def test_flask(wallet: Wallet) -> None:
    portal = BlockingPortal("test-wm-flask")
    rx = sync_receiver(MemoryParent(), portal)
    app = Flask(__name__)
    app.config["ILP_MONETIZATION_WALLET_ADDRESS"] = wallet.fake.wallet_address
    app.config["ILP_MONETIZATION_ALLOW_PRIVATE"] = True
    app.config["ILP_MONETIZATION_ALLOW_INSECURE"] = "true"
    wm_flask.IlpReceiver(app, receiver=rx)
    monetization = wm_flask.Monetization(app, monetizer=Monetizer(secret=SITE_SECRET))

    @app.get("/")
    def page() -> str:
        return render_template_string(PAGE)

    @app.get("/paid")
    @wm_flask.monetized(100)
    def paid() -> str:
        return "paid content"

    client = app.test_client(use_cookies=False)

    def get(path: str, cookie: str | None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Cookie": f"__monetizer={cookie}"} if cookie else {}
        r = client.get(path, headers=headers)
        return r.status_code, r.headers, r.data  # type: ignore[return-value]

    def post(path: str, cookie: str | None, body: bytes) -> tuple[int, bytes]:
        r = client.post(
            path,
            data=body,
            headers={"Cookie": f"__monetizer={cookie}", "Content-Type": "application/json"},
        )
        return r.status_code, r.data

    try:
        link = f'<link rel="monetization" href="{wallet.fake.wallet_address}">'
        story(get, post, wallet, link)
    finally:
        assert monetization.verifier is not None
        rx.portal.call(monetization.verifier.close)
        wm_flask.get_service(app).stop()
        portal.stop()


def _asgi_story(app: Any, wallet: Wallet) -> None:
    with TestClient(app) as client:

        def get(path: str, cookie: str | None) -> tuple[int, dict[str, str], bytes]:
            client.cookies.clear()
            headers = {"Cookie": f"__monetizer={cookie}"} if cookie else {}
            r = client.get(path, headers=headers)
            return r.status_code, r.headers, r.content  # type: ignore[return-value]

        def post(path: str, cookie: str | None, body: bytes) -> tuple[int, bytes]:
            client.cookies.clear()
            r = client.post(
                path,
                content=body,
                headers={"Cookie": f"__monetizer={cookie}", "Content-Type": "application/json"},
            )
            return r.status_code, r.content

        link = f'<link rel="monetization" href="{wallet.fake.wallet_address}">'
        story(get, post, wallet, link)


def _starlette_parts(wallet: Wallet) -> tuple[AsyncReceiver, list[Middleware], Any]:
    parent = MemoryParent()
    asyncio.run(parent.start())
    rx = AsyncReceiver(parent.child, secret=SECRET)
    monetizer = Monetizer(secret=SITE_SECRET)
    templates = Jinja2Templates(env=jinja2.Environment(autoescape=True))
    wm_starlette.install_templates(templates)
    middleware = [
        Middleware(wm_starlette.IlpReceiverMiddleware, receiver=rx),
        Middleware(
            wm_starlette.MonetizationMiddleware,
            monetizer=monetizer,
            verifier=_verifier(monetizer, wallet),
        ),
    ]
    return rx, middleware, templates.env.from_string(PAGE)


def test_starlette(wallet: Wallet) -> None:
    _rx, middleware, template = _starlette_parts(wallet)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(template.render(request=request))

    @wm_starlette.monetized(100)
    async def paid(request: Request) -> PlainTextResponse:
        return PlainTextResponse("paid content")

    app = Starlette(routes=[Route("/", page), Route("/paid", paid)], middleware=middleware)
    _asgi_story(app, wallet)


def test_fastapi(wallet: Wallet) -> None:
    _rx, middleware, template = _starlette_parts(wallet)
    app = FastAPI(middleware=middleware)

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(template.render(request=request))

    @app.get("/paid", response_class=PlainTextResponse)
    @wm_starlette.monetized(100)
    async def paid(request: Request) -> PlainTextResponse:
        return PlainTextResponse("paid content")

    _asgi_story(app, wallet)


async def test_aiohttp(wallet: Wallet) -> None:
    parent = MemoryParent()
    await parent.start()
    rx = AsyncReceiver(parent.child, secret=SECRET)

    async def page(request: web.Request) -> web.Response:
        html = f"<html><head>{wm_aiohttp.monetization_tags(request)}</head>"
        return web.Response(text=html, content_type="text/html")

    @wm_aiohttp.monetized(100)
    async def paid(request: web.Request) -> web.Response:
        return web.Response(text="paid content")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/paid", paid)
    wm_aiohttp.setup(app, rx)
    monetizer = Monetizer(secret=SITE_SECRET)
    wm_aiohttp.setup_monetization(app, monetizer, verifier=_verifier(monetizer, wallet))
    loop = asyncio.get_running_loop()
    async with AiohttpClient(TestServer(app)) as client:
        results: dict[str, Any] = {}

        async def aget(path: str, cookie: str | None) -> None:
            client.session.cookie_jar.clear()
            headers = {"Cookie": f"__monetizer={cookie}"} if cookie else {}
            r = await client.get(path, headers=headers)
            results["get"] = (r.status, dict(r.headers), await r.read())

        async def apost(path: str, cookie: str | None, body: bytes) -> None:
            client.session.cookie_jar.clear()
            headers = {"Cookie": f"__monetizer={cookie}", "Content-Type": "application/json"}
            r = await client.post(path, data=body, headers=headers)
            results["post"] = (r.status, await r.read())

        def get(path: str, cookie: str | None) -> tuple[int, dict[str, str], bytes]:
            asyncio.run_coroutine_threadsafe(aget(path, cookie), loop).result(30)
            status, headers, body = results["get"]
            return status, {k.lower(): v for k, v in headers.items()}, body

        def post(path: str, cookie: str | None, body: bytes) -> tuple[int, bytes]:
            asyncio.run_coroutine_threadsafe(apost(path, cookie, body), loop).result(30)
            status, answer = results["post"]
            return status, answer

        link = f'<link rel="monetization" href="{wallet.fake.wallet_address}">'
        await asyncio.to_thread(story, get, post, wallet, link)


def test_django(wallet: Wallet) -> None:
    from tests.test_django_adapter import Site as DjangoSite

    site = DjangoSite(
        ILP_MONETIZATION={
            "SECRET": SITE_SECRET.decode(),
            "WALLET_ADDRESS": wallet.fake.wallet_address,
            "ALLOW_PRIVATE": True,
            "ALLOW_INSECURE": True,
        }
    )
    try:
        client = site.client

        def get(path: str, cookie: str | None) -> tuple[int, dict[str, str], bytes]:
            client.cookies.clear()
            headers = {"Cookie": f"__monetizer={cookie}"} if cookie else {}
            path = {"/": "/wallet-page", "/paid": "/monetized"}.get(path, path)
            r = client.get(path, headers=headers)
            lowered = {k.lower(): v for k, v in r.headers.items()}
            if "__monetizer" in r.cookies:
                lowered["set-cookie"] = f"__monetizer={r.cookies['__monetizer'].value}"
            return r.status_code, lowered, r.content

        def post(path: str, cookie: str | None, body: bytes) -> tuple[int, bytes]:
            client.cookies.clear()
            r = client.post(
                path,
                data=body,
                content_type="application/json",
                headers={"Cookie": f"__monetizer={cookie}"},
            )
            return r.status_code, r.content

        link = f'<link rel="monetization" href="{wallet.fake.wallet_address}">'
        # the test project's guarded view costs 10: the same story at that price
        story(get, post, wallet, link, price=10)
    finally:
        import ilp_receiver_django

        monetization = ilp_receiver_django.get_monetization()
        verifier = monetization.service.verifier
        assert verifier is not None
        monetization.call(verifier.close)
        site.close()
