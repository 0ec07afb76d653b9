"""The Cloud Scheduler emulator through the official client: failed publishes are retried per the
job's retry config (a scripted publisher, so failures are exact) (helpers:
`cloud_scheduler_harness`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import grpc
import pytest
from cloud_scheduler_harness import JobFactory, ScriptedPublisher
from emulator_helpers import eventually
from google.cloud import scheduler_v1

from scheduler.config import Settings
from scheduler.emulator import CloudSchedulerEmulator
from scheduler.emulator.timing import backoff
from scheduler.gcp import cloud_scheduler_client

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


@contextmanager
def scripted_run(
    failures: int, monkeypatch: pytest.MonkeyPatch, parent: str, job: Any
) -> Iterator[tuple[Any, Any, ScriptedPublisher]]:
    """`job` created and run now on an emulator whose first `failures` publishes fail: the
    client, the created job and the publisher; the emulator is stopped at the end."""
    publisher = ScriptedPublisher(failures)
    emulator = CloudSchedulerEmulator(publisher=publisher).start()
    try:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", emulator.host)
        client = cloud_scheduler_client(Settings.from_env())
        created = client.create_job(parent=parent, job=job)
        client.run_job(name=created.name)
        yield client, created, publisher
    finally:
        emulator.stop()


FAST_RETRY = {"min_backoff_duration": timedelta(milliseconds=100),
              "max_backoff_duration": timedelta(milliseconds=400), "max_doublings": 2}


def test_failed_publish_is_retried_until_it_succeeds(monkeypatch: pytest.MonkeyPatch, parent: str,
                                                     make_job: JobFactory) -> None:
    retrying = make_job(retry_config={"retry_count": 3, **FAST_RETRY})
    with scripted_run(2, monkeypatch, parent, retrying) as (client, created, publisher):
        assert eventually(lambda: len(publisher.attempts) == 3)
        job = eventually(lambda: (j := client.get_job(name=created.name)).schedule_time
                         == created.schedule_time
                          and j)
        assert job.status.code == 0
        gaps = [b - a for a, b in zip(publisher.attempts, publisher.attempts[1:], strict=False)]
        assert all(gap >= timedelta(milliseconds=90) for gap in gaps)
        time.sleep(0.5)
        assert len(publisher.attempts) == 3


def test_retries_stop_at_retry_count(
    monkeypatch: pytest.MonkeyPatch, parent: str, make_job: JobFactory
) -> None:
    retrying = make_job(retry_config={"retry_count": 2, **FAST_RETRY})
    with scripted_run(100, monkeypatch, parent, retrying) as (client, created, publisher):
        assert eventually(lambda: len(publisher.attempts) >= 3)
        time.sleep(1.0)
        assert len(publisher.attempts) == 3  # the attempt and retry_count retries
        job = client.get_job(name=created.name)
        assert job.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert job.schedule_time == created.schedule_time


def test_no_retry_when_retry_count_is_zero(monkeypatch: pytest.MonkeyPatch, parent: str,
                                           make_job: JobFactory) -> None:
    with scripted_run(100, monkeypatch, parent, make_job()) as (client, created, publisher):
        assert eventually(lambda: client.get_job(name=created.name).status.code != 0)
        time.sleep(0.5)
        assert len(publisher.attempts) == 1


def test_backoff_follows_the_documented_example() -> None:
    retry = scheduler_v1.RetryConfig.pb()(max_doublings=3)
    retry.min_backoff_duration.FromTimedelta(timedelta(seconds=10))
    retry.max_backoff_duration.FromTimedelta(timedelta(seconds=300))
    waits = [backoff(retry, n).total_seconds() for n in range(1, 9)]
    assert waits == [10, 20, 40, 80, 160, 240, 300, 300]
