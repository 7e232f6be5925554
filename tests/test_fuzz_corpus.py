"""fuzz/CAMPAIGNS.md and the committed corpora agree (issue 20: the log recorded 1,593 otlp_decode files where
504 were committed)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"


def committed_table() -> dict[str, int]:
    text = (FUZZ / "CAMPAIGNS.md").read_text(encoding="utf-8")
    section = text.split("## The committed corpora", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| (\w+) \| (\d+) \|$", section, re.M)}


def test_the_campaign_log_counts_the_committed_corpora() -> None:
    """Scenario: fuzz/CAMPAIGNS.md's table of committed corpora, and fuzz/corpus/<target>/.
    Guarantees: one row per target directory, each with the number of files committed there."""
    table = committed_table()
    on_disk = {d.name: sum(1 for f in d.iterdir() if f.is_file())
               for d in (FUZZ / "corpus").iterdir() if d.is_dir()}
    assert table == on_disk
    targets = {p.stem for p in (FUZZ / "fuzz_targets").glob("*.rs")}
    assert set(table) == targets
