"""The pipeline test harness: a fake clock, a recording action, signed fire messages, and the
`h` fixture (registered for every test module in `conftest.py`).

Fire messages are built with the real contract (`scheduler.contract.build_message`); actions
are plain functions registered through `ActionRegistry`, as a third-party type would be. The
tests marked `on_every_ledger` (claims, duplicates, overlap, catch-up, attempts) run on the
SQLite and Firestore (emulator) ledgers too: the pipeline must decide the same on each store.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from memory_ledger import MemoryLedger

from scheduler.contract import build_message, execution_id
from scheduler.model import Action, Schedule
from worker.action import (
    ActionContext,
    ActionHandler,
    ActionRegistry,
    ActionResult,
)
from worker.ledger import ClaimRequest, Ledger
from worker.metrics import WorkerMetrics
from worker.pipeline import Pipeline
from worker.sqlite_ledger import SqliteLedger
from worker.transport import Delivery, Disposition

KEY = "test-signing-key"


SLOT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a slot of */5 * * * *


WAIT_S = 10.0  # upper bound for a thread to reach a point; tests never depend on its size


class FakeClock:
    """A settable clock shared by the pipeline and the test."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


class Recorder:
    """An action handler that records its calls and does what the test tells it."""

    def __init__(
        self, behaviour: Callable[[ActionContext], ActionResult | None] | None = None
    ) -> None:
        self.calls: list[ActionContext] = []
        self.behaviour = behaviour
        self._lock = threading.Lock()

    def __call__(self, context: ActionContext) -> ActionResult | None:
        with self._lock:
            self.calls.append(context)
        return self.behaviour(context) if self.behaviour else None


_message_ids = itertools.count(1)


def schedule(**overrides: Any) -> Schedule:
    """A five-minute schedule of the `custom` action type."""
    fields: dict[str, Any] = {
        "id": "team/report",
        "action": Action("custom", {"to": "ops"}),
        "cron": "*/5 * * * *",
        "labels": {"team": "ops"},
    }
    fields.update(overrides)
    return Schedule(**fields)


def delivery(
    sched: Schedule,
    published_at: datetime = SLOT + timedelta(seconds=1),
    *,
    key: str | None = KEY,
    delivery_attempt: int | None = None,
    **build: Any,
) -> Delivery:
    """A delivery of the schedule's fire message, as a transport would hand it over."""
    message = build_message(sched, signing_key=key, **build)
    return Delivery(
        f"m{next(_message_ids)}", message.data, message.attributes, published_at, delivery_attempt
    )


class Harness:
    """A pipeline, its ledger, clock, metrics and the `custom` handler."""

    def __init__(
        self,
        *,
        lease: timedelta = timedelta(minutes=10),
        now: datetime = SLOT + timedelta(seconds=2),
        ledger: Ledger | None = None,
    ) -> None:
        self.ledger = ledger if ledger is not None else MemoryLedger()
        self.clock = FakeClock(now)
        self.action = Recorder()
        self.metrics = WorkerMetrics()
        self.pipeline = Pipeline(
            self.ledger,
            ActionRegistry({"custom": self.action}),
            worker_id="w1",
            signing_key=KEY,
            lease=lease,
            metrics=self.metrics,
            clock=self.clock,
        )

    def handle(self, item: Delivery, stopping: threading.Event | None = None) -> Disposition:
        return self.pipeline.handle(item, stopping)

    def outcomes(self, outcome: str) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "scion_worker_executions_total", {"outcome": outcome}
            )
            or 0.0
        )

    def claim_as(
        self, worker_id: str, sched: Schedule, fire_time: datetime, lease: timedelta
    ) -> None:
        """Another worker claims the fire (and, in the test, never finishes it)."""
        result = self.ledger.claim(
            ClaimRequest(
                execution_id=execution_id(sched.id, fire_time),
                schedule_id=sched.id,
                fire_time=fire_time,
                trigger="scheduled",
                worker_id=worker_id,
                lease=lease,
                overlap=sched.overlap,
                now=self.clock(),
            )
        )
        assert result.result.run


def pipeline_on(
    ledger: Ledger, actions: ActionHandler | ActionRegistry, **options: Any
) -> Pipeline:
    """A pipeline on `ledger` running `actions` (a handler: the `custom` type's), as worker w1
    with the test key and a clock two seconds past SLOT, unless `options` say otherwise."""
    if not isinstance(actions, ActionRegistry):
        actions = ActionRegistry({"custom": actions})
    defaults: dict[str, Any] = {
        "worker_id": "w1",
        "signing_key": KEY,
        "clock": lambda: SLOT + timedelta(seconds=2),
    }
    return Pipeline(ledger, actions, **{**defaults, **options})


LEDGERS = ["memory", "sqlite", pytest.param("firestore", marks=pytest.mark.emulator)]


on_every_ledger = pytest.mark.parametrize("h", LEDGERS, indirect=True)


@pytest.fixture
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A harness on the in-memory ledger, or on the one `on_every_ledger` names (fresh, empty)."""
    kind = getattr(request, "param", "memory")
    if kind == "memory":
        yield Harness()
    elif kind == "sqlite":
        sqlite_ledger = SqliteLedger(tmp_path / "ledger.db")
        yield Harness(ledger=sqlite_ledger)
        sqlite_ledger.close()
    else:
        from google.cloud import firestore

        from worker.firestore_ledger import FirestoreLedger

        request.getfixturevalue("firestore_emulator")
        client = firestore.Client(project=request.getfixturevalue("project_id"))
        yield Harness(ledger=FirestoreLedger(client))
        client.close()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def in_thread(fn: Callable[[], Disposition]) -> tuple[threading.Thread, list[Disposition]]:
    out: list[Disposition] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


# Failures and attempts.


def fail_with(exc: Exception) -> Callable[[ActionContext], ActionResult | None]:
    def behaviour(_: ActionContext) -> ActionResult | None:
        raise exc

    return behaviour
