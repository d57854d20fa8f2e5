"""HTTP-ILP headers (ilp_receiver.codec.pay_header) against http-ilp-draft{1,2}.json.

Besides parsing and re-formatting every ``Pay`` / ``Pay-Token`` / ``Pay-Balance`` header
byte for byte, this module records what the koa-ilp middleware answered at each step in
:data:`HTTP_ILP_EXPECTED` (asserted against the vectors here), so the paywall tests can
import it and replay the same exchange against our implementation.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.ilp import IlpFulfill, decode_prepare, decode_reply
from ilp_receiver.codec.pay_header import (
    PAY_TOKEN_LENGTH,
    PSK1_METHOD,
    PSK2_METHOD,
    STREAM_METHOD,
    PayHeader,
    decode_base64_secret,
    format_pay_balance,
    format_pay_header,
    format_pay_token,
    parse_decimal_uint64,
    parse_pay_balance,
    parse_pay_header,
    parse_pay_token,
)
from ilp_receiver.codec.psk2 import (
    Draft1Packet,
    Draft2Packet,
    decode_any,
    derive_keys,
    fulfillment_for,
)
from ilp_receiver.errors import DecodeError, EncodeError
from tests.vectorlib import case_id, cases, section

FILES = ("http-ilp-draft1.json", "http-ilp-draft2.json")
MAX_UINT64 = 2**64 - 1

# ---------------------------------------------------------------------------------------
# Every top-level section, read at import time (tests/test_vector_coverage.py).

META: dict[str, dict[str, Any]] = {
    name: {
        key: section(name, key)
        for key in ("server_ilp_address", "client_token_hex", "pay_token_header", "payment_method")
    }
    for name in FILES
}
STEPS: list[tuple[str, dict[str, Any]]] = [
    (name, step) for name in FILES for step in cases(name, "steps")
]


@dataclass(frozen=True)
class PaywallStep:
    """What koa-ilp did for one HTTP request of the vector exchange.

    ``pay_token`` is the decoded ``Pay-Token`` request header (None: not sent);
    ``pay_price`` the price in the ``Pay`` response header (None: no ``Pay`` header);
    ``pay_balance`` the ``Pay-Balance`` response header (None: not sent).
    """

    step: str
    method: str
    url: str
    pay_token: bytes | None
    status: int
    pay_price: int | None
    pay_balance: int | None
    body: str | None
    next_called: bool


TOKEN = bytes.fromhex("00112233445566778899aabbccddeeff")
UNPAID_BODY = (
    "Your Payment Token ABEiM0RVZneImaq7zN3u_w has no funds available. It needs at least 10"
)
_KOA_ILP_EXCHANGE = (
    PaywallStep("unpaid_request", "POST", "/upload", TOKEN, 402, 10, 0, UNPAID_BODY, False),
    PaywallStep("paid_request", "POST", "/upload", TOKEN, 200, 10, 90, "paid content", True),
    PaywallStep(
        "no_token",
        "POST",
        "/upload",
        None,
        402,
        None,
        None,
        "No valid payment token provided",
        False,
    ),
    PaywallStep("options_without_token", "OPTIONS", "/upload", None, 204, 10, None, None, True),
)
#: The HTTP steps of each vector file, in order (the PSK2 funding step sits between
#: ``unpaid_request`` and ``paid_request`` and funds the token with 100 units).
HTTP_ILP_EXPECTED: dict[str, tuple[PaywallStep, ...]] = {name: _KOA_ILP_EXCHANGE for name in FILES}
#: Units the ``psk2_payment_funding_token`` Prepare delivers to the token.
FUNDING_AMOUNT = 100


def _step_id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0].removesuffix('.json')}:{case_id(item[1])}"


# ---------------------------------------------------------------------------------------
# Top-level facts


@pytest.mark.parametrize("name", FILES)
def test_token_binding_facts(name: str) -> None:
    meta = META[name]
    token = bytes.fromhex(meta["client_token_hex"])
    assert token == TOKEN
    assert len(token) == PAY_TOKEN_LENGTH
    assert parse_pay_token(meta["pay_token_header"]) == token
    assert format_pay_token(token) == meta["pay_token_header"]
    assert meta["payment_method"] == PSK2_METHOD
    assert meta["server_ilp_address"] == "test.example.server"


@pytest.mark.parametrize("name", FILES)
def test_every_pay_destination_is_under_the_server_address(name: str) -> None:
    server = META[name]["server_ilp_address"]
    steps = section(name, "steps")
    pays = [
        s["response"]["headers"]["Pay"]
        for s in steps
        if "Pay" in s.get("response", {}).get("headers", {})
    ]
    pays += [s["pay_header_used"] for s in steps if "pay_header_used" in s]
    assert len(pays) == 4
    for value in pays:
        header = parse_pay_header(value)
        assert header.destination.startswith(server + ".")
        assert header.method == META[name]["payment_method"]


@pytest.mark.parametrize("name", FILES)
def test_step_sequence_matches_recorded_expectations(name: str) -> None:
    http_steps = [s["step"] for s in section(name, "steps") if "request" in s]
    assert http_steps == [e.step for e in HTTP_ILP_EXPECTED[name]]
    all_steps = [s["step"] for s in section(name, "steps")]
    assert all_steps[1] == "psk2_payment_funding_token"


# ---------------------------------------------------------------------------------------
# Each step


@pytest.mark.parametrize("item", STEPS, ids=_step_id)
def test_step(item: tuple[str, dict[str, Any]]) -> None:
    name, step = item
    meta = META[name]
    if "request" not in step:
        _check_funding_step(name, step)
        return
    expected = next(e for e in HTTP_ILP_EXPECTED[name] if e.step == step["step"])
    request, response = step["request"], step["response"]
    assert request["method"] == expected.method
    assert request["url"] == expected.url

    req_headers = request["headers"]
    assert set(req_headers) <= {"Pay-Token"}
    if "Pay-Token" in req_headers:
        token = parse_pay_token(req_headers["Pay-Token"])
        assert format_pay_token(token) == req_headers["Pay-Token"]
        assert req_headers["Pay-Token"] == meta["pay_token_header"]
        assert token == bytes.fromhex(meta["client_token_hex"])
    else:
        token = None
    assert token == expected.pay_token

    assert response["status"] == expected.status
    assert response.get("body") == expected.body
    assert response["next_called"] is expected.next_called

    headers = response["headers"]
    assert set(headers) <= {"Pay", "Pay-Balance"}
    price = None
    if "Pay" in headers:
        pay = parse_pay_header(headers["Pay"])
        assert format_pay_header(pay) == headers["Pay"]
        assert pay.method == meta["payment_method"]
        assert pay.destination.startswith(meta["server_ilp_address"] + ".")
        assert len(pay.shared_secret) == 32
        price = pay.price
    assert price == expected.pay_price
    balance = None
    if "Pay-Balance" in headers:
        balance = parse_pay_balance(headers["Pay-Balance"])
        assert format_pay_balance(balance) == headers["Pay-Balance"]
    assert balance == expected.pay_balance


def _check_funding_step(name: str, step: dict[str, Any]) -> None:
    """The PSK2 payment that funds the token, bound as each PSK2 era binds it."""
    assert step["step"] == "psk2_payment_funding_token"
    steps = section(name, "steps")
    unpaid = next(s for s in steps if s["step"] == "unpaid_request")
    assert step["pay_header_used"] == unpaid["response"]["headers"]["Pay"]
    pay = parse_pay_header(step["pay_header_used"])
    assert format_pay_header(pay) == step["pay_header_used"]

    prepare = decode_prepare(bytes.fromhex(step["ilp_prepare_hex"]))
    assert prepare.destination == pay.destination
    assert prepare.amount == FUNDING_AMOUNT
    assert pay.price is not None
    assert prepare.amount >= pay.price
    reply = decode_reply(bytes.fromhex(step["ilp_response_hex"]))
    assert isinstance(reply, IlpFulfill)
    assert hashlib.sha256(reply.fulfillment).digest() == prepare.execution_condition

    keys = derive_keys(pay.shared_secret)
    assert fulfillment_for(keys.fulfillment_key, prepare.data) == reply.fulfillment
    request = decode_any(keys.encryption_key, prepare.data)
    token = bytes.fromhex(META[name]["client_token_hex"])
    if name == "http-ilp-draft1.json":
        # "the 16-byte token *is* the PSK2 paymentId"
        assert "paymentId" in step["note"]
        assert isinstance(request, Draft1Packet)
        assert request.payment_id == token
    else:
        # "the first 16 bytes of the PSK2 request data are the token"
        assert "data[0:16]" in step["note"]
        assert isinstance(request, Draft2Packet)
        assert request.data[:16] == token
    assert base64.urlsafe_b64encode(token).rstrip(b"=").decode() == META[name]["pay_token_header"]


# ---------------------------------------------------------------------------------------
# Pay header generations and errors

SECRET = bytes(range(32))
SECRET_B64 = base64.b64encode(SECRET).decode()


def test_pay_without_price() -> None:
    value = f"interledger-psk2 g.example.bob {SECRET_B64}"
    header = parse_pay_header(value)
    assert header == PayHeader(PSK2_METHOD, "g.example.bob", SECRET, None)
    assert format_pay_header(header) == value


def test_pay_over_stream_names_destination_and_secret_only() -> None:
    # "Pay: interledger-stream <destination_account> <base64 shared_secret>"
    value = f"interledger-stream g.example.bob.AbC-_d {SECRET_B64}"
    header = parse_pay_header(value)
    assert header == PayHeader(STREAM_METHOD, "g.example.bob.AbC-_d", SECRET, None)
    assert format_pay_header(header) == value
    # either alphabet, padded or not (SPSP v4 secrets); a trailing price is tolerated
    url_safe = base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")
    header = parse_pay_header(f"interledger-stream g.a.b {url_safe} 10")
    assert header == PayHeader(STREAM_METHOD, "g.a.b", b"\xfb" * 32, 10)


def test_pay_tolerates_url_safe_unpadded_secret_and_extra_whitespace() -> None:
    url_safe = base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")
    header = parse_pay_header(f"  interledger-psk2\tg.example.bob   {url_safe} 7 ")
    assert header == PayHeader(PSK2_METHOD, "g.example.bob", b"\xfb" * 32, 7)


def test_pay_legacy_draft2_with_method() -> None:
    secret = b"\x01" * 16
    text = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    value = f"interledger-psk 250 g.example.bob.~psk.abc {text}"
    header = parse_pay_header(value)
    assert header == PayHeader(PSK1_METHOD, "g.example.bob.~psk.abc", secret, 250)
    assert format_pay_header(header) == value


def test_pay_legacy_without_method_first_word_is_amount() -> None:
    # "superagent-ilp treats a first word that contains no letters as an amount"
    header = parse_pay_header("10 g.example.bob AQEBAQEBAQEBAQEBAQEBAQ")
    assert header == PayHeader(PSK1_METHOD, "g.example.bob", b"\x01" * 16, 10)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("interledger-stream2 g.a.b xyz", "unsupported payment method"),
        ("interledger-stream g.a.b", "interledger-stream Pay header must be"),
        ("interledger-stream g.a.b AAAA", "32 bytes"),
        (f"interledger-stream g.a.b {SECRET_B64} 1 2", "interledger-stream Pay header must"),
        (f"interledger-stream bogus {SECRET_B64}", "not an ILP address"),
        ("interledger-psk2 g.a.b", "interledger-psk2 Pay header must be"),
        (f"interledger-psk2 g.a.b {SECRET_B64} 1 2", "interledger-psk2 Pay header must be"),
        (f"interledger-psk2 bogus {SECRET_B64} 1", "not an ILP address"),
        (f"interledger-psk2 g.a.b {SECRET_B64} -1", "decimal integer"),
        (f"interledger-psk2 g.a.b {SECRET_B64} 18446744073709551616", "larger than"),
        ("interledger-psk2 g.a.b AAAA 1", "32 bytes"),
        ("interledger-psk2 g.a.b A!AA 1", "not a base64 character"),
        ("interledger-psk2 g.a.b AAAAA 1", "impossible base64 length"),
        ("interledger-psk2 g.a.b AA=A 1", "not a base64 character"),
        ("interledger-psk2 g.a.b AAA=== 1", "padding"),
        ("interledger-psk 10 g.a.b", "interledger-psk Pay header must be"),
        ("-5 g.a.b AAAA", "decimal integer"),
    ],
)
def test_pay_header_errors(value: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_pay_header(value)
    assert reason in info.value.reason


def test_pay_header_error_offset_points_at_the_bad_word() -> None:
    value = f"interledger-psk2 g.a.b {SECRET_B64} 1x"
    with pytest.raises(DecodeError) as info:
        parse_pay_header(value)
    assert info.value.offset == value.index("1x") + 1


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (PayHeader(PSK2_METHOD, "nope", SECRET, 1), "not an ILP address"),
        (PayHeader(PSK2_METHOD, "g.a", SECRET[:16], 1), "32 bytes"),
        (PayHeader(PSK2_METHOD, "g.a", SECRET, -1), "0.."),
        (PayHeader(PSK2_METHOD, "g.a", SECRET, 2**64), "0.."),
        (PayHeader(PSK1_METHOD, "g.a", SECRET, None), "needs an amount"),
        (PayHeader(PSK1_METHOD, "g.a", b"", 1), "empty"),
        (PayHeader("interledger-stream", "g.a", SECRET, 1), "no price"),
        (PayHeader("interledger-stream", "g.a", b"\x00" * 16), "32 bytes"),
        (PayHeader("interledger-strem", "g.a", SECRET), "unsupported"),
    ],
)
def test_format_pay_header_refuses(header: PayHeader, problem: str) -> None:
    with pytest.raises(EncodeError, match=problem):
        format_pay_header(header)


def test_pay_header_repr_hides_secret() -> None:
    assert SECRET_B64 not in repr(parse_pay_header(f"interledger-psk2 g.a {SECRET_B64}"))
    assert repr(SECRET) not in repr(PayHeader(PSK2_METHOD, "g.a", SECRET))


# ---------------------------------------------------------------------------------------
# Pay-Token and Pay-Balance


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("ABEiM0RVZneImaq7zN3u/w", "base64url"),
        ("ABEiM0RVZneImaq7zN3u_w==", "base64url"),
        ("ABEiM0RVZneImaq7zN3u_x", "canonical"),
        ("ABEiM0RVZneImaq7zN3u", "16 bytes"),
        (base64.urlsafe_b64encode(bytes(32)).decode().rstrip("="), "16 bytes"),
        ("ABEiM0RVZneImaq7zN3u_", "impossible base64 length"),
    ],
)
def test_pay_token_errors(value: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_pay_token(value)
    assert reason in info.value.reason


def test_pay_token_surrounding_whitespace() -> None:
    assert parse_pay_token(" ABEiM0RVZneImaq7zN3u_w\t") == TOKEN


@pytest.mark.parametrize("token", [b"", bytes(15), bytes(17), bytes(32)])
def test_format_pay_token_refuses_other_lengths(token: bytes) -> None:
    with pytest.raises(EncodeError):
        format_pay_token(token)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("90", 90), (" 7 ", 7), ("007", 7), (str(MAX_UINT64), MAX_UINT64)],
)
def test_pay_balance_parse(value: str, expected: int) -> None:
    assert parse_pay_balance(value) == expected


@pytest.mark.parametrize("value", ["", "-1", "1.5", "1e3", "+1", str(2**64), "٣"])
def test_pay_balance_errors(value: str) -> None:
    with pytest.raises(DecodeError):
        parse_pay_balance(value)


@pytest.mark.parametrize("value", [-1, 2**64, True])
def test_format_pay_balance_refuses(value: int) -> None:
    with pytest.raises(EncodeError):
        format_pay_balance(value)


def test_decimal_and_base64_helpers() -> None:
    assert parse_decimal_uint64("000000000000000000000000001") == 1
    with pytest.raises(DecodeError, match="larger than"):
        parse_decimal_uint64("9" * 5000)
    assert decode_base64_secret("AQ", None) == b"\x01"
    assert decode_base64_secret("AQ==", None) == b"\x01"
    assert decode_base64_secret("-_-_", None) == decode_base64_secret("+/+/", None)
    with pytest.raises(DecodeError, match="padding"):
        decode_base64_secret("AQ=", None)
    with pytest.raises(DecodeError, match="empty"):
        decode_base64_secret("", None)


# ---------------------------------------------------------------------------------------
# Properties

SETTINGS = settings(max_examples=200, deadline=None)
SEGMENT = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_~-",
    min_size=1,
    max_size=12,
)
ADDRESS = st.builds(
    lambda scheme, segs: ".".join([scheme, *segs]),
    st.sampled_from(["g", "test", "example", "private", "peer", "local"]),
    st.lists(SEGMENT, min_size=1, max_size=5),
)
PRICE = st.none() | st.integers(min_value=0, max_value=MAX_UINT64)


@SETTINGS
@given(ADDRESS, st.binary(min_size=32, max_size=32), PRICE)
def test_psk2_pay_round_trip(address: str, secret: bytes, price: int | None) -> None:
    header = PayHeader(PSK2_METHOD, address, secret, price)
    text = format_pay_header(header)
    assert parse_pay_header(text) == header
    assert format_pay_header(parse_pay_header(text)) == text


@SETTINGS
@given(ADDRESS, st.binary(min_size=1, max_size=40), st.integers(0, MAX_UINT64))
def test_psk1_pay_round_trip(address: str, secret: bytes, price: int) -> None:
    header = PayHeader(PSK1_METHOD, address, secret, price)
    assert parse_pay_header(format_pay_header(header)) == header


@SETTINGS
@given(st.binary(min_size=16, max_size=16))
def test_pay_token_round_trip(token: bytes) -> None:
    text = format_pay_token(token)
    assert len(text) == 22
    assert parse_pay_token(text) == token


@SETTINGS
@given(st.integers(0, MAX_UINT64))
def test_pay_balance_round_trip(balance: int) -> None:
    assert parse_pay_balance(format_pay_balance(balance)) == balance


@SETTINGS
@given(st.text(max_size=120))
def test_arbitrary_strings_raise_only_decode_error(text: str) -> None:
    for parser in (parse_pay_header, parse_pay_token, parse_pay_balance):
        with contextlib.suppress(DecodeError):
            parser(text)


@SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                "interledger-psk2",
                "interledger-psk",
                "g.a.b",
                "AAAA",
                SECRET_B64,
                "10",
                "-",
                "=",
                " ",
            ]
        ),
        max_size=6,
    )
)
def test_near_miss_pay_headers_raise_only_decode_error(words: list[str]) -> None:
    with contextlib.suppress(DecodeError):
        parse_pay_header(" ".join(words))
