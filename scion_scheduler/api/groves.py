"""The grove routes: the control API in the hub's own terms, so that the hub's side of the
hand-over is "send what you store".

* `PUT /v1/groves/{grove}/schedules/{id}` and `.../scheduled-events/{id}` take one item exactly
  as the hub stores and returns it (`store.Schedule` / `store.ScheduledEvent`,
  `pkg/store/models.go:1041-1093`); a deleted schedule, or an event no longer pending, means
  its job must not exist, so the PUT deletes it.
* `DELETE` on the same paths deletes the item's job.
* `POST /v1/groves/{grove}:sync` takes the hub's listings of the grove (the documents
  `sync --format scion` takes) as the grove's full set: the grove's jobs are made to match and
  the grove's jobs it does not list are deleted; another grove's and native schedules' jobs are
  never touched (`scheduler.groves`).

Invalid items in a sync follow the CLI's rule (`sync --format scion` without `--strict`): every
valid item is applied, each refused item's job is left exactly as it was (`held_for_refused_items`
in the plan), and the answer (200) lists the refused items, each named as the CLI names it (`ID`
or `ID "name"`), with the field and the reason, and `ok` false. With `strict=true` one refused
item refuses the request (422, the same list in `errors`) and nothing is applied. A document
wrong as a whole (its shape, pages left out per `nextCursor`/`totalCount`) is refused whole
(422), strict or not; so is one with an item that has no usable ID, which could stand for any of
the jobs the sync would prune.

Auth, the error document, `If-Match`/ETag, the per-schedule write lock and the body limit are
those of the `/v1/schedules` routes (`scion_scheduler.api.common`). A grove's writes reach only
its own jobs: a PUT whose ID is another grove's job, or a native schedule's, is a 409, and a
DELETE of it a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from scheduler import groves
from scheduler.logs import get_logger
from scheduler.model import FieldError, ValidationError
from scheduler.scion_action import KIND_EVENT, KIND_SCHEDULE
from scion_scheduler.api.common import (
    ApiContext,
    ApiError,
    Caller,
    Context,
    IfMatch,
    JsonBody,
    applied,
    body_ref,
    check_if_match,
    created,
    errors_out,
    existing_id,
    get_job,
    invalid,
    not_found,
    path_id,
    request_body,
    responses,
    written,
)
from scion_scheduler.api.hub_schemas import (
    EXAMPLE_EVENT_ID,
    EXAMPLE_GROVE,
    EXAMPLE_SCHEDULE_ID,
    GroveSyncOut,
)
from scion_scheduler.api.schemas import WriteOut
from scion_scheduler.api.views import plan_out, step_outcomes

log = get_logger(__name__)

router = APIRouter(tags=["groves"])

RawGrove = Annotated[str, Path(description="The hub's grove ID, percent-encoded as one segment.",
                               examples=[EXAMPLE_GROVE])]
RawScheduleId = Annotated[str, Path(description="The hub schedule's ID, percent-encoded.",
                                    examples=[EXAMPLE_SCHEDULE_ID])]
RawEventId = Annotated[str, Path(description="The hub scheduled event's ID, percent-encoded.",
                                 examples=[EXAMPLE_EVENT_ID])]
_WHAT = {KIND_SCHEDULE: "schedule", KIND_EVENT: "scheduled event"}
_PUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": WriteOut, "description": "The job was created."},
    **responses(400, 409, 413, 502),
}


def _put_item(context: ApiContext, item: groves.HubItem, grove: str, if_match: str | None,
              response: Response, who: str) -> WriteOut:
    """Bring one item's job in line under its lock: upsert it, or delete it when the item says
    its job must not exist."""
    control = context.control
    sid = item.item_id
    with context.locks.hold(control.spec.job_id(sid)):
        job = get_job(context, sid)
        if job is not None:
            reason = groves.foreign_reason(groves.job_owner(job), grove, item.kind)
            if reason is not None:
                raise ApiError(409, "conflict", f"{sid!r} is not {_WHAT[item.kind]} of grove "
                                                f"{grove!r}", [FieldError(sid, "id", reason)])
        check_if_match(sid, if_match, job)
        if item.schedule is None:
            result = applied(control.remove(sid)) if job is not None else None
        else:
            result = applied(control.upsert(item.schedule))
        after = get_job(context, sid) if item.schedule is not None else None
    outcomes = result.outcomes if result is not None else ()
    log.info("hub item written", schedule_id=sid, grove=grove, kind=item.kind, caller=who,
             created=created(outcomes), steps=[o.step.kind for o in outcomes])
    return written(context, response, sid, after, outcomes)


def _delete_item(context: ApiContext, grove: str, kind: str, sid: str, if_match: str | None,
                 who: str) -> WriteOut:
    control = context.control
    with context.locks.hold(control.spec.job_id(sid)):
        job = get_job(context, sid)
        if job is None or groves.foreign_reason(groves.job_owner(job), grove, kind) is not None:
            raise not_found(sid, f"{_WHAT[kind]} of grove {grove!r}")
        check_if_match(sid, if_match, job)
        result = applied(control.remove(sid))
    log.info("hub item deleted", schedule_id=sid, grove=grove, kind=kind, caller=who)
    return WriteOut(schedule=None, outcomes=step_outcomes(result.outcomes))


async def _put(context: ApiContext, kind: str, raw_grove: str, raw_id: str, body: Any,
               if_match: str | None, response: Response, who: str) -> WriteOut:
    grove, sid = path_id(raw_grove, "grove"), path_id(raw_id)
    try:
        item = groves.read_item(body, grove=grove, kind=kind, item_id=sid)
    except ValidationError as exc:
        raise invalid(exc.errors) from exc
    return await run_in_threadpool(_put_item, context, item, grove, if_match, response, who)


@router.put("/v1/groves/{grove}/schedules/{schedule_id}", response_model=WriteOut,
            responses=_PUT_RESPONSES, openapi_extra=body_ref("HubSchedule"), status_code=200)
async def put_hub_schedule(grove: RawGrove, schedule_id: RawScheduleId, context: Context,
                           who: Caller, response: Response, body: JsonBody,
                           if_match: IfMatch = None) -> WriteOut:
    """Create, replace or (for `status: deleted`) delete a hub schedule's job, from the
    schedule exactly as the hub stores it. 201 when the job was created."""
    return await _put(context, KIND_SCHEDULE, grove, schedule_id, body, if_match, response, who)


@router.put("/v1/groves/{grove}/scheduled-events/{event_id}", response_model=WriteOut,
            responses=_PUT_RESPONSES, openapi_extra=body_ref("HubScheduledEvent"),
            status_code=200)
async def put_hub_event(grove: RawGrove, event_id: RawEventId, context: Context, who: Caller,
                        response: Response, body: JsonBody,
                        if_match: IfMatch = None) -> WriteOut:
    """Create, replace or (for any status but `pending`) delete a hub scheduled event's job,
    from the event exactly as the hub stores it. 201 when the job was created."""
    return await _put(context, KIND_EVENT, grove, event_id, body, if_match, response, who)


@router.delete("/v1/groves/{grove}/schedules/{schedule_id}", response_model=WriteOut,
               responses=responses(404, 409, 502))
def delete_hub_schedule(grove: RawGrove, schedule_id: RawScheduleId, context: Context,
                        who: Caller, if_match: IfMatch = None) -> WriteOut:
    """Delete a hub schedule's job. 404 when the grove has no such schedule."""
    return _delete_item(context, existing_id(grove, "grove"), KIND_SCHEDULE,
                        existing_id(schedule_id), if_match, who)


@router.delete("/v1/groves/{grove}/scheduled-events/{event_id}", response_model=WriteOut,
               responses=responses(404, 409, 502))
def delete_hub_event(grove: RawGrove, event_id: RawEventId, context: Context, who: Caller,
                     if_match: IfMatch = None) -> WriteOut:
    """Delete a hub scheduled event's job. 404 when the grove has no such event."""
    return _delete_item(context, existing_id(grove, "grove"), KIND_EVENT,
                        existing_id(event_id), if_match, who)


_LISTING_BODY = request_body({"anyOf": [
    {"$ref": "#/components/schemas/HubListing"},
    {"type": "array", "description": "Every page of the listings, as given by the hub.",
     "items": {"$ref": "#/components/schemas/HubListing"}},
]})


@router.post("/v1/groves/{grove}:sync", response_model=GroveSyncOut,
             responses=responses(400, 413, 422), openapi_extra=_LISTING_BODY)
async def sync_grove(
    grove: RawGrove, context: Context, who: Caller, body: JsonBody,
    dry_run: Annotated[bool, Query(description="Only plan; change nothing.")] = False,
    strict: Annotated[bool, Query(description="Refuse the whole request (422) if any item is "
                                              "refused, instead of applying the others.")] = False,
) -> GroveSyncOut:
    """Make the grove's jobs match the hub's listings of it, its full set: create, update,
    pause, resume, and delete the grove's jobs it does not list. Another grove's jobs and
    native schedules' are never touched. Refused items are listed and their jobs left as they
    were (with `strict`, one refused item refuses the request)."""
    name = path_id(grove, "grove")
    try:
        listing = groves.read_listing(body, name)
    except ValidationError as exc:
        raise invalid(exc.errors) from exc
    return await run_in_threadpool(_sync, context, name, listing, dry_run, strict, who)


def _sync(context: ApiContext, grove: str, listing: groves.GroveListing, dry_run: bool,
          strict: bool, who: str) -> GroveSyncOut:
    control = context.control
    # Two syncs of one grove would each prune what the other is creating: one at a time.
    with context.locks.hold(f"grove sync {grove}"):
        decided = control.plan_grove(listing, grove)
        if strict and decided.refused:
            raise invalid(decided.refused)
        refused = errors_out(decided.refused)
        plan = decided.plan
        if dry_run:
            return GroveSyncOut(dry_run=True, ok=not refused, plan=plan_out(plan), outcomes=[],
                                refused=refused)
        result = control.apply(plan)
    log.info("grove synced", grove=grove, caller=who, steps=len(plan.steps),
             failed=len(result.failed), refused=len(refused))
    return GroveSyncOut(dry_run=False, ok=result.ok and not refused, plan=plan_out(plan),
                        outcomes=step_outcomes(result.outcomes), refused=refused)

