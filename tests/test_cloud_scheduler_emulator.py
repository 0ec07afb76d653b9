"""The Cloud Scheduler emulator, driven through the official google-cloud-scheduler client (built
by `scheduler.gcp.cloud_scheduler_client`) exactly as production code drives the real service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler.config import Settings
from scheduler.gcp import cloud_scheduler_client

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
    def make(job_id: str = "job-1", schedule: str = "0 9 * * *", **overrides: Any) -> scheduler_v1.Job:
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


def test_update_with_mask_changes_only_masked_fields(client: Any, parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job(description="before"))
    change = scheduler_v1.Job(name=created.name, schedule="30 6 * * *", description="ignored")
    updated = client.update_job(job=change, update_mask=field_mask_pb2.FieldMask(paths=["schedule"]))
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


def test_update_without_mask_replaces_every_updatable_field(client: Any, parent: str,
                                                            make_job: JobFactory, project_id: str) -> None:
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
    assert LOCATION in [loc.location_id for loc in listed.locations]
    assert client.get_location(request={"name": parent}).location_id == LOCATION


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": "projects/p/locations/l/jobs/bad id"}, "job.name"),
    ({"name": "projects/p/jobs/x"}, "job.name"),
    ({"name": "JOB"}, "job.name"),
    ({"schedule": "* * * *"}, "job.schedule"),
    ({"schedule": "0 0 30 2 *"}, "job.schedule"),
    ({"schedule": ""}, "job.schedule"),
    ({"time_zone": "Mars/Olympus"}, "job.time_zone"),
    ({"pubsub_target": None}, "job.target"),
    ({"pubsub_target": {"topic_name": "fires", "data": b"x"}}, "job.pubsub_target.topic_name"),
    ({"pubsub_target": {"topic_name": "projects/other/topics/t", "data": b"x"}}, "job.pubsub_target.topic_name"),
    ({"retry_config": {"retry_count": 6}}, "job.retry_config.retry_count"),
    ({"description": "x" * 501}, "job.description"),
])
def test_create_refuses_invalid_jobs(client: Any, parent: str, make_job: JobFactory,
                                     overrides: dict[str, Any], field: str) -> None:
    job = make_job(**{k: v for k, v in overrides.items() if v is not None})
    if overrides.get("pubsub_target", ...) is None:
        job = scheduler_v1.Job(name=job.name, schedule=job.schedule)
    with pytest.raises(gexc.InvalidArgument) as caught:
        client.create_job(parent=parent, job=job)
    assert field in caught.value.message


def test_job_id_of_500_characters_is_accepted_501_is_not(client: Any, parent: str, make_job: JobFactory) -> None:
    client.create_job(parent=parent, job=make_job("a" * 500))
    with pytest.raises(gexc.InvalidArgument):
        client.create_job(parent=parent, job=make_job("a" * 501))


def test_parent_must_match_the_name(client: Any, make_job: JobFactory, project_id: str) -> None:
    with pytest.raises(gexc.InvalidArgument, match="not in the parent"):
        client.create_job(parent=f"projects/{project_id}/locations/europe-west1", job=make_job())


def test_utc_spelled_lowercase_is_a_valid_time_zone(client: Any, parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job(time_zone="utc", schedule="0 9 * * *"))
    assert _when(created.schedule_time).hour == 9


def test_duplicate_name_is_already_exists(client: Any, parent: str, make_job: JobFactory) -> None:
    client.create_job(parent=parent, job=make_job())
    with pytest.raises(gexc.AlreadyExists):
        client.create_job(parent=parent, job=make_job())


def test_missing_jobs_are_not_found(client: Any, parent: str, make_job: JobFactory) -> None:
    name = f"{parent}/jobs/missing"
    for call in (client.get_job, client.delete_job, client.pause_job, client.resume_job, client.run_job):
        with pytest.raises(gexc.NotFound):
            call(name=name, retry=None)
    with pytest.raises(gexc.NotFound):
        client.update_job(job=make_job("missing"))


@pytest.mark.parametrize("path", ["name", "state", "schedule_time", "user_update_time", "status",
                                  "last_attempt_time", "timeZone", "no_such_field", "retry_config.nope"])
def test_invalid_update_masks(client: Any, parent: str, make_job: JobFactory, path: str) -> None:
    created = client.create_job(parent=parent, job=make_job())
    with pytest.raises(gexc.InvalidArgument, match="Invalid mask for Job"):
        client.update_job(job=created, update_mask=field_mask_pb2.FieldMask(paths=[path]))


def test_update_that_leaves_no_target_is_refused(client: Any, parent: str, make_job: JobFactory) -> None:
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
