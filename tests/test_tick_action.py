"""The tick's fan-out (`worker.actions.tick`) on the Firestore emulator: the due query a page at
a time, what each document publishes and where it advances, shards, a re-run, a concurrent
edit. Fires are captured as published (the end-to-end tests in `test_ticks_e2e.py` run them
through real workers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from tick_documents import next_fire_time_of, put_documents, tick_document

from scheduler.contract import Message, decode_message, execution_id
from scheduler.due import Slot
from scheduler.model import Schedule
from scheduler.registry import document_id, first_slot
from scheduler.reserved import TICK_ACTION_TYPE, TICK_SCHEDULE_ID, is_tick_schedule
from scheduler.ticks import MAX_SLOTS_PER_DOCUMENT, Shard, fire_messages, shard_documents
from scheduler.validation import parse_schedule
from worker.action import ActionContext, ActionError
from worker.actions.tick import SHARDS_AT_ONCE, Tick, TickAction, TickReport, missed_records
from worker.attempt import Attempt
from worker.ledger import DEFAULT_RETENTION, State
from worker.tick_store import Advance, FirestoreTickStore

pytestmark = pytest.mark.emulator

M = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = "tick-key"


def schedule(sid: str, cron: str | None = "* * * * *", **extra: Any) -> Schedule:
    raw: dict[str, Any] = {"id": sid, "action": {"type": "http", "url": "https://h.example/f"}}
    if cron is not None:
        raw["cron"] = cron
    raw.update(extra)
    return parse_schedule(raw)


class Published:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)

    def slots(self) -> list[tuple[str, datetime]]:
        out = []
        for message in self.messages:
            fire = decode_message(message.data, message.attributes, signing_key=KEY)
            if not is_tick_schedule(fire.schedule_id):
                assert fire.trigger == "scheduled" and fire.fire_time is not None
                out.append((fire.schedule_id, fire.fire_time))
        return sorted(out)

    def shards(self) -> list[tuple[str, tuple[str, ...]]]:
        out = []
        for message in self.messages:
            fire = decode_message(message.data, message.attributes, signing_key=KEY)
            documents = shard_documents(fire.schedule_id, fire.action.params) \
                if is_tick_schedule(fire.schedule_id) else None
            if documents is not None:
                assert fire.fire_time == M
                out.append((fire.schedule_id, documents))
        return out


@pytest.fixture
def client(firestore_emulator: str, project_id: str) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=project_id)


class Recorded:
    """A fake of the ledger's missed records: like `Ledger.record`, one record per slot, the
    first written kept."""

    def __init__(self) -> None:
        self.slots: dict[str, Slot] = {}
        self.calls = 0

    def __call__(self, slots: Sequence[Slot]) -> int:
        self.calls += 1
        new = {s.execution_id: s for s in slots if s.execution_id not in self.slots}
        self.slots.update(new)
        return len(new)

    def fire_times(self, schedule_id: str) -> list[datetime]:
        return sorted(s.fire_time for s in self.slots.values() if s.schedule.id == schedule_id)


def make_tick(client: Any, published: Published, missed: Recorded | None = None,
              **options: Any) -> Tick:
    return Tick(FirestoreTickStore(client, "scion_", "scion-"), published, missed or Recorded(),
                signing_key=KEY, **options)


def test_due_query_publishes_each_due_slot_and_advances(client: Any) -> None:
    since = M - timedelta(hours=1)
    every = [schedule(f"every-{i}") for i in range(5)]
    later = schedule("later", "30 12 * * *")
    other = schedule("others")
    paused = schedule("paused", paused=True)
    documents = [(s, tick_document(s, since, M)) for s in every]
    documents += [(later, tick_document(later, since, M + timedelta(minutes=30))),
                  (other, tick_document(other, since, M, owner="someone-else-")),
                  (paused, tick_document(paused, since, None))]
    put_documents(client, documents)
    published = Published()
    report = make_tick(client, published, page_size=2).run(M)
    assert published.slots() == [(s.id, M) for s in every]
    assert report.documents == 5 and report.published == 5 and report.shards == 0
    for s in every:
        assert next_fire_time_of(client, s.id) == M + timedelta(minutes=1)
    assert next_fire_time_of(client, "later") == M + timedelta(minutes=30)
    assert next_fire_time_of(client, "others") == M
    # Every fire has its job's execution ID; a re-run finds nothing left to publish.
    fire = decode_message(published.messages[0].data, published.messages[0].attributes)
    assert fire.fire_time is not None
    assert execution_id(fire.schedule_id, fire.derive_fire_time(M), fire.trigger) == \
        execution_id(fire.schedule_id, M)
    again = Published()
    assert make_tick(client, again).run(M).published == 0 and again.messages == []


def test_a_claimer_that_died_before_advancing_is_redone_with_the_same_fires(client: Any) -> None:
    since = M - timedelta(hours=1)
    put_documents(client, [(s, tick_document(s, since, M))
                           for s in (schedule("a"), schedule("b"))])
    first = Published()

    class DiesBeforeAdvancing(FirestoreTickStore):
        def advance(self, advances: Sequence[Advance]) -> int:
            raise RuntimeError("claimer killed")

    dying = Tick(DiesBeforeAdvancing(client, "scion_", "scion-"), first, Recorded(),
                 signing_key=KEY)
    with pytest.raises(RuntimeError):
        dying.run(M)
    second = Published()
    make_tick(client, second).run(M)
    assert second.slots() == first.slots() == [("a", M), ("b", M)]


def test_missed_ticks_publish_every_slot_since(client: Any) -> None:
    since = M - timedelta(hours=1)
    s = schedule("catching-up")
    put_documents(client, [(s, tick_document(s, since, M - timedelta(minutes=3)))])
    published = Published()
    make_tick(client, published).run(M)
    assert published.slots() == [("catching-up", M - timedelta(minutes=m)) for m in (3, 2, 1, 0)]
    assert next_fire_time_of(client, "catching-up") == M + timedelta(minutes=1)


def test_slots_beyond_the_window_are_recorded_missed_before_the_document_advances(
        client: Any) -> None:
    since = M - timedelta(days=1)
    late = schedule("late", "*/5 * * * *", catchup_window="10m")
    on_time = schedule("on-time", "*/5 * * * *", catchup_window="10m")
    put_documents(client, [(late, tick_document(late, since, M - timedelta(minutes=30))),
                           (on_time, tick_document(on_time, since, M))])
    published, missed = Published(), Recorded()

    class DiesBeforeAdvancing(FirestoreTickStore):
        def advance(self, advances: Sequence[Advance]) -> int:
            raise RuntimeError("claimer killed")

    # Recorded before the documents advance: a claimer that dies leaves them due, and its
    # takeover writes the same records again, which the ledger keeps once.
    dying = Tick(DiesBeforeAdvancing(client, "scion_", "scion-"), Published(), missed,
                 signing_key=KEY)
    with pytest.raises(RuntimeError):
        dying.run(M)
    assert missed.fire_times("late") == [M - timedelta(minutes=m) for m in (30, 25, 20, 15)]
    assert next_fire_time_of(client, "late") == M - timedelta(minutes=30)
    report = make_tick(client, published, missed).run(M)
    assert report.missed == 0 and report.skipped == 1 and missed.calls == 2
    assert missed.fire_times("late") == [M - timedelta(minutes=m) for m in (30, 25, 20, 15)]
    assert missed.fire_times("on-time") == []
    assert all(s.execution_id == execution_id("late", s.fire_time)
               for s in missed.slots.values())
    assert published.slots() == sorted(
        [("late", M - timedelta(minutes=m)) for m in (10, 5, 0)] + [("on-time", M)])
    assert next_fire_time_of(client, "late") == M + timedelta(minutes=5)


def test_a_long_outage_records_the_newest_slots_a_write_at_a_time(client: Any) -> None:
    # Two documents a year late: each records the newest MAX_SLOTS_PER_DOCUMENT, and the tick
    # writes them MISSED_PER_WRITE or so at once, not all of a page's at the end.
    since = M - timedelta(days=400)
    schedules = [schedule(f"year-{i}", catchup_window="10m") for i in range(2)]
    put_documents(client, [(s, tick_document(s, since, M - timedelta(days=365)))
                           for s in schedules])
    batches: list[int] = []
    missed = Recorded()

    def record(slots: Sequence[Slot]) -> int:
        batches.append(len(slots))
        return missed(slots)

    tick = Tick(FirestoreTickStore(client, "scion_", "scion-"), Published(), record,
                signing_key=KEY)
    report = tick.run(M)
    assert report.missed == 2 * MAX_SLOTS_PER_DOCUMENT and batches == [1_000, 1_000]
    assert missed.fire_times("year-0")[-1] == M - timedelta(minutes=12)


def test_missed_records_are_the_pipelines_for_the_same_late_fire() -> None:
    late = schedule("late", "0 9 1 2 *", catchup_window="10m")
    slot = datetime(2026, 2, 1, 9, tzinfo=UTC)
    now = M + timedelta(seconds=7)
    [record] = missed_records([Slot(late, slot, execution_id("late", slot))],
                              worker_id="w", now=now)
    fire = decode_message(*_fields(fire_messages(late, [slot], KEY)[0]), signing_key=KEY)
    attempt = Attempt.of(fire, slot, cast(Any, None), cast(Any, None))
    reason = attempt.missed_reason(now)
    assert reason is not None
    assert record == attempt.missed_record(worker_id="w", now=now, retention=DEFAULT_RETENTION,
                                           reason=reason)
    # Left out by the bound, though the policy would still run it: said so.
    [bound] = missed_records([Slot(late, M, execution_id("late", M))], worker_id="w", now=now)
    assert "MAX_SLOTS_PER_DOCUMENT" in (bound.error or "")


def _fields(message: Message) -> tuple[bytes, Any]:
    return message.data, message.attributes


def test_the_ledger_records_a_ticks_missed_slots_once(client: Any) -> None:
    from worker.firestore_ledger import FirestoreLedger

    ledger = FirestoreLedger(client)
    late = schedule("late", catchup_window="10m")
    slots = [M - timedelta(minutes=m) for m in range(20, 11, -1)]
    records = missed_records([Slot(late, s, execution_id("late", s)) for s in slots],
                             worker_id="w", now=M)
    ran = replace(records[3], state=State.SUCCEEDED, error=None, detail="ran")
    assert ledger.record(ran)
    assert ledger.record_all(records[:5]) == 4
    assert ledger.record_all(records) == 4
    assert ledger.record_all(records) == 0
    history = ledger.history("late", limit=50)
    assert sorted(e.fire_time for e in history) == slots
    assert [e.state for e in history if e.fire_time == slots[3]] == [State.SUCCEEDED]
    assert all(e.state is State.MISSED and "catch-up window" in (e.error or "")
               for e in history if e.fire_time != slots[3])


def test_one_shots_are_published_in_their_jobs_minute(client: Any) -> None:
    since = M - timedelta(hours=1)
    soon = schedule("soon", None, at=(M + timedelta(seconds=75)).isoformat())
    later = schedule("later", None, at=(M + timedelta(seconds=95)).isoformat())
    # As the control module writes them: due at their job's minute (`registry.first_slot`).
    put_documents(client, [(s, tick_document(s, since, first_slot(s, since, None)))
                           for s in (soon, later)])
    published = Published()
    make_tick(client, published).run(M)
    assert published.slots() == [("soon", soon.at)]
    assert next_fire_time_of(client, "soon") is None
    assert next_fire_time_of(client, "later") == M + timedelta(minutes=1)


def test_a_minutes_one_shots_are_published_in_the_order_of_their_at(client: Any) -> None:
    # They share a next fire time (their job's minute), so the due query returns them in
    # document order; the worker holds each until its `at` in an executor, first come first.
    since = M - timedelta(hours=1)
    shots = [schedule(f"shot-{i:02d}", None, at=(M + timedelta(seconds=89 - i)).isoformat())
             for i in range(40)]
    put_documents(client, [(s, tick_document(s, since, first_slot(s, since, None)))
                           for s in shots])
    published = Published()
    make_tick(client, published).run(M)
    times = [decode_message(m.data, m.attributes, signing_key=KEY).fire_time
             for m in published.messages]
    assert len(times) == 40 and times == sorted(times)


def test_one_shots_written_with_their_at_as_next_fire_time_still_go_out_ahead(
        client: Any) -> None:
    # Documents of versions before: `next_fire_time` is the `at` itself.
    since = M - timedelta(hours=1)
    early = schedule("early", None, at=(M + timedelta(seconds=45)).isoformat())
    late = schedule("late", None, at=(M + timedelta(seconds=75)).isoformat())
    put_documents(client, [(s, tick_document(s, since, s.at)) for s in (early, late)])
    published = Published()
    make_tick(client, published).run(M)
    assert published.slots() == [("early", early.at)]  # 45 s ahead, as before
    make_tick(client, published).run(M + timedelta(minutes=1))
    assert published.slots() == [("early", early.at), ("late", late.at)]  # 15 s ahead


def test_a_big_tick_is_split_into_shards_that_publish_each_slot_once(client: Any) -> None:
    since = M - timedelta(hours=1)
    schedules = [schedule(f"s{i:02}") for i in range(11)]
    put_documents(client, [(s, tick_document(s, since, M)) for s in schedules])
    published = Published()
    report = make_tick(client, published, page_size=3, local_documents=3).run(M)
    assert report.documents == 3 and report.shards == 3
    shards = published.shards()
    assert sum(len(docs) for _, docs in shards) == 8
    for _, documents in shards:
        make_tick(client, published).run_shard(M, documents)
    # A shard run again (a duplicate the claim would drop anyway) publishes nothing.
    make_tick(client, published).run_shard(M, shards[0][1])
    assert published.slots() == sorted((s.id, M) for s in schedules)


def test_a_concurrent_edit_wins_over_the_ticks_advance(client: Any) -> None:
    since = M - timedelta(hours=1)
    edited, untouched = schedule("edited"), schedule("untouched")
    put_documents(client, [(s, tick_document(s, since, M)) for s in (edited, untouched)])
    new_definition = replace(edited, cron="*/5 * * * *")

    class EditDuringTick(FirestoreTickStore):
        def advance(self, advances: Sequence[Advance]) -> int:
            put_documents(client, [(new_definition, tick_document(
                new_definition, M + timedelta(seconds=1), M + timedelta(minutes=5)))])
            return super().advance(advances)

    published = Published()
    report = Tick(EditDuringTick(client, "scion_", "scion-"), published, Recorded(),
                  signing_key=KEY).run(M)
    assert report.conflicts == 1
    assert next_fire_time_of(client, "edited") == M + timedelta(minutes=5)
    assert next_fire_time_of(client, "untouched") == M + timedelta(minutes=1)


def test_the_tick_action_refuses_anything_but_the_tick(client: Any) -> None:
    from scheduler.config import Settings

    action = TickAction(Settings.from_env({}))
    context = ActionContext(schedule_id="user-schedule", fire_time=M, execution_id="x",
                            trigger="scheduled", attempt=1, params={})
    with pytest.raises(ActionError, match="not the tick") as raised:
        action(context)
    assert not raised.value.retryable
    with pytest.raises(ActionError):
        action(replace(context, schedule_id=TICK_SCHEDULE_ID, params={"documents": ["x"]}))
    assert document_id("x") != "x"


def test_a_process_runs_at_most_SHARDS_AT_ONCE_shards_at_once() -> None:
    from scheduler.config import Settings

    running, most, lock = [0], [0], threading.Lock()

    class SlowTick(Tick):
        def run_shard(self, minute: datetime, document_ids: Sequence[str]) -> TickReport:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return TickReport()

    action = TickAction(Settings.from_env({}), SlowTick(cast(Any, None), lambda _m: None,
                                                                Recorded()))
    contexts = [ActionContext(schedule_id=Shard(M, (f"{i:064}",)).schedule_id, fire_time=M,
                              execution_id=str(i), trigger="scheduled", attempt=1,
                              params={"documents": [f"{i:064}"]}) for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(action, contexts))
    assert most[0] == SHARDS_AT_ONCE


def test_the_tick_action_is_registered_in_tick_mode_only() -> None:
    from scheduler.config import Settings
    from worker.actions import builtin_handlers

    assert TICK_ACTION_TYPE not in builtin_handlers(Settings.from_env({}))
    handlers = builtin_handlers(Settings.from_env({"SCION_SCHEDULER_MODE": "ticks"}))
    assert isinstance(handlers[TICK_ACTION_TYPE], TickAction)


def test_a_shards_document_of_an_unexpected_field_type_is_left_out_and_the_rest_published(
        client: Any) -> None:
    # Only a corrupt document has one (a map where the definition's text belongs); the plain
    # reader does not decode it, and the client's reader hands it to `owed`, which logs it.
    good, corrupt = schedule("good"), schedule("corrupt")
    fields = tick_document(corrupt, M - timedelta(hours=1), M)
    fields["definition"] = {"not": "text"}
    put_documents(client, [(good, tick_document(good, M - timedelta(hours=1), M)),
                           (corrupt, fields)])
    published = Published()
    report = make_tick(client, published).run_shard(
        M, [document_id("corrupt"), document_id("good")])
    assert report.documents == 1
    assert published.slots() == [("good", M)]
    assert next_fire_time_of(client, "good") == M + timedelta(minutes=1)
    assert next_fire_time_of(client, "corrupt") == M


def test_the_slots_a_tick_records_missed_are_counted_as_missed_executions(client: Any) -> None:
    from scheduler.config import Settings
    from worker.metrics import WorkerMetrics

    # A year behind: the tick records the newest MAX_SLOTS_PER_DOCUMENT missed itself, where
    # jobs mode would deliver their late fires and count each as a missed execution.
    since = M - timedelta(days=400)
    late = schedule("late", catchup_window="10m")
    put_documents(client, [(late, tick_document(late, since, M - timedelta(days=365)))])
    metrics = WorkerMetrics()
    action = TickAction(Settings.from_env({}), make_tick(client, Published()), metrics=metrics)
    action(ActionContext(schedule_id=TICK_SCHEDULE_ID, fire_time=M, execution_id="t",
                         trigger="scheduled", attempt=1, params={}))
    counted = metrics.registry.get_sample_value("scion_worker_executions_total",
                                                {"outcome": "missed"})
    assert counted == MAX_SLOTS_PER_DOCUMENT
