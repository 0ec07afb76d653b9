"""A replica of several worker processes (`scion-worker run --processes N`): one Python process
runs its Python on one core at a time, so a replica with more cores runs one process per core.

Each child process is a whole worker (`worker.runner.run_worker`): its own streaming pull,
executors, claims, reaper and audit loop. Nothing is shared between them but the subscription
and the ledger, exactly as between replicas, so a fire still runs once (its claim). The parent
only supervises, as Dramatiq's main process does (`dramatiq/cli.py` `main`, lines 667-688 at
848b35f):

* it serves the replica's health port: `/livez` alive while every process's health server
  answers (one frozen or wedged gets the replica restarted); `/readyz` ready while every
  process is ready, naming each one's problems; `/metrics` every process's samples, each with a
  `process` label (`merge_metrics`). The children serve theirs on loopback ports of their own;
* SIGTERM or SIGINT is passed to every process, and each drains within the grace period;
* a process that exits unexpectedly stops the replica: the others drain and the parent exits
  with its code, so the platform restarts the replica as it would a one-process replica that
  died (Dramatiq does the same). Its claims are taken over after their lease, as any dead
  worker's;
* a child whose parent dies (SIGKILL) sees its pipe close and stops as on SIGTERM.

Children are started with `spawn`, never `fork`: a forked child would inherit the gRPC core's
threads and locks in whatever state they were in at the fork.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from scheduler import gcp, logs
from scheduler.cli_base import stop_on_signals
from scheduler.config import Settings
from scheduler.logs import get_logger
from worker.health import HealthServer

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

    from worker.run_options import RunOptions

log = get_logger(__name__)

# How long the parent waits for its processes' /livez, /readyz or /metrics (asked at once):
# within the probes' own timeouts (Terraform: 2 s for the startup probe, 3 s for liveness).
ASK_TIMEOUT_S = 1.5
# The label that tells the processes' samples apart in the replica's /metrics.
PROCESS_LABEL = "process"


def combined_readiness(answers: Sequence[tuple[int, bool, str]]) -> tuple[bool, str]:
    """The replica's readiness from each process's (number, ready, body): ready only while
    every process is; the body names every process's problems."""
    ready = bool(answers) and all(ok for _, ok, _ in answers)
    lines = ["ready" if ready else "not ready"]
    for number, ok, body in answers:
        text = body.strip().splitlines() or ["no answer"]
        # A worker's body is its verdict, then a line per problem (`worker.dependencies`).
        problems = text[1:] if text[0] in ("ready", "not ready") else text
        lines += [f"process {number}: {problem}" for problem in problems or
                  ([] if ok else text)]
    return ready, "\n".join(lines) + "\n"


def merge_metrics(expositions: Iterable[tuple[int, str]]) -> list[Metric]:
    """One family per metric name from every process's exposition (the Prometheus text format),
    each sample labelled with its process's number."""
    merged: dict[str, Metric] = {}
    for number, text in expositions:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation,
                                                    family.type, family.unit)
            for sample in family.samples:
                labels = {**sample.labels, PROCESS_LABEL: str(number)}
                into.add_sample(sample.name, labels, sample.value, sample.timestamp)
    return list(merged.values())


class _Child:
    """One worker process and the loopback port of its health server, once it said it."""

    def __init__(self, number: int, process: SpawnProcess, pipe: Connection) -> None:
        self.number = number
        self.process = process
        self.pipe = pipe
        self.port: int | None = None

    def ask(self, path: str) -> tuple[int, str]:
        """GET `path` from its health server: the status and the body (0 when unreachable)."""
        if self.port is None:
            return 0, "starting\n"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=ASK_TIMEOUT_S)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except OSError as exc:
            return 0, f"not answering ({exc})\n"
        finally:
            connection.close()


class _ChildMetrics(Collector):
    """A collector of every child's /metrics, merged (`merge_metrics`)."""

    def __init__(self, ask: Callable[[str], list[tuple[_Child, tuple[int, str]]]]) -> None:
        self._ask = ask

    def collect(self) -> Iterable[Metric]:
        return merge_metrics((child.number, body) for child, (status, body)
                             in self._ask("/metrics") if status == 200)


class Supervisor:
    """The parent of a replica's `processes` worker processes."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self._settings = settings
        self._options = options
        self._context = multiprocessing.get_context("spawn")
        self._children: list[_Child] = []
        self._askers = ThreadPoolExecutor(max_workers=options.processes,
                                          thread_name_prefix="health-ask")

    def run(self) -> int:
        """Start the processes and supervise them until they exit; the replica's exit code.
        What every process would fail on at its start (a missing setting, no Google
        credentials) fails here first, once."""
        self._settings.require("project", "subscription")
        gcp.require_credentials(self._settings)
        child_options = replace(self._options, processes=1, health_port=0,
                                health_host="127.0.0.1")
        with stop_on_signals(log) as stop:
            for number in range(1, self._options.processes + 1):
                ours, theirs = self._context.Pipe()
                process = self._context.Process(
                    target=_child_main, args=(self._settings, child_options, theirs),
                    name=f"scion-worker-{number}")
                process.start()
                theirs.close()
                self._children.append(_Child(number, process, ours))
            registry = CollectorRegistry()
            registry.register(_ChildMetrics(self._ask))
            health = HealthServer(self._options.health_port, ready=self._readiness,
                                  live=self._liveness, registry=registry,
                                  host=self._options.health_host).start()
            log.info("replica started", processes=len(self._children),
                     pids=[child.process.pid for child in self._children],
                     health_port=health.port)
            try:
                code = self._supervise(stop)
            finally:
                health.stop()
                self._askers.shutdown()
        log.info("replica stopped", exit_code=code)
        return code

    def _ask(self, path: str) -> list[tuple[_Child, tuple[int, str]]]:
        """Every process's answer to GET `path`, asked at once."""
        return list(zip(self._children, self._askers.map(lambda child: child.ask(path),
                                                         self._children), strict=True))

    def _readiness(self) -> tuple[bool, str]:
        return combined_readiness([(child.number, status == 200, body)
                                   for child, (status, body) in self._ask("/readyz")])

    def _liveness(self) -> tuple[bool, str]:
        """Alive while every process's health server answers: one frozen or wedged stops
        answering, as a one-process replica would, so the platform restarts the replica."""
        # One still starting (no port yet) is not wedged.
        silent = [child.number for child, (status, _) in self._ask("/livez")
                  if status != 200 and child.port is not None]
        if not silent:
            return True, "ok\n"
        return False, "".join(f"process {number}: not answering\n" for number in silent)

    def _supervise(self, stop: threading.Event) -> int:
        """Until every process exited: note their ports, pass a stop on, and stop them all
        when one exits unexpectedly. The first unexpected exit's code, else the worst."""
        code: int | None = None
        stopping = False
        ended: set[int] = set()
        while len(ended) < len(self._children):
            if stop.is_set() and not stopping:
                stopping = True
                self._terminate()
            # Only the running ones' sentinels: an exited one's stays ready for good.
            ready = wait([child.pipe for child in self._children if child.port is None]
                         + [child.process.sentinel for child in self._children
                            if child.number not in ended], timeout=0.5)
            for child in self._children:
                if child.pipe in ready:
                    self._note_port(child)
                if child.number in ended or child.process.exitcode is None:
                    continue
                ended.add(child.number)
                exitcode = _exit_code(child.process.exitcode)
                if not stopping:
                    log.error("worker process exited unexpectedly; stopping the replica",
                              process=child.number, pid=child.process.pid, exit_code=exitcode)
                    stopping, code = True, exitcode or 1
                    self._terminate()
                # One killed by the SIGTERM passed on before its handler was in place stopped
                # as asked.
                elif exitcode != 128 + signal.SIGTERM:
                    code = max(code or 0, exitcode)
        return code or 0

    def _note_port(self, child: _Child) -> None:
        try:
            child.port = int(child.pipe.recv())
        except (EOFError, OSError):
            child.port = -1  # it died first; its exit is noticed next

    def _terminate(self) -> None:
        for child in self._children:
            if child.process.exitcode is None and child.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGTERM)


def _exit_code(exitcode: int) -> int:
    """A shell's exit code for a process's: 128 + N for one killed by signal N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def _child_main(settings: Settings, options: RunOptions, parent: Connection) -> None:
    """A child's body: a whole worker, its health port told to the parent; it stops as on
    SIGTERM when the parent's end of the pipe closes (the parent died)."""
    from worker.cli import worker_error
    from worker.runner import run_worker

    logs.configure(settings.log_format, background=True)

    def listening(port: int) -> None:
        parent.send(port)
        threading.Thread(target=_stop_when_orphaned, args=(parent,), name="parent-watch",
                         daemon=True).start()

    try:
        code = run_worker(settings, options, listening=listening)
    except Exception as exc:
        explained = worker_error(argparse.Namespace(), exc)
        if explained is None:
            raise
        code = explained
    logs.flush()
    raise SystemExit(code)


def _stop_when_orphaned(parent: Connection) -> None:
    try:
        parent.recv()
    except (EOFError, OSError):
        log.warning("the replica's parent process is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)
