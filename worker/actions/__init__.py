"""Built-in action types, and how any action type is registered.

The `tick` action (`worker.actions.tick`) is built in too, but only in tick mode, and is no
entry point: no schedule can name it (`scheduler.validation` knows only the entry points).

An action type is a name in the entry-point group `scion_scheduler.actions`; the built-in `http`
is registered the same way, in this project's pyproject.toml:

    [project.entry-points."scion_scheduler.actions"]
    http = "worker.actions.http:HttpAction"

A third-party package registers its own type in its own packaging metadata, e.g.
`notify = "my_package.actions:NotifyAction"`, and is installed beside this one. The entry point
names a class (or factory) callable without arguments; each worker calls it once and then
calls the resulting handler with a `worker.action.ActionContext` for every fire it runs. The
handler returns None (success) or a `worker.action.ActionResult`, or raises
`worker.action.ActionError` (`retryable=` decides between redelivery and failure); any other
exception is a retryable failure. Handlers run on several threads at once and must be
thread-safe.

Schedules are validated against the registered names (`scheduler.validation
.registered_action_types`), and a fire message only ever names a type: it can never name code
to import. Tests and embedders can bypass the entry points with
`worker.action.ActionRegistry({"name": handler})`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.config import Settings
    from worker.action import ActionHandler
    from worker.metrics import WorkerMetrics


def builtin_handlers(settings: Settings,
                     metrics: WorkerMetrics | None = None) -> dict[str, ActionHandler]:
    """The built-in action types, configured from a process's resolved settings (flags
    included, not only the environment the entry points would read): the egress policy and
    the hub settings. Other types still load from their entry points. `metrics`: the worker's,
    where the tick counts the slots it records missed."""
    from worker.actions.http import HttpAction
    from worker.actions.scion import ScionAction

    handlers: dict[str, ActionHandler] = {"http": HttpAction(egress=settings.allowed_targets),
                                          "scion": ScionAction(settings=settings)}
    if ticks_mode(settings):
        from scheduler.reserved import TICK_ACTION_TYPE
        from worker.actions.tick import TickAction

        handlers[TICK_ACTION_TYPE] = TickAction(settings, metrics=metrics)
    return handlers


def ticks_mode(settings: Settings) -> bool:
    """Whether the deployment runs in tick mode (`SCION_SCHEDULER_MODE=ticks`): only then is
    the `tick` action registered, so a tick message elsewhere is rejected as an unknown type."""
    from scheduler.config import Mode

    return settings.mode is Mode.TICKS
