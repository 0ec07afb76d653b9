"""Static checks of the Terraform module's resources: Pub/Sub, IAM, Firestore, the Cloud Run worker,
the example root, and formatting (helpers: `terraform_hcl`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from terraform_hcl import (
    EXAMPLE_DIR,
    MODULE_DIR,
    PRIMITIVE_ROLES,
    block,
    load_dir,
    locals_of,
    named,
    resource,
    resources,
    strings,
)

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
    from worker.run_options import DEFAULT_MAX_LEASE_EXTENSION

    default = named(MODULE_DIR, "variable")["ack_deadline_seconds"]["default"]
    assert default == DEFAULT_MAX_LEASE_EXTENSION.total_seconds() == 10


# --------------------------------------------------------------------------- Cloud Run worker


def test_cloud_run_worker_is_always_on_and_probed() -> None:
    service = resource(MODULE_DIR, "google_cloud_run_v2_service", "worker")
    assert service["count"] == "${var.deploy_worker ? 1 : 0}"
    template = block(service, "template")
    assert block(template, "scaling")["min_instance_count"] == "${var.worker_min_instances}"
    container = template["containers"][0]
    assert [container["command"], container["args"]] == [
        ["scion-worker"], ["run", "--processes", "${tostring(var.worker_processes)}"]]
    assert block(container, "resources")["cpu_idle"] is False
    assert block(block(container, "startup_probe"), "http_get")["path"] == "/readyz"
    assert block(block(container, "liveness_probe"), "http_get")["path"] == "/livez"
    variables = named(MODULE_DIR, "variable")
    assert variables["deploy_worker"]["default"] is False
    assert variables["worker_min_instances"]["default"] >= 2
    assert variables["worker_processes"]["default"] == 1


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
