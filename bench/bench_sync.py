"""Benchmark of the control module's sync: wall time and Cloud Scheduler API calls of a first
sync, a no-op sync and a one-change sync of N schedules.

    .venv/bin/python bench/bench_sync.py [--schedules 5000] [--write-rate 1000] [--concurrency 8]
    .venv/bin/python bench/bench_sync.py --mode ticks --schedules 100000

In tick mode (issue 17) the syncs write Firestore documents instead of jobs
(`measure_tick_syncs`, which bench/bench_ticks.py calls too); the baseline of the same run is
the bare Firestore work of the same size: committing as many plain documents in parallel
batches of 500, and streaming them back with the same field selection.

Starts Google's Pub/Sub emulator (or uses the one PUBSUB_EMULATOR_HOST names) and an
in-process Cloud Scheduler emulator, and stops what it started (and closes every client) before
it exits, also on error or Ctrl-C. The write rate defaults far
above production's 5/s so that the run measures the sync itself; the table also shows the
shortest time the same writes take at the production default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scheduler import logs
from scheduler.config import Settings
from scheduler.control import SchedulerControl, with_registry
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.gcp import publisher_client
from scheduler.model import Schedule
from scheduler.sync import WRITE_METHODS, ApplyResult
from scheduler.tick_control import TickControl
from scheduler.tick_manifest import BATCH
from scheduler.tick_sync import PLAN_FIELDS
from scheduler.validation import parse_schedule, validate_schedules
from scion_scheduler.google_emulators import Emulator

METHODS = ("ListJobs", "GetJob", *WRITE_METHODS)
PRODUCTION_RATE = Settings().write_rate


@dataclass(frozen=True)
class Row:
    """One measured sync."""

    name: str
    seconds: float
    plan_seconds: float
    steps: int
    calls: Counter[str]

    @property
    def writes(self) -> int:
        """Write calls made (the quota-limited kind)."""
        return sum(self.calls[m] for m in WRITE_METHODS)


def make_schedules(count: int) -> list[Schedule]:
    """Daily schedules, twelve hours away from now, so none fires while the benchmark runs."""
    hour = (datetime.now(UTC).hour + 12) % 24
    return validate_schedules([
        {"id": f"bench-{i:05d}", "cron": f"{i % 60} {hour} * * *", "timezone": "UTC",
         "action": {"type": "http", "url": f"https://hub.example/run/{i}"},
         "description": f"benchmark schedule {i}", "paused": i % 100 == 0}
        for i in range(count)
    ])


def measure(name: str, emulator: CloudSchedulerEmulator, control: SchedulerControl,
            schedules: list[Schedule]) -> Row:
    """Plan and apply once; the emulator's per-method counters give the calls made."""
    before = Counter(emulator.call_counts)
    started = time.perf_counter()
    plan = control.plan(schedules, prune=True)
    planned = time.perf_counter()
    result: ApplyResult = control.apply(plan)
    finished = time.perf_counter()
    if not result.ok:
        raise SystemExit(f"{name}: {len(result.failed)} step(s) failed:\n{result.describe()}")
    return Row(name, finished - started, planned - started, len(plan.steps),
               Counter(emulator.call_counts) - before)


def table(rows: list[Row], rate: float) -> str:
    """The rows as a fixed-width table."""
    head = ["sync", "wall s", "plan s", "steps", *METHODS, "writes", f"≥ s at {rate:g}/s"]
    body = [[r.name, f"{r.seconds:.2f}", f"{r.plan_seconds:.2f}", str(r.steps),
             *(str(r.calls[m]) for m in METHODS), str(r.writes), f"{r.writes / rate:.1f}"]
            for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(b) for b in body)])


def run(args: argparse.Namespace) -> list[Row]:
    """Start the emulators, run the three syncs, stop everything."""
    stack: list[Callable[[], Any]] = []
    try:
        # A running emulator is reused: starting one costs seconds, and the benchmark's
        # schedules never fire while it runs, so it never publishes anything to it.
        pubsub_host = os.environ.get("PUBSUB_EMULATOR_HOST")
        if not pubsub_host:
            pubsub = Emulator("pubsub").start()
            stack.append(pubsub.stop)
            pubsub_host = pubsub.host
        emulator = CloudSchedulerEmulator(port=0, pubsub_host=pubsub_host).start()
        stack.append(emulator.stop)
        settings = Settings.from_env(
            {}, project="bench-project", location="us-central1", topic="fires",
            signing_key="bench-key", cloud_scheduler_emulator_host=emulator.host,
            pubsub_emulator_host=pubsub_host, write_rate=str(args.write_rate),
            sync_concurrency=str(args.concurrency),
        )
        control = SchedulerControl(settings)
        stack.append(control.close)
        schedules = make_schedules(args.schedules)
        rows = [measure("first", emulator, control, schedules),
                measure("no-op", emulator, control, schedules)]
        changed = list(schedules)
        changed[len(changed) // 2] = parse_schedule(
            {**changed[len(changed) // 2].to_dict(), "cron": "59 23 * * *"}
        )
        rows.append(measure("one change", emulator, control, changed))
        return rows
    finally:
        for stop in reversed(stack):
            stop()


@dataclass(frozen=True)
class TickRow:
    """One measured tick-mode sync, or a baseline of bare Firestore work."""

    name: str
    seconds: float
    plan_seconds: float
    steps: int


def _timed_sync(name: str, control: SchedulerControl, schedules: list[Schedule],
                verify: bool = False) -> TickRow:
    started = time.perf_counter()
    plan = control.plan(schedules, prune=True, verify=verify)
    planned = time.perf_counter()
    result = control.apply(plan)
    finished = time.perf_counter()
    if not result.ok:
        raise SystemExit(f"{name}: {len(result.failed)} step(s) failed:\n{result.describe()}")
    return TickRow(name, finished - started, planned - started, len(plan.steps))


def _stream(client: Any, count: int, name: str) -> TickRow:
    started = time.perf_counter()
    read = sum(1 for _ in client.collection("baseline").select(PLAN_FIELDS).stream())
    assert read == count
    return TickRow(name, time.perf_counter() - started, 0.0, count)


def _baseline(client: Any, count: int, concurrency: int) -> list[TickRow]:
    """Bare Firestore work of a sync's size: `count` plain documents committed in parallel
    batches, then streamed back with a sync's field selection."""
    from concurrent.futures import ThreadPoolExecutor

    collection = client.collection("baseline")
    fields = {"schedule_id": "x", "definition": "{}" * 150, "fingerprint": "f" * 32,
              "paused_since": None, "owner": "o"}

    def commit(start: int) -> None:
        batch = client.batch()
        for i in range(start, min(start + BATCH, count)):
            batch.set(collection.document(f"d{i:07d}"), fields)
        batch.commit()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(commit, range(0, count, BATCH)))
    written = time.perf_counter()
    return [TickRow("baseline: bare batched writes", written - started, 0.0, count),
            _stream(client, count, "baseline: bare select stream")]


def measure_tick_syncs(settings: Settings, schedules: list[Schedule]) -> list[TickRow]:
    """A first, a no-op, a one-change and a verifying no-op sync of `schedules` in tick mode
    (`settings` on the emulators, a fresh project), after the baseline of bare Firestore work
    of the same size."""
    control = with_registry(settings.with_overrides(mode="ticks"))
    assert isinstance(control, TickControl)
    with control:
        rows = _baseline(control.ticks.registry.client, len(schedules),
                         settings.sync_concurrency)
        rows += [_timed_sync("first", control, schedules),
                 _timed_sync("no-op", control, schedules)]
        changed = list(schedules)
        changed[len(changed) // 2] = parse_schedule(
            {**changed[len(changed) // 2].to_dict(), "cron": "59 23 * * *"})
        rows.append(_timed_sync("one change", control, changed))
        # What `sync --verify` costs: every document read, as before the manifest.
        rows.append(_timed_sync("no-op --verify", control, changed, verify=True))
        # The emulator slows as it fills: the same bare stream again, at the end.
        rows.append(_stream(control.ticks.registry.client, len(schedules),
                            "baseline: bare select stream, again"))
    return rows


def tick_table(rows: list[TickRow]) -> str:
    """The tick-mode rows, each with its ratio to the bare work it stands against."""
    write_base = rows[0].seconds
    # A sync that reads is set against the mean of the two bare streams around it.
    read_base = (rows[1].seconds + rows[-1].seconds) / 2
    lines = [f"{'sync':<36} {'wall s':>7} {'plan s':>7} {'steps':>7} {'vs bare':>8}"]
    for row in rows:
        base = write_base if row.name == "first" else read_base
        ratio = "" if row.name.startswith("baseline") else f"{row.seconds / base:.2f}x"
        lines.append(f"{row.name:<36} {row.seconds:7.2f} {row.plan_seconds:7.2f} "
                     f"{row.steps:7d} {ratio:>8}")
    return "\n".join(lines)


def run_ticks(args: argparse.Namespace) -> list[TickRow]:
    """Tick mode's syncs on the Firestore emulator FIRESTORE_EMULATOR_HOST names (or one this
    starts), with the in-process Cloud Scheduler emulator for the tick job."""
    stack: list[Callable[[], Any]] = []
    try:
        hosts = {}
        for name, variable in (("pubsub", "PUBSUB_EMULATOR_HOST"),
                               ("firestore", "FIRESTORE_EMULATOR_HOST")):
            hosts[name] = os.environ.get(variable, "")
            if not hosts[name]:
                started = Emulator(name).start()
                stack.append(started.stop)
                hosts[name] = started.host
        emulator = CloudSchedulerEmulator(port=0, pubsub_host=hosts["pubsub"]).start()
        stack.append(emulator.stop)
        settings = Settings.from_env(
            {}, project=f"bench-ticks-{os.getpid()}-{int(time.time())}", location="us-central1",
            topic="fires", signing_key="bench-key", cloud_scheduler_emulator_host=emulator.host,
            pubsub_emulator_host=hosts["pubsub"], firestore_emulator_host=hosts["firestore"],
            write_rate=str(args.write_rate), sync_concurrency=str(args.concurrency))
        # The tick job the first sync creates fires every minute: give it its topic.
        publisher_client(settings).create_topic(name=settings.topic_path)
        return measure_tick_syncs(settings, make_schedules(args.schedules))
    finally:
        for stop in reversed(stack):
            stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--schedules", type=int, default=5000, help="how many schedules (default 5000)"
    )
    parser.add_argument("--write-rate", type=float, default=1000.0,
                        help="client-side write limit per second for the run (default 1000)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="concurrent API calls (default 8)"
    )
    parser.add_argument("--mode", choices=("jobs", "ticks"), default="jobs",
                        help="jobs (Cloud Scheduler jobs) or ticks (Firestore documents)")
    args = parser.parse_args(argv)
    logs.configure("console", "WARNING")
    if args.mode == "ticks":
        tick_rows = run_ticks(args)
        print(f"tick-mode sync of {args.schedules} schedules (1% paused), concurrency "
              f"{args.concurrency}, Python {sys.version.split()[0]}")
        print(tick_table(tick_rows))
        return 0
    rows = run(args)
    print(f"sync of {args.schedules} schedules (1% paused), write rate {args.write_rate:g}/s, "
          f"concurrency {args.concurrency}, Python {sys.version.split()[0]}")
    print(table(rows, PRODUCTION_RATE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
