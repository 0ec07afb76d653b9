"""The egress policy at send time, against real local servers, and what is kept of a refusal.

Names are resolved through an injected hosts-style resolver (`hosts`), so "a name that resolves to
the metadata server" needs no DNS; everything else is real: the worker's egress sender, its
connections, a server that answers 302 to 169.254.169.254, the pipeline and its ledger (helpers:
`egress_cases`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import scion_hub_data
from egress_cases import FIRE_TIME, METADATA_TOKEN_URL, PUBLIC_ONLY, REFUSED_BY_DEFAULT, SECRET
from memory_ledger import MemoryLedger

from scheduler.config import Settings
from scheduler.contract import build_message, execution_id
from scheduler.egress import EgressPolicy
from scheduler.model import Action, Schedule
from scheduler.redaction import EXCERPT_CHARS, excerpt, redact, redact_log_fields
from scheduler.validation import schedules_from_data
from worker.action import ActionContext, ActionError, ActionRegistry
from worker.actions import builtin_handlers
from worker.actions.http import HttpAction, IdTokenCache
from worker.actions.scion import ScionAction
from worker.egress_sender import EgressRefused, EgressSender
from worker.ledger import State
from worker.ledger_rules import truncate_error
from worker.pipeline import Pipeline
from worker.transport import Delivery, Outcome

# --------------------------------------------------------------------------- fixtures


@dataclass
class Server:
    """A local HTTP server: `/redirect` answers 302 to the metadata server, `/leak` 500 with a
    token in its body, anything else 200. Records each request's path and Host header."""

    port: int
    hits: list[tuple[str, str]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    holder: list[Server] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            holder[0].hits.append((self.path, self.headers.get("Host", "")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = b"ok"
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", METADATA_TOKEN_URL)
            elif self.path == "/leak":
                self.send_response(500)
                body = (f'{{"access_token": "{SECRET}", "token_type": "Bearer", '
                        f'"detail": "{"x" * 500}"}}').encode()
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    holder.append(Server(httpd.server_address[1]))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


class Hosts:
    """A hosts-file-style resolver: names map to fixed addresses; each lookup is recorded."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.table.get(host, [host])


def context(params: dict[str, Any], schedule_id: str = "ssrf") -> ActionContext:
    return ActionContext(schedule_id=schedule_id, fire_time=FIRE_TIME,
                         execution_id=execution_id(schedule_id, FIRE_TIME), trigger="scheduled",
                         attempt=1, params=params)


def http_action(policy: EgressPolicy, resolve: Callable[[str, int], list[str]]) -> HttpAction:
    """The http action as a worker builds it, resolving names through `resolve`."""
    tokens = IdTokenCache(lambda audience: ("id-token", FIRE_TIME + timedelta(hours=1)))
    return HttpAction(EgressSender(policy, resolve=resolve), egress=policy, id_tokens=tokens)


# --------------------------------------------------------------------------- at send time


@pytest.mark.parametrize(("url", "_reason"), REFUSED_BY_DEFAULT)
def test_the_worker_refuses_each_kind_without_resolving_or_sending(url: str, _reason: str) -> None:
    hosts = Hosts({})
    with pytest.raises(ActionError, match="egress policy") as failure:
        http_action(PUBLIC_ONLY, hosts)(context({"url": url}))
    assert not failure.value.retryable and hosts.lookups == []


@pytest.mark.parametrize("address", ["169.254.169.254", "127.0.0.1", "10.0.0.7", "::1",
                                     "fd00:ec2::254", "::ffff:127.0.0.1"])
def test_a_name_that_resolves_to_a_refused_address_is_refused(server: Server, address: str) -> None:
    hosts = Hosts({"rebind.test": [address]})
    with pytest.raises(ActionError, match=r"rebind\.test resolves to") as failure:
        http_action(EgressPolicy.parse("*"), hosts)(
            context({"url": server.url("/ok", "rebind.test")}))
    assert not failure.value.retryable
    assert hosts.lookups == ["rebind.test"] and server.hits == []


def test_every_address_is_checked_and_the_checked_one_is_connected_to(server: Server) -> None:
    # One refused address among public ones refuses the name: which one a later lookup would
    # return is the rebinding attacker's choice, so none may be refused.
    hosts = Hosts({"mixed.test": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(ActionError, match=r"127\.0\.0\.1"):
        http_action(EgressPolicy.parse("*"), hosts)(context({"url": server.url("/", "mixed.test")}))
    assert server.hits == []
    # A name named exactly may resolve to loopback: the connection goes to the address that was
    # checked, resolved once, and the request keeps the name as its Host.
    hosts = Hosts({"hub.test": ["127.0.0.1"]})
    action = http_action(EgressPolicy.parse("hub.test"), hosts)
    action(context({"url": server.url("/ok", "hub.test")}))
    assert hosts.lookups == ["hub.test"]
    assert server.hits == [("/ok", f"hub.test:{server.port}")]


def test_a_redirect_to_the_metadata_server_is_not_followed(server: Server) -> None:
    hosts = Hosts({})
    action = http_action(EgressPolicy.parse("127.0.0.1"), hosts)
    with pytest.raises(ActionError, match="HTTP 302") as failure:
        action(context({"url": server.url("/redirect")}))
    assert not failure.value.retryable
    assert server.hits == [("/redirect", f"127.0.0.1:{server.port}")]
    assert hosts.lookups == ["127.0.0.1"]  # never 169.254.169.254


def test_a_caller_that_follows_a_redirect_has_the_hop_checked(server: Server) -> None:
    hosts = Hosts({})
    sender = EgressSender(EgressPolicy.parse("127.0.0.1"), resolve=hosts)
    answer = sender.send("GET", server.url("/redirect"), headers={}, body=None, timeout=5)
    assert answer.status_code == 302  # answered as it is; its Location is the metadata server
    with pytest.raises(EgressRefused, match="the URL is not in SCION_SCHEDULER_ALLOWED"):
        sender.send("GET", METADATA_TOKEN_URL, headers={}, body=None, timeout=5)
    assert hosts.lookups == ["127.0.0.1"]
    sender.close()


@pytest.mark.parametrize(("headers", "oidc"), [
    ({"Metadata-Flavor": "Google"}, False), ({"Host": "metadata.google.internal"}, False),
    ({"Connection": "Upgrade", "Upgrade": "h2c"}, False), ({"Authorization": "Bearer x"}, True),
])
def test_the_worker_refuses_a_forbidden_header_without_sending(
        server: Server, headers: dict[str, str], oidc: bool) -> None:
    params: dict[str, Any] = {"url": server.url("/ok"), "headers": headers}
    if oidc:
        params["oidc_audience"] = "https://svc.example"
    with pytest.raises(ActionError, match="may not be set") as failure:
        http_action(EgressPolicy.parse("127.0.0.1"), Hosts({}))(context(params))
    assert not failure.value.retryable and server.hits == []


def test_the_sender_refuses_a_host_header_for_another_host(server: Server) -> None:
    sender = EgressSender(EgressPolicy.parse("127.0.0.1"))
    url = server.url("/ok")
    with pytest.raises(EgressRefused, match="Host header") as refused:
        sender.send("GET", url, headers={"Host": "metadata.google.internal"}, body=None, timeout=5)
    assert not refused.value.retryable
    # Every header validation refuses as a metadata server's is refused at send time too.
    for name in ("Metadata-Flavor", "X-Google-Metadata-Request", "Metadata"):
        with pytest.raises(EgressRefused, match="metadata-server header"):
            sender.send("GET", url, headers={name: "true"}, body=None, timeout=5)
    assert sender.send("GET", url, headers={}, body=None, timeout=5).status_code == 200
    sender.close()
    assert server.hits == [("/ok", f"127.0.0.1:{server.port}")]


@pytest.mark.parametrize(("url", "headers", "reason"), [
    # The stored error is redacted, and a URL's last segment ("/token: refused") is no secret.
    (METADATA_TOKEN_URL, {}, "token: refused by the egress policy: the URL calls a link-local"),
    ("https://hub.example.com/", {"Metadata-Flavor": "Google"}, "may not be set"),
])
def test_an_old_job_reaching_a_worker_is_recorded_failed_and_never_sent(
        url: str, headers: dict[str, str], reason: str) -> None:
    # Built without validation: a job made before the policy, or under a looser one.
    schedule = Schedule(id="ssrf", cron="* * * * *", max_attempts=5, action=Action("http", {
        "url": url, "method": "GET", "headers": headers, "timeout": 5.0}))
    message = build_message(schedule, signing_key="k")
    hosts = Hosts({})
    ledger = MemoryLedger()
    pipeline = Pipeline(ledger, ActionRegistry({"http": http_action(PUBLIC_ONLY, hosts)}),
                        worker_id="w1", signing_key="k",
                        clock=lambda: FIRE_TIME + timedelta(seconds=2))
    delivery = Delivery("m1", message.data, message.attributes, FIRE_TIME + timedelta(seconds=1))
    assert pipeline.handle(delivery).outcome == Outcome.FAILED  # on the first attempt: no retry
    record = ledger.get(execution_id("ssrf", FIRE_TIME))
    assert record is not None and record.state is State.FAILED
    assert record.error is not None and reason in record.error
    assert hosts.lookups == []


def test_the_scion_action_sends_the_hubs_url_through_the_policy(server: Server) -> None:
    hub = f"http://127.0.0.1:{server.port}"
    (item,) = schedules_from_data([scion_hub_data.schedule()], format="scion").schedules
    fire = context(dict(item.action.params), schedule_id=item.id)
    refused = ScionAction(settings=Settings.from_env({}, hub_url=hub, hub_token="t"))
    with pytest.raises(ActionError, match="egress policy") as failure:
        refused(fire)
    assert not failure.value.retryable and server.hits == []
    named = ScionAction(settings=Settings.from_env({}, hub_url=hub, hub_token="t",
                                                   allowed_targets=f"{hub}/"))
    named(fire)
    [(path, _)] = server.hits
    assert path.endswith(f"/schedules/{item.id}/fire")


def test_the_workers_builtin_actions_take_the_policy_from_the_resolved_settings(
        server: Server) -> None:
    # What `scion-worker --allowed-targets ... run` builds: flags, not only the environment.
    handlers = builtin_handlers(Settings.from_env({}, allowed_targets="127.0.0.1"))
    handlers["http"](context({"url": server.url("/ok")}))
    with pytest.raises(ActionError, match="egress policy"):
        builtin_handlers(Settings())["http"](context({"url": server.url("/ok")}))
    assert len(server.hits) == 1


# --------------------------------------------------------------------------- what is kept


def test_history_and_logs_keep_a_short_redacted_excerpt(server: Server) -> None:
    with pytest.raises(ActionError) as failure:
        action = http_action(EgressPolicy.parse("127.0.0.1"), Hosts({}))
        action(context({"url": server.url("/leak")}))
    message = str(failure.value)
    assert "HTTP 500" in message and SECRET not in message and "[REDACTED]" in message
    assert len(message) < len(server.url("/leak")) + EXCERPT_CHARS + 40


@pytest.mark.parametrize("secret", [
    "Authorization: Bearer abc.def-ghi", '{"access_token": "ya29.zzz"}', '{"id_token":"eyJhbGc"}',
    "https://maps.example.com/x?key=AIzaSyA-1234567890&x=1", "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIi",
    "api_key=s3cr3t", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
])
def test_credentials_are_redacted_wherever_text_is_kept(secret: str) -> None:
    kept = [redact(secret), excerpt(secret), truncate_error(secret) or "",
            str(redact_log_fields(None, "info", {"error": secret})["error"])]
    for text in kept:
        assert "[REDACTED]" in text
        for part in ("abc.def", "ya29.zzz", "eyJhbGc", "AIzaSyA", "s3cr3t", "MIIE"):
            assert part not in text


def test_plain_errors_are_kept_as_they_are() -> None:
    text = "POST https://hub.example.com/x: HTTP 503: upstream busy, Idempotency-Key: abc"
    assert redact(text) == text
    url_error = "GET http://169.254.169.254/computeMetadata/v1/token: refused by the policy"
    assert redact(url_error) == url_error
    assert excerpt("a  b\n" * 100).startswith("a b a b") and excerpt("x" * 500).endswith("...")
    assert len(excerpt("x" * 500)) == EXCERPT_CHARS + 3
