"""The propagation audit drawn as a graph: SVG drawn here (parsed back as XML), DOT text, and write_graph."""

from __future__ import annotations

import copy
import random
import re
import stat
import xml.etree.ElementTree as ET
from itertools import combinations

import pytest

from tailsample.incident import graph
from tailsample.incident.graph import to_dot, to_svg, write_graph

NS = "{http://www.w3.org/2000/svg}"
WEIRD = 'we"ird\\svc: ünï'  # a quote, a backslash, a colon and non-ASCII


def pair(source, destination, callee, calls, gaps=0, examples=()):
    return {"source": source, "destination": destination, "callee": callee, "calls": calls, "gaps": gaps,
            "gap_traces": gaps, "examples": list(examples), "overflow": False}


def sample_report():
    return {
        "traces_audited": 1200, "traces_with_gaps": 40, "traces_broken": 7, "orphan_spans": 9,
        "pairs": [
            pair("checkout", "payments.internal:8443", None, 40, 40, ["4bf92f3577b34da6a3ce929d0e0e4736"]),
            pair("frontend", "cart", "cart", 1000),
            pair("frontend", "checkout", "checkout", 300),
            pair(WEIRD, "cart", "cart", 5),
        ],
        "broken": [{"service": "inventory", "traces": 7, "orphan_spans": 9, "examples": ["0af7651916cd43dd"]}],
    }


def parse(svg):
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == NS + "svg"
    return root


def groups(root, kind):
    return [g for g in root.iter(NS + "g") if g.get("class", "").split()[:1] == [kind]]


def nodes(root):
    return {g.get("data-name"): g for g in groups(root, "node")}


def edge(root, source, target):
    found = [g for g in groups(root, "edge") if (g.get("data-source"), g.get("data-target")) == (source, target)]
    assert len(found) == 1, (source, target, len(found))
    return found[0]


def text_of(el):
    return " ".join("".join(t.itertext()) for t in el.iter(NS + "text"))


def rect_of(node):
    r = node.find(NS + "rect")
    return tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))


def assert_no_overlap(root):
    rects = [rect_of(n) for n in nodes(root).values()]
    for (ax, ay, aw, ah), (bx, by, bw, bh) in combinations(rects, 2):
        apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
        assert apart, ((ax, ay, aw, ah), (bx, by, bw, bh))
    assert all(w > 0 and h > 0 for _, _, w, h in rects)


def test_svg_has_one_node_per_service_and_destination():
    root = parse(to_svg(sample_report()))
    found = nodes(root)
    assert set(found) == {"frontend", "cart", "checkout", "payments.internal:8443", "inventory", WEIRD,
                          "(missing parent)"}
    assert len(groups(root, "node")) == len(found)  # no name drawn twice
    for name, g in found.items():
        assert g.find(NS + "title").text.startswith(name)
        assert name in text_of(g)
    assert_no_overlap(root)


def test_gap_edge_is_red_dashed_and_labelled_healthy_edge_is_not():
    root = parse(to_svg(sample_report()))
    gap = edge(root, "checkout", "payments.internal:8443")
    assert "gap" in gap.get("class").split()
    path = gap.find(NS + "path")
    assert path.get("stroke") == graph.RED and path.get("stroke-dasharray")
    assert float(path.get("stroke-width")) > 2
    assert "40/40 calls lost context (100%)" in text_of(gap)
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in gap.find(NS + "title").text

    healthy = edge(root, "frontend", "cart")
    path = healthy.find(NS + "path")
    assert "gap" not in healthy.get("class") and path.get("stroke-dasharray") is None
    assert path.get("stroke") == graph.GREY and path.get("marker-end") == "url(#arrow-healthy)"
    assert text_of(healthy) == "1000 calls"
    # Every edge's arrowhead marker is defined.
    markers = {m.get("id") for m in root.iter(NS + "marker")}
    for g in groups(root, "edge"):
        assert g.find(NS + "path").get("marker-end")[len("url(#"):-1] in markers


def test_unanswered_destination_and_broken_service_are_marked():
    root = parse(to_svg(sample_report()))
    found = nodes(root)
    unanswered = found["payments.internal:8443"]
    assert "unanswered" in unanswered.get("class").split()
    assert unanswered.find(NS + "rect").get("stroke-dasharray")
    assert found["cart"].find(NS + "rect").get("stroke-dasharray") is None  # answered: solid

    broken = found["inventory"]
    assert "broken" in broken.get("class").split()
    assert broken.find(NS + "rect").get("stroke") == graph.ORANGE
    assert "broken" not in found["frontend"].get("class").split()
    orphan = edge(root, "(missing parent)", "inventory")
    path = orphan.find(NS + "path")
    assert path.get("stroke") == graph.ORANGE and path.get("stroke-dasharray")
    assert "9 orphan spans" in text_of(orphan)


def test_svg_title_totals_and_legend():
    root = parse(to_svg(sample_report(), title="Checkout <audit> & co"))
    texts = text_of(root)
    assert "Checkout <audit> & co" in texts  # escaped in the file, restored by the parser
    assert "1200 traces audited, 40 with gaps, 7 broken (9 orphan spans)" in texts
    legend = groups(root, "legend")
    assert len(legend) == 1 and "never seen answering" in text_of(legend[0])


def test_output_is_deterministic_and_independent_of_row_order():
    report = sample_report()
    shuffled = copy.deepcopy(report)
    random.Random(7).shuffle(shuffled["pairs"])
    assert shuffled["pairs"] != report["pairs"]
    assert to_svg(report) == to_svg(report) == to_svg(shuffled)
    assert to_dot(report) == to_dot(report) == to_dot(shuffled)


def test_dot_edges_styles_and_escaping():
    dot = to_dot(sample_report())
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    lines = dot.splitlines()
    gap = next(line for line in lines if line.strip().startswith('"checkout" -> "payments.internal:8443"'))
    assert 'style="dashed,bold"' in gap and f'color="{graph.RED}"' in gap
    assert 'label="40/40 calls lost context (100%)"' in gap
    healthy = next(line for line in lines if line.strip().startswith('"frontend" -> "cart"'))
    assert 'label="1000 calls"' in healthy and "dashed" not in healthy
    orphan = next(line for line in lines if line.strip().startswith('"(missing parent)" -> "inventory"'))
    assert 'style="dotted"' in orphan and "9 orphan spans" in orphan
    unanswered = next(line for line in lines if line.strip().startswith('"payments.internal:8443" ['))
    assert "dashed" in unanswered
    assert any('"inventory" [' in line and graph.ORANGE in line for line in lines)
    # The quote and the backslash escaped, in the ID and in the label.
    weird = r'"we\"ird\\svc: ünï"'
    assert f"{weird} -> " + '"cart"' in dot
    assert f"label={weird}" in dot
    # Every quoted string is closed: with them removed, no quote is left over.
    for line in lines:
        assert '"' not in re.sub(r'"(?:[^"\\]|\\.)*"', "", line), line


def test_dot_quote_keeps_a_trailing_backslash_inside_the_string():
    assert graph._dot_quote("a\\") == '"a\\\\"'
    assert graph._dot_quote('say "hi"\nbye') == '"say \\"hi\\"\\nbye"'


def test_empty_report():
    for report in ({}, {"traces_audited": 0, "traces_with_gaps": 0, "traces_broken": 0, "orphan_spans": 0,
                        "pairs": [], "broken": []}):
        root = parse(to_svg(report))
        assert "No calls were seen" in text_of(root)
        assert groups(root, "node") == [] and groups(root, "edge") == []
        assert float(root.get("width")) > 0 and float(root.get("height")) > 0
        dot = to_dot(report)
        assert "no calls were seen" in dot and "->" not in dot


def test_cycle_and_self_loop():
    report = {"traces_audited": 10, "pairs": [
        pair("a", "b", "b", 10), pair("b", "c", "c", 10, 2), pair("c", "a", "a", 10), pair("c", "c", "c", 3),
    ]}
    root = parse(to_svg(report))
    assert set(nodes(root)) == {"a", "b", "c"}
    assert len(groups(root, "edge")) == 4
    assert_no_overlap(root)
    # The self-loop leaves and re-enters its node on the same (right) side.
    x, _, w, _ = rect_of(nodes(root)["c"])
    d = edge(root, "c", "c").find(NS + "path").get("d")
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d+", d)]
    assert numbers[0] == numbers[-2] == pytest.approx(x + w, abs=0.15)
    assert "3 calls" in text_of(edge(root, "c", "c"))
    assert "2/10 calls lost context (20%)" in text_of(edge(root, "b", "c"))
    assert '"c" -> "c"' in to_dot(report)


def test_two_hundred_random_pairs():
    rng = random.Random(20240611)
    names = [f"svc-{i:02d}" for i in range(45)] + ["ümlaut", "a\"b", "x\\y"]
    rows, seen = [], set()
    while len(rows) < 200:
        source, dest = rng.choice(names), rng.choice([*names, "ext.example.com:443", "10.0.0.7:5432"])
        if (source, dest) in seen:
            continue
        seen.add((source, dest))
        calls = rng.randint(1, 5000)
        callee = None if rng.random() < 0.2 else dest
        rows.append(pair(source, dest, callee, calls, rng.choice([0, 0, 0, rng.randint(1, calls)])))
    report = {"traces_audited": 99999, "pairs": rows,
              "broken": [{"service": n, "traces": 2, "orphan_spans": 3, "examples": []} for n in names[:5]]}
    svg = to_svg(report)
    root = parse(svg)
    expected = {r["source"] for r in rows} | {r["callee"] if r["callee"] is not None else r["destination"]
                                              for r in rows} | {"(missing parent)"}
    assert set(nodes(root)) == expected
    assert len(groups(root, "edge")) == len({(r["source"], r["callee"] or r["destination"]) for r in rows}) + 5
    assert_no_overlap(root)
    assert svg == to_svg(copy.deepcopy(report))
    width, height = float(root.get("width")), float(root.get("height"))
    for x, y, w, h in map(rect_of, nodes(root).values()):
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height


def test_overflow_row_is_a_standalone_node():
    report = sample_report()
    report["pairs"].append({"source": "", "destination": "", "callee": None, "calls": 77, "gaps": 2,
                            "gap_traces": 2, "examples": [], "overflow": True})
    root = parse(to_svg(report))
    other = nodes(root)["(other pairs)"]
    assert "77 calls, 2/77 lost context (3%)" in text_of(other)
    assert "" not in nodes(root)  # the overflow row's empty names draw nothing
    assert not [g for g in groups(root, "edge") if "(other pairs)" in (g.get("data-source"), g.get("data-target"))]
    assert '"(other pairs)" [' in to_dot(report)


def test_percentages_neither_hide_nor_exaggerate():
    report = {"pairs": [pair("a", "b", "b", 1000, 1), pair("a", "c", "c", 1000, 999)]}
    root = parse(to_svg(report))
    assert "1/1000 calls lost context (<1%)" in text_of(edge(root, "a", "b"))
    assert "999/1000 calls lost context (>99%)" in text_of(edge(root, "a", "c"))


def test_callers_name_shown_when_another_service_answers_and_names_merge():
    report = {"pairs": [pair("checkout", "inventory:80", "inventory", 20), pair("cart", "inventory", None, 4, 4)]}
    root = parse(to_svg(report))
    assert set(nodes(root)) == {"checkout", "cart", "inventory"}  # "inventory" answered elsewhere: one node
    assert "as inventory:80" in text_of(edge(root, "checkout", "inventory"))
    assert "unanswered" not in nodes(root)["inventory"].get("class")


def test_characters_xml_cannot_hold_do_not_break_the_svg():
    report = {"pairs": [pair("bad\x00name\x1b", "dest\ud800", None, 3, 1)]}
    root = parse(to_svg(report))
    assert len(nodes(root)) == 2


def test_write_graph_picks_the_format_by_suffix(tmp_path):
    report = sample_report()
    assert write_graph(report, tmp_path / "g.svg") == "svg"
    parse((tmp_path / "g.svg").read_text(encoding="utf-8"))
    assert write_graph(report, str(tmp_path / "g.dot"), title="T") == "dot"
    assert (tmp_path / "g.dot").read_text(encoding="utf-8") == to_dot(report, title="T")
    assert write_graph(report, tmp_path / "g.GV") == "dot"
    with pytest.raises(ValueError, match=r"\.svg.*\.dot.*\.png"):
        write_graph(report, tmp_path / "g.txt")
    assert not (tmp_path / "g.txt").exists()


def test_write_graph_png_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    for suffix in (".png", ".pdf"):
        with pytest.raises(ValueError, match=r"Graphviz.*not installed.*\.svg"):
            write_graph(sample_report(), tmp_path / f"g{suffix}")
        assert not (tmp_path / f"g{suffix}").exists()


def test_write_graph_png_runs_dot(tmp_path, monkeypatch):
    # A stand-in for Graphviz's dot: records its arguments, writes its input to the -o file.
    fake = tmp_path / "dot"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\ncat > "$3"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(graph.shutil, "which", lambda name: str(fake) if name == "dot" else None)
    out = tmp_path / "g.png"
    assert write_graph(sample_report(), out) == "png"
    assert (tmp_path / "args").read_text().split() == ["-Tpng", "-o", str(out)]
    assert out.read_text(encoding="utf-8") == to_dot(sample_report())

    fake.write_text("#!/bin/sh\necho 'syntax error' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="syntax error"):
        write_graph(sample_report(), tmp_path / "g.pdf")
