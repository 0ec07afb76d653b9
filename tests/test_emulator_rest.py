"""The emulator's REST face: the official client's REST transport makes the same round trip as
its gRPC transport, the JSON is the service's own, errors are Google's JSON error body with the
gRPC face's codes and messages, and both faces share one store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)
from google.protobuf import field_mask_pb2

from scheduler.emulator import CloudSchedulerEmulator
from scheduler.emulator.rest import SYSTEM_PARAMETERS

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

LOCATION = "us-central1"


@pytest.fixture(scope="module")
def emulator(pubsub_emulator: str) -> Iterator[CloudSchedulerEmulator]:
    with CloudSchedulerEmulator(pubsub_host=pubsub_emulator, rest_port=0) as running:
        yield running


def rest_client(emulator: CloudSchedulerEmulator) -> Any:
    return scheduler_v1.CloudSchedulerClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{emulator.rest_port}"})


def grpc_client(emulator: CloudSchedulerEmulator) -> Any:
    channel = grpc.insecure_channel(emulator.host)
    return scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))


CLIENTS = {"rest": rest_client, "grpc": grpc_client}


@pytest.fixture
def parent(project_id: str) -> str:
    return f"projects/{project_id}/locations/{LOCATION}"


@pytest.fixture
def rest(emulator: CloudSchedulerEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{emulator.rest_port}") as client:
        yield client


def _job(parent: str, job_id: str, **fields: Any) -> scheduler_v1.Job:
    project = parent.split("/")[1]
    values: dict[str, Any] = {
        "name": f"{parent}/jobs/{job_id}", "schedule": "0 9 * * *", "time_zone": "Europe/Paris",
        "pubsub_target": {"topic_name": f"projects/{project}/topics/fires", "data": b"{}"},
    }
    values.update(fields)
    return scheduler_v1.Job(values)


def _when(timestamp: Any) -> datetime:
    return datetime.fromtimestamp(timestamp.timestamp(), UTC)


@pytest.mark.parametrize("transport", sorted(CLIENTS))
def test_the_client_round_trip_is_the_same_on_both_transports(
        emulator: CloudSchedulerEmulator, parent: str, project_id: str, transport: str) -> None:
    client = CLIENTS[transport](emulator)
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = client.create_job(parent=parent, job=_job(parent, "a", retry_config={
        "retry_count": 2, "min_backoff_duration": timedelta(seconds=2)}))
    assert created.state == scheduler_v1.Job.State.ENABLED
    assert _when(created.user_update_time) >= before
    assert _when(created.schedule_time).astimezone(ZoneInfo("Europe/Paris")).hour == 9
    assert created.retry_config.min_backoff_duration == timedelta(seconds=2)
    assert created.retry_config.max_doublings == 5
    assert client.get_job(name=created.name) == created

    for job_id in ("b", "c", "d"):
        client.create_job(parent=parent, job=_job(parent, job_id))
    pages = [[job.name.rsplit("/", 1)[1] for job in page.jobs]
             for page in client.list_jobs(request={"parent": parent, "page_size": 3}).pages]
    assert pages == [["a", "b", "c"], ["d"]]

    updated = client.update_job(job=scheduler_v1.Job(name=created.name, schedule="30 6 * * *",
                                                     description="ignored"),
                                update_mask=field_mask_pb2.FieldMask(paths=["schedule"]))
    assert (updated.schedule, updated.description) == ("30 6 * * *", "")
    assert _when(updated.schedule_time).astimezone(ZoneInfo("Europe/Paris")).hour == 6
    paused = client.pause_job(name=created.name)
    assert paused.state == scheduler_v1.Job.State.PAUSED
    assert not scheduler_v1.Job.pb(paused).HasField("schedule_time")
    assert client.resume_job(name=created.name).state == scheduler_v1.Job.State.ENABLED
    ran = client.run_job(name=created.name)
    assert _when(ran.last_attempt_time) >= before

    # FAILED_PRECONDITION is HTTP 400, which the REST transport raises as its parent class.
    with pytest.raises(gexc.BadRequest, match="must be PAUSED to be resumed"):
        client.resume_job(name=created.name)
    with pytest.raises(gexc.Conflict):  # ALREADY_EXISTS is HTTP 409, as ABORTED is
        client.create_job(parent=parent, job=_job(parent, "a"))
    with pytest.raises(gexc.BadRequest, match="Schedule or time zone is invalid"):
        client.create_job(parent=parent, job=_job(parent, "e", schedule="every day"))
    client.delete_job(name=created.name)
    with pytest.raises(gexc.NotFound, match=f"Job not found: {created.name}"):
        client.get_job(name=created.name)

    locations = client.list_locations(request={"name": f"projects/{project_id}"})
    assert LOCATION in [location.location_id for location in locations.locations]
    location = client.get_location(request={"name": parent})
    assert (location.location_id, dict(location.labels)) == (
        LOCATION, {"cloud.googleapis.com/region": LOCATION})


def test_a_job_made_on_either_face_is_seen_by_the_other(
        emulator: CloudSchedulerEmulator, parent: str) -> None:
    via_rest, via_grpc = rest_client(emulator), grpc_client(emulator)
    from_rest = via_rest.create_job(parent=parent, job=_job(parent, "from-rest"))
    from_grpc = via_grpc.create_job(parent=parent, job=_job(parent, "from-grpc"))
    assert via_grpc.get_job(name=from_rest.name) == from_rest
    assert via_rest.get_job(name=from_grpc.name) == from_grpc
    paused = via_rest.pause_job(name=from_grpc.name)
    assert via_grpc.get_job(name=from_grpc.name) == paused
    assert sorted(j.name for j in via_grpc.list_jobs(parent=parent)) == sorted(
        j.name for j in via_rest.list_jobs(parent=parent))


def test_json_is_written_as_the_service_writes_it(rest: httpx.Client, parent: str,
                                                   project_id: str) -> None:
    body = {"name": f"{parent}/jobs/j", "schedule": "*/5 * * * *", "timeZone": "UTC",
            "pubsubTarget": {"topicName": f"projects/{project_id}/topics/t", "data": "aGk=",
                             "attributes": {"k": "v"}},
            "retryConfig": {"retryCount": 1, "maxBackoffDuration": "10s"}}
    response = rest.post(f"/v1/{parent}/jobs", json=body)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["state"] == "ENABLED"
    assert job["retryConfig"] == {"retryCount": 1, "maxRetryDuration": "0s",
                                  "minBackoffDuration": "5s", "maxBackoffDuration": "10s",
                                  "maxDoublings": 5}
    assert job["pubsubTarget"] == body["pubsubTarget"]
    for stamp in (job["userUpdateTime"], job["scheduleTime"]):
        assert stamp.endswith("Z") and datetime.fromisoformat(stamp).tzinfo is not None
    assert datetime.fromisoformat(job["scheduleTime"]).minute % 5 == 0
    assert "status" not in job and "lastAttemptTime" not in job  # unset fields are left out

    patched = rest.patch(f"/v1/{parent}/jobs/j", params={"updateMask": "retryConfig.retryCount"},
                         json={"retryConfig": {"retryCount": 3}, "schedule": "ignored"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["retryConfig"]["retryCount"] == 3
    assert patched.json()["schedule"] == "*/5 * * * *"

    rest.post(f"/v1/{parent}/jobs", json={**body, "name": f"{parent}/jobs/k"})
    first = rest.get(f"/v1/{parent}/jobs", params={"pageSize": 1}).json()
    assert [j["name"] for j in first["jobs"]] == [f"{parent}/jobs/j"]
    second = rest.get(f"/v1/{parent}/jobs", params={"pageSize": 1,
                                                    "pageToken": first["nextPageToken"]}).json()
    assert [j["name"] for j in second["jobs"]] == [f"{parent}/jobs/k"]
    assert "nextPageToken" not in second
    assert rest.post(f"/v1/{parent}/jobs/j:pause").json()["state"] == "PAUSED"
    assert rest.delete(f"/v1/{parent}/jobs/j").json() == {}
    assert rest.get(f"/v1/{parent}/jobs", params={"alt": "json"}).json()["jobs"][0]["name"] \
        == f"{parent}/jobs/k"


ERROR_CASES = {
    "GetJob": ("GET", "jobs/missing", None,
               lambda c, p: c.get_job(name=f"{p}/jobs/missing", retry=None)),
    "CreateJob-name": (
        "POST", "jobs", {"name": "{p}/jobs/bad id", "schedule": "* * * * *"},
        lambda c, p: c.create_job(parent=p, job={"name": f"{p}/jobs/bad id",
                                                 "schedule": "* * * * *"})),
    "CreateJob-cron": (
        "POST", "jobs", {"name": "{p}/jobs/x", "schedule": "61 * * * *",
                         "httpTarget": {"uri": "https://example.com/"}},
        lambda c, p: c.create_job(parent=p, job={"name": f"{p}/jobs/x", "schedule": "61 * * * *",
                                                 "http_target": {"uri": "https://example.com/"}})),
    "UpdateJob": ("PATCH", "jobs/missing", {"schedule": "* * * * *"},
                  lambda c, p: c.update_job(job={"name": f"{p}/jobs/missing",
                                                 "schedule": "* * * * *"})),
    "ResumeJob": ("POST", "jobs/missing:resume", None,
                  lambda c, p: c.resume_job(name=f"{p}/jobs/missing")),
    "GetLocation": ("GET", "", None, lambda c, p: c.get_location(
        request={"name": p.replace(LOCATION, "mars-north1")})),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_carry_the_grpc_faces_code_and_message(
        emulator: CloudSchedulerEmulator, rest: httpx.Client, parent: str, case: str) -> None:
    verb, path, body, call = ERROR_CASES[case]
    payload = None if body is None else {
        k: v.replace("{p}", parent) if isinstance(v, str) else v for k, v in body.items()}
    url = f"/v1/{parent}/{path}".rstrip("/")
    if case == "GetLocation":
        url = url.replace(LOCATION, "mars-north1")
    response = rest.request(verb, url, json=payload)
    with pytest.raises(gexc.GoogleAPICallError) as raised:
        call(grpc_client(emulator), parent)
    error = response.json()["error"]
    assert set(error) == {"code", "message", "status", "details"}
    assert error["status"] == raised.value.grpc_status_code.name
    assert error["message"] == raised.value.message
    assert error["code"] == response.status_code == raised.value.code


def test_bad_requests_get_googles_error_body(rest: httpx.Client, parent: str) -> None:
    unknown = rest.post(f"/v1/{parent}/jobs", json={"schedule": "* * * * *", "colour": "red"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "colour" in unknown.json()["error"]["message"]
    not_json = rest.post(f"/v1/{parent}/jobs", content=b"{not json")
    assert not_json.json()["error"]["code"] == 400
    nowhere = rest.get("/v2/elsewhere")
    assert nowhere.status_code == 404
    wrong_verb = rest.put(f"/v1/{parent}/jobs/j")
    assert wrong_verb.status_code == 404 and wrong_verb.json()["error"]["status"] == "NOT_FOUND"
    assert rest.get(f"/v1/{parent}/jobs", params={"bogus": "1"}).status_code == 400
    clash = rest.post(f"/v1/{parent}/jobs/j:run", params={"name.x": "1"}, json={"name": "n"})
    assert clash.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_locations_page_with_the_default_first(rest: httpx.Client, project_id: str) -> None:
    first = rest.get(f"/v1/projects/{project_id}/locations", params={"pageSize": 2}).json()
    seen = [loc["locationId"] for loc in first["locations"]]
    assert len(seen) == 2 and seen[0] == LOCATION
    assert first["locations"][0]["labels"] == {"cloud.googleapis.com/region": LOCATION}
    token = first["nextPageToken"]
    while token:
        page = rest.get(f"/v1/projects/{project_id}/locations",
                        params={"pageSize": 20, "pageToken": token}).json()
        seen += [loc["locationId"] for loc in page["locations"]]
        token = page.get("nextPageToken", "")
    everything = rest.get(f"/v1/projects/{project_id}/locations").json()
    assert "nextPageToken" not in everything
    assert seen == [loc["locationId"] for loc in everything["locations"]]
    bad = rest.get(f"/v1/projects/{project_id}/locations", params={"pageToken": "x"})
    assert bad.status_code == 400


def test_system_parameters_are_not_request_fields() -> None:
    assert {"alt", "$alt", "prettyPrint", "fields"} <= SYSTEM_PARAMETERS


def test_faults_and_call_counts_cover_the_rest_face(emulator: CloudSchedulerEmulator,
                                                    rest: httpx.Client, parent: str) -> None:
    before = emulator.call_counts["ListJobs"]
    emulator.set_faults(1.0, ("UNAVAILABLE",), ("ListJobs",))
    try:
        failed = rest.get(f"/v1/{parent}/jobs")
    finally:
        emulator.clear_faults()
    assert failed.status_code == 503
    assert failed.json()["error"] == {"code": 503, "message": "injected fault: UNAVAILABLE",
                                      "status": "UNAVAILABLE", "details": []}
    assert emulator.call_counts["ListJobs"] == before + 1


def test_a_taken_rest_port_is_an_error(emulator: CloudSchedulerEmulator) -> None:
    from scheduler.emulator import EmulatorError

    with pytest.raises(EmulatorError, match="cannot listen"):
        CloudSchedulerEmulator(rest_port=emulator.rest_port).start()


def test_the_command_serves_rest_beside_grpc_and_says_how_to_point_gcloud_at_it(
        parent: str) -> None:
    from scion_scheduler.google_emulators import free_port

    port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "scion_scheduler.cli", "--log-format", "json", "emulator",
               "--port", str(port), "--rest-port", str(rest_port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{rest_port}"
        listed = _eventually_answered(f"{base}/v1/{parent}/jobs")
        assert listed == {}
        keys = httpx.get(f"{base}/oauth2/v3/certs", timeout=10).json()["keys"]
        assert [key["kty"] for key in keys] == ["RSA"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    [ready] = [line for line in lines if line["message"] == "ready"]
    assert ready["rest_url"] == f"{base}/" and ready["jwks_url"] == f"{base}/oauth2/v3/certs"
    assert [line["command"] for line in lines if line["message"] == "for gcloud"] == [
        f"gcloud config set api_endpoint_overrides/cloudscheduler {base}/",
        "gcloud config set auth/disable_credentials true"]


def _eventually_answered(url: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=5).json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_command_refuses_a_bad_rest_port() -> None:
    result = subprocess.run([sys.executable, "-m", "scion_scheduler.cli", "emulator",
                             "--rest-port", "70000"], capture_output=True, timeout=60, check=False)
    assert result.returncode == 2 and b"--rest-port: must be from 0 to 65535" in result.stderr
