"""The emulator's job store: validation as Cloud Scheduler does it, the jobs, their output-only
fields, the bookkeeping of executions and retries, and the JSON form of the state file.

Jobs are held as raw protobuf `google.cloud.scheduler.v1.Job` messages (not proto-plus
wrappers) so that `FieldMask` merging and `json_format` work on them directly.

Semantics follow the v1 API reference (https://cloud.google.com/scheduler/docs/reference/rpc/
google.cloud.scheduler.v1):

* `name` is `projects/PROJECT_ID/locations/LOCATION_ID/jobs/JOB_ID`; JOB_ID holds letters,
  digits, `-` and `_`, at most 500 characters; a CreateJob without a name gets a generated one.
* `state` is ENABLED on creation; PauseJob needs ENABLED, ResumeJob needs PAUSED (otherwise
  FAILED_PRECONDITION, the AIP-216 code for a state transition from the wrong state).
* `schedule_time` is "the next time the job is scheduled", which "may be a retry of a
  previously failed attempt"; a paused job is not scheduled, so it has none.
* `user_update_time` moves on every user change (create, update, pause, resume): the reference
  describes it as "the creation time of the job", but its name and UpdateJob say otherwise, and
  a client comparing it across an update needs it to move.
* `last_attempt_time` is when the last attempt started; `status` is that attempt's result.
* `retry_config` gets the documented defaults filled in (min backoff 5 s, max backoff 1 h,
  max doublings 5); `retry_count` must be 0 to 5. A failed attempt is retried with that
  backoff, never past the next scheduled start.
* Pub/Sub and HTTP targets are delivered (`scheduler.emulator.firing`,
  `scheduler.emulator.http_target`); App Engine jobs are stored, scheduled and validated, and
  each of their attempts is recorded as UNIMPLEMENTED.
* UpdateJob with an update mask applies only the named paths; without one it replaces every
  updatable field. Output-only fields and `name` in a mask are refused with INVALID_ARGUMENT
  ("Invalid mask for Job: ..." as the real service says).
"""

from __future__ import annotations

import base64
import bisect
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.cloud import scheduler_v1
from google.protobuf import json_format

from scheduler.clock import utc_now
from scheduler.cron import iter_fires
from scheduler.emulator.timing import retry_time, spec_of
from scheduler.emulator.validation import (
    OUTPUT_ONLY,
    ApiError,
    JobPb,
    apply_mask,
    check_mask,
    check_name,
    check_parent,
    fill_defaults,
    invalid,
    seconds,
    validate_job,
)

_STATE = scheduler_v1.Job.State
ENABLED = int(_STATE.ENABLED)
PAUSED = int(_STATE.PAUSED)

MAX_PAGE_SIZE = 500

# The Google Cloud regions that offer Cloud Scheduler (https://cloud.google.com/scheduler/docs/
# locations, and the release notes up to September 2026, which added asia-southeast3,
# asia-south2, europe-west12 and northamerica-northeast2). The real service refuses any other
# location, so a typo in a deployment's location fails here as it would in production instead
# of working only against the emulator; `CloudSchedulerEmulator(locations=...)` takes a newer list.
LOCATIONS = frozenset({
    "africa-south1",
    "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
    "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2", "asia-southeast3",
    "australia-southeast1", "australia-southeast2",
    "europe-central2", "europe-north1", "europe-north2", "europe-southwest1", "europe-west1",
    "europe-west2", "europe-west3", "europe-west4", "europe-west6", "europe-west8",
    "europe-west9", "europe-west10", "europe-west12",
    "me-central1", "me-central2", "me-west1",
    "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1",
    "southamerica-east1", "southamerica-west1",
    "us-central1", "us-east1", "us-east4", "us-east5", "us-south1",
    "us-west1", "us-west2", "us-west3", "us-west4",
})


@dataclass
class Execution:
    """One attempt at delivering a job: the message to publish and what retries need."""

    name: str
    slot: datetime
    trigger: str
    attempt: int
    first_attempt: datetime
    topic: str
    data: bytes
    attributes: dict[str, str]
    token: int = 0
    # An HTTP job's target (a copy of its `HttpTarget` message) and its attempt deadline in
    # seconds; None for the other targets.
    http: Any = None
    deadline: float = 0.0


@dataclass
class _Runtime:
    """What the store keeps beside a job message: its generation (bumped on every change of
    when it is due, so stale timer entries are recognised) and the execution in progress."""

    generation: int = 0
    execution_token: int = 0
    retry: Execution | None = None


@dataclass
class JobStore:
    """Every job of every project and location, thread-safe. `listener` is told the name of
    each job whose due time changed (the firing clock), outside the lock."""

    now: Callable[[], datetime] = utc_now
    listener: Callable[[str], None] | None = None
    locations: frozenset[str] = LOCATIONS
    _jobs: dict[str, Any] = field(default_factory=dict)
    _names: list[str] = field(default_factory=list)
    _runtime: dict[str, _Runtime] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _tokens: int = 0
    version: int = 0

    # -- API -------------------------------------------------------------------------------

    def check_location(self, parent: str, what: str = "parent") -> tuple[str, str]:
        """Validate `projects/P/locations/L` and that L is a location this service offers
        (the ones ListLocations lists); returns (project, location)."""
        project, location = check_parent(parent, what)
        if location not in self.locations:
            # The words of the sibling Cloud Tasks service (googleapis/nodejs-tasks#509).
            raise invalid(f"{what}: Location {location!r} is not a valid location. "
                          "Use ListLocations to list valid locations.")
        return project, location

    def create(self, parent: str, job: Any) -> Any:
        """CreateJob: validate, fill output-only fields, store; returns a copy."""
        self.check_location(parent)
        new = JobPb()
        new.CopyFrom(job)
        if not new.name:
            new.name = f"{parent}/jobs/{uuid.uuid4().hex}"
        if check_name(new.name, "job.name") != parent:
            raise invalid(f"job.name: {new.name!r} is not in the parent {parent!r}")
        for output in OUTPUT_ONLY:
            new.ClearField(output)
        fill_defaults(new)
        validate_job(new, parent)
        now = self.now()
        new.state = ENABLED
        new.user_update_time.FromDatetime(now)
        with self._lock:
            if new.name in self._jobs:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Job {new.name} already exists")
            self._set_next(new, now)
            self._jobs[new.name] = new
            bisect.insort(self._names, new.name)
            self._runtime[new.name] = _Runtime()
            result = self._copy(new)
        self._changed(new.name)
        return result

    def get(self, name: str) -> Any:
        """GetJob."""
        with self._lock:
            return self._copy(self._find(name))

    def list_page(self, parent: str, page_size: int, page_token: str) -> tuple[list[Any], str]:
        """ListJobs: jobs in name order after the token's name; returns (jobs, next token).
        The token names the last job returned, so pages stay consistent under inserts and
        deletes between calls."""
        self.check_location(parent)
        if page_size < 0:
            raise invalid("page_size: must not be negative")
        size = MAX_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
        prefix = f"{parent}/jobs/"
        after = prefix
        if page_token:
            try:
                after = base64.urlsafe_b64decode(page_token.encode()).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise invalid(f"page_token: {page_token!r} is not a token this service "
                              "returned") from exc
            if not after.startswith(prefix):
                raise invalid(f"page_token: {page_token!r} does not belong to parent {parent!r}")
        with self._lock:
            start = bisect.bisect_right(self._names, after)
            names = [n for n in self._names[start:start + size + 1] if n.startswith(prefix)]
            page = [self._copy(self._jobs[n]) for n in names[:size]]
        more = len(names) > size
        token = base64.urlsafe_b64encode(page[-1].name.encode()).decode() if more else ""
        return page, token

    def update(self, job: Any, paths: Iterable[str]) -> Any:
        """UpdateJob: merge the masked paths (all updatable fields without a mask), validate
        the result, keep the state, recompute when it is next due."""
        parent = check_name(job.name, "job.name")
        self.check_location(parent, "job.name")
        mask_paths = check_mask(paths)
        with self._lock:
            current = self._find(job.name)
            merged = JobPb()
            merged.CopyFrom(current)
            apply_mask(job, merged, mask_paths)
            fill_defaults(merged)
            validate_job(merged, parent)
            now = self.now()
            merged.user_update_time.FromDatetime(now)
            self._set_next(merged, now)
            self._jobs[job.name] = merged
            self._reset(job.name)
            result = self._copy(merged)
        self._changed(job.name)
        return result

    def delete(self, name: str) -> None:
        """DeleteJob."""
        with self._lock:
            self._find(name)
            del self._jobs[name]
            del self._names[bisect.bisect_left(self._names, name)]
            del self._runtime[name]
        self._changed(name)

    def pause(self, name: str) -> Any:
        """PauseJob: ENABLED -> PAUSED; the job is no longer scheduled."""
        return self._transition(name, ENABLED, PAUSED)

    def resume(self, name: str) -> Any:
        """ResumeJob: PAUSED -> ENABLED, scheduled from now on (missed slots are not made up)."""
        return self._transition(name, PAUSED, ENABLED)

    def _transition(self, name: str, source: int, target: int) -> Any:
        with self._lock:
            job = self._find(name)
            if job.state != source:
                verb = "paused" if target == PAUSED else "resumed"
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    (
                        f"Job {name} is {_STATE(job.state).name}; it must be "
                        f"{_STATE(source).name} to be {verb}"
                    ),
                )
            now = self.now()
            job.state = target
            job.user_update_time.FromDatetime(now)
            self._set_next(job, now)
            self._reset(name)
            result = self._copy(job)
        self._changed(name)
        return result

    # -- firing ----------------------------------------------------------------------------

    def due(self, name: str) -> tuple[datetime, int] | None:
        """When an ENABLED job is next due, with its generation; None otherwise."""
        with self._lock:
            job = self._jobs.get(name)
            if job is None or job.state != ENABLED or not job.HasField("schedule_time"):
                return None
            return job.schedule_time.ToDatetime(UTC), self._runtime[name].generation

    def names(self) -> list[str]:
        """Every job name, sorted."""
        with self._lock:
            return list(self._names)

    def claim(self, name: str, generation: int) -> Execution | None:
        """Start the attempt a timer entry stands for, if the entry is still current: records
        `last_attempt_time` and moves `schedule_time` to the next slot (skipping slots that
        are already past, so a late clock fires once rather than in a burst)."""
        with self._lock:
            job = self._jobs.get(name)
            runtime = self._runtime.get(name)
            if (
                job is None
                or runtime is None
                or runtime.generation != generation
                or job.state != ENABLED
            ):
                return None
            now = self.now()
            due = job.schedule_time.ToDatetime(UTC)
            retry, runtime.retry = runtime.retry, None
            if retry is not None:
                execution = retry
                execution.attempt += 1
            else:
                execution = self._execution(job, due, "scheduled", now)
            execution.token = runtime.execution_token = self._next_token()
            job.last_attempt_time.FromDatetime(now)
            self._set_next(job, max(execution.slot, now))
            runtime.generation += 1
        self._changed(name)
        return execution

    def claim_now(self, name: str) -> tuple[Any, Execution]:
        """RunJob: start an attempt now, whatever the schedule or state; returns the job and
        the execution."""
        with self._lock:
            job = self._find(name)
            now = self.now()
            job.last_attempt_time.FromDatetime(now)
            execution = self._execution(job, now, "manual", now)
            execution.token = self._runtime[name].execution_token = self._next_token()
            result = self._copy(job)
        self._touch()
        return result, execution

    def record(self, execution: Execution, code: int, message: str) -> datetime | None:
        """Record an attempt's result in `status`; after a failure, schedule a retry when the
        job's retry_config allows one before its next slot. Returns the retry time, if any."""
        retry_at: datetime | None = None
        with self._lock:
            job = self._jobs.get(execution.name)
            runtime = self._runtime.get(execution.name)
            if job is None or runtime is None:
                return None
            job.status.Clear()
            job.status.code = code
            job.status.message = message
            current = runtime.execution_token == execution.token
            if code != 0 and current and job.state == ENABLED:
                retry_at = retry_time(job, execution.attempt, execution.first_attempt,
                                      self.now())
            if retry_at is not None:
                runtime.retry = execution
                job.schedule_time.FromDatetime(retry_at)
                runtime.generation += 1
        if retry_at is not None:
            self._changed(execution.name)
        else:
            self._touch()
        return retry_at

    # -- state file ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The JSON-able state: every job in its proto3 JSON form."""
        with self._lock:
            copies = [self._copy(self._jobs[n]) for n in self._names]
        return {"format": 1, "jobs": [json_format.MessageToDict(job) for job in copies]}

    def load(self, state: dict[str, Any]) -> int:
        """Replace the jobs with those of a snapshot; ENABLED jobs are scheduled from now."""
        loaded: dict[str, Any] = {}
        for raw in state.get("jobs", []):
            job = json_format.ParseDict(raw, JobPb())
            check_name(job.name, "state file job.name")
            loaded[job.name] = job
        now = self.now()
        with self._lock:
            self._jobs = loaded
            self._names = sorted(loaded)
            self._runtime = {n: _Runtime() for n in loaded}
            for job in loaded.values():
                self._set_next(job, now)
        for name in loaded:
            self._changed(name)
        return len(loaded)

    # -- helpers ---------------------------------------------------------------------------

    def _find(self, name: str) -> Any:
        self.check_location(check_name(name), "name")
        job = self._jobs.get(name)
        if job is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Job not found: {name}")
        return job

    @staticmethod
    def _copy(job: Any) -> Any:
        copy = JobPb()
        copy.CopyFrom(job)
        return copy

    @staticmethod
    def _set_next(job: Any, after: datetime) -> None:
        if job.state != ENABLED:
            job.ClearField("schedule_time")
            return
        job.schedule_time.FromDatetime(next(iter_fires(spec_of(job), after)))

    def _reset(self, name: str) -> None:
        runtime = self._runtime[name]
        runtime.generation += 1
        runtime.retry = None
        runtime.execution_token = 0

    def _next_token(self) -> int:
        self._tokens += 1
        return self._tokens

    @staticmethod
    def _execution(job: Any, slot: datetime, trigger: str, now: datetime) -> Execution:
        # An App Engine job has neither a topic nor an HTTP target: the clock records its
        # attempts as UNIMPLEMENTED.
        target = job.pubsub_target
        execution = Execution(
            name=job.name, slot=slot, trigger=trigger, attempt=1, first_attempt=now,
            topic=target.topic_name, data=bytes(target.data), attributes=dict(target.attributes),
        )
        if job.WhichOneof("target") == "http_target":
            execution.http = type(job.http_target)()
            execution.http.CopyFrom(job.http_target)
            execution.deadline = seconds(job.attempt_deadline)
        return execution

    def _touch(self) -> None:
        with self._lock:
            self.version += 1

    def _changed(self, name: str) -> None:
        self._touch()
        if self.listener is not None:
            self.listener(name)
