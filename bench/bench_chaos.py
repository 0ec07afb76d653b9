"""Exactly once through faults: one command, `.venv/bin/python bench/bench_chaos.py`.

Starts its own Pub/Sub and Firestore emulators, creates the subscription as Terraform does
(`scion_scheduler.stack.create_pubsub_resources`: the deployed ack deadline, retry backoff and
dead-letter policy), and runs 3 `scion-worker run` processes with their default settings (the
audit included), their Pub/Sub connections through a fault-injecting proxy
(`scion_scheduler.faultproxy`). Their `scion` actions call a hub fire endpoint that keeps the
fire contract (`chaos_hub.ContractHub`).

By default (`--mode schedules`) it registers `--fires / --minutes` every-minute schedules in the
schedule registry and, for `--minutes` minutes, publishes each one's slot at its minute as Cloud
Scheduler would, plus 30% duplicate deliveries (`chaos_fires`); `--mode manual` publishes
`--fires` run-now fires once instead, which nothing owes. From the first slot on it injects,
in this order:

1. SIGKILL of one worker (it is not restarted);
2. a 30 s freeze of the Firestore emulator (SIGSTOP/SIGCONT of its process group);
3. a 30 s cut of the workers' Pub/Sub connections (all reset and new ones refused, or with
   `--cut partition` every byte held and nothing closed);
4. a 20 s target outage (every call answers 503).

Then it waits until every fire has run and nothing more arrives, and prints fires, executions,
duplicate executions, repeated calls the hub answered 409, lost fires, the fires the audit
recovered, dead-lettered messages, the time from the end of the last fault to drained, and which
dependencies the workers' `/readyz` reported failing. Exit status 0 only with every fire
executed once. `--scale` shrinks the fault timeline (the smoke test runs at 0.1); `--probe`
pulls the subscription with fresh clients after the workers stop (bench/README.md, where the
lost fires went).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_worker import SIGNING_KEY
from chaos_fires import (
    Plan,
    Publishing,
    bench_schedules,
    ledger_records,
    manual_plan,
    probe,
    publish,
    publish_offsets,
    register,
    slots_plan,
    tally,
)
from chaos_hub import ContractHub
from chaos_stack import (
    LOOPBACK_TARGETS,
    Bench,
    Readiness,
    Worker,
    audit_fired,
    dead_letters,
    received,
)

from scheduler.egress import EgressPolicy
from scheduler.logs import configure
from scion_scheduler.faultproxy import FaultProxy, Mode
from scion_scheduler.google_emulators import Emulator

# Seconds from the workers being ready to the first publish: the registry write, the plan.
LEAD_S = 10.0


@dataclass
class Fault:
    """A fault starting `at` seconds into the run, lasting `seconds`."""

    name: str
    at: float
    seconds: float
    begin: Callable[[], None]
    end: Callable[[], None] = lambda: None


FAULTS = ("kill", "firestore", "pubsub", "target")


def fault_names(raw: str) -> list[str]:
    """`--faults`: names from FAULTS, comma-separated."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown faults {unknown}; choose from {FAULTS}")
    return names


CUTS = ("reset", "partition")


def faults(chosen: list[str], scale: float, workers: list[Worker], firestore: Emulator,
           proxy: FaultProxy, hub: ContractHub, cut: str = "reset") -> list[Fault]:
    """The chosen faults' timeline, every time and length multiplied by `scale`. The Pub/Sub
    cut either resets every connection and refuses new ones (`reset`), or stops every byte in
    both directions, new connections included, and lets them flow again at its end
    (`partition`: a network that drops packets, nothing closed)."""
    assert firestore.process is not None
    group = firestore.process.pid

    def cut_pubsub() -> None:
        if cut == "partition":
            proxy.freeze()
            return
        proxy.mode = Mode.REFUSE
        proxy.cut()

    def restore_pubsub() -> None:
        proxy.thaw()
        proxy.mode = Mode.FORWARD

    def kill_worker() -> None:
        assert workers[0].process is not None
        workers[0].process.send_signal(signal.SIGKILL)

    timeline = {
        "kill": Fault("SIGKILL of worker w1", 15 * scale, 0, kill_worker),
        "firestore": Fault("Firestore frozen", 30 * scale, 30 * scale,
                           lambda: os.killpg(group, signal.SIGSTOP),
                           lambda: os.killpg(group, signal.SIGCONT)),
        "pubsub": Fault(f"Pub/Sub connections cut ({cut})", 70 * scale, 30 * scale, cut_pubsub,
                        restore_pubsub),
        "target": Fault("target answers 503", 105 * scale, 20 * scale, hub.outage.set,
                        hub.outage.clear),
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


def wait_drained(hub: ContractHub, expected: set[str], quiet: float, timeout: float,
                 say: Callable[[str], None]) -> float:
    """Until every expected fire ran and no call arrived for `quiet` seconds (or `timeout`);
    returns the moment of the last change."""
    started = time.monotonic()
    last_change, last, reported = started, hub.counts(), started
    while time.monotonic() < started + timeout:
        time.sleep(0.5)
        now = hub.counts()
        if now != last:
            last, last_change = now, time.monotonic()
        done = len(expected & hub.executed())
        if done == len(expected) and time.monotonic() - last_change >= quiet:
            break
        if time.monotonic() - reported >= 15:
            reported = time.monotonic()
            say(f"draining: {done} of {len(expected)} fires executed, "
                f"{now.repeated_calls} repeated calls")
    return last_change


def make_plan(bench: Bench, args: argparse.Namespace) -> Plan:
    """The run's fires; in schedules mode, registered before their first slot."""
    egress = EgressPolicy.parse(LOOPBACK_TARGETS)
    if args.mode == "manual":
        seconds = args.publish_seconds if args.publish_seconds is not None else 120.0
        return manual_plan(bench_schedules(args.fires, egress), seconds, SIGNING_KEY, LEAD_S)
    from google.cloud import firestore

    schedules = bench_schedules(max(1, args.fires // args.minutes), egress)
    seconds = args.publish_seconds if args.publish_seconds is not None else 20.0
    plan = slots_plan(schedules, args.minutes, seconds, SIGNING_KEY, LEAD_S)
    # Owed from the first slot the bench publishes: no earlier slot is anybody's.
    register(firestore.Client(project=bench.settings.project), bench.settings, schedules,
             plan.start, plan.batches[-1].at + timedelta(minutes=1))
    return plan


def figures(bench: Bench, plan: Plan, progress: Publishing, last_fault: float, drained: float,
            started: float, readiness: Readiness) -> dict[str, object]:
    """The run's figures, in the order they are printed."""
    from google.cloud import firestore

    counts = bench.hub.counts()
    missing = plan.expected - bench.hub.executed()
    end = plan.batches[-1].at + timedelta(minutes=1)
    records = ledger_records(firestore.Client(project=bench.settings.project), bench.settings,
                             plan.expected, plan.start, end)
    states, by_audit = tally(records)
    return {
        "fires": plan.fires, "deliveries": plan.deliveries,
        "executions": len(plan.expected) - len(missing),
        "duplicate_executions": counts.duplicate_executions,
        "repeated_calls_409": counts.repeated_calls,
        "concurrent_calls": counts.concurrent_calls,
        "lost_fires": len(missing),
        # A lost fire no worker ever received was lost by the broker; one a worker received is
        # the worker's.
        "lost_never_delivered": len(missing - received(bench.logs)),
        "lost_first_published_min_median_max": publish_offsets(plan, missing),
        "recovered_by_audit": by_audit,
        "audit_fired_again": audit_fired(bench.logs),
        "published_late": progress.late,
        "records": states,
        "dead_lettered": dead_letters(bench.settings),
        "last_fault_to_drained_s": round(max(0.0, drained - last_fault), 1),
        "total_s": round(drained - started, 1),
        "readyz_failing_samples": dict(readiness.failing),
    }


def run(bench: Bench, args: argparse.Namespace, say: Callable[[str], None]) -> bool:
    """One run: publish, inject the faults, drain, print; True when every fire ran once."""
    plan = make_plan(bench, args)
    say(f"{plan.fires} fires, {plan.deliveries} deliveries from {plan.start:%H:%M:%S} UTC; "
        f"logs in {bench.workdir}")
    readiness = Readiness(bench.workers)
    progress = Publishing()
    assert bench.proxy is not None
    threading.Thread(target=publish, daemon=True, args=(
        bench.pubsub.host, bench.settings.topic_path, plan, progress)).start()
    started = time.monotonic() + (plan.start - datetime.now(UTC)).total_seconds()
    last_fault = drained = time.monotonic()
    try:
        timeline = faults(args.faults, args.scale, bench.workers, bench.firestore, bench.proxy,
                          bench.hub, args.cut)
        last_fault = run_faults(timeline, started, say)
        progress.done.wait()
        drained = wait_drained(bench.hub, plan.expected, max(3.0, 10 * args.scale),
                               args.timeout, say)
    except KeyboardInterrupt:
        say("interrupted: the figures so far")
        drained = time.monotonic()
    readiness.stop.set()
    result = figures(bench, plan, progress, last_fault, drained, started, readiness)
    if args.probe and result["lost_fires"]:
        bench.stop_workers()
        result.update(probe(bench.settings, SIGNING_KEY,
                            plan.expected - bench.hub.executed(), args.probe, say))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result), file=sys.stderr)
    return not result["lost_fires"] and not result["duplicate_executions"] \
        and not result["concurrent_calls"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fires", type=int, default=10_000)
    parser.add_argument("--mode", choices=("schedules", "manual"), default="schedules",
                        help="fires of registered schedules at their minutes, or run-now fires")
    parser.add_argument("--minutes", type=int, default=5,
                        help="schedules mode: minutes of slots (fires / minutes schedules)")
    parser.add_argument("--publish-seconds", type=float, default=None,
                        help="publish over this long: each minute's slots (default 20), or "
                             "all manual fires (default 120)")
    parser.add_argument("--cut", choices=CUTS, default="reset",
                        help="how the Pub/Sub cut cuts: reset every connection and refuse new "
                             "ones, or a partition (bench/README.md: the emulator loses what it "
                             "routed to a reset stream)")
    parser.add_argument("--scale", type=float, default=1.0, help="fault timeline multiplier")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait to drain")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    parser.add_argument("--probe", type=float, default=0.0, metavar="SECONDS",
                        help="if fires were lost: stop the workers, then pull the subscription "
                             "with a fresh unary pull, then a fresh streaming pull, this long each")
    parser.add_argument("--faults", type=fault_names, default=list(FAULTS),
                        help=f"which faults, comma-separated (default: all of {','.join(FAULTS)})")
    args = parser.parse_args(argv)
    configure("console", "WARNING")
    # A stopped benchmark prints what it measured so far and stops its emulators and workers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    bench = Bench(workdir, Emulator("pubsub", log_path=workdir / "pubsub.log"),
                  Emulator("firestore", log_path=workdir / "firestore.log"))
    try:
        ok = run(bench.start(), args, say)
    finally:
        bench.close()
    if ok and not args.keep_logs:
        for path in workdir.glob("*.log"):
            path.unlink()
        with contextlib.suppress(OSError):
            workdir.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
