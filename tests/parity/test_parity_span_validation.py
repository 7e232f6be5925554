"""Parity of span-level validation (issue 19, items 5 and 6) with the real processor.

The Go program reads each payload with pdata's `ptrace.ProtoUnmarshaler`, as the collector's OTLP receiver does,
so these cases hold what the reference takes and what it refuses. Taken by both, with the same decisions: invalid
UTF-8 in names, attribute values and keys, an empty span ID. Differing on purpose (README, "Where tailsample
differs from the reference"): a span with an all-zero trace ID, which the reference decides as one trace of ID
zero and tailsample rejects alone; an ID of the wrong length, which the reference refuses with its whole payload
and tailsample rejects alone; a known field of the wrong wire type, which the reference (pdata's generated
unmarshaler) refuses with its whole payload and tailsample takes as an unknown field, as protobuf runtimes do.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_parity import config, load_or_skip

import tailsample
from otlp_builders import enc_len, enc_uint, raw_request, raw_span, spans_out

CONFIG = config("""
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/cart]}}
""")
ERROR = enc_len(15, enc_uint(3, 2))
NOT_UTF8 = b"caf\xc3(\xff"


def attr(key: bytes, value: bytes) -> bytes:
    return enc_len(9, enc_len(1, key) + enc_len(2, enc_len(1, value)))


@dataclass
class Payloads:
    payloads: list[bytes]
    traces: list[Any] = field(default_factory=list)

    def file_bytes(self) -> bytes:
        return b"".join(struct.pack(">I", len(p)) + p for p in self.payloads)


def tid(n: int) -> bytes:
    return bytes([n]) * 16


def run_tailsample(payloads: list[bytes]) -> tuple[set[str], int, int]:
    """(kept trace IDs, kept spans, spans rejected alone); output read without a protobuf runtime (it may hold
    invalid UTF-8, which upb refuses)."""
    eng = tailsample.Engine(load_or_skip(CONFIG))
    rejected = sum(eng.ingest_report(p, now=0).rejected_spans for p in payloads)
    out = spans_out(eng.flush(now=0))
    return {t.hex() for t, _, _ in out}, len(out), rejected


TAKEN = [
    raw_span(tid(1), name=NOT_UTF8, extra=ERROR),  # kept by errors
    raw_span(tid(2), extra=attr(b"http.route", NOT_UTF8)),  # neither matches /cart
    raw_span(tid(3), extra=attr(b"http.route", b"/cart") + attr(b"other", NOT_UTF8)),  # kept by route
    raw_span(tid(4), extra=attr(NOT_UTF8, b"/cart")),  # a key of invalid UTF-8: not http.route
    raw_span(tid(5), b"", extra=ERROR),  # empty span ID
    raw_span(tid(6), None, extra=ERROR),  # absent span ID
    raw_span(tid(7), extra=enc_len(50, b"unknown") + enc_uint(51, 1) + ERROR),  # unknown fields
    raw_span(tid(8)),  # not kept
]


def test_what_both_take_is_decided_alike(reference: Callable[..., dict[str, Any]]) -> None:
    """Scenario: spans with invalid UTF-8 (name, attribute value, attribute key), empty and absent span IDs,
    unknown fields, under two policies reading the status and an attribute.
    Guarantees: the reference takes them all (it refuses nothing) and keeps the same traces and spans."""
    payloads = [raw_request(*TAKEN[:4]), raw_request(*TAKEN[4:])]
    ref = reference(CONFIG, Payloads(payloads))
    assert not ref["errors"], ref["errors"]
    kept, spans, rejected = run_tailsample(payloads)
    assert rejected == 0
    assert set(ref["kept"]) == kept == {tid(n).hex() for n in (1, 3, 5, 6, 7)}
    assert ref["kept_spans"] == spans


def test_an_all_zero_trace_id_is_one_trace_to_the_reference(reference: Callable[..., dict[str, Any]]) -> None:
    """Scenario: two error spans with an all-zero trace ID (from two senders' payloads) beside a good trace.
    Guarantees (differs on purpose): the reference decides them as one trace of ID zero; tailsample rejects
    both alone and decides the rest alike."""
    payloads = [raw_request(raw_span(tid(0), extra=ERROR), raw_span(tid(1), extra=ERROR)),
                raw_request(raw_span(tid(0), b"\3" * 8, extra=ERROR))]
    ref = reference(CONFIG, Payloads(payloads))
    assert not ref["errors"], ref["errors"]
    kept, _, rejected = run_tailsample(payloads)
    assert set(ref["kept"]) == kept | {""}  # pdata prints the all-zero (empty) trace ID as ""
    assert rejected == 2


@pytest.mark.parametrize(("name", "span"), [
    ("span-id-9-bytes", raw_span(tid(2), b"\1" * 9, extra=ERROR)),
    ("parent-3-bytes", raw_span(tid(2), parent=b"\1" * 3, extra=ERROR)),
    ("trace-id-15-bytes", raw_span(b"\2" * 15, extra=ERROR)),
])
def test_an_id_of_the_wrong_length_costs_the_reference_the_payload(
        name: str, span: bytes, reference: Callable[..., dict[str, Any]]) -> None:
    """Scenario: a payload of a good error trace and a span with an ID of the wrong length.
    Guarantees (differs on purpose): the reference refuses the whole payload; tailsample rejects that span alone
    and keeps the good trace."""
    payloads = [raw_request(raw_span(tid(1), extra=ERROR), span)]
    ref = reference(CONFIG, Payloads(payloads))
    assert "payload 0" in ref["errors"], ref
    kept, _, rejected = run_tailsample(payloads)
    assert (kept, rejected) == ({tid(1).hex()}, 1)


WIRE_TYPES = [
    ("kind-length-delimited", raw_span(tid(1), extra=enc_len(6, b"\x02") + ERROR)),
    ("name-as-varint", raw_span(tid(1), name=None, extra=enc_uint(5, 7) + ERROR)),
    ("status-code-length-delimited", raw_span(tid(1), extra=enc_len(15, enc_len(3, b"\x02")))),
    ("attribute-string-as-varint",
     raw_span(tid(1), extra=enc_len(9, enc_len(1, b"http.route") + enc_len(2, enc_uint(1, 3))))),
]


@pytest.mark.parametrize(("name", "span"), WIRE_TYPES, ids=[w[0] for w in WIRE_TYPES])
def test_a_known_field_of_the_wrong_wire_type(name: str, span: bytes, reference: Callable[..., dict[str, Any]]) -> None:
    """Scenario: a span with a known field of the wrong wire type beside a good error trace.
    Guarantees (differs on purpose): the reference's pdata, whose generated unmarshaler checks wire types, refuses
    the whole payload (observed with v0.161.0: "proto: wrong wireType = 2 for field Kind"); tailsample rejects
    that span alone (upb, Go's protobuf and C++ would read the field as unknown, but passed on byte for byte the
    span would cost its whole kept batch at a pdata-based backend) and keeps the good trace."""
    payloads = [raw_request(span, raw_span(tid(2), extra=ERROR))]
    ref = reference(CONFIG, Payloads(payloads))
    kept, _, rejected = run_tailsample(payloads)
    assert (kept, rejected) == ({tid(2).hex()}, 1)
    assert "payload 0: proto: wrong wireType" in ref["errors"], ref
