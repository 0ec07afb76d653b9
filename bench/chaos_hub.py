"""The chaos benchmark's target: a hub fire endpoint that keeps the fire contract.

`docs/hub-fire-endpoint.md`, "The idempotency rule": the hub runs the handler at most once per
`executionId` (the `Idempotency-Key` header) and answers 409 to a call for a key it has already
run; a temporary failure (here, the outage's 503) leaves the key unclaimed so that the retry can
run it. The workers call it with the built-in `scion` action, as production calls the Scion hub,
and that action records a 409 as succeeded (a duplicate).

What it counts, per key: handler runs (more than one would be a duplicate execution: the hub
keeps the rule, so this counts what a hub without the rule would have run twice), calls answered
409 because the key was done (the contract's at-least-once window: a worker that died after the
call and before its outcome was recorded, taken over), and calls that arrived while the same key's
handler was still running (two replicas calling at once: the ledger's claim must prevent it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The handler's own work: long enough that two replicas calling at once would overlap.
HANDLER_SECONDS = 0.02
GROVE = "chaos"


@dataclass(frozen=True)
class HubCounts:
    """What the hub saw, at one moment."""

    executed: int
    duplicate_executions: int
    repeated_calls: int
    concurrent_calls: int
    refused: int


class ContractHub:
    """`POST /api/v1/groves/{grove}/schedules/{id}/fire` per the idempotency rule; 503 to every
    call while `outage` is set."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.repeats: Counter[str] = Counter()
        self.concurrent = 0
        self.refused = 0
        self.running: set[str] = set()
        self.outage = threading.Event()
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(hub.fire(self.headers.get("Idempotency-Key", "")))

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                body = b"{}"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The hub's base URL (`SCION_HUB_URL`)."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def fire(self, key: str) -> int:
        """One call of the fire endpoint; its status."""
        with self.lock:
            if self.outage.is_set():
                self.refused += 1
                return 503
            if key in self.running:
                self.concurrent += 1
                return 409
            if self.runs[key]:
                self.repeats[key] += 1
                return 409
            self.running.add(key)
        time.sleep(HANDLER_SECONDS)
        with self.lock:
            self.running.discard(key)
            self.runs[key] += 1
        return 200

    def executed(self) -> set[str]:
        """The keys whose handler ran."""
        with self.lock:
            return set(self.runs)

    def counts(self) -> HubCounts:
        """The counts so far."""
        with self.lock:
            return HubCounts(len(self.runs), sum(n - 1 for n in self.runs.values()),
                             sum(self.repeats.values()), self.concurrent, self.refused)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
