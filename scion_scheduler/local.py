"""The single-instance fallback: the local clock feeding the same worker pipeline, with SQLite.

LocalClock (scheduler/clock.py) -> QueueTransport -> Pipeline -> SqliteLedger: no cloud at all,
the same schedule files, actions and execution history. The clock's checkpoint lives next to
the store and moves only past settled fires, so on restart fires missed while it was down are
run or recorded `missed`, fires interrupted by the stop are taken over from their records, and
the ledger's claim keeps anything from running twice.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.clock import Checkpoint, LocalClock, utc_now
from scheduler.config import Settings
from scheduler.contract import ATTR_SCHEDULE_ID, Message
from scheduler.egress import EgressPolicy
from scheduler.logs import get_logger
from scheduler.model import ValidationError
from scheduler.validation import load_schedules
from worker.action import ActionRegistry
from worker.actions import builtin_handlers
from worker.pipeline import Pipeline, make_worker_id
from worker.queue_transport import QueueTransport
from worker.sqlite_ledger import SqliteLedger
from worker.transport import Delivery, Disposition, Outcome

log = get_logger(__name__)
RELOAD_POLL_SECONDS = 2.0
# How long a stop waits for running actions before releasing them for the next start.
GRACE_PERIOD = timedelta(seconds=30)


def run_local(schedule_file: Path, store: Path, settings: Settings, stop: threading.Event, *,
              clock: Callable[[], datetime] = utc_now) -> None:
    """Run every schedule of `schedule_file` until `stop` is set; reload the file when it
    changes or on SIGHUP (a file with errors is logged and the running set kept). `clock` is
    the time both the clock and the pipeline go by (tests shift it)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    # Taken before the load, so that a change made while the file is read is reloaded, not missed.
    mtime = schedule_file.stat().st_mtime
    egress = settings.allowed_targets
    schedules = load_schedules(schedule_file, egress=egress)
    pipeline = Pipeline(SqliteLedger(store), ActionRegistry(builtin_handlers(settings)),
                        worker_id=make_worker_id(),
                        signing_key=settings.signing_key, clock=clock)
    # Released rather than left to their leases, so the next start takes them over at once.
    transport = QueueTransport(
        grace_period=GRACE_PERIOD,
        before_abandon=lambda: pipeline.release_running(
            "local scheduler stopped before the action finished"
        ),
    )

    def emit(message: Message, published_at: datetime) -> None:
        transport.put(Delivery(uuid.uuid4().hex, message.data, message.attributes, published_at))

    local_clock = LocalClock(
        schedules,
        emit,
        checkpoint=Checkpoint(store.with_suffix(".clock.json")),
        signing_key=settings.signing_key,
        clock=clock,
    )

    def handle(delivery: Delivery) -> Disposition:
        disposition = pipeline.handle(delivery, stop)
        # An ack settles the slot: its record is final, or it can never run. Not `lost`: the
        # record is still running (released at the stop, or taken over by a redelivery, which
        # settles it itself), so it must be emitted again after a restart.
        if disposition.ack and disposition.outcome is not Outcome.LOST:
            local_clock.settled(
                delivery.attributes.get(ATTR_SCHEDULE_ID, ""), delivery.published_at
            )
        return disposition

    reload_now = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda _s, _f: reload_now.set())
    threads = [
        threading.Thread(target=transport.run, args=(handle, stop), name="local-transport"),
        threading.Thread(target=local_clock.run, args=(stop,), name="local-clock"),
    ]
    for thread in threads:
        thread.start()
    log.info("local scheduler running", schedules=len(schedules), store=str(store))
    _reload_on_change(schedule_file, mtime, egress, local_clock, stop, reload_now)
    for thread in threads:
        thread.join()
    local_clock.close()


def _reload_on_change(schedule_file: Path, mtime: float, egress: EgressPolicy,
                      local_clock: LocalClock, stop: threading.Event,
                      reload_now: threading.Event) -> None:
    """Until `stop`: give `local_clock` the schedule file again whenever its modification time
    moves from `mtime` or `reload_now` is set; a file with errors is logged and the running set
    kept."""
    while not stop.wait(RELOAD_POLL_SECONDS):
        current = schedule_file.stat().st_mtime if schedule_file.exists() else mtime
        if current == mtime and not reload_now.is_set():
            continue
        mtime = current
        reload_now.clear()
        try:
            reloaded = load_schedules(schedule_file, egress=egress)
        except (ValidationError, OSError) as exc:
            log.error("schedule file not reloaded; the running set is kept", error=str(exc))
            continue
        local_clock.set_schedules(reloaded)
        log.info("schedule file reloaded", file=str(schedule_file), schedules=len(reloaded))
