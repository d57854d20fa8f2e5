"""``ilp-receiver pay POINTER AMOUNT --uplink URL``: pay a payment pointer (STREAM or PSK2).

Connects to a connector (``--uplink``, any URL :func:`~ilp_receiver.links.open_link`
accepts), queries the pointer's SPSP endpoint and sends ``AMOUNT`` source units.

* ``--protocol auto`` (default) pays over **STREAM** when the receiver answers SPSP v4
  (``application/spsp4+json``), else over PSK2; ``stream`` / ``psk2`` force one.
* STREAM: one connection, as many packets as the path's maximum packet amount needs
  (``--max-packet-amount N`` caps them further, ``--slippage`` sets the allowed rate
  slippage, default 0.01); a progress bar on stderr for multi-packet payments.
* PSK2: one packet by default (draft 1, or ``--psk2 draft2``), a draft-1 chunked
  payment with ``--chunked [--chunk-size N]`` (progress bar on stderr).
* ``--quote``: only ask how much ``AMOUNT`` would deliver (STREAM: the rate probe).

Prints one JSON result line on stdout (``"ok": true|false``, ``"protocol"``, the
delivered amount and the packet/chunk counts).

Exit status: 0 when paid, 1 when the payment (or connecting, or the SPSP query)
failed, 2 for usage or configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from fractions import Fraction
from typing import TextIO

from ..client.results import ChunkProgress
from ..codec.oer import MAX_UINT64
from ..errors import ConfigError, IlpReceiverError, PaymentPointerError
from .query import add_spsp_arguments

__all__ = ["HELP", "NAME", "ProgressBar", "add_arguments", "run"]

NAME = "pay"
HELP = "pay a payment pointer over an uplink (STREAM when offered, else PSK2)"


def _amount(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer amount: {text!r}") from None
    if not 1 <= value <= MAX_UINT64:
        raise argparse.ArgumentTypeError(f"amount must be in 1..{MAX_UINT64}")
    return value


def _min_amount(text: str) -> int:
    if text == "0":
        return 0
    return _amount(text)


def _slippage(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("slippage must be in [0, 1), e.g. 0.01 for 1 %")
    return value


class ProgressBar:
    """A plain-text progress bar for chunked and STREAM payments, drawn on ``stream``.

    On a terminal it redraws one line (``\\r``); otherwise it prints a line at most
    every 10 % so logs stay readable.  ``multi_only=True`` draws nothing for a payment
    that completes in its first packet.  STREAM progress counts "packets".
    """

    def __init__(
        self, stream: TextIO = sys.stderr, width: int = 30, *, multi_only: bool = False
    ) -> None:
        self.stream = stream
        self.width = width
        self.multi_only = multi_only
        self._tty = stream.isatty()
        self._last_decile = -1
        self._drawn = False
        self._started = time.monotonic()

    def line(self, progress: ChunkProgress) -> str:
        """The text of the bar for ``progress``."""
        fraction = progress.fraction
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        target = progress.source_target or progress.destination_target or 0
        unit = "packets" if progress.protocol == "stream" else "chunks"
        return (
            f"[{bar}] {fraction * 100:5.1f}% sent {progress.source_sent}/{target} "
            f"delivered {progress.delivered} {unit} {progress.chunks_fulfilled}"
            f" (+{progress.chunks_rejected} rejected)"
        )

    def __call__(self, progress: ChunkProgress) -> None:
        """Draw ``progress``."""
        if (
            self.multi_only
            and self._last_decile < 0
            and progress.fraction >= 1.0
            and progress.chunks_fulfilled + progress.chunks_rejected <= 1
        ):
            return  # done in one packet: no bar
        text = self.line(progress)
        if self._tty:
            self.stream.write("\r" + text)
            self._drawn = True
        else:
            decile = int(progress.fraction * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver pay``."""
    parser.add_argument("pointer", help="payment pointer ($example.com/bob) or SPSP URL")
    parser.add_argument("amount", type=_amount, help="source amount, in the uplink's base units")
    parser.add_argument(
        "--uplink",
        required=True,
        help="connector URL: btp+ws://[name]:token@host:port, http+oer://..., ...",
    )
    parser.add_argument(
        "--chunked",
        action="store_true",
        help="PSK2: send a draft-1 chunked payment (STREAM always splits as needed)",
    )
    parser.add_argument(
        "--chunk-size", type=_amount, default=1000, help="PSK2: largest chunk (default 1000)"
    )
    parser.add_argument(
        "--max-packet-amount",
        type=_amount,
        default=None,
        help="STREAM: largest packet we send (default: what the path allows)",
    )
    parser.add_argument(
        "--slippage",
        type=_slippage,
        default=Fraction(1, 100),
        help="STREAM: exchange-rate slippage each packet tolerates (default 0.01 = 1 %%)",
    )
    parser.add_argument(
        "--min-destination-amount",
        type=_min_amount,
        default=0,
        help="the least that must arrive (PSK2 single payment: in that packet; STREAM: "
        "checked against the probed rate before paying) (default 0)",
    )
    parser.add_argument(
        "--psk2",
        choices=("draft1", "draft2"),
        default="draft1",
        help="PSK2 format of a single payment or quote (default draft1)",
    )
    parser.add_argument(
        "--quote", action="store_true", help="only quote: how much AMOUNT would deliver"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-packets",
        type=_amount,
        default=100_000,
        help="STREAM: give up after this many packets (default 100000)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds to connect the uplink"
    )
    add_spsp_arguments(parser)


def _print(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


async def _pay(args: argparse.Namespace) -> int:
    from ..client import AsyncPaymentClient, PaymentError, Psk2Destination, StreamDestination

    if args.quote and args.chunked:
        print("ilp-receiver pay: --quote and --chunked exclude each other", file=sys.stderr)
        return 2
    try:
        client = AsyncPaymentClient(
            args.uplink,
            lenient=args.lenient,
            allow_http_for_loopback=args.http_loopback,
            draft=args.psk2,
            http_timeout=args.http_timeout,
            protocol=args.protocol,
        )
        client.resolve(args.pointer)
    except (ConfigError, PaymentPointerError) as exc:
        print(f"ilp-receiver pay: {exc}", file=sys.stderr)
        return 2
    bar: ProgressBar | None = None
    try:
        try:
            await asyncio.wait_for(client.start(), args.connect_timeout)
        except (IlpReceiverError, TimeoutError, OSError) as exc:
            _print({"ok": False, "error": f"cannot connect the uplink: {exc or 'timeout'}"})
            return 1
        if args.quote:
            quote = await client.quote(args.pointer, args.amount)
            _print({"ok": True, **quote.to_json()})
            return 0
        setup = await client.setup(args.pointer)
        if isinstance(setup, Psk2Destination) and args.chunked:
            bar = None if args.no_progress else ProgressBar(sys.stderr)
            result = await client.pay_chunked(
                setup,
                source_amount=args.amount,
                chunk_size=args.chunk_size,
                progress=bar,
            )
        else:
            # STREAM splits the payment itself: a bar once it takes more than one packet
            stream = isinstance(setup, StreamDestination)
            bar = (
                None if args.no_progress or not stream else ProgressBar(sys.stderr, multi_only=True)
            )
            result = await client.pay(
                setup,
                args.amount,
                min_destination_amount=args.min_destination_amount,
                progress=bar,
                slippage=args.slippage,
                max_packet_amount=args.max_packet_amount,
                max_packets=args.max_packets,
            )
        if bar is not None:
            bar.close()
        _print({"ok": True, **result.to_json()})
        return 0
    except PaymentError as exc:
        if bar is not None:
            bar.close()
        _print({"ok": False, **exc.to_json()})
        return 1
    except ConfigError as exc:
        print(f"ilp-receiver pay: {exc}", file=sys.stderr)
        return 2
    except IlpReceiverError as exc:
        if bar is not None:
            bar.close()
        _print({"ok": False, "error": str(exc)})
        return 1
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    """Pay and print the result line; returns the exit status."""
    return asyncio.run(_pay(args))
