"""``ilp-receiver fetch URL --uplink URL``: an HTTP request that pays a 402 (HTTP-ILP).

Sends the request with a ``Pay-Token``; when the server answers ``402 Payment
Required`` with a ``Pay`` header it pays it over the uplink -- PSK2
(``interledger-psk2``) or STREAM (``interledger-stream``), whichever the server offers
(:class:`~ilp_receiver.client.AsyncHttpIlpClient`) -- and repeats the request once.
The response body goes to stdout as it came; with ``-i`` the status line and the
headers come first, as ``curl -i`` shows them, followed by one line the server did not
send::

    Ilp-Receiver-Payment: delivered=100; sent=100; protocol=psk2; destination=test.demo...

saying what this command paid (only when it paid).  A one-line summary of a payment
also goes to stderr.  ``--max-price N`` refuses a price above ``N`` (over STREAM it is
also the most sent for the request).  ``URL`` may be a payment pointer
(``$127.0.0.1:8080/api/fortune``), resolved as ``query`` and ``pay`` resolve it.

Exit status: 0 for a 2xx response, 1 for any other status or when connecting, the
request or the payment failed, 2 for usage or configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, IlpReceiverError, PaymentPointerError
from ._common import add_uplink_argument, describe_error
from .pay import _amount
from .query import add_pointer_arguments

if TYPE_CHECKING:
    from ..client.http_ilp import HttpIlpResponse

__all__ = ["HELP", "NAME", "PAYMENT_HEADER", "add_arguments", "run"]

NAME = "fetch"
HELP = "make an HTTP request, pay its 402 (HTTP-ILP over PSK2 or STREAM), print the body"

#: The line ``-i`` adds after the response headers when this command paid.
PAYMENT_HEADER = "Ilp-Receiver-Payment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver fetch``."""
    parser.add_argument(
        "url", help="http(s) URL of a paid API, or a payment pointer ($host:port/path)"
    )
    add_uplink_argument(parser)
    parser.add_argument(
        "--max-price",
        type=_amount,
        default=None,
        metavar="N",
        help="refuse to pay more than N units for the request; over STREAM also the most "
        "sent (default: whatever the server asks)",
    )
    parser.add_argument(
        "-X",
        "--request",
        metavar="METHOD",
        default=None,
        help="HTTP method (default: GET, or POST with --data)",
    )
    parser.add_argument(
        "-d",
        "--data",
        default=None,
        help="request body; @FILE reads it from FILE, @- from stdin (default: none)",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header; repeat for more (default: none)",
    )
    parser.add_argument(
        "-i",
        "--include",
        action="store_true",
        help="print the status line and the headers (and what was paid) before the body",
    )
    parser.add_argument(
        "--no-pay", action="store_true", help="do not pay: show the 402 as the server sent it"
    )
    parser.add_argument(
        "--psk2",
        choices=("draft1", "draft2"),
        default="draft1",
        help="PSK2: how the payment is bound to the Pay-Token",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds to connect the uplink"
    )
    add_pointer_arguments(parser)


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ConfigError("header", f"not 'NAME: VALUE': {line[:80]!r}")
        headers[name.strip()] = value.strip()
    return headers


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            raise ConfigError("data", f"cannot read {data[1:]!r}: {exc.strerror}") from None
    return data.encode("utf-8")


def _payment_line(response: HttpIlpResponse) -> str | None:
    payment = response.payment
    if payment is None:
        return None
    return (
        f"delivered={payment.delivered_amount}; sent={payment.source_amount}; "
        f"protocol={payment.protocol}; destination={payment.destination}"
    )


def _write(response: HttpIlpResponse, include: bool) -> None:
    out = sys.stdout.buffer
    if include:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {response.status} {reason}".rstrip()]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        paid = _payment_line(response)
        if paid is not None:
            lines.append(f"{PAYMENT_HEADER}: {paid}")
        out.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace"))
    out.write(response.body)
    out.flush()


async def _fetch(args: argparse.Namespace) -> int:
    import aiohttp

    from ..client import AsyncHttpIlpClient, AsyncPaymentClient, HttpIlpError, PaymentError

    def fail(message: str, status: int = 1) -> int:
        print(f"ilp-receiver fetch: {message}", file=sys.stderr)
        return status

    try:
        headers = _headers(args.header)
        data = _body(args.data)
        client = AsyncPaymentClient(
            args.uplink,
            lenient=args.lenient,
            allow_http_for_loopback=args.http_loopback,
            http_timeout=args.http_timeout,
        )
        url = client.resolve(args.url)
    except (ConfigError, PaymentPointerError) as exc:
        return fail(describe_error(exc), 2)
    method = (args.request or ("POST" if data is not None else "GET")).upper()
    try:
        try:
            await asyncio.wait_for(client.start(), args.connect_timeout)
        except (IlpReceiverError, TimeoutError, OSError) as exc:
            return fail(f"cannot connect the uplink: {describe_error(exc) or 'timeout'}")
        http = AsyncHttpIlpClient(client, draft=args.psk2, max_price=args.max_price)
        options: dict[str, Any] = {} if data is None else {"data": data}
        try:
            response = await http.request(
                method, url, headers=headers, pay=not args.no_pay, **options
            )
        except HttpIlpError as exc:
            _write(exc.response, args.include)
            return fail(f"not paid: {exc}")
        except PaymentError as exc:
            code = f" ({exc.code})" if exc.code else ""
            return fail(f"the payment failed{code}: {describe_error(exc)}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return fail(f"{method} {url} failed: {exc or type(exc).__name__}")
        _write(response, args.include)
        payment = response.payment
        if payment is not None:
            print(
                f"ilp-receiver fetch: paid {payment.delivered_amount} (sent "
                f"{payment.source_amount}) over {payment.protocol} to {payment.destination}",
                file=sys.stderr,
            )
        return 0 if response.ok else 1
    except IlpReceiverError as exc:
        return fail(describe_error(exc))
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    """Fetch, pay if asked to, print; returns the exit status."""
    return asyncio.run(_fetch(args))
