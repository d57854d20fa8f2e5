"""``ilp-receiver demo``: the whole Interledger path in one process, no service to install.

1. starts the bundled connector in-process (``test.demo``, asset XYZ at scale 9), with
   a BTP endpoint so that an outside sender can join as account ``visitor``: with the
   username and token it prints (the token is kept in ``--state-dir``), and limits
   (largest packet, most it may owe, packets per second);
2. starts an example web app on aiohttp: a payment pointer (``/.well-known/pay``) and a
   paid API route (``GET /api/fortune``, HTTP-ILP, priced in base units);
3. the built-in client pays the pointer over SPSP + PSK2, then calls the paid route: it
   gets ``402 Payment Required``, pays the price bound to its ``Pay-Token``, retries and
   gets ``200`` with ``Pay-Balance``;
4. prints each step with amounts and balances, then keeps serving until Ctrl-C, with
   commands to query, pay and fetch it from another shell, written the way this shell
   ran the demo (``.venv/bin/ilp-receiver ...`` when the virtualenv is not activated);
   every payment that arrives is logged on stderr (``--log-format json`` for JSON).
   ``--once`` exits after the walkthrough with status 0.

State lives in SQLite files in ``--state-dir`` (default ``./ilp-receiver-demo``), so a
second run continues from the balances of the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Final

from ..errors import IlpReceiverError
from ._common import (
    add_log_format_argument,
    add_payment_log_argument,
    cli_invocation,
    local_payment_pointer,
    log_payments,
)

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "demo"
HELP = "run a connector, a paid web app and a paying client in one process"

log = logging.getLogger("ilp_receiver.demo")

#: The demo connector's asset: amounts are integers of 10**-9 XYZ.
ASSET_CODE: Final = "XYZ"
ASSET_SCALE: Final = 9
#: The outside sender's account on the demo connector, and its limits.
VISITOR: Final = "visitor"
VISITOR_MAX_PACKET: Final = 10_000_000
VISITOR_MAX_BALANCE: Final = 1_000_000_000
VISITOR_RATE_LIMIT: Final = 100.0

FORTUNES = (
    "Money moves like packets now.",
    "A receiver that counts once is a receiver you can trust.",
    "Your next request is already paid for.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver demo``."""
    parser.add_argument("--once", action="store_true", help="exit after the walkthrough")
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=0, help="web app port (default: 0, a free one)")
    parser.add_argument(
        "--btp-port", type=int, default=0, help="connector BTP port (default: 0, a free one)"
    )
    parser.add_argument(
        "--state-dir",
        default="ilp-receiver-demo",
        help="where the SQLite files, the receiver secret and the visitor token are kept",
    )
    parser.add_argument(
        "--amount", type=int, default=5000, help="what the client pays first, in units"
    )
    parser.add_argument(
        "--price", type=int, default=100, help="price of GET /api/fortune, in units"
    )
    parser.add_argument(
        "--pay-method",
        choices=("stream", "psk2"),
        default="stream",
        help="how the paid API asks to be paid: 'Pay: interledger-stream' (every client "
        "since 2019) or 'interledger-psk2' (the 2018 clients) (default: stream)",
    )
    add_log_format_argument(parser)
    add_payment_log_argument(parser)


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


def _token(path: Path) -> str:
    """The visitor's BTP token, kept in ``path`` (created, mode 0600, on first use)."""
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token
        path.unlink()
    token = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    log.info("created the demo visitor's BTP token in %s", path.resolve())
    return token


def _units(amount: int) -> str:
    """``"100 units (0.0000001 XYZ)"``."""
    whole, frac = divmod(amount, 10**ASSET_SCALE)
    decimal = f"{whole}.{frac:0{ASSET_SCALE}d}".rstrip("0").rstrip(".")
    return f"{amount} units ({decimal} {ASSET_CODE})"


async def _demo(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ilp_receiver_aiohttp import paid, setup

    from ..client import (
        AsyncHttpIlpClient,
        AsyncPaymentClient,
        Psk2Destination,
        StreamDestination,
    )
    from ..codec.pay_header import STREAM_METHOD
    from ..connector import Connector, config_from_mapping
    from ..links.listener import DEFAULT_LIMITS, start_listener
    from ..paywall import token_account
    from ..receiver import DEFAULT_ACCOUNT, AsyncReceiver
    from .receive import wait_for_signal

    state = Path(args.state_dir)
    web_port = args.port or _free_port(args.host)
    btp_port = args.btp_port or _free_port(args.host)
    visitor_token = _token(state / "visitor.token")

    config = config_from_mapping(
        {
            "connector": {
                "address": "test.demo",
                "asset_code": ASSET_CODE,
                "asset_scale": ASSET_SCALE,
                "store": str(state / "connector.sqlite3"),
            },
            "server": {"host": args.host, "port": btp_port},
            "accounts": {
                "site": {"relation": "child", "transport": "local"},
                "wallet": {"relation": "child", "transport": "local"},
                # an outside sender: only with these credentials, and within limits
                VISITOR: {
                    "relation": "child",
                    "transport": "btp-server",
                    "username": VISITOR,
                    "token": visitor_token,
                    "max_packet_amount": VISITOR_MAX_PACKET,
                    "max_balance": VISITOR_MAX_BALANCE,
                    "rate_limit": VISITOR_RATE_LIMIT,
                },
            },
        }
    )
    async with Connector(config) as connector:
        _say(
            "1/5",
            f"connector started; amounts are units of {ASSET_CODE} at scale {ASSET_SCALE} "
            f"(1 {ASSET_CODE} = {10**ASSET_SCALE} units)",
            ilp_address=connector.address,
            btp_port=btp_port,
            asset_code=ASSET_CODE,
            asset_scale=ASSET_SCALE,
        )

        receiver = AsyncReceiver(
            connector.local_link("site"),
            secret=_secret(state / "site.secret"),
            store=str(state / "site.sqlite3"),
            receiver_name="ilp-receiver demo site",
        )
        payments = log_payments(receiver, args.payment_log_rate)

        @paid(args.price)
        async def fortune(request: web.Request) -> web.Response:
            return web.json_response({"fortune": random.choice(FORTUNES)})

        pointer = local_payment_pointer(args.host, web_port)
        site_url = f"http://{pointer[1:]}"  # what a client on this machine dials

        async def index(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "payment_pointer": pointer,
                    "spsp": f"{site_url}/.well-known/pay",
                    "paid_api": {"GET /api/fortune": args.price},
                    "asset_code": ASSET_CODE,
                    "asset_scale": ASSET_SCALE,
                }
            )

        app = web.Application()
        app.router.add_get("/", index)
        app.router.add_get("/api/fortune", fortune)
        setup(app, receiver, pay_method=args.pay_method)
        runner = web.AppRunner(app, access_log=None, **DEFAULT_LIMITS.runner_options())
        await runner.setup()
        await start_listener(runner, args.host, web_port)
        try:
            _say(
                "2/5",
                "web app serving a payment pointer and a paid API",
                ilp_address=receiver.address,
                payment_pointer=pointer,
                spsp=f"{site_url}/.well-known/pay",
                paid_route=f"{site_url}/api/fortune",
                price=args.price,
            )
            payer = await AsyncPaymentClient.connect(connector.local_link("wallet"))
            try:
                before = await receiver.balance(DEFAULT_ACCOUNT)
                spsp = await payer.query(f"{site_url}/.well-known/pay", use_cache=False)
                result = await payer.pay(spsp, args.amount)
                after = await receiver.balance(DEFAULT_ACCOUNT)
                _say(
                    "3/5",
                    f"the client paid the payment pointer (SPSP + {result.protocol.upper()})",
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
                pay = response.pay
                assert pay is not None
                if pay.method == STREAM_METHOD:
                    # a STREAM Pay destination takes at most the price per stream (its
                    # receive limit): three payments of one price each
                    stream_target = StreamDestination(pay.destination, pay.shared_secret)
                    for _ in range(3):
                        await payer.pay(stream_target, args.price)
                else:
                    target = Psk2Destination(pay.destination, pay.shared_secret)
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
            print(_serving(args, pointer, site_url, btp_port, visitor_token), flush=True)
            await wait_for_signal()
            return 0
        finally:
            await runner.cleanup()
            payments.flush()  # the sums of the last second


def _serving(
    args: argparse.Namespace, pointer: str, site_url: str, btp_port: int, token: str
) -> str:
    """What the demo prints while it keeps serving: its URLs and three commands that
    run as printed from the shell (and directory) the demo was started in."""
    host = pointer[1:].rsplit(":", 1)[0]
    uplink = f"btp+ws://{VISITOR}:{token}@{host}:{btp_port}/"
    cli = cli_invocation()
    q = shlex.quote
    return (
        f"\nServing until Ctrl-C. Amounts are integer units of {ASSET_CODE} at scale "
        f"{ASSET_SCALE}: 1 {ASSET_CODE} = {10**ASSET_SCALE} units.\n"
        f"  web app          {site_url}/\n"
        f"  payment pointer  {pointer}  ({site_url}/.well-known/pay)\n"
        f"  paid API         {site_url}/api/fortune  ({_units(args.price)} a call)\n"
        f"  connector (BTP)  {uplink}\n"
        f"                   account {VISITOR!r}: packets up to {_units(VISITOR_MAX_PACKET)}, "
        f"owes at most {_units(VISITOR_MAX_BALANCE)}, {VISITOR_RATE_LIMIT:g} packets/s\n"
        "Try it from another shell, in this directory (payments show up in this log):\n"
        f"  query it:  {cli} query {q(pointer)}\n"
        f"  pay it:    {cli} pay {q(pointer)} 1000 --uplink {q(uplink)}\n"
        f"  fetch it:  {cli} fetch {q(site_url + '/api/fortune')} --max-price {args.price} "
        f"--uplink {q(uplink)}"
    )


def run(args: argparse.Namespace) -> int:
    """Run the walkthrough (and keep serving unless ``--once``)."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        state = Path(args.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        log.info("demo state (balances, receiver secret, visitor token): %s", state.resolve())
        return asyncio.run(_demo(args))
    except IlpReceiverError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
