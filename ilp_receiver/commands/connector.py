"""``ilp-receiver connector --config FILE``: run the bundled connector.

Prints one JSON ``{"event": "ready", ...}`` line on stdout once it listens (logs go to
stderr) and ``{"event": "stopped"}`` after a clean shutdown on SIGINT/SIGTERM.
Environment variables override the file (``ILP_CONNECTOR_ADDRESS``,
``ILP_CONNECTOR_ADMIN_TOKEN``, ...; see :mod:`ilp_receiver.connector.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from ..errors import ConfigError
from ._common import add_log_format_argument
from .receive import emit, wait_for_signal

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "connector"
HELP = "run the bundled ILP connector from a TOML config file"

log = logging.getLogger("ilp_receiver.cli")


async def _run(args: argparse.Namespace) -> int:
    from ..connector import Connector, load_config

    config = load_config(args.config)
    connector = Connector(config)
    start = asyncio.ensure_future(connector.start(address_timeout=args.address_timeout))
    stop = asyncio.ensure_future(wait_for_signal())
    done, _ = await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
    if stop in done:
        start.cancel()
        await connector.stop()
        emit("stopped")
        return 0
    try:
        start.result()
    except ConfigError:
        stop.cancel()
        raise
    except TimeoutError:
        stop.cancel()
        log.error("no ILP address: the parent did not answer IL-DCP in time")
        return 1
    emit("ready", **connector.ready_info())
    try:
        await stop
    finally:
        await connector.stop()
        emit("stopped")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver connector``."""
    parser.add_argument("--config", required=True, help="TOML config file")
    parser.add_argument(
        "--address-timeout",
        type=float,
        default=None,
        help="seconds to wait for IL-DCP from a parent (default: forever)",
    )
    add_log_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run the connector until SIGINT/SIGTERM."""
    return asyncio.run(_run(args))
