"""How many registry documents a tick reads per document it publishes (issue 17's due query).
One command: `.venv/bin/python bench/bench_tick_reads.py`.

Uses the Firestore emulator FIRESTORE_EMULATOR_HOST names, or starts its own. Writes
`--schedules` hourly cron schedules spread evenly over the hour's minutes and `--one-shots`
one-shots spread over the first `--minutes` minutes, as a sync writes them
(`scheduler.registry.document_of`), then runs the real tick (`worker.actions.tick.Tick` on
`worker.tick_store.FirestoreTickStore`, every page in this process, publishes counted, not sent)
for `--minutes` consecutive minutes. Baseline, same run: the documents each tick had something
to publish for, the least it can read. Reported: documents read per such document (1.0 is the
floor), and each one-shot's lead (its publish's minute before its `at`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore

# The registry documents' writer that the tick tests and `bench_ticks.py` share.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tick_documents import put_documents

from scheduler.contract import Message, decode_message
from scheduler.model import Action, Schedule
from scheduler.registry import document_of
from scion_scheduler.google_emulators import reuse_or_start
from worker.actions.tick import Tick
from worker.tick_store import FirestoreTickStore

OWNER = "bench-"
ACTION = Action("http", {"url": "https://hub.example.com/fire"})


class CountingStore(FirestoreTickStore):
    """The real store, counting the documents its due query returns."""

    read = 0

    def due_page(self, before: datetime, size: int, cursor: Any = None, *,
                 ids_only: bool = False) -> Any:
        page = super().due_page(before, size, cursor, ids_only=ids_only)
        self.read += len(page.documents)
        return page


def _write(client: Any, schedules: Sequence[Schedule], now: datetime) -> None:
    put_documents(client, ((s, document_of(s, now, None, now, OWNER)) for s in schedules),
                  "bench_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=6_000)
    parser.add_argument("--one-shots", type=int, default=600)
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    with contextlib.ExitStack() as resources:
        reuse_or_start(resources, "firestore")
        client = firestore.Client(project=f"bench-reads-{uuid.uuid4().hex[:8]}")
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
        since = start - timedelta(minutes=5)
        spread = timedelta(minutes=args.minutes) / max(1, args.one_shots)
        schedules = [Schedule(id=f"cron/{i:06d}", action=ACTION, cron=f"{i % 60} * * * *")
                     for i in range(args.schedules)]
        schedules += [Schedule(id=f"once/{i:06d}", action=ACTION,
                               at=start + timedelta(seconds=31) + i * spread)
                      for i in range(args.one_shots)]
        _write(client, schedules, since)
        store = CountingStore(client, "bench_", OWNER)
        leads: list[float] = []
        minute = start

        def publish(messages: Sequence[Message]) -> None:
            for message in messages:
                fire = decode_message(message.data, message.attributes)
                if fire.at is not None:
                    leads.append((fire.at - minute).total_seconds())

        # Every document is due at its own slot: nothing is left out to be recorded missed.
        tick = Tick(store, publish, len, local_documents=10 ** 9)
        handled = 0
        for m in range(args.minutes):
            minute = start + timedelta(minutes=m)
            handled += tick.run(minute).documents
        print(f"{args.schedules} hourly cron schedules (spread over the minutes) and "
              f"{args.one_shots} one-shots over {args.minutes} minutes; {args.minutes} ticks")
        print(f"documents read by the due query     {store.read:>8}")
        print(f"documents with something to publish {handled:>8}  (baseline: the least to read)")
        print(f"reads per published document        {store.read / max(1, handled):>8.2f}")
        if leads:
            print(f"one-shots published {len(leads)}, lead before at: min {min(leads):.1f} s, "
                  f"max {max(leads):.1f} s")


if __name__ == "__main__":
    main()
