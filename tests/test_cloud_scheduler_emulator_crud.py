"""The Cloud Scheduler emulator through the official client: create, list, update, delete, pause and
resume, locations (helpers: `cloud_scheduler_harness`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cloud_scheduler_harness import (
    LOCATION,
    JobFactory,
    ScriptedPublisher,
    when,
)
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler.emulator import CloudSchedulerEmulator
from scheduler.emulator.store import ApiError

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


# -- CRUD ---------------------------------------------------------------------------------------


def test_create_sets_output_only_fields(client: Any, parent: str, make_job: JobFactory) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = client.create_job(parent=parent, job=make_job(state=scheduler_v1.Job.State.PAUSED))
    assert created.state == scheduler_v1.Job.State.ENABLED  # output only: the request's is ignored
    assert when(created.user_update_time) >= before
    next_fire = when(created.schedule_time)
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
    assert when(updated.user_update_time) >= when(created.user_update_time)
    assert when(updated.schedule_time).astimezone(ZoneInfo("Europe/Paris")).hour == 6

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
    assert when(paused.user_update_time) >= when(created.user_update_time)
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
