"""`worker.record_codec`: the records' forms come from their dataclass fields."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from worker.history import JSON_TIMES
from worker.ledger import Execution, ScheduleState, State
from worker.record_codec import RecordCodec, Times, field_names
from worker.sqlite_ledger import SQLITE_TIMES

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TEXT = Times(write=lambda value, _name: value.isoformat(), read=datetime.fromisoformat)


def test_every_field_round_trips_in_every_form() -> None:
    full = Execution("e-1", "s", T0, "manual", State.RUNNING, 3, T0, T0 + timedelta(days=1),
                     worker_id="w", lease_until=T0, started_at=T0, finished_at=None,
                     duration_s=0.25, error="boom", detail="d")
    for times in (TEXT, SQLITE_TIMES, JSON_TIMES):
        codec = RecordCodec(Execution, times)
        assert codec.decode(codec.encode(full)) == full
    states = RecordCodec(ScheduleState, SQLITE_TIMES)
    state = ScheduleState("s", last_state=State.MISSED, last_fire_time=T0)
    assert states.decode(states.encode(state)) == state


def test_a_form_holds_only_its_fields_and_given_values_fill_the_rest() -> None:
    running = RecordCodec(ScheduleState, TEXT, ("schedule_id", *field_names(ScheduleState,
                                                                            "running_")))
    data = running.encode(ScheduleState("s", running_execution_id="e", last_execution_id="x"))
    assert data == {"schedule_id": "s", "running_execution_id": "e", "running_fire_time": None,
                    "running_lease_until": None}
    assert running.decode(data, schedule_id="t") == ScheduleState("t", running_execution_id="e")
    record = Execution("e-1", "s", T0, "scheduled", State.FAILED, 1, T0, T0, error="long")
    assert RecordCodec(Execution, TEXT).encode(record, error="short")["error"] == "short"
    assert RecordCodec(Execution, TEXT, ["state"]).encode(record) == {"state": "failed"}


def test_a_missing_required_field_is_named() -> None:
    codec = RecordCodec(Execution, TEXT)
    data = codec.encode(Execution("e-1", "s", T0, "scheduled", State.FAILED, 1, T0, T0))
    with pytest.raises(ValueError, match="created_at: missing"):
        codec.decode({**data, "created_at": None})
    state = codec.decode({**data, "worker_id": None})
    assert state == replace(codec.decode(data), worker_id=None)


def test_a_field_without_a_stored_form_fails_when_the_codec_is_built() -> None:
    @dataclass(frozen=True)
    class Priced:
        price: Decimal

    with pytest.raises(TypeError, match=r"Priced\.price"):
        RecordCodec(Priced, TEXT)
    with pytest.raises(ValueError, match="no fields named lease"):
        RecordCodec(Execution, TEXT, ("execution_id", "lease"))
