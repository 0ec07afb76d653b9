"""The grove routes of the HTTP API, what every route shares: the token, body limits, the OpenAPI
document, metrics, and late fires, against the emulators (harness: `groves_harness`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import groves_harness
import pytest
from groves_harness import BODY_LIMIT, GROVE, Api, errors_of, hub_item, item_path, put, sync_path

from scion_scheduler.api.hub_schemas import EXAMPLE_HUB_EVENT, EXAMPLE_HUB_SCHEDULE

pytestmark = pytest.mark.emulator


api = groves_harness.api  # the harness's fixture, in this module


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
