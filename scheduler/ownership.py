"""Deployments sharing a collection prefix: a schedule's registry document (`scheduler.registry`)
is keyed by its ID alone, and its `owner` field names the deployment (job prefix) that wrote it.
A deployment never overwrites nor deletes another's document; the items whose document another
deployment owns fail alone (`Failure.OWNED`, the API's 409), in both modes, and nothing of them
is written: not their document, not their job (in jobs mode), since two deployments' fires of
one schedule ID would also share their execution IDs in a shared ledger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from scheduler.sync import ApplyResult, Failure, StepOutcome
from scheduler.sync_plan import Plan, Step


def foreign_owner(schedule_id: str | None, owner: object, own: str) -> str:
    """The error of an item refused because another deployment owns its document."""
    return (f"schedule {schedule_id!r}: field 'owner': its registry document belongs to the "
            f"deployment with job prefix {owner!r}, not this one ({own!r}): both keep their "
            "schedules in one collection (SCION_SCHEDULER_COLLECTION_PREFIX), where one "
            "schedule ID is one document; it is left as it is (give each deployment its own "
            "collection prefix, or its own schedule IDs)")


def refused(step: Step, owner: object, own: str) -> StepOutcome:
    """The outcome of a step whose schedule's document another deployment owns."""
    return StepOutcome(step, "failed", foreign_owner(step.schedule_id, owner, own),
                       failure=Failure.OWNED)


def without_foreign(plan: Plan, foreign: Mapping[str, str], own: str
                    ) -> tuple[Plan, tuple[StepOutcome, ...]]:
    """The plan without the steps of the schedules in `foreign` (schedule ID -> the deployment
    that owns its document), and those steps' outcomes: each schedule's first step failed, the
    others skipped."""
    if not foreign:
        return plan, ()
    kept: list[Step] = []
    outcomes: list[StepOutcome] = []
    failed: set[str] = set()
    for step in plan.steps:
        owner = foreign.get(step.schedule_id) if step.schedule_id is not None else None
        if owner is None or step.schedule_id is None:
            kept.append(step)
        elif step.schedule_id in failed:
            outcomes.append(StepOutcome(step, "skipped", "not attempted: its schedule's "
                                        "document is another deployment's"))
        else:
            failed.add(step.schedule_id)
            outcomes.append(refused(step, owner, own))
    return replace(plan, steps=tuple(kept)), tuple(outcomes)


def with_refused(result: ApplyResult, plan: Plan, outcomes: tuple[StepOutcome, ...]
                 ) -> ApplyResult:
    """`result` of the plan without the refused steps, as the result of the whole `plan`."""
    if not outcomes:
        return result
    return ApplyResult(plan, result.outcomes + outcomes, result.seconds)
