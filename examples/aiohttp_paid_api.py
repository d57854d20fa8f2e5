"""A paid JSON API on aiohttp: HTTP-ILP (``Pay`` / ``Pay-Token`` / ``Pay-Balance``).

Run it against a connector::

    ILP_UPLINK=btp+ws://shop:secret@localhost:7768 python examples/aiohttp_paid_api.py
    python examples/aiohttp_paid_api.py btp+ws://shop:secret@localhost:7768

``setup()`` keeps the receiver under an ``AppKey``, starts and stops it through
``cleanup_ctx``, serves the payment pointer at ``/.well-known/pay`` and runs the
paywall: ``GET /fortune`` costs 10 units, ``POST /shout`` one unit per byte.

``ILP_RECEIVER_PAY_METHOD`` picks how the API is paid: ``stream`` (this example's
default: ``Pay: interledger-stream <destination> <secret>``, for STREAM-era HTTP-ILP
clients such as ilp-protocol-stream 2.x ones) or ``psk2`` (``Pay: interledger-psk2 ...``,
for the 2018 koa-ilp / superagent-ilp clients)::

    ILP_RECEIVER_PAY_METHOD=psk2 ILP_UPLINK=... python examples/aiohttp_paid_api.py
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from aiohttp import web

from ilp_receiver.codec.pay_header import parse_pay_token
from ilp_receiver.errors import DecodeError
from ilp_receiver.paywall import RequestFacts, token_account
from ilp_receiver_aiohttp import RECEIVER_KEY, paid, setup

FORTUNES = [
    "A paid request is a happy request.",
    "Your balance will decrease by exactly ten units.",
    "Interledger: money as easy as packets.",
]


def shout_price(facts: RequestFacts) -> int:
    """One unit per byte of the request body, at least one."""
    return max(1, int(facts.header("content-length") or "0"))


async def index(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "endpoints": {"GET /fortune": 10, "POST /shout": "1 per byte"},
            "payment_pointer": str(request.url.with_path("/.well-known/pay")),
        }
    )


@paid(10)
async def fortune(request: web.Request) -> web.Response:
    return web.json_response({"fortune": random.choice(FORTUNES)})


@paid(shout_price)
async def shout(request: web.Request) -> web.Response:
    return web.json_response({"shout": (await request.text()).upper()})


async def balance(request: web.Request) -> web.Response:
    try:
        token = parse_pay_token(request.headers.get("Pay-Token", ""))
    except DecodeError as exc:
        return web.json_response({"error": exc.reason}, status=400)
    value = await request.app[RECEIVER_KEY].balance(token_account(token))
    return web.json_response({"balance": value})


def create_app(
    uplink: Any = None,
    *,
    store: str | None = None,
    secret: str | None = None,
    pay_method: str | None = None,
) -> web.Application:
    """The app; ``uplink`` defaults to ``$ILP_UPLINK``, ``store`` to ``$ILP_STORE``,
    ``pay_method`` to ``$ILP_RECEIVER_PAY_METHOD``, else ``"stream"``."""
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/fortune", fortune)
    app.router.add_post("/shout", shout)
    app.router.add_get("/balance", balance)
    setup(
        app,
        uplink=uplink or os.environ.get("ILP_UPLINK"),
        store=store or os.environ.get("ILP_STORE", "paid-api.db"),
        secret=secret or os.environ.get("ILP_SECRET"),
        receiver_name="Fortune API",
        pay_method=pay_method or os.environ.get("ILP_RECEIVER_PAY_METHOD") or "stream",
    )
    return app


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ILP_UPLINK")
    if not target:
        sys.exit("usage: aiohttp_paid_api.py <uplink URL>  (or set ILP_UPLINK)")
    web.run_app(create_app(target), port=int(os.environ.get("PORT", "8080")))
