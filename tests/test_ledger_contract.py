"""The ledger contract, run against every adapter: SQLite and Firestore (on the emulator).

Every time is an explicit `now`, so nothing sleeps and lease expiry is exact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.contract import execution_id
from worker.ledger import (
    DEFAULT_RETENTION,
    MAX_ERROR_LENGTH,
    ClaimRequest,
    ClaimResult,
    Execution,
    FireMessage,
    LapsedClaims,
    Ledger,
    State,
)
from worker.ledger_rules import REAP_WINDOW, reap_due
from worker.sqlite_ledger import SqliteLedger

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
SCHEDULE = "team/nightly report"


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.emulator)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh, empty ledger of each kind."""
    if request.param == "sqlite":
        sqlite_ledger = SqliteLedger(tmp_path / "ledger.db")
        yield sqlite_ledger
        sqlite_ledger.close()
        return
    from google.cloud import firestore

    from worker.firestore_ledger import FirestoreLedger

    request.getfixturevalue("firestore_emulator")
    client = firestore.Client(project=request.getfixturevalue("project_id"))
    yield FirestoreLedger(client)
    client.close()


@pytest.fixture
def lapsed(ledger: Ledger, request: pytest.FixtureRequest) -> Iterator[LapsedClaims]:
    """The reaper's port on the same store as `ledger`."""
    if isinstance(ledger, SqliteLedger):
        yield ledger
        return
    from google.cloud import firestore

    from worker.firestore_lapsed import FirestoreLapsedClaims

    client = firestore.Client(project=request.getfixturevalue("project_id"))
    yield FirestoreLapsedClaims(client)
    client.close()


def fire(minute: int, schedule_id: str = SCHEDULE) -> tuple[str, datetime]:
    """(execution ID, fire time) of the schedule's fire at T0 + `minute` minutes."""
    fire_time = T0 + timedelta(minutes=minute)
    return execution_id(schedule_id, fire_time), fire_time


def req(minute: int = 0, *, worker: str = "w1", now: datetime | None = None, overlap: str = "skip",
        schedule_id: str = SCHEDULE, lease: timedelta = LEASE) -> ClaimRequest:
    """A claim of the fire at T0 + `minute`, made at `now` (default: the fire time)."""
    exec_id, fire_time = fire(minute, schedule_id)
    return ClaimRequest(
        execution_id=exec_id, schedule_id=schedule_id, fire_time=fire_time, trigger="scheduled",
        worker_id=worker, lease=lease, overlap=overlap, now=now or fire_time,
    )


def test_claim_of_a_new_fire_is_claimed(ledger: Ledger) -> None:
    claim = ledger.claim(req())
    assert claim.result is ClaimResult.CLAIMED and claim.result.run
    record = claim.execution
    assert (record.state, record.attempt, record.worker_id) == (State.RUNNING, 1, "w1")
    assert record.lease_until == T0 + LEASE
    assert record.started_at == record.created_at == T0
    assert ledger.get(record.execution_id) == record


def test_second_claim_while_the_lease_is_live_is_busy(ledger: Ledger) -> None:
    ledger.claim(req())
    claim = ledger.claim(req(worker="w2", now=T0 + LEASE - timedelta(microseconds=1)))
    assert claim.result is ClaimResult.BUSY and not claim.result.run
    assert claim.execution.worker_id == "w1"


def test_two_deliveries_to_one_worker_at_the_same_instant_run_once(ledger: Ledger) -> None:
    # Two deliveries of one fire handled by one worker can read the clock in the same
    # microsecond: the second claim is identical to the first, and must still not run.
    assert ledger.claim(req()).result is ClaimResult.CLAIMED
    claim = ledger.claim(req())
    assert claim.result is ClaimResult.BUSY and not claim.result.run


def test_claim_after_finish_is_done(ledger: Ledger) -> None:
    first = ledger.claim(req()).execution
    assert ledger.finish(first.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(seconds=7))
    claim = ledger.claim(req(worker="w2", now=T0 + timedelta(hours=1)))
    assert claim.result is ClaimResult.DONE
    assert claim.execution.state is State.SUCCEEDED
    assert claim.execution.duration_s == 7.0


def test_lapsed_lease_is_taken_over_once_and_the_old_holder_loses_it(ledger: Ledger) -> None:
    exec_id = ledger.claim(req()).execution.execution_id
    later = T0 + LEASE
    taken = ledger.claim(req(worker="w2", now=later))
    assert taken.result is ClaimResult.TAKEN_OVER and taken.result.run
    assert (taken.execution.attempt, taken.execution.worker_id) == (2, "w2")
    assert taken.execution.lease_until == later + LEASE
    assert (
        ledger.claim(req(worker="w3", now=later + timedelta(seconds=1))).result is ClaimResult.BUSY
    )
    assert not ledger.renew(exec_id, "w1", later + timedelta(hours=1))
    assert not ledger.finish(exec_id, "w1", State.SUCCEEDED, now=later)
    assert ledger.finish(exec_id, "w2", State.SUCCEEDED, now=later + timedelta(seconds=1))
    record = ledger.get(exec_id)
    assert record is not None and (record.state, record.worker_id, record.attempt) == (
        State.SUCCEEDED,
        "w2",
        2,
    )


def test_release_lets_the_next_claim_take_over_at_once(ledger: Ledger) -> None:
    exec_id = ledger.claim(req()).execution.execution_id
    released_at = T0 + timedelta(seconds=3)
    assert ledger.release(exec_id, "w1", now=released_at, error="connection reset")
    record = ledger.get(exec_id)
    assert record is not None
    assert (record.state, record.lease_until, record.error) == (
        State.RUNNING,
        released_at,
        "connection reset",
    )
    assert not ledger.release(exec_id, "w2", now=released_at)
    taken = ledger.claim(req(worker="w2", now=released_at))
    assert taken.result is ClaimResult.TAKEN_OVER and taken.execution.attempt == 2


def test_renew_extends_the_lease_of_the_holder_only(ledger: Ledger) -> None:
    exec_id = ledger.claim(req()).execution.execution_id
    assert ledger.renew(exec_id, "w1", T0 + 2 * LEASE)
    assert not ledger.renew(exec_id, "w2", T0 + 3 * LEASE)
    assert (
        ledger.claim(req(worker="w2", now=T0 + LEASE + timedelta(seconds=1))).result
        is ClaimResult.BUSY
    )
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.running_lease_until == T0 + 2 * LEASE
    assert ledger.claim(req(worker="w2", now=T0 + 2 * LEASE)).result is ClaimResult.TAKEN_OVER


def test_overlap_skip_with_a_running_fire_records_a_skip(ledger: Ledger) -> None:
    running = ledger.claim(req(0)).execution
    claim = ledger.claim(req(1, worker="w2"))
    assert claim.result is ClaimResult.OVERLAP and not claim.result.run
    skipped = ledger.get(claim.execution.execution_id)
    assert skipped == claim.execution
    assert skipped is not None and skipped.state is State.SKIPPED and skipped.attempt == 0
    assert skipped.detail is not None and running.execution_id in skipped.detail
    assert skipped.finished_at == T0 + timedelta(minutes=1)
    assert ledger.claim(req(1, worker="w3")).result is ClaimResult.DONE


def test_overlap_allow_runs_both(ledger: Ledger) -> None:
    first = ledger.claim(req(0, overlap="allow"))
    second = ledger.claim(req(1, worker="w2", overlap="allow"))
    assert (first.result, second.result) == (ClaimResult.CLAIMED, ClaimResult.CLAIMED)
    # Overlap allow tracks no running fire (several may run), only the last finished one.
    assert ledger.schedule_state(SCHEDULE) is None
    assert ledger.finish(
        second.execution.execution_id, "w2", State.SUCCEEDED, now=T0 + timedelta(minutes=2)
    )
    assert ledger.finish(
        first.execution.execution_id, "w1", State.FAILED, now=T0 + timedelta(minutes=3)
    )
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.running_execution_id is None
    assert (state.last_execution_id, state.last_state) == (
        first.execution.execution_id,
        State.FAILED,
    )


def test_next_fire_claims_once_the_running_one_finished(ledger: Ledger) -> None:
    first = ledger.claim(req(0)).execution
    assert ledger.finish(
        first.execution_id, "w1", State.FAILED, now=T0 + timedelta(seconds=30), error="exit 1"
    )
    assert ledger.claim(req(1, worker="w2")).result is ClaimResult.CLAIMED


def test_a_running_fire_with_a_lapsed_lease_no_longer_blocks(ledger: Ledger) -> None:
    ledger.claim(req(0, lease=timedelta(seconds=30)))
    claim = ledger.claim(req(1, worker="w2"))
    assert claim.result is ClaimResult.CLAIMED
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.running_execution_id == claim.execution.execution_id


def test_a_released_fire_no_longer_blocks(ledger: Ledger) -> None:
    first = ledger.claim(req(0)).execution
    assert ledger.release(first.execution_id, "w1", now=T0 + timedelta(seconds=10))
    assert ledger.claim(req(1, worker="w2")).result is ClaimResult.CLAIMED


def test_a_takeover_is_never_skipped_for_a_newer_fire_that_started_meanwhile(
    ledger: Ledger,
) -> None:
    """Overlap skip across a takeover (README, Failure model): the fire claimed first runs on;
    the newer one, started while the first one's holder was dead, stays the running fire."""
    stale = ledger.claim(req(0, lease=timedelta(seconds=30))).execution
    newer = ledger.claim(req(1, worker="w2")).execution
    claim = ledger.claim(req(0, worker="w3", now=T0 + timedelta(minutes=1, seconds=5)))
    assert claim.result is ClaimResult.TAKEN_OVER
    record = ledger.get(stale.execution_id)
    assert record is not None and (record.state, record.attempt) == (State.RUNNING, 2)
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.running_execution_id == newer.execution_id
    # A later fire is still skipped while the newer one runs; both finish normally.
    assert ledger.claim(req(2, worker="w4")).result is ClaimResult.OVERLAP
    assert ledger.finish(stale.execution_id, "w3", State.SUCCEEDED, now=T0 + timedelta(minutes=2))
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.running_execution_id == newer.execution_id
    assert ledger.finish(newer.execution_id, "w2", State.SUCCEEDED, now=T0 + timedelta(minutes=3))


def test_a_takeover_names_itself_the_running_fire_when_none_runs(ledger: Ledger) -> None:
    stale = ledger.claim(req(0, lease=timedelta(seconds=30))).execution
    taken = ledger.claim(req(0, worker="w2", now=T0 + timedelta(seconds=40))).execution
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.running_execution_id == stale.execution_id
    assert state.running_lease_until == taken.lease_until
    assert ledger.claim(req(1, worker="w3")).result is ClaimResult.OVERLAP


def test_lapsed_lists_running_executions_past_their_lease_with_their_message(
    ledger: Ledger, lapsed: LapsedClaims,
) -> None:
    message = FireMessage("m-1", b'{"x": 1}', {"schedule_id": SCHEDULE, "k": "v"}, T0)
    short = timedelta(seconds=10)
    first = ledger.claim(replace(req(0, overlap="allow", lease=short), message=message)).execution
    ledger.claim(req(1, overlap="allow", lease=short * 3))
    done = ledger.claim(req(2, overlap="allow", lease=short)).execution
    ledger.finish(done.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(minutes=2))
    assert lapsed.lapsed(T0 + timedelta(seconds=5), limit=10) == []
    found = lapsed.lapsed(T0 + timedelta(minutes=1, seconds=15), limit=10)
    assert [e.execution_id for e in found] == [first.execution_id]
    assert found[0].message == message and ledger.get(first.execution_id) == found[0]
    later = lapsed.lapsed(T0 + timedelta(hours=1), limit=10)
    assert [e.fire_time for e in later] == [T0, T0 + timedelta(minutes=1)]
    assert len(lapsed.lapsed(T0 + timedelta(hours=1), limit=1)) == 1
    assert lapsed.lapsed(T0 + REAP_WINDOW + timedelta(hours=1), limit=10) == []
    # The message goes with the final record.
    assert ledger.finish(first.execution_id, "w1", State.SUCCEEDED, now=T0 + timedelta(hours=1))
    finished = ledger.get(first.execution_id)
    assert finished is not None and finished.message is None


def test_a_takeover_keeps_the_message_and_a_release_leaves_no_holder(ledger: Ledger) -> None:
    message = FireMessage("m-1", b"data", {"a": "b"}, T0)
    first = ledger.claim(replace(req(0), message=message)).execution
    assert ledger.release(first.execution_id, "w1", now=T0 + timedelta(seconds=3), error="503")
    released = ledger.get(first.execution_id)
    assert released is not None and released.worker_id is None and released.message == message
    assert not reap_due(released, T0 + timedelta(seconds=12))
    assert reap_due(released, T0 + timedelta(seconds=13))
    taken = ledger.claim(req(0, worker="w2", now=T0 + timedelta(seconds=4))).execution
    assert (taken.worker_id, taken.attempt, taken.message) == ("w2", 2, message)
    assert ledger.get(first.execution_id) == taken


def test_other_schedules_do_not_block(ledger: Ledger) -> None:
    ledger.claim(req(0))
    assert ledger.claim(req(0, worker="w2", schedule_id="other")).result is ClaimResult.CLAIMED


def test_record_of_a_missed_fire_creates_once(ledger: Ledger) -> None:
    exec_id, fire_time = fire(0)
    missed = Execution(
        execution_id=exec_id, schedule_id=SCHEDULE, fire_time=fire_time, trigger="scheduled",
        state=State.MISSED, attempt=0, created_at=T0 + timedelta(hours=1),
        expire_at=fire_time + DEFAULT_RETENTION, detail="outside the catch-up window",
    )
    assert ledger.record(missed)
    assert not ledger.record(missed)
    assert ledger.get(exec_id) == missed
    assert ledger.claim(req(0, now=T0 + timedelta(hours=1))).result is ClaimResult.DONE


def test_history_is_newest_first_with_limit_and_paging(ledger: Ledger) -> None:
    for minute in range(5):
        claim = ledger.claim(req(minute, overlap="allow"))
        ledger.finish(
            claim.execution.execution_id, "w1", State.SUCCEEDED, now=claim.execution.fire_time
        )
    ledger.claim(req(0, schedule_id="other"))
    page = ledger.history(SCHEDULE, limit=3)
    assert [record.fire_time for record in page] == [fire(m)[1] for m in (4, 3, 2)]
    rest = ledger.history(SCHEDULE, limit=3, before=page[-1].fire_time)
    assert [record.fire_time for record in rest] == [fire(m)[1] for m in (1, 0)]
    assert len(ledger.history(SCHEDULE)) == 5
    assert ledger.history("never fired") == []


def test_schedule_state_reflects_running_and_last(ledger: Ledger) -> None:
    assert ledger.schedule_state(SCHEDULE) is None
    first = ledger.claim(req(0)).execution
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None
    assert (state.schedule_id, state.running_execution_id) == (SCHEDULE, first.execution_id)
    assert (state.running_fire_time, state.running_lease_until) == (T0, T0 + LEASE)
    assert state.last_execution_id is None
    done_at = T0 + timedelta(seconds=42)
    ledger.finish(first.execution_id, "w1", State.SUCCEEDED, now=done_at)
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None
    assert (state.running_execution_id, state.running_fire_time, state.running_lease_until) == (
        None,
        None,
        None,
    )
    assert (state.last_execution_id, state.last_fire_time) == (first.execution_id, T0)
    assert (state.last_state, state.last_finished_at) == (State.SUCCEEDED, done_at)


def test_errors_are_truncated(ledger: Ledger) -> None:
    exec_id = ledger.claim(req()).execution.execution_id
    assert ledger.release(exec_id, "w1", now=T0, error="r" * (MAX_ERROR_LENGTH * 2))
    record = ledger.get(exec_id)
    assert record is not None and record.error == "r" * MAX_ERROR_LENGTH
    ledger.claim(req(worker="w2", now=T0))
    assert ledger.finish(
        exec_id, "w2", State.FAILED, now=T0, error="x" * (MAX_ERROR_LENGTH + 1), detail="d"
    )
    record = ledger.get(exec_id)
    assert record is not None and record.error == "x" * MAX_ERROR_LENGTH and record.detail == "d"


def test_expire_at_is_the_retention_after_the_fire(ledger: Ledger) -> None:
    claim = ledger.claim(req(3, now=T0 + timedelta(hours=2)))
    assert claim.execution.expire_at == fire(3)[1] + DEFAULT_RETENTION
    short = replace(req(4), retention=timedelta(days=2))
    assert ledger.claim(short).execution.expire_at == fire(4)[1] + timedelta(days=2)
    stored = ledger.get(claim.execution.execution_id)
    assert stored is not None and stored.expire_at == fire(3)[1] + DEFAULT_RETENTION


def test_timestamps_round_trip_as_aware_utc(ledger: Ledger) -> None:
    paris = timezone(timedelta(hours=1))
    fire_time = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=paris)
    now = datetime(2026, 3, 1, 10, 0, 1, 654321, tzinfo=paris)
    exec_id = execution_id(SCHEDULE, fire_time, "manual")
    ledger.claim(ClaimRequest(exec_id, SCHEDULE, fire_time, "manual", "w1", LEASE, "skip", now))
    ledger.finish(exec_id, "w1", State.SUCCEEDED, now=now + timedelta(microseconds=1))
    record = ledger.get(exec_id)
    assert record is not None and record.trigger == "manual"
    times = [
        record.fire_time,
        record.created_at,
        record.started_at,
        record.finished_at,
        record.expire_at,
    ]
    assert all(moment is not None and moment.utcoffset() == timedelta(0) for moment in times)
    assert (record.fire_time, record.started_at) == (fire_time, now)
    assert record.fire_time.hour == 9 and record.fire_time.microsecond == 123456
    assert record.finished_at == now + timedelta(microseconds=1)
    state = ledger.schedule_state(SCHEDULE)
    assert state is not None and state.last_finished_at == now + timedelta(microseconds=1)


def test_unknown_execution(ledger: Ledger) -> None:
    assert ledger.get("nope") is None
    assert not ledger.renew("nope", "w1", T0)
    assert not ledger.finish("nope", "w1", State.SUCCEEDED, now=T0)
    assert not ledger.release("nope", "w1", now=T0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda ledger: ledger.claim(req(now=datetime(2026, 3, 1))),
            "now: must be a timezone-aware",
        ),
        (lambda ledger: ledger.claim(req(overlap="queue")), "overlap: must be one of skip, allow"),
        (lambda ledger: ledger.claim(req(lease=timedelta(0))), "lease: must be positive"),
        (
            lambda ledger: ledger.finish("x", "w1", State.RUNNING, now=T0),
            "state: must be a final state",
        ),
        (lambda ledger: ledger.history(SCHEDULE, limit=0), "limit: must be at least 1"),
        (
            lambda ledger: ledger.record(
                Execution(
                    "x", SCHEDULE, T0, "scheduled", State.RUNNING, 1, T0, T0 + DEFAULT_RETENTION
                )
            ),
            "state: must be a final",
        ),
    ],
)
def test_bad_input_names_the_field(ledger: Ledger, call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(ledger)  # type: ignore[operator]


def test_sqlite_purges_expired_records(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db", purge_interval=timedelta(days=1))
    short = timedelta(days=1)
    old = replace(req(0), retention=short)
    ledger.claim(old)
    ledger.claim(replace(req(1, schedule_id="other"), retention=short * 3))
    assert ledger.purge_expired(T0 + short) == 1
    assert ledger.get(old.execution_id) is None
    # The next claim a purge interval later purges on its own.
    ledger.claim(req(0, schedule_id="third", now=T0 + short * 4))
    assert ledger.history("other") == []
    ledger.close()


def test_sqlite_file_is_in_wal_mode_with_the_history_index(tmp_path: Path) -> None:
    SqliteLedger(tmp_path / "ledger.db").close()
    conn = sqlite3.connect(tmp_path / "ledger.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(executions)")}
    assert "executions_history" in indexes
    conn.close()
