"""The FastAPI adapter (``integrations/ilp_receiver_fastapi``) with FastAPI's TestClient:
typed endpoints, every kind of return value, the dependency and the decorator, the
OpenAPI schema."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from ilp_receiver.codec.ilp import IlpFulfill
from ilp_receiver.paywall import token_account
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.web.lifecycle import PaidRequest
from ilp_receiver_fastapi import PAID_RESPONSES, IlpReceiverMiddleware, Paid, get_receiver, paid
from tests.test_paywall import TOKEN, TOKEN_HEADER, MemoryParent, async_receiver, funding_prepare

TOKEN_ONLY = {"Pay-Token": TOKEN_HEADER}


class Item(BaseModel):
    name: str
    count: int
    note: str | None = None


def make_app(rx: AsyncReceiver) -> FastAPI:
    app = FastAPI(title="paid")
    app.add_middleware(IlpReceiverMiddleware, receiver=rx)

    @app.get("/typed/{name}")
    @paid(10)
    async def typed(
        name: str, count: int = 1, note: Annotated[str | None, Header()] = None
    ) -> Item:
        return Item(name=name, count=count, note=note)

    @app.get("/dict", dependencies=[Depends(Paid(10))])
    def as_dict(q: str | None = None) -> dict[str, Any]:
        return {"q": q}

    @app.get("/response")
    @paid(10)
    async def as_response() -> Response:
        return Response("raw bytes", media_type="text/plain", headers={"X-Own": "yes"})

    @app.post("/items")
    @paid(10)
    async def create(
        item: Annotated[Item, Body()], receiver: Annotated[AsyncReceiver, Depends(get_receiver)]
    ) -> Item:
        assert receiver is rx
        return item

    @app.get("/charged")
    async def charged(
        paid_request: Annotated[PaidRequest | None, Depends(Paid(10))],
    ) -> dict[str, Any]:
        assert paid_request is not None
        return {"charged": paid_request.charged, "balance": paid_request.balance}

    @app.get("/refused")
    @paid(10)
    async def refused() -> None:
        raise HTTPException(409, "conflict")

    @app.get("/free")
    async def free() -> JSONResponse:
        return JSONResponse({"free": True})

    return app


@pytest.fixture
def net() -> Iterator[tuple[TestClient, MemoryParent, AsyncReceiver]]:
    parent = MemoryParent()
    asyncio.run(parent.start())
    rx = async_receiver(parent)
    with TestClient(make_app(rx)) as client:
        yield client, parent, rx


def fund(client: TestClient, parent: MemoryParent, amount: int) -> None:
    r = client.get("/dict", headers=TOKEN_ONLY)
    assert r.status_code == 402
    assert client.portal is not None
    reply = client.portal.call(parent.pay, funding_prepare(r.headers["Pay"], amount))
    assert isinstance(reply, IlpFulfill)


def balance(client: TestClient, rx: AsyncReceiver) -> int:
    assert client.portal is not None
    value: int = client.portal.call(rx.balance, token_account(TOKEN))
    return value


def test_typed_endpoint_with_query_parameters(net: Any) -> None:
    client, parent, rx = net
    r = client.get("/typed/apple?count=3")
    assert r.status_code == 402
    assert r.json()["id"] == "PaymentRequired"
    fund(client, parent, 100)
    r = client.get("/typed/apple?count=3", headers={**TOKEN_ONLY, "Note": "ripe"})
    assert r.status_code == 200
    assert r.json() == {"name": "apple", "count": 3, "note": "ripe"}
    assert r.headers["Pay-Balance"] == "90"
    # FastAPI still validates the typed parameters (and a refused request is not charged)
    r = client.get("/typed/apple?count=many", headers=TOKEN_ONLY)
    assert r.status_code == 422
    assert balance(client, rx) == 90


def test_dict_model_and_response_returns_are_charged_once(net: Any) -> None:
    client, parent, rx = net
    fund(client, parent, 100)
    r = client.get("/dict?q=x", headers=TOKEN_ONLY)
    assert (r.status_code, r.json(), r.headers["Pay-Balance"]) == (200, {"q": "x"}, "90")
    r = client.get("/response", headers=TOKEN_ONLY)
    assert (r.status_code, r.text, r.headers["Pay-Balance"]) == (200, "raw bytes", "80")
    assert r.headers["X-Own"] == "yes"
    assert r.headers["Pay"].startswith("interledger-psk2 ")
    r = client.post("/items", json={"name": "pear", "count": 2}, headers=TOKEN_ONLY)
    assert r.status_code == 200
    assert r.json() == {"name": "pear", "count": 2, "note": None}
    assert r.headers["Pay-Balance"] == "70"
    r = client.get("/charged", headers=TOKEN_ONLY)
    assert r.json() == {"charged": 10, "balance": 60}
    assert balance(client, rx) == 60
    assert "Pay" not in client.get("/free").headers


def test_options_and_refund(net: Any) -> None:
    client, parent, rx = net
    r = client.options("/typed/apple")
    assert r.status_code == 204
    assert r.headers["Pay"].endswith(" 10")
    fund(client, parent, 100)
    r = client.get("/refused", headers=TOKEN_ONLY)
    assert r.status_code == 409
    assert r.headers["Pay-Balance"] == "100"
    assert balance(client, rx) == 100


def test_openapi_documents_paid_routes(net: Any) -> None:
    client, _parent, _rx = net
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in (
        ("/typed/{name}", "get"),
        ("/dict", "get"),
        ("/response", "get"),
        ("/items", "post"),
        ("/charged", "get"),
    ):
        operation = paths[path][method]
        names = [p["name"] for p in operation.get("parameters", [])]
        assert "Pay-Token" in names, path
        responses = operation["responses"]
        assert "402" in responses, path
        assert "Pay" in responses["402"]["headers"]
        assert responses["402"] == PAID_RESPONSES[402]
        assert {"Pay", "Pay-Balance"} <= set(responses["200"]["headers"])
    typed = paths["/typed/{name}"]["get"]
    assert {p["name"] for p in typed["parameters"]} == {"name", "count", "note", "Pay-Token"}
    assert "402" not in paths["/free"]["get"]["responses"]
