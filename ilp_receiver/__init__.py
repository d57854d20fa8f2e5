"""ilp-receiver: get paid over Interledger from any Python web app."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
