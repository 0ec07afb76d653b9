"""The audit's query on Firestore: which executions have a fire time in a window.

`fire_time > start and fire_time <= end` over the executions collection, served by Firestore's
automatic single-field index on `fire_time` (no composite index needed). It returns document IDs
only (a projection on `trigger`): each document still costs one read, which is the audit's cost
(README, The audit).
"""

from __future__ import annotations

from datetime import datetime

from google.cloud import firestore

from worker.ledger_rules import require_aware


class FirestoreSlotRecords:
    """`worker.audit.SlotRecords` on the executions collection of a Firestore ledger."""

    def __init__(self, client: firestore.Client, collection_prefix: str = "scion_") -> None:
        self._executions = client.collection(f"{collection_prefix}executions")

    def recorded(self, start: datetime, end: datetime) -> set[str]:
        """The IDs of every execution with a fire time in `(start, end]`."""
        require_aware(start, "start")
        require_aware(end, "end")
        query = (
            self._executions
            .where(filter=firestore.FieldFilter("fire_time", ">", start))
            .where(filter=firestore.FieldFilter("fire_time", "<=", end))
            .select(["trigger"])
        )
        return {snapshot.id for snapshot in query.stream()}
