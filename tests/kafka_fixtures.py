"""A real Apache Kafka broker (KRaft, 127.0.0.1) as a pytest fixture.

    import kafka_fixtures

    kafka_broker = kafka_fixtures.kafka_broker  # the fixture, under its own name for pytest (and ruff F811)

    def test_something(kafka_broker):
        kafka_broker.create_topic("spans", partitions=4)
        producer = confluent_kafka.Producer({"bootstrap.servers": kafka_broker.bootstrap})

The broker's jars are fetched once with mvn into ~/.cache/tailsample/kafka (see scripts/kafka/broker.py); a test
that uses the fixture is skipped when java is missing, or mvn is missing and nothing is cached yet.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BROKER_PY = Path(__file__).resolve().parent.parent / "scripts" / "kafka" / "broker.py"


def _load_broker_module() -> ModuleType:
    # scripts/ is not a package: load broker.py by path, once, under a private name
    name = "tailsample_scripts_kafka_broker"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BROKER_PY)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kafka = _load_broker_module()
KafkaBroker = kafka.KafkaBroker


def skip_unless_kafka_available() -> None:
    """Skip (not fail) on machines without the tools to install or run the broker."""
    if kafka.find_java() is None:
        pytest.skip("java is not installed (neither $JAVA_HOME/bin/java nor on PATH): no Kafka broker")
    if shutil.which("mvn") is None and not kafka.is_installed():
        pytest.skip(f"mvn is not on PATH and Kafka {kafka.KAFKA_VERSION} is not cached in {kafka.libs_dir()}")


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A started broker shared by the tests of one module (auto topic creation on, 4 partitions by default);
    give each test its own topic names."""
    skip_unless_kafka_available()
    with KafkaBroker(num_partitions=4) as broker:
        yield broker
