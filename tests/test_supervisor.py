"""A replica of several worker processes (`scion-worker run --processes N`, `worker.supervisor`):
its health port speaks for all of them, it runs every fire once, a stop reaches every process,
and a process that dies, or a parent that dies, stops the replica."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from worker_harness import Stack, Worker, wait_for
from worker_harness import stack_fixture as stack_fixture  # the `stack` fixture

from scheduler.contract import execution_id
from worker.supervisor import combined_readiness, merge_metrics


def _exposition(runs: float, backlog: float, seconds: list[float]) -> str:
    registry = CollectorRegistry()
    Counter("runs", "Runs.", ["outcome"], registry=registry).labels("ok").inc(runs)
    Gauge("backlog", "Backlog.", registry=registry).set(backlog)
    histogram = Histogram("took_seconds", "Took.", buckets=(1.0,), registry=registry)
    for value in seconds:
        histogram.observe(value)
    return generate_latest(registry).decode()


class _Merged(Collector):
    def __init__(self, texts: list[tuple[int, str]]) -> None:
        self._texts = texts

    def collect(self) -> Iterable[Metric]:
        return merge_metrics(self._texts)


def test_merged_metrics_keep_one_family_per_name_with_each_sample_labelled_by_process() -> None:
    registry = CollectorRegistry()
    registry.register(_Merged([(1, _exposition(3, 7, [0.5])), (2, _exposition(4, 1, [2.0]))]))
    text = generate_latest(registry).decode()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The text format writes each `_created` series as a gauge of its own, and so does a worker.
    assert sorted(families) == ["backlog", "runs", "runs_created", "took_seconds",
                                "took_seconds_created"]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families.values() for s in family.samples}
    assert samples[("runs_total", (("outcome", "ok"), ("process", "1")))] == 3
    assert samples[("runs_total", (("outcome", "ok"), ("process", "2")))] == 4
    assert samples[("backlog", (("process", "1"),))] == 7
    assert samples[("took_seconds_bucket", (("le", "1.0"), ("process", "1")))] == 1
    assert samples[("took_seconds_bucket", (("le", "1.0"), ("process", "2")))] == 0
    assert samples[("took_seconds_count", (("process", "2"),))] == 1
    assert text.count("# TYPE runs_total counter") == 1


def test_the_replica_is_ready_only_while_every_process_is_and_names_each_problem() -> None:
    assert combined_readiness([(1, True, "ready\n"), (2, True, "ready\n")]) == (True, "ready\n")
    ready, body = combined_readiness([
        (1, True, "ready\ntarget: HTTP 503 (failing for 3s)\n"),
        (2, False, "not ready\nledger: a call has not returned for 12s\n"),
        (3, False, "starting\n"),
    ])
    assert not ready
    assert body.splitlines() == [
        "not ready",
        "process 1: target: HTTP 503 (failing for 3s)",
        "process 2: ledger: a call has not returned for 12s",
        "process 3: starting",
    ]
    assert combined_readiness([]) == (False, "not ready\n")


def _pids(worker: Worker) -> list[int]:
    """The replica's process IDs, from its "replica started" log line."""
    for line in worker.log_lines():
        if '"replica started"' in line:
            return [int(pid) for pid in json.loads(line)["pids"]]
    raise AssertionError(f"no 'replica started' line:\n{worker.log_tail()}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie has exited; only its parent's wait is missing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.emulator
@pytest.mark.slow
def test_a_replica_of_two_processes_runs_every_fire_once_and_stops_on_sigterm(
        stack: Stack) -> None:
    worker = stack.start_worker("--processes", "2", "--executors", "4")
    worker.wait_ready()
    assert worker.get("/readyz") == (200, "ready\n")
    now = datetime.now(UTC).replace(microsecond=0)
    messages = [stack.manual(stack.schedule(f"replica-{i:03d}", "/ok"), now) for i in range(300)]
    stack.publish_many(messages)
    expected = {execution_id(f"replica-{i:03d}", now, "manual") for i in range(300)}
    wait_for(lambda: set(stack.target.counts()) >= expected, what="every fire's action")

    counts = stack.target.counts()
    assert set(counts) == expected and set(counts.values()) == {1}
    metrics = worker.metrics()
    per_process = [metrics.get(f"scion_worker_executions_total{{outcome=succeeded,process={n}}}",
                               0.0) for n in (1, 2)]
    assert sum(per_process) == 300 and all(per_process), per_process

    pids = _pids(worker)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert all(_gone(pid) for pid in pids)
    assert sum('"worker stopped"' in line for line in worker.log_lines()) == 2


@pytest.mark.emulator
@pytest.mark.slow
def test_a_frozen_process_makes_the_replica_not_live_nor_ready_until_it_thaws(
        stack: Stack) -> None:
    worker = stack.start_worker("--processes", "2")
    worker.wait_ready()
    assert worker.get("/livez") == (200, "ok\n")
    first, _ = _pids(worker)
    os.kill(first, signal.SIGSTOP)
    try:
        status, body = worker.get("/livez")
        assert (status, body) == (503, "process 1: not answering\n")
        status, body = worker.get("/readyz")
        assert status == 503 and body.startswith("not ready\nprocess 1: not answering")
    finally:
        os.kill(first, signal.SIGCONT)
    wait_for(worker.ready, timeout=30, what="the thawed process to answer")
    assert worker.get("/livez") == (200, "ok\n")


@pytest.mark.emulator
@pytest.mark.slow
def test_a_process_that_dies_stops_the_replica_with_its_code(stack: Stack) -> None:
    worker = stack.start_worker("--processes", "2", "--grace-period", "2")
    worker.wait_ready()
    first, second = _pids(worker)
    os.kill(first, signal.SIGKILL)
    assert worker.wait() == 128 + signal.SIGKILL
    assert _gone(second)
    assert any("worker process exited unexpectedly" in line for line in worker.log_lines())


@pytest.mark.emulator
@pytest.mark.slow
def test_the_processes_of_a_replica_whose_parent_is_killed_stop(stack: Stack) -> None:
    worker = stack.start_worker("--processes", "2", "--grace-period", "2")
    worker.wait_ready()
    pids = _pids(worker)
    worker.process.kill()
    worker.wait()
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=30,
             what="the orphaned processes to stop")
    assert sum("the replica's parent process is gone" in line
               for line in worker.log_lines()) == 2
    assert sum('"worker stopped"' in line for line in worker.log_lines()) == 2


def test_processes_must_be_a_positive_count() -> None:
    from worker.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--processes", "0"])
    args = build_parser().parse_args(["run", "--processes", "3"])
    assert args.processes == 3


def test_the_parent_loads_no_client_library() -> None:
    """What a replica's parent imports to parse its options and supervise (`worker/cli.py`
    `_run`) leaves gRPC and the Google clients to its processes: it stays small."""
    code = (
        "import sys\n"
        "from worker import cli, supervisor\n"
        "from worker.run_options import RunOptions\n"
        "from scheduler import gcp\n"
        "from scheduler.config import Settings\n"
        "gcp.require_credentials(Settings.from_env({'SCION_SCHEDULER_PROJECT': 'p',\n"
        "    'PUBSUB_EMULATOR_HOST': 'localhost:1',\n"
        "    'FIRESTORE_EMULATOR_HOST': 'localhost:2'}))\n"
        "cli.build_parser().parse_args(['run', '--processes', '2'])\n"
        "print(sorted(m for m in ('grpc', 'google.cloud.pubsub_v1', 'google.cloud.firestore',\n"
        "                         'worker.runner') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stderr
