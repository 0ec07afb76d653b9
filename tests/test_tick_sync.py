"""Tick mode's sync (`scheduler.tick_sync`) on the Firestore, Pub/Sub and Cloud Scheduler
emulators: the documents are the desired state, one change is one write, a no-op sync writes
nothing, the tick job is kept in line and per-schedule jobs are deleted only after their
documents are written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulated_control import FailingClient, count_document_writes, emulated_settings

from scheduler.control import SchedulerControl, with_registry
from scheduler.gcp import publisher_client
from scheduler.registry import document_id
from scheduler.tick_control import TickControl
from scheduler.tick_sync import tick_has_fired
from scheduler.ticks import tick_job_id
from scheduler.validation import parse_schedule

pytestmark = pytest.mark.emulator

T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
ACTION = {"type": "http", "url": "https://hub.example/run"}


def _schedule(sid: str, **fields: Any) -> Any:
    return parse_schedule({"id": sid, "cron": "0 3 * * *", "action": ACTION, **fields})


def _control(emulator: Any, pubsub: str, firestore: str, project: str,
             mode: str) -> SchedulerControl:
    settings = emulated_settings(emulator, pubsub, project, firestore_emulator_host=firestore,
                                 mode=mode)
    control = with_registry(settings)
    control.clock = lambda: T0
    control.syncer.clock = control.clock
    return control


@pytest.fixture
def ticks(cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
          project_id: str) -> Iterator[TickControl]:
    control = _control(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator, project_id,
                       "ticks")
    assert isinstance(control, TickControl)
    with control:
        yield control


def test_one_change_is_one_write_and_a_noop_sync_writes_nothing(
        ticks: TickControl, cloud_scheduler_emulator: Any) -> None:
    writes = count_document_writes(ticks.ticks.registry)
    schedules = [_schedule(f"s{i}") for i in range(20)] + [_schedule("p", paused=True)]
    first = ticks.reconcile(schedules)
    assert first.ok, first.describe()
    assert writes[0] == 21  # one write per document, a paused one included
    jobs = [j.name.rsplit("/", 1)[-1] for j in ticks.syncer.owned_jobs()]
    assert jobs == [tick_job_id("scion-")]  # only the tick: no per-schedule job
    writes[0] = 0
    cloud_scheduler_emulator.call_counts.clear()
    assert ticks.reconcile(schedules).plan.is_noop
    assert writes[0] == 0 and cloud_scheduler_emulator.call_counts["CreateJob"] == 0
    edited = [*schedules[:-2], _schedule("s19", cron="0 4 * * *"), schedules[-1]]
    result = ticks.reconcile(edited)
    assert result.ok and [o.step.kind for o in result.outcomes] == ["update"]
    assert writes[0] == 1
    entry = ticks.ticks.registry.get("s19")
    assert entry is not None and entry.next_fire_time == datetime(2030, 1, 2, 4, tzinfo=UTC)


def test_a_description_change_keeps_what_is_owed_and_next_fire_time(ticks: TickControl) -> None:
    assert ticks.reconcile([_schedule("a")]).ok
    ref = ticks.ticks.registry.collection.document(document_id("a"))
    later = datetime(2030, 1, 2, 3, tzinfo=UTC)
    ref.update({"next_fire_time": later})  # as the tick advances it
    assert ticks.reconcile([_schedule("a", description="now described")]).ok
    entry = ticks.ticks.registry.get("a")
    assert entry is not None and entry.next_fire_time == later
    assert entry.owed.schedule.description == "now described"
    assert entry.owed.owed_since == T0


def test_per_schedule_jobs_go_after_documents_and_tick_job_are_in_place(
        cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
        project_id: str) -> None:
    jobs = _control(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator, project_id,
                    "jobs")
    schedules = [_schedule("a"), _schedule("b", paused=True)]
    with jobs:
        assert jobs.reconcile(schedules).ok
    ticks = _control(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator, project_id,
                     "ticks")
    with ticks:
        cloud_scheduler_emulator.set_faults(1.0, ("UNAVAILABLE",), methods=["CreateJob"])
        try:
            failed = ticks.reconcile(schedules)
        finally:
            cloud_scheduler_emulator.clear_faults()
        assert not failed.ok  # no tick job: the per-schedule jobs keep publishing
        assert len(ticks.syncer.owned_jobs()) == 2
        created = ticks.reconcile(schedules)
        assert created.ok, created.describe()
        # The tick job exists but has not fired yet: the jobs stay until it has.
        assert created.plan.kept == ("scion-a", "scion-b")
        assert len(ticks.syncer.owned_jobs()) == 3
        tick_name = f"{ticks.settings.location_path}/jobs/{tick_job_id('scion-')}"
        ticks.syncer.client.run_job(name=tick_name)  # as its next minute would
        deadline = time.monotonic() + 30
        while not tick_has_fired(ticks.syncer.get_job(tick_job_id("scion-"))):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        result = ticks.reconcile(schedules)
        assert result.ok, result.describe()
        assert [o.step.kind for o in result.outcomes] == ["delete", "delete"]
        names = [j.name.rsplit("/", 1)[-1] for j in ticks.syncer.owned_jobs()]
        assert names == [tick_job_id("scion-")]
        listed = {i.schedule_id: i.state for i in ticks.list_jobs()}
        assert listed == {"a": "ENABLED", "b": "PAUSED"}


def test_a_past_due_one_shot_is_fired_once_as_expired_and_its_document_owes_nothing(
        ticks: TickControl) -> None:
    publisher = publisher_client(ticks.settings)
    publisher.create_topic(name=ticks.settings.topic_path)
    past = _schedule("once", cron=None, at=(T0 - timedelta(minutes=2)).isoformat())
    result = ticks.reconcile([past])
    assert result.ok
    fires = [o for o in result.outcomes if o.step.kind == "fire"]
    assert len(fires) == 1 and "expired" in fires[0].step.reason
    entry = ticks.ticks.registry.get("once")
    assert entry is not None and entry.next_fire_time is None
    again = ticks.reconcile([past])
    assert again.plan.is_noop  # the document stands for the fire: never fired twice


def test_a_failed_document_write_leaves_the_document_as_it_was(ticks: TickControl) -> None:
    # Tick mode's upsert is one write, so there is no second write to undo (jobs mode's
    # tests/test_control_upsert.py): a failed commit changes nothing and is reported.
    assert ticks.upsert(_schedule("a")).ok
    registry = ticks.ticks.registry
    working = registry.client
    registry.client = FailingClient(working)
    try:
        result = ticks.upsert(_schedule("a", cron="0 4 * * *", paused=True))
    finally:
        registry.client = working
    assert not result.ok and "injected" in result.failed[0].error
    entry = registry.get("a")
    assert entry is not None and entry.owed.schedule.cron == "0 3 * * *"
    assert not entry.owed.schedule.paused and entry.owed.paused_since is None
    assert ticks.upsert(_schedule("a", cron="0 4 * * *", paused=True)).ok  # the next one lands
