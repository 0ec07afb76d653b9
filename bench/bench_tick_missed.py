"""What a tick's missed records cost (a document left due far beyond its catch-up window).
One command: `.venv/bin/python bench/bench_tick_missed.py`.

Uses the Firestore emulator FIRESTORE_EMULATOR_HOST names, or starts its own. Plans one
document of a minutely cron a year late (`scheduler.ticks.plan_document`: the newest
MAX_SLOTS_PER_DOCUMENT slots walked back from the window's edge) and `--documents` more sharing
its walk, then writes one document's records through the ledger's batched path
(`FirestoreLedger.record_all`), again when they all exist (a takeover), and, as the baseline in
the same run, the same number through `record` one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.cloud import firestore

from scheduler.contract import execution_id
from scheduler.due import Owed, Slot
from scheduler.model import Action, Schedule
from scheduler.ticks import Walks, plan_document
from scion_scheduler.google_emulators import reuse_or_start
from worker.actions.tick import missed_records
from worker.firestore_ledger import FirestoreLedger
from worker.ledger import Execution

ACTION = Action("http", {"url": "https://hub.example.com/fire"})
MINUTE = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


T = TypeVar("T")


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200)
    args = parser.parse_args()
    owed = [Owed(Schedule(id=f"late/{i:06d}", action=ACTION, cron="* * * * *",
                          catchup_window=timedelta(minutes=10)), MINUTE - timedelta(days=400))
            for i in range(args.documents + 3)]
    late = MINUTE - timedelta(days=365)
    first, plan = _timed(lambda: plan_document(owed[0], late, MINUTE))
    assert plan is not None
    walks = Walks()
    plan_document(owed[0], late, MINUTE, walks)
    shared, _ = _timed(lambda: [plan_document(o, late, MINUTE, walks) for o in owed[3:]])
    print(f"plan of a document a year late      {first * 1e3:8.1f} ms  ({len(plan.missed)} missed)")
    print(f"per document sharing its walk       {shared / args.documents * 1e3:8.2f} ms")
    with contextlib.ExitStack() as resources:
        reuse_or_start(resources, "firestore")
        ledger = FirestoreLedger(firestore.Client(project=f"bench-missed-{uuid.uuid4().hex[:8]}"))

        def records(schedule: Schedule) -> list[Execution]:
            slots = [Slot(schedule, s, execution_id(schedule.id, s)) for s in plan.missed]
            return missed_records(slots, worker_id="bench", now=MINUTE)

        batched, single = records(owed[0].schedule), records(owed[1].schedule)
        ledger.record_all(records(owed[2].schedule)[:1])  # warm-up: channel, clock
        t_batched, n = _timed(lambda: ledger.record_all(batched))
        t_again, again = _timed(lambda: ledger.record_all(batched))
        t_single, m = _timed(lambda: sum(ledger.record(e) for e in single))
    print(f"record_all of {n} records          {t_batched:8.2f} s")
    print(f"record_all again, all exist ({again})  {t_again:8.2f} s")
    print(f"baseline: record one by one ({m})   {t_single:8.2f} s  "
          f"(batched {t_single / t_batched:.1f}x faster)")


if __name__ == "__main__":
    main()
