"""Stress the worker's egress client: many threads, one local keep-alive HTTP/1.1 server.

    .venv/bin/python bench/stress_egress_pool.py [--threads 128] [--seconds 8] [--idle-close 0.05]

Runs the same load twice in one process, first through httpx's stock client (httpcore's pool,
the baseline), then through `worker.egress_transport.egress_client`, both with the egress
client's limits, and prints for each: requests answered, errors by kind, and how many times a
pool pass closed a connection that a request held (encode/httpcore#1110: what made a fire's
read fail with `[Errno 9] Bad file descriptor` after its request had reached the target).

The server answers at once, one request in ten after up to 50 ms; `--idle-close S` makes it
close a keep-alive connection idle for S seconds, which adds the ordinary keep-alive race (a
request sent just as the server closes: "Server disconnected" or a reset) to both runs.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx

from scheduler.egress import EgressPolicy
from worker.egress_transport import DEFAULT_LIMITS, egress_client


@contextmanager
def keep_alive_server(idle_close: float) -> Iterator[str]:
    """A local server's URL while the block runs."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_close or None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if random.random() < 0.1:
                time.sleep(random.random() * 0.05)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # connection churn, not the listen backlog, is under test

        def handle_error(self, request: Any, client_address: Any) -> None:
            """Quiet: a client closing mid-request is part of the load."""

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/fire"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def held_closes() -> Iterator[list[int]]:
    """Counts (in the yielded list's one item) connections a pool pass chose to close while a
    request of that pool held them."""
    count = [0]
    original = httpcore.ConnectionPool._assign_requests_to_connections

    def counting(pool: httpcore.ConnectionPool) -> list[httpcore.ConnectionInterface]:
        closing = original(pool)
        held = {id(r.connection) for r in pool._requests if r.connection is not None}
        count[0] += sum(id(c) in held for c in closing)
        return closing

    pool_class: Any = httpcore.ConnectionPool
    pool_class._assign_requests_to_connections = counting
    try:
        yield count
    finally:
        pool_class._assign_requests_to_connections = original


def load(client: httpx.Client, url: str, threads: int, seconds: float) -> tuple[int, Counter[str]]:
    """Requests answered and errors by kind, with `threads` threads posting for `seconds`."""
    answered, errors, lock = [0], Counter[str](), threading.Lock()
    stop = time.monotonic() + seconds

    def post() -> None:
        while time.monotonic() < stop:
            try:
                client.post(url, json={}, timeout=10)
                with lock:
                    answered[0] += 1
            except httpx.HTTPError as exc:
                with lock:
                    errors[f"{type(exc).__name__}: {exc}"] += 1

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answered[0], errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--idle-close", type=float, default=0.0,
                        help="the server closes keep-alive connections idle this long (s)")
    args = parser.parse_args()
    clients: dict[str, Callable[[], httpx.Client]] = {
        "httpx stock pool": lambda: httpx.Client(limits=DEFAULT_LIMITS),
        "egress client": lambda: egress_client(EgressPolicy.parse("127.0.0.1"),
                                               limits=DEFAULT_LIMITS),
    }
    limits = DEFAULT_LIMITS
    print(f"{args.threads} threads, {args.seconds:g} s each, server idle close "
          f"{args.idle_close or 'never'}; pools of {limits.max_connections} connections, "
          f"{limits.max_keepalive_connections} kept alive")
    with keep_alive_server(args.idle_close) as url:
        for name, make in clients.items():
            with held_closes() as closes, make() as client:
                answered, errors = load(client, url, args.threads, args.seconds)
            print(f"{name}: {answered / args.seconds:.0f} answered/s, closed while held "
                  f"{closes[0]}, errors {dict(errors) or 'none'}")
    met = closes[0] == 0
    print(f"goal: the egress client closes no connection a request holds: "
          f"{'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
