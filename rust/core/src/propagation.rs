//! The propagation-gap audit: where trace context is lost between services, measured over every decided trace.
//!
//! A service that receives `traceparent` and does not forward it breaks the trace: the caller's CLIENT span
//! has no SERVER child, and whatever the callee does lands in another trace. Nobody notices until an incident
//! needs the trace. This module finds those breaks live, over 100 % of traces (kept or not), as the seed's
//! `find_tracing_gaps` does offline over a sample:
//!
//! * a **call** is a CLIENT or PRODUCER span; it names its destination by the first of
//!   `destination_attributes` it carries (`peer.service`, `messaging.destination.name`, `server.address`,
//!   `rpc.service`, `net.peer.name`), else by the service of its SERVER/CONSUMER child;
//! * a call is **answered** when some SERVER or CONSUMER span of the trace has it as parent; otherwise it is a
//!   **gap** for the pair (caller's `service.name` → destination);
//! * a call with a CLIENT or PRODUCER child is a wrapper (two instrumentations of one call), not a call of its
//!   own; a call carrying any of `ignore_when_present` (by default `db.system`, `db.system.name`: databases
//!   are not traced services) or naming one of `ignore_destinations` is not audited;
//! * a destination is **traced** when some span of the shard's traffic has it as `service.name`, or some call
//!   to it was answered: a gap to a traced destination is a service dropping the context; a gap to one never
//!   seen (an external API, a service without instrumentation) may be expected, and `ignore_destinations`
//!   silences it;
//! * a span whose parent is not in the trace is an **orphan** and makes the trace **broken**, counted for the
//!   orphan's service.
//!
//! A trace is audited once, when it is decided, with the spans it has then; spans arriving after the decision
//! are not audited (a callee whose spans come later than `decision_wait` shows as a gap).
//!
//! # Bounds
//! Names (services and destinations) are interned per shard, at most `max_names`; later names count under
//! `(other)` and in `names_overflowed`. Pairs are at most `max_pairs` per shard, then one overflow pair;
//! each pair keeps its `examples` most recent gap trace IDs. A buffered trace holds one 24-byte [`AuditSpan`]
//! per span until it is decided.

use std::collections::HashMap;

use ahash::RandomState;

/// OTLP `Span.SpanKind` values.
pub mod span_kind {
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
    pub const PRODUCER: u8 = 4;
    pub const CONSUMER: u8 = 5;
}

/// `tailsample.propagation_audit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    pub destination_attributes: Vec<String>,
    pub ignore_when_present: Vec<String>,
    pub ignore_destinations: Vec<String>,
    pub max_pairs: usize,
    pub max_names: usize,
    pub examples: usize,
}

/// Destination and ignore attributes together, at most.
pub const MAX_AUDIT_KEYS: usize = 16;

/// Names per shard at most: ids are `u16`, two of them reserved.
pub const MAX_NAMES_LIMIT: usize = u16::MAX as usize - 2;

impl Default for AuditConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        AuditConfig {
            destination_attributes: strings(&[
                "peer.service",
                "messaging.destination.name",
                "server.address",
                "rpc.service",
                "net.peer.name",
            ]),
            ignore_when_present: strings(&["db.system", "db.system.name"]),
            ignore_destinations: Vec::new(),
            max_pairs: 1000,
            max_names: 4096,
            examples: 5,
        }
    }
}

/// What the audit keeps of one buffered span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSpan {
    pub span_id: u64,
    /// 0 for a root (an all-zero span ID is invalid in W3C trace context).
    pub parent: u64,
    pub service: u16,
    /// The named destination of a call ([`NONE`] when the span names none or is not a call).
    pub destination: u16,
    pub kind: u8,
    /// The span carries an `ignore_when_present` attribute.
    pub ignored: bool,
}

/// Name id of "no name".
pub const NONE: u16 = 0;
/// Name id of every name past `max_names`.
pub const OTHER: u16 = 1;

/// Interned names, bounded.
#[derive(Debug)]
pub struct Names {
    index: HashMap<Box<str>, u16, RandomState>,
    names: Vec<Box<str>>,
    /// Per name: seen as some span's `service.name`.
    is_service: Vec<bool>,
    max: usize,
    pub overflowed: u64,
}

impl Names {
    fn new(max: usize) -> Self {
        Names {
            index: HashMap::default(),
            names: vec!["".into(), "(other)".into()],
            is_service: vec![false, false],
            max: max.min(MAX_NAMES_LIMIT),
            overflowed: 0,
        }
    }

    /// The id of `name`, interning it while there is room.
    pub fn id(&mut self, name: &str) -> u16 {
        if name.is_empty() {
            return NONE;
        }
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        if self.names.len() - 2 >= self.max {
            self.overflowed += 1;
            return OTHER;
        }
        let id = self.names.len() as u16;
        self.names.push(name.into());
        self.is_service.push(false);
        self.index.insert(name.into(), id);
        id
    }

    /// The id of a `service.name`, marking it as a traced service.
    pub fn service_id(&mut self, name: &str) -> u16 {
        let id = self.id(name);
        if id != NONE && id != OTHER {
            self.is_service[id as usize] = true;
        }
        id
    }

    pub fn name(&self, id: u16) -> &str {
        &self.names[id as usize]
    }

    fn bytes(&self) -> usize {
        self.names.iter().map(|n| 2 * n.len() + 40).sum()
    }
}

/// The most recent trace IDs, at most `cap`.
#[derive(Debug, Clone, Default)]
struct Examples {
    ids: Vec<u128>,
    next: usize,
}

impl Examples {
    fn add(&mut self, id: u128, cap: usize) {
        if cap == 0 {
            return;
        }
        if self.ids.len() < cap {
            self.ids.push(id);
        } else {
            self.ids[self.next] = id;
        }
        self.next = (self.next + 1) % cap;
    }

    /// Most recent first.
    fn recent(&self) -> Vec<u128> {
        let n = self.ids.len();
        (0..n)
            .map(|i| self.ids[(self.next + n - 1 - i) % n])
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
struct PairCounts {
    calls: u64,
    gaps: u64,
    gap_traces: u64,
    callee: u16,
    examples: Examples,
}

#[derive(Debug, Clone, Default)]
struct BrokenCounts {
    traces: u64,
    orphan_spans: u64,
    examples: Examples,
}

/// What the decision log keeps of a trace's audit (saturating).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditCounts {
    pub gaps: u16,
    pub orphans: u16,
}

impl From<TraceAudit> for AuditCounts {
    fn from(a: TraceAudit) -> Self {
        let sat = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        AuditCounts {
            gaps: sat(a.gaps),
            orphans: sat(a.orphans),
        }
    }
}

/// What the audit found in one trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceAudit {
    pub calls: u32,
    pub gaps: u32,
    pub orphans: u32,
}

/// One shard's audit state.
#[derive(Debug)]
pub struct PropagationAudit {
    cfg: AuditConfig,
    pub names: Names,
    ignored: Vec<u16>,
    pairs: HashMap<(u16, u16), PairCounts, RandomState>,
    overflow: PairCounts,
    broken: HashMap<u16, BrokenCounts, RandomState>,
    totals: Totals,
    // Scratch, reused per trace.
    ids: Vec<u64>,
    children: Vec<(u64, u8, u16)>,
    seen: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub traces_audited: u64,
    pub traces_with_gaps: u64,
    pub traces_broken: u64,
    pub calls: u64,
    pub gaps: u64,
    pub orphan_spans: u64,
    pub overflow_calls: u64,
}

impl PropagationAudit {
    pub fn new(cfg: AuditConfig) -> Self {
        let mut names = Names::new(cfg.max_names);
        let ignored = cfg
            .ignore_destinations
            .iter()
            .map(|d| names.id(d))
            .collect();
        PropagationAudit {
            cfg,
            names,
            ignored,
            pairs: HashMap::default(),
            overflow: PairCounts::default(),
            broken: HashMap::default(),
            totals: Totals::default(),
            ids: Vec::new(),
            children: Vec::new(),
            seen: Vec::new(),
        }
    }

    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Distinct pairs held (the overflow pair not included).
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// Bytes held by names, pairs and examples (approximate, capacities not included).
    pub fn memory_bytes(&self) -> usize {
        let per_pair = std::mem::size_of::<((u16, u16), PairCounts)>() + 8 + 16 * self.cfg.examples;
        let per_broken = std::mem::size_of::<(u16, BrokenCounts)>() + 8 + 16 * self.cfg.examples;
        self.names.bytes() + self.pairs.len() * per_pair + self.broken.len() * per_broken
    }

    /// Audits one decided trace's spans.
    pub fn audit(&mut self, trace_id: u128, spans: &[AuditSpan]) -> TraceAudit {
        let mut found = TraceAudit::default();
        self.ids.clear();
        self.ids.extend(spans.iter().map(|s| s.span_id));
        self.ids.sort_unstable();
        // (parent, child kind, child service) of every span with a parent, sorted by parent.
        self.children.clear();
        self.children.extend(
            spans
                .iter()
                .filter(|s| s.parent != 0)
                .map(|s| (s.parent, s.kind, s.service)),
        );
        self.children.sort_unstable();

        // Orphans: their parent never arrived.
        self.seen.clear();
        for s in spans {
            if s.parent != 0 && self.ids.binary_search(&s.parent).is_err() {
                found.orphans += 1;
                let b = self.broken.entry(s.service).or_default();
                b.orphan_spans += 1;
                if !self.seen.contains(&(s.service, NONE)) {
                    self.seen.push((s.service, NONE));
                    b.traces += 1;
                    b.examples.add(trace_id, self.cfg.examples);
                }
            }
        }

        // Calls and gaps.
        self.seen.clear();
        for s in spans {
            if !matches!(s.kind, span_kind::CLIENT | span_kind::PRODUCER) || s.ignored {
                continue;
            }
            let mut answered_by = None;
            let mut wrapper = false;
            let from = self.children.partition_point(|c| c.0 < s.span_id);
            for &(_, kind, service) in self.children[from..]
                .iter()
                .take_while(|c| c.0 == s.span_id)
            {
                match kind {
                    span_kind::SERVER | span_kind::CONSUMER => {
                        answered_by.get_or_insert(service);
                    }
                    span_kind::CLIENT | span_kind::PRODUCER => wrapper = true,
                    _ => {}
                }
            }
            if wrapper && answered_by.is_none() {
                continue;
            }
            let destination = match (s.destination, answered_by) {
                (NONE, Some(callee)) => callee,
                (NONE, None) => continue,
                (d, _) => d,
            };
            if self.ignored.contains(&destination) {
                continue;
            }
            found.calls += 1;
            self.totals.calls += 1;
            let key = (s.service, destination);
            let pair = if self.pairs.len() < self.cfg.max_pairs || self.pairs.contains_key(&key) {
                self.pairs.entry(key).or_default()
            } else {
                self.totals.overflow_calls += 1;
                &mut self.overflow
            };
            pair.calls += 1;
            match answered_by {
                Some(callee) => {
                    if pair.callee == NONE {
                        pair.callee = callee;
                    }
                }
                None => {
                    found.gaps += 1;
                    self.totals.gaps += 1;
                    pair.gaps += 1;
                    if !self.seen.contains(&key) {
                        self.seen.push(key);
                        pair.gap_traces += 1;
                        pair.examples.add(trace_id, self.cfg.examples);
                    }
                }
            }
        }
        self.totals.traces_audited += 1;
        self.totals.traces_with_gaps += u64::from(found.gaps > 0);
        self.totals.traces_broken += u64::from(found.orphans > 0);
        self.totals.orphan_spans += u64::from(found.orphans);
        found
    }

    /// The audit as plain data, names resolved.
    pub fn report(&self) -> GapReport {
        let n = |id: u16| self.names.name(id).to_string();
        let pair = |key: Option<(u16, u16)>, p: &PairCounts| GapPair {
            source: key.map_or_else(String::new, |k| n(k.0)),
            destination: key.map_or_else(String::new, |k| n(k.1)),
            callee: (p.callee != NONE).then(|| n(p.callee)),
            destination_traced: key
                .is_some_and(|k| p.callee != NONE || self.names.is_service[k.1 as usize]),
            calls: p.calls,
            gaps: p.gaps,
            gap_traces: p.gap_traces,
            examples: p.examples.recent(),
            overflow: key.is_none(),
        };
        let mut pairs: Vec<GapPair> = self.pairs.iter().map(|(k, p)| pair(Some(*k), p)).collect();
        if self.overflow.calls > 0 {
            pairs.push(pair(None, &self.overflow));
        }
        let broken = self
            .broken
            .iter()
            .map(|(&s, b)| BrokenService {
                service: n(s),
                traces: b.traces,
                orphan_spans: b.orphan_spans,
                examples: b.examples.recent(),
            })
            .collect();
        let mut r = GapReport {
            totals: self.totals,
            names_overflowed: self.names.overflowed,
            pairs,
            broken,
        };
        r.sort();
        r
    }
}

/// Calls from one service to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapPair {
    pub source: String,
    /// As the calling spans name it.
    pub destination: String,
    /// The service of a SERVER/CONSUMER child seen answering this pair, if any.
    pub callee: Option<String>,
    /// The destination is a traced service: seen as a `service.name`, or answering some call.
    pub destination_traced: bool,
    pub calls: u64,
    pub gaps: u64,
    pub gap_traces: u64,
    /// Trace IDs with a gap for this pair, most recent first.
    pub examples: Vec<u128>,
    /// Calls of pairs past `max_pairs` (source and destination empty).
    pub overflow: bool,
}

/// Orphan spans of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenService {
    pub service: String,
    pub traces: u64,
    pub orphan_spans: u64,
    pub examples: Vec<u128>,
}

/// The audit of one shard, or of an engine (shards merged): pairs worst first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GapReport {
    pub totals: Totals,
    pub names_overflowed: u64,
    pub pairs: Vec<GapPair>,
    pub broken: Vec<BrokenService>,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.traces_audited += o.traces_audited;
        self.traces_with_gaps += o.traces_with_gaps;
        self.traces_broken += o.traces_broken;
        self.calls += o.calls;
        self.gaps += o.gaps;
        self.orphan_spans += o.orphan_spans;
        self.overflow_calls += o.overflow_calls;
    }
}

impl GapReport {
    /// Worst first: most gaps, then most calls, then by name; the overflow pair last.
    fn sort(&mut self) {
        self.pairs.sort_by(|a, b| {
            (a.overflow, b.gaps, b.calls, &a.source, &a.destination).cmp(&(
                b.overflow,
                a.gaps,
                a.calls,
                &b.source,
                &b.destination,
            ))
        });
        self.broken.sort_by(|a, b| {
            (b.traces, b.orphan_spans, &a.service).cmp(&(a.traces, a.orphan_spans, &b.service))
        });
    }

    /// Adds another shard's report; past `max_pairs` distinct pairs, the least broken go to the overflow pair.
    pub fn merge(&mut self, other: GapReport, max_pairs: usize, examples: usize) {
        self.totals.add(&other.totals);
        self.names_overflowed += other.names_overflowed;
        let mut index: HashMap<(bool, String, String), usize> = self
            .pairs
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.overflow, p.source.clone(), p.destination.clone()), i))
            .collect();
        for p in other.pairs {
            match index.get(&(p.overflow, p.source.clone(), p.destination.clone())) {
                Some(&i) => {
                    let q = &mut self.pairs[i];
                    q.calls += p.calls;
                    q.gaps += p.gaps;
                    q.gap_traces += p.gap_traces;
                    if q.callee.is_none() {
                        q.callee = p.callee;
                    }
                    q.destination_traced |= p.destination_traced;
                    q.examples.extend(p.examples);
                    q.examples.truncate(examples);
                }
                None => {
                    index.insert(
                        (p.overflow, p.source.clone(), p.destination.clone()),
                        self.pairs.len(),
                    );
                    self.pairs.push(p);
                }
            }
        }
        let mut broken: HashMap<String, usize> = self
            .broken
            .iter()
            .enumerate()
            .map(|(i, b)| (b.service.clone(), i))
            .collect();
        for b in other.broken {
            match broken.get(&b.service) {
                Some(&i) => {
                    let c = &mut self.broken[i];
                    c.traces += b.traces;
                    c.orphan_spans += b.orphan_spans;
                    c.examples.extend(b.examples);
                    c.examples.truncate(examples);
                }
                None => {
                    broken.insert(b.service.clone(), self.broken.len());
                    self.broken.push(b);
                }
            }
        }
        self.sort();
        // Shards saw different pairs: keep the `max_pairs` worst, fold the rest into the overflow pair.
        let regular = self.pairs.iter().filter(|p| !p.overflow).count();
        if regular > max_pairs {
            let mut overflow = match self.pairs.last() {
                Some(p) if p.overflow => self.pairs.pop(),
                _ => None,
            }
            .unwrap_or(GapPair {
                source: String::new(),
                destination: String::new(),
                callee: None,
                destination_traced: false,
                calls: 0,
                gaps: 0,
                gap_traces: 0,
                examples: Vec::new(),
                overflow: true,
            });
            for p in self.pairs.drain(max_pairs..) {
                overflow.calls += p.calls;
                overflow.gaps += p.gaps;
                overflow.gap_traces += p.gap_traces;
                self.totals.overflow_calls += p.calls;
                if overflow.examples.len() < examples {
                    overflow.examples.extend(p.examples);
                    overflow.examples.truncate(examples);
                }
            }
            self.pairs.push(overflow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRONTEND: &str = "frontend";

    struct Trace {
        audit: PropagationAudit,
        spans: Vec<AuditSpan>,
    }

    impl Trace {
        fn new(cfg: AuditConfig) -> Self {
            Trace {
                audit: PropagationAudit::new(cfg),
                spans: Vec::new(),
            }
        }

        fn span(&mut self, id: u64, parent: u64, service: &str, kind: u8, dest: &str) -> &mut Self {
            let service = self.audit.names.service_id(service);
            let destination = self.audit.names.id(dest);
            self.spans.push(AuditSpan {
                span_id: id,
                parent,
                service,
                destination,
                kind,
                ignored: false,
            });
            self
        }

        fn audit(&mut self, trace_id: u128) -> TraceAudit {
            let spans = std::mem::take(&mut self.spans);
            self.audit.audit(trace_id, &spans)
        }
    }

    use span_kind::{CLIENT, CONSUMER, PRODUCER, SERVER};

    fn audited(calls: u32, gaps: u32, orphans: u32) -> TraceAudit {
        TraceAudit {
            calls,
            gaps,
            orphans,
        }
    }
    const INTERNAL: u8 = 1;

    #[test]
    fn answered_call_is_no_gap_and_names_its_callee() {
        let mut t = Trace::new(AuditConfig::default());
        t.span(1, 0, FRONTEND, SERVER, "")
            .span(2, 1, FRONTEND, CLIENT, "cart:8080")
            .span(3, 2, "cart", SERVER, "");
        let found = t.audit(7);
        assert_eq!(found, audited(1, 0, 0));
        let r = t.audit.report();
        assert_eq!(r.pairs.len(), 1);
        let p = &r.pairs[0];
        assert_eq!(
            (p.source.as_str(), p.destination.as_str()),
            (FRONTEND, "cart:8080")
        );
        assert_eq!(p.callee.as_deref(), Some("cart"));
        assert_eq!((p.calls, p.gaps), (1, 0));
        assert_eq!(r.totals.traces_with_gaps, 0);
    }

    #[test]
    fn missing_server_span_is_one_gap_for_the_pair() {
        let mut t = Trace::new(AuditConfig::default());
        t.span(1, 0, FRONTEND, SERVER, "")
            .span(2, 1, FRONTEND, CLIENT, "cart")
            .span(3, 2, "cart", SERVER, "")
            .span(4, 3, "cart", CLIENT, "payments");
        let found = t.audit(42);
        assert_eq!(found, audited(2, 1, 0));
        let r = t.audit.report();
        let worst = &r.pairs[0];
        assert_eq!(
            (worst.source.as_str(), worst.destination.as_str()),
            ("cart", "payments")
        );
        assert_eq!((worst.calls, worst.gaps, worst.gap_traces), (1, 1, 1));
        assert_eq!(worst.examples, vec![42]);
        assert!(
            !worst.destination_traced,
            "payments was never seen as a service"
        );
        assert_eq!(r.pairs[1].gaps, 0);
        assert!(r.pairs[1].destination_traced);
        assert_eq!(r.totals.traces_with_gaps, 1);
        assert_eq!(r.totals.traces_broken, 0);
    }

    #[test]
    fn a_destination_seen_as_a_service_elsewhere_is_traced() {
        let mut t = Trace::new(AuditConfig::default());
        t.span(1, 0, "cart", SERVER, "")
            .span(2, 1, "cart", CLIENT, "payments");
        t.audit(1);
        t.span(1, 0, "payments", SERVER, "");
        t.audit(2);
        let r = t.audit.report();
        assert_eq!(r.pairs[0].destination, "payments");
        assert!(r.pairs[0].destination_traced);
        assert!(r.pairs[0].callee.is_none());
    }

    #[test]
    fn orphan_marks_the_trace_broken_for_its_service() {
        let mut t = Trace::new(AuditConfig::default());
        t.span(1, 0, FRONTEND, SERVER, "")
            .span(5, 99, "inventory", SERVER, "")
            .span(6, 5, "inventory", INTERNAL, "")
            .span(7, 98, "inventory", SERVER, "");
        let found = t.audit(9);
        assert_eq!(found.orphans, 2);
        let r = t.audit.report();
        assert_eq!(r.totals.traces_broken, 1);
        assert_eq!(r.broken.len(), 1);
        let b = &r.broken[0];
        assert_eq!(
            (b.service.as_str(), b.traces, b.orphan_spans),
            ("inventory", 1, 2)
        );
        assert_eq!(b.examples, vec![9]);
    }

    #[test]
    fn producer_needs_a_consumer_and_wrappers_and_databases_are_not_calls() {
        let cfg = AuditConfig {
            ignore_destinations: vec!["api.stripe.com".into()],
            ..AuditConfig::default()
        };
        let mut t = Trace::new(cfg);
        t.span(1, 0, "orders", SERVER, "")
            .span(2, 1, "orders", PRODUCER, "order-events")
            .span(3, 2, "billing", CONSUMER, "")
            .span(4, 1, "orders", PRODUCER, "audit-events")
            // A wrapper CLIENT around the HTTP client's CLIENT span: only the inner one is a call.
            .span(5, 1, "orders", CLIENT, "stock")
            .span(6, 5, "orders", CLIENT, "stock")
            .span(7, 1, "orders", CLIENT, "api.stripe.com");
        let orders = t.audit.names.id("orders");
        t.spans.push(AuditSpan {
            span_id: 8,
            parent: 1,
            service: orders,
            destination: 0,
            kind: CLIENT,
            ignored: true,
        });
        let found = t.audit(1);
        // order-events answered; audit-events and the inner stock call are gaps.
        assert_eq!(found, audited(3, 2, 0));
        let r = t.audit.report();
        let names: Vec<_> = r
            .pairs
            .iter()
            .map(|p| (p.destination.as_str(), p.gaps))
            .collect();
        assert_eq!(
            names,
            vec![("audit-events", 1), ("stock", 1), ("order-events", 0)]
        );
    }

    #[test]
    fn a_call_without_destination_is_named_by_its_callee() {
        let mut t = Trace::new(AuditConfig::default());
        t.span(1, 0, FRONTEND, SERVER, "")
            .span(2, 1, FRONTEND, CLIENT, "")
            .span(3, 2, "search", SERVER, "")
            .span(4, 1, FRONTEND, CLIENT, "");
        let found = t.audit(1);
        // The unnamed, unanswered call cannot be attributed: not counted.
        assert_eq!(found, audited(1, 0, 0));
        assert_eq!(t.audit.report().pairs[0].destination, "search");
    }

    #[test]
    fn pairs_and_names_are_bounded() {
        let cfg = AuditConfig {
            max_pairs: 3,
            max_names: 6,
            examples: 2,
            ..AuditConfig::default()
        };
        let mut t = Trace::new(cfg);
        for i in 0..10u64 {
            t.span(1, 0, FRONTEND, SERVER, "")
                .span(2, 1, FRONTEND, CLIENT, &format!("dest-{i}"));
            t.audit(u128::from(i));
        }
        let r = t.audit.report();
        assert_eq!(r.pairs.len(), 4, "3 pairs and the overflow pair");
        let overflow = r.pairs.last().unwrap();
        assert!(overflow.overflow);
        assert_eq!(overflow.calls, 7);
        assert_eq!(
            overflow.examples,
            vec![9, 8],
            "most recent first, at most 2"
        );
        // frontend + 5 destinations interned, the other 5 under (other).
        assert_eq!(r.names_overflowed, 5);
        assert_eq!(r.totals.overflow_calls, 7);
        assert_eq!(r.totals.gaps, 10);
    }

    #[test]
    fn reports_merge_by_name_and_stay_bounded() {
        let mut a = Trace::new(AuditConfig::default());
        a.span(1, 0, FRONTEND, SERVER, "")
            .span(2, 1, FRONTEND, CLIENT, "cart");
        a.audit(1);
        let mut b = Trace::new(AuditConfig::default());
        b.span(1, 0, "other", SERVER, "") // interned first: different ids in b
            .span(3, 0, FRONTEND, SERVER, "")
            .span(2, 3, FRONTEND, CLIENT, "cart")
            .span(4, 3, FRONTEND, CLIENT, "search");
        b.audit(2);
        let mut r = a.audit.report();
        r.merge(b.audit.report(), 1, 5);
        assert_eq!(r.totals.traces_audited, 2);
        assert_eq!(r.pairs.len(), 2);
        assert_eq!(r.pairs[0].destination, "cart");
        assert_eq!((r.pairs[0].gaps, r.pairs[0].gap_traces), (2, 2));
        assert_eq!(r.pairs[0].examples, vec![1, 2]);
        assert!(r.pairs[1].overflow);
        assert_eq!(r.pairs[1].gaps, 1);
    }
}
