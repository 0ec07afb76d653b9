"""The emulator's clock: one thread, one heap of due times, publishing to Pub/Sub and calling
HTTP targets (`scheduler.emulator.http_target`).

Every ENABLED job has an entry `(schedule_time, generation)` in the heap.
The store bumps a job's generation whenever its due time changes (an update, a pause, a fire, a
retry) and tells the clock, which pushes a fresh entry; an entry whose generation is no longer
the job's is dropped when it comes up. So there is no thread per job and no search: thousands
of jobs cost one heap entry each (plus stale ones, compacted away when they pile up).

Publishing uses google-cloud-pubsub's batching `PublisherClient`, which hands the result to a
callback, so a slow or failing Pub/Sub never holds the clock up. The publish result (message ID,
or the error's gRPC code) lands in the job's `status`; a failure schedules a retry per the
job's `retry_config` (see `JobStore.record`).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
from google.api_core.exceptions import MethodNotImplemented, PermissionDenied

from scheduler.contract import ATTR_SCHEDULE_ID, execution_id
from scheduler.emulator.http_target import HttpAttempt, HttpDeliverer
from scheduler.emulator.store import Execution, JobStore
from scheduler.logs import get_logger
from scheduler.naming import job_id_of

log = get_logger(__name__)

Done = Callable[[str | None, BaseException | None], None]

# Cloud Scheduler ignores attempt_deadline for Pub/Sub targets; this bounds one publish
# (including the client's own retries of transient errors) so a dead Pub/Sub fails the attempt.
PUBLISH_TIMEOUT = 10.0
# The batching client's publish() takes these as keyword arguments, so attributes of these
# names must go through the plain RPC instead.
_RESERVED_ATTRIBUTES = frozenset({"topic", "data", "ordering_key", "retry", "timeout"})
# The clock re-reads the wall clock at least this often, so a clock change is noticed.
_MAX_SLEEP = 1.0


class Publisher(Protocol):
    """Delivers one message and reports (message ID, error) to `done`, from any thread."""

    def publish(
        self, topic: str, data: bytes, attributes: Mapping[str, str], done: Done
    ) -> None: ...

    def close(self) -> None: ...


def status_code_of(error: BaseException) -> int:
    """The google.rpc code for a publish error (UNKNOWN when it carries none)."""
    code = getattr(error, "grpc_status_code", None)
    if isinstance(code, grpc.StatusCode):
        value: int = code.value[0]
        return value
    return grpc.StatusCode.UNKNOWN.value[0]  # type: ignore[no-any-return]


class PubsubPublisher:
    """Publishes with google-cloud-pubsub to `host` (a Pub/Sub emulator) or, when None, wherever
    the environment points the library (PUBSUB_EMULATOR_HOST, else Google Cloud). The client is
    built on first use, so the emulator starts even when Pub/Sub is not there yet."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host
        self._client: Any = None
        self._lock = threading.Lock()
        self._plain = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cs-emulator-publish")

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                import google.cloud.pubsub_v1 as pubsub_v1
                from google.api_core import retry as retries

                kwargs: dict[str, Any] = {}
                if self.host:
                    from google.auth.credentials import AnonymousCredentials
                    from google.pubsub_v1.services.publisher.transports import (
                        PublisherGrpcTransport,
                    )

                    kwargs["transport"] = PublisherGrpcTransport(
                        channel=grpc.insecure_channel(self.host), credentials=AnonymousCredentials()
                    )
                self._client = pubsub_v1.PublisherClient(**kwargs)
                self._retry = retries.Retry(initial=0.1, maximum=2.0, timeout=PUBLISH_TIMEOUT)
            return self._client

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str], done: Done) -> None:
        """Publish; `done` is called once with the message ID or the error."""
        try:
            client = self._get()
        except Exception as exc:  # no credentials, bad host: the attempt fails, the clock goes on
            done(None, exc)
            return
        if _RESERVED_ATTRIBUTES & attributes.keys():
            self._plain.submit(self._publish_plain, client, topic, data, dict(attributes), done)
            return
        try:
            future = client.publish(
                topic, data, retry=self._retry, timeout=PUBLISH_TIMEOUT, **attributes
            )
        except Exception as exc:
            done(None, exc)
            return

        def finished(f: Any) -> None:
            try:
                done(str(f.result()), None)
            except Exception as exc:
                done(None, exc)

        future.add_done_callback(finished)

    def _publish_plain(self, client: Any, topic: str, data: bytes, attributes: dict[str, str],
                       done: Done) -> None:
        from google.pubsub_v1 import PubsubMessage
        from google.pubsub_v1.services.publisher.client import PublisherClient as RpcClient

        try:
            # The batching client subclasses the generated one; this is the generated Publish RPC.
            response = RpcClient.publish(
                client, topic=topic, messages=[PubsubMessage(data=data, attributes=attributes)],
                retry=self._retry, timeout=PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            done(None, exc)
            return
        done(str(response.message_ids[0]), None)

    def close(self) -> None:
        """Send what is batched and release the client."""
        self._plain.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.stop()


class FiringClock:
    """Fires due jobs of `store` from a single thread: Pub/Sub jobs through `publisher`, HTTP
    jobs through `http`."""

    def __init__(self, store: JobStore, publisher: Publisher, http: HttpDeliverer) -> None:
        self.store = store
        self.publisher = publisher
        self.http = http
        self._heap: list[tuple[float, int, str, int]] = []
        self._current: dict[str, int] = {}
        self._seq = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        # Job IDs whose publishes fail (`drop_publishes`), as when the service gives up on a
        # topic it lost permission to: every attempt and retry fails, nothing is published.
        self.dropped: frozenset[str] = frozenset()

    def start(self) -> None:
        """Schedule every job and start the clock thread."""
        for name in self.store.names():
            self.schedule(name)
        self._thread = threading.Thread(target=self._run, name="cs-emulator-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the clock thread (attempts already handed to the publisher may still finish)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def schedule(self, name: str) -> None:
        """(Re)read when `name` is due; the store calls this on every change."""
        due = self.store.due(name)
        with self._cond:
            if due is None:
                self._current.pop(name, None)
                return
            at, generation = due
            self._current[name] = generation
            self._seq += 1
            entry = (at.timestamp(), self._seq, name, generation)
            heapq.heappush(self._heap, entry)
            if len(self._heap) > 2 * len(self._current) + 1024:
                self._compact()
            if self._heap[0] is entry:
                self._cond.notify()

    def pending(self) -> int:
        """How many jobs are scheduled."""
        with self._cond:
            return len(self._current)

    def timer_entries(self) -> int:
        """How many timer entries are held, stale ones (of changed jobs) included: bounded by
        compaction to about twice the jobs."""
        with self._cond:
            return len(self._heap)

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._current.get(e[2]) == e[3]]
        heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.time()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = min(self._heap[0][0] - now, _MAX_SLEEP) if self._heap else _MAX_SLEEP
                    self._cond.wait(wait)
                if self._stopped:
                    return
                due: list[tuple[float, int, str, int]] = []
                while self._heap and self._heap[0][0] <= now and len(due) < 1000:
                    entry = heapq.heappop(self._heap)
                    if self._current.get(entry[2]) == entry[3]:
                        due.append(entry)
            for _, _, name, generation in due:
                try:
                    execution = self.store.claim(name, generation)
                    if execution is not None:
                        self.dispatch(execution)
                except Exception:  # one bad job must not stop every other job's clock
                    log.exception("firing a job failed", job=name)

    def dispatch(self, execution: Execution) -> None:
        """Start one attempt; its result is recorded in the job when it comes back."""
        started = time.monotonic()
        if execution.http is not None:
            def answered(attempt: HttpAttempt) -> None:
                self._finished(execution, attempt.code, attempt.message, attempt.seconds,
                               http_status=attempt.http_status)

            self.http.deliver(execution, answered)
            return

        def published(message_id: str | None, error: BaseException | None) -> None:
            seconds = time.monotonic() - started
            if error is None:
                self._finished(execution, 0, "", seconds, message_id=message_id)
            else:
                self._finished(execution, status_code_of(error),
                               str(error) or type(error).__name__, seconds)

        if job_id_of(execution.name) in self.dropped:
            published(None, PermissionDenied("injected fault: publish dropped"))
            return
        if not execution.topic:
            published(None, MethodNotImplemented(
                "the emulator delivers Pub/Sub and HTTP targets only"))
            return
        self.publisher.publish(execution.topic, execution.data, execution.attributes, published)

    def _finished(self, execution: Execution, code: int, message: str, seconds: float,
                  **outcome: Any) -> None:
        """Record an attempt's result and log it (job, target, status, duration)."""
        schedule_id = execution.attributes.get(ATTR_SCHEDULE_ID) or job_id_of(execution.name)
        fields = {
            "job": execution.name,
            "target": execution.http.uri if execution.http is not None else execution.topic,
            "schedule_time": execution.slot.isoformat(),
            "schedule_id": schedule_id,
            "fire_time": execution.slot.isoformat(),
            "execution_id": execution_id(schedule_id, execution.slot, execution.trigger),
            "trigger": execution.trigger,
            "attempt": execution.attempt,
            "duration_ms": round(seconds * 1000, 1),
            **outcome,
        }
        retry_at = self.store.record(execution, code, message)
        if code == 0:
            log.info("job fired", **fields)
            return
        log.warning("job attempt failed", code=code_name(code), error=message,
                    retry_at=retry_at.isoformat() if retry_at else None, **fields)


def code_name(code: int) -> str:
    """The name of a google.rpc code, e.g. NOT_FOUND for 5."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)
