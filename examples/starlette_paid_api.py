"""A paid JSON API on Starlette: HTTP-ILP (``Pay`` / ``Pay-Token`` / ``Pay-Balance``).

Run it against a connector (needs ``uvicorn``)::

    ILP_RECEIVER_UPLINK=btp+ws://shop:secret@localhost:7768 python examples/starlette_paid_api.py
    python examples/starlette_paid_api.py btp+ws://shop:secret@localhost:7768

The middleware starts the receiver with the app's lifespan, serves the payment pointer
at ``/.well-known/pay`` and runs the paywall: ``GET /fortune`` costs 10 units,
``POST /shout`` one unit per byte read, and ``/premium/*`` (configured by path, no
decorator) 25 units.  Every other setting comes from the ``ILP_RECEIVER_*`` environment
variables (``docs/guide-starlette.md``).

``ILP_RECEIVER_PAY_METHOD`` picks how the API is paid: ``stream`` (this example's
default: ``Pay: interledger-stream <destination> <secret>``, for STREAM-era HTTP-ILP
clients such as ilp-protocol-stream 2.x ones) or ``psk2`` (``Pay: interledger-psk2 ...``,
for the 2018 koa-ilp / superagent-ilp clients)::

    ILP_RECEIVER_PAY_METHOD=psk2 ILP_RECEIVER_UPLINK=... python examples/starlette_paid_api.py
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ilp_receiver.codec.pay_header import parse_pay_token
from ilp_receiver.errors import DecodeError
from ilp_receiver.paywall import per_byte, token_account
from ilp_receiver_starlette import IlpReceiverMiddleware, get_receiver, paid_route

FORTUNES = [
    "A paid request is a happy request.",
    "Your balance will decrease by exactly ten units.",
    "Interledger: money as easy as packets.",
]


#: One unit per byte of the request body actually read (a chunked body too), at least
#: one; bodies above 64 KiB are refused with 413 before anything is charged.
shout_price = per_byte(1, max_bytes=64 * 1024)


async def index(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "endpoints": {"GET /fortune": 10, "POST /shout": "1 per byte", "/premium/*": 25},
            "payment_pointer": str(request.base_url) + ".well-known/pay",
        }
    )


async def fortune(request: Request) -> JSONResponse:
    return JSONResponse({"fortune": random.choice(FORTUNES)})


async def shout(request: Request) -> JSONResponse:
    return JSONResponse({"shout": (await request.body()).decode().upper()})


async def premium(request: Request) -> JSONResponse:
    return JSONResponse({"premium": request.path_params["item"]})


async def balance(request: Request) -> JSONResponse:
    try:
        token = parse_pay_token(request.headers.get("Pay-Token", ""))
    except DecodeError as exc:
        return JSONResponse({"error": exc.reason}, status_code=400)
    value = await get_receiver(request).balance(token_account(token))
    return JSONResponse({"balance": value})


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
) -> Starlette:
    """The app (settings: :func:`example_settings`)."""
    routes = [
        Route("/", index),
        paid_route("/fortune", fortune, price=10),
        paid_route("/shout", shout, price=shout_price, methods=["POST"]),
        Route("/premium/{item}", premium),
        Route("/balance", balance),
    ]
    ilp = Middleware(
        IlpReceiverMiddleware,
        paid={"/premium/*": 25},
        **example_settings(uplink, store, secret, pay_method),
    )
    return Starlette(routes=routes, middleware=[ilp])


if __name__ == "__main__":
    import uvicorn

    target = sys.argv[1] if len(sys.argv) > 1 else None
    if not target and not os.environ.get("ILP_RECEIVER_UPLINK"):
        sys.exit("usage: starlette_paid_api.py <uplink URL>  (or set ILP_RECEIVER_UPLINK)")
    uvicorn.run(create_app(target), port=int(os.environ.get("PORT", "8000")))
