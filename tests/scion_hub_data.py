"""The Scion hub's JSON, copied in shape from its REST API (`pkg/store/models.go`,
`pkg/hub/handlers_schedules.go`): UUIDs, camelCase, payloads as JSON text, the read-only fields
the hub adds, `groveId` (the only key naming the item's grove), and the paged
envelopes `{"schedules"|"events": [...], "nextCursor", "totalCount", "serverTime"}`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

GROVE = "0b8e6c1e-5a4f-4d36-9a51-2f0f5c0d7a11"


def new_id() -> str:
    """A hub-style ID (api.NewUUID)."""
    return str(uuid.uuid4())


def go_time(value: datetime) -> str:
    """A time as Go's encoding/json writes it (RFC 3339, nanoseconds with trailing zeros
    trimmed: `time.Time.MarshalJSON` uses RFC3339Nano)."""
    value = value.astimezone(UTC)
    fraction = f"{value.microsecond:06d}".rstrip("0")
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}Z" if fraction else "Z")


def message_payload(agent: str = "reviewer", text: str = "Summarise yesterday's PRs") -> str:
    """A `message` event's payload as the hub stores it: JSON text."""
    return json.dumps({"agentName": agent, "message": text, "interrupt": False})


def dispatch_payload(agent: str = "nightly-triage") -> str:
    """A `dispatch_agent` event's payload as JSON text."""
    return json.dumps({"agentName": agent, "template": "triage", "task": "Triage new issues"})


def schedule(
    *, id: str | None = None, name: str = "daily summary", cron: str = "0 9 * * *",
    event_type: str = "message", payload: str | None = None, status: str = "active",
    grove: str = GROVE,
) -> dict[str, Any]:
    """One recurring schedule as `GET /api/v1/groves/{groveId}/schedules` returns it."""
    now = datetime(2026, 3, 2, 8, 15, 3, 123456, tzinfo=UTC)
    item: dict[str, Any] = {
        "id": id or new_id(),
        "groveId": grove,
        "name": name,
        "cronExpr": cron,
        "eventType": event_type,
        "payload": payload if payload is not None else (
            message_payload() if event_type == "message" else dispatch_payload()),
        "status": status,
        "nextRunAt": go_time(now + timedelta(hours=1)),
        "lastRunAt": go_time(now - timedelta(days=1)),
        "lastRunStatus": "success",
        "runCount": 41,
        "errorCount": 0,
        "createdAt": go_time(now - timedelta(days=42)),
        "createdBy": "user-7f3c",
        "updatedAt": go_time(now - timedelta(days=2)),
    }
    return item


def event(
    *, id: str | None = None, fire_at: datetime | None = None, event_type: str = "message",
    payload: str | None = None, status: str = "pending", grove: str = GROVE,
    schedule_id: str | None = None,
) -> dict[str, Any]:
    """One scheduled event as `GET /api/v1/groves/{groveId}/scheduled-events` returns it."""
    fire_at = fire_at or datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    item: dict[str, Any] = {
        "id": id or new_id(),
        "groveId": grove,
        "eventType": event_type,
        "fireAt": go_time(fire_at),
        "payload": payload if payload is not None else (
            message_payload(text="Reminder: release freeze") if event_type == "message"
            else dispatch_payload()),
        "status": status,
        "createdAt": go_time(fire_at - timedelta(hours=3)),
        "createdBy": "user-7f3c",
    }
    if schedule_id:
        item["scheduleId"] = schedule_id
    if status != "pending":
        item["firedAt"] = go_time(fire_at)
    return item


def envelope(key: str, items: list[dict[str, Any]] | None, *, next_cursor: str = "",
             total: int | None = None) -> dict[str, Any]:
    """The hub's list response (ListSchedulesResponse / ListScheduledEventsResponse). `items=None`
    is the hub's answer for an empty listing: a nil Go slice, written as `null`, and no
    `totalCount` (it is `omitempty`, so 0 is left out)."""
    out: dict[str, Any] = {
        key: items,
        "serverTime": go_time(datetime(2026, 3, 2, 8, 15, tzinfo=UTC)),
    }
    if next_cursor:
        out["nextCursor"] = next_cursor
    if total is not None:
        out["totalCount"] = total
    return out
