"""Execution history: a schedule's executions, newest fire time first, for the CLI and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.model import format_instant, parse_instant
from worker.ledger import Execution, Ledger
from worker.record_codec import RecordCodec, Times, field_names

MAX_LIMIT = 1000
JSON_TIMES = Times(write=lambda value, _name: format_instant(value), read=parse_instant)
_SHOWN = RecordCodec(Execution, JSON_TIMES, [
    name for name in field_names(Execution) if name not in ("lease_until", "message")
])


def list_runs(ledger: Ledger, schedule_id: str, limit: int = 20,
              before: datetime | None = None) -> list[Execution]:
    """Up to `limit` executions of `schedule_id`, newest fire time first; `before` pages on
    (only fire times strictly earlier). `ValueError` naming the argument on bad input."""
    if not schedule_id:
        raise ValueError("schedule_id: required")
    if isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: must be between 1 and {MAX_LIMIT} (got {limit!r})")
    if before is not None and before.tzinfo is None:
        raise ValueError("before: must be an aware datetime")
    return ledger.history(schedule_id, limit=limit, before=before)


def run_to_dict(execution: Execution) -> dict[str, Any]:
    """One execution as JSON-ready data, times in RFC 3339 UTC, without what only a claim uses
    (its lease, the message kept for a takeover)."""
    return _SHOWN.encode(execution)
