"""Validation: untrusted schedule documents (YAML, JSON, Python objects) in, `Schedule`s out.

Loading is all-or-nothing: either every schedule is returned, or `ValidationError` lists every
problem, each naming the schedule ID, the field and the reason, so nothing is ever half-applied
from a partly broken file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from scheduler import scion_format
from scheduler.contract import MAX_MESSAGE_BYTES, message_size
from scheduler.cron import CronDialect
from scheduler.egress import EgressPolicy
from scheduler.model import FieldError, Schedule, ValidationError
from scheduler.schedule_checks import (
    Collector,
    check_action,
    check_labels_and_description,
    check_policies,
    check_timing,
)

ACTION_ENTRY_POINT_GROUP = "scion_scheduler.actions"
MAX_ID_LENGTH = 256

_SCHEDULE_FIELDS = frozenset({
    "id", "cron", "at", "timezone", "paused", "action", "overlap", "catchup", "catchup_window",
    "max_attempts", "labels", "description", "cron_dialect",
})
# Without a deployment's SCION_SCHEDULER_ALLOWED_TARGETS: any public address, nothing else.
PUBLIC_ONLY = EgressPolicy()


def registered_action_types() -> frozenset[str]:
    """Action types available here: the entry-point group, read by name only. Schedule data can
    only pick a registered name, never a module to import."""
    return frozenset(ep.name for ep in entry_points(group=ACTION_ENTRY_POINT_GROUP))



def parse_schedule(raw: Any, *, known_action_types: frozenset[str] | None = None,
                   egress: EgressPolicy = PUBLIC_ONLY) -> Schedule:
    """Validate one schedule document; raises `ValidationError` listing every problem in it.
    `egress`: where its action may send requests (the deployment's allowed targets)."""
    errors, schedule = _parse(raw, 0, known_action_types or registered_action_types(), egress)
    if errors or schedule is None:
        raise ValidationError(errors)
    return schedule


def _parse(
    raw: Any, index: int, known_types: frozenset[str], egress: EgressPolicy
) -> tuple[list[FieldError], Schedule | None]:
    if not isinstance(raw, Mapping):
        return [FieldError(f"#{index}", "(schedule)", "must be an object")], None
    sid = raw.get("id")
    c = Collector(sid if isinstance(sid, str) and sid else f"#{index}")
    if not isinstance(sid, str) or not sid:
        c.add("id", "required: a non-empty string")
    elif len(sid) > MAX_ID_LENGTH:
        c.add("id", f"must be at most {MAX_ID_LENGTH} characters (got {len(sid)})")
    elif not sid.isprintable():
        c.add("id", "must be printable text (no control characters or line breaks)")
    for key in sorted(set(raw) - _SCHEDULE_FIELDS, key=str):
        c.add(str(key), "unknown field")
    timing = check_timing(raw, c)
    policies = check_policies(raw, c)
    labels, description = check_labels_and_description(raw, c)
    action = check_action(raw.get("action"), c, known_types, egress)
    if c.errors or action is None:
        return c.errors, None
    assert isinstance(sid, str)  # no errors means the id check passed
    schedule = Schedule(
        id=sid, action=action, cron=timing.cron, at=timing.at, timezone=timing.timezone,
        paused=policies.paused, overlap=policies.overlap, catchup=policies.catchup,
        catchup_window=policies.catchup_window, max_attempts=policies.max_attempts,
        labels=labels, description=description,
        cron_dialect=timing.dialect or CronDialect.UNIX,
    )
    size = message_size(schedule)
    if size > MAX_MESSAGE_BYTES:
        c.add(
            "action",
            f"the fire message built from it is {size} bytes; the limit is {MAX_MESSAGE_BYTES}",
        )
        return c.errors, None
    return [], schedule



def validate_schedules(
    raws: Iterable[Any], *, known_action_types: frozenset[str] | None = None,
    egress: EgressPolicy = PUBLIC_ONLY,
) -> list[Schedule]:
    """Validate many documents at once: every error of every schedule, and duplicate IDs."""
    known = known_action_types or registered_action_types()
    errors: list[FieldError] = []
    schedules: list[Schedule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raws):
        found, schedule = _parse(raw, index, known, egress)
        errors.extend(found)
        # From the document, so that a duplicate is reported even when a copy is invalid.
        sid = raw.get("id") if isinstance(raw, Mapping) else None
        if isinstance(sid, str) and sid:
            if sid in seen:
                errors.append(FieldError(sid, "id", "duplicate schedule ID in this set"))
            seen.add(sid)
        if schedule is not None:
            schedules.append(schedule)
    if errors:
        raise ValidationError(errors)
    return schedules


def documents_from_data(data: Any) -> list[Any]:
    """Accept a list of schedules or `{"schedules": [...]}`."""
    if isinstance(data, Mapping) and set(data) == {"schedules"}:
        data = data["schedules"]
    if not isinstance(data, list):
        raise ValidationError(
            [
                FieldError(
                    "(file)", "schedules", 'expected a list of schedules or {"schedules": [...]}'
                )
            ]
        )
    return data


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError([FieldError("(file)", str(path), f"not UTF-8 text: {exc}")]) from exc


def parse_document_text(text: str, *, source: str = "(input)") -> Any:
    """Parse YAML or JSON text (JSON is YAML, but is tried first for exact error messages)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(
            [FieldError("(file)", source, f"not valid YAML or JSON: {exc}")]
        ) from exc


@dataclass(frozen=True)
class ScheduleSet:
    """A validated schedule document: the schedules wanted, and the IDs whose jobs must not exist
    (from the hub's format: deleted schedules and events no longer pending; see
    `scheduler.scion_format`). `format` is the format the document was read in. A hub listing
    read item by item (`strict=False`) also carries the `refused` items' errors and `keep`: the
    hub IDs of the refused items, whose jobs must be left exactly as they are."""

    schedules: list[Schedule]
    absent: tuple[str, ...] = ()
    format: str = "native"
    refused: tuple[FieldError, ...] = ()
    keep: tuple[str, ...] = ()


def schedules_from_data(
    data: Any, *, format: str = "auto", known_action_types: frozenset[str] | None = None,
    strict: bool = True, egress: EgressPolicy = PUBLIC_ONLY,
) -> ScheduleSet:
    """Validate a parsed document in this project's format (`native`), the Scion hub's JSON
    (`scion`), or whichever it is (`auto`). All or nothing, except a hub listing with
    `strict=False`: then each invalid item is refused on its own (`ScheduleSet.refused`,
    `keep`) and the rest is returned, unless the document as a whole is wrong (its shape, a
    listing cut short). Hub items are named in errors by their hub ID and name."""
    try:
        fmt = scion_format.resolve_format(data, format)
    except ValueError as exc:
        raise ValidationError([FieldError("(file)", "format", str(exc))]) from exc
    if fmt == "native":
        schedules = validate_schedules(documents_from_data(data),
                                       known_action_types=known_action_types, egress=egress)
        return ScheduleSet(schedules, (), fmt)
    conversion = scion_format.convert(data)
    if not strict:
        return _item_by_item(conversion, known_action_types or registered_action_types(), egress)
    errors = list(conversion.errors)
    schedules = []
    try:
        schedules = validate_schedules(conversion.documents, known_action_types=known_action_types,
                                       egress=egress)
    except ValidationError as exc:
        errors.extend(
            FieldError(conversion.labels.get(e.schedule_id, e.schedule_id), e.field, e.reason)
            for e in exc.errors
        )
    if errors:
        raise ValidationError(errors)
    return ScheduleSet(schedules, tuple(conversion.absent), fmt)


def _item_by_item(conversion: scion_format.Conversion, known: frozenset[str],
                  egress: EgressPolicy) -> ScheduleSet:
    """The valid items of a hub listing, and the refused ones with every reason."""
    if conversion.document_errors:
        raise ValidationError(conversion.document_errors)
    refused = dict(conversion.refused)
    errors = list(conversion.errors)
    schedules = []
    for document in conversion.documents:
        if document["id"] in refused:
            continue
        found, schedule = _parse(document, 0, known, egress)
        if schedule is None:
            refused[document["id"]] = None
            errors.extend(FieldError(conversion.labels.get(e.schedule_id, e.schedule_id), e.field,
                                     e.reason) for e in found)
        else:
            schedules.append(schedule)
    absent = tuple(i for i in conversion.absent if i not in refused)
    return ScheduleSet(schedules, absent, "scion", tuple(errors), tuple(refused))


def load_schedule_set(
    path: str | Path, *, format: str = "auto", known_action_types: frozenset[str] | None = None,
    strict: bool = True, egress: EgressPolicy = PUBLIC_ONLY,
) -> ScheduleSet:
    """Load and validate a schedule file in either format (see `schedules_from_data`)."""
    text = _read_text(path)
    data = parse_document_text(text, source=str(path))
    return schedules_from_data(data, format=format, known_action_types=known_action_types,
                               strict=strict, egress=egress)


def load_schedules(
    path: str | Path, *, known_action_types: frozenset[str] | None = None, format: str = "auto",
    egress: EgressPolicy = PUBLIC_ONLY,
) -> list[Schedule]:
    """Load and validate a schedule file; all or nothing. The Scion hub's JSON is detected
    (`format="auto"`) or asked for (`format="scion"`); see `load_schedule_set` for the IDs that
    such a document marks as gone."""
    return load_schedule_set(path, format=format, known_action_types=known_action_types,
                             egress=egress).schedules
