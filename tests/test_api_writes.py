"""The HTTP control API's writes: PUT creates and updates, documents and bodies are validated, ids
round-trip, against the emulators (harness: `api_harness`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import ACTION, BODY_LIMIT, Api, doc, errors_of, path

from scheduler.jobs_decode import schedule_from_job
from scheduler.validation import parse_schedule

pytestmark = pytest.mark.emulator


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
