"""Helpers for the ledger contention tests: claim requests, thread races, and the Firestore
`firestore_pair` fixture (registered for every test module in `conftest.py`) with ways to commit
batches and count commits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.contract import execution_id
from worker.ledger import ClaimRequest, ClaimResult, Ledger, State
from worker.sqlite_ledger import SqliteLedger

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


LEASE = timedelta(minutes=5)


THREADS = 6


def open_ledger(kind: str, where: str) -> tuple[Ledger, Callable[[], None]]:
    """A ledger on `where` (a SQLite file, or a Firestore project on the emulator) and its
    closer."""
    if kind == "sqlite":
        sqlite_ledger = SqliteLedger(where)
        return sqlite_ledger, sqlite_ledger.close
    from google.cloud import firestore

    from worker.firestore_ledger import FirestoreLedger

    client = firestore.Client(project=where)
    return FirestoreLedger(client), client.close


def request_for(schedule_id: str, minute: int, worker: str, *, now: datetime, overlap: str,
                lease: timedelta = LEASE, base: datetime = T0) -> ClaimRequest:
    """A claim of the schedule's fire at `base` + `minute`."""
    fire_time = base + timedelta(minutes=minute)
    return ClaimRequest(execution_id(schedule_id, fire_time), schedule_id, fire_time, "scheduled",
                        worker, lease, overlap, now)


def race(work: Callable[[int], list[tuple[ClaimRequest, ClaimResult]]],
         threads: int = THREADS) -> list[tuple[ClaimRequest, ClaimResult]]:
    """Run `work(thread_index)` on `threads` threads released together; all their results."""
    barrier = threading.Barrier(threads)

    def start(index: int) -> list[tuple[ClaimRequest, ClaimResult]]:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(threads) as pool:
        return [item for part in pool.map(start, range(threads)) for item in part]


@pytest.fixture
def firestore_pair(firestore_emulator: str, project_id: str) -> Iterator[tuple[Any, Any]]:
    """Two Firestore ledgers (a claimer and a rival) on one fresh project."""
    from google.cloud import firestore

    from worker.firestore_ledger import FirestoreLedger

    client = firestore.Client(project=project_id)
    yield FirestoreLedger(client), FirestoreLedger(client)
    client.close()


def commit_batch(
    ledger: Any, groups: list[list[Any]], tentative: frozenset[int] = frozenset()
) -> list[Any]:
    """The outcome of each group of writes, committed by `ledger` as one batch of callers'
    commits; the groups at the `tentative` indices are fast-path guesses."""
    from worker.firestore_batch import CommitGroup

    return ledger.batches.commit_batch([CommitGroup(group, index in tentative)
                                        for index, group in enumerate(groups)])


def groups_with_one_lost_race(ledger: Any, count: int, lost: int, prefix: str) -> list[list[Any]]:
    """`count` groups of one write each, creating `{prefix}{index}`; the group at `lost` creates
    an execution that exists already, so its precondition fails."""
    from worker.firestore_wire import Write

    ledger.executions.document("taken").create({"n": 0})
    groups = [[Write(ledger.execution_name(f"{prefix}{i}"), {"n": i})] for i in range(count)]
    groups[lost] = [Write(ledger.execution_name("taken"), {"n": lost})]
    return groups


def commit_sizes(monkeypatch: pytest.MonkeyPatch, ledger: Any) -> list[int]:
    """The number of writes of each Commit `ledger` sends from now on."""
    commits: list[int] = []
    commit_now = ledger.batches.commit_now
    monkeypatch.setattr(ledger.batches, "commit_now",
                        lambda writes: commits.append(len(writes)) or commit_now(writes))
    return commits


def assert_finished(ledger: Ledger, request: ClaimRequest) -> None:
    """The fire is stored as succeeded and its schedule runs nothing any more."""
    stored = ledger.get(request.execution_id)
    assert stored is not None and stored.state is State.SUCCEEDED
    state = ledger.schedule_state(request.schedule_id)
    assert (
        state is not None
        and state.running_execution_id is None
        and state.last_state is State.SUCCEEDED
    )
