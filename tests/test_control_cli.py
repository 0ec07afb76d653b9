"""The control commands through `scion_scheduler.cli.main`, against the emulators, with
`--output json` parsed back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from emulated_control import operator_cli_env
from emulator_helpers import pull_until

from scheduler.config import Settings
from scheduler.contract import decode_message
from scheduler.gcp import publisher_client, subscriber_client
from scion_scheduler.cli import main

pytestmark = pytest.mark.emulator

KEY = "cli-signing-key"
ACTION = {"type": "http", "url": "https://hub.example/run"}


@pytest.fixture(params=["jobs", "ticks"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every control command behaves the same in both modes (issue 17)."""
    return str(request.param)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, cloud_scheduler_emulator: Any, pubsub_emulator: str,
        firestore_emulator: str, project_id: str, mode: str) -> Iterator[Any]:
    """Configuration through the environment only, as an operator would run the tool."""
    operator_cli_env(monkeypatch, project_id, {
        "SCION_SCHEDULER_SUBSCRIPTION": "workers", "SCION_SCHEDULER_SIGNING_KEY": KEY,
        "SCION_SCHEDULER_WRITE_RATE": "1000", "SCION_SCHEDULER_API_RETRY_INITIAL": "0.01s",
        "SCION_SCHEDULER_API_RETRY_MAXIMUM": "0.05s", "SCION_SCHEDULER_API_RETRY_TIMEOUT": "20s",
        "SCION_SCHEDULER_MODE": mode, "FIRESTORE_EMULATOR_HOST": firestore_emulator,
    })
    yield cloud_scheduler_emulator
    # `main` pointed structlog at pytest's captured stderr, which is closed by now.
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """An earlier test may have pointed structlog at a captured stream that is closed by now."""
    structlog.reset_defaults()


def write(path: Path, schedules: list[dict[str, Any]]) -> str:
    path.write_text(yaml.safe_dump({"schedules": schedules}), encoding="utf-8")
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*argv, "--output", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


SCHEDULES = [
    {"id": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "action": ACTION},
    {"id": "hourly", "cron": "0 * * * *", "action": ACTION, "description": "every hour"},
    {"id": "resting", "cron": "30 6 * * MON", "action": ACTION, "paused": True},
]


def test_sync_plan_dry_run_prune_list_and_describe(env: Any, tmp_path: Path, mode: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    emu = env
    file = write(tmp_path / "s.yaml", SCHEDULES)

    code, out = run_json(capsys, "sync", "--file", file)
    assert code == 0 and out["ok"] and not out["dry_run"]
    # Jobs: a paused schedule's job is created, then paused; ticks: one write per document, and
    # the tick job.
    created, paused = (3, 1) if mode == "jobs" else (4, 0)
    assert out["plan"]["counts"] == {"delete": 0, "create": created, "update": 0, "pause": paused,
                                     "resume": 0, "fire": 0}
    assert {o["status"] for o in out["result"]["outcomes"]} == {"ok"}
    assert len(out["result"]["outcomes"]) == 4

    code, out = run_json(capsys, "plan", "--file", file)
    assert code == 0 and out["steps"] == [] and out["unchanged"] == 3

    edited = [dict(SCHEDULES[0], cron="0 4 * * *"), SCHEDULES[1]]  # "resting" left out
    file2 = write(tmp_path / "s2.yaml", edited)
    code, out = run_json(capsys, "sync", "--file", file2, "--dry-run", "--prune")
    assert code == 0 and out["dry_run"] and out["result"] is None
    mask = ["schedule", "pubsub_target.attributes"] if mode == "jobs" else []
    assert [(s["kind"], s["schedule_id"], s.get("update_mask")) for s in out["plan"]["steps"]] == [
        ("update", "nightly", mask),
        ("delete", "resting", None),
    ]
    assert emu.call_counts["UpdateJob"] == 0 and emu.call_counts["DeleteJob"] == 0

    code, out = run_json(capsys, "sync", "--file", file2)  # without --prune: keeps "resting"
    assert code == 0 and out["plan"]["kept_without_schedule"] == ["scion-resting"]
    assert [o["kind"] for o in out["result"]["outcomes"]] == ["update"]

    code, out = run_json(capsys, "list")
    assert code == 0
    jobs = {j["schedule_id"]: j for j in out["jobs"]}
    assert set(jobs) == {"nightly", "hourly", "resting"}
    assert jobs["resting"]["state"] == "PAUSED" and jobs["nightly"]["schedule"] == "0 4 * * *"

    code, out = run_json(capsys, "describe", "hourly")
    assert code == 0 and out["state"] == "ENABLED" and len(out["next_fires"]) == 5
    assert all(f.endswith(":00:00Z") for f in out["next_fires"])
    assert out["description"] == "every hour" and out["topic"].endswith("/topics/fires")
    code, out = run_json(capsys, "describe", "resting")
    assert code == 0 and out["state"] == "PAUSED" and out["next_fires"] == []

    code, out = run_json(capsys, "sync", "--file", file2, "--prune")
    assert code == 0 and [(o["kind"], o["schedule_id"]) for o in out["result"]["outcomes"]] == [
        ("delete", "resting")]

    code, out = run_json(capsys, "describe", "resting")
    assert code == 1 and out["ok"] is False and "resting" in out["error"]

    assert main(["plan", "--file", file2]) == 0
    assert "no changes" in capsys.readouterr().out


def test_pause_resume_delete(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path / "s.yaml", SCHEDULES[:1])
    assert main(["sync", "--file", file]) == 0

    code, out = run_json(capsys, "pause", "nightly")
    assert code == 0 and out["ok"] and out["outcomes"][0]["kind"] == "pause"
    code, out = run_json(capsys, "pause", "nightly")
    assert code == 0 and out["outcomes"][0]["note"] == "already paused"
    code, out = run_json(capsys, "describe", "nightly")
    assert out["state"] == "PAUSED"
    code, out = run_json(capsys, "resume", "nightly")
    assert code == 0 and out["outcomes"][0]["status"] == "ok"

    code, out = run_json(capsys, "delete", "nightly")
    assert code == 0 and out["outcomes"][0]["status"] == "ok"
    code, out = run_json(capsys, "delete", "nightly")
    assert code == 0 and out["outcomes"][0]["note"] == "already gone"

    code, out = run_json(capsys, "pause", "nightly")
    assert code == 1 and not out["ok"]
    [outcome] = out["outcomes"]
    assert outcome["status"] == "failed" and "not found" in outcome["error"].lower()


def test_run_publishes_one_manual_fire(env: Any, tmp_path: Path, project_id: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({}, project=project_id, topic="fires", subscription="workers")
    publisher, subscriber = publisher_client(settings), subscriber_client(settings)
    publisher.create_topic(name=settings.topic_path)
    subscriber.create_subscription(name=settings.subscription_path, topic=settings.topic_path)
    file = write(tmp_path / "s.yaml", SCHEDULES[:1])
    assert main(["sync", "--file", file]) == 0

    code, out = run_json(capsys, "run", "nightly")
    assert code == 0 and out["ok"] and out["message_id"]

    [message] = pull_until(subscriber, settings.subscription_path, bool, 30)
    fire = decode_message(message.data, dict(message.attributes), signing_key=KEY)
    assert fire.trigger == "manual" and fire.schedule_id == "nightly"
    assert fire.fire_time is not None and fire.fire_time.isoformat().startswith(
        out["fire_time"][:19]
    )
    assert fire.timezone == "Europe/Berlin" and fire.action.params["url"] == ACTION["url"]

    code, out = run_json(capsys, "run", "missing")
    assert code == 1 and "missing" in out["error"]
    publisher.stop()
    subscriber.close()


def test_bad_schedule_file_lists_every_error_and_applies_nothing(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = env
    file = write(tmp_path / "bad.yaml", [
        SCHEDULES[0],
        {"id": "broken-cron", "cron": "61 * * * *", "action": ACTION},
        {"id": "no-action", "cron": "0 * * * *"},
        {"id": "bad-zone", "cron": "0 * * * *", "timezone": "Mars/Olympus", "action": ACTION},
    ])
    for command in (["sync", "--file", file, "--prune"], ["plan", "--file", file]):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err
        for schedule_id, field in (
            ("broken-cron", "cron"),
            ("no-action", "action"),
            ("bad-zone", "timezone"),
        ):
            assert f"schedule {schedule_id!r}: {field}" in err
    for command in (
        ["sync", "--file", file, "--prune"],
        ["plan", "--file", file],
        ["validate", "--file", file],
    ):
        code, out = run_json(capsys, *command)
        assert code == 2 and out["ok"] is False
        assert {(e["schedule_id"], e["field"]) for e in out["errors"]} == {
            ("broken-cron", "cron"), ("no-action", "action"), ("bad-zone", "timezone")}
        assert all(e["reason"] for e in out["errors"])
    capsys.readouterr()
    assert main(["sync", "--file", file, "--output", "json"]) == 2
    assert "validation error" in capsys.readouterr().err  # the text stays on stderr
    assert sum(emu.call_counts.values()) == 0


def test_bad_input_with_json_output_is_json_on_stdout(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.yaml")
    code, out = run_json(capsys, "sync", "--file", missing)
    assert code == 2 and out["ok"] is False
    [error] = out["errors"]
    assert error["field"] == missing and error["reason"]

    monkeypatch.delenv("SCION_SCHEDULER_PROJECT")
    code, out = run_json(capsys, "list")
    assert code == 2 and out["ok"] is False
    [error] = out["errors"]
    assert error["schedule_id"] is None and error["field"] == "SCION_SCHEDULER_PROJECT"
    assert "SCION_SCHEDULER_PROJECT (or --project)" in error["reason"]

    capsys.readouterr()
    assert main(["list"]) == 2  # text output: nothing on stdout
    assert capsys.readouterr().out == ""
    assert sum(env.call_counts.values()) == 0


def test_missing_settings_are_named_and_exit_2(env: Any, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SCION_SCHEDULER_PROJECT")
    for argv in (
        ["list"],
        ["describe", "x"],
        ["run", "x"],
        ["sync", "--file", "does-not-matter.yaml"],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert "SCION_SCHEDULER_PROJECT (or --project)" in capsys.readouterr().err
    assert sum(env.call_counts.values()) == 0


def test_a_failed_step_exits_1_with_its_error_and_retries(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    mode: str
) -> None:
    monkeypatch.setenv("SCION_SCHEDULER_API_RETRY_TIMEOUT", "0.3s")
    env.set_faults(1.0, codes=("RESOURCE_EXHAUSTED",), methods=["CreateJob"])
    file = write(tmp_path / "s.yaml", SCHEDULES[:2])
    code, out = run_json(capsys, "sync", "--file", file)
    assert code == 1 and out["ok"] is False
    # Jobs: both schedules' jobs fail; ticks: the documents are written, the tick job fails.
    failing = 2 if mode == "jobs" else 1
    assert out["result"]["failed"] == failing
    failed = [o for o in out["result"]["outcomes"] if o["status"] != "ok"]
    assert len(failed) == failing
    for outcome in failed:
        assert outcome["status"] == "failed" and outcome["error"]
        assert outcome["retries"] and set(outcome["retries"]) == {"RESOURCE_EXHAUSTED"}
    env.clear_faults()
    code, out = run_json(capsys, "sync", "--file", file)
    assert code == 0 and out["result"]["applied"] == failing


def test_migrate_moves_an_empty_deployment_there_and_back(
        env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(capsys, "migrate", "--to", "ticks")
    assert code == 0 and out["ok"] and out["to"] == "ticks"
    assert [(o["kind"], o["job_id"]) for o in out["outcomes"]] == [("create", "scion-_tick")]
    code, out = run_json(capsys, "migrate", "--to", "jobs")
    assert code == 0 and out["ok"]
    assert [(o["kind"], o["job_id"]) for o in out["outcomes"]] == [("delete", "scion-_tick")]
    with pytest.raises(SystemExit) as refused:
        main(["migrate", "--to", "tick"])
    assert refused.value.code == 2


@pytest.mark.parametrize("mode", ["ticks"])
def test_sync_verify_repairs_a_document_deleted_by_hand(
        env: Any, tmp_path: Path, project_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import firestore

    from scheduler.registry import document_id

    file = write(tmp_path / "s.yaml", SCHEDULES)
    assert main(["sync", "--file", file]) == 0
    client = firestore.Client(project=project_id)
    client.collection("scion_schedules").document(document_id("hourly")).delete()
    # A plain sync trusts the sync manifest, which the hand's delete did not touch.
    code, out = run_json(capsys, "sync", "--file", file)
    assert code == 0 and out["plan"]["steps"] == []
    code, out = run_json(capsys, "sync", "--file", file, "--verify")
    assert code == 0 and [(s["schedule_id"], s["kind"]) for s in out["plan"]["steps"]] == [
        ("hourly", "create")]
    code, out = run_json(capsys, "describe", "hourly")
    assert code == 0 and out["schedule_id"] == "hourly"
