"""The Cloud Scheduler emulator through the official client: the requests it refuses, as the real
service does (helpers: `cloud_scheduler_harness`)."""

from __future__ import annotations

from typing import Any

import pytest
from cloud_scheduler_harness import JobFactory, when
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


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
    assert when(created.schedule_time).hour == 9


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
