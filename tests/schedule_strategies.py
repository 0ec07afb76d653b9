"""Hypothesis strategies for schedule documents, shared by the model and contract tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from scheduler.egress import header_problem

# Everything `str.isprintable` accepts: no control, format, private-use, unassigned or
# separator characters, except the plain space.
PRINTABLE_CHARS = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")) | st.just(" ")
PRINTABLE = st.text(PRINTABLE_CHARS, min_size=1, max_size=40)
SCHEDULE_IDS = st.text(PRINTABLE_CHARS, min_size=1, max_size=256)

CRONS = st.sampled_from([
    "* * * * *", "*/5 * * * *", "0 9 * * MON-FRI", "30 2 * * *", "0 0 1 JAN,JUL *",
    "15,45 8-18/2 * * 1-5", "0 12 29 2 *", "0 0 31 * *", "0 0 * * 7",
])
ZONES = st.sampled_from([
    "UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
    "America/St_Johns",
])
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 30), timezones=st.just(UTC))
DURATIONS = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
CUSTOM_ACTION_TYPE = "hub.message"
KNOWN_TYPES = frozenset({CUSTOM_ACTION_TYPE})


@st.composite
def http_actions(draw: st.DrawFn) -> dict[str, Any]:
    action: dict[str, Any] = {
        "type": "http",
        "url": draw(st.sampled_from([
            "https://hub.example.com/api/fire", "http://hooks.example.net:8080/hook?x=1",
            "https://[2001:4860:4860::8888]:8443/p"])),  # public: the egress policy allows it
    }
    if draw(st.booleans()):
        action["method"] = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    if draw(st.booleans()):
        names = PRINTABLE.filter(lambda name: header_problem(name, oidc=False) is None)
        action["headers"] = draw(st.dictionaries(names, st.text(max_size=20), max_size=3))
    if draw(st.booleans()):
        action["body"] = draw(JSON)
    if draw(st.booleans()):
        action["timeout"] = draw(st.integers(1, 1800))
    return action


@st.composite
def custom_actions(draw: st.DrawFn) -> dict[str, Any]:
    params = draw(
        st.dictionaries(st.text(max_size=10).filter(lambda k: k != "type"), JSON, max_size=4)
    )
    return {"type": CUSTOM_ACTION_TYPE, **params}


@st.composite
def schedule_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid schedule document (parse it with `known_action_types=KNOWN_TYPES`)."""
    doc: dict[str, Any] = {"id": draw(SCHEDULE_IDS)}
    if draw(st.booleans()):
        doc["cron"] = draw(CRONS)
    else:
        doc["at"] = draw(INSTANTS).isoformat().replace("+00:00", "Z")
    doc["action"] = draw(http_actions() | custom_actions())
    optional: dict[str, st.SearchStrategy[Any]] = {
        "timezone": ZONES,
        "paused": st.booleans(),
        "overlap": st.sampled_from(["skip", "allow"]),
        "catchup": st.sampled_from(["all", "latest", "none"]),
        "catchup_window": DURATIONS.map(lambda d: d.total_seconds()) | st.sampled_from(
            ["15m", "1h30m", "90s", "PT15M", "2d", "0.5s"]),
        "max_attempts": st.integers(1, 100),
        "labels": st.dictionaries(PRINTABLE, st.text(max_size=20), max_size=3),
        "description": st.text(max_size=500),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            doc[key] = draw(strategy)
    return doc


# The Scion hub's cron dialect (robfig/cron v3.0.1): what `tests/robfig_oracle.py` documents.
ROBFIG_ZONES = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"])
_ROBFIG_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                  "dec"]
_ROBFIG_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _any_case(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name.upper(), name.capitalize()]))


@st.composite
def _robfig_value(draw: st.DrawFn, low: int, high: int, names: list[str]) -> str:
    value = draw(st.integers(low, high))
    if names and draw(st.booleans()):
        return _any_case(draw, names[value - low])
    return str(value)


@st.composite
def _robfig_item(draw: st.DrawFn, low: int, high: int, names: list[str], day: bool) -> str:
    """One list item of a field: `*`/`?` (day fields), a value, a range, `N/step`, `*/step`."""
    stars = ["*", "?"] if day else ["*"]
    kind = draw(st.sampled_from(["star", "value", "range", "start_step", "star_step"]))
    step = draw(st.integers(1, high - low + 1 if high < 59 else 60))
    if kind == "star":
        return draw(st.sampled_from(stars))
    if kind == "star_step":
        return f"{draw(st.sampled_from(stars))}/{draw(st.sampled_from([1, 2, step]))}"
    first = draw(_robfig_value(low, high, names))
    if kind == "value":
        return first
    if kind == "start_step":
        return f"{first}/{step}"
    a, b = sorted(draw(st.lists(st.integers(low, high), min_size=2, max_size=2)))
    span = f"{a}-{b}"
    return f"{span}/{step}" if draw(st.booleans()) else span


def _robfig_field(low: int, high: int, names: list[str] | None = None, *, day: bool = False,
                  star_weight: int = 1) -> st.SearchStrategy[str]:
    item = _robfig_item(low, high, names or [], day)
    listed = st.lists(item, min_size=1, max_size=3).map(",".join)
    return st.one_of(*[st.just("*")] * star_weight, listed)


@st.composite
def robfig_expressions(draw: st.DrawFn, zones: st.SearchStrategy[str] | None = None) -> str:
    """An expression the hub accepts (it may still never fire: parse it to find out), with a
    `CRON_TZ=`/`TZ=` prefix when `zones` is given and draws one."""
    fields = [
        draw(_robfig_field(0, 59)),
        draw(_robfig_field(0, 23)),
        draw(_robfig_field(1, 31, day=True, star_weight=2)),
        draw(_robfig_field(1, 12, _ROBFIG_MONTHS, star_weight=3)),
        draw(_robfig_field(0, 6, _ROBFIG_DAYS, day=True, star_weight=2)),
    ]
    expr = " ".join(fields)
    if zones is not None:
        zone = draw(zones)
        if zone != "UTC" or draw(st.booleans()):
            expr = f"{draw(st.sampled_from(['CRON_TZ', 'TZ']))}={zone} {expr}"
    return expr
