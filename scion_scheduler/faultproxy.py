"""A fault-injecting TCP proxy, for tests and benchmarks of outages between a worker and a
dependency (the Pub/Sub emulator above all: it mishandles stream resets of its own, so cutting
its clients' connections from outside is the reliable way to exercise the worker's reconnect).

    proxy = FaultProxy("127.0.0.1", 8085).start()   # listens on proxy.address
    proxy.cut()                 # reset every open connection (the client sees ECONNRESET)
    proxy.mode = Mode.REFUSE    # new connections are reset at once
    proxy.mode = Mode.BLACKHOLE # new connections are accepted and never answered
    proxy.freeze(); proxy.thaw()  # stop / resume forwarding on every connection (a hung peer)
    proxy.mode = Mode.FORWARD   # back to normal

One thread accepts and two threads per connection copy bytes; a gRPC client opens one or two
connections, so that stays small. Stdlib only.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
from dataclasses import dataclass, field

from scheduler.logs import get_logger

log = get_logger(__name__)

_CHUNK = 64 * 1024


class Mode(enum.Enum):
    """What happens to a new connection."""

    FORWARD = "forward"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: what a dropped NAT entry or a crashed peer shows."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass(eq=False)  # kept in a set by identity
class _Pair:
    client: socket.socket
    upstream: socket.socket | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self, reset: bool = True) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class FaultProxy:
    """Forwards `listen_host:listen_port` (0 picks a free port) to `host:port`, with faults on
    demand. Thread-safe."""

    def __init__(self, host: str, port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server((listen_host, listen_port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self.mode = Mode.FORWARD
        self.connections = 0
        """Connections accepted so far (for tests: did the client reconnect?)."""

    @property
    def address(self) -> str:
        """`host:port` to point a client at (e.g. as `PUBSUB_EMULATOR_HOST`)."""
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> FaultProxy:
        """Start accepting in the background."""
        threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True).start()
        log.info("fault proxy listening", address=self.address,
                 upstream=f"{self._upstream[0]}:{self._upstream[1]}")
        return self

    def stop(self) -> None:
        """Stop accepting and reset every connection."""
        self._stopped.set()
        self._flowing.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def cut(self, reset: bool = True) -> int:
        """Close every open connection, with an RST (`reset`) or a FIN; returns how many."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close(reset)
        log.info("fault proxy cut connections", count=len(pairs))
        return len(pairs)

    def freeze(self) -> None:
        """Stop forwarding bytes in both directions; connections stay open (a hung peer)."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Resume forwarding after `freeze`."""
        self._flowing.set()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            mode = self.mode
            if mode is Mode.REFUSE:
                _reset(client)
                continue
            pair = _Pair(client)
            with self._lock:
                self._pairs.add(pair)
            if mode is Mode.BLACKHOLE:
                continue  # held open, never read: reset by the next cut() or stop()
            threading.Thread(target=self._connect, args=(pair,), daemon=True,
                             name="faultproxy-connect").start()

    def _connect(self, pair: _Pair) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            self._drop(pair)
            return
        upstream.settimeout(None)
        with pair.lock:
            pair.upstream = upstream
            closed = pair.closed
        if closed:
            _reset(upstream)
            return
        for source, sink in ((pair.client, upstream), (upstream, pair.client)):
            threading.Thread(target=self._pump, args=(pair, source, sink), daemon=True,
                             name="faultproxy-pump").start()

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                self._flowing.wait()  # a frozen proxy holds what it read
                if pair.closed:
                    break
                sink.sendall(data)
        except OSError:
            pass
        self._drop(pair)

    def _drop(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
        pair.close()
