"""The context-propagation audit as a service graph: where trace context gets lost, drawn.

The audit report (`traces_audited`, `pairs`, `broken`, ...) is a table: one row per (calling service,
destination) with its calls and gaps. A table hides the shape of the problem: one proxy that drops
`traceparent` shows up as a dozen rows, and a picture shows it as one red node with red arrows into it. This
module draws the report as a directed graph:

* nodes are services (and destinations never seen answering, by the name the callers use);
* one edge per pair, from the caller to the service seen answering it (its `callee`), or to the destination
  name when nothing ever answered: grey and labelled with the call count when context always arrived; red,
  dashed and bold, labelled "gaps/calls calls lost context (percent)", when some calls arrived without it;
* a destination that never answered (every call to it a gap) is a node with a dashed red outline;
* services owning orphan spans (whose parent never arrived: broken traces) have an orange outline and a
  dotted orange edge from a "(missing parent)" node, labelled with the orphan span count;
* the overflow row (pairs past the audit's cardinality bound: no source, no destination) cannot be placed on
  an edge, so it is a standalone "(other pairs)" node carrying its calls and gaps.

Two outputs: `to_dot` (Graphviz text, for whoever has Graphviz) and `to_svg`, drawn here without Graphviz by a
small layered layout (see `_layout`), since most machines that run tailsample have no `dot`. `write_graph`
picks one by the file suffix. Output is deterministic: the same report gives the same string.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_TITLE", "to_dot", "to_svg", "write_graph"]

DEFAULT_TITLE = "Context propagation"
MISSING_PARENT = "(missing parent)"  # reserved node names: a service really called so would share the node
OTHER_PAIRS = "(other pairs)"
GREY, RED, ORANGE, TEXT = "#8c8c8c", "#d62728", "#e67e00", "#333333"
_FORMATS = {".svg": "svg", ".dot": "dot", ".gv": "dot", ".png": "png", ".pdf": "pdf"}
_EXAMPLES = 3  # example trace IDs in an edge's tooltip


@dataclass
class _Node:
    name: str
    kind: str  # service | destination | unanswered | missing | other
    lines: list[str]
    broken: bool = False
    tooltip: str = ""


@dataclass
class _Edge:
    source: str
    target: str
    kind: str  # healthy | gap | orphan
    lines: list[str]
    tooltip: str


@dataclass
class _Graph:
    nodes: dict[str, _Node]
    edges: list[_Edge]
    totals: str
    has_calls: bool


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "n/a"
    p = 100.0 * part / whole
    # Rounding must not hide a problem (0.3% is not 0%) nor invent a total one (99.7% is not 100%).
    return "<1%" if 0 < p < 1 else ">99%" if 99 < p < 100 else f"{p:.0f}%"


def _build(report: Mapping[str, Any]) -> _Graph:
    """Folds the report's rows into nodes and edges (pairs landing on one edge are summed)."""
    services: set[str] = set()
    unanswered: dict[str, bool] = {}  # destination (no callee) -> some call to it lost context
    agg: dict[tuple[str, str], dict[str, Any]] = {}
    other = [0, 0]
    for row in report.get("pairs") or ():
        calls, gaps = int(row.get("calls") or 0), int(row.get("gaps") or 0)
        if row.get("overflow"):
            other = [other[0] + calls, other[1] + gaps]
            continue
        source, dest, callee = str(row.get("source", "")), str(row.get("destination", "")), row.get("callee")
        services.add(source)
        if callee is not None:
            target = str(callee)
            services.add(target)
        else:
            target = dest
            unanswered[dest] = unanswered.get(dest, False) or gaps > 0
        a = agg.setdefault((source, target), {"calls": 0, "gaps": 0, "traces": 0, "as": set(), "examples": []})
        a["calls"] += calls
        a["gaps"] += gaps
        a["traces"] += int(row.get("gap_traces") or 0)
        if dest != target:
            a["as"].add(dest)
        a["examples"].extend(str(x) for x in row.get("examples") or ())

    nodes = {s: _Node(s, "service", [s]) for s in services}
    for dest, lost in unanswered.items():
        if dest not in nodes:  # a name also seen as a service is that service
            kind = "unanswered" if lost else "destination"
            nodes[dest] = _Node(dest, kind, [dest], tooltip="never seen answering" if lost else "")
    edges = []
    for (source, target), a in sorted(agg.items()):
        calls, gaps = a["calls"], a["gaps"]
        lines = [f"{gaps}/{calls} calls lost context ({_percent(gaps, calls)})" if gaps else _plural(calls, "call")]
        aliases = sorted(a["as"])
        if aliases:  # the callers' name for it differs from the service that answered
            lines.append("as " + ", ".join(aliases[:2]) + (f" +{len(aliases) - 2}" if len(aliases) > 2 else ""))
        tip = f"{source} -> {target}: {' '.join(lines)}"
        if gaps:
            tip += f"; {_plural(a['traces'], 'trace')} with gaps"
            if a["examples"]:
                tip += ", e.g. " + ", ".join(a["examples"][:_EXAMPLES])
        edges.append(_Edge(source, target, "gap" if gaps else "healthy", lines, tip))
    for b in sorted(report.get("broken") or (), key=lambda b: str(b.get("service", ""))):
        service, traces, orphans = str(b.get("service", "")), int(b.get("traces") or 0), int(b.get("orphan_spans") or 0)
        nodes.setdefault(service, _Node(service, "service", [service]))
        nodes[service].broken = True
        nodes[service].tooltip = f"{_plural(orphans, 'orphan span')} in {_plural(traces, 'broken trace')}"
        examples = [str(x) for x in b.get("examples") or ()][:_EXAMPLES]
        tip = f"{MISSING_PARENT} -> {service}: {_plural(orphans, 'orphan span')} in {_plural(traces, 'trace')}"
        edges.append(_Edge(MISSING_PARENT, service, "orphan", [_plural(orphans, "orphan span")],
                           tip + (", e.g. " + ", ".join(examples) if examples else "")))
    if any(e.kind == "orphan" for e in edges):
        nodes[MISSING_PARENT] = _Node(MISSING_PARENT, "missing", [MISSING_PARENT],
                                      tooltip="spans whose parent span never arrived")
    if other[0] or other[1]:
        note = f", {other[1]}/{other[0]} lost context ({_percent(other[1], other[0])})" if other[1] else ""
        nodes[OTHER_PAIRS] = _Node(OTHER_PAIRS, "other", [OTHER_PAIRS, _plural(other[0], "call") + note],
                                   tooltip="pairs past the audit's cardinality bound, summed")
    totals = (f"{int(report.get('traces_audited') or 0)} traces audited, "
              f"{int(report.get('traces_with_gaps') or 0)} with gaps, {int(report.get('traces_broken') or 0)} broken "
              f"({_plural(int(report.get('orphan_spans') or 0), 'orphan span')})")
    return _Graph(nodes, edges, totals, bool(agg) or OTHER_PAIRS in nodes)


# --- DOT -----------------------------------------------------------------------------------------------------


def _dot_quote(s: str) -> str:
    # Backslash first, then quotes; line breaks become DOT's \n and \r escapes. Used for IDs too: the mapping
    # is one-to-one, so distinct names stay distinct nodes even where DOT keeps an ID's backslashes literally.
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{s}"'


def _dot_attrs(attrs: Mapping[str, str]) -> str:
    return "[" + ", ".join(f"{k}={_dot_quote(v)}" for k, v in attrs.items() if v) + "]"


_DOT_NODE = {
    "service": {}, "destination": {},
    "unanswered": {"style": "rounded,dashed", "color": RED},
    "missing": {"style": "rounded,dotted", "color": ORANGE, "fontcolor": ORANGE},
    "other": {"style": "rounded,dashed", "color": GREY, "fontcolor": "#555555"},
}
_DOT_EDGE = {
    "healthy": {"color": GREY, "fontcolor": "#555555"},
    "gap": {"color": RED, "fontcolor": RED, "style": "dashed,bold", "penwidth": "2"},
    "orphan": {"color": ORANGE, "fontcolor": ORANGE, "style": "dotted", "penwidth": "1.5"},
}


def to_dot(report: Mapping[str, Any], *, title: str = DEFAULT_TITLE) -> str:
    """The report as Graphviz DOT text (left to right), for `dot -Tpng` or any Graphviz viewer."""
    g = _build(report)
    label = f"{title}\n{g.totals}" + ("" if g.has_calls else "\nno calls were seen")
    out = [
        "digraph tailsample {",
        f"  graph {_dot_attrs({'label': label, 'labelloc': 't', 'rankdir': 'LR', 'fontname': 'Helvetica'})};",
        '  node [shape="box", style="rounded", fontname="Helvetica", fontsize="11"];',
        '  edge [fontname="Helvetica", fontsize="10"];',
    ]
    for name in sorted(g.nodes):
        n = g.nodes[name]
        attrs = {"label": "\n".join(n.lines), **_DOT_NODE[n.kind], "tooltip": n.tooltip}
        if n.broken:
            attrs.update(color=ORANGE, penwidth="2.5")
        out.append(f"  {_dot_quote(name)} {_dot_attrs(attrs)};")
    for e in sorted(g.edges, key=lambda e: (e.source, e.target, e.kind)):
        attrs = {"label": "\n".join(e.lines), **_DOT_EDGE[e.kind], "tooltip": e.tooltip}
        out.append(f"  {_dot_quote(e.source)} -> {_dot_quote(e.target)} {_dot_attrs(attrs)};")
    out.append("}")
    return "\n".join(out) + "\n"


# --- SVG: layout ---------------------------------------------------------------------------------------------

FONT, SMALL, LINE = 12.0, 11.0, 15.0  # px: node text, edge and legend text, line height
PAD, V_GAP, MIN_COL_GAP, MARGIN = 10.0, 28.0, 80.0, 20.0


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class _Layout:
    boxes: dict[str, _Box]
    back: set[tuple[str, str]] = field(default_factory=set)  # edges against the layering (cycles)
    bottom: float = 0.0
    right: float = 0.0


def _text_width(s: str, size: float) -> float:
    # No font metrics without a renderer: a generous average for sans-serif, double for East Asian wide glyphs.
    em = sum(0.0 if unicodedata.combining(c) else 1.0 if unicodedata.east_asian_width(c) in "WF" else 0.62
             for c in s)
    return em * size


def _layout(g: _Graph, top: float) -> _Layout:
    """Layered layout: layers by longest path, orders by barycenters, columns left to right.

    Cycles are broken by a DFS in a fixed order whose back edges are left out of the layering (they are drawn
    as arcs below the graph). Edges spanning several layers get no dummy nodes: they may cross a node, which
    a picture of a few dozen services can afford.
    """
    names = sorted(g.nodes)
    succ: dict[str, set[str]] = {n: set() for n in names}
    pred: dict[str, set[str]] = {n: set() for n in names}
    for e in g.edges:
        if e.source != e.target:
            succ[e.source].add(e.target)
            pred[e.target].add(e.source)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    postorder: list[str] = []
    # Roots: true sources first, then the nodes calling out more than they are called, so that in a cycle the
    # entry service keeps its edges forward. Iterative: a long call chain must not hit the recursion limit.
    for root in sorted(names, key=lambda n: (bool(pred[n]), len(pred[n]) - len(succ[n]), n)):
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(succ[root])))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                postorder.append(node)
                stack.pop()
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(succ[nxt]))))
            elif state[nxt] == 1:
                back.add((node, nxt))
    layer = dict.fromkeys(names, 0)
    for n in reversed(postorder):  # a topological order of the edges that are not back edges
        for m in succ[n]:
            if (n, m) not in back:
                layer[m] = max(layer[m], layer[n] + 1)
    for n in names:  # a pure source sits just before its nearest callee (the "(missing parent)" beside its orphans)
        if succ[n] and not pred[n]:
            layer[n] = min(layer[m] for m in succ[n]) - 1
    columns: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for n in names:
        columns[layer[n]].append(n)
    columns = [col for col in columns if col]  # never expected empty, but a gap would break the sizing below
    layer = {n: c for c, col in enumerate(columns) for n in col}

    # Barycenter sweeps: a node moves towards the mean position of its neighbours in the column it looks at.
    # Positions are centred per column, as the columns are drawn centred.
    pos: dict[str, float] = {}

    def place(col: list[str]) -> None:
        for i, n in enumerate(col):
            pos[n] = i - (len(col) - 1) / 2

    def sweep(col: list[str], side: dict[str, set[str]], before: bool) -> None:
        def key(n: str) -> tuple[float, float, str]:
            ns = [pos[m] for m in side[n] if (layer[m] < layer[n]) == before and layer[m] != layer[n]]
            return (sum(ns) / len(ns) if ns else pos[n], pos[n], n)

        col.sort(key=key)
        place(col)

    for col in columns:
        place(col)
    for _ in range(2):
        for col in columns[1:]:
            sweep(col, pred, before=True)
        for col in reversed(columns[:-1]):
            sweep(col, succ, before=False)

    # Sizes and coordinates. A column's gap leaves room for the labels of the edges leaving it.
    boxes = {n: _Box(0, 0, max(_text_width(s, FONT) for s in g.nodes[n].lines) + 2 * PAD,
                     LINE * len(g.nodes[n].lines) + 13) for n in names}
    label_w = dict.fromkeys(range(len(columns)), 0.0)
    for e in g.edges:
        c = layer[e.source]
        label_w[c] = max(label_w[c], max(_text_width(s, SMALL) for s in e.lines) + (50 if e.source == e.target else 30))
    heights = [sum(boxes[n].h for n in col) + V_GAP * (len(col) - 1) for col in columns]
    x = MARGIN
    for c, col in enumerate(columns):
        width = max(boxes[n].w for n in col)
        y = top + (max(heights) - heights[c]) / 2
        for n in col:
            b = boxes[n]
            b.x, b.y = x + (width - b.w) / 2, y
            y += b.h + V_GAP
        x += width + max(MIN_COL_GAP, label_w[c])
    return _Layout(boxes, back, top + max(heights), x)


# --- SVG: drawing --------------------------------------------------------------------------------------------

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SVG_EDGE = {  # stroke, dash pattern, width
    "healthy": (GREY, "", "1.2"),
    "gap": (RED, "6 4", "2.5"),
    "orphan": (ORANGE, "2 3", "1.5"),
}


def _x(s: str) -> str:
    """Text or attribute value for XML: characters XML 1.0 cannot hold become U+FFFD, then escaped."""
    return html.escape(_XML_INVALID.sub("\ufffd", s), quote=True)


def _f(v: float) -> str:
    return f"{v:.1f}"


def _text(lines: list[str], x: float, cy: float, size: float, attrs: str = "") -> str:
    """Lines of text centred vertically on cy (a baseline is about a third of the size below the centre)."""
    y0 = cy - (len(lines) - 1) * LINE / 2 + size * 0.35
    spans = "".join(f'<tspan x="{_f(x)}" y="{_f(y0 + i * LINE)}">{_x(s)}</tspan>' for i, s in enumerate(lines))
    return f'<text font-size="{size:g}"{attrs}>{spans}</text>'


def _label(lines: list[str], x: float, cy: float, color: str, anchor: str = "middle") -> str:
    w = max(_text_width(s, SMALL) for s in lines) + 6
    h = LINE * len(lines) + 2
    left = x - w / 2 if anchor == "middle" else x - 3
    return (f'<rect x="{_f(left)}" y="{_f(cy - h / 2)}" width="{_f(w)}" height="{_f(h)}" fill="white" '
            f'fill-opacity="0.85"/>' + _text(lines, x, cy, SMALL, f' fill="{color}" text-anchor="{anchor}"'))


def _node_svg(n: _Node, b: _Box) -> str:
    stroke, dash, width, fill, style = "#555555", "", "1.2", "#f7f7f7", ""
    if n.kind == "unanswered":
        stroke, dash, fill = RED, "5 3", "white"
    elif n.kind == "missing":
        stroke, dash, fill, style = ORANGE, "2 3", "#fff8f0", ' font-style="italic"'
    elif n.kind == "other":
        stroke, dash, fill, style = GREY, "5 3", "white", ' font-style="italic"'
    if n.broken:
        stroke, width = ORANGE, "2.5"
    classes = " ".join(["node", n.kind] + (["broken"] if n.broken else []))
    tip = n.name + (f" ({n.tooltip})" if n.tooltip else "")
    return (f'<g class="{classes}" data-name="{_x(n.name)}"><title>{_x(tip)}</title>'
            f'<rect x="{_f(b.x)}" y="{_f(b.y)}" width="{_f(b.w)}" height="{_f(b.h)}" rx="6" ry="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width}"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>"
            + _text(n.lines, b.x + b.w / 2, b.cy, FONT, f' fill="{TEXT}" text-anchor="middle"{style}') + "</g>")


def _ports(lay: _Layout, edges: list[_Edge]) -> tuple[dict[int, float], dict[int, float]]:
    """Where forward edges leave and enter their nodes: spread along the side, in the order of the far end."""
    outs: dict[str, list[int]] = {}
    ins: dict[str, list[int]] = {}
    for i, e in enumerate(edges):
        if e.source != e.target and (e.source, e.target) not in lay.back:
            outs.setdefault(e.source, []).append(i)
            ins.setdefault(e.target, []).append(i)
    out_y: dict[int, float] = {}
    in_y: dict[int, float] = {}
    for table, result, far in ((outs, out_y, "target"), (ins, in_y, "source")):
        for name, idx in table.items():
            b = lay.boxes[name]
            idx.sort(key=lambda i: (lay.boxes[getattr(edges[i], far)].cy, getattr(edges[i], far)))
            step = min(8.0, (b.h - 8) / max(len(idx) - 1, 1))
            for k, i in enumerate(idx):
                result[i] = b.cy + (k - (len(idx) - 1) / 2) * step
    return out_y, in_y


def _edge_svg(e: _Edge, lay: _Layout, out_y: dict[int, float], in_y: dict[int, float], i: int, n_back: int) -> str:
    s, t = lay.boxes[e.source], lay.boxes[e.target]
    anchor = "middle"
    if e.source == e.target:  # a loop on the node's right side, into the column gap
        x0, y0, x3, y3 = s.x + s.w, s.cy - s.h / 4, s.x + s.w, s.cy + s.h / 4
        c1, c2 = (x0 + 40, s.y - 14), (x0 + 40, s.y + s.h + 14)
        anchor = "start"
    elif (e.source, e.target) in lay.back:  # against the layering: an arc below the graph, bottom to bottom
        x0, y0, x3, y3 = s.x + s.w / 2, s.y + s.h, t.x + t.w / 2, t.y + t.h
        depth = lay.bottom + 30 + 14 * (n_back % 8)
        c1, c2 = (x0, depth), (x3, depth)
    else:
        x0, y0, x3, y3 = s.x + s.w, out_y[i], t.x, in_y[i]
        dx = max(30.0, (x3 - x0) / 2)
        c1, c2 = (x0 + dx, y0), (x3 - dx, y3)
    # The point at t = 1/2 of a cubic Bézier, where the label goes.
    mx, my = (x0 + 3 * c1[0] + 3 * c2[0] + x3) / 8, (y0 + 3 * c1[1] + 3 * c2[1] + y3) / 8
    stroke, dash, width = _SVG_EDGE[e.kind]
    path = f"M{_f(x0)},{_f(y0)} C{_f(c1[0])},{_f(c1[1])} {_f(c2[0])},{_f(c2[1])} {_f(x3)},{_f(y3)}"
    return (f'<g class="edge {e.kind}" data-source="{_x(e.source)}" data-target="{_x(e.target)}">'
            f"<title>{_x(e.tooltip)}</title>"
            f'<path d="{path}" fill="none" stroke="{stroke}" stroke-width="{width}"'
            + (f' stroke-dasharray="{dash}"' if dash else "") + f' marker-end="url(#arrow-{e.kind})"/>'
            + _label(e.lines, mx + (4 if anchor == "start" else 0), my, stroke if e.kind != "healthy" else "#555555",
                     anchor) + "</g>")


def _legend(y: float) -> tuple[list[str], float, float]:
    """The legend's elements, its bottom and its width."""
    items: list[tuple[str, str]] = [
        (f'<line x1="0" y1="0" x2="34" y2="0" stroke="{GREY}" stroke-width="1.2"/>', "calls that carried context"),
        (f'<line x1="0" y1="0" x2="34" y2="0" stroke="{RED}" stroke-width="2.5" stroke-dasharray="6 4"/>',
         "calls that lost context (lost/calls)"),
        (f'<line x1="0" y1="0" x2="34" y2="0" stroke="{ORANGE}" stroke-width="1.5" stroke-dasharray="2 3"/>',
         "orphan spans: their parent never arrived"),
        (f'<rect x="0" y="-7" width="34" height="14" rx="4" fill="white" stroke="{RED}" stroke-dasharray="5 3"/>',
         "destination never seen answering"),
        (f'<rect x="0" y="-7" width="34" height="14" rx="4" fill="#f7f7f7" stroke="{ORANGE}" stroke-width="2.5"/>',
         "service with orphan spans (broken traces)"),
    ]
    out = ['<g class="legend">']
    for k, (sample, text) in enumerate(items):
        cy = y + 10 + k * 20
        out.append(f'<g transform="translate({_f(MARGIN)},{_f(cy)})">{sample}</g>')
        out.append(_text([text], MARGIN + 44, cy, SMALL, f' fill="{TEXT}"'))
    out.append("</g>")
    width = 44 + max(_text_width(t, SMALL) for _, t in items)
    return out, y + 10 + len(items) * 20, width


def to_svg(report: Mapping[str, Any], *, title: str = DEFAULT_TITLE) -> str:
    """The report as a standalone SVG document, laid out here (no Graphviz needed)."""
    g = _build(report)
    body = [_text([title], MARGIN, MARGIN + 8, 16, f' class="title" font-weight="bold" fill="{TEXT}"'),
            _text([g.totals], MARGIN, MARGIN + 28, SMALL, f' class="totals" fill="{TEXT}"')]
    width = MARGIN + max(_text_width(title, 16), _text_width(g.totals, SMALL))
    y = MARGIN + 50
    if not g.has_calls:
        body.append(_text(["No calls were seen: nothing to draw."], MARGIN, y, FONT, ' class="empty" fill="#555555"'))
        y += 24
    if g.nodes:
        lay = _layout(g, y + 14)  # room for the loops above a column's first node
        edges = sorted(g.edges, key=lambda e: (e.source, e.target, e.kind))
        out_y, in_y = _ports(lay, edges)
        backs = [i for i, e in enumerate(edges) if (e.source, e.target) in lay.back]
        body += [_edge_svg(e, lay, out_y, in_y, i, backs.index(i) if i in backs else 0) for i, e in enumerate(edges)]
        body += [_node_svg(g.nodes[n], lay.boxes[n]) for n in sorted(g.nodes)]
        width = max(width, lay.right)
        y = lay.bottom + (30 + 14 * min(len(backs), 8) if backs else 0) + 24
        legend, y, legend_w = _legend(y)
        body += legend
        width = max(width, MARGIN + legend_w)
    markers = "".join(
        f'<marker id="arrow-{kind}" viewBox="0 0 10 7" refX="10" refY="3.5" markerWidth="10" markerHeight="7" '
        f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,3.5 L0,7 z" fill="{stroke}"/></marker>'
        for kind, (stroke, _, _) in _SVG_EDGE.items())
    w, h = width + MARGIN, y + MARGIN
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(w)}" height="{_f(h)}" viewBox="0 0 {_f(w)} {_f(h)}" '
        'font-family="Helvetica, Arial, sans-serif">',
        f"<title>{_x(title)}: {_x(g.totals)}</title>",
        f"<defs>{markers}</defs>",
        f'<rect width="{_f(w)}" height="{_f(h)}" fill="white"/>',
        *body,
        "</svg>",
    ]) + "\n"


def write_graph(report: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = DEFAULT_TITLE) -> str:
    """Writes the graph to `path` in the format its suffix names; returns that format (svg, dot, png or pdf).

    .svg is drawn here; .dot and .gv are Graphviz text; .png and .pdf need Graphviz's `dot` program on PATH.
    """
    target = Path(path)
    fmt = _FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the graph format of {target.name!r}: use a name ending in "
                         + ", ".join(_FORMATS))
    if fmt == "svg":
        target.write_text(to_svg(report, title=title), encoding="utf-8")
    elif fmt == "dot":
        target.write_text(to_dot(report, title=title), encoding="utf-8")
    else:
        dot = shutil.which("dot")
        if dot is None:
            raise ValueError(f"writing .{fmt} needs Graphviz (its `dot` program), which is not installed: "
                             f"write an .svg instead (drawn without Graphviz), or a .dot file to render elsewhere")
        done = subprocess.run([dot, f"-T{fmt}", "-o", os.fspath(target)], input=to_dot(report, title=title).encode(),
                              capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"Graphviz dot failed (exit {done.returncode}): "
                               + done.stderr.decode("utf-8", "replace").strip())
    return fmt
