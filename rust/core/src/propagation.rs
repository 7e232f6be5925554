//! The propagation-gap audit: where trace context is lost between services, measured over every decided trace.
//!
//! A service that receives `traceparent` and does not forward it breaks the trace: the caller's CLIENT span
//! has no SERVER child, and whatever the callee does lands in another trace. Nobody notices until an incident
//! needs the trace. This module finds those breaks live, over 100 % of traces (kept or not), as the seed's
//! `find_tracing_gaps` does offline over a sample:
//!
//! * a **call** is a CLIENT or PRODUCER span; it names its destination by the first of
//!   `destination_attributes` it carries (by default, in order: `peer.service`, `messaging.destination.name`,
//!   `rpc.service`, `server.address` + `server.port`, `net.peer.name` + `net.peer.port`, `url.full`,
//!   `http.url`), else by the service of its SERVER/CONSUMER child; one naming nothing and answered by nobody is
//!   an **unnamed** call, counted under the pair (caller → `(unnamed)`), never skipped;
//! * a destination read from an address or a URL is an **address** (`host:port`, host lowercased, IPv6 in
//!   brackets, the scheme's default port for a URL without one). SERVER and CONSUMER spans say which addresses
//!   their service answers on (`server.address`/`server.port`, `net.host.name`/`net.host.port`, `http.host`,
//!   and the resource's `host.name`/`k8s.service.name` with the span's port): every span the shard ingests
//!   feeds a bounded, aged map address → service. The callee of a broken call is in another trace, so the map
//!   cannot be learned per trace; pairs are counted per address and folded into the service's name when the
//!   report is made ([`GapReport::resolve`]), whatever the order spans arrived in;
//! * a call is **answered** when some SERVER or CONSUMER span of the trace has it as parent; otherwise it is a
//!   **gap** for the pair (caller's `service.name` → destination);
//! * a call with a CLIENT or PRODUCER child is a wrapper (two instrumentations of one call), not a call of its
//!   own; a call carrying any of `ignore_when_present` (by default `db.system`, `db.system.name`: databases
//!   are not traced services) or naming one of `ignore_destinations` (or an address whose host is one) is not
//!   audited;
//! * a destination is **traced** when some span of the shard's traffic has it as `service.name`, some call
//!   to it was answered, or it is an address some service describes itself by: a gap to a traced destination
//!   is a service dropping the context; a gap to one never seen (an external API, a service without
//!   instrumentation) may be expected, and `ignore_destinations` silences it;
//! * a span whose parent is not in the trace is an **orphan** and makes the trace **broken**, counted for the
//!   orphan's service.
//!
//! A trace is audited once, when it is decided, with the spans it has then and whether it was kept; spans
//! arriving after the decision are not audited (a callee whose spans come later than `decision_wait` shows as
//! a gap). Example trace IDs prefer kept traces (the ones a backend holds).
//!
//! # Bounds
//! Names (services and destinations) are interned per shard, at most `max_names`; later names count under
//! `(other)` and in `names_overflowed`. Pairs are at most `max_pairs` per shard, then one overflow pair;
//! each pair keeps `examples` trace IDs, kept ones first. Addresses are at most `max_addresses` per shard
//! (further ones counted in `addresses_overflowed`), forgotten `address_ttl` after a span last described them.
//! A buffered trace holds one 24-byte [`AuditSpan`] per span until it is decided.

use std::collections::HashMap;

use ahash::RandomState;

use crate::otlp::decode::{AttrKeys, AttrValue};

/// OTLP `Span.SpanKind` values.
pub mod span_kind {
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
    pub const PRODUCER: u8 = 4;
    pub const CONSUMER: u8 = 5;
}

/// One entry of `destination_attributes`: where a call's destination is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationSource {
    /// The value as it is: a service, queue or RPC service name (`peer.service`, `rpc.service`, ...).
    Name(String),
    /// A host, with the port of `port` unless the host already carries one (`server.address` +
    /// `server.port`): an address, resolvable to the service that describes itself by it.
    Address { address: String, port: String },
    /// A URL (`url.full`, `http.url`): its host and port, the scheme's default port when absent; userinfo,
    /// path and query are dropped. An address, as above.
    Url(String),
}

impl DestinationSource {
    /// A plain key as the semantic conventions define it: an address key paired with its port key, a URL key
    /// parsed as a URL, any other key a name.
    pub fn from_key(key: &str) -> Self {
        let port = match key {
            "server.address" => "server.port",
            "net.peer.name" => "net.peer.port",
            "network.peer.address" => "network.peer.port",
            "url.full" | "http.url" => return DestinationSource::Url(key.to_string()),
            _ => return DestinationSource::Name(key.to_string()),
        };
        DestinationSource::Address {
            address: key.to_string(),
            port: port.to_string(),
        }
    }

    /// The attribute keys it reads.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            DestinationSource::Name(k) | DestinationSource::Url(k) => vec![k],
            DestinationSource::Address { address, port } if port.is_empty() => vec![address],
            DestinationSource::Address { address, port } => vec![address, port],
        }
    }

    /// The key that names it in `destination_attributes` (the address or URL key).
    pub fn key(&self) -> &str {
        match self {
            DestinationSource::Name(k) | DestinationSource::Url(k) => k,
            DestinationSource::Address { address, .. } => address,
        }
    }
}

/// What SERVER and CONSUMER spans say about themselves: (address key, port key) of the span. The port key also
/// gives the port of the resource's host names, [`SELF_RESOURCE_KEYS`].
pub const SELF_SPAN_KEYS: [(&str, &str); 3] = [
    ("server.address", "server.port"),
    ("net.host.name", "net.host.port"),
    ("http.host", ""),
];
/// Resource attributes naming the host a service answers on (with the port its spans give).
pub const SELF_RESOURCE_KEYS: [&str; 2] = ["host.name", "k8s.service.name"];
/// Names a SERVER span answers to, beside its addresses: an RPC service (`rpc.service`, e.g.
/// `shop.Payments`), which gRPC clients name as their destination and which carries no address at all in some
/// instrumentations (Python's grpcio CLIENT spans).
pub const SELF_NAME_KEYS: [&str; 1] = ["rpc.service"];

/// `tailsample.propagation_audit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// In order, the first one a call carries names its destination.
    pub destination_attributes: Vec<DestinationSource>,
    pub ignore_when_present: Vec<String>,
    pub ignore_destinations: Vec<String>,
    pub max_pairs: usize,
    pub max_names: usize,
    pub examples: usize,
    /// Addresses resolved to services, per shard, at most.
    pub max_addresses: usize,
    /// An address not described again for this long is forgotten.
    pub address_ttl_ns: i64,
}

/// Destination and ignore attributes together, at most (a port key counts as one).
pub const MAX_AUDIT_KEYS: usize = 16;

/// Names per shard at most: ids are `u16`, three of them reserved.
pub const MAX_NAMES_LIMIT: usize = u16::MAX as usize - 3;

impl Default for AuditConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        AuditConfig {
            destination_attributes: [
                "peer.service",
                "messaging.destination.name",
                "rpc.service",
                "server.address",
                "net.peer.name",
                "url.full",
                "http.url",
            ]
            .iter()
            .map(|k| DestinationSource::from_key(k))
            .collect(),
            ignore_when_present: strings(&["db.system", "db.system.name"]),
            ignore_destinations: Vec::new(),
            max_pairs: 1000,
            max_names: 4096,
            examples: 5,
            max_addresses: 4096,
            address_ttl_ns: 3_600_000_000_000,
        }
    }
}

impl AuditConfig {
    /// Destination and ignore keys (what `MAX_AUDIT_KEYS` bounds).
    pub fn configured_keys(&self) -> usize {
        let d: usize = self
            .destination_attributes
            .iter()
            .map(|d| d.keys().len())
            .sum();
        d + self.ignore_when_present.len()
    }

    /// Every attribute key the audit reads, the self-descriptions' included.
    pub fn attribute_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = vec!["service.name".to_string()];
        for d in &self.destination_attributes {
            out.extend(d.keys().iter().map(|k| k.to_string()));
        }
        out.extend(self.ignore_when_present.iter().cloned());
        for (a, p) in SELF_SPAN_KEYS {
            out.push(a.to_string());
            if !p.is_empty() {
                out.push(p.to_string());
            }
        }
        out.extend(SELF_RESOURCE_KEYS.iter().map(|k| k.to_string()));
        out.extend(SELF_NAME_KEYS.iter().map(|k| k.to_string()));
        out
    }
}

/// Writes `host:port` into `out` (cleared first): the host lowercased, without a trailing dot, an IPv6 address
/// in brackets; the port carried by `host` ("10.0.0.1:8080", "[::1]:80") wins over `port` (0 or out of range:
/// none). False, and `out` empty, when there is no host.
pub fn write_address(out: &mut String, host: &str, port: i64) -> bool {
    out.clear();
    let host = host.trim();
    let (name, carried) = split_host_port(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return false;
    }
    let v6 = name.contains(':');
    if v6 {
        out.push('[');
    }
    // Copied whole and lowercased in place: `to_ascii_lowercase` leaves every non-ASCII character as it is.
    let start = out.len();
    out.push_str(name);
    out[start..].make_ascii_lowercase();
    if v6 {
        out.push(']');
    }
    let port = carried.or(u16::try_from(port).ok().filter(|&p| p != 0));
    if let Some(p) = port {
        out.push(':');
        let mut digits = [0u8; 5];
        let mut n = digits.len();
        let mut p = p;
        loop {
            n -= 1;
            digits[n] = b'0' + (p % 10) as u8;
            p /= 10;
            if p == 0 {
                break;
            }
        }
        if let Ok(d) = std::str::from_utf8(&digits[n..]) {
            out.push_str(d);
        }
    }
    true
}

/// A host and the port it carries: "h:1" → ("h", 1), "[::1]:2" → ("::1", 2), "::1" → ("::1", none).
fn split_host_port(host: &str) -> (&str, Option<u16>) {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':').and_then(port)),
            None => (rest, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p))
            if !h.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (h, port(p))
        }
        _ => (host, None),
    }
}

/// Writes a URL's `host:port` into `out` (the scheme's default port when the URL gives none; userinfo never
/// kept). False when `url` is not an absolute URL with a host.
pub fn write_url_address(out: &mut String, url: &str) -> bool {
    out.clear();
    let Some((scheme, rest)) = url.trim().split_once("://") else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => 0,
    };
    write_address(out, hostport, default)
}

/// A `destination_attributes` entry, by key index.
#[derive(Debug)]
enum Source {
    Name(usize),
    Address(usize, Option<usize>),
    Url(usize),
}

/// A port attribute: an int, or a string of digits (0: none).
fn port_of(v: AttrValue<'_>) -> i64 {
    match v {
        AttrValue::Int(p) => p,
        AttrValue::Str(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Reads what the audit needs from a span's extracted attributes: a call's destination, a SERVER/CONSUMER
/// span's self-description. Addresses are written into one reused buffer: nothing is allocated per span.
#[derive(Debug)]
pub struct AuditReader {
    sources: Vec<Source>,
    ignore_keys: Vec<usize>,
    self_addresses: Vec<usize>,
    self_ports: Vec<usize>,
    self_hosts: Vec<usize>,
    self_names: Vec<usize>,
    scratch: String,
    /// Destinations read lately, as (source, port, value as written, name id): a service's calls repeat a
    /// handful of destinations, and a hit skips normalising and hashing the address. Only interned names are
    /// held (their ids never change); a name past `max_names` is looked up each time, to be counted.
    recent: Vec<(usize, i64, String, u16)>,
    /// Where the next miss goes in `recent` once it is full (round robin).
    recent_next: usize,
}

/// Destinations `AuditReader` remembers per shard, and the longest value it remembers.
const RECENT_DESTINATIONS: usize = 8;
const RECENT_VALUE_BYTES: usize = 256;

impl AuditReader {
    /// `keys` must hold [`AuditConfig::attribute_keys`] (the configuration adds them).
    pub fn new(cfg: &AuditConfig, keys: &AttrKeys) -> Self {
        let index = |k: &str| keys.index_of_str(k);
        let sources = (cfg.destination_attributes.iter())
            .filter_map(|d| {
                Some(match d {
                    DestinationSource::Name(k) => Source::Name(index(k)?),
                    DestinationSource::Url(k) => Source::Url(index(k)?),
                    DestinationSource::Address { address, port } => {
                        Source::Address(index(address)?, index(port))
                    }
                })
            })
            .collect();
        AuditReader {
            sources,
            ignore_keys: (cfg.ignore_when_present.iter())
                .filter_map(|k| index(k))
                .collect(),
            self_addresses: SELF_SPAN_KEYS
                .iter()
                .filter_map(|(k, _)| index(k))
                .collect(),
            self_ports: SELF_SPAN_KEYS
                .iter()
                .filter_map(|(_, p)| index(p))
                .collect(),
            self_hosts: SELF_RESOURCE_KEYS.iter().filter_map(|k| index(k)).collect(),
            self_names: SELF_NAME_KEYS.iter().filter_map(|k| index(k)).collect(),
            scratch: String::new(),
            recent: Vec::new(),
            recent_next: 0,
        }
    }

    /// The call carries an `ignore_when_present` attribute.
    pub fn ignored(&self, attrs: &[AttrValue<'_>]) -> bool {
        self.ignore_keys.iter().any(|&k| attrs[k].is_present())
    }

    /// A call's destination: the first `destination_attributes` entry it carries ([`NONE`]: none).
    pub fn destination(&mut self, attrs: &[AttrValue<'_>], audit: &mut PropagationAudit) -> u16 {
        for (i, src) in self.sources.iter().enumerate() {
            let (k, port) = match *src {
                Source::Name(k) | Source::Url(k) => (k, 0),
                Source::Address(k, port) => (k, port.map_or(0, |p| port_of(attrs[p]))),
            };
            // An empty value names nothing, whatever the source (an empty host or URL has no address).
            let value = attrs[k].str_or_empty();
            if value.is_empty() {
                continue;
            }
            if let Some(&(.., id)) =
                (self.recent.iter()).find(|(s, p, v, _)| *s == i && *p == port && **v == *value)
            {
                return id;
            }
            let id = match *src {
                Source::Name(_) => audit.names.id(value),
                Source::Address(..) if write_address(&mut self.scratch, value, port) => {
                    audit.names.address_id(&self.scratch)
                }
                Source::Url(_) if write_url_address(&mut self.scratch, value) => {
                    audit.names.address_id(&self.scratch)
                }
                _ => continue,
            };
            if usize::from(id) >= RESERVED && value.len() <= RECENT_VALUE_BYTES {
                if self.recent.len() < RECENT_DESTINATIONS {
                    self.recent.push((i, port, value.to_string(), id));
                } else {
                    // The entry's string is reused: a run of distinct URLs does not allocate per call.
                    let e = &mut self.recent[self.recent_next];
                    (e.0, e.1, e.3) = (i, port, id);
                    e.2.clear();
                    e.2.push_str(value);
                    self.recent_next = (self.recent_next + 1) % RECENT_DESTINATIONS;
                }
            }
            return id;
        }
        NONE
    }

    /// What identifies a SERVER/CONSUMER span's self-description cheaply: its first address attribute as
    /// written, and its port. None when it says nothing about itself.
    pub fn self_key<'a>(&self, attrs: &[AttrValue<'a>]) -> Option<(&'a str, i64)> {
        let port = (self.self_ports.iter())
            .map(|&k| port_of(attrs[k]))
            .find(|&p| p != 0)
            .unwrap_or(0);
        let first = (self.self_addresses.iter().chain(&self.self_names))
            .map(|&k| attrs[k].str_or_empty())
            .find(|v| !v.is_empty())
            .unwrap_or("");
        (!first.is_empty() || port != 0).then_some((first, port))
    }

    /// Learns every address a SERVER/CONSUMER span of `service` says it answers on: its address attributes
    /// (with its port unless they carry one), and its resource's host names with its port.
    pub fn learn_self(
        &mut self,
        attrs: &[AttrValue<'_>],
        resource: &[AttrValue<'_>],
        service: u16,
        now: i64,
        audit: &mut PropagationAudit,
    ) {
        let port = self.self_key(attrs).map_or(0, |(_, p)| p);
        for &k in &self.self_addresses {
            if write_address(&mut self.scratch, attrs[k].str_or_empty(), port) {
                audit.learn(&self.scratch, service, now);
            }
        }
        if port != 0 {
            for &k in &self.self_hosts {
                if write_address(&mut self.scratch, resource[k].str_or_empty(), port) {
                    audit.learn(&self.scratch, service, now);
                }
            }
        }
        for &k in &self.self_names {
            audit.learn(attrs[k].str_or_empty(), service, now);
        }
    }
}

/// What the audit keeps of one buffered span. Packed (22 bytes, not 24): one is held per buffered span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(2))]
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
/// Name id of the destination of calls that name none and that nobody answered.
pub const UNNAMED: u16 = 2;
const RESERVED: usize = 3;

/// Interned names, bounded.
#[derive(Debug)]
pub struct Names {
    index: HashMap<Box<str>, u16, RandomState>,
    names: Vec<Box<str>>,
    /// Per name: seen as some span's `service.name`.
    is_service: Vec<bool>,
    /// Per name: read from an address or URL attribute (`host:port`).
    is_address: Vec<bool>,
    /// Per name: one of `ignore_destinations`, or an address whose host is.
    is_ignored: Vec<bool>,
    ignore: Vec<Box<str>>,
    max: usize,
    pub overflowed: u64,
}

impl Names {
    fn new(max: usize, ignore: &[String]) -> Self {
        Names {
            index: HashMap::default(),
            names: vec!["".into(), "(other)".into(), "(unnamed)".into()],
            is_service: vec![false; RESERVED],
            is_address: vec![false; RESERVED],
            is_ignored: vec![false; RESERVED],
            ignore: ignore.iter().map(|d| d.as_str().into()).collect(),
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
        if self.names.len() - RESERVED >= self.max {
            self.overflowed += 1;
            return OTHER;
        }
        let id = self.names.len() as u16;
        let ignored = self.ignore.iter().any(|d| **d == *name);
        self.names.push(name.into());
        self.is_service.push(false);
        self.is_address.push(false);
        self.is_ignored.push(ignored);
        self.index.insert(name.into(), id);
        id
    }

    /// The id of a `service.name`, marking it as a traced service.
    pub fn service_id(&mut self, name: &str) -> u16 {
        let id = self.id(name);
        if usize::from(id) >= RESERVED {
            self.is_service[id as usize] = true;
        }
        id
    }

    /// The id of a normalised address (`host:port`), marking it as one; ignored when its host is.
    pub fn address_id(&mut self, address: &str) -> u16 {
        let id = self.id(address);
        if usize::from(id) >= RESERVED && !self.is_address[id as usize] {
            self.is_address[id as usize] = true;
            let (host, _) = split_host_port(address);
            self.is_ignored[id as usize] |= self.ignore.iter().any(|d| **d == *host);
        }
        id
    }

    pub fn name(&self, id: u16) -> &str {
        &self.names[id as usize]
    }

    fn bytes(&self) -> usize {
        self.names.iter().map(|n| 2 * n.len() + 42).sum()
    }
}

/// An example trace of a pair or a broken service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    pub trace_id: u128,
    /// The trace was kept (a backend has it).
    pub kept: bool,
    /// When it was decided (engine clock, ns): the most recent come first.
    pub at: i64,
}

/// Kept first, then most recent first (a stable sort: equal ones keep their order).
pub fn sort_examples(v: &mut [Example]) {
    v.sort_by_key(|e| std::cmp::Reverse((e.kept, e.at)));
}

/// At most `cap` example traces, kept ones preferred: a new trace replaces the oldest one not kept, or, if it
/// was kept itself, the oldest kept one.
#[derive(Debug, Clone, Default)]
struct Examples {
    /// Oldest first.
    held: Vec<Example>,
}

impl Examples {
    fn add(&mut self, e: Example, cap: usize) {
        if cap == 0 {
            return;
        }
        if self.held.len() >= cap {
            let victim = match self.held.iter().position(|x| !x.kept) {
                Some(i) => i,
                None if e.kept => 0,
                None => return,
            };
            self.held.remove(victim);
        }
        self.held.push(e);
    }

    /// Kept first, most recent first.
    fn report(&self) -> Vec<Example> {
        let mut v: Vec<Example> = self.held.iter().rev().copied().collect();
        sort_examples(&mut v);
        v
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

/// A service's address, as its own spans last described it.
#[derive(Debug, Clone, Copy)]
struct Learned {
    service: u16,
    seen: i64,
}

/// One shard's audit state.
#[derive(Debug)]
pub struct PropagationAudit {
    cfg: AuditConfig,
    pub names: Names,
    pairs: HashMap<(u16, u16), PairCounts, RandomState>,
    overflow: PairCounts,
    broken: HashMap<u16, BrokenCounts, RandomState>,
    totals: Totals,
    /// Address (`host:port`) → the service describing itself by it.
    addresses: HashMap<Box<str>, Learned, RandomState>,
    pub addresses_overflowed: u64,
    /// The latest time seen (ingest or decision): what addresses age against.
    clock: i64,
    next_sweep: i64,
    // Scratch, reused per trace.
    ids: Vec<u64>,
    children: Vec<(u64, u8, u16)>,
    seen: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub traces_audited: u64,
    pub traces_with_gaps: u64,
    pub traces_broken: u64,
    pub calls: u64,
    pub gaps: u64,
    pub orphan_spans: u64,
    pub overflow_calls: u64,
    /// Calls carrying no usable destination attribute (those answered are named by their callee).
    pub unnamed_calls: u64,
    /// Of those, the ones nobody answered: gaps counted under the pair (caller → `(unnamed)`).
    pub unnamed_gaps: u64,
}

impl PropagationAudit {
    pub fn new(cfg: AuditConfig) -> Self {
        let names = Names::new(cfg.max_names, &cfg.ignore_destinations);
        PropagationAudit {
            cfg,
            names,
            pairs: HashMap::default(),
            overflow: PairCounts::default(),
            broken: HashMap::default(),
            totals: Totals::default(),
            addresses: HashMap::default(),
            addresses_overflowed: 0,
            clock: i64::MIN,
            next_sweep: i64::MIN,
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

    /// Addresses held (stale ones included until swept).
    pub fn address_count(&self) -> usize {
        self.addresses.len()
    }

    /// Bytes held by names, pairs, examples and addresses (approximate, capacities not included).
    pub fn memory_bytes(&self) -> usize {
        let example = std::mem::size_of::<Example>();
        let per_pair =
            std::mem::size_of::<((u16, u16), PairCounts)>() + 8 + example * self.cfg.examples;
        let per_broken =
            std::mem::size_of::<(u16, BrokenCounts)>() + 8 + example * self.cfg.examples;
        let addresses: usize = self.addresses.keys().map(|a| a.len() + 40).sum();
        self.names.bytes()
            + self.pairs.len() * per_pair
            + self.broken.len() * per_broken
            + addresses
    }

    fn advance(&mut self, now: i64) {
        self.clock = self.clock.max(now);
        if self.clock >= self.next_sweep {
            // Forget addresses not described for `address_ttl`; at most a few sweeps per ttl.
            let cutoff = self.clock.saturating_sub(self.cfg.address_ttl_ns);
            self.addresses.retain(|_, l| l.seen >= cutoff);
            self.next_sweep = self
                .clock
                .saturating_add((self.cfg.address_ttl_ns / 8).max(1));
        }
    }

    /// Learns that the service `service` answers on `address` (normalised `host:port`), as one of its spans
    /// said at `now`.
    pub fn learn(&mut self, address: &str, service: u16, now: i64) {
        if usize::from(service) < RESERVED || address.is_empty() {
            return;
        }
        self.advance(now);
        if let Some(l) = self.addresses.get_mut(address) {
            *l = Learned {
                service,
                seen: now.max(l.seen),
            };
            return;
        }
        if self.addresses.len() >= self.cfg.max_addresses {
            self.addresses_overflowed += 1;
            return;
        }
        self.addresses
            .insert(address.into(), Learned { service, seen: now });
    }

    /// Audits one decided trace's spans; `kept`: the trace was sampled; `now`: when it was decided.
    pub fn audit(
        &mut self,
        trace_id: u128,
        spans: &[AuditSpan],
        kept: bool,
        now: i64,
    ) -> TraceAudit {
        self.advance(now);
        let example = Example {
            trace_id,
            kept,
            at: now,
        };
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
            if s.parent != 0 && self.ids.binary_search(&{ s.parent }).is_err() {
                found.orphans += 1;
                let b = self.broken.entry(s.service).or_default();
                b.orphan_spans += 1;
                if !self.seen.contains(&(s.service, NONE)) {
                    self.seen.push((s.service, NONE));
                    b.traces += 1;
                    b.examples.add(example, self.cfg.examples);
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
                (NONE, answered) => {
                    // Counted, never skipped: named by its callee, else under `(unnamed)`.
                    self.totals.unnamed_calls += 1;
                    answered.unwrap_or_else(|| {
                        self.totals.unnamed_gaps += 1;
                        UNNAMED
                    })
                }
                (d, _) => d,
            };
            if self.names.is_ignored[destination as usize] {
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
                        pair.examples.add(example, self.cfg.examples);
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

    /// The audit as plain data, names resolved; pairs are per address (see [`GapReport::resolve`]).
    pub fn report(&self) -> GapReport {
        let n = |id: u16| self.names.name(id).to_string();
        let pair = |key: Option<(u16, u16)>, p: &PairCounts| GapPair {
            source: key.map_or_else(String::new, |k| n(k.0)),
            destination: key.map_or_else(String::new, |k| n(k.1)),
            addresses: match key {
                Some((_, d)) if self.names.is_address[d as usize] => vec![n(d)],
                _ => Vec::new(),
            },
            callee: (p.callee != NONE).then(|| n(p.callee)),
            destination_traced: key
                .is_some_and(|k| p.callee != NONE || self.names.is_service[k.1 as usize]),
            calls: p.calls,
            gaps: p.gaps,
            gap_traces: p.gap_traces,
            examples: p.examples.report(),
            overflow: key.is_none(),
            unnamed: key.is_some_and(|k| k.1 == UNNAMED),
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
                examples: b.examples.report(),
            })
            .collect();
        let cutoff = self.clock.saturating_sub(self.cfg.address_ttl_ns);
        let addresses = self
            .addresses
            .iter()
            .filter(|(_, l)| l.seen >= cutoff)
            .map(|(a, l)| KnownAddress {
                address: a.to_string(),
                service: n(l.service),
                seen: l.seen,
            })
            .collect();
        let mut r = GapReport {
            totals: self.totals,
            names_overflowed: self.names.overflowed,
            addresses_overflowed: self.addresses_overflowed,
            pairs,
            broken,
            addresses,
        };
        r.sort();
        r
    }
}

/// Calls from one service to one destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GapPair {
    pub source: String,
    /// The service, when the calls named an address that resolved to one; else as the calling spans name it.
    pub destination: String,
    /// The addresses (`host:port`) the calls named, when they named addresses (at most [`MAX_PAIR_ADDRESSES`]).
    pub addresses: Vec<String>,
    /// The service of a SERVER/CONSUMER child seen answering this pair, if any.
    pub callee: Option<String>,
    /// The destination is a traced service: seen as a `service.name`, answering some call, or describing
    /// itself by the address called.
    pub destination_traced: bool,
    pub calls: u64,
    pub gaps: u64,
    pub gap_traces: u64,
    /// Traces with a gap for this pair: kept ones first, then most recent first.
    #[serde(flatten, serialize_with = "crate::serialize::examples")]
    pub examples: Vec<Example>,
    /// Calls of pairs past `max_pairs` (source and destination empty).
    pub overflow: bool,
    /// Calls that named no destination and that nobody answered (destination `(unnamed)`).
    pub unnamed: bool,
}

/// Addresses listed under one pair, at most.
pub const MAX_PAIR_ADDRESSES: usize = 8;

/// Orphan spans of one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokenService {
    pub service: String,
    pub traces: u64,
    pub orphan_spans: u64,
    #[serde(flatten, serialize_with = "crate::serialize::examples")]
    pub examples: Vec<Example>,
}

/// An address and the service that last described itself by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAddress {
    pub address: String,
    pub service: String,
    pub seen: i64,
}

/// The audit of one shard, or of an engine (shards merged): pairs worst first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GapReport {
    #[serde(flatten)]
    pub totals: Totals,
    pub names_overflowed: u64,
    pub addresses_overflowed: u64,
    pub pairs: Vec<GapPair>,
    pub broken: Vec<BrokenService>,
    /// Addresses resolved to services (not forgotten yet), sorted by address.
    #[serde(serialize_with = "crate::serialize::addresses")]
    pub addresses: Vec<KnownAddress>,
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
        self.unnamed_calls += o.unnamed_calls;
        self.unnamed_gaps += o.unnamed_gaps;
    }
}

fn merge_examples(ours: &mut Vec<Example>, theirs: Vec<Example>, cap: usize) {
    for e in theirs {
        if !ours.iter().any(|o| o.trace_id == e.trace_id) {
            ours.push(e);
        }
    }
    sort_examples(ours);
    ours.truncate(cap);
}

/// Adds `p`'s counts to `q` (same pair, or folded into it).
fn absorb(q: &mut GapPair, p: GapPair, examples: usize) {
    q.calls += p.calls;
    q.gaps += p.gaps;
    q.gap_traces += p.gap_traces;
    if q.callee.is_none() {
        q.callee = p.callee;
    }
    q.destination_traced |= p.destination_traced;
    for a in p.addresses {
        if q.addresses.len() < MAX_PAIR_ADDRESSES && !q.addresses.contains(&a) {
            q.addresses.push(a);
        }
    }
    q.addresses.sort();
    merge_examples(&mut q.examples, p.examples, examples);
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
        self.addresses.sort_by(|a, b| a.address.cmp(&b.address));
    }

    /// Names each address-named pair by the service behind the address: the one describing itself by it in
    /// `known` (address → service), else the callee seen answering the calls. Pairs that come to name the same
    /// service are merged, their addresses listed.
    pub fn resolve(&mut self, known: &HashMap<&str, &str>, examples: usize) {
        let mut changed = false;
        for p in &mut self.pairs {
            if p.overflow || p.unnamed {
                continue;
            }
            let known_as = known.get(p.destination.as_str()).map(|s| s.to_string());
            if p.addresses.is_empty() {
                // A name (an RPC service, say) that a SERVER span answered to: named by that service, the name
                // kept as how the calls spell it.
                if let Some(s) = known_as.filter(|s| *s != p.destination) {
                    p.addresses.push(std::mem::replace(&mut p.destination, s));
                    p.destination_traced = true;
                    changed = true;
                }
                continue;
            }
            if let Some(s) = known_as.or_else(|| p.callee.clone()) {
                p.destination = s;
                p.destination_traced = true;
                changed = true;
            }
        }
        if changed {
            let mut index: HashMap<(bool, String, String), usize> = HashMap::new();
            let mut out: Vec<GapPair> = Vec::with_capacity(self.pairs.len());
            for p in std::mem::take(&mut self.pairs) {
                let k = (p.overflow, p.source.clone(), p.destination.clone());
                match index.get(&k) {
                    Some(&i) => absorb(&mut out[i], p, examples),
                    None => {
                        index.insert(k, out.len());
                        out.push(p);
                    }
                }
            }
            self.pairs = out;
            self.sort();
        }
    }

    /// Every shard's addresses as one map, the most recent description of an address winning.
    pub fn known_addresses(reports: &[GapReport]) -> Vec<KnownAddress> {
        let mut best: HashMap<&str, &KnownAddress> = HashMap::new();
        for a in reports.iter().flat_map(|r| &r.addresses) {
            match best.get(a.address.as_str()) {
                Some(b) if b.seen >= a.seen => {}
                _ => {
                    best.insert(&a.address, a);
                }
            }
        }
        let mut out: Vec<KnownAddress> = best.into_values().cloned().collect();
        out.sort_by(|a, b| a.address.cmp(&b.address));
        out
    }

    /// Shards' reports as one: addresses resolved over all of them, then merged (see [`GapReport::merge`]).
    pub fn combine(parts: Vec<GapReport>, max_pairs: usize, examples: usize) -> GapReport {
        let addresses = GapReport::known_addresses(&parts);
        let known: HashMap<&str, &str> = addresses
            .iter()
            .map(|a| (a.address.as_str(), a.service.as_str()))
            .collect();
        let mut report = GapReport::default();
        for mut part in parts {
            part.resolve(&known, examples);
            part.addresses.clear();
            report.merge(part, max_pairs, examples);
        }
        report.addresses = addresses;
        report
    }

    /// Adds another shard's report; past `max_pairs` distinct pairs, the least broken go to the overflow pair.
    pub fn merge(&mut self, other: GapReport, max_pairs: usize, examples: usize) {
        self.totals.add(&other.totals);
        self.names_overflowed += other.names_overflowed;
        self.addresses_overflowed += other.addresses_overflowed;
        let mut index: HashMap<(bool, String, String), usize> = self
            .pairs
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.overflow, p.source.clone(), p.destination.clone()), i))
            .collect();
        for p in other.pairs {
            match index.get(&(p.overflow, p.source.clone(), p.destination.clone())) {
                Some(&i) => absorb(&mut self.pairs[i], p, examples),
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
                    merge_examples(&mut c.examples, b.examples, examples);
                }
                None => {
                    broken.insert(b.service.clone(), self.broken.len());
                    self.broken.push(b);
                }
            }
        }
        self.addresses.extend(other.addresses);
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
                addresses: Vec::new(),
                callee: None,
                destination_traced: false,
                calls: 0,
                gaps: 0,
                gap_traces: 0,
                examples: Vec::new(),
                overflow: true,
                unnamed: false,
            });
            for p in self.pairs.drain(max_pairs..) {
                overflow.calls += p.calls;
                overflow.gaps += p.gaps;
                overflow.gap_traces += p.gap_traces;
                self.totals.overflow_calls += p.calls;
                merge_examples(&mut overflow.examples, p.examples, examples);
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
            self.decide(trace_id, false)
        }

        /// Audits the spans so far as one trace, decided at `trace_id` seconds, kept or not.
        fn decide(&mut self, trace_id: u128, kept: bool) -> TraceAudit {
            let spans = std::mem::take(&mut self.spans);
            let now = trace_id as i64 * 1_000_000_000;
            self.audit.audit(trace_id, &spans, kept, now)
        }
    }

    use span_kind::{CLIENT, CONSUMER, PRODUCER, SERVER};

    fn ids(examples: &[Example]) -> Vec<u128> {
        examples.iter().map(|e| e.trace_id).collect()
    }

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
        assert_eq!(ids(&worst.examples), vec![42]);
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
        assert_eq!(ids(&b.examples), vec![9]);
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

    /// Scenario: two calls name no destination; one is answered by `search`, the other by nobody.
    /// Guarantees: the answered one is named by its callee; the other is counted, as a gap under
    /// (frontend → `(unnamed)`), and both in `unnamed_calls` (issue 17: it used to be skipped).
    #[test]
    fn a_call_without_destination_is_named_by_its_callee_or_counted_unnamed() {
        let mut t = Trace::new(AuditConfig::default());
        t.span(1, 0, FRONTEND, SERVER, "")
            .span(2, 1, FRONTEND, CLIENT, "")
            .span(3, 2, "search", SERVER, "")
            .span(4, 1, FRONTEND, CLIENT, "");
        let found = t.audit(1);
        assert_eq!(found, audited(2, 1, 0));
        let r = t.audit.report();
        assert_eq!((r.totals.unnamed_calls, r.totals.unnamed_gaps), (2, 1));
        assert_eq!((r.totals.calls, r.totals.gaps), (2, 1));
        let unnamed = &r.pairs[0];
        assert!(unnamed.unnamed && !unnamed.destination_traced);
        assert_eq!(
            (unnamed.source.as_str(), unnamed.destination.as_str()),
            (FRONTEND, "(unnamed)")
        );
        assert_eq!((unnamed.calls, unnamed.gaps), (1, 1));
        assert_eq!(r.pairs[1].destination, "search");
        assert!(!r.pairs[1].unnamed);
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
            ids(&overflow.examples),
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
        assert_eq!(ids(&r.pairs[0].examples), vec![2, 1], "most recent first");
        assert!(r.pairs[1].overflow);
        assert_eq!(r.pairs[1].gaps, 1);
    }

    /// Spans read through [`AuditReader`] from attributes as instrumentation sends them.
    struct Wire {
        audit: PropagationAudit,
        reader: AuditReader,
        keys: AttrKeys,
        spans: Vec<AuditSpan>,
    }

    type Attrs<'a> = &'a [(&'a str, AttrValue<'a>)];

    impl Wire {
        fn new(cfg: AuditConfig) -> Self {
            let keys = AttrKeys::new(cfg.attribute_keys());
            Wire {
                reader: AuditReader::new(&cfg, &keys),
                audit: PropagationAudit::new(cfg),
                keys,
                spans: Vec::new(),
            }
        }

        fn values<'a>(&self, kv: Attrs<'a>) -> Vec<AttrValue<'a>> {
            let mut v = vec![AttrValue::Absent; self.keys.len()];
            // Keys the audit does not read are not extracted, as in a decoded payload.
            for (k, val) in kv {
                if let Some(i) = self.keys.index_of_str(k) {
                    v[i] = *val;
                }
            }
            v
        }

        /// A span of `service` (resource attributes `resource`), read at `now` seconds.
        fn span(
            &mut self,
            (id, parent): (u64, u64),
            service: &str,
            kind: u8,
            attrs: Attrs<'_>,
            resource: Attrs<'_>,
            now: i64,
        ) -> &mut Self {
            let service = self.audit.names.service_id(service);
            let (a, r) = (self.values(attrs), self.values(resource));
            let (mut destination, mut ignored) = (NONE, false);
            match kind {
                CLIENT | PRODUCER => {
                    ignored = self.reader.ignored(&a);
                    if !ignored {
                        destination = self.reader.destination(&a, &mut self.audit);
                    }
                }
                SERVER | CONSUMER => {
                    let now = now * 1_000_000_000;
                    (self.reader).learn_self(&a, &r, service, now, &mut self.audit)
                }
                _ => {}
            }
            self.spans.push(AuditSpan {
                span_id: id,
                parent,
                service,
                destination,
                kind,
                ignored,
            });
            self
        }

        fn decide(&mut self, trace_id: u128, kept: bool) -> TraceAudit {
            let spans = std::mem::take(&mut self.spans);
            let now = trace_id as i64 * 1_000_000_000;
            self.audit.audit(trace_id, &spans, kept, now)
        }

        /// The report as an engine makes it: addresses resolved.
        fn report(&self) -> GapReport {
            GapReport::combine(vec![self.audit.report()], 1000, 5)
        }
    }

    use AttrValue::{Int, Str};

    fn pair<'r>(r: &'r GapReport, source: &str, destination: &str) -> &'r GapPair {
        r.pairs
            .iter()
            .find(|p| p.source == source && p.destination == destination)
            .unwrap_or_else(|| panic!("no pair {source} → {destination} in {:#?}", r.pairs))
    }

    macro_rules! addresses {
        ($($name:ident: $write:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut out = String::from("left over");
                let written = $write(&mut out);
                assert_eq!((written, out.as_str()), $want);
            }
        )*};
    }

    addresses! {
        address_and_port: |o: &mut String| write_address(o, "127.0.0.1", 14503) => (true, "127.0.0.1:14503");
        address_carrying_its_port_wins: |o: &mut String| write_address(o, "127.0.0.1:14503", 80) => (true, "127.0.0.1:14503");
        host_lowercased_trailing_dot_dropped: |o: &mut String| write_address(o, "Payments.Shop.", 0) => (true, "payments.shop");
        ipv6_bare_gets_brackets: |o: &mut String| write_address(o, "::1", 8080) => (true, "[::1]:8080");
        ipv6_bracketed_with_port: |o: &mut String| write_address(o, "[FE80::1]:9", 0) => (true, "[fe80::1]:9");
        no_host_writes_nothing: |o: &mut String| write_address(o, "", 80) => (false, "");
        port_out_of_range_is_none: |o: &mut String| write_address(o, "h", 70000) => (true, "h");
        url_with_port: |o: &mut String| write_url_address(o, "http://127.0.0.1:14503/pay") => (true, "127.0.0.1:14503");
        url_https_default_port_no_userinfo: |o: &mut String| write_url_address(o, "https://user:secret@API.example.com/v1?q=1#f") => (true, "api.example.com:443");
        url_http_default_port: |o: &mut String| write_url_address(o, "http://cart?x=1") => (true, "cart:80");
        url_ipv6: |o: &mut String| write_url_address(o, "http://[::1]:8080/") => (true, "[::1]:8080");
        not_a_url: |o: &mut String| write_url_address(o, "/pay") => (false, "");
    }

    /// Scenario: calls repeat a few destinations, more than the reader remembers, in several spellings; then
    /// names run past `max_names`. Guarantees: the remembered destinations answer exactly what reading them
    /// afresh does (the port and the source are part of what is remembered), and every call past `max_names`
    /// is still counted as an overflow.
    #[test]
    fn remembered_destinations_answer_as_a_fresh_read() {
        let cfg = AuditConfig {
            max_names: 40,
            ..AuditConfig::default()
        };
        let (mut cached, mut fresh) = (Wire::new(cfg.clone()), Wire::new(cfg));
        let hosts = ["Cart", "cart", "pay.svc.", "[::1]:81", " db ", "stock"];
        let mut calls: Vec<Vec<(&str, AttrValue<'_>)>> = Vec::new();
        for round in 0..3 {
            for (i, h) in hosts.iter().enumerate() {
                calls.push(vec![
                    ("server.address", Str(h)),
                    ("server.port", Int(80 + (i as i64 + round) % 2)),
                ]);
                calls.push(vec![("net.peer.name", Str(h))]);
                calls.push(vec![("peer.service", Str(h))]);
                calls.push(vec![("http.url", Str("http://cart:8080/x"))]);
            }
        }
        let names: Vec<String> = (0..60).map(|i| format!("svc-{i}")).collect();
        for n in &names {
            calls.push(vec![("peer.service", Str(n))]);
            calls.push(vec![("peer.service", Str(n))]);
        }
        for attrs in &calls {
            let a = cached.values(attrs);
            let got = cached.reader.destination(&a, &mut cached.audit);
            // A reader remembering nothing: a new one per call.
            fresh.reader = AuditReader::new(&AuditConfig::default(), &fresh.keys);
            let b = fresh.values(attrs);
            let want = fresh.reader.destination(&b, &mut fresh.audit);
            assert_eq!(
                cached.audit.names.name(got),
                fresh.audit.names.name(want),
                "{attrs:?}"
            );
        }
        assert!(cached.audit.names.overflowed > 0);
        assert_eq!(cached.audit.names.overflowed, fresh.audit.names.overflowed);
        assert_eq!(cached.audit.names.names, fresh.audit.names.names);
        assert_eq!(cached.audit.names.is_address, fresh.audit.names.is_address);
    }

    /// Scenario: one unanswered call per convention, as the instrumentations send it. Guarantees: the
    /// destination is named by the first `destination_attributes` entry present, addresses as `host:port`.
    #[test]
    fn destinations_on_every_convention() {
        let cases: &[(&str, Attrs<'_>, &str, bool)] = &[
            (
                "old HTTP (requests): http.url only",
                &[
                    ("http.method", Str("POST")),
                    ("http.url", Str("http://127.0.0.1:14503/pay")),
                ],
                "127.0.0.1:14503",
                true,
            ),
            (
                "stable HTTP: server.address + server.port, url.full",
                &[
                    ("server.address", Str("127.0.0.1")),
                    ("server.port", Int(14503)),
                    ("url.full", Str("http://127.0.0.1:14503/pay")),
                ],
                "127.0.0.1:14503",
                true,
            ),
            (
                "stable HTTP: url.full only, default port",
                &[("url.full", Str("https://api.stripe.com/v1/charges"))],
                "api.stripe.com:443",
                true,
            ),
            (
                "old net: net.peer.name + net.peer.port",
                &[
                    ("net.peer.name", Str("Inventory")),
                    ("net.peer.port", Int(8080)),
                ],
                "inventory:8080",
                true,
            ),
            (
                "rpc: rpc.service before server.address",
                &[
                    ("rpc.service", Str("shop.Cart")),
                    ("server.address", Str("cart")),
                    ("server.port", Int(50051)),
                ],
                "shop.Cart",
                false,
            ),
            (
                "messaging: destination name",
                &[
                    ("messaging.destination.name", Str("orders")),
                    ("server.address", Str("kafka")),
                ],
                "orders",
                false,
            ),
            (
                "peer.service first",
                &[
                    ("peer.service", Str("payments")),
                    ("http.url", Str("http://10.0.0.7/pay")),
                ],
                "payments",
                false,
            ),
        ];
        for (what, attrs, want, address) in cases {
            let mut w = Wire::new(AuditConfig::default());
            w.span((1, 0), "cart", SERVER, &[], &[], 1)
                .span((2, 1), "cart", CLIENT, attrs, &[], 1);
            assert_eq!(w.decide(1, false), audited(1, 1, 0), "{what}");
            let r = w.report();
            let p = pair(&r, "cart", want);
            assert_eq!(p.gaps, 1, "{what}");
            assert_eq!(!p.addresses.is_empty(), *address, "{what}");
            assert_eq!(r.totals.unnamed_calls, 0, "{what}");
        }
    }

    /// Scenario: Python grpcio's instrumentation: the CLIENT span names only `rpc.service`, and the callee's
    /// SERVER span (in another trace: the context was dropped) answers to that RPC service. Guarantees: the pair
    /// reads `cart → payments`, traced, the RPC service kept as how the calls spell it.
    #[test]
    fn a_gap_to_an_rpc_service_resolves_to_the_service_serving_it() {
        let rpc = [
            ("rpc.system", Str("grpc")),
            ("rpc.service", Str("shop.Payments")),
        ];
        let mut w = Wire::new(AuditConfig::default());
        w.span((1, 0), "cart", SERVER, &[], &[], 1)
            .span((2, 1), "cart", CLIENT, &rpc, &[], 1);
        assert_eq!(w.decide(1, true), audited(1, 1, 0));
        w.span((5, 0), "payments", SERVER, &rpc, &[], 2);
        w.decide(2, false);
        let r = w.report();
        let p = pair(&r, "cart", "payments");
        assert_eq!((p.calls, p.gaps), (1, 1));
        assert!(p.destination_traced);
        assert_eq!(p.addresses, vec!["shop.Payments".to_string()]);
        // A name no SERVER span answers to stays as it is, untraced.
        let mut w = Wire::new(AuditConfig::default());
        w.span((1, 0), "cart", SERVER, &[], &[], 1).span(
            (2, 1),
            "cart",
            CLIENT,
            &[("rpc.service", Str("ext.Api"))],
            &[],
            1,
        );
        w.decide(1, false);
        let r = w.report();
        assert!(!pair(&r, "cart", "ext.Api").destination_traced);
    }

    /// Scenario: the three Flask services, frontend → cart → payments on 127.0.0.1:14501-14503,
    /// cart's call dropping the context, both HTTP conventions as real-instrumentation.md records them; the
    /// payments trace (a new root) is decided after cart's. Guarantees: `cart → payments` is a gap to a traced
    /// service with its address listed; `frontend → cart` is healthy.
    #[test]
    fn a_gap_to_an_address_resolves_to_the_service_that_describes_itself() {
        type Server<'a> = fn(u16) -> Vec<(&'a str, AttrValue<'a>)>;
        type Client<'a> = fn(u16) -> Vec<(&'a str, AttrValue<'a>)>;
        fn old_server(port: u16) -> Vec<(&'static str, AttrValue<'static>)> {
            let hostport: &'static str = match port {
                14502 => "127.0.0.1:14502",
                _ => "127.0.0.1:14503",
            };
            vec![
                ("net.host.name", Str(hostport)),
                ("net.host.port", Int(i64::from(port))),
                ("http.host", Str(hostport)),
            ]
        }
        fn old_client(port: u16) -> Vec<(&'static str, AttrValue<'static>)> {
            vec![(
                "http.url",
                Str(match port {
                    14502 => "http://127.0.0.1:14502/cart",
                    _ => "http://127.0.0.1:14503/pay",
                }),
            )]
        }
        fn stable_server(port: u16) -> Vec<(&'static str, AttrValue<'static>)> {
            let hostport: &'static str = match port {
                14502 => "127.0.0.1:14502",
                _ => "127.0.0.1:14503",
            };
            vec![
                ("server.address", Str(hostport)),
                ("server.port", Int(i64::from(port))),
            ]
        }
        fn stable_client(port: u16) -> Vec<(&'static str, AttrValue<'static>)> {
            vec![
                ("server.address", Str("127.0.0.1")),
                ("server.port", Int(i64::from(port))),
                (
                    "url.full",
                    Str(match port {
                        14502 => "http://127.0.0.1:14502/cart",
                        _ => "http://127.0.0.1:14503/pay",
                    }),
                ),
            ]
        }
        let conventions: [(&str, Server<'_>, Client<'_>); 2] = [
            ("old", old_server, old_client),
            ("stable", stable_server, stable_client),
        ];
        for (name, server, client) in conventions {
            let mut w = Wire::new(AuditConfig::default());
            for i in 0..3u64 {
                let t = 10 * i;
                w.span((1, 0), "frontend", SERVER, &[], &[], t as i64)
                    .span((2, 1), "frontend", CLIENT, &client(14502), &[], t as i64)
                    .span((3, 2), "cart", SERVER, &server(14502), &[], t as i64)
                    .span((4, 3), "cart", CLIENT, &client(14503), &[], t as i64);
                w.decide(u128::from(t) + 1, i == 1);
                // payments' SERVER span: a new root, in a trace decided later.
                w.span(
                    (5, 0),
                    "payments",
                    SERVER,
                    &server(14503),
                    &[],
                    t as i64 + 1,
                );
                w.decide(u128::from(t) + 2, false);
            }
            let r = w.report();
            let broken = pair(&r, "cart", "payments");
            assert_eq!(
                (broken.calls, broken.gaps, broken.gap_traces),
                (3, 3, 3),
                "{name}"
            );
            assert!(broken.destination_traced, "{name}");
            assert_eq!(broken.addresses, vec!["127.0.0.1:14503"], "{name}");
            assert_eq!(ids(&broken.examples), vec![11, 21, 1], "{name}: kept first");
            assert!(
                broken.examples[0].kept && !broken.examples[1].kept,
                "{name}"
            );
            let healthy = pair(&r, "frontend", "cart");
            assert_eq!((healthy.calls, healthy.gaps), (3, 0), "{name}");
            assert_eq!(healthy.addresses, vec!["127.0.0.1:14502"], "{name}");
            assert_eq!(r.pairs.len(), 2, "{name}: {:#?}", r.pairs);
            assert_eq!(r.totals.unnamed_calls, 0, "{name}");
            let known: Vec<_> = r
                .addresses
                .iter()
                .map(|a| (a.address.as_str(), a.service.as_str()))
                .collect();
            assert_eq!(
                known,
                vec![("127.0.0.1:14502", "cart"), ("127.0.0.1:14503", "payments")],
                "{name}"
            );
        }
    }

    /// Scenario: the callee's self-description lands in another shard than the broken call. Guarantees: the
    /// engine-wide report resolves it all the same; an address nobody describes stays as it is, untraced.
    #[test]
    fn addresses_resolve_across_shards_and_unknown_ones_stay() {
        let mut a = Wire::new(AuditConfig::default());
        a.span((1, 0), "cart", SERVER, &[], &[], 1)
            .span(
                (2, 1),
                "cart",
                CLIENT,
                &[("http.url", Str("http://10.0.0.9:8080/pay"))],
                &[],
                1,
            )
            .span(
                (3, 1),
                "cart",
                CLIENT,
                &[("url.full", Str("https://api.stripe.com/v1"))],
                &[],
                1,
            );
        a.decide(1, true);
        let mut b = Wire::new(AuditConfig::default());
        // Resource host name with the span's port (the span's own address attributes absent).
        b.span(
            (9, 0),
            "payments",
            SERVER,
            &[("server.port", Int(8080))],
            &[("host.name", Str("10.0.0.9"))],
            2,
        );
        b.decide(2, false);
        let r = GapReport::combine(vec![a.audit.report(), b.audit.report()], 1000, 5);
        let p = pair(&r, "cart", "payments");
        assert!(p.destination_traced);
        assert_eq!(p.addresses, vec!["10.0.0.9:8080"]);
        let stripe = pair(&r, "cart", "api.stripe.com:443");
        assert!(!stripe.destination_traced);
    }

    /// Scenario: more addresses than `max_addresses`, and addresses not described again for `address_ttl`.
    /// Guarantees: the map holds at most the bound, counts the overflow, forgets stale entries (and the report
    /// no longer resolves them) while refreshed ones stay.
    #[test]
    fn address_map_is_bounded_and_aged() {
        let cfg = AuditConfig {
            max_addresses: 2,
            address_ttl_ns: 10_000_000_000,
            ..AuditConfig::default()
        };
        let mut w = Wire::new(cfg);
        let s = |a: &'static str| [("server.address", Str(a)), ("server.port", Int(80))];
        w.span((1, 0), "a", SERVER, &s("a"), &[], 0)
            .span((2, 0), "b", SERVER, &s("b"), &[], 0)
            .span((3, 0), "c", SERVER, &s("c"), &[], 0);
        assert_eq!(w.audit.address_count(), 2);
        assert_eq!(w.audit.addresses_overflowed, 1);
        // b is described again at 8 s; a is not. At 15 s, a is forgotten, b stays, c finds room.
        w.span((4, 0), "b", SERVER, &s("b"), &[], 8);
        w.spans.clear();
        w.decide(15, false);
        w.span((5, 0), "c", SERVER, &s("c"), &[], 15);
        let r = w.report();
        let known: Vec<_> = r.addresses.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(known, vec!["b:80", "c:80"]);
        assert_eq!(r.addresses_overflowed, 1);
        assert!(w.audit.memory_bytes() > 0);
    }

    /// Scenario: gaps in traces kept and not kept, more than `examples` of them. Guarantees: kept traces are
    /// preferred (most recent first), then the most recent not kept; a trace not kept never displaces a kept one;
    /// orphans' examples likewise.
    #[test]
    fn examples_prefer_kept_traces() {
        let cfg = AuditConfig {
            examples: 3,
            ..AuditConfig::default()
        };
        let mut t = Trace::new(cfg);
        let gap = |t: &mut Trace, id: u128, kept: bool| {
            t.span(1, 0, "cart", SERVER, "")
                .span(2, 1, "cart", CLIENT, "payments")
                .span(3, 77, "ghost", SERVER, "");
            t.decide(id, kept);
        };
        type Shown = Vec<(u128, bool)>;
        let shown = |r: &GapReport| -> (Shown, Shown) {
            let f = |e: &[Example]| e.iter().map(|e| (e.trace_id, e.kept)).collect();
            (f(&r.pairs[0].examples), f(&r.broken[0].examples))
        };
        gap(&mut t, 1, false);
        gap(&mut t, 2, true);
        gap(&mut t, 3, false);
        gap(&mut t, 4, false);
        let (pair, broken) = shown(&t.audit.report());
        assert_eq!(pair, vec![(2, true), (4, false), (3, false)]);
        assert_eq!(broken, pair);
        gap(&mut t, 5, true);
        gap(&mut t, 6, true);
        gap(&mut t, 7, false);
        gap(&mut t, 8, true);
        let (pair, _) = shown(&t.audit.report());
        assert_eq!(pair, vec![(8, true), (6, true), (5, true)]);
        // Merged with another shard's: still kept first, most recent first.
        let mut other = Trace::new(AuditConfig::default());
        gap(&mut other, 9, false);
        gap(&mut other, 7, true);
        let mut r = t.audit.report();
        r.merge(other.audit.report(), 1000, 3);
        let (pair, _) = shown(&r);
        assert_eq!(pair, vec![(8, true), (7, true), (6, true)]);
    }

    /// Scenario: `ignore_destinations` names a host; calls reach it by URL (with the scheme's port) and by
    /// address + port. Guarantees: both are ignored (not calls); another host is not.
    #[test]
    fn ignore_destinations_match_an_address_by_its_host() {
        let cfg = AuditConfig {
            ignore_destinations: vec!["api.stripe.com".into(), "10.0.0.1:9000".into()],
            ..AuditConfig::default()
        };
        let mut w = Wire::new(cfg);
        w.span((1, 0), "cart", SERVER, &[], &[], 1)
            .span(
                (2, 1),
                "cart",
                CLIENT,
                &[("url.full", Str("https://API.stripe.com/v1/charges"))],
                &[],
                1,
            )
            .span(
                (3, 1),
                "cart",
                CLIENT,
                &[
                    ("server.address", Str("api.stripe.com")),
                    ("server.port", Int(443)),
                ],
                &[],
                1,
            )
            .span(
                (4, 1),
                "cart",
                CLIENT,
                &[("http.url", Str("http://10.0.0.1:9000/x"))],
                &[],
                1,
            )
            .span(
                (5, 1),
                "cart",
                CLIENT,
                &[("http.url", Str("http://api.example.com/x"))],
                &[],
                1,
            );
        assert_eq!(w.decide(1, false), audited(1, 1, 0));
        let r = w.report();
        assert_eq!(r.pairs.len(), 1);
        assert_eq!(r.pairs[0].destination, "api.example.com:80");
    }
}
