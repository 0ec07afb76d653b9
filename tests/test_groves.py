"""Reading the hub's JSON for one grove (`scheduler.groves`), without any backend: which items
are kept, refused by ID, or make the listing refused whole. The shapes are the hub's
(`tests/scion_hub_data.py`, from `pkg/store/models.go:1041-1093`); the routes that use this are
tested on the emulators in `test_api_groves.py`."""

from __future__ import annotations

import pytest
from scion_hub_data import GROVE, envelope, event, schedule

from scheduler.groves import read_item, read_listing
from scheduler.model import ValidationError


def test_valid_items_are_kept_and_invalid_ones_refused_by_hub_id() -> None:
    good, paused, gone = schedule(name="a"), schedule(name="b", status="paused"), schedule(
        name="c", status="deleted", cron="garbage")
    clash = schedule(name="a")
    bad_event = event(payload="[1]")
    listing = read_listing({"schedules": [good, paused, gone, clash],
                            "events": [bad_event, event(status="cancelled")]}, GROVE)
    assert [(s.id, s.paused) for s in listing.schedules] == [(good["id"], False),
                                                             (paused["id"], True)]
    assert gone["id"] in listing.absent
    assert {(e.schedule_id.split(" ")[0], e.field) for e in listing.refused} == {
        (clash["id"], "name"), (bad_event["id"], "payload")}
    assert listing.keep == {clash["id"], bad_event["id"]}


def test_another_groves_item_is_refused_naming_grove_id() -> None:
    theirs = schedule(grove="another-grove")
    listing = read_listing(envelope("schedules", [theirs]), GROVE)
    assert listing.schedules == []
    assert [(e.schedule_id, e.field) for e in listing.refused] == [
        (f'{theirs["id"]} "daily summary"', "groveId")]
    assert listing.keep == {theirs["id"]}


def test_a_document_wrong_as_a_whole_is_refused_whole() -> None:
    with pytest.raises(ValidationError):
        read_listing(envelope("schedules", [schedule()], next_cursor="n", total=9), GROVE)
    with pytest.raises(ValidationError):
        read_listing({"schedules": 3}, GROVE)
    with pytest.raises(ValidationError) as nameless:
        read_listing(envelope("schedules", [schedule(), {**schedule(), "id": None}]), GROVE)
    assert [e.field for e in nameless.value.errors] == ["id"]


def test_one_item_must_name_the_grove_and_id_of_its_path() -> None:
    item = schedule()
    assert read_item(item, grove=GROVE, kind="schedule", item_id=item["id"]).schedule is not None
    deleted = {**item, "status": "deleted"}
    assert read_item(deleted, grove=GROVE, kind="schedule", item_id=item["id"]).schedule is None
    with pytest.raises(ValidationError) as refused:
        read_item(item, grove="elsewhere", kind="schedule", item_id="other")
    assert {e.field for e in refused.value.errors} == {"groveId", "id"}
    with pytest.raises(ValidationError) as wrong_kind:
        read_item({**item, "status": "pending"}, grove=GROVE, kind="event", item_id=item["id"])
    assert "fireAt" in {e.field for e in wrong_kind.value.errors}
