"""Standard Webhooks signatures: the published HMAC vector, Ed25519 checked by an
independent implementation (``cryptography``), and what ``verify_webhook`` refuses."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ilp_receiver.errors import ConfigError
from ilp_receiver.webhooks import (
    SigningKey,
    VerifyKey,
    WebhookVerificationError,
    generate_ed25519_key,
    generate_hmac_secret,
    parse_key,
    sign_headers,
    verify_webhook,
)

NOW = 1_767_225_600
BODY = b'{"id":"evt_1","type":"payment.received"}'


def test_hmac_matches_the_standard_webhooks_test_vector() -> None:
    # the vector of the Standard Webhooks reference libraries
    key = parse_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert isinstance(key, SigningKey)
    headers = sign_headers(
        key, "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}', timestamp=1614265330
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    verify_webhook(b'{"test": 2432232314}', headers, key, now=1614265330)


def test_ed25519_signatures_verify_with_an_independent_implementation() -> None:
    secret, public = generate_ed25519_key()
    assert secret.startswith("whsk_") and public.startswith("whpk_")
    key = parse_key(secret)
    assert isinstance(key, SigningKey) and key.public_key == public
    headers = sign_headers(key, "evt_1", BODY, timestamp=NOW)
    scheme, signature = headers["webhook-signature"].split(",", 1)
    assert scheme == "v1a"
    raw_public = base64.b64decode(public.removeprefix("whpk_"))
    # raises InvalidSignature when wrong
    Ed25519PublicKey.from_public_bytes(raw_public).verify(
        base64.b64decode(signature), b"evt_1.%d." % NOW + BODY
    )
    verify_webhook(BODY, headers, public, now=NOW)
    verify_webhook(BODY.decode(), {k.upper(): v for k, v in headers.items()}, public, now=NOW)


@pytest.mark.parametrize("scheme", ["ed25519", "hmac"])
def test_verify_refuses_a_tampered_body_a_wrong_key_and_a_stale_timestamp(scheme: str) -> None:
    if scheme == "ed25519":
        secret, public = generate_ed25519_key()
        other = generate_ed25519_key()[1]
    else:
        secret = public = generate_hmac_secret()
        other = generate_hmac_secret()
    key = parse_key(secret)
    assert isinstance(key, SigningKey)
    headers = sign_headers(key, "evt_1", BODY, timestamp=NOW)
    verify_webhook(BODY, headers, public, now=NOW + 299)
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(BODY.replace(b"received", b"reversed"), headers, public, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(BODY, headers, other, now=NOW)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(BODY, headers, public, now=NOW + 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(BODY, headers, public, now=NOW - 301)
    # the id and timestamp are signed too: changing either breaks the signature
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(BODY, {**headers, "webhook-id": "evt_2"}, public, now=NOW)
    moved = {**headers, "webhook-timestamp": str(NOW + 1)}
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(BODY, moved, public, now=NOW)
    with pytest.raises(WebhookVerificationError, match="missing header webhook-signature"):
        verify_webhook(BODY, {"webhook-id": "evt_1", "webhook-timestamp": str(NOW)}, public)
    with pytest.raises(WebhookVerificationError, match="webhook-timestamp"):
        verify_webhook(BODY, {**headers, "webhook-timestamp": "12e3"}, public, now=NOW)


def test_a_signature_of_the_other_scheme_or_garbage_is_not_accepted() -> None:
    secret, public = generate_ed25519_key()
    hmac_secret = generate_hmac_secret()
    signing = parse_key(hmac_secret)
    assert isinstance(signing, SigningKey)
    headers = sign_headers(signing, "evt_1", BODY, timestamp=NOW)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, headers, public, now=NOW)
    junk = {**headers, "webhook-signature": "v1a,!!!! v1a,AAAA v1,x " + "v1a,QQ== " * 10}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, junk, public, now=NOW)
    with pytest.raises(WebhookVerificationError, match="too long"):
        verify_webhook(BODY, {**headers, "webhook-signature": "v1a,x " * 1000}, public, now=NOW)
    # several signatures (key rotation): any one that verifies is enough
    rotated = sign_headers([parse_key(secret), signing], "evt_1", BODY, timestamp=NOW)  # type: ignore[list-item]
    verify_webhook(BODY, rotated, public, now=NOW)
    verify_webhook(BODY, rotated, hmac_secret, now=NOW)


def test_keys_are_checked_and_never_shown() -> None:
    secret, public = generate_ed25519_key()
    key = parse_key(secret)
    assert secret.removeprefix("whsk_") not in repr(key)
    assert isinstance(parse_key(public), VerifyKey)
    for bad in ("whsk_!!", "whsk_" + base64.b64encode(b"short").decode(), "sk_abc", "whsec_AAAA"):
        with pytest.raises(ConfigError) as info:
            parse_key(bad, setting="ILP_RECEIVER_WEBHOOK_KEY")
        assert info.value.field == "ILP_RECEIVER_WEBHOOK_KEY"
        assert bad not in str(info.value)
