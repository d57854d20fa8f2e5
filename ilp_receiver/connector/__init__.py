"""The bundled minimal connector: accounts, routing, CCP, services, admin, config.

Use it from Python (``Connector(load_config(path))``, ``await connector.start()``) or
as ``ilp-receiver connector --config FILE``; see ``docs/connector.md``.
"""

from __future__ import annotations

from .config import ConnectorConfig, config_from_mapping, load_config, render_config_table
from .node import Connector

__all__ = [
    "Connector",
    "ConnectorConfig",
    "config_from_mapping",
    "load_config",
    "render_config_table",
]
