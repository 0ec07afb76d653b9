"""Where the worker end-to-end tests' scheduled fires come from, in either mode (issue 17): the
`source` fixture, parametrized over `jobs` and `ticks`, so that one test shows a behaviour is
the same however its fires reach the workers.

* jobs: each schedule's Cloud Scheduler job publishes its contract message, which names no fire
  time: the worker derives the slot from the publish time (`scheduler.cron.fire_time_for`).
* ticks: the workers run in tick mode. Each schedule is a registry document due at its slot
  (`tick_documents`), and a tick-mode worker claims the tick of the current minute (the
  `{job_prefix}tick` job's message) and fans it out (`worker.actions.tick`): it publishes the
  slot's contract fire, with its exact fire time, to the workers' topic.

Either way `fire` delivers each schedule's latest slot at or before the current minute and
returns once every fire is on the topic, so a test reads the same in both modes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from tick_documents import delete_documents, put_documents, tick_document
from worker_harness import SIGNING_KEY, Stack, Worker, wait_for

from scheduler.contract import Message, build_message, execution_id
from scheduler.cron import latest_fire_at_or_before
from scheduler.model import Schedule
from scheduler.registry import document_id
from scheduler.ticks import TICK_SCHEDULE, Shard, fire_messages
from worker.actions.tick import PAGE_SIZE
from worker.ledger import State

TICK_ENV = {"SCION_SCHEDULER_MODE": "ticks", "SCION_SCHEDULER_TOPIC": "fires"}
# What `fire` leaves of the minute at least: a job's publish must land in its slot's minute
# (within `scheduler.cron.DEFAULT_SKEW` of its end it counts for the next slot), and a tick or
# shard claimed after its minute is recorded missed (the tick schedule's `catchup: latest`).
MARGIN_S = 8.0


@dataclass(frozen=True)
class Fired:
    """A slot a source delivered, and the contract message its publisher sent for it (the one
    that publisher sends again when it delivers a fire twice)."""

    schedule: Schedule
    slot: datetime
    message: Message

    @property
    def execution_id(self) -> str:
        """The execution ID of the slot's fire."""
        return execution_id(self.schedule.id, self.slot)


def current_minute(margin_s: float = MARGIN_S) -> datetime:
    """The current minute, once at least `margin_s` seconds of it are left."""
    now = datetime.now(UTC)
    into = now.second + now.microsecond / 1e6
    if into > 60 - margin_s:
        time.sleep(60.1 - into)
        now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0)


class FireSource:
    """Delivers scheduled fires to the workers as one mode does."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def open(self, topic: str) -> None:
        """Get ready to deliver to `topic` too, without waiting (a tick source starts its claimer
        for it, which boots while the test starts its workers)."""

    def minute(self, topic: str | None = None) -> datetime:
        """The minute in which a `fire` to `topic` right after this delivers (with a few more
        seconds of it left than `fire` asks for): for a test that derives slots from it."""
        self._prepare(topic or self.stack.topic)
        return current_minute(MARGIN_S + 3)

    def fire(self, schedules: Sequence[Schedule], *, topic: str | None = None,
             margin_s: float = MARGIN_S) -> list[Fired]:
        """Deliver each schedule's latest slot at or before the current minute to `topic` (the
        stack's by default), with at least `margin_s` of the minute left to publish in."""
        topic = topic or self.stack.topic
        self._prepare(topic)
        minute = current_minute(margin_s)
        fired = []
        for schedule in schedules:
            assert schedule.at is None, f"{schedule.id}: a source delivers cron slots only"
            slot = latest_fire_at_or_before(schedule, minute)
            fired.append(Fired(schedule, slot, self._message(schedule, slot)))
        self._deliver(minute, fired, topic)
        return fired

    def _prepare(self, topic: str) -> None:
        """Be ready to deliver to `topic`."""

    def _message(self, schedule: Schedule, slot: datetime) -> Message:
        raise NotImplementedError

    def _deliver(self, minute: datetime, fired: list[Fired], topic: str) -> None:
        raise NotImplementedError


class JobSource(FireSource):
    """Each schedule's job publishes its message to the topic."""

    def _message(self, schedule: Schedule, slot: datetime) -> Message:
        return build_message(schedule, signing_key=SIGNING_KEY)

    def _deliver(self, minute: datetime, fired: list[Fired], topic: str) -> None:
        self.stack.publish_many([f.message for f in fired], topic)


@dataclass(frozen=True)
class _Claimer:
    """A tick-mode worker that pulls only ticks and shards (a topic and subscription of their
    own) and fans them out to one topic: the workers under test see only fires, so they count
    the same executions in both modes."""

    worker: Worker
    tick_topic: str


class TickSource(FireSource):
    """Each schedule's registry document is due at its slot, and a tick fans the fires out.

    The source's first delivery is the tick of its minute (the due query); each later one is a
    shard of a tick (a page of documents the claimer hands on), which names only the new
    documents: a later tick would also find the earlier ones, due again at their next slot. A
    document is deleted once its fire is out, so the workers' audit does not publish its later
    slots, which no tick does (in jobs mode there is no document at all); an audit in the few
    seconds it exists may publish its slot again, with the fire's own execution ID, which the
    claim drops as a duplicate."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        stack.mode_env.update(TICK_ENV)
        from google.cloud import firestore

        self._firestore: Any = firestore.Client(project=stack.project)
        self._claimers: dict[str, _Claimer] = {}
        self._ticked = False
        self._claimer(stack.topic)  # starting now, while the test starts its own workers

    def _claimer(self, topic: str) -> _Claimer:
        if topic not in self._claimers:
            stack, name = self.stack, f"claimer{len(self._claimers) + 1}"
            tick_topic = stack.publisher.topic_path(stack.project, f"{name}-ticks")
            stack.publisher.create_topic(name=tick_topic)
            stack.subscriber.create_subscription(request={
                "name": stack.subscriber.subscription_path(stack.project, name),
                "topic": tick_topic, "ack_deadline_seconds": 10})
            worker = stack.add_worker(name, [], {"SCION_SCHEDULER_SUBSCRIPTION": name,
                                                 "SCION_SCHEDULER_TOPIC": topic.rsplit("/")[-1]})
            self._claimers[topic] = _Claimer(worker, tick_topic)
        return self._claimers[topic]

    def open(self, topic: str) -> None:
        self._claimer(topic)

    def _prepare(self, topic: str) -> None:
        self._claimer(topic).worker.wait_ready()

    def _message(self, schedule: Schedule, slot: datetime) -> Message:
        return fire_messages(schedule, [slot], SIGNING_KEY)[0]

    def _deliver(self, minute: datetime, fired: list[Fired], topic: str) -> None:
        put_documents(self._firestore, [(f.schedule, tick_document(f.schedule, f.slot, f.slot))
                                        for f in fired])
        if self._ticked:
            ids = [document_id(f.schedule.id) for f in fired]
            messages = [Shard(minute, tuple(ids[i:i + PAGE_SIZE])).message(SIGNING_KEY)
                        for i in range(0, len(ids), PAGE_SIZE)]
        else:
            messages = [build_message(TICK_SCHEDULE, signing_key=SIGNING_KEY, fire_time=minute)]
        self._ticked = True
        self.stack.publish_many(messages, self._claimer(topic).tick_topic)
        for message in messages:
            self._wait_done(execution_id(message.attributes["schedule-id"], minute))
        delete_documents(self._firestore, [f.schedule for f in fired])

    def _wait_done(self, eid: str) -> None:
        wait_for(lambda: (e := self.stack.ledger.get(eid)) is not None
                 and e.state is not State.RUNNING, what="the tick's fan-out")
        done = self.stack.ledger.get(eid)
        assert done is not None and done.state is State.SUCCEEDED, (
            f"the tick's fan-out {eid!r} ended {done and done.state}: {done and done.error}")


SOURCES: dict[str, type[FireSource]] = {"jobs": JobSource, "ticks": TickSource}


@pytest.fixture(name="source", params=list(SOURCES))
def source_fixture(request: pytest.FixtureRequest, stack: Stack) -> FireSource:
    """The fire source of one mode, on the test's `stack` (a test module takes it as its
    `source` fixture by importing `source_fixture`)."""
    source: FireSource = SOURCES[request.param](stack)
    return source

