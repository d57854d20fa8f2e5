"""Connector metrics and their Prometheus text exposition (format 0.0.4).

Served at ``GET /metrics`` of the admin API with ``Content-Type:`` :data:`CONTENT_TYPE`.
Names follow the Prometheus conventions (``snake_case``, a ``ilp_connector_`` prefix,
``_total`` on counters, base units such as ``_seconds``/``_bytes`` in the name):

* per account, as ilp-connector exported them (``ilp_connector_incoming_ilp_packets``
  and ``..._packet_value``, with ``_total`` added): ``ilp_connector_incoming_ilp_packets_total``
  and ``ilp_connector_incoming_ilp_packet_value_total`` (the Prepares an account sent
  us and their amounts), ``ilp_connector_outgoing_ilp_packets_total`` and
  ``ilp_connector_outgoing_ilp_packet_value_total`` (the Prepares we forwarded to it),
  labelled ``account``, ``asset``, ``scale`` and ``result`` (``fulfilled``,
  ``rejected``, or ``failed`` when handling it raised);
* ``ilp_connector_packets_total{result,code}`` (every answered Prepare by reject code)
  and the ``ilp_connector_packet_duration_seconds`` histogram (arrival to answer);
* gauges added when rendering: ``ilp_connector_balance{account}`` and
  ``ilp_connector_account_up{account}``;
* for BTP server accounts, which may have several live connections:
  ``ilp_connector_account_connections{account}`` (live now) and the counters
  ``ilp_connector_account_connections_opened_total`` / ``..._closed_total`` /
  ``..._replaced_total`` (closed to make room beyond ``max_connections``), and per live
  connection (label ``connection``, ``<account>#<n>``):
  ``ilp_connector_connection_in_flight`` (Prepares sent on it, not answered yet),
  ``ilp_connector_connection_prepares_total{direction="sent"|"received"}`` and
  ``ilp_connector_connection_undelivered_total`` (answers that could not go back because
  it had closed);
* ``ilp_connector_build_info{version,python}`` and ``python_info``, and the standard
  ``process_*`` metrics of client libraries (CPU seconds, resident and virtual memory,
  start time, open and maximum file descriptors; from ``/proc`` where there is one).
"""

from __future__ import annotations

import bisect
import os
import platform
import resource
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics", "process_metrics"]

#: The Content-Type of the Prometheus text format 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Histogram bucket upper bounds in seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Result = Literal["fulfilled", "rejected", "failed"]
Direction = Literal["incoming", "outgoing"]
#: (direction, account, asset, scale, result)
_AccountKey = tuple[str, str, str, int, str]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return ",".join(f'{name}="{_label(str(value))}"' for name, value in labels.items())


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


class Metrics:
    """Counters and the latency histogram of one connector."""

    def __init__(self) -> None:
        self.packets: dict[tuple[str, str], int] = {}
        #: per-account packet counts and amounts, by direction and result
        self.account_packets: dict[_AccountKey, int] = {}
        self.account_values: dict[_AccountKey, int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(
        self,
        fulfilled: bool,
        code: str,
        seconds: float,
        *,
        account: str | None = None,
        asset: str = "",
        scale: int = 0,
        amount: int = 0,
        failed: bool = False,
    ) -> None:
        """Count one answered incoming Prepare (from ``account``, when given)."""
        key = ("fulfilled", "") if fulfilled else ("rejected", code)
        self.packets[key] = self.packets.get(key, 0) + 1
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sum += seconds
        self._count += 1
        if account is not None:
            result: Result = "failed" if failed else "fulfilled" if fulfilled else "rejected"
            self.count_account("incoming", account, asset, scale, result, amount)

    def count_account(
        self,
        direction: Direction,
        account: str,
        asset: str,
        scale: int,
        result: Result,
        amount: int,
    ) -> None:
        """Count one Prepare from (``incoming``) or to (``outgoing``) ``account``."""
        key = (direction, account, asset, scale, result)
        self.account_packets[key] = self.account_packets.get(key, 0) + 1
        self.account_values[key] = self.account_values.get(key, 0) + amount

    def _account_families(self, out: list[str]) -> None:
        for direction, where in (("incoming", "from"), ("outgoing", "to")):
            for counts, suffix, what in (
                (self.account_packets, "packets", "ILP Prepares"),
                (self.account_values, "packet_value", "Amounts (base units) of ILP Prepares"),
            ):
                name = f"ilp_connector_{direction}_ilp_{suffix}_total"
                _family(out, name, "counter", f"{what} {where} each account, by result.")
                for key, n in sorted(counts.items()):
                    if key[0] != direction:
                        continue
                    _, account, asset, scale, result = key
                    labels = _labels(account=account, asset=asset, scale=scale, result=result)
                    out.append(f"{name}{{{labels}}} {n}")

    def render(
        self,
        balances: Mapping[str, int],
        up: Mapping[str, bool],
        *,
        version: str = "",
        process: bool = True,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> str:
        """The Prometheus text format of every metric (``process``: with the
        ``process_*`` metrics of this process; ``connections``: per BTP server account,
        what :meth:`~ilp_receiver.connector.node.Connector.connections_info` says)."""
        out: list[str] = []
        self._account_families(out)
        _family(
            out,
            "ilp_connector_packets_total",
            "counter",
            "ILP Prepares answered, by result and code.",
        )
        for (result, code), n in sorted(self.packets.items()):
            out.append(f"ilp_connector_packets_total{{{_labels(result=result, code=code)}}} {n}")
        _family(
            out,
            "ilp_connector_packet_duration_seconds",
            "histogram",
            "Time from Prepare to answer.",
        )
        cumulative = 0
        for bound, n in zip(LATENCY_BUCKETS, self._buckets, strict=False):
            cumulative += n
            out.append(f'ilp_connector_packet_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self._buckets[-1]
        out.append(f'ilp_connector_packet_duration_seconds_bucket{{le="+Inf"}} {cumulative}')
        out.append(f"ilp_connector_packet_duration_seconds_sum {self._sum:.6f}")
        out.append(f"ilp_connector_packet_duration_seconds_count {self._count}")
        _family(
            out,
            "ilp_connector_balance",
            "gauge",
            "Settled balance per account (what it owes us), in base units of its asset.",
        )
        for account, value in sorted(balances.items()):
            out.append(f"ilp_connector_balance{{{_labels(account=account)}}} {value}")
        _family(out, "ilp_connector_account_up", "gauge", "Whether the account's link is up.")
        for account, is_up in sorted(up.items()):
            out.append(f"ilp_connector_account_up{{{_labels(account=account)}}} {int(is_up)}")
        if connections is not None:
            _connection_families(out, connections)
        _family(out, "ilp_connector_build_info", "gauge", "The running ilp-receiver (always 1).")
        python = platform.python_version()
        out.append(f"ilp_connector_build_info{{{_labels(version=version, python=python)}}} 1")
        if process:
            out.extend(process_metrics())
        return "\n".join(out) + "\n"


def _connection_families(out: list[str], connections: Mapping[str, Mapping[str, Any]]) -> None:
    accounts = sorted(connections.items())
    _family(
        out,
        "ilp_connector_account_connections",
        "gauge",
        "Live BTP connections of the account (its Prepares are spread over them).",
    )
    for account, info in accounts:
        live = len(info["connections"])
        out.append(f"ilp_connector_account_connections{{{_labels(account=account)}}} {live}")
    for what, help_text in (
        ("opened", "BTP connections of the account authenticated."),
        ("closed", "BTP connections of the account closed (replaced ones included)."),
        ("replaced", "BTP connections closed to make room beyond max_connections."),
    ):
        name = f"ilp_connector_account_connections_{what}_total"
        _family(out, name, "counter", help_text)
        for account, info in accounts:
            out.append(f"{name}{{{_labels(account=account)}}} {info[what]}")
    _family(
        out,
        "ilp_connector_connection_in_flight",
        "gauge",
        "Prepares sent on a live connection and not answered yet.",
    )
    rows = [(account, c) for account, info in accounts for c in info["connections"]]
    for account, c in rows:
        labels = _labels(account=account, connection=c["id"])
        out.append(f"ilp_connector_connection_in_flight{{{labels}}} {c['in_flight']}")
    _family(
        out,
        "ilp_connector_connection_prepares_total",
        "counter",
        "Prepares sent to and received from the client on a live connection.",
    )
    for account, c in rows:
        for direction in ("sent", "received"):
            labels = _labels(account=account, connection=c["id"], direction=direction)
            value = c[f"prepares_{direction}"]
            out.append(f"ilp_connector_connection_prepares_total{{{labels}}} {value}")
    _family(
        out,
        "ilp_connector_connection_undelivered_total",
        "counter",
        "Answers to the client's Prepares that could not go back (the connection had closed).",
    )
    for account, c in rows:
        labels = _labels(account=account, connection=c["id"])
        out.append(f"ilp_connector_connection_undelivered_total{{{labels}}} {c['undelivered']}")


def _proc_stat() -> dict[str, float] | None:
    """CPU seconds, memory and start time from ``/proc`` (Linux), or None."""
    try:
        with open("/proc/self/stat", "rb") as f:
            # the fields after the command name, which is in parentheses and may hold spaces
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    page = resource.getpagesize()
    # fields[0] is field 3 (state) of proc(5): utime is 14, stime 15, starttime 22,
    # vsize 23, rss 24
    return {
        "cpu": (float(fields[11]) + float(fields[12])) / ticks,
        "start": boot + float(fields[19]) / ticks,
        "virtual": float(fields[20]),
        "resident": float(fields[21]) * page,
    }


def _fds() -> tuple[int | None, int]:
    try:
        open_fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = None
    return open_fds, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_STARTED: Final = time.time()


def process_metrics() -> Iterable[str]:
    """The ``process_*`` and ``python_info`` lines of this process, named and typed as
    the official client libraries export them."""
    out: list[str] = []
    stat = _proc_stat()
    if stat is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        divisor = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes vs KiB
        stat = {
            "cpu": usage.ru_utime + usage.ru_stime,
            "start": _STARTED,
            "resident": float(usage.ru_maxrss * 1024 // divisor),
        }
    _family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    )
    out.append(f"process_cpu_seconds_total {stat['cpu']!r}")
    if "virtual" in stat:
        _family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
        out.append(f"process_virtual_memory_bytes {stat['virtual']:.0f}")
    _family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
    out.append(f"process_resident_memory_bytes {stat['resident']:.0f}")
    _family(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    )
    out.append(f"process_start_time_seconds {stat['start']!r}")
    open_fds, max_fds = _fds()
    if open_fds is not None:
        _family(out, "process_open_fds", "gauge", "Number of open file descriptors.")
        out.append(f"process_open_fds {open_fds}")
    if max_fds != resource.RLIM_INFINITY:
        _family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.")
        out.append(f"process_max_fds {max_fds}")
    _family(out, "python_info", "gauge", "Python platform information.")
    major, minor, patch = platform.python_version_tuple()
    labels = _labels(
        implementation=platform.python_implementation(),
        major=major,
        minor=minor,
        patchlevel=patch,
        version=platform.python_version(),
    )
    out.append(f"python_info{{{labels}}} 1.0")
    return out
