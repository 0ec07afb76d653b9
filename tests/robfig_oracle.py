"""A test oracle for the Scion hub's cron dialect, written from robfig/cron v3.0.1's documentation
(`doc.go`, README) and not from its code, deliberately simple and slow.

What the documentation says, and so what this oracle does:

* five space-separated fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC,
  day of week 0-6 or SUN-SAT; names in any case (`doc.go:41-52`);
* `*` every value, `a-b` a range, `a,b` a list, `/s` an increment over a range, `*/s` over the
  whole field, `N/s` meaning `N-max/s` (`doc.go:76-101`); `?` instead of `*` in the day fields
  (`doc.go:103-106`);
* an optional `CRON_TZ=Zone ` (or legacy `TZ=Zone `) prefix: the schedule is interpreted in that
  zone (`doc.go:145-167`); without one, in the zone of the time given (UTC at the hub);
* the day fields: both must match when either is unrestricted (`*` or `?`, alone or `/1`),
  otherwise either may (the README's "fix combining of Dow and Dom (#70)"; the issue states the
  rule);
* time zones: "jobs scheduled during daylight-savings leap-ahead transitions will not be run"
  (`doc.go:169-170`); a wall time that occurs twice (clocks going back) is run at both instants.

So: a whole minute is a fire exactly when its wall-clock time in the zone matches. This oracle
walks minute by minute (skipping, day by day, days the day and month fields rule out) and checks
that. robfig itself departs from it where clocks move by 30 minutes (see
`scheduler.cron_robfig`); the tests say where they rely on it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class OracleField:
    values: frozenset[int]
    unrestricted: bool


@dataclass(frozen=True)
class OracleSpec:
    minute: OracleField
    hour: OracleField
    dom: OracleField
    month: OracleField
    dow: OracleField
    zone: str | None

    def matches(self, wall: datetime) -> bool:
        if wall.minute not in self.minute.values or wall.hour not in self.hour.values:
            return False
        return self.day_matches(wall)

    def day_matches(self, wall: datetime) -> bool:
        if wall.month not in self.month.values:
            return False
        dom = wall.day in self.dom.values
        dow = wall.isoweekday() % 7 in self.dow.values
        if self.dom.unrestricted or self.dow.unrestricted:
            return dom and dow
        return dom or dow


def _number(text: str, names: list[str], low: int) -> int:
    upper = text.upper()
    if upper in names:
        return names.index(upper) + low
    return int(text)


def _parse_field(text: str, low: int, high: int, names: list[str]) -> OracleField:
    values: set[int] = set()
    unrestricted = False
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span in ("*", "?"):
            first, last = low, high
            unrestricted = unrestricted or step == 1
        elif "-" in span:
            a, b = span.split("-")
            first, last = _number(a, names, low), _number(b, names, low)
        else:
            first = _number(span, names, low)
            last = high if step_text else first
        if not (low <= first <= last <= high) or step < 1:
            raise ValueError(f"bad item {item!r}")
        values.update(range(first, last + 1, step))
    return OracleField(frozenset(values), unrestricted)


def parse(expr: str) -> OracleSpec:
    zone = None
    for prefix in ("CRON_TZ=", "TZ="):
        if expr.startswith(prefix):
            zone, _, expr = expr[len(prefix):].partition(" ")
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("five fields")
    return OracleSpec(
        _parse_field(fields[0], 0, 59, []),
        _parse_field(fields[1], 0, 23, []),
        _parse_field(fields[2], 1, 31, []),
        _parse_field(fields[3], 1, 12, MONTHS),
        _parse_field(fields[4], 0, 6, DAYS),
        zone,
    )


def fires(expr: str, after: datetime, timezone: str = "UTC") -> Iterator[datetime]:
    """Every fire strictly after `after`, in order (UTC)."""
    spec = parse(expr)
    tz = ZoneInfo(spec.zone or timezone)
    instant = after.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
    while True:
        wall = instant.astimezone(tz)
        if not spec.day_matches(wall):
            # On to the next local midnight (its first instant): no minute before it matches.
            midnight = datetime.combine(wall.date() + timedelta(days=1), time(), tz)
            instant = max(instant + MINUTE, midnight.astimezone(UTC))
            continue
        if spec.matches(wall):
            yield instant
        instant += MINUTE


def next_fires(expr: str, after: datetime, n: int, timezone: str = "UTC") -> list[datetime]:
    """The first `n` fires after `after`."""
    out: list[datetime] = []
    for instant in fires(expr, after, timezone):
        out.append(instant)
        if len(out) == n:
            break
    return out
