"""The ledger's decisions as pure functions, shared by every adapter.

An adapter reads the execution record and the schedule's state record, asks these functions
what the outcome is and what to write, and writes it atomically (a Firestore transaction or
precondition batch, a SQLite `BEGIN IMMEDIATE` transaction). Keeping the rules here is what
makes the Firestore and SQLite ledgers behave identically; the contract suite checks both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from scheduler.model import OVERLAP_POLICIES, format_instant
from scheduler.redaction import redact
from worker.ledger import (
    FINAL_STATES,
    MAX_ERROR_LENGTH,
    ClaimRequest,
    ClaimResult,
    Execution,
    ScheduleState,
    State,
)


def require_aware(value: datetime, name: str) -> datetime:
    """`value` itself, or a ValueError naming the field when it has no time zone (a naive time
    would be read differently by each store)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name}: must be a timezone-aware datetime (got naive {value.isoformat()})"
        )
    return value


def truncate_error(error: str | None) -> str | None:
    """The error as stored: redacted (an action's error may quote a target's answer, whatever
    the action type) and at most MAX_ERROR_LENGTH characters."""
    if error is None:
        return None
    return redact(error)[:MAX_ERROR_LENGTH]


def validate_request(request: ClaimRequest) -> None:
    """Reject a claim request the ledger cannot honour, naming the field and the reason."""
    for name in ("execution_id", "schedule_id", "worker_id", "trigger"):
        if not getattr(request, name):
            raise ValueError(f"{name}: must not be empty")
    if request.overlap not in OVERLAP_POLICIES:
        raise ValueError(
            f"overlap: must be one of {', '.join(OVERLAP_POLICIES)} (got {request.overlap!r})"
        )
    if request.lease <= timedelta(0):
        raise ValueError(f"lease: must be positive (got {request.lease})")
    if request.retention <= timedelta(0):
        raise ValueError(f"retention: must be positive (got {request.retention})")
    require_aware(request.fire_time, "fire_time")
    require_aware(request.now, "now")


def validate_final_state(state: State) -> State:
    """`state` as a State, or a ValueError naming the field when it is not a final state."""
    if state not in FINAL_STATES:
        allowed = ", ".join(sorted(FINAL_STATES))
        raise ValueError(f"state: must be a final state ({allowed}), got {state!r}")
    return State(state)


@dataclass(frozen=True)
class ClaimPlan:
    """What a claim decided: the outcome, the record after it, and what to write.

    `write` is False when the record stays as it is (BUSY, DONE); `schedule_state` is the new
    per-schedule record, or None when it does not change."""

    result: ClaimResult
    execution: Execution
    write: bool
    schedule_state: ScheduleState | None


@dataclass(frozen=True)
class Change:
    """The records to write after finish, renew or release."""

    execution: Execution
    schedule_state: ScheduleState | None


# The reaper looks this far back for lapsed claims: older ones are left to their TTL (their
# catch-up window has long passed, and they cannot make the reaper's query slower).
REAP_WINDOW = timedelta(days=1)
# A released execution (its holder failed and nacked it for a retry) is left to Pub/Sub's
# redelivery for the subscription's retry backoff; the reaper retries it only after this
# backoff, doubled per attempt (as the subscription's own policy is, from Terraform's defaults).
RETRY_BACKOFF_MIN = timedelta(seconds=10)
RETRY_BACKOFF_MAX = timedelta(seconds=600)


def lease_live(lease_until: datetime | None, now: datetime) -> bool:
    """Whether a lease ending at `lease_until` still holds at `now`: the one comparison behind
    BUSY, overlap and the reaper, so every judgement of a lease agrees at the boundary."""
    return lease_until is not None and lease_until > now


def retry_backoff(attempt: int) -> timedelta:
    """How long after a release the reaper waits before retrying attempt `attempt` + 1."""
    return min(RETRY_BACKOFF_MIN * (1 << max(0, min(attempt - 1, 16))), RETRY_BACKOFF_MAX)


def reap_due(execution: Execution, now: datetime) -> bool:
    """Whether the reaper should take `execution` over at `now`: it is running and its holder's
    lease lapsed (the holder died or is cut off), or it was released (no holder: a retryable
    failure) and the retry backoff since the release has passed."""
    if execution.state != State.RUNNING or execution.lease_until is None:
        return False
    due = execution.lease_until
    if execution.worker_id is None:
        due += retry_backoff(execution.attempt)
    return not lease_live(due, now) and execution.lease_until > now - REAP_WINDOW


def blocker(state: ScheduleState | None, execution_id: str, now: datetime) -> ScheduleState | None:
    """The schedule state when another fire of the schedule runs with a live lease (so an
    overlap-skip fire must be skipped), else None."""
    if state is None or state.running_execution_id in (None, execution_id):
        return None
    if not lease_live(state.running_lease_until, now):
        return None
    return state


def _running_after(
    request: ClaimRequest, state: ScheduleState | None, execution: Execution
) -> ScheduleState | None:
    """The schedule state once `execution` runs. Only overlap `skip` tracks the running fire (it
    is what the overlap check reads); with overlap `allow` several fires may run at once, the
    claim does not touch the schedule state, and only the last finished fire is recorded."""
    if request.overlap != "skip":
        return None
    base = state or ScheduleState(schedule_id=request.schedule_id)
    return replace(
        base,
        running_execution_id=execution.execution_id,
        running_fire_time=execution.fire_time,
        running_lease_until=execution.lease_until,
    )


def _skip_detail(running: ScheduleState) -> str:
    assert running.running_lease_until is not None
    fire = format_instant(running.running_fire_time) if running.running_fire_time else "?"
    return (
        f"skipped by overlap policy: execution {running.running_execution_id} (fire time {fire}) "
        f"is running with a lease until {format_instant(running.running_lease_until)}"
    )


def _new_record(request: ClaimRequest, state: State, attempt: int, **fields: Any) -> Execution:
    return Execution(
        execution_id=request.execution_id,
        schedule_id=request.schedule_id,
        fire_time=request.fire_time,
        trigger=request.trigger,
        state=state,
        attempt=attempt,
        created_at=request.now,
        expire_at=request.fire_time + request.retention,
        **fields,
    )


def new_claim(request: ClaimRequest) -> Execution:
    """The record a fresh claim creates: running, attempt 1, held by the claimer."""
    return _new_record(request, State.RUNNING, 1, worker_id=request.worker_id,
                       lease_until=request.now + request.lease, started_at=request.now,
                       message=request.message)


def new_skip(request: ClaimRequest, running: ScheduleState) -> Execution:
    """The record of a fire skipped because `running` holds the schedule: never attempted."""
    return _new_record(request, State.SKIPPED, 0, finished_at=request.now,
                       detail=_skip_detail(running))


def decide_existing(request: ClaimRequest, existing: Execution) -> ClaimResult | None:
    """The outcome that an existing record settles on its own (DONE, BUSY), or None when its
    lease has lapsed and a takeover must be decided together with the schedule state.

    Another delivery of the same fire to the same worker is BUSY like any other: the record does
    not say which claim call wrote it (an adapter whose store call may land with its reply lost
    recognises its own write itself, as the Firestore ledger does)."""
    if existing.state != State.RUNNING:
        return ClaimResult.DONE
    if lease_live(existing.lease_until, request.now):
        return ClaimResult.BUSY
    return None


def plan_claim(
    request: ClaimRequest, existing: Execution | None, state: ScheduleState | None
) -> ClaimPlan:
    """Decide a claim from the execution record and the schedule state as they stand.

    Overlap `skip` skips only a fire that never started. A takeover continues a fire that was
    claimed first, so a newer fire that started while its holder was dead never makes it
    `skipped`: it runs, and names itself the schedule's running fire only if that is free (the
    newer one keeps blocking later fires while it runs)."""
    skip = request.overlap == "skip"
    if existing is None:
        running = blocker(state, request.execution_id, request.now) if skip else None
        if running is not None:
            return ClaimPlan(ClaimResult.OVERLAP, new_skip(request, running), True, None)
        claimed = new_claim(request)
        return ClaimPlan(
            ClaimResult.CLAIMED, claimed, True, _running_after(request, state, claimed)
        )
    settled = decide_existing(request, existing)
    if settled is not None:
        return ClaimPlan(settled, existing, False, None)
    taken = replace(
        existing,
        attempt=existing.attempt + 1,
        worker_id=request.worker_id,
        lease_until=request.now + request.lease,
        started_at=request.now,
        message=request.message or existing.message,
    )
    newer = blocker(state, request.execution_id, request.now) if skip else None
    running = _running_after(request, state, taken) if newer is None else None
    return ClaimPlan(ClaimResult.TAKEN_OVER, taken, True, running)


def _held(existing: Execution | None, worker_id: str) -> bool:
    return (
        existing is not None and existing.state == State.RUNNING and existing.worker_id == worker_id
    )


def _is_running(state: ScheduleState | None, execution_id: str) -> bool:
    return state is not None and state.running_execution_id == execution_id


def plan_finish(
    existing: Execution | None, state: ScheduleState | None, worker_id: str, final: State, *,
    now: datetime, error: str | None, detail: str | None,
) -> Change | None:
    """The finished record and schedule state, or None when `worker_id` does not hold it."""
    if existing is None or not _held(existing, worker_id):
        return None
    started = existing.started_at or existing.created_at
    done = replace(
        existing,
        state=final,
        lease_until=None,
        finished_at=now,
        duration_s=max(0.0, (now - started).total_seconds()),
        error=truncate_error(error),
        detail=detail,
        message=None,
    )
    base = state or ScheduleState(schedule_id=existing.schedule_id)
    if _is_running(base, existing.execution_id):
        base = replace(
            base, running_execution_id=None, running_fire_time=None, running_lease_until=None
        )
    summary = replace(
        base,
        last_execution_id=done.execution_id,
        last_fire_time=done.fire_time,
        last_state=final,
        last_finished_at=now,
    )
    return Change(done, summary)


def _with_lease(existing: Execution, state: ScheduleState | None, lease_until: datetime,
                error: str | None, holder: str | None) -> Change:
    updated = replace(existing, lease_until=lease_until, error=error, worker_id=holder)
    summary = None
    if state is not None and _is_running(state, existing.execution_id):
        summary = replace(state, running_lease_until=lease_until)
    return Change(updated, summary)


def plan_renew(
    existing: Execution | None, state: ScheduleState | None, worker_id: str, lease_until: datetime,
) -> Change | None:
    """The execution with its lease extended (mirrored in the schedule state when it is the
    schedule's running fire), or None when `worker_id` does not hold it."""
    if existing is None or not _held(existing, worker_id):
        return None
    return _with_lease(existing, state, lease_until, existing.error, worker_id)


def plan_release(
    existing: Execution | None, state: ScheduleState | None, worker_id: str, *, now: datetime,
    error: str | None,
) -> Change | None:
    """The execution still running but with its lease ended at `now`, no holder and the error
    kept, so the next delivery takes it over (and the reaper once its retry backoff passed,
    `reap_due`); None when `worker_id` does not hold it."""
    if existing is None or not _held(existing, worker_id):
        return None
    return _with_lease(existing, state, now, truncate_error(error), None)


# A holder's change to an execution it holds, decided from the stored (or remembered) records:
# what an adapter applies under its own atomicity (`renewal`, `finishing`, `releasing`).
Decide = Callable[[Execution, ScheduleState | None], Change | None]


def renewal(worker_id: str, lease_until: datetime) -> Decide:
    """The decision of `Ledger.renew`; its arguments checked now."""
    require_aware(lease_until, "lease_until")
    return lambda existing, state: plan_renew(existing, state, worker_id, lease_until)


def finishing(worker_id: str, state: State, *, now: datetime, error: str | None,
              detail: str | None) -> Decide:
    """The decision of `Ledger.finish`; its arguments checked now."""
    final = validate_final_state(state)
    require_aware(now, "now")
    return lambda existing, summary: plan_finish(existing, summary, worker_id, final, now=now,
                                                 error=error, detail=detail)


def releasing(worker_id: str, *, now: datetime, error: str | None) -> Decide:
    """The decision of `Ledger.release`; its arguments checked now."""
    require_aware(now, "now")
    return lambda existing, summary: plan_release(existing, summary, worker_id, now=now,
                                                  error=error)


class HolderStep(StrEnum):
    """Which change a holder makes to the execution it holds."""

    RENEW = "renew"  # it stays held, with a later lease
    FINISH = "finish"  # it ends, and is the schedule's last finished fire
    RELEASE = "release"  # it stays running, held by nobody


class HolderChanges(ABC):
    """`Ledger.renew`, `finish` and `release`, written once for every adapter: each is decided
    here, and the adapter applies the decision atomically in `_apply_change`."""

    @abstractmethod
    def _apply_change(self, execution_id: str, decide: Decide, step: HolderStep) -> bool:
        """Apply what `decide` says to the execution and its schedule's record, atomically;
        False when the execution is gone or `decide` refuses (the worker no longer holds it)."""

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        """Extend the lease; False when this worker no longer holds the execution."""
        return self._apply_change(execution_id, renewal(worker_id, lease_until), HolderStep.RENEW)

    def finish(
        self, execution_id: str, worker_id: str, state: State, *, now: datetime,
        error: str | None = None, detail: str | None = None,
    ) -> bool:
        """Record a final state and clear the schedule's running fire; False when not held."""
        decide = finishing(worker_id, state, now=now, error=error, detail=detail)
        return self._apply_change(execution_id, decide, HolderStep.FINISH)

    def release(self, execution_id: str, worker_id: str, *, now: datetime,
                error: str | None = None) -> bool:
        """End the lease now, keeping the execution running, so the next delivery takes it over."""
        decide = releasing(worker_id, now=now, error=error)
        return self._apply_change(execution_id, decide, HolderStep.RELEASE)
