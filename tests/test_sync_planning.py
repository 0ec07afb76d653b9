"""The control module's sync planning, in isolation: no service is called (helpers:
`sync_schedules`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from emulated_control import KEY
from google.cloud import scheduler_v1
from sync_schedules import ACTION, GRACE, NOW, edit, existing, make, spec

from scheduler.config import ConfigError, Settings
from scheduler.contract import ATTR_SCHEDULE_ID, decode_message
from scheduler.control import SchedulerControl
from scheduler.jobs import ALL_FIELDS, diff_mask
from scheduler.naming import job_id_for, schedule_id_for
from scheduler.sync import RateLimiter
from scheduler.sync_plan import compute_plan
from scheduler.validation import parse_schedule

# -- planning without any service ----------------------------------------------------------------


def test_plan_creates_missing_jobs_and_pauses_a_paused_schedules_job() -> None:
    s = spec()
    schedules = make(2) + make(1, start=2, paused=True)
    plan = compute_plan([], schedules, s, now=NOW, grace=GRACE)
    assert [(st.kind, st.job_id) for st in plan.steps] == [
        ("create", "scion-sched-000"), ("create", "scion-sched-001"),
        ("create", "scion-sched-002"), ("pause", "scion-sched-002"),
    ]
    created = plan.steps[0].job
    assert created is not None
    assert created.pubsub_target.topic_name == "projects/p/topics/fires"
    assert created.schedule == "0 3 * * *" and created.time_zone == "UTC"
    fire = decode_message(bytes(created.pubsub_target.data), dict(created.pubsub_target.attributes),
                          signing_key=KEY)
    assert fire.schedule_id == "sched-000" and fire.action.params["url"] == ACTION["url"]
    assert created.retry_config.retry_count == 3
    assert created.retry_config.min_backoff_duration == timedelta(seconds=5)


def test_a_matching_job_gives_a_noop_plan() -> None:
    s = spec()
    schedules = make(3) + make(1, start=3, paused=True)
    jobs = [existing(s, x) for x in schedules[:3]]
    jobs.append(existing(s, schedules[3], state=scheduler_v1.Job.State.PAUSED))
    plan = compute_plan(jobs, schedules, s, now=NOW, grace=GRACE)
    assert plan.is_noop and plan.unchanged == 4 and plan.to_dict()["steps"] == []


@pytest.mark.parametrize(("changes", "mask"), [
    ({"cron": "5 4 * * *"}, ("schedule", "pubsub_target.attributes")),
    ({"timezone": "Europe/Paris"}, ("time_zone", "pubsub_target.attributes")),
    ({"description": "nightly"}, ("description",)),
    ({"action": {**ACTION, "url": "https://hub.example/other"}},
     ("pubsub_target.attributes", "pubsub_target.data")),
    ({"max_attempts": 9}, ("pubsub_target.attributes", "pubsub_target.data")),
])
def test_a_changed_schedule_gives_one_update_with_the_exact_mask(changes: dict[str, Any],
                                                                   mask: tuple[str, ...]) -> None:
    s = spec()
    [old] = make(1)
    plan = compute_plan([existing(s, old)], [edit(old, **changes)], s, now=NOW, grace=GRACE)
    assert [(st.kind, st.update_mask) for st in plan.steps] == [("update", mask)]


def test_hand_edited_fields_each_show_in_the_mask() -> None:
    s = spec()
    [schedule] = make(1)
    desired = s.desired_job(schedule)
    job = existing(s, schedule)
    job.pubsub_target.topic_name = "projects/p/topics/elsewhere"
    job.retry_config = scheduler_v1.RetryConfig(retry_count=0)
    assert diff_mask(job, desired) == ("pubsub_target.topic_name", "retry_config")
    http = existing(s, schedule)
    http.http_target = scheduler_v1.HttpTarget(uri="https://elsewhere.example/")
    assert diff_mask(http, desired) == ("pubsub_target",)


def test_pause_and_resume_follow_the_schedule() -> None:
    s = spec()
    [a] = make(1)
    paused = edit(a, paused=True)
    assert [
        st.kind for st in compute_plan([existing(s, a)], [paused], s, now=NOW, grace=GRACE).steps
    ] == ["pause"]
    was_paused = existing(s, a, state=scheduler_v1.Job.State.PAUSED)
    assert [st.kind for st in compute_plan([was_paused], [a], s, now=NOW, grace=GRACE).steps] == [
        "resume"
    ]


def test_update_failed_state_is_updated_again_in_full() -> None:
    s = spec()
    [a] = make(1)
    job = existing(s, a, state=scheduler_v1.Job.State.UPDATE_FAILED)
    [step] = compute_plan([job], [a], s, now=NOW, grace=GRACE).steps
    assert step.kind == "update" and step.update_mask == ALL_FIELDS


def test_foreign_jobs_are_never_steps_and_orphans_need_prune() -> None:
    s = spec()
    [kept] = make(1)
    [gone] = make(1, start=1)
    foreign = [existing(spec("other-"), kept), existing(spec("scion_"), kept)]
    bare = scheduler_v1.Job(
        name="projects/p/locations/l/jobs/scion-"
    )  # the prefix alone is not ours
    jobs = [*foreign, bare, existing(s, kept), existing(s, gone)]
    without = compute_plan(jobs, [kept], s, now=NOW, grace=GRACE, prune=False)
    assert without.is_noop and without.kept == ("scion-sched-001",) and without.foreign == 3
    pruned = compute_plan(jobs, [kept], s, now=NOW, grace=GRACE, prune=True)
    assert [(st.kind, st.job_id, st.schedule_id) for st in pruned.steps] == [
        ("delete", "scion-sched-001", "sched-001"),
    ]
    assert compute_plan(jobs, [], s, now=NOW, grace=GRACE).counts()["delete"] == 2


def test_a_kept_schedules_job_is_never_pruned_nor_edited() -> None:
    """The job of an item refused from a hub listing stays exactly as it is, even with prune."""
    s = spec()
    held, gone = make(2)
    jobs = [existing(s, held), existing(s, gone)]
    plan = compute_plan(jobs, [], s, now=NOW, grace=GRACE, prune=True, keep={held.id})
    assert [(st.kind, st.schedule_id) for st in plan.steps] == [("delete", gone.id)]
    assert plan.held == (s.job_id(held.id),) and plan.kept == ()
    assert plan.to_dict()["held_for_refused_items"] == [s.job_id(held.id)]


def test_digest_named_jobs_are_matched_through_their_schedule_id_attribute() -> None:
    s = spec()
    long_id = "é" * 200  # its readable job ID would be far over 500 characters
    schedule = parse_schedule({"id": long_id, "cron": "0 3 * * *", "action": ACTION})
    job_id = job_id_for(long_id, "scion-")
    assert job_id.startswith("scion-__") and schedule_id_for(job_id, "scion-") is None
    job = existing(s, schedule)
    assert s.owner_schedule_id(job) == long_id
    assert compute_plan([job], [schedule], s, now=NOW, grace=GRACE).is_noop
    [orphan] = compute_plan([job], [], s, now=NOW, grace=GRACE).steps
    assert (orphan.kind, orphan.job_id, orphan.schedule_id) == ("delete", job_id, long_id)
    # An attribute naming a schedule whose digest is another job does not claim this one.
    forged = existing(s, schedule)
    forged.pubsub_target.attributes[ATTR_SCHEDULE_ID] = "someone-else"
    assert s.owner_schedule_id(forged) is None
    [step] = compute_plan([forged], [schedule], s, now=NOW, grace=GRACE).steps
    assert step.kind == "update" and step.update_mask == ("pubsub_target.attributes",)


def test_one_shots_are_created_before_and_deleted_after_their_time_plus_grace() -> None:
    s = spec()
    one = parse_schedule({"id": "once", "at": "2030-01-01T12:30:00Z", "action": ACTION})
    assert [st.kind for st in compute_plan([], [one], s, now=NOW, grace=GRACE).steps] == ["create"]
    job = existing(s, one)
    assert job.schedule == "29 12 1 1 *" and job.time_zone == "UTC"  # a minute ahead: held
    within = NOW + timedelta(minutes=35)
    assert compute_plan([job], [one], s, now=within, grace=GRACE).is_noop
    later = NOW + timedelta(minutes=46)  # past the grace and the 15-minute catch-up window
    [step] = compute_plan([job], [one], s, now=later, grace=GRACE).steps
    assert (step.kind, step.schedule_id) == ("delete", "once")
    gone = compute_plan([], [one], s, now=later, grace=GRACE)
    assert gone.is_noop and gone.expired == ("once",)


def test_duplicate_schedule_ids_are_refused() -> None:
    from scheduler.model import ValidationError

    [a] = make(1)
    with pytest.raises(ValidationError, match="duplicate"):
        compute_plan([], [a, a], spec(), now=NOW, grace=GRACE)


def test_rate_limiter_spaces_calls_evenly() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    limiter = RateLimiter(5, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
    assert slept == [0.2, 0.4, 0.6]


def test_settings_for_sync_are_validated_and_named() -> None:
    with pytest.raises(ConfigError, match="SCION_SCHEDULER_WRITE_RATE"):
        Settings.from_env({}, write_rate="0")
    with pytest.raises(ConfigError, match="SCION_SCHEDULER_JOB_RETRY_COUNT"):
        Settings.from_env({}, job_retry_count="6")
    with pytest.raises(ConfigError, match=r"SCION_SCHEDULER_PROJECT \(or --project\)"):
        SchedulerControl.from_env({})
