"""The ledger on Firestore, shared by every worker replica.

Collections (`{prefix}` is `collection_prefix`, "scion_" by default):

* `{prefix}executions`: one document per execution, ID = the execution ID, fields as in
  `worker.ledger.Execution` plus `expire_at` (fire time + retention) for the TTL policy that
  Terraform configures; `history` queries `schedule_id == X order by fire_time desc`, served by
  the composite index Terraform creates.
* `{prefix}schedule_state`: one document per schedule, ID = sha256 hex of the schedule ID (a
  schedule ID may hold characters a document ID may not), with the raw ID in `schedule_id`:
  the fire running now (and its lease) and the last finished one.

The claim. A Firestore transaction costs a BeginTransaction, the reads and a Commit, and on the
emulator it measured about a third of the rate of a plain create. So a claim first tries one
atomic commit guarded by preconditions (an optimistic transaction without a transaction):

* overlap `allow`: one batch that creates the execution (precondition: it does not exist) and
  marks it the schedule's running fire. That alone is the claim.
* overlap `skip`: read the execution and the schedule state in one BatchGetDocuments, decide,
  then one batch that creates the execution (must not exist) and writes the schedule state
  guarded by its `update_time` as read (or by not existing), so the commit fails if another
  claim or finish touched the schedule in between. A duplicate delivery is answered from the
  read alone.

When a precondition fails, or the record exists with a lapsed lease (a takeover), the claim
reads the record again (DONE and BUSY need no transaction) and otherwise runs the full
decision in a `@firestore.transactional` function. Finish, renew and release are transactions
too: they are rare (one per execution, or one per lease period) and must check the holder.

Every decision is made by `worker.ledger_rules`, which the SQLite ledger shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from scheduler.logs import get_logger
from scheduler.model import format_instant
from worker.ledger import Claim, ClaimRequest, ClaimResult, Execution, ScheduleState, State
from worker.ledger_rules import (
    Change,
    ClaimPlan,
    decide_existing,
    new_claim,
    plan_claim,
    plan_finish,
    plan_release,
    plan_renew,
    require_aware,
    truncate_error,
    validate_final_state,
    validate_request,
)

log = get_logger(__name__)

# A failed create precondition is AlreadyExists (a Conflict), a stale update_time is
# FailedPrecondition; either means another writer got there first.
_LOST_RACE = (api_exceptions.Conflict, api_exceptions.FailedPrecondition, api_exceptions.NotFound)
_RUNNING_FIELDS = ("schedule_id", "running_execution_id", "running_fire_time", "running_lease_until")

_Decide = Callable[[Execution, ScheduleState | None], Change | None]


def state_document_id(schedule_id: str) -> str:
    """The schedule state document's ID: sha256 hex of the schedule ID."""
    return hashlib.sha256(schedule_id.encode("utf-8")).hexdigest()


def _stored(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else require_aware(value, name)


def _utc(value: Any) -> datetime | None:
    """A stored timestamp as a plain aware UTC datetime (the client returns a subclass with
    nanoseconds; Firestore keeps microseconds)."""
    if value is None:
        return None
    moment: datetime = value.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                    moment.microsecond, tzinfo=UTC)


def _required_utc(value: Any, name: str) -> datetime:
    moment = _utc(value)
    if moment is None:
        raise ValueError(f"{name}: missing in a stored record")
    return moment


def execution_document(execution: Execution) -> dict[str, Any]:
    """The fields of an execution document."""
    return {
        "schedule_id": execution.schedule_id,
        "fire_time": _stored(execution.fire_time, "fire_time"),
        "trigger": execution.trigger,
        "state": str(execution.state),
        "attempt": execution.attempt,
        "worker_id": execution.worker_id,
        "lease_until": _stored(execution.lease_until, "lease_until"),
        "created_at": _stored(execution.created_at, "created_at"),
        "started_at": _stored(execution.started_at, "started_at"),
        "finished_at": _stored(execution.finished_at, "finished_at"),
        "duration_s": execution.duration_s,
        "error": truncate_error(execution.error),
        "detail": execution.detail,
        "expire_at": _stored(execution.expire_at, "expire_at"),
    }


def state_document(state: ScheduleState) -> dict[str, Any]:
    """The fields of a schedule state document."""
    return {
        "schedule_id": state.schedule_id,
        "running_execution_id": state.running_execution_id,
        "running_fire_time": _stored(state.running_fire_time, "running_fire_time"),
        "running_lease_until": _stored(state.running_lease_until, "running_lease_until"),
        "last_execution_id": state.last_execution_id,
        "last_fire_time": _stored(state.last_fire_time, "last_fire_time"),
        "last_state": None if state.last_state is None else str(state.last_state),
        "last_finished_at": _stored(state.last_finished_at, "last_finished_at"),
    }


def _execution(snapshot: Any) -> Execution | None:
    if snapshot is None or not snapshot.exists:
        return None
    data = snapshot.to_dict()
    return Execution(
        execution_id=snapshot.id,
        schedule_id=data["schedule_id"],
        fire_time=_required_utc(data.get("fire_time"), "fire_time"),
        trigger=data["trigger"],
        state=State(data["state"]),
        attempt=int(data["attempt"]),
        created_at=_required_utc(data.get("created_at"), "created_at"),
        expire_at=_required_utc(data.get("expire_at"), "expire_at"),
        worker_id=data.get("worker_id"),
        lease_until=_utc(data.get("lease_until")),
        started_at=_utc(data.get("started_at")),
        finished_at=_utc(data.get("finished_at")),
        duration_s=data.get("duration_s"),
        error=data.get("error"),
        detail=data.get("detail"),
    )


def _schedule_state(snapshot: Any) -> ScheduleState | None:
    if snapshot is None or not snapshot.exists:
        return None
    data = snapshot.to_dict()
    last_state = data.get("last_state")
    return ScheduleState(
        schedule_id=data["schedule_id"],
        running_execution_id=data.get("running_execution_id"),
        running_fire_time=_utc(data.get("running_fire_time")),
        running_lease_until=_utc(data.get("running_lease_until")),
        last_execution_id=data.get("last_execution_id"),
        last_fire_time=_utc(data.get("last_fire_time")),
        last_state=None if last_state is None else State(last_state),
        last_finished_at=_utc(data.get("last_finished_at")),
    )


class FirestoreLedger:
    """The ledger in Firestore; safe for many threads, processes and machines at once."""

    def __init__(self, client: firestore.Client, collection_prefix: str = "scion_", *,
                 transaction_attempts: int = 20) -> None:
        self._client = client
        self._executions = client.collection(f"{collection_prefix}executions")
        self._states = client.collection(f"{collection_prefix}schedule_state")
        # Contended claims retry: the client's default of 5 attempts gives up too early when
        # several replicas race for the same schedule's state document.
        self._transaction_attempts = transaction_attempts

    def _state_ref(self, schedule_id: str) -> Any:
        return self._states.document(state_document_id(schedule_id))

    def _get_all(self, refs: Iterable[Any], transaction: Any = None) -> list[Any]:
        """Snapshots in the order of `refs` (the server returns them in any order)."""
        refs = list(refs)
        found = {snap.reference.path: snap for snap in self._client.get_all(refs, transaction=transaction)}
        return [found.get(ref.path) for ref in refs]

    def claim(self, request: ClaimRequest) -> Claim:
        """Claim a fire; see `worker.ledger` for the outcomes and this module for the method."""
        validate_request(request)
        exec_ref = self._executions.document(request.execution_id)
        state_ref = self._state_ref(request.schedule_id)
        if request.overlap == "allow":
            claim = self._claim_allow(request, exec_ref, state_ref)
        else:
            claim = self._claim_skip(request, exec_ref, state_ref)
        path = "fast"
        if claim is None:
            path = "transaction"
            claim = self._claim_in_transaction(request, exec_ref, state_ref)
        (log.info if claim.result in (ClaimResult.TAKEN_OVER, ClaimResult.OVERLAP) else log.debug)(
            "ledger claim", result=str(claim.result), path=path, schedule_id=request.schedule_id,
            fire_time=format_instant(request.fire_time), execution_id=request.execution_id,
            attempt=claim.execution.attempt,
        )
        return claim

    def _claim_allow(self, request: ClaimRequest, exec_ref: Any, state_ref: Any) -> Claim | None:
        claimed = new_claim(request)
        running = state_document(ScheduleState(
            schedule_id=request.schedule_id,
            running_execution_id=claimed.execution_id,
            running_fire_time=claimed.fire_time,
            running_lease_until=claimed.lease_until,
        ))
        batch = self._client.batch()
        batch.create(exec_ref, execution_document(claimed))
        # With overlap allowed the schedule's running fire is informative only (the latest
        # claim), so it is written blind and never contends.
        batch.set(state_ref, {name: running[name] for name in _RUNNING_FIELDS}, merge=True)
        try:
            batch.commit()
        except _LOST_RACE:
            return self._settled(request, exec_ref)
        return Claim(ClaimResult.CLAIMED, claimed)

    def _claim_skip(self, request: ClaimRequest, exec_ref: Any, state_ref: Any) -> Claim | None:
        exec_snap, state_snap = self._get_all([exec_ref, state_ref])
        existing = _execution(exec_snap)
        if existing is not None:
            settled = decide_existing(request, existing)
            return None if settled is None else Claim(settled, existing)
        plan = plan_claim(request, None, _schedule_state(state_snap))
        batch = self._client.batch()
        batch.create(exec_ref, execution_document(plan.execution))
        if plan.schedule_state is not None:
            fields = state_document(plan.schedule_state)
            if state_snap is not None and state_snap.exists:
                option = self._client.write_option(last_update_time=state_snap.update_time)
                batch.update(state_ref, fields, option=option)
            else:
                batch.create(state_ref, fields)
        try:
            batch.commit()
        except _LOST_RACE:
            return self._settled(request, exec_ref)
        return Claim(plan.result, plan.execution)

    def _settled(self, request: ClaimRequest, exec_ref: Any) -> Claim | None:
        """After a lost race: the claim's outcome when the record settles it on its own (DONE,
        BUSY, or our own write that landed), else None (a transaction must decide)."""
        existing = _execution(exec_ref.get())
        if existing is None:
            return None
        settled = decide_existing(request, existing)
        return None if settled is None else Claim(settled, existing)

    def _claim_in_transaction(self, request: ClaimRequest, exec_ref: Any, state_ref: Any) -> Claim:
        @firestore.transactional
        def decide(transaction: Any) -> ClaimPlan:
            exec_snap, state_snap = self._get_all([exec_ref, state_ref], transaction)
            plan = plan_claim(request, _execution(exec_snap), _schedule_state(state_snap))
            if plan.write:
                transaction.set(exec_ref, execution_document(plan.execution))
            if plan.schedule_state is not None:
                transaction.set(state_ref, state_document(plan.schedule_state))
            return plan

        plan: ClaimPlan = decide(self._client.transaction(max_attempts=self._transaction_attempts))
        return Claim(plan.result, plan.execution)

    def _change(self, execution_id: str, decide: _Decide) -> bool:
        exec_ref = self._executions.document(execution_id)

        @firestore.transactional
        def apply(transaction: Any) -> bool:
            (exec_snap,) = self._get_all([exec_ref], transaction)
            existing = _execution(exec_snap)
            if existing is None:
                return False
            state_ref = self._state_ref(existing.schedule_id)
            (state_snap,) = self._get_all([state_ref], transaction)
            change = decide(existing, _schedule_state(state_snap))
            if change is None:
                return False
            transaction.set(exec_ref, execution_document(change.execution))
            if change.schedule_state is not None:
                transaction.set(state_ref, state_document(change.schedule_state))
            return True

        done: bool = apply(self._client.transaction(max_attempts=self._transaction_attempts))
        return done

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        """Extend the lease; False when this worker no longer holds the execution."""
        require_aware(lease_until, "lease_until")
        return self._change(
            execution_id, lambda existing, state: plan_renew(existing, state, worker_id, lease_until)
        )

    def finish(
        self, execution_id: str, worker_id: str, state: State, *, now: datetime,
        error: str | None = None, detail: str | None = None,
    ) -> bool:
        """Record a final state and clear the schedule's running fire; False when not held."""
        final = validate_final_state(state)
        require_aware(now, "now")
        return self._change(
            execution_id,
            lambda existing, summary: plan_finish(existing, summary, worker_id, final, now=now,
                                                  error=error, detail=detail),
        )

    def release(self, execution_id: str, worker_id: str, *, now: datetime, error: str | None = None) -> bool:
        """End the lease now, keeping the execution running, so the next delivery takes it over."""
        require_aware(now, "now")
        return self._change(
            execution_id,
            lambda existing, summary: plan_release(existing, summary, worker_id, now=now, error=error),
        )

    def record(self, execution: Execution) -> bool:
        """Write a final record unless one exists for that execution; True when written."""
        validate_final_state(execution.state)
        try:
            self._executions.document(execution.execution_id).create(execution_document(execution))
        except api_exceptions.AlreadyExists:
            return False
        return True

    def get(self, execution_id: str) -> Execution | None:
        """One record, or None."""
        return _execution(self._executions.document(execution_id).get())

    def history(self, schedule_id: str, *, limit: int = 20, before: datetime | None = None) -> list[Execution]:
        """A schedule's executions, newest fire time first; `before` pages (fire_time < before)."""
        if limit < 1:
            raise ValueError(f"limit: must be at least 1 (got {limit})")
        query = self._executions.where(filter=firestore.FieldFilter("schedule_id", "==", schedule_id))
        if before is not None:
            query = query.where(filter=firestore.FieldFilter("fire_time", "<", require_aware(before, "before")))
        query = query.order_by("fire_time", direction=firestore.Query.DESCENDING).limit(limit)
        return [execution for execution in map(_execution, query.stream()) if execution is not None]

    def schedule_state(self, schedule_id: str) -> ScheduleState | None:
        """The per-schedule summary, or None if the schedule never fired."""
        return _schedule_state(self._state_ref(schedule_id).get())
