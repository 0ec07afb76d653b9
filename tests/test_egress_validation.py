"""The egress policy's decisions at validation: each refused kind of target and header, named
targets, address kinds, and the local stack's examples and command line (helpers:
`egress_cases`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from egress_cases import METADATA_TOKEN_URL, REFUSED_BY_DEFAULT, ROOT, url_errors

from scheduler.config import ConfigError, Settings
from scheduler.egress import AddressKind, EgressPolicy, classify, header_problem
from scheduler.model import ValidationError
from scheduler.validation import load_schedules
from scion_scheduler import stack


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
