"""The service's own metrics, exposed in the Prometheus text format, with the collector's names.

A small registry instead of a client library: counters and gauges with fixed label names, plus collectors
(callbacks) that read the engines' stats at scrape time, so the hot path only bumps integers. Counters are
rendered with the `_total` suffix, as the collector's Prometheus reader does
(`otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Labels = tuple[str, ...]


@dataclass
class _Family:
    name: str
    kind: str  # counter, gauge, histogram
    help: str
    label_names: Labels
    values: dict[Labels, float] = field(default_factory=dict)


class Counter:
    """A monotonic counter with fixed label names; `add` takes the label values positionally."""

    def __init__(self, family: _Family, lock: threading.Lock) -> None:
        self._family = family
        self._lock = lock

    def add(self, amount: float, *labels: str) -> None:
        if len(labels) != len(self._family.label_names):
            raise ValueError(f"{self._family.name}: expected labels {self._family.label_names}, got {labels}")
        with self._lock:
            self._family.values[labels] = self._family.values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._family.values.get(labels, 0.0)


class Gauge(Counter):
    """A value that goes up and down."""

    def set(self, value: float, *labels: str) -> None:
        if len(labels) != len(self._family.label_names):
            raise ValueError(f"{self._family.name}: expected labels {self._family.label_names}, got {labels}")
        with self._lock:
            self._family.values[labels] = value


class Histogram:
    """A cumulative histogram with fixed buckets (upper bounds)."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], label_names: Labels = ()) -> None:
        self.name = name
        self.help = help_text
        self.buckets = tuple(sorted(buckets))
        self.label_names = label_names
        self._lock = threading.Lock()
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}  # labels -> (bucket counts, [sum, count])

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            counts, total = self._series.setdefault(labels, ([0] * len(self.buckets), [0.0, 0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            total[0] += value
            total[1] += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            series = [(k, list(c), list(t)) for k, (c, t) in self._series.items()]
        for labels, counts, (total, count) in series:
            for bound, n in zip(self.buckets, counts, strict=True):
                yield f"{self.name}_bucket{_labels((*self.label_names, 'le'), (*labels, _num(bound)))} {n}"
            yield f"{self.name}_bucket{_labels((*self.label_names, 'le'), (*labels, '+Inf'))} {int(count)}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_num(total)}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {int(count)}"


@dataclass(frozen=True)
class Sample:
    """One value produced by a collector at scrape time."""

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float
    suffix: str = ""
    """For a histogram's rows: `_bucket` (with an `le` label), `_sum` or `_count`."""


class Registry:
    """Every metric the service exposes. Thread-safe; `render()` produces the Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._histograms: list[Histogram] = []
        self._collectors: list[Callable[[], Iterable[Sample]]] = []
        self._refreshers: list[Callable[[], None]] = []

    def _family(self, name: str, kind: str, help_text: str, label_names: Labels) -> _Family:
        with self._lock:
            fam = self._families.get(name)
            if fam is None:
                fam = self._families[name] = _Family(name, kind, help_text, label_names)
            elif fam.kind != kind or fam.label_names != label_names:
                raise ValueError(f"metric {name} registered twice with different kinds or labels")
            return fam

    def counter(self, name: str, help_text: str, label_names: Labels = ()) -> Counter:
        """A counter; `name` without `_total` (the suffix is added when rendering)."""
        return Counter(self._family(name, "counter", help_text, label_names), self._lock)

    def gauge(self, name: str, help_text: str, label_names: Labels = ()) -> Gauge:
        return Gauge(self._family(name, "gauge", help_text, label_names), self._lock)

    def histogram(self, name: str, help_text: str, buckets: Sequence[float], label_names: Labels = ()) -> Histogram:
        """A histogram; asked for again by name (one per pipeline), the same one: a family renders once."""
        with self._lock:
            for h in self._histograms:
                if h.name == name:
                    if h.buckets != tuple(sorted(buckets)) or h.label_names != label_names:
                        raise ValueError(f"metric {name} registered twice with different buckets or labels")
                    return h
            h = Histogram(name, help_text, buckets, label_names)
            self._histograms.append(h)
        return h

    def add_collector(self, collect: Callable[[], Iterable[Sample]]) -> None:
        """`collect` is called at every scrape and yields current values (engine stats, queue sizes)."""
        with self._lock:
            self._collectors.append(collect)

    def add_refresher(self, refresh: Callable[[], None]) -> None:
        """`refresh` is called at the start of every scrape, to bring registered metrics up to date from counters
        kept elsewhere (the Rust OTLP/HTTP server's)."""
        with self._lock:
            self._refreshers.append(refresh)

    def refresh(self) -> None:
        with self._lock:
            refreshers = list(self._refreshers)
        for refresh in refreshers:
            refresh()

    def render(self) -> str:
        self.refresh()
        lines: list[str] = []
        with self._lock:
            families = [(f.name, f.kind, f.help, f.label_names, dict(f.values)) for f in self._families.values()]
            collectors = list(self._collectors)
            histograms = list(self._histograms)
        # collected samples are grouped into families by name, after the registered ones
        collected: dict[str, tuple[str, str, list[tuple[tuple[tuple[str, str], ...], float, str]]]] = {}
        for collect in collectors:
            for s in collect():
                kind, help_text, rows = collected.setdefault(s.name, (s.kind, s.help, []))
                rows.append((s.labels, s.value, s.suffix))
        for name, kind, help_text, label_names, values in families:
            rendered = f"{name}_total" if kind == "counter" else name
            lines.append(f"# HELP {rendered} {help_text}")
            lines.append(f"# TYPE {rendered} {kind}")
            for labels, value in sorted(values.items()):
                lines.append(f"{rendered}{_labels(label_names, labels)} {_num(value)}")
        for name, (kind, help_text, rows) in collected.items():
            rendered = f"{name}_total" if kind == "counter" else name
            lines.append(f"# HELP {rendered} {help_text}")
            lines.append(f"# TYPE {rendered} {kind}")
            for pairs, value, suffix in rows:
                lines.append(f"{rendered}{suffix}{_pair_labels(pairs)} {_num(value)}")
        for h in histograms:
            lines.extend(h.render())
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return _pair_labels(tuple(zip(names, values, strict=True)))


# Label sets rendered are remembered: a scrape renders the same few hundred every time. Bounded, as label values
# come from the traffic (service names, span names).
@functools.lru_cache(maxsize=8192)
def _pair_labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in pairs) + "}"


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


def parse_text(text: str) -> dict[str, float]:
    """Samples of a Prometheus text page as {'name{a="b"}': value}; for tests and `tailsample` tools."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


__all__ = ["Counter", "Gauge", "Histogram", "Registry", "Sample", "parse_text"]
