"""HTTP targets: one attempt of an HTTP job is its method, headers and body sent to its URI, as
Cloud Scheduler sends them (HttpTarget in the v1 API reference):

* `User-Agent: Google-Cloud-Scheduler`, `X-CloudScheduler: true`, `X-CloudScheduler-JobName`
  (the job ID) and, for a scheduled attempt, `X-CloudScheduler-ScheduleTime` (RFC 3339); the
  job's own values of these, of `Host`, `Content-Length`, `X-Google-*` and `X-AppEngine-*` are
  replaced or dropped. A body without a `Content-Type` is sent as application/octet-stream.
* A job naming an OIDC service account gets `Authorization: Bearer <ID token>` for
  `oidcToken.audience`, or the URI when that is empty (`scheduler.emulator.oidc`). An OAuth
  access token (`oauthToken`) cannot be minted locally: such a job is sent without one.
* A 2xx answer is success. Any other status fails the attempt with the google.rpc code Google
  maps it to (google/rpc/code.proto: 404 NOT_FOUND, 503 UNAVAILABLE, ...); no answer within
  the job's `attemptDeadline` is DEADLINE_EXCEEDED; no connection is UNAVAILABLE. The store
  retries a failed attempt per the job's retry config, as it does for Pub/Sub.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc
import httpx
from google.cloud import scheduler_v1

from scheduler.emulator.oidc import TokenIssuer
from scheduler.emulator.store import Execution
from scheduler.emulator.validation import POST, USER_AGENT
from scheduler.naming import job_id_of

_REPLACED = frozenset({"host", "content-length", "user-agent", "authorization"})
_RESERVED_PREFIXES = ("x-google-", "x-appengine-", "x-cloudscheduler")
_BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED, 501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class HttpAttempt:
    """What one HTTP attempt came to: the google.rpc `code` (0: success) and `message` for
    the job's status, the HTTP status when there was an answer, and how long it took."""

    code: int
    message: str
    http_status: int | None
    seconds: float


def code_for_http_status(status: int) -> int:
    """The google.rpc code of an HTTP status (0 for 2xx)."""
    if 200 <= status < 300:
        return 0
    code = _BY_HTTP_STATUS.get(status)
    if code is None:
        code = (grpc.StatusCode.FAILED_PRECONDITION if 400 <= status < 500
                else grpc.StatusCode.INTERNAL if 500 <= status < 600 else grpc.StatusCode.UNKNOWN)
    value: int = code.value[0]
    return value


def request_headers(execution: Execution, target: Any, issuer: TokenIssuer) -> dict[str, str]:
    """The headers Cloud Scheduler sends for one attempt of `target` (an HttpTarget)."""
    headers = {name: value for name, value in target.headers.items()
               if name.lower() not in _REPLACED and not name.lower().startswith(_RESERVED_PREFIXES)}
    headers.update({"User-Agent": USER_AGENT, "X-CloudScheduler": "true",
                    "X-CloudScheduler-JobName": job_id_of(execution.name)})
    if execution.trigger == "scheduled":
        slot = execution.slot.astimezone(UTC).isoformat().replace("+00:00", "Z")
        headers["X-CloudScheduler-ScheduleTime"] = slot
    if target.body and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/octet-stream"
    if target.WhichOneof("authorization_header") == "oidc_token":
        oidc = target.oidc_token
        token = issuer.token(oidc.service_account_email, oidc.audience or target.uri)
        headers["Authorization"] = f"Bearer {token}"
    return headers


class HttpDeliverer:
    """Sends HTTP attempts from a small pool of threads, so a slow target holds up neither
    the clock nor other jobs; `done` gets each attempt's result."""

    def __init__(self, issuer: TokenIssuer, workers: int = 8) -> None:
        self.issuer = issuer
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cs-emulator-http")
        self._lock = threading.Lock()
        # Built on first use: an httpx client costs tens of milliseconds (its TLS context),
        # which an emulator without HTTP jobs need not pay.
        self._client: httpx.Client | None = None
        self._closed = False

    def _get(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise RuntimeError("the emulator is stopping")
            if self._client is None:
                self._client = httpx.Client(follow_redirects=False)
            return self._client

    def deliver(self, execution: Execution, done: Callable[[HttpAttempt], None]) -> None:
        """Start one attempt of `execution` (whose `http` is set)."""
        self._pool.submit(self._send, execution, done)

    def _send(self, execution: Execution, done: Callable[[HttpAttempt], None]) -> None:
        target = execution.http
        started = time.monotonic()
        status: int | None = None
        try:
            # HTTP_METHOD_UNSPECIFIED means POST (a job from an old state file may have it).
            method = scheduler_v1.HttpMethod(target.http_method or POST).name
            response = self._get().request(
                method, target.uri, headers=request_headers(execution, target, self.issuer),
                content=bytes(target.body), timeout=execution.deadline)
            status = response.status_code
            code = code_for_http_status(status)
            message = "" if code == 0 else f"HTTP {status} from {target.uri}"
        except httpx.TimeoutException:
            code = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            message = (f"no answer from {target.uri} within the attempt deadline "
                       f"({execution.deadline:g}s)")
        except Exception as exc:  # refused connection, bad host, closed client: the attempt fails
            code = grpc.StatusCode.UNAVAILABLE.value[0]
            message = f"cannot reach {target.uri}: {exc or type(exc).__name__}"
        done(HttpAttempt(code, message, status, time.monotonic() - started))

    def close(self) -> None:
        """Drop attempts not yet started and release the connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
