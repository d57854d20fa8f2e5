"""The receiver: STREAM and PSK2 behind SPSP, on an uplink, crediting a balance store.

:class:`AsyncReceiver` is the native asyncio API; :class:`Receiver` is the same thing for
synchronous code, running on one background event-loop thread.

How a payment flows (``docs/receiver.md``, ``docs/stream.md``)::

    uplink (BTP / HTTP) -> Prepare -> STREAM server or PSK2 receiver, by the shape of
    the destination (derive secret, decrypt, check amount and condition) -> application
    hook (accept / reject / choose the account) -> balance store credit (durable,
    exactly once per Prepare) -> Fulfill -> uplink

One payment pointer serves both: SPSP answers a STREAM client (``application/spsp4+json``)
with a STREAM destination ``<address>.<token>`` and a PSK2 client with a PSK2 destination
``<address>.<receiverId>.<token>``; an incoming Prepare goes to STREAM when exactly one
segment follows our address, to PSK2 otherwise.  Both derive their secrets from the one
receiver secret (STREAM through its own label), so any process holding it can serve any
packet.

Money is counted before the Fulfill leaves: the credit is committed to the store first,
keyed by the Prepare's condition, so a duplicate delivery of the same Prepare is
fulfilled again without being credited twice.  A credit stands only in the process whose
Fulfill goes back on the connection (or HTTP exchange) that carried the Prepare: when
that connection has closed before the credit, nothing is credited; when it closes after
the credit but before the Fulfill is handed back, the credit is reverted
(:meth:`~ilp_receiver.stores.BalanceStore.revert`; ``docs/scaling.md``).  The one
window the protocol leaves open is a Fulfill handed back that never reaches the
connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast

from .codec.ilp import IlpPrepare, IlpReject, IlpReply
from .errors import ConfigError, IlpError, UplinkUnavailableError
from .events import Callbacks
from .links.base import Link, ReplyChannel, handle_on, reply_channel
from .links.factory import open_link
from .links.uplink import PeerConfig, Uplink
from .portal import BlockingPortal, default_portal
from .psk2.receiver import Acceptance, Psk2Format, Psk2Receiver, UnfulfillableRequest
from .psk2.secrets import NOT_FOR_THIS_RECEIVER, IssuedSecret, ReceiverSecrets
from .spsp import AssetInfo, SetupProtocol, SpspBalance, SpspResponse
from .stores import AddResult, BalanceLimitError, BalanceStore, open_store
from .stores.outbox import OutboxEntry
from .stream.secrets import StreamServerSecrets
from .stream.server import (
    CloseReason,
    ConnectionClosed,
    StreamCredit,
    StreamEvent,
    StreamLimits,
    StreamServer,
    StreamSetup,
)

if TYPE_CHECKING:
    from .webhooks.dispatcher import WebhookConfig, WebhookDispatcher

__all__ = [
    "DEFAULT_ACCOUNT",
    "AsyncReceiver",
    "ForeignPackets",
    "IncomingPayment",
    "PaymentEvent",
    "PaymentHook",
    "Receiver",
    "StreamEventCallback",
    "StreamOpenPolicy",
    "WebhookSource",
    "account_for_endpoint",
]

log = logging.getLogger(__name__)

#: The account behind ``/.well-known/pay``.
DEFAULT_ACCOUNT = "endpoint:default"
#: Bytes of randomness in every issued destination (ilp-protocol-psk2: 18).
TOKEN_BYTES = 18
#: Longest account name that may be bound into an address.
MAX_ACCOUNT_BYTES = 200
_UINT64_MAX = (1 << 64) - 1


def account_for_endpoint(name: str) -> str:
    """The balance-store account of a named SPSP endpoint (``/<name>``)."""
    return "endpoint:" + name


@dataclass(frozen=True, slots=True)
class IncomingPayment:
    """A fulfillable packet carrying money (PSK2 or STREAM), before the application
    decides on it."""

    #: Account the money will be credited to unless the hook names another.
    account: str
    #: Amount that arrived in this Prepare, in the uplink's base units.
    amount: int
    destination: str
    #: ``"psk2-draft1"`` (chunked payments), ``"psk2-draft2"`` (request/response) or
    #: ``"stream"`` (a STREAM money packet).
    format: Literal["psk2-draft1", "psk2-draft2", "stream"]
    #: Draft 1: the sender's 16-byte payment id. Draft 2: None.  STREAM: 16 bytes that
    #: name the connection (a payment is a connection's money to one account).
    payment_id: bytes | None
    #: Draft 1: the chunk number. Draft 2: the request id.  STREAM: the packet sequence.
    sequence: int
    #: Draft 1: the sender marked this the last chunk.  STREAM: the packet also closes
    #: the connection.
    last_chunk: bool
    #: Application data inside the PSK2 packet (draft 2 puts HTTP-ILP tokens here).
    application_data: bytes
    #: Address segments spliced in front of the PSK2 segments (Web Monetization ids).
    segments: tuple[str, ...]
    #: The condition of the Prepare; identifies the packet (idempotency key).
    condition: bytes
    #: STREAM: the connection id (the token segment of the destination), else None.
    connection_id: str | None = None
    #: STREAM: the streams the money arrived on, ``(stream id, amount)`` in id order.
    streams: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """Something the application may want to know about, delivered after the Fulfill."""

    #: ``reverted``: a ``received`` credit was undone because its Fulfill could not go
    #: back on the connection its Prepare came on (the connector never paid it)
    kind: Literal["received", "completed", "reverted"]
    account: str
    amount: int
    #: The account's balance right after this credit.
    balance: int
    payment: IncomingPayment
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


#: Decides on an incoming payment. Return ``None``/``True`` to accept it into
#: ``payment.account``, a ``str`` to credit another account, ``False`` to refuse (F99);
#: or raise :class:`~ilp_receiver.errors.IlpError` to refuse with a chosen code.
PaymentHook = Callable[[IncomingPayment], "Awaitable[str | bool | None] | str | bool | None"]
EventCallback = Callable[[PaymentEvent], "Awaitable[None] | None"]
#: Adds webhook events to a credit's outbox entries (``docs/webhooks.md``): called with
#: the account, the amount and the JSON text of the credit's ``payment.received`` data,
#: before the credit; its entries are written in the credit's transaction (typically
#: conditional ones, ``OutboxEntry.when``: an order becoming paid).
WebhookSource = Callable[[str, int, str], Awaitable[list[OutboxEntry]]]
#: Called (synchronously, right after the packet that caused it) for every STREAM event:
#: connections and streams opening and closing, data arriving, money credited.
StreamEventCallback = Callable[[StreamEvent], None]
#: Decides about a stream a STREAM client opens to ``account``: its receive limit and
#: bytes to send at once (:class:`~ilp_receiver.stream.server.StreamSetup`), or None to
#: leave it to the next policy (and finally to ``stream_limits.default_receive_max``).
StreamOpenPolicy = Callable[[str, int], "StreamSetup | None"]


#: Seconds between two sweeps for idle STREAM connections.
_EXPIRY_INTERVAL = 5.0
#: the longest the reply to a STREAM close waits for its payment.completed to be stored
_COMPLETED_WAIT = 2.0
#: retries of a payment.completed the store failed to write: first delay, longest delay
_COMPLETED_RETRY_FIRST = 0.05
_COMPLETED_RETRY_MAX = 5.0


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A payment the hook or the store refused: the ILP code and message to reject with
    (``limit``: the balance cap, so a STREAM sender is told to stop)."""

    code: str
    message: str
    limit: bool = False


_CONNECTION_CLOSED = "the connection of this Prepare has closed"


class _Credit:
    """A credit a Prepare asks for, between the receiver's decision and its answer.

    The decision is made without waiting (:meth:`AsyncReceiver._psk2_decide`,
    :meth:`AsyncReceiver._stream_decide`); the store's verdict on the credit is then
    turned into the answer by :meth:`settle` (or :meth:`refuse`, for the application's
    hook).  ``account`` may be changed by the hook before the credit.
    """

    __slots__ = ("account", "amount", "channel", "index", "key", "payment", "receiver")

    receiver: AsyncReceiver
    account: str
    amount: int
    #: the store's idempotency key of the credit
    key: str
    payment: IncomingPayment | None
    #: batches: the connection the Prepare came on, and its place in the batch
    channel: ReplyChannel | None
    index: int

    def settle(self, result: AddResult | _Refusal) -> IlpReply:
        """The answer, once the store credited the money (or refused to)."""
        raise NotImplementedError

    def refuse(self, verdict: _Refusal) -> IlpReply:
        """The answer when the application's hook refuses the payment."""
        raise NotImplementedError

    def cancelled(self) -> None:
        """The credit was abandoned half-way (the task was cancelled)."""


class _Psk2Credit(_Credit):
    __slots__ = ("decision", "iv", "psk2")

    def __init__(
        self,
        receiver: AsyncReceiver,
        account: str,
        amount: int,
        key: str,
        payment: IncomingPayment | None,
        psk2: Psk2Receiver,
        decision: Acceptance,
        iv: bytes,
    ) -> None:
        # every slot of the class and its base set here, in one step
        self.receiver, self.account, self.amount = receiver, account, amount
        self.key, self.payment, self.channel, self.index = key, payment, None, 0
        self.psk2, self.decision, self.iv = psk2, decision, iv

    def settle(self, result: AddResult | _Refusal) -> IlpReply:
        if isinstance(result, _Refusal):
            if result.code != "F99":
                return IlpReject(result.code, self.receiver.address, result.message)
            return self.psk2.refuse(self.decision, iv=self.iv, message=result.message)
        fulfill = self.psk2.fulfill(self.decision, iv=self.iv, already_credited=not result.applied)
        payment = self.payment
        if result.applied and payment is not None:
            receiver, account, amount, balance = (
                self.receiver,
                self.account,
                self.amount,
                result.balance,
            )
            at = datetime.now(UTC)
            receiver._emit(PaymentEvent("received", account, amount, balance, payment, at))
            if receiver._is_complete(self.psk2, self.decision):
                receiver._emit(PaymentEvent("completed", account, amount, balance, payment, at))
        return fulfill

    def refuse(self, verdict: _Refusal) -> IlpReply:
        return self.psk2.refuse(
            self.decision, iv=self.iv, code=verdict.code, message=verdict.message
        )


class _StreamCredit(_Credit):
    __slots__ = ("decision", "iv", "server")

    def __init__(
        self,
        receiver: AsyncReceiver,
        payment: IncomingPayment | None,
        server: StreamServer,
        decision: StreamCredit,
        iv: bytes,
    ) -> None:
        # every slot of the class and its base set here, in one step
        self.receiver, self.account, self.amount = receiver, decision.account, decision.amount
        self.key, self.payment, self.channel, self.index = (
            decision.idempotency_key,
            payment,
            None,
            0,
        )
        self.server, self.decision, self.iv = server, decision, iv

    def settle(self, result: AddResult | _Refusal) -> IlpReply:
        if isinstance(result, _Refusal):
            return self.server.refuse(
                self.decision,
                iv=self.iv,
                code=result.code,
                message=result.message,
                limit_reached=result.limit,
            )
        fulfill = self.server.fulfill(self.decision, applied=result.applied, iv=self.iv)
        payment = self.payment
        if result.applied and payment is not None:
            event = PaymentEvent("received", self.account, self.amount, result.balance, payment)
            self.receiver._emit(event)
        return fulfill

    def refuse(self, verdict: _Refusal) -> IlpReply:
        return self.server.refuse(
            self.decision, iv=self.iv, code=verdict.code, message=verdict.message
        )

    def cancelled(self) -> None:
        self.server.refuse(self.decision, iv=self.iv, code="T00")  # settle it


def _is_stream_destination(destination: str, address: str) -> bool:
    """STREAM destinations are <address>.<token>: one segment after our address; PSK2
    ones have at least two (<receiverId>.<token>)."""
    start = len(address) + 1
    return (
        destination.startswith(address)
        and destination[start - 1 : start] == "."
        and destination.find(".", start) < 0
    )


def _connection_payment_id(connection_id: str) -> bytes:
    """16 bytes naming a STREAM connection, for ``IncomingPayment.payment_id``."""
    return hashlib.sha256(connection_id.encode("ascii", "replace")).digest()[:16]


def _account_of(decision: Acceptance) -> str:
    """The account bound into the destination's authenticated key."""
    key = decision.key
    return key.decode("utf-8", "replace") if key else DEFAULT_ACCOUNT


def _load_secret(secret: bytes | str | None) -> bytes:
    if secret is None:
        return os.urandom(32)
    if isinstance(secret, str):
        try:
            raw = bytes.fromhex(secret.strip())
        except ValueError:
            raise ConfigError(
                "secret", "a receiver secret given as text must be hex (64+ hex digits)"
            ) from None
    else:
        raw = bytes(secret)
    if len(raw) < 32:
        raise ConfigError("secret", "the receiver secret must be at least 32 bytes")
    return raw


#: Seconds between two attempts to reach an uplink that was down at start-up (capped
#: exponential backoff with jitter, from :data:`_RECONNECT_FIRST`).
_RECONNECT_FIRST = 0.2
_RECONNECT_MAX = 2.0


def _describe_link(link: Link) -> str:
    """Where ``link`` goes, without credentials (for logs)."""
    url = getattr(link, "url", None)
    where = getattr(url, "ws_url", None)
    return str(where) if where else type(link).__name__


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ForeignPackets:
    """Packets that reached this receiver for destinations another receiver issued.

    They arrive when two receivers with different secrets share one uplink account: the
    connector gives both the same ILP address and delivers each packet to one of them,
    so the other's payments fail (``F06 'Payment is not for this receiver'`` for PSK2,
    ``F02`` for STREAM).  The first one is logged (once per process, as a warning naming
    the cure); :meth:`report` is what ``/health`` shows.
    """

    #: Most foreign receiver ids remembered.
    MAX_IDS = 8

    def __init__(self) -> None:
        self.count = 0
        self.receiver_ids: list[str] = []
        self.stream_tokens = 0
        self.first_seen: datetime | None = None
        self.last_seen: datetime | None = None

    @property
    def detected(self) -> bool:
        """Whether any foreign packet arrived."""
        return self.count > 0

    def note(self, receiver_id: str | None, *, ours: str, uplink: str, address: str) -> None:
        """Count one foreign packet (``receiver_id``: the PSK2 receiver id it names; None
        for a STREAM token that does not open under our secret)."""
        now = datetime.now(UTC)
        self.count += 1
        self.last_seen = now
        if receiver_id is None:
            self.stream_tokens += 1
        elif receiver_id not in self.receiver_ids and len(self.receiver_ids) < self.MAX_IDS:
            self.receiver_ids.append(receiver_id)
        if self.first_seen is None:
            self.first_seen = now
            which = (
                f"receiver id {receiver_id}, ours is {ours}"
                if receiver_id is not None
                else "a STREAM token issued under another secret"
            )
            log.warning(
                "another receiver uses this uplink account (%s, address %s): a packet for "
                "%s arrived here. Two receivers with different secrets share the account, "
                "so the connector delivers some of each one's payments to the other, where "
                "they fail (F06 'Payment is not for this receiver'). Give each app its own "
                "uplink account, or give every process of one app the same secret "
                "(ILP_RECEIVER_SECRET_FILE).",
                uplink,
                address,
                which,
            )

    def report(self) -> dict[str, object]:
        """What ``/health`` shows (JSON-ready)."""
        return {
            "detected": self.detected,
            "foreign_packets": self.count,
            "foreign_receiver_ids": list(self.receiver_ids),
            "foreign_stream_tokens": self.stream_tokens,
            "first_seen": None if self.first_seen is None else self.first_seen.isoformat(),
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
        }


class AsyncReceiver:
    """A STREAM and PSK2 receiver behind SPSP on an uplink, crediting a balance store
    (asyncio API).

    ``uplink`` is a URL (``btp+ws://user:token@host:port``) or a :class:`Link`; ``store``
    a :class:`BalanceStore`, a path/URL for :func:`~ilp_receiver.stores.open_store`, or
    ``None`` for an in-memory store.  ``secret`` (32+ bytes, or hex) must stay the same
    across restarts and across processes that share the store, so that any process can
    fulfil a payment to any address another one issued.  ``stream=False`` serves PSK2
    only (SPSP v4 queries then get 406); ``stream_limits`` bounds the STREAM server
    (connections, idle time, buffers; ``docs/stream.md``).

    When the uplink cannot be reached at :meth:`start`, it raises
    :class:`~ilp_receiver.errors.UplinkUnavailableError` with the reason; with
    ``require_uplink=False`` -- what the web adapters build by default -- the receiver
    starts anyway and keeps trying in the background (:attr:`ready` is False until it
    connects; the web layer answers ``503 UplinkUnavailable`` meanwhile).
    """

    def __init__(
        self,
        uplink: str | Link,
        *,
        secret: bytes | str | None = None,
        store: BalanceStore | str | None = None,
        on_payment: PaymentHook | None = None,
        max_balance: int | None = None,
        receiver_name: str | None = None,
        spsp_max_age: int = 60,
        event_queue_size: int = 10_000,
        static_config: PeerConfig | None = None,
        stream: bool = True,
        stream_limits: StreamLimits | None = None,
        require_uplink: bool = True,
        webhooks: WebhookConfig | None = None,
    ) -> None:
        self._link = open_link(uplink) if isinstance(uplink, str) else uplink
        self._uplink = Uplink(self._link, static_config=static_config)
        receiver_secret = _load_secret(secret)
        self._secrets = ReceiverSecrets(receiver_secret)
        #: whether STREAM (SPSP v4) is served beside PSK2
        self.stream_enabled = stream
        self._stream_secrets = StreamServerSecrets.from_receiver_secret(receiver_secret)
        self._stream_limits = stream_limits or StreamLimits()
        self._stream: StreamServer | None = None
        self._stream_callbacks: list[StreamEventCallback] = []
        self._stream_policies: list[StreamOpenPolicy] = []
        self._store_spec = store
        self._store: BalanceStore | None = store if isinstance(store, BalanceStore) else None
        self._hook = on_payment
        if max_balance is not None and (
            type(max_balance) is not int or not 0 <= max_balance <= _UINT64_MAX
        ):
            raise ConfigError("max_balance", f"must be an integer in 0..{_UINT64_MAX}")
        #: the most any account may hold; payments that would pass it are rejected (the
        #: sender keeps its money).  None means 2**64 - 1, the largest balance SPSP can
        #: state, which is therefore enforced too.
        self.max_balance = max_balance
        self.receiver_name = receiver_name
        self.spsp_max_age = spsp_max_age
        self._psk2: Psk2Receiver | None = None
        # payment events waiting for the dispatcher (at most event_queue_size), and the
        # future it waits on while there are none
        self._events: deque[PaymentEvent] = deque()
        self._event_queue_size = event_queue_size
        self._events_waiter: asyncio.Future[None] | None = None
        self._callbacks: Callbacks[PaymentEvent] = Callbacks(log, "payment event callback failed")
        self._dispatcher: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._subscribers: list[asyncio.Queue[PaymentEvent]] = []
        self._background: set[asyncio.Future[None]] = set()
        #: Events dropped because the queue was full (slow application code).
        self.dropped_events = 0
        #: Prepares rejected (T00) because the balance store failed.
        self.store_failures = 0
        #: Credits undone because their Fulfill could not go back on the connection the
        #: Prepare came on, and undos the store failed to make.
        self.reverted_credits = 0
        self.revert_failures = 0
        self._reverts: set[asyncio.Task[None]] = set()
        self._started = False
        #: fail :meth:`start` when the uplink cannot be reached (else start and retry)
        self.require_uplink = require_uplink
        self._ready = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None
        #: why the uplink could not be reached (None once it is connected)
        self.uplink_error: str | None = None
        #: packets for destinations another receiver issued (a shared uplink account)
        self.foreign_packets = ForeignPackets()
        #: signed webhooks (docs/webhooks.md): every credit writes its event to the
        #: store's outbox in the same transaction; None: no webhooks
        self.webhooks = webhooks
        #: the in-process dispatcher (``webhooks.dispatch``), once started
        self.webhook_dispatcher: WebhookDispatcher | None = None
        self._asset_json: tuple[object, str] = (None, "null")
        # the data of the last PSK2 request event: (uplink config, protocol, JSON text)
        self._request_data: tuple[object, str, str] = (None, "", "")
        self._webhook_sources: list[WebhookSource] = []
        # STREAM connections whose payment.completed went into their closing credit's
        # transaction (its ConnectionClosed event then writes nothing)
        self._completed_with_credit: set[str] = set()
        self._stopping = asyncio.Event()  # set while stop() runs
        # Prepares read together are answered together (one store call) unless a hook
        # or webhooks make each wait on its own
        batch = self.handle_prepares if on_payment is None and webhooks is None else None
        self._link.set_handler(self.handle_prepare, batch=batch)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, connect the uplink and learn our address by IL-DCP.

        An unreachable uplink raises :class:`~ilp_receiver.errors.UplinkUnavailableError`
        (``require_uplink``, the default); with ``require_uplink=False`` the receiver
        starts without it and keeps trying in the background (:attr:`ready`,
        :meth:`wait_ready`).
        """
        if self._started:
            return
        if self._store is None:
            self._store = open_store(
                self._store_spec if isinstance(self._store_spec, str) else None
            )
        if self.webhooks is not None and not self._store.supports_outbox:
            await self._close_store()
            raise ConfigError("webhooks", f"{type(self._store).__name__} has no webhook outbox")
        try:
            await self._uplink.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            where = _describe_link(self._link)
            self.uplink_error = _reason(exc)
            if self.require_uplink:
                await self._close_store()
                raise UplinkUnavailableError(
                    f"the uplink {where} is unreachable: {self.uplink_error}"
                ) from exc
            log.warning(
                "the uplink %s is unreachable (%s): starting without it; paid routes and "
                "payment pointers answer 503 until it connects, retrying in the background",
                where,
                self.uplink_error,
            )
            self._connecting = asyncio.create_task(
                self._keep_connecting(where), name="receiver-uplink"
            )
        else:
            self._uplink_ready()
        self._dispatcher = asyncio.create_task(self._dispatch_events(), name="receiver-events")
        if self.webhooks is not None and self.webhooks.dispatch and self.webhooks.urls:
            from .webhooks.dispatcher import WebhookDispatcher

            self.webhook_dispatcher = WebhookDispatcher(self.store, self.webhooks)
            await self.webhook_dispatcher.start()
        if self.stream_enabled:
            self._expirer = asyncio.create_task(
                self._expire_stream_connections(), name="receiver-stream-expiry"
            )
        self._started = True

    def _uplink_ready(self) -> None:
        self.uplink_error = None
        self._ready.set()
        log.info("receiver listening at %s", self.address)

    async def _keep_connecting(self, where: str) -> None:
        """Try the uplink again (capped exponential backoff with jitter) until it is up."""
        attempt = 0
        while True:
            delay = min(_RECONNECT_MAX, _RECONNECT_FIRST * 2**attempt)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            attempt += 1
            try:
                await self._uplink.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.uplink_error = _reason(exc)
                log.debug("the uplink %s is still unreachable: %s", where, self.uplink_error)
                continue
            log.info("the uplink %s is connected (after %d attempts)", where, attempt + 1)
            self._uplink_ready()
            return

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected since :meth:`start` (the address is known)."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`ready` (at most ``timeout`` seconds); whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.ready

    def health(self) -> dict[str, object]:
        """A JSON-ready report: ``status`` (``ok``, ``starting``: the uplink never
        connected, ``uplink down``), the uplink, the address, and ``shared_account``
        (:class:`ForeignPackets`: another receiver uses our uplink account)."""
        connected = self._link.is_connected
        if not self.ready:
            status = "starting"
        elif not connected:
            status = "uplink down"
        else:
            status = "ok"
        if status == "ok" and self.foreign_packets.detected:
            status = "shared account"
        return {
            "status": status,
            "uplink": {
                "url": _describe_link(self._link),
                "connected": connected,
                "error": self.uplink_error,
            },
            "address": self.address if self.ready else None,
            "shared_account": self.foreign_packets.report(),
        }

    async def _close_store(self) -> None:
        if self._store is not None and not isinstance(self._store_spec, BalanceStore):
            await self._store.close()
            self._store = None

    async def stop(self) -> None:
        """Disconnect, flush events and close the store."""
        if not self._started:
            return
        self._started = False
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        self._ready.clear()
        await self._uplink.stop()
        if self._reverts:  # credits whose Fulfill could not go back: undone before closing
            await asyncio.wait(list(self._reverts), timeout=10)
        for task in (self._dispatcher, self._expirer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._expirer = None
        if self._background:  # outbox writes of completed payments (a last try each)
            self._stopping.set()
            await asyncio.wait(list(self._background), timeout=10)
            self._stopping.clear()
        dispatcher, self.webhook_dispatcher = self.webhook_dispatcher, None
        if dispatcher is not None:
            await dispatcher.stop()
        if self._store is not None and not isinstance(self._store_spec, BalanceStore):
            await self._store.close()

    async def __aenter__(self) -> AsyncReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- facts -----------------------------------------------------------------------

    @property
    def link(self) -> Link:
        """The uplink transport."""
        return self._link

    @property
    def config(self) -> PeerConfig:
        """Address and asset learned from the parent (IL-DCP)."""
        return self._uplink.config

    @property
    def address(self) -> str:
        """Our ILP address."""
        return self._uplink.config.address

    @property
    def store(self) -> BalanceStore:
        """The balance store (after :meth:`start`)."""
        if self._store is None:
            raise RuntimeError("the receiver has not started")
        return self._store

    def _receiver(self) -> Psk2Receiver:
        address = self.address
        if self._psk2 is None or self._psk2.address != address:
            self._psk2 = Psk2Receiver(self._secrets, address)
        return self._psk2

    @property
    def stream_server(self) -> StreamServer:
        """The sans-I/O STREAM server (created once the address is known)."""
        address = self.address
        server = self._stream
        if server is None:
            config = self.config
            server = StreamServer(
                self._stream_secrets,
                asset_code=config.asset_code,
                asset_scale=config.asset_scale,
                limits=self._stream_limits,
                receive_max=self._stream_setup,
                default_account=DEFAULT_ACCOUNT,
            )
            self._stream = server
        if server.address != address:
            server.address = address
        return server

    async def balance(self, account: str = DEFAULT_ACCOUNT) -> int:
        """The balance of ``account`` in the store."""
        return await self.store.balance(account)

    # -- issuing destinations ----------------------------------------------------------

    def issue(
        self,
        account: str = DEFAULT_ACCOUNT,
        *,
        segments: tuple[str, ...] = (),
        token: bytes | None = None,
    ) -> IssuedSecret:
        """A fresh (destination address, shared secret) pair bound to ``account``.

        The account name is part of the authenticated token, so money sent to the
        address can only be credited to that account.  ``segments`` are spliced in front
        of the PSK2 segments (Web Monetization page ids); they are not authenticated.
        """
        key = account.encode("utf-8")
        if len(key) > MAX_ACCOUNT_BYTES:
            raise ConfigError("account", f"account names are at most {MAX_ACCOUNT_BYTES} bytes")
        return self._secrets.issue(
            self.address, token or os.urandom(TOKEN_BYTES), key, segments=segments
        )

    def issue_stream(
        self,
        account: str = DEFAULT_ACCOUNT,
        *,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> tuple[str, bytes]:
        """A fresh STREAM (destination address, shared secret) pair bound to ``account``.

        The account travels in the connection tag, authenticated inside the encrypted
        token, so money sent there can only be credited to it.  ``receipt_nonce`` (16
        bytes) and ``receipt_secret`` (32) switch RFC 39 receipts on for connections to
        this destination.
        """
        issued = self.stream_server.issue(
            account,
            token_nonce=os.urandom(18),
            iv=os.urandom(12),
            receipt_nonce=receipt_nonce,
            receipt_secret=receipt_secret,
        )
        return issued.destination, issued.shared_secret

    async def spsp_response(
        self,
        account: str = DEFAULT_ACCOUNT,
        *,
        maximum: int | None = None,
        receiver_info: dict[str, str] | None = None,
        protocol: SetupProtocol = "psk2",
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> SpspResponse:
        """The SPSP response body for ``account``: a fresh address and secret, balance,
        asset.  ``protocol="stream"`` gives an SPSP v4 (STREAM) response, with receipts
        when ``receipt_nonce`` and ``receipt_secret`` are given."""
        receipts: bool | None = None
        if protocol == "stream":
            if not self.stream_enabled:
                raise ConfigError("stream", "this receiver serves PSK2 only (stream=False)")
            destination, shared_secret = self.issue_stream(
                account, receipt_nonce=receipt_nonce, receipt_secret=receipt_secret
            )
            receipts = receipt_nonce is not None
        else:
            destination, shared_secret = self.issue(account)
        current = await self.store.balance(account)
        cap = maximum if maximum is not None else self.max_balance
        info = dict(receiver_info or {})
        if self.receiver_name and "name" not in info:
            info["name"] = self.receiver_name
        # A balance beyond UInt64 cannot arise from this receiver's credits (they are
        # capped at 2**64 - 1), but a store may hold one (an older version, a manual
        # edit): SPSP shows it saturated rather than failing every query.
        return SpspResponse(
            destination_account=destination,
            shared_secret=shared_secret,
            balance=SpspBalance(
                maximum=_UINT64_MAX if cap is None else cap, current=min(current, _UINT64_MAX)
            ),
            asset=AssetInfo(code=self.config.asset_code, scale=self.config.asset_scale),
            receiver_info=info or None,
            protocol=protocol,
            receipts_enabled=receipts,
        )

    # -- the packet path -------------------------------------------------------------

    async def handle_prepare(self, prepare: IlpPrepare) -> IlpReply:
        """Answer one incoming Prepare: Fulfill (after crediting) or Reject."""
        if self.stream_enabled and _is_stream_destination(prepare.destination, self.address):
            return await self._handle_stream(prepare)
        return await self._handle_psk2(prepare)

    async def handle_prepares(
        self, prepares: Sequence[IlpPrepare], channels: Sequence[ReplyChannel | None]
    ) -> list[IlpReply]:
        """Answer Prepares that arrived together (the link's batch handler): each is
        decided, credited and answered as :meth:`handle_prepare` would, with one store
        call for all their credits (one group commit) and no task of their own.

        ``channels[i]`` is the connection ``prepares[i]`` came on (what
        :func:`~ilp_receiver.links.base.reply_channel` is for :meth:`handle_prepare`).
        With a payment hook or webhooks, which wait on the application or on the store
        per packet, each Prepare is handled on its own, concurrently.
        """
        if self._hook is not None or self.webhooks is not None:
            handle = self.handle_prepare
            return list(
                await asyncio.gather(
                    *(handle_on(handle, p, c) for p, c in zip(prepares, channels, strict=True))
                )
            )
        replies: list[IlpReply | None] = []
        credits: list[_Credit] = []
        address = self.address if self.stream_enabled else None  # looked up once
        for prepare, channel in zip(prepares, channels, strict=True):
            if address is not None and _is_stream_destination(prepare.destination, address):
                decided: IlpReply | _Credit = self._stream_decide(prepare)
            else:
                decided = self._psk2_decide(prepare)
            if isinstance(decided, _Credit):
                decided.index = len(replies)
                decided.channel = channel
                credits.append(decided)
                replies.append(None)
            else:
                replies.append(decided)
        stream = self._stream
        if stream is not None:  # what the decisions did: connections opened or closed
            self._stream_events(stream.events())
        if credits:
            try:
                results = await self._credit_each(credits)
            except BaseException:
                for credit in credits:
                    credit.cancelled()  # settle the STREAM ones: cancelled mid-way
                raise
            for credit, result in zip(credits, results, strict=True):
                replies[credit.index] = credit.settle(result)
            if stream is not None:
                self._stream_events(stream.events())
        return cast("list[IlpReply]", replies)

    def _psk2_decide(self, prepare: IlpPrepare) -> IlpReply | _Psk2Credit:
        """The PSK2 decision on ``prepare``: its answer, or the credit it asks for."""
        psk2 = self._receiver()
        # Exactly one encrypted PSK2 response (reject or fulfill) leaves per Prepare, so
        # one fresh IV serves whichever it is.
        iv = os.urandom(12)
        decision = psk2.handle_prepare(prepare, datetime.now(UTC), iv=iv)
        if isinstance(decision, IlpReject):
            if decision.message == NOT_FOR_THIS_RECEIVER:
                foreign = self._secrets.foreign_receiver_id(prepare.destination, self.address)
                if foreign is not None:
                    self._note_foreign(foreign)
            return decision
        if isinstance(decision, UnfulfillableRequest):
            # a draft-2 quote or a request asking for more than arrived: the encrypted
            # error tells the sender how much arrived
            return psk2.refuse(decision, iv=iv)
        # build the application's view of the payment only when someone will look at it
        listening = bool(self._callbacks or self._subscribers)
        payment = self._payment(prepare, decision) if self._hook is not None or listening else None
        account = payment.account if payment is not None else _account_of(decision)
        return _Psk2Credit(
            self, account, prepare.amount, prepare.execution_condition.hex(), payment, psk2,
            decision, iv,
        )  # fmt: skip

    async def _handle_psk2(self, prepare: IlpPrepare) -> IlpReply:
        """The PSK2 path: decide, ask the application, credit, then fulfil."""
        credit = self._psk2_decide(prepare)
        if not isinstance(credit, _Psk2Credit):
            return credit
        if credit.payment is not None and self._hook is not None:
            verdict = await self._ask_hook(credit.payment)
            if isinstance(verdict, _Refusal):
                return credit.refuse(verdict)
            credit.account = verdict
        outbox = (
            self._psk2_outbox(credit.account, credit.amount, credit.decision)
            if self.webhooks is not None
            else ()
        )
        return credit.settle(await self._credit(credit, outbox))

    def _note_foreign(self, receiver_id: str | None) -> None:
        self.foreign_packets.note(
            receiver_id,
            ours=self._secrets.receiver_id,
            uplink=_describe_link(self._link),
            address=self.address,
        )

    @staticmethod
    def _is_complete(psk2: Psk2Receiver, decision: Acceptance) -> bool:
        if decision.format is Psk2Format.DRAFT2:
            return True
        record = psk2.payment_record(decision.token + decision.key, decision.payment_id)
        return record is not None and record.finished

    @staticmethod
    def _payment(prepare: IlpPrepare, decision: Acceptance) -> IncomingPayment:
        return IncomingPayment(
            account=_account_of(decision),
            amount=prepare.amount,
            destination=prepare.destination,
            format="psk2-draft1" if decision.format is Psk2Format.DRAFT1 else "psk2-draft2",
            payment_id=decision.payment_id if decision.format is Psk2Format.DRAFT1 else None,
            sequence=(decision.sequence if decision.request_id is None else decision.request_id),
            last_chunk=decision.last_chunk,
            application_data=decision.data,
            segments=decision.app_segments,
            condition=prepare.execution_condition,
        )

    def _stream_decide(self, prepare: IlpPrepare) -> IlpReply | _StreamCredit:
        """The STREAM decision on ``prepare``: its answer, or the credit it asks for
        (which must be settled: :meth:`_StreamCredit.settle` or ``cancelled``)."""
        server = self.stream_server
        # one IV serves whichever encrypted reply leaves for this Prepare
        iv = os.urandom(12)
        decision = server.handle_prepare(prepare, datetime.now(UTC), time.monotonic(), iv=iv)
        if isinstance(decision, StreamCredit):
            listening = bool(self._callbacks or self._subscribers)
            payment = (
                self._stream_payment(prepare, decision)
                if self._hook is not None or listening
                else None
            )
            return _StreamCredit(self, payment, server, decision, iv)
        if isinstance(decision, IlpReject) and decision.code == "F02":
            self._note_foreign(None)  # a STREAM token that does not open under our secret
        return decision

    async def _handle_stream(self, prepare: IlpPrepare) -> IlpReply:
        """The STREAM path: decide, ask the application, credit, then fulfil."""
        credit = self._stream_decide(prepare)
        if not isinstance(credit, _StreamCredit):
            writing = self._stream_events(self.stream_server.events())
            if writing is not None:  # a close: its notice is stored before the reply
                await asyncio.wait({writing}, timeout=_COMPLETED_WAIT)
            return credit
        try:
            reply = await self._credit_stream(credit)
        finally:
            writing = self._stream_events(credit.server.events())
        if writing is not None:
            await asyncio.wait({writing}, timeout=_COMPLETED_WAIT)
        return reply

    async def _credit_stream(self, credit: _StreamCredit) -> IlpReply:
        try:
            if credit.payment is not None and self._hook is not None:
                verdict = await self._ask_hook(credit.payment)
                if isinstance(verdict, _Refusal):
                    return credit.refuse(verdict)
                credit.account = verdict
            outbox = (
                self._stream_outbox(credit.account, credit.decision)
                if self.webhooks is not None
                else ()
            )
            result = await self._credit(credit, outbox)
            if (
                credit.decision.closes_connection
                and outbox
                and isinstance(result, AddResult)
                and result.applied
            ):
                # payment.completed was written with this credit
                self._completed_with_credit.add(credit.decision.connection_id)
        except BaseException:
            credit.cancelled()
            raise
        return credit.settle(result)

    async def _ask_hook(self, payment: IncomingPayment) -> str | _Refusal:
        """The application hook's verdict on ``payment`` (PSK2 or STREAM): the account to
        credit, or a refusal (``False``: F99; an :class:`IlpError`: its code)."""
        assert self._hook is not None
        try:
            verdict = self._hook(payment)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except IlpError as exc:
            return _Refusal(exc.code, exc.message)
        if verdict is False:
            return _Refusal("F99", "payment refused by the receiver")
        return verdict if isinstance(verdict, str) else payment.account

    # -- webhook events (written with the credit: docs/webhooks.md) -------------------------

    def _event_data(self, protocol: str, payment_id: str | None) -> str:
        """The constant part of an event's ``data`` as JSON text (built by hand: it is
        on the path of every packet; ``protocol`` and ``payment_id`` are plain ASCII)."""
        config = self._uplink.config if self.ready else None
        if config is not None and self._asset_json[0] is not config:
            asset = {"code": config.asset_code, "scale": config.asset_scale}
            self._asset_json = (config, json.dumps(asset, separators=(",", ":"), sort_keys=True))
        if payment_id is None:  # PSK2 requests: the same text for every packet
            cached = self._request_data
            if cached[0] is config and cached[1] == protocol:
                return cached[2]
            text = self._event_data_text(config, protocol, "null")
            self._request_data = (config, protocol, text)
            return text
        return self._event_data_text(config, protocol, f'"{payment_id}"')

    def _event_data_text(self, config: object, protocol: str, pid: str) -> str:
        """``data`` JSON text with ``pid`` (a JSON value) as payment id."""
        fields = f'"payment_id":{pid},"protocol":"{protocol}"'
        if config is None:
            return "{" + fields + "}"
        return '{"asset":' + self._asset_json[1] + "," + fields + "}"

    def _psk2_outbox(self, account: str, amount: int, decision: Acceptance) -> list[OutboxEntry]:
        """``payment.received`` for a PSK2 credit (draft 1: merged per payment id within
        the window), and ``payment.completed`` with the chunk that finishes a draft-1
        payment."""
        assert self.webhooks is not None
        if decision.format is Psk2Format.DRAFT1:
            payment_id: str | None = decision.payment_id.hex()
            protocol = "psk2-draft1"
            merge_key: str | None = f"{account}\x1fpsk2:{payment_id}"
        else:
            payment_id, protocol, merge_key = None, "psk2-draft2", None
        data = self._event_data(protocol, payment_id)
        window = self.webhooks.window
        events = [OutboxEntry("payment.received", account, amount, data, merge_key, window)]
        if decision.format is Psk2Format.DRAFT1:
            total = decision.received_before + amount
            expected = decision.payment_amount
            if decision.last_chunk or (0 < expected < _UINT64_MAX and total >= expected):
                events.append(OutboxEntry("payment.completed", account, total, data, None, window))
        return events

    def _stream_outbox(self, account: str, credit: StreamCredit) -> list[OutboxEntry]:
        """``payment.received`` for a STREAM credit, merged per connection; with the
        credit that closes its connection also ``payment.completed`` (in the credit's
        transaction: the close cannot be credited without its notice)."""
        assert self.webhooks is not None
        payment_id = _connection_payment_id(credit.connection_id).hex()
        data = self._event_data("stream", payment_id)
        window = self.webhooks.window
        merge_key = f"{account}\x1fstream:{payment_id}"
        events = [OutboxEntry("payment.received", account, credit.amount, data, merge_key, window)]
        if credit.closes_connection:
            total = credit.received_before + credit.amount
            events.append(OutboxEntry("payment.completed", account, total, data, None, window))
        return events

    def add_webhook_source(self, source: WebhookSource) -> None:
        """Let ``source`` add events to every credit written with webhooks on (the
        :class:`~ilp_receiver.webpayments.OrderBook` adds ``order.paid`` /
        ``order.overpaid``).  A source that raises refuses the packet (T00), as a
        failing store does: nothing is credited without its events."""
        if source not in self._webhook_sources:
            self._webhook_sources.append(source)

    def _spawn_stream_completed_event(self, event: ConnectionClosed) -> asyncio.Future[None]:
        """Write ``payment.completed`` for a STREAM connection the client closed after
        paying with a packet that carried no money (a close with money writes it in
        that credit's transaction, :meth:`_stream_outbox`).  It describes no credit, so
        it is written on its own, retried while the store fails (the packet of the
        close waits up to ``_COMPLETED_WAIT`` for it); the returned task ends when it is
        written or the receiver stops."""
        assert self.webhooks is not None
        payment_id = _connection_payment_id(event.connection_id).hex()
        entry = OutboxEntry(
            "payment.completed",
            event.account,
            event.total_received,
            self._event_data("stream", payment_id),
            None,
            self.webhooks.window,
        )

        async def write() -> None:
            delay = _COMPLETED_RETRY_FIRST
            failures = 0
            while True:
                try:
                    await self.store.outbox_write([entry])
                    if failures:
                        log.info("wrote a STREAM payment.completed after %d failures", failures)
                    return
                except Exception:
                    failures += 1
                    if not self._started:
                        log.error(
                            "lost the payment.completed event of a STREAM payment of %d "
                            "to %s: the store failed until the receiver stopped",
                            entry.amount,
                            entry.account,
                        )
                        return
                    if failures == 1:
                        log.warning(
                            "could not write the payment.completed event of a STREAM "
                            "payment; retrying"
                        )
                with contextlib.suppress(TimeoutError):  # stop() wakes it for a last try
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, _COMPLETED_RETRY_MAX)

        task = asyncio.ensure_future(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _credit(
        self, credit: _Credit, outbox: list[OutboxEntry] | tuple[()] = ()
    ) -> AddResult | _Refusal:
        """Credit ``credit.amount`` to ``credit.account`` in the store, exactly once per
        idempotency key, within the balance cap; a refusal when the cap would be passed
        (F99) or the store fails (T00: nothing is fulfilled).

        Only while the Prepare's connection can still take the Fulfill back (the
        link's :func:`~ilp_receiver.links.base.reply_channel`): closed before the
        credit, nothing is credited (T01, nobody will read it); closed by the time the
        credit is committed, or the Fulfill could not be handed back, the credit is
        reverted."""
        channel = reply_channel()
        if channel is not None and not channel.is_open:
            return _Refusal("T01", _CONNECTION_CLOSED)
        account, amount = credit.account, credit.amount
        try:
            maximum = _UINT64_MAX if self.max_balance is None else self.max_balance
            if outbox and self._webhook_sources:
                data = outbox[0].data_json()
                for source in self._webhook_sources:
                    outbox = [*outbox, *await source(account, amount, data)]
            if outbox:
                result = await self.store.add_with_outbox(
                    account, amount, outbox, maximum=maximum, idempotency_key=credit.key
                )
            else:
                result = await self.store.add(
                    account, amount, maximum=maximum, idempotency_key=credit.key
                )
        except Exception as exc:
            return self._credit_failed(exc)
        # with webhooks, an undone credit writes payment.reverted (see _revert)
        if self._closed_since(credit, result, channel, outbox[:1]):
            await self._revert(account, amount, credit.key, credit.payment, outbox[:1])
            return _Refusal("T01", _CONNECTION_CLOSED)
        return result

    async def _credit_each(self, credits: list[_Credit]) -> list[AddResult | _Refusal]:
        """:meth:`_credit` for several credits (no webhooks), with one store call."""
        maximum = _UINT64_MAX if self.max_balance is None else self.max_balance
        results: list[AddResult | _Refusal] = []
        asked: list[int] = []
        changes: list[tuple[str, int, int | None, int | None, str | None]] = []
        closed = _Refusal("T01", _CONNECTION_CLOSED)
        for credit in credits:
            channel = credit.channel
            if channel is not None and not channel.is_open:
                results.append(closed)
            else:
                asked.append(len(results))
                results.append(closed)  # replaced below
                changes.append((credit.account, credit.amount, None, maximum, credit.key))
        if not changes:
            return results
        try:
            outcomes = await self.store.add_each(changes)
        except Exception as exc:
            outcomes = [exc] * len(changes)
        undo: list[_Credit] = []
        for i, outcome in zip(asked, outcomes, strict=True):
            credit = credits[i]
            if isinstance(outcome, AddResult):
                if self._closed_since(credit, outcome, credit.channel, ()):
                    undo.append(credit)  # stays T01
                else:
                    results[i] = outcome
            elif isinstance(outcome, Exception):
                results[i] = self._credit_failed(outcome)
            else:
                raise outcome
        if undo:
            await asyncio.gather(
                *(self._revert(c.account, c.amount, c.key, c.payment) for c in undo)
            )
        return results

    def _credit_failed(self, exc: Exception) -> _Refusal:
        """The refusal for a credit the store did not make: F99 at the balance cap,
        T00 when the store failed (logged, counted in :attr:`store_failures`)."""
        if isinstance(exc, BalanceLimitError):
            return _Refusal("F99", "receiver balance limit reached", limit=True)
        self.store_failures += 1
        if self.store_failures in (1, 10, 100) or self.store_failures % 1000 == 0:
            log.error(
                "balance store failed (%d times); not fulfilling",
                self.store_failures,
                exc_info=exc,
            )
        return _Refusal("T00", "receiver temporarily unavailable")

    def _closed_since(
        self,
        credit: _Credit,
        result: AddResult,
        channel: ReplyChannel | None,
        reversal: list[OutboxEntry] | tuple[()],
    ) -> bool:
        """After a credit: True when it applied and its connection closed meanwhile (the
        caller undoes it); otherwise, an applied credit is undone if its Fulfill cannot
        be handed back later (``channel.on_undelivered``)."""
        if channel is None or not result.applied or not self.store.supports_revert:
            return False
        if not channel.is_open:
            return True
        channel.on_undelivered(
            lambda: self._spawn_revert(
                credit.account, credit.amount, credit.key, credit.payment, reversal
            )
        )
        return False

    def _spawn_revert(
        self,
        account: str,
        amount: int,
        idempotency_key: str,
        payment: IncomingPayment | None,
        reversal: list[OutboxEntry] | tuple[()] = (),
    ) -> None:
        task = asyncio.ensure_future(
            self._revert(account, amount, idempotency_key, payment, reversal)
        )
        self._reverts.add(task)
        task.add_done_callback(self._reverts.discard)

    async def _revert(
        self,
        account: str,
        amount: int,
        idempotency_key: str,
        payment: IncomingPayment | None,
        reversal: list[OutboxEntry] | tuple[()] = (),
    ) -> None:
        """Undo a credit whose Fulfill could not go back (the connector never pays it);
        with webhooks, a ``payment.reverted`` event is written in the same transaction."""
        try:
            if reversal:  # the credit's payment.received: its reversal, same payment
                undo = OutboxEntry("payment.reverted", account, amount, reversal[0].data)
                reverted = await self.store.revert(account, amount, idempotency_key, outbox=[undo])
            else:
                reverted = await self.store.revert(account, amount, idempotency_key)
        except Exception:
            self.revert_failures += 1
            log.exception(
                "balance store failed to revert a credit of %d to %s whose Fulfill could "
                "not be handed back: it stays credited",
                amount,
                account,
            )
            return
        if not reverted:
            return
        self.reverted_credits += 1
        n = self.reverted_credits
        if n in (1, 10, 100) or n % 1000 == 0:
            log.warning(
                "reverted a credit of %d to %s: its Fulfill could not go back on the "
                "connection the Prepare came on (%d reverted so far)",
                amount,
                account,
                n,
            )
        if payment is not None:
            with contextlib.suppress(Exception):
                balance = await self.store.balance(account)
                self._emit(PaymentEvent("reverted", account, amount, balance, payment))

    def _stream_payment(self, prepare: IlpPrepare, credit: StreamCredit) -> IncomingPayment:
        return IncomingPayment(
            account=credit.account,
            amount=credit.amount,
            destination=prepare.destination,
            format="stream",
            payment_id=_connection_payment_id(credit.connection_id),
            sequence=credit.sequence,
            last_chunk=credit.closes_connection,
            application_data=b"",
            segments=(),
            condition=prepare.execution_condition,
            connection_id=credit.connection_id,
            streams=credit.streams,
        )

    def _stream_events(self, events: list[StreamEvent]) -> asyncio.Future[None] | None:
        """Hand STREAM events to the callbacks; a connection the client closed after
        receiving money is a finished payment (``completed``).  Returns the write of
        its ``payment.completed`` webhook event when one was started."""
        if not events:
            return None
        writing: asyncio.Future[None] | None = None
        if self.webhooks is not None:
            for event in events:
                if (
                    isinstance(event, ConnectionClosed)
                    and event.reason is CloseReason.CLIENT
                    and event.total_received
                ):
                    if event.connection_id in self._completed_with_credit:
                        self._completed_with_credit.discard(event.connection_id)
                    else:
                        writing = self._spawn_stream_completed_event(event)
        if self._callbacks or self._subscribers:
            for event in events:
                if (
                    isinstance(event, ConnectionClosed)
                    and event.reason is CloseReason.CLIENT
                    and event.total_received
                ):
                    self._spawn_completed(event)
        for callback in self._stream_callbacks:
            for event in events:
                try:
                    callback(event)
                except Exception:
                    log.exception("STREAM event callback failed")
        return writing

    async def _expire_stream_connections(self) -> None:
        """Forget idle STREAM connections (``stream_limits.idle_timeout``)."""
        while True:
            await asyncio.sleep(_EXPIRY_INTERVAL)
            server = self._stream
            if server is not None:
                self._stream_events(list(server.expire(time.monotonic())))

    def _spawn_completed(self, event: ConnectionClosed) -> None:
        """Emit ``completed`` for a STREAM payment closed by a zero-amount packet (the
        usual case: 2.7.1 closes with an unfulfillable close notice); the balance is read
        from the store."""

        async def completed() -> None:
            with contextlib.suppress(Exception):
                balance = await self.store.balance(event.account)
                payment = IncomingPayment(
                    account=event.account,
                    amount=event.total_received,
                    destination=f"{self.address}.{event.connection_id}",
                    format="stream",
                    payment_id=_connection_payment_id(event.connection_id),
                    sequence=0,
                    last_chunk=True,
                    application_data=b"",
                    segments=(),
                    condition=b"",
                    connection_id=event.connection_id,
                    streams=event.stream_totals,
                )
                self._emit(
                    PaymentEvent("completed", event.account, event.total_received, balance, payment)
                )

        task = asyncio.ensure_future(completed())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def on_stream_event(self, callback: StreamEventCallback) -> None:
        """Call ``callback(event)`` for every STREAM event (connections and streams
        opening and closing, :class:`~ilp_receiver.stream.server.DataReceived` with the
        bytes a client sent, money credited), synchronously right after the packet that
        caused it: keep it quick, and answer with :meth:`stream_write`.  Data a client
        sends is not kept once reported (no callback: it is dropped)."""
        self._stream_callbacks.append(callback)

    def on_stream_open(self, policy: StreamOpenPolicy) -> None:
        """Let ``policy(account, stream_id)`` decide about every stream a STREAM client
        opens: its receive limit (a client sends no more than it) and a greeting, bytes
        sent in the reply to the packet that opened it.  Policies are asked in the order
        they were added; the first that does not return None decides.  They run inside
        the packet path: keep them quick and never block."""
        self._stream_policies.append(policy)

    def _stream_setup(self, account: str, stream_id: int) -> int | StreamSetup:
        for policy in self._stream_policies:
            setup = policy(account, stream_id)
            if setup is not None:
                return setup
        return self._stream_limits.default_receive_max

    def stream_write(self, connection_id: str, stream_id: int, data: bytes) -> int:
        """Send ``data`` to a STREAM client on one of its streams; returns the bytes
        accepted (bounded queues).  The bytes travel in the replies to the client's next
        packets (the server never sends Prepares of its own)."""
        return self.stream_server.write(connection_id, stream_id, data)

    def stream_close(self, connection_id: str, stream_id: int) -> None:
        """Close a client's stream from this side (after its queued data is out)."""
        self.stream_server.close_stream(connection_id, stream_id)

    # -- events ------------------------------------------------------------------------

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback`` (sync or async) for every payment event, after the Fulfill."""
        self._callbacks.add(callback)

    def _emit(self, event: PaymentEvent) -> None:
        events = self._events
        if len(events) >= self._event_queue_size:
            self.dropped_events += 1
            if self.dropped_events in (1, 100, 10_000) or self.dropped_events % 100_000 == 0:
                log.warning("payment event queue full; %d events dropped", self.dropped_events)
            return
        events.append(event)
        waiter = self._events_waiter
        if waiter is not None:  # the dispatcher is idle: wake it (once)
            self._events_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _dispatch_events(self) -> None:
        """Hand the payment events to subscribers and callbacks, in order (a deque and
        one wake-up per batch of events instead of a queue operation per event)."""
        events = self._events
        loop = asyncio.get_running_loop()
        while True:
            if not events:
                waiter = self._events_waiter = loop.create_future()
                await waiter
                continue
            event = events.popleft()
            for queue in list(self._subscribers):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
            pending = self._callbacks.deliver(event)
            if pending is not None:
                await pending

    async def events(self, maxsize: int = 1000) -> AsyncGenerator[PaymentEvent, None]:
        """Iterate over payment events as they happen (``async for event in receiver.events()``)."""
        queue: asyncio.Queue[PaymentEvent] = asyncio.Queue(maxsize)
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)


class Receiver:
    """The synchronous facade of :class:`AsyncReceiver` for WSGI apps and scripts.

    Runs the receiver on one shared background event-loop thread (fork-aware).  Takes the
    same arguments as :class:`AsyncReceiver`.
    """

    def __init__(
        self,
        uplink: str | Link,
        *,
        portal: BlockingPortal | None = None,
        **options: object,
    ) -> None:
        self._portal = portal or default_portal()
        self._options = options
        self._uplink_arg = uplink
        self._async: AsyncReceiver | None = None

    @property
    def portal(self) -> BlockingPortal:
        """The background event-loop thread this receiver runs on."""
        return self._portal

    @property
    def async_receiver(self) -> AsyncReceiver:
        """The underlying AsyncReceiver (after :meth:`start`)."""
        if self._async is None:
            raise RuntimeError("the receiver has not started")
        return self._async

    def start(self) -> None:
        """Start the receiver on the background loop; blocks until connected (or, with
        ``require_uplink=False``, until it retries an unreachable uplink in the
        background; :attr:`ready`)."""
        if self._async is not None:
            return

        async def create_and_start() -> AsyncReceiver:
            receiver = AsyncReceiver(self._uplink_arg, **self._options)  # type: ignore[arg-type]
            await receiver.start()
            return receiver

        self._async = self._portal.call(create_and_start)

    def stop(self) -> None:
        """Stop the receiver."""
        if self._async is not None:
            self._portal.call(self._async.stop)
            self._async = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """Our ILP address."""
        return self.async_receiver.address

    @property
    def ready(self) -> bool:
        """Whether the uplink has connected (see :attr:`AsyncReceiver.ready`)."""
        return self._async is not None and self._async.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until :attr:`ready` (at most ``timeout`` seconds); whether it is."""
        return self._portal.call(self.async_receiver.wait_ready, timeout)

    def balance(self, account: str = DEFAULT_ACCOUNT) -> int:
        """The balance of ``account``."""
        return self._portal.call(self.async_receiver.balance, account)

    def spsp_response(self, account: str = DEFAULT_ACCOUNT, **options: object) -> SpspResponse:
        """See :meth:`AsyncReceiver.spsp_response`."""
        return self._portal.call(self.async_receiver.spsp_response, account, **options)  # type: ignore[arg-type]

    def issue(self, account: str = DEFAULT_ACCOUNT) -> IssuedSecret:
        """See :meth:`AsyncReceiver.issue`."""
        return self.async_receiver.issue(account)
