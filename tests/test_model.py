"""The schedule model and its validation: documents in, `Schedule`s or every error out."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from schedule_strategies import (
    CUSTOM_ACTION_TYPE,
    DURATIONS,
    KNOWN_TYPES,
    PRINTABLE_CHARS,
    SCHEDULE_IDS,
    schedule_documents,
)

from scheduler import validation
from scheduler.contract import MAX_MESSAGE_BYTES, message_size
from scheduler.model import (
    DEFAULT_CATCHUP_WINDOW,
    DEFAULT_MAX_ATTEMPTS,
    ONE_SHOT_LEAD,
    Action,
    FieldError,
    Schedule,
    ValidationError,
    format_duration,
    format_instant,
    one_shot_slot,
    parse_duration,
    parse_instant,
)
from scheduler.validation import (
    ACTION_ENTRY_POINT_GROUP,
    load_schedules,
    parse_document_text,
    parse_schedule,
    validate_schedules,
)

PROPERTY = settings(max_examples=200, deadline=None)


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid minimal document, with fields replaced (a value of `...` removes the field)."""
    base: dict[str, Any] = {
        "id": "daily-report",
        "cron": "0 9 * * *",
        "action": {"type": "http", "url": "https://hub.example.com/api/fire"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def errors_of(raw: Any, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        parse_schedule(raw, **kwargs)
    return list(info.value.errors)


def only_error(raw: Any, **kwargs: Any) -> FieldError:
    found = errors_of(raw, **kwargs)
    assert len(found) == 1, found
    return found[0]


# --- defaults and accepted forms ------------------------------------------------------------------

def test_defaults() -> None:
    s = parse_schedule(doc())
    assert s == Schedule(
        id="daily-report", cron="0 9 * * *",
        action=Action("http", {"url": "https://hub.example.com/api/fire", "method": "POST",
                               "headers": {}, "timeout": 30.0}),
    )
    assert (s.timezone, s.paused, s.overlap, s.catchup) == ("UTC", False, "skip", "all")
    assert s.catchup_window == DEFAULT_CATCHUP_WINDOW == timedelta(minutes=15)
    assert s.max_attempts == DEFAULT_MAX_ATTEMPTS == 5
    assert (s.labels, s.description, s.one_shot) == ({}, "", False)
    assert (s.effective_cron, s.effective_timezone) == ("0 9 * * *", "UTC")


def test_every_field_given() -> None:
    s = parse_schedule(doc(
        timezone="Europe/Berlin", paused=True, overlap="allow", catchup="latest",
        catchup_window="1h30m", max_attempts=9, labels={"team": "hub"}, description="report",
        action={"type": "http", "url": "https://hub.example.com/x", "method": "put",
                "headers": {"X-Token": "t"}, "body": {"a": [1, 2.5, None, "é"]}, "timeout": "2m"},
    ))
    assert s.timezone == "Europe/Berlin" and s.paused and s.overlap == "allow"
    assert s.catchup == "latest" and s.catchup_window == timedelta(hours=1, minutes=30)
    assert s.max_attempts == 9 and s.labels == {"team": "hub"} and s.description == "report"
    assert s.action.params == {"url": "https://hub.example.com/x", "method": "PUT",
                               "headers": {"X-Token": "t"}, "body": {"a": [1, 2.5, None, "é"]},
                               "timeout": 120.0}


@pytest.mark.parametrize("body", [None, 0, "text", [1, "two"], {"nested": {"k": [True]}}])
def test_http_body_is_any_json(body: Any) -> None:
    action = {"type": "http", "url": "https://hub.example.com/", "body": body}
    assert parse_schedule(doc(action=action)).action.params["body"] == body


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(minutes=90)),
        ("90s", timedelta(seconds=90)),
        ("2d", timedelta(days=2)),
        ("PT15M", timedelta(minutes=15)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("0.25s", timedelta(milliseconds=250)),
    ],
)
def test_durations(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected
    assert parse_schedule(doc(catchup_window=value)).catchup_window == expected


@PROPERTY
@given(DURATIONS | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10**6)))
def test_format_duration_round_trips_exactly(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


def test_format_duration_examples() -> None:
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(minutes=15)) == "15m"
    assert format_duration(timedelta(days=1, hours=2, seconds=3.5)) == "1d2h3.5s"
    assert format_duration(timedelta(microseconds=1)) == "0.000001s"


def test_instants() -> None:
    assert parse_instant("2026-01-31T09:00:00Z") == datetime(2026, 1, 31, 9, tzinfo=UTC)
    assert parse_instant("2026-01-31T10:00:00+01:00") == datetime(2026, 1, 31, 9, tzinfo=UTC)
    assert parse_instant("2026-01-31t09:00:00.5z") == datetime(
        2026, 1, 31, 9, 0, 0, 500000, tzinfo=UTC
    )
    for bad in ["2026-01-31T09:00:00", "2026-01-31", "tomorrow", "2026-13-01T00:00:00Z"]:
        with pytest.raises(ValueError):
            parse_instant(bad)
    assert (
        format_instant(datetime(2026, 1, 31, 10, tzinfo=timezone(timedelta(hours=1))))
        == "2026-01-31T09:00:00Z"
    )


# --- one-shots ------------------------------------------------------------------------------------

def test_one_shot_job_fires_at_the_whole_minute_at_least_the_lead_before_at_in_utc() -> None:
    # The hub fires a one-shot at its exact fireAt; the job fires early and the worker holds.
    s = parse_schedule(doc(cron=..., at="2026-03-29T02:30:50+02:00", timezone="Europe/Berlin"))
    assert s.one_shot and s.at == datetime(2026, 3, 29, 0, 30, 50, tzinfo=UTC)
    assert s.job_slot == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert s.effective_cron == "30 0 29 3 *"
    assert s.effective_timezone == "UTC"
    # Less than the lead after the minute: the minute before, so a late publish still lands early.
    early = parse_schedule(doc(cron=..., at="2026-03-29T00:30:20Z"))
    assert early.job_slot == datetime(2026, 3, 29, 0, 29, tzinfo=UTC)


def test_one_shot_on_the_minute_fires_its_job_a_minute_early_and_can_roll_back_a_year() -> None:
    exact = parse_schedule(doc(cron=..., at="2026-06-01T12:00:00Z"))
    assert exact.job_slot == datetime(2026, 6, 1, 11, 59, tzinfo=UTC)
    assert exact.effective_cron == "59 11 1 6 *"
    new_year = parse_schedule(doc(cron=..., at="2027-01-01T00:00:10Z"))
    assert new_year.job_slot == datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert new_year.effective_cron == "59 23 31 12 *"
    assert all(one_shot_slot(at) <= at - ONE_SHOT_LEAD for at in (exact.at, new_year.at) if at)


def test_one_shot_accepts_aware_datetimes_from_python_and_yaml() -> None:
    at = datetime(2026, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert parse_schedule(doc(cron=..., at=at)).at == datetime(2026, 6, 1, 12, tzinfo=UTC)
    loaded = yaml.safe_load("at: 2026-06-01T12:00:00Z")["at"]
    assert parse_schedule(doc(cron=..., at=loaded)).at == datetime(2026, 6, 1, 12, tzinfo=UTC)
    naive = only_error(doc(cron=..., at=datetime(2026, 6, 1, 12)))
    assert naive.field == "at" and "offset" in naive.reason


# --- one error per problem ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"cron": "61 * * * *"}, "cron", "outside 0-59"),
        ({"cron": "0 0 9 * * *"}, "cron", "sixth field"),
        ({"cron": "0 0 L * *"}, "cron", "day of month"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"cron": 5}, "cron", "string"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "unknown IANA time zone"),
        ({"timezone": "localtime"}, "timezone", "unknown IANA time zone"),
        ({"timezone": 3}, "timezone", "unknown IANA time zone"),
        ({"at": "2026-06-01T12:00:00Z"}, "cron", "exactly one"),
        ({"cron": ...}, "cron", "exactly one"),
        ({"cron": ..., "at": "next tuesday"}, "at", "RFC 3339"),
        ({"cron": ..., "at": "2026-06-01T12:00:00"}, "at", "offset"),
        ({"cron": ..., "at": 1700000000}, "at", "RFC 3339"),
        ({"id": ...}, "id", "required"),
        ({"id": ""}, "id", "required"),
        ({"id": "x" * 257}, "id", "at most 256"),
        ({"id": "line\nbreak"}, "id", "printable"),
        ({"id": "tab\there"}, "id", "printable"),
        ({"paused": "yes"}, "paused", "true or false"),
        ({"overlap": "queue"}, "overlap", "skip, allow"),
        ({"catchup": "some"}, "catchup", "all, latest, none"),
        ({"catchup_window": "soon"}, "catchup_window", "duration"),
        ({"catchup_window": -5}, "catchup_window", "non-negative"),
        ({"catchup_window": True}, "catchup_window", "boolean"),
        ({"catchup_window": 1e300}, "catchup_window", ""),
        ({"catchup_window": "99999999999d"}, "catchup_window", ""),
        ({"max_attempts": 0}, "max_attempts", "1 to 100"),
        ({"max_attempts": 101}, "max_attempts", "1 to 100"),
        ({"max_attempts": 2.5}, "max_attempts", "whole number"),
        ({"max_attempts": True}, "max_attempts", "whole number"),
        ({"labels": {"a": 1}}, "labels", "strings"),
        ({"labels": ["a"]}, "labels", "strings"),
        ({"description": 7}, "description", "string"),
        ({"description": "d" * 501}, "description", "500"),
        ({"colour": "blue"}, "colour", "unknown field"),
        ({"action": ...}, "action", "required"),
        ({"action": "http"}, "action", "required"),
        ({"action": {"url": "https://x.example/"}}, "action.type", "required"),
        ({"action": {"type": "smtp"}}, "action.type", "unknown action type 'smtp'"),
        ({"action": {"type": "os:system", "cmd": "true"}}, "action.type", "unknown action type"),
        (
            {"action": {"type": "scheduler.contract:build_message"}},
            "action.type",
            "unknown action type",
        ),
        ({"action": {"type": "http"}}, "action.url", "required"),
        ({"action": {"type": "http", "url": 5}}, "action.url", "required"),
        (
            {"action": {"type": "http", "url": "hub.example.com/x"}},
            "action.url",
            "absolute http(s)",
        ),
        (
            {"action": {"type": "http", "url": "ftp://hub.example.com/x"}},
            "action.url",
            "absolute http(s)",
        ),
        ({"action": {"type": "http", "url": "https:///x"}}, "action.url", "absolute http(s)"),
        ({"action": {"type": "http", "url": "http://[::1"}}, "action.url", ""),
        (
            {"action": {"type": "http", "url": "https://hub.example.com:99999/"}},
            "action.url",
            "port",
        ),
        (
            {"action": {"type": "http", "url": "https://hub.example.com:http/"}},
            "action.url",
            "port",
        ),
        (
            {"action": {"type": "http", "url": "https://hub example.com/"}},
            "action.url",
            "whitespace",
        ),
        (
            {"action": {"type": "http", "url": "https://hub.example.com/\n"}},
            "action.url",
            "whitespace",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "method": "FETCH"}},
            "action.method",
            "GET",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "headers": {"a": 1}}},
            "action.headers",
            "string",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "timeout": 0}},
            "action.timeout",
            "more than 0",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "timeout": "31m"}},
            "action.timeout",
            "30 minutes",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "timeout": 1e300}},
            "action.timeout",
            "",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "retries": 3}},
            "action.retries",
            "unknown field",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "body": float("nan")}},
            "action",
            "JSON",
        ),
        (
            {"action": {"type": "http", "url": "https://x.example/", "body": {1, 2}}},
            "action",
            "JSON",
        ),
    ],
)
def test_each_problem_is_one_error_naming_schedule_field_and_reason(
    overrides: dict[str, Any], field: str, fragment: str
) -> None:
    error = only_error(doc(**overrides))
    assert error.field == field
    assert fragment.lower() in error.reason.lower()
    expected_id = overrides.get("id", "daily-report")
    assert error.schedule_id == (
        expected_id if isinstance(expected_id, str) and expected_id else "#0"
    )
    assert repr(error.schedule_id) in str(error) and field in str(error)


def test_every_problem_of_one_schedule_is_reported() -> None:
    found = errors_of(doc(
        cron="0 0 * * * *", timezone="Nowhere/Town", paused="no", overlap="x", catchup="x",
        catchup_window="x", max_attempts=0, labels=[], description=1, extra=1,
        action={"type": "http", "url": "nope", "method": "X", "headers": [], "timeout": -1, "y": 2},
    ))
    assert sorted(e.field for e in found) == sorted([
        "cron", "timezone", "paused", "overlap", "catchup", "catchup_window", "max_attempts",
        "labels", "description", "extra", "action.url", "action.method", "action.headers",
        "action.timeout", "action.y",
    ])
    assert {e.schedule_id for e in found} == {"daily-report"}


def test_not_an_object() -> None:
    error = only_error(["not", "a", "schedule"])
    assert (error.schedule_id, error.field) == ("#0", "(schedule)")


# --- message size ---------------------------------------------------------------------------------

def _body_of_size(target: int) -> dict[str, Any]:
    """A document whose fire message is exactly `target` bytes."""
    probe = parse_schedule(doc(action={"type": "http", "url": "https://x.example/", "body": ""}))
    overhead = message_size(probe)
    return doc(
        action={"type": "http", "url": "https://x.example/", "body": "b" * (target - overhead)}
    )


def test_body_up_to_the_message_limit_is_accepted() -> None:
    s = parse_schedule(_body_of_size(MAX_MESSAGE_BYTES))
    assert message_size(s) == MAX_MESSAGE_BYTES


def test_body_too_large_for_the_message_is_rejected() -> None:
    error = only_error(_body_of_size(MAX_MESSAGE_BYTES + 1))
    assert error.field == "action"
    assert str(MAX_MESSAGE_BYTES) in error.reason and str(MAX_MESSAGE_BYTES + 1) in error.reason


def test_multibyte_body_is_measured_in_bytes() -> None:
    probe = parse_schedule(doc(action={"type": "http", "url": "https://x.example/", "body": ""}))
    chars = (MAX_MESSAGE_BYTES - message_size(probe)) // 3 + 1  # fits as characters, not as bytes
    error = only_error(
        doc(action={"type": "http", "url": "https://x.example/", "body": "€" * chars})
    )
    assert error.field == "action"


# --- action types ---------------------------------------------------------------------------------

def test_registered_action_types_come_from_entry_point_names_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The entry point's target does not exist: validation must never import it.
    fake = [EntryPoint(name=CUSTOM_ACTION_TYPE, value="no_such_module_anywhere:run",
                       group=ACTION_ENTRY_POINT_GROUP)]
    seen_groups: list[str] = []

    def entry_points(*, group: str) -> list[EntryPoint]:
        seen_groups.append(group)
        return fake

    monkeypatch.setattr(validation, "entry_points", entry_points)
    assert validation.registered_action_types() == frozenset({CUSTOM_ACTION_TYPE})
    s = parse_schedule(doc(action={"type": CUSTOM_ACTION_TYPE, "topic": "t", "payload": {"a": 1}}))
    assert s.action == Action(CUSTOM_ACTION_TYPE, {"topic": "t", "payload": {"a": 1}})
    assert seen_groups and set(seen_groups) == {"scion_scheduler.actions"}
    # Naming the entry point's target instead of its name is not a way in.
    error = only_error(doc(action={"type": "no_such_module_anywhere:run"}))
    assert error.field == "action.type"


def test_custom_action_params_must_be_json() -> None:
    error = only_error(doc(action={"type": CUSTOM_ACTION_TYPE, "when": datetime(2026, 1, 1)}),
                       known_action_types=KNOWN_TYPES)
    assert error.field == "action" and "JSON" in error.reason


# --- ids ------------------------------------------------------------------------------------------

@PROPERTY
@given(SCHEDULE_IDS)
def test_any_printable_id_up_to_256_characters_is_accepted(sid: str) -> None:
    assert parse_schedule(doc(id=sid)).id == sid


@PROPERTY
@given(st.text(PRINTABLE_CHARS, min_size=257, max_size=300))
def test_ids_over_256_characters_are_rejected(sid: str) -> None:
    assert only_error(doc(id=sid)).field == "id"


# --- sets and files -------------------------------------------------------------------------------

def test_duplicate_ids_are_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        validate_schedules([doc(), doc(cron="*/5 * * * *"), doc(id="other")])
    assert [(e.schedule_id, e.field) for e in info.value.errors] == [("daily-report", "id")]
    assert "duplicate" in info.value.errors[0].reason


def test_duplicate_ids_are_reported_even_when_a_copy_is_invalid() -> None:
    with pytest.raises(ValidationError) as info:
        validate_schedules([doc(cron="bad"), doc()])
    fields = sorted((e.schedule_id, e.field) for e in info.value.errors)
    assert fields == [("daily-report", "cron"), ("daily-report", "id")]


def test_a_set_lists_every_error_of_every_schedule() -> None:
    raws = [
        doc(id="a"),
        doc(id="b", cron="* * *"),
        doc(id="c", timezone="X/Y", overlap="q"),
        "junk",
    ]
    with pytest.raises(ValidationError) as info:
        validate_schedules(raws)
    assert sorted((e.schedule_id, e.field) for e in info.value.errors) == [
        ("#3", "(schedule)"), ("b", "cron"), ("c", "overlap"), ("c", "timezone")]
    message = str(info.value)
    assert message.startswith("4 validation error(s)")
    for e in info.value.errors:
        assert str(e) in message


GOOD = [doc(id="a"), doc(id="b", cron=..., at="2026-06-01T12:00:00Z")]


@pytest.mark.parametrize("text", [
    json.dumps(GOOD),
    json.dumps({"schedules": GOOD}),
    yaml.safe_dump(GOOD),
    yaml.safe_dump({"schedules": GOOD}),
    """
schedules:
  - id: a
    cron: "0 9 * * *"
    action: {type: http, url: "https://hub.example.com/api/fire"}
  - id: b
    at: 2026-06-01T12:00:00Z
    action:
      type: http
      url: https://hub.example.com/api/fire
""",
])
def test_files_in_yaml_or_json_as_a_list_or_under_schedules(tmp_path: Path, text: str) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = load_schedules(path)
    assert [s.id for s in loaded] == ["a", "b"]
    assert loaded[1].at == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert loaded == validate_schedules(GOOD)


def test_a_file_with_errors_is_rejected_whole_with_every_error(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump([
        doc(id="fine"), doc(id="bad-cron", cron="0 0 9 * * *"), doc(id="fine-too"),
        doc(id="bad-zone", timezone="Atlantis/Capital", extra=True),
    ]))
    with pytest.raises(ValidationError) as info:
        load_schedules(path)
    assert sorted((e.schedule_id, e.field) for e in info.value.errors) == [
        ("bad-cron", "cron"), ("bad-zone", "extra"), ("bad-zone", "timezone")]


@pytest.mark.parametrize(
    "text", ["{not yaml: [", "just a string", '{"schedules": 5}', "", '{"a": []}']
)
def test_unparseable_or_wrongly_shaped_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        load_schedules(path)
    assert info.value.errors[0].schedule_id == "(file)"


def test_a_file_that_is_not_utf8_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"- id: \xff\xfe\n")
    with pytest.raises(ValidationError) as info:
        load_schedules(path)
    assert info.value.errors[0].schedule_id == "(file)"


def test_document_text_prefers_json_then_yaml() -> None:
    assert parse_document_text('[{"id": "a"}]') == [{"id": "a"}]
    assert parse_document_text("- id: a\n") == [{"id": "a"}]


# --- round trip and fingerprint -------------------------------------------------------------------

@PROPERTY
@given(schedule_documents())
def test_to_dict_round_trips_through_parse_schedule(raw: dict[str, Any]) -> None:
    s = parse_schedule(raw, known_action_types=KNOWN_TYPES)
    assert parse_schedule(s.to_dict(), known_action_types=KNOWN_TYPES) == s
    # ... and through JSON text, as a file would hold it.
    text = json.dumps({"schedules": [s.to_dict()]})
    again = validate_schedules(validation.documents_from_data(parse_document_text(text)),
                               known_action_types=KNOWN_TYPES)
    assert again == [s]
    assert again[0].fingerprint() == s.fingerprint()


def test_to_dict_round_trips_through_yaml() -> None:
    s = parse_schedule(doc(cron=..., at="2026-06-01T12:00:30.25+02:00", catchup_window=0.5,
                           labels={"k": "2026-01-01"}, description="yes"))
    assert parse_schedule(yaml.safe_load(yaml.safe_dump(s.to_dict()))) == s


FIRE_RELEVANT_CHANGES = {
    "id": lambda s: replace(s, id=s.id + "x"),
    "cron": lambda s: replace(s, cron="1 9 * * *"),
    "at": lambda s: replace(s, cron=None, at=datetime(2026, 1, 1, tzinfo=UTC)),
    "timezone": lambda s: replace(s, timezone="Europe/Berlin"),
    "action.type": lambda s: replace(s, action=Action("other", s.action.params)),
    "action.url": lambda s: replace(
        s, action=Action("http", {**s.action.params, "url": "https://y.example/"})
    ),
    "action.body": lambda s: replace(
        s, action=Action("http", {**s.action.params, "body": {"k": 1}})
    ),
    "overlap": lambda s: replace(s, overlap="allow"),
    "catchup": lambda s: replace(s, catchup="none"),
    "catchup_window": lambda s: replace(s, catchup_window=timedelta(minutes=16)),
    "max_attempts": lambda s: replace(s, max_attempts=6),
    "labels": lambda s: replace(s, labels={"team": "b"}),
}


@pytest.mark.parametrize("change", list(FIRE_RELEVANT_CHANGES), ids=list(FIRE_RELEVANT_CHANGES))
def test_fingerprint_changes_with_every_fire_relevant_field(change: str) -> None:
    s = parse_schedule(doc(labels={"team": "a"}))
    assert FIRE_RELEVANT_CHANGES[change](s).fingerprint() != s.fingerprint()


def test_fingerprint_ignores_paused_and_description() -> None:
    s = parse_schedule(doc())
    assert replace(s, paused=True).fingerprint() == s.fingerprint()
    assert replace(s, description="now described").fingerprint() == s.fingerprint()
    assert parse_schedule(doc()).fingerprint() == s.fingerprint()  # deterministic


@PROPERTY
@given(schedule_documents(), st.booleans(), st.text(max_size=20))
def test_fingerprint_property(raw: dict[str, Any], paused: bool, description: str) -> None:
    s = parse_schedule(raw, known_action_types=KNOWN_TYPES)
    assert replace(s, paused=paused, description=description).fingerprint() == s.fingerprint()
    assert replace(s, max_attempts=s.max_attempts % 100 + 1).fingerprint() != s.fingerprint()
    assert replace(s, labels={**s.labels, "changed": "yes"}).fingerprint() != s.fingerprint()
