"""One hub grove's schedules and events as a unit: which jobs are a grove's, what one hub item
asks for, and the plan that makes a grove's jobs match the hub's full listing of it.

The hub's JSON is converted by `scheduler.scion_format.convert` and validated by
`scheduler.validation`, exactly as for `sync --format scion`; this module only adds the grove:

* a job is a grove's when its fire message runs the `scion` action and carries the labels the
  conversion writes (`scion-grove`, `scion-kind`); every other job (another grove's, a native
  schedule's, one whose message cannot be read) is never touched by a grove's writes;
* a listing is the grove's full set, so the grove's jobs it does not list are deleted, and
  nothing else is;
* an invalid item is *refused*, by the CLI's rule for the hub's listings
  (`scheduler.validation.schedules_from_data` with `strict=False`): its job, if it has one, is
  left exactly as it is (neither updated nor pruned) and the refusal names the item, the field
  and the reason; so is an item of another grove, or one whose ID is a job not the grove's. A
  document wrong as a whole (its shape, pages left out), or with an item that has no usable ID
  (whose job could be any of those the sync prunes), is refused whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.cloud import scheduler_v1

from scheduler import scion_action, scion_format
from scheduler.jobs import JobSpec
from scheduler.jobs_decode import JobDecodeError, schedule_from_job
from scheduler.model import FieldError, Schedule, ValidationError
from scheduler.naming import is_owned, job_id_of
from scheduler.sync_plan import Plan, compute_plan
from scheduler.validation import parse_schedule, schedules_from_data

GROVE_LABEL = "scion-grove"
KIND_LABEL = "scion-kind"


@dataclass(frozen=True)
class Owner:
    """The hub item a job is for: its grove and its kind (`schedule` or `event`)."""

    grove: str
    kind: str


def job_owner(job: scheduler_v1.Job) -> Owner | None:
    """The grove and kind of a hub item's job, from its fire message; None for any other job
    (a native schedule's, or one whose message cannot be read)."""
    try:
        schedule = schedule_from_job(job)
    except JobDecodeError:
        return None
    grove, kind = schedule.labels.get(GROVE_LABEL), schedule.labels.get(KIND_LABEL)
    if (
        schedule.action.type != scion_action.ACTION_TYPE
        or not grove
        or kind not in scion_action.KINDS
    ):
        return None
    return Owner(grove, kind)


def foreign_reason(owner: Owner | None, grove: str, kind: str) -> str | None:
    """Why a job with `owner` is not this grove's item of `kind` (None when it is)."""
    if owner is None:
        return ("a job with this ID exists and is not a hub item's (a native schedule's, or one "
                "whose message cannot be read)")
    if owner.grove != grove:
        return f"a job with this ID belongs to grove {owner.grove!r}"
    if owner.kind != kind:
        return f"a job with this ID is a {owner.kind}'s, not a {kind}'s"
    return None


# -- reading the hub's JSON ----------------------------------------------------------------------


def _label(schedule: Schedule) -> str:
    """How the CLI names a hub item in errors: its ID, and its name when it has one."""
    name = schedule.action.params.get("name")
    return f'{schedule.id} "{name}"' if isinstance(name, str) and name else schedule.id


@dataclass
class GroveListing:
    """A hub listing read for one grove: the schedules it wants, the IDs whose jobs must not
    exist (deleted schedules, events no longer pending), the refused items' errors (each naming
    the item as `ID "name"`) and `keep`, the hub IDs of the refused items."""

    schedules: list[Schedule] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    refused: list[FieldError] = field(default_factory=list)
    keep: set[str] = field(default_factory=set)


def read_listing(data: Any, grove: str) -> GroveListing:
    """Read the hub's JSON (any shape `sync --format scion` takes) as the full set of `grove`,
    item by item as the CLI does (`schedules_from_data(strict=False)`), and refuse the items of
    another grove too. Raises `ValidationError` when the document as a whole is wrong (its
    shape, pages left out) or an item has no usable ID."""
    loaded = schedules_from_data(data, format="scion", strict=False)
    # An item without a usable ID cannot be held: the grove's prune could delete the very job
    # it stands for. (`convert` is run again only for the labels of the items it could name.)
    named = set(scion_format.convert(data).labels.values())
    nameless = [e for e in loaded.refused if e.schedule_id not in named]
    if nameless:
        raise ValidationError([FieldError(e.schedule_id, e.field, f"{e.reason}; an item without "
                                          "a usable ID refuses the whole listing, since its "
                                          "job cannot be told from the ones to prune")
                               for e in nameless])
    listing = GroveListing(absent=list(loaded.absent), refused=list(loaded.refused),
                           keep=set(loaded.keep))
    for schedule in loaded.schedules:
        given = schedule.labels.get(GROVE_LABEL)
        if given == grove:
            listing.schedules.append(schedule)
            continue
        listing.refused.append(FieldError(
            _label(schedule), "groveId",
            f"must be the grove in the path, {grove!r} (got {given!r})"))
        listing.keep.add(schedule.id)
    return listing


@dataclass(frozen=True)
class HubItem:
    """What one hub item asks for: its schedule, or None when its job must not exist."""

    item_id: str
    kind: str
    schedule: Schedule | None


def read_item(body: Any, *, grove: str, kind: str, item_id: str) -> HubItem:
    """One hub item as the hub stores it (a `Schedule` or `ScheduledEvent`), addressed by the
    grove and ID in its path; raises `ValidationError` naming every problem, by `item_id`."""
    errors = []
    if isinstance(body, Mapping):
        if body.get("id") != item_id:
            errors.append(FieldError(item_id, "id", "must match the ID in the path "
                                                    f"(got {body.get('id')!r})"))
        if body.get("groveId") != grove:
            errors.append(FieldError(item_id, "groveId", "must be the grove in the path, "
                                     f"{grove!r} (got {body.get('groveId')!r})"))
    if errors:
        raise ValidationError(errors)
    one = scion_format.convert_item(body, kind)
    problems = list(one.errors)
    schedule = None
    if one.document is not None and not problems:
        try:
            schedule = parse_schedule(one.document)
        except ValidationError as exc:
            problems.extend(exc.errors)
    if problems:
        raise ValidationError([FieldError(item_id, e.field, e.reason) for e in problems])
    return HubItem(item_id, kind, schedule)


# -- planning a grove ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GrovePlan:
    """The plan for a grove's jobs and the items refused (the listing's, and those whose ID is
    another grove's or a native schedule's job)."""

    plan: Plan
    refused: tuple[FieldError, ...]


def plan_grove(jobs: Iterable[scheduler_v1.Job], listing: GroveListing, grove: str,
               spec: JobSpec, *, now: datetime, grace: timedelta) -> GrovePlan:
    """Compare the grove's jobs with its listing; no API calls. The grove's jobs the listing
    does not want are deleted, except a refused item's (held as it is); every job that is not
    the grove's is left out of the plan, so it is neither changed nor deleted."""
    all_jobs = list(jobs)
    owners = {job_id_of(j.name): job_owner(j) for j in all_jobs
              if is_owned(job_id_of(j.name), spec.prefix)}
    refused, keep = list(listing.refused), set(listing.keep)
    wanted = []
    for schedule in listing.schedules:
        job_id = spec.job_id(schedule.id)
        kind = schedule.labels.get(KIND_LABEL, "")
        reason = foreign_reason(owners[job_id], grove, kind) if job_id in owners else None
        if reason is None:
            wanted.append(schedule)
        else:
            refused.append(FieldError(_label(schedule), "id", reason))
            keep.add(schedule.id)
    considered = [j for j in all_jobs if job_id_of(j.name) not in owners
                  or _is_grove(owners[job_id_of(j.name)], grove)]
    plan = compute_plan(considered, wanted, spec, now=now, grace=grace, prune=True, keep=keep)
    return GrovePlan(plan, tuple(refused))


def _is_grove(owner: Owner | None, grove: str) -> bool:
    return owner is not None and owner.grove == grove
