"""The `tick` action (tick mode, issue 17): the claimed tick of a minute fans out the due fires.

The tick reaches the worker as an ordinary fire of the reserved tick schedule
(`scheduler.ticks`), so the pipeline claims, leases, renews, takes over and records it like any
fire; this handler is its work. For the tick of minute M it reads the due registry documents a
page at a time (`worker.tick_store`), asks `scheduler.ticks.plan_document` what each one
publishes, records the owed slots it left out (beyond the catch-up window, or past the bound
of slots per document) `missed` in the ledger as the pipeline records a fire that came too late
(`record_missed`), publishes those contract fires (batched, and waited for), and only then
advances the documents' `next_fire_time` (with a precondition: a control edit in between
wins). The first `local_documents` it handles itself, after every later page has become a shard
fire, which any replica claims and runs through the same steps after reading its documents
again.

Idempotent by construction: a fire has its slot's execution ID, so one published twice (a
takeover after the claimer died between publishing and advancing, an overlapping tick, a
shard of a page the claimer also read) is dropped by the per-fire claim, and a missed record is
written only where the slot has none (one that ran keeps its own); a document is advanced only
after its fires were published and its left-out slots recorded, so none is skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from scheduler.contract import Message, execution_id
from scheduler.due import Owed, Slot, missed_reason
from scheduler.logs import get_logger
from scheduler.model import format_instant
from scheduler.ticks import (
    MAX_SLOTS_PER_DOCUMENT,
    Shard,
    Walks,
    due_before,
    fire_messages,
    plan_document,
    shard_documents,
)
from worker.action import ActionContext, ActionError, ActionResult
from worker.ledger import DEFAULT_RETENTION, Execution, missed_execution
from worker.tick_store import Advance, DueDocument, Page
from worker.transport import Outcome

if TYPE_CHECKING:
    from scheduler.config import Settings
    from worker.metrics import WorkerMetrics

log = get_logger(__name__)

# Documents per page of the due query (and per shard; Firestore's batch limit is 500 writes).
PAGE_SIZE = 500
# Documents the tick's claimer handles itself before it hands the rest to shards: a minute of
# ordinary size costs no shard claim, and a large one spreads over every replica at once.
LOCAL_DOCUMENTS = 1_000
# Shards' worth of document IDs per read of the due query beyond the claimer's own share.
SHARDS_PER_READ = 10
PUBLISH_TIMEOUT_S = 60.0
# Shards one process runs at once; the others wait for them. Each holds its page of documents
# and their fires (about 2 MB for 500): a worker's 64 executors ran 64 shards of a 100,000-document
# tick at once and held 130 MB, more than all the documents read at once; on its few cores more
# shards at once publish no faster (bench_ticks.py --only memory, bench/README.md).
SHARDS_AT_ONCE = 4


class TickStore(Protocol):
    """What a tick reads and writes (`worker.tick_store.FirestoreTickStore`)."""

    def due_page(self, before: datetime, size: int, cursor: Any = None, *,
                 ids_only: bool = False) -> Page:
        """The next page of the due query after `cursor`."""
        ...

    def get(self, document_ids: Sequence[str]) -> list[DueDocument]:
        """These documents as they are now (those due at all)."""
        ...

    def advance(self, advances: Sequence[Advance]) -> int:
        """Advance each document unless it changed since it was read; returns how many had."""
        ...

    def owed(self, document: DueDocument) -> Owed | None:
        """What a document's schedule owes (None: unreadable)."""
        ...


@dataclass
class TickReport:
    """What one tick or shard did."""

    documents: int = 0
    published: int = 0
    shards: int = 0
    conflicts: int = 0
    skipped: int = 0
    missed: int = 0

    def __str__(self) -> str:
        return (f"documents {self.documents}, fires {self.published}, shards {self.shards}, "
                f"changed meanwhile {self.conflicts}, old slots left out {self.skipped}, "
                f"recorded missed {self.missed}")


# Records each slot `missed` unless it has a record (as the pipeline records a fire too late to
# start, `worker.attempt.Attempt.missed_record`); returns how many it wrote (`build_tick`'s, on
# `FirestoreLedger.record_all`).
RecordMissed = Callable[[Sequence[Slot]], int]
# Missed records gathered before they are written (Firestore's limit of writes per commit): a
# page of documents that each left out a long outage holds no more than this and one document's
# (MAX_SLOTS_PER_DOCUMENT) at once.
MISSED_PER_WRITE = 500
_PAST_THE_BOUND = (f"left out: more than {MAX_SLOTS_PER_DOCUMENT} slots owed at once "
                   "(scheduler.ticks.MAX_SLOTS_PER_DOCUMENT), only the newest fired")


class Tick:
    """The fan-out of one minute's tick and of its shards."""

    def __init__(self, store: TickStore, publish: Callable[[Sequence[Message]], None],
                 record_missed: RecordMissed, *, signing_key: str | None = None,
                 page_size: int = PAGE_SIZE, local_documents: int = LOCAL_DOCUMENTS) -> None:
        if not 0 < page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {PAGE_SIZE} (got {page_size})")
        self._store = store
        self._publish = publish
        self._record_missed = record_missed
        self._signing_key = signing_key
        self._page_size = page_size
        self._local = local_documents

    def run(self, minute: datetime) -> TickReport:
        """The tick of `minute`: every due document, the first ones here, the rest by shards."""
        report = TickReport()
        before = due_before(minute)
        cursor = None
        # Its own share is read first and handled last, and every shard is published before any
        # fire: a shard's fires would otherwise queue ahead of the shards published after them
        # in the subscription, and the shards would run one after another (measured: they did).
        own: list[DueDocument] = []
        shards: list[Message] = []
        while True:
            local = len(own) < self._local
            # Pages of IDs only are read several shards at a time: the shards wait for them.
            size = self._page_size if local else self._page_size * SHARDS_PER_READ
            page = self._store.due_page(before, size, cursor, ids_only=not local)
            if local:
                own.extend(page.documents)
            for start in range(0, 0 if local else len(page.documents), self._page_size):
                chunk = page.documents[start:start + self._page_size]
                shard = Shard(minute, tuple(d.document_id for d in chunk))
                shards.append(shard.message(self._signing_key))
            if page.cursor is None:
                break
            cursor = page.cursor
        # One publish each: a batch of them would reach one replica's stream, which would hold
        # them all while the others idle.
        for shard_message in shards:
            self._publish([shard_message])
        report.shards += len(shards)
        for start in range(0, len(own), self._page_size):
            self._process(minute, own[start:start + self._page_size], report)
        return report

    def run_shard(self, minute: datetime, document_ids: Sequence[str]) -> TickReport:
        """A shard of the tick of `minute`: its documents, read again (one may have been
        advanced or changed since the claimer read it)."""
        report = TickReport()
        self._process(minute, self._store.get(document_ids), report)
        return report

    def _process(self, minute: datetime, documents: Sequence[DueDocument],
                 report: TickReport) -> None:
        fires: list[tuple[datetime, Message]] = []
        advances: list[Advance] = []
        missed: list[Slot] = []
        walks = Walks()
        for document in documents:
            owed = self._store.owed(document) if document.may_be_due(minute) else None
            plan = None if owed is None else plan_document(owed, document.next_fire_time, minute,
                                                           walks)
            if owed is None or plan is None:
                continue
            report.documents += 1
            if plan.skipped:
                report.skipped += 1
                log.warning("slots beyond the catch-up window left out, recorded missed",
                            schedule_id=owed.schedule.id,
                            next_fire_time=format_instant(document.next_fire_time),
                            missed=len(plan.missed))
            missed.extend(Slot(owed.schedule, slot, execution_id(owed.schedule.id, slot))
                          for slot in plan.missed)
            if len(missed) >= MISSED_PER_WRITE:
                report.missed += self._record_missed(missed)
                missed = []
            fires.extend(zip(plan.slots, fire_messages(owed.schedule, plan.slots,
                                                       self._signing_key), strict=True))
            advances.append(Advance(document, plan.next_fire_time))
        # Recorded and published before the documents advance: a claimer that dies in between
        # leaves them due, and the takeover's copies of these fires are dropped by their claims,
        # its missed records by the ledger (a slot keeps the record it has).
        if missed:
            report.missed += self._record_missed(missed)
        # In fire-time order, not the documents': a worker holds an early one-shot until its
        # `at` in one of its executors, so one queued behind later ones starts late (measured:
        # a minute's one-shots all share a `next_fire_time`, and published in document order,
        # 248 of 600 started up to 45 s after `at`).
        fires.sort(key=lambda fire: fire[0])
        self._publish([message for _, message in fires])
        report.published += len(fires)
        report.conflicts += self._store.advance(advances)


class TickAction:
    """The `tick` action handler: registered only in tick mode (`worker.actions`)."""

    def __init__(self, settings: Settings, tick: Tick | None = None,
                 metrics: WorkerMetrics | None = None) -> None:
        self._settings = settings
        # Built on first use (`build_tick`) unless given.
        self._tick = tick
        self._metrics = metrics
        self._lock = threading.Lock()
        self._shards = threading.BoundedSemaphore(SHARDS_AT_ONCE)

    def __call__(self, context: ActionContext) -> ActionResult:
        try:
            documents = shard_documents(context.schedule_id, context.params)
        except ValueError as exc:
            raise ActionError(str(exc), retryable=False) from exc
        tick = self._build()
        if documents is None:
            report = tick.run(context.fire_time)
        else:
            with self._shards:
                report = tick.run_shard(context.fire_time, documents)
        log.info("tick done", documents=report.documents, published=report.published,
                 shards=report.shards, conflicts=report.conflicts, missed=report.missed)
        if self._metrics is not None:
            # Jobs mode counts the same slots when Pub/Sub delivers their late fires.
            self._metrics.executions.labels(Outcome.MISSED).inc(report.missed)
        return ActionResult(detail=str(report))

    def _build(self) -> Tick:
        with self._lock:
            if self._tick is None:
                self._tick = build_tick(self._settings)
            return self._tick


def build_tick(settings: Settings) -> Tick:
    """A tick on the deployment's Firestore registry and fires topic."""
    from google.cloud.pubsub_v1.types import BatchSettings

    from scheduler import gcp
    from worker.firestore_ledger import FirestoreLedger
    from worker.pipeline import make_worker_id
    from worker.tick_store import FirestoreTickStore

    # Bigger batches than the client's default of 100: a tick publishes thousands at once.
    publisher = gcp.publisher_client(settings, BatchSettings(
        max_messages=1_000, max_bytes=9_000_000, max_latency=0.02))
    topic = settings.topic_path

    def publish(messages: Sequence[Message]) -> None:
        futures = [publisher.publish(topic, m.data, **dict(m.attributes)) for m in messages]
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT_S)

    client = gcp.firestore_client(settings)
    store = FirestoreTickStore(client, settings.collection_prefix,
                               settings.job_prefix, settings.allowed_targets)
    # The deployment's ledger, as the worker's pipeline writes it (`worker.runner`), its time
    # Firestore's; the records name this tick's writer, as a pipeline's name its worker.
    ledger = FirestoreLedger.from_settings(settings, client)
    worker_id = make_worker_id()

    def record_missed(slots: Sequence[Slot]) -> int:
        return ledger.record_all(missed_records(slots, worker_id=worker_id,
                                                now=ledger.clock.now()))

    return Tick(store, publish, record_missed, signing_key=settings.signing_key or None)


def missed_records(slots: Sequence[Slot], *, worker_id: str, now: datetime,
                   retention: timedelta = DEFAULT_RETENTION) -> list[Execution]:
    """The records of left-out slots: each the one the pipeline writes for its fire delivered
    at `now` (`worker.attempt.Attempt.missed_record`), with the catch-up policy's reason; a slot
    the policy would still let start was left out by the bound of slots per document."""
    records = []
    for slot in slots:
        schedule = slot.schedule
        reason = missed_reason(schedule, schedule.catchup, schedule.catchup_window,
                               slot.fire_time, now) or _PAST_THE_BOUND
        records.append(missed_execution(slot.execution_id, schedule.id, slot.fire_time,
                                        "scheduled", worker_id=worker_id, now=now,
                                        retention=retention, error=reason))
    return records
