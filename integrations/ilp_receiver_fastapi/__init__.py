"""FastAPI adapter for ilp-receiver: the Starlette middleware, a dependency, a decorator,
and paid routes in the OpenAPI schema.

::

    from fastapi import Depends, FastAPI
    from ilp_receiver_fastapi import IlpReceiverMiddleware, Paid, paid

    app = FastAPI()
    app.add_middleware(IlpReceiverMiddleware)      # settings from ILP_RECEIVER_*

    @app.get("/report", dependencies=[Depends(Paid(100))])
    async def report(q: str | None = None) -> dict[str, str]: ...

    @app.get("/quote")
    @paid(10)                                      # the same, as a decorator
    async def quote(symbol: str) -> Quote: ...

Both forms work with typed endpoints (path, query, body and header parameters, other
dependencies), with any return value (a dict, a Pydantic model, a ``Response``) and with
sync endpoints.  The dependency runs the paywall before the endpoint (``402`` / ``400``
/ ``204`` / ``503`` replace it); the middleware adds ``Pay`` / ``Pay-Balance`` to the
response and settles the charge by the one refund rule (:mod:`ilp_receiver.web.
lifecycle`; an ``HTTPException`` of 400 or more is refunded).  ``OPTIONS`` to a paid
route's path is answered ``204`` with ``Pay`` even when the route has no ``OPTIONS``.

The app's OpenAPI schema documents every paid operation: the ``Pay-Token`` header
parameter (from the dependency's signature), a ``402`` response with its ``Pay``
header and JSON body, and ``Pay`` / ``Pay-Balance`` on the success responses.

This module only speaks FastAPI; the middleware is :mod:`ilp_receiver_starlette`'s.
"""

import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Final, TypeVar, Unpack

try:
    from fastapi import Depends, FastAPI, Header, Request
    from fastapi.routing import APIRoute
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ilp_receiver_fastapi needs FastAPI: pip install 'ilp-receiver[fastapi]'"
    ) from exc

from starlette.routing import BaseRoute

from ilp_receiver.options import ReceiverOptions, ReceiverSettings
from ilp_receiver.paywall import PayMethod, Price, check_pay_method
from ilp_receiver.receiver import AsyncReceiver
from ilp_receiver.web.asgi import AsgiApp, PaywallAnswer, Receive, Scope, Send
from ilp_receiver.web.lifecycle import PaidRequest, charge_of
from ilp_receiver_starlette import IlpReceiverMiddleware as _StarletteMiddleware
from ilp_receiver_starlette import body_reader, get_receiver, get_service, request_facts

__all__ = [
    "PAID_RESPONSES",
    "IlpReceiverMiddleware",
    "Paid",
    "document_paid_routes",
    "get_receiver",
    "get_service",
    "paid",
    "paywall_of",
]

E = TypeVar("E", bound=Callable[..., Any])
_PARAMETER: Final = "_ilp_receiver_paid"
_DOCUMENTED: Final = "_ilp_receiver_openapi"

#: How the ``Pay-Token`` header parameter is described in the OpenAPI schema.
PAY_TOKEN_DOC: Final = (
    "HTTP-ILP: 16 random bytes, base64url without padding, chosen by the client; the "  # noqa: S105
    "payments to this route's `Pay` destination are credited to it"
)

#: The OpenAPI responses of a paid operation (added to the schema automatically; usable
#: as ``responses=`` of routes documented by hand).
PAID_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    402: {
        "description": "Payment Required: pay the `Pay` destination, then repeat the "
        "request with the same `Pay-Token`",
        "headers": {
            "Pay": {
                "description": "`interledger-psk2 <destination> <shared secret> <price>` or "
                "`interledger-stream <destination> <shared secret>`",
                "schema": {"type": "string"},
            },
            "Pay-Balance": {
                "description": "the token's balance, when a `Pay-Token` was sent",
                "schema": {"type": "string"},
            },
        },
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {
                            "type": "string",
                            "enum": ["PaymentRequired", "InsufficientBalance"],
                        },
                        "message": {"type": "string"},
                        "price": {"type": "string"},
                        "balance": {"type": "string"},
                    },
                    "required": ["id", "message", "price"],
                }
            }
        },
    },
    503: {
        "description": "the uplink to the connector is not connected yet (`Retry-After`)",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_SUCCESS_HEADERS: Final = {
    "Pay": {
        "description": "a fresh `Pay` destination for the next request",
        "schema": {"type": "string"},
    },
    "Pay-Balance": {
        "description": "the token's balance after this request",
        "schema": {"type": "string"},
    },
}


class Paid:
    """A FastAPI dependency charging ``price`` for the request: ``Depends(Paid(100))``.

    ``price``: an int, a function of the request facts (sync or async), or
    :func:`~ilp_receiver.paywall.per_byte`; ``pay_method``: ``"psk2"`` or ``"stream"``
    (None: the middleware's).  The dependency's value is the request's
    :class:`~ilp_receiver.web.lifecycle.PaidRequest` (what was charged, the balance).
    """

    def __init__(self, price: Price, *, pay_method: str | None = None) -> None:
        self.price = price
        self.pay_method: PayMethod | None = (
            None if pay_method is None else check_pay_method(pay_method)
        )

    def __repr__(self) -> str:
        return f"Paid({self.price!r}, pay_method={self.pay_method!r})"

    async def __call__(
        self,
        request: Request,
        pay_token: Annotated[
            str | None, Header(alias="Pay-Token", description=PAY_TOKEN_DOC)
        ] = None,
    ) -> PaidRequest | None:
        service = get_service(request)
        reply = await service.enter(
            request.scope,
            request_facts(request),
            self.price,
            pay_method=self.pay_method,
            read_body=body_reader(request),
        )
        if reply is not None:
            raise PaywallAnswer(reply)
        return charge_of(request.scope)


def paid(price: Price, *, pay_method: str | None = None) -> Callable[[E], E]:
    """Put an endpoint behind the paywall at ``price``: :class:`Paid` as a decorator.

    Goes *below* the route decorator.  The endpoint keeps its signature (FastAPI still
    reads its parameters and return annotation); the paywall is added to it as a
    dependency, so it runs -- and documents ``Pay-Token`` -- exactly as
    ``dependencies=[Depends(Paid(price))]`` does.
    """
    dependency = Paid(price, pay_method=pay_method)

    def decorator(endpoint: E) -> E:
        signature = inspect.signature(endpoint)
        try:
            # resolved here: the wrapper's globals are not the endpoint's
            hints = typing.get_type_hints(endpoint, include_extras=True)
        except (NameError, TypeError):
            hints = {}  # left to FastAPI, as without the decorator
        parameters = [
            parameter.replace(annotation=hints.get(name, parameter.annotation))
            for name, parameter in signature.parameters.items()
        ]
        added = inspect.Parameter(
            _PARAMETER,
            inspect.Parameter.KEYWORD_ONLY,
            default=Depends(dependency),
            annotation=PaidRequest | None,
        )
        variadic = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
        plain = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
        new_signature = signature.replace(
            parameters=[*plain, added, *variadic],
            return_annotation=hints.get("return", signature.return_annotation),
        )
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                kwargs.pop(_PARAMETER, None)
                return await endpoint(*args, **kwargs)

            wrapper = async_wrapper
        else:

            @functools.wraps(endpoint)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                kwargs.pop(_PARAMETER, None)
                return endpoint(*args, **kwargs)

            wrapper = sync_wrapper
        setattr(wrapper, "__signature__", new_signature)  # noqa: B010 (read by inspect)
        return wrapper  # type: ignore[return-value]

    return decorator


def _dependencies(dependant: Any) -> Iterator[Any]:
    for sub in getattr(dependant, "dependencies", ()):
        yield sub.call
        yield from _dependencies(sub)


def paywall_of(route: BaseRoute) -> Paid | None:
    """The :class:`Paid` dependency guarding ``route`` (also through :func:`paid` and
    nested dependencies), or None."""
    if not isinstance(route, APIRoute):
        return None
    for call in _dependencies(route.dependant):
        if isinstance(call, Paid):
            return call
    return None


def document_paid_routes(app: FastAPI) -> None:
    """Make ``app.openapi()`` document its paid operations (``402`` with ``Pay``, ``Pay``
    and ``Pay-Balance`` on success).  The middleware calls it for the app it runs in;
    idempotent."""
    if getattr(app, _DOCUMENTED, False):
        return
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        paths = schema.get("paths", {})
        for route in app.routes:
            if not isinstance(route, APIRoute) or paywall_of(route) is None:
                continue
            for method in route.methods or ():
                operation = paths.get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if str(status).startswith("2"):
                        response.setdefault("headers", {}).update(_SUCCESS_HEADERS)
                for status, response in PAID_RESPONSES.items():
                    responses.setdefault(str(status), response)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    setattr(app, _DOCUMENTED, True)


class IlpReceiverMiddleware(_StarletteMiddleware):
    """:class:`ilp_receiver_starlette.IlpReceiverMiddleware` for FastAPI:
    ``app.add_middleware(IlpReceiverMiddleware, **settings)``.

    Besides the Starlette behaviour it knows :class:`Paid` dependencies (a path rule
    leaves such routes to them; ``OPTIONS`` gets their price), answers for them when
    they refuse a request, and documents paid routes in the app's OpenAPI schema.
    """

    def __init__(
        self,
        app: AsgiApp,
        receiver: AsyncReceiver | None = None,
        *,
        options: ReceiverOptions | None = None,
        lifespan: bool = True,
        **settings: Unpack[ReceiverSettings],
    ) -> None:
        super().__init__(app, receiver, options=options, lifespan=lifespan, **settings)

    def own_paywall(self, route: BaseRoute) -> tuple[Price, PayMethod | None] | None:
        """The price and pay method of ``route``'s :class:`Paid` dependency (or of a
        Starlette-style ``@paid``)."""
        dependency = paywall_of(route)
        if dependency is not None:
            return dependency.price, dependency.pay_method
        return super().own_paywall(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (documents the app's paid routes on first use)."""
        app = scope.get("app")
        if isinstance(app, FastAPI):
            document_paid_routes(app)
        await super().__call__(scope, receive, send)
