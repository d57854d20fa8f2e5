"""Connectors sharing one store with ``shared_balances`` (``docs/scaling.md``): one set of
balances and limits for the fleet, on every store (a MemoryStore object shared by two
in-process connectors stands for a networked store)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from ilp_receiver.codec.ilp import IlpFulfill, IlpPrepare, IlpReject, IlpReply
from ilp_receiver.connector import Connector, config_from_mapping
from ilp_receiver.links.btp_client import BtpClientLink
from ilp_receiver.stores import BalanceStore

from .test_stores import Factory

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()


def prepare(destination: str, amount: int) -> IlpPrepare:
    at = datetime.now(UTC) + timedelta(seconds=10)
    return IlpPrepare(amount, at.replace(microsecond=0), CONDITION, destination, b"")


def fleet_config(**sender: Any) -> Any:
    accounts = {
        "sender": {
            "relation": "child",
            "transport": "btp-server",
            "token": "s",
            "listen": "0",
            **sender,
        },
        "shop": {"relation": "child", "transport": "btp-server", "token": "t", "listen": "0"},
    }
    connector = {"address": "test.fleet", "shared_balances": True}
    return config_from_mapping({"connector": connector, "accounts": accounts}, env={})


def url(c: Connector, account: str, token: str) -> str:
    return "btp+" + c.listeners[account].replace("ws://", f"ws://:{token}@")


class Instance:
    """One connector of the fleet, with a sender and a shop connected to it."""

    def __init__(self, store: BalanceStore, answer: str = "fulfill", **sender: Any) -> None:
        self.connector = Connector(fleet_config(**sender), store=store)
        self.answer = answer

    async def __aenter__(self) -> Instance:
        await self.connector.start()
        self.sender = BtpClientLink(url(self.connector, "sender", "s"))
        self.shop = BtpClientLink(url(self.connector, "shop", "t"))

        async def shop(p: IlpPrepare) -> IlpReply:
            if self.answer == "fulfill":
                return IlpFulfill(FULFILLMENT)
            return IlpReject("F99", "test.fleet.shop", "no")

        self.shop.set_handler(shop)
        await self.sender.start()
        await self.shop.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sender.stop()
        await self.shop.stop()
        await self.connector.stop()

    async def pay(self, amount: int) -> IlpReply:
        return await self.sender.send(prepare("test.fleet.shop.x", amount))


async def test_two_connectors_on_one_store_enforce_one_limit(make_store: Factory) -> None:
    shared = make_store()
    async with shared:
        second = shared if make_store.kind == "memory" else make_store()  # type: ignore[attr-defined]
        async with Instance(shared, max_balance=5000) as a, Instance(second, max_balance=5000) as b:
            assert isinstance(await a.pay(3000), IlpFulfill)
            # b sees what a holds: 3000 + 3000 would pass the sender's limit
            refused = await b.pay(3000)
            assert isinstance(refused, IlpReject) and refused.code == "T04", refused
            assert isinstance(await b.pay(2000), IlpFulfill)
            refused = await a.pay(1)
            assert isinstance(refused, IlpReject) and refused.code == "T04"
            # a Reject further on gives the held amount back
            b.answer = "reject"
            assert isinstance(await b.pay(1000), IlpReject)
            balances = await shared.balances()
            assert balances == {"sender": 5000, "shop": -5000}, balances
            # both instances show what the store says
            await a.connector.ledger.refresh()
            assert a.connector.balances_info()["sender"]["balance"] == "5000"
            assert await b.connector.ledger.current_balance("shop") == -5000
        if second is not shared:
            await second.close()


async def test_unlimited_accounts_settle_on_fulfill_and_sum_in_the_store(
    make_store: Factory,
) -> None:
    shared = make_store()
    async with shared:
        second = shared if make_store.kind == "memory" else make_store()  # type: ignore[attr-defined]
        async with Instance(shared) as a, Instance(second) as b:
            for instance in (a, b, a, b):
                assert isinstance(await instance.pay(250), IlpFulfill)
            b.answer = "reject"
            assert isinstance(await b.pay(250), IlpReject)
            assert await shared.balances() == {"sender": 1000, "shop": -1000}
        if second is not shared:
            await second.close()
