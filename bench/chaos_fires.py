"""What the chaos benchmark publishes, and what it reads back about each fire.

Two plans:

* **schedules** (the default, what production runs): N every-minute schedules written into the
  schedule registry (`scheduler.registry`, as the control module writes it), so the workers'
  audit owes their slots; each minute the bench publishes every schedule's message, as its Cloud
  Scheduler job would, during the first seconds of the minute, plus 30% duplicate deliveries.
  Each slot's execution ID is (schedule ID, minute): what the worker derives from the publish.
* **manual**: N run-now fires of N schedules, published once, plus 30% duplicates: nothing owes
  them, so a delivery the broker loses stays lost (the investigation of bench/README.md).

The probe reads the subscription with fresh clients after the workers stopped: do the fires
nobody received come out of the broker?
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chaos_hub import GROVE

from scheduler.config import Settings
from scheduler.contract import ContractError, Message, build_message, decode_message, execution_id
from scheduler.due import Owed
from scheduler.egress import EgressPolicy
from scheduler.model import Schedule
from scheduler.registry import Entry, ScheduleRegistry
from scheduler.validation import parse_schedule

DUPLICATE_SHARE = 0.3
SCION_ACTION = {"type": "scion", "kind": "schedule", "grove_id": GROVE,
                "event_type": "dispatch_agent", "payload": {"agentName": "chaos"}}


def bench_schedules(count: int, egress: EgressPolicy) -> list[Schedule]:
    """Every-minute hub schedules. Overlap `allow` and catch-up `all`: every slot is owed and
    runs, so a fire that does not run is a lost one, not a policy's decision (overlap `skip`
    and catch-up `latest` drop slots on purpose; their tests are elsewhere)."""
    return [parse_schedule({"id": f"chaos-{i:05d}", "cron": "* * * * *", "overlap": "allow",
                            "catchup": "all", "action": SCION_ACTION}, egress=egress)
            for i in range(count)]


@dataclass(frozen=True)
class Batch:
    """Messages to publish at a steady rate over `seconds` from the wall-clock `at`."""

    at: datetime
    seconds: float
    messages: list[Message]


@dataclass(frozen=True)
class Plan:
    """What to publish, and the execution IDs of the fires that must each run once."""

    start: datetime
    batches: list[Batch]
    expected: set[str]
    fires: int
    slots: bool = True

    @property
    def deliveries(self) -> int:
        """Messages published in all."""
        return sum(len(batch.messages) for batch in self.batches)


def _with_duplicates(messages: list[Message], rng: random.Random) -> list[Message]:
    extra = [messages[i] for i in rng.sample(range(len(messages)),
                                             int(len(messages) * DUPLICATE_SHARE))]
    out = messages + extra
    rng.shuffle(out)
    return out


def slots_plan(schedules: list[Schedule], minutes: int, seconds: float, signing_key: str,
               lead: float, seed: int = 7) -> Plan:
    """Each schedule's slot of each of `minutes` minutes, from the first minute at least `lead`
    seconds away, published over the first `seconds` of its minute."""
    now = datetime.now(UTC)
    start = (now + timedelta(seconds=lead, minutes=1)).replace(second=0, microsecond=0)
    messages = [build_message(s, signing_key=signing_key) for s in schedules]
    rng = random.Random(seed)
    batches, expected = [], set()
    for minute in range(minutes):
        slot = start + timedelta(minutes=minute)
        batches.append(Batch(slot, seconds, _with_duplicates(messages, rng)))
        expected.update(execution_id(s.id, slot) for s in schedules)
    return Plan(start, batches, expected, len(expected))


def manual_plan(schedules: list[Schedule], seconds: float, signing_key: str, lead: float,
                seed: int = 7) -> Plan:
    """One run-now fire of each schedule, published over `seconds`."""
    start = datetime.now(UTC) + timedelta(seconds=lead)
    messages = [build_message(s, signing_key=signing_key, trigger="manual",
                              fire_time=start + timedelta(microseconds=i))
                for i, s in enumerate(schedules)]
    expected = {execution_id(s.id, start + timedelta(microseconds=i), "manual")
                for i, s in enumerate(schedules)}
    batch = Batch(start, seconds, _with_duplicates(messages, random.Random(seed)))
    return Plan(start, [batch], expected, len(expected), slots=False)


def register(client: Any, settings: Settings, schedules: list[Schedule], since: datetime,
             until: datetime) -> None:
    """Write the schedules into the audit's registry, owed from `since` (as the control module
    does once their jobs exist) and paused from `until` (as it does before a job is paused):
    the bench publishes nothing after its last slot, so nothing after it is owed."""
    registry = ScheduleRegistry(client, settings.collection_prefix, settings.allowed_targets)
    registry.hold([Entry(Owed(s, since), s.fingerprint()) for s in schedules], until)


@dataclass
class Publishing:
    """The publisher's progress: how many messages went out after their slot's minute ended
    (the worker would map such a publish to the next slot)."""

    late: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def publish(pubsub_host: str, topic: str, plan: Plan, progress: Publishing) -> None:
    """Publish every batch at its time (straight to the emulator, not through the proxy),
    paced in tenths of a second without waiting for each publish: a loaded machine must not
    push a minute's slots into the next minute."""
    import os

    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
    publisher = pubsub_v1.PublisherClient()
    lock = threading.Lock()
    for batch in plan.batches:
        chunk = max(1, len(batch.messages) // max(1, int(batch.seconds * 10)))
        begin = batch.at.timestamp()
        time.sleep(max(0.0, begin - time.time()))
        futures = []

        def published(_: Any, begin: float = begin) -> None:
            if plan.slots and time.time() > begin + 55:
                with lock:
                    progress.late += 1

        for index in range(0, len(batch.messages), chunk):
            for message in batch.messages[index:index + chunk]:
                future = publisher.publish(topic, message.data, **message.attributes)
                future.add_done_callback(published)
                futures.append(future)
            due = begin + batch.seconds * (index + chunk) / len(batch.messages)
            time.sleep(max(0.0, due - time.time()))
        for future in futures:
            future.result(timeout=120)
    progress.done.set()


def publish_offsets(plan: Plan, eids: set[str]) -> str:
    """When the fires `eids` were first published, in seconds after the plan's start: the
    smallest, median and largest."""
    first: dict[str, float] = {}
    for batch in plan.batches:
        for index, message in enumerate(batch.messages):
            offset = batch.seconds * index / len(batch.messages)
            moment = batch.at + timedelta(seconds=offset)
            fire = decode_message(message.data, message.attributes)
            eid = execution_id(fire.schedule_id, fire.derive_fire_time(moment), fire.trigger)
            if eid in eids:
                first.setdefault(eid, (moment - plan.start).total_seconds())
    if not first:
        return "none"
    times = sorted(first.values())
    return f"{times[0]:.1f} / {times[len(times) // 2]:.1f} / {times[-1]:.1f} s"


def ledger_records(client: Any, settings: Settings, expected: set[str],
                   start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """The ledger's record of each expected fire with a fire time in `[start, end]`."""
    from google.cloud import firestore

    executions = client.collection(f"{settings.collection_prefix}executions")
    query = (executions.where(filter=firestore.FieldFilter("fire_time", ">=", start))
             .where(filter=firestore.FieldFilter("fire_time", "<=", end)))
    return {s.id: s.to_dict() or {} for s in query.stream() if s.id in expected}


def tally(records: dict[str, dict[str, Any]]) -> tuple[dict[str, int], int]:
    """Records by `state/trigger`, and how many the audit's fire claimed."""
    states = Counter(f"{r.get('state')}/{r.get('trigger')}" for r in records.values())
    return dict(states), sum(1 for r in records.values() if r.get("trigger") == "audit")


def probe(settings: Settings, signing_key: str, missing: set[str], seconds: float,
          say: Callable[[str], None]) -> dict[str, int]:
    """With the workers stopped: pull the subscription with a fresh unary Pull for `seconds`,
    then a fresh streaming pull for as long; counts the missing fires each gave back (acked)."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    def eid(message: Any) -> str | None:
        try:
            fire = decode_message(message.data, dict(message.attributes), signing_key=signing_key)
        except ContractError:
            return None
        publish_time = message.publish_time
        return execution_id(fire.schedule_id, fire.derive_fire_time(publish_time), fire.trigger)

    subscriber = pubsub_v1.SubscriberClient()
    path = settings.subscription_path
    found: dict[str, set[str]] = {"unary": set(), "streaming": set()}
    messages: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                response = subscriber.pull(subscription=path, max_messages=1000, timeout=10)
            except exceptions.DeadlineExceeded:
                continue
            for received in response.received_messages:
                messages["unary"] += 1
                found["unary"].add(eid(received.message) or "")
            if response.received_messages:
                subscriber.acknowledge(subscription=path, ack_ids=[
                    m.ack_id for m in response.received_messages])
            else:
                time.sleep(1)
        say(f"probe: unary pull gave {messages['unary']} messages")
        lock = threading.Lock()

        def callback(message: Any) -> None:
            with lock:
                messages["streaming"] += 1
                found["streaming"].add(eid(message) or "")
            message.ack()

        future = subscriber.subscribe(path, callback)
        time.sleep(seconds)
        future.cancel()
        say(f"probe: streaming pull gave {messages['streaming']} messages")
    finally:
        subscriber.close()
    unary, streaming = missing & found["unary"], missing & found["streaming"]
    return {"probe_messages_unary": messages["unary"], "probe_lost_found_unary": len(unary),
            "probe_messages_streaming": messages["streaming"],
            "probe_lost_found_streaming": len(streaming),
            "probe_lost_still_missing": len(missing - unary - streaming)}
