"""`hub check`, `hub pull` and the item-by-item hand-over, against the reference hub (with the
real hub's listing limits on) and the Cloud Scheduler and Pub/Sub emulators; the fire-back of a
hub without the fire endpoint through the Firestore emulator.

The hub's answers come from `scion_scheduler.reference_hub_groves`, whose shapes
`tests/test_reference_hub_groves.py` checks against the hub's source; the listings here are
the hub's own (`pkg/hub/handlers_schedules.go:251-283`, `handlers_scheduled_events.go:233-265`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from emulated_control import operator_cli_env
from scion_hub_data import GROVE, event, schedule
from structlog.testing import capture_logs

from scheduler.config import Settings
from scheduler.contract import build_message, execution_id
from scheduler.gcp import cloud_scheduler_client, firestore_client
from scheduler.validation import schedules_from_data
from scion_scheduler.cli import main
from scion_scheduler.google_emulators import free_port
from scion_scheduler.reference_hub import ReferenceHub
from scion_scheduler.reference_hub_groves import ListingLimits
from worker.action import ActionRegistry
from worker.actions.scion import NO_FIRE_ENDPOINT, ScionAction
from worker.firestore_ledger import FirestoreLedger
from worker.ledger import State
from worker.pipeline import Pipeline
from worker.transport import Delivery

pytestmark = pytest.mark.emulator

TOKEN = "hub-commands-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, cloud_scheduler_emulator: Any, pubsub_emulator: str,
        project_id: str) -> Iterator[Settings]:
    operator_cli_env(monkeypatch, project_id, {
        "SCION_SCHEDULER_WRITE_RATE": "6000", "SCION_SCHEDULER_SYNC_CONCURRENCY": "16",
        "SCION_HUB_TOKEN": TOKEN,
    })
    yield Settings.from_env()
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    structlog.reset_defaults()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """`scion-scheduler ARGV --output json`: exit code, the JSON printed (or None), stderr."""
    capsys.readouterr()
    code = main([*argv, "--output", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def jobs(settings: Settings) -> dict[str, Any]:
    client = cloud_scheduler_client(settings)
    return {j.name.rsplit("/", 1)[-1]: j for j in client.list_jobs(parent=settings.location_path)}


def seed(hub: ReferenceHub, n: int, *, prefix: str = "s") -> list[dict[str, Any]]:
    items = [schedule(name=f"{prefix}{index}", cron=f"{index % 60} 9 * * *") for index in range(n)]
    for item in items:
        hub.groves.put_schedule(item)
    return items


# --------------------------------------------------------------------------- hub check


def test_hub_check_says_whether_the_endpoint_is_there_and_the_token_taken(
        env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN) as hub:
        code, out, _ = run(capsys, "hub", "check", "--hub-url", hub.url)
        assert code == 0 and (out["fire_endpoint"], out["token"]) == ("present", "accepted")
    with ReferenceHub(token=TOKEN, fire_endpoint=False) as hub:
        code, out, _ = run(capsys, "hub", "check", "--hub-url", hub.url)
        assert code == 1 and (out["fire_endpoint"], out["token"]) == ("missing", "accepted")
        assert out["detail"] == NO_FIRE_ENDPOINT and out["status"] == 404
    with ReferenceHub(token="another-token") as hub:
        code, out, _ = run(capsys, "hub", "check", "--hub-url", hub.url)
        assert code == 1 and (out["fire_endpoint"], out["token"]) == ("unknown", "refused")
    code, out, err = run(capsys, "hub", "check", "--hub-url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "ConnectError" in err


# --------------------------------------------------------------------------- hub pull


def test_a_250_schedule_grove_is_refused_with_the_hubs_limit_and_nothing_is_pruned(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN) as hub:  # the real hub's listing limits
        first = seed(hub, 150)
        code, out, _ = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                           "--sync", "--prune")
        assert code == 0 and out["plan"]["counts"]["create"] == 150
        before = jobs(env)
        seed(hub, 100, prefix="more")
        out_file = tmp_path / "grove.json"
        code, out, err = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                             "--sync", "--prune", "--out", str(out_file))
    assert code == 1 and not out["ok"]
    assert "page 2 is page 1 again" in err
    assert "pkg/store/sqlite/schedule.go:154-193" in err and "nothing pruned" in err
    assert not out_file.exists()
    assert jobs(env) == before and len(before) == len(first)


def test_a_grove_the_hub_can_page_is_pulled_whole(env: Settings, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN, limits=ListingLimits(real_cursors=False)) as hub:
        items = seed(hub, 250)
        pending, fired = event(), event(status="fired")
        hub.groves.put_event(pending)
        hub.groves.put_event(fired)
        out_file = tmp_path / "grove.json"
        code, _, _ = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                         "--out", str(out_file))
    assert code == 0
    document = json.loads(out_file.read_text())
    assert sorted(s["id"] for s in document["schedules"]) == sorted(i["id"] for i in items)
    assert [e["id"] for e in document["events"]] == [pending["id"]]  # status=pending only
    assert len(schedules_from_data(document, format="scion").schedules) == 251


def test_the_event_listing_past_one_page_is_refused(env: Settings,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN) as hub:
        for _ in range(201):
            hub.groves.put_event(event())
        code, _, err = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE)
    assert code == 1 and "pkg/store/sqlite/scheduled_event.go:189-248" in err


# --------------------------------------------------------------------------- item by item


def _spoil(hub: ReferenceHub, items: list[dict[str, Any]]) -> dict[str, str]:
    """PATCH three schedules the way the hub lets them be (handlers_schedules.go:334-342):
    fields set unchecked. Their IDs, with the field each refusal names."""
    bad = {items[0]["id"]: ("payload", "not json"),
           items[1]["id"]: ("eventType", "status_update"),
           items[2]["id"]: ("payload", json.dumps({"agentName": "reviewer"}))}
    for item_id, (key, value) in bad.items():
        answer = httpx.patch(f"{hub.url}/api/v1/groves/{GROVE}/schedules/{item_id}",
                             headers=AUTH, json={key: value})
        assert answer.status_code == 200
    return {items[0]["id"]: "payload", items[1]["id"]: "eventType",
            items[2]["id"]: "payload.message"}


def test_150_schedules_with_3_invalid_hand_over_147_and_leave_the_3_jobs_as_they_were(
        env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN) as hub:
        items = seed(hub, 150)
        code, _, _ = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE, "--sync")
        assert code == 0 and len(jobs(env)) == 150
        before = jobs(env)
        fields = _spoil(hub, items)
        for item in items[3:6]:  # edited at the hub: their jobs must follow
            httpx.patch(f"{hub.url}/api/v1/groves/{GROVE}/schedules/{item['id']}",
                        headers=AUTH, json={"cronExpr": "15 10 * * *"})
        httpx.delete(f"{hub.url}/api/v1/groves/{GROVE}/schedules/{items[6]['id']}", headers=AUTH)
        code, out, _ = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                           "--sync", "--prune")
    assert code == 1 and not out["ok"]
    refused = {(r["id"].split()[0], r["field"]) for r in out["refused"]}
    assert refused == set(fields.items())
    assert all(r["reason"] for r in out["refused"])
    after = jobs(env)
    assert len(after) == 149  # 147 valid, one deleted at the hub, the 3 refused kept
    for item_id in fields:  # exactly as they were
        assert after[f"scion-{item_id}"] == before[f"scion-{item_id}"]
    assert all(after[f"scion-{i['id']}"].schedule == "15 10 * * *" for i in items[3:6])
    assert f"scion-{items[6]['id']}" not in after
    assert sorted(out["plan"]["held_for_refused_items"]) == sorted(f"scion-{i}" for i in fields)


def test_a_fresh_grove_with_3_invalid_items_hands_over_147_jobs(
        env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN) as hub:
        items = seed(hub, 150)
        _spoil(hub, items)
        code, out, _ = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                           "--sync", "--prune")
    assert code == 1 and len(out["refused"]) == 3
    assert len(jobs(env)) == 147


def test_strict_keeps_all_or_nothing(env: Settings, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with ReferenceHub(token=TOKEN) as hub:
        items = seed(hub, 10)
        _spoil(hub, items)
        code, out, _ = run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                           "--sync", "--strict")
        assert code == 2 and not out["ok"] and len(out["errors"]) >= 3
        assert jobs(env) == {}
        file = tmp_path / "hub.json"
        assert run(capsys, "hub", "pull", "--hub-url", hub.url, "--grove", GROVE,
                   "--out", str(file))[0] == 0
    code, out, _ = run(capsys, "sync", "--file", str(file), "--format", "scion")
    assert code == 1 and len(out["refused"]) == 3 and len(jobs(env)) == 7
    code, out, _ = run(capsys, "sync", "--file", str(file), "--format", "scion", "--strict")
    assert code == 2


# --------------------------------------------------------------------------- fire back


def test_a_hub_without_the_fire_endpoint_fails_the_fire_and_410_cancels_it(
        env: Settings, firestore_emulator: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The job's own message (from the Cloud Scheduler emulator) through the pipeline, the
    ledger in the Firestore emulator: a 404 route-not-found is `failed`, never `cancelled`,
    and is logged once as "the hub has no fire endpoint"; a 410 is `cancelled`."""
    item, other = schedule(cron="* * * * *", name="a"), schedule(cron="* * * * *", name="b")
    document = {"schedules": [item, other], "events": None}
    loaded = schedules_from_data(document, format="scion")
    ledger = FirestoreLedger(firestore_client(env), collection_prefix="hub_cmd_")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with ReferenceHub(token=TOKEN, fire_endpoint=False) as hub, \
            capture_logs() as logs:
        # The hub is on loopback, which the egress policy allows only when named.
        action = ScionAction(settings=Settings.from_env({}, hub_url=hub.url, hub_token=TOKEN,
                                                            allowed_targets="127.0.0.1"))
        pipeline = Pipeline(ledger, ActionRegistry({"scion": action}), worker_id="w1",
                            clock=lambda: now + timedelta(seconds=2))
        for s in loaded.schedules:
            message = build_message(s)
            pipeline.handle(Delivery(f"m-{s.id}", message.data, message.attributes, now))
    for s in loaded.schedules:
        record = ledger.get(execution_id(s.id, now))
        assert record is not None and record.state is State.FAILED
        assert NO_FIRE_ENDPOINT in (record.error or "")
    assert sum(NO_FIRE_ENDPOINT in line["event"] for line in logs) == 1

    with ReferenceHub(token=TOKEN) as hub:
        hub.groves.put_schedule(item)
        httpx.delete(f"{hub.url}/api/v1/groves/{GROVE}/schedules/{item['id']}", headers=AUTH)
        # The hub is on loopback, which the egress policy allows only when named.
        action = ScionAction(settings=Settings.from_env({}, hub_url=hub.url, hub_token=TOKEN,
                                                            allowed_targets="127.0.0.1"))
        pipeline = Pipeline(ledger, ActionRegistry({"scion": action}), worker_id="w1",
                            clock=lambda: now + timedelta(minutes=1, seconds=2))
        s = next(x for x in loaded.schedules if x.id == item["id"])
        message = build_message(s)
        pipeline.handle(Delivery("m-gone", message.data, message.attributes,
                                 now + timedelta(minutes=1)))
        assert [c.status for c in hub.calls] == [410]
    record = ledger.get(execution_id(item["id"], now + timedelta(minutes=1)))
    assert record is not None and record.state is State.CANCELLED
