"""The schedule model and its validation: `to_dict` round trips and the fingerprint (helpers:
`model_documents`)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from model_documents import PROPERTY, doc
from schedule_strategies import (
    KNOWN_TYPES,
    schedule_documents,
)

from scheduler import validation
from scheduler.model import (
    Action,
)
from scheduler.validation import (
    parse_document_text,
    parse_schedule,
    validate_schedules,
)

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
