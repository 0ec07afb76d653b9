"""The real gcloud, unchanged, against the emulator's REST face: every `gcloud scheduler jobs`
verb, Pub/Sub and HTTP jobs firing, and bad input refused with the service's codes and words.

gcloud runs with a throwaway CLOUDSDK_CONFIG directory, so the user's gcloud configuration is
never read or touched. Each invocation takes a second or more, so they all live here, marked
slow, against one emulator for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from emulator_helpers import Target, eventually
from google.auth.transport.requests import Request
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)
from google.oauth2 import id_token

from scheduler.emulator import CloudSchedulerEmulator
from scheduler.emulator.oidc import PEM_CERTS_PATH

pytestmark = [
    pytest.mark.slow, pytest.mark.emulator, pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed"),
]

LOCATION = "us-central1"
SERVICE_ACCOUNT = "invoker@demo.iam.gserviceaccount.com"
Gcloud = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def emulator(pubsub_emulator: str) -> Iterator[CloudSchedulerEmulator]:
    with CloudSchedulerEmulator(pubsub_host=pubsub_emulator, rest_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def project() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _clean_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    env.update({"CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
                "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1"})
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gcloud", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def gcloud(emulator: CloudSchedulerEmulator, project: str,
           tmp_path_factory: pytest.TempPathFactory) -> Gcloud:
    """`gcloud scheduler jobs ARGS --location us-central1`, pointed at the emulator by the
    environment variables the README names; JSON output is parsed into `.job`."""
    assert emulator.rest_url is not None
    env = _clean_env(tmp_path_factory.mktemp("gcloud-config"))
    env.update({"CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDSCHEDULER": emulator.rest_url,
                "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true", "CLOUDSDK_CORE_PROJECT": project})

    def run(*args: str, location: str | None = LOCATION,
            **more_env: str) -> subprocess.CompletedProcess[str]:
        where = [f"--location={location}"] if location else []
        return _run({**env, **more_env}, "scheduler", "jobs", *args, *where)

    return run


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture(scope="module")
def client(emulator: CloudSchedulerEmulator) -> Any:
    transport = CloudSchedulerGrpcTransport(channel=grpc.insecure_channel(emulator.host))
    return scheduler_v1.CloudSchedulerClient(transport=transport)



def test_a_pubsub_job_through_every_verb(gcloud: Gcloud, client: Any, project: str,
                                         pubsub_emulator: str) -> None:
    import google.cloud.pubsub_v1 as pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{project}/topics/fires").name
    subscription = subscriber.create_subscription(
        name=f"projects/{project}/subscriptions/fires", topic=topic).name
    name = f"projects/{project}/locations/{LOCATION}/jobs/nightly"

    created = _ok(gcloud(
        "create", "pubsub", "nightly", "--schedule=0 3 * * *", "--time-zone=Europe/Berlin",
        "--topic=fires", '--message-body={"a": 1}', "--attributes=schedule-id=nightly,k=v",
        "--description=a nightly job", "--max-retry-attempts=3", "--min-backoff=2s",
        "--max-backoff=30s", "--max-doublings=2", "--max-retry-duration=60s", "--format=json"))
    assert created["name"] == name and created["state"] == "ENABLED"
    assert created["pubsubTarget"] == {"topicName": topic, "data": "eyJhIjogMX0=",
                                       "attributes": {"schedule-id": "nightly", "k": "v"}}
    assert created["retryConfig"] == {"retryCount": 3, "maxRetryDuration": "60s",
                                      "minBackoffDuration": "2s", "maxBackoffDuration": "30s",
                                      "maxDoublings": 2}
    assert created["scheduleTime"].endswith(("01:00:00Z", "02:00:00Z"))  # 03:00 in Berlin
    # The gRPC face sees the job gcloud made through the REST face.
    assert scheduler_v1.Job.to_dict(client.get_job(name=name))["description"] == "a nightly job"

    assert _ok(gcloud("describe", "nightly", "--format=json")) == created
    listed = _ok(gcloud("list", "--format=json"))
    assert [job["name"] for job in listed] == [name]

    updated = _ok(gcloud("update", "pubsub", "nightly", "--schedule=30 4 * * *",
                         "--message-body=bye", "--format=json"))
    assert (updated["schedule"], updated["pubsubTarget"]["data"]) == ("30 4 * * *", "Ynll")
    assert updated["pubsubTarget"]["attributes"] == created["pubsubTarget"]["attributes"]
    assert updated["userUpdateTime"] > created["userUpdateTime"]

    _ok(gcloud("pause", "nightly"))
    paused = _ok(gcloud("describe", "nightly", "--format=json"))
    assert paused["state"] == "PAUSED" and "scheduleTime" not in paused
    _ok(gcloud("resume", "nightly"))
    assert client.get_job(name=name).state == scheduler_v1.Job.State.ENABLED

    _ok(gcloud("run", "nightly"))
    response = eventually(lambda: subscriber.pull(subscription=subscription, max_messages=5,
                                                   timeout=5).received_messages)
    assert [m.message.data for m in response] == [b"bye"]
    ran = eventually(lambda: "status" in (j := _ok(gcloud("describe", "nightly", "--format=json")))
                      and j)
    assert ran["status"] == {} and ran["lastAttemptTime"] >= updated["userUpdateTime"]

    _ok(gcloud("delete", "nightly", "--quiet"))
    missing = gcloud("describe", "nightly")
    assert missing.returncode == 1
    assert f"NOT_FOUND: Job not found: {name}" in missing.stderr
    publisher.stop()
    subscriber.close()


def test_an_http_job_through_every_verb(gcloud: Gcloud, emulator: CloudSchedulerEmulator,
                                        project: str) -> None:
    target = Target()
    target.statuses = [500, 200]
    try:
        # A slot once a year: a slot of its own landing during the test (as `*/10` did at a
        # :00) would add a request beside the `run`'s.
        created = _ok(gcloud(
            "create", "http", "hook", "--schedule=0 3 1 1 *", f"--uri={target.url}/hook",
            "--http-method=PUT", "--headers=X-A=1,Content-Type=application/json",
            '--message-body={"x": 1}', f"--oidc-service-account-email={SERVICE_ACCOUNT}",
            "--oidc-token-audience=https://hook.example", "--attempt-deadline=20s",
            "--max-retry-attempts=2", "--min-backoff=1s", "--max-backoff=2s", "--format=json"))
        assert created["httpTarget"] == {
            "uri": f"{target.url}/hook", "httpMethod": "PUT", "body": "eyJ4IjogMX0=",
            "headers": {"X-A": "1", "Content-Type": "application/json",
                        "User-Agent": "Google-Cloud-Scheduler"},
            "oidcToken": {"serviceAccountEmail": SERVICE_ACCOUNT,
                          "audience": "https://hook.example"}}
        assert created["attemptDeadline"] == "20s"

        _ok(gcloud("run", "hook"))
        first, retry = eventually(lambda: len(target.requests) == 2 and target.requests)
        assert retry.at - first.at >= timedelta(seconds=0.9)  # --min-backoff=1s
        assert (retry.method, retry.path, retry.body) == ("PUT", "/hook", b'{"x": 1}')
        token = retry.headers["Authorization"].removeprefix("Bearer ")
        certs = f"http://127.0.0.1:{emulator.rest_port}{PEM_CERTS_PATH}"
        claims = id_token.verify_token(token, Request(), audience="https://hook.example",
                                       certs_url=certs)
        assert claims["email"] == SERVICE_ACCOUNT

        updated = _ok(gcloud("update", "http", "hook", f"--uri={target.url}/v2",
                             "--clear-auth-token", "--update-headers=X-B=2", "--format=json"))
        assert "oidcToken" not in updated["httpTarget"]
        assert updated["httpTarget"]["uri"] == f"{target.url}/v2"
        assert updated["httpTarget"]["headers"]["X-B"] == "2"
        _ok(gcloud("run", "hook"))
        third = eventually(lambda: len(target.requests) == 3 and target.requests[2])
        assert third.path == "/v2" and "Authorization" not in third.headers
        assert [job["name"].rsplit("/", 1)[1] for job in _ok(gcloud("list", "--format=json"))] \
            == ["hook"]
        _ok(gcloud("delete", "hook", "--quiet"))
    finally:
        target.close()


BAD_INPUT = {
    "bad job name": (["create", "pubsub", "no spaces allowed", "--schedule=* * * * *",
                      "--topic=t", "--message-body=x"], LOCATION, "INVALID_ARGUMENT",
                     'Job name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'),
    "bad cron": (["create", "pubsub", "j", "--schedule=every day", "--topic=t",
                  "--message-body=x"], LOCATION, "INVALID_ARGUMENT",
                 "Schedule or time zone is invalid"),
    "unknown location": (["create", "pubsub", "j", "--schedule=* * * * *", "--topic=t",
                          "--message-body=x"], "mars-north1", "INVALID_ARGUMENT",
                         "Location 'mars-north1' is not a valid location. Use ListLocations"),
    "topic in another project": (["create", "pubsub", "j", "--schedule=* * * * *",
                                  "--topic=projects/elsewhere/topics/t", "--message-body=x"],
                                 LOCATION, "INVALID_ARGUMENT", "the topic must be in the job's"),
    "missing job": (["pause", "nope"], LOCATION, "NOT_FOUND", "Job not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused_as_the_service_refuses_it(gcloud: Gcloud, client: Any,
                                                        project: str, case: str) -> None:
    args, location, code, words = BAD_INPUT[case]
    result = gcloud(*args, location=location)
    assert result.returncode == 1
    # gcloud prints the error body's status and message: "ERROR: (gcloud.…) CODE: message".
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR:")]
    assert f") {code}: " in line and words in line, result.stderr
    assert list(client.list_jobs(parent=f"projects/{project}/locations/{LOCATION}")) == []


def test_the_two_config_lines_point_gcloud_at_the_emulator(
        emulator: CloudSchedulerEmulator, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    commands = emulator.gcloud_config()
    assert [c.split()[3] for c in commands] == ["api_endpoint_overrides/cloudscheduler",
                                                "auth/disable_credentials"]
    for command in commands:
        assert _run(env, *command.split()[1:]).returncode == 0
    listed = _run(env, "scheduler", "jobs", "list", f"--location={LOCATION}",
                  "--project=configured", "--format=json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    locations = _run(env, "scheduler", "locations", "list", "--project=configured",
                     "--format=value(locationId)")
    assert LOCATION in locations.stdout.split(), locations.stderr


def test_without_location_gcloud_takes_the_default_from_the_app_engine_lookup(
        gcloud: Gcloud, emulator: CloudSchedulerEmulator, project: str) -> None:
    """SDK 528 asks App Engine whether the project has an app before it takes ListLocations'
    first location as the default; the emulator answers that lookup too."""
    assert emulator.rest_url is not None
    app_engine = {"CLOUDSDK_API_ENDPOINT_OVERRIDES_APPENGINE": emulator.rest_url}
    created = gcloud("create", "pubsub", "anywhere", "--schedule=0 0 * * *", "--topic=t",
                     "--message-body=x", "--format=json", location=None, **app_engine)
    assert _ok(created)["name"] == f"projects/{project}/locations/{LOCATION}/jobs/anywhere"
    assert f"App Engine app location ({LOCATION}) as the default" in created.stderr
    listed = _ok(gcloud("list", "--format=json", location=None, **app_engine))
    assert [job["name"].rsplit("/", 1)[1] for job in listed] == ["anywhere"]
    _ok(gcloud("delete", "anywhere", "--quiet"))
