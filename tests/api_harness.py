"""The HTTP control API test harness: settings against the Cloud Scheduler and Pub/Sub emulators,
an in-process app behind Starlette's test client, and the `mode`, `settings`, `ledger` and `api`
fixtures (registered for every test module in `conftest.py`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from emulated_control import count_document_writes, emulated_settings
from fastapi.testclient import TestClient

from scheduler.config import Settings
from scheduler.control import SchedulerControl, with_registry
from scheduler.sync import WRITE_METHODS
from scion_scheduler.api import ApiContext, Authenticator, create_app
from worker.sqlite_ledger import SqliteLedger

TOKEN = "test-api-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACTION = {"type": "http", "url": "https://hub.example/run"}
BODY_LIMIT = 64 * 1024


def path(schedule_id: str, suffix: str = "") -> str:
    """The URL path of a schedule, its ID percent-encoded as one segment (as the hub does)."""
    return f"/v1/schedules/{quote(schedule_id, safe='')}{suffix}"


def doc(**fields: Any) -> dict[str, Any]:
    return {"cron": "0 3 * * *", "action": ACTION, **fields}


@dataclass
class Api:
    client: TestClient
    anon: TestClient
    control: SchedulerControl
    emulator: Any
    ledger: SqliteLedger
    settings: Settings
    context: ApiContext

    document_writes: list[int]

    def writes(self) -> int:
        """Cloud Scheduler writes, plus registry document writes in ticks mode."""
        return sum(self.emulator.call_counts[m] for m in WRITE_METHODS) + self.document_writes[0]


def make_settings(emulator: Any, pubsub: str, project: str, **extra: str) -> Settings:
    return emulated_settings(
        emulator,
        pubsub,
        project,
        api_retry_timeout="2s",
        sync_concurrency="4",
        api_token=TOKEN,
        **extra,
    )


@pytest.fixture(params=["jobs", "ticks"])
def mode(request: pytest.FixtureRequest) -> str:
    """The API behaves the same in both modes (issue 17)."""
    return str(request.param)


@pytest.fixture
def settings(cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str,
             mode: str, firestore_emulator: str) -> Settings:
    extra = {"mode": mode, "firestore_emulator_host": firestore_emulator} if mode == "ticks" \
        else {}
    return make_settings(cloud_scheduler_emulator, pubsub_emulator, project_id, **extra)


@contextmanager
def open_api(
    settings: Settings,
    emulator: Any,
    ledger: SqliteLedger,
    *,
    scheduler_client: Any = None,
    authenticator: Authenticator | None = None,
) -> Iterator[Api]:
    made = with_registry(settings, scheduler_client=scheduler_client) \
        if settings.mode == "ticks" \
        else SchedulerControl(settings, scheduler_client=scheduler_client)
    with made as control:
        context = ApiContext(
            control, ledger, authenticator or Authenticator.from_settings(settings)
        )
        app = create_app(context, max_body_bytes=BODY_LIMIT)
        with TestClient(app, headers=AUTH) as client, TestClient(app) as anon:
            counted = count_document_writes(control.registry) if control.registry else [0]
            yield Api(client, anon, control, emulator, ledger, settings, context, counted)


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.db")


@pytest.fixture
def api(settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger) -> Iterator[Api]:
    with open_api(settings, cloud_scheduler_emulator, ledger) as api:
        yield api


def jobs_only(mode: str | None) -> None:
    """Skip a test about writes to per-schedule jobs (faults injected into them, a write held
    mid-way) in ticks mode, which has no such job: its document writes are tested in
    tests/test_tick_sync.py."""
    if mode == "ticks":
        pytest.skip("about a per-schedule Cloud Scheduler job, which ticks mode does not have")


def errors_of(response: Any) -> list[tuple[str, str]]:
    return [(e["schedule_id"], e["field"]) for e in response.json()["errors"]]


class HeldUpdateClient:
    """The real client, except that the first UpdateJob waits, once inside, for `release`."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_job(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(120), "the test never released the held UpdateJob"
        return self._client.update_job(*args, **kwargs)
