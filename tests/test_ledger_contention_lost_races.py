"""The Firestore ledger (emulator) when a rival moves between its read and its commit: a claim,
renew or finish that loses the race re-decides from what is stored (helpers:
`ledger_race_harness`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from ledger_race_harness import LEASE, T0, assert_finished, request_for

from worker.ledger import ClaimResult, State

pytestmark = pytest.mark.timeout(120)


def _race_after_read(
    monkeypatch: pytest.MonkeyPatch, ledger: Any, rival_move: Callable[[], object]
) -> list[object]:
    """Make the rival's move once, right after `ledger` read its documents and before it
    commits: the window an optimistic commit must detect."""
    moves: list[object] = []
    read = ledger.batches.get_all

    def read_then_race(refs: list[Any]) -> list[Any]:
        snapshots = read(refs)
        if not moves:
            moves.append(rival_move())
        return snapshots

    monkeypatch.setattr(ledger.batches, "get_all", read_then_race)
    return moves


def _race_before_commit(
    monkeypatch: pytest.MonkeyPatch, ledger: Any, rival_move: Callable[[], object]
) -> list[object]:
    """Make the rival's move once, right before `ledger`'s first commit: for a fast-path claim,
    the window between deciding without a read and committing."""
    moves: list[object] = []
    commit = ledger.batches.commit

    def race_then_commit(writes: list[Any], **options: Any) -> Any:
        if not moves:
            moves.append(rival_move())
        return commit(writes, **options)

    monkeypatch.setattr(ledger.batches, "commit", race_then_commit)
    return moves


@pytest.mark.emulator
@pytest.mark.parametrize(("overlap", "rival_minute", "expected"), [
    ("skip", 1, ClaimResult.OVERLAP),  # another fire of the schedule now runs
    ("allow", 0, ClaimResult.BUSY),  # the same fire now runs on the rival
])
def test_firestore_fast_claim_that_loses_a_race_re_decides_from_the_read(
    firestore_pair: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    overlap: str,
    rival_minute: int,
    expected: ClaimResult,
) -> None:
    ledger, rival = firestore_pair
    moves = _race_before_commit(monkeypatch, ledger, lambda: rival.claim(
        request_for("s", rival_minute, "rival", now=T0, overlap=overlap)).result)
    claim = ledger.claim(request_for("s", 0, "w1", now=T0, overlap=overlap))
    assert moves == [ClaimResult.CLAIMED]
    assert claim.result is expected
    if expected is ClaimResult.BUSY:
        assert claim.execution.worker_id == "rival"


@pytest.mark.emulator
@pytest.mark.parametrize(("rival_minute", "rival_result", "expected"), [
    # A running document left with a lapsed lease sends both claims to the read: the rival's
    # guarded update of it lands between this claim's read and its commit.
    (1, ClaimResult.CLAIMED, ClaimResult.OVERLAP),
    # The fire itself was left with a lapsed lease, and the rival takes it over first.
    (0, ClaimResult.TAKEN_OVER, ClaimResult.BUSY),
])
def test_firestore_claim_that_loses_a_race_after_its_read_re_decides(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, rival_minute: int,
    rival_result: ClaimResult, expected: ClaimResult,
) -> None:
    ledger, rival = firestore_pair
    dead_minute = -1 if rival_minute else 0
    rival.claim(
        request_for("s", dead_minute, "dead", now=T0, overlap="skip", lease=timedelta(seconds=1))
    )
    later = T0 + timedelta(minutes=1)
    moves = _race_after_read(monkeypatch, ledger, lambda: rival.claim(
        request_for("s", rival_minute, "rival", now=later, overlap="skip")).result)
    claim = ledger.claim(request_for("s", 0, "w1", now=later, overlap="skip"))
    assert moves == [rival_result]
    assert claim.result is expected
    if expected is ClaimResult.BUSY:
        assert claim.execution.worker_id == "rival"


@pytest.mark.emulator
def test_firestore_finish_retries_after_a_concurrent_renew(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger, rival = firestore_pair
    request = request_for("s", 0, "w1", now=T0, overlap="skip")
    ledger.claim(request)
    commits: list[bool] = []
    commit = ledger.batches.commit

    def renew_first(writes: list[Any], **options: Any) -> list[Any] | None:
        if not commits:
            commits.append(rival.renew(request.execution_id, "w1", T0 + 2 * LEASE))
        versions: list[Any] | None = commit(writes, **options)
        commits.append(versions is not None)
        return versions

    monkeypatch.setattr(ledger.batches, "commit", renew_first)
    assert ledger.finish(request.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(seconds=5))
    assert commits == [True, False, True]
    assert_finished(ledger, request)


@pytest.mark.emulator
def test_firestore_gives_up_after_max_attempts(firestore_emulator: str, project_id: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import firestore

    from worker.firestore_ledger import FirestoreLedger, LedgerContention

    client = firestore.Client(project=project_id)
    ledger = FirestoreLedger(client, max_attempts=2)
    monkeypatch.setattr(ledger.batches, "commit", lambda writes, **options: None)
    with pytest.raises(LedgerContention, match="claim: lost the race"):
        ledger.claim(request_for("s", 0, "w1", now=T0, overlap="skip"))
    client.close()


@pytest.mark.emulator
@pytest.mark.parametrize("overlap", ["allow", "skip"])
def test_firestore_commit_that_landed_but_reported_a_lost_race_is_recognised(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, overlap: str,
) -> None:
    """A commit the client retried after a lost reply fails its own precondition; the ledger
    must see that its write landed rather than report BUSY or a lost execution."""
    ledger, _ = firestore_pair
    commit = ledger.batches.commit
    monkeypatch.setattr(ledger.batches, "commit",
                        lambda writes, **options: commit(writes, **options) and None)
    request = request_for("s", 0, "w1", now=T0, overlap=overlap)
    assert ledger.claim(request).result is ClaimResult.CLAIMED
    assert ledger.finish(request.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(seconds=1))
    stored = ledger.get(request.execution_id)
    assert stored is not None and stored.state is State.SUCCEEDED
