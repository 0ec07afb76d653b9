"""The Scion hub's own schedule JSON, accepted as the hub's REST API returns it.

Two kinds of item, as in the hub's `pkg/store/models.go`:

* recurring schedules (`GET /api/v1/groves/{groveId}/schedules`, `Schedule` at
  `pkg/store/models.go:1076`): `id`, `groveId`, `name`, `cronExpr` (5 fields, UTC), `eventType`,
  `payload` (JSON text), `status` (`active`, `paused`, `deleted`);
* one-shot scheduled events (`GET /api/v1/groves/{groveId}/scheduled-events`, `ScheduledEvent`
  at `pkg/store/models.go:1041`): `id`, `groveId`, `eventType`, `fireAt` (RFC 3339), `payload`,
  `status` (`pending`, `fired`, `cancelled`, `expired`, `failed`), optional `scheduleId`.

An item names its grove by `groveId` only: the hub has no other key for it.

A document is a list of items, the hub's paged envelope (`{"schedules": [...], "nextCursor",
"totalCount", "serverTime"}` or `{"events": [...], ...}`), `{"schedules": [...], "events":
[...]}`, or a list of such envelopes (every page of a listing, e.g. `jq -s .` over the pages).
An envelope's `null` list is an empty one: that is how the hub answers for a grove with no
schedules or no events.
Read-only fields the hub adds, and fields a newer hub may add, are ignored: the hub's JSON is
taken as it is, so a hub upgrade does not break a handover.

What becomes what:

* an `active` or `paused` schedule becomes a recurring schedule with the built-in `scion`
  action and `catchup: latest` (the hub's own scheduler never replays missed occurrences);
* a `pending` event becomes a one-shot (`at: fireAt`) with the `scion` action;
* a `deleted` schedule and an event in any other state is *absent*: its job must not exist. So is
  a `pending` event that carries a `scheduleId`: the hub's own evaluator writes one for each
  occurrence of a recurring schedule as it runs it, so it is a record of that schedule's fire,
  which the schedule's own job covers; scheduling it again would fire that occurrence twice.

Items that are going away are not validated beyond their ID: garbage in a deleted record must
not block the sync that removes it.

The hub validates little (a PATCH sets event type, status and payload unchecked,
`pkg/hub/handlers_schedules.go:334-342`), so a real listing can hold items this project refuses:
`convert` reports each by hub ID (`Conversion.refused`) apart from problems with the document
as a whole (`Conversion.document_errors`), so a caller may refuse items one by one.
`convert_item` converts a single item, for callers that take the hub's items one at a time.

This module only converts; `scheduler.validation` turns the result into `Schedule`s, so every
native rule (cron, size limit, ...) applies to hub schedules too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scheduler.cron import CronDialect, CronError, validate_cron
from scheduler.model import FieldError, format_instant, parse_instant
from scheduler.scion_action import (
    ACTION_TYPE,
    KIND_EVENT,
    KIND_SCHEDULE,
    check_event,
    check_path_segment,
)
from scheduler.scion_listing import completeness_errors, is_envelope, item_lists, shape_errors

Format = Literal["native", "scion"]
FORMATS: tuple[str, ...] = ("auto", "native", "scion")

SCHEDULE_STATUSES: tuple[str, ...] = ("active", "paused", "deleted")
EVENT_STATUSES: tuple[str, ...] = ("pending", "fired", "cancelled", "expired", "failed")

MAX_DESCRIPTION = 500
# The hub fires a late occurrence however late it is: a recurring schedule once, at the first
# tick after an outage (scion pkg/hub/server.go:1715-1735 lists every schedule whose next_run_at
# has passed, and :1754 moves it past now), a pending event once, at start-up, as `expired`
# (pkg/hub/scheduler.go:237-247). So does this project, with `catchup: latest` and a window no
# fire can outlast: Pub/Sub keeps a subscription's messages at most 7 days (and a sync fires a
# past-due one-shot at most that late, `scheduler.one_shots.MAX_LATE_FIRE`).
HUB_CATCHUP_WINDOW = "7d"


# Keys only the hub's JSON has; the native format refuses every one of them as unknown, so their
# presence cannot be a native file.
_HUB_ITEM_KEYS = frozenset({"cronExpr", "eventType", "fireAt", "groveId", "scheduleId"})
_ENVELOPE_KEYS = frozenset({"nextCursor", "totalCount", "serverTime"})


@dataclass
class Conversion:
    """Hub items turned into native schedule documents.

    `documents` are the wanted schedules in this project's schedule-file form; `absent` the hub
    IDs whose jobs must not exist; `labels` how to name each ID in an error (ID and hub name);
    `errors` every problem found, each naming the item by hub ID and name. Of those,
    `document_errors` are about the document as a whole (its shape, a listing cut short), and
    `refused` holds the hub IDs of the items refused (a document or an absent ID listed under
    such an ID is to be ignored: an ID listed twice is refused as a whole)."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)
    document_errors: list[FieldError] = field(default_factory=list)
    refused: dict[str, None] = field(default_factory=dict)


@dataclass
class ItemConversion:
    """One hub item converted (`convert_item`). `item_id` is its hub ID, None when it has no
    usable one; `label` names it in errors (ID and hub name); `document` is the native schedule
    document when the item is wanted, `absent` is True when its job must not exist, and `errors`
    lists every problem (none when it converted)."""

    item_id: str | None
    label: str
    document: dict[str, Any] | None = None
    absent: bool = False
    errors: list[FieldError] = field(default_factory=list)


def _looks_like_hub_item(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(set(value) & _HUB_ITEM_KEYS)


def detect_format(data: Any) -> Format:
    """`scion` when the document is the hub's JSON (an envelope or hub items), else `native`.

    Only keys the native format refuses count as evidence, so a native file never reads as the
    hub's: a native `{"schedules": [...]}` has neither `events`, nor `nextCursor`/`totalCount`/
    `serverTime`, nor an item with `cronExpr`, `eventType`, `fireAt`, `groveId`, `scheduleId`."""
    if isinstance(data, Mapping):
        if "events" in data or set(data) & _ENVELOPE_KEYS:
            return "scion"
        items = data.get("schedules")
        return (
            "scion"
            if isinstance(items, list) and any(map(_looks_like_hub_item, items))
            else "native"
        )
    if isinstance(data, list):
        for item in data:
            if _looks_like_hub_item(item) or (
                is_envelope(item) and detect_format(item) == "scion"
            ):
                return "scion"
    return "native"


def resolve_format(data: Any, fmt: str) -> Format:
    """The format to read `data` in: `fmt` itself, or the detected one for `auto`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "auto":
        return detect_format(data)
    return "scion" if fmt == "scion" else "native"


def _label(item_id: str, name: Any) -> str:
    return f'{item_id} "{name}"' if isinstance(name, str) and name else item_id


def _grove(raw: Mapping[str, Any], add: Any) -> str | None:
    value = raw.get("groveId")
    reason = check_path_segment(value, "grove ID (groveId) the item belongs to")
    if reason:
        add("groveId", reason)
        return None
    assert isinstance(value, str)
    return value


def _convert_schedule(raw: Mapping[str, Any], item_id: str, add: Any) -> dict[str, Any] | None:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        add("name", "required: the schedule's name (unique in its grove)")
    grove = _grove(raw, add)
    cron = raw.get("cronExpr")
    if not isinstance(cron, str) or not cron.strip():
        add("cronExpr", "required: a 5-field cron expression (UTC)")
    else:
        try:
            validate_cron(cron, CronDialect.ROBFIG)
        except CronError as exc:
            add("cronExpr", str(exc))
    event_type = raw.get("eventType")
    payload = check_event(event_type, raw.get("payload"), add, type_field="eventType")
    if grove is None or payload is None or not isinstance(name, str):
        return None
    return {
        "id": item_id,
        "cron": cron, "cron_dialect": CronDialect.ROBFIG.value,  # the hub's own semantics
        "timezone": "UTC",
        "paused": raw.get("status") == "paused",
        "action": {"type": ACTION_TYPE, "kind": KIND_SCHEDULE, "grove_id": grove, "name": name,
                   "event_type": event_type, "payload": payload},
        "catchup": "latest",
        "catchup_window": HUB_CATCHUP_WINDOW,
        "labels": {"scion-kind": KIND_SCHEDULE, "scion-grove": grove},
        "description": name[:MAX_DESCRIPTION],
    }


def _convert_event(raw: Mapping[str, Any], item_id: str, add: Any) -> dict[str, Any] | None:
    grove = _grove(raw, add)
    fire_at: datetime | None = None
    value = raw.get("fireAt")
    if not isinstance(value, str):
        add("fireAt", "required: an RFC 3339 instant such as 2026-01-31T09:00:00Z")
    else:
        try:
            fire_at = parse_instant(value)
        except ValueError as exc:
            add("fireAt", str(exc))
    event_type = raw.get("eventType")
    payload = check_event(event_type, raw.get("payload"), add, type_field="eventType")
    if grove is None or payload is None or fire_at is None:
        return None
    return {
        "id": item_id,
        "at": format_instant(fire_at),
        "action": {"type": ACTION_TYPE, "kind": KIND_EVENT, "grove_id": grove,
                   "event_type": event_type, "payload": payload},
        "catchup": "latest",
        "catchup_window": HUB_CATCHUP_WINDOW,
        "labels": {"scion-kind": KIND_EVENT, "scion-grove": grove},
        "description": f"Scion one-shot {event_type} event",
    }


def _kind_of(raw: Mapping[str, Any], kind: str | None, add: Any) -> str | None:
    if kind is not None:
        return kind
    if "cronExpr" in raw:
        return KIND_SCHEDULE
    if "fireAt" in raw:
        return KIND_EVENT
    add("(item)", "neither cronExpr (a recurring schedule) nor fireAt (a one-shot scheduled event)")
    return None


def _is_absent(raw: Mapping[str, Any], kind: str, status: Any) -> bool:
    if kind == KIND_SCHEDULE:
        return bool(status == "deleted")
    return status != "pending" or bool(raw.get("scheduleId"))


def convert_item(raw: Any, kind: str | None = None, *, where: str = "(item)") -> ItemConversion:
    """Convert one hub item, as the hub stores and returns it (a `Schedule` or a
    `ScheduledEvent`, pkg/store/models.go:1041-1093), into a native schedule document.

    `kind` is `schedule` or `event` when known (from the listing the item came in), else it is
    told by `cronExpr` or `fireAt`; `where` names an item without a usable ID in errors. Checks
    only the item itself: a document's duplicate IDs and names are `convert`'s."""
    if not isinstance(raw, Mapping):
        return ItemConversion(None, where,
                              errors=[FieldError(where, "(item)", "must be an object")])
    raw_id = raw.get("id")
    usable = isinstance(raw_id, str) and bool(raw_id.strip())
    out = ItemConversion(raw_id if isinstance(raw_id, str) and usable else None,
                         _label(raw_id if isinstance(raw_id, str) and usable else where,
                                raw.get("name")))

    def add(field_name: str, reason: str) -> None:
        out.errors.append(FieldError(out.label, field_name, reason))

    reason = (check_path_segment(raw_id, "hub ID") if usable
              else "required: the hub's ID of the item")
    if reason:
        add("id", reason)
        out.item_id = None
        return out
    assert isinstance(raw_id, str)
    item_kind = _kind_of(raw, kind, add)
    if item_kind is None:
        return out
    status = raw.get("status", "active" if item_kind == KIND_SCHEDULE else "pending")
    allowed = SCHEDULE_STATUSES if item_kind == KIND_SCHEDULE else EVENT_STATUSES
    if status not in allowed:
        add("status", f"must be one of {', '.join(allowed)} (got {status!r})")
    elif _is_absent(raw, item_kind, status):
        out.absent = True
    else:
        convert_one = _convert_schedule if item_kind == KIND_SCHEDULE else _convert_event
        document = convert_one(raw, raw_id, add)
        out.document = document if not out.errors else None
    return out


def convert(data: Any) -> Conversion:
    """Convert the hub's JSON into native schedule documents plus the absent IDs; every
    problem is collected in `errors` rather than raised (see `Conversion`)."""
    out = Conversion()
    out.document_errors.extend(shape_errors(data))
    if not out.document_errors:
        out.document_errors.extend(completeness_errors(data))
    if out.document_errors:
        out.errors.extend(out.document_errors)
        return out
    seen: dict[str, str] = {}
    names: dict[tuple[str, str], str] = {}
    for _, _, kind, items, where in item_lists(data):
        for index, raw in enumerate(items):
            one = convert_item(raw, kind, where=f"{where}[{index}]")
            out.errors.extend(one.errors)
            item_id = one.item_id
            if item_id is None:
                continue
            out.labels[item_id] = one.label
            problem = None
            if item_id in seen:
                problem = ("id", f"listed twice (also at {seen[item_id]})")
            elif one.document is not None and one.document["action"]["kind"] == KIND_SCHEDULE:
                grove, name = one.document["action"]["grove_id"], one.document["action"]["name"]
                previous = names.setdefault((grove, name), item_id)
                if previous != item_id:
                    problem = ("name", f"another schedule of grove {grove!r} has this name "
                                       f"({previous})")
            seen.setdefault(item_id, f"{where}[{index}]")
            if problem is not None:
                out.errors.append(FieldError(one.label, *problem))
            if problem is not None or one.errors:
                out.refused[item_id] = None
            elif one.absent:
                out.absent.append(item_id)
            elif one.document is not None:
                out.documents.append(one.document)
    return out
