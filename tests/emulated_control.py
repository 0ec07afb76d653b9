"""Settings for the tests that drive the control module against the Cloud Scheduler emulator:
one project per test, fast retries and no write limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from scheduler.config import SETTINGS, Settings

KEY = "test-signing-key"
FAST = {
    "write_rate": "1000", "api_retry_initial": "0.01s", "api_retry_maximum": "0.05s",
    "api_retry_timeout": "30s", "sync_concurrency": "8",
}


def emulated_settings(emulator: Any, pubsub: str, project: str, **overrides: str) -> Settings:
    """Settings for `project` on the Cloud Scheduler `emulator` and the Pub/Sub emulator at
    `pubsub`, with FAST's retries unless `overrides` says otherwise."""
    return Settings.from_env(
        {}, project=project, location="us-central1", topic="fires", subscription="workers",
        signing_key=KEY, cloud_scheduler_emulator_host=emulator.host, pubsub_emulator_host=pubsub,
        **{**FAST, **overrides},
    )


def operator_env(monkeypatch: pytest.MonkeyPatch, values: Mapping[str, str]) -> None:
    """Configuration through the environment only, as an operator runs the tools: every
    setting's variable cleared (the emulator hosts kept), then `values` set."""
    for setting in SETTINGS:
        if not setting.attr.endswith("_emulator_host"):
            monkeypatch.delenv(setting.env, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def operator_cli_env(monkeypatch: pytest.MonkeyPatch, project: str,
                     values: Mapping[str, str]) -> None:
    """`operator_env` for the control commands: `project` in europe-west1, topic `fires`, JSON
    logs, and `values`."""
    operator_env(monkeypatch, {
        "SCION_SCHEDULER_PROJECT": project, "SCION_SCHEDULER_LOCATION": "europe-west1",
        "SCION_SCHEDULER_TOPIC": "fires", "SCION_SCHEDULER_LOG_FORMAT": "json", **values,
    })


class _CountingBatch:
    def __init__(self, batch: Any, counter: list[int], collection: str) -> None:
        self._batch, self._counter, self._collection = batch, counter, collection

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._batch, name)
        if name in ("create", "set", "update", "delete"):
            def counted(ref: Any, *args: Any, **kwargs: Any) -> Any:
                # Schedule documents only, not the sync manifest's entries in the same commit.
                self._counter[0] += ref.parent.id == self._collection
                return method(ref, *args, **kwargs)
            return counted
        return method


class _CountingClient:
    def __init__(self, client: Any, counter: list[int], collection: str) -> None:
        self._client, self._counter, self._collection = client, counter, collection

    def batch(self) -> _CountingBatch:
        return _CountingBatch(self._client.batch(), self._counter, self._collection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def count_document_writes(registry: Any) -> list[int]:
    """A counter of the document writes `registry` (a `ScheduleRegistry`) makes from now on."""
    counter = [0]
    registry.client = _CountingClient(registry.client, counter, registry.collection.id)
    return counter


class _FailingBatch:
    def __init__(self, batch: Any, error: Exception) -> None:
        self._batch = batch
        self._error = error

    def commit(self, **_: Any) -> Any:
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)


class FailingClient:
    """A Firestore client whose batches' commits fail with `error` (by default, an unavailable
    Firestore)."""

    def __init__(self, client: Any, error: Exception | None = None) -> None:
        self._client = client
        self._error = error or RuntimeError("503 Firestore unavailable (injected)")

    def batch(self) -> _FailingBatch:
        return _FailingBatch(self._client.batch(), self._error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
