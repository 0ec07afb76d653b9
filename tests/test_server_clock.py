"""`worker.server_clock`: the offset to the server's time, with fake local clocks; and on the
Firestore emulator, that a ledger's clock reads the server's time whatever the local clock says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.server_clock import MAX_AGE, MAX_UNCERTAINTY, SYNC_RETRY, ServerClock, local_now

T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SKEW = timedelta(seconds=30)


class Local:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_now_is_the_local_clock_plus_the_measured_offset() -> None:
    local = Local(T + SKEW)
    clock = ServerClock(local)
    assert clock.now() == T + SKEW  # nothing measured, nothing to sync with: the local clock
    clock.observe(T + timedelta(milliseconds=5), T + SKEW, T + SKEW + timedelta(milliseconds=10))
    assert clock.offset == -SKEW
    local.now += timedelta(seconds=3)
    assert clock.now() == T + timedelta(seconds=3)


def test_a_slow_reply_never_replaces_a_better_measurement() -> None:
    local = Local(T)
    clock = ServerClock(local)
    clock.observe(T, T, T)
    stalled = T + timedelta(seconds=30)
    # A commit that hung 30 s in a frozen store: its server time could be anywhere in them.
    clock.observe(stalled + SKEW, T, stalled)
    assert clock.offset == timedelta(0)
    quick = MAX_UNCERTAINTY * 2
    clock.observe(stalled + timedelta(seconds=2), stalled, stalled + quick)
    assert clock.offset == timedelta(seconds=2) - quick / 2


def test_it_measures_afresh_when_the_last_measurement_is_old_and_retries_a_failing_store() -> None:
    local = Local(T - SKEW)
    clock = ServerClock(local)
    calls: list[datetime] = []
    failing = [True]

    def sync() -> None:
        calls.append(local.now)
        if failing[0]:
            raise ConnectionError("store unreachable")
        clock.observe(local.now + SKEW, local.now, local.now)

    clock.syncs_with(sync)
    assert clock.now() == T - SKEW and len(calls) == 1
    assert clock.now() == T - SKEW and len(calls) == 1  # not again before SYNC_RETRY
    local.now += SYNC_RETRY
    failing[0] = False
    assert clock.now() == T - SKEW + SYNC_RETRY + SKEW and len(calls) == 2
    local.now += MAX_AGE
    assert clock.now() == local.now + SKEW and len(calls) == 2  # the measurement is fresh enough
    local.now += timedelta(seconds=1)
    clock.now()
    assert len(calls) == 3


@pytest.mark.emulator
@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_ledgers_clock_reads_firestores_time_whatever_the_local_clock(
    firestore_client: object, skew: timedelta,
) -> None:
    from worker.firestore_ledger import FirestoreLedger

    skewed = ServerClock(lambda: local_now() + skew)
    ledger = FirestoreLedger(firestore_client, clock=skewed)  # type: ignore[arg-type]
    # The emulator runs on this machine: its clock is the true one here.
    assert abs(ledger.clock.now() - local_now()) < timedelta(seconds=1)
    offset = ledger.clock.offset
    assert offset is not None and abs(offset + skew) < timedelta(seconds=1)
