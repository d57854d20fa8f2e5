"""The conformance views (``tests/test_adapter_conformance.py``): the same routes as the
other frameworks' apps."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.template import RequestContext, Template
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from ilp_receiver.paywall import per_byte
from ilp_receiver_django import monetized, paid

CHUNK = b"x" * 1000


@paid(10)
def decorated(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"paid content")


async def _async_content(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"paid content")


async_decorated = paid(10)(_async_content)


def listed(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"paid content")


@paid(10)
def both(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"paid content")


@paid(10)
def raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


@paid(10)
def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("no")


@paid(10)
def missing(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"no such thing", status=404)


@paid(10)
def unavailable(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"try later", status=503)


def _chunks(count: int, fail: bool) -> Iterator[bytes]:
    for _ in range(count):
        yield CHUNK
    if fail:
        raise RuntimeError("the body failed")


@paid(10)
def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks(20, fail=False))


@paid(10)
def broken_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks(1, fail=True))


@csrf_exempt
@paid(per_byte(1, max_bytes=1000))
def body_bytes(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"read": len(request.body)})


def _echo(request: HttpRequest) -> JsonResponse:
    parsed = json.loads(request.body)
    return JsonResponse({"echo": parsed, "read": len(request.body)})


echo = csrf_exempt(paid(per_byte(1, max_bytes=1000))(_echo))
echo_listed = csrf_exempt(_echo)  # priced by the PAID rule


@require_GET
def premium(request: HttpRequest, item: str) -> JsonResponse:
    return JsonResponse({"premium": item})


class Report(View):
    """A class-based view: only GET (a path rule never charges another method)."""

    def get(self, request: HttpRequest, name: str) -> JsonResponse:
        return JsonResponse({"report": name})


@monetized(10)
def monetized_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"monetized content")


def page(request: HttpRequest) -> HttpResponse:
    template = Template(
        "{% load ilp_receiver %}{% monetization_meta %}{% monetization_script %}"
        "{% monetization_pointer %}"
    )
    return HttpResponse(template.render(RequestContext(request)))


def wallet_page(request: HttpRequest) -> HttpResponse:
    template = Template(
        "{% load ilp_receiver %}{% monetization_wallet_link %}{% monetization_wallet_script %}"
    )
    return HttpResponse(template.render(RequestContext(request)))
