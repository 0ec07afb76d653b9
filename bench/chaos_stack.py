"""The chaos benchmark's stack: emulators, fault proxy, contract hub and three workers, and
what it reads back from them (readiness, dead letters, the workers' logs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench_worker import SIGNING_KEY
from chaos_hub import ContractHub

from scheduler.config import Settings
from scion_scheduler.faultproxy import FaultProxy
from scion_scheduler.google_emulators import Emulator, free_port
from scion_scheduler.stack import create_pubsub_resources

WORKERS = 3
LOOPBACK_TARGETS = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent


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

    def wait(self) -> None:
        """Until it exits (SIGKILL after 40 s)."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


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


def received(logs: list[Path]) -> set[str]:
    """Execution IDs that appear in the workers' pipeline logs: fires some worker received."""
    seen: set[str] = set()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"execution_id": "' in line and '"logger_name": "worker.pipeline"' in line:
                seen.add(line.split('"execution_id": "', 1)[1].split('"', 1)[0])
    return seen


def audit_fired(logs: list[Path]) -> int:
    """Slots the workers' audits published again (each log line is one)."""
    return sum(path.read_text(errors="replace").count("fired again by the audit")
               for path in logs)


@dataclass
class Bench:
    """The emulators, proxy, hub and workers of one run; `close` stops all of them."""

    workdir: Path
    pubsub: Emulator
    firestore: Emulator
    hub: ContractHub = field(default_factory=ContractHub)
    workers: list[Worker] = field(default_factory=list)
    proxy: FaultProxy | None = None
    settings: Settings = field(default_factory=Settings)

    def start(self) -> Bench:
        """Emulators, Pub/Sub resources, the proxy, three ready workers."""
        # Both are Java and take a few seconds each: side by side.
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(self.pubsub.start), pool.submit(self.firestore.start)]:
                future.result()
        self.proxy = FaultProxy("127.0.0.1", self.pubsub.port).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCION_")}
        env.update({"SCION_SCHEDULER_PROJECT": f"chaos-{os.getpid()}",
                    "SCION_SCHEDULER_SIGNING_KEY": SIGNING_KEY,
                    "SCION_SCHEDULER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                    "PUBSUB_EMULATOR_HOST": self.pubsub.host,
                    "FIRESTORE_EMULATOR_HOST": self.firestore.host,
                    "SCION_HUB_URL": self.hub.url,
                    # The local hub is a loopback address, which only this allows.
                    "SCION_SCHEDULER_ALLOWED_TARGETS": LOOPBACK_TARGETS})
        env.pop("PORT", None)
        os.environ.update({"PUBSUB_EMULATOR_HOST": self.pubsub.host,
                           "FIRESTORE_EMULATOR_HOST": self.firestore.host})
        self.settings = Settings.from_env(env)
        create_pubsub_resources(self.settings)
        worker_env = {**env, "PUBSUB_EMULATOR_HOST": self.proxy.address}
        self.workers = [Worker(f"w{i + 1}", worker_env, self.workdir / f"w{i + 1}.log").start()
                        for i in range(WORKERS)]
        for worker in self.workers:
            deadline = time.monotonic() + 120
            while worker.readyz()[0] != 200:
                if time.monotonic() > deadline or not worker.alive():
                    raise SystemExit(f"worker {worker.name} never became ready: {worker.log_path}")
                time.sleep(0.2)
        return self

    @property
    def logs(self) -> list[Path]:
        """The workers' log files."""
        return [worker.log_path for worker in self.workers]

    def stop_workers(self) -> None:
        """SIGTERM to every worker at once, then wait for each."""
        for worker in self.workers:
            if worker.alive():
                assert worker.process is not None
                worker.process.terminate()
        for worker in self.workers:
            worker.wait()

    def close(self) -> None:
        """Stop everything this run started."""
        self.stop_workers()
        if self.firestore.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.firestore.process.pid, signal.SIGCONT)
        if self.proxy is not None:
            self.proxy.stop()
        self.hub.close()
        self.firestore.stop()
        self.pubsub.stop()
