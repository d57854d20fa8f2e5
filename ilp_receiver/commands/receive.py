"""``ilp-receiver receive``: a standalone payment-pointer server on an uplink.

SPSP at ``/.well-known/pay`` and ``/<name>`` (each name its own balance), ``/health``;
a JSON ``{"event": "ready", ...}`` line on stdout when serving; clean shutdown on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from ..errors import ConfigError, IlpReceiverError

__all__ = [
    "HELP",
    "NAME",
    "add_arguments",
    "emit",
    "load_or_create_secret",
    "run",
    "wait_for_signal",
]

NAME = "receive"
HELP = "run a payment-pointer server on an uplink to a connector"

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


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _receive(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ..links.listener import ServerLimits, start_listener
    from ..receiver import AsyncReceiver
    from ..server import create_spsp_app
    from ..stream.server import StreamLimits
    from ..web.spsp_endpoint import EndpointDirectory

    secret = load_or_create_secret(Path(args.secret_file))
    receiver = AsyncReceiver(
        args.uplink,
        secret=secret,
        store=args.store,
        max_balance=args.max_balance,
        receiver_name=args.name,
        stream=not args.no_stream,
        stream_limits=StreamLimits(echo_data=args.echo_stream_data),
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
    limits = ServerLimits(max_connections=args.max_connections, header_timeout=args.header_timeout)
    runner = web.AppRunner(
        create_spsp_app(receiver, directory), access_log=None, **limits.runner_options()
    )
    await runner.setup()
    try:
        await start_listener(runner, args.host, args.port, limits)
    except ConfigError as exc:
        log.error("%s", exc)
        await receiver.stop()
        await runner.cleanup()
        return 1
    url = f"http://{args.host}:{args.port}/.well-known/pay"
    emit(
        "ready",
        ilp_address=receiver.address,
        spsp_url=url,
        asset_code=receiver.config.asset_code,
        asset_scale=receiver.config.asset_scale,
    )
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()
        await receiver.stop()
        emit("stopped")
    return 0


def add_arguments(receive: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver receive``."""
    receive.add_argument(
        "--uplink",
        required=True,
        help=(
            "connector URL: btp+ws://name:token@host:port (BTP/2.0), or "
            "http+oer://TOKEN@host:port/?listen=127.0.0.1:PORT (ILP over HTTP)"
        ),
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
    receive.add_argument(
        "--no-stream",
        action="store_true",
        help="serve PSK2 only: SPSP v4 (STREAM) queries get 406",
    )
    receive.add_argument(
        "--echo-stream-data",
        action="store_true",
        help="write every byte a STREAM client sends back on the same stream (tests)",
    )
    receive.add_argument("--name", default=None, help="receiver_info.name in SPSP replies")
    receive.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds to wait for the uplink"
    )
    receive.add_argument(
        "--max-connections",
        type=_positive_int,
        default=1024,
        help="SPSP connections open at once; one more gets 503 and is closed (default 1024)",
    )
    receive.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds a client has to send a complete request head; also the keep-alive "
        "idle time (default 10)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    return asyncio.run(_receive(args))
