"""The reaper's query on Firestore: running executions whose lease has lapsed.

`state == "running" and REAP_WINDOW before now < lease_until <= now, order by lease_until`, served
by the composite index on (state, lease_until) that `terraform/firestore.tf` creates. `now` is
the server's time (`worker.server_clock`), so a replica's own clock cannot make a live lease look
lapsed; and the takeover that follows is decided again by the normal claim, under preconditions,
so a candidate that was renewed or taken over meanwhile is left alone.
"""

from __future__ import annotations

from datetime import datetime

from google.cloud import firestore

from worker.firestore_documents import execution_from_document
from worker.ledger import Execution, State
from worker.ledger_rules import REAP_WINDOW, require_aware


class FirestoreLapsedClaims:
    """`worker.ledger.LapsedClaims` on the executions collection of a Firestore ledger."""

    def __init__(self, client: firestore.Client, collection_prefix: str = "scion_") -> None:
        self._executions = client.collection(f"{collection_prefix}executions")

    def lapsed(self, now: datetime, *, limit: int) -> list[Execution]:
        """Up to `limit` running executions whose lease ended by `now`, longest lapsed
        first."""
        require_aware(now, "now")
        query = (
            self._executions
            .where(filter=firestore.FieldFilter("state", "==", str(State.RUNNING)))
            .where(filter=firestore.FieldFilter("lease_until", "<=", now))
            .where(filter=firestore.FieldFilter("lease_until", ">", now - REAP_WINDOW))
            .order_by("lease_until")
            .limit(limit)
        )
        return [execution_from_document(snapshot.id, snapshot.to_dict() or {})
                for snapshot in query.stream()]
