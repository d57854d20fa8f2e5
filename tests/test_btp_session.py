"""The sans-I/O BTP session (ilp_receiver/btp/session.py): bytes and times in, events
and bytes out -- no event loop, no socket, no timer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from ilp_receiver.btp.session import (
    BtpSessionState,
    PrepareReceived,
    RequestTimedOut,
    ResponseReceived,
    SendBytes,
    TransferReceived,
)
from ilp_receiver.codec.btp import (
    BtpError,
    BtpMessage,
    BtpResponse,
    BtpTransfer,
    ProtocolData,
    decode_btp,
    encode_btp,
    encode_ilp_message,
    encode_ilp_response,
    find_protocol_data,
)
from ilp_receiver.codec.ilp import (
    IlpFulfill,
    IlpPrepare,
    IlpReject,
    decode_reply,
    encode_packet,
)

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def prepare(amount: int = 10) -> IlpPrepare:
    return IlpPrepare(amount, WHEN + timedelta(seconds=30), bytes(32), "test.bob", b"")


def state(**options: object) -> BtpSessionState:
    return BtpSessionState(
        local_address=lambda: "test.us",
        rng=random.Random(7),
        wall_clock=lambda: WHEN,
        **options,  # type: ignore[arg-type]
    )


def reply_in(data: bytes) -> IlpFulfill | IlpReject:
    frame = decode_btp(data)
    assert isinstance(frame, BtpResponse)
    entry = find_protocol_data(frame, "ilp")
    assert entry is not None
    return decode_reply(entry.data)


def error_in(data: bytes) -> BtpError:
    frame = decode_btp(data)
    assert isinstance(frame, BtpError)
    return frame


# -- the peer's requests ------------------------------------------------------------------


def test_a_prepare_is_reported_and_its_answer_is_a_response() -> None:
    session = state()
    event = session.receive(encode_ilp_message(5, encode_packet(prepare())))
    assert event == PrepareReceived(5, prepare())
    assert session.prepares_received == 1
    answer = session.answer_prepare(5, IlpFulfill(bytes(32), b"hi"))
    assert decode_btp(answer).request_id == 5
    assert reply_in(answer) == IlpFulfill(bytes(32), b"hi")


def test_the_session_answers_what_it_can_by_itself() -> None:
    session = state()
    # not a BTP frame: Error F01 with the request id of its header
    garbage = session.receive(b"\x06\x00\x00\x00\x09\xff")
    assert isinstance(garbage, SendBytes)
    error = error_in(garbage.data)
    assert (error.request_id, error.code) == (9, "F01")
    # a Message without an ilp entry: Error F00 naming at most four of its entries
    names = tuple(ProtocolData(f"p{i}", 0, b"") for i in range(6))
    other = session.receive(encode_btp(BtpMessage(3, names)))
    assert isinstance(other, SendBytes)
    text = error_in(other.data).data.decode()
    assert "p0, p1, p2, p3, ... (6 in all)" in text and "p4" not in text
    # an ilp entry that is not a Prepare: an F01 Reject in a Response
    bad = session.receive(encode_ilp_message(4, b"\x0c\x01\x00"))
    assert isinstance(bad, SendBytes)
    reject = reply_in(bad.data)
    assert isinstance(reject, IlpReject) and reject.code == "F01"
    assert reject.triggered_by == "test.us"
    # BTP/1.x frames: Error F00
    legacy = session.receive(bytes([3, 0, 0, 0, 8, 1, 0]))
    assert isinstance(legacy, SendBytes) and error_in(legacy.data).code == "F00"


def test_while_refusing_prepares_get_t01_without_reaching_the_handler() -> None:
    session = state()
    session.refusing = "shutting down"
    event = session.receive(encode_ilp_message(5, encode_packet(prepare())))
    assert isinstance(event, SendBytes)
    reject = reply_in(event.data)
    assert isinstance(reject, IlpReject) and (reject.code, reject.message) == (
        "T01",
        "shutting down",
    )


def test_a_transfer_is_reported_and_answered_empty() -> None:
    session = state()
    transfer = BtpTransfer(11, 500, ())
    event = session.receive(encode_btp(transfer))
    assert event == TransferReceived(11, transfer)
    assert decode_btp(session.answer_transfer(11)) == BtpResponse(11, ())


# -- the BTP/2.0-I responder cache --------------------------------------------------------


def test_btp2i_repeats_are_answered_from_the_cache_and_reused_ids_refused() -> None:
    session = state(idempotent=True, response_cache_size=2)
    request = encode_ilp_message(5, encode_packet(prepare()))
    assert isinstance(session.receive(request), PrepareReceived)
    # a repeat while it is being answered: counted, the answer goes out once more later
    assert session.receive(request) is None
    answer = session.answer_prepare(5, IlpFulfill(bytes(32), b""))
    assert session.take_repeats(5) == 1 and session.take_repeats(5) == 0
    # a repeat after it was answered: the same bytes again, no second PrepareReceived
    assert session.receive(request) == SendBytes(answer)
    assert session.prepares_received == 1
    # the same id with other bytes: Error F00
    reused = session.receive(encode_ilp_message(5, encode_packet(prepare(11))))
    assert isinstance(reused, SendBytes) and error_in(reused.data).code == "F00"
    # the cache is bounded: the oldest entry leaves, and its id is handled afresh
    for request_id in (6, 7):
        message = encode_ilp_message(request_id, encode_packet(prepare()))
        assert isinstance(session.receive(message), PrepareReceived)
    assert session.cached_answers == 2
    assert isinstance(session.receive(request), PrepareReceived)


def test_an_abandoned_request_is_handled_afresh_when_repeated() -> None:
    session = state(idempotent=True)
    request = encode_ilp_message(5, encode_packet(prepare()))
    assert isinstance(session.receive(request), PrepareReceived)
    session.abandon(5)
    assert isinstance(session.receive(request), PrepareReceived)


# -- our requests ----------------------------------------------------------------------------


def test_our_request_is_matched_to_its_response_once() -> None:
    session = state()
    request_id, data = session.start_ilp_request(encode_packet(prepare()), now=0.0, timeout=5)
    assert decode_btp(data).request_id == request_id
    assert session.in_flight == 1 and session.prepares_sent == 1
    response = encode_ilp_response(request_id, encode_packet(IlpFulfill(bytes(32), b"")))
    event = session.receive(response)
    assert isinstance(event, ResponseReceived) and event.request_id == request_id
    assert session.in_flight == 0
    # a second response for it (or for any id not in flight): nothing
    assert session.receive(response) is None


def test_without_btp2i_a_request_times_out_at_its_deadline_and_is_not_repeated() -> None:
    session = state()
    request_id, _ = session.start_request(lambda rid: encode_btp(BtpMessage(rid, ())), 100.0, 5)
    assert session.next_deadline() == 105.0
    assert session.tick(104.9) == []
    assert session.tick(105.0) == [RequestTimedOut(request_id)]
    assert session.in_flight == 0 and session.next_deadline() is None


def test_btp2i_repeats_the_identical_request_until_its_deadline() -> None:
    session = state(idempotent=True, retry_interval=1.0)
    request_id, data = session.start_request(lambda rid: encode_btp(BtpMessage(rid, ())), 0, 2.5)
    assert session.next_deadline() == 1.0
    assert session.tick(1.0) == [SendBytes(data)]
    assert session.next_deadline() == 2.0
    assert session.tick(2.0) == [SendBytes(data)]
    assert session.next_deadline() == 2.5  # the timeout comes before the next repeat
    assert session.tick(2.5) == [RequestTimedOut(request_id)]


def test_a_forgotten_request_gets_no_event_and_its_late_answer_is_dropped() -> None:
    session = state(idempotent=True)
    request_id, _ = session.start_request(lambda rid: encode_btp(BtpMessage(rid, ())), 0, 5)
    session.forget_request(request_id)
    assert session.tick(10.0) == []
    assert session.receive(encode_btp(BtpResponse(request_id, ()))) is None


def test_deadlines_of_answered_requests_do_not_pile_up() -> None:
    session = state()
    for n in range(10_000):
        request_id, _ = session.start_ilp_request(b"x", now=float(n), timeout=30)
        assert isinstance(
            session.receive(encode_btp(BtpResponse(request_id, ()))), ResponseReceived
        )
    # ten thousand answered requests leave a bounded schedule behind
    assert len(session._deadlines) <= 64 + 2 * session.in_flight
    assert session.next_deadline() is None


def test_close_reports_what_was_in_flight_and_sends_nothing_more() -> None:
    session = state(idempotent=True)
    first, _ = session.start_request(lambda rid: encode_btp(BtpMessage(rid, ())), 0, 5)
    second, _ = session.start_request(lambda rid: encode_btp(BtpMessage(rid, ())), 0, 5)
    assert sorted(session.close()) == sorted([first, second])
    assert session.closed and session.in_flight == 0
    assert session.tick(3.0) == []
