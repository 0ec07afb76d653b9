"""A reference Scion hub: the real hub's grove routes, plus the fire endpoints it will add.

For tests and the local demo. Two parts:

* the hub's own schedule and scheduled-event API under `/api/v1/groves/{groveId}/`, with its
  JSON, error body and listing limits (`scion_scheduler.reference_hub_groves`); seed a grove
  with `hub.groves.put_schedule(item)` / `put_event(item)` or through the API itself;
* the fire endpoints of `docs/hub-fire-endpoint.md`, implemented the way the real hub must (one
  fire per execution ID, 409 for a repeat, 410 for an item that is gone, a one-shot event fires
  once; `GET` on a fire endpoint is the probe: 401 or 405). `fire_endpoint=False` is today's
  hub, which has none: the routers answer as the real ones do (404 "Schedule action not found",
  405 for an event's POST).

Every fire call is recorded. Switches make it answer 409, 410, 500, any other status, or slowly,
for every item or one, always or for the next N calls; a hold keeps every request for one item
unanswered until it is released, so a test can act (kill the caller) while the hub is known to
have the request and not to have answered it.

Run it with `scion-scheduler reference-hub --port N`; from another process, read the calls with
`GET /_reference/calls`, set a switch with `POST /_reference/behaviour` (JSON `{"status": 500,
"delay": 2.5, "item_id": "...", "times": 1}`), mark an item gone with `POST /_reference/gone`
(`{"item_id": "..."}`), hold and release an item's requests with `POST /_reference/hold` and
`POST /_reference/release` (`{"item_id": "..."}`), and start over with `POST /_reference/reset`.

A request of any method to any other path (outside `/_reference/` and `/api/v1/groves/`) is
recorded as a plain `http` call (its path as the item, its method kept) and answered 200, so the
same server is the recording target of the `http` actions in the local stack's examples.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from scheduler.logs import get_logger
from scion_scheduler.reference_hub_groves import (
    METHOD_NOT_ALLOWED,
    UNAUTHORIZED,
    Answer,
    GroveStore,
    ListingLimits,
    error_answer,
    go_json,
    route,
)
from scion_scheduler.reference_hub_http import ReferenceHubHandler

log = get_logger(__name__)

FIRE_PATH = re.compile(
    r"^/api/v1/groves/(?P<grove>[^/]+)/(?P<collection>schedules|scheduled-events)/"
    r"(?P<item>[^/]+)/fire$"
)
KINDS = {"schedules": "schedule", "scheduled-events": "event"}
REQUIRED_BODY_FIELDS = ("scheduleId", "groveId", "eventType", "payload", "fireTime",
                        "executionId", "trigger", "attempt")


def _error(code: str, message: str) -> dict[str, Any]:
    """The hub's error body (pkg/hub/errors.go:30-41)."""
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True)
class FireCall:
    """One request to a fire endpoint, as received, and the status the hub answered.
    `received_at` is when the request arrived, before any switched delay or hold."""

    kind: str
    grove_id: str
    item_id: str
    headers: Mapping[str, str]
    body: Any
    status: int
    received_at: str
    method: str = "POST"

    @property
    def idempotency_key(self) -> str | None:
        """The `Idempotency-Key` header."""
        return self.headers.get("idempotency-key")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for `GET /_reference/calls`)."""
        return asdict(self) | {"headers": dict(self.headers)}


@dataclass
class Behaviour:
    """A switch: answer `status` (None: answer as the contract says) after `delay` seconds, for
    `item_id` (None: every item), for the next `times` calls (None: until changed)."""

    status: int | None = None
    delay: float = 0.0
    item_id: str | None = None
    times: int | None = None


@dataclass
class _State:
    calls: list[FireCall] = field(default_factory=list)
    arrivals: list[str] = field(default_factory=list)          # item IDs, as requests arrive
    executions: dict[str, str] = field(default_factory=dict)   # execution ID -> item ID
    fired_events: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    behaviours: list[Behaviour] = field(default_factory=list)


class ReferenceHub:
    """The server; `url` is its base URL once started. Thread-safe."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 on_call: Callable[[FireCall], None] | None = None, fire_endpoint: bool = True,
                 limits: ListingLimits | None = None) -> None:
        self._address = (host, port)
        self._token = token
        self.fire_endpoint = fire_endpoint
        self._limits = limits or ListingLimits()
        self.groves = GroveStore(self._limits, on_gone=self.mark_gone)
        self._on_call = on_call
        self._lock = threading.Condition()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> ReferenceHub:
        """Listen and serve in a background thread."""
        hub = self

        class Handler(ReferenceHubHandler):
            reference_hub = hub

        with self._lock:
            self._stopping = False
        self._server = ThreadingHTTPServer(self._address, Handler)
        self._server.daemon_threads = True
        # A short poll keeps stop() quick; the loop only checks its shutdown flag then.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="reference-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; held requests are let go (answered 503)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ReferenceHub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://host:port`, the value for SCION_HUB_URL."""
        if self._server is None:
            raise RuntimeError("the reference hub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ----------------------------------------------------------------- switches and records

    def set_behaviour(self, status: int | None = None, *, delay: float = 0.0,
                      item_id: str | None = None, times: int | None = None) -> None:
        """Add a switch; the newest matching switch wins. See `Behaviour`."""
        with self._lock:
            self._state.behaviours.append(Behaviour(status, delay, item_id, times))

    def clear_behaviours(self) -> None:
        """Answer as the contract says again."""
        with self._lock:
            self._state.behaviours.clear()

    def mark_gone(self, item_id: str) -> None:
        """The item was deleted (schedule) or cancelled (event): its fires get 410."""
        with self._lock:
            self._state.gone.add(item_id)

    def hold(self, item_id: str) -> None:
        """Keep every fire request for `item_id` unanswered, once it has arrived (see
        `wait_for_arrival`), until `release(item_id)`, `reset()` or `stop()`. A released request
        is then answered as usual, even if its caller has gone meanwhile: the hub cannot tell
        that a caller died, which is the case the idempotency rule is for."""
        with self._lock:
            self._state.held.add(item_id)

    def release(self, item_id: str) -> None:
        """Let the held requests for `item_id`, and any later ones, be answered."""
        with self._lock:
            self._state.held.discard(item_id)
            self._lock.notify_all()

    def reset(self) -> None:
        """Forget every call, execution, switch, hold, gone item and grove."""
        with self._lock:
            self._state = _State()
            self.groves = GroveStore(self._limits, on_gone=self.mark_gone)
            self._lock.notify_all()

    @property
    def calls(self) -> list[FireCall]:
        """Every call received, in order."""
        with self._lock:
            return list(self._state.calls)

    def fired(self, item_id: str | None = None) -> list[FireCall]:
        """The calls that fired (answered 2xx), optionally of one item."""
        return [c for c in self.calls if 200 <= c.status < 300 and item_id in (None, c.item_id)]

    def wait_for_arrival(self, item_id: str, timeout: float) -> None:
        """Block until a fire request for `item_id` has arrived (before any switched delay or
        hold, so a test can act while the hub has not answered yet); `TimeoutError` otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while item_id not in self._state.arrivals:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"reference hub: no request for {item_id} in {timeout}s")
                self._lock.wait(remaining)

    def wait_for(
        self, predicate: Callable[[list[FireCall]], bool], timeout: float
    ) -> list[FireCall]:
        """Block until `predicate(calls)` holds (returns the calls) or `timeout` passes
        (raises `TimeoutError` with the calls seen)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(list(self._state.calls)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"reference hub: condition not met in {timeout}s; calls: "
                                       f"{[(c.item_id, c.status) for c in self._state.calls]}")
                self._lock.wait(remaining)
            return list(self._state.calls)

    # ----------------------------------------------------------------- the contract

    def _authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        expected = f"Bearer {self._token}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def _behaviour_for(self, item_id: str) -> Behaviour | None:
        for behaviour in reversed(self._state.behaviours):
            if behaviour.item_id in (None, item_id):
                if behaviour.times is not None:
                    behaviour.times -= 1
                    if behaviour.times <= 0:
                        self._state.behaviours.remove(behaviour)
                return behaviour
        return None

    def handle_fire(self, kind: str, grove_id: str, item_id: str, headers: Mapping[str, str],
                    raw_body: bytes) -> tuple[int, dict[str, Any]]:
        """Decide the answer to one fire request and record it (the handler's whole logic)."""
        body: Any = None
        status, answer = HTTPStatus.OK, {}
        try:
            body = json.loads(raw_body.decode("utf-8")) if raw_body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            status, answer = HTTPStatus.BAD_REQUEST, _error("invalid_request", "body is not JSON")
        received_at = datetime.now(UTC).isoformat()
        with self._lock:
            self._state.arrivals.append(item_id)
            self._lock.notify_all()
            while item_id in self._state.held and not self._stopping:
                self._lock.wait()
            stopping = self._stopping
            behaviour = None if stopping else self._behaviour_for(item_id)
        if behaviour is not None and behaviour.delay > 0:
            time.sleep(behaviour.delay)
        with self._lock:
            if stopping:
                status = HTTPStatus.SERVICE_UNAVAILABLE
                answer = _error("unavailable", "the hub is stopping")
            # A switched answer changes nothing: after a switched 500 the retry still fires.
            elif behaviour is not None and behaviour.status is not None:
                status = HTTPStatus(behaviour.status)
                answer = _error("switched", "answered by a switch")
            elif status == HTTPStatus.OK:
                status, answer = self._decide(kind, grove_id, item_id, headers, body)
            call = FireCall(kind, grove_id, item_id, dict(headers), body, int(status), received_at)
            self._state.calls.append(call)
            self._lock.notify_all()
        fire_time = body.get("fireTime") if isinstance(body, dict) else None
        log.info("reference hub: fire", kind=kind, grove_id=grove_id, schedule_id=item_id,
                 fire_time=fire_time, execution_id=call.idempotency_key, status=int(status))
        if self._on_call is not None:
            self._on_call(call)
        return int(status), answer

    def handle_plain(self, path: str, headers: Mapping[str, str], raw_body: bytes,
                     method: str = "POST") -> int:
        """Record a request to any other path as a plain `http` call and answer 200."""
        try:
            body: Any = json.loads(raw_body.decode("utf-8")) if raw_body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = raw_body.decode("utf-8", errors="replace")
        call = FireCall(
            "http",
            "",
            path,
            dict(headers),
            body,
            int(HTTPStatus.OK),
            datetime.now(UTC).isoformat(),
            method,
        )
        with self._lock:
            self._state.arrivals.append(path)
            self._state.calls.append(call)
            self._lock.notify_all()
        log.info(
            "reference hub: request", method=method, path=path, execution_id=call.idempotency_key
        )
        if self._on_call is not None:
            self._on_call(call)
        return int(HTTPStatus.OK)

    def handle_grove(self, method: str, target: str, headers: Mapping[str, str],
                     raw_body: bytes) -> Answer:
        """Answer a request under `/api/v1/groves/`: a fire (`POST` to a fire endpoint), the
        fire endpoint's probe (any other method: 401, or 405 with `Allow: POST`, nothing loaded
        or fired), or the hub's schedule API; with `fire_endpoint` off, today's hub, whose
        routers answer the fire paths as they answer any unknown path."""
        parts = urlsplit(target)
        fire = FIRE_PATH.match(parts.path)
        if fire and self.fire_endpoint and method == "POST":
            status, answer = self.handle_fire(KINDS[fire["collection"]], unquote(fire["grove"]),
                                              unquote(fire["item"]), headers, raw_body)
            return status, go_json(answer), {}
        # The hub authenticates before it routes (handlers_schedules.go:67-72).
        if not self._authorized(headers.get("authorization")):
            return UNAUTHORIZED
        if fire and self.fire_endpoint:
            return METHOD_NOT_ALLOWED[0], METHOD_NOT_ALLOWED[1], {"Allow": "POST"}
        try:
            body = json.loads(raw_body) if raw_body else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error_answer(400, "invalid_request", f"Invalid request body: {exc}")
        with self._lock:
            return route(self.groves, method, parts.path, parts.query, body, "reference-hub-user")

    def _decide(self, kind: str, grove_id: str, item_id: str, headers: Mapping[str, str],
                body: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        if not self._authorized(headers.get("authorization")):
            return HTTPStatus.UNAUTHORIZED, _error("unauthorized", "Authentication required")
        key = headers.get("idempotency-key")
        if not isinstance(body, dict) or any(f not in body for f in REQUIRED_BODY_FIELDS):
            return HTTPStatus.BAD_REQUEST, _error(
                "invalid_request", f"body must be an object with {', '.join(REQUIRED_BODY_FIELDS)}")
        if not key or key != body.get("executionId"):
            return HTTPStatus.BAD_REQUEST, _error("invalid_request",
                                                  "Idempotency-Key must equal executionId")
        if body.get("scheduleId") != item_id or body.get("groveId") != grove_id:
            return HTTPStatus.BAD_REQUEST, _error("invalid_request",
                                                  "scheduleId and groveId must match the path")
        if item_id in self._state.gone:
            what = "Schedule" if kind == "schedule" else "Scheduled event"
            return HTTPStatus.GONE, _error("gone", f"{what} {item_id} is gone")
        if key in self._state.executions:
            return HTTPStatus.CONFLICT, _error("conflict", f"execution {key} was already handled")
        if kind == "event" and item_id in self._state.fired_events:
            return HTTPStatus.CONFLICT, _error("conflict", "event already fired")
        self._state.executions[key] = item_id
        if kind == "event":
            self._state.fired_events.add(item_id)
        return HTTPStatus.OK, {"status": "fired", "executionId": key}
