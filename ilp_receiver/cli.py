"""The ``ilp-receiver`` command.

``ilp-receiver receive --uplink URL [--host 127.0.0.1] [--port 8080] [--store PATH]
[--secret-file PATH]`` runs a standalone payment-pointer server: SPSP at
``/.well-known/pay`` and ``/<name>``, ``/health``; it stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError, IlpReceiverError

__all__ = ["load_or_create_secret", "main"]

log = logging.getLogger("ilp_receiver.cli")


def load_or_create_secret(path: Path) -> bytes:
    """Read the receiver secret (hex) from ``path``, creating it (mode 0600) if absent."""
    if path.exists():
        text = path.read_text(encoding="ascii").strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ConfigError("secret-file", f"{path} does not hold a hex secret") from None
        if len(secret) < 32:
            raise ConfigError("secret-file", f"{path} holds fewer than 32 bytes")
        return secret
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret.hex() + "\n")
    log.info("created a new receiver secret in %s", path)
    return secret


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _receive(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .receiver import AsyncReceiver
    from .server import create_spsp_app
    from .web.spsp_endpoint import EndpointDirectory

    secret = load_or_create_secret(Path(args.secret_file))
    receiver = AsyncReceiver(
        args.uplink,
        secret=secret,
        store=args.store,
        max_balance=args.max_balance,
        receiver_name=args.name,
    )
    deadline = asyncio.get_running_loop().time() + args.connect_timeout
    while True:
        try:
            await receiver.start()
            break
        except IlpReceiverError as exc:
            if asyncio.get_running_loop().time() >= deadline:
                log.error("could not connect the uplink: %s", exc)
                return 1
            log.warning("uplink not ready (%s); retrying", exc)
            await asyncio.sleep(0.5)
    directory = EndpointDirectory(args.endpoint or None)
    runner = web.AppRunner(create_spsp_app(receiver, directory), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        await receiver.stop()
        await runner.cleanup()
        return 1
    url = f"http://{args.host}:{args.port}/.well-known/pay"
    _emit(
        "ready",
        ilp_address=receiver.address,
        spsp_url=url,
        asset_code=receiver.config.asset_code,
        asset_scale=receiver.config.asset_scale,
    )
    try:
        await _wait_for_signal()
    finally:
        await runner.cleanup()
        await receiver.stop()
        _emit("stopped")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ilp-receiver", description="Get paid over Interledger (SPSP + PSK2)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    receive = commands.add_parser(
        "receive", help="run a payment-pointer server on an uplink to a connector"
    )
    receive.add_argument(
        "--uplink",
        required=True,
        help="connector URL, e.g. btp+ws://name:token@127.0.0.1:7768",
    )
    receive.add_argument("--host", default="127.0.0.1", help="SPSP listen address")
    receive.add_argument("--port", type=int, default=8080, help="SPSP listen port")
    receive.add_argument(
        "--store", default="ilp-receiver.sqlite3", help="balance store: SQLite path or URL"
    )
    receive.add_argument(
        "--secret-file",
        default="ilp-receiver.secret",
        help="file with the receiver secret in hex (created if missing)",
    )
    receive.add_argument(
        "--endpoint",
        action="append",
        help="serve only these named endpoints at /<name> (default: any valid name)",
    )
    receive.add_argument("--max-balance", type=int, default=None, help="per-endpoint cap")
    receive.add_argument("--name", default=None, help="receiver_info.name in SPSP replies")
    receive.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds to wait for the uplink"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ilp-receiver`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "receive":
            return asyncio.run(_receive(args))
    except ConfigError as exc:
        print(f"ilp-receiver: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
