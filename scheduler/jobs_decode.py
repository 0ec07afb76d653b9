"""Cloud Scheduler jobs back to schedules: the reverse of `scheduler.jobs.JobSpec.desired_job`.

The API keeps no copy of the schedules it is given: every job's fire message already carries the
whole runtime definition (`scheduler.contract`), its description the schedule's description, and
its state whether it is paused. So a schedule can be read back from its job, and the jobs are the
store. One thing a job cannot give back exactly, harmless for what a fire does: a one-shot's
time zone comes back as UTC, which is what the job runs on (its `at` comes back exactly, from the
message), so a fingerprint recomputed from the rebuilt one-shot can differ from the one in the
job's attributes; `job_fingerprint` reads the job's own.
"""

from __future__ import annotations

from google.cloud import scheduler_v1

from scheduler.contract import ATTR_FINGERPRINT, ContractError, decode_message
from scheduler.errors import SchedulerError
from scheduler.jobs import attributes_of, is_paused
from scheduler.model import Schedule


class JobDecodeError(SchedulerError, ValueError):
    """The job does not carry a fire message this deployment can read (edited by hand, or of an
    unknown format); the message says why."""


def schedule_from_job(job: scheduler_v1.Job) -> Schedule:
    """Rebuild the schedule a job was made from. The signature is not checked: the job was read
    from Cloud Scheduler, not received from the network."""
    if "pubsub_target" not in job:
        raise JobDecodeError(f"job {job.name} has no Pub/Sub target")
    target = job.pubsub_target
    try:
        fire = decode_message(bytes(target.data), dict(target.attributes))
    except ContractError as exc:
        raise JobDecodeError(f"job {job.name}: {exc}") from exc
    if fire.trigger != "scheduled":
        raise JobDecodeError(f"job {job.name}: its message has trigger {fire.trigger!r}")
    one_shot = fire.at is not None
    return Schedule(
        id=fire.schedule_id,
        action=fire.action,
        cron=None if one_shot else fire.cron,
        at=fire.at,
        timezone="UTC" if one_shot else fire.timezone,
        paused=is_paused(job),
        overlap=fire.overlap,
        catchup=fire.catchup,
        catchup_window=fire.catchup_window,
        max_attempts=fire.max_attempts,
        labels=dict(fire.labels),
        description=job.description,
        cron_dialect=fire.cron_dialect,
    )


def job_fingerprint(job: scheduler_v1.Job) -> str | None:
    """The fingerprint the job's fire message was built with (None when it has none)."""
    return attributes_of(job).get(ATTR_FINGERPRINT) or None
