"""The Scion hub's cron dialect (robfig/cron v3.0.1), property-based: each test compares, over years
and across both clock changes, (a) this project's robfig-dialect fires and (b) the fires of the
translated job under Cloud Scheduler's unix-cron (`scheduler.cron` on `job_schedule`) with the
oracle of `tests/robfig_oracle.py` (helpers: `robfig_cases`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import takewhile

import pytest
import robfig_oracle as oracle
from hypothesis import assume, given
from hypothesis import strategies as st
from robfig_cases import COUNT, FAST, SLOW, YEARS, hub_fires, job_fires, transitions
from schedule_strategies import ROBFIG_ZONES, robfig_expressions

from scheduler import cron_robfig
from scheduler.cron import (
    CronError,
)
from scheduler.cron_translate import job_schedule

# Property tests: the hub's fires, and the translated job's, against the oracle.

def _compare(expr: str, after: datetime) -> None:
    try:
        cron_robfig.parse(expr)
    except CronError:
        assume(False)
    expected = oracle.next_fires(expr, after, COUNT)
    assert hub_fires(expr, after) == expected, expr
    assert job_fires(expr, after) == expected, (expr, job_schedule(expr, "UTC"))


@FAST
@given(robfig_expressions(), YEARS)
def test_utc_agrees_with_the_oracle(expr: str, after: datetime) -> None:
    _compare(expr, after)


@FAST
@given(robfig_expressions(ROBFIG_ZONES), YEARS)
def test_zones_agree_with_the_oracle(expr: str, after: datetime) -> None:
    _compare(expr, after)


@st.composite
def _near_a_clock_change(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney"]))
    change = draw(st.sampled_from(transitions(zone)))
    hours = draw(st.sampled_from(["*", "0-5", "1,2", "2", "1-3/1", "*/2"]))
    expr = draw(robfig_expressions()).split(" ")
    expr[1] = hours
    expr[2:5] = ["*", "*", "*"] if draw(st.booleans()) else expr[2:5]
    before = timedelta(minutes=draw(st.integers(0, 26 * 60)))
    return f"CRON_TZ={zone} {' '.join(expr)}", change - before


@FAST
@given(_near_a_clock_change())
def test_both_clock_changes_agree_with_the_oracle(case: tuple[str, datetime]) -> None:
    _compare(*case)


@pytest.mark.slow
@SLOW
@given(st.one_of(
    st.tuples(robfig_expressions(ROBFIG_ZONES), YEARS), _near_a_clock_change()))
def test_many_expressions_agree_with_the_oracle(case: tuple[str, datetime]) -> None:
    _compare(*case)


@FAST
@given(robfig_expressions(), st.sampled_from(transitions("Australia/Lord_Howe")),
       st.integers(0, 26 * 60))
def test_lord_howe_leaves_the_wall_clock_only_until_the_first_common_fire_after_a_shift(
    expr: str, change: datetime, minutes: int,
) -> None:
    """Before a 30-minute shift the hub fires on the wall clock; from the shift on it may drop
    and add fires (test_lord_howe_where_robfig_leaves_the_wall_clock) until its first fire that
    the wall clock has too, after which its walk is back on whole hours and they agree."""
    expr = f"CRON_TZ=Australia/Lord_Howe {expr}"
    try:
        cron_robfig.parse(expr)
    except CronError:
        assume(False)
    after = change - timedelta(minutes=minutes)
    assert job_fires(expr, after) == oracle.next_fires(expr, after, COUNT)
    # Up to the next shift (they are months apart).
    hub = [f for f in hub_fires(expr, after) if f < change + timedelta(days=150)]
    assume(hub)
    wall = list(takewhile(lambda f: f <= hub[-1], oracle.fires(expr, after)))
    assert [f for f in hub if f < change] == [f for f in wall if f < change]
    first = next((f for f in hub if f > change and f in wall), None)
    if first is not None:
        assert [f for f in hub if f > first] == [f for f in wall if f > first]
    if expr.split(" ")[2] == "*":
        assert hub == wall
