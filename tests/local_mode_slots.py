"""Slots, time limits and settings shared by the local mode (single-instance fallback) tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.config import Settings
from scheduler.egress import EgressPolicy

ROOT = Path(__file__).resolve().parent.parent
# Slots of `* * * * *` in the future, so that the ledger's purge (expiry after 30 days of the
# fire time) never meets them.
S1 = datetime(2031, 1, 6, 10, 0, tzinfo=UTC)
S2, S3 = S1 + timedelta(minutes=1), S1 + timedelta(minutes=2)
TIMEOUT = 60.0  # generous: only an upper bound for a slow, loaded machine
# The targets here listen on loopback, which the egress policy refuses unless named.
LOOPBACK = EgressPolicy.parse("127.0.0.1")


def local_settings() -> Settings:
    """The environment's settings, with the loopback targets named."""
    return Settings.from_env(allowed_targets="127.0.0.1")
