"""scheduler.ticks: the reserved tick schedule, its shards, and what a minute's tick publishes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schedule_strategies import SCHEDULE_IDS

from scheduler.contract import build_message, decode_message, execution_id
from scheduler.due import Owed, missed_reason
from scheduler.model import ValidationError, one_shot_slot
from scheduler.naming import is_valid_job_id, job_id_for, schedule_id_for
from scheduler.registry import first_slot
from scheduler.reserved import TICK_ACTION_TYPE, TICK_SCHEDULE_ID, is_tick_schedule
from scheduler.ticks import (
    MAX_SLOTS_PER_DOCUMENT,
    Shard,
    Walks,
    due_before,
    fire_messages,
    is_tick_message,
    plan_document,
    shard_documents,
    tick_execution_id,
    tick_job_id,
    tick_message,
)
from scheduler.validation import parse_schedule

M = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = "k"


def cron(expr: str = "*/5 * * * *", **extra: Any) -> Any:
    return parse_schedule({"id": "report", "cron": expr,
                           "action": {"type": "http", "url": "https://hub.example.com/f"},
                           **extra})


def one_shot(at: datetime) -> Any:
    return parse_schedule({"id": "ping", "at": at.isoformat(),
                           "action": {"type": "http", "url": "https://hub.example.com/f"}})


def test_tick_message_decodes_to_the_minute_of_its_publish() -> None:
    message = tick_message(KEY)
    fire = decode_message(message.data, message.attributes, signing_key=KEY)
    assert (fire.schedule_id, fire.action.type) == (TICK_SCHEDULE_ID, TICK_ACTION_TYPE)
    minute = fire.derive_fire_time(M + timedelta(seconds=3))
    assert minute == M
    assert execution_id(fire.schedule_id, minute) == tick_execution_id(M)
    assert tick_job_id("scion-") == "scion-_tick"
    assert is_tick_message(message.attributes)
    assert not is_tick_message(build_message(cron()).attributes)


@settings(max_examples=300, deadline=None)
@given(SCHEDULE_IDS | st.just("tick") | st.just("_tick"), st.sampled_from(["scion-", "a", "x_"]))
def test_no_schedule_id_has_the_tick_jobs_id(schedule_id: str, prefix: str) -> None:
    # A schedule `tick` had it once: `{prefix}tick` was both (issue 17's loose end).
    assert job_id_for(schedule_id, prefix) != tick_job_id(prefix)
    assert schedule_id_for(tick_job_id(prefix), prefix) is None
    assert is_valid_job_id(tick_job_id(prefix))


def test_user_schedules_can_never_be_the_tick() -> None:
    with pytest.raises(ValidationError, match="printable"):
        parse_schedule({"id": TICK_SCHEDULE_ID, "cron": "* * * * *",
                        "action": {"type": "http", "url": "https://hub.example.com/f"}})
    with pytest.raises(ValidationError, match="tick"):
        parse_schedule({"id": "sneaky", "cron": "* * * * *", "action": {"type": "tick"}})
    assert not is_tick_schedule("sneaky")
    with pytest.raises(ValueError, match="not the tick"):
        shard_documents("sneaky", {})
    with pytest.raises(ValueError, match="not the tick"):
        shard_documents("sneaky", {"documents": ["a"]})


def test_shard_round_trip_and_stable_id() -> None:
    shard = Shard(M, ("a" * 64, "b" * 64))
    message = shard.message(KEY)
    fire = decode_message(message.data, message.attributes, signing_key=KEY)
    assert fire.schedule_id == shard.schedule_id and is_tick_schedule(fire.schedule_id)
    assert fire.derive_fire_time(M + timedelta(minutes=3)) == M
    assert execution_id(fire.schedule_id, M) == shard.execution_id
    assert shard_documents(fire.schedule_id, fire.action.params) == shard.documents
    assert shard_documents(TICK_SCHEDULE_ID, {}) is None
    assert Shard(M, ("c",)).execution_id != shard.execution_id
    with pytest.raises(ValueError):
        shard_documents(shard.schedule_id, {"documents": ["c" * 64]})


def test_a_shard_delivered_after_the_next_minute_still_runs() -> None:
    # The tick of M is superseded by the tick of M+1; its shards, the rest of a claimed tick,
    # are not (within the catch-up window).
    later = M + timedelta(minutes=3)
    tick = decode_message(tick_message(KEY).data, tick_message(KEY).attributes, signing_key=KEY)
    assert missed_reason(tick, tick.catchup, tick.catchup_window, M, later) is not None
    message = Shard(M, ("a" * 64,)).message(KEY)
    shard = decode_message(message.data, message.attributes, signing_key=KEY)
    assert missed_reason(shard, shard.catchup, shard.catchup_window, M, later) is None
    assert missed_reason(shard, shard.catchup, shard.catchup_window, M,
                         M + shard.catchup_window + timedelta(seconds=1)) is not None


def test_fire_messages_carry_the_slot_and_the_jobs_execution_id() -> None:
    schedule = cron()
    slot = M + timedelta(minutes=5)
    [message] = fire_messages(schedule, [slot], KEY)
    fire = decode_message(message.data, message.attributes, signing_key=KEY)
    assert fire.trigger == "scheduled"
    derived = fire.derive_fire_time(M + timedelta(minutes=9))
    assert derived == slot
    assert execution_id(fire.schedule_id, derived, fire.trigger) == execution_id("report", slot)


@pytest.mark.parametrize("key", [KEY, None])
def test_fire_messages_are_the_messages_build_message_makes(key: str | None) -> None:
    # Built from one template per schedule: byte for byte each slot's own `build_message`.
    schedule = cron()
    slots = [M + timedelta(minutes=n) for n in range(3)]
    assert fire_messages(schedule, slots, key) == [
        build_message(schedule, signing_key=key, fire_time=slot) for slot in slots]
    assert fire_messages(schedule, [], key) == []


def test_cron_document_publishes_every_slot_since_and_advances() -> None:
    owed = Owed(cron(), M - timedelta(hours=1))
    assert plan_document(owed, M + timedelta(minutes=5), M) is None
    plan = plan_document(owed, M, M)
    assert plan is not None and plan.slots == (M,)
    assert plan.next_fire_time == M + timedelta(minutes=5) and not plan.skipped
    # A missed tick: the next one publishes every slot since.
    plan = plan_document(owed, M - timedelta(minutes=10), M)
    assert plan is not None
    assert plan.slots == tuple(M - timedelta(minutes=m) for m in (10, 5, 0))


def test_catch_up_is_bounded_by_the_window() -> None:
    owed = Owed(cron("* * * * *", catchup_window="10m"), M - timedelta(days=30))
    plan = plan_document(owed, M - timedelta(days=2), M)
    assert plan is not None and plan.skipped
    assert plan.slots[0] == M - timedelta(minutes=11) and plan.slots[-1] == M
    owed = Owed(cron("* * * * *", catchup_window="30d"), M - timedelta(days=30))
    plan = plan_document(owed, M - timedelta(days=2), M)
    assert plan is not None and plan.skipped and len(plan.slots) == MAX_SLOTS_PER_DOCUMENT


def test_slots_left_out_are_returned_to_be_recorded_missed() -> None:
    # Beyond the window: every owed slot from the next fire time to the window's edge (less the
    # minute's grace), none published, each one the pipeline would have recorded missed.
    owed = Owed(cron("*/5 * * * *", catchup_window="10m"), M - timedelta(days=30))
    plan = plan_document(owed, M - timedelta(minutes=30), M)
    assert plan is not None and plan.skipped
    assert plan.missed == tuple(M - timedelta(minutes=m) for m in (30, 25, 20, 15))
    assert plan.slots == (M - timedelta(minutes=10), M - timedelta(minutes=5), M)
    late = M + timedelta(seconds=5)
    assert all(missed_reason(owed.schedule, "all", timedelta(minutes=10), slot, late)
               for slot in plan.missed)
    # Nothing left out: nothing missed.
    plan = plan_document(owed, M - timedelta(minutes=10), M)
    assert plan is not None and plan.missed == () and not plan.skipped


def test_slots_left_out_are_only_those_owed() -> None:
    schedule = cron("*/5 * * * *", catchup_window="10m")
    since_edit = Owed(schedule, M - timedelta(minutes=22))
    plan = plan_document(since_edit, M - timedelta(hours=1), M)
    assert plan is not None
    assert plan.missed == (M - timedelta(minutes=20), M - timedelta(minutes=15))
    held = Owed(schedule, M - timedelta(hours=1), M - timedelta(minutes=48))
    plan = plan_document(held, M - timedelta(hours=1), M)
    assert plan is not None and plan.slots == ()
    assert plan.missed == tuple(M - timedelta(minutes=m) for m in (60, 55, 50))


def test_slots_left_out_are_the_newest_within_the_bound() -> None:
    # A year of a minutely cron: only the newest MAX_SLOTS_PER_DOCUMENT, walked back from the
    # window's edge, never the whole year.
    owed = Owed(cron("* * * * *", catchup_window="10m"), M - timedelta(days=400))
    plan = plan_document(owed, M - timedelta(days=365), M)
    assert plan is not None and len(plan.missed) == MAX_SLOTS_PER_DOCUMENT
    assert plan.missed[-1] == M - timedelta(minutes=12)
    assert plan.missed[0] == M - timedelta(minutes=11 + MAX_SLOTS_PER_DOCUMENT)
    # Within the window but past the bound: the older ones are left out too.
    owed = Owed(cron("* * * * *", catchup_window="30d"), M - timedelta(days=30))
    plan = plan_document(owed, M - timedelta(minutes=1_500), M)
    assert plan is not None and len(plan.slots) == MAX_SLOTS_PER_DOCUMENT
    assert plan.missed == tuple(M - timedelta(minutes=m) for m in range(1_500, 999, -1))
    # A yearly slot months late (the jobs-mode fire the pipeline records missed).
    yearly = Owed(cron("0 9 1 2 *"), M - timedelta(days=400))
    plan = plan_document(yearly, datetime(2026, 2, 1, 9, tzinfo=UTC), M)
    assert plan is not None and plan.slots == ()
    assert plan.missed == (datetime(2026, 2, 1, 9, tzinfo=UTC),)
    assert plan.next_fire_time == datetime(2027, 2, 1, 9, tzinfo=UTC)


def test_slots_not_owed_are_not_published() -> None:
    schedule = cron()
    paused = replace(schedule, paused=True)
    assert plan_document(Owed(paused, M - timedelta(hours=1), M), M, M) is None
    held = Owed(schedule, M - timedelta(hours=1), M - timedelta(minutes=7))
    plan = plan_document(held, M - timedelta(minutes=10), M)
    assert plan is not None and plan.slots == (M - timedelta(minutes=10),)
    late_definition = Owed(schedule, M - timedelta(minutes=3))
    plan = plan_document(late_definition, M - timedelta(minutes=10), M)
    assert plan is not None and plan.slots == (M,)


def test_a_shared_walk_plans_each_document_as_its_own_walk_would() -> None:
    # One tick's memo of cron walks: documents of one cron share a walk, but each keeps its
    # own owed span, and other crons, time zones and starts walk on their own.
    walks = Walks()
    documents = [
        (Owed(cron(), M - timedelta(hours=1)), M - timedelta(minutes=10)),
        (Owed(cron(), M - timedelta(minutes=3)), M - timedelta(minutes=10)),
        (Owed(cron(), M - timedelta(hours=1), M - timedelta(minutes=7)), M - timedelta(minutes=10)),
        (Owed(cron("*/3 * * * *"), M - timedelta(hours=1)), M - timedelta(minutes=10)),
        (Owed(cron(timezone="Asia/Kolkata"), M - timedelta(hours=1)), M - timedelta(minutes=10)),
        (Owed(cron(), M - timedelta(hours=1)), M - timedelta(minutes=5)),
    ]
    for owed, next_fire_time in documents:
        assert plan_document(owed, next_fire_time, M, walks) == plan_document(
            owed, next_fire_time, M)
    assert len(walks.forward) == 4


@pytest.mark.parametrize("seconds", [31, 60, 89])
def test_one_shot_is_published_by_the_tick_of_its_jobs_minute(seconds: int) -> None:
    at = M + timedelta(seconds=seconds)
    assert one_shot_slot(at) == M
    owed = Owed(one_shot(at), M - timedelta(hours=1))
    stored = first_slot(owed.schedule, owed.owed_since, None)
    assert stored == M < due_before(M)  # read by the tick of M, and by none before
    assert not stored < due_before(M - timedelta(minutes=1))
    assert plan_document(owed, stored, M - timedelta(minutes=1)) is None
    # As written by earlier versions (`at`): published by the same tick.
    assert plan_document(owed, at, M) == plan_document(owed, stored, M)
    plan = plan_document(owed, stored, M)
    assert plan is not None and plan.slots == (at,) and plan.next_fire_time is None
    # Late: a later tick still publishes it; the pipeline judges it.
    plan = plan_document(owed, stored, M + timedelta(minutes=3))
    assert plan is not None and plan.slots == (at,)


def test_one_shot_not_owed_is_dropped() -> None:
    at = M + timedelta(seconds=40)
    plan = plan_document(Owed(one_shot(at), at + timedelta(seconds=1)), at, M)
    assert plan is not None and plan.slots == () and plan.next_fire_time is None
