"""A shop checkout on Starlette: Web Payments (Payment Request API, ``interledger`` method).

Run it against a connector (needs ``uvicorn``)::

    ILP_UPLINK=btp+ws://shop:secret@localhost:7768 python examples/starlette_shop.py

Flow: ``POST /orders {"item": "mug"}`` creates an order with its own payment pointer
(``$shop.example/orders/<id>``, served as SPSP with ``balance.maximum`` = the total);
``GET /checkout/<id>`` is the page that calls ``new PaymentRequest([{supportedMethods:
'interledger', data: {payee}}], ...)``; the browser's payment handler pays the pointer
and the page posts the ``InterledgerResponse`` to ``POST /orders/<id>/confirm``, which
checks it against the shop's own records (never the fulfillment alone).
``GET /orders/<id>/status`` shows what arrived, including any over-payment (kept on the
order, reported as ``overpaid``).
"""

from __future__ import annotations

import html
import logging
import os
import sys
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from ilp_receiver.links.base import Link
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.webpayments import OrderBook, OrderEvent, payment_request_json
from ilp_receiver_starlette import IlpReceiverMiddleware, WebPaymentsMiddleware, get_receiver

log = logging.getLogger("shop")

#: Prices in the uplink's base units, and how the page shows them.
CATALOGUE: dict[str, dict[str, Any]] = {
    "mug": {"name": "Interledger mug", "price": 1000, "display": "10.00"},
    "sticker": {"name": "Payment pointer sticker", "price": 150, "display": "1.50"},
}
CURRENCY = "USD"

CHECKOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout</title></head>
<body>
<h1>Order {order_id}</h1>
<p>{name}: {display} {currency}. Pay to <code>{payee}</code>.</p>
<button id="pay">Pay with Interledger</button>
<p id="result"></p>
<script>
  const request = {request_json};
  document.getElementById("pay").addEventListener("click", async () => {{
    const result = document.getElementById("result");
    try {{
      const payment = new PaymentRequest(request.methodData, request.details);
      const response = await payment.show();
      const check = await fetch("/orders/{order_id}/confirm", {{
        method: "POST",
        headers: {{"Content-Type": "application/json"}},
        body: JSON.stringify(response.details),
      }}).then((r) => r.json());
      await response.complete(check.confirmed ? "success" : "fail");
      result.textContent = check.confirmed ? "Paid, thank you!" : check.problems.join("; ");
    }} catch (error) {{
      result.textContent = "Payment failed: " + error.message;
    }}
  }});
</script>
</body></html>
"""


def pointer_for(request: Request, order_id: str) -> str:
    """The order's payment pointer (or its SPSP URL when the host has a port)."""
    host = request.url.netloc
    path = f"/orders/{order_id}"
    if ":" in host or request.url.scheme != "https":
        return f"{request.url.scheme}://{host}{path}"
    return f"${host}{path}"


def create_app(
    uplink: str | Link | None = None,
    *,
    secret: bytes | str | None = None,
    store: str | None = None,
    receiver: AsyncReceiver | None = None,
) -> Starlette:
    """The shop; ``uplink`` defaults to ``$ILP_UPLINK``, ``store`` to ``$ILP_STORE``."""
    orders = OrderBook(receiver_name="Example shop")
    paid: list[str] = []
    overpaid: dict[str, int] = {}

    @orders.on_paid
    def mark_paid(event: OrderEvent) -> None:
        paid.append(event.status.order_id)
        log.info("order %s paid", event.status.order_id)

    @orders.on_overpaid
    def note_overpaid(event: OrderEvent) -> None:
        order_id = event.status.order_id
        overpaid[order_id] = overpaid.get(order_id, 0) + event.overpaid_by
        log.warning("order %s overpaid by %d (kept)", order_id, event.overpaid_by)

    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"catalogue": CATALOGUE, "currency": CURRENCY})

    async def create_order(request: Request) -> JSONResponse:
        data = await request.json()
        item = CATALOGUE.get(str(data.get("item")))
        if item is None:
            return JSONResponse({"error": "unknown item"}, status_code=400)
        order_id = uuid.uuid4().hex
        status = await orders.create_order(order_id, item["price"])
        payee = pointer_for(request, order_id)
        return JSONResponse(
            {
                "order_id": order_id,
                "payee": payee,
                "checkout": f"/checkout/{order_id}",
                "status": status.to_json(),
            },
            status_code=201,
        )

    async def checkout(request: Request) -> HTMLResponse:
        order_id = request.path_params["order_id"]
        status = await orders.status(order_id)
        if status is None:
            return HTMLResponse("no such order", status_code=404)
        item = next(i for i in CATALOGUE.values() if i["price"] == status.total)
        payee = pointer_for(request, order_id)
        request_json = payment_request_json(payee, value=item["display"], currency=CURRENCY)
        page = CHECKOUT_PAGE.format(
            order_id=html.escape(order_id),
            name=html.escape(item["name"]),
            display=html.escape(item["display"]),
            currency=CURRENCY,
            payee=html.escape(payee),
            request_json=request_json,
        )
        return HTMLResponse(page)

    async def order_status(request: Request) -> JSONResponse:
        status = await orders.status(request.path_params["order_id"])
        if status is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        return JSONResponse(status.to_json())

    async def confirm(request: Request) -> JSONResponse:
        check = await orders.verify(request.path_params["order_id"], await request.body())
        return JSONResponse(
            {
                "confirmed": check.confirmed,
                "problems": list(check.problems),
                "status": None if check.status is None else check.status.to_json(),
            },
            status_code=200 if check.status is not None else 404,
        )

    async def events(request: Request) -> JSONResponse:
        return JSONResponse({"paid": paid, "overpaid": overpaid})

    async def address(request: Request) -> JSONResponse:
        return JSONResponse({"address": get_receiver(request).address})

    routes = [
        Route("/", index),
        Route("/orders", create_order, methods=["POST"]),
        Route("/checkout/{order_id}", checkout),
        Route("/orders/{order_id}/status", order_status),
        Route("/orders/{order_id}/confirm", confirm, methods=["POST"]),
        Route("/events", events),
        Route("/address", address),
    ]
    if receiver is None:
        receiver_options: dict[str, Any] = {
            "uplink": uplink if uplink is not None else os.environ["ILP_UPLINK"],
            "secret": secret if secret is not None else os.environ.get("ILP_SECRET"),
            "store": store if store is not None else os.environ.get("ILP_STORE"),
        }
    else:
        receiver_options = {"receiver": receiver}
    middleware = [
        Middleware(IlpReceiverMiddleware, **receiver_options),
        Middleware(WebPaymentsMiddleware, orders=orders),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.orders = orders
    return app


def main(argv: list[str]) -> None:
    """Serve the shop on 127.0.0.1:8000 with uvicorn."""
    import uvicorn

    if len(argv) > 1:
        os.environ["ILP_UPLINK"] = argv[1]
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main(sys.argv)
