"""The single-instance fallback's example file and its clock's checkpoint: it waits for the earliest
unsettled slot and is read in every version (helpers: `local_mode_slots`)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

from local_mode_slots import LOOPBACK, ROOT, S1, S2

from scheduler.clock import Checkpoint, LocalClock
from scheduler.egress import EgressPolicy
from scheduler.validation import load_schedules, parse_schedule


def test_example_file_is_valid() -> None:
    # As `make local` loads it: its loopback target named.
    assert len(load_schedules(ROOT / "examples" / "schedules.yaml",
                              egress=EgressPolicy.parse("*,http://127.0.0.1:8087/"))) == 3


def _clock_after_two_slots(checkpoint: Checkpoint, now: datetime) -> LocalClock:
    """A clock resumed from S1 - 30 s at `now` (past S2) that emitted S1 and S2 and stopped."""
    checkpoint.save(S1 - timedelta(seconds=30))
    stop = threading.Event()
    tick = parse_schedule({"id": "tick", "cron": "* * * * *",
                           "action": {"type": "http", "url": "http://127.0.0.1:9/"}},
                          egress=LOOPBACK)
    clock = LocalClock([tick], lambda _m, _t: stop.set(), checkpoint=checkpoint, clock=lambda: now)
    clock.run(stop)
    return clock


def test_the_checkpoint_waits_for_the_earliest_unsettled_slot(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "clock.json")
    now = S2 + timedelta(seconds=10)
    clock = _clock_after_two_slots(checkpoint, now)
    before = timedelta(microseconds=1)
    assert checkpoint.load() == S1 - before
    clock.settled("tick", S2)
    assert checkpoint.load() == S1 - before  # S1 still holds it back
    clock.settled("tick", S1)
    assert checkpoint.load() == now
    clock.settled("tick", S1)  # a second settle of the same slot changes nothing
    assert checkpoint.load() == now


def test_a_closed_clock_leaves_the_checkpoint_to_the_next_one(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "clock.json")
    clock = _clock_after_two_slots(checkpoint, S2 + timedelta(seconds=10))
    clock.close()
    clock.settled("tick", S1)  # an abandoned action ending after the stop
    clock.settled("tick", S2)
    assert checkpoint.load() == S1 - timedelta(microseconds=1)


def test_a_checkpoint_of_the_first_version_is_read(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    path.write_text(json.dumps({"emitted_until": "2031-01-06T10:00:00Z"}))
    assert Checkpoint(path).load() == S1
