"""Worker log lines as a replica writes them, for tests of what reads them back."""

from __future__ import annotations

import io
import json

from scheduler import logs
from worker.events import (
    ActionFinished,
    ActionStarting,
    Duplicate,
    EventLog,
    WorkerEvent,
    WorkerStarting,
)
from worker.ledger import State


def json_line(event: WorkerEvent, *, timestamp: str | None = None, **fire: object) -> str:
    """The JSON line a worker logs for `event`, with `fire` bound as the pipeline binds a
    fire's IDs, and its `timestamp` replaced when one is given. Logging is back on the console
    afterwards, as every test starts."""
    out = io.StringIO()
    logs.configure("json", stream=out)
    try:
        with logs.bound(**fire):
            EventLog(logs.get_logger("worker.pipeline"))(event)
    finally:
        logs.configure("console", "INFO")
    (line,) = out.getvalue().splitlines()
    if timestamp is None:
        return line
    return json.dumps({**json.loads(line), "timestamp": timestamp})


def one_fire(worker_id: str, subscription: str, fire: dict[str, object], started: str,
             finished: str, duplicate: dict[str, object]) -> list[tuple[str, str]]:
    """The lines of an ordinary fire, by replica: replica-1 starts as `worker_id`, replica-2
    runs `fire` from `started` to `finished` (succeeded, HTTP 200), and replica-1 suppresses a
    delivery of `duplicate`, done already."""
    return [
        ("replica-1", json_line(WorkerStarting(
            worker_id=worker_id, subscription=subscription, health_port=8081, executors=4,
            max_messages=8, lease_s=12.0, grace_period_s=5.0))),
        ("replica-2", json_line(ActionStarting("http", taken_over=False), timestamp=started,
                                **fire)),
        ("replica-2", json_line(ActionFinished(State.SUCCEEDED, "HTTP 200"), timestamp=finished,
                                **fire)),
        ("replica-1", json_line(Duplicate(State.SUCCEEDED), **duplicate)),
    ]
