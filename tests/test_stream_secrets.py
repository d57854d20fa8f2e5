"""ilp_receiver.stream.secrets: keys, envelope, fulfillments and server tokens.

Vectors (``stream.json``): ``key_derivation``, ``encryption``, ``fulfillment``,
``server_address_and_secret``, ``randomness`` (how the recorded random bytes were made)
and the label / size entries of ``constants``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_receiver.codec.stream import (
    MAX_PLAINTEXT_LENGTH,
    ConnectionClose,
    StreamData,
    StreamPacket,
    decode_stream_packet,
)
from ilp_receiver.crypto import ENVELOPE_OVERHEAD, seal_envelope
from ilp_receiver.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    IlpError,
    InvalidAddressError,
)
from ilp_receiver.psk2.secrets import base64url, decode_base64_lenient
from ilp_receiver.stream import secrets
from ilp_receiver.stream.secrets import (
    ConnectionToken,
    IssuedStreamSecret,
    StreamKeys,
    StreamServerSecrets,
    TokenContents,
    UnknownTokenError,
    condition_for,
    condition_matches,
    connection_id_from_destination,
    derive_keys,
    fulfillment_for,
    open_packet,
    seal_packet,
)
from tests.test_stream_codec import packet_from_json
from tests.vectorlib import case_id, cases, section

FAST = settings(max_examples=100, deadline=None)
F = "stream.json"
# Read at import so tests/test_vector_coverage.py sees every section requested.
KEY_DERIVATION: dict[str, Any] = section(F, "key_derivation")
ENCRYPTION: dict[str, Any] = section(F, "encryption")
FULFILLMENT: dict[str, Any] = section(F, "fulfillment")
SERVER: dict[str, Any] = section(F, "server_address_and_secret")
RANDOMNESS: str = section(F, "randomness")
CONSTANTS: dict[str, Any] = section(F, "constants")
PACKETS: list[dict[str, Any]] = cases(F, "packets")

SERVER_SECRET = bytes.fromhex(SERVER["server_secret_hex"])
SERVER_ADDRESS: str = SERVER["server_ilp_address"]


def server() -> StreamServerSecrets:
    """Server secrets of the vector server."""
    return StreamServerSecrets(SERVER_SECRET)


def token_options(argument: Any) -> dict[str, Any]:
    """generateAddressAndSecret's argument as keyword arguments of ``generate``."""
    if argument is None:
        return {}
    if isinstance(argument, str):  # the 2.7.1 string form is the connection tag
        return {"connection_tag": argument}
    options: dict[str, Any] = {}
    if argument.get("connectionTag") is not None:
        options["connection_tag"] = argument["connectionTag"]
    if argument.get("receiptNonce_hex") is not None:
        options["receipt_nonce"] = bytes.fromhex(argument["receiptNonce_hex"])
        options["receipt_secret"] = bytes.fromhex(argument["receiptSecret_hex"])
    return options


def draws(case: dict[str, Any]) -> tuple[bytes, bytes]:
    """The recorded (token nonce, token IV) of a server case, checking their order."""
    drawn = case["random_bytes_drawn"]
    assert [d["purpose"] for d in drawn] == ["token_nonce", "token_iv"]
    return bytes.fromhex(drawn[0]["hex"]), bytes.fromhex(drawn[1]["hex"])


# ------------------------------------------------------------------- key derivation


@pytest.mark.parametrize("case", KEY_DERIVATION["cases"], ids=lambda c: c["shared_secret_hex"][:8])
def test_key_derivation(case: dict[str, Any]) -> None:
    shared_secret = bytes.fromhex(case["shared_secret_hex"])
    assert base64.b64decode(case["shared_secret_base64"]) == shared_secret
    keys = derive_keys(shared_secret)
    assert keys.shared_secret == shared_secret
    assert keys.encryption_key.hex() == case["encryption_key_hex"]
    assert keys.fulfillment_key.hex() == case["fulfillment_key_hex"]
    assert case["incoming_packet_ids"]
    for entry in case["incoming_packet_ids"]:
        sequence = int(entry["sequence"])
        assert sequence.to_bytes(8, "big").hex() == entry["sequence_bytes_hex"]
        assert keys.packet_id(sequence).hex() == entry["packet_id_hex"]
        assert secrets.packet_id(shared_secret, sequence).hex() == entry["packet_id_hex"]
    # Keys never show in repr.
    assert case["encryption_key_hex"] not in repr(keys)
    assert case["shared_secret_hex"] not in repr(keys)


def test_key_derivation_labels_match_the_note() -> None:
    # "encryption_key = HMAC-SHA256(key=shared_secret, msg="ilp_stream_encryption")"
    secret = bytes(range(32))
    expected = hmac.new(secret, b"ilp_stream_encryption", hashlib.sha256).digest()
    assert derive_keys(secret).encryption_key == expected
    assert "ilp_stream_encryption" in KEY_DERIVATION["note"]


def test_packet_id_refuses_non_uint64() -> None:
    keys = derive_keys(bytes(32))
    for bad in (-1, 2**64, "1"):
        with pytest.raises(EncodeError):
            keys.packet_id(bad)  # type: ignore[arg-type]


def test_constants_labels_and_sizes() -> None:
    labels = CONSTANTS["hmac_labels_utf8"]
    assert labels == {
        "encryption_key": secrets.ENCRYPTION_LABEL.decode(),
        "fulfillment_key": secrets.FULFILLMENT_LABEL.decode(),
        "server_shared_secret_generator": secrets.SHARED_SECRET_LABEL.decode(),
        "incoming_packet_id": secrets.PACKET_ID_LABEL.decode(),
    }
    assert CONSTANTS["token_nonce_bytes"] == secrets.TOKEN_NONCE_LENGTH == 18
    aes = CONSTANTS["aes_256_gcm"]
    assert (aes["iv_bytes"], aes["tag_bytes"]) == (12, 16)
    assert aes["layout"] == "iv || tag || ciphertext"
    # Our own label is not one of the protocol's.
    assert secrets.SERVER_SECRET_LABEL.decode() not in labels.values()


# ----------------------------------------------------------------------- encryption


@pytest.mark.parametrize("case", ENCRYPTION["cases"], ids=case_id)
def test_encryption_case(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key_hex"])
    iv = bytes.fromhex(case["iv_hex"])
    plaintext = bytes.fromhex(case["plaintext_hex"])
    data = bytes.fromhex(case["encrypted_hex"])
    assert secrets.encrypt(key, iv, plaintext) == data
    envelope = case["envelope"]
    assert data.hex() == envelope["iv"] + envelope["tag"] + envelope["ciphertext"]
    assert len(data) == len(plaintext) + ENVELOPE_OVERHEAD
    assert secrets.decrypt(key, data) == plaintext
    assert case.get("decrypts_back", True) is True


def test_encryption_keys_are_the_derived_ones() -> None:
    # The cases use the encryption key of shared secret 000102..1f (§3 vector).
    keys = derive_keys(bytes(range(32)))
    assert {c["key_hex"] for c in ENCRYPTION["cases"]} == {keys.encryption_key.hex()}
    # so a StreamKeys works wherever a key does, and the packet case opens as a packet
    (case,) = [c for c in ENCRYPTION["cases"] if c["name"] == "stream_packet_no_frames"]
    data = bytes.fromhex(case["encrypted_hex"])
    assert secrets.decrypt(keys, data).hex() == case["plaintext_hex"]
    assert open_packet(keys, data) == StreamPacket(1, 12, 0, ())
    assert seal_packet(keys, data[:12], StreamPacket(1, 12, 0)) == data


def test_encryption_random_bytes_drawn() -> None:
    # The IVs were queued explicitly, one per case, in order.
    drawn = ENCRYPTION["random_bytes_drawn"]
    assert [d["purpose"] for d in drawn] == ["iv"] * len(ENCRYPTION["cases"])
    assert [d["hex"] for d in drawn] == [c["iv_hex"] for c in ENCRYPTION["cases"]]


@pytest.mark.parametrize("case", ENCRYPTION["decrypt_failures"], ids=case_id)
def test_decrypt_failure(case: dict[str, Any]) -> None:
    right = bytes.fromhex(ENCRYPTION["cases"][0]["key_hex"])
    data = bytes.fromhex(case["data_hex"])
    assert "decrypted" not in case and case["error"]
    # the generator's wrong key is Buffer.alloc(32, 7)
    key = bytes([7]) * 32 if case["name"] == "wrong_key" else right
    if case["name"] == "wrong_key":
        assert secrets.decrypt(right, data)  # the data itself is fine
    with pytest.raises(DecodeError):
        secrets.decrypt(key, data)
    with pytest.raises(DecodeError):
        open_packet(key, data)


# ---------------------------------------------------------------------- fulfillment


@pytest.mark.parametrize("case", FULFILLMENT["cases"], ids=lambda c: c["packet_case"])
def test_fulfillment_case(case: dict[str, Any]) -> None:
    keys = derive_keys(bytes.fromhex(case["shared_secret_hex"]))
    (packet_case,) = [c for c in PACKETS if c["name"] == case["packet_case"]]
    packet = packet_from_json(packet_case["packet"])
    data = bytes.fromhex(case["data_hex"])
    # sealing the packet case with the recorded IV gives the recorded data ...
    assert seal_packet(keys, bytes.fromhex(case["iv_hex"]), packet) == data
    assert open_packet(keys, data) == packet
    # ... and §8: fulfillment = HMAC(fulfillmentKey, data), condition = SHA-256 of it
    fulfillment = bytes.fromhex(case["fulfillment_hex"])
    condition = bytes.fromhex(case["condition_hex"])
    assert fulfillment_for(keys, data) == fulfillment
    assert fulfillment_for(keys.fulfillment_key, data) == fulfillment
    assert keys.fulfillment(data) == fulfillment
    assert condition_for(fulfillment) == condition
    assert keys.condition(data) == condition
    assert condition_matches(fulfillment, condition)
    assert not condition_matches(fulfillment, bytes(32))
    assert not condition_matches(fulfillment_for(keys, data + b"\x00"), condition)


def test_padded_packet() -> None:
    padded = FULFILLMENT["padded_packet"]
    keys = derive_keys(bytes.fromhex(padded["shared_secret_hex"]))
    data = bytes.fromhex(padded["data_hex"])
    assert len(data) == padded["length"] == 100
    opened = padded["opened"]
    plaintext = secrets.decrypt(keys, data)
    assert plaintext.hex() == opened["envelope"]["plaintext"]
    packet = open_packet(keys, data)  # the zero padding is never read
    assert packet == packet_from_json(opened["packet"])
    assert seal_packet(keys, data[:12], packet, pad_to=padded["length"]) == data
    assert data[:12].hex() == opened["envelope"]["iv"]
    unpadded = seal_packet(keys, data[:12], packet)
    assert len(unpadded) == ENVELOPE_OVERHEAD + 8


def test_seal_packet_limits() -> None:
    keys = derive_keys(bytes(32))
    iv = bytes(12)
    small = StreamPacket(1, 12, 0, (ConnectionClose(1, "bye"),))
    for pad_to in (ENVELOPE_OVERHEAD + 5, 32768, 10**6, "100"):
        with pytest.raises(EncodeError):
            seal_packet(keys, iv, small, pad_to=pad_to)  # type: ignore[arg-type]
    assert len(seal_packet(keys, iv, small, pad_to=32767)) == 32767
    # The plaintext must fit in ILP data (32767 - 28 bytes).
    header_and_frame = 8 + 1 + 3 + 2 + 2 + 3  # StreamData with a long-form data prefix
    fits = StreamPacket(
        1, 12, 0, (StreamData(1, 0, bytes(MAX_PLAINTEXT_LENGTH - header_and_frame)),)
    )
    assert len(seal_packet(keys, iv, fits)) == 32767
    too_big = StreamPacket(1, 12, 0, (StreamData(1, 0, bytes(MAX_PLAINTEXT_LENGTH)),))
    with pytest.raises(EncodeError):
        seal_packet(keys, iv, too_big)
    with pytest.raises(EncodeError):  # a bad IV is refused, never used
        seal_packet(keys, bytes(11), small)


# -------------------------------------------------------------- server tokens (§2.2)


def test_shared_secret_generator() -> None:
    assert (
        secrets.shared_secret_generator(SERVER_SECRET).hex()
        == SERVER["shared_secret_generator_hex"]
    )


@pytest.mark.parametrize("case", SERVER["cases"], ids=case_id)
def test_server_address_and_secret(case: dict[str, Any]) -> None:
    token_nonce, token_iv = draws(case)
    options = token_options(case["argument"])
    issued = server().generate(SERVER_ADDRESS, token_nonce, token_iv, **options)
    # bit for bit: destination and shared secret
    assert issued.destination == case["destination_account"]
    assert issued.shared_secret.hex() == case["shared_secret_hex"]
    assert base64.b64decode(case["shared_secret_base64"]) == issued.shared_secret
    destination, shared_secret = issued  # unpacks like a tuple
    assert destination == SERVER_ADDRESS + "." + case["address_segment"]
    assert case["shared_secret_hex"] not in repr(issued)
    # the one-shot function gives the same
    assert (
        secrets.generate(SERVER_SECRET, SERVER_ADDRESS, token_nonce, token_iv, **options) == issued
    )
    # token layout: iv || tag || ciphertext of the recorded plaintext
    token = decode_base64_lenient(case["address_segment"])
    assert token.hex() == case["token_hex"]
    envelope = case["token_envelope"]
    assert case["token_hex"] == envelope["iv"] + envelope["tag"] + envelope["ciphertext"]
    assert envelope["iv"] == token_iv.hex()
    plaintext = secrets.encode_token_plaintext(token_nonce, **options)
    assert plaintext.hex() == case["token_plaintext_hex"]
    assert secrets.decrypt(SERVER_SECRET, token) == plaintext
    # and back: §2.3 finds the token and its authenticated contents
    opened = server().open(issued.destination, SERVER_ADDRESS)
    assert isinstance(opened, ConnectionToken)
    assert opened.connection_id == case["address_segment"]
    assert opened.token == token
    assert opened.shared_secret == shared_secret
    assert opened.keys == derive_keys(shared_secret)
    assert opened.connection_tag == options.get("connection_tag")
    assert opened.receipt_nonce == options.get("receipt_nonce")
    assert opened.receipt_secret == options.get("receipt_secret")
    assert opened.receipts_enabled is case["receipts_enabled"]
    assert opened.contents == secrets.decode_token_plaintext(plaintext)
    assert opened.contents.token_nonce == token_nonce
    assert secrets.open_token(SERVER_SECRET, case["address_segment"]) == opened
    if opened.receipt_secret is not None:
        assert opened.receipt_secret.hex() not in repr(opened)


def test_server_cases_cover_the_options() -> None:
    names = [c["name"] for c in SERVER["cases"]]
    assert names == [
        "no_options",
        "connection_tag_string_argument",
        "connection_tag_option",
        "receipts",
        "connection_tag_and_receipts",
    ]


def test_token_sizes_match_the_spec() -> None:
    # §2.2: plaintext / token bytes and address characters per option set.
    expected = {
        "no_options": (21, 49, 66),
        "connection_tag_string_argument": (30, 58, 78),
        "receipts": (69, 97, 130),
        "connection_tag_and_receipts": (71, 99, 132),
    }
    for case in SERVER["cases"]:
        if case["name"] in expected:
            plain, token, chars = expected[case["name"]]
            assert len(case["token_plaintext_hex"]) // 2 == plain
            assert len(case["token_hex"]) // 2 == token
            assert len(case["address_segment"]) == chars


def test_random_draws_follow_the_recorded_rule() -> None:
    # "crypto.randomBytes replaced by SHA-256("<label>:<counter>") per scenario"; the
    # generator labels these scenarios "address:<case name>".
    assert 'SHA-256("<label>:<counter>")' in RANDOMNESS
    for case in SERVER["cases"]:
        token_nonce, token_iv = draws(case)
        label = "address:" + case["name"]
        assert token_nonce == hashlib.sha256(f"{label}:0".encode()).digest()[:18]
        assert token_iv == hashlib.sha256(f"{label}:1".encode()).digest()[:12]


def issued_with_tag(tag: str = "acct:42") -> IssuedStreamSecret:
    return server().generate(SERVER_ADDRESS, bytes(range(18)), bytes(12), connection_tag=tag)


def test_destination_parsing_follows_2_7_1() -> None:
    issued = issued_with_tag()
    segment = issued.destination.rsplit(".", 1)[1]
    # segments after the token are ignored
    assert (
        server().open(issued.destination + ".extra.bits", SERVER_ADDRESS).connection_tag
        == "acct:42"
    )
    # the prefix is a plain (first-occurrence) replace, as in 2.7.1
    assert connection_id_from_destination("g.x.test.example.server.abc", SERVER_ADDRESS) == "g"
    assert connection_id_from_destination("xtest.example.server.tok.y", SERVER_ADDRESS) == "xtok"
    assert connection_id_from_destination(f"{SERVER_ADDRESS}.{segment}", SERVER_ADDRESS) == segment
    # Node decodes base64 leniently: standard alphabet with padding opens the same token
    token = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    standard = base64.b64encode(token).decode()
    opened = server().open(f"{SERVER_ADDRESS}.{standard}", SERVER_ADDRESS)
    assert opened.shared_secret == issued.shared_secret
    assert opened.connection_id == standard
    for destination in (SERVER_ADDRESS + ".", SERVER_ADDRESS + "..x", ""):
        with pytest.raises(UnknownTokenError):
            connection_id_from_destination(destination, SERVER_ADDRESS)


def flip(segment: str, index: int) -> str:
    char = segment[index]
    return segment[:index] + ("A" if char != "A" else "B") + segment[index + 1 :]


def test_tampered_and_foreign_tokens_are_refused() -> None:
    issued = issued_with_tag()
    segment = issued.destination.rsplit(".", 1)[1]
    other = StreamServerSecrets(bytes(32)).generate(SERVER_ADDRESS, bytes(18), bytes(12), "acct:42")
    bad = [
        flip(segment, 0),  # IV
        flip(segment, 20),  # tag
        flip(segment, len(segment) - 2),  # ciphertext
        segment[:-4],  # truncated
        segment[:30],  # shorter than IV + tag
        other.destination.rsplit(".", 1)[1],  # another server secret
        "!!!",  # not base64
        "abc",  # base64, but no token
    ]
    srv = server()
    for candidate in bad:
        with pytest.raises(UnknownTokenError) as info:
            srv.open_token(candidate)
        error = info.value
        assert isinstance(error, IlpError)
        assert (error.code, error.message) == ("F02", "")  # 2.7.1: empty F02
        assert error.detail
    assert srv.open_token(segment).connection_tag == "acct:42"


@pytest.mark.parametrize(
    ("plaintext", "detail"),
    [
        (bytes(17), "token nonce"),
        (bytes(18), "connection tag"),
        (bytes(18) + b"\x02\x01a" + b"\x00\x00", "printable ASCII"),
        (bytes(18) + b"\x02\xc3\xa9" + b"\x00\x00", "not ASCII"),
        (bytes(18) + b"\x81\x81" + b"a" * 129 + b"\x00\x00", "maximum is 128"),
        (bytes(18) + b"\x00" + b"\x05abcde" + b"\x00", "receiptNonce must be 16 bytes"),
        (bytes(18) + b"\x00" + b"\x10" + bytes(16) + b"\x00", "accompany each other"),
        (bytes(18) + b"\x00\x00" + b"\x20" + bytes(32), "accompany each other"),
        (bytes(18) + b"\x00" + b"\x10" + bytes(16) + b"\x05abcde", "receiptSecret must be 32"),
        (bytes(18) + b"\x00\x00", "receipt secret"),
    ],
)
def test_authentic_tokens_with_bad_contents_are_refused(plaintext: bytes, detail: str) -> None:
    # Sealed with the right server secret (so authentic), but not what generate() writes.
    segment = base64url(seal_envelope(SERVER_SECRET, bytes(12), plaintext))
    with pytest.raises(UnknownTokenError) as info:
        server().open_token(segment)
    assert detail in info.value.detail
    with pytest.raises(DecodeError, match=detail):
        secrets.decode_token_plaintext(plaintext)


def test_token_contents_tolerate_trailing_bytes() -> None:
    # 2.7.1 reads three var-octet-strings and ignores the rest.
    plaintext = secrets.encode_token_plaintext(bytes(18), "t") + b"future"
    assert secrets.decode_token_plaintext(plaintext) == TokenContents(bytes(18), "t")


# ----------------------------------------------------------------- tag validation


@pytest.mark.parametrize("tag", ["a", " ", "~user 42:shop/page?x=1", "a" * 128, "Z" * 127])
def test_valid_connection_tags(tag: str) -> None:
    assert secrets.validate_connection_tag(tag) == tag
    opened = server().open(issued_with_tag(tag).destination, SERVER_ADDRESS)
    assert opened.connection_tag == tag


@pytest.mark.parametrize("tag", ["a" * 129, "é", "tab\t", "nl\n", "\x7f", "\x00", b"bytes", 42])
def test_invalid_connection_tags(tag: Any) -> None:
    with pytest.raises(EncodeError):
        secrets.validate_connection_tag(tag)
    with pytest.raises(EncodeError):
        issued_with_tag(tag)


def test_empty_tag_means_no_tag() -> None:
    # 2.7.1: a falsy tag is not written, and an empty one is read as "no tag".
    empty = issued_with_tag("")
    none = server().generate(SERVER_ADDRESS, bytes(range(18)), bytes(12))
    assert empty == none
    assert server().open(empty.destination, SERVER_ADDRESS).connection_tag is None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"token_nonce": bytes(17)}, EncodeError),
        ({"token_nonce": bytes(19)}, EncodeError),
        ({"iv": bytes(11)}, EncodeError),
        ({"receipt_nonce": bytes(16)}, EncodeError),
        ({"receipt_secret": bytes(32)}, EncodeError),
        ({"receipt_nonce": bytes(15), "receipt_secret": bytes(32)}, EncodeError),
        ({"receipt_nonce": bytes(16), "receipt_secret": bytes(31)}, EncodeError),
        ({"server_address": "test.example.server."}, InvalidAddressError),
        ({"server_address": "nonsense"}, InvalidAddressError),
        ({"server_address": "test." + "a" * 880}, InvalidAddressError),  # destination > 1023
    ],
)
def test_generate_refuses_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {
        "server_address": SERVER_ADDRESS,
        "token_nonce": bytes(18),
        "iv": bytes(12),
        "connection_tag": "t" * 128,
    }
    arguments.update(kwargs)
    if "receipt_nonce" in kwargs or "receipt_secret" in kwargs:
        arguments.setdefault("receipt_nonce", None)
        arguments.setdefault("receipt_secret", None)
    with pytest.raises(error):
        server().generate(**arguments)


def test_longest_destination_fits() -> None:
    # 128-character tag + receipts: 302 segment characters; the server address gets
    # the remaining 720 (module docstring of ilp_receiver.stream.secrets).
    address = "test." + "a" * 715
    issued = server().generate(address, bytes(18), bytes(12), "t" * 128, bytes(16), bytes(32))
    assert len(issued.destination) == 1023
    assert len(issued.destination.rsplit(".", 1)[1]) == 302
    with pytest.raises(InvalidAddressError):
        server().generate(address + "a", bytes(18), bytes(12), "t" * 128, bytes(16), bytes(32))


# ---------------------------------------------------------------- server secrets


def test_server_secret_from_receiver_secret() -> None:
    receiver_secret = bytes(range(40))
    expected = hmac.new(
        receiver_secret, b"ilp_receiver_stream_server_secret", hashlib.sha256
    ).digest()
    assert secrets.server_secret_from_receiver_secret(receiver_secret) == expected
    derived = StreamServerSecrets.from_receiver_secret(receiver_secret)
    direct = StreamServerSecrets(expected)
    issued = derived.generate(SERVER_ADDRESS, bytes(18), bytes(12), "x")
    assert direct.open(issued.destination, SERVER_ADDRESS).shared_secret == issued.shared_secret
    # A different role's secret: the raw receiver secret does not open the token.
    with pytest.raises(UnknownTokenError):
        StreamServerSecrets(receiver_secret[:32]).open(issued.destination, SERVER_ADDRESS)
    for bad in (bytes(31), "a" * 40):
        with pytest.raises(ConfigError):
            StreamServerSecrets.from_receiver_secret(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [bytes(31), bytes(33), b"", "x" * 32])
def test_server_secret_must_be_32_bytes(bad: Any) -> None:
    with pytest.raises(ConfigError):
        StreamServerSecrets(bad)


def test_cache() -> None:
    srv = StreamServerSecrets(SERVER_SECRET, cache_size=2)
    segments = [
        srv.generate(SERVER_ADDRESS, bytes([n]) * 18, bytes(12)).destination.rsplit(".", 1)[1]
        for n in range(3)
    ]
    first = srv.open_token(segments[0])
    assert srv.open_token(segments[0]) is first  # cached
    srv.open_token(segments[1])
    srv.open_token(segments[0])  # most recently used again
    srv.open_token(segments[2])  # evicts segments[1]
    assert srv.open_token(segments[0]) is first
    assert list(srv._cache) == [segments[2], segments[0]]
    # Junk is never cached.
    with pytest.raises(UnknownTokenError):
        srv.open_token("AAAA")
    assert "AAAA" not in srv._cache
    srv.clear_cache()
    again = srv.open_token(segments[0])
    assert again is not first
    assert again == first
    uncached = StreamServerSecrets(SERVER_SECRET, cache_size=0)
    assert uncached.open_token(segments[0]) is not uncached.open_token(segments[0])
    assert not uncached._cache
    with pytest.raises(ConfigError):
        StreamServerSecrets(SERVER_SECRET, cache_size=-1)


def test_reprs_hide_secrets() -> None:
    srv = server()
    assert SERVER["server_secret_hex"] not in repr(srv)
    issued = srv.generate(SERVER_ADDRESS, bytes(18), bytes(12), "t", bytes(16), b"\xab" * 32)
    opened = srv.open(issued.destination, SERVER_ADDRESS)
    for text in (repr(issued), repr(opened), repr(opened.contents), repr(opened.keys)):
        assert issued.shared_secret.hex() not in text
        assert "\\xab\\xab" not in text  # the receipt secret, as bytes repr shows it
        assert "abab" * 16 not in text
    assert isinstance(opened.keys, StreamKeys)


# --------------------------------------------------------------------- hypothesis

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=128)


@FAST
@given(
    printable,
    st.binary(min_size=18, max_size=18),
    st.binary(min_size=12, max_size=12),
    st.one_of(
        st.none(),
        st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)),
    ),
)
def test_generate_open_round_trip(
    tag: str, token_nonce: bytes, iv: bytes, receipt: tuple[bytes, bytes] | None
) -> None:
    receipt_nonce, receipt_secret = receipt if receipt else (None, None)
    srv = StreamServerSecrets(SERVER_SECRET, cache_size=0)
    issued = srv.generate(SERVER_ADDRESS, token_nonce, iv, tag, receipt_nonce, receipt_secret)
    opened = srv.open(issued.destination, SERVER_ADDRESS)
    assert opened.shared_secret == issued.shared_secret
    assert opened.connection_tag == (tag or None)
    assert opened.receipt_nonce == receipt_nonce
    assert opened.receipt_secret == receipt_secret
    assert opened.receipts_enabled is (receipt is not None)
    assert len(issued.destination) <= 1023


@FAST
@given(st.text(max_size=120))
def test_arbitrary_segments_only_unknown_token_error(segment: str) -> None:
    srv = StreamServerSecrets(SERVER_SECRET, cache_size=0)
    with contextlib.suppress(UnknownTokenError):
        srv.open(f"{SERVER_ADDRESS}.{segment}", SERVER_ADDRESS)


@FAST
@given(st.binary(max_size=120), st.binary(min_size=12, max_size=12))
def test_sealed_arbitrary_token_plaintexts(plaintext: bytes, iv: bytes) -> None:
    # Even authentic tokens with arbitrary contents only ever raise UnknownTokenError.
    segment = base64url(seal_envelope(SERVER_SECRET, iv, plaintext))
    try:
        opened = StreamServerSecrets(SERVER_SECRET, cache_size=0).open_token(segment)
    except UnknownTokenError:
        return
    assert opened.contents == secrets.decode_token_plaintext(plaintext)


@FAST
@given(
    st.binary(min_size=32, max_size=32), st.binary(min_size=12, max_size=12), st.binary(max_size=64)
)
def test_envelope_round_trip(shared_secret: bytes, iv: bytes, data: bytes) -> None:
    keys = derive_keys(shared_secret)
    packet = StreamPacket(5, 13, 7, (StreamData(1, 0, data),))
    sealed = seal_packet(keys, iv, packet)
    assert sealed[:12] == iv
    assert open_packet(keys, sealed) == packet
    assert decode_stream_packet(secrets.decrypt(keys, sealed)) == packet
