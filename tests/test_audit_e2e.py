"""The audit end to end, on the emulators: Cloud Scheduler emulator jobs synced by the control
module (which writes the registry), `scion-worker run` replicas, and each way a slot can be
lost without a trace in the ledger. Every lost slot is fired again by the audit (trigger
`audit`) and runs exactly once; slots that arrived are left alone (README, The audit).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from worker_harness import WAIT_S, Stack, wait_for
from worker_harness import stack_fixture as stack_fixture  # the `stack` fixture

from scheduler.config import Settings
from scheduler.contract import execution_id
from scheduler.control import SchedulerControl, with_registry
from scheduler.model import Schedule
from worker.ledger import Execution, State

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

# A subscriber that pulls and never claims: it acknowledges what it pulls (`ack`), or holds it
# until it is killed (`hold`). It prints how many messages it has received.
_SUBSCRIBER = """
import sys
from google.api_core import exceptions
from google.cloud import pubsub_v1
client, path, ack, received = pubsub_v1.SubscriberClient(), sys.argv[1], sys.argv[2] == "ack", 0
while True:
    try:
        response = client.pull(subscription=path, max_messages=100, timeout=5)
    except exceptions.DeadlineExceeded:
        continue
    if response.received_messages and ack:
        client.acknowledge(subscription=path,
                           ack_ids=[m.ack_id for m in response.received_messages])
    received += len(response.received_messages)
    print(received, flush=True)
"""




class Subscriber:
    def __init__(self, stack: Stack, name: str, mode: str) -> None:
        topic = stack.publisher.topic_path(stack.project, f"{name}-fires")
        stack.publisher.create_topic(name=topic)
        path = stack.subscriber.subscription_path(stack.project, name)
        stack.subscriber.create_subscription(request={"name": path, "topic": topic,
                                                      "ack_deadline_seconds": 10})
        self.topic = f"{name}-fires"
        self.process = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, path, mode],
                                        env=stack.env(), stdout=subprocess.PIPE, text=True)

    def wait_received(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until the first pull that got something
        assert line.strip().isdigit(), line

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def _settings(stack: Stack, emulator: Any, topic: str) -> Settings:
    return Settings.from_env(
        stack.env(SCION_SCHEDULER_TOPIC=topic, SCION_SCHEDULER_LOCATION="us-central1",
                  CLOUD_SCHEDULER_EMULATOR_HOST=emulator.host))


def _sync(stack: Stack, emulator: Any, topic: str, schedule: Schedule) -> SchedulerControl:
    control = with_registry(_settings(stack, emulator, topic))
    assert control.registry is not None
    assert control.upsert(schedule).ok
    return control


def _records(stack: Stack, schedule_id: str) -> list[Execution]:
    return stack.ledger.history(schedule_id, limit=100)


def _first_slot_after(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0) + timedelta(minutes=1)


def test_every_lost_slot_is_fired_once_by_the_audit(stack: Stack,
                                                     cloud_scheduler_emulator: Any) -> None:
    """`ok`: delivered normally; `dropped`: Cloud Scheduler gives up every publish of its job;
    `killed`: pulled by a subscriber SIGKILLed before it claimed anything (nobody redelivers);
    `acked`: acknowledged by a subscriber that recorded nothing."""
    emulator = cloud_scheduler_emulator
    audit_env = {"SCION_SCHEDULER_TOPIC": "fires", "SCION_SCHEDULER_AUDIT_GRACE": "5s",
                 "SCION_SCHEDULER_AUDIT_HORIZON": "3m"}
    workers = [stack.start_worker(**audit_env) for _ in range(2)]
    killed, acked = Subscriber(stack, "killed", "hold"), Subscriber(stack, "acked", "ack")
    try:
        for worker in workers:
            worker.wait_ready()
        schedules = {name: stack.schedule(name, "/ok") for name in ("ok", "dropped", "killed",
                                                                    "acked")}
        controls = [_sync(stack, emulator, "fires", schedules["ok"]),
                    _sync(stack, emulator, "fires", schedules["dropped"]),
                    _sync(stack, emulator, killed.topic, schedules["killed"]),
                    _sync(stack, emulator, acked.topic, schedules["acked"])]
        emulator.drop_publishes({controls[1].spec.job_id("dropped")})
        first = _first_slot_after(datetime.now(UTC))
        killed.wait_received()
        killed.close()
        # Lost slots are recovered at second 30 of the minute after their own at the latest.
        for name in ("dropped", "killed", "acked"):
            wait_for(lambda n=name: any(e.fire_time == first and e.state is State.SUCCEEDED
                                        for e in _records(stack, n)),
                     timeout=WAIT_S, what=f"the {name} slot at {first} to be recovered")
        # The next slot too, after one more audit: every slot ran exactly once.
        second = first + timedelta(minutes=1)
        for name in schedules:
            wait_for(lambda n=name: any(e.fire_time == second and e.state is State.SUCCEEDED
                                        for e in _records(stack, n)),
                     timeout=WAIT_S, what=f"the {name} slot at {second} to be recorded")
        for name, schedule in schedules.items():
            records = [e for e in _records(stack, name) if first <= e.fire_time <= first
                       + timedelta(minutes=1)]
            assert [e.fire_time for e in records] == [first + timedelta(minutes=1), first], name
            for record in records:
                eid = execution_id(schedule.id, record.fire_time)
                assert record.execution_id == eid
                assert record.state is State.SUCCEEDED, (name, record)
                assert record.trigger == ("scheduled" if name == "ok" else "audit"), (name, record)
                assert len(stack.target.for_key(eid)) == 1, (name, record.fire_time)
        recovered = sum(w.metrics().get("scion_worker_audit_slots_total{result=recovered}", 0.0)
                        for w in workers)
        assert recovered >= 6
        lines = [line for w in workers for line in w.log_lines() if "fired again by the audit"
                 in line and '"schedule_id": "dropped"' in line]
        assert lines and all('"execution_id"' in line and '"fire_time"' in line for line in lines)
        for control in controls:
            control.close()
    finally:
        killed.close()
        acked.close()

