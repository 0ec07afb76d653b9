"""The ledger under contention: many threads, and several processes, racing for the same fires.

Runs against SQLite and the Firestore emulator. The claims are checked for correctness only (speed
is measured by `bench/bench_claim.py`): exactly one claimer wins each fire, a lapsed lease is taken
over exactly once, and with overlap `skip` no two fires of a schedule ever run at the same time.
Helpers: `ledger_race_harness`.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ledger_race_harness import T0, open_ledger, race, request_for

from scheduler.contract import execution_id
from worker.ledger import ClaimRequest, ClaimResult, Ledger, State

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.emulator)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, where) of a fresh, empty ledger store."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "ledger.db")
    request.getfixturevalue("firestore_emulator")
    return "firestore", str(request.getfixturevalue("project_id"))


@pytest.fixture
def ledger(store: tuple[str, str]) -> Iterator[Ledger]:
    """One ledger on the store, shared by the test's threads."""
    opened, close = open_ledger(*store)
    yield opened
    close()


def winners(results: list[tuple[ClaimRequest, ClaimResult]]) -> Counter[str]:
    """How many claims of each execution were told to run it."""
    counts: Counter[str] = Counter()
    for request, result in results:
        counts[request.execution_id] += result.run
    return counts


def test_each_fire_is_claimed_exactly_once(ledger: Ledger) -> None:
    fires = [(f"s{index}", index, "skip" if index % 2 else "allow") for index in range(20)]

    def work(thread: int) -> list[tuple[ClaimRequest, ClaimResult]]:
        order = random.Random(thread).sample(fires, len(fires))
        out = []
        for schedule_id, minute, overlap in order:
            request = request_for(schedule_id, minute, f"w{thread}", now=T0, overlap=overlap)
            out.append((request, ledger.claim(request).result))
        return out

    results = race(work)
    assert set(winners(results).values()) == {1}
    assert len(winners(results)) == len(fires)
    for request, result in results:
        stored = ledger.get(request.execution_id)
        assert stored is not None and stored.state is State.RUNNING and stored.attempt == 1
        assert result in (ClaimResult.CLAIMED, ClaimResult.BUSY)
        assert (result is ClaimResult.CLAIMED) == (stored.worker_id == request.worker_id)


def test_overlap_skip_never_runs_two_fires_of_a_schedule_at_once(ledger: Ledger) -> None:
    schedules = ["alpha", "beta"]
    fires = [(schedule_id, minute) for schedule_id in schedules for minute in range(12)]
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    lock = threading.Lock()
    # The real clock decides here, so the fires are recent (not past their retention).
    base = datetime.now(UTC).replace(second=0, microsecond=0)

    def work(thread: int) -> list[tuple[ClaimRequest, ClaimResult]]:
        out = []
        for schedule_id, minute in random.Random(thread).sample(fires, len(fires)):
            request = request_for(
                schedule_id, minute, f"w{thread}", now=datetime.now(UTC), overlap="skip", base=base
            )
            claim = ledger.claim(request)
            out.append((request, claim.result))
            if not claim.result.run:
                continue
            with lock:
                running[schedule_id] += 1
                peak[schedule_id] = max(peak[schedule_id], running[schedule_id])
            time.sleep(0.002)
            with lock:
                running[schedule_id] -= 1
            assert ledger.finish(
                request.execution_id, request.worker_id, State.SUCCEEDED, now=datetime.now(UTC)
            )
        return out

    results = race(work)
    assert max(peak.values()) == 1
    assert set(winners(results).values()) <= {0, 1}
    outcomes = Counter(result for _, result in results)
    assert outcomes[ClaimResult.CLAIMED] >= len(schedules)
    for schedule_id, minute in fires:
        stored = ledger.get(execution_id(schedule_id, base + timedelta(minutes=minute)))
        assert stored is not None and stored.state in (State.SUCCEEDED, State.SKIPPED)
    for schedule_id in schedules:
        state = ledger.schedule_state(schedule_id)
        assert state is not None and state.running_execution_id is None


def test_lapsed_leases_are_taken_over_exactly_once(ledger: Ledger) -> None:
    allow = [(f"a{index}", index) for index in range(8)]
    skip = [("shared", index) for index in range(6)]
    for schedule_id, minute in allow:
        ledger.claim(
            request_for(
                schedule_id, minute, "dead", now=T0, overlap="allow", lease=timedelta(seconds=10)
            )
        )
    for schedule_id, minute in skip:
        # Staggered so that each fire finds the previous one's lease lapsed and claims.
        now = T0 + timedelta(minutes=minute)
        assert ledger.claim(request_for(schedule_id, minute, "dead", now=now, overlap="skip",
                                        lease=timedelta(seconds=10))).result is ClaimResult.CLAIMED
    later = T0 + timedelta(hours=1)

    def work(thread: int) -> list[tuple[ClaimRequest, ClaimResult]]:
        out = []
        order = random.Random(thread).sample(allow + skip, len(allow) + len(skip))
        for schedule_id, minute in order:
            overlap = "skip" if schedule_id == "shared" else "allow"
            request = request_for(schedule_id, minute, f"w{thread}", now=later, overlap=overlap)
            out.append((request, ledger.claim(request).result))
        return out

    results = race(work)
    won = winners(results)
    # Overlap skip never skips a fire that was claimed once (README, Failure model): each of the
    # dead worker's fires, skip or allow, is taken over exactly once.
    for schedule_id, minute in allow + skip:
        exec_id = execution_id(schedule_id, T0 + timedelta(minutes=minute))
        assert won[exec_id] == 1
        stored = ledger.get(exec_id)
        assert stored is not None and stored.attempt == 2 and stored.worker_id != "dead"
        assert stored.state is State.RUNNING
    not_run = {result for _, result in results if not result.run}
    assert not_run <= {ClaimResult.BUSY, ClaimResult.DONE}


def _claim_in_process(kind: str, where: str, worker: str, barrier: Any, queue: Any) -> None:
    """One process of the multi-process race: wait for the others, open its own ledger (on
    SQLite the processes race to create the file too), claim every fire, report (execution ID,
    schedule ID, result) for each."""
    fires = [(f"p{index % 4}", index, "allow") for index in range(12)]
    fires += [("pshared", index, "skip") for index in range(12, 20)]
    barrier.wait(timeout=60)
    ledger, close = open_ledger(kind, where)
    out = []
    for schedule_id, minute, overlap in random.Random(worker).sample(fires, len(fires)):
        request = request_for(
            schedule_id, minute, worker, now=T0 + timedelta(minutes=30), overlap=overlap
        )
        out.append((request.execution_id, schedule_id, str(ledger.claim(request).result)))
    close()
    queue.put(out)


def test_three_processes_claim_each_fire_once(store: tuple[str, str]) -> None:
    # Spawned processes inherit the environment, FIRESTORE_EMULATOR_HOST included.
    kind, where = store
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(3), context.Queue()
    processes = [
        context.Process(
            target=_claim_in_process, args=(kind, where, f"proc{index}", barrier, queue)
        )
        for index in range(3)
    ]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=90) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    by_fire: defaultdict[tuple[str, str], list[ClaimResult]] = defaultdict(list)
    for report in reports:
        for exec_id, schedule_id, result in report:
            by_fire[(schedule_id, exec_id)].append(ClaimResult(result))
    assert len(by_fire) == 20 and all(len(results) == 3 for results in by_fire.values())
    for (schedule_id, _), results in by_fire.items():
        if schedule_id != "pshared":
            assert sorted(results) == [ClaimResult.BUSY, ClaimResult.BUSY, ClaimResult.CLAIMED]
    # Nothing finishes in this race, so exactly one fire of the shared schedule ever runs.
    shared = [result for (schedule_id, _), results in by_fire.items() if schedule_id == "pshared"
              for result in results]
    assert sum(result.run for result in shared) == 1
