"""One reading of Go durations (issue 20): the service configuration's `parse_duration` is the core's parser,
the one that reads `tail_sampling.decision_wait`."""

from __future__ import annotations

import pytest

from tailsample import _native
from tailsample.collector.settings import parse_duration
from tailsample.config import Config


@pytest.mark.parametrize("text", ["10s", "500ms", "1m30s", "1.5h", ".5s", "250us", "250µs", "100ns", "2h45m"])
def test_the_service_and_the_engine_read_a_duration_alike(text: str) -> None:
    """Guarantees: the same seconds from `parse_duration` and from the engine's `decision_wait`."""
    cfg = Config.from_dict({"decision_wait": text, "policies": [{"name": "a", "type": "always_sample"}]})
    assert parse_duration(text) == cfg.decision_wait == _native.parse_go_duration(text) / 1e9


@pytest.mark.parametrize(("text", "why"), [("1d", 'unknown unit "d"'), ("10", "missing unit"),
                                           ("99999999999h", "out of range"), ("", "expected a number")])
def test_a_bad_duration_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration(text)
