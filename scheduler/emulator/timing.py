"""When a Cloud Scheduler job is due: its schedule in the shape `scheduler.cron` takes, and the
backoff between the attempts of a failed fire (RetryConfig in the API reference)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.cron import CronDialect
from scheduler.emulator.validation import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF, seconds

# A job with a long max_retry_duration would otherwise retry without end; the real service is
# bounded by the next scheduled start, and so is this one, plus this cap for slow schedules.
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class CronSpecOf:
    """A job's schedule and time zone in the shape `scheduler.cron` takes."""

    effective_cron: str
    effective_timezone: str
    # A job's own schedule is always Cloud Scheduler's unix-cron.
    cron_dialect: CronDialect = CronDialect.UNIX


def zone_of(time_zone: str) -> str:
    """The tz database key for a job's `time_zone`: empty (the default) and "utc" in any case
    mean UTC, as the API reference says."""
    return "UTC" if time_zone == "" or time_zone.lower() == "utc" else time_zone


def spec_of(job: Any) -> CronSpecOf:
    """The cron spec of a job message."""
    return CronSpecOf(job.schedule, zone_of(job.time_zone))


def backoff(retry: Any, failures: int) -> timedelta:
    """Wait before the retry that follows `failures` failed attempts (1 after the first):
    `min_backoff` doubled `max_doublings` times, then growing linearly by that last interval,
    capped at `max_backoff` (RetryConfig.max_doublings in the API reference)."""
    low = seconds(retry.min_backoff_duration) or DEFAULT_MIN_BACKOFF.total_seconds()
    high = seconds(retry.max_backoff_duration) or DEFAULT_MAX_BACKOFF.total_seconds()
    doublings = retry.max_doublings
    k = failures - 1
    interval = low * 2**k if k <= doublings else low * 2**doublings * (k - doublings + 1)
    return timedelta(seconds=min(interval, high))


def retry_time(job: Any, attempt: int, first_attempt: datetime, now: datetime) -> datetime | None:
    """When to retry a job's fire whose attempt number `attempt` (the first at `first_attempt`)
    failed at `now`, as its retry_config allows; None when it is not retried."""
    retry = job.retry_config
    if retry.retry_count == 0 or attempt >= MAX_ATTEMPTS:
        return None
    at = now + backoff(retry, attempt)
    limit = seconds(retry.max_retry_duration)
    within_count = attempt <= retry.retry_count
    within_duration = limit > 0 and (at - first_attempt).total_seconds() <= limit
    # "retried until both limits are reached" and never past the next scheduled start.
    if not (within_count or within_duration):
        return None
    if job.HasField("schedule_time") and at >= job.schedule_time.ToDatetime(UTC):
        return None
    return at
