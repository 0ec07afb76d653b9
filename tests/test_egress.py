"""The egress policy: each refused kind at validation and at send time, against real local servers.

Names are resolved through an injected hosts-style resolver (`hosts`), so "a name that resolves
to the metadata server" needs no DNS; everything else is real: the worker's egress client, its
connections, a server that answers 302 to 169.254.169.254, the pipeline and its ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import scion_hub_data
from memory_ledger import MemoryLedger

from scheduler.config import ConfigError, Settings
from scheduler.contract import build_message, execution_id
from scheduler.egress import AddressKind, EgressPolicy, classify, header_problem
from scheduler.model import Action, Schedule, ValidationError
from scheduler.redaction import EXCERPT_CHARS, excerpt, redact, redact_log_fields
from scheduler.validation import load_schedules, parse_schedule, schedules_from_data
from scion_scheduler import stack
from worker.action import ActionContext, ActionError, ActionRegistry
from worker.actions import builtin_handlers
from worker.actions.http import HttpAction, IdTokenCache
from worker.actions.scion import ScionAction
from worker.egress_transport import EgressRefused, EgressTransport, egress_client
from worker.ledger import State
from worker.ledger_rules import truncate_error
from worker.pipeline import Pipeline
from worker.transport import Delivery, Outcome

ROOT = Path(__file__).resolve().parent.parent
FIRE_TIME = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PUBLIC_ONLY = EgressPolicy()
METADATA_TOKEN_URL = (
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token")
SECRET = "ya29.a0AfH6SMBsecretsecretsecret"


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
    return HttpAction(egress_client(policy, resolve=resolve), egress=policy, id_tokens=tokens)


def url_errors(url: str, policy: EgressPolicy = PUBLIC_ONLY,
               **action: Any) -> list[tuple[str, str]]:
    raw = {"id": "ssrf", "cron": "* * * * *", "action": {"type": "http", "url": url, **action}}
    try:
        parse_schedule(raw, egress=policy)
    except ValidationError as exc:
        return [(e.field, e.reason) for e in exc.errors]
    return []


# --------------------------------------------------------------------------- the decisions

REFUSED_BY_DEFAULT = [
    (METADATA_TOKEN_URL, "link-local or metadata"),                       # metadata by IP
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata server"),  # by name
    ("http://metadata/computeMetadata/v1/", "metadata server"),
    ("http://METADATA.google.internal./x", "metadata server"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "link-local or metadata"),
    ("http://169.254.10.1/", "link-local or metadata"),                  # link-local
    ("http://[fe80::1]/", "link-local or metadata"),
    ("http://[::ffff:169.254.169.254]/", "link-local or metadata"),      # IPv4-mapped
    ("http://10.0.0.5/", "private or loopback"),                         # private
    ("http://172.16.3.4:8080/", "private or loopback"),
    ("http://192.168.1.1/", "private or loopback"),
    ("http://100.64.0.1/", "private or loopback"),                       # CGNAT
    ("http://[fc00::1]/", "private or loopback"),
    ("http://[::ffff:10.0.0.1]/", "private or loopback"),
    ("http://127.0.0.1:8087/", "private or loopback"),                   # loopback
    ("http://127.1.2.3/", "private or loopback"),
    ("http://[::1]/", "private or loopback"),
    ("http://0.0.0.0/", "private or loopback"),
    ("http://localhost:8080/", "loopback"),
    ("http://2130706433/", "private or loopback"),                      # legacy IPv4 forms
    ("http://0xa9fea9fe/", "link-local or metadata"),
    ("http://127.1/", "private or loopback"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_BY_DEFAULT)
def test_validation_refuses_each_kind_by_default_naming_the_field(url: str, reason: str) -> None:
    [(field_name, message)] = url_errors(url)
    assert field_name == "action.url" and reason in message and "ALLOWED_TARGETS" in message


@pytest.mark.parametrize(("url", "_reason"), REFUSED_BY_DEFAULT)
def test_a_wildcard_never_names_a_refused_address(url: str, _reason: str) -> None:
    assert url_errors(url, EgressPolicy.parse("*"))


def test_public_targets_pass_and_a_list_limits_them() -> None:
    assert url_errors("https://hub.example.com/hooks") == []
    policy = EgressPolicy.parse("https://hub.example.com/api/, *.run.app")
    assert url_errors("https://hub.example.com/api/v1/fire", policy) == []
    assert url_errors("https://svc-abc.a.run.app/", policy) == []
    for url in ("https://hub.example.com/admin", "https://hub.example.com/apix",
                "http://hub.example.com/api/x", "https://hub.example.com:8443/api/x",
                "https://run.app/", "https://evil.example.com/"):
        [(field_name, message)] = url_errors(url, policy)
        assert field_name == "action.url" and "is not in" in message, url
    # A dot segment could step out of an allowed prefix once the server normalizes it.
    assert url_errors("https://hub.example.com/api/%2e%2e/admin", policy)


def test_named_targets_are_allowed_and_metadata_only_exactly() -> None:
    named = EgressPolicy.parse("127.0.0.1,localhost,10.8.0.0/16,hub.internal")
    assert url_errors("http://127.0.0.1:9/x", named) == []
    assert url_errors("http://localhost:8087/", named) == []
    assert url_errors("http://10.8.1.2/", named) == []
    assert url_errors("http://10.9.1.2/", named)  # not in the network
    # A network never names a metadata address; only the address itself does.
    assert url_errors(METADATA_TOKEN_URL, EgressPolicy.parse("169.254.0.0/16"))
    assert url_errors(METADATA_TOKEN_URL, EgressPolicy.parse("169.254.169.254")) == []
    assert url_errors("http://metadata.google.internal/",
                      EgressPolicy.parse("metadata.google.internal")) == []
    # At send time: a host named exactly is trusted with what it resolves to, a pattern is not.
    assert named.check_address("hub.internal", "10.1.2.3") is None
    assert named.check_address("hub.internal", "169.254.169.254") is not None
    assert EgressPolicy.parse("*.internal").check_address("hub.internal", "10.1.2.3") is not None


def test_address_kinds() -> None:
    import ipaddress

    kinds = {a: classify(ipaddress.ip_address(a)) for a in (
        "8.8.8.8", "2001:4860:4860::8888", "169.254.169.254", "fd00:ec2::254", "fe80::1",
        "127.0.0.1", "::1", "0.0.0.0", "10.1.1.1", "100.64.0.1", "224.0.0.1",
        "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::808:808")}
    assert kinds == {
        "8.8.8.8": AddressKind.PUBLIC, "2001:4860:4860::8888": AddressKind.PUBLIC,
        "169.254.169.254": AddressKind.METADATA, "fd00:ec2::254": AddressKind.METADATA,
        "fe80::1": AddressKind.METADATA, "127.0.0.1": AddressKind.PRIVATE,
        "::1": AddressKind.PRIVATE, "0.0.0.0": AddressKind.PRIVATE,
        "10.1.1.1": AddressKind.PRIVATE, "100.64.0.1": AddressKind.PRIVATE,
        "224.0.0.1": AddressKind.PRIVATE, "::ffff:169.254.169.254": AddressKind.METADATA,
        "64:ff9b::a9fe:a9fe": AddressKind.METADATA, "64:ff9b::808:808": AddressKind.PUBLIC,
    }


@pytest.mark.parametrize("text", ["ftp://hub.example.com/", "https://hub.example.com/?a=1",
                                  "https://user@hub.example.com/", "not a host!", "10.0.0.0/99"])
def test_a_malformed_list_is_a_configuration_error_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="SCION_SCHEDULER_ALLOWED_TARGETS"):
        Settings.from_env({"SCION_SCHEDULER_ALLOWED_TARGETS": text})


@pytest.mark.parametrize(("headers", "oidc", "refused"), [
    ({"Host": "metadata.google.internal"}, False, "Host"),
    ({"Metadata-Flavor": "Google"}, False, "Metadata-Flavor"),
    ({"X-Google-Metadata-Request": "True"}, False, "X-Google-Metadata-Request"),
    ({"connection": "close"}, False, "connection"),
    ({"Transfer-Encoding": "chunked"}, False, "Transfer-Encoding"),
    ({"Upgrade": "h2c"}, False, "Upgrade"),
    ({"Proxy-Authorization": "Basic eA=="}, False, "Proxy-Authorization"),
    ({"Authorization": "Bearer mine"}, True, "Authorization"),
])
def test_validation_refuses_headers_a_schedule_may_not_set(
        headers: dict[str, str], oidc: bool, refused: str) -> None:
    extra: dict[str, Any] = {"headers": {"X-Team": "ops", **headers}}
    if oidc:
        extra["oidc_audience"] = "https://hub.example.com"
    [(field_name, message)] = url_errors("https://hub.example.com/", **extra)
    assert field_name == f"action.headers.{refused}" and "may not be set" in message


def test_authorization_is_a_schedules_own_without_an_oidc_audience() -> None:
    assert url_errors("https://hub.example.com/", headers={"Authorization": "Bearer x"}) == []
    assert header_problem("authorization", oidc=False) is None


def test_the_issues_attack_is_refused_with_both_reasons() -> None:
    errors = url_errors(METADATA_TOKEN_URL, headers={"Metadata-Flavor": "Google"})
    assert [f for f, _ in errors] == ["action.url", "action.headers.Metadata-Flavor"]


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


def test_a_client_that_follows_redirects_has_each_hop_checked(server: Server) -> None:
    hosts = Hosts({})
    transport = EgressTransport(EgressPolicy.parse("127.0.0.1"), resolve=hosts)
    with (httpx.Client(transport=transport, follow_redirects=True) as client,
          pytest.raises(EgressRefused, match=r"169\.254\.169\.254")):
        client.get(server.url("/redirect"))
    assert hosts.lookups == ["127.0.0.1"]


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


def test_the_transport_refuses_a_host_header_for_another_host(server: Server) -> None:
    with egress_client(EgressPolicy.parse("127.0.0.1")) as client:
        with pytest.raises(EgressRefused, match="Host header"):
            client.get(server.url("/ok"), headers={"Host": "metadata.google.internal"})
        with pytest.raises(EgressRefused, match="metadata-server header"):
            client.get(server.url("/ok"), headers={"Metadata-Flavor": "Google"})
        assert client.get(server.url("/ok")).status_code == 200
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


# --------------------------------------------------------------------------- the local stack


def test_the_examples_call_loopback_which_the_local_commands_name() -> None:
    examples = ROOT / "examples" / "schedules.yaml"
    with pytest.raises(ValidationError, match=r"action\.url"):
        load_schedules(examples)
    assert len(load_schedules(examples, egress=EgressPolicy.parse(stack.FILE_TARGETS))) == 3
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--allowed-targets '*,http://127.0.0.1:8087/' local" in makefile
    # The workers `up` starts name the target where it actually listens, and nothing else local.
    policy = EgressPolicy.parse(stack.allowed_targets("http://127.0.0.1:41234"))
    assert policy.check_url("http://127.0.0.1:41234/ping") is None
    assert policy.check_url("https://hooks.example.com/") is None
    assert policy.check_url("http://127.0.0.1:41235/ping") is not None
    assert policy.check_url(METADATA_TOKEN_URL) is not None


def test_validate_refuses_at_the_command_line_unless_the_flag_names_the_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from scion_scheduler.cli import main

    monkeypatch.delenv("SCION_SCHEDULER_ALLOWED_TARGETS", raising=False)
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text("- id: lo\n  cron: '* * * * *'\n"
                             "  action: {type: http, url: 'http://10.1.2.3:8080/x'}\n")
    assert main(["validate", "--file", str(schedule_file)]) == 2
    assert "action.url: calls a private or loopback address (10.1.2.3)" in capsys.readouterr().err
    assert main(["--allowed-targets", "10.1.2.3", "validate", "--file", str(schedule_file)]) == 0
