"""Tick mode end to end, on the emulators with `scion-worker run` processes in tick mode: the
registry documents written through their fields (`tick_documents`), a tick driven by publishing
the tick schedule's message for the current minute (as the `{job_prefix}_tick` job would), and
every fire run by the workers against a recording target. The tick's takeover after a SIGKILL
of its claimer, shards taken by replicas other than the claimer, one-shots at their exact
second, and a missed tick (catch-up) with a paused schedule and overlap, each slot run once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fire_source import TICK_ENV
from tick_documents import put_documents, tick_document
from worker_harness import SIGNING_KEY, Stack, Worker, wait_for
from worker_harness import stack_fixture as stack_fixture  # the `stack` fixture

from scheduler.contract import build_message, execution_id
from scheduler.model import Schedule
from scheduler.registry import first_slot
from scheduler.reserved import TICK_SCHEDULE_ID
from scheduler.ticks import TICK_SCHEDULE, tick_execution_id
from worker.ledger import Execution, State

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

def this_minute() -> datetime:
    """The current minute, with at least 20 s of it left (a tick's `catchup: latest` records it
    missed once the next minute's is due)."""
    now = datetime.now(UTC)
    if now.second >= 40:
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0)


def start_tick(stack: Stack, minute: datetime) -> str:
    """Publish the tick of `minute` (the job's message, with the minute as its exact slot)."""
    stack.publish(build_message(TICK_SCHEDULE, signing_key=SIGNING_KEY, fire_time=minute))
    return tick_execution_id(minute)


def firestore(stack: Stack) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=stack.project)


def workers(stack: Stack, count: int, *args: str) -> list[Worker]:
    started = [stack.start_worker(*args, **TICK_ENV) for _ in range(count)]
    for worker in started:
        worker.wait_ready()
    return started


def tick_only_claimer(stack: Stack) -> tuple[Worker, Callable[[datetime], None]]:
    """A tick-mode worker that pulls only ticks (its own topic and subscription), so it claims
    the tick and never a fire or shard, and the function that publishes a minute's tick to it."""
    tick_topic = stack.publisher.topic_path(stack.project, "tick")
    stack.publisher.create_topic(name=tick_topic)
    stack.subscriber.create_subscription(request={
        "name": stack.subscriber.subscription_path(stack.project, "claimer"),
        "topic": tick_topic, "ack_deadline_seconds": 10})
    claimer = stack.start_worker(**TICK_ENV, SCION_SCHEDULER_SUBSCRIPTION="claimer")
    claimer.wait_ready()

    def publish_tick(minute: datetime) -> None:
        message = build_message(TICK_SCHEDULE, signing_key=SIGNING_KEY, fire_time=minute)
        stack.publisher.publish(tick_topic, message.data, **message.attributes).result(timeout=30)

    return claimer, publish_tick


def record(stack: Stack, eid: str) -> Execution | None:
    return stack.ledger.get(eid)


def finished(stack: Stack, eid: str) -> bool:
    execution = record(stack, eid)
    return execution is not None and execution.state is not State.RUNNING


def every_minute(stack: Stack, count: int, minute: datetime, path: str = "/ok") -> list[Schedule]:
    schedules = [stack.schedule(f"s{i:05}", path) for i in range(count)]
    put_documents(firestore(stack), [(s, tick_document(s, minute, minute)) for s in schedules])
    return schedules


def assert_each_slot_ran_once(stack: Stack, schedules: list[Schedule], since: datetime,
                              minute: datetime) -> None:
    """Every slot from `since` to `minute` ran, and each once (setting up can take a minute)."""
    slots = [since + timedelta(minutes=m) for m in range((minute - since) // timedelta(minutes=1)
                                                         + 1)]
    keys = {execution_id(s.id, slot) for s in schedules for slot in slots}
    wait_for(lambda: keys <= set(stack.target.counts()), what="every slot's fire")
    # Once each: a fire taken over from a killed worker may start again, but as a new attempt.
    with stack.target.lock:
        attempts = Counter((h.key, h.attempt) for h in stack.target.hits)
    assert max(attempts.values()) == 1
    assert set(stack.target.counts()) == keys


def test_a_tick_whose_claimer_is_killed_is_taken_over_and_fires_each_slot_once(
        stack: Stack) -> None:
    # The claimer pulls the tick from a subscription of its own (the emulator keeps routing a
    # shared subscription's messages to a dead subscriber's stream for a while) and publishes
    # the fan-out to the shared topic, which only the survivor pulls.
    since = this_minute()
    schedules = every_minute(stack, 3000, since)
    survivor = workers(stack, 1)[0]
    claimer, publish_tick = tick_only_claimer(stack)
    spy = stack.subscriber.subscription_path(stack.project, "spy")
    stack.subscriber.create_subscription(request={"name": spy, "topic": stack.topic})
    minute = this_minute()
    publish_tick(minute)
    # Killed mid-fan-out: as soon as its first message (a shard: they go before its own fires)
    # reaches the shared topic. Waiting for the survivor to run a fire left the claimer time to
    # finish the tick first on a loaded machine.
    wait_for(lambda: bool(stack.subscriber.pull(subscription=spy, max_messages=1,
                                                timeout=30).received_messages),
             what="the claimer's first message", interval=0)
    claimer.process.send_signal(signal.SIGKILL)
    claimer.wait()
    tick = tick_execution_id(minute)
    assert_each_slot_ran_once(stack, schedules, since, minute)
    wait_for(lambda: finished(stack, tick), what="the tick taken over")
    done = record(stack, tick)
    assert done is not None and done.state is State.SUCCEEDED and done.attempt == 2
    assert done.worker_id is not None and f"-{survivor.pid}-" in done.worker_id


def test_shards_are_taken_by_replicas_other_than_the_claimer(stack: Stack) -> None:
    # The claimer pulls only the tick, so every shard must be run by another replica (which of
    # the two takes which shard is the broker's choice, and one may well take both).
    since = this_minute()
    schedules = every_minute(stack, 3000, since)
    others = workers(stack, 2, "--max-messages", "3")
    claimer, publish_tick = tick_only_claimer(stack)
    minute = this_minute()
    publish_tick(minute)
    tick = tick_execution_id(minute)
    assert_each_slot_ran_once(stack, schedules, since, minute)
    wait_for(lambda: finished(stack, tick), what="the tick")
    done = record(stack, tick)
    assert done is not None and f"-{claimer.pid}-" in str(done.worker_id)
    shard_workers = {str(s.get("worker_id")) for s in shard_records(stack)}
    assert shard_workers, "the tick made no shards"
    for worker_id in shard_workers:
        assert any(f"-{w.pid}-" in worker_id for w in others), (worker_id, shard_workers)


def shard_records(stack: Stack) -> list[Any]:
    """The ledger's records of the tick's shards."""
    from google.cloud.firestore import FieldFilter

    prefix = TICK_SCHEDULE_ID + " shard "
    return list(firestore(stack).collection("scion_executions")
                .where(filter=FieldFilter("schedule_id", ">=", prefix))
                .where(filter=FieldFilter("schedule_id", "<", prefix + "\uffff")).stream())


def test_one_shots_fire_at_their_exact_second(stack: Stack) -> None:
    minute = this_minute()
    base = datetime.now(UTC)
    ats = [base + timedelta(seconds=s) for s in (25, 40)]
    ats = [at for at in ats if at < minute + timedelta(seconds=90)]
    shots = [stack.schedule(f"shot-{i}", "/ok", cron=None, at=at.isoformat())
             for i, at in enumerate(ats)]
    put_documents(firestore(stack), [(s, tick_document(s, base, first_slot(s, base, None)))
                                     for s in shots])
    workers(stack, 1)
    start_tick(stack, minute)
    keys = {execution_id(s.id, s.at): s.at for s in shots if s.at is not None}
    wait_for(lambda: set(keys) <= set(stack.target.counts()), what="the one-shots")
    offset = time.time() - time.monotonic()
    for hit in stack.target.hits:
        late = hit.started + offset - keys[hit.key].timestamp()
        assert -0.05 <= late < 2.0, (hit.schedule_id, late)
    assert sorted(stack.target.counts().values()) == [1] * len(keys)


def test_a_missed_tick_catches_up_under_each_policy(stack: Stack) -> None:
    minute = this_minute()
    since = minute - timedelta(hours=1)
    behind = minute - timedelta(minutes=3)
    catch_all = stack.schedule("catch-all", "/ok")
    latest = stack.schedule("latest", "/ok", catchup="latest")
    paused = stack.schedule("paused", "/ok", paused=True)
    overlapping = stack.schedule("overlapping", "/slow/6", overlap="skip")
    # Owed from `behind` on, as if the ticks before it had published the older slots: an owed
    # slot with no record is the audit's to fire (a CI run saw a fifth catch-all fire).
    put_documents(firestore(stack), [
        (catch_all, tick_document(catch_all, behind, behind)),
        (latest, tick_document(latest, behind, behind)),
        (paused, tick_document(paused, since, None)),
        (overlapping, tick_document(overlapping, behind, behind)),
    ])
    # The audit would record a `latest` slot missed itself if it ran between the tick's claim
    # and the slot's: its grace keeps it to slots older than this test's.
    (worker,) = workers(stack, 1, "--audit-grace", "4m")
    tick = start_tick(stack, minute)
    slots = [behind + timedelta(minutes=m) for m in range(4)]

    def state(schedule: Schedule, slot: datetime) -> State | None:
        execution = record(stack, execution_id(schedule.id, slot))
        return None if execution is None else execution.state

    wait_for(lambda: all(state(catch_all, s) is State.SUCCEEDED for s in slots)
             and all(state(latest, s) is not None for s in slots)
             and state(overlapping, minute) is not None, what="the catch-up")
    assert [state(latest, s) for s in slots] == [State.MISSED] * 3 + [State.SUCCEEDED]
    wait_for(lambda: finished(stack, tick), what="the tick")
    time.sleep(2)
    counts = Counter(h.schedule_id for h in stack.target.hits)
    assert counts == {"catch-all": 4, "latest": 1, "overlapping": 1}
    # Counted as jobs mode counts the deliveries of the same late fires.
    assert worker.outcome("missed") == 3
