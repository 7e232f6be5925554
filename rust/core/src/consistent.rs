//! OpenTelemetry consistent probability sampling (OTEP 235): thresholds, randomness and the `ot` tracestate
//! member.
//!
//! Every span carries 56 bits of randomness `R`: an explicit `rv` sub-key of the `ot` member of the W3C
//! `tracestate` (`ot=rv:<14 hex digits>`), or else the rightmost 7 bytes of the trace ID. A sampler with
//! probability `p` uses the rejection threshold `T = (1 − p) × 2^56` and keeps a span iff `R ≥ T`. Because every
//! stage of a pipeline compares the same `R`, their decisions nest: a trace kept at 1 % is also kept at 10 %,
//! so traces stay complete across services and collectors. The threshold travels with the span as
//! `ot=th:<T in hex, trailing zeros dropped>` (100 % is `th:0`, 50 % is `th:8`), and `2^56 / (2^56 − T) = 1/p`
//! is the span's adjusted count: how many spans it stands for in counts and rates.
//!
//! A stage downstream may only raise `T` (lower the probability), never lower it, or adjusted counts would
//! overstate what is left. Two ways to compose with the threshold that arrived:
//! - **equalizing**: `T_out = max(T_in, T_stage)` — every span leaves with (at most) the stage's probability;
//!   spans already sampled harder pass with their own `T` ([`equalizing_threshold`]).
//! - **proportional**: probabilities multiply, `p_out = p_in × p_stage` — the stage cuts volume by `p_stage`
//!   whatever arrived ([`proportional_threshold`]).
//!
//! A stage that keeps spans with a probability it cannot state (a rate limiter, a status-code rule of a tail
//! sampler) must erase `th` ([`with_threshold`] with `None`): a span without `th` has an unknown adjusted count,
//! which is honest, while a stale `th` would claim a probability the span was not kept with.
//!
//! Encoding and rounding match the OpenTelemetry reference, the Go package
//! `github.com/open-telemetry/opentelemetry-collector-contrib/pkg/sampling` (`probability.go`, `threshold.go`,
//! `randomness.go`, `oteltracestate.go`, `w3ctracestate.go`), as used by the `probabilisticsampler` processor
//! with its default `sampling_precision: 4`. Where this module differs from it, the item's doc says so.
//!
//! Spans are handled as their raw OTLP bytes: [`span_trace_state`] reads a span's `trace_state`,
//! [`rewrite_span`] writes a span with a new one, copying every other field byte for byte.

use crate::otlp::wire::{put_len_header, utf8, Fail, Reader, WireType};

/// `2^56`: the number of randomness values. As a threshold it would mean probability 0 (the reference's
/// `NeverSampleThreshold`); it is never written to a tracestate.
pub const MAX_ADJUSTED_THRESHOLD: u64 = 1 << 56;
/// The threshold of probability 0: no randomness value reaches it.
pub const NEVER_SAMPLE_THRESHOLD: u64 = MAX_ADJUSTED_THRESHOLD;
/// The threshold of probability 1 (`th:0`).
pub const ALWAYS_SAMPLE_THRESHOLD: u64 = 0;
/// Hex digits kept when a probability becomes a threshold, as the reference's probabilistic sampler processor
/// defaults to (`sampling_precision: 4`).
pub const DEFAULT_PRECISION: u32 = 4;
/// Hex digits of a full threshold or randomness value (56 bits).
pub const NUM_HEX_DIGITS: u32 = 14;
/// The smallest probability a threshold can express, `2^-56` (threshold `ffffffffffffff`).
pub const MIN_SAMPLING_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_THRESHOLD as f64;

/// The reference refuses `ot` values longer than this (`hardMaxOTelLength`).
const MAX_OT_VALUE_LEN: usize = 256;
/// W3C: at most 32 list members in a tracestate.
const MAX_MEMBERS: usize = 32;
/// OTLP `Span.trace_state`.
const SPAN_TRACE_STATE: u32 = 3;

const HEX: &[u8; 16] = b"0123456789abcdef";

// ---- randomness and thresholds ------------------------------------------------------------------------

/// R from the trace ID: its last 7 bytes, big-endian (W3C Trace Context level 2 makes them random).
#[inline]
pub fn trace_id_randomness(trace_id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(b)
}

/// Whether a span with randomness `randomness` passes threshold `threshold` (`T ≤ R`, the reference's
/// `Threshold.ShouldSample`). Nothing passes [`NEVER_SAMPLE_THRESHOLD`], everything passes `0`.
#[inline]
pub fn should_keep(randomness: u64, threshold: u64) -> bool {
    threshold <= randomness
}

/// The binary exponent `frexp` returns for a positive normal `x` (`x = m × 2^e`, `m` in `[0.5, 1)`). The callers
/// only pass values in `[2^-56, 1]`, all normal.
#[inline]
fn frexp_exponent(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7ff) as i32 - 1022
}

/// T for probability `p` in `[2^-56, 1]`, rounded to `precision` significant hex digits as the reference's
/// `ProbabilityToThresholdWithPrecision` does; `None` outside that range or for NaN.
///
/// - `precision` 0 means full precision (14 digits), as in the reference; above 14 counts as 14.
/// - Leading `f` digits (small `p`) and leading `0` digits (`p` near 1) do not count: one digit is added per 4
///   binary orders of magnitude of `p` (and of `1 − p`) below 1/2, so the relative error stays about
///   `16^-precision` at both ends. Hence 1 % (`T = 0.99 × 2^56`) at precision 4 is `fd70a` (5 digits), and
///   `fd70a4` needs precision 5.
/// - `p × 2^56` is rounded to the nearest integer first (half away from zero), then `T` to the nearest multiple
///   of `16^(14 − digits)`, halves up. The result is always below `2^56`.
pub fn threshold_for_probability(p: f64, precision: u32) -> Option<u64> {
    // NaN fails this test too.
    if !(MIN_SAMPLING_PROBABILITY..=1.0).contains(&p) {
        return None;
    }
    if p == 1.0 {
        return Some(ALWAYS_SAMPLE_THRESHOLD);
    }
    let precision = if precision == 0 {
        NUM_HEX_DIGITS
    } else {
        precision.min(NUM_HEX_DIGITS)
    };
    // The reference's `expF / -hexBits` truncates toward zero; 1 − p rounds to 1.0 (exponent 1) for p < 2^-53.
    let leading = |e: i32| if e < 0 { e.unsigned_abs() / 4 } else { 0 };
    let extra = leading(frexp_exponent(p)).max(leading(frexp_exponent(1.0 - p)));
    let digits = (precision + extra).min(NUM_HEX_DIGITS);

    // Exact scaling by a power of two, then the reference's math.Round (half away from zero, as f64::round).
    let scaled = (p * MAX_ADJUSTED_THRESHOLD as f64).round() as u64;
    let mut t = MAX_ADJUSTED_THRESHOLD - scaled;
    let shift = 4 * (NUM_HEX_DIGITS - digits);
    if shift != 0 {
        let half = 1u64 << (shift - 1);
        t = ((t + half) >> shift) << shift;
    }
    Some(t)
}

/// The probability a threshold keeps: `(2^56 − t) / 2^56` (0 for `t ≥ 2^56`).
#[inline]
pub fn probability_of_threshold(t: u64) -> f64 {
    MAX_ADJUSTED_THRESHOLD.saturating_sub(t) as f64 / MAX_ADJUSTED_THRESHOLD as f64
}

/// The adjusted count of a span kept at threshold `t`: `1 / p` (computed as the reference does, `1.0 /
/// Probability()`). 0 for `t ≥ 2^56`, as the reference's `AdjustedCount` for `NeverSampleThreshold`: such a span
/// should not have been kept.
#[inline]
pub fn adjusted_count(t: u64) -> f64 {
    if t >= MAX_ADJUSTED_THRESHOLD {
        return 0.0;
    }
    1.0 / probability_of_threshold(t)
}

/// Equalizing composition: the span leaves with the larger of the threshold it arrived with and the stage's,
/// i.e. at most the stage's probability (the reference's `equalizingSampler.decide`).
#[inline]
pub fn equalizing_threshold(incoming: Option<u64>, stage: u64) -> u64 {
    incoming.map_or(stage, |t| t.max(stage))
}

/// Proportional composition: the span leaves with probability `p_in × ratio` (`p_in` = 1 without a threshold),
/// rounded to `precision` digits as [`threshold_for_probability`] does (the reference's
/// `proportionalSampler.decide`). A product below `2^-56`, a `ratio` ≤ 0 or NaN give
/// [`NEVER_SAMPLE_THRESHOLD`]; `ratio` above 1 counts as 1.
///
/// Unlike the reference's `decide`, the result is never below `incoming`: rounding to `precision` digits can
/// land below a finer incoming threshold (1 % at full precision, ratio 1, precision 4), and a threshold must
/// never fall. The reference gets the same outcome one step later, when `UpdateTValueWithSampling` refuses the
/// lower value and keeps the old one.
pub fn proportional_threshold(incoming: Option<u64>, ratio: f64, precision: u32) -> u64 {
    // NaN is caught here too: f64::min below would silently drop it.
    if ratio.is_nan() || ratio <= 0.0 {
        return NEVER_SAMPLE_THRESHOLD;
    }
    let p_in = incoming.map_or(1.0, probability_of_threshold);
    let t = threshold_for_probability(p_in * ratio.min(1.0), precision)
        .unwrap_or(NEVER_SAMPLE_THRESHOLD);
    t.max(incoming.unwrap_or(0))
}

// ---- text forms ---------------------------------------------------------------------------------------

/// The `th` value of a threshold: `"0"` for 0, else its 14 hex digits with trailing zeros dropped, lowercase
/// (the reference's `Threshold.TValue()`). `""` for `t ≥ 2^56`, as the reference gives for
/// `NeverSampleThreshold`: that threshold is never written.
pub fn format_threshold(t: u64) -> String {
    let mut s = String::with_capacity(NUM_HEX_DIGITS as usize);
    push_threshold(&mut s, t);
    s
}

fn push_threshold(out: &mut String, t: u64) {
    if t == 0 {
        out.push('0');
        return;
    }
    if t >= MAX_ADJUSTED_THRESHOLD {
        return;
    }
    let mut digits = [0u8; NUM_HEX_DIGITS as usize];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((t >> (52 - 4 * i)) & 0xf) as usize];
    }
    // t ≠ 0, so at least one digit is not '0'.
    let len = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    for &d in &digits[..len] {
        out.push(char::from(d));
    }
}

/// Hex digits of either case, as Go's `strconv.ParseUint(s, 16, 64)` takes them (no sign, prefix or `_`).
fn parse_hex(s: &str) -> Option<u64> {
    let mut v = 0u64;
    for &b in s.as_bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// A `th` value: 1 to 14 hex digits, right-padded with zeros to 14 (the reference's `TValueToThreshold`).
/// Uppercase digits are accepted, as the reference's parser does; trailing zeros need not be dropped (`"8000"`
/// is `"8"`).
pub fn parse_threshold(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > NUM_HEX_DIGITS as usize {
        return None;
    }
    parse_hex(s).map(|v| v << (4 * (NUM_HEX_DIGITS as usize - s.len())))
}

/// An `rv` value: exactly 14 hex digits of either case (the reference's `RValueToRandomness`).
pub fn parse_randomness(s: &str) -> Option<u64> {
    if s.len() != NUM_HEX_DIGITS as usize {
        return None;
    }
    parse_hex(s)
}

// ---- the `ot` tracestate member -------------------------------------------------------------------------

/// The sampling sub-keys of a tracestate's `ot` member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtState {
    /// `th`: the threshold the span was sampled with (`None`: unknown probability).
    pub th: Option<u64>,
    /// `rv`: explicit randomness, which replaces the trace ID's.
    pub rv: Option<u64>,
}

/// Optional whitespace around W3C list members.
#[inline]
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// The key of a `key<sep>value` entry (the whole entry when it has no separator).
#[inline]
fn entry_key(entry: &str, sep: char) -> &str {
    entry.split_once(sep).map_or(entry, |(k, _)| k)
}

/// The value of the last `ot` member (the reference's parser keeps the last one too).
fn ot_member_value(tracestate: &str) -> Option<&str> {
    tracestate
        .split(',')
        .filter_map(|m| trim_ows(m).strip_prefix("ot="))
        .next_back()
}

/// The `ot` value grammar the reference checks (`isValidOTelTraceState`): `key:value` entries separated by
/// `;`, none empty, key = `[a-z][a-z0-9]*`, value = `[A-Za-z0-9._-]*`.
fn ot_value_syntax_ok(v: &str) -> bool {
    !v.is_empty()
        && v.split(';').all(|entry| {
            let Some((k, val)) = entry.split_once(':') else {
                return false;
            };
            let kb = k.as_bytes();
            !kb.is_empty()
                && kb[0].is_ascii_lowercase()
                && kb[1..]
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && val
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// Reads the `ot` member of a W3C tracestate. Returns the default (both `None`) at once when the string has no
/// `ot=` in it: most tracestates are empty or vendor-only.
///
/// What the reference refuses reads as absent. Its `NewOpenTelemetryTraceState` fails as a whole when the `ot`
/// value is malformed anywhere: bad syntax (an empty entry, a trailing `;`, an uppercase key), more than 256
/// bytes, a `th` that is not 1–14 hex digits, an `rv` that is not exactly 14. Its callers then use neither
/// value: the probabilistic sampler treats the span as an error (kept or dropped by `fail_closed`, tracestate
/// untouched) and the span-metrics connector counts it with an unknown adjusted count. So here such a member
/// gives `OtState::default()`: a malformed `th` is an unknown probability, and a valid `th` next to a
/// malformed `rv` is not trusted either, since it was computed against that `rv`.
///
/// Unknown sub-keys are ignored. A repeated sub-key or a repeated `ot` member: the last one counts, as in the
/// reference. Difference: the reference also gives up when *another* vendor's member is malformed (it validates
/// the whole tracestate); here only the `ot` member is checked, as other vendors' members say nothing about
/// sampling.
pub fn read_ot(tracestate: &str) -> OtState {
    if !tracestate.contains("ot=") {
        return OtState::default();
    }
    let Some(v) = ot_member_value(tracestate) else {
        return OtState::default();
    };
    if v.len() > MAX_OT_VALUE_LEN || !ot_value_syntax_ok(v) {
        return OtState::default();
    }
    let mut st = OtState::default();
    for entry in v.split(';') {
        let (k, val) = entry.split_once(':').unwrap_or((entry, ""));
        match k {
            "th" => match parse_threshold(val) {
                Some(t) => st.th = Some(t),
                None => return OtState::default(),
            },
            "rv" => match parse_randomness(val) {
                Some(r) => st.rv = Some(r),
                None => return OtState::default(),
            },
            _ => {}
        }
    }
    st
}

/// The tracestate with `th` set to `th` (`Some`) or erased (`None`) in the `ot` member.
///
/// - The `ot` value is written as the reference's `Serialize` orders it: `rv` entries, then `th`, then every
///   other sub-key in its original order. Entries other than `th` are copied verbatim, malformed or not (the
///   reference would refuse to touch a malformed `ot` at all; here `th` still has to be set or erased).
/// - Per W3C, the modified `ot` member moves to the front; every other member follows in order, its text kept
///   (whitespace around members and empty members are dropped, as the reference's serializer does). If a new
///   `ot` member would make 33 members, the rightmost is dropped (W3C allows 32).
/// - If the `ot` member ends up empty it is removed. With `th = None` and no `th` to erase, the input comes
///   back unchanged (so an empty input stays empty).
/// - `Some(t)` with `t ≥ 2^56` erases `th`, as the reference's `UpdateTValueWithSampling` does with
///   `NeverSampleThreshold` (whose `TValue()` is empty): probability 0 has no `th` form.
/// - With several `ot` members (invalid), the last one's sub-keys are kept and the others dropped: the
///   reference keeps only the last.
pub fn with_threshold(tracestate: &str, th: Option<u64>) -> String {
    let th = th.filter(|&t| t < MAX_ADJUSTED_THRESHOLD);
    let ot = if tracestate.contains("ot=") {
        ot_member_value(tracestate)
    } else {
        None
    };
    if th.is_none() {
        let has_th = tracestate.contains("ot=")
            && tracestate
                .split(',')
                .filter_map(|m| trim_ows(m).strip_prefix("ot="))
                .any(|v| v.split(';').any(|e| entry_key(e, ':') == "th"));
        if !has_th {
            return tracestate.to_string();
        }
    }

    let mut out = String::with_capacity(tracestate.len() + 24);
    let entries = || {
        ot.into_iter()
            .flat_map(|v| v.split(';'))
            .filter(|e| !e.is_empty())
    };
    let mut sub = 0usize;
    let mut push_entry = |out: &mut String, e: &str| {
        out.push_str(if sub == 0 { "ot=" } else { ";" });
        out.push_str(e);
        sub += 1;
    };
    for e in entries().filter(|e| entry_key(e, ':') == "rv") {
        push_entry(&mut out, e);
    }
    if let Some(t) = th {
        push_entry(&mut out, "th:");
        push_threshold(&mut out, t);
    }
    for e in entries().filter(|e| !matches!(entry_key(e, ':'), "rv" | "th")) {
        push_entry(&mut out, e);
    }

    let mut members = usize::from(!out.is_empty());
    for m in tracestate.split(',').map(trim_ows) {
        if m.is_empty() || entry_key(m, '=') == "ot" {
            continue;
        }
        if members == MAX_MEMBERS {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
        members += 1;
    }
    out
}

// ---- raw OTLP spans -----------------------------------------------------------------------------------

fn wire_error(f: Fail) -> String {
    format!("malformed span at byte {}: {}", f.offset, f.message)
}

/// The `trace_state` of a raw OTLP `Span` message (`""` when absent), borrowed from `raw`. As in protobuf, the
/// last occurrence of the field counts. Malformed bytes or a non-UTF-8 value give `""` (ingest validated them).
pub fn span_trace_state(raw: &[u8]) -> &str {
    let mut r = Reader::new(raw, 0);
    let mut found = "";
    while !r.is_empty() {
        let Ok((field, wt)) = r.read_tag() else {
            return "";
        };
        if field == SPAN_TRACE_STATE && wt == WireType::Len {
            let Ok((bytes, off)) = r.read_len() else {
                return "";
            };
            found = utf8(bytes, off).unwrap_or("");
        } else if r.skip(field, wt).is_err() {
            return "";
        }
    }
    found
}

/// Appends to `out` one OTLP `Span` message rewritten from its raw bytes `raw`: `trace_state` (field 3) replaced
/// by `trace_state` (omitted when empty, as proto3 does), then `extra` (already-encoded fields, e.g. attribute
/// entries) at the end. Every other field is copied byte for byte, in order, unknown fields included.
///
/// The new `trace_state` goes where the first old one was; without one, before the first field numbered above 3
/// (where a canonical encoder puts it), or at the end. Repeated `trace_state` fields collapse into one.
/// Malformed bytes return an error and leave `out` as it was; nothing panics.
pub fn rewrite_span(
    raw: &[u8],
    trace_state: &str,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let before = out.len();
    let result = rewrite_span_into(raw, trace_state, extra, out);
    if result.is_err() {
        out.truncate(before);
    }
    result
}

fn rewrite_span_into(
    raw: &[u8],
    trace_state: &str,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.reserve(raw.len() + trace_state.len() + extra.len() + 6);
    let write_ts = |out: &mut Vec<u8>| {
        if !trace_state.is_empty() {
            put_len_header(out, SPAN_TRACE_STATE, trace_state.len());
            out.extend_from_slice(trace_state.as_bytes());
        }
    };
    let mut r = Reader::new(raw, 0);
    let mut written = false;
    // Fields are copied in runs: `run` is where the bytes not yet copied begin.
    let mut run = 0usize;
    while !r.is_empty() {
        let start = r.offset();
        let (field, wt) = r.read_tag().map_err(wire_error)?;
        // A mistyped field 3 is an unknown field (as every protobuf runtime reads it): copied as it came.
        if field == SPAN_TRACE_STATE && wt == WireType::Len {
            r.read_len().map_err(wire_error)?;
            out.extend_from_slice(&raw[run..start]);
            run = r.offset();
            if !written {
                write_ts(out);
                written = true;
            }
            continue;
        }
        if !written && field > SPAN_TRACE_STATE {
            out.extend_from_slice(&raw[run..start]);
            run = start;
            write_ts(out);
            written = true;
        }
        r.skip(field, wt).map_err(wire_error)?;
    }
    out.extend_from_slice(&raw[run..]);
    if !written {
        write_ts(out);
    }
    out.extend_from_slice(extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn tv(p: f64, precision: u32) -> String {
        format_threshold(threshold_for_probability(p, precision).expect("in range"))
    }

    fn th(s: &str) -> u64 {
        parse_threshold(s).expect("valid th")
    }

    /// The next f64 toward zero, `n` times (Go's `math.Nextafter(x, 0)`; `f64::next_down` needs Rust 1.86).
    fn next_toward_zero(x: f64, n: u32) -> f64 {
        f64::from_bits(x.to_bits() - u64::from(n))
    }

    #[test]
    fn reference_examples_with_precision() {
        // ExampleProbabilityToThresholdWithPrecision: 1/3, 2/3, 3/3 at precision 3.
        assert_eq!(tv(1.0 / 3.0, 3), "aab");
        assert_eq!(tv(2.0 / 3.0, 3), "555");
        assert_eq!(tv(3.0 / 3.0, 3), "0");
        // ExampleProbabilityToThreshold_rounding: full precision, the 52-bit significand shows in the last digit.
        assert_eq!(tv(1.0 / 3.0, 0), "aaaaaaaaaaaaac");
        assert_eq!(tv(1.0 / 3.0, NUM_HEX_DIGITS), "aaaaaaaaaaaaac");
        // ExampleProbabilityToThreshold_verysmall: precision 3, raised automatically by the leading f digits.
        for (p, want) in [
            (MIN_SAMPLING_PROBABILITY, "ffffffffffffff"),
            (2.0 * MIN_SAMPLING_PROBABILITY, "fffffffffffffe"),
            (3.0 * MIN_SAMPLING_PROBABILITY, "fffffffffffffd"),
            (4.0 * MIN_SAMPLING_PROBABILITY, "fffffffffffffc"),
            (8.0 * MIN_SAMPLING_PROBABILITY, "fffffffffffff8"),
            (16.0 * MIN_SAMPLING_PROBABILITY, "fffffffffffff"),
        ] {
            assert_eq!(tv(p, 3), want, "{p:e}");
        }
    }

    #[test]
    fn reference_limited_precision_table() {
        // ExampleProbabilityToThreshold_limitedprecision: full precision around 15/16, 1/2, 1/4, 1/8, 1/16.
        let cases: [(f64, [&str; 4]); 5] = [
            (
                15.0 / 16.0,
                ["1", "10000000000008", "1000000000001", "10000000000018"],
            ),
            (
                0.5,
                ["8", "80000000000004", "80000000000008", "8000000000000c"],
            ),
            (
                0.25,
                ["c", "c0000000000002", "c0000000000004", "c0000000000006"],
            ),
            (
                0.125,
                ["e", "e0000000000001", "e0000000000002", "e0000000000003"],
            ),
            (1.0 / 16.0, ["f", "f", "f0000000000001", "f0000000000001"]),
        ];
        for (base, wants) in cases {
            for (n, want) in wants.iter().enumerate() {
                assert_eq!(
                    tv(next_toward_zero(base, n as u32), 0),
                    *want,
                    "{base} - {n} ulp"
                );
            }
        }
    }

    #[test]
    fn reference_precision_rounding_table() {
        // TestProbabilityToThresholdWithPrecision: exact t-value, then each rounding with the precision equal
        // to its digits without leading zeros.
        let cases: [(f64, &str, &[&str]); 6] = [
            (
                1.0 - 0x456789a as f64 / 2f64.powi(28),
                "456789a",
                &["45678a", "45679", "4568", "456", "45", "4"],
            ),
            (
                1.0 - 0x456789a as f64 / 2f64.powi(40),
                "000456789a",
                &[
                    "00045678a",
                    "00045679",
                    "0004568",
                    "000456",
                    "00045",
                    "0004",
                ],
            ),
            (
                1.0 - 0x789abcdef_u64 as f64 / 2f64.powi(40),
                "0789abcdef",
                &[
                    "0789abcdef",
                    "0789abcdf",
                    "0789abce",
                    "0789abd",
                    "0789ac",
                    "0789b",
                    "078a",
                    "079",
                    "08",
                ],
            ),
            (
                1.0 - 0x12345678 as f64 / 2f64.powi(32),
                "12345678",
                &["1234568", "123456", "12345", "1234", "123", "12", "1"],
            ),
            (
                1.0 - 0x80801 as f64 / 2f64.powi(28),
                "0080801",
                &["00808", "008"],
            ),
            (1.0, "0", &["0"]),
        ];
        for (p, exact, rounded) in cases {
            assert_eq!(tv(p, 0), exact);
            for want in rounded {
                let precision = want.trim_start_matches('0').len() as u32;
                assert_eq!(tv(p, precision), *want, "{exact} at precision {precision}");
            }
        }
    }

    #[test]
    fn common_probabilities_at_default_precision() {
        assert_eq!(tv(1.0, DEFAULT_PRECISION), "0");
        assert_eq!(tv(0.5, DEFAULT_PRECISION), "8");
        assert_eq!(tv(0.25, DEFAULT_PRECISION), "c");
        assert_eq!(tv(0.1, DEFAULT_PRECISION), "e666");
        assert_eq!(tv(0.1, 0), "e6666666666666");
        // 1 %: one leading f is discounted, so precision 4 keeps 5 digits; the spec's example fd70a4 is 6.
        assert_eq!(tv(0.01, DEFAULT_PRECISION), "fd70a");
        assert_eq!(tv(0.01, 5), "fd70a4");
        assert_eq!(tv(0.01, 0), "fd70a3d70a3d71");
        assert_eq!(tv(1.0 / 3.0, DEFAULT_PRECISION), "aaab");
        assert_eq!(tv(0.001, DEFAULT_PRECISION), "ffbe77");
        // Near 1 the leading zeros are discounted.
        assert_eq!(tv(0.99, DEFAULT_PRECISION), "028f6");
        assert_eq!(
            tv(MIN_SAMPLING_PROBABILITY, DEFAULT_PRECISION),
            "ffffffffffffff"
        );
        // Precision above 14 is full precision.
        assert_eq!(tv(1.0 / 3.0, 15), "aaaaaaaaaaaaac");
        assert_eq!(tv(1.0 / 3.0, u32::MAX), "aaaaaaaaaaaaac");
    }

    #[test]
    fn out_of_range_probabilities() {
        for p in [
            0.0,
            -0.5,
            1.000_000_1,
            f64::NAN,
            f64::INFINITY,
            MIN_SAMPLING_PROBABILITY / 2.0,
            next_toward_zero(MIN_SAMPLING_PROBABILITY, 1),
        ] {
            assert_eq!(threshold_for_probability(p, DEFAULT_PRECISION), None, "{p}");
        }
    }

    #[test]
    fn thresholds_stay_below_2_56_and_round_trip() {
        let mut p = 1.0f64;
        while p >= MIN_SAMPLING_PROBABILITY {
            for q in [p, p * 0.7, 1.0 - p / 3.0] {
                for precision in 0..=15 {
                    let Some(t) = threshold_for_probability(q, precision) else {
                        continue;
                    };
                    assert!(t < MAX_ADJUSTED_THRESHOLD, "{q:e} {precision}");
                    let s = format_threshold(t);
                    assert!(!s.is_empty() && s.len() <= 14);
                    assert_eq!(parse_threshold(&s), Some(t), "{q:e} {precision} {s}");
                }
            }
            p /= 3.0;
        }
    }

    #[test]
    fn format_and_parse() {
        assert_eq!(format_threshold(0), "0");
        assert_eq!(format_threshold(1), "00000000000001");
        assert_eq!(format_threshold(0x80000000000000), "8");
        assert_eq!(format_threshold(0xfd70a400000000), "fd70a4");
        assert_eq!(
            format_threshold(MAX_ADJUSTED_THRESHOLD - 1),
            "ffffffffffffff"
        );
        assert_eq!(format_threshold(MAX_ADJUSTED_THRESHOLD), "");
        assert_eq!(format_threshold(u64::MAX), "");

        assert_eq!(parse_threshold("0"), Some(0));
        assert_eq!(parse_threshold("8"), Some(0x80000000000000));
        assert_eq!(parse_threshold("c"), Some(0xc0000000000000));
        assert_eq!(parse_threshold("fd70a4"), Some(0xfd70a400000000));
        assert_eq!(parse_threshold("FD70A4"), Some(0xfd70a400000000));
        assert_eq!(parse_threshold("1000"), parse_threshold("1"));
        assert_eq!(parse_threshold("abcdefabcdefab"), Some(0xabcdefabcdefab));
        // The reference's syntax and size errors.
        for bad in [
            "",
            "ffffffffffffffff",
            "100000000000000",
            "$",
            "0x1p+3",
            "14.5",
            "-1",
            "+8",
            " 8",
            "8 ",
            "0x8",
            "g",
            "é",
        ] {
            assert_eq!(parse_threshold(bad), None, "{bad:?}");
        }
        for s in [
            "0",
            "8",
            "c",
            "fd70a4",
            "00000000000001",
            "ffffffffffffff",
            "0789abcdef",
        ] {
            assert_eq!(format_threshold(parse_threshold(s).unwrap()), s);
        }

        assert_eq!(parse_randomness("22222222222222"), Some(0x22222222222222));
        assert_eq!(
            parse_randomness("ffffffffffffff"),
            Some(MAX_ADJUSTED_THRESHOLD - 1)
        );
        assert_eq!(parse_randomness("D29D6A7215CED0"), Some(0xd29d6a7215ced0));
        for bad in [
            "3",
            "100000000000000",
            "fffffffffffffffff",
            "2222222222222",
            "2222222222222g",
            "",
        ] {
            assert_eq!(parse_randomness(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn probability_and_adjusted_count() {
        assert_eq!(probability_of_threshold(0), 1.0);
        assert_eq!(adjusted_count(0), 1.0);
        assert_eq!(probability_of_threshold(th("8")), 0.5);
        assert_eq!(adjusted_count(th("8")), 2.0);
        assert_eq!(probability_of_threshold(th("c")), 0.25);
        assert_eq!(adjusted_count(th("c")), 4.0);
        assert_eq!(adjusted_count(th("f")), 16.0);
        // TestOpenTelemetryTraceStateTValueSerialize: th:3 is probability 1 − 3/16.
        assert_eq!(probability_of_threshold(th("3")), 1.0 - 3.0 / 16.0);
        assert_eq!(adjusted_count(MAX_ADJUSTED_THRESHOLD - 1), 2f64.powi(56));
        assert!((adjusted_count(th("fd70a4")) - 100.0).abs() < 0.001);
        assert_eq!(probability_of_threshold(MAX_ADJUSTED_THRESHOLD), 0.0);
        assert_eq!(adjusted_count(MAX_ADJUSTED_THRESHOLD), 0.0);
        assert_eq!(adjusted_count(u64::MAX), 0.0);
    }

    #[test]
    fn randomness_and_keep_decision() {
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(trace_id_randomness(&id), 0x09_0a0b_0c0d_0e0f);
        id[8] = 0xff; // byte 8 is not part of R
        assert_eq!(trace_id_randomness(&id), 0x09_0a0b_0c0d_0e0f);
        assert_eq!(trace_id_randomness(&[0xff; 16]), MAX_ADJUSTED_THRESHOLD - 1);
        assert_eq!(trace_id_randomness(&[0; 16]), 0);

        // ExampleThreshold_ShouldSample and ExampleThreshold_ShouldSample_traceid.
        let rv = parse_randomness("d29d6a7215ced0").unwrap();
        assert!(should_keep(rv, th("c")));
        let tid: [u8; 16] = [
            0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xd2, 0x9d, 0x6a, 0x72, 0x15,
            0xce, 0xd0,
        ];
        assert_eq!(trace_id_randomness(&tid), rv);
        assert!(should_keep(trace_id_randomness(&tid), th("c")));
        assert!(!should_keep(rv, th("d3")));
        // R ≥ T: equal keeps.
        assert!(should_keep(rv, rv));
        assert!(should_keep(0, 0));
        assert!(!should_keep(
            MAX_ADJUSTED_THRESHOLD - 1,
            NEVER_SAMPLE_THRESHOLD
        ));
    }

    #[test]
    fn composition() {
        // TestUpdateTValueWithSampling, through the two modes.
        assert_eq!(equalizing_threshold(Some(th("8")), th("e")), th("e"));
        assert_eq!(equalizing_threshold(Some(th("f")), th("8")), th("f"));
        assert_eq!(equalizing_threshold(None, th("f")), th("f"));
        assert_eq!(equalizing_threshold(Some(0), th("f")), th("f"));
        // 2/3 in, 1/3 update: 0x555 + 0xaab = 0x1000.
        let third = threshold_for_probability(0x555 as f64 / 4096.0, 0).unwrap();
        assert_eq!(equalizing_threshold(Some(th("555")), third), th("aab"));
        // 2/3 in, halved: 0xaab / 0x2000 kept, T = 0x1555 / 0x2000.
        assert_eq!(proportional_threshold(Some(th("555")), 0.5, 4), th("aaa8"));
        assert_eq!(proportional_threshold(Some(th("8")), 0.5, 4), th("c"));
        assert_eq!(proportional_threshold(None, 0.25, 4), th("c"));
        assert_eq!(proportional_threshold(Some(th("c")), 1.0, 4), th("c"));
        // A finer incoming threshold is not lowered by rounding.
        let fine = threshold_for_probability(0.01, 0).unwrap();
        assert_eq!(proportional_threshold(Some(fine), 1.0, 4), fine);
        // Underflow and nonsense ratios: probability 0.
        assert_eq!(
            proportional_threshold(Some(MAX_ADJUSTED_THRESHOLD - 1), 0.5, 4),
            NEVER_SAMPLE_THRESHOLD
        );
        assert_eq!(proportional_threshold(None, 0.0, 4), NEVER_SAMPLE_THRESHOLD);
        assert_eq!(
            proportional_threshold(None, f64::NAN, 4),
            NEVER_SAMPLE_THRESHOLD
        );
        assert_eq!(proportional_threshold(None, 2.0, 4), 0);
    }

    #[test]
    fn read_ot_on_real_tracestates() {
        let st = read_ot("ot=th:8;rv:0123456789abcd,vendor=x");
        assert_eq!(st.th, Some(0x80000000000000));
        assert_eq!(st.rv, Some(0x0123456789abcd));
        assert_eq!(
            read_ot("vendor=a,ot=rv:ffffffffffffff"),
            OtState {
                th: None,
                rv: Some(MAX_ADJUSTED_THRESHOLD - 1)
            }
        );
        // ExampleW3CTraceState.
        assert_eq!(
            read_ot("ot=th:c;rv:d29d6a7215ced0;pn:abc,zz=vendorcontent"),
            OtState {
                th: Some(th("c")),
                rv: Some(0xd29d6a7215ced0)
            }
        );
        // TestParseW3CTraceState: whitespace and empty members.
        for s in [
            "ot=th:1",
            " ot=th:1 ",
            " ot=th:1,other=value ",
            " , ot=th:1, , other=value ",
        ] {
            assert_eq!(read_ot(s).th, Some(th("1")), "{s:?}");
        }
        assert_eq!(
            read_ot("ot=th:100;rv:abcdabcdabcdff "),
            OtState {
                th: Some(th("1")),
                rv: Some(0xabcdabcdabcdff)
            }
        );
        assert_eq!(read_ot("ot=x:1;u:V;th:4;y:.-_-.;z:").th, Some(th("4")));
        assert_eq!(read_ot("ot=th:FD70A4").th, Some(0xfd70a400000000));
        assert_eq!(read_ot("ot=th:0").th, Some(0));
        // The last repeated sub-key or member counts.
        assert_eq!(read_ot("ot=th:8;th:c").th, Some(th("c")));
        assert_eq!(read_ot("ot=th:8,ot=th:c").th, Some(th("c")));

        // No ot member.
        for s in ["", "vendor=x", "foot=th:8", "a=ot", ",,,"] {
            assert_eq!(read_ot(s), OtState::default(), "{s:?}");
        }
    }

    #[test]
    fn read_ot_treats_what_the_reference_refuses_as_absent() {
        for s in [
            "ot=th:zz",
            "ot=th:",
            "ot=th:ffffffffffffffff",
            "ot=th:100000000000000",
            "ot=th:0x1p+3",
            "ot=th:14.5",
            "ot=th:-1",
            "ot=th:8;",
            "ot=th:8;;rv:0123456789abcd",
            "ot=th:1=p:2",
            "ot=TH:8",
            "ot=:8",
            "ot=th",
            "ot=",
            // A malformed rv takes th with it, as in the reference.
            "ot=th:8;rv:3",
            "ot=rv:0123456789abcd;th:zz",
        ] {
            assert_eq!(read_ot(s), OtState::default(), "{s:?}");
        }
        let long = format!("ot=th:8;x:{}", "_".repeat(MAX_OT_VALUE_LEN));
        assert_eq!(read_ot(&long), OtState::default());
        let just_fits = format!("ot=th:8;x:{}", "_".repeat(MAX_OT_VALUE_LEN - 7));
        assert_eq!(read_ot(&just_fits).th, Some(th("8")));
        // Another vendor's junk does not hide the threshold (the reference would refuse the whole string).
        assert_eq!(read_ot("Bad Key=1,ot=th:8").th, Some(th("8")));
    }

    #[test]
    fn with_threshold_sets_replaces_and_erases() {
        assert_eq!(with_threshold("", None), "");
        assert_eq!(with_threshold("", Some(th("c"))), "ot=th:c");
        assert_eq!(with_threshold("", Some(0)), "ot=th:0");
        // Nothing to erase: the input comes back as it was.
        assert_eq!(with_threshold("vendor=x", None), "vendor=x");
        assert_eq!(
            with_threshold(" a=1 , ot=rv:0123456789abcd", None),
            " a=1 , ot=rv:0123456789abcd"
        );
        // Set: ot goes first.
        assert_eq!(
            with_threshold("vendor=x", Some(th("8"))),
            "ot=th:8,vendor=x"
        );
        assert_eq!(
            with_threshold("vendor=a,ot=rv:ffffffffffffff", Some(th("fd70a"))),
            "ot=rv:ffffffffffffff;th:fd70a,vendor=a"
        );
        // Replace: rv first, then th, then the other sub-keys (the reference's Serialize order).
        assert_eq!(
            with_threshold("ot=th:8;rv:0123456789abcd,vendor=x", Some(th("e"))),
            "ot=rv:0123456789abcd;th:e,vendor=x"
        );
        assert_eq!(
            with_threshold(
                "a=1,ot=pn:abc;th:8;rv:0123456789abcd;x:y,b=2",
                Some(th("f"))
            ),
            "ot=rv:0123456789abcd;th:f;pn:abc;x:y,a=1,b=2"
        );
        // TestOpenTelemetryTraceStateTValueSerialize / TValueUpdate / RTUpdate.
        assert_eq!(
            with_threshold("ot=rv:10000000000000;th:3;a:b;c:d", Some(th("3"))),
            "ot=rv:10000000000000;th:3;a:b;c:d"
        );
        assert_eq!(
            with_threshold("ot=rv:abcdefabcdefab", Some(th("3"))),
            "ot=rv:abcdefabcdefab;th:3"
        );
        assert_eq!(with_threshold("ot=a:b", Some(th("3"))), "ot=th:3;a:b");
        // Erase: rv and the rest stay, the modified member moves to the front.
        assert_eq!(
            with_threshold("a=1,ot=th:8;rv:0123456789abcd;pn:abc,b=2", None),
            "ot=rv:0123456789abcd;pn:abc,a=1,b=2"
        );
        // TestOpenTelemetryTraceStateRTClear (th part).
        assert_eq!(
            with_threshold("ot=a:b;rv:12341234123412;th:1234", None),
            "ot=rv:12341234123412;a:b"
        );
        // An ot member left empty is removed.
        assert_eq!(with_threshold("a=1,ot=th:8", None), "a=1");
        assert_eq!(with_threshold("ot=th:8", None), "");
        assert_eq!(with_threshold("ot=th:zz", None), "");
        // Probability 0 has no th form: erased.
        assert_eq!(
            with_threshold("ot=th:8;rv:0123456789abcd", Some(MAX_ADJUSTED_THRESHOLD)),
            "ot=rv:0123456789abcd"
        );
        assert_eq!(with_threshold("x=1", Some(MAX_ADJUSTED_THRESHOLD)), "x=1");
        // Malformed entries other than th are kept verbatim.
        assert_eq!(
            with_threshold("ot=rv:xyz;th:8;Q", Some(th("c"))),
            "ot=rv:xyz;th:c;Q"
        );
        // Whitespace and empty members go; member text stays.
        assert_eq!(
            with_threshold(" , ot=th:1, , other=value with space ", Some(th("8"))),
            "ot=th:8,other=value with space"
        );
        // Several ot members: the last one's sub-keys are kept.
        assert_eq!(
            with_threshold("ot=th:8;x:1,a=1,ot=th:c;y:2", Some(th("e"))),
            "ot=th:e;y:2,a=1"
        );
        // "foot" is not "ot".
        assert_eq!(
            with_threshold("foot=th:8", Some(th("c"))),
            "ot=th:c,foot=th:8"
        );
        assert_eq!(with_threshold("foot=th:8", None), "foot=th:8");
    }

    #[test]
    fn with_threshold_keeps_at_most_32_members() {
        let vendors: Vec<String> = (0..32).map(|i| format!("v{i}=x")).collect();
        let ts = vendors.join(",");
        let out = with_threshold(&ts, Some(th("8")));
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), 32);
        assert_eq!(members[0], "ot=th:8");
        assert_eq!(members[31], "v30=x");
        // Replacing an existing ot member drops nothing.
        let ts = format!("ot=th:4,{}", vendors[..31].join(","));
        assert_eq!(with_threshold(&ts, Some(th("8"))).split(',').count(), 32);
    }

    #[test]
    fn with_threshold_then_read_ot() {
        for ts in ["", "a=1", "ot=rv:0123456789abcd,b=2", "a=1,ot=th:8;pn:x"] {
            for t in [0, 1, th("8"), th("fd70a"), MAX_ADJUSTED_THRESHOLD - 1] {
                let out = with_threshold(ts, Some(t));
                let st = read_ot(&out);
                assert_eq!(st.th, Some(t), "{ts:?} {t:x} -> {out:?}");
                assert_eq!(st.rv, read_ot(ts).rv);
                assert_eq!(read_ot(&with_threshold(&out, None)).th, None);
            }
        }
    }

    // ---- raw spans ----

    #[derive(Clone, PartialEq, Message)]
    struct AnyValue {
        #[prost(string, optional, tag = "1")]
        string_value: Option<String>,
        #[prost(int64, optional, tag = "3")]
        int_value: Option<i64>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct KeyValue {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(message, optional, tag = "2")]
        value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Event {
        #[prost(fixed64, tag = "1")]
        time_unix_nano: u64,
        #[prost(string, tag = "2")]
        name: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Link {
        #[prost(bytes = "vec", tag = "1")]
        trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        trace_state: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Status {
        #[prost(string, tag = "2")]
        message: String,
        #[prost(int32, tag = "3")]
        code: i32,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Span {
        #[prost(bytes = "vec", tag = "1")]
        trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        name: String,
        #[prost(int32, tag = "6")]
        kind: i32,
        #[prost(fixed64, tag = "7")]
        start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "10")]
        dropped_attributes_count: u32,
        #[prost(message, repeated, tag = "11")]
        events: Vec<Event>,
        #[prost(uint32, tag = "12")]
        dropped_events_count: u32,
        #[prost(message, repeated, tag = "13")]
        links: Vec<Link>,
        #[prost(uint32, tag = "14")]
        dropped_links_count: u32,
        #[prost(message, optional, tag = "15")]
        status: Option<Status>,
        #[prost(fixed32, tag = "16")]
        flags: u32,
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                string_value: Some(value.into()),
                int_value: None,
            }),
        }
    }

    fn sample_span(trace_state: &str) -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: vec![7; 8],
            trace_state: trace_state.into(),
            parent_span_id: vec![9; 8],
            name: "GET /items".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: vec![kv("http.method", "GET"), kv("ot", "th:8")],
            dropped_attributes_count: 3,
            events: vec![Event {
                time_unix_nano: 5,
                name: "e".into(),
            }],
            dropped_events_count: 1,
            links: vec![Link {
                trace_id: vec![2; 16],
                span_id: vec![3; 8],
                trace_state: "ot=th:c".into(),
            }],
            dropped_links_count: 2,
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            flags: 0x301,
        }
    }

    /// The top-level fields of a message: (number, the field's exact bytes, tag included).
    fn fields(raw: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut r = Reader::new(raw, 0);
        let mut out = Vec::new();
        while !r.is_empty() {
            let start = r.offset();
            let (f, wt) = r.read_tag().unwrap();
            r.skip(f, wt).unwrap();
            out.push((f, raw[start..r.offset()].to_vec()));
        }
        out
    }

    fn rewrite(raw: &[u8], ts: &str, extra: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        rewrite_span(raw, ts, extra, &mut out).unwrap();
        out
    }

    #[test]
    fn rewrite_span_replaces_trace_state_and_appends_extra() {
        let orig = sample_span("ot=th:8;rv:0123456789abcd,vendor=x");
        let raw = orig.encode_to_vec();
        assert_eq!(span_trace_state(&raw), "ot=th:8;rv:0123456789abcd,vendor=x");

        let new_ts = with_threshold(span_trace_state(&raw), Some(th("c")));
        assert_eq!(new_ts, "ot=rv:0123456789abcd;th:c,vendor=x");
        let extra_attr = kv("sampling.adjusted_count", "4");
        let mut extra = Vec::new();
        put_len_header(&mut extra, 9, extra_attr.encoded_len());
        extra_attr.encode(&mut extra).unwrap();

        let out = rewrite(&raw, &new_ts, &extra);
        assert_eq!(span_trace_state(&out), new_ts);
        let got = Span::decode(out.as_slice()).unwrap();
        let mut want = orig.clone();
        want.trace_state = new_ts.clone();
        want.attributes.push(extra_attr);
        assert_eq!(got, want);

        // Field by field: the same fields in the same order with the same bytes, field 3 replaced in place,
        // the extra field last.
        let before = fields(&raw);
        let after = fields(&out);
        assert_eq!(after.len(), before.len() + 1);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(a.0, b.0, "field #{i}");
            if b.0 != 3 {
                assert_eq!(a.1, b.1, "field {} bytes", b.0);
            }
        }
        assert_eq!(after.last().unwrap().1, extra);
    }

    #[test]
    fn rewrite_span_without_extra_matches_a_canonical_encoding() {
        // trace_state added where it was absent: placed before field 4, as prost would.
        let raw = sample_span("").encode_to_vec();
        assert_eq!(span_trace_state(&raw), "");
        let out = rewrite(&raw, "ot=th:c", &[]);
        assert_eq!(out, sample_span("ot=th:c").encode_to_vec());
        // Erased: the field is omitted.
        let raw = sample_span("ot=th:8").encode_to_vec();
        assert_eq!(rewrite(&raw, "", &[]), sample_span("").encode_to_vec());
        // Unchanged value: unchanged bytes.
        assert_eq!(rewrite(&raw, "ot=th:8", &[]), raw);
        // Only low fields: trace_state goes at the end.
        let short = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let short_raw = short.encode_to_vec();
        let out = rewrite(&short_raw, "a=b", &[]);
        assert_eq!(
            out,
            Span {
                trace_state: "a=b".into(),
                ..short
            }
            .encode_to_vec()
        );
        // Empty span.
        assert_eq!(rewrite(&[], "", &[]), Vec::<u8>::new());
        assert_eq!(
            rewrite(&[], "a=b", &[]),
            Span {
                trace_state: "a=b".into(),
                ..Default::default()
            }
            .encode_to_vec()
        );
    }

    #[test]
    fn rewrite_span_keeps_unknown_fields_and_collapses_repeats() {
        let mut raw = sample_span("ot=th:8").encode_to_vec();
        // An unknown varint field 100, a second trace_state, an unknown group 101.
        crate::otlp::wire::put_varint(&mut raw, 100 << 3);
        crate::otlp::wire::put_varint(&mut raw, 12345);
        put_len_header(&mut raw, 3, 7);
        raw.extend_from_slice(b"ot=th:f");
        crate::otlp::wire::put_varint(&mut raw, (101 << 3) | 3);
        raw.extend_from_slice(&[0x08, 0x01]);
        crate::otlp::wire::put_varint(&mut raw, (101 << 3) | 4);
        // Protobuf: the last occurrence counts.
        assert_eq!(span_trace_state(&raw), "ot=th:f");

        let out = rewrite(&raw, "ot=th:c", &[]);
        assert_eq!(span_trace_state(&out), "ot=th:c");
        let before: Vec<_> = fields(&raw).into_iter().filter(|f| f.0 != 3).collect();
        let after = fields(&out);
        assert_eq!(after.iter().filter(|f| f.0 == 3).count(), 1);
        let after: Vec<_> = after.into_iter().filter(|f| f.0 != 3).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn rewrite_span_refuses_malformed_bytes_without_touching_out() {
        let raw = sample_span("ot=th:8").encode_to_vec();
        let mut out = b"prefix".to_vec();
        for bad in [
            &raw[..raw.len() - 1],   // truncated
            &[0x1a, 0x05, b'a'][..], // trace_state longer than the message
            &[0x00][..],             // field 0
            &[0x0e][..],             // wire type 6
            &[0x0c][..],             // end-group without start
            &[0x0b, 0x08, 0x01][..], // unclosed group
        ] {
            assert!(
                rewrite_span(bad, "ot=th:c", b"xx", &mut out).is_err(),
                "{bad:x?}"
            );
            assert_eq!(out, b"prefix");
            assert_eq!(span_trace_state(bad), "");
        }
        // trace_state as a varint is an unknown field: kept, the new trace_state written before field 4.
        let mut mistyped = Vec::new();
        rewrite_span(&[0x18, 0x01], "a=b", b"", &mut mistyped).unwrap();
        assert_eq!(mistyped, [0x18, 0x01, 0x1a, 0x03, b'a', b'=', b'b']);
        // Invalid UTF-8 in trace_state reads as "".
        assert_eq!(span_trace_state(&[0x1a, 0x02, 0xc3, 0x28]), "");
        // Appends after what out held.
        rewrite_span(&raw, "ot=th:c", &[], &mut out).unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(span_trace_state(&out[6..]), "ot=th:c");
    }
}
