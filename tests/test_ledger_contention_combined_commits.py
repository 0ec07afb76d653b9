"""The Firestore ledger (emulator) combines concurrent callers' writes into one commit: a lost race,
an outage or a write the wire cannot encode fails only the callers it concerns (helpers:
`ledger_race_harness`)."""

from __future__ import annotations

from typing import Any

import pytest
from ledger_race_harness import (
    commit_batch,
    commit_sizes,
    groups_with_one_lost_race,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.emulator
def test_firestore_combined_commit_tells_only_the_group_that_lost(
    firestore_pair: tuple[Any, Any],
) -> None:
    """Commits of concurrent callers leave as one Commit; when a precondition fails, each group
    is committed again alone, so that only the group that really lost its race hears so."""
    from worker.firestore_wire import Write

    ledger, _ = firestore_pair
    docs = ledger.executions
    docs.document("taken").create({"n": 0})
    groups = [[Write(ledger.execution_name("a"), {"n": 1})],
              [Write(ledger.execution_name("taken"), {"n": 2})],
              [Write(ledger.execution_name("b"), {"n": 3}),
               Write(ledger.execution_name("c"), {"n": 4})]]
    results = commit_batch(ledger, groups)
    assert results[1] is None
    assert len(results[0]) == 1 and len(results[2]) == 2
    assert {
        name: docs.document(name).get().to_dict()["n"] for name in ("a", "taken", "b", "c")
    } == {"a": 1, "taken": 0, "b": 3, "c": 4}


@pytest.mark.emulator
def test_firestore_groups_on_the_same_document_do_not_share_a_commit(
    firestore_pair: tuple[Any, Any],
) -> None:
    from worker.firestore_wire import Write

    ledger, _ = firestore_pair
    docs = ledger.executions
    results = commit_batch(ledger, [[Write(ledger.execution_name("same"), {"n": 1})],
                                    [Write(ledger.execution_name("other"), {"n": 2})],
                                    [Write(ledger.execution_name("same"), {"n": 3})]])
    assert results[0] is not None and results[1] is not None and results[2] is None
    assert docs.document("same").get().to_dict() == {"n": 1}


@pytest.mark.emulator
def test_firestore_one_lost_race_splits_a_combined_commit_in_halves(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One losing group among 32 costs the halves that contain it (1 + 2 x 5 Commits), not a
    Commit for every group of the batch."""
    ledger, _ = firestore_pair
    groups = groups_with_one_lost_race(ledger, 32, 21, "g")
    commits = commit_sizes(monkeypatch, ledger)
    results = commit_batch(ledger, groups)
    assert [index for index, result in enumerate(results) if result is None] == [21]
    assert len(commits) == 11 and commits[0] == 32
    stored = ledger.batches.wire.get_all([ledger.execution_name(f"g{i}") for i in range(32)])
    assert sum(document is not None for document in stored.values()) == 31


@pytest.mark.emulator
def test_firestore_an_unavailable_store_fails_a_combined_commit_once(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outage is every group's outcome at once: splitting would only repeat the failing call
    (and the client's retries of it) 2n - 1 times."""
    from google.api_core import exceptions as api_exceptions

    from worker.firestore_wire import Write

    ledger, _ = firestore_pair
    calls: list[int] = []

    def unavailable(writes: list[Any]) -> list[Any]:
        calls.append(len(writes))
        raise api_exceptions.ServiceUnavailable("store down")

    monkeypatch.setattr(ledger.batches.wire, "commit", unavailable)
    results = commit_batch(ledger, [[Write(ledger.execution_name(f"u{i}"), {"n": i})]
                                    for i in range(8)])
    assert calls == [8]
    assert all(isinstance(result, api_exceptions.ServiceUnavailable) for result in results)


@pytest.mark.emulator
def test_firestore_a_group_the_wire_cannot_encode_fails_alone(
    firestore_pair: tuple[Any, Any],
) -> None:
    from worker.firestore_wire import Write

    ledger, _ = firestore_pair
    groups = [[Write(ledger.execution_name(f"v{i}"), {"n": i})] for i in range(4)]
    groups[2] = [Write(ledger.execution_name("v2"), {"n": {"nested": 1}})]
    results = commit_batch(ledger, groups)
    assert isinstance(results[2], TypeError)
    assert all(isinstance(results[i], list) for i in (0, 1, 3))


@pytest.mark.emulator
def test_firestore_a_failed_combined_commit_tells_fast_claims_at_once(
    firestore_pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fast-path claims fall back to a read when their commit fails, so a failed combined commit
    gives them no Commit of their own: the other groups are committed again without them."""
    from worker.firestore_wire import Write

    ledger, _ = firestore_pair
    groups = groups_with_one_lost_race(ledger, 4, 1, "f")
    commits = commit_sizes(monkeypatch, ledger)
    results = commit_batch(ledger, groups, tentative=frozenset({0, 1}))
    assert results[0] is None and results[1] is None
    assert results[2] is not None and results[3] is not None
    assert commits == [4, 2]
    alone = commit_batch(ledger, [[Write(ledger.execution_name("taken"), {"n": 5})],
                                  [Write(ledger.execution_name("f4"), {"n": 4})]],
                         tentative=frozenset({0}))
    assert alone[0] is None and alone[1] is not None
    assert commits == [4, 2, 2, 1]
