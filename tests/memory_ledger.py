"""A thread-safe in-memory `Ledger` for fast unit tests of the pipeline.

It follows the claim rules of `worker.ledger` (one lock stands in for the store's
transaction); the real adapters are tested by the ledger contract suite.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from worker.ledger import (
    FINAL_STATES,
    MAX_ERROR_LENGTH,
    Claim,
    ClaimRequest,
    ClaimResult,
    Execution,
    ScheduleState,
    State,
)


class MemoryLedger:
    """Executions and schedule states in dictionaries, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executions: dict[str, Execution] = {}
        self._states: dict[str, ScheduleState] = {}
        self.renewals: list[tuple[str, str, bool]] = []

    def claim(self, request: ClaimRequest) -> Claim:
        """See `worker.ledger`."""
        with self._lock:
            now = request.now
            current = self._executions.get(request.execution_id)
            if current is not None and current.state in FINAL_STATES:
                return Claim(ClaimResult.DONE, current)
            if (
                current is not None
                and current.lease_until is not None
                and current.lease_until > now
            ):
                return Claim(ClaimResult.BUSY, current)
            if current is not None:
                taken = replace(current, worker_id=request.worker_id, attempt=current.attempt + 1,
                                lease_until=now + request.lease, started_at=now)
                self._executions[taken.execution_id] = taken
                self._set_running(taken)
                return Claim(ClaimResult.TAKEN_OVER, taken)
            state = self._states.get(request.schedule_id)
            if (request.overlap == "skip" and state is not None and state.running_execution_id
                    and state.running_lease_until is not None and state.running_lease_until > now):
                skipped = self._new(request, State.SKIPPED, attempt=0, finished_at=now,
                                    detail=f"overlap: {state.running_execution_id} is running")
                self._executions[skipped.execution_id] = skipped
                self._set_last(skipped)
                return Claim(ClaimResult.OVERLAP, skipped)
            running = self._new(request, State.RUNNING, attempt=1, lease_until=now + request.lease,
                                started_at=now, message=request.message)
            self._executions[running.execution_id] = running
            self._set_running(running)
            return Claim(ClaimResult.CLAIMED, running)

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        """See `worker.ledger`."""
        with self._lock:
            current = self._held(execution_id, worker_id)
            self.renewals.append((execution_id, worker_id, current is not None))
            if current is None:
                return False
            self._executions[execution_id] = renewed = replace(current, lease_until=lease_until)
            self._set_running(renewed)
            return True

    def finish(
        self, execution_id: str, worker_id: str, state: State, *, now: datetime,
        error: str | None = None, detail: str | None = None,
    ) -> bool:
        """See `worker.ledger`."""
        with self._lock:
            current = self._held(execution_id, worker_id)
            if current is None:
                return False
            started = current.started_at or current.created_at
            done = replace(current, state=state, finished_at=now, lease_until=None,
                           duration_s=(now - started).total_seconds(),
                           error=error[:MAX_ERROR_LENGTH] if error else None, detail=detail)
            self._executions[execution_id] = done
            self._set_last(done)
            return True

    def release(
        self, execution_id: str, worker_id: str, *, now: datetime, error: str | None = None
    ) -> bool:
        """See `worker.ledger`."""
        with self._lock:
            current = self._held(execution_id, worker_id)
            if current is None:
                return False
            self._executions[execution_id] = released = replace(
                current, lease_until=now, worker_id=None,
                error=error[:MAX_ERROR_LENGTH] if error else None)
            self._set_running(released)
            return True

    def record(self, execution: Execution) -> bool:
        """See `worker.ledger`."""
        with self._lock:
            if execution.execution_id in self._executions:
                return False
            self._executions[execution.execution_id] = execution
            self._set_last(execution)
            return True

    def get(self, execution_id: str) -> Execution | None:
        """See `worker.ledger`."""
        with self._lock:
            return self._executions.get(execution_id)

    def history(
        self, schedule_id: str, *, limit: int = 20, before: datetime | None = None
    ) -> list[Execution]:
        """See `worker.ledger`."""
        with self._lock:
            found = [e for e in self._executions.values() if e.schedule_id == schedule_id
                     and (before is None or e.fire_time < before)]
        return sorted(found, key=lambda e: e.fire_time, reverse=True)[:limit]

    def schedule_state(self, schedule_id: str) -> ScheduleState | None:
        """See `worker.ledger`."""
        with self._lock:
            return self._states.get(schedule_id)

    def recorded(self, start: datetime, end: datetime) -> set[str]:
        """The audit's question (`worker.audit.SlotRecords`): every execution with a fire time
        in `(start, end]`."""
        with self._lock:
            return {e.execution_id for e in self._executions.values()
                    if start < e.fire_time <= end}

    def steal(self, execution_id: str, worker_id: str) -> None:
        """Test helper: hand a running execution to another worker, as a takeover would."""
        with self._lock:
            self._executions[execution_id] = replace(
                self._executions[execution_id], worker_id=worker_id
            )

    # Internals, called with the lock held.

    def _held(self, execution_id: str, worker_id: str) -> Execution | None:
        current = self._executions.get(execution_id)
        if current is None or current.state is not State.RUNNING or current.worker_id != worker_id:
            return None
        return current

    @staticmethod
    def _new(request: ClaimRequest, state: State, *, attempt: int, **fields: object) -> Execution:
        return Execution(
            execution_id=request.execution_id, schedule_id=request.schedule_id,
            fire_time=request.fire_time, trigger=request.trigger, state=state, attempt=attempt,
            created_at=request.now, expire_at=request.now + request.retention,
            worker_id=request.worker_id, **fields,  # type: ignore[arg-type]
        )

    def _set_running(self, execution: Execution) -> None:
        state = self._states.get(execution.schedule_id) or ScheduleState(execution.schedule_id)
        self._states[execution.schedule_id] = replace(
            state, running_execution_id=execution.execution_id,
            running_fire_time=execution.fire_time, running_lease_until=execution.lease_until)

    def _set_last(self, execution: Execution) -> None:
        state = self._states.get(execution.schedule_id) or ScheduleState(execution.schedule_id)
        if state.running_execution_id == execution.execution_id:
            state = replace(state, running_execution_id=None, running_fire_time=None,
                            running_lease_until=None)
        self._states[execution.schedule_id] = replace(
            state, last_execution_id=execution.execution_id, last_fire_time=execution.fire_time,
            last_state=execution.state, last_finished_at=execution.finished_at)
