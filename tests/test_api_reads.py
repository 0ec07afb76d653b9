"""The HTTP control API's reads: listing, sync plans, execution history (SQLite and Firestore
ledgers), errors, metrics and the OpenAPI document, against the emulators (harness:
`api_harness`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_harness import ACTION, AUTH, Api, doc, errors_of, path
from fastapi.testclient import TestClient

from scheduler.config import Settings
from scheduler.contract import execution_id
from scheduler.control import SchedulerControl
from scheduler.model import format_instant
from scheduler.registry import document_id
from scion_scheduler.api import ApiContext, Authenticator, create_app
from worker.ledger import Execution, State
from worker.sqlite_ledger import SqliteLedger

pytestmark = pytest.mark.emulator


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
