"""Sync: plan the difference between schedules and Cloud Scheduler jobs, then apply only that.

`Syncer.plan` lists the location's jobs once (the client's pager, largest pages), keeps those
under the deployment's prefix and compares each field by field with the job its schedule
requires (`scheduler.jobs`). The plan's steps are create / update (with the exact update mask) /
pause / resume / delete; a job that matches yields none, and a job outside the prefix is never a
step. `Syncer.apply` runs the steps:

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
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler.config import Settings
from scheduler.contract import Message
from scheduler.jobs import ALL_FIELDS, JobSpec, JobState, diff_mask, is_paused
from scheduler.logs import get_logger
from scheduler.model import FieldError, Schedule, ValidationError, format_instant
from scheduler.naming import is_owned, job_id_of
from scheduler.one_shots import is_done_with, sync_fire

log = get_logger(__name__)

StepKind = Literal["create", "update", "pause", "resume", "delete", "fire"]
StepStatus = Literal["ok", "failed", "skipped"]
_KIND_ORDER: dict[str, int] = {
    "delete": 0, "create": 1, "update": 2, "pause": 3, "resume": 4, "fire": 5,
}
WRITE_METHODS = ("CreateJob", "UpdateJob", "DeleteJob", "PauseJob", "ResumeJob")
RETRYABLE: tuple[type[Exception], ...] = (
    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted,
)
# ListJobs returns at most 500 jobs a page; the largest page keeps a 5,000-job listing to 10 reads.
# `Syncer(list_page_size=...)` takes smaller pages, so tests can page through a few hundred jobs.
LIST_PAGE_SIZE = 500


@dataclass(frozen=True)
class Step:
    """One change to one job. `job` is the full desired job (create and update); `paused` is the
    schedule's desired state, used when a create or update has to converge an unexpected job."""

    kind: StepKind
    job_id: str
    schedule_id: str | None
    reason: str
    update_mask: tuple[str, ...] = ()
    paused: bool = False
    job: scheduler_v1.Job | None = field(default=None, compare=False, repr=False)
    message: Message | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-compatible data."""
        out: dict[str, Any] = {
            "kind": self.kind, "job_id": self.job_id, "schedule_id": self.schedule_id,
            "reason": self.reason,
        }
        if self.kind == "update":
            out["update_mask"] = list(self.update_mask)
        return out

    def describe(self) -> str:
        """One human-readable line."""
        owner = f" (schedule {self.schedule_id!r})" if self.schedule_id is not None else ""
        mask = f" [{', '.join(self.update_mask)}]" if self.update_mask else ""
        return f"{self.kind:<7} {self.job_id}{owner}{mask}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    """What a sync would change. `steps` is empty when everything is in sync."""

    steps: tuple[Step, ...] = ()
    unchanged: int = 0
    kept: tuple[str, ...] = ()
    foreign: int = 0
    expired: tuple[str, ...] = ()
    list_retries: tuple[str, ...] = ()
    prune: bool = True
    held: tuple[str, ...] = ()
    # The full desired set a sync planned from (None for a plan of single steps): applying it
    # also brings the schedule registry in line (`scheduler.registry`).
    schedules: tuple[Schedule, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def is_noop(self) -> bool:
        """True when nothing needs to change."""
        return not self.steps

    def counts(self) -> dict[str, int]:
        """Number of steps by kind (every kind listed)."""
        counts = dict.fromkeys(_KIND_ORDER, 0)
        for step in self.steps:
            counts[step.kind] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-compatible data."""
        return {
            "steps": [s.to_dict() for s in self.steps],
            "counts": self.counts(),
            "unchanged": self.unchanged,
            "kept_without_schedule": list(self.kept),
            "foreign_jobs_ignored": self.foreign,
            "expired_one_shots": list(self.expired),
            "prune": self.prune,
            "list_retries": list(self.list_retries),
            "held_for_refused_items": list(self.held),
        }

    def describe(self) -> str:
        """A human-readable summary, one line per step."""
        lines = [step.describe() for step in self.steps]
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts().items() if n)
        lines.append(f"plan: {counts or 'no changes'}; {self.unchanged} job(s) in sync")
        if self.kept:
            lines.append(f"kept {len(self.kept)} job(s) without a schedule (use --prune to delete)")
        if self.held:
            lines.append(f"left {len(self.held)} job(s) of refused items exactly as they are")
        return "\n".join(lines)


@dataclass(frozen=True)
class StepOutcome:
    """How one step went: `ok`, `failed` (with the error), or `skipped` (an earlier step of the
    same job failed). `retries` lists the retryable error codes met along the way."""

    step: Step
    status: StepStatus
    error: str = ""
    retries: tuple[str, ...] = ()
    note: str = ""

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


def _error_text(exc: Exception) -> str:
    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        return f"gave up after retrying: {exc.cause}"
    return str(exc) or type(exc).__name__


def steps_for(schedule: Schedule, job: scheduler_v1.Job | None, spec: JobSpec,
              *, now: datetime, grace: timedelta) -> list[Step]:
    """The steps that bring one schedule's job (None when it does not exist) in line, and the
    fire of a one-shot that its job can no longer publish (`scheduler.one_shots`), last."""
    steps = _job_steps(schedule, job, spec, now=now, grace=grace)
    fire = sync_fire(schedule, job, now=now, signing_key=spec.signing_key)
    if fire is None:
        return steps
    return [*steps, Step("fire", spec.job_id(schedule.id), schedule.id, fire.reason,
                         message=fire.message)]


def _job_steps(schedule: Schedule, job: scheduler_v1.Job | None, spec: JobSpec,
               *, now: datetime, grace: timedelta) -> list[Step]:
    job_id = spec.job_id(schedule.id)
    if is_done_with(schedule, now, grace):
        if job is None:
            return []
        assert schedule.at is not None
        return [Step("delete", job_id, schedule.id,
                     f"one-shot fired at {format_instant(schedule.at)}; grace has passed")]
    desired = spec.desired_job(schedule)
    if job is None:
        steps = [Step("create", job_id, schedule.id, "no job", paused=schedule.paused, job=desired)]
        if schedule.paused:
            steps.append(Step("pause", job_id, schedule.id, "schedule is paused", paused=True))
        return steps
    steps = []
    mask = diff_mask(job, desired)
    if job.state == JobState.UPDATE_FAILED:
        # Cloud Scheduler's advice for this state is to repeat UpdateJob until it succeeds.
        steps.append(Step("update", job_id, schedule.id, "job is in state UPDATE_FAILED",
                          update_mask=ALL_FIELDS, paused=schedule.paused, job=desired))
    elif mask:
        steps.append(Step("update", job_id, schedule.id, "job differs from its schedule",
                          update_mask=mask, paused=schedule.paused, job=desired))
    # A job's steps run in order and stop at the first failure, so a pause goes before the
    # update and a resume after it: the job never fires the new definition of a schedule
    # that is paused, nor the old one of a schedule being resumed.
    if schedule.paused and not is_paused(job):
        steps.insert(0, Step("pause", job_id, schedule.id, "schedule is paused", paused=True))
    elif not schedule.paused and is_paused(job):
        steps.append(Step("resume", job_id, schedule.id, "schedule is not paused"))
    return steps


def compute_plan(jobs: Iterable[scheduler_v1.Job], schedules: Sequence[Schedule], spec: JobSpec,
                 *, now: datetime, grace: timedelta, prune: bool = True,
                 list_retries: Sequence[str] = (), keep: Collection[str] = ()) -> Plan:
    """Compare existing jobs with the schedules; no API calls. Jobs outside the prefix are
    counted and otherwise ignored; owned jobs without a schedule are deleted only with `prune`,
    and never the job of a schedule ID in `keep` (an item refused from a hub listing, whose job
    is left exactly as it is)."""
    by_job_id: dict[str, Schedule] = {}
    duplicates = []
    for schedule in schedules:
        job_id = spec.job_id(schedule.id)
        if job_id in by_job_id:
            duplicates.append(FieldError(schedule.id, "id", "duplicate schedule ID in this set"))
        by_job_id[job_id] = schedule
    if duplicates:
        raise ValidationError(duplicates)
    steps: list[Step] = []
    matched: set[str] = set()
    kept: list[str] = []
    held: list[str] = []
    unchanged = foreign = 0
    for job in jobs:
        job_id = job_id_of(job.name)
        if not is_owned(job_id, spec.prefix):
            foreign += 1
            continue
        wanted = by_job_id.get(job_id)
        if wanted is None:
            owner = spec.owner_schedule_id(job)
            if owner is not None and owner in keep:
                held.append(job_id)
            elif prune:
                reason = (
                    "no schedule" if owner is not None else "under the prefix but names no schedule"
                )
                steps.append(Step("delete", job_id, owner, reason))
            else:
                kept.append(job_id)
            continue
        matched.add(job_id)
        found = steps_for(wanted, job, spec, now=now, grace=grace)
        if not found and not is_done_with(wanted, now, grace):
            unchanged += 1
        steps.extend(found)
    expired = []
    for job_id, schedule in by_job_id.items():
        if job_id in matched:
            continue
        if is_done_with(schedule, now, grace):
            expired.append(schedule.id)
        steps.extend(steps_for(schedule, None, spec, now=now, grace=grace))
    steps.sort(key=lambda s: s.job_id)  # stable: a job's create stays before its pause
    return Plan(tuple(steps), unchanged, tuple(sorted(kept)), foreign, tuple(sorted(expired)),
                tuple(list_retries), prune, tuple(sorted(held)))


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
            initial=settings.duration("api_retry_initial").total_seconds(),
            maximum=settings.duration("api_retry_maximum").total_seconds(),
            timeout=settings.duration("api_retry_timeout").total_seconds(),
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
            write_rate=settings.number("write_rate"),
            concurrency=settings.integer("sync_concurrency"),
            one_shot_grace=settings.duration("one_shot_grace"), **kwargs,
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
            error = _error_text(exc)
            log.warning("job step failed", schedule_id=step.schedule_id, job_id=step.job_id,
                        step=step.kind, error=error, retries=tracker.retries)
            return StepOutcome(step, "failed", error, tuple(tracker.retries))
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
