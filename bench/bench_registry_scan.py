"""What the audit's read of the whole registry costs the worker, per document. One command:
`.venv/bin/python bench/bench_registry_scan.py`.

Uses the Firestore emulator FIRESTORE_EMULATOR_HOST names, or starts its own. Writes
`--schedules` registry documents as a sync writes them (`scheduler.registry.document_of`), then
reads them all `--rounds` times with each reader, alternating: the audit's read
(`worker.registry_scan.RegistryScan`, plain protobuf a page at a time) and the baseline, the
same entries through the client's snapshots (`scheduler.registry.ScheduleRegistry.iter_entries`,
what the audit read before). Reported: this process's CPU per document (`time.process_time`,
which the emulator's work is not part of) and the wall time of a whole read, each reader's
best round, and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore

# The registry documents' writer that the tick tests and `bench_ticks.py` share.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tick_documents import put_documents

from scheduler.model import Action, Schedule
from scheduler.registry import Entry, ScheduleRegistry, document_of
from scion_scheduler.google_emulators import reuse_or_start
from worker.registry_scan import RegistryScan

OWNER = "bench-"
PREFIX = "bench_"
ACTION = Action("http", {"url": "https://hub.example.com/fire"})


def _write(client: Any, count: int, now: datetime) -> None:
    schedules = (Schedule(id=f"cron/{i:06d}", action=ACTION, cron=f"{i % 60} * * * *")
                 for i in range(count))
    put_documents(client, ((s, document_of(s, now, None, now, OWNER)) for s in schedules),
                  PREFIX)


def _measure(read: Callable[[], Iterable[Entry]]) -> tuple[float, float, int]:
    """CPU seconds of this process, wall seconds, and entries of one whole read."""
    cpu, wall = time.process_time(), time.perf_counter()
    count = sum(1 for _ in read())
    return time.process_time() - cpu, time.perf_counter() - wall, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.ExitStack() as resources:
        reuse_or_start(resources, "firestore")
        client = firestore.Client(project=f"bench-scan-{uuid.uuid4().hex[:8]}")
        _write(client, args.schedules, datetime.now(UTC) - timedelta(minutes=5))
        readers = {
            "registry scan (the audit's)": RegistryScan(client, PREFIX, OWNER).iter_entries,
            "client snapshots (baseline)": ScheduleRegistry(client, PREFIX,
                                                            owner=OWNER).iter_entries,
        }
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for name, read in readers.items():
                cpu, wall, count = _measure(read)
                assert count == args.schedules, f"{name} read {count} of {args.schedules}"
                held = best.get(name, (cpu, wall))
                best[name] = (min(cpu, held[0]), min(wall, held[1]))
        print(f"a read of all {args.schedules} registry documents, best of {args.rounds} rounds")
        print(f"{'reader':<30} {'us CPU/doc':>10} {'wall s':>8}")
        for name, (cpu, wall) in best.items():
            print(f"{name:<30} {cpu / args.schedules * 1e6:>10.0f} {wall:>8.2f}")
        (scan_cpu, _), (base_cpu, _) = best.values()
        print(f"CPU per document, scan / baseline: {scan_cpu / base_cpu:.2f}")


if __name__ == "__main__":
    main()
