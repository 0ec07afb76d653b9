"""The reference hub's grove routes: the real hub's schedule and scheduled-event API, as it is.

Routes, answers and JSON follow the hub at commit 770980cb (GoogleCloudPlatform/scion):

* `GET|POST /api/v1/groves/{groveId}/schedules`, `GET|PATCH|DELETE .../schedules/{id}`
  (`pkg/hub/handlers_schedules.go:65-137`); an unknown action under a schedule answers
  `404 {"error":{"code":"not_found","message":"Schedule action not found"}}` (line 135);
* `GET|POST /api/v1/groves/{groveId}/scheduled-events`, `GET|DELETE .../scheduled-events/{id}`
  (`pkg/hub/handlers_scheduled_events.go:61-101`): the event router takes the whole rest of the
  path as the ID, so `{id}/fire` is an event ID there (GET: not found; POST: 405);
* every answer is written the way Go's `json.Encoder` writes the hub's structs
  (`pkg/hub/server.go:2268-2272`): struct field order, `omitempty` fields left out, times in
  RFC 3339 with trailing zeros of the fraction trimmed, `<`, `>` and `&` escaped, a newline at
  the end, and a nil slice (nothing matched) as `null`; errors as
  `{"error":{"code","message"}}` (`pkg/hub/errors.go:30-41, 75-95`).

The listing limits of the hub's SQLite store are on by default (`ListingLimits`): `limit` is
capped at 200 for both listings; the schedule listing never reads `cursor`, so asking for page 2
returns page 1 again (`pkg/store/sqlite/schedule.go:154-193`); the event listing filters
`id < cursor` but orders by `created_at`, so over random UUIDs its pages skip and repeat items
(`pkg/store/sqlite/scheduled_event.go:189-248`). `ListingLimits(real_cursors=False)` is the hub
with the cursor mended (keyset paging in the listing's own order), for tests of a hub that can be
read whole.

Items may be stored as given (`GroveStore.put_schedule`, `put_event`): the hub validates little
(a PATCH sets event type, status and payload unchecked, `handlers_schedules.go:334-342`), so a
real grove can hold items this project refuses.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

# The store's cap on `limit` (schedule.go:158-160, scheduled_event.go:194-196) and the handler's
# default when none is given (handlers_schedules.go:261, handlers_scheduled_events.go:243).
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
EVENT_TYPES = ("message", "dispatch_agent")

GROVE_PATH = re.compile(r"^/api/v1/groves/(?P<grove>[^/]+)/(?P<rest>.*)$")

Answer = tuple[int, bytes, dict[str, str]]


@dataclass(frozen=True)
class ListingLimits:
    """Which of the hub's listing limits are on. `real_cursors`: the schedule listing ignores
    `cursor` and the event listing pages by `id < cursor` over a `created_at` order, as the
    hub's store does; off, both page correctly. `max_limit`: the store's cap on `limit`."""

    real_cursors: bool = True
    max_limit: int = MAX_LIMIT


def go_time(value: datetime) -> str:
    """A time as Go's `time.Time.MarshalJSON` writes it (RFC 3339 with nanoseconds, trailing
    zeros of the fraction trimmed, `Z` for UTC)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{value.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def go_json(value: Any) -> bytes:
    """`value` as Go's `json.NewEncoder(w).Encode` writes it: compact, HTML characters escaped,
    non-ASCII text as UTF-8, and a trailing newline."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return (text + "\n").encode()


def error_answer(status: int, code: str, message: str) -> Answer:
    """The hub's error body (`writeError`, pkg/hub/errors.go:75-95)."""
    return status, go_json({"error": {"code": code, "message": message}}), {}


def not_found(resource: str) -> Answer:
    """`NotFound(w, resource)` (pkg/hub/errors.go:162-165)."""
    return error_answer(404, "not_found", f"{resource} not found")


# `writeErrorFromErr` for store.ErrNotFound (pkg/hub/errors.go:104-107).
RESOURCE_NOT_FOUND = error_answer(404, "not_found", "Resource not found")
METHOD_NOT_ALLOWED = error_answer(405, "method_not_allowed", "Method not allowed")
UNAUTHORIZED = error_answer(401, "unauthorized", "Authentication required")


def _validation_error(message: str) -> Answer:
    return error_answer(400, "validation_error", message)


def _json_answer(status: int, value: Any) -> Answer:
    return status, go_json(value), {}


@dataclass
class _Row:
    """One stored item: the hub's JSON for it, and its place in the `created_at` order."""

    item: dict[str, Any]
    created: datetime
    seq: int


def _created(item: Mapping[str, Any], fallback: datetime) -> datetime:
    value = item.get("createdAt")
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else fallback
    except ValueError:
        return fallback


@dataclass
class GroveStore:
    """Schedules and scheduled events of every grove, as the hub stores and lists them."""

    limits: ListingLimits = field(default_factory=ListingLimits)
    schedules: dict[str, _Row] = field(default_factory=dict)
    events: dict[str, _Row] = field(default_factory=dict)
    on_gone: Callable[[str], None] = lambda item_id: None
    _seq: int = 0

    def _row(self, item: dict[str, Any]) -> _Row:
        self._seq += 1
        return _Row(item, _created(item, datetime.now(UTC)), self._seq)

    def put_schedule(self, item: Mapping[str, Any]) -> None:
        """Store a schedule exactly as given (the hub's JSON of one `Schedule`)."""
        self.schedules[str(item["id"])] = self._row(dict(item))

    def put_event(self, item: Mapping[str, Any]) -> None:
        """Store a scheduled event exactly as given (the hub's JSON of one `ScheduledEvent`)."""
        self.events[str(item["id"])] = self._row(dict(item))

    # ----------------------------------------------------------------- listings

    def _page(self, rows: list[_Row], query: Mapping[str, str], *, events: bool) -> dict[str, Any]:
        total = len(rows)
        limit = DEFAULT_LIMIT
        raw = query.get("limit", "")
        if raw.lstrip("-").isdigit() and int(raw) > 0:
            limit = int(raw)
        limit = min(limit, self.limits.max_limit)
        # ORDER BY created_at DESC
        rows = sorted(rows, key=lambda r: (r.created, r.seq), reverse=True)
        cursor = query.get("cursor", "")
        if cursor and self.limits.real_cursors and events:
            rows = [r for r in rows if str(r.item.get("id")) < cursor]  # scheduled_event.go:208-226
        elif cursor and not self.limits.real_cursors:
            ids = [str(r.item.get("id")) for r in rows]
            rows = rows[ids.index(cursor) + 1:] if cursor in ids else []
        # (the real schedule listing never reads the cursor: schedule.go:162-171)
        page = rows[:limit + 1]
        items = [r.item for r in page[:limit]] or None  # a nil slice is `null`
        out: dict[str, Any] = {"events" if events else "schedules": items}
        if len(page) > limit:
            out["nextCursor"] = page[limit - 1].item.get("id")
        if total:
            out["totalCount"] = total
        out["serverTime"] = go_time(datetime.now(UTC))
        return out

    def list_schedules(self, grove: str, query: Mapping[str, str]) -> dict[str, Any]:
        """`ListSchedulesResponse` (handlers_schedules.go:57-63, 251-283; schedule.go:120-196)."""
        status, name = query.get("status", ""), query.get("name", "")
        rows = [r for r in self.schedules.values() if r.item.get("groveId") == grove
                and (r.item.get("status") == status if status
                     else r.item.get("status") != "deleted")
                and (not name or r.item.get("name") == name)]
        return self._page(rows, query, events=False)

    def list_events(self, grove: str, query: Mapping[str, str]) -> dict[str, Any]:
        """`ListScheduledEventsResponse` (handlers_scheduled_events.go:53-59, 233-265)."""
        wanted = {k: query.get(k, "") for k in ("eventType", "status")}
        rows = [r for r in self.events.values() if r.item.get("groveId") == grove
                and all(not v or r.item.get(k) == v for k, v in wanted.items())]
        return self._page(rows, query, events=True)

    # ----------------------------------------------------------------- single items

    def create_schedule(self, grove: str, body: Any, created_by: str) -> Answer:
        """`createSchedule` (handlers_schedules.go:139-249), the raw-payload form; the cron
        expression is not parsed here (the hub parses it with robfig/cron, lines 165-171)."""
        if not isinstance(body, dict):
            return error_answer(400, "invalid_request", "Invalid request body")
        for key in ("name", "cronExpr", "eventType"):
            if not body.get(key):
                return _validation_error(f"{key} is required")
        if body["eventType"] not in EVENT_TYPES:
            return _validation_error(f"unsupported event type: {body['eventType']} "
                                     "(supported: message, dispatch_agent)")
        now = datetime.now(UTC)
        item = {
            "id": str(uuid.uuid4()), "groveId": grove, "name": body["name"],
            "cronExpr": body["cronExpr"], "eventType": body["eventType"],
            "payload": body.get("payload", ""), "status": "active",
            "nextRunAt": go_time(now + timedelta(minutes=1)), "runCount": 0, "errorCount": 0,
            "createdAt": go_time(now), "createdBy": created_by, "updatedAt": go_time(now),
        }
        if not created_by:
            del item["createdBy"]  # omitempty (models.go:1091)
        self.put_schedule(item)
        return _json_answer(201, item)

    def create_event(self, grove: str, body: Any, created_by: str) -> Answer:
        """`createScheduledEvent` (handlers_scheduled_events.go:103-231), `fireAt` form."""
        if not isinstance(body, dict):
            return error_answer(400, "invalid_request", "Invalid request body")
        if body.get("eventType") not in EVENT_TYPES:
            return _validation_error("eventType is required" if not body.get("eventType") else
                                     f"unsupported event type: {body['eventType']} "
                                     "(supported: message, dispatch_agent)")
        try:
            fire_at = datetime.fromisoformat(str(body.get("fireAt", "")).replace("Z", "+00:00"))
        except ValueError:
            return _validation_error("fireAt must be a valid ISO 8601 / RFC 3339 timestamp")
        if fire_at.tzinfo is None or fire_at < datetime.now(UTC):
            return _validation_error("fireAt must be in the future")
        item = {
            "id": str(uuid.uuid4()), "groveId": grove, "eventType": body["eventType"],
            "fireAt": go_time(fire_at), "payload": body.get("payload", ""), "status": "pending",
            "createdAt": go_time(datetime.now(UTC)), "createdBy": created_by,
        }
        self.put_event(item)
        return _json_answer(201, item)

    def _schedule_in(self, grove: str, schedule_id: str) -> dict[str, Any] | Answer:
        row = self.schedules.get(schedule_id)
        if row is None:
            return RESOURCE_NOT_FOUND
        if row.item.get("groveId") != grove:
            return not_found("Schedule")
        return row.item

    def schedule_item(self, grove: str, schedule_id: str, method: str, body: Any) -> Answer:
        """GET, PATCH (fields set unchecked but the cron, lines 301-350) and DELETE (the row is
        removed, schedule.go:280-294) of one schedule."""
        found = self._schedule_in(grove, schedule_id)
        if not isinstance(found, dict):
            return found
        if method == "GET":
            return _json_answer(200, found)
        if method == "DELETE":
            del self.schedules[schedule_id]
            self.on_gone(schedule_id)
            return 204, b"", {}
        if not isinstance(body, dict):
            return error_answer(400, "invalid_request", "Invalid request body")
        for key in ("name", "cronExpr", "eventType", "payload", "status"):
            if isinstance(body.get(key), str) and body[key]:
                found[key] = body[key]
        found["updatedAt"] = go_time(datetime.now(UTC))
        return _json_answer(200, found)

    def schedule_action(self, grove: str, schedule_id: str, action: str, method: str) -> Answer:
        """`pause`, `resume` (POST, handlers_schedules.go:372-437) and `history` (GET, the
        schedule's own event rows, lines 439-478)."""
        if method != ("GET" if action == "history" else "POST"):
            return METHOD_NOT_ALLOWED
        found = self._schedule_in(grove, schedule_id)
        if not isinstance(found, dict):
            return found
        if action == "history":
            rows = [r for r in self.events.values() if r.item.get("scheduleId") == schedule_id]
            return _json_answer(200, self._page(rows, {}, events=True))
        before, after = ("active", "paused") if action == "pause" else ("paused", "active")
        if found.get("status") != before:
            return _validation_error(f"only {before} schedules can be {action}d")
        found["status"] = after
        return _json_answer(200, found)

    def event_item(self, grove: str, event_id: str, method: str) -> Answer:
        """GET and DELETE (cancel: pending only, scheduled_event.go:134-153) of one event."""
        row = self.events.get(event_id)
        if row is None:
            return RESOURCE_NOT_FOUND
        if row.item.get("groveId") != grove:
            return not_found("Scheduled event")
        if method == "GET":
            return _json_answer(200, row.item)
        if row.item.get("status") != "pending":
            return RESOURCE_NOT_FOUND
        row.item["status"] = "cancelled"
        self.on_gone(event_id)
        return 204, b"", {}


def parse_query(raw: str) -> dict[str, str]:
    """The first value of each query parameter, as Go's `url.Values.Get` reads it."""
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _collection(method: str, listing: Callable[[], dict[str, Any]],
                create: Callable[[], Answer]) -> Answer:
    """A collection route: GET lists, POST creates, anything else is 405."""
    if method == "GET":
        return _json_answer(200, listing())
    return create() if method == "POST" else METHOD_NOT_ALLOWED


def route(store: GroveStore, method: str, path: str, query: str, body: Any,
          created_by: str) -> Answer:
    """Answer one request under `/api/v1/groves/{groveId}/` (schedules and scheduled events;
    the fire endpoints are the caller's); `path` is still percent-encoded."""
    match = GROVE_PATH.match(path)
    if match is None:
        return not_found("Resource")
    grove, rest = unquote(match["grove"]), match["rest"]
    params = parse_query(query)
    if rest.startswith("scheduled-events"):
        event_path = unquote(rest.removeprefix("scheduled-events").removeprefix("/"))
        if not event_path:
            return _collection(method, lambda: store.list_events(grove, params),
                               lambda: store.create_event(grove, body, created_by))
        if method in ("GET", "DELETE"):
            return store.event_item(grove, event_path, method)
        return METHOD_NOT_ALLOWED
    if rest.startswith("schedules"):
        schedule_path = rest.removeprefix("schedules").removeprefix("/")
        if not schedule_path:
            return _collection(method, lambda: store.list_schedules(grove, params),
                               lambda: store.create_schedule(grove, body, created_by))
        schedule_id, _, action = schedule_path.partition("/")
        if action in ("pause", "resume", "history"):
            return store.schedule_action(grove, unquote(schedule_id), action, method)
        if action:
            return not_found("Schedule action")  # handlers_schedules.go:134-135
        if method in ("GET", "PATCH", "DELETE"):
            return store.schedule_item(grove, unquote(schedule_id), method, body)
        return METHOD_NOT_ALLOWED
    return not_found("Resource")

