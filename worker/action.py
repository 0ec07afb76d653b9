"""The action port: what a claimed fire runs.

Action types are registered by name in the entry-point group `scion_scheduler.actions` (the
built-ins too, in this project's pyproject.toml). Schedule data only ever names a registered
type; it can never name code to import. An entry point resolves to a class taking no
arguments (or a callable returning an `ActionHandler`); it is instantiated once per worker,
so handlers may keep connection pools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, Protocol

from scheduler.validation import ACTION_ENTRY_POINT_GROUP
from worker.errors import WorkerError
from worker.ledger import State


@dataclass(frozen=True)
class ActionContext:
    """What an action receives about the fire it runs for."""

    schedule_id: str
    fire_time: datetime
    execution_id: str
    trigger: str
    attempt: int
    params: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionResult:
    """A non-default outcome: e.g. `SUCCEEDED` with detail "duplicate" when the target says it
    already handled this execution, or `CANCELLED` when the target is gone. Returning None means
    plain success."""

    state: State = State.SUCCEEDED
    detail: str | None = None


class ActionError(WorkerError):
    """The action failed. `retryable` failures are retried (redelivery) until max_attempts."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ActionHandler(Protocol):
    """Runs one fire's action; returns None or an `ActionResult`, or raises `ActionError`.
    Any other exception counts as a retryable failure."""

    def __call__(self, context: ActionContext) -> ActionResult | None: ...


class ActionRegistry:
    """Handlers by type name, loaded lazily from the entry-point group (or given directly)."""

    def __init__(self, handlers: Mapping[str, ActionHandler] | None = None) -> None:
        self._handlers: dict[str, ActionHandler] = dict(handlers or {})

    def get(self, action_type: str) -> ActionHandler:
        """The handler for a type; `KeyError` naming the type when none is registered."""
        handler = self._handlers.get(action_type)
        if handler is None:
            matches = entry_points(group=ACTION_ENTRY_POINT_GROUP, name=action_type)
            if not matches:
                raise KeyError(f"no action registered as {action_type!r}")
            factory: Callable[[], ActionHandler] = next(iter(matches)).load()
            handler = factory()
            self._handlers[action_type] = handler
        return handler
