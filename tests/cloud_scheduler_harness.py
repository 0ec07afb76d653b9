"""Helpers for the Cloud Scheduler emulator tests: the official google-cloud-scheduler client
(built by `scheduler.gcp.cloud_scheduler_client`) on the emulator, and the `client`, `parent`,
`make_job` and `pubsub` fixtures (registered for every test module in `conftest.py`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from emulator_helpers import pull_until
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1

from scheduler.config import Settings
from scheduler.gcp import cloud_scheduler_client

LOCATION = "us-central1"


JobFactory = Callable[..., scheduler_v1.Job]


@pytest.fixture
def client(cloud_scheduler_emulator: Any) -> Any:
    return cloud_scheduler_client(Settings.from_env())


@pytest.fixture
def parent(project_id: str) -> str:
    return f"projects/{project_id}/locations/{LOCATION}"


@pytest.fixture
def make_job(project_id: str, parent: str) -> JobFactory:
    def make(
        job_id: str = "job-1", schedule: str = "0 9 * * *", **overrides: Any
    ) -> scheduler_v1.Job:
        fields: dict[str, Any] = {
            "name": f"{parent}/jobs/{job_id}",
            "schedule": schedule,
            "time_zone": "Europe/Paris",
            "pubsub_target": {"topic_name": f"projects/{project_id}/topics/fires", "data": b"{}",
                              "attributes": {"schedule-id": job_id}},
        }
        fields.update(overrides)
        return scheduler_v1.Job(fields)

    return make


def when(timestamp: Any) -> datetime:
    return datetime.fromtimestamp(timestamp.timestamp(), UTC)


@pytest.fixture
def pubsub(pubsub_emulator: str, project_id: str) -> Any:
    """Make topics with a subscription each, and pull from them."""
    import google.cloud.pubsub_v1 as pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()

    class PubSub:
        def topic(self, topic_id: str) -> tuple[str, str]:
            topic = publisher.create_topic(name=f"projects/{project_id}/topics/{topic_id}").name
            sub = subscriber.create_subscription(
                name=f"projects/{project_id}/subscriptions/{topic_id}", topic=topic).name
            return topic, sub

        def pull(self, subscription: str, wait: float, want: int = 1) -> list[Any]:
            """Messages received within `wait` seconds (returns early once `want` arrived)."""
            return pull_until(subscriber, subscription, lambda got: len(got) >= want, wait)

    yield PubSub()
    publisher.stop()
    subscriber.close()


class ScriptedPublisher:
    """Fails the first `failures` publishes with UNAVAILABLE, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[datetime] = []

    def publish(self, topic: str, data: bytes, attributes: Any, done: Any) -> None:
        self.attempts.append(datetime.now(UTC))
        if len(self.attempts) <= self.failures:
            done(None, gexc.ServiceUnavailable("pubsub down"))
        else:
            done(str(len(self.attempts)), None)

    def close(self) -> None:
        pass
