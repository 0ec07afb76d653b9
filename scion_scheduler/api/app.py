"""The HTTP control API: FastAPI routes over `SchedulerControl` and the execution ledger.

Cloud Scheduler jobs are the only store of schedules (see `scheduler.jobs_decode`): a PUT writes
the job, a GET reads it back, and a `:sync` reconciles the whole set, so there is no second copy
to drift. Every write is validated whole before the first Cloud Scheduler call, so a refused
request changes nothing; a change that takes two writes and fails midway is undone
(`SchedulerControl.upsert`).

Writes to one schedule run one at a time in this process (`KeyedLocks`), so an `If-Match`
checked before a write still holds when the write happens; across processes it does not, as
Cloud Scheduler has no conditional write.

Routes follow Google's AIP style (`/v1/schedules/{id}:pause`). A schedule ID may hold any
printable character: clients percent-encode it as one path segment (`/` as `%2F`), and the app
routes on the raw path (`RawPathMiddleware`) and decodes the captured ID itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from google.api_core import exceptions as gexc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.cli_base import package_version
from scheduler.contract import ContractError
from scheduler.control import JobNotFound
from scheduler.egress import EgressPolicy
from scheduler.logs import get_logger
from scheduler.model import FieldError, Schedule, ValidationError, format_instant, parse_instant
from scheduler.validation import parse_schedule, validate_schedules
from scion_scheduler.api import groves
from scion_scheduler.api.auth import AuthError
from scion_scheduler.api.common import (
    REQUEST,
    ApiContext,
    ApiError,
    Caller,
    IfMatch,
    JsonBody,
    body_ref,
    check_if_match,
    existing_id,
    get_job,
    invalid,
    not_found,
    path_id,
    responses,
    set_etag,
    view,
    write_status,
)
from scion_scheduler.api.hub_schemas import SCHEMA_MODELS as HUB_MODELS
from scion_scheduler.api.middleware import BodyLimitMiddleware, MetricsMiddleware, RawPathMiddleware
from scion_scheduler.api.schemas import (
    ExecutionPageOut,
    HealthOut,
    RunOut,
    ScheduleDocument,
    ScheduleListOut,
    ScheduleOut,
    SyncOut,
    SyncRequest,
    WriteOut,
)
from scion_scheduler.api.views import execution_out, plan_out, schedule_out, step_outcomes
from worker.history import list_runs

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ApiContext", "create_app"]

log = get_logger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_SYNC_FIELDS = frozenset({"schedules", "prune", "dry_run"})
DOCUMENTED_BODIES: tuple[type[BaseModel], ...] = (ScheduleDocument, SyncRequest, *HUB_MODELS)
RawId = Annotated[str, Path(description="The schedule ID, percent-encoded as one segment.",
                            examples=["daily-report"])]


# -- the app -----------------------------------------------------------------------------------

def create_app(context: ApiContext, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app. Routes run blocking Cloud Scheduler and Firestore calls in the threadpool."""
    app = FastAPI(
        title="scion-scheduler control API", version=package_version(),
        description="Create, change, pause, run and delete Scion schedules (one Cloud Scheduler "
                    "job each) and read their execution history; or hand a hub grove's "
                    "schedules and events over as the hub stores them (`/v1/groves`).",
        docs_url=None, redoc_url=None,
    )
    app.state.context = context
    control = context.control
    spec = control.spec
    # Where schedules' actions may send requests: a refused target never becomes a job.
    egress = control.settings.egress_policy()

    # -- errors --------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        code = {403: "permission_denied", 503: "unavailable"}.get(exc.status, "unauthenticated")
        response = ApiError(exc.status, code, exc.message).response()
        if exc.status == 503:
            response.headers["Retry-After"] = "30"
        else:
            response.headers["WWW-Authenticate"] = exc.www_authenticate
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(REQUEST, ".".join(str(p) for p in e.get("loc", ())), str(e.get("msg")))
                  for e in exc.errors()]
        return invalid(errors).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        response = ApiError(exc.status_code, code, str(exc.detail)).response()
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(JobNotFound)
    async def _job_not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return ApiError(404, "not_found", str(exc)).response()

    @app.exception_handler(gexc.GoogleAPIError)
    async def _google_error(_: Request, exc: gexc.GoogleAPIError) -> JSONResponse:
        log.warning("google api call failed", error=str(exc))
        if isinstance(exc, gexc.Conflict):
            return ApiError(409, "conflict", str(exc)).response()
        if isinstance(exc, gexc.RetryError | gexc.ServiceUnavailable | gexc.DeadlineExceeded
                      | gexc.TooManyRequests):
            return ApiError(503, "unavailable", str(exc)).response()
        return ApiError(502, "upstream_error", str(exc)).response()

    # -- routes --------------------------------------------------------------------------------

    @app.get("/healthz", response_model=HealthOut, tags=["operations"])
    def healthz() -> HealthOut:
        """Liveness; needs no credentials."""
        return HealthOut()

    @app.get("/metrics", tags=["operations"], responses=responses(), response_model=None)
    def metrics(_: Caller) -> Response:
        """Prometheus metrics: request counts and latency by route and status."""
        return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/schedules", response_model=ScheduleListOut, tags=["schedules"],
             responses=responses(422))
    def list_schedules(
        who: Caller,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
        page_token: Annotated[str | None, Query(description="`next_page_token` of the previous "
                                                "page.")] = None,
    ) -> ScheduleListOut:
        """Every schedule (one Cloud Scheduler listing), by ID, with job state and next fires."""
        now = context.clock()
        views = [v for v in (schedule_out(j, spec, now) for j in control.syncer.owned_jobs())
                 if v is not None]
        views.sort(key=lambda v: v.id)
        if page_token is not None:
            views = [v for v in views if v.id > page_token]
        page = views[:page_size]
        more = len(views) > page_size
        return ScheduleListOut(schedules=page, next_page_token=page[-1].id if more else None)

    @app.get("/v1/schedules/{schedule_id}", response_model=ScheduleOut, tags=["schedules"],
             responses=responses(404))
    def get_schedule(schedule_id: RawId, who: Caller, response: Response) -> ScheduleOut:
        """One schedule, read back from its job, with job state and next fire times."""
        sid = existing_id(schedule_id)
        job = get_job(context, sid)
        if job is None:
            raise not_found(sid)
        out = view(context, job, sid)
        set_etag(response, out)
        return out

    @app.put("/v1/schedules/{schedule_id}", response_model=WriteOut, tags=["schedules"],
             responses={201: {"model": WriteOut, "description": "The job was created."},
                        **responses(400, 409, 413, 502)},
             openapi_extra=body_ref("ScheduleDocument"), status_code=200)
    async def put_schedule(schedule_id: RawId, who: Caller, response: Response,
                           body: JsonBody, if_match: IfMatch = None) -> WriteOut:
        """Create or replace a schedule: one GetJob, then at most one create or update (plus a
        pause or resume when `paused` changed). 201 when the job was created."""
        sid = path_id(schedule_id)
        schedule = _schedule_for_put(sid, body, egress)
        return await run_in_threadpool(_put, sid, schedule, if_match, response, who)

    def _put(sid: str, schedule: Schedule, if_match: str | None, response: Response,
             who: str) -> WriteOut:
        with context.locks.hold(spec.job_id(sid)):
            if if_match is not None:
                check_if_match(sid, if_match, get_job(context, sid))
            result = control.upsert(schedule)
            if not result.ok:
                raise write_status(result)
            job = get_job(context, sid)
        created = any(o.step.kind == "create" for o in result.outcomes)
        out = view(context, job, sid) if job is not None else None
        log.info("schedule upserted", schedule_id=sid, caller=who, created=created,
                 steps=[o.step.kind for o in result.outcomes])
        response.status_code = 201 if created else 200
        set_etag(response, out)
        return WriteOut(schedule=out, outcomes=step_outcomes(result.outcomes))

    @app.delete("/v1/schedules/{schedule_id}", response_model=WriteOut, tags=["schedules"],
                responses=responses(404, 409, 502))
    def delete_schedule(schedule_id: RawId, who: Caller, if_match: IfMatch = None) -> WriteOut:
        """Delete a schedule's job. 404 when it has none."""
        sid = existing_id(schedule_id)
        with context.locks.hold(spec.job_id(sid)):
            job = get_job(context, sid)
            if job is None:
                raise not_found(sid)
            check_if_match(sid, if_match, job)
            result = control.remove(sid)
            if not result.ok:
                raise write_status(result)
        log.info("schedule deleted", schedule_id=sid, caller=who)
        return WriteOut(schedule=None, outcomes=step_outcomes(result.outcomes))

    def _state_change(sid: str, if_match: str | None, pause: bool, response: Response,
                      who: str) -> WriteOut:
        with context.locks.hold(spec.job_id(sid)):
            job = get_job(context, sid)
            if job is None:
                raise not_found(sid)
            check_if_match(sid, if_match, job)
            result = control.pause(sid) if pause else control.resume(sid)
            if not result.ok:
                raise write_status(result)
            after = get_job(context, sid)
        out = view(context, after, sid) if after is not None else None
        set_etag(response, out)
        log.info("schedule paused" if pause else "schedule resumed", schedule_id=sid, caller=who)
        return WriteOut(schedule=out, outcomes=step_outcomes(result.outcomes))

    @app.post("/v1/schedules/{schedule_id}:pause", response_model=WriteOut, tags=["schedules"],
              responses=responses(404, 409, 502))
    def pause_schedule(schedule_id: RawId, who: Caller, response: Response,
                       if_match: IfMatch = None) -> WriteOut:
        """Pause a schedule's job (pausing a paused one is success)."""
        return _state_change(existing_id(schedule_id), if_match, True, response, who)

    @app.post("/v1/schedules/{schedule_id}:resume", response_model=WriteOut, tags=["schedules"],
              responses=responses(404, 409, 502))
    def resume_schedule(schedule_id: RawId, who: Caller, response: Response,
                       if_match: IfMatch = None) -> WriteOut:
        """Resume a schedule's job (resuming an enabled one is success)."""
        return _state_change(existing_id(schedule_id), if_match, False, response, who)

    @app.post("/v1/schedules/{schedule_id}:run", response_model=RunOut, tags=["schedules"],
              responses=responses(404, 409))
    def run_schedule(schedule_id: RawId, who: Caller) -> RunOut:
        """Fire once now (a manual run, its own execution, never deduplicated against a slot):
        the job's message is published to the topic with `trigger=manual`."""
        sid = existing_id(schedule_id)
        try:
            run = control.run_now(sid)
            log.info("manual run requested", schedule_id=sid, caller=who,
                     fire_time=format_instant(run.fire_time), execution_id=run.execution_id)
        except (ContractError, ValueError) as exc:
            raise ApiError(409, "conflict", f"the job's message cannot be fired: {exc}",
                           [FieldError(sid, "job", str(exc))]) from exc
        return RunOut.model_validate(run.to_dict())

    @app.post("/v1/schedules:sync", response_model=SyncOut, tags=["schedules"],
              responses=responses(400, 413, 422), openapi_extra=body_ref("SyncRequest"))
    async def sync_schedules(who: Caller, body: JsonBody) -> SyncOut:
        """Make Cloud Scheduler match a full desired set: the plan (create, update, pause,
        resume, and with `prune` delete) and, unless `dry_run`, each step's outcome. The whole
        set is validated first; one invalid schedule means nothing is applied."""
        schedules, prune, dry_run = _sync_request(body, egress)
        return await run_in_threadpool(_sync, schedules, prune, dry_run)

    def _sync(schedules: list[Schedule], prune: bool, dry_run: bool) -> SyncOut:
        try:
            plan = control.plan(schedules, prune=prune)
        except ValidationError as exc:  # two IDs that map to one job
            raise invalid(exc.errors) from exc
        if dry_run:
            return SyncOut(dry_run=True, ok=True, plan=plan_out(plan), outcomes=[])
        result = control.apply(plan)
        log.info("schedules synced", steps=len(plan.steps), failed=len(result.failed))
        return SyncOut(dry_run=False, ok=result.ok, plan=plan_out(plan),
                       outcomes=step_outcomes(result.outcomes))

    @app.get("/v1/schedules/{schedule_id}/executions", response_model=ExecutionPageOut,
             tags=["history"], responses=responses(404, 422))
    def list_executions(
        schedule_id: RawId, who: Caller,
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

    app.include_router(groves.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            _, extra = models_json_schema(
                [(model, "validation") for model in DOCUMENTED_BODIES],
                ref_template="#/components/schemas/{model}")
            document.setdefault("components", {}).setdefault("schemas", {}).update(
                extra.get("$defs", {}))
            # The exposition format is text; FastAPI would document the default JSON.
            document["paths"]["/metrics"]["get"]["responses"]["200"]["content"] = {
                CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    # Last added runs first: raw-path routing, then metrics (which reads the matched route),
    # then the body limit.
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=context.metrics)
    app.add_middleware(RawPathMiddleware)
    return app


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


def _sync_request(body: Any, egress: EgressPolicy) -> tuple[list[Schedule], bool, bool]:
    if not isinstance(body, Mapping):
        raise invalid([FieldError(REQUEST, "(body)", "must be a JSON object with `schedules`")])
    errors = [FieldError(REQUEST, str(k), "unknown field") for k in sorted(set(body) - _SYNC_FIELDS)]
    flags = {}
    for name in ("prune", "dry_run"):
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
    return schedules, flags["prune"], flags["dry_run"]
