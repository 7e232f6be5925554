"""Loading a `tail_sampling` configuration, written exactly as for the OpenTelemetry Collector.

A source is a whole collector YAML (the block under `processors:` named `tail_sampling` or
`tail_sampling/<name>`) or a bare `tail_sampling` block. YAML is parsed here; every value is validated by the Rust
core, which reports errors with the YAML path of the value (`policies[1].latency.threshold_ms: expected an
integer`). This module adds the prefix of where the block sits in the file and, when the YAML is at hand, the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tailsample import _native
from tailsample.archive import ArchiveSettings, go_seconds
from tailsample.errors import ConfigError

_BLOCK_NAME = re.compile(r"^tail_sampling(/.*)?$")


class Config:
    """A validated tail-sampling configuration. Build it with `from_file`, `from_yaml` or `from_dict`."""

    def __init__(self, block: Mapping[str, Any], *, source: str = "<dict>", prefix: str = "",
                 lines: dict[str, int] | None = None) -> None:
        if not isinstance(block, Mapping):
            raise ConfigError(f"{source}: {prefix or 'the tail_sampling block'}: expected a mapping, "
                              f"got {_type_name(block)}", path=prefix.rstrip(".") or None)
        self.source = source
        self.block: dict[str, Any] = dict(block)
        try:
            text = json.dumps(self.block, default=str)
        except (TypeError, ValueError) as exc:  # e.g. non-string keys
            raise ConfigError(f"{source}: {prefix}: cannot be represented as a configuration: {exc}") from exc
        try:
            self._native = _native.NativeConfig(text)
        except ConfigError as exc:
            raise _locate(exc, source, prefix, lines) from None

    # -- constructors ---------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, *, name: str | None = None) -> Config:
        """Load a collector YAML file, or a file holding a bare `tail_sampling` block."""
        return cls.from_yaml(read_config_text(path), name=name, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, *, name: str | None = None, source: str = "<yaml>") -> Config:
        """Load YAML text: a whole collector config or a bare `tail_sampling` block."""
        data, lines = parse_yaml(text, source)
        block, prefix = _select_block(data, name, source)
        return cls(block, source=source, prefix=prefix, lines=lines)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, name: str | None = None) -> Config:
        """Load an already-parsed mapping: a whole collector config or a bare `tail_sampling` block."""
        block, prefix = _select_block(mapping, name, "<dict>")
        return cls(block, source="<dict>", prefix=prefix)

    @classmethod
    def default(cls) -> Config:
        """The bundled default: the seed document's four policies (errors, latency, forced, 1 % random)."""
        return cls.from_yaml(default_config_text(), source="tailsample:data/seed-config.yaml")

    # -- what it holds ---------------------------------------------------------------------------------------
    @property
    def policy_names(self) -> list[str]:
        """The configured policies' names, in evaluation order."""
        return list(self._native.policy_names)

    @property
    def tail_storage(self) -> str | None:
        """The `file_storage` extension holding the buffer on disk (`tail_storage`), if configured."""
        value = self.normalized().get("tail_storage")
        return value if isinstance(value, str) else None

    @property
    def archive(self) -> ArchiveSettings | None:
        """The archive of dropped traces (`tailsample.archive`), if configured."""
        a = self.normalized().get("tailsample", {}).get("archive")
        if not isinstance(a, dict):
            return None
        return ArchiveSettings(str(a["storage"]), int(a["max_size_mib"]) << 20, go_seconds(str(a["max_age"])))

    @property
    def decision_wait(self) -> float:
        """Seconds from a trace's first span to its decision."""
        return float(self._native.decision_wait)

    def normalized(self) -> dict[str, Any]:
        """The configuration with every default filled in, as the engine will run it."""
        result: dict[str, Any] = json.loads(self._native.to_json())
        return result

    def __repr__(self) -> str:
        return f"Config(source={self.source!r}, policies={self.policy_names!r})"


def read_config_text(path: str | Path) -> str:
    """A configuration file's text; an unreadable or non-UTF-8 file is a ConfigError naming it."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text at byte {exc.start}") from exc


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """Parsed YAML and the line of every YAML path in it; invalid YAML is a ConfigError with its position."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where}: invalid YAML: {problem}") from None
    return data, (_line_index(node) if node is not None else {})


def default_config_text() -> str:
    """The YAML text of the bundled default configuration."""
    return resources.files("tailsample").joinpath("data/seed-config.yaml").read_text(encoding="utf-8")


def _select_block(data: Any, name: str | None, source: str) -> tuple[Mapping[str, Any], str]:
    """Find the tail_sampling block in `data`; return it and its YAML path prefix."""
    if data is None:
        raise ConfigError(f"{source}: the configuration is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_type_name(data)}")
    if "processors" in data and isinstance(data.get("processors"), Mapping | None):
        processors = data.get("processors") or {}
        found = [k for k in processors if isinstance(k, str) and _BLOCK_NAME.match(k)]
        if name is not None:
            wanted = "tail_sampling" if name in ("", "tail_sampling") else (
                name if name.startswith("tail_sampling/") else f"tail_sampling/{name}")
            if wanted not in processors:
                raise ConfigError(f"{source}: processors.{wanted}: not found; tail_sampling processors here: "
                                  f"{', '.join(found) or 'none'}", path=f"processors.{wanted}")
            return processors[wanted] or {}, f"processors.{wanted}."
        if not found:
            raise ConfigError(f"{source}: processors: no tail_sampling processor (expected a key "
                              "'tail_sampling' or 'tail_sampling/<name>')", path="processors")
        if len(found) > 1:
            raise ConfigError(f"{source}: processors: several tail_sampling processors ({', '.join(found)}); "
                              "pick one with name=", path="processors")
        return processors[found[0]] or {}, f"processors.{found[0]}."
    if set(data) == {"tail_sampling"}:
        return data["tail_sampling"] or {}, "tail_sampling."
    return data, ""


def _locate(exc: ConfigError, source: str, prefix: str, lines: dict[str, int] | None) -> ConfigError:
    """Prefix a core error with the file and the block's position; add the YAML line when known."""
    path = exc.path or ""
    full = f"{prefix}{path}" if path else prefix.rstrip(".")
    line = (lines or {}).get(full)
    where = f" (line {line})" if line else ""
    message = str(exc)
    if path and message.startswith(path):
        message = message[len(path):].lstrip(": ")
    label = f"{full}: " if full else ""
    return ConfigError(f"{source}: {label}{message}{where}", path=full or None)


def _line_index(node: yaml.Node) -> dict[str, int]:
    """Map every YAML path (`processors.tail_sampling.policies[1].latency`) to its 1-based line."""
    out: dict[str, int] = {}

    def walk(n: yaml.Node, path: str) -> None:
        out.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                k = str(key.value)
                child = f"{path}.{k}" if path else k
                out.setdefault(child, key.start_mark.line + 1)
                walk(value, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{path}[{i}]")

    walk(node, "")
    return out


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)


__all__ = ["Config", "default_config_text", "parse_yaml", "read_config_text"]
