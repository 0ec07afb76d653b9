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
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from scheduler.config import Settings
from scheduler.contract import build_message
from scheduler.control import SchedulerControl, with_registry
from scheduler.egress import EgressPolicy
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.model import Schedule, format_instant
from scheduler.validation import load_schedules, parse_schedule
from scion_scheduler.errors import ScionSchedulerError
from scion_scheduler.google_emulators import Emulator, check_prerequisites
from scion_scheduler.narration import Account
from scion_scheduler.reference_hub import ReferenceHub
from scion_scheduler.replicas import Replica, stop_replicas

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
    scheduler_emulator, target = _start_services(started, workdir, account)
    if stop.is_set():
        return

    env = _worker_env(project, target.url)
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
    schedules = _sync(control, schedules, target.url, account)
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


def _start_services(started: contextlib.ExitStack, workdir: Path,
                    account: Account) -> tuple[CloudSchedulerEmulator, ReferenceHub]:
    """The Pub/Sub, Firestore and Cloud Scheduler emulators and the recording target, each
    registered on `started` to stop; this process's environment points at the emulators until
    the stack stops."""
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
    return scheduler_emulator, target


def _worker_env(project: str, target_url: str) -> dict[str, str]:
    """The replicas' environment: this one (with the stack's emulators), the demo's settings,
    JSON logs for the account, and none of the caller's SCION_* settings (a real project, a
    real hub must not leak into the demo)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCION_")}
    env.update({"SCION_SCHEDULER_PROJECT": project, "SCION_SCHEDULER_SIGNING_KEY": SIGNING_KEY,
                "SCION_SCHEDULER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                "SCION_SCHEDULER_ALLOWED_TARGETS": allowed_targets(target_url)})
    return env


def _sync(control: SchedulerControl, schedules: list[Schedule], target_url: str,
          account: Account) -> list[Schedule]:
    """Sync the file's schedules (routed to the target) and the demo's one-shot into Cloud
    Scheduler, and say what came of it; returns the schedules synced."""
    schedules = [*route_to_target(schedules, target_url), one_shot(datetime.now(UTC), target_url)]
    result = control.reconcile(schedules)
    account.say(f"synced {len(schedules)} schedules into Cloud Scheduler (with {ONE_SHOT_ID}, "
                f"added for this run): {sum(1 for o in result.outcomes if o.ok)} steps applied"
                + ("" if result.ok else f", {len(result.failed)} FAILED"))
    for schedule in schedules:
        when = schedule.cron or f"at {format_instant(schedule.at) if schedule.at else '?'}"
        state = "paused" if schedule.paused else "enabled"
        account.say(f"  {schedule.id}: {when} {schedule.timezone} ({state})")
    return schedules


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
