"""How `bench_worker.py` measures a phase: settled messages counted against the clock, and the
CPU of this process and of each emulator over the same span."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from proc_cpu import group_cpu_seconds


class CpuMeter:
    """CPU seconds of this process and of each emulator's process group over one phase: on a
    machine with few cores the emulators compete with the worker for the same CPUs."""

    def __init__(self, emulators: dict[str, int]) -> None:
        self.emulators = emulators

    def sample(self) -> dict[str, float]:
        times = os.times()
        sample = {"python": times.user + times.system}
        sample.update({name: group_cpu_seconds(pgid) for name, pgid in self.emulators.items()})
        return sample


CPU_METER: list[CpuMeter] = []


@dataclass
class Result:
    """One measured phase."""

    name: str
    messages: int
    seconds: float
    fires: int | None = None
    deferred: int = 0
    cpu: dict[str, float] | None = None

    @property
    def cpu_ms_per_message(self) -> str:
        """CPU milliseconds per message by process, e.g. `python 1.2, firestore 2.0`."""
        if not self.cpu:
            return ""
        return ", ".join(
            f"{name} {seconds / self.messages * 1000:.2f}" for name, seconds in self.cpu.items()
        )

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def fire_rate(self) -> float | None:
        return None if self.fires is None else self.fires / self.seconds


class Counter:
    """Counts settled messages; `wait` blocks until `target` or a timeout."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.cpu_first: dict[str, float] | None = None
        self.cpu_used: dict[str, float] | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self) -> None:
        with self._lock:
            if self.first is None:
                self.first = time.perf_counter()
                self.cpu_first = CPU_METER[0].sample() if CPU_METER else None

    def add(self) -> None:
        with self._lock:
            self.count += 1
            self.last = time.perf_counter()
            if self.count >= self.target:
                if CPU_METER and self.cpu_first is not None:
                    now = CPU_METER[0].sample()
                    self.cpu_used = {name: now[name] - self.cpu_first[name] for name in now}
                self._done.set()

    def wait(self, timeout: float) -> float:
        if not self._done.wait(timeout):
            raise SystemExit(f"timed out: {self.count} of {self.target} messages settled")
        assert self.first is not None
        return self.last - self.first



def median(results: list[Result]) -> Result:
    """The round with the median rate (the upper one of an even count): a whole round, so that
    its rate and CPU figures belong together."""
    return sorted(results, key=lambda result: result.rate)[len(results) // 2]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
