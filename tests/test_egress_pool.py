"""The worker's egress client under concurrency: its pool never closes a connection a request
holds (the `[Errno 9] Bad file descriptor` of encode/httpcore#1110, see
`worker.egress_transport._HeldConnectionPool`).

Real local servers and the real egress client. Under load, the race needs one request's thread
to be between being handed an idle connection and starting on it while another thread's request
passes through the pool; the tests hold the first thread exactly there (`Gate`, around
httpcore's `PoolRequest.wait_for_connection`, which changes no behaviour) instead of hoping
for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore._sync.connection_pool as httpcore_pool
import httpx
import pytest

from scheduler.egress import EgressPolicy
from worker.egress_transport import egress_client

LOOPBACK = EgressPolicy.parse("127.0.0.1")
WAIT_S = 10.0


class Server:
    """A keep-alive HTTP/1.1 server that records each request's path and client port (one
    port per connection)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.seen[self.path] = self.client_address[1]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    pair = (Server(), Server())
    yield pair
    for server in pair:
        server.close()


class Gate:
    """Around httpcore's `PoolRequest.wait_for_connection`: `waiting(path)` is set once a
    request for `path` has been through the pool's pass and waits for a connection; a request
    for `/held` sets `handed` once it has one, and starts on it only after `go`."""

    def __init__(self) -> None:
        self.handed, self.go = threading.Event(), threading.Event()
        self._waiting: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()

    def waiting(self, path: str) -> threading.Event:
        with self._lock:
            return self._waiting.setdefault(path.encode(), threading.Event())


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    holder = Gate()
    wait: Callable[..., Any] = httpcore_pool.PoolRequest.wait_for_connection

    def gated(self: httpcore_pool.PoolRequest, timeout: float | None = None) -> Any:
        path = self.request.url.target
        holder.waiting(path.decode()).set()
        connection = wait(self, timeout)
        if path == b"/held":
            holder.handed.set()
            holder.go.wait(WAIT_S)
        return connection

    monkeypatch.setattr(httpcore_pool.PoolRequest, "wait_for_connection", gated)
    yield holder
    holder.go.set()


def in_thread(send: Callable[[], httpx.Response], failures: list[BaseException]
              ) -> threading.Thread:
    def run() -> None:
        try:
            send().raise_for_status()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("max_connections", [10, 1], ids=["surplus-keep-alive", "make-room"])
def test_a_connection_handed_to_a_request_is_not_closed_under_it(
        servers: tuple[Server, Server], gate: Gate, max_connections: int) -> None:
    """The only connection, idle to X, is handed to a request that has not started on it yet,
    when a request to Y comes. httpcore 1.0.9 closed the handed connection: with room for a
    second connection, in the pass that ended Y's request (more connections than the keep-alive
    limit of 1); without, to make room for Y's. The held request must go out on the connection
    it was handed (and without room, Y's wait for it)."""
    x, y = servers
    failures: list[BaseException] = []
    with egress_client(LOOPBACK, timeout=WAIT_S, limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=1)) as client:
        client.get(x.url("/first")).raise_for_status()
        held = in_thread(lambda: client.get(x.url("/held")), failures)
        assert gate.handed.wait(WAIT_S), "the held request was never handed a connection"
        other = in_thread(lambda: client.get(y.url("/other")), failures)
        assert gate.waiting("/other").wait(WAIT_S), "the request to Y never reached the pool"
        if max_connections > 1:
            other.join(WAIT_S)
        gate.go.set()
        held.join(WAIT_S)
        other.join(WAIT_S)

    assert not failures
    assert x.seen["/held"] == x.seen["/first"], "the handed connection was closed and replaced"
    assert "/other" in y.seen
