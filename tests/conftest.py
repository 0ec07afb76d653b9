"""Shared fixtures: the real Google emulators, started here when their variable is unset.

`.ci/run` starts them once and exports the variables; a bare `pytest` on a developer machine
gets them started (and stopped) by these session fixtures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.logs import configure
from scion_scheduler.google_emulators import Emulator

# Fixtures shared by split test modules, available to every test module.
pytest_plugins = [
    "api_harness",
    "cloud_scheduler_harness",
    "ledger_race_harness",
    "pipeline_harness",
]


@pytest.fixture(autouse=True)
def _logs_on_stderr() -> Iterator[None]:
    """structlog's defaults print to stdout, so a line logged by a background thread that an
    earlier test left running (a server, a worker thread) could land in the captured stdout of
    a test that parses it. Every test starts and ends with logs on the current stderr."""
    configure("console", "INFO")
    yield
    configure("console", "INFO")


_STARTED_FOR_WORKERS: list[Emulator] = []


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n N` (pytest-xdist) the controller starts each missing emulator once, before
    it spawns the workers, which inherit the variables; otherwise every worker would start its
    own pair of Java emulators on a 2-core machine."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    for kind in ("pubsub", "firestore"):
        emulator = Emulator(kind)
        if not os.environ.get(emulator.env_var):
            _STARTED_FOR_WORKERS.append(emulator.start())
            os.environ[emulator.env_var] = emulator.host


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop what `pytest_configure` started, after every worker has finished."""
    while _STARTED_FOR_WORKERS:
        emulator = _STARTED_FOR_WORKERS.pop()
        os.environ.pop(emulator.env_var, None)
        emulator.stop()


def _emulator(kind: str) -> Iterator[str]:
    var = Emulator(kind).env_var
    existing = os.environ.get(var)
    if existing:
        yield existing
        return
    emulator = Emulator(kind).start()
    os.environ[var] = emulator.host
    try:
        yield emulator.host
    finally:
        os.environ.pop(var, None)
        emulator.stop()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """host:port of a running Pub/Sub emulator (PUBSUB_EMULATOR_HOST is set)."""
    yield from _emulator("pubsub")


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    """host:port of a running Firestore emulator (FIRESTORE_EMULATOR_HOST is set)."""
    yield from _emulator("firestore")


@pytest.fixture
def project_id() -> str:
    """A fresh project ID per test, so tests never see each other's topics or documents."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def firestore_client(firestore_emulator: str, project_id: str) -> Iterator[Any]:
    """A Firestore client on the emulator, in this test's fresh project."""
    from google.cloud import firestore

    client = firestore.Client(project=project_id)
    yield client
    client.close()


@pytest.fixture
def cloud_scheduler_emulator(
    pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A running in-process Cloud Scheduler emulator (a `CloudSchedulerEmulator`) on a free port,
    publishing to the Pub/Sub emulator; CLOUD_SCHEDULER_EMULATOR_HOST points at it."""
    from scheduler.emulator import CloudSchedulerEmulator

    emulator = CloudSchedulerEmulator(port=0, pubsub_host=pubsub_emulator).start()
    monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", emulator.host)
    try:
        yield emulator
    finally:
        emulator.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, each group in its file order: under `pytest -n 4` the end-to-end
    tests spend minutes waiting on the wall clock (cron slots, leases, Pub/Sub's deadlines), so
    started first they overlap each other and the quick tests fill the gaps, instead of the
    suite ending on one that started last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
