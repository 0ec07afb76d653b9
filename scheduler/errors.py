"""The base of the exceptions `scheduler/` raises on purpose.

Every refusal of this package (a bad setting, a bad schedule, a forged message, a malformed job,
a job that does not exist, the emulator's API errors) derives from `SchedulerError`, so a caller
can tell them from bugs with one `except`; each also keeps the built-in base it always had
(`ValueError`, `LookupError`, `RuntimeError`), so existing handlers still catch it.
docs/architecture.md lists the hierarchy.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of every exception `scheduler/` raises on purpose; its message is for the user."""
