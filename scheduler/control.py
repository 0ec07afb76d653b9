"""`SchedulerControl`: the one object the hub holds to keep Cloud Scheduler in line with its
schedules, and the operations behind the `scion-scheduler` control commands.

    control = SchedulerControl.from_env()           # or from_env(project=..., topic=...)
    control.upsert(schedule)                         # a schedule was created or edited
    control.remove(schedule_id)                      # a schedule was deleted
    control.reconcile(all_schedules)                 # periodic drift repair (prunes by default)
    control.run_now(schedule_id)                     # a manual fire, published at once
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from scheduler import gcp, groves
from scheduler.config import Settings
from scheduler.contract import (
    ATTR_FIRE_TIME,
    ATTR_SIGNATURE,
    ATTR_TRIGGER,
    ContractError,
    Message,
    build_message,
    decode_message,
    execution_id,
    sign,
)
from scheduler.errors import SchedulerError
from scheduler.job_readback import JobInfo, job_info
from scheduler.jobs import JobSpec, attributes_of, diff_mask, is_paused
from scheduler.logs import get_logger
from scheduler.model import Schedule, format_instant
from scheduler.naming import job_id_of
from scheduler.ownership import with_refused, without_foreign
from scheduler.registry import ScheduleRegistry
from scheduler.sync import ApplyResult, Failure, StepOutcome, Syncer
from scheduler.sync_plan import Plan, Step, StepKind

log = get_logger(__name__)

PUBLISH_TIMEOUT_SECONDS = 60.0


class JobNotFound(SchedulerError, LookupError):
    """The schedule has no job in Cloud Scheduler."""


@dataclass(frozen=True)
class RunResult:
    """A manual fire that was published."""

    schedule_id: str
    job_id: str
    fire_time: datetime
    execution_id: str
    message_id: str

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-compatible data."""
        return {
            "schedule_id": self.schedule_id, "job_id": self.job_id,
            "fire_time": format_instant(self.fire_time), "execution_id": self.execution_id,
            "message_id": self.message_id,
        }


def _fields_of(job: Any, paths: Sequence[str]) -> scheduler_v1.Job:
    """Only `paths` of `job` (and its name): an UpdateJob body without output-only fields."""
    restored = scheduler_v1.Job(name=job.name)
    field_mask_pb2.FieldMask(paths=list(paths)).MergeMessage(
        scheduler_v1.Job.pb(job), scheduler_v1.Job.pb(restored), replace_message_field=True)
    return restored


class SchedulerControl:
    """Settings plus the Cloud Scheduler and Pub/Sub clients, behind the control operations.

    Clients passed in are the caller's to close; clients this object creates are closed by
    `close()` (or by leaving a `with` block)."""

    def __init__(self, settings: Settings, *, scheduler_client: Any = None, publisher: Any = None,
                 clock: Callable[[], datetime] | None = None,
                 registry: ScheduleRegistry | None = None) -> None:
        settings.require("project", "location", "topic")
        self.settings = settings
        # Written on every job change, for the worker's audit (`scheduler.registry`).
        self.registry = registry
        self._owns_scheduler = scheduler_client is None
        self._owns_publisher = publisher is None
        self._publisher = publisher
        self._publisher_lock = threading.Lock()
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        client = (
            scheduler_client
            if scheduler_client is not None
            else gcp.cloud_scheduler_client(settings)
        )
        self.syncer = Syncer.from_settings(client, settings, clock=self.clock,
                                           publish=self._publish)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> SchedulerControl:
        """Settings from the environment (`SCION_SCHEDULER_*`), `overrides` winning; fails with
        `ConfigError` naming every missing required setting (project, location, topic)."""
        return with_registry(Settings.from_env(environ, **overrides))

    @property
    def spec(self) -> JobSpec:
        """The `JobSpec` (location, topic, prefix, retry config) jobs are built from."""
        return self.syncer.spec

    # -- sync --------------------------------------------------------------------------------

    def plan(self, schedules: Sequence[Schedule], *, prune: bool = True,
             keep: Collection[str] = (), verify: bool = False) -> Plan:
        """What `reconcile` would change (one paged listing, no writes); the jobs of the
        schedule IDs in `keep` are left as they are, even with `prune`. `verify` (read every
        job) is what this mode always does; tick mode reads less without it."""
        return replace(self.syncer.plan(schedules, prune=prune, keep=keep),
                       schedules=tuple(schedules))

    def apply(self, plan: Plan) -> ApplyResult:
        """Run a plan's steps; see `scheduler.sync.Syncer.apply`. A plan of a full set also
        brings the registry in line: documents held or deleted before their jobs are written,
        settled after (see `scheduler.registry` for why in that order)."""
        if self.registry is None or plan.schedules is None:
            return self.syncer.apply(plan)
        previous = self.registry.load()
        # Another deployment's documents are left alone, and their schedules fail.
        foreign = self.registry.foreign_owners(s.id for s in plan.schedules if s.id not in previous)
        doing, refused = without_foreign(plan, foreign, self.spec.prefix)
        deleted = {s.schedule_id for s in doing.steps if s.kind == "delete" and s.schedule_id}
        touched = {s.schedule_id for s in doing.steps if s.schedule_id} - deleted
        self.registry.delete(deleted & previous.keys())
        previous.update(self.registry.hold(
            [previous[i] for i in touched if i in previous], self.clock()))
        result = self.syncer.apply(doing)
        failed = {o.step.schedule_id for o in result.outcomes if not o.ok} | foreign.keys()
        self.registry.settle([s for s in plan.schedules if s.id not in failed | deleted],
                             previous, self.clock())
        return with_refused(result, plan, refused)

    def reconcile(self, schedules: Sequence[Schedule], *, prune: bool = True,
                  verify: bool = False) -> ApplyResult:
        """Plan and apply: jobs edited by hand are put back, missing ones created, and with
        `prune` jobs whose schedule is gone are deleted. `result.plan` holds the plan."""
        return self.apply(self.plan(schedules, prune=prune, verify=verify))

    def upsert(self, schedule: Schedule) -> ApplyResult:
        """Bring one schedule's job in line: one GetJob, then at most one create or update, plus
        a pause or resume when needed (a past one-shot's job is deleted instead).

        Cloud Scheduler cannot create a job paused nor update and pause in one call, so two
        writes are ordered to never let the job fire against the schedule midway: create then
        pause, pause then update, update then resume. A failed second write is tried once more;
        if it still fails, the first is undone (`_undo`), so a failed upsert leaves the job as it
        was, or paused, never enabled against a paused schedule. The undo steps' outcomes follow
        the others in the result. A one-shot's own fire (`scheduler.one_shots.sync_fire`)
        goes out last, whatever became of the job. The registry document is held before a job
        write and settled once the job matches (`scheduler.registry`)."""
        plan, previous = self.syncer.plan_one(schedule)
        fires = tuple(step for step in plan.steps if step.kind == "fire")
        job_plan = replace(plan, steps=plan.steps[:-len(fires)]) if fires else plan
        job = self._registered(schedule, job_plan,
                               lambda: self._upsert_job(job_plan, previous, schedule))
        if not fires or any(o.failure is Failure.OWNED for o in job.outcomes):
            return job
        fired = self.apply(Plan(fires, prune=False))
        return ApplyResult(plan, job.outcomes + fired.outcomes, job.seconds + fired.seconds)

    def _registered(self, schedule: Schedule, plan: Plan,
                    write: Callable[[], ApplyResult]) -> ApplyResult:
        """`write()` the job of `plan`, with the schedule's registry document held before (when
        the plan writes anything) and settled after a success."""
        registry = self.registry
        if registry is None:
            return write()
        entry = registry.get(schedule.id)
        owner = registry.foreign_owners([schedule.id]).get(schedule.id) if entry is None else None
        if owner is not None:  # another deployment's document: neither it nor the job is written
            return ApplyResult(plan, without_foreign(plan, {schedule.id: owner},
                                                     self.spec.prefix)[1])
        known = {schedule.id: entry} if entry is not None else {}
        if plan.steps and entry is not None:
            known.update(registry.hold([entry], self.clock()))
        result = write()
        if result.ok:
            registry.settle([schedule], known, self.clock())
        return result

    def _upsert_job(self, plan: Plan, previous: Any, schedule: Schedule) -> ApplyResult:
        if len(plan.steps) < 2:
            return self.apply(plan)
        started = time.monotonic()
        first, second = plan.steps
        done = self._apply_one(first)
        if not done.ok:
            outcomes = [
                done,
                StepOutcome(second, "skipped", f"not attempted: its {first.kind} failed"),
            ]
            if first.kind == "create":
                # A create that timed out may still have taken effect, leaving an enabled job
                # for a paused schedule; deleting a job that does not exist is success.
                outcomes += self._undo(done, previous, schedule)
            return ApplyResult(plan, tuple(outcomes), time.monotonic() - started)
        then = self._apply_one(second)
        if then.ok:
            return ApplyResult(plan, (done, then), time.monotonic() - started)
        log.warning(
            "second write of an upsert failed; trying it once more",
            schedule_id=schedule.id,
            job_id=second.job_id,
            step=second.kind,
            error=then.error,
        )
        again = self._apply_one(second)
        if again.ok:
            note = "; ".join(
                filter(None, [f"succeeded on a second try after: {then.error}", again.note])
            )
            retried = StepOutcome(second, "ok", retries=then.retries + again.retries, note=note)
            return ApplyResult(plan, (done, retried), time.monotonic() - started)
        failed = replace(again, retries=then.retries + again.retries,
                         note=f"failed twice; first: {then.error}")
        undo = self._undo(done, previous, schedule)
        return ApplyResult(plan, (done, failed, *undo), time.monotonic() - started)

    def _apply_one(self, step: Step) -> StepOutcome:
        return self.apply(Plan((step,), prune=False)).outcomes[0]

    def _undo(
        self, done: StepOutcome, previous: Any, schedule: Schedule
    ) -> tuple[StepOutcome, ...]:
        """Revert the first step of a failed upsert towards `previous` (the job as it was, None
        when there was none): delete a job just created; after an update whose resume failed,
        pause (a resume that timed out may have taken effect) and restore the fields the update
        changed; lift a pause only while the job verifiably keeps its old definition (were the
        failed update applied after all, the new definition would fire although the schedule
        is paused). Stops at the first undo step that fails."""
        step = done.step
        undo: list[Step] = []
        if step.kind == "create":
            undo.append(Step("delete", step.job_id, step.schedule_id,
                             "undo: the job was created for a paused schedule and could not be "
                             "paused"))
        elif step.kind == "update" and previous is not None:
            undo.append(Step("pause", step.job_id, step.schedule_id,
                             "undo: keep the job paused, its resume having failed", paused=True))
            undo.append(Step("update", step.job_id, step.schedule_id,
                             "undo: restore the job's definition, its resume having failed",
                             update_mask=step.update_mask, paused=True,
                             job=_fields_of(previous, step.update_mask)))
        elif step.kind == "pause" and previous is not None and not is_paused(previous):
            resume = self._unpause(step, previous)
            undo.extend([resume] if resume is not None else [])
        outcomes: list[StepOutcome] = []
        for undo_step in undo:
            reverted = self._apply_one(undo_step)
            outcomes.append(reverted)
            if not reverted.ok:
                log.error("could not undo a failed upsert; the next reconcile repairs the job",
                          schedule_id=schedule.id, job_id=step.job_id, undo=undo_step.kind,
                          error=reverted.error)
                break
        return tuple(outcomes)

    def _unpause(self, pause: Step, previous: Any) -> Step | None:
        try:
            current = self.syncer.get_job(pause.job_id)
        except Exception as exc:  # unreadable: staying paused fires nothing
            log.warning("left a job paused after a failed upsert: cannot read it back",
                        schedule_id=pause.schedule_id, job_id=pause.job_id, error=str(exc))
            return None
        if current is None or not is_paused(current) or diff_mask(current, previous):
            log.warning("left a job paused after a failed upsert: it no longer has its old "
                        "definition", schedule_id=pause.schedule_id, job_id=pause.job_id)
            return None
        return Step("resume", pause.job_id, pause.schedule_id,
                    "undo: lift the pause, the update it preceded having failed")

    def remove(self, schedule_id: str) -> ApplyResult:
        """Delete a schedule's job; a job that is already gone is success."""
        if self.registry is not None:
            self.registry.forget(schedule_id)
        return self._single("delete", schedule_id, "schedule removed")

    def pause(self, schedule_id: str) -> ApplyResult:
        """Pause a schedule's job (the next reconcile follows the schedule's own `paused`)."""
        entry = self.registry.get(schedule_id) if self.registry is not None else None
        if self.registry is not None and entry is not None:
            self.registry.hold([entry], self.clock())
        return self._single("pause", schedule_id, "paused on request")

    def resume(self, schedule_id: str) -> ApplyResult:
        """Resume a schedule's job; its slots are owed again from then on."""
        result = self._single("resume", schedule_id, "resumed on request")
        entry = self.registry.get(schedule_id) if self.registry is not None else None
        if self.registry is not None and entry is not None and result.ok:
            self.registry.resume(entry, self.clock())
        return result

    def _single(self, kind: StepKind, schedule_id: str, reason: str) -> ApplyResult:
        step = Step(
            kind, self.spec.job_id(schedule_id), schedule_id, reason, paused=kind == "pause"
        )
        return self.apply(Plan((step,), prune=False))

    # -- inspect and run ---------------------------------------------------------------------

    def list_jobs(self) -> list[JobInfo]:
        """Every job under the prefix (one paged listing), by job ID, each with its next fire."""
        now = self.clock()
        return sorted((job_info(job, self.spec, now, 1) for job in self.schedule_jobs()),
                      key=lambda info: info.job_id)

    def plan_grove(self, listing: groves.GroveListing, grove: str) -> groves.GrovePlan:
        """A grove's plan (`scheduler.groves.plan_grove`): its jobs in line with its listing."""
        return groves.plan_grove(self.syncer.iter_jobs(), listing, grove, self.spec,
                                 now=self.syncer.clock(), grace=self.syncer.grace)

    def schedule_jobs(self) -> list[Any]:
        """The jobs under the prefix, as `list_jobs` and the HTTP API read them."""
        return self.syncer.owned_jobs()

    def job_of(self, schedule_id: str) -> Any:
        """A schedule's job (one GetJob), None when it has none."""
        return self.syncer.get_job(self.spec.job_id(schedule_id))

    def describe(self, schedule_id: str, *, fires: int = 5) -> JobInfo:
        """A schedule's job: its state, and its next `fires` fire times (none when paused)."""
        job = self._get(schedule_id)
        return job_info(job, self.spec, self.clock(), fires)

    def run_now(self, schedule_id: str, schedule: Schedule | None = None) -> RunResult:
        """Fire once now: publish the job's message with `trigger=manual` and `fire-time=now`
        straight to the topic. The job must exist. With `schedule`, the message is built from
        it; otherwise from the job's own (verified) message."""
        job = self._get(schedule_id)
        job_id = job_id_of(job.name)
        fire_time = self.clock()
        if schedule is not None:
            if schedule.id != schedule_id:
                raise ValueError(f"schedule {schedule.id!r} given for run of {schedule_id!r}")
            message = build_message(schedule, signing_key=self.settings.signing_key,
                                    trigger="manual", fire_time=fire_time)
        else:
            message = self._manual_from_job(job, schedule_id, fire_time)
        message_id = self._publish(message)
        run = RunResult(
            schedule_id,
            job_id,
            fire_time,
            execution_id(schedule_id, fire_time, "manual"),
            message_id,
        )
        log.info(
            "manual fire published",
            schedule_id=schedule_id,
            fire_time=format_instant(fire_time),
            execution_id=run.execution_id,
            message_id=message_id,
        )
        return run

    def _publish(self, message: Message) -> str:
        """Publish a fire message straight to the topic; its message ID."""
        future = self._publisher_client().publish(
            self.settings.topic_path, message.data, **dict(message.attributes))
        return str(future.result(timeout=PUBLISH_TIMEOUT_SECONDS))

    def _manual_from_job(self, job: Any, schedule_id: str, fire_time: datetime) -> Message:
        key = self.settings.signing_key
        data = bytes(job.pubsub_target.data) if "pubsub_target" in job else b""
        attributes = dict(attributes_of(job))
        # Decoding verifies the stored message (and its signature), so a hand-edited job cannot
        # smuggle an action into a manual run.
        fire = decode_message(data, attributes, signing_key=key)
        if fire.schedule_id != schedule_id:
            raise ContractError(f"job {job_id_of(job.name)} carries schedule {fire.schedule_id!r}, "
                                f"not {schedule_id!r}")
        attributes.pop(ATTR_SIGNATURE, None)
        attributes[ATTR_TRIGGER] = "manual"
        attributes[ATTR_FIRE_TIME] = format_instant(fire_time)
        if key:
            attributes[ATTR_SIGNATURE] = sign(data, attributes, key)
        return Message(data, attributes)

    def _get(self, schedule_id: str) -> Any:
        job = self.job_of(schedule_id)
        if job is None:
            raise JobNotFound(f"no job for schedule {schedule_id!r} "
                              f"(looked for {self.spec.job_id(schedule_id)})")
        return job

    def _publisher_client(self) -> Any:
        # The hub may run manual fires from several threads; one publisher serves them all.
        with self._publisher_lock:
            if self._publisher is None:
                self._publisher = gcp.publisher_client(self.settings)
            return self._publisher

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the clients this object created."""
        if self._owns_publisher and self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._owns_scheduler:
            self.syncer.client.transport.close()

    def __enter__(self) -> SchedulerControl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def with_registry(settings: Settings, **clients: Any) -> SchedulerControl:
    """A `SchedulerControl` that keeps the schedule registry for the audit whenever Firestore
    is there: always on Google Cloud (the workers' ledger needs it), and against the Cloud
    Scheduler emulator only when a Firestore emulator is configured too."""
    registry = None
    if settings.firestore_emulator_host or not settings.cloud_scheduler_emulator_host:
        registry = ScheduleRegistry(gcp.firestore_client(settings),
                                    settings.collection_prefix or "scion_",
                                    settings.allowed_targets, owner=settings.job_prefix)
    if settings.mode == "ticks":  # the schedules live in the registry (`scheduler.tick_control`)
        from scheduler.tick_control import TickControl

        return TickControl(settings, registry=registry, **clients)
    return SchedulerControl(settings, registry=registry, **clients)
