"""``MIDDLEWARE = [..., "ilp_receiver_django.middleware.IlpReceiverMiddleware"]``.

Charges ``ILP_RECEIVER['PAID']`` path rules once the URL is resolved (``process_view``),
settles every paid request -- ``Pay`` / ``Pay-Balance`` on the response, the refund rule
of :mod:`ilp_receiver.web.lifecycle`, a watched streaming body -- and, with Web
Monetization on, sets the ``__monetizer`` visitor cookie.  Sync and async (ASGI)
capable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from ilp_receiver.web import lifecycle

from . import (
    LOOKUP_KEY,
    MIDDLEWARE_KEY,
    PRICE_ATTR,
    _monetizer_settings,
    body_reader,
    get_monetization,
    get_service,
    request_facts,
    to_response,
)

__all__ = ["IlpReceiverMiddleware"]


class IlpReceiverMiddleware:
    """The ilp-receiver middleware (see the module docstring)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self.monetization = _monetizer_settings() is not None

    def __call__(self, request: HttpRequest) -> Any:
        """Run the request through the paywall's settling."""
        if self.is_async:
            return self._acall(request)
        self._before(request)
        response: HttpResponseBase = self.get_response(request)
        return self._after(request, response)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        self._before(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        try:
            response = await get_response(request)
        except BaseException:
            paid = lifecycle.charge_of(request.META)
            if paid is not None:
                await sync_to_async(lifecycle.fail_sync, thread_sensitive=False)(
                    get_service(), paid
                )
            raise
        return await sync_to_async(self._after, thread_sensitive=False)(request, response)

    def _before(self, request: HttpRequest) -> None:
        request.META[MIDDLEWARE_KEY] = True
        if self.monetization:
            service = get_monetization()
            request.META[LOOKUP_KEY] = service.lookup(
                request_facts(request), secure=request.is_secure()
            )

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        """Charge a ``PAID`` path rule now that a view will run (no charge for 404); not
        for a view with a ``@paid`` of its own, nor for a method a class-based view does
        not serve (Django answers 405)."""
        service = get_service()
        if not service.routes or getattr(view_func, PRICE_ATTR, None) is not None:
            return None
        method = (request.method or "GET").upper()
        rule = service.rule_for(method, request.path_info)
        if rule is None:
            return None
        if not _allows(view_func, method):
            return None  # Django answers 405; nothing is charged
        reply = service.enter(
            request.META,
            request_facts(request),
            rule.price,
            pay_method=rule.pay_method,
            read_body=body_reader(request),
        )
        return None if reply is None else to_response(reply)

    def _after(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        lookup = request.META.get(LOOKUP_KEY)
        cookie = getattr(lookup, "set_cookie", None)
        if cookie is not None:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(cookie)
            for name, morsel in parsed.items():
                response.cookies[name] = morsel
        paid = lifecycle.charge_of(request.META)
        if paid is None:
            return response
        service = get_service()
        for name, value in lifecycle.respond_sync(service, paid, response.status_code).items():
            response[name] = value
        if getattr(response, "streaming", False) and paid.state == "kept":
            _watch(response, service, paid)
        return response


def _allows(view_func: Callable[..., Any], method: str) -> bool:
    """Whether the view serves ``method``, as far as can be seen before running it: a
    class-based view's handler methods, and the list of Django's
    ``require_http_methods`` (``require_GET``, ...) anywhere in the decorator chain."""
    view_class = getattr(view_func, "view_class", None)
    if view_class is not None:
        names = getattr(view_class, "http_method_names", ())
        return method.lower() in names and hasattr(view_class, method.lower())
    view: Any = view_func
    while view is not None:
        allowed = _required_methods(view)
        if allowed is not None:
            return method in allowed
        view = getattr(view, "__wrapped__", None)
    return True


def _required_methods(view: Any) -> list[str] | None:
    # require_http_methods(request_method_list) keeps the list in its inner function's
    # closure (django/views/decorators/http.py)
    code = getattr(view, "__code__", None)
    closure = getattr(view, "__closure__", None)
    if code is None or not closure:
        return None
    for name, cell in zip(code.co_freevars, closure, strict=False):
        if name == "request_method_list":
            value = cell.cell_contents
            if isinstance(value, list | tuple) and all(isinstance(m, str) for m in value):
                return [m.upper() for m in value]
    return None


def _watch(response: Any, service: Any, paid: lifecycle.PaidRequest) -> None:
    """Refund when the streamed body fails (not when the client goes away)."""
    if getattr(response, "is_async", False):

        async def on_failure() -> None:
            await sync_to_async(lifecycle.fail_sync, thread_sensitive=False)(service, paid)

        response.streaming_content = lifecycle.watch_async_body(
            response.streaming_content, on_failure
        )
    else:
        response.streaming_content = lifecycle.watch_body(
            response.streaming_content, lambda: lifecycle.fail_sync(service, paid)
        )
