"""The Cloud Scheduler emulator through the official client: jobs fire to Pub/Sub, on `run` and at
their minute (helpers: `cloud_scheduler_harness`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cloud_scheduler_harness import (
    JobFactory,
    ScriptedPublisher,
    when,
)
from emulator_helpers import eventually
from google.cloud import scheduler_v1

from scheduler.emulator import CloudSchedulerEmulator

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


def test_run_job_delivers_one_message_at_once(client: Any, parent: str, make_job: JobFactory,
                                              pubsub: Any) -> None:
    topic, sub = pubsub.topic("run-now")
    job = make_job(
        schedule="0 0 1 1 *",
        pubsub_target={
            "topic_name": topic,
            "data": b'{"action": 1}',
            "attributes": {"schedule-id": "s1", "cron": "x"},
        },
    )
    created = client.create_job(parent=parent, job=job)
    before = datetime.now(UTC) - timedelta(seconds=1)

    returned = client.run_job(name=created.name)

    assert returned.name == created.name
    assert when(returned.last_attempt_time) >= before
    assert returned.schedule_time == created.schedule_time  # a forced run leaves the schedule alone
    messages = pubsub.pull(sub, wait=20)
    assert len(messages) == 1
    assert messages[0].data == b'{"action": 1}'
    assert dict(messages[0].attributes) == {"schedule-id": "s1", "cron": "x"}
    assert pubsub.pull(sub, wait=1.5) == []
    done = eventually(lambda: scheduler_v1.Job.pb(client.get_job(name=created.name))
                      .HasField("status"))
    assert done and client.get_job(name=created.name).status.code == 0


def test_publish_failure_is_recorded_in_status(client: Any, parent: str, make_job: JobFactory,
                                               project_id: str, pubsub: Any) -> None:
    job = make_job(
        pubsub_target={"topic_name": f"projects/{project_id}/topics/missing", "data": b"x"}
    )
    created = client.create_job(parent=parent, job=job)
    client.run_job(name=created.name)
    status = eventually(lambda: client.get_job(name=created.name).status.code)
    assert status == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.slow
def test_enabled_job_fires_at_the_minute_and_paused_one_does_not(
    client: Any, parent: str, make_job: JobFactory, pubsub: Any
) -> None:
    """The one test that waits for a real cron slot (up to a minute)."""
    topic, sub = pubsub.topic("every-minute")
    paused_topic, paused_sub = pubsub.topic("paused")
    enabled = client.create_job(parent=parent, job=make_job(
        "enabled", schedule="* * * * *", time_zone="America/New_York",
        pubsub_target={"topic_name": topic, "data": b"tick", "attributes": {"a": "1"}}))
    paused = client.create_job(parent=parent, job=make_job(
        "paused", schedule="* * * * *", pubsub_target={"topic_name": paused_topic, "data": b"no"}))
    client.pause_job(name=paused.name)
    slot = when(enabled.schedule_time)
    assert slot.second == 0 and slot.microsecond == 0

    messages = pubsub.pull(sub, wait=(slot - datetime.now(UTC)).total_seconds() + 15)

    assert len(messages) == 1
    assert (messages[0].data, dict(messages[0].attributes)) == (b"tick", {"a": "1"})
    published = datetime.fromtimestamp(messages[0].publish_time.timestamp(), UTC)
    assert slot <= published < slot + timedelta(seconds=15)
    after = eventually(lambda: (j := client.get_job(name=enabled.name)).status.code == 0
                        and scheduler_v1.Job.pb(j).HasField("status") and j)
    assert when(after.last_attempt_time) >= slot
    assert when(after.schedule_time) == slot + timedelta(minutes=1)
    assert pubsub.pull(paused_sub, wait=1) == []


def test_app_engine_jobs_are_kept_but_not_delivered(client: Any, parent: str,
                                                    make_job: JobFactory) -> None:
    job = make_job(pubsub_target=None)
    job = scheduler_v1.Job(name=job.name, schedule=job.schedule,
                           app_engine_http_target={"relative_uri": "/tick"})
    created = client.create_job(parent=parent, job=job)
    assert created.state == scheduler_v1.Job.State.ENABLED
    client.run_job(name=created.name)
    code = eventually(lambda: client.get_job(name=created.name).status.code)
    assert code == grpc.StatusCode.UNIMPLEMENTED.value[0]


def test_clock_holds_one_entry_per_job_under_churn(parent: str, make_job: JobFactory) -> None:
    """Thousands of jobs, each changed repeatedly: one live timer entry each, stale ones
    compacted."""
    emulator = CloudSchedulerEmulator(publisher=ScriptedPublisher(0)).start()
    try:
        store = emulator.store
        names = [
            store.create(parent, scheduler_v1.Job.pb(make_job(f"j{i}"))).name for i in range(2000)
        ]
        for name in names[:1000]:
            store.pause(name)
            store.resume(name)
        for name in names[1000:1500]:
            store.delete(name)
        assert emulator.clock.pending() == 1500
        assert emulator.clock.timer_entries() <= 2 * 1500 + 1024
    finally:
        emulator.stop()
