"""Cron semantics against Cloud Scheduler's documented wall-clock behaviour.

https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules ("Cloud Scheduler runs on
wall clock time"), modelled as: a slot in the skipped hour does not fire that day; a slot in the
repeated hour fires at both instants. Every expected instant below is written out in UTC.

The property tests compare `scheduler.cron` with an oracle written here from the cron fields
alone (no croniter): a minute is a fire instant exactly when its wall-clock time in the zone
matches the expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.cron import (
    DEFAULT_SKEW,
    CronDialect,
    CronError,
    fire_time_for,
    is_slot,
    is_valid_timezone,
    iter_fires,
    latest_fire_at_or_before,
    next_fires,
    validate_cron,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Spec:
    """A `CronSpec` without a whole schedule around it."""

    effective_cron: str
    effective_timezone: str = "UTC"
    cron_dialect: CronDialect = CronDialect.UNIX


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(cron: str, zone: str, after: datetime, n: int) -> list[datetime]:
    return next_fires(Spec(cron, zone), after, n)


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


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expr", [
    "* * * * * *",          # six fields (seconds)
    "0 0 * * * 2025",       # six fields (year)
    "* * * *",              # four
    "",
    "0 0 L * *", "0 0 * * 5L", "0 0 15W * *", "0 0 LW * *", "0 0 * * 1#2", "0 0 ? * MON",
    "0 0 * * ?", "H * * * *",
    "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 32 * *", "0 0 * 0 *", "0 0 * 13 *",
    "0 0 * * 8", "-1 * * * *",
    "30-10 * * * *", "0 20-8 * * *", "0 0 * DEC-JAN *", "0 0 * * FRI-MON",
    "5/15 * * * *", "0 0 1/2 * *", "0 0 * JAN/2 *",
    "*/0 * * * *", "*/60 * * * *",
    "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 2 *",
    "0 0 * FOO *", "0 0 * * MONDAY", "0,,5 * * * *", "0, * * * *", "a * * * *",
])
def test_validate_cron_rejects(expr: str) -> None:
    with pytest.raises(CronError):
        validate_cron(expr)


def test_validate_cron_reasons_name_the_problem() -> None:
    cases = {
        "* * * * * *": "sixth field",
        "0 0 L * *": "day of month",
        "61 * * * *": "outside 0-59",
        "10-5 * * * *": "ends before it starts",
        "5/15 * * * *": "must follow",
        "0 0 30 2 *": "never fires",
    }
    for expr, fragment in cases.items():
        with pytest.raises(CronError, match=fragment):
            validate_cron(expr)


@pytest.mark.parametrize("expr", [
    "* * * * *", "*/5 * * * *", "0 9 * * MON-FRI", "0 9 * * mon-fri", "0 0 1 JAN,JUL *",
    "0 0 * * 7", "0 0 * * 0", "0 0 * * 5-7", "0 0 * * SUN", "15,45 8-18/2 * * 1-5",
    "0 12 29 2 *", "0 0 31 * *", "0 0 30 2 MON", "0 0 1-31/10 * *", "0-59/20 * * * *",
    "00 09 * * *", "  0  9  *  *  *  ", "0 0 * JAN-DEC/3 *",
])
def test_validate_cron_accepts(expr: str) -> None:
    validate_cron(expr)


def test_seven_is_sunday() -> None:
    sundays = fires("0 0 * * 7", "UTC", utc(2025, 6, 1, 1), 2)
    assert sundays == fires("0 0 * * 0", "UTC", utc(2025, 6, 1, 1), 2) == fires(
        "0 0 * * SUN", "UTC", utc(2025, 6, 1, 1), 2)
    assert all(t.weekday() == 6 for t in sundays)


def test_names_select_the_right_days_and_months() -> None:
    weekdays = fires("0 9 * * MON-FRI", "UTC", utc(2025, 6, 6, 12), 3)  # a Friday afternoon
    assert weekdays == [utc(2025, 6, 9, 9), utc(2025, 6, 10, 9), utc(2025, 6, 11, 9)]
    assert fires("0 0 1 JAN,JUL *", "UTC", utc(2025, 2, 1), 3) == [
        utc(2025, 7, 1), utc(2026, 1, 1), utc(2026, 7, 1)]


def test_a_range_of_one_value_is_that_value() -> None:
    # croniter widens `9-9` to the whole field; standard cron (and so this module) does not.
    assert fires("0 9-9 * * *", "UTC", utc(2025, 6, 1), 2) == [
        utc(2025, 6, 1, 9),
        utc(2025, 6, 2, 9),
    ]
    assert fires("5-5 * * * *", "UTC", utc(2025, 6, 1), 2) == [
        utc(2025, 6, 1, 0, 5),
        utc(2025, 6, 1, 1, 5),
    ]
    assert fires("0 0 * * MON-MON", "UTC", utc(2025, 6, 1), 2) == [utc(2025, 6, 2), utc(2025, 6, 9)]
    assert fires("0 0 3-3/2 JUL-JUL *", "UTC", utc(2025, 6, 1), 2) == [
        utc(2025, 7, 3),
        utc(2026, 7, 3),
    ]


def test_day_of_month_and_day_of_week_combine_as_in_vixie_cron() -> None:
    # Both restricted: either matches (crontab(5): "30 4 1,15 * 5" runs on the 1st, the 15th
    # and every Friday).
    assert fires("0 0 1,15 * FRI", "UTC", utc(2025, 6, 1), 4) == [
        utc(2025, 6, 6), utc(2025, 6, 13), utc(2025, 6, 15), utc(2025, 6, 20)]
    # A field starting with `*` (a step included) makes it an AND, in every combination.
    assert fires("0 0 */2 * MON", "UTC", utc(2025, 6, 1), 3) == [
        utc(2025, 6, 9), utc(2025, 6, 23), utc(2025, 7, 7)]
    assert fires("0 0 */1 * SUN", "UTC", utc(2025, 6, 2), 2) == [utc(2025, 6, 8), utc(2025, 6, 15)]
    assert fires("0 0 13 * */7", "UTC", utc(2025, 6, 1), 2) == [utc(2025, 7, 13), utc(2026, 9, 13)]


def test_time_zones_are_tz_database_names() -> None:
    assert is_valid_timezone("Europe/Berlin") and is_valid_timezone("UTC")
    assert is_valid_timezone("America/Argentina/Buenos_Aires")
    # `localtime` is a file in the system zoneinfo directory (the host's own zone), not a zone.
    for name in ("localtime", "posixrules", "utc", "Europe/berlin", "Mars/Base", "", "+01:00"):
        assert not is_valid_timezone(name), name


# --- properties -----------------------------------------------------------------------------------

_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (low, high, names by value)
_FIELD_RANGES = [
    (0, 59, None),
    (0, 23, None),
    (1, 31, None),
    (1, 12, _MONTH_NAMES),
    (0, 7, _DAY_NAMES),
]

ZONES = [
    "UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
    "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham", "Asia/Kathmandu", "America/Sao_Paulo",
    "Europe/Dublin", "Africa/Casablanca", "Antarctica/Troll", "Pacific/Apia", "America/Santiago",
]


@st.composite
def _cron_field(draw: st.DrawFn, index: int) -> str:
    low, high, names = _FIELD_RANGES[index]

    def value(v: int) -> str:
        if names and v - low < len(names) and draw(st.booleans()):
            return names[v - low].lower() if draw(st.booleans()) else names[v - low]
        return str(v)

    def item() -> str:
        kind = draw(st.sampled_from(["value", "range", "range-step"]))
        a = draw(st.integers(low, high))
        if kind == "value":
            return value(a)
        b = draw(st.integers(a, high))
        text = f"{value(a)}-{value(b)}"
        if kind == "range-step":
            text += f"/{draw(st.integers(1, high))}"
        return text

    kind = draw(st.sampled_from(["star", "star-step", "list"]))
    if kind == "star":
        return "*"
    if kind == "star-step":
        return f"*/{draw(st.integers(1, high))}"
    return ",".join(item() for _ in range(draw(st.integers(1, 3))))


@st.composite
def crons(draw: st.DrawFn) -> str:
    expr = " ".join(draw(_cron_field(i)) for i in range(5))
    try:
        validate_cron(expr)
    except CronError:
        assume(False)
    return expr


def _expand(text: str, low: int, high: int, names: list[str] | None) -> set[int]:
    """The values a cron field allows, parsed here independently of croniter."""
    lookup = {n: i + low for i, n in enumerate(names or [])}

    def num(token: str) -> int:
        return lookup[token.upper()] if token.upper() in lookup else int(token)

    out: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-")
            first, last = num(a), num(b)
        else:
            first = last = num(base)
        out.update(range(first, last + 1, step))
    return out


@lru_cache(maxsize=512)
def _matcher(expr: str) -> tuple[set[int], set[int], set[int], set[int], set[int], bool]:
    fields = expr.split()
    minute, hour, dom, month, dow = (
        _expand(text, *rng) for text, rng in zip(fields, _FIELD_RANGES, strict=True))
    dow = {d % 7 for d in dow}
    # Vixie cron's rule (cron.c): a day field starting with `*` makes the two an AND.
    day_or = not (fields[2].startswith("*") or fields[4].startswith("*"))
    return minute, hour, dom, month, dow, day_or


def _wall_matches(expr: str, wall: datetime) -> bool:
    minute, hour, dom, month, dow, day_or = _matcher(expr)
    if wall.minute not in minute or wall.hour not in hour or wall.month not in month:
        return False
    dom_ok, dow_ok = wall.day in dom, (wall.weekday() + 1) % 7 in dow
    return (dom_ok or dow_ok) if day_or else (dom_ok and dow_ok)


@lru_cache(maxsize=64)
def _transitions(zone: str, year: int) -> tuple[datetime, ...]:
    """UTC instants (to the hour) at which the zone's offset changes during `year`."""
    tz = ZoneInfo(zone)
    t, end = utc(year, 1, 1), utc(year + 1, 1, 1)
    found, previous = [], t.astimezone(tz).utcoffset()
    while t < end:
        offset = t.astimezone(tz).utcoffset()
        if offset != previous:
            found.append(t)
        previous, t = offset, t + timedelta(hours=1)
    return tuple(found)


@st.composite
def starts(draw: st.DrawFn, zone: str) -> datetime:
    """A start instant, often within a day or two of one of the zone's clock changes."""
    year = draw(st.integers(2005, 2035))
    near = _transitions(zone, year)
    near_a_change = draw(st.booleans())
    if near and near_a_change:
        base = draw(st.sampled_from(near))
        return base + timedelta(seconds=draw(st.integers(-2 * 86400, 86400)))
    return utc(year, 1, 1) + timedelta(seconds=draw(st.integers(0, 365 * 86400)))


@st.composite
def specs_and_starts(draw: st.DrawFn) -> tuple[Spec, datetime]:
    zone = draw(st.sampled_from(ZONES))
    return Spec(draw(crons()), zone), draw(starts(zone))


@PROPERTY
@given(specs_and_starts())
def test_property_every_fire_derives_back_from_its_publish_window(
    case: tuple[Spec, datetime],
) -> None:
    spec, after = case
    got = next_fires(spec, after, 7)
    assert len(got) == 7
    assert after < got[0]
    assert got == sorted(set(got)), "strictly increasing"
    tolerance = (
        DEFAULT_SKEW  # every cron's shortest gap is a minute, so the 5 s skew is never capped
    )
    for t, nxt in pairwise(got):
        window_end = nxt - t - tolerance - MS
        for d in (-tolerance + MS, -MS, timedelta(0), MS, window_end / 2, window_end):
            assert fire_time_for(spec, t + d) == t, (t, d)
        assert fire_time_for(spec, nxt - tolerance) == nxt


@PROPERTY
@given(specs_and_starts())
def test_property_reverse_iteration_is_exactly_forward_reversed(
    case: tuple[Spec, datetime],
) -> None:
    spec, after = case
    forward = next_fires(spec, after, 8)
    backward = list(islice(iter_fires(spec, forward[-1] + MS, reverse=True), 8))
    assert backward == forward[::-1]
    # Nothing between `after` and the first fire was skipped.
    assert next(iter_fires(spec, forward[0], reverse=True)) <= after


@PROPERTY
@given(specs_and_starts())
def test_property_fires_are_exactly_the_minutes_whose_wall_clock_matches(
    case: tuple[Spec, datetime],
) -> None:
    """Oracle: walk every UTC minute of a window and keep those whose local wall-clock time
    matches the cron. A skipped wall time has no minute; a repeated one has two."""
    spec, after = case
    tz = ZoneInfo(spec.effective_timezone)
    got = next_fires(spec, after, 50)
    end = min(got[-1], after + timedelta(days=3))
    minute = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    expected = []
    while minute <= end:
        if _wall_matches(spec.effective_cron, minute.astimezone(tz).replace(tzinfo=None)):
            expected.append(minute)
        minute += timedelta(minutes=1)
    assert [t for t in got if t <= end] == expected, spec
