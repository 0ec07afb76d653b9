"""The fault-injecting proxy and the dependency health report, on local sockets (fast)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from scion_scheduler.faultproxy import FaultProxy, Mode
from worker.action import ActionContext, ActionError, ActionRegistry
from worker.dependencies import Dependency, DependencyHealth, MonitoredActions, MonitoredLedger
from worker.metrics import WorkerMetrics


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def pump(c: socket.socket = conn) -> None:
                try:
                    while data := c.recv(1024):
                        c.sendall(data)
                except OSError:
                    pass
            threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", echo).start()
    yield proxy
    proxy.stop()


def connect(proxy: FaultProxy) -> socket.socket:
    host, port = proxy.address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=2)
    return sock


def roundtrip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(1024)


def test_forwards_and_cut_resets_open_connections(proxy: FaultProxy) -> None:
    sock = connect(proxy)
    assert roundtrip(sock) == b"ping"
    assert proxy.cut() == 1
    with pytest.raises(OSError):
        roundtrip(sock)
        roundtrip(sock)  # the reset may surface on the second call
    assert roundtrip(connect(proxy)) == b"ping"  # new connections work again


def test_refuse_and_blackhole_new_connections(proxy: FaultProxy) -> None:
    proxy.mode = Mode.REFUSE
    with pytest.raises(OSError):
        roundtrip(connect(proxy))
        roundtrip(connect(proxy))
    proxy.mode = Mode.BLACKHOLE
    sock = connect(proxy)
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        roundtrip(sock)
    proxy.mode = Mode.FORWARD
    assert roundtrip(connect(proxy)) == b"ping"


def test_freeze_holds_bytes_until_thawed(proxy: FaultProxy) -> None:
    sock = connect(proxy)
    assert roundtrip(sock) == b"ping"
    proxy.freeze()
    sock.settimeout(0.5)
    sock.sendall(b"held")
    with pytest.raises(TimeoutError):
        sock.recv(1024)
    proxy.thaw()
    sock.settimeout(2)
    assert sock.recv(1024) == b"held"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_dependency_health_reports_failures_hangs_and_recovery() -> None:
    metrics, clock, streaming = WorkerMetrics(), Clock(), [True]
    health = DependencyHealth(metrics, pubsub_ready=lambda: streaming[0], stall_after_s=10,
                              clock=clock)

    def gauge(dependency: str) -> float | None:
        return metrics.registry.get_sample_value("scion_worker_dependency_up",
                                                 {"dependency": dependency})

    assert health.readiness() == (True, "ready\n") and gauge("ledger") == 1.0

    class Store:
        def claim(self) -> str:
            raise ConnectionError("store unavailable")

    with pytest.raises(ConnectionError):
        MonitoredLedger(Store(), health).claim()  # type: ignore[arg-type]
    clock.now = 5
    ready, body = health.readiness()
    assert not ready and "ledger: ConnectionError: store unavailable (failing for 5s)" in body
    assert gauge("ledger") == 0.0
    health.succeeded(Dependency.LEDGER)
    assert health.readiness()[0]

    # A call that hangs (a frozen store) counts once it passes stall_after.
    entered, release = threading.Event(), threading.Event()

    def hang() -> None:
        with health.calling(Dependency.LEDGER):
            entered.set()
            release.wait(5)
    thread = threading.Thread(target=hang)
    thread.start()
    entered.wait(5)
    clock.now = 16
    assert "ledger: a call has not returned for 11s" in health.readiness()[1]
    release.set()
    thread.join()
    assert health.readiness()[0]

    streaming[0] = False
    assert health.readiness() == (False, "not ready\npubsub: the streaming pull is not connected\n")
    streaming[0] = True

    # A failing target is reported, but the worker stays ready.
    def flaky(context: ActionContext) -> None:
        raise ActionError("HTTP 503", retryable=True)
    actions = MonitoredActions(ActionRegistry({"http": flaky}), health)
    with pytest.raises(ActionError):
        actions.get("http")(ActionContext(
            schedule_id="s", fire_time=None, execution_id="e", trigger="manual",  # type: ignore[arg-type]
            attempt=1, params={}, labels={}))
    ready, body = health.readiness()
    assert ready and "target: s: HTTP 503" in body and gauge("target") == 0.0
