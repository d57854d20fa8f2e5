"""Connector metrics and their Prometheus text exposition (format 0.0.4).

Counted per incoming Prepare: the result (``fulfilled`` / ``rejected``) and the reject
code, plus a latency histogram (seconds from arrival to answer).  Balances are added
when rendering.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Final

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: Histogram bucket upper bounds in seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and the latency histogram of one connector."""

    def __init__(self) -> None:
        self.packets: dict[tuple[str, str], int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, fulfilled: bool, code: str, seconds: float) -> None:
        """Count one answered Prepare."""
        key = ("fulfilled", "") if fulfilled else ("rejected", code)
        self.packets[key] = self.packets.get(key, 0) + 1
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sum += seconds
        self._count += 1

    def render(self, balances: Mapping[str, int], up: Mapping[str, bool]) -> str:
        """The Prometheus text format of every metric."""
        out = [
            "# HELP ilp_connector_packets_total ILP Prepares answered, by result and code.",
            "# TYPE ilp_connector_packets_total counter",
        ]
        for (result, code), n in sorted(self.packets.items()):
            out.append(
                f'ilp_connector_packets_total{{result="{result}",code="{_label(code)}"}} {n}'
            )
        out += [
            "# HELP ilp_connector_packet_duration_seconds Time from Prepare to answer.",
            "# TYPE ilp_connector_packet_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip(LATENCY_BUCKETS, self._buckets, strict=False):
            cumulative += n
            out.append(f'ilp_connector_packet_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self._buckets[-1]
        out.append(f'ilp_connector_packet_duration_seconds_bucket{{le="+Inf"}} {cumulative}')
        out.append(f"ilp_connector_packet_duration_seconds_sum {self._sum:.6f}")
        out.append(f"ilp_connector_packet_duration_seconds_count {self._count}")
        out += [
            "# HELP ilp_connector_balance Settled balance per account (what it owes us).",
            "# TYPE ilp_connector_balance gauge",
        ]
        for account, value in sorted(balances.items()):
            out.append(f'ilp_connector_balance{{account="{_label(account)}"}} {value}')
        out += [
            "# HELP ilp_connector_account_up Whether the account's link is up.",
            "# TYPE ilp_connector_account_up gauge",
        ]
        for account, is_up in sorted(up.items()):
            out.append(f'ilp_connector_account_up{{account="{_label(account)}"}} {int(is_up)}')
        return "\n".join(out) + "\n"
