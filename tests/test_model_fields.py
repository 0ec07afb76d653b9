"""The schedule model and its validation: defaults, the accepted forms of each field, and one-shots
(helpers: `model_documents`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from model_documents import PROPERTY, doc, only_error
from schedule_strategies import (
    DURATIONS,
)

from scheduler.model import (
    DEFAULT_CATCHUP_WINDOW,
    DEFAULT_MAX_ATTEMPTS,
    ONE_SHOT_LEAD,
    Action,
    Schedule,
    format_duration,
    format_instant,
    one_shot_slot,
    parse_duration,
    parse_instant,
)
from scheduler.validation import (
    parse_schedule,
)

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
