"""A hub listing as a whole: its pages (the hub's paged envelopes), and whether it is shaped
right and complete, so that a listing cut short never prunes the jobs of the schedules left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from scheduler.model import FieldError
from scheduler.scion_action import KIND_EVENT, KIND_SCHEDULE

_ENVELOPE_LISTS = {"schedules": KIND_SCHEDULE, "events": KIND_EVENT}


def is_envelope(value: Any) -> bool:
    """True for one of the hub's listing envelopes (not an item: it has no `id`)."""
    return isinstance(value, Mapping) and "id" not in value and (
        bool(set(value) & set(_ENVELOPE_LISTS))
    )


def item_lists(data: Any) -> Iterator[tuple[Mapping[str, Any] | None, str, str | None, Any, str]]:
    """(envelope or None, list key, kind or None, items, where) for every list of items in the
    document; `items` is whatever the document holds there (checked to be a list by the caller).

    A `null` list in an envelope is an empty one: the hub builds its listing as a nil Go slice,
    which encoding/json writes as `null` when the grove has no schedules or events."""
    if isinstance(data, Mapping):
        envelopes: list[Any] = [data]
    elif isinstance(data, list) and data and all(map(is_envelope, data)):
        envelopes = data
    else:
        yield None, "items", None, data, "items"
        return
    for page, envelope in enumerate(envelopes):
        for key, kind in _ENVELOPE_LISTS.items():
            if key in envelope:
                where = key if len(envelopes) == 1 else f"[{page}].{key}"
                items = envelope[key]
                yield envelope, key, kind, [] if items is None else items, where


def shape_errors(data: Any) -> list[FieldError]:
    """What is wrong with the document's shape: not the hub's JSON, or a list that is not one."""
    if not isinstance(data, list) and not (
        isinstance(data, Mapping) and set(data) & set(_ENVELOPE_LISTS)
    ):
        return [
            FieldError(
                "(file)",
                "(document)",
                "expected the hub's JSON: a list of schedules or scheduled events, or the "
                'hub\'s response envelope {"schedules": [...]} / {"events": [...]}',
            )
        ]
    return [FieldError("(file)", where, f"must be a list of hub items (got {_json_type(items)})")
            for _, _, _, items, where in item_lists(data) if not isinstance(items, list)]


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for errors about the document's shape."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


# Why a hub listing may not add up (pkg/store/sqlite/schedule.go:154-193: the schedule store
# never reads `cursor`; scheduled_event.go:189-248: the event store pages by `id < cursor` over a
# created_at order), for the errors that refuse such a listing.
_HUB_LIMITS = {
    "schedules": "the hub's schedule listing returns page 1 for every cursor "
                 "(pkg/store/sqlite/schedule.go:154-193)",
    "events": "the hub's event listing skips and repeats items across pages "
              "(pkg/store/sqlite/scheduled_event.go:189-248)",
}


def _page_ids(items: Any) -> list[str]:
    return [i["id"] for i in items if isinstance(i, Mapping) and isinstance(i.get("id"), str)]


def completeness_errors(data: Any) -> list[FieldError]:
    """A listing that stops before its last page would, under prune, delete the jobs of every
    schedule on the pages left out; so an incomplete listing is refused: its last page still
    has a `nextCursor`, it holds fewer distinct items than its `totalCount`, or one item is on
    two pages (the hub's cursor limits: a page came back again, or pages overlap and skip)."""
    errors: list[FieldError] = []
    pages: dict[str, list[tuple[Mapping[str, Any], list[str]]]] = {}
    counts: dict[str, int] = {}
    for envelope, key, _, items, _ in item_lists(data):
        if envelope is not None:
            pages.setdefault(key, []).append((envelope, _page_ids(items)))
            counts[key] = counts.get(key, 0) + len(items)
    for key, listed in pages.items():
        envelopes = [e for e, _ in listed]
        if all(isinstance(e.get("nextCursor"), str) and e["nextCursor"] for e in envelopes):
            errors.append(FieldError(
                "(file)", f"{key}.nextCursor",
                "the listing has more pages than given (every page carries a nextCursor); fetch "
                "every page, or a sync with prune would delete the jobs of the schedules left out"))
        first_page: dict[str, int] = {}
        for number, (_, ids) in enumerate(listed):
            for item_id in dict.fromkeys(ids):
                if first_page.setdefault(item_id, number) != number:
                    errors.append(FieldError(
                        "(file)", key, f"{item_id} is on page {first_page[item_id]} and on page "
                        f"{number}: the pages do not add up to the listing; {_HUB_LIMITS[key]}"))
                    return errors
        totals = [e["totalCount"] for e in envelopes
                  if isinstance(e.get("totalCount"), int) and not isinstance(e["totalCount"], bool)]
        held = counts[key]  # no item is on two pages by now
        if totals and max(totals) > held:
            errors.append(FieldError(
                "(file)", f"{key}.totalCount",
                f"the hub reported {max(totals)} {key} but the document holds {held}; fetch "
                "every page"))
    return errors

