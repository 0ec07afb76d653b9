"""What a process remembers of the fires it holds: for each execution it holds, what its holder
keeps of it, and the final records of those it finished.

Two holders keep one of these. The Firestore ledger remembers the records it wrote, with the
versions its commits returned (`Held`): a finished record never changes, and a held record
with a live lease changes only through its holder, so a duplicate delivery of either is
answered from memory (`HeldFires.known`), and a holder's renew, finish or release is one
guarded commit without a read. The pipeline's lease keeper (`worker.leases`) remembers the
leases its heartbeat renews while their actions run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from worker.ledger import Claim, ClaimRequest, ClaimResult, Execution, ScheduleState
from worker.ledger_rules import decide_existing

# How many executions the ledger remembers, held and finished each (a process holds far fewer
# at a time; the bound only matters when a holder never finishes, e.g. an action that never
# returns). A finished record is remembered so that a duplicate delivery of it is answered
# without a read: 10,000 covers several minutes of fires at the benchmark's rate, when
# redeliveries of a fire come.
MAX_REMEMBERED = 10_000


class Holding(Protocol):
    """What a holder keeps of one execution it holds."""

    @property
    def execution_id(self) -> str:
        """The execution held."""
        ...


H = TypeVar("H", bound=Holding)


@dataclass(frozen=True)
class Held:
    """The records of an execution this process holds, as it last wrote them, with the
    versions its commits returned: the execution, and the schedule's running document when
    this execution is the one it names (else None: overlap `allow` never writes it)."""

    execution: Execution
    execution_version: Any
    running: ScheduleState | None
    running_version: Any

    @property
    def execution_id(self) -> str:
        """The execution held."""
        return self.execution.execution_id


class HeldFires(Generic[H]):
    """The held executions and the finished records, each bounded to the `limit` most recent
    (None: unbounded); safe for many threads."""

    def __init__(self, limit: int | None = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._held: OrderedDict[str, H] = OrderedDict()
        self._finished: OrderedDict[str, Execution] = OrderedDict()
        self._lock = threading.Lock()

    def hold(self, held: H) -> None:
        """Remember an execution this process now holds."""
        execution_id = held.execution_id
        with self._lock:
            self._held[execution_id] = held
            self._held.move_to_end(execution_id)
            self._trim(self._held)

    def take(self, execution_id: str) -> H | None:
        """Forget a held execution, returning what was remembered of it (None: nothing)."""
        with self._lock:
            return self._held.pop(execution_id, None)

    def held(self) -> list[H]:
        """Every execution held now, the longest held first."""
        with self._lock:
            return list(self._held.values())

    def finished(self, execution: Execution) -> None:
        """Remember a final record."""
        with self._lock:
            self._finished[execution.execution_id] = execution
            self._trim(self._finished)

    def known(self: HeldFires[Held], request: ClaimRequest) -> Claim | None:
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

    def _trim(self, remembered: OrderedDict[str, Any]) -> None:
        while self._limit is not None and len(remembered) > self._limit:
            remembered.popitem(last=False)
