//! `tailsample._native`: the PyO3 binding of tailsample-core. It fills the core's inputs, releases the GIL
//! while the core works, and maps the core's one error type to the Python exceptions of `tailsample.errors`.
//! Nothing else lives here.

use std::panic::{catch_unwind, AssertUnwindSafe};

mod memory;

#[global_allocator]
static GLOBAL: memory::CountingMiMalloc = memory::CountingMiMalloc;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::Arc;
use tailsample_core::otlp::encode::Kept;
use tailsample_core::store::stats::LAG_BOUNDS_NS;
use tailsample_core::store::Knowledge;

use std::sync::Mutex;

use tailsample_core::durable::{
    Budget, LogOptions, PersistentQueue, QueueError, StorageOptions, SyncPolicy,
};
use tailsample_core::{seconds_to_ns, Engine, EngineConfig, Error};

/// The Python exception class (in `tailsample/errors.py`) of each core error kind (`tailsample_core::error::KINDS`),
/// and of an internal error (a panic). `error_classes()` hands this table to the test that keeps both sides in step.
const ERROR_CLASSES: &[(&str, &str)] = &[
    ("decode", "DecodeError"),
    ("config", "ConfigError"),
    ("backpressure", "BackpressureError"),
    ("storage", "StorageError"),
    (INTERNAL, "TailsampleError"),
];
const INTERNAL: &str = "internal";

fn error_class<'py>(py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyAny>> {
    let name = ERROR_CLASSES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("TailsampleError", |(_, class)| class);
    py.import("tailsample.errors")?.getattr(name)
}

/// Maps a core error to its Python exception, with the attributes its class documents.
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let message = e.to_string();
    let made = (|| -> PyResult<PyErr> {
        let class = error_class(py, e.kind())?;
        let value = match e {
            Error::Decode { field, offset, .. } => class.call1((message, field, offset))?,
            Error::Config { path, .. } => class.call1((message, path))?,
            Error::Backpressure { limit, .. } => class.call1((message, limit))?,
            Error::Storage { path, .. } => class.call1((message, path))?,
        };
        Ok(PyErr::from_value(value))
    })();
    made.unwrap_or_else(|err| err)
}

/// Runs core work without the GIL; a panic (a bug, never expected) becomes a TailsampleError, not an abort.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            internal(py, &what)
        })
}

fn internal(py: Python<'_>, what: &str) -> PyErr {
    error_class(py, INTERNAL)
        .and_then(|cls| {
            cls.call1((format!(
                "internal error in the tailsample engine (please report): {what}"
            ),))
        })
        .map_or_else(|e| e, PyErr::from_value)
}

/// A core result as Python data through its `serde::Serialize` (structs become dicts, sequences lists).
fn to_python<'py, T: serde::Serialize + ?Sized>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(PyErr::from)
}

fn now_ns(py: Python<'_>, now: f64) -> PyResult<i64> {
    seconds_to_ns(now).map_err(|_| {
        let _ = py;
        PyValueError::new_err(format!("now must be a finite number of seconds, got {now}"))
    })
}

/// A validated configuration (the `tail_sampling` block as JSON text).
#[pyclass(frozen, module = "tailsample._native")]
struct NativeConfig {
    config: EngineConfig,
}

#[pymethods]
impl NativeConfig {
    #[new]
    fn new(py: Python<'_>, json: &str) -> PyResult<Self> {
        EngineConfig::from_json(json)
            .map(|config| NativeConfig { config })
            .map_err(|e| to_py(py, e))
    }

    #[getter]
    fn policy_names(&self) -> Vec<String> {
        self.config
            .policy_names()
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[getter]
    fn decision_wait(&self) -> f64 {
        self.config.decision_wait_ns as f64 / 1e9
    }

    fn to_json(&self) -> String {
        self.config.normalized().to_string()
    }
}

/// The bytes one storage directory may hold, shared by every log in it (tail storage, exporter queues).
#[pyclass(frozen, module = "tailsample._native")]
struct NativeBudget {
    budget: Arc<Budget>,
}

#[pymethods]
impl NativeBudget {
    #[new]
    fn new(max_bytes: u64) -> Self {
        NativeBudget {
            budget: Budget::new(max_bytes),
        }
    }

    #[getter]
    fn used(&self) -> u64 {
        self.budget.used()
    }

    #[getter]
    fn max_bytes(&self) -> u64 {
        self.budget.max_bytes
    }
}

fn sync_policy(name: &str) -> PyResult<SyncPolicy> {
    SyncPolicy::parse(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "sync must be one of none, batch, payload; got {name:?}"
        ))
    })
}

/// An exporter's persistent sending queue (`sending_queue.storage`).
#[pyclass(frozen, module = "tailsample._native")]
struct NativeQueue {
    queue: Mutex<PersistentQueue>,
    recovered: (u64, u64, f64, Vec<(u64, u64, String)>),
}

fn queue_error(py: Python<'_>, e: QueueError, dir: &str) -> PyErr {
    match e {
        QueueError::Full { .. } | QueueError::StorageFull { .. } => to_py(
            py,
            Error::Backpressure {
                limit: "sending_queue",
                message: e.to_string(),
            },
        ),
        QueueError::Io(e) => storage_error(py, dir, e),
    }
}

fn storage_error(py: Python<'_>, dir: &str, e: std::io::Error) -> PyErr {
    to_py(
        py,
        Error::Storage {
            path: dir.to_string(),
            message: e.to_string(),
        },
    )
}

impl NativeQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, PersistentQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl NativeQueue {
    /// Opens (or creates) the queue in `directory`; items not done before are pending again.
    #[new]
    #[pyo3(signature = (directory, budget, max_items, segment_bytes=16 << 20, sync="none"))]
    fn new(
        py: Python<'_>,
        directory: std::path::PathBuf,
        budget: &NativeBudget,
        max_items: usize,
        segment_bytes: u64,
        sync: &str,
    ) -> PyResult<Self> {
        let opts = LogOptions {
            segment_bytes: segment_bytes.max(4096),
            budget: budget.budget.clone(),
            sync: sync_policy(sync)?,
        };
        let dir = directory.display().to_string();
        let (queue, r) = run(py, || PersistentQueue::open(&directory, opts, max_items))?
            .map_err(|e| storage_error(py, &dir, e))?;
        let cuts = r
            .truncations
            .iter()
            .map(|t| (t.offset, t.bytes, t.file.display().to_string()))
            .collect();
        Ok(NativeQueue {
            queue: Mutex::new(queue),
            recovered: (r.items, r.bytes, r.duration_ns as f64 / 1e9, cuts),
        })
    }

    /// (items pending again, their bytes, seconds the recovery took, [(offset, bytes cut, file)]).
    #[getter]
    fn recovered(&self) -> (u64, u64, f64, Vec<(u64, u64, String)>) {
        self.recovered.clone()
    }

    /// Appends an item; with `sync: batch`, also waits for its fsync. Returns its sequence number. Raises
    /// BackpressureError when the queue or the directory is full (nothing written), StorageError on I/O errors.
    fn push(&self, py: Python<'_>, payload: &[u8]) -> PyResult<u64> {
        let dir = self.lock().dir().display().to_string();
        let r = run(py, || {
            let mut q = self.lock();
            let seq = q.push(payload)?;
            let point = q.sync_point();
            drop(q);
            if let Some(p) = point {
                p.wait().map_err(QueueError::Io)?;
            }
            Ok(seq)
        })?;
        r.map_err(|e| queue_error(py, e, &dir))
    }

    /// The oldest item not handed out yet, as (seq, KeptPayload), or None. The queue holds kept output only,
    /// whose counts the core reads back here (an item that does not decode, which its checksum makes
    /// unexpected, counts 0 spans and is still handed out).
    fn next_item(&self, py: Python<'_>) -> PyResult<Option<(u64, KeptPayload)>> {
        let dir = self.lock().dir().display().to_string();
        let item = run(py, || {
            self.lock().next_item().map(|item| {
                item.map(|(seq, payload)| {
                    let (spans, resource_spans) = tailsample_core::inspect(&payload)
                        .map_or((0, 0), |s| (s.spans as usize, s.resource_spans as usize));
                    (
                        seq,
                        Kept {
                            payload,
                            spans,
                            resource_spans,
                        },
                    )
                })
            })
        })?
        .map_err(|e| storage_error(py, &dir, e))?;
        Ok(item.map(|(seq, k)| {
            (
                seq,
                KeptPayload {
                    payload: PyBytes::new(py, &k.payload).unbind(),
                    spans: k.spans,
                    resource_spans: k.resource_spans,
                },
            )
        }))
    }

    /// Puts an item handed out back, in its place (to be handed out again).
    fn release(&self, seq: u64) -> bool {
        self.lock().release(seq)
    }

    /// The item is sent (or given up): it leaves the queue, and whole segments go once nothing needs them.
    fn done(&self, py: Python<'_>, seq: u64) -> PyResult<()> {
        let dir = self.lock().dir().display().to_string();
        run(py, || self.lock().done(seq))?.map_err(|e| storage_error(py, &dir, e))
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.lock().stats())
    }
}

#[pyclass(frozen, module = "tailsample._native")]
struct NativeEngine {
    engine: Engine,
}

fn payloads_to_list<'py>(py: Python<'py>, payloads: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, payloads.iter().map(|p| PyBytes::new(py, p)))
}

/// One payload of kept spans with the counts the core knows, so Python never decodes kept output to count it.
#[pyclass(frozen, get_all, module = "tailsample._native")]
struct KeptPayload {
    payload: Py<PyBytes>,
    spans: usize,
    resource_spans: usize,
}

#[pymethods]
impl KeptPayload {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "KeptPayload(<{} bytes>, spans={}, resource_spans={})",
            self.payload.bind(py).as_bytes().len(),
            self.spans,
            self.resource_spans
        )
    }
}

fn kept_to_list(py: Python<'_>, kept: Vec<Kept>) -> PyResult<Vec<KeptPayload>> {
    Ok(kept
        .into_iter()
        .map(|k| KeptPayload {
            payload: PyBytes::new(py, &k.payload).unbind(),
            spans: k.spans,
            resource_spans: k.resource_spans,
        })
        .collect())
}

#[pymethods]
impl NativeEngine {
    /// Without `directory`, an engine in memory; with it, tail storage there (replayed now, at `now`).
    #[new]
    #[pyo3(signature = (config, directory=None, budget=None, segment_bytes=64 << 20, sync="none", now=0.0))]
    fn new(
        py: Python<'_>,
        config: &NativeConfig,
        directory: Option<std::path::PathBuf>,
        budget: Option<&NativeBudget>,
        segment_bytes: u64,
        sync: &str,
        now: f64,
    ) -> PyResult<Self> {
        let cfg = config.config.clone();
        let Some(directory) = directory else {
            return Ok(NativeEngine {
                engine: Engine::new(cfg),
            });
        };
        let opts = StorageOptions {
            directory,
            segment_bytes: segment_bytes.max(4096),
            budget: budget.map_or_else(|| Budget::new(u64::MAX), |b| b.budget.clone()),
            sync: sync_policy(sync)?,
        };
        let now = now_ns(py, now)?;
        let engine = run(py, || Engine::open(cfg, &opts, now))?.map_err(|e| to_py(py, e))?;
        Ok(NativeEngine { engine })
    }

    /// What the replay at start found and did (None without tail storage); times in seconds.
    fn replay_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.engine
            .replay_report()
            .map(|r| to_python(py, r))
            .transpose()
    }

    /// `poll`, with the round's number, for `acknowledge` once its payloads are exported.
    fn poll_round<'py>(&self, py: Python<'py>, now: f64) -> PyResult<(u64, Bound<'py, PyList>)> {
        let now = now_ns(py, now)?;
        let (round, payloads) = run(py, || self.engine.poll_round(now))?;
        Ok((round, payloads_to_list(py, payloads)?))
    }

    fn flush_round<'py>(&self, py: Python<'py>, now: f64) -> PyResult<(u64, Bound<'py, PyList>)> {
        let now = now_ns(py, now)?;
        let (round, payloads) = run(py, || self.engine.flush_round(now))?;
        Ok((round, payloads_to_list(py, payloads)?))
    }

    /// `poll_round`, each payload a `KeptPayload` carrying its span count.
    fn poll_round_kept(&self, py: Python<'_>, now: f64) -> PyResult<(u64, Vec<KeptPayload>)> {
        let now = now_ns(py, now)?;
        let (round, kept) = run(py, || self.engine.poll_round_kept(now))?;
        Ok((round, kept_to_list(py, kept)?))
    }

    fn flush_round_kept(&self, py: Python<'_>, now: f64) -> PyResult<(u64, Vec<KeptPayload>)> {
        let now = now_ns(py, now)?;
        let (round, kept) = run(py, || self.engine.flush_round_kept(now))?;
        Ok((round, kept_to_list(py, kept)?))
    }

    /// Round `round` and those before it are exported: tail storage may give back their space.
    fn acknowledge(&self, py: Python<'_>, round: u64) -> PyResult<bool> {
        run(py, || self.engine.acknowledge(round))?.map_err(|e| to_py(py, e))
    }

    /// Takes one ExportTraceServiceRequest, whole or not at all; returns its number of spans.
    fn ingest(&self, py: Python<'_>, payload: &[u8], now: f64) -> PyResult<usize> {
        let now = now_ns(py, now)?;
        run(py, || self.engine.ingest(payload, now))?.map_err(|e| to_py(py, e))
    }

    /// `ingest`, also saying what was rejected alone: (spans taken, spans rejected, the first one's reason or "",
    /// [(reason label, spans)] for the reasons seen).
    #[allow(clippy::type_complexity)]
    fn ingest_report(
        &self,
        py: Python<'_>,
        payload: &[u8],
        now: f64,
    ) -> PyResult<(usize, usize, String, Vec<(&'static str, usize)>)> {
        let now = now_ns(py, now)?;
        let r = run(py, || self.engine.ingest_report(payload, now))?.map_err(|e| to_py(py, e))?;
        let by_reason = r
            .rejected_by_reason
            .iter()
            .map(|(reason, n)| (reason.label(), *n))
            .collect();
        Ok((
            r.spans,
            r.rejected_spans,
            r.rejection.unwrap_or_default(),
            by_reason,
        ))
    }

    /// (kept spans larger than max_payload_bytes so far, the last one's (trace ID as 32 hex digits, size) or None).
    fn oversized_spans(&self, py: Python<'_>) -> PyResult<(u64, Option<(String, usize)>)> {
        let (count, last) = run(py, || self.engine.oversized_spans())?;
        Ok((
            count,
            last.map(|(id, size)| {
                (
                    id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    size,
                )
            }),
        ))
    }

    /// `ingest`, also returning the distinct trace IDs the payload held, 16 bytes each, concatenated.
    fn ingest_traces<'py>(
        &self,
        py: Python<'py>,
        payload: &[u8],
        now: f64,
    ) -> PyResult<(usize, Bound<'py, PyBytes>)> {
        let now = now_ns(py, now)?;
        let mut ids = Vec::new();
        let spans = run(py, || self.engine.ingest_traces(payload, now, &mut ids))?
            .map_err(|e| to_py(py, e))?;
        Ok((spans, PyBytes::new(py, &ids_to_bytes(&ids))))
    }

    /// Several payloads in one call, the GIL released once (a Kafka receiver's batch of messages). Each is taken
    /// whole or not at all, in order; the call stops at the first payload refused with backpressure. Returns one
    /// result per payload tried: `(spans, trace IDs)` when taken, the DecodeError when malformed (and skipped),
    /// the BackpressureError when refused (always the last; the payloads after it were not tried).
    fn ingest_batch<'py>(
        &self,
        py: Python<'py>,
        payloads: Vec<Vec<u8>>,
        now: f64,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let now = now_ns(py, now)?;
        let results = run(py, || {
            let mut out: Vec<std::result::Result<(usize, Vec<u128>), Error>> = Vec::new();
            for p in &payloads {
                let mut ids = Vec::new();
                // Under group commit, one fsync for the whole batch, below.
                let r = self.engine.ingest_unsynced(p, now, &mut ids);
                let refused = matches!(r, Err(Error::Backpressure { .. }));
                out.push(r.map(|spans| (spans, ids)));
                if refused {
                    break;
                }
            }
            self.engine.sync_storage().map(|()| out)
        })?
        .map_err(|e| to_py(py, e))?;
        results
            .into_iter()
            .map(|r| match r {
                Ok((spans, ids)) => Ok((spans, PyBytes::new(py, &ids_to_bytes(&ids)))
                    .into_pyobject(py)?
                    .into_any()),
                Err(e) => Ok(to_py(py, e).into_value(py).into_bound(py).into_any()),
            })
            .collect()
    }

    /// One byte per trace ID of `ids` (16 bytes each, concatenated): 1 when it is buffered, undecided.
    fn buffered<'py>(&self, py: Python<'py>, ids: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let ids = bytes_to_ids(ids)?;
        let flags = run(py, || self.engine.buffered(&ids))?;
        let out: Vec<u8> = flags.into_iter().map(u8::from).collect();
        Ok(PyBytes::new(py, &out))
    }

    /// Forgets these buffered traces undecided (16-byte IDs, concatenated); returns how many were buffered.
    fn forget(&self, py: Python<'_>, ids: &[u8]) -> PyResult<usize> {
        let ids = bytes_to_ids(ids)?;
        run(py, || self.engine.forget(&ids))
    }

    fn poll<'py>(&self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyList>> {
        let now = now_ns(py, now)?;
        let payloads = run(py, || self.engine.poll(now))?;
        payloads_to_list(py, payloads)
    }

    fn flush<'py>(&self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyList>> {
        let now = now_ns(py, now)?;
        let payloads = run(py, || self.engine.flush(now))?;
        payloads_to_list(py, payloads)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = run(py, || self.engine.stats())?;
        let d = PyDict::new(py);
        for (k, v) in stats {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// (bucket upper bound in seconds, inf for the last; count) of how late decisions came past due.
    fn decision_lag_histogram(&self, py: Python<'_>) -> PyResult<Vec<(f64, u64)>> {
        let h = run(py, || self.engine.decision_lag())?;
        Ok(h.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                (
                    LAG_BOUNDS_NS
                        .get(i)
                        .map_or(f64::INFINITY, |&b| b as f64 / 1e9),
                    c,
                )
            })
            .collect())
    }

    /// The upper bound (seconds) of the lag bucket holding quantile `q`: None before any decision, inf above
    /// the last bound.
    fn decision_lag_quantile(&self, py: Python<'_>, q: f64) -> PyResult<Option<f64>> {
        let h = run(py, || self.engine.decision_lag())?;
        if h.counts.iter().all(|&c| c == 0) {
            return Ok(None);
        }
        Ok(Some(
            h.quantile_bound(q)
                .map_or(f64::INFINITY, |b| b as f64 / 1e9),
        ))
    }

    fn policy_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = run(py, || self.engine.policy_stats())?;
        let d = PyDict::new(py);
        for (name, counts) in stats {
            d.set_item(name, to_python(py, &counts)?)?;
        }
        Ok(d)
    }

    /// What the engine knows of a trace ID (32 hex digits): see `Engine.explain` in Python. Times are seconds
    /// on the engine clock; `clock` is the clock now.
    fn explain<'py>(&self, py: Python<'py>, trace_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_trace_id(trace_id)?;
        let explanation = run(py, || self.engine.explanation(id))?;
        to_python(py, &explanation)
    }

    /// Up to `limit` recently kept traces held for `show`, newest first: dicts of trace_id, decided_at
    /// (seconds on the engine clock) and span_count.
    fn recent_kept<'py>(&self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyAny>> {
        let kept = run(py, || self.engine.recent_kept(limit))?;
        to_python(py, &kept)
    }

    /// A recently kept trace's spans as OTLP payloads, or None when it is not held (any more).
    fn kept_trace<'py>(
        &self,
        py: Python<'py>,
        trace_id: &str,
    ) -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
        let id = parse_trace_id(trace_id)?;
        let payloads = run(py, || self.engine.kept_trace(id))?;
        Ok(payloads.map(|ps| ps.iter().map(|p| PyBytes::new(py, p)).collect()))
    }

    /// The propagation-gap audit as a dict (the shape `Engine.gaps()` documents), or None when off.
    fn gaps<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        run(py, || self.engine.gaps())?
            .map(|r| to_python(py, &r))
            .transpose()
    }

    /// RED metrics before sampling: (bucket bounds in seconds, series as dicts), or None when off.
    #[allow(clippy::type_complexity)]
    fn red_metrics<'py>(&self, py: Python<'py>) -> PyResult<Option<(Vec<f64>, Bound<'py, PyAny>)>> {
        let Some(series) = run(py, || self.engine.red_metrics())? else {
            return Ok(None);
        };
        let bounds = self
            .engine
            .config()
            .red_metrics
            .as_ref()
            .map(|r| r.buckets_ns.iter().map(|&b| b as f64 / 1e9).collect())
            .unwrap_or_default();
        let out = to_python(py, &series)?;
        Ok(Some((bounds, out)))
    }

    // Live reload (issue 22): kept together here.

    /// Swaps in `config` (see `Engine::reload`): (version number, version hash as 16 hex digits, whether
    /// anything changed, buffered traces re-folded). A ConfigError names the settings that cannot change live.
    fn reload(&self, py: Python<'_>, config: &NativeConfig) -> PyResult<(u32, String, bool, u64)> {
        let cfg = config.config.clone();
        let r = run(py, || self.engine.reload(cfg))?.map_err(|e| to_py(py, e))?;
        Ok((
            r.version.number,
            format!("{:016x}", r.version.hash),
            r.changed,
            r.traces_refolded,
        ))
    }

    /// Raises the ConfigError `reload(config)` would raise, changing nothing.
    fn check_reload(&self, py: Python<'_>, config: &NativeConfig) -> PyResult<()> {
        self.engine
            .check_reload(&config.config)
            .map_err(|e| to_py(py, e))
    }

    /// The live configuration's version: (number, hash as 16 hex digits).
    fn config_version(&self) -> (u32, String) {
        let v = self.engine.config_version();
        (v.number, format!("{:016x}", v.hash))
    }

    // Kafka receiver (issue 24): kept together here; the work is in `kafka_ingest` at the end of the file.

    /// A confluent-kafka consumer's batch of `Message` objects in one call, the GIL released once for all of
    /// them. See `kafka_ingest`.
    fn ingest_messages<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        now: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        kafka_ingest(py, &self.engine, messages, now)
    }

    /// For runs of trace IDs (16 bytes each, concatenated; `sizes[i]` IDs in run i): per run, the position of
    /// its first ID still buffered, undecided (`sizes[i]` when none is). One call for many runs of a Kafka
    /// receiver's bookkeeping, which asks again from that position: an ID already out is looked up once.
    fn first_buffered(
        &self,
        py: Python<'_>,
        ids: &[u8],
        sizes: Vec<usize>,
    ) -> PyResult<Vec<usize>> {
        let ids = bytes_to_ids(ids)?;
        if sizes.iter().sum::<usize>() != ids.len() {
            return Err(PyValueError::new_err(format!(
                "sizes add up to {}, but {} trace IDs were given",
                sizes.iter().sum::<usize>(),
                ids.len()
            )));
        }
        run(py, || {
            let mut at = 0;
            sizes
                .iter()
                .map(|&n| {
                    at += n;
                    self.engine.first_buffered(&ids[at - n..at])
                })
                .collect()
        })
    }
}

/// A trace ID as 32 hex digits (either case), or a ValueError naming what is wrong.
fn parse_trace_id(text: &str) -> PyResult<[u8; 16]> {
    let t = text.trim();
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PyValueError::new_err(format!(
            "a trace ID is 32 hexadecimal digits, got {text:?} ({} characters)",
            text.chars().count()
        )));
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    Ok(id)
}

/// Validates a payload and describes it (spans, traces, resource_spans, min start, max end).
#[pyfunction]
fn inspect_payload<'py>(py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let s = run(py, || tailsample_core::inspect(payload))?.map_err(|e| to_py(py, e))?;
    to_python(py, &s)
}

/// One payload per trace, `(16-byte trace ID, payload)`, traces in order of first appearance: what the
/// collector's Kafka exporter writes with `partition_traces_by_id`. Raises DecodeError like `ingest`.
#[pyfunction]
fn split_by_trace<'py>(
    py: Python<'py>,
    payload: &[u8],
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let parts = run(py, || tailsample_core::otlp::split::split_by_trace(payload))?
        .map_err(|e| to_py(py, e))?;
    Ok(parts
        .iter()
        .map(|(id, p)| (PyBytes::new(py, &id.to_be_bytes()), PyBytes::new(py, p)))
        .collect())
}

/// One attribute key at one place of a payload: (place, key, count, [(type, count)], examples).
type KeyRow = (&'static str, String, u64, Vec<(String, u64)>, Vec<String>);

/// The attribute keys of one payload for the attribute inventory (`otlp::attribute_keys`): (spans, resources,
/// rows in order of first appearance). Raises DecodeError like `ingest`.
#[pyfunction]
fn attribute_keys(
    py: Python<'_>,
    payload: &[u8],
    max_examples: usize,
) -> PyResult<(u64, u64, Vec<KeyRow>)> {
    let got = run(py, || {
        tailsample_core::otlp::attribute_keys::attribute_keys(payload, max_examples).map(|a| {
            let rows = a
                .keys
                .into_iter()
                .map(|k| {
                    let types = k
                        .types
                        .into_iter()
                        .map(|(t, n)| (t.into_owned(), n))
                        .collect();
                    let examples = k.examples.into_iter().map(|e| e.into_owned()).collect();
                    (k.place.name(), k.key.into_owned(), k.count, types, examples)
                })
                .collect();
            (a.spans, a.resources, rows)
        })
    })?;
    got.map_err(|e| to_py(py, e))
}

/// One gzip member of `data` at `level` (the OTLP/HTTP exporter's `compression: gzip`), without the GIL.
#[pyfunction]
fn gzip<'py>(py: Python<'py>, data: &[u8], level: u32) -> PyResult<Bound<'py, PyBytes>> {
    let z = run(py, || tailsample_core::gzip::gzip(data, level))?;
    Ok(PyBytes::new(py, &z))
}

fn ids_to_bytes(ids: &[u128]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

fn bytes_to_ids(bytes: &[u8]) -> PyResult<Vec<u128>> {
    if bytes.len() % 16 != 0 {
        return Err(PyValueError::new_err(format!(
            "trace IDs are 16 bytes each, concatenated; got {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| u128::from_be_bytes(c.try_into().expect("16 bytes")))
        .collect())
}

/// Converts one OTLP/JSON ExportTraceServiceRequest into protobuf bytes; raises DecodeError with the JSON path.
#[pyfunction]
fn otlp_json_to_proto<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let proto = run(py, || tailsample_core::otlp::json::json_to_proto(body))?
        .map_err(|e| json_error(py, e))?;
    Ok(PyBytes::new(py, &proto))
}

/// A JSON codec error in JSON's words: its path then the problem (`resourceSpans[0]...traceId: invalid ...`),
/// without the byte offset of protobuf errors (still in `.offset`, for invalid JSON).
fn json_error(py: Python<'_>, e: Error) -> PyErr {
    let Error::Decode {
        field,
        offset,
        message,
    } = e
    else {
        return to_py(py, e);
    };
    let text = if field.is_empty() {
        message
    } else {
        format!("{field}: {message}")
    };
    error_class(py, "decode")
        .and_then(|class| class.call1((text, field, offset)))
        .map_or_else(|err| err, PyErr::from_value)
}

/// A Go duration (`10s`, `1m30s`) in nanoseconds, read as the core reads `decision_wait`: the one parser of
/// durations for the whole configuration. Raises ValueError naming what is wrong.
#[pyfunction]
fn parse_go_duration(text: &str) -> PyResult<i64> {
    tailsample_core::config::node::parse_go_duration(text).map_err(PyValueError::new_err)
}

/// (core error kind, Python exception class name) for every kind and for internal errors: the table `to_py`
/// maps with, for the test that keeps Python and Rust in step.
#[pyfunction]
fn error_classes() -> Vec<(&'static str, &'static str)> {
    ERROR_CLASSES.to_vec()
}

/// Every kind the core's `Error` has (`tailsample_core::error::KINDS`).
#[pyfunction]
fn error_kinds() -> Vec<&'static str> {
    tailsample_core::error::KINDS.to_vec()
}

/// The Rust heap: `heap_bytes` live now (exact), `committed_bytes` and `peak_committed_bytes` mimalloc holds.
#[pyfunction]
fn memory_stats(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    to_python(py, &run(py, memory::allocator_stats)?)
}

/// Hands mimalloc's freed pages back to the system now (`mi_collect(true)`); returns `memory_stats()` after.
#[pyfunction]
fn memory_purge(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    to_python(py, &run(py, memory::purge)?)
}

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3): how long freed memory stays committed.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Long enough that a sampler reuses what it frees (purging within milliseconds made every new span
/// fault its memory in again: a fifth of the time in profiles); short enough that an idle process gives a
/// burst back, and positive, so `memory_purge` (the memory_limiter, when refusing) can force it: with -1,
/// mimalloc never schedules a purge and freed pages stay resident until exit.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;
/// mimalloc's `mi_option_allow_thp` (mimalloc.h, v3): whether it asks the kernel for transparent huge pages.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

// --- shadow policies (issue 22): kept apart so the binding's other changes merge cleanly -----------------

/// `tailsample.shadow`: the shadow report as JSON text (`ShadowReport::to_json`, the newest `disagreements` of
/// them), or None without a shadow set.
#[pyfunction]
#[pyo3(signature = (engine, disagreements=usize::MAX))]
fn shadow_report(
    py: Python<'_>,
    engine: &NativeEngine,
    disagreements: usize,
) -> PyResult<Option<String>> {
    let report = run(py, || engine.engine.shadow_report())?;
    let cfg = engine.engine.config();
    Ok(report.map(|r| {
        let slow = cfg.shadow.as_ref().map_or(0, |s| s.slow_threshold_ns);
        r.to_json(&cfg.policy_names(), slow, disagreements)
            .to_string()
    }))
}

/// The shadow verdict of a decided trace (32 hex digits) in the decision log: (outcome, deciding shadow
/// policy); None when the trace is not in the log or has no shadow verdict.
#[pyfunction]
fn shadow_verdict(
    py: Python<'_>,
    engine: &NativeEngine,
    trace_id: &str,
) -> PyResult<Option<(&'static str, Option<String>)>> {
    let id = parse_trace_id(trace_id)?;
    let Knowledge::Decided(r) = run(py, || engine.engine.explain(id))? else {
        return Ok(None);
    };
    let cfg = engine.engine.config();
    let names = cfg.shadow.as_ref().map(|s| &s.policies);
    Ok(r.shadow.unpack().map(|v| {
        let policy = v
            .policy
            .and_then(|i| names.and_then(|n| n.get(usize::from(i))))
            .map(|p| p.name.clone());
        (v.outcome.name(), policy)
    }))
}

// ---- OTLP/JSON written by the core (issue 20, one codec) ----

/// One protobuf ExportTraceServiceRequest as one line of OTLP/JSON, as the collector's file exporter writes
/// it; raises DecodeError naming the protobuf field and byte of malformed input.
#[pyfunction]
fn otlp_proto_to_json(py: Python<'_>, payload: &[u8]) -> PyResult<String> {
    run(py, || tailsample_core::otlp::json::proto_to_json(payload))?.map_err(|e| {
        let Error::Decode {
            field,
            offset,
            message,
        } = e
        else {
            return to_py(py, e);
        };
        let place = if field.is_empty() {
            format!("byte {offset}")
        } else {
            format!("{field}, byte {offset}")
        };
        let text = format!("not a protobuf ExportTraceServiceRequest: {message} ({place})");
        error_class(py, "decode")
            .and_then(|class| class.call1((text, field, offset)))
            .map_or_else(|err| err, PyErr::from_value)
    })
}

// ---- the service configuration read by the core's rules (issue 20, one configuration reader) ----

fn config_error(py: Python<'_>, e: Error) -> PyErr {
    let Error::Config { path, message } = e else {
        return to_py(py, e);
    };
    // The message alone: the Python reader adds the file's name and the YAML line.
    error_class(py, "config")
        .and_then(|class| class.call1((message, path)))
        .map_or_else(|err| err, PyErr::from_value)
}

/// One value of the service configuration at `path`, read by the rules of the tail_sampling block
/// (`config::node::read_value`). `want`: int, float (each at least `minimum`, default 0), bool, str,
/// required_str, choice (one of `choices`), duration (nanoseconds, not negative) or string_list. Raises
/// ConfigError(message, path), the message without the path.
#[pyfunction]
#[pyo3(signature = (path, value, want, minimum=None, choices=None))]
fn config_read<'py>(
    py: Python<'py>,
    path: &str,
    value: &Bound<'py, PyAny>,
    want: &str,
    minimum: Option<f64>,
    choices: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyAny>> {
    use tailsample_core::config::node::{read_value, Want};
    let min = minimum.unwrap_or(0.0);
    let want = match want {
        "int" => Want::Int { min: min as i64 },
        "float" => Want::Float { min },
        "bool" => Want::Bool,
        "str" => Want::Str,
        "required_str" => Want::RequiredStr,
        "choice" => Want::Choice(choices.unwrap_or_default()),
        "duration" => Want::Duration,
        "string_list" => Want::StringList,
        other => return Err(PyValueError::new_err(format!("unknown want {other:?}"))),
    };
    let value = config_value(path, value).map_err(|e| config_error(py, e))?;
    let got = read_value(path, &value, &want).map_err(|e| config_error(py, e))?;
    to_python(py, &got)
}

/// A YAML value as JSON, for the core's reader; what JSON cannot hold is an error, not a silent null.
fn config_value(path: &str, value: &Bound<'_, PyAny>) -> Result<serde_json::Value, Error> {
    if value.is_instance_of::<pyo3::types::PyFloat>() {
        let f: f64 = value.extract().unwrap_or(f64::NAN);
        if !f.is_finite() {
            return Err(Error::config(
                path,
                format!("expected a finite number, got {f}"),
            ));
        }
    }
    pythonize::depythonize(value).map_err(|e| {
        if value.is_instance_of::<pyo3::types::PyInt>() {
            return Error::config(path, format!("the number {value} is out of range"));
        }
        let kind = value
            .get_type()
            .name()
            .map_or_else(|_| "value".to_string(), |n| n.to_string());
        Error::config(
            path,
            format!("cannot read a YAML {kind} here ({e}); quote it to make it a string"),
        )
    })
}

/// Checks a mapping's keys at `path` against `known`, in the words of the tail_sampling block's reader;
/// raises ConfigError(message, path of the first unknown key).
#[pyfunction]
fn config_check_keys(
    py: Python<'_>,
    path: &str,
    keys: Vec<String>,
    known: Vec<String>,
) -> PyResult<()> {
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    tailsample_core::config::node::check_keys(path, &keys, &known).map_err(|e| config_error(py, e))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // See PURGE_DELAY_MS; the user's MIMALLOC_PURGE_DELAY wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide integer option of our own statically linked mimalloc.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // Huge pages cost a fresh process dearly and gain a warm one nothing measurable: with THP in `madvise` mode
    // each first touch zeroes (and may compact for) 2 MiB; a fresh instance draining a Kafka backlog spent 1.8-2.1
    // us per span ingesting against 1.1 with 4 KiB pages, the same 0.7-0.8 once warm (issue 24). The user's
    // MIMALLOC_ALLOW_THP wins.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<NativeConfig>()?;
    m.add_class::<NativeEngine>()?;
    m.add_class::<NativeBudget>()?;
    m.add_class::<NativeQueue>()?;
    m.add_class::<KeptPayload>()?;
    m.add_function(wrap_pyfunction!(inspect_payload, m)?)?;
    m.add_function(wrap_pyfunction!(error_classes, m)?)?;
    m.add_function(wrap_pyfunction!(error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(parse_go_duration, m)?)?;
    m.add_function(wrap_pyfunction!(otlp_json_to_proto, m)?)?;
    m.add_function(wrap_pyfunction!(attribute_keys, m)?)?;
    m.add_function(wrap_pyfunction!(gzip, m)?)?;
    m.add_function(wrap_pyfunction!(split_by_trace, m)?)?;
    m.add_function(wrap_pyfunction!(memory_stats, m)?)?;
    m.add_function(wrap_pyfunction!(memory_purge, m)?)?;
    m.add_function(wrap_pyfunction!(shadow_report, m)?)?;
    m.add_function(wrap_pyfunction!(shadow_verdict, m)?)?;
    m.add_function(wrap_pyfunction!(otlp_proto_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(config_read, m)?)?;
    m.add_function(wrap_pyfunction!(config_check_keys, m)?)?;
    add_archive(m)?;
    add_http_server(m)?;
    add_grpc_server(m)?;
    add_schedule(m)?;
    Ok(())
}

// ---- The archive of dropped traces (issue 21): engine functions and the offline reader. ----

fn archive_error(py: Python<'_>, path: &std::path::Path, e: std::io::Error) -> PyErr {
    to_py(
        py,
        Error::Storage {
            path: path.display().to_string(),
            message: format!("archive: {e}"),
        },
    )
}

/// A recovered payload with `tailsample.recovered` on every span (as stored if it cannot be read, which a
/// payload the engine encoded always can).
fn marked(payload: &[u8]) -> Vec<u8> {
    tailsample_core::durable::archive::mark_recovered(payload).unwrap_or_else(|| payload.to_vec())
}

fn trace_ids(ids: &[Vec<u8>]) -> PyResult<Vec<u128>> {
    ids.iter()
        .map(|b| {
            <[u8; 16]>::try_from(b.as_slice())
                .map(u128::from_be_bytes)
                .map_err(|_| {
                    PyValueError::new_err(format!("a trace ID is 16 bytes, got {}", b.len()))
                })
        })
        .collect()
}

fn found_list<'py>(
    py: Python<'py>,
    found: &[tailsample_core::durable::Found],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for f in found {
        out.append((
            PyBytes::new(py, &f.id.to_be_bytes()),
            f.archived_at as f64 / 1e9,
            PyBytes::new(py, &marked(&f.payload)),
        ))?;
    }
    Ok(out)
}

/// Turns the engine's archive of dropped traces on, in `directory`.
#[pyfunction]
fn archive_attach(
    py: Python<'_>,
    engine: &NativeEngine,
    directory: std::path::PathBuf,
    max_bytes: u64,
    max_age: f64,
    segment_bytes: u64,
) -> PyResult<()> {
    let opts = tailsample_core::durable::ArchiveOptions {
        directory,
        max_bytes,
        max_age_ns: now_ns(py, max_age)?,
        segment_bytes: segment_bytes.max(4096),
    };
    run(py, || engine.engine.attach_archive(opts))?.map_err(|e| to_py(py, e))
}

/// Every archived part of each trace ID: (trace ID, archived at (s), payload); None without an archive.
#[pyfunction]
fn archive_recover<'py>(
    py: Python<'py>,
    engine: &NativeEngine,
    ids: Vec<Vec<u8>>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let ids = trace_ids(&ids)?;
    match run(py, || engine.engine.recover(&ids))? {
        None => Ok(None),
        Some(Err(e)) => Err(to_py(py, e)),
        Some(Ok(found)) => found_list(py, &found).map(Some),
    }
}

/// The archive's gauges and counters (None without an archive); times in seconds.
#[pyfunction]
fn archive_report<'py>(
    py: Python<'py>,
    engine: &NativeEngine,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(r) = run(py, || engine.engine.archive_report())? else {
        return Ok(None);
    };
    let d = to_python(py, &r)?.cast_into::<PyDict>()?;
    let truncations = PyList::empty(py);
    for t in engine.engine.archive_truncations() {
        truncations.append((t.segment, t.offset, t.bytes, t.reason))?;
    }
    d.set_item("truncations", truncations)?;
    Ok(Some(d))
}

/// An archive directory read without an engine: nothing is written there.
#[pyclass(frozen, module = "tailsample._native")]
struct NativeArchiveReader {
    reader: tailsample_core::durable::ArchiveReader,
    directory: std::path::PathBuf,
}

#[pymethods]
impl NativeArchiveReader {
    #[new]
    fn new(py: Python<'_>, directory: std::path::PathBuf) -> PyResult<Self> {
        let reader = tailsample_core::durable::ArchiveReader::open(&directory)
            .map_err(|e| archive_error(py, &directory, e))?;
        Ok(NativeArchiveReader { reader, directory })
    }

    /// Every archived part of each trace ID: (trace ID, archived at (s), payload).
    fn find<'py>(&self, py: Python<'py>, ids: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyList>> {
        let ids = trace_ids(&ids)?;
        let found = run(py, || self.reader.find(&ids))?
            .map_err(|e| archive_error(py, &self.directory, e))?;
        found_list(py, &found)
    }

    /// Traces archived in [since, until] (s) matching `where_` (an OTTL span condition), at most `limit`:
    /// ((trace ID, archived at, spans, root name, start (s), duration (s), error, payload) list, spans scanned,
    /// problems met).
    #[pyo3(signature = (since, until, where_=None, limit=10_000))]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        since: f64,
        until: f64,
        where_: Option<String>,
        limit: usize,
    ) -> PyResult<(Bound<'py, PyList>, u64, Vec<String>)> {
        let filter = tailsample_core::durable::TraceFilter::new(where_.as_deref())
            .map_err(|e| to_py(py, e))?;
        let (since, until) = (now_ns(py, since)?, now_ns(py, until)?);
        let mut hits = Vec::new();
        let mut spans = 0u64;
        let problems = run(py, || {
            self.reader.scan(since, until, |id, t, payload| {
                if let Some(s) = filter.check(payload) {
                    spans += u64::from(s.spans);
                    hits.push((id, t, s, payload.to_vec()));
                }
                hits.len() < limit
            })
        })?
        .map_err(|e| archive_error(py, &self.directory, e))?;
        let out = PyList::empty(py);
        for (id, t, s, payload) in hits {
            out.append((
                PyBytes::new(py, &id.to_be_bytes()),
                t as f64 / 1e9,
                s.spans,
                s.root_name,
                s.start_ns as f64 / 1e9,
                s.duration_ns as f64 / 1e9,
                s.error,
                PyBytes::new(py, &marked(&payload)),
            ))?;
        }
        Ok((out, spans, problems))
    }
}

fn add_archive(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeArchiveReader>()?;
    m.add_function(wrap_pyfunction!(archive_attach, m)?)?;
    m.add_function(wrap_pyfunction!(archive_recover, m)?)?;
    m.add_function(wrap_pyfunction!(archive_report, m)?)?;
    Ok(())
}

// ---- Kafka receiver (issue 24) ---------------------------------------------------------------------------------

/// One message of a consumer's batch, read from its confluent-kafka `Message` object.
struct KafkaMessage<'py> {
    index: usize, // in the batch given
    value: Option<Bound<'py, PyBytes>>,
    topic: Bound<'py, PyAny>,
    partition: i64,
    offset: i64,
}

/// `NativeEngine.ingest_messages`: the per-message work of a Kafka receiver, out of the interpreter. Reads each
/// message's `error()`, `value()`, `topic()`, `partition()` and `offset()`, then (GIL released) ingests the values
/// in order, each whole or not at all, without copying them, and groups the bookkeeping by runs of one partition
/// (a consumer's batch comes in such runs). Returns `(taken, spans, runs, rejected, events, stopped)`:
/// - `taken`: how many of `messages` were dealt with (all unless `stopped`);
/// - `spans`: spans taken;
/// - `runs`: `(topic, partition, end offset, messages, trace IDs)` per run of consecutive messages of one
///   partition, the end offset the one after its last message (what a commit sends), the distinct trace IDs 16
///   bytes each, concatenated (malformed messages are in the count, with no IDs);
/// - `rejected`: `(topic, partition, offset, DecodeError)` per message that is not OTLP protobuf (skipped);
/// - `events`: the `error()` of messages that carry one instead of a value (partition EOF and such);
/// - `stopped`: None, or the error that refused message `taken` (a BackpressureError: nothing of it was taken).
fn kafka_ingest<'py>(
    py: Python<'py>,
    engine: &Engine,
    messages: &Bound<'py, PyList>,
    now: f64,
) -> PyResult<Bound<'py, PyTuple>> {
    let now = now_ns(py, now)?;
    let mut events = Vec::new();
    let mut msgs = Vec::with_capacity(messages.len());
    for (index, m) in messages.iter().enumerate() {
        let err = m.call_method0(intern!(py, "error"))?;
        if !err.is_none() {
            events.push((index, err));
            continue;
        }
        let value = m.call_method0(intern!(py, "value"))?;
        msgs.push(KafkaMessage {
            index,
            value: if value.is_none() {
                None
            } else {
                Some(value.cast_into::<PyBytes>()?)
            },
            topic: m.call_method0(intern!(py, "topic"))?,
            partition: m.call_method0(intern!(py, "partition"))?.extract()?,
            offset: m.call_method0(intern!(py, "offset"))?.extract()?,
        });
    }
    // Borrowed from the bytes objects held in `msgs`, alive (and immutable) for the whole call.
    let values: Vec<&[u8]> = msgs
        .iter()
        .map(|m| m.value.as_ref().map_or(&[][..], |v| v.as_bytes()))
        .collect();
    let (results, ids) = run(py, || {
        let mut ids: Vec<u128> = Vec::new();
        let mut results = Vec::with_capacity(values.len());
        for v in &values {
            let r = engine.ingest_unsynced(v, now, &mut ids);
            let stop = r
                .as_ref()
                .is_err_and(|e| !matches!(e, Error::Decode { .. }));
            results.push((r, ids.len()));
            if stop {
                break;
            }
        }
        // Under group commit, one fsync for the whole batch.
        engine.sync_storage().map(|()| (results, ids))
    })?
    .map_err(|e| to_py(py, e))?;
    let runs = PyList::empty(py);
    let rejected = PyList::empty(py);
    let mut spans = 0;
    let mut taken = messages.len();
    let mut stopped = py.None().into_bound(py);
    // The run being built: (index into `msgs` of its first message, messages, where its IDs start in `ids`).
    let mut current: Option<(usize, usize, usize)> = None;
    let mut ids_at = 0;
    let push_run = |(first, count, start): (usize, usize, usize), ids_end: usize| {
        let m = &msgs[first];
        runs.append((
            &m.topic,
            m.partition,
            msgs[first + count - 1].offset + 1,
            count,
            PyBytes::new(py, &ids_to_bytes(&ids[start..ids_end])),
        ))
    };
    for (i, (r, ids_end)) in results.into_iter().enumerate() {
        let m = &msgs[i];
        match r {
            Ok(n) => spans += n,
            Err(e @ Error::Decode { .. }) => {
                rejected.append((&m.topic, m.partition, m.offset, to_py(py, e).into_value(py)))?;
            }
            Err(e) => {
                taken = m.index;
                stopped = to_py(py, e).into_value(py).into_bound(py).into_any();
                break;
            }
        }
        match current.as_mut() {
            Some((first, count, _))
                if msgs[*first].partition == m.partition && msgs[*first].topic.eq(&m.topic)? =>
            {
                *count += 1
            }
            _ => {
                if let Some(run) = current {
                    push_run(run, ids_at)?;
                }
                current = Some((i, 1, ids_at));
            }
        }
        ids_at = ids_end;
    }
    if let Some(run) = current {
        push_run(run, ids_at)?;
    }
    // Those after a refusal are read again with the messages the caller hands back.
    let events = PyList::new(
        py,
        events
            .into_iter()
            .filter(|(i, _)| *i < taken)
            .map(|(_, e)| e),
    )?;
    PyTuple::new(
        py,
        [
            taken.into_pyobject(py)?.into_any(),
            spans.into_pyobject(py)?.into_any(),
            runs.into_any(),
            rejected.into_any(),
            events.into_any(),
            stopped,
        ],
    )
}

// ---- The OTLP/HTTP receiver in Rust (issue 24): tailsample-server behind a thin handle. ----

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::LazyLock;
use std::time::Duration;
use tailsample_server as server;

/// Bumped by `http_purge`: every server's worker threads run `mi_collect` when they next park.
static HTTP_PURGE_EPOCH: LazyLock<Arc<AtomicU64>> = LazyLock::new(|| Arc::new(AtomicU64::new(0)));

/// The binding's engine, fed by a server without the GIL (`NativeEngine` is frozen and its `Engine` Sync).
struct HeldEngine(Py<NativeEngine>);

impl server::EngineRef for HeldEngine {
    fn engine(&self) -> &Engine {
        &self.0.get().engine
    }
}

/// A `memory_limiter`'s verdict, set from Python at every check, read by the servers without the GIL.
#[pyclass(frozen, module = "tailsample._native")]
struct NativeLimiterFlag {
    flag: Arc<server::Limiter>,
}

#[pymethods]
impl NativeLimiterFlag {
    #[new]
    fn new() -> Self {
        NativeLimiterFlag {
            flag: Arc::new(server::Limiter::default()),
        }
    }

    /// Refusing (with the message a refused client is told) or not.
    fn set(&self, refusing: bool, message: &str) {
        self.flag.set(refusing, message);
    }

    /// Payloads the servers refused for this limiter since the last call.
    fn take_refused(&self) -> u64 {
        self.flag.take_refused()
    }
}

/// Calls back into Python for what it still does with an accepted payload (see `server::Hook`).
struct PyHook {
    callback: Py<PyAny>,
    every: bool,
}

impl server::Hook for PyHook {
    fn every_payload(&self) -> bool {
        self.every
    }

    fn accepted(&self, payload: &[u8], got: &tailsample_core::Ingested, observe: bool) {
        Python::attach(|py| {
            let by_reason: Vec<(&'static str, usize)> = got
                .rejected_by_reason
                .iter()
                .map(|(r, n)| (r.label(), *n))
                .collect();
            let args = (
                PyBytes::new(py, payload),
                got.spans,
                got.rejected_spans,
                got.rejection.clone().unwrap_or_default(),
                by_reason,
                observe,
            );
            if let Err(e) = self.callback.call1(py, args) {
                e.write_unraisable(py, None);
            }
        });
    }
}

/// One OTLP/HTTP server on its own threads (see the `tailsample-server` crate).
#[pyclass(frozen, module = "tailsample._native")]
struct NativeHttpServer {
    server: Mutex<Option<server::Server>>,
    counters: Arc<server::Counters>,
    #[pyo3(get)]
    port: u16,
}

type HttpTarget = (Py<NativeEngine>, bool, Vec<Py<NativeLimiterFlag>>);

#[pymethods]
impl NativeHttpServer {
    /// Binds and starts serving. `targets`: (engine, engine clock is wall time, its limiters' flags) per
    /// pipeline; `auth`: (scheme, token or None, token file or None); `tls`: (certificate PEM, key PEM);
    /// `hook(payload, spans, rejected, rejection, by_reason, observe)` is called (with the GIL) for every
    /// payload when `every_payload`, else for one per `observe_interval` and those with spans rejected alone.
    #[new]
    #[pyo3(signature = (receiver_id, host, port, traces_path, max_body, compression, max_connections,
                        read_header_timeout, read_timeout, idle_timeout, response_headers, tls, auth, targets,
                        workers, backlog, blocking, observe_interval, hook, every_payload))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        receiver_id: String,
        host: String,
        port: u16,
        traces_path: String,
        max_body: usize,
        compression: Vec<String>,
        max_connections: usize,
        read_header_timeout: f64,
        read_timeout: f64,
        idle_timeout: f64,
        response_headers: Vec<(String, String)>,
        tls: Option<(Vec<u8>, Vec<u8>)>,
        auth: Option<(String, Option<String>, Option<std::path::PathBuf>)>,
        targets: Vec<HttpTarget>,
        workers: usize,
        backlog: u32,
        blocking: bool,
        observe_interval: f64,
        hook: Option<Py<PyAny>>,
        every_payload: bool,
    ) -> PyResult<Self> {
        let auth = server_auth(py, auth)?;
        let cfg = server::Config {
            id: receiver_id,
            host,
            port,
            traces_path,
            max_body,
            compression,
            max_connections,
            read_header_timeout: server_secs("read_header_timeout", read_header_timeout)?,
            read_timeout: server_secs("read_timeout", read_timeout)?,
            idle_timeout: server_secs("idle_timeout", idle_timeout)?,
            response_headers,
            tls,
            auth,
            workers,
            backlog,
            blocking,
            observe_interval: server_secs("observe_interval", observe_interval)?,
        };
        let s = start_server(py, targets, hook, every_payload, |targets, hook, purge| {
            server::Server::start(cfg, targets, hook, purge)
        })?;
        Ok(NativeHttpServer {
            counters: s.counters().clone(),
            port: s.local_addr.port(),
            server: Mutex::new(Some(s)),
        })
    }

    /// The counters now: accepted_spans, refused_spans, aborted, open, refused_connections,
    /// timed_out_read_header, timed_out_read, rejected:<reason>, accept_error:<name>.
    fn counters(&self) -> std::collections::HashMap<String, u64> {
        server::snapshot(&self.counters)
    }

    /// Stops accepting, lets requests in flight finish (within `grace` seconds), then stops its threads.
    fn stop(&self, py: Python<'_>, grace: f64) {
        stop_server(py, &self.server, grace, |s, grace| s.stop(grace));
    }
}

/// Asks every HTTP server's worker threads to hand their freed pages back (`mi_collect`) when they next idle.
#[pyfunction]
fn http_purge() {
    HTTP_PURGE_EPOCH.fetch_add(1, AtomicOrdering::Relaxed);
}

fn add_http_server(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeLimiterFlag>()?;
    m.add_class::<NativeHttpServer>()?;
    m.add_function(wrap_pyfunction!(http_purge, m)?)?;
    Ok(())
}

// ---- The OTLP/gRPC receiver in Rust (issue 24): tailsample-server's gRPC server behind a thin handle. ----

/// One OTLP/gRPC server on its own threads (see `tailsample_server::grpc`).
#[pyclass(frozen, module = "tailsample._native")]
struct NativeGrpcServer {
    server: Mutex<Option<server::GrpcServer>>,
    counters: Arc<server::Counters>,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl NativeGrpcServer {
    /// Binds and starts serving. `keepalive`: (max_connection_idle, max_connection_age, max_connection_age_grace,
    /// time, timeout) in seconds, 0 for none; the rest as `NativeHttpServer`.
    #[new]
    #[pyo3(signature = (receiver_id, host, port, max_message, max_concurrent_streams, max_connections,
                        handshake_timeout, keepalive, tls, auth, targets, workers, backlog, blocking,
                        observe_interval, hook, every_payload))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        receiver_id: String,
        host: String,
        port: u16,
        max_message: usize,
        max_concurrent_streams: u32,
        max_connections: usize,
        handshake_timeout: f64,
        keepalive: (f64, f64, f64, f64, f64),
        tls: Option<(Vec<u8>, Vec<u8>)>,
        auth: Option<(String, Option<String>, Option<std::path::PathBuf>)>,
        targets: Vec<HttpTarget>,
        workers: usize,
        backlog: u32,
        blocking: bool,
        observe_interval: f64,
        hook: Option<Py<PyAny>>,
        every_payload: bool,
    ) -> PyResult<Self> {
        let opt = |name: &str, v: f64| server_secs(name, v).map(|d| (!d.is_zero()).then_some(d));
        let auth = server_auth(py, auth)?;
        let (idle, age, grace, time, timeout) = keepalive;
        let cfg = server::GrpcConfig {
            id: receiver_id,
            host,
            port,
            max_message,
            max_concurrent_streams,
            max_connections,
            handshake_timeout: server_secs("handshake_timeout", handshake_timeout)?,
            keepalive: server::Keepalive {
                max_connection_idle: opt("max_connection_idle", idle)?,
                max_connection_age: opt("max_connection_age", age)?,
                max_connection_age_grace: opt("max_connection_age_grace", grace)?,
                time: opt("time", time)?,
                timeout: opt("timeout", timeout)?,
            },
            tls,
            auth,
            workers,
            backlog,
            blocking,
            observe_interval: server_secs("observe_interval", observe_interval)?,
        };
        let s = start_server(py, targets, hook, every_payload, |targets, hook, purge| {
            server::GrpcServer::start(cfg, targets, hook, purge)
        })?;
        Ok(NativeGrpcServer {
            counters: s.counters().clone(),
            port: s.local_addr.port(),
            server: Mutex::new(Some(s)),
        })
    }

    /// The counters now, as `NativeHttpServer.counters` (`timed_out_read_header`: handshakes timed out).
    fn counters(&self) -> std::collections::HashMap<String, u64> {
        server::snapshot(&self.counters)
    }

    /// Stops accepting, sends a GOAWAY, lets calls in flight finish (within `grace` seconds), stops its threads.
    fn stop(&self, py: Python<'_>, grace: f64) {
        stop_server(py, &self.server, grace, |s, grace| s.stop(grace));
    }
}

fn add_grpc_server(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeGrpcServer>()?;
    Ok(())
}

// ---- What NativeHttpServer and NativeGrpcServer share: arguments into tailsample-server's, start, stop. ----

fn server_secs(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v.max(0.0))
        .map_err(|_| PyValueError::new_err(format!("{name} must be a finite number of seconds")))
}

/// `auth`: (scheme, token or None, token file or None).
fn server_auth(
    py: Python<'_>,
    auth: Option<(String, Option<String>, Option<std::path::PathBuf>)>,
) -> PyResult<Option<Arc<server::Auth>>> {
    let Some((scheme, token, file)) = auth else {
        return Ok(None);
    };
    let auth = server::Auth::new(&scheme, token.as_deref(), file).map_err(|e| {
        to_py(
            py,
            Error::config("auth", format!("cannot read the token: {e}")),
        )
    })?;
    Ok(Some(Arc::new(auth)))
}

/// Starts a server (without the GIL) on the pipelines' engines with the hook and the threads' purge; a
/// certificate problem is a ConfigError, the OS's an OSError.
fn start_server<S>(
    py: Python<'_>,
    targets: Vec<HttpTarget>,
    hook: Option<Py<PyAny>>,
    every_payload: bool,
    start: impl FnOnce(
            Vec<server::Target>,
            Option<Arc<dyn server::Hook>>,
            Option<server::Purge>,
        ) -> Result<S, server::StartError>
        + Send,
) -> PyResult<S>
where
    S: Send,
{
    let targets = targets
        .into_iter()
        .map(|(engine, wall_clock, limiters)| server::Target {
            engine: Arc::new(HeldEngine(engine)),
            wall_clock,
            limiters: limiters.iter().map(|l| l.get().flag.clone()).collect(),
        })
        .collect();
    let hook = hook.map(|callback| {
        Arc::new(PyHook {
            callback,
            every: every_payload,
        }) as Arc<dyn server::Hook>
    });
    let purge: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {
        // SAFETY: mi_collect takes no pointers; it collects the calling (worker) thread's heap.
        unsafe { libmimalloc_sys::mi_collect(true) }
    });
    let started = py.detach(|| start(targets, hook, Some((HTTP_PURGE_EPOCH.clone(), purge))));
    started.map_err(|e| {
        if e.config {
            to_py(py, Error::config("tls", e.message))
        } else {
            pyo3::exceptions::PyOSError::new_err((e.errno.unwrap_or(0), e.message))
        }
    })
}

/// Stops the server once (later calls do nothing), without the GIL; `grace` in seconds.
fn stop_server<S: Send>(
    py: Python<'_>,
    slot: &Mutex<Option<S>>,
    grace: f64,
    stop: impl FnOnce(&mut S, Duration) + Send,
) {
    let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut s) = taken {
        let grace = Duration::from_secs_f64(grace.clamp(0.0, 3600.0));
        py.detach(move || stop(&mut s, grace));
    }
}

// ---- The decision loop's schedule (issue 24): when the next round has work. ----

/// `(next due, arrival wait)` in seconds, for a decision loop that sleeps while nothing is due:
/// - next due: on the engine's clock, when the next `poll_round` has work (`-inf`: at once, for late spans to send
///   or dropped traces to archive); None when nothing waits;
/// - arrival wait: the soonest a trace taken from now on can be due (`decision_wait`, or
///   `decision_wait_after_root_received` when shorter and set).
///
/// Cheap: each shard locked briefly, no allocation; the loop calls it every round instead of a thread-pool hop.
#[pyfunction]
fn engine_next_due(py: Python<'_>, engine: &NativeEngine) -> PyResult<(Option<f64>, f64)> {
    let (due, cfg) = run(py, || (engine.engine.next_due(), engine.engine.config()))?;
    let root = cfg.decision_wait_after_root_received_ns;
    let wait = if root > 0 {
        root.min(cfg.decision_wait_ns)
    } else {
        cfg.decision_wait_ns
    };
    let seconds = |ns: i64| {
        if ns == i64::MIN {
            f64::NEG_INFINITY
        } else {
            ns as f64 / 1e9
        }
    };
    Ok((due.map(seconds), seconds(wait)))
}

fn add_schedule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(engine_next_due, m)?)?;
    Ok(())
}
