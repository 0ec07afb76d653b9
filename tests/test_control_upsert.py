"""`SchedulerControl.upsert` when its second write fails: the writes are ordered so that the job
never fires against the schedule midway, the failed write is tried once more, and then the first
is undone. Against the Cloud Scheduler emulator, with its fault injection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from emulated_control import emulated_settings
from google.api_core import exceptions as gexc

from scheduler.config import Settings
from scheduler.control import SchedulerControl
from scheduler.gcp import cloud_scheduler_client
from scheduler.jobs import is_paused
from scheduler.jobs_decode import schedule_from_job
from scheduler.model import Schedule
from scheduler.sync import Failure
from scheduler.validation import parse_schedule

ACTION = {"type": "http", "url": "https://hub.example/run"}

pytestmark = pytest.mark.emulator


def schedule(**fields: Any) -> Schedule:
    return parse_schedule({"id": "guarded", "cron": "0 3 * * *", "action": ACTION, **fields})


@pytest.fixture
def settings(cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str) -> Settings:
    return emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                             api_retry_timeout="1s", sync_concurrency="4")


@pytest.fixture
def control(settings: Settings) -> Iterator[SchedulerControl]:
    with SchedulerControl(settings) as c:
        yield c


def job_of(control: SchedulerControl) -> Any:
    return control.syncer.get_job(control.spec.job_id("guarded"))


def steps(result: Any) -> list[tuple[str, str]]:
    return [(o.step.kind, o.status) for o in result.outcomes]


def test_a_paused_schedule_whose_pause_keeps_failing_leaves_no_job(
    control: SchedulerControl, cloud_scheduler_emulator: Any
) -> None:
    cloud_scheduler_emulator.set_faults(1.0, methods=("PauseJob",))
    result = control.upsert(schedule(paused=True))
    cloud_scheduler_emulator.clear_faults()
    assert not result.ok
    assert steps(result) == [("create", "ok"), ("pause", "failed"), ("delete", "ok")]
    failed = result.outcomes[1]
    assert failed.error.startswith("gave up after retrying") and "failed twice" in failed.note
    assert failed.failure is Failure.GAVE_UP and failed.http_status == 503
    assert result.outcomes[2].step.reason.startswith("undo:")
    assert job_of(control) is None
    assert [o.step.kind for o in result.failed] == ["pause"]


def test_an_undo_that_fails_too_is_reported(control: SchedulerControl,
                                            cloud_scheduler_emulator: Any) -> None:
    cloud_scheduler_emulator.set_faults(1.0, methods=("PauseJob", "DeleteJob"))
    result = control.upsert(schedule(paused=True))
    cloud_scheduler_emulator.clear_faults()
    assert steps(result) == [("create", "ok"), ("pause", "failed"), ("delete", "failed")]
    # Nothing more can be done while Cloud Scheduler refuses writes; the next upsert or
    # reconcile converges the job.
    assert control.upsert(schedule(paused=True)).ok
    assert is_paused(job_of(control))


class _FlakyClient:
    """The real client, except that the first calls of `method` fail with a non-retryable error
    (after doing the call when `then_fail`: an error that hides a write that took effect)."""

    def __init__(self, client: Any, method: str, failures: int, *, then_fail: bool = False) -> None:
        self._client = client
        self._method = method
        self._failures = failures
        self._then_fail = then_fail
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._method:
            return real

        def flaky(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.calls[name] > self._failures:
                return real(*args, **kwargs)
            if self._then_fail:
                real(*args, **kwargs)
            raise gexc.InternalServerError(f"{name} failed")

        return flaky


@pytest.fixture
def real_client(settings: Settings) -> Iterator[Any]:
    client = cloud_scheduler_client(settings)
    yield client
    client.transport.close()


def test_a_pause_that_fails_once_is_tried_again(settings: Settings, real_client: Any) -> None:
    flaky = _FlakyClient(real_client, "pause_job", 1)
    with SchedulerControl(settings, scheduler_client=flaky) as control:
        result = control.upsert(schedule(paused=True))
        assert result.ok, result.describe()
        assert steps(result) == [("create", "ok"), ("pause", "ok")]
        assert "second try" in result.outcomes[1].note
        assert is_paused(job_of(control))
    assert flaky.calls["pause_job"] == 2


def test_a_create_that_failed_but_took_effect_is_deleted(
    settings: Settings, real_client: Any
) -> None:
    flaky = _FlakyClient(real_client, "create_job", 1, then_fail=True)
    with SchedulerControl(settings, scheduler_client=flaky) as control:
        result = control.upsert(schedule(paused=True))
        assert steps(result) == [("create", "failed"), ("pause", "skipped"), ("delete", "ok")]
        assert (result.outcomes[0].failure, result.outcomes[0].http_status) == (
            Failure.REFUSED, 500)
        assert job_of(control) is None


def test_pause_with_an_edit_pauses_first_and_restores_the_job_when_the_edit_fails(
    control: SchedulerControl, cloud_scheduler_emulator: Any
) -> None:
    original = schedule()
    assert control.upsert(original).ok
    cloud_scheduler_emulator.set_faults(1.0, methods=("UpdateJob",))
    result = control.upsert(schedule(cron="30 4 * * *", paused=True))
    cloud_scheduler_emulator.clear_faults()
    assert [s.kind for s in result.plan.steps] == ["pause", "update"]
    assert steps(result) == [("pause", "ok"), ("update", "failed"), ("resume", "ok")]
    job = job_of(control)
    assert not is_paused(job) and schedule_from_job(job) == original


def test_pause_with_an_edit_changes_nothing_when_the_pause_fails(
    control: SchedulerControl, cloud_scheduler_emulator: Any
) -> None:
    original = schedule()
    assert control.upsert(original).ok
    updates = cloud_scheduler_emulator.call_counts["UpdateJob"]
    cloud_scheduler_emulator.set_faults(1.0, methods=("PauseJob",))
    result = control.upsert(schedule(cron="30 4 * * *", paused=True))
    cloud_scheduler_emulator.clear_faults()
    assert steps(result) == [("pause", "failed"), ("update", "skipped")]
    assert cloud_scheduler_emulator.call_counts["UpdateJob"] == updates
    job = job_of(control)
    assert not is_paused(job) and schedule_from_job(job) == original


def test_a_pause_is_kept_when_the_failed_edit_took_effect(
    settings: Settings, real_client: Any
) -> None:
    # The update reports a failure although it was applied: lifting the pause would let the
    # new definition fire for a schedule that asked to be paused.
    with SchedulerControl(settings, scheduler_client=real_client) as setup:
        assert setup.upsert(schedule()).ok
    flaky = _FlakyClient(real_client, "update_job", 2, then_fail=True)
    with SchedulerControl(settings, scheduler_client=flaky) as control:
        result = control.upsert(schedule(cron="30 4 * * *", paused=True))
        assert steps(result) == [("pause", "ok"), ("update", "failed")]
        job = job_of(control)
        assert is_paused(job) and job.schedule == "30 4 * * *"


def test_resume_with_an_edit_edits_first_and_restores_the_job_when_the_resume_fails(
    control: SchedulerControl, cloud_scheduler_emulator: Any
) -> None:
    original = schedule(paused=True)
    assert control.upsert(original).ok
    cloud_scheduler_emulator.set_faults(1.0, methods=("ResumeJob",))
    result = control.upsert(schedule(cron="30 4 * * *", description="moved"))
    cloud_scheduler_emulator.clear_faults()
    assert [s.kind for s in result.plan.steps] == ["update", "resume"]
    assert steps(result) == [
        ("update", "ok"),
        ("resume", "failed"),
        ("pause", "ok"),
        ("update", "ok"),
    ]
    assert result.outcomes[2].note == "already paused"
    job = job_of(control)
    assert is_paused(job) and schedule_from_job(job) == original


def test_resume_with_an_edit_changes_nothing_when_the_edit_fails(
    control: SchedulerControl, cloud_scheduler_emulator: Any
) -> None:
    original = schedule(paused=True)
    assert control.upsert(original).ok
    resumes = cloud_scheduler_emulator.call_counts["ResumeJob"]
    cloud_scheduler_emulator.set_faults(1.0, methods=("UpdateJob",))
    result = control.upsert(schedule(cron="30 4 * * *"))
    cloud_scheduler_emulator.clear_faults()
    assert steps(result) == [("update", "failed"), ("resume", "skipped")]
    assert cloud_scheduler_emulator.call_counts["ResumeJob"] == resumes
    job = job_of(control)
    assert is_paused(job) and schedule_from_job(job) == original
