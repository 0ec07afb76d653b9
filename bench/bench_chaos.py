"""Exactly once through faults: one command, `.venv/bin/python bench/bench_chaos.py`.

Starts its own Pub/Sub and Firestore emulators, creates the subscription as Terraform does
(`scion_scheduler.stack.create_pubsub_resources`: the deployed ack deadline, retry backoff and
dead-letter policy), and runs 3 `scion-worker run` processes with their default settings, their
Pub/Sub connections through a fault-injecting proxy (`scion_scheduler.faultproxy`). Their
`http` actions call a local target that counts successful requests by Idempotency-Key.

It publishes `--fires` manual fires plus 30% duplicate deliveries (as `bench/bench_worker.py`
does) at a steady rate over `--publish-seconds`, and meanwhile injects, in this order:

1. SIGKILL of one worker (it is not restarted);
2. a 30 s freeze of the Firestore emulator (SIGSTOP/SIGCONT of its process group);
3. a 30 s cut of the workers' Pub/Sub connections (all reset, new ones refused);
4. a 20 s target outage (every request answers 503).

Then it waits until every fire has run and nothing more arrives, and prints fires, executions
(fires whose action succeeded), duplicate executions (successful requests beyond one per fire),
lost fires, dead-lettered messages, the time from the end of the last fault to drained, and
which dependencies the workers' `/readyz` reported failing. Exit status 0 only with every fire
executed once. `--scale` shrinks the fault timeline (the smoke test runs at 0.1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_worker import SIGNING_KEY, fire_messages

from scheduler.config import Settings
from scheduler.contract import Message, execution_id
from scheduler.egress import EgressPolicy
from scheduler.logs import configure
from scheduler.model import parse_instant
from scion_scheduler.faultproxy import FaultProxy, Mode
from scion_scheduler.google_emulators import Emulator, free_port
from scion_scheduler.stack import create_pubsub_resources

WORKERS = 3
LOOPBACK_TARGETS = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent


class Target:
    """Counts 2xx answers per Idempotency-Key; answers 503 while `outage` is set."""

    def __init__(self) -> None:
        self.successes: Counter[str] = Counter()
        self.refused = 0
        self.outage = threading.Event()
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key", "")
                with target.lock:
                    if target.outage.is_set():
                        target.refused += 1
                        status = 503
                    else:
                        target.successes[key] += 1
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/fire"

    def counts(self) -> tuple[int, int]:
        """Fires executed at least once, and successful requests beyond one per fire."""
        with self.lock:
            return len(self.successes), sum(n - 1 for n in self.successes.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Worker:
    """One `scion-worker run` process."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "wb")  # noqa: SIM115  # the child owns it
        self.process = subprocess.Popen(
            [str(VENV_BIN / "scion-worker"), "run", "--health-port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self

    def readyz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError):
            return 0, ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Fault:
    """A fault starting `at` seconds into the run, lasting `seconds`."""

    name: str
    at: float
    seconds: float
    begin: Callable[[], None]
    end: Callable[[], None] = lambda: None


class Readiness:
    """Samples every live worker's /readyz once a second; remembers the dependencies named."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.failing: Counter[str] = Counter()
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for worker in self.workers:
                if not worker.alive():
                    continue
                status, body = worker.readyz()
                if status == 503:
                    for line in body.splitlines()[1:]:
                        self.failing[line.split(":", 1)[0]] += 1


def publish_paced(pubsub_host: str, topic: str, messages: list[Message], seconds: float,
                  done: threading.Event) -> None:
    """Publish directly to the emulator (not through the proxy) at a steady rate."""
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
    publisher = pubsub_v1.PublisherClient()
    batch = max(1, len(messages) // max(1, int(seconds * 10)))
    started = time.monotonic()
    for index in range(0, len(messages), batch):
        futures = [publisher.publish(topic, m.data, **m.attributes)
                   for m in messages[index:index + batch]]
        for future in futures:
            future.result(timeout=120)
        due = started + seconds * (index + batch) / len(messages)
        time.sleep(max(0.0, due - time.monotonic()))
    done.set()


def dead_letters(settings: Settings) -> int:
    """Messages on the dead-letter subscription (pulled and acked)."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = f"{settings.topic_path}-dead-letter".replace("/topics/", "/subscriptions/", 1) + "-sub"
    total = 0
    try:
        while True:
            try:
                response = subscriber.pull(subscription=path, max_messages=1000, timeout=5)
            except exceptions.DeadlineExceeded:
                break
            if not response.received_messages:
                break
            total += len(response.received_messages)
            subscriber.acknowledge(subscription=path,
                                   ack_ids=[m.ack_id for m in response.received_messages])
    finally:
        subscriber.close()
    return total


FAULTS = ("kill", "firestore", "pubsub", "target")


def fault_names(raw: str) -> list[str]:
    """`--faults`: names from FAULTS, comma-separated."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown faults {unknown}; choose from {FAULTS}")
    return names


def faults(chosen: list[str], scale: float, workers: list[Worker], firestore: Emulator,
           proxy: FaultProxy, target: Target) -> list[Fault]:
    """The chosen faults' timeline, every time and length multiplied by `scale`."""
    assert firestore.process is not None
    group = firestore.process.pid

    def cut_pubsub() -> None:
        proxy.mode = Mode.REFUSE
        proxy.cut()

    def restore_pubsub() -> None:
        proxy.mode = Mode.FORWARD

    def kill_worker() -> None:
        assert workers[0].process is not None
        workers[0].process.send_signal(signal.SIGKILL)

    timeline = {
        "kill": Fault("SIGKILL of worker w1", 15 * scale, 0, kill_worker),
        "firestore": Fault("Firestore frozen", 30 * scale, 30 * scale,
                           lambda: os.killpg(group, signal.SIGSTOP),
                           lambda: os.killpg(group, signal.SIGCONT)),
        "pubsub": Fault("Pub/Sub connections cut", 70 * scale, 30 * scale, cut_pubsub,
                        restore_pubsub),
        "target": Fault("target answers 503", 105 * scale, 20 * scale, target.outage.set,
                        target.outage.clear),
    }
    return [timeline[name] for name in chosen]


def run_faults(timeline: list[Fault], started: float, say: Callable[[str], None]) -> float:
    """Run the timeline; returns the monotonic time the last fault ended."""
    events = sorted([(f.at, f"{f.name}: start", f.begin) for f in timeline]
                    + [(f.at + f.seconds, f"{f.name}: end", f.end) for f in timeline if f.seconds],
                    key=lambda event: event[0])
    for at, label, action in events:
        time.sleep(max(0.0, started + at - time.monotonic()))
        action()
        say(f"{time.monotonic() - started:6.1f}s  {label}")
    return time.monotonic()


def wait_drained(target: Target, fires: int, quiet: float, timeout: float,
                 say: Callable[[str], None]) -> float:
    """Until every fire ran and no request arrived for `quiet` seconds (or `timeout`);
    returns the moment of the last change."""
    started = time.monotonic()
    last_change, last, reported = started, target.counts(), started
    while time.monotonic() < started + timeout:
        time.sleep(0.5)
        now = target.counts()
        if now != last:
            last, last_change = now, time.monotonic()
        if now[0] >= fires and time.monotonic() - last_change >= quiet:
            break
        if time.monotonic() - reported >= 15:
            reported = time.monotonic()
            say(f"draining: {now[0]} of {fires} fires executed, {now[1]} duplicates")
    return last_change


def received(logs: list[Path]) -> set[str]:
    """Execution IDs that appear in the workers' logs: fires some worker received."""
    seen: set[str] = set()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"execution_id": "' in line:
                seen.add(line.split('"execution_id": "', 1)[1].split('"', 1)[0])
    return seen


def eid_of(message: Message) -> str:
    """The execution ID of a manual fire message (the target's Idempotency-Key)."""
    attrs = message.attributes
    return execution_id(attrs["schedule-id"], parse_instant(attrs["fire-time"]), "manual")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fires", type=int, default=10_000)
    parser.add_argument("--publish-seconds", type=float, default=120.0)
    parser.add_argument("--scale", type=float, default=1.0, help="fault timeline multiplier")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait to drain")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    parser.add_argument("--faults", type=fault_names, default=list(FAULTS),
                        help=f"which faults, comma-separated (default: all of {','.join(FAULTS)})")
    args = parser.parse_args(argv)
    configure("console", "WARNING")
    # A stopped benchmark prints what it measured so far and stops its emulators and workers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    pubsub = Emulator("pubsub", log_path=workdir / "pubsub.log")
    firestore = Emulator("firestore", log_path=workdir / "firestore.log")
    target = Target()
    workers: list[Worker] = []
    proxy: FaultProxy | None = None
    try:
        pubsub.start()
        firestore.start()
        proxy = FaultProxy("127.0.0.1", pubsub.port).start()
        project = f"chaos-{os.getpid()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCION_")}
        env.update({"SCION_SCHEDULER_PROJECT": project, "SCION_SCHEDULER_SIGNING_KEY": SIGNING_KEY,
                    "SCION_SCHEDULER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                    "PUBSUB_EMULATOR_HOST": pubsub.host, "FIRESTORE_EMULATOR_HOST": firestore.host,
                    # The local target is a loopback address, which only this allows.
                    "SCION_SCHEDULER_ALLOWED_TARGETS": LOOPBACK_TARGETS})
        env.pop("PORT", None)
        os.environ.update({"PUBSUB_EMULATOR_HOST": pubsub.host})
        settings = Settings.from_env(env)
        create_pubsub_resources(settings)
        worker_env = {**env, "PUBSUB_EMULATOR_HOST": proxy.address}
        workers = [Worker(f"w{i + 1}", worker_env, workdir / f"w{i + 1}.log").start()
                   for i in range(WORKERS)]
        for worker in workers:
            deadline = time.monotonic() + 120
            while worker.readyz()[0] != 200:
                if time.monotonic() > deadline or not worker.alive():
                    raise SystemExit(f"worker {worker.name} never became ready: {worker.log_path}")
                time.sleep(0.2)
        messages, fires = fire_messages(args.fires, action={
            "type": "http", "url": target.url, "timeout": 10},
            egress=EgressPolicy.parse(LOOPBACK_TARGETS))
        expected = {eid_of(m) for m in messages}
        say(f"{fires} fires, {len(messages)} deliveries; logs in {workdir}")
        readiness = Readiness(workers)
        published = threading.Event()
        started = time.monotonic()
        threading.Thread(target=publish_paced, daemon=True, args=(
            pubsub.host, settings.topic_path, messages, args.publish_seconds, published)).start()
        last_fault = drained = time.monotonic()
        try:
            timeline = faults(args.faults, args.scale, workers, firestore, proxy, target)
            last_fault = run_faults(timeline, started, say)
            published.wait()
            drained = wait_drained(target, fires, max(3.0, 10 * args.scale), args.timeout, say)
        except KeyboardInterrupt:
            say("interrupted: the figures so far")
            drained = time.monotonic()
        readiness.stop.set()
        executed, duplicates = target.counts()
        with target.lock:
            missing = {eid for eid in expected if eid not in target.successes}
        result = {
            "fires": fires, "deliveries": len(messages), "executions": executed,
            "duplicate_executions": duplicates, "lost_fires": len(missing),
            # A lost fire no worker ever received was lost by the broker (the emulator holds
            # messages routed to closed streams); one a worker received is the worker's.
            "lost_never_delivered": len(missing - received([w.log_path for w in workers])),
            "dead_lettered": dead_letters(settings),
            "last_fault_to_drained_s": round(max(0.0, drained - last_fault), 1),
            "total_s": round(drained - started, 1),
            "readyz_failing_samples": dict(readiness.failing),
        }
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        print(json.dumps(result), file=sys.stderr)
        ok = executed == fires and duplicates == 0 and not missing
        if ok and not args.keep_logs:
            for path in workdir.glob("*.log"):
                path.unlink()
            with contextlib.suppress(OSError):
                workdir.rmdir()
        return 0 if ok else 1
    finally:
        for worker in workers:
            worker.stop()
        if firestore.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(firestore.process.pid, signal.SIGCONT)
        if proxy is not None:
            proxy.stop()
        target.close()
        firestore.stop()
        pubsub.stop()


if __name__ == "__main__":
    sys.exit(main())
