"""The lifecycle of a paid request, written once for every framework.

::

    decide  ->  run the view  ->  add the headers  ->  settle: keep the charge or refund

1. **Decide** (:func:`decision_steps`, driven by :func:`decide` on the event loop and
   :func:`decide_sync` on a request thread): no uplink yet -> ``503
   UplinkUnavailable`` with ``Retry-After``; a ``Content-Length`` that is not a number
   -> ``400``; for a body-priced route (:func:`~ilp_receiver.paywall.per_byte`) the body
   is read first through a counting reader (``413`` beyond its maximum, before any
   charge) and the price is computed from the bytes that arrived; then the paywall
   (:meth:`~ilp_receiver.paywall.Paywall.check`): ``204`` / ``402`` / ``400``, or the
   price debited atomically.
2. **Record** (:func:`record`; :func:`enter` / :func:`enter_sync` do steps 1-2): the
   outcome is kept on the request (ASGI scope, WSGI environ, aiohttp request, Django
   ``META``) under
   :data:`CHARGE_KEY`, as a :class:`PaidRequest`.  Whichever paywall a request meets
   first decides; a second one on the same request (a path rule *and* a decorator,
   nested decorators) sees the record and lets the request through: **never two
   charges for one request**.
3. **Run the view**, then **add the headers** (``Pay``, ``Pay-Balance``) to whatever
   answered -- the view's response, an error page, the framework's answer to an HTTP
   exception.
4. **Settle**, by one rule (:meth:`PaidRequest.answered`, :meth:`PaidRequest.failed`):

   ==========================================  =====================================
   what happened                               the charge
   ==========================================  =====================================
   the view answered ``2xx`` / ``3xx``         kept
   the view answered ``4xx`` -- returned, or   refunded (a request that is refused
   raised as the framework's HTTP exception    buys nothing)
   (``abort(403)``, ``HTTPException``,
   ``web.HTTPForbidden``, ``Http404``)
   the view answered ``5xx``                   refunded
   the view raised (the framework answers      refunded
   ``500``), or was cancelled before it
   answered
   the response body failed after streaming    refunded (the client got a truncated
   started                                     answer; the ``Pay-Balance`` it was sent
                                               is then stale)
   the client disconnected after the view      kept (the answer was made; a client
   answered (mid-body included)                cannot read a body and drop the
                                               connection at its end to get it free)
   ==========================================  =====================================

   In short: **the charge stands for an answer below 400 whose body did not fail.**  A
   refund happens at most once, and the ``Pay-Balance`` of a refunded answer shows the
   balance after the refund.

The adapters translate only: how to read the body, where the record lives, how to add
headers to their response type, and which exceptions are answers or disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    MutableMapping,
)
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from ..http_reply import HttpReply
from ..paywall import (
    PaywallDecision,
    Price,
    RequestFacts,
    body_limit,
    check_content_length,
    pay_balance_header,
    payload_too_large_reply,
    uplink_unavailable_reply,
)

__all__ = [
    "CHARGE_KEY",
    "AsyncPaywallService",
    "BodyReader",
    "CheckPaywall",
    "PaidRequest",
    "ReadBody",
    "SyncBodyReader",
    "SyncPaywallService",
    "charge_of",
    "decide",
    "decide_sync",
    "decision_steps",
    "enter",
    "enter_sync",
    "fail",
    "fail_sync",
    "keeps_charge",
    "record",
    "respond",
    "respond_sync",
    "watch_async_body",
    "watch_body",
]

#: Where a request's :class:`PaidRequest` is kept (in the ASGI scope, the WSGI environ,
#: the aiohttp request, Django's ``request.META``).
CHARGE_KEY: Final = "ilp_receiver.paid_request"

#: Reads up to ``limit`` + 1 body bytes and keeps them for the view; returns how many
#: arrived, or None when there were more than ``limit``.
BodyReader = Callable[[int], Awaitable[int | None]]
SyncBodyReader = Callable[[int], int | None]


def keeps_charge(status: int) -> bool:
    """The one refund rule for an answer: the charge stands below 400."""
    return status < 400


class PaidRequest:
    """What one request's paywall decided, and what became of the charge.

    ``headers`` are those to add to the answer (``Pay``, ``Pay-Balance``; none for a
    free route).  :meth:`answered` and :meth:`failed` apply the refund rule and say
    whether a refund is due *now* -- true at most once per request; the caller then
    refunds and reports the new balance with :meth:`refunded`.
    """

    __slots__ = ("_refund_claimed", "balance", "decision", "state")

    def __init__(self, decision: PaywallDecision) -> None:
        self.decision = decision
        self.balance = decision.balance
        #: ``"open"`` (the view runs), ``"kept"`` or ``"refunded"``
        self.state = "open" if decision.charged else "kept"
        self._refund_claimed = False

    @property
    def charged(self) -> int:
        """What was debited (0 for a free route)."""
        return self.decision.charged

    @property
    def headers(self) -> dict[str, str]:
        """``Pay`` and ``Pay-Balance`` (the balance now, after any refund)."""
        headers = dict(self.decision.headers)
        if "Pay-Balance" in headers and self.balance is not None:
            headers["Pay-Balance"] = pay_balance_header(self.balance)
        return headers

    def _claim_refund(self) -> bool:
        if self._refund_claimed or not self.charged:
            return False
        self._refund_claimed = True
        self.state = "refunded"
        return True

    def answered(self, status: int) -> bool:
        """The view (or the framework for it) answered ``status``: True when the charge
        must be refunded now (``status`` >= 400)."""
        if keeps_charge(status):
            if self.state == "open":
                self.state = "kept"
            return False
        return self._claim_refund()

    def failed(self) -> bool:
        """The view raised or was cancelled, or the body failed: True when the charge must
        be refunded now."""
        return self._claim_refund()

    def refunded(self, balance: int | None) -> None:
        """Record the balance after the refund (None: unknown; computed)."""
        if balance is None and self.balance is not None:
            balance = self.balance + self.charged
        self.balance = balance


def charge_of(state: MutableMapping[str, Any]) -> PaidRequest | None:
    """The :class:`PaidRequest` recorded on a request, or None."""
    found = state.get(CHARGE_KEY)
    return found if isinstance(found, PaidRequest) else None


# ---------------------------------------------------------------------------------------
# Deciding


class AsyncPaywallService(Protocol):
    """What the async lifecycle needs (an :class:`~ilp_receiver.web.asgi.IlpService`)."""

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected (Pay headers can be issued)."""
        ...

    async def check(
        self, request: RequestFacts, price: Price, *, pay_method: str | None = None
    ) -> PaywallDecision:
        """The paywall's decision."""
        ...

    async def refund(self, decision: PaywallDecision) -> int | None:
        """Give back what ``decision`` charged; the balance afterwards."""
        ...


class SyncPaywallService(Protocol):
    """What the sync lifecycle needs (a :class:`~ilp_receiver.web.wsgi.SyncIlpService`)."""

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected (Pay headers can be issued)."""
        ...

    def check(
        self, request: RequestFacts, price: Price, *, pay_method: str | None = None
    ) -> PaywallDecision:
        """The paywall's decision."""
        ...

    def refund(self, decision: PaywallDecision) -> int | None:
        """Give back what ``decision`` charged; the balance afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class ReadBody:
    """A step of the decision: read up to ``limit`` + 1 body bytes (how many arrived,
    or None beyond ``limit``)."""

    limit: int


@dataclass(frozen=True, slots=True)
class CheckPaywall:
    """A step of the decision: the paywall's decision on ``request`` at ``price``."""

    request: RequestFacts
    price: Price
    pay_method: str | None


def decision_steps(
    ready: bool, request: RequestFacts, price: Price, *, pay_method: str | None, reads_body: bool
) -> Generator[ReadBody | CheckPaywall, Any, PaywallDecision]:
    """Step 1 (module docstring) once for both drivers: 503 / 400 / 413 checks, the body
    read for a body price (:class:`ReadBody`), then the paywall (:class:`CheckPaywall`).
    It yields what it needs and is sent the result; :func:`decide` and
    :func:`decide_sync` drive it."""
    if not ready:
        return PaywallDecision(uplink_unavailable_reply())
    limit = body_limit(price)
    early = check_content_length(request, limit)
    if early is not None:
        return PaywallDecision(early)
    if limit is not None:
        if not reads_body:
            raise RuntimeError("this adapter cannot read the body for a per_byte price")
        size = yield ReadBody(limit)
        if size is None:
            return PaywallDecision(payload_too_large_reply(limit))
        request = replace(request, body_size=size)
    decision: PaywallDecision = yield CheckPaywall(request, price, pay_method)
    return decision


async def decide(
    service: AsyncPaywallService,
    request: RequestFacts,
    price: Price,
    *,
    pay_method: str | None = None,
    read_body: BodyReader | None = None,
) -> PaywallDecision:
    """Step 1 on the event loop (:func:`decision_steps` with awaited calls)."""
    steps = decision_steps(
        service.ready, request, price, pay_method=pay_method, reads_body=read_body is not None
    )
    result: Any = None
    try:
        while True:
            step = steps.send(result)
            if isinstance(step, ReadBody):
                assert read_body is not None
                result = await read_body(step.limit)
            else:
                result = await service.check(step.request, step.price, pay_method=step.pay_method)
    except StopIteration as done:
        decision: PaywallDecision = done.value
        return decision


def decide_sync(
    service: SyncPaywallService,
    request: RequestFacts,
    price: Price,
    *,
    pay_method: str | None = None,
    read_body: SyncBodyReader | None = None,
) -> PaywallDecision:
    """Step 1 on the calling thread, for sync adapters (WSGI request threads)."""
    steps = decision_steps(
        service.ready, request, price, pay_method=pay_method, reads_body=read_body is not None
    )
    result: Any = None
    try:
        while True:
            step = steps.send(result)
            if isinstance(step, ReadBody):
                assert read_body is not None
                result = read_body(step.limit)
            else:
                result = service.check(step.request, step.price, pay_method=step.pay_method)
    except StopIteration as done:
        decision: PaywallDecision = done.value
        return decision


def record(state: MutableMapping[str, Any], decision: PaywallDecision) -> HttpReply | None:
    """Step 2: keep a decision that lets the request through in ``state``; the reply
    to send instead of running the view, or None to run it."""
    if decision.reply is not None:
        return decision.reply
    state[CHARGE_KEY] = PaidRequest(decision)
    return None


async def enter(
    service: AsyncPaywallService,
    state: MutableMapping[str, Any],
    request: RequestFacts,
    price: Price,
    *,
    pay_method: str | None = None,
    read_body: BodyReader | None = None,
) -> HttpReply | None:
    """Steps 1-2: the reply to send instead of running the view, or None to run it (the
    outcome recorded in ``state``).  A request already recorded runs at once."""
    if CHARGE_KEY in state:
        return None
    decision = await decide(service, request, price, pay_method=pay_method, read_body=read_body)
    return record(state, decision)


def enter_sync(
    service: SyncPaywallService,
    state: MutableMapping[str, Any],
    request: RequestFacts,
    price: Price,
    *,
    pay_method: str | None = None,
    read_body: SyncBodyReader | None = None,
) -> HttpReply | None:
    """:func:`enter` for sync adapters."""
    if CHARGE_KEY in state:
        return None
    decision = decide_sync(service, request, price, pay_method=pay_method, read_body=read_body)
    return record(state, decision)


# ---------------------------------------------------------------------------------------
# Settling


async def respond(service: AsyncPaywallService, paid: PaidRequest, status: int) -> dict[str, str]:
    """The view answered ``status``: refund if the rule says so; the headers to add."""
    if paid.answered(status):
        paid.refunded(await _shielded(service.refund(paid.decision)))
    return paid.headers


def respond_sync(service: SyncPaywallService, paid: PaidRequest, status: int) -> dict[str, str]:
    """:func:`respond` for sync adapters."""
    if paid.answered(status):
        paid.refunded(service.refund(paid.decision))
    return paid.headers


async def fail(service: AsyncPaywallService, paid: PaidRequest) -> None:
    """The view raised or was cancelled, or the body failed: refund (once)."""
    if paid.failed():
        paid.refunded(await _shielded(service.refund(paid.decision)))


def fail_sync(service: SyncPaywallService, paid: PaidRequest) -> None:
    """:func:`fail` for sync adapters."""
    if paid.failed():
        paid.refunded(service.refund(paid.decision))


async def _shielded(refund: Awaitable[int | None]) -> int | None:
    """Run a refund to its end even when the request's task is being cancelled."""
    task = asyncio.ensure_future(refund)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def watch_async_body(
    chunks: AsyncIterable[Any],
    on_failure: Callable[[], Awaitable[None]],
    is_disconnect: Callable[[BaseException], bool] = lambda exc: False,
) -> AsyncIterator[Any]:
    """Yield ``chunks``; when producing them fails (not a client disconnect), await
    ``on_failure`` (the refund) before the error goes on."""
    iterator = aiter(chunks)
    try:
        async for chunk in iterator:
            yield chunk
    except (GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        if not is_disconnect(exc):
            await on_failure()
        raise
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def watch_body(chunks: Iterable[bytes], on_failure: Callable[[], None]) -> Iterator[bytes]:
    """Yield ``chunks`` (a WSGI body); when producing them fails, call ``on_failure``
    (the refund) before the error goes on.  A server that stops iterating (the client
    went away) closes it: the charge stands."""
    iterator = iter(chunks)
    try:
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except GeneratorExit:
                raise
            except BaseException:
                on_failure()
                raise
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
