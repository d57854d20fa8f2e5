"""Django adapter for ilp-receiver: settings, a middleware, ``@paid``, URLs, template tags.

::

    # settings.py
    INSTALLED_APPS = [..., "ilp_receiver_django"]
    MIDDLEWARE = [..., "ilp_receiver_django.middleware.IlpReceiverMiddleware"]
    ILP_RECEIVER = {"STORE": "balances.db", "PAID": {"/reports/*": 50}}
    # uplink and secret from the environment: ILP_RECEIVER_UPLINK, ILP_RECEIVER_SECRET_FILE

    # urls.py
    urlpatterns = [path("", include("ilp_receiver_django.urls")), ...]

    # views.py
    from ilp_receiver_django import paid

    @paid(10)
    def report(request): ...

Settings: ``ILP_RECEIVER`` is a dict of the settings of :mod:`ilp_receiver.options`
(``UPLINK``, ``SECRET`` or ``SECRET_FILE``, ``STORE``, ``PAID``, ``POINTERS``,
``WELL_KNOWN``, ``MAX_BALANCE``, ``NAME``, ``SPSP_MAX_AGE``, ``ON_PAYMENT``,
``PAY_METHOD``, ``PAY_WAIT``, ``REQUIRE_UPLINK``, ``HEALTH_PATH``; the lower-case
keyword names work too), over the ``ILP_RECEIVER_*`` environment variables; a bad value
is a :class:`~ilp_receiver.errors.ConfigError` naming ``ILP_RECEIVER['KEY']``.
``RECEIVER``: a function returning a sync :class:`~ilp_receiver.Receiver` instead (tests).
``ILP_MONETIZATION`` (a dict, possibly empty) turns Web Monetization on: ``SECRET``
(default ``SECRET_KEY``), ``MAX_BALANCE``, ``IDLE_EXPIRY``, ``COOKIE``, ``PREFIX``,
``POINTER`` (what the tags name).  ``WALLET_ADDRESS`` adds today's Web Monetization (the
site's Open Payments wallet; ``ASSET_CODE``, ``ASSET_SCALE``, ``RESOURCE_SERVERS``,
``GNAP_KEY``, ``GNAP_KEY_ID``, ``ALLOW_PRIVATE``, ``ALLOW_INSECURE``; each falls back to
the environment variable ``ILP_MONETIZATION_<NAME>``): ``/__monetizer/wm.js``, the
report endpoint and the tags ``{% monetization_wallet_link %}`` and
``{% monetization_wallet_script %}``.

The receiver runs on the sync facade's background event-loop thread and starts on the
first request **in each process** -- never in runserver's autoreloader parent, once in
each gunicorn worker, once in a uvicorn (ASGI) process -- or, with ``REQUIRE_UPLINK``,
is checked at start-up (``AppConfig.ready``: connect, IL-DCP, disconnect) so a server
without an uplink stops with :class:`~ilp_receiver.errors.UplinkUnavailableError` and
the reason.  Without it, paid views and the payment pointer answer ``503
UplinkUnavailable`` (``Retry-After``) until the uplink connects.

Paid requests follow :mod:`ilp_receiver.web.lifecycle`: ``PAID`` path rules apply to
requests that reach a view (``process_view``: no charge for 404, nor for a method a
class-based view does not serve) without a ``@paid`` of its own; one charge per request;
``Pay`` / ``Pay-Balance`` on whatever answers; the one refund rule (the charge stands
for an answer below 400 whose body did not fail).

All logic is :mod:`ilp_receiver.web.wsgi`, :mod:`ilp_receiver.web.lifecycle` and
:mod:`ilp_receiver.web.monetization_endpoints`; this package only speaks Django.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

try:
    from asgiref.sync import iscoroutinefunction, sync_to_async
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import setting_changed
    from django.http import HttpRequest, HttpResponse, RawPostDataException
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ilp_receiver_django needs Django: pip install 'ilp-receiver[django]'"
    ) from exc

from ilp_receiver.errors import ConfigError
from ilp_receiver.http_reply import HttpReply
from ilp_receiver.monetization import COOKIE_NAME, ENDPOINT_PREFIX, Monetizer, Visitor
from ilp_receiver.monetization_verifier import VERIFIER_SETTINGS, verifier_from_settings
from ilp_receiver.options import ReceiverOptions
from ilp_receiver.paywall import (
    Price,
    RequestFacts,
    check_pay_method,
    combine_hooks,
    paywall_payment_hook,
)
from ilp_receiver.receiver import Receiver
from ilp_receiver.web.monetization_endpoints import (
    MonetizationService,
    SyncMonetizationService,
    VisitorLookup,
)
from ilp_receiver.web.wsgi import ReceiverSource, SyncIlpService

__all__ = [
    "MIDDLEWARE_KEY",
    "PRICE_ATTR",
    "body_reader",
    "check_uplink",
    "current_visitor",
    "get_monetization",
    "get_service",
    "monetized",
    "paid",
    "receiver_options",
    "request_facts",
    "to_response",
]

#: The attribute :func:`paid` sets on the views it wraps (their price).
PRICE_ATTR: Final = "__ilp_price__"
_METHOD_ATTR: Final = "__ilp_pay_method__"
#: Set in ``request.META`` by the middleware (the decorators need it).
MIDDLEWARE_KEY: Final = "ilp_receiver.middleware"
#: Where the middleware keeps the request's :class:`VisitorLookup`.
LOOKUP_KEY: Final = "ilp_receiver.visitor"

V = TypeVar("V", bound=Callable[..., Any])

_lock = threading.Lock()
_service: SyncIlpService | None = None
_monetization: SyncMonetizationService | None = None


def _label(key: str) -> str:
    return f"ILP_RECEIVER[{key!r}]"


def _settings_dict() -> dict[str, Any]:
    value = getattr(settings, "ILP_RECEIVER", None) or {}
    if not isinstance(value, Mapping):
        raise ConfigError("ILP_RECEIVER", "must be a dict of settings")
    return dict(value)


def receiver_options() -> ReceiverOptions:
    """The settings: ``settings.ILP_RECEIVER`` over the ``ILP_RECEIVER_*`` environment."""
    raw = _settings_dict()
    raw.pop("RECEIVER", None)
    raw.pop("receiver", None)
    config = {
        key: value
        for key, value in ReceiverOptions.from_mapping(raw, label=_label, strict=True).items()
        if value[0] is not None
    }
    return ReceiverOptions.from_settings(config=config)


def _monetizer_settings() -> dict[str, Any] | None:
    value = getattr(settings, "ILP_MONETIZATION", None)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError("ILP_MONETIZATION", "must be a dict of settings")
    return {str(key).upper(): item for key, item in value.items()}


def _build() -> tuple[SyncIlpService, SyncMonetizationService | None]:
    options = receiver_options()
    raw = _settings_dict()
    factory = raw.get("RECEIVER", raw.get("receiver"))
    monetization = _monetizer_settings()
    monetizer: Monetizer | None = None
    if monetization is not None:
        monetizer = Monetizer(
            secret=monetization.get("SECRET") or settings.SECRET_KEY,
            cookie_name=monetization.get("COOKIE", COOKIE_NAME),
            prefix=monetization.get("PREFIX", ENDPOINT_PREFIX),
            max_balance=monetization.get("MAX_BALANCE"),
            idle_expiry=monetization.get("IDLE_EXPIRY"),
        )
        if options.on_payment is paywall_payment_hook:
            # visitor buckets: max_balance and 2018-style spliced addresses
            options = options.replace(
                on_payment=combine_hooks(paywall_payment_hook, monetizer.payment_hook)
            )
    source: ReceiverSource
    if factory is not None:
        if not callable(factory):
            raise ConfigError(_label("RECEIVER"), "must be a function returning a Receiver")
        source = factory
    else:
        options.check_uplink()
        source = options.sync_receiver
    service = SyncIlpService(source, options=options)
    sync_monetization = None
    if monetizer is not None:
        assert monetization is not None  # the monetizer was built from it
        verifier = verifier_from_settings(
            monetizer,
            {name: monetization.get(name) for name in VERIFIER_SETTINGS},
            label="ILP_MONETIZATION.",
        )
        sync_monetization = SyncMonetizationService(
            service, MonetizationService(monetizer, verifier=verifier)
        )
    return service, sync_monetization


def get_service() -> SyncIlpService:
    """The process's :class:`~ilp_receiver.web.wsgi.SyncIlpService` (built from the
    settings on first use; its receiver starts on the first request of each process)."""
    global _service, _monetization
    service = _service
    if service is None:
        with _lock:
            if _service is None:
                _service, _monetization = _build()
            service = _service
    return service


def get_monetization() -> SyncMonetizationService:
    """The Web Monetization service (``settings.ILP_MONETIZATION`` must be set)."""
    get_service()
    if _monetization is None:
        raise ImproperlyConfigured(
            "Web Monetization is off: set ILP_MONETIZATION = {} (or its settings)"
        )
    return _monetization


def _reset(**kwargs: Any) -> None:
    """``setting_changed``: drop the service so the next request builds it afresh."""
    global _service, _monetization
    if kwargs.get("setting") not in ("ILP_RECEIVER", "ILP_MONETIZATION", "SECRET_KEY"):
        return
    with _lock:
        service, _service, _monetization = _service, None, None
    if service is not None:
        service.stop()


setting_changed.connect(_reset)


def _serving() -> bool:
    """Whether this process will serve requests (not a management command, not
    runserver's autoreloader parent)."""
    argv = sys.argv
    command = argv[1] if len(argv) > 1 else ""
    if command == "runserver":
        return os.environ.get("RUN_MAIN") == "true" or "--noreload" in argv
    program = os.path.basename(argv[0]) if argv else ""
    return program not in ("manage.py", "django-admin", "django-admin.py", "__main__.py")


def check_uplink() -> None:
    """With ``REQUIRE_UPLINK``: connect to the uplink, run IL-DCP and disconnect, so that
    a server without one stops at start-up; raises
    :class:`~ilp_receiver.errors.UplinkUnavailableError` with the reason.  Called by
    ``AppConfig.ready`` in processes that serve requests."""
    options = receiver_options()
    raw = _settings_dict()
    if not options.require_uplink or raw.get("RECEIVER", raw.get("receiver")) is not None:
        return
    options.check_uplink()
    probe: Receiver = options.sync_receiver()
    probe.start()
    probe.stop()


def to_response(reply: HttpReply) -> HttpResponse:
    """A Django response for a neutral reply."""
    response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers.items():
        response[name] = value
    return response


def request_facts(request: HttpRequest) -> RequestFacts:
    """The paywall's view of a Django request."""
    return RequestFacts.from_pairs(
        request.method or "GET", request.path_info, request.headers.items()
    )


def body_reader(request: HttpRequest) -> Callable[[int], int | None]:
    """Reads ``request``'s body for a body price and keeps it for the view
    (``request.body``, ``request.POST``, ``request.read()``).

    Public Django only: ``request.body``, once the ``Content-Length`` was checked against
    ``limit`` (the lifecycle answers ``413`` above it, without reading).  Under WSGI
    Django reads exactly ``Content-Length`` bytes (a chunked body arrives empty); under
    ASGI Django's handler has received the whole body (spooled to a temporary file past
    ``FILE_UPLOAD_MAX_MEMORY_SIZE``) before any middleware runs, and ``request.body``
    loads it -- Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` refuses one above that first.
    A body Django parsed already (a multipart form read by ``request.POST``) is counted
    by its ``Content-Length``, which is what Django read."""

    def read(limit: int) -> int | None:
        try:
            size = len(request.body)
        except RawPostDataException:
            declared = (request.META.get("CONTENT_LENGTH") or "").strip()
            if not (declared.isascii() and declared.isdigit()):
                raise  # read without a length to count it by: cannot be priced
            size = int(declared)
        return size if size <= limit else None

    return read


def _require_middleware(request: HttpRequest) -> None:
    if not request.META.get(MIDDLEWARE_KEY):
        raise ImproperlyConfigured(
            "@paid needs 'ilp_receiver_django.middleware.IlpReceiverMiddleware' in MIDDLEWARE"
        )


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[V], V]:
    """Put a view behind the paywall at ``price`` (an int, a function of the request
    facts, or :func:`~ilp_receiver.paywall.per_byte`); sync and async views.

    ``OPTIONS`` gets the ``204 Pay`` answer.  The middleware settles the request (``Pay``
    / ``Pay-Balance`` on whatever answers, the refund rule).  ``pay_method``: ``"psk2"``
    or ``"stream"`` for this view (None: ``ILP_RECEIVER['PAY_METHOD']``).
    """
    method = None if pay_method is None else check_pay_method(pay_method)

    def enter(request: HttpRequest) -> HttpReply | None:
        _require_middleware(request)
        return get_service().enter(
            request.META,
            request_facts(request),
            price,
            pay_method=method,
            read_body=body_reader(request),
        )

    def decorator(view: V) -> V:
        wrapper: Callable[..., Any]
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                reply = await sync_to_async(enter, thread_sensitive=False)(request)
                if reply is not None:
                    return to_response(reply)
                return await view(request, *args, **kwargs)

            wrapper = async_wrapper
        else:

            @functools.wraps(view)
            def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                reply = enter(request)
                if reply is not None:
                    return to_response(reply)
                return view(request, *args, **kwargs)

            wrapper = sync_wrapper
        setattr(wrapper, PRICE_ATTR, price)
        setattr(wrapper, _METHOD_ATTR, method)
        return wrapper  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------------------------------
# Web Monetization


def _lookup(request: HttpRequest) -> VisitorLookup:
    lookup = request.META.get(LOOKUP_KEY)
    if not isinstance(lookup, VisitorLookup):
        lookup = get_monetization().lookup(request_facts(request), secure=request.is_secure())
        request.META[LOOKUP_KEY] = lookup
    return lookup


def current_visitor(request: HttpRequest) -> Visitor | None:
    """The visitor of ``request`` (None when its id was refused)."""
    return _lookup(request).visitor


def monetized(price: Price, *, wait: float | None = None) -> Callable[[V], V]:
    """Serve a view only to visitors whose bucket holds ``price``; debit it.

    Otherwise ``402`` (JSON; ``MonetizationRequired`` on a first visit, with the new
    visitor cookie), or with ``wait`` first wait up to that many seconds for the money; a
    tampered visitor cookie gets ``400``.  A view that raises is refunded.
    """

    def decorator(view: V) -> V:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            service = get_monetization()
            decision = service.check(request_facts(request), _lookup(request), price, wait=wait)
            if decision.reply is not None:
                return to_response(decision.reply)
            try:
                return view(request, *args, **kwargs)
            except BaseException:
                service.refund(decision)
                raise

        return wrapper  # type: ignore[return-value]

    return decorator
