"""The pipeline on late fires: the catch-up window and policies, and the one-shot rule
(harness: `pipeline_harness`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pipeline_harness import SLOT, Harness, delivery, on_every_ledger, schedule

from scheduler.contract import execution_id
from worker.action import (
    ActionError,
)
from worker.ledger import State
from worker.transport import Disposition, Outcome

# Lateness: catch-up window and policies; the one-shot rule.


@on_every_ledger
@pytest.mark.parametrize(
    ("late", "outcome"),
    [(timedelta(minutes=4), Outcome.SUCCEEDED), (timedelta(minutes=6), Outcome.MISSED)],
)
def test_catchup_window(h: Harness, late: timedelta, outcome: Outcome) -> None:
    sched = schedule(catchup_window=timedelta(minutes=5))
    h.clock.set(SLOT + late)
    assert h.handle(delivery(sched)).outcome == outcome
    record = h.ledger.get(execution_id(sched.id, SLOT))
    assert record is not None and record.state is State(outcome)
    assert len(h.action.calls) == (outcome is Outcome.SUCCEEDED)


@on_every_ledger
def test_missed_fire_redelivered_is_a_duplicate(h: Harness) -> None:
    sched = schedule(catchup_window=timedelta(minutes=5))
    h.clock.set(SLOT + timedelta(hours=1))
    assert h.handle(delivery(sched)).outcome == Outcome.MISSED
    assert h.handle(delivery(sched)).outcome == Outcome.DUPLICATE
    assert h.action.calls == []


@pytest.mark.parametrize(
    ("catchup", "late", "outcome"),
    [
        # `latest`: missed once the next slot (SLOT + 5 min) has come.
        ("latest", timedelta(minutes=4), Outcome.SUCCEEDED),
        ("latest", timedelta(minutes=5), Outcome.MISSED),
        # `none`: missed when more than a minute late.
        ("none", timedelta(seconds=30), Outcome.SUCCEEDED),
        ("none", timedelta(seconds=61), Outcome.MISSED),
    ],
)
def test_catchup_latest_misses_a_superseded_fire_and_none_a_late_one(
    h: Harness, catchup: str, late: timedelta, outcome: Outcome
) -> None:
    h.clock.set(SLOT + late)
    assert h.handle(delivery(schedule(catchup=catchup))).outcome == outcome


@on_every_ledger
def test_retry_delivered_after_the_window_is_still_taken_over(h: Harness) -> None:
    """The window is about starting late; a fire that started in time keeps its retries."""
    sched = schedule(catchup_window=timedelta(minutes=5))
    h.action.behaviour = lambda _: (_ for _ in ()).throw(ActionError("503", retryable=True))
    assert h.handle(delivery(sched)).outcome == Outcome.RETRY
    h.action.behaviour = None
    h.clock.set(SLOT + timedelta(minutes=30))
    assert h.handle(delivery(sched)).outcome == Outcome.SUCCEEDED
    assert [c.attempt for c in h.action.calls] == [1, 2]


def test_one_shot_runs_only_at_its_own_time(h: Harness) -> None:
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    sched = schedule(cron=None, at=at)
    # The job's cron repeats every year: a year later the same slot comes round.
    next_year = at.replace(year=2027)
    h.clock.set(next_year + timedelta(seconds=2))
    assert h.handle(delivery(sched, next_year + timedelta(seconds=1))) == Disposition(
        ack=True, outcome=Outcome.NOT_DUE
    )
    assert h.ledger.history(sched.id) == []
    h.clock.set(at + timedelta(seconds=2))
    assert h.handle(delivery(sched, at + timedelta(seconds=1))).outcome == Outcome.SUCCEEDED
    assert [c.fire_time for c in h.action.calls] == [at]
