"""The single-instance fallback: a schedule file run in process into SQLite, no cloud."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.clock import Checkpoint
from scheduler.config import Settings
from scheduler.model import Schedule
from scheduler.validation import load_schedules
from scion_scheduler.local import run_local
from worker.sqlite_ledger import SqliteLedger


def test_example_file_is_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    assert len(load_schedules(root / "examples" / "schedules.yaml")) == 3


def test_missed_fires_after_a_restart_are_handled_once(tmp_path: Path) -> None:
    """A checkpoint two minutes old stands for a scheduler that was down across two slots:
    on start both are emitted, run once (catchup all, inside the window), and recorded.
    Both are due at once, so overlap is allowed: with skip, one would be recorded skipped."""
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text(
        "- id: tick\n  cron: '* * * * *'\n  max_attempts: 1\n  overlap: allow\n"
        "  action: {type: http, url: 'http://127.0.0.1:9/unreachable', timeout: 1}\n"
    )
    store = tmp_path / "scion.db"
    now = datetime.now(UTC)
    Checkpoint(store.with_suffix(".clock.json")).save(now - timedelta(minutes=2, seconds=5))
    stop = threading.Event()
    thread = threading.Thread(target=run_local, args=(schedule_file, store, Settings.from_env(), stop))
    thread.start()
    ledger = SqliteLedger(store)
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    runs = []
    while datetime.now(UTC) < deadline:
        runs = ledger.history("tick", limit=10)
        if len(runs) >= 2 and all(r.state != "running" for r in runs):
            break
        stop.wait(0.2)
    stop.set()
    thread.join(timeout=40)
    assert len(runs) >= 2
    assert len({r.fire_time for r in runs}) == len(runs)
    assert all(r.state == "failed" for r in runs)  # the target is unreachable; recorded, not lost


def test_the_schedule_file_is_reloaded_on_change_and_a_broken_one_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scheduler.clock import LocalClock
    from scion_scheduler import local

    loaded: list[list[str]] = []
    original = LocalClock.set_schedules

    def record(self: LocalClock, schedules: list[Schedule]) -> None:
        loaded.append([s.id for s in schedules])
        original(self, schedules)

    monkeypatch.setattr(local, "RELOAD_POLL_SECONDS", 0.05)
    monkeypatch.setattr(LocalClock, "set_schedules", record)
    entry = "- id: {id}\n  cron: '0 0 1 1 *'\n  action: {{type: http, url: 'http://127.0.0.1:9/'}}\n"
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text(entry.format(id="a"))
    stop = threading.Event()
    thread = threading.Thread(target=run_local, args=(schedule_file, tmp_path / "db.sqlite", Settings.from_env(), stop))
    thread.start()
    try:
        def rewrite(text: str, bump: int) -> None:
            schedule_file.write_text(text)
            stamp = schedule_file.stat().st_mtime + bump
            os.utime(schedule_file, (stamp, stamp))

        _wait((tmp_path / "db.sqlite").exists)  # created after run_local took the file's mtime
        rewrite(entry.format(id="a") + entry.format(id="b"), 5)
        _wait(lambda: ["a", "b"] in loaded)
        reloads = len(loaded)
        rewrite("- id: broken\n  cron: 'not a cron'\n", 10)
        time.sleep(0.5)
        # The broken file is logged and the running set kept.
        assert len(loaded) == reloads and loaded[-1] == ["a", "b"]
    finally:
        stop.set()
        thread.join(timeout=30)


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
