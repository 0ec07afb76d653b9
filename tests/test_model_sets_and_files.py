"""The schedule model and its validation: ids, sets of schedules, and the files that hold them
(helpers: `model_documents`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from model_documents import PROPERTY, doc, only_error
from schedule_strategies import (
    PRINTABLE_CHARS,
    SCHEDULE_IDS,
)

from scheduler.model import (
    ValidationError,
)
from scheduler.validation import (
    load_schedules,
    parse_document_text,
    parse_schedule,
    validate_schedules,
)

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
