"""What the subcommands share: the uplink option, help formatting, error messages that
name CLI flags, logging formats and how to print a command a user can run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    from ..receiver import AsyncReceiver, PaymentEvent

__all__ = [
    "CONFIG_FLAGS",
    "DEFAULT_PAYMENT_LINES_PER_SECOND",
    "OPTION_FLAGS",
    "UPLINK_FORMS",
    "DefaultsHelpFormatter",
    "JsonLogFormatter",
    "LoopBatchingStreamHandler",
    "PaymentLog",
    "TextLogFormatter",
    "add_log_format_argument",
    "add_payment_log_argument",
    "add_uplink_argument",
    "cli_invocation",
    "describe_error",
    "describe_store",
    "int_at_least",
    "local_payment_pointer",
    "log_payments",
]

#: The logger of the one line per incoming payment (``receive``, ``demo``).
payment_log = logging.getLogger("ilp_receiver.payments")

#: How an uplink URL is written, in every ``--help`` text and doc of the CLI.
UPLINK_FORMS: Final = (
    "btp+ws://NAME:TOKEN@HOST:PORT (BTP/2.0; btp+wss:// over TLS) or "
    "http+oer://[NAME:]TOKEN@HOST:PORT/PATH?listen=[LHOST:]LPORT (ILP over HTTP)"
)

#: Library keyword arguments an error message may suggest, and the CLI flag for each.
OPTION_FLAGS: Final = {
    "lenient": "--lenient",
    "allow_http_for_loopback": "--http-loopback",
}


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-format text|json``: how log lines (payments included) look on stderr."""
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr as text or as one JSON object each",
    )


def add_uplink_argument(parser: argparse.ArgumentParser, *, environment: str | None = None) -> None:
    """The ``--uplink URL`` option, described the same way everywhere: required, or --
    with ``environment`` -- taken from that environment variable when not given (so the
    credentials in the URL need not be in argv)."""
    if environment is None:
        parser.add_argument(
            "--uplink", required=True, metavar="URL", help=f"connector: {UPLINK_FORMS}"
        )
        return
    parser.add_argument(
        "--uplink",
        default=None,
        metavar="URL",
        help=f"connector: {UPLINK_FORMS} (default: ${environment})",
    )


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to every option whose help does not state its default.

    Flags (``store_true``) and options without a default value are left alone: their
    help says what happens without them.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
            or not action.option_strings
            or action.nargs == 0  # a flag (store_true, store_const, ...): no value
        ):
            return action.help
        return f"{text} (default: %(default)s)"


#: ConfigError fields the CLI sets from a flag, and that flag.
CONFIG_FLAGS: Final = {
    "uplink": "--uplink",
    "port": "--port",
    "max_balance": "--max-balance",
    "secret-file": "--secret-file",
    "max_connections": "--max-connections",
    "header_timeout": "--header-timeout",
    "draft": "--psk2",
    "protocol": "--protocol",
    "slippage": "--slippage",
    "header": "-H/--header",
    "data": "-d/--data",
    "store": "--store",
}


def describe_error(exc: BaseException) -> str:
    """The message of ``exc`` in the CLI's words: library keyword arguments
    (``lenient=True``) become the flags that set them (``--lenient``), and a
    :class:`~ilp_receiver.errors.ConfigError` of a setting the CLI takes from a flag
    names that flag (``invalid --uplink: ...``)."""
    from ..errors import ConfigError

    if isinstance(exc, ConfigError) and exc.field in CONFIG_FLAGS:
        return f"invalid {CONFIG_FLAGS[exc.field]}: {exc.problem}"
    text = str(exc)
    option = getattr(exc, "option", None)
    if isinstance(option, str) and option in OPTION_FLAGS:
        text = text.replace(f"{option}=True", OPTION_FLAGS[option])
    return text


def cli_invocation() -> str:
    """How to run this CLI again from the shell it was started in.

    ``ilp-receiver`` when that name on ``PATH`` is this installation's script (an
    activated virtualenv); else the script's path (relative when it lies under the
    current directory: ``.venv/bin/ilp-receiver``); else ``python -m ilp_receiver``
    with this interpreter.
    """
    script = Path(sys.executable).parent / "ilp-receiver"
    found = shutil.which("ilp-receiver")
    if found is not None and script.exists() and Path(found).resolve() == script.resolve():
        return "ilp-receiver"
    if script.exists():
        return shlex.quote(_shell_path(script))
    return f"{shlex.quote(_shell_path(Path(sys.executable)))} -m ilp_receiver"


def _shell_path(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    if relative.startswith(".."):
        return str(path)
    return relative if os.sep in relative else f".{os.sep}{relative}"


def local_payment_pointer(host: str, port: int, path: str = "") -> str:
    """The payment pointer of a server listening on ``host:port`` that a client on this
    machine can use (``$127.0.0.1:8080``; a wildcard listen address becomes loopback)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"${host}:{port}{path}"
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    text = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"${text}:{port}{path}"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record: ``time``, ``level``, ``logger``, ``message`` and
    the record's ``fields`` (``logger.info(..., extra={"fields": {...}})``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextLogFormatter(logging.Formatter):
    """``logging.Formatter`` that formats the local time of each second once.

    ``%(asctime)s`` is the default ``YYYY-mm-dd HH:MM:SS,mmm``: ``time.strftime`` of
    the record's second, then its milliseconds.  Successive records of one second (a
    receiver logs a line per PSK2 payment) reuse that second's text; the lines are
    those of a plain ``Formatter`` with the same format.
    """

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._cached: tuple[int, str] = (-1, "")  # one attribute: swapped atomically

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time as ``Formatter.formatTime`` writes it."""
        msec_format = self.default_msec_format
        if datefmt or msec_format is None or self.converter is not time.localtime:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._cached
        if cached[0] != second:
            text = time.strftime(self.default_time_format, time.localtime(second))
            cached = self._cached = (second, text)
        return msec_format % (cached[1], record.msecs)


class LoopBatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A :class:`logging.StreamHandler` that writes the records one event-loop iteration
    logs on the loop's thread with one write, at the start of the next iteration.

    The lines are exactly those of a plain ``StreamHandler`` with the same formatter, in
    the same order; only the number of writes changes (``ilp-receiver receive`` logs one
    line per PSK2 payment, and a write system call per line cost as much as a SQLite
    commit per packet at saturation).  Records logged outside a running loop (another
    thread, start-up, shutdown) are written at once, after what the loop had pending;
    :meth:`flush` (also called by :func:`logging.shutdown`) writes what is pending.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record``; keep it for the end of this loop iteration, or write it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._pending:
                self.flush()
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        pending = self._pending
        if not pending:
            loop.call_soon(self.flush)
        pending.append(line)

    def flush(self) -> None:
        """Write the pending lines with one write, then flush the stream."""
        self.acquire()
        try:
            pending = self._pending
            if pending:
                text = pending[0] if len(pending) == 1 else "".join(pending)
                pending.clear()
                self.stream.write(text)
            super().flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "pending log lines lost"}))
        finally:
            self.release()


def describe_store(store: str | None) -> str:
    """Where a ``--store`` value keeps balances, for the start-up log: an absolute SQLite
    path, or a URL without its password."""
    if store is None:
        return "memory (balances are lost at exit)"
    if "://" not in store:
        return f"SQLite file {Path(store).resolve()}"
    from urllib.parse import urlsplit

    parts = urlsplit(store)
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return store


def _endpoint_of(account: str) -> str | None:
    """The SPSP path whose balance ``account`` is (None for other accounts, e.g. the
    ``token:...`` balances of HTTP-ILP Pay-Tokens)."""
    from ..receiver import DEFAULT_ACCOUNT

    if account == DEFAULT_ACCOUNT:
        return "/.well-known/pay"
    if account.startswith("endpoint:"):
        return "/" + account[len("endpoint:") :]
    return None


@functools.lru_cache(maxsize=1024)
def _payment_target(account: str) -> tuple[str | None, str]:
    """``account``'s SPSP path and how the payment line names it (the same few accounts
    come back on every packet: worked out once each)."""
    endpoint = _endpoint_of(account)
    return endpoint, f"{endpoint} (account {account})" if endpoint else f"account {account}"


#: ``--payment-log-rate``'s default: payment lines per second before the rest of the
#: second is summed up
DEFAULT_PAYMENT_LINES_PER_SECOND: Final = 10


def add_payment_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--payment-log-rate N``: at most N payment lines per second, the rest summed."""
    parser.add_argument(
        "--payment-log-rate",
        type=int_at_least(0),
        default=DEFAULT_PAYMENT_LINES_PER_SECOND,
        metavar="N",
        help="payment lines per second at most; the payments beyond them are summed in one "
        "line per account at the end of that second (0: a line for every payment)",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum`` (the error names
    the option through argparse)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


class PaymentLog:
    """The payment lines of ``receive`` and ``demo`` on ``ilp_receiver.payments``.

    One INFO line per incoming payment (amount, account and SPSP endpoint, the account's
    new balance, the protocol), at most ``lines_per_second`` of them in any second
    (0: no limit).  The payments of a second beyond that many are summed per account
    and written as one ``payments received: N more payments, ...`` line when that
    second ends (and by :meth:`flush`), so a receiver at thousands of packets per second
    writes a few lines per second, not a line per packet, and nothing goes unreported.

    PSK2: a payment is a packet credited (a single payment is one packet).  STREAM: a
    payment is a connection's money, logged when the connection closes, with the total
    it brought (its packets are logged at DEBUG).  With ``--log-format json`` the fields
    are keys of the JSON line (``"event": "payment"``, or ``"payments"`` for a sum).
    """

    __slots__ = ("_clock", "_flush_at", "_lines", "_per_second", "_receiver", "_since", "_summed")

    def __init__(
        self,
        receiver: AsyncReceiver,
        lines_per_second: int = DEFAULT_PAYMENT_LINES_PER_SECOND,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lines_per_second < 0:
            raise ValueError("lines_per_second must be 0 or more")
        self._receiver = receiver
        self._per_second = lines_per_second
        self._clock = clock
        self._since = -math.inf  # when the current second of lines began
        self._lines = 0  # lines written in it
        #: account -> [payments, amount, latest balance, protocols] summed, not written
        self._summed: dict[str, list[Any]] = {}
        self._flush_at: asyncio.TimerHandle | None = None

    def record(self, event: PaymentEvent) -> None:
        """Log ``event`` if it is a payment (the receiver's event callback)."""
        stream = event.payment.format == "stream"
        if stream and event.kind == "received":
            payment_log.debug(
                "STREAM packet: +%d to %s, balance %d", event.amount, event.account, event.balance
            )
            return
        if event.kind != ("completed" if stream else "received"):
            return
        protocol = "stream" if stream else event.payment.format
        per_second = self._per_second
        if per_second:
            now = self._clock()
            if now - self._since >= 1.0:
                if self._summed:
                    self.flush()  # the timer has not run yet: the sums come first
                self._since, self._lines = now, 0
            if self._lines >= per_second:
                self._sum(event, protocol)
                return
            self._lines += 1
        config = self._receiver.config
        endpoint, where = _payment_target(event.account)
        payment_log.info(
            "payment received: %d units (%s, scale %d) to %s, balance now %d, over %s",
            event.amount,
            config.asset_code,
            config.asset_scale,
            where,
            event.balance,
            protocol,
            extra={
                "fields": {
                    "event": "payment",
                    "amount": str(event.amount),
                    "asset_code": config.asset_code,
                    "asset_scale": config.asset_scale,
                    "account": event.account,
                    "endpoint": endpoint,
                    "balance": str(event.balance),
                    "protocol": protocol,
                }
            },
        )

    def _sum(self, event: PaymentEvent, protocol: str) -> None:
        summed = self._summed.get(event.account)
        if summed is None:
            self._summed[event.account] = [1, event.amount, event.balance, {protocol}]
            if self._flush_at is None:
                delay = max(0.0, self._since + 1.0 - self._clock())
                with contextlib.suppress(RuntimeError):  # no loop: the next line or flush()
                    self._flush_at = asyncio.get_running_loop().call_later(delay, self.flush)
            return
        summed[0] += 1
        summed[1] += event.amount
        summed[2] = event.balance
        summed[3].add(protocol)

    def flush(self) -> None:
        """Write the sums of the payments that got no line of their own (the end of
        their second, and at shutdown)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        summed, self._summed = self._summed, {}
        if not summed:
            return
        seconds = max(0.0, self._clock() - self._since)
        config = self._receiver.config
        for account, (count, amount, balance, protocols) in summed.items():
            endpoint, where = _payment_target(account)
            protocol = ", ".join(sorted(protocols))
            payment_log.info(
                "payments received: %d more payments, %d units in all (%s, scale %d) to %s "
                "in the last %.1f s, balance now %d, over %s",
                count,
                amount,
                config.asset_code,
                config.asset_scale,
                where,
                seconds,
                balance,
                protocol,
                extra={
                    "fields": {
                        "event": "payments",
                        "count": count,
                        "amount": str(amount),
                        "asset_code": config.asset_code,
                        "asset_scale": config.asset_scale,
                        "account": account,
                        "endpoint": endpoint,
                        "balance": str(balance),
                        "protocol": protocol,
                        "seconds": round(seconds, 3),
                    }
                },
            )


def log_payments(
    receiver: AsyncReceiver, lines_per_second: int = DEFAULT_PAYMENT_LINES_PER_SECOND
) -> PaymentLog:
    """Log ``receiver``'s payments on ``ilp_receiver.payments`` (:class:`PaymentLog`);
    call the returned log's :meth:`~PaymentLog.flush` after the receiver stops."""
    payments = PaymentLog(receiver, lines_per_second)
    receiver.on_event(payments.record)
    return payments
