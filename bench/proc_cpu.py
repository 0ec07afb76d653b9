"""CPU time of processes, read from /proc (Linux), for the benchmarks that say where a phase's
CPU went."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path


def _stat(path: Path) -> list[str]:
    """The fields of a /proc/PID/stat after the command name: state, ppid, pgrp, ...,
    utime (12th), stime (13th)."""
    return path.read_text().rsplit(")", 1)[1].split()


def _every_stat() -> Iterator[tuple[int, list[str]]]:
    """Each live process's ID and `_stat` fields (those that exit meanwhile are left out)."""
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(entry.parent.name), _stat(entry)
        except OSError:
            continue


def _cpu_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group, from
    /proc (Linux); 0 where /proc is missing."""
    total = sum(_cpu_ticks(fields) for _, fields in _every_stat() if int(fields[2]) == pgid)
    return total / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | str = "self") -> float:
    """CPU seconds (user + system, every thread) used so far by one process, from /proc."""
    return _cpu_ticks(_stat(Path(f"/proc/{pid}/stat"))) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process descended from it (a worker replica's processes), from
    /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for child, fields in _every_stat():
        children.setdefault(int(fields[1]), []).append(child)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def tree_sum(pid: int, read: Callable[[int], float]) -> float:
    """`read` of `pid` and of each of its live descendants (`process_tree`), summed; one that
    exits or turns zombie meanwhile (its file gone, or without the field) is left out."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += read(member)
        except (OSError, ValueError):
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by `pid` and its live descendants."""
    return tree_sum(pid, process_cpu_seconds)


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (all CPUs: the non-idle
    columns of /proc/stat's `cpu` line)."""
    columns = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    busy = sum(columns[:3]) + sum(columns[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The 1-minute load average, as /proc/loadavg writes it."""
    return Path("/proc/loadavg").read_text().split()[0]


# A process's CPU reader, or None for one this run does not count (a shared emulator: other
# runs' work is in its CPU too).
Reader = Callable[[], float] | None


class CpuAccount:
    """The CPU seconds each named process used over a span (`start` to `stop`), what they imply
    per fire, and the floor they put under the span on this machine."""

    def __init__(self, readers: Mapping[str, Reader]) -> None:
        self._readers = dict(readers)
        self._first: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._wall = 0.0
        self._load = ("", "")

    def _sample(self) -> dict[str, float]:
        sample = {name: read() for name, read in self._readers.items() if read is not None}
        sample["machine"] = machine_busy_seconds()
        return sample

    def start(self) -> None:
        """The span begins."""
        self._load = (load_average(), "")
        self._wall = time.monotonic()
        self._first = self._sample()

    def stop(self) -> None:
        """The span ends."""
        now = self._sample()
        self._wall = time.monotonic() - self._wall
        self._load = (self._load[0], load_average())
        self._used = {name: now[name] - self._first[name] for name in now}

    def lines(self, fires: int, what: str) -> list[str]:
        """The report: CPU seconds and ms per fire of each process, and the floors."""
        cpus = os.cpu_count() or 1
        counted = {name: s for name, s in self._used.items() if name != "machine"}
        total = sum(counted.values())
        lines = [f"  CPU over {what}, {self._wall:.1f} s (/proc; load average "
                 f"{self._load[0]} before, {self._load[1]} after):"]
        for name, read in self._readers.items():
            if read is None:
                lines.append(f"    {name:<22} shared, not counted")
            else:
                lines.append(f"    {name:<22} {counted[name]:7.1f} s  "
                             f"{counted[name] / fires * 1000:6.2f} ms/fire")
        others = self._used["machine"] - total
        lines += [
            f"    {'counted':<22} {total:7.1f} s  {total / fires * 1000:6.2f} ms/fire",
            f"    {'every other process':<22} {others:7.1f} s  (the machine: "
            f"{self._used['machine']:.1f} of {self._wall * cpus:.1f} CPU-s)",
            f"  floor on this machine: {total / cpus:.1f} s (counted CPU / {cpus} CPUs); "
            f"the worker's own CPU: {counted.get('worker', 0.0):.1f} s",
        ]
        return lines
