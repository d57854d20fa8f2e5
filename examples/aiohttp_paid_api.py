"""A paid JSON API on aiohttp: HTTP-ILP (``Pay`` / ``Pay-Token`` / ``Pay-Balance``).

Run it against a connector::

    ILP_RECEIVER_UPLINK=btp+ws://shop:secret@localhost:7768 python examples/aiohttp_paid_api.py
    python examples/aiohttp_paid_api.py btp+ws://shop:secret@localhost:7768

``setup()`` keeps the receiver under an ``AppKey``, starts and stops it through
``cleanup_ctx``, serves the payment pointer at ``/.well-known/pay`` and runs the
paywall: ``GET /fortune`` costs 10 units, ``POST /shout`` one unit per byte read.
Every other setting comes from the ``ILP_RECEIVER_*`` environment variables
(``docs/guide-aiohttp.md``).

``ILP_RECEIVER_PAY_METHOD`` picks how the API is paid: ``stream`` (this example's
default: ``Pay: interledger-stream <destination> <secret>``, for STREAM-era HTTP-ILP
clients such as ilp-protocol-stream 2.x ones) or ``psk2`` (``Pay: interledger-psk2 ...``,
for the 2018 koa-ilp / superagent-ilp clients)::

    ILP_RECEIVER_PAY_METHOD=psk2 ILP_RECEIVER_UPLINK=... python examples/aiohttp_paid_api.py
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from aiohttp import web

from ilp_receiver.codec.pay_header import parse_pay_token
from ilp_receiver.errors import DecodeError
from ilp_receiver.paywall import per_byte, token_account
from ilp_receiver_aiohttp import RECEIVER_KEY, paid, setup

FORTUNES = [
    "A paid request is a happy request.",
    "Your balance will decrease by exactly ten units.",
    "Interledger: money as easy as packets.",
]


#: One unit per byte of the request body actually read (a chunked body too), at least
#: one; bodies above 64 KiB are refused with 413 before anything is charged.
shout_price = per_byte(1, max_bytes=64 * 1024)


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


def example_settings(
    uplink: Any, store: str | None, secret: str | None, pay_method: str | None
) -> dict[str, Any]:
    """What this example sets; everything else comes from ``ILP_RECEIVER_*`` variables.

    ``uplink`` (else ``$ILP_RECEIVER_UPLINK``), ``store`` (else ``$ILP_RECEIVER_STORE``,
    else ``paid-api.db``), ``secret`` (else ``$ILP_RECEIVER_SECRET`` or
    ``$ILP_RECEIVER_SECRET_FILE``, else the file ``paid-api.secret``, created on first
    start), ``pay_method`` (else ``$ILP_RECEIVER_PAY_METHOD``, else ``"stream"``).
    """
    given: dict[str, Any] = {"receiver_name": "Fortune API"}
    if uplink is not None:
        given["uplink"] = uplink
    given["store"] = store or os.environ.get("ILP_RECEIVER_STORE") or "paid-api.db"
    if secret is not None:
        given["secret"] = secret
    elif not (os.environ.get("ILP_RECEIVER_SECRET") or os.environ.get("ILP_RECEIVER_SECRET_FILE")):
        given["secret_file"] = "paid-api.secret"  # noqa: S105 (a file name)
    given["pay_method"] = pay_method or os.environ.get("ILP_RECEIVER_PAY_METHOD") or "stream"
    return given


def create_app(
    uplink: Any = None,
    *,
    store: str | None = None,
    secret: str | None = None,
    pay_method: str | None = None,
) -> web.Application:
    """The app (settings: :func:`example_settings`)."""
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/fortune", fortune)
    app.router.add_post("/shout", shout)
    app.router.add_get("/balance", balance)
    setup(app, **example_settings(uplink, store, secret, pay_method))
    return app


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else None
    if not target and not os.environ.get("ILP_RECEIVER_UPLINK"):
        sys.exit("usage: aiohttp_paid_api.py <uplink URL>  (or set ILP_RECEIVER_UPLINK)")
    web.run_app(create_app(target), port=int(os.environ.get("PORT", "8080")))
