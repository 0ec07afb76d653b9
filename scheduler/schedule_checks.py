"""The checks of one schedule document's fields: each adds what is wrong to a collector that
names the schedule, the field and the reason (`scheduler.validation` assembles the `Schedule`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from scheduler import scion_action
from scheduler.cron import CRON_DIALECTS, CronDialect, CronError, is_valid_timezone, validate_cron
from scheduler.egress import EgressPolicy, header_problem
from scheduler.model import (
    CATCHUP_POLICIES,
    DEFAULT_CATCHUP_WINDOW,
    DEFAULT_MAX_ATTEMPTS,
    OVERLAP_POLICIES,
    Action,
    Catchup,
    FieldError,
    Overlap,
    parse_duration,
    parse_instant,
)

# Built in (their handlers ship with the worker), so a schedule naming them validates even where
# the entry points are not installed (e.g. the control module run from a source tree).
BUILTIN_ACTION_TYPES = frozenset({"http", scion_action.ACTION_TYPE})
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_HTTP_FIELDS = frozenset({"type", "url", "method", "headers", "body", "timeout", "oidc_audience"})


class Collector:
    """The problems found in one schedule document, each naming the schedule by `schedule_id`."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        self.errors: list[FieldError] = []

    def add(self, field_name: str, reason: str) -> None:
        """One problem: the field and the reason."""
        self.errors.append(FieldError(self.schedule_id, field_name, reason))


def _url_problem(url: str) -> str | None:
    if any(char.isspace() or not char.isprintable() for char in url):
        return f"must not contain whitespace or control characters (got {url!r})"
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number from 0 to 65535 raises only when read
    except ValueError as exc:
        return f"is not a valid URL: {exc} (got {url!r})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an absolute http(s) URL (got {url!r})"
    return None


def _check_http_action(raw: Mapping[str, Any], c: Collector) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in sorted(set(raw) - _HTTP_FIELDS):
        c.add(f"action.{key}", "unknown field for an http action")
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        c.add("action.url", "required: the URL to call")
    else:
        problem = _url_problem(url)
        if problem:
            c.add("action.url", problem)
        params["url"] = url
    method = raw.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        c.add("action.method", f"must be one of {', '.join(HTTP_METHODS)} (got {method!r})")
    else:
        params["method"] = method.upper()
    headers = raw.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        c.add("action.headers", "must be a map of header names to string values")
    else:
        params["headers"] = dict(headers)
    if "body" in raw:
        params["body"] = raw["body"]
    if "oidc_audience" in raw:
        audience = raw["oidc_audience"]
        if not isinstance(audience, str) or not audience:
            c.add(
                "action.oidc_audience",
                "must be the non-empty audience of the OIDC ID token (e.g. the target's URL)",
            )
        else:
            params["oidc_audience"] = audience
    timeout = raw.get("timeout", 30)
    try:
        seconds = parse_duration(timeout).total_seconds()
        if not 0 < seconds <= 1800:
            raise ValueError("must be more than 0 and at most 30 minutes")
        params["timeout"] = seconds
    except ValueError as exc:
        c.add("action.timeout", str(exc))
    return params


def _check_egress(params: Mapping[str, Any], c: Collector, egress: EgressPolicy) -> None:
    """Refuse what the worker would refuse to send (see `scheduler.egress`), so that it never
    becomes a job: a target the policy refuses, by its text, and a header a schedule may not set."""
    url = params.get("url")
    malformed = any(error.field == "action.url" for error in c.errors)
    problem = egress.check_url(url) if isinstance(url, str) and not malformed else None
    if problem:
        c.add("action.url", f"{problem} (got {url!r})")
    for name in params.get("headers", {}):
        problem = header_problem(name, oidc=bool(params.get("oidc_audience")))
        if problem:
            c.add(f"action.headers.{name}", problem)


def _check_scion_action(raw: Mapping[str, Any], c: Collector) -> dict[str, Any]:
    params, problems = scion_action.check_action_params(raw)
    for field_name, reason in problems:
        c.add(f"action.{field_name}", reason)
    return params


def check_action(raw: Any, c: Collector, known_types: frozenset[str],
                 egress: EgressPolicy) -> Action | None:
    """The schedule's action, of a type in `known_types` or built in, its parameters checked by
    its type (an http target against `egress` too); None when it has no usable type."""
    if not isinstance(raw, Mapping):
        c.add("action", "required: an object with a `type`")
        return None
    action_type = raw.get("type")
    if not isinstance(action_type, str) or not action_type:
        c.add("action.type", "required: the action type (e.g. http)")
        return None
    if action_type not in known_types | BUILTIN_ACTION_TYPES:
        listed = ", ".join(sorted(known_types | BUILTIN_ACTION_TYPES))
        c.add("action.type", f"unknown action type {action_type!r} (registered: {listed})")
        return None
    if action_type == "http":
        params = _check_http_action(raw, c)
        _check_egress(params, c, egress)
    elif action_type == scion_action.ACTION_TYPE:
        params = _check_scion_action(raw, c)
    else:
        params = {k: v for k, v in raw.items() if k != "type"}
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        c.add("action", f"parameters must be JSON-compatible ({exc})")
    return Action(action_type, params)



def cron_dialect(raw: Mapping[str, Any], c: Collector) -> CronDialect | None:
    """The schedule's cron dialect (None when it is not a valid one)."""
    value = raw.get("cron_dialect", CronDialect.UNIX.value)
    if value not in CRON_DIALECTS:
        c.add("cron_dialect", f"must be one of {', '.join(CRON_DIALECTS)} (got {value!r})")
        return None
    if value != CronDialect.UNIX.value and raw.get("cron") is None:
        c.add("cron_dialect", "applies to `cron` only; a one-shot `at` has no cron")
        return None
    return CronDialect(value)



class Timing(NamedTuple):
    """When a schedule fires: its zone, and its `cron` (read in `dialect`) or its one-shot `at`."""

    timezone: str
    cron: str | None
    at: datetime | None
    dialect: CronDialect | None


def check_timing(raw: Mapping[str, Any], c: Collector) -> Timing:
    """The time zone, the cron dialect, and exactly one of `cron` or `at`."""
    timezone = raw.get("timezone", "UTC")
    if not isinstance(timezone, str) or not is_valid_timezone(timezone):
        c.add("timezone", f"unknown IANA time zone {timezone!r}")
        timezone = "UTC"
    cron, at = raw.get("cron"), raw.get("at")
    at_value: datetime | None = None
    dialect = cron_dialect(raw, c)
    if (cron is None) == (at is None):
        c.add("cron", "exactly one of `cron` (recurring) or `at` (one-shot) is required")
    elif cron is not None:
        if not isinstance(cron, str):
            c.add("cron", "must be a string such as '*/5 * * * *'")
        elif dialect is not None:
            try:
                validate_cron(cron, dialect)
            except CronError as exc:
                c.add("cron", str(exc))
    else:
        at_value = _instant(at, c)
    return Timing(timezone, cron, at_value, dialect)


def _instant(at: Any, c: Collector) -> datetime | None:
    if isinstance(at, datetime):
        if at.tzinfo is None:
            c.add("at", "must carry a UTC offset")
            return None
        return at.astimezone(UTC)
    if isinstance(at, str):
        try:
            return parse_instant(at)
        except ValueError as exc:
            c.add("at", str(exc))
            return None
    c.add("at", "must be an RFC 3339 instant such as 2026-01-31T09:00:00Z")
    return None


class Policies(NamedTuple):
    """How a schedule's fires are run: paused, overlap and catch-up, attempts."""

    paused: bool
    overlap: Overlap
    catchup: Catchup
    catchup_window: timedelta
    max_attempts: int


def _default_catchup(action: Any) -> str:
    """The hub's own scheduler never replays missed occurrences, so its schedules (the `scion`
    action) catch up with `latest` unless they say otherwise; everything else with `all`."""
    is_scion = isinstance(action, Mapping) and action.get("type") == scion_action.ACTION_TYPE
    return "latest" if is_scion else "all"


def check_policies(raw: Mapping[str, Any], c: Collector) -> Policies:
    """`paused`, `overlap`, `catchup`, `catchup_window` and `max_attempts`, with their defaults."""
    paused = raw.get("paused", False)
    if not isinstance(paused, bool):
        c.add("paused", "must be true or false")
    overlap = raw.get("overlap", "skip")
    if overlap not in OVERLAP_POLICIES:
        c.add("overlap", f"must be one of {', '.join(OVERLAP_POLICIES)} (got {overlap!r})")
    catchup = raw.get("catchup", _default_catchup(raw.get("action")))
    if catchup not in CATCHUP_POLICIES:
        c.add("catchup", f"must be one of {', '.join(CATCHUP_POLICIES)} (got {catchup!r})")
    catchup_window = DEFAULT_CATCHUP_WINDOW
    if "catchup_window" in raw:
        try:
            catchup_window = parse_duration(raw["catchup_window"])
        except ValueError as exc:
            c.add("catchup_window", str(exc))
    max_attempts = raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= 100
    ):
        c.add("max_attempts", f"must be a whole number from 1 to 100 (got {max_attempts!r})")
    return Policies(paused, overlap, catchup, catchup_window, max_attempts)


def check_labels_and_description(raw: Mapping[str, Any],
                                 c: Collector) -> tuple[dict[str, str], str]:
    """`labels` (strings to strings) and `description` (Cloud Scheduler's 500 characters)."""
    labels = raw.get("labels", {})
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        c.add("labels", "must be a map of strings to strings")
        labels = {}
    description = raw.get("description", "")
    if not isinstance(description, str):
        c.add("description", "must be a string")
    elif len(description) > 500:
        c.add("description", "must be at most 500 characters (Cloud Scheduler's limit)")
    return dict(labels), description
