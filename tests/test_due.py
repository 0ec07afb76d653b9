"""The due-slot finder (`scheduler.due`): what a schedule owed in a window and which of those
slots nobody recorded, never a slot it did not owe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.contract import execution_id
from scheduler.due import Owed, missed_reason, slots_in, unaccounted
from scheduler.model import Schedule
from scheduler.validation import parse_schedule

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
START, END = T0, T0 + timedelta(minutes=5)  # slots 10:01 .. 10:05


def _schedule(sid: str = "s", **fields: Any) -> Schedule:
    raw: dict[str, Any] = {"id": sid, "cron": "* * * * *", "action": {"type": "http",
                                                                       "url": "http://x/"}}
    raw.update(fields)
    if "at" in raw:
        raw.pop("cron")
    return parse_schedule(raw)


def _minutes(*minutes: int) -> list[datetime]:
    return [T0 + timedelta(minutes=m) for m in minutes]


def _missing(owed: list[Owed], recorded: set[str] | None = None) -> list[datetime]:
    return [slot.fire_time for slot in unaccounted(owed, recorded or set(), START, END)[1]]


def test_every_owed_slot_without_a_record_is_found_and_recorded_ones_are_not() -> None:
    schedule = _schedule()
    recorded = {execution_id("s", t) for t in _minutes(1, 2, 4)}
    count, missing = unaccounted([Owed(schedule, T0 - timedelta(days=1))], recorded, START, END)
    assert count == 5
    assert [m.fire_time for m in missing] == _minutes(3, 5)
    assert missing[0].execution_id == execution_id("s", _minutes(3)[0], "scheduled")
    assert missing[0].execution_id == execution_id("s", _minutes(3)[0], "audit")


def test_slots_before_the_definition_took_effect_are_not_owed() -> None:
    # Created or edited at 10:02:30: its slots from 10:03 on are owed, not the older ones.
    owed = Owed(_schedule(), T0 + timedelta(minutes=2, seconds=30))
    assert _missing([owed]) == _minutes(3, 4, 5)


def test_paused_periods_owe_nothing() -> None:
    paused = _schedule(paused=True)
    # Paused at 10:03: slots before the pause were owed, none after.
    assert _missing([Owed(paused, T0 - timedelta(days=1), T0 + timedelta(minutes=3))]) == \
        _minutes(1, 2)
    # A held document (a job write in flight) owes nothing from the hold on either.
    held = Owed(_schedule(), T0 - timedelta(days=1), T0 + timedelta(minutes=2))
    assert _missing([held]) == _minutes(1)
    # Paused with no known start: nothing at all. Resumed at 10:04: from then on.
    assert _missing([Owed(paused, T0 - timedelta(days=1))]) == []
    assert _missing([Owed(_schedule(), T0 + timedelta(minutes=4))]) == _minutes(4, 5)


def test_a_one_shot_is_owed_once_at_its_time_and_only_without_a_record() -> None:
    at = T0 + timedelta(minutes=2, seconds=10)  # its fire time is `at` itself
    one_shot = _schedule("o", at=at.isoformat())
    assert _missing([Owed(one_shot, T0 - timedelta(hours=1))]) == [at]
    recorded = {execution_id("o", at)}
    assert _missing([Owed(one_shot, T0 - timedelta(hours=1))], recorded) == []
    # Created after its own time (or outside the window): owed nothing.
    assert _missing([Owed(one_shot, T0 + timedelta(minutes=4))]) == []
    assert slots_in(one_shot, END, END + timedelta(days=400)) == []


def test_manual_runs_are_never_owed_and_never_account_for_a_slot() -> None:
    manual = {execution_id("s", t, "manual") for t in _minutes(1, 2, 3, 4, 5)}
    assert _missing([Owed(_schedule(), T0 - timedelta(days=1))], manual) == _minutes(1, 2, 3, 4, 5)


def test_slots_follow_the_cron_and_time_zone_the_worker_uses() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29: the 02:30 slot does not exist that day.
    berlin = _schedule(cron="30 * * * *", timezone="Europe/Berlin")
    night = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 Berlin
    slots = slots_in(berlin, night - timedelta(minutes=1), night + timedelta(hours=2))
    assert [s.astimezone(UTC).hour for s in slots] == [0, 1]  # 01:30 CET, 03:30 CEST


def test_catch_up_policies_decide_whether_a_late_slot_may_still_start() -> None:
    slot = _minutes(1)[0]
    every = _schedule()
    assert missed_reason(every, "all", timedelta(minutes=15), slot, slot + timedelta(seconds=30)) \
        is None
    assert "catch-up window" in str(missed_reason(every, "all", timedelta(minutes=1), slot,
                                                  slot + timedelta(minutes=2)))
    assert "catchup is none" in str(missed_reason(every, "none", timedelta(minutes=15), slot,
                                                  slot + timedelta(seconds=90)))
    assert missed_reason(every, "latest", timedelta(minutes=15), slot,
                         slot + timedelta(seconds=30)) is None
    assert "superseded" in str(missed_reason(every, "latest", timedelta(minutes=15), slot,
                                             slot + timedelta(seconds=61)))
