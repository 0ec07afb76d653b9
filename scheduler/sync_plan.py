"""What a sync would change: the steps that bring Cloud Scheduler's jobs in line with the
schedules, computed without any API call.

`compute_plan` compares each job under the deployment's prefix field by field with the job its
schedule requires (`scheduler.jobs`). The plan's steps are create / update (with the exact update
mask) / pause / resume / delete, and the fire of a one-shot its job can no longer publish; a job
that matches yields none, and a job outside the prefix is never a step. `scheduler.sync.Syncer`
lists the jobs and applies the steps.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from google.cloud import scheduler_v1

from scheduler.contract import Message
from scheduler.jobs import ALL_FIELDS, JobSpec, JobState, attributes_of, diff_mask, is_paused
from scheduler.model import FieldError, Schedule, ValidationError, format_instant
from scheduler.naming import is_owned, job_id_of
from scheduler.one_shots import is_done_with, sync_fire
from scheduler.ticks import is_tick_message, tick_job_id

StepKind = Literal["create", "update", "pause", "resume", "delete", "fire"]
_KIND_ORDER: dict[str, int] = {
    "delete": 0, "create": 1, "update": 2, "pause": 3, "resume": 4, "fire": 5,
}


@dataclass(frozen=True)
class Step:
    """One change to one job. `job` is the full desired job (create and update); `paused` is the
    schedule's desired state, used when a create or update has to converge an unexpected job."""

    # The service that a step's write goes to, which a failed step's error comes from.
    service: ClassVar[str] = "Cloud Scheduler"

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


def is_tick_job(job: scheduler_v1.Job, prefix: str) -> bool:
    """Whether a job under `prefix` is tick mode's tick (`scheduler.ticks`): by its ID, which is
    no schedule's, or by its message, under the ID earlier versions gave it."""
    return job_id_of(job.name) == tick_job_id(prefix) or is_tick_message(attributes_of(job))


def compute_plan(jobs: Iterable[scheduler_v1.Job], schedules: Sequence[Schedule], spec: JobSpec,
                 *, now: datetime, grace: timedelta, prune: bool = True,
                 list_retries: Sequence[str] = (), keep: Collection[str] = ()) -> Plan:
    """Compare existing jobs with the schedules; no API calls. Jobs outside the prefix are
    counted and otherwise ignored; owned jobs without a schedule are deleted only with `prune`,
    and never the job of a schedule ID in `keep` (an item refused from a hub listing, whose job
    is left exactly as it is). Tick mode's tick job is no schedule's and is left alone: `migrate
    --to jobs` deletes it once every schedule has its job (`scheduler.migrate`)."""
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
        if wanted is None and is_tick_job(job, spec.prefix):
            continue
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
