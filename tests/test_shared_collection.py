"""Two deployments (two job prefixes) sharing one collection prefix, on the Firestore, Pub/Sub and
Cloud Scheduler emulators, in either mode each: a schedule ID both of them have is one registry
document (`scheduler.registry.document_id`), owned by whichever wrote it first; the other's
sync, upsert, pause, resume, delete and prune never overwrite or delete it, and fail that item
alone, naming the schedule, the field `owner` and why (`scheduler.ownership`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from api_harness import AUTH, TOKEN, doc, path
from emulated_control import emulated_settings
from fastapi.testclient import TestClient

from scheduler.control import SchedulerControl, with_registry
from scheduler.registry import document_id
from scheduler.sync import Failure
from scheduler.validation import parse_schedule
from scion_scheduler.api import ApiContext, Authenticator, create_app
from worker.sqlite_ledger import SqliteLedger

pytestmark = pytest.mark.emulator

T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
ACTION = {"type": "http", "url": "https://hub.example/run"}


def _schedule(sid: str, cron: str = "0 3 * * *") -> Any:
    return parse_schedule({"id": sid, "cron": cron, "action": ACTION})


def _deployment(emulator: Any, pubsub: str, firestore: str, project: str,
                prefix: str, mode: str) -> SchedulerControl:
    settings = emulated_settings(emulator, pubsub, project, firestore_emulator_host=firestore,
                                 mode=mode, job_prefix=prefix, collection_prefix="shared_",
                                 api_token=TOKEN)
    control = with_registry(settings)
    assert control.registry is not None
    control.clock = lambda: T0
    control.syncer.clock = control.clock
    return control


@pytest.fixture(params=[("ticks", "ticks"), ("jobs", "jobs"), ("ticks", "jobs"),
                        ("jobs", "ticks")], ids=lambda modes: "-then-".join(modes))
def two(request: pytest.FixtureRequest, cloud_scheduler_emulator: Any, pubsub_emulator: str,
        firestore_emulator: str, project_id: str
        ) -> Iterator[tuple[SchedulerControl, SchedulerControl]]:
    first_mode, second_mode = request.param
    first = _deployment(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator,
                        project_id, "first-", first_mode)
    second = _deployment(cloud_scheduler_emulator, pubsub_emulator, firestore_emulator,
                         project_id, "second-", second_mode)
    with first, second:
        yield first, second


def _document(control: SchedulerControl, sid: str) -> dict[str, Any]:
    assert control.registry is not None
    snapshot = control.registry.collection.document(document_id(sid)).get()
    assert snapshot.exists
    return snapshot.to_dict() or {}


def _refused(result: Any, sid: str) -> None:
    failed = [o for o in result.outcomes if not o.ok]
    assert [(o.step.schedule_id, o.failure) for o in failed] == [(sid, Failure.OWNED)]
    error = failed[0].error
    assert f"schedule {sid!r}: field 'owner'" in error and "'first-'" in error, error


def test_a_shared_schedule_id_stays_the_first_deployments_and_fails_alone_in_the_other(
        two: tuple[SchedulerControl, SchedulerControl]) -> None:
    first, second = two
    assert first.reconcile([_schedule("shared"), _schedule("only-first")]).ok
    before = _document(first, "shared")
    assert before["owner"] == "first-"

    # Many creates in one commit with the refused one: the others land.
    others = [_schedule(f"second-{i}") for i in range(30)]
    synced = second.reconcile([_schedule("shared", cron="0 4 * * *"), *others], prune=True)
    _refused(synced, "shared")
    created = {o.step.schedule_id for o in synced.outcomes if o.ok and o.step.kind == "create"}
    assert created - {None} == {s.id for s in others}  # (None: the tick job, in ticks mode)
    assert _document(first, "shared") == before
    assert _document(first, "only-first")["owner"] == "first-"  # never pruned by the second
    assert all(_document(second, s.id)["owner"] == "second-" for s in others)

    _refused(second.upsert(_schedule("shared", cron="0 5 * * *")), "shared")
    for result in (second.pause("shared"), second.resume("shared")):
        assert not result.ok and "404" in result.failed[0].error
    assert second.remove("shared").ok  # not this deployment's: nothing to delete
    assert _document(first, "shared") == before

    # The first deployment's own view is untouched: its next sync has nothing to do.
    assert first.reconcile([_schedule("shared"), _schedule("only-first")]).plan.is_noop
    assert {i.schedule_id for i in first.list_jobs()} == {"shared", "only-first"}
    # The second one keeps refusing it, never half-applied.
    _refused(second.reconcile([_schedule("shared", cron="0 4 * * *"), *others]), "shared")
    assert _document(first, "shared") == before


def test_the_api_answers_409_naming_the_schedule_and_its_owner(
        two: tuple[SchedulerControl, SchedulerControl], tmp_path: Path) -> None:
    first, second = two
    assert first.reconcile([_schedule("shared")]).ok
    context = ApiContext(second, SqliteLedger(tmp_path / "l.db"),
                         Authenticator.from_settings(second.settings))
    with TestClient(create_app(context), headers=AUTH) as api:
        answer = api.put(path("shared"), json=doc())
        assert answer.status_code == 409 and answer.json()["code"] == "conflict"
        assert answer.json()["message"].startswith("schedule 'shared': field 'owner': ")
        assert api.get(path("shared")).status_code == 404
    assert _document(first, "shared")["owner"] == "first-"
