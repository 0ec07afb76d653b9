"""The pipeline when its store fails: nacks for a later delivery, and retries inside the worker
(`retry_budget`) (harness: `pipeline_harness`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from memory_ledger import MemoryLedger
from pipeline_harness import SLOT, Recorder, delivery, fail_with, pipeline_on, schedule

from scheduler.contract import execution_id
from worker.action import (
    ActionContext,
    ActionError,
    ActionResult,
)
from worker.ledger import ClaimRequest, Ledger, State
from worker.pipeline import Pipeline
from worker.transport import Disposition, Outcome

# Infrastructure failures, logs, ids.


class BrokenLedger(MemoryLedger):
    def claim(self, request: ClaimRequest) -> Any:
        raise ConnectionError("store unavailable")


def test_store_failure_nacks_for_a_later_retry() -> None:
    pipeline = pipeline_on(BrokenLedger(), Recorder())
    result = pipeline.handle(delivery(schedule()))
    assert not result.ack and result.outcome == Outcome.ERROR and result.delay is not None


class BrokenRecordLedger(MemoryLedger):
    def record(self, execution: Any) -> bool:
        raise ConnectionError("store unavailable")


def test_a_missed_fire_that_cannot_be_recorded_is_retried_not_run() -> None:
    recorder = Recorder()
    late = SLOT + timedelta(hours=1)
    pipeline = pipeline_on(BrokenRecordLedger(), recorder, clock=lambda: late)
    result = pipeline.handle(delivery(schedule()))
    assert not result.ack and result.outcome == Outcome.ERROR and recorder.calls == []


# Retries inside the worker (`retry_budget`): the broker's redelivery is not relied on.


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.finishing as finishing

    monkeypatch.setattr(finishing, "RETRY_BASE_DELAY", timedelta(milliseconds=10))
    monkeypatch.setattr(finishing, "STORE_RETRY_DELAY", timedelta(milliseconds=10))
    monkeypatch.setattr(finishing, "FINISH_RETRY_DELAY", timedelta(milliseconds=10))


class FlakyLedger(MemoryLedger):
    """Claims and finishes fail `failures` times each before they work (a store outage)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.claim_failures = failures
        self.finish_failures = failures

    def claim(self, request: ClaimRequest) -> Any:
        if self.claim_failures:
            self.claim_failures -= 1
            raise ConnectionError("store unavailable")
        return super().claim(request)

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        if self.finish_failures:
            self.finish_failures -= 1
            raise ConnectionError("store unavailable")
        return super().finish(*args, **kwargs)


def in_process(ledger: Ledger, recorder: Recorder) -> Pipeline:
    return pipeline_on(ledger, recorder, retry_budget=timedelta(seconds=5))


@pytest.mark.usefixtures("fast_retries")
def test_a_target_that_recovers_within_max_attempts_succeeds_in_one_delivery() -> None:
    outcomes = iter([ActionError("HTTP 503", retryable=True)] * 2)

    def behaviour(_: ActionContext) -> ActionResult | None:
        error = next(outcomes, None)
        if error is not None:
            raise error
        return None

    ledger, recorder = MemoryLedger(), Recorder(behaviour)
    assert in_process(ledger, recorder).handle(delivery(schedule())) == Disposition(
        ack=True, outcome=Outcome.SUCCEEDED
    )
    assert [c.attempt for c in recorder.calls] == [1, 2, 3]
    record = ledger.get(execution_id("team/report", SLOT))
    assert record is not None and record.state is State.SUCCEEDED and record.attempt == 3


@pytest.mark.usefixtures("fast_retries")
def test_a_store_outage_is_waited_out_and_a_finished_action_never_runs_again() -> None:
    """Claims fail, then the finish fails after the action ran: the claim is retried, and the
    finish is retried while the execution is held, so the action runs exactly once."""
    ledger, recorder = FlakyLedger(failures=3), Recorder()
    assert in_process(ledger, recorder).handle(delivery(schedule())).outcome == Outcome.SUCCEEDED
    assert len(recorder.calls) == 1
    record = ledger.get(execution_id("team/report", SLOT))
    assert record is not None and record.state is State.SUCCEEDED


@pytest.mark.usefixtures("fast_retries")
def test_retries_beyond_the_budget_go_back_to_the_transport() -> None:
    recorder = Recorder(fail_with(ActionError("HTTP 503", retryable=True)))
    pipeline = pipeline_on(MemoryLedger(), recorder, retry_budget=timedelta(milliseconds=25))
    result = pipeline.handle(delivery(schedule()))
    # 10 ms then 20 ms: the second wait would pass the 25 ms budget.
    assert result.outcome == Outcome.RETRY and not result.ack and result.delay is not None
    assert [c.attempt for c in recorder.calls] == [1, 2]
