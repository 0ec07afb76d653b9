"""The ledger on SQLite, for the single-instance fallback (`scion-scheduler local`, no cloud).

Same semantics as the Firestore ledger (the rules live in `worker.ledger_rules`; the contract
suite runs against both). Every claim, finish, renew and release is one `BEGIN IMMEDIATE`
transaction: it takes SQLite's write lock before reading, so two threads or two processes on
the same file are serialised and cannot both claim a fire. WAL mode lets readers (history) run
while a claim writes. Each thread gets its own connection (a connection must not be shared
across threads mid-transaction).

SQLite has no TTL: `purge_expired(now)` deletes records past their `expire_at`, and `claim` calls
it at most once per `purge_interval` of its clock.

Times are stored as fixed-width ISO 8601 text in UTC (`2026-01-31T09:00:00.000000+00:00`), which
sorts in time order and stays readable with the sqlite3 shell.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.logs import get_logger
from scheduler.model import format_instant
from worker.ledger import Claim, ClaimRequest, Execution, ScheduleState, State
from worker.ledger_rules import (
    REAP_WINDOW,
    Decide,
    HolderChanges,
    HolderStep,
    plan_claim,
    require_aware,
    truncate_error,
    validate_final_state,
    validate_request,
)
from worker.record_codec import R, RecordCodec, Times

log = get_logger(__name__)

# The file's format, written out rather than derived: a field added to a record needs its column
# added to existing files too (as `message` is, in `SqliteLedger.__init__`). The rows are written
# and read by the records' codec, by column name.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    schedule_id  TEXT NOT NULL,
    fire_time    TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    worker_id    TEXT,
    lease_until  TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    duration_s   REAL,
    error        TEXT,
    detail       TEXT,
    expire_at    TEXT NOT NULL,
    message      TEXT
);
CREATE INDEX IF NOT EXISTS executions_history ON executions (schedule_id, fire_time DESC);
CREATE INDEX IF NOT EXISTS executions_expiry ON executions (expire_at);
CREATE INDEX IF NOT EXISTS executions_lapsed ON executions (state, lease_until);
CREATE TABLE IF NOT EXISTS schedule_state (
    schedule_id          TEXT PRIMARY KEY,
    running_execution_id TEXT,
    running_fire_time    TEXT,
    running_lease_until  TEXT,
    last_execution_id    TEXT,
    last_fire_time       TEXT,
    last_state           TEXT,
    last_finished_at     TEXT
);
"""

def _text(value: datetime, name: str) -> str:
    return require_aware(value, name).astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


SQLITE_TIMES = Times(write=_text, read=_time)
_EXECUTIONS = RecordCodec(Execution, SQLITE_TIMES)
_STATES = RecordCodec(ScheduleState, SQLITE_TIMES)


def _upsert(table: str, codec: RecordCodec[Any], verb: str = "INSERT OR REPLACE") -> str:
    return (f"{verb} INTO {table} ({', '.join(codec.names)}) "
            f"VALUES ({', '.join(':' + name for name in codec.names)})")


_UPSERT_EXECUTION = _upsert("executions", _EXECUTIONS)
_INSERT_EXECUTION = _upsert("executions", _EXECUTIONS, "INSERT OR IGNORE")
_UPSERT_STATE = _upsert("schedule_state", _STATES)


def _read(conn: sqlite3.Connection, sql: str, codec: RecordCodec[R], key: str) -> R | None:
    """The record `sql` selects by its key, or None."""
    row = conn.execute(sql, (key,)).fetchone()
    return None if row is None else codec.decode(dict(row))


def _execution_row(execution: Execution) -> dict[str, Any]:
    return _EXECUTIONS.encode(execution, error=truncate_error(execution.error))


class SqliteLedger(HolderChanges):
    """The ledger in one SQLite file; safe for many threads and for processes on one machine."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        purge_interval: timedelta = timedelta(hours=1),
    ) -> None:
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._purge_interval = purge_interval
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._last_purge: datetime | None = None
        with self._immediate() as conn:
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(executions)")}
            if columns and "message" not in columns:
                # A file from before executions kept their message (the reaper needs it).
                conn.execute("ALTER TABLE executions ADD COLUMN message TEXT")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL. The switch needs an exclusive lock and SQLite does not wait
        for it (no busy handler), so processes opening a new file at once retry here."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database's write lock from its first read."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this ledger opened (on any thread)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    @staticmethod
    def _read_execution(conn: sqlite3.Connection, execution_id: str) -> Execution | None:
        return _read(conn, "SELECT * FROM executions WHERE execution_id = ?", _EXECUTIONS,
                     execution_id)

    @staticmethod
    def _read_state(conn: sqlite3.Connection, schedule_id: str) -> ScheduleState | None:
        return _read(conn, "SELECT * FROM schedule_state WHERE schedule_id = ?", _STATES,
                     schedule_id)

    def claim(self, request: ClaimRequest) -> Claim:
        """Claim a fire; see `worker.ledger` for the outcomes."""
        validate_request(request)
        with self._immediate() as conn:
            plan = plan_claim(request, self._read_execution(conn, request.execution_id),
                              self._read_state(conn, request.schedule_id))
            if plan.write:
                conn.execute(_UPSERT_EXECUTION, _execution_row(plan.execution))
            if plan.schedule_state is not None:
                conn.execute(_UPSERT_STATE, _STATES.encode(plan.schedule_state))
        log.debug("ledger claim", result=str(plan.result), schedule_id=request.schedule_id,
                  fire_time=format_instant(request.fire_time), execution_id=request.execution_id,
                  attempt=plan.execution.attempt)
        self._maybe_purge(request.now)
        return Claim(plan.result, plan.execution)

    def _apply_change(self, execution_id: str, decide: Decide, step: HolderStep) -> bool:
        """Read, decide and write in one `BEGIN IMMEDIATE` transaction, whatever the step."""
        with self._immediate() as conn:
            existing = self._read_execution(conn, execution_id)
            if existing is None:
                return False
            change = decide(existing, self._read_state(conn, existing.schedule_id))
            if change is None:
                return False
            conn.execute(_UPSERT_EXECUTION, _execution_row(change.execution))
            if change.schedule_state is not None:
                conn.execute(_UPSERT_STATE, _STATES.encode(change.schedule_state))
        return True

    def record(self, execution: Execution) -> bool:
        """Write a final record unless one exists for that execution; True when written."""
        validate_final_state(execution.state)
        row = _execution_row(execution)
        with self._immediate() as conn:
            written = conn.execute(_INSERT_EXECUTION, row).rowcount == 1
        return written

    def get(self, execution_id: str) -> Execution | None:
        """One record, or None."""
        return self._read_execution(self._connection(), execution_id)

    def history(
        self, schedule_id: str, *, limit: int = 20, before: datetime | None = None
    ) -> list[Execution]:
        """A schedule's executions, newest fire time first; `before` pages (fire_time < before)."""
        if limit < 1:
            raise ValueError(f"limit: must be at least 1 (got {limit})")
        sql = "SELECT * FROM executions WHERE schedule_id = ?"
        params: list[Any] = [schedule_id]
        if before is not None:
            sql += " AND fire_time < ?"
            params.append(_text(before, "before"))
        sql += " ORDER BY fire_time DESC LIMIT ?"
        params.append(limit)
        rows = self._connection().execute(sql, params).fetchall()
        return [_EXECUTIONS.decode(dict(row)) for row in rows]

    def schedule_state(self, schedule_id: str) -> ScheduleState | None:
        """The per-schedule summary, or None if the schedule never fired."""
        return self._read_state(self._connection(), schedule_id)

    def lapsed(self, now: datetime, *, limit: int) -> list[Execution]:
        """Running executions whose lease ended by `now` (one process, one clock: `now` is
        this process's), the longest lapsed first; served by the `executions_lapsed` index."""
        rows = self._connection().execute(
            "SELECT * FROM executions WHERE state = ? AND lease_until <= ? AND lease_until > ? "
            "ORDER BY lease_until LIMIT ?",
            (str(State.RUNNING), _text(now, "now"), _text(now - REAP_WINDOW, "now"), limit),
        ).fetchall()
        return [_EXECUTIONS.decode(dict(row)) for row in rows]

    def purge_expired(self, now: datetime) -> int:
        """Delete the records whose `expire_at` has passed (SQLite has no TTL); the number
        deleted."""
        cutoff = _text(now, "now")
        with self._immediate() as conn:
            deleted = conn.execute(
                "DELETE FROM executions WHERE expire_at <= ?", (cutoff,)
            ).rowcount
        with self._lock:
            self._last_purge = now
        if deleted:
            log.info("ledger purged expired executions", deleted=deleted, before=cutoff)
        return int(deleted)

    def _maybe_purge(self, now: datetime) -> None:
        with self._lock:
            due = self._last_purge is None or now - self._last_purge >= self._purge_interval
            if due:
                self._last_purge = now
        if due:
            self.purge_expired(now)
