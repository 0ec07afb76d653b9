"""How the app answers an exception: one JSON error document (`ApiError`) for every route's
failures, whether raised by a route, by auth, by FastAPI's request parsing, or by a Google call
that gave up."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.api_core import exceptions as gexc
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.control import JobNotFound
from scheduler.logs import get_logger
from scheduler.model import FieldError
from scion_scheduler.api.auth import AuthError
from scion_scheduler.api.common import REQUEST, ApiError, invalid

log = get_logger(__name__)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
    code = {403: "permission_denied", 503: "unavailable"}.get(exc.status, "unauthenticated")
    response = ApiError(exc.status, code, exc.message).response()
    if exc.status == 503:
        response.headers["Retry-After"] = "30"
    else:
        response.headers["WWW-Authenticate"] = exc.www_authenticate
    return response


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [FieldError(REQUEST, ".".join(str(p) for p in e.get("loc", ())), str(e.get("msg")))
              for e in exc.errors()]
    return invalid(errors).response()


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    response = ApiError(exc.status_code, code, str(exc.detail)).response()
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _job_not_found(_: Request, exc: JobNotFound) -> JSONResponse:
    return ApiError(404, "not_found", str(exc)).response()


async def _google_error(_: Request, exc: gexc.GoogleAPIError) -> JSONResponse:
    log.warning("google api call failed", error=str(exc))
    if isinstance(exc, gexc.Conflict):
        return ApiError(409, "conflict", str(exc)).response()
    if isinstance(exc, gexc.RetryError | gexc.ServiceUnavailable | gexc.DeadlineExceeded
                  | gexc.TooManyRequests):
        return ApiError(503, "unavailable", str(exc)).response()
    return ApiError(502, "upstream_error", str(exc)).response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure with the error document."""
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(AuthError, _auth_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(JobNotFound, _job_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(gexc.GoogleAPIError, _google_error)  # type: ignore[arg-type]
