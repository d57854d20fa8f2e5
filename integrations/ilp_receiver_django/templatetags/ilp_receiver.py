"""``{% load ilp_receiver %}``: Web Monetization tags.

``{% monetization_meta %}`` (``<meta name="monetization" content="$host/__monetizer">``),
``{% monetization_link %}``, ``{% monetization_script %}`` (the client script) and
``{% monetization_pointer %}``; each takes an optional pointer (or script URL).  Today's
Web Monetization: ``{% monetization_wallet_link %}`` (``<link rel="monetization">`` to
``ILP_MONETIZATION['WALLET_ADDRESS']``, or the URL given) and
``{% monetization_wallet_script %}`` (``/__monetizer/wm.js``).  Without
one they name this site's ``/__monetizer`` (``ILP_MONETIZATION['POINTER']`` when set),
from the ``request`` in the context (``django.template.context_processors.request``).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from ilp_receiver.monetization import (
    CLIENT_SCRIPT_NAME,
    OP_CLIENT_SCRIPT_NAME,
    link_tag,
    meta_tag,
    script_tag,
    site_pointer,
)
from ilp_receiver.open_payments import monetization_link_tag

from .. import _monetizer_settings, get_monetization

register = template.Library()


def _pointer(context: Any) -> str:
    configured = (_monetizer_settings() or {}).get("POINTER")
    if configured:
        return str(configured)
    request = context.get("request")
    if request is None:
        raise template.TemplateSyntaxError(
            "monetization tags need the request in the context "
            "(django.template.context_processors.request) or ILP_MONETIZATION['POINTER']"
        )
    prefix = get_monetization().monetizer.prefix
    scheme = "https" if request.is_secure() else "http"
    return site_pointer(request.get_host(), prefix, scheme=scheme)


@register.simple_tag(takes_context=True)
def monetization_pointer(context: Any) -> str:
    """This site's Web Monetization pointer."""
    return _pointer(context)


@register.simple_tag(takes_context=True)
def monetization_meta(context: Any, pointer: str | None = None) -> SafeString:
    """``<meta name="monetization" content="...">`` (HTML-escaped)."""
    return mark_safe(meta_tag(pointer or _pointer(context)))  # noqa: S308 (escaped)


@register.simple_tag(takes_context=True)
def monetization_link(context: Any, href: str | None = None) -> SafeString:
    """``<link rel="monetization" href="...">`` (HTML-escaped)."""
    return mark_safe(link_tag(href or _pointer(context)))  # noqa: S308 (escaped)


@register.simple_tag
def monetization_script(src: str | None = None) -> SafeString:
    """``<script src="/__monetizer/client.js"></script>`` (HTML-escaped)."""
    prefix = get_monetization().monetizer.prefix
    return mark_safe(script_tag(src or f"{prefix}/{CLIENT_SCRIPT_NAME}"))  # noqa: S308 (escaped)


@register.simple_tag
def monetization_wallet_link(href: str | None = None) -> SafeString:
    """``<link rel="monetization" href="<wallet address>">``, checked and HTML-escaped."""
    verifier = get_monetization().service.verifier
    if href is None:
        if verifier is None:
            raise template.TemplateSyntaxError(
                "set ILP_MONETIZATION['WALLET_ADDRESS'] or give the wallet address"
            )
        href = verifier.wallet_address
    insecure = verifier is not None and verifier.fetcher.allow_insecure
    return mark_safe(monetization_link_tag(href, allow_insecure=insecure))  # noqa: S308 (escaped)


@register.simple_tag
def monetization_wallet_script(src: str | None = None) -> SafeString:
    """``<script src="/__monetizer/wm.js"></script>`` (today's Web Monetization)."""
    prefix = get_monetization().monetizer.prefix
    return mark_safe(script_tag(src or f"{prefix}/{OP_CLIENT_SCRIPT_NAME}"))  # noqa: S308
