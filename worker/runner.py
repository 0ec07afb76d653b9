"""Assembles and runs one worker process: settings -> Firestore -> ledger -> actions -> pipeline
-> Pub/Sub transport, with the health server beside it, until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import cast

from scheduler import gcp, logs
from scheduler.cli_base import stop_on_signals
from scheduler.config import Settings
from scheduler.logs import get_logger
from worker.action import ActionRegistry
from worker.actions import builtin_handlers
from worker.audit import start_audit
from worker.dependencies import DependencyHealth, MonitoredActions, MonitoredLedger
from worker.events import EventLog, WorkerStarting
from worker.firestore_lapsed import FirestoreLapsedClaims
from worker.firestore_ledger import FirestoreLedger
from worker.health import HealthServer
from worker.ledger import Ledger
from worker.metrics import WorkerMetrics
from worker.pipeline import IN_PROCESS_RETRY_BUDGET, Pipeline, make_worker_id
from worker.pubsub_transport import PubSubTransport
from worker.reaper import Reaper
from worker.run_options import RunOptions

log = get_logger(__name__)

# The reaper sweeps this many times per lease: a dead worker's claim is taken over at most a
# lease plus a quarter of it after its last renewal (the README's failure model).
REAP_SWEEPS_PER_LEASE = 4
# Why the claims still held when the worker leaves are released.
ABANDONED = "worker stopped before the action finished"


def run_worker(settings: Settings, options: RunOptions,
               listening: Callable[[int], None] | None = None) -> int:
    """Run the pool until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop).
    `listening` is told the health server's port once it serves.

    If actions are still running when the grace period ends, their claims are released and
    their messages nacked, and the process exits at once rather than waiting for them."""
    settings.require("project", "subscription")
    worker_id = make_worker_id()
    metrics = WorkerMetrics()
    client = gcp.firestore_client(settings)
    store = FirestoreLedger.from_settings(settings, client)
    # Every lease is measured in Firestore's time, never this machine's (`worker.server_clock`).
    clock = store.clock.now
    clock()  # measures the offset to the server's time now, before the first claim needs it
    health_of = DependencyHealth(metrics)
    ledger = cast(Ledger, MonitoredLedger(store, health_of))
    actions = MonitoredActions(ActionRegistry(builtin_handlers(settings, metrics)), health_of)
    pipeline = Pipeline(ledger, actions, worker_id=worker_id, signing_key=settings.signing_key,
                        lease=options.lease, metrics=metrics, clock=clock,
                        trace_project=settings.project, retry_budget=IN_PROCESS_RETRY_BUDGET)
    transport = _transport(settings, options, pipeline)
    health_of.pubsub_ready = lambda: transport.ready
    with stop_on_signals(log) as stop:
        health = HealthServer(
            options.health_port, ready=health_of.readiness, registry=metrics.registry,
            host=options.health_host,
        ).start()
        if listening is not None:
            listening(health.port)
        reaper = Reaper(
            FirestoreLapsedClaims(client, settings.collection_prefix or "scion_"),
            lambda delivery: pipeline.handle(delivery, stop), clock=clock,
            interval=options.lease / REAP_SWEEPS_PER_LEASE, grace=options.lease,
            worker_id=worker_id,
        )
        reaper.start(stop)
        start_audit(settings, client, store, metrics, worker_id, stop, pipeline.start_lag)
        EventLog(log)(WorkerStarting(
            worker_id=worker_id, subscription=settings.subscription_path,
            health_port=health.port, executors=options.executors,
            max_messages=options.max_messages, lease_s=options.lease.total_seconds(),
            grace_period_s=options.grace_period.total_seconds()))
        try:
            transport.run(lambda delivery: pipeline.handle(delivery, stop), stop)
        finally:
            health.stop()
        return _wind_down(worker_id, options, pipeline, transport, reaper)


def _transport(settings: Settings, options: RunOptions, pipeline: Pipeline) -> PubSubTransport:
    return PubSubTransport(
        gcp.subscriber_client(settings), settings.subscription_path,
        max_messages=options.max_messages, max_bytes=options.max_bytes,
        executors=options.executors, max_lease_duration=options.max_lease_duration,
        max_lease_extension=options.max_lease_extension, grace_period=options.grace_period,
        before_abandon=lambda: pipeline.release_running(ABANDONED),
    )


def _wind_down(worker_id: str, options: RunOptions, pipeline: Pipeline,
               transport: PubSubTransport, reaper: Reaper) -> int:
    """After the transport stopped: give the reaper's takeovers the grace period too, then
    release what still runs and leave at once if anything does."""
    reaped = reaper.wait_idle(options.grace_period.total_seconds())
    if not reaped:
        pipeline.release_running(ABANDONED)
    log.info("worker stopped", worker_id=worker_id, abandoned=transport.abandoned,
             reaper_abandoned=reaper.busy)
    if transport.abandoned or not reaped:
        # The abandoned actions' threads would hold the interpreter open until they end; their
        # claims are released and their messages handed back, so nothing is lost by leaving now.
        logs.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
