"""A command started without what it needs says so in one line naming the setting and exits 2,
with no traceback: each `scion-scheduler` command run as a user would, in a clean environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
TIMEOUT = 60
SCHEDULES = [{"id": "every-5", "cron": "*/5 * * * *",
              "action": {"type": "http", "url": "https://hub.example.com/api/fire"}}]

# Every command that reaches Cloud Scheduler, Pub/Sub or Firestore (`{file}`: a valid file).
NEEDS_GOOGLE = [
    ["sync", "--file", "{file}"], ["plan", "--file", "{file}"], ["list"], ["describe", "x"],
    ["pause", "x"], ["resume", "x"], ["delete", "x"], ["run", "x"], ["runs", "x"],
    ["serve", "--port", "1"],
]


def run_clean(tmp_path: Path, args: list[str], tool: str = "scion-scheduler",
              **env: str) -> subprocess.CompletedProcess[str]:
    """`TOOL ARGS` (default `scion-scheduler`) with only PATH, an empty HOME (no gcloud
    credentials) and `env`; `NO_GCE_CHECK` so that a test machine on Google Cloud does not find
    its metadata server."""
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(yaml.safe_dump({"schedules": SCHEDULES}))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(home), "NO_GCE_CHECK": "True", **env}
    argv = [str(BIN / tool), *(a.format(file=schedules) for a in args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=clean,
                          check=False)


def assert_one_line(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in named:
        assert name in lines[0]


@pytest.mark.parametrize("args", NEEDS_GOOGLE, ids=lambda args: args[0])
def test_without_a_project_the_command_names_the_setting(tmp_path: Path, args: list[str]) -> None:
    assert_one_line(run_clean(tmp_path, args), "SCION_SCHEDULER_PROJECT")


@pytest.mark.parametrize("args", NEEDS_GOOGLE, ids=lambda args: args[0])
def test_without_credentials_the_command_names_them(tmp_path: Path, args: list[str]) -> None:
    result = run_clean(tmp_path, args, SCION_SCHEDULER_PROJECT="p")
    assert_one_line(result, "GOOGLE_APPLICATION_CREDENTIALS", "FIRESTORE_EMULATOR_HOST")
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "named"), [
    (["hub", "check"], "SCION_HUB_URL"),
    (["hub", "pull", "--grove", "g"], "SCION_HUB_URL"),
    (["runs", "x", "--store", "sqlite:/nonexistent/scion.db"], "--store"),
    (["validate", "--file", "/nonexistent/schedules.yaml"], "/nonexistent/schedules.yaml"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_other_missing_inputs_are_named(tmp_path: Path, args: list[str], named: str) -> None:
    assert_one_line(run_clean(tmp_path, args, SCION_SCHEDULER_PROJECT="p"), named)


def test_the_worker_names_the_project_then_the_credentials(tmp_path: Path) -> None:
    assert_one_line(run_clean(tmp_path, ["run"], tool="scion-worker"), "SCION_SCHEDULER_PROJECT")
    result = run_clean(tmp_path, ["run"], tool="scion-worker", SCION_SCHEDULER_PROJECT="p")
    assert_one_line(result, "GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST")
    # A replica of several processes says it once, not once per process.
    assert_one_line(run_clean(tmp_path, ["run", "--processes", "3"], tool="scion-worker"),
                    "SCION_SCHEDULER_PROJECT")
    result = run_clean(tmp_path, ["run", "--processes", "3"], tool="scion-worker",
                       SCION_SCHEDULER_PROJECT="p")
    assert_one_line(result, "GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST")
