"""One memory of held fires for the ledger (records and versions) and the pipeline (leases)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.held_fires import Held, HeldFires
from worker.ledger import ClaimRequest, ClaimResult, Execution, State

NOW = datetime(2026, 3, 2, 10, 0, 2, tzinfo=UTC)


@dataclass
class Holding:
    execution_id: str


def execution(eid: str, state: State = State.RUNNING) -> Execution:
    return Execution(execution_id=eid, schedule_id="s", fire_time=NOW, trigger="scheduled",
                     state=state, attempt=1, created_at=NOW, expire_at=NOW + timedelta(days=1),
                     worker_id="w1", lease_until=NOW + timedelta(seconds=12))


def request(eid: str) -> ClaimRequest:
    return ClaimRequest(execution_id=eid, schedule_id="s", fire_time=NOW, trigger="scheduled",
                        worker_id="w2", lease=timedelta(seconds=12), overlap="allow", now=NOW)


def test_held_fires_are_remembered_in_order_and_bounded() -> None:
    fires: HeldFires[Holding] = HeldFires(limit=2)
    for eid in ("a", "b", "c"):
        fires.hold(Holding(eid))
    assert [h.execution_id for h in fires.held()] == ["b", "c"]
    assert fires.take("b") == Holding("b") and fires.take("b") is None
    unbounded: HeldFires[Holding] = HeldFires(limit=None)
    for number in range(50):
        unbounded.hold(Holding(str(number)))
    assert len(unbounded.held()) == 50


def test_the_ledger_answers_from_what_it_wrote() -> None:
    fires: HeldFires[Held] = HeldFires()
    fires.hold(Held(execution("running"), 1, None, None))
    fires.finished(execution("done", State.SUCCEEDED))
    busy = fires.known(request("running"))
    done = fires.known(request("done"))
    assert busy is not None and busy.result is ClaimResult.BUSY
    assert done is not None and done.result is ClaimResult.DONE
    assert fires.known(request("unknown")) is None
