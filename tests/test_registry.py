"""The schedule registry the control module writes for the audit (`scheduler.registry`), on the
Firestore and Cloud Scheduler emulators: what each operation leaves owed, so that the audit
never owes a slot of a definition the job did not run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.config import Settings
from scheduler.control import SchedulerControl, with_registry
from scheduler.model import one_shot_slot
from scheduler.registry import ScheduleRegistry
from scheduler.validation import parse_schedule

pytestmark = pytest.mark.emulator

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def control(cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
            project_id: str) -> Iterator[SchedulerControl]:
    clock = [T0]
    settings = Settings.from_env({}, project=project_id, location="us-central1", topic="fires",
                                 cloud_scheduler_emulator_host=cloud_scheduler_emulator.host,
                                 pubsub_emulator_host=pubsub_emulator,
                                 firestore_emulator_host=firestore_emulator,
                                 api_retry_initial="0.1s", api_retry_timeout="2s")
    with with_registry(settings) as made:
        made.clock = lambda: clock[0]
        made.advance = lambda minutes: clock.__setitem__(  # type: ignore[attr-defined]
            0, clock[0] + timedelta(minutes=minutes))
        yield made


def _schedule(sid: str, **fields: Any) -> Any:
    raw = {"id": sid, "cron": "* * * * *", "action": {"type": "http", "url": "http://x/"}}
    raw.update(fields)
    return parse_schedule(raw)


def _registry(control: SchedulerControl) -> ScheduleRegistry:
    assert control.registry is not None
    return control.registry


def test_sync_upsert_pause_resume_remove_keep_what_is_owed(control: Any) -> None:
    a, b = _schedule("a"), _schedule("b", paused=True)
    assert control.reconcile([a, b]).ok
    entries = _registry(control).load()
    assert entries["a"].owed.owed_since == T0 and entries["a"].owed.paused_since is None
    assert entries["b"].owed.paused_since == T0  # paused from the start: nothing owed
    # A no-op sync writes nothing: `owed_since` stays.
    control.advance(5)
    assert control.reconcile([a, b]).ok
    assert control.upsert(a).ok
    assert _registry(control).load()["a"].owed.owed_since == T0
    # An edit: slots of the new cron are owed from the edit on, none of the old before it.
    edited = _schedule("a", cron="*/5 * * * *")
    assert control.upsert(edited).ok
    entry = _registry(control).load()["a"]
    assert entry.owed.schedule.cron == "*/5 * * * *"
    assert entry.owed.owed_since == T0 + timedelta(minutes=5)
    assert entry.owed.paused_since is None
    # Pause, then resume ten minutes later: the paused stretch owes nothing.
    control.advance(1)
    assert control.pause("a").ok
    control.advance(10)
    assert control.resume("a").ok
    entry = _registry(control).load()["a"]
    assert entry.owed.owed_since == T0 + timedelta(minutes=16)
    assert entry.owed.paused_since is None and not entry.owed.schedule.paused
    assert not entry.owed.owes(T0 + timedelta(minutes=10))
    # Removed, and pruned by a sync: forgotten.
    assert control.remove("a").ok
    assert "a" not in _registry(control).load()
    assert control.reconcile([a]).ok
    assert set(_registry(control).load()) == {"a"}


def test_a_failed_job_write_leaves_the_schedule_owing_nothing_from_then(
        control: Any, cloud_scheduler_emulator: Any) -> None:
    assert control.reconcile([_schedule("a")]).ok
    control.advance(3)
    cloud_scheduler_emulator.set_faults(1.0, ("UNAVAILABLE",), methods=["UpdateJob"])
    try:
        result = control.upsert(_schedule("a", cron="*/2 * * * *"))
    finally:
        cloud_scheduler_emulator.clear_faults()
    assert not result.ok
    entry = _registry(control).load()["a"]
    assert entry.owed.schedule.cron == "* * * * *"  # still the job's definition...
    assert entry.owed.paused_since == T0 + timedelta(minutes=3)  # ...owing nothing from then


def test_next_fire_time_is_the_first_owed_slot_and_null_while_paused(control: Any) -> None:
    soon, past = T0 + timedelta(seconds=90), T0 - timedelta(minutes=1)
    assert control.reconcile([_schedule("a"), _schedule("b", paused=True),
                              _schedule("soon", cron=None, at=soon.isoformat()),
                              _schedule("past", cron=None, at=past.isoformat())]).ok
    entries = _registry(control).load()
    assert entries["a"].next_fire_time == T0  # the slot at the moment it took effect
    assert entries["b"].next_fire_time is None
    assert entries["soon"].next_fire_time == one_shot_slot(soon)  # the tick that publishes it
    assert entries["past"].next_fire_time is None  # its slot was never owed (sync fired it)
    assert {e.owner for e in entries.values()} == {"scion-"}
    control.advance(5)
    assert control.upsert(_schedule("a", cron="*/10 * * * *")).ok
    assert _registry(control).load()["a"].next_fire_time == T0 + timedelta(minutes=10)
    assert control.pause("a").ok
    assert _registry(control).load()["a"].next_fire_time is None
    control.advance(6)
    assert control.resume("a").ok
    assert _registry(control).load()["a"].next_fire_time == T0 + timedelta(minutes=20)


def test_documents_of_another_deployment_are_neither_read_changed_nor_deleted(
        control: Any, firestore_client: Any) -> None:
    registry = _registry(control)
    other = ScheduleRegistry(firestore_client, owner="other-")  # same collection
    other.settle([_schedule("theirs")], {}, T0)
    assert control.reconcile([_schedule("a")], prune=True).ok
    assert set(registry.load()) == {"a"}
    assert registry.get("theirs") is None
    assert control.remove("theirs").ok
    theirs = other.get("theirs")
    assert theirs is not None and theirs.owner == "other-"
    assert set(other.load()) == {"theirs"}


def test_a_document_written_before_owner_existed_is_adopted_keeping_what_it_owes(
        control: Any, firestore_client: Any) -> None:
    registry = _registry(control)
    assert control.reconcile([_schedule("a")]).ok  # the job exists: a sync has no job step
    legacy = ScheduleRegistry(firestore_client)  # no owner, as every document before issue 17
    legacy.settle([_schedule("a")], {}, T0 - timedelta(hours=1))
    assert registry.load()["a"].owner is None
    assert control.reconcile([_schedule("a")]).ok
    entry = registry.load()["a"]
    assert entry.owner == "scion-"
    assert entry.owed.owed_since == T0 - timedelta(hours=1)
    control.advance(1)
    assert control.reconcile([_schedule("a")]).ok  # adopted: the next sync writes nothing
    assert registry.load()["a"].owed.owed_since == T0 - timedelta(hours=1)
