"""``ilp-receiver pay POINTER AMOUNT --uplink URL``: pay a payment pointer (STREAM or PSK2).

Connects to a connector (``--uplink``, any URL :func:`~ilp_receiver.links.open_link`
accepts), queries the pointer's SPSP endpoint and sends ``AMOUNT`` source units.

* ``--protocol auto`` (default) pays over **STREAM** when the receiver answers SPSP v4
  (``application/spsp4+json``), else over PSK2; ``stream`` / ``psk2`` force one.
* STREAM: one connection, as many packets as the path's maximum packet amount needs
  (``--max-packet-amount N`` caps them further, ``--slippage`` sets the allowed rate
  slippage, default 0.01).
* PSK2: one packet by default (draft 1, or ``--psk2 draft2``), a draft-1 chunked
  payment with ``--chunked [--chunk-size N]``.
* ``--quote``: only ask how much ``AMOUNT`` would deliver (STREAM: the rate probe).
* A progress bar (percent, rate, ETA) on stderr for multi-packet payments when stderr
  is a terminal (``--progress`` / ``--no-progress`` to force it on or off).

Prints one JSON line on stdout, the same keys in every mode (see :func:`report` and
``docs/client.md``): ``ok``, ``mode``, ``protocol``, ``destination``,
``source_amount``, ``delivered_amount``, ``packets_fulfilled``, ``packets_rejected``,
``pointer_balance`` and ``error``, plus protocol details.  A quote is not an error: its
``delivered_amount`` is what ``AMOUNT`` would deliver.

Exit status: 0 when paid (or quoted), 1 when the payment, the quote, connecting or the
SPSP query failed, 2 for usage or configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, TextIO

from ..client.results import ChunkProgress, PaymentError, PaymentResult, QuoteResult
from ..codec.oer import MAX_UINT64
from ..errors import ConfigError, IlpReceiverError, PaymentPointerError
from ..spsp import SpspResponse
from ._common import add_uplink_argument, describe_error
from .query import add_spsp_arguments

if TYPE_CHECKING:
    from ..client import AsyncPaymentClient

__all__ = ["HELP", "NAME", "ProgressBar", "add_arguments", "report", "run"]

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


def _duration(seconds: float) -> str:
    """``"<1s"``, ``"42s"``, ``"3m05s"``, ``"2h07m"``."""
    if seconds < 1:
        return "<1s"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class ProgressBar:
    """A one-line progress bar for chunked and STREAM payments, drawn on ``stream``.

    Drawn only when ``stream`` is a terminal (``enabled=None``, the default; ``True`` /
    ``False`` force it): it redraws its line (``\\r``) with the percentage, the amounts,
    the rate in units per second and the time left.  ``multi_only=True`` draws nothing
    for a payment that completes in its first packet.  STREAM progress counts
    "packets".  ``clock`` is a monotonic clock in seconds (tests).
    """

    def __init__(
        self,
        stream: TextIO = sys.stderr,
        width: int = 30,
        *,
        multi_only: bool = False,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.width = width
        self.multi_only = multi_only
        self.enabled = stream.isatty() if enabled is None else enabled
        self._clock = clock
        self._started = clock()
        self._drawn = False

    def line(self, progress: ChunkProgress) -> str:
        """The text of the bar for ``progress``."""
        fraction = progress.fraction
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        target = progress.source_target or progress.destination_target or 0
        unit = "packets" if progress.protocol == "stream" else "chunks"
        text = (
            f"[{bar}] {fraction * 100:5.1f}% sent {progress.source_sent}/{target} "
            f"delivered {progress.delivered} {unit} {progress.chunks_fulfilled}"
            f" (+{progress.chunks_rejected} rejected)"
        )
        elapsed = self._clock() - self._started
        done = progress.source_sent if progress.source_target else progress.delivered
        if elapsed <= 0 or done <= 0:
            return text
        rate = done / elapsed
        text += f" {rate:,.0f} units/s"
        if fraction < 1.0 and target:
            text += f" ETA {_duration(max(0, target - done) / rate)}"
        return text

    def __call__(self, progress: ChunkProgress) -> None:
        """Draw ``progress``."""
        if not self.enabled:
            return
        if (
            self.multi_only
            and not self._drawn
            and progress.fraction >= 1.0
            and progress.chunks_fulfilled + progress.chunks_rejected <= 1
        ):
            return  # done in one packet: no bar
        # pad to erase the end of a longer previous line
        self.stream.write("\r" + self.line(progress).ljust(100))
        self._drawn = True
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


Mode = Literal["pay", "chunked", "quote"]


def report(
    mode: Mode,
    outcome: PaymentResult | QuoteResult | None = None,
    *,
    error: BaseException | None = None,
    pointer_balance: int | None = None,
) -> dict[str, Any]:
    """The JSON line ``pay`` prints: the same keys for every mode and outcome.

    ``ok``, ``mode`` (``pay`` / ``chunked`` / ``quote``), ``protocol`` (``stream`` /
    ``psk2``, None before the SPSP answer), ``destination``, ``source_amount`` and
    ``delivered_amount`` (decimal strings: what fulfilled packets carried and what the
    receiver says arrived; for a quote, the amount quoted and what it would deliver),
    ``packets_fulfilled`` / ``packets_rejected``, ``pointer_balance`` (the receiver's
    ``balance.current`` from SPSP, after the payment; None when its SPSP answer has
    none) and ``error`` (None, or ``message`` plus the ILP ``code``, ``ilp_message``,
    ``triggered_by`` and ``arrived`` of the Reject that ended it).  Details of the
    protocol follow: ``psk2`` (draft), ``payment_id``, ``payment_total`` (PSK2 draft 1:
    the receiver's running total for this payment id, not the pointer's balance),
    ``exchange_rate``, ``prepares_sent``, ``receipt``, ``data_received``.
    """
    out: dict[str, Any] = {
        "ok": error is None,
        "mode": mode,
        "protocol": None,
        "destination": None,
        "source_amount": "0",
        "delivered_amount": "0",
        "packets_fulfilled": 0,
        "packets_rejected": 0,
        "pointer_balance": None if pointer_balance is None else str(pointer_balance),
        "error": None,
    }
    if isinstance(error, PaymentError):
        outcome = outcome or error.result
    if isinstance(outcome, QuoteResult):
        details = outcome.to_json()
        out.update(
            protocol=outcome.protocol,
            destination=outcome.destination,
            source_amount=str(outcome.source_amount),
            delivered_amount=str(outcome.destination_amount),
        )
        if outcome.source_amount:
            out["exchange_rate"] = str(outcome.rate)
        if "psk2" in details:
            out["psk2"] = details["psk2"]
    elif isinstance(outcome, PaymentResult):
        details = outcome.to_json()
        out.update(
            protocol=outcome.protocol,
            destination=outcome.destination,
            source_amount=str(outcome.source_amount),
            delivered_amount=str(outcome.delivered_amount),
            packets_fulfilled=outcome.chunks_fulfilled,
            packets_rejected=outcome.chunks_rejected,
        )
        for key in ("psk2", "payment_id", "exchange_rate", "prepares_sent", "receipt"):
            if key in details:
                out[key] = details[key]
        if "data_received" in details:
            out["data_received"] = details["data_received"]
        if outcome.receiver_total is not None:
            out["payment_total"] = str(outcome.receiver_total)
    if error is not None:
        problem: dict[str, Any] = {"message": describe_error(error), "code": None}
        if isinstance(error, PaymentError):
            problem["code"] = error.code or None
            if error.ilp_message:
                problem["ilp_message"] = error.ilp_message
            if error.triggered_by:
                problem["triggered_by"] = error.triggered_by
            if error.arrived is not None:
                problem["arrived"] = str(error.arrived)
        out["error"] = problem
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver pay``."""
    parser.add_argument(
        "pointer", help="payment pointer ($example.com/bob, $127.0.0.1:8080) or SPSP URL"
    )
    parser.add_argument("amount", type=_amount, help="source amount, in the uplink's base units")
    add_uplink_argument(parser)
    parser.add_argument(
        "--chunked",
        action="store_true",
        help="PSK2: send a draft-1 chunked payment (STREAM always splits as needed)",
    )
    parser.add_argument("--chunk-size", type=_amount, default=1000, help="PSK2: largest chunk")
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
        help="STREAM: exchange-rate slippage each packet tolerates (default: 0.01 = 1 %%)",
    )
    parser.add_argument(
        "--min-destination-amount",
        type=_min_amount,
        default=0,
        help="the least that must arrive (PSK2 single payment: in that packet; STREAM: "
        "checked against the probed rate before paying)",
    )
    parser.add_argument(
        "--psk2",
        choices=("draft1", "draft2"),
        default="draft1",
        help="PSK2 format of a single payment or quote",
    )
    parser.add_argument(
        "--quote", action="store_true", help="only quote: how much AMOUNT would deliver"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar (rate, ETA) on stderr for multi-packet payments "
        "(default: only when stderr is a terminal)",
    )
    parser.add_argument(
        "--max-packets", type=_amount, default=100_000, help="STREAM: give up after this many"
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds to connect the uplink"
    )
    add_spsp_arguments(parser)


def _print(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


async def _pointer_balance(
    client: AsyncPaymentClient, pointer: str, first: SpspResponse, paid: bool
) -> int | None:
    """The pointer's ``balance.current``: asked again after a payment (the first
    answer is from before it), None when the receiver states no balance."""
    if first.balance is None:
        return None
    if not paid:
        return first.balance.current
    try:
        again = await client.query(pointer, use_cache=False, protocol=first.protocol)
    except IlpReceiverError:
        return None
    return None if again.balance is None else again.balance.current


async def _pay(args: argparse.Namespace) -> int:
    from ..client import AsyncPaymentClient, Psk2Destination, StreamDestination

    mode: Mode = "quote" if args.quote else "chunked" if args.chunked else "pay"
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
        print(f"ilp-receiver pay: {describe_error(exc)}", file=sys.stderr)
        return 2
    bar: ProgressBar | None = None
    try:
        try:
            await asyncio.wait_for(client.start(), args.connect_timeout)
        except (IlpReceiverError, TimeoutError, OSError) as exc:
            reason = describe_error(exc) or "timeout"
            error = IlpReceiverError(f"cannot connect the uplink: {reason}")
            _print(report(mode, error=error))
            return 1
        spsp = await client.query(args.pointer, use_cache=False)
        if args.quote:
            quote = await client.quote(spsp, args.amount)
            balance = await _pointer_balance(client, args.pointer, spsp, paid=False)
            _print(report(mode, quote, pointer_balance=balance))
            return 0
        setup = await client.setup(spsp)
        if isinstance(setup, Psk2Destination) and args.chunked:
            bar = ProgressBar(sys.stderr, enabled=args.progress)
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
                ProgressBar(sys.stderr, multi_only=True, enabled=args.progress) if stream else None
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
        balance = await _pointer_balance(client, args.pointer, spsp, paid=True)
        _print(report(mode, result, pointer_balance=balance))
        return 0
    except PaymentError as exc:
        if bar is not None:
            bar.close()
        _print(report(mode, error=exc))
        return 1
    except ConfigError as exc:
        print(f"ilp-receiver pay: {describe_error(exc)}", file=sys.stderr)
        return 2
    except IlpReceiverError as exc:
        if bar is not None:
            bar.close()
        _print(report(mode, error=exc))
        return 1
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    """Pay and print the result line; returns the exit status."""
    return asyncio.run(_pay(args))
