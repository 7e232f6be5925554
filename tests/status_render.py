"""What the status tests share: a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium from PyPI; a browser Selenium or Playwright would download cannot be had here), and the dashboard's panels
drawn from a real Prometheus's answers as one HTML page of SVG charts (Grafana itself is AGPL and not used).

`chromium()` skips the calling test when Chromium or ChromeDriver is missing, except under CI (CI=true), where it
fails: `.ci/run` installs them (`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import functools
import html
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# as the machine notes say: without the background-networking flags Chromium's connections to Google's hosts are
# refused by this closed network, many at a time
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


@functools.cache
def deploy_generator() -> Any:
    """deploy/generate.py as a module (it is a script, outside the package): its ROWS, ALERTS and outputs()."""
    spec = importlib.util.spec_from_file_location("deploy_generate", DEPLOY / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Selenium WebDriver over headless Debian Chromium, with a fresh profile."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        message = (f"{', '.join(missing)} not installed: `apt-get install -y chromium chromium-driver` (README: "
                   "Status page, prerequisites)")
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tailsample-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP violations among them
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(url: str, path: Path, *, width: int, height: int) -> None:
    """The page at `url`, `width` wide and as tall as its content (at least `height`), as a PNG."""
    with chromium(width, height) as driver:
        driver.get(url)
        full_page_screenshot(driver, path, width)


def full_page_screenshot(driver: Any, path: Path, width: int) -> None:
    """The whole page as a PNG: the viewport set (DevTools device metrics) to the page's height, since a headless
    window's own height includes browser chrome the screenshot does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    assert driver.save_screenshot(str(path))


_METRIC = re.compile(r"\b((?:otelcol|tailsample)_[a-z0-9_]+)(\{)?")


def only_job(expr: str, job: str) -> str:
    """`expr` with every selector of a tailsample metric narrowed to `job` (the queries' metrics are all named
    otelcol_* or tailsample_*)."""
    return _METRIC.sub(lambda m: f'{m.group(1)}{{job="{job}",' if m.group(2) else f'{m.group(1)}{{job="{job}"}}',
                       expr)


# ---- the dashboard's panels, drawn ----------------------------------------------------------------------------

COLORS = ("#4a90d9", "#2a9d5b", "#d0453a", "#e0a030", "#8a5cc2", "#3aa6a6", "#c2569a", "#777777")


@dataclass
class Preview:
    html: str
    height: int
    empty_panels: list[str]


def _legend(fmt: str, labels: dict[str, str]) -> str:
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def _format(v: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "bytes":
        for factor, suffix in ((1 << 30, " GiB"), (1 << 20, " MiB"), (1 << 10, " KiB")):
            if abs(v) >= factor:
                return f"{v / factor:.1f}{suffix}"
        return f"{v:.0f} B"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if unit == "ms":
        return f"{v:.1f} ms"
    return f"{v:.3g}"


def _panel_svg(panel: dict[str, Any], series: list[tuple[str, list[tuple[float, float]]]], w: int, h: int) -> str:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    points = [p for _, pts in series for p in pts]
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max([v for _, v in points] + [panel.get("fieldConfig", {}).get("defaults", {}).get("max") or 0])
    top = top if top > 0 else 1.0  # all zero: a flat line at the bottom
    pw, ph = w - 70, h - 70

    def x(t: float) -> float:
        return 60 + (t - t0) / ((t1 - t0) or 1) * pw

    def y(v: float) -> float:
        return 30 + ph - v / top * ph

    parts = [f'<rect x="60" y="30" width="{pw}" height="{ph}" fill="#fafbfc" stroke="#ddd"/>',
             f'<text x="4" y="36" class="ax">{html.escape(_format(top, unit))}</text>',
             f'<text x="4" y="{30 + ph}" class="ax">0</text>']
    for i, (name, pts) in enumerate(series[:8]):
        color = COLORS[i % len(COLORS)]
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        last = pts[-1][1]
        parts.append(f'<text x="{60 + (i % 2) * pw / 2}" y="{h - 22 + (i // 2) * 12 - (len(series[:8]) // 2) * 6}" '
                     f'class="lg" fill="{color}">■ {html.escape(name)}: {html.escape(_format(last, unit))}</text>')
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}"><text x="8" y="18" class="tt">'
            f'{html.escape(panel["title"])}</text>{"".join(parts)}</svg>')


def dashboard_preview(dashboard: dict[str, Any], query_range: Callable[[str], list[dict[str, Any]]],
                      *, subtitle: str = "") -> Preview:
    """The dashboard's panels (in its grid order, 24 columns) drawn from `query_range(expr)` answers."""
    col_px, row_px = 56, 28
    cells = []
    empty = []
    bottom = 0
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        left, top, w, h = pos["x"] * col_px, pos["y"] * row_px, pos["w"] * col_px, pos["h"] * row_px
        bottom = max(bottom, top + h)
        if panel["type"] == "row":
            cells.append(f'<div class="row" style="left:{left}px;top:{top}px;width:{w}px">'
                         f'{html.escape(panel["title"])}</div>')
            continue
        series: list[tuple[str, list[tuple[float, float]]]] = []
        for target in panel["targets"]:
            for s in query_range(target["expr"]):
                pts = [(float(t), float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if pts:
                    series.append((_legend(target.get("legendFormat", ""), s["metric"]), pts))
        if not series:
            empty.append(panel["title"])
            continue
        cells.append(f'<div class="panel" style="left:{left}px;top:{top}px">'
                     f'{_panel_svg(panel, series, w - 8, h - 8)}</div>')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; font: 12px system-ui, sans-serif; background: #fff; }}
h1 {{ font-size: 16px; margin: 10px 12px; }}
.board {{ position: relative; margin: 0 8px; }}
.row {{ position: absolute; font-weight: 600; font-size: 14px; border-bottom: 1px solid #ccc; }}
.panel {{ position: absolute; border: 1px solid #e3e6ea; border-radius: 4px; background: #fff; }}
.tt {{ font-size: 13px; font-weight: 600; }} .ax {{ font-size: 10px; fill: #889; }} .lg {{ font-size: 11px; }}
</style></head><body><h1>{html.escape(dashboard["title"])}: the panels of deploy/grafana/tailsample.json, from a real
Prometheus scraping tailsample serve{html.escape(subtitle)} (drawn by tests/status_render.py, not by Grafana)</h1>
<div class="board" style="height:{bottom}px">{"".join(cells)}</div></body></html>"""
    return Preview(page, bottom + 60, empty)


__all__ = ["DEPLOY", "Preview", "chromium", "dashboard_preview", "deploy_generator", "full_page_screenshot", "only_job",
           "screenshot"]
