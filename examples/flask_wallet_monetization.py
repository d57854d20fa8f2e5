"""Web Monetization as browsers do it today, on Flask: the article unlocks once paid.

Run it (Flask's dev server on http://127.0.0.1:5000)::

    ILP_MONETIZATION_WALLET_ADDRESS=https://ilp.interledger-test.dev/your-site \\
    MONETIZATION_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))') \\
    python examples/flask_wallet_monetization.py

The page carries ``<link rel="monetization" href="<your wallet address>">`` (an Open
Payments wallet at GateHub, the Interledger test wallet or any Rafiki) and the client
script.  A visitor with the Web Monetization extension pays incoming payments at *your*
wallet; the script posts each ``monetization`` event's ``incomingPayment`` here; the
server reads that incoming payment at the wallet and credits the visitor's bucket by what
it received; the page then fetches the article body from a route guarded by
``@monetized(PRICE)``.  No connector is involved: the money goes wallet to wallet.

Configuration (Flask config or the environment): ``ILP_MONETIZATION_WALLET_ADDRESS``
(required), ``ILP_MONETIZATION_ASSET_CODE`` / ``_ASSET_SCALE`` (default: the wallet's),
``MONETIZATION_SECRET`` (signs the visitor cookie; the same in every process) and
``ILP_STORE`` (where buckets live; SQLite, Redis or PostgreSQL for several processes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from flask import Flask, render_template

from ilp_receiver.links.base import Link
from ilp_receiver.monetization import Monetizer
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.receiver import Receiver
from ilp_receiver.testing import InMemoryNetwork
from ilp_receiver_flask import (
    IlpReceiver,
    Monetization,
    current_visitor,
    get_monetization,
    monetized,
)

#: Price of the article body, in the wallet's asset at its scale (25 = 0.25 USD at scale 2).
PRICE = 25

ARTICLE = {
    "title": "Paid by the visit",
    "teaser": "Your browser's Web Monetization extension pays this site's wallet directly.",
    "body": (
        "The extension created an incoming payment at this site's wallet and had your "
        "wallet pay it; this server read what that incoming payment received and "
        "credited your visit."
    ),
}


def standalone_uplink(portal: BlockingPortal) -> Link:
    """An in-process stand-in uplink: this era's money never passes through ILP here.

    The receiver is what holds the balance store the buckets live in; it still wants an
    uplink, and an in-memory network child is one that needs no connector.
    """
    network = InMemoryNetwork("private.wallet-site")
    link: Link = portal.call(network.add_child, "site")
    return link


def create_app(
    *,
    wallet_address: str | None = None,
    store: str | None = None,
    monetization_secret: str | None = None,
    portal: BlockingPortal | None = None,
    local_wallet: bool = False,
) -> Flask:
    """The site; ``wallet_address`` defaults to ``ILP_MONETIZATION_WALLET_ADDRESS``.

    ``local_wallet`` lets the verifier reach a wallet on a private address over
    ``http://`` (tests and local development only).
    """
    app = Flask(__name__, template_folder=str(Path(__file__).parent / "templates"))
    app.config["SECRET_KEY"] = (
        monetization_secret or os.environ.get("MONETIZATION_SECRET") or os.urandom(32).hex()
    )
    app.config["ILP_MONETIZATION_WALLET_ADDRESS"] = wallet_address or os.environ.get(
        "ILP_MONETIZATION_WALLET_ADDRESS"
    )
    if not app.config["ILP_MONETIZATION_WALLET_ADDRESS"]:
        raise SystemExit("set ILP_MONETIZATION_WALLET_ADDRESS to your Open Payments wallet address")
    if local_wallet:
        app.config["ILP_MONETIZATION_ALLOW_PRIVATE"] = True
        app.config["ILP_MONETIZATION_ALLOW_INSECURE"] = True
    portal = portal or BlockingPortal("wallet-site")
    receiver = Receiver(standalone_uplink(portal), portal=portal, store=store)
    IlpReceiver(app, receiver=receiver)
    Monetization(app, monetizer=Monetizer(secret=app.config["SECRET_KEY"]))

    @app.get("/")
    def article() -> str:
        return render_template(
            "wallet_article.html",
            title=ARTICLE["title"],
            teaser=ARTICLE["teaser"],
            price=PRICE,
            unit="units of the wallet's asset",
        )

    @app.get("/article/body")
    @monetized(PRICE)
    def article_body() -> dict[str, Any]:
        visitor = current_visitor()
        assert visitor is not None  # the guard let us in
        return {
            "body": ARTICLE["body"],
            "price": PRICE,
            "balance": get_monetization().balance(visitor),
        }

    return app


def main(argv: list[str]) -> None:
    """Serve the site on 127.0.0.1:5000 (``PORT`` to change it)."""
    app = create_app(store=os.environ.get("ILP_STORE"))
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)


if __name__ == "__main__":
    main(sys.argv)
