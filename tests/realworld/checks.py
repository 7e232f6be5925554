"""The properties the end-to-end suite (through Jaeger and serve) and the fixture tests (offline) both check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MUST_KEEP = ("error", "slow", "forced")
RANDOM_RATE = 0.01  # the seed's probabilistic-policy: sampling_percentage 1
ALPHA = 1e-6  # a binomial tail this unlikely fails the test (one false alarm in a million runs)
SPAN_KIND_CLIENT = 3


def must_keep(truth: Mapping[str, str]) -> dict[str, str]:
    """Trace ID → kind, for the traces the seed's policies must keep (error, slow, forced)."""
    return {t: k for t, k in truth.items() if k in MUST_KEEP}


def rest(truth: Mapping[str, str]) -> list[str]:
    return sorted(t for t, k in truth.items() if k == "ok")


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exactly."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, min(k, n) + 1))


def within_binomial_bounds(kept: int, n: int, p: float = RANDOM_RATE, alpha: float = ALPHA) -> str | None:
    """None when `kept` of `n` is a plausible Binomial(n, p) draw (neither tail below `alpha`), else why not."""
    if kept > 0 and binomial_sf(kept, n, p) < alpha:
        return f"{kept} of {n} kept: P(X >= {kept}) = {binomial_sf(kept, n, p):.2g} at rate {p:g}"
    if binomial_cdf(kept, n, p) < alpha:
        return f"{kept} of {n} kept: P(X <= {kept}) = {binomial_cdf(kept, n, p):.2g} at rate {p:g}"
    return None


def client_spans(by_trace: Mapping[str, list[dict[str, Any]]]) -> int:
    """CLIENT spans in a recording: every one is a call the gap audit must count, named or not."""
    return sum(1 for spans in by_trace.values() for s in spans if s.get("kind") == SPAN_KIND_CLIENT)


def service_names(by_trace: Mapping[str, list[dict[str, Any]]], service: str) -> set[str]:
    """The names that identify `service` as a destination: its `service.name`, and the `rpc.service` its own
    SERVER spans answer as (a gRPC CLIENT span names only that: python grpcio's carry no address at all)."""
    out = {service}
    for spans in by_trace.values():
        for s in spans:
            if s.get("kind") == 2 and any(a["key"] == "service.name" and a["value"].get("stringValue") == service
                                          for a in s["_resource"]):
                out |= {a["value"]["stringValue"] for a in s.get("attributes", [])
                        if a["key"] == "rpc.service" and "stringValue" in a["value"]}
    return out


def names(pair: Mapping[str, Any], service: set[str] | str) -> bool:
    """The audit's pair names the service as its destination (directly, as the service behind an address, or as
    the gRPC service it serves)."""
    wanted = {service} if isinstance(service, str) else service
    return bool(wanted & {pair.get("destination"), pair.get("callee")})


def broken_pair(report: Mapping[str, Any], dest: set[str] | str = "payments",
                source: str = "cart") -> dict[str, Any] | None:
    for pair in report.get("pairs", []):
        if pair.get("source") == source and names(pair, dest):
            return dict(pair)
    return None


def gap_problems(report: Mapping[str, Any], requests: int, calls: int, payments: set[str]) -> list[str]:
    """What is wrong with a gap report of one run of `requests` requests whose recording holds `calls` CLIENT
    spans: `cart → payments` (`payments`: the names that identify it, `service_names`) named with a gap on every
    call, as a traced destination; no other pair (`frontend → cart` above all) flagged; every call counted."""
    problems = []
    pair = broken_pair(report, payments)
    shown = [(p.get("source"), p.get("destination"), p.get("callee"), p.get("gaps"), p.get("calls"))
             for p in report.get("pairs", [])]
    if pair is None:
        problems.append(f"no pair cart → payments; pairs (source, destination, callee, gaps, calls): {shown}")
    else:
        if pair["gaps"] != requests:
            problems.append(f"cart → payments: {pair['gaps']} gaps of {pair['calls']} calls, expected {requests} "
                            f"(every call drops the context)")
        if not pair.get("destination_traced"):
            problems.append(f"cart → {pair['destination']} is filed under destinations never seen as a traced "
                            "service, although payments is traced (its own SERVER spans say so)")
    wrong = [p for p in shown if p[3] and not (p[0] == "cart" and payments & {p[1], p[2]})]
    if wrong:
        problems.append(f"pairs flagged that are healthy (frontend → cart keeps the context): {wrong}")
    if report.get("calls") != calls:
        problems.append(f"the audit counted {report.get('calls')} calls; the recording has {calls} CLIENT spans "
                        "(a call whose destination cannot be named must be counted, not skipped)")
    return problems
