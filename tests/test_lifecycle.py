"""The paid-request lifecycle written once (``ilp_receiver.web.lifecycle``) and the body
price (``per_byte``, ``check_content_length``), without a framework."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ilp_receiver.codec.oer import MAX_UINT64
from ilp_receiver.errors import ConfigError
from ilp_receiver.paywall import (
    PaywallDecision,
    RequestFacts,
    body_limit,
    check_content_length,
    per_byte,
)
from ilp_receiver.web import lifecycle
from ilp_receiver.web.lifecycle import CHARGE_KEY, PaidRequest, keeps_charge

CHARGED = PaywallDecision(
    None, {"Pay": "interledger-psk2 x y 10", "Pay-Balance": "15"}, "token:a", 10, 15
)


@pytest.mark.parametrize(
    ("status", "kept"), [(200, True), (204, True), (302, True), (304, True), (399, True),
                         (400, False), (403, False), (404, False), (405, False), (500, False),
                         (503, False)],
)  # fmt: skip
def test_the_one_refund_rule(status: int, kept: bool) -> None:
    assert keeps_charge(status) is kept
    paid = PaidRequest(CHARGED)
    assert paid.answered(status) is (not kept)
    assert paid.state == ("kept" if kept else "refunded")


def test_a_refund_happens_once_and_shows_in_pay_balance() -> None:
    paid = PaidRequest(CHARGED)
    assert paid.answered(500) is True
    paid.refunded(25)
    assert paid.failed() is False  # the view's exception after its 500: no second refund
    assert paid.answered(500) is False
    assert paid.headers["Pay-Balance"] == "25"
    kept = PaidRequest(CHARGED)
    assert kept.answered(200) is False
    assert kept.failed() is True  # the body failed after a 200 started
    kept.refunded(None)
    assert kept.headers["Pay-Balance"] == "25"  # computed: 15 + 10


def test_free_routes_never_refund() -> None:
    free = PaidRequest(PaywallDecision(None))
    assert (free.answered(500), free.failed(), free.headers) == (False, False, {})


class Service:
    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.refunds = 0

    async def check(
        self, request: RequestFacts, price: object, *, pay_method: str | None = None
    ) -> PaywallDecision:
        assert request.body_size in (None, 5)
        return CHARGED

    async def refund(self, decision: PaywallDecision) -> int | None:
        self.refunds += 1
        return 25


def test_enter_records_once_per_request() -> None:
    service = Service()
    state: dict[str, object] = {}
    facts = RequestFacts("GET", "/x", {})
    assert asyncio.run(lifecycle.enter(service, state, facts, 10)) is None
    first = state[CHARGE_KEY]
    assert asyncio.run(lifecycle.enter(service, state, facts, 10)) is None
    assert state[CHARGE_KEY] is first  # a second paywall lets the request through


def test_decide_answers_503_without_an_uplink_and_reads_body_prices() -> None:
    facts = RequestFacts("POST", "/x", {})
    decision = asyncio.run(lifecycle.decide(Service(ready=False), facts, 10))
    assert decision.reply is not None
    assert decision.reply.status == 503
    assert decision.reply.headers["Retry-After"].isdigit()

    async def five(limit: int) -> int | None:
        assert limit == 100
        return 5

    async def too_many(limit: int) -> int | None:
        return None

    price = per_byte(1, max_bytes=100)
    assert asyncio.run(lifecycle.decide(Service(), facts, price, read_body=five)) is CHARGED
    refused = asyncio.run(lifecycle.decide(Service(), facts, price, read_body=too_many))
    assert refused.reply is not None and refused.reply.status == 413


def test_respond_and_fail_refund_once() -> None:
    service = Service()
    paid = PaidRequest(CHARGED)
    headers = asyncio.run(lifecycle.respond(service, paid, 404))
    assert headers["Pay-Balance"] == "25"
    asyncio.run(lifecycle.fail(service, paid))
    assert service.refunds == 1


def test_watch_body_refunds_a_failing_body_but_not_a_closed_one() -> None:
    failures: list[str] = []

    def broken() -> Iterator[bytes]:
        yield b"a"
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError):
        list(lifecycle.watch_body(broken(), lambda: failures.append("refund")))
    assert failures == ["refund"]
    body = lifecycle.watch_body(iter([b"a", b"b"]), lambda: failures.append("no"))
    assert next(body) == b"a"
    close = getattr(body, "close")  # noqa: B009 (a generator; the server closes it)
    close()  # the client went away
    assert failures == ["refund"]


def test_per_byte_prices_the_bytes_read() -> None:
    price = per_byte(2, max_bytes=10, minimum=3)
    assert body_limit(price) == 10
    assert body_limit(10) is None
    assert price(RequestFacts("POST", "/", {}, body_size=0)) == 3
    assert price(RequestFacts("POST", "/", {}, body_size=7)) == 14
    with pytest.raises(RuntimeError):
        price(RequestFacts("POST", "/", {}))
    with pytest.raises(ConfigError):
        per_byte(-1)
    with pytest.raises(ConfigError):
        per_byte(2, max_bytes=MAX_UINT64)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("5", None),
        ("", None),
        ("0010", None),
        ("11", 413),
        ("18446744073709551616", 413),
        ("9" * 40, 413),
        ("abc", 400),
        ("-1", 400),
        ("5, 5", 400),
        ("\uff15", 400),  # a full-width digit is not 1*DIGIT
    ],
)
def test_content_length(value: str, status: int | None) -> None:
    reply = check_content_length(RequestFacts("POST", "/", {"content-length": value}), 10)
    assert (None if reply is None else reply.status) == status
    assert check_content_length(RequestFacts("POST", "/", {}), 10) is None
