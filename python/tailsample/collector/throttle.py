"""A repeated event logged at most once per interval, with how many happened since the last line.

Whatever can repeat per request, per span or per connection (refused spans, aborted uploads, descriptor
exhaustion, dropped batches) is logged through `EveryInterval`: the first event at once, later ones counted and
reported with the next event past the interval. The exact totals are the metrics'; the log says that it happens
and gives an example, without flooding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

REPORT_INTERVAL_S = 10.0  # seconds between two log lines about one repeated event


class EveryInterval:
    """One kind of repeated event, logged at WARNING at most once per `period` seconds. Thread-safe (the Kafka
    receiver reports from its consumer thread)."""

    def __init__(self, logger: logging.Logger, period: float = REPORT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.period = period
        self._clock = clock
        self._last: float | None = None
        self._pending = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object, count: int = 1) -> None:
        """One event (or `count` of a kind: spans, say); `message % args` describes this one."""
        with self._lock:
            self._pending += count
            now = self._clock()
            if self._last is not None and now - self._last < self.period:
                return
            pending, self._last, self._pending = self._pending, now, 0
        self.logger.warning(message + " (%d in the last %.0f s)", *args, pending, self.period)


__all__ = ["REPORT_INTERVAL_S", "EveryInterval"]
