"""The checks of one schedule document's fields: each adds what is wrong to a collector that
names the schedule, the field and the reason (`scheduler.validation` assembles the `Schedule`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from scheduler import scion_action
from scheduler.cron import CRON_DIALECTS, CronDialect
from scheduler.egress import EgressPolicy, header_problem
from scheduler.model import Action, FieldError, parse_duration

# Built in (their handlers ship with the worker), so a schedule naming them validates even where
# the entry points are not installed (e.g. the control module run from a source tree).
BUILTIN_ACTION_TYPES = frozenset({"http", scion_action.ACTION_TYPE})
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_HTTP_FIELDS = frozenset({"type", "url", "method", "headers", "body", "timeout", "oidc_audience"})


class _Collector:
    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        self.errors: list[FieldError] = []

    def add(self, field_name: str, reason: str) -> None:
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


def _check_http_action(raw: Mapping[str, Any], c: _Collector) -> dict[str, Any]:
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


def _check_egress(params: Mapping[str, Any], c: _Collector, egress: EgressPolicy) -> None:
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


def _check_scion_action(raw: Mapping[str, Any], c: _Collector) -> dict[str, Any]:
    params, problems = scion_action.check_action_params(raw)
    for field_name, reason in problems:
        c.add(f"action.{field_name}", reason)
    return params


def _check_action(raw: Any, c: _Collector, known_types: frozenset[str],
                  egress: EgressPolicy) -> Action | None:
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



def _cron_dialect(raw: Mapping[str, Any], c: _Collector) -> CronDialect | None:
    """The schedule's cron dialect (None when it is not a valid one)."""
    value = raw.get("cron_dialect", CronDialect.UNIX.value)
    if value not in CRON_DIALECTS:
        c.add("cron_dialect", f"must be one of {', '.join(CRON_DIALECTS)} (got {value!r})")
        return None
    if value != CronDialect.UNIX.value and raw.get("cron") is None:
        c.add("cron_dialect", "applies to `cron` only; a one-shot `at` has no cron")
        return None
    return CronDialect(value)

