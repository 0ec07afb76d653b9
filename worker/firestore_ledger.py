"""The ledger on Firestore, shared by every worker replica.

Collections (`{prefix}` is `collection_prefix`, "scion_" by default):

* `{prefix}executions`: one document per execution, ID = the execution ID, fields as in
  `worker.ledger.Execution` plus `expire_at` (fire time + retention) for the TTL policy that
  Terraform configures; `history` queries `schedule_id == X order by fire_time desc`, served by
  the composite index Terraform creates.
* `{prefix}schedule_state`: one document per schedule, ID = sha256 hex of the schedule ID (a
  schedule ID may hold characters a document ID may not), with the raw ID in `schedule_id`:
  the fire running now (and its lease) and the last finished one.

How a change is made atomic: optimistic commits, not Firestore transactions. Every write goes
into one batch whose preconditions pin what the decision was based on: a document read as
absent is written with `create` (it must still not exist), a document read as present is
written with `update` guarded by its `update_time` as read. A batch commit applies all of its
writes or none and fails as a whole when a precondition does not hold, so a commit that
succeeds is exactly the read-decide-write step run alone; one that fails lost a race and the
step is re-read and decided again. Why not transactions: a read-write transaction costs a
BeginTransaction, its reads and a Commit, measured at about a third of a plain create on the
emulator (see `bench/bench_claim.py`), and under contention the emulator's locking transactions
deadlock until a lock timeout (firebase-tools#6758, #8105), whereas a failed precondition
answers at once.

The claim reads the execution (and, for overlap `skip`, the schedule state) in one
BatchGetDocuments, decides (`worker.ledger_rules.plan_claim`) and commits the execution and the
schedule state under preconditions. DONE and BUSY are answered from the read alone. The
execution document a claim writes carries a `claim_id` unique to that claim call: when the client
retried a Commit whose reply was lost, the retry fails the precondition its own landed write
changed, and the re-read recognises the write by that ID (and by nothing that another delivery
to the same worker could share, such as the worker ID and the clock reading).

Finish, renew and release need no read in the common case: the ledger remembers the records it
wrote for the executions this process holds, with the `update_time` each commit returned, and
commits the change guarded by those versions. If another writer moved a document since (a
takeover, another fire of the schedule), the guard fails and the change is re-read and decided
again from the stored records. Every decision is made by `worker.ledger_rules`, which the SQLite
ledger shares.

Batching: reads and commits go through `worker.coalescer`, so that the reads of fires handled at
the same moment leave as one BatchGetDocuments and their commits as one Commit. A Commit is all
or nothing, so when a combined commit fails a precondition it is split in halves and each half
committed again (recursively), and only the group that really lost its race is told so. Groups
that touch the same document never share a Commit, and deliveries of one fire in one process
claim one after the other, so that they never make each other's batches fail.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from scheduler import gcp
from scheduler.config import Settings
from scheduler.logs import get_logger
from scheduler.model import format_instant
from worker.coalescer import Coalescer
from worker.firestore_wire import FirestoreWire, StoredDocument, Write
from worker.keyed_locks import KeyedLocks
from worker.ledger import Claim, ClaimRequest, ClaimResult, Execution, ScheduleState, State
from worker.ledger_rules import (
    Change,
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

# Errors that one group of a combined Commit can cause by itself (a value the wire cannot
# encode, a document the service refuses); splitting finds the group.
_GROUP_ERRORS = (TypeError, ValueError, api_exceptions.InvalidArgument)

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
    """The fields of an execution document (None: the field is left out when written)."""
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
    """The fields of a schedule state document (None: the field is left out when written)."""
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


def _execution_from(execution_id: str, data: dict[str, Any]) -> Execution:
    return Execution(
        execution_id=execution_id,
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


def _execution(document: StoredDocument | None) -> Execution | None:
    return None if document is None else _execution_from(document.id, document.fields)


def _schedule_state(document: StoredDocument | None) -> ScheduleState | None:
    if document is None:
        return None
    data = document.fields
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


class LedgerContention(RuntimeError):
    """A change lost the race for its documents too many times in a row; retry it later."""


# The field of an execution document that names the claim call which wrote it (see `claim`).
CLAIM_ID = "claim_id"
# Fires handled at once that share one read or one commit. A Commit takes at most 500 writes
# and a group has at most two.
MAX_BATCH = 100
# How many executions this process remembers the records of (it holds far fewer at a time;
# the bound only matters when a holder never finishes, e.g. an action that never returns).
MAX_REMEMBERED = 10_000


def _version(document: StoredDocument | None) -> Any:
    """The `update_time` a guarded write must match: None for a document read as absent."""
    return None if document is None else document.update_time


@dataclass(frozen=True)
class _Held:
    """The records of an execution this process holds, as it last wrote them, with the
    versions its commits returned. `state_known` is False when the claim did not read the
    schedule state (overlap allow): then it is read when needed."""

    execution: Execution
    execution_version: Any
    state: ScheduleState | None
    state_version: Any
    state_known: bool


class FirestoreLedger:
    """The ledger in Firestore; safe for many threads, processes and machines at once."""

    def __init__(self, client: firestore.Client, collection_prefix: str = "scion_", *,
                 max_attempts: int = 30, max_batch: int = MAX_BATCH) -> None:
        self._wire = FirestoreWire(client)
        self._executions = client.collection(f"{collection_prefix}executions")
        self._states_collection = f"{collection_prefix}schedule_state"
        self._max_attempts = max_attempts
        # One sender each (the default): while its call is in flight the next batch gathers, so
        # batches grow with the load. Two senders halved the batches, and Firestore's cost is
        # mostly per call (bench_worker: ~25% fewer messages/s with two).
        self._reader: Coalescer[list[str], list[StoredDocument | None]] = Coalescer(
            "firestore-read", self._read_batch, max_batch=max_batch)
        self._committer: Coalescer[list[Write], list[Any] | None] = Coalescer(
            "firestore-commit", self._commit_batch, max_batch=max_batch)
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._claiming = KeyedLocks()
        self._claim_prefix = secrets.token_hex(8) + "-"
        self._claim_numbers = itertools.count()
        self._held_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, client: firestore.Client | None = None) -> FirestoreLedger:
        """The ledger of a deployment: its project, database and collection prefix (on
        `client`, when the caller holds one it will close)."""
        return cls(client or gcp.firestore_client(settings),
                   collection_prefix=settings.collection_prefix or "scion_")

    def _execution_name(self, execution_id: str) -> str:
        return self._wire.name(self._executions.id, execution_id)

    def _state_name(self, schedule_id: str) -> str:
        return self._wire.name(self._states_collection, state_document_id(schedule_id))

    # Batched store calls.

    def _get_all(self, names: list[str]) -> list[StoredDocument | None]:
        """The documents in the order of `names` (None where absent), read together with other
        threads' reads."""
        return self._reader.call(names)

    def _read_batch(self, groups: Sequence[list[str]]) -> list[list[StoredDocument | None]]:
        found = self._wire.get_all([name for group in groups for name in group])
        return [[found.get(name) for name in group] for group in groups]

    def _commit(self, writes: list[Write]) -> list[Any] | None:
        """Commit the writes atomically under their preconditions, together with other
        threads' commits; the new `update_time` of each write, or None when one failed."""
        return self._committer.call(writes)

    def _commit_batch(self, groups: Sequence[list[Write]]) -> list[list[Any] | BaseException | None]:
        combined: list[int] = []
        alone: list[int] = []
        touched: set[str] = set()
        for index, group in enumerate(groups):
            paths = {write.name for write in group}
            (alone if paths & touched else combined).append(index)
            touched |= paths
        results: list[list[Any] | BaseException | None] = [None] * len(groups)
        self._commit_together(groups, combined, results)
        for index in alone:
            self._commit_together(groups, [index], results)
        return results

    def _commit_together(self, groups: Sequence[list[Write]], indices: list[int],
                         results: list[list[Any] | BaseException | None]) -> None:
        """Commit the groups at `indices` as one Commit. When a precondition fails, split them in
        halves and commit each half the same way, so that one lost race among n groups costs
        about 2 log2(n) more Commits rather than n, and each group still gets its own outcome.
        A request one group's data can make invalid is split the same way; any other error (the
        store unavailable after the client's retries) is every group's outcome at once, rather
        than 2n - 1 more Commits that would each retry it again."""
        if not indices:
            return
        try:
            versions = self._commit_now([write for index in indices for write in groups[index]])
        except _GROUP_ERRORS as exc:
            if len(indices) == 1:
                results[indices[0]] = exc
                return
            versions = None
        except Exception as exc:
            for index in indices:
                results[index] = exc
            return
        if versions is not None:
            offset = 0
            for index in indices:
                results[index] = versions[offset:offset + len(groups[index])]
                offset += len(groups[index])
        elif len(indices) == 1:
            results[indices[0]] = None
        else:
            middle = len(indices) // 2
            self._commit_together(groups, indices[:middle], results)
            self._commit_together(groups, indices[middle:], results)

    def _commit_now(self, writes: list[Write]) -> list[Any] | None:
        try:
            return self._wire.commit(writes)
        except _LOST_RACE:
            return None

    def _retry(self, attempt: int, what: str, **context: Any) -> None:
        """Back off after a lost race, with jitter so that the racers spread out."""
        if attempt + 1 >= self._max_attempts:
            raise LedgerContention(f"{what}: lost the race for its documents {self._max_attempts} times")
        log.debug("ledger race lost, retrying", operation=what, attempt=attempt + 1, **context)
        time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))

    # What this process holds.

    def _remember(self, held: _Held) -> None:
        with self._held_lock:
            self._held[held.execution.execution_id] = held
            self._held.move_to_end(held.execution.execution_id)
            while len(self._held) > MAX_REMEMBERED:
                self._held.popitem(last=False)

    def _forget(self, execution_id: str) -> _Held | None:
        with self._held_lock:
            return self._held.pop(execution_id, None)

    # The ledger.

    def claim(self, request: ClaimRequest) -> Claim:
        """Claim a fire; see `worker.ledger` for the outcomes and this module for the method."""
        validate_request(request)
        exec_ref = self._execution_name(request.execution_id)
        state_ref = self._state_name(request.schedule_id)
        context = {"schedule_id": request.schedule_id, "fire_time": format_instant(request.fire_time),
                   "execution_id": request.execution_id}
        # Marks the documents this call writes, across its retries: a commit the client retried
        # after a lost reply fails its own precondition, and the re-read must see it as ours.
        # Unique per call: a random prefix per ledger, then a counter (os.urandom per call was
        # a measurable share of a claim's CPU).
        claim_id = f"{self._claim_prefix}{next(self._claim_numbers)}"
        attempt = 0
        # Deliveries of one fire in this process claim one after the other: racing each other
        # for the same documents would only fail commits (and the batches they share).
        with self._claiming.hold(request.execution_id):
            while (claim := self._claim_once(request, exec_ref, state_ref, claim_id)) is None:
                self._retry(attempt, "claim", **context)
                attempt += 1
        notable = claim.result in (ClaimResult.TAKEN_OVER, ClaimResult.OVERLAP)
        (log.info if notable else log.debug)(
            "ledger claim", result=str(claim.result), attempt=claim.execution.attempt, retries=attempt,
            **context,
        )
        return claim

    def _claim_once(self, request: ClaimRequest, exec_ref: str, state_ref: str, claim_id: str) -> Claim | None:
        """Read, decide and commit once; None when the commit lost a race."""
        # Only overlap skip decides on (and writes) the schedule state.
        skip = request.overlap == "skip"
        snapshots = self._get_all([exec_ref, state_ref] if skip else [exec_ref])
        exec_snap, state_snap = snapshots[0], snapshots[1] if skip else None
        state = _schedule_state(state_snap)
        existing = _execution(exec_snap)
        if existing is not None and exec_snap is not None and exec_snap.fields.get(CLAIM_ID) == claim_id:
            # This call's own commit landed (its reply was lost): the claim is held.
            result = ClaimResult.CLAIMED if existing.attempt == 1 else ClaimResult.TAKEN_OVER
            self._remember(_Held(existing, exec_snap.update_time, state, _version(state_snap),
                                 state_known=skip))
            return Claim(result, existing)
        plan = plan_claim(request, existing, state)
        writes = []
        if plan.write:
            data = execution_document(plan.execution)
            if plan.result.run:
                data[CLAIM_ID] = claim_id
            writes.append(Write(exec_ref, data, _version(exec_snap)))
        if plan.schedule_state is not None:
            writes.append(Write(state_ref, state_document(plan.schedule_state), _version(state_snap)))
        versions = self._commit(writes) if writes else []
        if versions is None:
            return None
        if plan.result.run and plan.write:
            state_version = versions[1] if plan.schedule_state is not None else _version(state_snap)
            self._remember(_Held(plan.execution, versions[0], plan.schedule_state or state, state_version,
                                 state_known=skip))
        return Claim(plan.result, plan.execution)

    def _change(self, execution_id: str, decide: _Decide, what: str, *, keep: bool) -> bool:
        """Apply `decide`'s change to a held execution and its schedule state under
        preconditions: first from the records as this process wrote them, then, if those are
        gone or stale, from the stored records, retrying lost races. False when `decide`
        refuses. `keep`: the execution stays held afterwards (a renewal)."""
        held = self._forget(execution_id)
        tried: Execution | None = None
        if held is not None:
            outcome = self._change_held(held, decide, keep=keep)
            if outcome is True:
                return True
            tried = outcome or None
        return self._change_stored(execution_id, decide, what, tried)

    def _change_held(self, held: _Held, decide: _Decide, *, keep: bool) -> bool | Execution:
        """One attempt from the remembered records: True when it landed, else the execution it
        tried to write (the commit may have landed with its reply lost) or False."""
        exec_ref = self._execution_name(held.execution.execution_id)
        state_ref = self._state_name(held.execution.schedule_id)
        state, state_version = held.state, held.state_version
        if not held.state_known:
            state_snap = self._get_all([state_ref])[0]
            state, state_version = _schedule_state(state_snap), _version(state_snap)
        change = decide(held.execution, state)
        if change is None:
            return False
        writes = [Write(exec_ref, execution_document(change.execution), held.execution_version)]
        if change.schedule_state is not None:
            writes.append(Write(state_ref, state_document(change.schedule_state), state_version))
        versions = self._commit(writes)
        if versions is None:
            return change.execution
        if keep:
            if change.schedule_state is not None:
                state, state_version = change.schedule_state, versions[1]
            self._remember(_Held(change.execution, versions[0], state, state_version, state_known=True))
        return True

    def _change_stored(self, execution_id: str, decide: _Decide, what: str, tried: Execution | None) -> bool:
        exec_ref = self._execution_name(execution_id)
        attempt = 0
        while True:
            exec_snap = self._get_all([exec_ref])[0]
            existing = _execution(exec_snap)
            if existing is None:
                return False
            if existing == tried:
                # The previous commit landed but its reply was lost (the client retried it and
                # the retry failed the precondition that the landed commit had changed).
                return True
            state_ref = self._state_name(existing.schedule_id)
            state_snap = self._get_all([state_ref])[0]
            change = decide(existing, _schedule_state(state_snap))
            if change is None:
                return False
            tried = change.execution
            writes = [Write(exec_ref, execution_document(change.execution), _version(exec_snap))]
            if change.schedule_state is not None:
                writes.append(Write(state_ref, state_document(change.schedule_state), _version(state_snap)))
            if self._commit(writes) is not None:
                return True
            self._retry(attempt, what, schedule_id=existing.schedule_id,
                        fire_time=format_instant(existing.fire_time), execution_id=execution_id)
            attempt += 1

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        """Extend the lease; False when this worker no longer holds the execution."""
        require_aware(lease_until, "lease_until")
        return self._change(
            execution_id, lambda existing, state: plan_renew(existing, state, worker_id, lease_until), "renew",
            keep=True,
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
            "finish", keep=False,
        )

    def release(self, execution_id: str, worker_id: str, *, now: datetime, error: str | None = None) -> bool:
        """End the lease now, keeping the execution running, so the next delivery takes it over."""
        require_aware(now, "now")
        return self._change(
            execution_id,
            lambda existing, summary: plan_release(existing, summary, worker_id, now=now, error=error),
            "release", keep=False,
        )

    def record(self, execution: Execution) -> bool:
        """Write a final record unless one exists for that execution; True when written."""
        validate_final_state(execution.state)
        write = Write(self._execution_name(execution.execution_id), execution_document(execution))
        try:
            self._wire.commit([write])
        except api_exceptions.AlreadyExists:
            return False
        return True

    def get(self, execution_id: str) -> Execution | None:
        """One record, or None."""
        return _execution(self._get_all([self._execution_name(execution_id)])[0])

    def history(self, schedule_id: str, *, limit: int = 20, before: datetime | None = None) -> list[Execution]:
        """A schedule's executions, newest fire time first; `before` pages (fire_time < before)."""
        if limit < 1:
            raise ValueError(f"limit: must be at least 1 (got {limit})")
        query = self._executions.where(filter=firestore.FieldFilter("schedule_id", "==", schedule_id))
        if before is not None:
            query = query.where(filter=firestore.FieldFilter("fire_time", "<", require_aware(before, "before")))
        query = query.order_by("fire_time", direction=firestore.Query.DESCENDING).limit(limit)
        return [_execution_from(snapshot.id, snapshot.to_dict() or {}) for snapshot in query.stream()]

    def schedule_state(self, schedule_id: str) -> ScheduleState | None:
        """The per-schedule summary, or None if the schedule never fired."""
        return _schedule_state(self._get_all([self._state_name(schedule_id)])[0])
