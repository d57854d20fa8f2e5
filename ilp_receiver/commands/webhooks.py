"""``ilp-receiver webhooks``: the standalone dispatcher and the outbox's operations.

* ``webhooks run --store URL``: deliver the store's outbox (any number of these, and
  receivers with ``ILP_RECEIVER_WEBHOOK_DISPATCH=false``, may share one store); with
  ``--admin-port`` also the admin API (``ilp_receiver.webhooks.admin``; its token from
  ``$ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN`` or ``--admin-token-file``); ``--once`` delivers
  what is due and exits.
* ``webhooks keygen [--hmac] --out FILE``: a new signing key, written to FILE (mode
  0600, never printed); prints the public key consumers verify with.
* ``webhooks list --store URL [--state dead]``, ``webhooks replay --store URL ID``,
  ``webhooks stats --store URL``: inspect and replay (JSON on stdout);
  ``webhooks purge --store URL [--older-than SECONDS]``: delete old dead letters.

Endpoints and keys come from ``--url`` / ``--key-file`` or the environment
(``ILP_RECEIVER_WEBHOOK_URL``, ``ILP_RECEIVER_WEBHOOK_KEY`` / ``_KEY_FILE``): a key is
never an argument, so it stays out of ``ps`` and shell histories.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._common import add_log_format_argument, describe_store

if TYPE_CHECKING:
    from ..webhooks.dispatcher import WebhookConfig

__all__ = ["HELP", "NAME", "add_arguments", "run", "start_webhook_admin"]

NAME = "webhooks"
HELP = "deliver signed payment webhooks from a store's outbox; keys, listing, replay"

log = logging.getLogger("ilp_receiver.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ilp-receiver webhooks``."""
    actions = parser.add_subparsers(dest="action", required=True)
    store_help = (
        "the balance store the receivers write: a SQLite path or a redis:// / "
        "postgresql:// URL (default: $ILP_RECEIVER_STORE)"
    )

    run_parser = actions.add_parser("run", help="deliver the outbox until SIGINT/SIGTERM")
    run_parser.add_argument("--store", default=None, help=store_help)
    run_parser.add_argument(
        "--url",
        action="append",
        default=None,
        help="an endpoint; repeat for more (default: $ILP_RECEIVER_WEBHOOK_URL)",
    )
    run_parser.add_argument(
        "--key-file",
        default=None,
        help="file with the signing key(s), whsk_... or whsec_... (default: "
        "$ILP_RECEIVER_WEBHOOK_KEY_FILE, or the key in $ILP_RECEIVER_WEBHOOK_KEY)",
    )
    run_parser.add_argument("--concurrency", type=int, default=4, help="requests per endpoint")
    run_parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    run_parser.add_argument(
        "--max-age",
        type=float,
        default=None,
        help="seconds before an undelivered event is a dead letter "
        "(default: $ILP_RECEIVER_WEBHOOK_MAX_AGE, else 259200)",
    )
    run_parser.add_argument(
        "--lease",
        type=float,
        default=300.0,
        help="seconds a claimed event is reserved for this dispatcher; after a crash its "
        "events are sent again (same webhook-id) once the lease runs out",
    )
    run_parser.add_argument(
        "--dead-retention",
        type=float,
        default=None,
        help="seconds a dead letter is kept before it is purged; 0 keeps them "
        "(default: $ILP_RECEIVER_WEBHOOK_DEAD_RETENTION, else 2592000)",
    )
    run_parser.add_argument("--once", action="store_true", help="deliver what is due, then exit")
    run_parser.add_argument("--admin-host", default="127.0.0.1", help="admin API address")
    run_parser.add_argument(
        "--admin-port", type=int, default=None, help="serve the admin API here (default: none)"
    )
    run_parser.add_argument(
        "--admin-token-file",
        default=None,
        help="file with the admin API's bearer token (default: $ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN)",
    )
    add_log_format_argument(run_parser)

    keygen = actions.add_parser("keygen", help="make a signing key (Ed25519, or --hmac)")
    keygen.add_argument("--out", required=True, help="file to write the secret key to (0600)")
    keygen.add_argument(
        "--hmac", action="store_true", help="an HMAC-SHA256 secret (whsec_) instead of Ed25519"
    )

    listing = actions.add_parser("list", help="list pending or dead events (JSON lines)")
    listing.add_argument("--store", default=None, help=store_help)
    listing.add_argument("--state", choices=("pending", "dead"), default="pending")
    listing.add_argument("--limit", type=int, default=100)

    replay = actions.add_parser("replay", help="send one event again now")
    replay.add_argument("--store", default=None, help=store_help)
    replay.add_argument("event_id", help="the event's id (evt_...)")

    stats = actions.add_parser("stats", help="the outbox's depth (JSON)")
    stats.add_argument("--store", default=None, help=store_help)

    purge = actions.add_parser("purge", help="delete old dead letters (JSON: how many)")
    purge.add_argument("--store", default=None, help=store_help)
    purge.add_argument(
        "--older-than",
        default=None,
        help="seconds since they died; 0 purges every dead letter "
        "(default: $ILP_RECEIVER_WEBHOOK_DEAD_RETENTION, else 2592000)",
    )


def _store_spec(args: argparse.Namespace) -> str:
    from ..options import ReceiverOptions

    if args.store is not None:
        return str(args.store)
    env = ReceiverOptions.from_env()
    if not isinstance(env.store, str):
        raise ConfigError("store", "give --store or set ILP_RECEIVER_STORE")
    return env.store


def _keygen(args: argparse.Namespace) -> int:
    from ..webhooks.signing import generate_ed25519_key, generate_hmac_secret

    out = Path(args.out)
    if args.hmac:
        secret = generate_hmac_secret()
        public = None
    else:
        secret, public = generate_ed25519_key()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError("--out", f"{out} exists; keys are never overwritten") from None
    except OSError as exc:
        raise ConfigError("--out", f"cannot create {out}: {type(exc).__name__}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret + "\n")
    report: dict[str, Any] = {"key_file": str(out.resolve())}
    if public is not None:
        report["public_key"] = public
        report["scheme"] = "v1a (Ed25519)"
    else:
        report["scheme"] = "v1 (HMAC-SHA256): consumers need the secret in the file"
    print(json.dumps(report), flush=True)
    return 0


async def _operate(args: argparse.Namespace) -> int:
    from ..stores import open_store

    async with open_store(_store_spec(args)) as store:
        if not store.supports_outbox:
            raise ConfigError("store", f"{type(store).__name__} has no webhook outbox")
        if args.action == "list":
            if not 1 <= args.limit <= 10_000:
                raise ConfigError("--limit", "must be in 1..10000")
            for event in await store.outbox_list(args.state, args.limit):
                print(json.dumps(event.summary()), flush=True)
            return 0
        if args.action == "replay":
            if await store.outbox_replay(args.event_id):
                print(json.dumps({"replayed": args.event_id}), flush=True)
                return 0
            print(json.dumps({"error": "no such event", "id": args.event_id}), flush=True)
            return 1
        if args.action == "purge":
            purged = await store.outbox_purge(args.older_than)
            print(json.dumps({"purged": purged, "older_than": args.older_than}), flush=True)
            return 0
        print(json.dumps(await store.outbox_counts()), flush=True)
        return 0


def _purge_age(args: argparse.Namespace) -> float:
    """``--older-than`` over ``$ILP_RECEIVER_WEBHOOK_DEAD_RETENTION`` (checked)."""
    from ..options import ReceiverOptions

    env = ReceiverOptions.from_env()
    if args.older_than is None:
        return env.webhook_dead_retention
    return env.replace_from(
        {"webhook_dead_retention": (args.older_than, "--older-than")}
    ).webhook_dead_retention


def _dispatcher_config(args: argparse.Namespace) -> WebhookConfig:
    """The dispatcher's settings: flags over the ``ILP_RECEIVER_WEBHOOK_*`` environment
    (the key file is read here, before the event loop starts)."""
    from ..options import ReceiverOptions
    from ..webhooks.dispatcher import WebhookConfig

    settings: dict[str, tuple[object, str]] = {"webhook_dispatch": (True, "dispatch")}
    if args.url:
        settings["webhook_url"] = (args.url, "--url")
    if args.key_file is not None:
        settings["webhook_key_file"] = (args.key_file, "--key-file")
    if args.max_age is not None:
        settings["webhook_max_age"] = (args.max_age, "--max-age")
    if args.dead_retention is not None:
        settings["webhook_dead_retention"] = (args.dead_retention, "--dead-retention")
    base = ReceiverOptions.from_env().replace_from(settings).webhook_config()
    if base is None:
        raise ConfigError("--url", "give --url or set ILP_RECEIVER_WEBHOOK_URL")
    return WebhookConfig(
        base.urls,
        base.keys,
        max_age=base.max_age,
        timeout=args.timeout,
        concurrency=args.concurrency,
        lease=args.lease,
        dead_retention=base.dead_retention,
    )


def _admin_token(args: argparse.Namespace) -> tuple[str, str]:
    """The admin API's token and the setting it came from."""
    if args.admin_token_file is not None:
        try:
            token = Path(args.admin_token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"cannot read it: {type(exc).__name__}"
            raise ConfigError("--admin-token-file", problem) from None
        return token, "--admin-token-file"
    token = os.environ.get("ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN", "").strip()
    return token, "ILP_RECEIVER_WEBHOOK_ADMIN_TOKEN"


async def _run(args: argparse.Namespace, config: WebhookConfig) -> int:
    from ..stores import open_store
    from ..webhooks.dispatcher import WebhookDispatcher
    from .receive import emit, wait_for_signal

    spec = _store_spec(args)
    log.info("balance store: %s", describe_store(spec))
    async with open_store(spec) as store:
        dispatcher = WebhookDispatcher(store, config)
        if args.once:
            total = 0
            while claimed := await dispatcher.run_once():
                total += claimed
            await dispatcher.stop()
            emit("done", attempted=total, **await store.outbox_counts())
            return 0
        runner = None
        admin_url = None
        if args.admin_port is not None:
            runner, admin_url = await _start_admin(args, dispatcher)
        await dispatcher.start()
        try:
            emit(
                "ready",
                store=describe_store(spec),
                endpoints=len(config.urls),
                worker=dispatcher.worker,
                admin=admin_url,
            )
            await wait_for_signal()
        finally:
            await dispatcher.stop()
            if runner is not None:
                await runner.cleanup()
        emit("stopped")
        return 0


async def _start_admin(args: argparse.Namespace, dispatcher: Any) -> tuple[Any, str]:
    token, setting = args.admin_token
    return await start_webhook_admin(
        dispatcher, args.admin_host, args.admin_port, token, setting, "--admin-port"
    )


async def start_webhook_admin(
    dispatcher: Any, host: str, port: int, token: str, token_setting: str, port_setting: str
) -> tuple[Any, str]:
    """Serve the webhook admin API of ``dispatcher`` on ``host:port`` (bounded
    listener); returns the runner and the base URL.  A bad token is a ConfigError
    naming ``token_setting``, a port that cannot be bound one naming ``port_setting``."""
    from aiohttp import web

    from ..links.listener import ServerLimits, start_listener
    from ..webhooks.admin import create_webhook_admin_app

    try:
        app = create_webhook_admin_app(dispatcher, token)
    except ConfigError as exc:
        raise ConfigError(token_setting, exc.problem) from None
    limits = ServerLimits()
    runner = web.AppRunner(app, access_log=None, **limits.runner_options())
    await runner.setup()
    try:
        listener = await start_listener(runner, host, port, limits, setting=port_setting)
    except ConfigError:
        await runner.cleanup()
        raise
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{listener.port}/"


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    if args.action == "keygen":
        return _keygen(args)
    if args.action == "run":
        config = _dispatcher_config(args)
        args.admin_token = _admin_token(args) if args.admin_port is not None else ("", "")
        return asyncio.run(_run(args, config))
    if args.action == "purge":
        args.older_than = _purge_age(args)
    return asyncio.run(_operate(args))
