"""The project's main job on defaults: synthetic shop traffic through the bundled policies, and what it saves.

`run_demo` generates `seconds` of traffic at `rate` spans/s (`tailsample.traffic.synth`) as it goes, payload by payload,
and feeds it to an engine whose clock is the simulated time: a 30 s simulation with a 10 s decision wait runs
flat out, with decisions as they would fall in real time. Only the engine calls (ingest, poll, flush) are timed.
The kept spans are read back (trace IDs only) and checked against the generator's truth once each trace is
surely decided: every trace with an error, a slow root or the force header must be kept, complete. What is held
at once (payloads not yet ingested, traces not yet checked) is bounded by the rate and the decision wait, not by
`seconds`. Then the storage argument of the seed document, with measured numbers: spans/s x 86,400 x bytes per
span on the wire (uncompressed OTLP protobuf, resource and scope overhead included), before and after sampling.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.errors import BackpressureError
from tailsample.traffic.synth import FORCE_KEY, Batch, TraceTruth, TrafficGenerator, count_spans_by_trace

TARGET_SPANS_PER_SECOND = 50_000.0  # what the card asks of the engine
SECONDS_PER_DAY = 86_400
POLL_INTERVAL_S = 0.1  # simulated seconds between polls
CASES = ("error", "slow", "forced")  # what the bundled policies must always keep
# A trace's spans all arrive within this many simulated seconds of its start (root up to 4 s, late spans up to
# 3 s more, exporter batching): past its start + decision_wait + this, its decision and output are final.
ARRIVAL_SPREAD_S = 10.0


@dataclass
class DemoReport:
    """The numbers of one demo run. Shares are fractions (0.03 = 3 %)."""

    seconds: float
    rate: float
    seed: int
    policies: list[str]
    decision_wait: float
    # Generated traffic.
    traces_generated: int = 0
    spans_generated: int = 0
    payloads_generated: int = 0
    bytes_generated: int = 0
    generation_seconds: float = 0.0
    # What the engine let through (read back from its output payloads).
    traces_kept: int = 0
    spans_kept: int = 0
    payloads_kept: int = 0
    bytes_kept: int = 0
    payloads_refused: int = 0  # refused by backpressure even after a poll
    # Engine.
    engine_seconds: float = 0.0  # wall clock of the engine calls only
    stats: dict[str, int] = field(default_factory=dict)
    policy_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    # Kept traces and spans per policy, attributed from the generator's truth to the first policy (in config
    # order) that must have voted sampled; None where the truth cannot tell (e.g. two random policies).
    kept_traces_by_policy: dict[str, int | None] = field(default_factory=dict)
    kept_spans_by_policy: dict[str, int | None] = field(default_factory=dict)
    # Traces the policies must keep, per case (error, slow, forced): how many, and how many were not kept
    # complete (missing, or with spans missing).
    must_keep: dict[str, int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    incomplete_kept_traces: int = 0  # kept traces of any kind with fewer spans out than generated

    @property
    def kept_trace_share(self) -> float:
        return self.traces_kept / self.traces_generated if self.traces_generated else 0.0

    @property
    def kept_span_share(self) -> float:
        return self.spans_kept / self.spans_generated if self.spans_generated else 0.0

    @property
    def engine_spans_per_second(self) -> float:
        return self.spans_generated / self.engine_seconds if self.engine_seconds > 0 else 0.0

    @property
    def meets_target(self) -> bool:
        return self.engine_spans_per_second >= TARGET_SPANS_PER_SECOND

    @property
    def bytes_per_span(self) -> float:
        return self.bytes_generated / self.spans_generated if self.spans_generated else 0.0

    @property
    def storage_per_day_before(self) -> float:
        """Bytes per day at the offered rate, everything stored."""
        return self.rate * SECONDS_PER_DAY * self.bytes_per_span

    @property
    def storage_per_day_after(self) -> float:
        """Bytes per day at the offered rate, only the kept spans stored."""
        return self.storage_per_day_before * self.kept_span_share

    @property
    def all_must_keep_kept(self) -> bool:
        return not any(self.missed.values())


def run_demo(*, seconds: float = 30.0, rate: float = 50_000, seed: int = 1, config: Config | None = None,
             console: Console | None = None) -> DemoReport:
    """Run `seconds` of synthetic traffic at `rate` spans/s through an engine; print and return numbers."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    config = Config.default() if config is None else config
    console = Console() if console is None else console
    report = DemoReport(seconds=seconds, rate=rate, seed=seed, policies=config.policy_names,
                        decision_wait=config.decision_wait)
    console.rule(f"[bold]tailsample demo[/]: {seconds:g} s of synthetic traffic at {rate:,.0f} spans/s "
                 f"(seed {seed})")
    _print_config(console, config)

    gen = TrafficGenerator(seed=seed, spans_per_second=rate)
    console.print(f"generating and sampling {seconds:g} s of traffic as it goes ...", highlight=False)
    with console.status("running..."):
        _run_engine(config, gen, seconds, report)
    _print_traffic(console, report)
    _print_report(console, report)
    return report


def _timed(batches: Iterator[Batch], report: DemoReport) -> Iterator[Batch]:
    """The generator's batches, its time counted apart from the engine's, its output counted."""
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        report.generation_seconds += time.perf_counter() - t0
        if batch is None:
            return
        report.payloads_generated += 1
        report.spans_generated += batch.spans
        report.bytes_generated += len(batch.payload)
        yield batch


class _Checker:
    """Kept output against the truth, trace by trace, once each trace is surely decided; holds only the truth
    and the kept counts of traces not yet checked."""

    def __init__(self, report: DemoReport, config: Config) -> None:
        self.report = report
        policies = config.normalized().get("policies", [])
        self.names = [str(p.get("name")) for p in policies]
        self.preds = [_predicate(p) for p in policies]
        self.kept: dict[bytes, int] = {}  # spans out per trace, for traces not yet checked
        self.pending: deque[tuple[float, dict[bytes, TraceTruth]]] = deque()  # (when final, truth)
        self.unattributed: set[str] = set()
        report.must_keep = dict.fromkeys(CASES, 0)
        report.missed = dict.fromkeys(CASES, 0)
        report.kept_traces_by_policy = dict.fromkeys(self.names, 0)
        report.kept_spans_by_policy = dict.fromkeys(self.names, 0)

    def output(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.report.payloads_kept += 1
            self.report.bytes_kept += len(payload)
            count_spans_by_trace(payload, self.kept)

    def generated(self, truth: dict[bytes, TraceTruth], final_at: float) -> None:
        if truth:
            self.pending.append((final_at, truth))

    def check_until(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            for t in self.pending.popleft()[1].values():
                self._check(t)

    def finish(self) -> None:
        self.check_until(float("inf"))
        r = self.report
        # output of traces already checked (late spans past the spread): counted, not attributable
        r.traces_kept += len(self.kept)
        r.spans_kept += sum(self.kept.values())
        self.kept.clear()
        for name in self.unattributed:
            r.kept_traces_by_policy[name] = r.kept_spans_by_policy[name] = None

    def _check(self, t: TraceTruth) -> None:
        """Every error/slow/forced trace kept with all its spans; kept traces that lost spans; per policy, the
        first in order that must have voted sampled. A policy the truth cannot evaluate (probabilistic, ...) gets
        the kept traces no other policy explains, when it is the only such policy from there on; otherwise those
        traces stay unattributed."""
        r = self.report
        r.traces_generated += 1
        out = self.kept.pop(t.trace_id, 0)
        if out:
            r.traces_kept += 1
            r.spans_kept += out
            if out != t.spans:
                r.incomplete_kept_traces += 1
        for case in CASES:
            if getattr(t, case):
                r.must_keep[case] += 1
                if out != t.spans:
                    r.missed[case] += 1
        if not out:
            return
        owner: str | None = None
        for i, pred in enumerate(self.preds):
            if pred is None:
                rest = self.preds[i + 1:]
                if all(p is not None and not p(t) for p in rest):
                    owner = self.names[i]
                else:
                    self.unattributed.add(self.names[i])
                break
            if pred(t):
                owner = self.names[i]
                break
        if owner is not None:
            r.kept_traces_by_policy[owner] = (r.kept_traces_by_policy[owner] or 0) + 1
            r.kept_spans_by_policy[owner] = (r.kept_spans_by_policy[owner] or 0) + out


def _run_engine(config: Config, gen: TrafficGenerator, seconds: float, report: DemoReport) -> None:
    """Feed every batch as it is generated, at its simulated arrival time, poll every POLL_INTERVAL_S, flush at
    the end; check traces against the truth as their decisions become final."""
    engine = Engine(config)
    check = _Checker(report, config)
    settle = config.decision_wait + ARRIVAL_SPREAD_S + POLL_INTERVAL_S
    clock = time.perf_counter
    spent = 0.0
    next_poll = POLL_INTERVAL_S
    now = 0.0
    for batch in _timed(gen.batches(seconds), report):
        check.generated(gen.take_truth(), gen.generated_until + settle)
        now = batch.t
        t0 = clock()
        out: list[bytes] = []
        try:
            engine.ingest(batch.payload, now=now)
        except BackpressureError:
            # At a limit: let due decisions free room, then try once more.
            out += engine.poll(now=now)
            try:
                engine.ingest(batch.payload, now=now)
            except BackpressureError:
                report.payloads_refused += 1
        if now >= next_poll:
            out += engine.poll(now=now)
            next_poll = now + POLL_INTERVAL_S
        spent += clock() - t0
        check.output(out)
        check.check_until(now)
    t0 = clock()
    out = engine.flush(now=now)
    report.engine_seconds = spent + clock() - t0
    check.generated(gen.take_truth(), now)
    check.output(out)
    check.finish()
    report.stats = engine.stats()
    report.policy_stats = engine.policy_stats()


def _predicate(policy: dict[str, Any]) -> Callable[[TraceTruth], bool] | None:
    """Whether a trace satisfies a policy, as far as the generator's truth tells; None when it cannot."""
    kind = policy.get("type")
    if kind == "always_sample":
        return lambda t: True
    if kind == "status_code" and policy.get("status_code", {}).get("status_codes") == ["ERROR"]:
        return lambda t: t.error
    if kind == "latency":
        low = float(policy["latency"].get("threshold_ms", 0))
        high = float(policy["latency"].get("upper_threshold_ms", 0) or 0)
        return lambda t: t.duration_ms >= low and (high == 0 or t.duration_ms <= high)
    if kind == "string_attribute":
        spec = policy.get("string_attribute", {})
        plain = not spec.get("invert_match") and not spec.get("enabled_regex_matching")
        if plain and spec.get("key") == FORCE_KEY:
            matches = "true" in spec.get("values", [])
            return lambda t: matches and t.forced
    return None


# -- printing ------------------------------------------------------------------------------------------------


def _print_config(console: Console, config: Config) -> None:
    normalized = config.normalized()
    table = Table(title=f"Policies ({escape(config.source)})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("policy")
    table.add_column("type")
    table.add_column("settings")
    for i, p in enumerate(normalized.get("policies", []), 1):
        kind = str(p.get("type", "?"))
        settings = p.get(kind, {})
        shown = ", ".join(f"{k}={v}" for k, v in settings.items()) if isinstance(settings, dict) else ""
        table.add_row(str(i), escape(str(p.get("name"))), escape(kind), escape(shown))
    console.print(table)
    num_traces = normalized.get("num_traces")
    console.print(f"decision_wait {config.decision_wait:g} s"
                  + (f", num_traces {num_traces:,}" if isinstance(num_traces, int) else ""), highlight=False)


def _print_traffic(console: Console, r: DemoReport) -> None:
    gen_rate = r.spans_generated / r.generation_seconds if r.generation_seconds > 0 else 0.0
    console.print(
        f"generated  {r.spans_generated:,} spans in {r.payloads_generated:,} payloads "
        f"({_size(r.bytes_generated)}, {r.bytes_per_span:.0f} B/span) in {r.generation_seconds:.1f} s "
        f"({gen_rate:,.0f} spans/s; not part of the engine timing)", highlight=False)


def _print_report(console: Console, r: DemoReport) -> None:
    table = Table(title="Kept, per policy", title_justify="left")
    table.add_column("policy", no_wrap=True)
    table.add_column("voted sampled", justify="right")
    table.add_column("kept first", justify="right")
    table.add_column("kept spans", justify="right")
    table.add_column("share", justify="right")
    for name in r.policies:
        ps = r.policy_stats.get(name, {})
        decided = ps.get("decided", 0)
        spans = r.kept_spans_by_policy.get(name)
        share = decided / r.traces_kept if r.traces_kept else 0.0
        table.add_row(escape(name), f"{ps.get('sampled', 0):,}", f"{decided:,}",
                      "-" if spans is None else f"{spans:,}", f"{share:.1%}")
    table.add_row("[bold]total[/]", "", f"[bold]{r.traces_kept:,}[/]", f"[bold]{r.spans_kept:,}[/]", "")
    console.print(table)
    console.print(
        f"kept       [bold]{r.kept_trace_share:.2%}[/] of traces "
        f"({r.traces_kept:,} of {r.traces_generated:,}), "
        f"[bold]{r.kept_span_share:.2%}[/] of spans ({r.spans_kept:,} of {r.spans_generated:,}), "
        f"{_size(r.bytes_kept)} of {_size(r.bytes_generated)}", highlight=False)
    s = r.stats
    extra = [f"{s.get(k, 0):,} {k.replace('_', ' ')}" for k in
             ("traces_evicted", "traces_dropped", "late_spans_forwarded", "late_spans_dropped")
             if s.get(k, 0)]
    if r.payloads_refused:
        extra.append(f"{r.payloads_refused:,} payloads refused (backpressure)")
    if extra:
        console.print(f"[yellow]engine     {', '.join(extra)}[/]", highlight=False)

    speed = r.engine_spans_per_second
    verdict = (f"[green]OK[/], {speed / TARGET_SPANS_PER_SECOND:.1f}x" if r.meets_target
               else f"[red]BELOW[/], {speed / TARGET_SPANS_PER_SECOND:.2f}x")
    console.print(f"throughput [bold]{speed:,.0f} spans/s[/] ({r.spans_generated:,} spans in "
                  f"{r.engine_seconds:.2f} s of ingest + poll + flush, one thread): {verdict} "
                  f"the {TARGET_SPANS_PER_SECOND:,.0f} spans/s asked for", highlight=False)

    checks = []
    for case in CASES:
        n, missed = r.must_keep.get(case, 0), r.missed.get(case, 0)
        mark = "[green]all kept[/]" if missed == 0 else f"[red]{missed:,} not kept complete[/]"
        checks.append(f"{n:,} {case}: {mark}")
    incomplete = ("" if r.incomplete_kept_traces == 0
                  else f"; [red]{r.incomplete_kept_traces:,} kept traces lost spans[/]")
    console.print(f"must keep  {', '.join(checks)}{incomplete}", highlight=False)

    per_day = r.rate * SECONDS_PER_DAY
    table = Table(title="Storage per day at the offered rate", title_justify="left")
    table.add_column("")
    table.add_column("spans/day", justify="right")
    table.add_column("bytes/span", justify="right")
    table.add_column("per day", justify="right")
    table.add_row("seed document: 1 KB/span, all", f"{per_day / 1e9:.2f} billion", "1,000",
                  _size(per_day * 1000))
    table.add_row("measured OTLP bytes, all", f"{per_day / 1e9:.2f} billion",
                  f"{r.bytes_per_span:,.0f}", _size(r.storage_per_day_before))
    table.add_row(f"tail-sampled ({r.kept_span_share:.2%} of spans)",
                  f"{per_day * r.kept_span_share / 1e9:.3f} billion", f"{r.bytes_per_span:,.0f}",
                  f"[bold]{_size(r.storage_per_day_after)}[/]")
    console.print(table)
    if r.storage_per_day_after > 0:
        console.print(f"{r.storage_per_day_before / r.storage_per_day_after:.0f}x less to store, "
                      "with every error, slow and forced trace kept whole" if r.all_must_keep_kept
                      else "[red]some traces that had to be kept were not[/]", highlight=False)


def _size(n: float) -> str:
    """Decimal units, as the seed document counts (4.3 billion x 1 KB = 4.3 TB)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


__all__ = ["TARGET_SPANS_PER_SECOND", "DemoReport", "run_demo"]
