"""Pick a transport from an uplink URL."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Link

__all__ = ["open_link"]


def open_link(url: str, **options: Any) -> Link:
    """A :class:`Link` for ``url``.

    * ``btp+ws://user:token@host:port/path`` and ``btp+wss://…``: BTP/2.0 over WebSocket;
      add ``idempotent=True`` (or the URL query ``?profile=btp2i``) for BTP/2.0-I.
    * ``http+oer://[NAME:]TOKEN@host:port/path?listen=[LHOST:]LPORT`` and ``https+oer://…``:
      ILP over HTTP / HTTP-OER-SYNC (:class:`~ilp_receiver.links.http.HttpSyncLink`); add
      ``&request_ids=1`` for the PR 382 ``/ilp/<request-id>`` form, ``&mode=callback`` for
      the RFC 35 draft 3 callback mode
      (:class:`~ilp_receiver.links.http.HttpCallbackLink`).
    * ``http+oer-async://[NAME:]TOKEN@host:port/base?listen=[LHOST:]LPORT`` and
      ``https+oer-async://…``: HTTP-OER-ASYNC (:class:`~ilp_receiver.links.http.HttpAsyncLink`).

    Further HTTP query options (``incoming_token``, ``listen_path``, ``bearer``,
    ``destination_header``, ``callback_url``, ``peer_callback_url``) are described in
    :mod:`ilp_receiver.links.http`.

    Options are passed to the link's constructor.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("btp+ws", "btp+wss"):
        from .btp_client import BtpClientLink

        if url.endswith("?profile=btp2i"):
            url = url[: -len("?profile=btp2i")]
            options.setdefault("idempotent", True)
        return BtpClientLink(url, **options)
    if scheme in ("http+oer", "https+oer"):
        from .http import HttpCallbackLink, HttpSyncLink, parse_http_url

        if parse_http_url(url).mode == "callback":
            return HttpCallbackLink.from_url(url, **options)
        return HttpSyncLink.from_url(url, **options)
    if scheme in ("http+oer-async", "https+oer-async"):
        from .http import HttpAsyncLink

        return HttpAsyncLink.from_url(url, **options)
    raise ConfigError(
        "uplink",
        f"unsupported uplink URL scheme {scheme!r}: use btp+ws://, btp+wss://, "
        "http+oer://, https+oer://, http+oer-async:// or https+oer-async://",
    )
