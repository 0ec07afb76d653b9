"""The ledger under contention: many threads, and several processes, racing for the same fires.

Runs against SQLite and the Firestore emulator. The claims are checked for correctness only
(speed is measured by `bench/bench_claim.py`): exactly one claimer wins each fire, a lapsed
lease is taken over exactly once, and with overlap `skip` no two fires of a schedule ever run
at the same time.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.contract import execution_id
from worker.ledger import ClaimRequest, ClaimResult, Ledger, State
from worker.sqlite_ledger import SqliteLedger

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
THREADS = 6

pytestmark = pytest.mark.timeout(120)


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
