"""The local clock: slots emitted on time, across restarts, reloads, pauses and one-shots."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.clock import Checkpoint, LocalClock
from scheduler.contract import Message, decode_message
from scheduler.validation import parse_schedule

T0 = datetime(2026, 3, 28, 23, 58, 30, tzinfo=UTC)


def _schedule(sid: str, **extra: object) -> object:
    doc = {"id": sid, "action": {"type": "http", "url": "https://hub.example.com/x"}, **extra}
    if "at" not in doc and "cron" not in doc:
        doc["cron"] = "* * * * *"
    return parse_schedule(doc)


def test_emits_each_slot_once_with_the_slot_as_publish_time() -> None:
    fired: list[tuple[str, datetime]] = []

    def emit(message: Message, published_at: datetime) -> None:
        fired.append((decode_message(message.data, message.attributes).schedule_id, published_at))

    clock = LocalClock([_schedule("a"), _schedule("p", paused=True)], emit)
    assert clock.emit_due(T0, T0 + timedelta(minutes=3)) == 3
    assert [t for _, t in fired] == [
        datetime(2026, 3, 28, 23, 59, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 1, tzinfo=UTC),
    ]
    assert {sid for sid, _ in fired} == {"a"}


def test_one_shot_fires_once_at_its_second() -> None:
    fired: list[datetime] = []
    one_shot = _schedule("once", at="2026-03-29T00:00:20Z")
    clock = LocalClock([one_shot], lambda _m, t: fired.append(t))
    clock.emit_due(T0, T0 + timedelta(days=400))
    assert fired == [datetime(2026, 3, 29, 0, 0, 20, tzinfo=UTC)]
    assert clock.next_due(datetime(2026, 3, 29, 0, 0, 19, tzinfo=UTC)) == fired[0]


def test_restart_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "clock.json")
    checkpoint.save(T0)
    now = [T0 + timedelta(minutes=2, seconds=10)]
    fired: list[datetime] = []
    stop = threading.Event()
    clock = LocalClock([_schedule("a")], lambda _m, t: (fired.append(t), stop.set()),
                       checkpoint=checkpoint, clock=lambda: now[0])
    clock.run(stop)
    # Down from 23:58:30 to 00:00:40: both missed slots are emitted, stamped with their slots.
    assert fired[:1] == [datetime(2026, 3, 28, 23, 59, tzinfo=UTC)]
    # Nothing settled the emitted slot, so the checkpoint stays just before it: a restart now
    # would emit it again rather than lose it.
    assert checkpoint.load() == datetime(2026, 3, 28, 23, 59, tzinfo=UTC) - timedelta(
        microseconds=1
    )


def test_run_wakes_for_the_next_slot_and_for_a_reload() -> None:
    start = datetime.now(UTC)
    fired: list[datetime] = []
    stop = threading.Event()
    offset = [timedelta(0)]
    clock = LocalClock([], lambda _m, t: (fired.append(t), stop.set()),
                       clock=lambda: datetime.now(UTC) + offset[0])
    thread = threading.Thread(target=clock.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.3)
    # Jump the clock to 0.5 s before the next minute, then add a schedule: the reload wakes it.
    nxt = (start + timedelta(minutes=1)).replace(second=0, microsecond=0)
    offset[0] = nxt - datetime.now(UTC) - timedelta(seconds=0.5)
    clock.set_schedules([_schedule("a")])
    thread.join(timeout=5)
    assert fired and fired[0] == nxt
