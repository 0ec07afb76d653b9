"""The stored and shown forms of the ledger's records, pinned as they were written before they
came from one codec (`worker.record_codec`): a Firestore document, a SQLite row and the
history's JSON written by an earlier version still read back, and what is written now is the
same, field for field and type for type."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scion_scheduler.api.schemas import ExecutionOut
from scion_scheduler.api.views import execution_out
from scion_scheduler.cli import main
from worker.history import run_to_dict
from worker.ledger import Execution, FireMessage, ScheduleState, State
from worker.sqlite_ledger import SqliteLedger

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))
MESSAGE = FireMessage("m-1", b'{"action":{}}', {"schedule-id": "team/nightly"},
                      datetime(2026, 3, 1, 8, 59, 30, tzinfo=UTC))
# Every field set, one time in another zone and one with microseconds.
RECORD = Execution(
    execution_id="e-1", schedule_id="team/nightly", fire_time=T0, trigger="scheduled",
    state=State.FAILED, attempt=2, created_at=datetime(2026, 3, 1, 10, 0, 1, tzinfo=PARIS),
    expire_at=T0 + timedelta(days=30), worker_id="host-1", lease_until=T0 + timedelta(minutes=5),
    started_at=T0 + timedelta(seconds=1, microseconds=500_000),
    finished_at=T0 + timedelta(seconds=3), duration_s=1.5, error="HTTP 500", detail="attempt 2",
    message=MESSAGE,
)
MESSAGE_JSON = (
    '{"attributes":{"schedule-id":"team/nightly"},"data":"eyJhY3Rpb24iOnt9fQ==",'
    '"message_id":"m-1","published_at":"2026-03-01T08:59:30+00:00"}'
)
# The schedule's state as the older records below hold it: a fire running, RECORD the last.
SCHEDULE_STATE = ScheduleState(
    "team/nightly", running_execution_id="e-2", running_fire_time=T0 + timedelta(minutes=1),
    last_execution_id="e-1", last_fire_time=T0, last_state=State.FAILED,
    last_finished_at=T0 + timedelta(seconds=3))
# The executions row, in the table's column order, as SqliteLedger has always written it.
SQLITE_ROW = (
    "e-1", "team/nightly", "2026-03-01T09:00:00.000000+00:00", "scheduled", "failed", 2,
    "host-1", "2026-03-01T09:05:00.000000+00:00", "2026-03-01T09:00:01.000000+00:00",
    "2026-03-01T09:00:01.500000+00:00", "2026-03-01T09:00:03.000000+00:00", 1.5, "HTTP 500",
    "attempt 2", "2026-03-31T09:00:00.000000+00:00", MESSAGE_JSON,
)
SQLITE_COLUMNS = [
    "execution_id", "schedule_id", "fire_time", "trigger", "state", "attempt", "worker_id",
    "lease_until", "created_at", "started_at", "finished_at", "duration_s", "error", "detail",
    "expire_at", "message",
]
STATE_COLUMNS = [
    "schedule_id", "running_execution_id", "running_fire_time", "running_lease_until",
    "last_execution_id", "last_fire_time", "last_state", "last_finished_at",
]
# The execution document, as the Firestore ledger has always written it (its ID: e-1).
DOCUMENT: dict[str, Any] = {
    "schedule_id": "team/nightly", "fire_time": T0, "trigger": "scheduled", "state": "failed",
    "attempt": 2, "worker_id": "host-1", "lease_until": T0 + timedelta(minutes=5),
    "created_at": T0 + timedelta(seconds=1),
    "started_at": T0 + timedelta(seconds=1, microseconds=500_000),
    "finished_at": T0 + timedelta(seconds=3), "duration_s": 1.5, "error": "HTTP 500",
    "detail": "attempt 2", "expire_at": T0 + timedelta(days=30), "message": MESSAGE_JSON,
}
# `runs --output json` and the API's ExecutionOut: these keys, in this order.
SHOWN = {
    "execution_id": "e-1", "schedule_id": "team/nightly", "fire_time": "2026-03-01T09:00:00Z",
    "trigger": "scheduled", "state": "failed", "attempt": 2,
    "created_at": "2026-03-01T09:00:01Z", "started_at": "2026-03-01T09:00:01.500000Z",
    "finished_at": "2026-03-01T09:00:03Z", "duration_s": 1.5, "worker_id": "host-1",
    "error": "HTTP 500", "detail": "attempt 2", "expire_at": "2026-03-31T09:00:00Z",
}


def test_sqlite_writes_the_row_it_always_wrote(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    assert ledger.record(RECORD)
    ledger.close()
    conn = sqlite3.connect(tmp_path / "ledger.db")
    assert [row[1] for row in conn.execute("PRAGMA table_info(executions)")] == SQLITE_COLUMNS
    assert [row[1] for row in conn.execute("PRAGMA table_info(schedule_state)")] == STATE_COLUMNS
    assert conn.execute("SELECT * FROM executions").fetchall() == [SQLITE_ROW]
    conn.close()


def test_sqlite_reads_rows_written_by_an_earlier_version(tmp_path: Path) -> None:
    SqliteLedger(tmp_path / "ledger.db").close()
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.execute(f"INSERT INTO executions VALUES ({', '.join('?' * len(SQLITE_ROW))})",
                 SQLITE_ROW)
    conn.execute("INSERT INTO schedule_state VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
        "team/nightly", "e-2", "2026-03-01T09:01:00.000000+00:00", None, "e-1",
        "2026-03-01T09:00:00.000000+00:00", "failed", "2026-03-01T09:00:03.000000+00:00"))
    conn.commit()
    conn.close()
    ledger = SqliteLedger(tmp_path / "ledger.db")
    assert ledger.get("e-1") == RECORD
    assert ledger.history("team/nightly") == [RECORD]
    assert ledger.schedule_state("team/nightly") == SCHEDULE_STATE
    ledger.close()


def test_history_shows_the_keys_it_always_showed(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run_to_dict(RECORD) == SHOWN
    # The API's document holds exactly what the history shows, in the order it shows it.
    assert list(ExecutionOut.model_fields) == list(SHOWN)
    assert execution_out(RECORD).model_dump_json() == json.dumps(SHOWN, separators=(",", ":"))
    ledger = SqliteLedger(tmp_path / "ledger.db")
    ledger.record(RECORD)
    ledger.close()
    assert main(["runs", "team/nightly", "--store", f"sqlite:{tmp_path / 'ledger.db'}",
                 "--output", "json"]) == 0
    printed = capsys.readouterr().out
    assert printed == json.dumps({"schedule_id": "team/nightly", "executions": [SHOWN]},
                                 indent=2) + "\n"


@pytest.mark.emulator
def test_firestore_writes_the_document_it_always_wrote(firestore_client: Any) -> None:
    from worker.firestore_ledger import FirestoreLedger

    assert FirestoreLedger(firestore_client).record(RECORD)
    fields = firestore_client.collection("scion_executions").document("e-1").get().to_dict()
    assert fields == DOCUMENT
    # Of the same types too (an integer stored as a double would compare equal).
    assert all(isinstance(fields[name], type(value)) for name, value in DOCUMENT.items())


@pytest.mark.emulator
def test_firestore_reads_documents_written_by_an_earlier_version(firestore_client: Any) -> None:
    from worker.firestore_ledger import FirestoreLedger

    firestore_client.collection("scion_executions").document("e-1").set(DOCUMENT)
    key = hashlib.sha256(b"team/nightly").hexdigest()
    firestore_client.collection("scion_schedule_running").document(key).set({
        "schedule_id": "team/nightly", "running_execution_id": "e-2",
        "running_fire_time": T0 + timedelta(minutes=1)})
    # A schedule state document of an older version, which held the running fire too (and
    # wrote its empty fields as nulls): only its last finished fire is read.
    firestore_client.collection("scion_schedule_state").document(key).set({
        "schedule_id": "team/nightly", "running_execution_id": "e-0",
        "running_fire_time": T0 - timedelta(minutes=1), "running_lease_until": None,
        "last_execution_id": "e-1", "last_fire_time": T0, "last_state": "failed",
        "last_finished_at": T0 + timedelta(seconds=3)})
    ledger = FirestoreLedger(firestore_client)
    assert ledger.get("e-1") == RECORD
    assert ledger.history("team/nightly") == [RECORD]
    assert ledger.schedule_state("team/nightly") == SCHEDULE_STATE
