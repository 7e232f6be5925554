"""Shared setup of the tailsample test suite.

The helpers module `otlp_builders` sits beside the tests; it is put on the path here so that every test file
can `import otlp_builders` whatever pytest's rootdir and import mode are.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI replays a fixed sequence of examples (a red CI is then a reproducible one); developers' runs explore new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
    settings.load_profile("ci")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A random generator seeded by the test's name: reproducible, and different from test to test."""
    return random.Random(request.node.nodeid)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "jaeger: needs a real Jaeger v2 (skipped unless built: `make test-jaeger`)")
    config.addinivalue_line("markers", "prometheus: needs a real Prometheus and promtool (skipped unless built: "
                                       "`make test-status`)")
