"""The API used the way the Scion hub (a Go service) uses it: plain HTTP requests with a bearer
token against a real `scion-scheduler serve` process (uvicorn on a free port), while a real
`scion-worker run` process executes the fires. Both talk to the Pub/Sub and Firestore emulators
and the Cloud Scheduler emulator, configured only through the environment, as on a replica."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pytest

from scheduler.config import Settings
from scheduler.gcp import publisher_client, subscriber_client
from scion_scheduler.google_emulators import free_port

TOKEN = "hub-client-token"
KEY = "hub-client-signing-key"
SCHEDULE_ID = "team-7/nightly report"

pytestmark = [pytest.mark.emulator, pytest.mark.slow, pytest.mark.timeout(180)]


class _Target(BaseHTTPRequestHandler):
    """The endpoint the schedule's http action calls; records each request's headers."""

    calls: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def target() -> Iterator[tuple[str, list[dict[str, str]]]]:
    calls: ClassVar[list[dict[str, str]]] = []
    handler = type("Target", (_Target,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/nightly", calls
    server.shutdown()
    server.server_close()


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _replica_env(cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
                 project_id: str) -> dict[str, str]:
    """A replica's environment: every setting, and the emulators, from variables only."""
    return {
        **os.environ,
        "SCION_SCHEDULER_PROJECT": project_id, "SCION_SCHEDULER_TOPIC": "fires",
        "SCION_SCHEDULER_SUBSCRIPTION": "workers", "SCION_SCHEDULER_SIGNING_KEY": KEY,
        "SCION_SCHEDULER_API_TOKEN": TOKEN, "SCION_SCHEDULER_LOG_FORMAT": "json",
        "SCION_SCHEDULER_ALLOWED_TARGETS": "127.0.0.1",  # the target is on loopback
        "PUBSUB_EMULATOR_HOST": pubsub_emulator, "FIRESTORE_EMULATOR_HOST": firestore_emulator,
        "CLOUD_SCHEDULER_EMULATOR_HOST": cloud_scheduler_emulator.host,
    }


def _wait_until_healthy(api: subprocess.Popen[bytes], base: str, log: Path) -> None:
    def healthy() -> bool:
        assert api.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    _until(healthy, 60, "the API to answer")
    assert httpx.get(f"{base}/v1/schedules").status_code == 401


def _create_update_and_refuse_a_stale_etag(hub: httpx.Client, schedule_url: str,
                                           url: str) -> None:
    document = {"cron": "0 2 * * *", "timezone": "Europe/Berlin",
                "action": {"type": "http", "url": url}, "description": "nightly"}
    created = hub.put(schedule_url, json=document)
    assert created.status_code == 201, created.text
    etag = created.headers["ETag"]

    updated = hub.put(schedule_url, json={**document, "cron": "30 2 * * *"},
                      headers={"If-Match": etag})
    assert updated.status_code == 200, updated.text
    assert [o["kind"] for o in updated.json()["outcomes"]] == ["update"]
    assert (
        hub.put(schedule_url, json=document, headers={"If-Match": etag}).status_code == 409
    )


def _pause_and_read(hub: httpx.Client, base: str, schedule_url: str) -> None:
    paused = hub.post(f"{schedule_url}:pause")
    assert paused.json()["schedule"]["job"]["state"] == "PAUSED"
    shown = hub.get(schedule_url).json()
    assert shown["schedule"]["cron"] == "30 2 * * *" and shown["next_fires"] == []
    listed = hub.get(f"{base}/v1/schedules").json()["schedules"]
    assert [s["id"] for s in listed] == [SCHEDULE_ID]


def _run_and_see_the_worker_finish(hub: httpx.Client, schedule_url: str,
                                   worker: subprocess.Popen[bytes], log: Path,
                                   calls: list[dict[str, str]]) -> str:
    """Run the schedule now; the execution ID of the fire the worker ran."""
    run = hub.post(f"{schedule_url}:run")
    assert run.status_code == 200, run.text
    execution_id: str = run.json()["execution_id"]

    def finished() -> list[dict[str, Any]]:
        assert worker.poll() is None, log.read_text()
        page = hub.get(f"{schedule_url}/executions", params={"limit": 10})
        assert page.status_code == 200, page.text
        return [e for e in page.json()["executions"] if e["state"] == "succeeded"]

    [execution] = _until(finished, 60, "the worker to run the manual fire")
    assert execution["execution_id"] == execution_id
    assert (
        execution["trigger"] == "manual"
        and execution["fire_time"] == run.json()["fire_time"]
    )
    assert [c["idempotency-key"] for c in calls] == [execution_id]
    return execution_id


def _resume_delete_and_keep_the_history(hub: httpx.Client, base: str, schedule_url: str,
                                        execution_id: str) -> None:
    resumed = hub.post(f"{schedule_url}:resume")
    assert resumed.json()["schedule"]["job"]["state"] == "ENABLED"
    assert len(resumed.json()["schedule"]["next_fires"]) == 5

    assert hub.delete(schedule_url).status_code == 200
    assert hub.get(schedule_url).status_code == 404
    kept = hub.get(f"{schedule_url}/executions").json()["executions"]
    assert [e["execution_id"] for e in kept] == [execution_id]
    metrics = hub.get(f"{base}/metrics").text
    assert 'route="/v1/schedules/{schedule_id}:run",status="200"' in metrics


def test_the_hub_creates_updates_pauses_runs_reads_history_and_deletes(
    cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str, project_id: str,
    target: tuple[str, list[dict[str, str]]], tmp_path: Path,
) -> None:
    url, calls = target
    env = _replica_env(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator, project_id)
    settings = Settings.from_env(env)
    publisher, subscriber = publisher_client(settings), subscriber_client(settings)
    publisher.create_topic(name=settings.topic_path)
    subscriber.create_subscription(name=settings.subscription_path, topic=settings.topic_path)
    port = free_port()
    api = _start(["scion_scheduler.cli", "serve", "--port", str(port)], env, tmp_path / "api.log")
    worker = _start(["worker.cli", "run", "--health-port", "0"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    schedule_url = f"{base}/v1/schedules/{quote(SCHEDULE_ID, safe='')}"
    try:
        _wait_until_healthy(api, base, tmp_path / "api.log")
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as hub:
            _create_update_and_refuse_a_stale_etag(hub, schedule_url, url)
            _pause_and_read(hub, base, schedule_url)
            execution_id = _run_and_see_the_worker_finish(
                hub, schedule_url, worker, tmp_path / "worker.log", calls)
            _resume_delete_and_keep_the_history(hub, base, schedule_url, execution_id)
    finally:
        _stop(api)
        _stop(worker)
        subscriber.delete_subscription(subscription=settings.subscription_path)
        publisher.delete_topic(topic=settings.topic_path)
        subscriber.close()
        publisher.stop()
    assert api.returncode == 0, (tmp_path / "api.log").read_text()
