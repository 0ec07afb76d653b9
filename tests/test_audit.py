"""The audit (`worker.audit`) on the in-memory ledger: one audit per minute across replicas, an
unrecorded slot fired again under its own execution ID (deduplicated against a late original),
a too-late one recorded `missed`, and nothing fired that was recorded or not owed. The same
paths on the emulators: `tests/test_audit_e2e.py`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from memory_ledger import MemoryLedger
from structlog.testing import capture_logs

from scheduler.contract import Message, decode_message, execution_id
from scheduler.due import Owed
from scheduler.model import Action, Schedule
from scheduler.registry import Entry
from worker.action import ActionContext, ActionRegistry
from worker.audit import Audit
from worker.ledger import State
from worker.metrics import WorkerMetrics
from worker.pipeline import Pipeline
from worker.start_lag import StartLag
from worker.transport import Delivery, Outcome

KEY = "audit-key"
MINUTE = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
NOW = MINUTE + timedelta(seconds=30)


class Registry:
    def __init__(self, *schedules: Schedule, since: datetime = MINUTE - timedelta(hours=1)) -> None:
        self.entries = {s.id: Entry(Owed(s, since), s.fingerprint()) for s in schedules}

    def iter_entries(self) -> Iterator[Entry]:
        return iter(self.entries.values())


def _schedule(sid: str = "s", **fields: Any) -> Schedule:
    values: dict[str, Any] = {"id": sid, "action": Action("custom"), "cron": "* * * * *"}
    values.update(fields)
    return Schedule(**values)


class Replica:
    def __init__(self, ledger: MemoryLedger, registry: Registry, name: str = "w1",
                 start_lag: StartLag | None = None) -> None:
        self.published: list[Message] = []
        self.metrics = WorkerMetrics()
        self.audit = Audit(ledger, ledger, registry, self._publish, worker_id=name,
                           clock=lambda: NOW, horizon=timedelta(minutes=5),
                           grace=timedelta(seconds=20), audit_slots=self.metrics.audit_slots,
                           signing_key=KEY, start_lag=start_lag)

    def _publish(self, messages: Sequence[Message]) -> list[str]:
        self.published.extend(messages)
        return [f"m{len(self.published) - i}" for i in reversed(range(len(messages)))]

    def count(self, result: str) -> float:
        return self.metrics.registry.get_sample_value(
            "scion_worker_audit_slots_total", {"result": result}) or 0.0


def _record_slots(ledger: MemoryLedger, schedule: Schedule, slots: list[datetime]) -> None:
    pipeline = Pipeline(ledger, ActionRegistry({"custom": lambda _c: None}), worker_id="w0",
                        signing_key=KEY, clock=lambda: NOW)
    from scheduler.contract import build_message

    for slot in slots:
        message = build_message(schedule, signing_key=KEY)
        pipeline.handle(Delivery(f"orig-{slot}", message.data, message.attributes, slot))


def test_each_minute_is_audited_by_exactly_one_replica() -> None:
    ledger, registry = MemoryLedger(), Registry(_schedule())
    first, second = Replica(ledger, registry, "w1"), Replica(ledger, registry, "w2")
    reports = [first.audit.audit_minute(MINUTE), second.audit.audit_minute(MINUTE)]
    assert sum(r is not None for r in reports) == 1
    assert len(first.published) + len(second.published) == 5  # 10:01..10:05, none recorded


def test_an_unrecorded_slot_is_fired_again_as_itself_and_a_late_original_is_a_duplicate() -> None:
    ledger, schedule = MemoryLedger(), _schedule()
    slots = [MINUTE - timedelta(minutes=m) for m in (4, 3, 2, 1, 0)]
    _record_slots(ledger, schedule, [s for s in slots if s != slots[2]])
    replica = Replica(ledger, Registry(schedule))
    with capture_logs() as logs:
        report = replica.audit.audit_minute(MINUTE)
    assert report is not None and (report.audited, report.recovered, report.missed) == (5, 1, 0)
    assert replica.count("audited") == 5 and replica.count("recovered") == 1
    [message] = replica.published
    fire = decode_message(message.data, message.attributes, signing_key=KEY)
    eid = execution_id("s", slots[2])
    assert (fire.trigger, fire.fire_time) == ("audit", slots[2])
    recovery = [line for line in logs if line.get("trigger") == "audit"]
    assert recovery and recovery[0]["execution_id"] == eid
    assert recovery[0]["fire_time"] == "2026-03-02T10:03:00Z"
    # The recovered fire runs once, recorded as the audit's; the original, if it ever comes,
    # is the same execution and is dropped as a duplicate.
    calls: list[ActionContext] = []
    pipeline = Pipeline(ledger, ActionRegistry({"custom": calls.append}), worker_id="w3",
                        signing_key=KEY, clock=lambda: NOW + timedelta(seconds=1))
    done = pipeline.handle(Delivery("audit-1", message.data, message.attributes, NOW))
    assert done.outcome == Outcome.SUCCEEDED
    record = ledger.get(eid)
    assert record is not None and record.trigger == "audit" and record.state is State.SUCCEEDED
    _record_slots(ledger, schedule, [slots[2]])
    assert len(calls) == 1 and [c.execution_id for c in calls] == [eid]
    # The next audit finds every slot recorded.
    again = Replica(ledger, Registry(schedule)).audit.audit(NOW + timedelta(seconds=1))
    assert (again.audited, again.recovered) == (5, 0)


def test_a_slot_too_late_for_its_catch_up_policy_is_recorded_missed_not_fired() -> None:
    ledger = MemoryLedger()
    latest = _schedule("latest", catchup="latest")
    replica = Replica(ledger, Registry(latest))
    report = replica.audit.audit(NOW)
    # 10:01..10:04 are superseded by 10:05 (due): missed; 10:05 itself may still run.
    assert (report.recovered, report.missed) == (1, 4)
    record = ledger.get(execution_id("latest", MINUTE - timedelta(minutes=1)))
    assert record is not None and record.state is State.MISSED and record.trigger == "audit"
    assert "superseded" in (record.error or "")
    assert replica.count("missed") == 4


def test_a_paused_schedule_or_one_created_after_the_window_owes_nothing() -> None:
    ledger = MemoryLedger()
    paused = _schedule("p", paused=True)
    fresh = _schedule("f")
    registry = Registry(paused)
    registry.entries["f"] = Entry(Owed(fresh, NOW), fresh.fingerprint())
    replica = Replica(ledger, registry)
    report = replica.audit.audit(NOW)
    assert (report.audited, report.recovered, report.missed) == (0, 0, 0)
    assert replica.published == []


def test_a_backlog_widens_the_grace_so_queued_slots_are_not_fired_again() -> None:
    # Fires start 50 s late here (a backlog): the slots of the last 75 s may still be queued,
    # so the audit fires again only the older ones that have no record.
    ledger, schedule = MemoryLedger(), _schedule()
    lag = StartLag()
    lag.observe(timedelta(seconds=50), NOW - timedelta(seconds=5))
    replica = Replica(ledger, Registry(schedule), start_lag=lag)
    report = replica.audit.audit(NOW)
    fired = [decode_message(m.data, m.attributes, signing_key=KEY).fire_time
             for m in replica.published]
    assert fired == [MINUTE - timedelta(minutes=m) for m in (4, 3, 2, 1)]
    assert (report.audited, report.recovered) == (4, 4)
    # Once the backlog has drained (nothing late seen for two minutes), the grace is back.
    later = StartLag()
    later.observe(timedelta(seconds=50), NOW - timedelta(minutes=3))
    assert Replica(MemoryLedger(), Registry(schedule), start_lag=later).audit.audit(
        NOW).recovered == 5
