"""The schedule model and its validation: one error per problem, naming schedule, field and reason;
message size; action types (helpers: `model_documents`)."""

from __future__ import annotations

from datetime import datetime
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from model_documents import doc, errors_of, only_error
from schedule_strategies import (
    CUSTOM_ACTION_TYPE,
    KNOWN_TYPES,
)

from scheduler import validation
from scheduler.contract import MAX_MESSAGE_BYTES, message_size
from scheduler.model import (
    Action,
)
from scheduler.validation import (
    ACTION_ENTRY_POINT_GROUP,
    parse_schedule,
)

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
