"""`scion-scheduler up`: the whole HA stack on this machine, in one command.

Starts Google's Pub/Sub and Firestore emulators and this project's Cloud Scheduler emulator on
free ports, creates the topic, subscription and dead-letter topic as Terraform does, starts the
reference hub as the recording target of the actions (port 8087, the address the example
schedules call), syncs the schedule file into the Cloud Scheduler emulator through
`SchedulerControl` (the hub's own code path), and runs two `scion-worker run` replicas on the
one subscription. It then shows what a newcomer wants to see: a manual run at once, a
duplicate delivery of it that a replica suppresses, the scheduled fires as they come, which
replica ran each, and the outcomes; on Ctrl-C, SIGTERM or `--duration` a summary, after
which every process it started is stopped.

The account is built from the replicas' JSON log lines (one reader thread per replica) and the
calls the target records. Raw logs of the emulators and replicas stay in the work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TextIO

from scheduler.config import Settings
from scheduler.contract import build_message
from scheduler.control import SchedulerControl
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.model import Schedule, format_instant
from scheduler.validation import load_schedules, parse_schedule
from scion_scheduler.emulators import Emulator, check_prerequisites, free_port
from scion_scheduler.reference_hub import FireCall, ReferenceHub

PROJECT = "scion-local"
TARGET_PORT = 8087
REPLICAS = 2
SIGNING_KEY = "scion-local-demo-key"
ONE_SHOT_ID = "one-shot-demo"
ONE_SHOT_DELAY = timedelta(seconds=60)
# The subscription as terraform/variables.tf sets it by default (tests/test_local_stack.py
# checks that the two agree).
ACK_DEADLINE_SECONDS = 60
RETRY_MINIMUM_BACKOFF_SECONDS = 10
RETRY_MAXIMUM_BACKOFF_SECONDS = 600
MAX_DELIVERY_ATTEMPTS = 10
WORKER_GRACE_SECONDS = 5
READY_TIMEOUT_SECONDS = 60.0
EMULATOR_VARS = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "CLOUD_SCHEDULER_EMULATOR_HOST")


class StackError(RuntimeError):
    """The stack could not start; the message says what failed and where its log is."""


def one_shot(now: datetime, target_url: str) -> Schedule:
    """The demo's one-shot: the first whole minute at least a minute from `now` (Cloud Scheduler
    fires on whole minutes), computed when the stack starts, since a file cannot hold "a minute
    from now"."""
    soon = now + ONE_SHOT_DELAY
    at = soon.replace(second=0, microsecond=0)
    if at < soon:
        at += timedelta(minutes=1)
    return parse_schedule({"id": ONE_SHOT_ID, "at": format_instant(at),
                           "description": "added by `up`: a one-shot a minute after start",
                           "action": {"type": "http", "url": f"{target_url}/one-shot"}})


@dataclass
class Account:
    """The live account: one readable line per event, and the tallies for the summary."""

    out: TextIO
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[str] = field(default_factory=Counter)
    fires: set[str] = field(default_factory=set)
    duplicates: int = 0
    deferred: int = 0
    failures: int = 0
    target_calls: list[FireCall] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def say(self, text: str) -> None:
        """Print one line, stamped with the wall-clock time."""
        with self._lock:
            print(f"{datetime.now(UTC):%H:%M:%S}  {text}", file=self.out, flush=True)

    def worker_line(self, replica: str, line: str) -> None:
        """Account for one log line of a replica (JSON; anything else is ignored here)."""
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        message = str(event.get("message", ""))
        schedule_id, fire_time = event.get("schedule_id", "?"), event.get("fire_time", "?")
        eid = str(event.get("execution_id", ""))
        what = f"{schedule_id} @ {fire_time} ({event.get('trigger', '?')})"
        with self._lock:
            if message == "worker starting":
                self.say(f"{replica}: ready, pulling {event.get('subscription', '')}")
            elif message == "action starting":
                self.fires.add(eid)
                self.say(f"{replica}: runs {what}, attempt {event.get('attempt')}")
            elif message == "action finished":
                self._finish(eid, str(event.get("state", "succeeded")))
                self.say(f"{replica}: {what} -> {event.get('state')}")
            elif message.startswith("action failed"):
                self.failures += 1
                if "redelivery will retry" not in message:
                    self._finish(eid, "failed")
                self.say(f"{replica}: {what} -> {message}: {event.get('error')}")
            elif message == "duplicate delivery of a finished fire":
                self.duplicates += 1
                self.say(f"{replica}: duplicate delivery of {what} suppressed (already {event.get('state')})")
            elif message.startswith("fire is running on another worker"):
                self.deferred += 1
                self.say(f"{replica}: {what} is running on another replica; delivery deferred")
            elif message.startswith("fire skipped") or message == "fire missed":
                self._finish(eid, "skipped" if message.startswith("fire skipped") else "missed")
                self.say(f"{replica}: {what} {message}")
            elif message == "message rejected":
                self.say(f"{replica}: message rejected: {event.get('reason')}")

    def _finish(self, eid: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.finished[eid] = outcome
        self._lock.notify_all()

    def target_call(self, call: FireCall) -> None:
        """Account for one request the target received."""
        with self._lock:
            self.target_calls.append(call)
        self.say(f"target: POST {call.item_id} (Idempotency-Key {call.idempotency_key})")

    def wait_finished(self, eid: str, timeout: float) -> bool:
        """Block until the execution `eid` has an outcome; False after `timeout` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: eid in self.finished, timeout)

    def summary(self) -> str:
        """The closing summary."""
        with self._lock:
            keys = Counter(c.idempotency_key for c in self.target_calls)
            doubles = sum(1 for n in keys.values() if n > 1)
            outcomes = ", ".join(f"{n} {name}" for name, n in sorted(self.outcomes.items())) or "none"
            return "\n".join([
                f"summary after {time.monotonic() - self.started:.0f}s:",
                f"  fires run:              {len(self.fires)}",
                f"  executions:             {outcomes}",
                f"  duplicates suppressed:  {self.duplicates} (+{self.deferred} deferred while running)",
                f"  failures:               {self.failures}",
                f"  target requests:        {len(self.target_calls)}, "
                f"{'no execution twice' if not doubles else f'{doubles} executions received twice'}",
            ])


class Replica:
    """One `scion-worker run` process in its own session, its log lines fed to the account
    and copied to a file."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path, account: Account) -> None:
        self.name = name
        self.health_port = free_port()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [_worker_command(), "run", "--health-port", str(self.health_port),
             "--grace-period", str(WORKER_GRACE_SECONDS)],
            env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(account,), name=f"{name}-log", daemon=True)
        self._reader.start()

    def _read(self, account: Account) -> None:
        assert self.process.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as copy:
            for raw in _lines(self.process.stdout):
                copy.write(raw + "\n")
                copy.flush()
                account.worker_line(self.name, raw)

    def ready(self) -> bool:
        """`/readyz` answers 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """SIGTERM (the worker drains), then SIGKILL the whole session if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=WORKER_GRACE_SECONDS + 10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def _lines(stream: IO[bytes]) -> Iterator[str]:
    for raw in iter(stream.readline, b""):
        yield raw.decode("utf-8", errors="replace").rstrip("\n")


def _worker_command() -> str:
    """`scion-worker` next to this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / "scion-worker"
    return str(beside) if beside.exists() else (shutil.which("scion-worker") or "scion-worker")


def create_pubsub_resources(settings: Settings) -> None:
    """The topic, dead-letter topic (with a subscription that keeps dead letters) and the
    workers' subscription with Terraform's retry and dead-letter policies."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        dead_letter = f"{settings.topic_path}-dead-letter"
        publisher.create_topic(name=settings.topic_path)
        publisher.create_topic(name=dead_letter)
        subscriber.create_subscription(request={
            "name": f"{settings.subscription_path}-dead-letter", "topic": dead_letter,
            "ack_deadline_seconds": 60,
        })
        subscriber.create_subscription(request={
            "name": settings.subscription_path, "topic": settings.topic_path,
            "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
            "retry_policy": {"minimum_backoff": timedelta(seconds=RETRY_MINIMUM_BACKOFF_SECONDS),
                             "maximum_backoff": timedelta(seconds=RETRY_MAXIMUM_BACKOFF_SECONDS)},
            "dead_letter_policy": {"dead_letter_topic": dead_letter,
                                   "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS},
        })
    finally:
        subscriber.close()


def _start_emulators(emulators: list[Emulator]) -> None:
    # Both are Java and take a few seconds each: start them side by side.
    with ThreadPoolExecutor(len(emulators)) as pool:
        for future in [pool.submit(emulator.start) for emulator in emulators]:
            future.result()


def run_stack(schedule_file: Path, workdir: Path, stop: threading.Event, out: TextIO,
              duration: float | None = None) -> Account:
    """Run the stack until `stop` is set or `duration` seconds pass; returns the account,
    whose summary the caller prints. Everything started is stopped before it returns, also
    when starting fails halfway. Raises `EmulatorError` when gcloud or Java is missing."""
    check_prerequisites()
    schedules = load_schedules(schedule_file)
    workdir.mkdir(parents=True, exist_ok=True)
    account = Account(out)
    with contextlib.ExitStack() as started:
        account.say(f"starting the Pub/Sub and Firestore emulators (logs in {workdir})")
        emulators = [Emulator("pubsub", log_path=workdir / "pubsub.log"),
                     Emulator("firestore", log_path=workdir / "firestore.log")]
        for emulator in emulators:
            started.callback(emulator.stop)
        _start_emulators(emulators)
        for emulator in emulators:
            os.environ[emulator.env_var] = emulator.host
        scheduler_emulator = CloudSchedulerEmulator(port=0, pubsub_host=emulators[0].host).start()
        started.callback(scheduler_emulator.stop)
        os.environ["CLOUD_SCHEDULER_EMULATOR_HOST"] = scheduler_emulator.host
        target = ReferenceHub("127.0.0.1", TARGET_PORT, on_call=account.target_call).start()
        started.callback(target.stop)
        account.say(f"Pub/Sub {emulators[0].host}, Firestore {emulators[1].host}, Cloud Scheduler "
                    f"{scheduler_emulator.host}, target {target.url}")

        env = {key: value for key, value in os.environ.items() if not key.startswith("SCION_")}
        env.update({"SCION_SCHEDULER_PROJECT": PROJECT, "SCION_SCHEDULER_SIGNING_KEY": SIGNING_KEY,
                    "SCION_SCHEDULER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
        settings = Settings.from_env(env)
        create_pubsub_resources(settings)
        account.say(f"created {settings.topic_path}, its dead-letter topic and {settings.subscription_path}")

        schedules.append(one_shot(datetime.now(UTC), target.url))
        control = SchedulerControl(settings)
        started.callback(control.close)
        result = control.reconcile(schedules)
        account.say(f"synced {len(schedules)} schedules into Cloud Scheduler: "
                    f"{sum(1 for o in result.outcomes if o.ok)} steps applied"
                    + ("" if result.ok else f", {len(result.failed)} FAILED"))
        for schedule in schedules:
            when = schedule.cron or f"at {format_instant(schedule.at) if schedule.at else '?'}"
            state = "paused" if schedule.paused else "enabled"
            account.say(f"  {schedule.id}: {when} {schedule.timezone} ({state})")

        replicas = []
        for index in range(1, REPLICAS + 1):
            replica = Replica(f"replica-{index}", env, workdir / f"replica-{index}.log", account)
            started.callback(replica.stop)
            replicas.append(replica)
        _wait_ready(replicas, stop)

        threading.Thread(target=_demonstrate_duplicate, args=(control, schedules, account, settings),
                         name="duplicate-demo", daemon=True).start()
        account.say("running; Ctrl-C for a summary" + (f" (or after {duration:.0f}s)" if duration else ""))
        stop.wait(duration)
        account.say("stopping: replicas first (they drain), then the emulators")
    return account


def _wait_ready(replicas: list[Replica], stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not all(replica.ready() for replica in replicas):
        for replica in replicas:
            if replica.process.poll() is not None:
                raise StackError(f"{replica.name} exited at start; its log: {replica.log_path}")
        if time.monotonic() > deadline:
            raise StackError(f"the replicas were not ready within {READY_TIMEOUT_SECONDS:.0f}s")
        if stop.wait(0.2):
            return


def _demonstrate_duplicate(control: SchedulerControl, schedules: list[Schedule], account: Account,
                           settings: Settings) -> None:
    """Run the first enabled recurring schedule now, and once that fire is done, deliver the
    very same message again: the claim in Firestore makes the replica that gets it skip it."""
    schedule = next((s for s in schedules if s.cron and not s.paused), None)
    if schedule is None:
        return
    try:
        run = control.run_now(schedule.id, schedule)
        account.say(f"manual run of {schedule.id} published (execution {run.execution_id})")
        if not account.wait_finished(run.execution_id, 60):
            return
        message = build_message(schedule, signing_key=settings.signing_key or None, trigger="manual",
                                fire_time=run.fire_time)
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        publisher.publish(settings.topic_path, message.data, **message.attributes).result(timeout=30)
        account.say(f"injected a duplicate delivery of {schedule.id} @ {format_instant(run.fire_time)}")
    except Exception as exc:  # the demo goes on without it
        account.say(f"duplicate demonstration skipped: {type(exc).__name__}: {exc}")
