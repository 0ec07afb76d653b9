"""The grove routes of the HTTP API, one item at a time: schedules and events put and deleted as the
hub stores them, each grove kept to its own jobs, against the emulators (harness:
`groves_harness`)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import groves_harness
import pytest
from api_harness import HeldUpdateClient
from emulated_control import emulated_settings
from fastapi.testclient import TestClient
from groves_harness import AUTH, GROVE, OTHER_GROVE, TOKEN, Api, errors_of, hub_item, item_path, put
from scion_hub_data import new_id
from worker_harness import wait_for

from scheduler.control import SchedulerControl
from scheduler.gcp import cloud_scheduler_client
from scheduler.jobs import is_paused
from scheduler.jobs_decode import schedule_from_job
from scion_scheduler.api import ApiContext, Authenticator, create_app
from scion_scheduler.api.hub_schemas import EXAMPLE_HUB_EVENT, EXAMPLE_HUB_SCHEDULE

pytestmark = pytest.mark.emulator


api = groves_harness.api  # the harness's fixture, in this module


# -- one item at a time ------------------------------------------------------------------------


def test_a_schedule_put_as_the_hub_stores_it_then_paused_then_deleted(api: Api) -> None:
    item = hub_item(EXAMPLE_HUB_SCHEDULE)
    created = put(api, "schedules", item)
    assert created.status_code == 201, created.text
    assert [o["kind"] for o in created.json()["outcomes"]] == ["create"]
    view = created.json()["schedule"]
    assert view["id"] == item["id"] and view["job"]["state"] == "ENABLED"
    assert view["schedule"]["cron"] == "0 9 * * *"
    assert view["schedule"]["labels"] == {"scion-kind": "schedule", "scion-grove": GROVE}
    assert view["schedule"]["action"]["grove_id"] == GROVE
    assert view["schedule"]["action"]["payload"] == json.loads(item["payload"])
    assert created.headers["ETag"] == f'"{view["fingerprint"]}"'

    # The hub sends what it stores: read-only fields change on every run, the job does not.
    ran = {**item, "runCount": 42, "lastRunAt": "2026-04-27T09:00:00.000187Z"}
    writes = api.writes()
    same = put(api, "schedules", ran)
    assert same.status_code == 200 and same.json()["outcomes"] == []
    assert api.writes() == writes

    paused = put(api, "schedules", {**item, "status": "paused"})
    assert paused.status_code == 200, paused.text
    assert [o["kind"] for o in paused.json()["outcomes"]] == ["pause"]
    assert paused.json()["schedule"]["job"]["state"] == "PAUSED"
    assert is_paused(api.job(item["id"]))

    deleted = put(api, "schedules", {**item, "status": "deleted"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["schedule"] is None
    assert [o["kind"] for o in deleted.json()["outcomes"]] == ["delete"]
    assert api.job(item["id"]) is None
    again = put(api, "schedules", {**item, "status": "deleted"})
    assert again.status_code == 200 and again.json()["outcomes"] == []


def test_an_event_put_and_deleted(api: Api) -> None:
    item = hub_item(EXAMPLE_HUB_EVENT, fireAt="2030-06-01T12:30:15.5Z")
    created = put(api, "scheduled-events", item)
    assert created.status_code == 201, created.text
    view = created.json()["schedule"]
    assert view["schedule"]["labels"] == {"scion-kind": "event", "scion-grove": GROVE}
    job = api.job(item["id"])
    assert job is not None and schedule_from_job(job).at == datetime(
        2030, 6, 1, 12, 30, 15, 500000, tzinfo=UTC
    )

    deleted = api.client.delete(item_path("scheduled-events", item["id"]))
    assert deleted.status_code == 200, deleted.text
    assert [o["kind"] for o in deleted.json()["outcomes"]] == ["delete"]
    assert api.job(item["id"]) is None
    gone = api.client.delete(item_path("scheduled-events", item["id"]))
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"

    # An event that is no longer pending (here: fired) must have no job.
    assert put(api, "scheduled-events", item).status_code == 201
    fired = put(api, "scheduled-events", {**item, "status": "fired",
                                          "firedAt": "2030-06-01T12:30:15.502113Z"})
    assert fired.status_code == 200 and api.job(item["id"]) is None


def test_the_path_must_name_the_items_grove_and_id(api: Api) -> None:
    item = hub_item(EXAMPLE_HUB_SCHEDULE)
    other = api.client.put(item_path("schedules", item["id"], OTHER_GROVE), json=item)
    assert other.status_code == 422 and other.json()["code"] == "invalid_argument"
    assert errors_of(other) == [(item["id"], "groveId")]
    wrong_id = api.client.put(item_path("schedules", new_id()), json=item)
    assert wrong_id.status_code == 422 and (
        [f for _, f in errors_of(wrong_id)] == ["id"])
    bad = put(api, "schedules", {**item, "cronExpr": "61 * * * *", "payload": "{not json"})
    assert bad.status_code == 422
    assert {f for _, f in errors_of(bad)} == {"cronExpr", "payload"}
    assert api.writes() == 0


def test_a_grove_never_writes_another_groves_or_a_native_schedules_job(api: Api) -> None:
    mine = hub_item(EXAMPLE_HUB_SCHEDULE)
    assert put(api, "schedules", mine).status_code == 201
    native = api.client.put("/v1/schedules/native-report",
                            json={"cron": "0 3 * * *",
                                  "action": {"type": "http", "url": "https://x.example/run"}})
    assert native.status_code == 201
    before = {i: api.job(i).pubsub_target.attributes for i in (mine["id"], "native-report")}
    writes = api.writes()

    theirs = {**mine, "groveId": OTHER_GROVE}
    taken = put(api, "schedules", theirs)
    assert taken.status_code == 409 and errors_of(taken) == [(mine["id"], "id")]
    assert GROVE in taken.json()["errors"][0]["reason"]
    as_event = put(api, "scheduled-events", hub_item(EXAMPLE_HUB_EVENT, id=mine["id"]))
    assert as_event.status_code == 409
    over_native = put(api, "schedules", hub_item(EXAMPLE_HUB_SCHEDULE, id="native-report"))
    assert over_native.status_code == 409
    # As the hub does for another grove's item (handlers_schedules.go:359): not found.
    assert api.client.delete(item_path("schedules", mine["id"], OTHER_GROVE)).status_code == 404
    assert api.client.delete(item_path("scheduled-events", mine["id"])).status_code == 404
    assert api.client.delete(item_path("schedules", "native-report")).status_code == 404
    assert api.writes() == writes
    assert {i: api.job(i).pubsub_target.attributes for i in before} == before


def test_if_match_guards_grove_writes(api: Api) -> None:
    item = hub_item(EXAMPLE_HUB_SCHEDULE)
    etag = put(api, "schedules", item).headers["ETag"]
    assert put(api, "schedules", {**item, "cronExpr": "5 9 * * *"},
               headers={"If-Match": etag}).status_code == 200
    stale = put(api, "schedules", {**item, "cronExpr": "6 9 * * *"}, headers={"If-Match": etag})
    assert stale.status_code == 409 and errors_of(stale) == [(item["id"], "If-Match")]
    refused = api.client.delete(item_path("schedules", item["id"]), headers={"If-Match": etag})
    assert refused.status_code == 409
    assert schedule_from_job(api.job(item["id"])).cron == "5 9 * * *"


def test_grove_writes_to_one_item_run_one_at_a_time(
    cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str
) -> None:
    settings = emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                                 api_retry_timeout="2s", api_token=TOKEN)
    real = cloud_scheduler_client(settings)
    held = HeldUpdateClient(real)
    with SchedulerControl(settings, scheduler_client=held) as control:
        app = create_app(ApiContext(control, None, Authenticator.from_settings(settings)))
        with TestClient(app, headers=AUTH) as client:
            item = hub_item(EXAMPLE_HUB_SCHEDULE)
            url = item_path("schedules", item["id"])
            guarded = {"If-Match": client.put(url, json=item).headers["ETag"]}
            answers: dict[str, Any] = {}

            def send(name: str, cron: str) -> None:
                answers[name] = client.put(url, json={**item, "cronExpr": cron}, headers=guarded)

            first = threading.Thread(target=send, args=("first", "1 9 * * *"))
            first.start()
            assert held.entered.wait(60)  # the first PUT passed its If-Match and is writing
            second = threading.Thread(target=send, args=("second", "2 9 * * *"))
            second.start()
            key = control.spec.job_id(item["id"])
            locks = app.state.context.locks
            wait_for(lambda: locks.users(key) == 2, what="the second PUT to wait", interval=0.01)
            held.release.set()
            first.join(120)
            second.join(120)
            assert answers["first"].status_code == 200, answers["first"].text
            assert answers["second"].status_code == 409
            assert errors_of(answers["second"]) == [(item["id"], "If-Match")]
            job = control.syncer.get_job(key)
            assert schedule_from_job(job).cron == "1 9 * * *"
    real.transport.close()
