"""What a ledger process remembers of the fires it wrote: the records of the executions it
holds, with the versions its commits returned, and the final records of those it finished.

A finished record never changes, and a held record with a live lease changes only through its
holder, so a duplicate delivery of either is answered from memory (`known`), and a holder's
renew, finish or release is one guarded commit without a read. The Firestore ledger keeps one
of these; the pipeline's own `_Held` (the fires it is running) is a different thing and is not
folded in here yet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from worker.ledger import Claim, ClaimRequest, ClaimResult, Execution, ScheduleState
from worker.ledger_rules import decide_existing

# How many executions are remembered, held and finished each (a process holds far fewer at a
# time; the bound only matters when a holder never finishes, e.g. an action that never
# returns). A finished record is remembered so that a duplicate delivery of it is answered
# without a read: 10,000 covers several minutes of fires at the benchmark's rate, when
# redeliveries of a fire come.
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Held:
    """The records of an execution this process holds, as it last wrote them, with the
    versions its commits returned: the execution, and the schedule's running document when
    this execution is the one it names (else None: overlap `allow` never writes it)."""

    execution: Execution
    execution_version: Any
    running: ScheduleState | None
    running_version: Any


class HeldFires:
    """The held and the finished records, each bounded to the `limit` most recent; safe for
    many threads."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._held: OrderedDict[str, Held] = OrderedDict()
        self._finished: OrderedDict[str, Execution] = OrderedDict()
        self._lock = threading.Lock()

    def hold(self, held: Held) -> None:
        """Remember the records of an execution this process now holds."""
        execution_id = held.execution.execution_id
        with self._lock:
            self._held[execution_id] = held
            self._held.move_to_end(execution_id)
            while len(self._held) > self._limit:
                self._held.popitem(last=False)

    def take(self, execution_id: str) -> Held | None:
        """Forget a held execution, returning what was remembered of it (None: nothing)."""
        with self._lock:
            return self._held.pop(execution_id, None)

    def finished(self, execution: Execution) -> None:
        """Remember a final record."""
        with self._lock:
            self._finished[execution.execution_id] = execution
            while len(self._finished) > self._limit:
                self._finished.popitem(last=False)

    def known(self, request: ClaimRequest) -> Claim | None:
        """DONE or BUSY when what this process wrote settles the claim: a record it finished
        (final records never change), or one it holds with a lease live at `request.now` (only
        its holder changes it until then). None: ask the store."""
        with self._lock:
            finished = self._finished.get(request.execution_id)
            held = self._held.get(request.execution_id)
        if finished is not None:
            return Claim(ClaimResult.DONE, finished)
        if held is not None and decide_existing(request, held.execution) is ClaimResult.BUSY:
            return Claim(ClaimResult.BUSY, held.execution)
        return None
