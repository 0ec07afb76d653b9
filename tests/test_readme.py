"""The README's promises that code can check: the configuration table and the two commands."""

from __future__ import annotations

import re
from pathlib import Path

from scheduler.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_rows() -> dict[str, str]:
    rows = {}
    for line in README.splitlines():
        match = re.match(r"^\| `([A-Z_]+)` \| `(--[a-z-]+)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_configuration_table_matches_the_code() -> None:
    rows = _table_rows()
    expected = {s.env: s.flag for s in SETTINGS}
    missing = {env: flag for env, flag in expected.items() if rows.get(env) != flag}
    stale = sorted(set(rows) - set(expected))
    assert not missing, f"README configuration table lacks or misnames: {missing}"
    assert not stale, f"README configuration table lists settings the code does not read: {stale}"


def test_the_two_setup_commands_exist_in_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for command in ("make run", "make test"):
        assert command in README
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no {target} target"
