"""Subcommands of the ``ilp-receiver`` CLI.

Each module here defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (synchronous; it may call ``asyncio.run`` itself).  ``cli.py`` lists
the modules in :data:`COMMANDS`.
"""

from __future__ import annotations

COMMANDS: tuple[str, ...] = (
    "demo",
    "receive",
    "connector",
    "query",
    "pay",
    "fetch",
    "webhooks",
)
