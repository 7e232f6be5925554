// The status page's script: draws /status/data and polls it. No dependencies; every value reaches the page
// through textContent or an SVG attribute, never innerHTML (service names and span names come from the traffic).
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

// the same formatting as tailsample.ui.status._num
function fmt(v, unit) {
  if (v === null || v === undefined) return "-";
  if (unit === "B") {
    for (const [f, s] of [[2 ** 30, " GiB"], [2 ** 20, " MiB"], [2 ** 10, " KiB"]]) {
      if (Math.abs(v) >= f) return (v / f).toFixed(1) + s;
    }
  }
  if (unit === "s") return Math.abs(v) < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(2) + " s";
  if (unit === "%") return (v * 100).toFixed(1) + "%";
  return Number.isInteger(v) || Math.abs(v) >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1);
}

function tiles(d) {
  const t = d.totals, r = d.rates, decided = t.traces_kept + t.traces_not_kept;
  return {
    spans_in_per_s: fmt(r.spans_in_per_s), spans_kept_per_s: fmt(r.spans_kept_per_s),
    kept_share: fmt(decided ? t.traces_kept / decided : null, "%"),
    decision_lag: fmt(t.decisions_timed ? t.decision_lag_seconds / t.decisions_timed : null, "s"),
    spans_in: fmt(t.spans_in), spans_kept: fmt(t.spans_kept), traces_evicted: fmt(t.traces_evicted),
    memory_rss_bytes: fmt(t.memory_rss_bytes, "B"),
  };
}

function bar(value, limit, unit) {
  const share = limit ? Math.min(1, value / limit) : 0;
  const cls = share > 0.9 ? "bar hot" : share > 0.7 ? "bar warm" : "bar";
  const fill = h("div", { class: cls });
  fill.style.width = `${(share * 100).toFixed(1)}%`; // CSSOM, not a style attribute: the page's CSP allows it
  return h("div", { class: "meter" }, fill, h("span", {}, `${fmt(value, unit)} of ${fmt(limit, unit)}`));
}

function table(head, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, ...head.map((c) => h("th", {}, c)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))));
}

function chart(svg, history) {
  svg.replaceChildren();
  const pts = history.filter((p) => p[1] !== null);
  if (pts.length < 2) {
    document.getElementById("rates-max").textContent = "collecting…";
    return;
  }
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || 1e-9, max = Math.max(1, ...pts.map((p) => p[1]));
  const x = (t) => ((t - t0) / (t1 - t0 || 1)) * 590 + 5, y = (v) => 115 - (v / max) * 105;
  for (const [i, cls] of [[1, "in"], [2, "kept"]]) {
    svg.append(h("svg:polyline", { class: cls, points: pts.map((p) => `${x(p[0])},${y(p[i])}`).join(" ") }));
  }
  // the SVG stretches to the page's width: text goes outside it, undistorted
  document.getElementById("rates-max").textContent = "top: " + fmt(max) + " / s";
}

// services on a circle; an edge per pair, red and dashed when calls lost their context
function gapGraph(gaps) {
  const pairs = gaps.pairs.filter((p) => !p.overflow);
  const names = [...new Set(pairs.flatMap((p) => [p.source, p.destination]))];
  const svg = h("svg:svg", { viewBox: "0 0 420 300", class: "graph" });
  if (!names.length) {
    svg.append(h("svg:text", { x: 10, y: 30, class: "empty" }, "no calls between services audited yet"));
    return svg;
  }
  const pos = {};
  names.forEach((n, i) => {
    const a = (2 * Math.PI * i) / names.length - Math.PI / 2;
    pos[n] = [210 + 140 * Math.cos(a), 150 + 110 * Math.sin(a)];
  });
  for (const p of pairs) {
    const [a, b] = [pos[p.source], pos[p.destination]];
    const broken = p.gaps > 0;
    svg.append(h("svg:line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: broken ? "edge broken" : "edge" }));
    svg.append(h("svg:text", { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 4, class: broken ? "lbl broken" : "lbl" },
      broken ? `${p.gaps}/${p.calls} lost` : `${p.calls} calls`));
  }
  for (const n of names) {
    svg.append(h("svg:circle", { cx: pos[n][0], cy: pos[n][1], r: 6, class: "node" }));
    svg.append(h("svg:text", { x: pos[n][0] + 9, y: pos[n][1] + 4, class: "name" }, n));
  }
  return svg;
}

function pipeline(p) {
  const pol = p.policies.map((x) => [x.policy, fmt(x.sampled), fmt(x.not_sampled), fmt(x.decided),
    bar(x.sampled, x.sampled + x.not_sampled, "")]);
  const sec = h("section", { class: "pipeline", "data-pipeline": p.id },
    h("h2", {}, `Pipeline ${p.id} (${p.processor})`),
    h("div", { class: "grid" },
      h("div", {}, h("h3", {}, "Buffered traces"), bar(p.traces_in_memory, p.limit_num_traces, "")),
      h("div", {}, h("h3", {}, "Buffered bytes"), bar(p.buffered_bytes, p.limit_max_buffered_bytes, "B")),
      h("div", {}, h("h3", {}, "Decision lag (mean, past due)"),
        h("p", { class: "big" }, fmt(p.decision_lag_mean_s, "s"), h("small", {}, ` decision_wait ${fmt(p.decision_wait_s, "s")}`))),
      h("div", {}, h("h3", {}, "Late spans / evictions"),
        h("p", { class: "big" }, `${fmt(p.late_spans_forwarded)} fwd · ${fmt(p.late_spans_dropped)} dropped · ${fmt(p.traces_evicted)} evicted`))),
    h("h3", {}, "Kept share per policy"),
    table(["policy", "sampled", "not sampled", "first to keep", "kept share"], pol));
  if (p.gaps) {
    sec.append(h("h3", {}, `Propagation gaps (${fmt(p.gaps.traces_with_gaps)} of ${fmt(p.gaps.traces_audited)} traces)`),
      gapGraph(p.gaps));
    if (p.gaps.broken.length) {
      sec.append(table(["service with orphan spans", "orphan spans", "traces"],
        p.gaps.broken.map((b) => [b.service, fmt(b.orphan_spans), fmt(b.traces)])));
    }
  }
  sec.append(h("h3", {}, "Recently kept traces"));
  if (!p.recent_kept.length) sec.append(h("p", { class: "note" }, "none held yet"));
  for (const k of p.recent_kept) {
    sec.append(h("details", { class: "trace" }, h("summary", {}, `${k.trace_id} · ${k.span_count} spans` +
      (k.duration ? ` · ${k.duration}` : "") + (k.errors ? ` · ${k.errors} error${k.errors > 1 ? "s" : ""}` : "")),
    h("pre", {}, k.tree || "(not drawn)")));
  }
  return sec;
}

function render(d) {
  const t = tiles(d);
  for (const el of document.querySelectorAll("[data-key]")) el.textContent = t[el.dataset.key];
  const up = document.getElementById("updated");
  up.textContent = "updated " + new Date(d.generated_at * 1000).toLocaleTimeString();
  up.dataset.generated = d.generated_at;
  chart(document.getElementById("rates"), d.history);
  // keep open trees open across redraws
  const open = new Set([...document.querySelectorAll("details[open] summary")].map((s) => s.textContent));
  document.getElementById("pipelines").replaceChildren(...d.pipelines.map(pipeline));
  for (const s of document.querySelectorAll("details summary")) if (open.has(s.textContent)) s.parentElement.open = true;
  document.getElementById("exporters").replaceChildren(d.exporters.length ? table(
    ["exporter", "queue", "sent spans", "send failed", "enqueue failed"],
    d.exporters.map((e) => [e.exporter, bar(e.queue_size, e.queue_capacity, ""), fmt(e.sent_spans),
      fmt(e.send_failed_spans), fmt(e.enqueue_failed_spans)])) : h("p", { class: "note" }, "no exporters"));
  document.getElementById("limiters").replaceChildren(d.limiters.length ? table(
    ["processor", "used (soft limit)", "hard limit", "refusing", "refused payloads"],
    d.limiters.map((l) => [l.processor, bar(l.used_bytes, l.soft_limit_bytes, "B"), fmt(l.hard_limit_bytes, "B"),
      l.refusing ? "yes" : "no", fmt(l.refused_payloads)])) : h("p", { class: "note" }, "no memory_limiter configured"));
}

async function poll(every) {
  try {
    const r = await fetch("/status/data", { cache: "no-store" });
    if (r.ok) render(await r.json());
    document.body.classList.toggle("stale", !r.ok);
  } catch (e) {
    document.body.classList.add("stale");
  }
  setTimeout(() => poll(every), every);
}

async function lookup(ev) {
  ev.preventDefault();
  const id = document.getElementById("trace-id").value.trim();
  const out = document.getElementById("lookup-result");
  out.textContent = "…";
  const r = await fetch("/status/trace/" + encodeURIComponent(id), { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) {
    out.textContent = body.error;
    return;
  }
  const lines = [];
  for (const [pid, e] of Object.entries(body.pipelines)) {
    lines.push(`pipeline ${pid}:`, ...e.text.map((l) => "  " + l));
    if (e.tree) lines.push("", e.tree);
  }
  lines.push("", "recover: " + body.recover.note);
  out.textContent = lines.join("\n");
  const button = document.getElementById("recover");
  button.hidden = !body.recover.available;
  button.dataset.traceId = body.trace_id;
}

async function recover() {
  const button = document.getElementById("recover");
  const out = document.getElementById("lookup-result");
  const r = await fetch("/status/recover/" + encodeURIComponent(button.dataset.traceId), { method: "POST" });
  const body = await r.json();
  if (!r.ok) {
    out.textContent += "\n\n" + body.error;
    return;
  }
  const lines = [];
  for (const [pid, p] of Object.entries(body.pipelines)) {
    if (!p.archive) continue;
    const spans = p.found.reduce((n, f) => n + f.spans, 0);
    lines.push(p.found.length ? `${pid}: recovered ${spans} spans into the exporters` : `${pid}: not in the archive`);
  }
  out.textContent += "\n\n" + lines.join("\n");
}

const initial = JSON.parse(document.getElementById("initial").textContent);
render(initial);
document.getElementById("lookup").addEventListener("submit", lookup);
document.getElementById("recover").addEventListener("click", recover);
setTimeout(() => poll(initial.poll_ms), initial.poll_ms);
