"""What the README's two commands run (issue 20: `make demo` installed the test and lint tools, 54 packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dry_run(target: str) -> str:
    """`make -n -B TARGET`: every command the target would run from scratch, none of them run."""
    # Run under `make test` too: without the parent make's flags, which add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_only_what_the_demo_needs() -> None:
    """Scenario: the commands of `make demo`. Guarantees: the package is built and installed without extras
    (no pytest, ruff, mypy, Kafka client) and the demo runs; `make test` still installs the test extras."""
    demo = dry_run("demo")
    installs = [line for line in demo.splitlines() if "maturin develop" in line or "pip install" in line]
    assert any("maturin develop" in line for line in installs), demo
    assert all(" -E " not in line and "[test" not in line for line in installs), installs
    assert demo.rstrip().endswith("tailsample demo")
    assert "maturin develop --release -q -E test" in dry_run("test")
