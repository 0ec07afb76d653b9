"""The single-instance fallback: a schedule file run in process into SQLite, no cloud.

The restart tests stop and start `run_local` for real around real slots, on a store and checkpoint
that persist between the runs. Each run gets a clock shifted to just before (or after) a chosen
slot, which then runs at real speed, so that a slot comes due within seconds instead of at the next
wall-clock minute. The target is a small local HTTP server that records every request and answers
what the test tells it. Helpers: `local_mode_slots`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog
from local_mode_slots import S1, S2, S3, TIMEOUT, local_settings

from scheduler.clock import Checkpoint, LocalClock
from scheduler.contract import execution_id
from scheduler.model import Schedule, format_instant
from scion_scheduler import local
from scion_scheduler.local import run_local
from worker.ledger import FINAL_STATES, Execution, State
from worker.sqlite_ledger import SqliteLedger


class Target:
    """A local HTTP target: records (Idempotency-Key, attempt) of each request and answers
    `statuses` in order (then 200); `hold`, when set, keeps the first request waiting until
    it is set free."""

    def __init__(self, statuses: tuple[int, ...] = (), hold: threading.Event | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        self._statuses = list(statuses)
        self._hold = hold
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with target._lock:
                    first = not target.requests
                    target.requests.append(
                        (self.headers["Idempotency-Key"], self.headers["X-Scion-Attempt"])
                    )
                    status = target._statuses.pop(0) if target._statuses else 200
                if first and target._hold is not None:
                    target._hold.wait(TIMEOUT)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/fire"

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


def _schedule_file(tmp_path: Path, url: str, **extra: str) -> Path:
    path = tmp_path / "s.yaml"
    lines = [
        f"- id: tick\n  cron: '* * * * *'\n  action: {{type: http, url: '{url}', timeout: 30}}\n"
    ]
    lines += [f"  {key}: {value}\n" for key, value in extra.items()]
    path.write_text("".join(lines))
    return path


@contextmanager
def running(
    schedule_file: Path, store: Path, starts_at: datetime
) -> Iterator[Callable[[], datetime]]:
    """`run_local` in a thread, on a clock that reads `starts_at` now and runs on from there;
    stopped (and waited for) on exit, as SIGTERM stops the command. A first run starts from a
    checkpoint at `starts_at`, as if it had run until then: a start slower than the seconds
    left to the slot must not let the slot pass before the clock first reads the time."""
    if _checkpoint(store).load() is None:
        _checkpoint(store).save(starts_at)
    offset = starts_at - datetime.now(UTC)

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    stop = threading.Event()
    thread = threading.Thread(target=run_local, args=(schedule_file, store, local_settings(), stop),
                              kwargs={"clock": clock}, name="run-local")
    thread.start()
    try:
        yield clock
    finally:
        stop.set()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "run_local did not stop"


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[SqliteLedger]:
    """The test's own view of the local store (`tmp_path / "scion.db"`), opened once: a ledger
    opened per poll would take SQLite's write lock for its schema each time."""
    ledger = SqliteLedger(tmp_path / "scion.db")
    yield ledger
    ledger.close()


def _record(reader: SqliteLedger, slot: datetime) -> Execution | None:
    return reader.get(execution_id("tick", slot))


def _final(reader: SqliteLedger, slot: datetime) -> Callable[[], bool]:
    def check() -> bool:
        record = _record(reader, slot)
        return record is not None and record.state in FINAL_STATES
    return check


def _history(reader: SqliteLedger) -> list[tuple[datetime, State, int]]:
    return sorted((r.fire_time, r.state, r.attempt) for r in reader.history("tick", limit=50))


def _checkpoint(store: Path) -> Checkpoint:
    return Checkpoint(store.with_suffix(".clock.json"))


def test_each_slot_runs_once_across_stops_and_starts(
    tmp_path: Path, target: Target, reader: SqliteLedger
) -> None:
    schedule_file, store = _schedule_file(tmp_path, target.url), tmp_path / "scion.db"
    with running(schedule_file, store, S1 - timedelta(seconds=2)):
        _wait(_final(reader, S1))
    # Down across S2: on start it is caught up (inside the default 15-minute window).
    with running(schedule_file, store, S2 + timedelta(seconds=3)):
        _wait(_final(reader, S2))
    # A crash that kept an old checkpoint: S1 and S2 are emitted again and the ledger drops both.
    _checkpoint(store).save(S1 - timedelta(seconds=30))
    with running(schedule_file, store, S2 + timedelta(seconds=10)):
        _wait(lambda: (_checkpoint(store).load() or S1) > S2)  # both settled
    assert _history(reader) == [(S1, State.SUCCEEDED, 1), (S2, State.SUCCEEDED, 1)]
    assert sorted(target.keys()) == sorted([execution_id("tick", S1), execution_id("tick", S2)])


def test_a_fire_stopped_during_its_retry_backoff_is_finished_after_the_restart(
    tmp_path: Path, reader: SqliteLedger
) -> None:
    server = Target(statuses=(503,))
    try:
        schedule_file, store = (
            _schedule_file(tmp_path, server.url, max_attempts="3"),
            tmp_path / "scion.db",
        )
        with running(schedule_file, store, S1 - timedelta(seconds=2)):
            # The first attempt failed and was released; the redelivery waits out its backoff (10
            # s).
            _wait(lambda: (r := _record(reader, S1)) is not None and r.state is State.RUNNING
                  and r.error is not None)
        saved = _checkpoint(store).load()
        assert saved is not None and saved < S1, "the checkpoint moved past an unsettled fire"
        with running(schedule_file, store, S1 + timedelta(seconds=30)):
            _wait(_final(reader, S1))
        assert _history(reader) == [(S1, State.SUCCEEDED, 2)]
        assert server.requests == [(execution_id("tick", S1), "1"), (execution_id("tick", S1), "2")]
    finally:
        server.close()


def test_an_action_still_running_at_the_stop_is_released_and_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: SqliteLedger,
) -> None:
    monkeypatch.setattr(local, "GRACE_PERIOD", timedelta(seconds=0.5))
    hold = threading.Event()
    server = Target(hold=hold)
    try:
        schedule_file, store = _schedule_file(tmp_path, server.url), tmp_path / "scion.db"
        with running(schedule_file, store, S1 - timedelta(seconds=2)):
            _wait(lambda: bool(server.requests))
        # The grace period ended with the action still waiting on the target: released, not left
        # to its lease, so the next start takes it over at once.
        record = _record(reader, S1)
        assert record is not None and record.state is State.RUNNING
        assert record.error == "local scheduler stopped before the action finished"
        with running(schedule_file, store, S1 + timedelta(seconds=30)):
            _wait(_final(reader, S1))
        with structlog.testing.capture_logs() as events:
            hold.set()  # the abandoned attempt ends now; its outcome is no longer its to record
            _wait(
                lambda: any(
                    e["event"] == "outcome not recorded: another worker took the fire over"
                    for e in list(events)
                )
            )
        assert _history(reader) == [(S1, State.SUCCEEDED, 2)]
        assert [attempt for _, attempt in server.requests] == ["1", "2"]
    finally:
        hold.set()
        server.close()


def test_catchup_none_records_the_slot_missed_while_down(
    tmp_path: Path, target: Target, reader: SqliteLedger
) -> None:
    schedule_file, store = (
        _schedule_file(tmp_path, target.url, catchup="none"),
        tmp_path / "scion.db",
    )
    with running(schedule_file, store, S1 - timedelta(seconds=2)):
        _wait(_final(reader, S1))
    # Down across S2 and back 5 s after S3: S2 is over a minute late, S3 is on time.
    with running(schedule_file, store, S3 + timedelta(seconds=5)):
        _wait(lambda: _final(reader, S2)() and _final(reader, S3)())
    assert _history(reader) == [
        (S1, State.SUCCEEDED, 1),
        (S2, State.MISSED, 0),
        (S3, State.SUCCEEDED, 1),
    ]
    assert sorted(target.keys()) == sorted([execution_id("tick", S1), execution_id("tick", S3)])


def test_missed_fires_after_a_restart_are_handled_once(tmp_path: Path) -> None:
    """A checkpoint two minutes old stands for a scheduler that was down across two slots:
    on start both are emitted, run once (catchup all, inside the window), and recorded.
    Both are due at once, so overlap is allowed: with skip, one would be recorded skipped."""
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text(
        "- id: tick\n  cron: '* * * * *'\n  max_attempts: 1\n  overlap: allow\n"
        "  action: {type: http, url: 'http://127.0.0.1:9/unreachable', timeout: 1}\n"
    )
    store = tmp_path / "scion.db"
    now = datetime.now(UTC)
    Checkpoint(store.with_suffix(".clock.json")).save(now - timedelta(minutes=2, seconds=5))
    stop = threading.Event()
    thread = threading.Thread(target=run_local, args=(schedule_file, store, local_settings(), stop))
    thread.start()
    ledger = SqliteLedger(store)
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    runs = []
    while datetime.now(UTC) < deadline:
        runs = ledger.history("tick", limit=10)
        if len(runs) >= 2 and all(r.state != "running" for r in runs):
            break
        stop.wait(0.2)
    stop.set()
    thread.join(timeout=40)
    assert len(runs) >= 2
    assert len({r.fire_time for r in runs}) == len(runs)
    assert all(r.state == "failed" for r in runs)  # the target is unreachable; recorded, not lost


def test_the_schedule_file_is_reloaded_on_change_and_a_broken_one_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[list[str]] = []
    original = LocalClock.set_schedules

    def record(self: LocalClock, schedules: list[Schedule]) -> None:
        loaded.append([s.id for s in schedules])
        original(self, schedules)

    monkeypatch.setattr(local, "RELOAD_POLL_SECONDS", 0.05)
    monkeypatch.setattr(LocalClock, "set_schedules", record)
    entry = (
        "- id: {id}\n  cron: '0 0 1 1 *'\n  action: {{type: http, url: 'http://127.0.0.1:9/'}}\n"
    )
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text(entry.format(id="a"))
    stop = threading.Event()
    thread = threading.Thread(target=run_local,
                              args=(schedule_file, tmp_path / "db.sqlite", local_settings(), stop))
    thread.start()
    try:
        def rewrite(text: str, bump: int) -> None:
            schedule_file.write_text(text)
            stamp = schedule_file.stat().st_mtime + bump
            os.utime(schedule_file, (stamp, stamp))

        _wait((tmp_path / "db.sqlite").exists)  # created after run_local took the file's mtime
        rewrite(entry.format(id="a") + entry.format(id="b"), 5)
        _wait(lambda: ["a", "b"] in loaded)
        reloads = len(loaded)
        with structlog.testing.capture_logs() as events:
            rewrite("- id: broken\n  cron: 'not a cron'\n", 10)
            _wait(lambda: any(e["event"] == "schedule file not reloaded; the running set is kept"
                              for e in list(events)))
        # The broken file is logged and the running set kept.
        assert len(loaded) == reloads and loaded[-1] == ["a", "b"]
    finally:
        stop.set()
        thread.join(timeout=30)


def test_sighup_reloads_an_unchanged_mtime_file_and_sigterm_exits_0(tmp_path: Path) -> None:
    """The command as deployed: SIGHUP (a handler only the main thread can install) reloads a
    file whose change the mtime poll cannot see; SIGTERM stops it with exit status 0."""
    entry = (
        "- id: {id}\n  cron: '0 0 1 1 *'\n  action: {{type: http, url: 'http://127.0.0.1:9/'}}\n"
    )
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text(entry.format(id="a"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCION_")}
    env["SCION_SCHEDULER_LOG_FORMAT"] = "json"
    env["SCION_SCHEDULER_ALLOWED_TARGETS"] = "127.0.0.1"
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "scion-scheduler"),
            "local",
            "--file",
            str(schedule_file),
            "--store",
            str(tmp_path / "scion.db"),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: list[dict[str, object]] = []
    reader = threading.Thread(target=_read_json_lines, args=(process, events), daemon=True)
    reader.start()
    try:
        _wait(lambda: any(e.get("message") == "local scheduler running" for e in events), TIMEOUT)
        before = schedule_file.stat()
        schedule_file.write_text(entry.format(id="a") + entry.format(id="b"))
        os.utime(schedule_file, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert schedule_file.stat().st_mtime_ns == before.st_mtime_ns
        process.send_signal(signal.SIGHUP)
        _wait(lambda: any(e.get("message") == "schedule file reloaded" for e in events), TIMEOUT)
        reloaded = next(e for e in events if e.get("message") == "schedule file reloaded")
        assert reloaded["schedules"] == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(10)


def _read_json_lines(process: subprocess.Popen[str], events: list[dict[str, object]]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)


def _wait(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_one_shot_fires_at_its_second_not_at_a_minute(tmp_path: Path, target: Target) -> None:
    """As the hub's one-shot timers do (scion pkg/hub/scheduler.go:263-271)."""
    at = S1 + timedelta(seconds=17, microseconds=500000)
    schedule_file = tmp_path / "s.yaml"
    schedule_file.write_text(
        f"- id: once\n  at: '{format_instant(at)}'\n  action: {{type: http, url: '{target.url}'}}\n"
    )
    with running(schedule_file, tmp_path / "scion.db", at - timedelta(seconds=2)) as clock:
        _wait(lambda: bool(target.keys()))
        arrived = clock()
    assert timedelta(0) <= arrived - at <= timedelta(seconds=2)
    assert target.keys() == [execution_id("once", at)]
