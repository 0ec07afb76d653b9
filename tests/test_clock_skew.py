"""Replicas whose clocks run 30 s ahead and behind, on the Firestore emulator: the one ahead
never steals the live fire of the one behind, the one behind does not wait 30 s longer to take
over the dead fire of the one ahead, and the other way round (README, Failure model).

Each replica is wired as `worker.runner` wires a worker (a Firestore ledger, its server clock as
the pipeline's clock, a reaper), in this process, with its machine clock shifted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from scheduler.contract import build_message, execution_id
from scheduler.model import Action, Schedule
from worker.action import ActionContext, ActionRegistry, ActionResult
from worker.firestore_lapsed import FirestoreLapsedClaims
from worker.firestore_ledger import FirestoreLedger
from worker.ledger import ClaimRequest, ClaimResult, FireMessage, State
from worker.pipeline import Pipeline
from worker.reaper import Reaper
from worker.server_clock import ServerClock, local_now
from worker.transport import Delivery, Outcome

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

KEY = "skew-key"
SKEW = timedelta(seconds=30)
LEASE = timedelta(seconds=3)
WAIT_S = 30.0


class Gate:
    """An action that records its calls and waits until opened."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, ActionContext]] = []
        self.open = threading.Event()

    def __call__(self, context: ActionContext) -> ActionResult | None:
        self.calls.append((time.monotonic(), context))
        assert self.open.wait(WAIT_S)
        return None


@dataclass
class Replica:
    ledger: FirestoreLedger
    pipeline: Pipeline
    reaper: Reaper
    machine_clock: Callable[[], datetime]


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[firestore.Client]:
    request.getfixturevalue("firestore_emulator")
    client = firestore.Client(project=request.getfixturevalue("project_id"))
    yield client
    client.close()


def replica(client: firestore.Client, skew: timedelta, action: Gate, name: str) -> Replica:
    def machine_clock() -> datetime:
        return local_now() + skew

    ledger = FirestoreLedger(client, clock=ServerClock(machine_clock))
    pipeline = Pipeline(ledger, ActionRegistry({"custom": action}), worker_id=name,
                        signing_key=KEY, lease=LEASE, clock=ledger.clock.now)
    reaper = Reaper(FirestoreLapsedClaims(client), pipeline.handle, clock=ledger.clock.now,
                    interval=LEASE / 4, grace=LEASE, worker_id=name)
    return Replica(ledger, pipeline, reaper, machine_clock)


def manual_fire(name: str) -> tuple[str, Delivery]:
    sched = Schedule(id=f"skew/{name}", action=Action("custom", {}), cron="0 0 1 1 *")
    fire_time = datetime.now(UTC).replace(microsecond=0)
    message = build_message(sched, signing_key=KEY, trigger="manual", fire_time=fire_time)
    delivery = Delivery(f"m-{name}", message.data, message.attributes, fire_time)
    return execution_id(sched.id, fire_time, "manual"), delivery


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


SKEWS = pytest.mark.parametrize("holder_skew", [-SKEW, SKEW], ids=["holder_behind", "holder_ahead"])


@SKEWS
def test_a_replica_with_a_skewed_clock_never_steals_a_live_fire(
    client: firestore.Client, holder_skew: timedelta,
) -> None:
    action = Gate()
    holder = replica(client, holder_skew, action, "holder")
    other = replica(client, -holder_skew, action, "other")
    eid, delivery = manual_fire("live")
    outcome: list[str] = []
    running = threading.Thread(
        target=lambda: outcome.append(holder.pipeline.handle(delivery).outcome))
    running.start()
    try:
        wait_until(lambda: bool(action.calls), "the holder's action to start")
        deadline = time.monotonic() + 3 * LEASE.total_seconds()  # the action outlives 3 leases
        while time.monotonic() < deadline:
            assert other.pipeline.handle(delivery).outcome == Outcome.BUSY
            assert other.reaper.sweep() == 0
            time.sleep(LEASE.total_seconds() / 6)
        # What the other replica's own clock would have done: judged the live lease lapsed.
        if holder_skew < timedelta(0):
            stolen = ClaimRequest(eid, "skew/live", delivery.published_at, "manual", "other",
                                  LEASE, "skip", other.machine_clock())
            execution = holder.ledger.get(eid)
            assert execution is not None and execution.lease_until is not None
            assert execution.lease_until < stolen.now
    finally:
        action.open.set()
        running.join(WAIT_S)
    assert outcome == ["succeeded"] and len(action.calls) == 1
    record = holder.ledger.get(eid)
    assert record is not None and (record.state, record.attempt) == (State.SUCCEEDED, 1)


@SKEWS
def test_a_replica_with_a_skewed_clock_takes_a_dead_fire_over_on_time(
    client: firestore.Client, holder_skew: timedelta,
) -> None:
    action = Gate()
    action.open.set()
    holder = replica(client, holder_skew, action, "holder")
    other = replica(client, -holder_skew, action, "other")
    eid, delivery = manual_fire("dead")
    message = FireMessage(delivery.message_id, delivery.data, delivery.attributes,
                          delivery.published_at)
    # The holder claims as its pipeline would, then dies: nobody renews the lease.
    claim = holder.ledger.claim(ClaimRequest(eid, "skew/dead", delivery.published_at, "manual",
                                             "holder", LEASE, "skip", holder.pipeline.clock(),
                                             message=message))
    claimed_at = time.monotonic()
    assert claim.result is ClaimResult.CLAIMED
    stop = threading.Event()
    other.reaper.start(stop)
    try:
        wait_until(lambda: bool(action.calls), "the dead fire to be taken over")
    finally:
        stop.set()
    started_at, context = action.calls[0]
    delay = started_at - claimed_at
    # The lease, a sweep interval and the claim (about 3.5 s); by either machine clock it would
    # be 30 s more (behind) or at once (ahead: the lease already lapsed). The upper bound leaves
    # a loaded machine room and still tells 30 s apart.
    assert LEASE.total_seconds() - 0.5 < delay < LEASE.total_seconds() + 10.0
    assert (context.execution_id, context.attempt) == (eid, 2)
    assert other.reaper.wait_idle(WAIT_S)
    record = other.ledger.get(eid)
    assert record is not None and (record.state, record.worker_id) == (State.SUCCEEDED, "other")
