"""Validation of Cloud Scheduler jobs and requests as the service does it, shared by both faces of
the emulator through the store: names, targets, schedules, retry configs, update masks. Every
refusal is an `ApiError(INVALID_ARGUMENT)` whose message names the field and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler.cron import CronError, is_valid_timezone, validate_cron
from scheduler.errors import SchedulerError

JobPb: Any = scheduler_v1.Job.pb()
_METHOD = scheduler_v1.HttpMethod
POST = int(_METHOD.POST)
BODY_METHODS = frozenset({POST, int(_METHOD.PUT), int(_METHOD.PATCH)})
USER_AGENT = "Google-Cloud-Scheduler"
# HttpTarget's attempt deadline: 3 minutes unless set, from 15 seconds to 30 minutes
# (Job.attempt_deadline in the API reference).
DEFAULT_HTTP_DEADLINE = timedelta(minutes=3)
HTTP_DEADLINE_RANGE = (timedelta(seconds=15), timedelta(minutes=30))

MAX_JOB_BYTES = 1_000_000
MAX_DESCRIPTION = 500
MAX_RETRY_COUNT = 5
DEFAULT_MIN_BACKOFF = timedelta(seconds=5)
DEFAULT_MAX_BACKOFF = timedelta(hours=1)
DEFAULT_MAX_DOUBLINGS = 5

_PROJECT = r"[A-Za-z0-9:.-]+"
_LOCATION = r"[A-Za-z0-9_-]+"
_JOB_ID = r"[A-Za-z0-9_-]{1,500}"
PARENT_RE = re.compile(rf"^projects/({_PROJECT})/locations/({_LOCATION})$")
NAME_RE = re.compile(rf"^(projects/{_PROJECT}/locations/{_LOCATION})/jobs/({_JOB_ID})$")
TOPIC_RE = re.compile(r"^projects/([^/]+)/topics/([^/]+)$")

TARGETS = ("pubsub_target", "app_engine_http_target", "http_target")
UPDATABLE = ("description", *TARGETS, "schedule", "time_zone", "retry_config", "attempt_deadline")
OUTPUT_ONLY = ("user_update_time", "state", "status", "schedule_time", "last_attempt_time")


class ApiError(SchedulerError):
    """A request the service refuses, with the gRPC status code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_parent(parent: str, what: str = "parent") -> tuple[str, str]:
    """Validate `projects/P/locations/L`; returns (project, location)."""
    match = PARENT_RE.match(parent)
    if not match:
        raise invalid(f"{what}: {parent!r} is not of the form "
                      "projects/PROJECT_ID/locations/LOCATION_ID")
    return match.group(1), match.group(2)


def check_name(name: str, what: str = "name") -> str:
    """Validate a full job name; returns its parent."""
    match = NAME_RE.match(name)
    if not match:
        # The service's words (googleapis/nodejs-scheduler#114), then what the emulator checks.
        raise invalid(
            f'{what}: Job name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
            f'/jobs/<JOB_ID>". Got {name!r} (JOB_ID: letters, digits, \'-\' or \'_\', at most '
            "500 characters)"
        )
    return str(match.group(1))


def seconds(duration: Any) -> float:
    """A protobuf Duration in seconds."""
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _check_duration(duration: Any, what: str) -> None:
    if duration.seconds < 0 or duration.nanos < 0:
        raise invalid(f"job.retry_config.{what}: must not be negative")


def fill_defaults(job: Any) -> None:
    """Fill `retry_config` with the documented defaults, as the service reports them."""
    retry = job.retry_config
    if retry.min_backoff_duration.seconds == 0 and retry.min_backoff_duration.nanos == 0:
        retry.min_backoff_duration.FromTimedelta(DEFAULT_MIN_BACKOFF)
    if retry.max_backoff_duration.seconds == 0 and retry.max_backoff_duration.nanos == 0:
        retry.max_backoff_duration.FromTimedelta(DEFAULT_MAX_BACKOFF)
    if retry.max_doublings == 0:
        retry.max_doublings = DEFAULT_MAX_DOUBLINGS
    # The service shows a zero max_retry_duration as present ("0s": unlimited).
    retry.max_retry_duration.SetInParent()
    if job.WhichOneof("target") == "http_target":
        target = job.http_target
        if target.http_method == 0:
            target.http_method = POST
        # The service stores the User-Agent it sends as one of the job's headers, in place of
        # any the user gave.
        for name in [n for n in target.headers if n.lower() == "user-agent"]:
            del target.headers[name]
        target.headers["User-Agent"] = USER_AGENT
        if not job.HasField("attempt_deadline"):
            job.attempt_deadline.FromTimedelta(DEFAULT_HTTP_DEADLINE)


def validate_job(job: Any, parent: str) -> None:
    """Check every user-settable field of a complete job (after create defaults or an update
    merge); raises `ApiError(INVALID_ARGUMENT)` naming the field."""
    project = parent.split("/")[1]
    if len(job.description) > MAX_DESCRIPTION:
        raise invalid(f"job.description: must not be longer than {MAX_DESCRIPTION} characters")
    if not job.schedule:
        raise invalid("job.schedule: is required")
    # "Schedule or time zone is invalid." is the service's message for both
    # (googleapis/google-cloud-go#1352); the emulator adds which and why.
    try:
        validate_cron(job.schedule)
    except CronError as exc:
        raise invalid(f"job.schedule: Schedule or time zone is invalid: {exc}") from exc
    zone = job.time_zone
    if not (zone == "" or zone.lower() == "utc" or is_valid_timezone(zone)):
        raise invalid(f"job.time_zone: Schedule or time zone is invalid: {zone!r} is not a tz "
                      "database name")
    target = job.WhichOneof("target")
    if target is None:
        raise invalid("job.target: exactly one of pubsub_target, app_engine_http_target, "
                      "http_target is required")
    if target == "pubsub_target":
        _validate_pubsub(job.pubsub_target, project)
    elif target == "http_target":
        _validate_http(job)
    _validate_retry(job.retry_config)
    if job.ByteSize() > MAX_JOB_BYTES:
        raise invalid(f"job: is {job.ByteSize()} bytes; the maximum size of a job is 1MB")


def _validate_pubsub(target: Any, project: str) -> None:
    match = TOPIC_RE.match(target.topic_name)
    if not match:
        raise invalid(
            f"job.pubsub_target.topic_name: {target.topic_name!r} is not of the form "
            "projects/PROJECT_ID/topics/TOPIC_ID"
        )
    if match.group(1) != project:
        raise invalid(
            f"job.pubsub_target.topic_name: the topic must be in the job's project {project!r}"
        )
    if not target.data and not target.attributes:
        raise invalid(
            "job.pubsub_target: the message must contain either non-empty data or at least one "
            "attribute"
        )


def _validate_http(job: Any) -> None:
    target = job.http_target
    if not target.uri:
        raise invalid("job.http_target.uri: is required")
    parts = urlsplit(target.uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"job.http_target.uri: {target.uri!r} is not an absolute http or https URL")
    if target.body and target.http_method not in BODY_METHODS:
        raise invalid("job.http_target.body: a body is allowed only with the POST, PUT or PATCH "
                      "HTTP method")
    deadline = seconds(job.attempt_deadline)
    low, high = HTTP_DEADLINE_RANGE
    if not low.total_seconds() <= deadline <= high.total_seconds():
        raise invalid(f"job.attempt_deadline: must be from 15s to 30m for an HTTP target, "
                      f"got {deadline:g}s")


def _validate_retry(retry: Any) -> None:
    if not 0 <= retry.retry_count <= MAX_RETRY_COUNT:
        raise invalid(f"job.retry_config.retry_count: must be from 0 to {MAX_RETRY_COUNT}, "
                      f"got {retry.retry_count}")
    if retry.max_doublings < 0:
        raise invalid("job.retry_config.max_doublings: must not be negative")
    for what in ("max_retry_duration", "min_backoff_duration", "max_backoff_duration"):
        _check_duration(getattr(retry, what), what)
    if seconds(retry.min_backoff_duration) > seconds(retry.max_backoff_duration) > 0:
        raise invalid("job.retry_config.min_backoff_duration: must not exceed max_backoff_duration")


def check_mask(paths: Iterable[str]) -> list[str]:
    """Validate an UpdateJob mask; returns its paths, or every updatable field when empty."""
    given = list(paths)
    if not given:
        return list(UPDATABLE)
    for path in given:
        top = path.split(".", 1)[0]
        mask = field_mask_pb2.FieldMask(paths=[path])
        if top not in UPDATABLE or not mask.IsValidForDescriptor(JobPb.DESCRIPTOR):
            reason = ("output only" if top in OUTPUT_ONLY
                      else "cannot be updated" if top == "name" else "unknown field")
            raise invalid(f"update_mask: Invalid mask for Job: {path} ({reason})")
    return given


def apply_mask(source: Any, destination: Any, paths: Iterable[str]) -> None:
    """UpdateJob's merge (AIP-134): each path takes its value from `source`, and a path that
    `source` leaves unset is cleared in `destination` (protobuf's `FieldMask.MergeMessage`
    skips those, so gcloud's `--clear-auth-token` would change nothing). Messages, maps and
    repeated fields are replaced whole."""
    for path in paths:
        *parents, leaf = path.split(".")
        src: Any = source
        dst: Any = destination
        for part in parents:
            src = getattr(src, part) if src is not None and src.HasField(part) else None
            if src is None and not dst.HasField(part):
                dst = None
                break
            dst = getattr(dst, part)
        if dst is None:
            continue
        field = dst.DESCRIPTOR.fields_by_name[leaf]
        is_message = field.message_type is not None and not field.is_repeated
        if src is None or (is_message and not src.HasField(leaf)):
            dst.ClearField(leaf)
        elif field.is_repeated:
            dst.ClearField(leaf)
            getattr(dst, leaf).MergeFrom(getattr(src, leaf))
        elif is_message:
            getattr(dst, leaf).CopyFrom(getattr(src, leaf))
        else:
            setattr(dst, leaf, getattr(src, leaf))
    _drop_empty_tokens(destination)


def _drop_empty_tokens(job: Any) -> None:
    # A token whose every field a mask cleared is no token: the job is sent without one.
    if job.HasField("http_target"):
        for token in ("oidc_token", "oauth_token"):
            if job.http_target.HasField(token) and getattr(job.http_target, token).ByteSize() == 0:
                job.http_target.ClearField(token)
