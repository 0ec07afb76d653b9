"""How late this replica starts its fires now: the audit's sign of a backlog.

The audit fires again every owed slot that has no record once it is older than its grace
(`worker.audit`). A slot that waits in the subscription behind a backlog has no record either,
so when a minute's fires take longer than the grace to start, every audit published the queued
slots again, and the copies queued behind them in turn: measured with `bench/bench_ticks.py
--only minute --due 20000`, one run sent 85,768 audit copies of 20,000 slots and took 239 s
(bench/README.md, "The minute's CPU"). The pipeline notes how late each claimed fire starts
(`Pipeline._run`); the audit widens its grace to what it saw (`audit_grace`), so it waits for
queued slots and still fires a lost one again once the backlog has drained. Replicas pull from
one subscription, so the auditing replica's lag stands for the others'.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta

# How long one observed lag counts: two audits, so a backlog seen during one minute still
# widens the next minute's audit.
LAG_MEMORY = timedelta(minutes=2)
# The grace is this many times the lag: the slots still queued are younger than the oldest
# start seen, and the queue may still be growing.
LAG_FACTOR = 1.5
# The time one remembered lag stands for.
BUCKET = timedelta(seconds=10)


class StartLag:
    """The largest fire-to-start lag observed within `LAG_MEMORY`; safe for many threads.
    Kept as the largest lag of each `BUCKET` of time, so its size does not grow with the rate
    of starts."""

    def __init__(self, memory: timedelta = LAG_MEMORY) -> None:
        self._memory = memory
        self._lock = threading.Lock()
        self._buckets: deque[tuple[datetime, timedelta]] = deque()

    def observe(self, lag: timedelta, now: datetime) -> None:
        """Note that a fire started `lag` after its fire time, at `now`."""
        with self._lock:
            if self._buckets and now - self._buckets[-1][0] < BUCKET:
                began, largest = self._buckets[-1]
                self._buckets[-1] = (began, max(largest, lag))
            else:
                self._buckets.append((now, lag))
            self._forget(now)

    def recent(self, now: datetime) -> timedelta:
        """The largest lag observed within the memory (zero when none was)."""
        with self._lock:
            self._forget(now)
            return max((lag for _, lag in self._buckets), default=timedelta(0))

    def _forget(self, now: datetime) -> None:
        while self._buckets and now - self._buckets[0][0] > self._memory:
            self._buckets.popleft()


def audit_grace(grace: timedelta, lag: timedelta, horizon: timedelta) -> timedelta:
    """The audit's grace given the recent start lag: never below the configured `grace`, and
    at most the `horizon` (the audit then checks nothing until the backlog drains)."""
    return min(max(grace, lag * LAG_FACTOR), horizon)
