"""The built-in `scion` action against the reference hub (a real local HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.exceptions
import httpx
import pytest
from memory_ledger import MemoryLedger
from scion_hub_data import GROVE, envelope, event, new_id, schedule

from scheduler.config import Settings
from scheduler.contract import build_message, execution_id
from scheduler.model import Schedule
from scheduler.validation import schedules_from_data
from scion_scheduler.google_emulators import free_port
from scion_scheduler.reference_hub import ReferenceHub
from worker.action import ActionContext, ActionError, ActionRegistry
from worker.actions.http import IdTokenCache
from worker.actions.scion import ScionAction, fire_body, fire_url
from worker.egress_sender import Reply
from worker.ledger import State
from worker.pipeline import Pipeline
from worker.transport import Delivery, Outcome

FIRE_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKEN = "s3cret-token"


@pytest.fixture
def hub() -> Iterator[ReferenceHub]:
    with ReferenceHub(token=TOKEN) as running:
        yield running


def hub_schedule(item: dict[str, Any] | None = None) -> Schedule:
    (s,) = schedules_from_data([item or schedule()], format="scion").schedules
    return s


def context_for(s: Schedule, *, attempt: int = 1, fire_time: datetime = FIRE_TIME,
                trigger: str = "scheduled") -> ActionContext:
    return ActionContext(
        schedule_id=s.id, fire_time=fire_time, execution_id=execution_id(s.id, fire_time, trigger),
        trigger=trigger, attempt=attempt, params=s.action.params, labels=s.labels,
    )


def action_for(hub: ReferenceHub, **settings: Any) -> ScionAction:
    # The reference hub listens on loopback, which the egress policy refuses unless named.
    values = {"hub_url": hub.url, "hub_token": TOKEN, "allowed_targets": "127.0.0.1"} | settings
    return ScionAction(settings=Settings.from_env({}, **values))


# --------------------------------------------------------------------------- the request


def test_a_fire_reaches_the_schedules_endpoint_with_the_body_and_headers(hub: ReferenceHub) -> None:
    item = schedule(name="daily summary")
    s = hub_schedule(item)
    context = context_for(s, attempt=2)
    result = action_for(hub)(context)
    assert result is not None and result.state is State.SUCCEEDED and result.detail == "HTTP 200"
    (call,) = hub.calls
    assert (call.kind, call.grove_id, call.item_id) == ("schedule", GROVE, item["id"])
    assert call.idempotency_key == context.execution_id
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["x-scion-fire-time"] == "2026-03-02T09:00:00Z"
    assert call.body == {
        "scheduleId": item["id"], "kind": "schedule", "groveId": GROVE, "name": "daily summary",
        "eventType": "message", "payload": json.loads(item["payload"]),
        "fireTime": "2026-03-02T09:00:00Z", "executionId": context.execution_id,
        "trigger": "scheduled", "attempt": 2,
    }


def test_a_one_shot_event_reaches_the_scheduled_events_endpoint(hub: ReferenceHub) -> None:
    item = event(event_type="dispatch_agent")
    s = hub_schedule(item)
    action_for(hub)(context_for(s))
    (call,) = hub.calls
    assert (call.kind, call.item_id) == ("event", item["id"])
    assert call.body["kind"] == "event" and call.body["name"] is None
    assert call.body["eventType"] == "dispatch_agent"


def test_ids_are_percent_encoded_in_the_path() -> None:
    assert fire_url("https://hub.test/base/", "schedule", "p/1", "a b") == \
        "https://hub.test/base/api/v1/groves/p%2F1/schedules/a%20b/fire"
    assert fire_url("https://hub.test", "event", "p", "e").endswith("/scheduled-events/e/fire")


@pytest.mark.parametrize(("trigger", "heard"), [
    ("manual", "manual"), ("expired", "expired"), ("audit", "scheduled"),
    ("scheduled", "scheduled")])
def test_the_hub_hears_its_own_triggers(trigger: str, heard: str) -> None:
    """An audit recovery is the scheduled slot to the hub; an expired event stays `expired`, so
    the hub can mark the event as it would itself (docs/hub-fire-endpoint.md)."""
    s = hub_schedule()
    assert fire_body(context_for(s, trigger=trigger))["trigger"] == heard


# --------------------------------------------------------------------------- outcomes


def test_a_repeated_execution_is_a_duplicate_and_succeeds(hub: ReferenceHub) -> None:
    s = hub_schedule()
    action = action_for(hub)
    action(context_for(s))
    result = action(context_for(s, attempt=2))
    assert result is not None and (result.state, result.detail) == (State.SUCCEEDED, "duplicate")
    assert [c.status for c in hub.calls] == [200, 409]
    assert len(hub.fired()) == 1


def test_a_409_from_the_hub_is_recorded_as_a_duplicate(hub: ReferenceHub) -> None:
    hub.set_behaviour(409)
    result = action_for(hub)(context_for(hub_schedule()))
    assert result is not None and (result.state, result.detail) == (State.SUCCEEDED, "duplicate")


def test_a_gone_schedule_is_cancelled(hub: ReferenceHub) -> None:
    s = hub_schedule()
    hub.mark_gone(s.id)
    result = action_for(hub)(context_for(s))
    assert result is not None and result.state is State.CANCELLED
    assert result.detail == f"gone at the hub: Schedule {s.id} is gone"
    assert hub.calls[0].status == 410


def test_a_hub_that_skips_the_fire_records_it_skipped() -> None:
    answer = Reply(200, b'{"status": "skipped", "reason": "schedule is paused"}')
    action = ScionAction(FakeSender(answer),
                         settings=Settings.from_env({}, hub_url="http://127.0.0.1:9", hub_token="t",
                                                        allowed_targets="127.0.0.1"))
    result = action(context_for(hub_schedule()))
    assert result is not None and result.state is State.SKIPPED
    assert result.detail == "hub skipped it: schedule is paused"


@pytest.mark.parametrize(("status", "retryable"), [
    (500, True), (503, True), (429, True), (400, False), (403, False), (404, False), (422, False),
])
def test_errors_retry_on_5xx_and_429_and_fail_on_other_4xx(
        hub: ReferenceHub, status: int, retryable: bool) -> None:
    hub.set_behaviour(status)
    with pytest.raises(ActionError) as info:
        action_for(hub)(context_for(hub_schedule()))
    assert info.value.retryable is retryable
    assert f"HTTP {status}" in str(info.value)


def test_a_500_then_a_retry_fires_once(hub: ReferenceHub) -> None:
    s = hub_schedule()
    hub.set_behaviour(500, times=1)
    action = action_for(hub)
    with pytest.raises(ActionError):
        action(context_for(s))
    result = action(context_for(s, attempt=2))
    assert result is not None and result.detail == "HTTP 200"
    assert [c.status for c in hub.calls] == [500, 200]


def test_a_slow_hub_times_out_and_is_retried(hub: ReferenceHub) -> None:
    item = schedule()
    s = hub_schedule(item)
    hub.set_behaviour(delay=1.0, item_id=item["id"])
    params = dict(s.action.params) | {"timeout": 0.2}
    context = context_for(s)
    with pytest.raises(ActionError) as info:
        action_for(hub)(ActionContext(**{**context.__dict__, "params": params}))
    assert info.value.retryable and "timed out" in str(info.value)


def test_an_unreachable_hub_is_retried() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    action = ScionAction(settings=Settings.from_env({}, hub_url=url, hub_token="t",
                                                    allowed_targets="127.0.0.1"))
    with pytest.raises(ActionError) as info:
        action(context_for(hub_schedule()))
    assert info.value.retryable


def test_a_wrong_token_fails_without_retry(hub: ReferenceHub) -> None:
    with pytest.raises(ActionError) as info:
        action_for(hub, hub_token="wrong")(context_for(hub_schedule()))
    assert not info.value.retryable and "HTTP 401" in str(info.value)


def test_a_worker_without_hub_configuration_leaves_the_fire_to_a_retry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ActionError) as info:
        ScionAction(settings=Settings())(context_for(hub_schedule()))
    assert info.value.retryable and "SCION_HUB_URL" in str(info.value)
    monkeypatch.setenv("SCION_HUB_URL", "hub.example.com")  # no scheme: refused by the settings
    with pytest.raises(ActionError) as info:
        ScionAction()(context_for(hub_schedule()))
    assert info.value.retryable and "absolute http(s) base URL" in str(info.value)


# --------------------------------------------------------------------------- authentication


@dataclass(frozen=True)
class Sent:
    """A request a `FakeSender` was given; header names lowercased."""

    method: str
    url: str
    headers: dict[str, str]


FIRED = Reply(200, b'{"status": "fired"}')


class FakeSender:
    """Answers every request with `reply`, recording what it was given."""

    def __init__(self, reply: Reply = FIRED) -> None:
        self.reply = reply
        self.sent: list[Sent] = []

    def send(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
             timeout: float) -> Reply:
        self.sent.append(Sent(method, url, {k.lower(): v for k, v in headers.items()}))
        return self.reply

    def close(self) -> None:
        """Nothing to close."""


def _capturing() -> tuple[FakeSender, list[Sent]]:
    sender = FakeSender()
    return sender, sender.sent


def _recording_id_tokens(token: str) -> tuple[IdTokenCache, list[str]]:
    """An ID-token cache whose fetches give `token` (valid for an hour), and the audiences it
    fetched for."""
    audiences: list[str] = []

    def fetch(audience: str) -> tuple[str, datetime]:
        audiences.append(audience)
        return token, datetime.now(UTC) + timedelta(hours=1)

    return IdTokenCache(fetch), audiences


def test_without_a_token_a_google_id_token_for_the_hub_url_is_sent() -> None:
    id_tokens, audiences = _recording_id_tokens("id-token-1")
    client, seen = _capturing()
    action = ScionAction(client, settings=Settings.from_env({}, hub_url="https://hub.example.com/"),
                         id_tokens=id_tokens)
    action(context_for(hub_schedule()))
    action(context_for(hub_schedule(), fire_time=FIRE_TIME + timedelta(days=1)))
    assert [r.headers["authorization"] for r in seen] == ["Bearer id-token-1"] * 2
    assert audiences == ["https://hub.example.com"]  # fetched once, cached


def test_the_audience_can_be_set_apart_from_the_url() -> None:
    id_tokens, audiences = _recording_id_tokens("t")
    client, _ = _capturing()
    action = ScionAction(client, settings=Settings.from_env({}, hub_url="https://hub.internal",
                                                                hub_audience="https://hub.example.com"),
                         id_tokens=id_tokens)
    action(context_for(hub_schedule()))
    assert audiences == ["https://hub.example.com"]


def test_no_credentials_at_all_is_a_retryable_failure_of_this_worker() -> None:
    def fetch(audience: str) -> tuple[str, datetime]:
        raise google.auth.exceptions.DefaultCredentialsError("no ADC")

    client, seen = _capturing()
    action = ScionAction(client, settings=Settings.from_env({}, hub_url="https://hub.example.com"),
                         id_tokens=IdTokenCache(fetch))
    with pytest.raises(ActionError) as info:
        action(context_for(hub_schedule()))
    assert info.value.retryable and "SCION_HUB_TOKEN" in str(info.value)
    assert seen == []


def test_a_hub_on_loopback_needs_no_credentials() -> None:
    client, seen = _capturing()
    action = ScionAction(client, settings=Settings.from_env({}, hub_url="http://localhost:8080",
                                                                allowed_targets="localhost"),
                         id_tokens=IdTokenCache(lambda a: pytest.fail("no token needed")))
    action(context_for(hub_schedule()))
    assert "authorization" not in seen[0].headers


# --------------------------------------------------------------------------- through the pipeline


def test_registered_as_the_scion_entry_point() -> None:
    assert isinstance(ActionRegistry().get("scion"), ScionAction)


def _deliver(pipeline: Pipeline, s: Schedule, published_at: datetime) -> Outcome:
    message = build_message(s)
    return pipeline.handle(
        Delivery(new_id(), message.data, message.attributes, published_at)
    ).outcome


@pytest.mark.parametrize(("switch", "outcome", "state", "detail"), [
    (None, Outcome.SUCCEEDED, State.SUCCEEDED, "HTTP 200"),
    (409, Outcome.SUCCEEDED, State.SUCCEEDED, "duplicate"),
    (410, Outcome.CANCELLED, State.CANCELLED, "gone at the hub: answered by a switch"),
])
def test_the_pipeline_records_what_the_hub_answered(
        hub: ReferenceHub, switch: int | None, outcome: Outcome, state: State, detail: str) -> None:
    (s,) = schedules_from_data(
        envelope("schedules", [schedule(cron="* * * * *")]), format="scion"
    ).schedules
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ledger = MemoryLedger()
    pipeline = Pipeline(ledger, ActionRegistry({"scion": action_for(hub)}), worker_id="w1",
                        clock=lambda: now + timedelta(seconds=2))
    if switch is not None:
        hub.set_behaviour(switch)
    assert _deliver(pipeline, s, now) == outcome
    (record,) = ledger.history(s.id)
    assert (record.state, record.detail) == (state, detail)


def test_the_pipeline_retries_a_500_and_the_hub_fires_once(hub: ReferenceHub) -> None:
    (s,) = schedules_from_data([schedule(cron="* * * * *")], format="scion").schedules
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ledger = MemoryLedger()
    pipeline = Pipeline(ledger, ActionRegistry({"scion": action_for(hub)}), worker_id="w1",
                        clock=lambda: now + timedelta(seconds=2))
    hub.set_behaviour(500, times=1)
    assert _deliver(pipeline, s, now) == "retry"
    assert _deliver(pipeline, s, now) == "succeeded"
    assert _deliver(pipeline, s, now) == "duplicate"
    assert [c.status for c in hub.calls] == [500, 200]
    (record,) = ledger.history(s.id)
    assert (record.state, record.attempt) == (State.SUCCEEDED, 2)


# --------------------------------------------------------------------------- the reference hub itse


def test_the_reference_hub_is_driven_over_http_too(hub: ReferenceHub) -> None:
    with httpx.Client(base_url=hub.url) as client:
        assert (
            client.post("/_reference/behaviour", json={"status": 500, "times": 1}).status_code
            == 200
        )
        s = hub_schedule()
        with pytest.raises(ActionError):
            action_for(hub)(context_for(s))
        assert client.post("/_reference/gone", json={"item_id": s.id}).status_code == 200
        result = action_for(hub)(context_for(s))
        assert result is not None and result.state is State.CANCELLED
        calls = client.get("/_reference/calls").json()
        assert [c["status"] for c in calls] == [500, 410]
        assert calls[0]["headers"]["idempotency-key"] == calls[0]["body"]["executionId"]
        client.post("/_reference/reset")
        assert client.get("/_reference/calls").json() == []


def _fire_in_background(hub: ReferenceHub, s: Schedule) -> tuple[threading.Thread, list[Any]]:
    """Fire `s` from a thread; the list gets the result or the ActionError."""
    outcome: list[Any] = []

    def fire() -> None:
        try:
            outcome.append(action_for(hub)(context_for(s)))
        except ActionError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread, outcome


def test_a_held_request_is_answered_only_once_released(hub: ReferenceHub) -> None:
    held, other = hub_schedule(), hub_schedule(schedule(name="other"))
    hub.hold(held.id)
    thread, outcome = _fire_in_background(hub, held)
    hub.wait_for_arrival(held.id, timeout=30)
    action_for(hub)(context_for(other))  # a hold is for one item only
    assert [c.item_id for c in hub.calls] == [other.id] and outcome == []
    hub.release(held.id)
    thread.join(timeout=30)
    (result,) = outcome
    assert result.state is State.SUCCEEDED and result.detail == "HTTP 200"
    first, second = hub.calls
    assert second.item_id == held.id and first.received_at > second.received_at  # arrival time


def test_a_held_request_is_let_go_with_a_503_when_the_hub_stops() -> None:
    s = hub_schedule()
    with ReferenceHub(token=TOKEN) as hub:
        hub.hold(s.id)
        thread, outcome = _fire_in_background(hub, s)
        hub.wait_for_arrival(s.id, timeout=30)
    thread.join(timeout=30)
    (error,) = outcome
    assert isinstance(error, ActionError) and error.retryable and "HTTP 503" in str(error)


def test_holds_are_set_and_released_over_http_too(hub: ReferenceHub) -> None:
    s = hub_schedule()
    assert httpx.post(f"{hub.url}/_reference/hold", json={"item_id": s.id}).status_code == 200
    thread, outcome = _fire_in_background(hub, s)
    hub.wait_for_arrival(s.id, timeout=30)
    assert hub.calls == []
    assert httpx.post(f"{hub.url}/_reference/release", json={"item_id": s.id}).status_code == 200
    thread.join(timeout=30)
    assert [c.status for c in hub.calls] == [200] and outcome[0].state is State.SUCCEEDED


def test_the_reference_hub_checks_the_request_like_the_contract_says(hub: ReferenceHub) -> None:
    url = f"{hub.url}/api/v1/groves/p/schedules/s1/fire"
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k1"}
    body = {"scheduleId": "s1", "groveId": "p", "eventType": "message", "payload": {},
            "fireTime": "2026-03-02T09:00:00Z", "executionId": "k2", "trigger": "scheduled",
            "attempt": 1}
    assert httpx.post(url, json=body, headers=headers).status_code == 400  # key != executionId
    assert httpx.post(url, json=body | {"executionId": "k1", "groveId": "q"},
                      headers=headers).status_code == 400  # path and body disagree
    assert httpx.post(url, content=b"{", headers=headers).status_code == 400
    assert httpx.post(url, json=body | {"executionId": "k1"}, headers=headers).status_code == 200
    assert httpx.post(url, json=body | {"executionId": "k1"}, headers={}).status_code == 401


def test_the_reference_hub_records_plain_requests_as_the_local_stack_target(
    hub: ReferenceHub,
) -> None:
    """Any POST outside the fire endpoints is recorded as a plain `http` call and answered 200:
    the same server receives the http actions of `scion-scheduler up`."""
    answer = httpx.post(
        f"{hub.url}/ping", json={"hello": "scion"}, headers={"Idempotency-Key": "k1"}
    )
    assert answer.status_code == 200
    answer = httpx.post(f"{hub.url}/_reference/unknown", json={})
    assert answer.status_code == 404
    seen = [f"{c.kind} {c.item_id} {c.idempotency_key} {c.body}" for c in hub.calls]
    assert seen == ["http /ping k1 {'hello': 'scion'}"]
