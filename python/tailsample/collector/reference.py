"""The reference material in one place: configuration keys with their defaults and meaning, the limits and what
happens at them, and every metric `tailsample serve` exposes with its labels.

This module is the source; `scripts/gen_reference.py` writes the README's configuration and limits tables and
`docs/reference.md` from it, and `tests/test_reference.py` fails when those drift from it, or when it drifts
from the code: the keys the configuration loader accepts, the engine's stats, the families on a running service's
`/metrics`. The service reads it too: which engine stats are gauges, and their help text. Data only: it imports
nothing from the package, so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigKey:
    """A key of the `tail_sampling` block (dotted below it); `reference`: the collector's processor knows it."""

    key: str
    default: str
    meaning: str
    reference: bool


@dataclass(frozen=True)
class Limit:
    """A bound, what happens when it is reached, and the metrics (or stats) that show it."""

    limit: str
    at_limit: str
    metrics: str


@dataclass(frozen=True)
class EngineStat:
    """A key of `Engine.stats()`; on /metrics as `tailsample_engine_<name>` (see `engine_metric_name`), labelled
    `processor`."""

    key: str
    kind: str  # counter or gauge
    meaning: str


@dataclass(frozen=True)
class Metric:
    """A metric family as `/metrics` renders it (counters with `_total`), other than the engine's stats."""

    name: str
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str
    only_with: str = ""
    """What must be present for the family to render (empty: always, with its component configured)."""


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "policies",
        "required",
        "a list; each has a unique non-empty `name`, a `type`, and a block named like the type",
        reference=True,
    ),
    ConfigKey(
        "decision_wait",
        "`30s`",
        "a trace is decided this long after its first span (Go durations: `10s`, `500ms`, `1m30s`)",
        reference=True,
    ),
    ConfigKey(
        "num_traces",
        "`50000`",
        "traces held at once, undecided ones and decided ones held for their late spans (when their outcome has no "
        "decision cache); at the bound a new trace pushes out the oldest arrival: a held decision is forgotten, an "
        "undecided trace is evicted (`traces_evicted`)",
        reference=True,
    ),
    ConfigKey(
        "block_on_overflow",
        "`false`",
        "at `num_traces`, refuse the payload with `BackpressureError` instead of evicting; nothing is lost",
        reference=True,
    ),
    ConfigKey(
        "decision_wait_after_root_received",
        "`0s` (off)",
        "once the root span (empty parent span ID) arrives, decide after this shorter wait",
        reference=True,
    ),
    ConfigKey(
        "maximum_trace_size_bytes",
        "`0` (off)",
        "a trace whose size passes this is not sampled at once (`traces_dropped_too_large`); its later spans follow "
        "through the non-sampled cache. The size is the reference's: each arriving part of the trace (its spans of "
        "one payload `ResourceSpans`) counted with its resource and scopes, as the collector re-encodes it (no "
        "schema URLs, no unknown fields, IDs and `status` always written); a one-span trace is typically ~100 bytes "
        "where its span alone is ~50",
        reference=True,
    ),
    ConfigKey(
        "decision_cache.sampled_cache_size",
        "`0` (off)",
        "kept trace IDs remembered exactly, first in first out: late spans come out at the next poll "
        "(`late_spans_forwarded`). Off, a kept trace's ID is held in the `num_traces` table instead (as the "
        "collector holds it) and its late spans come out without `tailsampling.cached_decision`",
        reference=True,
    ),
    ConfigKey(
        "decision_cache.non_sampled_cache_size",
        "`0` (off)",
        "dropped trace IDs remembered in a cuckoo filter (≤ 8 B per ID): late spans are discarded "
        "(`late_spans_dropped`). Off, the dropped trace's ID is held in the `num_traces` table instead",
        reference=True,
    ),
    ConfigKey("sample_on_first_match", "`false`", "stop evaluating at the first policy that samples", reference=True),
    ConfigKey(
        "drop_pending_traces_on_shutdown",
        "`false`",
        "`flush` drops undecided traces instead of deciding them",
        reference=True,
    ),
    ConfigKey(
        "num_shards",
        "`1`",
        "independent shards by trace ID, each with its own lock, its share of `num_traces` and of the cache sizes "
        "(as in the reference): a full shard evicts its own oldest trace even while another has room. At most "
        "`num_traces` shards; all share one clock",
        reference=True,
    ),
    ConfigKey("expected_new_traces_per_sec", "`0`", "accepted (a sizing hint)", reference=True),
    ConfigKey(
        "sampling_strategy",
        "`trace-complete`",
        "the only one supported; `span-ingest` is a clear error",
        reference=True,
    ),
    ConfigKey(
        "tail_storage",
        "none",
        "`file_storage/<name>`: the buffer on disk, replayed on start (see [tail "
        "storage](#nothing-lost-across-a-restart-tail-storage))",
        reference=True,
    ),
    ConfigKey(
        "tailsample.max_payload_bytes",
        "4 MiB",
        "no output payload is larger: a kept trace larger than this leaves in several payloads, cut between spans "
        "(each under its own resource and scope, spans byte for byte), and a `batch` processor never joins payloads "
        "past it. The default is gRPC's standard 4 MiB receive limit. A single span larger than this cannot be cut: "
        "it leaves alone in a payload of its own, counted in `spans_oversized` and logged with its trace ID (a "
        "warning, at most once per 10 s)",
        reference=False,
    ),
    ConfigKey(
        "tailsample.late_span_buffer_bytes",
        "64 MiB",
        "late spans of kept traces wait for the next `poll` in a buffer this big; when full, `ingest` raises "
        "`BackpressureError` until a poll drains it",
        reference=False,
    ),
    ConfigKey(
        "tailsample.adjusted_counts",
        "off",
        '`{tracestate: true, attribute: "", precision: 4}`: kept spans carry their sampling probability as OTEP 235 '
        "`ot=th:` in their tracestate, and with `attribute` set, that attribute holding the adjusted count (1/p, a "
        "double). See below",
        reference=False,
    ),
    ConfigKey(
        "tailsample.decision_log_size",
        "100000",
        "decisions remembered for `explain` (128 B each, and up to 64 B more of index once looked up); 0 turns "
        "the log off",
        reference=False,
    ),
    ConfigKey(
        "tailsample.propagation_audit",
        "on",
        "`{enabled: true, destination_attributes: [peer.service, messaging.destination.name, rpc.service, "
        "server.address, net.peer.name, url.full, http.url], ignore_when_present: [db.system, db.system.name], "
        "ignore_destinations: [], max_pairs: 1000, max_names: 4096, examples: 5, max_addresses: 4096, address_ttl: "
        "1h}`: see [Propagation gaps](#propagation-gaps-where-services-lose-the-trace)",
        reference=False,
    ),
    ConfigKey(
        "tailsample.recent_kept_bytes",
        "8 MiB",
        "kept traces held, as they left, for `tailsample show --url` and `Engine.kept_trace`; the oldest leave "
        "first; 0 turns it off",
        reference=False,
    ),
    ConfigKey(
        "tailsample.max_buffered_bytes",
        "2 GiB",
        "bytes buffered traces may hold (spans and their bookkeeping, counted exactly); at the limit `ingest` "
        "raises `BackpressureError` until decisions free memory (the collector's `memory_limiter` idea, inside the "
        "engine)",
        reference=False,
    ),
    ConfigKey(
        "tailsample.red_metrics",
        "off",
        "`{enabled: true, max_series: 1000, histogram_buckets: [2ms, 4ms, …, 15s]}`: rate, errors and duration of "
        "every span received, before sampling. See below",
        reference=False,
    ),
    ConfigKey(
        "tailsample.archive",
        "off",
        "`{storage: file_storage/<name>, max_size_mib: 10240, max_age: 24h}`: every trace decided not kept is "
        "written, compressed, under that extension's directory and can be recovered by ID or content for "
        "`max_age`, within `max_size_mib`. See [dropped traces, recoverable](#dropped-traces-recoverable)",
        reference=False,
    ),
    ConfigKey(
        "tailsample.record_policy",
        "`false`",
        "kept spans gain the attributes of the reference's record-policy mode (`tailsampling.policy`, "
        "`tailsampling.composite_policy`, `tailsampling.cached_decision`). See [which policy "
        "decided](#which-policy-decided)",
        reference=False,
    ),
    ConfigKey(
        "tailsample.shadow",
        "off",
        "`{policies: [...], attribute: false, max_disagreements: 10000, slow_threshold: 1s}`: a second policy set "
        "judged on every trace beside the live one, never changing what is kept; `attribute: true` marks kept spans "
        "with its verdict. See [shadow policies](#shadow-policies-and-what-if-simulate-diff)",
        reference=False,
    ),
    ConfigKey(
        "tailsample.strict_reference_matching",
        "`false`",
        'read attributes exactly as the reference does: an array value reads as `""` / 0 / false in the attribute '
        "policies, and a key matches only as spelled (no `-`/`_` header spellings). See [attributes as "
        "instrumentation sends them](#attributes-as-instrumentation-sends-them)",
        reference=False,
    ),
)

LIMITS: tuple[Limit, ...] = (
    Limit(
        "`num_traces`",
        "evict the oldest first-seen trace, or `BackpressureError` with `block_on_overflow`; decided traces held "
        "for their late spans (below) count, and the oldest arrival leaves first",
        "`traces_evicted`, `spans_evicted`, `refused_num_traces`, `decided_traces_in_memory`, `limit_num_traces`",
    ),
    Limit(
        "`maximum_trace_size_bytes`",
        "the trace is dropped at once",
        "`traces_dropped_too_large`, `limit_maximum_trace_size_bytes`",
    ),
    Limit(
        "decision caches",
        "oldest IDs forgotten (a late span then starts a new trace); an outcome without a cache (size 0, the "
        "default) is held instead, as the reference holds it: the trace ID (80 to 120 B) stays in the `num_traces` "
        "table until newer arrivals push it out",
        "`sampled_cache_entries`, `non_sampled_cache_entries`, `non_sampled_cache_bytes`, "
        "`decided_traces_in_memory`, `limit_*_cache_size`",
    ),
    Limit(
        "`tailsample.late_span_buffer_bytes`",
        "`BackpressureError` until `poll` drains it",
        "`late_span_buffer_bytes`, `refused_late_span_buffer`, `limit_late_span_buffer_bytes`",
    ),
    Limit(
        "`tailsample.max_payload_bytes`",
        "the output is cut into several payloads, between spans; a span larger than the limit leaves alone (over "
        "it) and is logged with its trace ID",
        "`payloads_emitted`, `spans_oversized`, `limit_max_payload_bytes`",
    ),
    Limit(
        "nesting: 64 protobuf message levels in a request",
        "the span holding a deeper value (attribute, event, link; or every span under a resource or scope whose "
        "attributes are deeper) is rejected alone; the rest of the request is taken; receivers answer a partial "
        "success",
        "`spans_rejected`, `otelcol_receiver_refused_spans_total`",
    ),
    Limit(
        "a span without a usable trace ID, or with an ID of the wrong length",
        "rejected alone, the rest of the request taken; receivers answer a partial success naming the first",
        '`tailsample_engine_spans_rejected_total{reason="invalid_trace_id"\\|"id_length"}`, '
        "`otelcol_receiver_refused_spans_total`",
    ),
    Limit(
        "`latency_percentile.max_groups`, `adaptive.max_keys`",
        "further groups or keys share one overflow group or key",
        "`policy_state_keys`, `policy_state_overflowed_traces`, `policy_state_bytes`",
    ),
    Limit(
        "`tailsample.decision_log_size`",
        "the oldest decision records are forgotten (`explain` then falls back to the decision caches, or says unknown)",
        "`decision_log_records`, `decision_log_bytes`, `limit_decision_log_size`",
    ),
    Limit(
        "`tailsample.propagation_audit.max_pairs`, `max_names`",
        "further pairs count in one overflow pair; further names as `(other)`",
        "`propagation_pairs`, `propagation_overflow_calls`, `propagation_names_overflowed`, "
        "`propagation_memory_bytes`, `limit_propagation_max_pairs`",
    ),
    Limit(
        "`tailsample.propagation_audit.max_addresses`, `address_ttl`",
        "further addresses are not learned (their calls stay named by address); addresses not described for "
        "`address_ttl` are forgotten",
        "`propagation_addresses`, `propagation_addresses_overflowed`, `limit_propagation_max_addresses` (all shards)",
    ),
    Limit(
        "`tailsample.recent_kept_bytes`",
        "the oldest kept copies leave (`show --url` then says the trace is not held)",
        "`recent_kept_traces`, `recent_kept_bytes`, `limit_recent_kept_bytes`",
    ),
    Limit(
        "`tailsample.shadow.max_disagreements`",
        "the oldest disagreement held for `tailsample diff` is forgotten (the totals still count it)",
        "`tailsample_shadow_disagreements_held`, `tailsample_shadow_disagreements_forgotten`, "
        "`tailsample_shadow_disagreements_memory_bytes`",
    ),
    Limit(
        "`tailsample.red_metrics.max_series`",
        "further keys count in one overflow series",
        "`red_series`, `red_overflow_spans`, `red_memory_bytes`, `limit_red_max_series`",
    ),
    Limit(
        "`tailsample.max_buffered_bytes`",
        "`BackpressureError`, nothing taken",
        "`buffered_bytes`, `refused_max_buffered_bytes`, `limit_max_buffered_bytes`",
    ),
    Limit(
        "`file_storage` `max_size_mib`",
        "`BackpressureError` (`reason` `tail_storage`), nothing taken, until acknowledged rounds free whole segments",
        "`storage_directory_bytes`, `storage_bytes`, `storage_span_segments`, `storage_decision_segments`, "
        "`storage_refused_full`, `refused_tail_storage`, `limit_storage_max_size`; replay: `replay_duration_ns`, "
        "`replay_payloads`, `replay_traces_pending`, `replay_spans_resent`, `replay_truncated_bytes`",
    ),
    Limit("malformed input", "`DecodeError`, nothing taken", "`payloads_rejected`"),
    Limit(
        "attribute inventory (serve: 2,000 keys per pipeline, one payload a second, less often for large ones)",
        "new keys are not counted",
        "`tailsample_attribute_inventory_keys`, `tailsample_attribute_inventory_keys_dropped`",
    ),
    Limit(
        "`max_request_body_size` (serve, HTTP)",
        "413, nothing taken",
        '`tailsample_receiver_rejected_requests_total{reason="too_large"}`',
    ),
    Limit(
        "`max_recv_msg_size_mib` (serve, gRPC; also bounds a gzip message's inflation)",
        "RESOURCE_EXHAUSTED from the message's length prefix, before it is read",
        '`tailsample_receiver_rejected_requests_total{reason="too_large"}`',
    ),
    Limit(
        "`max_connections` (serve, HTTP; lowered to fit the open-files limit)",
        "503 with `Retry-After`, or closed at once past 16 refusal slots",
        "`tailsample_listener_open_connections`, `tailsample_listener_refused_connections_total`",
    ),
    Limit(
        "OTLP/HTTP server threads (serve): 2 workers (Rust, off the GIL), each with its own event loop and the "
        "connections handed to it (the least loaded at accept); up to 64 more in all for ingest that waits on "
        "an fsync",
        "requests wait their turn on their connection (bounded by `max_connections` and `read_timeout`)",
        "`tailsample_listener_open_connections`",
    ),
    Limit(
        "`max_connections` (serve, gRPC; lowered to fit the open-files limit)",
        "closed at once",
        "`tailsample_listener_open_connections`, `tailsample_listener_refused_connections_total`",
    ),
    Limit(
        "OTLP/gRPC server threads (serve): 2 workers (Rust, off the GIL), a connection on one of them (the "
        "least loaded at accept), a call on its connection's worker unless that one runs another call (then the "
        "least busy); `max_concurrent_streams` per connection; TLS handshake and HTTP/2 preface within 10 s; "
        "HTTP/2 DATA frames of up to 1 MiB (SETTINGS_MAX_FRAME_SIZE; a frame is read whole before its call sees it)",
        "calls wait their turn; a connection without its preface in time is closed; a larger frame is a "
        "connection error (FRAME_SIZE_ERROR)",
        '`tailsample_listener_timed_out_connections_total{timeout="read_header"}`',
    ),
    Limit(
        "`read_header_timeout`, `read_timeout` (serve, HTTP)",
        "connection closed; 408 for a slow body",
        "`tailsample_listener_timed_out_connections_total`",
    ),
    Limit(
        "open-files limit (serve)",
        "soft raised to hard at start; `accept()` failures logged once per 10 s",
        "`tailsample_listener_accept_errors_total`",
    ),
    Limit(
        "`sending_queue.queue_size` (serve)",
        "the batch is dropped and logged",
        "`otelcol_exporter_enqueue_failed_spans_total`, `otelcol_exporter_queue_size`, "
        "`otelcol_exporter_queue_capacity`",
    ),
    Limit(
        "`retry_on_failure.max_elapsed_time` (serve)",
        "the batch is given up and logged",
        "`otelcol_exporter_send_failed_spans_total`, `tailsample_exporter_retries_total`",
    ),
    Limit("`memory_limiter` (serve)", "503 / RESOURCE_EXHAUSTED, nothing taken", "`tailsample_memory_limiter_*`"),
    Limit(
        "`tailsample.archive.max_size_mib`, `.max_age`",
        "whole oldest segment files removed first; a block larger than the whole budget is refused",
        "`tailsample_archive_bytes`, `tailsample_archive_oldest_age_seconds`, "
        "`tailsample_archive_removed_segments_size_total`, `tailsample_archive_removed_segments_age_total`, "
        "`tailsample_archive_refused_traces_total`",
    ),
    Limit(
        "archive stash between decision rounds (64 MiB per engine)",
        "the dropped trace is not archived",
        "`tailsample_archive_overflowed_traces_total`",
    ),
    Limit(
        "`recent_traffic_bytes` of the `tailsample_debug` extension (serve; default 64 MiB per pipeline, 0 = off)",
        "the oldest recorded requests leave first; a request larger than the bound is not recorded; "
        "`simulate --url` then replays what is left",
        "`tailsample_recent_traffic_bytes`, `tailsample_recent_traffic_payloads`, "
        "`tailsample_recent_traffic_dropped_payloads_total`",
    ),
    Limit(
        "`/status/data` (serve)",
        "computed at most once a second; lists capped (policies, exporters, pairs, kept traces drawn)",
        "`tailsample_debug_requests_total` when behind the `/debug` gate",
    ),
)

ENGINE_STATS: tuple[EngineStat, ...] = (
    EngineStat("payloads_received", "counter", "payloads passed to ingest"),
    EngineStat("payloads_rejected", "counter", "payloads refused as malformed (DecodeError), nothing taken"),
    EngineStat("payloads_refused", "counter", "payloads refused by backpressure (BackpressureError), nothing taken"),
    EngineStat("payloads_emitted", "counter", "output payloads handed out by poll and flush"),
    EngineStat("spans_received", "counter", "spans taken in"),
    EngineStat(
        "spans_oversized",
        "counter",
        "kept spans larger than max_payload_bytes, sent alone in a payload of their own",
    ),
    EngineStat("traces_received", "counter", "new traces seen"),
    EngineStat("traces_sampled", "counter", "traces decided sampled"),
    EngineStat("traces_not_sampled", "counter", "traces decided not sampled"),
    EngineStat(
        "traces_dropped",
        "counter",
        "traces dropped rather than decided sampled or not: by a drop policy, too large, or pending at shutdown with "
        "drop_pending_traces_on_shutdown",
    ),
    EngineStat("traces_dropped_too_large", "counter", "traces over maximum_trace_size_bytes, dropped at once"),
    EngineStat(
        "traces_dropped_on_shutdown",
        "counter",
        "undecided traces dropped by flush (drop_pending_traces_on_shutdown)",
    ),
    EngineStat("traces_dropped_by_policy", "counter", "traces a drop policy dropped (a veto)"),
    EngineStat(
        "traces_evicted",
        "counter",
        'undecided traces pushed out by a new trace at num_traces (the reference\'s "dropped too early")',
    ),
    EngineStat(
        "traces_forgotten",
        "counter",
        "buffered traces forgotten undecided on request (their Kafka partition moved to another instance, which "
        "rebuilds them from the log)",
    ),
    EngineStat("spans_forgotten", "counter", "the spans of forgotten traces"),
    EngineStat(
        "traces_resent",
        "counter",
        "traces replayed from tail storage after a restart and sent again with the decision made before it",
    ),
    EngineStat("spans_resent", "counter", "the spans of traces sent again"),
    EngineStat("buffered_bytes", "gauge", "bytes buffered traces hold (spans and bookkeeping)"),
    EngineStat("limit_max_buffered_bytes", "gauge", "tailsample.max_buffered_bytes"),
    EngineStat("refused_max_buffered_bytes", "counter", "payloads refused at max_buffered_bytes"),
    EngineStat("refused_tail_storage", "counter", "payloads refused because tail storage is full"),
    EngineStat("storage_errors", "counter", "tail storage write or read errors"),
    EngineStat("traces_in_memory", "gauge", "undecided traces held"),
    EngineStat("error_traces_decided", "counter", "traces holding an ERROR span that were decided"),
    EngineStat(
        "error_traces_not_sampled",
        "counter",
        "traces holding an ERROR span decided not kept (dropped by a policy or not sampled)",
    ),
    EngineStat(
        "decided_traces_in_memory",
        "gauge",
        "decided traces held (IDs only) for their late spans where their outcome has no decision cache",
    ),
    EngineStat("spans_in_memory", "gauge", "spans of undecided traces held"),
    EngineStat(
        "span_bytes_in_memory",
        "gauge",
        "framed span bytes buffered (the spans' own bytes plus 2-4 bytes of framing each)",
    ),
    EngineStat(
        "memory_bytes",
        "gauge",
        "estimate of everything held for buffered traces: span bytes, per-trace and per-chunk bookkeeping, table "
        "entries and interned resources",
    ),
    EngineStat("spans_sampled", "counter", "spans of sampled traces sent out"),
    EngineStat(
        "traces_sampled_probability_unknown",
        "counter",
        "kept traces whose sampling probability is unknown (adjusted counts on): their spans leave without th",
    ),
    EngineStat("decision_log_records", "gauge", "decisions held for explain"),
    EngineStat("decision_log_bytes", "gauge", "bytes the decision log holds"),
    EngineStat("limit_decision_log_size", "gauge", "tailsample.decision_log_size"),
    EngineStat(
        "policy_state_keys",
        "gauge",
        "groups and keys held by stateful policies (latency_percentile, adaptive)",
    ),
    EngineStat(
        "policy_state_overflowed_traces",
        "counter",
        "traces counted in a stateful policy's overflow group or key",
    ),
    EngineStat("policy_state_bytes", "gauge", "bytes stateful policies hold"),
    EngineStat("red_series", "gauge", "RED metric series held"),
    EngineStat("red_spans", "counter", "spans counted in the RED metrics"),
    EngineStat("red_overflow_spans", "counter", "spans counted in the RED overflow series"),
    EngineStat("red_memory_bytes", "gauge", "bytes the RED metrics hold"),
    EngineStat("limit_red_max_series", "gauge", "tailsample.red_metrics.max_series"),
    EngineStat("recent_kept_traces", "gauge", "kept traces held for show --url"),
    EngineStat("recent_kept_bytes", "gauge", "bytes of kept traces held for show --url"),
    EngineStat("limit_recent_kept_bytes", "gauge", "tailsample.recent_kept_bytes"),
    EngineStat("propagation_traces_audited", "counter", "decided traces the propagation audit read"),
    EngineStat("propagation_traces_with_gaps", "counter", "audited traces with at least one gap"),
    EngineStat("propagation_traces_broken", "counter", "audited traces with orphan spans"),
    EngineStat("propagation_calls", "counter", "CLIENT/PRODUCER calls audited"),
    EngineStat("propagation_gaps", "counter", "calls with no SERVER/CONSUMER child in their trace"),
    EngineStat("propagation_orphan_spans", "counter", "spans whose parent is not in their trace"),
    EngineStat("propagation_overflow_calls", "counter", "calls counted in the overflow pair (past max_pairs)"),
    EngineStat("propagation_unnamed_calls", "counter", "calls naming no destination attribute"),
    EngineStat("propagation_unnamed_gaps", "counter", "unanswered calls naming no destination"),
    EngineStat("propagation_pairs", "gauge", "service pairs held"),
    EngineStat("propagation_names_overflowed", "counter", "names counted as (other) (past max_names)"),
    EngineStat("propagation_memory_bytes", "gauge", "bytes the propagation audit holds"),
    EngineStat("propagation_addresses", "gauge", "addresses learned (address to service)"),
    EngineStat("propagation_addresses_overflowed", "counter", "addresses not learned (past max_addresses)"),
    EngineStat("limit_propagation_max_pairs", "gauge", "tailsample.propagation_audit.max_pairs"),
    EngineStat("limit_propagation_max_addresses", "gauge", "tailsample.propagation_audit.max_addresses, all shards"),
    EngineStat("spans_not_sampled", "counter", "spans of traces decided not sampled"),
    EngineStat("spans_dropped", "counter", "spans of dropped traces"),
    EngineStat("spans_evicted", "counter", "spans of evicted traces"),
    EngineStat("late_spans_forwarded", "counter", "late spans of kept traces sent out (sampled cache)"),
    EngineStat("late_spans_dropped", "counter", "late spans of dropped traces discarded (non-sampled cache)"),
    EngineStat("late_span_buffer_bytes", "gauge", "bytes of late spans waiting for the next poll"),
    EngineStat("policy_evaluation_errors", "counter", "policy evaluations that failed"),
    EngineStat(
        "decisions_after_root",
        "counter",
        "decisions taken early, decision_wait_after_root_received after the root span",
    ),
    EngineStat("decisions_on_flush", "counter", "decisions taken by flush"),
    EngineStat(
        "decision_lag_ns_total",
        "counter",
        "sum over decided traces of (decision time - due time) (in seconds on /metrics)",
    ),
    EngineStat("decisions_timed", "counter", "decisions counted in decision_lag_ns_total"),
    EngineStat("refused_num_traces", "counter", "payloads refused at num_traces (block_on_overflow)"),
    EngineStat("refused_late_span_buffer", "counter", "payloads refused at late_span_buffer_bytes"),
    EngineStat("sampled_cache_entries", "gauge", "trace IDs in the sampled decision cache"),
    EngineStat("non_sampled_cache_entries", "gauge", "trace IDs in the non-sampled decision cache"),
    EngineStat("non_sampled_cache_bytes", "gauge", "bytes of the non-sampled cache's filter"),
    EngineStat("interned_origins", "gauge", "interned resources and scopes held"),
    EngineStat("limit_num_traces", "gauge", "num_traces"),
    EngineStat("limit_sampled_cache_size", "gauge", "decision_cache.sampled_cache_size"),
    EngineStat("limit_non_sampled_cache_size", "gauge", "decision_cache.non_sampled_cache_size"),
    EngineStat("limit_maximum_trace_size_bytes", "gauge", "maximum_trace_size_bytes (0: off)"),
    EngineStat("limit_late_span_buffer_bytes", "gauge", "tailsample.late_span_buffer_bytes"),
    EngineStat("limit_max_payload_bytes", "gauge", "tailsample.max_payload_bytes"),
    EngineStat("num_shards", "gauge", "num_shards"),
    EngineStat("storage_bytes", "gauge", "bytes of live tail storage segments"),
    EngineStat("storage_directory_bytes", "gauge", "bytes of the tail storage directory"),
    EngineStat("limit_storage_max_size", "gauge", "file_storage max_size_mib, in bytes"),
    EngineStat("storage_span_segments", "gauge", "span segments on disk"),
    EngineStat("storage_decision_segments", "gauge", "decision segments on disk"),
    EngineStat("storage_payloads_written", "counter", "payloads written to tail storage"),
    EngineStat("storage_bytes_written", "counter", "bytes written to tail storage"),
    EngineStat("storage_rounds_written", "counter", "decision rounds written to tail storage"),
    EngineStat("storage_fsyncs", "counter", "fsyncs of tail storage"),
    EngineStat("storage_fsync_ns_total", "counter", "time in fsync, summed (seconds on /metrics)"),
    EngineStat("storage_refused_full", "counter", "writes refused: tail storage full"),
    EngineStat("storage_segments_dropped", "counter", "segments deleted once their rounds were acknowledged"),
    EngineStat("storage_open_rounds", "gauge", "decision rounds not yet acknowledged"),
    EngineStat("storage_acknowledged_round", "gauge", "the last acknowledged round"),
    EngineStat("replay_duration_ns", "counter", "time the start-up replay took (seconds on /metrics)"),
    EngineStat("replay_payloads", "counter", "payloads replayed at start"),
    EngineStat("replay_payloads_invalid", "counter", "stored payloads that did not decode at replay"),
    EngineStat("replay_bytes", "counter", "bytes replayed at start"),
    EngineStat("replay_traces_pending", "counter", "traces pending again after replay"),
    EngineStat("replay_spans_pending", "counter", "spans pending again after replay"),
    EngineStat("replay_traces_resent", "counter", "kept traces sent again after replay"),
    EngineStat("replay_spans_resent", "counter", "their spans (possible duplicates)"),
    EngineStat("replay_spans_covered", "counter", "spans already exported before the restart, not sent again"),
    EngineStat("replay_truncations", "counter", "segments cut at an unfinished write"),
    EngineStat("replay_truncated_bytes", "counter", "bytes cut off unfinished writes"),
)

SERVICE_METRICS: tuple[Metric, ...] = (
    Metric(
        "tailsample_shadow_policy_traces_total",
        "counter",
        ("decision", "policy", "processor"),
        "Traces a shadow policy voted on, by vote (never changes what is kept)",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_policy_errors_total",
        "counter",
        ("policy", "processor"),
        "Evaluation errors of a shadow policy",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_policy_decided_traces_total",
        "counter",
        ("policy", "processor"),
        "Traces the shadow set would keep that this shadow policy was the first, in order, to sample",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_kept_traces_total",
        "counter",
        ("kept_by", "processor"),
        "Decided traces kept by the live policies only, the shadow policies only, or both",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_kept_spans_total",
        "counter",
        ("kept_by", "processor"),
        "Decided spans kept by the live policies only, the shadow policies only, or both",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_kept_bytes_total",
        "counter",
        ("kept_by", "processor"),
        "Decided bytes kept by the live policies only, the shadow policies only, or both",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_must_keep_lost_traces_total",
        "counter",
        ("class", "lost_by", "processor"),
        "Error or slow traces one policy set keeps and the other would lose",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_traces_judged_total",
        "counter",
        ("processor",),
        "Traces both policy sets judged",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_disagreements_held",
        "gauge",
        ("processor",),
        "Disagreements held for tailsample diff (bounded by tailsample.shadow.max_disagreements)",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_disagreements_forgotten_total",
        "counter",
        ("processor",),
        "Disagreements pushed out of the bounded ring (still counted in the totals)",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_shadow_disagreements_memory_bytes",
        "gauge",
        ("processor",),
        "Bytes held by the ring of disagreements",
        only_with="tailsample.shadow configured",
    ),
    Metric(
        "tailsample_propagation_orphan_spans_total",
        "counter",
        ("processor", "service"),
        "Spans whose parent never arrived in their trace, per service",
        only_with="orphan spans",
    ),
    Metric(
        "tailsample_propagation_broken_traces_total",
        "counter",
        ("processor", "service"),
        "Decided traces with orphan spans of this service",
        only_with="orphan spans",
    ),
    Metric(
        "tailsample_kafka_partition_lag",
        "gauge",
        ("partition", "receiver", "topic"),
        "Messages in the partition not yet consumed (high watermark - position)",
        only_with="partitions assigned from a Kafka broker",
    ),
    Metric(
        "tailsample_kafka_partition_held_back_messages",
        "gauge",
        ("partition", "receiver", "topic"),
        "Messages consumed, not yet committable: their traces are pending or their kept spans not yet sent",
        only_with="partitions assigned from a Kafka broker",
    ),
    Metric(
        "tailsample_kafka_partition_committed_offset",
        "gauge",
        ("partition", "receiver", "topic"),
        "Last offset committed by this instance (-1: none yet)",
        only_with="partitions assigned from a Kafka broker",
    ),
    Metric(
        "tailsample_engine_spans_rejected_total",
        "counter",
        ("processor", "reason"),
        "Spans rejected alone, the rest of their requests taken (an OTLP partial success), by reason",
    ),
    Metric(
        "tailsample_listener_open_connections",
        "gauge",
        ("listener",),
        "Connections open on a listener (OTLP/HTTP, OTLP/gRPC, metrics, health check).",
    ),
    Metric(
        "tailsample_listener_refused_connections_total",
        "counter",
        ("listener",),
        "Connections over a listener's max_connections: answered 503 with Retry-After, or closed at once when the "
        "refusal slots are taken too (gRPC: closed at once).",
    ),
    Metric(
        "tailsample_listener_timed_out_connections_total",
        "counter",
        ("listener", "timeout"),
        "Connections closed for a slow client: headers not in within read_header_timeout (read_header; gRPC: the "
        "TLS handshake or HTTP/2 preface not in within 10 s), or a request not read whole within read_timeout "
        "(read).",
    ),
    Metric(
        "tailsample_listener_accept_errors_total",
        "counter",
        (),
        "accept() failures for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the connection "
        "waits in the backlog; asyncio retries after a second.",
    ),
    Metric(
        "otelcol_exporter_sent_spans_total",
        "counter",
        ("exporter",),
        "Number of spans successfully sent to destination.",
    ),
    Metric(
        "otelcol_exporter_send_failed_spans_total",
        "counter",
        ("exporter",),
        "Number of spans in failed attempts to send to destination.",
    ),
    Metric(
        "otelcol_exporter_enqueue_failed_spans_total",
        "counter",
        ("exporter",),
        "Number of spans failed to be added to the sending queue.",
    ),
    Metric(
        "tailsample_exporter_retries_total",
        "counter",
        ("exporter",),
        "Send attempts that failed and were retried.",
    ),
    Metric(
        "tailsample_memory_limiter_refused_payloads_total",
        "counter",
        ("processor",),
        "Payloads refused because memory use was above the soft limit.",
    ),
    Metric(
        "tailsample_memory_limiter_used_bytes",
        "gauge",
        ("processor",),
        "What is compared with the limits: Rust heap live + C heap live + baseline, at the last check.",
    ),
    Metric(
        "tailsample_memory_limiter_heap_bytes",
        "gauge",
        ("heap", "processor"),
        "Live bytes per allocator at the last check (rust: exact; c: glibc mallinfo2).",
    ),
    Metric(
        "tailsample_memory_limiter_resident_bytes",
        "gauge",
        ("processor",),
        "Resident memory at the last check (not compared: allocators keep freed pages).",
    ),
    Metric("tailsample_memory_limiter_refusing", "gauge", ("processor",), "1 while data is refused, else 0."),
    Metric(
        "tailsample_memory_limiter_purges_total",
        "counter",
        ("processor",),
        "Times freed memory was handed back to the system.",
    ),
    Metric(
        "tailsample_memory_limiter_baseline_bytes",
        "gauge",
        ("processor",),
        "Resident memory at start minus both heaps at start (part of used).",
    ),
    Metric("tailsample_memory_limiter_soft_limit_bytes", "gauge", ("processor",), "Above this, data is refused."),
    Metric(
        "tailsample_memory_limiter_hard_limit_bytes",
        "gauge",
        ("processor",),
        "Above this, a collection is forced.",
    ),
    Metric(
        "otelcol_receiver_accepted_spans_total",
        "counter",
        ("receiver", "transport"),
        "Number of spans successfully pushed into the pipeline.",
    ),
    Metric(
        "otelcol_receiver_refused_spans_total",
        "counter",
        ("receiver", "transport"),
        "Number of spans that could not be pushed into the pipeline.",
    ),
    Metric(
        "tailsample_receiver_rejected_requests_total",
        "counter",
        ("reason", "receiver", "transport"),
        "Requests answered with an error before their spans could be counted, by reason (malformed, too_large, "
        "unauthenticated, unsupported_media_type, unsupported_encoding, not_found, timeout).",
    ),
    Metric(
        "tailsample_receiver_aborted_requests_total",
        "counter",
        ("receiver", "transport"),
        "Requests whose client went away (or broke the framing) before the body was read whole: nothing of them was "
        "taken.",
    ),
    Metric("tailsample_kafka_messages_total", "counter", ("receiver",), "Kafka messages consumed"),
    Metric(
        "tailsample_kafka_rejected_messages_total",
        "counter",
        ("receiver",),
        "Kafka messages that are not valid OTLP (skipped and committed)",
    ),
    Metric(
        "tailsample_kafka_forgotten_traces_total",
        "counter",
        ("receiver",),
        "Buffered traces given up with their partition (rebalance, shutdown)",
    ),
    Metric("tailsample_kafka_commits_total", "counter", ("receiver",), "Offset commits sent"),
    Metric(
        "tailsample_archive_bytes",
        "gauge",
        ("processor",),
        "Bytes the archive of dropped traces holds on disk",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_limit_bytes",
        "gauge",
        ("processor",),
        "The archive's max_size_mib, in bytes",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_traces",
        "gauge",
        ("processor",),
        "Traces the archive holds",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_oldest_age_seconds",
        "gauge",
        ("processor",),
        "Age of the oldest trace the archive holds (0 when empty)",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_written_traces_total",
        "counter",
        ("processor",),
        "Dropped traces written to the archive",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_written_otlp_bytes_total",
        "counter",
        ("processor",),
        "OTLP bytes of the dropped traces written to the archive, before compression",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_refused_traces_total",
        "counter",
        ("processor",),
        "Dropped traces not archived: a block larger than the whole budget, or a write error",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_overflowed_traces_total",
        "counter",
        ("processor",),
        "Dropped traces not archived: more were dropped between two decision rounds than the stash holds (64 MiB)",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_removed_segments_size_total",
        "counter",
        ("processor",),
        "Archive segments removed, oldest first, at max_size_mib",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_removed_segments_age_total",
        "counter",
        ("processor",),
        "Archive segments removed at max_age",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_lookups_total",
        "counter",
        ("processor",),
        "Trace ID lookups in the archive",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_lookups_found_total",
        "counter",
        ("processor",),
        "Trace ID lookups that found the trace",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_index_memory_bytes",
        "gauge",
        ("processor",),
        "Memory of the archive's trace ID index: the closed segments' Bloom filters and fences, and the open "
        "segment's table",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_recovered_traces_total",
        "counter",
        ("processor",),
        "Archived traces sent to the exporters on request",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_archive_recovered_spans_total",
        "counter",
        ("processor",),
        "Spans of the archived traces sent to the exporters",
        only_with="tailsample.archive",
    ),
    Metric(
        "tailsample_debug_requests_total",
        "counter",
        ("endpoint", "outcome"),
        "Requests to the /debug endpoints by endpoint and outcome (served, disabled, rate_limited, unauthenticated)",
    ),
    Metric(
        "tailsample_recent_traffic_bytes",
        "gauge",
        ("pipeline",),
        "Bytes of incoming OTLP requests held for `simulate --url` (the tailsample_debug extension's "
        "recent_traffic_bytes)",
        only_with="a tailsample_debug extension (recent_traffic_bytes above 0)",
    ),
    Metric(
        "tailsample_recent_traffic_payloads",
        "gauge",
        ("pipeline",),
        "Incoming OTLP requests held for `simulate --url`",
        only_with="a tailsample_debug extension (recent_traffic_bytes above 0)",
    ),
    Metric(
        "tailsample_recent_traffic_dropped_payloads_total",
        "counter",
        ("pipeline",),
        "Requests pushed out of the recent traffic recording (oldest first) or too large for it",
        only_with="a tailsample_debug extension (recent_traffic_bytes above 0)",
    ),
    Metric(
        "tailsample_config_reloads_total",
        "counter",
        ("result",),
        "Configuration reloads (SIGHUP, POST /debug/reload, --watch-config) by result: ok, unchanged, failed "
        "(refused whole; the running configuration stays)",
    ),
    Metric(
        "tailsample_config_version",
        "gauge",
        ("hash", "processor"),
        "The live configuration's version (1 at start, one more per reload that changed it), with its content hash",
    ),
    Metric("otelcol_exporter_queue_size", "gauge", ("exporter",), "Current size of the retry queue (in batches)"),
    Metric("otelcol_exporter_queue_capacity", "gauge", ("exporter",), "Fixed capacity of the retry queue (in batches)"),
    Metric(
        "otelcol_processor_tail_sampling_count_traces_sampled_total",
        "counter",
        ("decision", "policy", "processor", "sampled"),
        "Count of traces that were sampled or not per policy",
    ),
    Metric(
        "otelcol_processor_tail_sampling_sampling_policy_execution_count_total",
        "counter",
        ("policy", "processor"),
        "Total number of executions of a policy",
    ),
    Metric(
        "tailsample_policy_decided_traces_total",
        "counter",
        ("policy", "processor"),
        "Kept traces this policy was the first, in order, to sample",
    ),
    Metric(
        "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
        "counter",
        ("decision", "processor", "sampled"),
        "Global count of traces that were sampled or not by at least one policy",
    ),
    Metric(
        "otelcol_processor_tail_sampling_sampling_policy_evaluation_error_total",
        "counter",
        ("processor",),
        "Count of sampling policy evaluation errors",
    ),
    Metric(
        "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
        "counter",
        ("processor",),
        "Count of traces that needed to be dropped before the configured wait time",
    ),
    Metric(
        "otelcol_processor_tail_sampling_sampling_traces_on_memory",
        "gauge",
        ("processor",),
        "Tracks the number of traces current on memory",
    ),
    Metric(
        "otelcol_processor_tail_sampling_new_trace_id_received_total",
        "counter",
        ("processor",),
        "Counts the arrival of new traces",
    ),
    Metric(
        "otelcol_processor_tail_sampling_traces_dropped_too_large_total",
        "counter",
        ("processor",),
        "Count of traces dropped for exceeding the size limit",
    ),
    Metric(
        "tailsample_engine_limit_decision_wait_seconds",
        "gauge",
        ("processor",),
        "The decision_wait of this processor: the alert on decision lag compares with it",
    ),
    Metric(
        "tailsample_attribute_inventory_keys",
        "gauge",
        ("processor",),
        "Attribute keys held by the traffic sample that check-config --url and explain read (bounded)",
    ),
    Metric(
        "tailsample_attribute_inventory_keys_dropped_total",
        "counter",
        ("processor",),
        "New attribute keys not counted: the inventory was at its bound",
    ),
    Metric(
        "traces_span_metrics_calls_total",
        "counter",
        ("processor", "service_name", "span_kind", "span_name", "status_code"),
        "Spans received, before sampling, per service, span name, kind and status",
    ),
    Metric(
        "traces_span_metrics_duration_milliseconds",
        "histogram",
        ("processor", "service_name", "span_kind", "span_name", "status_code"),
        "Duration (ms) of the spans received, before sampling",
    ),
    Metric(
        "traces_span_metrics_errors_total",
        "counter",
        ("processor", "service_name", "span_kind", "span_name"),
        "Spans with status ERROR received, before sampling, per service, span name and kind",
    ),
    Metric(
        "tailsample_propagation_unnamed_calls_total",
        "counter",
        ("processor",),
        "Calls naming no destination attribute (those answered are named by their callee)",
    ),
    Metric(
        "tailsample_propagation_unnamed_gaps_total",
        "counter",
        ("processor",),
        'Calls naming no destination that nobody answered (pairs with destination="(unnamed)")',
    ),
    Metric(
        "tailsample_propagation_calls_total",
        "counter",
        ("destination", "processor", "source"),
        "CLIENT/PRODUCER spans per source service and destination, in decided traces",
    ),
    Metric(
        "tailsample_propagation_gaps_total",
        "counter",
        ("destination", "processor", "source"),
        "Calls with no SERVER/CONSUMER child in their trace: trace context lost",
    ),
    Metric(
        "tailsample_propagation_gap_traces_total",
        "counter",
        ("destination", "processor", "source"),
        "Decided traces with at least one gap for this pair",
    ),
    Metric(
        "tailsample_decision_lag_seconds",
        "histogram",
        ("processor",),
        "How late decisions came past their due time (decided - due)",
    ),
    Metric(
        "tailsample_kafka_paused",
        "gauge",
        ("receiver",),
        "1 while consumption is paused at max_uncommitted_messages",
    ),
    Metric("otelcol_process_uptime_total", "counter", (), "Uptime of the process (s)"),
    Metric("otelcol_process_memory_rss", "gauge", (), "Total physical memory (resident set size) (bytes)"),
    Metric(
        "otelcol_processor_tail_sampling_sampling_decision_timer_latency",
        "histogram",
        ("processor",),
        "Latency (ms) of each run of the sampling decision timer",
    ),
)


def engine_gauges() -> frozenset[str]:
    """The engine stats that are levels; every other stat is a counter."""
    return frozenset(s.key for s in ENGINE_STATS if s.kind == "gauge")


def engine_stat(key: str) -> EngineStat | None:
    return _BY_KEY.get(key)


_BY_KEY = {s.key: s for s in ENGINE_STATS}
