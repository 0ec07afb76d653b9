"""A job read back: what Cloud Scheduler holds for one of this deployment's jobs, and its next
fire times (the CLI's `list`/`describe` and the API's schedule view both read jobs this way)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scheduler.contract import ATTR_AT, ATTR_FINGERPRINT
from scheduler.cron import CronDialect, next_fires
from scheduler.jobs import JobSpec, attributes_of, is_paused
from scheduler.model import format_instant, parse_instant
from scheduler.naming import job_id_of


@dataclass(frozen=True)
class JobInfo:
    """What Cloud Scheduler holds for one of this deployment's jobs."""

    job_id: str
    schedule_id: str | None
    state: str
    schedule: str
    time_zone: str
    description: str
    topic: str
    fingerprint: str | None
    at: datetime | None
    next_fires: tuple[datetime, ...]
    scheduled_time: datetime | None
    last_attempt_time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-compatible data (instants in RFC 3339)."""
        def instant(value: datetime | None) -> str | None:
            return format_instant(value) if value is not None else None

        return {
            "job_id": self.job_id, "schedule_id": self.schedule_id, "state": self.state,
            "schedule": self.schedule, "time_zone": self.time_zone,
            "description": self.description, "topic": self.topic,
            "fingerprint": self.fingerprint, "at": instant(self.at),
            "next_fires": [format_instant(f) for f in self.next_fires],
            "scheduled_time": instant(self.scheduled_time),
            "last_attempt_time": instant(self.last_attempt_time),
        }


@dataclass(frozen=True)
class _JobCron:
    effective_cron: str
    effective_timezone: str
    # A job's own schedule is always Cloud Scheduler's unix-cron.
    cron_dialect: CronDialect = CronDialect.UNIX


def _timestamp(value: Any) -> datetime | None:
    # proto-plus gives DatetimeWithNanoseconds for a set Timestamp and the epoch for an unset one.
    if not isinstance(value, datetime) or value.timestamp() <= 0:
        return None
    return value.astimezone(UTC)


def upcoming_fires(job: Any, at: datetime | None, cron: Any, now: datetime,
                   fires: int) -> tuple[datetime, ...]:
    """A job's next `fires` fire times after `now`: none while it is paused, the one-shot `at`
    while it is ahead, else those of `cron` (what `next_fires` reads)."""
    if fires <= 0 or is_paused(job):
        return ()
    if at is not None:
        return (at,) if at > now else ()
    return tuple(next_fires(cron, now, fires))


def job_info(job: Any, spec: JobSpec, now: datetime, fires: int) -> JobInfo:
    """What a job of this deployment holds, read back as Cloud Scheduler returned it, with its
    next `fires` fire times (from the job's own cron and zone, or its one-shot instant)."""
    attributes = attributes_of(job)
    at: datetime | None = None
    if ATTR_AT in attributes:
        try:
            at = parse_instant(attributes[ATTR_AT])
        except ValueError:
            at = None
    try:
        upcoming = upcoming_fires(job, at, _JobCron(job.schedule, job.time_zone or "UTC"), now,
                                  fires)
    except (ValueError, KeyError):  # a hand-edited job may carry what cron cannot read
        upcoming = ()
    return JobInfo(
        job_id=job_id_of(job.name),
        schedule_id=spec.owner_schedule_id(job),
        state=job.state.name,
        schedule=job.schedule,
        time_zone=job.time_zone,
        description=job.description,
        topic=job.pubsub_target.topic_name if "pubsub_target" in job else "",
        fingerprint=attributes.get(ATTR_FINGERPRINT),
        at=at,
        next_fires=upcoming,
        scheduled_time=_timestamp(job.schedule_time),
        last_attempt_time=_timestamp(job.last_attempt_time),
    )
