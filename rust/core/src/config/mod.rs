//! The `tail_sampling` configuration, with the reference processor's keys and defaults, validated with the YAML
//! path of every value. tailsample-only options live under a `tailsample:` key of the block.

pub mod node;

use serde_json::{json, Value};

use crate::consistent::DEFAULT_PRECISION;
use crate::error::{Error, Result};
use crate::otlp::decode::AttrKeys;
use crate::policy::trace_aggregate::{TraceAggregate, MAX_AGGREGATES};
use crate::policy::trace_key::{TraceKey, MAX_KEYED};
use crate::policy::{Kind, Policy, MAX_FOLDING_POLICIES};
use crate::propagation::{AuditConfig, DestinationSource, MAX_AUDIT_KEYS, MAX_NAMES_LIMIT};
use crate::red::RedConfig;
use crate::store::shadow::{ShadowConfig, DEFAULT_MAX_DISAGREEMENTS, DEFAULT_SLOW_THRESHOLD_NS};
use node::{Mapping, Node};

/// Output payloads are cut at this size by default: the default maximum message size of gRPC servers.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// Late spans of kept traces wait for the next `poll` in a buffer of at most this many bytes by default.
pub const DEFAULT_LATE_SPAN_BUFFER_BYTES: u64 = 64 << 20;
/// Recent decisions remembered for `explain`, per engine, by default (~136 B each).
pub const DEFAULT_DECISION_LOG_SIZE: usize = 100_000;
/// Bytes of recently kept traces held for `tailsample show`, per engine, by default.
pub const DEFAULT_RECENT_KEPT_BYTES: u64 = 8 << 20;
/// Buffered traces may hold at most this many bytes per engine by default (`tailsample.max_buffered_bytes`).
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 2 << 30;
/// The propagation-gap audit runs unless `tailsample.propagation_audit.enabled` is false.
pub const DEFAULT_PROPAGATION_AUDIT: bool = true;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub decision_wait_ns: i64,
    pub num_traces: usize,
    pub expected_new_traces_per_sec: u64,
    pub sampled_cache_size: usize,
    pub non_sampled_cache_size: usize,
    pub sample_on_first_match: bool,
    pub drop_pending_traces_on_shutdown: bool,
    pub block_on_overflow: bool,
    /// 0 means off.
    pub decision_wait_after_root_received_ns: i64,
    /// 0 means off.
    pub maximum_trace_size_bytes: u64,
    pub num_shards: usize,
    pub policies: Vec<Policy>,
    /// Every attribute key some policy reads; the scanner extracts only these.
    pub attr_keys: AttrKeys,
    /// tailsample: read attributes exactly as the reference does: keys only as spelled (no header aliases), and
    /// no array elements in the attribute policies (`AttrKeys::strict`).
    pub strict_reference_matching: bool,
    /// tailsample: output payloads are cut at about this size (never inside a span).
    pub max_payload_bytes: usize,
    /// tailsample: limit of the buffer of late spans waiting for `poll`.
    pub late_span_buffer_bytes: u64,
    /// tailsample: add `tailsampling.policy`, `tailsampling.composite_policy` and `tailsampling.cached_decision`
    /// to kept spans (rewrites their bytes: appends the attributes).
    pub record_policy: bool,
    /// Every folding policy of the tree (any depth), flattened, with its slot: what ingest evaluates per span.
    pub folders: Vec<(u8, Kind)>,
    /// Every `trace_aggregate` policy (any depth), with its slot in `TraceView::aggregates`.
    pub aggregators: Vec<TraceAggregate>,
    /// The trace key of every keyed policy (any depth), with its slot in `TraceView::keys`.
    pub keyers: Vec<TraceKey>,
    /// tailsample: write OTEP 235 thresholds (and optionally adjusted counts) on kept spans.
    pub adjusted_counts: Option<AdjustedCounts>,
    /// tailsample: RED metrics over every span received, before sampling.
    pub red_metrics: Option<RedConfig>,
    /// tailsample: recent decisions remembered for `explain` (0: none).
    pub decision_log_size: usize,
    /// tailsample: bytes of recently kept traces held for `show` (0: none).
    pub recent_kept_bytes: usize,
    /// tailsample: at this many bytes held by buffered traces, ingestion answers with backpressure.
    pub max_buffered_bytes: u64,
    /// The storage extension holding the buffer on disk (`tail_storage: file_storage/<name>`); the caller opens
    /// it with `Engine::open`.
    pub tail_storage: Option<String>,
    /// tailsample: the archive of dropped traces (`tailsample.archive`); the caller opens it with
    /// `Engine::attach_archive`.
    pub archive: Option<ArchiveConfig>,
    /// tailsample: the propagation-gap audit of every decided trace (None: off).
    pub propagation_audit: Option<AuditConfig>,
    /// tailsample: shadow policies judged beside the live ones, never changing what is kept (None: off).
    pub shadow: Option<ShadowConfig>,
    /// Ingest reads the spans' `ot` tracestate entries (a consistent sampler or adjusted counts need them).
    pub reads_ot: bool,
    blocks: Vec<Value>,
}

/// `tailsample.archive`: where dropped traces are kept, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    /// The `file_storage` extension whose directory holds it.
    pub storage: String,
    pub max_bytes: u64,
    pub max_age_ns: i64,
}

pub const DEFAULT_ARCHIVE_MAX_SIZE_MIB: i64 = 10240;
pub const DEFAULT_ARCHIVE_MAX_AGE_NS: i64 = 24 * 3600 * 1_000_000_000;

fn parse_archive(v: &Value) -> Result<ArchiveConfig> {
    let mut m = Node::new(v, "tailsample.archive").mapping()?;
    let storage = m.required_string("storage")?;
    if !storage.starts_with("file_storage") {
        return Err(Error::config(
            "tailsample.archive.storage",
            format!("must name a file_storage extension (file_storage or file_storage/<name>), got {storage:?}"),
        ));
    }
    let mib = m.int_at_least("max_size_mib", DEFAULT_ARCHIVE_MAX_SIZE_MIB, 1)?;
    let max_age_ns = m.duration("max_age", DEFAULT_ARCHIVE_MAX_AGE_NS)?;
    if max_age_ns <= 0 {
        return Err(Error::config(
            "tailsample.archive.max_age",
            "must be a positive duration (e.g. 24h)",
        ));
    }
    m.finish()?;
    Ok(ArchiveConfig {
        storage,
        max_bytes: (mib as u64).saturating_mul(1 << 20),
        max_age_ns,
    })
}

/// `tailsample.adjusted_counts`: what kept spans carry of their sampling probability.
#[derive(Debug, Clone, PartialEq)]
pub struct AdjustedCounts {
    /// Write `ot=th:` in each kept span's tracestate (erase it where the probability is unknown).
    pub tracestate: bool,
    /// Add a double attribute with this name holding the adjusted count (1/p); none when empty.
    pub attribute: String,
    /// Hex digits of written thresholds.
    pub precision: u32,
}

impl AdjustedCounts {
    fn parse(v: &Value) -> Result<Self> {
        let mut m = Node::new(v, "tailsample.adjusted_counts").mapping()?;
        let tracestate = m.boolean("tracestate", true)?;
        let attribute = m.string("attribute", "")?;
        let precision_path = m.key_path("precision");
        let precision = m.int("precision", i64::from(DEFAULT_PRECISION))?;
        m.finish()?;
        if !(1..=14).contains(&precision) {
            return Err(Error::config(
                precision_path,
                format!("must be between 1 and 14 hex digits, got {precision}"),
            ));
        }
        Ok(AdjustedCounts {
            tracestate,
            attribute,
            precision: precision as u32,
        })
    }
}

fn parse_red(v: &Value) -> Result<Option<RedConfig>> {
    let mut m = Node::new(v, "tailsample.red_metrics").mapping()?;
    let enabled = m.boolean("enabled", true)?;
    let defaults = RedConfig::default();
    let max_series = m.int_at_least("max_series", defaults.max_series as i64, 1)? as usize;
    let buckets_path = m.key_path("histogram_buckets");
    let buckets_ns = match m.value("histogram_buckets") {
        None => defaults.buckets_ns,
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let path = format!("{buckets_path}[{i}]");
                let ns = match item {
                    Value::String(text) => {
                        node::parse_go_duration(text).map_err(|e| Error::config(&path, e))?
                    }
                    other => {
                        return Err(Error::config(
                            &path,
                            format!(
                                "expected a duration such as \"250ms\", got {}",
                                node::describe(other)
                            ),
                        ))
                    }
                };
                if ns <= 0 || out.last().is_some_and(|&last| ns as u64 <= last) {
                    return Err(Error::config(
                        &path,
                        "bucket bounds must be positive and increasing",
                    ));
                }
                out.push(ns as u64);
            }
            out
        }
        Some(other) => {
            return Err(Error::config(
                buckets_path,
                format!(
                    "expected a list of durations, got {}",
                    node::describe(other)
                ),
            ))
        }
    };
    m.finish()?;
    Ok(enabled.then_some(RedConfig {
        max_series,
        buckets_ns,
    }))
}

/// One `destination_attributes` entry: a key (read as the semantic conventions define it, see
/// [`DestinationSource::from_key`]), or `{name: K}`, `{address: K, port: K}`, `{url: K}`.
fn parse_destination(v: &Value, path: &str) -> Result<DestinationSource> {
    if let Value::String(k) = v {
        if k.is_empty() {
            return Err(Error::config(path, "must not be empty"));
        }
        return Ok(DestinationSource::from_key(k));
    }
    let mut m = Node::new(v, path).mapping().map_err(|_| {
        Error::config(
            path,
            format!(
                "expected an attribute key or a mapping {{name: K}}, {{address: K, port: K}} or {{url: K}}, got {}",
                node::describe(v)
            ),
        )
    })?;
    let name = m.string("name", "")?;
    let address = m.string("address", "")?;
    let port = m.string("port", "")?;
    let url = m.string("url", "")?;
    m.finish()?;
    match (name.is_empty(), address.is_empty(), url.is_empty()) {
        (false, true, true) if port.is_empty() => Ok(DestinationSource::Name(name)),
        (true, false, true) => Ok(DestinationSource::Address { address, port }),
        (true, true, false) if port.is_empty() => Ok(DestinationSource::Url(url)),
        _ => Err(Error::config(
            path,
            "give exactly one of name, address (with an optional port) or url",
        )),
    }
}

/// A `destination_attributes` entry as configured: the plain key when the conventions read it so.
fn destination_json(d: &DestinationSource) -> Value {
    if DestinationSource::from_key(d.key()) == *d {
        return json!(d.key());
    }
    match d {
        DestinationSource::Name(k) => json!({"name": k}),
        DestinationSource::Url(k) => json!({"url": k}),
        DestinationSource::Address { address, port } => json!({"address": address, "port": port}),
    }
}

fn parse_audit(v: &Value) -> Result<Option<AuditConfig>> {
    let mut m = Node::new(v, "tailsample.propagation_audit").mapping()?;
    let enabled = m.boolean("enabled", true)?;
    let d = AuditConfig::default();
    let keys_path = m.key_path("destination_attributes");
    let destination_attributes = match m.value("destination_attributes") {
        None => d.destination_attributes,
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_destination(v, &format!("{keys_path}[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Some(other) => {
            return Err(Error::config(
                &keys_path,
                format!("expected a list, got {}", node::describe(other)),
            ))
        }
    };
    let list =
        |m: &mut Mapping<'_>, key: &'static str, default: Vec<String>| -> Result<Vec<String>> {
            Ok(if m.has(key) { m.strings(key)? } else { default })
        };
    let ignore_when_present = list(&mut m, "ignore_when_present", d.ignore_when_present)?;
    let ignore_destinations = list(&mut m, "ignore_destinations", d.ignore_destinations)?;
    let max_pairs = m.int_at_least("max_pairs", d.max_pairs as i64, 1)? as usize;
    let names_path = m.key_path("max_names");
    let max_names = m.int_at_least("max_names", d.max_names as i64, 1)? as usize;
    let examples = m.int_at_least("examples", d.examples as i64, 0)? as usize;
    let max_addresses = m.int_at_least("max_addresses", d.max_addresses as i64, 0)? as usize;
    let ttl_path = m.key_path("address_ttl");
    let address_ttl_ns = m.duration("address_ttl", d.address_ttl_ns)?;
    m.finish()?;
    if address_ttl_ns <= 0 {
        return Err(Error::config(ttl_path, "must be a positive duration"));
    }
    if max_names > MAX_NAMES_LIMIT {
        return Err(Error::config(
            names_path,
            format!("at most {MAX_NAMES_LIMIT}, got {max_names}"),
        ));
    }
    let a = AuditConfig {
        destination_attributes,
        ignore_when_present,
        ignore_destinations,
        max_pairs,
        max_names,
        examples,
        max_addresses,
        address_ttl_ns,
    };
    if a.configured_keys() > MAX_AUDIT_KEYS {
        return Err(Error::config(
            keys_path,
            format!(
                "at most {MAX_AUDIT_KEYS} keys in destination_attributes (a port counts) and ignore_when_present together"
            ),
        ));
    }
    Ok(enabled.then_some(a))
}

impl EngineConfig {
    /// Parses a `tail_sampling` block given as JSON text (the Python layer turns YAML into JSON).
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::config("", format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self> {
        let root = Node::new(v, "");
        let mut m = root.mapping()?;
        let tail_storage = match m.value("tail_storage") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if id.starts_with("file_storage") => Some(id.clone()),
            Some(other) => {
                return Err(Error::config(
                    "tail_storage",
                    format!(
                        "must name a file_storage extension (file_storage or file_storage/<name>), got {}",
                        node::describe(other)
                    ),
                ))
            }
        };
        let decision_wait_ns = m.duration("decision_wait", 30_000_000_000)?;
        if decision_wait_ns <= 0 {
            return Err(Error::config(
                "decision_wait",
                "must be a positive duration (the reference accepts it and decides each trace at its next \
                 1-second tick, as with 1s)",
            ));
        }
        let num_traces = m.int_at_least_or(
            "num_traces",
            50_000,
            1,
            "then holds one trace at a time: each new trace evicts the one before",
        )? as usize;
        let expected_new_traces_per_sec =
            m.int_at_least("expected_new_traces_per_sec", 0, 0)? as u64;
        let (sampled_cache_size, non_sampled_cache_size) = match m.value("decision_cache") {
            None => (0, 0),
            Some(v) => {
                let mut c = Node::new(v, "decision_cache").mapping()?;
                // The reference reads a size of 0 or less as "no cache", as tailsample reads 0.
                let s = c.int("sampled_cache_size", 0)?.max(0) as usize;
                let n = c.int("non_sampled_cache_size", 0)?.max(0) as usize;
                c.finish()?;
                (s, n)
            }
        };
        let sample_on_first_match = m.boolean("sample_on_first_match", false)?;
        let drop_pending_traces_on_shutdown =
            m.boolean("drop_pending_traces_on_shutdown", false)?;
        let block_on_overflow = m.boolean("block_on_overflow", false)?;
        let root_wait = m.duration("decision_wait_after_root_received", 0)?;
        if root_wait < 0 {
            return Err(Error::config(
                "decision_wait_after_root_received",
                "must not be negative",
            ));
        }
        let maximum_trace_size_bytes = m.bytes("maximum_trace_size_bytes", 0)?;
        let strategy = m.string("sampling_strategy", "trace-complete")?;
        match strategy.as_str() {
            "trace-complete" => {}
            "span-ingest" => {
                return Err(Error::config(
                    "sampling_strategy",
                    "\"span-ingest\" is not supported by tailsample yet; supported: trace-complete",
                ))
            }
            other => {
                return Err(Error::config(
                    "sampling_strategy",
                    format!("unknown strategy {other:?}; supported: trace-complete"),
                ))
            }
        }
        let num_shards = m.int("num_shards", 1)?;
        if !(1..=256).contains(&num_shards) {
            return Err(Error::config(
                "num_shards",
                format!("must be between 1 and 256, got {num_shards}"),
            ));
        }
        let mut adjusted_counts = None;
        let mut red_metrics = None;
        let mut decision_log_size = DEFAULT_DECISION_LOG_SIZE;
        let mut recent_kept_bytes = DEFAULT_RECENT_KEPT_BYTES as usize;
        let mut max_buffered_bytes = DEFAULT_MAX_BUFFERED_BYTES;
        let mut archive = None;
        let mut strict_reference_matching = false;
        let mut propagation_audit = DEFAULT_PROPAGATION_AUDIT.then(AuditConfig::default);
        let mut shadow: Option<ShadowConfig> = None;
        let (max_payload_bytes, late_span_buffer_bytes, record_policy) = match m.value("tailsample")
        {
            None => (
                DEFAULT_MAX_PAYLOAD_BYTES,
                DEFAULT_LATE_SPAN_BUFFER_BYTES,
                false,
            ),
            Some(v) => {
                let mut t = Node::new(v, "tailsample").mapping()?;
                let p =
                    t.int_at_least("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES as i64, 1024)?
                        as usize;
                let l = t.bytes("late_span_buffer_bytes", DEFAULT_LATE_SPAN_BUFFER_BYTES)?;
                let r = t.boolean("record_policy", false)?;
                if let Some(a) = t.value("adjusted_counts") {
                    adjusted_counts = Some(AdjustedCounts::parse(a)?);
                }
                if let Some(red) = t.value("red_metrics") {
                    red_metrics = parse_red(red)?;
                }
                if let Some(a) = t.value("archive") {
                    archive = Some(parse_archive(a)?);
                }
                if let Some(a) = t.value("propagation_audit") {
                    propagation_audit = parse_audit(a)?;
                }
                if let Some(sh) = t.value("shadow") {
                    shadow = Some(parse_shadow(sh)?);
                }
                decision_log_size =
                    t.int_at_least("decision_log_size", DEFAULT_DECISION_LOG_SIZE as i64, 0)?
                        as usize;
                recent_kept_bytes =
                    t.bytes("recent_kept_bytes", DEFAULT_RECENT_KEPT_BYTES)? as usize;
                max_buffered_bytes = t.bytes("max_buffered_bytes", DEFAULT_MAX_BUFFERED_BYTES)?;
                strict_reference_matching = t.boolean("strict_reference_matching", false)?;
                t.finish()?;
                (p, l, r)
            }
        };
        let mut policies = match m.value("policies") {
            None => {
                return Err(Error::config(
                    "policies",
                    "is required: a list of policies, each with a name and a type",
                ))
            }
            Some(v) => Policy::parse_list(Some(v), "policies")?,
        };
        m.finish()?;
        let blocks = policies_json(v);

        // Attribute keys of every policy at any depth; then slots for every folding policy.
        let mut names: Vec<String> = Vec::new();
        for p in policies
            .iter()
            .chain(shadow.iter().flat_map(|s| &s.policies))
        {
            p.walk(&mut |q| names.extend(q.kind.attribute_keys()));
        }
        if red_metrics.is_some() {
            names.push("service.name".to_string());
        }
        if let Some(a) = &propagation_audit {
            names.extend(a.attribute_keys());
        }
        let keys = if strict_reference_matching {
            AttrKeys::new_strict(names)
        } else {
            AttrKeys::new(names)
        };
        let mut folders: Vec<(u8, Kind)> = Vec::new();
        let mut aggregators: Vec<TraceAggregate> = Vec::new();
        let mut keyers: Vec<TraceKey> = Vec::new();
        let mut reads_ot = adjusted_counts.is_some();
        let mut too_many = false;
        let mut too_many_aggregates = false;
        let mut too_many_keyed = false;
        // The shadow set's policies take slots after the live ones: folded at ingest beside them.
        let shadow_policies = shadow.iter_mut().flat_map(|s| s.policies.iter_mut());
        for p in policies.iter_mut().chain(shadow_policies) {
            p.walk_mut(&mut |q| {
                q.kind.bind(&keys);
                reads_ot |= q.kind.reads_ot();
                if let Some(k) = q.kind.trace_key_mut() {
                    if keyers.len() >= MAX_KEYED {
                        too_many_keyed = true;
                        return;
                    }
                    k.slot = keyers.len();
                    keyers.push(k.clone());
                }
                if let Some(a) = q.kind.aggregate_mut() {
                    if aggregators.len() >= MAX_AGGREGATES {
                        too_many_aggregates = true;
                        return;
                    }
                    a.slot = aggregators.len();
                    aggregators.push(a.clone());
                }
                if q.kind.folds() {
                    if folders.len() >= MAX_FOLDING_POLICIES {
                        too_many = true;
                        return;
                    }
                    let slot = folders.len() as u8;
                    q.slot = Some(slot);
                    folders.push((slot, q.kind.clone()));
                }
            });
        }
        if too_many_aggregates {
            return Err(Error::config(
                "policies",
                format!("at most {MAX_AGGREGATES} trace_aggregate policies per processor"),
            ));
        }
        if too_many_keyed {
            return Err(Error::config(
                "policies",
                format!(
                    "at most {MAX_KEYED} latency_percentile and adaptive policies per processor"
                ),
            ));
        }
        if too_many {
            return Err(Error::config(
                "policies",
                format!("at most {MAX_FOLDING_POLICIES} attribute, trace_state and ottl_condition policies per processor"),
            ));
        }
        Ok(EngineConfig {
            decision_wait_ns,
            num_traces,
            expected_new_traces_per_sec,
            sampled_cache_size,
            non_sampled_cache_size,
            sample_on_first_match,
            drop_pending_traces_on_shutdown,
            block_on_overflow,
            decision_wait_after_root_received_ns: root_wait,
            maximum_trace_size_bytes,
            num_shards: num_shards as usize,
            policies,
            attr_keys: keys,
            strict_reference_matching,
            max_payload_bytes,
            late_span_buffer_bytes,
            record_policy,
            folders,
            aggregators,
            keyers,
            adjusted_counts,
            red_metrics,
            decision_log_size,
            recent_kept_bytes,
            max_buffered_bytes,
            tail_storage,
            archive,
            propagation_audit,
            shadow,
            reads_ot,
            blocks,
        })
    }

    pub fn policy_names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }

    /// The configuration as the engine runs it, every default filled in.
    pub fn normalized(&self) -> Value {
        let dur = go_duration;
        let mut out = json!({
            "decision_wait": dur(self.decision_wait_ns),
            "num_traces": self.num_traces,
            "expected_new_traces_per_sec": self.expected_new_traces_per_sec,
            "decision_cache": {
                "sampled_cache_size": self.sampled_cache_size,
                "non_sampled_cache_size": self.non_sampled_cache_size,
            },
            "sample_on_first_match": self.sample_on_first_match,
            "drop_pending_traces_on_shutdown": self.drop_pending_traces_on_shutdown,
            "block_on_overflow": self.block_on_overflow,
            "decision_wait_after_root_received": dur(self.decision_wait_after_root_received_ns),
            "maximum_trace_size_bytes": self.maximum_trace_size_bytes,
            "sampling_strategy": "trace-complete",
            "num_shards": self.num_shards,
            "tailsample": {
                "max_payload_bytes": self.max_payload_bytes,
                "late_span_buffer_bytes": self.late_span_buffer_bytes,
                "record_policy": self.record_policy,
                "decision_log_size": self.decision_log_size,
                "recent_kept_bytes": self.recent_kept_bytes,
                "max_buffered_bytes": self.max_buffered_bytes,
                "strict_reference_matching": self.strict_reference_matching,
            },
            "policies": self.blocks,
        });
        if let Some(id) = &self.tail_storage {
            out["tail_storage"] = json!(id);
        }
        // Only what is on: the output loads back as the same configuration.
        let t = &mut out["tailsample"];
        if let Some(a) = &self.adjusted_counts {
            t["adjusted_counts"] = json!({
                "tracestate": a.tracestate,
                "attribute": a.attribute,
                "precision": a.precision,
            });
        }
        t["propagation_audit"] = match &self.propagation_audit {
            None => json!({"enabled": false}),
            Some(a) => json!({
                "enabled": true,
                "destination_attributes": a.destination_attributes.iter().map(destination_json).collect::<Vec<_>>(),
                "ignore_when_present": a.ignore_when_present,
                "ignore_destinations": a.ignore_destinations,
                "max_pairs": a.max_pairs,
                "max_names": a.max_names,
                "examples": a.examples,
                "max_addresses": a.max_addresses,
                "address_ttl": go_duration(a.address_ttl_ns),
            }),
        };
        if let Some(sh) = &self.shadow {
            t["shadow"] = json!({
                "policies": sh.blocks,
                "attribute": sh.attribute,
                "max_disagreements": sh.max_disagreements,
                "slow_threshold": go_duration(sh.slow_threshold_ns),
            });
        }
        if let Some(a) = &self.archive {
            t["archive"] = json!({
                "storage": a.storage,
                "max_size_mib": a.max_bytes >> 20,
                "max_age": go_duration(a.max_age_ns),
            });
        }
        if let Some(r) = &self.red_metrics {
            t["red_metrics"] = json!({
                "enabled": true,
                "max_series": r.max_series,
                "histogram_buckets": r.buckets_ns.iter().map(|&ns| go_duration(ns as i64)).collect::<Vec<_>>(),
            });
        }
        out
    }
}

/// A duration as Go prints the common cases: `10s`, `1m30s`, `500ms`, `250us`, `7ns`.
pub fn go_duration(ns: i64) -> String {
    const S: i64 = 1_000_000_000;
    if ns == 0 {
        "0s".into()
    } else if ns % S == 0 {
        let s = ns / S;
        match (s / 3600, s % 3600 / 60, s % 60) {
            (0, 0, sec) => format!("{sec}s"),
            (0, m, sec) => format!("{m}m{sec}s"),
            (h, m, sec) => format!("{h}h{m}m{sec}s"),
        }
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// The `policies` list as given, for `normalized()`.
/// `tailsample.shadow`: `policies` read exactly as the block's `policies`, and the shadow options.
fn parse_shadow(v: &Value) -> Result<ShadowConfig> {
    let mut m = Node::new(v, "tailsample.shadow").mapping()?;
    let listed = m.value("policies");
    let attribute = m.boolean("attribute", false)?;
    let max_disagreements =
        m.int_at_least("max_disagreements", DEFAULT_MAX_DISAGREEMENTS as i64, 0)? as usize;
    let slow_threshold_ns = m.duration("slow_threshold", DEFAULT_SLOW_THRESHOLD_NS)?;
    m.finish()?;
    let Some(listed) = listed else {
        return Err(Error::config(
            "tailsample.shadow.policies",
            "is required: a list of policies, written as `policies` is",
        ));
    };
    let policies = Policy::parse_list(Some(listed), "tailsample.shadow.policies")?;
    Ok(ShadowConfig {
        policies,
        attribute,
        max_disagreements,
        slow_threshold_ns,
        blocks: policies_json(v),
    })
}

fn policies_json(root: &Value) -> Vec<Value> {
    match root.get("policies") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(v: Value) -> Result<EngineConfig> {
        EngineConfig::from_value(&v)
    }

    /// Scenario: the seed document's four policies. Guarantees: they load with the reference's defaults.
    #[test]
    fn seed_policies_load() {
        let c = load(json!({
            "decision_wait": "10s", "num_traces": 100000, "expected_new_traces_per_sec": 10000,
            "policies": [
                {"name": "errors-policy", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "latency-policy", "type": "latency", "latency": {"threshold_ms": 1000}},
                {"name": "forced-sampling-policy", "type": "string_attribute",
                 "string_attribute": {"key": "http.request.header.x-force-trace", "values": ["true"]}},
                {"name": "probabilistic-policy", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}},
            ]
        }))
        .unwrap();
        assert_eq!(c.decision_wait_ns, 10_000_000_000);
        assert_eq!(c.num_traces, 100_000);
        assert_eq!(
            c.policy_names(),
            [
                "errors-policy",
                "latency-policy",
                "forced-sampling-policy",
                "probabilistic-policy"
            ]
        );
        // The forced-sampling key, and the propagation audit's: service.name, 9 destination keys (7 entries,
        // 2 of them with a port), 2 to ignore, 5 more of self-descriptions (server.address/port counted once).
        assert_eq!(c.attr_keys.len(), 1 + 1 + 9 + 2 + 5);
        assert_eq!(c.policies[2].slot, Some(0));
    }

    /// Scenario: the forced-sampling policy with and without `tailsample.strict_reference_matching`.
    /// Guarantees: by default the header key's underscore spelling reads into the policy's slot and the policy
    /// matches array elements; strict, neither; `normalized()` says which, and loads back as itself.
    #[test]
    fn strict_reference_matching_switch() {
        let doc = |t: Value| {
            json!({
                "tailsample": t,
                "policies": [{"name": "forced", "type": "string_attribute",
                    "string_attribute": {"key": "http.request.header.x-force-trace", "values": ["true"]}}]
            })
        };
        let under = "http.request.header.x_force_trace";
        let lenient = load(doc(json!({}))).unwrap();
        assert!(!lenient.strict_reference_matching);
        assert_eq!(lenient.attr_keys.index_of_str(under), Some(0));
        assert!(matches!(&lenient.folders[0].1, Kind::StringAttribute(p) if p.match_elements));
        assert_eq!(
            lenient.normalized()["tailsample"]["strict_reference_matching"],
            json!(false)
        );
        let strict = load(doc(json!({"strict_reference_matching": true}))).unwrap();
        assert!(strict.strict_reference_matching);
        assert_eq!(strict.attr_keys.index_of_str(under), None);
        assert!(matches!(&strict.folders[0].1, Kind::StringAttribute(p) if !p.match_elements));
        let n = strict.normalized();
        assert_eq!(n["tailsample"]["strict_reference_matching"], json!(true));
        assert_eq!(load(n.clone()).unwrap().normalized(), n);
        let e = load(doc(json!({"strict_reference_matching": "yes"}))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tailsample.strict_reference_matching: "),
            "{e}"
        );
    }

    #[test]
    fn durations_print_as_go_does_and_parse_back() {
        for (ns, text) in [
            (10_000_000_000i64, "10s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (500_000_000, "500ms"),
            (0, "0s"),
        ] {
            assert_eq!(go_duration(ns), text);
            assert_eq!(node::parse_go_duration(text), Ok(ns));
        }
    }

    macro_rules! config_errors {
        ($($name:ident: $cfg:expr => $msg:expr;)*) => {$(
            #[test]
            fn $name() {
                let e = load($cfg).unwrap_err();
                assert_eq!(e.to_string(), $msg);
            }
        )*};
    }

    /// Scenario: values the reference v0.161.0 accepts, written as its decoder takes them. Guarantees: the
    /// same meaning here.
    #[test]
    fn reference_readings_are_accepted() {
        let c = load(json!({"num_traces": 10.0, "decision_cache": {"sampled_cache_size": -1},
            "policies": [{"name": "a", "type": "status_code", "status_code": {"status_codes": "ERROR,OK"}},
                         {"name": "b", "type": "string_attribute", "string_attribute": {"key": "k", "values": "x"}},
                         {"name": "c", "type": "latency", "latency": {"threshold_ms": 1e3}}]}))
        .unwrap();
        assert_eq!(c.num_traces, 10);
        assert_eq!(c.sampled_cache_size, 0);
        assert_eq!(c.policies.len(), 3);
    }

    config_errors! {
        threshold_must_be_an_integer:
            json!({"policies": [{"name": "a", "type": "always_sample"}, {"name": "b", "type": "latency", "latency": {"threshold_ms": "1s"}}]})
            => "policies[1].latency.threshold_ms: expected an integer, got the string \"1s\"";
        unknown_type_lists_supported:
            json!({"policies": [{"name": "a", "type": "sometimes"}]})
            => "policies[0].type: unknown policy type \"sometimes\"; supported: always_sample, status_code, latency, probabilistic, string_attribute, numeric_attribute, boolean_attribute, span_count, trace_state, trace_flags, rate_limiting, bytes_limiting, and, not, drop, composite, ottl_condition, trace_aggregate, latency_percentile, adaptive";
        duplicate_names:
            json!({"policies": [{"name": "a", "type": "always_sample"}, {"name": "a", "type": "always_sample"}]})
            => "policies[1].name: duplicate policy name \"a\" (also policies[0])";
        missing_policies:
            json!({"decision_wait": "1s"})
            => "policies: is required: a list of policies, each with a name and a type";
        bad_duration:
            json!({"decision_wait": "10", "policies": [{"name": "a", "type": "always_sample"}]})
            => "decision_wait: invalid duration \"10\": missing unit (ns, us, ms, s, m or h)";
        unknown_top_level_key:
            json!({"decision_wiat": "10s", "policies": [{"name": "a", "type": "always_sample"}]})
            => "decision_wiat: unknown key; known keys here: block_on_overflow, decision_cache, decision_wait, decision_wait_after_root_received, drop_pending_traces_on_shutdown, expected_new_traces_per_sec, maximum_trace_size_bytes, num_shards, num_traces, policies, sample_on_first_match, sampling_strategy, tail_storage, tailsample";
        tail_storage_names_an_extension:
            json!({"tail_storage": 5, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tail_storage: must name a file_storage extension (file_storage or file_storage/<name>), got the number 5";
        zero_num_traces:
            json!({"num_traces": 0, "policies": [{"name": "a", "type": "always_sample"}]})
            => "num_traces: must be at least 1, got 0 (the reference accepts it and then holds one trace at a time: \
                each new trace evicts the one before)";
        // Values the reference v0.161.0 accepts and tailsample refuses: the message says how the reference reads them.
        bare_number_duration:
            json!({"decision_wait": 30, "policies": [{"name": "a", "type": "always_sample"}]})
            => "decision_wait: expected a duration such as \"10s\" or \"500ms\", got the number 30 (the reference \
                reads a bare number as nanoseconds: 30ns)";
        zero_decision_wait:
            json!({"decision_wait": "0s", "policies": [{"name": "a", "type": "always_sample"}]})
            => "decision_wait: must be a positive duration (the reference accepts it and decides each trace at its \
                next 1-second tick, as with 1s)";
        fractional_integer:
            json!({"policies": [{"name": "a", "type": "latency", "latency": {"threshold_ms": 1.5}}]})
            => "policies[0].latency.threshold_ms: expected an integer, got 1.5 (the reference truncates it to 1)";
        negative_latency:
            json!({"policies": [{"name": "a", "type": "latency", "latency": {"threshold_ms": -5}}]})
            => "policies[0].latency.threshold_ms: must be at least 0, got -5 (the reference accepts it and then \
                samples every trace)";
        empty_policies:
            json!({"policies": []})
            => "policies: expected at least one policy (the reference accepts an empty list and then samples no trace)";
        empty_and:
            json!({"policies": [{"name": "a", "type": "and", "and": {"and_sub_policy": []}}]})
            => "policies[0].and.and_sub_policy: expected at least one policy (the reference accepts an empty list \
                and then samples every trace)";
        zero_rate:
            json!({"policies": [{"name": "a", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 0}}]})
            => "policies[0].rate_limiting.spans_per_second: must be a positive number (the reference accepts 0 and \
                then samples no trace)";
        missing_name:
            json!({"policies": [{"type": "always_sample"}]})
            => "policies[0].name: is required";
        red_buckets_must_increase:
            json!({"tailsample": {"red_metrics": {"histogram_buckets": ["10ms", "5ms"]}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.red_metrics.histogram_buckets[1]: bucket bounds must be positive and increasing";
        red_buckets_are_durations:
            json!({"tailsample": {"red_metrics": {"histogram_buckets": [5]}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.red_metrics.histogram_buckets[0]: expected a duration such as \"250ms\", got the number 5";
        adjusted_counts_precision:
            json!({"tailsample": {"adjusted_counts": {"precision": 15}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.adjusted_counts.precision: must be between 1 and 14 hex digits, got 15";
        adjusted_counts_unknown_key:
            json!({"tailsample": {"adjusted_counts": {"atribute": "x"}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.adjusted_counts.atribute: unknown key; known keys here: attribute, precision, tracestate";
        probabilistic_mode:
            json!({"policies": [{"name": "a", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5, "mode": "consistent"}}]})
            => "policies[0].probabilistic.mode: unknown mode \"consistent\"; supported: hash_seed, equalizing, proportional";
        audit_destination_mapping_needs_one_kind:
            json!({"tailsample": {"propagation_audit": {"destination_attributes": ["peer.service", {"name": "a", "url": "b"}]}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.propagation_audit.destination_attributes[1]: give exactly one of name, address (with an optional port) or url";
        audit_destination_not_a_number:
            json!({"tailsample": {"propagation_audit": {"destination_attributes": [5]}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.propagation_audit.destination_attributes[0]: expected an attribute key or a mapping {name: K}, {address: K, port: K} or {url: K}, got the number 5";
        audit_address_ttl_positive:
            json!({"tailsample": {"propagation_audit": {"address_ttl": "0s"}}, "policies": [{"name": "a", "type": "always_sample"}]})
            => "tailsample.propagation_audit.address_ttl: must be a positive duration";
        too_many_keyed:
            json!({"policies": (0..5).map(|i| json!({"name": format!("p{i}"), "type": "latency_percentile"})).collect::<Vec<_>>()})
            => "policies: at most 4 latency_percentile and adaptive policies per processor";
    }

    /// Scenario: `destination_attributes` in both forms. Guarantees: a plain key reads as its convention
    /// (address + port, URL, name), a mapping as written; both print back as given.
    #[test]
    fn audit_destinations_parse_and_print_back() {
        let c = load(json!({"tailsample": {"propagation_audit": {
            "destination_attributes": ["server.address", "http.url", "peer.service",
                                       {"address": "app.host", "port": "app.port"}, {"url": "app.link"},
                                       {"name": "server.address"}],
            "max_addresses": 10, "address_ttl": "5m"}},
            "policies": [{"name": "a", "type": "always_sample"}]}))
        .unwrap();
        let a = c.propagation_audit.as_ref().unwrap();
        assert_eq!(
            a.destination_attributes,
            vec![
                DestinationSource::Address {
                    address: "server.address".into(),
                    port: "server.port".into()
                },
                DestinationSource::Url("http.url".into()),
                DestinationSource::Name("peer.service".into()),
                DestinationSource::Address {
                    address: "app.host".into(),
                    port: "app.port".into()
                },
                DestinationSource::Url("app.link".into()),
                DestinationSource::Name("server.address".into()),
            ]
        );
        assert_eq!((a.max_addresses, a.address_ttl_ns), (10, 300_000_000_000));
        let printed = &c.normalized()["tailsample"]["propagation_audit"];
        assert_eq!(
            printed["destination_attributes"],
            json!(["server.address", "http.url", "peer.service",
                   {"address": "app.host", "port": "app.port"}, {"url": "app.link"}, {"name": "server.address"}])
        );
        assert_eq!(printed["address_ttl"], json!("5m0s"));
        for k in [
            "app.host",
            "app.port",
            "app.link",
            "net.host.name",
            "host.name",
        ] {
            assert!(c.attr_keys.index_of_str(k).is_some(), "{k}");
        }
    }

    /// Scenario: the contract for the tailsample-only types, as written. Guarantees: it loads, with the
    /// defaults stated (p99 over 5 minutes by root service and name; Refinery's EMA settings).
    #[test]
    fn contract_names_load() {
        let c = load(json!({"policies": [
            {"name": "p99", "type": "latency_percentile", "latency_percentile": {"percentile": 99}},
            {"name": "adapt", "type": "adaptive", "adaptive": {"goal_sample_rate": 10, "key_fields": ["service.name", "http.route"]}},
            {"name": "tokens", "type": "trace_aggregate",
             "trace_aggregate": {"key": "gen_ai.usage.input_tokens", "function": "sum", "min_value": 50000}},
        ]}))
        .unwrap();
        assert_eq!(c.keyers.len(), 2);
        assert_eq!((c.keyers[0].slot, c.keyers[1].slot), (0, 1));
        // service.name, http.route, gen_ai.usage.input_tokens, and the audit's 16 others.
        assert_eq!(c.attr_keys.len(), 3 + 16);
        assert!(c.reads_ot, "adaptive reads the spans' rv");
        let Kind::LatencyPercentile(p) = &c.policies[0].kind else {
            panic!()
        };
        assert_eq!(
            (p.settings.percentile, p.settings.window_ns),
            (99.0, 300_000_000_000)
        );
        let Kind::Adaptive(a) = &c.policies[1].kind else {
            panic!()
        };
        assert_eq!(
            (
                a.settings.goal_sample_rate,
                a.settings.adjustment_interval_ns,
                a.settings.max_keys
            ),
            (10, 15_000_000_000, 500)
        );
    }
}
