"""The Scion hub's cron dialect (robfig/cron v3.0.1): what it accepts, when it fires, and the
Cloud Scheduler job that reproduces it.

Expected instants come from `tests/robfig_oracle.py`, written from robfig's documentation, or are
written out by hand from reading robfig's `spec.go` `Next` (the 30-minute shift cases, where
robfig departs from its documented wall-clock reading). Each property test compares, over years
and across both clock changes, (a) this project's robfig-dialect fires and (b) the fires of the
translated job under Cloud Scheduler's unix-cron (`scheduler.cron` on `job_schedule`) with the
oracle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise, takewhile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import robfig_oracle as oracle
import scion_hub_data as hub_data
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schedule_strategies import ROBFIG_ZONES, robfig_expressions

from scheduler import cron_robfig
from scheduler.contract import ATTR_CRON_DIALECT, ContractError, build_message, decode_message
from scheduler.cron import (
    CronDialect,
    CronError,
    latest_fire_at_or_before,
    next_fires,
    validate_cron,
)
from scheduler.cron_translate import job_schedule
from scheduler.jobs import JobRetry, JobSpec
from scheduler.jobs_decode import schedule_from_job
from scheduler.model import Schedule
from scheduler.validation import parse_schedule
from scion_scheduler.cli import main as scheduler_main

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNT = 12
RETRY = JobRetry(1, timedelta(seconds=5), timedelta(seconds=60), 2, timedelta(0))
YEARS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 12, 31),
                     timezones=st.just(UTC))


@dataclass(frozen=True)
class Spec:
    """A `CronSpec` without a whole schedule around it."""

    effective_cron: str
    effective_timezone: str = "UTC"
    cron_dialect: CronDialect = CronDialect.ROBFIG


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def hub_fires(expr: str, after: datetime, n: int = COUNT) -> list[datetime]:
    return next_fires(Spec(expr), after, n)


def job_fires(expr: str, after: datetime, n: int = COUNT) -> list[datetime]:
    cron, zone = job_schedule(expr, "UTC")
    validate_cron(cron)
    return next_fires(Spec(cron, zone, CronDialect.UNIX), after, n)


def fires_in(expr: str, zone: str) -> str:
    return expr if zone == "UTC" else f"CRON_TZ={zone} {expr}"


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The instants the zone's offset changes, 2024-2031."""
    tz = ZoneInfo(zone)
    found = []
    instant = utc(2024, 1, 1)
    offset = instant.astimezone(tz).utcoffset()
    while instant < utc(2032, 1, 1):
        step = instant + timedelta(minutes=30)
        if step.astimezone(tz).utcoffset() != offset:
            found.append(step)
            offset = step.astimezone(tz).utcoffset()
        instant = step
    return tuple(found)


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


# The worker derives a hub schedule's fire times with the hub's semantics.

def hub_schedule(cron: str) -> Schedule:
    return parse_schedule({
        "id": "nightly", "cron": cron, "cron_dialect": "robfig",
        "action": {"type": "http", "url": "https://hub.example.com/hook"},
    })


@pytest.mark.parametrize("cron", [
    "0 0 */2 * MON", "CRON_TZ=Europe/Berlin 30 2 * * *", "*/60 * * * *", "5/15 * * * *",
    "CRON_TZ=Australia/Lord_Howe 0 5 * * *",
])
def test_worker_derives_the_hubs_slot(cron: str) -> None:
    schedule = hub_schedule(cron)
    message = build_message(schedule)
    assert message.attributes[ATTR_CRON_DIALECT] == "robfig"
    fire = decode_message(message.data, message.attributes)
    assert fire.cron_dialect is CronDialect.ROBFIG and fire.cron == cron
    start = utc(2026, 3, 27) if "Berlin" in cron else utc(2026, 10, 1)
    for slot in next_fires(schedule, start, 8):
        for published in (slot - timedelta(seconds=2), slot + timedelta(seconds=40)):
            assert fire.derive_fire_time(published) == slot
        assert latest_fire_at_or_before(fire, slot + timedelta(seconds=59)) == slot


def test_the_dialect_is_in_the_fingerprint_only_when_not_the_default() -> None:
    hub = hub_schedule("0 9 * * *")
    native = replace(hub, cron_dialect=CronDialect.UNIX)
    assert "cron_dialect" not in native.to_dict()
    assert ATTR_CRON_DIALECT not in build_message(native).attributes
    unchanged = {k: v for k, v in hub.to_dict().items() if k not in ("paused", "description")}
    assert native.fingerprint() == hashlib.sha256(json.dumps(
        {k: v for k, v in unchanged.items() if k != "cron_dialect"}, sort_keys=True,
        separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()[:32]
    assert hub.fingerprint() != native.fingerprint()
    assert parse_schedule(hub.to_dict()) == hub
    assert schedule_from_job(JobSpec(
        "projects/p/locations/l", "projects/p/topics/t", "scion-", RETRY,
    ).desired_job(hub)) == hub


def test_an_unknown_or_misplaced_dialect_is_refused() -> None:
    action = {"type": "http", "url": "https://hub.example.com/hook"}
    with pytest.raises(ValueError, match="cron_dialect: must be one of unix, robfig"):
        parse_schedule({"id": "s", "cron": "0 9 * * *", "cron_dialect": "quartz",
                        "action": action})
    with pytest.raises(ValueError, match="cron_dialect: applies to `cron` only"):
        parse_schedule({"id": "s", "at": "2030-01-01T00:00:00Z", "cron_dialect": "robfig",
                        "action": action})
    with pytest.raises(ValueError, match="cron: day of week field '7'"):
        parse_schedule({"id": "s", "cron": "0 9 * * 7", "cron_dialect": "robfig",
                        "action": action})
    message = build_message(hub_schedule("0 9 * * *"))
    attributes = {**message.attributes, ATTR_CRON_DIALECT: "quartz"}
    with pytest.raises(ContractError, match="unknown dialect"):
        decode_message(message.data, attributes)


# `scion-scheduler next` on the hub's own JSON shows the hub's fire times.

NEXT_CLASSES = [
    "CRON_TZ=Europe/Berlin 30 2 * * *", "TZ=America/New_York 30 1 * * *", "0 12 ? * MON",
    "5/15 9 * * *", "*/60 * * * *", "0 0 * jan,Jul,DEC sun", "0 0 */1 * MON", "0 0 */2 * MON",
    "CRON_TZ=Australia/Sydney 0 2 * * *", "TZ=Australia/Lord_Howe 45 2 * * *",
]


@pytest.mark.parametrize("after", ["2026-03-27T00:00:00Z", "2026-10-23T00:00:00Z"])
def test_next_shows_the_hubs_fire_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], after: str,
) -> None:
    items = [hub_data.schedule(id=f"s{i}", name=f"s{i}", cron=cron)
             for i, cron in enumerate(NEXT_CLASSES)]
    refused = hub_data.schedule(id="dow7", name="dow7", cron="0 0 * * 7")
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"schedules": items}))
    code = scheduler_main(["next", "--file", str(path), "--format", "scion", "--output", "json",
                           "--count", "6", "--after", after])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    start = datetime.fromisoformat(after)
    for i, cron in enumerate(NEXT_CLASSES):
        expected = oracle.next_fires(cron, start, 6)
        assert shown[f"s{i}"] == [f.strftime("%Y-%m-%dT%H:%M:%SZ") for f in expected], cron
    path.write_text(json.dumps({"schedules": [*items, refused]}))
    assert scheduler_main(["next", "--file", str(path), "--format", "scion"]) == 2
    assert "day of week field '7'" in capsys.readouterr().err


def test_a_publish_at_a_slot_the_hub_would_not_fire_maps_to_the_hubs_previous_slot() -> None:
    # Lord Howe, 4 October 2026: the job fires at 05:00 (+11), the hub does not (see
    # test_lord_howe_where_robfig_leaves_the_wall_clock); the worker derives the hub's previous
    # slot, 3 October 05:00 (+10:30), whose execution ID the publish then shares.
    fire = decode_message(**vars(build_message(hub_schedule(
        "CRON_TZ=Australia/Lord_Howe 0 5 * * *"))))
    assert fire.derive_fire_time(utc(2026, 10, 3, 18) + timedelta(seconds=3)) == utc(
        2026, 10, 2, 18, 30)


@FAST
@given(robfig_expressions(), st.sampled_from(
    ["Australia/Lord_Howe", "Europe/Berlin", "America/New_York"]), st.data())
def test_the_worker_derives_the_slots_the_hubs_chain_reaches(
    expr: str, zone: str, data: st.DataObject,
) -> None:
    """Each fire of the hub's chain (each `Next` from the fire before), also across a clock
    change robfig walks off the wall clock at, is the slot a publish shortly after it maps to."""
    expr = f"CRON_TZ={zone} {expr}"
    try:
        cron_robfig.parse(expr)
    except CronError:
        assume(False)
    change = data.draw(st.sampled_from(transitions(zone)))
    chain = hub_fires(expr, change - timedelta(minutes=data.draw(st.integers(0, 26 * 60))))
    for fire, following in pairwise(chain):
        probe = min(fire + timedelta(seconds=30), following - timedelta(seconds=1))
        assert latest_fire_at_or_before(Spec(expr), probe) == fire, (fire, following)


def test_a_hub_schedules_job_runs_the_translation_and_its_message_the_hubs_expression() -> None:
    hub = hub_schedule("CRON_TZ=Europe/Berlin 0 0 */2 * MON")
    job = JobSpec("projects/p/locations/l", "projects/p/topics/t", "scion-", RETRY).desired_job(hub)
    assert (job.schedule, job.time_zone) == ("0 0 1-31/2 * 1", "Europe/Berlin")
    attributes = dict(job.pubsub_target.attributes)
    assert attributes["cron"] == "CRON_TZ=Europe/Berlin 0 0 */2 * MON"
    assert (attributes["timezone"], attributes[ATTR_CRON_DIALECT]) == ("UTC", "robfig")
