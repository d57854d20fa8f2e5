"""A monetized blog on Flask: Web Monetization pays for the articles while you read.

Run it (Flask's dev server on http://127.0.0.1:5000)::

    python examples/flask_monetized_blog.py                                # demo connector
    python examples/flask_monetized_blog.py btp+ws://blog:secret@localhost:7768

Without an uplink the bundled connector runs in-process (accounts ``blog`` for the site
and ``reader`` for a paying script).  Every page carries the era-C meta tag
(``monetization_meta()``) and the client script (``monetization_script()``): a browser
with ``window.monetize`` (era A) queries ``/__monetizer/<visitor id>`` and pays that
visitor's bucket with PSK2; one with ``WebMonetization.monetize`` (era B) gets the same
bucket's STREAM details there; one with ``document.monetization`` (era C) pays the meta
tag's ``/__monetizer`` over STREAM under its ``Web-Monetization-Id``.  The article page
then fetches its body (``window.monetizer.fetch``) from a route guarded by
``@monetized(PRICE, wait=15)``, which waits for the money and debits it.

``MONETIZATION_SECRET`` signs the visitor cookies: set the same value in every process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from flask import Flask, abort, render_template

from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.links.base import Link
from ilp_receiver.monetization import Monetizer
from ilp_receiver.paywall import combine_hooks, paywall_payment_hook
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.receiver import Receiver
from ilp_receiver_flask import (
    IlpReceiver,
    Monetization,
    current_visitor,
    get_monetization,
    monetized,
)

#: Price of one article body, in the uplink's base units.
PRICE = 100

ARTICLES: dict[str, dict[str, str]] = {
    "interledger": {
        "title": "Interledger in one page",
        "teaser": "Packets of money, routed like packets of data.",
        "body": (
            "Interledger moves money the way the Internet moves data: senders split a "
            "payment into small packets, connectors forward them, and the receiver "
            "fulfils each one to prove it arrived."
        ),
    },
    "monetization": {
        "title": "Paying by the minute",
        "teaser": "Web Monetization streams micropayments while a page is open.",
        "body": (
            "With Web Monetization the browser pays the site continuously while you "
            "read; the site credits a bucket for your visit and unlocks what you paid for."
        ),
    },
}


def create_app(
    uplink: str | Link,
    *,
    secret: bytes | str | None = None,
    store: str | None = None,
    monetization_secret: str | None = None,
    portal: BlockingPortal | None = None,
) -> Flask:
    """The blog; ``uplink`` is a BTP URL or a Link (the demo connector's local link)."""
    app = Flask(__name__, template_folder=str(Path(__file__).parent / "templates"))
    app.config["SECRET_KEY"] = (
        monetization_secret or os.environ.get("MONETIZATION_SECRET") or os.urandom(32).hex()
    )
    monetizer = Monetizer(secret=app.config["SECRET_KEY"], max_balance=100 * PRICE)
    receiver = Receiver(
        uplink,
        portal=portal,
        secret=secret,
        store=store,
        receiver_name="The Monetized Blog",
        on_payment=combine_hooks(paywall_payment_hook, monetizer.payment_hook),
    )
    IlpReceiver(app, receiver=receiver)
    Monetization(app, monetizer=monetizer)

    @monetizer.on_start
    def started(event: Any) -> None:
        app.logger.info("visitor %s started paying", event.visitor_id)

    @app.get("/")
    def index() -> str:
        return render_template("blog_index.html", articles=ARTICLES, price=PRICE)

    @app.get("/articles/<slug>")
    def article(slug: str) -> str:
        if slug not in ARTICLES:
            abort(404)
        return render_template("blog_article.html", slug=slug, article=ARTICLES[slug], price=PRICE)

    def body(slug: str) -> dict[str, Any]:
        if slug not in ARTICLES:
            abort(404)
        visitor = current_visitor()
        assert visitor is not None  # the guard let us in
        balance = get_monetization().balance(visitor)
        return {
            "title": ARTICLES[slug]["title"],
            "body": ARTICLES[slug]["body"],
            "price": PRICE,
            "balance": balance,
        }

    @app.get("/articles/<slug>/body")
    @monetized(PRICE)
    def article_body(slug: str) -> dict[str, Any]:
        return body(slug)

    @app.get("/articles/<slug>/body/wait")
    @monetized(PRICE, wait=15)
    def article_body_wait(slug: str) -> dict[str, Any]:
        return body(slug)

    @app.get("/balance")
    def balance() -> dict[str, Any]:
        visitor = current_visitor()
        amount = get_monetization().balance(visitor) if visitor is not None else 0
        return {"balance": amount}

    return app


async def start_connector(address: str = "test.blognet") -> Connector:
    """The bundled connector with local accounts ``blog`` (the site) and ``reader``."""
    accounts = {
        "blog": {"relation": "child", "transport": "local"},
        "reader": {"relation": "child", "transport": "local"},
    }
    config = config_from_mapping(
        {"connector": {"address": address, "store": "memory:"}, "accounts": accounts}, env={}
    )
    connector = Connector(config)
    await connector.start()
    return connector


def main(argv: list[str]) -> None:
    """Serve the blog on 127.0.0.1:5000 (demo connector unless an uplink is given)."""
    uplink: str | Link
    if len(argv) > 1 or os.environ.get("ILP_UPLINK"):
        uplink = argv[1] if len(argv) > 1 else os.environ["ILP_UPLINK"]
        portal = None
    else:
        portal = BlockingPortal("blog-demo")
        connector = portal.call(start_connector)
        uplink = connector.local_link("blog")
        print("demo connector at", connector.address, "(account 'reader' can pay)")
    app = create_app(uplink, portal=portal, store=os.environ.get("ILP_STORE"))
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)


if __name__ == "__main__":
    main(sys.argv)
