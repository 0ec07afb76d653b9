"""The Scion hub's own JSON, as pydantic models for the OpenAPI document of the grove routes.

They describe what the hub stores and returns, as Go's encoding/json writes it
(`pkg/store/models.go:1041-1093` at hub commit 770980cb): camelCase keys, `omitempty` fields
left out when empty, times in RFC 3339 with trailing zeros of the nanoseconds trimmed, and
`payload` as JSON text. As for the native documents, they only *document*: the body is read by
`scheduler.scion_format` and `scheduler.validation`, as `sync --format scion` reads it. Fields
the hub adds later are accepted and ignored, so a hub upgrade does not break the hand-over.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scion_scheduler.api.schemas import FieldErrorOut, PlanOut, StepOutcomeOut

EXAMPLE_GROVE = "0b8e6c1e-5a4f-4d36-9a51-2f0f5c0d7a11"
EXAMPLE_SCHEDULE_ID = "3f1c2d9e-8a7b-4c1e-9f00-5b6a7c8d9e0f"
EXAMPLE_EVENT_ID = "9d2e4f60-1b3c-4a5d-8e7f-0a1b2c3d4e5f"
_PAYLOAD = '{"agentName":"reviewer","message":"Summarise yesterday\'s PRs"}'
EXAMPLE_HUB_SCHEDULE: dict[str, Any] = {
    "id": EXAMPLE_SCHEDULE_ID, "groveId": EXAMPLE_GROVE, "name": "daily summary",
    "cronExpr": "0 9 * * *", "eventType": "message", "payload": _PAYLOAD, "status": "active",
    "nextRunAt": "2026-04-27T09:00:00Z", "lastRunAt": "2026-04-26T09:00:00.000231Z",
    "lastRunStatus": "success", "runCount": 41, "errorCount": 0,
    "createdAt": "2026-03-15T10:12:44.123456789Z", "createdBy": "user-7f3c",
    "updatedAt": "2026-04-26T09:00:00.000231Z",
}
EXAMPLE_HUB_EVENT: dict[str, Any] = {
    "id": EXAMPLE_EVENT_ID, "groveId": EXAMPLE_GROVE, "eventType": "message",
    "fireAt": "2030-06-01T12:30:00Z", "payload": _PAYLOAD, "status": "pending",
    "createdAt": "2026-04-26T09:30:00.5Z", "createdBy": "user-7f3c",
}

_TIME = "RFC 3339, as Go writes a time.Time (e.g. `2026-04-26T09:00:00.000231Z`)."
_READ_ONLY = "Read-only at the hub; accepted and ignored."


class HubSchedule(BaseModel):
    """A recurring schedule as the hub stores and returns it (`store.Schedule`,
    `pkg/store/models.go:1076`). `status: deleted` means its job must not exist."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_HUB_SCHEDULE]})

    id: str = Field(description="The hub's ID; must match the path.")
    grove_id: str = Field(alias="groveId", description="Must match the grove in the path.")
    name: str = Field(description="Unique in its grove.")
    cron_expr: str = Field(alias="cronExpr", description="The hub's cron (robfig/cron v3, "
                                                         "5 fields, UTC unless `CRON_TZ=`).")
    event_type: str = Field(alias="eventType", description="`message` or `dispatch_agent`.")
    payload: str = Field(description="JSON text of an object (the event's parameters).")
    status: Literal["active", "paused", "deleted"] = "active"
    next_run_at: str | None = Field(default=None, alias="nextRunAt", description=_READ_ONLY)
    last_run_at: str | None = Field(default=None, alias="lastRunAt", description=_READ_ONLY)
    last_run_status: str | None = Field(default=None, alias="lastRunStatus",
                                        description=_READ_ONLY)
    last_run_error: str | None = Field(default=None, alias="lastRunError", description=_READ_ONLY)
    run_count: int | None = Field(default=None, alias="runCount", description=_READ_ONLY)
    error_count: int | None = Field(default=None, alias="errorCount", description=_READ_ONLY)
    created_at: str | None = Field(default=None, alias="createdAt", description=_TIME)
    created_by: str | None = Field(default=None, alias="createdBy", description=_READ_ONLY)
    updated_at: str | None = Field(default=None, alias="updatedAt", description=_TIME)


class HubScheduledEvent(BaseModel):
    """A one-shot scheduled event as the hub stores and returns it (`store.ScheduledEvent`,
    `pkg/store/models.go:1041`). Any status but `pending`, or a `scheduleId` (the record of a
    recurring schedule's fire), means its job must not exist."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_HUB_EVENT]})

    id: str = Field(description="The hub's ID; must match the path.")
    grove_id: str = Field(alias="groveId", description="Must match the grove in the path.")
    event_type: str = Field(alias="eventType", description="`message` or `dispatch_agent`.")
    fire_at: str = Field(alias="fireAt", description="When it fires. " + _TIME)
    payload: str = Field(description="JSON text of an object (the event's parameters).")
    status: str = Field(default="pending", description="`pending`, `fired`, `cancelled` or "
                                                       "`expired`.")
    created_at: str | None = Field(default=None, alias="createdAt", description=_TIME)
    created_by: str | None = Field(default=None, alias="createdBy", description=_READ_ONLY)
    fired_at: str | None = Field(default=None, alias="firedAt", description=_READ_ONLY)
    error: str | None = Field(default=None, description=_READ_ONLY)
    schedule_id: str | None = Field(default=None, alias="scheduleId",
                                    description="Set on the hub's record of a recurring "
                                                "schedule's fire.")


class HubListing(BaseModel):
    """The hub's listing of a grove: one page of `GET .../schedules` (`ListSchedulesResponse`,
    `pkg/hub/handlers_schedules.go:58`), of `GET .../scheduled-events`
    (`ListScheduledEventsResponse`, `handlers_scheduled_events.go:54`), or both lists in one
    object. A `null` list is an empty one."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"schedules": [EXAMPLE_HUB_SCHEDULE], "events": [EXAMPLE_HUB_EVENT]}]})

    schedules: list[HubSchedule] | None = None
    events: list[HubScheduledEvent] | None = None
    next_cursor: str | None = Field(default=None, alias="nextCursor", description="Must be "
                                    "absent on at least one page: a listing with pages left "
                                    "out is refused.")
    total_count: int | None = Field(default=None, alias="totalCount", description="When "
                                    "more than the items given, the listing is refused.")
    server_time: str | None = Field(default=None, alias="serverTime", description=_TIME)


class GroveSyncOut(BaseModel):
    """The grove's plan, with `dry_run` false each step's outcome, and the refused items (their
    jobs left exactly as they were)."""

    dry_run: bool
    ok: bool = Field(description="Every step succeeded and no item was refused.")
    plan: PlanOut
    outcomes: list[StepOutcomeOut]
    refused: list[FieldErrorOut] = Field(description="Each refused item: its hub ID, the field "
                                                     "and the reason.")


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (HubSchedule, HubScheduledEvent, HubListing)
