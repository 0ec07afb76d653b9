"""Outages of each dependency, on the emulators, with `scion-worker run` processes: a frozen
Firestore (SIGSTOP of an emulator this test starts), Pub/Sub connections cut by the project's
fault proxy, a target answering 503 for a while, and a target slower than the lease. In each,
every fire runs once, the worker stays up, `/readyz` and the dependency gauge name what is
wrong, and it recovers by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from worker_harness import Stack, Target, Worker, wait_for

from scheduler.contract import Message, execution_id
from scheduler.model import parse_instant
from scion_scheduler.faultproxy import FaultProxy, Mode
from scion_scheduler.google_emulators import Emulator
from worker.ledger import State

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


class FlakyTarget(Target):
    """`/flaky` answers 503 while `down` is set, 200 otherwise."""

    down = False

    def respond(self, path: str) -> int:
        if path.startswith("/flaky"):
            return 503 if self.down else 200
        return super().respond(path)


def readyz(worker: Worker) -> tuple[int, str]:
    return worker.get("/readyz")


def dependency_up(worker: Worker, dependency: str) -> float | None:
    return worker.metrics().get(f"scion_worker_dependency_up{{dependency={dependency}}}")


def eid(message: Message) -> str:
    attrs = message.attributes
    return execution_id(attrs["schedule-id"], parse_instant(attrs["fire-time"]), attrs["trigger"])


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def stack(pubsub_emulator: str, firestore_emulator: str, project_id: str,
          tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(project_id, tmp_path, pubsub_emulator, firestore_emulator, target=FlakyTarget())
    try:
        yield stack
    finally:
        stack.close()


def test_firestore_freeze(pubsub_emulator: str, project_id: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Firestore frozen for 30 s while one action runs and more fires arrive: the action that
    ran during the freeze is recorded once it thaws and never run again; the others wait and
    run; /readyz names the store meanwhile."""
    firestore = Emulator("firestore").start()
    assert firestore.process is not None
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore.host)
    stack = Stack(project_id, tmp_path, pubsub_emulator, firestore.host)
    try:
        worker = stack.start_worker()
        worker.wait_ready()
        schedule = stack.schedule("freeze", "/slow/3")
        running = stack.manual(schedule, now())
        stack.publish(running)
        wait_for(lambda: bool(stack.target.for_key(eid(running))), what="the action to start")
        os.killpg(firestore.process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            during = [stack.manual(schedule, now() + timedelta(milliseconds=i)) for i in range(5)]
            stack.publish_many(during)
            wait_for(lambda: readyz(worker)[0] == 503, timeout=40, what="readyz to fail")
            body = readyz(worker)[1]
            assert "ledger: a call has not returned" in body, body
            assert dependency_up(worker, "ledger") == 0.0
            time.sleep(max(0.0, 30 - (time.monotonic() - frozen_at)))
        finally:
            os.killpg(firestore.process.pid, signal.SIGCONT)
        fires = [running, *during]
        wait_for(lambda: all(
            (record := stack.ledger.get(eid(m))) is not None and record.state is State.SUCCEEDED
            for m in fires), what="every fire recorded succeeded")
        wait_for(lambda: readyz(worker)[0] == 200, what="readyz to recover")
        assert worker.process.poll() is None
        time.sleep(3)  # a second run of the frozen action would come now
        assert {len(stack.target.for_key(eid(m))) for m in fires} == {1}
    finally:
        stack.close()
        firestore.stop()


def seen_by_workers(stack: Stack) -> set[str]:
    """Execution IDs that appear in any worker's log: fires a worker received."""
    seen: set[str] = set()
    for worker in stack.workers:
        for line in worker.log_lines():
            if '"execution_id": "' in line:
                seen.add(line.split('"execution_id": "', 1)[1].split('"', 1)[0])
    return seen


def test_pubsub_connections_cut(stack: Stack) -> None:
    """Every connection reset and new ones refused for 8 s while actions run: the workers
    report it, reconnect by themselves, record the running actions once, answer the
    redeliveries of the acks lost with the connections as duplicates, and run later fires.

    The emulator routes some messages to the streams the cut closed and then holds them for
    minutes (see `worker/pubsub_transport.py`): a fire that no worker ever received is the
    emulator's loss and reported as an expected failure; a fire a worker received must run."""
    proxy = FaultProxy("127.0.0.1", int(stack.pubsub_host.rsplit(":", 1)[1])).start()
    try:
        workers = [stack.start_worker(PUBSUB_EMULATOR_HOST=proxy.address) for _ in range(2)]
        for worker in workers:
            worker.wait_ready()
        schedule = stack.schedule("cut", "/slow/2")
        before = [stack.manual(schedule, now() + timedelta(milliseconds=i)) for i in range(10)]
        stack.publish_many(before)
        wait_for(lambda: all(stack.target.for_key(eid(m)) for m in before), what="actions to start")
        connections = proxy.connections
        proxy.mode = Mode.REFUSE
        proxy.cut()  # the actions' acks go nowhere
        wait_for(lambda: all(readyz(w)[0] == 503 for w in workers), timeout=30,
                 what="readyz to fail")
        assert "pubsub: the streaming pull is not connected" in readyz(workers[0])[1]
        assert dependency_up(workers[0], "pubsub") == 0.0
        time.sleep(8)
        proxy.mode = Mode.FORWARD
        wait_for(lambda: all(readyz(w)[0] == 200 for w in workers), what="readyz to recover")
        assert proxy.connections > connections, "no worker reconnected"
        wait_for(lambda: all((r := stack.ledger.get(eid(m))) is not None
                             and r.state is State.SUCCEEDED for m in before),
                 what="the running actions to be recorded")
        after = [stack.manual(schedule, now() + timedelta(seconds=1, milliseconds=i))
                 for i in range(10)]
        stack.publish_many(after)
        fires = before + after
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(stack.target.for_key(eid(m)) for m in fires), timeout=90,
                     what="every fire to run")
        time.sleep(3)
        assert all(len(stack.target.for_key(eid(m))) <= 1 for m in fires), "a fire ran twice"
        assert all(w.process.poll() is None for w in workers)
        missing = {eid(m) for m in fires if not stack.target.for_key(eid(m))}
        assert not missing & seen_by_workers(stack), "a worker received a fire it never ran"
        if missing:
            pytest.xfail(f"the emulator never delivered {len(missing)} of {len(fires)} fires "
                         "after the cut (routed to closed streams)")
    finally:
        proxy.stop()


def test_target_outage(stack: Stack) -> None:
    """The target answers 503 for 8 s: the worker retries with backoff and the fire succeeds
    once, every attempt counted in its record; the target gauge says what failed."""
    assert isinstance(stack.target, FlakyTarget)
    worker = stack.start_worker()
    worker.wait_ready()
    schedule = stack.schedule("flaky", "/flaky")
    fire = stack.manual(schedule, now())
    stack.target.down = True
    stack.publish(fire)
    wait_for(lambda: len(stack.target.for_key(eid(fire))) >= 2, what="two failed attempts")
    assert dependency_up(worker, "target") == 0.0
    status, body = readyz(worker)
    assert status == 200 and "target: flaky: " in body, body  # degraded, still ready
    time.sleep(3)
    stack.target.down = False
    wait_for(lambda: (r := stack.ledger.get(eid(fire))) is not None and r.state is State.SUCCEEDED,
             what="the fire to succeed")
    record = stack.ledger.get(eid(fire))
    hits = stack.target.for_key(eid(fire))
    assert record is not None and record.attempt == len(hits) >= 3
    assert [h.attempt for h in hits] == list(range(1, len(hits) + 1))
    assert [r.attempt for r in stack.ledger.history("flaky")] == [record.attempt]
    wait_for(lambda: dependency_up(worker, "target") == 1.0, what="the target gauge to recover")


def test_slow_target(stack: Stack) -> None:
    """An action three times longer than the lease: the heartbeat keeps the lease, so the
    duplicate delivered to the other worker is busy, then a duplicate; it runs once."""
    workers = [stack.start_worker("--lease", "2") for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    fire = stack.manual(stack.schedule("slow", "/slow/6"), now())
    stack.publish_many([fire, fire, fire])
    wait_for(lambda: (r := stack.ledger.get(eid(fire))) is not None and r.state is State.SUCCEEDED,
             what="the fire to succeed")
    time.sleep(3)
    assert len(stack.target.for_key(eid(fire))) == 1
    assert sum(w.outcome("busy") for w in workers) >= 1
