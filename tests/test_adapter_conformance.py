"""One conformance suite for the five adapters, each driven by its framework's own client.

Every adapter serves the same app (``/decorated``, ``/listed`` by a path rule, ``/both``
decorated *and* listed, failing views, streams, a body-priced route, ``/premium/{item}``
under the rule ``/premium/*``) on an in-memory network, and must behave the same:

* every status of the paywall: ``204`` (``OPTIONS``), ``402``, ``400``, ``200``, and ``503``
  with ``Retry-After`` while the uplink is down -- then ``200`` once it connects;
* the refund table of ``docs/paid-api.md``, row by row;
* no charge for 404 and 405, one charge for a route both listed and decorated;
* 50 concurrent requests on a token funded for 25 serve exactly 25;
* a body price from the bytes read (a chunked body too), ``413`` for an absurd
  ``Content-Length``; the body read for the price is the view's to read again, through
  the framework's own API (raw and parsed), for a decorator and a path rule alike.

Clients: Flask's ``app.test_client()``, Starlette's and FastAPI's ``TestClient``,
Django's ``django.test.Client``, aiohttp's ``TestClient`` (on a loop thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.errors import LinkClosedError
from ilp_receiver.links.memory import MemoryLink
from ilp_receiver.paywall import Price, per_byte, token_account
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.receiver import AsyncReceiver, Receiver
from ilp_receiver_fastapi import IlpReceiverMiddleware, Paid, paid
from tests.test_paywall import (
    SECRET,
    TOKEN,
    TOKEN_HEADER,
    MemoryParent,
    async_receiver,
    check_pay,
    funding_prepare,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

ECHO_PRICE = per_byte(1, max_bytes=1000)
PAID: dict[str, Price] = {"/listed": 10, "/both": 10, "/premium/*": 25, "/echo-listed": ECHO_PRICE}
CHUNK = b"x" * 1000
TOKEN_ONLY = {"Pay-Token": TOKEN_HEADER}
ADAPTERS = ["flask", "starlette", "fastapi", "django", "aiohttp"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class GatedLink(MemoryLink):
    """The receiver's end of an in-memory link that refuses to connect while closed (a
    connector that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = True

    async def start(self) -> None:
        if not self.open:
            raise LinkClosedError("cannot connect to the connector: connection refused")
        await super().start()


def gated_parent() -> MemoryParent:
    parent = MemoryParent()
    gated = GatedLink()
    gated.peer, parent.link.peer = parent.link, gated
    parent.child = gated
    return parent


class Harness(Protocol):
    """One adapter's app, its test client and the network behind it."""

    parent: MemoryParent

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        chunked: bool = False,
    ) -> Answer: ...

    def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def receiver(self) -> AsyncReceiver: ...

    def read_one_chunk_and_leave(self, path: str, headers: dict[str, str]) -> None: ...

    def close(self) -> None: ...


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


# ---------------------------------------------------------------------------------------
# Flask


def flask_harness(parent: MemoryParent) -> Harness:
    from flask import Flask, Response, abort, jsonify, request

    from ilp_receiver_flask import IlpReceiver, paid

    portal = BlockingPortal("conformance-flask")
    portal.call(parent.start)
    rx = Receiver(parent.child, portal=portal, secret=SECRET, require_uplink=False)
    app = Flask("conformance")
    IlpReceiver(app, receiver=rx, paid=PAID)

    @app.get("/decorated")
    @paid(10)
    def decorated() -> str:
        return "paid content"

    @app.get("/listed")
    def listed() -> str:
        return "paid content"

    @app.get("/both")
    @paid(10)
    def both() -> str:
        return "paid content"

    @app.get("/raise")
    @paid(10)
    def raises() -> str:
        raise RuntimeError("the view failed")

    @app.get("/forbidden")
    @paid(10)
    def forbidden() -> str:
        abort(403)

    @app.get("/missing")
    @paid(10)
    def missing() -> tuple[str, int]:
        return "no such thing", 404

    @app.get("/unavailable")
    @paid(10)
    def unavailable() -> tuple[str, int]:
        return "try later", 503

    def chunks(count: int, fail: bool) -> Iterator[bytes]:
        yield from [CHUNK] * count
        if fail:
            raise RuntimeError("the body failed")

    @app.get("/stream")
    @paid(10)
    def stream() -> Response:
        return Response(chunks(20, False))

    @app.get("/broken-stream")
    @paid(10)
    def broken_stream() -> Response:
        return Response(chunks(1, True))

    @app.post("/bytes")
    @paid(per_byte(1, max_bytes=1000))
    def body_bytes() -> Any:
        return jsonify(read=len(request.get_data()))

    def echo_view() -> Any:
        parsed = request.get_json(force=True)  # parsed first: the raw bytes stay too
        return jsonify(echo=parsed, read=len(request.get_data()))

    app.add_url_rule("/echo", "echo", paid(ECHO_PRICE)(echo_view), methods=["POST"])
    app.add_url_rule("/echo-listed", "echo_listed", echo_view, methods=["POST"])

    @app.get("/premium/<item>")
    def premium(item: str) -> Any:
        return jsonify(premium=item)

    class FlaskHarness:
        def __init__(self) -> None:
            self.parent = parent

        def request(
            self,
            method: str,
            path: str,
            headers: dict[str, str] | None = None,
            body: bytes | None = None,
            *,
            chunked: bool = False,
        ) -> Answer:
            client = app.test_client()
            headers = dict(headers or {})
            environ: dict[str, Any] = {}
            if "Content-Length" in headers:  # as sent, not what the test client counts
                environ["CONTENT_LENGTH"] = headers.pop("Content-Length")
            if chunked and body is not None:
                # a server that terminates the input (Werkzeug's, gunicorn) and no length
                environ.update(
                    CONTENT_LENGTH="",
                    HTTP_TRANSFER_ENCODING="chunked",
                    **{"wsgi.input_terminated": True},
                )
                r = client.open(
                    path,
                    method=method,
                    headers=headers,
                    input_stream=io.BytesIO(body),
                    environ_overrides=environ,
                )
            else:
                r = client.open(
                    path, method=method, headers=headers, data=body, environ_overrides=environ
                )
            return Answer(r.status_code, _lower(r.headers), r.get_data())

        def run(self, fn: Callable[..., Any], *args: Any) -> Any:
            return portal.call(fn, *args)

        def receiver(self) -> AsyncReceiver:
            return rx.async_receiver

        def read_one_chunk_and_leave(self, path: str, headers: dict[str, str]) -> None:
            r = app.test_client().get(path, headers=headers, buffered=False)
            assert r.status_code == 200
            next(iter(r.response))
            r.close()

        def close(self) -> None:
            from ilp_receiver_flask import get_service

            get_service(app).stop()
            portal.stop()

    return FlaskHarness()


# ---------------------------------------------------------------------------------------
# Starlette and FastAPI (TestClient)


def _starlette_app(rx: AsyncReceiver) -> Any:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    from ilp_receiver_starlette import IlpReceiverMiddleware, paid

    async def content(request: Request) -> Response:
        return PlainTextResponse("paid content")

    @paid(10)
    async def raises(request: Request) -> Response:
        raise RuntimeError("the view failed")

    @paid(10)
    async def forbidden(request: Request) -> Response:
        raise HTTPException(403)

    @paid(10)
    async def missing(request: Request) -> Response:
        return PlainTextResponse("no such thing", status_code=404)

    @paid(10)
    async def unavailable(request: Request) -> Response:
        return PlainTextResponse("try later", status_code=503)

    async def chunks(count: int, fail: bool) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield CHUNK
        if fail:
            raise RuntimeError("the body failed")

    @paid(10)
    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(20, False))

    @paid(10)
    async def broken_stream(request: Request) -> Response:
        return StreamingResponse(chunks(1, True))

    @paid(per_byte(1, max_bytes=1000))
    async def body_bytes(request: Request) -> Response:
        return JSONResponse({"read": len(await request.body())})

    async def echo(request: Request) -> Response:
        parsed = await request.json()
        return JSONResponse({"echo": parsed, "read": len(await request.body())})

    async def premium(request: Request) -> Response:
        return JSONResponse({"premium": request.path_params["item"]})

    routes = [
        Route("/decorated", paid(10)(content)),
        Route("/listed", content),
        Route("/both", paid(10)(content)),
        Route("/raise", raises),
        Route("/forbidden", forbidden),
        Route("/missing", missing),
        Route("/unavailable", unavailable),
        Route("/stream", stream),
        Route("/broken-stream", broken_stream),
        Route("/bytes", body_bytes, methods=["POST"]),
        Route("/echo", paid(ECHO_PRICE)(echo), methods=["POST"]),
        Route("/echo-listed", echo, methods=["POST"]),
        Route("/premium/{item}", premium),
    ]
    middleware = [Middleware(IlpReceiverMiddleware, receiver=rx, paid=PAID)]
    return Starlette(routes=routes, middleware=middleware)


def _fastapi_app(rx: AsyncReceiver) -> Any:
    # FastAPI reads the endpoints' annotations: their names are imported at the top
    app = FastAPI()
    app.add_middleware(IlpReceiverMiddleware, receiver=rx, paid=PAID)

    @app.get("/decorated")
    @paid(10)
    async def decorated() -> Response:
        return PlainTextResponse("paid content")

    @app.get("/listed")
    async def listed() -> Response:
        return PlainTextResponse("paid content")

    @app.get("/both", dependencies=[Depends(Paid(10))])
    async def both() -> Response:
        return PlainTextResponse("paid content")

    @app.get("/raise")
    @paid(10)
    async def raises() -> Response:
        raise RuntimeError("the view failed")

    @app.get("/forbidden")
    @paid(10)
    async def forbidden() -> Response:
        raise HTTPException(403)

    @app.get("/missing", dependencies=[Depends(Paid(10))])
    def missing() -> Response:
        return PlainTextResponse("no such thing", status_code=404)

    @app.get("/unavailable")
    @paid(10)
    async def unavailable() -> Response:
        return PlainTextResponse("try later", status_code=503)

    async def chunks(count: int, fail: bool) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield CHUNK
        if fail:
            raise RuntimeError("the body failed")

    @app.get("/stream")
    @paid(10)
    async def stream() -> Response:
        return StreamingResponse(chunks(20, False))

    @app.get("/broken-stream")
    @paid(10)
    async def broken_stream() -> Response:
        return StreamingResponse(chunks(1, True))

    @app.post("/bytes", dependencies=[Depends(Paid(per_byte(1, max_bytes=1000)))])
    async def body_bytes(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    # a body parameter: FastAPI reads the body before the dependency prices it
    @app.post("/echo", dependencies=[Depends(Paid(ECHO_PRICE))])
    async def echo(payload: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"echo": payload, "read": len(await request.body())}

    @app.post("/echo-listed")
    async def echo_listed(payload: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"echo": payload, "read": len(await request.body())}

    @app.get("/premium/{item}")
    async def premium(item: str) -> dict[str, str]:
        return {"premium": item}

    return app


def asgi_harness(parent: MemoryParent, make_app: Callable[[AsyncReceiver], Any]) -> Harness:
    from starlette.testclient import TestClient

    asyncio.run(parent.start())
    rx = async_receiver(parent, require_uplink=False)
    client = TestClient(make_app(rx), raise_server_exceptions=False)
    client.__enter__()

    class AsgiHarness:
        def __init__(self) -> None:
            self.parent = parent

        def request(
            self,
            method: str,
            path: str,
            headers: dict[str, str] | None = None,
            body: bytes | None = None,
            *,
            chunked: bool = False,
        ) -> Answer:
            content: Any = body
            if chunked and body is not None:
                content = iter([body[:10], body[10:]])
            r = client.request(method, path, headers=headers, content=content)
            return Answer(r.status_code, _lower(r.headers), r.content)

        def run(self, fn: Callable[..., Any], *args: Any) -> Any:
            assert client.portal is not None
            return client.portal.call(fn, *args)

        def receiver(self) -> AsyncReceiver:
            return rx

        def read_one_chunk_and_leave(self, path: str, headers: dict[str, str]) -> None:
            with client.stream("GET", path, headers=headers) as r:
                assert r.status_code == 200
                next(r.iter_bytes())

        def close(self) -> None:
            client.__exit__(None, None, None)

    return AsgiHarness()


# ---------------------------------------------------------------------------------------
# Django


def django_harness(parent: MemoryParent) -> Harness:
    import django
    from django.test import Client
    from django.test.utils import override_settings

    django.setup()
    portal = BlockingPortal("conformance-django")
    portal.call(parent.start)
    rx = Receiver(parent.child, portal=portal, secret=SECRET, require_uplink=False)
    settings = override_settings(ILP_RECEIVER={"RECEIVER": lambda: rx, "PAID": PAID})
    settings.enable()

    class DjangoHarness:
        def __init__(self) -> None:
            self.parent = parent

        def request(
            self,
            method: str,
            path: str,
            headers: dict[str, str] | None = None,
            body: bytes | None = None,
            *,
            chunked: bool = False,
        ) -> Answer:
            # Django's WSGI handler reads Content-Length bytes: a chunked upload is not
            # something its test client (or its WSGI request) can carry
            client = Client(raise_request_exception=False)
            extra = {"headers": headers or {}}
            if body is None:
                r = client.generic(method, path, **extra)
            else:
                r = client.generic(method, path, data=body, content_type="text/plain", **extra)
            content = b"".join(r.streaming_content) if r.streaming else r.content
            return Answer(r.status_code, _lower(r.headers), content)

        def run(self, fn: Callable[..., Any], *args: Any) -> Any:
            return portal.call(fn, *args)

        def receiver(self) -> AsyncReceiver:
            return rx.async_receiver

        def read_one_chunk_and_leave(self, path: str, headers: dict[str, str]) -> None:
            r = Client().get(path, headers=headers)
            assert r.status_code == 200
            next(iter(r.streaming_content))
            r.close()

        def close(self) -> None:
            from ilp_receiver_django import get_service

            get_service().stop()
            settings.disable()
            portal.stop()

    return DjangoHarness()


# ---------------------------------------------------------------------------------------
# aiohttp (its TestClient on a loop thread)


def aiohttp_harness(parent: MemoryParent) -> Harness:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from ilp_receiver_aiohttp import paid, setup

    portal = BlockingPortal("conformance-aiohttp")
    receivers: list[AsyncReceiver] = []

    async def make_receiver() -> None:
        receivers.append(async_receiver(parent, require_uplink=False))

    portal.call(make_receiver)

    async def content(request: web.Request) -> web.Response:
        return web.Response(text="paid content")

    @paid(10)
    async def raises(request: web.Request) -> web.Response:
        raise RuntimeError("the view failed")

    @paid(10)
    async def forbidden(request: web.Request) -> web.Response:
        raise web.HTTPForbidden()

    @paid(10)
    async def missing(request: web.Request) -> web.Response:
        return web.Response(text="no such thing", status=404)

    @paid(10)
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(text="try later", status=503)

    async def chunks(request: web.Request, count: int, fail: bool) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(count):
            await response.write(CHUNK)
            await asyncio.sleep(0.005)
        if fail:
            raise RuntimeError("the body failed")
        await response.write_eof()
        return response

    @paid(10)
    async def stream(request: web.Request) -> web.StreamResponse:
        return await chunks(request, 20, False)

    @paid(10)
    async def broken_stream(request: web.Request) -> web.StreamResponse:
        return await chunks(request, 1, True)

    @paid(per_byte(1, max_bytes=1000))
    async def body_bytes(request: web.Request) -> web.Response:
        return web.json_response({"read": len(await request.read())})

    async def echo(request: web.Request) -> web.Response:
        parsed = await request.json()
        return web.json_response({"echo": parsed, "read": len(await request.read())})

    async def premium(request: web.Request) -> web.Response:
        return web.json_response({"premium": request.match_info["item"]})

    async def start() -> TestClient[web.Request, web.Application]:
        await parent.start()
        app = web.Application()
        for path, handler in (
            ("/decorated", paid(10)(content)),
            ("/listed", content),
            ("/both", paid(10)(content)),
            ("/raise", raises),
            ("/forbidden", forbidden),
            ("/missing", missing),
            ("/unavailable", unavailable),
            ("/stream", stream),
            ("/broken-stream", broken_stream),
            ("/premium/{item}", premium),
        ):
            app.router.add_get(path, handler)
        app.router.add_post("/bytes", body_bytes)
        app.router.add_post("/echo", paid(ECHO_PRICE)(echo))
        app.router.add_post("/echo-listed", echo)
        setup(app, receivers[0], paid=PAID)
        client = TestClient(TestServer(app))
        await client.start_server()
        return client

    client = portal.call(start)

    class AiohttpHarness:
        def __init__(self) -> None:
            self.parent = parent

        def request(
            self,
            method: str,
            path: str,
            headers: dict[str, str] | None = None,
            body: bytes | None = None,
            *,
            chunked: bool = False,
        ) -> Answer:
            async def go() -> Answer:
                data: Any = body
                if chunked and body is not None:

                    async def parts() -> AsyncIterator[bytes]:
                        yield body[:10]
                        yield body[10:]

                    data = parts()
                try:
                    async with client.request(method, path, headers=headers, data=data) as r:
                        return Answer(r.status, _lower(r.headers), await r.read())
                except Exception:  # a body broken mid-way: the connection is cut
                    return Answer(-1, {}, b"")

            return portal.call(go)

        def run(self, fn: Callable[..., Any], *args: Any) -> Any:
            return portal.call(fn, *args)

        def receiver(self) -> AsyncReceiver:
            return receivers[0]

        def read_one_chunk_and_leave(self, path: str, headers: dict[str, str]) -> None:
            async def go() -> None:
                r = await client.get(path, headers=headers)
                assert r.status == 200
                await r.content.readexactly(len(CHUNK))
                r.close()
                await asyncio.sleep(0.3)  # the handler writes on, into a closed connection

            portal.call(go)

        def close(self) -> None:
            portal.call(client.close)
            portal.stop()

    return AiohttpHarness()


def make_harness(name: str, parent: MemoryParent) -> Harness:
    if name == "flask":
        return flask_harness(parent)
    if name == "starlette":
        return asgi_harness(parent, _starlette_app)
    if name == "fastapi":
        return asgi_harness(parent, _fastapi_app)
    if name == "django":
        return django_harness(parent)
    return aiohttp_harness(parent)


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = make_harness(request.param, MemoryParent())
    yield harness
    harness.close()


def fund(harness: Harness, amount: int, path: str = "/decorated") -> None:
    """Pay ``amount`` to the token, through the ``Pay`` of a 402."""
    r = harness.request("GET", path, TOKEN_ONLY)
    assert r.status == 402, r
    reply = harness.run(harness.parent.pay, funding_prepare(r.headers["pay"], amount))
    assert isinstance(reply, IlpFulfill)


def balance(harness: Harness) -> int:
    """The token's balance in the receiver's store."""
    result: int = harness.run(harness.receiver().balance, token_account(TOKEN))
    return result


# ---------------------------------------------------------------------------------------
# The paywall's statuses


def test_every_status(adapter: Harness) -> None:
    r = adapter.request("OPTIONS", "/decorated")
    assert r.status == 204
    check_pay(r.headers["pay"], 10)
    r = adapter.request("GET", "/decorated")
    assert r.status == 402
    check_pay(r.headers["pay"], 10)
    assert b"PaymentRequired" in r.body
    r = adapter.request("GET", "/decorated", {"Pay-Token": "AAAA"})
    assert r.status == 400
    assert b"InvalidPayToken" in r.body
    r = adapter.request("GET", "/decorated", TOKEN_ONLY)
    assert r.status == 402
    assert r.headers["pay-balance"] == "0"
    fund(adapter, 25)
    r = adapter.request("GET", "/decorated", TOKEN_ONLY)
    assert r.status == 200
    assert r.body == b"paid content"
    assert r.headers["pay-balance"] == "15"
    check_pay(r.headers["pay"], 10)
    r = adapter.request("GET", "/listed", TOKEN_ONLY)
    assert (r.status, r.headers["pay-balance"]) == (200, "5")
    assert balance(adapter) == 5


@pytest.mark.parametrize("adapter_name", ADAPTERS)
def test_uplink_down_then_up(adapter_name: str) -> None:
    parent = gated_parent()
    assert isinstance(parent.child, GatedLink)
    parent.child.open = False
    harness = make_harness(adapter_name, parent)
    try:
        r = harness.request("GET", "/decorated", TOKEN_ONLY)
        assert r.status == 503
        assert r.headers["retry-after"].isdigit()
        assert b"UplinkUnavailable" in r.body
        r = harness.request("GET", "/.well-known/pay", {"Accept": "application/spsp4+json"})
        assert r.status == 503
        parent.child.open = True
        deadline = time.monotonic() + 15
        while (r := harness.request("GET", "/decorated", TOKEN_ONLY)).status == 503:
            assert time.monotonic() < deadline, "the receiver did not connect"
            time.sleep(0.1)
        assert r.status == 402
        fund(harness, 10)
        assert harness.request("GET", "/decorated", TOKEN_ONLY).status == 200
    finally:
        harness.close()


# ---------------------------------------------------------------------------------------
# The refund table (docs/paid-api.md), row by row


@pytest.mark.parametrize(
    ("path", "status", "kept"),
    [
        ("/decorated", 200, True),  # the view answered 2xx
        ("/forbidden", 403, False),  # the view answered 4xx (the framework's exception)
        ("/missing", 404, False),  # the view answered 4xx (returned)
        ("/unavailable", 503, False),  # the view answered 5xx
        ("/raise", 500, False),  # the view raised
    ],
)
def test_refund_rule(adapter: Harness, path: str, status: int, kept: bool) -> None:
    fund(adapter, 100)
    r = adapter.request("GET", path, TOKEN_ONLY)
    assert r.status == status
    expected = 90 if kept else 100
    assert balance(adapter) == expected
    if "pay-balance" in r.headers:  # an error page the framework made may not carry it
        assert r.headers["pay-balance"] == str(expected)
    else:
        assert status == 500


def test_refund_when_the_streamed_body_fails(adapter: Harness) -> None:
    fund(adapter, 100)
    with contextlib.suppress(Exception):
        adapter.request("GET", "/broken-stream", TOKEN_ONLY)
    deadline = time.monotonic() + 5
    while balance(adapter) != 100:
        assert time.monotonic() < deadline, balance(adapter)
        time.sleep(0.05)


def test_charge_kept_when_the_client_leaves_mid_body(adapter: Harness) -> None:
    fund(adapter, 100)
    adapter.read_one_chunk_and_leave("/stream", TOKEN_ONLY)
    time.sleep(0.1)
    assert balance(adapter) == 90


# ---------------------------------------------------------------------------------------
# Routing: no charge for 404 / 405, one charge per request


def test_no_charge_without_a_route(adapter: Harness) -> None:
    fund(adapter, 100)
    r = adapter.request("GET", "/premium/", TOKEN_ONLY)  # a paid prefix, no route
    assert r.status == 404
    assert "pay" not in r.headers
    r = adapter.request("POST", "/premium/gold", TOKEN_ONLY)  # the route, another method
    assert r.status == 405
    assert "pay" not in r.headers
    assert balance(adapter) == 100
    r = adapter.request("GET", "/premium/gold", TOKEN_ONLY)
    assert (r.status, r.headers["pay-balance"]) == (200, "75")


def test_listed_and_decorated_is_charged_once(adapter: Harness) -> None:
    fund(adapter, 100)
    r = adapter.request("GET", "/both", TOKEN_ONLY)
    assert (r.status, r.headers["pay-balance"]) == (200, "90")
    assert balance(adapter) == 90
    assert adapter.request("OPTIONS", "/both").status == 204


def test_fifty_concurrent_requests_on_a_token_funded_for_25(adapter: Harness) -> None:
    fund(adapter, 250)

    def call(_: int) -> int:
        return adapter.request("GET", "/decorated", TOKEN_ONLY).status

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(call, range(50)))
    assert statuses.count(200) == 25
    assert statuses.count(402) == 25
    assert balance(adapter) == 0


# ---------------------------------------------------------------------------------------
# Prices from the body


def test_body_price_from_the_bytes_read(adapter: Harness) -> None:
    fund(adapter, 1000)
    body = b"y" * 300
    r = adapter.request("POST", "/bytes", TOKEN_ONLY, body, chunked=True)
    assert r.status == 200, r
    assert json.loads(r.body) == {"read": 300}
    assert r.headers["pay-balance"] == "700"
    r = adapter.request("POST", "/bytes", TOKEN_ONLY, b"z" * 1001, chunked=True)
    assert r.status == 413
    assert balance(adapter) == 700


@pytest.mark.parametrize("path", ["/echo", "/echo-listed"])
@pytest.mark.parametrize("chunked", [False, True])
def test_the_body_read_for_the_price_is_the_views(
    adapter: Harness, path: str, chunked: bool
) -> None:
    fund(adapter, 1000)
    payload = {"text": "\u00e9" * 40 + "!", "numbers": list(range(60))}
    body = json.dumps(payload).encode()
    assert 200 < len(body) < 500
    headers = {**TOKEN_ONLY, "Content-Type": "application/json"}
    r = adapter.request("POST", path, headers, body, chunked=chunked)
    assert r.status == 200, r
    assert json.loads(r.body) == {"echo": payload, "read": len(body)}
    assert r.headers["pay-balance"] == str(1000 - len(body))
    r = adapter.request("POST", path, headers, b"[" + b"1," * 500 + b"1]", chunked=chunked)
    assert r.status == 413
    assert b"PayloadTooLarge" in r.body
    assert balance(adapter) == 1000 - len(body)


@pytest.mark.parametrize("adapter_name", ["flask", "starlette", "fastapi", "django"])
def test_absurd_content_length(adapter_name: str) -> None:
    harness = make_harness(adapter_name, MemoryParent())
    try:
        headers = {**TOKEN_ONLY, "Content-Length": "18446744073709551616"}
        r = harness.request("POST", "/bytes", headers, b"")
        assert r.status == 413
        assert b"PayloadTooLarge" in r.body
    finally:
        harness.close()
