"""The README's commands on the sample recording (examples/shop.otlp.json) run as written and print what the
README shows (issue 20: no recording shipped for replay, show and gaps)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADING = "### The offline commands on a sample recording"


def readme_blocks() -> tuple[list[str], list[str]]:
    """The section's command block and its output block, as lines."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split(HEADING, 1)[1].split("\n## ", 1)[0]
    fenced = section.split("```")
    commands, output = fenced[1], fenced[3]
    assert commands.startswith("sh\n")
    return commands.splitlines()[1:], [line for line in output.splitlines() if line.strip()]


def test_the_readme_commands_run_on_the_sample_recording(tmp_path: Path) -> None:
    """Scenario: each command of the README's sample-recording section, run from a directory that holds the
    clone's `examples/` and `python/` (so `kept.otlp.json` is written there). Guarantees: each exits 0, and
    every line the README shows of their output is printed, as shown."""
    for name in ("examples", "python"):
        (tmp_path / name).symlink_to(REPO / name)
    commands, shown = readme_blocks()
    assert [c.split()[:2] for c in commands] == [["tailsample", "replay"], ["tailsample", "show"],
                                                 ["tailsample", "gaps"]]
    env = {**os.environ, "COLUMNS": "200"}
    printed: list[str] = []
    for command in commands:
        argv = shlex.split(command)
        proc = subprocess.run([sys.executable, "-m", "tailsample", *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        printed += [line.rstrip() for line in proc.stdout.splitlines()]
    for line in shown:
        assert line.rstrip() in printed, f"the README shows {line!r}; the commands printed:\n" + "\n".join(printed)
    assert (tmp_path / "kept.otlp.json").stat().st_size > 0
