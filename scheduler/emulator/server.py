"""`CloudSchedulerEmulator`: the gRPC server, the REST server (when asked for), the firing
clock and the state file, together.

    with CloudSchedulerEmulator(pubsub_host="127.0.0.1:8085", rest_port=0) as emu:
        os.environ["CLOUD_SCHEDULER_EMULATOR_HOST"] = emu.host
        ...  # the official client, built by scheduler.gcp.cloud_scheduler_client
        ...  # gcloud, with api_endpoint_overrides/cloudscheduler set to emu.rest_url

The state file (when given) is loaded at start and rewritten, atomically (temporary file, then
`os.replace`), shortly after every change and at stop. Writes are coalesced so that thousands
of jobs firing every minute do not rewrite the file thousands of times.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import grpc

from scheduler.emulator.firing import FiringClock, Publisher, PubsubPublisher
from scheduler.emulator.http_target import HttpDeliverer
from scheduler.emulator.oidc import JWKS_PATH, TokenIssuer
from scheduler.emulator.rest import RestServer, rest_app
from scheduler.emulator.service import CloudSchedulerService, fault_plan
from scheduler.emulator.store import JobStore
from scheduler.errors import SchedulerError
from scheduler.logs import get_logger

log = get_logger(__name__)

SAVE_DELAY = 0.2


class EmulatorError(SchedulerError, RuntimeError):
    """The emulator could not start (port taken, unreadable state file); the message says why."""


class CloudSchedulerEmulator:
    """A Cloud Scheduler emulator on 127.0.0.1:`port` (gRPC; 0: a free port) and, when
    `rest_port` is given, 127.0.0.1:`rest_port` (REST; 0: a free port), both over one store. It
    publishes fires to the Pub/Sub emulator at `pubsub_host` (None: PUBSUB_EMULATOR_HOST), calls
    HTTP targets, and keeps its jobs in `state_file` when one is given. `locations` replaces the
    Cloud Scheduler regions it accepts (default `scheduler.emulator.store.LOCATIONS`), for a
    region newer than that list."""

    def __init__(self, port: int = 0, pubsub_host: str | None = None,
                 state_file: str | os.PathLike[str] | None = None,
                 publisher: Publisher | None = None, locations: Iterable[str] | None = None,
                 rest_port: int | None = None) -> None:
        self.port = port
        self.rest_port = rest_port
        self.pubsub_host = pubsub_host
        self.state_file = Path(state_file) if state_file is not None else None
        self.store = JobStore() if locations is None else JobStore(locations=frozenset(locations))
        self.publisher: Publisher = publisher or PubsubPublisher(pubsub_host)
        self.issuer = TokenIssuer()
        self.http = HttpDeliverer(self.issuer)
        self.clock = FiringClock(self.store, self.publisher, self.http)
        self.service = CloudSchedulerService(self.store, self.clock.dispatch)
        self._server: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._saver: threading.Thread | None = None
        self._stopping = threading.Event()
        self._saved_version = -1

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the value for CLOUD_SCHEDULER_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str | None:
        """`http://127.0.0.1:PORT/`, the value for gcloud's
        `api_endpoint_overrides/cloudscheduler` (None without a REST face)."""
        return f"http://127.0.0.1:{self.rest_port}/" if self._rest is not None else None

    @property
    def jwks_url(self) -> str | None:
        """Where the REST face publishes the key of the OIDC tokens HTTP targets receive."""
        return f"http://127.0.0.1:{self.rest_port}{JWKS_PATH}" if self._rest is not None else None

    def gcloud_config(self) -> list[str]:
        """The two commands that point gcloud at the REST face (none without one)."""
        if self.rest_url is None:
            return []
        return [f"gcloud config set api_endpoint_overrides/cloudscheduler {self.rest_url}",
                "gcloud config set auth/disable_credentials true"]

    @property
    def call_counts(self) -> Counter[str]:
        """Calls received per RPC method name (e.g. "CreateJob"), failed ones included."""
        return self.service.call_counts

    def set_faults(self, rate: float, codes: Iterable[str] = ("UNAVAILABLE",),
                   methods: Iterable[str] | None = None, seed: int | None = None) -> None:
        """Fail `rate` (0..1) of the calls to `methods` (RPC names; all when None) with one of
        `codes` (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED), drawn from a generator
        seeded with `seed`."""
        self.service.set_faults(fault_plan(rate, codes, methods), seed)

    def clear_faults(self) -> None:
        """Stop injecting faults."""
        self.service.set_faults(None)

    def drop_publishes(self, job_ids: Iterable[str]) -> None:
        """Fail every publish attempt of these jobs (PERMISSION_DENIED, retries included), as
        Cloud Scheduler does when it loses the topic; an empty set publishes again."""
        self.clock.dropped = frozenset(job_ids)

    def start(self) -> CloudSchedulerEmulator:
        """Load the state file, bind, start serving and firing; returns self."""
        if self.state_file is not None and self.state_file.exists():
            try:
                count = self.store.load(json.loads(self.state_file.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise EmulatorError(
                    f"state file {self.state_file}: cannot be loaded: {exc}"
                ) from exc
            log.info("state loaded", state_file=str(self.state_file), jobs=count)
        self._saved_version = self.store.version
        # so_reuseport off: a second emulator on a taken port must fail, not share it.
        server = grpc.server(
            ThreadPoolExecutor(max_workers=8, thread_name_prefix="cs-emulator-rpc"),
            options=[("grpc.so_reuseport", 0)],
        )
        server.add_generic_rpc_handlers(self.service.generic_handlers())
        try:
            bound = server.add_insecure_port(f"127.0.0.1:{self.port}")
        except RuntimeError as exc:
            raise EmulatorError(f"cannot listen on 127.0.0.1:{self.port}: {exc}") from exc
        if bound == 0:
            raise EmulatorError(f"cannot listen on 127.0.0.1:{self.port}")
        self.port = bound
        if self.rest_port is not None:
            self.issuer.start()
            try:
                self._rest = RestServer(rest_app(self.service, self.issuer), self.rest_port)
            except OSError as exc:
                server.stop(None)
                raise EmulatorError(f"cannot listen on 127.0.0.1:{self.rest_port}: {exc}") from exc
            self.rest_port = self._rest.port
        self.store.listener = self.clock.schedule
        self.clock.start()
        server.start()
        self._server = server
        if self._rest is not None:
            self._rest.start()
        if self.state_file is not None:
            self._saver = threading.Thread(
                target=self._save_loop, name="cs-emulator-save", daemon=True
            )
            self._saver.start()
        log.info(
            "cloud scheduler emulator started",
            host=self.host,
            rest_url=self.rest_url,
            jwks_url=self.jwks_url,
            pubsub_host=self.pubsub_host,
            state_file=str(self.state_file) if self.state_file else None,
            jobs=len(self.store.names()),
        )
        return self

    def stop(self) -> None:
        """Stop serving and firing, and write the state file one last time."""
        server, self._server = self._server, None
        if server is None:
            return
        rest, self._rest = self._rest, None
        if rest is not None:
            rest.stop()
        server.stop(grace=1).wait(5)
        self.clock.stop()
        self.http.close()
        self.store.listener = None
        self._stopping.set()
        if self._saver is not None:
            self._saver.join(timeout=5)
        # Close the publisher first: it flushes what is batched, and those results belong in
        # the state file.
        self.publisher.close()
        self.save()
        log.info("cloud scheduler emulator stopped", host=self.host)

    def save(self) -> None:
        """Write the state file now if anything changed since the last write."""
        if self.state_file is None:
            return
        version = self.store.version
        if version == self._saved_version:
            return
        write_atomically(self.state_file, json.dumps(self.store.snapshot(), indent=1))
        self._saved_version = version

    def _save_loop(self) -> None:
        while not self._stopping.wait(SAVE_DELAY):
            try:
                self.save()
            except OSError:
                log.exception("writing the state file failed", state_file=str(self.state_file))

    def __enter__(self) -> CloudSchedulerEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
