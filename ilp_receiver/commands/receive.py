"""``ilp-receiver receive``: a standalone payment-pointer server on an uplink.

SPSP at ``/.well-known/pay`` and ``/<name>`` (each name its own balance), ``/health``;
a JSON ``{"event": "ready", ...}`` line on stdout when serving (with the
``payment_pointer`` to pay, ``$127.0.0.1:8080``); clean shutdown on SIGINT/SIGTERM.

Start-up order: the HTTP port is bound first (a taken port ends the command before it
touches the secret, the store or the uplink), then the secret and the store are opened
(their paths logged), then the uplink is connected; SPSP queries get ``503`` until it
is.  Every incoming payment is logged on stderr (one line; JSON with
``--log-format json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigError, IlpReceiverError
from ._common import (
    add_log_format_argument,
    add_payment_log_argument,
    add_uplink_argument,
    describe_error,
    describe_store,
    int_at_least,
    local_payment_pointer,
    log_payments,
)

if TYPE_CHECKING:
    from ..receiver import AsyncReceiver
    from ._common import PaymentLog

__all__ = [
    "HELP",
    "NAME",
    "add_arguments",
    "apply_environment",
    "emit",
    "load_or_create_secret",
    "run",
    "wait_for_signal",
]

NAME = "receive"
HELP = "run a payment-pointer server on an uplink to a connector"

log = logging.getLogger("ilp_receiver.cli")

#: Where the balances and the secret go when neither a flag nor the environment says.
DEFAULT_STORE = "ilp-receiver.sqlite3"
DEFAULT_SECRET_FILE = "ilp-receiver.secret"  # noqa: S105 (a file name)


def load_or_create_secret(path: Path) -> bytes:
    """Read the receiver secret (hex) from ``path``, creating it (mode 0600) if absent."""
    if path.exists():
        log.info("receiver secret: %s", path.resolve())
        text = path.read_text(encoding="ascii").strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ConfigError("secret-file", f"{path} does not hold a hex secret") from None
        if len(secret) < 32:
            raise ConfigError("secret-file", f"{path} holds fewer than 32 bytes")
        return secret
    secret = os.urandom(32)
    # written whole under a temporary name, then linked into place: several members of a
    # fleet started at once on one secret file all end up with the one that won
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret.hex() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_or_create_secret(path)  # another process created it first
    finally:
        tmp.unlink(missing_ok=True)
    log.info("receiver secret: created a new one in %s", path.resolve())
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

    from ilp_receiver_aiohttp import create_spsp_app

    from ..links.listener import ServerLimits, start_listener
    from ..receiver import AsyncReceiver
    from ..stream.server import StreamLimits
    from ..web.spsp_endpoint import EndpointDirectory

    started = False
    cleanups: list[web.AppRunner] = []

    @web.middleware
    async def until_started(request: web.Request, handler: Any) -> web.StreamResponse:
        if not started:
            return web.json_response(
                {"status": "starting: the uplink is not connected yet"},
                status=503,
                headers={"Retry-After": "1"},
            )
        response: web.StreamResponse = await handler(request)
        return response

    # 1. the port: a second instance on a taken port stops here, before it opens the
    # store or connects an uplink that could deliver it a payment
    holder: list[AsyncReceiver] = []
    payments: list[PaymentLog] = []
    directory = EndpointDirectory(args.endpoint or None)
    limits = ServerLimits(max_connections=args.max_connections, header_timeout=args.header_timeout)
    app = create_spsp_app(cast("AsyncReceiver", _LazyReceiver(holder)), directory)
    app.middlewares.append(until_started)
    runner = web.AppRunner(app, access_log=None, **limits.runner_options())
    await runner.setup()
    try:
        listener = await start_listener(runner, args.host, args.port, limits)
    except ConfigError as exc:
        log.error("%s", describe_error(exc))
        await runner.cleanup()
        return 1
    port = listener.port
    try:
        # 2. the secret and the store, said where
        secret = (
            args.secret
            if getattr(args, "secret", None) is not None
            else load_or_create_secret(Path(args.secret_file))
        )
        log.info("balance store: %s", describe_store(args.store))
        uplink = args.uplink
        if args.worker is not None:
            from ..workers import worker_uplink

            uplink = worker_uplink(uplink, None if args.worker == "auto" else args.worker)
        receiver = AsyncReceiver(
            uplink,
            secret=secret,
            store=args.store,
            max_balance=args.max_balance,
            receiver_name=args.name,
            stream=not args.no_stream,
            stream_limits=StreamLimits(echo_data=args.echo_stream_data),
            webhooks=args.webhooks,
        )
        holder.append(receiver)
        payments.append(log_payments(receiver, args.payment_log_rate))
        # 3. the uplink
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
        started = True
        host = f"[{args.host}]" if ":" in args.host else args.host
        extra: dict[str, object] = {}
        if args.webhook_admin_port is not None:
            from .webhooks import start_webhook_admin

            if receiver.webhook_dispatcher is None:
                raise ConfigError(
                    "--webhook-admin-port",
                    "needs webhooks delivered by this process (ILP_RECEIVER_WEBHOOK_URL and a "
                    "key, ILP_RECEIVER_WEBHOOK_DISPATCH not false)",
                )
            admin_runner, extra["webhook_admin"] = await start_webhook_admin(
                receiver.webhook_dispatcher,
                args.webhook_admin_host,
                args.webhook_admin_port,
                args.webhook_admin_token,
                "ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN",
                "--webhook-admin-port",
            )
            cleanups.append(admin_runner)
        emit(
            "ready",
            ilp_address=receiver.address,
            payment_pointer=local_payment_pointer(args.host, port),
            spsp_url=f"http://{host}:{port}/.well-known/pay",
            asset_code=receiver.config.asset_code,
            asset_scale=receiver.config.asset_scale,
            secret_file=args.secret_file,
            store=describe_store(args.store),
            **extra,
        )
        await wait_for_signal()
        return 0
    finally:
        for admin in cleanups:
            await admin.cleanup()
        await runner.cleanup()
        for receiver in holder:
            await receiver.stop()
        for payment_log in payments:
            payment_log.flush()  # the sums of the last second
        if started:
            emit("stopped")


class _LazyReceiver:
    """Stands for the receiver in the SPSP app until it exists (the port is bound
    before the receiver is made; requests before then get 503 from a middleware)."""

    def __init__(self, holder: list[Any]) -> None:
        self._holder = holder

    def __getattr__(self, name: str) -> Any:
        if not self._holder:
            raise RuntimeError("the receiver has not been created yet")
        return getattr(self._holder[0], name)


def add_arguments(receive: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver receive``."""
    add_uplink_argument(receive, environment="ILP_RECEIVER_UPLINK")
    receive.add_argument("--host", default="127.0.0.1", help="SPSP listen address")
    receive.add_argument("--port", type=int, default=8080, help="SPSP listen port (0: a free one)")
    receive.add_argument(
        "--store",
        default=None,
        help="balance store: a SQLite path (relative to the current directory) or a "
        "redis:// / postgresql:// URL (its key / table prefix as ?prefix=NAME); processes "
        "sharing an account share the store and the secret file (default: "
        f"$ILP_RECEIVER_STORE, else {DEFAULT_STORE})",
    )
    receive.add_argument(
        "--secret-file",
        default=None,
        help="file with the receiver secret in hex, created (mode 0600) if missing; keep it: "
        "addresses issued under it are paid only while it is the same (default: "
        f"$ILP_RECEIVER_SECRET_FILE, else {DEFAULT_SECRET_FILE}; $ILP_RECEIVER_SECRET "
        "gives the secret itself)",
    )
    receive.add_argument(
        "--endpoint",
        action="append",
        metavar="NAME",
        help="serve only this named endpoint at /NAME; repeat for more (default: any valid name)",
    )
    receive.add_argument(
        "--max-balance",
        type=int,
        default=None,
        help="per-endpoint cap; payments beyond it are rejected (default: no cap but 2**64-1)",
    )
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
    receive.add_argument(
        "--name", default=None, help="receiver_info.name in SPSP replies (default: none)"
    )
    receive.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds to wait for the uplink"
    )
    receive.add_argument(
        "--worker",
        metavar="ID",
        default=None,
        help="connect a btp+ws:// uplink as NAME-ID instead of NAME, for connectors that "
        "keep one connection per account (ilp-plugin-btp, mini-accounts); 'auto': the "
        "lowest number no other process on this machine holds, or $ILP_RECEIVER_WORKER "
        "when set (default: none, the uplink's own name; docs/scaling.md)",
    )
    receive.add_argument(
        "--max-connections",
        type=int_at_least(1),
        default=1024,
        help="SPSP connections open at once; one more gets 503 and is closed",
    )
    receive.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds a client has to send a complete request head; also the keep-alive idle time",
    )
    receive.add_argument(
        "--webhook-url",
        action="append",
        default=None,
        metavar="URL",
        help="POST a signed event per payment here; repeat for more (default: "
        "$ILP_RECEIVER_WEBHOOK_URL; docs/webhooks.md)",
    )
    receive.add_argument(
        "--webhook-key-file",
        default=None,
        help="file with the webhook signing key, whsk_... or whsec_... (default: "
        "$ILP_RECEIVER_WEBHOOK_KEY_FILE, or the key in $ILP_RECEIVER_WEBHOOK_KEY)",
    )
    receive.add_argument(
        "--webhook-admin-port",
        type=int,
        default=None,
        help="serve the webhook admin API (list, replay, metrics; docs/webhooks.md) on this "
        "port, its bearer token from $ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN (default: none)",
    )
    receive.add_argument(
        "--webhook-admin-host", default="127.0.0.1", help="webhook admin API address"
    )
    add_log_format_argument(receive)
    add_payment_log_argument(receive)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def apply_environment(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
    """Fill what the command line left out from the ``ILP_RECEIVER_*`` environment
    (``UPLINK``, ``SECRET`` / ``SECRET_FILE``, ``STORE``, ``NAME``, ``MAX_BALANCE``, the
    ``WEBHOOK_*`` settings), so
    no credential has to sit in argv; a bad value is a ConfigError naming the variable."""
    from ..options import ReceiverOptions

    env = ReceiverOptions.from_env(environ)
    if args.uplink is None:
        if not isinstance(env.uplink, str):
            raise ConfigError("uplink", "give --uplink URL or set ILP_RECEIVER_UPLINK")
        args.uplink = env.uplink
    if args.store is None:
        args.store = env.store if isinstance(env.store, str) else DEFAULT_STORE
    args.secret = None
    if args.secret_file is None:
        if env.secret is not None:
            args.secret = env.secret
        args.secret_file = str(env.secret_file or DEFAULT_SECRET_FILE)
    if args.name is None:
        args.name = env.receiver_name
    if args.max_balance is None:
        args.max_balance = env.max_balance
    flags: dict[str, tuple[object, str]] = {}
    if getattr(args, "webhook_url", None):
        flags["webhook_url"] = (args.webhook_url, "--webhook-url")
    if getattr(args, "webhook_key_file", None) is not None:
        flags["webhook_key_file"] = (args.webhook_key_file, "--webhook-key-file")
    args.webhooks = env.replace_from(flags).webhook_config()
    environment = os.environ if environ is None else environ
    args.webhook_admin_token = environment.get("ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN", "").strip()


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    apply_environment(args)
    args.secret_file = str(Path(args.secret_file).resolve())
    return asyncio.run(_receive(args))
