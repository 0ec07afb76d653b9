"""The reaper (`worker.reaper`) with real pipelines on a real SQLite ledger and a fake clock:
which lapsed claims it takes over, that exactly one of several reapers wins, and overlap `skip`
across a takeover. The same on Firestore with worker processes: tests/test_takeover_e2e.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler.contract import build_message, execution_id
from scheduler.model import Action, Schedule
from worker.action import ActionContext, ActionRegistry, ActionResult
from worker.ledger import ClaimRequest, Execution, FireMessage, State
from worker.pipeline import Pipeline
from worker.reaper import Reaper
from worker.sqlite_ledger import SqliteLedger
from worker.transport import Delivery, Outcome

KEY = "reaper-key"
SLOT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=12)
WAIT_S = 10.0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Action_:
    """Records calls; a fire whose time is in `blocked` waits for `gate`."""

    def __init__(self) -> None:
        self.calls: list[ActionContext] = []
        self.gate = threading.Event()
        self.blocked: set[datetime] = set()
        self.lock = threading.Lock()

    def __call__(self, context: ActionContext) -> ActionResult | None:
        with self.lock:
            self.calls.append(context)
        if context.fire_time in self.blocked:
            assert self.gate.wait(WAIT_S)
        return None


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


def every_minute(overlap: str = "allow") -> Schedule:
    return Schedule(id="team/sync", action=Action("custom", {}), cron="* * * * *", overlap=overlap)


def message_of(sched: Schedule, slot: datetime) -> FireMessage:
    message = build_message(sched, signing_key=KEY)
    return FireMessage(f"m-{slot:%H%M}", message.data, message.attributes,
                       slot + timedelta(seconds=1))


def claim_and_die(ledger: SqliteLedger, sched: Schedule, slot: datetime, now: datetime) -> str:
    """A worker claims the fire at `slot`, keeping its message, and dies at once."""
    eid = execution_id(sched.id, slot)
    claim = ledger.claim(ClaimRequest(eid, sched.id, slot, "scheduled", "dead", LEASE,
                                      sched.overlap, now, message=message_of(sched, slot)))
    assert claim.result.run
    return eid


def replica(ledger: SqliteLedger, clock: Clock, action: Action_,
            name: str) -> tuple[Pipeline, Reaper]:
    pipeline = Pipeline(ledger, ActionRegistry({"custom": action}), worker_id=name,
                        signing_key=KEY, lease=LEASE, clock=clock)
    return pipeline, Reaper(ledger, pipeline.handle, clock=clock, interval=LEASE / 4, grace=LEASE,
                            worker_id=name)


def test_a_dead_holders_claim_is_taken_over_once_its_lease_lapsed(ledger: SqliteLedger) -> None:
    sched, clock, action = every_minute(), Clock(SLOT + timedelta(seconds=2)), Action_()
    eid = claim_and_die(ledger, sched, SLOT, clock.now)
    _, reaper = replica(ledger, clock, action, "w2")
    clock.now += LEASE - timedelta(milliseconds=1)
    assert reaper.sweep() == 0
    clock.now += timedelta(milliseconds=1)
    assert reaper.sweep() == 1
    assert reaper.wait_idle(WAIT_S)
    [call] = action.calls
    assert (call.execution_id, call.attempt) == (eid, 2)
    record = ledger.get(eid)
    assert record is not None and (record.state, record.worker_id) == (State.SUCCEEDED, "w2")
    assert reaper.sweep() == 0


def test_of_three_reapers_exactly_one_runs_each_takeover(ledger: SqliteLedger) -> None:
    sched, clock, action = every_minute(), Clock(SLOT), Action_()
    eids = [claim_and_die(ledger, sched, SLOT + timedelta(minutes=m), SLOT) for m in range(5)]
    clock.now = SLOT + timedelta(minutes=10)
    reapers = [replica(ledger, clock, action, f"w{n}")[1] for n in range(3)]
    threads = [threading.Thread(target=reaper.sweep) for reaper in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(reaper.wait_idle(WAIT_S) for reaper in reapers)
    assert sorted(call.execution_id for call in action.calls) == sorted(eids)
    assert all(call.attempt == 2 for call in action.calls)


def test_a_released_fire_waits_for_its_retry_backoff(ledger: SqliteLedger) -> None:
    sched, clock, action = every_minute(), Clock(SLOT + timedelta(seconds=2)), Action_()
    eid = claim_and_die(ledger, sched, SLOT, clock.now)
    assert ledger.release(eid, "dead", now=clock.now, error="HTTP 503")
    _, reaper = replica(ledger, clock, action, "w2")
    clock.now += timedelta(seconds=9)
    assert reaper.sweep() == 0
    clock.now += timedelta(seconds=1)
    assert reaper.sweep() == 1 and reaper.wait_idle(WAIT_S)
    assert [call.attempt for call in action.calls] == [2]


def test_a_lapsed_claim_without_its_message_is_left_to_pubsub(ledger: SqliteLedger) -> None:
    sched, clock = every_minute(), Clock(SLOT)
    eid = execution_id(sched.id, SLOT)
    ledger.claim(ClaimRequest(eid, sched.id, SLOT, "scheduled", "old", LEASE, "allow", SLOT))
    _, reaper = replica(ledger, clock, Action_(), "w2")
    clock.now += LEASE * 2
    with capture_logs() as logs:
        assert reaper.sweep() == 0
        assert reaper.sweep() == 0
    assert [entry["execution_id"] for entry in logs if entry["log_level"] == "warning"] == [eid]


def test_overlap_skip_across_a_slot_runs_both_fires_and_skips_neither(ledger: SqliteLedger) -> None:
    """The fire claimed first, whose holder died, is taken over even though the next slot's
    fire started meanwhile (its lease had lapsed); a third slot is skipped while they run."""
    sched, action = every_minute("skip"), Action_()
    clock = Clock(SLOT + timedelta(seconds=2))
    first = claim_and_die(ledger, sched, SLOT, clock.now)
    pipeline, reaper = replica(ledger, clock, action, "w2")
    nxt = SLOT + timedelta(minutes=1)
    action.blocked.add(nxt)
    clock.now = nxt + timedelta(seconds=1)
    newer = message_of(sched, nxt)
    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(pipeline.handle(Delivery(
        newer.message_id, newer.data, newer.attributes, newer.published_at)).outcome))
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not action.calls:  # the newer fire runs
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert reaper.sweep() == 1 and reaper.wait_idle(WAIT_S)
        # The next slot's message (published early here: the clock stays inside the leases).
        third = message_of(sched, nxt + timedelta(minutes=1))
        outcome = pipeline.handle(Delivery(third.message_id, third.data, third.attributes,
                                           third.published_at)).outcome
        assert outcome == Outcome.SKIPPED
    finally:
        action.gate.set()
        thread.join(WAIT_S)
    assert done == ["succeeded"]
    taken = ledger.get(first)
    assert taken is not None and (taken.state, taken.attempt) == (State.SUCCEEDED, 2)
    assert [(c.fire_time, c.attempt) for c in action.calls] == [(nxt, 1), (SLOT, 2)]


class Flaky:
    """The ledger's lapsed claims, behind a store that fails or stalls when told to."""

    def __init__(self, ledger: SqliteLedger) -> None:
        self.ledger = ledger
        self.fail = False
        self.stall = 0.0

    def lapsed(self, now: datetime, *, limit: int) -> list[Execution]:
        if self.fail:
            raise ConnectionError("store unreachable")
        time.sleep(self.stall)
        return self.ledger.lapsed(now, limit=limit)


@pytest.mark.parametrize("outage", ["unreachable", "stalled"])
def test_after_a_store_outage_live_holders_renew_before_anything_is_taken_over(
    ledger: SqliteLedger, outage: str,
) -> None:
    """Nobody could renew while the store was down, so leases lapsed on live holders too."""
    sched, clock, action = every_minute(), Clock(SLOT), Action_()
    claim_and_die(ledger, sched, SLOT, clock.now)
    clock.now += LEASE * 2
    store = Flaky(ledger)
    pipeline = Pipeline(ledger, ActionRegistry({"custom": action}), worker_id="w2",
                        signing_key=KEY, lease=LEASE, clock=clock)
    grace = timedelta(seconds=0.5)
    reaper = Reaper(store, pipeline.handle, clock=clock, interval=timedelta(seconds=0.1),
                    grace=grace)
    stop = threading.Event()
    if outage == "unreachable":
        store.fail = True
        thread = reaper.start(stop)
        time.sleep(0.4)
        store.fail = False
    else:
        store.stall = 0.2
        assert reaper.sweep() == 0
        store.stall = 0.0
        thread = reaper.start(stop)
    back = time.monotonic()
    try:
        deadline = back + WAIT_S
        while not action.calls:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert time.monotonic() - back > grace.total_seconds() - 0.35
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert reaper.wait_idle(WAIT_S)


def test_a_ledger_file_from_before_kept_messages_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE executions (execution_id TEXT PRIMARY KEY, schedule_id TEXT "
                     "NOT NULL, fire_time TEXT NOT NULL, trigger TEXT NOT NULL, state TEXT NOT "
                     "NULL, attempt INTEGER NOT NULL, worker_id TEXT, lease_until TEXT, created_at "
                     "TEXT NOT NULL, started_at TEXT, finished_at TEXT, duration_s REAL, error "
                     "TEXT, detail TEXT, expire_at TEXT NOT NULL)")
    ledger = SqliteLedger(path)
    try:
        sched = every_minute()
        eid = claim_and_die(ledger, sched, SLOT, SLOT)
        [lapsed] = ledger.lapsed(SLOT + LEASE, limit=5)
        assert lapsed.execution_id == eid and lapsed.message == message_of(sched, SLOT)
    finally:
        ledger.close()



def test_a_reaper_leaves_its_own_workers_claims_to_it(ledger: SqliteLedger) -> None:
    """A lapse of its own live claim is a late renewal, not a death (other replicas still take
    it over if it stays lapsed)."""
    sched, clock, action = every_minute(), Clock(SLOT), Action_()
    claim_and_die(ledger, sched, SLOT, clock.now)
    _, own = replica(ledger, clock, action, "dead")
    _, other = replica(ledger, clock, action, "w2")
    clock.now += LEASE
    assert own.sweep() == 0
    assert other.sweep() == 1 and other.wait_idle(WAIT_S)
