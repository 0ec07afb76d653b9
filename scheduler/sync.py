"""Sync: plan the difference between schedules and Cloud Scheduler jobs, then apply only that.

`Syncer.plan` lists the location's jobs once (the client's pager, largest pages) and hands them
to `scheduler.sync_plan.compute_plan`, which keeps those under the deployment's prefix and
compares each with the job its schedule requires. `Syncer.apply` runs the plan's steps:

* concurrently (a thread pool), the steps of one job in order (create before its pause);
* under a client-side write rate limit (Cloud Scheduler allows 500 writes per minute per
  project: https://cloud.google.com/scheduler/quotas), retried writes included;
* with `google.api_core.retry.Retry` on UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED,
  whose `on_error` callback records every retried error in the step's outcome;
* idempotently: ALREADY_EXISTS on create converges the existing job by update, NOT_FOUND on
  delete is success, NOT_FOUND on update re-creates, pausing a paused job is success.

One failing step never stops the others; `ApplyResult` reports every step's outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler.config import Settings
from scheduler.contract import Message
from scheduler.jobs import ALL_FIELDS, JobSpec, JobState, diff_mask, is_paused
from scheduler.logs import get_logger
from scheduler.model import Schedule
from scheduler.naming import is_owned, job_id_of
from scheduler.one_shots import is_done_with
from scheduler.sync_plan import Plan, Step, compute_plan, steps_for

log = get_logger(__name__)

StepStatus = Literal["ok", "failed", "skipped"]
WRITE_METHODS = ("CreateJob", "UpdateJob", "DeleteJob", "PauseJob", "ResumeJob")
RETRYABLE: tuple[type[Exception], ...] = (
    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted,
)
# ListJobs returns at most 500 jobs a page; the largest page keeps a 5,000-job listing to 10 reads.
# `Syncer(list_page_size=...)` takes smaller pages, so tests can page through a few hundred jobs.
LIST_PAGE_SIZE = 500


class Failure(StrEnum):
    """How a failed step failed, for whoever must say why (the API's status codes)."""

    REFUSED = "refused"  # the service answered with an error (`StepOutcome.http_status`)
    GAVE_UP = "gave_up"  # retryable errors until the retry deadline; the last one's status
    ERROR = "error"  # no answer from the service: a local failure, a timeout
    OWNED = "owned"  # the item belongs to another deployment sharing the store: left alone


@dataclass(frozen=True)
class StepOutcome:
    """How one step went: `ok`, `failed` (with the error), or `skipped` (an earlier step of the
    same job failed). `retries` lists the retryable error codes met along the way. A failed
    step says how it failed (`failure`) and, when the service answered, with which HTTP status
    (`http_status`, Google's mapping of the gRPC code)."""

    step: Step
    status: StepStatus
    error: str = ""
    retries: tuple[str, ...] = ()
    note: str = ""
    failure: Failure | None = None
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        """True when the step is done."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-compatible data."""
        out = self.step.to_dict()
        out.update({"status": self.status, "retries": list(self.retries)})
        if self.error:
            out["error"] = self.error
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class ApplyResult:
    """Every step's outcome, in plan order."""

    plan: Plan
    outcomes: tuple[StepOutcome, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every step succeeded."""
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> tuple[StepOutcome, ...]:
        """The outcomes that did not succeed."""
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def retries(self) -> int:
        """Retryable errors met while applying (listing included)."""
        return len(self.plan.list_retries) + sum(len(o.retries) for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-compatible data."""
        return {
            "ok": self.ok,
            "applied": sum(1 for o in self.outcomes if o.ok),
            "failed": sum(1 for o in self.outcomes if o.status == "failed"),
            "skipped": sum(1 for o in self.outcomes if o.status == "skipped"),
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "outcomes": [o.to_dict() for o in self.outcomes],
        }

    def describe(self) -> str:
        """A human-readable report: failures and retries, then a summary line."""
        lines = []
        for o in self.outcomes:
            if not o.ok:
                lines.append(f"{o.status.upper()} {o.step.describe()}: {o.error}")
            elif o.retries or o.note:
                extra = "; ".join(
                    filter(None, [o.note, f"retried {', '.join(o.retries)}" if o.retries else ""])
                )
                lines.append(f"ok      {o.step.kind} {o.step.job_id}: {extra}")
        lines.append(
            f"applied {sum(1 for o in self.outcomes if o.ok)} of {len(self.outcomes)} step(s), "
            f"{len(self.failed)} not applied, {self.retries} retried error(s), {self.seconds:.1f}s"
        )
        return "\n".join(lines)


class RateLimiter:
    """Spaces calls at least `1/rate` seconds apart across all threads (no bursts): a sync of
    thousands of jobs then spreads evenly under the per-minute quota."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        """Block until this caller's turn."""
        with self._lock:
            now = self._clock()
            turn = max(now, self._next)
            self._next = turn + self._interval
        if turn > now:
            self._sleep(turn - now)


class _Tracker:
    """Collects the retryable errors of one step (Retry's `on_error` calls it)."""

    def __init__(self, limiter: RateLimiter | None) -> None:
        self.retries: list[str] = []
        self._limiter = limiter
        self._lock = threading.Lock()

    def on_error(self, exc: Exception, *, write: bool) -> None:
        code = getattr(getattr(exc, "grpc_status_code", None), "name", None) or type(exc).__name__
        with self._lock:
            self.retries.append(code)
        # The retried attempt is another write against the quota, so it waits its turn too.
        if write and self._limiter is not None:
            self._limiter.acquire()


def error_text(exc: Exception) -> str:
    """A failed step's error, as its outcome reports it."""
    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        return f"gave up after retrying: {exc.cause}"
    return str(exc) or type(exc).__name__


def failure_of(exc: Exception) -> tuple[Failure, int | None]:
    """How a step's exception failed it, and the HTTP status the service answered, if any."""
    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        return Failure.GAVE_UP, _http_status(exc.cause)
    status = _http_status(exc)
    return (Failure.ERROR if status is None else Failure.REFUSED), status


def _http_status(exc: BaseException) -> int | None:
    code = exc.code if isinstance(exc, gexc.GoogleAPICallError) else None
    return int(code) if isinstance(code, int) else None


@dataclass(frozen=True)
class ApiRetry:
    """Backoff of the client's own retries of Cloud Scheduler calls."""

    initial: float
    maximum: float
    timeout: float
    multiplier: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiRetry:
        """Read the `SCION_SCHEDULER_API_RETRY_*` settings."""
        return cls(
            initial=settings.api_retry_initial.total_seconds(),
            maximum=settings.api_retry_maximum.total_seconds(),
            timeout=settings.api_retry_timeout.total_seconds(),
        )


class Syncer:
    """Plans and applies job changes through a `CloudSchedulerClient`."""

    def __init__(self, client: Any, spec: JobSpec, *, api_retry: ApiRetry, write_rate: float,
                 concurrency: int, one_shot_grace: timedelta,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 list_page_size: int = LIST_PAGE_SIZE,
                 publish: Callable[[Message], str] | None = None) -> None:
        if not 1 <= list_page_size <= LIST_PAGE_SIZE:
            raise ValueError(
                f"list_page_size: must be from 1 to {LIST_PAGE_SIZE}, got {list_page_size}"
            )
        self.client = client
        self.list_page_size = list_page_size
        self.spec = spec
        self.api_retry = api_retry
        self.limiter = RateLimiter(write_rate)
        self.concurrency = concurrency
        self.grace = one_shot_grace
        self.clock = clock
        # Publishes a fire message to the topic (its message ID): the fires of `sync_fire`.
        self.publish = publish

    @classmethod
    def from_settings(cls, client: Any, settings: Settings, **kwargs: Any) -> Syncer:
        """Build from settings (project, location and topic are required)."""
        return cls(
            client, JobSpec.from_settings(settings), api_retry=ApiRetry.from_settings(settings),
            write_rate=settings.write_rate,
            concurrency=settings.sync_concurrency,
            one_shot_grace=settings.one_shot_grace, **kwargs,
        )

    # -- calls -------------------------------------------------------------------------------

    def _retry(self, tracker: _Tracker, *, write: bool) -> Retry:
        return Retry(
            predicate=if_exception_type(*RETRYABLE),
            initial=self.api_retry.initial,
            maximum=self.api_retry.maximum,
            multiplier=self.api_retry.multiplier,
            timeout=self.api_retry.timeout,
            on_error=lambda exc: tracker.on_error(exc, write=write),
        )

    def _read(self, method: Callable[..., Any], tracker: _Tracker, **kwargs: Any) -> Any:
        return method(
            retry=self._retry(tracker, write=False), timeout=self.api_retry.timeout, **kwargs
        )

    def _write(self, method: Callable[..., Any], tracker: _Tracker, **kwargs: Any) -> Any:
        self.limiter.acquire()
        return method(
            retry=self._retry(tracker, write=True), timeout=self.api_retry.timeout, **kwargs
        )

    def get_job(self, job_id: str, tracker: _Tracker | None = None) -> scheduler_v1.Job | None:
        """One GetJob; None when the job does not exist."""
        try:
            job: scheduler_v1.Job = self._read(self.client.get_job, tracker or _Tracker(None),
                                               name=f"{self.spec.location_path}/jobs/{job_id}")
        except gexc.NotFound:
            return None
        return job

    def iter_jobs(self, tracker: _Tracker | None = None) -> Iterator[scheduler_v1.Job]:
        """Every job in the location, page by page (jobs outside the prefix included)."""
        request = scheduler_v1.ListJobsRequest(
            parent=self.spec.location_path, page_size=self.list_page_size
        )
        yield from self._read(self.client.list_jobs, tracker or _Tracker(None), request=request)

    def owned_jobs(self) -> list[scheduler_v1.Job]:
        """The jobs under this deployment's prefix."""
        return [j for j in self.iter_jobs() if is_owned(job_id_of(j.name), self.spec.prefix)]

    # -- plan and apply ----------------------------------------------------------------------

    def plan(self, schedules: Sequence[Schedule], *, prune: bool = True,
             keep: Collection[str] = ()) -> Plan:
        """List the jobs once and compare them with `schedules` (see `compute_plan`)."""
        tracker = _Tracker(None)
        jobs = list(self.iter_jobs(tracker))
        return compute_plan(jobs, schedules, self.spec, now=self.clock(), grace=self.grace,
                            prune=prune, list_retries=tracker.retries, keep=keep)

    def plan_one(self, schedule: Schedule) -> tuple[Plan, scheduler_v1.Job | None]:
        """The steps for one schedule after a single GetJob (no listing), and the job as read."""
        tracker = _Tracker(None)
        job = self.get_job(self.spec.job_id(schedule.id), tracker)
        now = self.clock()
        steps = tuple(steps_for(schedule, job, self.spec, now=now, grace=self.grace))
        expired = (schedule.id,) if job is None and is_done_with(schedule, now, self.grace) else ()
        return Plan(steps, unchanged=int(job is not None and not steps), expired=expired,
                    list_retries=tuple(tracker.retries), prune=False), job

    def apply(self, plan: Plan) -> ApplyResult:
        """Run every step; steps of different jobs concurrently, a job's own steps in order."""
        started = time.monotonic()
        groups: dict[str, list[int]] = {}
        for index, step in enumerate(plan.steps):
            groups.setdefault(step.job_id, []).append(index)
        outcomes: list[StepOutcome | None] = [None] * len(plan.steps)
        if groups:
            workers = min(self.concurrency, len(groups))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scion-sync") as pool:
                futures = [pool.submit(self._apply_group, [plan.steps[i] for i in indexes])
                           for indexes in groups.values()]
                for indexes, future in zip(groups.values(), futures, strict=True):
                    for index, outcome in zip(indexes, future.result(), strict=True):
                        outcomes[index] = outcome
        done = tuple(o for o in outcomes if o is not None)
        result = ApplyResult(plan, done, time.monotonic() - started)
        log.info("sync applied", steps=len(done), failed=len(result.failed), retries=result.retries,
                 seconds=round(result.seconds, 3))
        return result

    def _apply_group(self, steps: list[Step]) -> list[StepOutcome]:
        outcomes: list[StepOutcome] = []
        failed: StepOutcome | None = None
        for step in steps:
            # A fire needs no job: it goes out even when the job's own steps failed.
            if failed is not None and step.kind != "fire":
                outcomes.append(
                    StepOutcome(step, "skipped", f"not attempted: its {failed.step.kind} failed")
                )
                continue
            outcome = self._apply_step(step)
            if not outcome.ok:
                failed = outcome
            outcomes.append(outcome)
        return outcomes

    def _apply_step(self, step: Step) -> StepOutcome:
        tracker = _Tracker(self.limiter)
        try:
            note = self._run(step, tracker)
        except Exception as exc:  # every failure becomes this step's outcome, never the sync's
            error = error_text(exc)
            log.warning("job step failed", schedule_id=step.schedule_id, job_id=step.job_id,
                        step=step.kind, error=error, retries=tracker.retries)
            failure, http_status = failure_of(exc)
            return StepOutcome(step, "failed", error, tuple(tracker.retries), failure=failure,
                               http_status=http_status)
        log.info(
            "job step applied",
            schedule_id=step.schedule_id,
            job_id=step.job_id,
            step=step.kind,
            update_mask=list(step.update_mask),
            retries=tracker.retries,
            note=note,
        )
        return StepOutcome(step, "ok", retries=tuple(tracker.retries), note=note)

    def _name(self, step: Step) -> str:
        return f"{self.spec.location_path}/jobs/{step.job_id}"

    def _run(self, step: Step, tracker: _Tracker) -> str:
        client = self.client
        if step.kind == "fire":
            if self.publish is None or step.message is None:
                raise RuntimeError("this sync cannot publish fires (no publisher)")
            return f"published as message {self.publish(step.message)}"
        if step.kind == "create":
            try:
                self._write(
                    client.create_job, tracker, parent=self.spec.location_path, job=step.job
                )
            except gexc.AlreadyExists:
                return self._converge(step, tracker, "already existed")
            return ""
        if step.kind == "update":
            mask = field_mask_pb2.FieldMask(paths=list(step.update_mask))
            try:
                self._write(client.update_job, tracker, job=step.job, update_mask=mask)
            except gexc.NotFound:
                self._write(
                    client.create_job, tracker, parent=self.spec.location_path, job=step.job
                )
                if step.paused:
                    self._write(client.pause_job, tracker, name=self._name(step))
                return "job was gone; created it"
            return ""
        if step.kind == "delete":
            try:
                self._write(client.delete_job, tracker, name=self._name(step))
            except gexc.NotFound:
                return "already gone"
            return ""
        want_paused = step.kind == "pause"
        method = client.pause_job if want_paused else client.resume_job
        try:
            self._write(method, tracker, name=self._name(step))
        except gexc.FailedPrecondition:
            job = self.get_job(step.job_id, tracker)
            if job is None or is_paused(job) != want_paused:
                raise
            return f"already {'paused' if want_paused else 'enabled'}"
        return ""

    def _converge(self, step: Step, tracker: _Tracker, why: str) -> str:
        """Bring an unexpectedly existing job in line (a create retried after it succeeded, or
        a concurrent sync): update what differs, resume it if the schedule is not paused (a
        paused schedule's pause step follows)."""
        assert step.job is not None
        job = self.get_job(step.job_id, tracker)
        if job is None:
            self._write(
                self.client.create_job, tracker, parent=self.spec.location_path, job=step.job
            )
            return f"{why}, then vanished; created it"
        mask = ALL_FIELDS if job.state == JobState.UPDATE_FAILED else diff_mask(job, step.job)
        notes = [why]
        if mask:
            self._write(self.client.update_job, tracker, job=step.job,
                        update_mask=field_mask_pb2.FieldMask(paths=list(mask)))
            notes.append(f"converged by update [{', '.join(mask)}]")
        else:
            notes.append("already up to date")
        if not step.paused and is_paused(job):
            self._write(self.client.resume_job, tracker, name=self._name(step))
            notes.append("resumed")
        return "; ".join(notes)
