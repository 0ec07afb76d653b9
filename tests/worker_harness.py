"""What the worker's end-to-end tests share: a recording HTTP target, a per-test Pub/Sub topic,
subscription and dead-letter topic, and `scion-worker run` processes pointed at the emulators.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.contract import Message, build_message
from scheduler.egress import EgressPolicy
from scheduler.model import Schedule
from scheduler.validation import parse_schedule
from scion_scheduler.google_emulators import free_port
from worker.firestore_ledger import FirestoreLedger

SIGNING_KEY = "e2e-signing-key"
# The target listens on loopback, which the egress policy refuses unless named.
LOOPBACK_TARGETS = "127.0.0.1"
LOOPBACK = EgressPolicy.parse(LOOPBACK_TARGETS)
# An upper bound for something to happen; no test depends on its size. Generous because the
# Pub/Sub emulator keeps routing messages to a dead subscriber's stream for up to ~45 s.
WAIT_S = 120.0
VENV_BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition",
             interval: float = 0.1) -> None:
    """Poll until `predicate()` holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Hit:
    """One request the target received."""

    path: str
    key: str
    attempt: int
    schedule_id: str
    fire_time: str
    started: float
    finished: float | None = None


class Target:
    """A local HTTP server the http action calls. Paths: `/ok` (200), `/fail` (500),
    `/slow/<seconds>` (200 after a pause), `/block/<gate>` (200 once `release(gate)`)."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                hit = Hit(self.path, self.headers.get("Idempotency-Key", ""),
                          int(self.headers.get("X-Scion-Attempt", "0")),
                          unquote(self.headers.get("X-Scion-Schedule-Id", "")),
                          self.headers.get("X-Scion-Fire-Time", ""), time.monotonic())
                with target.lock:
                    target.hits.append(hit)
                status = target.respond(self.path)
                hit.finished = time.monotonic()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _gate(self, name: str) -> threading.Event:
        with self.lock:
            return self._gates.setdefault(name, threading.Event())

    def respond(self, path: str) -> int:
        """The status to answer a request for `path` (a subclass may answer its own paths)."""
        parts = path.strip("/").split("/")
        if parts[0] == "fail":
            return 500
        if parts[0] == "slow":
            time.sleep(float(parts[1]))
        elif parts[0] == "block":
            self._gate(parts[1]).wait(WAIT_S)
        return 200

    def release(self, gate: str) -> None:
        """Let every request blocked on `gate` (and any later one) answer."""
        self._gate(gate).set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def for_key(self, key: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.key == key]

    def counts(self) -> dict[str, int]:
        """Requests per Idempotency-Key."""
        with self.lock:
            out: dict[str, int] = {}
            for hit in self.hits:
                out[hit.key] = out.get(hit.key, 0) + 1
            return out

    def close(self) -> None:
        for gate in list(self._gates.values()):
            gate.set()
        self._server.shutdown()
        self._server.server_close()


class Worker:
    """One `scion-worker run` process."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  # closed in wait()/close()
        self.process = subprocess.Popen(
            [str(VENV_BIN / "scion-worker"), "run", "--health-port", str(self.port), *args],
            env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str) -> tuple[int, str]:
        """The status and body of the worker's health server at `path` (0 when it does not
        answer)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=5
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError):
            return 0, ""

    def ready(self) -> bool:
        """`/readyz` answers 200."""
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = WAIT_S) -> None:
        wait_for(lambda: self.ready() or self.process.poll() is not None, timeout,
                 f"worker {self.name} to be ready")
        assert self.process.poll() is None, f"worker {self.name} exited: {self.log_tail()}"

    def metrics(self) -> dict[str, float]:
        """Samples by `name{label=value,...}` (labels sorted), from `/metrics`."""
        status, body = self.get("/metrics")
        assert status == 200
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def outcome(self, outcome: str) -> float:
        return self.metrics().get(f"scion_worker_executions_total{{outcome={outcome}}}", 0.0)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def wait(self, timeout: float = WAIT_S) -> int:
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@dataclass
class Stack:
    """A fresh topic, subscription (ack deadline 10 s, dead-letter policy after 5 attempts) and
    dead-letter topic under `project`, workers pointed at them, and a target for their actions."""

    project: str
    tmp: Path
    pubsub_host: str
    firestore_host: str
    target: Target = field(default_factory=Target)
    workers: list[Worker] = field(default_factory=list)
    # Settings every process of the stack gets: the mode's (`fire_source`).
    mode_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from google.cloud import firestore, pubsub_v1

        # The clients read the variable when they are made; `close` puts it back, or a later
        # test on this process would reach a private emulator this test stopped.
        self._saved_pubsub_host = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.pubsub_host
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.topic_path(self.project, "fires")
        self.dead_letter_topic = self.publisher.topic_path(self.project, "fires-dead-letter")
        self.subscription = self.subscriber.subscription_path(self.project, "workers")
        self.dead_letter_subscription = self.subscriber.subscription_path(
            self.project, "dead-letter"
        )
        self.create_resources()
        self.ledger = FirestoreLedger(firestore.Client(project=self.project))

    def create_resources(self) -> None:
        """What Terraform creates (the emulator has no retry-policy backoff)."""
        self.publisher.create_topic(name=self.topic)
        self.publisher.create_topic(name=self.dead_letter_topic)
        self.subscriber.create_subscription(request={
            "name": self.subscription, "topic": self.topic, "ack_deadline_seconds": 10,
            "dead_letter_policy": {"dead_letter_topic": self.dead_letter_topic,
                                   "max_delivery_attempts": 5},
        })
        self.subscriber.create_subscription(name=self.dead_letter_subscription,
                                            topic=self.dead_letter_topic)

    def schedule(self, schedule_id: str, path: str, **fields: Any) -> Schedule:
        """A schedule whose http action calls `path` on the target."""
        raw = {"id": schedule_id, "cron": "* * * * *", "overlap": "allow",
               "action": {"type": "http", "url": self.target.url(path), "timeout": 30}}
        raw.update(fields)
        return parse_schedule(raw, egress=LOOPBACK)

    def publish(self, message: Message) -> str:
        future = self.publisher.publish(self.topic, message.data, **message.attributes)
        return str(future.result(timeout=WAIT_S))

    def publish_many(self, messages: Sequence[Message], topic: str | None = None) -> list[str]:
        """Publish to `topic` (the stack's by default); the message IDs."""
        futures = [self.publisher.publish(topic or self.topic, m.data, **m.attributes)
                   for m in messages]
        return [str(f.result(timeout=WAIT_S)) for f in futures]

    def manual(self, schedule: Schedule, fire_time: datetime) -> Message:
        """A signed run-now message with an exact fire time."""
        return build_message(
            schedule, signing_key=SIGNING_KEY, trigger="manual", fire_time=fire_time
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "SCION_SCHEDULER_PROJECT": self.project,
            "SCION_SCHEDULER_SUBSCRIPTION": "workers",
            "SCION_SCHEDULER_SIGNING_KEY": SIGNING_KEY,
            "SCION_SCHEDULER_LOG_FORMAT": "json",
            "SCION_SCHEDULER_ALLOWED_TARGETS": LOOPBACK_TARGETS,
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("PORT", None)
        env.update(self.mode_env)
        env.update(extra)
        return env

    def start_worker(self, *args: str, **env: str) -> Worker:
        """A worker named `w<n>`, the n-th of them."""
        count = sum(w.name.startswith("w") for w in self.workers)
        return self.add_worker(f"w{count + 1}", args, env)

    def add_worker(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Worker:
        """A worker with its own `name`, closed with the stack."""
        worker = Worker(name, list(args), self.env(**env), self.tmp / f"{name}.log")
        self.workers.append(worker)
        return worker

    def dead_letters(self) -> list[Any]:
        """Messages on the dead-letter subscription (acked as they are read)."""
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(subscription=self.dead_letter_subscription,
                                            max_messages=100, timeout=5)
        except exceptions.DeadlineExceeded:
            return []
        if response.received_messages:
            self.subscriber.acknowledge(subscription=self.dead_letter_subscription,
                                        ack_ids=[m.ack_id for m in response.received_messages])
        return [m.message for m in response.received_messages]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
            # Shown by pytest only when the test failed.
            sys.stdout.write(
                f"--- {worker.name} (pid {worker.pid}) log tail\n{worker.log_tail()}\n"
            )
        self.target.close()
        with contextlib.suppress(Exception):
            self.subscriber.close()
        if self._saved_pubsub_host is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = self._saved_pubsub_host


@pytest.fixture(name="stack")
def stack_fixture(pubsub_emulator: str, firestore_emulator: str, project_id: str,
                  tmp_path: Path) -> Iterator[Stack]:
    """A `Stack` for one test, closed after it: a test module takes it as its `stack` fixture
    by importing `stack_fixture`."""
    stack = Stack(project_id, tmp_path, pubsub_emulator, firestore_emulator)
    try:
        yield stack
    finally:
        stack.close()
