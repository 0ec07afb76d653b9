"""`scion-scheduler up`: the whole HA stack on this machine, in one command.

Starts Google's Pub/Sub and Firestore emulators and this project's Cloud Scheduler emulator on
free ports, creates the topic, subscription and dead-letter topic as Terraform does, starts the
reference hub as the recording target of the actions (on 127.0.0.1:8087, the address the example
schedules call; on a free port when 8087 is taken, with the schedules' URLs of that address
routed to it), syncs the schedule file into the Cloud Scheduler emulator through
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
import errno
import json
import os
import re
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TextIO
from urllib.parse import urlsplit, urlunsplit

from scheduler.config import Settings
from scheduler.contract import build_message
from scheduler.control import SchedulerControl, with_registry
from scheduler.egress import EgressPolicy
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.model import Schedule, format_instant, parse_instant
from scheduler.validation import load_schedules, parse_schedule
from scion_scheduler.errors import ScionSchedulerError
from scion_scheduler.google_emulators import Emulator, check_prerequisites, free_port
from scion_scheduler.reference_hub import FireCall, ReferenceHub

PROJECT = "scion-local"
# A Google Cloud project ID, as terraform/variables.tf validates var.project_id.
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
TARGET_HOST = "127.0.0.1"
# The port the example schedules' URLs name; requests to it go to the recording target.
TARGET_PORT = 8087
TARGET_ALIASES = frozenset({"127.0.0.1", "localhost"})
REPLICAS = 2
SIGNING_KEY = "scion-local-demo-key"
ONE_SHOT_ID = "one-shot-demo"
ONE_SHOT_DELAY = timedelta(seconds=60)
# The subscription as terraform/variables.tf sets it by default (tests/test_local_stack.py
# checks that the two agree).
ACK_DEADLINE_SECONDS = 10
RETRY_MINIMUM_BACKOFF_SECONDS = 10
RETRY_MAXIMUM_BACKOFF_SECONDS = 600
MAX_DELIVERY_ATTEMPTS = 10
WORKER_GRACE_SECONDS = 5
# The sync and the manual run keep this far from a minute boundary, where the jobs fire. A
# paused schedule's job is created ENABLED and then paused (Job.state is set only by PauseJob),
# so a slot between the two calls would fire it once; and a manual run meeting its schedule's
# slot would be skipped (overlap: skip) rather than run.
BOUNDARY_MARGIN_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 60.0
EMULATOR_VARS = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "CLOUD_SCHEDULER_EMULATOR_HOST")


def allowed_targets(*target_urls: str) -> str:
    """The stack's SCION_SCHEDULER_ALLOWED_TARGETS: any public address (`*`), and its own
    recording target, named, since a loopback address is refused unless named."""
    return ",".join(["*", *(f"{url.rstrip('/')}/" for url in target_urls)])


# What the schedule file may call: the examples' documented target, under either name.
FILE_TARGETS = allowed_targets(*(f"http://{host}:{TARGET_PORT}" for host in sorted(TARGET_ALIASES)))


class StackError(ScionSchedulerError, RuntimeError):
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
                           "action": {"type": "http", "url": f"{target_url}/one-shot"}},
                          egress=EgressPolicy.parse(allowed_targets(target_url)))


def route_to_target(schedules: list[Schedule], target_url: str) -> list[Schedule]:
    """The schedules with every `http` action addressed to port 8087 of this machine (the
    examples' documented target) sent to `target_url` instead, path and query kept; other
    schedules unchanged. `localhost` is rewritten too, since it may resolve to ::1, where the
    target does not listen."""
    target = urlsplit(target_url)
    routed = []
    for schedule in schedules:
        url = schedule.action.params.get("url") if schedule.action.type == "http" else None
        parts = urlsplit(url) if isinstance(url, str) else None
        if (parts is not None and parts.scheme == "http" and parts.hostname in TARGET_ALIASES
                and parts.port == TARGET_PORT and parts.netloc != target.netloc):
            params = {
                **schedule.action.params,
                "url": urlunsplit(parts._replace(netloc=target.netloc)),
            }
            schedule = replace(schedule, action=replace(schedule.action, params=params))
        routed.append(schedule)
    return routed


def start_target(account: Account) -> ReferenceHub:
    """The recording target: the reference hub on 127.0.0.1:8087 where the example schedules
    send their requests, or on a free port when 8087 is taken (by another run, or by a
    `scion-scheduler reference-hub` left running), so that `up` starts all the same."""
    try:
        return ReferenceHub(TARGET_HOST, TARGET_PORT, on_call=account.target_call).start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    return ReferenceHub(TARGET_HOST, 0, on_call=account.target_call).start()


@dataclass
class Account:
    """The live account: one readable line per event, and the tallies for the summary."""

    out: TextIO
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[str] = field(default_factory=Counter)
    fires: set[str] = field(default_factory=set)
    action_started: dict[str, datetime] = field(default_factory=dict)
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
            if eid:
                self.fires.add(eid)
            if message == "worker starting":
                self.say(f"{replica}: ready as worker {event.get('worker_id')}, "
                         f"pulling {event.get('subscription', '')}")
            elif message == "action starting":
                self.action_started[eid] = _timestamp(event)
                self.say(f"{replica}: runs {what}, attempt {event.get('attempt')}")
            elif message == "action finished":
                self._finish(eid, str(event.get("state", "succeeded")))
                took = _timestamp(event) - self.action_started.pop(eid, _timestamp(event))
                details = [str(event["detail"])] if event.get("detail") else []
                details.append(f"{took.total_seconds() * 1000:.0f} ms")
                self.say(f"{replica}: {what} -> {event.get('state')} ({', '.join(details)})")
            elif message.startswith("action failed"):
                self.failures += 1
                if "redelivery will retry" not in message:
                    self._finish(eid, "failed")
                self.say(f"{replica}: {what} -> {message}: {event.get('error')}")
            elif message == "duplicate delivery of a finished fire":
                self.duplicates += 1
                self.say(
                    f"{replica}: duplicate delivery of {what} suppressed (already "
                    f"{event.get('state')})"
                )
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
        self.say(f"target: {call.method} {call.item_id} (Idempotency-Key {call.idempotency_key})")

    def wait_finished(self, eid: str, timeout: float) -> bool:
        """Block until the execution `eid` has an outcome; False after `timeout` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: eid in self.finished, timeout)

    def summary(self) -> str:
        """The closing summary."""
        with self._lock:
            keys = Counter(c.idempotency_key for c in self.target_calls)
            doubles = sum(1 for n in keys.values() if n > 1)
            twice = f"{doubles} executions received twice" if doubles else "no execution twice"
            outcomes = (
                ", ".join(f"{n} {name}" for name, n in sorted(self.outcomes.items())) or "none"
            )
            return "\n".join(
                [
                    f"summary after {time.monotonic() - self.started:.0f}s:",
                    f"  fires delivered:        {len(self.fires)}",
                    f"  executions:             {outcomes}",
                    (
                        f"  duplicates suppressed:  {self.duplicates} (+{self.deferred} "
                        "deferred while running)"
                    ),
                    f"  failures:               {self.failures}",
                    f"  target requests:        {len(self.target_calls)}, {twice}",
                ]
            )


def _timestamp(event: Mapping[str, object]) -> datetime:
    """When a log line was written (its `timestamp`), else now."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return parse_instant(str(event["timestamp"]))
    return datetime.now(UTC)


class Replica:
    """One `scion-worker run` process in its own session, its log lines fed to the account
    and copied to a file."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path, account: Account) -> None:
        self.name = name
        self.health_port = free_port()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                _worker_command(),
                "run",
                "--health-port",
                str(self.health_port),
                "--grace-period",
                str(WORKER_GRACE_SECONDS),
            ],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read, args=(account,), name=f"{name}-log", daemon=True
        )
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
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
            ) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def terminate(self) -> None:
        """SIGTERM: the worker stops pulling and lets running actions finish."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def reap(self) -> None:
        """Wait for the drain, then SIGKILL the whole session, whatever lingers in it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=WORKER_GRACE_SECONDS + 10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def stop_replicas(replicas: list[Replica]) -> None:
    """Stop every replica: all drain at once, so stopping takes one grace period, not one each."""
    for replica in replicas:
        replica.terminate()
    for replica in replicas:
        replica.reap()


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
        # Named as terraform/pubsub.tf names them: TOPIC-dead-letter, and its subscription
        # TOPIC-dead-letter-sub.
        dead_letter = f"{settings.topic_path}-dead-letter"
        dead_letter_subscription = dead_letter.replace("/topics/", "/subscriptions/", 1) + "-sub"
        publisher.create_topic(name=settings.topic_path)
        publisher.create_topic(name=dead_letter)
        subscriber.create_subscription(request={
            "name": dead_letter_subscription, "topic": dead_letter,
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
              duration: float | None = None, project: str = PROJECT) -> Account:
    """Run the stack until `stop` is set or `duration` seconds pass; returns the account,
    whose summary the caller prints. Everything started is stopped before it returns, also
    when starting fails halfway or `stop` is set during start-up. Raises `EmulatorError` when
    gcloud or Java is missing, before anything is started."""
    check_prerequisites()
    schedules = load_schedules(schedule_file, egress=EgressPolicy.parse(FILE_TARGETS))
    workdir.mkdir(parents=True, exist_ok=True)
    account = Account(out)
    with contextlib.ExitStack() as started:
        _start_and_serve(started, schedules, workdir, stop, account, duration, project)
        account.say("stopping: replicas first (they drain), then the emulators")
    account.say(f"stopped everything it started; logs in {workdir}")
    return account


def _start_and_serve(started: contextlib.ExitStack, schedules: list[Schedule], workdir: Path,
                     stop: threading.Event, account: Account, duration: float | None,
                     project: str) -> None:
    """Start each part, registering how to stop it on `started`, then serve until `stop` or
    `duration`. Returns early when `stop` is set during start-up."""
    account.say(f"starting the Pub/Sub and Firestore emulators (logs in {workdir})")
    emulators = [Emulator("pubsub", log_path=workdir / "pubsub.log"),
                 Emulator("firestore", log_path=workdir / "firestore.log")]
    for emulator in emulators:
        started.callback(emulator.stop)
    _start_emulators(emulators)
    # This process's own clients (sync, run-now, the duplicate) use the stack's emulators
    # too, whatever the caller's environment pointed at.
    for emulator in emulators:
        _set_env(started, emulator.env_var, emulator.host)
    scheduler_emulator = CloudSchedulerEmulator(port=0, pubsub_host=emulators[0].host,
                                                rest_port=0).start()
    started.callback(scheduler_emulator.stop)
    _set_env(started, "CLOUD_SCHEDULER_EMULATOR_HOST", scheduler_emulator.host)
    target = start_target(account)
    started.callback(target.stop)
    account.say(f"Pub/Sub {emulators[0].host}, Firestore {emulators[1].host}, Cloud Scheduler "
                f"{scheduler_emulator.host}, target {target.url}")
    if stop.is_set():
        return

    # The caller's SCION_* settings (a real project, a real hub) must not leak into the demo.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCION_")}
    env.update({"SCION_SCHEDULER_PROJECT": project, "SCION_SCHEDULER_SIGNING_KEY": SIGNING_KEY,
                "SCION_SCHEDULER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                "SCION_SCHEDULER_ALLOWED_TARGETS": allowed_targets(target.url)})
    settings = Settings.from_env(env)
    account.say(f"gcloud scheduler (--project {project} --location {settings.location}) "
                "sees these jobs after:")
    for command in scheduler_emulator.gcloud_config():
        account.say(f"  {command}")
    create_pubsub_resources(settings)
    account.say(
        f"created {settings.topic_path}, its dead-letter topic and {settings.subscription_path}"
    )

    if urlsplit(target.url).port != TARGET_PORT:
        account.say(
            f"port {TARGET_PORT} is taken: the schedules' requests to it go to {target.url}"
        )
    control = with_registry(settings)
    started.callback(control.close)
    if stop.wait(boundary_delay(datetime.now(UTC))):
        return
    schedules = [*route_to_target(schedules, target.url), one_shot(datetime.now(UTC), target.url)]
    result = control.reconcile(schedules)
    account.say(f"synced {len(schedules)} schedules into Cloud Scheduler (with {ONE_SHOT_ID}, "
                f"added for this run): {sum(1 for o in result.outcomes if o.ok)} steps applied"
                + ("" if result.ok else f", {len(result.failed)} FAILED"))
    for schedule in schedules:
        when = schedule.cron or f"at {format_instant(schedule.at) if schedule.at else '?'}"
        state = "paused" if schedule.paused else "enabled"
        account.say(f"  {schedule.id}: {when} {schedule.timezone} ({state})")
    if stop.is_set():
        return

    replicas: list[Replica] = []
    started.callback(stop_replicas, replicas)
    for index in range(1, REPLICAS + 1):
        replicas.append(Replica(f"replica-{index}", env, workdir / f"replica-{index}.log", account))
    _wait_ready(replicas, stop)
    if stop.is_set():
        return

    threading.Thread(
        target=_demonstrate_duplicate,
        args=(control, schedules, account, settings, stop),
        name="duplicate-demo",
        daemon=True,
    ).start()
    account.say(
        "running; Ctrl-C for a summary" + (f" (or after {duration:g}s)" if duration else "")
    )
    stop.wait(duration)


def _set_env(started: contextlib.ExitStack, key: str, value: str) -> None:
    """Set an environment variable until the stack stops."""
    previous = os.environ.get(key)
    os.environ[key] = value
    started.callback(_restore_env, key, previous)


def _restore_env(key: str, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = previous


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


def boundary_delay(now: datetime) -> float:
    """Seconds to wait so that what follows stays clear of a minute boundary (0 when it is
    clear already)."""
    into_minute = now.second + now.microsecond / 1_000_000
    if into_minute < BOUNDARY_MARGIN_SECONDS:
        return BOUNDARY_MARGIN_SECONDS - into_minute
    if into_minute > 60 - BOUNDARY_MARGIN_SECONDS:
        return 60 - into_minute + BOUNDARY_MARGIN_SECONDS
    return 0.0


def _recorded(settings: Settings, execution_id: str, timeout: float) -> bool:
    """Wait until the ledger holds the execution's final state. The replica logs "action
    finished" just before it records the outcome, and a duplicate delivered in between would be
    deferred as running rather than suppressed as done."""
    # Here, not at the top: every scion-scheduler command imports this module, and only `up`
    # needs Firestore's client.
    from scheduler import gcp
    from worker.firestore_ledger import FirestoreLedger
    from worker.ledger import FINAL_STATES

    client = gcp.firestore_client(settings)
    ledger = FirestoreLedger.from_settings(settings, client)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            execution = ledger.get(execution_id)
            if execution is not None and execution.state in FINAL_STATES:
                return True
            time.sleep(0.2)
        return False
    finally:
        client.close()


def _demonstrate_duplicate(control: SchedulerControl, schedules: list[Schedule], account: Account,
                           settings: Settings, stop: threading.Event) -> None:
    """Run the first enabled recurring schedule now, and once that fire is done, deliver the
    very same message again: the claim in Firestore makes the replica that gets it skip it.
    `build_message` is deterministic, so the message rebuilt from the run's fire time has the
    data and attributes (signature included) of the one `run_now` published."""
    schedule = next((s for s in schedules if s.cron and not s.paused), None)
    if schedule is None:
        return
    if stop.wait(boundary_delay(datetime.now(UTC))):
        return
    try:
        run = control.run_now(schedule.id, schedule)
        account.say(f"manual run of {schedule.id} published (execution {run.execution_id})")
        if not account.wait_finished(run.execution_id, 60) or not _recorded(
            settings, run.execution_id, 30
        ):
            account.say(
                f"the manual run of {schedule.id} had no recorded outcome in time: no "
                "duplicate injected"
            )
            return
        message = build_message(
            schedule,
            signing_key=settings.signing_key,
            trigger="manual",
            fire_time=run.fire_time,
        )
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        publisher.publish(settings.topic_path, message.data, **message.attributes).result(
            timeout=30
        )
        account.say(
            f"injected a duplicate delivery of {schedule.id} @ {format_instant(run.fire_time)}"
        )
    except Exception as exc:  # the demo goes on without it
        account.say(f"duplicate demonstration skipped: {type(exc).__name__}: {exc}")
