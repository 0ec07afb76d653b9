"""The reference hub's grove routes against the real hub's answers.

Every expected answer here is written from the hub's Go source at commit 770980cb
(GoogleCloudPlatform/scion); each test names the file and lines its shape comes from.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from scion_hub_data import GROVE, event, message_payload, schedule

from scion_scheduler.reference_hub import ReferenceHub
from scion_scheduler.reference_hub_groves import ListingLimits, go_json, go_time

TOKEN = "grove-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = f"/api/v1/groves/{GROVE}"
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")


@pytest.fixture
def hub() -> Iterator[ReferenceHub]:
    with ReferenceHub(token=TOKEN) as running:
        yield running


def get(hub: ReferenceHub, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{hub.url}{path}", params=params, headers=AUTH)


def seeded_ids(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def test_go_json_and_go_time_write_what_encoding_json_writes() -> None:
    # json.Encoder (pkg/hub/server.go:2268-2272) escapes HTML characters and ends with a newline;
    # time.Time marshals as RFC3339Nano, which trims trailing zeros of the fraction.
    expected = '{"a":"\\u003c\\u0026\\u003e","b":null,"é":1}\n'.encode()
    assert go_json({"a": "<&>", "b": None, "é": 1}) == expected
    assert go_time(datetime(2026, 3, 2, 8, 15, 3, 120000, tzinfo=UTC)) == "2026-03-02T08:15:03.12Z"
    assert go_time(datetime(2026, 3, 2, 8, 15, 3, tzinfo=UTC)) == "2026-03-02T08:15:03Z"


def test_an_empty_grove_lists_null_without_a_total(hub: ReferenceHub) -> None:
    # ListSchedulesResponse (handlers_schedules.go:57-63): nextCursor and totalCount omitempty;
    # scanSchedules starts from a nil slice (pkg/store/sqlite/schedule.go:327-328), so no rows
    # is `null`; the same for events (handlers_scheduled_events.go:53-59, scheduled_event.go:283).
    for path, key in ((f"{BASE}/schedules", "schedules"), (f"{BASE}/scheduled-events", "events")):
        answer = get(hub, path)
        assert answer.status_code == 200 and answer.content.endswith(b"\n")
        body = answer.json()
        assert list(body) == [key, "serverTime"] and body[key] is None
        assert GO_TIME.match(body["serverTime"])


def test_a_schedule_is_created_read_and_deleted_as_the_hub_does(hub: ReferenceHub) -> None:
    # createSchedule answers 201 with the stored row (handlers_schedules.go:224-248) in the
    # field order of store.Schedule (pkg/store/models.go:1076-1093), omitempty fields left out.
    created = httpx.post(f"{hub.url}{BASE}/schedules", headers=AUTH, json={
        "name": "daily", "cronExpr": "0 9 * * *", "eventType": "message",
        "payload": message_payload()})
    assert created.status_code == 201
    item = created.json()
    assert list(item) == ["id", "groveId", "name", "cronExpr", "eventType", "payload", "status",
                          "nextRunAt", "runCount", "errorCount", "createdAt", "createdBy",
                          "updatedAt"]
    assert item["groveId"] == GROVE and item["status"] == "active"
    assert isinstance(item["payload"], str)  # JSON text (models.go:1082)
    assert get(hub, f"{BASE}/schedules/{item['id']}").json() == item
    # Another grove's ID: NotFound(w, "Schedule") (handlers_schedules.go:293-296).
    other = get(hub, f"/api/v1/groves/other/schedules/{item['id']}")
    assert (other.status_code, other.json()) == (
        404, {"error": {"code": "not_found", "message": "Schedule not found"}})
    deleted = httpx.delete(f"{hub.url}{BASE}/schedules/{item['id']}", headers=AUTH)
    assert (deleted.status_code, deleted.content) == (204, b"")  # handlers_schedules.go:369
    # The row is gone (hard delete, schedule.go:280-294): store.ErrNotFound -> errors.go:104-107.
    again = get(hub, f"{BASE}/schedules/{item['id']}")
    assert again.content == b'{"error":{"code":"not_found","message":"Resource not found"}}\n'
    assert hub.fired() == []


def test_create_refuses_what_the_hub_refuses(hub: ReferenceHub) -> None:
    # ValidationError -> 400 validation_error (handlers_schedules.go:147-163, errors.go:172-175).
    answer = httpx.post(f"{hub.url}{BASE}/schedules", headers=AUTH,
                        json={"name": "x", "cronExpr": "* * * * *", "eventType": "status_update"})
    assert answer.status_code == 400
    assert answer.json() == {"error": {"code": "validation_error", "message":
                             "unsupported event type: status_update "
                             "(supported: message, dispatch_agent)"}}


def test_the_hub_authenticates_before_it_routes(hub: ReferenceHub) -> None:
    # handlers_schedules.go:67-72 and errors.go:177-181, for every path under the grove.
    for path in (f"{BASE}/schedules", f"{BASE}/schedules/x/fire", f"{BASE}/scheduled-events"):
        answer = httpx.get(f"{hub.url}{path}")
        assert (answer.status_code, answer.json()) == (
            401, {"error": {"code": "unauthorized", "message": "Authentication required"}})


def test_a_hub_without_the_fire_endpoint_answers_with_its_routers() -> None:
    with ReferenceHub(token=TOKEN, fire_endpoint=False) as hub:
        # The unknown action "fire" under a schedule: NotFound(w, "Schedule action")
        # (handlers_schedules.go:134-135), written by writeError (errors.go:75-95).
        for method in ("GET", "POST"):
            answer = httpx.request(method, f"{hub.url}{BASE}/schedules/s1/fire", headers=AUTH,
                                   json={})
            assert answer.status_code == 404
            assert answer.content == (b'{"error":{"code":"not_found",'
                                      b'"message":"Schedule action not found"}}\n')
        # The event router takes "e1/fire" as the event ID (handlers_scheduled_events.go:91-100):
        # POST is not allowed there (errors.go:200-204), GET looks the ID up and finds nothing.
        posted = httpx.post(f"{hub.url}{BASE}/scheduled-events/e1/fire", headers=AUTH, json={})
        assert (posted.status_code, posted.json()["error"]["code"]) == (405, "method_not_allowed")
        got = get(hub, f"{BASE}/scheduled-events/e1/fire")
        assert (got.status_code, got.json()["error"]["message"]) == (404, "Resource not found")
        assert hub.calls == []


def test_the_fire_endpoints_probe_checks_the_token_and_fires_nothing(hub: ReferenceHub) -> None:
    # docs/hub-fire-endpoint.md, "Probe": GET checks the credentials, then 405 with Allow: POST.
    answer = get(hub, f"{BASE}/schedules/any/fire")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    assert httpx.get(f"{hub.url}{BASE}/schedules/any/fire").status_code == 401
    assert hub.calls == []


def _seed_schedules(hub: ReferenceHub, n: int) -> list[str]:
    ids = seeded_ids(n)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index, item_id in enumerate(ids):
        item = schedule(id=item_id, name=f"s{index}")
        item["createdAt"] = go_time(start + timedelta(minutes=index))
        hub.groves.put_schedule(item)
    return ids


def test_the_schedule_listing_ignores_the_cursor_and_caps_the_limit(hub: ReferenceHub) -> None:
    # ListSchedules (pkg/store/sqlite/schedule.go:120-196): limit capped at 200 (158-160), the
    # query never reads opts.Cursor (162-171), nextCursor is the page's last ID (188-191);
    # the handler's default limit is 50 (handlers_schedules.go:261-266).
    ids = _seed_schedules(hub, 250)
    assert len(get(hub, f"{BASE}/schedules").json()["schedules"]) == 50
    first = get(hub, f"{BASE}/schedules", limit=500).json()
    assert len(first["schedules"]) == 200 and first["totalCount"] == 250
    newest = [i for i in reversed(ids)][:200]  # ORDER BY created_at DESC
    assert [s["id"] for s in first["schedules"]] == newest
    assert first["nextCursor"] == newest[-1]
    second = get(hub, f"{BASE}/schedules", limit=500, cursor=first["nextCursor"]).json()
    assert second["schedules"] == first["schedules"]  # page 1 again


def test_the_event_listing_skips_and_repeats_items_across_pages(hub: ReferenceHub) -> None:
    # ListScheduledEvents (pkg/store/sqlite/scheduled_event.go:155-251): ORDER BY created_at
    # DESC (202), `id < cursor` on the next pages (208-226), over random UUIDs (api.NewUUID).
    ids = seeded_ids(250, seed=11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index, item_id in enumerate(ids):
        item = event(id=item_id)
        item["createdAt"] = go_time(start + timedelta(minutes=index))
        hub.groves.put_event(item)
    first = get(hub, f"{BASE}/scheduled-events", limit=200).json()
    second = get(hub, f"{BASE}/scheduled-events", limit=200, cursor=first["nextCursor"]).json()
    one, two = ({e["id"] for e in page["events"]} for page in (first, second))
    assert one & two, "pages repeat items"
    assert set(ids) - one - two, "and skip others"
    assert first["totalCount"] == second["totalCount"] == 250  # counted without the cursor


def test_with_mended_cursors_the_pages_add_up() -> None:
    with ReferenceHub(token=TOKEN, limits=ListingLimits(real_cursors=False)) as hub:
        ids = _seed_schedules(hub, 250)
        first = get(hub, f"{BASE}/schedules", limit=200).json()
        second = get(hub, f"{BASE}/schedules", limit=200, cursor=first["nextCursor"]).json()
        assert "nextCursor" not in second
        assert sorted(s["id"] for s in first["schedules"] + second["schedules"]) == sorted(ids)


def test_listings_filter_by_status_as_the_hub_does(hub: ReferenceHub) -> None:
    # Schedules leave out `deleted` unless asked (schedule.go:129-136); events filter on the
    # status given (scheduled_event.go:168-171).
    hub.groves.put_schedule(schedule(name="a"))
    hub.groves.put_schedule(schedule(name="b", status="deleted"))
    hub.groves.put_event(event())
    hub.groves.put_event(event(status="fired"))
    assert [s["name"] for s in get(hub, f"{BASE}/schedules").json()["schedules"]] == ["a"]
    deleted = get(hub, f"{BASE}/schedules", status="deleted").json()["schedules"]
    assert [s["name"] for s in deleted] == ["b"]
    pending = get(hub, f"{BASE}/scheduled-events", status="pending").json()
    assert [e["status"] for e in pending["events"]] == ["pending"] and pending["totalCount"] == 1


def test_patch_sets_fields_unchecked_like_the_hub(hub: ReferenceHub) -> None:
    # updateSchedule sets eventType, payload and status without checking them
    # (handlers_schedules.go:334-342): that is how a grove comes to hold invalid items.
    item = schedule()
    hub.groves.put_schedule(item)
    answer = httpx.patch(f"{hub.url}{BASE}/schedules/{item['id']}", headers=AUTH,
                         json={"payload": "not json", "eventType": "status_update"})
    assert answer.status_code == 200
    stored = get(hub, f"{BASE}/schedules/{item['id']}").json()
    assert (stored["payload"], stored["eventType"]) == ("not json", "status_update")
    assert json.loads(go_json(stored)) == stored
