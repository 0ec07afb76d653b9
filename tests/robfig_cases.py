"""Helpers for the robfig dialect tests: the hub's fires and the translated job's fires of an
expression, zone transitions, and the hypothesis settings of the property tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from scheduler.cron import (
    CronDialect,
    next_fires,
    validate_cron,
)
from scheduler.cron_translate import job_schedule
from scheduler.jobs import JobRetry

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
