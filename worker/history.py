"""Execution history: a schedule's executions, newest fire time first, for the CLI and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.model import format_instant
from worker.ledger import Execution, Ledger

MAX_LIMIT = 1000


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
    """One execution as JSON-ready data, times in RFC 3339 UTC."""
    def instant(value: datetime | None) -> str | None:
        return None if value is None else format_instant(value)

    return {
        "execution_id": execution.execution_id,
        "schedule_id": execution.schedule_id,
        "fire_time": format_instant(execution.fire_time),
        "trigger": execution.trigger,
        "state": str(execution.state),
        "attempt": execution.attempt,
        "created_at": format_instant(execution.created_at),
        "started_at": instant(execution.started_at),
        "finished_at": instant(execution.finished_at),
        "duration_s": execution.duration_s,
        "worker_id": execution.worker_id,
        "error": execution.error,
        "detail": execution.detail,
        "expire_at": format_instant(execution.expire_at),
    }
