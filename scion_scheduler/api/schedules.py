"""The `/v1/schedules` routes: one schedule per Cloud Scheduler job, read, written, paused,
resumed, run and synced as a set, and the executions a schedule's fires left.

Every write is validated whole before the first Cloud Scheduler call, so a refused request
changes nothing; writes to one schedule take its lock (`ApiContext.locks`) so that an `If-Match`
checked before a write still holds when the write happens (see `scion_scheduler.api.app`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from scheduler.contract import ContractError
from scheduler.egress import EgressPolicy
from scheduler.logs import get_logger
from scheduler.model import FieldError, Schedule, ValidationError, format_instant, parse_instant
from scheduler.validation import parse_schedule, validate_schedules
from scion_scheduler.api.common import (
    REQUEST,
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
    existing_id,
    get_job,
    invalid,
    not_found,
    path_id,
    responses,
    set_etag,
    view,
    written,
)
from scion_scheduler.api.schemas import (
    ExecutionPageOut,
    RunOut,
    ScheduleListOut,
    ScheduleOut,
    SyncOut,
    WriteOut,
)
from scion_scheduler.api.views import execution_out, plan_out, schedule_out, step_outcomes
from worker.history import list_runs

log = get_logger(__name__)

router = APIRouter(tags=["schedules"])
# The executions of a schedule: included after `router`.
history = APIRouter(tags=["history"])

_SYNC_FIELDS = frozenset({"schedules", "prune", "dry_run", "verify"})
RawId = Annotated[str, Path(description="The schedule ID, percent-encoded as one segment.",
                            examples=["daily-report"])]


@router.get("/v1/schedules", response_model=ScheduleListOut, responses=responses(422))
def list_schedules(
    context: Context,
    who: Caller,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(description="`next_page_token` of the previous "
                                            "page.")] = None,
) -> ScheduleListOut:
    """Every schedule (one Cloud Scheduler listing), by ID, with job state and next fires."""
    now = context.clock()
    spec = context.control.spec
    views = [v for v in (schedule_out(j, spec, now) for j in context.control.schedule_jobs())
             if v is not None]
    views.sort(key=lambda v: v.id)
    if page_token is not None:
        views = [v for v in views if v.id > page_token]
    page = views[:page_size]
    more = len(views) > page_size
    return ScheduleListOut(schedules=page, next_page_token=page[-1].id if more else None)


@router.get("/v1/schedules/{schedule_id}", response_model=ScheduleOut, responses=responses(404))
def get_schedule(schedule_id: RawId, context: Context, who: Caller,
                 response: Response) -> ScheduleOut:
    """One schedule, read back from its job, with job state and next fire times."""
    sid = existing_id(schedule_id)
    job = get_job(context, sid)
    if job is None:
        raise not_found(sid)
    out = view(context, job, sid)
    set_etag(response, out)
    return out


@router.put("/v1/schedules/{schedule_id}", response_model=WriteOut,
            responses={201: {"model": WriteOut, "description": "The job was created."},
                       **responses(400, 409, 413, 502)},
            openapi_extra=body_ref("ScheduleDocument"), status_code=200)
async def put_schedule(schedule_id: RawId, context: Context, who: Caller, response: Response,
                       body: JsonBody, if_match: IfMatch = None) -> WriteOut:
    """Create or replace a schedule: one GetJob, then at most one create or update (plus a
    pause or resume when `paused` changed). 201 when the job was created."""
    sid = path_id(schedule_id)
    schedule = _schedule_for_put(sid, body, context.egress)
    return await run_in_threadpool(_put, context, sid, schedule, if_match, response, who)


def _put(context: ApiContext, sid: str, schedule: Schedule, if_match: str | None,
         response: Response, who: str) -> WriteOut:
    with context.locks.hold(context.control.spec.job_id(sid)):
        if if_match is not None:
            check_if_match(sid, if_match, get_job(context, sid))
        result = applied(context.control.upsert(schedule))
        job = get_job(context, sid)
    log.info("schedule upserted", schedule_id=sid, caller=who, created=created(result.outcomes),
             steps=[o.step.kind for o in result.outcomes])
    return written(context, response, sid, job, result.outcomes)


@router.delete("/v1/schedules/{schedule_id}", response_model=WriteOut,
               responses=responses(404, 409, 502))
def delete_schedule(schedule_id: RawId, context: Context, who: Caller,
                    if_match: IfMatch = None) -> WriteOut:
    """Delete a schedule's job. 404 when it has none."""
    sid = existing_id(schedule_id)
    with context.locks.hold(context.control.spec.job_id(sid)):
        job = get_job(context, sid)
        if job is None:
            raise not_found(sid)
        check_if_match(sid, if_match, job)
        result = applied(context.control.remove(sid))
    log.info("schedule deleted", schedule_id=sid, caller=who)
    return WriteOut(schedule=None, outcomes=step_outcomes(result.outcomes))


def _state_change(context: ApiContext, sid: str, if_match: str | None, pause: bool,
                  response: Response, who: str) -> WriteOut:
    control = context.control
    with context.locks.hold(control.spec.job_id(sid)):
        job = get_job(context, sid)
        if job is None:
            raise not_found(sid)
        check_if_match(sid, if_match, job)
        result = applied(control.pause(sid) if pause else control.resume(sid))
        after = get_job(context, sid)
    log.info("schedule paused" if pause else "schedule resumed", schedule_id=sid, caller=who)
    return written(context, response, sid, after, result.outcomes)


@router.post("/v1/schedules/{schedule_id}:pause", response_model=WriteOut,
             responses=responses(404, 409, 502))
def pause_schedule(schedule_id: RawId, context: Context, who: Caller, response: Response,
                   if_match: IfMatch = None) -> WriteOut:
    """Pause a schedule's job (pausing a paused one is success)."""
    return _state_change(context, existing_id(schedule_id), if_match, True, response, who)


@router.post("/v1/schedules/{schedule_id}:resume", response_model=WriteOut,
             responses=responses(404, 409, 502))
def resume_schedule(schedule_id: RawId, context: Context, who: Caller, response: Response,
                    if_match: IfMatch = None) -> WriteOut:
    """Resume a schedule's job (resuming an enabled one is success)."""
    return _state_change(context, existing_id(schedule_id), if_match, False, response, who)


@router.post("/v1/schedules/{schedule_id}:run", response_model=RunOut,
             responses=responses(404, 409))
def run_schedule(schedule_id: RawId, context: Context, who: Caller) -> RunOut:
    """Fire once now (a manual run, its own execution, never deduplicated against a slot):
    the job's message is published to the topic with `trigger=manual`."""
    sid = existing_id(schedule_id)
    try:
        run = context.control.run_now(sid)
        log.info("manual run requested", schedule_id=sid, caller=who,
                 fire_time=format_instant(run.fire_time), execution_id=run.execution_id)
    except (ContractError, ValueError) as exc:
        raise ApiError(409, "conflict", f"the job's message cannot be fired: {exc}",
                       [FieldError(sid, "job", str(exc))]) from exc
    return RunOut.model_validate(run.to_dict())


@router.post("/v1/schedules:sync", response_model=SyncOut,
             responses=responses(400, 413, 422), openapi_extra=body_ref("SyncRequest"))
async def sync_schedules(context: Context, who: Caller, body: JsonBody) -> SyncOut:
    """Make Cloud Scheduler match a full desired set: the plan (create, update, pause,
    resume, and with `prune` delete) and, unless `dry_run`, each step's outcome; `verify`: tick
    mode reads every document, not its sync manifest. The whole
    set is validated first; one invalid schedule means nothing is applied."""
    schedules, prune, dry_run, verify = _sync_request(body, context.egress)
    return await run_in_threadpool(_sync, context, schedules, prune, dry_run, verify)


def _sync(context: ApiContext, schedules: list[Schedule], prune: bool, dry_run: bool,
          verify: bool) -> SyncOut:
    try:
        plan = context.control.plan(schedules, prune=prune, verify=verify)
    except ValidationError as exc:  # two IDs that map to one job
        raise invalid(exc.errors) from exc
    if dry_run:
        return SyncOut(dry_run=True, ok=True, plan=plan_out(plan), outcomes=[])
    result = context.control.apply(plan)
    log.info("schedules synced", steps=len(plan.steps), failed=len(result.failed))
    return SyncOut(dry_run=False, ok=result.ok, plan=plan_out(plan),
                   outcomes=step_outcomes(result.outcomes))


@history.get("/v1/schedules/{schedule_id}/executions", response_model=ExecutionPageOut,
             responses=responses(404, 422))
def list_executions(
    schedule_id: RawId, context: Context, who: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str | None, Query(description="`next_page_token` of the previous "
                                            "page (the last fire time shown).")] = None,
) -> ExecutionPageOut:
    """A schedule's executions, newest fire time first, `limit` at a time. History outlives
    the schedule; 404 only when there is neither a job nor any execution."""
    sid = existing_id(schedule_id)
    if context.history is None:
        raise ApiError(503, "unavailable", "no execution store is configured")
    before = None
    if page_token is not None:
        try:
            before = parse_instant(page_token)
        except ValueError as exc:
            raise invalid([FieldError(REQUEST, "query.page_token", str(exc))]) from exc
    found = list_runs(context.history, sid, limit=limit, before=before)
    if not found and before is None and get_job(context, sid) is None:
        raise not_found(sid)
    token = format_instant(found[-1].fire_time) if len(found) == limit else None
    return ExecutionPageOut(executions=[execution_out(e) for e in found], next_page_token=token)


def _schedule_for_put(schedule_id: str, body: Any, egress: EgressPolicy) -> Schedule:
    if not isinstance(body, Mapping):
        raise invalid([FieldError(schedule_id, "(schedule)", "must be a JSON object")])
    document = dict(body)
    given = document.setdefault("id", schedule_id)
    if given != schedule_id:
        raise invalid([FieldError(schedule_id, "id",
                                   f"must match the ID in the path (got {given!r})")])
    try:
        return parse_schedule(document, egress=egress)
    except ValidationError as exc:
        raise invalid(exc.errors) from exc


def _sync_request(body: Any, egress: EgressPolicy
                  ) -> tuple[list[Schedule], bool, bool, bool]:
    if not isinstance(body, Mapping):
        raise invalid([FieldError(REQUEST, "(body)", "must be a JSON object with `schedules`")])
    errors = [FieldError(REQUEST, str(k), "unknown field")
              for k in sorted(set(body) - _SYNC_FIELDS)]
    flags = {}
    for name in ("prune", "dry_run", "verify"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            errors.append(FieldError(REQUEST, name, "must be true or false"))
        flags[name] = value is True
    raws = body.get("schedules")
    schedules: list[Schedule] = []
    if not isinstance(raws, list):
        errors.append(FieldError(REQUEST, "schedules", "required: a list of schedules"))
    else:
        try:
            schedules = validate_schedules(raws, egress=egress)
        except ValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise invalid(errors)
    return schedules, flags["prune"], flags["dry_run"], flags["verify"]
