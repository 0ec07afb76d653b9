"""A hub (robfig) expression as a Cloud Scheduler schedule and time zone with the same fires.

The job runs Cloud Scheduler's unix-cron, so everything robfig reads differently is written out:

* the zone of a `CRON_TZ=`/`TZ=` prefix becomes the job's time zone (the prefix wins over the
  schedule's own `timezone`, as robfig's spec location wins over the evaluating time's zone);
* every field becomes the explicit values it allows: `?` is `*`, `5/15` is `5,20,35,50` (written
  `5-50/15`), `*/60` in minutes is `0`, names become numbers;
* the day rule: robfig ANDs the day fields when either carries the star bit, which is then a
  whole field, written `*` (unix-cron also ANDs when a field starts with `*`); otherwise robfig
  ORs them, so neither is written with a leading `*` (`*/2` in day-of-month becomes
  `1-31/2`), and unix-cron ORs them too. A field that allows nothing (`,`) is written `*` next
  to the other, which then alone decides, as in robfig.

Away from clock changes, and across every whole-hour clock change that is not at midnight, the
job then fires at exactly the hub's instants: both read wall-clock time literally (a slot in the
skipped hour does not fire, one in the repeated hour fires at both instants). Where robfig does
not (a 30-minute shift, or a shift at midnight; see `scheduler.cron_robfig`), no unix-cron can
follow it: the job fires at the wall-clock slots and the worker derives each publish's fire time
with the hub's own semantics (`scheduler.cron.fire_time_for`), so a publish at a slot the hub
would not fire maps to the hub's previous slot and shares its execution ID; a fire the hub adds
at the shift is not made.
"""

from __future__ import annotations

from collections.abc import Set
from itertools import pairwise

from scheduler import cron_robfig


def _runs(values: list[int]) -> str:
    parts: list[str] = []
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def _field(values: Set[int], low: int, high: int, *, star: bool) -> str:
    """The values as a unix-cron field; `*` only where `star` allows it (a day field written
    with a leading `*` would change how the two day fields combine)."""
    ordered = sorted(values)
    if star and len(ordered) == high - low + 1:
        return "*"
    steps = {b - a for a, b in pairwise(ordered)}
    if len(ordered) >= 3 and len(steps) == 1 and (step := steps.pop()) > 1:
        if star and ordered[0] == low and ordered[-1] + step > high:
            return f"*/{step}"
        return f"{ordered[0]}-{ordered[-1]}/{step}"
    return _runs(ordered)


def job_schedule(expr: str, timezone: str) -> tuple[str, str]:
    """The Cloud Scheduler schedule and time zone that fire a hub expression; `timezone` is the
    zone the hub evaluates an expression without a prefix in (UTC for every hub item)."""
    spec = cron_robfig.parse(expr)
    minute = _field(spec.minutes, 0, 59, star=True)
    hour = _field(spec.hours, 0, 23, star=True)
    month = _field(spec.months, 1, 12, star=True)
    if spec.dom_star or spec.dow_star:
        dom = "*" if spec.dom_star else _field(spec.doms, 1, 31, star=True)
        dow = "*" if spec.dow_star else _field(spec.dows, 0, 6, star=True)
    else:
        dom = _field(spec.doms, 1, 31, star=False) if spec.doms else "*"
        dow = _field(spec.dows, 0, 6, star=False) if spec.dows else "*"
    zone = spec.zone if spec.zone is not None else timezone
    return f"{minute} {hour} {dom} {month} {dow}", zone
