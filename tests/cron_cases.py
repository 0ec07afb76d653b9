"""Helpers for the cron tests: a cron spec in a zone, UTC instants, the fires of a spec, and the
hypothesis settings of the cron property tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings

from scheduler.cron import (
    CronDialect,
    next_fires,
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
