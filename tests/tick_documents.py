"""Registry documents as tick mode reads them, written through their documented fields
(`scheduler.registry`): what the tick tests and `bench/bench_ticks.py` put in
the emulator."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from scheduler.model import Schedule
from scheduler.registry import document_id, document_of

OWNER = "scion-"
PREFIX = "scion_"


def tick_document(schedule: Schedule, owed_since: datetime, next_fire_time: datetime | None,
                  owner: str = OWNER) -> dict[str, Any]:
    """A registry document with the two tick-mode fields set as given."""
    fields = document_of(schedule, owed_since, owed_since if schedule.paused else None,
                         owed_since)
    fields["next_fire_time"] = next_fire_time
    fields["owner"] = owner
    return fields


def put_documents(client: Any, entries: Iterable[tuple[Schedule, dict[str, Any]]],
                  prefix: str = PREFIX) -> int:
    """Write documents in batches of 500; returns how many."""
    collection = client.collection(f"{prefix}schedules")
    return _write(client, ((collection.document(document_id(schedule.id)), fields)
                           for schedule, fields in entries))


def delete_documents(client: Any, schedules: Iterable[Schedule], prefix: str = PREFIX) -> int:
    """Delete the schedules' documents in batches of 500; returns how many."""
    collection = client.collection(f"{prefix}schedules")
    return _write(client, ((collection.document(document_id(s.id)), None) for s in schedules))


def _write(client: Any, writes: Iterable[tuple[Any, dict[str, Any] | None]]) -> int:
    """Set each document to its fields (None: delete it), in batches of 500."""
    batch, pending, count = client.batch(), 0, 0
    for reference, fields in writes:
        if fields is None:
            batch.delete(reference)
        else:
            batch.set(reference, fields)
        pending += 1
        count += 1
        if pending == 500:
            batch.commit()
            batch, pending = client.batch(), 0
    if pending:
        batch.commit()
    return count


def next_fire_time_of(client: Any, schedule_id: str, prefix: str = PREFIX) -> Any:
    """A document's stored `next_fire_time`."""
    snapshot = client.collection(f"{prefix}schedules").document(document_id(schedule_id)).get()
    return (snapshot.to_dict() or {}).get("next_fire_time")
