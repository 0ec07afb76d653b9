"""The audit's read of the whole schedule registry (`scheduler.registry`), a page at a time as
plain protobuf.

The audit reads every registry document each minute, and in tick mode there can be 100,000 of
them: through the client's snapshots that read cost about 330 us a document, and the audit
became most of a replica's CPU (bench/README.md, Tick mode). This reads only the fields an entry
needs, through `worker.firestore_wire` (as the tick reads its due documents,
`worker.tick_store`), a page of documents at a time behind a cursor on the document name, so
the audit still never holds more than a page.

Only the deployment's own documents are audited (`owner` is its job prefix, or absent on a
document written before owners were recorded, as `scheduler.registry` decides): two deployments
that share a collection prefix do not fire each other's slots.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.cloud import firestore

from scheduler.egress import EgressPolicy
from scheduler.logs import get_logger
from scheduler.registry import Entry, entry_from_document
from scheduler.validation import PUBLIC_ONLY, registered_action_types
from worker.firestore_wire import FirestoreWire, StoredDocument, StructuredQuery
from worker.tick_store import ENTRY_FIELDS, NEXT_FIRE_TIME, OWNER

log = get_logger(__name__)

_READ = (*ENTRY_FIELDS, NEXT_FIRE_TIME, OWNER)
# Documents per query: enough that the round trips cost little, few enough to hold at once.
PAGE = 1_000


class RegistryScan:
    """Every registry document of one deployment, as the audit reads them
    (`worker.audit.Registry`)."""

    def __init__(self, client: firestore.Client, collection_prefix: str, owner: str | None,
                 egress: EgressPolicy = PUBLIC_ONLY, *, page: int = PAGE) -> None:
        self._collection_id = f"{collection_prefix}schedules"
        self._wire = FirestoreWire(client)
        self._owner = owner
        self._egress = egress
        self._page = page

    def iter_entries(self) -> Iterator[Entry]:
        """Every owned schedule's entry, one page of documents read at a time; a document that
        cannot be read is logged and skipped, so it does not blind the audit to the rest."""
        # Read once: looking the entry points up costs more than parsing a schedule.
        action_types = registered_action_types()
        cursor: StoredDocument | None = None
        while True:
            documents = self._wire.run_query(self._query(cursor), lenient=True)
            for document in documents:
                entry = self._entry(document, action_types)
                if entry is not None:
                    yield entry
            if len(documents) < self._page:
                return
            cursor = documents[-1]

    def _query(self, cursor: StoredDocument | None) -> Any:
        """The next page by document name, after `cursor`, only the fields an entry needs."""
        query = StructuredQuery()
        query.from_.add().collection_id = self._collection_id
        order = query.order_by.add()
        order.field.field_path, order.direction = "__name__", StructuredQuery.Direction.ASCENDING
        for path in _READ:
            query.select.fields.add().field_path = path
        query.limit.value = self._page
        if cursor is not None:
            after = query.start_at
            after.values.add().reference_value = self._wire.name(self._collection_id, cursor.id)
            after.before = False
        return query

    def _entry(self, document: StoredDocument, action_types: frozenset[str]) -> Entry | None:
        owner = document.fields.get(OWNER)
        if self._owner is not None and owner is not None and owner != self._owner:
            return None
        try:
            return entry_from_document(dict(document.fields), action_types, self._egress)
        except ValueError as exc:
            log.error("registry document unreadable; its schedule is not audited",
                      document=document.id, error=str(exc))
            return None
