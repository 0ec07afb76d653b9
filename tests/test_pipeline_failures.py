"""The pipeline on failing actions and on messages that can never run: attempts, malformed,
forged and unknown (harness: `pipeline_harness`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from memory_ledger import MemoryLedger
from pipeline_harness import (
    KEY,
    SLOT,
    Harness,
    Recorder,
    delivery,
    fail_with,
    on_every_ledger,
    pipeline_on,
    schedule,
)
from structlog.testing import capture_logs

from scheduler.contract import execution_id, sign
from scheduler.model import Action
from scheduler.reserved import TICK_ACTION_TYPE, TICK_SCHEDULE_ID
from scheduler.ticks import Shard
from worker.action import (
    ActionError,
    ActionRegistry,
    ActionResult,
)
from worker.finishing import retry_delay
from worker.ledger import State
from worker.transport import Delivery, Disposition, Outcome


@on_every_ledger
def test_retryable_failure_is_retried_then_failed_at_max_attempts(h: Harness) -> None:
    sched = schedule(max_attempts=2)
    h.action.behaviour = fail_with(ActionError("HTTP 503", retryable=True))
    assert h.handle(delivery(sched)) == Disposition(
        ack=False, outcome=Outcome.RETRY, delay=retry_delay(1)
    )
    eid = execution_id(sched.id, SLOT)
    record = h.ledger.get(eid)
    assert record is not None and record.state is State.RUNNING and record.error == "HTTP 503"
    # The redelivery (same message, Pub/Sub backoff later) takes the released fire over at once.
    h.clock.advance(timedelta(seconds=10))
    assert h.handle(delivery(sched)) == Disposition(ack=True, outcome=Outcome.FAILED)
    record = h.ledger.get(eid)
    assert record is not None and record.state is State.FAILED and record.attempt == 2
    assert [c.attempt for c in h.action.calls] == [1, 2]


def test_unexpected_exception_is_retryable(h: Harness) -> None:
    h.action.behaviour = fail_with(RuntimeError("boom"))
    assert h.handle(delivery(schedule())).outcome == Outcome.RETRY
    record = h.ledger.get(execution_id("team/report", SLOT))
    assert record is not None and record.error == "RuntimeError: boom"


def test_non_retryable_failure_fails_at_once(h: Harness) -> None:
    h.action.behaviour = fail_with(ActionError("HTTP 404: not found", retryable=False))
    assert h.handle(delivery(schedule())) == Disposition(ack=True, outcome=Outcome.FAILED)
    record = h.ledger.get(execution_id("team/report", SLOT))
    assert (
        record is not None
        and record.state is State.FAILED
        and record.error == "HTTP 404: not found"
    )
    assert len(h.action.calls) == 1


@on_every_ledger
def test_takeover_beyond_max_attempts_fails_without_running(h: Harness) -> None:
    sched = schedule(max_attempts=1)
    h.claim_as("crashed", sched, SLOT, timedelta(seconds=60))
    h.clock.advance(timedelta(minutes=2))
    assert h.handle(delivery(sched)) == Disposition(ack=True, outcome=Outcome.FAILED)
    record = h.ledger.get(execution_id(sched.id, SLOT))
    assert record is not None and record.error == "max attempts exhausted" and record.attempt == 2
    assert h.action.calls == []


# Messages that can never run.


@pytest.mark.parametrize(("delivery_attempt", "ack"), [(None, True), (3, False)])
def test_malformed_message_is_acked_or_dead_lettered(
    h: Harness, delivery_attempt: int | None, ack: bool
) -> None:
    attributes = {"scion-format": "1", "trigger": "scheduled"}
    attributes["signature"] = sign(b"not json", attributes, KEY)
    poison = Delivery("m-poison", b"not json", attributes, SLOT, delivery_attempt)
    with capture_logs() as logs:
        assert h.handle(poison) == Disposition(ack=ack, outcome=Outcome.REJECTED)
    assert any(e["event"] == "message rejected" and "not JSON" in e["reason"] for e in logs)
    assert (
        h.metrics.registry.get_sample_value(
            "scion_worker_fires_received_total", {"trigger": "scheduled"}
        )
        == 1
    )


@pytest.mark.parametrize("key", ["another-deployments-key", None])
def test_forged_or_unsigned_message_is_rejected(h: Harness, key: str | None) -> None:
    sched = schedule()
    assert h.handle(delivery(sched, key=key)) == Disposition(ack=True, outcome=Outcome.REJECTED)
    assert h.action.calls == [] and h.ledger.history(sched.id) == []


def test_tampered_message_is_rejected(h: Harness) -> None:
    genuine = delivery(schedule())
    tampered = replace(genuine, data=genuine.data.replace(b'"ops"', b'"evil"', 1))
    assert h.handle(tampered).outcome == Outcome.REJECTED


def test_unknown_action_type_is_rejected_like_a_malformed_message(h: Harness) -> None:
    sched = schedule(action=Action("not-registered-anywhere", {}))
    assert h.handle(delivery(sched, delivery_attempt=1)) == Disposition(
        ack=False, outcome=Outcome.REJECTED
    )
    assert h.ledger.history(sched.id) == []


@on_every_ledger
@pytest.mark.parametrize("forged", ["tick-id", "shard-id", "tick-action"])
def test_a_signed_fire_misusing_the_ticks_reserved_names_is_rejected_before_any_claim(
        h: Harness, forged: str) -> None:
    # Both handlers registered, as on a tick-mode worker: only the decoder stands in the way.
    tick = Recorder()
    pipeline = pipeline_on(h.ledger, ActionRegistry({"custom": h.action,
                                                      TICK_ACTION_TYPE: tick}), clock=h.clock)
    shard_id = Shard(SLOT, ("a",)).schedule_id
    sched = {"tick-id": schedule(id=TICK_SCHEDULE_ID), "shard-id": schedule(id=shard_id),
             "tick-action": schedule(action=Action(TICK_ACTION_TYPE, {}))}[forged]
    with capture_logs() as logs:
        disposition = pipeline.handle(delivery(sched))
    assert disposition == Disposition(ack=True, outcome=Outcome.REJECTED)
    assert h.action.calls == [] and tick.calls == [] and h.ledger.history(sched.id) == []
    assert any("reserved for the tick" in str(line.get("reason", "")) for line in logs), logs


def test_an_action_returning_a_non_final_state_fails(h: Harness) -> None:
    h.action.behaviour = lambda _: ActionResult(State.RUNNING)
    assert h.handle(delivery(schedule())).outcome == Outcome.FAILED


class BrokenPluginRegistry(ActionRegistry):
    def get(self, action_type: str) -> Any:
        raise ImportError("plugin module missing")


def test_a_broken_plugin_rejects_the_message_without_crashing() -> None:
    pipeline = pipeline_on(MemoryLedger(), BrokenPluginRegistry())
    assert pipeline.handle(delivery(schedule())) == Disposition(ack=True, outcome=Outcome.REJECTED)
