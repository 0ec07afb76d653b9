"""Soak: no slot unaccounted for while workers die. One command:

    .venv/bin/python bench/soak_audit.py [--schedules 120] [--minutes 10] [--kill-every 120]

Starts the Pub/Sub and Firestore emulators (or uses those PUBSUB_EMULATOR_HOST and
FIRESTORE_EMULATOR_HOST name) and an in-process Cloud Scheduler emulator, syncs N every-minute
schedules through the control module (which writes the audit's registry), and runs three
`scion-worker run` replicas at their shipped defaults (audit horizon 5m, grace 20s). Every
`--kill-every` seconds, 1.5 s after a slot (when a replica holds fires it has not claimed yet),
one replica is SIGKILLed and a new one started. After `--minutes`, the jobs stop firing and the
soak waits for the audit to account for the last slots, then checks that every slot of every
schedule from the first to the last has exactly one final record, and counts how many the
audit recovered and how many target requests each execution caused. Exit 0 when every slot
is recorded once and succeeded.
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from worker_harness import Stack, Worker

from scheduler.config import Settings
from scheduler.contract import execution_id
from scheduler.control import with_registry
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.logs import configure
from scion_scheduler.google_emulators import reuse_or_start
from worker.ledger import FINAL_STATES, State

# After the last slot: the audit's grace, its next run, the recovered fires' claims.
SETTLE = timedelta(minutes=3)



def _close_quietly(stack: Stack) -> None:
    with redirect_stdout(io.StringIO()):
        stack.close()


def _received(worker: Worker) -> float:
    """Fires the worker has received (0 when it does not answer)."""
    try:
        metrics = worker.metrics()
    except AssertionError:
        return 0.0
    return sum(v for k, v in metrics.items() if k.startswith("scion_worker_fires_received_total"))


def _sleep_until(instant: datetime) -> None:
    time.sleep(max(0.0, (instant - datetime.now(UTC)).total_seconds()))


def soak(schedules: int, minutes: int, kill_every: int, workdir: Path) -> int:
    with ExitStack() as resources:
        pubsub = reuse_or_start(resources, "pubsub")
        firestore = reuse_or_start(resources, "firestore")
        scheduler = CloudSchedulerEmulator(port=0, pubsub_host=pubsub).start()
        resources.callback(scheduler.stop)
        stack = Stack(f"soak-{uuid.uuid4().hex[:8]}", workdir, pubsub, firestore)
        # Quietly: the harness prints every worker's log tail when it closes.
        resources.callback(_close_quietly, stack)
        env = {"SCION_SCHEDULER_TOPIC": "fires"}
        workers: list[Worker] = [stack.start_worker(**env) for _ in range(3)]
        for worker in workers:
            worker.wait_ready()
        items = [stack.schedule(f"soak-{i:03d}", "/ok") for i in range(schedules)]
        settings = Settings.from_env(stack.env(
            SCION_SCHEDULER_TOPIC="fires", CLOUD_SCHEDULER_EMULATOR_HOST=scheduler.host))
        with with_registry(settings) as control:
            result = control.reconcile(items)
            assert result.ok, result.describe()
            first = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
            last = first + timedelta(minutes=minutes - 1)
            print(f"{schedules} schedules synced; slots {first:%H:%M} to {last:%H:%M} UTC, "
                  f"a worker SIGKILLed every {kill_every}s", flush=True)
            kills, next_kill = 0, first + timedelta(seconds=kill_every, milliseconds=1500)
            while next_kill <= last + timedelta(seconds=2):
                _sleep_until(next_kill)
                # The replica that has received the most fires: it likely holds some unclaimed.
                victim = max((w for w in workers if w.process.poll() is None), key=_received)
                victim.process.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                print(f"{datetime.now(UTC):%H:%M:%S} SIGKILLed {victim.name}", flush=True)
                replacement = stack.start_worker(**env)
                workers.append(replacement)
                next_kill += timedelta(seconds=kill_every)
            _sleep_until(last + timedelta(seconds=5))
            scheduler.clock.stop()  # no slot after `last`
        deadline = datetime.now(UTC) + SETTLE
        slots = [first + timedelta(minutes=m) for m in range(minutes)]
        while True:
            report = _check(stack, items, slots)
            if not report["unsettled"] or datetime.now(UTC) > deadline:
                break
            time.sleep(5)
        hits = Counter(stack.target.counts())
        more = sum(1 for count in hits.values() if count > 1)
        print(f"slots {report['expected']}, recorded once {report['recorded']}, "
              f"succeeded {report['succeeded']}, recovered by the audit {report['audit']}, "
              f"missing {len(report['missing'])}, not final {len(report['unsettled'])}, "
              f"kills {kills}, executions with more than one target request (takeovers) {more}")
        print(f"records by state/trigger: {report['states']}")
        for item in report["missing"][:10]:
            print(f"  missing: {item}")
        ok = report["recorded"] == report["succeeded"] == report["expected"]
        print("PASS: every slot recorded exactly once" if ok else "FAIL")
        return 0 if ok else 1


def _check(stack: Stack, items: list, slots: list[datetime]) -> dict:  # type: ignore[type-arg]
    expected = recorded = succeeded = audit = 0
    states: Counter[str] = Counter()
    missing: list[str] = []
    unsettled: list[str] = []
    for item in items:
        records = {e.execution_id: e for e in stack.ledger.history(item.id, limit=200)}
        for slot in slots:
            expected += 1
            record = records.get(execution_id(item.id, slot))
            if record is None:
                missing.append(f"{item.id} {slot:%H:%M}")
                unsettled.append(item.id)
                continue
            recorded += 1
            succeeded += record.state is State.SUCCEEDED
            states[f"{record.state}/{record.trigger}"] += 1
            audit += record.trigger == "audit"
            if record.state not in FINAL_STATES:
                unsettled.append(item.id)
    return {"expected": expected, "recorded": recorded, "succeeded": succeeded, "audit": audit,
            "missing": missing, "unsettled": unsettled, "states": dict(states)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=120)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--kill-every", type=int, default=120, help="seconds between kills")
    args = parser.parse_args(argv)
    configure("console", "WARNING")
    with tempfile.TemporaryDirectory(prefix="soak-audit-") as workdir:
        return soak(args.schedules, args.minutes, args.kill_every, Path(workdir))


if __name__ == "__main__":
    sys.exit(main())
