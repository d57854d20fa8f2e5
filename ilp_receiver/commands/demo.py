"""``ilp-receiver demo``: the whole Interledger path in one process, no service to install.

1. starts the bundled connector in-process (``test.demo``), with a BTP endpoint so that
   outside senders can join;
2. starts an example web app on aiohttp: a payment pointer (``/.well-known/pay``) and a
   paid API route (``GET /api/fortune``, HTTP-ILP, priced in base units);
3. the built-in client pays the pointer over SPSP + PSK2, then calls the paid route: it
   gets ``402 Payment Required``, pays the price bound to its ``Pay-Token``, retries and
   gets ``200`` with ``Pay-Balance``;
4. prints each step with amounts and balances, then keeps serving with the URLs printed
   until Ctrl-C (``--once`` exits after the walkthrough with status 0).

State lives in SQLite files in ``--state-dir`` (default ``./ilp-receiver-demo``), so a
second run continues from the balances of the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import IlpReceiverError

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "demo"
HELP = "run a connector, a paid web app and a paying client in one process"

log = logging.getLogger("ilp_receiver.demo")

FORTUNES = (
    "Money moves like packets now.",
    "A receiver that counts once is a receiver you can trust.",
    "Your next request is already paid for.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver demo``."""
    parser.add_argument("--once", action="store_true", help="exit after the walkthrough")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="web app port (default: a free one)")
    parser.add_argument(
        "--btp-port", type=int, default=0, help="connector BTP port (default: a free one)"
    )
    parser.add_argument(
        "--state-dir", default="ilp-receiver-demo", help="where the SQLite files are kept"
    )
    parser.add_argument("--amount", type=int, default=5000, help="what the client pays first")
    parser.add_argument("--price", type=int, default=100, help="price of GET /api/fortune")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _say(step: str, text: str, **facts: Any) -> None:
    print(f"[{step}] {text}", flush=True)
    if facts:
        print("       " + json.dumps(facts, sort_keys=True), flush=True)


def _secret(path: Path) -> bytes:
    from .receive import load_or_create_secret

    return load_or_create_secret(path)


async def _demo(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ilp_receiver_aiohttp import paid, setup

    from ..client import AsyncHttpIlpClient, AsyncPaymentClient, Psk2Destination
    from ..connector import Connector, config_from_mapping
    from ..links.listener import DEFAULT_LIMITS, start_listener
    from ..paywall import token_account
    from ..receiver import DEFAULT_ACCOUNT, AsyncReceiver
    from .receive import wait_for_signal

    state = Path(args.state_dir)
    web_port = args.port or _free_port(args.host)
    btp_port = args.btp_port or _free_port(args.host)

    config = config_from_mapping(
        {
            "connector": {
                "address": "test.demo",
                "asset_code": "XYZ",
                "asset_scale": 9,
                "store": str(state / "connector.sqlite3"),
            },
            "server": {"host": args.host, "port": btp_port},
            "accounts": {
                "site": {"relation": "child", "transport": "local"},
                "wallet": {"relation": "child", "transport": "local"},
                "guests": {"relation": "child", "transport": "mini-accounts"},
            },
        }
    )
    async with Connector(config) as connector:
        _say("1/5", "connector started", ilp_address=connector.address, btp_port=btp_port)

        receiver = AsyncReceiver(
            connector.local_link("site"),
            secret=_secret(state / "site.secret"),
            store=str(state / "site.sqlite3"),
            receiver_name="ilp-receiver demo site",
        )

        @paid(args.price)
        async def fortune(request: web.Request) -> web.Response:
            return web.json_response({"fortune": random.choice(FORTUNES)})

        async def index(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "payment_pointer": f"$127.0.0.1:{web_port}",
                    "spsp": f"http://127.0.0.1:{web_port}/.well-known/pay",
                    "paid_api": {"GET /api/fortune": args.price},
                }
            )

        app = web.Application()
        app.router.add_get("/", index)
        app.router.add_get("/api/fortune", fortune)
        setup(app, receiver)
        runner = web.AppRunner(app, access_log=None, **DEFAULT_LIMITS.runner_options())
        await runner.setup()
        await start_listener(runner, args.host, web_port)
        site_url = f"http://{args.host}:{web_port}"
        try:
            _say(
                "2/5",
                "web app serving a payment pointer and a paid API",
                ilp_address=receiver.address,
                payment_pointer=f"$127.0.0.1:{web_port}",
                spsp=f"{site_url}/.well-known/pay",
                paid_route=f"{site_url}/api/fortune",
                price=args.price,
            )
            payer = await AsyncPaymentClient.connect(
                connector.local_link("wallet"), lenient=True, allow_http_for_loopback=True
            )
            try:
                before = await receiver.balance(DEFAULT_ACCOUNT)
                spsp = await payer.query(f"{site_url}/.well-known/pay", use_cache=False)
                result = await payer.pay(spsp, args.amount)
                after = await receiver.balance(DEFAULT_ACCOUNT)
                _say(
                    "3/5",
                    "the client paid the payment pointer (SPSP + PSK2)",
                    sent=result.source_amount,
                    delivered=result.delivered_amount,
                    pointer_balance_before=before,
                    pointer_balance_after=after,
                )
                if after - before != result.delivered_amount:
                    raise IlpReceiverError("the pointer's balance did not move by the payment")

                http = AsyncHttpIlpClient(payer, max_price=args.price * 10)
                response = await http.get(f"{site_url}/api/fortune")
                if response.status != 200 or response.payment is None:
                    raise IlpReceiverError(
                        f"paid route answered {response.status}: {response.body[:200]!r}"
                    )
                token = http.token_for(site_url)
                token_balance = await receiver.balance(token_account(token))
                _say(
                    "4/5",
                    "the client called the paid route: 402, paid, retried, 200",
                    paid=response.payment.delivered_amount,
                    price=args.price,
                    pay_balance=response.pay_balance,
                    token_balance_in_store=token_balance,
                    fortune=json.loads(response.body)["fortune"],
                )
                # top the token up with three calls' worth, through the Pay header
                assert response.pay is not None
                target = Psk2Destination(response.pay.destination, response.pay.shared_secret)
                await http.pay_token(target, token, 3 * args.price)
                again = await http.get(f"{site_url}/api/fortune")
                _say(
                    "5/5",
                    "after a top-up of 3 calls, the next call is served from the balance",
                    status=again.status,
                    paid_again=again.payment is not None,
                    pay_balance=again.pay_balance,
                )
                if again.status != 200 or again.payment is not None:
                    raise IlpReceiverError("the prepaid call was not served from the balance")
            finally:
                await payer.close()

            if args.once:
                print("demo complete", flush=True)
                return 0
            print(
                "\nServing until Ctrl-C:\n"
                f"  web app          {site_url}/\n"
                f"  payment pointer  $127.0.0.1:{web_port}  ({site_url}/.well-known/pay)\n"
                f"  paid API         {site_url}/api/fortune  ({args.price} units)\n"
                f"  connector (BTP)  btp+ws://NAME:TOKEN@{args.host}:{btp_port}/\n"
                f"  pay it:          ilp-receiver pay '{site_url}/.well-known/pay' 1000 "
                f"--uplink btp+ws://me:pass@{args.host}:{btp_port}/",
                flush=True,
            )
            await wait_for_signal()
            return 0
        finally:
            await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    """Run the walkthrough (and keep serving unless ``--once``)."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
        return asyncio.run(_demo(args))
    except IlpReceiverError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
