"""A local, Rafiki-shaped Open Payments wallet for the Web Monetization tests.

One aiohttp server on 127.0.0.1 plays the site's wallet (spec ``13-modern-web-
monetization.md`` §2): the wallet address document at ``/<name>``, the resource server at
the root (``POST /incoming-payments``, ``GET /incoming-payments/<uuid>``: the public,
unauthenticated shape ``{receivedAmount, authServer}`` as Rafiki's
``toPublicOpenPaymentsType``) and an authorization server URL at ``/auth`` (no grants:
the verifier never asks for one).  Tests move money by :meth:`FakeWallet.receive`.

Every answer is recorded (:attr:`FakeWallet.served`) with the OpenAPI path it belongs to,
so ``tests/test_wm_open_payments.py`` validates them against the Open Payments documents
shipped in ``@interledger/open-payments`` (``tests/openapi/``).  Misbehaviour for the
bad-input tests is switched on per incoming payment (:attr:`FakeWallet.modes`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web


@dataclass
class Served:
    """One recorded answer (or, ``kind="request"``, a request body we received): which
    spec and OpenAPI path, the method, status and body."""

    spec: str
    path: str
    method: str
    status: int
    body: Any
    kind: str = "response"


@dataclass
class SignedRequest:
    """A request as Rafiki's signature verifier sees it (lower-case header names)."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None


@dataclass
class _Payment:
    id: str
    wallet_address: str
    received: int = 0
    asset_code: str = "USD"
    asset_scale: int = 2
    completed: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires_at: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(minutes=10))
    metadata: dict[str, Any] = field(default_factory=lambda: {"source": "Web Monetization"})


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeWallet:
    """The fake wallet; ``await start()``, then use :attr:`wallet_address`."""

    def __init__(self, name: str = "site", asset_code: str = "USD", asset_scale: int = 2) -> None:
        self.name = name
        self.asset_code = asset_code
        self.asset_scale = asset_scale
        self.payments: dict[str, _Payment] = {}
        self.served: list[Served] = []
        #: per incoming payment id: "garbage", "huge", "slow", "html-404"
        self.modes: dict[str, str] = {}
        #: the wallet address document answers this instead, when set
        self.wallet_override: Any = None
        self.requests: list[str] = []
        #: every request to the authorization server and every authenticated GET
        self.signed: list[SignedRequest] = []
        #: access tokens issued (value -> grant id); tests may revoke them
        self.tokens: dict[str, str] = {}
        self.base = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def wallet_address(self) -> str:
        """The site's wallet address URL."""
        return f"{self.base}/{self.name}"

    @property
    def auth_server(self) -> str:
        """The (grant-less) authorization server URL."""
        return f"{self.base}/auth"

    async def start(self, host: str = "127.0.0.1") -> FakeWallet:
        """Serve on ``host`` at a free port."""
        app = web.Application()
        app.router.add_get(f"/{self.name}", self._wallet)
        app.router.add_get("/other", self._other_wallet)
        app.router.add_post("/incoming-payments", self._create)
        app.router.add_get("/incoming-payments/{id}", self._get)
        app.router.add_post("/auth", self._grant)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = runner.addresses[0][1]
        self.base = f"http://{host}:{port}"
        self._runner = runner
        return self

    async def close(self) -> None:
        """Stop serving."""
        self._closing.set()  # releases "slow" answers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests do ---------------------------------------------------------------

    def create(self, *, wallet_address: str | None = None, asset_code: str | None = None) -> str:
        """Create an incoming payment (as the extension does through GNAP); its URL."""
        payment_id = f"{self.base}/incoming-payments/{uuid.uuid4()}"
        self.payments[payment_id] = _Payment(
            payment_id,
            wallet_address or self.wallet_address,
            asset_code=asset_code or self.asset_code,
            asset_scale=self.asset_scale,
        )
        return payment_id

    def receive(self, url: str, amount: int) -> int:
        """``amount`` more arrives at incoming payment ``url``; its new receivedAmount."""
        payment = self.payments[url]
        payment.received += amount
        return payment.received

    def complete(self, url: str) -> None:
        """Mark ``url`` completed (no more money is accepted)."""
        self.payments[url].completed = True

    # -- shapes ------------------------------------------------------------------------

    def wallet_document(self) -> dict[str, Any]:
        """The wallet address document (``wallet-address-server.yaml`` ``GET /``)."""
        return {
            "id": self.wallet_address,
            "publicName": "The site",
            "assetCode": self.asset_code,
            "assetScale": self.asset_scale,
            "authServer": self.auth_server,
            "resourceServer": self.base,
        }

    def _amount(self, payment: _Payment, value: int) -> dict[str, Any]:
        return {
            "value": str(value),
            "assetCode": payment.asset_code,
            "assetScale": payment.asset_scale,
        }

    def public(self, payment: _Payment) -> dict[str, Any]:
        """Rafiki's ``toPublicOpenPaymentsType``: ``{receivedAmount, authServer}``."""
        return {
            "receivedAmount": self._amount(payment, payment.received),
            "authServer": self.auth_server,
        }

    def full(self, payment: _Payment) -> dict[str, Any]:
        """The ``incoming-payment-with-methods`` shape (what a create answers)."""
        secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        return {
            "id": payment.id,
            "walletAddress": payment.wallet_address,
            "receivedAmount": self._amount(payment, payment.received),
            "completed": payment.completed,
            "expiresAt": _iso(payment.expires_at),
            "createdAt": _iso(payment.created_at),
            "metadata": payment.metadata,
            "methods": [
                {"type": "ilp", "ilpAddress": "test.fake-wallet.receiver", "sharedSecret": secret}
            ],
        }

    # -- handlers ----------------------------------------------------------------------

    def _answer(self, spec: str, path: str, method: str, status: int, body: Any) -> web.Response:
        self.served.append(Served(spec, path, method, status, body))
        return web.json_response(body, status=status)

    async def _wallet(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.wallet_override is not None:
            return web.json_response(self.wallet_override)
        return self._answer("wallet-address-server.yaml", "/", "get", 200, self.wallet_document())

    async def _other_wallet(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        document = {**self.wallet_document(), "id": f"{self.base}/other"}
        return self._answer("wallet-address-server.yaml", "/", "get", 200, document)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        body = await request.json()
        url = self.create(wallet_address=body["walletAddress"])
        payment = self.payments[url]
        if isinstance(body.get("metadata"), dict):
            payment.metadata = body["metadata"]
        return self._answer(
            "resource-server.yaml", "/incoming-payments", "post", 201, self.full(payment)
        )

    async def _record(self, request: web.Request) -> str:
        text = await request.text() if request.can_read_body else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.signed.append(
            SignedRequest(request.method, f"{self.base}{request.path}", headers, text)
        )
        return text or ""

    async def _grant(self, request: web.Request) -> web.StreamResponse:
        """A non-interactive grant, as Rafiki gives ``incoming-payment`` requests."""
        self.requests.append(request.path)
        body = json.loads(await self._record(request))
        self.served.append(Served("auth-server.yaml", "/", "post", 0, body, kind="request"))
        access = body["access_token"]["access"]
        grant_id = str(uuid.uuid4())
        value = secrets.token_hex(20).upper()
        self.tokens[value] = grant_id
        answer = {
            "access_token": {
                "value": value,
                "manage": f"{self.auth_server}/token/{uuid.uuid4()}",
                "expires_in": 600,
                "access": access,
            },
            "continue": {
                "access_token": {"value": secrets.token_hex(10).upper()},
                "uri": f"{self.auth_server}/continue/{grant_id}",
            },
        }
        return self._answer("auth-server.yaml", "/", "post", 200, answer)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        url = f"{self.base}{request.path}"
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            await self._record(request)
            token = authorization.removeprefix("GNAP ")
            if token not in self.tokens:
                error = {"error": {"code": "unauthorized", "description": "Unauthorized"}}
                self.served.append(
                    Served("resource-server.yaml", "/incoming-payments/{id}", "get", 401, error)
                )
                return web.json_response(
                    error,
                    status=401,
                    headers={"WWW-Authenticate": f"GNAP as_uri={self.auth_server}"},
                )
            payment = self.payments.get(url)
            if payment is not None:
                answer = self.full(payment)  # Rafiki's authenticated read, with methods
                return self._answer(
                    "resource-server.yaml", "/incoming-payments/{id}", "get", 200, answer
                )
        mode = self.modes.get(url)
        if mode == "garbage":
            return web.Response(body=b"<html>not json", content_type="text/html")
        if mode == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(b'{"receivedAmount": {"value": "')
            for _ in range(64):  # 4 MiB unless the reader stops early
                await response.write(b"9" * 65536)
            await response.write_eof()
            return response
        if mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 30)
        payment = self.payments.get(url)
        if payment is None:
            error = {"error": {"code": "NotFound", "description": "Not Found"}}
            return self._answer(
                "resource-server.yaml", "/incoming-payments/{id}", "get", 404, error
            )
        return self._answer(
            "resource-server.yaml", "/incoming-payments/{id}", "get", 200, self.public(payment)
        )
