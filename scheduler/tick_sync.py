"""Sync in tick mode (issue 17): the registry documents are the schedules, one job is the clock.

In tick mode (`SCION_SCHEDULER_MODE=ticks`) a sync plans and applies the same way as in jobs mode
(`scheduler.sync`), against another desired state:

* one registry document per schedule (`scheduler.registry`), owned by this deployment
  (`owner` = its job prefix); a change is one write, batched 500 to a commit and committed in
  parallel, and a document in line is not written at all (the tick advances `next_fire_time`,
  which a needless rewrite would rewind);
* one Cloud Scheduler job, the tick (`scheduler.ticks.tick_job_id`), created or repaired like
  any job (a tick job under the ID earlier versions gave it, `{job_prefix}tick`, is found by its
  message and deleted like a per-schedule job, once the tick has fired);
* no per-schedule job: those of the schedules synced are deleted once the tick job has fired
  (a sync before that keeps them, listed as kept), and then only after their documents are
  written, so that every slot keeps a publisher on time (a slot published by both has one
  execution ID, and the worker's claim keeps one fire: the cut-over rule).

A plan reads the sync manifest (`scheduler.tick_manifest`: each document's `sync_digest` as
last written, kept in the same commits as the documents), the real digests of the manifest's
buckets that disagree with the schedules (or of every document with `verify`), then only what
it compares (`schedule_id`, `definition`, `fingerprint`, `paused_since`) of the documents whose
digest differs, and lists the location's jobs once. Past-due one-shots are
fired by the sync as in jobs mode (`scheduler.one_shots.sync_fire`), the document standing for
the job: written or changed now, it has not published its slot.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1

from scheduler import ownership
from scheduler.jobs import ALL_FIELDS, JobSpec, JobState, diff_mask, is_paused
from scheduler.logs import get_logger
from scheduler.model import FieldError, Schedule, ValidationError
from scheduler.naming import is_owned, job_id_of, job_name
from scheduler.one_shots import is_done_with
from scheduler.registry import (
    ScheduleRegistry,
    definition_of,
    document_id,
    sync_digest,
)
from scheduler.sync import ApplyResult, StepOutcome, Syncer, error_text, failure_of
from scheduler.sync_plan import Plan, Step, is_tick_job
from scheduler.tick_manifest import BATCH, SyncManifest, chunks
from scheduler.tick_steps import DocState, DocumentStep, Write, schedule_steps
from scheduler.ticks import TICK_SCHEDULE, tick_job_id

log = get_logger(__name__)

# What it then reads of each document whose digest is not the one its schedule wants.
PLAN_FIELDS = ("schedule_id", "definition", "fingerprint", "paused_since", "owner")

def tick_job(spec: JobSpec) -> scheduler_v1.Job:
    """The deployment's tick job: every minute, the reserved tick schedule's message."""
    job = spec.desired_job(TICK_SCHEDULE)
    job.name = job_name(spec.location_path, tick_job_id(spec.prefix))
    return job


def tick_has_fired(job: scheduler_v1.Job | None) -> bool:
    """Whether the tick job has fired since it was last created or changed: from then on every
    slot is published by a tick on time, and a per-schedule job may go (the cut-over rule)."""
    if job is None or is_paused(job):
        return False
    pb = scheduler_v1.Job.pb(job)
    attempted, changed = pb.last_attempt_time, pb.user_update_time
    return (attempted.seconds, attempted.nanos) > (changed.seconds, changed.nanos) > (0, 0)


def tick_job_steps(job: scheduler_v1.Job | None, spec: JobSpec) -> list[Step]:
    """The steps that bring the tick job in line (created, repaired, enabled)."""
    desired = tick_job(spec)
    job_id = tick_job_id(spec.prefix)
    if job is None:
        return [Step("create", job_id, None, "no tick job (tick mode)", job=desired)]
    steps = []
    mask = ALL_FIELDS if job.state == JobState.UPDATE_FAILED else diff_mask(job, desired)
    if mask:
        steps.append(Step("update", job_id, None, "tick job differs", update_mask=mask,
                          job=desired))
    if is_paused(job):
        steps.append(Step("resume", job_id, None, "the tick job must run (tick mode)"))
    return steps


def _wanted(schedules: Sequence[Schedule]) -> dict[str, Schedule]:
    by_doc: dict[str, Schedule] = {}
    duplicates = []
    for schedule in schedules:
        doc_id = document_id(schedule.id)
        if doc_id in by_doc:
            duplicates.append(FieldError(schedule.id, "id", "duplicate schedule ID in this set"))
        by_doc[doc_id] = schedule
    if duplicates:
        raise ValidationError(duplicates)
    return by_doc


def compute_tick_plan(states: dict[str, DocState], jobs: Iterable[scheduler_v1.Job],
                      schedules: Sequence[Schedule], spec: JobSpec, *, now: datetime,
                      grace: timedelta, prune: bool = True, keep: Collection[str] = (),
                      list_retries: Sequence[str] = (), in_sync: Collection[str] = ()) -> Plan:
    """Compare this deployment's documents (`states`, by document ID; those in `in_sync` were
    found in line by their digest) and jobs with the schedules; no API calls. Documents and
    per-schedule jobs without a schedule are deleted only with `prune`, and never those of a
    schedule ID in `keep` (a refused hub item's)."""
    by_doc = _wanted(schedules)
    steps: list[Step] = []
    kept: set[str] = set()
    held: set[str] = set()
    expired: list[str] = []
    unchanged = 0
    for doc_id, schedule in by_doc.items():
        if doc_id in in_sync:
            unchanged += 1
            continue
        state = states.get(doc_id)
        job_id = spec.job_id(schedule.id)
        found = schedule_steps(schedule, state, job_id, now=now, grace=grace,
                               signing_key=spec.signing_key)
        if state is None and is_done_with(schedule, now, grace):
            expired.append(schedule.id)
        elif not found and state is not None:
            unchanged += 1
        steps.extend(found)
    for doc_id, state in states.items():
        if doc_id in by_doc:
            continue
        job_id = spec.job_id(state.schedule_id)
        if state.schedule_id in keep:
            held.add(job_id)
        elif prune:
            steps.append(DocumentStep("delete", job_id, state.schedule_id, "no schedule"))
        else:
            kept.add(job_id)
    job_steps, foreign = _job_plan(jobs, by_doc, spec, prune=prune, keep=keep, kept=kept,
                                   held=held)
    steps.sort(key=lambda s: s.job_id)
    return Plan(tuple(steps + job_steps), unchanged, tuple(sorted(kept)), foreign,
                tuple(sorted(expired)), tuple(list_retries), prune, tuple(sorted(held)))


def _job_plan(jobs: Iterable[scheduler_v1.Job], by_doc: dict[str, Schedule], spec: JobSpec, *,
              prune: bool, keep: Collection[str], kept: set[str],
              held: set[str]) -> tuple[list[Step], int]:
    """The tick job's steps, then the deletes of per-schedule jobs (a schedule synced here no
    longer needs its job; one without a schedule goes only with `prune`)."""
    tick_id = tick_job_id(spec.prefix)
    tick: scheduler_v1.Job | None = None
    deletes: list[Step] = []
    # Publishers that the tick replaces: deleted only once it has fired.
    replaced: list[Step] = []
    foreign = 0
    for job in jobs:
        job_id = job_id_of(job.name)
        if not is_owned(job_id, spec.prefix):
            foreign += 1
            continue
        if job_id == tick_id:
            tick = job
            continue
        if is_tick_job(job, spec.prefix):  # by its message: the tick under its former ID
            replaced.append(Step("delete", job_id, None, f"the tick job is now {tick_id}"))
            continue
        owner = spec.owner_schedule_id(job)
        if owner is not None and owner in keep:
            held.add(job_id)
        elif owner is not None and document_id(owner) in by_doc:
            replaced.append(Step("delete", job_id, owner,
                                 "tick mode: the tick publishes its schedule's fires"))
        elif prune:
            deletes.append(Step("delete", job_id, owner, "no schedule" if owner is not None
                                else "under the prefix but names no schedule"))
        else:
            kept.add(job_id)
    if tick_has_fired(tick):
        deletes += replaced
    else:
        # Until a tick has fired, a slot before the first one would be left to a late tick.
        kept |= {s.job_id for s in replaced}
    deletes.sort(key=lambda s: s.job_id)
    return tick_job_steps(tick, spec) + deletes, foreign


class TickSyncer:
    """Plans and applies tick mode's syncs: documents through `registry`, the jobs (the tick,
    and deletes of per-schedule ones) through `jobs`, the jobs-mode `Syncer`."""

    def __init__(self, registry: ScheduleRegistry, jobs: Syncer, owner: str) -> None:
        self.registry = registry
        self.jobs = jobs
        self.owner = owner
        self.manifest = SyncManifest(registry, owner)

    @property
    def spec(self) -> JobSpec:
        """The deployment's `JobSpec`."""
        return self.jobs.spec

    def states(self, doc_ids: Iterable[str]) -> dict[str, DocState]:
        """The documents a plan must look at closer, by document ID (batched reads)."""
        refs = [self.registry.collection.document(doc_id) for doc_id in doc_ids]
        states = {}
        for start in range(0, len(refs), BATCH):
            for snapshot in self.registry.client.get_all(refs[start:start + BATCH],
                                                          field_paths=PLAN_FIELDS):
                if snapshot.exists:
                    states[snapshot.id] = _state(snapshot.to_dict() or {})
        return states

    def state(self, schedule_id: str) -> DocState | None:
        """One schedule's document as a plan reads it; None when absent or not this
        deployment's."""
        snapshot = self.registry.collection.document(document_id(schedule_id)).get(
            field_paths=PLAN_FIELDS)
        if not snapshot.exists:
            return None
        state = _state(snapshot.to_dict() or {})
        return state if state.owner in (None, self.owner) else None

    def plan(self, schedules: Sequence[Schedule], *, prune: bool = True,
             keep: Collection[str] = (), verify: bool = False) -> Plan:
        """Read the digests (`SyncManifest.digests`), the documents that differ, and list the jobs
        once, then compare (`compute_tick_plan`)."""
        now = self.jobs.clock()
        done = {document_id(s.id) for s in schedules if is_done_with(s, now, self.jobs.grace)}
        desired = {document_id(s.id): sync_digest(definition_of(s), s.paused) for s in schedules
                   if document_id(s.id) not in done}
        # A fired one-shot's document is deleted if it is there; none is wanted.
        ignored = {document_id(i) for i in keep} | done if prune else None
        digests = self.manifest.digests(desired, verify=verify, ignored=ignored)
        in_sync = {doc_id for doc_id, digest in desired.items() if digests.get(doc_id) == digest}
        states = self.states(doc_id for doc_id in digests if doc_id not in in_sync)
        jobs = list(self.jobs.iter_jobs())
        return replace(compute_tick_plan(states, jobs, schedules, self.spec,
                                         now=now, grace=self.jobs.grace,
                                         prune=prune, keep=keep, in_sync=in_sync),
                       schedules=tuple(schedules))

    def plan_one(self, schedule: Schedule) -> Plan:
        """The steps of one schedule after reading its document alone (no listing)."""
        now = self.jobs.clock()
        state = self.state(schedule.id)
        steps = schedule_steps(schedule, state, self.spec.job_id(schedule.id), now=now,
                               grace=self.jobs.grace, signing_key=self.spec.signing_key)
        expired = (schedule.id,) if state is None and is_done_with(
            schedule, now, self.jobs.grace) else ()
        return Plan(tuple(steps), unchanged=int(state is not None and not steps),
                    expired=expired, prune=False)

    def apply(self, plan: Plan) -> ApplyResult:
        """Write the documents, publish the sync's fires, bring the tick job in line, and only
        then delete per-schedule jobs (each only when its schedule's document was written)."""
        started = time.monotonic()
        tick_id = tick_job_id(self.spec.prefix)
        documents = [s for s in plan.steps if isinstance(s, DocumentStep)]
        fires = [s for s in plan.steps if s.kind == "fire"]
        others = [s for s in plan.steps if not isinstance(s, DocumentStep) and s.kind != "fire"]
        tick = [s for s in others if s.job_id == tick_id]
        jobs = [s for s in others if s.job_id != tick_id]
        done = self.write_documents(documents)
        done += self._jobs(fires)
        ticked = self._jobs(tick)
        done += ticked
        failed = {o.step.schedule_id for o in done if not o.ok}
        if not all(o.ok for o in ticked):
            why = "not attempted: the tick job is not in place"
            done += tuple(StepOutcome(s, "skipped", why) for s in jobs)
        else:
            deletes = [s for s in jobs if s.schedule_id is None or s.schedule_id not in failed]
            done += tuple(StepOutcome(s, "skipped", "not attempted: its document was not written")
                          for s in jobs if s.schedule_id is not None and s.schedule_id in failed)
            done += self._jobs(deletes)
        order = {id(s): i for i, s in enumerate(plan.steps)}
        outcomes = tuple(sorted(done, key=lambda o: order.get(id(o.step), len(order))))
        result = ApplyResult(plan, outcomes, time.monotonic() - started)
        log.info("tick mode sync applied", steps=len(outcomes), failed=len(result.failed),
                 documents=len(documents), seconds=round(result.seconds, 3))
        return result

    def _jobs(self, steps: Sequence[Step]) -> tuple[StepOutcome, ...]:
        """Job steps and fires through the jobs-mode `Syncer` (rate limit, retries)."""
        return self.jobs.apply(Plan(tuple(steps), prune=False)).outcomes if steps else ()

    def write_documents(self, steps: Sequence[DocumentStep]) -> tuple[StepOutcome, ...]:
        """Commit the steps' writes (`commit`)."""
        now = self.jobs.clock()
        return self.commit([(step, *step.write(now, self.owner)) for step in steps])

    def commit(self, writes: Sequence[tuple[Step, Write, dict[str, Any]]]
               ) -> tuple[StepOutcome, ...]:
        """Commit each step's document write with its manifest entry in the same commit
        (`scheduler.tick_manifest.chunks`: grouped by bucket, within `BATCH` writes), the
        commits in parallel (at most the sync's concurrency); a failed commit fails its own
        steps only, and leaves their documents and manifest entries as they were."""
        if not writes:
            return ()
        doc_ids = [document_id(_schedule_id(step)) for step, _, _ in writes]
        batches = [[writes[i] for i in group] for group in chunks(doc_ids)]
        workers = min(self.jobs.concurrency, len(batches))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scion-docs") as pool:
            results = list(pool.map(self._commit, batches))
        done = {id(outcome.step): outcome for outcomes in results for outcome in outcomes}
        return tuple(done[id(step)] for step, _, _ in writes)

    def _commit(self, writes: Sequence[tuple[Step, Write, dict[str, Any]]]) -> list[StepOutcome]:
        """One commit; when a create met a document that exists (`gexc.Conflict`), the writes
        again without those of another deployment's documents, which fail (`_foreign`)."""
        error = self._try_commit(writes)
        refused: list[StepOutcome] = []
        if isinstance(error, gexc.Conflict) and any(kind == "create" for _, kind, _ in writes):
            writes, refused = self._foreign(writes)
            error = self._try_commit(writes) if writes else None
        if error is not None:  # a failed commit fails its own steps, never the sync
            text = error_text(error)
            log.warning("registry documents not written", documents=len(writes), error=text)
            failure, http_status = failure_of(error)
            return refused + [StepOutcome(step, "failed", text, failure=failure,
                                          http_status=http_status) for step, _, _ in writes]
        return refused + [StepOutcome(step, "ok") for step, _, _ in writes]

    def _foreign(self, writes: Sequence[tuple[Step, Write, dict[str, Any]]]
                 ) -> tuple[list[tuple[Step, Write, dict[str, Any]]], list[StepOutcome]]:
        """The writes without the creates of documents that another deployment owns (two
        deployments sharing a collection prefix, each with this schedule ID: one document ID),
        each of those a failed outcome, so that no sync overwrites another's schedule; a
        create of a document there already with no owner (written before the field) or with
        this one becomes a set."""
        creates = [document_id(_schedule_id(s)) for s, kind, _ in writes if kind == "create"]
        refs = [self.registry.collection.document(doc_id) for doc_id in creates]
        owners = {s.id: (s.to_dict() or {}).get("owner") for s in
                  self.registry.client.get_all(refs, field_paths=["owner"]) if s.exists}
        kept: list[tuple[Step, Write, dict[str, Any]]] = []
        refused: list[StepOutcome] = []
        for step, kind, fields in writes:
            doc_id = document_id(_schedule_id(step))
            owner = owners.get(doc_id) if kind == "create" else None
            if owner is not None and owner != self.owner:
                refused.append(ownership.refused(step, owner, self.owner))
            else:
                kept.append((step, "set" if kind == "create" and doc_id in owners else kind,
                             fields))
        return kept, refused

    def _try_commit(self, writes: Sequence[tuple[Step, Write, dict[str, Any]]]
                    ) -> Exception | None:
        """Commit the writes and their manifest entries in one batch; the error, if any."""
        batch = self.registry.client.batch()
        collection = self.registry.collection
        entries: list[tuple[str, str | None]] = []
        for step, kind, fields in writes:
            doc_id = document_id(_schedule_id(step))
            ref = collection.document(doc_id)
            if kind == "delete":
                batch.delete(ref)
                entries.append((doc_id, None))
                continue
            if kind == "update":
                batch.update(ref, fields)
            elif kind == "create":  # fails when the document exists: see `_foreign`
                batch.create(ref, fields)
            else:
                batch.set(ref, fields)
            entries.append((doc_id, str(fields["sync_digest"])))
        self.manifest.add(batch, entries)
        try:
            batch.commit()
        except Exception as exc:  # returned: a failed commit fails its own steps only
            return exc
        return None



def _schedule_id(step: Step) -> str:
    assert step.schedule_id is not None
    return step.schedule_id


def _state(data: dict[str, Any]) -> DocState:
    paused_since = data.get("paused_since")
    owner = data.get("owner")
    return DocState(str(data.get("schedule_id", "")), str(data.get("definition", "")),
                    str(data.get("fingerprint", "")), paused_since,
                    None if owner is None else str(owner))
