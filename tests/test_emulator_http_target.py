"""HTTP targets fire for real: the emulator sends the job's method, headers and body to a local
target, with an OIDC ID token that verifies against the emulator's published keys as Google's
verify against Google's; a failing target is retried per the job's retry config; each attempt
is logged and kept in the job's status."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import requests
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from emulator_helpers import Target, eventually
from google.auth import jwt
from google.auth.transport.requests import Request
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)
from google.oauth2 import id_token

from scheduler.emulator import CloudSchedulerEmulator
from scheduler.emulator.http_target import HttpAttempt, HttpDeliverer, code_for_http_status
from scheduler.emulator.oidc import ISSUER, PEM_CERTS_PATH, TokenIssuer
from scheduler.emulator.store import Execution

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

SERVICE_ACCOUNT = "invoker@demo.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def emulator() -> Iterator[CloudSchedulerEmulator]:
    with CloudSchedulerEmulator(rest_port=0) as running:
        yield running


@pytest.fixture
def client(emulator: CloudSchedulerEmulator) -> Any:
    transport = CloudSchedulerGrpcTransport(channel=grpc.insecure_channel(emulator.host))
    return scheduler_v1.CloudSchedulerClient(transport=transport)


@pytest.fixture
def target() -> Iterator[Target]:
    running = Target()
    yield running
    running.close()


@pytest.fixture
def parent(project_id: str) -> str:
    return f"projects/{project_id}/locations/us-central1"



def _http_job(parent: str, uri: str, job_id: str = "call", **fields: Any) -> scheduler_v1.Job:
    return scheduler_v1.Job({"name": f"{parent}/jobs/{job_id}", "schedule": "0 0 1 1 *",
                             "http_target": {"uri": uri, **fields.pop("http_target", {})},
                             **fields})


def test_run_sends_method_headers_body_and_a_verifiable_oidc_token(
        emulator: CloudSchedulerEmulator, client: Any, parent: str, target: Target) -> None:
    job = _http_job(parent, f"{target.url}/hook?x=1", http_target={
        "http_method": "PUT", "body": b'{"a": 1}',
        "headers": {"Content-Type": "application/json", "X-Custom": "yes", "Host": "ignored",
                    "user-agent": "mine"},
        "oidc_token": {"service_account_email": SERVICE_ACCOUNT, "audience": "https://my.app"}})
    created = client.create_job(parent=parent, job=job)
    assert created.attempt_deadline == timedelta(minutes=3)
    assert created.http_target.headers["User-Agent"] == "Google-Cloud-Scheduler"
    assert "user-agent" not in created.http_target.headers

    client.run_job(name=created.name)
    [received] = eventually(lambda: target.requests)
    assert (received.method, received.path, received.body) == ("PUT", "/hook?x=1", b'{"a": 1}')
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["content-type"] == "application/json" and headers["x-custom"] == "yes"
    assert headers["user-agent"] == "Google-Cloud-Scheduler"
    assert headers["x-cloudscheduler"] == "true" and headers["x-cloudscheduler-jobname"] == "call"
    assert "x-cloudscheduler-scheduletime" not in headers  # a forced run has no slot
    assert headers["host"] == target.url.removeprefix("http://")
    scheme, token = headers["authorization"].split(" ")
    assert scheme == "Bearer"

    # As a Cloud Run service verifies Google's tokens, with the emulator's certificates URL.
    certs_url = f"http://127.0.0.1:{emulator.rest_port}{PEM_CERTS_PATH}"
    claims = id_token.verify_token(token, Request(), audience="https://my.app",
                                   certs_url=certs_url)
    assert claims["iss"] == ISSUER and claims["email"] == SERVICE_ACCOUNT
    assert claims["email_verified"] is True and claims["exp"] - claims["iat"] == 3600
    # And with the JWK set, the form most other libraries read.
    assert emulator.jwks_url is not None
    [key] = requests.get(emulator.jwks_url, timeout=10).json()["keys"]
    assert key["kid"] == jwt.decode_header(token)["kid"] and key["alg"] == "RS256"
    numbers = RSAPublicNumbers(_int(key["e"]), _int(key["n"]))
    pem = numbers.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    assert jwt.decode(token, certs={key["kid"]: pem}, audience="https://my.app") == claims
    with pytest.raises(ValueError):
        id_token.verify_token(token, Request(), audience="https://other.app",
                              certs_url=certs_url)

    done = eventually(lambda: scheduler_v1.Job.pb(j := client.get_job(name=created.name))
                       .HasField("status") and j)
    assert done.status.code == 0


def test_this_projects_api_accepts_the_emulators_tokens_with_only_the_certificates_moved(
        emulator: CloudSchedulerEmulator, client: Any, parent: str, target: Target) -> None:
    """`scion_scheduler.api.auth` checks callers as Google's docs say, with Google's own
    certificates URL; pointing that URL at the emulator is all a local run needs."""
    from scion_scheduler.api.auth import OidcPolicy, google_verifier

    oidc = {"service_account_email": SERVICE_ACCOUNT, "audience": "scion-scheduler"}
    created = client.create_job(parent=parent, job=_http_job(
        parent, f"{target.url}/api", http_target={"oidc_token": oidc}))
    client.run_job(name=created.name)
    [received] = eventually(lambda: target.requests)
    token = received.headers["Authorization"].removeprefix("Bearer ")

    class ToEmulator(requests.adapters.HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            request.url = request.url.replace("https://www.googleapis.com",
                                              f"http://127.0.0.1:{emulator.rest_port}")
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://www.googleapis.com/", ToEmulator())
    policy = OidcPolicy(("scion-scheduler",), frozenset({SERVICE_ACCOUNT}),
                        google_verifier(session))
    assert policy.check(token) == SERVICE_ACCOUNT


def _int(b64: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)), "big")


def test_the_audience_defaults_to_the_uri_and_a_body_gets_a_content_type(
        client: Any, parent: str, target: Target) -> None:
    uri = f"{target.url}/default"
    created = client.create_job(parent=parent, job=_http_job(parent, uri, http_target={
        "body": b"raw", "oidc_token": {"service_account_email": SERVICE_ACCOUNT}}))
    client.run_job(name=created.name)
    [received] = eventually(lambda: target.requests)
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert received.method == "POST"  # HTTP_METHOD_UNSPECIFIED means POST
    assert headers["content-type"] == "application/octet-stream"
    claims = jwt.decode(headers["authorization"].split(" ")[1], verify=False)
    assert claims["aud"] == uri


def test_a_failing_target_is_retried_per_the_retry_config(
        client: Any, parent: str, target: Target) -> None:
    target.statuses = [503, 500, 200]
    retry = {"retry_count": 3, "min_backoff_duration": timedelta(milliseconds=200),
             "max_backoff_duration": timedelta(seconds=1), "max_doublings": 1}
    with structlog.testing.capture_logs() as logs:
        created = client.create_job(parent=parent, job=_http_job(
            parent, f"{target.url}/flaky", retry_config=retry))
        client.run_job(name=created.name)
        assert eventually(lambda: len(target.requests) == 3)
        job = eventually(lambda: (j := client.get_job(name=created.name)).status.code == 0
                          and scheduler_v1.Job.pb(j).HasField("status") and j)
    assert job
    gaps = [b.at - a.at for a, b in zip(target.requests, target.requests[1:], strict=False)]
    assert gaps[0] >= timedelta(milliseconds=180) and gaps[1] >= timedelta(milliseconds=380)
    time.sleep(0.5)
    assert len(target.requests) == 3
    attempts = [e for e in logs if e["event"] in ("job fired", "job attempt failed")
                and e["job"] == created.name]
    assert [(e["attempt"], e["http_status"], e.get("code")) for e in attempts] == [
        (1, 503, "UNAVAILABLE"), (2, 500, "INTERNAL"), (3, 200, None)]
    assert all(e["target"] == f"{target.url}/flaky" and e["duration_ms"] >= 0 for e in attempts)


def test_retries_stop_at_retry_count_and_the_status_keeps_the_last_failure(
        client: Any, parent: str, target: Target) -> None:
    target.statuses = [404]
    retry = {"retry_count": 2, "min_backoff_duration": timedelta(milliseconds=100),
             "max_backoff_duration": timedelta(milliseconds=200)}
    created = client.create_job(parent=parent, job=_http_job(
        parent, f"{target.url}/gone", retry_config=retry))
    client.run_job(name=created.name)
    assert eventually(lambda: len(target.requests) >= 3)
    time.sleep(1.0)
    assert len(target.requests) == 3
    job = client.get_job(name=created.name)
    assert job.status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "HTTP 404" in job.status.message
    assert job.schedule_time == created.schedule_time


def test_an_unreachable_target_fails_the_attempt(client: Any, parent: str) -> None:
    created = client.create_job(parent=parent, job=_http_job(parent, "http://127.0.0.1:9/none"))
    client.run_job(name=created.name)
    code = eventually(lambda: client.get_job(name=created.name).status.code)
    assert code == grpc.StatusCode.UNAVAILABLE.value[0]


def test_no_answer_within_the_attempt_deadline_is_deadline_exceeded(target: Target) -> None:
    """The deadline itself, on a deliverer (the API's 15 s minimum would make this slow)."""
    target.delay = 2.0
    now = datetime.now(UTC)
    execution = Execution(name="projects/p/locations/l/jobs/slow", slot=now, trigger="manual",
                          attempt=1, first_attempt=now, topic="", data=b"", attributes={},
                          http=scheduler_v1.HttpTarget.pb()(uri=f"{target.url}/slow"),
                          deadline=0.3)
    deliverer = HttpDeliverer(TokenIssuer())
    results: list[HttpAttempt] = []
    try:
        deliverer.deliver(execution, results.append)
        [result] = eventually(lambda: results)
    finally:
        deliverer.close()
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert result.http_status is None and 0.25 <= result.seconds < 2.0
    assert "attempt deadline (0.3s)" in result.message


@pytest.mark.parametrize(("http_target", "fields", "reason"), [
    ({"uri": "ftp://example.com/"}, {}, "job.http_target.uri"),
    ({"uri": "/relative"}, {}, "job.http_target.uri"),
    ({"uri": "https://example.com/", "http_method": "GET", "body": b"x"}, {},
     "job.http_target.body"),
    ({"uri": "https://example.com/"}, {"attempt_deadline": timedelta(seconds=5)},
     "job.attempt_deadline"),
])
def test_invalid_http_targets_are_refused(client: Any, parent: str, http_target: dict[str, Any],
                                          fields: dict[str, Any], reason: str) -> None:
    from google.api_core import exceptions as gexc

    job = scheduler_v1.Job({"name": f"{parent}/jobs/bad", "schedule": "* * * * *",
                            "http_target": http_target, **fields})
    with pytest.raises(gexc.InvalidArgument, match=reason):
        client.create_job(parent=parent, job=job)


def test_http_status_to_rpc_code() -> None:
    names = {s: grpc.StatusCode(next(c for c in grpc.StatusCode
                                     if c.value[0] == code_for_http_status(s))).name
             for s in (200, 204, 400, 401, 403, 404, 409, 418, 429, 500, 502, 503, 504)}
    assert names == {200: "OK", 204: "OK", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                     403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
                     418: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                     502: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@pytest.mark.slow
def test_an_http_job_fires_at_its_slot(client: Any, parent: str, target: Target) -> None:
    """Waits for a real cron slot (up to a minute)."""
    created = client.create_job(parent=parent, job=_http_job(
        parent, f"{target.url}/tick", schedule="* * * * *", time_zone="America/New_York"))
    slot = datetime.fromtimestamp(created.schedule_time.timestamp(), UTC)
    [received] = eventually(lambda: target.requests,
                             timeout=(slot - datetime.now(UTC)).total_seconds() + 15)
    assert slot <= received.at < slot + timedelta(seconds=15)
    stamp = {k.lower(): v for k, v in received.headers.items()}["x-cloudscheduler-scheduletime"]
    assert datetime.fromisoformat(stamp) == slot
    after = eventually(lambda: scheduler_v1.Job.pb(j := client.get_job(name=created.name))
                        .HasField("status") and j)
    assert after.status.code == 0
    assert datetime.fromtimestamp(after.last_attempt_time.timestamp(), UTC) >= slot
    next_slot = datetime.fromtimestamp(after.schedule_time.timestamp(), UTC)
    assert next_slot == slot + timedelta(minutes=1)
    assert received.path == "/tick"
