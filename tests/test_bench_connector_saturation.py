"""A tiny run of ``bench/connector_saturation.py``: the driver is a working sender and
receiver of our connector.

Our connector (SQLite and memory stores) between the driver's two BTP links: IL-DCP on
the receiver link, then 40 pre-built PSK2 and plain Prepares fed with 4 in flight; every
one forwarded exactly once with its amount, fulfilled with the right fulfillment (the
driver raises SystemExit otherwise).  No figures are checked: timing is the script's
business, not a test's.  ilp-connector is left out (``--no-js``): it needs node and the
harness in ``.interop/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# bench/ is not a package (mypy checks its files as top-level modules): import the
# script the same way, from the directory itself.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import connector_saturation as saturation


def test_driver_feeds_our_connector_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "runs.json"
    argv = ["--no-js", "--store", "sqlite", "memory", "--packet", "psk2", "plain"]
    argv += ["--runs", "1", "--count", "40", "--concurrency", "4", "--warmup-runs", "0"]
    argv += ["--data-size", "200", "--json", str(figures)]
    assert saturation.main(argv) == 0
    table = capsys.readouterr().out
    assert "| psk2 | 4 | ours-sqlite |" in table
    assert "| plain | 4 | ours-memory |" in table
    runs = json.loads(figures.read_text())
    assert set(runs) == {
        f"{packet}/ours-{store}/4" for packet in ("psk2", "plain") for store in ("sqlite", "memory")
    }
    for (run,) in runs.values():
        assert run["fulfilled"] == run["forwarded"] == run["packets"] == 40
        assert run["forwarded_amount"] == run["expected_amount"] == 40 * 1000
        assert run["unknown"] == 0
        assert run["connector_cpu_ms"] >= 0
        assert run["driver_cpu_ms"] > 0


def test_wrapped_connector_against_another_checkout(tmp_path: Path) -> None:
    """``--wrap-ours`` (here ``env``, which runs the connector in its own place) and
    ``--versus`` (this checkout again) with their ratio rows."""
    root = Path(__file__).resolve().parent.parent
    figures = tmp_path / "runs.json"
    argv = ["--versus", str(root), "--store", "memory", "--packet", "plain"]
    argv += ["--runs", "1", "--count", "20", "--concurrency", "2", "--warmup-runs", "0"]
    argv += ["--wrap-ours", "env", "--json", str(figures)]
    assert saturation.main(argv) == 0
    runs = json.loads(figures.read_text())
    assert set(runs) == {"plain/ours-memory/2", "plain/versus-memory/2"}
    for (run,) in runs.values():
        assert run["fulfilled"] == run["forwarded"] == 20


def test_fulfill_frame_takes_the_request_id_of_the_forwarded_prepare() -> None:
    """The pre-encoded Fulfill frame, split around its request id and joined with the
    connector's, is the masked frame of that BTP Response."""
    from ilp_receiver.codec.btp import decode_btp, find_protocol_data
    from ilp_receiver.codec.ilp import IlpFulfill, decode_reply

    fulfillment = bytes(range(32))
    head, tail = saturation.fulfill_frame(fulfillment)
    frame = head + (0x01020304).to_bytes(4, "big") + tail
    assert frame[1] & 0x80  # masked (with a zero key: the payload is as written)
    btp = decode_btp(frame[6:])
    assert btp.request_id == 0x01020304
    entry = find_protocol_data(btp, "ilp")
    assert entry is not None
    assert decode_reply(entry.data) == IlpFulfill(fulfillment, b"")
