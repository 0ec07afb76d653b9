"""The pipeline's log lines carry each fire's context; worker ids are unique
(harness: `pipeline_harness`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import structlog
from memory_ledger import MemoryLedger
from pipeline_harness import SLOT, Harness, Recorder, delivery, fail_with, pipeline_on, schedule
from structlog.testing import capture_logs

from scheduler.contract import execution_id
from worker.action import (
    ActionError,
)
from worker.pipeline import make_worker_id
from worker.transport import Outcome


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries


def test_every_log_line_about_a_fire_carries_its_context(
    h: Harness, logs: list[dict[str, Any]]
) -> None:
    h.action.behaviour = fail_with(ActionError("HTTP 503", retryable=True))
    h.handle(delivery(schedule()))
    assert logs
    for entry in logs:
        for key in ("schedule_id", "fire_time", "execution_id", "attempt", "worker_id"):
            assert key in entry, (key, entry)
    assert {e["attempt"] for e in logs if e["event"].startswith("action")} == {1}
    assert logs[0]["fire_time"] == "2026-03-02T10:00:00Z"
    assert logs[0]["execution_id"] == execution_id("team/report", SLOT)


def test_a_propagated_trace_is_bound_to_the_fires_log_lines(logs: list[dict[str, Any]]) -> None:
    # Unsigned: the Pub/Sub client adds its trace attribute after the publisher signed.
    pipeline = pipeline_on(MemoryLedger(), Recorder(), trace_project="proj", signing_key=None)
    item = delivery(schedule(), key=None)
    trace_id = "ab" * 16
    traced = replace(
        item,
        attributes={**item.attributes, "googclient_traceparent": f"00-{trace_id}-{'cd' * 8}-01"},
    )
    assert pipeline.handle(traced).outcome == Outcome.SUCCEEDED
    assert logs and all(e["trace"] == f"projects/proj/traces/{trace_id}" for e in logs)


def test_make_worker_id_is_unique_per_call() -> None:
    first, second = make_worker_id(), make_worker_id()
    assert first != second and first.rsplit("-", 2)[0] == second.rsplit("-", 2)[0]
