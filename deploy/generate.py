"""The Grafana dashboard and the Prometheus alerting rules of tailsample, from one source (this file).

    python deploy/generate.py          # writes deploy/grafana/tailsample.json, deploy/prometheus/tailsample-rules.yaml
    python deploy/generate.py --check  # exit 1 when the committed files differ from what this file generates

The dashboard is built with grafana-foundation-sdk (PyPI, pinned in pyproject.toml's `deploy` extra), not
written as JSON. Every query and alert expression reads metrics `tailsample serve` exposes on /metrics (the
collector's names where the collector has them); tests/test_status_prometheus.py evaluates each of them through
a real Prometheus scraping a real `tailsample serve`, and `promtool test rules` runs
deploy/prometheus/tailsample-rules.test.yaml.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "grafana" / "tailsample.json"
RULES = HERE / "prometheus" / "tailsample-rules.yaml"
RULE_TESTS = HERE / "prometheus" / "tailsample-rules.test.yaml"
RATE = "$__rate_interval"  # Grafana's; the tests put a duration in its place
TS = "otelcol_processor_tail_sampling_"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    max: float | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _share(num: str, den: str, by: str) -> str:
    return f"sum by ({by}) (rate({num}[{RATE}])) / sum by ({by}) (rate({den}[{RATE}]))"


ROWS: tuple[Row, ...] = (
    Row("Throughput and decisions", (
        Panel("Spans in, kept and refused per second",
              "Spans the receivers accepted and refused, and the spans of kept traces sent on.",
              (Query(f"sum(rate(otelcol_receiver_accepted_spans_total[{RATE}]))", "in"),
               Query(f"sum(rate(tailsample_engine_spans_sampled_total[{RATE}]))", "kept"),
               Query(f"sum(rate(otelcol_receiver_refused_spans_total[{RATE}]))", "refused")), unit="short"),
        Panel("Traces kept", "Share of decided traces kept (sampled by at least one policy, not dropped).",
              (Query(f'sum(rate({TS}global_count_traces_sampled_total{{decision="sampled"}}[{RATE}])) / '
                     f"sum(rate({TS}global_count_traces_sampled_total[{RATE}]))", "kept"),),
              unit="percentunit", kind="stat", width=6, max=1),
        Panel("Error traces not kept", "Share of decided traces with an ERROR span that were not kept.",
              (Query(f"sum(rate(tailsample_engine_error_traces_not_sampled_total[{RATE}])) / "
                     f"sum(rate(tailsample_engine_error_traces_decided_total[{RATE}]))", "not kept"),),
              unit="percentunit", kind="stat", width=6, max=1),
        Panel("Kept share per policy", "Per policy: traces it voted to sample over the traces it judged.",
              (Query(_share(f'{TS}count_traces_sampled_total{{decision="sampled"}}',
                            f"{TS}count_traces_sampled_total", "processor, policy"), "{{processor}} {{policy}}"),),
              unit="percentunit", max=1),
        Panel("Kept traces by deciding policy", "Kept traces per policy that was first, in order, to sample them.",
              (Query(f"sum by (processor, policy) (rate(tailsample_policy_decided_traces_total[{RATE}]))",
                     "{{processor}} {{policy}}"),)),
    )),
    Row("Latency", (
        Panel("Decision lag against decision_wait",
              "Mean time from a trace's due time (first span + decision_wait) to its decision, and decision_wait.",
              (Query(_share("tailsample_engine_decision_lag_seconds_total", "tailsample_engine_decisions_timed_total",
                            "processor"), "{{processor}} lag past due"),
               Query("max by (processor) (tailsample_engine_limit_decision_wait_seconds)",
                     "{{processor}} decision_wait")), unit="s"),
        Panel("Decision timer run time (p99)", "99th percentile of one run of the decision timer.",
              (Query(f"histogram_quantile(0.99, sum by (le, processor) "
                     f"(rate({TS}sampling_decision_timer_latency_bucket[{RATE}])))", "{{processor}}"),),
              unit="ms"),
        Panel("Late spans", "Spans arriving after their trace was decided: sent on (kept) or dropped.",
              (Query(f"sum by (processor) (rate(tailsample_engine_late_spans_forwarded_total[{RATE}]))",
                     "{{processor}} forwarded"),
               Query(f"sum by (processor) (rate(tailsample_engine_late_spans_dropped_total[{RATE}]))",
                     "{{processor}} dropped"))),
    )),
    Row("Buffers, evictions and drops", (
        Panel("Evictions and drops per second",
              "Traces evicted undecided (num_traces full), dropped too large, and payloads refused with backpressure.",
              (Query(f"sum by (processor) (rate(tailsample_engine_traces_evicted_total[{RATE}]))",
                     "{{processor}} evicted"),
               Query(f"sum by (processor) (rate({TS}traces_dropped_too_large_total[{RATE}]))",
                     "{{processor}} too large"),
               Query(f"sum by (processor) (rate(tailsample_engine_payloads_refused_total[{RATE}]))",
                     "{{processor}} payloads refused"))),
        Panel("Buffered traces against num_traces", "Traces held undecided, and their bound.",
              (Query("sum by (processor) (tailsample_engine_traces_in_memory)", "{{processor}} buffered"),
               Query("sum by (processor) (tailsample_engine_limit_num_traces)", "{{processor}} num_traces"))),
        Panel("Buffered bytes against max_buffered_bytes", "Bytes of spans held undecided, and their bound.",
              (Query("sum by (processor) (tailsample_engine_buffered_bytes)", "{{processor}} buffered"),
               Query("sum by (processor) (tailsample_engine_limit_max_buffered_bytes)", "{{processor}} limit")),
              unit="bytes"),
    )),
    Row("Memory", (
        Panel("Memory against the limiter",
              "Resident memory, and the memory_limiter's measure with its soft and hard limits.",
              (Query("otelcol_process_memory_rss", "resident {{instance}}"),
               Query("sum by (processor) (tailsample_memory_limiter_used_bytes)", "{{processor}} used"),
               Query("sum by (processor) (tailsample_memory_limiter_soft_limit_bytes)", "{{processor}} soft limit"),
               Query("sum by (processor) (tailsample_memory_limiter_hard_limit_bytes)", "{{processor}} hard limit")),
              unit="bytes"),
        Panel("Limiter refusing", "1 while the memory_limiter refuses data.",
              (Query("max by (processor) (tailsample_memory_limiter_refusing)", "{{processor}}"),), max=1),
    )),
    Row("Exporters", (
        Panel("Exporter spans per second", "Spans sent, failed after retries, and refused by a full queue.",
              (Query(f"sum by (exporter) (rate(otelcol_exporter_sent_spans_total[{RATE}]))", "{{exporter}} sent"),
               Query(f"sum by (exporter) (rate(otelcol_exporter_send_failed_spans_total[{RATE}]))",
                     "{{exporter}} failed"),
               Query(f"sum by (exporter) (rate(otelcol_exporter_enqueue_failed_spans_total[{RATE}]))",
                     "{{exporter}} enqueue failed"))),
        Panel("Exporter queue fill", "Queue size over its capacity.",
              (Query("sum by (exporter) (otelcol_exporter_queue_size) / "
                     "sum by (exporter) (otelcol_exporter_queue_capacity)", "{{exporter}}"),),
              unit="percentunit", max=1),
    )),
    Row("Propagation", (
        Panel("Calls losing their trace context, per pair",
              "Per (source service, destination): calls with no SERVER/CONSUMER child in their trace, over calls.",
              (Query(_share("tailsample_propagation_gaps_total", "tailsample_propagation_calls_total",
                            "source, destination"), "{{source}} → {{destination}}"),),
              unit="percentunit", max=1, width=24),
    )),
)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    runbook: str


_BY = "job, instance, processor"


def _ratio(num: str, den: str, window: str, *, offset: str = "", by: str = _BY) -> str:
    at = f" offset {offset}" if offset else ""
    return f"sum by ({by}) (rate({num}[{window}]{at}))\n/ sum by ({by}) (rate({den}[{window}]{at}))"


_GLOBAL = f"{TS}global_count_traces_sampled_total"
_KEPT = _GLOBAL + '{decision="sampled"}'
ALERTS: tuple[Alert, ...] = (
    Alert("TailsampleKeptShareCollapsed",
          f"(({_ratio(_KEPT, _GLOBAL, '5m')})\n< 0.25 * ({_ratio(_KEPT, _GLOBAL, '1h', offset='5m')}))\n"
          f"or (sum by ({_BY}) (rate({_KEPT}[5m])) == 0\n"
          f"    and sum by ({_BY}) (rate({_GLOBAL}[5m])) > 0)",
          "15m", "critical", "{{ $labels.processor }} on {{ $labels.instance }} keeps far fewer traces than before",
          "The share of decided traces kept over 5 minutes fell below a quarter of the hour before, or to zero "
          "while traces keep arriving. Check, in order: a configuration reload that changed the policies "
          "(`tailsample check-config`); a policy's attribute no longer matching what the services send "
          "(`tailsample check-config --url`, the status page's kept share per policy); a `drop` policy matching "
          "too much. `tailsample explain <trace id>` on a trace you expected says which policy voted what."),
    Alert("TailsampleErrorTracesNotKept",
          _ratio("tailsample_engine_error_traces_not_sampled_total", "tailsample_engine_error_traces_decided_total",
                 "5m") + "\n> 0.05",
          "10m", "critical", "{{ $labels.processor }} on {{ $labels.instance }} is not keeping traces with errors",
          "More than 5% of decided traces carrying a span with status ERROR were not kept. Usually no "
          "`status_code` policy covers ERROR, a `drop` policy matches error traces, or a rate limit caps them. "
          "Look up one such trace on the status page (`/status`, the lookup box) or with `tailsample explain`: "
          "the votes say which policy judged it and how."),
    Alert("TailsampleTracesEvicted",
          f"sum by ({_BY}) (rate(tailsample_engine_traces_evicted_total[5m]))\n> 0",
          "10m", "warning", "{{ $labels.processor }} on {{ $labels.instance }} evicts traces before deciding them",
          "num_traces is full: the oldest traces are dropped undecided, whatever the policies would have said. "
          "Raise `num_traces` (and memory with it), shorten `decision_wait`, or scale out. The status page shows "
          "buffered traces against the limit."),
    Alert("TailsampleRefusingSpans",
          "sum by (job, instance, receiver) (rate(otelcol_receiver_refused_spans_total[5m]))\n> 0",
          "10m", "warning", "{{ $labels.receiver }} on {{ $labels.instance }} keeps refusing spans",
          "The receivers answer with backpressure (a buffer limit or the memory_limiter): clients retry, then "
          "drop. See the dashboard's evictions and drops and memory rows: `max_buffered_bytes`, "
          "`block_on_overflow` at `num_traces`, or the limiter's soft limit is reached. Raise the limit or scale "
          "out."),
    Alert("TailsampleExporterFailing",
          "sum by (job, instance, exporter) (rate(otelcol_exporter_send_failed_spans_total[5m])\n"
          "    + rate(otelcol_exporter_enqueue_failed_spans_total[5m]))\n> 0",
          "5m", "critical", "{{ $labels.exporter }} on {{ $labels.instance }} is losing kept spans",
          "Kept spans fail after retries, or the sending queue is full. Check the backend's health and address, "
          "its TLS and credentials (the service log names the error), and the queue fill on the dashboard."),
    Alert("TailsampleDecisionLagOverDecisionWait",
          f"({_ratio('tailsample_engine_decision_lag_seconds_total', 'tailsample_engine_decisions_timed_total', '5m')})"
          f"\n> max by ({_BY}) (tailsample_engine_limit_decision_wait_seconds)",
          "10m", "warning", "{{ $labels.processor }} on {{ $labels.instance }} decides later than decision_wait",
          "Traces are decided, on average, more than decision_wait after they were due: the decision loop cannot "
          "keep up (CPU starved, a slow exporter blocking it, very large traces). Spans are held twice as long "
          "as configured. Check CPU, the decision timer panel, and the exporters."),
)


@dataclass(frozen=True)
class UnitCase:
    """A `promtool test rules` case: an alert's input series on a failing instance ("bad") and a healthy one
    ("good"); the alert must fire for "bad" alone at `fires_at`, and for nobody at `quiet_at` (before its `for`)."""

    alert: str
    series: tuple[tuple[str, str, str], ...]  # (metric{labels}, values on bad, values on good)
    fires_at: str
    quiet_at: str
    labels: tuple[tuple[str, str], ...] = (("processor", "tail_sampling"),)


_P = 'processor="tail_sampling"'
UNIT_CASES: tuple[UnitCase, ...] = (
    # 10% kept for an hour, then 1%: under a quarter of the hour before
    UnitCase("TailsampleKeptShareCollapsed",
             ((f'{_GLOBAL}{{{_P},decision="sampled",sampled="true"}}', "0+10x60 601+1x40", "0+10x100"),
              (f'{_GLOBAL}{{{_P},decision="not_sampled",sampled="false"}}', "0+90x60 5499+99x40", "0+90x100")),
             fires_at="85m", quiet_at="70m"),
    UnitCase("TailsampleErrorTracesNotKept",
             ((f"tailsample_engine_error_traces_decided_total{{{_P}}}", "0+10x30", "0+10x30"),
              (f"tailsample_engine_error_traces_not_sampled_total{{{_P}}}", "0+5x30", "0+0x30")),
             fires_at="20m", quiet_at="8m"),
    UnitCase("TailsampleTracesEvicted",
             ((f"tailsample_engine_traces_evicted_total{{{_P}}}", "0+10x30", "0+0x30"),),
             fires_at="20m", quiet_at="8m"),
    UnitCase("TailsampleRefusingSpans",
             (('otelcol_receiver_refused_spans_total{receiver="otlp",transport="grpc"}', "0+100x30", "0+0x30"),),
             fires_at="20m", quiet_at="8m", labels=(("receiver", "otlp"),)),
    UnitCase("TailsampleExporterFailing",
             (('otelcol_exporter_send_failed_spans_total{exporter="otlp"}', "0+5x30", "0+0x30"),
              ('otelcol_exporter_enqueue_failed_spans_total{exporter="otlp"}', "0+0x30", "0+0x30")),
             fires_at="15m", quiet_at="4m", labels=(("exporter", "otlp"),)),
    # 2 s past due on average against a decision_wait of 1 s; the healthy one 0.1 s
    UnitCase("TailsampleDecisionLagOverDecisionWait",
             ((f"tailsample_engine_decision_lag_seconds_total{{{_P}}}", "0+120x30", "0+6x30"),
              (f"tailsample_engine_decisions_timed_total{{{_P}}}", "0+60x30", "0+60x30"),
              (f"tailsample_engine_limit_decision_wait_seconds{{{_P}}}", "1x30", "1x30")),
             fires_at="20m", quiet_at="8m"),
)


def _with_instance(series: str, instance: str) -> str:
    name, _, rest = series.partition("{")
    return f'{name}{{job="tailsample",instance="{instance}",{rest}'


def _expand(template: str, labels: dict[str, str]) -> str:
    """`{{ $labels.x }}` filled in, as Prometheus expands an annotation (the only template the rules use)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def rule_tests_yaml() -> str:
    by_name = {a.name: a for a in ALERTS}
    tests = []
    for case in UNIT_CASES:
        alert = by_name[case.alert]
        labels = {"job": "tailsample", "instance": "bad:8888", **dict(case.labels), "severity": alert.severity}
        summary = _expand(alert.summary, labels)
        tests.append({
            "name": case.alert,
            "interval": "1m",
            "input_series": [{"series": _with_instance(series, instance), "values": values}
                             for series, bad, good in case.series
                             for instance, values in (("bad:8888", bad), ("good:8888", good))],
            "alert_rule_test": [
                {"eval_time": case.quiet_at, "alertname": case.alert, "exp_alerts": []},
                {"eval_time": case.fires_at, "alertname": case.alert,
                 "exp_alerts": [{"exp_labels": labels,
                                 "exp_annotations": {"summary": summary, "runbook": alert.runbook}}]},
            ],
        })
    body = yaml.dump({"rule_files": [RULES.name], "evaluation_interval": "1m", "tests": tests}, Dumper=_Dumper,
                     sort_keys=False, width=110, allow_unicode=True)
    return "# Generated by deploy/generate.py (UNIT_CASES): `promtool test rules` on the alerting rules.\n" + body


def dashboard_json() -> str:
    from grafana_foundation_sdk.builders import dashboard as d
    from grafana_foundation_sdk.builders import prometheus, stat, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (d.Dashboard("tailsample").uid("tailsample").tags(["tailsample", "opentelemetry", "tail-sampling"])
             .description("Tail sampling health: generated by deploy/generate.py").refresh("30s")
             .time("now-1h", "now").timezone("browser")
             .with_variable(d.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for row in ROWS:
        board = board.with_row(d.Row(row.title))
        for p in row.panels:
            panel = (stat.Panel() if p.kind == "stat" else timeseries.Panel()).title(p.title) \
                .description(p.description).datasource(ds).unit(p.unit).span(p.width).height(8)
            if p.max is not None:
                panel = panel.min(0).max(p.max)
            for i, q in enumerate(p.queries):
                panel = panel.with_target(prometheus.Dataquery().expr(q.expr).legend_format(q.legend)
                                          .ref_id(chr(ord("A") + i)))
            board = board.with_panel(panel)
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


class _Dumper(yaml.SafeDumper):
    """Expressions (several lines) as literal blocks, as one would write them by hand."""


_Dumper.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def rules_yaml() -> str:
    rules = [{"alert": a.name, "expr": a.expr, "for": a.for_, "labels": {"severity": a.severity},
              "annotations": {"summary": a.summary, "runbook": a.runbook}}
             for a in ALERTS]
    body = yaml.dump({"groups": [{"name": "tailsample", "rules": rules}]}, Dumper=_Dumper, sort_keys=False,
                     width=110, allow_unicode=True)
    return "# Generated by deploy/generate.py: edit that file, then run it.\n" + body


def outputs() -> dict[Path, str]:
    return {DASHBOARD: dashboard_json(), RULES: rules_yaml(), RULE_TESTS: rule_tests_yaml()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path.relative_to(HERE.parent)} differs from what deploy/generate.py generates: run it",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
