"""Worker log lines as a replica writes them, for tests of what reads them back."""

from __future__ import annotations

import io
import json

from scheduler import logs
from worker.events import EventLog, WorkerEvent


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
