"""The Scion hub's cron dialect (robfig/cron v3.0.1): what it accepts, how each expression class
fires and translates to a Cloud Scheduler job, and clock changes.

Expected instants come from `tests/robfig_oracle.py`, written from robfig's documentation, or are
written out by hand from reading robfig's `spec.go` `Next` (the 30-minute shift cases, where robfig
departs from its documented wall-clock reading). Helpers: `robfig_cases`.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import robfig_oracle as oracle
from robfig_cases import COUNT, hub_fires, job_fires, utc

from scheduler.cron import (
    CronDialect,
    CronError,
    validate_cron,
)
from scheduler.cron_translate import job_schedule

# What the hub accepts and refuses (robfig parser.go at v3.0.1, with the hub's options).

@pytest.mark.parametrize("expr", [
    "CRON_TZ=Europe/Berlin 0 9 * * MON-FRI", "TZ=America/New_York 30 1 * * *",
    "TZ= 0 0 * * *", "TZ=Local 0 0 * * *",
    "0 0 ? * MON", "0 0 1 * ?", "? ? ? ? ?",
    "5/15 * * * *", "0 3/6 * * *", "*/60 * * * *", "0 */24 * * *", "0 0 */45 * *",
    "0 0 * jan,Jul,DEC sun", "0 0 * * mOn-fRi", "0 0 1,,15 * *", "+5 * * * *", "*-3 * * * *",
])
def test_the_hub_accepts(expr: str) -> None:
    validate_cron(expr, CronDialect.ROBFIG)


@pytest.mark.parametrize(("expr", "field"), [
    ("0 0 * * 7", "day of week field '7'"),
    ("0 0 * * SUN-7", "day of week field"),
    ("@daily", "descriptors"),
    ("@every 1h", "descriptors"),
    ("TZ=UTC @hourly", "descriptors"),
    ("CRON_TZ=Europe/Berlin", "time zone prefix"),
    ("CRON_TZ=Mars/Olympus 0 * * * *", "time zone prefix"),
    ("0 0 * *", "must have 5 fields"),
    ("0 0 0 * * *", "must have 5 fields"),
    ("60 * * * *", "minute field '60'"),
    ("*/0 * * * *", "minute field '*/0'"),
    ("0 24 * * *", "hour field '24'"),
    ("0 0 0 * *", "day of month field '0'"),
    ("0 0 * 13 *", "month field '13'"),
    ("0 0 * * MON-SUN", "day of week field"),
    ("0 0 L * *", "day of month field 'L'"),
    ("0 0 * * 1#2", "day of week field '1#2'"),
    ("MON * * * *", "minute field 'MON'"),
    ("1-2-3 * * * *", "too many hyphens"),
    ("*/2/3 * * * *", "too many slashes"),
    ("0 0 30 2 *", "never fires"),
    ("", "is empty"),
])
def test_the_hub_refuses_with_the_field(expr: str, field: str) -> None:
    with pytest.raises(CronError, match=field.replace("*", r"\*").replace("?", r"\?")):
        validate_cron(expr, CronDialect.ROBFIG)


def test_the_unix_dialect_still_refuses_what_cloud_scheduler_refuses() -> None:
    for expr in ("CRON_TZ=UTC 0 * * * *", "0 0 ? * MON", "5/15 * * * *", "*/60 * * * *"):
        with pytest.raises(CronError):
            validate_cron(expr)


# Each expression class, against the oracle and written out.

def test_odd_days_or_mondays() -> None:
    # `*/2` carries no star bit, so the day fields are ORed (spec.go:179-187).
    assert hub_fires("0 0 */2 * MON", utc(2026, 1, 1), 6) == [
        utc(2026, 1, 3), utc(2026, 1, 5), utc(2026, 1, 7), utc(2026, 1, 9), utc(2026, 1, 11),
        utc(2026, 1, 12)]
    assert job_schedule("0 0 */2 * MON", "UTC") == ("0 0 1-31/2 * 1", "UTC")


def test_star_slash_one_keeps_the_star_bit() -> None:
    # `*/1` is a star with step 1: the day fields are ANDed, so Mondays only.
    assert hub_fires("0 0 */1 * MON", utc(2026, 1, 1), 3) == [
        utc(2026, 1, 5), utc(2026, 1, 12), utc(2026, 1, 19)]
    assert job_schedule("0 0 */1 * MON", "UTC") == ("0 0 * * 1", "UTC")
    assert job_schedule("0 0 ? * MON", "UTC") == ("0 0 * * 1", "UTC")


@pytest.mark.parametrize(("expr", "cron"), [
    ("5/15 * * * *", "5-50/15 * * * *"),
    ("*/60 * * * *", "0 * * * *"),
    ("*/15 * * * *", "*/15 * * * *"),
    ("0 3/6 * * *", "0 3-21/6 * * *"),
    ("0 0 * jan,Jul,DEC sun", "0 0 * 1,7,12 0"),
    ("0 0 1,15 * mon", "0 0 1,15 * 1"),
    ("0 0 , * MON", "0 0 * * 1"),
    ("0 9 * * 1-5", "0 9 * * 1-5"),
    ("0 0 1-31 * 1", "0 0 1-31 * 1"),
])
def test_translation(expr: str, cron: str) -> None:
    assert job_schedule(expr, "UTC") == (cron, "UTC")
    assert job_fires(expr, utc(2026, 3, 1), 40) == hub_fires(expr, utc(2026, 3, 1), 40)


def test_a_zone_prefix_becomes_the_job_time_zone_and_wins_over_the_schedules() -> None:
    assert job_schedule("CRON_TZ=Asia/Tokyo 30 4 * * *", "Europe/Paris") == (
        "30 4 * * *", "Asia/Tokyo")
    assert job_schedule("TZ=Asia/Tokyo 30 4 * * *", "UTC") == ("30 4 * * *", "Asia/Tokyo")
    # Without a prefix robfig runs in the zone of the time it is given: the schedule's zone,
    # UTC for every hub item (the hub calls Next with UTC times).
    assert job_schedule("30 4 * * *", "UTC") == ("30 4 * * *", "UTC")
    assert job_schedule("TZ=Local 30 4 * * *", "UTC") == ("30 4 * * *", "UTC")
    assert job_schedule("TZ= 30 4 * * *", "Europe/Paris") == ("30 4 * * *", "UTC")
    assert hub_fires("CRON_TZ=Asia/Tokyo 30 4 * * *", utc(2026, 1, 1), 1) == [
        utc(2026, 1, 1, 19, 30)]


@pytest.mark.parametrize("expr", [
    "CRON_TZ=Europe/Berlin 0 9 * * MON-FRI", "TZ=America/New_York 30 1 * * *", "0 0 ? * MON",
    "5/15 * * * *", "*/60 * * * *", "0 0 * jan,Jul,DEC sun", "0 0 */1 * MON", "0 0 */2 * MON",
    "0 12 1,15 * fri", "CRON_TZ=Australia/Sydney 30 2 * * *", "0 0 29 2 *",
])
def test_each_class_agrees_with_the_oracle(expr: str) -> None:
    after = utc(2026, 2, 20)
    assert hub_fires(expr, after) == oracle.next_fires(expr, after, COUNT)
    assert job_fires(expr, after) == oracle.next_fires(expr, after, COUNT)


# Clock changes: robfig `doc.go:169-170` (the skipped hour does not run) and `spec.go:138-160`
# (hours and minutes move in absolute time, so the repeated hour runs twice).

@pytest.mark.parametrize(("expr", "after", "expected"), [
    # Berlin, 29 March 2026: 02:00 CET -> 03:00 CEST. 02:30 does not exist that day.
    ("CRON_TZ=Europe/Berlin 30 2 * * *", utc(2026, 3, 27, 12),
     [utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)]),
    # Berlin, 25 October 2026: 03:00 CEST -> 02:00 CET. 02:30 happens twice.
    ("CRON_TZ=Europe/Berlin 30 2 * * *", utc(2026, 10, 24, 12),
     [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]),
    # New York, 8 March / 1 November 2026.
    ("TZ=America/New_York 30 2 * * *", utc(2026, 3, 7),
     [utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)]),
    ("TZ=America/New_York 30 1 * * *", utc(2026, 10, 31, 12),
     [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6, 30)]),
    # Sydney, 5 April 2026 (02:00-02:59 twice) and 4 October 2026 (02:00-02:59 skipped).
    ("CRON_TZ=Australia/Sydney 30 2 * * *", utc(2026, 4, 4),
     [utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30), utc(2026, 4, 5, 16, 30)]),
    ("CRON_TZ=Australia/Sydney 30 2 * * *", utc(2026, 10, 2),
     [utc(2026, 10, 2, 16, 30), utc(2026, 10, 4, 15, 30)]),
])
def test_clock_changes(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert hub_fires(expr, after, len(expected)) == expected
    assert oracle.next_fires(expr, after, len(expected)) == expected
    assert job_fires(expr, after, len(expected)) == expected


def test_lord_howe_where_robfig_leaves_the_wall_clock() -> None:
    """Lord Howe moves by 30 minutes. robfig walks hours and minutes in absolute time
    (spec.go:138-160), which at such a shift leaves the wall clock; worked by hand from `Next`
    for 4 October 2026, 02:00 (+10:30) -> 02:30 (+11), and 5 April 2026, 02:00 (+11) -> 01:30
    (+10:30)."""
    zone = "CRON_TZ=Australia/Lord_Howe "
    # An hour walk across the shift stands at :30 until an hour matches, so that hour is
    # entered half-way: 05:00 on the day clocks go forward is not fired ...
    assert hub_fires(zone + "0 5 * * *", utc(2026, 10, 2, 12), 2) == [
        utc(2026, 10, 2, 18, 30), utc(2026, 10, 4, 18)]
    # ... nor 02:00 on the day they go back, though it exists once ...
    assert hub_fires(zone + "0 2 * * *", utc(2026, 4, 3, 12), 2) == [
        utc(2026, 4, 3, 15), utc(2026, 4, 5, 15, 30)]
    # ... nor, when no hour matches after the shift that day, 00:00 the day after.
    assert hub_fires(zone + "0 0 * * *", utc(2026, 10, 2, 12), 3) == [
        utc(2026, 10, 2, 13, 30), utc(2026, 10, 3, 13, 30), utc(2026, 10, 5, 13)]
    # A minute walk across the forward shift lands on 02:30 (+11) and does not look at the
    # hour again: fired, although only hour 1 is asked for (2030-10-06, 02:00 -> 02:30).
    assert hub_fires(zone + "58,30 1 * * *", utc(2030, 10, 5, 15, 27), 2) == [
        utc(2030, 10, 5, 15, 28), utc(2030, 10, 5, 15, 30)]
    # Minutes from :30 on fire as on any day.
    assert hub_fires(zone + "45 5 * * *", utc(2026, 10, 3, 12), 1) == [utc(2026, 10, 3, 18, 45)]
    # The job fires at the wall-clock slots; the worker derives each publish's fire time with
    # the hub's semantics (test_worker_derives_the_hubs_slot).
    assert utc(2026, 10, 3, 18) in job_fires(zone + "0 5 * * *", utc(2026, 10, 2, 12), 2)
