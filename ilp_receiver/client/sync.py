"""Synchronous facades of the paying client, for scripts and WSGI apps.

:class:`PaymentClient` and :class:`HttpIlpClient` run their asyncio counterparts
(:class:`~ilp_receiver.client.AsyncPaymentClient`,
:class:`~ilp_receiver.client.AsyncHttpIlpClient`) on the process-wide background loop
of :func:`ilp_receiver.portal.default_portal` -- never a fresh event loop per call.
Callbacks (``progress``) run on that loop's thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..links.base import Link
from ..links.uplink import PeerConfig
from ..portal import BlockingPortal, default_portal
from ..spsp import SpspResponse
from .http_ilp import AsyncHttpIlpClient, HttpIlpResponse
from .payer import AsyncPaymentClient, PaymentTarget
from .results import PaymentResult, ProtocolChoice, Psk2Destination, QuoteResult, StreamDestination

__all__ = ["HttpIlpClient", "PaymentClient"]


class PaymentClient:
    """The blocking twin of :class:`~ilp_receiver.client.AsyncPaymentClient`.

    Takes the same arguments (plus ``portal``), ``protocol="auto"|"stream"|"psk2"``
    included; every method blocks until done::

        with PaymentClient("btp+ws://:token@localhost:7768") as client:
            result = client.pay("$example.com/bob", 1000)   # STREAM when offered
    """

    def __init__(
        self,
        uplink: str | Link | None = None,
        *,
        portal: BlockingPortal | None = None,
        **options: Any,
    ) -> None:
        self._portal = portal or default_portal()
        self._uplink = uplink
        self._options = options
        self._async: AsyncPaymentClient | None = None

    @classmethod
    def connect(cls, uplink: str | Link, **options: Any) -> PaymentClient:
        """Create a client on ``uplink`` and connect it."""
        client = cls(uplink, **options)
        client.start()
        return client

    @property
    def portal(self) -> BlockingPortal:
        """The portal the client runs on."""
        return self._portal

    @property
    def async_client(self) -> AsyncPaymentClient:
        """The underlying asyncio client (created on first use, on the portal's loop)."""
        if self._async is None:

            async def create() -> AsyncPaymentClient:
                return AsyncPaymentClient(self._uplink, **self._options)

            self._async = self._portal.call(create)
        return self._async

    def start(self) -> None:
        """Connect the uplink and learn our address (IL-DCP)."""
        self._portal.call(self.async_client.start)

    def close(self) -> None:
        """Disconnect and release the HTTP session."""
        if self._async is not None:
            self._portal.call(self._async.close)

    def __enter__(self) -> PaymentClient:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def config(self) -> PeerConfig | None:
        """See :attr:`AsyncPaymentClient.config`."""
        return self.async_client.config

    @property
    def address(self) -> str | None:
        """See :attr:`AsyncPaymentClient.address`."""
        return self.async_client.address

    def resolve(self, pointer_or_url: str) -> str:
        """See :meth:`AsyncPaymentClient.resolve`."""
        return self.async_client.resolve(pointer_or_url)

    def query(
        self,
        pointer_or_url: str,
        *,
        use_cache: bool = True,
        protocol: ProtocolChoice | None = None,
    ) -> SpspResponse:
        """See :meth:`AsyncPaymentClient.query`."""
        return self._portal.call(
            self.async_client.query, pointer_or_url, use_cache=use_cache, protocol=protocol
        )

    def setup(
        self, target: PaymentTarget, *, protocol: ProtocolChoice | None = None
    ) -> Psk2Destination | StreamDestination:
        """See :meth:`AsyncPaymentClient.setup`."""
        return self._portal.call(self.async_client.setup, target, protocol=protocol)

    def pay(self, target: PaymentTarget, source_amount: int, **options: Any) -> PaymentResult:
        """See :meth:`AsyncPaymentClient.pay` (STREAM or PSK2; ``progress`` runs on the
        loop thread)."""
        return self._portal.call(self.async_client.pay, target, source_amount, **options)

    def quote(
        self, target: PaymentTarget, source_amount: int = 1000, **options: Any
    ) -> QuoteResult:
        """See :meth:`AsyncPaymentClient.quote`."""
        return self._portal.call(self.async_client.quote, target, source_amount, **options)

    def pay_chunked(self, target: PaymentTarget, **options: Any) -> PaymentResult:
        """See :meth:`AsyncPaymentClient.pay_chunked` (``progress`` runs on the loop thread)."""
        return self._portal.call(self.async_client.pay_chunked, target, **options)

    def http_ilp(self, **options: Any) -> HttpIlpClient:
        """An :class:`HttpIlpClient` paying through this client."""
        return HttpIlpClient(self, **options)


class HttpIlpClient:
    """The blocking twin of :class:`~ilp_receiver.client.AsyncHttpIlpClient`.

    ``payer`` is a :class:`PaymentClient`; other options as for the async class::

        http = HttpIlpClient(client, max_price=500)
        response = http.get("https://api.example/paid")
        print(response.status, response.pay_balance)
    """

    def __init__(self, payer: PaymentClient, **options: Any) -> None:
        self._payer = payer
        self._async = AsyncHttpIlpClient(payer.async_client, **options)

    @property
    def async_client(self) -> AsyncHttpIlpClient:
        """The underlying asyncio client."""
        return self._async

    def token_for(self, url: str) -> bytes:
        """See :meth:`AsyncHttpIlpClient.token_for`."""
        return self._async.token_for(url)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> HttpIlpResponse:
        """See :meth:`AsyncHttpIlpClient.request`."""
        return self._payer.portal.call(self._async.request, method, url, headers=headers, **options)

    def get(self, url: str, **options: Any) -> HttpIlpResponse:
        """``request("GET", url, ...)``."""
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> HttpIlpResponse:
        """``request("POST", url, ...)``."""
        return self.request("POST", url, **options)
