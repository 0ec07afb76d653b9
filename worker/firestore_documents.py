"""The documents of the Firestore ledger: how an execution and the per-schedule records are
stored, and read back. The collections and what each holds are described in
`worker.firestore_ledger`; every time is an aware UTC datetime.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from worker.firestore_wire import StoredDocument
from worker.ledger import Execution, FireMessage, ScheduleState, State
from worker.ledger_rules import require_aware, truncate_error


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
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                    moment.second, moment.microsecond, tzinfo=UTC)


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
        "message": None if execution.message is None else execution.message.to_json(),
    }


def running_document(state: ScheduleState) -> dict[str, Any]:
    """The fields of a running document: the schedule's running fire and its lease."""
    return {
        "schedule_id": state.schedule_id,
        "running_execution_id": state.running_execution_id,
        "running_fire_time": _stored(state.running_fire_time, "running_fire_time"),
        "running_lease_until": _stored(state.running_lease_until, "running_lease_until"),
    }


def summary_document(state: ScheduleState) -> dict[str, Any]:
    """The fields of a schedule state document: the last finished fire (None: left out)."""
    return {
        "schedule_id": state.schedule_id,
        "last_execution_id": state.last_execution_id,
        "last_fire_time": _stored(state.last_fire_time, "last_fire_time"),
        "last_state": None if state.last_state is None else str(state.last_state),
        "last_finished_at": _stored(state.last_finished_at, "last_finished_at"),
    }


def execution_from_document(execution_id: str, data: dict[str, Any]) -> Execution:
    """An execution from the fields of its document."""
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
        message=None if data.get("message") is None else FireMessage.from_json(data["message"]),
    )


def execution_of(document: StoredDocument | None) -> Execution | None:
    """The execution a document read holds (None: absent)."""
    return None if document is None else execution_from_document(document.id, document.fields)


def running_of(document: StoredDocument | None) -> ScheduleState | None:
    """The schedule state as far as decisions read it: the running fire, from its document."""
    if document is None:
        return None
    data = document.fields
    return ScheduleState(
        schedule_id=data["schedule_id"],
        running_execution_id=data.get("running_execution_id"),
        running_fire_time=_utc(data.get("running_fire_time")),
        running_lease_until=_utc(data.get("running_lease_until")),
    )


def with_summary(running: ScheduleState | None,
                 summary: StoredDocument | None) -> ScheduleState | None:
    """`running` with the last finished fire from the schedule state document added."""
    if summary is None:
        return running
    data = summary.fields
    last_state = data.get("last_state")
    return replace(
        running or ScheduleState(schedule_id=data["schedule_id"]),
        last_execution_id=data.get("last_execution_id"),
        last_fire_time=_utc(data.get("last_fire_time")),
        last_state=None if last_state is None else State(last_state),
        last_finished_at=_utc(data.get("last_finished_at")),
    )
