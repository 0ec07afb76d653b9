"""How fast can a fire be claimed? One command: `.venv/bin/python bench/bench_claim.py`.

Starts its own Firestore emulator, then measures in the same run, with the same threads:

* the floor and the naive ceiling: plain `create()`s, and read-then-create transactions;
* the full claim done as a transaction (read execution + schedule state, write both), which is
  what the ledger would do without its optimistic commits;
* `FirestoreLedger.claim`: fresh fires under overlap allow and skip, and duplicate deliveries;
* the same claims on `SqliteLedger`, for the single-instance fallback.

Prints one table (claims per second, median of the rounds) and stops the emulator. Figures
depend on the machine and its load; compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.contract import execution_id
from scheduler.logs import configure
from scion_scheduler.google_emulators import Emulator
from worker.ledger import ClaimRequest, ClaimResult, Ledger, ScheduleState
from worker.ledger_rules import new_claim
from worker.sqlite_ledger import SqliteLedger

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Row:
    """One measured line of the table."""

    name: str
    method: str
    rates: list[float]

    @property
    def rate(self) -> float:
        """Operations per second: the median of the rounds."""
        return statistics.median(self.rates)


def timed(items: Sequence[Any], operation: Callable[[Any], object], threads: int) -> float:
    """Operations per second running `operation` over `items` on `threads` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(operation, items):
            pass
    return len(items) / (time.perf_counter() - started)


def requests(count: int, overlap: str, worker: str, tag: str) -> list[ClaimRequest]:
    """`count` fresh fires, one per schedule (so overlap skip never skips)."""
    out = []
    for index in range(count):
        schedule_id = f"bench-{tag}-{index}"
        out.append(ClaimRequest(execution_id(schedule_id, T0), schedule_id, T0, "scheduled", worker,
                                LEASE, overlap, T0))
    return out


def again(batch: list[ClaimRequest], worker: str) -> list[ClaimRequest]:
    """The same fires delivered again, to another worker, while the first holds them."""
    return [
        ClaimRequest(
            r.execution_id,
            r.schedule_id,
            r.fire_time,
            r.trigger,
            worker,
            r.lease,
            r.overlap,
            r.now + timedelta(seconds=1),
        )
        for r in batch
    ]


def claimer(ledger: Ledger, expected: ClaimResult) -> Callable[[ClaimRequest], object]:
    """A claim that checks its outcome, so that a fast wrong answer cannot pass as speed."""
    def claim(request: ClaimRequest) -> object:
        result = ledger.claim(request).result
        if result is not expected:
            raise AssertionError(f"{request.execution_id}: {result} (expected {expected})")
        return result
    return claim


def baseline_rows(client: Any, tag: str, ops: int, threads: int) -> list[tuple[str, str, float]]:
    """The floor and the naive ceiling: (name, RPCs, operations per second)."""
    from google.cloud import firestore

    from worker.firestore_documents import execution_document, running_document

    docs, states = client.collection("plain"), client.collection("state")
    # The baselines write the very documents a claim writes, so only the method differs.
    baseline = [
        (
            docs.document(r.execution_id),
            states.document(r.schedule_id),
            execution_document(new_claim(r)),
            running_document(
                ScheduleState(r.schedule_id, r.execution_id, r.fire_time, r.now + r.lease)
            ),
        )
        for r in requests(3 * ops, "skip", "w1", f"base{tag}")
    ]

    @firestore.transactional
    def read_then_create(transaction: Any, ref: Any, data: dict[str, Any]) -> None:
        if not ref.get(transaction=transaction).exists:
            transaction.create(ref, data)

    @firestore.transactional
    def claim_transaction(transaction: Any, ref: Any, state_ref: Any, data: dict[str, Any],
                          state: dict[str, Any]) -> None:
        list(transaction.get_all([ref, state_ref]))
        transaction.create(ref, data)
        transaction.set(state_ref, state)

    return [
        (
            "plain create() of the execution",
            "Commit",
            timed(baseline[:ops], lambda b: b[0].create(b[2]), threads),
        ),
        (
            "naive transaction: read, create",
            "Begin+Get+Commit",
            timed(
                baseline[ops : 2 * ops],
                lambda b: read_then_create(client.transaction(), b[0], b[2]),
                threads,
            ),
        ),
        (
            "claim as a transaction (2 reads, 2 writes)",
            "Begin+BatchGet+Commit",
            timed(
                baseline[2 * ops :], lambda b: claim_transaction(client.transaction(), *b), threads
            ),
        ),
    ]


def ledger_rows(client: Any, tag: str, ops: int, threads: int) -> list[tuple[str, str, float]]:
    """`FirestoreLedger.claim` of fresh fires and of duplicates: (name, RPCs, operations per
    second)."""
    from worker.firestore_ledger import FirestoreLedger

    rows = []
    ledger, replica = FirestoreLedger(client), FirestoreLedger(client)
    for overlap in ("allow", "skip"):
        fresh = requests(ops, overlap, "w1", f"{overlap}{tag}")
        rows.append((f"FirestoreLedger.claim, new fire, overlap {overlap}", "Commit",
                     timed(fresh, claimer(ledger, ClaimResult.CLAIMED), threads)))
        # Another replica guesses "new" first: its creates fail, then it reads.
        rows.append(
            (
                f"FirestoreLedger.claim, duplicate at another replica (BUSY), overlap {overlap}",
                "Commit (fails)+BatchGet",
                timed(again(fresh, "w2"), claimer(replica, ClaimResult.BUSY), threads),
            )
        )
        rows.append(
            (
                f"FirestoreLedger.claim, duplicate at the holder (BUSY), overlap {overlap}",
                "none",
                timed(again(fresh, "w1"), claimer(ledger, ClaimResult.BUSY), threads),
            )
        )
    return rows


def firestore_round(client: Any, tag: str, ops: int, threads: int) -> list[tuple[str, str, float]]:
    """One round of every Firestore measurement: (name, RPCs, operations per second)."""
    return baseline_rows(client, tag, ops, threads) + ledger_rows(client, tag, ops, threads)


def firestore_rows(ops: int, threads: int, rounds: int) -> list[Row]:
    """Every Firestore measurement, each round on a fresh project; round 0 only warms up the
    emulator's JIT and the client's channels."""
    from google.cloud import firestore

    rows: dict[str, Row] = {}
    for round_index in range(rounds + 1):
        client = firestore.Client(project=f"bench-{uuid.uuid4().hex[:8]}")
        measured = firestore_round(client, str(round_index), ops, threads)
        client.close()
        if round_index:
            for name, method, rate in measured:
                rows.setdefault(name, Row(name, method, [])).rates.append(rate)
    return list(rows.values())


def sqlite_rows(ops: int, threads: int, rounds: int) -> list[Row]:
    """The SQLite ledger's claims, on a fresh file per round."""
    rows: dict[str, Row] = {}
    for round_index in range(rounds):
        with tempfile.TemporaryDirectory() as directory:
            ledger = SqliteLedger(Path(directory) / "ledger.db")
            for overlap in ("allow", "skip"):
                fresh = requests(ops, overlap, "w1", f"sqlite{overlap}{round_index}")
                for name, batch, expected in (
                    (
                        f"SqliteLedger.claim, new fire, overlap {overlap}",
                        fresh,
                        ClaimResult.CLAIMED,
                    ),
                    (
                        f"SqliteLedger.claim, duplicate (BUSY), overlap {overlap}",
                        again(fresh, "w2"),
                        ClaimResult.BUSY,
                    ),
                ):
                    rate = timed(batch, claimer(ledger, expected), threads)
                    rows.setdefault(name, Row(name, "BEGIN IMMEDIATE", [])).rates.append(rate)
            ledger.close()
    return list(rows.values())


def print_table(rows: list[Row], baseline: float, threads: int, ops: int, rounds: int) -> None:
    """The comparable table."""
    print(f"\n{ops} operations per measurement, {threads} threads, median of {rounds} rounds "
          f"(after a warm-up round), {os.cpu_count()} CPUs\n")
    width = max(len(row.name) for row in rows)
    method_width = max(len(row.method) for row in rows)
    print(
        f"{'measurement':<{width}}  {'RPCs / method':<{method_width}}  {'ops/s':>7}  "
        f"{'vs create':>9}  rounds"
    )
    for row in rows:
        spread = " ".join(f"{rate:.0f}" for rate in row.rates)
        print(f"{row.name:<{width}}  {row.method:<{method_width}}  {row.rate:>7.0f}  "
              f"{row.rate / baseline:>8.2f}x  {spread}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--ops", type=int, default=600, help="operations per measurement (default 600)"
    )
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    args = parser.parse_args(argv)
    configure("console", "WARNING")
    with Emulator("firestore") as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        print(f"Firestore emulator on {emulator.host}", flush=True)
        try:
            rows = firestore_rows(args.ops, args.threads, args.rounds)
        finally:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    rows += sqlite_rows(args.ops, args.threads, args.rounds)
    print_table(rows, rows[0].rate, args.threads, args.ops, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
