"""`scion-scheduler up` (what `make run` runs), driven as a newcomer would: a subprocess on a
real clock, stopped with Ctrl-C (SIGINT), then checked for its summary and leftover processes.

Leftovers are found by a marker variable in the environment given to `up`: every process it
starts inherits it (the emulators' gcloud and Java, the replicas), while the processes of other
test runs on the same machine do not carry it."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from terraform_hcl import MODULE_DIR as TERRAFORM_ROOT
from terraform_hcl import named
from worker_lines import one_fire

from scheduler.egress import EgressPolicy
from scheduler.validation import parse_schedule
from scion_scheduler import narration, replicas, stack
from scion_scheduler.reference_hub import ReferenceHub

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(Path(sys.executable).parent / "scion-scheduler")
MARKER = "UP_STACK_TEST_RUN"  # not SCION_*: `up` keeps those from its replicas
# Start-up plus one minute boundary: the every-minute schedule's slot must land in it.
FIRST_SCHEDULED_FIRE_S = 130.0
# Nothing listens there: a stack that used the caller's emulator variables would never start.
DEAD_HOST = "127.0.0.1:9"


def _marked_processes(marker: str) -> dict[int, str]:
    """PIDs and command lines of the live processes whose environment carries `marker`."""
    needle = f"{MARKER}={marker}".encode()
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie is gone already, only not yet reaped by its parent
            found[int(entry.name)] = command
    return found


def _left_after(marker: str, timeout: float) -> dict[int, str]:
    """The marked processes still alive after up to `timeout` seconds (a SIGKILLed process
    takes a moment to go)."""
    deadline = time.monotonic() + timeout
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _check_subscriptions(pubsub_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running stack's subscriptions are as terraform/pubsub.tf declares them."""
    from google.cloud import pubsub_v1

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_host)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        workers = subscriber.get_subscription(
            subscription="projects/scion-local/subscriptions/scion-fires-workers", timeout=30
        )
        dead_letters = subscriber.get_subscription(
            subscription="projects/scion-local/subscriptions/scion-fires-dead-letter-sub",
            timeout=30,
        )
    finally:
        subscriber.close()
    assert workers.topic == "projects/scion-local/topics/scion-fires"
    assert workers.ack_deadline_seconds == stack.ACK_DEADLINE_SECONDS
    assert (
        workers.retry_policy.minimum_backoff.total_seconds() == stack.RETRY_MINIMUM_BACKOFF_SECONDS
    )
    assert (
        workers.retry_policy.maximum_backoff.total_seconds() == stack.RETRY_MAXIMUM_BACKOFF_SECONDS
    )
    assert (
        workers.dead_letter_policy.dead_letter_topic
        == "projects/scion-local/topics/scion-fires-dead-letter"
    )
    assert workers.dead_letter_policy.max_delivery_attempts == stack.MAX_DELIVERY_ATTEMPTS
    assert dead_letters.topic == "projects/scion-local/topics/scion-fires-dead-letter"


def _env(marker: str, **extra: str) -> dict[str, str]:
    """The caller's environment as CI has it, emulator variables set (to a dead address here,
    which `up` must ignore), plus the marker."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCION_")}
    env.update({var: DEAD_HOST for var in stack.EMULATOR_VARS})
    env[MARKER] = marker
    env.update(extra)
    return env


def test_terraform_and_the_stack_create_the_same_subscription() -> None:
    variables = named(TERRAFORM_ROOT, "variable")
    assert variables["ack_deadline_seconds"]["default"] == stack.ACK_DEADLINE_SECONDS
    assert (
        variables["retry_minimum_backoff_seconds"]["default"] == stack.RETRY_MINIMUM_BACKOFF_SECONDS
    )
    assert (
        variables["retry_maximum_backoff_seconds"]["default"] == stack.RETRY_MAXIMUM_BACKOFF_SECONDS
    )
    assert variables["max_delivery_attempts"]["default"] == stack.MAX_DELIVERY_ATTEMPTS


def test_the_one_shot_is_a_whole_minute_at_least_a_minute_away() -> None:
    now = datetime(2026, 3, 1, 9, 0, 20, 5, tzinfo=UTC)
    assert stack.one_shot(now, "http://127.0.0.1:8087").at == datetime(2026, 3, 1, 9, 2, tzinfo=UTC)
    on_the_minute = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert stack.one_shot(on_the_minute, "http://x").at == datetime(2026, 3, 1, 9, 1, tzinfo=UTC)


def test_requests_to_the_documented_target_are_routed_to_the_running_one() -> None:
    def http(schedule_id: str, url: str) -> dict[str, object]:
        return {"id": schedule_id, "cron": "* * * * *", "action": {"type": "http", "url": url}}

    loopback = EgressPolicy.parse("*,127.0.0.1,localhost")
    schedules = [parse_schedule(http("a", "http://127.0.0.1:8087/ping?x=1"), egress=loopback),
                 parse_schedule(http("b", "http://localhost:8087/report"), egress=loopback),
                 parse_schedule(http("c", "https://example.com:8087/elsewhere"), egress=loopback),
                 parse_schedule(http("d", "http://127.0.0.1:9000/other"), egress=loopback)]
    routed = stack.route_to_target(schedules, "http://127.0.0.1:41234")
    assert [s.action.params["url"] for s in routed] == [
        "http://127.0.0.1:41234/ping?x=1", "http://127.0.0.1:41234/report",
        "https://example.com:8087/elsewhere", "http://127.0.0.1:9000/other"]
    on_8087 = stack.route_to_target(schedules, "http://127.0.0.1:8087")
    assert on_8087[1].action.params["url"] == "http://127.0.0.1:8087/report"  # localhost may be ::1
    assert [on_8087[i] for i in (0, 2, 3)] == [schedules[i] for i in (0, 2, 3)]


def test_the_target_takes_a_free_port_when_8087_is_taken() -> None:
    holder = socket.socket()
    try:
        # Another process may hold 8087 already; either way it is taken while this runs.
        # SO_REUSEADDR as the target sets it: without it, connections of an earlier run still
        # in TIME_WAIT would fail this bind and leave the port free.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind((stack.TARGET_HOST, stack.TARGET_PORT))
            holder.listen()
        except OSError:
            pass
        target = stack.start_target(narration.Account(io.StringIO()))
        try:
            assert not target.url.endswith(f":{stack.TARGET_PORT}")
        finally:
            target.stop()
    finally:
        holder.close()


def test_the_target_records_every_method() -> None:
    out = io.StringIO()
    account = narration.Account(out)
    with ReferenceHub(on_call=account.target_call) as hub:
        request = urllib.request.Request(
            f"{hub.url}/items/7",
            data=b'{"n": 1}',
            method="PUT",
            headers={"Idempotency-Key": "e1", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    (call,) = account.target_calls
    assert (call.method, call.item_id, call.idempotency_key, call.body) == (
        "PUT",
        "/items/7",
        "e1",
        {"n": 1},
    )
    assert "target: PUT /items/7 (Idempotency-Key e1)" in out.getvalue()


@pytest.mark.parametrize(
    ("second", "delay"), [(30.0, 0.0), (59.5, 5.5), (1.0, 4.0), (5.0, 0.0), (55.0, 0.0)]
)
def test_the_sync_and_the_manual_run_keep_clear_of_a_minute_boundary(
    second: float, delay: float
) -> None:
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(seconds=second)
    assert stack.boundary_delay(now) == pytest.approx(delay)


def test_the_account_reads_the_replicas_json_lines() -> None:
    out = io.StringIO()
    account = narration.Account(out)
    fire = {"schedule_id": "every-minute-ping", "fire_time": "2026-03-01T09:00:00Z",
            "execution_id": "e1", "trigger": "scheduled", "attempt": 1}
    for replica, line in one_fire("host-1-ab", "s", fire, "2026-03-01T09:00:00.100Z",
                                  "2026-03-01T09:00:00.114Z", fire):
        account.worker_line(replica, line)
    account.worker_line("replica-1", "not json: a stray line is ignored")
    text = out.getvalue()
    assert "replica-1: ready as worker host-1-ab, pulling s" in text
    assert (
        "replica-2: every-minute-ping @ 2026-03-01T09:00:00Z (scheduled) -> "
        "succeeded (HTTP 200, 14 ms)"
    ) in text
    assert (
        "replica-1: duplicate delivery of every-minute-ping @ 2026-03-01T09:00:00Z "
        "(scheduled) suppressed"
    ) in text
    summary = account.summary()
    assert (
        "fires delivered:        1" in summary and "executions:             1 succeeded" in summary
    )
    assert "duplicates suppressed:  1" in summary and "failures:               0" in summary


def _up_briefly(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`scion-scheduler up` for at most 5 s, its work directory under `tmp_path`."""
    return subprocess.run([SCRIPT, "up", "--duration", "5", "--workdir", str(tmp_path / "work")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_up_without_gcloud_fails_clearly_and_starts_nothing(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    env = _env(marker, PATH=str(Path(sys.executable).parent))
    done = _up_briefly(tmp_path, env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: gcloud is not on PATH"), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "work").exists()
    assert _marked_processes(marker) == {}


def test_up_without_java_fails_clearly_and_starts_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gcloud").write_text("#!/bin/sh\nexit 1\n")
    (fake / "gcloud").chmod(0o755)
    marker = uuid.uuid4().hex
    env = _env(marker, PATH=f"{Path(sys.executable).parent}{os.pathsep}{fake}")
    done = _up_briefly(tmp_path, env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: java is not on PATH"), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "work").exists()
    assert _marked_processes(marker) == {}


@pytest.mark.parametrize(("args", "message"), [
    (["--duration", "0"], "error: --duration: must be a positive number of seconds"),
    (["--project", "Not A Project"], "error: --project: 'Not A Project' is not a project ID"),
])
def test_up_rejects_bad_flags(args: list[str], message: str) -> None:
    done = subprocess.run([SCRIPT, "up", *args], env=_env(uuid.uuid4().hex), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(message), done.stderr


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_up_shows_fires_landing_and_stops_everything_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = uuid.uuid4().hex
    process = subprocess.Popen(
        [SCRIPT, "up", "--duration", "600", "--workdir", str(tmp_path)], env=_env(marker), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + FIRST_SCHEDULED_FIRE_S
        while time.monotonic() < deadline and process.poll() is None:
            text = "".join(lines)
            if "(scheduled) -> succeeded" in text and "suppressed (already " in text:
                break
            time.sleep(0.5)
        text = "".join(lines)
        assert "(scheduled) -> succeeded (HTTP 200, " in text, text
        assert "target: POST /ping (Idempotency-Key " in text, text
        assert "injected a duplicate delivery" in text and "suppressed (already " in text, text
        assert "replica-1: ready as worker" in text and "replica-2: ready as worker" in text, text
        pubsub_host = re.search(r"Pub/Sub (127\.0\.0\.1:\d+),", text)
        assert pubsub_host is not None, text
        _check_subscriptions(pubsub_host[1], monkeypatch)
        running = _marked_processes(marker)
        assert sum("scion-worker" in command for command in running.values()) == 2, running
        assert sum("java" in command for command in running.values()) >= 2, running
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
        left = _left_after(marker, 10)
    finally:
        # Whatever the outcome, nothing of this run may outlive the test.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for pid in _marked_processes(marker):
            os.kill(pid, signal.SIGKILL)
    reader.join(timeout=10)
    text = "".join(lines)
    assert "stopped everything it started; logs in" in text
    assert "runs paused-report" not in text, text
    assert "summary after" in text
    assert "duplicates suppressed:  1" in text
    assert "failures:               0" in text
    assert "no execution twice" in text
    assert (
        int(text.split("fires delivered:")[1].split()[0]) >= 2
    )  # the manual run and a scheduled slot
    assert {"pubsub.log", "firestore.log", "replica-1.log", "replica-2.log"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert left == {}, f"processes left behind: {left}"


@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_a_start_up_failing_halfway_stops_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replicas fail after the emulators, the target and the sync are up: all of it stops,
    and the caller's emulator variables are as they were."""
    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, marker)
    for var in stack.EMULATOR_VARS:
        monkeypatch.setenv(var, DEAD_HOST)
    monkeypatch.setattr(replicas, "worker_command", lambda: "false")
    out = io.StringIO()
    # Both replicas run `false`; which exit is seen first is a race.
    with pytest.raises(stack.StackError, match=r"replica-[12] exited at start"):
        stack.run_stack(REPO / "examples" / "schedules.yaml", tmp_path, threading.Event(), out)
    assert "synced 4 schedules" in out.getvalue()
    assert _left_after(marker, 10) == {}
    assert {os.environ[var] for var in stack.EMULATOR_VARS} == {DEAD_HOST}
