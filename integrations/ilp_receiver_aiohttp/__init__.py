"""aiohttp adapter for ilp-receiver: ``(request, handler)`` middleware, ``AppKey``,
``cleanup_ctx`` and ``@paid(price)``.

::

    from aiohttp import web
    from ilp_receiver_aiohttp import paid, setup

    @paid(10)
    async def upload(request: web.Request) -> web.Response: ...

    app = web.Application()
    app.router.add_post("/upload", upload)
    setup(app)        # settings from ILP_RECEIVER_* (or keywords: uplink=..., store=...)

:func:`setup` stores the receiver under :data:`RECEIVER_KEY` (and the service under
:data:`SERVICE_KEY`), starts and stops it through ``app.cleanup_ctx``, and adds one
middleware that answers SPSP queries (``/.well-known/pay``, ``/<name>`` for
``pointers``), charges ``paid={path: price}`` rules for requests that reach a route
(not handlers with a paywall of their own), answers ``OPTIONS`` for handlers wrapped
with :func:`paid` even when the route has no ``OPTIONS`` method, and settles every paid
request (:mod:`ilp_receiver.web.lifecycle`: headers added when the response is
prepared, the one refund rule, one charge per request).

Web Monetization and Web Payments: :func:`setup_monetization` (after :func:`setup`)
adds a middleware that sets the ``__monetizer`` visitor cookie and serves
``/__monetizer/client.js``, ``/__monetizer/<id>``, ``/__monetizer`` (era C) and, with an
:class:`~ilp_receiver.webpayments.OrderBook`, ``/orders/<id>``; :func:`monetized` guards
handlers and :func:`metered` charges a streamed body per byte.

All logic is :class:`ilp_receiver.web.service.IlpService`,
:mod:`ilp_receiver.web.lifecycle` and :mod:`ilp_receiver.web.monetization_endpoints`;
this module only speaks aiohttp.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar, Unpack

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - aiohttp is a core dependency
    raise ImportError("ilp_receiver_aiohttp needs aiohttp: pip install 'ilp-receiver'") from exc

from ilp_receiver.http_reply import HttpReply
from ilp_receiver.monetization import OP_CLIENT_SCRIPT_NAME, Monetizer, Visitor, script_tag
from ilp_receiver.monetization_verifier import IncomingPaymentVerifier, verifier_from_settings
from ilp_receiver.open_payments import monetization_link_tag
from ilp_receiver.options import ReceiverOptions, ReceiverSettings
from ilp_receiver.paywall import PaidRoute, PayMethod, Price, RequestFacts, check_pay_method
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.web import lifecycle
from ilp_receiver.web.monetization_endpoints import (
    MonetizationService,
    OrderEndpoints,
    VisitorLookup,
)
from ilp_receiver.web.service import IlpService, receiver_for
from ilp_receiver.web.spsp_endpoint import EndpointDirectory, spsp_reply
from ilp_receiver.webpayments import OrderBook

__all__ = [
    "MONETIZATION_KEY",
    "ORDERS_KEY",
    "PRICE_ATTR",
    "RECEIVER_KEY",
    "SERVICE_KEY",
    "VISITOR_KEY",
    "BodyReader",
    "body_reader",
    "create_spsp_app",
    "current_visitor",
    "get_monetization",
    "get_receiver",
    "get_service",
    "ilp_middleware",
    "metered",
    "monetization_middleware",
    "monetization_tags",
    "monetized",
    "paid",
    "request_facts",
    "setup",
    "setup_monetization",
    "setup_web_payments",
    "to_response",
]

log = logging.getLogger(__name__)

#: Where :func:`setup` keeps the :class:`~ilp_receiver.web.asgi.IlpService`.
SERVICE_KEY = web.AppKey("ilp_receiver_service", IlpService)
#: The attribute :func:`paid` sets on the handlers it wraps (their price).
PRICE_ATTR: Final = "__ilp_price__"
_METHOD_ATTR: Final = "__ilp_pay_method__"
#: Where each request keeps its paywall record (:data:`lifecycle.CHARGE_KEY`).
_PAID_KEY = web.RequestKey("ilp_receiver_paid", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


#: Where :func:`setup` (and :func:`create_spsp_app`) keep the application's receiver.
RECEIVER_KEY = web.AppKey("ilp_receiver", AsyncReceiver)


def get_service(request: web.Request) -> IlpService:
    """The service of the application serving ``request`` (sub-apps included)."""
    try:
        return request.config_dict[SERVICE_KEY]
    except KeyError:
        raise RuntimeError(
            "ilp-receiver is not set up on this application: call "
            "ilp_receiver_aiohttp.setup(app, ...)"
        ) from None


def get_receiver(request: web.Request) -> AsyncReceiver:
    """The :class:`~ilp_receiver.AsyncReceiver` of the application serving ``request``."""
    return get_service(request).receiver


def request_facts(request: web.Request) -> RequestFacts:
    """The paywall's view of an aiohttp request."""
    return RequestFacts.from_pairs(request.method, request.path, request.headers.items())


def to_response(reply: HttpReply) -> web.Response:
    """An aiohttp response for a neutral reply."""
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)


def _state(request: web.Request) -> dict[str, Any]:
    state = request.get(_PAID_KEY)
    if state is None:
        state = request[_PAID_KEY] = {}
    return state


class BodyReader:
    """Reads a request's body through a counting reader, at most ``limit`` + 1 bytes
    (about: aiohttp reads what the connection has buffered), and keeps it for the
    handler (``await request.read()``, ``.text()``, ``.json()``, ``.post()``).

    Public aiohttp only: the body is read by a clone of the request
    (``request.clone(client_max_size=limit)``; ``read()`` refuses a body above it), and
    :attr:`request` is then that clone -- the one to give the handler, which finds the
    body read.  A body read already (by an outer middleware) is counted as it is.
    """

    __slots__ = ("request",)

    def __init__(self, request: web.Request) -> None:
        #: the request to hand the handler (a clone holding the body once it is read)
        self.request = request

    async def __call__(self, limit: int) -> int | None:
        request = self.request
        if limit == 0:  # client_max_size=0 means "no limit" to aiohttp
            extra = await request.content.read(1)
            return None if extra else 0
        try:
            clone = request.clone(client_max_size=limit)
        except RuntimeError:  # the body was read already: aiohttp keeps it
            data = await request.read()
            return len(data) if len(data) <= limit else None
        try:
            data = await clone.read()
        except web.HTTPRequestEntityTooLarge:
            return None
        self.request = clone
        return len(data)


def body_reader(request: web.Request) -> BodyReader:
    """A :class:`BodyReader` for ``request`` (give the handler its ``.request``)."""
    return BodyReader(request)


def setup(
    app: web.Application,
    receiver: AsyncReceiver | None = None,
    *,
    options: ReceiverOptions | None = None,
    **settings: Unpack[ReceiverSettings],
) -> IlpService:
    """Attach a receiver, its payment pointer and the paywall to ``app``.

    Give an :class:`~ilp_receiver.AsyncReceiver`, or the settings to build one
    (:class:`~ilp_receiver.options.ReceiverSettings`: ``uplink``, ``secret`` or
    ``secret_file``, ``store``, ...; over the ``ILP_RECEIVER_*`` environment;
    ``on_payment`` defaults to the paywall hook), and the web settings (``paid``,
    ``pointers``, ``well_known``, ``pay_method``, ``pay_wait``, ``health_path``).  The
    receiver starts with the app; an unreachable uplink makes paid routes answer ``503``
    until it connects, or -- ``require_uplink=True`` -- fails the start-up with the
    reason.
    """
    opts = ReceiverOptions.from_settings(options, **settings)
    rx = receiver_for(receiver, opts, settings)
    service = IlpService(rx, options=opts)
    app[RECEIVER_KEY] = rx
    app[SERVICE_KEY] = service
    app.cleanup_ctx.append(_receiver_context)
    app.middlewares.append(ilp_middleware)
    app.on_response_prepare.append(_settle_on_prepare)
    return service


async def _receiver_context(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE_KEY]
    try:
        await service.start()
    except Exception as exc:
        log.error("ilp-receiver could not start: %s", exc)
        raise
    yield
    await service.stop()


async def _settle_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Add ``Pay`` / ``Pay-Balance`` as the response's head goes out, refunding an
    answer of 400 or more (also aiohttp's answers to HTTP exceptions)."""
    state = request.get(_PAID_KEY)
    paid = None if state is None else lifecycle.charge_of(state)
    if paid is not None:
        service = get_service(request)
        response.headers.update(await lifecycle.respond(service, paid, response.status))


def _is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | asyncio.CancelledError)


async def _decorated(request: web.Request) -> tuple[Price, PayMethod | None] | None:
    """The price and pay method of a :func:`paid` handler serving this path with another
    method (``OPTIONS`` has no route of its own)."""
    exc = request.match_info.http_exception
    if not isinstance(exc, web.HTTPMethodNotAllowed):
        return None
    for method in sorted(exc.allowed_methods):
        other = await request.app.router.resolve(request.clone(method=method))
        if other.http_exception is None:
            found: Price | None = getattr(other.handler, PRICE_ATTR, None)
            if found is not None:
                return found, getattr(other.handler, _METHOD_ATTR, None)
    return None


async def _rule(service: IlpService, request: web.Request) -> PaidRoute | None:
    """The path rule (or, for ``OPTIONS``, the decorated handler) charging this request:
    only requests that reach a route (no charge for 404/405), and not handlers with a
    paywall of their own (their price wins)."""
    method, path = request.method, request.path
    match_info = request.match_info
    if match_info.http_exception is None:
        if getattr(match_info.handler, PRICE_ATTR, None) is not None:
            return None  # the decorator charges
        return service.rule_for(method, path)
    if method != "OPTIONS" or not isinstance(match_info.http_exception, web.HTTPMethodNotAllowed):
        return None
    found = await _decorated(request)
    if found is not None:
        return PaidRoute(path, found[0], pay_method=found[1])
    return service.rule_for(method, path)


@web.middleware
async def ilp_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SPSP queries, health, path rules, ``OPTIONS`` for :func:`paid` handlers, and the
    settling of every paid request."""
    service = get_service(request)
    method, path = request.method, request.path
    if path in service.mount.paths:
        headers = request.headers
        reply = await service.spsp(
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
    rule = await _rule(service, request) if service.routes or method == "OPTIONS" else None
    if rule is not None:
        reader = body_reader(request)
        reply = await service.enter(
            _state(request),
            request_facts(request),
            rule.price,
            pay_method=rule.pay_method,
            read_body=reader,
        )
        if reply is not None:
            return to_response(reply)
        request = reader.request  # the body read for the price: the handler's to read
    try:
        return await handler(request)
    except web.HTTPException:
        raise  # an answer: settled when aiohttp prepares it
    except BaseException as exc:
        state = request.get(_PAID_KEY)
        paid = None if state is None else lifecycle.charge_of(state)
        # once the response is out, a reset or a cancellation is a client that left:
        # the answer was made and the charge stands
        if paid is not None and not (paid.state != "open" and _is_disconnect(exc)):
            await lifecycle.fail(service, paid)
        raise


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[H], H]:
    """Put a handler behind the paywall at ``price`` (an int, a function of the request
    facts, or :func:`~ilp_receiver.paywall.per_byte`).

    The middleware settles the request: ``Pay`` / ``Pay-Balance`` on whatever answers
    (also ``HTTPException`` s), a refund for answers of 400 or more and for handlers that
    raise.  ``pay_method``: ``"psk2"`` or ``"stream"`` for this handler (None: the
    app's, :func:`setup`).
    """
    method = None if pay_method is None else check_pay_method(pay_method)

    def decorator(handler: H) -> H:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            service = get_service(request)
            reader = body_reader(request)
            reply = await service.enter(
                _state(request),
                request_facts(request),
                price,
                pay_method=method,
                read_body=reader,
            )
            if reply is not None:
                return to_response(reply)
            # the request whose body was read for the price: the handler reads it again
            response: web.StreamResponse = await handler(reader.request)
            return response

        setattr(wrapper, PRICE_ATTR, price)
        setattr(wrapper, _METHOD_ATTR, method)
        return wrapper  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------------------------------
# Web Monetization and Web Payments

#: Where :func:`setup_monetization` keeps the service.
MONETIZATION_KEY = web.AppKey("ilp_receiver_monetization", MonetizationService)
#: Where the middleware keeps each request's :class:`VisitorLookup`.
VISITOR_KEY = web.RequestKey("ilp_receiver_visitor", VisitorLookup)


def setup_monetization(
    app: web.Application,
    monetizer: Monetizer | None = None,
    *,
    secret: bytes | str | None = None,
    max_balance: int | None = None,
    idle_expiry: float | None = None,
    orders: OrderBook | None = None,
    orders_prefix: str = "/orders",
    cookie_max_age: int | None = None,
    wallet_address: str | None = None,
    verifier: IncomingPaymentVerifier | None = None,
) -> MonetizationService:
    """Add Web Monetization (and order pointers) to ``app``; call it after :func:`setup`.

    Give a ready ``monetizer`` or the options to build one (``secret`` signs visitor
    ids: the same in every process).  For ``max_balance`` and 2018-style spliced
    addresses pass ``monetizer.payment_hook`` as ``on_payment`` to :func:`setup`.
    Today's Web Monetization: ``wallet_address`` (default
    ``ILP_MONETIZATION_WALLET_ADDRESS`` and the other ``ILP_MONETIZATION_*`` variables)
    or a ready ``verifier``; :func:`monetization_tags` gives the page's link and script.
    """
    if SERVICE_KEY not in app:
        raise RuntimeError("call ilp_receiver_aiohttp.setup(app, ...) before setup_monetization")
    if monetizer is None:
        monetizer = Monetizer(secret=secret, max_balance=max_balance, idle_expiry=idle_expiry)
    if verifier is None:
        verifier = verifier_from_settings(monetizer, {"WALLET_ADDRESS": wallet_address})
    service = MonetizationService(
        monetizer,
        orders,
        orders_prefix=orders_prefix,
        cookie_max_age=cookie_max_age,
        verifier=verifier,
    )
    if verifier is not None:

        async def close_verifier(_app: web.Application) -> None:
            await verifier.close()

        app.on_cleanup.append(close_verifier)
    service.bind(app[SERVICE_KEY].receiver)
    app[MONETIZATION_KEY] = service
    app.middlewares.append(monetization_middleware)
    return service


def get_monetization(request: web.Request) -> MonetizationService:
    """The monetization service of the application serving ``request``."""
    try:
        return request.config_dict[MONETIZATION_KEY]
    except KeyError:
        raise RuntimeError(
            "Web Monetization is not set up on this application: call "
            "ilp_receiver_aiohttp.setup_monetization(app, ...)"
        ) from None


def _lookup(request: web.Request) -> VisitorLookup:
    lookup = request.get(VISITOR_KEY)
    if lookup is None:
        lookup = get_monetization(request).lookup(request_facts(request), secure=request.secure)
        request[VISITOR_KEY] = lookup
    return lookup


def monetization_tags(request: web.Request, wallet_address: str | None = None) -> str:
    """``<link rel="monetization">`` to the site's wallet address and the client script.

    HTML for a page's ``<head>`` (today's Web Monetization); ``wallet_address`` defaults
    to the verifier's.
    """
    service = get_monetization(request)
    verifier = service.verifier
    if wallet_address is None:
        if verifier is None:
            raise RuntimeError("give wallet_address to setup_monetization (or here)")
        wallet_address = verifier.wallet_address
    insecure = verifier is not None and verifier.fetcher.allow_insecure
    link = monetization_link_tag(wallet_address, allow_insecure=insecure)
    return link + script_tag(f"{service.monetizer.prefix}/{OP_CLIENT_SCRIPT_NAME}")


def current_visitor(request: web.Request) -> Visitor | None:
    """The visitor of ``request`` (None when its id was refused)."""
    return _lookup(request).visitor


@web.middleware
async def monetization_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The monetization endpoints, and the visitor cookie on every other response."""
    service = get_monetization(request)
    facts = request_facts(request)
    limit = service.report_limit(facts)
    if limit is not None:
        body = bytearray()
        while len(body) <= limit:
            chunk = await request.content.read(limit + 1 - len(body))
            if not chunk:
                break
            body += chunk
        return to_response(await service.handle_report(facts, bytes(body)))
    if service.handles(facts.path):
        reply = await service.handle(facts)
        if reply is not None:
            return to_response(reply)
    lookup = _lookup(request)
    cookie = lookup.set_cookie
    if cookie is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.add("Set-Cookie", cookie)
        raise
    if not response.prepared:
        response.headers.add("Set-Cookie", cookie)
    return response


def monetized(price: Price, *, wait: float | None = None) -> Callable[[H], H]:
    """Serve a handler only to visitors whose bucket holds ``price``; debit it.

    Otherwise ``402`` (JSON), or with ``wait`` first wait up to that many seconds for
    the money (event-driven); a tampered visitor cookie gets ``400``.  A handler that
    raises is refunded (HTTP exceptions below 500 are answers and keep the charge).  For
    per-byte pricing of a streamed body use :func:`metered`.
    """

    def decorator(handler: H) -> H:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            service = get_monetization(request)
            decision = await service.check(
                request_facts(request), _lookup(request), price, wait=wait
            )
            if decision.reply is not None:
                return to_response(decision.reply)
            try:
                response: web.StreamResponse = await handler(request)
            except web.HTTPException as exc:
                if exc.status >= 500:
                    await service.refund(decision)
                raise
            except BaseException:
                await service.refund(decision)
                raise
            return response

        return wrapper  # type: ignore[return-value]

    return decorator


async def metered(
    request: web.Request,
    chunks: AsyncIterable[bytes],
    *,
    per_byte: int = 1,
    wait: float | None = None,
) -> AsyncIterator[bytes]:
    """Yield ``chunks`` while the visitor pays ``per_byte`` for each byte; stop when dry.

    ``async for chunk in metered(request, source()): await response.write(chunk)``.
    """
    visitor = current_visitor(request)
    if visitor is None:
        return
    service = get_monetization(request)
    async for chunk in service.metered(chunks, visitor, per_byte, wait=wait):
        yield chunk


#: Where :func:`setup_web_payments` keeps the order endpoints.
ORDERS_KEY = web.AppKey("ilp_receiver_orders", OrderEndpoints)


def setup_web_payments(
    app: web.Application, orders: OrderBook, *, prefix: str = "/orders"
) -> OrderEndpoints:
    """Serve ``orders``' payment pointers at ``<prefix>/<id>``; call it after :func:`setup`.

    Only SPSP queries are answered; the shop's own handlers may serve the same paths.
    """
    if SERVICE_KEY not in app:
        raise RuntimeError("call ilp_receiver_aiohttp.setup(app, ...) before setup_web_payments")
    endpoints = OrderEndpoints(orders, prefix=prefix)
    endpoints.bind(app[SERVICE_KEY].receiver)
    app[ORDERS_KEY] = endpoints
    app.middlewares.append(_orders_middleware)
    return endpoints


@web.middleware
async def _orders_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoints = request.config_dict[ORDERS_KEY]
    if endpoints.handles(request.path):
        reply = await endpoints.handle(request_facts(request))
        if reply is not None:
            return to_response(reply)
    return await handler(request)


# -- a standalone payment-pointer server (``ilp-receiver receive``) ----------------------


def create_spsp_app(
    receiver: AsyncReceiver, directory: EndpointDirectory | None = None
) -> web.Application:
    """A standalone payment-pointer server for ``receiver``: SPSP endpoints and a health
    check, without an application around them (what ``ilp-receiver receive`` serves).

    ``/.well-known/pay`` (and ``/``) serve the default endpoint; ``/<name>`` serves
    named endpoints (``directory``), each with a balance of its own; each answers
    STREAM (SPSP v4) or PSK2 by the query's ``Accept``
    (:func:`~ilp_receiver.web.spsp_endpoint.spsp_reply`), and ``OPTIONS`` with the
    CORS headers; ``/health`` answers ``ok`` while the uplink is connected (503
    otherwise), with the uplink, the address and ``shared_account``.  The caller starts
    and stops the receiver."""
    endpoints = directory or EndpointDirectory()
    app = web.Application()
    app[RECEIVER_KEY] = receiver

    async def answer(request: web.Request, account: str | None) -> web.Response:
        headers = request.headers
        reply = await spsp_reply(
            receiver,
            account,
            headers.get("Accept"),
            method=request.method,
            receipt_nonce=headers.get("Receipt-Nonce"),
            receipt_secret=headers.get("Receipt-Secret"),
        )
        return to_response(reply)

    async def default_endpoint(request: web.Request) -> web.Response:
        return await answer(request, endpoints.account("default"))

    async def named_endpoint(request: web.Request) -> web.Response:
        return await answer(request, endpoints.account(request.match_info["name"]))

    async def health(request: web.Request) -> web.Response:
        up = receiver.link.is_connected
        report = receiver.health() if receiver.ready else {"status": "starting"}
        if not up and report["status"] == "ok":
            report["status"] = "uplink down"
        return web.Response(
            status=200 if up else 503,
            text=json.dumps(report),
            content_type="application/json",
        )

    app.router.add_get("/health", health)
    for path, handler in (
        ("/.well-known/pay", default_endpoint),
        ("/", default_endpoint),
        ("/{name}", named_endpoint),
    ):
        app.router.add_get(path, handler)
        app.router.add_route("OPTIONS", path, handler)
    return app
