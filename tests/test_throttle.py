"""`tailsample.collector.throttle`: repeated events logged at most once per interval, with their count."""

from __future__ import annotations

import logging
import threading

import pytest

from tailsample.collector.throttle import EveryInterval


def test_every_interval_logs_once_per_period_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    """Scenario: 1,000 events in 25 s of injected time. Guarantees: one line at the first, then one per 10 s,
    each with the number since the previous line."""
    now = [0.0]
    report = EveryInterval(logging.getLogger("tests.every"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "tests.every"):
        for i in range(1000):
            now[0] = i * 0.025
            report.warning("event %s", "x")
    counts = [int(r.getMessage().split("(")[1].split()[0]) for r in caplog.records]
    assert counts == [1, 400, 400]  # at 0 s, 10 s, 20 s; the 199 after 20 s wait for the next line


def test_counts_add_up_and_threads_share_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """Scenario: 4 threads report 2,500 events of 3 spans each within one interval (the clock stands still).
    Guarantees: one line, at the first event; then, past the interval, one line with every count since."""
    now = [0.0]
    report = EveryInterval(logging.getLogger("tests.every"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "tests.every"):
        threads = [threading.Thread(target=lambda: [report.warning("spans %d", 3, count=3) for _ in range(2500)])
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(caplog.records) == 1
        now[0] = 10.0
        report.warning("spans %d", 3, count=3)
    assert caplog.records[1].getMessage() == "spans 3 (30000 in the last 10 s)"
