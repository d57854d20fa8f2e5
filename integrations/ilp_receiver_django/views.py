"""The views :mod:`ilp_receiver_django.urls` routes to: the payment pointer(s), the Web
Monetization endpoints and the health report."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.views.decorators.csrf import csrf_exempt

from . import get_monetization, get_service, request_facts, to_response

__all__ = ["health", "monetization", "payment_pointer"]


@csrf_exempt
def payment_pointer(request: HttpRequest, name: str | None = None) -> HttpResponse:
    """SPSP for ``/.well-known/pay`` (``name`` None) or a named pointer ``/<name>``:
    STREAM or PSK2 by ``Accept``, ``OPTIONS`` with CORS, ``503`` until the uplink is up."""
    service = get_service()
    path = "/.well-known/pay" if name is None else "/" + name
    headers = request.headers
    reply = service.spsp(
        (request.method or "GET").upper(),
        path,
        headers.get("Accept"),
        receipt_nonce=headers.get("Receipt-Nonce"),
        receipt_secret=headers.get("Receipt-Secret"),
    )
    if reply is None:
        # a named pointer answers SPSP queries only (the path belongs to the pointer)
        return HttpResponse(
            b'{"id":"NotAcceptable","message":"ask with Accept: application/spsp4+json"}',
            status=406,
            content_type="application/json",
        )
    return to_response(reply)


@csrf_exempt
def monetization(request: HttpRequest, rest: str = "") -> HttpResponse:
    """``<prefix>/client.js``, ``<prefix>/<visitor id>`` (eras A, B) and ``<prefix>``
    (era C, ``Web-Monetization-Id``); ``OPTIONS`` with CORS; with a wallet address,
    ``<prefix>/wm.js``, ``POST <prefix>/incoming-payments`` and ``<prefix>/balance``."""
    service = get_monetization()
    facts = request_facts(request)
    limit = service.report_limit(facts)
    if limit is not None:
        # a monetization event's report (POST <prefix>/incoming-payments): at most
        # limit + 1 bytes are read
        return to_response(service.handle_report(facts, request.read(limit + 1)))
    reply = service.handle(facts)
    if reply is None:
        return HttpResponseNotFound()
    return to_response(reply)


def health(request: HttpRequest) -> HttpResponse:
    """The receiver's health report (``HEALTH_PATH``): uplink, address, shared account."""
    service = get_service()
    path = service.health_path or request.path_info
    reply = service.health((request.method or "GET").upper(), path)
    return HttpResponseNotFound() if reply is None else to_response(reply)
