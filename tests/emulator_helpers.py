"""Helpers of the Cloud Scheduler emulator's tests: waiting for what happens in the background,
and a local HTTP target for HTTP jobs that records every request and answers with scripted
statuses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.api_core import exceptions as gexc


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime


class Target:
    """A local HTTP target that records requests and answers with scripted statuses (the last
    one repeats)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses = [200]
        self.delay = 0.0  # seconds before each answer
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                target.requests.append(Received(self.command, self.path, dict(self.headers),
                                                self.rfile.read(length), datetime.now(UTC)))
                index = min(len(target.requests), len(target.statuses)) - 1
                time.sleep(target.delay)
                self.send_response(target.statuses[index])
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """`check()` once it is truthy, polling until `timeout` seconds; its last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def pull_until(subscriber: Any, subscription: str, until: Callable[[list[Any]], bool],
               timeout: float) -> list[Any]:
    """The messages pulled (and acked) from `subscription` until `until(received)` holds or
    `timeout` seconds have passed."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(received):
        try:
            response = subscriber.pull(subscription=subscription, max_messages=50, timeout=2,
                                       retry=None)
        except gexc.DeadlineExceeded:
            continue
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in response.received_messages])
            received.extend(m.message for m in response.received_messages)
        else:
            time.sleep(0.2)
    return received
