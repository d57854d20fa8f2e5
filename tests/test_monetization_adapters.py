"""Web Monetization in the three adapters (Flask, Starlette, aiohttp), on their test clients.

The same story for each: a page sets the ``__monetizer`` cookie and renders the tags; the
visitor's SPSP endpoint is queried and paid (a draft-1 chunk delivered by an in-memory
parent); the guarded route answers 402, then 200 while the bucket lasts; tampered ids
get 400; era-C ids work through ``Web-Monetization-Id``; streamed bodies are charged per
byte.  Also the Flask example blog, end to end with the bundled connector.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient as AiohttpClient
from aiohttp.test_utils import TestServer
from flask import Flask, Response, render_template_string, stream_with_context
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient

import ilp_receiver_aiohttp as wm_aiohttp
import ilp_receiver_flask as wm_flask
import ilp_receiver_starlette as wm_starlette
from ilp_receiver.client import AsyncPaymentClient
from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare
from ilp_receiver.monetization import Monetizer
from ilp_receiver.paywall import combine_hooks, paywall_payment_hook
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.psk2.sender import build_chunk_prepare
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.spsp import parse_spsp_response
from tests.test_paywall import SECRET, SERVER, MemoryParent, sync_receiver

SITE_SECRET = b"adapter test site secret"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MID = "5f0c8a9e-1b2c-4d3e-8f90-a1b2c3d4e5f6"
PAGE = (
    "<html><head>{{ monetization_meta() }}{{ monetization_script() }}"
    "{{ '$w.example/<x>' | monetization_meta }}{{ monetization_link('https://a/b') }}"
    "</head><body>hello</body></html>"
)
CHUNKS = [b"aaaa", b"bbbb", b"cccc"]


def chunk_prepare(spsp_body: bytes | str, amount: int) -> IlpPrepare:
    """A draft-1 chunk paying ``amount`` to an SPSP answer (as a browser would)."""
    answer = json.loads(spsp_body)
    return build_chunk_prepare(
        answer["destination_account"],
        base64.b64decode(answer["shared_secret"]),
        amount=amount,
        expires_at=datetime.now(UTC) + timedelta(seconds=30),
        iv=os.urandom(12),
        payment_id=os.urandom(16),
        last_chunk=True,
    )


def new_monetizer() -> Monetizer:
    return Monetizer(secret=SITE_SECRET, max_balance=10_000)


def cookie_from(set_cookie: str) -> str:
    first = set_cookie.split(";")[0]
    name, _, value = first.partition("=")
    assert name == "__monetizer"
    return value


def check_page(html: str) -> None:
    assert '<meta name="monetization" content="' in html
    assert '<script src="/__monetizer/client.js"></script>' in html
    assert '<meta name="monetization" content="$w.example/&lt;x&gt;">' in html
    assert '<link rel="monetization" href="https://a/b">' in html


# ---------------------------------------------------------------------------------------
# Flask


class FlaskSite:
    def __init__(self) -> None:
        self.portal = BlockingPortal("test-wm-flask")
        self.parent = MemoryParent()
        self.monetizer = new_monetizer()
        hook = combine_hooks(paywall_payment_hook, self.monetizer.payment_hook)
        self.rx = sync_receiver(self.parent, self.portal, on_payment=hook)
        app = Flask(__name__)
        app.config["ILP_MONETIZATION_POINTER"] = "$blog.example/__monetizer"
        wm_flask.IlpReceiver(app, receiver=self.rx)
        wm_flask.Monetization(app, monetizer=self.monetizer)

        @app.get("/")
        def page() -> str:
            return render_template_string(PAGE)

        @app.get("/paid")
        @wm_flask.monetized(10)
        def paid() -> str:
            return "paid content"

        @app.get("/wait")
        @wm_flask.monetized(10, wait=5)
        def wait() -> str:
            return "waited content"

        @app.get("/fails")
        @wm_flask.monetized(10)
        def fails() -> str:
            raise RuntimeError("route failed")

        @app.get("/stream")
        @wm_flask.monetized(0, per_byte=1)
        def stream() -> Response:
            return Response(stream_with_context(iter(CHUNKS)))

        @app.get("/whoami")
        def whoami() -> dict[str, Any]:
            visitor = wm_flask.current_visitor()
            assert visitor is not None
            return {"id": visitor.id, "balance": wm_flask.get_monetization().balance(visitor)}

        self.app = app

    def pay(self, spsp_body: bytes, amount: int) -> None:
        reply = self.portal.call(self.parent.pay, chunk_prepare(spsp_body, amount))
        assert isinstance(reply, IlpFulfill), reply

    def close(self) -> None:
        wm_flask.get_service(self.app).stop()
        self.portal.stop()


@pytest.fixture
def flask_site() -> Iterator[FlaskSite]:
    site = FlaskSite()
    yield site
    site.close()


def test_flask_monetized_page_and_guard(flask_site: FlaskSite) -> None:
    first = flask_site.app.test_client().get("/paid")  # a first visit: no visitor yet
    assert first.status_code == 402
    assert first.get_json()["id"] == "MonetizationRequired"
    assert "__monetizer=" in first.headers["Set-Cookie"]
    client = flask_site.app.test_client()
    r = client.get("/")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    check_page(html)
    assert '<meta name="monetization" content="$blog.example/__monetizer">' in html
    cookie = cookie_from(r.headers["Set-Cookie"])
    assert "HttpOnly" not in r.headers["Set-Cookie"]
    assert client.get("/").headers.get("Set-Cookie") is None  # kept, not re-issued

    r = client.get("/__monetizer/client.js")
    assert r.status_code == 200
    assert "window.monetize" in r.get_data(as_text=True)

    r = client.get("/paid")
    assert r.status_code == 402
    assert r.get_json()["id"] == "InsufficientBalance"

    r = client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/spsp+json"
    destination = r.get_json()["destination_account"]
    assert destination.split(".")[-3] == cookie.split(".")[0]
    assert destination.startswith(SERVER + ".")
    flask_site.pay(r.data, 25)

    assert client.get("/whoami").get_json() == {"id": cookie.split(".")[0], "balance": 25}
    r = client.get("/paid")
    assert (r.status_code, r.get_data(as_text=True)) == (200, "paid content")
    assert client.get("/paid").status_code == 200
    r = client.get("/paid")
    assert r.status_code == 402
    assert r.get_json()["balance"] == "5"

    r = client.get("/stream")
    assert r.status_code == 200
    assert r.data == b"aaaa"  # 5 units: the first 4-byte chunk only
    assert client.get("/whoami").get_json()["balance"] == 1

    r = client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"})
    flask_site.pay(r.data, 10)
    assert client.get("/fails").status_code == 500
    assert client.get("/whoami").get_json()["balance"] == 11


def test_flask_bad_input(flask_site: FlaskSite) -> None:
    client = flask_site.app.test_client()
    cookie = cookie_from(client.get("/").headers["Set-Cookie"])
    tampered = cookie.split(".")[0] + ".AAAA"
    fresh = flask_site.app.test_client(use_cookies=False)
    r = fresh.get("/paid", headers={"Cookie": f"__monetizer={tampered}"})
    assert r.status_code == 400
    assert r.get_json()["id"] == "InvalidVisitorId"
    assert "__monetizer=" in r.headers["Set-Cookie"]  # a fresh id replaces it
    r = fresh.get("/", headers={"Cookie": f"__monetizer={tampered}"})
    assert r.status_code == 200  # pages are served; only spending needs a valid id
    r = fresh.get(f"/__monetizer/{tampered}", headers={"Accept": "application/spsp+json"})
    assert r.status_code == 400
    assert r.content_type == "application/json"
    r = fresh.get(f"/__monetizer/{cookie}", headers={"Accept": "text/html"})
    assert r.status_code == 406


def test_flask_waits_for_the_money(flask_site: FlaskSite) -> None:
    client = flask_site.app.test_client()
    cookie = cookie_from(client.get("/").headers["Set-Cookie"])
    results: list[tuple[int, str]] = []

    def request() -> None:
        other = flask_site.app.test_client(use_cookies=False)
        r = other.get("/wait", headers={"Cookie": f"__monetizer={cookie}"})
        results.append((r.status_code, r.get_data(as_text=True)))

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.2)
    assert not results
    r = client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"})
    flask_site.pay(r.data, 10)
    thread.join(5)
    assert results == [(200, "waited content")]


def test_flask_era_c(flask_site: FlaskSite) -> None:
    client = flask_site.app.test_client(use_cookies=False)
    headers = {"Accept": "application/spsp+json", "Web-Monetization-Id": MID}
    r = client.get("/__monetizer", headers=headers)
    assert r.status_code == 200
    flask_site.pay(r.data, 10)
    r = client.get("/paid", headers={"Web-Monetization-Id": MID})
    assert (r.status_code, r.get_data(as_text=True)) == (200, "paid content")
    assert client.get("/paid", headers={"Web-Monetization-Id": MID}).status_code == 402
    assert client.get("/paid", headers={"Web-Monetization-Id": "bad id"}).status_code == 400


def test_flask_monetization_needs_the_receiver_first() -> None:
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match="IlpReceiver"):
        wm_flask.Monetization(app, monetizer=new_monetizer())


# ---------------------------------------------------------------------------------------
# Starlette


def make_starlette(rx: AsyncReceiver, monetizer: Monetizer) -> Starlette:
    templates = Jinja2Templates(env=jinja2.Environment(autoescape=True))
    wm_starlette.install_templates(templates)
    template = templates.env.from_string(PAGE)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(template.render(request=request))

    @wm_starlette.monetized(10)
    async def paid(request: Request) -> PlainTextResponse:
        return PlainTextResponse("paid content")

    @wm_starlette.monetized(10)
    def paid_sync(request: Request) -> PlainTextResponse:
        return PlainTextResponse("paid sync content")

    @wm_starlette.monetized(10)
    async def fails(request: Request) -> PlainTextResponse:
        raise RuntimeError("route failed")

    @wm_starlette.monetized(0, per_byte=1)
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in CHUNKS:
                yield chunk

        return StreamingResponse(chunks())

    async def whoami(request: Request) -> PlainTextResponse:
        visitor = wm_starlette.current_visitor(request)
        assert visitor is not None
        balance = await wm_starlette.get_monetization(request).monetizer.balance(visitor)
        return PlainTextResponse(str(balance))

    routes = [
        Route("/", page),
        Route("/paid", paid),
        Route("/paid-sync", paid_sync),
        Route("/fails", fails),
        Route("/stream", stream),
        Route("/whoami", whoami),
    ]
    middleware = [
        Middleware(wm_starlette.IlpReceiverMiddleware, receiver=rx),
        Middleware(wm_starlette.MonetizationMiddleware, monetizer=monetizer),
    ]
    return Starlette(routes=routes, middleware=middleware)


def test_starlette_monetized_page_and_guard() -> None:
    import asyncio

    parent = MemoryParent()
    asyncio.run(parent.start())
    monetizer = new_monetizer()
    rx = AsyncReceiver(
        parent.child,
        secret=SECRET,
        on_payment=combine_hooks(paywall_payment_hook, monetizer.payment_hook),
    )
    with TestClient(make_starlette(rx, monetizer)) as client:
        assert client.portal is not None
        portal = client.portal

        def pay(body: bytes, amount: int) -> None:
            reply = portal.call(parent.pay, chunk_prepare(body, amount))
            assert isinstance(reply, IlpFulfill)

        r = client.get("/paid")  # a first visit: no visitor yet
        assert (r.status_code, r.json()["id"]) == (402, "MonetizationRequired")
        assert "__monetizer=" in r.headers["set-cookie"]
        client.cookies.clear()
        r = client.get("/")
        assert r.status_code == 200
        check_page(r.text)
        assert '<meta name="monetization" content="http://testserver/__monetizer">' in r.text
        cookie = cookie_from(r.headers["set-cookie"])
        assert "set-cookie" not in client.get("/").headers

        r = client.get("/__monetizer/client.js")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/javascript")

        r = client.get("/paid")
        assert r.status_code == 402
        assert r.json()["id"] == "InsufficientBalance"

        r = client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 200
        assert r.json()["destination_account"].split(".")[-3] == cookie.split(".")[0]
        pay(r.content, 25)

        assert client.get("/paid").text == "paid content"
        assert client.get("/paid-sync").text == "paid sync content"
        r = client.get("/paid")
        assert r.status_code == 402
        assert r.json()["balance"] == "5"
        r = client.get("/stream")
        assert r.content == b"aaaa"
        assert client.get("/whoami").text == "1"
        r = client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"})
        pay(r.content, 10)
        with pytest.raises(RuntimeError):
            client.get("/fails")
        assert client.get("/whoami").text == "11"

        # bad input
        tampered = cookie.split(".")[0] + ".AAAA"
        client.cookies.clear()
        r = client.get("/paid", headers={"Cookie": f"__monetizer={tampered}"})
        assert r.status_code == 400
        assert r.json()["id"] == "InvalidVisitorId"
        r = client.get(f"/__monetizer/{tampered}", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 400

        # era C
        client.cookies.clear()
        headers = {"Accept": "application/spsp+json", "Web-Monetization-Id": MID}
        r = client.get("/__monetizer", headers=headers)
        assert r.status_code == 200
        pay(r.content, 10)
        r = client.get("/paid", headers={"Web-Monetization-Id": MID})
        assert r.text == "paid content"


def test_starlette_guard_without_middleware_says_what_is_missing() -> None:
    @wm_starlette.monetized(5)
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x")

    with (
        TestClient(Starlette(routes=[Route("/x", endpoint)])) as client,
        pytest.raises(RuntimeError, match="monetization middleware"),
    ):
        client.get("/x")


# ---------------------------------------------------------------------------------------
# aiohttp


def make_aiohttp(rx: AsyncReceiver, monetizer: Monetizer) -> web.Application:
    @wm_aiohttp.monetized(10)
    async def paid(request: web.Request) -> web.Response:
        return web.Response(text="paid content")

    @wm_aiohttp.monetized(10, wait=5)
    async def wait(request: web.Request) -> web.Response:
        return web.Response(text="waited content")

    @wm_aiohttp.monetized(10)
    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="page")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in CHUNKS:
                yield chunk

        async for chunk in wm_aiohttp.metered(request, chunks()):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/paid", paid)
    app.router.add_get("/wait", wait)
    app.router.add_get("/gone", gone)
    app.router.add_get("/stream", stream)
    wm_aiohttp.setup(app, rx)
    wm_aiohttp.setup_monetization(app, monetizer)
    return app


async def test_aiohttp_monetized_guard() -> None:
    import asyncio

    parent = MemoryParent()
    await parent.start()
    monetizer = new_monetizer()
    rx = AsyncReceiver(parent.child, secret=SECRET, on_payment=monetizer.payment_hook)
    async with AiohttpClient(TestServer(make_aiohttp(rx, monetizer))) as client:

        async def pay(cookie: str, amount: int) -> None:
            r = await client.get(
                f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"}
            )
            assert r.status == 200
            reply = await parent.pay(chunk_prepare(await r.read(), amount))
            assert isinstance(reply, IlpFulfill)

        r = await client.get("/paid")  # a first visit: no visitor yet
        assert (r.status, (await r.json())["id"]) == (402, "MonetizationRequired")
        assert "__monetizer=" in r.headers["Set-Cookie"]
        client.session.cookie_jar.clear()
        r = await client.get("/")
        assert r.status == 200
        cookie = cookie_from(r.headers["Set-Cookie"])
        r = await client.get("/__monetizer/client.js")
        assert r.status == 200
        r = await client.get("/paid")
        assert r.status == 402
        assert (await r.json())["id"] == "InsufficientBalance"
        await pay(cookie, 25)
        r = await client.get("/paid")
        assert (r.status, await r.text()) == (200, "paid content")
        r = await client.get("/gone")  # a 404 answer keeps the charge
        assert r.status == 404
        assert await monetizer.balance(cookie.split(".")[0]) == 5
        r = await client.get("/stream")
        assert await r.read() == b"aaaa"
        assert await monetizer.balance(cookie.split(".")[0]) == 1

        waiting = asyncio.create_task(client.get("/wait"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await pay(cookie, 9)
        r = await waiting
        assert (r.status, await r.text()) == (200, "waited content")

        tampered = cookie.split(".")[0] + ".AAAA"
        client.session.cookie_jar.clear()
        r = await client.get("/paid", headers={"Cookie": f"__monetizer={tampered}"})
        assert r.status == 400
        assert (await r.json())["id"] == "InvalidVisitorId"
        r = await client.get(
            f"/__monetizer/{tampered}", headers={"Accept": "application/spsp+json"}
        )
        assert r.status == 400


def test_aiohttp_setup_order_is_checked() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        wm_aiohttp.setup_monetization(web.Application(), new_monetizer())


# ---------------------------------------------------------------------------------------
# The Flask example blog, through the bundled connector


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_flask_blog_example() -> None:
    blog = load_example("flask_monetized_blog")
    portal = BlockingPortal("test-blog")
    net = portal.call(blog.start_connector)
    payer = AsyncPaymentClient(net.local_link("reader"))
    portal.call(payer.start)
    try:
        app = blog.create_app(net.local_link("blog"), secret=SECRET, portal=portal)
        client = app.test_client()
        r = client.get("/")
        assert r.status_code == 200
        html = r.get_data(as_text=True)
        assert '<meta name="monetization"' in html
        assert "/__monetizer/client.js" in html
        assert "Paid articles" in html
        cookie = cookie_from(r.headers["Set-Cookie"])
        r = client.get("/articles/interledger/body")
        assert r.status_code == 402
        r = client.get(f"/__monetizer/{cookie}", headers={"Accept": "application/spsp+json"})
        assert r.status_code == 200
        portal.call(payer.pay, parse_spsp_response(r.data), 250)
        r = client.get("/articles/interledger/body")
        assert r.status_code == 200
        assert "Interledger" in r.get_json()["body"]
        assert r.get_json()["balance"] == 150
        assert client.get("/balance").get_json()["balance"] == 150
    finally:
        wm_flask.get_service(app).stop()
        portal.call(payer.close)
        portal.call(net.stop)
        portal.stop()


def test_flask_blog_example_era_c_over_stream() -> None:
    # era C end to end through Flask: SPSP v4 with the Web-Monetization-Id, a STREAM
    # payment through the bundled connector, the guarded route with the header
    blog = load_example("flask_monetized_blog")
    portal = BlockingPortal("test-blog-era-c")
    net = portal.call(blog.start_connector)
    payer = AsyncPaymentClient(net.local_link("reader"))
    portal.call(payer.start)
    app = blog.create_app(net.local_link("blog"), secret=SECRET, portal=portal)
    try:
        client = app.test_client(use_cookies=False)
        query = {
            "Accept": "application/spsp4+json, application/spsp+json",
            "Web-Monetization-Id": MID,
        }
        r = client.get("/__monetizer", headers=query)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/spsp4+json"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        answer = parse_spsp_response(r.data, protocol="stream")
        assert portal.call(payer.pay, answer, 250).protocol == "stream"
        r = client.get("/articles/interledger/body", headers={"Web-Monetization-Id": MID})
        assert r.status_code == 200
        assert r.get_json()["balance"] == 150
        assert client.get("/balance", headers={"Web-Monetization-Id": MID}).get_json() == {
            "balance": 150
        }
        # another id has paid nothing; a tampered one is refused
        other = {"Web-Monetization-Id": MID.replace("5f", "6f")}
        assert client.get("/articles/interledger/body", headers=other).status_code == 402
        for bad in ("5f0c8a9e/1b2c", "a b"):
            r = client.get("/__monetizer", headers={**query, "Web-Monetization-Id": bad})
            assert r.status_code == 400
            assert r.get_json()["id"] == "InvalidVisitorId"
            r = client.get("/articles/interledger/body", headers={"Web-Monetization-Id": bad})
            assert r.status_code == 400
        r = client.options("/__monetizer")
        assert r.status_code == 204
        assert "Web-Monetization-Id" in r.headers["Access-Control-Allow-Headers"]
    finally:
        wm_flask.get_service(app).stop()
        portal.call(payer.close)
        portal.call(net.stop)
        portal.stop()
