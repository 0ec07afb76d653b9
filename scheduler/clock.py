"""The local clock: Cloud Scheduler's job, in process, for the single-instance fallback.

It fires each schedule at its slots in its time zone by emitting the same contract message a
Cloud Scheduler job would publish, stamped with the slot as its publish time — exactly what a
worker sees when Pub/Sub delivers a message that was published on time. The worker's pipeline
then applies the same rules as in HA mode: catch-up windows for late fires, and the ledger's
claim so that nothing runs twice.

Restarts: the clock keeps a checkpoint in a small JSON file: the instant up to which every slot
was emitted *and settled* (its delivery acknowledged with a final record, see `settled`). On
start it emits every slot after the checkpoint, so fires missed while it was down are run or
recorded `missed` by the pipeline according to each schedule's catch-up policy, and a fire that
was still queued, waiting for a retry or running when the process stopped is emitted again and
taken over from its record.

Why settled and not merely emitted: the in-process queue dies with the process, so a slot that
was emitted but not yet settled exists nowhere else. A fixed lookback on start (re-emit the last
N minutes) would bound how long a fire may stay unsettled, but a retry backoff has no such
bound; tracking the unsettled slots costs a set in memory and re-emits exactly as far back as
needed. Slots after the earliest unsettled one that did settle are emitted again too; the
ledger's claim finds them finished and drops them, so nothing runs twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.contract import Message, build_message, execution_id
from scheduler.cron import iter_fires
from scheduler.due import slots_in
from scheduler.logs import get_logger
from scheduler.model import Schedule, format_instant, parse_instant

log = get_logger(__name__)

Emit = Callable[[Message, datetime], None]
# Wake at least this often, so a clock jump (suspend, NTP step) is noticed without a slot.
MAX_SLEEP = timedelta(seconds=30)
# After a long outage, look back no further than this; older slots are beyond any sane window.
MAX_LOOKBACK = timedelta(days=7)
# The checkpoint sits this far before the earliest unsettled slot, so that slot is emitted
# again: slots are emitted from an exclusive lower bound.
_BEFORE = timedelta(microseconds=1)


def utc_now() -> datetime:
    """The current instant in UTC."""
    return datetime.now(UTC)


class Checkpoint:
    """The instant up to which all slots were emitted and settled, kept in a JSON file (atomic
    writes)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> datetime | None:
        """The saved instant, or None on first start (or without a file)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            saved = json.loads(self.path.read_text())
            # `emitted_until`: the key of the first version, which saved on emission.
            return parse_instant(
                saved["settled_until"] if "settled_until" in saved else saved["emitted_until"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "clock checkpoint unreadable; starting from now",
                path=str(self.path),
                error=str(exc),
            )
            return None

    def save(self, instant: datetime) -> None:
        """Persist `instant`; a crash mid-write leaves the previous checkpoint intact."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".clock-")
        with os.fdopen(fd, "w") as handle:
            json.dump({"settled_until": format_instant(instant)}, handle)
        os.replace(tmp, self.path)


class LocalClock:
    """Emits fire messages for `schedules` at their slots until stopped."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        emit: Emit,
        *,
        checkpoint: Checkpoint | None = None,
        signing_key: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._emit = emit
        self._checkpoint = checkpoint or Checkpoint(None)
        self._signing_key = signing_key
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._schedules: tuple[Schedule, ...] = ()
        self._messages: dict[str, Message] = {}
        # Emitted, not yet settled: (schedule ID, slot). Guarded by `_lock`, like the rest.
        self._unsettled: set[tuple[str, datetime]] = set()
        self._emitted_until: datetime | None = None
        self._saved: datetime | None = None
        self._closed = False
        self.set_schedules(schedules)

    def set_schedules(self, schedules: Sequence[Schedule]) -> None:
        """Replace the schedule set (a reload); takes effect from the next slot on."""
        messages = {s.id: build_message(s, signing_key=self._signing_key) for s in schedules}
        with self._lock:
            self._schedules = tuple(schedules)
            self._messages = messages
        self._changed.set()

    def emit_due(self, since: datetime, until: datetime) -> int:
        """Emit every slot in `(since, until]` of every active schedule; return how many."""
        with self._lock:
            schedules, messages = self._schedules, self._messages
        emitted = 0
        for schedule in schedules:
            if schedule.paused:
                continue
            for slot in slots_in(schedule, since, until):
                log.info("fire due", schedule_id=schedule.id, fire_time=format_instant(slot),
                         execution_id=execution_id(schedule.id, slot, "scheduled"))
                with self._lock:
                    self._unsettled.add((schedule.id, slot))
                self._emit(messages[schedule.id], slot)
                emitted += 1
        return emitted

    def settled(self, schedule_id: str, slot: datetime) -> None:
        """The fire of `schedule_id` at `slot` is settled: its delivery was acknowledged and its
        record is final (or it can never run). The checkpoint moves past it once every earlier
        slot is settled too. Thread-safe; an unknown slot is ignored."""
        with self._lock:
            if (schedule_id, slot) not in self._unsettled:
                return
            self._unsettled.discard((schedule_id, slot))
            self._save()

    def close(self) -> None:
        """Stop writing the checkpoint: once its deliveries are drained or released, a clock
        must leave the file to the next one, which a late settle of an abandoned action (in the
        same process) could otherwise move past that clock's own unsettled slots."""
        with self._lock:
            self._closed = True

    def _save(self) -> None:
        """Save the checkpoint if it moved; the caller holds `_lock`, so that two threads
        cannot write an older instant after a newer one."""
        if self._emitted_until is None or self._closed:
            return
        until = self._emitted_until
        if self._unsettled:
            until = min(until, min(slot for _, slot in self._unsettled) - _BEFORE)
        if until != self._saved:
            self._checkpoint.save(until)
            self._saved = until

    def next_due(self, after: datetime) -> datetime | None:
        """The earliest slot of any active schedule after `after`."""
        with self._lock:
            schedules = self._schedules
        upcoming = [slot for s in schedules if not s.paused
                    if (slot := _next_slot(s, after)) is not None]
        return min(upcoming, default=None)

    def run(self, stop: threading.Event) -> None:
        """Emit slots as they come due until `stop` is set, resuming from the checkpoint."""
        now = self._clock()
        since = self._checkpoint.load() or now
        if since < now - MAX_LOOKBACK:
            since = now - MAX_LOOKBACK
        if since < now:
            log.info("resuming from the checkpoint", since=format_instant(since))
        while not stop.is_set():
            now = self._clock()
            if now > since:
                self.emit_due(since, now)
                with self._lock:
                    # Only now: a slot settled during emit_due must not move the checkpoint
                    # past slots of this round that are not emitted yet.
                    self._emitted_until = now
                    self._save()
                since = now
            due = self.next_due(now)
            wait = (
                MAX_SLEEP if due is None else min(MAX_SLEEP, max(due - self._clock(), timedelta(0)))
            )
            self._changed.clear()
            # Wake on a slot, on a reload, or on stop; whichever comes first.
            _wait_any(stop, self._changed, wait.total_seconds() + 0.001)


def _next_slot(schedule: Schedule, after: datetime) -> datetime | None:
    if schedule.at is not None:
        return schedule.at if schedule.at > after else None
    return next(iter_fires(schedule, after), None)


def _wait_any(stop: threading.Event, changed: threading.Event, seconds: float) -> None:
    deadline = utc_now() + timedelta(seconds=seconds)
    while not stop.is_set() and not changed.is_set():
        remaining = (deadline - utc_now()).total_seconds()
        if remaining <= 0:
            return
        stop.wait(min(remaining, 0.25))
