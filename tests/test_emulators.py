"""The fire contract and the store against the real Pub/Sub and Firestore emulators."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from scheduler.config import Settings
from scheduler.contract import build_message, decode_message
from scheduler.gcp import firestore_client, publisher_client, subscriber_client
from scheduler.validation import parse_schedule

pytestmark = pytest.mark.emulator


def test_contract_message_round_trips_through_pubsub(pubsub_emulator: str, project_id: str) -> None:
    settings = Settings.from_env(project=project_id)
    schedule = parse_schedule({
        "id": "nightly report/ü",
        "cron": "0 3 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "action": {"type": "http", "url": "https://hub.example/fire", "body": {"k": [1, 2]}},
        "labels": {"team": "core"},
    })
    sent = build_message(schedule, signing_key="secret")
    publisher = publisher_client(settings)
    subscriber = subscriber_client(settings)
    topic = publisher.topic_path(project_id, "fires")
    subscription = subscriber.subscription_path(project_id, "workers")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    before = datetime.now(UTC)
    publisher.publish(topic, sent.data, **sent.attributes).result(timeout=30)

    received = []
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
        received.extend(response.received_messages)
    assert len(received) == 1
    message = received[0].message
    subscriber.acknowledge(subscription=subscription, ack_ids=[received[0].ack_id])

    assert message.data == sent.data
    assert dict(message.attributes) == dict(sent.attributes)
    decoded = decode_message(message.data, dict(message.attributes), signing_key="secret")
    assert decoded == decode_message(sent.data, sent.attributes, signing_key="secret")
    assert decoded.schedule_id == "nightly report/ü"
    assert decoded.action == schedule.action
    publish_time = message.publish_time
    assert publish_time >= before.replace(microsecond=0)


def test_firestore_document_round_trips(firestore_emulator: str, project_id: str) -> None:
    client = firestore_client(Settings.from_env(project=project_id))
    fire_time = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    ref = client.collection("scion_executions").document("abc")
    ref.create({"schedule_id": "s1", "fire_time": fire_time, "state": "running", "attempt": 1})
    snapshot = ref.get()
    assert snapshot.exists
    data = snapshot.to_dict()
    assert data["schedule_id"] == "s1"
    assert data["fire_time"] == fire_time
    assert data["state"] == "running"
