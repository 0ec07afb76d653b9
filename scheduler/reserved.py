"""The schedule IDs and the action type reserved for tick mode's own fires (`scheduler.ticks`)."""

from __future__ import annotations

# Not printable, so never the ID of a user's or the hub's schedule (`scheduler.validation`
# refuses those), like the audit's "\tscion-audit".
TICK_SCHEDULE_ID = "\tscion-tick"
# The action type of the tick and of its shards; registered only in tick mode, and never a
# user schedule's (`scheduler.validation` knows only the entry-point action types).
TICK_ACTION_TYPE = "tick"
# A shard's schedule ID: the tick's, this, and the first document of the shard.
SHARD_INFIX = " shard "


def is_tick_schedule(schedule_id: str) -> bool:
    """Whether a fire's schedule ID is the tick's or one of its shards'."""
    return schedule_id == TICK_SCHEDULE_ID or schedule_id.startswith(
        TICK_SCHEDULE_ID + SHARD_INFIX)
