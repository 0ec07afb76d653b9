"""The property tests compare `scheduler.cron` with an oracle written here from the cron fields
alone (no croniter): a minute is a fire instant exactly when its wall-clock time in the zone matches
the expression (helpers: `cron_cases`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

from cron_cases import MS, PROPERTY, Spec, utc
from hypothesis import assume, given
from hypothesis import strategies as st

from scheduler.cron import (
    DEFAULT_SKEW,
    CronError,
    fire_time_for,
    iter_fires,
    next_fires,
    validate_cron,
)

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
