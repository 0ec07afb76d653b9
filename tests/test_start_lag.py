"""The start lag the pipeline notes and the audit's grace it widens (`worker.start_lag`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory_ledger import MemoryLedger

from scheduler.contract import build_message
from scheduler.model import Action, Schedule
from worker.action import ActionRegistry
from worker.pipeline import Pipeline
from worker.start_lag import LAG_MEMORY, StartLag, audit_grace
from worker.transport import Delivery

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def test_the_largest_lag_within_the_memory_counts_and_older_ones_are_forgotten() -> None:
    lag = StartLag()
    assert lag.recent(T0) == timedelta(0)
    lag.observe(40 * S, T0)
    lag.observe(5 * S, T0 + 30 * S)
    lag.observe(12 * S, T0 + 70 * S)
    assert lag.recent(T0 + 70 * S) == 40 * S
    assert lag.recent(T0 + LAG_MEMORY + S) == 12 * S
    assert lag.recent(T0 + 70 * S + LAG_MEMORY + S) == timedelta(0)


def test_the_grace_is_the_configured_one_the_lag_widened_or_at_most_the_horizon() -> None:
    grace, horizon = 20 * S, 300 * S
    assert audit_grace(grace, timedelta(0), horizon) == grace
    assert audit_grace(grace, 10 * S, horizon) == grace
    assert audit_grace(grace, 60 * S, horizon) == 90 * S
    assert audit_grace(grace, 600 * S, horizon) == horizon


def test_the_pipeline_notes_how_late_a_claimed_fire_starts() -> None:
    schedule = Schedule(id="s", action=Action("custom"), cron="* * * * *")
    now = T0 + 42 * S
    pipeline = Pipeline(MemoryLedger(), ActionRegistry({"custom": lambda _c: None}),
                        worker_id="w", clock=lambda: now)
    message = build_message(schedule, fire_time=T0)
    pipeline.handle(Delivery("m1", message.data, message.attributes, T0))
    assert pipeline.start_lag.recent(now) == 42 * S
