"""SPSP responses, payment pointers, negotiation and caching (ilp_receiver.spsp).

Vectors: spsp-payment-pointer.json (ilp-protocol-spsp 2.0.0 and RFC 26 draft 1).
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.errors import EncodeError, PaymentPointerError, SpspError
from ilp_receiver.spsp import (
    ERROR_CONTENT_TYPE,
    INVALID_RECEIVER_STATUS,
    MAX_CACHE_AGE,
    NOT_ACCEPTABLE_STATUS,
    SPSP4_MEDIA_TYPE,
    SPSP_MEDIA_TYPE,
    WELL_KNOWN_PATH,
    AssetInfo,
    PaymentPointer,
    SpspBalance,
    SpspResponse,
    cache_control_header,
    invalid_receiver_body,
    is_spsp_content_type,
    max_age,
    negotiate,
    negotiate_setup,
    negotiate_spsp,
    not_acceptable_body,
    parse_payment_pointer,
    parse_spsp_response,
    resolve_payment_pointer,
    response_protocol,
    spsp_query_headers,
    to_payment_pointer,
)
from tests.vectorlib import case_id, cases, section

VECTORS = "spsp-payment-pointer.json"
SAMPLE: dict[str, Any] = section(VECTORS, "sample_response_json")
CLIENT_RESULT: dict[str, Any] = section(VECTORS, "client_result_for_sample")
CLIENT_RESULT_NOTE: str = section(VECTORS, "client_result_note")
MAX_UINT64 = 2**64 - 1

#: Client cases the JS client accepts but RFC 26 draft 1 forbids: we refuse them by
#: default (open question 24) with an error naming the problem; lenient=True accepts.
REJECTED_BY_DEFAULT = {"$example.com:8443/bob": "port", "$example.com/bob?x=1": "query"}


def _lower_keys(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# ---------------------------------------------------------------------------------------
# Vector: rfc26_examples and client_cases


@pytest.mark.parametrize("case", cases(VECTORS, "rfc26_examples"), ids=case_id)
def test_rfc26_examples(case: dict[str, str]) -> None:
    assert resolve_payment_pointer(case["pointer"]) == case["url"]
    pointer = PaymentPointer.parse(case["pointer"])
    assert pointer.endpoint() == case["url"]
    assert str(pointer) == case["pointer"]
    # The inverse gives back the pointer (all examples are already canonical).
    assert to_payment_pointer(case["url"]) == case["pointer"]


@pytest.mark.parametrize("case", cases(VECTORS, "client_cases"), ids=case_id)
def test_client_cases(case: dict[str, Any]) -> None:
    assert case["error"] is None  # the JS client accepted every case
    assert _lower_keys(spsp_query_headers()) == case["request_headers"]
    text = case["input"]
    # lenient=True reproduces the JS client's request URL for every case.
    assert resolve_payment_pointer(text, lenient=True) == case["request_url"]
    if text in REJECTED_BY_DEFAULT:
        assert "NOT allowed by RFC 26 draft 1" in case["note"]
        with pytest.raises(PaymentPointerError, match=REJECTED_BY_DEFAULT[text]):
            resolve_payment_pointer(text)
    else:
        assert resolve_payment_pointer(text) == case["request_url"]
    if not text.startswith("$"):
        assert "used as-is" in case["note"]
        assert resolve_payment_pointer(text) == text


def test_every_rejected_case_is_in_the_vectors() -> None:
    inputs = {c["input"] for c in cases(VECTORS, "client_cases")}
    assert set(REJECTED_BY_DEFAULT) <= inputs


# ---------------------------------------------------------------------------------------
# Vector: sample response and the JS client's result


def test_sample_response_parsed() -> None:
    response = parse_spsp_response(SAMPLE)
    assert response.destination_account == SAMPLE["destination_account"]
    assert response.shared_secret == bytes.fromhex(CLIENT_RESULT["sharedSecret"]["hex"])
    assert response.balance == SpspBalance(100000, 5360)
    assert response.asset == AssetInfo("USD", 2)
    assert response.receiver_info == SAMPLE["receiver_info"]
    assert response.extra == {}
    # Bytes and str bodies parse the same.
    assert parse_spsp_response(json.dumps(SAMPLE)) == response
    assert parse_spsp_response(json.dumps(SAMPLE).encode()) == response
    assert parse_spsp_response(memoryview(json.dumps(SAMPLE).encode())) == response


def _js_client_result(response: SpspResponse) -> dict[str, Any]:
    """What ilp-protocol-spsp 2.0.0 returns, rebuilt from our parse (for comparison)."""
    assert response.balance is not None
    assert response.asset is not None
    return {
        "destinationAccount": response.destination_account,
        "sharedSecret": {"hex": response.shared_secret.hex()},
        "balance": {
            "maximum": str(response.balance.maximum),
            "current": str(response.balance.current),
        },
        "ledgerInfo": {
            "currency_code": response.asset.code,
            "currency_scale": response.asset.scale,
        },
        "receiverInfo": response.receiver_info,
    }


def test_client_result_for_sample_matches() -> None:
    assert _js_client_result(parse_spsp_response(SAMPLE)) == CLIENT_RESULT
    # "shared_secret is base64-decoded to 32 bytes; top-level keys are camelCased,
    # nested objects are passed through unchanged"
    assert "32 bytes" in CLIENT_RESULT_NOTE
    assert "nested objects are passed through unchanged" in CLIENT_RESULT_NOTE
    assert len(bytes.fromhex(CLIENT_RESULT["sharedSecret"]["hex"])) == 32
    for key in ("balance", "receiverInfo"):
        assert CLIENT_RESULT[key] == SAMPLE[_snake(key)]
    assert CLIENT_RESULT["ledgerInfo"] == SAMPLE["ledger_info"]


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def test_sample_to_json_emits_every_spelling() -> None:
    out = parse_spsp_response(SAMPLE).to_json()
    assert out == {
        "destination_account": SAMPLE["destination_account"],
        "shared_secret": SAMPLE["shared_secret"],
        "balance": {"maximum": "100000", "current": "5360"},
        "asset_info": {"code": "USD", "scale": 2},
        "ledger_info": {
            "asset_code": "USD",
            "asset_scale": 2,
            "currency_code": "USD",
            "currency_scale": 2,
        },
        "receiver_info": SAMPLE["receiver_info"],
    }
    # Every field the sample had is reproduced exactly (ledger_info is a superset).
    for key in ("destination_account", "shared_secret", "balance", "receiver_info"):
        assert out[key] == SAMPLE[key]
    assert SAMPLE["ledger_info"].items() <= out["ledger_info"].items()
    assert parse_spsp_response(out) == parse_spsp_response(SAMPLE)
    assert json.loads(parse_spsp_response(SAMPLE).to_body()) == out


# ---------------------------------------------------------------------------------------
# Response parsing: spellings and errors

SECRET = bytes(range(32))
BASE = {
    "destination_account": "g.example.bob.abc",
    "shared_secret": base64.b64encode(SECRET).decode(),
}


@pytest.mark.parametrize(
    "asset_fields",
    [
        {"ledger_info": {"currency_code": "XRP", "currency_scale": 6}},
        {"ledger_info": {"asset_code": "XRP", "asset_scale": 6}},
        {"asset_info": {"code": "XRP", "scale": 6}},
        {
            "asset_info": {"code": "XRP", "scale": 6},
            "ledger_info": {"asset_code": "XRP", "asset_scale": 6},
        },
    ],
)
def test_all_asset_spellings(asset_fields: dict[str, Any]) -> None:
    assert parse_spsp_response({**BASE, **asset_fields}).asset == AssetInfo("XRP", 6)


@pytest.mark.parametrize(
    "secret_text",
    [
        base64.b64encode(SECRET).decode(),
        base64.b64encode(SECRET).decode().rstrip("="),
        base64.urlsafe_b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode().rstrip("="),
    ],
)
def test_shared_secret_alphabets_and_padding(secret_text: str) -> None:
    assert parse_spsp_response({**BASE, "shared_secret": secret_text}).shared_secret == SECRET


def test_minimal_response_and_nulls() -> None:
    response = parse_spsp_response(BASE)
    assert response == SpspResponse("g.example.bob.abc", SECRET)
    nulls = {"balance": None, "ledger_info": None, "asset_info": None, "receiver_info": None}
    assert parse_spsp_response({**BASE, **nulls}) == response
    assert response.to_json() == BASE


def test_w3c_readme_shape_keeps_extra_fields() -> None:
    # 10-web-payments.md: ledger_info with currency_*, top-level min/max destination
    # amounts and an unpadded base64url shared_secret.
    body = {
        "destination_account": "g.example.shop.order-1",
        "shared_secret": base64.urlsafe_b64encode(SECRET).decode().rstrip("="),
        "maximum_destination_amount": "1000",
        "minimum_destination_amount": "990",
        "ledger_info": {"currency_code": "USD", "currency_scale": 2},
        "receiver_info": {"name": "Shop"},
    }
    response = parse_spsp_response(body)
    assert response.extra == {
        "maximum_destination_amount": "1000",
        "minimum_destination_amount": "990",
    }
    out = response.to_json()
    assert out["maximum_destination_amount"] == "1000"
    assert parse_spsp_response(out) == response


def test_integer_amounts_tolerated() -> None:
    response = parse_spsp_response({**BASE, "balance": {"maximum": MAX_UINT64, "current": 0}})
    assert response.balance == SpspBalance(MAX_UINT64, 0)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        ("[" * 100_000, "not JSON"),
        ("[]", "JSON object"),
        ({"shared_secret": BASE["shared_secret"]}, "destination_account"),
        ({**BASE, "destination_account": 5}, "destination_account"),
        ({**BASE, "destination_account": "bob"}, "not an ILP address"),
        ({"destination_account": "g.a"}, "shared_secret"),
        ({**BASE, "shared_secret": "AAAA"}, "32 bytes"),
        ({**BASE, "shared_secret": "!" * 44}, "base64"),
        ({**BASE, "shared_secret": None}, "shared_secret"),
        ({**BASE, "balance": "100"}, "balance must be an object"),
        ({**BASE, "balance": {"maximum": "100"}}, "balance.current"),
        ({**BASE, "balance": {"maximum": "-1", "current": "0"}}, "balance.maximum"),
        ({**BASE, "balance": {"maximum": "1.5", "current": "0"}}, "balance.maximum"),
        ({**BASE, "balance": {"maximum": str(2**64), "current": "0"}}, "larger than"),
        ({**BASE, "balance": {"maximum": 2**64, "current": 0}}, "balance.maximum"),
        ({**BASE, "balance": {"maximum": True, "current": 0}}, "balance.maximum"),
        ({**BASE, "balance": {"maximum": 1.0, "current": 0}}, "balance.maximum"),
        ({**BASE, "ledger_info": []}, "ledger_info must be an object"),
        ({**BASE, "ledger_info": {"prefix": "g."}}, "neither"),
        ({**BASE, "ledger_info": {"currency_code": "USD"}}, "currency_scale"),
        ({**BASE, "ledger_info": {"currency_code": "", "currency_scale": 2}}, "currency_code"),
        ({**BASE, "ledger_info": {"asset_code": "USD", "asset_scale": "2"}}, "asset_scale"),
        ({**BASE, "asset_info": {"code": "USD", "scale": 256}}, "asset_info.scale"),
        ({**BASE, "asset_info": {"code": "USD", "scale": True}}, "asset_info.scale"),
        ({**BASE, "asset_info": "USD"}, "asset_info must be an object"),
        (
            {
                **BASE,
                "asset_info": {"code": "USD", "scale": 2},
                "ledger_info": {"currency_code": "EUR", "currency_scale": 2},
            },
            "different assets",
        ),
        ({**BASE, "receiver_info": "Bob"}, "receiver_info must be an object"),
    ],
)
def test_malformed_responses(body: Any, problem: str) -> None:
    with pytest.raises(SpspError, match=problem) as info:
        parse_spsp_response(body)
    assert info.value.status is None


def test_secret_never_in_repr_or_errors() -> None:
    response = parse_spsp_response(SAMPLE)
    assert SAMPLE["shared_secret"] not in repr(response)
    assert repr(response.shared_secret) not in repr(response)
    with pytest.raises(SpspError) as info:
        parse_spsp_response({**BASE, "shared_secret": SAMPLE["shared_secret"][:-4]})
    assert SAMPLE["shared_secret"][:-4] not in str(info.value)


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (SpspResponse("bob", SECRET), "ILP address"),
        (SpspResponse("g.a", SECRET[:16]), "32 bytes"),
        (SpspResponse("g.a", SECRET, SpspBalance(-1, 0)), "balance.maximum"),
        (SpspResponse("g.a", SECRET, SpspBalance(0, 2**64)), "balance.current"),
        (SpspResponse("g.a", SECRET, asset=AssetInfo("", 2)), "asset code"),
        (SpspResponse("g.a", SECRET, asset=AssetInfo("USD", 300)), "asset scale"),
        (SpspResponse("g.a", SECRET, extra={"balance": 1}), "collide"),
    ],
)
def test_to_json_refuses_invalid(response: SpspResponse, problem: str) -> None:
    with pytest.raises(EncodeError, match=problem):
        response.to_json()


# ---------------------------------------------------------------------------------------
# Payment pointers beyond the vectors


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("example.com", "http"),
        ("$", "empty host"),
        ("$/bob", "empty host"),
        ("$:443/bob", "empty host"),
        ("$user@example.com", "userinfo"),
        ("$user:pw@example.com/bob", "userinfo"),
        ("$example.com:443", "port"),
        ("$example.com/bob?x=1", "query"),
        ("$example.com/bob#frag", "fragment"),
        ("$exa mple.com", "bad character ' '"),
        ("$exa%41mple.com", "bad character '%'"),
        ("$example..com", "empty label"),
        ("$.example.com", "empty label"),
        ("$example.com.", "empty label"),
        ("$exämple.com", "punycode"),
        ("$example.com/a b", "' '"),
        ("$example.com/%zz", "'%zz'"),
        ("$example.com/a\\b", "'\\\\\\\\'"),
        ("$[::1", "unterminated IPv6"),
        ("$[::1]x", "after the IPv6"),
        ("$[zz]", "bad IPv6"),
        ("$[fe80::1%eth0]", "zone id"),
        ("ftp://example.com/x", "http"),
        ("https:///x", "no host"),
        ("https://example.com/ x", "whitespace"),
        ("https://example.com:99999/x", "valid SPSP URL"),
        ("https://[::1/x", "valid SPSP URL"),
        ("", "http"),
    ],
)
def test_bad_pointers(text: str, problem: str) -> None:
    with pytest.raises(PaymentPointerError, match=problem):
        resolve_payment_pointer(text)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("$example.com:443/bob", "https://example.com/bob"),  # default port dropped
        ("$example.com:8443", "https://example.com:8443/.well-known/pay"),
        ("$example.com?x", "https://example.com/.well-known/pay?x"),
        ("$example.com/bob?", "https://example.com/bob?"),
        ("$localhost:8080/x?q", "http://localhost:8080/x?q"),
    ],
)
def test_lenient_pointers(text: str, url: str) -> None:
    assert resolve_payment_pointer(text, lenient=True) == url
    with pytest.raises(PaymentPointerError):
        resolve_payment_pointer(text)


@pytest.mark.parametrize("text", ["$example.com:x/bob", "$example.com:65536", "$example.com:"])
def test_lenient_bad_ports(text: str) -> None:
    with pytest.raises(PaymentPointerError, match="bad port"):
        resolve_payment_pointer(text, lenient=True)


@pytest.mark.parametrize("text", ["$u@example.com", "$example.com/#x", "$example.com/b?x y"])
def test_lenient_still_refuses(text: str) -> None:
    with pytest.raises(PaymentPointerError):
        resolve_payment_pointer(text, lenient=True)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("$127.0.0.1:8080/alice", "http://127.0.0.1:8080/alice"),
        ("$localhost:3000", "http://localhost:3000/.well-known/pay"),
        ("$LOCALHOST/bob", "http://localhost/bob"),
        ("$[::1]:80/x", "http://[::1]/x"),
        ("$example.com:8080/x", "https://example.com:8080/x"),  # not loopback
    ],
)
def test_loopback_http_for_local_tests(text: str, url: str) -> None:
    assert resolve_payment_pointer(text, lenient=True, allow_http_for_loopback=True) == url


@pytest.mark.parametrize(
    ("text", "url"),
    [
        # what `ilp-receiver demo` and `receive` print: no flag needed, http://
        ("$127.0.0.1:8080", "http://127.0.0.1:8080/.well-known/pay"),
        ("$127.0.0.1:42995", "http://127.0.0.1:42995/.well-known/pay"),
        ("$localhost:3000/bob", "http://localhost:3000/bob"),
        ("$LocalHost:3000", "http://localhost:3000/.well-known/pay"),
        ("$[::1]:8080/x", "http://[::1]:8080/x"),
        ("$127.1.2.3:9/x", "http://127.1.2.3:9/x"),
        # no port, or 443: the RFC's https://
        ("$localhost/x", "https://localhost/x"),
        ("$127.0.0.1", "https://127.0.0.1/.well-known/pay"),
        ("$127.0.0.1:443", "https://127.0.0.1/.well-known/pay"),
    ],
)
def test_loopback_pointers_with_a_port_resolve_to_http(text: str, url: str) -> None:
    assert resolve_payment_pointer(text) == url
    assert PaymentPointer.parse(text).endpoint() == url


def test_loopback_scheme_can_be_forced() -> None:
    # True: http:// for every loopback pointer; False: the RFC's https:// always
    assert (
        resolve_payment_pointer("$localhost/x", allow_http_for_loopback=True)
        == "http://localhost/x"
    )
    assert (
        resolve_payment_pointer("$127.0.0.1:8080", allow_http_for_loopback=False)
        == "https://127.0.0.1:8080/.well-known/pay"
    )
    assert (
        resolve_payment_pointer("$example.com:8080", lenient=True, allow_http_for_loopback=True)
        == "https://example.com:8080/.well-known/pay"
    )


@pytest.mark.parametrize("text", ["$example.com:8080", "$10.0.0.1:8080", "$localhost.example:80"])
def test_ports_on_other_hosts_still_need_lenient(text: str) -> None:
    with pytest.raises(PaymentPointerError, match="port") as info:
        resolve_payment_pointer(text)
    assert info.value.option == "lenient"
    assert "lenient=True" in str(info.value)


def test_pointer_fields() -> None:
    pointer = parse_payment_pointer("$Example.COM/Bob/%7Ejoe;v=1:@")
    assert pointer == PaymentPointer("example.com", "/Bob/%7Ejoe;v=1:@")
    assert not pointer.is_loopback
    assert PaymentPointer.parse("$[0:0:0:0:0:0:0:1]").host == "[::1]"
    assert PaymentPointer.parse("$[::1]").is_loopback
    assert PaymentPointer.parse("$127.5.5.5").is_loopback
    assert PaymentPointer.parse("$a.localhost").is_loopback
    assert str(PaymentPointer.parse("$h.example:81/x?q", lenient=True)) == "$h.example:81/x?q"


@pytest.mark.parametrize(
    ("url", "pointer"),
    [
        ("https://example.com/.well-known/pay", "$example.com"),
        ("HTTPS://Example.com/bob", "$example.com/bob"),
        ("https://example.com/bob/", "$example.com/bob/"),
    ],
)
def test_to_payment_pointer(url: str, pointer: str) -> None:
    assert to_payment_pointer(url) == pointer


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/bob", "https"),
        ("https://example.com", "cannot be written"),
        ("https://example.com/", "cannot be written"),
        ("https://example.com:8443/bob", "port"),
        ("https://127.0.0.1:8443/bob", "port"),
        ("https://example.com/bob?x=1", "query"),
        ("https://example.com/bob#x", "fragment"),
        ("https://u@example.com/bob", "userinfo"),
    ],
)
def test_to_payment_pointer_refuses(url: str, problem: str) -> None:
    with pytest.raises(PaymentPointerError, match=problem):
        to_payment_pointer(url)


# ---------------------------------------------------------------------------------------
# Negotiation, error bodies, headers, caching


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, SPSP_MEDIA_TYPE),
        ("", SPSP_MEDIA_TYPE),
        ("application/spsp+json", SPSP_MEDIA_TYPE),
        ("Application/SPSP+JSON; charset=utf-8", SPSP_MEDIA_TYPE),
        ("application/json", SPSP_MEDIA_TYPE),
        ("application/*", SPSP_MEDIA_TYPE),
        ("*/*", SPSP_MEDIA_TYPE),
        ("*", SPSP_MEDIA_TYPE),
        ("text/html,application/xhtml+xml,*/*;q=0.8", SPSP_MEDIA_TYPE),
        ("application/spsp4+json, application/spsp+json", SPSP_MEDIA_TYPE),
        ("application/spsp+json;q=0", None),
        ("application/spsp+json;q=0, */*", None),
        ("application/json;q=0", None),
        ("application/json;q=0, application/spsp+json;q=0.5", SPSP_MEDIA_TYPE),
        ("*/*;q=0", None),
        ("text/html", None),
        ("application/spsp4+json", None),
        ("application/xml, text/*", None),
        ("garbage, ;;, /, */json", None),
        ("application/spsp+json;q=abc", None),
        ("application/spsp+json;q=0.001", SPSP_MEDIA_TYPE),
    ],
)
def test_negotiate_spsp(accept: str | None, expected: str | None) -> None:
    assert negotiate_spsp(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/spsp4+json, application/spsp+json", SPSP4_MEDIA_TYPE),
        ("application/spsp+json", SPSP_MEDIA_TYPE),
        ("application/spsp4+json;q=0.5, application/spsp+json", SPSP_MEDIA_TYPE),
        ("*/*", SPSP4_MEDIA_TYPE),
        ("application/spsp4+json", SPSP4_MEDIA_TYPE),
    ],
)
def test_negotiate_for_a_future_stream_server(accept: str, expected: str) -> None:
    assert negotiate(accept, [SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE]) == expected


def test_negotiate_nothing_offered() -> None:
    assert negotiate("*/*", []) is None


def test_error_bodies_and_constants() -> None:
    assert invalid_receiver_body() == {
        "id": "InvalidReceiverError",
        "message": "Invalid receiver ID",
    }
    assert INVALID_RECEIVER_STATUS == 404
    assert ERROR_CONTENT_TYPE == "application/json"
    assert NOT_ACCEPTABLE_STATUS == 406
    body = not_acceptable_body()
    assert SPSP_MEDIA_TYPE in body["message"]
    assert body["accept"] == [SPSP_MEDIA_TYPE]
    assert WELL_KNOWN_PATH == "/.well-known/pay"


def test_query_headers() -> None:
    assert spsp_query_headers() == {"Accept": "application/spsp+json"}
    assert spsp_query_headers((SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE)) == {
        "Accept": "application/spsp4+json, application/spsp+json"
    }


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/spsp+json", True),
        ("application/json; charset=utf-8", True),
        ("Application/SPSP+JSON", True),
        ("application/spsp4+json", False),
        ("text/html", False),
        (None, False),
    ],
)
def test_is_spsp_content_type(content_type: str | None, ok: bool) -> None:
    assert is_spsp_content_type(content_type) is ok


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("public", None),
        ("max-age=60", 60),
        ("public, MAX-AGE=60", 60),
        ('max-age="60"', 60),
        ("max-age=60, max-age=5", 60),
        ("no-cache", 0),
        ("max-age=60, no-cache", 0),
        ('no-cache="Set-Cookie, X", max-age=60', 0),
        ("no-store", 0),
        ("max-age=abc", 0),
        ("max-age=-1", 0),
        ("max-age=", 0),
        ("max-age=99999999999999999999", MAX_CACHE_AGE),
        ("private, s-maxage=10", None),
    ],
)
def test_max_age(value: str | None, seconds: int | None) -> None:
    assert max_age(value) == seconds


def test_cache_control_header() -> None:
    assert cache_control_header(60) == "max-age=60"
    assert max_age(cache_control_header(60)) == 60
    with pytest.raises(EncodeError):
        cache_control_header(-1)


# ---------------------------------------------------------------------------------------
# Properties

SETTINGS = settings(max_examples=200, deadline=None)
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_~", min_size=1, max_size=10)
HOST = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PCHAR = st.sampled_from([*list("abcXYZ019-._~!$&'()*+,;=:@"), "%2F", "%7e"])
SEGMENT = st.lists(PCHAR, max_size=6).map("".join)
PATH = st.lists(SEGMENT, max_size=4).map(lambda segs: "".join("/" + s for s in segs))
SEGMENT_ADDR = st.text(alphabet="abcXYZ019_~-", min_size=1, max_size=10)
ADDRESS = st.lists(SEGMENT_ADDR, min_size=1, max_size=4).map(lambda s: "g." + ".".join(s))
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@SETTINGS
@given(HOST, PATH)
def test_pointer_round_trip(host: str, path: str) -> None:
    text = f"${host}{path}"
    pointer = PaymentPointer.parse(text)
    assert pointer == PaymentPointer(host, path)
    assert str(pointer) == text
    url = pointer.endpoint()
    assert url.startswith(f"https://{host}/")
    if path not in ("", "/"):
        assert to_payment_pointer(url) == (f"${host}" if path == WELL_KNOWN_PATH else text)
        assert resolve_payment_pointer(to_payment_pointer(url)) == url


@SETTINGS
@given(
    ADDRESS,
    st.binary(min_size=32, max_size=32),
    st.none() | st.builds(SpspBalance, st.integers(0, MAX_UINT64), st.integers(0, MAX_UINT64)),
    st.none()
    | st.builds(
        AssetInfo, st.text(min_size=1, max_size=5), st.integers(min_value=0, max_value=255)
    ),
    st.none() | st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=3),
    st.dictionaries(st.text(max_size=8).filter(lambda k: k not in BASE), JSON_VALUE, max_size=3),
)
def test_response_round_trip(
    address: str,
    secret: bytes,
    balance: SpspBalance | None,
    asset: AssetInfo | None,
    receiver_info: dict[str, Any] | None,
    extra: dict[str, Any],
) -> None:
    known = {"balance", "ledger_info", "asset_info", "receiver_info"}
    extra = {k: v for k, v in extra.items() if k not in known}
    response = SpspResponse(address, secret, balance, asset, receiver_info, extra)
    assert parse_spsp_response(response.to_json()) == response
    assert parse_spsp_response(response.to_body()) == response


@SETTINGS
@given(st.text(max_size=80))
def test_arbitrary_strings_into_pointer_parsers(text: str) -> None:
    for lenient in (False, True):
        for candidate in (text, "$" + text):
            with contextlib.suppress(PaymentPointerError):
                resolve_payment_pointer(candidate, lenient=lenient, allow_http_for_loopback=True)
    with contextlib.suppress(PaymentPointerError):
        to_payment_pointer("https://" + text)


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_bodies_raise_only_spsp_error(body: str | bytes) -> None:
    with contextlib.suppress(SpspError):
        parse_spsp_response(body)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "destination_account",
                "shared_secret",
                "balance",
                "ledger_info",
                "asset_info",
                "receiver_info",
                "x",
            ]
        ),
        JSON_VALUE
        | st.just(BASE["shared_secret"])
        | st.just("g.a.b")
        | st.fixed_dictionaries({"maximum": JSON_VALUE, "current": JSON_VALUE})
        | st.fixed_dictionaries({"code": JSON_VALUE, "scale": JSON_VALUE}),
    )
)
def test_arbitrary_objects_raise_only_spsp_error(obj: dict[str, Any]) -> None:
    with contextlib.suppress(SpspError):
        parse_spsp_response(obj)


@SETTINGS
@given(st.text(max_size=100) | st.none())
def test_header_helpers_never_raise(value: str | None) -> None:
    result = negotiate_spsp(value)
    assert result in (None, SPSP_MEDIA_TYPE)
    negotiate(value, [SPSP4_MEDIA_TYPE, SPSP_MEDIA_TYPE])
    seconds = max_age(value)
    assert seconds is None or 0 <= seconds <= MAX_CACHE_AGE
    is_spsp_content_type(value)


# ------------------------------------------------------------------ SPSP v4 (STREAM)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        # ilp-protocol-spsp 3.0.0 and every STREAM client: both types listed
        ("application/spsp4+json, application/spsp+json", SPSP4_MEDIA_TYPE),
        ("application/spsp4+json", SPSP4_MEDIA_TYPE),
        # only wildcards / JSON, or no Accept at all: STREAM (12-stream.md §15 item 11)
        (None, SPSP4_MEDIA_TYPE),
        ("", SPSP4_MEDIA_TYPE),
        ("*/*", SPSP4_MEDIA_TYPE),
        ("application/json", SPSP4_MEDIA_TYPE),
        ("application/*", SPSP4_MEDIA_TYPE),
        # a PSK2-only client names spsp+json alone and must never get a STREAM secret
        ("application/spsp+json", SPSP_MEDIA_TYPE),
        ("application/spsp+json, */*;q=0.1", SPSP_MEDIA_TYPE),
        # q values count
        ("application/spsp+json, application/spsp4+json;q=0.5", SPSP_MEDIA_TYPE),
        ("application/spsp4+json;q=0, application/spsp+json", SPSP_MEDIA_TYPE),
        ("application/spsp4+json;q=0, */*", SPSP_MEDIA_TYPE),
        ("application/spsp4+json;q=0.5, application/spsp+json;q=0.5", SPSP4_MEDIA_TYPE),
        # neither
        ("text/html", None),
        ("application/spsp+json;q=0, application/spsp4+json;q=0", None),
    ],
)
def test_negotiate_setup_picks_stream_or_psk2(accept: str | None, expected: str | None) -> None:
    assert negotiate_setup(accept) == expected


def test_negotiate_setup_without_stream_is_psk2_negotiation() -> None:
    assert negotiate_setup("*/*", stream=False) == SPSP_MEDIA_TYPE
    assert negotiate_setup("application/spsp4+json", stream=False) is None


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/spsp4+json", "stream"),
        ("Application/SPSP4+JSON; charset=utf-8", "stream"),
        ("application/spsp+json", "psk2"),
        ("application/json", "psk2"),
        ("text/html", None),
        (None, None),
    ],
)
def test_response_protocol_follows_the_content_type(
    content_type: str | None, expected: str | None
) -> None:
    assert response_protocol(content_type) == expected


def test_spsp4_response_round_trip_and_shape() -> None:
    response = SpspResponse(
        "g.example.bob.token",
        SECRET,
        balance=SpspBalance(2**64 - 1, 15000),
        asset=AssetInfo("XYZ", 9),
        receiver_info={"name": "shop"},
        protocol="stream",
        receipts_enabled=False,
    )
    body = response.to_json()
    assert body == {
        "destination_account": "g.example.bob.token",
        "shared_secret": BASE["shared_secret"],
        "balance": {"maximum": str(2**64 - 1), "current": "15000"},
        "asset_info": {"code": "XYZ", "scale": 9},  # no PSK2-era ledger_info
        "receiver_info": {"name": "shop"},
        "receipts_enabled": False,
    }
    assert response.media_type == SPSP4_MEDIA_TYPE
    assert parse_spsp_response(response.to_body(), protocol="stream") == response
    minimal = parse_spsp_response({**BASE, "receipts_enabled": True}, protocol="stream")
    assert minimal.receipts_enabled is True and minimal.protocol == "stream"
    with pytest.raises(SpspError, match="receipts_enabled"):
        parse_spsp_response({**BASE, "receipts_enabled": "yes"}, protocol="stream")
    # not a PSK2 field: ignored there, and never written there
    assert parse_spsp_response({**BASE, "receipts_enabled": True}).receipts_enabled is None
    with pytest.raises(EncodeError, match="receipts_enabled"):
        SpspResponse("g.a.b", SECRET, receipts_enabled=True).to_json()
    assert SpspResponse("g.a.b", SECRET).media_type == SPSP_MEDIA_TYPE


@SETTINGS
@given(st.text(max_size=100) | st.none())
def test_setup_negotiation_never_raises(value: str | None) -> None:
    assert negotiate_setup(value) in (None, SPSP_MEDIA_TYPE, SPSP4_MEDIA_TYPE)
    assert response_protocol(value) in (None, "psk2", "stream")
