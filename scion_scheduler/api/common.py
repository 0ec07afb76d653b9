"""What every router of the API shares: the context, the error document, request helpers
(body, IDs, credentials, `If-Match`) and the reads a write is checked against.

The routers (`schedules`, `groves`, and `app`'s operations routes) differ only in the documents
they take;
auth, errors, `If-Match`/ETag and the per-schedule write lock are these, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Header, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from scheduler.control import SchedulerControl
from scheduler.egress import EgressPolicy
from scheduler.jobs_decode import job_fingerprint
from scheduler.model import FieldError
from scheduler.sync import ApplyResult, Failure, StepOutcome
from scheduler.validation import MAX_ID_LENGTH
from scion_scheduler.api.auth import Authenticator
from scion_scheduler.api.middleware import ApiMetrics
from scion_scheduler.api.schemas import ErrorOut, FieldErrorOut, ScheduleOut, WriteOut
from scion_scheduler.api.views import schedule_out, step_outcomes
from scion_scheduler.errors import ScionSchedulerError
from worker.keyed_locks import KeyedLocks
from worker.ledger import Ledger

REQUEST = "(request)"


class ApiError(ScionSchedulerError):
    """An error response: status, code, message, field errors, and step outcomes of a write."""

    def __init__(self, status: int, code: str, message: str, errors: Sequence[FieldError] = (),
                 result: ApplyResult | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = tuple(errors)
        self.result = result

    def response(self) -> JSONResponse:
        """The JSON error document."""
        body = ErrorOut(
            code=self.code, message=self.message,
            errors=errors_out(self.errors),
            outcomes=step_outcomes(self.result.outcomes) if self.result is not None else None,
        )
        return JSONResponse(body.model_dump(exclude_none=True), status_code=self.status)


def errors_out(errors: Iterable[FieldError]) -> list[FieldErrorOut]:
    """Field errors as documents."""
    return [FieldErrorOut(schedule_id=e.schedule_id, field=e.field, reason=e.reason)
            for e in errors]


def invalid(errors: Sequence[FieldError]) -> ApiError:
    """422: the document is not valid; `errors` name every problem."""
    return ApiError(422, "invalid_argument", f"{len(errors)} validation error(s)", errors)


def bad_request(field_name: str, reason: str) -> ApiError:
    """400: the request itself cannot be read."""
    return ApiError(400, "bad_request", reason, [FieldError(REQUEST, field_name, reason)])


def not_found(schedule_id: str, what: str = "schedule") -> ApiError:
    """404 for a schedule (or a hub item, `what`) that has no job."""
    return ApiError(404, "not_found", f"no {what} {schedule_id!r}",
                    [FieldError(schedule_id, "id", f"no such {what}")])


@dataclass
class ApiContext:
    """What the routes work with; built once by `create_app`."""

    control: SchedulerControl
    history: Ledger | None
    authenticator: Authenticator
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @cached_property
    def egress(self) -> EgressPolicy:
        """Where schedules' actions may send requests (a refused target never becomes a job);
        parsed once, by `create_app`, so that a bad setting stops the app from starting."""
        return self.control.settings.allowed_targets


def context_of(request: Request) -> ApiContext:
    """The app's context (a dependency of every route)."""
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(context_of)]


# -- request helpers ---------------------------------------------------------------------------

def decode_id(raw: str) -> str | None:
    """The schedule ID a percent-encoded path segment stands for; None when it cannot be one
    (not UTF-8, empty, too long, or not printable)."""
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        return None
    return value


def existing_id(raw: str, what: str = "schedule") -> str:
    """The decoded ID of an existing schedule; 404 when the segment cannot be an ID."""
    schedule_id = decode_id(raw)
    if schedule_id is None:
        raise not_found(raw, what)
    return schedule_id


def path_id(raw: str, field_name: str = "id") -> str:
    """The decoded ID a write names in its path; 422 when the segment cannot be an ID."""
    value = decode_id(raw)
    if value is None:
        raise invalid([FieldError(REQUEST, field_name, "the path segment is not a valid ID "
                                                       "(printable text, at most "
                                                       f"{MAX_ID_LENGTH} characters)")])
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    """The request body as JSON (the body size limit is enforced by `BodyLimitMiddleware`)."""
    raw = await request.body()
    if not raw.strip():
        raise bad_request("(body)", "a JSON body is required")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request("(body)", f"not valid JSON: {exc}") from exc


JsonBody = Annotated[Any, Depends(read_json)]
_bearer = HTTPBearer(auto_error=False, description="SCION_SCHEDULER_API_TOKEN, or a Google-signed "
                     "ID token of an allowed service account.")


def _caller(request: Request, _: Annotated[Any, Security(_bearer)]) -> str:
    """The authenticated caller; the `Security` parameter only documents the scheme."""
    return context_of(request).authenticator.authenticate(request.headers.get("authorization"))


Caller = Annotated[str, Depends(_caller)]
IfMatch = Annotated[str | None, Header(alias="If-Match", description="A `fingerprint` (ETag) "
                                       "read earlier: refuse with 409 if it changed since.")]


def _etags(header: str | None) -> list[str] | None:
    if header is None:
        return None
    tags = []
    for part in header.split(","):
        tag = part.strip()
        tag = tag.removeprefix("W/")
        tags.append(tag.strip('"'))
    return tags


def check_if_match(schedule_id: str, if_match: str | None, job: Any) -> None:
    """409 unless `job` (None: no job) still has a fingerprint `If-Match` names."""
    tags = _etags(if_match)
    if tags is None:
        return
    if job is None:
        raise ApiError(409, "conflict", f"schedule {schedule_id!r} does not exist (If-Match)",
                       [FieldError(schedule_id, "If-Match", "the schedule does not exist")])
    current = job_fingerprint(job)
    if "*" not in tags and current not in tags:
        raise ApiError(409, "conflict", f"schedule {schedule_id!r} changed meanwhile",
                       [FieldError(schedule_id, "If-Match",
                                   f"the current fingerprint is {current!r}")])


def get_job(context: ApiContext, schedule_id: str) -> Any:
    """The schedule's job, or None (one GetJob)."""
    return context.control.job_of(schedule_id)


def view(context: ApiContext, job: Any, schedule_id: str) -> ScheduleOut:
    """The schedule a job holds; 404 when the job names none."""
    out = schedule_out(job, context.control.spec, context.clock())
    if out is None:
        raise not_found(schedule_id)
    return out


def set_etag(response: Response, out: ScheduleOut | None) -> None:
    """The schedule's fingerprint as the response's ETag."""
    if out is not None and out.fingerprint:
        response.headers["ETag"] = f'"{out.fingerprint}"'


def applied(result: ApplyResult) -> ApplyResult:
    """`result` when every step of the write went through; else its error (`write_status`),
    raised."""
    if not result.ok:
        raise write_status(result)
    return result


def created(outcomes: Iterable[StepOutcome]) -> bool:
    """True when a write created the job."""
    return any(o.step.kind == "create" for o in outcomes)


def written(context: ApiContext, response: Response, schedule_id: str, job: Any,
            outcomes: Sequence[StepOutcome]) -> WriteOut:
    """The answer to a write that left `job` (None: no job): the schedule the job holds, as
    the ETag too, the steps, and 201 when the write created the job."""
    out = view(context, job, schedule_id) if job is not None else None
    response.status_code = 201 if created(outcomes) else 200
    set_etag(response, out)
    return WriteOut(schedule=out, outcomes=step_outcomes(outcomes))


def write_status(result: ApplyResult) -> ApiError:
    """The error for a write that the store of schedules refused (Cloud Scheduler, or Firestore
    for a document's step in ticks mode, each named as `Step.service`): 409 for a conflicting
    concurrent change (ABORTED, ALREADY_EXISTS, a job gone meanwhile), 503 when it kept being
    unavailable, else 502."""
    failed = result.failed[0]
    code = failed.http_status
    if failed.step.kind == "fire":
        # The late one-shot's publish went to Pub/Sub, not Cloud Scheduler: a 404 there is a
        # missing topic, not a job changed meanwhile.
        status, kind = (503, "unavailable") if code in (429, 503, 504) else (502, "upstream_error")
        return ApiError(status, kind, f"Pub/Sub refused the one-shot's late fire: {failed.error}",
                        result=result)
    if failed.failure is Failure.OWNED:
        return ApiError(409, "conflict", failed.error, result=result)
    if code in (404, 409):
        return ApiError(409, "conflict", f"a concurrent change interfered: {failed.error}",
                        result=result)
    service = failed.step.service
    if code in (429, 503, 504) or failed.failure is Failure.GAVE_UP:
        return ApiError(503, "unavailable", f"{service} is unavailable: {failed.error}",
                        result=result)
    return ApiError(502, "upstream_error", f"{service} refused the change: {failed.error}",
                    result=result)


# -- OpenAPI helpers ---------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text} for status, text in (
        (401, "Missing or invalid credentials."), (403, "The caller is not allowed."),
        (404, "No such schedule."), (409, "A concurrent change conflicts."),
        (413, "The body is too large."), (422, "The document is not valid."),
        (400, "The body is not JSON."),
        (502, "The store of schedules (Cloud Scheduler; Firestore in ticks mode) refused the "
              "change."),
        (503, "The store of schedules (Cloud Scheduler; Firestore in ticks mode) is "
              "unavailable."),
    )
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of a route: auth, 422 and 503, plus `statuses`."""
    return {s: _ERRORS[s] for s in (401, 403, 422, 503, *statuses)}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The documented JSON body of a route whose body is read by `read_json`."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema}}}}


def body_ref(model: str) -> dict[str, Any]:
    """`request_body` for a model in the document's components."""
    return request_body({"$ref": f"#/components/schemas/{model}"})
