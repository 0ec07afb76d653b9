"""Static checks of the Terraform module's variables, outputs and environment variables.

The HCL is parsed with python-hcl2 and checked against the code: every environment variable
Terraform sets must be the `env` of a setting in `scheduler.config.SETTINGS`, so renaming a setting
fails these tests instead of silently leaving the deployment with a variable nobody reads. Helpers:
`terraform_hcl`.
"""

from __future__ import annotations

import pytest
from terraform_hcl import (
    EMULATOR_ENVS,
    ENV_LIKE,
    EXAMPLE_DIR,
    KNOWN_ENVS,
    MODULE_DIR,
    SECRET_ENVS,
    block,
    cloud_run_env,
    load_dir,
    locals_of,
    named,
    output_env,
    resource,
    strings,
)

from scheduler.config import SETTINGS_BY_ATTR
from scheduler.egress import EgressPolicy

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
