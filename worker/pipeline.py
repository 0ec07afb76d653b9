"""The pipeline: what happens to one delivery, whatever transport brought it and whatever store
keeps the ledger.

    receive -> decode and verify -> derive the fire time -> policy checks -> claim -> hold a
    one-shot until its `at` -> run the action (the lease renewed by a heartbeat) -> record the
    outcome -> a `Disposition`

Every step is a small method on one value, the fire's `worker.attempt.Attempt`;
`Pipeline.handle` reads top to bottom as the policy. The leases held while actions run are
`worker.leases`, and recording what became of an action is `worker.finishing`. The
transport turns the `Disposition` into an ack or a nack (with a delay where it can), and never
has to know why. `handle` never raises: a message that cannot be handled is logged with its
reason and disposed of (see `Pipeline._reject`), and a store that fails is retried through
redelivery.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from scheduler.clock import utc_now
from scheduler.contract import (
    ATTR_SCHEDULE_ID,
    ATTR_TRIGGER,
    TRIGGERS,
    ContractError,
    decode_message,
)
from scheduler.cron import DEFAULT_SKEW
from scheduler.logs import bound, get_logger
from scheduler.model import format_instant
from worker.action import ActionRegistry, ActionResult
from worker.attempt import Attempt
from worker.events import ActionStarting, Busy, Duplicate, EventLog, Missed, Rejected, Skipped
from worker.finishing import Finisher, store_unavailable
from worker.leases import LeaseKeeper
from worker.ledger import (
    DEFAULT_RETENTION,
    Claim,
    ClaimResult,
    Execution,
    Ledger,
    State,
)
from worker.metrics import WorkerMetrics
from worker.start_lag import StartLag
from worker.transport import Delivery, Disposition, Outcome

log = get_logger(__name__)
report = EventLog(log)

# Never ask for a redelivery sooner than this: a lease about to lapse is still live for a moment.
MIN_BUSY_DELAY = timedelta(seconds=1)
# Pub/Sub's longest ack deadline, the longest a nack can delay a redelivery.
MAX_BUSY_DELAY = timedelta(seconds=600)
# The claim lease: a dead worker's fire is taken over within it plus one reaper interval (the
# README's failure model has the whole budget). Renewed every third of it while an action runs.
DEFAULT_LEASE = timedelta(seconds=12)
# How long one delivery may wait in this worker for its retries and for the store to come back,
# in total, before it is handed back to Pub/Sub (with a delay) instead.
IN_PROCESS_RETRY_BUDGET = timedelta(seconds=120)
# Pub/Sub's OpenTelemetry propagation stores the W3C `traceparent` under this attribute.
TRACEPARENT_ATTRIBUTE = "googclient_traceparent"


def _wait(delay: timedelta, stopping: threading.Event | None) -> bool:
    """Sleep `delay`; False when `stopping` was set meanwhile."""
    if stopping is None:
        time.sleep(delay.total_seconds())
        return True
    return not stopping.wait(delay.total_seconds())


def wait_on(event: threading.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; True when it was set (the pipeline's waiting seam)."""
    return event.wait(seconds)


def make_worker_id() -> str:
    """A worker ID unique across replicas and restarts: `{hostname}-{pid}-{4 random hex}`."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Pipeline:
    """Handles deliveries; thread-safe, one instance per worker process.

    `retry_budget`: how long one delivery may wait in this worker for retries of its action
    and for the store to come back (`IN_PROCESS_RETRY_BUDGET` in `scion-worker`); zero hands
    every retry back to the transport at once."""

    def __init__(
        self,
        ledger: Ledger,
        actions: ActionRegistry,
        *,
        worker_id: str,
        signing_key: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
        skew: timedelta = DEFAULT_SKEW,
        retention: timedelta = DEFAULT_RETENTION,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        trace_project: str | None = None,
        retry_budget: timedelta = timedelta(0),
        wait: Callable[[threading.Event, float], bool] = wait_on,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive (got {lease})")
        self.ledger = ledger
        self.actions = actions
        self.worker_id = worker_id
        self.lease = lease
        self.skew = skew
        self.retention = retention
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.clock = clock
        self._wait = wait
        self._signing_key = signing_key
        self._trace_project = trace_project
        self.retry_budget = retry_budget
        self.leases = LeaseKeeper(ledger, worker_id=worker_id, lease=lease, clock=clock)
        self.finisher = Finisher(ledger, worker_id=worker_id, clock=clock)
        # How late fires start here: the audit's sign of a backlog (`worker.start_lag`).
        self.start_lag = StartLag()
        # Executions a delivery of this process is claiming or running: a second delivery of
        # one waits, since the ledger cannot tell this worker's two claims apart.
        self._handling: set[str] = set()
        self._handling_lock = threading.Lock()

    # The policy, top to bottom.

    def handle(self, delivery: Delivery, stopping: threading.Event | None = None) -> Disposition:
        """Take one delivery through the pipeline and say how to dispose of it. Never raises."""
        trigger = delivery.attributes.get(ATTR_TRIGGER, "")
        self.metrics.fires_received.labels(trigger if trigger in TRIGGERS else "unknown").inc()
        with bound(
            message_id=delivery.message_id, worker_id=self.worker_id, **self._trace(delivery),
        ):
            try:
                disposition = self._handle(delivery, stopping)
            except Exception:
                # Every step handles its own failures; this only keeps a bug from killing
                # the transport's executor. The redelivery tries again.
                log.exception("unexpected error while handling a delivery")
                disposition = store_unavailable()
        self.metrics.executions.labels(disposition.outcome).inc()
        return disposition

    def _handle(self, delivery: Delivery, stopping: threading.Event | None) -> Disposition:
        if stopping is not None and stopping.is_set():
            return self._interrupted()
        try:
            fire = decode_message(delivery.data, delivery.attributes, signing_key=self._signing_key)
            handler = self.actions.get(fire.action.type)
            fire_time = fire.derive_fire_time(delivery.published_at, self.skew)
        except ContractError as exc:
            return self._reject(delivery, f"malformed or unverifiable message: {exc}")
        except KeyError as exc:
            return self._reject(delivery, f"unknown action type: {exc.args[0]}")
        except (
            Exception
        ) as exc:  # a broken plugin or an impossible slot: this message can't run here
            return self._reject(delivery, f"cannot handle message: {type(exc).__name__}: {exc}")
        attempt = Attempt.of(fire, fire_time, delivery, handler, stopping)
        with bound(**attempt.log_fields(), attempt=0):
            return self._handle_fire(attempt)

    def _handle_fire(self, attempt: Attempt) -> Disposition:
        if not attempt.is_due:
            at = attempt.fire.at
            log.info(
                "fire not due: a one-shot runs only at its own time",
                at=format_instant(at) if at else None,
            )
            return Disposition(ack=True, outcome=Outcome.NOT_DUE)
        now = self.clock()
        missed_reason = attempt.missed_reason(now)
        if missed_reason is not None:
            written = self._record_missed(attempt, now, missed_reason)
            if written is None:
                return store_unavailable()
            if written:
                return Disposition(ack=True, outcome=Outcome.MISSED)
            # A record exists already (an earlier attempt started in time): the claim decides.
        eid = attempt.execution_id
        with self._handling_lock:
            duplicate = eid in self._handling
            self._handling.add(eid)
        if duplicate:
            log.info("fire is being handled by this worker already; redelivery later")
            return Disposition(ack=False, outcome=Outcome.BUSY, delay=self.lease)
        try:
            return self._claim_and_run(attempt)
        finally:
            with self._handling_lock:
                self._handling.discard(eid)

    def _claim_and_run(self, attempt: Attempt) -> Disposition:
        if attempt.stopped:
            return self._interrupted()
        waited = timedelta(0)
        claim = self._claim(attempt)
        while True:
            if claim is None:
                disposition = store_unavailable()
            else:
                with bound(attempt=claim.execution.attempt):
                    disposition = self._after_claim(attempt, claim)
            delay = disposition.delay
            if (
                disposition.outcome not in (Outcome.RETRY, Outcome.ERROR)
                or delay is None
                or waited + delay > self.retry_budget
            ):
                return disposition
            waited += delay
            log.info(
                "trying again in this worker",
                outcome=disposition.outcome,
                delay_s=delay.total_seconds(),
            )
            if disposition.outcome is Outcome.ERROR:
                if not _wait(delay, attempt.stopping):
                    return self._interrupted()
                claim = self._claim(attempt)
                continue
            # Take the released fire back at once and hold it through the wait: a duplicate
            # delivery elsewhere then finds it busy instead of spending an attempt of its own.
            claim = self._claim(attempt)
            if claim is None or claim.result not in (ClaimResult.CLAIMED, ClaimResult.TAKEN_OVER):
                continue
            with self.leases.holding(attempt.execution_id) as held:
                if _wait(delay, attempt.stopping):
                    continue
                held.end()
                self.leases.release_quietly(
                    attempt.execution_id, "worker stopping before the retry"
                )
                return self._interrupted()

    def _after_claim(self, attempt: Attempt, claim: Claim) -> Disposition:
        execution = claim.execution
        eid = attempt.execution_id
        max_attempts = attempt.fire.max_attempts
        if claim.result is ClaimResult.DONE:
            self.metrics.duplicates_suppressed.inc()
            report(Duplicate(execution.state))
            return Disposition(ack=True, outcome=Outcome.DUPLICATE)
        if claim.result is ClaimResult.BUSY:
            delay = self._busy_delay(execution)
            report(Busy(holder=execution.worker_id, delay_s=delay.total_seconds()))
            return Disposition(ack=False, outcome=Outcome.BUSY, delay=delay)
        if claim.result is ClaimResult.OVERLAP:
            report(Skipped())
            return Disposition(ack=True, outcome=Outcome.SKIPPED)
        if execution.attempt > max_attempts:
            log.warning("max attempts exhausted before this attempt", max_attempts=max_attempts)
            return self.finisher.finish(eid, State.FAILED, error="max attempts exhausted")
        fresh = self.leases.fresh_lease(eid, execution)
        if fresh is None:
            return store_unavailable()
        if not fresh:
            log.warning("the claim lapsed before the action could start; another worker has it")
            return Disposition(ack=True, outcome=Outcome.LOST)
        if attempt.is_one_shot_slot and not self._hold_until(attempt):
            return self._release_held(eid)
        return self._run(attempt, claim)

    def _run(self, attempt: Attempt, claim: Claim) -> Disposition:
        number = claim.execution.attempt
        if claim.result is ClaimResult.CLAIMED:
            now = self.clock()
            lag = max(now - attempt.fire_time, timedelta(0))
            self.metrics.fire_to_start_lag.observe(lag.total_seconds())
            self.start_lag.observe(lag, now)
        context = attempt.action_context(number)
        report(ActionStarting(action_type=attempt.fire.action.type,
                              taken_over=claim.result is ClaimResult.TAKEN_OVER))
        result: ActionResult | None = None
        error: Exception | None = None
        started = time.monotonic()
        with self.leases.holding(attempt.execution_id) as held:
            try:
                result = attempt.handler(context)
            except (
                Exception
            ) as exc:  # ActionError says whether to retry; anything else is retryable
                error = exc
            self.metrics.action_duration.observe(time.monotonic() - started)
            if error is not None:
                return self.finisher.failed(attempt, number, error, held)
            outcome = result if isinstance(result, ActionResult) else None
            return self.finisher.succeeded(attempt.execution_id, outcome, held)

    # Steps.

    def _hold_until(self, attempt: Attempt) -> bool:
        """Wait for `fire_time` when the fire came early: a one-shot's job fires ahead of its
        `at` (`scheduler.model.one_shot_slot`), and the hub fires it at that very second. Only
        a one-shot's own fire is held: a cron slot published a moment early (within the skew)
        is early only by the clocks' difference, and a manual fire is due when asked for. The
        execution is held meanwhile, so the heartbeat renews its lease (the transport extends
        the message's) and a duplicate delivery finds it busy. False when the worker began to
        stop first."""
        fire_time = attempt.fire_time
        early = fire_time - self.clock()
        if early <= timedelta(0):
            return True
        log.info("holding the fire until its time", hold_s=round(early.total_seconds(), 3))
        stop = attempt.stopping if attempt.stopping is not None else threading.Event()
        with self.leases.holding(attempt.execution_id):
            while (remaining := (fire_time - self.clock()).total_seconds()) > 0:
                if self._wait(stop, remaining):
                    return False
        return True

    def _release_held(self, eid: str) -> Disposition:
        """Hand back a fire held for its time when the worker stops: released (after the
        heartbeat let go of it), so another replica takes it over at once and holds it in turn."""
        self.leases.release_quietly(
            eid,
            "worker stopped while holding the fire for its time",
            failed="could not release the held fire; its lease will lapse",
        )
        return self._interrupted()

    def _record_missed(self, attempt: Attempt, now: datetime, reason: str) -> bool | None:
        """Record a missed fire: True when recorded, False when a record exists already, None
        when the ledger failed."""
        execution = attempt.missed_record(
            worker_id=self.worker_id, now=now, retention=self.retention, reason=reason
        )
        try:
            written = self.ledger.record(execution)
        except Exception:
            log.exception("could not record a missed fire; the delivery will be retried")
            return None
        if written:
            report(Missed(reason))
        return written

    def _claim(self, attempt: Attempt) -> Claim | None:
        request = attempt.claim_request(
            worker_id=self.worker_id, lease=self.lease, now=self.clock(), retention=self.retention
        )
        started = time.monotonic()
        try:
            claim = self.ledger.claim(request)
        except Exception:
            log.exception("claim failed; the delivery will be retried")
            return None
        self.metrics.claim_latency.observe(time.monotonic() - started)
        return claim

    def _busy_delay(self, execution: Execution) -> timedelta:
        """Until the holder's lease lapses (by then it has finished, or the fire can be taken
        over), or, when the reaper can take it over without this delivery (its message is
        kept), as long as the action has run so far: a long action's duplicates then come back
        a few times, not once a lease until the dead-letter policy's attempts run out."""
        now = self.clock()
        if execution.lease_until is None:
            return self.lease
        until_lapse = max(execution.lease_until - now, MIN_BUSY_DELAY)
        if execution.message is None:
            return until_lapse
        running = now - (execution.started_at or execution.created_at)
        return max(until_lapse, min(running, MAX_BUSY_DELAY))

    def _reject(self, delivery: Delivery, reason: str) -> Disposition:
        """A message that can never run here. With a dead-letter policy (Pub/Sub then counts
        delivery attempts) it is nacked until it reaches the dead-letter topic; without one it
        is acked, so that it cannot loop forever."""
        dead_letter = delivery.delivery_attempt is not None
        report(Rejected(reason, delivery.attributes.get(ATTR_SCHEDULE_ID),
                        delivery.delivery_attempt, dead_letter))
        return Disposition(ack=not dead_letter, outcome=Outcome.REJECTED)

    def _interrupted(self) -> Disposition:
        log.info("worker stopping; delivery returned unclaimed")
        return Disposition(ack=False, outcome=Outcome.INTERRUPTED)

    def _trace(self, delivery: Delivery) -> dict[str, Any]:
        """The `trace` log field (Cloud Logging's trace link) from a propagated W3C traceparent."""
        parts = delivery.attributes.get(TRACEPARENT_ATTRIBUTE, "").split("-")
        if len(parts) != 4 or len(parts[1]) != 32:
            return {}
        trace_id = parts[1]
        if self._trace_project:
            return {"trace": f"projects/{self._trace_project}/traces/{trace_id}"}
        return {"trace": trace_id}

    def release_running(self, reason: str) -> list[str]:
        """Release every execution this worker still holds (the transport calls this when the
        shutdown grace period ends), so another replica takes them over at once instead of
        waiting for the lease to lapse. Returns the released execution IDs."""
        return self.leases.release_running(reason)
