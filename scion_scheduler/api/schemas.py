"""The API's documents, as pydantic models: they generate the OpenAPI document a Go client is
built from, and shape every response.

Request bodies are *documented* with these models but *validated* by `scheduler.validation`,
exactly as the CLI validates a schedule file, so the API and the CLI accept and refuse the same
documents with the same field names and reasons.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FieldErrorOut(BaseModel):
    """One problem: which schedule, which field, and why."""

    schedule_id: str = Field(description="The schedule's ID, `#N` for the N-th of a set without "
                                         "one, or `(request)` for the request itself.")
    field: str = Field(description="The field, dotted for nested ones (e.g. `action.url`).")
    reason: str


class ErrorOut(BaseModel):
    """Every error response: a machine-readable code, a message, and the field errors."""

    code: str = Field(description="e.g. invalid_argument, not_found, conflict, unauthenticated.")
    message: str
    errors: list[FieldErrorOut] = Field(default_factory=list)
    outcomes: list[StepOutcomeOut] | None = Field(
        default=None, description="For a failed write: how each step went (Cloud Scheduler "
        "jobs; Firestore documents in ticks mode).")


class ActionDocument(BaseModel):
    """An action: a registered `type` and its parameters (for `http`: url, method, headers,
    body, timeout)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A registered action type, e.g. `http`.")


EXAMPLE_SCHEDULE: dict[str, Any] = {
    "cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris",
    "action": {"type": "http", "url": "https://hub.example.com/hooks/report", "method": "POST"},
    "overlap": "skip", "catchup": "latest", "labels": {"team": "reports"},
    "description": "weekday report",
}


class ScheduleDocument(BaseModel):
    """A schedule, as in a schedule file. Exactly one of `cron` and `at`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_SCHEDULE]})

    id: str | None = Field(default=None, description="Optional in a PUT; must match the path.")
    cron: str | None = Field(default=None, description="Five-field unix cron, e.g. `*/5 * * * *`.")
    cron_dialect: Literal["unix", "robfig"] = Field(
        default="unix", description="How `cron` is read: Cloud Scheduler's unix-cron, or the "
        "Scion hub's robfig/cron v3.0.1 (`CRON_TZ=`, `?`, `5/15`, ...), which hub items keep.")
    at: str | None = Field(default=None, description="One-shot fire time, RFC 3339 with offset.")
    timezone: str = Field(default="UTC", description="IANA time zone the cron runs in.")
    paused: bool = False
    action: ActionDocument
    overlap: Literal["skip", "allow"] = "skip"
    catchup: Literal["all", "latest", "none"] = "all"
    catchup_window: str | float = Field(default="15m", description="e.g. `15m`, `PT15M`, seconds.")
    max_attempts: int = Field(default=5, ge=1, le=100)
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = Field(default="", max_length=500)


class SyncRequest(BaseModel):
    """A full desired set of schedules."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "schedules": [{"id": "daily-report", **EXAMPLE_SCHEDULE}],
                    "prune": False,
                    "dry_run": True,
                },
            ]
        },
    )

    schedules: list[ScheduleDocument]
    prune: bool = Field(default=False, description="Delete owned jobs whose schedule is not in "
                                                   "the set.")
    dry_run: bool = Field(default=False, description="Only plan; change nothing.")
    verify: bool = Field(default=False, description="Tick mode: read every schedule document "
                                                    "instead of trusting the sync manifest.")


class JobOut(BaseModel):
    """The schedule's Cloud Scheduler job as it stands."""

    job_id: str
    state: str = Field(description="ENABLED, PAUSED, DISABLED or UPDATE_FAILED.")
    schedule: str = Field(
        description="The cron the job runs (a one-shot's: the minute at least 30 s before `at`).")
    time_zone: str
    scheduled_time: str | None = Field(description="Cloud Scheduler's next attempt, if any.")
    last_attempt_time: str | None


class ScheduleOut(BaseModel):
    """A schedule read back from its job, with the job's state and its next fire times."""

    id: str
    schedule: dict[str, Any] | None = Field(
        description="The schedule document; null when the job's message cannot be read (see "
                    "`problem`).")
    fingerprint: str | None = Field(description="Use in `If-Match` to detect concurrent changes.")
    job: JobOut
    next_fires: list[str] = Field(description="Upcoming fire times (RFC 3339, UTC); empty when "
                                              "paused.")
    problem: str | None = None


class ScheduleListOut(BaseModel):
    """One page of schedules, by ID."""

    schedules: list[ScheduleOut]
    next_page_token: str | None = None


class StepOut(BaseModel):
    """One planned change to one job."""

    kind: Literal["create", "update", "pause", "resume", "delete", "fire"]
    job_id: str
    schedule_id: str | None
    reason: str
    update_mask: list[str] | None = None


class StepOutcomeOut(StepOut):
    """A step and how it went."""

    status: Literal["ok", "failed", "skipped"]
    retries: list[str] = Field(default_factory=list)
    error: str | None = None
    note: str | None = None


class PlanOut(BaseModel):
    """What a sync changes."""

    steps: list[StepOut]
    counts: dict[str, int]
    unchanged: int
    kept_without_schedule: list[str]
    foreign_jobs_ignored: int
    expired_one_shots: list[str]
    prune: bool
    list_retries: list[str]
    held_for_refused_items: list[str] = Field(
        default_factory=list, description="Jobs of refused hub items, left exactly as they are.")


class WriteOut(BaseModel):
    """The result of a change to one schedule."""

    schedule: ScheduleOut | None = Field(description="The schedule after the change (null after "
                                                     "a delete).")
    outcomes: list[StepOutcomeOut]


class SyncOut(BaseModel):
    """The plan, and with `dry_run` false each step's outcome."""

    dry_run: bool
    ok: bool
    plan: PlanOut
    outcomes: list[StepOutcomeOut]


class RunOut(BaseModel):
    """A manual fire that was published."""

    schedule_id: str
    job_id: str
    fire_time: str
    execution_id: str
    message_id: str


class ExecutionOut(BaseModel):
    """One execution of a schedule."""

    execution_id: str
    schedule_id: str
    fire_time: str
    trigger: str
    state: str = Field(description="running, succeeded, failed, skipped, missed or cancelled.")
    attempt: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    worker_id: str | None
    error: str | None
    detail: str | None
    expire_at: str = Field(description="When the record is deleted (Firestore TTL).")


class ExecutionPageOut(BaseModel):
    """One page of history, newest fire time first."""

    executions: list[ExecutionOut]
    next_page_token: str | None = Field(
        default=None, description="Pass as `page_token` for the next page; null on the last.")


class HealthOut(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


ErrorOut.model_rebuild()
