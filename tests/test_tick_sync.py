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

from scheduler.contract import ATTR_SCHEDULE_ID
from scheduler.control import SchedulerControl, with_registry
from scheduler.gcp import publisher_client
from scheduler.jobs import attributes_of
from scheduler.migrate import migrate
from scheduler.naming import job_id_of, job_name
from scheduler.registry import document_id
from scheduler.reserved import TICK_SCHEDULE_ID
from scheduler.tick_control import TickControl
from scheduler.tick_sync import tick_has_fired, tick_job
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
        _fire_the_tick(ticks)
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


def _fire_the_tick(control: SchedulerControl) -> None:
    """Run the tick job now, as its next minute would, and wait until it shows as fired."""
    control.syncer.client.run_job(name=job_name(control.spec.location_path, TICK_ID))
    deadline = time.monotonic() + 30
    while not tick_has_fired(control.syncer.get_job(TICK_ID)):
        assert time.monotonic() < deadline
        time.sleep(0.2)


TICK_ID = tick_job_id("scion-")
# The tick job's ID in earlier versions, which is also the job ID of a schedule named `tick`.
FORMER_TICK_ID = "scion-tick"


def _jobs_by_schedule(control: SchedulerControl) -> dict[str, str]:
    """Every owned job's ID, by the schedule ID its message names."""
    return {job_id_of(j.name): attributes_of(j)[ATTR_SCHEDULE_ID]
            for j in control.syncer.owned_jobs()}


def _former_tick_job(control: SchedulerControl) -> None:
    """The tick job as an earlier version created it, under `{job_prefix}tick`."""
    job = tick_job(control.spec)
    job.name = job_name(control.spec.location_path, FORMER_TICK_ID)
    control.syncer.client.create_job(parent=control.spec.location_path, job=job)


def test_a_schedule_named_tick_stands_beside_the_tick_job_and_retires_the_former_one(
        ticks: TickControl) -> None:
    schedules = [_schedule("tick"), _schedule("a")]
    _former_tick_job(ticks)
    first = ticks.reconcile(schedules)
    assert first.ok, first.describe()
    # The tick has not fired yet: the former tick keeps publishing until it has.
    assert _jobs_by_schedule(ticks) == {TICK_ID: TICK_SCHEDULE_ID,
                                        FORMER_TICK_ID: TICK_SCHEDULE_ID}
    assert first.plan.kept == (FORMER_TICK_ID,)
    _fire_the_tick(ticks)
    retired = ticks.reconcile(schedules)
    assert retired.ok, retired.describe()
    assert [(o.step.kind, o.step.job_id, o.step.schedule_id) for o in retired.outcomes] == [
        ("delete", FORMER_TICK_ID, None)]
    assert _jobs_by_schedule(ticks) == {TICK_ID: TICK_SCHEDULE_ID}
    assert ticks.reconcile(schedules).plan.is_noop
    assert {i.schedule_id: i.job_id for i in ticks.list_jobs()} == {
        "tick": FORMER_TICK_ID, "a": "scion-a"}
    entry = ticks.ticks.registry.get("tick")
    assert entry is not None and entry.next_fire_time == datetime(2030, 1, 2, 3, tzinfo=UTC)


def test_jobs_mode_leaves_the_tick_job_alone_beside_a_schedule_named_tick(
        ticks: TickControl, cloud_scheduler_emulator: Any, pubsub_emulator: str,
        firestore_emulator: str, project_id: str) -> None:
    assert ticks.reconcile([]).ok  # the tick job alone
    tick_before = ticks.syncer.get_job(TICK_ID)
    jobs = _control(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator, project_id,
                    "jobs")
    with jobs:
        plan = jobs.plan([_schedule("tick")], prune=True)
        assert [(s.kind, s.job_id) for s in plan.steps] == [("create", FORMER_TICK_ID)]
        assert jobs.apply(plan).ok
        assert jobs.reconcile([_schedule("tick")], prune=True).plan.is_noop
        assert jobs.reconcile([], prune=True).ok  # the schedule's job goes, the tick stays
        assert _jobs_by_schedule(jobs) == {TICK_ID: TICK_SCHEDULE_ID}
        assert jobs.syncer.get_job(TICK_ID) == tick_before


@pytest.mark.parametrize("named_tick", [True, False])
def test_migrating_to_jobs_deletes_the_tick_under_either_id_but_a_schedules_job(
        ticks: TickControl, named_tick: bool) -> None:
    schedules = [_schedule("a")] + ([_schedule("tick")] if named_tick else [])
    assert ticks.reconcile(schedules).ok
    _former_tick_job(ticks)
    result = migrate(ticks, "jobs")
    assert result.ok, result.describe()
    wanted = {"scion-a": "a"} | ({FORMER_TICK_ID: "tick"} if named_tick else {})
    assert _jobs_by_schedule(ticks) == wanted
