"""Era-A Web Monetization (``web-monetization-psk2.json``) through our PSK2 receiver.

The recorded site spliced the page-load id in front of the last two address segments
(``<address>.<id>.<receiverId>.<token>``) and credited each chunk to ``bucket[id]``.
The vector records the site's destination and shared secret but not its receiver
secret, so the receiver here uses a :class:`ReceiverSecrets` whose derivation is pinned
to the recorded values; everything else (address parsing, the id splice, decryption,
fulfillment, the encrypted response) is our code and must match byte for byte.
Buckets are plain ints here.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from ilp_receiver.codec.ilp import IlpFulfill, decode_prepare, decode_reply, encode_packet
from ilp_receiver.codec.psk2 import Draft1Packet, decode_any, derive_keys
from ilp_receiver.psk2 import Acceptance, Psk2Receiver, ReceiverSecrets
from ilp_receiver.psk2.secrets import decode_base64_lenient
from tests.vectorlib import section

WM = "web-monetization-psk2.json"
# Read at import so tests/test_vector_coverage.py sees every section requested.
PAGE_ID: str = section(WM, "page_id")
SPSP_REQUEST: dict[str, Any] = section(WM, "spsp_request")
SPSP_RESPONSE: dict[str, Any] = section(WM, "spsp_response")
ADDRESS_SEGMENTS: dict[str, Any] = section(WM, "address_segments")
PAYMENT: dict[str, Any] = section(WM, "payment")
BALANCE_AFTER_PAYMENT: int = section(WM, "bucket_balance_after_payment")
BALANCE_AFTER_SPEND_100: int = section(WM, "bucket_balance_after_spend_100")
SPEND_1000_ERROR: str = section(WM, "spend_1000_error")


class RecordedSiteSecrets(ReceiverSecrets):
    """The recorded site's receiver: its receiver id and its one issued secret."""

    def __init__(self, receiver_id: str, token: bytes, shared_secret: bytes) -> None:
        super().__init__(bytes(32))
        self._recorded = (receiver_id, token, shared_secret)

    @property
    def receiver_id(self) -> str:
        return self._recorded[0]

    def shared_secret(self, token_and_key: bytes) -> bytes:
        _, token, secret = self._recorded
        return secret if token_and_key == token else super().shared_secret(token_and_key)


def spend(buckets: dict[str, int], page_id: str, amount: int) -> str | None:
    """koa-/express-web-monetization ``spend``: None on success, else the error message."""
    balance = buckets.get(page_id, 0)
    if balance < amount:
        return f"insufficient balance on id. id={page_id}"
    buckets[page_id] = balance - amount
    return None


def test_web_monetization_psk2_flow() -> None:
    page_id = PAGE_ID
    request = SPSP_REQUEST
    response = SPSP_RESPONSE
    segments = ADDRESS_SEGMENTS
    payment = PAYMENT

    # The SPSP query names the page id in its path and asks for SPSP.
    assert request["method"] == "GET"
    assert request["path"] == f"/__monetizer/{page_id}"
    assert request["headers"] == {"Accept": "application/spsp+json"}
    assert response["headers"] == {"Content-Type": "application/spsp+json"}

    destination: str = response["body"]["destination_account"]
    shared_secret = base64.b64decode(response["body"]["shared_secret"], validate=True)
    assert len(shared_secret) == 32
    assert base64.b64encode(shared_secret).decode() == response["body"]["shared_secret"]
    # <address>.<id>.<receiverId>.<token>: the id spliced before the last two segments.
    assert destination == ".".join(
        [segments["ilp_address"], page_id, segments["receiver_id"], segments["token"]]
    )
    assert segments["page_id"] == page_id
    token = decode_base64_lenient(segments["token"])
    assert len(token) == 18

    secrets = RecordedSiteSecrets(segments["receiver_id"], token, shared_secret)
    parsed = secrets.parse_destination(destination, segments["ilp_address"])
    assert parsed.app_segments == (page_id,)
    assert (parsed.token, parsed.key, parsed.shared_secret) == (token, b"", shared_secret)

    # The 250-unit chunk arrives; our receiver decrypts it and names the page id.
    prepare = decode_prepare(bytes.fromhex(payment["ilp_prepare_hex"]))
    assert prepare.destination == destination
    assert prepare.amount == int(payment["source_amount"]) == 250
    receiver = Psk2Receiver(secrets, segments["ilp_address"])
    expected = decode_reply(bytes.fromhex(payment["ilp_response_hex"]))
    assert isinstance(expected, IlpFulfill)
    iv = expected.data[:12]
    now = prepare.expires_at - timedelta(seconds=30)
    decision = receiver.handle_prepare(prepare, now, iv=iv)
    assert isinstance(decision, Acceptance)
    assert decision.app_segments == (page_id,)
    assert decision.amount == 250
    assert decision.last_chunk

    # The middleware credits bucket[id] (acceptSingleChunk), then the Fulfill leaves.
    buckets: dict[str, int] = {}
    bucket_id = decision.app_segments[-1]
    assert bucket_id == destination.split(".")[-3]  # the JS: split('.').slice(-3)[0]
    buckets[bucket_id] = buckets.get(bucket_id, 0) + decision.amount
    fulfill = receiver.fulfill(decision, iv=iv)
    assert encode_packet(fulfill).hex() == payment["ilp_response_hex"]
    response_packet = decode_any(derive_keys(shared_secret).encryption_key, fulfill.data)
    assert isinstance(response_packet, Draft1Packet)
    assert (response_packet.type, response_packet.payment_amount) == (2, 250)
    assert response_packet.chunk_amount == 250

    assert buckets[page_id] == BALANCE_AFTER_PAYMENT == 250
    assert spend(buckets, page_id, 100) is None
    assert buckets[page_id] == BALANCE_AFTER_SPEND_100 == 150
    assert spend(buckets, page_id, 1000) == SPEND_1000_ERROR
    assert buckets[page_id] == 150


def test_issue_with_page_id_splice() -> None:
    """Our own secrets issue the same address shape and read the id back."""
    page_id = PAGE_ID
    secrets = ReceiverSecrets(bytes(range(32)))
    issued = secrets.issue("test.example.site", bytes(range(18)), segments=[page_id])
    parts = issued.destination.split(".")
    assert parts[-3] == page_id
    assert parts[-2] == secrets.receiver_id
    parsed = secrets.parse_destination(issued.destination, "test.example.site")
    assert parsed.app_segments == (page_id,)
    assert parsed.shared_secret == issued.shared_secret
