"""The Cloud Scheduler emulator, driven through the official google-cloud-scheduler client (built
by `scheduler.gcp.cloud_scheduler_client`) exactly as production code drives the real service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from emulator_helpers import eventually, pull_until
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler.config import Settings
from scheduler.emulator import CloudSchedulerEmulator, EmulatorError
from scheduler.emulator.store import ApiError
from scheduler.emulator.timing import backoff
from scheduler.gcp import cloud_scheduler_client
from scion_scheduler.google_emulators import free_port

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

LOCATION = "us-central1"
JobFactory = Callable[..., scheduler_v1.Job]


@pytest.fixture
def client(cloud_scheduler_emulator: Any) -> Any:
    return cloud_scheduler_client(Settings.from_env())


@pytest.fixture
def parent(project_id: str) -> str:
    return f"projects/{project_id}/locations/{LOCATION}"


@pytest.fixture
def make_job(project_id: str, parent: str) -> JobFactory:
    def make(
        job_id: str = "job-1", schedule: str = "0 9 * * *", **overrides: Any
    ) -> scheduler_v1.Job:
        fields: dict[str, Any] = {
            "name": f"{parent}/jobs/{job_id}",
            "schedule": schedule,
            "time_zone": "Europe/Paris",
            "pubsub_target": {"topic_name": f"projects/{project_id}/topics/fires", "data": b"{}",
                              "attributes": {"schedule-id": job_id}},
        }
        fields.update(overrides)
        return scheduler_v1.Job(fields)

    return make


def _when(timestamp: Any) -> datetime:
    return datetime.fromtimestamp(timestamp.timestamp(), UTC)


# -- CRUD ---------------------------------------------------------------------------------------


def test_create_sets_output_only_fields(client: Any, parent: str, make_job: JobFactory) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = client.create_job(parent=parent, job=make_job(state=scheduler_v1.Job.State.PAUSED))
    assert created.state == scheduler_v1.Job.State.ENABLED  # output only: the request's is ignored
    assert _when(created.user_update_time) >= before
    next_fire = _when(created.schedule_time)
    assert next_fire > before and next_fire.astimezone(ZoneInfo("Europe/Paris")).hour == 9
    assert created.retry_config.min_backoff_duration == timedelta(seconds=5)
    assert created.retry_config.max_doublings == 5
    assert client.get_job(name=created.name) == created


def test_create_without_name_generates_one(client: Any, parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job(name=""))
    assert created.name.startswith(f"{parent}/jobs/")
    assert client.get_job(name=created.name).name == created.name


def test_list_pages_through_more_jobs_than_a_page(client: Any, parent: str, make_job: JobFactory,
                                                   project_id: str) -> None:
    names = {client.create_job(parent=parent, job=make_job(f"job-{i:02d}")).name for i in range(12)}
    other = f"projects/{project_id}/locations/europe-west1"
    client.create_job(parent=other, job=make_job("elsewhere", name=f"{other}/jobs/elsewhere"))

    pager = client.list_jobs(request={"parent": parent, "page_size": 5})
    pages = [[job.name for job in page.jobs] for page in pager.pages]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert {n for p in pages for n in p} == names
    assert {job.name for job in client.list_jobs(parent=parent)} == names

    first = client.list_jobs(request={"parent": parent, "page_size": 5})
    token = next(iter(first.pages)).next_page_token
    second = client.list_jobs(request={"parent": parent, "page_size": 5, "page_token": token})
    assert [j.name for j in next(iter(second.pages)).jobs] == pages[1]


def test_update_with_mask_changes_only_masked_fields(
    client: Any, parent: str, make_job: JobFactory
) -> None:
    created = client.create_job(parent=parent, job=make_job(description="before"))
    change = scheduler_v1.Job(name=created.name, schedule="30 6 * * *", description="ignored")
    updated = client.update_job(
        job=change, update_mask=field_mask_pb2.FieldMask(paths=["schedule"])
    )
    assert updated.schedule == "30 6 * * *"
    assert updated.description == "before"
    assert updated.pubsub_target == created.pubsub_target
    assert _when(updated.user_update_time) >= _when(created.user_update_time)
    assert _when(updated.schedule_time).astimezone(ZoneInfo("Europe/Paris")).hour == 6

    nested = scheduler_v1.Job(name=created.name, retry_config={"retry_count": 3},
                              pubsub_target={"attributes": {"k": "v"}})
    updated = client.update_job(job=nested, update_mask=field_mask_pb2.FieldMask(
        paths=["retry_config.retry_count", "pubsub_target.attributes"]))
    assert updated.retry_config.retry_count == 3
    assert updated.retry_config.max_doublings == 5
    assert dict(updated.pubsub_target.attributes) == {"k": "v"}
    assert updated.pubsub_target.data == b"{}"


def test_update_without_mask_replaces_every_updatable_field(
    client: Any, parent: str, make_job: JobFactory, project_id: str
) -> None:
    created = client.create_job(parent=parent, job=make_job(description="before"))
    client.pause_job(name=created.name)
    replacement = scheduler_v1.Job(
        name=created.name, schedule="*/5 * * * *",
        pubsub_target={"topic_name": f"projects/{project_id}/topics/other", "data": b"x"},
    )
    updated = client.update_job(job=replacement)
    assert updated.description == ""
    assert updated.time_zone == ""
    assert updated.pubsub_target.topic_name.endswith("/topics/other")
    assert dict(updated.pubsub_target.attributes) == {}
    assert updated.state == scheduler_v1.Job.State.PAUSED  # an update keeps the state


def test_update_can_switch_the_target(client: Any, parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job())
    change = scheduler_v1.Job(name=created.name, http_target={"uri": "https://example.com/hook"})
    updated = client.update_job(job=change, update_mask=field_mask_pb2.FieldMask(
        paths=["pubsub_target", "http_target"]))
    assert scheduler_v1.Job.pb(updated).WhichOneof("target") == "http_target"


def test_delete(client: Any, parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job())
    client.delete_job(name=created.name)
    with pytest.raises(gexc.NotFound):
        client.get_job(name=created.name)
    assert list(client.list_jobs(parent=parent)) == []


def test_pause_and_resume(client: Any, parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job())
    paused = client.pause_job(name=created.name)
    assert paused.state == scheduler_v1.Job.State.PAUSED
    assert not scheduler_v1.Job.pb(paused).HasField("schedule_time")
    assert _when(paused.user_update_time) >= _when(created.user_update_time)
    with pytest.raises(gexc.FailedPrecondition):
        client.pause_job(name=created.name)
    resumed = client.resume_job(name=created.name)
    assert resumed.state == scheduler_v1.Job.State.ENABLED
    assert resumed.schedule_time == created.schedule_time
    with pytest.raises(gexc.FailedPrecondition):
        client.resume_job(name=created.name)


def test_locations(client: Any, parent: str, make_job: JobFactory, project_id: str) -> None:
    client.create_job(parent=parent, job=make_job())
    listed = client.list_locations(request={"name": f"projects/{project_id}"})
    served = [loc.location_id for loc in listed.locations]
    assert {LOCATION, "europe-west1", "asia-northeast1"} <= set(served)
    assert served[0] == LOCATION and served[1:] == sorted(served[1:])  # the default first
    assert client.get_location(request={"name": parent}).location_id == LOCATION


def test_unknown_locations_are_refused(client: Any, make_job: JobFactory, project_id: str) -> None:
    other = f"projects/{project_id}/locations/europe-west1"
    created = client.create_job(parent=other, job=make_job("ok", name=f"{other}/jobs/ok"))
    assert client.get_job(name=created.name).name == created.name
    nowhere = f"projects/{project_id}/locations/us-central9"
    job = make_job("lost", name=f"{nowhere}/jobs/lost")
    calls: list[Callable[[], Any]] = [
        lambda: client.create_job(parent=nowhere, job=job, retry=None),
        lambda: list(client.list_jobs(parent=nowhere, retry=None)),
        lambda: client.get_job(name=job.name, retry=None),
        lambda: client.update_job(job=job, retry=None),
        lambda: client.delete_job(name=job.name, retry=None),
        lambda: client.get_location(request={"name": nowhere}, retry=None),
    ]
    for call in calls:
        with pytest.raises(gexc.InvalidArgument, match="'us-central9'"):
            call()


def test_accepted_locations_can_be_replaced(parent: str, make_job: JobFactory) -> None:
    with CloudSchedulerEmulator(
        publisher=ScriptedPublisher(0), locations=["moon-base1"]
    ) as emulator:
        moon = parent.rsplit("/", 1)[0] + "/moon-base1"
        emulator.store.create(moon, scheduler_v1.Job.pb(make_job(name=f"{moon}/jobs/j")))
        with pytest.raises(ApiError, match="is not a valid location"):
            emulator.store.create(parent, scheduler_v1.Job.pb(make_job()))


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "projects/p/locations/l/jobs/bad id"}, "job.name"),
        ({"name": "projects/p/jobs/x"}, "job.name"),
        ({"name": "JOB"}, "job.name"),
        ({"schedule": "* * * *"}, "job.schedule"),
        ({"schedule": "0 0 30 2 *"}, "job.schedule"),
        ({"schedule": ""}, "job.schedule"),
        ({"time_zone": "Mars/Olympus"}, "job.time_zone"),
        ({"pubsub_target": None}, "job.target"),
        ({"pubsub_target": {"topic_name": "fires", "data": b"x"}}, "job.pubsub_target.topic_name"),
        (
            {"pubsub_target": {"topic_name": "projects/other/topics/t", "data": b"x"}},
            "job.pubsub_target.topic_name",
        ),
        ({"retry_config": {"retry_count": 6}}, "job.retry_config.retry_count"),
        ({"description": "x" * 501}, "job.description"),
    ],
)
def test_create_refuses_invalid_jobs(client: Any, parent: str, make_job: JobFactory,
                                     overrides: dict[str, Any], field: str) -> None:
    job = make_job(**{k: v for k, v in overrides.items() if v is not None})
    if overrides.get("pubsub_target", ...) is None:
        job = scheduler_v1.Job(name=job.name, schedule=job.schedule)
    with pytest.raises(gexc.InvalidArgument) as caught:
        client.create_job(parent=parent, job=job)
    assert field in caught.value.message


def test_job_id_of_500_characters_is_accepted_501_is_not(
    client: Any, parent: str, make_job: JobFactory
) -> None:
    client.create_job(parent=parent, job=make_job("a" * 500))
    with pytest.raises(gexc.InvalidArgument):
        client.create_job(parent=parent, job=make_job("a" * 501))


def test_parent_must_match_the_name(client: Any, make_job: JobFactory, project_id: str) -> None:
    with pytest.raises(gexc.InvalidArgument, match="not in the parent"):
        client.create_job(parent=f"projects/{project_id}/locations/europe-west1", job=make_job())


def test_utc_spelled_lowercase_is_a_valid_time_zone(
    client: Any, parent: str, make_job: JobFactory
) -> None:
    created = client.create_job(parent=parent, job=make_job(time_zone="utc", schedule="0 9 * * *"))
    assert _when(created.schedule_time).hour == 9


def test_duplicate_name_is_already_exists(client: Any, parent: str, make_job: JobFactory) -> None:
    client.create_job(parent=parent, job=make_job())
    with pytest.raises(gexc.AlreadyExists):
        client.create_job(parent=parent, job=make_job())


def test_missing_jobs_are_not_found(client: Any, parent: str, make_job: JobFactory) -> None:
    name = f"{parent}/jobs/missing"
    for call in (
        client.get_job,
        client.delete_job,
        client.pause_job,
        client.resume_job,
        client.run_job,
    ):
        with pytest.raises(gexc.NotFound):
            call(name=name, retry=None)
    with pytest.raises(gexc.NotFound):
        client.update_job(job=make_job("missing"))


@pytest.mark.parametrize(
    "path",
    [
        "name",
        "state",
        "schedule_time",
        "user_update_time",
        "status",
        "last_attempt_time",
        "timeZone",
        "no_such_field",
        "retry_config.nope",
    ],
)
def test_invalid_update_masks(client: Any, parent: str, make_job: JobFactory, path: str) -> None:
    created = client.create_job(parent=parent, job=make_job())
    with pytest.raises(gexc.InvalidArgument, match="Invalid mask for Job"):
        client.update_job(job=created, update_mask=field_mask_pb2.FieldMask(paths=[path]))


def test_update_that_leaves_no_target_is_refused(
    client: Any, parent: str, make_job: JobFactory
) -> None:
    created = client.create_job(parent=parent, job=make_job())
    with pytest.raises(gexc.InvalidArgument, match=r"job\.target"):
        client.update_job(job=scheduler_v1.Job(name=created.name),
                          update_mask=field_mask_pb2.FieldMask(paths=["pubsub_target"]))
    assert client.get_job(name=created.name) == created


def test_list_refuses_bad_parent_and_token(client: Any, parent: str) -> None:
    with pytest.raises(gexc.InvalidArgument):
        list(client.list_jobs(parent="projects/p", retry=None))
    with pytest.raises(gexc.InvalidArgument):
        list(client.list_jobs(request={"parent": parent, "page_token": "!!"}, retry=None))


# -- firing -------------------------------------------------------------------------------------


@pytest.fixture
def pubsub(pubsub_emulator: str, project_id: str) -> Any:
    """Make topics with a subscription each, and pull from them."""
    import google.cloud.pubsub_v1 as pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()

    class PubSub:
        def topic(self, topic_id: str) -> tuple[str, str]:
            topic = publisher.create_topic(name=f"projects/{project_id}/topics/{topic_id}").name
            sub = subscriber.create_subscription(
                name=f"projects/{project_id}/subscriptions/{topic_id}", topic=topic).name
            return topic, sub

        def pull(self, subscription: str, wait: float, want: int = 1) -> list[Any]:
            """Messages received within `wait` seconds (returns early once `want` arrived)."""
            return pull_until(subscriber, subscription, lambda got: len(got) >= want, wait)

    yield PubSub()
    publisher.stop()
    subscriber.close()


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
    assert _when(returned.last_attempt_time) >= before
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
    slot = _when(enabled.schedule_time)
    assert slot.second == 0 and slot.microsecond == 0

    messages = pubsub.pull(sub, wait=(slot - datetime.now(UTC)).total_seconds() + 15)

    assert len(messages) == 1
    assert (messages[0].data, dict(messages[0].attributes)) == (b"tick", {"a": "1"})
    published = datetime.fromtimestamp(messages[0].publish_time.timestamp(), UTC)
    assert slot <= published < slot + timedelta(seconds=15)
    after = eventually(lambda: (j := client.get_job(name=enabled.name)).status.code == 0
                        and scheduler_v1.Job.pb(j).HasField("status") and j)
    assert _when(after.last_attempt_time) >= slot
    assert _when(after.schedule_time) == slot + timedelta(minutes=1)
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


# -- retries (a scripted publisher, so failures are exact) ---------------------------------------


class ScriptedPublisher:
    """Fails the first `failures` publishes with UNAVAILABLE, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[datetime] = []

    def publish(self, topic: str, data: bytes, attributes: Any, done: Any) -> None:
        self.attempts.append(datetime.now(UTC))
        if len(self.attempts) <= self.failures:
            done(None, gexc.ServiceUnavailable("pubsub down"))
        else:
            done(str(len(self.attempts)), None)

    def close(self) -> None:
        pass


@contextmanager
def scripted_run(
    failures: int, monkeypatch: pytest.MonkeyPatch, parent: str, job: Any
) -> Iterator[tuple[Any, Any, ScriptedPublisher]]:
    """`job` created and run now on an emulator whose first `failures` publishes fail: the
    client, the created job and the publisher; the emulator is stopped at the end."""
    publisher = ScriptedPublisher(failures)
    emulator = CloudSchedulerEmulator(publisher=publisher).start()
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", emulator.host)
        client = cloud_scheduler_client(Settings.from_env())
        created = client.create_job(parent=parent, job=job)
        client.run_job(name=created.name)
        yield client, created, publisher
    finally:
        emulator.stop()


FAST_RETRY = {"min_backoff_duration": timedelta(milliseconds=100),
              "max_backoff_duration": timedelta(milliseconds=400), "max_doublings": 2}


def test_failed_publish_is_retried_until_it_succeeds(monkeypatch: pytest.MonkeyPatch, parent: str,
                                                     make_job: JobFactory) -> None:
    retrying = make_job(retry_config={"retry_count": 3, **FAST_RETRY})
    with scripted_run(2, monkeypatch, parent, retrying) as (client, created, publisher):
        assert eventually(lambda: len(publisher.attempts) == 3)
        job = eventually(lambda: (j := client.get_job(name=created.name)).schedule_time
                         == created.schedule_time
                          and j)
        assert job.status.code == 0
        gaps = [b - a for a, b in zip(publisher.attempts, publisher.attempts[1:], strict=False)]
        assert all(gap >= timedelta(milliseconds=90) for gap in gaps)
        time.sleep(0.5)
        assert len(publisher.attempts) == 3


def test_retries_stop_at_retry_count(
    monkeypatch: pytest.MonkeyPatch, parent: str, make_job: JobFactory
) -> None:
    retrying = make_job(retry_config={"retry_count": 2, **FAST_RETRY})
    with scripted_run(100, monkeypatch, parent, retrying) as (client, created, publisher):
        assert eventually(lambda: len(publisher.attempts) >= 3)
        time.sleep(1.0)
        assert len(publisher.attempts) == 3  # the attempt and retry_count retries
        job = client.get_job(name=created.name)
        assert job.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert job.schedule_time == created.schedule_time


def test_no_retry_when_retry_count_is_zero(monkeypatch: pytest.MonkeyPatch, parent: str,
                                           make_job: JobFactory) -> None:
    with scripted_run(100, monkeypatch, parent, make_job()) as (client, created, publisher):
        assert eventually(lambda: client.get_job(name=created.name).status.code != 0)
        time.sleep(0.5)
        assert len(publisher.attempts) == 1


def test_backoff_follows_the_documented_example() -> None:
    retry = scheduler_v1.RetryConfig.pb()(max_doublings=3)
    retry.min_backoff_duration.FromTimedelta(timedelta(seconds=10))
    retry.max_backoff_duration.FromTimedelta(timedelta(seconds=300))
    waits = [backoff(retry, n).total_seconds() for n in range(1, 9)]
    assert waits == [10, 20, 40, 80, 160, 240, 300, 300]


# -- state file ---------------------------------------------------------------------------------


def test_state_file_survives_restart(tmp_path: Any, parent: str, make_job: JobFactory,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state" / "jobs.json"
    with CloudSchedulerEmulator(state_file=state) as first:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", first.host)
        client = cloud_scheduler_client(Settings.from_env())
        kept = client.create_job(parent=parent, job=make_job("kept", description="d"))
        paused = client.pause_job(
            name=client.create_job(parent=parent, job=make_job("paused")).name
        )
        gone = client.create_job(parent=parent, job=make_job("gone"))
        client.delete_job(name=gone.name)
    assert json.loads(state.read_text())["jobs"]
    assert [p.name for p in state.parent.iterdir()] == ["jobs.json"]  # no temporary file left

    with CloudSchedulerEmulator(state_file=state) as second:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", second.host)
        client = cloud_scheduler_client(Settings.from_env())
        jobs = {job.name: job for job in client.list_jobs(parent=parent)}
    assert set(jobs) == {kept.name, paused.name}
    assert jobs[kept.name] == kept
    assert jobs[paused.name].state == scheduler_v1.Job.State.PAUSED
    assert jobs[paused.name].user_update_time == paused.user_update_time


def test_unreadable_state_file_is_an_error(tmp_path: Any) -> None:
    state = tmp_path / "jobs.json"
    state.write_text("{not json")
    with pytest.raises(EmulatorError, match="state file"):
        CloudSchedulerEmulator(state_file=state).start()


# -- fault injection ----------------------------------------------------------------------------


def test_faults_fail_a_share_of_calls_with_the_chosen_code(
    cloud_scheduler_emulator: Any, client: Any, parent: str, make_job: JobFactory
) -> None:
    created = client.create_job(parent=parent, job=make_job())
    cloud_scheduler_emulator.set_faults(
        rate=0.5, codes=("RESOURCE_EXHAUSTED",), methods=["GetJob"], seed=7
    )
    before = cloud_scheduler_emulator.call_counts["GetJob"]
    outcomes = []
    for _ in range(40):
        try:
            client.get_job(name=created.name, retry=None)
            outcomes.append("ok")
        except gexc.ResourceExhausted:
            outcomes.append("exhausted")
    assert 5 < outcomes.count("exhausted") < 35
    assert cloud_scheduler_emulator.call_counts["GetJob"] - before == 40
    assert list(client.list_jobs(parent=parent, retry=None))  # other methods are untouched

    cloud_scheduler_emulator.set_faults(rate=1.0, codes=("UNAVAILABLE",))
    writes = cloud_scheduler_emulator.call_counts["CreateJob"]
    with pytest.raises(gexc.ServiceUnavailable):
        client.create_job(parent=parent, job=make_job("other"))
    assert cloud_scheduler_emulator.call_counts["CreateJob"] == writes + 1
    cloud_scheduler_emulator.clear_faults()
    client.create_job(parent=parent, job=make_job("other"))


def test_client_default_retry_rides_over_unavailable(cloud_scheduler_emulator: Any, client: Any,
                                                      parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job())
    cloud_scheduler_emulator.set_faults(rate=0.5, methods=["GetJob"], seed=3)
    for _ in range(5):
        assert client.get_job(name=created.name).name == created.name
    assert cloud_scheduler_emulator.call_counts["GetJob"] > 5


def test_fault_settings_are_validated(cloud_scheduler_emulator: Any) -> None:
    for bad in (
        {"rate": 1.5},
        {"rate": 0.1, "codes": ("INTERNAL",)},
        {"rate": 0.1, "methods": ["Nope"]},
    ):
        with pytest.raises(ValueError):
            cloud_scheduler_emulator.set_faults(**bad)


# -- the command --------------------------------------------------------------------------------


def _command(port: int, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`scion-scheduler emulator` in a subprocess, logging JSON lines on stderr."""
    command = [sys.executable, "-m", "scion_scheduler.cli", "--log-format", "json", "emulator",
               "--port", str(port), *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _stop(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """SIGTERM, wait, check the exit status; returns the JSON log lines."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


def test_command_serves_logs_fires_and_stops_on_sigterm(
    tmp_path: Any,
    parent: str,
    make_job: JobFactory,
    pubsub_emulator: str,
    pubsub: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, sub = pubsub.topic("fires")  # make_job's topic
    port = free_port()
    process = _command(
        port,
        "--pubsub-host",
        pubsub_emulator,
        "--state-file",
        str(tmp_path / "jobs.json"),
        "--log-level",
        "DEBUG",
    )
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", f"127.0.0.1:{port}")
        client = cloud_scheduler_client(Settings.from_env())
        # ListJobs retries UNAVAILABLE by default, so it also waits for the server to come up.
        assert list(client.list_jobs(parent=parent, timeout=30)) == []
        created = client.create_job(parent=parent, job=make_job())
        assert client.get_job(name=created.name) == created
        assert [j.name for j in client.list_jobs(parent=parent)] == [created.name]
        client.run_job(name=created.name)
        assert len(pubsub.pull(sub, wait=30)) == 1
        # The fire is logged right after its result lands in the job's status.
        assert eventually(lambda: scheduler_v1.Job.pb(client.get_job(name=created.name))
                          .HasField("status"),
                           timeout=30)
    finally:
        lines = _stop(process)
    events = [line["message"] for line in lines]
    assert "ready" in events and "api call" in events and "stopping" in events
    [ready] = [line for line in lines if line["message"] == "ready"]
    assert (
        isinstance(ready["startup_seconds"], float | int) and ready["host"] == f"127.0.0.1:{port}"
    )
    [fired] = [line for line in lines if line["message"] == "job fired"]
    assert fired["job"] == created.name and fired["trigger"] == "manual" and fired["message_id"]
    assert json.loads((tmp_path / "jobs.json").read_text())["jobs"][0]["name"] == created.name


def test_command_publishes_to_pubsub_emulator_host_by_default(
    parent: str,
    make_job: JobFactory,
    pubsub_emulator: str,
    pubsub: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, sub = pubsub.topic("fires")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CLOUD_SCHEDULER_EMULATOR_HOST"}
    env["PUBSUB_EMULATOR_HOST"] = pubsub_emulator
    process = _command(port, env=env)  # no --pubsub-host
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", f"127.0.0.1:{port}")
        client = cloud_scheduler_client(Settings.from_env())
        assert list(client.list_jobs(parent=parent, timeout=30)) == []
        created = client.create_job(parent=parent, job=make_job(pubsub_target={
            "topic_name": topic, "data": b"from-env"}))
        client.run_job(name=created.name)
        [message] = pubsub.pull(sub, wait=30)
        assert message.data == b"from-env"
    finally:
        lines = _stop(process)
    [started] = [line for line in lines if line["message"] == "cloud scheduler emulator started"]
    assert started["pubsub_host"] == pubsub_emulator


def test_command_fault_flags(
    parent: str, make_job: JobFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    process = _command(
        port, "--fail-rate", "1", "--fail-code", "RESOURCE_EXHAUSTED", "--fail-method", "GetJob"
    )
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", f"127.0.0.1:{port}")
        client = cloud_scheduler_client(Settings.from_env())
        assert list(client.list_jobs(parent=parent, timeout=30)) == []
        created = client.create_job(parent=parent, job=make_job())
        with pytest.raises(gexc.ResourceExhausted):
            client.get_job(name=created.name, retry=None)
        assert [j.name for j in client.list_jobs(parent=parent, retry=None)] == [created.name]
    finally:
        lines = _stop(process)
    [faults] = [line for line in lines if line["message"] == "fault injection on"]
    assert faults["codes"] == ["RESOURCE_EXHAUSTED"] and faults["methods"] == ["GetJob"]


def test_command_refuses_a_taken_port(tmp_path: Any) -> None:
    with CloudSchedulerEmulator() as running:
        result = subprocess.run(
            [sys.executable, "-m", "scion_scheduler.cli", "emulator", "--port", str(running.port)],
            capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert b"cannot listen" in result.stderr
