"""The worker's egress sender against httpx, the client it replaced: CPU per request, under
many threads, one local keep-alive HTTP/1.1 server.

    .venv/bin/python bench/bench_egress.py [--threads 64] [--seconds 8] [--idle-close S]

Runs the same load through httpx's stock client (the baseline) and through
`worker.egress_sender.EgressSender`, twice each, alternated, in one process; the server runs in
a child process, so this process's CPU is the clients' alone. For each run it prints requests
answered per second, this process's CPU per answered request, errors by kind, and how many
requests the server saw (more than answered: a request sent twice). A worker's CPU per fire decides
how many fires one replica starts in a minute (bench_ticks.py), and a fire is one request.

The server answers at once, one request in ten after up to 50 ms; `--idle-close S` makes it
close a keep-alive connection idle for S seconds, which adds the ordinary keep-alive race (a
request sent just as the server closes) to every run.

Goal: the sender's CPU per request under the baseline's, every request answered and none
sent twice without an `--idle-close` (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from scheduler.egress import EgressPolicy
from worker.egress_sender import EgressSender, SendError

Post = Callable[[str], None]


def serve(port: Any, idle_close: float) -> None:
    """The server process: answers POSTs, and `GET /count` with the POSTs it has seen."""
    seen = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_close or None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen[0] += 1
            if random.random() < 0.1:
                time.sleep(random.random() * 0.05)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            body = str(seen[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # connection churn, not the listen backlog, is under test

        def handle_error(self, request: Any, client_address: Any) -> None:
            """Quiet: a client closing mid-request is part of the load."""

    server = Server(("127.0.0.1", 0), Handler)
    port.value = server.server_port
    server.serve_forever()


def load(post: Post, url: str, threads: int, seconds: float) -> tuple[int, float, Counter[str]]:
    """Requests answered, this process's CPU seconds, and errors by kind, with `threads`
    threads posting for `seconds`."""
    answered, errors, lock = [0], Counter[str](), threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < stop:
            try:
                post(url)
                with lock:
                    answered[0] += 1
            except (httpx.HTTPError, SendError) as exc:
                with lock:
                    errors[f"{type(exc).__name__}: {exc}"] += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    cpu = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answered[0], time.process_time() - cpu, errors


def clients() -> dict[str, Callable[[], tuple[Post, Callable[[], None]]]]:
    """Each client's post (a fire's request: JSON body, a few headers) and its close."""
    headers = {"Idempotency-Key": "k" * 40, "X-Scion-Schedule-Id": "team/report",
               "Authorization": "Bearer " + "t" * 200}
    body = b'{"schedule_id": "team/report", "fire_time": "2026-12-06T13:00:00Z"}'

    def baseline() -> tuple[Post, Callable[[], None]]:
        # httpx at its best here: a keep-alive limit above the threads, so its pool never
        # closes idle connections to stay under it (at httpx's default of 20 it did, and cost
        # 1.3 ms a request).
        client = httpx.Client(follow_redirects=False, trust_env=False,
                              limits=httpx.Limits(max_connections=100,
                                                  max_keepalive_connections=100))

        def post(url: str) -> None:
            client.post(url, content=body, headers=headers, timeout=10).read()

        return post, client.close

    def sender() -> tuple[Post, Callable[[], None]]:
        egress = EgressSender(EgressPolicy.parse("127.0.0.1"))

        def post(url: str) -> None:
            egress.send("POST", url, headers=headers, body=body, timeout=10)

        return post, egress.close

    return {"httpx (baseline)": baseline, "egress sender": sender}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--idle-close", type=float, default=0.0,
                        help="the server closes keep-alive connections idle this long (s)")
    args = parser.parse_args()
    port = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=serve, args=(port, args.idle_close), daemon=True)
    server.start()
    while not port.value:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port.value}/fire"
    print(f"{args.threads} threads, {args.seconds:g} s a run, server idle close "
          f"{args.idle_close or 'never'}")
    cost: dict[str, list[float]] = {}
    clean = True
    try:
        for name, make in [*clients().items()] * 2:
            before = int(httpx.get(url).text)
            post, close = make()
            answered, cpu, errors = load(post, url, args.threads, args.seconds)
            close()
            seen = int(httpx.get(url).text) - before
            cost.setdefault(name, []).append(cpu / max(answered, 1))
            clean = clean and not errors and seen == answered
            print(f"{name}: {answered / args.seconds:.0f} answered/s, "
                  f"{cpu / max(answered, 1) * 1e6:.0f} us CPU a request, the server saw "
                  f"{seen} for {answered} answered, errors {dict(errors) or 'none'}")
    finally:
        server.terminate()
    baseline, ours = (min(values) for values in cost.values())
    met = ours < baseline and (clean or args.idle_close > 0)
    print(f"egress sender / baseline CPU a request: {ours / baseline:.2f}; goal (under the "
          f"baseline's, every request answered once): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
