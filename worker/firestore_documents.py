"""The documents of the Firestore ledger: how an execution and the per-schedule records are
stored, and read back. The collections and what each holds are described in
`worker.firestore_ledger`; every time is an aware UTC datetime.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from worker.firestore_wire import StoredDocument
from worker.ledger import Execution, ScheduleState
from worker.ledger_rules import require_aware, truncate_error
from worker.record_codec import RecordCodec, Times, field_names


def state_document_id(schedule_id: str) -> str:
    """The schedule state document's ID: sha256 hex of the schedule ID."""
    return hashlib.sha256(schedule_id.encode("utf-8")).hexdigest()


def _utc(value: Any) -> datetime:
    """A stored timestamp as a plain aware UTC datetime (the client returns a subclass with
    nanoseconds; Firestore keeps microseconds)."""
    moment: datetime = value.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                    moment.second, moment.microsecond, tzinfo=UTC)


FIRESTORE_TIMES = Times(write=require_aware, read=_utc)
# An execution document's ID is the execution ID; a running document holds the schedule's
# running fire, a schedule state document its last finished one.
_EXECUTIONS = RecordCodec(Execution, FIRESTORE_TIMES,
                          [name for name in field_names(Execution) if name != "execution_id"])
_RUNNING = RecordCodec(ScheduleState, FIRESTORE_TIMES,
                       ("schedule_id", *field_names(ScheduleState, "running_")))
_SUMMARY = RecordCodec(ScheduleState, FIRESTORE_TIMES,
                       ("schedule_id", *field_names(ScheduleState, "last_")))


def execution_document(execution: Execution) -> dict[str, Any]:
    """The fields of an execution document (None: the field is left out when written)."""
    return _EXECUTIONS.encode(execution, error=truncate_error(execution.error))


def running_document(state: ScheduleState) -> dict[str, Any]:
    """The fields of a running document: the schedule's running fire and its lease."""
    return _RUNNING.encode(state)


def summary_document(state: ScheduleState) -> dict[str, Any]:
    """The fields of a schedule state document: the last finished fire (None: left out)."""
    return _SUMMARY.encode(state)


def execution_from_document(execution_id: str, data: dict[str, Any]) -> Execution:
    """An execution from the fields of its document."""
    return _EXECUTIONS.decode(data, execution_id=execution_id)


def execution_of(document: StoredDocument | None) -> Execution | None:
    """The execution a document read holds (None: absent)."""
    return None if document is None else execution_from_document(document.id, document.fields)


def running_of(document: StoredDocument | None) -> ScheduleState | None:
    """The schedule state as far as decisions read it: the running fire, from its document."""
    return None if document is None else _RUNNING.decode(document.fields)


def with_summary(running: ScheduleState | None,
                 summary: StoredDocument | None) -> ScheduleState | None:
    """`running` with the last finished fire from the schedule state document added (only
    its `last_` fields: documents of older versions held the running fire too)."""
    if summary is None:
        return running
    return _SUMMARY.decode(summary.fields, **({} if running is None else _RUNNING.values(running)))
