"""The HTTP control API under concurrent change: If-Match fingerprints, writes racing on one etag,
changes made in Cloud Scheduler meanwhile, and Cloud Scheduler unavailable (harness:
`api_harness`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from api_harness import (
    Api,
    HeldUpdateClient,
    doc,
    errors_of,
    jobs_only,
    open_api,
    path,
)
from emulated_control import FailingClient
from google.api_core import exceptions as gexc
from worker_harness import wait_for

from scheduler.config import Settings
from scheduler.gcp import cloud_scheduler_client
from worker.sqlite_ledger import SqliteLedger

pytestmark = pytest.mark.emulator


def test_if_match_with_a_stale_fingerprint_is_a_409_and_changes_nothing(api: Api) -> None:
    first = api.client.put(path("guarded"), json=doc())
    etag = first.headers["ETag"]
    assert (
        api.client.put(
            path("guarded"), json=doc(cron="5 3 * * *"), headers={"If-Match": etag}
        ).status_code
        == 200
    )
    writes = api.writes()
    stale = api.client.put(path("guarded"), json=doc(cron="6 3 * * *"), headers={"If-Match": etag})
    assert stale.status_code == 409 and stale.json()["code"] == "conflict"
    assert errors_of(stale) == [("guarded", "If-Match")]
    assert api.client.delete(path("guarded"), headers={"If-Match": etag}).status_code == 409
    assert api.client.post(path("guarded", ":pause"), headers={"If-Match": etag}).status_code == 409
    assert api.writes() == writes
    assert api.client.get(path("guarded")).json()["schedule"]["cron"] == "5 3 * * *"
    assert api.client.put(path("new"), json=doc(), headers={"If-Match": etag}).status_code == 409
    current = api.client.get(path("guarded")).headers["ETag"]
    assert api.client.delete(path("guarded"), headers={"If-Match": current}).status_code == 200


@pytest.mark.parametrize("second", ["put", "delete", "pause"])
def test_concurrent_writes_with_one_etag_let_the_first_through_and_refuse_the_next(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger, second: str
) -> None:
    jobs_only(settings.mode)
    real = cloud_scheduler_client(settings)
    held = HeldUpdateClient(real)
    with open_api(settings, cloud_scheduler_emulator, ledger, scheduler_client=held) as api:
        etag = api.client.put(path("raced"), json=doc()).headers["ETag"]
        guarded = {"If-Match": etag}
        answers: dict[str, Any] = {}
        requests = {
            "put": lambda: api.client.put(
                path("raced"), json=doc(cron="2 3 * * *"), headers=guarded
            ),
            "delete": lambda: api.client.delete(path("raced"), headers=guarded),
            "pause": lambda: api.client.post(path("raced", ":pause"), headers=guarded),
        }

        def send(name: str, request: Callable[[], Any]) -> None:
            answers[name] = request()

        first = threading.Thread(target=send, args=("first", lambda: api.client.put(
            path("raced"), json=doc(cron="1 3 * * *"), headers=guarded)))
        first.start()
        assert held.entered.wait(60)  # the first PUT passed its If-Match and is writing
        other = threading.Thread(target=send, args=("second", requests[second]))
        other.start()
        # The second request waits for the schedule's lock (it has not read the job yet).
        key = api.control.spec.job_id("raced")
        wait_for(
            lambda: api.context.locks.users(key) == 2,
            what="the second request to wait",
            interval=0.01,
        )
        held.release.set()
        first.join(120)
        other.join(120)
        assert answers["first"].status_code == 200, answers["first"].text
        refused = answers["second"]
        assert refused.status_code == 409 and errors_of(refused) == [("raced", "If-Match")]
        got = api.client.get(path("raced")).json()
        assert got["schedule"]["cron"] == "1 3 * * *" and got["job"]["state"] == "ENABLED"
        assert api.context.locks.users(key) == 0
    real.transport.close()


class _AbortingClient:
    """The real client, except that UpdateJob answers ABORTED (a concurrent modification)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_job(self, *args: Any, **kwargs: Any) -> Any:
        raise gexc.Aborted("the job was modified concurrently")


def test_a_concurrent_modification_from_cloud_scheduler_is_a_409(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger
) -> None:
    jobs_only(settings.mode)
    real = cloud_scheduler_client(settings)
    with open_api(settings, cloud_scheduler_emulator, ledger,
                  scheduler_client=_AbortingClient(real)) as api:
        assert api.client.put(path("raced"), json=doc()).status_code == 201
        raced = api.client.put(path("raced"), json=doc(cron="1 3 * * *"))
        assert raced.status_code == 409
        assert raced.json()["outcomes"][0]["status"] == "failed"
    real.transport.close()


def test_cloud_scheduler_unavailable_is_a_503(api: Api) -> None:
    jobs_only(api.settings.mode)
    api.emulator.set_faults(1.0, codes=("UNAVAILABLE",), methods=("CreateJob",))
    down = api.client.put(path("later"), json=doc())
    assert down.status_code == 503 and down.json()["code"] == "unavailable"
    assert down.json()["message"].startswith("Cloud Scheduler is unavailable: ")
    api.emulator.set_faults(1.0, codes=("UNAVAILABLE",), methods=("GetJob",))
    assert api.client.get(path("later")).status_code == 503
    api.emulator.clear_faults()


@pytest.mark.parametrize(("error", "status", "message"), [
    (gexc.ServiceUnavailable("no route to Firestore (injected)"), 503,
     "Firestore is unavailable: 503 no route to Firestore (injected)"),
    (gexc.RetryError("deadline exceeded", gexc.ServiceUnavailable("down (injected)")), 503,
     "Firestore is unavailable: gave up after retrying: 503 down (injected)"),
    (gexc.PermissionDenied("no write access (injected)"), 502,
     "Firestore refused the change: 403 no write access (injected)"),
])
def test_a_failed_document_write_names_firestore_not_cloud_scheduler(
        api: Api, error: Exception, status: int, message: str) -> None:
    if api.settings.mode != "ticks":
        pytest.skip("jobs mode writes no document: test_cloud_scheduler_unavailable_is_a_503")
    registry = api.control.registry
    assert registry is not None
    assert api.client.put(path("kept"), json=doc()).status_code == 201
    working = registry.client
    registry.client = FailingClient(working, error)
    try:
        down = api.client.put(path("kept"), json=doc(cron="9 9 * * *"))
        fresh = api.client.put(path("later"), json=doc())
    finally:
        registry.client = working
    for failed in (down, fresh):
        assert failed.status_code == status, failed.json()
        body = failed.json()
        assert body["message"] == message and "Cloud Scheduler" not in body["message"]
        assert body["code"] == ("unavailable" if status == 503 else "upstream_error")
    assert api.client.get(path("kept")).json()["schedule"]["cron"] == "0 3 * * *"
    assert api.client.get(path("later")).status_code == 404
