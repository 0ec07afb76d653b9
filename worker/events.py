"""What a worker reports about itself and the fires it handles, as typed events.

The pipeline and the runner report through an `EventLog`: logging is the consumer, each event
one log line with the message text it always had, its fields, and `event_kind` (structlog keeps
`event` for the message). Whoever reads the JSON lines back (the narration of `scion-scheduler
up`, `scion_scheduler.narration`) decodes them with `decode_line` into these same types and
reads their fields, never the message text. A fire's IDs are not fields of the events: the
pipeline binds them to every line of the fire (`scheduler.logs.bound`), and `decode_line`
returns them as the line's `FireRef`.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar, Self, get_type_hints

from scheduler.clock import utc_now
from scheduler.model import parse_instant
from worker.ledger import State

KIND_KEY = "event_kind"


class EventKind(StrEnum):
    """Which event a log line reports: the `event_kind` field of its line."""

    WORKER_STARTING = "worker_starting"
    ACTION_STARTING = "action_starting"
    ACTION_FINISHED = "action_finished"
    ACTION_FAILED = "action_failed"
    ACTION_FAILED_LAST_ATTEMPT = "action_failed_last_attempt"
    ACTION_RETRYING = "action_retrying"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    SKIPPED = "skipped"
    MISSED = "missed"
    REJECTED = "rejected"


# Each event class by its kind, for the decoder; filled as the classes are defined.
_BY_KIND: dict[EventKind, type[WorkerEvent]] = {}


@dataclass(frozen=True)
class WorkerEvent:
    """One event: its kind, the text and level of its log line, and its own fields. Each kind
    is one subclass, which names its kind, message and level in its class statement."""

    kind: ClassVar[EventKind]
    message: ClassVar[str]
    level: ClassVar[str]

    def __init_subclass__(cls, *, kind: EventKind, message: str, level: str = "info",
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind, cls.message, cls.level = kind, message, level
        _BY_KIND[kind] = cls

    def log_fields(self) -> dict[str, Any]:
        """The fields as its log line carries them (enums as their values)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_log_fields(cls, line: Mapping[str, Any]) -> Self:
        """The event from the fields of its log line; `ValueError` when one does not fit."""
        hints = get_type_hints(cls)
        return cls(**{f.name: _typed(f.name, hints[f.name], line.get(f.name))
                      for f in fields(cls)})


@dataclass(frozen=True)
class WorkerStarting(WorkerEvent, kind=EventKind.WORKER_STARTING, message="worker starting"):
    """The worker is about to pull: its ID, subscription and sizing."""

    worker_id: str
    subscription: str
    health_port: int
    executors: int
    max_messages: int
    lease_s: float
    grace_period_s: float


@dataclass(frozen=True)
class ActionStarting(WorkerEvent, kind=EventKind.ACTION_STARTING, message="action starting"):
    """A claimed fire's action starts (`taken_over`: from a worker whose lease lapsed)."""

    action_type: str
    taken_over: bool


@dataclass(frozen=True)
class ActionFinished(WorkerEvent, kind=EventKind.ACTION_FINISHED, message="action finished"):
    """The action ended in a final state (recorded next)."""

    state: State
    detail: str | None


@dataclass(frozen=True)
class ActionFailed(WorkerEvent, kind=EventKind.ACTION_FAILED,
                   message="action failed, not retryable", level="warning"):
    """The action failed and may not be retried: the fire is recorded failed."""

    # True when the fire is recorded failed, False when it is tried again.
    final: ClassVar[bool] = True
    error: str


@dataclass(frozen=True)
class ActionFailedLastAttempt(ActionFailed, kind=EventKind.ACTION_FAILED_LAST_ATTEMPT,
                              message="action failed on its last attempt", level="warning"):
    """The action failed on the fire's last attempt: the fire is recorded failed."""

    max_attempts: int


@dataclass(frozen=True)
class ActionRetrying(ActionFailed, kind=EventKind.ACTION_RETRYING,
                     message="action failed; redelivery will retry it", level="warning"):
    """The action failed retryably: the fire is released and tried again."""

    final = False
    max_attempts: int


@dataclass(frozen=True)
class Duplicate(WorkerEvent, kind=EventKind.DUPLICATE,
                message="duplicate delivery of a finished fire"):
    """A delivery of a fire that has an outcome already: suppressed."""

    state: State


@dataclass(frozen=True)
class Busy(WorkerEvent, kind=EventKind.BUSY,
           message="fire is running on another worker; redelivery later"):
    """The fire is running on another worker (`holder`): this delivery comes back later."""

    holder: str | None
    delay_s: float


@dataclass(frozen=True)
class Skipped(WorkerEvent, kind=EventKind.SKIPPED,
              message="fire skipped: another fire of the schedule is running (overlap: skip)"):
    """Another fire of the schedule is running and its overlap policy is `skip`."""


@dataclass(frozen=True)
class Missed(WorkerEvent, kind=EventKind.MISSED, message="fire missed", level="warning"):
    """The fire came too late to start under its catch-up policy; recorded missed."""

    reason: str


@dataclass(frozen=True)
class Rejected(WorkerEvent, kind=EventKind.REJECTED, message="message rejected", level="error"):
    """A message that can never run here: nacked toward the dead-letter topic when the
    subscription has one (`dead_letter`), else acked."""

    reason: str
    claimed_schedule_id: str | None
    delivery_attempt: int | None
    dead_letter: bool

    def log_fields(self) -> dict[str, Any]:
        """The fields, with `dead_letter` written out as the disposition."""
        out = super().log_fields()
        del out["dead_letter"]
        out["disposition"] = _DISPOSITIONS[self.dead_letter]
        return out

    @classmethod
    def from_log_fields(cls, line: Mapping[str, Any]) -> Self:
        """The event from its log line, `dead_letter` read from the disposition."""
        dead_letter = {text: flag for flag, text in _DISPOSITIONS.items()}.get(
            line.get("disposition", ""))
        if dead_letter is None:
            raise ValueError(f"unknown disposition {line.get('disposition')!r}")
        return super().from_log_fields({**line, "dead_letter": dead_letter})


_DISPOSITIONS = {True: "nack toward the dead-letter topic", False: "ack (no dead-letter policy)"}


class EventLog:
    """The logging consumer of events: one line per event, at the event's level, written
    with `logger` (so the line keeps the module's `logger_name`)."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def __call__(self, event: WorkerEvent, *, exc_info: bool = False) -> None:
        """Log `event`; `exc_info` adds the traceback of the exception being handled."""
        extra = {"exc_info": True} if exc_info else {}
        getattr(self._logger, event.level)(
            event.message, **event.log_fields(), **{KIND_KEY: event.kind.value}, **extra
        )


@dataclass(frozen=True)
class FireRef:
    """The fire a line is about, as the pipeline binds it to every line of the fire."""

    execution_id: str
    schedule_id: str | None
    fire_time: datetime | None
    trigger: str | None
    attempt: int | None


@dataclass(frozen=True)
class LoggedLine:
    """One JSON log line of a worker, decoded: its event (None for a line that reports none,
    or one whose fields do not fit), its fire (None for a line about no fire) and when it
    was written."""

    event: WorkerEvent | None
    fire: FireRef | None
    at: datetime


def decode_line(text: str, now: Callable[[], datetime] = utc_now) -> LoggedLine | None:
    """A worker's JSON log line decoded; None when `text` is not a JSON object. A line without
    a `timestamp` is dated `now()`."""
    try:
        line = json.loads(text)
    except ValueError:
        return None
    if not isinstance(line, dict):
        return None
    return LoggedLine(_event(line), _fire(line), _instant(line.get("timestamp")) or now())


def _event(line: Mapping[str, Any]) -> WorkerEvent | None:
    try:
        return _BY_KIND[EventKind(line.get(KIND_KEY, ""))].from_log_fields(line)
    except (TypeError, ValueError):
        return None


def _fire(line: Mapping[str, Any]) -> FireRef | None:
    eid = line.get("execution_id")
    if not isinstance(eid, str) or not eid:
        return None
    schedule_id, trigger, attempt = (line.get(key) for key in ("schedule_id", "trigger",
                                                                "attempt"))
    return FireRef(
        execution_id=eid,
        schedule_id=schedule_id if isinstance(schedule_id, str) else None,
        fire_time=_instant(line.get("fire_time")),
        trigger=trigger if isinstance(trigger, str) else None,
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
    )


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _typed(name: str, hint: Any, value: object) -> Any:
    """`value` as a field typed `hint`: str, int, float, bool, an enum, or one of them | None."""
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in hint.__args__:
            return None
        (hint,) = (arg for arg in hint.__args__ if arg is not type(None))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"field {name}: {value!r} is not a {hint.__name__}")
