"""CPU time of processes, read from /proc (Linux), for the benchmarks that say where a phase's
CPU went."""

from __future__ import annotations

import os
from pathlib import Path


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group, from
    /proc (Linux); 0 where /proc is missing."""
    total = 0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ..., utime (12th), stime (13th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks
