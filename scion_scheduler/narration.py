"""The narration of `scion-scheduler up`: the live account of what the replicas and the target
report, one readable line per event, and the closing summary.

A replica's JSON log lines are decoded into the worker's typed events (`worker.events`); the
account reads their fields, never the message text.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from scheduler.model import format_instant
from scion_scheduler.reference_hub import FireCall
from worker.events import (
    ActionFailed,
    ActionFinished,
    ActionStarting,
    Busy,
    Duplicate,
    FireRef,
    Missed,
    Rejected,
    Skipped,
    WorkerStarting,
    decode_line,
)
from worker.ledger import State


@dataclass
class Account:
    """The live account: one readable line per event, and the tallies for the summary."""

    out: TextIO
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[State] = field(default_factory=Counter)
    fires: set[str] = field(default_factory=set)
    action_started: dict[str, datetime] = field(default_factory=dict)
    duplicates: int = 0
    deferred: int = 0
    failures: int = 0
    target_calls: list[FireCall] = field(default_factory=list)
    finished: dict[str, State] = field(default_factory=dict)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def say(self, text: str) -> None:
        """Print one line, stamped with the wall-clock time."""
        with self._lock:
            print(f"{datetime.now(UTC):%H:%M:%S}  {text}", file=self.out, flush=True)

    def worker_line(self, replica: str, text: str) -> None:
        """Account for one log line of a replica (JSON; anything else is ignored here)."""
        line = decode_line(text)
        if line is None:
            return
        event, fire = line.event, line.fire
        eid = fire.execution_id if fire is not None else ""
        what = _describe(fire)
        with self._lock:
            if eid:
                self.fires.add(eid)
            match event:
                case WorkerStarting():
                    self.say(f"{replica}: ready as worker {event.worker_id}, "
                             f"pulling {event.subscription}")
                case ActionStarting():
                    self.action_started[eid] = line.at
                    self.say(f"{replica}: runs {what}, attempt {fire.attempt if fire else None}")
                case ActionFinished():
                    self._finish(eid, event.state)
                    took = line.at - self.action_started.pop(eid, line.at)
                    details = [event.detail] if event.detail else []
                    details.append(f"{took.total_seconds() * 1000:.0f} ms")
                    self.say(f"{replica}: {what} -> {event.state} ({', '.join(details)})")
                case ActionFailed():
                    self.failures += 1
                    if event.final:
                        self._finish(eid, State.FAILED)
                    self.say(f"{replica}: {what} -> {event.message}: {event.error}")
                case Duplicate():
                    self.duplicates += 1
                    self.say(f"{replica}: duplicate delivery of {what} suppressed (already "
                             f"{event.state})")
                case Busy():
                    self.deferred += 1
                    self.say(f"{replica}: {what} is running on another replica; delivery deferred")
                case Skipped() | Missed():
                    self._finish(eid, State.SKIPPED if isinstance(event, Skipped) else State.MISSED)
                    self.say(f"{replica}: {what} {event.message}")
                case Rejected():
                    self.say(f"{replica}: message rejected: {event.reason}")

    def _finish(self, eid: str, outcome: State) -> None:
        self.outcomes[outcome] += 1
        self.finished[eid] = outcome
        self._lock.notify_all()

    def target_call(self, call: FireCall) -> None:
        """Account for one request the target received."""
        with self._lock:
            self.target_calls.append(call)
        self.say(f"target: {call.method} {call.item_id} (Idempotency-Key {call.idempotency_key})")

    def wait_finished(self, eid: str, timeout: float) -> bool:
        """Block until the execution `eid` has an outcome; False after `timeout` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: eid in self.finished, timeout)

    def summary(self) -> str:
        """The closing summary."""
        with self._lock:
            keys = Counter(c.idempotency_key for c in self.target_calls)
            doubles = sum(1 for n in keys.values() if n > 1)
            twice = f"{doubles} executions received twice" if doubles else "no execution twice"
            outcomes = (
                ", ".join(f"{n} {name}" for name, n in sorted(self.outcomes.items())) or "none"
            )
            return "\n".join(
                [
                    f"summary after {time.monotonic() - self.started:.0f}s:",
                    f"  fires delivered:        {len(self.fires)}",
                    f"  executions:             {outcomes}",
                    (
                        f"  duplicates suppressed:  {self.duplicates} (+{self.deferred} "
                        "deferred while running)"
                    ),
                    f"  failures:               {self.failures}",
                    f"  target requests:        {len(self.target_calls)}, {twice}",
                ]
            )


def _describe(fire: FireRef | None) -> str:
    """The fire a line is about, as the account names it: `schedule @ fire time (trigger)`."""
    if fire is None:
        return "? @ ? (?)"
    fire_time = format_instant(fire.fire_time) if fire.fire_time is not None else "?"
    return f"{fire.schedule_id or '?'} @ {fire_time} ({fire.trigger or '?'})"
