"""The tail-sampling engine: OTLP bytes in, whole traces buffered, policies decide, kept spans out as OTLP bytes.

All the work happens in the Rust core (`tailsample._native`), with the GIL released, so several Python threads
may feed one engine at once. This wrapper supplies the clock and keeps the API typed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from tailsample import _native
from tailsample.archive import SUBDIRECTORY_PREFIX, Recovered, parse_trace_id
from tailsample.config import Config
from tailsample.errors import ConfigError, TailsampleError
from tailsample.storage import FileStorage

KeptPayload = _native.KeptPayload
"""One payload of kept spans as it leaves the engine: `payload` (ExportTraceServiceRequest bytes), `spans` and
`resource_spans` (what it holds, counted by the core: no need to decode it again). Immutable."""


@dataclass(frozen=True)
class Ingested:
    """What `Engine.ingest_report` took of one payload."""

    spans: int
    """Spans taken."""
    rejected_spans: int = 0
    """Spans rejected alone, the rest of the payload taken (an OTLP receiver answers them as a partial
    success): spans without a usable trace ID (absent, empty, not 16 bytes, all zeros), spans with a span,
    parent or link ID of the wrong length, and spans nested deeper than the 64 protobuf message levels a request
    may hold (in their attributes, events or links, or their resource's or scope's attributes)."""
    rejection: str = ""
    """Why, and where, the first of them was rejected."""
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    """The rejected spans per reason (`REJECT_REASONS`), only the reasons seen."""


@dataclass(frozen=True)
class TakenMessages:
    """What `Engine.ingest_messages` took of a Kafka consumer's batch, its bookkeeping grouped by runs of one
    partition (a consumer's batch comes in such runs), not per message."""

    taken: int
    """How many of the messages given were dealt with: all, unless `stopped`; the caller hands back the rest."""
    spans: int
    """Spans taken."""
    runs: list[tuple[str, int, int, int, bytes]]
    """(topic, partition, end offset, messages, trace IDs) per run of consecutive messages of one partition: the
    end offset is the one after the run's last message (what a commit sends); the distinct trace IDs, 16 bytes
    each, concatenated. Malformed messages are in the count, with no IDs."""
    rejected: list[tuple[str, int, int, Exception]]
    """(topic, partition, offset, DecodeError) of each message that is not OTLP protobuf (skipped)."""
    events: list[Any]
    """The `error()` of the messages that carry one instead of a value (partition EOF and such)."""
    stopped: TailsampleError | None = None
    """The error that refused message `taken` (a BackpressureError): nothing of it, or after it, was taken."""


REJECT_REASONS = ("too_deep", "invalid_trace_id", "id_length", "wire_type")
"""Why a span is rejected alone: the `reason` label of `tailsample_engine_spans_rejected_total`."""


@dataclass(frozen=True)
class RedSeries:
    """One series of the RED metrics: spans of one (service, span name, kind, status code), before sampling.

    The overflow series (`overflow` true, empty names) holds the spans of every key past `max_series`.
    """

    service: str
    span_name: str
    kind: int
    status_code: int
    overflow: bool
    calls: int
    errors: int
    duration_sum: float
    """Seconds."""
    bucket_counts: tuple[int, ...]
    """Spans per duration bucket (not cumulative); the last one is above the last bound."""


@dataclass(frozen=True)
class RedMetrics:
    """Rate, errors and duration of every span the engine took, before sampling (`tailsample.red_metrics`)."""

    bounds: tuple[float, ...]
    """Upper bounds of the duration buckets, in seconds (inclusive, as Prometheus `le`)."""
    series: tuple[RedSeries, ...]


# The propagation-gap report (`Engine.gaps()`; `tailsample.incident.gaps` merges, audits files and prints it).
class GapPair(TypedDict):
    """Calls from one service to one destination, as the calling spans name it."""

    source: str
    destination: str
    """The service behind the addresses called when it is known, else as the calling spans name it."""
    addresses: list[str]
    """The addresses (`host:port`) the calls named, when they named addresses."""
    callee: str | None
    """`service.name` of a SERVER/CONSUMER span seen answering this pair, if any."""
    destination_traced: bool
    """The destination is a traced service (seen as a `service.name`, or answering a call): its gaps are context
    dropped on the way. Otherwise it may be an external API or an uninstrumented service."""
    calls: int
    gaps: int
    """Calls with no SERVER/CONSUMER child in their trace."""
    gap_traces: int
    examples: list[str]
    """Trace IDs with a gap for this pair: kept ones first, then most recent first."""
    kept_examples: list[str]
    """Those of `examples` that were kept (a backend has them)."""
    overflow: bool
    """The calls of every pair past `max_pairs` (source and destination empty)."""
    unnamed: bool
    """Calls that named no destination and that nobody answered (destination `(unnamed)`)."""


class BrokenService(TypedDict):
    """Spans of one service whose parent never arrived."""

    service: str
    traces: int
    orphan_spans: int
    examples: list[str]
    kept_examples: list[str]


class GapReport(TypedDict):
    traces_audited: int
    traces_with_gaps: int
    traces_broken: int
    calls: int
    gaps: int
    orphan_spans: int
    overflow_calls: int
    unnamed_calls: int
    """Calls carrying no usable destination attribute (those answered are named by their callee)."""
    unnamed_gaps: int
    """Of those, the ones nobody answered: counted under the pairs (caller → `(unnamed)`)."""
    names_overflowed: int
    addresses_overflowed: int
    pairs: list[GapPair]
    """Worst first: most gaps, then most calls; the overflow pair last."""
    broken: list[BrokenService]
    addresses: dict[str, str]
    """Address (`host:port`) → the service whose SERVER/CONSUMER spans last described themselves by it."""


@dataclass(frozen=True)
class ConfigVersion:
    """Which configuration an engine decides by: `number` counts from 1 per engine, `hash` (16 hex digits) is the
    same for the same configuration anywhere."""

    number: int
    hash: str


@dataclass(frozen=True)
class Reloaded:
    """What `Engine.reload` did: the version now live, whether anything changed, buffered traces re-folded."""

    version: ConfigVersion
    changed: bool
    traces_refolded: int


class Engine:
    """A tail-sampling engine for one configuration.

    `now` is seconds on the engine's clock, `time.monotonic()` unless given, so tests and replays control time.
    Time never runs backwards inside the engine: a `now` earlier than one already seen counts as that one.

    With `storage` (the configuration's `tail_storage`), the buffer is on disk under
    `storage.component_directory("processor", component_id)`: opening replays it (see `replay_report`), every
    payload taken is written before `ingest` returns, and the clock is `time.time()`, which goes on across
    restarts. Call `acknowledge(round)` once a round's payloads (`poll_round`) are exported.

    With `archive` (the `file_storage` extension `tailsample.archive.storage` names), every trace decided not
    kept is written to the archive of dropped traces under `archive.directory / "archive_<component_id>"`, and
    `recover` finds it by trace ID; the clock is then `time.time()` too (archive times are wall-clock times).
    """

    def __init__(self, config: Config, *, storage: FileStorage | None = None,
                 component_id: str = "tail_sampling", now: float | None = None,
                 archive: FileStorage | None = None) -> None:
        self.config = config
        self.storage = storage
        self.archive_directory: Path | None = None
        if storage is None:
            if config.tail_storage is not None:
                raise ConfigError(f"tail_storage names {config.tail_storage!r}: give its settings, "
                                  "Engine(config, storage=FileStorage(directory)), or serve the whole collector "
                                  "configuration", "tail_storage")
            self._clock = time.monotonic
            self._native = _native.NativeEngine(config._native)
        else:
            self._clock = time.time
            self.directory = storage.component_directory("processor", component_id)
            self._native = _native.NativeEngine(
                config._native, str(self.directory), storage.budget, storage.segment_size, storage.sync,
                self._clock() if now is None else now)
        settings = config.archive
        if archive is None and settings is not None:
            raise ConfigError(f"tailsample.archive.storage names {settings.storage!r}: give its settings, "
                              "Engine(config, archive=FileStorage(directory)), or serve the whole collector "
                              "configuration", "tailsample.archive.storage")
        if archive is not None:
            if settings is None:
                raise ConfigError("an archive was given but the configuration has no tailsample.archive",
                                  "tailsample.archive")
            self._clock = time.time
            self.archive_directory = archive.directory / f"{SUBDIRECTORY_PREFIX}{_safe_id(component_id)}"
            _native.archive_attach(self._native, str(self.archive_directory), settings.max_bytes,
                                   settings.max_age, archive.segment_size)

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    @property
    def native(self) -> _native.NativeEngine:
        """The Rust engine, for the Rust OTLP/HTTP server to feed without the GIL."""
        return self._native

    @property
    def wall_clock(self) -> bool:
        """Whether the engine's clock is `time.time()` (tail storage, archive), not `time.monotonic()`."""
        return self._clock is time.time

    def ingest(self, payload: bytes | bytearray | memoryview, *, now: float | None = None) -> int:
        """Take one ExportTraceServiceRequest (protobuf bytes), whole or not at all; return the spans taken: all of
        them but the spans rejected alone (see `Ingested.rejected_spans` and `ingest_report`).

        Raises `DecodeError` for a malformed payload and `BackpressureError` when a limit is reached; in both
        cases nothing of the payload was taken and every buffered trace is unaffected.
        """
        if not isinstance(payload, bytes):  # bytearray, memoryview: the engine reads immutable bytes only
            payload = bytes(payload)
        return self._native.ingest(payload, self._now(now))

    def ingest_report(self, payload: bytes | bytearray | memoryview, *, now: float | None = None) -> Ingested:
        """`ingest`, also saying which spans were rejected alone (what an OTLP partial success reports)."""
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        spans, rejected, why, by_reason = self._native.ingest_report(payload, self._now(now))
        return Ingested(spans, rejected, why, dict(by_reason)) if rejected else Ingested(spans)

    def oversized_spans(self) -> tuple[int, tuple[str, int] | None]:
        """Kept spans larger than `tailsample.max_payload_bytes` by themselves so far (each left alone in a payload
        over the limit: the `spans_oversized` stat), and the last one's (trace ID, bytes), None if none."""
        return self._native.oversized_spans()

    def ingest_traces(self, payload: bytes | bytearray | memoryview, *,
                      now: float | None = None) -> tuple[int, list[bytes]]:
        """`ingest`, also returning the distinct 16-byte trace IDs the payload held (a Kafka receiver follows them
        to commit a message once its traces are decided)."""
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        spans, ids = self._native.ingest_traces(payload, self._now(now))
        return spans, [ids[i:i + 16] for i in range(0, len(ids), 16)]

    def ingest_batch(self, payloads: list[bytes], *,
                     now: float | None = None) -> list[tuple[int, list[bytes]] | TailsampleError]:
        """Several payloads in one call (the GIL released once), each taken whole or not at all, in order. One
        result per payload tried: `(spans, trace IDs)` when taken; the `DecodeError` of a malformed one (skipped);
        the `BackpressureError` that stopped the batch, always last: the payloads after it were not tried."""
        out: list[tuple[int, list[bytes]] | TailsampleError] = []
        for r in self._native.ingest_batch(payloads, self._now(now)):
            if isinstance(r, TailsampleError):
                out.append(r)
            elif isinstance(r, tuple):
                spans, ids = r
                out.append((spans, [ids[i:i + 16] for i in range(0, len(ids), 16)]))
            else:  # an internal error: raise it as ingest would
                raise r
        return out

    def ingest_messages(self, messages: list[Any], *, now: float | None = None) -> TakenMessages:
        """A confluent-kafka consumer's batch of `Message` objects in one call: the binding reads the messages and
        ingests their values (each whole or not at all, in order, the GIL released once), and hands back the
        bookkeeping per run of one partition. Stops at the first message refused (backpressure)."""
        taken, spans, runs, rejected, events, stopped = self._native.ingest_messages(messages, self._now(now))
        if stopped is None or isinstance(stopped, TailsampleError):
            return TakenMessages(taken, spans, runs, rejected, events, stopped)
        raise stopped  # an internal error: raise it as ingest would

    def first_buffered(self, trace_ids: bytes, sizes: list[int]) -> list[int]:
        """For runs of 16-byte trace IDs, concatenated (`sizes[i]` IDs in run i): per run, the position of its
        first ID still buffered, undecided (`sizes[i]` when none is). The lookups of a run stop there."""
        return self._native.first_buffered(trace_ids, sizes)

    def buffered(self, trace_ids: list[bytes]) -> list[bool]:
        """Which of these 16-byte trace IDs are buffered, undecided."""
        return [flag == 1 for flag in self._native.buffered(_join_ids(trace_ids))]

    def forget(self, trace_ids: list[bytes]) -> int:
        """Forget these buffered traces undecided, spans and all (counted in `traces_forgotten`); returns how many
        were buffered. For an instance giving up a Kafka partition: the new owner rebuilds them from the log."""
        return self._native.forget(_join_ids(trace_ids))

    def poll(self, *, now: float | None = None) -> list[bytes]:
        """Decide every trace that is due; return the kept spans (and late spans of kept traces) as payloads."""
        return self._native.poll(self._now(now))

    def flush(self, *, now: float | None = None) -> list[bytes]:
        """Decide everything pending, as at shutdown (or drop it, with `drop_pending_traces_on_shutdown`)."""
        return self._native.flush(self._now(now))

    def poll_round(self, *, now: float | None = None) -> tuple[int, list[bytes]]:
        """`poll`, with the round's number: `acknowledge` it once its payloads are exported."""
        return self._native.poll_round(self._now(now))

    def flush_round(self, *, now: float | None = None) -> tuple[int, list[bytes]]:
        """`flush`, with the round's number."""
        return self._native.flush_round(self._now(now))

    def poll_kept(self, *, now: float | None = None) -> list[KeptPayload]:
        """`poll`, each payload a `KeptPayload` carrying its span count."""
        return self._native.poll_round_kept(self._now(now))[1]

    def flush_kept(self, *, now: float | None = None) -> list[KeptPayload]:
        """`flush`, each payload a `KeptPayload` carrying its span count."""
        return self._native.flush_round_kept(self._now(now))[1]

    def now(self) -> float:
        """The engine's clock (`time.monotonic()`, or `time.time()` with tail storage or an archive), in seconds."""
        return self._clock()

    def next_due(self) -> tuple[float | None, float]:
        """`(next due, arrival wait)` in seconds: when the next `poll_round` has work, on the engine's clock
        (`-inf`: at once, late spans to send or dropped traces to archive; None: nothing waits), and the soonest
        a trace taken from now on can be due. Cheap (no thread hop, no allocation): a decision loop asks it each
        round and sleeps while nothing is due."""
        return _native.engine_next_due(self._native)

    def poll_round_kept(self, *, now: float | None = None) -> tuple[int, list[KeptPayload]]:
        """`poll_round`, each payload a `KeptPayload` carrying its span count."""
        return self._native.poll_round_kept(self._now(now))

    def flush_round_kept(self, *, now: float | None = None) -> tuple[int, list[KeptPayload]]:
        """`flush_round`, each payload a `KeptPayload` carrying its span count."""
        return self._native.flush_round_kept(self._now(now))

    def acknowledge(self, round_: int) -> bool:
        """Round `round_` and every one before it are exported (or safely queued): tail storage no longer needs
        their kept spans and may delete whole segments. False without tail storage, or for an unknown or already
        acknowledged round. Raises `StorageError` when the acknowledgement cannot be written."""
        return self._native.acknowledge(round_)

    def replay_report(self) -> dict[str, Any] | None:
        """What opening tail storage found and did: `duration` (s), `payloads`, `traces_pending` (buffered again
        with their first-seen times), `traces_resent`/`spans_resent` (kept before the restart, perhaps not
        exported: sent again, possible duplicates), `spans_covered` (exported and acknowledged, not replayed),
        `truncations` (torn or corrupt tails cut off: segment, file, offset, bytes, reason). None without tail
        storage."""
        return self._native.replay_report()

    def stats(self) -> dict[str, int]:
        """Counters and gauges: spans_received, traces_sampled, traces_in_memory, traces_evicted, ..."""
        return self._native.stats()

    def decision_lag_histogram(self) -> list[tuple[float, int]]:
        """How late decisions came past their due time: (bucket upper bound in seconds, count), cumulative
        nowhere; the last bound is inf. Buckets from 0 (on time) through 100 µs ... 10 s."""
        return self._native.decision_lag_histogram()

    def decision_lag_quantile(self, q: float) -> float | None:
        """The upper bound (seconds) of the bucket holding quantile `q` of the decision lag; None before any
        decision."""
        return self._native.decision_lag_quantile(q)

    def policy_stats(self) -> dict[str, dict[str, int]]:
        """Per top-level policy, in order: traces it voted `sampled`, `not_sampled`, `dropped` (drop policies), its
        `errors` (no vote), and `decided` (kept traces it was the first, in order, to sample)."""
        return self._native.policy_stats()

    def explain(self, trace_id: str | bytes) -> dict[str, Any]:
        """What the engine knows of a trace: pending, decided (outcome, every policy's vote, times, late spans),
        only in a decision cache, or unknown. `trace_id` is 32 hex digits or 16 bytes; a malformed one raises
        ValueError. See `tailsample.incident.explain` for the keys, and `tailsample.incident.explain.describe`
        for text."""
        if isinstance(trace_id, (bytes, bytearray, memoryview)):
            raw = bytes(trace_id)
            if len(raw) != 16:
                raise ValueError(f"a trace ID is 16 bytes, got {len(raw)}")
            trace_id = raw.hex()
        answer = self._native.explain(trace_id)
        verdict = _native.shadow_verdict(self._native, trace_id) if answer.get("state") == "decided" else None
        if verdict is not None:
            answer["shadow"] = {"outcome": verdict[0], "decided_by": verdict[1]}
        if (self.archive_directory is not None and answer.get("state") != "pending"
                and answer.get("outcome") != "sampled"):
            answer["archive"] = self._archive_answer(trace_id)
        return answer

    def shadow_report(self, disagreements: int | None = None) -> dict[str, Any] | None:
        """The shadow policies (`tailsample.shadow`) beside the live ones; None without them. Keys: `policies`
        (per shadow policy: sampled, not_sampled, dropped, errors, decided), `traces_judged`, `spans_judged`,
        `bytes_judged`, `live_only`/`shadow_only`/`both` (traces, spans, bytes kept), `errors_lost_by_shadow`,
        `slow_lost_by_shadow` (and `..._by_live`), `window_seconds` (first to last judgement, engine clock),
        `slow_threshold_seconds`, `disagreements` (the latest traces judged differently, oldest first: trace_id,
        live, live_policy, shadow, shadow_policy, spans, bytes, error, slow, duration_seconds, decided_at),
        `disagreements_held`, `disagreements_forgotten`, `disagreements_bytes`. `disagreements`: the newest this
        many only (default all)."""
        if disagreements is None:
            text = _native.shadow_report(self._native)
        else:
            text = _native.shadow_report(self._native, max(0, disagreements))
        if text is None:
            return None
        report: dict[str, Any] = json.loads(text)
        return report

    def _archive_answer(self, trace_id: str) -> dict[str, Any]:
        """Whether a trace not kept can be recovered, and until when (at the latest: `max_age` after it was
        archived; sooner if `max_size_mib` pushes its segment out first)."""
        found = _native.archive_recover(self._native, [parse_trace_id(trace_id)]) or []
        settings = self.config.archive
        if not found or settings is None:
            return {"recoverable": False}
        newest = max(at for _, at, _ in found)
        return {"recoverable": True, "parts": len(found), "archived_at": newest,
                "until": newest + settings.max_age}

    def red_metrics(self) -> RedMetrics | None:
        """RED metrics over every span taken, before sampling; None unless `tailsample.red_metrics` is on."""
        got = self._native.red_metrics()
        if got is None:
            return None
        bounds, series = got
        return RedMetrics(
            bounds=tuple(bounds),
            series=tuple(RedSeries(**{**s, "bucket_counts": tuple(s["bucket_counts"])}) for s in series),
        )

    def gaps(self) -> GapReport | None:
        """The propagation-gap audit of every trace decided so far (see `tailsample.incident.gaps`); None when
        `tailsample.propagation_audit` is off. Pairs come worst first; the report is JSON-safe."""
        got = self._native.gaps()
        return None if got is None else GapReport(**got)  # type: ignore[typeddict-item]

    def recent_kept(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to `limit` recently kept traces still held for `show` (`tailsample.recent_kept_bytes`), newest
        first: `trace_id`, `decided_at` (seconds on the engine clock), `span_count`."""
        return self._native.recent_kept(max(0, limit))

    def recover(self, trace_ids: list[str]) -> list[Recovered]:
        """Every archived part of each dropped trace (32 hex digits each), its spans marked
        `tailsample.recovered`; an ID never archived, or aged out, has none. Raises ConfigError without an
        archive, ValueError for a malformed ID."""
        ids = [parse_trace_id(t) for t in trace_ids]
        got = _native.archive_recover(self._native, ids)
        if got is None:
            raise ConfigError("no archive: configure tailsample.archive", "tailsample.archive")
        return [Recovered(tid.hex(), at, payload) for tid, at, payload in got]

    def archive_stats(self) -> dict[str, Any] | None:
        """The archive of dropped traces: `bytes`, `max_bytes`, `traces`, `oldest` (Unix s, None when empty),
        `max_age` (s), `index_memory_bytes`, `traces_written`, `bytes_raw` (the span, resource and scope bytes
        stored, before compression), `traces_refused_budget`, `traces_overflowed` (not archived: the stash
        between rounds was full), `segments_removed_size`/`_age`, `lookups`, `lookups_found`, `truncations`.
        None without an archive."""
        return _native.archive_report(self._native)

    def kept_trace(self, trace_id: str) -> list[bytes] | None:
        """A recently kept trace's spans as they left the engine, as OTLP payloads; None when it is not held
        (never kept, or pushed out of the recent-kept buffer). A malformed ID raises ValueError."""
        return self._native.kept_trace(trace_id)

    # ---- live reload ----------------------------------------------------------------------------------------------

    def reload(self, config: Config) -> Reloaded:
        """Swaps in `config` at once: buffered traces stay and are judged by its policies when due; decision
        caches stay; stateful policies start fresh. Raises ConfigError, changing nothing, when a setting that
        cannot change live differs (num_traces, num_shards, decision_cache, tail_storage,
        tailsample.decision_log_size, recent_kept_bytes, red_metrics, propagation_audit: named in the error)."""
        number, digest, changed, refolded = self._native.reload(config._native)
        if changed:
            self.config = config
        return Reloaded(ConfigVersion(number, digest), changed, refolded)

    def check_reload(self, config: Config) -> None:
        """Raises the ConfigError `reload(config)` would raise, changing nothing."""
        self._native.check_reload(config._native)

    @property
    def config_version(self) -> ConfigVersion:
        """The live configuration's version: 1 at start, one more per reload that changed something."""
        number, digest = self._native.config_version()
        return ConfigVersion(number, digest)

    def __repr__(self) -> str:
        s = self.stats()
        return (f"Engine(policies={self.config.policy_names!r}, in_memory={s['traces_in_memory']}, "
                f"sampled={s['traces_sampled']})")


def _safe_id(component_id: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in component_id)


def _join_ids(trace_ids: list[bytes]) -> bytes:
    for tid in trace_ids:
        if len(tid) != 16:
            raise ValueError(f"a trace ID is 16 bytes, got {len(tid)}")
    return b"".join(trace_ids)


def split_by_trace(payload: bytes) -> list[tuple[bytes, bytes]]:
    """One payload per trace, as (16-byte trace ID, ExportTraceServiceRequest bytes), in order of first appearance:
    what the collector's Kafka exporter writes with `partition_traces_by_id`. Raises `DecodeError`."""
    return _native.split_by_trace(payload)


def attribute_keys(payload: bytes, max_examples: int) -> tuple[
        int, int, list[tuple[str, str, int, list[tuple[str, int]], list[str]]]]:
    """The attribute keys of one payload, counted by the engine's scan: (spans, resources, rows), one row per key and
    place in order of first appearance: (`span` or `resource`, key, count, [(value type, count)], the first
    `max_examples` distinct examples). Spans the engine would reject alone are not counted. Raises `DecodeError`."""
    return _native.attribute_keys(payload, max_examples)


def inspect_payload(payload: bytes) -> dict[str, int]:
    """Validate a payload without an engine and describe it.

    Keys: spans, traces, resource_spans, min_start_unix_nano, max_end_unix_nano.
    """
    return _native.inspect_payload(payload)


__all__ = ["REJECT_REASONS", "ConfigVersion", "Engine", "Ingested", "KeptPayload", "Reloaded", "TakenMessages",
           "attribute_keys", "inspect_payload", "split_by_trace"]
