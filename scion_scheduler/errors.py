"""The base of the exceptions `scion_scheduler/` (the CLI, the HTTP API, the local stack) raises
on purpose (`ScionSchedulerError`). docs/architecture.md lists the hierarchy."""

from __future__ import annotations


class ScionSchedulerError(Exception):
    """Base of every exception `scion_scheduler/` raises on purpose."""
