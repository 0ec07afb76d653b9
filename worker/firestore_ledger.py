"""The ledger on Firestore, shared by every worker replica.

Collections (`{prefix}` is `collection_prefix`, "scion_" by default):

* `{prefix}executions`: one document per execution, ID = the execution ID, fields as in
  `worker.ledger.Execution` plus `expire_at` (fire time + retention) for the TTL policy that
  Terraform configures; `history` queries `schedule_id == X order by fire_time desc`, served by
  the composite index Terraform creates.
* `{prefix}schedule_running`: the fire of an overlap-`skip` schedule that runs now, and its
  lease. It exists only while one runs: the claim creates it and the finish deletes it, so that
  "nothing runs" is the document's absence, which a create's precondition can check without a
  read.
* `{prefix}schedule_state`: the last finished fire of each schedule (ID, fire time, outcome,
  finish time), written by every finish. No decision reads it, so it is written without a
  precondition: the last fire to finish is the last one recorded.

Both per-schedule documents have the sha256 hex of the schedule ID as their ID (a schedule ID
may hold characters a document ID may not), with the raw ID in `schedule_id`;
`schedule_state()` merges them into one `ScheduleState`.

How a change is made atomic (optimistic commits under preconditions, not transactions), the
claim's read-free fast path, and how finishes, renewals and releases go without a read:
docs/architecture.md, "The Firestore ledger's commits". Every decision is made by
`worker.ledger_rules`, which the SQLite ledger shares; reads and commits are batched by
`worker.firestore_batch`, and what this process wrote is remembered by `worker.held_fires`.
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from scheduler import gcp
from scheduler.config import Settings
from scheduler.logs import get_logger
from scheduler.model import format_instant
from worker.errors import WorkerError
from worker.firestore_batch import MAX_BATCH, FirestoreBatches
from worker.firestore_documents import (
    execution_document,
    execution_from_document,
    execution_of,
    running_document,
    running_of,
    state_document_id,
    summary_document,
    with_summary,
)
from worker.firestore_wire import FirestoreWire, StoredDocument, Write
from worker.held_fires import Held, HeldFires
from worker.keyed_locks import KeyedLocks
from worker.ledger import (
    FINAL_STATES,
    Claim,
    ClaimRequest,
    ClaimResult,
    Execution,
    ScheduleState,
)
from worker.ledger_rules import (
    Change,
    Decide,
    HolderChanges,
    HolderStep,
    plan_claim,
    require_aware,
    validate_final_state,
    validate_request,
)
from worker.server_clock import ServerClock

log = get_logger(__name__)


def _running_fields(state: ScheduleState | None) -> tuple[Any, ...]:
    if state is None:
        return (None, None, None)
    return (state.running_execution_id, state.running_fire_time, state.running_lease_until)


class LedgerContention(WorkerError, RuntimeError):
    """A change lost the race for its documents too many times in a row; retry it later."""


# Firestore's limit of writes per Commit.
_COMMIT_LIMIT = 500
# The field of an execution document that names the claim call which wrote it (see `claim`).
CLAIM_ID = "claim_id"


def _version(document: StoredDocument | None) -> Any:
    """The `update_time` a guarded write must match: None for a document read as absent."""
    return None if document is None else document.update_time


class FirestoreLedger(HolderChanges):
    """The ledger in Firestore; safe for many threads, processes and machines at once."""

    def __init__(self, client: firestore.Client, collection_prefix: str = "scion_", *,
                 max_attempts: int = 30, max_batch: int = MAX_BATCH,
                 clock: ServerClock | None = None) -> None:
        # The time leases are measured against (`worker.server_clock`): the pipeline's clock.
        self.clock = clock or ServerClock()
        self._wire = FirestoreWire(client, self.clock)
        # The executions collection (its documents are named by `execution_name`).
        self.executions = client.collection(f"{collection_prefix}executions")
        self._running_collection = f"{collection_prefix}schedule_running"
        self._summary_collection = f"{collection_prefix}schedule_state"
        self.clock.syncs_with(lambda: self._wire.sync_clock(self.running_name("")))
        self._max_attempts = max_attempts
        # Every read and commit of a decision goes through these, batched with other threads'.
        self.batches = FirestoreBatches(self._wire, max_batch=max_batch)
        # The records this process wrote and still holds, and those it finished.
        self.fires: HeldFires[Held] = HeldFires()
        self._claiming = KeyedLocks()
        self._claim_prefix = secrets.token_hex(8) + "-"
        self._claim_numbers = itertools.count()

    @classmethod
    def from_settings(
        cls, settings: Settings, client: firestore.Client | None = None
    ) -> FirestoreLedger:
        """The ledger of a deployment: its project, database and collection prefix (on
        `client`, when the caller holds one it will close)."""
        return cls(client or gcp.firestore_client(settings),
                   collection_prefix=settings.collection_prefix or "scion_")

    def execution_name(self, execution_id: str) -> str:
        """The document name of an execution's record."""
        return self._wire.name(self.executions.id, execution_id)

    def running_name(self, schedule_id: str) -> str:
        """The document name of a schedule's running document (present while a fire runs)."""
        return self._wire.name(self._running_collection, state_document_id(schedule_id))

    def _summary_name(self, schedule_id: str) -> str:
        return self._wire.name(self._summary_collection, state_document_id(schedule_id))

    def _retry(self, attempt: int, what: str, **context: Any) -> None:
        """Back off after a lost race, with jitter so that the racers spread out."""
        if attempt + 1 >= self._max_attempts:
            raise LedgerContention(
                f"{what}: lost the race for its documents {self._max_attempts} times"
            )
        log.debug("ledger race lost, retrying", operation=what, attempt=attempt + 1, **context)
        time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))

    # The ledger.

    def claim(self, request: ClaimRequest) -> Claim:
        """Claim a fire; see `worker.ledger` for the outcomes and this module for the method."""
        validate_request(request)
        context = {
            "schedule_id": request.schedule_id,
            "fire_time": format_instant(request.fire_time),
            "execution_id": request.execution_id,
        }
        # Marks the documents this call writes, across its retries: a commit the client retried
        # after a lost reply fails its own precondition, and the re-read must see it as ours.
        # Unique per call: a random prefix per ledger, then a counter (os.urandom per call was
        # a measurable share of a claim's CPU).
        claim_id = f"{self._claim_prefix}{next(self._claim_numbers)}"
        attempt = 0
        # Deliveries of one fire in this process claim one after the other: racing each other
        # for the same documents would only fail commits (and the batches they share).
        with self._claiming.hold(request.execution_id):
            claim = self.fires.known(request) or self._claim_fresh(request, claim_id)
            while claim is None and (claim := self._claim_once(request, claim_id)) is None:
                self._retry(attempt, "claim", **context)
                attempt += 1
        if not claim.result.run and claim.execution.state in FINAL_STATES:
            self.fires.finished(claim.execution)
        notable = claim.result in (ClaimResult.TAKEN_OVER, ClaimResult.OVERLAP)
        (log.info if notable else log.debug)(
            "ledger claim",
            result=str(claim.result),
            attempt=claim.execution.attempt,
            retries=attempt,
            **context,
        )
        return claim

    def _claim_fresh(self, request: ClaimRequest, claim_id: str) -> Claim | None:
        """The fast path: claim as if the execution (and, for overlap skip, the running
        document) had been read as absent, under preconditions saying so; None when either
        exists."""
        plan = plan_claim(request, None, None)
        data = execution_document(plan.execution)
        data[CLAIM_ID] = claim_id
        writes = [Write(self.execution_name(request.execution_id), data)]
        running_name = self.running_name(request.schedule_id)
        if plan.schedule_state is not None:
            writes.append(Write(running_name, running_document(plan.schedule_state)))
        versions = self.batches.commit(writes, tentative=True)
        if versions is None:
            return None
        running_version = versions[1] if plan.schedule_state is not None else None
        self.fires.hold(Held(plan.execution, versions[0], plan.schedule_state, running_version))
        return Claim(plan.result, plan.execution)

    def _claim_once(self, request: ClaimRequest, claim_id: str) -> Claim | None:
        """Read, decide and commit once; None when the commit lost a race."""
        exec_name = self.execution_name(request.execution_id)
        running_name = self.running_name(request.schedule_id)
        # Only overlap skip decides on (and writes) the running document.
        skip = request.overlap == "skip"
        snapshots = self.batches.get_all([exec_name, running_name] if skip else [exec_name])
        exec_snap, running_snap = snapshots[0], snapshots[1] if skip else None
        running = running_of(running_snap)
        existing = execution_of(exec_snap)
        if (
            existing is not None
            and exec_snap is not None
            and exec_snap.fields.get(CLAIM_ID) == claim_id
        ):
            # This call's own commit landed (its reply was lost): the claim is held.
            result = ClaimResult.CLAIMED if existing.attempt == 1 else ClaimResult.TAKEN_OVER
            ours = running is not None and running.running_execution_id == existing.execution_id
            self.fires.hold(Held(existing, exec_snap.update_time, running if ours else None,
                                 _version(running_snap) if ours else None))
            return Claim(result, existing)
        plan = plan_claim(request, existing, running)
        writes = []
        if plan.write:
            data = execution_document(plan.execution)
            if plan.result.run:
                data[CLAIM_ID] = claim_id
            writes.append(Write(exec_name, data, _version(exec_snap)))
        running_writes = self._running_writes(running_name, plan.execution.execution_id, running,
                                              _version(running_snap), plan.schedule_state)
        versions = self.batches.commit(writes + running_writes) if writes or running_writes else []
        if versions is None:
            return None
        if plan.result.run:
            if running_writes:
                self.fires.hold(Held(plan.execution, versions[0], plan.schedule_state, versions[1]))
            else:
                ours = (
                    running is not None
                    and running.running_execution_id == plan.execution.execution_id
                )
                self.fires.hold(Held(plan.execution, versions[0], running if ours else None,
                                     _version(running_snap) if ours else None))
        return Claim(plan.result, plan.execution)

    def _running_writes(
        self,
        name: str,
        execution_id: str,
        old: ScheduleState | None,
        old_version: Any,
        new: ScheduleState | None,
    ) -> list[Write]:
        """The write that takes the running document from `old` (at `old_version`) to what the
        decision `new` says, if anything changes: set while a fire runs, deleted when the fire
        it names (this one) ends."""
        if new is None or _running_fields(new) == _running_fields(old):
            return []
        if new.running_execution_id is not None:
            return [Write(name, running_document(new), old_version)]
        if old is not None and old.running_execution_id == execution_id and old_version is not None:
            return [Write(name, None, old_version)]
        return []

    def _change_writes(self, existing: Execution, exec_version: Any, running: ScheduleState | None,
                       running_version: Any, change: Change, *, summary: bool) -> list[Write]:
        writes = [Write(self.execution_name(existing.execution_id),
                        execution_document(change.execution),
                        exec_version)]
        writes += self._running_writes(self.running_name(existing.schedule_id),
                                       existing.execution_id,
                                       running, running_version, change.schedule_state)
        if summary and change.schedule_state is not None:
            writes.append(Write(self._summary_name(existing.schedule_id),
                                summary_document(change.schedule_state), blind=True))
        return writes

    def _apply_change(self, execution_id: str, decide: Decide, step: HolderStep) -> bool:
        """Apply `decide`'s change to a held execution and its schedule's documents under
        preconditions: first from the records as this process wrote them, then, if those are
        gone or stale, from the stored records, retrying lost races. False when `decide`
        refuses. A renewal keeps the execution held afterwards; a finish is recorded as the
        schedule's last finished fire."""
        what, keep, last = str(step), step is HolderStep.RENEW, step is HolderStep.FINISH
        # Under the fire's claim lock: a delivery of it that arrives meanwhile waits for the
        # change to land and is then answered from it, rather than reading the store mid-change.
        with self._claiming.hold(execution_id):
            held = self.fires.take(execution_id)
            tried: Execution | None = None
            if held is not None:
                outcome = self._change_held(held, decide, keep=keep, last=last)
                if outcome is True:
                    return True
                tried = outcome or None
            return self._change_stored(execution_id, decide, what, tried, keep=keep, last=last)

    def _change_held(self, held: Held, decide: Decide, *, keep: bool,
                     last: bool) -> bool | Execution:
        """One attempt from the remembered records: True when it landed, else the execution it
        tried to write (the commit may have landed with its reply lost) or False."""
        change = decide(held.execution, held.running)
        if change is None:
            return False
        writes = self._change_writes(held.execution, held.execution_version, held.running,
                                     held.running_version, change, summary=last)
        versions = self.batches.commit(writes)
        if versions is None:
            return change.execution
        self._after_change(change, versions, held.running, held.running_version, keep=keep)
        return True

    def _after_change(self, change: Change, versions: list[Any], running: ScheduleState | None,
                      running_version: Any, *, keep: bool) -> None:
        if not keep:
            if change.execution.state in FINAL_STATES:
                self.fires.finished(change.execution)
            return
        if _running_fields(change.schedule_state) != _running_fields(running):
            running, running_version = change.schedule_state, versions[1]
        self.fires.hold(Held(change.execution, versions[0], running, running_version))

    def _change_stored(self, execution_id: str, decide: Decide, what: str, tried: Execution | None,
                       *, keep: bool, last: bool) -> bool:
        exec_name = self.execution_name(execution_id)
        attempt = 0
        while True:
            exec_snap = self.batches.get_all([exec_name])[0]
            existing = execution_of(exec_snap)
            if existing is None:
                return False
            if existing == tried:
                # The previous commit landed but its reply was lost (the client retried it and
                # the retry failed the precondition that the landed commit had changed).
                return True
            running_snap = self.batches.get_all([self.running_name(existing.schedule_id)])[0]
            running = running_of(running_snap)
            change = decide(existing, running)
            if change is None:
                return False
            tried = change.execution
            writes = self._change_writes(
                existing, _version(exec_snap), running, _version(running_snap), change, summary=last
            )
            versions = self.batches.commit(writes)
            if versions is not None:
                ours = running is not None and running.running_execution_id == execution_id
                self._after_change(change, versions, running if ours else None,
                                   _version(running_snap) if ours else None, keep=keep)
                return True
            self._retry(attempt, what, schedule_id=existing.schedule_id,
                        fire_time=format_instant(existing.fire_time), execution_id=execution_id)
            attempt += 1

    def record(self, execution: Execution) -> bool:
        """Write a final record unless one exists for that execution; True when written."""
        validate_final_state(execution.state)
        write = Write(self.execution_name(execution.execution_id), execution_document(execution))
        try:
            self._wire.commit([write])
        except api_exceptions.AlreadyExists:
            return False
        self.fires.finished(execution)
        return True

    def record_all(self, executions: Sequence[Execution]) -> int:
        """`record` of each execution, up to 500 in one Commit; returns how many were written.
        A Commit fails as a whole when one of its records exists already (a takeover writing a
        tick's missed records again, a slot the audit recorded): the chunk is then read in one
        BatchGetDocuments and its absent records committed together once more, then one by one
        (only a record still racing gets there)."""
        for execution in executions:
            validate_final_state(execution.state)
        written = 0
        for start in range(0, len(executions), _COMMIT_LIMIT):
            chunk = list(executions[start:start + _COMMIT_LIMIT])
            if self._create_all(chunk):
                written += len(chunk)
                continue
            names = [self.execution_name(e.execution_id) for e in chunk]
            stored = self._wire.get_all(names)
            absent = [e for e, name in zip(chunk, names, strict=True) if stored.get(name) is None]
            if self._create_all(absent):
                written += len(absent)
            else:
                written += sum(self.record(e) for e in absent)
        return written

    def _create_all(self, executions: list[Execution]) -> bool:
        """Create every record in one Commit; False (nothing written) when one exists."""
        if not executions:
            return True
        try:
            self._wire.commit([Write(self.execution_name(e.execution_id), execution_document(e))
                               for e in executions])
        except api_exceptions.AlreadyExists:
            return False
        for execution in executions:
            self.fires.finished(execution)
        return True

    def get(self, execution_id: str) -> Execution | None:
        """One record, or None."""
        return execution_of(self.batches.get_all([self.execution_name(execution_id)])[0])

    def history(
        self, schedule_id: str, *, limit: int = 20, before: datetime | None = None
    ) -> list[Execution]:
        """A schedule's executions, newest fire time first; `before` pages (fire_time < before)."""
        if limit < 1:
            raise ValueError(f"limit: must be at least 1 (got {limit})")
        query = self.executions.where(
            filter=firestore.FieldFilter("schedule_id", "==", schedule_id))
        if before is not None:
            query = query.where(
                filter=firestore.FieldFilter("fire_time", "<", require_aware(before, "before"))
            )
        query = query.order_by("fire_time", direction=firestore.Query.DESCENDING).limit(limit)
        return [execution_from_document(snapshot.id, snapshot.to_dict() or {})
                for snapshot in query.stream()]

    def schedule_state(self, schedule_id: str) -> ScheduleState | None:
        """The per-schedule summary (the running fire and the last finished one), or None if
        the schedule never fired."""
        running, summary = self.batches.get_all([self.running_name(schedule_id),
                                                 self._summary_name(schedule_id)])
        return with_summary(running_of(running), summary)
