"""The ledger port: where fires are claimed and their outcomes recorded.

One execution record per (schedule ID, fire time), keyed by `scheduler.contract.execution_id`.
Adapters: Firestore (`worker.firestore_ledger`, for HA) and SQLite (`worker.sqlite_ledger`, for
the single-instance fallback). Both pass the same contract suite (`tests/test_ledger_contract.py`).

The claim decides, atomically with respect to every other worker:

* no record             -> create it `running`, held by this worker until `lease_until`: CLAIMED
* `running`, lease over -> take it over, attempt + 1: TAKEN_OVER (the holder died, or gave up)
* `running`, lease live -> BUSY: neither run nor lose it; the delivery is retried later
* finished              -> DONE: a duplicate delivery, acknowledged and skipped
* overlap `skip`, no record, and another fire of the same schedule is running with a live
  lease -> this fire is recorded `skipped`: OVERLAP. A fire that was claimed once is never
  skipped: its takeover runs even when a newer fire of the schedule started while its holder
  was dead (see the README's failure model).

A running execution keeps the contract message that brought it (`FireMessage`), so that the
reaper (`worker.reaper`) can take over a claim whose holder died without waiting for Pub/Sub to
redeliver it; `LapsedClaims` is the port through which it finds them.

The overlap check reads and writes a per-schedule state record (which fire runs now, the last
fire and its outcome) in the same atomic step as the claim.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

DEFAULT_RETENTION = timedelta(days=30)
MAX_ERROR_LENGTH = 2_000
# A message larger than this is not kept with its execution (a ledger document holds at most
# 1 MiB); such a fire's takeover waits for Pub/Sub's redelivery.
MAX_KEPT_MESSAGE_BYTES = 64 * 1024


class State(StrEnum):
    """Where an execution stands."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    MISSED = "missed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset(
    {State.SUCCEEDED, State.FAILED, State.SKIPPED, State.MISSED, State.CANCELLED}
)


class ClaimResult(StrEnum):
    """What a claim found; see the module docstring."""

    CLAIMED = "claimed"
    TAKEN_OVER = "taken_over"
    BUSY = "busy"
    DONE = "done"
    OVERLAP = "overlap"

    @property
    def run(self) -> bool:
        """Whether the claimer now holds the execution and should run the action."""
        return self in (ClaimResult.CLAIMED, ClaimResult.TAKEN_OVER)


@dataclass(frozen=True)
class FireMessage:
    """The contract message as it was delivered: enough to handle the fire again (its
    signature still verifies, its fire time derives the same) when its holder died."""

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    published_at: datetime

    def to_json(self) -> str:
        """The stored form: one JSON string (both stores keep it as text)."""
        return json.dumps({
            "message_id": self.message_id, "data": base64.b64encode(self.data).decode("ascii"),
            "attributes": dict(self.attributes), "published_at": self.published_at.isoformat(),
        }, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> FireMessage:
        """The message from its stored form; ValueError when it is not one."""
        try:
            stored = json.loads(raw)
            published_at = datetime.fromisoformat(stored["published_at"])
            return cls(str(stored["message_id"]), base64.b64decode(stored["data"]),
                       {str(k): str(v) for k, v in stored["attributes"].items()}, published_at)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"message: not a stored fire message ({exc})") from exc


def kept_message(message: FireMessage) -> FireMessage | None:
    """`message` when it is small enough to keep with its execution, else None."""
    size = len(message.data) + sum(len(k) + len(v) for k, v in message.attributes.items())
    return message if size <= MAX_KEPT_MESSAGE_BYTES else None


@dataclass(frozen=True)
class Execution:
    """One execution record (history entry). Times are aware UTC datetimes."""

    execution_id: str
    schedule_id: str
    fire_time: datetime
    trigger: str
    state: State
    attempt: int
    created_at: datetime
    expire_at: datetime
    worker_id: str | None = None
    lease_until: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: str | None = None
    detail: str | None = None
    # While running: the message to take it over from (None once final, or when too large).
    message: FireMessage | None = None


def missed_execution(
    execution_id: str,
    schedule_id: str,
    fire_time: datetime,
    trigger: str,
    *,
    worker_id: str,
    now: datetime,
    retention: timedelta,
    error: str,
) -> Execution:
    """The final record of a fire that never started (too late, or never delivered), written
    at `now` by `worker_id` and kept for `retention`; `error` says why."""
    return Execution(
        execution_id=execution_id,
        schedule_id=schedule_id,
        fire_time=fire_time,
        trigger=trigger,
        state=State.MISSED,
        attempt=0,
        created_at=now,
        expire_at=now + retention,
        worker_id=worker_id,
        finished_at=now,
        error=error,
    )


@dataclass(frozen=True)
class ClaimRequest:
    """Everything a claim needs; `now` is passed in so that tests control the clock."""

    execution_id: str
    schedule_id: str
    fire_time: datetime
    trigger: str
    worker_id: str
    lease: timedelta
    overlap: str
    now: datetime
    retention: timedelta = DEFAULT_RETENTION
    message: FireMessage | None = None


@dataclass(frozen=True)
class Claim:
    """The claim's result and the record as it stands after the claim."""

    result: ClaimResult
    execution: Execution


@dataclass(frozen=True)
class ScheduleState:
    """Per-schedule summary: the fire running now (if any) and the last finished one."""

    schedule_id: str
    running_execution_id: str | None = None
    running_fire_time: datetime | None = None
    running_lease_until: datetime | None = None
    last_execution_id: str | None = None
    last_fire_time: datetime | None = None
    last_state: State | None = None
    last_finished_at: datetime | None = None


class Ledger(Protocol):
    """The store behind the pipeline. Every method is safe to call from many threads and, for
    the Firestore adapter, from many processes and machines at once."""

    def claim(self, request: ClaimRequest) -> Claim:
        """Claim a fire; see the module docstring for the outcomes."""
        ...

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        """Extend the lease (heartbeat). False when this worker no longer holds it."""
        ...

    def finish(
        self, execution_id: str, worker_id: str, state: State, *, now: datetime,
        error: str | None = None, detail: str | None = None,
    ) -> bool:
        """Record a final state (error truncated to MAX_ERROR_LENGTH) and clear the schedule's
        running fire. False when this worker no longer holds the execution (nothing written)."""
        ...

    def release(
        self, execution_id: str, worker_id: str, *, now: datetime, error: str | None = None
    ) -> bool:
        """Give up a held execution without finishing it (retryable failure, shutdown): it stays
        `running` with its lease ended and no holder, so the next delivery takes it over at
        once (and the reaper after the retry backoff, `ledger_rules.reap_due`)."""
        ...

    def record(self, execution: Execution) -> bool:
        """Write a final record (missed, or a fire refused before any claim) unless a record for
        that execution exists already. True when written."""
        ...

    def get(self, execution_id: str) -> Execution | None:
        """One record, or None."""
        ...

    def history(
        self, schedule_id: str, *, limit: int = 20, before: datetime | None = None
    ) -> list[Execution]:
        """A schedule's executions, newest fire time first; `before` pages (fire_time < before)."""
        ...

    def schedule_state(self, schedule_id: str) -> ScheduleState | None:
        """The per-schedule summary, or None if the schedule never fired."""
        ...


class LapsedClaims(Protocol):
    """What the reaper asks the ledger: the running executions whose lease has lapsed."""

    def lapsed(self, now: datetime, *, limit: int) -> list[Execution]:
        """Up to `limit` running executions whose lease ended by `now` (at most
        `ledger_rules.REAP_WINDOW` before it), the longest lapsed first. The store's index
        finds them; `ledger_rules.reap_due` decides which to take over."""
        ...
