"""ARCHITECTURE.md against the repository: every path it names exists, and it names every Python package, every
top-level Python module, every Rust module directory and top-level Rust module, every top-level directory, and
every unit of the Python layers.

Paths are from the repository root: in backticks in the prose, and in the ```tree blocks, where a line is an
entry (a name, then two spaces or more, then what it is) and indentation (two spaces a level) puts an entry inside
the directory above it (a name ending in `/`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from test_layers import LAYERS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "ARCHITECTURE.md"
PATH_LIKE = re.compile(r"^\.?[\w-]+(?:\.[\w-]+)*(?:/[\w.-]+)*/?$")


def tree_entries(text: str) -> list[tuple[int, str]]:
    """(line number, path) of every entry of the ```tree blocks."""
    out = []
    inside = False
    stack: list[tuple[int, str]] = []  # (indent, directory path)
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = line.strip() == "```tree"
            stack = []
            continue
        if not inside or not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"ARCHITECTURE.md:{number}: indent by two spaces a level"
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        assert not stack or indent == stack[-1][0] + 2, f"ARCHITECTURE.md:{number}: one level deeper at most"
        path = (stack[-1][1] if stack else "") + name
        out.append((number, path))
        if name.endswith("/"):
            stack.append((indent, path))
    return out


def backticked_paths(text: str) -> list[tuple[int, str]]:
    out = []
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            continue
        for token in re.findall(r"`([^`]+)`", line):
            if "/" in token and PATH_LIKE.match(token):
                out.append((number, token))
    return out


def tracked(path: str) -> bool:
    """Exists in the working tree and is not ignored (a built `.so`, a cache, `target/` do not count)."""
    if not (REPO / path).exists():
        return False
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, capture_output=True, check=False)
    return ignored.returncode != 0


def named() -> set[str]:
    text = DOC.read_text()
    return {p.rstrip("/") for _, p in tree_entries(text)} | {p.rstrip("/") for _, p in backticked_paths(text)}


def test_every_path_the_page_names_exists() -> None:
    text = DOC.read_text()
    entries = tree_entries(text) + backticked_paths(text)
    assert len(entries) > 100  # the reader reads what it means to
    missing = [f"ARCHITECTURE.md:{n}: {p}" for n, p in entries if not (REPO / p).exists()]
    assert missing == []


def test_the_page_names_every_package_module_and_directory() -> None:
    pkg = REPO / "python" / "tailsample"
    wanted = {str(p.parent.relative_to(REPO)) for p in pkg.rglob("__init__.py")}
    wanted |= {str(p.relative_to(REPO)) for p in pkg.glob("*.py")}
    for src in (REPO / "rust" / "core" / "src", REPO / "rust" / "python" / "src", REPO / "rust" / "server" / "src"):
        wanted |= {str(d.relative_to(REPO)) for d in src.rglob("*") if d.is_dir()}
        wanted |= {str(f.relative_to(REPO)) for f in src.glob("*.rs")}
    wanted = {w for w in wanted if "__pycache__" not in w and tracked(w)}
    assert "python/tailsample/collector" in wanted and "rust/core/src/policy/ottl" in wanted
    names = named()
    top = {p.name for p in REPO.iterdir() if p.is_dir() and p.name != ".git" and tracked(p.name)}
    # a top-level directory is named by itself or by a path in it (`rust/core/`)
    missing_top = {d for d in top if d not in names and not any(n.startswith(d + "/") for n in names)}
    assert sorted((wanted - names) | missing_top) == []


def test_the_page_names_every_unit_of_the_python_layers() -> None:
    text = DOC.read_text()
    units = [u for layer in LAYERS for u in layer]
    assert [u for u in units if f"`{u}`" not in text] == []


def test_the_tree_reader_nests_by_indentation() -> None:
    text = ("```tree\na/  x\n  b.py  y\n  c/  z\n    d.rs  w\n  e  v\nf  u\n```\n"
            "`g/h.py` and `not a path` and `/debug/x`\n")
    assert [p for _, p in tree_entries(text)] == ["a/", "a/b.py", "a/c/", "a/c/d.rs", "a/e", "f"]
    assert [p for _, p in backticked_paths(text)] == ["g/h.py"]
