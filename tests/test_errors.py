"""The Python exception classes (`tailsample/errors.py`) and the core's error kinds (`rust/core/src/error.rs`,
mapped once in the binding) agree one to one, and each kind reaches Python as its class with its attributes."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tailsample import _native, errors
from tailsample.errors import BackpressureError, ConfigError, DecodeError, StorageError, TailsampleError


def test_every_core_error_kind_has_one_python_class_and_every_class_is_used():
    """Scenario: the binding's table of (kind, class) against the core's kinds and `tailsample.errors`.
    Guarantees: every core kind is mapped, once; every class named exists and is a TailsampleError; every
    exception class `tailsample.errors` defines is one the binding raises (none dead, none missing)."""
    table = _native.error_classes()
    kinds = [k for k, _ in table]
    assert len(kinds) == len(set(kinds)), table
    assert set(_native.error_kinds()) | {"internal"} == set(kinds)
    classes = {c for _, c in table}
    assert len(classes) == len(table), f"two kinds share a class: {table}"
    for name in classes:
        cls = getattr(errors, name)
        assert inspect.isclass(cls) and issubclass(cls, TailsampleError), name
    defined = {name for name, obj in vars(errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__}
    assert defined == classes
    assert set(errors.__all__) == classes


def _backpressure(tmp_path: Path) -> None:
    q = _native.NativeQueue(str(tmp_path), _native.NativeBudget(1 << 20), 1)
    q.push(b"one")
    q.push(b"two")  # max_items 1


def _storage(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    _native.NativeQueue(str(tmp_path / "file"), _native.NativeBudget(1 << 20), 1)


@pytest.mark.parametrize(("kind", "cause", "cls", "attrs"), [
    ("decode", lambda _: _native.inspect_payload(b"\x0a\x05\x12\x03"), DecodeError, {"field", "offset"}),
    ("config", lambda _: _native.NativeConfig('{"policies": 3}'), ConfigError, {"path"}),
    ("backpressure", _backpressure, BackpressureError, {"reason"}),
    ("storage", _storage, StorageError, {"path"}),
], ids=["decode", "config", "backpressure", "storage"])
def test_each_core_error_kind_reaches_python_as_its_class(kind, cause, cls, attrs, tmp_path):
    """Scenario: each kind of core error caused for real (a truncated payload, a bad configuration, a full
    queue, a queue directory that is a file). Guarantees: it raises the class the binding's table names for the
    kind, with its documented attributes set."""
    assert dict(_native.error_classes())[kind] == cls.__name__
    with pytest.raises(cls) as info:
        cause(tmp_path)
    assert type(info.value) is cls
    for attr in attrs:
        assert getattr(info.value, attr) not in (None, ""), (attr, info.value)
