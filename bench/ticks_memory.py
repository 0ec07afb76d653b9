"""Issue 17's memory figure: what a tick of `--schedules` due documents holds in one process, and
what a real worker holds while it runs that tick (`bench_ticks.py --only memory`).

Three measurements of the same N registry documents (a daily cron each, every one due at the
minute of the tick), each against reading all N at once (`ScheduleRegistry.load`), the baseline:

* **in-process, timed**: `worker.actions.tick.Tick` at its defaults (its own first 1,000
  documents, the rest handed to shards of 500), every shard run by the same process as the tick
  publishes it (the most one process can be handed), the fires published to a topic nobody
  reads; and the load. Each side runs in its own fresh process (this module's hidden command
  line), so memory one side freed and the allocator kept cannot hide the other's growth: peak RSS
  (VmHWM, reset with /proc/self/clear_refs after imports and set-up) above VmRSS right before the
  call;
* **in-process, traced**: the same two in fresh processes under `tracemalloc` (Python's own peak
  allocation during the call; a separate pass, since tracing slows the tick);
* **a worker**: one `scion-worker run` replica in tick mode at its defaults, handed the tick
  (published at the minute's first second) and every shard, none of the fires: the worker
  publishes to a topic this process reads, forwarding the shards to the worker's own topic and
  dropping the fires (the Pub/Sub emulator ignores subscription filters). Its VmHWM (reset just
  before the tick) and VmRSS before the tick and once it and every shard are done.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tick_documents import OWNER, put_documents, tick_document
from worker_harness import SIGNING_KEY, Stack

from scheduler.contract import ATTR_SCHEDULE_ID, Message, build_message, decode_message
from scheduler.logs import configure
from scheduler.model import Action, Schedule
from scheduler.registry import ScheduleRegistry
from scheduler.reserved import is_tick_schedule
from scheduler.ticks import TICK_SCHEDULE, shard_documents
from worker.actions.tick import Tick
from worker.tick_store import FirestoreTickStore

PREFIX = "mem_"
SINK = "memory-sink"
# The worker's own topic (the tick and the forwarded shards) and the one it publishes to.
WORKER_IN, WORKER_OUT = "memory-in", "memory-out"
URL = "https://hub.example.com/fire"
MINUTE = timedelta(minutes=1)


def status_kib(pid: int | str, field: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


def tree_kib(pid: int, field: str) -> int:
    """The sum of a /proc status field over `pid` and its descendants (a replica's processes;
    of VmHWM, an upper bound of their peak together)."""
    from proc_cpu import tree_sum

    return int(tree_sum(pid, lambda member: status_kib(member, field)))


def reset_peak(pid: int | str) -> None:
    """Reset a process's VmHWM to its current RSS (proc(5), clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _schedule(i: int, slot: datetime) -> Schedule:
    # Daily at the slot's time: the documents are due once at each tick the bench runs, however
    # long a tick takes, instead of again at every minute.
    return Schedule(id=f"memory/{i:06d}", cron=f"{slot.minute} {slot.hour} * * *",
                    timezone="UTC", action=Action("http", {"url": URL}), overlap="allow")


def _sleep_until(instant: datetime) -> None:
    time.sleep(max(0.0, (instant - datetime.now(UTC)).total_seconds()))


def bench_memory(stack: Stack, client: Any, count: int, worker_env: Mapping[str, str]
                 ) -> list[str]:
    """The memory figure's lines: the worker's tick first (it needs the wall clock's minute),
    then the in-process passes on the days after (a tick's minute is only an argument)."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    for topic in (SINK, WORKER_IN, WORKER_OUT):
        publisher.create_topic(name=publisher.topic_path(stack.project, topic))
    started = datetime.now(UTC)
    slot = started.replace(second=0, microsecond=0)
    put_documents(client, [(s, tick_document(s, slot, slot))
                           for s in (_schedule(i, slot) for i in range(count))], prefix=PREFIX)
    written_s = (datetime.now(UTC) - started).total_seconds()
    lines = [f"memory: {count} registry documents written in {written_s:.0f} s, each one due "
             f"once, at {slot:%H:%M} UTC (load average {_load()})"]
    # A tick of any minute up to the catch-up window after the slot publishes the slot once;
    # the worker's is the first minute that leaves it time to start.
    first = (datetime.now(UTC) + timedelta(seconds=75)).replace(second=0, microsecond=0)
    lines += _worker_lines(stack, first, count, worker_env)
    runs = {(side, trace): _child(stack, side, slot + timedelta(days=1 + trace), trace)
            for trace in (False, True) for side in ("tick", "load")}
    lines += _in_process_lines(runs, count)
    lines.append(f"  (load average at the end {_load()})")
    return lines


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def _child(stack: Stack, side: str, minute: datetime, trace: bool) -> dict[str, Any]:
    """One side measured in a fresh process (this module's own command line)."""
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=stack.pubsub_host,
               FIRESTORE_EMULATOR_HOST=stack.firestore_host)
    command = [sys.executable, __file__, side, "--project", stack.project, "--minute",
               minute.isoformat(), *(["--trace"] if trace else [])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _in_process_lines(runs: dict[tuple[str, bool], dict[str, Any]], count: int) -> list[str]:
    tick, load = runs[("tick", False)], runs[("load", False)]
    traced_tick, traced_load = runs[("tick", True)], runs[("load", True)]
    tick_peak = tick["peak_kib"] - tick["before_kib"]
    load_peak = load["peak_kib"] - load["before_kib"]
    mib = 1024
    return [
        "  in one process, at the tick's defaults, every shard run by the same process "
        "(each side in a fresh process; peak RSS = VmHWM above VmRSS before the call):",
        f"    tick: {tick['fires']} fires, {tick['shards']} shards, in {tick['seconds']:.1f} s;"
        f" peak RSS +{tick_peak / mib:.1f} MiB over {tick['before_kib'] / mib:.0f} MiB",
        f"    baseline, all {load['documents']} documents read at once (ScheduleRegistry.load, "
        f"{load['seconds']:.1f} s): peak RSS +{load_peak / mib:.1f} MiB over "
        f"{load['before_kib'] / mib:.0f} MiB",
        f"    tick / load-all peak RSS: {tick_peak / max(load_peak, 1):.2f}",
        f"    tracemalloc peak (a second pass; tick {traced_tick['seconds']:.1f} s, load "
        f"{traced_load['seconds']:.1f} s): tick {traced_tick['traced_peak'] / 2**20:.1f} MiB, "
        f"load {traced_load['traced_peak'] / 2**20:.1f} MiB (tick / load "
        f"{traced_tick['traced_peak'] / max(traced_load['traced_peak'], 1):.2f}; "
        f"{traced_load['traced_peak'] / max(count, 1):.0f} B a document loaded)",
    ]


def _worker_lines(stack: Stack, minute: datetime, count: int, env: Mapping[str, str]
                  ) -> list[str]:
    """A tick-mode worker handed the tick of `minute` and every shard, none of the fires."""
    subscriber = stack.subscriber
    for name in (WORKER_IN, WORKER_OUT):
        subscriber.create_subscription(request={
            "name": subscriber.subscription_path(stack.project, name),
            "topic": stack.publisher.topic_path(stack.project, name), "ack_deadline_seconds": 60})
    worker = stack.start_worker(**{
        **env, "SCION_SCHEDULER_TOPIC": WORKER_OUT, "SCION_SCHEDULER_SUBSCRIPTION": WORKER_IN,
        "SCION_SCHEDULER_COLLECTION_PREFIX": PREFIX, "SCION_SCHEDULER_ALLOWED_TARGETS": URL,
        # The audit still reads every document each minute, but its window holds no slot: the
        # fires nobody runs here would otherwise all be published again by it.
        "SCION_SCHEDULER_AUDIT_HORIZON": "21s", "SCION_SCHEDULER_AUDIT_GRACE": "20s"})
    worker.wait_ready()
    with _relay(stack) as relayed:
        _sleep_until(minute - timedelta(seconds=5))
        reset_peak(worker.pid)
        before = status_kib(worker.pid, "VmRSS")
        _sleep_until(minute)
        started = time.monotonic()
        _publish(stack, WORKER_IN, build_message(TICK_SCHEDULE, signing_key=SIGNING_KEY,
                                                 fire_time=minute))
        shards = _wait(lambda: _tick_shards(worker.log_lines()))
        claimer_s = time.monotonic() - started
        _wait(lambda: sum(_outcomes(worker.metrics()).values()) > shards or None)
        seconds = time.monotonic() - started
        _wait_quiet(relayed)
    peak, after = status_kib(worker.pid, "VmHWM"), status_kib(worker.pid, "VmRSS")
    outcomes, most = _outcomes(worker.metrics()), _most_at_once(worker.log_lines())
    # Its audit reads every document each minute: not during the in-process passes.
    worker.close()
    return [
        f"  one scion-worker replica in tick mode at its defaults (64 executors), handed the "
        f"tick of {minute:%H:%M} and every shard, none of the fires",
        f"    the tick read the due IDs and published {shards} shards and its own fires in "
        f"{claimer_s:.0f} s; it and its shards done in {seconds:.0f} s; at most {most} shards "
        "claimed at once",
        f"    fires published {relayed['fires']} (of {count} slots), shards forwarded "
        f"{relayed['shards']}; executions by outcome: {outcomes}",
        f"    worker RSS {before / 1024:.0f} MiB before the tick, peak {peak / 1024:.0f} MiB "
        f"(+{(peak - before) / 1024:.0f} MiB), {after / 1024:.0f} MiB after",
    ]


def _wait(found: Callable[[], int | None], timeout_s: float = 3600) -> int:
    deadline = time.monotonic() + timeout_s
    while (value := found()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker's tick did not finish")
        time.sleep(1)
    return value


def _entries(lines: Sequence[str], prefix: str) -> Iterator[dict[str, Any]]:
    """The worker's JSON log entries about the tick or its shards (schedule IDs from
    `prefix`)."""
    for line in lines:
        if line.startswith("{"):
            entry = json.loads(line)
            if str(entry.get("schedule_id", "")).startswith(prefix):
                yield entry


def _tick_shards(lines: Sequence[str]) -> int | None:
    """How many shards the tick made, once it is done."""
    for entry in _entries(lines, TICK_SCHEDULE.id):
        if entry["schedule_id"] == TICK_SCHEDULE.id and entry["message"] == "tick done":
            return int(entry["shards"])
    return None


def _most_at_once(lines: Sequence[str]) -> int:
    """The most shards the worker's log shows claimed and not finished at the same time (the
    action started: `SHARDS_AT_ONCE` of them run, the others wait)."""
    running = most = 0
    for entry in _entries(lines, TICK_SCHEDULE.id + " "):
        if entry.get("event_kind") in ("action_starting", "action_finished"):
            running += 1 if entry["event_kind"] == "action_starting" else -1
            most = max(most, running)
    return most


def _outcomes(metrics: dict[str, float]) -> dict[str, int]:
    prefix = "scion_worker_executions_total{outcome="
    return {k[len(prefix):-1]: int(v) for k, v in metrics.items() if k.startswith(prefix)}


def _publish(stack: Stack, topic: str, message: Message) -> None:
    stack.publisher.publish(stack.publisher.topic_path(stack.project, topic), message.data,
                            **message.attributes).result(timeout=60)


@contextlib.contextmanager
def _relay(stack: Stack) -> Iterator[dict[str, int]]:
    """Reads what the worker publishes: forwards each shard to the worker's own topic, counts
    and drops each fire. Yields the running counts."""
    counts = {"fires": 0, "shards": 0, "last": 0}
    stop = threading.Event()
    subscription = stack.subscriber.subscription_path(stack.project, WORKER_OUT)

    def relay() -> None:
        from google.api_core import exceptions

        while not stop.is_set():
            try:
                received = stack.subscriber.pull(subscription=subscription, max_messages=1000,
                                                 timeout=5).received_messages
            except exceptions.DeadlineExceeded:
                continue
            for item in received:
                attributes = dict(item.message.attributes)
                if is_tick_schedule(attributes.get(ATTR_SCHEDULE_ID, "")):
                    _publish(stack, WORKER_IN, Message(item.message.data, attributes))
                    counts["shards"] += 1
                else:
                    counts["fires"] += 1
            if received:
                counts["last"] = int(time.monotonic())
                stack.subscriber.acknowledge(subscription=subscription,
                                             ack_ids=[m.ack_id for m in received])

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()


def _wait_quiet(counts: dict[str, int], quiet_s: int = 10, timeout_s: float = 600) -> None:
    """Until the worker has published nothing for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and time.monotonic() - counts["last"] < quiet_s:
        time.sleep(1)


def _tick_call(client: Any, project: str, minute: datetime) -> Callable[[], dict[str, Any]]:
    """The tick of `minute` at its defaults, each shard run here as the tick publishes it."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(
        max_messages=1_000, max_bytes=9_000_000, max_latency=0.02))
    topic = publisher.topic_path(project, SINK)
    counts = {"fires": 0, "shards": 0}

    def publish(messages: Sequence[Message]) -> None:
        if len(messages) == 1 and is_tick_schedule(messages[0].attributes[ATTR_SCHEDULE_ID]):
            fire = decode_message(messages[0].data, messages[0].attributes,
                                  signing_key=SIGNING_KEY)
            documents = shard_documents(fire.schedule_id, fire.action.params)
            assert documents is not None
            tick.run_shard(minute, documents)
            counts["shards"] += 1
            return
        futures = [publisher.publish(topic, m.data, **dict(m.attributes)) for m in messages]
        for future in futures:
            future.result(timeout=120)
        counts["fires"] += len(messages)

    # Every document is due at the minute: nothing is left out to be recorded missed.
    tick = Tick(FirestoreTickStore(client, PREFIX, OWNER), publish, len,
                signing_key=SIGNING_KEY)
    # Set-up, not measured: the publisher's threads and channel.
    publisher.publish(topic, b"warm-up").result(timeout=60)

    def call() -> dict[str, Any]:
        tick.run(minute)
        return dict(counts)

    return call


def _load_call(client: Any) -> Callable[[], dict[str, Any]]:
    registry = ScheduleRegistry(client, PREFIX)
    return lambda: {"documents": len(registry.load())}


def measure(side: str, project: str, minute: datetime, trace: bool) -> dict[str, Any]:
    """One side in this (fresh) process: its peak RSS above the RSS before the call, and with
    `trace` Python's own peak allocation during it."""
    from google.cloud import firestore

    configure("console", "ERROR")
    client = firestore.Client(project=project)
    call = _tick_call(client, project, minute) if side == "tick" else _load_call(client)
    # Set-up, not measured: the Firestore channel.
    list(client.collection(f"{PREFIX}schedules").limit(1).stream())
    gc.collect()
    if trace:
        tracemalloc.start()
    reset_peak("self")
    before = status_kib("self", "VmRSS")
    started = time.monotonic()
    result = call()
    seconds = time.monotonic() - started
    peak = status_kib("self", "VmHWM")
    traced = tracemalloc.get_traced_memory()[1] if trace else None
    return {"before_kib": before, "peak_kib": peak, "seconds": seconds, "traced_peak": traced,
            **result}


def main(argv: list[str] | None = None) -> int:
    """The hidden command line `bench_memory` runs each side with."""
    parser = argparse.ArgumentParser(description="one side of the tick memory figure")
    parser.add_argument("side", choices=("tick", "load"))
    parser.add_argument("--project", required=True)
    parser.add_argument("--minute", required=True, type=datetime.fromisoformat)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.side, args.project, args.minute, args.trace)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
