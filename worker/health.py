"""Health and metrics over HTTP, for Cloud Run and GKE probes and Prometheus scrapes.

* `GET /livez`   200 while the process serves requests (liveness: restart only a wedged process;
  a replica of several processes answers for each of them, `worker.supervisor`).
* `GET /readyz`  200 while the worker can do its work, else 503 (readiness: a replica whose
  stream is down or reconnecting, or whose store fails or hangs, is taken out of rotation, not
  restarted). The body names each failing dependency and why (`worker.dependencies`).
* `GET /metrics` the worker's registry in the Prometheus text format.

The standard library's threading HTTP server is enough for three tiny endpoints and keeps the
probes answering while every action executor is busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.logs import get_logger

log = get_logger(__name__)


class HealthServer:
    """Serves `/livez`, `/readyz` and `/metrics` on a daemon thread. Port 0 picks a free one."""

    def __init__(
        self, port: int, *, ready: Callable[[], bool | tuple[bool, str]],
        registry: CollectorRegistry,
        host: str = "0.0.0.0",  # probes come from outside the container
        live: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        """`ready` says whether the worker is ready, or that and a body naming what is wrong;
        `live`, whether it is alive and why not (by default: it is, since it answers)."""
        self._ready = ready
        self._live = live
        self._registry = registry
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Start serving in the background."""
        self._thread.start()
        log.info("health server listening", port=self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    live, body = server._live() if server._live else (True, "ok\n")
                    self._send(200 if live else 503, body.encode())
                elif path == "/readyz":
                    answer = server._ready()
                    ready, body = answer if isinstance(answer, tuple) else (
                        answer, "ready\n" if answer else "not streaming\n")
                    self._send(200 if ready else 503, body.encode())
                elif path == "/metrics":
                    self._send(200, generate_latest(server._registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n")

            def _send(
                self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Probes every few seconds would drown the logs; requests are not logged."""

        return Handler
