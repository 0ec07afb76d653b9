"""ASGI middleware of the API: request metrics, the body size limit, and routing on the raw path.

All three are plain ASGI (not Starlette's `BaseHTTPMiddleware`), so a streamed body is counted
as it arrives and nothing is buffered twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scion_scheduler.errors import ScionSchedulerError

UNMATCHED_ROUTE = "(unmatched)"


class ApiMetrics:
    """Prometheus metrics of one app, in their own registry (several apps in one test process
    must not share counters)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "scion_api_requests", "HTTP API requests, by method, route template and status.",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "scion_api_request_duration_seconds", "HTTP API request latency, by method and route.",
            ["method", "route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class HttpMiddleware:
    """A middleware of HTTP requests: anything else (the lifespan) passes to `app` untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request."""
        raise NotImplementedError


class MetricsMiddleware(HttpMiddleware):
    """Counts every request by its route *template* (never the raw path: schedule IDs would make
    the label set unbounded)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request and time it."""
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)


class _TooLarge(ScionSchedulerError):
    pass


class BodyLimitMiddleware(HttpMiddleware):
    """Refuse a body over `limit` bytes with 413, whether it declares its length or streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on while its body stays within the limit; else answer 413."""
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({
            "code": "payload_too_large",
            "message": f"the request body is larger than {self.limit} bytes",
            "errors": [{"schedule_id": "(request)", "field": "(body)",
                        "reason": f"must be at most {self.limit} bytes"}],
        }).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


class RawPathMiddleware:
    """Route on the path as sent, still percent-encoded. Schedule IDs may hold any printable
    character, `/` included: decoded first, `a%2Fb` would become two segments and never match
    `/v1/schedules/{id}`. The routes decode the IDs they capture (`decode_id`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: Any = scope.get("raw_path")
        if scope["type"] == "http" and isinstance(raw, bytes | bytearray) and raw:
            scope = dict(scope)
            scope["path"] = bytes(raw).split(b"?", 1)[0].decode("latin-1")
        await self.app(scope, receive, send)
