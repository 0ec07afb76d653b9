"""The grove routes of the HTTP API (`/v1/groves/...`), against the Cloud Scheduler and Pub/Sub
emulators, fed the hub's own JSON.

Where each shape comes from (GoogleCloudPlatform/scion at 770980cb):

* one schedule, as `GET /api/v1/groves/{groveId}/schedules/{id}` writes it
  (`pkg/hub/handlers_schedules.go:298`): `store.Schedule`, `pkg/store/models.go:1076-1093`;
* one event, as `GET .../scheduled-events/{id}` writes it (`handlers_scheduled_events.go:281`):
  `store.ScheduledEvent`, `pkg/store/models.go:1041-1053`;
* listings: `ListSchedulesResponse` (`handlers_schedules.go:58`) and
  `ListScheduledEventsResponse` (`handlers_scheduled_events.go:54`), built by
  `tests/scion_hub_data.py`.

Times are written as Go's encoding/json writes a `time.Time` (RFC 3339, nanoseconds with their
trailing zeros trimmed, so `.5Z`, `.000231Z` or none at all): see `hub_item` below and the
documented examples in `scion_scheduler/api/hub_schemas.py`.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from api_harness import HeldUpdateClient
from emulated_control import count_document_writes, emulated_settings
from fastapi.testclient import TestClient
from scion_hub_data import envelope, event, new_id, schedule
from worker_harness import wait_for

from scheduler.control import SchedulerControl, with_registry
from scheduler.gcp import cloud_scheduler_client
from scheduler.jobs import is_paused
from scheduler.jobs_decode import schedule_from_job
from scheduler.sync import WRITE_METHODS
from scion_scheduler.api import ApiContext, Authenticator, create_app
from scion_scheduler.api.hub_schemas import EXAMPLE_HUB_EVENT, EXAMPLE_HUB_SCHEDULE

TOKEN = "grove-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY_LIMIT = 128 * 1024  # a 150-item listing is about 84 KB
GROVE = EXAMPLE_HUB_SCHEDULE["groveId"]
OTHER_GROVE = "5d0c9a3e-7b21-4f6e-8c4d-1e2f3a4b5c6d"

pytestmark = pytest.mark.emulator


class Api:
    """The app on the emulators, an authenticated and an anonymous client."""

    def __init__(self, client: TestClient, anon: TestClient, control: SchedulerControl,
                 emulator: Any) -> None:
        self.client, self.anon, self.control, self.emulator = client, anon, control, emulator
        registry = control.registry
        self.document_writes = count_document_writes(registry) if registry else None

    def writes(self) -> int:
        """Cloud Scheduler writes, plus registry document writes in ticks mode."""
        documents = self.document_writes[0] if self.document_writes else 0
        return sum(self.emulator.call_counts[m] for m in WRITE_METHODS) + documents

    def job(self, item_id: str) -> Any:
        """The item's job (in ticks mode: the job its document stands for)."""
        return self.control.job_of(item_id)

    def job_ids(self) -> set[str]:
        return {j.name.rsplit("/", 1)[1] for j in self.control.schedule_jobs()}


@pytest.fixture(params=["jobs", "ticks"])
def api(request: pytest.FixtureRequest, cloud_scheduler_emulator: Any, pubsub_emulator: str,
        project_id: str) -> Iterator[Api]:
    """The API on the hub's grove routes, in both modes (issue 17)."""
    settings = emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                                 api_retry_timeout="2s", api_token=TOKEN)
    if request.param == "ticks":
        settings = settings.with_overrides(
            mode="ticks", firestore_emulator_host=request.getfixturevalue("firestore_emulator"))
    with with_registry(settings) if request.param == "ticks" else SchedulerControl(settings) \
            as control:
        app = create_app(ApiContext(control, None, Authenticator.from_settings(settings)),
                         max_body_bytes=BODY_LIMIT)
        with TestClient(app, headers=AUTH) as client, TestClient(app) as anon:
            yield Api(client, anon, control, cloud_scheduler_emulator)


def item_path(kind: str, item_id: str, grove: str = GROVE) -> str:
    return f"/v1/groves/{quote(grove, safe='')}/{kind}/{quote(item_id, safe='')}"


def sync_path(grove: str = GROVE) -> str:
    return f"/v1/groves/{quote(grove, safe='')}:sync"


def hub_item(example: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of a documented hub item (a fresh ID unless given) with `fields` changed."""
    return {**copy.deepcopy(example), "id": new_id(), **fields}


def put(api: Api, kind: str, item: dict[str, Any], **kwargs: Any) -> Any:
    return api.client.put(item_path(kind, item["id"], item["groveId"]), json=item, **kwargs)


def errors_of(response: Any) -> list[tuple[str, str]]:
    return [(e["schedule_id"], e["field"]) for e in response.json()["errors"]]


def hub_ids(errors: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(hub ID, field) of refusals that name an item as the CLI does: `ID "name"`."""
    return [(label.split(" ", 1)[0], field) for label, field in errors]


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


# -- a grove's full set ------------------------------------------------------------------------


def test_a_grove_sync_prunes_only_that_grove(api: Api) -> None:
    kept, changed, dropped = (schedule(name=n) for n in ("kept", "changed", "dropped"))
    fired = event(fire_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    theirs = schedule(name="theirs", grove=OTHER_GROVE)
    for kind, item in (("schedules", kept), ("schedules", changed), ("schedules", dropped),
                       ("scheduled-events", fired), ("schedules", theirs)):
        assert put(api, kind, item).status_code == 201
    assert api.client.put("/v1/schedules/native", json={
        "cron": "0 3 * * *", "action": {"type": "http", "url": "https://x.example/run"},
        "labels": {"scion-grove": GROVE}}).status_code == 201
    added = schedule(name="added", cron="*/15 * * * *")
    listing = [
        envelope("schedules", [kept, {**changed, "cronExpr": "30 8 * * 1-5"}, added], total=3),
        envelope("events", [{**fired, "status": "fired"}]),
    ]
    before = api.job_ids()
    writes = api.writes()

    dry = api.client.post(sync_path(), json=listing, params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    steps = {(s["kind"], s["schedule_id"]) for s in dry.json()["plan"]["steps"]}
    assert steps == {("update", changed["id"]), ("create", added["id"]),
                     ("delete", dropped["id"]), ("delete", fired["id"])}
    assert dry.json()["ok"] is True and dry.json()["refused"] == []
    assert api.writes() == writes

    applied = api.client.post(sync_path(), json=listing)
    assert applied.status_code == 200 and applied.json()["ok"] is True, applied.text
    spec = api.control.spec
    assert api.job_ids() == before - {spec.job_id(dropped["id"]), spec.job_id(fired["id"])} | {
        spec.job_id(added["id"])}
    assert api.job(theirs["id"]) is not None and api.job("native") is not None
    assert schedule_from_job(api.job(changed["id"])).cron == "30 8 * * 1-5"
    again = api.client.post(sync_path(), json=listing).json()
    assert again["plan"]["steps"] == [] and again["plan"]["unchanged"] == 3

    # An empty listing is the grove's empty set: its jobs go, nobody else's.
    empty = api.client.post(sync_path(), json=envelope("schedules", None))
    assert empty.status_code == 200 and len(empty.json()["plan"]["steps"]) == 3
    assert api.job_ids() == {spec.job_id(theirs["id"]), spec.job_id("native")}


def test_refused_items_keep_their_jobs_and_strict_refuses_the_whole_sync(api: Api) -> None:
    broken, fine = schedule(name="broken"), schedule(name="fine")
    for item in (broken, fine):
        assert put(api, "schedules", item).status_code == 201
    job_before = api.job(broken["id"])
    listing = envelope("schedules", [
        {**broken, "cronExpr": "61 0 * * *"},
        {**fine, "name": "fine, renamed"},
        schedule(name="bad payload", payload='"just text"'),
        schedule(name="elsewhere", grove=OTHER_GROVE),
    ])
    refused_ids = {(listing["schedules"][i]["id"], f)
                   for i, f in ((0, "cronExpr"), (2, "payload"), (3, "groveId"))}
    writes = api.writes()

    strict = api.client.post(sync_path(), json=listing, params={"strict": "true"})
    assert strict.status_code == 422 and set(hub_ids(errors_of(strict))) == refused_ids
    assert api.writes() == writes

    lenient = api.client.post(sync_path(), json=listing)
    assert lenient.status_code == 200, lenient.text
    body = lenient.json()
    assert body["ok"] is False
    assert set(hub_ids((e["schedule_id"], e["field"]) for e in body["refused"])) == refused_ids
    assert body["plan"]["held_for_refused_items"] == [api.control.spec.job_id(broken["id"])]
    assert all(e["reason"] for e in body["refused"])
    assert [(s["kind"], s["schedule_id"]) for s in body["plan"]["steps"]] == [
        ("update", fine["id"])]
    after = api.job(broken["id"])
    assert after is not None and after.schedule == job_before.schedule
    assert dict(after.pubsub_target.attributes) == dict(job_before.pubsub_target.attributes)


def test_a_150_schedule_grove_with_3_invalid_items_hands_over_147(api: Api) -> None:
    items = [schedule(name=f"s{i}", cron=f"{i % 60} {i % 24} * * *") for i in range(150)]
    for i in (10, 70, 130):
        items[i] = {**items[i], "cronExpr": "61 * * * *"}
    answer = api.client.post(sync_path(), json=envelope("schedules", items, total=150))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is False and len(body["refused"]) == 3
    assert body["plan"]["counts"]["create"] == 147 and len(api.job_ids()) == 147


@pytest.mark.parametrize(("listing", "field"), [
    (envelope("schedules", [schedule()], next_cursor="abc", total=250), "schedules.nextCursor"),
    (envelope("schedules", [schedule()], total=2), "schedules.totalCount"),
    ({"schedules": "nope"}, "schedules"),
    (envelope("schedules", [{**schedule(), "id": ""}]), "id"),
    (envelope("schedules", ["not an item"]), "(item)"),
], ids=["pages-left-out", "count-short", "not-a-list", "no-id", "not-an-object"])
def test_a_listing_wrong_as_a_whole_is_refused_and_prunes_nothing(
    api: Api, listing: Any, field: str
) -> None:
    keep = schedule(name="keep")
    assert put(api, "schedules", keep).status_code == 201
    writes = api.writes()
    refused = api.client.post(sync_path(), json=listing)
    assert refused.status_code == 422, refused.text
    assert field in [f for _, f in errors_of(refused)]
    assert api.writes() == writes and api.job(keep["id"]) is not None


def test_an_id_listed_twice_is_refused_and_its_job_held(api: Api) -> None:
    twice = schedule(name="twice")
    assert put(api, "schedules", twice).status_code == 201
    listing = envelope("schedules", [twice, {**twice, "name": "again"}])
    answer = api.client.post(sync_path(), json=listing)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is False and body["plan"]["steps"] == []
    assert [e["field"] for e in body["refused"]] == ["id"]
    assert body["plan"]["held_for_refused_items"] == [api.control.spec.job_id(twice["id"])]
    assert api.job(twice["id"]) is not None


# -- what every route shares -------------------------------------------------------------------


ROUTES = [
    ("PUT", item_path("schedules", "a")), ("DELETE", item_path("schedules", "a")),
    ("PUT", item_path("scheduled-events", "a")), ("DELETE", item_path("scheduled-events", "a")),
    ("POST", sync_path()),
]


@pytest.mark.parametrize(("method", "url"), ROUTES, ids=[f"{m} {u}" for m, u in ROUTES])
def test_every_grove_route_needs_the_token(api: Api, method: str, url: str) -> None:
    missing = api.anon.request(method, url, json={})
    assert missing.status_code == 401 and missing.json()["code"] == "unauthenticated"
    wrong = api.anon.request(method, url, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert api.writes() == 0


@pytest.mark.parametrize(("method", "url"), [r for r in ROUTES if r[0] != "DELETE"],
                         ids=["put-schedule", "put-event", "sync"])
def test_oversized_bodies_are_refused_with_413(api: Api, method: str, url: str) -> None:
    big = hub_item(EXAMPLE_HUB_SCHEDULE, id="a", payload=json.dumps({"message": "x" * BODY_LIMIT}))
    for client in (api.client, api.anon):
        refused = client.request(method, url, json=big)
        assert refused.status_code == 413 and refused.json()["code"] == "payload_too_large"
        assert errors_of(refused) == [("(request)", "(body)")]
    assert api.writes() == 0


def test_bodies_that_are_not_json_are_refused(api: Api) -> None:
    for method, url in ROUTES:
        if method == "DELETE":
            continue
        bad = api.client.request(method, url, content=b"{not json")
        assert bad.status_code == 400 and errors_of(bad) == [("(request)", "(body)")]
        wrong = api.client.request(method, url, json=[1, 2])
        assert wrong.status_code == 422 and all(e["reason"] for e in wrong.json()["errors"])
    assert api.writes() == 0


def test_the_openapi_document_describes_the_hub_items(api: Api) -> None:
    document = api.anon.get("/openapi.json").json()
    paths = document["paths"]
    for url, item in (("/v1/groves/{grove}/schedules/{schedule_id}", "HubSchedule"),
                      ("/v1/groves/{grove}/scheduled-events/{event_id}", "HubScheduledEvent")):
        assert set(paths[url]) == {"put", "delete"}
        schema = paths[url]["put"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(f"/{item}")
    assert "post" in paths["/v1/groves/{grove}:sync"]
    schemas = document["components"]["schemas"]
    assert {"id", "groveId", "cronExpr", "eventType", "payload", "runCount", "createdAt"} <= set(
        schemas["HubSchedule"]["properties"])
    assert {"fireAt", "scheduleId", "firedAt"} <= set(schemas["HubScheduledEvent"]["properties"])
    assert {"schedules", "events", "nextCursor", "totalCount"} <= set(
        schemas["HubListing"]["properties"])
    assert "projectId" not in json.dumps(document)


def test_metrics_name_the_grove_routes_by_template(api: Api) -> None:
    item = hub_item(EXAMPLE_HUB_SCHEDULE)
    put(api, "schedules", item)
    text = api.client.get("/metrics").text
    assert ('scion_api_requests_total{method="PUT",'
            'route="/v1/groves/{grove}/schedules/{schedule_id}",status="201"} 1.0') in text
    assert item["id"] not in text and GROVE not in text


def test_a_past_due_event_fires_once_as_expired_and_a_stale_one_is_not_scheduled(
        api: Api) -> None:
    """The hub fires a pending event whose time passed once, and marks it expired
    (pkg/hub/scheduler.go:237-247, :296-299); here within the late-fire limit (7 days)."""
    from google.cloud import pubsub_v1

    settings = api.control.settings
    topic = f"projects/{settings.project}/topics/{settings.topic}"
    subscription = f"projects/{settings.project}/subscriptions/late-fires"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    past = datetime.now(UTC) - timedelta(days=3)
    item = hub_item(EXAMPLE_HUB_EVENT, fireAt=past.strftime("%Y-%m-%dT%H:%M:%SZ"))
    answer = put(api, "scheduled-events", item)
    assert answer.status_code == 201, answer.text
    fire = [o for o in answer.json()["outcomes"] if o["kind"] == "fire"]
    assert len(fire) == 1 and fire[0]["status"] == "ok" and "expired" in fire[0]["reason"]
    pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
    assert [m.message.attributes["trigger"] for m in pulled.received_messages] == ["expired"]
    again = put(api, "scheduled-events", item)
    assert again.status_code == 200 and again.json()["outcomes"] == [], again.text

    stale_at = datetime.now(UTC) - timedelta(days=8)
    stale = hub_item(EXAMPLE_HUB_EVENT, fireAt=stale_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    answer = put(api, "scheduled-events", stale)
    assert answer.status_code == 200 and answer.json()["schedule"] is None, answer.text
    assert api.job(stale["id"]) is None


def test_a_late_fire_that_pubsub_refuses_is_a_502_naming_pubsub(api: Api) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    item = hub_item(EXAMPLE_HUB_EVENT, fireAt=past.strftime("%Y-%m-%dT%H:%M:%SZ"))
    answer = put(api, "scheduled-events", item)  # the fixture made no topic
    assert answer.status_code == 502, answer.text
    assert answer.json()["message"].startswith("Pub/Sub refused the one-shot's late fire")
