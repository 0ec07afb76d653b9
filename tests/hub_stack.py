"""The end-to-end stack against the reference hub: the Cloud Scheduler, Pub/Sub and Firestore
emulators, the settings that point at them, `scion-scheduler` in process and `scion-worker run`
processes (the `stack` fixture), and ways to read what reached the hub and the ledger."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from emulated_control import operator_env

from scheduler.config import Settings
from scheduler.contract import execution_id
from scheduler.gcp import (
    cloud_scheduler_client,
    firestore_client,
    publisher_client,
    subscriber_client,
)
from scheduler.model import format_instant
from scion_scheduler.cli import main
from scion_scheduler.google_emulators import free_port
from scion_scheduler.reference_hub import FireCall, ReferenceHub
from worker.firestore_ledger import FirestoreLedger
from worker.ledger import Execution

TOKEN = "hub-token-e2e"


WORKER = str(Path(sys.executable).with_name("scion-worker"))


@dataclass
class Stack:
    """The emulators, the settings that point at them, the reference hub and the workers."""

    settings: Settings
    env: dict[str, str]
    hub: ReferenceHub
    tmp: Path
    capsys: pytest.CaptureFixture[str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def sync(self, data: Any, *flags: str) -> dict[str, Any]:
        """`scion-scheduler sync --format scion` of a hub document; the JSON it printed."""
        path = self.tmp / f"hub-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        self.capsys.readouterr()
        try:
            code = main(
                ["sync", "--file", str(path), "--format", "scion", "--output", "json", *flags]
            )
        finally:
            # main() pointed structlog at the captured stream; the hub's threads log on.
            structlog.reset_defaults()
        out: dict[str, Any] = json.loads(self.capsys.readouterr().out)
        assert code == 0, out
        return out

    def run_now(self, item_id: str) -> str:
        """`scion-scheduler run ID`: a manual fire through Pub/Sub; its execution ID."""
        self.capsys.readouterr()
        try:
            code = main(["run", item_id, "--output", "json"])
        finally:
            structlog.reset_defaults()
        out: dict[str, Any] = json.loads(self.capsys.readouterr().out)
        assert code == 0, out
        return str(out["execution_id"])

    def jobs(self) -> dict[str, Any]:
        """Cloud Scheduler's jobs by ID."""
        client = cloud_scheduler_client(self.settings)
        return {
            j.name.rsplit("/", 1)[-1]: j
            for j in client.list_jobs(parent=self.settings.location_path)
        }

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """A `scion-worker run` process (its log in the test's tmp dir)."""
        log = (self.tmp / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [
                WORKER,
                "run",
                "--health-port",
                str(free_port()),
                "--lease",
                "5",
                "--grace-period",
                "1",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.workers.append(process)
        return process

    def redeliver(self, item_id: str) -> None:
        """Publish a job's own message (data and attributes) again, as a redelivery would."""
        job = self.jobs()[f"scion-{item_id}"]
        publisher_client(self.settings).publish(
            self.settings.topic_path, job.pubsub_target.data, **dict(job.pubsub_target.attributes)
        ).result(timeout=30)

    def ledger(self) -> FirestoreLedger:
        """The execution history the workers wrote."""
        return FirestoreLedger(firestore_client(self.settings), collection_prefix="scion_")

    def logged(self, message: str, worker: str = "worker-*", **fields: str) -> bool:
        """Whether a worker (by default any) logged `message` with these fields (their logs are
        JSON lines)."""
        for path in self.tmp.glob(f"{worker}.log"):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("message") == message and all(
                            entry.get(key) == value for key, value in fields.items()):
                        return True
        return False


@pytest.fixture
def stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
          cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
          project_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Stack]:
    """The stack; `indirect` parameters are passed to the `ReferenceHub`."""
    operator_env(monkeypatch, {
        "SCION_SCHEDULER_PROJECT": project_id, "SCION_SCHEDULER_LOCATION": "europe-west1",
        "SCION_SCHEDULER_TOPIC": "fires", "SCION_SCHEDULER_SUBSCRIPTION": "workers",
        "SCION_SCHEDULER_WRITE_RATE": "1000", "SCION_SCHEDULER_LOG_FORMAT": "json",
        "SCION_HUB_TOKEN": TOKEN,
        "SCION_SCHEDULER_ALLOWED_TARGETS": "127.0.0.1",  # the reference hub is on loopback
    })
    settings = Settings.from_env()
    publisher_client(settings).create_topic(name=settings.topic_path)
    subscriber_client(settings).create_subscription(
        name=settings.subscription_path, topic=settings.topic_path, ack_deadline_seconds=10)
    with ReferenceHub(token=TOKEN, **getattr(request, "param", {})) as hub:
        env = dict(os.environ) | {"SCION_HUB_URL": hub.url}
        running = Stack(settings, env, hub, tmp_path, capsys)
        try:
            yield running
        finally:
            for process in running.workers:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=10)
            structlog.reset_defaults()


def calls_for(calls: list[FireCall], item_id: str, fire_time: datetime) -> list[FireCall]:
    stamp = format_instant(fire_time)
    return [c for c in calls if c.item_id == item_id and c.body.get("fireTime") == stamp]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def record_of(ledger: FirestoreLedger, item_id: str, fire_time: datetime) -> Execution | None:
    return ledger.get(execution_id(item_id, fire_time))
