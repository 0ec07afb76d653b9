"""What the worker depends on, and whether each answers: for `/readyz` and `/metrics`.

* `pubsub`: the transport's streaming pull is open (the transport says so);
* `ledger`: the last call to the store worked and none has hung for `stall_after`
  (a frozen Firestore does not fail calls, it never answers them);
* `target`: the last action call reached its target (a 5xx, a timeout or a refused
  connection says it did not). A failing target is one schedule's problem, not the worker's:
  it is reported but does not make the worker unready.

The ledger and the actions are watched through adapters (`MonitoredLedger`,
`MonitoredActions`) around the real ones, so the pipeline stays unaware of them.
"""

from __future__ import annotations

import enum
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from worker.action import ActionContext, ActionError, ActionHandler, ActionRegistry, ActionResult
from worker.ledger import Ledger
from worker.metrics import WorkerMetrics

# A store call that has not returned after this long counts as an outage.
DEFAULT_STALL_AFTER_S = 10.0
# A failure not followed by any call for this long is forgotten (nothing says it persists).
DEFAULT_FORGET_AFTER_S = 120.0


class Dependency(enum.StrEnum):
    """A dependency the worker reports on."""

    PUBSUB = "pubsub"
    LEDGER = "ledger"
    TARGET = "target"


# Those whose outage makes the worker unready.
REQUIRED = (Dependency.PUBSUB, Dependency.LEDGER)


@dataclass
class _Failure:
    reason: str
    since: float
    last: float


class DependencyHealth:
    """Up/down per dependency, with the reason; thread-safe. Exposes the gauge
    `scion_worker_dependency_up{dependency}` (1 up, 0 down) in `metrics`' registry."""

    def __init__(
        self, metrics: WorkerMetrics, *, pubsub_ready: Callable[[], bool] | None = None,
        stall_after_s: float = DEFAULT_STALL_AFTER_S,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pubsub_ready = pubsub_ready
        self._stall_after = stall_after_s
        self._forget_after = forget_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[Dependency, _Failure] = {}
        self._calls: dict[int, tuple[Dependency, float]] = {}
        self._ids = itertools.count()
        gauge = Gauge("scion_worker_dependency_up",
                      "1 while a dependency answers, 0 while it fails or hangs.",
                      ["dependency"], registry=metrics.registry)
        for dependency in Dependency:
            gauge.labels(str(dependency)).set_function(functools.partial(self._up, dependency))

    def _up(self, dependency: Dependency) -> float:
        return 0.0 if dependency in self.problems() else 1.0

    def succeeded(self, dependency: Dependency) -> None:
        """A call to `dependency` worked."""
        with self._lock:
            self._failures.pop(dependency, None)

    def failed(self, dependency: Dependency, reason: str) -> None:
        """A call to `dependency` failed because of `reason`."""
        now = self._clock()
        with self._lock:
            failure = self._failures.get(dependency)
            since = failure.since if failure is not None else now
            self._failures[dependency] = _Failure(reason, since, now)

    @contextmanager
    def calling(self, dependency: Dependency) -> Iterator[None]:
        """Watch one call: its exception marks the dependency down (and propagates), its
        return marks it up, and while it runs longer than `stall_after` it counts as hung."""
        key = next(self._ids)
        with self._lock:
            self._calls[key] = (dependency, self._clock())
        try:
            yield
        except Exception as exc:
            self.failed(dependency, f"{type(exc).__name__}: {exc}"[:200])
            raise
        else:
            self.succeeded(dependency)
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def problems(self) -> dict[Dependency, str]:
        """Each failing dependency with why, now."""
        now = self._clock()
        out: dict[Dependency, str] = {}
        if self.pubsub_ready is not None and not self.pubsub_ready():
            out[Dependency.PUBSUB] = "the streaming pull is not connected"
        with self._lock:
            for dependency, failure in list(self._failures.items()):
                if now - failure.last > self._forget_after:
                    del self._failures[dependency]
                    continue
                out[dependency] = f"{failure.reason} (failing for {now - failure.since:.0f}s)"
            for dependency, started in self._calls.values():
                hung = now - started
                if hung > self._stall_after and dependency not in out:
                    out[dependency] = f"a call has not returned for {hung:.0f}s"
        return out

    def readiness(self) -> tuple[bool, str]:
        """Ready (no required dependency failing) and a body naming every problem."""
        problems = self.problems()
        ready = not any(d in problems for d in REQUIRED)
        lines = [("ready" if ready else "not ready")]
        lines += [f"{d}: {reason}" for d, reason in sorted(problems.items())]
        return ready, "\n".join(lines) + "\n"


class MonitoredLedger:
    """A `Ledger` that reports every call's fate to `health` (as `ledger`). Methods beyond
    the protocol pass through the same way."""

    def __init__(self, ledger: Ledger, health: DependencyHealth) -> None:
        self._ledger = ledger
        self._health = health

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._ledger, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._health.calling(Dependency.LEDGER):
                return attribute(*args, **kwargs)
        return call


class MonitoredActions(ActionRegistry):
    """An `ActionRegistry` whose handlers report to `health` (as `target`): a retryable
    failure (5xx, timeout, refused) marks the target down, any return marks it up. A
    non-retryable failure says the target answered, so it counts as up."""

    def __init__(self, registry: ActionRegistry, health: DependencyHealth) -> None:
        super().__init__()
        self._registry = registry
        self._health = health

    def get(self, action_type: str) -> ActionHandler:
        """The registered handler, watched."""
        handler = self._registry.get(action_type)
        health = self._health

        def watched(context: ActionContext) -> ActionResult | None:
            try:
                result = handler(context)
            except ActionError as exc:
                if exc.retryable:
                    health.failed(Dependency.TARGET, f"{context.schedule_id}: {exc}"[:200])
                else:
                    health.succeeded(Dependency.TARGET)
                raise
            except Exception as exc:
                health.failed(Dependency.TARGET, f"{context.schedule_id}: {exc!r}"[:200])
                raise
            health.succeeded(Dependency.TARGET)
            return result
        return watched
