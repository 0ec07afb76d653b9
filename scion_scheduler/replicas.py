"""The replicas of `scion-scheduler up`: `scion-worker run` processes, each in its own session,
their log lines fed to the account and copied to a file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from scion_scheduler.google_emulators import free_port
from scion_scheduler.narration import Account

WORKER_GRACE_SECONDS = 5


class Replica:
    """One `scion-worker run` process in its own session, its log lines fed to the account
    and copied to a file."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path, account: Account) -> None:
        self.name = name
        self.health_port = free_port()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                worker_command(),
                "run",
                "--health-port",
                str(self.health_port),
                "--grace-period",
                str(WORKER_GRACE_SECONDS),
            ],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read, args=(account,), name=f"{name}-log", daemon=True
        )
        self._reader.start()

    def _read(self, account: Account) -> None:
        assert self.process.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as copy:
            for raw in _lines(self.process.stdout):
                copy.write(raw + "\n")
                copy.flush()
                account.worker_line(self.name, raw)

    def ready(self) -> bool:
        """`/readyz` answers 200."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
            ) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def terminate(self) -> None:
        """SIGTERM: the worker stops pulling and lets running actions finish."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def reap(self) -> None:
        """Wait for the drain, then SIGKILL the whole session, whatever lingers in it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=WORKER_GRACE_SECONDS + 10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def stop_replicas(replicas: list[Replica]) -> None:
    """Stop every replica: all drain at once, so stopping takes one grace period, not one each."""
    for replica in replicas:
        replica.terminate()
    for replica in replicas:
        replica.reap()


def _lines(stream: IO[bytes]) -> Iterator[str]:
    for raw in iter(stream.readline, b""):
        yield raw.decode("utf-8", errors="replace").rstrip("\n")


def worker_command() -> str:
    """`scion-worker` next to this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / "scion-worker"
    return str(beside) if beside.exists() else (shutil.which("scion-worker") or "scion-worker")
