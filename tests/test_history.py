"""`scion-scheduler runs` and `worker.history` on the SQLite store (the Firestore path is covered
end to end in `test_worker_e2e.py`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scion_scheduler.cli import main
from worker.history import list_runs, run_to_dict
from worker.ledger import ClaimRequest, Execution, State
from worker.sqlite_ledger import SqliteLedger

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
WORKER = "host-1-abcd"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A SQLite store holding three executions of `nightly` and one of `other`."""
    path = tmp_path / "ledger.sqlite"
    ledger = SqliteLedger(path)

    def claim(schedule_id: str, fire_time: datetime, eid: str) -> None:
        ledger.claim(ClaimRequest(
            execution_id=eid, schedule_id=schedule_id, fire_time=fire_time, trigger="scheduled",
            worker_id=WORKER, lease=timedelta(seconds=60), overlap="allow", now=fire_time))

    claim("nightly", T0, "e1")
    ledger.finish("e1", WORKER, State.SUCCEEDED, now=T0 + timedelta(seconds=2))
    claim("nightly", T0 + timedelta(days=1), "e2")
    ledger.finish("e2", WORKER, State.FAILED, now=T0 + timedelta(days=1, seconds=1),
                  error="HTTP 500 from target\nsecond line")
    ledger.record(
        Execution(
            execution_id="e3",
            schedule_id="nightly",
            fire_time=T0 + timedelta(days=2),
            trigger="scheduled",
            state=State.MISSED,
            attempt=0,
            created_at=T0 + timedelta(days=2, hours=1),
            expire_at=T0 + timedelta(days=32),
            finished_at=T0 + timedelta(days=2, hours=1),
            error="late by 3600s, beyond the catch-up window of 900s",
        )
    )
    claim("other", T0, "e4")
    ledger.close()
    return path


def test_list_runs_newest_first_and_validates(store: Path) -> None:
    ledger = SqliteLedger(store)
    runs = list_runs(ledger, "nightly", limit=2)
    assert [r.execution_id for r in runs] == ["e3", "e2"]
    assert [r.execution_id for r in list_runs(ledger, "nightly", before=runs[-1].fire_time)] == [
        "e1"
    ]
    data = run_to_dict(runs[1])
    assert (
        data["state"] == "failed"
        and data["attempt"] == 1
        and data["fire_time"] == "2026-05-02T09:00:00Z"
    )
    json.dumps(data)
    with pytest.raises(ValueError, match="limit"):
        list_runs(ledger, "nightly", limit=0)
    with pytest.raises(ValueError, match="schedule_id"):
        list_runs(ledger, "", limit=1)


def test_runs_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "nightly", "--store", f"sqlite:{store}", "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schedule_id"] == "nightly"
    assert [(e["execution_id"], e["state"]) for e in out["executions"]] == [
        ("e3", "missed"), ("e2", "failed"), ("e1", "succeeded")]
    succeeded = out["executions"][2]
    assert succeeded["started_at"] == "2026-05-01T09:00:00Z" and succeeded["duration_s"] == 2.0
    assert succeeded["worker_id"] == WORKER and succeeded["error"] is None


def test_runs_text_and_limit(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "nightly", "--store", f"sqlite:{store}", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["FIRE", "TIME", "STATE"]
    assert len(lines) == 3
    assert "missed" in lines[1] and "late by 3600s" in lines[1]
    assert "failed" in lines[2] and "HTTP 500 from target second line" in lines[2]
    assert main(["runs", "nobody", "--store", f"sqlite:{store}"]) == 0
    assert "no executions recorded" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "named"), [
    (["runs", "x", "--store", "sqlite:/nonexistent/ledger.sqlite"], "--store"),
    (["runs", "x", "--store", "postgres://db"], "--store"),
    (["runs", "x", "--store", "sqlite:"], "--store"),
])
def test_runs_bad_store_is_named(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert named in capsys.readouterr().err


def test_runs_bad_limit_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["runs", "x", "--limit", "0"])
    assert info.value.code == 2
    assert "--limit" in capsys.readouterr().err
