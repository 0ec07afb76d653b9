"""Cron semantics: Cloud Scheduler's unix-cron, evaluated on wall-clock time in a time zone.

Cloud Scheduler "runs on wall clock time" (https://cloud.google.com/scheduler/docs/configuring/
cron-job-schedules, section *Time zone*). Taken literally, and modelled exactly here:

* a slot whose wall-clock time does not exist (the hour skipped when clocks go forward) does
  not fire that day;
* a slot whose wall-clock time occurs twice (the hour repeated when clocks go back) fires at
  both instants; they are distinct fire times and so distinct executions.

Slots are produced by croniter over *naive* wall-clock times and mapped to instants with
`zoneinfo`, so the DST rule above is ours and explicit rather than a side effect of how a
library handles aware datetimes. Every instant returned is an aware UTC datetime.

The functions that take a `CronSpec` read its cron in the spec's `cron_dialect`: schedules
handed over from the Scion hub keep the hub's robfig dialect (`scheduler.cron_robfig`), whose
fires their jobs reproduce (`scheduler.cron_translate`).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from scheduler import cron_robfig
from scheduler.cron_base import CRON_DIALECTS as CRON_DIALECTS
from scheduler.cron_base import CronDialect as CronDialect
from scheduler.cron_base import CronError as CronError
from scheduler.cron_base import five_fields
from scheduler.cron_base import is_utc as _is_utc
from scheduler.cron_base import is_valid_timezone as is_valid_timezone
from scheduler.cron_base import zone as _zone

DEFAULT_SKEW = timedelta(seconds=5)

# Largest clock shift the start point is moved back for. Present-day zones shift by at most an
# hour (Lord Howe by 30 minutes); historic double summer time shifted by two.
_MAX_SHIFT = timedelta(hours=3)


class CronSpec(Protocol):
    """Anything that knows its cron, its dialect and its time zone: a `Schedule`, a decoded fire
    message, or a job's schedule."""

    @property
    def effective_cron(self) -> str: ...

    @property
    def effective_timezone(self) -> str: ...

    @property
    def cron_dialect(self) -> CronDialect: ...


_FIELDS = five_fields(upper=True, day_of_week_high=7)
_ITEM_RE = re.compile(r"^(?:(\*)|([A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?)(?:/(\d+))?$")


def _value(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if token.isdigit():
        number = int(token)
    elif token.upper() in names:
        number = names[token.upper()]
    else:
        raise CronError(f"{name} field: {token!r} is not a number{' or name' if names else ''}")
    if not low <= number <= high:
        raise CronError(f"{name} field: {number} is outside {low}-{high}")
    return number


def _check_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    for item in text.split(","):
        match = _ITEM_RE.match(item)
        if not match:
            raise CronError(f"{name} field: {item!r} is not a value, range, step or '*'")
        star, start, end, step = match.groups()
        if step is not None:
            if not star and end is None:
                raise CronError(
                    f"{name} field: a step (/{step}) must follow '*' or a range, not {start!r}"
                )
            if not 1 <= int(step) <= high:
                raise CronError(f"{name} field: step {step} must be from 1 to {high}")
        if star:
            continue
        first = _value(start, name, low, high, names)
        if end is not None and _value(end, name, low, high, names) < first:
            raise CronError(f"{name} field: range {item!r} ends before it starts")


def _token(token: str, names: dict[str, int]) -> int | None:
    if token.isdigit():
        return int(token)
    return names.get(token.upper())


@lru_cache(maxsize=4096)
def _for_croniter(expr: str) -> str:
    """`expr` with every range whose two ends are the same value (`5-5`, `MON-MON`, `3-3/2`)
    written as that one value, which is what standard cron reads it as; croniter deliberately
    widens such a range to the whole field (so `0 9-9 * * *` would fire every hour)."""
    fields = expr.split()
    if len(fields) != 5:
        return expr
    out = []
    for text, (_, _, _, names) in zip(fields, _FIELDS, strict=True):
        items = []
        for item in text.split(","):
            match = _ITEM_RE.match(item)
            if match and match.group(3) is not None:
                first = _token(match.group(2), names)
                if first is not None and first == _token(match.group(3), names):
                    item = str(first)
            items.append(item)
        out.append(",".join(items))
    return " ".join(out)


def _walls(expr: str, start: datetime) -> Any:
    """A croniter over naive wall-clock times, with standard (Vixie) cron semantics.

    The day fields combine as in Vixie cron's `cron.c`: when either starts with `*` both must
    match, otherwise either may. croniter's own rule looks at the expanded values instead, so
    it reads `*/1` as a wildcard next to one weekday field and as a restriction next to another.
    """
    fields = expr.split()
    day_or = len(fields) == 5 and not (fields[2].startswith("*") or fields[4].startswith("*"))
    return croniter(_for_croniter(expr), start, day_or=day_or)


@lru_cache(maxsize=4096)
def validate_cron(expr: str, dialect: CronDialect = CronDialect.UNIX) -> None:
    """Accept exactly Cloud Scheduler's unix-cron: five fields of values, ranges, steps, lists,
    and month or weekday names. Six-field (seconds) and extended syntax (L, W, #, ?) are refused,
    as is an expression that can never fire (e.g. 30 February). Successful checks are cached:
    the worker validates the cron of every message it receives. With the robfig dialect, accept
    exactly what the Scion hub accepts (`scheduler.cron_robfig.parse`)."""
    if dialect is CronDialect.ROBFIG:
        cron_robfig.validate(expr)
        return
    fields = expr.split()
    if len(fields) != 5:
        hint = (
            " (a sixth field for seconds is not supported by Cloud Scheduler)"
            if len(fields) == 6
            else ""
        )
        raise CronError(
            "must have 5 fields (minute hour day-of-month month day-of-week), got "
            f"{len(fields)}{hint}"
        )
    for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        _check_field(text, name, low, high, names)
    try:
        _walls(expr, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as exc:  # croniter signals an impossible date with its own exception types
        raise CronError(f"{expr!r} never fires ({exc})") from exc


def _shift_near(tz: ZoneInfo, instant: datetime) -> timedelta:
    """How far the start point must move so that the other occurrence of a repeated hour near
    `instant` is not missed; zero when the zone's offset is steady around it."""
    offsets = {(instant + timedelta(hours=h)).astimezone(tz).utcoffset() for h in (-26, 0, 26)}
    return _MAX_SHIFT if len(offsets) > 1 else timedelta(0)


def _occurrences(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """The instants at which a naive wall-clock time occurs in `tz`: none (a gap), one, or two."""
    found: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == wall and instant not in found:
            found.append(instant)
    return found


def iter_fires(spec: CronSpec, after: datetime, *, reverse: bool = False) -> Iterator[datetime]:
    """Every fire instant strictly after `after` (or strictly before it, newest first, with
    `reverse`), in order, without end (a robfig spec ends where robfig finds no fire within
    five years)."""
    expr, tz = spec.effective_cron, _zone(spec.effective_timezone)
    after = after.astimezone(UTC)
    if spec.cron_dialect is CronDialect.ROBFIG:
        yield from _robfig_fires(expr, spec.effective_timezone, after, reverse=reverse)
        return
    if _is_utc(tz):
        walls = _walls(expr, after.replace(tzinfo=None))
        step = walls.get_prev if reverse else walls.get_next
        while True:
            yield step(datetime).replace(tzinfo=UTC)
    shift = _shift_near(tz, after)
    local = after.astimezone(tz).replace(tzinfo=None)
    walls = _walls(expr, local + shift if reverse else local - shift)
    step = walls.get_prev if reverse else walls.get_next
    # Instants of later walls never precede the first occurrence of the current wall (and, in
    # reverse, never follow its last), so a small heap restores order across a repeated hour.
    pending: list[tuple[float, datetime]] = []
    sign = -1 if reverse else 1
    while True:
        found = _occurrences(step(datetime), tz)
        for instant in found:
            heapq.heappush(pending, (sign * instant.timestamp(), instant))
        if not found:
            continue
        frontier = sign * (found[-1] if reverse else found[0]).timestamp()
        while pending and pending[0][0] <= frontier:
            instant = heapq.heappop(pending)[1]
            if (instant < after) if reverse else (instant > after):
                yield instant


def _robfig_fires(
    expr: str, timezone: str, after: datetime, *, reverse: bool,
) -> Iterator[datetime]:
    spec = cron_robfig.parse(expr)
    tz = cron_robfig.location(spec, timezone)
    if not reverse:
        yield from cron_robfig.iter_fires(spec, tz, after)
        return
    while True:
        after = cron_robfig.latest_at_or_before(spec, tz, after - timedelta(microseconds=1))
        yield after


def next_fires(spec: CronSpec, after: datetime, n: int) -> list[datetime]:
    """The next `n` fire instants strictly after `after` (UTC, ascending)."""
    fires: list[datetime] = []
    for instant in iter_fires(spec, after):
        if len(fires) >= n:
            break
        fires.append(instant)
    return fires


def latest_fire_at_or_before(spec: CronSpec, instant: datetime) -> datetime:
    """The newest fire instant that is `<= instant`."""
    return next(iter_fires(spec, instant.astimezone(UTC) + timedelta(microseconds=1), reverse=True))


@lru_cache(maxsize=4096)
def shortest_interval(expr: str, dialect: CronDialect = CronDialect.UNIX) -> timedelta:
    """The shortest gap between two consecutive slots of `expr` (on a steady UTC clock, sampled
    over up to 400 slots; every cron's shortest possible gap is one minute, where it stops)."""
    if dialect is CronDialect.ROBFIG:
        return cron_robfig.shortest_interval(expr)
    walls = _walls(expr, datetime(2001, 1, 1))
    previous = walls.get_next(datetime)
    shortest = timedelta.max
    for _ in range(400):
        current = walls.get_next(datetime)
        shortest = min(shortest, current - previous)
        if shortest <= timedelta(minutes=1):
            break
        previous = current
    return shortest


def fire_time_for(
    spec: CronSpec, published_at: datetime, skew: timedelta = DEFAULT_SKEW
) -> datetime:
    """Derive the slot a Cloud Scheduler publish belongs to: the latest slot at or before
    `published_at + tolerance`, where the tolerance is `skew` but never more than half the
    schedule's shortest interval (so a slightly early publish from a skewed clock still lands on
    its own slot, and a late one, after retries, on the slot it was for)."""
    published_at = published_at.astimezone(UTC)
    tolerance = min(skew, shortest_interval(spec.effective_cron, spec.cron_dialect) / 2)
    return latest_fire_at_or_before(spec, published_at + tolerance)


class _Spec(NamedTuple):
    effective_cron: str
    effective_timezone: str
    cron_dialect: CronDialect


def is_slot(spec: CronSpec, instant: datetime) -> bool:
    """Whether `instant` is exactly one of the schedule's fire instants."""
    return _is_slot(_Spec(spec.effective_cron, spec.effective_timezone, spec.cron_dialect),
                    instant.astimezone(UTC))


@lru_cache(maxsize=4096)
def _is_slot(spec: _Spec, instant: datetime) -> bool:
    # Cached: the worker checks the slot of every fire a tick publishes (`scheduler.contract`),
    # and a tick's fires share a few crons and one slot; the walk's set-up is most of a decode.
    return latest_fire_at_or_before(spec, instant) == instant
