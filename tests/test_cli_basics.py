"""The two console scripts: help, version, and the offline `validate` and `next` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
import yaml

from scheduler.cli_base import package_version
from scion_scheduler.cli import main as scheduler_main

BIN = Path(sys.executable).parent
TIMEOUT = 60

HTTP = {"type": "http", "url": "https://hub.example.com/api/fire"}
MIXED = [
    {"id": "good", "cron": "*/5 * * * *", "action": HTTP},
    {"id": "bad-cron", "cron": "0 0 9 * * *", "action": HTTP},
    {"id": "bad-zone", "cron": "0 9 * * *", "timezone": "Nowhere/Land", "colour": "blue",
     "action": {"type": "smtp"}},
    {"id": "bad-url", "at": "2030-01-01T00:00:00Z", "action": {"type": "http", "url": "hub"}},
    {"id": "good", "cron": "0 * * * *", "action": HTTP},
]
GOOD = [
    {"id": "every-5", "cron": "*/5 * * * *", "action": HTTP},
    {"id": "berlin", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "action": HTTP},
    {"id": "far-one-shot", "at": "2031-06-01T12:00:30Z", "action": HTTP},
    {"id": "past-one-shot", "at": "2020-01-01T00:00:00Z", "action": HTTP},
    {"id": "paused", "cron": "0 0 * * *", "paused": True, "action": HTTP},
]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main` configures structlog to write to this test's captured stderr, which is closed
    afterwards: put the defaults back so that later tests can still log."""
    yield
    structlog.reset_defaults()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCION_")}
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"schedules": MIXED}))
    return path


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.json"
    path.write_text(json.dumps(GOOD))
    return path


@pytest.mark.parametrize("script", ["scion-scheduler", "scion-worker"])
def test_help_and_version(script: str) -> None:
    helped = run(str(BIN / script), "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: {script}")
    assert "SCION_SCHEDULER_PROJECT" in helped.stdout  # every setting's flag names its variable
    versioned = run(str(BIN / script), "--version")
    assert versioned.returncode == 0, versioned.stderr
    assert versioned.stdout.strip() == f"{script} {package_version()}"


def test_validate_lists_every_error_and_exits_2(mixed_file: Path) -> None:
    result = run(str(BIN / "scion-scheduler"), "validate", "--file", str(mixed_file))
    assert result.returncode == 2
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(errors) == 6, result.stderr
    for fragment in [
        "'bad-cron': cron:", "'bad-zone': timezone:", "'bad-zone': colour: unknown field",
        "'bad-zone': action.type: unknown action type 'smtp'", "'bad-url': action.url:",
        "'good': id: duplicate",
    ]:
        assert any(fragment in line for line in errors), fragment
    assert result.stderr.startswith("error: 6 validation error(s)")


def test_validate_accepts_a_good_file(good_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduler_main(["validate", "--file", str(good_file)]) == 0
    assert "5 schedule(s), all valid" in capsys.readouterr().out
    assert scheduler_main(["validate", "--file", str(good_file), "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["schedules"] == 5


def test_validate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduler_main(["validate", "--file", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_bad_configuration_exits_2_naming_the_setting(
    good_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCION_SCHEDULER_JOB_PREFIX", "bad prefix")
    assert scheduler_main(["validate", "--file", str(good_file)]) == 2
    assert "SCION_SCHEDULER_JOB_PREFIX" in capsys.readouterr().err


def test_next_prints_fire_times(good_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 2026-03-29 is the day Berlin skips 02:00-03:00: that day's 02:30 does not fire.
    code = scheduler_main(["next", "--file", str(good_file), "--after", "2026-03-28T12:00:00Z",
                           "--output", "json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "every-5": ["2026-03-28T12:05:00Z", "2026-03-28T12:10:00Z", "2026-03-28T12:15:00Z"],
        "berlin": ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z", "2026-04-01T00:30:00Z"],
        "far-one-shot": ["2031-06-01T12:00:30Z"],
        "past-one-shot": [],
        "paused": [],
    }
    assert scheduler_main(["next", "--file", str(good_file), "-n", "1",
                           "--after", "2026-03-28T12:00:00Z"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "every-5: 2026-03-28T12:05:00Z",
        "berlin: 2026-03-30T00:30:00Z",
        "far-one-shot: 2031-06-01T12:00:30Z",
        "past-one-shot: (none)",
        "paused: (paused)",
    ]


def test_next_from_now_through_the_console_script(good_file: Path) -> None:
    result = run(str(BIN / "scion-scheduler"), "next", "--file", str(good_file), "--output", "json")
    assert result.returncode == 0, result.stderr
    fires = json.loads(result.stdout)
    assert len(fires["every-5"]) == 3 and fires["every-5"] == sorted(fires["every-5"])
    assert fires["far-one-shot"] == ["2031-06-01T12:00:30Z"]


def test_next_rejects_a_bad_after(good_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        scheduler_main(["next", "--file", str(good_file), "--after", "tomorrow"])
    assert info.value.code == 2
    assert "RFC 3339" in capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        scheduler_main([])
    assert info.value.code == 2


def test_the_lease_and_the_lease_extension_have_one_default_each() -> None:
    """`scion-worker run`, RunOptions and the pipeline share the takeover budget's values."""
    from worker.cli import build_parser, run_options
    from worker.pipeline import DEFAULT_LEASE
    from worker.run_options import DEFAULT_MAX_LEASE_EXTENSION, RunOptions

    options = run_options(build_parser().parse_args(["run", "--health-port", "0"]))
    assert options.lease == RunOptions().lease == DEFAULT_LEASE == timedelta(seconds=12)
    assert options.max_lease_extension == DEFAULT_MAX_LEASE_EXTENSION == timedelta(seconds=10)
    assert options == RunOptions(health_port=0)


def test_stop_on_signals_sets_the_event_and_puts_the_handlers_back() -> None:
    import signal

    from scheduler.cli_base import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        assert stop.signals == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before
