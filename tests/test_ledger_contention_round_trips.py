"""The Firestore ledger (emulator) spends as few calls as it can: a fresh claim is one commit and no
read, what this process wrote answers its duplicates, and deliveries of one fire in one process
claim one at a time (helpers: `ledger_race_harness`)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from ledger_race_harness import LEASE, T0, assert_finished, request_for

from worker.ledger import ClaimResult, State

pytestmark = pytest.mark.timeout(120)


@pytest.mark.emulator
def test_firestore_renew_and_finish_of_a_held_execution_read_nothing(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The holder remembers what it wrote and the versions its commits returned: renewing and
    finishing are one guarded commit each, without reading the records back."""
    ledger, _ = firestore_pair
    request = request_for("s", 0, "w1", now=T0, overlap="skip")
    ledger.claim(request)
    reads: list[int] = []
    read = ledger.batches.get_all
    monkeypatch.setattr(ledger.batches, "get_all",
                        lambda refs: reads.append(len(refs)) or read(refs))
    assert ledger.renew(request.execution_id, "w1", T0 + 2 * LEASE)
    assert ledger.finish(request.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(seconds=5))
    assert reads == []
    assert_finished(ledger, request)


@pytest.mark.emulator
def test_firestore_finish_after_a_takeover_is_refused_from_the_stored_record(
    firestore_pair: tuple[Any, Any],
) -> None:
    """What the old holder remembers is stale once another worker took over: its guarded
    commit fails, and the stored record says it no longer holds the fire."""
    ledger, rival = firestore_pair
    ledger.claim(request_for("s", 0, "w1", now=T0, overlap="skip", lease=timedelta(seconds=1)))
    later = T0 + timedelta(minutes=1)
    taken = rival.claim(request_for("s", 0, "w2", now=later, overlap="skip"))
    assert taken.result is ClaimResult.TAKEN_OVER
    assert not ledger.finish(taken.execution.execution_id, "w1", State.SUCCEEDED, now=later)
    assert rival.finish(taken.execution.execution_id, "w2", State.SUCCEEDED, now=later)


@pytest.mark.emulator
def test_firestore_deliveries_of_one_fire_in_one_process_claim_one_at_a_time(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight concurrent claims of one fire by one ledger: one claims, the others wait their turn
    and read its record (BUSY), and no commit fails a precondition."""
    ledger, _ = firestore_pair
    failed: list[int] = []
    commit_now = ledger.batches.commit_now

    def counting(writes: list[Any]) -> list[Any] | None:
        versions: list[Any] | None = commit_now(writes)
        if versions is None:
            failed.append(len(writes))
        return versions

    monkeypatch.setattr(ledger.batches, "commit_now", counting)
    go = threading.Barrier(8)

    def claim(index: int) -> ClaimResult:
        go.wait(30)
        return ledger.claim(request_for("s", 0, f"w{index}", now=T0, overlap="skip")).result

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(8)))
    assert sorted(results) == sorted([ClaimResult.CLAIMED] + [ClaimResult.BUSY] * 7)
    assert failed == []


@pytest.mark.emulator
def test_firestore_fresh_claim_is_one_commit_and_no_read(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody claimed the fire and nothing of the schedule runs: the claim is decided without a
    read and committed as two creates (execution and running document)."""
    ledger, _ = firestore_pair
    reads: list[int] = []
    commits: list[int] = []
    read, commit_now = ledger.batches.get_all, ledger.batches.commit_now
    monkeypatch.setattr(ledger.batches, "get_all",
                        lambda refs: reads.append(len(refs)) or read(refs))
    monkeypatch.setattr(ledger.batches, "commit_now",
                        lambda writes: commits.append(len(writes)) or commit_now(writes))
    assert (
        ledger.claim(request_for("s", 0, "w1", now=T0, overlap="skip")).result
        is ClaimResult.CLAIMED
    )
    assert (
        ledger.claim(request_for("t", 0, "w1", now=T0, overlap="allow")).result
        is ClaimResult.CLAIMED
    )
    assert (reads, commits) == ([], [2, 1])


@pytest.mark.emulator
def test_firestore_fires_this_process_finished_or_holds_are_answered_without_a_call(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A duplicate of a fire this ledger finished is DONE, and of one it holds with a live lease
    BUSY, from what it wrote; a lapsed lease still goes to the store (it may be taken over)."""
    ledger, rival = firestore_pair
    done = request_for("s", 0, "w1", now=T0, overlap="skip")
    ledger.claim(done)
    assert ledger.finish(done.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(seconds=1))
    held = request_for("s", 1, "w1", now=T0, overlap="skip", lease=timedelta(seconds=30))
    ledger.claim(held)
    calls: list[str] = []
    read, commit = ledger.batches.get_all, ledger.batches.commit
    monkeypatch.setattr(ledger.batches, "get_all", lambda refs: calls.append("read") or read(refs))
    monkeypatch.setattr(ledger.batches, "commit", lambda writes, **options: (
        calls.append("commit") or commit(writes, **options)))
    duplicate = ledger.claim(request_for("s", 0, "w2", now=T0 + timedelta(hours=1), overlap="skip"))
    assert duplicate.result is ClaimResult.DONE and duplicate.execution.state is State.SUCCEEDED
    busy = ledger.claim(request_for("s", 1, "w2", now=T0 + timedelta(seconds=10), overlap="skip"))
    assert busy.result is ClaimResult.BUSY and busy.execution.worker_id == "w1"
    assert calls == []
    taken = ledger.claim(request_for("s", 1, "w2", now=T0 + timedelta(minutes=1), overlap="skip"))
    assert taken.result is ClaimResult.TAKEN_OVER and "read" in calls
    assert rival.get(held.execution_id) == taken.execution


@pytest.mark.emulator
def test_firestore_finish_clears_the_running_document_and_release_keeps_the_last_fire(
    firestore_pair: tuple[Any, Any],
) -> None:
    ledger, rival = firestore_pair
    first = request_for("s", 0, "w1", now=T0, overlap="skip")
    ledger.claim(first)
    assert ledger.finish(first.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(seconds=1))
    assert rival.batches.get_all([rival.running_name("s")]) == [None]
    second = request_for("s", 1, "w1", now=T0 + timedelta(minutes=1), overlap="skip")
    ledger.claim(second)
    assert ledger.release(second.execution_id, "w1", now=T0 + timedelta(minutes=1, seconds=1))
    state = rival.schedule_state("s")
    assert state is not None
    assert (state.running_execution_id, state.running_lease_until) == (
        second.execution_id, T0 + timedelta(minutes=1, seconds=1))
    assert (state.last_execution_id, state.last_state) == (first.execution_id, State.SUCCEEDED)
