"""``ilp-receiver query POINTER``: show a receiver's SPSP response as JSON.

Resolves the payment pointer (or takes an SPSP URL), sends the SPSP query and prints
the response as one JSON object on stdout, with ``"protocol": "stream"|"psk2"`` added
(from the response ``Content-Type``, ``12-stream.md`` §14).  ``--protocol auto``
(default) sends ``Accept: application/spsp4+json, application/spsp+json``, ``stream``
only the first, ``psk2`` only ``application/spsp+json`` (spec
``07-spsp-payment-pointers.md``).  The shared secret is replaced by ``"<redacted>"``
unless ``--show-secret`` is given.  Exit status: 0 on success, 1 when the query fails,
2 for an invalid pointer or option.

Pointers: ``$127.0.0.1:PORT`` / ``$localhost:PORT`` (what ``demo`` and ``receive``
print) resolve to ``http://`` without flags; ``--lenient`` accepts a port or query on
any host, ``--http-loopback`` / ``--no-http-loopback`` force the scheme of loopback
pointers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ..errors import ConfigError, IlpReceiverError, PaymentPointerError, SpspError
from ._common import describe_error

__all__ = [
    "HELP",
    "NAME",
    "REDACTED",
    "add_arguments",
    "add_pointer_arguments",
    "add_spsp_arguments",
    "run",
]

NAME = "query"
HELP = "query a payment pointer's SPSP endpoint and print the response as JSON"

#: What replaces the shared secret in the output unless ``--show-secret``.
REDACTED = "<redacted>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver query``."""
    parser.add_argument("pointer", help="payment pointer ($example.com/bob) or SPSP URL")
    parser.add_argument(
        "--show-secret", action="store_true", help="print the shared secret (keep it private)"
    )
    add_spsp_arguments(parser)


def add_spsp_arguments(parser: argparse.ArgumentParser) -> None:
    """The SPSP options shared by ``query`` and ``pay``: ``--protocol`` and
    :func:`add_pointer_arguments`."""
    parser.add_argument(
        "--protocol",
        choices=("auto", "stream", "psk2"),
        default="auto",
        help="auto (default): STREAM when the receiver offers it (SPSP v4), else PSK2; "
        "stream / psk2: only that one",
    )
    add_pointer_arguments(parser)


def add_pointer_arguments(parser: argparse.ArgumentParser) -> None:
    """The pointer-resolution options shared by ``query``, ``pay`` and ``fetch``."""
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="accept pointers with a port or query string on any host, as the JS client "
        "did (a port on a loopback host is always accepted)",
    )
    parser.add_argument(
        "--http-loopback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use http:// for every loopback pointer ($localhost/bob too); "
        "--no-http-loopback: https:// always (default: http:// for a loopback pointer "
        "with a port, $127.0.0.1:8080, as demo and receive print it)",
    )
    parser.add_argument(
        "--http-timeout", type=float, default=30.0, help="seconds for each HTTP request"
    )


async def _query(args: argparse.Namespace) -> int:
    from ..client import AsyncPaymentClient

    client = AsyncPaymentClient(
        lenient=args.lenient,
        allow_http_for_loopback=args.http_loopback,
        http_timeout=args.http_timeout,
        protocol=args.protocol,
    )
    try:
        try:
            url = client.resolve(args.pointer)
        except PaymentPointerError as exc:
            print(f"ilp-receiver query: {describe_error(exc)}", file=sys.stderr)
            return 2
        try:
            response = await client.query(url, use_cache=False)
        except SpspError as exc:
            print(f"ilp-receiver query: {describe_error(exc)}", file=sys.stderr)
            return 1
        out = {"protocol": response.protocol, **response.to_json()}
        if not args.show_secret:
            out["shared_secret"] = REDACTED
        print(json.dumps(out), flush=True)
        return 0
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    """Query and print; returns the exit status."""
    try:
        return asyncio.run(_query(args))
    except ConfigError:
        raise
    except IlpReceiverError as exc:
        print(f"ilp-receiver query: {describe_error(exc)}", file=sys.stderr)
        return 1
