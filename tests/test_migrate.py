"""`scion-scheduler migrate` (issue 17) across real slots, on the Cloud Scheduler, Pub/Sub and
Firestore emulators: a schedule every minute is moved between modes just before its slot, and
every slot is published under one execution ID (so the worker's claim runs it exactly once),
none missed. The tick job's fires are answered by a stand-in for the worker's tick action built
from the same pure functions (`scheduler.ticks.plan_document`, `fire_messages`)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulated_control import KEY, emulated_settings
from google.api_core import exceptions as gexc

from scheduler.config import Settings
from scheduler.contract import decode_message, execution_id
from scheduler.control import with_registry
from scheduler.gcp import publisher_client, subscriber_client
from scheduler.migrate import migrate
from scheduler.naming import job_id_of
from scheduler.registry import entry_from_document
from scheduler.reserved import TICK_SCHEDULE_ID
from scheduler.tick_control import TickControl
from scheduler.ticks import fire_messages, plan_document, tick_job_id
from scheduler.validation import parse_schedule

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

EVERY_MINUTE = parse_schedule({"id": "m", "cron": "* * * * *",
                               "action": {"type": "http", "url": "https://hub.example/run"}})


class Fires:
    """Every fire of schedule `m` published to the topic (its execution IDs by slot), with the
    tick's fan-out done as the worker's tick action does it."""

    def __init__(self, settings: Settings, control: TickControl) -> None:
        self.settings, self.control = settings, control
        self.by_slot: dict[datetime, set[str]] = defaultdict(set)
        self.publisher = publisher_client(settings)
        self.subscriber = subscriber_client(settings)
        self.publisher.create_topic(name=settings.topic_path)
        self.subscriber.create_subscription(name=settings.subscription_path,
                                            topic=settings.topic_path)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                response = self.subscriber.pull(subscription=self.settings.subscription_path,
                                                max_messages=50, timeout=2)
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            for received in response.received_messages:
                message = received.message
                fire = decode_message(message.data, dict(message.attributes), signing_key=KEY)
                slot = fire.derive_fire_time(message.publish_time)
                if fire.schedule_id == TICK_SCHEDULE_ID:
                    self._tick(slot)
                elif fire.trigger == "scheduled":
                    self.by_slot[slot].add(execution_id(fire.schedule_id, slot))
            if response.received_messages:
                self.subscriber.acknowledge(
                    subscription=self.settings.subscription_path,
                    ack_ids=[m.ack_id for m in response.received_messages])

    def _tick(self, minute: datetime) -> None:
        collection = self.control.ticks.registry.collection
        for snapshot in collection.stream():
            data = snapshot.to_dict() or {}
            entry = entry_from_document(data)
            if entry.next_fire_time is None:
                continue
            due = plan_document(entry.owed, entry.next_fire_time, minute)
            if due is None:
                continue
            for message in fire_messages(entry.owed.schedule, due.slots, KEY):
                self.publisher.publish(self.settings.topic_path, message.data,
                                       **dict(message.attributes)).result(timeout=30)
            snapshot.reference.update({"next_fire_time": due.next_fire_time})

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def deployment(cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
               project_id: str) -> Iterator[tuple[TickControl, Fires]]:
    settings = emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                                 firestore_emulator_host=firestore_emulator)
    control = with_registry(settings.with_overrides(mode="ticks"))
    assert isinstance(control, TickControl)
    fires = Fires(settings, control)
    try:
        yield control, fires
    finally:
        fires.close()
        control.close()


def _before_a_slot(seconds: int = 50) -> datetime:
    """Wait until `seconds` past a minute; the coming slot."""
    while True:
        now = datetime.now(UTC)
        if now.second == seconds:
            return now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        time.sleep(0.2)


def _jobs(control: TickControl) -> list[str]:
    return sorted(job_id_of(j.name) for j in control.syncer.owned_jobs())


def _assert_each_slot_once(fires: Fires, first: datetime, last: datetime) -> None:
    slot = first
    while slot <= last:
        assert fires.by_slot.get(slot) == {execution_id("m", slot)}, (slot, dict(fires.by_slot))
        slot += timedelta(minutes=1)


@pytest.mark.timeout(420)
def test_migrating_just_before_a_slot_publishes_every_slot_under_one_execution_id(
        deployment: tuple[TickControl, Fires], cloud_scheduler_emulator: Any) -> None:
    control, fires = deployment
    jobs_mode = with_registry(control.settings.with_overrides(mode="jobs"))
    with jobs_mode:
        assert jobs_mode.reconcile([EVERY_MINUTE]).ok
    assert _jobs(control) == ["scion-m"]

    slot = _before_a_slot()
    to_ticks = migrate(control, "ticks")  # waits for the first tick before deleting the job
    assert to_ticks.ok, to_ticks.describe()
    assert _jobs(control) == [tick_job_id("scion-")]
    entry = control.ticks.registry.get("m")
    assert entry is not None and entry.owner == "scion-"

    back_slot = _before_a_slot()
    to_jobs = migrate(control, "jobs")
    assert to_jobs.ok, to_jobs.describe()
    assert _jobs(control) == ["scion-m"]
    last = back_slot + timedelta(minutes=1)
    while datetime.now(UTC) < last + timedelta(seconds=15):
        time.sleep(1)
    # Every slot from the first cut-over to the one after the second: exactly one execution ID
    # each (a job's and a tick's publication of a slot are one fire).
    _assert_each_slot_once(fires, slot, last)
