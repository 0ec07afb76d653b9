"""The pipeline's policies, on the in-memory ledger with a fake clock.

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
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from memory_ledger import MemoryLedger
from structlog.testing import capture_logs

from scheduler.contract import build_message, execution_id, sign
from scheduler.model import Action, Schedule
from worker.action import (
    ActionContext,
    ActionError,
    ActionHandler,
    ActionRegistry,
    ActionResult,
)
from worker.finishing import retry_delay
from worker.ledger import ClaimRequest, Ledger, State
from worker.metrics import WorkerMetrics
from worker.pipeline import Pipeline, make_worker_id
from worker.sqlite_ledger import SqliteLedger
from worker.transport import Delivery, Disposition, Outcome

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


# Success, duplicates, registered action types.


@on_every_ledger
def test_runs_registered_action_once_and_records_success(h: Harness) -> None:
    sched = schedule()
    assert h.handle(delivery(sched)) == Disposition(ack=True, outcome=Outcome.SUCCEEDED)
    [context] = h.action.calls
    eid = execution_id(sched.id, SLOT)
    assert context == ActionContext(
        schedule_id=sched.id,
        fire_time=SLOT,
        execution_id=eid,
        trigger="scheduled",
        attempt=1,
        params={"to": "ops"},
        labels={"team": "ops"},
    )
    record = h.ledger.get(eid)
    assert record is not None and record.state is State.SUCCEEDED and record.worker_id == "w1"
    assert h.outcomes("succeeded") == 1
    assert (
        h.metrics.registry.get_sample_value(
            "scion_worker_fires_received_total", {"trigger": "scheduled"}
        )
        == 1
    )
    assert h.metrics.registry.get_sample_value("scion_worker_fire_to_start_lag_seconds_count") == 1


@on_every_ledger
def test_duplicate_delivery_is_acked_without_running(h: Harness) -> None:
    sched = schedule()
    h.handle(delivery(sched))
    # A duplicate publish of the same slot: new message ID, publish time a little later.
    again = h.handle(delivery(sched, SLOT + timedelta(seconds=3)))
    assert again == Disposition(ack=True, outcome=Outcome.DUPLICATE)
    assert len(h.action.calls) == 1
    assert h.metrics.registry.get_sample_value("scion_worker_duplicates_suppressed_total") == 1


def test_action_result_state_and_detail_are_recorded(h: Harness) -> None:
    h.action.behaviour = lambda _: ActionResult(State.CANCELLED, "target gone")
    sched = schedule()
    assert h.handle(delivery(sched)).outcome == Outcome.CANCELLED
    record = h.ledger.get(execution_id(sched.id, SLOT))
    assert record is not None and record.state is State.CANCELLED and record.detail == "target gone"


def test_manual_trigger_is_never_deduplicated_against_its_slot(h: Harness) -> None:
    sched = schedule()
    assert h.handle(delivery(sched)).outcome == Outcome.SUCCEEDED
    manual = delivery(sched, SLOT + timedelta(seconds=5), trigger="manual", fire_time=SLOT)
    assert h.handle(manual).outcome == Outcome.SUCCEEDED
    assert [c.trigger for c in h.action.calls] == ["scheduled", "manual"]
    assert h.action.calls[0].execution_id != h.action.calls[1].execution_id


def test_manual_fire_is_never_missed(h: Harness) -> None:
    h.clock.set(SLOT + timedelta(days=2))
    manual = delivery(schedule(catchup="none"), SLOT, trigger="manual", fire_time=SLOT)
    assert h.handle(manual).outcome == Outcome.SUCCEEDED


# Claims held elsewhere, overlap.


@on_every_ledger
def test_busy_fire_is_nacked_until_the_holders_lease_ends(h: Harness) -> None:
    sched = schedule()
    h.claim_as("w2", sched, SLOT, timedelta(seconds=60))
    h.clock.advance(timedelta(seconds=20))
    result = h.handle(delivery(sched))
    assert result == Disposition(ack=False, outcome=Outcome.BUSY, delay=timedelta(seconds=40))
    assert h.action.calls == []


@on_every_ledger
def test_a_long_running_fires_duplicate_waits_as_long_as_it_has_run(h: Harness) -> None:
    """The reaper takes the fire over if its holder dies (its message is kept), so a duplicate
    need not come back every lease and use up the dead-letter policy's attempts."""
    sched = schedule()
    started, release = threading.Event(), threading.Event()

    def behaviour(context: ActionContext) -> None:
        started.set()
        release.wait(WAIT_S)

    h.action.behaviour = behaviour
    thread, out = in_thread(lambda: h.handle(delivery(sched)))
    try:
        assert started.wait(WAIT_S)
        h.clock.advance(timedelta(seconds=100))
        assert h.pipeline.ledger.renew(
            execution_id(sched.id, SLOT), "w1", h.clock() + timedelta(seconds=12)
        )
        other = pipeline_on(
            h.ledger, Recorder(), worker_id="w2", lease=timedelta(seconds=12), clock=h.clock
        )
        result = other.handle(delivery(sched))
        assert result == Disposition(ack=False, outcome=Outcome.BUSY, delay=timedelta(seconds=100))
    finally:
        release.set()
        thread.join(WAIT_S)
    assert out[0].outcome == Outcome.SUCCEEDED


@on_every_ledger
def test_fire_of_a_dead_holder_is_taken_over_after_its_lease(h: Harness) -> None:
    sched = schedule()
    h.claim_as("w2", sched, SLOT, timedelta(seconds=60))
    h.clock.advance(timedelta(seconds=61))
    assert h.handle(delivery(sched)).outcome == Outcome.SUCCEEDED
    assert [c.attempt for c in h.action.calls] == [2]


@on_every_ledger
@pytest.mark.parametrize(
    ("overlap", "second"), [("skip", Outcome.SKIPPED), ("allow", Outcome.SUCCEEDED)]
)
def test_overlap_policy(h: Harness, overlap: str, second: Outcome) -> None:
    sched = schedule(overlap=overlap)
    first_started, release_first = threading.Event(), threading.Event()

    def behaviour(context: ActionContext) -> None:
        if context.fire_time == SLOT:
            first_started.set()
            assert release_first.wait(WAIT_S)

    h.action.behaviour = behaviour
    thread, first = in_thread(lambda: h.handle(delivery(sched)))
    assert first_started.wait(WAIT_S)
    next_slot = SLOT + timedelta(minutes=5)
    h.clock.set(next_slot + timedelta(seconds=2))
    assert h.handle(delivery(sched, next_slot + timedelta(seconds=1))).outcome == second
    release_first.set()
    thread.join(WAIT_S)
    assert first == [Disposition(ack=True, outcome=Outcome.SUCCEEDED)]
    record = h.ledger.get(execution_id(sched.id, next_slot))
    assert record is not None and record.state is State(second)


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


# Failures and attempts.


def fail_with(exc: Exception) -> Callable[[ActionContext], ActionResult | None]:
    def behaviour(_: ActionContext) -> ActionResult | None:
        raise exc

    return behaviour


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


# The lease: heartbeat, loss, shutdown.


def test_heartbeat_renews_the_lease_during_a_long_action() -> None:
    h = Harness(lease=timedelta(seconds=0.3))
    eid = execution_id("team/report", SLOT)

    def long_action(_: ActionContext) -> None:
        wait_for(lambda: sum(1 for e, _, ok in h.ledger.renewals if e == eid and ok) >= 2)

    h.action.behaviour = long_action
    assert h.handle(delivery(schedule())).outcome == Outcome.SUCCEEDED


def test_lost_lease_leaves_the_outcome_to_the_new_holder() -> None:
    h = Harness(lease=timedelta(seconds=0.3))
    eid = execution_id("team/report", SLOT)

    def taken_over_meanwhile(_: ActionContext) -> None:
        h.ledger.steal(eid, "w2")
        wait_for(lambda: any(e == eid and not ok for e, _, ok in h.ledger.renewals))

    h.action.behaviour = taken_over_meanwhile
    with capture_logs() as logs:
        assert h.handle(delivery(schedule())) == Disposition(ack=True, outcome=Outcome.LOST)
    record = h.ledger.get(eid)
    assert record is not None and record.state is State.RUNNING and record.worker_id == "w2"
    assert any(e["event"].startswith("lease lost") for e in logs)


def test_stopping_before_the_claim_returns_the_delivery_unclaimed(h: Harness) -> None:
    stopping = threading.Event()
    stopping.set()
    sched = schedule()
    interrupted = Disposition(ack=False, outcome=Outcome.INTERRUPTED)
    assert h.handle(delivery(sched), stopping) == interrupted
    assert h.action.calls == [] and h.ledger.history(sched.id) == []


@on_every_ledger
def test_release_running_hands_the_fire_to_another_worker(h: Harness) -> None:
    sched = schedule()
    eid = execution_id(sched.id, SLOT)
    started, finish = threading.Event(), threading.Event()

    def stuck(_: ActionContext) -> None:
        started.set()
        assert finish.wait(WAIT_S)

    h.action.behaviour = stuck
    thread, out = in_thread(lambda: h.handle(delivery(sched)))
    assert started.wait(WAIT_S)
    assert h.pipeline.release_running("shutdown grace period over") == [eid]
    # No lease to wait for: another replica takes the fire over at once.
    h.claim_as("w2", sched, SLOT, timedelta(seconds=60))
    finish.set()
    thread.join(WAIT_S)
    assert out == [Disposition(ack=True, outcome=Outcome.LOST)]


# Infrastructure failures, logs, ids.


class BrokenLedger(MemoryLedger):
    def claim(self, request: ClaimRequest) -> Any:
        raise ConnectionError("store unavailable")


def test_store_failure_nacks_for_a_later_retry() -> None:
    pipeline = pipeline_on(BrokenLedger(), Recorder())
    result = pipeline.handle(delivery(schedule()))
    assert not result.ack and result.outcome == Outcome.ERROR and result.delay is not None


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries


def test_every_log_line_about_a_fire_carries_its_context(
    h: Harness, logs: list[dict[str, Any]]
) -> None:
    h.action.behaviour = fail_with(ActionError("HTTP 503", retryable=True))
    h.handle(delivery(schedule()))
    assert logs
    for entry in logs:
        for key in ("schedule_id", "fire_time", "execution_id", "attempt", "worker_id"):
            assert key in entry, (key, entry)
    assert {e["attempt"] for e in logs if e["event"].startswith("action")} == {1}
    assert logs[0]["fire_time"] == "2026-03-02T10:00:00Z"
    assert logs[0]["execution_id"] == execution_id("team/report", SLOT)


def test_a_propagated_trace_is_bound_to_the_fires_log_lines(logs: list[dict[str, Any]]) -> None:
    # Unsigned: the Pub/Sub client adds its trace attribute after the publisher signed.
    pipeline = pipeline_on(MemoryLedger(), Recorder(), trace_project="proj", signing_key=None)
    item = delivery(schedule(), key=None)
    trace_id = "ab" * 16
    traced = replace(
        item,
        attributes={**item.attributes, "googclient_traceparent": f"00-{trace_id}-{'cd' * 8}-01"},
    )
    assert pipeline.handle(traced).outcome == Outcome.SUCCEEDED
    assert logs and all(e["trace"] == f"projects/proj/traces/{trace_id}" for e in logs)


def test_make_worker_id_is_unique_per_call() -> None:
    first, second = make_worker_id(), make_worker_id()
    assert first != second and first.rsplit("-", 2)[0] == second.rsplit("-", 2)[0]


@on_every_ledger
def test_concurrent_deliveries_of_one_fire_run_it_once(h: Harness) -> None:
    # The clock is frozen: every claim has the same worker and the same `now`.
    sched = schedule()
    results: list[Disposition] = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def deliver() -> None:
        go.wait(WAIT_S)
        outcome = h.handle(delivery(sched))
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert len(h.action.calls) == 1 and len(results) == 8
    assert [r.outcome for r in results].count(Outcome.SUCCEEDED) == 1
    assert {r.outcome for r in results} <= {Outcome.SUCCEEDED, Outcome.BUSY, Outcome.DUPLICATE}


class BrokenRecordLedger(MemoryLedger):
    def record(self, execution: Any) -> bool:
        raise ConnectionError("store unavailable")


def test_a_missed_fire_that_cannot_be_recorded_is_retried_not_run() -> None:
    recorder = Recorder()
    late = SLOT + timedelta(hours=1)
    pipeline = pipeline_on(BrokenRecordLedger(), recorder, clock=lambda: late)
    result = pipeline.handle(delivery(schedule()))
    assert not result.ack and result.outcome == Outcome.ERROR and recorder.calls == []


def test_an_action_returning_a_non_final_state_fails(h: Harness) -> None:
    h.action.behaviour = lambda _: ActionResult(State.RUNNING)
    assert h.handle(delivery(schedule())).outcome == Outcome.FAILED


class BrokenPluginRegistry(ActionRegistry):
    def get(self, action_type: str) -> Any:
        raise ImportError("plugin module missing")


def test_a_broken_plugin_rejects_the_message_without_crashing() -> None:
    pipeline = pipeline_on(MemoryLedger(), BrokenPluginRegistry())
    assert pipeline.handle(delivery(schedule())) == Disposition(ack=True, outcome=Outcome.REJECTED)


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


# A claim that lands late (the store hung longer than the lease) and duplicates in one process.


class SlowClaimLedger(MemoryLedger):
    """Each claim lands `delay` after it was asked for (the clock moves on meanwhile), and
    `taken` says whether another worker took the fire in that time."""

    def __init__(self, clock: FakeClock, delay: timedelta, taken: bool = False) -> None:
        super().__init__()
        self.clock, self.delay, self.taken = clock, delay, taken

    def claim(self, request: ClaimRequest) -> Any:
        claim = super().claim(request)
        self.clock.advance(self.delay)
        return claim

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        return not self.taken and super().renew(execution_id, worker_id, lease_until)


@pytest.mark.parametrize("taken", [False, True])
def test_a_claim_whose_lease_lapsed_on_the_way_is_renewed_before_the_action(taken: bool) -> None:
    clock = FakeClock(SLOT + timedelta(seconds=2))
    ledger, recorder = SlowClaimLedger(clock, timedelta(seconds=61), taken), Recorder()
    pipeline = pipeline_on(ledger, recorder, clock=clock, lease=timedelta(seconds=60))
    result = pipeline.handle(delivery(schedule()))
    if taken:
        assert result == Disposition(ack=True, outcome=Outcome.LOST) and recorder.calls == []
    else:
        assert result.outcome == Outcome.SUCCEEDED and len(recorder.calls) == 1


def test_a_second_delivery_of_a_fire_this_process_is_running_waits() -> None:
    started, release = threading.Event(), threading.Event()

    def behaviour(_: ActionContext) -> ActionResult | None:
        started.set()
        release.wait(10)
        return None

    recorder = Recorder(behaviour)
    pipeline = pipeline_on(MemoryLedger(), recorder)
    first: list[Disposition] = []
    thread = threading.Thread(target=lambda: first.append(pipeline.handle(delivery(schedule()))))
    thread.start()
    assert started.wait(10)
    second = pipeline.handle(delivery(schedule()))
    release.set()
    thread.join(10)
    assert second.outcome == Outcome.BUSY and not second.ack
    assert first[0].outcome == Outcome.SUCCEEDED and len(recorder.calls) == 1


def test_a_duplicate_elsewhere_during_a_retry_wait_finds_the_fire_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker takes a released fire back before it waits to retry, so a duplicate delivered
    to another worker meanwhile spends no attempt of its own."""
    import worker.finishing as finishing

    monkeypatch.setattr(finishing, "RETRY_BASE_DELAY", timedelta(milliseconds=500))
    ledger, failures = MemoryLedger(), iter([ActionError("HTTP 503", retryable=True)])

    def behaviour(_: ActionContext) -> ActionResult | None:
        error = next(failures, None)
        if error is not None:
            raise error
        return None

    first, other = Recorder(behaviour), Recorder()
    workers = [
        pipeline_on(ledger, recorder, worker_id=name, retry_budget=timedelta(seconds=5))
        for name, recorder in (("w1", first), ("w2", other))
    ]
    results: list[Disposition] = []
    thread = threading.Thread(
        target=lambda: results.append(workers[0].handle(delivery(schedule())))
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not first.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # inside the 500 ms wait
    assert workers[1].handle(delivery(schedule())).outcome == Outcome.BUSY
    thread.join(10)
    assert results[0].outcome == Outcome.SUCCEEDED and other.calls == []
    assert [c.attempt for c in first.calls] == [1, 2]
