"""Raw seed inputs for the fuzz targets, from what the repository already holds.

    make build   # .venv with the package
    .venv/bin/python fuzz/tools/make_seeds.py --out /tmp/seeds
    # then, per target: copy /tmp/seeds/<target>/* into fuzz/corpus/<target>/ and `cargo fuzz cmin <target>`

- config_load: every `tail_sampling` block found in the repo's YAML (seed config, bench policies, tests/data, the
  reference deep dive), in YAML strings of the Python tests, in `json!` blocks of the Rust tests, and every
  configuration text the Python tests hand the core (harvest.py) -- as the JSON text Config gives the core.
- ottl_parse: every `ottl_condition` expression of those configurations, and the string literals of the OTTL
  parser's and evaluator's Rust tests, one per file.
- otlp_decode: payloads of the synthetic traffic generator (several shapes and batch sizes), every payload and
  OTLP/JSON body the Python tests hand the core (harvest.py), and the JSON files of tests/data.

Files are named by the SHA-1 of their content (as libFuzzer names corpus files).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "reference"
BLOCK_NAME = re.compile(r"^tail_sampling(/.*)?$")
# Tests whose inputs are worth keeping: fast, no network, no Go toolchain.
HARVEST_TESTS = [
    "tests/test_config.py", "tests/test_engine.py", "tests/test_decode_errors.py", "tests/test_otlp_json.py",
    "tests/test_trace_aggregate.py", "tests/test_sampling_stats.py", "tests/test_gaps.py",
    "tests/test_explain.py", "tests/test_recent_kept.py", "tests/test_fileformat.py",
    "tests/test_trace_routing.py", "tests/test_tree.py", "tests/test_property.py",
]
MAX_PAYLOAD = 64 * 1024
MAX_PAYLOADS = 6000


def save(out: Path, target: str, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


# ---- configurations ------------------------------------------------------------------------------------------

def select_block(data: Any) -> list[Any]:
    """The tail_sampling blocks of a parsed document (as tailsample.config._select_block finds them)."""
    if not isinstance(data, dict):
        return []
    processors = data.get("processors")
    if isinstance(processors, dict):
        return [v or {} for k, v in processors.items() if isinstance(k, str) and BLOCK_NAME.match(k)]
    if set(data) == {"tail_sampling"}:
        return [data["tail_sampling"] or {}]
    if "policies" in data or "decision_wait" in data:
        return [data]
    return []


def yaml_blocks(text: str) -> list[Any]:
    try:
        return select_block(yaml.safe_load(textwrap.dedent(text).lstrip("\n")))
    except yaml.YAMLError:
        return []


def deep_dive_yaml() -> str:
    """The collector YAML of the reference deep dive: from `processors:` to the first unindented prose line."""
    path = SHARED / "tracing-deep-dive.txt"
    if not path.exists():
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("processors:")), None)
    if start is None:
        return ""
    out = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip() and not line[0].isspace():
            break
        out.append(line)
    return "\n".join(out)


def python_strings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):  # f-strings: the literal parts, joined with a placeholder
            yield "".join(str(v.value) if isinstance(v, ast.Constant) else "x" for v in node.values)


def rust_json_macros(text: str) -> Iterator[Any]:
    """`json!({...})` blocks of Rust source that are plain JSON (trailing commas allowed)."""
    for m in re.finditer(r"json!\s*\(", text):
        depth, i = 0, m.end()
        start = i
        in_str = False
        while i < len(text):
            c = text[i]
            if in_str:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                if depth == 0:
                    break
                depth -= 1
            i += 1
        body = re.sub(r",(\s*[}\]])", r"\1", text[start:i])
        try:
            yield json.loads(body)
        except json.JSONDecodeError:
            continue


def rust_string_literals(text: str) -> Iterator[str]:
    for m in re.finditer(r'r(#+)"(.*?)"\1', text, re.S):
        yield m.group(2)
    for m in re.finditer(r'(?<![r#\w])"((?:[^"\\]|\\.)*)"', text, re.S):
        s = m.group(1)
        s = re.sub(r"\\\n\s*", "", s)  # line continuations
        try:
            s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda u: chr(int(u.group(1), 16)), s)
            with warnings.catch_warnings():  # Rust escapes Python does not know: kept as written
                warnings.simplefilter("ignore", DeprecationWarning)
                s = s.encode("utf-8", "surrogatepass").decode("unicode_escape").encode("latin-1").decode("utf-8")
        except (UnicodeError, ValueError, OverflowError):
            continue
        yield s


def ottl_of(block: Any) -> Iterator[str]:
    """Every ottl_condition expression of a configuration, at any depth."""
    if isinstance(block, dict):
        o = block.get("ottl_condition")
        if isinstance(o, dict):
            for key in ("span", "spanevent"):
                v = o.get(key)
                for e in v if isinstance(v, list) else [v]:
                    if isinstance(e, str):
                        yield e
        for v in block.values():
            yield from ottl_of(v)
    elif isinstance(block, list):
        for v in block:
            yield from ottl_of(v)


def configs(harvested: Path | None) -> list[str]:
    blocks: list[Any] = []
    files = [*sorted((REPO / "python/tailsample/data").glob("*.yaml")), *sorted((REPO / "bench/policies").glob("*")),
             *sorted((REPO / "tests/data").glob("*.y*ml")), *sorted((REPO / "tests/tools").glob("*.y*ml"))]
    for f in files:
        blocks += yaml_blocks(f.read_text(encoding="utf-8"))
    blocks += yaml_blocks(deep_dive_yaml())
    for f in [*sorted((REPO / "tests").rglob("*.py")), *sorted((REPO / "bench").glob("*.py"))]:
        for s in python_strings(f):
            if "policies" in s and ":" in s:
                blocks += yaml_blocks(s)
    for f in sorted((REPO / "rust/core").rglob("*.rs")):
        for v in rust_json_macros(f.read_text(encoding="utf-8")):
            if isinstance(v, dict) and ("policies" in v or "decision_wait" in v):
                blocks.append(v)
    texts = [json.dumps(b, default=str) for b in blocks]
    seen = harvested / "config_load" if harvested is not None else None
    if seen is not None and seen.is_dir():
        texts += [p.read_text(encoding="utf-8", errors="replace") for p in sorted(seen.iterdir())]
    return texts


def ottl_expressions(config_texts: list[str]) -> set[str]:
    exprs: set[str] = set()
    for t in config_texts:
        try:
            exprs.update(ottl_of(json.loads(t)))
        except json.JSONDecodeError:
            continue
    ottl_dir = REPO / "rust/core/src/policy/ottl"
    sources = [*sorted(ottl_dir.glob("*.rs")), REPO / "rust/core/src/policy/ottl_condition.rs"]
    for f in sources:
        exprs.update(s for s in rust_string_literals(f.read_text(encoding="utf-8")) if 0 < len(s) <= 400)
    for f in sorted((REPO / "tests").rglob("*.py")):
        exprs.update(s for s in python_strings(f) if ("attributes[" in s or "IsMatch" in s) and len(s) <= 400)
    return exprs


# ---- payloads ------------------------------------------------------------------------------------------------

def synthetic_payloads() -> Iterator[bytes]:
    sys.path.insert(0, str(REPO / "python"))
    from tailsample.traffic.synth import TrafficGenerator

    shapes = [
        dict(seed=1, spans_per_payload=1, max_spans_per_trace=3),
        dict(seed=2, spans_per_payload=8, error_share=0.3, slow_share=0.3, forced_share=0.3),
        dict(seed=3, spans_per_payload=64, max_spans_per_trace=50),
        dict(seed=4, spans_per_payload=512),
    ]
    for shape in shapes:
        gen = TrafficGenerator(spans_per_second=2_000, **shape)  # type: ignore[arg-type]
        for n, batch in enumerate(gen.batches(1.0)):
            if n >= 40:
                break
            yield batch.payload


def harvest(out: Path) -> None:
    env = dict(os.environ, FUZZ_HARVEST=str(out), PYTHONPATH=str(REPO / "fuzz/tools"))
    tests = [t for t in HARVEST_TESTS if (REPO / t).exists()]
    subprocess.run([sys.executable, "-m", "pytest", "-p", "harvest", "-q", "-p", "no:cacheprovider", *tests],
                   cwd=REPO, env=env, check=False, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory to fill with <target>/<sha1> files")
    ap.add_argument("--no-tests", action="store_true", help="skip running the Python tests (harvest.py)")
    args = ap.parse_args()
    out: Path = args.out
    work = Path(tempfile.mkdtemp(prefix="tailsample-harvest-"))
    try:
        harvested = None
        if not args.no_tests:
            harvest(work)
            harvested = work
        texts = configs(harvested)
        for t in texts:
            save(out, "config_load", t)
        for e in ottl_expressions(texts):
            save(out, "ottl_parse", e)
        for payload in synthetic_payloads():
            save(out, "otlp_decode", payload)
        for f in sorted((REPO / "tests/data").glob("*.json")):
            save(out, "otlp_decode", f.read_bytes())
        if harvested is not None:
            for kind in ("otlp_json", "otlp_decode"):
                d = harvested / kind
                if not d.is_dir():
                    continue
                files = sorted(p for p in d.iterdir() if p.stat().st_size <= MAX_PAYLOAD)
                random.Random(kind).shuffle(files)  # a deterministic sample: cmin picks from it
                for p in files[:MAX_PAYLOADS]:
                    save(out, "otlp_decode", p.read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for d in sorted(out.iterdir()):
        n = sum(1 for _ in d.iterdir())
        size = sum(p.stat().st_size for p in d.iterdir())
        print(f"{d.name}: {n} files, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
