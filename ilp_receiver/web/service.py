"""The framework-neutral HTTP service every adapter shares: :class:`IlpService`.

It answers SPSP queries at ``/.well-known/pay`` and at named payment pointers
(``$example.com/bob`` -> ``/bob``, :class:`PointerMount`), knows which routes are paid,
runs the :class:`~ilp_receiver.paywall.Paywall` and serves the health report
(:func:`health_reply`), all as :class:`~ilp_receiver.http_reply.HttpReply` values.  The
ASGI middleware (:mod:`ilp_receiver.web.asgi`), the aiohttp adapter and, through
:class:`~ilp_receiver.web.wsgi.SyncIlpService`, the WSGI adapters drive it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from ..http_reply import HttpReply
from ..options import ReceiverOptions
from ..paywall import (
    PaidRoute,
    PaidRoutes,
    Paywall,
    PaywallDecision,
    Price,
    RequestFacts,
    resolve_price,
    uplink_unavailable_reply,
)
from ..spsp import negotiate_setup
from . import lifecycle
from .spsp_endpoint import EndpointDirectory, spsp_reply

if TYPE_CHECKING:
    from ..receiver import AsyncReceiver

__all__ = ["WELL_KNOWN_PAY", "IlpService", "PointerMount", "health_reply", "receiver_for"]

#: "if the path is empty or exactly ``/``, use ``/.well-known/pay``" (payment pointers).
WELL_KNOWN_PAY: Final = "/.well-known/pay"
#: Settings that build a receiver; an adapter given a ready receiver refuses them.
_RECEIVER_SETTINGS: Final = frozenset(
    {
        "uplink",
        "secret",
        "secret_file",
        "store",
        "on_payment",
        "max_balance",
        "receiver_name",
        "spsp_max_age",
        "stream",
        "require_uplink",
    }
)


def receiver_for(
    receiver: AsyncReceiver | None, options: ReceiverOptions, given: Iterable[str] = ()
) -> AsyncReceiver:
    """``receiver`` itself, or a new AsyncReceiver built from ``options``.

    ``given``: the settings the caller passed as keywords -- those that build a
    receiver cannot go with a ready ``receiver``.
    """
    if receiver is not None:
        clash = sorted(_RECEIVER_SETTINGS.intersection(given))
        if clash:
            raise ConfigError(
                clash[0], "give either a receiver or the settings to build one, not both"
            )
        return receiver
    options.check_uplink()
    return options.async_receiver()


def health_reply(receiver: AsyncReceiver) -> HttpReply:
    """The health report (``AsyncReceiver.health``) as JSON: ``200`` while the uplink is
    connected, ``503`` (with ``Retry-After``) otherwise.  ``shared_account`` tells
    whether another receiver uses our uplink account."""
    report = receiver.health()
    up = report["status"] in ("ok", "shared account")
    headers = {"Cache-Control": "no-store"}
    if not up:
        headers["Retry-After"] = "2"
    body = json.dumps(report, separators=(",", ":")).encode("utf-8")
    return HttpReply(200 if up else 503, {"Content-Type": "application/json", **headers}, body)


class PointerMount:
    """Which request paths are SPSP queries (sans-I/O).

    ``pointers``: names served as payment pointers at ``/<name>`` (each its own balance
    account, ``endpoint:<name>``); ``well_known``: serve the default pointer at
    ``/.well-known/pay``.
    """

    def __init__(self, pointers: Iterable[str] = (), *, well_known: bool = True) -> None:
        names = tuple(pointers)
        self.directory = EndpointDirectory(names)
        self.well_known = well_known
        bad = [name for name in names if self.directory.account(name) is None]
        if bad:
            raise ValueError(f"invalid payment pointer names (letters, digits, _ and -): {bad}")
        self.pointer_paths = {"/" + name: self.directory.prefix + name for name in names}
        self.paths = frozenset(self.pointer_paths) | ({WELL_KNOWN_PAY} if well_known else set())

    def account(self, method: str, path: str, accept: str | None) -> str | None:
        """The account an SPSP query to ``path`` is for, or None when it is not one.

        ``/.well-known/pay`` is always answered (406 for an ``Accept`` we cannot serve);
        a named pointer only when ``Accept`` asks for SPSP (v4 or PSK2), so the app may
        serve a page at the same path.  ``OPTIONS`` is the CORS preflight of a query.
        """
        if method not in ("GET", "HEAD", "OPTIONS") or path not in self.paths:
            return None
        if path == WELL_KNOWN_PAY:
            return self.directory.prefix + "default"
        if method != "OPTIONS" and negotiate_setup(accept) is None:
            return None
        return self.pointer_paths[path]


class IlpService:
    """SPSP endpoints, a paywall and the health report for one
    :class:`~ilp_receiver.AsyncReceiver`.

    The web settings come from ``options`` (a :class:`~ilp_receiver.options.
    ReceiverOptions`) and/or keywords: ``paid`` (``{path: price}``,
    :class:`~ilp_receiver.paywall.PaidRoute` s, or a :class:`~ilp_receiver.paywall.
    PaidRoutes`), ``pointers`` and ``well_known`` (see :class:`PointerMount`),
    ``pay_method`` (``"psk2"`` or ``"stream"``; None: ``$ILP_RECEIVER_PAY_METHOD``, else
    ``"psk2"``) and ``pay_wait`` (see :class:`~ilp_receiver.paywall.Paywall`),
    ``health_path``.  Settings that build a receiver are not used here.
    """

    def __init__(
        self,
        receiver: AsyncReceiver,
        *,
        options: ReceiverOptions | None = None,
        mount: PointerMount | None = None,
        **settings: Any,
    ) -> None:
        opts = options if options is not None else ReceiverOptions()
        if settings:
            opts = opts.replace(**settings)
        self.options = opts
        self.receiver = receiver
        self.paywall = Paywall(receiver, pay_method=opts.pay_method, pay_wait=opts.pay_wait)
        self.routes: PaidRoutes = opts.paid
        self.mount = mount or PointerMount(opts.pointers, well_known=opts.well_known)
        self.health_path = opts.health_path

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the receiver (idempotent).  An unreachable uplink raises only with
        ``require_uplink``; otherwise the receiver keeps trying in the background."""
        await self.receiver.start()

    async def stop(self) -> None:
        """Stop the receiver."""
        await self.receiver.stop()

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected, so ``Pay`` headers and SPSP answers can be
        issued (until then they are ``503 UplinkUnavailable``)."""
        return self.receiver.ready

    # -- SPSP and health -----------------------------------------------------------------

    async def spsp(
        self,
        method: str,
        path: str,
        accept: str | None,
        *,
        receipt_nonce: str | None = None,
        receipt_secret: str | None = None,
    ) -> HttpReply | None:
        """The SPSP reply for this request, or None when it is not an SPSP query.

        ``receipt_nonce`` / ``receipt_secret``: the request's ``Receipt-Nonce`` /
        ``Receipt-Secret`` headers (STREAM receipts, RFC 39).  ``503`` while the uplink
        has not connected."""
        account = self.mount.account(method, path, accept)
        if account is None:
            return None
        if not self.ready:
            return uplink_unavailable_reply()
        return await spsp_reply(
            self.receiver,
            account,
            accept,
            method=method,
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )

    def health(self, method: str, path: str) -> HttpReply | None:
        """The health report when ``path`` is the configured ``health_path``, else None."""
        if self.health_path is None or path != self.health_path or method not in ("GET", "HEAD"):
            return None
        return health_reply(self.receiver)

    # -- paywall -----------------------------------------------------------------------

    def price_for(self, method: str, path: str) -> Price | None:
        """The price of a configured paid route, or None."""
        return self.routes.match(method, path)

    def rule_for(self, method: str, path: str) -> PaidRoute | None:
        """The configured path rule charging ``method path``, or None."""
        return self.routes.find(method, path) if self.routes else None

    async def check(
        self, request: RequestFacts, price: Price, *, pay_method: str | None = None
    ) -> PaywallDecision:
        """Run the paywall for ``request`` at ``price`` (see :meth:`Paywall.check`);
        ``pay_method``: the route's (None: the service's)."""
        return await self.paywall.check(
            request, resolve_price(price, request), pay_method=pay_method
        )

    async def refund(self, decision: PaywallDecision) -> int | None:
        """Give back what ``decision`` charged; the token's balance afterwards."""
        return await self.paywall.refund(decision)

    async def enter(
        self,
        state: MutableMapping[str, Any],
        request: RequestFacts,
        price: Price,
        *,
        pay_method: str | None = None,
        read_body: lifecycle.BodyReader | None = None,
    ) -> HttpReply | None:
        """Decide on a request to a paid route and record it in ``state``
        (:func:`ilp_receiver.web.lifecycle.enter`): the reply to send instead of running
        the view, or None to run it."""
        return await lifecycle.enter(
            self, state, request, price, pay_method=pay_method, read_body=read_body
        )
