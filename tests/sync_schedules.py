"""Schedules and jobs for the sync tests: daily schedules (in memory or through a YAML file),
edits of them, and the Cloud Scheduler jobs the service would return for them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from emulated_control import KEY
from google.cloud import scheduler_v1

from scheduler.jobs import JobRetry, JobSpec
from scheduler.model import Schedule
from scheduler.validation import load_schedules, parse_schedule, validate_schedules

ACTION = {"type": "http", "url": "https://hub.example/run"}


NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


GRACE = timedelta(minutes=10)


def raw(n: int, start: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """`n` daily schedules as a file holds them (they never fire while a test runs)."""
    return [{"id": f"sched-{i:03d}", "cron": f"{i % 60} 3 * * *", "action": ACTION, **fields}
            for i in range(start, start + n)]


def make(n: int, start: int = 0, **fields: Any) -> list[Schedule]:
    """`n` validated daily schedules."""
    return validate_schedules(raw(n, start, **fields))


def from_file(path: Path, n: int) -> list[Schedule]:
    """`n` schedules written to a YAML file and read back through the loader, as the CLI does."""
    path.write_text(yaml.safe_dump({"schedules": raw(n)}), encoding="utf-8")
    return load_schedules(path)


def edit(schedule: Schedule, **changes: Any) -> Schedule:
    return parse_schedule({**schedule.to_dict(), **changes})


def spec(prefix: str = "scion-") -> JobSpec:
    retry = JobRetry(3, timedelta(seconds=5), timedelta(minutes=1), 3, timedelta(0))
    return JobSpec("projects/p/locations/l", "projects/p/topics/fires", prefix, retry, KEY)


def existing(job_spec: JobSpec, schedule: Schedule, *, state: Any = scheduler_v1.Job.State.ENABLED,
             **fields: Any) -> scheduler_v1.Job:
    """The job as the service would return it, optionally changed."""
    job = job_spec.desired_job(schedule)
    job.state = state
    for name, value in fields.items():
        setattr(job, name, value)
    return job
