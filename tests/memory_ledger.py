"""A thread-safe in-memory `Ledger` for fast unit tests of the pipeline.

It decides as the real adapters do, by `worker.ledger_rules` (one lock stands in for the store's
transaction); the real adapters are tested by the ledger contract suite.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from worker.ledger import Claim, ClaimRequest, Execution, ScheduleState
from worker.ledger_rules import (
    Decide,
    HolderChanges,
    HolderStep,
    plan_claim,
    validate_final_state,
    validate_request,
)


class MemoryLedger(HolderChanges):
    """Executions and schedule states in dictionaries, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executions: dict[str, Execution] = {}
        self._states: dict[str, ScheduleState] = {}
        self.renewals: list[tuple[str, str, bool]] = []

    def claim(self, request: ClaimRequest) -> Claim:
        """See `worker.ledger`."""
        validate_request(request)
        with self._lock:
            plan = plan_claim(request, self._executions.get(request.execution_id),
                              self._states.get(request.schedule_id))
            if plan.write:
                self._executions[request.execution_id] = plan.execution
            if plan.schedule_state is not None:
                self._states[request.schedule_id] = plan.schedule_state
            return Claim(plan.result, plan.execution)

    def _apply_change(self, execution_id: str, decide: Decide, step: HolderStep) -> bool:
        with self._lock:
            existing = self._executions.get(execution_id)
            change = None if existing is None else decide(
                existing, self._states.get(existing.schedule_id))
            if change is None:
                return False
            self._executions[execution_id] = change.execution
            if change.schedule_state is not None:
                self._states[change.schedule_state.schedule_id] = change.schedule_state
            return True

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        """See `worker.ledger`; each call is kept in `renewals`."""
        renewed = super().renew(execution_id, worker_id, lease_until)
        self.renewals.append((execution_id, worker_id, renewed))
        return renewed

    def record(self, execution: Execution) -> bool:
        """See `worker.ledger`."""
        validate_final_state(execution.state)
        with self._lock:
            if execution.execution_id in self._executions:
                return False
            self._executions[execution.execution_id] = execution
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
