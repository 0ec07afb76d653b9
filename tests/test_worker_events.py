"""The worker's typed events: what the pipeline reports comes back, through a JSON log line,
as the same typed value (the narration of `scion-scheduler up` reads nothing else)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from worker_lines import json_line

from worker import events
from worker.ledger import State

EVENTS: list[events.WorkerEvent] = [
    events.WorkerStarting(worker_id="host-1-ab", subscription="projects/p/subscriptions/s",
                          health_port=8081, executors=4, max_messages=8, lease_s=12.0,
                          grace_period_s=5.0),
    events.ActionStarting(action_type="http", taken_over=True),
    events.ActionFinished(State.SUCCEEDED, "HTTP 200"),
    events.ActionFinished(State.CANCELLED, None),
    events.ActionFailed("POST http://x/: HTTP 400: no"),
    events.ActionFailedLastAttempt("POST http://x/: HTTP 503: later", 5),
    events.ActionRetrying("POST http://x/: HTTP 503: later", 5),
    events.Duplicate(State.SKIPPED),
    events.Busy(holder="host-2-cd", delay_s=11.5),
    events.Busy(holder=None, delay_s=12.0),
    events.Skipped(),
    events.Missed("the slot is older than the catch-up window"),
    events.Rejected("unknown action type: 'nope'", "ping", 3, dead_letter=True),
    events.Rejected("malformed or unverifiable message: bad signature", None, None,
                    dead_letter=False),
]


def test_every_kind_is_covered_here() -> None:
    assert {event.kind for event in EVENTS} == set(events.EventKind)


def test_each_line_keeps_its_level() -> None:
    warnings = {events.ActionFailed, events.ActionFailedLastAttempt, events.ActionRetrying,
                events.Missed}
    for event in EVENTS:
        level = json.loads(json_line(event))["severity"]
        expected = ("WARNING" if type(event) in warnings
                    else "ERROR" if isinstance(event, events.Rejected) else "INFO")
        assert level == expected, event


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_comes_back_from_its_json_line(event: events.WorkerEvent) -> None:
    line = json_line(event)
    decoded = events.decode_line(line)
    assert decoded is not None and decoded.event == event and decoded.fire is None
    written = json.loads(line)
    assert written["message"] == event.message and written["event_kind"] == event.kind.value
    assert written["severity"] == event.level.upper()


def test_the_fire_of_a_line_is_read_from_the_bound_context() -> None:
    line = json_line(events.Skipped(), schedule_id="ping", fire_time="2026-03-01T09:00:00Z",
                     execution_id="e1", trigger="scheduled", attempt=2)
    decoded = events.decode_line(line)
    assert decoded is not None
    assert decoded.fire == events.FireRef("e1", "ping", datetime(2026, 3, 1, 9, tzinfo=UTC),
                                          "scheduled", 2)
    assert decoded.at.tzinfo is not None


def test_a_line_that_fits_no_event_is_a_line_without_one() -> None:
    stamp = "2026-03-01T09:00:00.114Z"
    for fields in [{"message": "claim failed"}, {"event_kind": "nope"},
                   {"event_kind": "missed"}, {"event_kind": "missed", "reason": 3},
                   {"event_kind": "rejected", "reason": "r", "claimed_schedule_id": None,
                    "delivery_attempt": None, "disposition": "shrug"}]:
        decoded = events.decode_line(json.dumps({**fields, "timestamp": stamp}))
        assert decoded is not None and decoded.event is None, fields
        assert decoded.at == datetime(2026, 3, 1, 9, 0, 0, 114000, tzinfo=UTC)
    assert events.decode_line("not json") is None and events.decode_line("[1]") is None
