"""A paid JSON API on Flask: HTTP-ILP (``Pay`` / ``Pay-Token`` / ``Pay-Balance``).

Run it against a connector (any BTP/2.0 or ILP-over-HTTP uplink)::

    ILP_RECEIVER_UPLINK=btp+ws://shop:secret@localhost:7768 python examples/flask_paid_api.py
    python examples/flask_paid_api.py btp+ws://shop:secret@localhost:7768

Then ``GET /fortune`` answers ``402 Payment Required`` with a ``Pay`` header until the
``Pay-Token`` you send has been paid for; an HTTP-ILP client (``ilp_receiver.client.
HttpIlpClient``) pays and retries by itself.  ``/.well-known/pay`` is the site's payment
pointer.  Balances are kept in ``ILP_RECEIVER_STORE`` (default ``paid-api.db``), so
several worker processes can share them (``gunicorn -w 4 'flask_paid_api:create_app()'``;
every worker reads the same secret from ``ILP_RECEIVER_SECRET_FILE``, default
``paid-api.secret``, created on first start).  ``POST /shout`` costs one unit per byte
read.

``ILP_RECEIVER_PAY_METHOD`` picks how the API is paid: ``stream`` (this example's
default: ``Pay: interledger-stream <destination> <secret>``, for STREAM-era HTTP-ILP
clients such as ilp-protocol-stream 2.x ones) or ``psk2`` (``Pay: interledger-psk2 ...``,
for the 2018 koa-ilp / superagent-ilp clients)::

    ILP_RECEIVER_PAY_METHOD=psk2 ILP_RECEIVER_UPLINK=... python examples/flask_paid_api.py

Over STREAM with several gunicorn workers, a client's repeated request must reach the
worker that answered its 402 to wait for the money (``docs/paid-api.md``); otherwise it
gets ``402`` with the money so far in ``Pay-Balance`` and succeeds on its next try.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from ilp_receiver.codec.pay_header import parse_pay_token
from ilp_receiver.errors import DecodeError
from ilp_receiver.paywall import per_byte, token_account
from ilp_receiver_flask import IlpReceiver, paid

FORTUNES = [
    "A paid request is a happy request.",
    "Your balance will decrease by exactly ten units.",
    "Interledger: money as easy as packets.",
]


#: One unit per byte of the request body actually read (a chunked body too), at least
#: one; bodies above 64 KiB are refused with 413 before anything is charged.
shout_price = per_byte(1, max_bytes=64 * 1024)


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
    uplink: object | None = None,
    *,
    store: str | None = None,
    secret: str | None = None,
    pay_method: str | None = None,
) -> Flask:
    """The app (settings: :func:`example_settings`)."""
    app = Flask(__name__)
    ilp = IlpReceiver(app, **example_settings(uplink, store, secret, pay_method))

    @app.get("/")
    def index() -> ResponseReturnValue:
        return jsonify(
            endpoints={"GET /fortune": 10, "POST /shout": "1 per byte"},
            payment_pointer=request.host_url + ".well-known/pay",
        )

    @app.get("/fortune")
    @paid(10)
    def fortune() -> ResponseReturnValue:
        return jsonify(fortune=random.choice(FORTUNES))

    @app.post("/shout")
    @paid(shout_price)
    def shout() -> ResponseReturnValue:
        return jsonify(shout=request.get_data(as_text=True).upper())

    @app.get("/balance")
    def balance() -> ResponseReturnValue:
        try:
            token = parse_pay_token(request.headers.get("Pay-Token", ""))
        except DecodeError as exc:
            return jsonify(error=exc.reason), 400
        return jsonify(balance=ilp.balance(token_account(token)))

    return app


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else None
    if not target and not os.environ.get("ILP_RECEIVER_UPLINK"):
        sys.exit("usage: flask_paid_api.py <uplink URL>  (or set ILP_RECEIVER_UPLINK)")
    create_app(target).run(port=int(os.environ.get("PORT", "5000")), threaded=True)
