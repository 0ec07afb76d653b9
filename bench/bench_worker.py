"""How many fires per second does a worker handle? One command:
`.venv/bin/python bench/bench_worker.py`.

Starts its own Pub/Sub and Firestore emulators, then, in one run and on the same input (N fire
messages, 30% of them duplicates of another with a new message ID, already published):

a. **raw**: a subscriber that only acks: the ceiling the emulator and the client allow;
b. **naive**: decode, one read-then-create Firestore transaction per message, ack; the client's
   default flow control and scheduler;
c. **worker**: this project's `Pipeline` + `FirestoreLedger` + `PubSubTransport`, a no-op
   registered action, the worker's flow control and executors;
c0. the same with the tests' in-memory ledger: what the transport and the pipeline cost alone.

Rates are messages per second from the first delivery to the last settled one; (b) and (c) also
give the distinct fires recorded per second. The four phases run `--rounds` times, interleaved
(the machine is shared and its load changes), and each phase's median round is reported with
every round's rate beside it; the goals are checked on the medians. Then (c) runs again under a
steady publish rate well below its capacity, and reports the fire-to-start latency (from the fire
time, which is the publish moment, to the action's start) p50/p99. Stops both emulators before it
exits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker_bed import NOOP, OVERLAP, SIGNING_KEY, Bed, fire_messages, paced_publisher
from worker_meter import CPU_METER, Counter, CpuMeter, Result, median, percentile

from scheduler.contract import Message, decode_message, execution_id
from scheduler.logs import configure
from scion_scheduler.google_emulators import Emulator
from worker.run_options import DEFAULT_EXECUTORS
from worker.transport import Outcome


def drain(bed: Bed, callback: Callable[[Any], None], counter: Counter, timeout: float) -> float:
    """Subscribe `callback` with the client's defaults until `counter` is full; its seconds."""
    future = bed.subscriber.subscribe(bed.subscription, callback)
    seconds = counter.wait(timeout)
    future.cancel()
    future.result(timeout=30)
    bed.close()
    return seconds


def run_raw(messages: list[Message], timeout: float) -> Result:
    bed = Bed()
    bed.publish(messages)
    counter = Counter(len(messages))

    def callback(message: Any) -> None:
        counter.start()
        message.ack()
        counter.add()

    seconds = drain(bed, callback, counter, timeout)
    return Result("a. raw pull and ack", len(messages), seconds, cpu=counter.cpu_used)


def run_naive(messages: list[Message], fires: int, timeout: float) -> Result:
    from google.cloud import firestore

    bed = Bed()
    bed.publish(messages)
    counter = Counter(len(messages))
    executions = bed.firestore.collection("naive_executions")
    recorded = [0]
    lock = threading.Lock()

    @firestore.transactional
    def claim(transaction: Any, ref: Any, fields: dict[str, Any]) -> bool:
        if ref.get(transaction=transaction).exists:
            return False
        transaction.create(ref, fields)
        return True

    def callback(message: Any) -> None:
        counter.start()
        fire = decode_message(message.data, dict(message.attributes), signing_key=SIGNING_KEY)
        fire_time = fire.derive_fire_time(message.publish_time)
        eid = execution_id(fire.schedule_id, fire_time, fire.trigger)
        fields = {"schedule_id": fire.schedule_id, "fire_time": fire_time, "state": "succeeded"}
        if claim(bed.firestore.transaction(), executions.document(eid), fields):
            with lock:
                recorded[0] += 1
        message.ack()
        counter.add()

    seconds = drain(bed, callback, counter, timeout)
    assert recorded[0] == fires, f"naive recorded {recorded[0]} of {fires} fires"
    return Result(
        "b. naive (transaction per message)",
        len(messages),
        seconds,
        recorded[0],
        cpu=counter.cpu_used,
    )


@dataclass(frozen=True)
class WorkerConfig:
    executors: int
    max_messages: int


def bench_ledger(bed: Bed, in_memory: bool) -> Any:
    """The ledger of phase (c) (Firestore), or with `in_memory` the tests' in-memory one."""
    if in_memory:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from memory_ledger import MemoryLedger

        return MemoryLedger()
    from worker.firestore_ledger import FirestoreLedger

    return FirestoreLedger(bed.firestore)


class Tally:
    """The handler the transport calls: the pipeline's, counting its outcomes, and each message
    as settled at its first sight."""

    def __init__(self, pipeline: Any, counter: Counter, fires: int) -> None:
        self.pipeline = pipeline
        self.counter = counter
        self.fires = fires
        self.outcomes: dict[Outcome, int] = {}
        self.seen: set[str] = set()
        self.all_recorded = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, delivery: Any) -> Any:
        self.counter.start()
        disposition = self.pipeline.handle(delivery)
        with self.lock:
            self.outcomes[disposition.outcome] = self.outcomes.get(disposition.outcome, 0) + 1
            first_sight = delivery.message_id not in self.seen
            self.seen.add(delivery.message_id)
            if self.outcomes.get(Outcome.SUCCEEDED, 0) >= self.fires:
                self.all_recorded.set()
        # A duplicate whose original is still running is deferred (nacked with a delay) and
        # acked as a duplicate when it comes back; it counts as handled at its first sight.
        if first_sight:
            self.counter.add()
        return disposition


def run_worker(
    messages: list[Message] | None,
    fires: int,
    timeout: float,
    config: WorkerConfig,
    paced: Callable[[Bed], None] | None = None,
    in_memory: bool = False,
) -> tuple[Result, list[float]]:
    """Drain a pre-published backlog (`messages`), or run while `paced` publishes. With
    `in_memory`, the ledger is the tests' in-memory one: what the transport and the pipeline
    cost without Firestore."""
    from worker.action import ActionContext, ActionRegistry
    from worker.pipeline import Pipeline
    from worker.pubsub_transport import PubSubTransport

    bed = Bed()
    if messages is not None:
        bed.publish(messages)
    total = len(messages) if messages is not None else fires
    counter = Counter(total)
    lags: list[float] = []
    lock = threading.Lock()

    def noop(context: ActionContext) -> None:
        lag = datetime.now(UTC) - context.fire_time
        with lock:
            lags.append(lag.total_seconds())

    pipeline = Pipeline(
        bench_ledger(bed, in_memory),
        ActionRegistry({NOOP: noop}),
        worker_id="bench-worker",
        signing_key=SIGNING_KEY,
    )
    transport = PubSubTransport(
        bed.subscriber,
        bed.subscription,
        executors=config.executors,
        max_messages=config.max_messages,
    )
    tally = Tally(pipeline, counter, fires)
    stop = threading.Event()
    runner = threading.Thread(target=transport.run, args=(tally, stop), daemon=True)
    runner.start()
    if paced is not None:
        paced(bed)
    seconds = counter.wait(timeout)
    if not tally.all_recorded.wait(timeout):
        raise SystemExit(f"timed out: not every fire was recorded: {tally.outcomes}")
    stop.set()
    runner.join(60)
    bed.close()
    succeeded = tally.outcomes.get(Outcome.SUCCEEDED, 0)
    assert succeeded == fires, f"worker recorded {succeeded} of {fires} fires: {tally.outcomes}"
    name = "c0. transport + pipeline, no Firestore" if in_memory else "c. this worker"
    result = Result(name, total, seconds, succeeded, cpu=counter.cpu_used)
    result.deferred = tally.outcomes.get(Outcome.BUSY, 0)
    return result, lags


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fires",
        type=int,
        default=5000,
        help="distinct fires per phase (default 5000: long enough that opening the stream "
        "and the first calls of fresh clients are a small share)",
    )
    parser.add_argument(
        "--executors",
        type=int,
        default=DEFAULT_EXECUTORS,
        help=f"worker executors (default {DEFAULT_EXECUTORS}, the worker's)",
    )
    parser.add_argument(
        "--max-messages", type=int, default=200, help="worker flow control (default 200)"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=100.0,
        help="publish rate of the latency phase, fires/s (default 100)",
    )
    parser.add_argument(
        "--latency-fires", type=int, default=1000, help="fires in the latency phase"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="fires of an unmeasured round of every phase first, so that each "
        "phase meets emulators whose JIT is warm (default 2000; 0: none)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measured rounds of the four phases, interleaved; the median is reported (default 3)",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--overlap",
        choices=("skip", "allow"),
        default="skip",
        help="the schedules' overlap policy (default skip, the model's default)",
    )
    parser.add_argument(
        "--only-worker", action="store_true", help="run phase (c) alone, e.g. under a profiler"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: must be at least 1")
    return args


PHASES = ("raw", "naive", "worker", "ceiling")


def warm_up(args: argparse.Namespace, config: WorkerConfig) -> None:
    """An unmeasured round of every phase that will run."""
    # The emulators are Java: cold, their first thousands of calls of each kind run
    # interpreted or half-compiled and cost several times more CPU (measured: the
    # Firestore emulator's CPU per fire fell 2.1 -> 0.9 ms over its first 9,000 fires).
    # Whichever phase ran first would pay for that.
    warm, warm_fires = fire_messages(args.warmup, seed=11)
    if not args.only_worker:
        run_raw(warm, args.timeout)
        run_naive(warm, warm_fires, args.timeout)
    run_worker(warm, warm_fires, args.timeout, config)


def measure_rounds(
    args: argparse.Namespace, messages: list[Message], fires: int, config: WorkerConfig
) -> dict[str, list[Result]]:
    """Every phase's result, by phase, of each of `--rounds` interleaved rounds."""
    rounds: dict[str, list[Result]] = {phase: [] for phase in PHASES}
    for _ in range(args.rounds):
        # Interleaved, so that each phase meets the machine's load and the emulators' JIT
        # state of the same moment as the others.
        rounds["raw"].append(run_raw(messages, args.timeout))
        rounds["naive"].append(run_naive(messages, fires, args.timeout))
        rounds["worker"].append(run_worker(messages, fires, args.timeout, config)[0])
        rounds["ceiling"].append(
            run_worker(messages, fires, args.timeout, config, in_memory=True)[0]
        )
    return rounds


def report(
    args: argparse.Namespace,
    messages: list[Message],
    fires: int,
    rounds: dict[str, list[Result]],
    lags: list[float],
) -> None:
    """Print the table of the median rounds, the CPU per message, the latency and the goals."""
    raw, naive, ours, ceiling = (median(rounds[phase]) for phase in PHASES)
    print(
        f"worker benchmark: {fires} fires + {len(messages) - fires} duplicates = {len(messages)} "
        f"messages per phase; overlap {args.overlap}; executors {args.executors}, "
        f"max messages {args.max_messages}; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"median of {args.rounds} interleaved rounds (msgs/s of every round in brackets):")
    print(f"{'phase':<36} {'msgs/s':>8} {'fires/s':>8} {'seconds':>8}  rounds")
    print(f"{'-' * 36} {'-' * 8} {'-' * 8} {'-' * 8}  {'-' * 20}")
    for result, phase in zip((raw, naive, ours, ceiling), PHASES, strict=True):
        fire_rate = "" if result.fire_rate is None else f"{result.fire_rate:8.0f}"
        every = " ".join(f"{r.rate:.0f}" for r in rounds[phase])
        print(
            f"{result.name:<36} {result.rate:8.0f} {fire_rate:>8} {result.seconds:8.2f}  [{every}]"
        )
    print("CPU ms per message (this process; each emulator with its children):")
    for result in (raw, naive, ours, ceiling):
        print(f"  {result.name:<36} {result.cpu_ms_per_message}")
    print(
        f"worker (median round): {ours.deferred} duplicates arrived while their original ran "
        f"and were deferred (nacked with a delay, then acked as duplicates)"
    )
    print(
        f"fire-to-start latency at {args.latency_rate:g} fires/s ({len(lags)} fires): "
        f"p50 {percentile(lags, 0.5) * 1000:.0f} ms, p99 {percentile(lags, 0.99) * 1000:.0f} ms, "
        f"mean {statistics.fmean(lags) * 1000:.0f} ms"
    )
    vs_naive = ours.rate / naive.rate
    vs_raw = ours.rate / raw.rate
    print(
        f"goal: worker >= 3x naive: {vs_naive:.2f}x {'met' if vs_naive >= 3 else 'MISSED'}; "
        f"worker >= 0.5x raw: {vs_raw:.2f}x {'met' if vs_raw >= 0.5 else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    configure("console", "WARNING")
    OVERLAP[0] = args.overlap

    emulators = [Emulator("pubsub"), Emulator("firestore")]
    try:
        for emulator in emulators:
            emulator.start()
            os.environ[emulator.env_var] = emulator.host
        CPU_METER.append(
            CpuMeter({e.kind: e.process.pid for e in emulators if e.process is not None})
        )
        messages, fires = fire_messages(args.fires)
        config = WorkerConfig(args.executors, args.max_messages)
        if args.warmup > 0:
            warm_up(args, config)
        if args.only_worker:
            ours, _ = run_worker(messages, fires, args.timeout, config)
            print(f"this worker: {ours.rate:.0f} msgs/s, {ours.fire_rate:.0f} fires/s")
            return 0
        rounds = measure_rounds(args, messages, fires, config)
        _, lags = run_worker(
            None,
            args.latency_fires,
            args.timeout,
            config,
            paced=paced_publisher(args.latency_fires, args.latency_rate),
        )
    finally:
        for emulator in reversed(emulators):
            emulator.stop()
    report(args, messages, fires, rounds, lags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
