"""Static checks of the Terraform module in terraform/ (and its example root).

Providers cannot be downloaded here, so `terraform validate` cannot run; instead the HCL is parsed
with python-hcl2 and checked against the code: every environment variable Terraform sets must be
the `env` of a setting in `scheduler.config.SETTINGS`, so renaming a setting fails these tests
instead of silently leaving the deployment with a variable nobody reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from scheduler.config import SETTINGS, SETTINGS_BY_ATTR
from scheduler.egress import EgressPolicy

MODULE_DIR = Path(__file__).resolve().parent.parent / "terraform"
EXAMPLE_DIR = MODULE_DIR / "examples" / "complete"

KNOWN_ENVS = {s.env for s in SETTINGS}
EMULATOR_ENVS = {s.env for s in SETTINGS if s.attr.endswith("_emulator_host")}
SECRET_ENVS = {s.env for s in SETTINGS if s.secret}
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}

# Anything that looks like one of our variables: checked against SETTINGS wherever it appears.
ENV_LIKE = re.compile(r"\b(SCION_SCHEDULER_[A-Z0-9_]+|[A-Z0-9_]+_EMULATOR_HOST)\b")
LOCAL_REF = re.compile(r"\blocal\.([A-Za-z0-9_]+)\b")


# --------------------------------------------------------------------------- loading


def _unquote(text: str) -> str:
    """python-hcl2 >= 8 keeps the quotes of string literals and labels; older versions do not."""
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _clean(node: Any) -> Any:
    """Drop parser metadata (`__is_block__`, `__comments__`, ...) and literal quotes."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


@cache
def load_dir(directory: Path) -> dict[str, list[Any]]:
    """All top-level blocks of the .tf files of `directory`, merged by block type."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, items in _clean(hcl2.loads(path.read_text())).items():
            merged.setdefault(kind, []).extend(items)
    return merged


def named(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    """`variable`, `output` or `module` blocks by name."""
    return {name: body for item in load_dir(directory).get(kind, []) for name, body in item.items()}


def resources(
    directory: Path, rtype: str | None = None
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every resource, optionally of one type."""
    for item in load_dir(directory).get("resource", []):
        for type_, by_name in item.items():
            if rtype in (None, type_):
                for name, body in by_name.items():
                    yield type_, name, body


def resource(directory: Path, rtype: str, name: str) -> dict[str, Any]:
    found = [body for _, n, body in resources(directory, rtype) if n == name]
    assert found, f"no resource {rtype}.{name} in {directory}"
    return found[0]


def locals_of(directory: Path) -> dict[str, Any]:
    return {k: v for block in load_dir(directory).get("locals", []) for k, v in block.items()}


def strings(node: Any) -> Iterator[str]:
    """Every string (keys included) anywhere in a parsed tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def env_keys(expr: Any, local_values: dict[str, Any]) -> set[str]:
    """The variable names of an env map: a literal map, or an expression over `local.` maps
    (e.g. `merge(local.a, cond ? local.b : {})`), followed through the locals."""
    if isinstance(expr, dict):
        return set(expr)
    assert isinstance(expr, str), f"cannot read env names from {expr!r}"
    refs = LOCAL_REF.findall(expr)
    assert refs, f"env map {expr!r} is neither a literal map nor built from locals"
    return set().union(*(env_keys(local_values[ref], local_values) for ref in refs))


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a block body."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block"
    found: dict[str, Any] = blocks[0]
    return found


def cloud_run_env(directory: Path) -> dict[str, dict[str, Any]]:
    """Env var name -> its env block (value or value_source) for every Cloud Run container."""
    local_values = locals_of(directory)
    result: dict[str, dict[str, Any]] = {}
    for _, _, body in resources(directory, "google_cloud_run_v2_service"):
        for container in block(body, "template")["containers"]:
            for env in container.get("env", []):
                result[env["name"]] = env
            for dynamic in container.get("dynamic", []):
                for content in (dynamic.get("env") or {}).get("content", []):
                    if content["name"] == "${env.key}":
                        for_each = dynamic["env"]["for_each"]
                        for key in env_keys(for_each, local_values):
                            result[key] = content
                    else:
                        result[content["name"]] = content
    return result


def output_env(directory: Path, output: str) -> set[str]:
    return env_keys(named(directory, "output")[output]["value"], locals_of(directory))


# --------------------------------------------------------------------------- variables, outputs


def test_every_variable_has_a_description_and_a_type() -> None:
    for directory in (MODULE_DIR, EXAMPLE_DIR):
        variables = named(directory, "variable")
        assert variables, f"no variables in {directory}"
        for name, body in variables.items():
            assert str(body.get("description", "")).strip(), f"variable {name} has no description"
            assert "type" in body, f"variable {name} has no type"


def test_max_delivery_attempts_is_validated_to_pubsubs_range() -> None:
    variable = named(MODULE_DIR, "variable")["max_delivery_attempts"]
    condition = variable["validation"][0]["condition"]
    assert ">= 5" in condition and "<= 100" in condition


@pytest.mark.parametrize(
    "attr",
    ["project", "location", "topic", "subscription", "job_prefix", "collection_prefix", "database"],
)
def test_outputs_cover_the_infrastructure_settings(attr: str) -> None:
    assert attr in SETTINGS_BY_ATTR, f"setting {attr!r} no longer exists in scheduler/config.py"
    assert attr in named(MODULE_DIR, "output"), f"no output for setting {attr!r}"


def test_outputs_name_both_service_accounts_and_the_dead_letter_topic() -> None:
    outputs = named(MODULE_DIR, "output")
    for name in ("hub_service_account_email", "worker_service_account_email", "dead_letter_topic"):
        assert name in outputs, name


# --------------------------------------------------------------------------- environment variables


def test_env_maps_use_only_settings_that_exist() -> None:
    for output in ("hub_env", "worker_env"):
        names = output_env(MODULE_DIR, output)
        assert names, f"{output} is empty"
        assert names <= KNOWN_ENVS, f"{output} sets unknown variables: {names - KNOWN_ENVS}"
        assert not names & EMULATOR_ENVS, f"{output} sets emulator variables"
        # Outputs are plain text in state and CI logs; secrets come from Secret Manager.
        assert not names & SECRET_ENVS, f"{output} carries a secret setting"


def test_env_maps_give_each_component_what_it_requires() -> None:
    env = {attr: SETTINGS_BY_ATTR[attr].env for attr in SETTINGS_BY_ATTR}
    hub = output_env(MODULE_DIR, "hub_env")
    worker = output_env(MODULE_DIR, "worker_env")
    assert {env["project"], env["location"], env["topic"], env["job_prefix"]} <= hub
    assert {
        env["project"],
        env["subscription"],
        env["database"],
        env["collection_prefix"],
    } <= worker


def test_the_hub_and_the_workers_get_the_same_egress_policy() -> None:
    """Validation at sync refuses what the workers would refuse to send: one list for both."""
    name = SETTINGS_BY_ATTR["allowed_targets"].env
    assert name in output_env(MODULE_DIR, "hub_env")
    assert name in output_env(MODULE_DIR, "worker_env")
    local_values = locals_of(MODULE_DIR)
    assert (local_values["worker_env"][name] == local_values["hub_env_control"][name]
            == "${local.allowed_targets}")
    assert local_values["allowed_targets"] == '${join(",", var.allowed_targets)}'
    variable = named(MODULE_DIR, "variable")["allowed_targets"]
    assert variable["type"] == "${list(string)}" and variable["default"] == []  # any public address
    # The example names the hub's URL, and the list parses as the setting.
    example = named(EXAMPLE_DIR, "variable")["allowed_targets"]["default"]
    assert example == ["https://hub.example.com/"]
    module = named(EXAMPLE_DIR, "module")["scion_scheduler"]
    assert module["allowed_targets"] == "${var.allowed_targets}"
    policy = EgressPolicy.parse(",".join(example))
    assert policy.check_url("https://hub.example.com/api/v1/x") is None
    assert policy.check_url("http://169.254.169.254/computeMetadata/v1/") is not None


def test_cloud_run_worker_env_matches_worker_env_and_takes_secrets_from_secret_manager() -> None:
    env = cloud_run_env(MODULE_DIR)
    names = set(env)
    assert names <= KNOWN_ENVS, f"Cloud Run sets unknown variables: {names - KNOWN_ENVS}"
    assert not names & EMULATOR_ENVS
    assert "PORT" not in names  # Cloud Run sets it from the container port
    assert names - SECRET_ENVS == output_env(MODULE_DIR, "worker_env")
    for name in names & SECRET_ENVS:
        assert "value" not in env[name], f"{name} must not be a plain value"
        assert block(block(env[name], "value_source"), "secret_key_ref")["secret"]


def test_no_stale_or_emulator_variable_names_anywhere() -> None:
    """Descriptions, README and example included: a renamed setting must not linger anywhere."""
    hcl = {
        m
        for d in (MODULE_DIR, EXAMPLE_DIR)
        for s in strings(load_dir(d))
        for m in ENV_LIKE.findall(s)
    }
    readme = set(ENV_LIKE.findall((MODULE_DIR / "README.md").read_text()))
    assert hcl | readme <= KNOWN_ENVS, f"unknown variable names: {(hcl | readme) - KNOWN_ENVS}"
    assert not hcl & EMULATOR_ENVS, "Terraform must not mention emulator variables"


# --------------------------------------------------------------------------- Pub/Sub


def test_workers_subscription_has_retry_and_dead_letter_policies() -> None:
    sub = resource(MODULE_DIR, "google_pubsub_subscription", "workers")
    retry = block(sub, "retry_policy")
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    dead_letter = block(sub, "dead_letter_policy")
    assert "google_pubsub_topic.dead_letter" in dead_letter["dead_letter_topic"]
    assert dead_letter["max_delivery_attempts"] == "${var.max_delivery_attempts}"


def test_subscriptions_never_expire() -> None:
    for _, name, body in resources(MODULE_DIR, "google_pubsub_subscription"):
        assert block(body, "expiration_policy")["ttl"] == "", f"subscription {name} can expire"


def test_pubsub_service_agent_can_dead_letter() -> None:
    """Without these two grants dead-lettering silently does nothing."""
    agent = "${local.pubsub_agent_member}"
    assert "google_project_service_identity.pubsub" in locals_of(MODULE_DIR)["pubsub_agent_member"]
    publishes = [
        b
        for _, _, b in resources(MODULE_DIR, "google_pubsub_topic_iam_member")
        if b["member"] == agent and b["role"] == "roles/pubsub.publisher"
    ]
    assert any("google_pubsub_topic.dead_letter" in b["topic"] for b in publishes)
    subscribes = [
        b
        for _, _, b in resources(MODULE_DIR, "google_pubsub_subscription_iam_member")
        if b["member"] == agent and b["role"] == "roles/pubsub.subscriber"
    ]
    assert any("google_pubsub_subscription.workers" in b["subscription"] for b in subscribes)


# --------------------------------------------------------------------------- IAM


def test_no_primitive_roles_anywhere() -> None:
    for directory in (MODULE_DIR, EXAMPLE_DIR):
        for text in strings(load_dir(directory)):
            found = set(re.findall(r"roles/[A-Za-z.]+", text)) & PRIMITIVE_ROLES
            assert not found, f"primitive role {found} in {directory}"


def test_worker_holds_only_its_documented_roles() -> None:
    allowed = {
        "roles/datastore.user",
        "roles/pubsub.subscriber",
        # On the fires topic only: the audit publishes lost slots again (README, The audit).
        "roles/pubsub.publisher",
        "roles/secretmanager.secretAccessor",
        # Opt-in (var.worker_telemetry_roles), for workers outside Cloud Run.
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
    }
    for rtype, name, body in resources(MODULE_DIR):
        if not rtype.endswith("_iam_member"):
            continue
        # member and role are literal, or `each.value` of a for_each that lists them.
        for_each = str(body.get("for_each", ""))
        if "local.worker_member" not in f"{body['member']} {for_each}":
            continue
        roles = set(re.findall(r"roles/[A-Za-z.]+", f"{body['role']} {for_each}"))
        assert roles and roles <= allowed, f"{rtype}.{name} grants the worker {roles - allowed}"


def test_job_manager_role_holds_only_cloud_scheduler_job_permissions() -> None:
    role = resource(MODULE_DIR, "google_project_iam_custom_role", "job_manager")
    permissions = set(role["permissions"])
    assert permissions == {
        f"cloudscheduler.jobs.{verb}"
        for verb in (
            "create",
            "delete",
            "enable",
            "fullView",
            "get",
            "list",
            "pause",
            "run",
            "update",
        )
    }


# --------------------------------------------------------------------------- Firestore


def test_firestore_ttl_and_history_index_are_on_the_executions_collection() -> None:
    assert locals_of(MODULE_DIR)["executions_collection"] == "${local.collection_prefix}executions"
    ttl = resource(MODULE_DIR, "google_firestore_field", "executions_ttl")
    assert ttl["field"] == "expire_at" and "ttl_config" in ttl
    assert ttl["collection"] == "${local.executions_collection}"
    index = resource(MODULE_DIR, "google_firestore_index", "executions_history")
    assert index["collection"] == "${local.executions_collection}"
    fields = [(f["field_path"], f["order"]) for f in index["fields"]]
    assert fields == [("schedule_id", "ASCENDING"), ("fire_time", "DESCENDING")]


def test_firestore_serves_the_reapers_query_and_leaves_the_message_unindexed() -> None:
    index = resource(MODULE_DIR, "google_firestore_index", "executions_lapsed")
    assert index["collection"] == "${local.executions_collection}"
    fields = [(f["field_path"], f["order"]) for f in index["fields"]]
    assert fields == [("state", "ASCENDING"), ("lease_until", "ASCENDING")]
    message = resource(MODULE_DIR, "google_firestore_field", "executions_message")
    assert message["field"] == "message" and message["index_config"] in ({}, [{}])


def test_the_subscriptions_ack_deadline_is_the_workers_lease_extension() -> None:
    """Both are part of the takeover budget (README, Failure model): 10 s, Pub/Sub's minimum."""
    from worker.pubsub_transport import DEFAULT_MAX_LEASE_EXTENSION

    default = named(MODULE_DIR, "variable")["ack_deadline_seconds"]["default"]
    assert default == DEFAULT_MAX_LEASE_EXTENSION.total_seconds() == 10


# --------------------------------------------------------------------------- Cloud Run worker


def test_cloud_run_worker_is_always_on_and_probed() -> None:
    service = resource(MODULE_DIR, "google_cloud_run_v2_service", "worker")
    assert service["count"] == "${var.deploy_worker ? 1 : 0}"
    template = block(service, "template")
    assert block(template, "scaling")["min_instance_count"] == "${var.worker_min_instances}"
    container = template["containers"][0]
    assert [container["command"], container["args"]] == [["scion-worker"], ["run"]]
    assert block(container, "resources")["cpu_idle"] is False
    assert block(block(container, "startup_probe"), "http_get")["path"] == "/readyz"
    assert block(block(container, "liveness_probe"), "http_get")["path"] == "/livez"
    variables = named(MODULE_DIR, "variable")
    assert variables["deploy_worker"]["default"] is False
    assert variables["worker_min_instances"]["default"] >= 2


# --------------------------------------------------------------------------- example root


def test_example_instantiates_the_module_with_two_worker_replicas() -> None:
    modules = named(EXAMPLE_DIR, "module")
    calls = [body for body in modules.values() if body.get("source") == "../.."]
    assert len(calls) == 1, "the example must call the module in terraform/"
    call = calls[0]
    assert call["deploy_worker"] is True
    assert call["worker_min_instances"] == 2

    variables = named(MODULE_DIR, "variable")
    arguments = set(call) - {"source", "providers", "depends_on", "count", "for_each"}
    assert arguments <= set(variables), f"unknown module arguments: {arguments - set(variables)}"
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= arguments, f"example omits required variables: {required - arguments}"


# --------------------------------------------------------------------------- formatting


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_fmt() -> None:
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull}
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(MODULE_DIR)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- modes (issue 17)


def test_mode_is_validated_and_reaches_the_hub_and_the_workers() -> None:
    mode = named(MODULE_DIR, "variable")["mode"]
    assert mode["default"] == "jobs"
    condition = mode["validation"][0]["condition"]
    assert "jobs" in condition and "ticks" in condition
    for env in ("worker_env", "hub_env_control"):
        assert locals_of(MODULE_DIR)[env]["SCION_SCHEDULER_MODE"] == "${var.mode}"


def test_ticks_mode_has_the_due_index_and_only_the_tick_jobs_role() -> None:
    index = resource(MODULE_DIR, "google_firestore_index", "schedules_due")
    assert index["count"] == '${var.mode == "ticks" ? 1 : 0}'
    assert index["collection"] == "${local.schedules_collection}"
    assert locals_of(MODULE_DIR)["schedules_collection"] == "${local.collection_prefix}schedules"
    fields = [(f["field_path"], f["order"]) for f in index["fields"]]
    assert fields == [("owner", "ASCENDING"), ("next_fire_time", "ASCENDING")]
    # Per-schedule jobs need the job manager only in jobs mode; the tick job's role is
    # narrower: no pause, no forced run.
    jobs = resource(MODULE_DIR, "google_project_iam_member", "hub_job_manager")
    assert jobs["count"] == '${var.mode == "jobs" ? 1 : 0}'
    tick = resource(MODULE_DIR, "google_project_iam_member", "hub_tick_job_manager")
    assert tick["count"] == '${var.mode == "ticks" ? 1 : 0}'
    role = resource(MODULE_DIR, "google_project_iam_custom_role", "tick_job_manager")
    assert set(role["permissions"]) == {
        f"cloudscheduler.jobs.{verb}" for verb in ("create", "delete", "enable", "get", "list",
                                                    "update")}
