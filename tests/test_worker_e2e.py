"""The worker end to end: `scion-worker run` processes on the Pub/Sub and Firestore emulators,
actions landing on a real local HTTP server that counts them by Idempotency-Key.

Every test gets its own project (topic, subscription, dead-letter topic, Firestore documents).
A test that takes the `source` fixture runs in both modes (`fire_source`): its scheduled fires
reach the workers from their jobs, or fanned out by a tick.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fire_source import Fired, FireSource
from fire_source import source_fixture as source_fixture  # the `source` fixture
from worker_harness import VENV_BIN, WAIT_S, Stack, wait_for
from worker_harness import stack_fixture as stack_fixture  # the `stack` fixture

from scheduler.contract import Message, build_message, execution_id
from scheduler.model import Schedule
from scion_scheduler.google_emulators import Emulator, free_port
from worker.ledger import State

pytestmark = [pytest.mark.emulator, pytest.mark.slow]




def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _eid(message: Message) -> str:
    attrs = message.attributes
    from scheduler.model import parse_instant

    return execution_id(attrs["schedule-id"], parse_instant(attrs["fire-time"]), attrs["trigger"])


def _log_events(lines: list[str]) -> list[dict[str, object]]:
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def test_three_workers_run_every_fire_exactly_once(stack: Stack, source: FireSource) -> None:
    """1,000 fires (one slot of each of 1,000 schedules); 300 of them delivered twice (their
    message published again, new message IDs: a job's retried publish, a tick taken over); about
    10% of the messages redelivered by Pub/Sub (nacked by a rogue consumer, or left to their ack
    deadline)."""
    schedules = [stack.schedule(f"e2e-{i:04d}", "/ok") for i in range(1000)]
    rng = random.Random(4)

    def deliver(batch: list[Schedule], copies: int) -> list[Fired]:
        # Room in the minute for the copies: a job's copy published in the next minute would
        # be a fire of the next slot.
        fired = source.fire(batch, margin_s=15)
        stack.publish_many([f.message for f in rng.sample(fired, copies)])
        return fired

    # Pub/Sub redeliveries: a rogue consumer takes the first 130 messages (100 fires and 30
    # copies) before the workers run; it nacks half (redelivered at once) and leaves half to
    # their 10 s ack deadline.
    fired = deliver(schedules[:100], 30)
    ack_ids: list[str] = []
    while len(ack_ids) < 130:
        received = stack.subscriber.pull(subscription=stack.subscription,
                                         max_messages=130 - len(ack_ids), timeout=30)
        ack_ids += [m.ack_id for m in received.received_messages]
    stack.subscriber.modify_ack_deadline(subscription=stack.subscription, ack_ids=ack_ids[::2],
                                         ack_deadline_seconds=0)

    workers = [stack.start_worker("--executors", "8", "--max-messages", "100", "--lease", "10")
               for _ in range(3)]
    for worker in workers:
        worker.wait_ready()
    fired += deliver(schedules[100:], 270)
    expected = {f.execution_id for f in fired}
    assert len(expected) == 1000
    wait_for(lambda: set(stack.target.counts()) >= expected, what="every fire's action")
    # Every message ends acked as run or as a suppressed duplicate (busy ones come back first).
    wait_for(lambda: sum(w.outcome("succeeded") + w.outcome("duplicate") for w in workers) >= 1300,
             what="every duplicate to be settled")

    counts = stack.target.counts()
    assert set(counts) == expected
    assert [k for k, n in counts.items() if n != 1] == []
    per_worker = [w.outcome("succeeded") for w in workers]
    assert sum(per_worker) == 1000 and all(n > 0 for n in per_worker), per_worker
    assert sum(w.metrics()["scion_worker_duplicates_suppressed_total"] for w in workers) >= 300
    for schedule in schedules[:5]:
        history = stack.ledger.history(schedule.id, limit=10)
        assert [(e.state, e.attempt) for e in history] == [(State.SUCCEEDED, 1)]

    # Every log line about a fire names it and the worker.
    starts = [
        e for e in _log_events(workers[0].log_lines()) if e.get("message") == "action starting"
    ]
    assert starts
    for event in starts:
        assert {"schedule_id", "fire_time", "execution_id", "attempt", "worker_id"} <= set(event)


def test_sigkill_mid_action_is_taken_over_after_the_lease(stack: Stack,
                                                          source: FireSource) -> None:
    # Two survivors: the emulator keeps routing some messages to a killed subscriber's stream
    # (redelivering them only after a while); more live streams make that rarer.
    workers = [stack.start_worker("--lease", "3") for _ in range(3)]
    for worker in workers:
        worker.wait_ready()
    before = source.fire([stack.schedule(f"fast-{i}", "/ok") for i in range(10)])
    wait_for(lambda: all((e := stack.ledger.get(f.execution_id)) is not None
                         and e.state is State.SUCCEEDED for f in before),
             what="the first fires to be recorded")

    eid = source.fire([stack.schedule("slow", "/slow/3")])[0].execution_id
    wait_for(lambda: len(stack.target.for_key(eid)) == 1, what="the slow action to start")
    holder = stack.ledger.get(eid)
    assert holder is not None and holder.state is State.RUNNING and holder.worker_id
    holder_pid = int(holder.worker_id.rsplit("-", 2)[1])
    victim = next(w for w in workers if w.pid == holder_pid)
    victim.process.send_signal(signal.SIGKILL)
    victim.wait()

    after = source.fire([stack.schedule(f"after-{i}", "/ok") for i in range(10)])
    wait_for(lambda: (e := stack.ledger.get(eid)) is not None and e.state is State.SUCCEEDED,
             what="the slow fire to be taken over and finish")
    done = stack.ledger.get(eid)
    assert done is not None and done.attempt == 2
    assert done.worker_id is not None and int(done.worker_id.rsplit("-", 2)[1]) != victim.pid
    assert [h.attempt for h in stack.target.for_key(eid)] == [1, 2], \
        "the killed attempt, then exactly one takeover"
    wait_for(lambda: all(len(stack.target.for_key(f.execution_id)) == 1 for f in after),
             what="the fires published after the kill")
    assert all(len(stack.target.for_key(f.execution_id)) == 1 for f in before + after)


# Jobs mode only: the Pub/Sub transport outliving its broker's restart, whatever publishes.
def test_workers_reconnect_after_the_pubsub_emulator_restarts(
    firestore_emulator: str, project_id: str, tmp_path: Path,
) -> None:
    emulator = Emulator("pubsub", port=free_port()).start()
    stack = Stack(project_id, tmp_path, emulator.host, firestore_emulator)
    try:
        workers = [stack.start_worker(), stack.start_worker()]
        for worker in workers:
            worker.wait_ready()
        schedule = stack.schedule("through-restart", "/ok")
        early = [
            stack.manual(schedule, _now() - timedelta(minutes=1, milliseconds=i)) for i in range(20)
        ]
        stack.publish_many(early)
        wait_for(lambda: all(stack.target.for_key(_eid(m)) for m in early), what="fires before")

        emulator.stop()
        wait_for(lambda: not any(w.ready() for w in workers), what="workers to report not ready")
        emulator = Emulator("pubsub", port=emulator.port).start()
        stack.create_resources()  # the emulator keeps nothing across a restart
        for worker in workers:
            worker.wait_ready()
        assert all(w.process.poll() is None for w in workers), "no worker restarted"

        later = [stack.manual(schedule, _now() + timedelta(milliseconds=i)) for i in range(50)]
        stack.publish_many(later)
        wait_for(lambda: all(stack.target.for_key(_eid(m)) for m in later), what="fires after")
        assert all(len(stack.target.for_key(_eid(m))) == 1 for m in later + early)
    finally:
        stack.close()
        emulator.stop()


def test_overlap_skip_and_allow(stack: Stack, source: FireSource) -> None:
    worker = stack.start_worker("--executors", "4")
    worker.wait_ready()
    skip = stack.schedule("skipper", "/block/skip", overlap="skip")
    allow = stack.schedule("allower", "/block/allow", overlap="allow")
    # A run-now of each (published straight to the topic in both modes) is still running when
    # the schedule's slot is delivered.
    skip_first, allow_first = stack.manual(skip, _now()), stack.manual(allow, _now())
    stack.publish_many([skip_first, allow_first])
    wait_for(
        lambda: stack.target.for_key(_eid(skip_first)) and stack.target.for_key(_eid(allow_first)),
        what="the first fires to be running",
    )
    skip_second, allow_second = (f.execution_id for f in source.fire([skip, allow]))
    wait_for(
        lambda: (e := stack.ledger.get(skip_second)) is not None and e.state is State.SKIPPED,
        what="the overlapping skip fire to be recorded skipped",
    )
    wait_for(lambda: bool(stack.target.for_key(allow_second)),
             what="the overlapping allow fire to start while the first still runs")
    stack.target.release("skip")
    stack.target.release("allow")
    running = [_eid(skip_first), _eid(allow_first), allow_second]
    wait_for(lambda: all((e := stack.ledger.get(eid)) is not None and e.state is State.SUCCEEDED
                         for eid in running), what="the running fires to succeed")
    assert stack.target.for_key(skip_second) == []
    skipped = stack.ledger.get(skip_second)
    assert skipped is not None and "overlap" in (skipped.error or skipped.detail or "")


def _runs(stack: Stack, schedule_id: str) -> list[dict[str, Any]]:
    """`scion-scheduler runs <schedule_id>`: the schedule's executions, newest first."""
    result = subprocess.run(
        [str(VENV_BIN / "scion-scheduler"), "runs", schedule_id, "--output", "json"],
        env=stack.env(), capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert result.returncode == 0, result.stderr
    runs: list[dict[str, Any]] = json.loads(result.stdout)["executions"]
    return runs


def test_catchup_window_and_runs_command(stack: Stack, source: FireSource) -> None:
    worker = stack.start_worker()
    worker.wait_ready()
    # A slot delivered beyond its schedule's catch-up window (6 minutes late against 5m30s): in
    # jobs mode its job's publish came late, in ticks mode its document was left due by a
    # missed tick. A tick publishes a slot up to a minute beyond the window, and the pipeline
    # records it missed; an older one it records missed itself, unpublished
    # (`scheduler.ticks.plan_document`): a yearly slot months late, whose job's publish (Pub/Sub
    # kept it through an outage) the pipeline records missed in jobs mode.
    late_slot = source.minute() - timedelta(minutes=6)
    late = stack.schedule("late", "/ok", cron=f"{late_slot.minute} {late_slot.hour} * * *",
                          catchup_window="5m30s")
    yearly_slot = late_slot - timedelta(days=90)
    yearly = stack.schedule("yearly", "/ok", cron=f"{yearly_slot.minute} {yearly_slot.hour} "
                            f"{yearly_slot.day} {yearly_slot.month} *")
    minutely = stack.schedule("minutely", "/ok", cron="* * * * *")
    fired = {f.schedule.id: f for f in source.fire([late, yearly, minutely])}
    assert fired["late"].slot == late_slot and fired["yearly"].slot == yearly_slot

    wait_for(
        lambda: all(stack.ledger.history(s) for s in ("late", "yearly", "minutely")),
        what="the scheduled fires to be recorded",
    )
    wait_for(lambda: stack.ledger.history("minutely")[0].state is State.SUCCEEDED, what="minutely")
    for schedule_id, slot in (("late", late_slot), ("yearly", yearly_slot)):
        missed = stack.ledger.history(schedule_id)[0]
        assert missed.state is State.MISSED and "catch-up window" in (missed.error or "")
        assert missed.fire_time == slot and missed.attempt == 0
        assert [h for h in stack.target.hits if h.schedule_id == schedule_id] == []
        runs = _runs(stack, schedule_id)
        assert [(r["state"], r["execution_id"], r["trigger"], r["attempt"]) for r in runs] == [
            ("missed", fired[schedule_id].execution_id, "scheduled", 0)]
        assert "beyond the catch-up window" in runs[0]["error"]


# Jobs mode only: the attempts after a failure are the pipeline's (in process, then the
# reaper's) once the fire is claimed, whichever mode delivered it.
def test_max_attempts_then_acked_and_runs_command(stack: Stack) -> None:
    worker = stack.start_worker()
    worker.wait_ready()
    failing_fire = stack.manual(stack.schedule("failing", "/fail", max_attempts=3), _now())
    stack.publish(failing_fire)
    wait_for(
        lambda: (e := stack.ledger.get(_eid(failing_fire))) is not None and e.state is State.FAILED,
        what="the failing fire to exhaust its attempts",
    )
    failed = stack.ledger.get(_eid(failing_fire))
    assert failed is not None and failed.attempt == 3 and "500" in (failed.error or "")
    assert [h.attempt for h in stack.target.for_key(_eid(failing_fire))] == [1, 2, 3]
    # Acked after the last attempt: nothing is redelivered, nothing dead-lettered.
    time.sleep(1)
    assert len(stack.target.for_key(_eid(failing_fire))) == 3
    assert stack.dead_letters() == []

    runs = _runs(stack, "failing")
    assert len(runs) == 1
    assert runs[0]["state"] == "failed" and runs[0]["attempt"] == 3 and "500" in runs[0]["error"]
    assert runs[0]["execution_id"] == _eid(failing_fire) and runs[0]["finished_at"]


# Jobs mode only: forged and malformed messages are the transport's input, whichever mode
# published the genuine ones.
def test_poison_message_is_dead_lettered_and_forged_message_rejected(stack: Stack) -> None:
    worker = stack.start_worker()
    worker.wait_ready()
    schedule = stack.schedule("victim", "/ok")
    genuine = stack.manual(schedule, _now())
    forged = build_message(schedule, signing_key="not-the-deployment-key", trigger="manual",
                           fire_time=_now() + timedelta(seconds=1))
    poison = Message(b"this is not json", {**genuine.attributes})  # signature no longer matches
    garbage = Message(b"\x00\xff", {"scion-format": "1"})

    for message in (forged, poison, garbage, genuine):
        stack.publish(message)

    wait_for(lambda: bool(stack.target.for_key(_eid(genuine))), what="the genuine fire")
    # Dead-lettering republishes a message (new ID) with the source subscription's attributes.
    dead: list[Any] = []
    wait_for(lambda: (dead.extend(stack.dead_letters()) or True) and len(dead) >= 3,
             what="the rejected messages on the dead-letter topic", interval=0.5)
    assert sorted(m.data for m in dead) == sorted([forged.data, poison.data, garbage.data])
    assert all(m.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5" for m in dead)
    assert stack.target.for_key(_eid(forged)) == []
    assert [h.key for h in stack.target.hits] == [_eid(genuine)]
    rejected = [
        e for e in _log_events(worker.log_lines()) if e.get("message") == "message rejected"
    ]
    reasons = " ".join(str(e.get("reason")) for e in rejected)
    assert "bad signature" in reasons
    assert worker.process.poll() is None, "a poison message never crashes the pool"


# Jobs mode only: the stop hands queued deliveries back to the transport, whatever published
# them.
def test_sigterm_finishes_the_running_action_and_exits_0(stack: Stack) -> None:
    worker = stack.start_worker("--executors", "1", "--max-messages", "5", "--grace-period", "20")
    worker.wait_ready()
    slow = stack.manual(stack.schedule("long", "/block/long"), _now())
    stack.publish(slow)
    wait_for(lambda: bool(stack.target.for_key(_eid(slow))), what="the action to start")
    # Queued behind the running action: handed back at the stop, not lost.
    queued = [stack.manual(stack.schedule("queued", "/ok"), _now() + timedelta(milliseconds=i))
              for i in range(3)]
    stack.publish_many(queued)
    time.sleep(0.5)
    # Another replica is up when this one stops, as in a deployment, so Pub/Sub has an open
    # stream to hand the queued deliveries to.
    successor = stack.start_worker()
    successor.wait_ready()
    worker.process.send_signal(signal.SIGTERM)
    wait_for(lambda: any("queued deliveries handed back" in line for line in worker.log_lines()),
             what="the stop to hand the queue back")
    stack.target.release("long")
    assert worker.wait() == 0
    hits = stack.target.for_key(_eid(slow))
    assert len(hits) == 1 and hits[0].finished is not None
    finished = stack.ledger.get(_eid(slow))
    assert finished is not None and finished.state is State.SUCCEEDED and finished.attempt == 1

    handed_back = sum(json.loads(line)["count"] for line in worker.log_lines()
                      if "queued deliveries handed back" in line)

    # Once the worker has nacked them all (its log says so), the rest is
    # the emulator's part, and it sometimes keeps nacked messages on the stopped worker's dead
    # stream for good (seen twice in CI, each time after a NoSuchMethodError in its gRPC as the
    # stream closed). Only then is a timeout reported as an expected failure naming the
    # emulator; any other timeout fails.
    try:
        wait_for(
            lambda: all(stack.target.for_key(_eid(m)) for m in queued), what="the queued fires"
        )
    except AssertionError:
        if handed_back != len(queued):
            raise
        pytest.xfail(
            "the Pub/Sub emulator never redelivered the nacked messages of a closed stream "
            "(its known defect); the worker did nack them"
        )
    time.sleep(1)  # the slow fire's message was acked: the successor never sees it again
    assert len(stack.target.for_key(_eid(slow))) == 1
    assert successor.outcome("duplicate") == 0
