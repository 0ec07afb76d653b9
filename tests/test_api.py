"""The HTTP control API, every endpoint, against the Cloud Scheduler and Pub/Sub emulators (and
the SQLite and Firestore ledgers for history), in process through Starlette's test client."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from emulated_control import KEY, count_document_writes, emulated_settings
from fastapi.testclient import TestClient
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from worker_harness import wait_for

from scheduler.config import ConfigError, Settings
from scheduler.contract import decode_message, execution_id
from scheduler.control import SchedulerControl, with_registry
from scheduler.gcp import cloud_scheduler_client, publisher_client, subscriber_client
from scheduler.jobs import is_paused
from scheduler.jobs_decode import schedule_from_job
from scheduler.model import format_instant
from scheduler.registry import document_id
from scheduler.sync import WRITE_METHODS
from scheduler.validation import parse_schedule
from scion_scheduler.api import ApiContext, Authenticator, create_app
from scion_scheduler.api.auth import check_exposure, is_loopback
from scion_scheduler.cli import build_parser
from worker.ledger import Execution, State
from worker.sqlite_ledger import SqliteLedger

TOKEN = "test-api-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACTION = {"type": "http", "url": "https://hub.example/run"}
BODY_LIMIT = 64 * 1024

pytestmark = pytest.mark.emulator


def path(schedule_id: str, suffix: str = "") -> str:
    """The URL path of a schedule, its ID percent-encoded as one segment (as the hub does)."""
    return f"/v1/schedules/{quote(schedule_id, safe='')}{suffix}"


def doc(**fields: Any) -> dict[str, Any]:
    return {"cron": "0 3 * * *", "action": ACTION, **fields}


@dataclass
class Api:
    client: TestClient
    anon: TestClient
    control: SchedulerControl
    emulator: Any
    ledger: SqliteLedger
    settings: Settings
    context: ApiContext

    document_writes: list[int]

    def writes(self) -> int:
        """Cloud Scheduler writes, plus registry document writes in ticks mode."""
        return sum(self.emulator.call_counts[m] for m in WRITE_METHODS) + self.document_writes[0]


def make_settings(emulator: Any, pubsub: str, project: str, **extra: str) -> Settings:
    return emulated_settings(
        emulator,
        pubsub,
        project,
        api_retry_timeout="2s",
        sync_concurrency="4",
        api_token=TOKEN,
        **extra,
    )


@pytest.fixture(params=["jobs", "ticks"])
def mode(request: pytest.FixtureRequest) -> str:
    """The API behaves the same in both modes (issue 17)."""
    return str(request.param)


@pytest.fixture
def settings(cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str,
             mode: str, firestore_emulator: str) -> Settings:
    extra = {"mode": mode, "firestore_emulator_host": firestore_emulator} if mode == "ticks" \
        else {}
    return make_settings(cloud_scheduler_emulator, pubsub_emulator, project_id, **extra)


@contextmanager
def open_api(
    settings: Settings,
    emulator: Any,
    ledger: SqliteLedger,
    *,
    scheduler_client: Any = None,
    authenticator: Authenticator | None = None,
) -> Iterator[Api]:
    made = with_registry(settings, scheduler_client=scheduler_client) \
        if settings.mode == "ticks" \
        else SchedulerControl(settings, scheduler_client=scheduler_client)
    with made as control:
        context = ApiContext(
            control, ledger, authenticator or Authenticator.from_settings(settings)
        )
        app = create_app(context, max_body_bytes=BODY_LIMIT)
        with TestClient(app, headers=AUTH) as client, TestClient(app) as anon:
            counted = count_document_writes(control.registry) if control.registry else [0]
            yield Api(client, anon, control, emulator, ledger, settings, context, counted)


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.db")


@pytest.fixture
def api(settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger) -> Iterator[Api]:
    with open_api(settings, cloud_scheduler_emulator, ledger) as api:
        yield api


def jobs_only(mode: str | None) -> None:
    """Skip a test about writes to per-schedule jobs (faults injected into them, a write held
    mid-way) in ticks mode, which has no such job: its document writes are tested in
    tests/test_tick_sync.py."""
    if mode == "ticks":
        pytest.skip("about a per-schedule Cloud Scheduler job, which ticks mode does not have")


def errors_of(response: Any) -> list[tuple[str, str]]:
    return [(e["schedule_id"], e["field"]) for e in response.json()["errors"]]


# -- authentication ------------------------------------------------------------------------------


# Every route that needs credentials; "a" never exists, which must not matter to the checks.
ROUTES = [
    ("GET", "/v1/schedules"), ("GET", path("a")), ("PUT", path("a")), ("DELETE", path("a")),
    ("POST", path("a", ":pause")), ("POST", path("a", ":resume")), ("POST", path("a", ":run")),
    ("POST", "/v1/schedules:sync"), ("GET", path("a", "/executions")), ("GET", "/metrics"),
]
ROUTE_IDS = [f"{m} {u}" for m, u in ROUTES]
HUB_SA = "hub@p.iam.gserviceaccount.com"


def test_healthz_needs_no_credentials(api: Api) -> None:
    assert api.anon.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "url"), ROUTES, ids=ROUTE_IDS)
def test_every_route_needs_the_token(api: Api, method: str, url: str) -> None:
    missing = api.anon.request(method, url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="scion-scheduler"'
    assert missing.json()["code"] == "unauthenticated"
    wrong = api.anon.request(method, url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = api.anon.request(method, url, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert api.writes() == 0


@contextmanager
def oidc_api(settings: Settings, emulator: Any, ledger: SqliteLedger,
             verify: Callable[[str, Sequence[str]], Mapping[str, Any]]) -> Iterator[Api]:
    oidc = settings.with_overrides(api_token="", api_audience="https://scheduler.example, other",
                                   api_allowed_sa=HUB_SA)
    authenticator = Authenticator.from_settings(oidc, verify=verify)
    with open_api(oidc, emulator, ledger, authenticator=authenticator) as api:
        yield api


def test_oidc_tokens_are_verified_for_audience_and_allowed_service_accounts(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger
) -> None:
    seen: list[tuple[str, list[str]]] = []
    claims: dict[str, Mapping[str, Any]] = {"hub.a.b": {"email": HUB_SA, "email_verified": True},
              "unverified.a.b": {"email": HUB_SA}}

    def verify(token: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        seen.append((token, list(audiences)))
        if token not in claims:
            raise ValueError("Token has wrong audience")
        return claims[token]

    with oidc_api(settings, cloud_scheduler_emulator, ledger, verify) as api:
        assert api.context.authenticator.token is None and api.context.authenticator.enabled

        def get(token: str) -> Any:
            return api.anon.get("/v1/schedules", headers={"Authorization": f"Bearer {token}"})

        assert get("hub.a.b").status_code == 200
        assert seen[-1] == ("hub.a.b", ["https://scheduler.example", "other"])
        assert get("unverified.a.b").status_code == 401
        bad = get("forged.a.b")
        assert bad.status_code == 401 and "wrong audience" in bad.headers["WWW-Authenticate"]
        assert get(TOKEN).status_code == 401  # the shared token is not configured here

    with pytest.raises(ConfigError, match="must be set together"):
        Authenticator.from_settings(settings.with_overrides(api_audience="aud"), verify=verify)


def test_every_route_refuses_a_service_account_not_allowed(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger
) -> None:
    def verify(token: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        return {"email": "intruder@p.iam.gserviceaccount.com", "email_verified": True}

    with oidc_api(settings, cloud_scheduler_emulator, ledger, verify) as api:
        for method, url in ROUTES:
            forbidden = api.anon.request(method, url, headers={"Authorization": "Bearer x.y.z"})
            assert forbidden.status_code == 403, (method, url)
            assert forbidden.json()["code"] == "permission_denied"
            assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
        assert api.writes() == 0


@pytest.mark.parametrize(("error", "status", "code"), [
    (auth_exceptions.GoogleAuthError("Wrong issuer. 'iss' should be one of ..."), 401,
     "unauthenticated"),
    (auth_exceptions.InvalidValue("Token does not contain a valid 'aud' claim."), 401,
     "unauthenticated"),
    (auth_exceptions.TransportError("Could not fetch certificates at https://www.googleapis.com"),
     503, "unavailable"),
], ids=["rejected", "invalid-value", "certificates-unreachable"])
def test_oidc_verification_errors_are_401_or_503_never_500(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger,
    capsys: pytest.CaptureFixture[str], error: Exception, status: int, code: str,
) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6Imh1YiJ9.c2lnbmF0dXJlLWJ5dGVz"

    def verify(got: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        raise type(error)(f"{error} [{got}]")

    with oidc_api(settings, cloud_scheduler_emulator, ledger, verify) as api:
        for method, url in ROUTES:
            refused = api.anon.request(method, url, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == status, (method, url, refused.text)
            assert refused.json()["code"] == code
            assert token not in refused.text and token not in str(refused.headers)
            if status == 503:
                assert "certificates could not be fetched" in refused.json()["message"]
                assert "WWW-Authenticate" not in refused.headers
        assert api.writes() == 0
    assert token not in capsys.readouterr().err


def test_serve_refuses_to_listen_beyond_loopback_without_authentication() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "18080"])
    with pytest.raises(
        ConfigError, match=r"refusing to serve on 0\.0\.0\.0 without authentication"
    ):
        args.handler(args, Settings.from_env({}))
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    check_exposure(Authenticator(), "127.0.0.1")
    check_exposure(Authenticator(token="t"), "0.0.0.0")


# -- writes ----------------------------------------------------------------------------------------


def test_put_creates_then_updates_with_at_most_one_write_each(api: Api) -> None:
    created = api.client.put(path("nightly"), json=doc(description="nightly report"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert [o["kind"] for o in body["outcomes"]] == ["create"]
    view = body["schedule"]
    assert view["id"] == "nightly" and view["job"]["state"] == "ENABLED"
    assert (
        view["schedule"]
        == parse_schedule({"id": "nightly", **doc(description="nightly report")}).to_dict()
    )
    assert created.headers["ETag"] == f'"{view["fingerprint"]}"'
    assert len(view["next_fires"]) == 5 and all(
        f.endswith("T03:00:00Z") for f in view["next_fires"]
    )
    assert api.writes() == 1

    same = api.client.put(
        path("nightly"), json={"id": "nightly", **doc(description="nightly report")}
    )
    assert same.status_code == 200 and same.json()["outcomes"] == []
    assert api.writes() == 1

    changed = api.client.put(
        path("nightly"), json=doc(cron="30 4 * * *", description="nightly report")
    )
    assert changed.status_code == 200
    [step] = changed.json()["outcomes"]
    assert step["kind"] == "update" and step["status"] == "ok"
    assert "schedule" in step["update_mask"] or api.settings.mode == "ticks"
    assert changed.json()["schedule"]["schedule"]["cron"] == "30 4 * * *"
    assert changed.headers["ETag"] != created.headers["ETag"]
    assert api.writes() == 2


def test_the_job_is_the_store_and_the_schedule_reads_back_whole(api: Api) -> None:
    full = {
        "cron": "*/15 9-17 * * MON-FRI", "timezone": "Europe/Paris",
        "action": {**ACTION, "method": "PUT", "headers": {"X-Team": "a"}, "body": {"k": [1, 2]}},
        "overlap": "allow", "catchup": "latest", "catchup_window": "1h", "max_attempts": 3,
        "labels": {"team": "a"}, "description": "work hours", "paused": True,
    }
    assert api.client.put(path("full"), json=full).status_code == 201
    job = api.control.job_of("full")  # in ticks mode, the job its document stands for
    assert job is not None and schedule_from_job(job) == parse_schedule({"id": "full", **full})
    got = api.client.get(path("full")).json()
    assert got["schedule"] == parse_schedule({"id": "full", **full}).to_dict()
    assert got["job"]["state"] == "PAUSED" and got["next_fires"] == []


def test_invalid_documents_name_every_field_and_change_nothing(api: Api) -> None:
    bad = api.client.put(path("x"), json={"cron": "61 * * * *", "timezone": "Mars/Olympus",
                                          "action": {"type": "http", "url": "ftp://x"},
                                          "colour": "blue", "max_attempts": 0})
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_argument"
    fields = {f for _, f in errors_of(bad)}
    assert {"cron", "timezone", "action.url", "colour", "max_attempts"} <= fields
    assert all(e["reason"] for e in bad.json()["errors"])
    assert any(
        e["field"] == "colour" and e["reason"] == "unknown field" for e in bad.json()["errors"]
    )

    mismatch = api.client.put(path("x"), json={"id": "y", **doc()})
    assert mismatch.status_code == 422 and errors_of(mismatch) == [("x", "id")]
    too_long = api.client.put(path("x" * 300), json=doc())
    assert too_long.status_code == 422 and errors_of(too_long) == [("(request)", "id")]
    assert api.writes() == 0
    assert api.client.get(path("x")).status_code == 404


# The routes that take a body, each with a valid body, and the field a body's unknown key names.
BODY_ROUTES = [
    ("PUT", path("a"), lambda **extra: doc(**extra), "a"),
    (
        "POST",
        "/v1/schedules:sync",
        lambda **extra: {"schedules": [{"id": "a", **doc(**extra)}]},
        "a",
    ),
]
BODY_IDS = ["put", "sync"]


@pytest.mark.parametrize(("method", "url", "body", "owner"), BODY_ROUTES, ids=BODY_IDS)
def test_bodies_that_are_not_json_objects_are_refused(api: Api, method: str, url: str,
                                                      body: Any, owner: str) -> None:
    for raw in (b"{not json", b"NaN", b"[1, Infinity]", b"\xff\xfe", b"", b"  \n"):
        bad = api.client.request(
            method, url, content=raw, headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400, (raw, bad.text)
        assert bad.json()["code"] == "bad_request" and errors_of(bad) == [("(request)", "(body)")]
    for not_object in ([body()], "text", 3, None):
        wrong = api.client.request(method, url, content=json.dumps(not_object).encode())
        assert wrong.status_code == 422, (not_object, wrong.text)
        assert all(e["reason"] for e in wrong.json()["errors"])
    assert api.writes() == 0


@pytest.mark.parametrize(("method", "url", "body", "owner"), BODY_ROUTES, ids=BODY_IDS)
def test_unknown_fields_are_named_and_refused(api: Api, method: str, url: str, body: Any,
                                              owner: str) -> None:
    unknown = api.client.request(method, url, json=body(colour="blue"))
    assert unknown.status_code == 422
    assert [(e["schedule_id"], e["field"], e["reason"]) for e in unknown.json()["errors"]] == [
        (owner, "colour", "unknown field")]
    in_action = api.client.request(method, url, json=body(action={**ACTION, "verb": "GET"}))
    assert in_action.status_code == 422 and (owner, "action.verb") in errors_of(in_action)
    assert api.writes() == 0


@pytest.mark.parametrize(("method", "url", "body", "owner"), BODY_ROUTES, ids=BODY_IDS)
def test_oversized_bodies_are_refused_with_413(api: Api, method: str, url: str, body: Any,
                                               owner: str) -> None:
    big = body(description="", action={**ACTION, "body": "x" * BODY_LIMIT})
    declared = api.client.request(method, url, json=big)
    assert declared.status_code == 413 and declared.json()["code"] == "payload_too_large"
    assert errors_of(declared) == [("(request)", "(body)")]

    def chunks() -> Iterator[bytes]:
        text = json.dumps(big).encode()
        for start in range(0, len(text), 8192):
            yield text[start:start + 8192]

    streamed = api.client.request(method, url, content=chunks())
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and streamed.json()["code"] == "payload_too_large"
    # Unauthenticated, the body limit still holds (it is checked before anything else).
    assert api.anon.request(method, url, json=big).status_code == 413
    assert api.writes() == 0


def test_ids_with_any_printable_character_round_trip(api: Api) -> None:
    ids = ["team/a:b", "spaces and ü", "100%", "x:pause", "a?b#c"]
    for sid in ids:
        put = api.client.put(path(sid), json=doc())
        assert put.status_code == 201, (sid, put.text)
        assert api.client.get(path(sid)).json()["id"] == sid
    assert api.client.post(path("x:pause", ":pause")).json()["schedule"]["job"]["state"] == "PAUSED"
    assert api.client.get(path("x")).status_code == 404
    listed = [s["id"] for s in api.client.get("/v1/schedules").json()["schedules"]]
    assert listed == sorted(ids)


def test_pause_resume_run_and_delete(api: Api) -> None:
    publisher, subscriber = publisher_client(api.settings), subscriber_client(api.settings)
    publisher.create_topic(name=api.settings.topic_path)
    subscriber.create_subscription(
        name=api.settings.subscription_path, topic=api.settings.topic_path
    )
    try:
        assert api.client.put(path("job-1"), json=doc()).status_code == 201

        paused = api.client.post(path("job-1", ":pause"))
        assert paused.status_code == 200
        assert paused.json()["schedule"]["job"]["state"] == "PAUSED"
        assert paused.json()["schedule"]["schedule"]["paused"] is True
        assert paused.json()["schedule"]["next_fires"] == []
        assert api.client.post(path("job-1", ":pause")).status_code == 200  # already paused
        resumed = api.client.post(path("job-1", ":resume"))
        assert resumed.json()["schedule"]["job"]["state"] == "ENABLED"

        run = api.client.post(path("job-1", ":run"))
        assert run.status_code == 200, run.text
        fire_time = datetime.fromisoformat(run.json()["fire_time"].replace("Z", "+00:00"))
        assert run.json()["execution_id"] == execution_id("job-1", fire_time, "manual")
        response = subscriber.pull(subscription=api.settings.subscription_path, max_messages=5,
                                   timeout=30)
        [received] = response.received_messages
        fire = decode_message(received.message.data, dict(received.message.attributes),
                              signing_key=KEY)
        assert (fire.schedule_id, fire.trigger, fire.fire_time) == ("job-1", "manual", fire_time)

        deleted = api.client.delete(path("job-1"))
        assert deleted.status_code == 200 and deleted.json()["schedule"] is None
        assert [o["kind"] for o in deleted.json()["outcomes"]] == ["delete"]
        for method, url in (("GET", path("job-1")), ("DELETE", path("job-1")),
                            ("POST", path("job-1", ":pause")), ("POST", path("job-1", ":resume")),
                            ("POST", path("job-1", ":run")), ("GET", path("job-1", "/executions"))):
            gone = api.client.request(method, url)
            assert gone.status_code == 404, (method, url)
            assert gone.json()["code"] == "not_found"
    finally:
        subscriber.delete_subscription(subscription=api.settings.subscription_path)
        publisher.delete_topic(topic=api.settings.topic_path)
        subscriber.close()
        publisher.stop()


def test_if_match_with_a_stale_fingerprint_is_a_409_and_changes_nothing(api: Api) -> None:
    first = api.client.put(path("guarded"), json=doc())
    etag = first.headers["ETag"]
    assert (
        api.client.put(
            path("guarded"), json=doc(cron="5 3 * * *"), headers={"If-Match": etag}
        ).status_code
        == 200
    )
    writes = api.writes()
    stale = api.client.put(path("guarded"), json=doc(cron="6 3 * * *"), headers={"If-Match": etag})
    assert stale.status_code == 409 and stale.json()["code"] == "conflict"
    assert errors_of(stale) == [("guarded", "If-Match")]
    assert api.client.delete(path("guarded"), headers={"If-Match": etag}).status_code == 409
    assert api.client.post(path("guarded", ":pause"), headers={"If-Match": etag}).status_code == 409
    assert api.writes() == writes
    assert api.client.get(path("guarded")).json()["schedule"]["cron"] == "5 3 * * *"
    assert api.client.put(path("new"), json=doc(), headers={"If-Match": etag}).status_code == 409
    current = api.client.get(path("guarded")).headers["ETag"]
    assert api.client.delete(path("guarded"), headers={"If-Match": current}).status_code == 200


class HeldUpdateClient:
    """The real client, except that the first UpdateJob waits, once inside, for `release`."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_job(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(120), "the test never released the held UpdateJob"
        return self._client.update_job(*args, **kwargs)


@pytest.mark.parametrize("second", ["put", "delete", "pause"])
def test_concurrent_writes_with_one_etag_let_the_first_through_and_refuse_the_next(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger, second: str
) -> None:
    jobs_only(settings.mode)
    real = cloud_scheduler_client(settings)
    held = HeldUpdateClient(real)
    with open_api(settings, cloud_scheduler_emulator, ledger, scheduler_client=held) as api:
        etag = api.client.put(path("raced"), json=doc()).headers["ETag"]
        guarded = {"If-Match": etag}
        answers: dict[str, Any] = {}
        requests = {
            "put": lambda: api.client.put(
                path("raced"), json=doc(cron="2 3 * * *"), headers=guarded
            ),
            "delete": lambda: api.client.delete(path("raced"), headers=guarded),
            "pause": lambda: api.client.post(path("raced", ":pause"), headers=guarded),
        }

        def send(name: str, request: Callable[[], Any]) -> None:
            answers[name] = request()

        first = threading.Thread(target=send, args=("first", lambda: api.client.put(
            path("raced"), json=doc(cron="1 3 * * *"), headers=guarded)))
        first.start()
        assert held.entered.wait(60)  # the first PUT passed its If-Match and is writing
        other = threading.Thread(target=send, args=("second", requests[second]))
        other.start()
        # The second request waits for the schedule's lock (it has not read the job yet).
        key = api.control.spec.job_id("raced")
        wait_for(
            lambda: api.context.locks.users(key) == 2,
            what="the second request to wait",
            interval=0.01,
        )
        held.release.set()
        first.join(120)
        other.join(120)
        assert answers["first"].status_code == 200, answers["first"].text
        refused = answers["second"]
        assert refused.status_code == 409 and errors_of(refused) == [("raced", "If-Match")]
        got = api.client.get(path("raced")).json()
        assert got["schedule"]["cron"] == "1 3 * * *" and got["job"]["state"] == "ENABLED"
        assert api.context.locks.users(key) == 0
    real.transport.close()


def test_a_new_paused_schedule_whose_pause_fails_leaves_no_job(api: Api) -> None:
    jobs_only(api.settings.mode)
    api.emulator.set_faults(1.0, methods=("PauseJob",))
    failed = api.client.put(path("quiet"), json=doc(paused=True))
    api.emulator.clear_faults()
    assert failed.status_code == 503 and failed.json()["code"] == "unavailable"
    assert [(o["kind"], o["status"]) for o in failed.json()["outcomes"]] == [
        ("create", "ok"), ("pause", "failed"), ("delete", "ok")]
    assert api.client.get(path("quiet")).status_code == 404
    again = api.client.put(path("quiet"), json=doc(paused=True))
    assert again.status_code == 201 and again.json()["schedule"]["job"]["state"] == "PAUSED"


def test_a_failed_change_with_pause_or_resume_leaves_the_job_as_it_was(api: Api) -> None:
    jobs_only(api.settings.mode)
    created = api.client.put(path("kept"), json=doc())
    api.emulator.set_faults(1.0, methods=("UpdateJob",))
    failed = api.client.put(path("kept"), json=doc(cron="9 9 * * *", paused=True))
    api.emulator.clear_faults()
    assert failed.status_code == 503
    assert [(o["kind"], o["status"]) for o in failed.json()["outcomes"]] == [
        ("pause", "ok"), ("update", "failed"), ("resume", "ok")]
    same = api.client.get(path("kept"))
    assert same.headers["ETag"] == created.headers["ETag"]
    assert same.json()["job"]["state"] == "ENABLED"

    paused = api.client.put(path("kept"), json=doc(paused=True))
    api.emulator.set_faults(1.0, methods=("ResumeJob",))
    failed = api.client.put(path("kept"), json=doc(cron="9 9 * * *"))
    api.emulator.clear_faults()
    assert failed.status_code == 503
    assert [(o["kind"], o["status"]) for o in failed.json()["outcomes"]] == [
        ("update", "ok"), ("resume", "failed"), ("pause", "ok"), ("update", "ok")]
    still = api.client.get(path("kept"))
    assert still.headers["ETag"] == paused.headers["ETag"]
    job = api.control.syncer.get_job(api.control.spec.job_id("kept"))
    assert job is not None and is_paused(job) and job.schedule == "0 3 * * *"


class _AbortingClient:
    """The real client, except that UpdateJob answers ABORTED (a concurrent modification)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_job(self, *args: Any, **kwargs: Any) -> Any:
        raise gexc.Aborted("the job was modified concurrently")


def test_a_concurrent_modification_from_cloud_scheduler_is_a_409(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger
) -> None:
    jobs_only(settings.mode)
    real = cloud_scheduler_client(settings)
    with open_api(settings, cloud_scheduler_emulator, ledger,
                  scheduler_client=_AbortingClient(real)) as api:
        assert api.client.put(path("raced"), json=doc()).status_code == 201
        raced = api.client.put(path("raced"), json=doc(cron="1 3 * * *"))
        assert raced.status_code == 409
        assert raced.json()["outcomes"][0]["status"] == "failed"
    real.transport.close()


def test_cloud_scheduler_unavailable_is_a_503(api: Api) -> None:
    jobs_only(api.settings.mode)
    api.emulator.set_faults(1.0, codes=("UNAVAILABLE",), methods=("CreateJob",))
    down = api.client.put(path("later"), json=doc())
    assert down.status_code == 503 and down.json()["code"] == "unavailable"
    api.emulator.set_faults(1.0, codes=("UNAVAILABLE",), methods=("GetJob",))
    assert api.client.get(path("later")).status_code == 503
    api.emulator.clear_faults()


# -- reads -----------------------------------------------------------------------------------------


def test_list_pages_by_id(api: Api) -> None:
    for i in range(5):
        assert api.client.put(path(f"s-{i}"), json=doc(cron=f"{i} 3 * * *")).status_code == 201
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        page = api.client.get("/v1/schedules", params=params).json()
        seen += [s["id"] for s in page["schedules"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [f"s-{i}" for i in range(5)]
    assert api.client.get("/v1/schedules", params={"page_size": 0}).status_code == 422


def test_sync_validates_the_whole_set_then_plans_or_applies(api: Api) -> None:
    api.client.put(path("old"), json=doc())
    writes = api.writes()
    invalid = api.client.post("/v1/schedules:sync", json={"schedules": [
        {"id": "a", **doc()}, {"id": "b", "cron": "bad", "action": ACTION}, {"id": "a", **doc()},
    ], "prune": "yes", "extra": 1})
    assert invalid.status_code == 422
    assert set(errors_of(invalid)) >= {("b", "cron"), ("a", "id"), ("(request)", "prune"),
                                       ("(request)", "extra")}
    assert api.writes() == writes

    desired = {"schedules": [{"id": "a", **doc()}, {"id": "b", **doc(paused=True)}], "prune": True}
    dry = api.client.post("/v1/schedules:sync", json={**desired, "dry_run": True}).json()
    assert dry["dry_run"] is True and dry["outcomes"] == []
    # Ticks mode: one write per document (a paused one too), and the tick job.
    assert [(s["kind"], s["schedule_id"]) for s in dry["plan"]["steps"]] == ([
        ("create", "a"), ("create", "b"), ("pause", "b"), ("delete", "old")]
        if api.settings.mode == "jobs" else [
        ("create", "a"), ("create", "b"), ("delete", "old"), ("create", None)])
    assert api.writes() == writes

    applied = api.client.post("/v1/schedules:sync", json=desired)
    assert applied.status_code == 200
    result = applied.json()
    assert result["ok"] is True and [o["status"] for o in result["outcomes"]] == ["ok"] * 4
    assert api.client.get(path("old")).status_code == 404
    again = api.client.post("/v1/schedules:sync", json=desired).json()
    assert again["plan"]["steps"] == [] and again["plan"]["unchanged"] == 2
    kept = api.client.post("/v1/schedules:sync", json={"schedules": []}).json()
    assert kept["plan"]["steps"] == [] and len(kept["plan"]["kept_without_schedule"]) == 2


@pytest.mark.parametrize("mode", ["ticks"])
def test_sync_with_verify_repairs_a_document_deleted_by_hand(api: Api) -> None:
    desired = {"schedules": [{"id": "a", **doc()}, {"id": "b", **doc()}], "prune": True}
    assert api.client.post("/v1/schedules:sync", json=desired).json()["ok"] is True
    registry = api.control.registry
    assert registry is not None
    registry.collection.document(document_id("a")).delete()  # behind the API's back
    # A plain sync trusts the sync manifest; `verify` reads every document.
    plain = api.client.post("/v1/schedules:sync", json=desired).json()
    assert plain["plan"]["steps"] == []
    verified = api.client.post("/v1/schedules:sync", json={**desired, "verify": True}).json()
    assert verified["ok"] is True
    assert [(s["kind"], s["schedule_id"]) for s in verified["plan"]["steps"]] == [("create", "a")]
    assert api.client.get(path("a")).status_code == 200
    bad = api.client.post("/v1/schedules:sync", json={**desired, "verify": "yes"})
    assert bad.status_code == 422 and ("(request)", "verify") in errors_of(bad)


def _execution(schedule_id: str, fire_time: datetime, state: State = State.SUCCEEDED) -> Execution:
    return Execution(
        execution_id=execution_id(schedule_id, fire_time), schedule_id=schedule_id,
        fire_time=fire_time, trigger="scheduled", state=state, attempt=1, created_at=fire_time,
        expire_at=fire_time + timedelta(days=30), started_at=fire_time,
        finished_at=fire_time + timedelta(seconds=2), duration_s=2.0,
        error="boom" if state == State.FAILED else None,
    )


def test_executions_are_paged_newest_first_and_outlive_the_schedule(api: Api) -> None:
    base = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
    for day in range(5):
        api.ledger.record(_execution("hist", base + timedelta(days=day),
                                     State.FAILED if day == 2 else State.SUCCEEDED))
    pages: list[list[dict[str, Any]]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"page_token": token} if token else {})}
        response = api.client.get(path("hist", "/executions"), params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json()["executions"])
        token = response.json()["next_page_token"]
        if token is None:
            break
    fire_times = [e["fire_time"] for page in pages for e in page]
    assert fire_times == [format_instant(base + timedelta(days=d)) for d in range(4, -1, -1)]
    assert [len(p) for p in pages] == [2, 2, 1]
    failed = next(e for page in pages for e in page if e["state"] == "failed")
    assert failed["error"] == "boom" and failed["duration_s"] == 2.0
    bad_token = api.client.get(path("hist", "/executions"), params={"page_token": "yesterday"})
    assert bad_token.status_code == 422 and errors_of(bad_token) == [
        ("(request)", "query.page_token")
    ]
    too_many = api.client.get(path("hist", "/executions"), params={"limit": 1000})
    assert too_many.status_code == 422 and errors_of(too_many) == [("(request)", "query.limit")]
    assert api.client.get(path("never", "/executions")).status_code == 404
    api.client.put(path("fresh"), json=doc())
    assert api.client.get(path("fresh", "/executions")).json() == {
        "executions": [],
        "next_page_token": None,
    }


@pytest.mark.timeout(120)
def test_executions_from_the_firestore_ledger(
    settings: Settings, cloud_scheduler_emulator: Any, firestore_emulator: str, ledger: SqliteLedger
) -> None:
    from scion_scheduler.commands.history import open_ledger

    store = open_ledger(
        "firestore", settings.with_overrides(firestore_emulator_host=firestore_emulator)
    )
    base = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
    for minute in range(3):
        assert store.record(_execution("fs", base + timedelta(minutes=minute)))
    with SchedulerControl(settings) as control:
        app = create_app(ApiContext(control, store, Authenticator.from_settings(settings)))
        with TestClient(app, headers=AUTH) as client:
            first = client.get(path("fs", "/executions"), params={"limit": 2}).json()
            rest = client.get(path("fs", "/executions"),
                              params={"limit": 2, "page_token": first["next_page_token"]}).json()
    assert [e["fire_time"][14:16] for e in first["executions"] + rest["executions"]] == [
        "02",
        "01",
        "00",
    ]
    assert rest["next_page_token"] is None


def test_unknown_routes_and_methods_answer_in_the_error_format(api: Api) -> None:
    missing = api.client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = api.client.patch(path("a"))
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_metrics_count_requests_by_route_template_and_status(api: Api) -> None:
    api.client.get(path("nope"))
    api.client.get(path("nope-2"))
    api.anon.get("/v1/schedules")
    text = api.client.get("/metrics").text
    assert (
        'scion_api_requests_total{method="GET",route="/v1/schedules/{schedule_id}",status="404"} '
        "2.0"
    ) in text
    assert 'scion_api_requests_total{method="GET",route="/v1/schedules",status="401"} 1.0' in text
    assert (
        "scion_api_request_duration_seconds_count"
        '{method="GET",route="/v1/schedules/{schedule_id}"} '
        "2.0"
    ) in text
    assert "nope" not in text


def test_the_openapi_document_describes_every_endpoint(api: Api) -> None:
    document = api.anon.get("/openapi.json").json()
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert operations >= {
        ("PUT", "/v1/schedules/{schedule_id}"), ("GET", "/v1/schedules/{schedule_id}"),
        ("DELETE", "/v1/schedules/{schedule_id}"), ("POST", "/v1/schedules/{schedule_id}:pause"),
        ("POST", "/v1/schedules/{schedule_id}:resume"), ("POST", "/v1/schedules/{schedule_id}:run"),
        ("GET", "/v1/schedules"), ("POST", "/v1/schedules:sync"),
        ("GET", "/v1/schedules/{schedule_id}/executions"), ("GET", "/healthz"), ("GET", "/metrics"),
    }
    schemas = document["components"]["schemas"]
    assert schemas["ScheduleDocument"]["additionalProperties"] is False
    assert "ActionDocument" in schemas and "SyncRequest" in schemas
    put = document["paths"]["/v1/schedules/{schedule_id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ScheduleDocument"
    )
    assert "HTTPBearer" in document["components"]["securitySchemes"]


# -- egress policy -------------------------------------------------------------------------------

METADATA_TOKEN_URL = (
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token")


def test_put_and_sync_refuse_targets_the_workers_would_refuse(api: Api) -> None:
    """The attack of issue 19: a schedule that makes every replica call the metadata server."""
    before = api.writes()
    attack = doc(action={"type": "http", "method": "GET", "url": METADATA_TOKEN_URL,
                         "headers": {"Metadata-Flavor": "Google"}})
    refused = api.client.put(path("ssrf"), json=attack)
    assert refused.status_code == 422
    assert errors_of(refused) == [
        ("ssrf", "action.url"),
        ("ssrf", "action.headers.Metadata-Flavor"),
    ]
    assert "link-local or metadata" in refused.json()["errors"][0]["reason"]
    loopback = doc(action={"type": "http", "url": "http://127.0.0.1:9/"})
    synced = api.client.post("/v1/schedules:sync", json={"schedules": [{"id": "lo", **loopback}]})
    assert synced.status_code == 422 and errors_of(synced) == [("lo", "action.url")]
    assert api.writes() == before and api.client.get(path("ssrf")).status_code == 404


def test_a_deployment_may_name_a_private_target_but_not_the_metadata_server(
        cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str,
        ledger: SqliteLedger) -> None:
    settings = make_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                             allowed_targets="https://hub.example/,10.8.0.0/16")
    with open_api(settings, cloud_scheduler_emulator, ledger) as api:
        internal = doc(action={"type": "http", "url": "http://10.8.1.2/run"})
        assert api.client.put(path("internal"), json=internal).status_code == 201
        meta = doc(action={"type": "http", "url": METADATA_TOKEN_URL})
        assert api.client.put(path("meta"), json=meta).status_code == 422
