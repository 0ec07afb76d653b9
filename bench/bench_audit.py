"""What does one minute's audit cost? One command: `.venv/bin/python bench/bench_audit.py`.

Starts its own Firestore emulator (or uses the one FIRESTORE_EMULATOR_HOST names), writes N
every-minute schedules into the registry and one execution record for every slot of the audit's
window (the defaults: horizon 5m, grace 20s) except 1% left unrecorded, then measures in the
same run:

* **audit**: `worker.audit.Audit.audit`: the registry read (one query), the execution IDs by
  fire-time range (one query), the due-slot finder, and a publish of every unrecorded slot
  (counted, not sent);
* **per-schedule**: the naive way to the same answer: one query per schedule
  (`schedule_id == X and fire_time in the window`), on 8 threads. The emulator answers such a
  query by scanning the collection, so it is run on a sample (`--sample`, default 500 schedules,
  always including every schedule with an unrecorded slot) and its time and reads scaled to N.

Prints wall time, Firestore document reads (each document returned is a read; a query that
returns none still costs one) and slots found unrecorded. Figures depend on the machine and its
load; compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from scheduler.contract import Message, execution_id
from scheduler.due import slots_in
from scheduler.logs import configure
from scheduler.model import Action, Schedule
from scheduler.registry import Entry, ScheduleRegistry
from scion_scheduler.google_emulators import Emulator
from worker.audit import Audit
from worker.firestore_documents import execution_document
from worker.firestore_ledger import FirestoreLedger
from worker.firestore_slots import FirestoreSlotRecords
from worker.ledger import Execution, State
from worker.metrics import WorkerMetrics

NOW = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)
HORIZON, GRACE = timedelta(minutes=5), timedelta(seconds=20)
PREFIX = "scion_"


@contextmanager
def firestore_host() -> Iterator[str]:
    """The emulator FIRESTORE_EMULATOR_HOST names, or one started for this run."""
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        yield os.environ["FIRESTORE_EMULATOR_HOST"]
        return
    with Emulator("firestore") as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        try:
            yield emulator.host
        finally:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


def populate(client: Any, count: int) -> tuple[list[Schedule], int]:
    """N schedules in the registry and a record of every slot in the window but 1%; returns
    the schedules and how many slots were left unrecorded."""
    schedules = [Schedule(id=f"bench/{i:05d}", action=Action("http", {"url": "http://x/"}),
                          cron="* * * * *") for i in range(count)]
    ScheduleRegistry(client, PREFIX).settle(schedules, {}, NOW - timedelta(hours=1))
    executions = client.collection(f"{PREFIX}executions")
    batch, pending, left = client.batch(), 0, 0
    for index, schedule in enumerate(schedules):
        for slot in slots_in(schedule, NOW - HORIZON, NOW - GRACE):
            if index % 100 == 0 and slot == (NOW - timedelta(minutes=2)).replace(second=0):
                left += 1
                continue
            eid = execution_id(schedule.id, slot)
            record = Execution(eid, schedule.id, slot, "scheduled", State.SUCCEEDED, 1,
                               created_at=slot, expire_at=slot + timedelta(days=30),
                               finished_at=slot)
            fields = {k: v for k, v in execution_document(record).items() if v is not None}
            batch.set(executions.document(eid), fields)
            pending += 1
            if pending == 500:
                batch.commit()
                batch, pending = client.batch(), 0
    if pending:
        batch.commit()
    return schedules, left


def run_audit(client: Any) -> tuple[float, int, int]:
    """(seconds, reads, unrecorded slots found) of one audit."""
    published: list[Message] = []
    registry = ScheduleRegistry(client, PREFIX)
    records = FirestoreSlotRecords(client, PREFIX)
    reads = [0]

    class Counted:
        def recorded(self, start: datetime, end: datetime) -> set[str]:
            found = records.recorded(start, end)
            reads[0] += max(1, len(found))
            return found

    class CountedRegistry:
        def iter_entries(self) -> Iterator[Entry]:
            read = 0
            for entry in registry.iter_entries():
                read += 1
                yield entry
            reads[0] += max(1, read)

    def publish(messages: Sequence[Message]) -> list[str]:
        published.extend(messages)
        return [str(len(published) - i) for i in reversed(range(len(messages)))]

    audit = Audit(FirestoreLedger(client, PREFIX), Counted(), CountedRegistry(), publish,
                  worker_id="bench", clock=lambda: NOW, horizon=HORIZON, grace=GRACE,
                  audit_slots=WorkerMetrics().audit_slots)
    started = time.perf_counter()
    report = audit.audit(NOW)
    return time.perf_counter() - started, reads[0], report.recovered


def run_per_schedule(client: Any, schedules: list[Schedule],
                     sample: int) -> tuple[float, int, int]:
    """The naive baseline: one query per schedule for its records in the window, on a sample
    of the schedules (every hundredth first: those hold the unrecorded slots), scaled to all."""
    chosen = schedules[::100] + [s for i, s in enumerate(schedules) if i % 100][
        :max(0, sample - len(schedules[::100]))]
    executions = client.collection(f"{PREFIX}executions")
    start, end = NOW - HORIZON, NOW - GRACE

    def one(schedule: Schedule) -> tuple[int, int]:
        query = (executions.where(filter=firestore.FieldFilter("schedule_id", "==", schedule.id))
                 .where(filter=firestore.FieldFilter("fire_time", ">", start))
                 .where(filter=firestore.FieldFilter("fire_time", "<=", end))
                 .select(["trigger"]))
        found = {snapshot.id for snapshot in query.stream()}
        owed = {execution_id(schedule.id, s) for s in slots_in(schedule, start, end)}
        return max(1, len(found)), len(owed - found)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, chosen))
    scale = len(schedules) / len(chosen)
    return ((time.perf_counter() - started) * scale, round(sum(r for r, _ in results) * scale),
            sum(m for _, m in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=5000, help="every-minute schedules")
    parser.add_argument("--sample", type=int, default=500,
                        help="schedules the per-schedule baseline queries (scaled to all)")
    args = parser.parse_args(argv)
    configure("console", "ERROR")
    with firestore_host() as host:
        client = firestore.Client(project=f"bench-audit-{uuid.uuid4().hex[:8]}")
        print(f"Firestore emulator on {host}; populating...", flush=True)
        schedules, left = populate(client, args.schedules)
        audit = run_audit(client)
        naive = run_per_schedule(client, schedules, args.sample)
    slots = len(slots_in(schedules[0], NOW - HORIZON, NOW - GRACE))
    sampled = min(args.sample, args.schedules)
    print(f"audit of {args.schedules} every-minute schedules, window {slots} slots each "
          f"(horizon {HORIZON}, grace {GRACE}), {left} slots unrecorded; per-schedule "
          f"measured on {sampled} and scaled")
    print(f"{'method':<12}  {'wall s':>7}  {'reads':>7}  {'queries':>7}  {'found':>5}  "
          f"{'x audit time':>12}")
    print(f"{'-' * 12}  {'-' * 7}  {'-' * 7}  {'-' * 7}  {'-' * 5}  {'-' * 12}")
    for name, (seconds, reads, found), queries in (("audit", audit, 2),
                                                   ("per-schedule", naive, args.schedules + 1)):
        print(f"{name:<12}  {seconds:>7.2f}  {reads:>7}  {queries:>7}  {found:>5}  "
              f"{seconds / audit[0]:>12.1f}")
    per_day = audit[1] * 60 * 24
    print(f"audit reads per minute: {audit[1]} (registry {args.schedules} + records in window); "
          f"per day: {per_day:,}")
    return 0 if audit[2] == naive[2] == left else 1


if __name__ == "__main__":
    sys.exit(main())
