"""The control module's sync against the Cloud Scheduler emulator through the official client (and
the Pub/Sub emulator for fires), in jobs and ticks mode (helpers: `sync_schedules`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from emulated_control import KEY, emulated_settings
from emulator_helpers import pull_until
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2
from sync_schedules import ACTION, edit, from_file, make, raw

from scheduler.config import Settings
from scheduler.contract import Fire, decode_message
from scheduler.control import JobNotFound, SchedulerControl, with_registry
from scheduler.gcp import publisher_client, subscriber_client
from scheduler.jobs import diff_mask
from scheduler.sync import WRITE_METHODS, Failure, Syncer
from scheduler.validation import parse_schedule, validate_schedules

# -- against the emulators ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """An earlier test may have pointed structlog at a captured stream that is closed by now."""
    structlog.reset_defaults()


@pytest.fixture
def settings(cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str) -> Settings:
    return emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id)


@pytest.fixture(params=["jobs", "ticks"])
def control(request: pytest.FixtureRequest, settings: Settings) -> Iterator[SchedulerControl]:
    """The control module in both modes (issue 17); tick mode's on the Firestore emulator."""
    if request.param == "ticks":
        firestore = request.getfixturevalue("firestore_emulator")
        made = with_registry(settings.with_overrides(mode="ticks",
                                                     firestore_emulator_host=firestore))
    else:
        made = SchedulerControl(settings)
    with made as c:
        yield c


def jobs_only(control: SchedulerControl) -> None:
    """Skip, in tick mode, a test about per-schedule Cloud Scheduler jobs (their calls, pages,
    faults and hand edits): tick mode has none; its documents are tested in
    tests/test_tick_sync.py."""
    if control.settings.mode == "ticks":
        pytest.skip("about per-schedule Cloud Scheduler jobs, which tick mode does not have")


def writes(emu: Any) -> int:
    return sum(emu.call_counts[m] for m in WRITE_METHODS)


def foreign_job(control: SchedulerControl, job_id: str) -> scheduler_v1.Job:
    """A job another deployment owns, created straight through the client."""
    return control.syncer.client.create_job(
        parent=control.settings.location_path,
        job=scheduler_v1.Job(
            name=f"{control.settings.location_path}/jobs/{job_id}",
            schedule="0 5 * * *",
            time_zone="UTC",
            pubsub_target=scheduler_v1.PubsubTarget(
                topic_name=control.settings.topic_path, data=b"theirs"
            ),
        ),
    )


@pytest.mark.emulator
def test_200_schedules_sync_then_noop_then_one_update_then_one_delete(
    control: SchedulerControl, cloud_scheduler_emulator: Any, tmp_path: Path
) -> None:
    jobs_only(control)
    emu = cloud_scheduler_emulator
    theirs = [foreign_job(control, "other-report"), foreign_job(control, "scion_lookalike")]
    emu.call_counts.clear()  # count this module's calls only
    schedules = from_file(tmp_path / "schedules.yaml", 200)
    assert schedules == make(200)

    first = control.reconcile(schedules, prune=True)
    assert first.ok, first.describe()
    assert first.plan.counts()["create"] == 200 and len(first.plan.steps) == 200
    assert emu.call_counts["CreateJob"] == 200 and writes(emu) == 200
    assert len(control.list_jobs()) == 200

    before = Counter(emu.call_counts)
    again = control.reconcile(schedules, prune=True)
    assert again.plan.is_noop and again.plan.unchanged == 200 and again.plan.foreign == 2
    assert again.outcomes == ()
    assert writes(emu) == 200  # not one write call
    assert emu.call_counts["ListJobs"] - before["ListJobs"] == 1  # one page of up to 500

    changed = list(schedules)
    changed[7] = edit(schedules[7], cron="15 4 * * *")
    plan = control.plan(changed)
    assert [(s.kind, s.job_id, s.update_mask) for s in plan.steps] == [
        ("update", "scion-sched-007", ("schedule", "pubsub_target.attributes")),
    ]
    assert control.apply(plan).ok
    assert emu.call_counts["UpdateJob"] == 1 and writes(emu) == 201
    assert control.describe("sched-007").schedule == "15 4 * * *"

    remaining = changed[:-1]
    kept = control.plan(remaining, prune=False)
    assert kept.is_noop and kept.kept == ("scion-sched-199",)
    pruned = control.reconcile(remaining, prune=True)
    assert [(s.kind, s.schedule_id) for s in pruned.plan.steps] == [("delete", "sched-199")]
    assert pruned.ok and emu.call_counts["DeleteJob"] == 1 and writes(emu) == 202

    for job in theirs:  # survived every sync, unchanged
        assert control.syncer.client.get_job(name=job.name).pubsub_target.data == b"theirs"
    assert control.plan(remaining, prune=True).is_noop


@pytest.mark.emulator
def test_plan_pages_through_the_listing(control: SchedulerControl, cloud_scheduler_emulator: Any,
                                        tmp_path: Path) -> None:
    jobs_only(control)
    emu = cloud_scheduler_emulator
    schedules = from_file(tmp_path / "schedules.yaml", 200)
    paged = Syncer.from_settings(control.syncer.client, control.settings, list_page_size=50)
    first = paged.apply(paged.plan(schedules))
    assert first.ok and len(first.outcomes) == 200
    before = Counter(emu.call_counts)
    again = paged.plan(schedules)
    calls = Counter(emu.call_counts) - before
    assert calls == Counter({"ListJobs": 4})  # 200 jobs, 50 a page, and nothing else
    assert again.is_noop and again.unchanged == 200
    with pytest.raises(ValueError, match="list_page_size"):
        Syncer.from_settings(control.syncer.client, control.settings, list_page_size=501)


@pytest.mark.emulator
def test_reconcile_puts_hand_edited_jobs_back(control: SchedulerControl) -> None:
    jobs_only(control)
    client = control.syncer.client
    schedules = make(5)
    assert control.reconcile(schedules).ok
    name = control.spec.job_name
    client.update_job(job=scheduler_v1.Job(name=name("sched-000"), schedule="*/5 * * * *"),
                      update_mask=field_mask_pb2.FieldMask(paths=["schedule"]))
    client.update_job(job=scheduler_v1.Job(name=name("sched-001"),
                                           retry_config=scheduler_v1.RetryConfig(retry_count=0)),
                      update_mask=field_mask_pb2.FieldMask(paths=["retry_config"]))
    client.pause_job(name=name("sched-002"))
    client.delete_job(name=name("sched-003"))
    tampered = client.get_job(name=name("sched-004"))
    tampered.pubsub_target.data = b'{"action":{"type":"http","url":"https://evil.example/"}}'
    client.update_job(
        job=tampered, update_mask=field_mask_pb2.FieldMask(paths=["pubsub_target.data"])
    )

    result = control.reconcile(schedules)
    assert result.ok, result.describe()
    assert sorted((s.job_id, s.kind, s.update_mask) for s in result.plan.steps) == [
        ("scion-sched-000", "update", ("schedule",)),
        ("scion-sched-001", "update", ("retry_config",)),
        ("scion-sched-002", "resume", ()),
        ("scion-sched-003", "create", ()),
        ("scion-sched-004", "update", ("pubsub_target.data",)),
    ]
    assert control.plan(schedules).is_noop
    for schedule in schedules:
        job = client.get_job(name=name(schedule.id))
        assert diff_mask(job, control.spec.desired_job(schedule)) == ()
        assert job.state == scheduler_v1.Job.State.ENABLED


@pytest.mark.emulator
@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"])
def test_sync_converges_under_injected_faults_and_reports_retries(
    control: SchedulerControl, cloud_scheduler_emulator: Any, code: str
) -> None:
    jobs_only(control)
    """Each code sync.RETRYABLE claims to retry, injected on its own so none hides behind
    another."""
    emu = cloud_scheduler_emulator
    schedules = make(30) + make(10, start=30, paused=True)
    emu.set_faults(0.3, codes=(code,), seed=7)
    result = control.reconcile(schedules)
    assert result.ok, result.describe()
    retried = [c for o in result.outcomes for c in o.retries] + list(result.plan.list_retries)
    assert retried and set(retried) == {code}
    assert result.retries == len(retried) == result.to_dict()["retries"]
    assert any(o["retries"] for o in result.to_dict()["outcomes"])

    changed = [edit(s, description="edited") for s in schedules[:10]] + schedules[10:]
    assert control.reconcile(changed).ok
    emu.clear_faults()
    final = control.plan(changed)
    assert final.is_noop and final.unchanged == 40
    paused = [j for j in control.list_jobs() if j.state == "PAUSED"]
    assert len(paused) == 10


@pytest.mark.emulator
def test_job_retry_settings_reach_the_created_jobs(settings: Settings) -> None:
    configured = settings.with_overrides(
        job_retry_count="2", job_min_backoff="7s", job_max_backoff="90s", job_max_doublings="4",
        job_max_retry_duration="10m",
    )
    [schedule] = make(1)
    with SchedulerControl(configured) as control:
        assert control.upsert(schedule).ok
        retry = control.syncer.client.get_job(name=control.spec.job_name(schedule.id)).retry_config
        assert (retry.retry_count, retry.min_backoff_duration, retry.max_backoff_duration,
                retry.max_doublings, retry.max_retry_duration) == (
            2, timedelta(seconds=7), timedelta(seconds=90), 4, timedelta(minutes=10))
        assert control.plan([schedule]).is_noop  # read back, the job matches: no drift
    with SchedulerControl(settings) as control:  # the defaults differ, so that is an update
        [step] = control.plan([schedule]).steps
        assert (step.kind, step.update_mask) == ("update", ("retry_config",))


@pytest.mark.emulator
def test_from_env_builds_a_working_control(cloud_scheduler_emulator: Any, project_id: str) -> None:
    environ = {
        "SCION_SCHEDULER_PROJECT": project_id,
        "SCION_SCHEDULER_LOCATION": "europe-west1",
        "SCION_SCHEDULER_TOPIC": "fires",
        "CLOUD_SCHEDULER_EMULATOR_HOST": cloud_scheduler_emulator.host,
    }
    [schedule] = make(1)
    with SchedulerControl.from_env(environ) as control:
        assert control.list_jobs() == []
        assert control.upsert(schedule).ok
        [info] = control.list_jobs()
        assert (info.schedule_id, info.state) == (schedule.id, "ENABLED")
        assert info.topic == f"projects/{project_id}/topics/fires"
    assert cloud_scheduler_emulator.call_counts["CreateJob"] == 1
    assert cloud_scheduler_emulator.store.names() == [
        f"projects/{project_id}/locations/europe-west1/jobs/scion-{schedule.id}"]


@pytest.mark.emulator
def test_applying_the_same_plan_twice_is_safe(control: SchedulerControl) -> None:
    jobs_only(control)
    client = control.syncer.client
    enabled, paused = make(1)[0], make(1, start=1, paused=True)[0]
    orphan = make(1, start=2)[0]
    assert control.upsert(orphan).ok
    plan = control.plan([enabled, paused], prune=True)
    assert sorted(s.kind for s in plan.steps) == ["create", "create", "delete", "pause"]
    assert control.apply(plan).ok
    # Someone edits the job in between: the repeated create converges it by update.
    client.update_job(
        job=scheduler_v1.Job(name=control.spec.job_name(enabled.id), schedule="1 1 * * *"),
        update_mask=field_mask_pb2.FieldMask(paths=["schedule"]),
    )
    second = control.apply(plan)
    assert second.ok, second.describe()
    notes = {(o.step.kind, o.step.job_id): o.note for o in second.outcomes}
    assert notes[("create", "scion-sched-000")] == "already existed; converged by update [schedule]"
    assert notes[("create", "scion-sched-001")] == "already existed; already up to date"
    assert notes[("pause", "scion-sched-001")] == "already paused"
    assert notes[("delete", "scion-sched-002")] == "already gone"
    assert control.plan([enabled, paused], prune=True).is_noop


@pytest.mark.emulator
def test_upsert_and_remove_touch_one_job_without_listing(
    control: SchedulerControl, cloud_scheduler_emulator: Any
) -> None:
    jobs_only(control)
    emu = cloud_scheduler_emulator
    [s] = make(1)

    def calls(action: Callable[[], Any]) -> Counter[str]:
        before = Counter(emu.call_counts)
        action()
        return Counter(emu.call_counts) - before

    assert calls(lambda: control.upsert(s)) == Counter({"GetJob": 1, "CreateJob": 1})
    assert calls(lambda: control.upsert(s)) == Counter({"GetJob": 1})
    described = edit(s, description="now described")
    result = control.upsert(described)
    assert [(x.kind, x.update_mask) for x in result.plan.steps] == [("update", ("description",))]
    assert calls(lambda: control.upsert(edit(described, paused=True))) == Counter(
        {"GetJob": 1, "PauseJob": 1}
    )
    moved = edit(described, cron="7 7 * * *")
    assert calls(lambda: control.upsert(moved)) == Counter(
        {"GetJob": 1, "UpdateJob": 1, "ResumeJob": 1}
    )
    assert calls(lambda: control.remove(s.id)) == Counter({"DeleteJob": 1})
    again = control.remove(s.id)
    assert again.ok and again.outcomes[0].note == "already gone"
    assert emu.call_counts["ListJobs"] == 0


@pytest.mark.emulator
def test_one_shot_job_is_deleted_once_its_time_and_grace_have_passed(settings: Settings) -> None:
    clock = [datetime.now(UTC)]
    at = (clock[0] + timedelta(hours=2)).replace(second=0, microsecond=0)
    once = parse_schedule({"id": "once", "at": at.isoformat(), "action": ACTION})
    with SchedulerControl(settings, clock=lambda: clock[0]) as control:
        assert [s.kind for s in control.reconcile([once]).plan.steps] == ["create"]
        assert control.describe("once").next_fires == (at,)
        clock[0] = at + timedelta(minutes=5)
        assert control.plan([once]).is_noop  # still within the grace
        clock[0] = at + timedelta(minutes=16)  # past the grace and the catch-up window
        result = control.reconcile([once])
        assert [(s.kind, s.schedule_id) for s in result.plan.steps] == [("delete", "once")]
        assert result.ok
        assert control.plan([once]).expired == ("once",)
        assert control.upsert(once).plan.is_noop
        with pytest.raises(JobNotFound):
            control.describe("once")


@pytest.mark.emulator
def test_digest_named_job_round_trip(control: SchedulerControl) -> None:
    long_id = "ü" * 256
    schedule = parse_schedule({"id": long_id, "cron": "0 3 * * *", "action": ACTION})
    assert control.reconcile([schedule]).ok
    [info] = control.list_jobs()
    assert info.job_id.startswith("scion-__") and info.schedule_id == long_id
    assert control.plan([schedule]).is_noop
    [step] = control.plan([]).steps
    assert (step.kind, step.schedule_id) == ("delete", long_id)


@pytest.mark.emulator
def test_a_step_that_keeps_failing_is_reported_and_does_not_stop_the_others(
    settings: Settings, cloud_scheduler_emulator: Any
) -> None:
    quick = settings.with_overrides(api_retry_timeout="0.3s")
    with SchedulerControl(quick) as control:
        assert control.reconcile(make(2)).ok
        cloud_scheduler_emulator.set_faults(1.0, codes=("UNAVAILABLE",), methods=["CreateJob"])
        result = control.reconcile(make(4, paused=True))
        cloud_scheduler_emulator.clear_faults()
    by_step = {(o.step.kind, o.step.job_id): o for o in result.outcomes}
    assert not result.ok
    assert by_step[("pause", "scion-sched-000")].ok and by_step[("pause", "scion-sched-001")].ok
    create = by_step[("create", "scion-sched-002")]
    assert create.status == "failed" and "UNAVAILABLE" in create.retries and create.error
    assert (create.failure, create.http_status) == (Failure.GAVE_UP, 503)
    assert by_step[("pause", "scion-sched-002")].status == "skipped"


@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_end_to_end_fires_once_per_slot_runs_now_and_paused_stays_silent(
    control: SchedulerControl, settings: Settings
) -> None:
    jobs_only(control)
    publisher, subscriber = publisher_client(settings), subscriber_client(settings)
    publisher.create_topic(name=settings.topic_path)
    subscriber.create_subscription(name=settings.subscription_path, topic=settings.topic_path)
    schedules = validate_schedules([
        {"id": "every-minute", "cron": "* * * * *", "action": ACTION},
        {"id": "paused-minute", "cron": "* * * * *", "action": ACTION, "paused": True},
        {"id": "manual", "cron": "0 3 1 1 *", "action": ACTION},
    ])
    # Keep the create-then-pause of the paused job clear of a minute boundary.
    while datetime.now(UTC).second >= 55:
        time.sleep(0.5)
    assert control.reconcile(schedules).ok
    synced = datetime.now(UTC)
    first_slot = synced.replace(second=0, microsecond=0) + timedelta(minutes=1)

    run = control.run_now("manual")

    def decoded(messages: list[Any]) -> list[tuple[Fire, datetime]]:
        return [(decode_message(m.data, dict(m.attributes), signing_key=KEY), m.publish_time)
                for m in messages]

    messages = pull_until(
        subscriber,
        settings.subscription_path,
        lambda got: any(f.trigger == "manual" for f, _ in decoded(got)),
        timeout=30,
    )
    manual = [f for f, _ in decoded(messages) if f.trigger == "manual"]
    assert len(manual) == 1 and manual[0].schedule_id == "manual"
    assert manual[0].fire_time == run.fire_time

    wait = (first_slot + timedelta(seconds=15) - datetime.now(UTC)).total_seconds()
    messages += pull_until(
        subscriber, settings.subscription_path, lambda got: False, timeout=max(wait, 0)
    )
    fires = decoded(messages)
    scheduled = [(f, published) for f, published in fires if f.trigger == "scheduled"]
    assert {f.schedule_id for f, _ in scheduled} == {"every-minute"}
    slots = Counter(f.derive_fire_time(published) for f, published in scheduled)
    assert first_slot in slots
    assert all(count == 1 for count in slots.values()), slots
    assert len([f for f, _ in fires if f.trigger == "manual"]) == 1
    publisher.stop()
    subscriber.close()


def test_a_sync_that_pauses_and_edits_pauses_first_and_stops_there_on_failure(
    control: SchedulerControl, cloud_scheduler_emulator: Any,
) -> None:
    jobs_only(control)
    """The job never fires a paused schedule's new definition: its pause goes before its update,
    and a failed pause leaves the job exactly as it was (the next sync tries again)."""
    [before] = make(1)
    assert control.reconcile([before]).ok
    edited = parse_schedule({**raw(1)[0], "cron": "30 4 * * *", "paused": True})
    assert [s.kind for s in control.plan([edited]).steps] == ["pause", "update"]
    cloud_scheduler_emulator.set_faults(1.0, codes=("UNAVAILABLE",), methods=["PauseJob"])
    result = control.reconcile([edited])
    assert [(o.step.kind, o.status) for o in result.outcomes] == [
        ("pause", "failed"),
        ("update", "skipped"),
    ]
    job = control.syncer.get_job(control.spec.job_id(before.id))
    assert (
        job is not None
        and job.schedule == before.cron
        and job.state == scheduler_v1.Job.State.ENABLED
    )
    cloud_scheduler_emulator.set_faults(0.0)
    assert control.reconcile([edited]).ok
    assert control.plan([edited]).is_noop
