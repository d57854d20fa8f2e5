"""The ``ilp-receiver`` command.

Subcommands live in :mod:`ilp_receiver.commands` (one module each):

* ``demo [--once]``: the bundled connector, a paid web app and a paying client in one
  process;
* ``receive --uplink URL [--host 127.0.0.1] [--port 8080] [--store PATH]
  [--secret-file PATH]``: a standalone payment-pointer server on an uplink;
* ``connector --config FILE``: the bundled connector;
* ``query POINTER``: an SPSP query;
* ``pay POINTER AMOUNT --uplink URL [--chunked]``: a STREAM or PSK2 payment;
* ``fetch URL --uplink URL [--max-price N]``: an HTTP request that pays a 402;
* ``webhooks run|keygen|list|replay|stats``: the standalone webhook dispatcher and the
  outbox's operations (``docs/webhooks.md``).

``python -m ilp_receiver`` runs the same command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from . import __version__
from .commands import COMMANDS
from .commands._common import (
    DefaultsHelpFormatter,
    JsonLogFormatter,
    LoopBatchingStreamHandler,
    TextLogFormatter,
    describe_error,
)
from .errors import ConfigError
from .links.listener import raise_open_files_limit

__all__ = ["main"]


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"ilp_receiver.commands.{name.replace('-', '_')}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ilp-receiver",
        description="Get paid over Interledger (SPSP, STREAM and PSK2).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = _load(name)
        sub = commands.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            formatter_class=DefaultsHelpFormatter,
        )
        module.add_arguments(sub)
    return parser


def _setup_logging(verbose: bool, log_format: str) -> None:
    handler = LoopBatchingStreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(TextLogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # no format of ours shows a record's thread or process: don't look them up per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ilp-receiver`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    # the connection caps, not the descriptor limit, must be what a flood meets first
    raise_open_files_limit()
    _setup_logging(args.verbose, getattr(args, "log_format", "text"))
    try:
        status: int = _load(args.command).run(args)
    except ConfigError as exc:
        print(f"ilp-receiver: {describe_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
