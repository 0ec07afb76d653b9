"""`scion-scheduler up` (what `make run` runs), driven as a newcomer would: a subprocess on a
real clock, stopped with Ctrl-C (SIGINT), then checked for its summary and leftover processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_terraform import MODULE_DIR as TERRAFORM_ROOT
from test_terraform import named

from scion_scheduler import stack

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(Path(sys.executable).parent / "scion-scheduler")
# One minute boundary plus start-up: the every-minute schedule's slot must land in it.
FIRST_SCHEDULED_FIRE_S = 130.0


def _our_processes() -> dict[int, str]:
    """PIDs and command lines of the processes `up` starts: the emulators' gcloud and Java
    processes and the worker replicas."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in command for marker in ("java", "gcloud", "scion-worker")):
            found[int(entry.parent.name)] = command
    return found


def _clean_env() -> dict[str, str]:
    """A newcomer's environment: none of the test session's emulator variables."""
    return {key: value for key, value in os.environ.items()
            if key not in stack.EMULATOR_VARS and not key.startswith("SCION_")}


def test_terraform_and_the_stack_create_the_same_subscription() -> None:
    variables = named(TERRAFORM_ROOT, "variable")
    assert variables["ack_deadline_seconds"]["default"] == stack.ACK_DEADLINE_SECONDS
    assert variables["retry_minimum_backoff_seconds"]["default"] == stack.RETRY_MINIMUM_BACKOFF_SECONDS
    assert variables["retry_maximum_backoff_seconds"]["default"] == stack.RETRY_MAXIMUM_BACKOFF_SECONDS
    assert variables["max_delivery_attempts"]["default"] == stack.MAX_DELIVERY_ATTEMPTS


def test_the_one_shot_is_a_whole_minute_at_least_a_minute_away() -> None:
    now = datetime(2026, 3, 1, 9, 0, 20, 5, tzinfo=UTC)
    assert stack.one_shot(now, "http://127.0.0.1:8087").at == datetime(2026, 3, 1, 9, 2, tzinfo=UTC)
    on_the_minute = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert stack.one_shot(on_the_minute, "http://x").at == datetime(2026, 3, 1, 9, 1, tzinfo=UTC)


def test_up_without_gcloud_or_java_fails_clearly_and_starts_nothing(tmp_path: Path) -> None:
    env = _clean_env() | {"PATH": str(Path(sys.executable).parent)}
    before = set(_our_processes())
    done = subprocess.run([SCRIPT, "up", "--duration", "5", "--workdir", str(tmp_path)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "error: gcloud is not on PATH" in done.stderr
    assert "Traceback" not in done.stderr
    assert set(_our_processes()) - before == set()


def test_up_rejects_a_bad_duration() -> None:
    done = subprocess.run([SCRIPT, "up", "--duration", "0"], env=_clean_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--duration: must be a positive number" in done.stderr


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_up_shows_fires_landing_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    before = set(_our_processes())
    process = subprocess.Popen(
        [SCRIPT, "up", "--duration", "600", "--workdir", str(tmp_path)], env=_clean_env(), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + FIRST_SCHEDULED_FIRE_S
        while time.monotonic() < deadline and process.poll() is None:
            text = "".join(lines)
            if "(scheduled) -> succeeded" in text and "suppressed (already succeeded)" in text:
                break
            time.sleep(0.5)
        text = "".join(lines)
        assert "(scheduled) -> succeeded" in text, text
        assert "target: POST /ping" in text, text
        assert "injected a duplicate delivery" in text and "suppressed (already succeeded)" in text, text
        assert {"replica-1: ready", "replica-2: ready"} <= {
            line.split("  ", 1)[1].split(",")[0] for line in lines if "ready, pulling" in line}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    reader.join(timeout=10)
    text = "".join(lines)
    assert "summary after" in text
    assert "duplicates suppressed:  1" in text
    assert "failures:               0" in text
    assert "no execution twice" in text
    fires = int(text.split("fires run:")[1].split()[0])
    assert fires >= 2  # the manual run and at least one scheduled slot
    deadline = time.monotonic() + 10
    while set(_our_processes()) - before and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {pid: command for pid, command in _our_processes().items() if pid not in before}
    assert left == {}, f"processes left behind: {left}"
