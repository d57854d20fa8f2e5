"""A framework-neutral HTTP reply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HttpReply", "json_reply"]


@dataclass(frozen=True, slots=True)
class HttpReply:
    """Status, headers and body of an HTTP response, independent of any framework."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, if set."""
        return self.headers.get("Content-Type")


def json_reply(
    status: int,
    payload: Any,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> HttpReply:
    """An HttpReply whose body is ``payload`` as compact JSON."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    all_headers = {"Content-Type": content_type}
    if headers:
        all_headers.update(headers)
    return HttpReply(status, all_headers, body)
