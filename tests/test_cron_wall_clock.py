"""Cron semantics against Cloud Scheduler's documented wall-clock behaviour.

https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules ("Cloud Scheduler runs on
wall clock time"), modelled as: a slot in the skipped hour does not fire that day; a slot in the
repeated hour fires at both instants. Every expected instant below is written out in UTC. Also the
derivation of a fire's slot from its publish time (helpers: `cron_cases`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from cron_cases import MS, Spec, fires, utc

from scheduler.cron import (
    DEFAULT_SKEW,
    fire_time_for,
    is_slot,
    iter_fires,
    latest_fire_at_or_before,
    next_fires,
)

# --- DST: both transitions in three zones ------------------------------------------------------
# 2025 transitions (UTC instant of the change):
#   Europe/Berlin     spring 03-30 01:00 (02:00 CET -> 03:00 CEST)  autumn 10-26 01:00 (03:00 ->
#   02:00)
#   America/New_York  spring 03-09 07:00 (02:00 EST -> 03:00 EDT)  autumn 11-02 06:00 (02:00 ->
#   01:00)
#   Australia/Sydney  spring 10-04 16:00 (02:00 AEST -> 03:00 AEDT) autumn 04-05 16:00 (03:00 ->
#   02:00)

DST_CASES = [
    # Berlin, clocks forward: 02:30 does not exist on 03-30.
    ("Europe/Berlin", "30 2 * * *", utc(2025, 3, 29),
     [utc(2025, 3, 29, 1, 30), utc(2025, 3, 31, 0, 30)]),
    ("Europe/Berlin", "59 1 * * *", utc(2025, 3, 29, 12),
     [utc(2025, 3, 30, 0, 59), utc(2025, 3, 30, 23, 59)]),
    ("Europe/Berlin", "0 3 * * *", utc(2025, 3, 29, 12),
     [utc(2025, 3, 30, 1, 0), utc(2025, 3, 31, 1, 0)]),
    ("Europe/Berlin", "*/30 * * * *", utc(2025, 3, 30, 0, 0),
     [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 0), utc(2025, 3, 30, 1, 30)]),
    # Berlin, clocks back: 02:30 happens twice on 10-26.
    ("Europe/Berlin", "30 2 * * *", utc(2025, 10, 25),
     [utc(2025, 10, 25, 0, 30), utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 30),
      utc(2025, 10, 27, 1, 30)]),
    ("Europe/Berlin", "59 1 * * *", utc(2025, 10, 25, 12),
     [utc(2025, 10, 25, 23, 59), utc(2025, 10, 27, 0, 59)]),
    ("Europe/Berlin", "0 3 * * *", utc(2025, 10, 25, 12),
     [utc(2025, 10, 26, 2, 0), utc(2025, 10, 27, 2, 0)]),
    ("Europe/Berlin", "*/30 * * * *", utc(2025, 10, 25, 23, 30),
     [utc(2025, 10, 26, 0, 0), utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 0),
      utc(2025, 10, 26, 1, 30), utc(2025, 10, 26, 2, 0)]),
    # New York, clocks forward: 02:30 does not exist on 03-09.
    ("America/New_York", "30 2 * * *", utc(2025, 3, 8),
     [utc(2025, 3, 8, 7, 30), utc(2025, 3, 10, 6, 30)]),
    ("America/New_York", "59 1 * * *", utc(2025, 3, 8, 12),
     [utc(2025, 3, 9, 6, 59), utc(2025, 3, 10, 5, 59)]),
    ("America/New_York", "0 3 * * *", utc(2025, 3, 8, 12),
     [utc(2025, 3, 9, 7, 0), utc(2025, 3, 10, 7, 0)]),
    ("America/New_York", "*/15 * * * *", utc(2025, 3, 9, 6, 30),
     [utc(2025, 3, 9, 6, 45), utc(2025, 3, 9, 7, 0), utc(2025, 3, 9, 7, 15)]),
    # New York, clocks back: 01:30 happens twice on 11-02.
    ("America/New_York", "30 1 * * *", utc(2025, 11, 1),
     [utc(2025, 11, 1, 5, 30), utc(2025, 11, 2, 5, 30), utc(2025, 11, 2, 6, 30),
      utc(2025, 11, 3, 6, 30)]),
    ("America/New_York", "59 0 * * *", utc(2025, 11, 1, 12),
     [utc(2025, 11, 2, 4, 59), utc(2025, 11, 3, 5, 59)]),
    ("America/New_York", "0 2 * * *", utc(2025, 11, 1, 12),
     [utc(2025, 11, 2, 7, 0), utc(2025, 11, 3, 7, 0)]),
    ("America/New_York", "*/15 * * * *", utc(2025, 11, 2, 5, 30),
     [utc(2025, 11, 2, 5, 45), utc(2025, 11, 2, 6, 0), utc(2025, 11, 2, 6, 15),
      utc(2025, 11, 2, 6, 30), utc(2025, 11, 2, 6, 45), utc(2025, 11, 2, 7, 0)]),
    # Sydney, clocks back in April: 02:30 happens twice on 04-06.
    ("Australia/Sydney", "30 2 * * *", utc(2025, 4, 4),
     [utc(2025, 4, 4, 15, 30), utc(2025, 4, 5, 15, 30), utc(2025, 4, 5, 16, 30),
      utc(2025, 4, 6, 16, 30)]),
    ("Australia/Sydney", "59 1 * * *", utc(2025, 4, 5),
     [utc(2025, 4, 5, 14, 59), utc(2025, 4, 6, 15, 59)]),
    ("Australia/Sydney", "0 3 * * *", utc(2025, 4, 5),
     [utc(2025, 4, 5, 17, 0), utc(2025, 4, 6, 17, 0)]),
    ("Australia/Sydney", "*/30 * * * *", utc(2025, 4, 5, 14, 45),
     [utc(2025, 4, 5, 15, 0), utc(2025, 4, 5, 15, 30), utc(2025, 4, 5, 16, 0),
      utc(2025, 4, 5, 16, 30), utc(2025, 4, 5, 17, 0)]),
    # Sydney, clocks forward in October: 02:30 does not exist on 10-05.
    ("Australia/Sydney", "30 2 * * *", utc(2025, 10, 3),
     [utc(2025, 10, 3, 16, 30), utc(2025, 10, 5, 15, 30)]),
    ("Australia/Sydney", "59 1 * * *", utc(2025, 10, 4),
     [utc(2025, 10, 4, 15, 59), utc(2025, 10, 5, 14, 59)]),
    ("Australia/Sydney", "0 3 * * *", utc(2025, 10, 4),
     [utc(2025, 10, 4, 16, 0), utc(2025, 10, 5, 16, 0)]),
    ("Australia/Sydney", "*/15 * * * *", utc(2025, 10, 4, 15, 30),
     [utc(2025, 10, 4, 15, 45), utc(2025, 10, 4, 16, 0), utc(2025, 10, 4, 16, 15)]),
]


@pytest.mark.parametrize(("zone", "cron", "after", "expected"), DST_CASES,
                         ids=[f"{z}:{c}:{a:%m-%d}" for z, c, a, _ in DST_CASES])
def test_dst_transitions_fire_on_wall_clock(
    zone: str, cron: str, after: datetime, expected: list[datetime]
) -> None:
    assert fires(cron, zone, after, len(expected)) == expected
    # The same instants, walked backwards from just after the last one.
    spec = Spec(cron, zone)
    backwards = list(islice(iter_fires(spec, expected[-1] + MS, reverse=True), len(expected)))
    assert backwards == expected[::-1]
    for instant in expected:
        assert is_slot(spec, instant)


def test_next_fires_starts_strictly_after_and_returns_aware_utc() -> None:
    spec = Spec("0 * * * *")
    got = next_fires(spec, utc(2025, 6, 1, 12), 2)
    assert got == [utc(2025, 6, 1, 13), utc(2025, 6, 1, 14)]
    assert all(t.tzinfo is UTC for t in got)
    # An aware `after` in another zone is the same instant.
    berlin = utc(2025, 6, 1, 12).astimezone(ZoneInfo("Europe/Berlin"))
    assert next_fires(spec, berlin, 2) == got
    assert next_fires(spec, utc(2025, 6, 1, 12), 0) == []


# --- fire-time derivation ------------------------------------------------------------------------

def test_fire_time_publish_slightly_early_from_clock_skew_maps_to_that_slot() -> None:
    spec = Spec("*/5 * * * *", "Europe/Berlin")
    slot = utc(2025, 6, 1, 12, 5)
    assert fire_time_for(spec, slot - 3 * MS) == slot
    assert fire_time_for(spec, slot - DEFAULT_SKEW + MS) == slot
    assert fire_time_for(spec, slot - DEFAULT_SKEW - MS) == utc(2025, 6, 1, 12, 0)


def test_fire_time_late_publish_after_retries_maps_to_the_earlier_slot() -> None:
    spec = Spec("0 * * * *", "America/New_York")
    assert fire_time_for(spec, utc(2025, 6, 1, 12, 0, 0) + 20 * MS) == utc(2025, 6, 1, 12)
    assert fire_time_for(spec, utc(2025, 6, 1, 12, 41, 7)) == utc(2025, 6, 1, 12)
    assert fire_time_for(spec, utc(2025, 6, 1, 12, 59, 54)) == utc(2025, 6, 1, 12)


def test_fire_time_tolerance_is_capped_at_half_the_shortest_interval() -> None:
    spec = Spec("*/5 * * * *")
    big_skew = timedelta(minutes=10)
    # Half of five minutes is the cap: 2m30s early still belongs to the next slot, not more.
    assert fire_time_for(spec, utc(2025, 6, 1, 12, 2, 31), big_skew) == utc(2025, 6, 1, 12, 5)
    assert fire_time_for(spec, utc(2025, 6, 1, 12, 2, 29), big_skew) == utc(2025, 6, 1, 12, 0)


def test_fire_time_at_month_ends() -> None:
    spec = Spec("0 0 31 * *")
    # Months without a 31st are skipped; a late publish in April belongs to 31 March.
    assert fires("0 0 31 * *", "UTC", utc(2025, 1, 31), 3) == [
        utc(2025, 3, 31), utc(2025, 5, 31), utc(2025, 7, 31)]
    assert fire_time_for(spec, utc(2025, 4, 20, 8)) == utc(2025, 3, 31)
    assert fire_time_for(spec, utc(2025, 5, 31) - 2 * MS) == utc(2025, 5, 31)
    assert fire_time_for(spec, utc(2025, 5, 31, 0, 0, 1)) == utc(2025, 5, 31)
    # "Last day of the month" without L: the 28th-31st of February, in a leap and a common year.
    last_days = Spec("0 0 28-31 2 *", "Europe/Berlin")
    assert next_fires(last_days, utc(2024, 2, 1), 3) == [
        utc(2024, 2, 27, 23), utc(2024, 2, 28, 23), utc(2025, 2, 27, 23)]
    assert fire_time_for(last_days, utc(2024, 3, 15)) == utc(2024, 2, 28, 23)
    # The 1st of every month at midnight local time, just after a month end.
    firsts = Spec("0 0 1 * *", "Australia/Sydney")
    assert fire_time_for(firsts, utc(2025, 2, 28, 13, 0, 1)) == utc(2025, 2, 28, 13)
    assert fire_time_for(firsts, utc(2025, 2, 28, 13, 0) - MS) == utc(2025, 2, 28, 13)
    assert fire_time_for(firsts, utc(2025, 2, 28, 12, 59, 50)) == utc(2025, 1, 31, 13)


def test_fire_time_on_leap_days() -> None:
    spec = Spec("0 12 29 2 *")
    assert next_fires(spec, utc(2025, 1, 1), 3) == [
        utc(2028, 2, 29, 12), utc(2032, 2, 29, 12), utc(2036, 2, 29, 12)]
    assert fire_time_for(spec, utc(2027, 12, 31)) == utc(2024, 2, 29, 12)
    assert fire_time_for(spec, utc(2028, 2, 29, 12) - MS) == utc(2028, 2, 29, 12)
    assert fire_time_for(spec, utc(2028, 2, 29, 12, 0, 3)) == utc(2028, 2, 29, 12)
    assert latest_fire_at_or_before(spec, utc(2028, 2, 29, 11, 59)) == utc(2024, 2, 29, 12)


def test_fire_time_in_the_repeated_hour_picks_the_right_instant() -> None:
    # 01:30 New York happens at 05:30Z (EDT) and again at 06:30Z (EST) on 2025-11-02.
    spec = Spec("30 1 * * *", "America/New_York")
    first, second = utc(2025, 11, 2, 5, 30), utc(2025, 11, 2, 6, 30)
    assert fire_time_for(spec, first + 40 * MS) == first
    assert fire_time_for(spec, second + 40 * MS) == second
    assert fire_time_for(spec, first - 2 * MS) == first
    assert fire_time_for(spec, second - 2 * MS) == second
    # Published late, between the two: still the first.
    assert fire_time_for(spec, utc(2025, 11, 2, 6, 10)) == first
    # Sydney's repeated 02:00-03:00 in April, on a quarter-hour schedule.
    quarter = Spec("*/15 * * * *", "Australia/Sydney")
    assert fire_time_for(quarter, utc(2025, 4, 5, 16, 15) - 3 * MS) == utc(2025, 4, 5, 16, 15)
    assert fire_time_for(quarter, utc(2025, 4, 5, 15, 15, 2)) == utc(2025, 4, 5, 15, 15)


def test_fire_time_across_the_skipped_hour() -> None:
    # 02:30 Berlin does not exist on 2025-03-30: a publish that day belongs to the 29th's slot.
    spec = Spec("30 2 * * *", "Europe/Berlin")
    assert fire_time_for(spec, utc(2025, 3, 30, 1, 30)) == utc(2025, 3, 29, 1, 30)
