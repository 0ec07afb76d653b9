"""The audit: once a minute, one replica fires the owed slots that nobody ever recorded.

A fire that was never claimed leaves no trace in the ledger: Cloud Scheduler gave up its publish
after its retries, or a subscriber died holding messages it had not claimed and the broker never
redelivered them. So every replica runs this loop, and each minute exactly one of them audits:
the audit of minute M is claimed in the ledger like a fire (`AUDIT_SCHEDULE_ID`, fire time M),
at second `AUDIT_SECOND` of it, so the ledger's claim is the guarantee that it runs once.

The audit reads the schedule registry (`scheduler.registry`, written by the control module: no
Cloud Scheduler read; its own deployment's documents, a page at a time: `worker.registry_scan`)
and the execution IDs recorded with a fire time in the window `(now - horizon, now - grace]`
(one range query, `SlotRecords`), and finds the owed slots with no record
(`scheduler.due.unaccounted`). Each one is published again with trigger `audit`, its exact fire
time and the slot's own execution ID, so its claim dedupes it against a late original; or, when
the schedule's catch-up policy says it is too late to start, recorded `missed`. A slot whose
recovery was lost too is found again the next minute, until the horizon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter

from scheduler import gcp
from scheduler.config import Settings
from scheduler.contract import Message, build_message, execution_id
from scheduler.due import Slot, missed_reason, unaccounted
from scheduler.logs import get_logger
from scheduler.model import format_instant
from scheduler.registry import Entry
from worker.firestore_ledger import FirestoreLedger
from worker.firestore_slots import FirestoreSlotRecords
from worker.ledger import DEFAULT_RETENTION, ClaimRequest, Ledger, State, missed_execution
from worker.metrics import WorkerMetrics
from worker.registry_scan import RegistryScan
from worker.start_lag import StartLag, audit_grace

log = get_logger(__name__)

# Not printable, so never the ID of a hub schedule (`scheduler.validation` refuses those).
AUDIT_SCHEDULE_ID = "\tscion-audit"
# The audit of a minute runs this far into it: a slot on the minute is checked half a minute
# later, before the next one of an every-minute schedule is due (so `catchup: latest` and `none`
# still run it).
AUDIT_SECOND = 30
# The audit's claim: long enough for one audit; a claimer that dies leaves the minute to the
# next audit, whose window covers it.
AUDIT_LEASE = timedelta(seconds=50)
PUBLISH_TIMEOUT_S = 60.0


class SlotRecords(Protocol):
    """What the audit asks the ledger."""

    def recorded(self, start: datetime, end: datetime) -> set[str]:
        """The IDs of every execution with a fire time in `(start, end]`."""
        ...


class Registry(Protocol):
    """What the audit reads from the schedule registry (`scheduler.registry`)."""

    def iter_entries(self) -> Iterable[Entry]:
        """Every owned schedule's entry, one at a time."""
        ...


@dataclass(frozen=True)
class AuditReport:
    """One audit's counts."""

    audited: int
    recovered: int
    missed: int

    def __str__(self) -> str:
        return f"audited {self.audited}, recovered {self.recovered}, missed {self.missed}"


class Audit:
    """The audit loop of one replica."""

    def __init__(self, ledger: Ledger, records: SlotRecords, registry: Registry,
                 publish: Callable[[Sequence[Message]], list[str]], *, worker_id: str,
                 clock: Callable[[], datetime], horizon: timedelta, grace: timedelta,
                 audit_slots: Counter, signing_key: str | None = None,
                 retention: timedelta = DEFAULT_RETENTION,
                 start_lag: StartLag | None = None) -> None:
        if not timedelta(0) <= grace < horizon:
            raise ValueError(f"the audit grace must be from 0 up to its horizon "
                             f"(got {grace} and {horizon})")
        self._ledger = ledger
        self._records = records
        self._registry = registry
        self._publish = publish
        self._worker_id = worker_id
        self._clock = clock
        self._horizon = horizon
        self._grace = grace
        self._counter = audit_slots
        self._signing_key = signing_key
        self._retention = retention
        self._start_lag = start_lag if start_lag is not None else StartLag()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run on a daemon thread until `stop` is set."""
        thread = threading.Thread(target=self.run, args=(stop,), name="audit", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """At second `AUDIT_SECOND` of every minute, try to claim and run its audit."""
        while True:
            now = self._clock()
            minute = now.replace(second=0, microsecond=0)
            due = minute + timedelta(seconds=AUDIT_SECOND)
            if due <= now:
                minute += timedelta(minutes=1)
                due += timedelta(minutes=1)
            if stop.wait((due - now).total_seconds()):
                return
            try:
                self.audit_minute(minute)
            except Exception:
                log.exception("audit failed; the next minute's audit covers its window")

    def audit_minute(self, minute: datetime) -> AuditReport | None:
        """Claim the audit of `minute` and run it; None when another replica has it."""
        eid = execution_id(AUDIT_SCHEDULE_ID, minute)
        now = self._clock()
        claim = self._ledger.claim(ClaimRequest(
            execution_id=eid, schedule_id=AUDIT_SCHEDULE_ID, fire_time=minute,
            trigger="scheduled", worker_id=self._worker_id, lease=AUDIT_LEASE,
            overlap="allow", now=now, retention=timedelta(days=1)))
        if not claim.result.run:
            return None
        try:
            report = self.audit(self._clock())
        except Exception as exc:
            self._ledger.finish(eid, self._worker_id, State.FAILED, now=self._clock(),
                                error=f"{type(exc).__name__}: {exc}")
            raise
        self._ledger.finish(eid, self._worker_id, State.SUCCEEDED, now=self._clock(),
                            detail=str(report))
        log.info("audit done", minute=format_instant(minute), audited=report.audited,
                 recovered=report.recovered, missed=report.missed)
        return report

    def audit(self, now: datetime) -> AuditReport:
        """Fire again, or record missed, every owed slot in the window that has no record."""
        # A backlog's queued slots have no record yet either: the grace widens to how late
        # fires start here, so the audit does not publish them again (`worker.start_lag`).
        grace = audit_grace(self._grace, self._start_lag.recent(now), self._horizon)
        start, end = now - self._horizon, now - grace
        # One entry at a time: with tick mode's 100,000 schedules, a list of them all would be
        # the largest thing a worker holds (issue 17).
        owed = (entry.owed for entry in self._registry.iter_entries())
        audited, missing = unaccounted(owed, self._records.recorded(start, end), start, end)
        again: list[tuple[Slot, Message]] = []
        missed = 0
        for slot in missing:
            message = self._settle(slot, now)
            if message is None:
                missed += 1
            else:
                again.append((slot, message))
        # All at once, not one publish round trip after another: after a broker outage there
        # can be thousands, and one audit must finish within its minute.
        message_ids = self._publish([message for _, message in again]) if again else []
        for (slot, _), message_id in zip(again, message_ids, strict=True):
            log.warning("slot never fired or recorded; fired again by the audit",
                        message_id=message_id, **_fields(slot))
        self._count("audited", audited)
        self._count("recovered", len(again))
        self._count("missed", missed)
        return AuditReport(audited, len(again), missed)

    def _settle(self, slot: Slot, now: datetime) -> Message | None:
        """The slot's fire to publish again, or None once it is recorded missed."""
        schedule = slot.schedule
        reason = missed_reason(schedule, schedule.catchup, schedule.catchup_window,
                               slot.fire_time, now)
        if reason is None:
            return build_message(schedule, signing_key=self._signing_key, trigger="audit",
                                 fire_time=slot.fire_time)
        written = self._ledger.record(missed_execution(
            slot.execution_id, schedule.id, slot.fire_time, "audit", worker_id=self._worker_id,
            now=now, retention=self._retention, error=f"never delivered; {reason}"))
        if written:
            log.warning("slot never fired or recorded; recorded missed by the audit",
                        reason=reason, **_fields(slot))
        return None

    def _count(self, result: str, amount: int) -> None:
        if amount:
            self._counter.labels(result).inc(amount)


def _fields(slot: Slot) -> dict[str, str]:
    return {"schedule_id": slot.schedule.id, "fire_time": format_instant(slot.fire_time),
            "execution_id": slot.execution_id, "trigger": "audit"}


def start_audit(settings: Settings, client: Any, ledger: FirestoreLedger,
                metrics: WorkerMetrics, worker_id: str, stop: threading.Event,
                start_lag: StartLag | None = None) -> Audit:
    """Start a worker's audit loop on the deployment's Firestore and fires topic; `start_lag`:
    the pipeline's, so a backlog widens the audit's grace."""
    publisher = gcp.publisher_client(settings)
    topic = settings.topic_path

    def publish(messages: Sequence[Message]) -> list[str]:
        futures = [publisher.publish(topic, m.data, **dict(m.attributes)) for m in messages]
        return [str(future.result(timeout=PUBLISH_TIMEOUT_S)) for future in futures]

    prefix = settings.collection_prefix or "scion_"
    registry = RegistryScan(client, prefix, settings.job_prefix, settings.allowed_targets)
    audit = Audit(ledger, FirestoreSlotRecords(client, prefix), registry, publish,
                  worker_id=worker_id, clock=ledger.clock.now,
                  horizon=settings.audit_horizon,
                  grace=settings.audit_grace, audit_slots=metrics.audit_slots,
                  signing_key=settings.signing_key, start_lag=start_lag)
    audit.start(stop)
    return audit
