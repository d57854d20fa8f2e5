"""The curated public surface of ``ilp_receiver`` is pinned."""

from __future__ import annotations

import ilp_receiver

EXPECTED = {
    "AsyncReceiver",
    "BalanceLimitError",
    "BalanceStore",
    "ConfigError",
    "DecodeError",
    "ErrorCode",
    "IlpError",
    "IlpFulfill",
    "IlpPrepare",
    "IlpReceiverError",
    "IlpReject",
    "IncomingPayment",
    "Link",
    "LinkClosedError",
    "LinkError",
    "PaymentEvent",
    "PaymentPointer",
    "PaymentPointerError",
    "Receiver",
    "SpspError",
    "SpspResponse",
    "__version__",
    "account_for_endpoint",
    "open_link",
    "open_store",
    "parse_spsp_response",
    "resolve_payment_pointer",
}


def test_all_is_pinned() -> None:
    assert set(ilp_receiver.__all__) == EXPECTED


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in ilp_receiver.__all__:
        value = getattr(ilp_receiver, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_errors_share_one_base() -> None:
    for name in ilp_receiver.__all__:
        value = getattr(ilp_receiver, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, ilp_receiver.IlpReceiverError), name
