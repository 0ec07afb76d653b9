"""The grove routes of the HTTP API, a grove's full set: its sync prunes only that grove, and
refused items keep their jobs, against the emulators (harness: `groves_harness`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import groves_harness
import pytest
from groves_harness import GROVE, OTHER_GROVE, Api, errors_of, hub_ids, put, sync_path
from scion_hub_data import envelope, event, schedule

from scheduler.jobs_decode import schedule_from_job

pytestmark = pytest.mark.emulator


api = groves_harness.api  # the harness's fixture, in this module


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
