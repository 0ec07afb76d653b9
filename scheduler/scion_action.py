"""The built-in `scion` action: its parameters, and the hub's rules for an event's payload.

A `scion` action fires one of the hub's schedules or scheduled events (`worker.actions.scion`);
`scheduler.validation` checks its parameters with `check_action_params`, and
`scheduler.scion_format` applies the same payload rules to the hub's own JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from scheduler.model import parse_duration

ACTION_TYPE = "scion"
KIND_SCHEDULE = "schedule"
KIND_EVENT = "event"
KINDS: tuple[str, ...] = (KIND_SCHEDULE, KIND_EVENT)
EVENT_TYPES: tuple[str, ...] = ("message", "dispatch_agent")

# The hub's handlers give each event handler 30 s; the fire call waits a little longer so that
# a slow but successful dispatch is not cut off and retried.
DEFAULT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 1800.0

ACTION_FIELDS = frozenset({"type", "kind", "grove_id", "name", "event_type", "payload", "timeout"})


def parse_payload(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The hub stores `payload` as JSON text; an already-decoded object is accepted too. The
    hub requires a JSON object at the top level (`validateScheduledPayloadShape`)."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            return None, f"is not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return None, f"must be a JSON object (got {type(value).__name__})"
    return value, None


def _text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value.strip() else None


def check_event_payload(event_type: str, payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The hub's rules for an event's payload, as (payload field, reason) pairs.

    `message` (MessageEventPayload) needs `message` and `agentId` or `agentName`; `interrupt` and
    `plain` are booleans; a `raw` key is refused, as the hub's authoring path does, because
    scheduled delivery does not forward it. `dispatch_agent` (DispatchAgentEventPayload) needs
    `agentName`; `template`, `task` and `branch` are strings."""
    problems: list[tuple[str, str]] = []
    if event_type == "message":
        if _text(payload, "message") is None:
            problems.append(("message", "required for a message event: the text to send"))
        if _text(payload, "agentId") is None and _text(payload, "agentName") is None:
            problems.append(("agentName", "a message event needs agentId or agentName"))
        for key in ("agentId", "agentName", "message"):
            if key in payload and not isinstance(payload[key], str):
                problems.append((key, "must be a string"))
        for key in ("interrupt", "plain"):
            if key in payload and not isinstance(payload[key], bool):
                problems.append((key, "must be true or false"))
        if "raw" in payload:
            problems.append(("raw", "raw delivery is not supported for scheduled messages"))
    elif event_type == "dispatch_agent":
        if _text(payload, "agentName") is None:
            problems.append(
                ("agentName", "required for a dispatch_agent event: the agent to create")
            )
        for key in ("template", "task", "branch"):
            if key in payload and not isinstance(payload[key], str):
                problems.append((key, "must be a string"))
    return problems


def check_event(event_type: Any, raw_payload: Any, add: Callable[[str, str], None], *,
                type_field: str) -> dict[str, Any] | None:
    """An event's type (reported as `type_field`) and payload by the hub's rules, each problem
    handed to `add` as (field, reason); the payload, None when it is not a JSON object."""
    if event_type not in EVENT_TYPES:
        add(type_field,
            f"unsupported event type {event_type!r} (supported: {', '.join(EVENT_TYPES)})")
    payload, reason = parse_payload(raw_payload)
    if payload is None:
        add("payload", reason or "required")
        return None
    if event_type in EVENT_TYPES:
        for key, why in check_event_payload(event_type, payload):
            add(f"payload.{key}", why)
    return payload


def check_path_segment(value: Any, what: str) -> str | None:
    """Why `value` cannot be one segment of a hub URL path (the `what` it names), or None."""
    if not isinstance(value, str) or not value.strip():
        return f"required: the {what}"
    if not value.isprintable() or "/" in value or len(value) > 256:
        return f"must be printable text without '/', at most 256 characters (got {value!r})"
    return None


def check_action_params(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Validate the parameters of a `scion` action (native form), as (field, reason) pairs
    relative to the action; used by `scheduler.validation` for the `scion` action type."""
    problems: list[tuple[str, str]] = []
    params: dict[str, Any] = {}
    for key in sorted(set(raw) - ACTION_FIELDS):
        problems.append((key, "unknown field for a scion action"))
    kind = raw.get("kind", KIND_SCHEDULE)
    if kind not in KINDS:
        problems.append(
            (
                "kind",
                f"must be {KIND_SCHEDULE!r} (a recurring schedule) or {KIND_EVENT!r} "
                f"(a one-shot scheduled event) (got {kind!r})",
            )
        )
    params["kind"] = kind
    reason = check_path_segment(raw.get("grove_id"), "hub grove ID the schedule belongs to")
    if reason:
        problems.append(("grove_id", reason))
    params["grove_id"] = raw.get("grove_id")
    name = raw.get("name")
    if name is not None:
        if not isinstance(name, str):
            problems.append(("name", "must be a string"))
        params["name"] = name
    event_type = raw.get("event_type")
    params["event_type"] = event_type
    payload = check_event(event_type, raw.get("payload"),
                          lambda field, reason: problems.append((field, reason)),
                          type_field="event_type")
    if payload is not None:
        params["payload"] = payload
    if "timeout" in raw:
        try:
            seconds = parse_duration(raw["timeout"]).total_seconds()
            if not 0 < seconds <= MAX_TIMEOUT_S:
                raise ValueError("must be more than 0 and at most 30 minutes")
            params["timeout"] = seconds
        except ValueError as exc:
            problems.append(("timeout", str(exc)))
    return params, problems

