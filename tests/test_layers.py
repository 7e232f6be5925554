"""The Python package in layers: every module imports only from its own unit or from a layer below it.

The order is declared once, here (ARCHITECTURE.md draws it). A unit is a package or a top-level module; units of
one layer do not import each other (receivers and exporters meet only through the engine). Every import counts:
at the top of a module, inside a function (imported when used) or under `TYPE_CHECKING`. Read from the source
with `ast`, so nothing is imported and the native module need not be built.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "tailsample"

LAYERS: tuple[tuple[str, ...], ...] = (
    # the binding's Python face
    ("tailsample.errors",),
    ("tailsample._native",),  # compiled; it raises the classes of `errors`
    ("tailsample.archive",),
    ("tailsample.config", "tailsample.storage"),
    ("tailsample.engine",),
    ("tailsample",),  # the package's public API (its __init__): nothing but what is above
    # what every component shares
    ("tailsample.collector",),
    # I/O and tools over the engine: they never import each other
    ("tailsample.receivers", "tailsample.exporters", "tailsample.incident", "tailsample.otel", "tailsample.logging"),
    # views over the engine and the incident tools (the status page)
    ("tailsample.ui",),
    # `tailsample serve`
    ("tailsample.service",),
    # what a person runs
    ("tailsample.traffic",),
    ("tailsample.cli",),
    ("tailsample.__main__",),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package (`.py`, and the native module by its stub), by dotted name."""
    found = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    for stub in root.rglob("*.pyi"):
        found.setdefault(module_name(stub, root), stub)
    return found


def imports(path: Path, name: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every import of the package's own modules in one file, `from x import y` resolved to
    the module `x.y` when there is one."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor.pop()
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in known else base))
    root = PACKAGE.name
    return [(line, m) for line, m in out if m == root or m.startswith(root + ".")]


def unit_of(module: str) -> tuple[int, str] | None:
    """(layer, unit) of a module: the longest unit naming it or a package above it; the package itself only as
    itself."""
    best: tuple[int, str] | None = None
    for layer, units in enumerate(LAYERS):
        for unit in units:
            if module == unit or ("." in unit and module.startswith(unit + ".")):
                if best is None or len(unit) > len(best[1]):
                    best = (layer, unit)
    return best


def violations(root: Path) -> list[str]:
    found = modules(root)
    known = set(found)
    out = []
    for name, path in found.items():
        if path.suffix == ".pyi":
            continue
        here = unit_of(name)
        if here is None:
            out.append(f"{name}: in no layer (add its package or module to LAYERS in {Path(__file__).name})")
            continue
        for line, target in imports(path, name, known):
            there = unit_of(target)
            if there is None or there[1] == here[1]:
                continue
            if there[0] > here[0]:
                out.append(f"{name}:{line} ({here[1]}, layer {here[0]}) imports {target} ({there[1]}, layer "
                           f"{there[0]}): upward")
            elif there[0] == here[0]:
                out.append(f"{name}:{line} ({here[1]}) imports {target} ({there[1]}): units of one layer do not "
                           "import each other")
    return out


def test_no_module_imports_from_a_layer_above_it_or_beside_it() -> None:
    assert violations(PACKAGE) == []


def test_every_unit_of_the_layers_exists() -> None:
    names = set(modules(PACKAGE))
    missing = [u for units in LAYERS for u in units if u not in names]
    assert missing == []


def test_the_checker_sees_upward_sideways_relative_and_lazy_imports(tmp_path: Path) -> None:
    root = tmp_path / "tailsample"
    files = {
        "__init__.py": "from tailsample.engine import Engine\n",
        "engine.py": "def f() -> None:\n    from tailsample.service import app\n",  # lazy, upward
        "errors.py": "",
        "config.py": "from . import errors\n",  # relative, downward: fine
        "storage.py": "",
        "_native.pyi": "",
        "collector/__init__.py": "",
        "collector/settings.py": "from ..receivers.sink import Sink\n",  # relative, upward
        "receivers/__init__.py": "",
        "receivers/sink.py": "from tailsample.exporters import base\n",  # sideways
        "exporters/__init__.py": "",
        "exporters/base.py": "from tailsample.collector import settings\n",  # downward: fine
        "service/__init__.py": "",
        "service/app.py": "from tailsample import engine, receivers\n",  # downward: fine
        "stray.py": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    found = violations(root)
    assert len(found) == 4, found
    assert any(v.startswith("tailsample.engine:2 ") and "tailsample.service.app" in v and "upward" in v for v in found)
    assert any(v.startswith("tailsample.collector.settings:1 ") and "tailsample.receivers.sink" in v for v in found)
    assert any(v.startswith("tailsample.receivers.sink:1 ") and "do not import each other" in v for v in found)
    assert any(v.startswith("tailsample.stray: in no layer") for v in found)


def test_one_module_per_name() -> None:
    """No two modules share a file name: a traceback, a log line or a grep names one file."""
    by_name = collections.defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            by_name[path.name].append(str(path.relative_to(PACKAGE)))
    assert {n: p for n, p in by_name.items() if len(p) > 1} == {}


def _types(tree: ast.Module) -> set[str]:
    """Public classes and type aliases (`X = A | B`) defined at the top of a module."""
    names = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.BitOr):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def test_no_settings_class_shares_its_name_with_a_class_elsewhere() -> None:
    """`OtlpExporterSettings` configures `OtlpGrpcExporter`, `ExporterSettings` is not `Exporter`: a name says
    which of the two it is."""
    settings = PACKAGE / "collector" / "settings.py"
    ours = _types(ast.parse(settings.read_text()))
    assert "ServiceConfig" in ours and "OtlpExporterSettings" in ours  # the test reads what it means to
    clashes = {}
    for path in PACKAGE.rglob("*.py"):
        if path != settings and (both := ours & _types(ast.parse(path.read_text()))):
            clashes[str(path.relative_to(PACKAGE))] = sorted(both)
    assert clashes == {}
