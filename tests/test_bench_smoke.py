"""The sync benchmark still runs: a tiny run in a subprocess, exit 0 and its table printed.
No timing is asserted; the benchmark itself reports speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_sync_runs_and_prints_its_table(pubsub_emulator: str) -> None:
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_sync.py"), "--schedules", "20"],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    title, header, rule, *rows = result.stdout.splitlines()
    assert title.startswith("sync of 20 schedules")
    # Columns are separated by two spaces; the rule of dashes gives their spans.
    spans, start = [], 0
    for dashes in rule.split("  "):
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    table = [[line[a:b].strip() for a, b in spans] for line in (header, *rows)]
    columns = table[0]
    assert columns[:4] == ["sync", "wall s", "plan s", "steps"] and "ListJobs" in columns
    steps = {row[0]: int(row[3]) for row in table[1:]}
    assert steps == {"first": 21, "no-op": 0, "one change": 1}  # 20 creates and one pause
