"""Start and stop Google's Pub/Sub and Firestore emulators (shipped with the gcloud CLI); not
this project's own Cloud Scheduler emulator, which is `scheduler.emulator`.

Used by the local stack and by the test fixtures. Each emulator runs in its own process group:
`gcloud` starts a Java child, and only killing the whole group leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from scion_scheduler.errors import ScionSchedulerError

COMMANDS = {
    "pubsub": ["gcloud", "beta", "emulators", "pubsub", "start"],
    "firestore": ["gcloud", "emulators", "firestore", "start"],
}
ENV_VARS = {"pubsub": "PUBSUB_EMULATOR_HOST", "firestore": "FIRESTORE_EMULATOR_HOST"}


class EmulatorError(ScionSchedulerError, RuntimeError):
    """An emulator could not be started; the message says what is missing."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_prerequisites() -> None:
    """Fail with a clear message when gcloud or Java is missing."""
    if shutil.which("gcloud") is None:
        raise EmulatorError(
            "gcloud is not on PATH: install the Google Cloud CLI with the pubsub-emulator and "
            "cloud-firestore-emulator components (gcloud components install ...)"
        )
    if shutil.which("java") is None:
        raise EmulatorError("java is not on PATH: the Pub/Sub and Firestore emulators need a "
                            "Java 11+ runtime")


def wait_until_answers(host: str, timeout: float = 60.0,
                       process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `http://host/` until it answers HTTP 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmulatorError(f"emulator on {host} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise EmulatorError(f"emulator on {host} did not answer within {timeout:.0f}s")


@dataclass
class Emulator:
    """One running emulator; `host` is its `127.0.0.1:port`."""

    kind: str
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """`host:port` for the `*_EMULATOR_HOST` variable."""
        return f"127.0.0.1:{self.port}"

    @property
    def env_var(self) -> str:
        """The standard variable that points client libraries at this emulator."""
        return ENV_VARS[self.kind]

    def start(self, timeout: float = 60.0) -> Emulator:
        """Start the emulator and wait until it answers."""
        check_prerequisites()
        args = [*COMMANDS[self.kind], f"--host-port={self.host}"]
        if self.kind == "firestore":
            args.append("--quiet")
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True
        )
        try:
            wait_until_answers(self.host, timeout, self.process)
        except EmulatorError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the emulator and every process it started."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        # gcloud may exit before its Java child; the group outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def reuse_or_start(resources: contextlib.ExitStack, kind: str) -> str:
    """The `host:port` of the `kind` emulator named by its variable (`ENV_VARS`), or of one
    started now, closed with `resources` and exported for what this process starts."""
    return reuse_or_start_emulator(resources, kind)[0]


def reuse_or_start_emulator(resources: contextlib.ExitStack,
                            kind: str) -> tuple[str, Emulator | None]:
    """`reuse_or_start`, and the emulator when it was started now (None: a shared one), for a
    benchmark that counts the CPU of its own emulators."""
    variable = ENV_VARS[kind]
    if os.environ.get(variable):
        return os.environ[variable], None
    emulator = resources.enter_context(Emulator(kind))
    os.environ[variable] = emulator.host
    return emulator.host, emulator
