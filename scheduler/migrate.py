"""`scion-scheduler migrate --to ticks|jobs`: move a deployment between modes (issue 17) without
a missed or a doubled fire.

The cut-over rule: a slot published by both a job and the tick has the same execution ID
(`scheduler.contract.execution_id(schedule, slot)`: the tick publishes the very message the job
would, with the slot's exact fire time), so the worker's per-fire claim runs it once. Hence the
new publisher is put in place, and only then the old one removed, so that every slot has at
least one publisher throughout:

* to ticks: every document gets `next_fire_time` (the first slot from now on: the jobs published
  the earlier ones) and `owner`; the tick job is created; once it has fired (the next whole
  minute: `tick_has_fired`), the per-schedule jobs are deleted. Deleting them any earlier would
  leave a slot before the first tick to a late tick: late enough, under `catchup: none`, to be
  recorded missed. A tick-mode sync keeps the same rule.
* to jobs: every document's job is created (paused where the document owes nothing, with the
  sync's own fire of a one-shot whose job slot has passed, as in any jobs-mode sync); once all
  exist, the tick job is deleted. A job fires every slot after its creation on time, and until
  then the tick does.

A failed step stops the migration before anything is removed; running it again continues.
The source of truth is the deployment's registry (`scheduler.registry`), which both modes keep:
a per-schedule job without a document is left in place and reported (sync it first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Literal

from scheduler.naming import job_id_of
from scheduler.registry import Entry, document_of, first_slot
from scheduler.sync import ApplyResult, StepOutcome
from scheduler.sync_plan import Plan, Step, compute_plan, is_tick_job
from scheduler.tick_control import TickControl
from scheduler.tick_steps import DocumentStep
from scheduler.tick_sync import tick_has_fired, tick_job_steps
from scheduler.ticks import tick_job_id

Target = Literal["ticks", "jobs"]

# How long migrate waits for the new tick job's first fire (the next whole minute).
TICK_WAIT = timedelta(minutes=3)
TICK_POLL_SECONDS = 2.0


def migrate(control: TickControl, to: Target,
            sleep: Callable[[float], None] = time.sleep) -> ApplyResult:
    """Move the deployment `control` manages (a tick-mode control: it can write both) to
    mode `to`; the outcomes of every step, in the order they ran."""
    started = time.monotonic()
    # The documents are written outside a sync's commits: the next sync reads them all.
    control.ticks.manifest.drop()
    entries = control.ticks.registry.load()
    steps, outcomes = (_to_ticks if to == "ticks" else _to_jobs)(control, entries, sleep)
    return ApplyResult(Plan(tuple(steps), prune=False), tuple(outcomes),
                       time.monotonic() - started)


def _to_ticks(control: TickControl, entries: dict[str, Entry],
              sleep: Callable[[float], None]) -> tuple[list[Step], list[StepOutcome]]:
    ticks, spec = control.ticks, control.spec
    now = control.clock()
    documents = []
    for entry in entries.values():
        owed = entry.owed
        fields = document_of(owed.schedule, owed.owed_since, owed.paused_since, now, ticks.owner)
        fields["next_fire_time"] = first_slot(owed.schedule, now, owed.paused_since)
        documents.append((entry.schedule_id, fields))
    doc_steps = [DocumentStep("update", spec.job_id(sid), sid,
                              "tick mode: next fire time from the cut-over")
                 for sid, _ in documents]
    outcomes = list(ticks.commit([(step, "set", fields) for step, (_, fields)
                                  in zip(doc_steps, documents, strict=True)]))
    jobs = ticks.jobs.owned_jobs()
    tick_id = tick_job_id(spec.prefix)
    tick_job = next((j for j in jobs if job_id_of(j.name) == tick_id), None)
    tick_steps = tick_job_steps(tick_job, spec)
    outcomes += ticks.jobs.apply(Plan(tuple(tick_steps), prune=False)).outcomes
    deletes, strays = [], []
    for job in jobs:
        job_id, owner = job_id_of(job.name), spec.owner_schedule_id(job)
        if job_id == tick_id:
            continue
        if is_tick_job(job, spec.prefix):  # by its message: the tick under its former ID
            deletes.append(Step("delete", job_id, None, f"the tick job is now {tick_id}"))
        elif owner in entries:
            deletes.append(Step("delete", job_id, owner,
                                "tick mode: the tick publishes its schedule's fires"))
        else:
            strays.append(Step("delete", job_id, owner, "left in place"))
    outcomes += [StepOutcome(s, "skipped", "no registry document: sync the schedule file in "
                             "tick mode to move it") for s in strays]
    steps: list[Step] = [*doc_steps, *tick_steps, *strays, *deletes]
    stray_ids = {id(s) for s in strays}
    if not all(o.ok for o in outcomes if id(o.step) not in stray_ids):
        return steps, outcomes + [StepOutcome(s, "skipped", "not attempted: an earlier step "
                                              "failed; run migrate again") for s in deletes]
    if deletes and not _wait_for_a_tick(control, sleep):
        why = "not attempted: the tick job has not fired yet; run migrate again"
        return steps, outcomes + [StepOutcome(s, "failed", why) for s in deletes]
    outcomes += ticks.jobs.apply(Plan(tuple(deletes), prune=False)).outcomes
    return steps, outcomes


def _wait_for_a_tick(control: TickControl, sleep: Callable[[float], None]) -> bool:
    """Until the tick job has fired since it was created or changed (the next whole minute);
    False when it has not within `TICK_WAIT`."""
    deadline = time.monotonic() + TICK_WAIT.total_seconds()
    tick_id = tick_job_id(control.spec.prefix)
    while not tick_has_fired(control.syncer.get_job(tick_id)):
        if time.monotonic() >= deadline:
            return False
        sleep(TICK_POLL_SECONDS)
    return True


def _to_jobs(control: TickControl, entries: dict[str, Entry],
             sleep: Callable[[float], None]) -> tuple[list[Step], list[StepOutcome]]:
    syncer, spec = control.syncer, control.spec
    # A document paused on request owes nothing: its job is created paused.
    schedules = [replace(e.owed.schedule, paused=True) if e.owed.paused_since is not None
                 else e.owed.schedule for e in entries.values()]
    jobs = list(syncer.iter_jobs())
    plan = compute_plan(jobs, schedules, spec, now=control.clock(), grace=syncer.grace,
                        prune=False)
    outcomes = list(syncer.apply(plan).outcomes)
    # The tick, and a tick job under the ID earlier versions gave it (`{prefix}tick`), unless a
    # schedule's own job has just replaced it under that ID (a schedule named `tick`).
    wanted = {spec.job_id(s.id) for s in schedules}
    tick_ids = ({tick_job_id(spec.prefix)}
                | {job_id_of(j.name) for j in jobs if is_tick_job(j, spec.prefix)}) - wanted
    removes = [Step("delete", job_id, None, "jobs mode: every schedule has its job")
               for job_id in sorted(tick_ids)]
    steps = [*plan.steps, *removes]
    if not all(o.ok for o in outcomes):
        why = "not attempted: an earlier step failed; run migrate again"
        return steps, [*outcomes, *(StepOutcome(s, "skipped", why) for s in removes)]
    return steps, outcomes + list(syncer.apply(Plan(tuple(removes), prune=False)).outcomes)
