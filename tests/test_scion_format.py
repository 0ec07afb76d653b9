"""The Scion hub's schedule JSON, taken as the hub's API returns it (scheduler.scion_format via
scheduler.validation)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from emulated_control import operator_env
from scion_hub_data import (
    GROVE,
    envelope,
    event,
    message_payload,
    new_id,
    schedule,
)

from scheduler.contract import build_message, decode_message
from scheduler.model import FieldError, ValidationError
from scheduler.scion_action import ACTION_TYPE
from scheduler.scion_format import convert_item, detect_format
from scheduler.validation import (
    load_schedule_set,
    load_schedules,
    parse_schedule,
    schedules_from_data,
)
from scion_scheduler.cli import main

KNOWN = frozenset({"http", "scion"})


def load(data: Any, fmt: str = "auto") -> Any:
    return schedules_from_data(data, format=fmt, known_action_types=KNOWN)


def errors_of(data: Any, fmt: str = "auto") -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        load(data, fmt)
    return list(info.value.errors)


# --------------------------------------------------------------------------- detection


NATIVE = [
    {"id": "daily", "cron": "0 9 * * *", "action": {"type": "http", "url": "https://x.test/"}}
]


@pytest.mark.parametrize("data", [NATIVE, {"schedules": NATIVE}, [], {"schedules": []}])
def test_native_documents_are_detected_as_native(data: Any) -> None:
    assert detect_format(data) == "native"


@pytest.mark.parametrize("data", [
    [schedule()],
    [event()],
    envelope("schedules", [schedule()]),
    envelope("events", []),
    [envelope("schedules", [schedule()], next_cursor="c1"), envelope("schedules", [schedule()])],
    {"schedules": [schedule()], "events": [event()]},
])
def test_hub_documents_are_detected_as_scion(data: Any) -> None:
    assert detect_format(data) == "scion"


def test_native_files_keep_working_through_auto_detection() -> None:
    loaded = load({"schedules": NATIVE})
    assert loaded.format == "native" and loaded.absent == ()
    assert [s.id for s in loaded.schedules] == ["daily"]


# --------------------------------------------------------------------------- recurring schedules


def test_an_active_schedule_becomes_a_recurring_schedule_with_the_scion_action() -> None:
    item = schedule(name="daily summary", cron="0 9 * * 1-5")
    loaded = load(envelope("schedules", [item], total=1))
    assert loaded.format == "scion"
    (s,) = loaded.schedules
    assert s.id == item["id"]
    assert (s.cron, s.timezone, s.paused, s.catchup) == ("0 9 * * 1-5", "UTC", False, "latest")
    assert s.catchup_window == timedelta(days=7)  # fires once however late, as the hub does
    assert s.description == "daily summary"
    assert s.action.type == ACTION_TYPE
    assert dict(s.action.params) == {
        "kind": "schedule", "grove_id": GROVE, "name": "daily summary", "event_type": "message",
        "payload": json.loads(item["payload"]),
    }


def test_a_paused_schedule_is_kept_paused_and_a_deleted_one_is_absent() -> None:
    paused, deleted = schedule(status="paused", name="a"), schedule(status="deleted", name="b")
    loaded = load([paused, deleted])
    assert [(s.id, s.paused) for s in loaded.schedules] == [(paused["id"], True)]
    assert loaded.absent == (deleted["id"],)


def test_the_grove_comes_from_groveid() -> None:
    (s,) = load([schedule(grove="grove-1")]).schedules
    assert s.action.params["grove_id"] == "grove-1"
    assert s.labels["scion-grove"] == "grove-1"


def test_an_item_without_groveid_is_refused_even_with_a_projectid() -> None:
    # The hub names an item's grove by groveId only (pkg/store/models.go:1043, 1078); a
    # projectId is not one and is ignored like any other unknown key.
    item = schedule()
    item["projectId"] = item.pop("groveId")
    (error,) = errors_of([item])
    assert error.field == "groveId" and "grove ID" in error.reason


def test_dispatch_agent_schedules_are_accepted() -> None:
    (s,) = load([schedule(event_type="dispatch_agent")]).schedules
    assert s.action.params["event_type"] == "dispatch_agent"
    assert s.action.params["payload"]["agentName"] == "nightly-triage"


def test_a_payload_change_changes_the_fingerprint_so_sync_rewrites_the_job() -> None:
    sid = new_id()
    (a,) = load([schedule(id=sid)]).schedules
    (b,) = load([schedule(id=sid, payload=message_payload(text="other"))]).schedules
    assert a.fingerprint() != b.fingerprint()


def test_a_converted_schedule_round_trips_through_the_native_format_and_the_fire_message() -> None:
    (s,) = load([schedule()]).schedules
    assert parse_schedule(s.to_dict(), known_action_types=KNOWN) == s
    message = build_message(s)
    fire = decode_message(message.data, message.attributes)
    assert fire.action.type == "scion" and dict(fire.action.params) == dict(s.action.params)
    assert fire.catchup == "latest"


# --------------------------------------------------------------------------- one-shot events


def test_a_pending_event_becomes_a_one_shot_at_its_fire_time() -> None:
    fire_at = datetime(2026, 6, 1, 12, 30, 0, tzinfo=UTC)
    item = event(fire_at=fire_at, event_type="dispatch_agent")
    loaded = load(envelope("events", [item]))
    (s,) = loaded.schedules
    assert s.id == item["id"] and s.at == fire_at and s.cron is None
    assert s.catchup == "latest"
    assert s.action.params["kind"] == "event"
    assert s.action.params["event_type"] == "dispatch_agent"
    assert "name" not in s.action.params


def test_nanosecond_fire_times_from_go_are_read_and_fire_at_their_second() -> None:
    item = event(fire_at=datetime(2026, 6, 1, 12, 30, 15, 250000, tzinfo=UTC))
    (s,) = load([item]).schedules
    assert s.at == datetime(2026, 6, 1, 12, 30, 15, 250000, tzinfo=UTC)
    assert s.job_slot == datetime(2026, 6, 1, 12, 29, tzinfo=UTC)


@pytest.mark.parametrize("status", ["fired", "cancelled", "expired", "failed"])
def test_events_that_are_no_longer_pending_are_absent(status: str) -> None:
    item = event(status=status)
    loaded = load([item])
    assert loaded.schedules == [] and loaded.absent == (item["id"],)


def test_a_pending_event_written_by_a_recurring_schedule_is_absent() -> None:
    """The hub's own evaluator writes one per occurrence; the schedule's job covers it."""
    item = event(schedule_id=new_id())
    assert load([item]).absent == (item["id"],)


def test_schedules_and_events_come_together_in_one_document() -> None:
    data = {"schedules": [schedule(name="a"), schedule(name="b", status="deleted")],
            "events": [event(), event(status="cancelled")]}
    loaded = load(data)
    assert len(loaded.schedules) == 2 and len(loaded.absent) == 2


# --------------------------------------------------------------------------- validation like the hu


def _payload_errors(event_type: str, payload: Any) -> list[tuple[str, str]]:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return [(e.field, e.reason) for e in errors_of([schedule(event_type=event_type, payload=raw)])]


def test_a_message_needs_an_agent_and_a_message() -> None:
    fields = [f for f, _ in _payload_errors("message", {"interrupt": True})]
    assert fields == ["payload.message", "payload.agentName"]
    ok = schedule(payload=json.dumps({"agentId": "a-1", "message": "hi"}))
    assert len(load([ok]).schedules) == 1


def test_a_dispatch_agent_event_needs_an_agent_name() -> None:
    assert [f for f, _ in _payload_errors("dispatch_agent", {"task": "x"})] == ["payload.agentName"]


@pytest.mark.parametrize(("payload", "field", "words"), [
    ("{not json", "payload", "not valid JSON"),
    ("[1, 2]", "payload", "JSON object"),
    ({"agentName": "a", "message": "m", "raw": True}, "payload.raw", "raw delivery"),
    ({"agentName": 7, "message": "m"}, "payload.agentName", "string"),
    ({"agentName": "a", "message": "m", "interrupt": "yes"}, "payload.interrupt", "true or false"),
])
def test_bad_payloads_are_refused_naming_the_field(payload: Any, field: str, words: str) -> None:
    problems = _payload_errors("message", payload)
    assert any(f == field and words in why for f, why in problems), problems


def test_every_bad_item_is_reported_by_hub_id_and_name_at_once() -> None:
    bad_cron = schedule(name="nightly report", cron="0 9 * *")
    bad_type = schedule(name="ping", event_type="webhook")
    bad_status = event(status="armed")
    errors = errors_of([bad_cron, bad_type, bad_status, schedule(name="fine")])
    by_item = {(e.schedule_id, e.field) for e in errors}
    assert (f'{bad_cron["id"]} "nightly report"', "cronExpr") in by_item
    assert (f'{bad_type["id"]} "ping"', "eventType") in by_item
    assert (bad_status["id"], "status") in by_item
    assert "nightly report" in str(ValidationError(errors))


def test_ids_must_be_present_and_unique_and_names_unique_per_project() -> None:
    twin = schedule(name="x")
    errors = errors_of([twin, dict(twin), schedule(name="x"), {**schedule(), "id": ""}])
    fields = sorted(e.field for e in errors)
    assert fields == ["id", "id", "name"]


def test_items_going_away_are_not_validated_beyond_their_id() -> None:
    garbage = schedule(status="deleted", cron="never", payload="{")
    assert load([garbage]).absent == (garbage["id"],)


def test_an_item_that_is_neither_schedule_nor_event_is_refused() -> None:
    (error,) = errors_of([{"id": new_id(), "eventType": "message"}])
    assert "neither cronExpr" in error.reason


def test_a_hub_document_read_as_native_or_a_native_one_read_as_scion_fails_clearly() -> None:
    assert any(e.field == "cronExpr" for e in errors_of([schedule()], "native"))
    assert any(e.field == "(item)" for e in errors_of(NATIVE, "scion"))
    assert any(e.field == "format" for e in errors_of(NATIVE, "yaml"))


# --------------------------------------------------------------------------- pages


def test_every_page_of_a_listing_is_accepted() -> None:
    pages = [envelope("schedules", [schedule(name="a")], next_cursor="c1", total=2),
             envelope("schedules", [schedule(name="b")], total=2)]
    assert len(load(pages).schedules) == 2


def test_a_listing_cut_short_is_refused_so_prune_cannot_delete_the_rest() -> None:
    (error,) = errors_of(envelope("schedules", [schedule()], next_cursor="c1"))
    assert error.field == "schedules.nextCursor" and "prune" in error.reason
    (error,) = errors_of(envelope("events", [event()], total=3))
    assert error.field == "events.totalCount"


# --------------------------------------------------------------------------- empty listings


def test_an_empty_listing_is_null_in_the_hubs_envelope_and_reads_as_empty() -> None:
    """The hub's ListSchedules/ListScheduledEvents build a nil slice, which Go writes as null."""
    assert detect_format(envelope("events", None)) == "scion"
    assert detect_format([envelope("schedules", None), envelope("events", None)]) == "scion"
    loaded = load(envelope("schedules", None))
    assert (loaded.format, loaded.schedules, loaded.absent) == ("scion", [], ())
    item = schedule()
    loaded = load([envelope("schedules", [item], total=1), envelope("events", None)])
    assert [s.id for s in loaded.schedules] == [item["id"]]
    assert len(load({"schedules": None, "events": [event()]}, "scion").schedules) == 1


def test_a_null_listing_still_counts_as_empty_against_the_hubs_total() -> None:
    (error,) = errors_of(envelope("events", None, total=2))
    assert error.field == "events.totalCount" and "holds 0" in error.reason


@pytest.mark.parametrize(("data", "where", "got"), [
    ({"schedules": "none", "serverTime": "2026-03-02T08:15:00Z"}, "schedules", "a string"),
    ({"events": {}, "serverTime": "2026-03-02T08:15:00Z"}, "events", "an object"),
    ([envelope("schedules", None), {"events": 0}], "[1].events", "a number"),
])
def test_a_listing_of_another_type_is_refused_naming_the_field(
    data: Any, where: str, got: str
) -> None:
    (error,) = errors_of(data, "scion")
    assert error.field == where and f"must be a list of hub items (got {got})" == error.reason


def test_null_is_an_empty_listing_only_inside_an_envelope() -> None:
    (error,) = errors_of(None, "scion")
    assert error.field == "(document)"
    (error,) = errors_of([None], "scion")
    assert error.field == "(item)" and error.reason == "must be an object"


@pytest.mark.emulator
def test_a_document_whose_event_listing_is_null_plans_and_syncs(
    tmp_path: Path,
    capsys: Any,
    cli: Callable[[list[str]], int],
    monkeypatch: pytest.MonkeyPatch,
    cloud_scheduler_emulator: Any,
    project_id: str,
) -> None:
    """A hub grove with schedules but no events is handed over; then with nothing at all,
    `--prune` empties Cloud Scheduler."""
    operator_env(monkeypatch, {
        "SCION_SCHEDULER_PROJECT": project_id, "SCION_SCHEDULER_LOCATION": "europe-west1",
        "SCION_SCHEDULER_TOPIC": "fires", "SCION_SCHEDULER_WRITE_RATE": "1000",
        "SCION_SCHEDULER_LOG_FORMAT": "json"})
    item = schedule()
    path = tmp_path / "hub.json"
    path.write_text(json.dumps([envelope("schedules", [item], total=1), envelope("events", None)]))

    def run(*argv: str) -> Any:
        capsys.readouterr()
        code = cli([*argv, "--output", "json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0, out
        return out

    assert [(s["kind"], s["schedule_id"]) for s in run("plan", "--file", str(path))["steps"]] == [
        ("create", item["id"])
    ]
    assert run("sync", "--file", str(path))["ok"]
    assert [j["schedule_id"] for j in run("list")["jobs"]] == [item["id"]]
    path.write_text(json.dumps([envelope("schedules", None), envelope("events", None)]))
    out = run("sync", "--file", str(path), "--prune")
    assert [(s["kind"], s["schedule_id"]) for s in out["plan"]["steps"]] == [("delete", item["id"])]
    assert run("list")["jobs"] == []


# --------------------------------------------------------------------------- native scion actions


def test_a_scion_action_written_by_hand_is_validated_like_the_hub() -> None:
    raw = {"id": "x", "cron": "* * * * *", "action": {
        "type": "scion", "kind": "job", "event_type": "message", "payload": {"message": "m"},
        "colour": "red"}}
    with pytest.raises(ValidationError) as info:
        parse_schedule(raw, known_action_types=KNOWN)
    fields = sorted(e.field for e in info.value.errors)
    assert fields == ["action.colour", "action.grove_id", "action.kind", "action.payload.agentName"]


# --------------------------------------------------------------------------- files and the CLI


@pytest.fixture
def cli() -> Iterator[Callable[[list[str]], int]]:
    """`scion-scheduler` in-process; it points structlog at pytest's captured stderr, which is
    closed after the test, so the default configuration is restored for the tests after it."""
    try:
        yield main
    finally:
        structlog.reset_defaults()


def test_files_in_the_hub_format_load_and_validate_from_the_cli(
        tmp_path: Path, capsys: Any, cli: Callable[[list[str]], int]) -> None:
    path = tmp_path / "hub.json"
    path.write_text(
        json.dumps(envelope("schedules", [schedule(), schedule(name="gone", status="deleted")]))
    )
    assert len(load_schedules(path)) == 1
    assert len(load_schedule_set(path, format="scion").absent) == 1
    assert cli(["validate", "--file", str(path), "--format", "scion", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["schedules"] == 1
    path.write_text(json.dumps([schedule()]))
    assert cli(["validate", "--file", str(path), "--format", "native"]) == 2
    assert "cronExpr: unknown field" in capsys.readouterr().err


def test_a_hand_written_scion_schedule_catches_up_with_latest_unless_it_says_otherwise() -> None:
    action = {"type": "scion", "grove_id": "p", "event_type": "dispatch_agent",
              "payload": {"agentName": "triage"}}
    base = {"id": "x", "cron": "0 * * * *", "action": action}
    assert parse_schedule(base, known_action_types=KNOWN).catchup == "latest"
    assert parse_schedule(base | {"catchup": "all"}, known_action_types=KNOWN).catchup == "all"
    assert parse_schedule(NATIVE[0], known_action_types=KNOWN).catchup == "all"


# --------------------------------------------------------------------------- item by item


def test_a_listing_with_invalid_items_is_read_item_by_item_unless_strict() -> None:
    good, bad_payload, bad_type = schedule(name="a"), schedule(name="b"), schedule(name="c")
    bad_payload["payload"] = "not json"  # a PATCH sets it unchecked (handlers_schedules.go:337-339)
    bad_type["eventType"] = "status_update"
    no_id = schedule(name="d")
    del no_id["id"]
    document = envelope("schedules", [good, bad_payload, bad_type, no_id])
    with pytest.raises(ValidationError):
        schedules_from_data(document, format="scion")
    loaded = schedules_from_data(document, format="scion", strict=False)
    assert [s.id for s in loaded.schedules] == [good["id"]]
    assert set(loaded.keep) == {bad_payload["id"], bad_type["id"]}
    refused = {(e.schedule_id.split()[0], e.field) for e in loaded.refused}
    assert refused == {(bad_payload["id"], "payload"), (bad_type["id"], "eventType"),
                       ("schedules[3]", "id")}


def test_an_id_listed_twice_is_refused_as_a_whole() -> None:
    item = schedule()
    loaded = schedules_from_data([item, dict(item, name="other")], format="scion", strict=False)
    assert loaded.schedules == [] and loaded.keep == (item["id"],)


def test_a_document_wrong_as_a_whole_is_refused_whole_even_item_by_item() -> None:
    cut_short = envelope("schedules", [schedule()], next_cursor="more", total=2)
    with pytest.raises(ValidationError):
        schedules_from_data(cut_short, format="scion", strict=False)


def test_native_files_stay_all_or_nothing() -> None:
    native = [{"id": "a", "cron": "* * * * *", "action": {"type": "http", "url": "https://x.test"}},
              {"id": "b", "cron": "nope", "action": {"type": "http", "url": "https://x.test"}}]
    with pytest.raises(ValidationError):
        schedules_from_data(native, format="native", strict=False)


def test_convert_item_converts_one_hub_item() -> None:
    item = event()
    one = convert_item(item)
    assert one.item_id == item["id"] and one.errors == [] and not one.absent
    assert one.document is not None and one.document["action"]["kind"] == "event"
    assert convert_item(dict(item, status="fired")).absent
    assert convert_item("x", where="items[0]").errors[0].field == "(item)"


def test_pages_that_repeat_an_item_are_refused_whole_even_item_by_item() -> None:
    # The real hub's schedule listing never reads `cursor` (pkg/store/sqlite/schedule.go:162-171):
    # "page 2" is page 1 again, and a document of both pages holds enough items to pass a count.
    page = [schedule(name=f"s{n}") for n in range(3)]
    pages = [envelope("schedules", page, next_cursor=page[-1]["id"], total=5),
             envelope("schedules", page, total=5)]
    with pytest.raises(ValidationError) as info:
        schedules_from_data(pages, format="scion", strict=False)
    (error,) = info.value.errors
    assert "is on page 0 and on page 1" in error.reason and "schedule.go" in error.reason
