"""Flask adapter for ilp-receiver: ``init_app``, ``app.extensions``, ``@paid(price)``.

::

    from flask import Flask
    from ilp_receiver_flask import IlpReceiver, paid

    app = Flask(__name__)
    ilp = IlpReceiver(app)      # settings from app.config / ILP_RECEIVER_* env variables

    @app.post("/upload")
    @paid(10)
    def upload(): ...

Flask is synchronous, so the receiver is the sync :class:`~ilp_receiver.Receiver`: the
one asyncio implementation runs on a background event-loop thread (the portal) and each
request thread blocks only on its own call.  The receiver starts on the first request
*in each process* (so gunicorn ``--preload`` workers each connect their own uplink after
the fork), or when :meth:`IlpReceiver.start` is called, and stops at interpreter exit.
With the connector unreachable the app still starts: paid routes and the payment pointer
answer ``503 UplinkUnavailable`` (``Retry-After``) until the uplink connects;
``ILP_RECEIVER_REQUIRE_UPLINK`` makes :class:`IlpReceiver` check the uplink at set-up and
raise :class:`~ilp_receiver.errors.UplinkUnavailableError` with the reason instead.

Configuration: every setting of :mod:`ilp_receiver.options` as ``app.config`` key
``ILP_RECEIVER_<NAME>`` -- ``UPLINK`` (a URL, a ``Link``, or a function returning one,
called in each process), ``SECRET`` or ``SECRET_FILE`` (created, mode 0600, when
missing), ``STORE``, ``PAID`` (``{path: price}`` or :class:`~ilp_receiver.paywall.
PaidRoute` s), ``POINTERS``, ``WELL_KNOWN``, ``MAX_BALANCE``, ``NAME``,
``SPSP_MAX_AGE``, ``ON_PAYMENT``, ``PAY_METHOD``, ``PAY_WAIT``, ``REQUIRE_UPLINK``,
``HEALTH_PATH``.  A key that is absent (or None) falls back to the environment variable
of the same name, then to the default; keywords given to :class:`IlpReceiver` win over
both.

Paid requests follow :mod:`ilp_receiver.web.lifecycle`: path rules apply only to
requests that reach a view (no charge for 404/405) without a ``@paid`` of its own, one
charge per request, ``Pay`` / ``Pay-Balance`` on whatever answers, and the one refund
rule (the charge stands for an answer below 400 whose body did not fail).

Web Monetization and Web Payments (``docs/web-monetization.md``, ``docs/web-payments.md``)::

    from ilp_receiver_flask import Monetization, monetized

    monetization = Monetization(app)        # after IlpReceiver(app)

    @app.get("/article/body")
    @monetized(100)                          # debit 100 from the visitor's bucket, or 402
    def body(): ...

:class:`Monetization` sets the ``__monetizer`` visitor cookie, serves
``/__monetizer/client.js``, the era-A SPSP endpoint ``/__monetizer/<id>``, the era-C one
``/__monetizer`` (``Web-Monetization-Id``), order pointers ``/orders/<id>`` when given an
:class:`~ilp_receiver.webpayments.OrderBook`, and the Jinja globals
``monetization_meta()``, ``monetization_link()``, ``monetization_script()``,
``monetization_pointer()`` (filters ``monetization_meta`` and ``monetization_link``).
Today's Web Monetization (a ``<link rel="monetization">`` to the site's Open Payments
wallet address, visitors credited from their verified incoming payments):
``ILP_MONETIZATION_WALLET_ADDRESS`` switches it on (``ASSET_CODE``, ``ASSET_SCALE``,
``RESOURCE_SERVERS``, ``GNAP_KEY``, ``GNAP_KEY_ID``, ``ALLOW_PRIVATE``,
``ALLOW_INSECURE`` likewise, each falling back
to the environment variable of the same name); the Jinja globals
``monetization_wallet_link()`` and ``monetization_wallet_script()`` put the link and the
client script (``/__monetizer/wm.js``) into a page.
Configuration: ``ILP_MONETIZATION_SECRET`` (default ``SECRET_KEY``),
``ILP_MONETIZATION_MAX_BALANCE``, ``ILP_MONETIZATION_IDLE_EXPIRY``,
``ILP_MONETIZATION_COOKIE``, ``ILP_MONETIZATION_PREFIX``, ``ILP_MONETIZATION_POINTER``
(what the tags name; default: this site's ``/__monetizer``).

All logic lives in :mod:`ilp_receiver.web.wsgi`, :mod:`ilp_receiver.web.lifecycle`,
:mod:`ilp_receiver.paywall` and :mod:`ilp_receiver.web.monetization_endpoints`; this
module only speaks Flask.
"""

from __future__ import annotations

import atexit
import functools
from collections.abc import Callable
from typing import Any, Final, TypeVar, Unpack

try:
    from flask import Flask, Response, current_app, g, has_app_context, request
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("ilp_receiver_flask needs Flask: pip install 'ilp-receiver[flask]'") from exc

from markupsafe import Markup
from werkzeug.exceptions import RequestEntityTooLarge

from ilp_receiver.http_reply import HttpReply
from ilp_receiver.monetization import (
    CLIENT_SCRIPT_NAME,
    COOKIE_NAME,
    ENDPOINT_PREFIX,
    OP_CLIENT_SCRIPT_NAME,
    Monetizer,
    Visitor,
    link_tag,
    meta_tag,
    script_tag,
    site_pointer,
)
from ilp_receiver.monetization_verifier import (
    VERIFIER_SETTINGS,
    IncomingPaymentVerifier,
    verifier_from_settings,
)
from ilp_receiver.open_payments import monetization_link_tag
from ilp_receiver.options import ENV_PREFIX, ReceiverOptions, ReceiverSettings
from ilp_receiver.paywall import PaidRoute, PayMethod, Price, check_pay_method
from ilp_receiver.receiver import Receiver
from ilp_receiver.web import lifecycle
from ilp_receiver.web.monetization_endpoints import (
    MonetizationService,
    OrderEndpoints,
    SyncMonetizationService,
    SyncOrderEndpoints,
    VisitorLookup,
)
from ilp_receiver.web.wsgi import ReceiverSource, SyncIlpService, facts_from_environ
from ilp_receiver.webpayments import OrderBook

__all__ = [
    "EXTENSION_KEY",
    "MONETIZATION_KEY",
    "PRICE_ATTR",
    "WEB_PAYMENTS_KEY",
    "IlpReceiver",
    "Monetization",
    "WebPayments",
    "body_reader",
    "current_visitor",
    "get_monetization",
    "get_service",
    "get_web_payments",
    "monetized",
    "paid",
    "to_response",
]

#: ``app.extensions[EXTENSION_KEY]`` holds the app's :class:`SyncIlpService`.
EXTENSION_KEY = "ilp_receiver"
#: The attribute :func:`paid` sets on the views it wraps (their price).
PRICE_ATTR: Final = "__ilp_price__"
_METHOD_ATTR: Final = "__ilp_pay_method__"

F = TypeVar("F", bound=Callable[..., Any])


def get_service(app: Flask | None = None) -> SyncIlpService:
    """The ilp-receiver service of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        service: SyncIlpService = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "ilp-receiver is not initialised on this app: call IlpReceiver(app) or init_app"
        ) from None
    return service


def to_response(reply: HttpReply) -> Response:
    """A Flask response for a neutral reply."""
    response: Response = current_app.response_class(
        reply.body, status=reply.status, headers=reply.headers
    )
    return response


def body_reader(limit: int) -> int | None:
    """Read the current request's body through a counting reader (at most ``limit`` + 1
    bytes; a chunked body too) and keep it for the view (``request.get_data()``,
    ``.json``, ``.form``); how many bytes arrived, or None when more than ``limit``.

    Public Flask / Werkzeug only: the request's own ``max_content_length`` (settable
    per request since Flask 3.1) is ``limit`` + 1 while ``request.get_data()`` reads and
    caches the body, so Werkzeug's input stream stops one byte past the limit; then it is
    put back.  A smaller ``MAX_CONTENT_LENGTH`` of the app still applies: a body above
    it gets Werkzeug's ``413``, as it would without the paywall."""
    previous = request.max_content_length
    ceiling = limit if previous is None else min(limit, previous)
    request.max_content_length = ceiling + 1
    try:
        size = len(request.get_data(cache=True))
    except RequestEntityTooLarge:
        # a Content-Length above the ceiling is refused before any byte is read
        size = ceiling + 1
    finally:
        request.max_content_length = previous
    if size > ceiling and ceiling < limit:
        raise RequestEntityTooLarge()  # the app's own MAX_CONTENT_LENGTH
    return size if size <= limit else None


class IlpReceiver:
    """The Flask extension: a receiver, its payment pointer and the paywall.

    ``receiver``: a sync :class:`~ilp_receiver.Receiver` or a function creating one
    (otherwise one is built from the settings).  Settings: ``options`` and keywords
    (:class:`~ilp_receiver.options.ReceiverSettings`), over ``ILP_RECEIVER_*``
    ``app.config`` keys, over the environment.  One instance may serve several apps
    (``init_app``); each app's state is in ``app.extensions``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        receiver: ReceiverSource | None = None,
        options: ReceiverOptions | None = None,
        **settings: Unpack[ReceiverSettings],
    ) -> None:
        self._receiver = receiver
        self._options = options
        self._settings: dict[str, Any] = dict(settings)
        self._app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def options_for(self, app: Flask) -> ReceiverOptions:
        """The settings for ``app``: keywords over its config over the environment."""
        config = {
            key: value
            for key, value in ReceiverOptions.from_mapping(app.config, prefix=ENV_PREFIX).items()
            if value[0] is not None
        }
        return ReceiverOptions.from_settings(self._options, config=config, **self._settings)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``: the service, request hooks, exit handler.

        With ``require_uplink`` the uplink is tried now (connect, IL-DCP, disconnect):
        :class:`~ilp_receiver.errors.UplinkUnavailableError` when it cannot be reached.
        """
        options = self.options_for(app)
        source: ReceiverSource
        if self._receiver is not None:
            source = self._receiver
        else:
            options.check_uplink()
            source = options.sync_receiver
            if options.require_uplink:
                probe = options.sync_receiver()
                probe.start()
                probe.stop()
        service = SyncIlpService(source, options=options)
        app.extensions[EXTENSION_KEY] = service
        self._app = app
        app.before_request(_before_request)
        app.after_request(_after_request)
        app.teardown_request(_teardown_request)
        atexit.register(service.stop)

    def service(self, app: Flask | None = None) -> SyncIlpService:
        """The service of ``app``: the current app, else the last one initialised."""
        if app is None and not has_app_context():
            app = self._app
        return get_service(app)

    def start(self, app: Flask | None = None) -> None:
        """Start the receiver in this process now (e.g. in gunicorn's ``post_fork``)."""
        self.service(app).start()

    def stop(self, app: Flask | None = None) -> None:
        """Stop the receiver of this process."""
        self.service(app).stop()

    def receiver(self, app: Flask | None = None) -> Receiver:
        """The started sync receiver of ``app`` in this process."""
        return self.service(app).receiver

    def balance(self, account: str, app: Flask | None = None) -> int:
        """The balance of ``account``."""
        return self.service(app).balance(account)


def _own_paywall() -> tuple[Price, PayMethod | None] | None:
    """The price and pay method of the current view's ``@paid``, if it has one."""
    if request.endpoint is None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    price: Price | None = getattr(view, PRICE_ATTR, None)
    if price is None:
        return None
    return price, getattr(view, _METHOD_ATTR, None)


def _before_request() -> Response | None:
    service = get_service()
    method, path = request.method, request.path
    if path in service.mount.paths:
        headers = request.headers
        reply = service.spsp(
            method,
            path,
            headers.get("Accept"),
            receipt_nonce=headers.get("Receipt-Nonce"),
            receipt_secret=headers.get("Receipt-Secret"),
        )
        if reply is not None:
            return to_response(reply)
    if service.health_path is not None:
        reply = service.health(method, path)
        if reply is not None:
            return to_response(reply)
    if request.routing_exception is not None:
        return None  # 404 / 405: Flask answers; nothing is charged
    rule: PaidRoute | None
    own = _own_paywall()
    if own is not None:
        if method != "OPTIONS":
            return None  # the view's @paid charges it, at its price
        rule = PaidRoute(path, own[0], pay_method=own[1])  # Flask answers OPTIONS itself
    else:
        rule = service.rule_for(method, path) if service.routes else None
    if rule is None:
        return None
    reply = service.enter(
        request.environ,
        facts_from_environ(request.environ),
        rule.price,
        pay_method=rule.pay_method,
        read_body=body_reader,
    )
    return None if reply is None else to_response(reply)


def _after_request(response: Response) -> Response:
    paid = lifecycle.charge_of(request.environ)
    if paid is None:
        return response
    service = get_service()
    response.headers.update(lifecycle.respond_sync(service, paid, response.status_code))
    if response.is_streamed and paid.state == "kept":
        response.response = lifecycle.watch_body(
            response.iter_encoded(), lambda: lifecycle.fail_sync(service, paid)
        )
    return response


def _teardown_request(exc: BaseException | None) -> None:
    paid = lifecycle.charge_of(request.environ)
    if paid is not None and exc is not None:
        lifecycle.fail_sync(get_service(), paid)


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[F], F]:
    """Put a view behind the paywall at ``price`` (an int, a function of the request
    facts, or :func:`~ilp_receiver.paywall.per_byte`).

    ``OPTIONS`` to the view's URL (answered by Flask automatically) gets the 204 ``Pay``
    answer.  The extension's request hooks settle the request: ``Pay`` / ``Pay-Balance``
    on whatever answers (error pages included), a refund for answers of 400 or more
    (``abort(403)`` too) and for views that raise.  ``pay_method``: ``"psk2"`` or
    ``"stream"`` for this view (None: ``ILP_RECEIVER_PAY_METHOD``).
    """
    method = None if pay_method is None else check_pay_method(pay_method)

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            service = get_service()
            reply = service.enter(
                request.environ,
                facts_from_environ(request.environ),
                price,
                pay_method=method,
                read_body=body_reader,
            )
            if reply is not None:
                return to_response(reply)
            return current_app.ensure_sync(view)(*args, **kwargs)

        setattr(wrapper, PRICE_ATTR, price)
        setattr(wrapper, _METHOD_ATTR, method)
        return wrapper  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------------------------------
# Web Monetization and Web Payments

#: ``app.extensions[MONETIZATION_KEY]`` holds the app's :class:`SyncMonetizationService`.
MONETIZATION_KEY = "ilp_receiver.monetization"
_LOOKUP = "_ilp_receiver_visitor"


def get_monetization(app: Flask | None = None) -> SyncMonetizationService:
    """The monetization service of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        service: SyncMonetizationService = target.extensions[MONETIZATION_KEY]
    except KeyError:
        raise RuntimeError(
            "Web Monetization is not initialised on this app: call Monetization(app)"
        ) from None
    return service


class Monetization:
    """The Flask extension for Web Monetization (and Web Payments order pointers).

    Initialise it after :class:`IlpReceiver` (it uses that receiver and its store).
    ``monetizer``: a ready :class:`~ilp_receiver.monetization.Monetizer` (otherwise one
    is built from ``ILP_MONETIZATION_*`` config); ``orders``: an
    :class:`~ilp_receiver.webpayments.OrderBook` whose pointers are served at
    ``<orders_prefix>/<id>``.  For ``max_balance`` and 2018-style spliced addresses
    put ``monetizer.payment_hook`` into ``ILP_RECEIVER_ON_PAYMENT`` (with
    :func:`~ilp_receiver.paywall.combine_hooks`).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        monetizer: Monetizer | None = None,
        orders: OrderBook | None = None,
        orders_prefix: str = "/orders",
        cookie_max_age: int | None = None,
        verifier: IncomingPaymentVerifier | None = None,
    ) -> None:
        self.monetizer = monetizer
        self.orders = orders
        self.orders_prefix = orders_prefix
        self.cookie_max_age = cookie_max_age
        self.verifier = verifier
        self._app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``: the service, request hooks and Jinja helpers."""
        config = app.config
        config.setdefault("ILP_MONETIZATION_SECRET", None)
        config.setdefault("ILP_MONETIZATION_MAX_BALANCE", None)
        config.setdefault("ILP_MONETIZATION_IDLE_EXPIRY", None)
        config.setdefault("ILP_MONETIZATION_COOKIE", COOKIE_NAME)
        config.setdefault("ILP_MONETIZATION_PREFIX", ENDPOINT_PREFIX)
        config.setdefault("ILP_MONETIZATION_POINTER", None)
        monetizer = self.monetizer
        if monetizer is None:
            monetizer = self.monetizer = Monetizer(
                secret=config["ILP_MONETIZATION_SECRET"] or app.secret_key,
                cookie_name=config["ILP_MONETIZATION_COOKIE"],
                prefix=config["ILP_MONETIZATION_PREFIX"],
                max_balance=config["ILP_MONETIZATION_MAX_BALANCE"],
                idle_expiry=config["ILP_MONETIZATION_IDLE_EXPIRY"],
            )
        verifier = self.verifier
        if verifier is None:
            configured = {
                name: config.get(f"ILP_MONETIZATION_{name}") for name in VERIFIER_SETTINGS
            }
            verifier = self.verifier = verifier_from_settings(
                monetizer, configured, label="ILP_MONETIZATION_"
            )
        service = MonetizationService(
            monetizer,
            self.orders,
            orders_prefix=self.orders_prefix,
            cookie_max_age=self.cookie_max_age,
            verifier=verifier,
        )
        app.extensions[MONETIZATION_KEY] = SyncMonetizationService(get_service(app), service)
        self._app = app
        app.before_request(_monetization_before_request)
        app.after_request(_monetization_after_request)
        app.jinja_env.globals.update(
            monetization_meta=_meta_global,
            monetization_link=_link_global,
            monetization_script=_script_global,
            monetization_pointer=monetization_pointer,
            monetization_wallet_link=_wallet_link_global,
            monetization_wallet_script=_wallet_script_global,
        )
        app.jinja_env.filters["monetization_meta"] = _meta_filter
        app.jinja_env.filters["monetization_link"] = _link_filter

    def service(self, app: Flask | None = None) -> SyncMonetizationService:
        """The service of ``app``: the current app, else the last one initialised."""
        if app is None and not has_app_context():
            app = self._app
        return get_monetization(app)


def monetization_pointer() -> str:
    """What the tags name by default: ``ILP_MONETIZATION_POINTER`` or this site's pointer."""
    configured = current_app.config.get("ILP_MONETIZATION_POINTER")
    if configured:
        return str(configured)
    prefix = get_monetization().monetizer.prefix
    return site_pointer(request.host, prefix, scheme=request.scheme)


def _meta_global(pointer: str | None = None) -> Markup:
    return Markup(meta_tag(pointer or monetization_pointer()))  # noqa: S704 (escaped)


def _link_global(href: str | None = None) -> Markup:
    return Markup(link_tag(href or monetization_pointer()))  # noqa: S704 (escaped)


def _script_global() -> Markup:
    prefix = get_monetization().monetizer.prefix
    return Markup(script_tag(f"{prefix}/{CLIENT_SCRIPT_NAME}"))  # noqa: S704 (escaped)


def _wallet_link_global(href: str | None = None) -> Markup:
    service = get_monetization()
    verifier = service.service.verifier
    if href is None:
        if verifier is None:
            raise RuntimeError("set ILP_MONETIZATION_WALLET_ADDRESS (or give the wallet address)")
        href = verifier.wallet_address
    insecure = verifier is not None and verifier.fetcher.allow_insecure
    return Markup(monetization_link_tag(href, allow_insecure=insecure))  # noqa: S704 (escaped)


def _wallet_script_global() -> Markup:
    prefix = get_monetization().monetizer.prefix
    return Markup(script_tag(f"{prefix}/{OP_CLIENT_SCRIPT_NAME}"))  # noqa: S704 (escaped)


def _meta_filter(pointer: str) -> Markup:
    return Markup(meta_tag(str(pointer)))  # noqa: S704 (escaped)


def _link_filter(href: str) -> Markup:
    return Markup(link_tag(str(href)))  # noqa: S704 (escaped)


def _monetization_before_request() -> Response | None:
    service = get_monetization()
    facts = facts_from_environ(request.environ)
    limit = service.report_limit(facts)
    if limit is not None:
        # a monetization event's report: at most limit + 1 bytes are read
        size = body_reader(limit)
        body = request.get_data() if size is not None else b"\0" * (limit + 1)
        return to_response(service.handle_report(facts, body))
    reply = service.handle(facts)
    if reply is not None:
        return to_response(reply)
    setattr(g, _LOOKUP, service.lookup(facts, secure=request.is_secure))
    return None


def _monetization_after_request(response: Response) -> Response:
    lookup: VisitorLookup | None = g.get(_LOOKUP)
    if lookup is not None and lookup.set_cookie is not None:
        response.headers.add("Set-Cookie", lookup.set_cookie)
    return response


def _lookup() -> VisitorLookup:
    lookup: VisitorLookup | None = g.get(_LOOKUP)
    if lookup is None:
        service = get_monetization()
        lookup = service.lookup(facts_from_environ(request.environ), secure=request.is_secure)
        setattr(g, _LOOKUP, lookup)
    return lookup


def current_visitor() -> Visitor | None:
    """The visitor of the current request (None when its id was refused)."""
    return _lookup().visitor


def monetized(
    price: Price, *, wait: float | None = None, per_byte: int | None = None
) -> Callable[[F], F]:
    """Serve a view only to visitors whose bucket holds ``price``; debit it.

    Otherwise ``402`` (JSON), or with ``wait`` first wait up to that many seconds for
    the money; a tampered visitor cookie gets ``400``.  ``per_byte``: for a streamed
    response, charge that much per byte of each chunk before sending it and stop the
    stream when the bucket runs dry.  A view that raises is refunded.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            service = get_monetization()
            facts = facts_from_environ(request.environ)
            decision = service.check(facts, _lookup(), price, wait=wait)
            if decision.reply is not None:
                return to_response(decision.reply)
            try:
                rv = current_app.ensure_sync(view)(*args, **kwargs)
                response = current_app.make_response(rv)
            except BaseException:
                service.refund(decision)
                raise
            visitor = decision.visitor
            if per_byte and visitor is not None and response.is_streamed:
                response.response = service.metered(
                    response.iter_encoded(), visitor, per_byte, wait=wait
                )
            return response

        return wrapper  # type: ignore[return-value]

    return decorator


#: ``app.extensions[WEB_PAYMENTS_KEY]`` holds the app's :class:`SyncOrderEndpoints`.
WEB_PAYMENTS_KEY = "ilp_receiver.web_payments"


def get_web_payments(app: Flask | None = None) -> SyncOrderEndpoints:
    """The order endpoints of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        endpoints: SyncOrderEndpoints = target.extensions[WEB_PAYMENTS_KEY]
    except KeyError:
        raise RuntimeError(
            "Web Payments is not initialised on this app: call WebPayments(app)"
        ) from None
    return endpoints


class WebPayments:
    """The Flask extension serving per-order payment pointers at ``<prefix>/<id>``.

    Initialise it after :class:`IlpReceiver`.  Use ``get_web_payments().call(
    orders.is_paid, order_id)`` (or any :class:`~ilp_receiver.webpayments.OrderBook`
    coroutine method) from views.
    """

    def __init__(
        self, app: Flask | None = None, *, orders: OrderBook, prefix: str = "/orders"
    ) -> None:
        self.orders = orders
        self.prefix = prefix
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``: the endpoints and a request hook."""
        endpoints = OrderEndpoints(self.orders, prefix=self.prefix)
        app.extensions[WEB_PAYMENTS_KEY] = SyncOrderEndpoints(get_service(app), endpoints)
        app.before_request(_web_payments_before_request)


def _web_payments_before_request() -> Response | None:
    reply = get_web_payments().handle(facts_from_environ(request.environ))
    return to_response(reply) if reply is not None else None
