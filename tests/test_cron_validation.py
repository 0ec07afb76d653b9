"""Cron expressions: which are refused and why, which are accepted, and how fields, names and zones
read (helpers: `cron_cases`)."""

from __future__ import annotations

import pytest
from cron_cases import fires, utc

from scheduler.cron import (
    CronError,
    is_valid_timezone,
    validate_cron,
)

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
