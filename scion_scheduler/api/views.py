"""Domain objects to API documents: jobs to `ScheduleOut`, sync results to their outcomes,
ledger records to `ExecutionOut`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from scheduler.job_readback import job_info, upcoming_fires
from scheduler.jobs import JobSpec
from scheduler.jobs_decode import JobDecodeError, job_fingerprint, schedule_from_job
from scheduler.model import format_instant
from scheduler.sync import StepOutcome
from scheduler.sync_plan import Plan
from scion_scheduler.api.schemas import (
    ExecutionOut,
    JobOut,
    PlanOut,
    ScheduleOut,
    StepOut,
    StepOutcomeOut,
)
from worker.history import run_to_dict
from worker.ledger import Execution


def _instant(value: datetime | None) -> str | None:
    return format_instant(value) if value is not None else None


def schedule_out(job: Any, spec: JobSpec, now: datetime, fires: int = 5) -> ScheduleOut | None:
    """The schedule a job holds, with the job's state and the next `fires` fire times. None for a
    job under the prefix that names no schedule (not one of the hub's)."""
    info = job_info(job, spec, now, 0)
    owner = info.schedule_id
    if owner is None:
        return None
    job_out = JobOut(
        job_id=info.job_id, state=info.state, schedule=info.schedule, time_zone=info.time_zone,
        scheduled_time=_instant(info.scheduled_time),
        last_attempt_time=_instant(info.last_attempt_time),
    )
    try:
        schedule = schedule_from_job(job)
    except JobDecodeError as exc:
        return ScheduleOut(id=owner, schedule=None, fingerprint=job_fingerprint(job), job=job_out,
                           next_fires=[], problem=str(exc))
    upcoming = upcoming_fires(job, schedule.at, schedule, now, fires)
    problem = None
    if schedule.id != owner:
        problem = f"the job's message names schedule {schedule.id!r}; a sync will rewrite it"
    return ScheduleOut(
        id=owner, schedule=schedule.to_dict(), fingerprint=job_fingerprint(job), job=job_out,
        next_fires=[format_instant(f) for f in upcoming], problem=problem,
    )


def step_outcomes(outcomes: Iterable[StepOutcome]) -> list[StepOutcomeOut]:
    """Each step's outcome."""
    return [StepOutcomeOut.model_validate(o.to_dict()) for o in outcomes]


def plan_out(plan: Plan) -> PlanOut:
    """The plan document."""
    data = plan.to_dict()
    data["steps"] = [StepOut.model_validate(s) for s in data["steps"]]
    return PlanOut.model_validate(data)


def execution_out(execution: Execution) -> ExecutionOut:
    """One history entry, in the form `scion-scheduler runs --output json` prints."""
    return ExecutionOut.model_validate(run_to_dict(execution))
