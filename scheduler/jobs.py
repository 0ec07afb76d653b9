"""Schedules to Cloud Scheduler jobs: the job a schedule requires, and how an existing job differs.

Only the fields this module sets are compared; output-only fields (state, schedule_time, status,
user_update_time, ...) and fields Cloud Scheduler ignores for Pub/Sub targets (attempt_deadline)
are left alone, so a job that matches never yields an update. Every field of `retry_config` is
set explicitly: Cloud Scheduler fills defaults into unset ones, which would otherwise read back
as drift on every sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.cloud import scheduler_v1

from scheduler.config import Settings
from scheduler.contract import ATTR_SCHEDULE_ID, build_message
from scheduler.cron import CronDialect
from scheduler.cron_translate import job_schedule
from scheduler.model import Schedule
from scheduler.naming import is_owned, job_id_for, job_id_of, job_name, schedule_id_for

JobState = scheduler_v1.Job.State

# Update-mask paths, in the order a mask lists them.
MASK_DESCRIPTION = "description"
MASK_SCHEDULE = "schedule"
MASK_TIME_ZONE = "time_zone"
MASK_TOPIC = "pubsub_target.topic_name"
MASK_DATA = "pubsub_target.data"
MASK_ATTRIBUTES = "pubsub_target.attributes"
MASK_TARGET = "pubsub_target"
MASK_RETRY = "retry_config"
ALL_FIELDS: tuple[str, ...] = (
    MASK_SCHEDULE, MASK_TIME_ZONE, MASK_TARGET, MASK_DESCRIPTION, MASK_RETRY,
)


@dataclass(frozen=True)
class JobRetry:
    """The `retry_config` every job gets (Cloud Scheduler retrying a failed publish)."""

    retry_count: int
    min_backoff: timedelta
    max_backoff: timedelta
    max_doublings: int
    max_retry_duration: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> JobRetry:
        """Read the `SCION_SCHEDULER_JOB_*` retry settings."""
        return cls(
            retry_count=settings.job_retry_count,
            min_backoff=settings.job_min_backoff,
            max_backoff=settings.job_max_backoff,
            max_doublings=settings.job_max_doublings,
            max_retry_duration=settings.job_max_retry_duration,
        )

    def to_proto(self) -> scheduler_v1.RetryConfig:
        """The `RetryConfig` message."""
        return scheduler_v1.RetryConfig(
            retry_count=self.retry_count,
            min_backoff_duration=self.min_backoff,
            max_backoff_duration=self.max_backoff,
            max_doublings=self.max_doublings,
            max_retry_duration=self.max_retry_duration,
        )


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to build jobs for this deployment: where they live and how they retry."""

    location_path: str
    topic_path: str
    prefix: str
    retry: JobRetry
    signing_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> JobSpec:
        """Build from settings; project, location and topic must be present."""
        settings.require("project", "location", "topic")
        return cls(
            location_path=settings.location_path,
            topic_path=settings.topic_path,
            prefix=settings.value("job_prefix"),
            retry=JobRetry.from_settings(settings),
            signing_key=settings.signing_key,
        )

    def job_id(self, schedule_id: str) -> str:
        """The job ID of a schedule."""
        return job_id_for(schedule_id, self.prefix)

    def job_name(self, schedule_id: str) -> str:
        """The full job resource name of a schedule."""
        return job_name(self.location_path, self.job_id(schedule_id))

    def desired_job(self, schedule: Schedule) -> scheduler_v1.Job:
        """The job a schedule requires (state aside: pausing is a separate call). A hub
        schedule's job runs the unix-cron translation of its robfig expression; its fire message
        keeps the hub's expression, which the worker derives fire times from."""
        message = build_message(schedule, signing_key=self.signing_key)
        cron, time_zone = schedule.effective_cron, schedule.effective_timezone
        if schedule.cron_dialect is CronDialect.ROBFIG:
            cron, time_zone = job_schedule(cron, time_zone)
        return scheduler_v1.Job(
            name=self.job_name(schedule.id),
            description=schedule.description,
            schedule=cron,
            time_zone=time_zone,
            pubsub_target=scheduler_v1.PubsubTarget(
                topic_name=self.topic_path,
                data=message.data,
                attributes=dict(message.attributes),
            ),
            retry_config=self.retry.to_proto(),
        )

    def owner_schedule_id(self, job: scheduler_v1.Job) -> str | None:
        """The schedule ID a job belongs to: from its readable name, or, for a digest-named job,
        from its `schedule-id` attribute when that ID really hashes to this job ID. None for a job
        outside the prefix or one whose owner cannot be established."""
        job_id = job_id_of(job.name)
        if not is_owned(job_id, self.prefix):
            return None
        from_name = schedule_id_for(job_id, self.prefix)
        if from_name is not None:
            return from_name
        claimed = attributes_of(job).get(ATTR_SCHEDULE_ID)
        if claimed and job_id_for(claimed, self.prefix) == job_id:
            return claimed
        return None


def attributes_of(job: scheduler_v1.Job) -> Mapping[str, str]:
    """The job's Pub/Sub message attributes (empty for a job without a Pub/Sub target)."""
    if "pubsub_target" not in job:
        return {}
    return dict(job.pubsub_target.attributes)


def is_paused(job: scheduler_v1.Job) -> bool:
    """Whether the job is paused."""
    return bool(job.state == JobState.PAUSED)


def _retry_tuple(config: Any) -> tuple[int, float, float, int, float]:
    return (
        config.retry_count,
        _seconds(config.min_backoff_duration),
        _seconds(config.max_backoff_duration),
        config.max_doublings,
        _seconds(config.max_retry_duration),
    )


def _seconds(duration: Any) -> float:
    # A raw protobuf Duration; an unset one reads as zero, which is what the service means by it.
    return float(duration.seconds) + float(duration.nanos) / 1e9


def diff_mask(actual: scheduler_v1.Job, desired: scheduler_v1.Job) -> tuple[str, ...]:
    """The update-mask paths where `actual` differs from `desired`, empty when it matches.

    A job that lost its Pub/Sub target (edited by hand to another target type) gets the whole
    `pubsub_target`, which replaces the other member of the target oneof."""
    # The raw protobuf messages: reading them is many times faster than through proto-plus,
    # which matters when a sync compares thousands of jobs.
    have, want = scheduler_v1.Job.pb(actual), scheduler_v1.Job.pb(desired)
    mask: list[str] = []
    if have.schedule != want.schedule:
        mask.append(MASK_SCHEDULE)
    if have.time_zone != want.time_zone:
        mask.append(MASK_TIME_ZONE)
    if have.WhichOneof("target") != "pubsub_target":
        mask.append(MASK_TARGET)
    else:
        if have.pubsub_target.topic_name != want.pubsub_target.topic_name:
            mask.append(MASK_TOPIC)
        if dict(have.pubsub_target.attributes) != dict(want.pubsub_target.attributes):
            mask.append(MASK_ATTRIBUTES)
        if have.pubsub_target.data != want.pubsub_target.data:
            mask.append(MASK_DATA)
    if have.description != want.description:
        mask.append(MASK_DESCRIPTION)
    if _retry_tuple(have.retry_config) != _retry_tuple(want.retry_config):
        mask.append(MASK_RETRY)
    return tuple(mask)
