"""What `bench_worker.py` feeds the worker: the schedules, their fire messages with duplicates,
and a fresh emulated project (topic, subscription, clients) to publish them into."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.contract import Message, build_message
from scheduler.egress import EgressPolicy
from scheduler.model import Schedule
from scheduler.validation import PUBLIC_ONLY, parse_schedule

SIGNING_KEY = "bench-key"
NOOP = "noop"
DUPLICATE_SHARE = 0.3


OVERLAP = ["skip"]


def schedules(
    count: int, action: dict[str, Any] | None = None, egress: EgressPolicy = PUBLIC_ONLY
) -> list[Schedule]:
    """Distinct schedules (one fire each in flight: the common case of many schedules), each
    with `action` (default: the no-op), whose targets `egress` allows."""
    action = action or {"type": NOOP}
    return [
        parse_schedule(
            {"id": f"bench-{i:05d}", "cron": "* * * * *", "overlap": OVERLAP[0], "action": action},
            known_action_types=frozenset({NOOP, "http"}),
            egress=egress,
        )
        for i in range(count)
    ]


def fire_messages(
    fires: int,
    seed: int = 7,
    action: dict[str, Any] | None = None,
    egress: EgressPolicy = PUBLIC_ONLY,
) -> tuple[list[Message], int]:
    """`fires` distinct manual fires plus DUPLICATE_SHARE duplicates, shuffled."""
    base = datetime.now(UTC)
    plan = schedules(fires, action, egress)
    messages = [
        build_message(
            s, signing_key=SIGNING_KEY, trigger="manual", fire_time=base + timedelta(microseconds=i)
        )
        for i, s in enumerate(plan)
    ]
    rng = random.Random(seed)
    messages += [messages[i] for i in rng.sample(range(fires), int(fires * DUPLICATE_SHARE))]
    rng.shuffle(messages)
    return messages, fires


class Bed:
    """A fresh project: topic and subscription (what Terraform creates), and clients."""

    def __init__(self) -> None:
        from google.cloud import firestore, pubsub_v1

        self.project = f"bench-{uuid.uuid4().hex[:10]}"
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.topic_path(self.project, "fires")
        self.subscription = self.subscriber.subscription_path(self.project, "workers")
        self.publisher.create_topic(name=self.topic)
        self.subscriber.create_subscription(
            request={"name": self.subscription, "topic": self.topic, "ack_deadline_seconds": 60}
        )
        self.firestore = firestore.Client(project=self.project)

    def publish(self, messages: list[Message]) -> None:
        futures = [self.publisher.publish(self.topic, m.data, **m.attributes) for m in messages]
        for future in futures:
            future.result(timeout=120)

    def close(self) -> None:
        self.subscriber.close()


def paced_publisher(count: int, rate: float) -> Callable[[Bed], None]:
    """Publish `count` distinct fires at `rate` per second, each with its publish moment as
    its fire time (what a Cloud Scheduler fire looks like to the worker)."""
    plan = schedules(count)

    def publish(bed: Bed) -> None:
        start = time.perf_counter()
        futures = []
        for i, schedule in enumerate(plan):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            message = build_message(
                schedule, signing_key=SIGNING_KEY, trigger="manual", fire_time=datetime.now(UTC)
            )
            futures.append(bed.publisher.publish(bed.topic, message.data, **message.attributes))
        for future in futures:
            future.result(timeout=60)

    return publish
