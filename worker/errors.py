"""The base of the exceptions `worker/` raises on purpose (`WorkerError`): a failed action, a
refused egress, a contended ledger write. docs/architecture.md lists the hierarchy."""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every exception `worker/` raises on purpose."""
