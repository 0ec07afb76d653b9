"""The Cloud Scheduler emulator through the official client: its command serves, logs, fires and
stops (helpers: `cloud_scheduler_harness`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from cloud_scheduler_harness import JobFactory
from emulator_helpers import eventually
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1

from scheduler.config import Settings
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.gcp import cloud_scheduler_client
from scion_scheduler.google_emulators import free_port

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


# -- the command --------------------------------------------------------------------------------


def _command(port: int, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`scion-scheduler emulator` in a subprocess, logging JSON lines on stderr."""
    command = [sys.executable, "-m", "scion_scheduler.cli", "--log-format", "json", "emulator",
               "--port", str(port), *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _stop(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """SIGTERM, wait, check the exit status; returns the JSON log lines."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


def test_command_serves_logs_fires_and_stops_on_sigterm(
    tmp_path: Any,
    parent: str,
    make_job: JobFactory,
    pubsub_emulator: str,
    pubsub: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, sub = pubsub.topic("fires")  # make_job's topic
    port = free_port()
    process = _command(
        port,
        "--pubsub-host",
        pubsub_emulator,
        "--state-file",
        str(tmp_path / "jobs.json"),
        "--log-level",
        "DEBUG",
    )
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", f"127.0.0.1:{port}")
        client = cloud_scheduler_client(Settings.from_env())
        # ListJobs retries UNAVAILABLE by default, so it also waits for the server to come up.
        assert list(client.list_jobs(parent=parent, timeout=30)) == []
        created = client.create_job(parent=parent, job=make_job())
        assert client.get_job(name=created.name) == created
        assert [j.name for j in client.list_jobs(parent=parent)] == [created.name]
        client.run_job(name=created.name)
        assert len(pubsub.pull(sub, wait=30)) == 1
        # The fire is logged right after its result lands in the job's status.
        assert eventually(lambda: scheduler_v1.Job.pb(client.get_job(name=created.name))
                          .HasField("status"),
                           timeout=30)
    finally:
        lines = _stop(process)
    events = [line["message"] for line in lines]
    assert "ready" in events and "api call" in events and "stopping" in events
    [ready] = [line for line in lines if line["message"] == "ready"]
    assert (
        isinstance(ready["startup_seconds"], float | int) and ready["host"] == f"127.0.0.1:{port}"
    )
    [fired] = [line for line in lines if line["message"] == "job fired"]
    assert fired["job"] == created.name and fired["trigger"] == "manual" and fired["message_id"]
    assert json.loads((tmp_path / "jobs.json").read_text())["jobs"][0]["name"] == created.name


def test_command_publishes_to_pubsub_emulator_host_by_default(
    parent: str,
    make_job: JobFactory,
    pubsub_emulator: str,
    pubsub: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, sub = pubsub.topic("fires")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CLOUD_SCHEDULER_EMULATOR_HOST"}
    env["PUBSUB_EMULATOR_HOST"] = pubsub_emulator
    process = _command(port, env=env)  # no --pubsub-host
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", f"127.0.0.1:{port}")
        client = cloud_scheduler_client(Settings.from_env())
        assert list(client.list_jobs(parent=parent, timeout=30)) == []
        created = client.create_job(parent=parent, job=make_job(pubsub_target={
            "topic_name": topic, "data": b"from-env"}))
        client.run_job(name=created.name)
        [message] = pubsub.pull(sub, wait=30)
        assert message.data == b"from-env"
    finally:
        lines = _stop(process)
    [started] = [line for line in lines if line["message"] == "cloud scheduler emulator started"]
    assert started["pubsub_host"] == pubsub_emulator


def test_command_fault_flags(
    parent: str, make_job: JobFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    process = _command(
        port, "--fail-rate", "1", "--fail-code", "RESOURCE_EXHAUSTED", "--fail-method", "GetJob"
    )
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", f"127.0.0.1:{port}")
        client = cloud_scheduler_client(Settings.from_env())
        assert list(client.list_jobs(parent=parent, timeout=30)) == []
        created = client.create_job(parent=parent, job=make_job())
        with pytest.raises(gexc.ResourceExhausted):
            client.get_job(name=created.name, retry=None)
        assert [j.name for j in client.list_jobs(parent=parent, retry=None)] == [created.name]
    finally:
        lines = _stop(process)
    [faults] = [line for line in lines if line["message"] == "fault injection on"]
    assert faults["codes"] == ["RESOURCE_EXHAUSTED"] and faults["methods"] == ["GetJob"]


def test_command_refuses_a_taken_port(tmp_path: Any) -> None:
    with CloudSchedulerEmulator() as running:
        result = subprocess.run(
            [sys.executable, "-m", "scion_scheduler.cli", "emulator", "--port", str(running.port)],
            capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert b"cannot listen" in result.stderr
