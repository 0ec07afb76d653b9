"""The built-in `scion` action: fire a hub schedule back into the Scion hub.

`POST {SCION_HUB_URL}/api/v1/groves/{groveId}/schedules/{id}/fire` for a recurring
schedule, `.../scheduled-events/{id}/fire` for a one-shot event, with the JSON body and headers
of `docs/hub-fire-endpoint.md`: `Idempotency-Key` is the execution ID, so the hub runs each fire
once however often it is delivered, retried or taken over.

Authentication, in this order: `SCION_HUB_TOKEN` as a bearer token; none for a hub on loopback
(the reference hub of the local demo); else a Google-signed OIDC ID token for
`SCION_HUB_AUDIENCE` (default: the hub URL), from the environment's credentials (the metadata
server on GCP), cached until shortly before it expires and never logged.

A worker that cannot call the hub (no SCION_HUB_URL, a malformed setting, no credentials) fails
the fire *retryably*: the problem is this replica's configuration, and a redelivery may reach a
replica that is configured; after `max_attempts` the fire is recorded failed with the reason.
The hub's URL goes through the egress policy (`SCION_SCHEDULER_ALLOWED_TARGETS`) like any
target: refused, the fire fails without retry and nothing is sent.

Outcomes (docs/hub-fire-endpoint.md): 2xx succeeded (`{"status": "skipped"}` in the answer
records `skipped`: the hub chose not to run it, e.g. the schedule is paused there); 409 succeeded
as a duplicate (the hub already handled this execution); 410 Gone cancelled (the schedule or event
is gone at the hub; the next sync removes its job); 429, 5xx, timeouts and connection errors are
retried; every other status fails without retry. A 404 in particular is never `cancelled`: a hub
without the fire endpoint answers the route itself with 404 (`NotFound(w, "Schedule action")`,
pkg/hub/handlers_schedules.go:135), and an event's fire with 405 (`MethodNotAllowed`,
pkg/hub/handlers_scheduled_events.go:99), so recording either as "gone" would silently drop every
fire of a hub that was never upgraded. When the answer is that route-not-found, the worker logs
"the hub has no fire endpoint" once.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from scheduler.config import ConfigError, Settings
from scheduler.logs import get_logger
from scheduler.model import format_instant
from scheduler.redaction import excerpt
from scheduler.scion_action import DEFAULT_TIMEOUT_S, KIND_EVENT, KIND_SCHEDULE
from worker.action import ActionContext, ActionError, ActionResult
from worker.actions.http import IdTokenCache, send
from worker.egress_sender import EgressSender, Reply, Sender
from worker.ledger import State

log = get_logger(__name__)

COLLECTIONS = {KIND_SCHEDULE: "schedules", KIND_EVENT: "scheduled-events"}
NO_FIRE_ENDPOINT = "the hub has no fire endpoint"
# What a hub without the fire endpoint answers a POST to it (pkg/hub/errors.go:162-165, 200-204):
# the schedule router's unknown action (handlers_schedules.go:134-135), and the event router, which
# takes "{id}/fire" for an event ID and allows no POST on it (handlers_scheduled_events.go:92-99).
_ROUTE_NOT_FOUND = {
    KIND_SCHEDULE: (404, "not_found", "Schedule action not found"),
    KIND_EVENT: (405, "method_not_allowed", "Method not allowed"),
}


def fire_url(base_url: str, kind: str, grove_id: str, item_id: str) -> str:
    """The fire endpoint of one hub item; path segments are percent-encoded."""
    collection = COLLECTIONS[kind]
    return (f"{base_url.rstrip('/')}/api/v1/groves/{quote(grove_id, safe='')}/{collection}/"
            f"{quote(item_id, safe='')}/fire")


def fire_body(context: ActionContext) -> dict[str, Any]:
    """The request body of the fire endpoint (see docs/hub-fire-endpoint.md)."""
    params = context.params
    return {
        "scheduleId": context.schedule_id,
        "kind": params.get("kind", KIND_SCHEDULE),
        "groveId": params.get("grove_id"),
        "name": params.get("name"),
        "eventType": params.get("event_type"),
        "payload": params.get("payload"),
        "fireTime": format_instant(context.fire_time),
        "executionId": context.execution_id,
        "trigger": _hub_trigger(context.trigger),
        "attempt": context.attempt,
    }


def _hub_trigger(trigger: str) -> str:
    """The hub's triggers (docs/hub-fire-endpoint.md): `scheduled`, `manual` and `expired` (a
    past-due event, which the hub marks expired); a slot the audit recovered is the scheduled
    slot, under the same execution ID, so the hub hears `scheduled`."""
    return trigger if trigger in ("manual", "expired") else "scheduled"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hub_error(body: bytes) -> tuple[str | None, str | None]:
    """`error.code` and `error.message` of the hub's error body (pkg/hub/errors.go:30-41)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None, None
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else None, message if isinstance(message, str) else None)


def is_route_not_found(kind: str, status: int, body: bytes) -> bool:
    """True when `status` and `body` are what a hub without the fire endpoint answers a POST to
    the fire endpoint of a `kind` item: the hub's own routers, not an answer about the item."""
    expected = _ROUTE_NOT_FOUND.get(kind)
    return expected is not None and (status, *_hub_error(body)) == expected


def _hub_status(response: Reply) -> tuple[str | None, str | None]:
    """`status` and `reason` from a JSON answer, when there is one."""
    try:
        answer = response.json()
    except ValueError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    status, reason = answer.get("status"), answer.get("reason")
    return (
        status if isinstance(status, str) else None,
        reason if isinstance(reason, str) else None,
    )


# Hub base URLs whose missing fire endpoint this process has logged: once per hub and process,
# however many actions the registry made (its lazy load may race) and however many fires fail.
_NO_ENDPOINT_LOGGED: set[str] = set()
_NO_ENDPOINT_LOCK = threading.Lock()


def _first_time(base_url: str) -> bool:
    with _NO_ENDPOINT_LOCK:
        first = base_url not in _NO_ENDPOINT_LOGGED
        _NO_ENDPOINT_LOGGED.add(base_url)
    return first


def _gone_reason(response: Reply) -> str:
    _, message = _hub_error(response.content)
    return message or "no reason given"


class ScionAction:
    """The `scion` action handler; one instance per worker, sharing its idle connections."""

    def __init__(self, sender: Sender | None = None, *, settings: Settings | None = None,
                 id_tokens: IdTokenCache | None = None) -> None:
        self._config_error: str | None = None
        if settings is None:
            try:
                settings = Settings.from_env()
            except ConfigError as exc:
                self._config_error = str(exc)
                settings = Settings()
        self._base_url = settings.hub_url
        self._token = settings.hub_token
        self._audience = settings.hub_audience or (settings.hub_url or "").rstrip("/")
        # The hub's URL goes through the egress policy like any target.
        self._sender = sender if sender is not None else EgressSender(settings.allowed_targets)
        self._id_tokens = id_tokens if id_tokens is not None else IdTokenCache()

    def __call__(self, context: ActionContext) -> ActionResult | None:
        """Call the hub's fire endpoint; see the module docstring for the outcomes."""
        if self._config_error is not None:
            raise ActionError(f"scion action: {self._config_error}", retryable=True)
        if not self._base_url:
            raise ActionError(
                "scion action: SCION_HUB_URL is not set on this worker", retryable=True
            )
        params = context.params
        kind, grove_id = params.get("kind", KIND_SCHEDULE), params.get("grove_id")
        if kind not in COLLECTIONS or not isinstance(grove_id, str) or not grove_id:
            raise ActionError(f"scion action: bad parameters kind={kind!r} grove_id={grove_id!r}",
                              retryable=False)
        url = fire_url(self._base_url, kind, grove_id, context.schedule_id)
        fire = {"schedule_id": context.schedule_id, "fire_time": format_instant(context.fire_time),
                "execution_id": context.execution_id, "attempt": context.attempt}
        response = send(self._sender, "POST", url, headers=self._headers(context),
                        json=fire_body(context),
                        timeout=float(params.get("timeout", DEFAULT_TIMEOUT_S)))
        status = response.status_code
        log.info("scion action: hub answered", url=url, status=status, **fire)
        if 200 <= status < 300:
            hub_status, reason = _hub_status(response)
            if hub_status == "skipped":
                return ActionResult(State.SKIPPED,
                                    f"hub skipped it: {excerpt(reason or 'no reason given')}")
            return ActionResult(detail=f"HTTP {status}")
        if status == 409:
            return ActionResult(State.SUCCEEDED, "duplicate")
        if status == 410:
            return ActionResult(State.CANCELLED, f"gone at the hub: {_gone_reason(response)}")
        if is_route_not_found(kind, status, response.content):
            if _first_time(self._base_url):
                log.error(f"scion action: {NO_FIRE_ENDPOINT}; every scion fire fails until the "
                          "hub implements docs/hub-fire-endpoint.md (check with `scion-scheduler "
                          "hub check`)", url=url, status=status, **fire)
            raise ActionError(f"POST {url}: HTTP {status}: {NO_FIRE_ENDPOINT} "
                              f"({response.text[:200].strip()})", retryable=False)
        retryable = status == 429 or status >= 500
        raise ActionError(f"POST {url}: HTTP {status}: {excerpt(response.text)}",
                          retryable=retryable)

    def _headers(self, context: ActionContext) -> dict[str, str]:
        headers = {
            "Idempotency-Key": context.execution_id,
            "X-Scion-Schedule-Id": quote(context.schedule_id, safe=""),
            "X-Scion-Fire-Time": format_instant(context.fire_time),
            "X-Scion-Trigger": _hub_trigger(context.trigger),
            "X-Scion-Attempt": str(context.attempt),
        }
        assert self._base_url is not None
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        elif not _is_loopback(self._base_url):
            headers["Authorization"] = f"Bearer {self._id_token()}"
        return headers

    def _id_token(self) -> str:
        import google.auth.exceptions

        try:
            return self._id_tokens.get(self._audience)
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ActionError(
                f"scion action: no credentials for an OIDC token and no SCION_HUB_TOKEN: {exc}",
                retryable=True,
            ) from exc
        except Exception as exc:
            raise ActionError(f"scion action: could not fetch an OIDC token: {type(exc).__name__}",
                              retryable=True) from exc

    def close(self) -> None:
        """Close the idle connections."""
        self._sender.close()
