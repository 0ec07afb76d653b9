"""Finishing a fire once its action returned: the outcome recorded in the ledger, or, for a
retryable failure, the execution released for a retry; and the `Disposition` that says which.

A failure is retried while the fire has attempts left (`Fire.max_attempts`), after a wait that
doubles from `RETRY_BASE_DELAY` up to `RETRY_MAX_DELAY`. An outcome that cannot be written is
written again while this worker holds the execution's lease (`worker.leases`): handing the
delivery back would let the lease lapse and the action that already ran run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.logs import get_logger
from worker.action import ActionError, ActionResult
from worker.attempt import Attempt
from worker.events import (
    ActionFailed,
    ActionFailedLastAttempt,
    ActionFinished,
    ActionRetrying,
    EventLog,
)
from worker.leases import Lease
from worker.ledger import FINAL_STATES, Ledger, State
from worker.transport import Disposition, Outcome

log = get_logger(__name__)
report = EventLog(log)

# A delivery that finds the ledger unavailable comes back after this long.
STORE_RETRY_DELAY = timedelta(seconds=10)
# A retryable action failure is retried by this worker, not left to the subscription's retry
# policy: the broker's nack backoff grows to minutes (10-600 s by Terraform's defaults) and the
# Pub/Sub emulator was seen holding nacked fires far beyond it (see `worker.pubsub_transport`).
# The waits double from RETRY_BASE_DELAY up to RETRY_MAX_DELAY: with the default 5 attempts the
# last one starts 30 s after the first, so a target that recovers within 30 s succeeds.
RETRY_BASE_DELAY = timedelta(seconds=2)
RETRY_MAX_DELAY = timedelta(seconds=30)
# While the action's outcome cannot be recorded, the finish is retried this often as long as
# this worker holds the execution (the heartbeat renews its lease meanwhile).
FINISH_RETRY_DELAY = timedelta(seconds=1)


def retry_delay(attempt: int) -> timedelta:
    """The wait before the attempt after `attempt` (1-based): doubling, capped."""
    return min(RETRY_BASE_DELAY * (1 << min(max(0, attempt - 1), 16)), RETRY_MAX_DELAY)


def store_unavailable() -> Disposition:
    """The ledger failed: the delivery comes back after `STORE_RETRY_DELAY`."""
    return Disposition(ack=False, outcome=Outcome.ERROR, delay=STORE_RETRY_DELAY)


class Finisher:
    """Records what became of a fire's action, for one worker; thread-safe."""

    def __init__(
        self, ledger: Ledger, *, worker_id: str, clock: Callable[[], datetime]
    ) -> None:
        self.ledger = ledger
        self.worker_id = worker_id
        self.clock = clock

    def succeeded(self, eid: str, result: ActionResult | None, held: Lease) -> Disposition:
        """The action returned `result` (None: plain success): record its final state."""
        state = result.state if result is not None else State.SUCCEEDED
        detail = result.detail if result is not None else None
        if state not in FINAL_STATES:
            return self.finish(
                eid,
                State.FAILED,
                held=held,
                error=f"the action returned the non-final state {state!s}",
            )
        report(ActionFinished(state, detail))
        return self.finish(eid, state, detail=detail, held=held)

    def failed(self, attempt: Attempt, number: int, exc: Exception, held: Lease) -> Disposition:
        """The action raised `exc` on attempt `number`: recorded failed when it may not be
        retried or that was its last attempt, else released for a retry."""
        eid = attempt.execution_id
        max_attempts = attempt.fire.max_attempts
        retryable = exc.retryable if isinstance(exc, ActionError) else True
        error = str(exc) if isinstance(exc, ActionError) else f"{type(exc).__name__}: {exc}"
        if not retryable:
            report(ActionFailed(error))
            return self.finish(eid, State.FAILED, error=error, held=held)
        if number >= max_attempts:
            report(ActionFailedLastAttempt(error, max_attempts),
                   exc_info=not isinstance(exc, ActionError))
            return self.finish(eid, State.FAILED, error=error, held=held)
        report(ActionRetrying(error, max_attempts), exc_info=not isinstance(exc, ActionError))
        held.end()  # no renewal of the lease being released
        try:
            released = self.ledger.release(eid, self.worker_id, now=self.clock(), error=error)
        except Exception:
            # The lease lapses on its own; the redelivery takes the fire over then.
            log.exception("could not release the execution")
            released = True
        if not released:
            log.warning("another worker holds the fire now; leaving it to that worker")
            return Disposition(ack=True, outcome=Outcome.LOST)
        return Disposition(ack=False, outcome=Outcome.RETRY, delay=retry_delay(number))

    def finish(
        self,
        eid: str,
        state: State,
        *,
        error: str | None = None,
        detail: str | None = None,
        held: Lease | None = None,
    ) -> Disposition:
        """Record the outcome. While this worker holds the execution (`held` active: the
        heartbeat renews its lease), a failed write is retried here: handing the delivery back
        would let the lease lapse and the action that already ran be taken over and run again.
        Only the loss of the lease (or a stop) ends the retries."""
        if held is not None:
            held.finishing = True
        while True:
            try:
                finished = self.ledger.finish(
                    eid, self.worker_id, state, now=self.clock(), error=error, detail=detail
                )
                break
            except Exception:
                if held is None or not held.active:
                    # Nacked: the redelivery finds the lease lapsed, takes over and tries again.
                    log.exception("could not record the outcome; the delivery will be retried")
                    return store_unavailable()
                log.exception(
                    "could not record the outcome; retrying while the lease is held",
                    retry_in_s=FINISH_RETRY_DELAY.total_seconds(),
                )
                time.sleep(FINISH_RETRY_DELAY.total_seconds())
        if not finished:
            log.warning("outcome not recorded: another worker took the fire over", state=str(state))
            return Disposition(ack=True, outcome=Outcome.LOST)
        return Disposition(ack=True, outcome=Outcome(state.value))
