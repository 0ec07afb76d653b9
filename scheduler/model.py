"""The schedule model: what the hub hands over, validated once, immutable afterwards.

The types here are plain frozen values; `scheduler.validation` is the only way in from
untrusted documents, and it reports every problem at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from scheduler.cron_base import CronDialect
from scheduler.errors import SchedulerError

Overlap = Literal["skip", "allow"]
Catchup = Literal["all", "latest", "none"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "allow")
CATCHUP_POLICIES: tuple[str, ...] = ("all", "latest", "none")

DEFAULT_CATCHUP_WINDOW = timedelta(minutes=15)
DEFAULT_MAX_ATTEMPTS = 5
# A one-shot's job fires at the whole minute at least this long before its `at`, and the worker
# holds the fire until `at` (Cloud Scheduler fires on minute boundaries only). Long enough for a
# publish that Cloud Scheduler retries twice at the default 5 s backoff to still arrive in time.
ONE_SHOT_LEAD = timedelta(seconds=30)


@dataclass(frozen=True)
class FieldError:
    """One validation problem: which schedule, which field, and why."""

    schedule_id: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"schedule {self.schedule_id!r}: {self.field}: {self.reason}"


class ValidationError(SchedulerError, ValueError):
    """Raised with every problem found; nothing is applied when it is raised."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} validation error(s):\n{lines}")


@dataclass(frozen=True)
class Action:
    """What a fire does: a registered action type and its parameters (JSON-compatible)."""

    type: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The action as the JSON object of a schedule file (`{"type": ..., **params}`)."""
        return {"type": self.type, **self.params}


@dataclass(frozen=True)
class Schedule:
    """One validated schedule. Build it with `parse_schedule` / `load_schedules`, not directly."""

    id: str
    action: Action
    cron: str | None = None
    at: datetime | None = None
    timezone: str = "UTC"
    paused: bool = False
    overlap: Overlap = "skip"
    catchup: Catchup = "all"
    catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    # How `cron` is read: schedules handed over from the Scion hub keep its robfig dialect,
    # and their jobs run a translation of it (`scheduler.cron_translate`).
    cron_dialect: CronDialect = CronDialect.UNIX

    @property
    def one_shot(self) -> bool:
        """True for an `at` schedule, which fires once."""
        return self.at is not None

    @property
    def job_slot(self) -> datetime | None:
        """The minute a one-shot's job fires (see `one_shot_slot`); None for a cron schedule."""
        return None if self.at is None else one_shot_slot(self.at)

    @property
    def effective_cron(self) -> str:
        """The cron Cloud Scheduler runs: the schedule's own, or the one-shot's job slot."""
        if self.cron is not None:
            return self.cron
        slot = self.job_slot
        assert slot is not None
        return f"{slot.minute} {slot.hour} {slot.day} {slot.month} *"

    @property
    def effective_timezone(self) -> str:
        """One-shots are expressed in UTC so that no DST rule can move or repeat them."""
        return "UTC" if self.at is not None else self.timezone

    def to_dict(self) -> dict[str, Any]:
        """The schedule in schedule-file form; `parse_schedule(s.to_dict()) == s`."""
        out: dict[str, Any] = {"id": self.id}
        if self.cron is not None:
            out["cron"] = self.cron
        if self.cron_dialect is not CronDialect.UNIX:
            # Only when not the default, so that no native schedule's fingerprint changes.
            out["cron_dialect"] = self.cron_dialect.value
        if self.at is not None:
            out["at"] = format_instant(self.at)
        out.update({
            "timezone": self.timezone,
            "paused": self.paused,
            "action": self.action.to_dict(),
            "overlap": self.overlap,
            "catchup": self.catchup,
            "catchup_window": format_duration(self.catchup_window),
            "max_attempts": self.max_attempts,
            "labels": dict(self.labels),
            "description": self.description,
        })
        return out

    def fingerprint(self) -> str:
        """A hash of everything a fire depends on. `paused` and `description` are left out: they
        change the job, not what a fire does, so pausing does not rewrite the fire message."""
        material = self.to_dict()
        material.pop("paused")
        material.pop("description")
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def one_shot_slot(at: datetime) -> datetime:
    """The minute a one-shot's job fires: the whole minute at or before `at - ONE_SHOT_LEAD`.
    The hub fires a one-shot at its exact `fireAt` (`time.AfterFunc`, scion pkg/hub/scheduler.go
    :263-271), so the fire is published early and held until `at`, never rounded up."""
    return (at.astimezone(UTC) - ONE_SHOT_LEAD).replace(second=0, microsecond=0)


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, microseconds only when present."""
    # isoformat leaves out a zero microsecond, as wanted, and costs a fraction of strftime,
    # which every log line and claim of a fire calls.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_instant(value: str) -> datetime:
    """Parse an RFC 3339 instant; an offset is required (a bare local time is ambiguous)."""
    text = value.strip()
    if not re.match(
        r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$", text
    ):
        raise ValueError(
            f"{value!r} is not an RFC 3339 instant with an offset (e.g. 2026-01-31T09:00:00Z)"
        )
    parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    return parsed.astimezone(UTC)


_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_ISO_DURATION_RE = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(value: Any) -> timedelta:
    """Accept seconds (number), `1h30m`/`90s`/`2d` forms, or ISO 8601 (`PT15M`)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a non-negative number of seconds (got {value!r})")
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"is too long (got {value!r})") from None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"must be a duration such as '15m', '1h30m', '90s' or 'PT15M' (got {value!r})"
        )
    text = value.strip()
    match = _DURATION_RE.match(text) or _ISO_DURATION_RE.match(text.upper())
    if not match or not any(match.groups()):
        raise ValueError(
            f"must be a duration such as '15m', '1h30m', '90s' or 'PT15M' (got {value!r})"
        )
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    try:
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ValueError(f"is too long (got {value!r})") from None


def format_duration(value: timedelta) -> str:
    """The shortest `XdYhZmWs` form; `parse_duration(format_duration(d)) == d`."""
    # Whole microseconds, not float seconds: a float loses them and `:g` writes `1e-06`.
    whole, micros = divmod(value // timedelta(microseconds=1), 1_000_000)
    if whole == 0 and micros == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if micros:
        parts.append(f"{whole}.{micros:06d}".rstrip("0") + "s")
    elif whole:
        parts.append(f"{whole}s")
    return "".join(parts)
