"""The tick's reads and writes of the registry documents on Firestore (`scheduler.registry`).

The due query is `owner == P and next_fire_time < B`, ordered by `next_fire_time`: the composite
index Terraform creates in tick mode (the emulator needs none). It is read a page at a time
behind a cursor, so a tick never holds more than a page of documents. A document is advanced
with a precondition on the update time it was read with: a control write in between (an edit,
a pause, a resume) wins, and its `next_fire_time`, recomputed from its `owed_since`, stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from scheduler.due import Owed
from scheduler.egress import EgressPolicy
from scheduler.logs import get_logger
from scheduler.registry import entry_from_document
from scheduler.validation import PUBLIC_ONLY, registered_action_types
from worker.firestore_wire import (
    FirestoreWire,
    StoredDocument,
    StructuredQuery,
    Write,
    encode_timestamp,
)

log = get_logger(__name__)

NEXT_FIRE_TIME = "next_fire_time"
OWNER = "owner"
DEFINITION = "definition"
# The fields `scheduler.registry.entry_from_document` reads.
ENTRY_FIELDS = ("schedule_id", DEFINITION, "fingerprint", "owed_since", "paused_since")
# Firestore's limit of writes per commit.
_BATCH = 500


@dataclass(frozen=True)
class DueDocument:
    """One registry document as the tick read it: `fields` holds what `entry_from_document`
    reads, None when only its ID and next fire time were read (a page handed to a shard)."""

    document_id: str
    next_fire_time: datetime
    # A protobuf Timestamp: the version a guarded write must match.
    update_time: Any
    fields: Mapping[str, Any] | None = None

    def may_be_due(self, minute: datetime) -> bool:
        """Cheaply, before its definition is parsed: whether the tick of `minute` may have a
        slot of it to publish (a document past `minute` can only be a one-shot's)."""
        if self.fields is None:
            return False
        return self.next_fire_time <= minute or '"at":' in str(self.fields.get(DEFINITION))


@dataclass(frozen=True)
class Page:
    """A page of the due query, and the cursor after it (None: it was the last)."""

    documents: list[DueDocument]
    cursor: Any


@dataclass(frozen=True)
class Advance:
    """Move a document's `next_fire_time` on, unless it changed since the tick read it."""

    document: DueDocument
    next_fire_time: datetime | None


class FirestoreTickStore:
    """The registry collection as the tick reads and advances it."""

    def __init__(self, client: firestore.Client, collection_prefix: str, owner: str,
                 egress: EgressPolicy = PUBLIC_ONLY) -> None:
        self._collection = client.collection(f"{collection_prefix}schedules")
        # Reads and advances as plain protobuf: through the client's snapshots a document read
        # cost about three times as much, through its batch an advance six times.
        self._wire = FirestoreWire(client)
        self._owner = owner
        self._egress = egress
        self._action_types = registered_action_types()

    def due_page(self, before: datetime, size: int, cursor: Any = None, *,
                 ids_only: bool = False) -> Page:
        """The next page of documents whose `next_fire_time` is earlier than `before`, after
        `cursor` (a page's own cursor); `ids_only` reads only their IDs and next fire times."""
        # Only the fields the tick reads: a document's others (the sync's digests, its history)
        # would be decoded for nothing.
        fields = [NEXT_FIRE_TIME] if ids_only else [NEXT_FIRE_TIME, *ENTRY_FIELDS]
        stored = self._wire.run_query(self._due_query(before, size, fields, cursor),
                                      lenient=True)
        documents = [self._due(d, parse=not ids_only) for d in stored]
        return Page([d for d in documents if d is not None],
                    stored[-1] if len(stored) == size else None)

    def _due_query(self, before: datetime, size: int, fields: Sequence[str],
                   cursor: StoredDocument | None) -> Any:
        """`owner == P and next_fire_time < before`, ordered by next fire time and name (the
        order a cursor needs), `size` documents after `cursor`."""
        query = StructuredQuery()
        query.from_.add().collection_id = self._collection.id
        where = query.where.composite_filter
        where.op = StructuredQuery.CompositeFilter.Operator.AND
        operator = StructuredQuery.FieldFilter.Operator
        owner, due = where.filters.add().field_filter, where.filters.add().field_filter
        owner.field.field_path, owner.op = OWNER, operator.EQUAL
        owner.value.string_value = self._owner
        due.field.field_path, due.op = NEXT_FIRE_TIME, operator.LESS_THAN
        due.value.timestamp_value.CopyFrom(encode_timestamp(before))
        for path in (NEXT_FIRE_TIME, "__name__"):
            order = query.order_by.add()
            order.field.field_path, order.direction = path, StructuredQuery.Direction.ASCENDING
        for path in fields:
            query.select.fields.add().field_path = path
        query.limit.value = size
        if cursor is not None:
            after = query.start_at
            after.values.add().timestamp_value.CopyFrom(
                encode_timestamp(cursor.fields[NEXT_FIRE_TIME]))
            after.values.add().reference_value = self._wire.name(self._collection.id, cursor.id)
            after.before = False
        return query

    def get(self, document_ids: Sequence[str]) -> list[DueDocument]:
        """These documents as they are now, those of this owner that have a next fire time."""
        names = [self._wire.name(self._collection.id, d) for d in document_ids]
        stored = self._wire.get_all(names, field_paths=[OWNER, NEXT_FIRE_TIME, *ENTRY_FIELDS],
                                    lenient=True)
        found = []
        for name in names:
            document = stored.get(name)
            if document is not None and document.fields.get(OWNER) == self._owner:
                due = self._due(document, parse=True)
                if due is not None:
                    found.append(due)
        return found

    def advance(self, advances: Sequence[Advance]) -> int:
        """Write each document's new `next_fire_time` if it did not change since it was read;
        returns how many had changed (and were left to the change)."""
        conflicts = 0
        for start in range(0, len(advances), _BATCH):
            chunk = advances[start:start + _BATCH]
            try:
                self._wire.commit([self._write(item) for item in chunk])
            except (gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):
                # One changed document fails the whole commit: the rest one by one.
                conflicts += sum(not self._advance_one(item) for item in chunk)
        return conflicts

    def _advance_one(self, item: Advance) -> bool:
        try:
            self._wire.commit([self._write(item)])
        except (gexc.FailedPrecondition, gexc.NotFound):
            log.info("registry document changed during the tick; the change wins",
                     document=item.document.document_id)
            return False
        return True

    def _write(self, item: Advance) -> Write:
        return Write(self._wire.name(self._collection.id, item.document.document_id),
                     {NEXT_FIRE_TIME: item.next_fire_time}, item.document.update_time,
                     masked=True)

    def _due(self, document: StoredDocument, *, parse: bool) -> DueDocument | None:
        next_fire_time = document.fields.get(NEXT_FIRE_TIME)
        if not isinstance(next_fire_time, datetime):
            return None
        fields = {name: document.fields.get(name) for name in ENTRY_FIELDS} if parse else None
        return DueDocument(document.id, next_fire_time, document.update_time, fields)

    def owed(self, document: DueDocument) -> Owed | None:
        """What a document's schedule owes; None (logged) when it cannot be read."""
        try:
            return entry_from_document(dict(document.fields or {}), self._action_types,
                                       self._egress).owed
        except ValueError as exc:
            log.error("registry document unreadable; its schedule is not ticked",
                      document=document.document_id, error=str(exc))
            return None
