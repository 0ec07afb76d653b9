"""The worker's Prometheus metrics, in a registry of their own.

Each `WorkerMetrics` owns a `CollectorRegistry` (not the process-global default), so several
pipelines in one process, as in tests, never collide on metric names; the health server
renders `metrics.registry` with `prometheus_client.generate_latest`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Claims are one or two Firestore round trips; actions and lag span milliseconds to minutes.
_CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                     300.0, 900.0, 1800.0)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class WorkerMetrics:
    """Counters and histograms of one worker pool.

    * `fires_received` (label `trigger`: scheduled, manual, or unknown for undecodable messages)
      counts every delivery handed to the pipeline;
    * `duplicates_suppressed` counts deliveries of fires that had already finished;
    * `executions` (label `outcome`) counts every delivery by the pipeline's outcome
      (`Disposition.outcome`: succeeded, failed, duplicate, busy, skipped, missed, ...), and as
      `missed` the slots tick mode's tick records missed without a delivery (where jobs mode
      delivers their late fires);
    * `claim_latency`, `action_duration` and `fire_to_start_lag` are in seconds; the lag runs
      from the fire time to the first start of its action;
    * `audit_slots` (label `result`: audited, recovered, missed) counts the slots the audit
      checked, those it fired again and those it recorded `missed` (`worker.audit`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.fires_received = Counter(
            "scion_worker_fires_received", "Fire deliveries received, by trigger.",
            ["trigger"], registry=self.registry,
        )
        self.duplicates_suppressed = Counter(
            "scion_worker_duplicates_suppressed",
            "Deliveries of fires that had already finished, acknowledged without running.",
            registry=self.registry,
        )
        self.executions = Counter(
            "scion_worker_executions",
            "Deliveries handled, by outcome (and slots the tick recorded missed).",
            ["outcome"], registry=self.registry,
        )
        self.claim_latency = Histogram(
            "scion_worker_claim_latency_seconds", "Time to claim a fire in the ledger.",
            buckets=_CLAIM_BUCKETS, registry=self.registry,
        )
        self.action_duration = Histogram(
            "scion_worker_action_duration_seconds", "Time an action ran.",
            buckets=_DURATION_BUCKETS, registry=self.registry,
        )
        self.fire_to_start_lag = Histogram(
            "scion_worker_fire_to_start_lag_seconds",
            "From a fire's time to the first start of its action.",
            buckets=_LAG_BUCKETS, registry=self.registry,
        )
        self.audit_slots = Counter(
            "scion_worker_audit_slots", "Owed slots the audit checked, by result: audited (all), "
            "recovered (fired again), missed (recorded missed).", ["result"],
            registry=self.registry,
        )
