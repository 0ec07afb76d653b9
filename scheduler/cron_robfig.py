"""The Scion hub's cron dialect: robfig/cron v3.0.1 as the hub parses and evaluates it.

The hub parses every `cronExpr` with `cron.NewParser(Minute | Hour | Dom | Month | Dow)`
(scion `pkg/hub/handlers_schedules.go:166,324,414`, `pkg/hub/server.go:1745`): five fields, no
descriptors (`@daily`, `@every` are refused, robfig `parser.go:106-108`), and computes every next
run as `Next(now)` with `now` in UTC (`handlers_schedules.go:216,331,420`, `server.go:1717,1754`),
so an expression without a zone prefix runs in UTC (robfig `spec.go:72-79`: a schedule without a
location runs in the location of the time it is given). What it accepts beyond unix-cron, each
read from robfig `parser.go` at v3.0.1:

* a `CRON_TZ=Zone ` or `TZ=Zone ` prefix: the schedule runs in that zone (`parser.go:93-103`);
  the zone ends at the first space; `TZ= ` (empty) is UTC and `TZ=Local` is the evaluating
  time's own zone, as Go's `time.LoadLocation` reads them;
* `?` for `*`, in any field (`parser.go:262`);
* `N/step` meaning `N-max/step`, and any step of 1 or more (`*/60` is minute 0)
  (`parser.go:284-315`); empty list items (`1,,2`) are dropped (`parser.go:238`);
* month and weekday names in any case (`parser.go:321-325`); weekdays are 0-6, so 7 is refused
  (`spec.go:40`);
* the day rule: day-of-month and day-of-week must both match when either field carries the
  star bit (`*` or `?`, alone or with step 1, e.g. `*/1`, but not `*/2`), otherwise either may
  (`spec.go:179-187`, `parser.go:262-299`).

Evaluation (`Next`, `spec.go:58-175`) walks month, day, hour, minute forwards from the given
time, stepping hours and minutes in absolute time. In a zone whose clocks shift by a whole hour
away from midnight (every zone the hub is likely to name) that is exactly the wall-clock rule:
a slot in the skipped hour does not fire (robfig `doc.go:169-170`), a slot in the repeated hour
fires at both instants. Two places differ, and this module follows robfig there too, by walking
the same way: where clocks shift by 30 minutes (Australia/Lord_Howe), an hour walk across the
shift stands at :30 until an hour matches, whose earlier minutes then do not fire, and a minute
walk across the forward shift can fire at its first minute whatever the hour field says; where
clocks shift at midnight, the day walk moves by whole days from a midnight that may not exist.
Dates and times are normalised as Go's `time.Date` does: a wall time in a gap or overlap takes
the offset in force at (wall - offset at wall).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from scheduler.cron_base import CronError, Field, five_fields, is_valid_timezone, zone

# Go's unicode.IsSpace, which strings.Fields splits on (Python's str.split also splits on
# \x1c-\x1f, which Go keeps inside a field).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_FIELDS_RE = re.compile(f"[{_GO_SPACE}]+")
_ATOI_RE = re.compile(r"^[+-]?[0-9]+$")
_MAX_INT64 = 2**63 - 1
# robfig gives up and returns Go's zero time when nothing matches within five years.
_YEAR_LIMIT = 5
_EPOCH = datetime(1970, 1, 1)

_FIELDS = five_fields(upper=False, day_of_week_high=6)


@dataclass(frozen=True)
class RobfigSpec:
    """A parsed hub expression: the values each field allows, whether the day fields carry the
    star bit, and the zone of its `CRON_TZ=`/`TZ=` prefix (None: the schedule's own zone)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]
    dom_star: bool
    dow_star: bool
    zone: str | None

    def day_matches(self, day: int, weekday: int) -> bool:
        """The hub's day rule (`weekday` 0 = Sunday)."""
        dom, dow = day in self.doms, weekday in self.dows
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


def _atoi(text: str, what: str, kind: str = "a number") -> int:
    # Go's strconv.Atoi: an optional sign and ASCII digits only, within int64; then robfig
    # refuses a negative number (parser.go:331-338).
    if not _ATOI_RE.match(text) or not -_MAX_INT64 - 1 <= int(text) <= _MAX_INT64:
        raise CronError(f"{what}: {text!r} is not {kind}")
    if int(text) < 0:
        raise CronError(f"{what}: negative number {text!r}")
    return int(text)


def _int_or_name(text: str, what: str, names: dict[str, int]) -> int:
    # Go's strings.ToLower maps U+0130 to a plain "i"; Python's lower() adds a combining dot.
    named = names.get(text.replace("\u0130", "i").lower()) if names else None
    if named is not None:
        return named
    return _atoi(text, what, "a number or a name" if names else "a number")


def _item(item: str, field: Field) -> tuple[range, bool]:
    """One list item: its values and whether it carries the star bit."""
    name, low, high, names = field
    what = f"{name} field {item!r}"
    range_step = item.split("/")
    low_high = range_step[0].split("-")
    star = low_high[0] in ("*", "?")
    if star:
        # Anything after a star's hyphen is never read (parser.go:262-265).
        start, end = low, high
    elif len(low_high) > 2:
        raise CronError(f"{what}: too many hyphens")
    else:
        start = _int_or_name(low_high[0], what, names)
        end = start if len(low_high) == 1 else _int_or_name(low_high[1], what, names)
    step = 1
    if len(range_step) > 2:
        raise CronError(f"{what}: too many slashes")
    if len(range_step) == 2:
        step = _atoi(range_step[1], f"{what} (step)")
        if len(low_high) == 1:
            end = high
        star = star and step <= 1
    if start < low:
        raise CronError(f"{what}: {start} is below the minimum {low}")
    if end > high:
        raise CronError(f"{what}: {end} is above the maximum {high}")
    if start > end:
        raise CronError(f"{what}: the range starts ({start}) after it ends ({end})")
    if step == 0:
        raise CronError(f"{what}: the step must be a positive number")
    return range(start, end + 1, step), star


def _field(text: str, field: Field) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for item in (i for i in text.split(",") if i):
        found, item_star = _item(item, field)
        values.update(found)
        star = star or item_star
    return frozenset(values), star


def _prefix_zone(expr: str) -> tuple[str | None, str]:
    """The `CRON_TZ=`/`TZ=` prefix's zone (None when it names the evaluating time's zone) and
    the rest of the expression."""
    if not expr.startswith(("TZ=", "CRON_TZ=")):
        return None, expr
    space = expr.find(" ")
    if space < 0:
        # robfig slices up to the missing space and the hub's handler panics (parser.go:96-99).
        raise CronError("time zone prefix: must be followed by a space and the five fields")
    name = expr[expr.index("=") + 1:space]
    rest = expr[space:]
    if name in ("", "UTC"):
        return "UTC", rest
    if name == "Local":
        return None, rest
    if not is_valid_timezone(name):
        raise CronError(f"time zone prefix: unknown time zone {name!r}")
    return name, rest


@lru_cache(maxsize=4096)
def parse(expr: str) -> RobfigSpec:
    """Parse a hub expression as the hub does; `CronError` names the field and the reason for
    anything the hub refuses, and for an expression that can never fire."""
    if not expr:
        raise CronError("is empty")
    tz, rest = _prefix_zone(expr)
    fields = [f for f in _FIELDS_RE.split(rest) if f]
    if fields and fields[0].startswith("@"):
        raise CronError(f"descriptors such as {fields[0]!r} are not accepted by the hub "
                        "(its parser has no Descriptor option): use five fields")
    if len(fields) != 5:
        raise CronError("must have 5 fields (minute hour day-of-month month day-of-week), "
                        f"got {len(fields)}")
    parsed = [_field(text, field) for text, field in zip(fields, _FIELDS, strict=True)]
    (minutes, _), (hours, _), (doms, dom_star), (months, _), (dows, dow_star) = parsed
    spec = RobfigSpec(minutes, hours, doms, months, dows, dom_star, dow_star, tz)
    if next_after(spec, zone("UTC"), datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise CronError(f"{expr!r} never fires (the hub accepts it but never runs it)")
    return spec


def validate(expr: str) -> None:
    """Accept exactly what the hub accepts (see `parse`)."""
    parse(expr)


def location(spec: RobfigSpec, timezone: str) -> ZoneInfo:
    """The zone a spec runs in: its prefix's, else the schedule's own (UTC for a hub item)."""
    return zone(spec.zone if spec.zone is not None else timezone)


# Go's time package, as much of it as Next uses, on whole Unix seconds.

def _local(seconds: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(seconds, tz)


def _offset(seconds: int, tz: ZoneInfo) -> int:
    offset = _local(seconds, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _go_date(year: int, month: int, day: int, hour: int, minute: int, second: int,
             tz: ZoneInfo) -> int:
    """Go's `time.Date`: out-of-range fields roll over; a wall time that does not exist or
    exists twice takes the offset in force at (wall - the offset in force at wall)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    wall = int((datetime(year, month, 1) - _EPOCH).total_seconds())
    wall += (day - 1) * 86400 + hour * 3600 + minute * 60 + second
    return wall - _offset(wall - _offset(wall, tz), tz)


def _weekday(local: datetime) -> int:
    return local.isoweekday() % 7


def next_after(spec: RobfigSpec, tz: ZoneInfo, after: datetime) -> datetime | None:
    """robfig's `Next`: the first fire strictly after `after`, None when there is none within
    five years. Walks like `spec.go:58-175`: the first field found not to match resets the
    finer fields (once per call); the month then moves by calendar months, the day by calendar
    days, the hour and the minute by absolute hours and minutes, and the walk starts over from
    the month whenever a field rolls over (January, the 1st, hour 0, minute 0)."""
    t = int(after.timestamp() // 1) + 1
    walk = _Walk(spec, tz, t)
    while True:
        local = _local(walk.t, tz)
        if local.year > walk.year_limit:
            return None
        if not (walk.month(local) or walk.day() or walk.hour() or walk.minute()
                or walk.second()):
            return datetime.fromtimestamp(walk.t, UTC)


class _Walk:
    """One `Next` walk. Each field's step moves `t` until the field matches and says whether
    the walk must start over (True) or go on to the next field (False)."""

    def __init__(self, spec: RobfigSpec, tz: ZoneInfo, t: int) -> None:
        self.spec, self.tz, self.t = spec, tz, t
        self.moved = False
        self.year_limit = _local(t, tz).year + _YEAR_LIMIT

    def _reset(self, year: int, month: int, day: int, hour: int = 0) -> None:
        """The first time any field moves, the finer ones start from their lowest value."""
        if not self.moved:
            self.moved = True
            self.t = _go_date(year, month, day, hour, 0, 0, self.tz)

    def _add_date(self, months: int, days: int) -> datetime:
        d = _local(self.t, self.tz)
        self.t = _go_date(d.year, d.month + months, d.day + days, d.hour, d.minute, d.second,
                          self.tz)
        return _local(self.t, self.tz)

    def month(self, local: datetime) -> bool:
        while local.month not in self.spec.months:
            self._reset(local.year, local.month, 1)
            local = self._add_date(1, 0)
            if local.month == 1:
                return True
        return False

    def day(self) -> bool:
        local = _local(self.t, self.tz)
        while not self.spec.day_matches(local.day, _weekday(local)):
            self._reset(local.year, local.month, local.day)
            local = self._add_date(0, 1)
            if local.hour:
                # Midnight that does not exist: back to the day's start, or on to the next.
                self.t += (24 - local.hour) * 3600 if local.hour > 12 else -local.hour * 3600
                local = _local(self.t, self.tz)
            if local.day == 1:
                return True
        return False

    def hour(self) -> bool:
        return self._by_seconds(lambda local: local.hour, self.spec.hours, 3600,
                                lambda d: self._reset(d.year, d.month, d.day, d.hour))

    def minute(self) -> bool:
        return self._by_seconds(lambda local: local.minute, self.spec.minutes, 60,
                                lambda _: self._reset_to_minute())

    def _reset_to_minute(self) -> None:
        if not self.moved:
            self.moved = True
            self.t -= self.t % 60

    def _by_seconds(self, unit: Callable[[datetime], int], allowed: Collection[int],
                    seconds: int, reset: Callable[[datetime], None]) -> bool:
        """The hour's and the minute's step: absolute `seconds` at a time (`reset` before the
        first), until `unit` is `allowed`; True when it rolls over to 0."""
        local = _local(self.t, self.tz)
        while unit(local) not in allowed:
            reset(local)
            self.t += seconds
            local = _local(self.t, self.tz)
            if unit(local) == 0:
                return True
        return False

    def second(self) -> bool:
        # The hub's parser fixes the seconds field at 0.
        second = _local(self.t, self.tz).second
        if second:
            self.moved = True
            self.t += 60 - second
            return True
        return False


def iter_fires(spec: RobfigSpec, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The hub's fires after `after`, in order: each the `Next` of the one before, as the hub's
    evaluator chains them. Ends only where robfig finds nothing within five years."""
    instant: datetime | None = after
    while instant is not None:
        instant = next_after(spec, tz, instant)
        if instant is not None:
            yield instant


def latest_at_or_before(spec: RobfigSpec, tz: ZoneInfo, instant: datetime) -> datetime:
    """The newest fire `<= instant` as the hub's evaluator reaches it, chaining each `Next` from
    the fire before. robfig has no backward walk, so this walks forwards from ever earlier starts
    (a minute, then four times further back each time) until a start's next fire is not after
    `instant`, and keeps the last fire up to `instant`. Any start gives the chain's answer except
    after a clock change robfig walks off the wall clock at (see the module docstring): there
    the chain is followed from the last fire before the change."""
    floor, converged = _chain_floor(spec, tz, instant)
    if floor is not None and not converged:
        return floor
    back = timedelta(minutes=1)
    while back < timedelta(days=366 * (_YEAR_LIMIT + 3)):
        start = instant - back
        if floor is not None and start < floor:
            start = floor - timedelta(microseconds=1)
        found = None
        for fire in iter_fires(spec, tz, start):
            if fire > instant:
                break
            found = fire
        if found is not None:
            return found
        back *= 4
    raise CronError(f"no fire in the {_YEAR_LIMIT + 3} years up to {instant.isoformat()}")


# How far back a clock change robfig walks off the wall clock at is looked for: the walk is back
# on whole hours at the first fire the wall clock has too, within days for any daily or weekly
# schedule and within a month for a monthly one.
_IRREGULAR_LOOKBACK = timedelta(days=35)


def _chain_floor(
    spec: RobfigSpec, tz: ZoneInfo, instant: datetime,
) -> tuple[datetime | None, bool]:
    """After an irregular clock change (30 minutes, or at midnight) in the lookback, follow the
    chain from its last fire before the change up to its first fire after it that the wall
    clock has too (True: from there on any start walks as the chain does), or else to its last
    fire up to `instant` (False: that is the answer). (None, False) without such a change."""
    change = _irregular_change(tz, instant)
    if change is None:
        return None, False
    floor = latest_at_or_before(spec, tz, change - timedelta(seconds=1))
    for fire in iter_fires(spec, tz, floor):
        if fire > instant:
            break
        floor = fire
        local = fire.astimezone(tz)
        if fire >= change and (local.minute in spec.minutes and local.hour in spec.hours
                and local.month in spec.months and spec.day_matches(local.day, _weekday(local))):
            return floor, True
    return floor, False


def _irregular_change(tz: ZoneInfo, instant: datetime) -> datetime | None:
    """The first clock change in the lookback before `instant` that is not a whole hour away
    from midnight."""
    end = int(instant.timestamp())
    days = [end - d * 86400 for d in range(_IRREGULAR_LOOKBACK.days, -1, -1)]
    for low, high in pairwise(days):
        if _offset(low, tz) == _offset(high, tz):
            continue
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if _offset(middle, tz) == _offset(low, tz) else (low, middle)
        shift = _offset(high, tz) - _offset(low, tz)
        if shift % 3600 or {_local(low, tz).hour, _local(high, tz).hour} & {23, 0}:
            return datetime.fromtimestamp(high, UTC)
    return None


@lru_cache(maxsize=4096)
def shortest_interval(expr: str) -> timedelta:
    """The shortest gap between two consecutive fires (sampled in UTC over up to 400 fires)."""
    fires = iter_fires(parse(expr), zone("UTC"), datetime(2001, 1, 1, tzinfo=UTC))
    previous = next(fires)
    shortest = timedelta.max
    for _, current in zip(range(400), fires, strict=False):
        shortest = min(shortest, current - previous)
        if shortest <= timedelta(minutes=1):
            break
        previous = current
    return shortest
