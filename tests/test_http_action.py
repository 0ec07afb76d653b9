"""The built-in `http` action against a real local HTTP server that records every request.

The server listens on loopback, which the egress policy refuses unless named: every action here
names it (`LOOPBACK`) and sends through the real egress client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import google.auth.exceptions
import pytest
import structlog
from memory_ledger import MemoryLedger
from structlog.testing import capture_logs

from scheduler.contract import build_message, execution_id
from scheduler.egress import EgressPolicy
from scheduler.model import Action, Schedule, ValidationError
from scheduler.validation import parse_schedule, registered_action_types
from worker.action import ActionContext, ActionError, ActionRegistry, ActionResult
from worker.actions.http import HttpAction, IdTokenCache
from worker.egress_sender import Reply
from worker.ledger import State
from worker.pipeline import Pipeline
from worker.transport import Delivery, Outcome

FIRE_TIME = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LOOPBACK = EgressPolicy.parse("127.0.0.1")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    """The local server: `/status/N` answers N; `/slow` answers only when the test ends;
    `/drop` reads the request and closes the connection without an answer."""

    base: str
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def target() -> Iterator[Target]:
    holder: list[Target] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            t = holder[0]
            t.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
            if self.path == "/slow":
                t.release.wait(10)
                status = 200
            elif self.path == "/drop":
                self.close_connection = True
                return
            else:
                status = (
                    int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 200
                )
            payload = f"status {status}: " + "detail " * 100
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/status/200")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Target(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def action() -> Iterator[HttpAction]:
    handler = HttpAction(egress=LOOPBACK, id_tokens=IdTokenCache(
        fetch=lambda audience: pytest.fail("no token expected")))
    yield handler
    handler.close()


def context(
    params: dict[str, Any], *, schedule_id: str = "team/report", attempt: int = 1
) -> ActionContext:
    return ActionContext(
        schedule_id=schedule_id, fire_time=FIRE_TIME,
        execution_id=execution_id(schedule_id, FIRE_TIME), trigger="scheduled", attempt=attempt,
        params=params, labels={},
    )


def test_request_carries_the_body_and_the_fire_headers(target: Target, action: HttpAction) -> None:
    params = {"url": f"{target.base}/status/201", "method": "POST", "body": {"report": "daily"},
              "headers": {"X-Team": "ops"}, "timeout": 5.0}
    result = action(context(params, attempt=3))
    assert result == ActionResult(State.SUCCEEDED, "HTTP 201")
    [request] = target.requests
    assert request.method == "POST" and json.loads(request.body) == {"report": "daily"}
    assert request.headers["Idempotency-Key"] == execution_id("team/report", FIRE_TIME)
    assert request.headers["X-Scion-Schedule-Id"] == "team/report"
    assert request.headers["X-Scion-Fire-Time"] == "2026-03-02T10:00:00Z"
    assert request.headers["X-Scion-Trigger"] == "scheduled"
    assert request.headers["X-Scion-Attempt"] == "3"
    assert request.headers["X-Team"] == "ops"
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers


def test_a_schedules_own_content_type_is_sent_once_as_it_is() -> None:
    sent: list[Mapping[str, str]] = []

    class Capturing:
        def send(self, method: str, url: str, *, headers: Mapping[str, str],
                 body: bytes | None, timeout: float) -> Reply:
            sent.append(headers)
            return Reply(200, b"")

        def close(self) -> None:
            """Nothing to close."""

    action = HttpAction(Capturing(), egress=LOOPBACK)
    action(context({"url": "http://127.0.0.1:9/", "body": {"a": 1},
                    "headers": {"content-type": "application/vnd.report+json"}}))
    [headers] = sent
    assert [v for k, v in headers.items() if k.lower() == "content-type"] == [
        "application/vnd.report+json"]


def test_get_without_body_sends_none(target: Target, action: HttpAction) -> None:
    action(context({"url": f"{target.base}/status/200", "method": "GET"}))
    assert target.requests[0].method == "GET" and target.requests[0].body == b""


def test_non_ascii_schedule_id_is_percent_encoded_reversibly(
    target: Target, action: HttpAction
) -> None:
    sid = "équipe/rapport 100%"
    action(context({"url": f"{target.base}/status/200"}, schedule_id=sid))
    header = target.requests[0].headers["X-Scion-Schedule-Id"]
    assert header.isascii() and unquote(header) == sid


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (401, False), (404, False), (409, False), (422, False), (302, False),
    (429, True), (500, True), (502, True), (503, True),
])
def test_status_classification(
    target: Target, action: HttpAction, status: int, retryable: bool
) -> None:
    with pytest.raises(ActionError) as failure:
        action(context({"url": f"{target.base}/status/{status}"}))
    assert failure.value.retryable is retryable
    message = str(failure.value)
    assert f"HTTP {status}" in message and f"status {status}: detail" in message
    assert len(message) < 400  # a short excerpt of the body, not all of it
    assert len(target.requests) == 1  # redirects are not followed, nothing is retried here


@pytest.mark.parametrize("status", [200, 202, 204])
def test_2xx_succeeds(target: Target, action: HttpAction, status: int) -> None:
    assert action(context({"url": f"{target.base}/status/{status}"})) == ActionResult(
        detail=f"HTTP {status}"
    )


def test_timeout_is_retryable(target: Target, action: HttpAction) -> None:
    with pytest.raises(ActionError, match="timed out") as failure:
        action(context({"url": f"{target.base}/slow", "timeout": 0.2}))
    assert failure.value.retryable


def test_connection_refused_is_retryable(action: HttpAction) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ActionError) as failure:
        action(context({"url": f"http://127.0.0.1:{port}/"}))
    assert failure.value.retryable


def test_a_connection_lost_after_the_request_was_sent_is_retryable(
        target: Target, action: HttpAction) -> None:
    """The target may have acted; the retry carries the same Idempotency-Key."""
    with pytest.raises(ActionError, match="closed connection without response") as failure:
        action(context({"url": f"{target.base}/drop"}))
    assert failure.value.retryable
    assert [r.path for r in target.requests] == ["/drop"]


def test_missing_url_fails_without_retry(action: HttpAction) -> None:
    with pytest.raises(ActionError) as failure:
        action(context({}))
    assert not failure.value.retryable


# OIDC ID tokens.

class FakeTokens:
    def __init__(self, lifetime: timedelta = timedelta(hours=1)) -> None:
        self.fetched: list[str] = []
        self.lifetime = lifetime
        self.now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

    def fetch(self, audience: str) -> tuple[str, datetime]:
        self.fetched.append(audience)
        return f"secret-token-{len(self.fetched)}", self.now + self.lifetime


def test_oidc_token_is_sent_and_cached_until_near_expiry(target: Target) -> None:
    tokens = FakeTokens()
    action = HttpAction(egress=LOOPBACK,
                        id_tokens=IdTokenCache(tokens.fetch, clock=lambda: tokens.now))
    params = {"url": f"{target.base}/status/200", "oidc_audience": "https://svc.example"}
    action(context(params))
    action(context(params))
    tokens.now += timedelta(minutes=56)  # within the refresh margin of the 1 h token
    action(context(params))
    action.close()
    assert tokens.fetched == ["https://svc.example", "https://svc.example"]
    assert [r.headers["Authorization"] for r in target.requests] == [
        "Bearer secret-token-1", "Bearer secret-token-1", "Bearer secret-token-2"]


@pytest.mark.parametrize(("error", "retryable"), [
    (google.auth.exceptions.DefaultCredentialsError("no credentials"), False),
    (google.auth.exceptions.RefreshError("metadata server busy"), True),
])
def test_oidc_token_failure(target: Target, error: Exception, retryable: bool) -> None:
    def fetch(audience: str) -> tuple[str, datetime]:
        raise error

    action = HttpAction(egress=LOOPBACK, id_tokens=IdTokenCache(fetch))
    with pytest.raises(ActionError) as failure:
        action(context({"url": f"{target.base}/status/200", "oidc_audience": "aud"}))
    assert failure.value.retryable is retryable
    assert target.requests == []


def test_oidc_audience_passes_validation() -> None:
    raw = {
        "id": "s",
        "cron": "* * * * *",
        "action": {
            "type": "http",
            "url": "https://svc.example/run",
            "oidc_audience": "https://svc.example",
        },
    }
    assert parse_schedule(raw).action.params["oidc_audience"] == "https://svc.example"
    raw["action"]["oidc_audience"] = ""
    with pytest.raises(ValidationError) as failure:
        parse_schedule(raw)
    assert [e.field for e in failure.value.errors] == ["action.oidc_audience"]


# Registration and the pipeline.

def test_http_is_registered_through_the_entry_point_group() -> None:
    assert "http" in registered_action_types()
    handler = ActionRegistry().get("http")
    assert isinstance(handler, HttpAction)
    handler.close()


def test_through_the_pipeline_the_token_is_never_logged(target: Target) -> None:
    tokens = FakeTokens()
    schedule = Schedule(id="s1", cron="*/5 * * * *", max_attempts=2, action=Action("http", {
        "url": f"{target.base}/status/503", "method": "POST", "headers": {}, "timeout": 5.0,
        "oidc_audience": "https://svc.example"}))
    message = build_message(schedule, signing_key="k")
    handler = HttpAction(egress=LOOPBACK, id_tokens=IdTokenCache(tokens.fetch))
    pipeline = Pipeline(MemoryLedger(), ActionRegistry({"http": handler}), worker_id="w1",
                        signing_key="k", clock=lambda: FIRE_TIME + timedelta(seconds=2))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        item = Delivery("m1", message.data, message.attributes, FIRE_TIME + timedelta(seconds=1))
        assert pipeline.handle(item).outcome == Outcome.RETRY
        assert pipeline.handle(item).outcome == Outcome.FAILED
    handler.close()
    assert len(target.requests) == 2
    assert {r.headers["Idempotency-Key"] for r in target.requests} == {
        execution_id("s1", FIRE_TIME)
    }
    assert [r.headers["X-Scion-Attempt"] for r in target.requests] == ["1", "2"]
    assert logs and "secret-token" not in repr(logs)
