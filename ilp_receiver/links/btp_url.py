"""BTP uplink URLs: ``btp+ws://[user]:token@host:port/path`` and ``btp+wss://...``
(spec ``03-btp.md``, "Connection URLs")."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

__all__ = ["BtpUrl", "parse_btp_url"]


@dataclass(frozen=True, slots=True)
class BtpUrl:
    """A parsed ``btp+ws://user:token@host:port/path`` URL."""

    ws_url: str
    username: str | None
    token: str

    def __repr__(self) -> str:  # never show the token
        return f"BtpUrl(ws_url={self.ws_url!r}, username={self.username!r}, token='***')"


def parse_btp_url(url: str) -> BtpUrl:
    """Split a BTP URL into the WebSocket URL and the credentials sent in the auth message.

    "The client drops the ``btp+`` prefix and the credentials and opens
    ``ws://host:port/path``; USER and TOKEN are sent inside the first BTP message."
    """
    parts = urlsplit(url)
    if parts.scheme not in ("btp+ws", "btp+wss"):
        raise ConfigError("uplink", f"a BTP URL starts with btp+ws:// or btp+wss://, got {url!r}")
    if not parts.hostname:
        raise ConfigError("uplink", "the BTP URL has no host")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError("uplink", f"bad port in the BTP URL: {exc}") from None
    netloc = host if port is None else f"{host}:{port}"
    ws_url = f"{parts.scheme[4:]}://{netloc}{parts.path or '/'}"
    if parts.query:
        ws_url += f"?{parts.query}"
    username = unquote(parts.username) if parts.username else None
    token = unquote(parts.password) if parts.password else ""
    return BtpUrl(ws_url=ws_url, username=username, token=token)
