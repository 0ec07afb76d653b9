"""Hub schedules in the robfig dialect: the worker derives the hub's slots, the dialect is in the
fingerprint, `scion-scheduler next` shows the hub's fire times, and the job runs the translation
(helpers: `robfig_cases`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import robfig_oracle as oracle
import scion_hub_data as hub_data
from hypothesis import assume, given
from hypothesis import strategies as st
from robfig_cases import FAST, RETRY, Spec, hub_fires, transitions, utc
from schedule_strategies import robfig_expressions

from scheduler import cron_robfig
from scheduler.contract import ATTR_CRON_DIALECT, ContractError, build_message, decode_message
from scheduler.cron import (
    CronDialect,
    CronError,
    latest_fire_at_or_before,
    next_fires,
)
from scheduler.jobs import JobSpec
from scheduler.jobs_decode import schedule_from_job
from scheduler.model import Schedule
from scheduler.validation import parse_schedule
from scion_scheduler.cli import main as scheduler_main

# The worker derives a hub schedule's fire times with the hub's semantics.

def hub_schedule(cron: str) -> Schedule:
    return parse_schedule({
        "id": "nightly", "cron": cron, "cron_dialect": "robfig",
        "action": {"type": "http", "url": "https://hub.example.com/hook"},
    })


@pytest.mark.parametrize("cron", [
    "0 0 */2 * MON", "CRON_TZ=Europe/Berlin 30 2 * * *", "*/60 * * * *", "5/15 * * * *",
    "CRON_TZ=Australia/Lord_Howe 0 5 * * *",
])
def test_worker_derives_the_hubs_slot(cron: str) -> None:
    schedule = hub_schedule(cron)
    message = build_message(schedule)
    assert message.attributes[ATTR_CRON_DIALECT] == "robfig"
    fire = decode_message(message.data, message.attributes)
    assert fire.cron_dialect is CronDialect.ROBFIG and fire.cron == cron
    start = utc(2026, 3, 27) if "Berlin" in cron else utc(2026, 10, 1)
    for slot in next_fires(schedule, start, 8):
        for published in (slot - timedelta(seconds=2), slot + timedelta(seconds=40)):
            assert fire.derive_fire_time(published) == slot
        assert latest_fire_at_or_before(fire, slot + timedelta(seconds=59)) == slot


def test_the_dialect_is_in_the_fingerprint_only_when_not_the_default() -> None:
    hub = hub_schedule("0 9 * * *")
    native = replace(hub, cron_dialect=CronDialect.UNIX)
    assert "cron_dialect" not in native.to_dict()
    assert ATTR_CRON_DIALECT not in build_message(native).attributes
    unchanged = {k: v for k, v in hub.to_dict().items() if k not in ("paused", "description")}
    assert native.fingerprint() == hashlib.sha256(json.dumps(
        {k: v for k, v in unchanged.items() if k != "cron_dialect"}, sort_keys=True,
        separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()[:32]
    assert hub.fingerprint() != native.fingerprint()
    assert parse_schedule(hub.to_dict()) == hub
    assert schedule_from_job(JobSpec(
        "projects/p/locations/l", "projects/p/topics/t", "scion-", RETRY,
    ).desired_job(hub)) == hub


def test_an_unknown_or_misplaced_dialect_is_refused() -> None:
    action = {"type": "http", "url": "https://hub.example.com/hook"}
    with pytest.raises(ValueError, match="cron_dialect: must be one of unix, robfig"):
        parse_schedule({"id": "s", "cron": "0 9 * * *", "cron_dialect": "quartz",
                        "action": action})
    with pytest.raises(ValueError, match="cron_dialect: applies to `cron` only"):
        parse_schedule({"id": "s", "at": "2030-01-01T00:00:00Z", "cron_dialect": "robfig",
                        "action": action})
    with pytest.raises(ValueError, match="cron: day of week field '7'"):
        parse_schedule({"id": "s", "cron": "0 9 * * 7", "cron_dialect": "robfig",
                        "action": action})
    message = build_message(hub_schedule("0 9 * * *"))
    attributes = {**message.attributes, ATTR_CRON_DIALECT: "quartz"}
    with pytest.raises(ContractError, match="unknown dialect"):
        decode_message(message.data, attributes)


# `scion-scheduler next` on the hub's own JSON shows the hub's fire times.

NEXT_CLASSES = [
    "CRON_TZ=Europe/Berlin 30 2 * * *", "TZ=America/New_York 30 1 * * *", "0 12 ? * MON",
    "5/15 9 * * *", "*/60 * * * *", "0 0 * jan,Jul,DEC sun", "0 0 */1 * MON", "0 0 */2 * MON",
    "CRON_TZ=Australia/Sydney 0 2 * * *", "TZ=Australia/Lord_Howe 45 2 * * *",
]


@pytest.mark.parametrize("after", ["2026-03-27T00:00:00Z", "2026-10-23T00:00:00Z"])
def test_next_shows_the_hubs_fire_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], after: str,
) -> None:
    items = [hub_data.schedule(id=f"s{i}", name=f"s{i}", cron=cron)
             for i, cron in enumerate(NEXT_CLASSES)]
    refused = hub_data.schedule(id="dow7", name="dow7", cron="0 0 * * 7")
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"schedules": items}))
    code = scheduler_main(["next", "--file", str(path), "--format", "scion", "--output", "json",
                           "--count", "6", "--after", after])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    start = datetime.fromisoformat(after)
    for i, cron in enumerate(NEXT_CLASSES):
        expected = oracle.next_fires(cron, start, 6)
        assert shown[f"s{i}"] == [f.strftime("%Y-%m-%dT%H:%M:%SZ") for f in expected], cron
    path.write_text(json.dumps({"schedules": [*items, refused]}))
    assert scheduler_main(["next", "--file", str(path), "--format", "scion"]) == 2
    assert "day of week field '7'" in capsys.readouterr().err


def test_a_publish_at_a_slot_the_hub_would_not_fire_maps_to_the_hubs_previous_slot() -> None:
    # Lord Howe, 4 October 2026: the job fires at 05:00 (+11), the hub does not (see
    # test_lord_howe_where_robfig_leaves_the_wall_clock); the worker derives the hub's previous
    # slot, 3 October 05:00 (+10:30), whose execution ID the publish then shares.
    fire = decode_message(**vars(build_message(hub_schedule(
        "CRON_TZ=Australia/Lord_Howe 0 5 * * *"))))
    assert fire.derive_fire_time(utc(2026, 10, 3, 18) + timedelta(seconds=3)) == utc(
        2026, 10, 2, 18, 30)


@FAST
@given(robfig_expressions(), st.sampled_from(
    ["Australia/Lord_Howe", "Europe/Berlin", "America/New_York"]), st.data())
def test_the_worker_derives_the_slots_the_hubs_chain_reaches(
    expr: str, zone: str, data: st.DataObject,
) -> None:
    """Each fire of the hub's chain (each `Next` from the fire before), also across a clock
    change robfig walks off the wall clock at, is the slot a publish shortly after it maps to."""
    expr = f"CRON_TZ={zone} {expr}"
    try:
        cron_robfig.parse(expr)
    except CronError:
        assume(False)
    change = data.draw(st.sampled_from(transitions(zone)))
    chain = hub_fires(expr, change - timedelta(minutes=data.draw(st.integers(0, 26 * 60))))
    for fire, following in pairwise(chain):
        probe = min(fire + timedelta(seconds=30), following - timedelta(seconds=1))
        assert latest_fire_at_or_before(Spec(expr), probe) == fire, (fire, following)


def test_a_hub_schedules_job_runs_the_translation_and_its_message_the_hubs_expression() -> None:
    hub = hub_schedule("CRON_TZ=Europe/Berlin 0 0 */2 * MON")
    job = JobSpec("projects/p/locations/l", "projects/p/topics/t", "scion-", RETRY).desired_job(hub)
    assert (job.schedule, job.time_zone) == ("0 0 1-31/2 * 1", "Europe/Berlin")
    attributes = dict(job.pubsub_target.attributes)
    assert attributes["cron"] == "CRON_TZ=Europe/Berlin 0 0 */2 * MON"
    assert (attributes["timezone"], attributes[ATTR_CRON_DIALECT]) == ("UTC", "robfig")
