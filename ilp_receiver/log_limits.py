"""Log lines that an attacker cannot multiply: at most one line per kind per interval.

A flood of refused connections, malformed frames or failed logins must not turn into a
flood of log lines (an outside test once wrote 108 MB of tracebacks in 40 s).
:class:`LogLimiter` writes the first event of a burst at once and then at most one line
per ``interval`` seconds, saying how many events the quiet period swallowed::

    limiter = LogLimiter(log, interval=10.0)
    limiter.warning("refused", "refusing connections on %s: %d open", name, count)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LogLimiter"]


class LogLimiter:
    """Rate-limits log lines per ``kind`` (a short string naming the event).

    ``clock`` is a monotonic clock in seconds (a parameter for tests).  Memory is bounded
    by the number of distinct kinds the code uses, never by input.
    """

    __slots__ = ("_clock", "_interval", "_logger", "_state")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        #: kind -> [time of the last line written, events suppressed since]
        self._state: dict[str, list[float]] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line of ``kind`` went out less than
        ``interval`` seconds ago; True when the line was written."""
        now = self._clock()
        state = self._state.get(kind)
        if state is not None and now - state[0] < self._interval:
            state[1] += 1
            return False
        suppressed = 0 if state is None else int(state[1])
        self._state[kind] = [now, 0]
        if suppressed:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, suppressed, self._interval)
        self._logger.log(level, message, *args)
        return True

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, kind, message, *args)

    def info(self, kind: str, message: str, *args: object) -> bool:
        """:meth:`log` at INFO."""
        return self.log(logging.INFO, kind, message, *args)
